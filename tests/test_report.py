"""Report files: the probe log, results.json/.csv, summary.md and the plots, read back."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pandas as pd
import pytest
from matplotlib import image as mpimg

from batchprof.api import profile
from batchprof.backends.fake import FakeBackend
from batchprof.probe import TimingPolicy
from batchprof.records.frame import result_frame
from batchprof.render import (
    PROBE_LOG,
    ProbeLog,
    load_result,
    make_report_dir,
    read_probe_log,
    write_report,
)
from batchprof.spec import throughput_ladder

from .helpers import tiny_workload

DATASET = 1000


@pytest.fixture(scope="module")
def result():
    """A complete profile on a scripted device: max 12, throughput 100 * min(b, 8)."""
    backend = FakeBackend(lambda b: 10**6 + 10**4 * b, 10**6 + 10**4 * 12 + 5000,
                          step_time_fn=lambda b: b / (100.0 * min(b, 8)))
    return profile(tiny_workload(), backend=backend, dataset_size=DATASET,
                   timing=TimingPolicy(timed_steps=3, max_timed_steps=3))


def test_frame_has_one_row_per_batch_size_with_flags(result):
    frame = result.to_frame()  # issue 16: indexed by batch size, the ladder's sizes among them
    assert set(throughput_ladder(1, 12)) <= set(frame.index) and frame.index.is_unique
    assert list(frame.index[frame["is_max"]]) == [12] and list(frame.index[frame["is_knee"]]) == [8]
    fit = frame[frame["feasible"]].reset_index()
    assert list(fit["batch_size"]) == sorted(b for b in frame.index if b <= 12)
    # ceil(N / b) steps per epoch; epoch time = steps x median step time
    for row in fit.to_dict("records"):
        b = row["batch_size"]
        assert row["steps_per_epoch"] == math.ceil(DATASET / b)
        assert row["epoch_time_s"] == pytest.approx(row["steps_per_epoch"]
                                                    * b / (100.0 * min(b, 8)))
        # a size the max search probed for memory only has its throughput from the sweep
        rate = row["samples_per_s"] if row["timed_steps"] else row["sweep_samples_per_s"]
        assert rate == pytest.approx(100.0 * min(b, 8))
    assert frame.loc[8, "share_of_best"] >= 0.9


def test_frame_without_dataset_size_has_no_epoch_columns(result):
    plain = type(result).from_dict({**result.to_dict(),
                                    "options": {**result.options, "dataset_size": None}})
    assert "steps_per_epoch" not in result_frame(plain).columns


def test_write_report_files_read_back(result, tmp_path):
    files = write_report(result, tmp_path / "r")
    assert load_result(files.directory) == result
    data = json.loads(files.results_json.read_text())
    assert len(data["probes"]) == len(result.probes)
    assert data["environment"]["versions"]["torch"]
    assert data["options"]["dataset_size"] == DATASET
    csv = pd.read_csv(files.results_csv)
    assert list(csv["batch_size"]) == list(result.to_frame().index)
    assert len(pd.read_csv(files.probes_csv)) == len(result.probes)
    summary = files.summary_md.read_text()
    assert "| max feasible batch | 12 |" in summary
    assert "| knee (alpha = 0.9) | 8 |" in summary
    low, high = result.knee.knee_interval
    assert f"| knee range (resampling and measured spreads) | {low}..{high} |" in summary
    source = ("step-time model t(b) = " if result.knee.step_time_model is not None
              else "isotonic fit")
    assert f"| knee read off | the {source}" in summary
    assert result.recommendation_reason in summary
    assert files.probes_jsonl is None  # no ProbeLog wrote here


@pytest.mark.parametrize("name", ["peak_memory_png", "throughput_png"])
def test_plots_are_readable_images(result, tmp_path, name):
    files = write_report(result, tmp_path)
    pixels = mpimg.imread(getattr(files, name))
    height, width = pixels.shape[:2]
    assert (height, width) == (450, 700)  # 7 x 4.5 inches at 100 dpi
    assert pixels.std() > 0.05  # something was drawn, not a blank canvas


def test_partial_result_still_makes_a_report(tmp_path):
    backend = FakeBackend(lambda b: 10**6 + 10**4 * b, 10**6 + 10**4 * 40)
    count = []

    def stop(m):
        count.append(m)
        if len(count) == 2:
            raise KeyboardInterrupt

    r = profile(tiny_workload(), backend=backend, on_probe=stop,
                timing=TimingPolicy(timed_steps=3, max_timed_steps=3))
    files = write_report(r, tmp_path)
    assert "partial (interrupted)" in files.summary_md.read_text()
    assert mpimg.imread(files.peak_memory_png).std() > 0.05
    assert len(pd.read_csv(files.results_csv)) == 2  # what fit so far, no max or knee rows


def test_probe_log_appends_each_measurement_as_it_completes(result, tmp_path):
    path = tmp_path / PROBE_LOG
    with ProbeLog(path) as log:
        for i, m in enumerate(result.probes[:3]):
            log.append(m)
            # on disk already, before the log is closed
            assert len(path.read_text().splitlines()) == i + 1
    with open(path, "a") as fh:
        fh.write('{"workload": "torn')  # a crash mid-write leaves a partial last line
    assert read_probe_log(path) == list(result.probes[:3])


def test_report_dirs_are_unique_and_named_safely(tmp_path):
    now = datetime(2024, 5, 1, 12, 0, 0)
    a = make_report_dir("pkg.mod:attr", tmp_path, now=now)
    b = make_report_dir("pkg.mod:attr", tmp_path, now=now)
    assert a.name == "pkg.mod_attr-20240501-120000"
    assert b.name == "pkg.mod_attr-20240501-120000-2"
    assert a.is_dir() and b.is_dir()

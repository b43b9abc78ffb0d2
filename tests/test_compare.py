"""Run-to-run comparison (issue 16): two report dirs / results.json / pytest-benchmark JSONs,
figures side by side, regressions flagged only past the thresholds given."""

from __future__ import annotations

import json

import pytest

import batchprof
from batchprof.backends.fake import FakeBackend
from batchprof.compare import (
    BatchFigures,
    RunFigures,
    Thresholds,
    compare,
    load_figures,
    parse_fraction,
)
from batchprof.errors import ConfigError
from batchprof.probe import TimingPolicy
from batchprof.render.files import write_report

from .helpers import tiny_workload

pytest_plugins = ["pytester"]

BASE, PER_SAMPLE = 10**4, 10**4
CAPACITY = BASE + PER_SAMPLE * 20 + PER_SAMPLE // 2  # batch 20 fits at PER_SAMPLE, 21 does not


def run_with(per_sample: float, tmp_path, name: str):
    """A profile on a scripted memory curve BASE + per_sample*b, written as a report dir."""
    backend = FakeBackend(lambda b: int(BASE + per_sample * b), CAPACITY,
                          step_time_fn=lambda b: 0.001 * b)
    result = batchprof.profile(tiny_workload(), backend=backend, knee=False,
                               use_prediction=False,
                               timing=TimingPolicy(timed_steps=1, max_timed_steps=1))
    return result, write_report(result, tmp_path / name).directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return {label: run_with(per, tmp, label)
            for label, per in (("old", PER_SAMPLE), ("worse", 1.25 * PER_SAMPLE),
                               ("better", 0.8 * PER_SAMPLE))}


def _rows(cmp, metric):
    return {r.batch_size: r for r in cmp.rows if r.metric == metric}


def test_memory_regression_is_flagged_past_the_threshold(runs):
    (old, old_dir), (worse, worse_dir) = runs["old"], runs["worse"]
    assert worse.max_batch < old.max_batch == 20
    cmp = compare(load_figures(old_dir), load_figures(worse_dir / "results.json"),
                  Thresholds(max_peak_increase=0.05))
    peaks = _rows(cmp, "peak_allocated_bytes")
    common = sorted(b for b in peaks if peaks[b].new is not None)
    assert common, "the two runs share batch sizes"
    b = max(b for b in common if peaks[b].new is not None and peaks[b].old is not None)
    row = peaks[b]
    assert row.old == BASE + PER_SAMPLE * b and row.new == int(BASE + 1.25 * PER_SAMPLE * b)
    assert row.change == pytest.approx((row.new - row.old) / row.old)
    assert row.regression and "rose" in row.why
    assert cmp.regressions and all(r.metric == "peak_allocated_bytes" for r in cmp.regressions)
    max_row = _rows(cmp, "max_batch")[None]
    assert (max_row.old, max_row.new) == (20, worse.max_batch)
    assert not max_row.regression  # no max-batch threshold given: shown, not flagged


def test_the_same_change_is_not_flagged_without_a_threshold_or_below_it(runs):
    (_, old_dir), (_, worse_dir) = runs["old"], runs["worse"]
    assert compare(load_figures(old_dir), load_figures(worse_dir)).regressions == ()
    loose = compare(load_figures(old_dir), load_figures(worse_dir), Thresholds(max_peak_increase=10.0))
    assert loose.regressions == ()


def test_an_improvement_is_not_a_regression(runs):
    (_, old_dir), (better, better_dir) = runs["old"], runs["better"]
    cmp = compare(load_figures(old_dir), load_figures(better_dir),
                  Thresholds(max_peak_increase=0.0, max_batch_decrease=0.0))
    assert cmp.regressions == ()
    assert _rows(cmp, "max_batch")[None].new == better.max_batch > 20
    assert all(r.change < 0 for r in _rows(cmp, "peak_allocated_bytes").values()
               if r.change is not None)


def test_max_batch_threshold_flags_a_smaller_max_batch(runs):
    (_, old_dir), (worse, worse_dir) = runs["old"], runs["worse"]
    cmp = compare(load_figures(old_dir), load_figures(worse_dir), Thresholds(max_batch_decrease=0.1))
    flagged = [r for r in cmp.regressions if r.metric == "max_batch"]
    assert len(flagged) == 1 and flagged[0].change == pytest.approx(worse.max_batch / 20 - 1)


def _bench_json(path, peak: int, rate: float, max_batch: int | None = None):
    info = {"workload": "w", "batch_size": 32, "feasible": True, "peak_allocated_bytes": peak,
            "samples_per_s": rate}
    if max_batch is not None:
        info["max_batch"] = max_batch
    data = {"machine_info": {}, "benchmarks": [
        {"name": "test_step", "fullname": "suite.py::test_step", "extra_info": info,
         "stats": {"median": 0.1}},
        {"name": "test_plain", "fullname": "suite.py::test_plain", "extra_info": {}}]}
    path.write_text(json.dumps(data))
    return path


def test_pytest_benchmark_jsons_compare_on_extra_info(tmp_path):
    old = load_figures(_bench_json(tmp_path / "old.json", 1000, 500.0, max_batch=64))
    new = load_figures(_bench_json(tmp_path / "new.json", 1100, 400.0, max_batch=64))
    assert old.kind == "pytest-benchmark" and old.subjects == ["suite.py::test_step"]
    cmp = compare(old, new, Thresholds(max_peak_increase=0.05, max_throughput_decrease=0.5))
    rows = {r.metric: r for r in cmp.rows}
    assert rows["peak_allocated_bytes"].change == pytest.approx(0.1)
    assert rows["peak_allocated_bytes"].regression
    assert rows["samples_per_s"].change == pytest.approx(-0.2)
    assert not rows["samples_per_s"].regression  # -20% is within the -50% given
    assert not rows["max_batch"].regression


def test_a_batch_that_no_longer_fits_is_a_memory_regression():
    def run(feasible, peak):
        return RunFigures("x", "profile", {("w", 8): BatchFigures(feasible, peak, None)}, {})

    cmp = compare(run(True, 100), run(False, None), Thresholds(max_peak_increase=0.5))
    assert cmp.regressions[0].why == "batch 8 fit before and runs out of memory now"
    assert compare(run(True, 100), run(False, None)).regressions == ()


def test_disjoint_subjects_and_sizes_are_noted():
    a = RunFigures("a", "profile", {("w", 8): BatchFigures(True, 1, 1.0)}, {"w": 8})
    b = RunFigures("b", "profile", {("v", 8): BatchFigures(True, 1, 1.0)}, {"v": 8})
    cmp = compare(a, b)
    assert cmp.rows == () and any("no subject" in n for n in cmp.notes)
    c = RunFigures("c", "profile", {("w", 16): BatchFigures(True, 1, 1.0)}, {"w": 16})
    notes = compare(a, c).notes
    assert any("only in the old run: 8" in n for n in notes)
    assert json.dumps(compare(a, c).to_dict())  # JSON-able for --json output


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_figures(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="has no results.json"):
        load_figures(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="neither"):
        load_figures(tmp_path / "x.json")
    (tmp_path / "b.json").write_text(json.dumps({"benchmarks": [{"name": "t", "extra_info": {}}]}))
    with pytest.raises(ConfigError, match="without batchprof figures"):
        load_figures(tmp_path / "b.json")
    assert parse_fraction("5%") == pytest.approx(0.05) and parse_fraction("0.1") == 0.1
    for bad in ("five", "-1%"):
        with pytest.raises(ConfigError):
            parse_fraction(bad, "--max-peak-increase")
    with pytest.raises(ConfigError):
        Thresholds(max_peak_increase=-0.1)


def test_compare_reads_a_real_pytest_benchmark_json(pytester):
    """The plugin's extra_info, saved by pytest-benchmark itself, is what compare reads."""
    pytester.makepyfile(test_suite='''
import batchprof.workloads.mlp as mlp

def test_step(benchmark, batchprof):
    benchmark.pedantic(lambda: None, rounds=1)
    batchprof.measure("mlp", 4, memory_limit="64MiB")
''')
    out = pytester.path / "run.json"
    pytester.runpytest("-p", "no:cacheprovider", f"--benchmark-json={out}").assert_outcomes(passed=1)
    figures = load_figures(out)
    (subject,) = figures.subjects
    assert subject.endswith("test_step")
    assert figures.per_batch[(subject, 4)].peak_allocated_bytes > 0
    same = compare(figures, figures, Thresholds(max_peak_increase=0.0))
    assert same.regressions == () and {r.change for r in same.rows
                                       if r.metric == "peak_allocated_bytes"} == {0.0}


# ---- batchprof compare (the CLI) ------------------------------------------------------------
def test_cli_exits_1_on_a_memory_regression_and_names_it(runs, capsys):
    from batchprof.cli import main

    (_, old_dir), (_, worse_dir) = runs["old"], runs["worse"]
    code = main(["compare", str(old_dir), str(worse_dir), "--max-peak-increase", "5%"])
    out = capsys.readouterr().out
    assert code == 1
    assert "REGRESSION" in out and "regression(s):" in out and "peak_allocated_bytes rose" in out


def test_cli_exits_0_on_an_improvement(runs, capsys):
    from batchprof.cli import main

    (_, old_dir), (_, better_dir) = runs["old"], runs["better"]
    code = main(["compare", str(old_dir / "results.json"), str(better_dir),
                 "--max-peak-increase", "0%", "--max-batch-decrease", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "REGRESSION" not in out
    assert "no regression past the thresholds given" in out


def test_cli_json_and_bad_input(runs, capsys, tmp_path):
    from batchprof.cli import main

    (_, old_dir), (_, worse_dir) = runs["old"], runs["worse"]
    assert main(["compare", str(old_dir), str(worse_dir), "--json",
                 "--max-peak-increase", "5%"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["regressions"] >= 1 and data["thresholds"]["max_peak_increase"] == 0.05
    assert main(["compare", str(old_dir), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(old_dir), str(worse_dir), "--max-peak-increase", "lots"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--max-peak-increase 'lots'" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 2

"""The noise scale inside a profile run: the result, results.json, summary.md and `run`."""

from __future__ import annotations

import json

import batchprof
from batchprof.cli.main import main
from batchprof.noise import NoiseOptions, NoiseScaleResult
from batchprof.records import ProfileResult
from batchprof.render import load_result, summary_markdown, write_report

from .noise_workloads import constant_loss_workload, linear_regression

LINREG = "tests.noise_workloads:linreg"


def quick_profile(workload, **kwargs) -> ProfileResult:
    return batchprof.profile(workload, device="cpu", memory_limit="64MiB", max_batch=256,
                             knee=False, use_prediction=False, **kwargs)


def test_profile_defaults_the_big_batch_to_the_max_batch_and_round_trips(tmp_path):
    workload, truth = linear_regression()
    result = quick_profile(workload, noise_scale=NoiseOptions(
        reference_batch=32, reference_lr=0.1))
    noise = result.noise_scale
    assert isinstance(noise, NoiseScaleResult)
    assert result.max_batch == 256 and noise.big_batch == 256 and noise.small_batch == 32
    assert "from the search" in noise.big_batch_source
    assert noise.lr_hint is not None and noise.lr_hint.target_batch == result.recommended_batch
    assert noise.estimate.contains(noise.noise_scale_samples)
    back = ProfileResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.noise_scale == noise
    files = write_report(result, tmp_path)
    assert load_result(files.directory).noise_scale == noise
    summary = summary_markdown(result)
    assert "## Gradient noise scale" in summary and "noise scale (critical batch)" in summary
    assert "no throughput knee was found; the noise scale says batches above ~" in summary
    assert "the largest that fits is 256" in summary


def test_profile_without_noise_scale_has_none_and_old_results_still_load():
    workload, _ = linear_regression()
    result = quick_profile(workload)
    assert result.noise_scale is None and result.to_dict()["noise_scale"] is None
    old = result.to_dict()
    del old["noise_scale"]  # a results.json written before the noise scale existed
    assert ProfileResult.from_dict(old).noise_scale is None
    assert "Gradient noise scale" not in summary_markdown(result)


def test_a_noise_scale_failure_is_a_note_not_a_lost_run():
    result = quick_profile(constant_loss_workload(), noise_scale=True)
    assert result.max_batch == 256 and result.noise_scale is None
    assert any(n.startswith("noise scale unavailable:") and "does not depend on the batch" in n
               for n in result.notes)


def test_run_prints_the_reading_beside_the_knee_and_max_batch(tmp_path, capsys):
    code = main(["run", LINREG, "--device", "cpu", "--memory-limit", "64MiB", "--max-batch",
                 "128", "--no-predict", "--no-roofline", "--steps", "1", "--out", str(tmp_path),
                 "--noise-scale", "--draws", "6"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reading: throughput stops paying above " in out
    assert "the noise scale says batches above ~" in out and "the largest that fits is 128" in out
    assert "over 6 draws" in out and "from gradients at batch 16 and 128" in out
    [directory] = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = json.loads((directory / "results.json").read_text())
    assert data["noise_scale"]["big_batch"] == 128


def test_run_refuses_noise_options_without_noise_scale(tmp_path, capsys):
    code = main(["run", LINREG, "--device", "cpu", "--out", str(tmp_path), "--draws", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "--draws only apply with --noise-scale" in err
    assert not any(tmp_path.iterdir())

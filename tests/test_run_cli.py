"""``batchprof run`` end to end on the real CPU: progress, summary, report, bad input, Ctrl-C."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from batchprof.api import DEFAULT_CPU_MEMORY_LIMIT
from batchprof.cli import run as run_command
from batchprof.cli.main import main
from batchprof.render import PROBE_LOG, read_probe_log
from batchprof.units import parse_bytes
from batchprof.workloads import DEFAULT_WORKLOAD, Workload

from .helpers import tiny_workload

TINY = "tests.helpers:tiny_workload"


def failing_workload() -> Workload:
    """Fits in memory at every size; the step raises a non-OOM error from batch 2 on."""
    base = tiny_workload(name="failing")

    def loss(model, batch):
        if batch[0].shape[0] >= 2:
            raise IndexError("label 7 out of range for 4 classes")
        return F.cross_entropy(model(batch[0]), batch[1])

    return Workload("failing", base.model_fn, base.batch_fn, loss)


def ctrl_c_workload() -> Workload:
    """Ctrl-C arrives while the step at batch 2 runs (KeyboardInterrupt mid-step)."""
    base = tiny_workload(name="ctrlc")

    def loss(model, batch):
        if batch[0].shape[0] >= 2:
            raise KeyboardInterrupt
        return F.cross_entropy(model(batch[0]), batch[1])

    return Workload("ctrlc", base.model_fn, base.batch_fn, loss)


def report_dirs(root):
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_run_writes_a_report_and_a_summary(tmp_path, capsys):
    code = main(["run", TINY, "--device", "cpu", "--memory-limit", "64MiB", "--max-batch", "8",
                 "--dataset-size", "100", "--no-predict", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    [directory] = report_dirs(tmp_path)
    assert directory.name.startswith("tiny-")
    for name in ("results.json", "results.csv", "probes.csv", "summary.md", PROBE_LOG,
                 "peak_memory.png", "throughput.png"):
        assert (directory / name).stat().st_size > 0, name
    data = json.loads((directory / "results.json").read_text())
    assert data["max_batch"] == 8  # the bound, not memory, stops a 64 MiB tiny model
    logged = read_probe_log(directory / PROBE_LOG)
    assert [m["batch_size"] for m in data["probes"]] == [m.batch_size for m in logged]
    assert out.count("  probe ") == len(logged)  # one live line per probe
    # progress while timing: the phase, the round and its cap, elapsed and what is left
    assert "[knee sweep] round 1 of at most 8 (ladder): batch 1, 2, 4, 8 (" in out
    assert "s elapsed, about" in out
    for text in ("memory budget: 64.00 MiB", "max feasible batch", "throughput knee",
                 "recommended batch", "probes used", "time spent",
                 f"report written to {directory}"):
        assert text in out, text


def test_run_json_keeps_stdout_parseable(tmp_path, capsys):
    code = main(["run", TINY, "--device", "cpu", "--memory-limit", "64MiB", "--max-batch", "2",
                 "--no-predict", "--json", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert data["max_batch"] == 2 and data["report_dir"] == str(report_dirs(tmp_path)[0])
    assert "probe" in captured.err  # progress went to stderr


def test_no_argument_means_default_workload_on_cpu_with_default_budget(tmp_path, capsys,
                                                                      monkeypatch):
    assert run_command.DEFAULT_WORKLOAD == DEFAULT_WORKLOAD
    monkeypatch.chdir(tmp_path)  # the default --out is ./reports
    code = main(["run", "--max-batch", "1", "--steps", "1", "--no-predict"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no CUDA device found; running on the CPU" in out
    assert f"memory budget: {DEFAULT_CPU_MEMORY_LIMIT} (the CPU default" in out
    [directory] = report_dirs(tmp_path / "reports")
    assert directory.name.startswith(f"{DEFAULT_WORKLOAD}-")
    data = json.loads((directory / "results.json").read_text())
    assert data["memory_limit_bytes"] == parse_bytes(DEFAULT_CPU_MEMORY_LIMIT)


@pytest.mark.parametrize("args, message", [
    (["--min-batch", "8", "--max-batch", "4"], "--max-batch 4 is below --min-batch 8"),
    (["--dataset-size", "0"], "--dataset-size must be a positive integer, got 0"),
    (["--alpha", "2"], "--alpha must be a fraction in (0, 1]"),
    (["--memory-limit", "lots"], "cannot parse memory size 'lots'"),
    (["--time-budget", "soon"], "cannot read time budget 'soon'; expected seconds"),
    (["--time-budget=0s"], "time budget must be a positive duration"),
])
def test_bad_input_exits_2_before_probing(tmp_path, capsys, args, message):
    code = main(["run", TINY, "--device", "cpu", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in " ".join(err.split())
    assert report_dirs(tmp_path) == []  # nothing run, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
@pytest.mark.parametrize("isolate", ["--no-isolate", "--isolate"])
def test_run_closes_its_backend_however_it_ends(tmp_path, capsys, monkeypatch, isolate):
    from batchprof.backends.fake import FakeBackend

    built = []

    def build(device, limit):
        built.append(FakeBackend(lambda b: 10**6 + 10**4 * b, limit))
        return built[-1]

    monkeypatch.setattr("batchprof.backends.make_backend", build)
    code = main(["run", "mlp", "--device", "cpu", "--memory-limit", "64MiB", "--out",
                 str(tmp_path), "--max-batch", "2", "--no-predict", "--no-knee", "--steps", "1",
                 "--sampler", "none", isolate])
    # --isolate rebuilds a cpu/cuda backend in a worker, which a fake cannot be: an error
    assert code == (0 if isolate == "--no-isolate" else 2)
    assert len(built) == 1 and built[0].closed


def test_missing_cuda_exits_2_and_writes_nothing(tmp_path, capsys):
    code = main(["run", TINY, "--device", "cuda", "--out", str(tmp_path)])
    assert code == 2
    assert "CUDA is not available" in " ".join(capsys.readouterr().err.split())
    assert report_dirs(tmp_path) == []


def test_budget_too_small_for_batch_1(tmp_path, capsys):
    code = main(["run", TINY, "--device", "cpu", "--memory-limit", "40KB", "--no-predict",
                 "--out", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "batch size 1 needs " in err and "; the budget is 39.06 KiB (40000 bytes)" in err
    [directory] = report_dirs(tmp_path)
    [probe] = read_probe_log(directory / PROBE_LOG)  # the failed probe is kept
    assert probe.batch_size == 1 and not probe.feasible
    assert (directory / "summary.md").exists()


def test_non_oom_step_error_names_the_batch_and_keeps_partial_results(tmp_path, capsys):
    code = main(["run", "tests.test_run_cli:failing_workload", "--device", "cpu",
                 "--memory-limit", "64MiB", "--no-predict", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert code == 2
    assert "at batch size" in err and "IndexError: label 7 out of range" in err
    assert "not out-of-memory" in err
    [directory] = report_dirs(tmp_path)
    logged = read_probe_log(directory / PROBE_LOG)
    assert [m.batch_size for m in logged] == [1] and logged[0].feasible
    data = json.loads((directory / "results.json").read_text())
    assert data["error"].startswith("StepError") and len(data["probes"]) == 1
    assert "partial report written to" in " ".join((captured.out + captured.err).split())


def test_ctrl_c_writes_the_partial_report_and_exits_130(tmp_path, capsys):
    code = main(["run", "tests.test_run_cli:ctrl_c_workload", "--device", "cpu",
                 "--memory-limit", "64MiB", "--no-predict", "--out", str(tmp_path)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 130
    [directory] = report_dirs(tmp_path)
    assert [m.batch_size for m in read_probe_log(directory / PROBE_LOG)] == [1]
    assert json.loads((directory / "results.json").read_text())["interrupted"] is True
    assert "interrupted: partial report written to" in out

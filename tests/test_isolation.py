"""Issue 14, Must-exist 1: probes in a worker process; a crash is a `crashed` probe, not the end.

Each workload crashes its process at batch >= CRASH_AT (24) in a different way; the run must
complete with max batch 23 and every crash recorded with its signal or exit code.
"""

from __future__ import annotations

import pytest

import batchprof
from batchprof.errors import ConfigError
from batchprof.probe.worker import ProbeWorker, WorkerSpec
from tests.helpers import tiny_workload
from tests.leaky_workloads import CRASH_AT

FAST = batchprof.TimingPolicy(timed_steps=1, max_timed_steps=1)


def _profile(name: str):
    return batchprof.profile(f"tests.leaky_workloads:{name}", memory_limit="64MiB",
                             max_batch=48, timing=FAST, use_prediction=False, knee=False,
                             isolate=True)


@pytest.mark.parametrize("name,signal_name,exit_code", [
    ("segfault", "SIGSEGV", None),
    ("exits", None, 7),
    ("sigkilled", "SIGKILL", None),
    ("aborts", "SIGABRT", None),
])
def test_crash_is_recorded_and_the_run_goes_on(name, signal_name, exit_code):
    r = _profile(name)
    assert r.max_batch == CRASH_AT - 1
    crashed = [m for m in r.probes if m.outcome == "crashed"]
    assert crashed and all(m.batch_size >= CRASH_AT for m in crashed)
    assert all(not m.feasible for m in crashed)
    crash = crashed[0].extra["crash"]
    assert crash["signal_name"] == signal_name and crash["exit_code"] == exit_code
    assert crash["batch_size"] == crashed[0].batch_size
    assert any("crashed their worker process" in n for n in r.notes)
    assert all(m.outcome == "feasible" for m in r.probes if m.batch_size < CRASH_AT)


def test_address_space_limit_in_the_worker():
    r = _profile("address_space_limited")
    assert r.max_batch == CRASH_AT - 1
    failed = [m for m in r.probes if m.batch_size >= CRASH_AT]
    # torch turns a refused allocation into an OOM (infeasible); a hard abort is a crash:
    # either way the size is not feasible and the run completed.
    assert failed and all(m.outcome in ("infeasible", "crashed") for m in failed)


def test_worker_is_reused_and_matches_in_process():
    spec = WorkerSpec("mlp", "mlp", "cpu", 64 * 2**20, FAST)
    with ProbeWorker(spec) as worker:
        a, b = worker.measure(2), worker.measure(4)
        assert worker.starts == 1 and worker.crashes == 0
    local = batchprof.measure("mlp", 4, memory_limit=64 * 2**20, timing=FAST)
    assert b.feasible and b.peak_allocated_bytes == local.peak_allocated_bytes
    assert a.batch_size == 2 and a.outcome == "feasible"


def test_isolate_needs_a_reference():
    with pytest.raises(ConfigError, match="module:attr"):
        batchprof.profile(tiny_workload(), memory_limit="64MiB", isolate=True, knee=False)


def test_cli_run_survives_a_segfault(tmp_path, capsys):
    import json

    from batchprof.cli.main import main

    code = main(["run", "tests.leaky_workloads:segfault", "--device", "cpu", "--memory-limit",
                 "64MiB", "--max-batch", "48", "--no-predict", "--no-roofline", "--steps", "1",
                 "--sampler", "none", "--out", str(tmp_path), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["max_batch"] == CRASH_AT - 1
    crashed = [p for p in data["probes"] if "crash" in p["extra"]]
    assert crashed and crashed[0]["extra"]["crash"]["signal_name"] == "SIGSEGV"

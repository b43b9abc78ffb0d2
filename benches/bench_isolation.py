"""The cost of probe isolation: probes per second with and without the worker process.

    .venv/bin/pytest benches/bench_isolation.py --benchmark-only -s

On the default workload (transformer), CPU, batch 2, one timed step per probe: PROBES probes in
this process, then PROBES through one reused ProbeWorker (its start, the spawn plus torch and
workload import, is timed apart and reported as ``worker_start_s``). ``extra_info`` carries
probes_per_s for both; each test prints one line.
"""

from __future__ import annotations

import time

import pytest

from batchprof.backends import CpuBackend
from batchprof.probe import TimingPolicy, measure
from batchprof.probe.worker import ProbeWorker, WorkerSpec
from batchprof.workloads.registry import DEFAULT_WORKLOAD, load_workload

PROBES = 5
BATCH = 2
LIMIT = 512 * 2**20
ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1)


def test_probes_in_process(benchmark):
    workload, backend = load_workload(DEFAULT_WORKLOAD), CpuBackend(LIMIT)
    measure(workload, BATCH, backend=backend, timing=ONE_STEP)  # warm-up
    started = time.perf_counter()
    benchmark.pedantic(lambda: measure(workload, BATCH, backend=backend, timing=ONE_STEP),
                       rounds=PROBES, iterations=1)
    rate = PROBES / (time.perf_counter() - started)
    benchmark.extra_info.update(workload=DEFAULT_WORKLOAD, probes_per_s=rate, isolated=False)
    print(f"\nin process: {rate:.2f} probes/s ({DEFAULT_WORKLOAD}, batch {BATCH}, CPU)")


def test_probes_in_worker(benchmark):
    spec = WorkerSpec(DEFAULT_WORKLOAD, DEFAULT_WORKLOAD, "cpu", LIMIT, ONE_STEP)
    with ProbeWorker(spec) as worker:
        started = time.perf_counter()
        first = worker.measure(BATCH)  # starts the worker, then its first (warm-up) probe
        start_s = time.perf_counter() - started
        assert first.feasible
        started = time.perf_counter()
        benchmark.pedantic(lambda: worker.measure(BATCH), rounds=PROBES, iterations=1)
        rate = PROBES / (time.perf_counter() - started)
        assert worker.starts == 1
    benchmark.extra_info.update(workload=DEFAULT_WORKLOAD, probes_per_s=rate, isolated=True,
                                worker_start_s=start_s)
    print(f"\nin worker: {rate:.2f} probes/s; worker start + first probe {start_s:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "--benchmark-only", "-s"])

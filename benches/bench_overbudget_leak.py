"""200 consecutive over-budget probes in one process leak nothing (issue 14).

    .venv/bin/pytest benches/bench_overbudget_leak.py --benchmark-only -s

Each probe runs the mlp at a batch far past a small CPU budget, so the budget guard raises
mid-forward (the OOM path: traceback, cleanup after the except block). Before and after the 200
probes it counts the bytes of every live CPU tensor (gc walk, distinct storages) and the
process's RSS; ``extra_info`` carries both deltas, and the line printed quotes them.
"""

from __future__ import annotations

import gc

from batchprof.backends import CpuBackend
from batchprof.probe import TimingPolicy, measure
from batchprof.probe.leak import rss_bytes
from batchprof.workloads.registry import load_workload

PROBES = 200


def live_tensor_bytes() -> int:
    """Bytes of distinct storages behind every CPU tensor the garbage collector can see."""
    import warnings

    import torch

    gc.collect()
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance() on deprecated torch aliases warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                    st = obj.untyped_storage()
                    seen[st.data_ptr()] = st.nbytes()
            except Exception:  # noqa: BLE001 - some objects misbehave under isinstance
                continue
    return sum(seen.values())
ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1)


def test_200_overbudget_probes_leak_nothing(benchmark):
    workload = load_workload("mlp")
    backend = CpuBackend(24 * 2**20)
    measure(workload, 4096, backend=backend, timing=ONE_STEP)  # warm caches, first-time imports
    gc.collect()
    tensors_before, rss_before = live_tensor_bytes(), rss_bytes()

    def run() -> list:
        return [measure(workload, 4096, backend=backend, timing=ONE_STEP) for _ in range(PROBES)]

    probes = benchmark.pedantic(run, rounds=1, iterations=1)
    assert not any(m.feasible for m in probes)
    gc.collect()
    tensors_after, rss_after = live_tensor_bytes(), rss_bytes()
    benchmark.extra_info.update(probes=PROBES, live_tensor_bytes_before=tensors_before,
                                live_tensor_bytes_after=tensors_after,
                                rss_before_bytes=rss_before, rss_after_bytes=rss_after)
    rss_delta_mib = (rss_after - rss_before) / 2**20
    print(f"\n{PROBES} over-budget probes: live tensor bytes {tensors_before} -> {tensors_after}, "
          f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB ({rss_delta_mib:+.1f} MiB)")
    assert tensors_after == tensors_before
    assert abs(rss_delta_mib) < 16

"""Issue 14, Must-exist 3: memory kept from one probe to the next is reported as a leak."""

from __future__ import annotations

import batchprof
from batchprof.probe.leak import LEAK_BYTES, find_leak
from batchprof.records.measurement import Measurement
from tests import leaky_workloads
from tests.helpers import tiny_workload

FAST = batchprof.TimingPolicy(timed_steps=1, max_timed_steps=1, sweep_rounds=1,
                              max_sweep_rounds=1)


def _m(b: int, kept: int) -> Measurement:
    return Measurement("w", b, "cpu", True, extra={"heap_in_use_after_bytes": kept})


def test_find_leak_on_synthetic_series():
    base = 100 * 1024**2
    assert find_leak([_m(b, base) for b in (1, 2, 4, 8, 16)]) is None
    assert find_leak([_m(b, base + (b % 3) * 100_000) for b in (1, 2, 4, 8, 16)]) is None
    growing = [_m(b, base + i * LEAK_BYTES) for i, b in enumerate((1, 2, 4, 8, 16))]
    assert find_leak(growing).startswith("LEAK:")
    assert "batch 4" in find_leak([_m(4, base), _m(8, base), _m(4, base + 2 * LEAK_BYTES)])


def test_leaking_workload_is_reported_loudly(tmp_path, capsys):
    leaky_workloads.KEPT.clear()
    try:
        r = batchprof.profile(leaky_workloads.leaking(), memory_limit="16MiB", max_batch=64,
                              timing=FAST, use_prediction=False, knee=False)
        assert r.leak is not None and r.leak.startswith("LEAK:")
        assert r.notes[0] == r.leak
        assert type(r).from_dict(r.to_dict()).leak == r.leak
    finally:
        leaky_workloads.KEPT.clear()


def test_clean_workload_has_no_leak():
    r = batchprof.profile(tiny_workload(), memory_limit="16MiB", max_batch=64, timing=FAST,
                          use_prediction=False, knee=False)
    assert r.leak is None
    assert all(m.extra.get("rss_after_bytes") for m in r.probes)

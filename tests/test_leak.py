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


def _live_cpu_tensor_bytes() -> int:
    import gc
    import warnings

    import torch

    gc.collect()
    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                    seen[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
            except Exception:  # noqa: BLE001 - some objects misbehave under isinstance
                continue
    return sum(seen.values())


def test_a_step_stopped_mid_forward_by_the_budget_keeps_nothing_alive():
    """The transformer at 52 under 128 MiB fits its warm-up but the budget guard stops the
    instrumented step in the loss (activations saved, no backward): before the fix each such
    probe kept its ~98 MiB of activations (saved outputs held their own grad_fn) and the next
    probe at 51 was reported as a leak."""
    w = batchprof.load_workload("transformer")
    backend = batchprof.make_backend("cpu", 128 * 2**20)
    before = _live_cpu_tensor_bytes()
    probes = [batchprof.measure(w, b, backend=backend, timing=FAST) for b in (51, 52, 51)]
    assert [m.feasible for m in probes] == [True, False, True]
    assert _live_cpu_tensor_bytes() == before
    assert find_leak(probes) is None

"""Measured CPU ceilings and the MFU of each built-in workload at batch 32.

    .venv/bin/pytest benches/bench_mfu.py --benchmark-only -s

The ceilings are measured once (torch reference ops on the CPU: copy/triad bandwidth, matmul
FLOP/s per dtype); each workload is measured for real (median step time) and its FLOPs and bytes
per step are counted on the meta device. ``extra_info`` carries achieved FLOP/s, MFU % and the
bound per workload; each test prints one line.
"""

from __future__ import annotations

import pytest

import batchprof
from batchprof.probe import TimingPolicy
from batchprof.roofline.efficiency import annotate_roofline
from batchprof.workloads import BUILTINS

BATCH = 32
_ceilings = {}


def cpu_ceilings():
    if "cpu" not in _ceilings:
        _ceilings["cpu"] = batchprof.ceilings("cpu")
        c = _ceilings["cpu"]
        print(f"\n[ceilings] cpu: copy {c.bandwidth_gbps['copy']:.1f} GB/s, triad "
              f"{c.bandwidth_gbps['triad']:.1f} GB/s, " + ", ".join(
                  f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in c.flops_per_s.items()))
    return _ceilings["cpu"]


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_mfu_at_batch_32(benchmark, name):
    ceilings = cpu_ceilings()
    workload = batchprof.load_workload(name)

    def measured():
        return batchprof.measure(workload, BATCH, timing=TimingPolicy(timed_steps=5))

    m = benchmark.pedantic(measured, rounds=1, iterations=1)
    (annotated,) = annotate_roofline(workload, [m], ceilings)
    x = annotated.roofline.to_dict()
    benchmark.extra_info.update(workload=name, batch_size=BATCH, ceilings=ceilings.to_dict(),
                                **{k: x[k] for k in ("flops_per_step", "bytes_per_step",
                                                     "achieved_flops_per_s", "mfu_pct",
                                                     "arithmetic_intensity_flop_per_byte",
                                                     "bound")})
    print(f"\n[mfu] {name:<12} b={BATCH}  {x['flops_per_step'] / 1e9:.2f} GFLOP/step  "
          f"{x['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved  MFU {x['mfu_pct']:.1f}%  "
          f"intensity {x['arithmetic_intensity_flop_per_byte']:.1f} FLOP/B  {x['bound']}-bound")
    assert 0 < x["mfu_pct"] < 100

"""Measure this machine's CPU ceilings (``batchprof.ceilings("cpu")``) and what measuring costs.

    pytest benches/bench_ceilings.py --benchmark-only -s --benchmark-json=out.json

The benchmark's time is one full ``ceilings("cpu")`` run with the defaults (target: 1-2 s).
extra_info carries the ceilings themselves: copy_gbps, triad_gbps, gflops_<dtype>, the sizes
run, the thread count and the CPU name; they are also printed as the ``batchprof ceilings`` table.
With CUDA present a second benchmark does the same for the GPU (Triton kernels).
"""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from batchprof.render.tables import ceilings_table
from batchprof.roofline.ceilings import Ceilings, ceilings


def _record(benchmark, result: Ceilings, capsys) -> None:
    benchmark.extra_info.update(
        device=result.device, device_name=result.device_name, method=result.method,
        num_threads=result.num_threads,
        copy_gbps=round(result.bandwidth_gbps["copy"], 3),
        triad_gbps=round(result.bandwidth_gbps["triad"], 3),
        **{f"gflops_{dtype}": round(rate / 1e9, 3) for dtype, rate in result.flops_per_s.items()},
        sizes=result.sizes,
    )
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(ceilings_table(result))
    with capsys.disabled():
        print("\n" + out.getvalue())


def test_cpu_ceilings(benchmark, capsys):
    result = benchmark.pedantic(ceilings, args=("cpu",), rounds=1, iterations=1)
    _record(benchmark, result, capsys)
    assert result.method == "torch-reference"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ceilings(benchmark, capsys):
    result = benchmark.pedantic(ceilings, args=("cuda",), rounds=1, iterations=1)
    _record(benchmark, result, capsys)
    assert result.method == "triton"

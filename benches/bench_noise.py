"""What the noise scale costs on the default workload, in training steps at the max batch.

``batchprof run --noise-scale`` on the default workload (transformer, the CPU's default 128 MiB
budget) estimates the noise scale after the search, with the big batch at the max batch found
and the small one at big // 8. Its extra time is ``draws`` forward+backward passes at each of
the two sizes (no optimizer step). This bench finds the max batch as the run does, then
alternates timing bare training steps at the max batch (AdamW, after warm-up) with timing the
estimate, so both see the same machine load; the figure is their ratio.

    pytest benches/bench_noise.py --benchmark-only --benchmark-json=out.json

extra_info: max_batch, small_batch, big_batch, draws, step_s (median bare step at the max
batch), noise_s (median estimate), steps_worth (noise_s / step_s), steps_worth_per_draw,
load_1min (os.getloadavg at the end).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
from bench_measure import bare_step  # benches/ is on sys.path (no __init__.py)

import batchprof
from batchprof.api import DEFAULT_CPU_MEMORY_LIMIT
from batchprof.backends import CpuBackend
from batchprof.noise import NoiseOptions, estimate_noise_scale
from batchprof.units import parse_bytes
from batchprof.workloads import DEFAULT_WORKLOAD

ROUNDS = 2
STEPS_PER_ROUND = 3


@pytest.fixture(scope="module")
def max_batch() -> int:
    result = batchprof.profile(DEFAULT_WORKLOAD, device="cpu", knee=False)
    assert result.max_batch is not None
    return result.max_batch


def _step_times(batch_size: int, count: int) -> list[float]:
    torch.manual_seed(0)
    step = bare_step(batch_size, DEFAULT_WORKLOAD)  # past AdamW's warm-up: what a probe times
    times = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


@pytest.mark.parametrize("draws", [None, 8], ids=["adaptive", "8"])
def test_noise_scale_cost_in_steps(benchmark, max_batch, draws):
    backend = CpuBackend(parse_bytes(DEFAULT_CPU_MEMORY_LIMIT))
    options = NoiseOptions(draws=draws)
    step_s: list[float] = []
    noise_s: list[float] = []
    result = None

    def estimate():
        return estimate_noise_scale(DEFAULT_WORKLOAD, backend=backend, options=options,
                                    max_batch=max_batch)

    def one_round():
        nonlocal result
        step_s.extend(_step_times(max_batch, STEPS_PER_ROUND))
        started = time.perf_counter()
        result = estimate()
        noise_s.append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    step, noise = statistics.median(step_s), statistics.median(noise_s)
    benchmark.extra_info.update(
        workload=DEFAULT_WORKLOAD, max_batch=max_batch, small_batch=result.small_batch,
        big_batch=result.big_batch, draws=len(result.estimate.draws), step_s=step,
        noise_s=noise, steps_worth=noise / step,
        steps_worth_per_draw=noise / step / len(result.estimate.draws),
        noise_scale_samples=result.noise_scale_samples, load_1min=os.getloadavg()[0])
    assert result.big_batch == max_batch

"""What sampling costs a training step: a CPU matmul-loop "step" with and without the psutil
sampler running at 10 Hz (the default interval), and the cost of one psutil reading.

    pytest benches/bench_sampling.py --benchmark-only --benchmark-json=out.json

The target (issue 5) is a step-time difference < 2% with sampling on. ``test_overhead_paired``
measures it: blocks of steps alternate sampler off / on (order alternating too, so drift and
neighbour load hit both alike); overhead_fraction is the median over adjacent block pairs of
(median step with / median step without) - 1. extra_info also carries step_s_without,
step_s_with, the ratio of overall medians and of minima, samples_taken and the target.
On a loaded machine these figures are noise-bound; ``test_psutil_single_reading``'s
busy_fraction_at_10hz (reading time x 10 Hz) is the load-independent bound on the cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch

from batchprof.sampling import PsutilSampler

INTERVAL_S = 0.1  # 10 Hz
SIZE = 256  # a ~10 ms step on one idle core: the scale of a small real training step
MATMULS_PER_STEP = 8
BLOCKS, STEPS_PER_BLOCK = 12, 10
OVERHEAD_TARGET = 0.02


def _make_step() -> Callable[[], None]:
    a = torch.randn(SIZE, SIZE)
    b = torch.randn(SIZE, SIZE)

    def step() -> None:
        x = a
        for _ in range(MATMULS_PER_STEP):
            x = torch.tanh(x @ b)  # tanh keeps values bounded over the chain
        x.sum().item()

    step()  # warm up the BLAS threads and allocator
    return step


@pytest.fixture(scope="module")
def step() -> Callable[[], None]:
    return _make_step()


def _time_steps(step: Callable[[], None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def test_step_without_sampler(benchmark, step):
    benchmark.extra_info.update(sampler="none", interval_s=None)
    benchmark.pedantic(step, rounds=30, iterations=1, warmup_rounds=2)


def test_step_with_psutil_sampler_10hz(benchmark, step):
    with PsutilSampler(INTERVAL_S) as sampler:
        sampler.begin_window("bench")
        benchmark.pedantic(step, rounds=30, iterations=1, warmup_rounds=2)
        series = sampler.end_window("bench")
    benchmark.extra_info.update(sampler="psutil", interval_s=INTERVAL_S,
                                samples_taken=len(series[0].values))


def test_psutil_single_reading(benchmark):
    """One reading (cpu %, RSS, available memory): times 10 Hz = the CPU the thread costs."""
    with PsutilSampler(INTERVAL_S, threaded=False) as sampler:
        sampler.begin_window("bench")
        benchmark(sampler.sample_once)
        sampler.end_window("bench")
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    stats = benchmark.stats.stats
    benchmark.extra_info.update(
        reading_median_s=stats.median, reading_mean_s=stats.mean,
        busy_fraction_at_10hz=stats.median / INTERVAL_S,  # of one core; the mean adds preemption
        busy_fraction_at_10hz_of_mean=stats.mean / INTERVAL_S)


def test_overhead_paired(benchmark, step):
    def paired() -> dict[str, float]:
        without: list[float] = []
        with_sampling: list[float] = []
        pair_ratios: list[float] = []
        samples = 0
        for block in range(BLOCKS):
            def off() -> list[float]:
                return _time_steps(step, STEPS_PER_BLOCK)

            def on() -> list[float]:
                nonlocal samples
                with PsutilSampler(INTERVAL_S) as sampler:
                    sampler.begin_window("block")
                    times = _time_steps(step, STEPS_PER_BLOCK)
                    samples += len(sampler.end_window("block")[0].values)
                return times

            # Alternate which condition goes first so a trend in machine load cancels out.
            if block % 2:
                on_times, off_times = on(), off()
            else:
                off_times, on_times = off(), on()
            without += off_times
            with_sampling += on_times
            pair_ratios.append(statistics.median(on_times) / statistics.median(off_times))
        return {
            "step_s_without": statistics.median(without),
            "step_s_with": statistics.median(with_sampling),
            # adjacent blocks share the machine's load: the most noise-robust estimate
            "overhead_fraction": statistics.median(pair_ratios) - 1.0,
            "overhead_fraction_of_medians": (statistics.median(with_sampling)
                                             / statistics.median(without) - 1.0),
            "overhead_fraction_of_mins": min(with_sampling) / min(without) - 1.0,
            "samples_taken": samples,
            "steps_per_condition": len(without),
        }

    result = benchmark.pedantic(paired, rounds=1, iterations=1)
    benchmark.extra_info.update(result, interval_s=INTERVAL_S, target_fraction=OVERHEAD_TARGET,
                                torch_threads=torch.get_num_threads())


def test_measure_step_time_with_and_without_sampler(benchmark):
    """The same comparison through the real CPU backend: ``batchprof.measure`` of the mlp
    workload at batch 64, sampler off / on (psutil at 10 Hz) alternating, 6 pairs of probes of
    10 timed steps each. overhead_fraction = median over pairs of (with / without) - 1."""
    import batchprof
    from batchprof.probe import TimingPolicy

    timing = TimingPolicy(timed_steps=10, max_timed_steps=10)
    workload = batchprof.load_workload("mlp")

    def median_step(sampled: bool) -> float:
        if not sampled:
            return batchprof.measure(workload, 64, timing=timing).step_time_median_s
        with PsutilSampler(INTERVAL_S) as sampler:
            m = batchprof.measure(workload, 64, timing=timing, sampler=sampler)
        assert m.sample("rss_bytes") is not None
        return m.step_time_median_s

    def paired() -> list[float]:
        ratios = []
        for i in range(6):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {s: median_step(s) for s in order}
            ratios.append(got[True] / got[False])
        return ratios

    ratios = benchmark.pedantic(paired, rounds=1, iterations=1)
    overhead = statistics.median(ratios) - 1
    benchmark.extra_info.update(overhead_fraction=overhead, ratios=ratios,
                                target=OVERHEAD_TARGET)
    print(f"\n[sampling] measure(mlp, 64) step time with psutil at 10 Hz vs without: "
          f"{overhead:+.2%} (pairs: {', '.join(f'{r:.3f}' for r in ratios)})")

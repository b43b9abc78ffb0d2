"""Speed and probe counts of the pure search functions on synthetic curves.

    .venv/bin/pytest benches/bench_search.py --benchmark-only

Each max-batch case records in ``benchmark.extra_info`` the probes it used, the budget
(``max_batch_probe_budget``: the issue's ceil(log2 M) + ceil(log2(M/2)) + 2, taken at M + 1)
and the issue's formula itself, and asserts the budget (5 with a hint within 10%). A synthetic
probe costs nothing, so the timings are the search's own overhead. The "real probes per search"
bench on real workloads (CPU backend, real memory) lives with the API-level benches, which call
``batchprof.profile``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchprof.records import Outcome
from batchprof.search import find_knee, find_max_batch, max_batch_probe_budget

TRUTHS = [7, 100, 300, 1000, 4096, 10_000, 100_000]


def make_probe(truth: int, memory: bool):
    capacity = 50_000 + 1_000 * truth  # affine peak bytes: resident + per sample

    def probe(b: int) -> Outcome:
        peak = 50_000 + 1_000 * b
        if not memory:
            return Outcome(b, b <= truth)
        return Outcome(b, peak <= capacity, peak_bytes=peak if peak <= capacity else None,
                       capacity_bytes=capacity)
    return probe


@pytest.mark.parametrize("truth", TRUTHS)
@pytest.mark.parametrize("memory", [False, True], ids=["plain", "memory"])
def test_max_batch_without_hint(benchmark, truth, memory):
    result = benchmark(find_max_batch, make_probe(truth, memory))
    issue = math.ceil(math.log2(truth)) + math.ceil(math.log2(truth / 2)) + 2
    benchmark.extra_info.update(truth=truth, probes=result.probes, issue_formula=issue,
                                budget=max_batch_probe_budget(truth))
    assert result.max_batch == truth
    assert result.probes <= max_batch_probe_budget(truth)


@pytest.mark.parametrize("truth", TRUTHS)
@pytest.mark.parametrize("hint_ratio", [0.9, 1.0, 1.1])
@pytest.mark.parametrize("memory", [False, True], ids=["plain", "memory"])
def test_max_batch_with_hint(benchmark, truth, hint_ratio, memory):
    hint = round(truth * hint_ratio)
    result = benchmark(find_max_batch, make_probe(truth, memory), hint=hint)
    benchmark.extra_info.update(truth=truth, hint=hint, probes=result.probes,
                                budget=max_batch_probe_budget(truth))
    assert result.max_batch == truth
    if memory:  # without memory figures no search can pin +-10% of 100,000 in 5 probes
        assert result.probes <= 5


def noisy_ladder(seed: int, iqr: float) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    sigma = np.arcsinh(iqr / 2) / 0.6745
    return [Outcome(b, True, step_times_s=tuple(b / (1000 * b / (b + 32))
                                                * np.exp(rng.normal(0, sigma, 20))))
            for b in (2**k for k in range(11))]


@pytest.mark.parametrize("iqr", [0.03, 0.5])
def test_knee_on_eleven_noisy_points(benchmark, iqr):
    points = noisy_ladder(0, iqr)
    result = benchmark(find_knee, points)
    benchmark.extra_info.update(knee_batch=result.knee_batch, confidence=result.confidence,
                                knee_interval=result.knee_interval)

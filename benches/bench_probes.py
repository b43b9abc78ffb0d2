"""Real probes per max-batch search: built-in workloads on the CPU under small budgets.

    .venv/bin/pytest benches/bench_probes.py --benchmark-only -s

Each search runs ``batchprof.profile(..., knee=False)`` on the real CPU backend (real steps,
real allocator peaks, an enforced budget), one timed step per probe, so a probe costs what
finding memory costs. Without a hint the search must stay within the issue's budget,
ceil(log2 M) + ceil(log2(M/2)) + 2 probes for the true max M (confirmation included); with a
hint within +-10% of the truth (hint = 0.9 M and 1.1 M), within 5. ``extra_info`` records
workload, budget_bytes, truth, hint, probes, bound and the sizes probed in order; each test
prints one line. The truth is the no-hint answer, which tests/test_api.py shows equals
exhaustive measurement. (The prediction-seeded search is benchmarked separately.)
"""

from __future__ import annotations

import math

import pytest

from batchprof.api import profile
from batchprof.backends import CpuBackend
from batchprof.probe import TimingPolicy

ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1)
# Budgets putting the true max between about 20 and 60 (torch 2.13, CPU): large enough that
# doubling + bisection takes a dozen probes, small enough that a probe takes well under a
# second on 2 cores.
BUDGETS = {"mlp": 50_640_000, "cnn": 60_000_000, "transformer": 128 * 2**20,
           "lstm": 33_000_000}
HINT_RATIOS = (0.9, 1.1)
HINTED_MAX_PROBES = 5
_truths: dict[str, int] = {}


def issue_bound(truth: int) -> int:
    return math.ceil(math.log2(truth)) + math.ceil(math.log2(truth / 2)) + 2


def search(name: str, hint: int | None = None):
    return profile(name, backend=CpuBackend(BUDGETS[name]), hint=hint, use_prediction=False,
                   knee=False, timing=ONE_STEP)


def truth_for(name: str) -> int:
    if name not in _truths:
        _truths[name] = search(name).max_batch
    return _truths[name]


def record(benchmark, name: str, result, truth: int, hint: int | None, bound: int) -> None:
    probes = result.max_search.probes
    benchmark.extra_info.update(
        workload=name, budget_bytes=BUDGETS[name], truth=truth, hint=hint, probes=probes,
        bound=bound, sizes=[m.batch_size for m in result.probes],
        wall_s_per_probe=sum(m.wall_time_s or 0 for m in result.probes) / max(probes, 1))
    print(f"\n[probes] {name:<12} truth {truth:>4}  hint {hint or '-':>4}  probes {probes:>2} "
          f"(bound {bound})  sizes {[m.batch_size for m in result.probes]}")


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_probes_without_hint(benchmark, name):
    result = benchmark.pedantic(search, args=(name,), rounds=1, iterations=1)
    truth = _truths.setdefault(name, result.max_batch)
    assert result.max_batch == truth and truth >= 8
    bound = issue_bound(truth)
    record(benchmark, name, result, truth, None, bound)
    assert result.max_search.probes <= bound


@pytest.mark.parametrize("ratio", HINT_RATIOS)
@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_probes_with_hint_within_10_percent(benchmark, name, ratio):
    truth = truth_for(name)
    hint = round(truth * ratio)
    result = benchmark.pedantic(search, args=(name, hint), rounds=1, iterations=1)
    assert result.max_batch == truth
    record(benchmark, name, result, truth, hint, HINTED_MAX_PROBES)
    assert result.max_search.probes <= HINTED_MAX_PROBES


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_probes_seeded_by_prediction(benchmark, name):
    """What `batchprof run` does by default: the prediction (meta trace + calibration at small
    sizes, not counted as probes: they run no search size) seeds the search. Issue target: the
    exact max batch in at most 5 real probes."""
    truth = truth_for(name)

    def seeded():
        return profile(name, backend=CpuBackend(BUDGETS[name]), use_prediction=True,
                       knee=False, timing=ONE_STEP)

    result = benchmark.pedantic(seeded, rounds=1, iterations=1)
    assert result.options["hint_source"] == "prediction", result.notes
    assert result.max_batch == truth
    record(benchmark, name, result, truth, result.options["hint"], HINTED_MAX_PROBES)
    assert result.max_search.probes <= HINTED_MAX_PROBES

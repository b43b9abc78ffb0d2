"""What measuring costs: a bare training step vs ``measure()`` per timed step (mlp workload).

``measure()`` builds the model, runs a warm-up step, one step inside the memory window (the
allocator trace and the saved-tensors hook) and then the timed steps; its wall time divided by
the timed steps, over the bare step's time, is the overhead factor a user pays per probe.

    pytest benches/bench_measure.py --benchmark-only --benchmark-json=out.json

extra_info: bare_step_s (median of the bare step), measure_wall_s, timed_steps,
measure_s_per_timed_step, overhead_factor, plus the Measurement's figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch

import batchprof
from batchprof.probe import TimingPolicy

BATCH_SIZE = 8
TIMED_STEPS = 5
# Fixed step count (no adaptive extension) so wall time / timed steps is well defined.
POLICY = TimingPolicy(timed_steps=TIMED_STEPS, max_timed_steps=TIMED_STEPS, warmup_steps=1)


def bare_step(batch_size: int, workload_name: str = "mlp") -> Callable[[], None]:
    """A bare training step of a built-in at ``batch_size``, past its AdamW warm-up step."""
    workload = batchprof.load_workload(workload_name)
    model = workload.model_fn()
    optimizer = workload.optimizer_fn(model.parameters())
    batch = workload.batch_fn(batch_size, torch.device("cpu"))

    def step() -> None:
        workload.loss_fn(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates AdamW state: the steady state measure() times
    return step


@pytest.fixture(scope="module")
def bare_step_s() -> float:
    step = bare_step(BATCH_SIZE)
    times = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_bare_step(benchmark):
    step = bare_step(BATCH_SIZE)
    benchmark.pedantic(step, rounds=TIMED_STEPS, warmup_rounds=1)
    benchmark.extra_info.update(workload="mlp", batch_size=BATCH_SIZE,
                                bare_step_s=benchmark.stats.stats.median)


def test_measure(benchmark, batchprof, bare_step_s):
    m = benchmark.pedantic(batchprof.measure, args=("mlp", BATCH_SIZE),
                           kwargs={"timing": POLICY}, rounds=2)  # records m's figures
    wall_s = benchmark.stats.stats.median
    per_step_s = wall_s / len(m.step_times_s)
    benchmark.extra_info.update(bare_step_s=bare_step_s, measure_wall_s=wall_s,
                                timed_steps=len(m.step_times_s),
                                measure_s_per_timed_step=per_step_s,
                                overhead_factor=per_step_s / bare_step_s)

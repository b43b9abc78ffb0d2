"""An example suite to copy for your own model: time its training step with pytest-benchmark
and track its memory alongside, with budgets that fail CI on a memory regression.

    pytest --pyargs batchprof.examples.example_user_suite --benchmark-only --benchmark-json=old.json
    pytest --pyargs batchprof.examples.example_user_suite --benchmark-only --benchmark-json=new.json
    batchprof compare old.json new.json --max-peak-increase 5%   # exit 1 on a memory regression

(``python -m batchprof.examples > test_my_model.py`` copies it; in the repository it is also
collected as ``benches/example_user_suite.py``.)

Each benchmark's ``extra_info`` in the JSON holds peak_allocated_bytes, peak_reserved_bytes,
activation_bytes, samples_per_s, kernel_busy_pct (null without a GPU sampler) and, when
profiled, max_batch. ``--batchprof-device cuda`` runs it on a GPU.

To see what a memory regression looks like (a deliberately over-budget test):

    BATCHPROF_DEMO_OVER_BUDGET=1 pytest --pyargs batchprof.examples.example_user_suite -k over_budget

To adapt: replace ``ExampleClassifier``/``make_batch``/``loss_fn`` with your model, batch and
loss, and set the budgets to what your model needs today plus the headroom you accept.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import batchprof
from batchprof.backends import resolve_device
from batchprof.probe import TimingPolicy
from batchprof.pytest_plugin import record_extra_info

IN_FEATURES, HIDDEN, CLASSES = 64, 256, 10
BATCH_SIZE = 32


class ExampleClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.LayerNorm(HIDDEN), nn.GELU(),
                                 nn.Linear(HIDDEN, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(batch_size, IN_FEATURES, device=device),
            torch.randint(0, CLASSES, (batch_size,), device=device))


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


WORKLOAD = batchprof.Workload("example-classifier", ExampleClassifier, make_batch, loss_fn)


def train_step(workload: batchprof.Workload, batch_size: int, device: str) -> Callable[[], None]:
    """The bare training step benchmark times; its first run (optimizer state) is done here."""
    dev = torch.device(resolve_device(device))
    with dev:
        model = workload.model_fn()
    optimizer = workload.optimizer_fn(model.parameters())
    batch = workload.batch_fn(batch_size, dev)

    def step() -> None:
        workload.loss_fn(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # time the kernels, not their launch

    step()
    return step


def test_train_step(benchmark, batchprof):
    """Time the step with benchmark; measure its memory with the batchprof fixture."""
    step = train_step(WORKLOAD, BATCH_SIZE, batchprof.device)
    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
    m = batchprof.measure(WORKLOAD, BATCH_SIZE)  # also recorded into benchmark.extra_info
    record_extra_info(benchmark, m)  # the explicit form, for measurements made elsewhere
    batchprof.check(m, max_peak="16MiB", max_activation="4MiB")


@pytest.mark.batchprof(workload=WORKLOAD, batch_size=BATCH_SIZE, max_peak="16MiB",
                       max_activation="4MiB")
def test_memory_budget(benchmark, batchprof):
    """The marker form: the plugin measures after the body and fails on a missed budget."""
    benchmark.pedantic(train_step(WORKLOAD, BATCH_SIZE, batchprof.device), rounds=5)


def test_largest_batch(benchmark, batchprof):
    """A capacity regression: batch 128 must still fit a 1 MiB budget. The search stops at
    max_batch, in steps of 16, with 3 timed steps per probe, to keep the suite quick."""
    if importlib.util.find_spec("batchprof.api") is None:
        pytest.skip("profile() not available yet")
    options = {"memory_limit": "1MiB", "max_batch": 128, "multiple_of": 16,
               "timing": TimingPolicy(timed_steps=3, max_timed_steps=3)}
    result = benchmark.pedantic(batchprof.profile, args=(WORKLOAD,), kwargs=options, rounds=1)
    batchprof.check(result=result, min_max_batch=128)  # max_batch is in extra_info too


@pytest.mark.skipif(not os.environ.get("BATCHPROF_DEMO_OVER_BUDGET"),
                    reason="demo of a failing budget: set BATCHPROF_DEMO_OVER_BUDGET=1 to run it")
@pytest.mark.batchprof(workload=WORKLOAD, batch_size=BATCH_SIZE, max_peak="128KiB")
def test_over_budget_demo(benchmark, batchprof):
    """Deliberately over budget: parameters, gradients and AdamW state alone pass 128 KiB."""
    benchmark.pedantic(train_step(WORKLOAD, BATCH_SIZE, batchprof.device), rounds=1)

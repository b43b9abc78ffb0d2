"""A user model that calls batchprof's Triton custom op is measured and predicted on the CPU.

The Triton kernel runs under TRITON_INTERPRET=1 here (set by batchprof.kernels before triton is
imported); the predictor traces it on meta through the op's fake implementation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import batchprof
import batchprof.kernels  # noqa: F401 - registers torch.ops.batchprof.*
from batchprof.probe import TimingPolicy

WIDTH = 32


class TritonLinear(nn.Module):
    def __init__(self, n_in: int, n_out: int, aten: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) / n_in**0.5)
        self.aten = aten  # the same layer on torch's own matmul, for comparison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.aten:
            return x @ self.weight
        return torch.ops.batchprof.matmul(x, self.weight)


def custom_op_workload(aten: bool = False) -> batchprof.Workload:
    def model_fn() -> nn.Module:
        return nn.Sequential(TritonLinear(WIDTH, WIDTH, aten), nn.ReLU(), nn.Linear(WIDTH, 4))

    def batch_fn(batch_size: int, device: torch.device):
        return (torch.ones(batch_size, WIDTH, device=device),
                torch.zeros(batch_size, dtype=torch.long, device=device))

    return batchprof.Workload("triton-linear", model_fn, batch_fn,
                              lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]))


def test_custom_op_workload_is_measured_and_predicted_within_error_bar():
    w = custom_op_workload()
    sizes = (3, 6)
    predicted = {p.batch_size: p.peak_allocated_bytes for p in batchprof.predict(w, sizes)}
    for b in sizes:
        m = batchprof.measure(w, b, timing=TimingPolicy(timed_steps=1, max_timed_steps=1))
        assert m.feasible
        assert predicted[b] == pytest.approx(m.peak_allocated_bytes, rel=0.03), b


def test_roofline_counts_the_custom_matmul_flops_as_torch_counts_its_own():
    from batchprof.roofline.costs import step_costs

    custom, aten = step_costs(custom_op_workload(), 8), step_costs(custom_op_workload(True), 8)
    assert custom.flops == aten.flops > 2 * (2 * 8 * WIDTH * WIDTH)  # forward + weight grad

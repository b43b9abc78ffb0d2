"""Workloads with a known or structured gradient noise, for the noise-scale tests and bench.

- ``linear_regression``: y = x·w* + ε, x ~ N(0, I_d), ε ~ N(0, σ²), loss ½(x·w − y)² averaged
  over the batch, at fixed weights w. With δ = w − w*, the per-sample gradient is
  g = x(x·δ − ε), so G = E[g] = δ and (Isserlis) E[g gᵀ] = (|δ|² + σ²) I + 2 δδᵀ, hence
  Σ = (|δ|² + σ²) I + δδᵀ, tr(Σ) = d(|δ|² + σ²) + |δ|², |G|² = |δ|², in closed form.
- ``rule_classifier``: a small MLP on a learnable rule (the class is the argmax of a fixed
  linear map of the features) with label noise, fresh samples per call; trained, its noise
  scale grows as the signal |G|² falls while the label noise keeps tr(Σ).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from batchprof import Workload


def linear_regression(dim: int = 32, sigma: float = 1.0, delta_norm: float = 1.0,
                      seeded_by_size: bool = False, name: str = "linreg") -> tuple[Workload, float]:
    """The workload and its true B_simple = tr(Σ)/|G|² at its fixed weights."""
    w_star = torch.zeros(dim)
    w0 = w_star + delta_norm * torch.ones(dim) / math.sqrt(dim)

    def model_fn() -> nn.Module:
        model = nn.Linear(dim, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(w0.unsqueeze(0))
        return model

    def batch_fn(batch_size: int, device: torch.device):
        gen = torch.Generator().manual_seed(batch_size) if seeded_by_size else None
        x = torch.randn(batch_size, dim, generator=gen)
        y = x @ w_star + sigma * torch.randn(batch_size, generator=gen)
        return x.to(device), y.to(device)

    def loss_fn(model: nn.Module, batch):
        x, y = batch
        return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()

    d2 = delta_norm**2
    truth = (dim * (d2 + sigma**2) + d2) / d2
    optimizer = (lambda params: torch.optim.SGD(params, lr=0.01))  # noqa: E731
    return Workload(name, model_fn, batch_fn, loss_fn, optimizer), truth


RULE_FEATURES, RULE_CLASSES = 16, 4


def rule_classifier(label_noise: float = 0.2, seed: int = 0) -> Workload:
    rule = torch.randn(RULE_FEATURES, RULE_CLASSES, generator=torch.Generator().manual_seed(seed))

    def model_fn() -> nn.Module:
        return nn.Sequential(nn.Linear(RULE_FEATURES, 64), nn.ReLU(),
                             nn.Linear(64, RULE_CLASSES))

    def batch_fn(batch_size: int, device: torch.device):
        x = torch.randn(batch_size, RULE_FEATURES)
        y = (x @ rule).argmax(dim=1)
        flip = torch.rand(batch_size) < label_noise
        y = torch.where(flip, torch.randint(0, RULE_CLASSES, (batch_size,)), y)
        return x.to(device), y.to(device)

    def loss_fn(model: nn.Module, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    return Workload("rule-classifier", model_fn, batch_fn, loss_fn,
                    lambda params: torch.optim.Adam(params, lr=3e-3))


def train(workload: Workload, model: nn.Module, steps: int, batch_size: int = 32) -> float:
    """``steps`` optimizer steps on fresh batches; returns the last loss."""
    optimizer = workload.optimizer_fn(model.parameters())
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = workload.loss_fn(model, workload.batch_fn(batch_size, torch.device("cpu")))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def constant_loss_workload() -> Workload:
    """A loss of the parameters alone: the same gradient for every batch (no noise)."""
    w, _ = linear_regression(dim=4)
    return Workload("constant-loss", w.model_fn, w.batch_fn,
                    lambda model, batch: model.weight.pow(2).sum())


def zero_gradient_workload() -> Workload:
    """A loss that uses the batch but whose gradient is zero everywhere."""
    w, _ = linear_regression(dim=4)
    return Workload("zero-gradient", w.model_fn, w.batch_fn,
                    lambda model, batch: model(batch[0]).sum() * 0.0)


def fixed_dataset_workload() -> Workload:
    """batch_fn(N) = the first N rows of a fixed data set: no two draws independent."""
    w, _ = linear_regression(dim=4)
    data = torch.randn(1024, 4, generator=torch.Generator().manual_seed(0))

    def batch_fn(batch_size: int, device: torch.device):
        x = data[:batch_size].to(device)
        return x, x.sum(dim=1)

    return Workload("fixed-dataset", w.model_fn, batch_fn, w.loss_fn)


def linreg() -> Workload:
    return linear_regression()[0]

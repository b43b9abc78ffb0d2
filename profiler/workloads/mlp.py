"""A plain MLP classifier: Linear/GELU stacks on synthetic features."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..workload import Workload

IN_FEATURES, HIDDEN, CLASSES, DEPTH = 512, 1024, 10, 3


def build_model() -> nn.Module:
    layers: list[nn.Module] = []
    width = IN_FEATURES
    for _ in range(DEPTH):
        layers += [nn.Linear(width, HIDDEN), nn.GELU()]
        width = HIDDEN
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch_size)
    x = torch.randn(batch_size, IN_FEATURES, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (batch_size,), generator=gen).to(device)
    return x, y


def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def workload() -> Workload:
    return Workload("mlp", build_model, make_batch, loss,
                    description=f"MLP {IN_FEATURES}->{HIDDEN}x{DEPTH}->{CLASSES}",
                    tags={"in_features": IN_FEATURES, "hidden": HIDDEN, "depth": DEPTH})

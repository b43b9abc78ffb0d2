"""A plain MLP classifier: Linear/GELU stacks on synthetic features."""

from __future__ import annotations

from torch import nn

from ._classification import batch_maker, cross_entropy_loss
from .base import Workload

IN_FEATURES, HIDDEN, CLASSES, DEPTH = 512, 1024, 10, 3


def build_model() -> nn.Module:
    layers: list[nn.Module] = []
    width = IN_FEATURES
    for _ in range(DEPTH):
        layers += [nn.Linear(width, HIDDEN), nn.GELU()]
        width = HIDDEN
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


make_batch = batch_maker((IN_FEATURES,), CLASSES)
loss = cross_entropy_loss


def workload() -> Workload:
    return Workload("mlp", build_model, make_batch, loss,
                    description=f"MLP {IN_FEATURES}->{HIDDEN}x{DEPTH}->{CLASSES}",
                    tags={"in_features": IN_FEATURES, "hidden": HIDDEN, "depth": DEPTH})

"""What the classifier workloads share: a seeded synthetic (inputs, labels) batch and the loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]


def batch_maker(sample_shape: tuple[int, ...], classes: int) -> Callable[[int, torch.device], Batch]:
    """``make_batch(batch_size, device)``: Gaussian inputs of ``sample_shape`` and integer labels,
    the same for the same batch size (seeded by it), created on the CPU then moved."""
    def make_batch(batch_size: int, device: torch.device) -> Batch:
        gen = torch.Generator().manual_seed(batch_size)
        x = torch.randn(batch_size, *sample_shape, generator=gen).to(device)
        y = torch.randint(0, classes, (batch_size,), generator=gen).to(device)
        return x, y

    return make_batch


def cross_entropy_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)

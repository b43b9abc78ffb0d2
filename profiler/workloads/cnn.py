"""A small ResNet-style CNN: convolutions, BatchNorm, residual blocks, on 32x32 images."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._classification import batch_maker, cross_entropy_loss
from .base import Workload

IMAGE, CHANNELS, CLASSES = 32, 32, 10


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(CHANNELS), nn.ReLU())
        self.stage1 = ResidualBlock(CHANNELS)
        self.down = nn.Sequential(nn.Conv2d(CHANNELS, 2 * CHANNELS, 3, stride=2, padding=1,
                                            bias=False),
                                  nn.BatchNorm2d(2 * CHANNELS), nn.ReLU())
        self.stage2 = ResidualBlock(2 * CHANNELS)
        self.head = nn.Linear(2 * CHANNELS, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


make_batch = batch_maker((3, IMAGE, IMAGE), CLASSES)
loss = cross_entropy_loss


def workload() -> Workload:
    return Workload("cnn", SmallResNet, make_batch, loss,
                    description=f"ResNet-style CNN, {CHANNELS}-{2 * CHANNELS} channels, "
                                f"BatchNorm, {IMAGE}x{IMAGE} inputs",
                    tags={"image": IMAGE, "channels": CHANNELS})

"""What to profile: how to build the model, a batch, the loss and the optimizer.

A user points at a workload with a built-in name (``"transformer"``) or ``"package.module:attr"``
where ``attr`` is a :class:`Workload` or a zero-argument callable returning one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from batchprof.errors import WorkloadError


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    # foreach=False: the single-tensor path is what CPU and meta take by default anyway, and
    # pinning it keeps the CPU measurement and the prediction on the same code path.
    return torch.optim.AdamW(params, lr=1e-3, foreach=False)


@dataclass(frozen=True)
class Workload:
    """A training step, described by four callables.

    - ``model_fn()`` builds the model. It must respect torch's default device
      (``with torch.device("meta"): model_fn()`` must work: the predictor relies on it).
    - ``batch_fn(batch_size, device)`` returns one batch of that size, created on ``device``.
    - ``loss_fn(model, batch)`` runs forward and returns a scalar loss tensor.
    - ``optimizer_fn(params)`` builds the optimizer (AdamW by default).
    """

    name: str
    model_fn: Callable[[], torch.nn.Module]
    batch_fn: Callable[[int, torch.device], Any]
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
    optimizer_fn: Callable[[Any], torch.optim.Optimizer] = _default_optimizer
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)  # e.g. {"seq_len": 64}
    # What one sample holds, for a throughput people compare: tokens/s = tokens_per_sample x
    # samples/s (a language model's sequence length). None: a sample is not made of tokens.
    tokens_per_sample: int | None = None

    def __post_init__(self) -> None:
        t = self.tokens_per_sample
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise WorkloadError(f"Workload {self.name!r}: tokens_per_sample must be a positive "
                                f"int or None, got {t!r}")
        for attr in ("model_fn", "batch_fn", "loss_fn", "optimizer_fn"):
            if not callable(getattr(self, attr)):
                raise WorkloadError(f"Workload {self.name!r}: {attr} must be callable, "
                                    f"got {type(getattr(self, attr)).__name__}")

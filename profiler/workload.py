"""What to profile: how to build the model, a batch, the loss and the optimizer.

A user points at a workload with a built-in name (``"transformer"``) or ``"package.module:attr"``
where ``attr`` is a :class:`Workload` or a zero-argument callable returning one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import WorkloadError


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

    def __post_init__(self) -> None:
        for attr in ("model_fn", "batch_fn", "loss_fn", "optimizer_fn"):
            if not callable(getattr(self, attr)):
                raise WorkloadError(f"Workload {self.name!r}: {attr} must be callable, "
                                    f"got {type(getattr(self, attr)).__name__}")


def builtin_names() -> tuple[str, ...]:
    from .workloads import BUILTINS

    return tuple(BUILTINS)


def load_workload(ref: str | Workload) -> Workload:
    """Resolve a built-in name or ``"module:attr"`` to a Workload.

    Raises WorkloadError with what was wrong and what is accepted.
    """
    if isinstance(ref, Workload):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise WorkloadError(f"workload must be a name or 'module:attr', got {ref!r}")
    from .workloads import BUILTINS

    if ref in BUILTINS:
        return BUILTINS[ref]()
    if ":" not in ref:
        raise WorkloadError(
            f"unknown workload {ref!r}; built-ins are {', '.join(BUILTINS)}, "
            "or give 'package.module:attr' for your own"
        )
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's module, not ours
        raise WorkloadError(
            f"cannot import module {module_name!r} for workload {ref!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise WorkloadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Workload):
        return obj
    if callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise WorkloadError(f"calling {ref} to build the workload failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        if isinstance(obj, Workload):
            return obj
    raise WorkloadError(
        f"{ref} is a {type(obj).__name__}, not a batchprof.Workload "
        "(or a zero-argument callable returning one)"
    )

"""What-if: the same workload under autocast and/or activation checkpointing, before any code
changes (``predict(..., what_if=["bf16", "checkpoint"])``, ``--what-if bf16,checkpoint``).

Each what-if is a rewrite of the Workload, applied the same way on meta (for the prediction)
and on a real device (so the rewritten workload can also be measured):

- ``bf16`` / ``fp16``: ``loss_fn`` runs under ``torch.autocast(device_type, dtype)`` (on meta,
  ``autocast.emulated_autocast``: torch.autocast refuses the meta device). Parameters, gradients
  and optimizer state stay fp32 (master weights), as in mixed-precision training.
- ``checkpoint``: every child of each repeated-block container -- an ``nn.ModuleList`` or
  ``nn.Sequential`` with at least two children of one class, outermost such containers only --
  runs under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``. A model without one
  is left as is, with a note saying so.

``scenarios(what_if)`` lists what to predict side by side: the workload as written, each
what-if alone, and all of them together when more than one is given.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..workloads.base import Workload
from .autocast import emulated_autocast

WHAT_IFS = {"bf16": torch.bfloat16, "fp16": torch.float16, "checkpoint": None}
_AUTOCAST = ("bf16", "fp16")


def parse_what_if(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validated what-if names, in the order given (a comma-separated string or a list)."""
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in WHAT_IFS:
            raise ConfigError(f"unknown what-if {raw!r}; choose from {', '.join(WHAT_IFS)} "
                              "(comma-separated, e.g. bf16,checkpoint)")
        if name not in out:
            out.append(name)
    if sum(n in _AUTOCAST for n in out) > 1:
        raise ConfigError("what-if bf16 and fp16 exclude each other: give one of them")
    return tuple(out)


def scenarios(what_if: tuple[str, ...]) -> list[tuple[str, ...]]:
    """(), each what-if alone, and all together (when more than one)."""
    out: list[tuple[str, ...]] = [()] + [(n,) for n in what_if]
    if len(what_if) > 1:
        out.append(what_if)
    return out


def repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, block) for each child of the outermost repeated-block containers."""
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(name == c or name.startswith(c + ".") for c in chosen if c) or "" in chosen:
            continue
        kinds = collections.Counter(type(child) for child in module.children())
        if kinds and kinds.most_common(1)[0][1] >= 2:
            chosen.append(name)
    blocks = []
    for name in chosen:
        container = model.get_submodule(name) if name else model
        blocks += [(f"{name}.{child_name}" if name else child_name, child)
                   for child_name, child in container.named_children()]
    return blocks


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def apply_checkpointing(model: nn.Module) -> list[str]:
    """Wrap each repeated block's forward in checkpoint; returns the blocks' names."""
    blocks = repeated_blocks(model)
    for _, block in blocks:
        block.forward = _checkpointed(block.forward)
    return [name for name, _ in blocks]


def _autocast_context(model: nn.Module, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    param = next(iter(model.parameters()), None)
    device = param.device.type if param is not None else "cpu"
    if device == "meta":
        return emulated_autocast(dtype)
    return torch.autocast(device_type=device, dtype=dtype)


def rewrite(workload: Workload, what_if: tuple[str, ...]) -> tuple[Workload, list[str]]:
    """The workload changed as ``what_if`` says, and notes (e.g. nothing to checkpoint)."""
    if not what_if:
        return workload, []
    notes: list[str] = []
    model_fn, loss_fn = workload.model_fn, workload.loss_fn
    if "checkpoint" in what_if:
        probe = _count_blocks(workload)
        if probe == 0:
            notes.append("what-if checkpoint: the model has no repeated blocks (no ModuleList "
                         "or Sequential with two children of one class); nothing was "
                         "checkpointed")
        else:
            notes.append(f"what-if checkpoint: {probe} repeated blocks run under "
                         "torch.utils.checkpoint (non-reentrant)")
            inner_model_fn = model_fn

            def model_fn() -> nn.Module:
                model = inner_model_fn()
                apply_checkpointing(model)
                return model
    amp = next((n for n in what_if if n in _AUTOCAST), None)
    if amp is not None:
        dtype = WHAT_IFS[amp]
        inner_loss_fn = loss_fn
        notes.append(f"what-if {amp}: loss_fn runs under autocast, fp32 master weights")

        def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
            with _autocast_context(model, dtype):
                return inner_loss_fn(model, batch)
    name = f"{workload.name} (what-if {'+'.join(what_if)})"
    return replace(workload, name=name, model_fn=model_fn, loss_fn=loss_fn,
                   tags={**workload.tags, "what_if": list(what_if)}), notes


def _count_blocks(workload: Workload) -> int:
    with torch.device("meta"):
        model = workload.model_fn()
    return len(repeated_blocks(model))


def workload_scenarios(workload: Workload | str, what_if: str | Sequence[str] | None
                       ) -> list[tuple[tuple[str, ...], Workload, list[str]]]:
    """(scenario, rewritten workload, notes) for the workload as written and each what-if; the
    names are checked (ConfigError) before anything is loaded or traced."""
    from ..workloads.registry import load_workload

    names = parse_what_if(what_if)
    base = load_workload(workload)
    return [(s, *rewrite(base, s)) for s in scenarios(names)]

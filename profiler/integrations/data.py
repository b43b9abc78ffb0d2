"""A Workload from what a training script already has: a model, its data, a loss.

``workload_from_data(model, loader_or_dataset, loss)`` writes the Workload's four callables so
nobody writes ``batch_fn`` by hand:

- ``model_fn``: the model factory as given, or, for a model *instance*, a deep copy moved to
  torch's default device (so ``with torch.device("meta")`` builds it on meta for the prediction,
  and every probe starts from the same untrained weights).
- ``batch_fn(b, device)``: the first ``b`` samples of the data set (cycled when the data set is
  smaller than ``b``), collated with the loader's own ``collate_fn`` (or the given one, or torch's
  ``default_collate``) and moved to ``device``. The loader's sampler, shuffling and batch size are
  ignored: the profiler picks the batch size, and the same size always gets the same samples.
- ``loss_fn(model, batch)``: ``loss(model(*inputs), target)`` for a criterion such as
  ``nn.CrossEntropyLoss()`` on ``(inputs..., target)`` batches; or your own
  ``loss_fn(model, batch)``; or, with neither, the model's own loss (``model(**batch).loss`` for a
  Hugging Face model, or a model that returns a scalar).
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import default_collate as torch_default_collate

from batchprof.errors import WorkloadError
from batchprof.workloads.base import Workload, _default_optimizer

Collate = Callable[[list[Any]], Any]


# ---- the model ------------------------------------------------------------------------------
def module_factory(model: nn.Module | Callable[[], nn.Module],
                   exclude: Iterable[object] = ()) -> Callable[[], nn.Module]:
    """A zero-argument model builder that respects torch's default device.

    A callable is returned as is. A module instance becomes "deep-copy it, then move the copy
    to ``torch.get_default_device()``"; objects in ``exclude`` (a Lightning trainer the module
    points at, say) are replaced by None in the copy instead of being copied.
    """
    if isinstance(model, nn.Module):
        template = model
        skipped = [obj for obj in exclude if obj is not None]

        def build() -> nn.Module:
            memo: dict[int, Any] = {id(obj): None for obj in skipped}
            return copy.deepcopy(template, memo).to(torch.get_default_device())

        return build
    if callable(model):
        return model
    raise WorkloadError(f"model must be a torch.nn.Module or a zero-argument callable "
                        f"returning one, got {type(model).__name__}")


# ---- the data -------------------------------------------------------------------------------
def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor moved to ``device``: tensors, mappings, lists, tuples
    (named tuples too), and anything with its own ``.to(device)`` (a BatchEncoding)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping) and not callable(getattr(batch, "to", None)):
        moved = {k: to_device(v, device) for k, v in batch.items()}
        try:
            return moved if type(batch) is dict else type(batch)(moved)
        except TypeError:  # a mapping type that cannot be rebuilt from a dict
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    move = getattr(batch, "to", None)
    if callable(move):
        return move(device)
    return batch


def _samples(data: Any, batch_size: int) -> list[Any]:
    """The first ``batch_size`` samples of a map-style or iterable data set, cycled."""
    if isinstance(data, IterableDataset) or (not hasattr(data, "__getitem__")
                                              and isinstance(data, Iterable)):
        out: list[Any] = []
        while len(out) < batch_size:
            before = len(out)
            out.extend(itertools.islice(iter(data), batch_size - len(out)))
            if len(out) == before:
                raise WorkloadError("the data set yielded no samples: a batch needs at least one")
        return out
    try:
        size = len(data)
    except TypeError:
        raise WorkloadError(f"cannot draw samples from a {type(data).__name__}: give a "
                            "DataLoader, a Dataset with __len__ and __getitem__, an "
                            "IterableDataset or a list of samples") from None
    if size == 0:
        raise WorkloadError("the data set is empty: a batch needs at least one sample")
    return [data[i % size] for i in range(batch_size)]


def dataset_and_collate(data: Any, collate_fn: Collate | None = None) -> tuple[Any, Collate]:
    """The samples behind ``data`` and the function that batches them: a DataLoader's own
    dataset and collate_fn; for a Dataset or a list, ``collate_fn`` or torch's default."""
    if isinstance(data, DataLoader):
        return data.dataset, collate_fn or data.collate_fn or torch_default_collate
    if hasattr(data, "__getitem__") or isinstance(data, Iterable):
        return data, collate_fn or torch_default_collate
    raise WorkloadError(f"data must be a DataLoader, a Dataset or a list of samples, "
                        f"got {type(data).__name__}")


def batch_maker(data: Any, collate_fn: Collate | None = None,
                transfer: Callable[[Any, torch.device], Any] | None = None
                ) -> Callable[[int, torch.device], Any]:
    """``batch_fn(batch_size, device)``: the first ``batch_size`` samples, collated, moved.

    ``transfer(batch, device)`` replaces the plain move (a LightningModule's own hooks).
    """
    dataset, collate = dataset_and_collate(data, collate_fn)
    move = transfer or to_device

    def make_batch(batch_size: int, device: torch.device) -> Any:
        try:
            batch = collate(_samples(dataset, batch_size))
        except WorkloadError:
            raise
        except Exception as exc:  # the user's collate function: name it, keep the cause
            raise WorkloadError(f"collating {batch_size} samples failed in "
                                f"{getattr(collate, '__qualname__', collate)!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
        return move(batch, device)

    return make_batch


# ---- the loss -------------------------------------------------------------------------------
def loss_of(output: Any, where: str) -> torch.Tensor:
    """The scalar loss in a model's or training step's output: the tensor itself, a ``loss``
    attribute (Hugging Face ModelOutput) or a ``"loss"`` key (a Lightning step's dict)."""
    value = output
    if isinstance(output, Mapping) and "loss" in output:
        value = output["loss"]
    elif not isinstance(output, torch.Tensor) and getattr(output, "loss", None) is not None:
        value = output.loss
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.reshape(())
    raise WorkloadError(f"{where} returned {type(output).__name__}, not a scalar loss: "
                        "return a scalar tensor (or an output with .loss / a dict with 'loss'), "
                        "or pass loss= (a criterion) or loss_fn=(model, batch) -> loss")


def call_model(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a mapping, ``model(*batch)`` for a list or tuple, else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(*batch)
    return model(batch)


def criterion_loss(criterion: Callable[[Any, Any], torch.Tensor]
                   ) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``loss_fn`` for ``(inputs..., target)`` batches: ``criterion(model(*inputs), target)``."""
    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise WorkloadError(f"loss= (a criterion) needs (inputs..., target) batches, got "
                                f"{type(batch).__name__}; pass loss_fn=(model, batch) -> loss "
                                "for other batch layouts")
        *inputs, target = batch
        return loss_of(criterion(model(*inputs), target), "the criterion")

    return loss_fn


def own_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The model's own loss: its output on the batch, read with :func:`loss_of`."""
    try:
        output = call_model(model, batch)
    except TypeError as exc:  # e.g. model(x, y) on an (inputs, target) batch and no criterion
        raise WorkloadError(f"calling {type(model).__name__} on the batch "
                            f"({type(batch).__name__}) failed: {exc}; pass loss= (a criterion on "
                            "(output, target)) or loss_fn=(model, batch) -> loss") from exc
    return loss_of(output, f"{type(model).__name__} on the batch")


# ---- the optimizer --------------------------------------------------------------------------
def rebuild_optimizer(optimizer: torch.optim.Optimizer) -> Callable[[Any], torch.optim.Optimizer]:
    """An ``optimizer_fn`` building the same optimizer class with the same hyperparameters on
    new parameters (one parameter group: per-group settings do not change its memory)."""
    cls = type(optimizer)
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in optimizer.defaults.items() if k in accepted}

    def build(params: Any) -> torch.optim.Optimizer:
        return cls(params, **kwargs)

    return build


# ---- all together ---------------------------------------------------------------------------
def workload_from_data(
    model: nn.Module | Callable[[], nn.Module],
    data: Any,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    *,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    optimizer_fn: Callable[[Any], torch.optim.Optimizer] | None = None,
    collate_fn: Collate | None = None,
    name: str | None = None,
    description: str = "",
) -> Workload:
    """A :class:`batchprof.Workload` from a model, a DataLoader (or Dataset) and a loss.

    ``loss`` is a criterion ``(output, target) -> loss`` for ``(inputs..., target)`` batches;
    ``loss_fn(model, batch) -> loss`` takes over for anything else; with neither, the model's
    own loss is used (see :func:`own_loss`). ``optimizer_fn`` defaults to batchprof's AdamW.
    Raises WorkloadError when both losses are given or the model/data are of the wrong kind.
    """
    if loss is not None and loss_fn is not None:
        raise WorkloadError("give loss= (a criterion on (output, target)) or loss_fn= "
                            "((model, batch) -> loss), not both")
    step_loss = loss_fn or (criterion_loss(loss) if loss is not None else own_loss)
    if name is None:
        name = (type(model).__name__ if isinstance(model, nn.Module)
                else getattr(model, "__name__", "model"))
    dataset, _ = dataset_and_collate(data, collate_fn)
    return Workload(
        name=name, model_fn=module_factory(model), batch_fn=batch_maker(data, collate_fn),
        loss_fn=step_loss, optimizer_fn=optimizer_fn or _default_optimizer,
        description=description or f"{name} on {type(dataset).__name__} samples",
        tags={"source": "integrations.data"},
    )

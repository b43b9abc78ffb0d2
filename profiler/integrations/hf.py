"""Hugging Face: profile a ``transformers.Trainer`` as built, set its batch size.

``profile_trainer(trainer, memory_limit=..., **profile_options)`` before ``trainer.train()``:
profiles the Trainer's own training step and sets ``trainer.args.per_device_train_batch_size``
(and the Trainer's internal train batch size, which it read from the arguments when it was
built) to the recommended batch. A thin layer over :func:`batchprof.profile`:

- the model: ``trainer.model``, deep-copied onto each probe's device;
- batches: the first ``b`` rows of ``trainer.train_dataset`` collated by ``trainer.data_collator``
  after the Trainer's own column removal (``remove_unused_columns``), moved to the device;
- the loss: ``trainer.compute_loss(model, batch)``, so a Trainer subclass's own loss counts;
- the optimizer: the one the Trainer would create from its arguments
  (``Trainer.get_optimizer_cls_and_kwargs``), or the class and hyperparameters of the one
  passed as ``optimizers=(optimizer, scheduler)``.

Called after training starts it would be too late (the train loader already exists), which
is why this is a function to call first rather than a TrainerCallback. Needs ``batchprof[hf]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from batchprof.integrations._deps import IntegrationError, require
from batchprof.integrations.data import batch_maker, loss_of, module_factory, rebuild_optimizer
from batchprof.records.result import ProfileResult
from batchprof.workloads.base import Workload

transformers = require("transformers", "hf", "transformers==5.24.0 accelerate==1.15.0")

USES = ("recommended", "max", "knee")


def _train_data(trainer: Any) -> tuple[Any, Callable[[list[Any]], Any]]:
    """The train data set and the collator the Trainer's train loader would use."""
    dataset = trainer.train_dataset
    if dataset is None:
        raise IntegrationError("the Trainer has no train_dataset: pass train_dataset= when "
                               "building it (batchprof draws its batches from it)")
    collator = trainer.data_collator
    try:
        import datasets  # optional: only a datasets.Dataset has columns to remove
    except ImportError:
        datasets = None
    if datasets is not None and isinstance(dataset, datasets.Dataset):
        dataset = trainer._remove_unused_columns(dataset, description="batchprof")
    else:
        collator = trainer._get_collator_with_removed_columns(collator, description="batchprof")
    return dataset, collator


def _optimizer_fn(trainer: Any) -> tuple[Callable[[Any], torch.optim.Optimizer], str]:
    if trainer.optimizer is not None:  # given as Trainer(optimizers=(optimizer, scheduler))
        return rebuild_optimizer(trainer.optimizer), type(trainer.optimizer).__name__
    cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)

    def build(params: Any) -> torch.optim.Optimizer:
        return cls(params, **kwargs)

    return build, f"{getattr(cls, '__name__', cls)} (args.optim={trainer.args.optim})"


def trainer_workload(trainer: Any, name: str | None = None) -> Workload:
    """The Workload of one step of ``trainer``: its model, data, collator, loss, optimizer."""
    if not isinstance(trainer, transformers.Trainer):
        raise IntegrationError(f"expected a transformers.Trainer, got {type(trainer).__name__}")
    dataset, collator = _train_data(trainer)

    def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return loss_of(trainer.compute_loss(model, batch), f"{type(trainer).__name__}.compute_loss")

    optimizer_fn, optimizer_note = _optimizer_fn(trainer)
    model_name = type(trainer.model).__name__
    return Workload(
        name=name or model_name, model_fn=module_factory(trainer.model),
        batch_fn=batch_maker(dataset, collator), loss_fn=loss_fn, optimizer_fn=optimizer_fn,
        description=f"transformers Trainer step of {model_name}; optimizer {optimizer_note}",
        tags={"source": "integrations.hf"},
    )


def set_train_batch_size(trainer: Any, value: int) -> None:
    """Set ``args.per_device_train_batch_size`` and the Trainer's own copy of it."""
    trainer.args.per_device_train_batch_size = value
    trainer._train_batch_size = trainer.args.train_batch_size  # read once in Trainer.__init__


def _model_device(trainer: Any) -> str:
    param = next(trainer.model.parameters(), None)
    return "cuda" if param is not None and param.device.type == "cuda" else "cpu"


def profile_trainer(trainer: Any, *, device: str | None = None,
                    memory_limit: int | str | None = None, use: str = "recommended",
                    set_batch_size: bool = True, **profile_options: Any) -> ProfileResult:
    """Profile ``trainer``'s training step; set its per-device train batch size.

    ``device`` defaults to where the model is (cuda or cpu). ``use`` picks the batch written
    back: "recommended" (default), "max" or "knee"; nothing is written when it is None (no
    batch fit). Other keyword arguments go to :func:`batchprof.profile` (``knee=False`` for
    the quick what-fits answer). Returns the ProfileResult.
    """
    import batchprof

    if use not in USES:
        raise IntegrationError(f"use={use!r}; expected one of {', '.join(USES)}")
    workload = trainer_workload(trainer)
    result = batchprof.profile(workload, device=device or _model_device(trainer),
                               memory_limit=memory_limit, **profile_options)
    value = {"recommended": result.recommended_batch, "max": result.max_batch,
             "knee": result.knee_batch}[use]
    if set_batch_size and value is not None:
        set_train_batch_size(trainer, value)
    return result

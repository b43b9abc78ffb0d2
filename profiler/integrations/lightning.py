"""Lightning: profile the LightningModule + DataModule you already have, set the batch size.

Two faces, both thin layers over :func:`batchprof.profile`:

- ``profile_lightning(model, datamodule, memory_limit=..., **profile_options)`` before
  ``trainer.fit``: profiles the training step and sets the recommended batch size where
  Lightning's ``Tuner.scale_batch_size`` would (``model.batch_size``, ``model.hparams``,
  ``datamodule.batch_size``, ``datamodule.hparams``: every holder that has the attribute);
- ``BatchSizeProfiler(memory_limit=..., ...)``, a callback that does the same in
  ``on_fit_start``, before the fit loop asks the data module for its train loader.

The Workload it builds: the model deep-copied onto each probe's device (the trainer it points
at is not copied), batches drawn from the train loader's dataset and collated by its own
``collate_fn`` at any size (the loader's sampler and batch size are ignored) and moved with the
module's own batch-transfer hooks, the loss from ``training_step(batch, 0)``, the optimizer
rebuilt from ``configure_optimizers()`` (its class and hyperparameters; AdamW if it cannot be
read without a trainer). Manual optimization is not supported. Needs ``batchprof[lightning]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from batchprof.integrations._deps import IntegrationError, require
from batchprof.integrations.data import batch_maker, loss_of, module_factory, rebuild_optimizer
from batchprof.records.result import ProfileResult
from batchprof.workloads.base import Workload, _default_optimizer

pl = require("lightning.pytorch", "lightning", "lightning==2.6.6")

USES = ("recommended", "max", "knee")
_LOG_WITHOUT_TRAINER = r".*self\.log\(\).*"  # training_step's self.log on the trainer-less copy


# ---- the workload ---------------------------------------------------------------------------
def _first_optimizer(config: Any) -> torch.optim.Optimizer | None:
    """The first optimizer in any shape ``configure_optimizers`` may return."""
    if isinstance(config, torch.optim.Optimizer):
        return config
    if isinstance(config, Mapping):
        return _first_optimizer(config.get("optimizer"))
    if isinstance(config, (list, tuple)) and config:
        return _first_optimizer(config[0])
    return None


def optimizer_factory(model: Any) -> tuple[Callable[[Any], torch.optim.Optimizer], str]:
    """An ``optimizer_fn`` that rebuilds the module's optimizer (class and hyperparameters) on
    new parameters, and a line saying which optimizer that is."""
    try:
        optimizer = _first_optimizer(model.configure_optimizers())
    except Exception as exc:  # noqa: BLE001 - e.g. it reads self.trainer: fall back, say so
        return _default_optimizer, (f"configure_optimizers() failed without a trainer "
                                    f"({type(exc).__name__}: {exc}); profiled with AdamW")
    if optimizer is None:
        return _default_optimizer, "configure_optimizers() returned no optimizer; profiled with AdamW"
    return rebuild_optimizer(optimizer), (f"optimizer {type(optimizer).__name__} from "
                                          "configure_optimizers()")


def _check_module(model: Any) -> None:
    if not isinstance(model, pl.LightningModule):
        raise IntegrationError(f"expected a lightning.pytorch.LightningModule, got "
                               f"{type(model).__name__}; for a plain nn.Module use "
                               "batchprof.integrations.data.workload_from_data")
    if not model.automatic_optimization:
        raise IntegrationError(f"{type(model).__name__} uses manual optimization "
                               "(automatic_optimization = False): its training_step runs the "
                               "optimizer itself, which batchprof cannot time or measure as one "
                               "step; write a batchprof.Workload for it instead")


def lightning_workload(model: Any, train_dataloader: Any, name: str | None = None) -> Workload:
    """The Workload of ``model.training_step`` on batches from ``train_dataloader`` (a
    DataLoader or a Dataset)."""
    _check_module(model)

    def transfer(batch: Any, device: torch.device) -> Any:
        batch = model.on_before_batch_transfer(batch, 0)
        batch = model.transfer_batch_to_device(batch, device, 0)
        return model.on_after_batch_transfer(batch, 0)

    def loss_fn(module: Any, batch: Any) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOG_WITHOUT_TRAINER)
            output = module.training_step(batch, 0)
        return loss_of(output, f"{type(module).__name__}.training_step")

    optimizer_fn, optimizer_note = optimizer_factory(model)
    name = name or type(model).__name__
    return Workload(
        name=name, model_fn=module_factory(model, exclude=[model._trainer]),
        batch_fn=batch_maker(train_dataloader, transfer=transfer), loss_fn=loss_fn,
        optimizer_fn=optimizer_fn,
        description=f"LightningModule {type(model).__name__}.training_step; {optimizer_note}",
        tags={"source": "integrations.lightning"},
    )


# ---- where the batch size lives -------------------------------------------------------------
def batch_size_holders(model: Any, datamodule: Any, attribute: str) -> list[Any]:
    """Every object or dict holding ``attribute``, in the order Lightning's Tuner checks:
    the model, its hparams, the data module, its hparams."""
    holders: list[Any] = []
    for owner in (model, datamodule):
        if owner is None:
            continue
        if hasattr(owner, attribute):
            holders.append(owner)
        hparams = getattr(owner, "hparams", None)
        if hparams is not None and attribute in hparams:
            holders.append(hparams)
    return holders


def set_batch_size(model: Any, datamodule: Any, value: int, attribute: str = "batch_size"
                   ) -> list[str]:
    """Set ``attribute`` to ``value`` on every holder; returns where it was set.

    Raises IntegrationError when nothing holds it (Lightning's Tuner requires the same).
    """
    holders = require_holders(model, datamodule, attribute)
    where = []
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)
        where.append(type(holder).__name__)
    return where


def require_holders(model: Any, datamodule: Any, attribute: str) -> list[Any]:
    """:func:`batch_size_holders`, or IntegrationError when there is none."""
    holders = batch_size_holders(model, datamodule, attribute)
    if not holders:
        raise IntegrationError(
            f"nowhere to set {attribute!r}: neither {type(model).__name__} nor "
            f"{type(datamodule).__name__ if datamodule is not None else 'a data module'} "
            f"(nor their hparams) has it. Give one of them a {attribute!r} attribute that its "
            "train_dataloader() reads (as Lightning's Tuner requires), or pass "
            "set_batch_size=False and read result.recommended_batch")
    return holders


def _check_use(use: str) -> None:
    if use not in USES:
        raise IntegrationError(f"use={use!r}; expected one of {', '.join(USES)}")


def chosen_batch(result: ProfileResult, use: str) -> int | None:
    """The batch size ``use`` names in ``result`` (None when the run found none)."""
    _check_use(use)
    return {"recommended": result.recommended_batch, "max": result.max_batch,
            "knee": result.knee_batch}[use]


def _train_loader(model: Any, datamodule: Any) -> Any:
    source = datamodule if datamodule is not None else model
    try:
        return source.train_dataloader()
    except Exception as exc:
        raise IntegrationError(f"{type(source).__name__}.train_dataloader() failed: "
                               f"{type(exc).__name__}: {exc}") from exc


def _profile_and_set(model: Any, datamodule: Any, loader: Any, *, device: str,
                     memory_limit: int | str | None, use: str, attribute: str,
                     set_it: bool, options: dict[str, Any]) -> ProfileResult:
    import batchprof

    _check_use(use)
    if set_it:
        require_holders(model, datamodule, attribute)  # fail before any probe runs
    workload = lightning_workload(model, loader)
    result = batchprof.profile(workload, device=device, memory_limit=memory_limit, **options)
    value = chosen_batch(result, use)
    if set_it and value is not None:
        set_batch_size(model, datamodule, value, attribute)
    return result


def profile_lightning(model: Any, datamodule: Any = None, *, device: str = "cpu",
                      memory_limit: int | str | None = None, use: str = "recommended",
                      batch_arg_name: str = "batch_size", set_batch_size: bool = True,
                      setup: bool = True, **profile_options: Any) -> ProfileResult:
    """Profile ``model.training_step`` on ``datamodule``'s train data; set the batch size.

    With ``setup`` (default) the data module's ``prepare_data()`` and ``setup("fit")`` run
    first (the trainer runs them again at fit). Without a data module, the model's own
    ``train_dataloader()`` supplies the data. ``use`` picks the batch written back:
    "recommended" (default), "max" or "knee"; nothing is written when it is None (a run that
    found no batch). Other keyword arguments go to :func:`batchprof.profile` (``knee=False``
    for the quick what-fits answer). Returns the ProfileResult.
    """
    _check_module(model)
    if datamodule is not None and setup:
        datamodule.prepare_data()
        datamodule.setup("fit")
    loader = _train_loader(model, datamodule)
    return _profile_and_set(model, datamodule, loader, device=device, memory_limit=memory_limit,
                            use=use, attribute=batch_arg_name, set_it=set_batch_size,
                            options=profile_options)


class BatchSizeProfiler(pl.Callback):
    """Profile at ``on_fit_start`` and set the batch size before the train loader is built.

    ``Trainer(callbacks=[BatchSizeProfiler(memory_limit="2GiB")]).fit(model, datamodule=dm)``.
    The device defaults to the module's (cuda when it sits on a GPU, else cpu). The result is
    kept as ``self.result`` and the batch set as ``self.batch_size``.
    """

    def __init__(self, *, device: str | None = None, memory_limit: int | str | None = None,
                 use: str = "recommended", batch_arg_name: str = "batch_size",
                 **profile_options: Any):
        _check_use(use)
        self.device, self.memory_limit, self.use = device, memory_limit, use
        self.batch_arg_name, self.profile_options = batch_arg_name, profile_options
        self.result: ProfileResult | None = None
        self.batch_size: int | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        device = self.device or ("cuda" if pl_module.device.type == "cuda" else "cpu")
        datamodule = trainer.datamodule
        loader = _train_loader(pl_module, datamodule)
        self.result = _profile_and_set(
            pl_module, datamodule, loader, device=device, memory_limit=self.memory_limit,
            use=self.use, attribute=self.batch_arg_name, set_it=True,
            options=self.profile_options)
        self.batch_size = chosen_batch(self.result, self.use)

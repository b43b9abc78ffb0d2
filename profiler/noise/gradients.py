"""The torch half of the noise scale: squared gradient norms of the workload's real loss.

Per draw: a fresh small batch and a fresh big batch from the workload's ``batch_fn``, the model
in train mode, ``loss.backward()``, the squared norm of all trainable parameters' gradients (in
float64), gradients cleared; no optimizer step, so the weights never change. On the given
backend, the first draw under its budget guard (an overrun is an out-of-memory, reported with
what to change; later draws repeat the same sizes, so they skip the guard's per-op cost).
The big batch can be accumulated from micro-batches (``micro_batch``): each micro-batch's loss
weighted by its share of the batch, which for a loss that is a mean over the batch gives the
big batch's gradient.

Independent draws need independent batches. A ``batch_fn`` that samples afresh on every call
(a real data loader) is used as is. One that returns the same batch for the same size (the
built-ins seed their random data by the size) is called at a different size per draw and
sliced along dimension 0, which needs a batch-first batch; one that returns the same leading
samples whatever the size (the first N rows of a fixed data set) cannot give independent
draws and is refused.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map

from ..backends import Backend, make_backend, resolve_device
from ..errors import StepError
from ..units import parse_bytes
from ..workloads.base import Workload
from ..workloads.registry import load_workload
from .estimator import GradientDraw, NoiseScaleError, estimate_noise_scale_from_draws
from .lr import learning_rate_hint, optimizer_family
from .record import NoiseOptions, NoiseScaleResult, choose_batch_sizes, enough_draws
from .text import caveats

FRESH = "a fresh batch_fn call per batch"
SLICED = ("batch_fn returns the same batch for the same size, so each draw slices "
          "batch_fn(N) at a different N")


def _same_batch(a: Any, b: Any) -> bool:
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def slice_batch(batch: Any, start: int, stop: int, size: int) -> Any:
    """Rows ``start:stop`` of a batch-first batch of ``size`` samples (non-tensors kept)."""
    def cut(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if leaf.dim() == 0 or leaf.shape[0] != size:
            raise NoiseScaleError(
                f"cannot slice the batch into samples: a tensor of shape {tuple(leaf.shape)} "
                f"in a batch of {size} is not batch-first; make batch_fn return a fresh random "
                "batch per call (then no slicing is needed), or use a batch-first batch")
        return leaf[start:stop]

    return tree_map(cut, batch)


class BatchSource:
    """Independent batches from a workload's ``batch_fn``, two per draw."""

    def __init__(self, workload: Workload, device: torch.device, probe_size: int):
        self.workload, self.device = workload, device
        first = workload.batch_fn(probe_size, device)
        self.deterministic = _same_batch(first, workload.batch_fn(probe_size, device))
        self.describe = SLICED if self.deterministic else FRESH
        self._first_rows: Any = None

    def pair(self, index: int, small: int, big: int) -> tuple[Any, Any]:
        batch_fn = self.workload.batch_fn
        if not self.deterministic:
            return batch_fn(small, self.device), batch_fn(big, self.device)
        size = small + big + index  # a different size, so a different seed, per draw
        pool = batch_fn(size, self.device)
        head = slice_batch(pool, 0, small, size)
        if index == 0:
            self._first_rows = head
        elif index == 1 and _same_batch(head, self._first_rows):
            raise NoiseScaleError(
                "batch_fn returns the same leading samples whatever the batch size (a fixed "
                "data set's first rows?): the draws would not be independent; make batch_fn "
                "draw a fresh random batch per call")
        return head, slice_batch(pool, small, small + big, size)


def _micro_batches(batch: Any, size: int, micro: int | None) -> Iterator[tuple[Any, float]]:
    if micro is None or micro >= size:
        yield batch, 1.0
        return
    for start in range(0, size, micro):
        stop = min(size, start + micro)
        yield slice_batch(batch, start, stop, size), (stop - start) / size


def grad_sq_norm(model: torch.nn.Module, params: list[torch.nn.Parameter],
                 loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], batch: Any,
                 size: int, backend: Backend, micro: int | None = None,
                 guard: bool = True) -> float:
    """|∇ loss|² over ``params`` at one batch (accumulated over micro-batches), grads cleared.

    ``guard`` runs the passes under the backend's budget guard (on the CPU a dispatch mode
    with Python work per op: the draws after the first, at the same sizes, skip it)."""
    for chunk, weight in _micro_batches(batch, size, micro):
        resident = [*params, *(p.grad for p in params if p.grad is not None),
                    *(t for t in tree_leaves(chunk) if isinstance(t, torch.Tensor))]
        with backend.budget_guard(resident) if guard else contextlib.nullcontext():
            loss = loss_fn(model, chunk)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise NoiseScaleError("loss_fn must return a scalar tensor (a mean over the "
                                      f"batch), got {type(loss).__name__}")
            if not loss.requires_grad:
                raise NoiseScaleError("the loss does not require grad: it does not depend on "
                                      "the model's trainable parameters")
            (loss * weight if weight != 1.0 else loss).backward()
        del loss
    grads = [p.grad.detach() for p in params if p.grad is not None]
    total = torch.stack([g.double().pow(2).sum() for g in grads]).sum().item() if grads else 0.0
    for p in params:
        p.grad = None
    return float(total)


def _resolve_backend(device: str, memory_limit: int | str | None,
                     backend: Backend | None) -> Backend:
    if backend is not None:
        return backend
    limit = parse_bytes(memory_limit) if memory_limit is not None else None
    return make_backend(resolve_device(device), limit)


def _draws(wl: Workload, model: torch.nn.Module, params: list[torch.nn.Parameter],
           backend: Backend, options: NoiseOptions, small: int, big: int,
           on_draw: Callable[[GradientDraw], None] | None) -> tuple[list[GradientDraw], str]:
    source = BatchSource(wl, backend.device, small)
    draws: list[GradientDraw] = []
    while not enough_draws(draws, options):
        i = len(draws)
        small_batch, big_batch = source.pair(i, small, big)
        # The budget is checked on the first draw; later draws repeat the same sizes.
        g_small = grad_sq_norm(model, params, wl.loss_fn, small_batch, small, backend,
                               guard=i == 0)
        del small_batch
        g_big = grad_sq_norm(model, params, wl.loss_fn, big_batch, big, backend,
                             options.micro_batch, guard=i == 0)
        del big_batch
        draws.append(GradientDraw(small, g_small, big, g_big))
        if on_draw is not None:
            on_draw(draws[-1])
    return draws, source.describe


@contextlib.contextmanager
def _seeded(backend: Backend, seed: int) -> Iterator[None]:
    """Seed torch for the block, then give back the caller's RNG state (CPU and this GPU)."""
    devices = [backend.device] if backend.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _measure_draws(wl: Workload, model: torch.nn.Module, backend: Backend,
                   options: NoiseOptions, small: int, big: int,
                   on_draw: Callable[[GradientDraw], None] | None) -> tuple[list[GradientDraw], str]:
    """The draws, with the model's mode, gradients and the global RNG left as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NoiseScaleError(f"workload {wl.name!r}: the model has no trainable parameters")
    saved_grads = [p.grad for p in params]
    was_training = model.training
    for p in params:
        p.grad = None
    failure: BaseException | None = None
    oom = False
    try:
        with _seeded(backend, options.seed):
            model.train()
            return _draws(wl, model, params, backend, options, small, big, on_draw)
    except NoiseScaleError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified just below, by type
        oom = backend.is_oom(exc)
        failure = None if oom else exc
    finally:
        model.train(was_training)
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
    # Outside the except block: the traceback no longer pins the step's tensors.
    gc.collect()
    backend.cleanup()
    if oom:
        micro = "" if options.micro_batch else ", or set --micro-batch to accumulate it"
        raise NoiseScaleError(f"the gradient at batch {big} (or {small}) ran out of memory on "
                              f"{backend.name}: lower --big-batch{micro}, or raise "
                              "--memory-limit")
    raise StepError(f"the loss of workload {wl.name!r} failed while estimating the noise scale "
                    f"(not out-of-memory): {type(failure).__name__}: {failure}") from failure


def _lr_hint(wl: Workload, model: torch.nn.Module, options: NoiseOptions,
             target_batch: int | None, noise_scale: float) -> Any:
    if options.reference_batch is None or options.reference_lr is None:
        return None
    family = options.optimizer_family
    if family == "auto":
        optimizer = wl.optimizer_fn([torch.nn.Parameter(torch.zeros(1))])
        family = optimizer_family(c.__name__ for c in type(optimizer).__mro__)
        if family is None:
            raise NoiseScaleError(f"no learning-rate rule for {type(optimizer).__name__}: pass "
                                  "--optimizer-family adam or sgd")
    # Without a target: the largest batch the noise scale says does not waste samples.
    target = options.target_batch or target_batch or max(1, int(noise_scale))
    return learning_rate_hint(options.reference_batch, options.reference_lr, target, family,
                              noise_scale)


def estimate_noise_scale(
    workload: Workload | str,
    device: str = "cpu",
    memory_limit: int | str | None = None,
    *,
    options: NoiseOptions | None = None,
    model: torch.nn.Module | None = None,
    backend: Backend | None = None,
    max_batch: int | None = None,
    target_batch: int | None = None,
    on_draw: Callable[[GradientDraw], None] | None = None,
) -> NoiseScaleResult:
    """The simple gradient noise scale of ``workload`` at the weights of ``model``.

    ``model`` (default: a fresh ``workload.model_fn()`` on the device, seeded by
    ``options.seed``) is left as it was: same weights, mode, gradients and global RNG state.
    ``max_batch`` (when known) is the default big batch; ``target_batch`` the batch a
    learning-rate hint is for (the recommended batch), when ``options`` asks for one.

    Raises ConfigError for sizes that cannot give two batch sizes; NoiseScaleError for a
    workload without gradient noise (a loss ignoring the batch, zero gradients), a signal the
    draws do not resolve, or an out-of-memory big batch; StepError when the loss fails.
    """
    options = options or NoiseOptions()
    started = time.perf_counter()
    wl = load_workload(workload)
    small, big, big_source = choose_batch_sizes(options, max_batch)
    owned = backend is None  # built here, so closed here; a caller's backend stays open
    backend = _resolve_backend(device, memory_limit, backend)
    try:
        given_model = model is not None
        if model is None:
            with _seeded(backend, options.seed), torch.device(backend.device):
                model = wl.model_fn()
        draws, draw_source = _measure_draws(wl, model, backend, options, small, big, on_draw)
        estimate = estimate_noise_scale_from_draws(draws, options.confidence)
        has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            for m in model.modules())
        builtin = getattr(wl.batch_fn, "__module__", "").startswith("batchprof.workloads")
        return NoiseScaleResult(
            workload=wl.name, device=backend.name, estimate=estimate, small_batch=small,
            big_batch=big, big_batch_source=big_source, micro_batch=options.micro_batch,
            draw_source=draw_source, elapsed_s=time.perf_counter() - started,
            caveats=caveats(wl.name, builtin, given_model, has_batchnorm),
            lr_hint=_lr_hint(wl, model, options, target_batch, estimate.noise_scale_samples),
            options=options.to_dict())
    finally:
        if owned:
            backend.close()

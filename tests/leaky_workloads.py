"""Workloads that misbehave on purpose (issue 14): they leak, or crash their process.

Importable by reference (``tests.leaky_workloads:NAME``) so a probe worker process can load them.
Every one is tiny: a leak of 1 MiB per step, crashes only at batch >= CRASH_AT.
"""

from __future__ import annotations

import ctypes
import os
import signal

import torch

from batchprof import Workload
from tests.helpers import tiny_workload

CRASH_AT = 24  # a batch size at or above this crashes the step
KEPT: list[torch.Tensor] = []


def leaking() -> Workload:
    base = tiny_workload(name="leaky")

    def loss_fn(model, batch):
        KEPT.append(torch.ones(256 * 1024))  # 1 MiB kept forever, per step
        return base.loss_fn(model, batch)

    return Workload("leaky", base.model_fn, base.batch_fn, loss_fn)


def _crashing(name: str, crash) -> Workload:
    base = tiny_workload(name=name)

    def loss_fn(model, batch):
        if batch[0].shape[0] >= CRASH_AT:
            crash()
        return base.loss_fn(model, batch)

    return Workload(name, base.model_fn, base.batch_fn, loss_fn)


def segfault() -> Workload:
    return _crashing("segfault", lambda: ctypes.string_at(0))


def exits() -> Workload:
    return _crashing("exits", lambda: os._exit(7))


def sigkilled() -> Workload:
    return _crashing("sigkilled", lambda: os.kill(os.getpid(), signal.SIGKILL))


def aborts() -> Workload:
    return _crashing("aborts", os.abort)


def address_space_limited() -> Workload:
    """Caps its own process's address space (RLIMIT_AS) at what it uses now + 1 GiB, then at
    batch >= CRASH_AT asks for 8 GiB: the allocation fails inside the worker, nothing else."""
    import resource

    base = tiny_workload(name="rlimit")

    def model_fn():
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = used + 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        return base.model_fn()

    def loss_fn(model, batch):
        if batch[0].shape[0] >= CRASH_AT:
            torch.empty(8 * 1024**3, dtype=torch.uint8).fill_(1)  # refused: over the cap
        return base.loss_fn(model, batch)

    return Workload("rlimit", model_fn, base.batch_fn, loss_fn)

"""Where a rank stands in a torchrun world, and how to start one.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
each worker's environment; :func:`rank_env` reads them. :func:`torchrun_command` builds the
command line ``batchprof run --nproc-per-node N`` re-executes itself under (torchrun is the
engine users already run; batchprof has no launcher of its own). :func:`process_group` opens
the default process group with a timeout, so a collective that waits for a dead rank ends
with an error instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..errors import ConfigError

DEFAULT_TIMEOUT_S = 120.0  # a collective waiting longer than this for a peer is a failure
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class RankEnv:
    """This process's place in the world, as the launcher described it."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_env(env: Mapping[str, str] | None = None) -> RankEnv | None:
    """The torchrun environment of this process, or None when it was not started by one.

    Raises ConfigError when the variables are present but inconsistent.
    """
    env = os.environ if env is None else env
    present = [k for k in _ENV if k in env]
    if not present:
        return None
    if len(present) != len(_ENV):
        missing = ", ".join(k for k in _ENV if k not in env)
        raise ConfigError(f"torchrun environment incomplete: {missing} not set (start the "
                          "command with torchrun, or unset RANK/WORLD_SIZE/LOCAL_RANK)")
    try:
        rank, world, local = (int(env[k]) for k in _ENV)
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                          + ", ".join(f"{k}={env[k]!r}" for k in _ENV)) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank}, "
                          f"WORLD_SIZE={world}, LOCAL_RANK={local}")
    return RankEnv(rank, world, local)


def torchrun_command(nproc_per_node: int, argv: Sequence[str], *,
                     python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m batchprof ARGV``.

    ``--standalone`` rendezvouses on a free local port (one node). Raises ConfigError for a
    non-positive process count.
    """
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) \
            or nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be a positive integer, got {nproc_per_node!r}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc_per_node}", "-m", "batchprof", *argv]


def default_backend(device_type: str) -> str:
    """nccl on CUDA, gloo on the CPU."""
    return "nccl" if device_type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device_type: str = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  env: RankEnv | None = None) -> Iterator[RankEnv]:
    """The default process group for this rank (opened here unless already open), closed on
    exit if it was opened here. Reads the torchrun environment when ``env`` is None.

    Raises ConfigError outside a torchrun world.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        yield RankEnv(dist.get_rank(), dist.get_world_size(),
                      int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return
    env = env or rank_env()
    if env is None:
        raise ConfigError("not inside a torchrun world (RANK/WORLD_SIZE unset): start with "
                          "torchrun --nproc-per-node N, or pass --nproc-per-node N to batchprof")
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(default_backend(device_type), rank=env.rank,
                            world_size=env.world_size, timeout=timedelta(seconds=timeout_s))
    try:
        yield env
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

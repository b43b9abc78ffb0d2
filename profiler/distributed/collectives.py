"""The few collectives a distributed profile needs, each one a point every rank reaches.

- :meth:`World.all_true`: feasibility of a probe is the AND over ranks, one ``all_reduce(MIN)``
  that every rank calls after its measured step, before any rank moves on (to timing, or to
  the next size), so a rank whose step did not fit never leaves the others waiting.
- :meth:`World.gather`: every rank's record to every rank (``all_gather_object``), so each rank
  builds the same combined outcome and the search takes the same path everywhere.
- :meth:`World.check_same`: ranks agree on a value (the workload's fingerprint, the options).

A rank that fails mid-phase (a real out-of-memory inside a step, a crash) cannot rejoin the
lockstep: it writes why to the store and closes its process group (:meth:`World.abandon`), so
its peers' pending collectives fail at once instead of waiting out the timeout; a peer that
sees a collective fail reads the store and raises :class:`RankFailedError` naming the rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .errors import RankFailedError, WorldMismatchError

T = TypeVar("T")
_FAILED_KEY = "batchprof/failed/{rank}"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of ``repr`` of the parts (to compare across ranks)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class World:
    """This rank's view of the default process group."""

    def __init__(self, device: torch.device | str = "cpu"):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("World needs an initialized default process group")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        device = torch.device(device)
        # nccl reduces device tensors; gloo host tensors.
        self.comm_device = device if device.type == "cuda" else torch.device("cpu")
        self.phase = "start"  # what the ranks were doing, for error messages

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives --------------------------------------------------------------------
    def _collective(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
            raise self.peer_failure(what, exc) from exc

    def all_true(self, flag: bool) -> bool:
        """True iff ``flag`` is true on every rank (one all_reduce MIN)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.comm_device)
        self._collective("agreeing on feasibility",
                         lambda: self._dist.all_reduce(t, op=self._dist.ReduceOp.MIN))
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        self._collective("gathering per-rank results",
                         lambda: self._dist.all_gather_object(out, obj))
        return out

    def check_same(self, what: str, value: Any) -> None:
        """Raise WorldMismatchError (on every rank) unless every rank holds the same ``value``."""
        values = self.gather(value)
        if all(v == values[0] for v in values):
            return
        groups: dict[str, list[int]] = {}
        for r, v in enumerate(values):
            groups.setdefault(repr(v), []).append(r)
        described = "; ".join(f"ranks {','.join(map(str, rs))}: {v}" for v, rs in groups.items())
        raise WorldMismatchError(f"the ranks disagree on {what} ({described}); start every "
                                 "rank with the same workload and options")

    # ---- failure ------------------------------------------------------------------------
    def _store(self) -> Any:
        try:
            from torch.distributed.distributed_c10d import _get_default_store

            return _get_default_store()
        except Exception:  # noqa: BLE001 - no store: failures are reported without a reason
            return None

    def abandon(self, reason: str) -> None:
        """Leave the lockstep: say why in the store, then close this rank's process group so
        peers waiting in a collective fail now rather than at the timeout."""
        store = self._store()
        if store is not None:
            try:
                store.set(_FAILED_KEY.format(rank=self.rank), reason)
            except Exception:  # noqa: BLE001 - the store may be gone with rank 0
                pass
        if self._dist.is_initialized():
            self._dist.destroy_process_group()

    def failed_peers(self) -> dict[int, str]:
        """Ranks that said (through the store) that they failed, and why."""
        store = self._store()
        found: dict[int, str] = {}
        if store is None:
            return found
        for r in range(self.world_size):
            key = _FAILED_KEY.format(rank=r)
            try:
                if r != self.rank and store.check([key]):
                    found[r] = store.get(key).decode(errors="replace")
            except Exception:  # noqa: BLE001 - the store died with its host rank
                break
        return found

    def peer_failure(self, what: str, exc: BaseException) -> RankFailedError:
        """The error for a collective that failed because a peer left (named if it said)."""
        peers = self.failed_peers()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". This is typically")[0][-160:]  # gloo's advice runs long
        if peers:
            rank, reason = min(peers.items())
            return RankFailedError(f"rank {rank} failed while {self.phase}: {reason}",
                                   rank=rank)
        return RankFailedError(f"a peer rank stopped answering while {self.phase} ({what}: "
                               f"{first}); it died or hung: check that rank's output")

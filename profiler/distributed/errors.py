"""What a distributed run raises on purpose: an inconsistent world, a rank that failed.

Both are ``BatchprofError`` subclasses, so the CLI prints them as one line and exits non-zero.
"""

from __future__ import annotations

from ..errors import BatchprofError, ConfigError


class WorldMismatchError(ConfigError):
    """The ranks disagree (a different workload, options or world size), or the world size
    does not divide what must be divided (a global batch, a grad-accumulation product)."""


class RankFailedError(BatchprofError):
    """A rank died or failed mid-step, so the others cannot go on in lockstep.

    ``rank`` is the failed rank when known; ``batch_size`` the probe it happened in.
    """

    def __init__(self, message: str, *, rank: int | None = None, batch_size: int | None = None):
        super().__init__(message)
        self.rank = rank
        self.batch_size = batch_size

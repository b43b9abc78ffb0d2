"""Defaults and checks of profile()'s options."""

from __future__ import annotations

from typing import Any

from batchprof import defaults
from batchprof.errors import ConfigError

DEFAULT_CPU_MEMORY_LIMIT = defaults.CPU_MEMORY_LIMIT  # see batchprof.defaults


def check_options(min_batch: int, max_batch: int | None, multiple_of: int,
                   dataset_size: int | None, alpha: float, hint: int | None) -> None:
    """Reject inconsistent options before anything is built or run."""
    def positive(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    positive("min_batch", min_batch)
    positive("multiple_of", multiple_of)
    if max_batch is not None:
        positive("max_batch", max_batch)
        if max_batch < min_batch:
            raise ConfigError(f"max_batch {max_batch} is below min_batch {min_batch}; "
                              "raise max_batch or lower min_batch")
    if dataset_size is not None:
        positive("dataset_size", dataset_size)
        if dataset_size < min_batch:
            raise ConfigError(f"dataset_size {dataset_size} is below min_batch {min_batch}: "
                              "no batch of that size can be drawn from the data set")
    if hint is not None:
        positive("hint", hint)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be a fraction in (0, 1], e.g. 0.9; got {alpha!r}")

"""Defaults and checks of profile()'s options."""

from __future__ import annotations

from typing import Any

from batchprof.errors import ConfigError

# The CPU has no memory ceiling of its own: without a budget the search would grow until the
# machine itself ran out. 128 MiB puts the default workload (transformer) at a max batch of 51;
# `batchprof run` with no arguments took 22 s on the 2-core dev machine (quiet; 12 probes,
# prediction included); 512 MiB (max 215) took over 4 minutes (under load).
DEFAULT_CPU_MEMORY_LIMIT = "128MiB"


def check_options(min_batch: int, max_batch: int | None, multiple_of: int,
                   dataset_size: int | None, alpha: float, hint: int | None) -> None:
    """Reject inconsistent options before anything is built or run."""
    def positive(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    positive("--min-batch", min_batch)
    positive("--multiple-of", multiple_of)
    if max_batch is not None:
        positive("--max-batch", max_batch)
        if max_batch < min_batch:
            raise ConfigError(f"--max-batch {max_batch} is below --min-batch {min_batch}; "
                              "raise --max-batch or lower --min-batch")
    if dataset_size is not None:
        positive("--dataset-size", dataset_size)
        if dataset_size < min_batch:
            raise ConfigError(f"--dataset-size {dataset_size} is below --min-batch {min_batch}: "
                              "no batch of that size can be drawn from the data set")
    if hint is not None:
        positive("--hint", hint)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"--alpha must be a fraction in (0, 1], e.g. 0.9; got {alpha!r}")

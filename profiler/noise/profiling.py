"""The one call ``batchprof.profile(..., noise_scale=True)`` makes, after the search and knee.

The noise scale is information beside the hardware figures: a failure in it becomes a note,
never a lost run; Ctrl-C during it skips it (with a note) and keeps the result.
"""

from __future__ import annotations

from typing import Any

from ..errors import BatchprofError
from .record import NoiseOptions, NoiseScaleResult


def profile_noise_scale(noise_scale: bool | NoiseOptions, workload: Any, backend: Any,
                        max_batch: int | None, recommended_batch: int | None,
                        notes: list[str]) -> NoiseScaleResult | None:
    """The estimate on the run's backend, the big batch defaulting to the max batch found;
    None (and a note saying why) when it was not asked for or could not be had."""
    if noise_scale is False or noise_scale is None:
        return None
    options = noise_scale if isinstance(noise_scale, NoiseOptions) else NoiseOptions()
    if max_batch is None and options.big_batch is None:
        notes.append("noise scale not estimated: no batch size was found to fit")
        return None
    from .gradients import estimate_noise_scale

    try:
        return estimate_noise_scale(workload, backend=backend, options=options,
                                    max_batch=max_batch, target_batch=recommended_batch)
    except BatchprofError as exc:
        notes.append(f"noise scale unavailable: {exc}")
    except KeyboardInterrupt:
        backend.cleanup()
        notes.append("noise scale skipped: interrupted (Ctrl-C) while estimating it")
    return None

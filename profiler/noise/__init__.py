"""The statistical half of "which batch size?": the gradient noise scale and the LR hint.

``estimate_noise_scale`` (torch; loaded on first use) measures gradient norms of a workload's
real loss at two batch sizes; :mod:`.estimator` turns them into B_simple with an interval
(pure); :mod:`.lr` scales a learning rate to a new batch (pure); :mod:`.text` words it all.
"""

from __future__ import annotations

import importlib
from typing import Any

from .estimator import (
    GradientDraw,
    NoiseScaleError,
    NoiseScaleEstimate,
    estimate_noise_scale_from_draws,
)
from .lr import LearningRateHint, learning_rate_hint
from .record import NoiseOptions, NoiseScaleResult, choose_batch_sizes

__all__ = ["GradientDraw", "LearningRateHint", "NoiseOptions", "NoiseScaleError",
           "NoiseScaleEstimate", "NoiseScaleResult", "choose_batch_sizes",
           "estimate_noise_scale", "estimate_noise_scale_from_draws", "learning_rate_hint",
           "profile_noise_scale"]

_LAZY = {"estimate_noise_scale": ".gradients", "profile_noise_scale": ".profiling"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)

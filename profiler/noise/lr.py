"""The learning-rate hint when the batch changes: heuristics with their sources, nothing fitted.

Pure: numbers and class names in, a record out.

- Adam-family (adaptive) optimizers: the square-root rule, lr ∝ sqrt(batch) (Malladi, Lyu,
  Panigrahi, Arora, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS
  2022; the rule is older: Krizhevsky 2014, "One weird trick for parallelizing CNNs").
- SGD (with or without momentum): the linear rule, lr ∝ batch (Goyal et al. 2017, "Accurate,
  Large Minibatch SGD: Training ImageNet in 1 Hour"), which pairs it with a gradual warm-up.
- Both assume batches below the critical batch. Past the noise scale, McCandlish et al. 2018
  (eq. 2.6, SGD) model the best step size as lr(B) = lr_max / (1 + B_noise / B), which is
  linear well below B_noise and flat above it; the hint quotes that figure when it applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

ADAPTIVE_OPTIMIZERS = frozenset({"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam",
                                 "RMSprop", "Adafactor"})
SGD_OPTIMIZERS = frozenset({"SGD"})
FAMILIES = ("adam", "sgd")
FAMILY_NAMES = {"adam": "Adam-family (adaptive)", "sgd": "SGD"}

SQRT_SOURCE = ("Malladi et al., NeurIPS 2022, 'On the SDEs and Scaling Rules for Adaptive "
               "Gradient Algorithms'")
LINEAR_SOURCE = "Goyal et al. 2017, 'Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour'"
CRITICAL_SOURCE = "McCandlish et al. 2018, 'An Empirical Model of Large-Batch Training', eq. 2.6"


def optimizer_family(class_names: Iterable[str]) -> str | None:
    """'adam' or 'sgd' from an optimizer's class and base-class names; None when neither."""
    names = set(class_names)
    if names & ADAPTIVE_OPTIMIZERS:
        return "adam"
    if names & SGD_OPTIMIZERS:
        return "sgd"
    return None


@dataclass(frozen=True)
class LearningRateHint:
    """A learning rate for ``target_batch`` scaled from one that worked at ``reference_batch``."""

    reference_batch: int
    reference_lr: float
    target_batch: int
    optimizer_family: str  # "adam" | "sgd"
    rule: str  # "square-root" | "linear"
    suggested_lr: float
    source: str
    warmup_note: str
    critical_note: str | None = None

    def lines(self) -> list[str]:
        ratio = self.target_batch / self.reference_batch
        out = [f"learning rate for batch {self.target_batch}: about {self.suggested_lr:.3g} "
               f"(from {self.reference_lr:.3g} at batch {self.reference_batch}, x{ratio:.3g} "
               f"batch; the {self.rule} rule for {FAMILY_NAMES[self.optimizer_family]} "
               f"optimizers, a heuristic: {self.source}); tune around it"]
        out.append(self.warmup_note)
        if self.critical_note:
            out.append(self.critical_note)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearningRateHint:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def learning_rate_hint(reference_batch: int, reference_lr: float, target_batch: int,
                       family: str, noise_scale_samples: float | None = None
                       ) -> LearningRateHint:
    """Scale ``reference_lr`` from ``reference_batch`` to ``target_batch`` for ``family``.

    Raises ConfigError for a non-positive batch or learning rate, or an unknown family.
    """
    for name, value in (("--reference-batch", reference_batch), ("target batch", target_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(reference_lr, (int, float)) and math.isfinite(reference_lr)
            and reference_lr > 0):
        raise ConfigError(f"--reference-lr must be a positive number such as 3e-4, "
                          f"got {reference_lr!r}")
    if family not in FAMILIES:
        raise ConfigError(f"no learning-rate rule for optimizer family {family!r}: expected one "
                          f"of {', '.join(FAMILIES)} (--optimizer-family)")
    ratio = target_batch / reference_batch
    if family == "adam":
        rule, scale, source = "square-root", math.sqrt(ratio), SQRT_SOURCE
    else:
        rule, scale, source = "linear", ratio, LINEAR_SOURCE
    suggested = reference_lr * scale
    if scale > 1:
        warmup = ("warm-up: ramp the learning rate linearly from the reference value to the new "
                  "one over the first few epochs (Goyal et al. use 5) or few thousand steps; "
                  "a larger step size without it often diverges early")
    else:
        warmup = ("warm-up: the new learning rate is no larger than the reference one, so keep "
                  "the warm-up you already had")
    critical = None
    if noise_scale_samples is not None and noise_scale_samples > 0 \
            and target_batch > noise_scale_samples:
        critical = (f"the target batch {target_batch} is above the noise scale "
                    f"(~{noise_scale_samples:,.0f}): these rules assume batches below it, and "
                    "past it a larger step stops paying")
        if family == "sgd":
            saturating = ((1 + noise_scale_samples / reference_batch)
                          / (1 + noise_scale_samples / target_batch))
            critical += (f"; the saturating model lr(B) = lr_max / (1 + B_noise/B) "
                         f"({CRITICAL_SOURCE}) gives about {reference_lr * saturating:.3g}")
    return LearningRateHint(reference_batch=reference_batch, reference_lr=float(reference_lr),
                            target_batch=target_batch, optimizer_family=family, rule=rule,
                            suggested_lr=suggested, source=source, warmup_note=warmup,
                            critical_note=critical)

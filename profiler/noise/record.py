"""What a noise-scale run is asked to do (NoiseOptions) and what it found (NoiseScaleResult).

Pure records: no torch. ``choose_batch_sizes`` is the one rule for which two sizes are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BatchprofError, ConfigError
from .estimator import (
    DEFAULT_CONFIDENCE,
    GradientDraw,
    NoiseScaleEstimate,
    estimate_noise_scale_from_draws,
)
from .lr import FAMILIES, LearningRateHint

# Without --draws: at least ADAPTIVE_MIN_DRAWS, then more up to ADAPTIVE_MAX_DRAWS while the
# interval is unbounded or wider than TARGET_RELATIVE_WIDTH x the estimate (±25%). Each draw
# costs about 1.2 training steps at the big batch (benches/bench_noise.py), so a clear signal
# costs ~5 steps and an unclear one ~10.
ADAPTIVE_MIN_DRAWS = 4
ADAPTIVE_MAX_DRAWS = 8
TARGET_RELATIVE_WIDTH = 0.5
# Without a known max batch: small enough to fit the built-ins under a CPU budget of 128 MiB.
DEFAULT_BIG_BATCH = 32
# small = big // SMALL_BATCH_DIVISOR: the tr(Σ) estimate is a difference of the two sizes'
# squared norms, so the farther apart they are the better it is resolved.
SMALL_BATCH_DIVISOR = 8


def _positive_or_none(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class NoiseOptions:
    """How to estimate the noise scale. None sizes are chosen by :func:`choose_batch_sizes`.

    ``draws`` fixes the number of independent draws; None draws adaptively (see
    :func:`enough_draws`). ``micro_batch`` computes the big batch's gradient by accumulating micro-batches of that
    size (for a big batch that does not fit). ``reference_batch`` and ``reference_lr`` ask for
    a learning-rate hint for ``target_batch`` (default: the run's recommended batch, else the
    rounded noise scale); ``optimizer_family`` is 'auto' (from the workload's optimizer),
    'adam' or 'sgd'.
    """

    draws: int | None = None  # None: adaptive, ADAPTIVE_MIN_DRAWS..ADAPTIVE_MAX_DRAWS
    small_batch: int | None = None
    big_batch: int | None = None
    micro_batch: int | None = None
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = 0
    reference_batch: int | None = None
    reference_lr: float | None = None
    target_batch: int | None = None
    optimizer_family: str = "auto"

    def __post_init__(self) -> None:
        if self.draws is not None and (isinstance(self.draws, bool)
                                       or not isinstance(self.draws, int) or self.draws < 2):
            raise ConfigError(f"--draws must be an integer >= 2 (the interval comes from the "
                              f"spread of the draws), got {self.draws!r}")
        for name in ("small_batch", "big_batch", "micro_batch", "reference_batch",
                     "target_batch"):
            _positive_or_none("--" + name.replace("_", "-"), getattr(self, name))
        if not 0 < self.confidence < 1:
            raise ConfigError(f"--confidence must be in (0, 1), e.g. 0.95; got {self.confidence!r}")
        if (self.reference_batch is None) != (self.reference_lr is None):
            raise ConfigError("give --reference-batch and --reference-lr together (the batch "
                              "and the learning rate that worked there), or neither")
        if self.optimizer_family not in ("auto", *FAMILIES):
            raise ConfigError(f"--optimizer-family must be auto, {' or '.join(FAMILIES)}; got "
                              f"{self.optimizer_family!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def enough_draws(draws: Sequence[GradientDraw], options: NoiseOptions) -> bool:
    """Stop drawing? Exactly ``options.draws`` when given; else at least ADAPTIVE_MIN_DRAWS,
    and past that once the interval is bounded and within TARGET_RELATIVE_WIDTH of the
    estimate, or at ADAPTIVE_MAX_DRAWS (the stopping rule looks at the width, not at where the
    estimate lies)."""
    n = len(draws)
    if options.draws is not None:
        return n >= options.draws
    if n < ADAPTIVE_MIN_DRAWS:
        return False
    if n >= ADAPTIVE_MAX_DRAWS:
        return True
    try:
        e = estimate_noise_scale_from_draws(draws, options.confidence)
    except BatchprofError:  # no resolvable signal yet: more draws may give one
        return False
    width = e.interval_width_samples
    return width is not None and width <= TARGET_RELATIVE_WIDTH * e.noise_scale_samples


def choose_batch_sizes(options: NoiseOptions, max_batch: int | None) -> tuple[int, int, str]:
    """(small, big, where big came from). Big: given, else the max batch, else the default.

    Raises ConfigError when the big batch is too small to draw two sizes from, or the small
    batch is not below it.
    """
    if options.big_batch is not None:
        big, source = options.big_batch, "given (--big-batch)"
    elif max_batch is not None:
        big, source = max_batch, "the largest batch that fits, from the search"
    else:
        big, source = DEFAULT_BIG_BATCH, ("the default (the max batch is unknown; set "
                                          "--big-batch, or run `batchprof run --noise-scale`)")
    if big < 2:
        raise ConfigError(f"a big batch of {big} is too small to draw two batch sizes from: the "
                          "estimate needs gradients at two sizes, small < big, so the big batch "
                          "must be at least 2 (raise --memory-limit, or set --big-batch with "
                          "--micro-batch to accumulate it)")
    small = options.small_batch if options.small_batch is not None \
        else max(1, big // SMALL_BATCH_DIVISOR)
    if small >= big:
        raise ConfigError(f"--small-batch {small} must be below the big batch {big} ({source}): "
                          "the estimate compares gradients at two different sizes")
    if options.micro_batch is not None and options.micro_batch > big:
        raise ConfigError(f"--micro-batch {options.micro_batch} is above the big batch {big}: "
                          "a micro-batch is a slice of the big batch")
    return small, big, source


@dataclass(frozen=True)
class NoiseScaleResult:
    """The noise scale of one workload at one set of weights, and how it was measured."""

    workload: str
    device: str
    estimate: NoiseScaleEstimate
    small_batch: int
    big_batch: int
    big_batch_source: str
    micro_batch: int | None
    draw_source: str  # how independent batches were drawn from batch_fn
    elapsed_s: float
    caveats: tuple[str, ...] = ()
    lr_hint: LearningRateHint | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def noise_scale_samples(self) -> float:
        return self.estimate.noise_scale_samples

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "device": self.device,
                "estimate": self.estimate.to_dict(), "small_batch": self.small_batch,
                "big_batch": self.big_batch, "big_batch_source": self.big_batch_source,
                "micro_batch": self.micro_batch, "draw_source": self.draw_source,
                "elapsed_s": self.elapsed_s, "caveats": list(self.caveats),
                "lr_hint": self.lr_hint.to_dict() if self.lr_hint else None,
                "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseScaleResult:
        return cls(workload=d["workload"], device=d["device"],
                   estimate=NoiseScaleEstimate.from_dict(d["estimate"]),
                   small_batch=d["small_batch"], big_batch=d["big_batch"],
                   big_batch_source=d["big_batch_source"], micro_batch=d.get("micro_batch"),
                   draw_source=d["draw_source"], elapsed_s=d["elapsed_s"],
                   caveats=tuple(d.get("caveats", ())),
                   lr_hint=LearningRateHint.from_dict(d["lr_hint"]) if d.get("lr_hint") else None,
                   options=dict(d.get("options", {})))

"""RunSpec: one frozen, validated description of a profile run, built once at the API boundary.

What a run was asked to do, in the units the library uses (bytes, not "2GiB"): the device
requested, the budget, the search bounds and granularity, the knee's alpha, the timing and
sweep policies, and which stages run. :func:`batchprof.api.make_spec` builds it (parsing the
budget, applying the CPU default); the CLI and the pytest plugin only construct it; the result
carries it (``ProfileResult.spec``). Errors name parameters (``max_batch``), never CLI flags.
Floor 1: imports nothing above ``errors``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from batchprof import defaults
from batchprof.errors import ConfigError

DEFAULT_TIMED_STEPS = 5


@dataclass(frozen=True)
class TimingPolicy:
    """How many steps to time. Past ``timed_steps``, keep timing while the spread is large
    (IQR > ``target_iqr_fraction`` of the median) and the median is not yet pinned down (the
    one rule, :func:`batchprof.records.step_times.needs_more_steps`), up to ``max_timed_steps``
    and ``budget_s``."""

    timed_steps: int = DEFAULT_TIMED_STEPS
    warmup_steps: int = 1
    max_timed_steps: int = 10
    target_iqr_fraction: float = 0.10
    budget_s: float = 2.0
    # The knee's one-model sweep (api.profile): ``sweep_rounds`` rounds over the ladder, then
    # one more at a time while the knee stays ambiguous, up to ``max_sweep_rounds`` and while
    # the sweep has taken less than ``sweep_budget_s``.
    sweep_rounds: int = 4
    max_sweep_rounds: int = 8
    sweep_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if self.timed_steps < 1 or self.warmup_steps < 1:
            raise ConfigError("timed_steps and warmup_steps must be >= 1 (the first step "
                              "creates optimizer state and is never timed)")
        if not 1 <= self.sweep_rounds <= self.max_sweep_rounds:
            raise ConfigError(f"need 1 <= sweep_rounds <= max_sweep_rounds, got "
                              f"{self.sweep_rounds} and {self.max_sweep_rounds}")

    @property
    def steps_per_visit(self) -> int:
        """Timed steps per size per sweep round: half a probe's, as rounds repeat them."""
        return max(1, self.timed_steps // 2)


def throughput_ladder(min_batch: int, max_batch: int, multiple_of: int = 1) -> list[int]:
    """Sizes timed for the knee: ``min_batch``, ``multiple_of * 2**k`` in range, and the max."""
    sizes = {min_batch, max_batch}
    b = multiple_of
    while b <= max_batch:
        if b >= min_batch:
            sizes.add(b)
        b *= 2
    return sorted(sizes)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RunSpec:
    """What one ``profile()`` run does. Validated on construction (ConfigError naming the
    parameter); ``options()`` is the plain-dict view stored in results.json."""

    device: str = defaults.DEVICE  # as requested: "auto", "cpu", "cuda", "cuda:N"
    memory_limit_bytes: int | None = None  # None: the device's own capacity
    min_batch: int = 1
    max_batch: int | None = None
    multiple_of: int = 1
    dataset_size: int | None = None
    alpha: float = defaults.ALPHA
    hint: int | None = None
    use_prediction: bool = True
    knee: bool = True
    roofline: bool = defaults.ROOFLINE
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    # Seconds the whole run may take (None: unbounded); the knee sweep ends at the deadline.
    time_budget_s: float | None = defaults.TIME_BUDGET_S

    def __post_init__(self) -> None:
        budget = self.time_budget_s
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not budget > 0 or budget != budget):
            raise ConfigError(f"time_budget_s must be a positive number of seconds or None, "
                              f"got {budget!r}")
        _positive("min_batch", self.min_batch)
        _positive("multiple_of", self.multiple_of)
        if self.max_batch is not None:
            _positive("max_batch", self.max_batch)
            if self.max_batch < self.min_batch:
                raise ConfigError(f"max_batch {self.max_batch} is below min_batch "
                                  f"{self.min_batch}; raise max_batch or lower min_batch")
        if self.dataset_size is not None:
            _positive("dataset_size", self.dataset_size)
            if self.dataset_size < self.min_batch:
                raise ConfigError(f"dataset_size {self.dataset_size} is below min_batch "
                                  f"{self.min_batch}: no batch of that size can be drawn from "
                                  "the data set")
        if self.hint is not None:
            _positive("hint", self.hint)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ConfigError(f"alpha must be a fraction in (0, 1], e.g. 0.9; got {alpha!r}")
        if not isinstance(self.timing, TimingPolicy):
            raise ConfigError(f"timing must be a TimingPolicy, got {type(self.timing).__name__}")

    @property
    def top_batch(self) -> int | None:
        """The largest size the bounds allow (None: memory alone bounds the search)."""
        bounds = [b for b in (self.max_batch, self.dataset_size) if b is not None]
        return min(bounds) if bounds else None

    def options(self) -> dict[str, Any]:
        """The plain-dict view (results.json's "options")."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["timing"] = dataclasses.asdict(self.timing)
        return d

    @classmethod
    def from_options(cls, d: dict[str, Any]) -> RunSpec:
        """Back from ``options()`` (unknown keys, e.g. ``hint_source``, are ignored; keys a
        file written before the spec existed lacks take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if isinstance(kwargs.get("timing"), dict):
            timing_names = {f.name for f in dataclasses.fields(TimingPolicy)}
            kwargs["timing"] = TimingPolicy(**{k: v for k, v in kwargs["timing"].items()
                                               if k in timing_names})
        return cls(**kwargs)

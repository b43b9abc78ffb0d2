"""Run-to-run comparison: per batch size, peak memory, throughput and max batch, old vs new.

Two inputs of either kind (mixed is fine, as long as they name the same subjects):

- a report directory or its ``results.json`` (one ``batchprof.profile`` run: the subject is
  the workload, every probed batch size a row);
- a pytest-benchmark JSON (``--benchmark-json`` / ``--benchmark-save``) whose benchmarks carry
  batchprof's figures in ``extra_info`` (the pytest plugin's fixture and marker put them
  there): the subject is the benchmark's name, the batch size the one in ``extra_info``.

:func:`compare` is pure: two :class:`RunFigures` and the thresholds in, a :class:`Comparison`
out, whose ``regressions`` are the rows that crossed a threshold the caller gave (none given,
none flagged). Loading reads files; nothing here writes or prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchprof.errors import ConfigError

RESULTS_FILE = "results.json"
# metric -> (unit, which direction is worse)
METRICS = {
    "peak_allocated_bytes": ("B", "higher"),
    "samples_per_s": ("samples/s", "lower"),
    "max_batch": ("samples", "lower"),
}


@dataclass(frozen=True)
class BatchFigures:
    """What one run measured for one subject at one batch size (None = not measured)."""

    feasible: bool | None
    peak_allocated_bytes: int | None
    samples_per_s: float | None


@dataclass(frozen=True)
class RunFigures:
    """The comparable figures of one run: per (subject, batch size), and max batch per subject."""

    source: str
    kind: str  # "profile" or "pytest-benchmark"
    per_batch: dict[tuple[str, int], BatchFigures]
    max_batch: dict[str, int | None]

    @property
    def subjects(self) -> list[str]:
        return sorted({s for s, _ in self.per_batch} | set(self.max_batch))


@dataclass(frozen=True)
class Thresholds:
    """Largest change accepted, as fractions (0.05 = 5%); None = not checked."""

    max_peak_increase: float | None = None
    max_throughput_decrease: float | None = None
    max_batch_decrease: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_peak_increase", "max_throughput_decrease", "max_batch_decrease"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value or not math.isfinite(value)):
                raise ConfigError(f"{name} must be a fraction >= 0 (0.05 or '5%'), got {value!r}")

    def limit_for(self, metric: str) -> float | None:
        return {"peak_allocated_bytes": self.max_peak_increase,
                "samples_per_s": self.max_throughput_decrease,
                "max_batch": self.max_batch_decrease}[metric]


def parse_fraction(text: str | float, option: str = "threshold") -> float:
    """``"5%"`` -> 0.05, ``"0.05"`` -> 0.05. Raises ConfigError on anything else."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a percentage such as 5% or a fraction "
                          "such as 0.05") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} {text!r}: must be 0 or more")
    return value


@dataclass(frozen=True)
class Row:
    """One figure side by side. ``change`` is (new - old) / old (None when either is missing
    or old is 0); ``regression`` says it crossed the caller's threshold, and ``why`` in words."""

    subject: str
    batch_size: int | None  # None for max_batch
    metric: str
    old: float | None
    new: float | None
    change: float | None
    regression: bool = False
    why: str | None = None

    @property
    def unit(self) -> str:
        return METRICS[self.metric][0]


@dataclass(frozen=True)
class Comparison:
    old_source: str
    new_source: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def regressions(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.regression)

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old_source, "new": self.new_source,
                "thresholds": {k: getattr(self.thresholds, k) for k in
                               ("max_peak_increase", "max_throughput_decrease",
                                "max_batch_decrease")},
                "rows": [{**r.__dict__, "unit": r.unit} for r in self.rows],
                "regressions": len(self.regressions), "notes": list(self.notes)}


# ---- the comparison (pure) ------------------------------------------------------------------
def _change(old: float | None, new: float | None) -> float | None:
    if old is None or new is None or old == 0:
        return None
    return (new - old) / old


def _judge(metric: str, old: float | None, new: float | None, change: float | None,
           limit: float | None) -> str | None:
    """Why this change is a regression under ``limit``, or None."""
    if limit is None or old is None:
        return None
    worse = METRICS[metric][1]
    if new is None:
        return f"{metric} was {old:g}, now not measured (the batch no longer fits?)"
    if change is None:
        return None
    if worse == "higher" and change > limit:
        return f"{metric} rose {change:+.1%} (limit +{limit:.1%})"
    if worse == "lower" and -change > limit:
        return f"{metric} fell {change:+.1%} (limit -{limit:.1%})"
    return None


def _row(subject: str, batch: int | None, metric: str, old: float | None, new: float | None,
         thresholds: Thresholds) -> Row:
    change = _change(old, new)
    why = _judge(metric, old, new, change, thresholds.limit_for(metric))
    return Row(subject, batch, metric, old, new, change, why is not None, why)


def _fit_row(subject: str, batch: int, old: BatchFigures, new: BatchFigures,
             thresholds: Thresholds) -> Row:
    """Peak memory; a batch that fit before and does not now is a memory regression whenever a
    memory or max-batch threshold was given (an out-of-memory step has no comparable peak)."""
    if old.feasible and new.feasible is False:
        flagged = (thresholds.max_peak_increase is not None
                   or thresholds.max_batch_decrease is not None)
        return Row(subject, batch, "peak_allocated_bytes", old.peak_allocated_bytes,
                   new.peak_allocated_bytes, _change(old.peak_allocated_bytes,
                                                     new.peak_allocated_bytes),
                   flagged, f"batch {batch} fit before and runs out of memory now"
                   if flagged else None)
    return _row(subject, batch, "peak_allocated_bytes", old.peak_allocated_bytes,
                new.peak_allocated_bytes, thresholds)


def compare(old: RunFigures, new: RunFigures, thresholds: Thresholds | None = None) -> Comparison:
    """Every figure both runs have, side by side; regressions flagged against ``thresholds``."""
    thresholds = thresholds or Thresholds()
    rows: list[Row] = []
    notes: list[str] = []
    shared = sorted(set(old.subjects) & set(new.subjects))
    for side, run, other in (("old", old, new), ("new", new, old)):
        only = sorted(set(run.subjects) - set(other.subjects))
        if only:
            notes.append(f"only in {side} ({run.source}): {', '.join(only)}")
    if not shared:
        notes.append("the two runs have no subject (workload or benchmark) in common: "
                     "nothing to compare")
    for subject in shared:
        old_sizes = {b for s, b in old.per_batch if s == subject}
        new_sizes = {b for s, b in new.per_batch if s == subject}
        for b in sorted(old_sizes & new_sizes):
            o, n = old.per_batch[(subject, b)], new.per_batch[(subject, b)]
            rows.append(_fit_row(subject, b, o, n, thresholds))
            rows.append(_row(subject, b, "samples_per_s", o.samples_per_s, n.samples_per_s,
                             thresholds))
        for side, sizes in (("old", old_sizes - new_sizes), ("new", new_sizes - old_sizes)):
            if sizes:
                notes.append(f"{subject}: batch sizes only in the {side} run: "
                             f"{', '.join(map(str, sorted(sizes)))}")
        if subject in old.max_batch or subject in new.max_batch:
            rows.append(_row(subject, None, "max_batch", old.max_batch.get(subject),
                             new.max_batch.get(subject), thresholds))
    return Comparison(old.source, new.source, tuple(rows), tuple(notes), thresholds)


# ---- loading --------------------------------------------------------------------------------
def figures_from_result(data: dict[str, Any], source: str) -> RunFigures:
    """RunFigures of one ``ProfileResult.to_dict()`` (a results.json)."""
    from batchprof.records.result import ProfileResult

    result = ProfileResult.from_dict(data)
    per_batch = {(result.workload, p.batch_size): BatchFigures(
        p.feasible, p.peak_allocated_bytes, p.samples_per_s) for p in result.points()}
    return RunFigures(source, "profile", per_batch, {result.workload: result.max_batch})


def figures_from_benchmarks(data: dict[str, Any], source: str) -> RunFigures:
    """RunFigures of a pytest-benchmark JSON: benchmarks with batchprof figures in extra_info
    (those without any are skipped)."""
    per_batch: dict[tuple[str, int], BatchFigures] = {}
    max_batch: dict[str, int | None] = {}
    for bench in data.get("benchmarks", ()):
        info = bench.get("extra_info") or {}
        subject = bench.get("fullname") or bench.get("name") or "?"
        if info.get("batch_size") is not None:
            per_batch[(subject, int(info["batch_size"]))] = BatchFigures(
                info.get("feasible"), info.get("peak_allocated_bytes"), info.get("samples_per_s"))
        if "max_batch" in info:
            max_batch[subject] = info["max_batch"]
    if not per_batch and not max_batch:
        raise ConfigError(f"{source}: a pytest-benchmark file without batchprof figures in any "
                          "benchmark's extra_info; record them with the batchprof fixture or "
                          "marker (or batchprof.pytest_plugin.record_extra_info) in the suite")
    return RunFigures(source, "pytest-benchmark", per_batch, max_batch)


def load_figures(path: str | Path) -> RunFigures:
    """RunFigures from a report directory, a results.json or a pytest-benchmark JSON.

    Raises ConfigError naming the path when it is none of these.
    """
    p = Path(path)
    file = p / RESULTS_FILE if p.is_dir() else p
    if not file.is_file():
        where = f"{p} has no {RESULTS_FILE}" if p.is_dir() else f"{p} does not exist"
        raise ConfigError(f"{where}: give a report directory, its {RESULTS_FILE}, or a "
                          "pytest-benchmark JSON (--benchmark-json)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {file} as JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        return figures_from_benchmarks(data, str(file))
    if isinstance(data, dict) and "probes" in data and "workload" in data:
        try:
            return figures_from_result(data, str(file))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{file} looks like a batchprof results.json but does not load: "
                              f"{type(exc).__name__}: {exc}") from None
    raise ConfigError(f"{file} is neither a batchprof results.json (workload, probes) nor a "
                      "pytest-benchmark JSON (benchmarks)")

"""The knee's sweep driver: rounds over the ladder, more while the knee is ambiguous, then
refinement, all within a round cap and a deadline.

Everything that decides *how much* to time lives here, over two injected callables: a
``time_visit(b, steps) -> step times`` that times one visit (the torch part, in
:mod:`batchprof.probe.sweep`) and a ``clock() -> seconds``. With a fake of each, every rule
(the round cap, the deadline, the drift correction, the refinement) runs on a synthetic curve
in milliseconds.

Rounds: ``plan.rounds`` over the ladder, then one more at a time while the knee is ambiguous,
then up to ``plan.max_refine`` refinements of ``plan.refine_rounds`` rounds each over the new
size and its neighbours -- never more than ``plan.max_rounds`` rounds in all (the old bug:
refinement ran four rounds each, outside the cap: 20 rounds under a cap of 8). Before each
visit the driver estimates what it costs (the last visit at that size, else a step time the
caller knew, scaled to the size) and stops when it would end past ``plan.deadline``; the knee
then comes from what was measured, its confidence says so, and a note names the reason.

Pure: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from batchprof import defaults
from batchprof.errors import ConfigError
from batchprof.records.search import KneeResult, Outcome
from batchprof.records.status import RunStatus
from batchprof.records.step_times import StepTimes
from batchprof.search.knee.drift import Visit, corrected_medians, round_factors
from batchprof.search.knee.find import find_knee


@dataclass(frozen=True)
class SweepPlan:
    """How much the sweep may time. ``deadline`` is on the driver's clock (None: no limit)."""

    rounds: int = 4  # ladder rounds before the knee is first read
    max_rounds: int = 8  # every round, refinement included
    steps_per_visit: int = 2
    deadline: float | None = None
    extra_deadline: float | None = None  # past it, no round beyond the first ``rounds``
    max_refine: int = 2
    refine_rounds: int = 2
    budget_s: float | None = None  # the whole run's budget, for progress reports only

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= self.max_rounds:
            raise ConfigError(f"need 1 <= rounds <= max_rounds, got {self.rounds} and "
                              f"{self.max_rounds}")
        if self.steps_per_visit < 1 or self.refine_rounds < 1 or self.max_refine < 0:
            raise ConfigError("steps_per_visit and refine_rounds must be >= 1, max_refine >= 0")


class SweepDriver:
    """Drives one sweep; ``run(sizes)`` returns the knee. ``probe(b)`` (optional) decides
    whether a refinement size fits before it is timed; ``step_s`` holds step times the
    caller already knows (from the probes), so the first round can be costed too."""

    def __init__(self, time_visit: Callable[[int, int], Sequence[float]],
                 clock: Callable[[], float], plan: SweepPlan, *, alpha: float = defaults.ALPHA,
                 multiple_of: int = 1, probe: Callable[[int], Outcome] | None = None,
                 step_s: dict[int, float] | None = None,
                 on_status: Callable[[RunStatus], None] | None = None,
                 run_started: float | None = None):
        self.time_visit, self.clock, self.plan = time_visit, clock, plan
        self.alpha, self.multiple_of, self.probe = alpha, multiple_of, probe
        self.on_status = on_status
        self.step_s = dict(step_s or {})
        self.visits: list[Visit] = []
        self.rounds = 0
        self.visit_s: dict[int, float] = {}  # wall time of the latest visit per size
        self.started = clock()
        self.run_started = self.started if run_started is None else run_started
        self.budget_ended = False

    # ---- costs and limits ---------------------------------------------------------------
    def visit_cost(self, b: int) -> float:
        """Seconds one visit at b is expected to take (0 when nothing is known)."""
        if b in self.visit_s:
            return self.visit_s[b]
        known = self.visit_s or {s: t * (self.plan.steps_per_visit + 1)
                                 for s, t in self.step_s.items()}
        if not known:
            return 0.0
        ref = min(known, key=lambda s: abs(math.log2(s / b)))
        return known[ref] * max(1.0, b / ref)  # a step costs at least what a smaller one does

    def round_cost(self, sizes: Sequence[int]) -> float:
        return sum(self.visit_cost(b) for b in sizes)

    def _affordable(self, cost: float) -> bool:
        """Would ``cost`` more seconds end before the deadline? A miss of the run's deadline
        ends the sweep (``budget_ended``); the policy's own sweep budget (``extra_deadline``)
        only stops the rounds past the first ``plan.rounds``."""
        end = self.clock() + cost
        if self.plan.deadline is not None and end > self.plan.deadline:
            self.budget_ended = True
            return False
        extra = self.plan.extra_deadline
        return self.rounds < self.plan.rounds or extra is None or end <= extra

    # ---- rounds -------------------------------------------------------------------------
    def round(self, sizes: Sequence[int], why: str) -> bool:
        """One round over ``sizes`` (ascending in even rounds, descending in odd ones, so a
        linear drift cancels). False, timing nothing, when the round cap or the deadline
        forbids it; a round the deadline cuts short keeps the visits it made."""
        if self.rounds >= self.plan.max_rounds or not self._affordable(0.0):
            return False
        ordered = sorted(sizes, reverse=self.rounds % 2 == 1)
        made = 0
        for b in ordered:
            if not self._affordable(self.visit_cost(b)):
                break
            began = self.clock()
            times = tuple(self.time_visit(b, self.plan.steps_per_visit))
            self.visit_s[b] = self.clock() - began
            self.visits.append(Visit(self.rounds, b, times))
            made += 1
        if made == 0:
            return False
        self.rounds += 1
        self._report(sizes, why)
        return made == len(ordered)

    def _report(self, sizes: Sequence[int], why: str) -> None:
        if self.on_status is None:
            return
        now = self.clock()
        # the ladder rounds still planned, and at least one more below the cap (an ambiguous
        # knee asks for it)
        planned = min(self.plan.max_rounds, max(self.plan.rounds, self.rounds + 1))
        left = (planned - self.rounds) * self.round_cost(sizes)
        if self.plan.deadline is not None:
            left = min(left, max(0.0, self.plan.deadline - now))
        self.on_status(RunStatus(
            "knee sweep", f"round {self.rounds} of at most {self.plan.max_rounds} ({why}): "
            f"batch {', '.join(map(str, sorted(sizes)))}", now - self.run_started, left,
            self.plan.budget_s))

    # ---- the knee -----------------------------------------------------------------------
    def outcomes(self) -> list[Outcome]:
        """One Outcome per size: one drift-corrected median per visit (drift.corrected_medians),
        so the knee's noise model sees visits, not steps."""
        return [Outcome(b, True, StepTimes(ts).samples_per_s(b), ts)
                for b, ts in corrected_medians(self.visits).items()]

    def drift(self) -> tuple[float | None, bool]:
        """(how much the rounds' common factors differ: max/min - 1, whether it was divided
        out: at least two rounds that visited two sizes or more)."""
        factors = round_factors(self.visits)
        sizes_per_round: dict[int, int] = {}
        for v in self.visits:
            sizes_per_round[v.round_index] = sizes_per_round.get(v.round_index, 0) + 1
        corrected = sum(n >= 2 for n in sizes_per_round.values()) >= 2
        if not factors:
            return None, corrected
        return max(factors.values()) / min(factors.values()) - 1, corrected

    def read(self, refine: Callable[[int], Outcome | None] | None = None) -> KneeResult:
        drift, corrected = self.drift()
        return find_knee(self.outcomes(), alpha=self.alpha, multiple_of=self.multiple_of,
                         refine=refine, max_refine=self.plan.max_refine,
                         current_points=self.outcomes if refine else None,
                         drift=drift, drift_corrected=corrected)

    def _refine(self, b: int) -> Outcome | None:
        """A refinement size: probed for fit, then timed with its neighbours; None when the
        rounds or the time left cannot pay for it."""
        sizes = sorted({v.batch_size for v in self.visits})
        around = [max(s for s in sizes if s < b), b, min(s for s in sizes if s > b)]
        rounds = min(self.plan.refine_rounds, self.plan.max_rounds - self.rounds)
        if rounds < 1:
            return None
        probe_cost = self.visit_cost(b) * 2 if self.probe is not None else 0.0
        if not self._affordable(probe_cost + rounds * self.round_cost(around)):
            return None
        probed = self.probe(b) if self.probe is not None else None
        if probed is not None and not probed.feasible:
            return probed
        for _ in range(rounds):
            if not self.round(around, f"refining near {b}"):
                break
        timed = next((o for o in self.outcomes() if o.batch_size == b), None)
        if timed is None:
            return None
        if probed is None:
            return timed
        return replace(timed, peak_bytes=probed.peak_bytes, capacity_bytes=probed.capacity_bytes)

    def run(self, sizes: Sequence[int], fallback: Sequence[Outcome] = ()) -> KneeResult:
        """The knee of ``sizes``: ladder rounds, more while ambiguous, refinement, within
        the plan; notes say how many rounds ran and why the sweep stopped. When not one
        visit could be made, the knee is read off ``fallback`` (the probes' own timings)."""
        sizes = sorted(set(sizes))
        for _ in range(self.plan.rounds):
            if not self.round(sizes, "ladder"):
                break
        if not self.visits:
            knee = find_knee(fallback, alpha=self.alpha, multiple_of=self.multiple_of)
            knee = replace(knee, notes=(*knee.notes, "no sweep round fitted in the time left; "
                                        "the knee uses each probe's own timing"))
            return self._finish(knee)
        knee = self.read()
        while (knee.confidence == "ambiguous" and len(knee.fitted) >= 3 and not self.budget_ended
               and self.rounds < self.plan.max_rounds):
            interval = knee.knee_interval
            why = ("too few rounds to judge the noise" if interval is None else
                   f"resampling puts the knee anywhere in {interval[0]}..{interval[1]}")
            if not self.round(sizes, why):
                break
            knee = self.read()
        if (self.plan.max_refine and not self.budget_ended and self.rounds < self.plan.max_rounds
                and self.visits):
            knee = self.read(refine=self._refine)
        return self._finish(knee)

    def _finish(self, knee: KneeResult) -> KneeResult:
        notes, confidence = list(knee.notes), knee.confidence
        elapsed = self.clock() - self.started
        complete = self.rounds >= self.plan.rounds
        if self.budget_ended:
            notes.append(f"the time budget ended the knee sweep after {self.rounds} round(s) "
                         f"({elapsed:.1f} s); the knee uses the rounds measured by then")
            if self.rounds < 2:
                confidence = "ambiguous"
                notes.append("fewer than two sweep rounds: drift between rounds could not be "
                             "told from the curve")
        elif not complete:
            notes.append(f"the knee sweep ran {self.rounds} of {self.plan.rounds} rounds")
        drift, corrected = self.drift()
        if drift is not None and corrected and drift > 0.05:
            notes.append(f"rounds ran up to {drift:.0%} faster or slower than each other "
                         "(a shared machine); that common factor was divided out")
        return replace(knee, notes=tuple(notes), confidence=confidence, rounds=self.rounds,
                       budget_ended=self.budget_ended)

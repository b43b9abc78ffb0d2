"""Pure search for the largest batch that fits.

No torch here. ``find_max_batch`` drives a ``probe(b) -> Outcome`` callable; it is tested on
synthetic curves (the knee lives in :mod:`batchprof.search.knee`).

Probes of ``find_max_batch`` (start 1, granularity 1, true answer M):
- Outcomes with feasible/infeasible only: doubling, bisection and one confirmation, at most
  ``max_batch_probe_budget(M)``. A hint within 10% cuts that to bisecting its window, about
  log2(0.2 M) + 3: no search on yes/no answers can pin +-10% of M = 1000 in five probes.
- Outcomes that also carry ``peak_bytes`` and ``capacity_bytes``: the search extrapolates peak
  memory (close to affine in b): 5 probes for any M when memory is affine, with or without a
  hint within 10%; where memory is not affine, one failed extrapolation costs one probe over
  the budget, after which the plain ladder takes over.
- Outcomes ``measured`` before the search (the prediction's calibration steps, which ran the
  real step at small sizes and read its peak): their verdicts and peaks count as if probed and
  those sizes are not probed again; with a hint as well, the search probes the hint itself
  first (the readings below bracket a hint that is too high, and give the secant through it
  when it fits): 3 probes when the hint is exact (hint, hint + 1, the confirmation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batchprof.errors import ConfigError
from batchprof.records.search import MaxBatchResult, Outcome
from batchprof.search.checks import check_int

MAX_EXTRAPOLATIONS = 4  # memory-guided probes per search before the plain ladder takes over


def max_batch_probe_budget(max_batch: int) -> int:
    """Probes (confirmation included) that doubling + bisection needs at most for answer M.

    The issue's ceil(log2 M) + ceil(log2(M/2)) + 2 evaluated at M + 1, the first size that does
    not fit: identical for every M that is not a power of two; for M = 2^k it is 2 more, which
    no search starting at 1 can avoid (M = 1 needs 1, 2 and a confirmation: 3 probes).
    """
    f = max_batch + 1
    return math.ceil(math.log2(f)) + math.ceil(math.log2(f / 2)) + 2


# ---------------------------------------------------------------------------------------------
# Max feasible batch
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Candidate sizes by index: multiples of ``step`` from ``min_batch`` up, plus ``min_batch``
    itself when it is not a multiple; ``top`` is the largest allowed size (None: unbounded)."""

    min_batch: int
    step: int
    top: int | None

    @property
    def first_multiple(self) -> int:
        return -(-self.min_batch // self.step) * self.step

    @property
    def offset(self) -> int:
        return 1 if self.min_batch % self.step else 0

    def size(self, i: int) -> int:
        if self.offset and i == 0:
            return self.min_batch
        return self.first_multiple + (i - self.offset) * self.step

    def down(self, b: int) -> int | None:  # index of the largest candidate <= b
        if b < self.min_batch:
            return None
        if b < self.first_multiple:
            return 0
        return self.offset + (b - self.first_multiple) // self.step

    def up(self, b: int) -> int:  # index of the smallest candidate >= b
        if b <= self.min_batch:
            return 0
        return self.offset + max(0, -(-(b - self.first_multiple) // self.step))

    @property
    def top_index(self) -> int | None:
        return None if self.top is None else self.down(self.top)


class _MaxBatchSearch:
    """State of one search: trusted verdicts per candidate index and the bracket lo < hi."""

    def __init__(self, probe: Callable[[int], Outcome], grid: _Grid,
                 on_probe: Callable[[Outcome], None] | None, extrapolate: bool,
                 capacity_bytes: int | None = None):
        self.probe, self.grid, self.on_probe = probe, grid, on_probe
        self.known: dict[int, bool] = {}
        self.outcomes: list[Outcome] = []
        self.notes: list[str] = []
        self.lo: int | None = None  # largest index trusted feasible
        self.hi: int | None = None  # smallest index trusted infeasible
        self.soft_hi: int | None = None  # a hint's window top: assumed infeasible until probed
        self.non_monotonic = False
        self.extrapolate = extrapolate
        self.capacity_bytes = capacity_bytes
        self.extrapolations = 0
        self.hinted = False
        self.start = 1
        self.first = 0  # index of the first probe
        self.predicted: bool | None = None  # what memory extrapolation expected of the next probe
        self.measured: list[Outcome] = []  # known before the search; never probed again

    def reuse(self, measured: Sequence[Outcome]) -> None:
        """Verdicts and peaks read before the search, at sizes on the grid, as if probed."""
        top = self.grid.top_index
        for o in measured:
            i = self.grid.down(o.batch_size)
            if i is None or self.grid.size(i) != o.batch_size or (top is not None and i > top):
                continue
            self.measured.append(o)
            self.known[i] = o.feasible
            if o.feasible:
                self.lo = i if self.lo is None else max(self.lo, i)
            else:
                self.hi = i if self.hi is None else min(self.hi, i)
        if self.measured:
            self.notes.append("reused the readings of batch "
                              f"{', '.join(str(o.batch_size) for o in self.measured)} "
                              "measured before the search (not probed again)")

    def run(self, i: int) -> Outcome:
        b = self.grid.size(i)
        outcome = self.probe(b)
        if not isinstance(outcome, Outcome) or outcome.batch_size != b:
            raise ValueError(f"probe({b}) must return an Outcome with batch_size={b}, got {outcome!r}")
        self.outcomes.append(outcome)
        if self.on_probe is not None:
            self.on_probe(outcome)
        return outcome

    def visit(self, i: int) -> None:
        ok = self.run(i).feasible
        self.known[i] = ok
        if self.predicted is not None and self.predicted != ok:
            # memory is not affine enough here; the plain ladder keeps the worst case bounded
            self.extrapolate = False
            self.notes.append(f"memory extrapolation missed at batch {self.grid.size(i)}; "
                              "continued without it")
        if ok:
            self.lo = i if self.lo is None else max(self.lo, i)
        else:
            self.hi = i if self.hi is None else min(self.hi, i)

    def search(self, i: int | None) -> None:
        while i is not None:
            self.visit(i)
            i = self.next_index()

    def next_index(self) -> int | None:
        lo, hi, top = self.lo, self.hi, self.grid.top_index
        self.predicted = None
        if lo is not None and (lo == top or (hi is not None and hi == lo + 1)):
            return None
        if lo is None:  # nothing fits yet: halve down from the smallest failure
            if hi == 0:
                return None
            below = self.grid.down(self.grid.size(hi) // 2)
            return min(hi - 1, 0 if below is None else below)
        if self.extrapolate and self.extrapolations < MAX_EXTRAPOLATIONS:
            guess, secant = self.memory_guess()
            if guess is not None:
                ceilings = [x - 1 for x in (hi, None if top is None else top + 1) if x is not None]
                i = lo + 1 if guess <= lo else min([guess, *ceilings])
                # without a hint, stay where a fall-back to the doubling ladder still fits the
                # budget (the plain search spends about log2(b) + 1 probes to reach b), except
                # to check that lo + 1 fails, which ends the search when it does
                verify = secant and guess <= lo
                if i not in self.known and (self.hinted or verify or len(self.outcomes) + 1
                                            <= self.grid.size(i).bit_length()):
                    self.extrapolations += 1
                    # a one-point guess is only a lower bound: it cannot predict a failure
                    self.predicted = True if guess > lo else (False if secant else None)
                    return i
        if self.hinted:
            if hi is not None:
                return (lo + hi) // 2
            if self.soft_hi is not None and self.soft_hi > lo:
                return self.soft_hi if self.soft_hi == lo + 1 else (lo + self.soft_hi) // 2
            # past the window: double the distance from the window's bottom, not the size
            target = 2 * self.grid.size(lo) - self.grid.size(self.first)
        else:  # the doubling ladder from start (rejoined after extrapolating), bisect below hi
            target = self.start << (self.grid.size(lo) // self.start).bit_length()
        grown = max(lo + 1, self.grid.up(target))
        if hi is not None and grown >= hi:
            return (lo + hi) // 2
        return grown if top is None else min(grown, top)

    def memory_guess(self) -> tuple[int | None, bool]:
        """Index of the largest size whose extrapolated peak fits, and whether it came from a
        secant through the two largest trusted feasible points (else from one point, a line
        through the origin: an underestimate, since resident bytes make the intercept positive)."""
        assert self.lo is not None
        cap = self.capacity_bytes
        if cap is None:  # a caller that did not say: the capacity its probes judged against
            cap = next((o.capacity_bytes for o in reversed(self.outcomes)
                        if o.capacity_bytes is not None), None)
        lo_size = self.grid.size(self.lo)
        pts = sorted({o.batch_size: o.peak_bytes for o in [*self.measured, *self.outcomes]
                      if o.feasible and o.peak_bytes and o.batch_size <= lo_size}.items())
        if cap is None or not pts:
            return None, False
        if len(pts) == 1:
            (b, p), = pts
            est = b * cap // p
        else:
            (b1, p1), (b2, p2) = pts[-2:]
            if p2 <= p1:
                return None, False
            est = b2 + (cap - p2) * (b2 - b1) // (p2 - p1)
        i = self.grid.down(est)
        return (-1 if i is None else i), len(pts) > 1

    def confirm(self) -> bool:
        """Re-run the answer; True when it stands. A failure is retried once; a second failure
        means memory is not monotone in b (or drifts): drop the answer and search below it."""
        assert self.lo is not None
        b = self.grid.size(self.lo)
        if self.run(self.lo).feasible:
            return True
        if self.run(self.lo).feasible:
            self.notes.append(f"batch {b} failed once on re-run and passed on retry (flaky)")
            return True
        self.non_monotonic, self.extrapolate = True, False
        self.notes.append(f"batch {b} fit earlier but failed twice on re-run: memory is not "
                          "monotone in batch size (or drifts); settled below it")
        self.known[self.lo] = False
        self.hi = self.lo
        self.lo = max((j for j, ok in self.known.items() if ok and j < self.hi), default=None)
        return False


def find_max_batch(probe: Callable[[int], Outcome], *, start: int = 1, hint: int | None = None,
                   min_batch: int = 1, max_batch: int | None = None, multiple_of: int = 1,
                   dataset_size: int | None = None,
                   on_probe: Callable[[Outcome], None] | None = None,
                   extrapolate: bool = True,
                   capacity_bytes: int | None = None,
                   measured: Sequence[Outcome] = ()) -> MaxBatchResult:
    """Largest batch size that fits: grow (doubling) from ``start``, or try the window a ``hint``
    claims (hint/1.1 .. hint/0.9, i.e. +-10%), then bisect between the last fit and the first
    failure. Candidates are multiples of ``multiple_of`` (and ``min_batch``) within
    [min_batch, min(max_batch, dataset_size)]. Each size is probed once, except the answer,
    which is re-run before it is reported. Never returns a size not run and found feasible.

    The search never probes at or below a size that fit, so an OOM there (flaky or
    non-monotonic memory) shows up on the re-run: it is retried once; a second failure drops
    the answer, sets ``non_monotonic`` with a note, and the search settles below it. A hint
    that is far too high costs about log2(hint / answer) extra probes (halving down to a fit).

    ``capacity_bytes`` is what feasibility is judged against (the memory extrapolation needs it);
    without it the search reads it from the Outcomes that carry it.

    ``measured``: Outcomes read before the search (e.g. the prediction's calibration steps);
    sizes on the grid count as probed (verdict and peak) and are not probed again; they are
    not in the result's ``outcomes`` / ``probes``. With a ``hint`` too, the first probe is the
    hint itself (module docstring). The answer is still a size this search ran: the
    confirmation re-runs it.

    Raises ConfigError (naming the parameter) for inconsistent bounds; exceptions from ``probe`` propagate (the
    caller has already seen every Outcome through ``on_probe``).
    """
    check_int("min_batch", min_batch)
    check_int("multiple_of", multiple_of)
    check_int("start batch", start)
    if max_batch is not None and check_int("max_batch", max_batch) < min_batch:
        raise ConfigError(f"max_batch {max_batch} is below min_batch {min_batch}; "
                          "raise max_batch or lower min_batch")
    if dataset_size is not None and check_int("dataset_size", dataset_size) < min_batch:
        raise ConfigError(f"dataset_size {dataset_size} is below min_batch {min_batch}: "
                          "no batch size can be drawn from the data set")
    bounds = [x for x in (max_batch, dataset_size) if x is not None]
    top = min(bounds) if bounds else None
    grid = _Grid(min_batch, multiple_of, top)
    s = _MaxBatchSearch(probe, grid, on_probe, extrapolate, capacity_bytes)
    s.reuse(measured)
    if hint is not None:
        hint = check_int("hint", hint)
        clamped = min(max(hint, min_batch), top if top is not None else hint)
        if clamped != hint:
            s.notes.append(f"hint {hint} clamped to {clamped} (the allowed range)")
        bottom = grid.down(clamped * 10 // 11)  # fits if the hint is within 10% of the truth
        first = 0 if bottom is None else bottom
        if s.measured:  # readings below bracket the hint: try it as it is
            first = max(first, grid.down(clamped) or 0)
        s.soft_hi = grid.up(clamped * 10 // 9 + 1)
        s.hinted = True
    else:
        first = grid.up(start)
    if grid.top_index is not None:
        first = min(first, grid.top_index)
    s.first, s.start = first, grid.size(first)
    s.search(first if first not in s.known else s.next_index())
    while s.lo is not None and not s.confirm():
        s.search(s.next_index())

    answer = None if s.lo is None else grid.size(s.lo)
    hit = answer is not None and s.lo == grid.top_index
    if answer is None:
        failed = next((o for o in reversed(s.outcomes) if o.batch_size == min_batch), None)
        why = f": {failed.reason}" if failed is not None and failed.reason else ""
        s.notes.append(f"nothing fits: batch size {min_batch} (the smallest allowed) failed{why}")
    elif hit:
        which = "dataset size" if dataset_size is not None and top == dataset_size else "max_batch"
        s.notes.append(f"stopped at the {which} bound ({top}): memory was not the limit")
    return MaxBatchResult(
        max_batch=answer, outcomes=tuple(s.outcomes), probes=len(s.outcomes),
        notes=tuple(s.notes), hit_upper_bound=hit,
        first_infeasible=None if s.hi is None else grid.size(s.hi),
        non_monotonic=s.non_monotonic)

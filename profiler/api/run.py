"""The parts of one profile run: the probes, the prediction seed, the knee, the recommendation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psutil

from batchprof.backends import Backend, CpuBackend
from batchprof.errors import BatchprofError, BudgetError, TraceError
from batchprof.probe.step import KeptModel, TimingPolicy, measure
from batchprof.probe.sweep import ThroughputSweep
from batchprof.records.measurement import Measurement
from batchprof.records.search import KneeResult, Outcome
from batchprof.records.status import RunStatus
from batchprof.search.knee.driver import SweepDriver, SweepPlan
from batchprof.search.knee.find import find_knee
from batchprof.units import format_bytes
from batchprof.workloads.base import Workload

if TYPE_CHECKING:
    from batchprof.prediction import Predictor


def _hint_calibration_sizes() -> tuple[int, ...]:
    """The hint's real calibration steps: the two largest default sizes only. They set the
    per-sample slope used beyond them (prediction.model.Curve), so the predicted max batch
    is the same as with every default size whenever it is at least the smaller of the two;
    the sizes below only sharpen predictions below it, which the search does not need, and
    each real calibration step costs about as much as a probe (recorder and profiler on)."""
    from batchprof.prediction.predictor import DEFAULT_CALIBRATION_SIZES

    return tuple(sorted(DEFAULT_CALIBRATION_SIZES))[-2:]


def _prediction_hint(workload: Workload, backend: Backend,
                     keep: list[Predictor] | None = None) -> tuple[int | None, str]:
    """The predicted max batch for this backend's capacity, and a note saying where it came
    from or why there is none. The one place that calls the prediction (imported lazily: it
    is optional, and a failure in it must only cost probes, never the run). With ``keep``, the
    Predictor used is appended to it, so the run can put its per-batch peaks beside the
    measured ones without tracing and calibrating again."""
    capacity = backend.capacity_bytes()
    target = "cuda" if backend.name.startswith("cuda") else backend.name
    if capacity is None:
        return None, "prediction unavailable: no memory capacity to predict against"
    if target not in ("cpu", "cuda"):
        return None, f"prediction unavailable: no prediction target for the {target} backend"
    try:
        from batchprof.prediction import Predictor
    except ImportError as exc:
        return None, f"prediction unavailable: {exc}"
    # What predict_max_batch does, keeping the Predictor: real calibration steps get at most
    # half the memory available now.
    budget = min(capacity, psutil.virtual_memory().available // 2)
    try:
        predictor = Predictor(workload, target, calibration_budget_bytes=budget,
                              calibration_sizes=_hint_calibration_sizes())
        predicted = predictor.max_batch(capacity)
    except (TraceError, NotImplementedError) as exc:
        return None, f"prediction unavailable: {exc}"
    if keep is not None:
        keep.append(predictor)
    if predicted is None:
        return None, "prediction unavailable: the prediction found no batch that fits"
    return predicted, f"search seeded by prediction: max batch about {predicted}"


def _calibration_readings(predictors: list[Predictor], backend: Backend) -> list[Outcome]:
    """The hint's calibration steps as search Outcomes: real steps at small sizes whose peak
    was read the way ``measure()`` reads it, so the max-batch search reuses them instead of
    probing those sizes again (nothing is paid twice for one size). Empty without a
    calibrated Predictor or a capacity to judge the readings against."""
    capacity = backend.capacity_bytes()
    calibration = predictors[0].calibration if predictors else None
    if calibration is None or capacity is None:
        return []
    device = "cuda" if backend.name.startswith("cuda") else backend.name
    if str(calibration.device).split(":")[0] != device:
        return []
    return [Outcome(p.batch_size, p.measured_peak_bytes <= capacity,
                    peak_bytes=p.measured_peak_bytes, capacity_bytes=capacity,
                    reason=None if p.measured_peak_bytes <= capacity else
                    "the calibration step's peak exceeds the budget")
            for p in calibration.points]


class _Run:
    """The probes of one profile run, in order, on one backend."""

    def __init__(self, workload: Workload, backend: Backend, timing: TimingPolicy | None,
                 sampler: Any, on_probe: Callable[[Measurement], None] | None,
                 on_status: Callable[[RunStatus], None] | None = None,
                 started: float | None = None, budget_s: float | None = None):
        self.workload, self.backend, self.timing = workload, backend, timing
        self.sampler, self.on_probe, self.on_status = sampler, on_probe, on_status
        self.started = time.perf_counter() if started is None else started
        self.budget_s = budget_s
        self.phase = "max-batch search"  # for progress reports
        self.probes: list[Measurement] = []
        self.prober: Callable[..., Measurement] | None = None  # probe.worker, when isolated
        # Finished probes of an earlier, killed run of the same spec (resume), per batch size
        # in log order, handed back instead of running that size again.
        self.replay: dict[int, list[Measurement]] = {}
        self.replayed = 0
        # One built model shared by memory-only probes where the backend allows it
        # (probe.step.KeptModel), the search's confirmation included; a timed probe gets a
        # fresh one.
        self.kept = KeptModel() if backend.keeps_model_between_probes else None

    def replay_from(self, probes: Sequence[Measurement]) -> None:
        for m in probes:
            self.replay.setdefault(m.batch_size, []).append(m)

    def measure(self, batch_size: int, *, timed: bool = True) -> Measurement:
        """One probe, kept in ``probes``; ``timed=False``: memory only (probe.step.measure).
        A size in the resume log is taken from there (the next logged probe of that size) when
        it has what is asked: a memory-only probe does not stand in for a timed one."""
        queue = self.replay.get(batch_size)
        if queue and (queue[0].timed or not timed):
            logged = queue.pop(0)
            m = dataclasses.replace(logged, extra={**logged.extra, "resumed_from_log": True})
            self.probes.append(m)
            self.replayed += 1
            return m
        if self.prober is not None:
            m = self.prober(batch_size, timed=timed)
        else:
            kept = self.kept if not timed else None
            if kept is None:
                self.release_model()
            m = measure(self.workload, batch_size, backend=self.backend, timing=self.timing,
                        sampler=self.sampler, timed=timed, kept=kept)
        self.probes.append(m)
        if self.on_probe is not None:
            self.on_probe(m)
        if self.on_status is not None:
            elapsed = time.perf_counter() - self.started
            left = None if self.budget_s is None else max(0.0, self.budget_s - elapsed)
            self.on_status(RunStatus(self.phase, f"probe {len(self.probes)} at batch "
                                     f"{batch_size} done", elapsed, left, self.budget_s))
        return m

    def release_model(self) -> None:
        """Let the kept model go (before anything builds its own: the sweep, a timed probe)."""
        if self.kept is not None and self.kept.step is not None:
            self.kept.drop()
            self.backend.cleanup()  # collects the model's cycles and gives its memory back

    def status(self, status: RunStatus) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def outcome(self, batch_size: int) -> Outcome:
        return Outcome.from_measurement(self.measure(batch_size))

    def fits(self, batch_size: int) -> Outcome:
        """What the max-batch search asks: does it fit, at what peak? A memory-only probe
        (warm-up + the instrumented step, nothing timed): the knee sweep times what it needs."""
        return Outcome.from_measurement(self.measure(batch_size, timed=False))

    def feasible_outcomes(self) -> list[Outcome]:
        """Feasible probes that were timed (a memory-only probe has no throughput to give)."""
        return [Outcome.from_measurement(m) for m in self.probes if m.feasible and m.timed]


def _find_knee_on_one_model(run: _Run, ladder: list[int], alpha: float, multiple_of: int,
                            notes: list[str], deadline: float | None = None,
                            run_started: float | None = None,
                            budget_s: float | None = None) -> KneeResult:
    """The knee from a ThroughputSweep over the ladder (one model, interleaved rounds), driven
    by :class:`batchprof.search.knee.driver.SweepDriver` within the policy's rounds and the
    run's ``deadline`` (on ``time.perf_counter``). Refinement sizes are probed for the record
    (memory, feasibility), then timed with the sizes either side of them. If the sweep itself
    runs out of memory (a CUDA allocator fragmented by several sizes), the knee falls back to
    the probes' own times, and a note says so.
    """
    # every ladder size not found infeasible: below the max batch, unprobed ones fit too (if
    # memory were not monotone here, the sweep's OOM falls back to the probes' timings)
    fits = {m.batch_size for m in run.probes if m.feasible}
    failed = {m.batch_size for m in run.probes if not m.feasible} - fits
    top = max(fits, default=0)
    feasible = sorted(b for b in ladder if b not in failed and b <= top)
    policy = run.timing or TimingPolicy()
    now = time.perf_counter()
    plan = SweepPlan(rounds=policy.sweep_rounds, max_rounds=policy.max_sweep_rounds,
                     steps_per_visit=policy.steps_per_visit, deadline=deadline,
                     extra_deadline=now + policy.sweep_budget_s, budget_s=budget_s)
    step_s = {m.batch_size: m.step_time_median_s for m in run.probes
              if m.feasible and m.step_time_median_s}
    run.release_model()
    timer = ThroughputSweep(run.workload, run.backend)
    oom = False
    try:
        driver = SweepDriver(timer.visit, time.perf_counter, plan, alpha=alpha,
                             multiple_of=multiple_of, probe=run.outcome, step_s=step_s,
                             on_status=run.status, run_started=run_started)
        return driver.run(feasible, fallback=run.feasible_outcomes())
    except Exception as exc:
        if not run.backend.is_oom(exc):
            raise
        oom = True
    finally:
        timer.close()
    if oom:
        notes.append("the one-model throughput sweep ran out of memory; the knee uses each "
                      "probe's own timing instead (more sensitive to drift between probes)")
    return find_knee(run.feasible_outcomes(), alpha=alpha, multiple_of=multiple_of)


def _with_roofline(workload: Workload, backend: Backend, probes: tuple[Measurement, ...],
                   notes: list[str]) -> tuple[Measurement, ...]:
    """Probes with roofline figures; unchanged (and a note) when the device's ceilings or the
    step's FLOPs cannot be had: the roofline is information, never a reason to lose a run."""
    from batchprof.roofline.ceilings import ceilings
    from batchprof.roofline.efficiency import annotate_roofline

    device = "cuda" if backend.device.type == "cuda" else "cpu"
    try:
        measured = ceilings(device)
        gpu_name = gpu_total = None
        if device == "cuda":  # a GPU's datasheet gives the second MFU (mfu_spec_pct)
            info = backend.device_info()
            gpu_name, gpu_total = info.name, info.total_memory_bytes
        annotated = annotate_roofline(workload, probes, measured, gpu_name=gpu_name,
                                      gpu_total_bytes=gpu_total)
    except BatchprofError as exc:
        notes.append(f"roofline unavailable: {exc}")
        return probes
    notes.append(f"roofline against measured {device} ceilings: "
                 f"{measured.peak_bandwidth_gbps:.1f} GB/s, "
                 + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s"
                             for k, v in measured.flops_per_s.items()))
    return annotated


def _unbudgeted_peak(workload: Workload, batch_size: int, backend: Backend) -> int | None:
    """Peak of one step without the budget (CPU only: a GPU cannot lift its own ceiling)."""
    if not isinstance(backend, CpuBackend):
        return None
    try:
        m = measure(workload, batch_size, backend=CpuBackend(None),
                    timing=TimingPolicy(timed_steps=1, max_timed_steps=1))
    except BatchprofError:
        return None
    return m.peak_allocated_bytes


def _nothing_fits(run: _Run, min_batch: int, notes: list[str]) -> BudgetError:
    failed = next((m for m in reversed(run.probes) if m.batch_size == min_batch), None)
    needed = failed.peak_allocated_bytes if failed is not None else None
    if needed is None:  # the guard stopped the step early: measure it once without the budget
        needed = _unbudgeted_peak(run.workload, min_batch, run.backend)
        if needed is not None:
            notes.append(f"batch size {min_batch} measured once without the budget: "
                         f"peak {format_bytes(needed)} ({needed} bytes)")
    capacity = run.backend.capacity_bytes()
    budget = "unbounded" if capacity is None else f"{format_bytes(capacity)} ({capacity} bytes)"
    need = (f"{format_bytes(needed)} ({needed} bytes)" if needed is not None
            else f"more than {format_bytes(capacity)}")
    why = f" [{failed.reason}]" if failed is not None and failed.reason else ""
    lower = " or lower --min-batch" if min_batch > 1 else ""
    return BudgetError(f"batch size {min_batch} needs {need}; the budget is {budget}{why}. "
                       f"Raise --memory-limit above {format_bytes(needed or capacity)}{lower}")


def _recommend(max_batch: int | None, knee: KneeResult | None, probes: list[Measurement],
               knee_requested: bool = True, stopped: str | None = None) -> tuple[int | None, str]:
    if max_batch is None:
        if stopped:
            return None, f"the search was {stopped} before it found the max batch: nothing to recommend"
        return None, "no batch size was found to fit, so there is nothing to recommend"
    if not knee_requested:
        return max_batch, f"the largest batch that fits ({max_batch}); the knee was not requested"
    if knee is None or knee.knee_batch is None:
        return max_batch, (f"the largest batch that fits ({max_batch}); no throughput figures "
                           "to find a knee with")
    k = knee.knee_batch
    measured = {b: rate for b, rate, _ in knee.measured}
    best = knee.best_measured_samples_per_s or knee.max_samples_per_s or 0.0
    caveat = ("; the knee is ambiguous (throughput is noisy here, see notes)"
              if knee.confidence == "ambiguous" else "")
    if k >= max_batch:
        return max_batch, (f"throughput is still rising at the largest batch that fits "
                           f"({max_batch}): use all the memory{caveat}")
    share = measured.get(k, dict(knee.fitted).get(k, 0.0)) / best if best else 0.0
    peak = max((m.peak_allocated_bytes or 0 for m in probes
                if m.batch_size == k and m.feasible), default=None)
    # The knee meets the rule on its own measurement, within its spread (search.knee.measured)
    within = "" if share >= knee.alpha else " within its measured spread"
    return k, (f"the throughput knee: the smallest batch reaching {knee.alpha:.0%} of the best "
               f"measured throughput ({best:.1f} samples/s){within}; measured {share:.0%} at "
               f"batch {k}, {format_bytes(peak)} peak memory, leaving headroom below the "
               f"largest batch that fits ({max_batch}){caveat}")

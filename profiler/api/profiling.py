"""``profile()``: prediction hint -> max-batch search -> throughput ladder -> knee -> result.

Every probe is a real ``probe.measure`` on ONE backend for the whole run, so the budget, the
device state and the clock are the same for every batch size. The search itself is pure
(:mod:`batchprof.search`); this module only wires probes to it and keeps every Measurement.

Nothing is lost when a run stops early: Ctrl-C returns the partial result (``interrupted=True``),
and a BatchprofError raised mid-run (a non-OOM step error, a budget too small for the smallest
batch) carries the partial result as ``exc.partial_result`` for the caller to write out.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchprof import defaults
from batchprof.api.options import make_spec
from batchprof.api.predicted import with_predicted_peaks
from batchprof.api.run import (
    _calibration_readings,
    _find_knee_on_one_model,
    _nothing_fits,
    _prediction_hint,
    _recommend,
    _Run,
    _with_roofline,
)
from batchprof.backends import Backend, make_backend, resolve_device
from batchprof.errors import BatchprofError, BudgetError, ConfigError
from batchprof.probe.leak import find_leak
from batchprof.probe.step import TimingPolicy, older_objects_frozen
from batchprof.probe.worker import ProbeWorker, WorkerSpec, crash_notes, isolated_prober
from batchprof.records.measurement import Measurement
from batchprof.records.result import ProfileResult
from batchprof.records.search import KneeResult, MaxBatchResult
from batchprof.search.knee.find import find_knee
from batchprof.search.max_batch import find_max_batch
from batchprof.spec import RunSpec, throughput_ladder
from batchprof.workloads.base import Workload
from batchprof.workloads.registry import load_workload

if TYPE_CHECKING:
    from batchprof.prediction import Predictor

BUDGET_RESERVE = 0.10  # of the time budget, kept for the fits and the report after the sweep


def _environment(backend: Backend) -> dict[str, Any]:
    try:
        from batchprof.environment import environment

        env = environment(kernels=False)
    except Exception as exc:  # noqa: BLE001 - a report without versions beats no report
        import platform

        import torch

        from batchprof import __version__

        env = {"versions": {"batchprof": __version__, "torch": torch.__version__,
                            "python": platform.python_version()},
               "reason": f"full environment unavailable: {type(exc).__name__}: {exc}"}
    env["backend"] = {"name": backend.name, "device": str(backend.device),
                      "memory_limit_bytes": backend.memory_limit_bytes,
                      "capacity_bytes": backend.capacity_bytes()}
    return env


def _isolation_worker(ref: Workload | str, wl: Workload, backend: Backend,
                      timing: TimingPolicy | None, isolate: bool) -> ProbeWorker | None:
    if not isolate:
        return None
    if not isinstance(ref, str):
        raise ConfigError("isolate=True needs the workload as a built-in name or "
                          "'module:attr' (the worker process imports it), not a Workload object")
    if backend.name not in ("cpu",) and not backend.name.startswith("cuda"):
        raise ConfigError(f"isolate=True runs probes on a fresh cpu/cuda backend; the "
                          f"{backend.name!r} backend cannot be rebuilt in a worker")
    return ProbeWorker(WorkerSpec(ref, wl.name, backend.name, backend.memory_limit_bytes,
                                  timing))


def profile(
    workload: Workload | str,
    device: str = defaults.DEVICE,
    memory_limit: int | str | None = None,
    *,
    min_batch: int = 1,
    max_batch: int | None = None,
    multiple_of: int = 1,
    dataset_size: int | None = None,
    alpha: float = defaults.ALPHA,
    hint: int | None = None,
    use_prediction: bool = True,
    knee: bool = True,
    timing: TimingPolicy | None = None,
    backend: Backend | None = None,
    on_probe: Callable[[Measurement], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    sampler: Any = None,
    roofline: bool = defaults.ROOFLINE,
    noise_scale: bool | Any = False,
    spec: RunSpec | None = None,
    isolate: bool = False,
    replay: Sequence[Measurement] = (),
    time_budget_s: float | str | None = defaults.TIME_BUDGET_S,
) -> ProfileResult:
    """Find the largest batch that fits and the throughput knee for ``workload``.

    ``memory_limit`` (bytes or "512MiB") is the budget; on the CPU without one the default
    DEFAULT_CPU_MEMORY_LIMIT applies, with a note. ``knee=False`` stops after the max search
    (no throughput ladder, no knee: the quick answer to "what fits?").
    ``hint`` (or, when absent and ``use_prediction``, the prediction) seeds the search.
    ``roofline=True`` measures the device's ceilings once and adds FLOPs, achieved FLOP/s,
    MFU and the bound to each timed probe (``Measurement.roofline``, a RooflinePoint; see
    batchprof.roofline.efficiency).
    ``noise_scale=True`` (or a ``batchprof.noise.NoiseOptions``) adds the gradient noise scale
    after the knee, its big batch defaulting to the max batch (``result.noise_scale``).
    ``on_probe(m)`` sees each Measurement as it completes; ``on_status(text)`` hears what the
    knee's throughput sweep is doing, a line per round. ``backend`` replaces the one built
    from ``device``/``memory_limit`` (tests pass a FakeBackend). ``spec`` (from
    :func:`batchprof.api.make_spec`) replaces every option argument at once.

    Raises ConfigError for bad options; BudgetError when even ``min_batch`` does not fit
    ("batch size 1 needs X; the budget is Y"); StepError when the step fails other than by
    OOM. Errors raised after probing began carry ``partial_result`` (a ProfileResult). Ctrl-C
    returns the partial result with ``interrupted=True``.

    ``isolate=True`` runs each probe in one reused worker process (batchprof.probe.worker),
    so a step that crashes its process (segfault, abort, exit, OOM kill) is recorded as a
    ``crashed`` probe, treated as not fitting, and the run goes on; ``workload`` must then be
    a name or ``"module:attr"`` (the worker imports it). Off by default in the API (a worker
    costs a process start and a torch import); the CLI turns it on.

    ``replay``: the finished probes of an earlier run of the same workload and spec that was
    killed or interrupted (its probe log, ``batchprof run --resume``). A batch size the run
    asks for that is among them is taken from there instead of being run again (marked
    ``extra["resumed_from_log"]``, not passed to ``on_probe``); the search and the knee are
    deterministic in their outcomes, so the run continues where the log ends. The knee's
    throughput sweep is not logged and runs again.

    ``time_budget_s`` (seconds, or "60s", "2m"; None: unbounded) bounds the whole run: the
    throughput ladder skips the sizes it has no time for, and the knee sweep stops when the
    budget ends, returning the knee of what it measured (``knee.budget_ended``, a note, and
    an honest confidence). The max-batch search always finishes: its answer must be exact.
    ``on_status`` receives :class:`batchprof.records.status.RunStatus` (``str()`` of it is a
    plain line): the phase, elapsed seconds and an estimate of what is left.
    """
    clock = time.perf_counter()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    notes: list[str] = []
    if spec is None:
        spec, decided = make_spec(
            device, memory_limit, min_batch=min_batch, max_batch=max_batch,
            multiple_of=multiple_of, dataset_size=dataset_size, alpha=alpha, hint=hint,
            use_prediction=use_prediction, knee=knee, roofline=roofline, timing=timing,
            resolve=resolve_device if backend is None else None, time_budget_s=time_budget_s)
        notes += decided
    wl = load_workload(workload)
    owned = backend is None  # built here, so closed here; a caller's backend stays open
    if backend is None:
        backend = make_backend(resolve_device(spec.device), spec.memory_limit_bytes)
    elif spec.memory_limit_bytes is not None and spec.memory_limit_bytes != backend.memory_limit_bytes:
        raise ConfigError("memory_limit differs from the given backend's memory_limit_bytes; "
                          "set the limit on the backend you pass")
    try:
        if backend.capacity_bytes() is None and spec.top_batch is None:
            raise ConfigError(f"nothing bounds the search on {backend.name}: give a memory "
                              "limit (memory_limit), max_batch or dataset_size")
        run = _Run(wl, backend, spec.timing, sampler, on_probe, on_status, started=clock,
                   budget_s=spec.time_budget_s)
        run.replay_from(replay)
        with older_objects_frozen():
            return _profile_run(run, workload, spec, notes, started_at, isolate, noise_scale,
                                len(replay))
    finally:
        if owned:
            backend.close()


def _profile_run(run: _Run, workload: Workload | str, spec: RunSpec, notes: list[str],
                 started_at: str, isolate: bool, noise_scale: bool | Any,
                 replayable: int) -> ProfileResult:
    """The search, the ladder, the knee and the result of :func:`profile`, on ``run``'s
    backend (``replayable``: how many logged probes the run was handed)."""
    wl, backend, sampler, clock = run.workload, run.backend, run.sampler, run.started
    hint, hint_source = spec.hint, ("user" if spec.hint is not None else None)
    predictors: list[Predictor] = []  # the Predictor behind the hint, if any
    worker = _isolation_worker(workload, wl, backend, spec.timing, isolate)
    if worker is not None:
        run.prober = isolated_prober(worker, sampler)
    max_search: MaxBatchResult | None = None
    knee_result: KneeResult | None = None
    interrupted, failure = False, None
    ladder: list[int] = []
    try:
        if hint is None and spec.use_prediction:
            hint, note = _prediction_hint(wl, backend, keep=predictors)
            notes.append(note if hint is not None
                         else f"{note}; falls back to measurement-only search")
            hint_source = "prediction" if hint is not None else None
        backend.prepare()
        # Memory-only probes (run.fits): feasibility needs no timing; the knee's sweep times
        # the sizes it uses. The hint's calibration readings count as probes already run.
        max_search = find_max_batch(run.fits, hint=hint, min_batch=spec.min_batch,
                                    max_batch=spec.max_batch, multiple_of=spec.multiple_of,
                                    dataset_size=spec.dataset_size,
                                    capacity_bytes=backend.capacity_bytes(),
                                    measured=_calibration_readings(predictors, backend))
        if max_search.max_batch is None:
            raise _nothing_fits(run, spec.min_batch, notes)
        if spec.knee:
            budget = spec.time_budget_s
            # a little of the budget is kept for what follows the sweep (fits, report)
            deadline = None if budget is None else clock + budget * (1 - BUDGET_RESERVE)
            # reuse what the search measured, memory-only probes included (nothing is paid
            # twice for one size; the sweep times the ladder); never re-run a failure
            seen = {m.batch_size for m in run.probes}
            ladder = throughput_ladder(spec.min_batch, max_search.max_batch, spec.multiple_of)
            run.phase = "throughput ladder"
            # the ladder's probes (memory at each size) get half of the time left; the sweep
            # times every ladder size on one model, probed or not (below the max they fit)
            now = time.perf_counter()
            ladder_end = None if deadline is None else now + max(0.0, deadline - now) / 2
            skipped = []
            for b in ladder:
                if b in seen:
                    continue
                if ladder_end is not None and time.perf_counter() > ladder_end:
                    skipped.append(b)
                    continue
                run.measure(b)
            if skipped:
                notes.append(f"time budget: the ladder sizes {', '.join(map(str, skipped))} "
                             "were not probed for memory (the knee sweep times them if time is left)")
            run.phase = "knee sweep"
            knee_result = _find_knee_on_one_model(run, ladder, spec.alpha, spec.multiple_of,
                                                  notes, deadline=deadline, run_started=clock,
                                                  budget_s=budget)
    except KeyboardInterrupt:
        interrupted = True
        gc.collect()  # the interrupted step's tensors: measure() never reached its cleanup
        backend.cleanup()
        notes.append(f"interrupted (Ctrl-C) after {len(run.probes)} probes; results are partial")
        if max_search is None:
            fit = [m.batch_size for m in run.probes if m.feasible]
            if fit:
                notes.append(f"the search did not finish; the largest batch that fit so far was "
                             f"{max(fit)} (not confirmed)")
        elif spec.knee and knee_result is None and run.feasible_outcomes():
            knee_result = find_knee(run.feasible_outcomes(), alpha=spec.alpha,
                                    multiple_of=spec.multiple_of)
            notes.append("knee taken from the sizes timed before the interrupt")
    except BatchprofError as exc:
        failure = exc
        notes.append(f"stopped by an error: {exc}")
    finally:
        run.release_model()
        if worker is not None:
            worker.close()
    notes.extend(crash_notes(run.probes))
    kept = sum(1 for m in run.probes if m.extra.get("kept_model"))
    if kept:
        notes.append(f"{kept} memory-only probe(s) ran on the model built by the first one "
                     "(its steady state, no rebuild or warm-up: the same reading on this "
                     "backend)")
    if replayable:
        notes.append(f"resumed: {run.replayed} of the {replayable} logged probes were taken "
                     "from the probe log, not run again")

    max_found = max_search.max_batch if max_search is not None else None
    stopped = ("interrupted" if interrupted else "stopped by an error"
               if failure is not None and not isinstance(failure, BudgetError) else None)
    recommended, reason = _recommend(max_found, knee_result, run.probes, spec.knee, stopped)
    probes = tuple(run.probes)
    if predictors and not interrupted:  # the hint's Predictor: its peak beside each measured one
        probes = with_predicted_peaks(predictors[0], probes, notes)
    if spec.roofline and not interrupted:
        probes = _with_roofline(wl, backend, probes, notes)
    from batchprof.noise.profiling import profile_noise_scale  # issue 18
    noise = None if interrupted or failure else profile_noise_scale(
        noise_scale, wl, backend, max_found, recommended, notes)
    leak = find_leak(run.probes)  # issue 14: memory kept from one probe to the next
    if leak:
        notes.insert(0, leak)
    result = ProfileResult(
        workload=wl.name, device=backend.name, memory_limit_bytes=backend.memory_limit_bytes,
        capacity_bytes=backend.capacity_bytes(), max_batch=max_found,
        knee_batch=knee_result.knee_batch if knee_result else None,
        recommended_batch=recommended, recommendation_reason=reason, probes=probes,
        knee=knee_result, max_search=max_search,
        notes=(tuple(notes) + (max_search.notes if max_search else ())
               + (knee_result.notes if knee_result else ())),
        options={**spec.options(), "hint": hint, "hint_source": hint_source},
        spec=spec, ladder=tuple(ladder),
        environment=_environment(backend), started_at=started_at,
        elapsed_s=time.perf_counter() - clock, interrupted=interrupted,
        error=None if failure is None else f"{type(failure).__name__}: {failure}",
        noise_scale=noise, leak=leak, tokens_per_sample=wl.tokens_per_sample,
    )
    if failure is not None:
        failure.partial_result = result  # type: ignore[attr-defined]
        raise failure
    return result

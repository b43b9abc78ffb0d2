"""``profile()``: prediction hint -> max-batch search -> throughput ladder -> knee -> result.

Every probe is a real ``probe.measure`` on ONE backend for the whole run, so the budget, the
device state and the clock are the same for every batch size. The search itself is pure
(:mod:`batchprof.search`); this module only wires probes to it and keeps every Measurement.

Nothing is lost when a run stops early: Ctrl-C returns the partial result (``interrupted=True``),
and a BatchprofError raised mid-run (a non-OOM step error, a budget too small for the smallest
batch) carries the partial result as ``exc.partial_result`` for the caller to write out.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .backends import Backend, CpuBackend, make_backend, resolve_device
from .errors import BatchprofError, BudgetError, ConfigError, TraceError
from .probe import ThroughputSweep, TimingPolicy, measure
from .result import ProfileResult, throughput_ladder
from .search import KneeResult, MaxBatchResult, Outcome, find_knee, find_max_batch
from .types import Measurement
from .units import format_bytes, parse_bytes
from .workload import Workload, load_workload

# The CPU has no memory ceiling of its own: without a budget the search would grow until the
# machine itself ran out. 128 MiB puts the default workload (transformer) at a max batch of 51;
# `batchprof run` with no arguments took 22 s on the 2-core dev machine (quiet; 12 probes,
# prediction included); 512 MiB (max 215) took over 4 minutes (under load).
DEFAULT_CPU_MEMORY_LIMIT = "128MiB"


def check_options(min_batch: int, max_batch: int | None, multiple_of: int,
                   dataset_size: int | None, alpha: float, hint: int | None) -> None:
    """Reject inconsistent options before anything is built or run."""
    def positive(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    positive("--min-batch", min_batch)
    positive("--multiple-of", multiple_of)
    if max_batch is not None:
        positive("--max-batch", max_batch)
        if max_batch < min_batch:
            raise ConfigError(f"--max-batch {max_batch} is below --min-batch {min_batch}; "
                              "raise --max-batch or lower --min-batch")
    if dataset_size is not None:
        positive("--dataset-size", dataset_size)
        if dataset_size < min_batch:
            raise ConfigError(f"--dataset-size {dataset_size} is below --min-batch {min_batch}: "
                              "no batch of that size can be drawn from the data set")
    if hint is not None:
        positive("--hint", hint)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"--alpha must be a fraction in (0, 1], e.g. 0.9; got {alpha!r}")


def _prediction_hint(workload: Workload, backend: Backend) -> tuple[int | None, str]:
    """The predicted max batch for this backend's capacity, and a note saying where it came
    from or why there is none. The one place that calls the prediction (imported lazily: it
    is optional, and a failure in it must only cost probes, never the run)."""
    capacity = backend.capacity_bytes()
    target = "cuda" if backend.name.startswith("cuda") else backend.name
    if capacity is None:
        return None, "prediction unavailable: no memory capacity to predict against"
    if target not in ("cpu", "cuda"):
        return None, f"prediction unavailable: no prediction target for the {target} backend"
    try:
        from .prediction import predict_max_batch
    except ImportError as exc:
        return None, f"prediction unavailable: {exc}"
    try:
        predicted = predict_max_batch(workload, capacity, target=target)
    except (TraceError, NotImplementedError) as exc:
        return None, f"prediction unavailable: {exc}"
    # Accept a bare int or a record carrying max_batch (the prediction's API is still young).
    value = getattr(predicted, "max_batch", predicted)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None, f"prediction unavailable: the prediction found no batch that fits ({value!r})"
    return value, f"search seeded by prediction: max batch about {value}"


class _Run:
    """The probes of one profile run, in order, on one backend."""

    def __init__(self, workload: Workload, backend: Backend, timing: TimingPolicy | None,
                 sampler: Any, on_probe: Callable[[Measurement], None] | None,
                 on_status: Callable[[str], None] | None = None):
        self.workload, self.backend, self.timing = workload, backend, timing
        self.sampler, self.on_probe, self.on_status = sampler, on_probe, on_status
        self.probes: list[Measurement] = []

    def measure(self, batch_size: int) -> Measurement:
        m = measure(self.workload, batch_size, backend=self.backend, timing=self.timing,
                    sampler=self.sampler)
        self.probes.append(m)
        if self.on_probe is not None:
            self.on_probe(m)
        return m

    def status(self, message: str) -> None:
        if self.on_status is not None:
            self.on_status(message)

    def outcome(self, batch_size: int) -> Outcome:
        return Outcome.from_measurement(self.measure(batch_size))

    def feasible_outcomes(self) -> list[Outcome]:
        return [Outcome.from_measurement(m) for m in self.probes if m.feasible]


def _noise_blurs(knee: KneeResult) -> bool:
    """Would another round help: a curve of three sizes or more whose knee moves by more than
    a doubling under resampling, or whose sizes have too few visits to resample at all?"""
    return knee.confidence == "ambiguous" and len(knee.fitted) >= 3  # find_knee's own verdict


def _find_knee_on_one_model(run: _Run, ladder: list[int], alpha: float, multiple_of: int,
                            notes: list[str]) -> KneeResult:
    """The knee from a ThroughputSweep over the ladder (one model, interleaved rounds).

    Rounds: ``policy.sweep_rounds`` over the ladder, then one more at a time while the knee is
    ambiguous (its bootstrap interval spans more than one doubling), within the policy's round
    and time limits. Refinement sizes are probed for the record (memory, feasibility), then
    timed in rounds together with the sizes either side of them, so the drift correction ties
    them to the rest, and every fit uses all rounds so far. If the sweep itself runs out of
    memory (a CUDA allocator fragmented by several sizes), the knee falls back to the probes'
    own times, and a note says so.
    """
    feasible = sorted({m.batch_size for m in run.probes if m.feasible and m.batch_size in ladder})
    timer = ThroughputSweep(run.workload, run.backend)
    policy = run.timing or TimingPolicy()
    oom = False

    def rounds(sizes: list[int], count: int, why: str) -> None:
        for _ in range(count):
            timer.round(sizes, policy.steps_per_visit)
            run.status(f"knee sweep round {timer.rounds} ({why}): batch "
                       f"{', '.join(map(str, sorted(sizes)))}; {timer.elapsed_s:.1f} s so far")

    try:
        rounds(feasible, policy.sweep_rounds, "ladder")
        knee = find_knee(timer.outcomes(), alpha=alpha, multiple_of=multiple_of)
        while (_noise_blurs(knee) and timer.rounds < policy.max_sweep_rounds
               and timer.elapsed_s < policy.sweep_budget_s):
            interval = knee.knee_interval
            rounds(feasible, 1, "too few rounds to judge the noise" if interval is None
                   else f"resampling puts the knee anywhere in {interval[0]}..{interval[1]}")
            knee = find_knee(timer.outcomes(), alpha=alpha, multiple_of=multiple_of)

        def refine(b: int) -> Outcome:
            probed = run.outcome(b)
            if not probed.feasible:
                return probed
            sizes = timer.sizes
            around = [max(s for s in sizes if s < b), b, min(s for s in sizes if s > b)]
            rounds(around, policy.sweep_rounds, f"refining near {b}")
            timed = next(o for o in timer.outcomes() if o.batch_size == b)
            return dataclasses.replace(timed, peak_bytes=probed.peak_bytes,
                                       capacity_bytes=probed.capacity_bytes)

        return find_knee(timer.outcomes(), alpha=alpha, refine=refine, multiple_of=multiple_of,
                         current_points=timer.outcomes)
    except Exception as exc:
        if not run.backend.is_oom(exc):
            raise
        oom = True
    finally:
        timer.close()
    if oom:
        notes.append("the one-model throughput sweep ran out of memory; the knee uses each "
                      "probe's own timing instead (more sensitive to drift between probes)")
    return find_knee(run.feasible_outcomes(), alpha=alpha, refine=run.outcome,
                     multiple_of=multiple_of)


def _with_roofline(workload: Workload, backend: Backend, probes: tuple[Measurement, ...],
                   notes: list[str]) -> tuple[Measurement, ...]:
    """Probes with roofline figures; unchanged (and a note) when the device's ceilings or the
    step's FLOPs cannot be had: the roofline is information, never a reason to lose a run."""
    from .ceilings import ceilings
    from .efficiency import annotate_roofline

    device = "cuda" if backend.device.type == "cuda" else "cpu"
    try:
        measured = ceilings(device)
        gpu_name = gpu_total = None
        if device == "cuda":
            import torch

            props = torch.cuda.get_device_properties(backend.device)
            gpu_name, gpu_total = props.name, props.total_memory
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
    fitted = dict(knee.fitted)
    best = knee.max_samples_per_s or 0.0
    caveat = ("; the knee is ambiguous (throughput is noisy here, see notes)"
              if knee.confidence == "ambiguous" else "")
    if k >= max_batch:
        return max_batch, (f"throughput is still rising at the largest batch that fits "
                           f"({max_batch}): use all the memory{caveat}")
    share = fitted.get(k, 0.0) / best if best else 0.0
    peak = max((m.peak_allocated_bytes or 0 for m in probes
                if m.batch_size == k and m.feasible), default=None)
    # The knee may sit below alpha x best on the isotonic fit: it was read off the step-time
    # model, or a standard error short of it counts (search.find_knee). Say which.
    within = ("" if share >= knee.alpha
              else " by the step-time model fitted to every size" if knee.step_time_model
              else " within measurement noise")
    return k, (f"the throughput knee: the smallest batch reaching {knee.alpha:.0%} of the best "
               f"throughput ({best:.1f} samples/s){within}; fitted {share:.0%} at batch {k}, "
               f"{format_bytes(peak)} peak memory, leaving headroom below the largest batch "
               f"that fits ({max_batch}){caveat}")


def _environment(backend: Backend) -> dict[str, Any]:
    try:
        from .environment import environment

        env = environment(kernels=False)
    except Exception as exc:  # noqa: BLE001 - a report without versions beats no report
        import platform

        import torch

        from . import __version__

        env = {"versions": {"batchprof": __version__, "torch": torch.__version__,
                            "python": platform.python_version()},
               "reason": f"full environment unavailable: {type(exc).__name__}: {exc}"}
    env["backend"] = {"name": backend.name, "device": str(backend.device),
                      "memory_limit_bytes": backend.memory_limit_bytes,
                      "capacity_bytes": backend.capacity_bytes()}
    return env


def profile(
    workload: Workload | str,
    device: str = "cpu",
    memory_limit: int | str | None = None,
    *,
    min_batch: int = 1,
    max_batch: int | None = None,
    multiple_of: int = 1,
    dataset_size: int | None = None,
    alpha: float = 0.9,
    hint: int | None = None,
    use_prediction: bool = True,
    knee: bool = True,
    timing: TimingPolicy | None = None,
    backend: Backend | None = None,
    on_probe: Callable[[Measurement], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    sampler: Any = None,
    roofline: bool = False,
    noise_scale: bool | Any = False,
) -> ProfileResult:
    """Find the largest batch that fits and the throughput knee for ``workload``.

    ``memory_limit`` (bytes or "512MiB") is the budget; on the CPU without one the default
    DEFAULT_CPU_MEMORY_LIMIT applies, with a note. ``knee=False`` stops after the max search
    (no throughput ladder, no knee: the quick answer to "what fits?").
    ``hint`` (or, when absent and ``use_prediction``, the prediction) seeds the search.
    ``roofline=True`` measures the device's ceilings once and adds FLOPs, achieved FLOP/s,
    MFU and the bound to each timed probe's ``extra`` (see batchprof.efficiency).
    ``noise_scale=True`` (or a ``batchprof.noise.NoiseOptions``) adds the gradient noise scale
    after the knee, its big batch defaulting to the max batch (``result.noise_scale``).
    ``on_probe(m)`` sees each Measurement as it completes; ``on_status(text)`` hears what the
    knee's throughput sweep is doing, a line per round. ``backend`` replaces the one built
    from ``device``/``memory_limit`` (tests pass a FakeBackend).

    Raises ConfigError for bad options; BudgetError when even ``min_batch`` does not fit
    ("batch size 1 needs X; the budget is Y"); StepError when the step fails other than by
    OOM. Errors raised after probing began carry ``partial_result`` (a ProfileResult). Ctrl-C
    returns the partial result with ``interrupted=True``.
    """
    clock = time.perf_counter()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    check_options(min_batch, max_batch, multiple_of, dataset_size, alpha, hint)
    wl = load_workload(workload)
    notes: list[str] = []
    if backend is None:
        dev = resolve_device(device)
        limit = parse_bytes(memory_limit) if memory_limit is not None else None
        if limit is None and dev == "cpu":
            limit = parse_bytes(DEFAULT_CPU_MEMORY_LIMIT)
            notes.append(f"no memory limit given on the CPU: using the default budget "
                         f"{DEFAULT_CPU_MEMORY_LIMIT}")
        backend = make_backend(dev, limit)
    elif memory_limit is not None and parse_bytes(memory_limit) != backend.memory_limit_bytes:
        raise ConfigError("memory_limit differs from the given backend's memory_limit_bytes; "
                          "set the limit on the backend you pass")
    if backend.capacity_bytes() is None and max_batch is None and dataset_size is None:
        raise ConfigError(f"nothing bounds the search on {backend.name}: give a memory limit "
                          "(--memory-limit), --max-batch or --dataset-size")

    options: dict[str, Any] = {
        "min_batch": min_batch, "max_batch": max_batch, "multiple_of": multiple_of,
        "dataset_size": dataset_size, "alpha": alpha, "hint": hint, "hint_source": None,
        "use_prediction": use_prediction, "knee": knee, "timing": dataclasses.asdict(timing or TimingPolicy()),
    }
    if hint is not None:
        options["hint_source"] = "user"
    run = _Run(wl, backend, timing, sampler, on_probe, on_status)
    max_search: MaxBatchResult | None = None
    knee_result: KneeResult | None = None
    interrupted, failure = False, None
    try:
        if hint is None and use_prediction:
            hint, note = _prediction_hint(wl, backend)
            notes.append(note if hint is not None
                         else f"{note}; falls back to measurement-only search")
            options.update(hint=hint, hint_source="prediction" if hint is not None else None)
        backend.prepare()
        max_search = find_max_batch(run.outcome, hint=hint, min_batch=min_batch,
                                    max_batch=max_batch, multiple_of=multiple_of,
                                    dataset_size=dataset_size)
        if max_search.max_batch is None:
            raise _nothing_fits(run, min_batch, notes)
        if knee:
            seen = {m.batch_size for m in run.probes}
            ladder = throughput_ladder(min_batch, max_search.max_batch, multiple_of)
            for b in ladder:
                if b not in seen:  # reuse what the search measured; never re-run a failure
                    run.measure(b)
            knee_result = _find_knee_on_one_model(run, ladder, alpha, multiple_of, notes)
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
        elif knee and knee_result is None and run.feasible_outcomes():
            knee_result = find_knee(run.feasible_outcomes(), alpha=alpha,
                                    multiple_of=multiple_of)
            notes.append("knee taken from the sizes timed before the interrupt")
    except BatchprofError as exc:
        failure = exc
        notes.append(f"stopped by an error: {exc}")

    max_found = max_search.max_batch if max_search is not None else None
    stopped = ("interrupted" if interrupted else "stopped by an error"
               if failure is not None and not isinstance(failure, BudgetError) else None)
    recommended, reason = _recommend(max_found, knee_result, run.probes, knee, stopped)
    probes = tuple(run.probes)
    if roofline and not interrupted:
        probes = _with_roofline(wl, backend, probes, notes)
    from .noise.profiling import profile_noise_scale  # issue 18
    noise = None if interrupted or failure else profile_noise_scale(
        noise_scale, wl, backend, max_found, recommended, notes)
    result = ProfileResult(
        workload=wl.name, device=backend.name, memory_limit_bytes=backend.memory_limit_bytes,
        capacity_bytes=backend.capacity_bytes(), max_batch=max_found,
        knee_batch=knee_result.knee_batch if knee_result else None,
        recommended_batch=recommended, recommendation_reason=reason, probes=probes,
        knee=knee_result, max_search=max_search,
        notes=(tuple(notes) + (max_search.notes if max_search else ())
               + (knee_result.notes if knee_result else ())),
        options=options, environment=_environment(backend), started_at=started_at,
        elapsed_s=time.perf_counter() - clock, interrupted=interrupted,
        error=None if failure is None else f"{type(failure).__name__}: {failure}",
        noise_scale=noise,
    )
    if failure is not None:
        failure.partial_result = result  # type: ignore[attr-defined]
        raise failure
    return result

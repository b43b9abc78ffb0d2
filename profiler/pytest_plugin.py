"""pytest plugin: memory and throughput budgets for training steps, and figures for
pytest-benchmark.

Registered through the ``pytest11`` entry point, so it loads in every pytest run of an
environment where batchprof is installed. It is inert until a test asks for it: importing this
module imports only ``pytest`` and the standard library (torch loads on the first measurement),
and an unmarked test that does not request the fixture runs exactly as without the plugin.

Three faces:

- the ``batchprof`` fixture: ``batchprof.measure(workload, batch_size, **kw) -> Measurement``,
  ``batchprof.profile(workload, **kw) -> ProfileResult`` and ``batchprof.check(...)`` (budgets
  inside the test body). Device and memory limit default to ``--batchprof-device`` (``cpu``)
  and ``--batchprof-memory-limit`` (none).
- the marker ``@pytest.mark.batchprof(workload=..., batch_size=64, max_peak="2GiB",
  max_activation=..., min_samples_per_s=..., memory_limit=..., min_max_batch=...)``.
  **Budgets are checked after the test body passes**: the body runs first (a benchmark in it
  records its timing), then the plugin measures ``workload`` at ``batch_size`` (and profiles it
  when ``min_max_batch`` is given) and fails the test, in plain words, for every budget missed.
  A body that fails is reported as is, without measuring. An out-of-memory step at
  ``batch_size`` fails the test too: no budget can be checked on a step that did not run.
- pytest-benchmark: when the test uses the ``benchmark`` fixture, the figures (peak bytes,
  activation bytes, samples/s, kernel-busy %, max batch) go into ``benchmark.extra_info``, so
  ``--benchmark-save`` / ``--benchmark-compare`` / ``--benchmark-json`` carry memory alongside
  time; ``pytest_benchmark_update_machine_info`` adds ``machine_info["batchprof"]`` (device,
  driver, torch, triton and batchprof versions).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import pytest

MARKER = "batchprof"
MEASURE_KEYS = ("workload", "batch_size", "device", "memory_limit", "timing")
PER_BATCH_BUDGETS = ("max_peak", "max_activation", "min_samples_per_s")
BUDGET_KEYS = (*PER_BATCH_BUDGETS, "min_max_batch")
PROFILE_KEYS = ("min_batch", "max_batch", "multiple_of")  # to profile(), with device/limit
MARKER_KEYS = MEASURE_KEYS + BUDGET_KEYS + PROFILE_KEYS


# ---- options and marker ---------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("batchprof", "batchprof memory/throughput budgets")
    group.addoption("--batchprof-device", default="cpu", metavar="DEVICE",
                    help="device for the batchprof fixture and marker: cpu, cuda, cuda:N or "
                         "auto (default: cpu)")
    group.addoption("--batchprof-memory-limit", default=None, metavar="BYTES",
                    help="memory limit for batchprof measurements, e.g. 2GiB (default: none on "
                         "the CPU, the device's memory on a GPU); a marker's memory_limit wins")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(workload, batch_size=..., max_peak=..., max_activation=..., "
        "min_samples_per_s=..., memory_limit=..., min_max_batch=...): measure the workload "
        "after the test body passes and fail the test for every budget it misses",
    )


# ---- figures for pytest-benchmark ------------------------------------------------------------
def _kernel_busy_pct(measurement: Any) -> float | None:
    series = measurement.sample("kernel_busy_pct")
    return None if series is None else series.mean  # no sampler / no NVML: None, never 0


def extra_info_for(measurement: Any = None, result: Any = None) -> dict[str, Any]:
    """The figures batchprof puts into ``benchmark.extra_info`` (JSON-able; None = n/a)."""
    info: dict[str, Any] = {}
    if measurement is not None:
        info.update(
            workload=measurement.workload,
            batch_size=measurement.batch_size,
            device=measurement.device,
            feasible=measurement.feasible,
            peak_allocated_bytes=measurement.peak_allocated_bytes,
            peak_reserved_bytes=measurement.peak_reserved_bytes,
            activation_bytes=measurement.activation_bytes,
            samples_per_s=measurement.samples_per_s,
            step_time_median_s=measurement.step_time_median_s,
            kernel_busy_pct=_kernel_busy_pct(measurement),
        )
    if result is not None:
        info.update(max_batch=result.max_batch, knee_batch=result.knee_batch,
                    recommended_batch=getattr(result, "recommended_batch", None),
                    profile_probes=len(result.probes))
    return info


def record_extra_info(benchmark: Any, measurement: Any = None, result: Any = None
                      ) -> dict[str, Any]:
    """Put a Measurement's (and/or a ProfileResult's) figures into ``benchmark.extra_info``.

    Returns what was recorded. Keys: workload, batch_size, device, feasible,
    peak_allocated_bytes, peak_reserved_bytes, activation_bytes, samples_per_s,
    step_time_median_s, kernel_busy_pct (None where unavailable); with a result also
    max_batch, knee_batch, recommended_batch, profile_probes.
    """
    info = extra_info_for(measurement, result)
    benchmark.extra_info.update(info)  # update, not assign: pytest-benchmark holds this dict
    return info


# ---- budgets --------------------------------------------------------------------------------
def _fmt_bytes(n: int | None) -> str:
    from batchprof.units import format_bytes

    return "n/a" if n is None else f"{format_bytes(n)} ({n} bytes)"


def _budget_bytes(name: str, value: Any) -> int:
    from batchprof.errors import ConfigError
    from batchprof.units import parse_bytes

    try:
        return parse_bytes(value)
    except ConfigError as err:
        raise ConfigError(f"budget {name}={value!r}: {err}") from None


def budget_violations(measurement: Any = None, result: Any = None, *,
                      max_peak: int | str | None = None,
                      max_activation: int | str | None = None,
                      min_samples_per_s: float | None = None,
                      min_max_batch: int | None = None) -> list[str]:
    """Every budget missed, one plain-words line each (empty when all are met).

    Per-batch budgets read ``measurement``; ``min_max_batch`` reads ``result`` (a
    ProfileResult). A bad budget, or one without the figure it needs, raises ConfigError.
    """
    from batchprof.errors import ConfigError
    from batchprof.units import format_bytes

    lines: list[str] = []
    per_batch = {"max_peak": max_peak, "max_activation": max_activation,
                 "min_samples_per_s": min_samples_per_s}
    asked = {k: v for k, v in per_batch.items() if v is not None}
    if asked and measurement is None:
        raise ConfigError(f"budgets {', '.join(asked)} need a measurement at one batch size: "
                          "give batch_size")
    if measurement is not None and asked:
        where = f"at batch {measurement.batch_size} on {measurement.device}"
        if not measurement.feasible:
            limit = measurement.memory_limit_bytes or measurement.capacity_bytes
            budgets = ", ".join(f"{k}={v!r}" for k, v in asked.items())
            return [f"batchprof budget exceeded: workload {measurement.workload!r} ran out of "
                    f"memory {where} (memory limit {format_bytes(limit)}), so {budgets} cannot "
                    f"be met: {measurement.reason}"]
        if max_peak is not None:
            budget = _budget_bytes("max_peak", max_peak)
            peak = measurement.peak_allocated_bytes
            if peak is not None and peak > budget:
                lines.append(f"batchprof budget exceeded: peak allocated {_fmt_bytes(peak)} "
                             f"{where} > max_peak {format_bytes(budget)}")
        if max_activation is not None:
            budget = _budget_bytes("max_activation", max_activation)
            act = measurement.activation_bytes
            if act is not None and act > budget:
                lines.append(f"batchprof budget exceeded: activations saved for backward "
                             f"{_fmt_bytes(act)} {where} > max_activation {format_bytes(budget)}")
        if min_samples_per_s is not None:
            rate = measurement.samples_per_s
            if rate is None or rate < float(min_samples_per_s):
                shown = "n/a" if rate is None else f"{rate:.4g} samples/s"
                lines.append(f"batchprof budget not met: throughput {shown} {where} (median of "
                             f"{len(measurement.step_times_s)} timed steps) < min_samples_per_s "
                             f"{float(min_samples_per_s):.4g}")
    if min_max_batch is not None:
        if result is None:
            raise ConfigError("budget min_max_batch needs a profile() result")
        probes = result.probes
        device = getattr(result, "device", None) or (probes[0].device if probes else "?")
        limit = getattr(result, "memory_limit_bytes", None)
        found = result.max_batch
        if found is None or found < int(min_max_batch):
            shown = "none (no batch size fit)" if found is None else str(found)
            lines.append(f"batchprof budget not met: max feasible batch {shown} on {device} "
                         f"(memory limit {format_bytes(limit)}, {len(probes)} probes) < "
                         f"min_max_batch {int(min_max_batch)}")
    return lines


# ---- the fixture ----------------------------------------------------------------------------
class BatchprofHelper:
    """What the ``batchprof`` fixture returns. Device and memory limit come from the command
    line (``--batchprof-device``, ``--batchprof-memory-limit``); keyword arguments override.

    When the test also uses ``benchmark``, each measure()/profile() records its figures into
    ``benchmark.extra_info`` (the latest call wins for a key).
    """

    def __init__(self, device: str, memory_limit: str | None,
                 benchmark_getter: Callable[[], Any] | None = None):
        self.device = device
        self.memory_limit = memory_limit
        self._benchmark_getter = benchmark_getter
        self.last_measurement: Any = None
        self.last_result: Any = None

    def _defaults(self, kw: dict[str, Any]) -> dict[str, Any]:
        return {"device": self.device, "memory_limit": self.memory_limit, **kw}

    def _record(self, measurement: Any = None, result: Any = None) -> None:
        benchmark = self._benchmark_getter() if self._benchmark_getter else None
        if benchmark is not None:
            record_extra_info(benchmark, measurement, result)

    def measure(self, workload: Any, batch_size: int, **kw: Any) -> Any:
        """``batchprof.measure`` with this run's device and memory limit -> Measurement."""
        from batchprof.backends import resolve_device
        from batchprof.probe import measure

        kw = self._defaults(kw)
        if "sampler" not in kw and resolve_device(kw["device"]).startswith("cuda"):
            m = _measure_with_device_sampler(measure, workload, batch_size, kw)
        else:
            m = measure(workload, batch_size, **kw)
        self.last_measurement = m
        self._record(measurement=m)
        return m

    def profile(self, workload: Any, **kw: Any) -> Any:
        """``batchprof.profile`` with this run's device and memory limit -> ProfileResult."""
        import batchprof

        result = batchprof.profile(workload, **self._defaults(kw))
        self.last_result = result
        self._record(result=result)
        return result

    def check(self, measurement: Any = None, result: Any = None, **budgets: Any) -> None:
        """Fail the test (plain words, no traceback) for every budget missed; budgets as in
        the marker: max_peak, max_activation, min_samples_per_s, min_max_batch."""
        unknown = set(budgets) - set(BUDGET_KEYS)
        if unknown:
            raise TypeError(f"unknown budget(s) {sorted(unknown)}; expected {BUDGET_KEYS}")
        _fail(_violations_or_usage(measurement, result, budgets))


def _violations_or_usage(measurement: Any, result: Any, budgets: dict[str, Any]) -> list[str]:
    from batchprof.errors import ConfigError

    try:
        return budget_violations(measurement, result, **budgets)
    except ConfigError as err:
        return [f"batchprof: {err}"]


def _fail(lines: list[str]) -> None:
    # pytrace=False: the message is the whole story; a traceback into the plugin is noise.
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)


def _measure_with_device_sampler(measure: Callable[..., Any], workload: Any, batch_size: int,
                                 kw: dict[str, Any]) -> Any:
    # On a GPU, sample NVML during the timed steps so kernel_busy_pct is filled in.
    from batchprof.sampling import make_sampler

    with make_sampler("auto") as sampler:
        return measure(workload, batch_size, sampler=sampler, **kw)


def _benchmark_getter(request: pytest.FixtureRequest) -> Callable[[], Any]:
    def get() -> Any:
        # Only a benchmark the test asked for: requesting it here would make a plain test a
        # benchmark (and skip it under --benchmark-skip).
        if "benchmark" in request.fixturenames:
            return request.getfixturevalue("benchmark")
        return None

    return get


@pytest.fixture
def batchprof(request: pytest.FixtureRequest) -> BatchprofHelper:
    """Measure or profile a Workload inside a test (see :class:`BatchprofHelper`)."""
    return _helper_for(request.config, _benchmark_getter(request))


def _helper_for(config: pytest.Config, getter: Callable[[], Any] | None) -> BatchprofHelper:
    return BatchprofHelper(config.getoption("batchprof_device"),
                           config.getoption("batchprof_memory_limit"), getter)


# ---- the marker -----------------------------------------------------------------------------
def _marker_problem(kwargs: dict[str, Any], args: tuple[Any, ...]) -> str | None:
    from batchprof.errors import ConfigError
    from batchprof.units import parse_bytes

    if args and (len(args) > 1 or "workload" in kwargs):
        return "takes the workload as its only positional argument"
    unknown = sorted(set(kwargs) - set(MARKER_KEYS))
    if unknown:
        return f"got unknown argument(s) {unknown}; accepted: {', '.join(MARKER_KEYS)}"
    if "workload" not in kwargs:
        return "needs workload= (a batchprof.Workload, a built-in name or 'module:attr')"
    if kwargs.get("batch_size") is None and kwargs.get("min_max_batch") is None:
        return "needs batch_size= (or min_max_batch= to profile the largest batch that fits)"
    for name in ("max_peak", "max_activation", "memory_limit"):
        if kwargs.get(name) is not None:
            try:
                parse_bytes(kwargs[name])
            except ConfigError as err:
                return f"{name}={kwargs[name]!r}: {err}"
    return None


def _marker_kwargs(item: pytest.Item) -> dict[str, Any] | None:
    """The marker's arguments (positional workload folded in); fails the test when bad."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    kwargs = dict(marker.kwargs)
    problem = _marker_problem(kwargs, marker.args)
    if problem is not None:
        _fail([f"@pytest.mark.batchprof {problem}"])
    if marker.args:
        kwargs["workload"] = marker.args[0]
    return kwargs


def pytest_runtest_setup(item: pytest.Item) -> None:
    _marker_kwargs(item)  # bad marker arguments fail before the body runs


def _run_marker(item: pytest.Item, kwargs: dict[str, Any]) -> None:
    from batchprof.errors import BatchprofError

    funcargs = getattr(item, "funcargs", {})
    helper = _helper_for(item.config, lambda: funcargs.get("benchmark"))
    common = {k: kwargs[k] for k in ("device", "memory_limit", "timing") if k in kwargs}
    measurement = result = None
    error: BatchprofError | None = None
    try:
        if kwargs.get("batch_size") is not None:
            measurement = helper.measure(kwargs["workload"], kwargs["batch_size"], **common)
        if kwargs.get("min_max_batch") is not None:
            extra = {k: kwargs[k] for k in PROFILE_KEYS if k in kwargs}
            result = helper.profile(kwargs["workload"], **common, **extra)
    except BatchprofError as err:
        error = err
    if error is not None:  # failed outside the except block: no chained traceback
        _fail([f"batchprof could not measure the workload: {error}"])
    budgets = {k: kwargs[k] for k in BUDGET_KEYS if kwargs.get(k) is not None}
    lines = _violations_or_usage(measurement, result, budgets)
    if (measurement is not None and not measurement.feasible
            and not any(k in budgets for k in PER_BATCH_BUDGETS)):
        # No per-batch budget names this OOM, but a step that did not run is still a failure.
        lines.insert(0, f"batchprof: workload {measurement.workload!r} ran out of memory at "
                        f"batch {measurement.batch_size} on {measurement.device}: "
                        f"{measurement.reason}")
    _fail(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    outcome = yield  # the test body; if it raised, that propagates and nothing is measured
    kwargs = _marker_kwargs(item)
    if kwargs is not None:
        _run_marker(item, kwargs)
    return outcome


# ---- pytest-benchmark machine info ---------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    try:
        from batchprof.errors import BatchprofError
        from batchprof.nvml import query_system

        return query_system().driver_version
    except (ImportError, BatchprofError):
        return None  # no NVML / no NVIDIA driver: unknown, not a made-up value


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    # Versions come from package metadata, so saving a benchmark does not import torch.
    machine_info["batchprof"] = {
        "device": config.getoption("batchprof_device"),
        "memory_limit": config.getoption("batchprof_memory_limit"),
        "driver": _driver_version(),
        "torch": _version("torch"),
        "triton": _version("triton"),
        "batchprof": _version("batchprof"),
    }

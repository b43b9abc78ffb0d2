"""The plugin's hooks: options, the marker, budgets checked after the body, machine info."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from batchprof.pytest_plugin.budgets import BUDGET_KEYS, PER_BATCH_BUDGETS
from batchprof.pytest_plugin.fixture import _fail, _helper_for, _violations_or_usage

MARKER = "batchprof"


MEASURE_KEYS = ("workload", "batch_size", "device", "memory_limit", "timing")


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
        from batchprof.sampling.libnvml import query_system

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

"""The ``batchprof`` fixture: measure / profile / check inside a test body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from batchprof.pytest_plugin.budgets import BUDGET_KEYS, budget_violations
from batchprof.pytest_plugin.extra_info import record_extra_info


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
        from batchprof.probe.step import measure

        kw = self._defaults(kw)
        device = resolve_device(kw["device"])
        if "sampler" not in kw and device.startswith("cuda"):
            m = _measure_with_device_sampler(measure, workload, batch_size, device, kw)
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
                                 device: str, kw: dict[str, Any]) -> Any:
    # On a GPU, sample NVML (that GPU's) during the timed steps so kernel_busy_pct is filled in.
    from batchprof.sampling.factory import device_sampler

    with device_sampler("auto", device) as sampler:
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

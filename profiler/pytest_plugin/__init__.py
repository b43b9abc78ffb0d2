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

from .budgets import budget_violations
from .extra_info import extra_info_for, record_extra_info
from .fixture import batchprof
from .hooks import (
    pytest_addoption,
    pytest_benchmark_update_machine_info,
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_setup,
)

__all__ = ["batchprof", "budget_violations", "extra_info_for", "pytest_addoption",
           "pytest_benchmark_update_machine_info", "pytest_configure", "pytest_runtest_call",
           "pytest_runtest_setup", "record_extra_info"]

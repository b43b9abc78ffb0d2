"""One exception hierarchy for everything batchprof raises on purpose.

An out-of-memory step is *not* an error (it is an infeasible Measurement); these are for input a
user must fix, environments that cannot do what was asked, and workloads that crash for reasons
other than memory. The CLI turns any BatchprofError into a one-line message and exit code 2.
"""

from __future__ import annotations


class BatchprofError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is the whole message."""


class ConfigError(BatchprofError, ValueError):
    """Bad input: an option value, a batch size, a memory limit string."""


class WorkloadError(BatchprofError):
    """A workload could not be found, imported or built, or is not a Workload."""


class BudgetError(ConfigError):
    """The memory budget cannot hold even the model's own state or batch 1."""


class StepError(BatchprofError):
    """The training step raised something other than out-of-memory.

    Carries the batch size so reports can name it; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, batch_size: int | None = None):
        super().__init__(message)
        self.batch_size = batch_size


class ReportFileError(BatchprofError):
    """A results.json or probes.jsonl that cannot be read back (missing, truncated, corrupted)."""


class DeviceUnavailableError(BatchprofError):
    """The requested device (or its driver/library) is not present on this machine."""


class TraceError(BatchprofError):
    """A workload could not be traced on the meta device (names the operator when known)."""

    def __init__(self, message: str, op_name: str | None = None):
        super().__init__(message)
        self.op_name = op_name

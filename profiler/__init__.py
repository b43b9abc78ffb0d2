"""batchprof: which batch size fits, which one pays, and what fits on a GPU you don't have.

Public API (see DESIGN.md): ``Workload``, ``load_workload``, ``measure``, ``profile``,
``predict``, ``predict_max_batch``, ``plan``, ``ceilings``. Heavy modules (torch, pandas, triton) load on first use, so
``import batchprof`` and ``batchprof --version`` stay fast and warning-free.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Workload": ".workloads",
    "load_workload": ".workloads",
    "measure": ".probe",
    "TimingPolicy": ".probe",
    "Measurement": ".records",
    "SampleSeries": ".records",
    "profile": ".api",
    "ProfileResult": ".records",
    "predict": ".prediction",
    "predict_max_batch": ".prediction",
    "Prediction": ".prediction",
    "plan": ".prediction",
    "PlanRow": ".prediction",
    "ceilings": ".roofline.ceilings",
    "Ceilings": ".roofline.ceilings",
    "make_backend": ".backends",
    "estimate_noise_scale": ".noise",  # issue 18
    "NoiseOptions": ".noise",
    "BatchprofError": ".errors",
    "ConfigError": ".errors",
    "WorkloadError": ".errors",
    "BudgetError": ".errors",
    "StepError": ".errors",
    "DeviceUnavailableError": ".errors",
    "TraceError": ".errors",
    "parse_bytes": ".units",
    "format_bytes": ".units",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchprof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

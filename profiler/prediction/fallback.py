"""The real-step fallback: when the meta trace cannot go on, predict from real small steps.

A meta trace stops where the step needs a value no shape determines (a data-dependent branch,
``nonzero`` on data, ``.item()`` of a computed loss; known.py answers the value-determined
ones). On the CPU target with calibration allowed, the predictor then records the same
alloc/free event stream from the real step on the CPU (trace.trace_step with device="cpu",
the instrument calibration uses) at the two anchor sizes, and extrapolates it with the
batch-affine model exactly as it would meta traces -- but only if a third real step agrees
event for event (``fit_error == 0``); otherwise no path predicts and ``TraceError`` says so,
naming the operator and module where the trace stopped. The prediction's notes say which path
was used. Real steps are run at small sizes only (the anchors and the check size).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TraceError
from ..workloads.base import Workload
from .trace import Trace, trace_step


def record_real_trace(workload: Workload, batch_size: int) -> Trace:
    """The step's event stream from a real run on the CPU (same semantics as a meta trace)."""
    import torch

    torch.manual_seed(0)
    return trace_step(workload, batch_size, "cpu", device="cpu")


def fallback_note(error: TraceError, anchors: Sequence[int], check: int) -> str:
    where = error.op_name or "an operation"
    return (f"predicted from real CPU steps: the meta trace stopped at {where} (a value is "
            f"needed); real steps at batch {', '.join(map(str, anchors))} (checked at {check}) "
            "were recorded and extrapolated batch-affinely")


def no_path_error(error: TraceError, why: str) -> TraceError:
    return TraceError(f"{error} The real-step fallback cannot predict either: {why}.",
                      op_name=error.op_name)

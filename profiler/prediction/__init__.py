"""Predict peak memory per batch size without running the step (DESIGN.md, "Prediction").

``predict(workload, batch_sizes, target)`` -> one ``Prediction`` per size;
``predict_max_batch(workload, capacity_bytes, target)`` (or ``gpu=NAME``) -> the largest batch
predicted to fit; ``plan(workload, gpus=[...])`` -> a PlanRow per GPU (planning.py).
Modules: trace (meta-device trace, recorded by recorder; known and metacache serve it), paths
(kernel-path corrections), model (batch-affine event list), calibrate (bytes no trace sees),
allocators (CPU / CUDA caching allocator replay), overheads (the CUDA terms no trace has),
predictor (``Predictor``), api (the public functions above).
"""

from __future__ import annotations

from .api import predict, predict_max_batch
from .calibrate import Calibration, CalibrationPoint
from .planning import PlanRow, PredictedScenario, plan, predict_scenarios
from .predictor import FitInfo, Prediction, Predictor
from .trace import Trace, trace_step

__all__ = ["Calibration", "CalibrationPoint", "FitInfo", "PlanRow", "PredictedScenario",
           "Prediction", "Predictor", "Trace", "plan", "predict", "predict_max_batch",
           "predict_scenarios", "trace_step"]

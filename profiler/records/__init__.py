"""Frozen result records (floor 1): units in field names, raw samples kept, statistics derived.

Every record converts to a plain dict (JSON) and back; an unavailable figure is None."""

from __future__ import annotations

from .measurement import Measurement, SampleSeries
from .result import BatchPoint, ProfileResult
from .roofline import RooflinePoint
from .search import KneeResult, MaxBatchResult, Outcome, StepTimeModel
from .step_times import StepTimes, needs_more_steps

__all__ = ["BatchPoint", "KneeResult", "MaxBatchResult", "Measurement", "Outcome", "ProfileResult", "RooflinePoint", "SampleSeries", "StepTimeModel", "StepTimes", "needs_more_steps"]

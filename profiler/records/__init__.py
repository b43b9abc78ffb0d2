"""Frozen result records (floor 1): units in field names, raw samples kept, statistics derived.

Every record converts to a plain dict (JSON) and back; an unavailable figure is None."""

from __future__ import annotations

from .measurement import Measurement, SampleSeries
from .result import BatchPoint, ProfileResult
from .search import KneeResult, MaxBatchResult, Outcome, StepTimeModel

__all__ = ["BatchPoint", "KneeResult", "MaxBatchResult", "Measurement", "Outcome", "ProfileResult", "SampleSeries", "StepTimeModel"]

"""Tidy data and readable plots (issue 16): to_frame one row per batch size, numeric, flagged;
plots with integer batch ticks, units on axes, utilization as mean and spread, roofline labels
that do not collide."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

import batchprof
from batchprof.backends.fake import FakeBackend
from batchprof.probe import TimingPolicy
from batchprof.records.frame import result_frame
from batchprof.records.measurement import SampleSeries
from batchprof.records.roofline import RooflinePoint
from batchprof.render.plots import (
    draw_peak_memory,
    draw_roofline,
    draw_throughput,
    draw_utilization,
    non_overlapping,
)

from .helpers import tiny_workload

DATASET = 100_000


@pytest.fixture(scope="module")
def result():
    """Max 12, knee 8 on a scripted device (throughput 100*min(b, 8))."""
    backend = FakeBackend(lambda b: 10**6 + 10**4 * b, 10**6 + 10**4 * 12 + 5000,
                          step_time_fn=lambda b: b / (100.0 * min(b, 8)))
    return batchprof.profile(tiny_workload(), backend=backend, dataset_size=DATASET,
                             use_prediction=False,
                             timing=TimingPolicy(timed_steps=3, max_timed_steps=3,
                                                 sweep_rounds=1, max_sweep_rounds=1))


def enriched(result):
    """The same run with a prediction, sampler series and roofline figures on every probe."""
    probes = []
    for m in result.probes:
        point = None
        samples = ()
        if m.feasible:
            b = m.batch_size
            samples = (SampleSeries("cpu_pct", "%", (0.0, 0.1, 0.2, 0.3),
                                    (50.0 + b, 60.0 + b, None, 70.0 + b)),)
            flops, intensity = 1e7 * b, 1.0 + b / 100  # at 0.01 s a step: 1e9·b FLOP/s
            point = RooflinePoint(
                flops_per_step=flops, bytes_per_step=flops / intensity,
                achieved_flops_per_s=1e9 * b, mfu_pct=b / 10, mfu_spec_pct=None,
                arithmetic_intensity_flop_per_byte=intensity, ridge_point_flop_per_byte=10.0,
                bound="memory", roofline_step_time_s=flops / intensity / 10e9,
                peak_flops_per_s=1e11, peak_bandwidth_gbps=10.0)
        predicted = None if m.peak_allocated_bytes is None else int(m.peak_allocated_bytes * 1.1)
        probes.append(dataclasses.replace(m, samples=samples, roofline=point,
                                          predicted_peak_allocated_bytes=predicted))
    return dataclasses.replace(result, probes=tuple(probes))


# ---- to_frame -------------------------------------------------------------------------------
def test_frame_is_one_numeric_row_per_batch_size(result):
    frame = result.to_frame()
    sizes = sorted({m.batch_size for m in result.probes})
    assert frame.index.name == "batch_size" and list(frame.index) == sizes
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    for col in frame.columns:
        assert pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]), col
    assert frame["is_max"].sum() == 1 and frame.loc[12, "is_max"]
    assert frame.loc[8, "is_knee"] and frame.loc[8, "is_recommended"]
    assert frame.loc[:12, "feasible"].all() and not frame.loc[13:, "feasible"].any()
    assert len(frame.loc[13:]) >= 1  # the size that did not fit is a row too
    assert frame.loc[4, "samples_per_s"] == pytest.approx(400.0)
    assert frame.loc[4, "steps_per_epoch"] == math.ceil(DATASET / 4)
    assert frame.loc[4, "epoch_time_s"] == pytest.approx(math.ceil(DATASET / 4) * 4 / 400.0)
    # no sampler, no roofline in this run: no columns of nothing
    assert not [c for c in frame.columns if c.endswith("_mean") or c.startswith("mfu")]


def test_frame_puts_predicted_beside_measured_and_keeps_every_figure(result):
    frame = result_frame(enriched(result))
    cols = list(frame.columns)
    assert cols.index("predicted_peak_allocated_bytes") == cols.index("peak_allocated_bytes") + 1
    assert frame["predicted_peak_allocated_bytes"].dtype == "Int64"
    fit = frame[frame["feasible"]]
    assert (fit["prediction_error_fraction"].round(3) == 0.1).all()
    assert fit["cpu_pct_mean"].dtype == "float64"
    assert fit.loc[4, "cpu_pct_mean"] == pytest.approx((54 + 64 + 74) / 3)
    assert fit.loc[4, "cpu_pct_std"] > 0 and fit.loc[4, "cpu_pct_max"] == 74
    assert fit.loc[4, "achieved_flops_per_s"] == pytest.approx(4e9)
    assert frame["bound"].dtype == "string"


# ---- plots ----------------------------------------------------------------------------------
def _labels(axis) -> list[str]:
    axis.figure.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_batch_ticks_are_integers_and_axes_have_units(result):
    for draw in (draw_peak_memory, draw_throughput):
        fig = draw(enriched(result))
        ax = fig.axes[0]
        labels = _labels(ax.xaxis)
        assert labels and all(label.isdigit() for label in labels), labels
        assert "(" in ax.get_ylabel() and ")" in ax.get_ylabel()  # a unit on the axis
    through = draw_throughput(result).axes[0]
    assert _labels(through.xaxis)[:4] == ["1", "2", "4", "8"]
    memory = draw_peak_memory(enriched(result)).axes[0]
    assert "predicted peak" in [line.get_label() for line in memory.get_lines()]


def test_utilization_is_a_mean_with_spread_per_batch_not_a_joined_line(result):
    fig = draw_utilization(enriched(result))
    (ax,) = fig.axes
    assert ax.get_ylabel() == "cpu (%)"
    assert all(line.get_linestyle() in ("None", "") for line in ax.get_lines()
               if len(line.get_xdata()) > 2)  # markers only: no zig-zag joining batch sizes
    assert ax.containers, "error bars for the spread"
    assert draw_utilization(result) is None  # no sampler: no figure


def test_roofline_labels_do_not_collide(result):
    close = [(math.log10(1 + b / 100), math.log10(b)) for b in (64, 70, 76, 83, 91)]
    kept = non_overlapping(close, min_gap=0.05)
    assert 0 in kept and 4 in kept and len(kept) < 5
    for i in kept:
        for j in kept:
            if i < j:
                assert math.dist(close[i], close[j]) >= 0.05
    fig = draw_roofline(enriched(result))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "achieved compute (GFLOP/s)"
    assert fig.axes[1].get_ylabel() == "batch size"  # the colour bar says what colour means
    assert draw_roofline(result) is None

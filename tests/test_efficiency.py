"""Roofline figures per batch size: FLOPs/bytes on meta, measured time, measured ceilings."""

from __future__ import annotations

import dataclasses
import json

import pytest

import batchprof
from batchprof.probe import TimingPolicy
from batchprof.records import Measurement
from batchprof.roofline.ceilings import Ceilings
from batchprof.roofline.costs import step_costs
from batchprof.roofline.efficiency import ROOFLINE_COLUMNS, annotate_roofline

from .helpers import tiny_workload

# Fixed ceilings: the arithmetic below is checked by hand, not against a noisy measurement.
CEILINGS = Ceilings(device="cpu", device_name="test", method="torch-reference",
                    bandwidth_gbps={"copy": 10.0, "triad": 8.0},
                    flops_per_s={"float32": 1e11}, sizes={}, raw_times_s={}, num_threads=1)


def test_step_costs_counts_matmul_flops_exactly():
    w = tiny_workload(width=64)
    c = step_costs(w, 16)
    # Two linears (64->64, 64->4): forward 2*b*in*out each; backward: grad-input for the
    # second only (the first's input needs no grad) + grad-weight for both.
    fwd = 2 * 16 * 64 * 64 + 2 * 16 * 64 * 4
    bwd = (2 * 16 * 64 * 4) + (2 * 16 * 64 * 64 + 2 * 16 * 64 * 4)
    assert c.flops == fwd + bwd
    assert c.bytes_moved > 0 and c.dtype == "float32"
    assert step_costs(w, 32).flops == 2 * c.flops


def test_annotate_roofline_adds_columns_to_feasible_probes_only():
    w = tiny_workload(width=64)
    m = batchprof.measure(w, 16, timing=TimingPolicy(timed_steps=3))
    infeasible = dataclasses.replace(m, batch_size=4096, feasible=False, step_times_s=())
    annotated, untouched = annotate_roofline(w, [m, infeasible], CEILINGS)
    assert untouched == infeasible
    assert set(ROOFLINE_COLUMNS) <= set(annotated.to_dict()["extra"])  # JSON: flat, as before
    point = annotated.roofline
    c = step_costs(w, 16)
    median = m.step_time_median_s
    assert point.achieved_flops_per_s == pytest.approx(c.flops / median)
    assert point.mfu_pct == pytest.approx(100 * c.flops / median / 1e11)
    assert point.mfu_spec_pct is None  # no GPU: unavailable, not 0
    ridge = 1e11 / 10e9
    intensity = c.flops / c.bytes_moved
    assert point.bound == ("compute" if intensity >= ridge else "memory")
    assert point.roofline_step_time_s == pytest.approx(
        max(c.flops / 1e11, c.bytes_moved / 10e9))
    assert annotated.to_row()["mfu_pct"] == point.mfu_pct


def test_roofline_point_round_trips_through_the_measurements_json():
    w = tiny_workload(width=64)
    m = batchprof.measure(w, 8, timing=TimingPolicy(timed_steps=3))
    m = dataclasses.replace(m, extra={"resumed_from_log": True})
    (annotated,) = annotate_roofline(w, [m], CEILINGS)
    d = json.loads(json.dumps(annotated.to_dict()))
    assert "roofline" not in d  # the figures stay where they were: flat in "extra"
    assert d["extra"] == {"resumed_from_log": True, **annotated.roofline.to_dict()}
    back = Measurement.from_dict(d)
    assert back == annotated and back.extra == {"resumed_from_log": True}
    assert Measurement.from_dict(m.to_dict()).roofline is None

"""batchprof.predict on the real CPU backend: predicted vs measured, the affine model, max batch.

CPU calibration here runs at (2, 4); the compared sizes (3, 6) are not calibration sizes.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from batchprof import ConfigError, TraceError, Workload
from batchprof.prediction import Prediction, Predictor, predict, predict_max_batch
from batchprof.prediction.model import AffineTrace, Curve
from batchprof.prediction.overheads import DEFAULT_CUBLAS_WORKSPACE_BYTES
from batchprof.probe import TimingPolicy, measure
from batchprof.workloads import BUILTINS

CALIBRATION_SIZES = (2, 4)
COMPARED_SIZES = (3, 6)
TOLERANCE = 0.03
ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0)
MiB = 1024 * 1024


@pytest.fixture(scope="module", params=sorted(BUILTINS))
def builtin_predictions(request) -> tuple[str, list[Prediction]]:
    name = request.param
    return name, predict(name, COMPARED_SIZES, "cpu", calibration_sizes=CALIBRATION_SIZES)


def test_cpu_prediction_matches_measurement_at_non_calibration_sizes(builtin_predictions):
    name, predictions = builtin_predictions
    for p in predictions:
        assert p.batch_size not in CALIBRATION_SIZES
        m = measure(name, p.batch_size, timing=ONE_STEP)
        error = (p.peak_allocated_bytes - m.peak_allocated_bytes) / m.peak_allocated_bytes
        assert abs(error) <= TOLERANCE, (name, p.batch_size, p.peak_allocated_bytes,
                                         m.peak_allocated_bytes)
        assert p.peak_reserved_bytes == p.peak_allocated_bytes  # no caching on the CPU


def test_prediction_record_is_complete_and_serializable(builtin_predictions):
    _name, predictions = builtin_predictions
    for p in predictions:
        assert sum(p.by_category.values()) == p.peak_allocated_bytes
        assert p.traced_peak_bytes + p.calibration_bytes == p.peak_allocated_bytes
        assert len(p.top_modules) <= 10
        assert [b for _, b in p.top_modules] == sorted((b for _, b in p.top_modules),
                                                       reverse=True)
        assert p.calibration is not None and p.calibration.batch_sizes == CALIBRATION_SIZES
        assert json.loads(json.dumps(p.to_dict()))["batch_size"] == p.batch_size
        with pytest.raises(AttributeError):
            p.batch_size = 1  # frozen


def test_calibration_reports_measured_against_predicted_at_its_sizes(builtin_predictions):
    name, predictions = builtin_predictions
    points = predictions[0].calibration.points
    assert [pt.batch_size for pt in points] == list(CALIBRATION_SIZES)
    for pt in points:
        # The calibrated prediction reproduces each calibration size exactly.
        assert pt.corrected_peak_bytes + predictions[0].calibration.residual.at(
            pt.batch_size) == pt.measured_peak_bytes, name


def test_affine_model_is_exact_against_direct_traces():
    predictor = Predictor("transformer", "cpu", calibrate=False)
    assert predictor.affine is not None and predictor.fit_error == 0.0
    for b in (5, 13, 40):
        direct = AffineTrace.constant(predictor.trace(b)).cpu_peak_bytes(b)
        assert predictor.affine.cpu_peak_bytes(b) == direct
        assert predictor.peaks(b).allocated == direct


def test_small_sizes_below_the_anchors_are_traced_directly():
    p1, p8 = predict("mlp", [1, 8], "cpu", calibrate=False)
    assert p1.fit.method == "traced" and p8.fit.method == "affine"
    assert p1.fit.anchors == (2, 4)


def test_predicted_max_batch_is_the_edge_of_the_predicted_curve():
    predictor = Predictor("mlp", "cpu", calibrate=False)
    capacity = predictor.capacity_peak(37)
    assert predictor.max_batch(capacity) == 37
    assert predictor.max_batch(capacity - 1) == 36
    assert predictor.max_batch(predictor.capacity_peak(1) - 1) is None


def test_predicted_max_batch_is_the_measured_max_batch_on_the_cpu():
    capacity = Predictor("mlp", "cpu", calibrate=False).capacity_peak(37)
    best = predict_max_batch("mlp", capacity, "cpu", calibration_sizes=CALIBRATION_SIZES)
    assert best is not None
    assert measure("mlp", best, memory_limit=capacity, timing=ONE_STEP).feasible
    assert not measure("mlp", best + 1, memory_limit=capacity, timing=ONE_STEP).feasible


def test_data_dependent_workload_raises_trace_error_naming_the_op():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            h = self.lin(x)
            keep = torch.nonzero(h.sum(dim=1) > 0).flatten()  # data-dependent shape
            return h.index_select(0, keep)

    w = Workload("gated", Gate, lambda b, d: torch.ones(b, 8, device=d),
                 lambda m, x: m(x).sum())
    with pytest.raises(TraceError, match="aten.nonzero") as info:
        predict(w, [4], "cpu", calibrate=False)
    assert info.value.op_name == "aten.nonzero.default"
    with pytest.raises(TraceError):
        predict_max_batch(w, 10**9, "cpu", calibrate=False)


def test_cuda_prediction_adds_cublas_workspaces_per_gpu():
    a100, h100 = (predict("mlp", [8], "cuda", gpu=g)[0] for g in ("A100-40GB", "H100-80GB"))
    assert a100.by_category["workspace"] == 2 * DEFAULT_CUBLAS_WORKSPACE_BYTES  # 512-aligned
    assert h100.by_category["workspace"] == 2 * 32 * MiB
    assert a100.peak_reserved_bytes >= a100.peak_allocated_bytes
    assert a100.peak_reserved_bytes % (2 * MiB) == 0  # whole segments
    assert a100.capacity_bytes < 40 * 1024 * MiB and a100.fits
    assert a100.calibration is None and any("not calibrated" in n for n in a100.notes)


def test_cuda_prediction_is_lower_than_cpu_for_dropout_and_attention():
    cpu = predict("transformer", [16], "cpu", calibrate=False)[0]
    cuda = predict("transformer", [16], "cuda", gpu="A100-80GB")[0]
    assert cuda.activation_bytes < cpu.activation_bytes  # bool masks, fused attention
    assert cuda.corrections["sdpa_cuda_fused"] > 0 and cuda.corrections["dropout_cuda_native"] > 0


def test_cuda_max_batch_grows_with_the_gpu():
    t4 = predict_max_batch("transformer", 15 * 1024 * MiB, "cuda", gpu="T4-16GB")
    h100 = predict_max_batch("transformer", 79 * 1024 * MiB, "cuda", gpu="H100-80GB")
    assert t4 is not None and h100 is not None and h100 > 4 * t4


@pytest.mark.parametrize("call, message", [
    (lambda: predict("mlp", [], "cpu"), "empty"),
    (lambda: predict("mlp", [0], "cpu"), "positive"),
    (lambda: predict("mlp", [2], "tpu"), "target"),
    (lambda: predict("mlp", [2], "cpu", gpu="H100-80GB"), "cuda"),
    (lambda: predict("mlp", [2], "cuda", gpu="Z100"), "unknown GPU"),
    (lambda: predict_max_batch("mlp", 0, "cpu"), "capacity"),
    (lambda: predict("mlp", [2], "cpu", device_for_calibration="cuda"), "device type"),
])
def test_bad_input_raises_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_curve_is_exact_at_its_points_and_linear_beyond():
    curve = Curve.through([(1, 10.0), (2, 30.0), (4, 50.0)])
    assert [curve.at(b) for b in (1, 2, 3, 4, 8)] == [10, 30, 40, 50, 90]
    assert curve.at(0) == -10  # first segment extended below
    assert Curve.through([(4, 40.0)], through_origin=True).at(8) == 80
    assert Curve.through([(4, 40.0)]).at(8) == 40


@pytest.mark.gpu
def test_cuda_prediction_matches_cuda_measurement():
    """On a CUDA device: uncalibrated predict(target="cuda") vs measure(device="cuda")."""
    from batchprof.gpus import match_gpu

    props = torch.cuda.get_device_properties(0)
    gpu = match_gpu(torch.cuda.get_device_name(0), props.total_memory)
    for name in ("mlp", "transformer"):
        for b in (8, 32):
            p = predict(name, [b], "cuda", gpu=gpu, calibrate=False)[0]
            m = measure(name, b, device="cuda", timing=ONE_STEP)
            error = (p.peak_allocated_bytes - m.peak_allocated_bytes) / m.peak_allocated_bytes
            assert abs(error) <= TOLERANCE, (name, b, p.peak_allocated_bytes,
                                             m.peak_allocated_bytes)



def test_trace_alone_on_the_cpu_says_which_kernels_it_cannot_see():
    """oneDNN convolutions and RNNs allocate scratch inside the kernel: a trace-alone CPU
    prediction of a model with them says so; one of a model without them does not."""
    cnn, mlp = (predict(n, [4], "cpu", calibrate=False)[0] for n in ("cnn", "mlp"))
    assert any("convolution_backward kernels allocate scratch" in n for n in cnn.notes)
    assert not any("scratch" in n for n in mlp.notes)

"""Prediction accuracy and speed.

    pytest benches/bench_predict.py --benchmark-only -s

``test_cpu_predicted_vs_measured``: every built-in workload, predicted (meta trace +
calibration at the default sizes 1, 2, 4, 8) vs measured (``batchprof.measure`` on the CPU)
``peak_allocated_bytes`` at 8 batch sizes that are not calibration sizes. Target (issue 4):
median |error| <= 1%, max <= 3%. The table goes to stdout and to ``extra_info``.

``test_gpt2_small_curve``: the predicted curve at 16 batch sizes (1..512) of a GPT-2-small-sized
transformer (124M parameters, sequence 1024) for an H100, from three meta traces (two anchors
and a check) and 16 allocator replays. Target: under 5 s, no real activation memory (the
process RSS grows by far less than one real activation tensor at batch 512). The cold time
includes PyTorch's one-time import of its Python meta kernels (torch._dynamo, ~2.5 s here).
"""

from __future__ import annotations

import statistics
import time

import psutil
import pytest

from batchprof.prediction import Prediction, predict
from batchprof.prediction.predictor import DEFAULT_CALIBRATION_SIZES, Predictor
from batchprof.probe import TimingPolicy, measure
from batchprof.units import format_bytes
from batchprof.workloads import BUILTINS
from batchprof.workloads.transformer import GPTConfig, make_workload

COMPARED_SIZES = (3, 6, 12, 16, 24, 32, 48, 64)
MEDIAN_TARGET, MAX_TARGET = 0.01, 0.03
GPT2_SMALL = GPTConfig(vocab_size=50257, seq_len=1024, n_layer=12, n_head=12, d_model=768,
                       dropout=0.1)
CURVE_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CURVE_TARGET_S = 5.0
MiB = 1024 * 1024


def _predict_all() -> dict[str, list[Prediction]]:
    return {name: predict(name, COMPARED_SIZES, "cpu") for name in sorted(BUILTINS)}


def test_cpu_predicted_vs_measured(benchmark):
    assert not set(COMPARED_SIZES) & set(DEFAULT_CALIBRATION_SIZES)
    predictions = benchmark.pedantic(_predict_all, rounds=1, iterations=1)
    rows, errors = [], []
    one_step = TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0)
    for name, preds in predictions.items():
        for p in preds:
            m = measure(name, p.batch_size, timing=one_step)
            error = (p.peak_allocated_bytes - m.peak_allocated_bytes) / m.peak_allocated_bytes
            errors.append(abs(error))
            rows.append({"workload": name, "batch_size": p.batch_size,
                         "predicted_bytes": p.peak_allocated_bytes,
                         "measured_bytes": m.peak_allocated_bytes,
                         "traced_bytes": p.traced_peak_bytes, "error": error,
                         "trace_only_error": (p.traced_peak_bytes - m.peak_allocated_bytes)
                         / m.peak_allocated_bytes})
    median, worst = statistics.median(errors), max(errors)
    calibration = {name: [pt.to_dict() for pt in preds[0].calibration.points]
                   for name, preds in predictions.items()}
    benchmark.extra_info.update({"rows": rows, "median_abs_error": median,
                                 "max_abs_error": worst, "calibration": calibration,
                                 "calibration_sizes": list(DEFAULT_CALIBRATION_SIZES)})
    print(f"\n{'workload':<12} {'batch':>5} {'predicted':>12} {'measured':>12} {'error':>9} "
          f"{'trace only':>10}")
    for r in rows:
        print(f"{r['workload']:<12} {r['batch_size']:>5} {r['predicted_bytes']:>12,} "
              f"{r['measured_bytes']:>12,} {r['error']:>+9.3%} {r['trace_only_error']:>+10.2%}")
    print(f"median |error| {median:.4%}, max |error| {worst:.4%} over {len(rows)} points "
          f"(calibration sizes {list(DEFAULT_CALIBRATION_SIZES)})")
    assert median <= MEDIAN_TARGET and worst <= MAX_TARGET


def _gpt2_curve() -> list[Prediction]:
    return predict(make_workload(GPT2_SMALL, name="gpt2-small"), CURVE_SIZES, "cuda",
                   gpu="H100-80GB", calibrate=False)


@pytest.fixture(scope="module")
def cold_curve() -> tuple[float, int, list[Prediction]]:
    """The first curve in this process, timed (cold), and the RSS growth it caused."""
    process = psutil.Process()
    before = process.memory_info().rss
    started = time.perf_counter()
    curve = _gpt2_curve()
    return time.perf_counter() - started, process.memory_info().rss - before, curve


def test_gpt2_small_curve(benchmark, cold_curve):
    cold_s, rss_growth, curve = cold_curve
    warm = benchmark.pedantic(_gpt2_curve, rounds=3, iterations=1)
    assert [p.peak_allocated_bytes for p in warm] == [p.peak_allocated_bytes for p in curve]
    params = curve[0].by_category.get("parameter", 0) // 4
    one_activation = 512 * GPT2_SMALL.seq_len * GPT2_SMALL.d_model * 4  # 1.5 GiB at b=512
    predictor = Predictor(make_workload(GPT2_SMALL, name="gpt2-small"), "cuda",
                          gpu="H100-80GB", calibrate=False)
    max_batch = predictor.max_batch(predictor.overheads.usable_capacity_bytes(
        predictor.gpu.memory_bytes))
    benchmark.extra_info.update({
        "cold_s": cold_s, "rss_growth_bytes": rss_growth, "parameters": params,
        "curve": [{"batch_size": p.batch_size, "peak_allocated_bytes": p.peak_allocated_bytes,
                   "peak_reserved_bytes": p.peak_reserved_bytes} for p in curve],
        "fit_error": curve[-1].fit.fit_error, "h100_max_batch": max_batch})
    print(f"\nGPT-2 small ({params / 1e6:.1f}M parameters, seq {GPT2_SMALL.seq_len}) on "
          f"H100-80GB: {len(CURVE_SIZES)} sizes in {cold_s:.2f} s cold, "
          f"{benchmark.stats.stats.mean:.2f} s warm; RSS +{format_bytes(rss_growth)}; "
          f"fit error {curve[-1].fit.fit_error}; predicted max batch {max_batch}")
    for p in curve:
        print(f"  b={p.batch_size:>4}: allocated {format_bytes(p.peak_allocated_bytes):>11}, "
              f"reserved {format_bytes(p.peak_reserved_bytes):>11}")
    assert 123e6 < params < 126e6
    assert rss_growth < one_activation  # nothing the size of a real activation was allocated
    assert cold_s < CURVE_TARGET_S

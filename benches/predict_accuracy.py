"""Prediction accuracy on the CPU target: the zoo (tests/zoo) and the built-ins, measured.

For each workload, at batch sizes no calibration uses (default 3, 6, 12; calibration runs at
1, 2, 4, 8), prints the predicted peak (calibrated, and the trace alone with calibrate=False)
and activation bytes against ``batchprof.measure`` on the CPU, then the summary the issue asks
for (median / max absolute error, failures). Run from the repository root:

    .venv/bin/python benches/predict_accuracy.py [--sizes 3,6,12] [--only gpt2,vit] [--no-zoo]

Not collected by pytest (no test_/bench_ prefix): it takes minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import batchprof  # noqa: E402
from batchprof.probe import TimingPolicy  # noqa: E402

ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0)
BUILTINS = ("mlp", "cnn", "transformer", "lstm")


def workloads(only: list[str] | None, zoo: bool) -> list[batchprof.Workload]:
    out = [batchprof.load_workload(n) for n in BUILTINS if not only or n in only]
    if zoo:
        from tests.zoo import available, variants, zoo_workload

        reason = available()
        if reason:
            raise SystemExit(reason)
        names = [n for n in (only or []) if n not in BUILTINS] or None
        if only and not names:
            return out
        out += [zoo_workload(n, checkpoint=c, autocast=a) for n, c, a in variants(names)]
    return out


def rel(predicted: int, measured: int) -> float:
    return predicted / measured - 1 if measured else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,6,12")
    parser.add_argument("--only", default="")
    parser.add_argument("--no-zoo", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    only = [s for s in args.only.split(",") if s] or None
    rows, failures = [], []
    print(f"{'workload':28s} {'b':>3s} {'measured':>11s} {'calibrated':>10s} {'trace':>8s} "
          f"{'act':>8s} {'path':>6s}  s")
    for w in workloads(only, not args.no_zoo):
        started = time.perf_counter()
        try:
            calibrated = batchprof.predict(w, sizes, "cpu")
            traced = batchprof.predict(w, sizes, "cpu", calibrate=False)
        except Exception as exc:  # a failure is a result here: count it and go on
            failures.append(f"{w.name}: {type(exc).__name__}: {exc}")
            print(f"{w.name:28s} FAILED {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        for b, pc, pt in zip(sizes, calibrated, traced, strict=True):
            m = batchprof.measure(w, batch_size=b, device="cpu", timing=ONE_STEP)
            row = (w.name, b, rel(pc.peak_allocated_bytes, m.peak_allocated_bytes),
                   rel(pt.peak_allocated_bytes, m.peak_allocated_bytes),
                   rel(pc.activation_bytes, m.activation_bytes),
                   "real" if any("real step" in n for n in pc.notes) else "trace")
            rows.append(row)
            print(f"{w.name:28s} {b:3d} {m.peak_allocated_bytes:11d} {row[2]:+10.2%} "
                  f"{row[3]:+8.2%} {row[4]:+8.2%} {row[5]:>6s}  "
                  f"{time.perf_counter() - started:.0f}", flush=True)
    print()
    for label, col in (("calibrated peak", 2), ("trace alone (calibrate=False) peak", 3),
                       ("calibrated activation bytes", 4)):
        errors = [abs(r[col]) for r in rows]
        if errors:
            print(f"{label:36s} median {statistics.median(errors):.2%}  max {max(errors):.2%}  "
                  f"({len(errors)} points)")
    print(f"prediction failures: {len(failures)}")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``batchprof predict``: peak memory per batch size from a meta-device trace, no real run.

A table per batch size (peak allocated / reserved, activations, what calibration added), the
bytes by category at each peak, and the modules holding the most activation bytes; with --gpu,
whether each size fits and the predicted max batch for that GPU.
"""

from __future__ import annotations

import argparse
import json

from batchprof.cli.args import add_json_argument, add_workload_argument, workload_ref
from batchprof.errors import ConfigError

# = batchprof.workloads.DEFAULT_WORKLOAD (not imported: that loads torch at parse time).
DEFAULT_WORKLOAD = "transformer"


DEFAULT_BATCH_SIZES = "1,8,64,512"


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]``; ConfigError naming the bad part otherwise."""
    sizes = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part.isdigit() or int(part) <= 0:
            raise ConfigError(f"--batch-sizes must be comma-separated positive integers, "
                              f"e.g. 1,8,64,512; got {text!r} (bad part: {part!r})")
        sizes.append(int(part))
    return sizes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict peak memory per batch size without running the step",
        description="Trace one training step on the meta device (no memory, no compute), "
                    "replay its allocations through the CPU allocator or PyTorch's CUDA "
                    "caching allocator, and report the peak per batch size by category and "
                    "the modules holding the most activations. On the CPU a few real steps at "
                    "small sizes calibrate bytes no trace sees (--no-calibrate skips them).")
    add_workload_argument(p, positional=True, default=DEFAULT_WORKLOAD)
    p.add_argument("--batch-sizes", "-b", default=DEFAULT_BATCH_SIZES, metavar="LIST",
                   help=f"comma-separated batch sizes (default {DEFAULT_BATCH_SIZES})")
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu",
                   help="allocator to predict for (default cpu)")
    p.add_argument("--gpu", default=None, metavar="NAME",
                   help="a GPU from `batchprof plan` (e.g. H100-80GB): its cuBLAS workspace, "
                        "attention kernels and usable memory; implies --target cuda")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the calibration steps (trace only)")
    add_json_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console) -> int:
    from batchprof.prediction.predictor import Predictor

    sizes = parse_batch_sizes(args.batch_sizes)
    target = "cuda" if args.gpu else args.target
    predictor = Predictor(workload_ref(args), target, gpu=args.gpu,
                          calibrate=not args.no_calibrate, check_sizes=[max(sizes)])
    predictions = [predictor.predict(b) for b in sizes]
    max_batch = None
    if predictor.gpu is not None:
        max_batch = predictor.max_batch(predictions[0].capacity_bytes)
    if args.json:
        console.print_json(json.dumps({"predictions": [p.to_dict() for p in predictions],
                                       "max_batch": max_batch}))
        return 0
    for renderable in _tables(predictions, max_batch):
        console.print(renderable)
    return 0


def _tables(predictions, max_batch):
    from rich.table import Table
    from rich.text import Text

    from batchprof.units import format_bytes

    first = predictions[0]
    where = first.gpu or first.target
    summary = Table(title=f"{first.workload}: predicted peak memory per step on {where}")
    for name in ("batch", "peak allocated", "peak reserved", "activations", "calibration",
                 "method"):
        summary.add_column(name, justify="right" if name != "method" else "left")
    if first.capacity_bytes is not None:
        summary.add_column("fits", justify="center")
    for p in predictions:
        row = [str(p.batch_size), format_bytes(p.peak_allocated_bytes),
               format_bytes(p.peak_reserved_bytes), format_bytes(p.activation_bytes),
               format_bytes(p.calibration_bytes) if p.calibration else "n/a", p.fit.method]
        if p.capacity_bytes is not None:
            row.append("yes" if p.fits else "no")
        summary.add_row(*row)
    yield summary

    categories = sorted({c for p in predictions for c in p.by_category})
    by_category = Table(title="bytes live at the peak, by category")
    by_category.add_column("category")
    for p in predictions:
        by_category.add_column(f"b={p.batch_size}", justify="right")
    for c in categories:
        by_category.add_row(c, *(format_bytes(p.by_category.get(c, 0)) for p in predictions))
    yield by_category

    last = predictions[-1]
    modules = Table(title=f"top modules by activation bytes at b={last.batch_size}")
    modules.add_column("module")
    modules.add_column("activations", justify="right")
    modules.add_column("share", justify="right")
    for name, nbytes in last.top_modules:
        share = f"{nbytes / last.activation_bytes:.0%}" if last.activation_bytes else "n/a"
        modules.add_row(name, format_bytes(nbytes), share)
    yield modules

    lines = []
    if first.capacity_bytes is not None:
        lines.append(f"{first.gpu}: {format_bytes(first.capacity_bytes)} usable (total minus "
                     f"an estimated CUDA context); predicted max batch: "
                     f"{max_batch if max_batch is not None else 'none (batch 1 does not fit)'}")
    if first.corrections:
        lines.append("kernel-path corrections: " + ", ".join(
            f"{k} x{v}" for k, v in sorted(first.corrections.items())))
    if first.fit.fit_error is not None:
        lines.append(f"batch-affine model: anchors {list(first.fit.anchors)}, checked at "
                     f"b={first.fit.check_batch_size}, fit error {first.fit.fit_error:.2%}")
    if first.calibration is not None:
        lines.append("calibration (measured vs predicted before the residual): " + "; ".join(
            f"b={pt.batch_size}: {format_bytes(pt.measured_peak_bytes)} vs "
            f"{format_bytes(pt.corrected_peak_bytes)}" for pt in first.calibration.points))
    lines.extend(first.notes)
    yield Text("\n".join(lines))

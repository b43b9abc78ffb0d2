"""``batchprof predict`` and ``batchprof plan``: predictions as rich tables."""

from __future__ import annotations

from typing import Any

_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")


def prediction_tables(predictions, max_batch):
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


def plan_tables(workload: str, rows: list[dict[str, Any]]) -> list[Any]:
    """``batchprof plan``: predicted max batch per GPU, the GPUs' datasheet figures, notes."""
    from rich.table import Table
    from rich.text import Text

    from batchprof.units import format_bytes

    fit = Table(title=f"{workload}: predicted max batch per GPU (training step)")
    for name in ("GPU", "usable memory", "max batch", "peak allocated", "peak reserved"):
        fit.add_column(name, justify="left" if name == "GPU" else "right")
    for row in rows:
        fit.add_row(row["gpu"]["name"], format_bytes(row["usable_bytes"]),
                    str(row["max_batch"]) if row["max_batch"] is not None else "none",
                    format_bytes(row["peak_allocated_bytes"]),
                    format_bytes(row["peak_reserved_bytes"]))
    out: list[Any] = [fit]
    specs = Table(title="GPUs: memory, bandwidth, dense TFLOP/s per dtype")
    for name in ("GPU", "memory", "bandwidth", *_DTYPES):
        specs.add_column(name, justify="left" if name == "GPU" else "right")
    for row in rows:
        gpu = row["gpu"]
        flops = gpu["dense_flops"]
        specs.add_row(gpu["name"], format_bytes(gpu["memory_bytes"]),
                      f"{gpu['bandwidth_gbps']:,.0f} GB/s",
                      *(f"{flops[d] / 1e12:,.1f}" if d in flops else "n/a" for d in _DTYPES))
    out.append(specs)
    out.append(Text("usable = total minus an estimated CUDA context; the peak is PyTorch's "
                    "caching-allocator reserved bytes (cuBLAS workspaces included, cuDNN "
                    "workspaces not). FLOP/s: vendor datasheets, dense."))
    notes = sorted({n for row in rows for n in row["notes"]})
    for note in notes:
        out.append(Text(note))
    return out

"""Recorded GPU figures: ``tests/data/gpu/<gpu>-<date>.json`` is a gpu-check.json from a real
GPU run, kept so later changes to the prediction are checked against measured GPU numbers on a
machine without a GPU (tests/test_gpu_check.py). To add one: run the check on the GPU, then
``cp $OUT/gpu-check.json tests/data/gpu/$(python3 -c ...record_name...)`` (the md names it).

``recheck(report)`` rebuilds each predicted row's workload from its spec and predicts it again
*uncalibrated* (calibration needs the device; the trace and the allocator model do not), so the
figure compared is what the model alone says now vs what the GPU measured then.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .lib import ROOT

RECORD_DIR = ROOT / "tests" / "data" / "gpu"
PREDICT_PARTS = ("predict-builtins", "predict-gpt2", "predict-timm")


def record_name(report: dict[str, Any]) -> str | None:
    """``h200-141gb-2026-12-02.json`` for a GPU run; None for a dry run or without a GPU."""
    gpu = (report.get("environment") or {}).get("gpu")
    if report.get("dry_run") or not gpu:
        return None
    table = next((p["figures"]["gpu"].get("table_entry") for p in report.get("parts", [])
                  if isinstance(p.get("figures", {}).get("gpu"), dict)), None)
    slug = re.sub(r"[^a-z0-9]+", "-", (table or gpu).lower()).strip("-")
    return f"{slug}-{report['started_at'][:10]}.json"


def load_records(directory: Path = RECORD_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """Every GPU record in ``directory`` (dry runs are refused: they are not GPU figures)."""
    records = []
    for path in sorted(directory.glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("dry_run"):
            raise ValueError(f"{path} is a dry run (CPU figures), not a GPU record; remove it")
        records.append((path, report))
    return records


def prediction_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(target, row) for each uncalibrated row with both a measured and a predicted peak."""
    rows = []
    for part in report.get("parts", []):
        if part.get("part") not in PREDICT_PARTS:
            continue
        target = part.get("figures", {}).get("target", "cuda")
        rows += [(target, r) for r in part.get("rows", []) if not r.get("calibrated")
                 and r.get("measured_allocated_bytes") and r.get("predicted_allocated_bytes")]
    return rows


def gpu_table_entry(report: dict[str, Any]) -> str | None:
    for part in report.get("parts", []):
        gpu = part.get("figures", {}).get("gpu")
        if isinstance(gpu, dict) and gpu.get("table_entry"):
            return gpu["table_entry"]
    return None


def recheck(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each recorded uncalibrated row predicted again now, with both errors vs measured."""
    import batchprof

    from .common import pct_error
    from .workloads import build

    gpu = gpu_table_entry(report)
    out = []
    for target, row in prediction_rows(report):
        (p,) = batchprof.predict(build(row["spec"]), [row["batch_size"]], target=target,
                                 gpu=gpu if target == "cuda" else None, calibrate=False)
        out.append({"workload": row["workload"], "batch_size": row["batch_size"],
                    "target": target,
                    "recorded_allocated_bytes": row["predicted_allocated_bytes"],
                    "now_allocated_bytes": p.peak_allocated_bytes,
                    "recorded_reserved_bytes": row["predicted_reserved_bytes"],
                    "now_reserved_bytes": p.peak_reserved_bytes,
                    "recorded_allocated_error_pct": row["allocated_error_pct"],
                    "now_allocated_error_pct": pct_error(p.peak_allocated_bytes,
                                                         row["measured_allocated_bytes"]),
                    "recorded_reserved_error_pct": row["reserved_error_pct"],
                    "now_reserved_error_pct": pct_error(p.peak_reserved_bytes,
                                                        row["measured_reserved_bytes"])})
    return out

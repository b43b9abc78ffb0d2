"""Parts about memory: predicted vs measured peaks, the max batch (CLI + exhaustive check),
OOM recovery, GPT-2 small's max batch. Each is ``part(rec)`` over a Recorder (record.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import common, lib
from .record import Recorder
from .workloads import GPT2_SMALL, GPT2_TINY, VIT_BASE, VIT_TINY, build, spec_name

# (spec, batch sizes) per part; the dry run uses tiny shapes on the CPU.
PREDICT_SETS: dict[str, dict[bool, list[tuple[dict[str, Any], list[int]]]]] = {
    "builtins": {
        False: [({"kind": "builtin", "name": "mlp"}, [64, 512, 4096]),
                ({"kind": "builtin", "name": "cnn"}, [16, 128, 512]),
                ({"kind": "builtin", "name": "transformer"}, [8, 64, 256]),
                ({"kind": "builtin", "name": "lstm"}, [8, 64, 256])],
        True: [({"kind": "builtin", "name": "gpucheck.workloads:tiny_wide"}, [1, 2, 4])],
    },
    "gpt2": {False: [(GPT2_SMALL, [1, 4, 8])], True: [(GPT2_TINY, [1, 2, 4])]},
    "timm": {False: [(VIT_BASE, [8, 32, 64])], True: [(VIT_TINY, [1, 2, 4])]},
}
DRY_CALIBRATION_SIZES = (1, 2)  # the CPU calibration's real steps, kept few in the dry run


def _gpu_name(rec: Recorder) -> str | None:
    if rec.dry_run:
        return None
    identity = common.gpu_identity()
    rec.figure("gpu", identity)
    return identity["table_entry"]


def predictions(rec: Recorder, which: str) -> None:
    """Measured vs predicted peak (allocated and reserved), with and without calibration."""
    import batchprof

    dev = common.device(rec.dry_run)
    gpu = _gpu_name(rec)
    rec.figure("target", dev)
    rec.figure("goal_pct", {"allocated": common.GOAL_ALLOCATED_PCT,
                            "reserved": common.GOAL_RESERVED_PCT})
    for base, sizes in PREDICT_SETS[which][rec.dry_run]:
        for dtype in ("fp32", "bf16"):
            spec = {**base, "dtype": dtype}
            name = spec_name(spec)
            workload = None
            with rec.attempt(f"{name}: build"):
                workload = build(spec)
            if workload is None:
                continue  # the build failed (recorded with its message); nothing to measure
            measured: dict[int, Any] = {}
            backend = batchprof.make_backend(dev, 2 * common.GIB if rec.dry_run else None)
            for b in sizes:
                with rec.attempt(f"{name}: measure batch {b}"):
                    measured[b] = batchprof.measure(workload, b, backend=backend,
                                                    timing=common.quick_timing())
            for calibrated in (False, True):
                extra = {"calibration_sizes": DRY_CALIBRATION_SIZES} if rec.dry_run else {}
                predicted: dict[int, Any] = {}
                with rec.attempt(f"{name}: predict (calibrate={calibrated})"):
                    predicted = {p.batch_size: p for p in batchprof.predict(
                        workload, sizes, target=dev, gpu=gpu, calibrate=calibrated, **extra)}
                for b in sizes:  # measured figures are kept even when the prediction failed
                    _compare(rec, spec, b, predicted.get(b), measured.get(b), calibrated)


def _compare(rec: Recorder, spec: dict[str, Any], b: int, p: Any, m: Any,
             calibrated: bool) -> None:
    def get(record: Any, name: str) -> Any:
        return None if record is None else getattr(record, name)

    alloc_err = common.pct_error(get(p, "peak_allocated_bytes"), get(m, "peak_allocated_bytes"))
    res_err = common.pct_error(get(p, "peak_reserved_bytes"), get(m, "peak_reserved_bytes"))
    rec.row(workload=spec_name(spec), spec=spec, batch_size=b, calibrated=calibrated,
            measured_feasible=get(m, "feasible"),
            measured_allocated_bytes=get(m, "peak_allocated_bytes"),
            predicted_allocated_bytes=get(p, "peak_allocated_bytes"),
            allocated_error_pct=alloc_err,
            measured_reserved_bytes=get(m, "peak_reserved_bytes"),
            predicted_reserved_bytes=get(p, "peak_reserved_bytes"), reserved_error_pct=res_err,
            measured_resident_bytes=get(m, "resident_bytes"),
            predicted_resident_bytes=get(p, "resident_bytes"),
            traced_peak_bytes=get(p, "traced_peak_bytes"),
            calibration_bytes=get(p, "calibration_bytes"),
            fit_method=None if p is None else p.fit.method,
            corrections=None if p is None else dict(p.corrections),
            notes=None if p is None else list(p.notes))
    label = f"{spec_name(spec)} b={b} {'calibrated' if calibrated else 'uncalibrated'}"
    if not calibrated or p is None or m is None:
        return  # uncalibrated: information (the goal is the full model's); missing: an error
    rec.check(f"{label}: allocated within {common.GOAL_ALLOCATED_PCT:g}%",
              common.within(alloc_err, common.GOAL_ALLOCATED_PCT), f"error {alloc_err}%")
    rec.check(f"{label}: reserved within {common.GOAL_RESERVED_PCT:g}%",
              common.within(res_err, common.GOAL_RESERVED_PCT), f"error {res_err}%")


RUN_SETUP = {False: ("transformer", "8GiB"), True: ("gpucheck.workloads:tiny_wide", "2MiB")}
FRESH_PROBE_RESERVE_S = {False: 30.0, True: 25.0}


def run_exhaustive(rec: Recorder) -> None:
    """``batchprof run`` with a memory limit, then max and max+1 measured in fresh processes."""
    dev = common.device(rec.dry_run)
    workload, limit = RUN_SETUP[rec.dry_run]
    out_dir = Path(rec.path).parent / "run-report"
    argv = [*lib.cli_command(sys.executable), "run", workload, "--device", dev,
            "--memory-limit", limit, "--json", "--no-roofline", "--steps", "2",
            "--out", str(out_dir)]
    rec.figure("command", ["batchprof", *argv[3:]])
    timeout = rec.left_s() - FRESH_PROBE_RESERVE_S[rec.dry_run]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=max(5.0, timeout))
    except subprocess.TimeoutExpired as exc:
        rec.figure("stderr_tail", _tail(exc.stderr))
        raise TimeoutError(f"`batchprof run` did not finish in {timeout:.0f} s") from None
    rec.figure("exit_code", done.returncode)
    rec.figure("stderr_tail", _tail(done.stderr))
    start = done.stdout.find("{")
    if done.returncode != 0 or start < 0:
        raise RuntimeError(f"`batchprof run` exited {done.returncode}: {_tail(done.stderr, 3)}")
    result = json.loads(done.stdout[start:])
    probes = [{k: p.get(k) for k in ("batch_size", "feasible", "reason", "peak_allocated_bytes",
                                     "peak_reserved_bytes")} for p in result.get("probes", [])]
    best = result.get("max_batch")
    for key in ("max_batch", "knee_batch", "recommended_batch", "capacity_bytes",
                "elapsed_s", "notes"):
        rec.figure(key, result.get(key))
    rec.figure("probes", probes)
    if best is None:
        rec.check("the run found a max batch", False, "max_batch is null")
        return
    in_run = [p["feasible"] for p in probes if p["batch_size"] == best + 1]
    rec.check(f"the run itself probed {best + 1} and found it infeasible",
              None if not in_run else not any(in_run),
              "not probed by the run" if not in_run else f"feasible: {in_run}")
    spec = {"kind": "builtin", "name": workload}
    fresh = {}
    for b in (best, best + 1):  # the first gets half of what is left, the second the rest
        fresh[b] = common.measure_in_fresh_process(spec, b, dev, limit,
                                                   (rec.left_s() - 1) / (best + 2 - b))
        rec.figure(f"fresh_process_batch_{b}", fresh[b])
    for b, expect in ((best, True), (best + 1, False)):
        got = fresh[b].get("feasible")  # None: the fresh process failed (the detail says how)
        rec.check(f"batch {b} {'fits' if expect else 'does not fit'} in {limit} "
                  f"(fresh process)", got is expect,
                  fresh[b].get("error") or fresh[b].get("reason") or
                  f"peak reserved {fresh[b].get('peak_reserved_bytes')} bytes")


def _tail(text: Any, lines: int = 12) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


OOM_SETUP = {False: ("transformer", "512MiB", 8192, 50),
             True: ("gpucheck.workloads:tiny_wide", "2MiB", 1024, 5)}


def oom_recovery(rec: Recorder) -> None:
    """Over-budget probes in a row, then memory back where it started."""
    import torch

    import batchprof

    dev = common.device(rec.dry_run)
    name, limit, over, count = OOM_SETUP[rec.dry_run]
    workload = batchprof.load_workload(name)
    backend = batchprof.make_backend(dev, batchprof.parse_bytes(limit))
    cuda = dev == "cuda"
    rec.figure("before_warmup_allocated_bytes", torch.cuda.memory_allocated() if cuda else None)
    # One probe that fits first: library handles and workspaces it creates stay for the
    # process, and they are not what an OOM should give back.
    warm = batchprof.measure(workload, 2, backend=backend, timing=common.quick_timing())
    rec.figure("warmup_probe", common.measurement_figures(warm))
    start = torch.cuda.memory_allocated() if cuda else None
    start_reserved = torch.cuda.memory_reserved() if cuda else None
    rec.figure("setup", {"workload": name, "memory_limit": limit, "batch_size": over,
                         "probes_planned": count})
    rec.figure("start_allocated_bytes", start)
    feasible, reasons, after = [], set(), []
    for _ in range(count):
        if rec.left_s() < 4:
            rec.note(f"stopped after {len(feasible)} probes to stay inside the time box")
            break
        m = batchprof.measure(workload, over, backend=backend, timing=common.quick_timing())
        feasible.append(m.feasible)
        reasons.add((m.reason or "")[:160])
        after.append(torch.cuda.memory_allocated() if cuda else None)
    rec.figure("probes_run", len(feasible))
    rec.figure("reasons", sorted(reasons))
    rec.figure("allocated_after_each_bytes", after)
    rec.check(f"all {len(feasible)} probes at batch {over} were out of budget",
              bool(feasible) and not any(feasible), f"feasible: {sum(feasible)}")
    small = batchprof.measure(workload, 2, backend=backend, timing=common.quick_timing())
    rec.figure("recovery_probe", common.measurement_figures(small))
    rec.check("a small probe fits afterwards", small.feasible, small.reason or "")
    if not cuda:
        rec.check("memory_allocated() back to its start", None,
                  "not judged: torch.cuda.memory_allocated() needs CUDA (dry run on the CPU)")
        return
    end = torch.cuda.memory_allocated()
    rec.figure("end_allocated_bytes", end)
    rec.figure("start_reserved_bytes", start_reserved)
    rec.figure("end_reserved_bytes", torch.cuda.memory_reserved())
    rec.check("memory_allocated() back to its start", end == start,
              f"start {start} bytes, end {end} bytes, difference {end - start}")


GPT2_MAX_SPEC = {False: GPT2_SMALL, True: GPT2_TINY}


def gpt2_max_batch(rec: Recorder) -> None:
    """GPT-2 small (124M, seq 1024): predicted max batch on this device vs the measured one."""
    import torch

    import batchprof

    dev = common.device(rec.dry_run)
    spec = {**GPT2_MAX_SPEC[rec.dry_run], "dtype": "fp32"}
    workload = build(spec)
    gpu = _gpu_name(rec)
    if dev == "cuda":
        # TF32 matmuls: the same tensors (memory unchanged), steps several times faster.
        torch.backends.cuda.matmul.allow_tf32 = True
        rec.note("matmuls in TF32 (torch.backends.cuda.matmul.allow_tf32): memory is unchanged")
    backend = batchprof.make_backend(dev, batchprof.parse_bytes("4MiB") if rec.dry_run else None)
    capacity = backend.capacity_bytes()
    rec.figure("workload", spec_name(spec))
    rec.figure("capacity_bytes", capacity)
    extra = {"calibration_sizes": DRY_CALIBRATION_SIZES} if rec.dry_run else {}
    with rec.attempt("predicted max batch (uncalibrated)"):
        rec.figure("predicted_max_batch_uncalibrated", batchprof.predict_max_batch(
            workload, capacity, target=dev, gpu=gpu, calibrate=False, **extra))
    predicted = rec.data["figures"].get("predicted_max_batch_uncalibrated")
    hint = predicted if predicted is not None else _affine_hint(rec, workload, backend, capacity)
    result = batchprof.profile(
        workload, backend=backend, knee=False, hint=hint, use_prediction=False,
        timing=common.quick_timing(),
        on_probe=lambda m: rec.row(**common.measurement_figures(m)))  # kept if killed
    rec.figure("measured_max_batch", result.max_batch)
    if rec.left_s() > 20:
        with rec.attempt("predicted max batch (calibrated)"):
            rec.figure("predicted_max_batch_calibrated", batchprof.predict_max_batch(
                workload, capacity, target=dev, gpu=gpu, calibrate=True, **extra))
    else:
        rec.note("calibrated prediction skipped: too little of the time box left")
    best = rec.data["figures"].get("predicted_max_batch_calibrated", predicted)
    error = common.pct_error(best, result.max_batch)
    rec.figure("max_batch_error_pct", error)
    rec.check(f"predicted max batch within {common.GOAL_ALLOCATED_PCT:g}% of the measured one",
              common.within(error, common.GOAL_ALLOCATED_PCT),
              f"predicted {best}, measured {result.max_batch} (error {error}%)")


def _affine_hint(rec: Recorder, workload: Any, backend: Any, capacity: int) -> int | None:
    """Without a prediction, seed the search from two measured probes (memory is affine in
    b): a handful of probes instead of a doubling from 1. Only a hint: the search decides."""
    import batchprof

    low, high = (batchprof.measure(workload, b, backend=backend, timing=common.quick_timing())
                 for b in (2, 4))
    if not (low.feasible and high.feasible):
        return None
    slope = (high.peak_reserved_bytes - low.peak_reserved_bytes) / 2
    if slope <= 0:
        return None
    hint = max(1, int((capacity - low.peak_reserved_bytes) / slope) + 2)
    rec.figure("search_hint_from_two_probes", {"batch_sizes": [2, 4], "hint": hint,
                                               "per_sample_reserved_bytes": slope})
    rec.note("no prediction: the search was seeded from two measured probes (affine fit)")
    return hint

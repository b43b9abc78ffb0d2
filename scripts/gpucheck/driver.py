"""The GPU check's driver (stdlib only, so it reports even when torch or batchprof is broken).

    python3 scripts/gpu_check.py OUT [--dry-run] [--only a,b] [--total-s 480]

Installs batchprof into this python (install.py), records the environment, then runs each
part of plan.PART_BUDGETS_S in its own process group, killed at its time box, so a hung or
failing part never stops the others; the whole check stays inside --total-s (the last parts
get what is left, or are recorded as not run). gpu-check.json and gpu-check.md are rewritten
after every part, so an outer kill still leaves everything finished so far. Exit code: 0 when
every part passed or was skipped with a reason, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import install, plan, records, render
from .record import error_entry, write_json

SCRIPTS = Path(__file__).resolve().parents[1]
KILL_GRACE_S = 2.0
DRY_RUN_JOBS = 2
# The dry run checks the kit's logic, not its timing (a shared CI CPU is slower than any GPU
# machine), so its boxes are this much longer; the time boxes themselves are tested directly.
DRY_RUN_BOX_SCALE = 2.0

_ENV_PROBE = """
import json, os, sys
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpu": None, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_total_bytes=int(p.total_memory),
                compute_capability=[p.major, p.minor], device_count=torch.cuda.device_count(),
                allocator=torch.cuda.get_allocator_backend())
try:
    import triton
    info["triton"] = triton.__version__
except Exception as exc:
    info["triton"] = f"unavailable: {type(exc).__name__}: {exc}"
import batchprof
info["batchprof"] = batchprof.__version__
print(json.dumps(info))
"""


def child_env(dry_run: bool, pythonpath: list[str], method: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), *pythonpath,
                                         *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               GPUCHECK_INSTALL=method)
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path, even on a GPU machine
    return env


def run_part(name: str, budget_s: float, out: Path, env: dict[str, str], dry_run: bool,
             argv: list[str] | None = None) -> dict[str, Any]:
    """One part in its own process group; killed (the whole group) at ``budget_s``.
    ``argv`` replaces the part's command (tests time-box a command that hangs)."""
    result_path, log_path = out / "parts" / f"{name}.json", out / "logs" / f"{name}.log"
    argv = argv or [sys.executable, "-m", "gpucheck.part", name, str(result_path),
                    "--budget-s", f"{max(1.0, budget_s - KILL_GRACE_S):.1f}",
                    *(["--dry-run"] if dry_run else [])]
    started = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=install.ROOT, start_new_session=True)
        try:
            child.wait(timeout=budget_s)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the part and anything it started
            child.wait()
            killed = True
    try:
        part = json.loads(result_path.read_text())
    except (OSError, ValueError) as exc:
        part = {"part": name, "status": "error", "figures": {}, "rows": [], "checks": [],
                "errors": [error_entry("driver", exc)], "notes": [],
                "reason": f"the part left no readable result (exit {child.returncode})"}
    if killed:
        part["status"] = "timeout"
        part["reason"] = (f"killed at its {budget_s:.0f} s time box; figures are what it had "
                          f"recorded by then")
    elif part.get("status") == "running":
        part["status"] = "error"
        part["reason"] = f"the part exited ({child.returncode}) without finishing"
    part.update(budget_s=budget_s, elapsed_s=round(time.monotonic() - started, 2),
                exit_code=child.returncode, description=plan.DESCRIPTIONS.get(name, ""),
                log_tail="\n".join(log_path.read_text(errors="replace").splitlines()[-25:]))
    return part


def _environment(env: dict[str, str], budget_s: float) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-c", _ENV_PROBE], capture_output=True,
                              text=True, env=env, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"error": f"environment probe timed out after {budget_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def summarize(report: dict[str, Any], started: float) -> None:
    statuses: dict[str, int] = {}
    for p in report["parts"]:
        statuses[p["status"]] = statuses.get(p["status"], 0) + 1
    report["summary"] = {"elapsed_s": round(time.monotonic() - started, 2),
                         "total_budget_s": report["total_budget_s"], "statuses": statuses,
                         "ok": all(p["status"] in ("passed", "skipped") for p in report["parts"])
                         and report["install"].get("ok", False),
                         "record_name": records.record_name(report)}


def save(report: dict[str, Any], out: Path, started: float) -> None:
    summarize(report, started)
    write_json(out / "gpu-check.json", report)
    (out / "gpu-check.md").write_text(render.markdown(report))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for gpu-check.json/.md (on the GPU: $OUT)")
    p.add_argument("--dry-run", action="store_true",
                   help="the CPU dry run: tiny shapes, CUDA parts skipped with the reason")
    p.add_argument("--only", default=None, metavar="PARTS",
                   help=f"comma-separated parts to run (default: all of {', '.join(plan.PART_BUDGETS_S)})")
    p.add_argument("--total-s", type=float, default=None,
                   help=f"hard limit for the whole check (default {plan.TOTAL_BUDGET_S:.0f}; "
                        f"x{DRY_RUN_BOX_SCALE:g} in a dry run, as is every part's box)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parts at once, dry run only (default 2 there; on a GPU always 1: parts "
                        "sharing the device would disturb each other's memory and timing)")
    args = p.parse_args(argv)
    if args.jobs is not None and (args.jobs < 1 or (args.jobs > 1 and not args.dry_run)):
        p.error(f"--jobs {args.jobs}: only the dry run runs parts at once (1 <= N), "
                "a GPU check runs them one by one")
    args.jobs = args.jobs or (DRY_RUN_JOBS if args.dry_run else 1)
    args.box_scale = DRY_RUN_BOX_SCALE if args.dry_run else 1.0
    args.total_s = args.total_s or plan.TOTAL_BUDGET_S * args.box_scale
    names = list(plan.PART_BUDGETS_S) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in plan.PART_BUDGETS_S]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(plan.PART_BUDGETS_S)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.total_s
    out: Path = args.out
    for sub in ("parts", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "kit_version": 1, "dry_run": args.dry_run, "host": platform.node(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_budget_s": args.total_s, "python_executable": sys.executable,
        "install": {}, "environment": {}, "parts": [], "summary": {}}
    base_env = child_env(args.dry_run, [], "pending")
    report["install"] = install.install(sys.executable, base_env,
                                        min(plan.INSTALL_BUDGET_S, deadline - time.monotonic()),
                                        allow_pip=not args.dry_run)
    method = report["install"]["method"]
    env = child_env(args.dry_run, report["install"]["pythonpath"], method)
    report["environment"] = _environment(env, min(plan.ENVIRONMENT_BUDGET_S,
                                                  max(1.0, deadline - time.monotonic())))
    save(report, out, started)
    lock = threading.Lock()
    done: dict[str, dict[str, Any]] = {}

    def one(name: str) -> None:
        left = deadline - time.monotonic() - plan.FINAL_RESERVE_S
        box = min(plan.PART_BUDGETS_S[name] * args.box_scale, left)
        if not report["install"]["ok"] or box < plan.MIN_PART_S:
            why = ("batchprof could not be installed (see install)" if not report["install"]["ok"]
                   else f"the {args.total_s:.0f} s total was used up ({left:.0f} s left)")
            part = {"part": name, "status": "not-run", "reason": why,
                    "budget_s": plan.PART_BUDGETS_S[name], "elapsed_s": 0.0,
                    "description": plan.DESCRIPTIONS.get(name, ""), "figures": {}, "rows": [],
                    "checks": [], "errors": [], "notes": []}
        else:
            print(f"[gpu-check] {name}: up to {box:.0f} s ...", flush=True)
            part = run_part(name, box, out, env, args.dry_run)
            print(f"[gpu-check] {name}: {part['status']}", flush=True)
        with lock:
            done[name] = part
            report["parts"] = [done[n] for n in args.names if n in done]
            save(report, out, started)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, args.names))
    print("\n".join(render.summary_lines(report)))
    print(f"[gpu-check] wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    return 0 if report["summary"]["ok"] else 1

"""Distributed options of ``run`` / ``measure`` / ``predict`` / ``plan`` (issue 15).

Each of those commands adds ``add_arguments(parser, command)`` and, first thing in its
handler, ``if requested(args): return handle(command, args, console, argv)``:

- ``run`` / ``measure`` with ``--parallel ddp|fsdp`` inside torchrun: every rank probes in
  lockstep (batchprof.distributed); rank 0 alone prints and writes ``probes.jsonl`` (one line
  per probe as it completes) and ``result.json``. ``--nproc-per-node N`` outside torchrun
  re-runs the same command under ``torchrun --standalone --nproc-per-node N``.
- ``predict`` / ``plan`` with ``--world-size N --parallel ddp|fsdp|zero1|zero2``: the per-rank
  prediction (batchprof.distributed.sharding) and, for plan, the per-rank max batch per GPU and
  the global batch it implies.
An inconsistent world (different workloads, a global batch that does not divide) is one line
on rank 0 and exit 2; a rank that died or failed mid-step, one line and exit 3; finished probes
stay in ``probes.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BatchprofError, ConfigError

EXIT_USAGE = 2
EXIT_RANK_FAILED = 3
MEASURED = ("ddp", "fsdp")
PREDICTED = ("ddp", "fsdp", "zero1", "zero2")


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    measured = command in ("run", "measure")
    p.add_argument("--parallel", choices=MEASURED if measured else PREDICTED, default=None,
                   help="data parallelism: every rank runs its own batch of this size"
                        + ("" if measured else " (zero1/zero2: predicted only)"))
    p.add_argument("--grad-accumulation", type=int, default=1, metavar="N",
                   help="micro-steps per optimizer step: global batch = per-rank x world x N")
    if measured:
        p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                       help="start N ranks with torchrun (this machine) and run there")
    else:
        p.add_argument("--world-size", type=int, default=None, metavar="N",
                       help="ranks the model is sharded / replicated over")


def requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) is not None
               for k in ("parallel", "nproc_per_node", "world_size"))


def _strip_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        out.append(a)
    return out


def handle(command: str, args: argparse.Namespace, console: Any,
           argv: Sequence[str] | None = None) -> int:
    from ..distributed.launch import rank_env, torchrun_command

    if command in ("predict", "plan"):
        return _predict_or_plan(command, args, console)
    if args.parallel is None:
        raise ConfigError("--nproc-per-node needs --parallel ddp or --parallel fsdp")
    env = rank_env()
    if env is None:
        if args.nproc_per_node is None:
            raise ConfigError(f"--parallel {args.parallel} runs one rank per process: start "
                              "it with torchrun --nproc-per-node N -m batchprof ..., or add "
                              "--nproc-per-node N")
        argv = list(sys.argv[1:] if argv is None else argv)
        return subprocess.call(torchrun_command(args.nproc_per_node, _strip_nproc(argv)))
    if args.nproc_per_node is not None and env.world_size % args.nproc_per_node:
        raise ConfigError(f"--nproc-per-node {args.nproc_per_node} does not divide the "
                          f"torchrun world of {env.world_size}")
    return _run_ranks(command, args, console, env.rank)


def _run_ranks(command: str, args: argparse.Namespace, console: Any, rank: int) -> int:
    from ..backends import resolve_device
    from ..distributed.errors import RankFailedError
    from ..distributed.launch import process_group
    from ..distributed.profile import measure_distributed, profile_distributed
    from ..spec import RunSpec

    device = resolve_device(args.device)
    main = rank == 0
    out_dir = None
    log = None
    if main:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = str(args.workload_opt or args.workload).replace(":", "_").replace("/", "_")
        out_dir = Path(getattr(args, "out", "reports")) / f"{name}-{args.parallel}-{stamp}"
        out_dir.mkdir(parents=True, exist_ok=True)
        log = (out_dir / "probes.jsonl").open("a")

    def on_probe(m: Any) -> None:
        log.write(json.dumps(m.to_dict()) + "\n")
        log.flush()
        peak = m.peak_allocated_bytes
        console.print(f"batch {m.batch_size}/rank (global {m.global_batch}): "
                      f"{'fits' if m.feasible else 'does not fit'}"
                      + (f", peak {peak:,} B on the fullest rank" if peak else "")
                      + ("" if m.feasible else f" [{m.reason}]"), highlight=False)

    ref = args.workload_opt or args.workload
    common: dict[str, Any] = {"device": device, "memory_limit": args.memory_limit,
                              "grad_accumulation": args.grad_accumulation}
    code, result, message = 0, None, None
    try:
        with process_group(device.split(":")[0]):
            if command == "measure":
                one = measure_distributed(ref, args.batch_size, args.parallel, **common)
                if main:
                    on_probe(one)
                result = one
            else:
                spec = RunSpec(device=device, min_batch=args.min_batch,
                               max_batch=args.max_batch, multiple_of=args.multiple_of,
                               alpha=args.alpha,
                               use_prediction=not getattr(args, "no_predict", False))
                result = profile_distributed(
                    ref, args.parallel, spec=spec, on_probe=on_probe,
                    memory_limit=args.memory_limit, grad_accumulation=args.grad_accumulation)
    except BatchprofError as exc:
        result = getattr(exc, "partial_result", None)
        code = EXIT_RANK_FAILED if isinstance(exc, RankFailedError) else EXIT_USAGE
        message = f"error: {exc}"
    finally:
        if log is not None:
            log.close()
    if not main:
        return code
    if result is not None:
        (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
    if message:
        print(message, file=sys.stderr)
        print(f"finished probes kept in {out_dir / 'probes.jsonl'}", file=sys.stderr)
        return code
    from ..distributed.text import measurement_lines, summary_lines

    lines = measurement_lines(result) if command == "measure" else summary_lines(result)
    for line in lines:
        console.print(line, highlight=False)
    console.print(f"report: {out_dir}", highlight=False)
    return 0


def _predict_or_plan(command: str, args: argparse.Namespace, console: Any) -> int:
    from ..distributed.sharding import plan_sharded, predict_sharded
    from ..distributed.text import plan_lines, prediction_lines

    if args.parallel is None or args.world_size is None:
        raise ConfigError("give both --world-size N and --parallel ddp|fsdp|zero1|zero2")
    ref = args.workload_opt or args.workload
    if command == "plan":
        from .plan import parse_gpu_names

        rows = plan_sharded(ref, parse_gpu_names(args.gpus), args.world_size, args.parallel,
                            grad_accumulation=args.grad_accumulation)
        lines = plan_lines(ref, rows)
        payload: Any = {"workload": ref, "gpus": rows}
    else:
        from .predict import parse_batch_sizes

        sizes = parse_batch_sizes(args.batch_sizes)
        target = getattr(args, "target", "cpu")
        preds = predict_sharded(ref, sizes, args.world_size, args.parallel, target,
                                grad_accumulation=args.grad_accumulation)
        lines = prediction_lines(ref, preds)
        payload = [p.to_dict() for p in preds]
    if getattr(args, "json", False):
        console.print_json(json.dumps(payload))
    else:
        for line in lines:
            console.print(line, highlight=False, markup=False)
    return 0

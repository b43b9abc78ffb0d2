"""``batchprof predict``: peak memory per batch size from a meta-device trace, no real run.

A table per batch size (peak allocated / reserved, activations, what calibration added), the
bytes by category at each peak, and the modules holding the most activation bytes; with --gpu,
whether each size fits and the predicted max batch for that GPU.
"""

from __future__ import annotations

import argparse
import json
import re

from batchprof import defaults
from batchprof.cli.args import add_json_argument, add_workload_argument, workload_ref
from batchprof.errors import ConfigError

from . import parallel

DEFAULT_WORKLOAD = defaults.WORKLOAD
DEFAULT_BATCH_SIZES = defaults.PREDICT_BATCH_SIZES
_ASCII_INT = re.compile(r"[0-9]{1,9}", re.ASCII)


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]``; ConfigError naming the bad part otherwise."""
    sizes = []
    for part in (p.strip() for p in str(text).split(",")):
        # ASCII digits only: str.isdigit() accepts '²', which int() then rejects.
        value = int(part) if _ASCII_INT.fullmatch(part) else 0
        if value <= 0:
            raise ConfigError(f"--batch-sizes must be comma-separated positive integers, "
                              f"e.g. 1,8,64,512; got {text!r} (bad part: {part!r})")
        sizes.append(value)
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
    add_what_if_argument(p)
    add_json_argument(p)
    parallel.add_arguments(p, "predict")  # issue 15
    p.set_defaults(handler=run)


def add_what_if_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--what-if", default=None, metavar="LIST",
                   help="also predict the workload rewritten: bf16 or fp16 (loss under "
                        "autocast), checkpoint (each repeated block checkpointed), e.g. "
                        "bf16,checkpoint; shown side by side with the workload as written")


def run(args: argparse.Namespace, console) -> int:
    if parallel.requested(args):  # issue 15: --parallel / --nproc-per-node / --world-size
        return parallel.handle("predict", args, console)
    from batchprof.prediction.planning import predict_scenarios

    results = [(r.what_if, list(r.predictions), r.max_batch) for r in predict_scenarios(
        workload_ref(args), parse_batch_sizes(args.batch_sizes), args.target, gpu=args.gpu,
        calibrate=not args.no_calibrate, what_if=args.what_if)]
    if args.json:
        _, predictions, max_batch = results[0]
        payload = {"predictions": [p.to_dict() for p in predictions], "max_batch": max_batch}
        if len(results) > 1:
            payload["what_if"] = [{"what_if": list(s), "max_batch": m,
                                   "predictions": [p.to_dict() for p in ps]}
                                  for s, ps, m in results]
        console.print_json(json.dumps(payload))
        return 0
    from batchprof.render.prediction import prediction_tables

    for _, predictions, max_batch in results:
        for renderable in prediction_tables(predictions, max_batch):
            console.print(renderable)
    return 0

"""``batchprof noise``: the gradient noise scale of a workload, with its interval and caveats.

Also the options ``batchprof run --noise-scale`` shares (:func:`add_noise_arguments`,
:func:`noise_options`) and the lines it prints (:func:`noise_console_lines`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchprof import defaults
from batchprof.cli.args import (
    add_device_arguments,
    add_json_argument,
    add_workload_argument,
    workload_ref,
)


def add_noise_arguments(p: argparse.ArgumentParser, *, flag: bool = False) -> None:
    """The noise-scale options; ``flag`` adds ``--noise-scale`` to turn it on (for ``run``)."""
    if flag:
        p.add_argument("--noise-scale", action="store_true",
                       help="also estimate the gradient noise scale (the statistical limit on "
                            "the batch), its big batch defaulting to the max batch found")
    p.add_argument("--draws", type=int, default=None, metavar="N",
                   help="independent draws of the two gradients (default: 4, then more up "
                        "to 8 while the interval is wider than +-25%%)")
    p.add_argument("--small-batch", type=int, default=None, metavar="N",
                   help="the small batch (default: the big batch // 8)")
    p.add_argument("--big-batch", type=int, default=None, metavar="N",
                   help="the big batch (default: the max batch when known, else 32)")
    p.add_argument("--micro-batch", type=int, default=None, metavar="N",
                   help="accumulate the big batch's gradient over micro-batches of N samples")
    p.add_argument("--reference-batch", type=int, default=None, metavar="N",
                   help="a batch whose learning rate you know, for a learning-rate hint")
    p.add_argument("--reference-lr", type=float, default=None, metavar="LR",
                   help="the learning rate that worked at --reference-batch, e.g. 3e-4")
    p.add_argument("--optimizer-family", default="auto", choices=("auto", "adam", "sgd"),
                   help="which scaling rule the hint uses (default: from the optimizer)")


def noise_options(args: argparse.Namespace, **extra: Any) -> Any:
    from batchprof.noise import NoiseOptions

    return NoiseOptions(draws=args.draws,
                        small_batch=args.small_batch, big_batch=args.big_batch,
                        micro_batch=args.micro_batch, reference_batch=args.reference_batch,
                        reference_lr=args.reference_lr,
                        optimizer_family=args.optimizer_family, **extra)


def noise_request(args: argparse.Namespace) -> Any:
    """For ``run``: False without ``--noise-scale`` (refusing noise options given without it),
    else the NoiseOptions."""
    from batchprof.errors import ConfigError

    if args.noise_scale:
        return noise_options(args)
    given = [name for name in ("draws", "small_batch", "big_batch", "micro_batch",
                               "reference_batch", "reference_lr")
             if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + g.replace("_", "-") for g in given)
        raise ConfigError(f"{flags} only apply with --noise-scale: add it, or drop them")
    return False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise", help="estimate the gradient noise scale: above it, bigger batches waste samples",
        description="Estimate the simple gradient noise scale B_simple = tr(Σ)/|G|² "
                    "(McCandlish et al. 2018) from gradients of the workload's loss at a small "
                    "and a big batch over several independent draws, with a confidence "
                    "interval; optionally a learning-rate hint for a new batch size.")
    add_workload_argument(p, positional=True, default=defaults.WORKLOAD)
    add_device_arguments(p)
    add_noise_arguments(p)
    p.add_argument("--target-batch", type=int, default=None, metavar="N",
                   help="the batch the learning-rate hint is for (default: the noise scale)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model and the draws")
    add_json_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Any) -> int:
    from rich.console import Console

    from batchprof.backends import resolve_device
    from batchprof.cli.main import wide_console
    from batchprof.noise import estimate_noise_scale
    from batchprof.noise.text import detail_lines, noise_phrase

    options = noise_options(args, target_batch=args.target_batch, seed=args.seed)
    out = wide_console(Console(stderr=True)) if args.json else console
    progress = []

    def on_draw(draw: Any) -> None:
        progress.append(draw)
        out.print(f"  draw {len(progress):>2}: |G|² at batch {draw.small_batch} "
                  f"{draw.small_grad_sq_norm:.4g}, at batch {draw.big_batch} "
                  f"{draw.big_grad_sq_norm:.4g}", highlight=False)

    result = estimate_noise_scale(workload_ref(args), resolve_device(args.device),
                                  args.memory_limit, options=options, on_draw=on_draw)
    if args.json:
        console.print_json(json.dumps(result.to_dict()))
        return 0
    console.print(f"[bold]{result.workload}:[/] {noise_phrase(result)}", highlight=False,
                  soft_wrap=True)
    for line in detail_lines(result):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    return 0

"""``batchprof run``: find the largest batch that fits and the throughput knee, write a report.

A line per probe as it completes (batch, fits?, peak, samples/s), then a summary (max feasible
batch, knee, recommended batch and why, probes used, time spent) and where the report went.
Every probe is appended to ``probes.jsonl`` as it completes; Ctrl-C stops cleanly and still
writes the partial report (exit 130); an error after probing began (a non-OOM step error, a
budget too small for the smallest batch) writes the partial report, then exits 2.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from batchprof import defaults
from batchprof.cli.args import (
    add_device_arguments,
    add_json_argument,
    add_workload_argument,
    workload_ref,
)
from batchprof.cli.noise import add_noise_arguments, noise_request

from . import parallel

if TYPE_CHECKING:
    from batchprof.backends import Backend
    from batchprof.spec import RunSpec
    from batchprof.workloads.base import Workload

DEFAULT_WORKLOAD = defaults.WORKLOAD
EXIT_INTERRUPTED = 130


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="find the largest batch that fits and the throughput knee; write a report",
        description="Probe real training steps to find the largest feasible batch size "
                    "(doubling, then bisection; seeded by the prediction when it is available) "
                    "and the throughput knee (the smallest batch within --alpha of the best "
                    "throughput). Writes reports/<workload>-<timestamp>/ with CSV, JSON, "
                    "Markdown and plots. On the CPU without --memory-limit a default budget "
                    "applies.")
    add_workload_argument(p, positional=True, default=DEFAULT_WORKLOAD)
    add_device_arguments(p, default_device="auto")
    p.add_argument("--min-batch", type=int, default=1, metavar="N",
                   help="smallest batch size to consider (default 1)")
    p.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="largest batch size to consider (default: memory decides)")
    p.add_argument("--multiple-of", type=int, default=1, metavar="N",
                   help="only batch sizes that are multiples of N, e.g. 8 (default 1)")
    p.add_argument("--dataset-size", type=int, default=None, metavar="N",
                   help="samples per epoch: caps the batch size and adds steps and time per "
                        "epoch to the report")
    p.add_argument("--alpha", type=float, default=defaults.ALPHA,
                   help="knee threshold: the smallest batch with throughput >= alpha x the best "
                        f"(default {defaults.ALPHA}; 0.95 is always reported too)")
    p.add_argument("--hint", type=int, default=None, metavar="N",
                   help="your guess of the max batch: the search starts around it")
    p.add_argument("--no-knee", action="store_true",
                   help="what fits only: stop after the max-batch search (no throughput "
                        "ladder, no knee)")
    p.add_argument("--no-predict", action="store_true",
                   help="do not seed the search with the memory prediction")
    p.add_argument("--time-budget", default=f"{defaults.TIME_BUDGET_S:g}s", metavar="T",
                   help="bound on the whole run: seconds, or 60s, 2m (default "
                        f"{defaults.TIME_BUDGET_S:g}s; 'none' for unbounded). When it ends, the "
                        "knee sweep stops and reports the knee of what it measured")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="timed steps per probe (default 5; more, up to 10, where the spread "
                        "is large)")
    p.add_argument("--sampler", default="auto", choices=("auto", "nvml", "psutil", "none"),
                   help="background sampling during timed steps: NVML on a GPU (kernel-busy %%, "
                        "memory, power, clocks), psutil on the CPU (default: auto)")
    p.add_argument("--sample-interval", type=float, default=0.1, metavar="S",
                   help="seconds between samples (default 0.1)")
    p.add_argument("--roofline", action="store_true", default=defaults.ROOFLINE,
                   help="measure the device's ceilings once and put each batch on the roofline "
                        "(achieved FLOP/s, MFU, memory- or compute-bound); off by default")
    # accepted for scripts written when the roofline was on by default; it is off now
    p.add_argument("--no-roofline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-snapshot", action="store_true",
                   help="re-run the max batch while recording the allocator: a pickle for "
                        "pytorch.org/memory_viz on CUDA, torch.profiler's memory timeline on "
                        "the CPU, written into the report directory")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="run each probe in a worker process (started once, reused, restarted "
                        "after a crash), so a step that segfaults, aborts or is killed is "
                        "recorded as 'crashed' and the run goes on (default: on; "
                        "--no-isolate probes in this process)")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="where report directories go (default: reports)")
    p.add_argument("--resume", default=None, metavar="REPORT_DIR",
                   help="continue a killed or interrupted run from its report directory: its "
                        "options come from run.json, its finished probes from probes.jsonl "
                        "(not run again); the report is written there")
    add_noise_arguments(p, flag=True)  # issue 18
    add_json_argument(p)
    parallel.add_arguments(p, "run")  # issue 15
    p.set_defaults(handler=run)


class _Progress:
    """Receives each Measurement (appends it to the probe log, prints its line) and each
    RunStatus (a progress bar on a terminal: phase, elapsed, about how much is left; a plain
    line per sweep round otherwise)."""

    def __init__(self, console: Any, log: Any):
        self.console, self.log, self.count = console, log, 0
        self.bar: Any = None  # a rich Progress, on a terminal
        self.task: Any = None

    def __call__(self, m: Any) -> None:
        self.log.append(m)
        self.count += 1
        from batchprof.render.tables import probe_line

        self.console.print(probe_line(self.count, m), highlight=False, soft_wrap=True)

    def status(self, status: Any) -> None:
        from rich.markup import escape

        phase = getattr(status, "phase", "")
        if self.bar is None:  # plain lines: a probe prints its own; a sweep round says so here
            if phase == "knee sweep":
                self.console.print(f"  [dim]{escape(str(status))}[/]", highlight=False,
                                   soft_wrap=True)
            return
        elapsed, left = status.elapsed_s, status.remaining_s
        self.bar.update(self.task, completed=elapsed,
                        total=None if left is None else elapsed + left,
                        description=escape(f"{phase}: {status.message}")
                        + ("" if left is None else f", about {left:.0f} s left"))


def run(args: argparse.Namespace, console: Any) -> int:
    if parallel.requested(args):  # issue 15: --parallel / --nproc-per-node / --world-size
        return parallel.handle("run", args, console)
    from rich.console import Console

    from batchprof.cli.resume import resume_request

    replay: list[Any] = []
    resumed = None
    if args.resume:  # the recorded run's options, its directory, its finished probes
        args, resumed, replay = resume_request(args)
    from batchprof.api.options import make_spec
    from batchprof.backends import device_notice, make_backend, resolve_device
    from batchprof.cli.main import wide_console
    from batchprof.probe.step import TimingPolicy
    from batchprof.units import format_bytes
    from batchprof.workloads.registry import load_workload

    # With --json, stdout carries only the JSON; the progress goes to stderr.
    out = wide_console(Console(stderr=True)) if args.json else console
    timing = None
    if args.steps is not None:  # TimingPolicy rejects steps < 1 with a ConfigError
        timing = TimingPolicy(timed_steps=args.steps, max_timed_steps=max(args.steps, 10))
    spec, decided = make_spec(
        args.device, args.memory_limit, min_batch=args.min_batch, max_batch=args.max_batch,
        multiple_of=args.multiple_of, dataset_size=args.dataset_size, alpha=args.alpha,
        hint=args.hint, use_prediction=not args.no_predict, knee=not args.no_knee,
        roofline=args.roofline and not args.no_roofline, timing=timing, resolve=resolve_device,
        time_budget_s=None if str(args.time_budget).lower() == "none" else args.time_budget)
    noise_scale = noise_request(args)  # issue 18: False, or the NoiseOptions
    workload = load_workload(workload_ref(args))
    device = resolve_device(spec.device)
    notice = device_notice(args.device, device)
    if notice:
        out.print(notice, highlight=False)
    if decided:
        out.print(f"memory budget: {defaults.CPU_MEMORY_LIMIT} (the CPU default; set "
                  "--memory-limit to change)", highlight=False)
    elif spec.memory_limit_bytes is not None:
        out.print(f"memory budget: {format_bytes(spec.memory_limit_bytes)}", highlight=False)

    # Built before the report directory, so a missing device or a bad limit leaves nothing.
    backend = make_backend(device, spec.memory_limit_bytes)
    try:
        return _run_on(args, console, out, backend, device, spec, workload, noise_scale,
                       resumed, replay)
    finally:
        backend.close()  # however the run ends: a CUDA limit's memory fraction is restored


def _run_on(args: argparse.Namespace, console: Any, out: Any, backend: Backend, device: str,
            spec: RunSpec, workload: Workload, noise_scale: Any, resumed: Any,
            replay: list[Any]) -> int:
    """The run itself, on the backend ``run`` built (and closes): sampler, report directory,
    probe log, ``profile()``, the report and the summary."""
    from batchprof.api.profiling import profile
    from batchprof.cli.resume import write_run_file
    from batchprof.errors import BatchprofError
    from batchprof.render.files import PROBE_LOG, ProbeLog, make_report_dir, write_report
    from batchprof.render.tables import noise_console_lines, summary_table

    sampler = _make_sampler(args, device, out)
    if resumed is None:
        directory = make_report_dir(workload.name, args.out)
        write_run_file(directory, args, workload_ref(args))
    else:
        directory = resumed
        out.print(f"resuming the run in {directory}: {len(replay)} finished probes in its "
                  "log are not run again", highlight=False, soft_wrap=True)
    out.print(f"profiling [bold]{workload.name}[/] on {device}; probes are logged to "
              f"{directory / PROBE_LOG}", highlight=False, soft_wrap=True)
    with ProbeLog(directory / PROBE_LOG) as log:
        progress = _Progress(out, log)
        try:
            kwargs = dict(spec=spec, backend=backend, on_probe=progress,
                          on_status=progress.status, sampler=sampler, noise_scale=noise_scale,
                          isolate=args.isolate, replay=replay)
            target = workload_ref(args) if args.isolate else workload  # the worker imports it
            with sampler:
                if out.is_terminal:
                    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                    with Progress(TextColumn("{task.description}"), BarColumn(),
                                  TimeElapsedColumn(), console=out, transient=True) as bar:
                        progress.bar = bar
                        progress.task = bar.add_task("max-batch search: probe 1", total=None)
                        result = profile(target, **kwargs)
                else:
                    result = profile(target, **kwargs)
        except BatchprofError as exc:
            partial = getattr(exc, "partial_result", None)
            if partial is not None:
                files = write_report(partial, directory)
                out.print(f"partial report written to {files.directory}", highlight=False,
                          soft_wrap=True)
            raise
    if args.memory_snapshot and result.max_batch is not None and not result.interrupted:
        _write_snapshot(workload, result.max_batch, backend, directory, out)
    files = write_report(result, directory)
    if args.json:
        console.print_json(json.dumps({**result.to_dict(), "report_dir": str(directory)},
                                      default=str))
    else:
        out.print(summary_table(result))
        out.print(f"[bold]recommended batch:[/] {result.recommended_batch or 'n/a'} "
                  f"({result.recommendation_reason})", highlight=False)
        for line in noise_console_lines(result):  # issue 18: the reading, then its details
            out.print(line, highlight=False, soft_wrap=True)
        if result.leak:
            out.print(f"[bold red]{result.leak}[/]", highlight=False, soft_wrap=True)
        for note in result.notes:
            if note != result.leak:
                out.print(f"  [dim]note: {note}[/]", highlight=False)
    if result.interrupted:
        out.print(f"interrupted: partial report written to {files.directory}",
                  highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    out.print(f"report written to {files.directory}", highlight=False, soft_wrap=True)
    return 0


def _make_sampler(args: argparse.Namespace, device: str, out: Any) -> Any:
    """The sampler for this run: NVML on CUDA (psutil, with the reason, when NVML cannot
    serve), psutil on the CPU; 'none' samples nothing."""
    from batchprof.errors import ConfigError
    from batchprof.sampling.factory import device_sampler

    if not args.sample_interval > 0:
        raise ConfigError(f"--sample-interval must be a positive number of seconds, "
                          f"got {args.sample_interval}")
    sampler = device_sampler(args.sampler, device, interval_s=args.sample_interval)
    if getattr(sampler, "fallback_reason", None):
        out.print(f"sampler: {sampler.kind} ({sampler.fallback_reason})", highlight=False)
    return sampler


def _write_snapshot(workload: Any, batch_size: int, backend: Any, directory: Any,
                    out: Any) -> None:
    from batchprof.probe.snapshot import snapshot_filename, snapshot_probe

    path = directory / snapshot_filename(backend.name)
    snapshot, _ = snapshot_probe(workload, batch_size, path, device=backend.name,
                                 backend=backend)
    out.print(f"memory snapshot of batch {batch_size} written to {snapshot.path} "
              f"({snapshot.viewer})", highlight=False, soft_wrap=True)

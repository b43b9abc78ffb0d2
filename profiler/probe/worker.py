"""Probes in a worker process: a step that crashes its process costs one probe, not the run.

One worker is spawned (``multiprocessing`` "spawn": no forked CUDA or thread state) per run
and reused, so torch's import and the workload's import are paid once; it is restarted after
a crash. The worker loads the workload by reference (a built-in name or ``module:attr``),
builds the backend from plain data, and answers each batch size with ``Measurement.to_dict()``.
When the worker dies mid-probe (a signal such as SIGSEGV or SIGKILL, ``abort()``,
``os._exit``, the kernel's OOM killer, a poisoned CUDA context that exits) the probe becomes a
Measurement with ``feasible=False``, ``reason="crashed: ..."`` and ``extra["crash"]`` holding
the signal or exit code: the search treats it like an out-of-memory size, with a note.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from typing import Any

from batchprof import errors
from batchprof.records.measurement import Measurement


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the probe: plain data only."""

    workload_ref: str
    workload_name: str
    device: str
    memory_limit_bytes: int | None
    timing: Any = None  # a TimingPolicy (a frozen dataclass, picklable)


def _serve(spec: WorkerSpec, conn: Any) -> None:  # pragma: no cover - runs in the child
    from batchprof.backends import make_backend
    from batchprof.probe.step import measure
    from batchprof.workloads.registry import load_workload

    try:
        workload = load_workload(spec.workload_ref)
        backend = make_backend(spec.device, spec.memory_limit_bytes)
    except errors.BatchprofError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready", None, None))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        batch_size, timed = request if isinstance(request, tuple) else (request, True)
        try:
            m = measure(workload, batch_size, backend=backend, timing=spec.timing, timed=timed)
        except errors.BatchprofError as exc:
            conn.send(("error", type(exc).__name__, str(exc)))
            continue
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group
            conn.send(("interrupt", None, None))
            return
        conn.send(("ok", m.to_dict(), None))


def _describe_exit(code: int | None) -> tuple[str, dict[str, Any]]:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}", {"signal": -code, "signal_name": name, "exit_code": None}
    return f"exited with code {code}", {"signal": None, "signal_name": None, "exit_code": code}


def _raise_remote(kind: str, message: str) -> None:
    """Re-raise in the parent the BatchprofError the worker hit (by class name)."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.BatchprofError)):
        cls = errors.StepError
    raise cls(message)


class ProbeWorker:
    """``worker.measure(b) -> Measurement`` in a child process; ``close()`` ends it."""

    def __init__(self, spec: WorkerSpec, *, start_timeout_s: float = 300.0):
        self.spec, self.start_timeout_s = spec, start_timeout_s
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self.starts = 0
        self.crashes = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(self.spec, child), daemon=True,
                                       name="batchprof-probe-worker")
        self._proc.start()
        child.close()
        self._conn = parent
        self.starts += 1
        if not parent.poll(self.start_timeout_s):
            self.close()
            raise errors.StepError(f"the probe worker did not start within "
                                   f"{self.start_timeout_s:.0f} s")
        try:
            kind, a, b = parent.recv()
        except EOFError:
            code = self._reap()
            raise errors.StepError(f"the probe worker died while loading workload "
                                   f"{self.spec.workload_ref!r} ({_describe_exit(code)[0]})") from None
        if kind == "error":
            self.close()
            _raise_remote(a, b)

    def _reap(self) -> int | None:
        self._proc.join(timeout=10)
        code = self._proc.exitcode
        self._conn.close()
        self._proc = self._conn = None
        return code

    def measure(self, batch_size: int, *, timed: bool = True) -> Measurement:
        """``probe.measure`` in the worker; ``timed=False``: memory only (no timed steps)."""
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self._reap()
            self._start()
        started = time.perf_counter()
        try:
            self._conn.send((batch_size, timed))
            kind, a, b = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return self._crashed(batch_size, self._reap(), time.perf_counter() - started)
        if kind == "interrupt":
            self._reap()
            raise KeyboardInterrupt
        if kind == "error":
            _raise_remote(a, b)
        return Measurement.from_dict(a)

    def _crashed(self, batch_size: int, code: int | None, wall_s: float) -> Measurement:
        self.crashes += 1
        how, crash = _describe_exit(code)
        return Measurement(
            workload=self.spec.workload_name, batch_size=batch_size, device=self.spec.device,
            feasible=False, reason=f"crashed: the probe's worker process was {how}",
            memory_limit_bytes=self.spec.memory_limit_bytes,
            capacity_bytes=self.spec.memory_limit_bytes, wall_time_s=wall_s,
            extra={"crash": {**crash, "batch_size": batch_size}},
            notes=(f"batch {batch_size} crashed the probe worker ({how}); treated as "
                   "infeasible, and a fresh worker serves the next probe",))

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=10)
        self._conn.close()
        self._proc = self._conn = None

    def __enter__(self) -> ProbeWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def isolated_prober(worker: ProbeWorker, sampler: Any = None) -> Any:
    """``probe(b) -> Measurement`` through ``worker``, with ``sampler``'s window (device-wide
    samplers such as NVML see the worker's kernels; psutil samples this process) around it."""
    import dataclasses

    def probe(batch_size: int, *, timed: bool = True) -> Measurement:
        key = f"isolated-batch-{batch_size}-{time.perf_counter_ns()}"
        if sampler is None or not timed:  # a memory-only probe has no sampler window
            return worker.measure(batch_size, timed=timed)
        sampler.begin_window(key)
        try:
            m = worker.measure(batch_size)
        finally:
            samples = tuple(sampler.end_window(key))
        return dataclasses.replace(m, samples=samples) if m.feasible else m

    return probe


def crash_notes(probes: list[Measurement]) -> list[str]:
    """One note per crashed batch size, for the result."""
    crashed = [m for m in probes if m.outcome == "crashed"]
    if not crashed:
        return []
    sizes = ", ".join(str(m.batch_size) for m in crashed)
    how = "; ".join(sorted({m.reason.removeprefix("crashed: ") for m in crashed if m.reason}))
    return [f"{len(crashed)} probe(s) crashed their worker process (batch {sizes}: {how}); the "
            "search treated those sizes as not fitting and went on"]

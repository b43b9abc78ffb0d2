"""Background samplers: one thread per sampler, measurement windows keyed like Zeus's.

A sampler reads a device every ``interval_s`` (100 ms by default) on a daemon thread named
``batchprof-sampler-<kind>-<n>`` and hands each probe the samples taken inside its window::

    with make_sampler("auto") as sampler:
        sampler.begin_window("bs=32")
        ...  # run the steps
        series = sampler.end_window("bs=32")   # tuple[SampleSeries, ...]

Window semantics (the same for every sampler):

- A window holds the samples whose clock time ``t`` satisfies ``begin <= t <= end``.
  ``SampleSeries.times_s`` are seconds since ``begin_window``.
- ``end_window`` takes one last sample itself, at the end time, so a window shorter than one
  interval still has a sample (each reading covers the time since the previous one: CPU % and
  NVML's busy % are trailing averages, so a sample at the end describes the window's tail).
- Windows may overlap; a sample is shared by every window open at its time.
- Counter metrics (NVML's energy) are read at both boundaries and reported as a series with
  ONE value, the delta over the window, stamped at the window's length: ``energy_j`` in J.
- Every sampler always returns the same series names; a metric the device cannot give is a
  series of None values (never a plausible 0).

Samples are kept only while some window is open, so memory stays bounded between probes.
The clock and the thread's wait are injectable so tests can drive cadence deterministically.
``pynvml`` is imported only by :mod:`batchprof.sampling.libnvml`, and only when NVML is asked for
(an NVML sampler starting, ``make_sampler("auto" | "nvml")``).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from batchprof.errors import DeviceUnavailableError
from batchprof.records.measurement import SampleSeries

DEFAULT_INTERVAL_S = 0.1


THREAD_NAME_PREFIX = "batchprof-sampler"


SAMPLER_KINDS = ("auto", "nvml", "psutil", "none")


_thread_ids = itertools.count(1)


Clock = Callable[[], float]


# wait(stop_event, timeout_s) -> True when the sampler was asked to stop
Wait = Callable[[threading.Event, float], bool]


class SamplerUnavailable(DeviceUnavailableError):
    """A sampler cannot run on this machine (no NVML library, no driver, no such GPU).

    ``reason`` is the one-line explanation, also the exception's message.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Metric:
    """A sampled quantity: its series name (unit in the name) and unit label."""

    name: str
    unit: str


@runtime_checkable
class Sampler(Protocol):
    """What a probe needs from a sampler. See the module docstring for window semantics."""

    kind: str
    interval_s: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def begin_window(self, key: Hashable) -> None: ...
    def end_window(self, key: Hashable) -> tuple[SampleSeries, ...]: ...
    def __enter__(self) -> Sampler: ...
    def __exit__(self, *exc: object) -> None: ...


def event_wait(event: threading.Event, timeout_s: float) -> bool:
    return event.wait(timeout_s)


@dataclass
class _Window:
    begin_s: float
    counters: tuple[float | None, ...]


class BackgroundSampler:
    """The thread and window machinery; subclasses say what one reading is.

    Subclasses set ``kind``, ``metrics`` (per-sample) and ``counter_metrics`` (read at window
    boundaries, reported as deltas), and override ``_open``/``_close``/``_read``/
    ``_read_counters``. ``_read`` returns one value (or None) per metric, in order.

    ``threaded=False`` starts no thread: samples are then taken only by ``sample_once()`` and
    at ``end_window`` (tests drive it that way with a fake ``clock``).
    """

    kind = "base"
    metrics: tuple[Metric, ...] = ()
    counter_metrics: tuple[Metric, ...] = ()

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Clock = time.perf_counter,
                 wait: Wait = event_wait, threaded: bool = True):
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s)
                and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.threaded = threaded
        self.fallback_reason: str | None = None  # set by make_sampler when "auto" fell back
        self._clock = clock
        self._wait = wait
        self._lock = threading.RLock()  # serializes reads (thread vs end_window) and state
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._started = False
        self._windows: dict[Hashable, _Window] = {}
        self._samples: list[tuple[float, tuple[float | None, ...]]] = []

    # ---- subclass hooks -----------------------------------------------------------------
    def _open(self) -> None:
        """Acquire the device/library; raise SamplerUnavailable when it cannot."""

    def _close(self) -> None:
        """Release what ``_open`` acquired. Must not raise."""

    def _read(self) -> tuple[float | None, ...]:
        return ()

    def _read_counters(self) -> tuple[float | None, ...]:
        return ()

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> None:
        """Open the source and start the thread. Idempotent; a stopped sampler may restart."""
        with self._lock:
            if self._started:
                return
            self._open()
            self._started = True
            self._thread_error = None
            self._stop_event.clear()
            if self.threaded:
                self._thread = threading.Thread(
                    target=self._run, daemon=True,  # a forgotten sampler must not block exit
                    name=f"{THREAD_NAME_PREFIX}-{self.kind}-{next(_thread_ids)}")
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread, release the source, discard open windows. Idempotent."""
        # Not under the lock: the thread may be waiting for it inside sample_once.
        thread = self._thread
        self._stop_event.set()
        if thread is not None:
            thread.join(timeout=max(5.0, 10 * self.interval_s))
        with self._lock:
            self._thread = None
            if self._started:
                self._started = False
                self._windows.clear()
                self._samples.clear()
                self._close()

    def __enter__(self) -> BackgroundSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        # A fixed grid (start + k*interval) so cadence does not drift by the read time;
        # ticks missed during a stall are skipped rather than fired in a burst.
        next_s = self._clock() + self.interval_s
        while not self._wait(self._stop_event, max(0.0, next_s - self._clock())):
            try:
                self.sample_once()
            except BaseException as err:  # surfaced by end_window; a thread must not die silently
                self._thread_error = err
                return
            now = self._clock()
            next_s += self.interval_s
            if next_s <= now:
                next_s += (math.floor((now - next_s) / self.interval_s) + 1) * self.interval_s

    # ---- sampling and windows -----------------------------------------------------------
    def sample_once(self) -> None:
        """Take one sample now (the thread calls this every interval). Kept only while a
        window is open."""
        with self._lock:
            if not self._started:
                raise RuntimeError(f"{self.kind} sampler is not started; use `with sampler:` "
                                   "or call start() first")
            if not self._windows:
                return
            t = self._clock()
            values = self._read()
            self._samples.append((t, values))

    def begin_window(self, key: Hashable) -> None:
        """Open a window named ``key``. ValueError if a window with that key is open."""
        with self._lock:
            self._check_thread()
            if not self._started:
                raise RuntimeError(f"{self.kind} sampler is not started; use `with sampler:` "
                                   "or call start() before begin_window")
            if key in self._windows:
                raise ValueError(f"a sampling window {key!r} is already open; end it before "
                                 "beginning another with the same key")
            counters = self._read_counters()
            self._windows[key] = _Window(begin_s=self._clock(), counters=counters)

    def end_window(self, key: Hashable) -> tuple[SampleSeries, ...]:
        """Close window ``key`` and return its series (per-sample metrics, then counters)."""
        with self._lock:
            if key not in self._windows:
                open_keys = ", ".join(repr(k) for k in self._windows) or "none"
                raise ValueError(
                    f"no open sampling window {key!r} (open windows: {open_keys}); call "
                    "begin_window(key) first; windows are discarded when the sampler stops")
            self._check_thread()
            self.sample_once()
            end_s = self._clock()
            counters = self._read_counters()
            window = self._windows.pop(key)
            inside = [(t, v) for t, v in self._samples if window.begin_s <= t <= end_s]
            self._prune()
        times = tuple(t - window.begin_s for t, _ in inside)
        series = [SampleSeries(m.name, m.unit, times, tuple(v[i] for _, v in inside))
                  for i, m in enumerate(self.metrics)]
        for i, m in enumerate(self.counter_metrics):
            before, after = window.counters[i], counters[i]
            delta = after - before if before is not None and after is not None else None
            if delta is not None and delta < 0:  # counter reset (driver reload) mid-window
                delta = None
            series.append(SampleSeries(m.name, m.unit, (end_s - window.begin_s,), (delta,)))
        return tuple(series)

    def _prune(self) -> None:
        if not self._windows:
            self._samples.clear()
            return
        oldest = min(w.begin_s for w in self._windows.values())
        self._samples = [(t, v) for t, v in self._samples if t >= oldest]

    def _check_thread(self) -> None:
        if self._thread_error is not None:
            err, self._thread_error = self._thread_error, None
            raise RuntimeError(f"the {self.kind} sampler thread failed: {err!r}") from err


class NullSampler(BackgroundSampler):
    """Samples nothing: windows work and return (). The no-device fallback (kind "none")."""

    kind = "none"

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Clock = time.perf_counter,
                 reason: str | None = None):
        super().__init__(interval_s, clock=clock, threaded=False)
        self.fallback_reason = reason

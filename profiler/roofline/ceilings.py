"""Measured device ceilings (memory bandwidth, matmul FLOP/s) and the roofline view of a step.

``ceilings(device)`` measures what this device can really do, rather than trusting a spec sheet:

- CUDA: the Triton kernels of ``batchprof.kernels`` (copy, STREAM triad, tiled matmul per dtype),
  timed with CUDA events, on buffers many times the L2 cache so DRAM is what gets measured.
- CPU: the plain-torch references (``batchprof.kernels.reference``) timed with
  ``time.perf_counter``, on buffers several times the last-level cache. These are real CPU
  ceilings; the Triton interpreter is never timed.

Bandwidth counts bytes read plus bytes written (STREAM's convention: copy moves 2 arrays, triad 3)
in GB/s with 1 GB = 1e9 bytes. A ceiling comes from the best (shortest) of the timed repeats,
STREAM's convention: a ceiling is what the device can do, and on a shared machine the slower
repeats measure the neighbours (a descheduled BLAS thread stalls a whole matmul). The raw times
are kept, so the median and spread stay visible.

``roofline(flops, bytes_moved, step_time_s, ceilings)`` is a pure function putting one measured
step on that roofline: achieved FLOP/s, MFU, arithmetic intensity, which roof bounds it, and the
step time the roofline predicts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from batchprof.backends import cpu_model_name
from batchprof.errors import ConfigError, DeviceUnavailableError
from batchprof.kernels import reference  # plain torch; importing it registers the ops, never Triton

MIB = 1024**2


# CPU: 64 MiB per array (3 arrays for triad) or 4x the last-level cache if that is larger; a
# matmul of at most 1024^3 whose size shrinks for dtypes the CPU is slow at (fp16 GEMM on a CPU
# without native support runs at ~0.3 GFLOP/s: 1024^3 would take seconds).
CPU_STREAM_BYTES = 64 * MIB


CPU_MATMUL_MAX_N = 1024


CPU_REPEATS = 5


_CPU_MATMUL_PROBE_N = 256


_CPU_MATMUL_PROBE_TRIES = 5


_CPU_MATMUL_GROW_LIMIT_S = 0.4  # the largest single matmul the size search will grow into


_CPU_MATMUL_TARGET_RUN_S = 0.1  # enough tries at one size: it is slow, stop probing it


_CPU_MATMUL_BUDGET_S = 0.3  # all timed runs of one dtype, unless repeats is given


_CPU_MATMUL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# CUDA: at least 1 GiB per array and 16x the L2 cache, bounded by free memory.
CUDA_STREAM_MIN_BYTES = 1024 * MIB


CUDA_MATMUL_N = 8192


CUDA_REPEATS = 20


_TRIAD_SCALAR = 3.0


@dataclass(frozen=True)
class Ceilings:
    """Peak rates measured on one device.

    ``bandwidth_gbps`` has "copy" and "triad"; ``flops_per_s`` is keyed by dtype name
    ("float32", "float16", "bfloat16", and on CUDA "tf32": float32 inputs on tensor cores).
    ``sizes`` records what was run ("stream_bytes_per_array", "matmul_n_<dtype>"), and
    ``raw_times_s`` every timed repeat per probe ("copy", "triad", "matmul_<dtype>").
    """

    device: str
    device_name: str
    method: str  # "triton" (CUDA) or "torch-reference" (CPU)
    bandwidth_gbps: dict[str, float]
    flops_per_s: dict[str, float]
    sizes: dict[str, int]
    raw_times_s: dict[str, tuple[float, ...]]
    num_threads: int | None = None  # torch's intra-op threads on the CPU; None on CUDA

    @property
    def peak_bandwidth_gbps(self) -> float:
        """The best of the bandwidth probes: the memory roof."""
        return max(self.bandwidth_gbps.values())

    def peak_flops_per_s(self, dtype: str | torch.dtype = "float32") -> float:
        """The compute roof for ``dtype``; ConfigError naming the measured dtypes if absent."""
        key = dtype_key(dtype)
        if key not in self.flops_per_s:
            raise ConfigError(f"no {key} matmul ceiling was measured on {self.device}; "
                              f"measured: {', '.join(sorted(self.flops_per_s)) or 'none'}")
        return self.flops_per_s[key]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["raw_times_s"] = {k: list(v) for k, v in self.raw_times_s.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ceilings:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in fields}
        values["raw_times_s"] = {k: tuple(v) for k, v in d["raw_times_s"].items()}
        return cls(**values)


def dtype_key(dtype: str | torch.dtype) -> str:
    """``torch.float16`` -> "float16"; strings pass through (so "tf32" works too)."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return str(dtype)


def ceilings(device: str | torch.device = "cpu", *, stream_bytes: int | None = None,
             matmul_n: int | None = None, repeats: int | None = None,
             dtypes: tuple[torch.dtype, ...] | None = None) -> Ceilings:
    """Measure peak memory bandwidth and matmul FLOP/s per dtype on ``device``.

    ``stream_bytes`` is the size of each bandwidth array, ``matmul_n`` the (largest) square
    matmul side, ``repeats`` the timed runs per probe; defaults suit the device (see module
    constants). A CPU run takes about 1-2 s with the defaults.
    Raises ConfigError for a device that is neither cpu nor cuda, or bad sizes;
    DeviceUnavailableError when CUDA (or Triton on it) is not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"ceilings: device must be 'cpu' or 'cuda[:N]', got {device!r}") from exc
    for name, value in (("stream_bytes", stream_bytes), ("matmul_n", matmul_n),
                        ("repeats", repeats)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"ceilings: {name} must be a positive int, got {value!r}")
    if dev.type == "cpu":
        return _cpu_ceilings(stream_bytes, matmul_n, repeats or CPU_REPEATS, dtypes,
                             user_repeats=repeats is not None)
    if dev.type == "cuda":
        return _cuda_ceilings(dev, stream_bytes, matmul_n, repeats or CUDA_REPEATS, dtypes)
    raise ConfigError(f"ceilings: device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")


def _stream_times(n: int, device: torch.device, repeats: int,
                  timer: Callable[[Callable[[], object], int, torch.device], tuple[float, ...]],
                  *, copy: Callable[[torch.Tensor, torch.Tensor], object],
                  triad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object],
                  ) -> dict[str, tuple[float, ...]]:
    """Time copy and triad over float32 arrays of ``n`` elements; the arrays die on return."""
    a = torch.empty(n, device=device)
    b, c = torch.rand(n, device=device), torch.rand(n, device=device)
    return {"copy": timer(lambda: copy(b, a), repeats, device),
            "triad": timer(lambda: triad(a, b, c), repeats, device)}


def _stream_bandwidth_gbps(n: int, raw: dict[str, tuple[float, ...]]) -> dict[str, float]:
    # Bytes read + written: copy moves 2 arrays of n float32, triad 3.
    return {"copy": 2 * 4 * n / min(raw["copy"]) / 1e9,
            "triad": 3 * 4 * n / min(raw["triad"]) / 1e9}


def _time_one(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _time_cpu(fn: Callable[[], object], repeats: int,
              device: torch.device | None = None) -> tuple[float, ...]:
    fn()  # warm-up: first-touch page faults and the thread pool's spin-up are not the ceiling
    return tuple(_time_one(fn) for _ in range(repeats))


def _cpu_last_level_cache_bytes() -> int | None:
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        try:
            scale = {"K": 1024, "M": MIB}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KM")) * scale)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def _cpu_matmul_times(dtype: torch.dtype, max_n: int,
                      repeats: int | None) -> tuple[int, tuple[float, ...]]:
    """Pick the matmul side for ``dtype`` and time it: (side, seconds of each timed run).

    Doubles the side from _CPU_MATMUL_PROBE_N while 8x a run (the cost of the next doubling)
    stays under _CPU_MATMUL_GROW_LIMIT_S, so a dtype the CPU is slow at (fp16 without native
    support: ~1 GFLOP/s) gets a smaller matmul instead of a multi-second one. A few tries per
    size, and one fast try is enough to grow: on a busy machine a short multi-threaded run often
    waits for a descheduled thread, which says nothing about the CPU. The tries at the final
    side count as timed runs; ``repeats`` (None: fill _CPU_MATMUL_BUDGET_S, 3 to CPU_REPEATS
    runs) is the total.
    """
    side = min(_CPU_MATMUL_PROBE_N, max_n)
    while True:
        x = torch.randn(side, side).to(dtype)
        run = functools.partial(reference.matmul_reference, x, x,
                                out=torch.empty(side, side, dtype=dtype))
        run()  # the first call at a shape pays for packing and thread start-up
        times: list[float] = []
        for _ in range(_CPU_MATMUL_PROBE_TRIES):
            times.append(_time_one(run))
            if min(times) * 8 <= _CPU_MATMUL_GROW_LIMIT_S or sum(times) > _CPU_MATMUL_TARGET_RUN_S:
                break
        if side * 2 > max_n or min(times) * 8 > _CPU_MATMUL_GROW_LIMIT_S:
            break
        side *= 2
    total = repeats or min(CPU_REPEATS, max(3, round(_CPU_MATMUL_BUDGET_S / min(times))))
    while len(times) < total:
        times.append(_time_one(run))
    return side, tuple(times[:total])


def _cpu_ceilings(stream_bytes: int | None, matmul_n: int | None, repeats: int,
                  dtypes: tuple[torch.dtype, ...] | None, *, user_repeats: bool) -> Ceilings:
    if stream_bytes is None:
        stream_bytes = max(CPU_STREAM_BYTES, 4 * (_cpu_last_level_cache_bytes() or 0))
    n = max(1, stream_bytes // 4)
    raw = _stream_times(n, torch.device("cpu"), repeats, _time_cpu,
                        copy=lambda src, dst: reference.copy_reference(src, out=dst),
                        triad=lambda out, b, c: reference.triad_reference(b, c, _TRIAD_SCALAR,
                                                                          out=out))
    bandwidth = _stream_bandwidth_gbps(n, raw)
    sizes = {"stream_bytes_per_array": 4 * n}
    flops: dict[str, float] = {}
    for dtype in dtypes or _CPU_MATMUL_DTYPES:
        key = dtype_key(dtype)
        side, raw[f"matmul_{key}"] = _cpu_matmul_times(dtype, matmul_n or CPU_MATMUL_MAX_N,
                                                       repeats if user_repeats else None)
        flops[key] = 2 * side**3 / min(raw[f"matmul_{key}"])
        sizes[f"matmul_n_{key}"] = side
    return Ceilings(device="cpu", device_name=cpu_model_name(), method="torch-reference",
                    bandwidth_gbps=bandwidth, flops_per_s=flops, sizes=sizes, raw_times_s=raw,
                    num_threads=torch.get_num_threads())


def _time_cuda(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, ...]:
    fn()  # warm-up: JIT compilation and autotuning happen here, outside the timed window
    torch.cuda.synchronize(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(repeats)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return tuple(start.elapsed_time(end) / 1e3 for start, end in events)


def _cuda_ceilings(device: torch.device, stream_bytes: int | None, matmul_n: int | None,
                   repeats: int, dtypes: tuple[torch.dtype, ...] | None) -> Ceilings:
    if not torch.cuda.is_available():
        raise DeviceUnavailableError("ceilings: CUDA was requested but torch sees no CUDA device; "
                                     "use --device cpu")
    from batchprof import kernels

    if kernels.kernel_mode() != "compiled":
        raise DeviceUnavailableError(
            f"ceilings: Triton kernels are {kernels.kernel_mode()} in this process "
            f"({kernels.unavailable_reason() or 'TRITON_INTERPRET is set'}); CUDA ceilings need "
            "compiled kernels: unset TRITON_INTERPRET")
    index = device.index if device.index is not None else torch.cuda.current_device()
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(device)
    with torch.cuda.device(device):
        if stream_bytes is None:
            free_bytes, _ = torch.cuda.mem_get_info(device)
            l2 = getattr(props, "L2_cache_size", 0) or 0
            stream_bytes = min(max(CUDA_STREAM_MIN_BYTES, 16 * l2), free_bytes // 8)
        n = max(1, stream_bytes // 4)
        raw = _stream_times(n, device, repeats, _time_cuda,
                            copy=lambda src, dst: kernels.launch_copy(src, dst),
                            triad=lambda out, b, c: kernels.launch_triad(out, b, c,
                                                                         _TRIAD_SCALAR))
        bandwidth = _stream_bandwidth_gbps(n, raw)
        sizes = {"stream_bytes_per_array": 4 * n}
        side = matmul_n or CUDA_MATMUL_N
        runs: list[tuple[str, torch.dtype, str]] = []
        for dtype in dtypes or (torch.float32, torch.float16, torch.bfloat16):
            if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                continue
            runs.append((dtype_key(dtype), dtype, "ieee"))
            if dtype == torch.float32:
                runs.append(("tf32", dtype, "tf32"))
        flops: dict[str, float] = {}
        for key, dtype, precision in runs:
            x = torch.randn(side, side, device=device, dtype=dtype)
            y = torch.randn(side, side, device=device, dtype=dtype)
            out = torch.empty(side, side, device=device, dtype=dtype)
            raw[f"matmul_{key}"] = _time_cuda(
                lambda x=x, y=y, out=out, p=precision:
                kernels.launch_matmul(x, y, out, input_precision=p), repeats, device)
            flops[key] = 2 * side**3 / min(raw[f"matmul_{key}"])
            sizes[f"matmul_n_{key}"] = side
    return Ceilings(device=str(device), device_name=props.name, method="triton",
                    bandwidth_gbps=bandwidth, flops_per_s=flops, sizes=sizes, raw_times_s=raw)


def _check_amount(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ConfigError(f"roofline: {name} must be {need}, got {value!r}")
    return float(value)


def roofline(flops: float, bytes_moved: float, step_time_s: float, ceilings: Ceilings,
             dtype: str | torch.dtype = "float32", *,
             spec_flops_per_s: float | None = None) -> dict[str, float | str | None]:
    """Place one step (``flops`` FLOPs, ``bytes_moved`` bytes, taking ``step_time_s``) on the
    roofline of ``ceilings``, with the compute roof for ``dtype``.

    Returns a flat dict (keys carry units): flops, bytes_moved, step_time_s,
    achieved_flops_per_s, achieved_bandwidth_gbps, peak_flops_per_s, peak_bandwidth_gbps,
    mfu_pct (achieved / measured peak FLOP/s), bandwidth_utilization_pct,
    arithmetic_intensity_flop_per_byte (None when no bytes move), ridge_point_flop_per_byte,
    bound ("memory" below the ridge, "compute" at or above it; None for an empty step),
    roofline_step_time_s (max of compute time and memory time at the roofs),
    roofline_efficiency_pct (roofline time / step time), and mfu_spec_pct (against
    ``spec_flops_per_s``, e.g. a GPU's datasheet; None when not given).
    Raises ConfigError for negative or non-finite amounts, a non-positive step time, or a dtype
    with no measured ceiling.
    """
    flops = _check_amount("flops", flops)
    bytes_moved = _check_amount("bytes_moved", bytes_moved)
    step_time_s = _check_amount("step_time_s", step_time_s, positive=True)
    peak_flops = ceilings.peak_flops_per_s(dtype)
    peak_bytes_per_s = ceilings.peak_bandwidth_gbps * 1e9
    achieved_flops = flops / step_time_s
    intensity = flops / bytes_moved if bytes_moved else None
    ridge = peak_flops / peak_bytes_per_s
    if flops == 0 and bytes_moved == 0:
        bound = None
    elif intensity is None or intensity >= ridge:
        bound = "compute"
    else:
        bound = "memory"
    roofline_time = max(flops / peak_flops, bytes_moved / peak_bytes_per_s)
    mfu_spec = None
    if spec_flops_per_s is not None:
        mfu_spec = 100 * achieved_flops / _check_amount("spec_flops_per_s", spec_flops_per_s,
                                                        positive=True)
    return {
        "flops": flops,
        "bytes_moved": bytes_moved,
        "step_time_s": step_time_s,
        "achieved_flops_per_s": achieved_flops,
        "achieved_bandwidth_gbps": bytes_moved / step_time_s / 1e9,
        "peak_flops_per_s": peak_flops,
        "peak_bandwidth_gbps": ceilings.peak_bandwidth_gbps,
        "mfu_pct": 100 * achieved_flops / peak_flops,
        "bandwidth_utilization_pct": 100 * bytes_moved / step_time_s / peak_bytes_per_s,
        "arithmetic_intensity_flop_per_byte": intensity,
        "ridge_point_flop_per_byte": ridge,
        "bound": bound,
        "roofline_step_time_s": roofline_time,
        "roofline_efficiency_pct": 100 * roofline_time / step_time_s,
        "mfu_spec_pct": mfu_spec,
    }

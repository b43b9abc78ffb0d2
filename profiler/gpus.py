"""A table of NVIDIA GPUs for capacity planning (``batchprof plan``) and rooflines.

Figures are the vendors' published peaks, **dense** (NVIDIA quotes tensor-core figures "with
sparsity"; those are halved here), FLOP/s per dtype of the tensor-core path with FP32
accumulate where the vendor distinguishes (GeForce). A dtype a GPU has no fast path for is
absent from ``dense_flops`` (``GpuSpec.flops`` returns None, never a made-up number).

``memory_bytes`` is the total the driver reports (nvidia-smi "Total"), typical of recent drivers
with ECC at its default; it varies by a fraction of a percent across drivers and boards.
``context_overhead_bytes_estimate`` is memory the caching allocator can never get: the CUDA
context, loaded kernel modules and library handles (estimated per architecture), plus what
recent drivers keep back out of "Total" (nvidia-smi -q "Reserved", roughly 0.6% of the card).
It is an estimate: measure it on the real device when it matters, and override it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

MiB = 1024 * 1024
T = 1e12

DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. ``bandwidth_gbps`` is memory bandwidth in GB/s (10^9 bytes/s)."""

    name: str
    memory_bytes: int
    bandwidth_gbps: float
    dense_flops: Mapping[str, float]  # dtype ("fp32", "tf32", "fp16", "bf16", "fp8") -> FLOP/s
    compute_capability: tuple[int, int]
    context_overhead_bytes_estimate: int
    source: str

    def __post_init__(self) -> None:
        unknown = set(self.dense_flops) - set(DTYPES)
        if unknown:
            raise ValueError(f"{self.name}: unknown dtypes {sorted(unknown)}; expected {DTYPES}")
        object.__setattr__(self, "dense_flops", MappingProxyType(dict(self.dense_flops)))

    def flops(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for ``dtype``; None where the GPU has no fast path for it."""
        return self.dense_flops.get(dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "bandwidth_gbps": self.bandwidth_gbps,
            "dense_flops": dict(self.dense_flops),
            "compute_capability": list(self.compute_capability),
            "context_overhead_bytes_estimate": self.context_overhead_bytes_estimate,
            "usable_bytes": usable_bytes(self),
            "source": self.source,
        }


def usable_bytes(spec: GpuSpec) -> int:
    """Memory the caching allocator can reserve: total minus the context overhead estimate."""
    return spec.memory_bytes - spec.context_overhead_bytes_estimate


# CUDA context + modules + cuBLAS/cuDNN handles with lazy module loading (CUDA >= 11.7), by
# architecture. Rough figures for a process that has run a training step; see module docstring.
_CONTEXT_MIB_BY_ARCH = {9: 640, 8: 576, 7: 448}
_DRIVER_RESERVED_FRACTION = 0.006


def _gpu(name: str, total_mib: int, bandwidth_gbps: float, flops: dict[str, float],
         cc: tuple[int, int], source: str) -> GpuSpec:
    context_mib = _CONTEXT_MIB_BY_ARCH[cc[0]] + round(_DRIVER_RESERVED_FRACTION * total_mib)
    return GpuSpec(name, total_mib * MiB, bandwidth_gbps, flops, cc, context_mib * MiB, source)


_TABLE: tuple[GpuSpec, ...] = (
    # NVIDIA H100 Tensor Core GPU datasheet + "NVIDIA H100 Tensor Core GPU Architecture"
    # whitepaper (H100 SXM5): FP32 66.9, TF32 494.7, FP16/BF16 989.4, FP8 1978.9 TFLOPS dense;
    # HBM3 3.35 TB/s.
    _gpu("H100-80GB", 81559, 3350,
         {"fp32": 66.9 * T, "tf32": 494.7 * T, "fp16": 989.4 * T, "bf16": 989.4 * T,
          "fp8": 1978.9 * T}, (9, 0), "NVIDIA H100 datasheet / H100 architecture whitepaper (SXM5)"),
    # Same sources, H100 PCIe: FP32 51.2, TF32 378, FP16/BF16 756.5, FP8 1513 dense; 2 TB/s.
    _gpu("H100-PCIe-80GB", 81559, 2000,
         {"fp32": 51.2 * T, "tf32": 378.0 * T, "fp16": 756.5 * T, "bf16": 756.5 * T,
          "fp8": 1513.0 * T}, (9, 0), "NVIDIA H100 datasheet / H100 architecture whitepaper (PCIe)"),
    # NVIDIA H200 Tensor Core GPU datasheet (H200 SXM): FP32 67, TF32 989*, BF16/FP16 1979*,
    # FP8 3958* TFLOPS (* with sparsity, halved here); HBM3e 141 GB at 4.8 TB/s.
    _gpu("H200-141GB", 143771, 4800,
         {"fp32": 67.0 * T, "tf32": 494.5 * T, "fp16": 989.5 * T, "bf16": 989.5 * T,
          "fp8": 1979.0 * T}, (9, 0), "NVIDIA H200 datasheet (SXM)"),
    # NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5, TF32 156, BF16/FP16 312 TFLOPS dense;
    # A100 40GB SXM HBM2 1,555 GB/s; A100 80GB SXM HBM2e 2,039 GB/s. No FP8.
    _gpu("A100-40GB", 40960, 1555,
         {"fp32": 19.5 * T, "tf32": 156.0 * T, "fp16": 312.0 * T, "bf16": 312.0 * T},
         (8, 0), "NVIDIA A100 datasheet (40GB SXM)"),
    _gpu("A100-80GB", 81920, 2039,
         {"fp32": 19.5 * T, "tf32": 156.0 * T, "fp16": 312.0 * T, "bf16": 312.0 * T},
         (8, 0), "NVIDIA A100 datasheet (80GB SXM)"),
    # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16/FP16 125 TFLOPS dense; 600 GB/s GDDR6.
    # AWS publishes no A10G datasheet (G5 instances); the A10 figures are an approximation.
    _gpu("A10G-24GB", 23028, 600,
         {"fp32": 31.2 * T, "tf32": 62.5 * T, "fp16": 125.0 * T, "bf16": 125.0 * T},
         (8, 6), "NVIDIA A10 datasheet (A10G is AWS's variant; approximate)"),
    # NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3, TF32 120*, BF16/FP16 242*, FP8 485*
    # TFLOPS (* with sparsity, halved here); 300 GB/s GDDR6.
    _gpu("L4-24GB", 23034, 300,
         {"fp32": 30.3 * T, "tf32": 60.0 * T, "fp16": 121.0 * T, "bf16": 121.0 * T,
          "fp8": 242.5 * T}, (8, 9), "NVIDIA L4 datasheet"),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183 / 366*, BF16/FP16 362.05 / 733*, FP8 733 /
    # 1,466* TFLOPS; 864 GB/s GDDR6.
    _gpu("L40S-48GB", 46068, 864,
         {"fp32": 91.6 * T, "tf32": 183.0 * T, "fp16": 362.05 * T, "bf16": 362.05 * T,
          "fp8": 733.0 * T}, (8, 9), "NVIDIA L40S datasheet"),
    # "NVIDIA Ada GPU Architecture" whitepaper, GeForce RTX 4090: FP32 82.6; tensor, FP32
    # accumulate, dense: TF32 82.6, FP16/BF16 165.2, FP8 330.3 TFLOPS; GDDR6X 1,008 GB/s.
    _gpu("RTX4090-24GB", 24564, 1008,
         {"fp32": 82.6 * T, "tf32": 82.6 * T, "fp16": 165.2 * T, "bf16": 165.2 * T,
          "fp8": 330.3 * T}, (8, 9), "NVIDIA Ada GPU architecture whitepaper (RTX 4090)"),
    # NVIDIA T4 Tensor Core GPU datasheet: FP32 8.1, mixed-precision FP16/FP32 65 TFLOPS;
    # 320 GB/s GDDR6. Turing has no TF32/BF16/FP8 tensor cores.
    _gpu("T4-16GB", 15360, 320, {"fp32": 8.1 * T, "fp16": 65.0 * T}, (7, 5),
         "NVIDIA T4 datasheet"),
    # NVIDIA Tesla V100 datasheet (SXM2): FP32 15.7, tensor (FP16) 125 TFLOPS; HBM2 900 GB/s.
    _gpu("V100-16GB", 16160, 900, {"fp32": 15.7 * T, "fp16": 125.0 * T}, (7, 0),
         "NVIDIA Tesla V100 datasheet (SXM2 16GB)"),
    _gpu("V100-32GB", 32510, 900, {"fp32": 15.7 * T, "fp16": 125.0 * T}, (7, 0),
         "NVIDIA Tesla V100 datasheet (SXM2 32GB)"),
)

GPUS: Mapping[str, GpuSpec] = MappingProxyType({g.name: g for g in _TABLE})


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Extra spellings (normalized: lower case, punctuation dropped) -> canonical name.
_ALIASES: dict[str, str] = {
    "h100": "H100-80GB", "h100sxm": "H100-80GB", "h100sxm5": "H100-80GB",
    "h100sxm80gb": "H100-80GB", "h10080gbhbm3": "H100-80GB",
    "h100pcie": "H100-PCIe-80GB", "h100pcie80gb": "H100-PCIe-80GB",
    "h200": "H200-141GB", "h200sxm": "H200-141GB", "h200141gb": "H200-141GB",
    "a100sxm40gb": "A100-40GB", "a100sxm440gb": "A100-40GB", "a100pcie40gb": "A100-40GB",
    "a100sxm80gb": "A100-80GB", "a100sxm480gb": "A100-80GB", "a10080gbpcie": "A100-80GB",
    "a10g": "A10G-24GB", "l4": "L4-24GB", "l40s": "L40S-48GB",
    "rtx4090": "RTX4090-24GB", "4090": "RTX4090-24GB", "geforcertx4090": "RTX4090-24GB",
    "t4": "T4-16GB", "teslat4": "T4-16GB",
    "v100sxm216gb": "V100-16GB", "v100pcie16gb": "V100-16GB",
    "v100sxm232gb": "V100-32GB", "v100pcie32gb": "V100-32GB",
}
_AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "a100": ("A100-40GB", "A100-80GB"),
    "v100": ("V100-16GB", "V100-32GB"),
}
_LOOKUP: dict[str, str] = {**{_key(g.name): g.name for g in _TABLE}, **_ALIASES}


def known_gpus() -> tuple[str, ...]:
    """Canonical names in table order."""
    return tuple(GPUS)


def get_gpu(name: str) -> GpuSpec:
    """Look a GPU up by name, case- and punctuation-insensitively ("h100", "A100-40GB", ...).

    Raises ConfigError for an unknown or ambiguous name, listing the known names.
    """
    key = _key(name)
    if key in _LOOKUP:
        return GPUS[_LOOKUP[key]]
    known = ", ".join(known_gpus())
    if key in _AMBIGUOUS:
        options = " or ".join(_AMBIGUOUS[key])
        raise ConfigError(f"GPU name {name!r} is ambiguous: say {options}")
    raise ConfigError(f"unknown GPU {name!r}; known GPUs: {known}")


# torch.cuda.get_device_name() -> family, most specific pattern first ("l40s" before "l4").
_FAMILIES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"h200"), ("H200-141GB",)),
    (re.compile(r"h100.*pcie"), ("H100-PCIe-80GB",)),
    (re.compile(r"h100"), ("H100-80GB",)),
    (re.compile(r"a100"), ("A100-40GB", "A100-80GB")),
    (re.compile(r"a10g"), ("A10G-24GB",)),
    (re.compile(r"l40s"), ("L40S-48GB",)),
    (re.compile(r"\bl4\b"), ("L4-24GB",)),
    (re.compile(r"\bt4\b"), ("T4-16GB",)),
    (re.compile(r"rtx\s*4090"), ("RTX4090-24GB",)),
    (re.compile(r"v100"), ("V100-16GB", "V100-32GB")),
)
_MATCH_TOLERANCE = 0.05  # boards of one family differ by more; drivers' totals by ~1%


def match_gpu(device_name: str, total_bytes: int) -> GpuSpec | None:
    """Best-effort map of ``torch.cuda.get_device_name()`` + total memory to a table entry.

    "NVIDIA H100 80GB HBM3" with ~80 GiB -> H100-80GB; "NVIDIA A100-SXM4-40GB" -> A100-40GB.
    The name picks the family, the memory picks the board (within 5%); None when either does
    not match (e.g. "NVIDIA H100 NVL", 94 GB, is not in the table).
    """
    lowered = device_name.lower()
    for pattern, names in _FAMILIES:
        if pattern.search(lowered):
            best = min((GPUS[n] for n in names),
                       key=lambda g: abs(g.memory_bytes - total_bytes))
            if abs(best.memory_bytes - total_bytes) <= _MATCH_TOLERANCE * best.memory_bytes:
                return best
            return None
    return None

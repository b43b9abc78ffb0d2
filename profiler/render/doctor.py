"""``batchprof doctor``: the environment dict as rich tables."""

from __future__ import annotations

from typing import Any

_KERNEL_MODES = {
    "compiled": "compiled (JIT for the GPU)",
    "interpreted": "interpreted (Triton's CPU interpreter: exact, slow, never a speed figure)",
    "unavailable": "unavailable",
}


def _or_na(value: Any) -> str:
    return "n/a" if value is None else str(value)


def doctor_renderables(env: dict[str, Any]) -> list[Any]:
    """Rich tables for an :func:`batchprof.environment.environment` dict."""
    from rich.table import Table

    versions = env["versions"]
    cuda, nvml, kernels, defaults = env["cuda"], env["nvml"], env["kernels"], env["defaults"]

    summary = Table(title="batchprof doctor", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    for name in ("batchprof", "python", "torch", "triton", "nvidia-ml-py", "psutil"):
        summary.add_row(name, _or_na(versions.get(name)))
    summary.add_row("platform", env["platform"])
    summary.add_row("torch built for CUDA", _or_na(cuda["torch_cuda_build"]))
    summary.add_row("CUDA available", "yes" if cuda["available"] else f"no ({cuda['reason']})")
    if cuda["available"]:
        summary.add_row("cuDNN", _or_na(cuda["cudnn_version"]))
        summary.add_row("CUDA allocator", _or_na(cuda["allocator_backend"]))
    summary.add_row("NVIDIA driver", _or_na(nvml["driver_version"]) if nvml["available"]
                    else f"n/a ({nvml['reason']})")
    summary.add_row("NVML", _or_na(nvml["nvml_version"]) if nvml["available"] else "n/a")
    mode = kernels["mode"]
    summary.add_row("Triton kernels", _KERNEL_MODES.get(mode, _or_na(mode))
                    + (f" ({kernels['reason']})" if kernels["reason"] else ""))
    for name, value in env["env"].items():
        if value is not None:
            summary.add_row(f"${name}", value)
    out: list[Any] = [summary]

    gpus = _gpu_rows(cuda, nvml)
    if gpus:
        table = Table(title="GPUs")
        for column in ("index", "name", "memory", "compute capability", "seen by"):
            table.add_column(column)
        for row in gpus:
            table.add_row(*row)
        out.append(table)

    plan = Table(title="by default on this machine", show_header=False)
    plan.add_column("what", style="bold")
    plan.add_column("value")
    plan.add_row("--device auto", defaults["device"]
                 + (f"  ({defaults['device_notice']})" if defaults["device_notice"] else ""))
    reason = defaults["sampler_reason"]
    if reason == nvml["reason"]:
        reason = "NVML unavailable, see NVIDIA driver above"
    plan.add_row("sampler", f"{defaults['sampler']}  ({reason})")
    out.append(plan)
    return out


def _gpu_rows(cuda: dict[str, Any], nvml: dict[str, Any]) -> list[tuple[str, ...]]:
    from batchprof.units import format_bytes

    if cuda["devices"]:  # CUDA ordinals: what --device cuda:N means
        return [(f"cuda:{d['index']}", d["name"], format_bytes(d["total_memory_bytes"]),
                 ".".join(map(str, d["compute_capability"])), "torch") for d in cuda["devices"]]
    # torch cannot use them (e.g. a CPU build of torch), but the driver sees them.
    return [(f"nvml:{g['nvml_index']}", _or_na(g["name"]), format_bytes(g["memory_total_bytes"]),
             "n/a", "NVML only") for g in nvml["gpus"]]

"""Parts about the device itself: the gpu-marked tests, the NVML sampler, the Triton kernels."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import common, lib
from .record import Recorder

# ---------------------------------------------------------------------------- pytest -m gpu


def _gpu_test_files() -> list[str]:
    """Test files that mention the gpu marker (the dry run collects only these: fast)."""
    return sorted(str(p.relative_to(lib.ROOT)) for p in (lib.ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(errors="replace"))


def pytest_gpu(rec: Recorder) -> None:
    """Every gpu-marked test, with each failure's message from pytest's JUnit XML."""
    import os

    xml = Path(rec.path).with_suffix(".junit.xml")
    argv = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
            f"--junitxml={xml}", "-o", "junit_family=xunit1"]
    if os.environ.get("GPUCHECK_INSTALL") == "shim":  # no entry points without pip
        argv += ["-p", lib.pytest_plugin_module()]
    argv += _gpu_test_files() if rec.dry_run else ["tests"]
    rec.figure("command", argv[1:])
    try:
        done = subprocess.run(argv, cwd=lib.ROOT, capture_output=True, text=True,
                              timeout=max(5.0, rec.left_s() - 3))
        rec.figure("exit_code", done.returncode)
        rec.figure("output_tail", "\n".join(done.stdout.strip().splitlines()[-15:]))
    except subprocess.TimeoutExpired:
        rec.check("pytest -m gpu finished inside its time box", False,
                  f"killed after {rec.budget_s - 3:.0f} s; results below are what it wrote")
    counts = _read_junit(rec, xml)
    if counts is None:
        return
    ran = counts["tests"] - counts["skipped"]
    if rec.dry_run:
        rec.check("gpu-marked tests were collected", counts["tests"] > 0, f"{counts['tests']}")
        rec.skip(f"no CUDA device: all {counts['tests']} gpu-marked tests skipped themselves")
        return
    rec.check("gpu-marked tests ran (not skipped)", ran > 0, f"{ran} of {counts['tests']} ran")
    rec.check("no gpu-marked test failed", counts["failures"] + counts["errors"] == 0,
              f"{counts['failures']} failed, {counts['errors']} errors")


def _read_junit(rec: Recorder, xml: Path) -> dict[str, int] | None:
    if not xml.exists():
        rec.check("pytest wrote its JUnit report", False, f"{xml.name} missing")
        return None
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, "JUnit XML without a testsuite"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    rec.figure("counts", counts)
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = kind
                message = (node.get("message") or node.text or "").strip()[:1500]
        rec.row(test=f"{case.get('classname')}::{case.get('name')}", outcome=outcome,
                time_s=float(case.get("time", 0) or 0), message=message)
    return counts


# ---------------------------------------------------------------------------- NVML


def _series_rows(rec: Recorder, window: str, series: Any, unsupported: dict[str, str]) -> None:
    for s in series:
        present = [v for v in s.values if v is not None]
        why = next((r for g, r in unsupported.items() if g in s.name or s.name in g), None)
        if not present and why is None and unsupported:
            why = "; ".join(f"{g}: {r}" for g, r in unsupported.items())
        rec.row(window=window, field=s.name, unit=s.unit, samples=len(s.values),
                null_samples=len(s.values) - len(present), mean=s.mean, max=s.max,
                unsupported_reason=why)
        rec.check(f"{window}: {s.name} sampled or explained", bool(present) or why is not None,
                  f"{len(present)} of {len(s.values)} samples non-null"
                  + (f"; NVML: {why}" if why else ""))


def nvml(rec: Recorder) -> None:
    """Every field the NVML sampler gives, during a training step and a matmul loop."""
    import batchprof

    try:
        sampler = lib.make_sampler("nvml", 0.05)
    except batchprof.DeviceUnavailableError as exc:  # SamplerUnavailable is one
        rec.skip(str(exc))
        sampler = lib.make_sampler("psutil", 0.05)
        rec.note("the field checks ran on the psutil sampler instead (the same window logic)")
    dev = common.device(rec.dry_run)
    with sampler:
        m = batchprof.measure("gpucheck.workloads:tiny_wide" if rec.dry_run else "transformer",
                              4 if rec.dry_run else 256, device=dev,
                              sampler=sampler,
                              timing=batchprof.TimingPolicy(timed_steps=3 if rec.dry_run else 10,
                                                            max_timed_steps=10))
        unsupported = dict(getattr(sampler, "unsupported", {}) or {})
        _series_rows(rec, "training step", m.samples, unsupported)
        sampler.begin_window("busy loop")
        _busy(dev, 0.3 if rec.dry_run else 2.0)
        loop = sampler.end_window("busy loop")
        _series_rows(rec, "busy loop", loop, unsupported)
    rec.figure("unsupported", unsupported)
    for name in ("kernel_busy_pct", "power_w", "sm_clock_mhz", "energy_j", "cpu_pct"):
        for window, series in (("training_step", m.samples), ("busy_loop", loop)):
            found = next((s for s in series if s.name == name), None)
            if found is not None:
                rec.figure(f"{window}_{name}", {"mean": found.mean, "max": found.max})
    busy = rec.data["figures"].get("busy_loop_kernel_busy_pct")
    if busy is not None:
        rec.check("kernel busy >= 90% during a matmul loop", busy["mean"] is not None
                  and busy["mean"] >= 90, f"mean {busy['mean']}%")


def _busy(dev: str, seconds: float) -> None:
    import torch

    side = 256 if dev == "cpu" else 8192
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    x = torch.randn(side, side, device=dev, dtype=dtype)
    y = torch.empty_like(x)  # the same random operands every time: power depends on the data
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            torch.mm(x, x, out=y)
        if dev == "cuda":
            torch.cuda.synchronize()


# ---------------------------------------------------------------------------- Triton

PRIOR_MEASURED = {"copy_gbps": 4300.0, "bf16_matmul_flops": 790e12}  # issue 17, H200


def _best_time_s(fn: Any, repeats: int, cuda: bool) -> float:
    import torch

    fn()
    if not cuda:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)
    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
             for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return min(s.elapsed_time(e) for s, e in pairs) / 1e3


def _torch_rates(c: Any, cuda: bool, repeats: int) -> dict[str, float]:
    """torch's own copy, triad and matmul on the sizes the Triton ceilings used."""
    import torch

    dev = "cuda" if cuda else "cpu"
    n = c.sizes["stream_bytes_per_array"] // 4
    a, b, d = torch.empty(n, device=dev), torch.rand(n, device=dev), torch.rand(n, device=dev)
    rates = {"copy_gbps": 2 * 4 * n / _best_time_s(lambda: a.copy_(b), repeats, cuda) / 1e9,
             "triad_gbps": 3 * 4 * n / _best_time_s(
                 lambda: torch.add(b, d, alpha=3.0, out=a), repeats, cuda) / 1e9}
    dtypes = {"float32": torch.float32, "tf32": torch.float32, "float16": torch.float16,
              "bfloat16": torch.bfloat16}
    previous = torch.backends.cuda.matmul.allow_tf32
    for key in c.flops_per_s:
        side = c.sizes[f"matmul_n_{key}"]
        x = torch.randn(side, side, device=dev, dtype=dtypes[key])
        out = torch.empty_like(x)
        torch.backends.cuda.matmul.allow_tf32 = key == "tf32"
        try:
            rates[f"{key}_matmul_flops"] = 2 * side**3 / _best_time_s(
                lambda x=x, out=out: torch.mm(x, x, out=out), repeats, cuda)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    return rates


def _kernels_correct(rec: Recorder, dev: str) -> None:
    """The Triton kernels against torch on odd shapes (compiled on CUDA, interpreted on CPU)."""
    import torch

    from batchprof import kernels

    x = torch.randn(5 * 123 * 123 + 7, device=dev)
    y = torch.randn_like(x)
    rec.check("Triton copy equals the input", torch.equal(kernels.stream_copy(x), x))
    rec.check("Triton triad equals b + 3c", torch.allclose(kernels.stream_triad(x, y, 3.0),
                                                           x + 3.0 * y, rtol=1e-6, atol=1e-6))
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    a = torch.randn(67, 45, device=dev, dtype=dtype)
    b = torch.randn(45, 31, device=dev, dtype=dtype)
    got, want = kernels.tiled_matmul(a, b).float(), (a.float() @ b.float())
    error = float((got - want).abs().max())
    rec.check(f"Triton matmul ({dtype}) matches torch", error <= (1e-3 if dev == "cpu" else 0.5),
              f"max abs error {error:.3g}")


def triton(rec: Recorder, dtypes: tuple[str, ...] = ("bfloat16",), bandwidth: bool = True) -> None:
    """Copy/triad bandwidth and matmul FLOP/s: Triton vs torch on the same sizes, vs datasheet.

    ``dtypes``: the matmuls to run (float32 also gives tf32); each costs an autotune over
    12 configs at 8192^3 on a cold Triton cache, hence bf16 here and fp32 in a part of its own.
    """
    import torch

    import batchprof

    cuda = not rec.dry_run
    dev = common.device(rec.dry_run)
    from batchprof import kernels

    rec.figure("kernel_mode", kernels.kernel_mode())
    if bandwidth:
        with rec.attempt("correctness"):
            _kernels_correct(rec, dev)
    wanted = tuple(getattr(torch, d) for d in dtypes)
    if cuda:
        c = batchprof.ceilings("cuda", dtypes=wanted, repeats=10)
    else:
        rec.skip("compiled Triton needs CUDA: kernels were checked interpreted for correctness; "
                 "the rate comparison ran on the CPU reference (torch vs torch)")
        c = batchprof.ceilings("cpu", stream_bytes=1 << 20, matmul_n=128, repeats=2,
                               dtypes=wanted)
    ours = {"copy_gbps": c.bandwidth_gbps["copy"], "triad_gbps": c.bandwidth_gbps["triad"],
            **{f"{k}_matmul_flops": v for k, v in c.flops_per_s.items()}}
    rec.figure("method", c.method)
    rec.figure("sizes", dict(c.sizes))
    rec.figure("batchprof_ceilings", ours)
    theirs = _torch_rates(c, cuda, 10 if cuda else 2)
    rec.figure("torch_same_sizes", theirs)
    for key, value in ours.items():
        ratio = value / theirs[key] if theirs.get(key) else None
        rec.row(probe=key, batchprof=value, torch=theirs.get(key),
                ratio=None if ratio is None else round(ratio, 4))
        if cuda:
            rec.check(f"{key}: Triton >= 80% of torch", None if ratio is None else ratio >= 0.8,
                      f"ratio {ratio:.3f}" if ratio is not None else "no torch figure")
    if not cuda:
        return
    identity = common.gpu_identity()
    rec.figure("gpu", identity)
    rec.figure("prior_measured", PRIOR_MEASURED)
    sheet = {"copy_gbps": identity["datasheet_bandwidth_gbps"],
             "triad_gbps": identity["datasheet_bandwidth_gbps"],
             "bfloat16_matmul_flops": identity["datasheet_bf16_flops"],
             "tf32_matmul_flops": identity["datasheet_tf32_flops"]}
    rec.figure("fraction_of_datasheet", {k: (ours[k] / v if v and k in ours else None)
                                         for k, v in sheet.items()})

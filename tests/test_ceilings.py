"""Device ceilings (a real, tiny CPU measurement) and the pure roofline arithmetic."""

from __future__ import annotations

import argparse
import io
import json
import math

import pytest
import torch
from rich.console import Console

import batchprof
from batchprof.cli import ceilings as ceilings_command
from batchprof.errors import ConfigError, DeviceUnavailableError
from batchprof.roofline.ceilings import Ceilings, ceilings, dtype_key, roofline

TINY = {"stream_bytes": 1 << 20, "matmul_n": 64, "repeats": 3}


@pytest.fixture(scope="module")
def cpu_ceilings() -> Ceilings:
    return ceilings("cpu", **TINY)


def made_up_ceilings(*, bandwidth_gbps: float = 100.0, flops: float = 1e12) -> Ceilings:
    return Ceilings(device="cuda:0", device_name="made-up", method="triton",
                    bandwidth_gbps={"copy": bandwidth_gbps * 0.9, "triad": bandwidth_gbps},
                    flops_per_s={"float32": flops, "float16": 4 * flops},
                    sizes={"stream_bytes_per_array": 1}, raw_times_s={"copy": (1.0,)})


# --------------------------------------------------------------------------- measuring


def test_cpu_ceilings_are_positive_rates_from_the_reference_ops(cpu_ceilings):
    c = cpu_ceilings
    assert c.device == "cpu" and c.method == "torch-reference"
    assert c.num_threads == torch.get_num_threads()
    assert set(c.bandwidth_gbps) == {"copy", "triad"}
    assert set(c.flops_per_s) == {"float32", "float16", "bfloat16"}
    for rate in [*c.bandwidth_gbps.values(), *c.flops_per_s.values()]:
        assert math.isfinite(rate) and rate > 0
    assert c.sizes["stream_bytes_per_array"] == 1 << 20
    assert all(c.sizes[f"matmul_n_{d}"] == 64 for d in c.flops_per_s)
    assert all(len(c.raw_times_s[k]) == 3 for k in ("copy", "triad", "matmul_float32"))
    # the peaks come from the best of the kept raw times (STREAM's convention)
    best_copy = min(c.raw_times_s["copy"])
    assert c.bandwidth_gbps["copy"] == pytest.approx(2 * (1 << 20) / best_copy / 1e9)
    best_triad = min(c.raw_times_s["triad"])
    assert c.bandwidth_gbps["triad"] == pytest.approx(3 * (1 << 20) / best_triad / 1e9)
    best_mm = min(c.raw_times_s["matmul_float32"])
    assert c.flops_per_s["float32"] == pytest.approx(2 * 64**3 / best_mm)


def test_ceilings_round_trip_through_json(cpu_ceilings):
    again = Ceilings.from_dict(json.loads(json.dumps(cpu_ceilings.to_dict())))
    assert again == cpu_ceilings


def test_cpu_matmul_size_adapts_but_never_exceeds_the_cap():
    c = ceilings("cpu", stream_bytes=4096, matmul_n=512, dtypes=(torch.float32,))
    assert c.sizes["matmul_n_float32"] in (256, 512)  # grows from 256 while runs stay short
    assert 3 <= len(c.raw_times_s["matmul_float32"]) <= 7


def test_package_level_ceilings_is_callable_whatever_the_import_order():
    # `batchprof.ceilings` is both the function and the module of that name
    assert callable(batchprof.ceilings)
    c = batchprof.ceilings("cpu", stream_bytes=4096, matmul_n=16, repeats=1,
                           dtypes=(torch.float32,))
    assert isinstance(c, Ceilings)


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "'cpu' or 'cuda"),
    ({"device": "cpu", "repeats": 0}, "repeats"),
    ({"device": "cpu", "stream_bytes": -1}, "stream_bytes"),
    ({"device": "cpu", "matmul_n": 2.5}, "matmul_n"),
])
def test_bad_ceilings_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ceilings(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_ceilings_without_cuda_is_device_unavailable():
    with pytest.raises(DeviceUnavailableError, match="--device cpu"):
        ceilings("cuda")


@pytest.mark.timing
@pytest.mark.gpu
def test_cuda_ceilings_use_triton_and_tf32_is_faster_than_ieee():
    c = ceilings("cuda", stream_bytes=256 << 20, matmul_n=4096, repeats=5)
    assert c.method == "triton" and c.device.startswith("cuda")
    assert {"float32", "tf32", "float16"} <= set(c.flops_per_s)
    assert c.flops_per_s["float16"] > c.flops_per_s["float32"]


# --------------------------------------------------------------------------- roofline


def test_memory_bound_step():
    c = made_up_ceilings(bandwidth_gbps=100.0, flops=1e12)  # ridge at 10 FLOP/byte
    r = roofline(flops=1e9, bytes_moved=1e9, step_time_s=0.02, ceilings=c)
    assert r["bound"] == "memory"
    assert r["arithmetic_intensity_flop_per_byte"] == pytest.approx(1.0)
    assert r["ridge_point_flop_per_byte"] == pytest.approx(10.0)
    assert r["achieved_flops_per_s"] == pytest.approx(5e10)
    assert r["mfu_pct"] == pytest.approx(5.0)
    assert r["achieved_bandwidth_gbps"] == pytest.approx(50.0)
    assert r["bandwidth_utilization_pct"] == pytest.approx(50.0)
    assert r["peak_bandwidth_gbps"] == pytest.approx(100.0)  # the better of copy and triad
    assert r["roofline_step_time_s"] == pytest.approx(0.01)  # 1 GB at 100 GB/s
    assert r["roofline_efficiency_pct"] == pytest.approx(50.0)
    assert r["mfu_spec_pct"] is None


def test_compute_bound_step_uses_the_dtype_roof_and_spec():
    c = made_up_ceilings(bandwidth_gbps=100.0, flops=1e12)  # fp16 roof 4e12, ridge 40
    r = roofline(1e12, 1e9, 0.5, c, dtype=torch.float16, spec_flops_per_s=8e12)
    assert r["bound"] == "compute"
    assert r["peak_flops_per_s"] == 4e12
    assert r["mfu_pct"] == pytest.approx(50.0)
    assert r["mfu_spec_pct"] == pytest.approx(25.0)
    assert r["roofline_step_time_s"] == pytest.approx(0.25)


def test_roofline_edge_cases():
    c = made_up_ceilings()
    no_bytes = roofline(1e6, 0, 1.0, c)
    assert no_bytes["arithmetic_intensity_flop_per_byte"] is None
    assert no_bytes["bound"] == "compute"
    empty = roofline(0, 0, 1.0, c)
    assert empty["bound"] is None and empty["roofline_step_time_s"] == 0.0


@pytest.mark.parametrize("args, message", [
    ((-1, 1, 1.0), "flops"),
    ((1, float("nan"), 1.0), "bytes_moved"),
    ((1, 1, 0.0), "step_time_s"),
    ((1, 1, True), "step_time_s"),
])
def test_roofline_rejects_bad_amounts(args, message):
    with pytest.raises(ConfigError, match=message):
        roofline(*args, ceilings=made_up_ceilings())


def test_roofline_names_the_measured_dtypes_when_one_is_missing():
    with pytest.raises(ConfigError, match="float16, float32"):
        roofline(1, 1, 1.0, made_up_ceilings(), dtype="bfloat16")


def test_dtype_key():
    assert dtype_key(torch.bfloat16) == "bfloat16" and dtype_key("tf32") == "tf32"


# --------------------------------------------------------------------------- CLI subcommand


def run_command(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="batchprof")
    ceilings_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    out = io.StringIO()
    code = args.handler(args, Console(file=out, width=140, color_system=None))
    return code, out.getvalue()


def test_ceilings_command_prints_a_table():
    code, text = run_command(["ceilings", "--device", "cpu", "--stream-size", "1MiB",
                              "--matmul-n", "32", "--repeats", "2"])
    assert code == 0
    for expected in ("copy bandwidth", "triad bandwidth", "GB/s", "matmul float32", "GFLOP/s",
                     "32^3", "torch-reference"):
        assert expected in text


def test_ceilings_command_json():
    code, text = run_command(["ceilings", "--device", "cpu", "--stream-size", "64KiB",
                              "--matmul-n", "16", "--repeats", "1", "--json"])
    assert code == 0
    data = json.loads(text)
    assert data["method"] == "torch-reference" and data["sizes"]["matmul_n_float16"] == 16

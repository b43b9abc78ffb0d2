"""GPU table: lookup, aliases, errors, matching torch device names."""

from __future__ import annotations

import pytest

from batchprof.errors import ConfigError
from batchprof.gpus import DTYPES, GPUS, get_gpu, known_gpus, match_gpu, usable_bytes

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("H100-80GB", "H100-80GB"),
        ("h100", "H100-80GB"),
        ("H100 SXM", "H100-80GB"),
        ("h100-pcie", "H100-PCIe-80GB"),
        ("a100-40gb", "A100-40GB"),
        ("A100_80GB", "A100-80GB"),
        ("h200", "H200-141GB"),
        ("L4-24GB", "L4-24GB"),
        ("l4", "L4-24GB"),
        ("L40S", "L40S-48GB"),
        ("t4", "T4-16GB"),
        ("RTX 4090", "RTX4090-24GB"),
        ("rtx4090-24gb", "RTX4090-24GB"),
        ("V100-32GB", "V100-32GB"),
        ("a10g", "A10G-24GB"),
    ],
)
def test_get_gpu_names_and_aliases(query, expected):
    assert get_gpu(query).name == expected


def test_required_gpus_are_in_the_table_and_reachable_by_name():
    required = {"H100-80GB", "A100-40GB", "A100-80GB", "L4-24GB", "T4-16GB", "RTX4090-24GB",
                "H200-141GB", "V100-16GB", "V100-32GB", "A10G-24GB", "L40S-48GB"}
    assert required <= set(known_gpus())
    for name in known_gpus():
        assert get_gpu(name) is GPUS[name]
        assert get_gpu(name.lower()) is GPUS[name]


def test_unknown_name_lists_known_gpus():
    with pytest.raises(ConfigError) as err:
        get_gpu("B200")
    assert "B200" in str(err.value)
    assert "H100-80GB" in str(err.value) and "T4-16GB" in str(err.value)


def test_ambiguous_family_name_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match="A100-40GB or A100-80GB"):
        get_gpu("a100")


def test_table_figures_are_plausible():
    for spec in GPUS.values():
        assert set(spec.dense_flops) <= set(DTYPES)
        assert spec.flops("fp32") and spec.flops("fp16")
        # tensor-core fp16 is faster than plain fp32 on every GPU in the table
        assert spec.flops("fp16") > spec.flops("fp32")
        assert 0 < usable_bytes(spec) < spec.memory_bytes
        assert spec.context_overhead_bytes_estimate < 0.05 * spec.memory_bytes
        assert spec.bandwidth_gbps > 100
        assert spec.source
        assert spec.to_dict()["usable_bytes"] == usable_bytes(spec)
    assert get_gpu("t4").flops("bf16") is None  # Turing: no bf16 tensor cores
    assert get_gpu("a100-80gb").flops("fp8") is None
    assert get_gpu("h100").flops("bf16") == pytest.approx(989.4e12)
    assert get_gpu("h100").compute_capability == (9, 0)
    with pytest.raises(TypeError):
        get_gpu("h100").dense_flops["fp32"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("device_name", "total_bytes", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 85_520_809_984, "H100-80GB"),
        ("NVIDIA H100 PCIe", 85_520_809_984, "H100-PCIe-80GB"),
        ("NVIDIA H200", 143_771 * MiB, "H200-141GB"),
        ("NVIDIA A100-SXM4-40GB", 42_505_273_344, "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", 40 * GiB, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 85_198_045_184, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 80 * GiB, "A100-80GB"),
        ("NVIDIA L4", 23_034 * MiB, "L4-24GB"),
        ("NVIDIA L40S", 46_068 * MiB, "L40S-48GB"),
        ("Tesla T4", 15_360 * MiB, "T4-16GB"),
        ("NVIDIA GeForce RTX 4090", 24_564 * MiB, "RTX4090-24GB"),
        ("Tesla V100-SXM2-16GB", 16_160 * MiB, "V100-16GB"),
        ("Tesla V100-SXM2-32GB", 32_510 * MiB, "V100-32GB"),
        ("NVIDIA A10G", 23_028 * MiB, "A10G-24GB"),
    ],
)
def test_match_gpu_maps_torch_device_names(device_name, total_bytes, expected):
    spec = match_gpu(device_name, total_bytes)
    assert spec is not None and spec.name == expected


@pytest.mark.parametrize(
    ("device_name", "total_bytes"),
    [
        ("NVIDIA H100 NVL", 95_830 * MiB),  # family known, board (94 GB) not in the table
        ("NVIDIA L40", 46_068 * MiB),  # not an L4 nor an L40S
        ("AMD Instinct MI300X", 192 * GiB),
        ("NVIDIA GeForce RTX 3090", 24 * GiB),
    ],
)
def test_match_gpu_returns_none_when_unsure(device_name, total_bytes):
    assert match_gpu(device_name, total_bytes) is None

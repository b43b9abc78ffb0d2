"""``batchprof predict`` and ``batchprof plan`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from batchprof import ConfigError
from batchprof.cli.main import main
from batchprof.cli.plan import parse_gpu_names
from batchprof.cli.predict import parse_batch_sizes


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def words(text: str) -> str:
    """Rich wraps cells and lines to the terminal width; compare text with spaces collapsed."""
    return " ".join(text.split())


def test_parse_batch_sizes():
    assert parse_batch_sizes("1,8, 64,512") == [1, 8, 64, 512]
    for bad in ("", "1,,2", "0", "-4", "1.5", "eight"):
        with pytest.raises(ConfigError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_parse_gpu_names():
    assert parse_gpu_names("H100-80GB, T4-16GB") == ["H100-80GB", "T4-16GB"]
    with pytest.raises(ConfigError):
        parse_gpu_names(" , ")


def test_predict_json_has_one_record_per_size(capsys):
    code, out, _ = run_cli(capsys, "predict", "mlp", "--batch-sizes", "2,16", "--no-calibrate",
                           "--json")
    assert code == 0
    data = json.loads(out)
    assert [p["batch_size"] for p in data["predictions"]] == [2, 16]
    assert data["predictions"][1]["peak_allocated_bytes"] > \
        data["predictions"][0]["peak_allocated_bytes"]
    assert data["max_batch"] is None  # no GPU named


def test_predict_table_for_a_gpu_shows_categories_modules_and_max_batch(capsys):
    code, out, _ = run_cli(capsys, "predict", "transformer", "-b", "4,32", "--gpu", "A100-40GB")
    assert code == 0
    for text in ("reserved", "by category", "activation", "top modules", "blocks.",
                 "predicted max batch", "sdpa_cuda_fused"):
        assert text in words(out), text


def test_predict_cpu_table_reports_calibration(capsys):
    code, out, _ = run_cli(capsys, "predict", "mlp", "-b", "3")
    assert code == 0
    assert "calibration (measured vs predicted" in words(out)


def test_plan_json_max_batch_per_gpu(capsys):
    code, out, _ = run_cli(capsys, "plan", "transformer", "--gpus", "T4-16GB,H100-80GB",
                           "--json")
    assert code == 0
    rows = {r["gpu"]["name"]: r for r in json.loads(out)["gpus"]}
    assert set(rows) == {"T4-16GB", "H100-80GB"}
    assert rows["H100-80GB"]["max_batch"] > rows["T4-16GB"]["max_batch"] > 0
    for row in rows.values():
        assert row["peak_reserved_bytes"] <= row["usable_bytes"] < row["gpu"]["memory_bytes"]


def test_plan_table_lists_memory_bandwidth_and_flops(capsys):
    code, out, _ = run_cli(capsys, "plan", "mlp", "--gpus", "A100-80GB,L4-24GB")
    assert code == 0
    for text in ("max batch", "bandwidth", "bf16", "A100-80GB", "L4-24GB", "2,039 GB/s"):
        assert text in words(out), text


@pytest.mark.parametrize("argv, message", [
    (("predict", "mlp", "--batch-sizes", "1,x"), "--batch-sizes"),
    (("predict", "mlp", "-b", "4", "--gpu", "Z100"), "unknown GPU"),
    (("plan", "mlp", "--gpus", "H100-80GB,nope"), "unknown GPU"),
    (("plan", "mlp", "--gpus", "A100"), "ambiguous"),
    (("predict", "no-such-workload", "-b", "2"), "unknown workload"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 or "known GPUs" in err

"""The distributed command path under a real torchrun (2 CPU ranks, gloo), hard timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchprof.cli.parallel import _strip_nproc
from batchprof.distributed.errors import WorldMismatchError
from batchprof.distributed.launch import rank_env, torchrun_command
from batchprof.distributed.profile import check_global_batch
from batchprof.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.distributed_scenarios:tiny_blocks"


def torchrun(*args: str, tmp_path: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """``batchprof ARGS --nproc-per-node 2``: batchprof re-runs itself under torchrun."""
    cmd = [sys.executable, "-m", "batchprof", *args, "--nproc-per-node", "2",
           "--out", str(tmp_path)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_run_under_torchrun_reports_per_rank_and_global_batch_from_rank_0_only(tmp_path):
    done = torchrun("run", TINY, "--device", "cpu", "--parallel", "fsdp", "--memory-limit",
                    "600KiB", "--max-batch", "64", "--grad-accumulation", "2",
                    tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = list(tmp_path.iterdir())
    assert len(reports) == 1  # rank 0 alone wrote
    result = json.loads((reports[0] / "result.json").read_text())
    probes = [json.loads(line) for line in (reports[0] / "probes.jsonl").read_text().splitlines()]
    assert len(probes) == len(result["probes"])
    assert result["global_max_batch"] == result["max_batch"] * 2 * 2
    assert f"max batch per rank: {result['max_batch']}" in done.stdout
    assert done.stdout.count("max batch per rank") == 1  # printed once, by rank 0


def test_pure_launch_helpers():
    assert rank_env({}) is None
    env = rank_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.is_main) == (1, 2, False)
    with pytest.raises(ConfigError, match="incomplete"):
        rank_env({"RANK": "0"})
    with pytest.raises(ConfigError, match="inconsistent"):
        rank_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    cmd = torchrun_command(4, ["run", "mlp", "--parallel", "ddp"], python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
                   "-m", "batchprof", "run", "mlp", "--parallel", "ddp"]
    assert _strip_nproc(["run", "--nproc-per-node", "2", "x", "--nproc-per-node=3"]) == \
        ["run", "x"]
    with pytest.raises(ConfigError, match="positive"):
        torchrun_command(0, [])


def test_a_global_batch_the_world_does_not_divide_is_one_clear_error():
    assert check_global_batch(64, 8, 2) == 4
    with pytest.raises(WorldMismatchError, match="not divisible by world size 8 x grad "
                                                 "accumulation 2 = 16"):
        check_global_batch(100, 8, 2)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from batchprof.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_world_size_prints_per_rank_figures_as_json(capsys):
    code, out, _ = run_cli(capsys, "predict", TINY, "-b", "8,16", "--world-size", "4",
                           "--parallel", "zero2", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["batch_size"] for r in rows] == [8, 16]
    assert all(r["world_size"] == 4 and r["strategy"] == "zero2" for r in rows)
    assert rows[0]["global_batch"] == 32
    assert rows[0]["peak_allocated_bytes"] < rows[0]["single_process_peak_bytes"]


def test_plan_world_size_prints_max_batch_per_rank_and_global_batch(capsys):
    code, out, _ = run_cli(capsys, "plan", TINY, "--gpus", "T4-16GB", "--world-size", "8",
                           "--parallel", "fsdp", "--grad-accumulation", "2")
    assert code == 0
    assert "fsdp over 8 ranks, grad accumulation 2" in out
    line = next(x for x in out.splitlines() if x.startswith("T4-16GB"))
    per_rank, global_batch = (int(v) for v in line.split()[3:5])
    assert global_batch == per_rank * 8 * 2


@pytest.mark.parametrize("argv, message", [
    (["run", TINY, "--parallel", "ddp"], "start it with torchrun"),
    (["plan", TINY, "--world-size", "2"], "give both --world-size N and --parallel"),
    (["run", TINY, "--nproc-per-node", "2"], "--nproc-per-node needs --parallel"),
])
def test_distributed_options_misused_are_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in " ".join(err.split())
    assert len(err.strip().splitlines()) <= 2  # one message (rich may wrap it)

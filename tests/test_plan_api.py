"""``batchprof.plan`` and ``predict_max_batch(gpu=...)``: the planning the CLI shows, as library
calls returning typed records (issue 12: thin faces)."""

from __future__ import annotations

import json

import pytest

import batchprof
from batchprof import ConfigError
from batchprof.cli.main import main
from batchprof.gpus import get_gpu


def test_plan_returns_a_typed_row_per_gpu_equal_to_the_cli_json(capsys):
    rows = batchprof.plan("mlp", gpus=["T4-16GB", "A100-40GB"])
    assert [r.gpu.name for r in rows] == ["T4-16GB", "A100-40GB"]
    for r in rows:
        assert isinstance(r, batchprof.PlanRow)
        assert r.what_if == ()
        assert 0 < r.usable_bytes < r.gpu.memory_bytes  # minus the CUDA context estimate
        assert r.max_batch is not None and r.peak_reserved_bytes <= r.usable_bytes
    assert rows[1].max_batch > rows[0].max_batch  # 40 GB holds a bigger batch than 16 GB
    assert main(["plan", "mlp", "--gpus", "T4-16GB,A100-40GB", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["gpus"]
    assert cli == [r.to_dict() for r in rows]


def test_predict_max_batch_for_a_gpu_is_the_plan_figure():
    row, = batchprof.plan("mlp", gpus=["T4-16GB"])
    assert batchprof.predict_max_batch("mlp", gpu="T4-16GB") == row.max_batch
    # an explicit capacity still wins over the GPU's memory (that GPU's workspace and kernels)
    small = batchprof.predict_max_batch("mlp", row.peak_reserved_bytes // 4, gpu="T4-16GB")
    assert small is not None and small < row.max_batch


def test_plan_what_if_rows_follow_the_scenarios():
    rows = batchprof.plan("transformer", gpus=[get_gpu("T4-16GB")], what_if="checkpoint")
    assert [r.what_if for r in rows] == [(), ("checkpoint",)]
    assert rows[1].max_batch >= rows[0].max_batch  # checkpointing keeps fewer activations


@pytest.mark.parametrize("call, match", [
    (lambda: batchprof.plan("mlp", gpus=["H999"]), "H999"),
    (lambda: batchprof.plan("mlp", gpus=[]), "gpus is empty"),
    (lambda: batchprof.predict_max_batch("mlp"), "capacity_bytes .* or gpu"),
])
def test_bad_planning_input_says_what_was_expected(call, match):
    with pytest.raises(ConfigError, match=match):
        call()

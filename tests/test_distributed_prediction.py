"""Sharded prediction: per-rank peak predicted from the single-process prediction vs measured
on 2 CPU ranks (gloo), and the pure parts (layout, DDP buckets, strategies, plans)."""

from __future__ import annotations

import pytest

import tests.distributed_scenarios  # noqa: F401 - registers the scenarios
from batchprof.distributed.sharding import ModelLayout, ddp_bucket_sizes, shard_prediction
from batchprof.errors import ConfigError
from tests.distributed_helpers import launch

TINY = "tests.distributed_scenarios:tiny_blocks"


def compare(tmp_path, workloads, batch_size=8):
    results = launch("predicted_vs_measured", 2, tmp_path, timeout_s=400, pg_timeout_s=300,
                     workloads=workloads, strategies=["ddp", "fsdp"], batch_size=batch_size)
    for r in results:
        assert "error" not in r, r.get("traceback", r["error"])
    return results[0]["value"]


def assert_within(rows, tolerance):
    """|predicted / measured - 1| <= tolerance. (The measured per-rank peak once varied between
    runs by whole gathered units, frees on gloo's thread going unseen; the rank probe now reads
    the allocator's counter, which counts every thread, so no slack is given for that.)"""
    for row in rows:
        error = row["predicted"] / row["measured"] - 1
        assert abs(error) <= tolerance, (row["workload"], row["strategy"], f"{error:+.2%}")


def test_predicted_per_rank_peak_matches_measured_ranks_for_tiny_and_transformer(tmp_path):
    rows = compare(tmp_path, [TINY, "transformer"])
    assert {(r["workload"], r["strategy"]) for r in rows} == {
        (w, s) for w in (TINY, "transformer") for s in ("ddp", "fsdp")}
    assert_within(rows, 0.03)
    for r in rows:  # the resident bytes are exact
        gap = r["measured_resident"] - r["predicted_resident"]
        assert abs(gap) <= 0.001 * r["measured_resident"], (r, gap)


@pytest.mark.slow
def test_predicted_per_rank_peak_matches_measured_ranks_for_mlp_and_cnn(tmp_path):
    assert_within(compare(tmp_path, ["mlp", "cnn"]), 0.03)


@pytest.mark.slow
def test_lstm_ddp_matches_and_fsdp_is_the_known_underestimate(tmp_path):
    rows = {r["strategy"]: r for r in compare(tmp_path, ["lstm"])}
    assert_within([rows["ddp"]], 0.03)
    # FSDP on the LSTM (one unit: the root) comes out ~6% low: the oneDNN LSTM's
    # kernel-internal bytes at the FSDP peak are not those of the single-process peak.
    assert -0.08 < rows["fsdp"]["predicted"] / rows["fsdp"]["measured"] - 1 < 0


def test_ddp_buckets_follow_ddp_first_bucket_then_cap():
    mib = 2**20
    assert ddp_bucket_sizes([mib // 2] * 4, cap_bytes=25 * mib) == [mib, mib]
    assert ddp_bucket_sizes([10 * mib] * 6, cap_bytes=25 * mib) == [10 * mib, 30 * mib,
                                                                     20 * mib]


def test_layout_splits_repeated_blocks_from_the_root_and_pads_shards():
    import batchprof

    layout = ModelLayout.of(batchprof.load_workload(TINY), 4)
    assert layout.unit_bytes == (64 * 65 * 4,) * 3
    assert layout.root_bytes == (32 * 64 + 64 + 64 * 10 + 10) * 4
    # the 10-row head pads to 12 rows over 4 ranks: a shard of 3 rows, 3 bias entries
    head_shard = 3 * 64 * 4 + 3 * 4
    assert layout.padded_shard_bytes == (16 * 32 + 16) * 4 + 3 * (16 * 64 + 16) * 4 + head_shard


class _Base:
    """A stand-in single-process Prediction with round numbers."""

    workload, batch_size, target, gpu, capacity_bytes = "w", 8, "cpu", None, None
    peak_allocated_bytes = peak_reserved_bytes = 1000
    resident_bytes = 400
    activation_bytes = 200
    by_category = {"parameter": 100, "gradient": 100, "optimizer_state": 200, "input": 100}


def test_strategies_move_the_bytes_they_shard():
    layout = ModelLayout(100, (100,), (), 100, 25)
    ddp, z1, z2, fsdp = (shard_prediction(_Base(), layout, 4, s)
                         for s in ("ddp", "zero1", "zero2", "fsdp"))
    assert ddp.peak_allocated_bytes == 1000 + 100  # + one flat copy of the gradients
    assert z1.peak_allocated_bytes == 1100 - 150  # optimizer state 200 -> 50
    assert z2.peak_allocated_bytes == 1000 + 100 - 150 - 75  # one bucket; grads 100 -> 25
    assert fsdp.resident_bytes == 400 - 100 - 200 + 25 + 50
    assert fsdp.global_batch == 8 * 4
    with pytest.raises(ConfigError, match="--parallel"):
        shard_prediction(_Base(), layout, 4, "tp")
    with pytest.raises(ConfigError, match="--world-size"):
        shard_prediction(_Base(), layout, 0, "ddp")


@pytest.mark.slow
def test_predicted_per_rank_peak_matches_measured_ranks_for_hf_gpt2_and_llama(tmp_path):
    pytest.importorskip("transformers")
    rows = compare(tmp_path, ["tests.hf_workloads:gpt2", "tests.hf_workloads:llama"])
    assert_within(rows, 0.03)

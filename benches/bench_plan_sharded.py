"""``plan --world-size 8 --parallel fsdp`` for a 1.3B-parameter GPT on H100-80GB: how long.

    pytest benches/bench_plan_sharded.py --benchmark-only -s

Target (issue 15): under 10 s on 2 cores for the whole plan (import excluded). extra_info
carries the per-rank max batch and the global batch. One round: the predictor's three meta
traces of the 24-layer model are the cost (a fresh process each time a user runs plan).
"""

from __future__ import annotations

from batchprof.distributed.sharding import plan_sharded

GPT_1P3B = "batchprof.distributed.configs:gpt_1p3b"


def test_plan_fsdp_8_ranks_gpt_1p3b_on_h100(benchmark, capsys):
    rows = benchmark.pedantic(plan_sharded, args=(GPT_1P3B, ["H100-80GB"], 8, "fsdp"),
                              rounds=1, iterations=1)
    row = rows[0]
    benchmark.extra_info.update(max_batch_per_rank=row["max_batch_per_rank"],
                                global_batch=row["global_batch"],
                                peak_reserved_bytes=row["peak_reserved_bytes"])
    with capsys.disabled():
        print(f"\n{row}")
    assert row["max_batch_per_rank"] is not None

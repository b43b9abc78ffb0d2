"""Documented model configurations for capacity planning (random weights, never downloaded).

``batchprof.distributed.configs:gpt_1p3b``: a GPT-3 XL-sized decoder (24 layers, d_model 2048,
16 heads, sequence 2048, GPT-2's padded vocabulary of 50,304), about 1.3 B parameters, built
with the built-in transformer's ``GPT`` (tied embeddings, SDPA, no dropout).
"""

from __future__ import annotations

from ..workloads.base import Workload
from ..workloads.transformer import GPTConfig, make_workload

GPT_1P3B = GPTConfig(vocab_size=50304, seq_len=2048, n_layer=24, n_head=16, d_model=2048,
                     dropout=0.0)


def gpt_1p3b() -> Workload:
    return make_workload(GPT_1P3B, name="gpt-1.3b")

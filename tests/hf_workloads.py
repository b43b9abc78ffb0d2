"""Two real-library models (Hugging Face transformers, tiny configs, random weights) as
batchprof workloads, for the distributed prediction tests. Needs ``transformers``."""

from __future__ import annotations

import torch

import batchprof

SEQ = 32
VOCAB = 512


def _batch(batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    if torch.device(device).type == "meta":
        ids = torch.empty(batch_size, SEQ, dtype=torch.long, device=device)
    else:
        gen = torch.Generator().manual_seed(batch_size)
        ids = torch.randint(0, VOCAB, (batch_size, SEQ), generator=gen).to(device)
    return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch, use_cache=False).loss


def _workload(name: str, make_config) -> batchprof.Workload:
    def model_fn() -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(make_config(), attn_implementation="eager")

    return batchprof.Workload(name, model_fn, _batch, _loss)


def gpt2() -> batchprof.Workload:
    def config():
        from transformers import GPT2Config

        return GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=64, n_layer=2, n_head=4,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)

    return _workload("hf-gpt2", config)


def llama() -> batchprof.Workload:
    def config():
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=SEQ)

    return _workload("hf-llama", config)

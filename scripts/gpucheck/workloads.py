"""Workloads the GPU check runs: the built-ins, GPT-2 (transformers) and a ViT (timm), each
from a plain-data *spec* so a recorded figure can be rebuilt later without a GPU.

A spec is a dict: ``{"kind": "builtin", "name": "mlp"}``,
``{"kind": "gpt2", "config": {...GPT2Config kwargs}, "seq_len": 1024}`` or
``{"kind": "timm", "model": "vit_base_patch16_224", "kwargs": {...}, "image_size": 224,
"num_classes": 1000}``, plus ``"dtype": "fp32" | "bf16"`` (bf16 = the loss under
``torch.autocast(dtype=torch.bfloat16)``, the way mixed-precision training is written).
Random weights from configs only: nothing is downloaded (HF_HUB_OFFLINE=1 is set by the driver).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

import batchprof

DTYPES = ("fp32", "bf16")

# GPT-2 small (124M parameters): transformers' GPT2Config defaults, seq 1024.
GPT2_SMALL: dict[str, Any] = {"kind": "gpt2", "config": {}, "seq_len": 1024}
GPT2_TINY: dict[str, Any] = {"kind": "gpt2", "seq_len": 32,
                             "config": {"n_layer": 2, "n_embd": 64, "n_head": 4,
                                        "n_positions": 32, "vocab_size": 1000,
                                        "bos_token_id": 0, "eos_token_id": 0}}
VIT_BASE: dict[str, Any] = {"kind": "timm", "model": "vit_base_patch16_224", "kwargs": {},
                            "image_size": 224, "num_classes": 1000}
VIT_TINY: dict[str, Any] = {"kind": "timm", "model": "vit_tiny_patch16_224",
                            "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2},
                            "image_size": 32, "num_classes": 10}


def spec_name(spec: dict[str, Any]) -> str:
    if spec["kind"] == "builtin":  # a built-in name or "module:attr"
        base = spec["name"].rpartition(":")[2]
    elif spec["kind"] == "gpt2":
        base = f"gpt2-L{spec['config'].get('n_layer', 12)}-s{spec['seq_len']}"
    else:
        base = f"timm-{spec['model']}-{spec['image_size']}"
    return f"{base}-{spec.get('dtype', 'fp32')}"


def build(spec: dict[str, Any]) -> batchprof.Workload:
    """The Workload a spec describes. Raises ImportError when its library is missing."""
    kind = spec["kind"]
    if kind == "builtin":
        workload = batchprof.load_workload(spec["name"])
    elif kind == "gpt2":
        workload = _gpt2(spec["config"], spec["seq_len"])
    elif kind == "timm":
        workload = _timm(spec["model"], spec.get("kwargs", {}), spec["image_size"],
                         spec["num_classes"])
    else:
        raise ValueError(f"unknown workload kind {kind!r}; expected builtin, gpt2 or timm")
    dtype = spec.get("dtype", "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if dtype == "bf16":
        workload = with_bf16_autocast(workload)
    return dataclasses.replace(workload, name=spec_name(spec))


def with_bf16_autocast(workload: batchprof.Workload) -> batchprof.Workload:
    """The same step with forward + loss under bf16 autocast, on the batch's device type.

    On the meta device (the prediction's trace) the autocast is the CUDA one, as the user's
    code would say on a GPU; whether the trace sees its casts is what the check measures.
    """
    inner = workload.loss_fn

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        device_type = "cpu" if first.device.type == "cpu" else "cuda"
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            return inner(model, batch)

    return dataclasses.replace(workload, loss_fn=loss,
                               tags={**workload.tags, "autocast": "bfloat16"})


def _gpt2(config: dict[str, Any], seq_len: int) -> batchprof.Workload:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**{"use_cache": False, "attn_implementation": "sdpa", **config})
    vocab = cfg.vocab_size

    def model_fn() -> torch.nn.Module:
        return GPT2LMHeadModel(cfg)  # random weights; respects torch's default device

    def batch_fn(batch_size: int, device: torch.device) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(batch_size, seq_len, dtype=torch.long, device=device)
        gen = torch.Generator().manual_seed(batch_size)
        return torch.randint(0, vocab, (batch_size, seq_len), generator=gen).to(device)

    def loss_fn(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, labels=ids).loss

    return batchprof.Workload("gpt2", model_fn, batch_fn, loss_fn,
                              description=f"transformers GPT-2 ({cfg.n_layer} layers, "
                                          f"d {cfg.n_embd}), seq {seq_len}",
                              tags={"seq_len": seq_len, "n_layer": cfg.n_layer})


def _timm(model: str, kwargs: dict[str, Any], image_size: int,
          num_classes: int) -> batchprof.Workload:
    import timm

    def model_fn() -> torch.nn.Module:
        return timm.create_model(model, pretrained=False, num_classes=num_classes, **kwargs)

    def batch_fn(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.device(device).type == "meta":
            return (torch.empty(batch_size, 3, image_size, image_size, device=device),
                    torch.empty(batch_size, dtype=torch.long, device=device))
        gen = torch.Generator().manual_seed(batch_size)
        x = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        return x.to(device), y.to(device)

    def loss_fn(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])

    return batchprof.Workload("timm", model_fn, batch_fn, loss_fn,
                              description=f"timm {model} at {image_size}px",
                              tags={"image_size": image_size})


def tiny_wide() -> batchprof.Workload:
    """The dry run's workload: 64 KiB of input per sample into a 256 KiB Linear, so 2 MiB of
    budget hold a max batch around ten and every step takes milliseconds
    (``gpucheck.workloads:tiny_wide`` on the command line)."""
    features, classes = 16384, 4

    def model_fn() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(features, 4), torch.nn.ReLU(),
                                   torch.nn.Linear(4, classes))

    def batch_fn(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(batch_size)
        x = torch.randn(batch_size, features, generator=gen)
        return x.to(device), torch.randint(0, classes, (batch_size,), generator=gen).to(device)

    def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    return batchprof.Workload("tiny_wide", model_fn, batch_fn, loss_fn,
                              description=f"Linear {features}->4->{classes} (dry run)")

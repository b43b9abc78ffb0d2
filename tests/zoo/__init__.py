"""A zoo of real-library models for prediction tests: ``transformers`` and ``timm`` models built
from small configs with random weights (nothing is downloaded).

``zoo_workload(name, checkpoint=False, autocast=None)`` returns a batchprof Workload:
``checkpoint`` switches on the library's own activation checkpointing
(``gradient_checkpointing_enable()`` / ``set_grad_checkpointing()``), ``autocast`` ("bf16")
runs the loss under ``torch.autocast("cpu", torch.bfloat16)`` (the CPU supports bf16 only).

Needs the ``models`` extra (``pip install -e .[models]``) and timm installed with
``pip install --no-deps timm==1.0.31``; timm's torchvision imports are served by
``tests/zoo/no_torchvision.py`` (see there). ``available()`` says whether both libraries import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from batchprof import Workload

from . import no_torchvision


def hide_repo_kernels_dir() -> None:
    """Keep the bare name ``kernels`` from resolving to this repository's ``kernels/``.

    transformers probes for the Hugging Face ``kernels`` package (find_spec, then import when
    it has no metadata). With the repository root on sys.path (pytest, scripts run from the
    root) that finds ``kernels/`` -- this project's Triton kernels, whose import name is
    ``batchprof.kernels`` -- and imports it a second time under the wrong name (registering its
    ops twice, importing Triton before TRITON_INTERPRET is set). A ``None`` entry in
    sys.modules makes find_spec answer "not installed"; a real HF ``kernels`` is left alone.
    """
    import importlib.util
    import sys
    from pathlib import Path

    if "kernels" in sys.modules:
        return
    spec = importlib.util.find_spec("kernels")
    repo_kernels = Path(__file__).resolve().parents[2] / "kernels"
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent == repo_kernels:
        sys.modules["kernels"] = None  # type: ignore[assignment]


hide_repo_kernels_dir()

SEQ = 32
VOCAB = 256
IMAGE = 32
CLASSES = 10


@dataclass(frozen=True)
class ZooModel:
    name: str
    library: str  # "transformers" | "timm"
    build: Callable[[], torch.nn.Module]
    batch: Callable[[int, torch.device], Any]
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    blocks: str  # attribute path of the repeated blocks (a ModuleList / Sequential)


def available() -> str | None:
    """None when transformers and timm import; else why not (for pytest.skip)."""
    no_torchvision.install()
    try:
        import timm  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"the models extra is not installed ({exc}); pip install -e .[models]"
    return None


# --- transformers -------------------------------------------------------------------------

def _hf(config_cls: str, model_cls: str, **config: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        torch.manual_seed(0)
        return getattr(transformers, model_cls)(cfg)

    return build


def _tokens(batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch_size, SEQ), device=device)


def _lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids, use_cache=False).loss


def _masked_batch(batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    ids = _tokens(batch_size, device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _bert_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch, labels=batch["input_ids"]).loss


def _t5_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids[:, : SEQ // 2].contiguous(), use_cache=False).loss


_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=SEQ * 2)
_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=SEQ * 2)


# --- timm ---------------------------------------------------------------------------------

def _timm(name: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        no_torchvision.install()
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, num_classes=CLASSES, **kwargs)

    return build


def _images(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(batch_size, 3, IMAGE, IMAGE, device=device),
            torch.randint(0, CLASSES, (batch_size,), device=device))


def _classify(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("gpt2", "transformers",
             _hf("GPT2Config", "GPT2LMHeadModel", **_GPT2, attn_implementation="sdpa"),
             _tokens, _lm_loss, "transformer.h"),
    ZooModel("gpt2-eager", "transformers",
             _hf("GPT2Config", "GPT2LMHeadModel", **_GPT2, attn_implementation="eager"),
             _tokens, _lm_loss, "transformer.h"),
    ZooModel("llama-gqa", "transformers",
             _hf("LlamaConfig", "LlamaForCausalLM", **_LLAMA, attn_implementation="sdpa"),
             _tokens, _lm_loss, "model.layers"),
    ZooModel("qwen2", "transformers",
             _hf("Qwen2Config", "Qwen2ForCausalLM", **_LLAMA, attn_implementation="sdpa"),
             _tokens, _lm_loss, "model.layers"),
    ZooModel("bert", "transformers",
             _hf("BertConfig", "BertForMaskedLM", hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
                 max_position_embeddings=SEQ * 2, attn_implementation="sdpa"),
             _masked_batch, _bert_loss, "bert.encoder.layer"),
    ZooModel("t5", "transformers",
             _hf("T5Config", "T5ForConditionalGeneration", d_model=64, d_ff=128, d_kv=16,
                 num_layers=2, num_heads=4, vocab_size=VOCAB, decoder_start_token_id=0),
             _tokens, _t5_loss, "encoder.block"),
    ZooModel("vit", "timm", _timm("vit_tiny_patch16_224", img_size=IMAGE, patch_size=8, depth=2),
             _images, _classify, "blocks"),
    ZooModel("convnext", "timm", _timm("convnext_atto", depths=(1, 1, 2, 1),
                                       dims=(16, 32, 48, 64)),
             _images, _classify, "stages"),
    ZooModel("mobilenetv3", "timm", _timm("mobilenetv3_small_050"), _images, _classify,
             "blocks"),
    ZooModel("resnet", "timm", _timm("resnet18", layers=(1, 1, 1, 1),
                                     channels=(16, 32, 64, 128), stem_width=16),
             _images, _classify, "layer1"),
)}


def _with_checkpointing(build: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
    def build_checkpointed() -> torch.nn.Module:
        model = build()
        if hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        else:
            model.set_grad_checkpointing(True)
        return model

    return build_checkpointed


def _under_autocast(loss: Callable, dtype: torch.dtype) -> Callable:
    def autocast_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            return loss(model, batch)

    return autocast_loss


def zoo_workload(name: str, *, checkpoint: bool = False, autocast: str | None = None
                 ) -> Workload:
    model = MODELS[name]
    build = _with_checkpointing(model.build) if checkpoint else model.build
    loss = model.loss
    if autocast is not None:
        loss = _under_autocast(loss, {"bf16": torch.bfloat16}[autocast])
    suffix = ("+ckpt" if checkpoint else "") + (f"+{autocast}" if autocast else "")
    return Workload(f"zoo-{name}{suffix}", build, model.batch, loss,
                    tags={"zoo": name, "library": model.library})


def variants(names: list[str] | None = None) -> list[tuple[str, bool, str | None]]:
    """Every (model, checkpoint, autocast) combination the zoo tests cover."""
    return [(n, ckpt, amp) for n in (names or list(MODELS))
            for ckpt, amp in ((False, None), (True, None), (False, "bf16"))]


@contextlib.contextmanager
def env(**values: str):
    """Set environment variables for a block (e.g. TIMM_FUSED_ATTN=0)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

"""Prediction on real training setups (issue 11): transformers/timm models from tests/zoo,
autocast, activation checkpointing, values the meta trace must know, the real-step fallback,
the meta-kernel cache, and what-if. The default run uses a few tiny models; the whole zoo runs
behind the ``slow`` marker (and in benches/predict_accuracy.py, which prints the table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import batchprof
from batchprof import Workload
from batchprof.errors import ConfigError, TraceError
from batchprof.prediction import trace_step
from batchprof.prediction.whatif import parse_what_if, repeated_blocks, rewrite
from batchprof.probe import TimingPolicy
from tests import zoo

ROOT = Path(__file__).resolve().parents[1]
ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0)
needs_zoo = pytest.mark.skipif(zoo.available() is not None, reason=str(zoo.available()))
FAST = [("gpt2", False, None), ("gpt2", True, None), ("gpt2", False, "bf16"),
        ("llama-gqa", False, None), ("vit", True, None), ("resnet", False, "bf16")]
SLOW = [v for v in zoo.variants() if v not in FAST]


def _measure(w: Workload, b: int):
    return batchprof.measure(w, batch_size=b, device="cpu", timing=ONE_STEP)


# Convolution backward on the CPU can allocate workspace inside the kernel, outside the
# dispatcher (seen: 0.8-3.2 MB blocks inside aten::convolution_backward for convnext at batch 3),
# and whether it does depends on the path ATen/oneDNN picks in that process (in one CI run
# resnet's trace-alone check failed by +55% and convnext's passed; alone, the reverse). No trace
# can see those bytes (DESIGN "Prediction"): for the conv models the peak is checked after
# calibration, which learns them from real steps; the activations are traced exactly either way.
# (ViT's patch embedding is a convolution: its bf16 trace alone came out 10% low once.)
HIDDEN_WORKSPACE = {"resnet", "convnext", "mobilenetv3", "vit"}


def _check_trace_alone(variant, b=3):
    w = zoo.zoo_workload(variant[0], checkpoint=variant[1], autocast=variant[2])
    calibrate = variant[0] in HIDDEN_WORKSPACE
    p = batchprof.predict(w, [b], "cpu", calibrate=calibrate)[0]
    m = _measure(w, b)
    assert p.peak_allocated_bytes == pytest.approx(m.peak_allocated_bytes, rel=0.08)
    assert p.activation_bytes == pytest.approx(m.activation_bytes, rel=0.03)


@needs_zoo
@pytest.mark.parametrize("variant", FAST, ids=lambda v: "-".join(str(x) for x in v))
def test_zoo_trace_alone_matches_the_real_step(variant):
    _check_trace_alone(variant)


@needs_zoo
@pytest.mark.slow
@pytest.mark.parametrize("variant", SLOW, ids=lambda v: "-".join(str(x) for x in v))
def test_whole_zoo_trace_alone_matches_the_real_step(variant):
    _check_trace_alone(variant)


@needs_zoo
@pytest.mark.parametrize("name", ["gpt2", "vit", "t5"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in zoo.MODELS if n not in ("gpt2", "vit", "t5")])
def test_cached_and_uncached_traces_agree(name):
    w = zoo.zoo_workload(name, checkpoint=True)
    cached, uncached = (trace_step(w, 2, "cpu", meta_cache=c) for c in (True, False))
    assert cached.events == uncached.events
    assert cached.activation_bytes == uncached.activation_bytes


def test_autocast_on_meta_follows_the_dtype_the_step_runs_at():
    w = batchprof.load_workload("transformer")

    def bf16_loss(model, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return w.loss_fn(model, batch)

    amp = Workload("transformer-bf16", w.model_fn, w.batch_fn, bf16_loss)
    fp32, bf16 = (trace_step(x, 4, "cpu") for x in (w, amp))
    assert bf16.activation_bytes < fp32.activation_bytes
    assert bf16.corrections["autocast_casts"] > 0
    real = _measure(amp, 4)
    assert trace_step(amp, 4, "cpu").activation_bytes == real.activation_bytes


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > -1e9:  # a branch on a computed value: no meta trace can take it
            h = self.b(h).relu()
        return h


def test_values_determined_by_shapes_are_known_on_meta():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            positions = torch.arange(x.shape[1], device=x.device)
            keep = torch.ones_like(x[..., 0], dtype=torch.bool)
            if bool((positions.diff() == 1).all()) and keep.all():  # transformers-style checks
                x = x * 2
            return self.lin(x[keep.nonzero(as_tuple=True)])

    w = Workload("masked", Masked, lambda b, d: torch.randn(b, 5, 8, device=d),
                 lambda m, x: m(x).sum())
    t = trace_step(w, 3, "cpu")
    assert t.corrections["known_values"] >= 2
    predicted = batchprof.predict(w, [3], "cpu", calibrate=False)[0].peak_allocated_bytes
    assert predicted == pytest.approx(_measure(w, 3).peak_allocated_bytes, rel=0.01)


def test_real_step_fallback_predicts_and_says_so():
    w = Workload("branchy", _Branchy, lambda b, d: torch.randn(b, 16, device=d),
                 lambda m, x: m(x).square().mean())
    p = batchprof.predict(w, [16], "cpu")[0]
    assert any("predicted from real CPU steps" in n for n in p.notes)
    assert p.peak_allocated_bytes == pytest.approx(_measure(w, 16).peak_allocated_bytes,
                                                   rel=0.01)
    with pytest.raises(TraceError, match="in module '_Branchy'") as info:
        batchprof.predict(w, [16], "cpu", calibrate=False)  # trace alone: no real steps
    assert info.value.op_name == "aten._local_scalar_dense.default"


def test_what_if_names_are_checked():
    assert parse_what_if("bf16, checkpoint") == ("bf16", "checkpoint")
    with pytest.raises(ConfigError, match="unknown what-if 'int8'"):
        parse_what_if(["int8"])
    with pytest.raises(ConfigError, match="exclude each other"):
        parse_what_if("bf16,fp16")


def test_checkpoint_what_if_without_repeated_blocks_is_a_note():
    w = Workload("flat", lambda: nn.Linear(8, 2), lambda b, d: torch.randn(b, 8, device=d),
                 lambda m, x: m(x).sum())
    with torch.device("meta"):
        assert repeated_blocks(w.model_fn()) == []
    predictions = batchprof.predict(w, [4], "cpu", calibrate=False, what_if="checkpoint")
    assert [p.what_if for p in predictions] == [(), ("checkpoint",)]
    assert any("no repeated blocks" in n for n in predictions[1].notes)
    assert predictions[0].peak_allocated_bytes == predictions[1].peak_allocated_bytes


@needs_zoo
@pytest.mark.parametrize("name", ["gpt2", pytest.param("llama-gqa", marks=pytest.mark.slow),
                                  pytest.param("bert", marks=pytest.mark.slow),
                                  pytest.param("convnext", marks=pytest.mark.slow)])
def test_what_if_matches_the_real_changed_model(name):
    w = zoo.zoo_workload(name)
    predictions = batchprof.predict(w, [4], "cpu", calibrate=name in HIDDEN_WORKSPACE,
                                    what_if=["bf16", "checkpoint"])
    assert [p.what_if for p in predictions] == [(), ("bf16",), ("checkpoint",),
                                                ("bf16", "checkpoint")]
    # Where oneDNN runs bf16 GEMMs (AVX-512), their packing buffers are allocated inside the
    # kernel, where no trace sees them (gpt2 bf16+checkpoint at batch 4: 4.2% above the trace on
    # an AVX512-BF16 machine, exact with ONEDNN_MAX_CPU_ISA=AVX2): there the bf16 peaks are
    # checked after calibration, the trace alone within the zoo's 8%, and the note must say so.
    packs = torch.ops.mkldnn._is_mkldnn_bf16_supported() and name not in HIDDEN_WORKSPACE
    calibrated = {p.what_if: p for p in batchprof.predict(
        w, [4], "cpu", calibrate=True, what_if=["bf16", "checkpoint"])} if packs else {}
    for p in predictions[1:]:
        changed, _ = rewrite(w, p.what_if)
        m = _measure(changed, 4)
        peak = p.peak_allocated_bytes
        if packs and "bf16" in p.what_if:
            assert any("oneDNN runs bf16" in n for n in p.notes)
            assert peak == pytest.approx(m.peak_allocated_bytes, rel=0.08)
            peak = calibrated[p.what_if].peak_allocated_bytes
        assert peak == pytest.approx(m.peak_allocated_bytes, rel=0.03)
        assert p.activation_bytes == pytest.approx(m.activation_bytes, rel=0.03)
    assert predictions[3].activation_bytes < predictions[0].activation_bytes


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
import torch
import batchprof
from tests import zoo
from tests.test_predict_setups import failing_workload
names = sys.argv[1].split(",")
out = {{}}
if sys.argv[2] == "fail-first":
    try:
        batchprof.predict(failing_workload(), [4], "cpu", calibrate=False)
    except batchprof.errors.TraceError:
        out["failed"] = True
for n in names:
    w = zoo.zoo_workload(n, checkpoint=True)
    out[n] = batchprof.predict(w, [3], "cpu", calibrate=False)[0].peak_allocated_bytes
print("RESULT" + json.dumps(out))
"""


def failing_workload() -> Workload:
    """No path predicts it with calibrate=False: a data-dependent shape after the model, the
    optimizer and the warm-up's first ops were traced (state a leaky cache would keep)."""
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            h = self.lin(x)
            return h.index_select(0, torch.nonzero(h.sum(dim=1) > 0).flatten())

    return Workload("gated", Gate, lambda b, d: torch.randn(b, 8, device=d),
                    lambda m, x: m(x).sum())


def _child(names: list[str], mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT)),
                           ",".join(names), mode], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    assert line, done.stderr[-2000:]
    return json.loads(line[-1][len("RESULT"):])


@needs_zoo
@pytest.mark.parametrize("names", [["gpt2", "vit", "qwen2"],
                                   pytest.param(list(zoo.MODELS), marks=pytest.mark.slow)])
def test_one_process_two_orders_after_a_failure_equals_one_process_per_model(names):
    forward = _child(names, "fail-first")
    backward = _child(list(reversed(names)), "fail-first")
    assert forward.pop("failed") and backward.pop("failed")
    alone = {}
    for n in names:
        alone.update(_child([n], "alone"))
    assert forward == backward == alone


def test_cli_what_if_side_by_side_and_bad_names(capsys):
    from batchprof.cli.main import main

    assert main(["predict", "mlp", "-b", "4", "--no-calibrate", "--what-if", "int8"]) == 2
    assert "unknown what-if 'int8'" in capsys.readouterr().err
    assert main(["plan", "mlp", "--what-if", "bf16,fp16"]) == 2
    capsys.readouterr()
    assert main(["predict", "mlp", "-b", "4", "--no-calibrate", "--what-if", "bf16",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [s["what_if"] for s in payload["what_if"]] == [[], ["bf16"]]
    assert payload["what_if"][1]["predictions"][0]["workload"] == "mlp (what-if bf16)"

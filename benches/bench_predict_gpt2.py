"""Speed of prediction on a real-library model: transformers' GPT-2-small (124M parameters,
sequence 1024, sdpa attention, random weights from the default GPT2Config), whole predicted
curve at 16 batch sizes on the CPU target from meta traces alone (calibrate=False).

    pytest benches/bench_predict_gpt2.py --benchmark-only -s

Targets (issue 11): the curve in < 5 s; with what-if bf16,checkpoint (four scenarios: as
written, bf16, checkpoint, both) in < 15 s, on 2 cores. Needs the models extra (tests/zoo).

Measured 2026-12-08, load ~1.2, 16 traces for the what-if (4 a scenario: b = 1, the anchors
2 and 4, the check at 512), one round each, under this pytest bench: as written 2.80-2.82 s,
what-if 9.55-11.4 s (2026-12-07: 4.25-5.1 s and 17.8-24.4 s). What costs is Python per ATen call
(8,000 to 12,000 a trace). This stop's speed-ups: known values computed only when read
(prediction/known.py: the CPU math attention's (seq, seq) causal mask and the optimizer's zero
states were computed on real tensors in every trace, 40% of it), the meta-kernel cache taking
Parameter arguments (layer norm, the optimizer's updates) and known-value operators, views
skipping it. Before: opargs.py (arguments flattened once), known.py's storage index,
autocast.py, probe.step.older_objects_frozen (stop 23); stop 21 (load 1.7): 5.81 s and 23.2 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from batchprof import Workload
from batchprof.prediction import predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.zoo: the models extra
from tests import zoo  # noqa: E402

CURVE_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SEQ = 1024
pytestmark = pytest.mark.skipif(zoo.available() is not None, reason=str(zoo.available()))


def gpt2_small() -> Workload:
    def build() -> torch.nn.Module:
        import transformers

        config = transformers.GPT2Config(attn_implementation="sdpa")
        return transformers.GPT2LMHeadModel(config)

    def batch(batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, 50257, (batch_size, SEQ), device=device)

    def loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    return Workload("hf-gpt2-small", build, batch, loss)


@pytest.mark.parametrize("what_if", [None, "bf16,checkpoint"], ids=["as-written", "what-if"])
def test_gpt2_small_curve(benchmark, what_if):
    w = gpt2_small()
    started = time.perf_counter()
    predictions = benchmark.pedantic(
        lambda: predict(w, CURVE_SIZES, "cpu", calibrate=False, what_if=what_if),
        rounds=1, iterations=1)
    elapsed = time.perf_counter() - started
    scenarios = sorted({p.what_if for p in predictions})
    assert len(predictions) == len(CURVE_SIZES) * len(scenarios)
    peaks = {s: [p.peak_allocated_bytes for p in predictions if p.what_if == s]
             for s in scenarios}
    assert all(a <= b for curve in peaks.values() for a, b in zip(curve, curve[1:], strict=False))
    benchmark.extra_info.update(seconds=elapsed, target_s=15.0 if what_if else 5.0,
                                peak_at_512={"+".join(s) or "as-written": c[-1]
                                             for s, c in peaks.items()})
    print(f"\nGPT-2 small, 16 sizes, what-if={what_if}: {elapsed:.2f} s")

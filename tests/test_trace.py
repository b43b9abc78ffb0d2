"""The meta-device trace: storages, frees, categories, modules, kernel-path corrections.

Expected figures are derived from shapes: a Linear(16, 32) weight is 16*32*4 = 2048 bytes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from batchprof import TraceError, Workload
from batchprof.prediction.allocators import CpuAllocatorModel, replay
from batchprof.prediction.events import (
    ACTIVATION,
    GRADIENT,
    INPUT,
    OPTIMIZER_STATE,
    PARAMETER,
)
from batchprof.prediction.paths import (
    SDPA_EFFICIENT,
    SDPA_FLASH,
    SDPA_MATH,
    apply_optimizer_defaults,
    cpu_sdpa_backend,
    cuda_sdpa_backend,
    sdpa_fused_saved_bytes,
    sdpa_math_saved_bytes,
)
from batchprof.prediction.trace import trace_step
from batchprof.probe import TimingPolicy, measure

IN, HIDDEN, OUT = 16, 32, 4


def _workload(model_fn, batch_fn=None, loss_fn=None, name="t", optimizer_fn=None) -> Workload:
    def default_batch(b: int, device: torch.device):
        return (torch.ones(b, IN, device=device),
                torch.zeros(b, dtype=torch.long, device=device))

    def default_loss(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    extra = {"optimizer_fn": optimizer_fn} if optimizer_fn else {}
    return Workload(name, model_fn, batch_fn or default_batch, loss_fn or default_loss, **extra)


def mlp() -> Workload:
    return _workload(lambda: nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(),
                                           nn.Linear(HIDDEN, OUT)), name="mlp16")


def _allocs(trace, **match):
    step = trace.events[trace.step_start:]
    return [e for e in step if e.kind == "alloc"
            and all(getattr(e, k) == v for k, v in match.items())]


def test_resident_state_is_parameters_optimizer_state_and_batch():
    t = trace_step(mlp(), 8, "cpu")
    params = (IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT) * 4  # 2704 bytes
    batch = 8 * IN * 4 + 8 * 8  # float inputs + int64 targets
    live: dict[str, int] = {}
    for e in t.events[:t.step_start]:
        live[e.category] = live.get(e.category, 0) + (e.nbytes if e.kind == "alloc" else -e.nbytes)
    assert live[PARAMETER] == params
    assert live[OPTIMIZER_STATE] == 2 * params  # AdamW: exp_avg + exp_avg_sq (step is 0-d CPU)
    assert live[INPUT] == batch
    assert live.get(GRADIENT, 0) == 0  # zero_grad(set_to_none=True) ended the warm-up
    assert t.resident_bytes == sum(live.values())


def test_every_free_follows_its_allocation_and_the_step_ends_where_it_began():
    t = trace_step(mlp(), 4, "cpu")
    allocated = set()
    for e in t.events:
        if e.kind == "alloc":
            assert e.storage_id not in allocated
            allocated.add(e.storage_id)
        else:
            assert e.storage_id in allocated
    running = sum(e.nbytes if e.kind == "alloc" else -e.nbytes for e in t.events[t.step_start:])
    assert running == 0  # steady state: the step frees what it allocates


def test_gradients_are_tagged_and_sized_like_parameters():
    t = trace_step(mlp(), 4, "cpu")
    grads = _allocs(t, category=GRADIENT)
    assert sorted(e.nbytes for e in grads) == sorted([IN * HIDDEN * 4, HIDDEN * 4,
                                                      HIDDEN * OUT * 4, OUT * 4])
    # Allocated in backward by the module whose forward made the weight's use.
    assert {e.module for e in grads} == {"0", "2"}


def test_views_and_in_place_results_are_not_allocations():
    class ViewsAndInPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(IN, OUT)

        def forward(self, x):
            y = self.lin(x)
            y = y.view(-1, OUT).transpose(0, 1).t()  # three views: no new storage
            return torch.relu_(y * 1.0)  # one new storage (mul), in-place relu: none

    t = trace_step(_workload(ViewsAndInPlace), 4, "cpu")
    forward_ops = [e.op for e in _allocs(t, module="lin")] + \
        [e.op for e in _allocs(t, module="ViewsAndInPlace")]
    assert not any("view" in op or "transpose" in op or "relu_" in op for op in forward_ops)
    assert any(op.startswith("aten.mul") for op in forward_ops)


def test_activation_bytes_match_the_real_measurement():
    w = mlp()
    m = measure(w, 8, timing=TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0))
    assert trace_step(w, 8, "cpu").activation_bytes == m.activation_bytes


def test_activations_are_tagged_with_their_module():
    t = trace_step(mlp(), 8, "cpu")
    assert t.activation_bytes_by_module["1"] == 8 * HIDDEN * 4  # ReLU saves its output
    acts = _allocs(t, category=ACTIVATION)
    # Linear "0" saves the batch (an input) and its weight (a parameter); ReLU "1" saves its
    # output (Linear "2" saves the same storage); the loss saves log_softmax's output.
    assert {e.module for e in acts} == {"1", "(loss_fn)"}


def test_meta_trace_matches_a_recording_of_the_real_cpu_step():
    w = mlp()
    meta, real = trace_step(w, 8, "cpu"), trace_step(w, 8, "cpu", device="cpu")
    assert meta.structure == real.structure
    assert [e.nbytes for e in meta.events] == [e.nbytes for e in real.events]


def test_meta_kernel_cache_changes_nothing():
    w = mlp()
    cached = trace_step(w, 6, "cpu")
    uncached = trace_step(w, 6, "cpu", meta_cache=False)
    assert cached.events == uncached.events


def test_cpu_peak_is_resident_plus_highest_running_sum():
    t = trace_step(mlp(), 8, "cpu")
    peak = replay(t.events, CpuAllocatorModel(), reset_peak_at=t.step_start)
    running = best = 0
    for e in t.events[t.step_start:]:
        running += e.nbytes if e.kind == "alloc" else -e.nbytes
        best = max(best, running)
    assert peak.peak_allocated_bytes == t.resident_bytes + best


@pytest.mark.parametrize("op, expected", [
    (lambda x: torch.nonzero(x), "aten.nonzero"),
    (lambda x: x[x > 0], "aten.index"),
    (lambda x: x * float(x.sum().item()), "aten._local_scalar_dense"),
])
def test_data_dependent_operator_raises_trace_error_naming_it(op, expected):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(IN, OUT)

        def forward(self, x):
            return op(self.lin(x)).sum().expand(x.shape[0], OUT)

    with pytest.raises(TraceError) as info:
        trace_step(_workload(DataDependent), 2, "cpu")
    assert info.value.op_name.startswith(expected)
    assert expected in str(info.value)


# --- kernel-path corrections -------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, heads: int = 2, dim: int = 16, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout)
        return y.transpose(1, 2).reshape(b, t, c)


def _attention_workload(seq: int, dropout: float) -> Workload:
    def batch(b, device):
        return torch.ones(b, seq, 16, device=device)

    return _workload(lambda: Attention(dropout=dropout), batch, lambda m, x: m(x).sum(),
                     name=f"attn-{seq}-{dropout}")


def test_cpu_sdpa_choice_comes_from_the_cpu_chooser():
    q = torch.empty(4, 2, 128, 8, device="meta")
    assert cpu_sdpa_backend(q, q, q, None, 0.0, True, None, False) == SDPA_FLASH
    assert cpu_sdpa_backend(q, q, q, None, 0.1, True, None, False) == SDPA_MATH


def test_cpu_target_takes_the_cpu_flash_kernel_like_the_real_step():
    w = _attention_workload(seq=64, dropout=0.0)
    meta, real = trace_step(w, 3, "cpu"), trace_step(w, 3, "cpu", device="cpu")
    assert meta.corrections["sdpa_cpu_flash"] == 2  # warm-up and measured step
    assert meta.structure == real.structure
    assert [e.nbytes for e in meta.events] == [e.nbytes for e in real.events]


def test_cuda_sdpa_rules():
    half = torch.empty(2, 2, 8, 64, device="meta", dtype=torch.float16)
    full = torch.empty(2, 2, 8, 64, device="meta")
    odd = torch.empty(2, 2, 8, 300, device="meta", dtype=torch.float16)
    mask = torch.empty(8, 8, device="meta", dtype=torch.bool)
    assert cuda_sdpa_backend(half, half, half, None, False, (8, 0)) == SDPA_FLASH
    assert cuda_sdpa_backend(half, half, half, None, False, (7, 5)) == SDPA_EFFICIENT
    assert cuda_sdpa_backend(half, half, half, mask, False, (9, 0)) == SDPA_EFFICIENT
    assert cuda_sdpa_backend(full, full, full, None, False, (9, 0)) == SDPA_EFFICIENT
    assert cuda_sdpa_backend(odd, odd, odd, None, False, (9, 0)) == SDPA_MATH


def test_cuda_sdpa_saves_logsumexp_instead_of_seq_squared_weights():
    seq, b, heads = 256, 2, 2
    w = _attention_workload(seq=seq, dropout=0.1)
    cpu, cuda = trace_step(w, b, "cpu"), trace_step(w, b, "cuda")
    square = b * heads * seq * seq * 4
    assert any(e.nbytes == square for e in _allocs(cpu))  # math path: (seq x seq) weights
    assert not any(e.nbytes >= square for e in _allocs(cuda))
    assert cuda.corrections["sdpa_cuda_fused"] == 2
    lse = sdpa_fused_saved_bytes(b, heads, seq, SDPA_EFFICIENT)
    assert any(e.nbytes == lse and "efficient_attention" in e.op for e in _allocs(cuda))
    # The fused kernel saves its output, the logsumexp and two int64 RNG scalars instead of
    # the math path's weights, dropout mask and dropped weights.
    output = b * heads * seq * 8 * 4
    saved_diff = cpu.activation_bytes - cuda.activation_bytes
    assert saved_diff == sdpa_math_saved_bytes(b, heads, seq, seq, 4, dropout=True) \
        - output - lse - 16


def test_cuda_dropout_mask_is_one_byte_per_element():
    def model():
        return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Dropout(0.5), nn.Linear(HIDDEN, OUT))

    w = _workload(model, name="dropout")
    cpu, cuda = trace_step(w, 8, "cpu"), trace_step(w, 8, "cuda")
    numel = 8 * HIDDEN
    cpu_masks = _allocs(cpu, module="1", op="aten.empty_like.default")
    cuda_masks = [e for e in _allocs(cuda, module="1") if e.nbytes == numel]
    assert [e.nbytes for e in cpu_masks] == [numel * 4]  # float mask from bernoulli_
    assert len(cuda_masks) == 1 and cuda_masks[0].op == "aten.native_dropout.default"
    assert cuda.corrections["dropout_cuda_native"] == 2
    assert cpu.activation_bytes - cuda.activation_bytes == numel * 3


def test_cuda_optimizer_defaults_to_foreach_only_when_unpinned():
    params = [nn.Parameter(torch.empty(3, device="meta"))]
    free = torch.optim.AdamW(params)
    pinned = torch.optim.AdamW(params, foreach=False)
    assert apply_optimizer_defaults(free, "cpu") == []
    assert apply_optimizer_defaults(pinned, "cuda") == []
    assert apply_optimizer_defaults(free, "cuda") == ["optimizer_foreach_cuda"]
    assert free.param_groups[0]["foreach"] is True


def test_cuda_foreach_step_holds_param_sized_temporaries_at_once():
    w = _workload(lambda: nn.Sequential(nn.Linear(IN, HIDDEN), nn.Linear(HIDDEN, OUT)),
                  optimizer_fn=lambda p: torch.optim.AdamW(p), name="foreach")
    cuda = trace_step(w, 2, "cuda")
    assert cuda.corrections["optimizer_foreach_cuda"] == 1
    sqrt = [e for e in _allocs(cuda, module="(optimizer)") if "_foreach_sqrt" in e.op]
    params = (IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT) * 4
    assert sum(e.nbytes for e in sqrt) == params


def test_cpu_lstm_follows_onednn_operator_for_operator():
    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(IN, 8, num_layers=2, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.lstm(x)[0]

    def batch(b, device):
        return torch.ones(b, 5, IN, device=device)

    w = _workload(LSTMNet, batch, lambda m, x: m(x).sum(), name="lstm-test")
    meta, real = trace_step(w, 3, "cpu"), trace_step(w, 3, "cpu", device="cpu")
    assert meta.corrections["lstm_cpu_mkldnn"] == 2
    assert meta.corrections["lstm_cpu_mkldnn_backward"] >= 1
    assert [c.op for c in meta.step_ops if c.output_bytes] == \
        [c.op for c in real.step_ops if c.output_bytes]
    # Every storage matches, except oneDNN's workspace: size 0 on meta (calibration learns it).
    allocating = ([c for c in t.step_ops if c.output_bytes] for t in (meta, real))
    for m, r in zip(*allocating, strict=True):
        if m.op == "aten.mkldnn_rnn_layer.default":
            assert m.output_bytes[:3] == r.output_bytes[:3] and m.output_bytes[3] == 0
        else:
            assert m.output_bytes == r.output_bytes


def test_a_write_forgets_the_known_values_it_makes_unknown():
    """known.KnownValues.forget_written (its storage index): a write forgets the tensor it
    writes, wherever its storage went (set_), and every other shadowed view of the written
    storage; a tensor on another storage stays known."""
    from batchprof.prediction.known import KnownValues
    from batchprof.prediction.opargs import op_facts

    known = KnownValues()
    a, b = torch.empty(3, device="meta"), torch.empty(3, device="meta")
    known.attach(a, torch.ones(3))
    known.attach(b, torch.zeros(3))
    view = b.view(3)
    known.attach(view, torch.zeros(3))
    other = torch.empty(3, device="meta")
    a.set_(other)
    known.forget_written(op_facts(torch.ops.aten.set_.source_Tensor), (a, other), {})
    assert known.shadow(a) is None and known.shadow(b) is not None
    known.forget_written(op_facts(torch.ops.aten.add_.Tensor),
                         (b, torch.empty(3, device="meta")), {})
    assert known.shadow(b) is None and known.shadow(view) is None


def test_known_values_are_computed_when_read_and_see_the_eager_order():
    """known.py's deferred shadows: a value nobody reads is never computed; one read after an
    in-place write to what it was computed from has the value from before the write (a view
    has the value after it, as its storage does); a deferred call keeps no meta storage alive."""
    from batchprof.prediction.recorder import StorageRecorder

    recorder = StorageRecorder(torch.device("meta"))
    with recorder:
        a = torch.ones(3, device="meta")
        before = a + 1
        view = a.view(3)
        mask = torch.ones(64, 64, dtype=torch.bool, device="meta").tril()
        a.mul_(2)  # an in-place operator on known inputs writes a's shadow
        doubled = bool((a == 2).all())  # a value read on meta: answered by the shadow
        unknown = torch.empty(5, device="meta")
        ones = torch.ones_like(unknown)  # deferred; reads only the shape of `unknown`
        freed = recorder.sid_of(unknown)
        del unknown
    known = recorder.known
    assert doubled
    assert known._shadows[mask].call.pending  # never read: never computed
    assert known.shadow(before).tolist() == [2.0, 2.0, 2.0]
    assert known.shadow(view).tolist() == [2.0, 2.0, 2.0]
    assert known.shadow(ones).tolist() == [1.0] * 5
    assert ("free", freed) in recorder.events


def test_a_long_chain_of_known_values_is_computed_without_recursion():
    """A value read at the end of thousands of deferred known operators (known.py computes
    them dependencies-first in a loop, not by recursion), and a write after such a chain."""
    from batchprof.prediction.recorder import StorageRecorder

    recorder = StorageRecorder(torch.device("meta"))
    with recorder:
        x = torch.zeros(4, device="meta")
        for _ in range(5000):
            x = x + 1
        ahead = x * 2
        x.add_(1)  # a write: the deferred `ahead` is computed from the value before it
        read = bool((x == 5001).all())
    assert read
    assert recorder.known.shadow(ahead).tolist() == [10000.0] * 4

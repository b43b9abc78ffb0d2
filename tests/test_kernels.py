"""The Triton kernels against their plain-torch references, and their custom ops on meta.

Without CUDA, importing batchprof.kernels' helper sets TRITON_INTERPRET=1 before Triton is
imported, so every kernel here runs in Triton's interpreter on CPU tensors; with CUDA they run
compiled on the GPU. Outputs are poisoned (NaN, or a value the pattern never takes) before each
launch, so an element the kernel failed to write cannot pass by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from batchprof.errors import DeviceUnavailableError
from batchprof.kernels import _triton, reference
from batchprof.kernels import copy as copy_kernels
from batchprof.kernels import matmul as matmul_kernels
from batchprof.kernels import touch as touch_kernels

pytestmark = pytest.mark.skipif(_triton.kernel_mode() == "unavailable",
                                reason=f"Triton kernels cannot run: {_triton.unavailable_reason()}")

DEVICE = "cuda" if _triton.kernel_mode() == "compiled" else "cpu"
ODD_SIZES = (1, 127, 1000003)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (rtol, atol): the interpreter rounds fp32 -> bf16 toward zero where torch rounds to nearest,
# so bf16 results may differ by one unit in the last place (2**-7 relative).
TRIAD_TOLERANCE = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3),
                   torch.bfloat16: (1.6e-2, 1e-2)}
MATMUL_TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-3, 2e-3),
                    torch.bfloat16: (1.6e-2, 2e-2)}


def poisoned(shape: tuple[int, ...] | int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape if isinstance(shape, tuple) else (shape,), float("nan"), dtype=dtype,
                      device=DEVICE)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE).to(dtype)


# --------------------------------------------------------------------------- import behaviour


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_package_import_is_silent_and_does_not_import_triton():
    result = run_python("""
        import sys
        import batchprof.kernels
        import torch
        assert "triton" not in sys.modules, "import batchprof.kernels imported triton"
        assert hasattr(torch.ops.batchprof, "triad"), "custom ops not registered on import"
    """)
    assert result.returncode == 0, result.stderr


def test_without_triton_modules_import_and_calls_raise_device_unavailable():
    result = run_python("""
        import importlib.abc, sys
        class NoTriton(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton hidden by the test")
        sys.meta_path.insert(0, NoTriton())
        import torch
        from batchprof.errors import DeviceUnavailableError
        from batchprof import kernels
        from batchprof.kernels import copy, matmul, touch
        assert kernels.kernel_mode() == "unavailable"
        for call in (lambda: kernels.stream_copy(torch.ones(3)),
                     lambda: torch.ops.batchprof.triad(torch.ones(3), torch.ones(3), 2.0),
                     lambda: copy._copy_kernel[(1,)]()):
            try:
                call()
            except DeviceUnavailableError as exc:
                assert "pip install triton" in str(exc), exc
            else:
                raise SystemExit("a kernel call without triton did not raise")
        # the meta path needs no triton at all
        assert torch.ops.batchprof.triad(torch.ones(3, device="meta"),
                                         torch.ones(3, device="meta"), 2.0).device.type == "meta"
    """)
    assert result.returncode == 0, result.stderr


def test_kernels_are_interpreted_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: kernels compile unless TRITON_INTERPRET is set")
    assert _triton.kernel_mode() == "interpreted"
    assert os.environ["TRITON_INTERPRET"] == "1"


# --------------------------------------------------------------------------- copy / triad


@pytest.mark.parametrize("n", ODD_SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_copy_writes_every_element(n, dtype):
    src = torch.randint(-1000, 1000, (n,), device=DEVICE).to(dtype)
    out = torch.full((n,), -7, dtype=dtype, device=DEVICE) if not dtype.is_floating_point \
        else poisoned(n, dtype)
    copy_kernels.launch_copy(src, out)
    assert torch.equal(out, reference.copy_reference(src))


def test_copy_many_programs_with_a_ragged_tail():
    src = randn(1000)
    out = poisoned(1000, torch.float32)
    copy_kernels.launch_copy(src, out, block_size=64)  # 16 programs, the last one 40/64 full
    assert torch.equal(out, src)


@pytest.mark.parametrize("n", ODD_SIZES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_triad_matches_reference(n, dtype):
    b, c = randn(n, dtype=dtype), randn(n, dtype=dtype)
    out = poisoned(n, dtype)
    copy_kernels.launch_triad(out, b, c, 3.0)
    rtol, atol = TRIAD_TOLERANCE[dtype]
    torch.testing.assert_close(out, reference.triad_reference(b, c, 3.0), rtol=rtol, atol=atol)


def test_functional_wrappers_allocate_fresh_outputs():
    x = randn(2, 3, 5)
    y = randn(2, 3, 5)
    copied = copy_kernels.stream_copy(x)
    assert copied.shape == x.shape and copied.data_ptr() != x.data_ptr()
    assert torch.equal(copied, x)
    torch.testing.assert_close(copy_kernels.stream_triad(x, y, -0.5), x - 0.5 * y)


# --------------------------------------------------------------------------- matmul


@pytest.mark.parametrize("mkn", [(5, 123, 77), (64, 64, 64)], ids=["5x123x77", "64x64x64"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_matmul_matches_reference(mkn, dtype):
    m, k, n = mkn
    a, b = randn(m, k, dtype=dtype), randn(k, n, dtype=dtype)
    out = poisoned((m, n), dtype)
    matmul_kernels.launch_matmul(a, b, out)
    rtol, atol = MATMUL_TOLERANCE[dtype]
    torch.testing.assert_close(out, reference.matmul_reference(a, b), rtol=rtol, atol=atol)


def test_matmul_accepts_strided_inputs_and_outputs():
    a = randn(77, 5).t()  # (5, 77), column-major
    b = randn(123, 77)[::2].t()  # (77, 62), non-unit strides both ways
    out_storage = poisoned((62, 5), torch.float32)
    out = out_storage.t()
    matmul_kernels.launch_matmul(a, b, out)
    torch.testing.assert_close(out, a @ b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(matmul_kernels.tiled_matmul(a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_matmul_with_empty_k_is_zero():
    out = poisoned((3, 4), torch.float32)
    matmul_kernels.launch_matmul(randn(3, 0), randn(0, 4), out)
    assert torch.equal(out, torch.zeros(3, 4, device=DEVICE))


# --------------------------------------------------------------------------- touch


@pytest.mark.parametrize("n", ODD_SIZES)
def test_touch_fills_the_pattern_and_finds_no_mismatch(n):
    buf = torch.full((n,), -1, dtype=torch.int32, device=DEVICE)  # the pattern is never -1 here
    assert touch_kernels.touch_buffer(buf, seed=12345) == 0
    assert torch.equal(buf.cpu(), reference.pattern_reference(n, 12345))


@pytest.mark.parametrize("n", ODD_SIZES)
def test_touch_counts_every_corrupted_element(n):
    seed = 0x5EED
    buf = reference.fill_pattern_reference(torch.empty(n, dtype=torch.int32, device=DEVICE), seed)
    corrupt = sorted({0, n // 2, n - 1})  # first, middle and the last (tail) element
    buf[corrupt] += 1
    found = int(touch_kernels.launch_count_pattern_mismatches(buf, seed))
    assert found == len(corrupt) == reference.count_pattern_mismatches_reference(buf, seed)
    # another seed's pattern differs at every element (i ^ s1 != i ^ s2): stale data shows
    reference.fill_pattern_reference(buf, seed + 1)
    assert int(touch_kernels.launch_count_pattern_mismatches(buf, seed)) == n


def test_touch_counts_across_many_programs():
    buf = torch.empty(1000, dtype=torch.int32, device=DEVICE)
    touch_kernels.launch_fill_pattern(buf, 9, block_size=64)
    buf[[3, 500, 999]] = 0
    assert int(touch_kernels.launch_count_pattern_mismatches(buf, 9, block_size=64)) == 3


def test_touch_views_other_dtypes_as_words_and_touch_memory_allocates():
    buf = poisoned(1001, torch.float32)
    assert touch_kernels.touch_buffer(buf) == 0
    assert not torch.isnan(buf).all()  # overwritten with the pattern
    assert touch_kernels.touch_memory(4099, device=DEVICE) == 0  # rounds up to 1025 words
    with pytest.raises(ValueError, match="4-byte words"):
        touch_kernels.touch_buffer(torch.zeros(3, dtype=torch.uint8, device=DEVICE))


# --------------------------------------------------------------------------- launcher validation


@pytest.mark.parametrize("launch", [
    lambda t: copy_kernels.launch_copy(t, torch.empty_like(t)),
    lambda t: copy_kernels.launch_triad(torch.empty_like(t), t, t, 2.0),
    lambda t: matmul_kernels.launch_matmul(t.view(4, 4), t.view(4, 4), t.view(4, 4)),
    lambda t: touch_kernels.launch_fill_pattern(t.to(torch.int32), 1),
], ids=["copy", "triad", "matmul", "fill_pattern"])
def test_raw_launch_on_meta_is_a_clear_value_error(launch):
    with pytest.raises(ValueError, match=r"meta tensor.*torch\.ops\.batchprof\."):
        launch(torch.empty(16, device="meta"))


@pytest.mark.parametrize("call, message", [
    (lambda: copy_kernels.launch_copy(randn(4), randn(5)), "out must match src"),
    (lambda: copy_kernels.launch_copy(randn(4, 4).t(), randn(4, 4)), "contiguous"),
    (lambda: copy_kernels.launch_copy(randn(4), randn(4), block_size=100), "power of two"),
    (lambda: copy_kernels.launch_copy(randn(4), torch.empty(4, device="meta")), "meta"),
    (lambda: copy_kernels.launch_triad(*(torch.ones(4, dtype=torch.int32),) * 3, 2.0),
     "not supported"),
    (lambda: copy_kernels.launch_triad(randn(4), randn(4), randn(3), 2.0), "share shape"),
    (lambda: copy_kernels.launch_triad(randn(4), randn(4), randn(4), "2"), "Python number"),
    (lambda: matmul_kernels.launch_matmul(randn(2, 3), randn(4, 5), randn(2, 5)), "do not chain"),
    (lambda: matmul_kernels.launch_matmul(randn(2, 3, 1), randn(3, 5), randn(2, 5)), "2-D"),
    (lambda: matmul_kernels.launch_matmul(randn(2, 3), randn(3, 5, dtype=torch.float16),
                                          randn(2, 5)), "one dtype"),
    (lambda: matmul_kernels.launch_matmul(randn(2, 3), randn(3, 5), randn(2, 5),
                                          input_precision="tf64"), "input_precision"),
    (lambda: touch_kernels.launch_fill_pattern(randn(4), 1), "int32"),
    (lambda: touch_kernels.launch_fill_pattern(torch.zeros(4, dtype=torch.int32), -1), "seed"),
    (lambda: copy_kernels.launch_copy([1, 2], randn(2)), "torch.Tensor"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_launchers_reject_bad_inputs_with_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_compiled_mode_rejects_cpu_tensors(monkeypatch):
    monkeypatch.setattr(_triton, "KERNEL_MODE", "compiled")
    with pytest.raises(ValueError, match="set TRITON_INTERPRET=1"):
        _triton.validate_launch("copy", {"src": torch.ones(2)})


def test_unavailable_mode_raises_device_unavailable(monkeypatch):
    monkeypatch.setattr(_triton, "KERNEL_MODE", "unavailable")
    with pytest.raises(DeviceUnavailableError, match="'copy'"):
        copy_kernels.stream_copy(torch.ones(2))


# --------------------------------------------------------------------------- custom ops


class RooflineToy(torch.nn.Module):
    """A model whose forward calls batchprof's custom ops, as a user model might."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(width, width) / width**0.5)
        self.skip_scale = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.ops.batchprof.matmul(x, self.weight)
        return torch.ops.batchprof.triad(torch.ops.batchprof.copy(h), x, self.skip_scale)


def test_model_using_custom_ops_traces_on_meta_without_computing(monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("a real kernel ran while tracing on meta")

    for module, name in [(copy_kernels, "stream_copy"), (copy_kernels, "stream_triad"),
                         (matmul_kernels, "tiled_matmul")]:
        monkeypatch.setattr(module, name, no_compute)
    with torch.device("meta"):
        model = RooflineToy(48)
        x = torch.randn(1000, 48, requires_grad=True)
    y = model(x)
    assert y.device.type == "meta" and y.shape == (1000, 48) and y.dtype == torch.float32
    y.sum().backward()
    assert model.weight.grad.shape == (48, 48) and x.grad.shape == (1000, 48)


def test_custom_ops_compute_forward_and_gradients_like_torch():
    torch.manual_seed(0)
    model = RooflineToy(8).to(DEVICE)
    x = randn(5, 8).requires_grad_()
    y = model(x)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = model.weight.detach().clone().requires_grad_()
    y_ref = x_ref @ w_ref + 0.5 * x_ref
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.weight.grad, w_ref.grad, rtol=1e-4, atol=1e-4)


def test_touch_ops_run_on_device_and_trace_on_meta():
    buf = torch.full((130,), -1, dtype=torch.int32, device=DEVICE)
    torch.ops.batchprof.fill_pattern(buf, 77)
    count = torch.ops.batchprof.count_pattern_mismatches(buf, 77)
    assert count.dtype == torch.int64 and count.shape == () and int(count) == 0
    meta = torch.empty(130, dtype=torch.int32, device="meta")
    torch.ops.batchprof.fill_pattern(meta, 77)
    assert torch.ops.batchprof.count_pattern_mismatches(meta, 77).device.type == "meta"


def test_flop_counter_counts_the_custom_matmul_once_registered():
    from torch.utils.flop_counter import FlopCounterMode

    from batchprof.kernels.ops import register_flop_formulas

    register_flop_formulas()
    register_flop_formulas()  # idempotent
    with torch.device("meta"):
        model = RooflineToy(48)
        x = torch.randn(10, 48, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    # forward 2*10*48*48, backward twice that (grad wrt x and wrt weight); triad/copy count 0
    assert counter.get_total_flops() == 3 * 2 * 10 * 48 * 48


@pytest.mark.parametrize("op, args", [
    ("copy", lambda: (randn(3, 5),)),
    ("triad", lambda: (randn(7), randn(7), 1.5)),
    ("matmul", lambda: (randn(5, 6), randn(6, 3))),
], ids=["copy", "triad", "matmul"])
def test_custom_op_registration_passes_opcheck(op, args):
    # schema, fake implementation vs real output, autograd registration, dispatcher consistency
    inputs = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args())
    torch.library.opcheck(getattr(torch.ops.batchprof, op).default, inputs,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


# --------------------------------------------------------------------------- GPU performance


def _cuda_seconds(fn, repeats: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / repeats


needs_compiled = pytest.mark.skipif(_triton.kernel_mode() != "compiled",
                                    reason="needs compiled (not interpreted) Triton on CUDA")


@pytest.mark.gpu
@needs_compiled
def test_gpu_copy_bandwidth_within_10pct_of_torch():
    n = 256 * 1024**2  # 1 GiB of float32, far above any L2
    src, dst = torch.rand(n, device="cuda"), torch.empty(n, device="cuda")
    ours = _cuda_seconds(lambda: copy_kernels.launch_copy(src, dst))
    theirs = _cuda_seconds(lambda: dst.copy_(src))
    assert ours <= theirs / 0.9, f"triton copy {ours * 1e3:.3f} ms vs torch {theirs * 1e3:.3f} ms"


@pytest.mark.gpu
@needs_compiled
@pytest.mark.parametrize("dtype, precision", [(torch.float16, "ieee"), (torch.bfloat16, "ieee"),
                                              (torch.float32, "tf32")],
                         ids=["float16", "bfloat16", "tf32"])
def test_gpu_matmul_within_30pct_of_torch(dtype, precision, monkeypatch):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    # like for like: torch.matmul on tensor cores for fp32 too (TF32), as the kernel is asked to
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", precision == "tf32")
    a = torch.randn(4096, 4096, device="cuda", dtype=dtype)
    b = torch.randn(4096, 4096, device="cuda", dtype=dtype)
    out = torch.empty_like(a)
    ours = _cuda_seconds(lambda: matmul_kernels.launch_matmul(a, b, out, input_precision=precision),
                         repeats=10)
    theirs = _cuda_seconds(lambda: torch.matmul(a, b, out=out), repeats=10)
    assert ours <= theirs / 0.7, f"triton {ours * 1e3:.3f} ms vs torch {theirs * 1e3:.3f} ms"

"""LayerNorm and RMSNorm from Python against torch.nn.functional and float64 references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import normgen as ng
from conftest import DTYPES, assert_close, cpu_kernels, ref_layer_norm, ref_rms_norm

SHAPES = [((1, 1), (1,)), ((3, 7), (7,)), ((5, 16), (16,)), ((33, 100), (100,)), ((4, 1031), (1031,)),
          ((2, 3, 64), (64,)), ((2, 5, 4, 6), (4, 6))]


def _inputs(shape, ns, dtype, offset=0.0, affine=True):
    x = (torch.randn(shape, dtype=torch.float64) * 2 + offset).to(dtype)
    w = (1 + 0.5 * torch.randn(ns, dtype=torch.float64)).to(dtype) if affine else None
    b = torch.randn(ns, dtype=torch.float64).to(dtype) if affine else None
    return x, w, b


# ---- forward -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias", "bias"])
def test_layer_norm_forward_matches_float64(dtype, shape, ns, affine):
    x, w, b = _inputs(shape, ns, dtype)
    w = w if affine in ("weight", "weight_bias") else None
    b = b if affine in ("bias", "weight_bias") else None
    y, mean, rstd = ng.layer_norm_forward(x, ns, w, b, eps=1e-5)
    want_y, want_mean, want_rstd = ref_layer_norm(x, ns, w, b)
    n = math.prod(ns)
    assert y.dtype == dtype and y.shape == x.shape
    assert mean.dtype == torch.float32 and tuple(mean.shape) == tuple(want_mean.shape)
    assert_close(y, want_y, dtype, n, "y")
    assert_close(mean, want_mean, torch.float32, n, "mean")
    assert_close(rstd, want_rstd, torch.float32, n, "rstd")
    # and torch's own op agrees within its storage rounding
    torch_y = F.layer_norm(x.float(), ns, None if w is None else w.float(), None if b is None else b.float()).to(dtype)
    assert_close(y, torch_y.double(), dtype, n, "y vs torch")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_rms_norm_forward_matches_float64(dtype, shape, ns, with_weight, eps):
    x, w, _ = _inputs(shape, ns, dtype)
    w = w if with_weight else None
    y, rstd = ng.rms_norm_forward(x, ns, w, eps=eps)
    want_y, want_rstd = ref_rms_norm(x, ns, w, eps)
    n = math.prod(ns)
    assert_close(y, want_y, dtype, n, "y")
    assert_close(rstd, want_rstd, torch.float32, n, "rstd")
    torch_y = F.rms_norm(x, ns, w, eps)
    assert_close(y, torch_y.double(), dtype, n, "y vs torch")


def test_numpy_in_numpy_out():
    x = np.random.randn(6, 40).astype(np.float32)
    w = np.random.randn(40).astype(np.float32)
    y = ng.layer_norm(x, (40,), w)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    want, _, _ = ref_layer_norm(torch.from_numpy(x), (40,), torch.from_numpy(w))
    assert_close(y, want, torch.float32, 40, "y")
    yh = ng.rms_norm(x.astype(np.float16), 40)
    assert yh.dtype == np.float16
    assert_close(yh, ref_rms_norm(torch.from_numpy(x.astype(np.float16)), (40,))[0], torch.float16, 40, "y16")


def test_large_offset_data_within_1e3():
    """mean 1e4, std 1 in float32: within 1e-3 absolute of float64 (torch 1.13: 1.7e-3)."""
    x = (torch.randn(64, 4096, dtype=torch.float64) + 1e4).float()
    y = ng.layer_norm(x, (4096,))
    want, _, _ = ref_layer_norm(x, (4096,))
    assert (y.double() - want).abs().max().item() < 1e-3


def test_non_contiguous_inputs():
    base = torch.randn(8, 2 * 50)
    x = base[:, ::2]  # column stride 2: the strided kernel
    y = ng.layer_norm(x, (50,))
    assert "strided" in ng.last_kernel()
    assert_close(y, ref_layer_norm(x, (50,))[0], torch.float32, 50, "y strided")
    xt = torch.randn(30, 4, 20).transpose(0, 1)  # leading dims not mergeable: staged copy
    y = ng.rms_norm(xt, (20,))
    assert_close(y, ref_rms_norm(xt, (20,))[0], torch.float32, 20, "y transposed")
    xn = np.asfortranarray(np.random.randn(7, 33).astype(np.float32))
    y = ng.layer_norm(xn, (33,))
    assert_close(y, ref_layer_norm(torch.from_numpy(np.ascontiguousarray(xn)), (33,))[0], torch.float32, 33, "F order")


def test_channels_last_memory_format_is_kept():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    y = ng.layer_norm(x, (5,))
    assert y.stride() == x.stride()
    assert_close(y, ref_layer_norm(x, (5,))[0], torch.float32, 5, "y")


def test_empty_tensors():
    y, mean, rstd = ng.layer_norm_forward(torch.empty(0, 8), (8,))
    assert y.shape == (0, 8) and mean.shape == (0, 1)
    y, mean, rstd = ng.layer_norm_forward(torch.empty(3, 0), (0,))
    t_y, t_mean, t_rstd = torch.native_layer_norm(torch.empty(3, 0), [0], None, None, 1e-5)
    assert y.shape == t_y.shape and torch.equal(mean, t_mean) and torch.isnan(rstd).all() == torch.isnan(t_rstd).all()
    dx, dw, db = ng.layer_norm_backward(torch.empty(0, 8), torch.empty(0, 8), torch.empty(0, 1), torch.empty(0, 1),
                                        (8,), torch.ones(8))
    assert dx.shape == (0, 8) and torch.equal(dw, torch.zeros(8)) and torch.equal(db, torch.zeros(8))


# ---- backward ------------------------------------------------------------------------

def _dx_scale(dy, w, rstd, ns):
    """Size of dx's terms, rstd * |dy * w|, which cancel exactly for one-element rows."""
    g = dy.double() * (w.double() if w is not None else 1.0)
    stat = rstd.double().reshape(rstd.shape[: rstd.dim() - len(ns)] + (1,) * len(ns))
    return (g.abs() * stat).max().item() if g.numel() else 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("with_weight", [False, True])
def test_layer_norm_backward_matches_autograd(dtype, shape, ns, with_weight):
    x, w, b = _inputs(shape, ns, dtype)
    w = w if with_weight else None
    b = b if with_weight else None
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    y, mean, rstd = ng.layer_norm_forward(x, ns, w, b)
    dx, dw, db = ng.layer_norm_backward(dy, x, mean, rstd, ns, w)
    x64 = x.double().requires_grad_()
    params = [p.double().requires_grad_() for p in (w, b) if p is not None]
    out = F.layer_norm(x64, ns, *params) if params else F.layer_norm(x64, ns)
    grads = torch.autograd.grad(out, [x64] + params, dy.double())
    n = math.prod(ns)
    rows = x.numel() // n if n else 0
    assert dx.dtype == dtype
    assert_close(dx, grads[0], dtype, n, "dx", scale=_dx_scale(dy, w, rstd, ns))
    if with_weight:
        assert_close(dw, grads[1], dtype, rows, "dweight")
        assert_close(db, grads[2], dtype, rows, "dbias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("with_weight", [False, True])
def test_rms_norm_backward_matches_autograd(dtype, shape, ns, with_weight):
    x, w, _ = _inputs(shape, ns, dtype)
    w = w if with_weight else None
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    y, rstd = ng.rms_norm_forward(x, ns, w)
    dx, dw = ng.rms_norm_backward(dy, x, rstd, ns, w)
    x64 = x.double().requires_grad_()
    params = [w.double().requires_grad_()] if with_weight else []
    out = F.rms_norm(x64, ns, params[0] if params else None, torch.finfo(dtype).eps)
    grads = torch.autograd.grad(out, [x64] + params, dy.double())
    n = math.prod(ns)
    assert_close(dx, grads[0], dtype, n, "dx", scale=_dx_scale(dy, w, rstd, ns))
    if with_weight:
        assert_close(dw, grads[1], dtype, x.numel() // n, "dweight")
    else:
        assert dw is None


def _finite_difference_check(forward, backward, x, params, h=1e-2):
    """Central differences of sum(forward * dy) in float32 vs the analytic backward."""
    dy = np.random.randn(*x.shape).astype(np.float32)
    grads = backward(dy)
    arrays = [x] + params
    for a, g in zip(arrays, grads):
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + h
            up = float((forward().astype(np.float64) * dy).sum())
            a[idx] = old - h
            down = float((forward().astype(np.float64) * dy).sum())
            a[idx] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - g[idx]) <= 2e-2 * (1 + abs(fd)), f"at {idx}: finite difference {fd}, analytic {g[idx]}"


def test_layer_norm_gradients_by_finite_differences():
    x = np.random.randn(3, 5).astype(np.float32)
    w = (1 + 0.3 * np.random.randn(5)).astype(np.float32)
    b = np.random.randn(5).astype(np.float32)

    def backward(dy):
        _, mean, rstd = ng.layer_norm_forward(x, (5,), w, b)
        return ng.layer_norm_backward(dy, x, mean, rstd, (5,), w)

    _finite_difference_check(lambda: ng.layer_norm(x, (5,), w, b), backward, x, [w, b])


def test_rms_norm_gradients_by_finite_differences():
    x = np.random.randn(4, 6).astype(np.float32)
    w = (1 + 0.3 * np.random.randn(6)).astype(np.float32)

    def backward(dy):
        _, rstd = ng.rms_norm_forward(x, (6,), w, 1e-5)
        return ng.rms_norm_backward(dy, x, rstd, (6,), w)

    _finite_difference_check(lambda: ng.rms_norm(x, (6,), w, 1e-5), backward, x, [w])


# ---- every kernel in the kernel list -------------------------------------------------

_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] in ("layer_norm", "rms_norm")],
                         ids=lambda k: k["name"])
def test_every_row_norm_kernel_dispatches_and_matches(kernel):
    dtype = _TORCH_DTYPE[kernel["dtype"]]
    flags = dict(kv.split("=") for kv in kernel["variant"].split(",") if kv)
    has_w, has_b = flags.get("has_weight") == "1", flags.get("has_bias") == "1"
    rows, n = map(int, kernel["shape"].split("x")) if kernel["shape"] else (19, 77)  # tuned kernels: their shape
    stride = 2 if kernel["layout"] == "strided" else 1
    x = torch.randn(rows, n * stride).to(dtype)[:, ::stride]
    w = (1 + 0.5 * torch.randn(n)).to(dtype) if has_w else None
    b = torch.randn(n).to(dtype) if has_b else None
    dy = torch.randn(rows, n * stride).to(dtype)[:, ::stride]
    if flags.get("add_residual") == "1" or flags.get("has_ds") == "1":
        _check_add_norm_kernel(kernel, x, w, b, dy)
        return
    if kernel["op"] == "layer_norm":
        y, mean, rstd = ng.layer_norm_forward(x, (n,), w, b)
        if kernel["dir"] == "fwd":
            assert ng.last_kernel() == kernel["name"]
            assert_close(y, ref_layer_norm(x, (n,), w, b)[0], dtype, n, "y")
        else:
            dx, dw, db = ng.layer_norm_backward(dy, x, mean, rstd, (n,), w)
            assert ng.last_kernel() == kernel["name"]
            x64 = x.double().requires_grad_()
            ref = torch.autograd.grad(F.layer_norm(x64, (n,), None if w is None else w.double()), x64, dy.double())[0]
            assert_close(dx, ref, dtype, n, "dx")
    else:
        y, rstd = ng.rms_norm_forward(x, (n,), w)
        if kernel["dir"] == "fwd":
            assert ng.last_kernel() == kernel["name"]
            assert_close(y, ref_rms_norm(x, (n,), w)[0], dtype, n, "y")
        else:
            dx, dw = ng.rms_norm_backward(dy, x, rstd, (n,), w)
            assert ng.last_kernel() == kernel["name"]
            x64 = x.double().requires_grad_()
            out = F.rms_norm(x64, (n,), None if w is None else w.double(), torch.finfo(dtype).eps)
            assert_close(dx, torch.autograd.grad(out, x64, dy.double())[0], dtype, n, "dx")


def _check_add_norm_kernel(kernel, x, w, b, dy):
    """The fused pre-norm kernels, through add_layer_norm / add_rms_norm."""
    dtype, n = x.dtype, x.shape[-1]
    r = torch.randn(x.shape).to(dtype)
    ds = torch.randn(x.shape).to(dtype)
    lin = kernel["op"] == "layer_norm"
    s64 = (x.double() + r.double()).requires_grad_()
    w64 = None if w is None else w.double()
    ref = F.layer_norm(s64, (n,), w64, None if b is None else b.double()) if lin else \
        F.rms_norm(s64, (n,), w64, torch.finfo(dtype).eps)
    if lin:
        y, s, mean, rstd = ng.add_layer_norm_forward(x, r, (n,), w, b)
    else:
        y, s, rstd = ng.add_rms_norm_forward(x, r, (n,), w)
    if kernel["dir"] == "fwd":
        assert ng.last_kernel() == kernel["name"]
        assert_close(y, ref, dtype, n, "y")
        assert_close(s, s64.detach(), dtype, 1, "s")
        return
    if lin:
        dx, dr, _, _ = ng.add_layer_norm_backward(dy, ds, s, mean, rstd, (n,), w)
    else:
        dx, dr, _ = ng.add_rms_norm_backward(dy, ds, s, rstd, (n,), w)
    assert ng.last_kernel() == kernel["name"]
    # The kernel differentiates at the saved (rounded) s; so does the reference.
    s_saved = s.double().requires_grad_()
    out = F.layer_norm(s_saved, (n,), w64) if lin else F.rms_norm(s_saved, (n,), w64, torch.finfo(dtype).eps)
    want = torch.autograd.grad(out, s_saved, dy.double())[0] + ds.double()
    assert_close(dx, want, dtype, n, "dx")
    assert dr is dx


# ---- property-based ------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 20), cols=st.integers(1, 300), offset=st.sampled_from([0.0, 1e3, -5e3]),
       scale=st.sampled_from([1e-3, 1.0, 50.0]), seed=st.integers(0, 2**31 - 1))
def test_layer_norm_property_random_shapes(rows, cols, offset, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale + offset).float()
    y, mean, rstd = ng.layer_norm_forward(x, (cols,))
    want, want_mean, want_rstd = ref_layer_norm(x, (cols,))
    # Error of x - mean relative to the spread: the offset/scale ratio costs digits.
    cond = 1 + abs(offset) / scale
    tol = 64 * 2.0**-24 * cond * math.log2(cols + 2)
    assert (y.double() - want).abs().max().item() <= tol if rows else y.numel() == 0


# ---- bad input -----------------------------------------------------------------------

def test_bad_input_errors_name_the_argument():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="normalized_shape"):
        ng.layer_norm(x, (9,))
    with pytest.raises(ValueError, match=r"Expected weight of shape \[8\] \(normalized_shape\), but got \[7\]"):
        ng.layer_norm(x, (8,), torch.ones(7))
    with pytest.raises(ValueError, match="bias"):
        ng.layer_norm(x, (8,), torch.ones(8), torch.ones(3))
    with pytest.raises(TypeError, match="weight"):
        ng.layer_norm(x, (8,), torch.ones(8, dtype=torch.float16))
    with pytest.raises(TypeError, match="x"):
        ng.layer_norm(torch.randn(4, 8, dtype=torch.float64), (8,))
    with pytest.raises(TypeError, match="x"):
        ng.layer_norm(np.zeros((4, 8), np.int32), (8,))
    with pytest.raises(TypeError, match="x must be a numpy array or a torch tensor"):
        ng.layer_norm([[1.0, 2.0]], (2,))
    with pytest.raises(TypeError, match="weight must be a torch tensor"):
        ng.layer_norm(x, (8,), np.ones(8, np.float32))
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps"):
            ng.layer_norm(x, (8,), eps=eps)
        with pytest.raises(ValueError, match="eps"):
            ng.rms_norm(x, (8,), eps=eps)
    with pytest.raises(TypeError, match="eps"):
        ng.layer_norm(x, (8,), eps="small")
    with pytest.raises(TypeError, match="normalized_shape"):
        ng.layer_norm(x, None)
    y, mean, rstd = ng.layer_norm_forward(x, (8,))
    with pytest.raises(ValueError, match="mean"):
        ng.layer_norm_backward(torch.randn(4, 8), x, mean[:3], rstd, (8,))
    with pytest.raises(ValueError, match="dy"):
        ng.layer_norm_backward(torch.randn(4, 9), x, mean, rstd, (8,))
    with pytest.raises(TypeError, match="rstd"):
        ng.rms_norm_backward(torch.randn(4, 8), x, rstd.double(), (8,))


def test_huge_shape_is_rejected_not_crashing():
    # A zero-stride view of 2^31 columns: validated (32-bit indexing) before any access.
    x = torch.zeros(1).expand(1, 2**31)
    with pytest.raises(ValueError, match="32-bit"):
        ng.layer_norm(x, (2**31,))


def test_threads_control_and_kernel_table():
    before = ng.num_threads()
    ng.set_num_threads(1)
    assert ng.num_threads() == 1
    ng.set_num_threads(before)
    names = [k["name"] for k in ng.kernels()]
    assert len(names) == len(set(names)) and len(names) > 0


def test_verbose_dispatch_names_the_kernel(tmp_path):
    """NORMGEN_VERBOSE=dispatch prints the descriptor, the chosen kernel and skipped ones."""
    import os
    import subprocess
    import sys
    code = "import torch, normgen as ng; ng.layer_norm(torch.randn(4, 64)[:, ::2], (32,))"
    env = dict(os.environ, NORMGEN_VERBOSE="dispatch")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "layer_norm:fwd:f32:4x32:strided -> layer_norm_fwd_f32_strided_hb0_hw0" in out.stderr
    assert "skipped layer_norm_fwd_f32_contig_hb0_hw0: is for the contig layout, the call's is strided" in out.stderr


def test_tuned_kernels_dispatch_only_on_the_cpu_they_were_tuned_on():
    """A tuned kernel whose line names a CPU feature (cpu=avx512_zen4) is skipped on a CPU
    without it (emulated: NORMGEN_CPU_FEATURES_MAX=avx2) unless NORMGEN_TUNED_ANY_CPU=1."""
    import os
    import subprocess
    import sys

    tuned = [k for k in cpu_kernels() if k["shape"] and k["cpu"] and k["op"] == "layer_norm" and k["dir"] == "fwd"
             and "add_residual=1" not in k["variant"] and "has_bias=1,has_weight=1" in k["variant"]]
    if not tuned:
        pytest.skip("no tuned LayerNorm forward kernel with a cpu= feature in this build's tuned table")
    k = tuned[0]
    assert k["cpu"].startswith("avx512"), k  # (the committed table was tuned on an AVX-512 machine)
    rows, cols = map(int, k["shape"].split("x"))
    code = (f"import torch, normgen as ng; ng.set_num_threads({k['threads'] or 1}); "
            f"ng.layer_norm(torch.randn({rows}, {cols}), ({cols},), torch.randn({cols}), torch.randn({cols})); "
            "print(ng.last_kernel())")
    env = {key: v for key, v in os.environ.items() if key != "NORMGEN_TUNED_ANY_CPU"}
    env.update(NORMGEN_CPU_FEATURES_MAX="avx2", NORMGEN_VERBOSE="dispatch")
    capped = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert capped.stdout.strip() != k["name"], capped.stdout
    assert f"skipped {k['name']}: tuned on a CPU with {k['cpu']}, this one has not" in capped.stderr
    env["NORMGEN_TUNED_ANY_CPU"] = "1"
    anyway = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert anyway.stdout.strip() == k["name"], anyway.stdout


def test_tuned_kernels_dispatch_only_at_their_shape_and_thread_count():
    """Kernels from the tuned table (schedules/tuned/) serve exactly their shape, on the
    thread count they were tuned at."""
    tuned = [k for k in cpu_kernels() if k["shape"] and k["op"] in ("layer_norm", "rms_norm") and k["dir"] == "fwd"
             and "add_residual=1" not in k["variant"]]  # the pre-norm kernels serve add_*_norm, not these calls
    # Without a tuned table (NORMGEN_TUNED_TABLE empty), calls get the kernel list's kernels.
    ng.layer_norm(torch.randn(8192, 1024), (1024,), torch.randn(1024), torch.randn(1024))
    chosen = next(k for k in ng.kernels() if k["name"] == ng.last_kernel())
    assert chosen["shape"] == ("8192x1024" if any(k["shape"] == "8192x1024" and k["op"] == "layer_norm"
                                                  and k["threads"] in (0, ng.num_threads()) for k in tuned) else "")
    old = ng.num_threads()
    try:
        for k in tuned:
            rows, cols = map(int, k["shape"].split("x"))
            w = torch.randn(cols)
            for r, threads, want in ((rows, k["threads"], True), (rows + 1, k["threads"], False),
                                     (rows, k["threads"] + 1, k["threads"] == 0)):
                ng.set_num_threads(threads or old)
                x = torch.randn(r, cols)
                if k["op"] == "layer_norm":
                    ng.layer_norm(x, (cols,), w, torch.randn(cols))
                else:
                    ng.rms_norm(x, (cols,), w)
                assert (ng.last_kernel() == k["name"]) == want, (k["name"], r, threads, ng.last_kernel())
    finally:
        ng.set_num_threads(old)

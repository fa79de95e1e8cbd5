"""Fused epilogues: y = act(norm(x) + residual) in the norm's output pass, and the
backward through them, against the torch composite in float64 (autograd)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import normgen as ng
from conftest import DTYPES, assert_close, cpu_kernels, kernel_shape
from test_batch_norm import _make
from test_row_norm import _finite_difference_check

ACTS = {
    None: lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.2),
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
}
_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_LAYOUT = {"nchw": "nchw", "nhwc": "channels_last", "strided": "strided"}


def _inputs(shape, dtype, layout, with_residual, affine, seed):
    """A generator (for more), C, then x, residual, dy (in `layout`), weight, bias."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = _make(shape, dtype, layout, gen=gen)
    r = _make(shape, dtype, layout, offset=0.0, scale=1.0, gen=gen) if with_residual else None
    dy = _make(shape, dtype, layout, offset=0.0, scale=1.0, gen=gen)
    w = (1 + 0.3 * torch.randn(c, generator=gen)).to(dtype) if affine else None
    b = (0.5 * torch.randn(c, generator=gen)).to(dtype) if affine else None
    return gen, c, x, r, dy, w, b


def _check_batch_norm(dtype, layout, training, activation, with_residual, affine=True, shape=(3, 5, 4, 6)):
    gen, c, x, r, dy, w, b = _inputs(shape, dtype, layout, with_residual, affine, 11)
    rm, rv = torch.randn(c, generator=gen), torch.rand(c, generator=gen) + 0.5
    kw = dict(residual=r, activation=activation, negative_slope=0.2)
    rm_ng, rv_ng = rm.clone(), rv.clone()
    y, sm, sr = ng.batch_norm_forward(x, rm_ng, rv_ng, w, b, training, **kw)
    assert y.stride() == x.stride() or layout == "strided"
    x64 = x.double().requires_grad_()
    w64 = None if w is None else w.double().requires_grad_()
    b64 = None if b is None else b.double().requires_grad_()
    r64 = None if r is None else r.double().requires_grad_()
    rm64, rv64 = rm.double().clone(), rv.double().clone()
    z = F.batch_norm(x64, rm64, rv64, w64, b64, training)
    if r64 is not None:
        z = z + r64
    ref = ACTS[activation](z)
    m = x.numel() // c
    assert_close(y, ref.detach(), dtype, m, "y", scale=max(1.0, ref.abs().max().item()))
    if training:  # running statistics come from x alone
        assert_close(rm_ng, rm64, torch.float32, m, "running_mean")
        assert_close(rv_ng, rv64, torch.float32, m, "running_var")
    outs = ng.batch_norm_backward(dy, x, sm, sr, w, bias=b, **kw)
    ins = [x64] + [t for t in (w64, b64, r64) if t is not None]
    grads = dict(zip(["x", "w", "b", "r"][: 1] + [n for n, t in zip("wbr", (w64, b64, r64)) if t is not None],
                     torch.autograd.grad(ref, ins, dy.double())))
    dx, dw, db = outs[:3]
    scale = (dy.double().abs().max() * sr.double().max() * (w.double().abs().max() if affine else 1)).item() * 2
    assert_close(dx, grads["x"], dtype, m, "dx", scale=scale)
    if affine:
        assert_close(dw, grads["w"], dtype, m, "dweight", scale=grads["w"].abs().max().item() + m)
        assert_close(db, grads["b"], dtype, m, "dbias", scale=grads["b"].abs().max().item() + m)
    else:
        assert dw is None and db is None
    if with_residual:
        assert len(outs) == 4
        assert_close(outs[3], grads["r"], dtype, 1, "dresidual", scale=dy.double().abs().max().item() * 1.2)
    else:
        assert len(outs) == 3


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] == "batch_norm" and "epilogue=1" in k["variant"]],
                         ids=lambda k: k["name"])
def test_every_fused_batch_norm_kernel_dispatches_and_matches(kernel):
    flags = dict(kv.split("=") for kv in kernel["variant"].split(","))
    dtype, layout = _TORCH_DTYPE[kernel["dtype"]], _LAYOUT[kernel["layout"]]
    with_residual, training = flags["add_residual"] == "1", flags["training"] == "1"
    shape = kernel_shape(kernel, (3, 5, 4, 6))  # tuned kernels: their (N, C, spatial)
    c = shape[1]
    _check_batch_norm(dtype, layout, training, "silu", with_residual, shape=shape)
    names = [ng.last_kernel()]  # the backward's
    if kernel["dir"] == "fwd":
        ng.batch_norm_forward(_make(shape, dtype, layout), torch.zeros(c), torch.ones(c), torch.ones(c, dtype=dtype),
                              torch.zeros(c, dtype=dtype), training, activation="silu",
                              residual=_make(shape, dtype, layout) if with_residual else None)
        names = [ng.last_kernel()]
    assert kernel["name"] in names


# Every (activation, residual) pair that is an epilogue (neither is the plain norm).
EPILOGUES = [(a, r) for a in ACTS for r in (True, False) if a is not None or r]


@pytest.mark.parametrize("activation,with_residual", EPILOGUES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_every_activation(activation, with_residual, training):
    for layout in ("nchw", "channels_last"):
        _check_batch_norm(torch.float32, layout, training, activation, with_residual)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_fused_without_affine_and_1d(dtype):
    _check_batch_norm(dtype, "nchw", True, "relu", True, affine=False)
    _check_batch_norm(dtype, "nchw", True, "gelu", True, shape=(6, 4))  # (N, C): no spatial dims


def test_fused_bad_input():
    x = torch.randn(2, 3, 4, 4)
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="activation"):
        ng.batch_norm(x, rm, rv, training=True, activation="tanh")
    with pytest.raises(ValueError, match="residual"):
        ng.batch_norm(x, rm, rv, training=True, residual=torch.randn(2, 3, 4, 5))
    with pytest.raises(TypeError, match="residual"):
        ng.batch_norm(x, rm, rv, training=True, residual=torch.randn(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dresidual"):
        y, sm, sr = ng.batch_norm_forward(x, rm, rv, training=True)
        ng._normgen.batch_norm_backward(*(ng._arrays.spec(t, "t") for t in (x, x, sm, sr)), None, True,
                                        ng._arrays.spec(torch.empty_like(x), "dx"), None, None, None, None, 1, 0.0,
                                        ng._arrays.spec(torch.empty_like(x), "dresidual"))


def _check_group_norm(dtype, layout, groups, activation, with_residual, affine=True, shape=(3, 6, 4, 5),
                      instance=None):
    """GroupNorm (or, with ``instance`` = use_input_stats, InstanceNorm) with an epilogue."""
    gen, c, x, r, dy, w, b = _inputs(shape, dtype, layout, with_residual, affine, 5)
    kw = dict(residual=r, activation=activation, negative_slope=0.2)
    x64 = x.double().requires_grad_()
    w64 = None if w is None else w.double().requires_grad_()
    b64 = None if b is None else b.double().requires_grad_()
    r64 = None if r is None else r.double().requires_grad_()
    if instance is None:
        y, mean, rstd = ng.group_norm_forward(x, groups, w, b, **kw)
        z = F.group_norm(x64, groups, w64, b64)
        m = x.numel() // (shape[0] * groups)
    else:
        rm, rv = torch.randn(c, generator=gen), torch.rand(c, generator=gen) + 0.5
        y, mean, rstd = ng.instance_norm_forward(x, rm, rv, w, b, use_input_stats=instance, **kw)
        z = F.instance_norm(x64, rm.double(), rv.double(), w64, b64, use_input_stats=instance)
        m = x.numel() // (shape[0] * c)
    if r64 is not None:
        z = z + r64
    ref = ACTS[activation](z)
    assert_close(y, ref.detach(), dtype, m, "y", scale=max(1.0, ref.abs().max().item()))
    if instance is None:
        outs = ng.group_norm_backward(dy, x, mean, rstd, groups, w, bias=b, **kw)
    else:
        outs = ng.instance_norm_backward(dy, x, mean, rstd, w, bias=b, **kw)
    ins = [x64] + [t for t in (w64, b64, r64) if t is not None]
    names = ["x"] + [n for n, t in zip("wbr", (w64, b64, r64)) if t is not None]
    grads = dict(zip(names, torch.autograd.grad(ref, ins, dy.double())))
    dx, dw, db = outs[:3]
    scale = (dy.double().abs().max() * rstd.double().max() * (w.double().abs().max() if affine else 1)).item() * 2
    assert_close(dx, grads["x"], dtype, m, "dx", scale=scale)
    if affine:
        n_terms = x.numel() // c
        assert_close(dw, grads["w"], dtype, n_terms, "dweight", scale=grads["w"].abs().max().item() + n_terms)
        assert_close(db, grads["b"], dtype, n_terms, "dbias", scale=grads["b"].abs().max().item() + n_terms)
    assert len(outs) == (4 if with_residual else 3)
    if with_residual:
        assert_close(outs[3], grads["r"], dtype, 1, "dresidual", scale=dy.double().abs().max().item() * 1.2)


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] == "group_norm" and "epilogue=1" in k["variant"]],
                         ids=lambda k: k["name"])
def test_every_fused_group_norm_kernel_dispatches_and_matches(kernel):
    flags = dict(kv.split("=") for kv in kernel["variant"].split(","))
    dtype, layout = _TORCH_DTYPE[kernel["dtype"]], _LAYOUT[kernel["layout"]]
    with_residual = flags["add_residual"] == "1"
    shape = kernel_shape(kernel, (3, 6, 4, 5))  # tuned kernels: their (N, C, spatial)
    groups = 32 if kernel["shape"] and shape[1] % 32 == 0 else 3
    x = _make(shape, dtype, layout)
    r = _make(shape, dtype, layout) if with_residual else None
    y, mean, rstd = ng.group_norm_forward(x, groups, activation="silu", residual=r)
    if kernel["dir"] == "fwd":
        assert ng.last_kernel() == kernel["name"]
    else:
        ng.group_norm_backward(torch.ones_like(x), x, mean, rstd, groups, activation="silu", residual=r)
        assert ng.last_kernel() == kernel["name"]
    _check_group_norm(dtype, layout, groups, "silu", with_residual, shape=shape)


@pytest.mark.parametrize("activation,with_residual", EPILOGUES)
def test_group_norm_every_activation(activation, with_residual):
    for layout in ("nchw", "channels_last"):
        for groups in (1, 2, 6):
            _check_group_norm(torch.float32, layout, groups, activation, with_residual)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_fused(dtype, use_input_stats):
    _check_group_norm(dtype, "nchw", None, "gelu", True, instance=use_input_stats)
    _check_group_norm(dtype, "channels_last", None, "relu", False, affine=False, instance=use_input_stats)


# ---- gradients by finite differences (float32 central differences) --------------------

def _fd_inputs(shape, c, seed):
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal(shape) + 1).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    w = (1 + 0.3 * rng.standard_normal(c)).astype(np.float32)
    b = (0.5 * rng.standard_normal(c)).astype(np.float32)
    return x, r, w, b


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_fused_batch_norm_gradients_by_finite_differences(activation):
    x, r, w, b = _fd_inputs((3, 2, 4), 2, 1)
    kw = dict(residual=r, activation=activation)

    def backward(dy):
        _, sm, sr = ng.batch_norm_forward(x, None, None, w, b, True, **kw)
        return ng.batch_norm_backward(dy, x, sm, sr, w, bias=b, **kw)

    _finite_difference_check(lambda: ng.batch_norm(x, None, None, w, b, True, **kw), backward, x, [w, b, r])


def test_fused_group_norm_gradients_by_finite_differences():
    x, r, w, b = _fd_inputs((2, 4, 3), 4, 2)
    kw = dict(residual=r, activation="gelu")

    def backward(dy):
        _, m, rs = ng.group_norm_forward(x, 2, w, b, **kw)
        return ng.group_norm_backward(dy, x, m, rs, 2, w, bias=b, **kw)

    _finite_difference_check(lambda: ng.group_norm(x, 2, w, b, **kw), backward, x, [w, b, r])


def test_add_layer_norm_gradients_by_finite_differences():
    x, r, w, b = _fd_inputs((3, 5), 5, 3)

    def backward(dy):
        _, s, mean, rstd = ng.add_layer_norm_forward(x, r, (5,), w, b)
        dx, dr, dw, db = ng.add_layer_norm_backward(dy, None, s, mean, rstd, (5,), w)
        return dx, dr, dw, db

    _finite_difference_check(lambda: ng.add_layer_norm(x, r, (5,), w, b)[0], backward, x, [r, w, b])

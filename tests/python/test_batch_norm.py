"""BatchNorm from Python against float64 references and torch.nn.functional.batch_norm."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import normgen as ng
from conftest import DTYPES, assert_close, cpu_kernels, kernel_shape

SHAPES = [(4, 3), (5, 3, 7), (2, 6, 5, 6), (3, 2, 3, 4, 5), (1, 16, 7, 7), (8, 32, 1, 1), (2, 64, 3, 5),
          (2, 128, 2, 3), (1, 256, 3, 2)]  # C = lanes x 2..16: channels-last kernels specialize on C
LAYOUTS = ["nchw", "channels_last", "strided"]


def _make(shape, dtype, layout, offset=1.0, scale=2.0, gen=None):
    x = torch.randn(shape, dtype=torch.float64, generator=gen) * scale + offset
    x = x.to(dtype)
    if layout == "channels_last" and len(shape) in (4, 5):
        x = x.contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    elif layout == "channels_last" and len(shape) == 3:
        x = x.transpose(1, 2).contiguous().transpose(1, 2)  # (N, C, L) with C unit-stride
    elif layout == "strided":
        big = torch.zeros(shape[:-1] + (shape[-1] * 2,), dtype=dtype)
        big[..., ::2] = x
        x = big[..., ::2]
    return x


def _ref_forward(x, mean, var, w, b, eps):
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = (x.double() - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if w is not None:
        y = y * w.double().view(shape)
    if b is not None:
        y = y + b.double().view(shape)
    return y


def _batch_stats(x):
    dims = [0] + list(range(2, x.dim()))
    x64 = x.double()
    mean = x64.mean(dims)
    var = x64.var(dims, unbiased=False)
    return mean, var


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_forward_and_running_stats(dtype, layout, shape):
    c = shape[1]
    x = _make(shape, dtype, layout)
    w = (1 + 0.3 * torch.randn(c, dtype=torch.float64)).to(dtype)
    b = (0.3 * torch.randn(c, dtype=torch.float64)).to(dtype)
    rm, rv = torch.randn(c) * 0.1, torch.rand(c) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    y, save_mean, save_rstd = ng.batch_norm_forward(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    mean, var = _batch_stats(x)
    m = x.numel() // c
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == torch.empty_like(x).stride()
    assert_close(y, _ref_forward(x, mean, var, w, b, 1e-5), dtype, m, "y")
    assert_close(save_mean, mean, torch.float32, m, "save_mean")
    assert_close(save_rstd, 1 / torch.sqrt(var + 1e-5), torch.float32, m, "save_rstd")
    assert_close(rm, 0.9 * rm0.double() + 0.1 * mean, torch.float32, m, "running_mean")
    assert_close(rv, 0.9 * rv0.double() + 0.1 * var * m / (m - 1), torch.float32, m, "running_var")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_running_stats_over_steps_match_torch(dtype, layout):
    """Several training steps, momentum 0.1 and momentum=None (cumulative average)."""
    c = 5
    ours = {"m": (torch.zeros(c), torch.ones(c)), "n": (torch.zeros(c), torch.ones(c))}
    theirs = {"m": (torch.zeros(c), torch.ones(c)), "n": (torch.zeros(c), torch.ones(c))}
    tracked = torch.zeros(1, dtype=torch.int64)
    for step in range(4):
        x = _make((6, c, 4, 3), dtype, layout, offset=step)
        ng.batch_norm(x, *ours["m"], training=True, momentum=0.1)
        F.batch_norm(x.float(), *theirs["m"], training=True, momentum=0.1)
        ng.batch_norm(x, *ours["n"], training=True, momentum=None, num_batches_tracked=tracked)
        F.batch_norm(x.float(), *theirs["n"], training=True, momentum=1.0 / (step + 1))
        assert int(tracked) == step + 1
    for key in ("m", "n"):
        for a, t, name in zip(ours[key], theirs[key], ("running_mean", "running_var")):
            assert_close(a, t.double(), torch.float32, 72, f"{name} ({key})")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [False, True])
def test_inference_forward_matches_torch(dtype, layout, affine):
    c = 6
    x = _make((3, c, 5, 4), dtype, layout)
    rm, rv = torch.randn(c), torch.rand(c) + 0.2
    w = torch.randn(c).to(dtype) if affine else None
    b = torch.randn(c).to(dtype) if affine else None
    rm0, rv0 = rm.clone(), rv.clone()
    y, save_mean, save_rstd = ng.batch_norm_forward(x, rm, rv, w, b, training=False)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0), "inference must not touch running statistics"
    assert_close(y, _ref_forward(x, rm.double(), rv.double(), w, b, 1e-5), dtype, 1, "y")
    assert torch.equal(save_mean, rm)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_weight", [False, True])
def test_training_backward_matches_autograd(dtype, layout, shape, with_weight):
    c = shape[1]
    x = _make(shape, dtype, layout)
    dy = _make(shape, dtype, layout, offset=0.0, scale=1.0)
    w = (1 + 0.3 * torch.randn(c)).to(dtype) if with_weight else None
    b = torch.randn(c).to(dtype) if with_weight else None
    _, save_mean, save_rstd = ng.batch_norm_forward(x, None, None, w, b, training=True)
    dx, dw, db = ng.batch_norm_backward(dy, x, save_mean, save_rstd, w)
    x64 = x.double().requires_grad_()
    params = [p.double().requires_grad_() for p in (w, b) if p is not None]
    out = F.batch_norm(x64, None, None, *params, training=True) if params else F.batch_norm(x64, None, None, training=True)
    grads = torch.autograd.grad(out, [x64] + params, dy.double())
    m = x.numel() // c
    scale = (dy.double().abs().max() * save_rstd.double().max() * (w.double().abs().max() if w is not None else 1)).item()
    assert dx.stride() == torch.empty_like(x).stride()
    assert_close(dx, grads[0], dtype, m, "dx", scale=scale)
    if with_weight:
        assert_close(dw, grads[1], dtype, m, "dweight")
        assert_close(db, grads[2], dtype, m, "dbias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inference_backward_is_the_affine_gradient(layout):
    c = 4
    x = _make((3, c, 6, 5), torch.float32, layout)
    dy = _make((3, c, 6, 5), torch.float32, layout, offset=0.0, scale=1.0)
    rm, rv, w = torch.randn(c), torch.rand(c) + 0.5, torch.randn(c)
    _, save_mean, save_rstd = ng.batch_norm_forward(x, rm, rv, w, None, training=False)
    dx, dw, db = ng.batch_norm_backward(dy, x, save_mean, save_rstd, w)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    out = F.batch_norm(x64, rm.double(), rv.double(), w64, None, training=False)
    gx, gw = torch.autograd.grad(out, (x64, w64), dy.double())
    assert_close(dx, gx, torch.float32, 1, "dx")
    assert_close(dw, gw, torch.float32, 90, "dweight")
    assert_close(db, dy.double().sum((0, 2, 3)), torch.float32, 90, "dbias")


def test_numpy_in_numpy_out_and_saved_mode():
    x = np.random.randn(4, 3, 5).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, sm, sr = ng.batch_norm_forward(x, rm, rv, training=True)
    assert isinstance(y, np.ndarray) and sr.normgen_training
    _, _, sr_eval = ng.batch_norm_forward(x, rm, rv, training=False)
    assert not sr_eval.normgen_training
    dx, _, _ = ng.batch_norm_backward(np.ones_like(x), x, sm, sr)
    assert np.abs(dx).max() < 1e-5  # a constant upstream gradient has no effect through batch stats


def test_large_offset_data():
    x = (torch.randn(16, 8, 12, 12, dtype=torch.float64) + 1e4).float()
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        y = ng.batch_norm(xx, None, None, training=True)
        mean, var = _batch_stats(x)
        assert (y.double() - _ref_forward(x, mean, var, None, None, 1e-5)).abs().max().item() < 1e-3


def test_constant_channel_and_one_value_per_channel():
    x = torch.full((4, 2, 3), 7.0)
    y = ng.batch_norm(x, None, None, training=True)
    assert torch.equal(y, torch.zeros_like(y))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ng.batch_norm(torch.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ng.batch_norm(torch.randn(1, 3, 1, 1), torch.zeros(3), torch.ones(3), training=True)
    ng.batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False)  # fine in eval


def test_bad_input():
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match=r"Expected weight of shape \[3\]"):
        ng.batch_norm(x, None, None, torch.ones(4), training=True)
    with pytest.raises(TypeError, match="running_mean"):
        ng.batch_norm(x, torch.zeros(3, dtype=torch.float64), torch.ones(3), training=True)
    with pytest.raises(ValueError, match="required when training=False"):
        ng.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="given together"):
        ng.batch_norm(x, torch.zeros(3), None, training=True)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        ng.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match="eps"):
        ng.batch_norm(x, None, None, training=True, eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        ng.batch_norm(torch.randn(5), None, None, training=True)
    with pytest.raises(TypeError, match="num_batches_tracked"):
        ng.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None,
                      num_batches_tracked=torch.zeros(1, dtype=torch.int32))
    rm = torch.zeros(3)
    with pytest.raises(ValueError, match="overlaps"):
        ng.batch_norm_forward(x, rm, rm, training=True)


_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] == "batch_norm" and "epilogue=1" not in k["variant"]],
                         ids=lambda k: k["name"])
def test_every_batch_norm_kernel_dispatches_and_matches(kernel):
    """(The fused-epilogue kernels: test_fused_norms.py.)"""
    dtype = _TORCH_DTYPE[kernel["dtype"]]
    flags = dict(kv.split("=") for kv in kernel["variant"].split(",") if kv)
    training = flags.get("training") == "1"
    layout = {"nchw": "nchw", "nhwc": "channels_last", "strided": "strided"}[kernel["layout"]]
    shape = kernel_shape(kernel, (3, 5, 4, 6))  # tuned kernels: their (N, C, spatial)
    c = shape[1]
    x = _make(shape, dtype, layout)
    has_w = flags.get("affine", flags.get("has_weight")) == "1"
    w = (1 + 0.3 * torch.randn(c)).to(dtype) if has_w else None
    b = torch.randn(c).to(dtype) if has_w else None
    rm, rv = torch.randn(c), torch.rand(c) + 0.5
    y, sm, sr = ng.batch_norm_forward(x, rm.clone(), rv.clone(), w, b, training=training)
    if kernel["dir"] == "fwd":
        assert ng.last_kernel() == kernel["name"]
        mean, var = _batch_stats(x) if training else (rm.double(), rv.double())
        assert_close(y, _ref_forward(x, mean, var, w, b, 1e-5), dtype, x.numel() // c, "y")
    else:
        dy = _make(shape, dtype, layout, offset=0.0, scale=1.0)
        dx, _, _ = ng.batch_norm_backward(dy, x, sm, sr, w)
        assert ng.last_kernel() == kernel["name"]
        x64 = x.double().requires_grad_()
        out = F.batch_norm(x64, None if training else rm.double(), None if training else rv.double(),
                           None if w is None else w.double(), None if b is None else b.double(), training=training)
        scale = (dy.double().abs().max() * sr.double().max() * (w.double().abs().max() if has_w else 1)).item()
        assert_close(dx, torch.autograd.grad(out, x64, dy.double())[0], dtype, x.numel() // c, "dx", scale=scale)

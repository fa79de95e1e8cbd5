"""Folding inference BatchNorm into the preceding conv/linear: a float64 formula, torch's fusion
utilities, and conv/linear + eval-mode BatchNorm in torch against the folded layer."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

import normgen as ng
from conftest import DTYPES, assert_close

# output channels on axis 0: conv2d (O, I, kh, kw), linear (O, I), conv1d, conv3d, 1x1 convs
SHAPES = [(8, 3, 3, 3), (16, 32), (5, 3, 7), (1, 1), (4, 2, 1, 1), (6, 2, 3, 3, 3)]


def _bn_stats(o, dtype, gamma=True, beta=True):
    """Random running statistics (float32, var in [0.5, 2]) and affine parameters in `dtype`."""
    rm = torch.randn(o) * 0.5
    rv = torch.rand(o) * 1.5 + 0.5
    g = (1 + 0.3 * torch.randn(o, dtype=torch.float64)).to(dtype) if gamma else None
    b = (0.3 * torch.randn(o, dtype=torch.float64)).to(dtype) if beta else None
    return rm, rv, g, b


def _ref_fold(w, b, rm, rv, gamma, beta, eps):
    s = 1 / torch.sqrt(rv.double() + eps)
    if gamma is not None:
        s = s * gamma.double()
    w2 = w.double() * s.view((-1,) + (1,) * (w.dim() - 1))
    b2 = ((b.double() if b is not None else 0) - rm.double()) * s
    if beta is not None:
        b2 = b2 + beta.double()
    return w2, b2


def _opt64(t):
    return None if t is None else t.double()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_formula(shape, with_bias, affine, dtype):
    o = shape[0]
    w = torch.randn(shape, dtype=torch.float64).to(dtype)
    b = torch.randn(o, dtype=torch.float64).to(dtype) if with_bias else None
    rm, rv, gamma, beta = _bn_stats(o, dtype, gamma=affine, beta=affine)
    inputs = [t.clone() for t in (w, b, rm, rv, gamma, beta) if t is not None]
    w2, b2 = ng.fold_batch_norm(w, b, rm, rv, gamma, beta)  # default eps 1e-5
    want_w, want_b = _ref_fold(w, b, rm, rv, gamma, beta, 1e-5)
    assert w2.dtype == dtype and b2.dtype == dtype
    assert_close(w2, want_w, dtype, 1, "w2")
    assert_close(b2, want_b, dtype, 1, "b2")
    # torch's own folding as a second, independent reference
    tw, tb = fuse_conv_bn_weights(w.double(), _opt64(b), rm.double(), rv.double(), 1e-5, _opt64(gamma), _opt64(beta))
    assert_close(w2, tw.detach(), dtype, 1, "w2 vs torch")
    assert_close(b2, tb.detach(), dtype, 1, "b2 vs torch")
    after = [t for t in (w, b, rm, rv, gamma, beta) if t is not None]
    assert all(torch.equal(a, c) for a, c in zip(after, inputs)), "fold_batch_norm must not modify its inputs"


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_gamma_or_beta_alone(which):
    w, b = torch.randn(6, 4, 3, 3), torch.randn(6)
    rm, rv, gamma, beta = _bn_stats(6, torch.float32, gamma=which == "gamma", beta=which == "beta")
    w2, b2 = ng.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=1e-3)
    want_w, want_b = _ref_fold(w, b, rm, rv, gamma, beta, 1e-3)
    assert_close(w2, want_w, torch.float32, 1, "w2")
    assert_close(b2, want_b, torch.float32, 1, "b2")


@pytest.mark.parametrize("conv_bias", [True, False], ids=["conv-bias", "no-conv-bias"])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (1, 0), (2, 2)])
def test_conv_then_eval_batch_norm_equals_folded_conv(conv_bias, stride, padding):
    x = torch.randn(2, 5, 9, 11)
    w = torch.randn(8, 5, 3, 3) * 0.3
    b = torch.randn(8) if conv_bias else None
    rm, rv, gamma, beta = _bn_stats(8, torch.float32)
    eps = 1e-3
    want = F.batch_norm(F.conv2d(x.double(), w.double(), _opt64(b), stride, padding), rm.double(), rv.double(),
                        gamma.double(), beta.double(), training=False, eps=eps)
    w2, b2 = ng.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=eps)
    got = F.conv2d(x, w2, b2, stride, padding)
    assert got.dtype == torch.float32
    # scale: the magnitude of the terms each output sums (|x| * |w2|, plus |b2|)
    scale = F.conv2d(x.abs(), w2.abs(), b2.abs(), stride, padding).max().item()
    assert_close(got, want, torch.float32, 5 * 3 * 3, "folded conv", scale=scale)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_then_eval_batch_norm_equals_folded_linear(bias):
    x = torch.randn(7, 20)
    w = torch.randn(12, 20) * 0.2
    b = torch.randn(12) if bias else None
    rm, rv, gamma, beta = _bn_stats(12, torch.float32)
    want = F.batch_norm(F.linear(x.double(), w.double(), _opt64(b)), rm.double(), rv.double(), gamma.double(),
                        beta.double(), training=False, eps=1e-5)
    w2, b2 = ng.fold_batch_norm(w, b, rm, rv, gamma, beta)
    scale = F.linear(x.abs(), w2.abs(), b2.abs()).max().item()
    assert_close(F.linear(x, w2, b2), want, torch.float32, 20, "folded linear", scale=scale)
    if b is not None:
        tw, tb = fuse_linear_bn_weights(w.double(), b.double(), rm.double(), rv.double(), 1e-5, gamma.double(),
                                        beta.double())
        assert_close(w2, tw.detach(), torch.float32, 1, "w2 vs torch")
        assert_close(b2, tb.detach(), torch.float32, 1, "b2 vs torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_numpy_inputs(dtype):
    w = np.random.randn(8, 3, 3, 3).astype(dtype)
    b = np.random.randn(8).astype(dtype)
    rm = (np.random.randn(8) * 0.5).astype(np.float32)
    rv = (np.random.rand(8) * 1.5 + 0.5).astype(np.float32)
    gamma, beta = np.random.randn(8).astype(dtype), np.random.randn(8).astype(dtype)
    w2, b2 = ng.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=1e-5)
    assert isinstance(w2, np.ndarray) and isinstance(b2, np.ndarray)
    assert w2.dtype == b2.dtype == dtype and w2.shape == w.shape and b2.shape == (8,)
    want_w, want_b = _ref_fold(*(torch.from_numpy(a) for a in (w, b, rm, rv, gamma, beta)), 1e-5)
    tdtype = torch.float32 if dtype == np.float32 else torch.float16
    assert_close(w2, want_w, tdtype, 1, "w2")
    assert_close(b2, want_b, tdtype, 1, "b2")


def test_bad_input():
    w, b = torch.randn(6, 3, 3, 3), torch.randn(6)
    rm, rv, gamma, beta = _bn_stats(6, torch.float32)
    with pytest.raises(ValueError, match="running_var"):
        ng.fold_batch_norm(w, b, rm, torch.rand(5) + 0.5, gamma, beta)
    with pytest.raises(ValueError, match="running_mean"):
        ng.fold_batch_norm(w, b, torch.zeros(7), rv, gamma, beta)
    with pytest.raises(ValueError, match="gamma"):
        ng.fold_batch_norm(w, b, rm, rv, torch.ones(5), beta)
    with pytest.raises(ValueError, match="beta"):
        ng.fold_batch_norm(w, b, rm, rv, gamma, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\bb\b"):
        ng.fold_batch_norm(w, torch.zeros(3), rm, rv, gamma, beta)
    for eps in (0.0, -1e-5):
        with pytest.raises(ValueError, match=r"\beps\b"):
            ng.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=eps)

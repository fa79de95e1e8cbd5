"""Weight normalization from Python against torch._weight_norm in float64 and its autograd."""
import numpy as np
import pytest
import torch

import normgen as ng
from conftest import DTYPES, assert_close

# 2-D linear weights, 4-D conv weights, and odd sizes (3x5x7, dimensions of size 1)
SHAPES = [(16, 24), (7, 1), (1, 9), (3, 5, 7), (8, 4, 3, 3), (6, 1, 5, 5), (1, 3, 1, 2)]
DIMS = [0, 1, -1, None]


def _g_shape(v_shape, dim, form):
    """torch's kept-dims shape ("kept") or (v.shape[dim],) ("flat"); for dim=None 0-d or (1,)."""
    if dim is None:
        return () if form == "kept" else (1,)
    if form == "flat":
        return (v_shape[dim],)
    shape = [1] * len(v_shape)
    shape[dim] = v_shape[dim]
    return tuple(shape)


def _reduction_len(v_shape, dim):
    n = int(np.prod(v_shape))
    return n if dim is None else n // v_shape[dim]


def _randn(shape, dtype, scale=1.0):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)


def _ref(v, g, dim, dw):
    """float64 (w, norm, dv, dg) from torch._weight_norm and autograd, in g's shape.

    torch._weight_norm's dim=-1 means "the whole tensor", so a negative dim is made positive first.
    """
    tdim = -1 if dim is None else dim % v.dim()
    v64 = v.double().requires_grad_()
    g64 = g.double().reshape(_g_shape(v.shape, None if dim is None else tdim, "kept")).requires_grad_()
    w = torch._weight_norm(v64, g64, tdim)
    dv, dg = torch.autograd.grad(w, (v64, g64), dw.double())
    with torch.no_grad():
        if dim is None:
            norm = torch.linalg.vector_norm(v64).reshape(1)
        else:
            norm = torch.linalg.vector_norm(v64, dim=[d for d in range(v.dim()) if d != tdim])
    return w.detach(), norm, dv, dg.reshape(g.shape)


def _check(v, g, dim, dtype, what=""):
    dw = _randn(v.shape, dtype)
    want_w, want_norm, want_dv, want_dg = _ref(v, g, dim, dw)
    m = _reduction_len(v.shape, dim)
    w, norm = ng.weight_norm_forward(v, g, dim=dim)
    assert w.dtype == v.dtype and norm.dtype == torch.float32
    assert_close(w, want_w, dtype, m, f"w{what}")
    assert_close(norm, want_norm, torch.float32, m, f"norm{what}")
    assert_close(ng.weight_norm(v, g, dim=dim), want_w, dtype, m, f"weight_norm{what}")
    dv, dg = ng.weight_norm_backward(dw, v, norm, g, dim=dim)
    assert dv.dtype == v.dtype and dg.dtype == g.dtype
    # dv = g/|v| * (dw - v (v.dw)/|v|^2): terms of size |g| |dw| / |v|
    scale = (g.double().abs().max() * dw.double().abs().max() / want_norm.min()).item()
    assert_close(dv, want_dv, dtype, m, f"dv{what}", scale=scale)
    assert_close(dg, want_dg, dtype, m, f"dg{what}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g_form", ["kept", "flat"])
@pytest.mark.parametrize("dim", DIMS, ids=lambda d: f"dim={d}")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_torch(shape, dim, g_form, dtype):
    v = _randn(shape, dtype)
    g = (1 + 0.5 * torch.randn(_g_shape(shape, dim, g_form), dtype=torch.float64)).to(dtype)
    _check(v, g, dim, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [0, 1, None], ids=lambda d: f"dim={d}")
def test_large_magnitude_v(dtype, dim):
    """|v| ~ 1e3: the sum of squares (~1e8) overflows float16, so it must be accumulated in float32."""
    v = _randn((8, 4, 3, 3), dtype, scale=1e3)
    g = _randn(_g_shape(v.shape, dim, "kept"), dtype)
    _check(v, g, dim, dtype)


def test_negative_dims_count_from_the_end():
    v = torch.randn(5, 4, 3, 2)
    for dim in range(-4, 0):
        g = torch.randn(_g_shape(v.shape, dim, "kept"))
        _check(v, g, dim, torch.float32, f" dim={dim}")


def test_default_dim_is_0():
    v, g = torch.randn(6, 3, 2, 2), torch.randn(6, 1, 1, 1)
    assert_close(ng.weight_norm(v, g), _ref(v, g, 0, torch.zeros_like(v))[0], torch.float32, 12, "w")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_numpy_inputs(dtype):
    v = np.random.randn(8, 4, 3, 3).astype(dtype)
    g = np.random.randn(8, 1, 1, 1).astype(dtype)
    dw = np.random.randn(8, 4, 3, 3).astype(dtype)
    tdtype = torch.float32 if dtype == np.float32 else torch.float16
    want_w, want_norm, want_dv, want_dg = _ref(torch.from_numpy(v), torch.from_numpy(g), 0, torch.from_numpy(dw))
    w, norm = ng.weight_norm_forward(v, g, dim=0)
    assert isinstance(w, np.ndarray) and w.dtype == dtype and isinstance(norm, np.ndarray)
    assert norm.dtype == np.float32
    assert_close(w, want_w, tdtype, 36, "w")
    assert_close(norm, want_norm, torch.float32, 36, "norm")
    dv, dg = ng.weight_norm_backward(dw, v, norm, g, dim=0)
    assert isinstance(dv, np.ndarray) and isinstance(dg, np.ndarray) and dv.dtype == dg.dtype == dtype
    scale = (np.abs(g).max() * np.abs(dw).max() / want_norm.min()).item()
    assert_close(dv, want_dv, tdtype, 36, "dv", scale=scale)
    assert_close(dg, want_dg, tdtype, 36, "dg")


def test_bad_input():
    v = torch.randn(4, 3, 2, 2)
    with pytest.raises(ValueError, match=r"\bg\b"):
        ng.weight_norm(v, torch.randn(3, 1, 1, 1), dim=0)  # v.shape[0] is 4
    with pytest.raises(ValueError, match=r"\bg\b"):
        ng.weight_norm(v, torch.randn(4, 3, 1, 1), dim=0)  # not size 1 off dim
    with pytest.raises(ValueError, match=r"\bg\b"):
        ng.weight_norm(v, torch.randn(4), dim=None)  # dim=None takes a scalar g
    with pytest.raises(ValueError, match=r"\bg\b"):
        ng.weight_norm_forward(v, torch.randn(1, 3), dim=1)
    with pytest.raises(ValueError, match=r"\bdim\b"):
        ng.weight_norm(v, torch.randn(4), dim=4)
    with pytest.raises(ValueError, match=r"\bdim\b"):
        ng.weight_norm(v, torch.randn(4), dim=-5)
    with pytest.raises(TypeError):
        ng.weight_norm(torch.ones(4, 3, dtype=torch.int32), torch.ones(4, 1, dtype=torch.int32))
    with pytest.raises(TypeError):
        ng.weight_norm(np.ones((4, 3), dtype=np.int64), np.ones((4, 1), dtype=np.int64))
    w, norm = ng.weight_norm_forward(v, torch.randn(4), dim=0)
    with pytest.raises(ValueError, match=r"\bg\b"):
        ng.weight_norm_backward(torch.randn_like(v), v, norm, torch.randn(3), dim=0)

"""add_layer_norm / add_rms_norm (pre-norm residual add fused with the norm) against the
torch composite ``s = x + r; y = norm(s)`` in float64, forward and backward."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import normgen as ng
from conftest import DTYPES, assert_close


def _composite(op, x, r, n, w, b, eps):
    s = (x.double() + r.double()).requires_grad_()
    w64 = None if w is None else w.double().requires_grad_()
    b64 = None if b is None else b.double().requires_grad_()
    y = F.layer_norm(s, (n,), w64, b64, eps) if op == "layer" else F.rms_norm(s, (n,), w64, eps)
    return s, w64, b64, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["layer", "rms"])
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("with_ds", [True, False])
@pytest.mark.parametrize("shape", [(7, 33), (2, 3, 256), (3, 2)], ids=str)
def test_matches_torch_composite(dtype, op, with_weight, with_ds, shape):
    gen = torch.Generator().manual_seed(3)
    n = shape[-1]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype)
    r = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    w = (1 + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype) if with_weight else None
    b = (0.3 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype) if with_weight and op == "layer" else None
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    ds = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) if with_ds else None
    eps = 1e-5 if op == "layer" else 1e-6
    if op == "layer":
        y, s, mean, rstd = ng.add_layer_norm_forward(x, r, (n,), w, b, eps)
    else:
        y, s, rstd = ng.add_rms_norm_forward(x, r, (n,), w, eps)
    s64, w64, b64, ref = _composite(op, x, r, n, w, b, eps)
    assert y.dtype == dtype and s.dtype == dtype and y.shape == x.shape
    assert_close(s, s64.detach(), dtype, 1, "s")
    assert_close(y, ref.detach(), dtype, n, "y")
    if op == "layer":
        dx, dr, dw, db = ng.add_layer_norm_backward(dy, ds, s, mean, rstd, (n,), w)
    else:
        dx, dr, dw = ng.add_rms_norm_backward(dy, ds, s, rstd, (n,), w)
        db = None
    # Reference gradients at the saved s (what the backward sees), plus ds.
    s_saved = s.double().requires_grad_()
    out = F.layer_norm(s_saved, (n,), w64, b64, eps) if op == "layer" else F.rms_norm(s_saved, (n,), w64, eps)
    params = [p for p in (w64, b64) if p is not None]
    grads = torch.autograd.grad(out, [s_saved] + params, dy.double())
    want_dx = grads[0] + (ds.double() if ds is not None else 0)
    # The statistics are of the float32 sum, the backward reads s rounded to the storage
    # dtype: that rounding (|s| u_dtype) moves xhat by |s| u_dtype rstd, dx by rstd times that.
    r_max, w_max = rstd.double().max().item(), (1.0 if w is None else w.double().abs().max().item())
    scale = dy.double().abs().max().item() * r_max * w_max * max(2.0, s.double().abs().max().item() * r_max)
    assert_close(dx, want_dx, dtype, n, "dx", scale=max(scale, want_dx.abs().max().item()))
    assert dr is dx
    rows = x.numel() // n
    if with_weight:
        dw_scale = rows * dy.double().abs().max().item() * max(1.0, s.double().abs().max().item() * r_max)
        assert_close(dw, grads[1], dtype, rows * n, "dweight", scale=max(grads[1].abs().max().item() + rows, dw_scale))
        if op == "layer":
            assert_close(db, grads[2], dtype, rows, "dbias", scale=grads[2].abs().max().item() + rows)
    else:
        assert dw is None and db is None


def test_large_offset_sum():
    """x and r near 1e4 and -1e4: the sum is normalized in float32 without cancellation
    beyond its own rounding."""
    x = (torch.randn(64, 512, dtype=torch.float64) + 1e4).float()
    r = (torch.randn(64, 512, dtype=torch.float64) - 1e4 + 5).float()
    y, s = ng.add_layer_norm(x, r, (512,))
    ref = F.layer_norm(x.double() + r.double(), (512,))
    assert (y.double() - ref).abs().max().item() < 1e-3
    y2, _ = ng.add_rms_norm(x, r, (512,))
    ref2 = F.rms_norm(x.double() + r.double(), (512,), eps=torch.finfo(torch.float32).eps)
    assert (y2.double() - ref2).abs().max().item() < 1e-4


def test_numpy_and_strided():
    x = np.random.randn(5, 40).astype(np.float32)
    r = np.random.randn(5, 40).astype(np.float32)
    y, s = ng.add_rms_norm(x, r, 40)
    assert isinstance(y, np.ndarray) and isinstance(s, np.ndarray)
    np.testing.assert_allclose(s, x + r, rtol=1e-6)
    xt = torch.randn(6, 80)[:, ::2]
    rt = torch.randn(6, 80)[:, ::2]
    y, s = ng.add_layer_norm(xt, rt, (40,))
    assert_close(y, F.layer_norm(xt.double() + rt.double(), (40,)), torch.float32, 40, "strided y")


def test_bad_input_names_the_argument():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="residual"):
        ng.add_layer_norm(x, torch.randn(4, 9), (8,))
    with pytest.raises(TypeError, match="residual"):
        ng.add_rms_norm(x, torch.randn(4, 8, dtype=torch.float64), (8,))
    y, s, mean, rstd = ng.add_layer_norm_forward(x, torch.randn(4, 8), (8,))
    with pytest.raises(ValueError, match="ds"):
        ng.add_layer_norm_backward(torch.randn(4, 8), torch.randn(3, 8), s, mean, rstd, (8,))
    with pytest.raises(ValueError, match="eps"):
        ng.add_layer_norm(x, x.clone(), (8,), eps=0.0)

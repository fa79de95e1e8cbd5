"""GroupNorm and InstanceNorm from Python against torch.nn.functional and float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import normgen as ng
from conftest import DTYPES, assert_close, cpu_kernels, kernel_shape
from test_batch_norm import LAYOUTS, _make

SHAPES = [(2, 6, 5), (3, 4, 5, 6), (2, 8, 3, 4, 5), (1, 32, 7, 7), (4, 6, 1, 1), (1, 3, 9, 2),
          (2, 128, 2, 3), (1, 256, 3, 2)]  # C = lanes x 8, 16: channels-last kernels specialize on C


def _ref_group_norm(x, groups, w, b, eps=1e-5):
    n, c = x.shape[:2]
    x64 = x.double().reshape(n, groups, -1)
    mean = x64.mean(-1, keepdim=True)
    var = x64.var(-1, unbiased=False, keepdim=True)
    y = ((x64 - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = [1, c] + [1] * (x.dim() - 2)
    if w is not None:
        y = y * w.double().view(shape)
    if b is not None:
        y = y + b.double().view(shape)
    return y, mean.reshape(n, groups), (1 / torch.sqrt(var + eps)).reshape(n, groups)


def _groups_for(c):
    return sorted({1, c, next(g for g in (2, 3, 4, 1) if c % g == 0)})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_group_norm_forward_and_backward(dtype, layout, shape):
    c = shape[1]
    for groups in _groups_for(c):
        x = _make(shape, dtype, layout)
        dy = _make(shape, dtype, layout, offset=0.0, scale=1.0)
        w = (1 + 0.3 * torch.randn(c)).to(dtype)
        b = (0.3 * torch.randn(c)).to(dtype)
        y, mean, rstd = ng.group_norm_forward(x, groups, w, b)
        want, want_mean, want_rstd = _ref_group_norm(x, groups, w, b)
        m = x.numel() // (shape[0] * groups)
        assert y.stride() == torch.empty_like(x).stride() and mean.shape == (shape[0], groups)
        assert_close(y, want, dtype, m, f"y G={groups}")
        assert_close(mean, want_mean, torch.float32, m, "mean")
        assert_close(rstd, want_rstd, torch.float32, m, "rstd")
        dx, dw, db = ng.group_norm_backward(dy, x, mean, rstd, groups, w)
        x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
        gx, gw, gb = torch.autograd.grad(F.group_norm(x64, groups, w64, b64), (x64, w64, b64), dy.double())
        scale = (dy.double().abs().max() * rstd.double().max() * w.double().abs().max()).item()
        assert_close(dx, gx, dtype, m, f"dx G={groups}", scale=scale)
        assert_close(dw, gw, dtype, x.numel() // c, "dweight")
        assert_close(db, gb, dtype, x.numel() // c, "dbias")


def test_group_norm_equivalences():
    """G = 1 is LayerNorm over (C, *spatial) (affine per channel); G = C is InstanceNorm."""
    x = torch.randn(3, 6, 4, 5) * 3 + 2
    y1 = ng.group_norm(x, 1)
    assert_close(y1, F.layer_norm(x.double(), x.shape[1:]), torch.float32, 120, "G=1 vs LayerNorm")
    yc = ng.group_norm(x, 6)
    assert_close(yc, ng.instance_norm(x).double(), torch.float32, 20, "G=C vs InstanceNorm")
    assert_close(yc, F.instance_norm(x.double()), torch.float32, 20, "G=C vs torch InstanceNorm")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_instance_norm_with_running_stats_matches_torch(dtype, layout, shape):
    c = shape[1]
    x = _make(shape, dtype, layout)
    w, b = (1 + 0.3 * torch.randn(c)).to(dtype), (0.3 * torch.randn(c)).to(dtype)
    rm, rv = torch.randn(c) * 0.1, torch.rand(c) + 0.5
    trm, trv = rm.clone(), rv.clone()
    y, sm, sr = ng.instance_norm_forward(x, rm, rv, w, b, use_input_stats=True, momentum=0.2)
    want = F.instance_norm(x.double(), trm.double(), trv.double(), w.double(), b.double(), use_input_stats=True,
                           momentum=0.2)
    s = x.numel() // (shape[0] * c)
    assert_close(y, want, dtype, s, "y")
    F.instance_norm(x.float(), trm, trv, w.float(), b.float(), use_input_stats=True, momentum=0.2)
    assert_close(rm, trm.double(), torch.float32, s, "running_mean")
    assert_close(rv, trv.double(), torch.float32, s, "running_var")
    # eval mode: the running statistics normalize, the backward is the affine gradient
    y, sm, sr = ng.instance_norm_forward(x, rm, rv, w, b, use_input_stats=False)
    assert_close(y, F.instance_norm(x.double(), rm.double(), rv.double(), w.double(), b.double(),
                                    use_input_stats=False), dtype, 1, "y eval")
    dy = _make(shape, dtype, layout, offset=0.0, scale=1.0)
    dx, dw, db = ng.instance_norm_backward(dy, x, sm, sr, w)
    # Analytic reference: torch 2.15's autograd of instance_norm(use_input_stats=False)
    # is wrong for channels-last inputs with N = 1 (8.5 off here), so not torch's.
    view = [1, c] + [1] * (x.dim() - 2)
    rstd = 1 / torch.sqrt(rv.double() + 1e-5)
    xhat = (x.double() - rm.double().view(view)) * rstd.view(view)
    dims = [0] + list(range(2, x.dim()))
    assert_close(dx, dy.double() * (w.double() * rstd).view(view), dtype, 1, "dx eval")
    assert_close(dw, (dy.double() * xhat).sum(dims), dtype, x.numel() // c, "dweight eval")
    assert_close(db, dy.double().sum(dims), dtype, x.numel() // c, "dbias eval")


def test_instance_norm_backward_matches_autograd():
    x = torch.randn(3, 4, 6, 5) * 2 + 1
    dy = torch.randn_like(x)
    w, b = torch.randn(4), torch.randn(4)
    y, sm, sr = ng.instance_norm_forward(x, weight=w, bias=b)
    dx, dw, db = ng.instance_norm_backward(dy, x, sm, sr, w)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    gx, gw, gb = torch.autograd.grad(F.instance_norm(x64, weight=w64, bias=b64), (x64, w64, b64), dy.double())
    assert_close(dx, gx, torch.float32, 30, "dx")
    assert_close(dw, gw, torch.float32, 90, "dweight")
    assert_close(db, gb, torch.float32, 90, "dbias")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups", [1, 4, 8])
def test_large_offset(layout, groups):
    """Mean 1e4, std 1 (E[x^2] - E[x]^2 would lose every digit): statistics and outputs
    within float32 tolerances, for each layout's kernel and G = 1, 4 and C."""
    gen = torch.Generator().manual_seed(groups)
    x = _make((4, 8, 16, 16), torch.float32, layout, offset=1e4, scale=1.0, gen=gen)
    dy = _make((4, 8, 16, 16), torch.float32, layout, offset=0.0, scale=1.0, gen=gen)
    y, mean, rstd = ng.group_norm_forward(x, groups)
    want, want_mean, want_rstd = _ref_group_norm(x, groups, None, None)
    m = x.numel() // (4 * groups)
    assert_close(mean, want_mean, torch.float32, m, "mean")
    assert_close(rstd, want_rstd, torch.float32, m, "rstd")
    # y = (x - mean) * rstd: x and mean carry float32 rounding of 1e4 (ulp 1e-3).
    assert_close(y, want, torch.float32, m, "y", scale=1e4)
    dx, _, _ = ng.group_norm_backward(dy, x, mean, rstd, groups)
    x64 = x.double().requires_grad_()
    (gx,) = torch.autograd.grad(F.group_norm(x64, groups), (x64,), dy.double())
    assert_close(dx, gx, torch.float32, m, "dx", scale=1e4 * rstd.max().item())


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_group_statistics_across_channels_and_gapped_channels(groups):
    """NCHW kernels take a group's statistics over its C/G x S values as one run of
    memory: channel means that differ by far more than their spread (1e4 + 100 c, std 1)
    are exact to float32 tolerances, and an NCHW view whose channels are not adjacent
    (channel stride > S) runs the strided kernel, with the same results."""
    gen = torch.Generator().manual_seed(groups)
    n, c, length = 3, 8, 37
    base = torch.randn(n, c, length + 5, generator=gen, dtype=torch.float64)
    base += 1e4 + 100 * torch.arange(c, dtype=torch.float64).view(1, c, 1)
    base = base.float()
    for x, kind in ((base[:, :, :length].contiguous(), "nchw"), (base[:, :, :length], "strided")):
        assert (x.stride(1) == length) == (kind == "nchw")
        y, mean, rstd = ng.group_norm_forward(x, groups)
        assert "_" + kind + "_" in ng.last_kernel(), ng.last_kernel()
        want, want_mean, want_rstd = _ref_group_norm(x, groups, None, None)
        m = x.numel() // (n * groups)
        assert_close(mean, want_mean, torch.float32, m, f"mean {kind}", scale=1e4)
        assert_close(rstd, want_rstd, torch.float32, m, f"rstd {kind}")
        assert_close(y, want, torch.float32, m, f"y {kind}", scale=1e4 * rstd.max().item())


def test_numpy_inputs():
    xn = np.random.randn(2, 4, 9).astype(np.float32)
    yn = ng.instance_norm(xn)
    assert isinstance(yn, np.ndarray)
    assert_close(yn, F.instance_norm(torch.from_numpy(xn).double()), torch.float32, 9, "numpy")


def test_bad_input():
    x = torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match="num_groups to divide the number of channels 6"):
        ng.group_norm(x, 4)
    with pytest.raises(ValueError, match="num_groups"):
        ng.group_norm(x, 0)
    with pytest.raises(TypeError, match="num_groups"):
        ng.group_norm(x, 2.0)
    with pytest.raises(ValueError, match=r"Expected weight of shape \[6\]"):
        ng.group_norm(x, 2, torch.ones(5))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        ng.instance_norm(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="required when use_input_stats=False"):
        ng.instance_norm(x, use_input_stats=False)
    y, mean, rstd = ng.group_norm_forward(x, 2)
    with pytest.raises(ValueError, match="mean"):
        ng.group_norm_backward(x, x, mean[:1], rstd, 2)


_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] == "group_norm" and "epilogue=1" not in k["variant"]],
                         ids=lambda k: k["name"])
def test_every_group_norm_kernel_dispatches_and_matches(kernel):
    """(The fused-epilogue kernels: test_fused_norms.py.)"""
    dtype = _TORCH_DTYPE[kernel["dtype"]]
    flags = dict(kv.split("=") for kv in kernel["variant"].split(",") if kv)
    has_w = flags.get("affine", flags.get("has_weight")) == "1"
    layout = {"nchw": "nchw", "nhwc": "channels_last", "strided": "strided"}[kernel["layout"]]
    shape = kernel_shape(kernel, (3, 6, 4, 5))  # tuned kernels: their (N, C, spatial)
    c = shape[1]
    g = 3 if c % 3 == 0 else (32 if c % 32 == 0 else c)
    m = int(np.prod(shape[2:])) * c // g  # values per group
    x = _make(shape, dtype, layout)
    w = (1 + 0.3 * torch.randn(c)).to(dtype) if has_w else None
    b = torch.randn(c).to(dtype) if has_w else None
    y, mean, rstd = ng.group_norm_forward(x, g, w, b)
    if kernel["dir"] == "fwd":
        assert ng.last_kernel() == kernel["name"]
        assert_close(y, _ref_group_norm(x, g, w, b)[0], dtype, m, "y")
    else:
        dy = _make(shape, dtype, layout, offset=0.0, scale=1.0)
        dx, _, _ = ng.group_norm_backward(dy, x, mean, rstd, g, w)
        assert ng.last_kernel() == kernel["name"]
        x64 = x.double().requires_grad_()
        out = F.group_norm(x64, g, None if w is None else w.double(), None if b is None else b.double())
        scale = (dy.double().abs().max() * rstd.double().max() * (w.double().abs().max() if has_w else 1)).item()
        assert_close(dx, torch.autograd.grad(out, x64, dy.double())[0], dtype, m, "dx", scale=scale)

"""Batch-Instance Norm and Switchable Norm against float64 torch references (autograd for
the gradients), finite differences, the running statistics, and bad input."""
import numpy as np
import pytest
import torch

import normgen as ng
from conftest import DTYPES, assert_close, cpu_kernels, kernel_shape
from test_batch_norm import LAYOUTS, _make
from test_row_norm import _finite_difference_check

SHAPES = [(2, 6, 5), (3, 4, 5, 6), (2, 3, 3, 4, 5), (4, 8, 7, 7), (5, 3), (1, 5, 9, 2),
          (2, 64, 2, 3), (1, 256, 3, 2)]  # C = lanes x 4, 16: channels-last kernels specialize on C


def _cells(t):
    """(N, C, S) float64 view of an (N, C, *spatial) tensor."""
    return t.double().reshape(t.shape[0], t.shape[1], -1)


def _per_channel(v):
    return v.double().view(1, -1, 1)


def ref_batch_instance_norm(x, rho, w, b, rm, rv, training, eps=1e-5):
    """float64 reference (differentiable in x, rho, w, b)."""
    x3 = _cells(x)
    if training:
        mb, vb = x3.mean((0, 2), keepdim=True), x3.var((0, 2), unbiased=False, keepdim=True)
    else:
        mb, vb = _per_channel(rm), _per_channel(rv)
    mi, vi = x3.mean(2, keepdim=True), x3.var(2, unbiased=False, keepdim=True)
    # rho clamped to [0, 1], its gradient passing at the bounds as the kernels' does
    # (torch's clamp stops it there; rho starts at exactly 1).
    r = torch.where((rho >= 0) & (rho <= 1), rho, rho.clamp(0, 1).detach()).view(1, -1, 1)
    y = r * (x3 - mb) / torch.sqrt(vb + eps) + (1 - r) * (x3 - mi) / torch.sqrt(vi + eps)
    y = y * (w.view(1, -1, 1) if w is not None else 1) + (b.view(1, -1, 1) if b is not None else 0)
    return y.reshape(x.shape), (mi, vi, mb, vb)


def ref_switchable_norm(x, mw, vw, w, b, rm, rv, training, eps=1e-5):
    x3 = _cells(x)
    mi, vi = x3.mean(2, keepdim=True), x3.var(2, unbiased=False, keepdim=True)
    ml, vl = x3.mean((1, 2), keepdim=True), x3.var((1, 2), unbiased=False, keepdim=True)
    if training:
        mb, vb = x3.mean((0, 2), keepdim=True), x3.var((0, 2), unbiased=False, keepdim=True)
    else:
        mb, vb = _per_channel(rm), _per_channel(rv)
    pm, pv = torch.softmax(mw, 0), torch.softmax(vw, 0)
    mean = pm[0] * mi + pm[1] * ml + pm[2] * mb
    var = pv[0] * vi + pv[1] * vl + pv[2] * vb
    y = (x3 - mean) / torch.sqrt(var + eps)
    y = y * (w.view(1, -1, 1) if w is not None else 1) + (b.view(1, -1, 1) if b is not None else 0)
    return y.reshape(x.shape), (mi, vi, ml, vl, mb, vb, 1 / torch.sqrt(var + eps))


def _params(c, dtype, affine, rho_range=(-0.2, 1.2)):
    rho = torch.empty(c, dtype=torch.float64).uniform_(*rho_range).to(dtype)
    w = (1 + 0.3 * torch.randn(c)).to(dtype) if affine else None
    b = (0.3 * torch.randn(c)).to(dtype) if affine else None
    rm = torch.randn(c) * 0.5 + 1.0
    rv = torch.rand(c) * 2 + 0.5
    return rho, w, b, rm, rv


def _d(t):
    return None if t is None else t.double().requires_grad_()


def _channel_abs_sum(dy):
    """The largest channel's sum of |dy|: the scale of a per-channel sum of dy * (...)
    (with many channels and few values each, the mean channel's understates it)."""
    return dy.double().abs().transpose(0, 1).reshape(dy.shape[1], -1).sum(1).max().item()


# ---- Batch-Instance Norm -------------------------------------------------------------

def _check_bin(x, dtype, training, affine, dy=None):
    c = x.shape[1]
    m_in = x[0, 0].numel()
    m_bn = x.numel() // c
    rho, w, b, rm, rv = _params(c, dtype, affine)
    y, save_mean, save_rstd = ng.batch_instance_norm_forward(x, rho, w, b, rm.clone(), rv.clone(), training)
    want, (mi, vi, mb, vb) = ref_batch_instance_norm(x, rho.double(), _d(w), _d(b), rm, rv, training)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == torch.empty_like(x).stride()
    assert_close(y, want.detach(), dtype, m_bn, "y")
    n = x.shape[0]
    assert save_mean.shape == (n + 1, c)
    assert_close(save_mean[:n], mi.reshape(n, c), torch.float32, m_in, "IN mean", scale=x.double().abs().max().item())
    assert_close(save_rstd[:n], (1 / torch.sqrt(vi + 1e-5)).reshape(n, c), torch.float32, m_in, "IN rstd")
    assert_close(save_mean[n], mb.reshape(c), torch.float32, m_bn, "BN mean", scale=x.double().abs().max().item())
    assert_close(save_rstd[n], (1 / torch.sqrt(vb + 1e-5)).reshape(c), torch.float32, m_bn, "BN rstd")
    if dy is None:  # (x's memory format: a tuned kernel runs only on its layout)
        dy = torch.empty_like(x).copy_(torch.randn(x.shape, dtype=torch.float64))
    dx, drho, dw, db = ng.batch_instance_norm_backward(dy, x, save_mean, save_rstd, rho, w)
    x64, rho64, w64, b64 = _d(x), _d(rho), _d(w), _d(b)
    out, _ = ref_batch_instance_norm(x64, rho64, w64, b64, rm, rv, training)
    inputs = [t for t in (x64, rho64, w64, b64) if t is not None]
    grads = torch.autograd.grad(out, inputs, dy.double())
    rmax = max(save_rstd.double().max().item(), 1.0)
    wmax = w.double().abs().max().item() if affine else 1.0
    scale = dy.double().abs().max().item() * rmax * wmax
    assert_close(dx, grads[0], dtype, m_bn, "dx", scale=scale)
    # drho and dweight sum dy * xhat over N * S values.
    xhat_max = (x.double().abs().max() * rmax).item()
    dy_sum = _channel_abs_sum(dy)
    sum_scale = dy_sum * max(xhat_max, 1.0) * wmax
    assert_close(drho, grads[1], dtype, m_bn, "drho", scale=sum_scale)
    if affine:
        assert_close(dw, grads[2], dtype, m_bn, "dweight", scale=sum_scale)
        assert_close(db, grads[3], dtype, m_bn, "dbias", scale=dy_sum)
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_instance_norm(dtype, layout, training):
    for shape in SHAPES:
        if training and shape[0] * (int(np.prod(shape[2:])) if len(shape) > 2 else 1) <= 1:
            continue
        x = _make(shape, dtype, layout)
        _check_bin(x, dtype, training, affine=True)


@pytest.mark.parametrize("training", [True, False])
def test_batch_instance_norm_without_affine(training):
    _check_bin(_make((3, 4, 5, 6), torch.float32, "nchw"), torch.float32, training, affine=False)


def test_batch_instance_norm_rho_extremes():
    """rho = 1 is BatchNorm, rho = 0 is InstanceNorm (torch's); the clamp applies beyond."""
    x = _make((3, 4, 5, 6), torch.float32, "nchw")
    w, b = torch.randn(4), torch.randn(4)
    bn = torch.nn.functional.batch_norm(x, None, None, w, b, True)
    inn = torch.nn.functional.instance_norm(x, weight=w, bias=b)
    for rho, want in ((torch.ones(4), bn), (torch.full((4,), 3.0), bn), (torch.zeros(4), inn),
                      (torch.full((4,), -1.0), inn)):
        y = ng.batch_instance_norm(x, rho, w, b, training=True)
        assert_close(y, want.double(), torch.float32, 5 * 6 * 3, f"rho={rho[0].item()}")
        _, sm, sr = ng.batch_instance_norm_forward(x, rho, w, b, training=True)
        drho = ng.batch_instance_norm_backward(torch.randn_like(x), x, sm, sr, rho, w)[1]
        if abs(rho[0].item() - 0.5) > 1:  # outside [0, 1]: the clamp stops the gradient
            assert (drho == 0).all()
        else:
            assert (drho != 0).all()


def test_batch_instance_norm_gradients_by_finite_differences():
    rng = np.random.default_rng(3)
    x = (2 * rng.standard_normal((3, 2, 4)) + 1).astype(np.float32)
    rho = np.array([0.3, 0.8], np.float32)
    w = np.array([1.2, 0.7], np.float32)
    b = np.array([0.1, -0.4], np.float32)

    def backward(dy):
        _, sm, sr = ng.batch_instance_norm_forward(x, rho, w, b, training=True)
        return ng.batch_instance_norm_backward(dy, x, sm, sr, rho, w)

    _finite_difference_check(lambda: ng.batch_instance_norm(x, rho, w, b, training=True), backward, x, [rho, w, b])


# ---- Switchable Norm -----------------------------------------------------------------

def _logits(dtype):
    return (torch.randn(3) * 0.7).to(dtype), (torch.randn(3) * 0.7).to(dtype)


def _check_sn(x, dtype, training, affine):
    c, n = x.shape[1], x.shape[0]
    m = x.numel()
    _, w, b, rm, rv = _params(c, dtype, affine)
    mw, vw = _logits(dtype)
    y, save_mean, save_var, save_rstd = ng.switchable_norm_forward(x, mw, vw, w, b, rm.clone(), rv.clone(), training)
    want, (mi, vi, ml, vl, mb, vb, rstd) = ref_switchable_norm(x, mw.double(), vw.double(), _d(w), _d(b), rm, rv,
                                                               training)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == torch.empty_like(x).stride()
    assert_close(y, want.detach(), dtype, m, "y")
    assert save_mean.shape == (n + 1, c + 1) and save_rstd.shape == (n, c)
    big = x.double().abs().max().item()
    for got, ref, what in ((save_mean[:n, :c], mi, "IN mean"), (save_mean[:n, c], ml, "LN mean"),
                           (save_mean[n, :c], mb, "BN mean")):
        assert_close(got, ref.reshape(got.shape), torch.float32, m, what, scale=big)
    for got, ref, what in ((save_var[:n, :c], vi, "IN var"), (save_var[:n, c], vl, "LN var"),
                           (save_var[n, :c], vb, "BN var"), (save_rstd, rstd, "rstd")):
        assert_close(got, ref.reshape(got.shape), torch.float32, m, what, scale=max(ref.abs().max().item(), big))
    assert save_mean[n, c] == 0 and save_var[n, c] == 0
    dy = torch.empty_like(x).copy_(torch.randn(x.shape, dtype=torch.float64))  # (x's memory format)
    dx, dmw, dvw, dw, db = ng.switchable_norm_backward(dy, x, save_mean, save_var, save_rstd, mw, vw, w)
    x64, mw64, vw64, w64, b64 = _d(x), _d(mw), _d(vw), _d(w), _d(b)
    out, stats = ref_switchable_norm(x64, mw64, vw64, w64, b64, rm, rv, training)
    inputs = [t for t in (x64, mw64, vw64, w64, b64) if t is not None]
    grads = torch.autograd.grad(out, inputs, dy.double())
    rmax = save_rstd.double().max().item()
    wmax = w.double().abs().max().item() if affine else 1.0
    dy_sum = dy.double().abs().sum().item()
    assert_close(dx, grads[0], dtype, m, "dx", scale=dy.double().abs().max().item() * rmax * wmax)
    # Bounds of the summed terms: dlogit_j = p_j sum L (stat_j - mix).
    mi_, vi_, ml_, vl_, mb_, vb_ = (s.detach() for s in stats[:6])
    mix_m = torch.softmax(mw.double(), 0)
    mix_v = torch.softmax(vw.double(), 0)
    mean = mix_m[0] * mi_ + mix_m[1] * ml_ + mix_m[2] * mb_
    var = mix_v[0] * vi_ + mix_v[1] * vl_ + mix_v[2] * vb_
    spread_m = max((s - mean).abs().max().item() for s in (mi_, ml_, mb_))
    spread_v = max((s - var).abs().max().item() for s in (vi_, vl_, vb_))
    xhat_max = ((_cells(x) - mean).abs().max() * rmax).item()
    assert_close(dmw, grads[1], dtype, m, "dmean_weight", scale=rmax * wmax * dy_sum * max(spread_m, 1e-3))
    assert_close(dvw, grads[2], dtype, m, "dvar_weight",
                 scale=rmax**2 * wmax * dy_sum * xhat_max * max(spread_v, 1e-3))
    if affine:
        assert_close(dw, grads[3], dtype, m // c, "dweight", scale=_channel_abs_sum(dy) * xhat_max)
        assert_close(db, grads[4], dtype, m // c, "dbias", scale=_channel_abs_sum(dy))
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_switchable_norm(dtype, layout, training):
    for shape in SHAPES:
        x = _make(shape, dtype, layout)
        _check_sn(x, dtype, training, affine=True)


@pytest.mark.parametrize("training", [True, False])
def test_switchable_norm_without_affine(training):
    _check_sn(_make((3, 4, 5, 6), torch.float32, "nchw"), torch.float32, training, affine=False)


def test_switchable_norm_one_hot_weights_are_in_ln_bn():
    """Logits that put (almost) all weight on one scope give that normalization."""
    x = _make((3, 4, 5, 6), torch.float32, "nchw")
    w, b = torch.randn(4), torch.randn(4)
    big = 40.0
    cases = {0: torch.nn.functional.instance_norm(x, weight=w, bias=b),
             1: torch.nn.functional.group_norm(x, 1, w, b),
             2: torch.nn.functional.batch_norm(x, None, None, w, b, True)}
    for k, want in cases.items():
        logits = torch.full((3,), -big)
        logits[k] = big
        y = ng.switchable_norm(x, logits, logits, w, b, training=True)
        assert_close(y, want.double(), torch.float32, x.numel(), f"scope {k}")


@pytest.mark.parametrize("op", ["batch_instance_norm", "switchable_norm"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats(op, momentum):
    """The BN part's running statistics update as torch's batch_norm's (momentum None:
    the cumulative average over num_batches_tracked)."""
    x = _make((4, 3, 5, 5), torch.float32, "channels_last")
    rm, rv, nbt = torch.randn(3), torch.rand(3) + 0.5, torch.zeros(1, dtype=torch.int64)
    want_rm, want_rv = rm.clone(), rv.clone()
    for _ in range(3):
        if op == "batch_instance_norm":
            ng.batch_instance_norm(x, torch.full((3,), 0.5), None, None, rm, rv, True, momentum,
                                   num_batches_tracked=nbt)
        else:
            ng.switchable_norm(x, *_logits(torch.float32), None, None, rm, rv, True, momentum,
                               num_batches_tracked=nbt)
    for i in range(3):
        torch.nn.functional.batch_norm(x, want_rm, want_rv, None, None, True, 1.0 / (i + 1) if momentum is None else momentum)
    assert nbt.item() == 3
    torch.testing.assert_close(rm, want_rm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rv, want_rv, rtol=1e-5, atol=1e-6)


def test_switchable_norm_gradients_by_finite_differences():
    rng = np.random.default_rng(5)
    x = (2 * rng.standard_normal((3, 2, 4)) + 1).astype(np.float32)
    mw = np.array([0.2, -0.3, 0.5], np.float32)
    vw = np.array([-0.1, 0.4, 0.0], np.float32)
    w = np.array([1.2, 0.7], np.float32)
    b = np.array([0.1, -0.4], np.float32)

    def backward(dy):
        _, sm, sv, sr = ng.switchable_norm_forward(x, mw, vw, w, b, training=True)
        return ng.switchable_norm_backward(dy, x, sm, sv, sr, mw, vw, w)

    _finite_difference_check(lambda: ng.switchable_norm(x, mw, vw, w, b, training=True), backward, x,
                             [mw, vw, w, b])


# ---- shared: numerics, every kernel, bad input ---------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_offset(layout):
    """Mean 1e4, std 1: every statistic's offset stays small (no E[x^2] - E[x]^2)."""
    gen = torch.Generator().manual_seed(7)
    x = _make((4, 8, 16, 16), torch.float32, layout, offset=1e4, scale=1.0, gen=gen)
    # Per-channel and per-sample mean differences of a few units on top.
    x = x + torch.arange(8.0).view(1, 8, 1, 1) * 0.5 + torch.arange(4.0).view(4, 1, 1, 1) * 0.25
    rho = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 0.3, 0.9, 0.6])
    y = ng.batch_instance_norm(x, rho, training=True)
    want, _ = ref_batch_instance_norm(x, rho.double(), None, None, None, None, True)
    assert (y.double() - want).abs().max().item() < 1e-3
    mw, vw = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([-0.5, 0.2, 0.4])
    y = ng.switchable_norm(x, mw, vw, training=True)
    want, _ = ref_switchable_norm(x, mw.double(), vw.double(), None, None, None, None, True)
    assert (y.double() - want).abs().max().item() < 1e-3


_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_LAYOUT = {"nchw": "nchw", "nhwc": "channels_last", "strided": "strided"}


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] in ("batch_instance_norm", "switchable_norm")],
                         ids=lambda k: k["name"])
def test_every_mixed_norm_kernel_dispatches_and_matches(kernel):
    dtype = _TORCH_DTYPE[kernel["dtype"]]
    training = "training=1" in kernel["variant"]
    x = _make(kernel_shape(kernel, (3, 6, 4, 5)), dtype, _LAYOUT[kernel["layout"]])  # tuned kernels: their shape
    c = x.shape[1]
    _, w, b, rm, rv = _params(c, dtype, True)
    if kernel["op"] == "batch_instance_norm":
        rho = torch.rand(c).to(dtype)
        y, sm, sr = ng.batch_instance_norm_forward(x, rho, w, b, rm, rv, training)
        if kernel["dir"] == "bwd":
            ng.batch_instance_norm_backward(torch.randn_like(x), x, sm, sr, rho, w)
        assert ng.last_kernel() == kernel["name"]
        want = ref_batch_instance_norm(x, rho.double(), w.double(), b.double(), rm, rv, training)[0]
    else:
        mw, vw = _logits(dtype)
        y, sm, sv, sr = ng.switchable_norm_forward(x, mw, vw, w, b, rm, rv, training)
        if kernel["dir"] == "bwd":
            ng.switchable_norm_backward(torch.randn_like(x), x, sm, sv, sr, mw, vw, w)
        assert ng.last_kernel() == kernel["name"]
        want = ref_switchable_norm(x, mw.double(), vw.double(), w.double(), b.double(), rm, rv, training)[0]
    assert_close(y, want.detach(), dtype, x.numel(), "y")
    if kernel["shape"]:
        # A tuned kernel is the only one at its shape: all outputs and gradients there.
        (_check_bin if kernel["op"] == "batch_instance_norm" else _check_sn)(x, dtype, training, True)
        if kernel["dir"] == "bwd":  # the check ran the forward, then the backward
            assert ng.last_kernel() == kernel["name"]


def test_bad_input():
    x = torch.randn(2, 3, 4)
    rho, mw, vw = torch.rand(3), torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="rho"):
        ng.batch_instance_norm(x, torch.rand(4), training=True)
    with pytest.raises(TypeError, match="rho"):
        ng.batch_instance_norm(x, rho.double(), training=True)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        ng.batch_instance_norm(x, rho, training=False)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ng.batch_instance_norm(torch.randn(1, 3), rho, training=True)
    with pytest.raises(ValueError, match="mean_weight"):
        ng.switchable_norm(x, torch.zeros(2), vw, training=True)
    with pytest.raises(ValueError, match="var_weight"):
        ng.switchable_norm(x, mw, torch.zeros(4), training=True)
    with pytest.raises(ValueError, match="momentum=None"):
        ng.switchable_norm(x, mw, vw, None, None, torch.zeros(3), torch.ones(3), True, None)
    _, sm, sr = ng.batch_instance_norm_forward(x, rho, training=True)
    with pytest.raises(ValueError, match="save_mean"):
        ng.batch_instance_norm_backward(torch.randn_like(x), x, sm[:2], sr, rho)
    _, sm, sv, sr = ng.switchable_norm_forward(x, mw, vw, training=True)
    with pytest.raises(ValueError, match="save_rstd"):
        ng.switchable_norm_backward(torch.randn_like(x), x, sm, sv, sr[:1], mw, vw)


def test_numpy_and_empty_batch():
    x = np.random.randn(0, 3, 4).astype(np.float32)
    rho = np.full(3, 0.5, np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = ng.batch_instance_norm(x, rho, None, None, rm, rv, training=False)
    assert y.shape == x.shape
    y = ng.switchable_norm(x, np.zeros(3, np.float32), np.zeros(3, np.float32), None, None, rm, rv, training=False)
    assert y.shape == x.shape
    x = np.random.randn(2, 3, 4).astype(np.float32)
    y = ng.batch_instance_norm(x, rho, training=True)
    want, _ = ref_batch_instance_norm(torch.from_numpy(x), torch.from_numpy(rho).double(), None, None, None, None, True)
    assert isinstance(y, np.ndarray)
    assert_close(y, want, torch.float32, 8, "numpy y")

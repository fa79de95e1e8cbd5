"""normgen.torch's autograd functions against float64 references (torch's own ops, or
the formulas for the ops torch lacks), forward and every gradient, on data whose mean
is far larger than its spread; plus a finite-difference check of the backward kernels
against the forward kernels, and the double-backward error."""
import math

import pytest
import torch

import normgen.torch as ngt
from conftest import UNIT_ROUNDOFF, assert_close

NF = ngt.functional
F = torch.nn.functional

OFFSET = 20.0  # data mean / spread


def _data(*shape, offset=OFFSET, memory_format=torch.contiguous_format):
    return (torch.randn(*shape) + offset).contiguous(memory_format=memory_format)


def _param(*shape, lo=0.5, hi=1.5):
    return torch.empty(*shape).uniform_(lo, hi)


def _run(fn, inputs, grad_out_fn):
    """Outputs of fn and the gradients of sum(outputs * g) w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gs = grad_out_fn(outs)
    loss = sum((o * g.to(o.dtype)).sum() for o, g in zip(outs, gs))
    loss.backward()
    return outs, [None if t is None else t.grad for t in leaves]


def check_against(ngt_fn, ref_fn, inputs, reduction_len, what):
    torch.manual_seed(1)
    gs = {}

    def grads(outs):
        if "g" not in gs:
            gs["g"] = [torch.randn(o.shape) for o in outs]
        return gs["g"]

    got_out, got_grads = _run(ngt_fn, inputs, grads)
    ref_inputs = [None if t is None else t.double() for t in inputs]
    want_out, want_grads = _run(ref_fn, ref_inputs, grads)
    for i, (g, w) in enumerate(zip(got_out, want_out)):
        assert_close(g.detach(), w.detach(), torch.float32, reduction_len, f"{what} output {i}")
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        if w is None:
            assert g is None, f"{what}: gradient of input {i} should be None"
            continue
        assert g is not None, f"{what}: no gradient for input {i}"
        # Gradients are sums over the reduction of terms up to |dy| * |x - mean| * rstd.
        assert_close(g, w, torch.float32, reduction_len, f"{what} d(input {i})",
                     scale=max(w.abs().max().item(), 1.0) * math.sqrt(reduction_len))


# ---- row norms ------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(affine):
    x = _data(4, 7, 64)
    w, b = (_param(64), _param(64, lo=-1, hi=1)) if affine else (None, None)
    check_against(lambda x, w, b: NF.layer_norm(x, (64,), w, b, 1e-5),
                  lambda x, w, b: F.layer_norm(x, (64,), w, b, 1e-5), [x, w, b], 64, "layer_norm")


def test_layer_norm_bias_without_weight():
    x, b = _data(5, 48), _param(48, lo=-1, hi=1)
    check_against(lambda x, b: NF.layer_norm(x, 48, None, b), lambda x, b: F.layer_norm(x, (48,), None, b),
                  [x, b], 48, "layer_norm bias only")


def test_rms_norm():
    x, w = _data(6, 80, offset=2.0), _param(80)
    check_against(lambda x, w: NF.rms_norm(x, (80,), w, 1e-6), lambda x, w: F.rms_norm(x, (80,), w, 1e-6),
                  [x, w], 80, "rms_norm")


def test_add_layer_norm_and_add_rms_norm():
    x, r, w, b = _data(3, 5, 32), torch.randn(3, 5, 32), _param(32), _param(32, lo=-1, hi=1)

    def ref_ln(x, r, w, b):
        s = x + r
        return F.layer_norm(s, (32,), w, b, 1e-5), s

    check_against(lambda x, r, w, b: NF.add_layer_norm(x, r, (32,), w, b, 1e-5), ref_ln, [x, r, w, b], 32,
                  "add_layer_norm")

    def ref_rms(x, r, w):
        s = x + r
        return F.rms_norm(s, (32,), w, 1e-6), s

    check_against(lambda x, r, w: NF.add_rms_norm(x, r, (32,), w, 1e-6), ref_rms, [x, r, w], 32, "add_rms_norm")


# ---- channel norms ------------------------------------------------------------------------

@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(memory_format, training):
    x = _data(6, 8, 5, 5, memory_format=memory_format)
    w, b = _param(8), _param(8, lo=-1, hi=1)
    rm0, rv0 = torch.randn(8) + OFFSET, _param(8)
    rm, rv = rm0.clone(), rv0.clone()
    rm_ref, rv_ref = rm0.double(), rv0.double()
    check_against(lambda x, w, b: NF.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5),
                  lambda x, w, b: F.batch_norm(x, rm_ref, rv_ref, w, b, training, 0.1, 1e-5), [x, w, b], 150,
                  f"batch_norm training={training}")
    # The running statistics were updated (training) or left alone (inference), like torch's.
    assert_close(rm, rm_ref, torch.float32, 150, "running_mean")
    assert_close(rv, rv_ref, torch.float32, 150, "running_var")


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu"])
def test_fused_batch_norm_and_group_norm(activation):
    x, r = _data(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    w, b = _param(8), _param(8, lo=-1, hi=1)
    act = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}[activation]
    check_against(lambda x, r, w, b: NF.batch_norm(x, None, None, w, b, True, residual=r, activation=activation),
                  lambda x, r, w, b: act(F.batch_norm(x, None, None, w, b, True) + r), [x, r, w, b], 144,
                  f"batch_norm+{activation}")
    check_against(lambda x, r, w, b: NF.group_norm(x, 2, w, b, residual=r, activation=activation),
                  lambda x, r, w, b: act(F.group_norm(x, 2, w, b) + r), [x, r, w, b], 144, f"group_norm+{activation}")


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_group_norm(groups):
    x, w, b = _data(3, 16, 7, 7), _param(16), _param(16, lo=-1, hi=1)
    n = 16 // groups * 49
    check_against(lambda x, w, b: NF.group_norm(x, groups, w, b), lambda x, w, b: F.group_norm(x, groups, w, b),
                  [x, w, b], n, f"group_norm G={groups}")


def test_instance_norm():
    x, w, b = _data(3, 8, 9, 9), _param(8), _param(8, lo=-1, hi=1)
    check_against(lambda x, w, b: NF.instance_norm(x, None, None, w, b), lambda x, w, b: F.instance_norm(x, None, None, w, b),
                  [x, w, b], 81, "instance_norm")


def _ref_moments(x, dims):
    mean = x.mean(dims, keepdim=True)
    return mean, ((x - mean) ** 2).mean(dims, keepdim=True)


def ref_batch_instance_norm(x, rho, w, b, eps=1e-5):
    bm, bv = _ref_moments(x, (0, 2, 3))
    im, iv = _ref_moments(x, (2, 3))
    # The gate's gradient passes inside [0, 1] bounds included (rho starts at 1 and must
    # learn; torch.clamp's own gradient is 0 at the bounds), and is 0 outside.
    inside = (rho >= 0) & (rho <= 1)
    r = torch.where(inside, rho, rho.clamp(0, 1).detach()).view(1, -1, 1, 1)
    y = r * (x - bm) / torch.sqrt(bv + eps) + (1 - r) * (x - im) / torch.sqrt(iv + eps)
    return y * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def ref_switchable_norm(x, mw, vw, w, b, eps=1e-5):
    im, iv = _ref_moments(x, (2, 3))
    lm, lv = _ref_moments(x, (1, 2, 3))
    bm, bv = _ref_moments(x, (0, 2, 3))
    pm, pv = torch.softmax(mw, 0), torch.softmax(vw, 0)
    mean = pm[0] * im + pm[1] * lm + pm[2] * bm
    var = pv[0] * iv + pv[1] * lv + pv[2] * bv
    return (x - mean) / torch.sqrt(var + eps) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def test_batch_instance_norm():
    x, w, b = _data(4, 6, 5, 5), _param(6), _param(6, lo=-1, hi=1)
    rho = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.9, 1.0])  # at and inside the clamp
    check_against(lambda x, rho, w, b: NF.batch_instance_norm(x, rho, w, b, training=True),
                  ref_batch_instance_norm, [x, rho, w, b], 100, "batch_instance_norm")


def test_switchable_norm():
    x, w, b = _data(4, 6, 5, 5), _param(6), _param(6, lo=-1, hi=1)
    mw, vw = torch.tensor([0.3, -0.2, 0.5]), torch.tensor([-0.1, 0.4, 0.2])
    check_against(lambda x, mw, vw, w, b: NF.switchable_norm(x, mw, vw, w, b, training=True),
                  ref_switchable_norm, [x, mw, vw, w, b], 150, "switchable_norm")


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm(dim):
    v = torch.randn(12, 20)
    g = _param(*( (12, 1) if dim == 0 else (1, 20) if dim == 1 else (1, 1) ))
    ref_dim = -1 if dim is None else dim
    check_against(lambda v, g: NF.weight_norm(v, g, dim), lambda v, g: torch._weight_norm(v, g, ref_dim), [v, g], 240,
                  f"weight_norm dim={dim}")


# ---- finite differences of the kernels themselves ---------------------------------------------

@pytest.mark.parametrize("op", ["layer_norm", "batch_norm", "group_norm"])
def test_backward_matches_finite_differences_of_forward(op):
    """<grad f(x), v> from the backward kernel vs (f(x + hv) - f(x - hv)) / 2h from the
    forward kernel, f = sum(y * g). Tolerance: the forward's rounding noise divided by h,
    plus the same difference quotient's truncation error measured on the float64 reference."""
    torch.manual_seed(3)
    if op == "layer_norm":
        x = _data(6, 64)
        fn, ref = (lambda x: NF.layer_norm(x, (64,))), (lambda x: F.layer_norm(x, (64,)))
    elif op == "batch_norm":
        x = _data(8, 4, 3, 3)
        fn, ref = (lambda x: NF.batch_norm(x, None, None, training=True)), (
            lambda x: F.batch_norm(x, None, None, training=True))
    else:
        x = _data(3, 8, 4, 4)
        fn, ref = (lambda x: NF.group_norm(x, 2)), (lambda x: F.group_norm(x, 2))
    g, v = torch.randn(x.shape), torch.randn(x.shape)
    xr = x.clone().requires_grad_(True)
    (fn(xr) * g).sum().backward()
    analytic = (xr.grad.double() * v.double()).sum().item()
    h = 1e-2

    def f(fun, t):
        return (fun(t).double() * g.double()).sum().item()

    fd = (f(fn, x + h * v) - f(fn, x - h * v)) / (2 * h)
    x64, v64 = x.double(), v.double()
    fd64 = (f(ref, x64 + h * v64) - f(ref, x64 - h * v64)) / (2 * h)
    x64r = x64.clone().requires_grad_(True)
    (ref(x64r) * g.double()).sum().backward()
    truncation = abs(fd64 - (x64r.grad * v64).sum().item())
    # Each y element carries a few roundings of x's magnitude (OFFSET + a few spreads)
    # relative to the unit spread, independent between elements: sum(y * g) is off by
    # about sqrt(n) * mean|g| * u * |x|, taken 4x.
    n = x.numel()
    noise = 4 * math.sqrt(n) * (g.abs().sum().item() / n) * UNIT_ROUNDOFF[torch.float32] * (OFFSET + 4)
    tol = 2 * noise / (2 * h) + 2 * truncation + 1e-6
    print(f"{op}: |fd - backward| = {abs(fd - analytic):.3g}, tolerance {tol:.3g}, |backward| {abs(analytic):.3g}")
    assert abs(fd - analytic) <= tol, f"{op}: fd {fd} vs backward {analytic} (tolerance {tol:.3g})"


def test_double_backward_is_a_clear_error():
    x = _data(3, 16).requires_grad_(True)
    y = NF.layer_norm(x, (16,))
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad((y * y).sum(), x, create_graph=True)


# ---- no gradient wanted: the forward alone, the same results --------------------------------

def _calls():
    """(name, fn(x, w, b, state)) for every Function-backed wrapper; `state` holds fresh
    running statistics, so an in-place update is part of what is compared."""
    rho, mw, vw = torch.full((8,), 0.4), torch.tensor([0.3, -0.2, 0.5]), torch.tensor([-0.1, 0.4, 0.2])
    return [
        ("layer_norm", lambda x, w, b, s: NF.layer_norm(x, (8, 5, 5), None, None)),
        ("rms_norm", lambda x, w, b, s: NF.rms_norm(x, (5,), None)),
        ("add_layer_norm", lambda x, w, b, s: NF.add_layer_norm(x, x.detach() * 0.5, (5,))),
        ("add_rms_norm", lambda x, w, b, s: NF.add_rms_norm(x, x.detach() * 0.5, (5,))),
        ("batch_norm train", lambda x, w, b, s: NF.batch_norm(x, s[0], s[1], w, b, True, 0.1, 1e-5,
                                                              num_batches_tracked=s[2])),
        ("batch_norm eval", lambda x, w, b, s: NF.batch_norm(x, s[0], s[1], w, b, False)),
        ("group_norm+relu", lambda x, w, b, s: NF.group_norm(x, 4, w, b, activation="relu")),
        ("instance_norm", lambda x, w, b, s: NF.instance_norm(x, s[0], s[1], w, b, True)),
        ("batch_instance_norm", lambda x, w, b, s: NF.batch_instance_norm(x, rho, w, b, s[0], s[1], True)),
        ("switchable_norm", lambda x, w, b, s: NF.switchable_norm(x, mw, vw, w, b, s[0], s[1], True)),
        ("weight_norm", lambda x, w, b, s: NF.weight_norm(x.reshape(6, -1), w.reshape(1, -1).repeat(1, 25), 1)),
    ]


@pytest.mark.parametrize("name", [n for n, _ in _calls()])
def test_no_grad_runs_the_forward_alone_with_the_same_results(name, monkeypatch):
    """Without a gradient to compute (grad mode off, or no input requiring one) the
    wrappers skip autograd's bookkeeping: no graph node, and bit-identical outputs and
    running-statistics updates to the differentiable call's."""
    fn = dict(_calls())[name]
    x, w, b = _data(6, 8, 5, 5), _param(8), _param(8, lo=-1, hi=1)

    def run(requires_grad, grad_mode):
        torch.manual_seed(0)
        state = [torch.randn(8) + OFFSET, _param(8), torch.zeros((), dtype=torch.long)]
        args = [t.detach().clone().requires_grad_(requires_grad) for t in (x, w, b)]
        with torch.set_grad_enabled(grad_mode):
            out = fn(*args, state)
        return (out if isinstance(out, tuple) else (out,)), state

    want, want_state = run(True, True)
    assert all(o.grad_fn is not None for o in want), f"{name}: the differentiable call built no graph"
    def no_apply(*args):
        raise AssertionError(f"{name}: an inference call went through autograd.Function.apply")

    monkeypatch.setattr(torch.autograd.Function, "apply", classmethod(no_apply))
    for requires_grad, grad_mode in ((True, False), (False, True)):
        got, got_state = run(requires_grad, grad_mode)
        for g, w_ in zip(got, want):
            assert g.grad_fn is None and not g.requires_grad, f"{name}: an inference call built a graph node"
            assert torch.equal(g, w_.detach()), f"{name}: inference output differs from the differentiable call's"
        for g, w_ in zip(got_state, want_state):
            assert torch.equal(g, w_), f"{name}: running statistics differ from the differentiable call's"

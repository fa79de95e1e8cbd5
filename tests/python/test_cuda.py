"""The CUDA path from Python: CUDA torch tensors in, CUDA tensors out, same functions.

Without a usable CUDA device (this machine, CI) the device tests skip with the
runtime's reason, and what can be checked without one is: the CUDA kernels are in the
table, and a call on CUDA memory fails with a clear error (never a crash). With a GPU,
every op family is compared with torch on the same device, forward and backward.
"""
import pytest
import torch
import torch.nn.functional as F

import normgen as ng

from conftest import assert_close

USABLE, WHY = ng.cuda_available(0)
needs_gpu = pytest.mark.skipif(not (USABLE and torch.cuda.is_available()),
                               reason=f"no CUDA device: {WHY or 'torch sees none'}")


def test_cuda_kernels_are_built_for_every_op():
    ops = {(k["op"], k["dir"]) for k in ng.kernels() if k["target"] == "cuda"}
    cpu_ops = {(k["op"], k["dir"]) for k in ng.kernels() if k["target"] == "cpu"}
    assert ops == cpu_ops


@pytest.mark.skipif(USABLE, reason="a CUDA device is present: this checks the no-device error")
def test_no_device_gives_a_clear_error():
    assert WHY, "cuda_available() gives a reason when unusable"
    # A torch "meta"-free way to reach the runtime with a CUDA pointer: the low-level
    # binding takes (pointer, dtype, shape, strides, device) specs.
    x = (0x7F0000000000, "f32", (4, 64), (64, 1), 0)
    y = (0x7F0000100000, "f32", (4, 64), (64, 1), 0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ng._normgen.layer_norm_forward(x, (64,), None, None, 1e-5, y, None, None)


def _dev(t):
    return t.cuda()


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_layer_norm_and_rms_norm_match_torch(dtype):
    x = (torch.randn(64, 1024) * 3 + 100).to(dtype).cuda()
    w = torch.randn(1024).to(dtype).cuda()
    b = torch.randn(1024).to(dtype).cuda()
    y = ng.layer_norm(x, (1024,), w, b)
    assert y.is_cuda and y.dtype == dtype
    assert_close(y.cpu(), F.layer_norm(x.double(), (1024,), w.double(), b.double()).cpu(), dtype, 1024, "layer_norm")
    y, mean, rstd = ng.layer_norm_forward(x, (1024,), w, b)
    dy = torch.randn_like(x)
    dx, dw, db = ng.layer_norm_backward(dy, x, mean, rstd, (1024,), w)
    xr = x.double().requires_grad_()
    wr = w.double().requires_grad_()
    br = b.double().requires_grad_()
    F.layer_norm(xr, (1024,), wr, br).backward(dy.double())
    assert_close(dx.cpu(), xr.grad.cpu(), dtype, 1024, "layer_norm dx")
    assert_close(dw.cpu(), wr.grad.cpu(), dtype, 64, "layer_norm dweight")
    assert_close(db.cpu(), br.grad.cpu(), dtype, 64, "layer_norm dbias")
    r = ng.rms_norm(x, (1024,), w)
    assert_close(r.cpu(), F.rms_norm(x.double(), (1024,), w.double(), eps=torch.finfo(dtype).eps).cpu(), dtype, 1024,
                 "rms_norm")


@needs_gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_training_matches_torch(channels_last):
    x = torch.randn(8, 32, 14, 14).cuda() * 2 + 50
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(32).cuda(), torch.randn(32).cuda()
    rm, rv = torch.zeros(32).cuda(), torch.ones(32).cuda()
    rm_t, rv_t = rm.clone(), rv.clone()
    y = ng.batch_norm(x, rm, rv, w, b, training=True)
    want = F.batch_norm(x.double(), rm_t.double(), rv_t.double(), w.double(), b.double(), training=True)
    assert y.is_cuda
    assert_close(y.cpu(), want.cpu(), torch.float32, 8 * 14 * 14, "batch_norm y")
    assert_close(rm.cpu(), rm_t.cpu(), torch.float32, 8 * 14 * 14, "running_mean")
    assert_close(rv.cpu(), rv_t.cpu(), torch.float32, 8 * 14 * 14, "running_var")


@needs_gpu
def test_group_norm_forward_and_backward_match_torch():
    x = torch.randn(4, 32, 9, 9).cuda() + 10
    w, b = torch.randn(32).cuda(), torch.randn(32).cuda()
    y, mean, rstd = ng.group_norm_forward(x, 8, w, b)
    assert_close(y.cpu(), F.group_norm(x.double(), 8, w.double(), b.double()).cpu(), torch.float32, 4 * 81, "gn y")
    dy = torch.randn_like(x)
    dx, dw, db = ng.group_norm_backward(dy, x, mean, rstd, 8, w)
    xr, wr, br = (t.double().requires_grad_() for t in (x, w, b))
    F.group_norm(xr, 8, wr, br).backward(dy.double())
    assert_close(dx.cpu(), xr.grad.cpu(), torch.float32, 4 * 81, "gn dx")
    assert_close(dw.cpu(), wr.grad.cpu(), torch.float32, 4 * 81, "gn dweight")


@needs_gpu
def test_weight_norm_and_fold_match_torch():
    v, g = torch.randn(64, 3, 3, 3).cuda(), torch.rand(64).cuda() + 0.5
    w = ng.weight_norm(v, g, 0)
    want = torch._weight_norm(v.double(), g.double().view(64, 1, 1, 1), 0)
    assert_close(w.cpu(), want.cpu(), torch.float32, 27, "weight_norm")


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    return obj


def _same_on_cuda(fn, *args, tol=1e-4, **kwargs):
    """fn on CUDA copies of the tensor arguments gives (on the device) what it gives on the
    CPU (whose kernels the rest of the suite checks against float64 references)."""
    want = fn(*_to(args, "cpu"), **_to(kwargs, "cpu"))
    got = fn(*_to(args, "cuda"), **_to(kwargs, "cuda"))
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None
            continue
        assert g.is_cuda, f"output {i} is not a CUDA tensor"
        torch.testing.assert_close(g.cpu().double(), w.double(), rtol=tol, atol=tol, msg=f"output {i}")


@needs_gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_channel_op_forward_and_backward_matches_the_cpu(channels_last):
    x = torch.randn(4, 16, 6, 5) * 2 + 20
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dy, r = torch.randn_like(x), torch.randn_like(x)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    rm, rv = torch.zeros(16), torch.ones(16)
    y, sm, sr = ng.batch_norm_forward(x, rm.clone(), rv.clone(), w, b, training=True)
    _same_on_cuda(lambda *a: ng.batch_norm_forward(*a, training=True), x, rm.clone(), rv.clone(), w, b)
    _same_on_cuda(lambda *a: ng.batch_norm_forward(*a, training=False), x, rm, rv, w, b)
    _same_on_cuda(ng.batch_norm_backward, dy, x, sm, sr, w)
    _same_on_cuda(lambda *a: ng.batch_norm(*a, training=True, residual=r, activation="relu"), x, rm.clone(),
                  rv.clone(), w, b)
    _same_on_cuda(lambda *a: ng.batch_norm_backward(*a, bias=b, residual=r, activation="silu"), dy, x, sm, sr, w)
    _same_on_cuda(ng.group_norm_forward, x, 4, w, b)
    y, gm, gr = ng.group_norm_forward(x, 4, w, b)
    _same_on_cuda(ng.group_norm_backward, dy, x, gm, gr, 4, w)
    _same_on_cuda(lambda *a: ng.group_norm(*a, activation="gelu"), x, 4, w, b)
    y, im, ir = ng.instance_norm_forward(x, None, None, w, b)
    _same_on_cuda(ng.instance_norm_forward, x, None, None, w, b)
    _same_on_cuda(ng.instance_norm_backward, dy, x, im, ir, w)


@needs_gpu
def test_every_row_and_weight_op_matches_the_cpu():
    x, r = torch.randn(33, 257) + 5, torch.randn(33, 257)
    dy, ds = torch.randn_like(x), torch.randn_like(x)
    w, b = torch.rand(257) + 0.5, torch.randn(257)
    _same_on_cuda(ng.layer_norm_forward, x, (257,), w, b)
    y, m, rs = ng.layer_norm_forward(x, (257,), w, b)
    _same_on_cuda(ng.layer_norm_backward, dy, x, m, rs, (257,), w)
    _same_on_cuda(ng.rms_norm_forward, x, (257,), w)
    y, rr = ng.rms_norm_forward(x, (257,), w)
    _same_on_cuda(ng.rms_norm_backward, dy, x, rr, (257,), w)
    _same_on_cuda(ng.add_layer_norm_forward, x, r, (257,), w, b)
    y, s, m, rs = ng.add_layer_norm_forward(x, r, (257,), w, b)
    _same_on_cuda(ng.add_layer_norm_backward, dy, ds, s, m, rs, (257,), w)
    _same_on_cuda(ng.add_rms_norm_forward, x, r, (257,), w)
    v, g = torch.randn(32, 8, 3, 3), torch.rand(32) + 0.5
    _same_on_cuda(ng.weight_norm_forward, v, g, 0)
    wn, norm = ng.weight_norm_forward(v, g, 0)
    _same_on_cuda(ng.weight_norm_backward, torch.randn_like(v), v, norm, g, 0)
    _same_on_cuda(ng.fold_batch_norm, v, torch.randn(32), torch.randn(32), torch.rand(32) + 0.5,
                  torch.rand(32), torch.randn(32))


@needs_gpu
@pytest.mark.parametrize("training", [True, False])
def test_mixed_norms_forward_and_backward_match_the_cpu(training):
    x = torch.randn(4, 8, 5, 5) * 3 + 7
    dy = torch.randn_like(x)
    rho, w, b = torch.rand(8), torch.rand(8) + 0.5, torch.randn(8)
    rm, rv = torch.randn(8), torch.rand(8) + 0.5
    _same_on_cuda(lambda *a: ng.batch_instance_norm_forward(*a, training=training), x, rho, w, b, rm.clone(),
                  rv.clone())
    y, sm, sr = ng.batch_instance_norm_forward(x, rho, w, b, rm.clone(), rv.clone(), training=training)
    _same_on_cuda(ng.batch_instance_norm_backward, dy, x, sm, sr, rho, w)
    lm, lv = torch.randn(3), torch.randn(3)
    _same_on_cuda(lambda *a: ng.switchable_norm_forward(*a, training=training), x, lm, lv, w, b, rm.clone(),
                  rv.clone())
    y, sm, sv, sr = ng.switchable_norm_forward(x, lm, lv, w, b, rm.clone(), rv.clone(), training=training)
    _same_on_cuda(ng.switchable_norm_backward, dy, x, sm, sv, sr, lm, lv, w)

"""Every kernel of the per-channel operations in the kernel list (weight_norm,
fold_batch_norm, feature_stats, feature_affine) is dispatched for inputs in its
layout and matches a float64 reference."""
import numpy as np
import pytest
import torch

import normgen as ng
from conftest import assert_close, cpu_kernels, kernel_shape

_OPS = ("weight_norm", "fold_batch_norm", "feature_stats", "feature_affine")
_TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _every_other(t, dim):
    """t's values in a view with stride 2 along `dim` (a non-unit-stride layout)."""
    shape = list(t.shape)
    shape[dim] *= 2
    big = torch.zeros(shape, dtype=t.dtype)
    idx = [slice(None)] * t.dim()
    idx[dim] = slice(None, None, 2)
    big[tuple(idx)] = t
    return big[tuple(idx)]


@pytest.mark.parametrize("kernel", [k for k in cpu_kernels() if k["op"] in _OPS], ids=lambda k: k["name"])
def test_every_channel_op_kernel_dispatches_and_matches(kernel):
    dtype, layout, op = _TORCH_DTYPE[kernel["dtype"]], kernel["layout"], kernel["op"]
    gen = torch.Generator().manual_seed(7)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    if op == "weight_norm":
        # nchw: dim 0 of a conv weight (the rest unit-stride); nhwc: the last dim of a
        # matrix (the kept dim unit-stride); strided: dim 0 of a column-strided matrix.
        v = {"nchw": lambda: rand(5, 3, 3, 3), "nhwc": lambda: rand(9, 6), "strided": lambda: rand(5, 11)}[layout]()
        if kernel["shape"]:  # a tuned kernel: its (1, C, spatial) view, v's dim 0 as C (nchw)
            _, c, spatial = kernel_shape(kernel, None)
            v = rand(c, spatial)
        dim = -1 if layout == "nhwc" else 0
        v = v.to(dtype)
        if layout == "strided":
            v = _every_other(v, 1)
        k = v.shape[dim]
        tdim = dim % v.dim()  # torch._weight_norm reads dim=-1 as "the whole tensor"
        g_shape = [1] * v.dim()
        g_shape[dim] = k
        g = (1 + 0.5 * rand(k)).to(dtype).reshape(g_shape)
        dw = rand(*v.shape).to(dtype)
        m = v.numel() // k
        if kernel["dir"] == "fwd":
            w, norm = ng.weight_norm_forward(v, g, dim=dim)
            assert ng.last_kernel() == kernel["name"]
            assert_close(w, torch._weight_norm(v.double(), g.double(), tdim), dtype, m, "w")
            assert_close(norm, torch.linalg.vector_norm(v.double().movedim(dim, 0).reshape(k, -1), dim=1),
                         torch.float32, m, "norm")
        else:
            _, norm = ng.weight_norm_forward(v, g, dim=dim)
            dv, dg = ng.weight_norm_backward(dw, v, norm, g, dim=dim)
            assert ng.last_kernel() == kernel["name"]
            v64, g64 = v.double().requires_grad_(), g.double().requires_grad_()
            gv, gg = torch.autograd.grad(torch._weight_norm(v64, g64, tdim), (v64, g64), dw.double())
            assert_close(dv, gv, dtype, m, "dv", scale=dw.double().abs().max().item() * g.double().abs().max().item())
            assert_close(dg, gg, dtype, m, "dg", scale=float(m))
    elif op == "fold_batch_norm":
        w = rand(6, 4, 3, 3).to(dtype)
        if layout == "strided":
            w = _every_other(w, 3)
        b, gamma, beta = (rand(6).to(dtype) for _ in range(3))
        mean, var = rand(6).float(), (0.5 + torch.rand(6, generator=gen)).float()
        w2, b2 = ng.fold_batch_norm(w, b, mean, var, gamma, beta, eps=1e-3)
        assert ng.last_kernel() == kernel["name"]
        scale = gamma.double() / torch.sqrt(var.double() + 1e-3)
        assert_close(w2, w.double() * scale.view(6, 1, 1, 1), dtype, 1, "w2")
        assert_close(b2, (b.double() - mean.double()) * scale + beta.double(), dtype, 1, "b2")
    else:
        # (samples, features): row-major -> nhwc, column-major -> nchw, strided features -> strided.
        _, features, samples = kernel_shape(kernel, (1, 7, 300))  # tuned kernels: (1, features, samples)
        # float32 draws (the tuned transform's shape is 1e6 x 64: float64 would be 512 MB).
        x = (torch.randn(samples, features, generator=gen) * 2 + 50).to(dtype)
        if layout == "nchw":
            x = x.t().contiguous().t()
        elif layout == "strided":
            x = _every_other(x, 1)
        z = ng.ZScore().fit(x)
        if op == "feature_stats":
            assert ng.last_kernel() == kernel["name"]
            x64 = x.double().numpy()
            np.testing.assert_allclose(z.mean_, x64.mean(0), rtol=0, atol=1e-5 * 50)
            np.testing.assert_allclose(z.var_, x64.var(0), rtol=1e-4)
        else:
            y = z.transform(x)
            assert ng.last_kernel() == kernel["name"]
            # Each output depends on its own input and its feature's parameters only: on a
            # large shape, 4096 sampled rows (every feature) check it as well as all rows.
            rows = torch.randint(0, samples, (4096,), generator=gen) if samples > 65536 else slice(None)
            xs = x[rows].double()
            want = (xs - torch.from_numpy(z.mean_)) / torch.from_numpy(z.scale_)
            assert_close(y[rows], want, dtype, 1, "z-score", scale=xs.abs().max().item() / z.scale_.min())

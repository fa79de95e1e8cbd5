"""Shared helpers of the Python tests: references in float64 and dtype-derived tolerances."""
import math
import os

# Tuned kernels are dispatched only on CPUs with the feature they were tuned on (their
# "cpu"); the per-kernel tests run every kernel through dispatch, on any machine.
os.environ.setdefault("NORMGEN_TUNED_ANY_CPU", "1")

import numpy as np
import pytest
import torch

import normgen as ng

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def tolerance(dtype, reduction_len, scale):
    """Rounding once to `dtype` plus float32 accumulation over `reduction_len` terms."""
    return (2 * UNIT_ROUNDOFF[dtype] * scale
            + 16 * UNIT_ROUNDOFF[torch.float32] * math.log2(reduction_len + 2) * max(scale, 1.0))


def assert_close(got, want, dtype, reduction_len, what, scale=None):
    """`scale`: the magnitude of the terms that make up `want` (default: max |want|),
    for results that are small differences of large terms."""
    got = torch.as_tensor(np.asarray(got, dtype=np.float64) if isinstance(got, np.ndarray) else got).double()
    want = torch.as_tensor(want).double()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if scale is None:
        scale = want.abs().max().item() if want.numel() else 1.0
    err = (got - want).abs()
    tol = 2 * UNIT_ROUNDOFF[dtype] * want.abs() + tolerance(dtype, reduction_len, scale)
    bad = err > tol
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {want.numel()} off; worst {err.max().item():.3g} "
                           f"(tolerance at worst {tol.flatten()[err.flatten().argmax()].item():.3g})")


def cpu_kernels():
    """The CPU kernels of the table (the CUDA ones run in test_cuda.py, on a GPU)."""
    return [k for k in ng.kernels() if k["target"] == "cpu"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def ref_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """float64 torch reference; returns (y, mean, rstd) with torch's stat shapes."""
    x64 = x.double()
    dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
    mean = x64.mean(dims, keepdim=True)
    var = ((x64 - mean) ** 2).mean(dims, keepdim=True)
    rstd = 1 / torch.sqrt(var + eps)
    y = (x64 - mean) * rstd
    if weight is not None:
        y = y * weight.double()
    if bias is not None:
        y = y + bias.double()
    return y, mean, rstd


def ref_rms_norm(x, normalized_shape, weight=None, eps=None):
    x64 = x.double()
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
    rstd = 1 / torch.sqrt((x64 * x64).mean(dims, keepdim=True) + eps)
    y = x64 * rstd
    if weight is not None:
        y = y * weight.double()
    return y, rstd


@pytest.fixture(autouse=True)
def _tuned_kernel_threads(request):
    """A tuned kernel is dispatched only on the thread count it was tuned at: a test
    parametrized by such a kernel runs on that many threads."""
    callspec = getattr(request.node, "callspec", None)
    kernel = callspec.params.get("kernel") if callspec else None
    threads = kernel.get("threads", 0) if isinstance(kernel, dict) else 0
    if not threads:
        yield
        return
    old = ng.set_num_threads(threads)
    try:
        yield
    finally:
        ng.set_num_threads(old)


def kernel_shape(kernel, fallback):
    """The shape a per-kernel test runs at: a tuned kernel's own (N, C, spatial) or
    (rows, cols), else `fallback`."""
    if not kernel["shape"]:
        return fallback
    return tuple(int(v) for v in kernel["shape"].split("x"))


__all__ = ["kernel_shape", "ng", "tolerance", "assert_close", "DTYPES", "UNIT_ROUNDOFF", "ref_layer_norm", "ref_rms_norm"]

"""Tensors over 2^31 elements: the kernels are built with 64-bit addressing
(large_buffers), so a tensor whose element count exceeds 2^31 - 1 computes correctly as
long as each extent and stride fits 32 bits (a larger one is a clear error, tested in
test_row_norm.py). Checked on rows and channels past the 2^31st element against a
float64 reference. ~9 GB of memory at the peak; skipped with the reason where that is
not available."""
import gc
import os

import numpy as np
import pytest
import torch

import normgen as ng

ELEMENTS = 2**31 + 5 * 4096  # just past 2^31


def _available_bytes():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


needs_memory = pytest.mark.skipif(
    not os.path.exists("/proc/meminfo") or _available_bytes() < 12 * 2**30,
    reason="needs ~12 GiB of free memory for two 4.3 GB tensors")


def _patterned(shape, dtype, period, dim):
    """A tensor whose slices along `dim` cycle through `period` distinct random slices
    (cheap to fill; slices past 2^31 elements differ from the first ones, so an index
    that wrapped at 32 bits would read the wrong slice)."""
    torch.manual_seed(0)
    pat_shape = list(shape)
    pat_shape[dim] = period
    pattern = (torch.randn(pat_shape) * 3 + 100).to(dtype)
    x = torch.empty(shape, dtype=dtype)
    reps = shape[dim] // period
    view_shape = list(shape[:dim]) + [reps, period] + list(shape[dim + 1:])
    x.view(view_shape).copy_(pattern.unsqueeze(dim).expand(view_shape))
    return x, pattern


@needs_memory
def test_layer_norm_rows_past_2_31_elements():
    cols, period = 4096, 7
    rows = ELEMENTS // cols // period * period + period  # a multiple of the period
    assert rows * cols > 2**31
    x, pattern = _patterned((rows, cols), torch.bfloat16, period, 0)
    y = ng.layer_norm(x, (cols,))
    ref = torch.nn.functional.layer_norm(pattern.double(), (cols,))
    # bfloat16 output rounding (half an ulp is 2^-9 relative), with margin; a row read
    # from the wrong place would be off by O(1)
    for r in list(range(period)) + list(range(rows - 2 * period, rows)):
        assert torch.allclose(y[r].double(), ref[r % period], atol=2.0**-8, rtol=2.0**-7), f"row {r}"
    del x, y
    gc.collect()


@needs_memory
def test_batch_norm_channels_past_2_31_elements():
    # (N, C, H, W) NCHW float16 with N * C * H * W > 2^31: per-channel statistics over
    # ~2^30 values each, then the output pass.
    C, HW, period = 2, 512 * 1024, 3
    N = ELEMENTS // (C * HW) // period * period + period
    assert N * C * HW > 2**31
    x, pattern = _patterned((N, C, 512, 1024), torch.float16, period, 0)
    rm, rv = torch.zeros(C), torch.ones(C)
    y = ng.batch_norm(x, rm, rv, None, None, True, 1.0, 1e-5)
    # The batch is `period` distinct samples repeated: its statistics are theirs.
    p64 = pattern.double()
    mean = p64.mean(dim=(0, 2, 3))
    var = p64.var(dim=(0, 2, 3), unbiased=False)
    count = N * HW
    # float32 statistics over ~2^30 values per channel: the summation's rounding error
    # grows like sqrt(count) * u relative to the spread (u = 2^-24).
    stat_err = float(np.sqrt(count)) * 2.0**-24
    std = torch.sqrt(var)
    np.testing.assert_allclose(rm.double().numpy(), mean.numpy(), rtol=0, atol=float(stat_err * std.max()))
    np.testing.assert_allclose(rv.double().numpy(), (var * count / (count - 1)).numpy(), rtol=4 * stat_err)
    ref = (p64 - mean.view(1, C, 1, 1)) / torch.sqrt(var.view(1, C, 1, 1) + 1e-5)
    # float16 output rounding (half an ulp is 2^-11 relative) plus the statistics' error
    for n in list(range(period)) + list(range(N - period, N)):
        assert torch.allclose(y[n].double(), ref[n % period], atol=2.0**-10 + 2 * stat_err, rtol=2.0**-9), \
            f"sample {n}"
    del x, y
    gc.collect()

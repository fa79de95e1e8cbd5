"""Property-based tests of the Python API (Hypothesis): random ranks, shapes, strides
(including negative, zero and overlapping views from numpy), dtypes and parameters.
Every call either raises ValueError/TypeError naming an argument, or returns the float64
reference's result within the dtype-derived tolerance; none crashes or writes outside
its outputs (outputs are fresh arrays the API allocates; inputs are checked unchanged)."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import normgen as ng
from conftest import ref_layer_norm, ref_rms_norm, tolerance, UNIT_ROUNDOFF

SETTINGS = settings(max_examples=2500, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
NP_DTYPES = [np.float32, np.float16]
NAMES = ("x", "weight", "bias", "normalized_shape", "eps", "num_groups", "running_mean", "running_var", "momentum")


@st.composite
def arrays(draw, min_rank=1, max_rank=4):
    """A numpy view with random shape and strides: reversed, strided, broadcast (stride
    0) or overlapping (as_strided), over a base buffer of random data."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(NP_DTYPES))
    kind = draw(st.sampled_from(["contiguous", "reversed", "step", "broadcast", "overlap", "transposed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    base = (rng.standard_normal(max(1, int(np.prod(shape)) * 2 + 8)) * 2 + 1).astype(dtype)
    if kind == "contiguous" or 0 in shape:
        a = base[: int(np.prod(shape))].reshape(shape)
    elif kind == "reversed":
        a = base[: int(np.prod(shape))].reshape(shape)[tuple(slice(None, None, -1) for _ in shape)]
    elif kind == "step":
        a = base[: int(np.prod(shape)) * 2].reshape(shape[:-1] + (shape[-1] * 2,))[..., ::2]
    elif kind == "transposed":
        a = base[: int(np.prod(shape))].reshape(shape[::-1]).transpose()
    elif kind == "broadcast":
        a = np.broadcast_to(base[: shape[-1]], shape)
    else:  # overlapping rows: each row starts one element after the previous
        item = base.itemsize
        strides = tuple(item for _ in shape)
        a = np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides)
    return a


def _check_error(e):
    msg = str(e)
    event(f"refused: {type(e).__name__}")
    assert any(n in msg for n in NAMES) or "Expected" in msg or "expected" in msg, f"error names no argument: {msg}"


def _tol(dtype, n, scale, cond=0.0):
    """Rounding to `dtype` and float32 accumulation over n terms of size `scale`, plus the
    float32 mean's own rounding (|mean| u) relative to the spread: cond = |mean| / std."""
    torch_dtype = {np.float32: torch.float32, np.float16: torch.float16}[np.dtype(dtype).type]
    return (2 * UNIT_ROUNDOFF[torch_dtype] * scale + tolerance(torch_dtype, n, scale)
            + 4 * UNIT_ROUNDOFF[torch.float32] * cond * scale)


def _cond(v, eps):
    """max |mean| / sqrt(var + eps) over the rows of v (float64, reduced over the last dim)."""
    if v.numel() == 0:
        return 0.0
    mean = v.mean(-1)
    var = ((v - mean.unsqueeze(-1)) ** 2).mean(-1)
    return (mean.abs() / torch.sqrt(var + eps)).max().item()


@SETTINGS
@given(x=arrays(), k=st.integers(0, 3), affine=st.booleans(), rms=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3, 0.5, 0.0, -1.0, float("nan")]))
def test_row_norms(x, k, affine, rms, eps):
    before = x.copy()
    ns = x.shape[len(x.shape) - k:] if k <= len(x.shape) else (3,) * k
    w = b = None
    if affine:
        w = (np.random.default_rng(0).standard_normal(ns) * 0.5 + 1).astype(x.dtype)
        b = np.full(ns, 0.25, dtype=x.dtype)
    try:
        y = ng.rms_norm(x, ns, w, eps) if rms else ng.layer_norm(x, ns, w, b, eps)
    except (ValueError, TypeError) as e:
        _check_error(e)
        return
    finally:
        np.testing.assert_array_equal(x, before)  # inputs untouched
    assert eps > 0 and k >= 1, "a bad eps or empty normalized_shape must be refused"
    xt = torch.from_numpy(np.ascontiguousarray(x).astype(np.float64))
    wt = None if w is None else torch.from_numpy(w.astype(np.float64))
    if rms:
        want = ref_rms_norm(xt, ns, wt, eps)[0]
    else:
        want = ref_layer_norm(xt, ns, wt, None if b is None else torch.from_numpy(b.astype(np.float64)), eps)[0]
    n = int(np.prod(ns)) if ns else 1
    # Outputs scale with |x - mean| / sqrt(var + eps), bounded by sqrt(n) per row.
    scale = max(1.0, float(np.sqrt(n))) * (1.5 if affine else 1.0)
    err = np.abs(y.astype(np.float64) - want.numpy())
    event("computed")
    assert y.shape == x.shape and y.dtype == x.dtype
    cond = 0.0 if rms else _cond(xt.reshape(-1, n) if xt.numel() else xt, eps)
    assert np.all(np.isfinite(y)) and (err.size == 0 or err.max() <= _tol(x.dtype, n, scale, cond))


@SETTINGS
@given(x=arrays(min_rank=2, max_rank=5), op=st.sampled_from(["batch_norm", "group_norm", "instance_norm"]),
       groups=st.integers(-1, 4), training=st.booleans(), momentum=st.sampled_from([0.1, None, float("inf")]))
def test_channel_norms(x, op, groups, training, momentum):
    before = x.copy()
    c = x.shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    try:
        if op == "batch_norm":
            y = ng.batch_norm(x, rm, rv, training=training, momentum=momentum)
        elif op == "group_norm":
            y = ng.group_norm(x, groups)
        else:
            y = ng.instance_norm(x)
    except (ValueError, TypeError) as e:
        _check_error(e)
        np.testing.assert_array_equal(rm, 0)  # nothing written on error
        np.testing.assert_array_equal(rv, 1)
        return
    finally:
        np.testing.assert_array_equal(x, before)
    if x.size == 0:  # empty in, empty out (torch refuses some of these; normgen has nothing to do)
        assert y.shape == x.shape
        return
    xt = torch.from_numpy(np.ascontiguousarray(x).astype(np.float64))
    if op == "batch_norm":
        # momentum: finite, or None in inference (training with None needs num_batches_tracked)
        assert (momentum is None and not training) or (momentum is not None and np.isfinite(momentum))
        want = torch.nn.functional.batch_norm(xt, torch.zeros(c, dtype=torch.float64),
                                              torch.ones(c, dtype=torch.float64), training=training, eps=1e-5)
        n = int(np.prod(x.shape)) // max(c, 1)
        cond = _cond(xt.transpose(0, 1).reshape(c, -1), 1e-5) if training else 0.0
    else:  # per (sample, group) in float64 (torch refuses one value per group; normgen gives 0)
        g = groups if op == "group_norm" else c
        v = xt.reshape(x.shape[0], g, -1)
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        want = ((v - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape)
        n = v.shape[-1]
        cond = _cond(v, 1e-5)
    scale = max(1.0, float(np.sqrt(max(n, 1)))) * (4.0 if op == "batch_norm" and not training else 1.0)
    err = np.abs(y.astype(np.float64) - want.numpy())
    event(f"computed {op}")
    assert y.shape == x.shape and (err.size == 0 or err.max() <= _tol(x.dtype, max(n, 1), scale, cond))

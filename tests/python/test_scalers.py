"""ZScore and MinMax input scalers against float64 numpy references (scikit-learn semantics:
population std, features on the last axis, zero ranges/variances treated as 1)."""
import numpy as np
import pytest
import torch

import normgen as ng
from conftest import assert_close

# (container, dtype): the scalers take numpy arrays and CPU torch tensors
INPUTS = [pytest.param(c, d, id=f"{c}-{np.dtype(d).name if c == 'numpy' else str(d)[6:]}")
          for c, d in [("numpy", np.float32), ("numpy", np.float16), ("torch", torch.float32),
                       ("torch", torch.float16), ("torch", torch.bfloat16)]]
_TORCH = {np.float32: torch.float32, np.float16: torch.float16}
CHUNKS = [50, 313, 97, 61, 200, 129, 150]  # 7 uneven chunks of 1000 rows


def _as(x64, container, dtype):
    if container == "numpy":
        return x64.astype(dtype)
    return torch.from_numpy(x64).to(dtype)


def _f64(x):
    return x.double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _torch_dtype(dtype):
    return _TORCH.get(dtype, dtype)


def _moderate(n, rng):
    """(n, 6): assorted means and scales, a constant feature (column 4) and a near-constant one."""
    x = rng.standard_normal((n, 6))
    x = x * [1.0, 2.0, 10.0, 0.01, 0.0, 30.0] + [0.0, 5.0, -100.0, 0.5, 2.5, 3.0]
    return x


def _hard(n, rng):
    """(n, 13): mean 1e4 / std 1 (columns 0-3), a trend across rows so chunks differ (4), a constant (5)
    and assorted scales."""
    x = rng.standard_normal((n, 13))
    x[:, :4] += 1e4
    x[:, 4] = np.linspace(-50, 50, n) + x[:, 4]
    x[:, 5] = -7.25
    x[:, 6:] = x[:, 6:] * [100, 0.01, 3, 1, 1e3, 0.1, 5] + [-3, 0.5, 0, -1e3, 0, 1, 40]
    return x


def _ref_zscore(x):
    x = _f64(x)
    var = x.var(axis=0)
    return x.mean(axis=0), var, np.where(var == 0, 1.0, np.sqrt(var))


def _ref_minmax(x, lo=0.0, hi=1.0):
    x = _f64(x)
    dmin, dmax = x.min(axis=0), x.max(axis=0)
    rng = dmax - dmin
    scale = (hi - lo) / np.where(rng == 0, 1.0, rng)
    return dict(data_min_=dmin, data_max_=dmax, data_range_=rng, scale_=scale, min_=lo - dmin * scale)


def _check_attr(scaler, name, n_features):
    a = getattr(scaler, name)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (n_features,), (
        f"{name}: {type(a).__name__} {getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}")
    return a


def _check_zscore_stats(s, x, what=""):
    """mean_ within 1e-7 of each feature's largest |x| (1e-3 for mean-1e4 data) and var_ within
    1e-4 relative of the float64 statistics; a constant feature has var_ 0 and scale_ 1."""
    x = _f64(x)
    mean, var, scale = _ref_zscore(x)
    got_mean, got_var, got_scale = (_check_attr(s, a, x.shape[1]) for a in ("mean_", "var_", "scale_"))
    assert isinstance(s.n_samples_seen_, (int, np.integer)) and s.n_samples_seen_ == x.shape[0]
    mean_tol = 1e-7 * np.abs(x).max(axis=0) + 1e-5 * np.sqrt(var)
    assert np.all(np.abs(got_mean - mean) <= mean_tol), f"mean_{what}: off by {np.abs(got_mean - mean)}"
    assert np.all(np.abs(got_var - var) <= 1e-4 * var), f"var_{what}: {got_var} != {var}"
    assert np.all(np.abs(got_scale - scale) <= 1e-4 * scale), f"scale_{what}: {got_scale} != {scale}"


def _check_minmax_stats(m, x, lo=0.0, hi=1.0, what=""):
    want = _ref_minmax(x, lo, hi)
    assert isinstance(m.n_samples_seen_, (int, np.integer)) and m.n_samples_seen_ == x.shape[0]
    got = {k: _check_attr(m, k, x.shape[1]) for k in want}
    # min and max of the data are data values: exact
    assert np.array_equal(got["data_min_"], want["data_min_"]), f"data_min_{what}"
    assert np.array_equal(got["data_max_"], want["data_max_"]), f"data_max_{what}"
    np.testing.assert_allclose(got["data_range_"], want["data_range_"], rtol=1e-6, err_msg=f"data_range_{what}")
    np.testing.assert_allclose(got["scale_"], want["scale_"], rtol=1e-6, err_msg=f"scale_{what}")
    atol = 1e-6 * (abs(lo) + np.abs(want["data_min_"] * want["scale_"]))
    assert np.all(np.abs(got["min_"] - want["min_"]) <= atol), f"min_{what}: {got['min_']} != {want['min_']}"


def _assert_close_columns(got, want, dtype, reduction_len, what, col_scale):
    """assert_close per feature, each with the magnitude of its own terms."""
    assert isinstance(got, (np.ndarray, torch.Tensor)) and tuple(got.shape) == want.shape
    for j in range(want.shape[1]):
        assert_close(got[:, j], torch.from_numpy(want[:, j]), dtype, reduction_len, f"{what} feature {j}",
                     scale=float(col_scale[j]))


def _check_output(y, like):
    assert type(y) is type(like) and y.dtype == like.dtype and tuple(y.shape) == tuple(like.shape)


@pytest.mark.parametrize("container,dtype", INPUTS)
def test_zscore_matches_float64(container, dtype):
    rng = np.random.default_rng(1)
    x = _as(_moderate(257, rng), container, dtype)
    s = ng.ZScore()
    assert s.fit(x) is s
    _check_zscore_stats(s, x)
    mean, _, scale = _ref_zscore(x)
    x64, n, tdt = _f64(x), 257, _torch_dtype(dtype)
    y = s.transform(x)
    _check_output(y, x)
    _assert_close_columns(y, (x64 - mean) / scale, tdt, n, "transform", np.abs(x64).max(0) / scale)
    z = _as(rng.standard_normal((40, 6)) * 2, container, dtype)
    back = s.inverse_transform(z)
    _check_output(back, z)
    z64 = _f64(z)
    _assert_close_columns(back, z64 * scale + mean, tdt, n, "inverse_transform",
                          np.abs(z64).max(0) * scale + np.abs(mean))


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 2)], ids=str)
@pytest.mark.parametrize("container,dtype", INPUTS)
def test_minmax_matches_float64(container, dtype, feature_range):
    rng = np.random.default_rng(2)
    lo, hi = feature_range
    x = _as(_moderate(257, rng), container, dtype)
    m = ng.MinMax(feature_range=feature_range)
    assert m.fit(x) is m
    _check_minmax_stats(m, x, lo, hi)
    ref = _ref_minmax(x, lo, hi)
    x64, tdt = _f64(x), _torch_dtype(dtype)
    y = m.transform(x)
    _check_output(y, x)
    want = x64 * ref["scale_"] + ref["min_"]
    _assert_close_columns(y, want, tdt, 1, "transform", np.abs(x64).max(0) * ref["scale_"] + np.abs(ref["min_"]))
    y64 = _f64(y)
    assert y64.min() >= lo - 1e-2 * (hi - lo) and y64.max() <= hi + 1e-2 * (hi - lo)
    z = _as(rng.uniform(lo - 1, hi + 1, (40, 6)), container, dtype)
    back = m.inverse_transform(z)
    _check_output(back, z)
    z64 = _f64(z)
    _assert_close_columns(back, (z64 - ref["min_"]) / ref["scale_"], tdt, 1, "inverse_transform",
                          (np.abs(z64).max(0) + np.abs(ref["min_"])) / ref["scale_"])


def test_minmax_does_not_clip_unseen_data():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (100, 4)).astype(np.float32)
    m = ng.MinMax(feature_range=(-2, 3)).fit(x)
    ref = _ref_minmax(x, -2, 3)
    z = (x * 4 - 1.5).astype(np.float32)  # well outside the fitted range on both sides
    y = m.transform(z)
    want = z.astype(np.float64) * ref["scale_"] + ref["min_"]
    assert want.min() < -4 and want.max() > 5
    _assert_close_columns(y, want, torch.float32, 1, "transform", np.abs(want).max(0) + np.abs(ref["min_"]))


def test_zscore_partial_fit_over_chunks_matches_one_fit():
    """Chunks of float32 data with mean 1e4 and std 1 merge (Chan) to the whole array's statistics."""
    x = _hard(1000, np.random.default_rng(4)).astype(np.float32)
    whole = ng.ZScore().fit(x)
    _check_zscore_stats(whole, x, " (fit)")
    s = ng.ZScore()
    start = 0
    for size in CHUNKS:
        assert s.partial_fit(x[start:start + size]) is s
        start += size
        assert s.n_samples_seen_ == start
    _check_zscore_stats(s, x, " (partial_fit)")
    assert s.var_[5] == 0 and s.scale_[5] == 1
    y = s.transform(x)
    assert np.all(y[:, 5] == 0)
    mean, _, scale = _ref_zscore(x)
    _assert_close_columns(y, (x.astype(np.float64) - mean) / scale, torch.float32, 1000, "transform",
                          np.abs(x).max(0) / scale)


def test_zscore_partial_fit_one_row_at_a_time():
    x = (np.random.default_rng(5).standard_normal((20, 3)) * [1, 3, 0.1] + [5, -2, 0]).astype(np.float32)
    s = ng.ZScore()
    for row in x:
        s.partial_fit(row[None, :])
    _check_zscore_stats(s, x)


def test_minmax_partial_fit_over_chunks_matches_one_fit():
    x = _hard(1000, np.random.default_rng(6)).astype(np.float32)
    m = ng.MinMax()
    start = 0
    for size in CHUNKS:
        assert m.partial_fit(x[start:start + size]) is m
        start += size
    _check_minmax_stats(m, x, what=" (partial_fit)")
    whole = ng.MinMax().fit(x)
    for name in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
        assert np.array_equal(getattr(m, name), getattr(whole, name)), f"{name}: partial_fit != fit"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_transform_round_trip(dtype):
    rng = np.random.default_rng(7)
    x = _moderate(300, rng).astype(dtype)
    x64, tdt = x.astype(np.float64), _torch_dtype(dtype)
    for scaler in (ng.ZScore(), ng.MinMax(), ng.MinMax(feature_range=(-3, -1))):
        back = scaler.fit(x).inverse_transform(scaler.transform(x))
        _check_output(back, x)
        # two roundings to dtype, the first of a value whose magnitude is that of x's spread
        _assert_close_columns(back, x64, tdt, 300, f"{type(scaler).__name__} round trip",
                              2 * np.abs(x64).max(0) + 1)


def test_fit_starts_afresh_and_partial_fit_accumulates():
    rng = np.random.default_rng(8)
    a = (rng.standard_normal((80, 4)) + 3).astype(np.float32)
    b = (rng.standard_normal((60, 4)) * 5 - 1).astype(np.float32)
    for make, check in ((ng.ZScore, _check_zscore_stats), (ng.MinMax, _check_minmax_stats)):
        s = make().fit(a)
        check(s.fit(b), b, what=" (fit after fit)")
        check(s.partial_fit(a), np.concatenate([b, a]), what=" (partial_fit after fit)")
        check(s.fit(a), a, what=" (fit after partial_fit)")


def test_constant_feature():
    x = np.random.default_rng(9).standard_normal((100, 3)).astype(np.float32)
    x[:, 1] = 2.5
    s = ng.ZScore().fit(x)
    assert s.var_[1] == 0 and s.scale_[1] == 1 and s.mean_[1] == 2.5
    y = s.transform(x)
    assert np.all(np.isfinite(y)) and np.all(y[:, 1] == 0)
    assert np.all(s.inverse_transform(y)[:, 1] == 2.5)
    for lo, hi in ((0, 1), (-1, 2)):
        m = ng.MinMax(feature_range=(lo, hi)).fit(x)
        assert m.data_range_[1] == 0 and m.scale_[1] == hi - lo and m.min_[1] == lo - 2.5 * (hi - lo)
        y = m.transform(x)
        assert np.all(np.isfinite(y))
        assert_close(y[:, 1], np.full(100, float(lo)), torch.float32, 1, "constant feature", scale=2.5 * (hi - lo))


@pytest.mark.parametrize("name", ["ZScore", "MinMax"])
def test_bad_input(name):
    make = getattr(ng, name)
    x = np.random.randn(30, 4).astype(np.float32)
    with pytest.raises(ValueError):
        make().transform(x)
    with pytest.raises(ValueError):
        make().inverse_transform(x)
    with pytest.raises(ValueError):
        make().fit(x[:, 0])  # 1-D
    s = make().fit(x)
    with pytest.raises(ValueError, match="features"):
        s.transform(x[:, :3])
    with pytest.raises(ValueError, match="features"):
        s.inverse_transform(np.ones((5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="features"):
        s.partial_fit(x[:, :3])
    with pytest.raises(ValueError):
        s.transform(x[0])  # 1-D

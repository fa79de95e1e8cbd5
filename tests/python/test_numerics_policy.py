"""normgen's numerics policy (README "Numerics"), checked:
- a NaN or Inf in one row / channel / group / instance affects only that row / channel /
  group / instance;
- constant (zero-variance) inputs give finite outputs (x - mean = 0, times rsqrt(eps));
- data with mean up to 1e4 times its spread (float32) keep the error within the bound
  derived from the input's own rounding (|x| u / std) and the reduction length;
- float16 / bfloat16 sums cannot overflow: statistics accumulate in float32 (a float16
  row whose sum of squares is far beyond float16's range normalizes correctly);
- nan_policy="skip" keeps the running statistics of channels whose batch statistics are
  NaN/Inf, in the functions and the torch modules (torch's "propagate" is the default)."""
import math

import pytest
import torch
import torch.nn.functional as F

import normgen as ng
import normgen.torch  # noqa: F401  (ng.torch)
from conftest import UNIT_ROUNDOFF, assert_close


def _poison(x, index, value):
    x = x.clone()
    x[index] = value
    return x


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_bad_value_stays_in_its_row(value):
    x = torch.randn(6, 64) + 3
    y = ng.layer_norm(_poison(x, (2, 5), value), (64,))
    assert not torch.isfinite(y[2]).all()
    keep = [r for r in range(6) if r != 2]
    assert torch.equal(y[keep], ng.layer_norm(x, (64,))[keep])
    y = ng.rms_norm(_poison(x, (4, 0), value), (64,))
    assert torch.equal(y[[0, 1, 2, 3, 5]], ng.rms_norm(x, (64,))[[0, 1, 2, 3, 5]])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bad_value_stays_in_its_channel_group_instance(value, memory_format):
    x = (torch.randn(4, 8, 5, 5) + 3).contiguous(memory_format=memory_format)
    bad = _poison(x, (1, 3, 2, 2), value).contiguous(memory_format=memory_format)
    # BatchNorm: channel 3 only.
    y, y0 = ng.batch_norm(bad, None, None, training=True), ng.batch_norm(x, None, None, training=True)
    others = [c for c in range(8) if c != 3]
    assert torch.equal(y[:, others], y0[:, others]) and not torch.isfinite(y[:, 3]).all()
    # GroupNorm (4 groups of 2 channels): sample 1, group 1 (channels 2, 3) only.
    y, y0 = ng.group_norm(bad, 4), ng.group_norm(x, 4)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, 2:4] = False
    assert torch.equal(y[mask], y0[mask]) and not torch.isfinite(y[1, 2:4]).all()
    # InstanceNorm: (sample 1, channel 3) only.
    y, y0 = ng.instance_norm(bad), ng.instance_norm(x)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, 3] = False
    assert torch.equal(y[mask], y0[mask]) and not torch.isfinite(y[1, 3]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_constant_input_gives_finite_output(dtype):
    for x in (torch.full((3, 40), 7.25, dtype=dtype), torch.zeros(3, 40, dtype=dtype)):
        for y in (ng.layer_norm(x, (40,)), ng.rms_norm(x, (40,))):
            assert torch.isfinite(y.float()).all()
        assert torch.equal(ng.layer_norm(x, (40,)).float(), torch.zeros(3, 40))
    x4 = torch.full((2, 4, 3, 3), -2.5, dtype=dtype)
    for y in (ng.batch_norm(x4, None, None, training=True), ng.group_norm(x4, 2), ng.instance_norm(x4)):
        assert torch.equal(y.float(), torch.zeros(2, 4, 3, 3))


@pytest.mark.parametrize("offset", [1e2, 1e3, 1e4])
def test_large_mean_small_spread(offset):
    """float32 data at mean/std = offset (the reference takes the same float32 values in
    float64): the float32 mean is itself rounded by up to |mean| u, which shifts every
    xhat by that much relative to a spread of 1; beyond that, only the reduction's
    float32 rounding is allowed (E[x^2] - E[x]^2 would lose every digit at 1e4)."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(8, 512, generator=g, dtype=torch.float64) + offset).float()
    x64 = x.double()
    want = F.layer_norm(x64, (512,), eps=1e-5)
    got = ng.layer_norm(x, (512,))
    u = UNIT_ROUNDOFF[torch.float32]
    bound = 4 * offset * u + 16 * u * math.log2(514) * want.abs().max().item()
    assert (got.double() - want).abs().max().item() <= bound
    x4 = (torch.randn(16, 4, 8, 8, generator=g, dtype=torch.float64) + offset).float()
    want = F.batch_norm(x4.double(), None, None, training=True, eps=1e-5)
    got = ng.batch_norm(x4, None, None, training=True)
    assert (got.double() - want).abs().max().item() <= 4 * offset * u + 16 * u * math.log2(1026) * 5
    # Running variance: unbiased, from the shifted moments, accurate to the same bound.
    rm, rv = torch.zeros(4), torch.ones(4)
    ng.batch_norm(x4, rm, rv, training=True, momentum=1.0)
    assert_close(rv, x4.double().var((0, 2, 3), unbiased=True), torch.float32, 1024, "running_var")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sums_do_not_overflow(dtype):
    # Sum of squares 4096 * 200^2 = 1.6e8, far beyond float16's 65504: float32 accumulation.
    x = (torch.randn(2, 4096) * 5 + 200).to(dtype)
    y = ng.layer_norm(x, (4096,))
    assert torch.isfinite(y.float()).all()
    # (the float32 mean's rounding, |mean| u32, relative to the spread 5: far below the
    # output's own 16-bit rounding)
    assert_close(y, F.layer_norm(x.double(), (4096,)), dtype, 4096, "half layer_norm")
    r = ng.rms_norm(x, (4096,))
    assert torch.isfinite(r.float()).all()
    assert_close(r, x.double() / torch.sqrt((x.double() ** 2).mean(-1, keepdim=True) + torch.finfo(dtype).eps),
                 dtype, 4096, "half rms_norm")


def _bad_batch():
    x = torch.randn(8, 4, 3, 3) * 2 + 40
    x[2, 1, 0, 0] = float("nan")
    x[5, 3, 1, 2] = float("inf")
    return x


def _policy_calls():
    """(name, call(x, running_mean, running_var, nan_policy) -> y) for every function that
    updates running statistics."""
    C = 4
    rho, mw, vw = torch.full((C,), 0.4), torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.5, 0.3, 0.2])
    return [
        ("batch_norm", lambda x, rm, rv, p: ng.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5, nan_policy=p)),
        ("instance_norm", lambda x, rm, rv, p: ng.instance_norm(x, rm, rv, use_input_stats=True, nan_policy=p)),
        ("batch_instance_norm", lambda x, rm, rv, p: ng.batch_instance_norm(x, rho, None, None, rm, rv, True,
                                                                             nan_policy=p)),
        ("switchable_norm", lambda x, rm, rv, p: ng.switchable_norm(x, mw, vw, None, None, rm, rv, True,
                                                                     nan_policy=p)),
        ("torch.batch_norm", lambda x, rm, rv, p: ng.torch.functional.batch_norm(x, rm, rv, training=True,
                                                                                   nan_policy=p)),
    ]


@pytest.mark.parametrize("name,call", _policy_calls(), ids=[n for n, _ in _policy_calls()])
def test_nan_policy_skip_keeps_poisoned_channels_running_stats(name, call):
    x = _bad_batch()
    rm0, rv0 = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 1.5, 2.5, 3.5])
    rm_p, rv_p, rm_s, rv_s = rm0.clone(), rv0.clone(), rm0.clone(), rv0.clone()
    y_p = call(x, rm_p, rv_p, "propagate")
    y_s = call(x, rm_s, rv_s, "skip")
    # Clean channels 0 and 2: updated, the same under both policies.
    assert torch.equal(rm_s[[0, 2]], rm_p[[0, 2]]) and torch.equal(rv_s[[0, 2]], rv_p[[0, 2]])
    assert not torch.equal(rm_p[[0, 2]], rm0[[0, 2]])
    # Channel 1 (NaN) and 3 (Inf): torch's rule poisons them; skip keeps them.
    assert not torch.isfinite(torch.stack([rm_p[[1, 3]], rv_p[[1, 3]]])).all()
    assert torch.equal(rm_s[[1, 3]], rm0[[1, 3]]) and torch.equal(rv_s[[1, 3]], rv0[[1, 3]])
    assert torch.equal(torch.nan_to_num(y_s, 7.0, 8.0, 9.0), torch.nan_to_num(y_p, 7.0, 8.0, 9.0))


def test_nan_policy_default_is_torchs():
    x = _bad_batch()
    rm, rv = torch.zeros(4), torch.ones(4)
    rm_t, rv_t = rm.clone(), rv.clone()
    ng.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5)
    F.batch_norm(x, rm_t, rv_t, None, None, True, 0.1, 1e-5)
    # (the same channels non-finite; an Inf batch may give NaN or Inf statistics)
    assert torch.equal(torch.isfinite(rm), torch.isfinite(rm_t)) and torch.equal(torch.isfinite(rv), torch.isfinite(rv_t))
    assert not torch.isfinite(rm[[1, 3]]).any()


def test_nan_policy_on_modules_and_convert_modules():
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.BatchNorm2d(4), torch.nn.InstanceNorm2d(
        4, track_running_stats=True))
    ng.torch.convert_modules(model, nan_policy="skip")
    assert model[1].nan_policy == "skip" and model[2].nan_policy == "skip"
    before = [t.clone() for t in (model[1].running_mean, model[1].running_var)]
    with torch.no_grad():
        model(_bad_batch())
    rm, rv = model[1].running_mean, model[1].running_var
    assert torch.isfinite(rm).all() and torch.isfinite(rv).all()
    assert torch.equal(rm[[1, 3]], before[0][[1, 3]]) and not torch.equal(rm[[0, 2]], before[0][[0, 2]])
    assert torch.isfinite(model[2].running_mean).all()
    m = ng.torch.BatchNorm1d(4)
    assert m.nan_policy == "propagate"  # torch's behaviour unless asked


@pytest.mark.parametrize("bad", ["ignore", None, 1])
def test_nan_policy_bad_value_names_the_argument(bad):
    x, rm, rv = _bad_batch(), torch.zeros(4), torch.ones(4)
    with pytest.raises(ValueError, match="nan_policy"):
        ng.batch_norm(x, rm, rv, None, None, True, nan_policy=bad)
    assert torch.equal(rm, torch.zeros(4)) and torch.equal(rv, torch.ones(4))
    if bad is not None:
        with pytest.raises(ValueError, match="nan_policy"):
            ng.torch.convert_modules(torch.nn.BatchNorm2d(4), nan_policy=bad)

"""Functional ops mirroring ``torch.nn.functional``, with explicit forward/backward.

Every op has ``OP`` (the output only), ``OP_forward`` (the output and what the
backward needs) and ``OP_backward`` (gradients for every array input and
parameter), following the calling conventions of normgen's design document.
"""
from __future__ import annotations

import numpy as np

from . import _normgen
from ._arrays import (check_same_container, counter_pointer, empty_like, empty_stats, opt_spec, saved_mode,
                      shape_tuple, spec, tag_mode)

__all__ = [
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
    "rms_norm", "rms_norm_forward", "rms_norm_backward",
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "group_norm", "group_norm_forward", "group_norm_backward",
    "instance_norm", "instance_norm_forward", "instance_norm_backward",
    "batch_instance_norm", "batch_instance_norm_forward", "batch_instance_norm_backward",
    "switchable_norm", "switchable_norm_forward", "switchable_norm_backward",
]


def _stat_shape(x, k):
    # torch's native_layer_norm shape: the leading dims, then ones for the normalized dims.
    return tuple(x.shape[: len(x.shape) - k]) + (1,) * k if len(x.shape) >= k else (0,)


def _grad_outputs(x, weight, param_shape, with_bias=True):
    """dx (x's layout) and, with a weight, dweight[/dbias] of ``param_shape``; else None."""
    dx = empty_like(x)
    if weight is None:
        return dx, None, None
    return dx, empty_like(x, param_shape), empty_like(x, param_shape) if with_bias else None


def _float_eps(eps, name="eps"):
    if isinstance(eps, bool):
        raise TypeError(f"{name} must be a float, got bool")
    try:
        return float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float, got {type(eps).__name__}") from None


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the trailing ``normalized_shape`` dims, keeping the statistics.

    Parameters
    ----------
    x : array (*, *normalized_shape), float32/float16 (numpy) or also bfloat16 (torch)
    normalized_shape : int or tuple of ints
    weight, bias : arrays of shape ``normalized_shape`` and x's dtype, optional
    eps : float > 0

    Returns
    -------
    y : x's shape, dtype and container
    mean, rstd : float32, shape ``x.shape[:-k] + (1,) * k`` (k = len(normalized_shape))
    """
    ns = shape_tuple(normalized_shape)
    for n, a in (("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    mean = empty_stats(x, _stat_shape(x, len(ns)))
    rstd = empty_stats(x, _stat_shape(x, len(ns)))
    _normgen.layer_norm_forward(xs, ns, opt_spec(weight, "weight"), opt_spec(bias, "bias"), _float_eps(eps),
                                spec(y, "y"), spec(mean, "mean"), spec(rstd, "rstd"))
    return y, mean, rstd


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.layer_norm``: see :func:`layer_norm_forward`."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def layer_norm_backward(dy, x, mean, rstd, normalized_shape, weight=None):
    """Gradients of LayerNorm: ``(dx, dweight, dbias)``; dweight/dbias are None without weight.

    ``mean`` and ``rstd`` are the statistics ``layer_norm_forward`` returned.
    """
    ns = shape_tuple(normalized_shape)
    for n, a in (("dy", dy), ("weight", weight)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, ns)
    _normgen.layer_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(mean, "mean"), spec(rstd, "rstd"), ns,
                                 opt_spec(weight, "weight"), spec(dx, "dx"), opt_spec(dweight, "dweight"),
                                 opt_spec(dbias, "dbias"))
    return dx, dweight, dbias


def rms_norm_forward(x, normalized_shape, weight=None, eps=None):
    """RMSNorm ``y = x * rsqrt(mean(x^2) + eps) * weight``, keeping ``rstd``.

    ``eps=None`` uses the machine epsilon of x's dtype, as torch does.
    Returns ``(y, rstd)``, rstd float32 of shape ``x.shape[:-k] + (1,) * k``.
    """
    ns = shape_tuple(normalized_shape)
    check_same_container(x, "weight", weight)
    xs = spec(x, "x")
    y = empty_like(x)
    rstd = empty_stats(x, _stat_shape(x, len(ns)))
    _normgen.rms_norm_forward(xs, ns, opt_spec(weight, "weight"), None if eps is None else _float_eps(eps),
                              spec(y, "y"), spec(rstd, "rstd"))
    return y, rstd


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """``torch.nn.functional.rms_norm``: see :func:`rms_norm_forward`."""
    return rms_norm_forward(x, normalized_shape, weight, eps)[0]


def rms_norm_backward(dy, x, rstd, normalized_shape, weight=None):
    """Gradients of RMSNorm: ``(dx, dweight)``; dweight is None without weight."""
    ns = shape_tuple(normalized_shape)
    for n, a in (("dy", dy), ("weight", weight)):
        check_same_container(x, n, a)
    dx, dweight, _ = _grad_outputs(x, weight, ns, with_bias=False)
    _normgen.rms_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(rstd, "rstd"), ns, opt_spec(weight, "weight"),
                               spec(dx, "dx"), opt_spec(dweight, "dweight"))
    return dx, dweight


# ---- pre-norm residual add -------------------------------------------------------------

def add_layer_norm_forward(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The pre-norm transformer block's ``s = x + residual; y = layer_norm(s)`` in one pass.

    ``residual`` has x's shape and dtype. ``s`` is summed in float32 and returned rounded
    once to x's dtype; ``y`` normalizes the float32 sum. Returns ``(y, s, mean, rstd)``.
    """
    ns = shape_tuple(normalized_shape)
    for n, a in (("residual", residual), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y, s = empty_like(x), empty_like(x)
    mean = empty_stats(x, _stat_shape(x, len(ns)))
    rstd = empty_stats(x, _stat_shape(x, len(ns)))
    _normgen.add_layer_norm_forward(xs, spec(residual, "residual"), ns, opt_spec(weight, "weight"),
                                    opt_spec(bias, "bias"), _float_eps(eps), spec(y, "y"), spec(s, "s"),
                                    spec(mean, "mean"), spec(rstd, "rstd"))
    return y, s, mean, rstd


def add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``(y, s)``: see :func:`add_layer_norm_forward`."""
    return add_layer_norm_forward(x, residual, normalized_shape, weight, bias, eps)[:2]


def add_layer_norm_backward(dy, ds, s, mean, rstd, normalized_shape, weight=None):
    """Gradients of :func:`add_layer_norm`: ``(dx, dresidual, dweight, dbias)``.

    ``ds`` is the gradient reaching ``s`` from later layers (None: none). dx and
    dresidual are equal (s = x + residual) and returned as the same array.
    """
    ns = shape_tuple(normalized_shape)
    for n, a in (("dy", dy), ("ds", ds), ("weight", weight)):
        check_same_container(s, n, a)
    dx, dweight, dbias = _grad_outputs(s, weight, ns)
    _normgen.add_layer_norm_backward(spec(dy, "dy"), opt_spec(ds, "ds"), spec(s, "s"), spec(mean, "mean"),
                                     spec(rstd, "rstd"), ns, opt_spec(weight, "weight"), spec(dx, "dx"),
                                     opt_spec(dweight, "dweight"), opt_spec(dbias, "dbias"))
    return dx, dx, dweight, dbias


def add_rms_norm_forward(x, residual, normalized_shape, weight=None, eps=None):
    """``s = x + residual; y = rms_norm(s)`` in one pass: ``(y, s, rstd)`` (see add_layer_norm)."""
    ns = shape_tuple(normalized_shape)
    for n, a in (("residual", residual), ("weight", weight)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y, s = empty_like(x), empty_like(x)
    rstd = empty_stats(x, _stat_shape(x, len(ns)))
    _normgen.add_rms_norm_forward(xs, spec(residual, "residual"), ns, opt_spec(weight, "weight"),
                                  None if eps is None else _float_eps(eps), spec(y, "y"), spec(s, "s"),
                                  spec(rstd, "rstd"))
    return y, s, rstd


def add_rms_norm(x, residual, normalized_shape, weight=None, eps=None):
    """``(y, s)``: see :func:`add_rms_norm_forward`."""
    return add_rms_norm_forward(x, residual, normalized_shape, weight, eps)[:2]


def add_rms_norm_backward(dy, ds, s, rstd, normalized_shape, weight=None):
    """Gradients of :func:`add_rms_norm`: ``(dx, dresidual, dweight)``, dx and dresidual the same array."""
    ns = shape_tuple(normalized_shape)
    for n, a in (("dy", dy), ("ds", ds), ("weight", weight)):
        check_same_container(s, n, a)
    dx, dweight, _ = _grad_outputs(s, weight, ns, with_bias=False)
    _normgen.add_rms_norm_backward(spec(dy, "dy"), opt_spec(ds, "ds"), spec(s, "s"), spec(rstd, "rstd"), ns,
                                   opt_spec(weight, "weight"), spec(dx, "dx"), opt_spec(dweight, "dweight"))
    return dx, dx, dweight


def _channels(x, name="x"):
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"Expected {name} of shape (N, C) or (N, C, *spatial), but got {list(shape)}")
    return shape[1]


_ACTIVATIONS = {None: 0, "relu": 1, "leaky_relu": 2, "silu": 3, "gelu": 4, "gelu_tanh": 5}


NAN_POLICIES = ("propagate", "skip")


def _nan_policy(nan_policy):
    """The runtime's code for ``nan_policy`` (what a batch whose statistics are NaN/Inf in
    a channel does to that channel's running statistics: "propagate" writes them, as
    torch does; "skip" keeps the old ones)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
    return NAN_POLICIES.index(nan_policy)


def _epilogue(x, residual, activation, negative_slope):
    """The fused epilogue's arguments: (residual spec, activation code, slope)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {[a for a in _ACTIVATIONS if a]} or None, got {activation!r}")
    check_same_container(x, "residual", residual)
    return opt_spec(residual, "residual"), _ACTIVATIONS[activation], _float_eps(negative_slope, "negative_slope")


def batch_norm_forward(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                       eps=1e-5, *, num_batches_tracked=None, residual=None, activation=None, negative_slope=0.01,
                       nan_policy="propagate"):
    """BatchNorm per channel over (N, *spatial), keeping the statistics for the backward.

    Parameters
    ----------
    x : array (N, C) or (N, C, *spatial) with up to 3 spatial dims; NCHW and
        channels-last layouts have fast kernels, any strides work
    running_mean, running_var : float32 arrays (C,) or None; updated in place when
        training (running_var with the unbiased variance)
    weight, bias : arrays (C,) of x's dtype, optional
    training : normalize with the batch statistics (True) or the running ones (False)
    momentum : float, or None for the cumulative average (needs ``num_batches_tracked``)
    num_batches_tracked : one-element int64 array, incremented by every training call
        that updates running statistics
    residual, activation, negative_slope : the fused epilogue ``y = act(bn(x) + residual)``
        in the same pass; ``activation`` one of "relu", "leaky_relu" (``negative_slope``),
        "silu", "gelu" (erf), "gelu_tanh", or None; running statistics come from x alone
    nan_policy : "propagate" (torch's behaviour) or "skip": a channel whose batch
        statistics are NaN/Inf keeps its running statistics (the others update)

    Returns
    -------
    y : x's shape, dtype, container and memory format
    save_mean, save_rstd : float32 (C,): the statistics that normalized x (batch or running)
    """
    c = _channels(x)
    for n, a in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    save_mean, save_rstd = empty_stats(x, (c,)), empty_stats(x, (c,))
    _normgen.batch_norm_forward(xs, opt_spec(running_mean, "running_mean"), opt_spec(running_var, "running_var"),
                                opt_spec(weight, "weight"), opt_spec(bias, "bias"), bool(training),
                                None if momentum is None else _float_eps(momentum, "momentum"), _float_eps(eps),
                                spec(y, "y"), spec(save_mean, "save_mean"), spec(save_rstd, "save_rstd"),
                                counter_pointer(num_batches_tracked, "num_batches_tracked"),
                                *_epilogue(x, residual, activation, negative_slope), _nan_policy(nan_policy))
    return y, save_mean, tag_mode(save_rstd, bool(training))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               num_batches_tracked=None, residual=None, activation=None, negative_slope=0.01, nan_policy="propagate"):
    """``torch.nn.functional.batch_norm``: see :func:`batch_norm_forward`."""
    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps,
                              num_batches_tracked=num_batches_tracked, residual=residual, activation=activation,
                              negative_slope=negative_slope, nan_policy=nan_policy)[0]


def batch_norm_backward(dy, x, save_mean, save_rstd, weight=None, *, bias=None, residual=None, activation=None,
                        negative_slope=0.01):
    """Gradients of BatchNorm: ``(dx, dweight, dbias)``; dweight/dbias are None without weight.

    ``save_mean``/``save_rstd`` are what :func:`batch_norm_forward` returned; they record
    whether the forward used batch statistics (gradient through them) or running
    statistics (the affine gradient ``dy * weight * rstd``).

    After a fused forward, pass the same ``residual``/``activation``/``negative_slope``
    and the forward's ``bias``: z = bn(x) + residual is recomputed from x and the norm's
    gradients are taken with dz = dy * act'(z). With a residual, its gradient dz is
    returned last: ``(dx, dweight, dbias, dresidual)``.
    """
    c = _channels(x)
    for n, a in (("dy", dy), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, (c,))
    dresidual = None if residual is None else empty_like(x)
    _normgen.batch_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(save_mean, "save_mean"),
                                 spec(save_rstd, "save_rstd"), opt_spec(weight, "weight"), saved_mode(save_rstd),
                                 spec(dx, "dx"), opt_spec(dweight, "dweight"), opt_spec(dbias, "dbias"),
                                 opt_spec(bias, "bias"), *_epilogue(x, residual, activation, negative_slope),
                                 opt_spec(dresidual, "dresidual"))
    if residual is not None:
        return dx, dweight, dbias, dresidual
    return dx, dweight, dbias


def _int_arg(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return int(v)


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5, *, residual=None, activation=None, negative_slope=0.01):
    """GroupNorm per (sample, group) over (C / num_groups channels x spatial).

    Returns ``(y, mean, rstd)``; mean/rstd float32 of shape (N, num_groups), as torch's
    ``native_group_norm``. ``num_groups`` must divide C; G = 1 is LayerNorm over
    (C, *spatial) with per-channel affine, G = C is InstanceNorm. ``residual``/
    ``activation``: the fused epilogue ``y = act(gn(x) + residual)`` (see batch_norm_forward).
    """
    groups = _int_arg(num_groups, "num_groups")
    _channels(x)
    for n, a in (("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    shape = (x.shape[0], max(groups, 0))
    mean, rstd = empty_stats(x, shape), empty_stats(x, shape)
    _normgen.group_norm_forward(xs, groups, opt_spec(weight, "weight"), opt_spec(bias, "bias"), _float_eps(eps),
                                spec(y, "y"), spec(mean, "mean"), spec(rstd, "rstd"),
                                *_epilogue(x, residual, activation, negative_slope))
    return y, mean, rstd


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, residual=None, activation=None, negative_slope=0.01):
    """``torch.nn.functional.group_norm``: see :func:`group_norm_forward`."""
    return group_norm_forward(x, num_groups, weight, bias, eps, residual=residual, activation=activation,
                              negative_slope=negative_slope)[0]


def group_norm_backward(dy, x, mean, rstd, num_groups, weight=None, *, bias=None, residual=None, activation=None,
                        negative_slope=0.01):
    """Gradients of GroupNorm: ``(dx, dweight, dbias[, dresidual])``; dweight/dbias are None
    without weight. After a fused forward pass the same epilogue and the forward's bias
    (as batch_norm_backward)."""
    groups = _int_arg(num_groups, "num_groups")
    c = _channels(x)
    for n, a in (("dy", dy), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, (c,))
    dresidual = None if residual is None else empty_like(x)
    _normgen.group_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(mean, "mean"), spec(rstd, "rstd"), groups,
                                 opt_spec(weight, "weight"), spec(dx, "dx"), opt_spec(dweight, "dweight"),
                                 opt_spec(dbias, "dbias"), opt_spec(bias, "bias"),
                                 *_epilogue(x, residual, activation, negative_slope), opt_spec(dresidual, "dresidual"))
    return (dx, dweight, dbias) if residual is None else (dx, dweight, dbias, dresidual)


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                          momentum=0.1, eps=1e-5, *, residual=None, activation=None, negative_slope=0.01,
                          nan_policy="propagate"):
    """InstanceNorm per (sample, channel) over the spatial dims (torch semantics).

    Returns ``(y, save_mean, save_rstd)``, the saved statistics float32 (N, C) and tagged
    with the mode. With ``use_input_stats`` and running statistics given, these are
    updated in place with the batch average of the instance statistics (``nan_policy`` as
    :func:`batch_norm_forward`'s).
    """
    c = _channels(x)
    for n, a in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    save_mean, save_rstd = empty_stats(x, (x.shape[0], c)), empty_stats(x, (x.shape[0], c))
    _normgen.instance_norm_forward(xs, opt_spec(running_mean, "running_mean"), opt_spec(running_var, "running_var"),
                                   opt_spec(weight, "weight"), opt_spec(bias, "bias"), bool(use_input_stats),
                                   _float_eps(momentum, "momentum"), _float_eps(eps), spec(y, "y"),
                                   spec(save_mean, "save_mean"), spec(save_rstd, "save_rstd"),
                                   *_epilogue(x, residual, activation, negative_slope), _nan_policy(nan_policy))
    return y, save_mean, tag_mode(save_rstd, bool(use_input_stats))


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5, *, residual=None, activation=None, negative_slope=0.01,
                  nan_policy="propagate"):
    """``torch.nn.functional.instance_norm``: see :func:`instance_norm_forward`."""
    return instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                                 residual=residual, activation=activation, negative_slope=negative_slope,
                                 nan_policy=nan_policy)[0]


def instance_norm_backward(dy, x, save_mean, save_rstd, weight=None, *, bias=None, residual=None, activation=None,
                           negative_slope=0.01):
    """Gradients of InstanceNorm: ``(dx, dweight, dbias[, dresidual])`` (see group_norm_backward)."""
    c = _channels(x)
    for n, a in (("dy", dy), ("weight", weight), ("bias", bias)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, (c,))
    dresidual = None if residual is None else empty_like(x)
    _normgen.instance_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(save_mean, "save_mean"),
                                    spec(save_rstd, "save_rstd"), opt_spec(weight, "weight"), saved_mode(save_rstd),
                                    spec(dx, "dx"), opt_spec(dweight, "dweight"), opt_spec(dbias, "dbias"),
                                    opt_spec(bias, "bias"), *_epilogue(x, residual, activation, negative_slope),
                                    opt_spec(dresidual, "dresidual"))
    return (dx, dweight, dbias) if residual is None else (dx, dweight, dbias, dresidual)


# ---- weight normalization ----------------------------------------------------------

def _momentum(momentum):
    return None if momentum is None else _float_eps(momentum, "momentum")


def batch_instance_norm_forward(x, rho, weight=None, bias=None, running_mean=None, running_var=None, training=False,
                                momentum=0.1, eps=1e-5, *, num_batches_tracked=None, nan_policy="propagate"):
    """Batch-Instance Norm (Nam & Kim 2018): ``y = (rho' xhat_BN + (1 - rho') xhat_IN) * weight + bias``.

    ``rho`` (C,) of x's dtype is clamped to [0, 1] per channel (``rho'``). The BN part is
    exactly :func:`batch_norm` (batch statistics and running-statistics update when
    training, running statistics otherwise); the IN part always uses each instance's
    statistics; one ``eps`` for both. Both sets of statistics come from one pass over x.

    Returns ``(y, save_mean, save_rstd)``: the saved statistics are float32 (N + 1, C),
    rows 0..N-1 the IN statistics of each sample, row N the BN part's (the running ones
    in inference), tagged with the mode.
    """
    c = _channels(x)
    for n, a in (("rho", rho), ("weight", weight), ("bias", bias), ("running_mean", running_mean),
                 ("running_var", running_var)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    shape = (x.shape[0] + 1, c)
    save_mean, save_rstd = empty_stats(x, shape), empty_stats(x, shape)
    _normgen.batch_instance_norm_forward(xs, spec(rho, "rho"), opt_spec(weight, "weight"), opt_spec(bias, "bias"),
                                         opt_spec(running_mean, "running_mean"), opt_spec(running_var, "running_var"),
                                         bool(training), _momentum(momentum), _float_eps(eps), spec(y, "y"),
                                         spec(save_mean, "save_mean"), spec(save_rstd, "save_rstd"),
                                         counter_pointer(num_batches_tracked, "num_batches_tracked"),
                                         _nan_policy(nan_policy))
    return y, save_mean, tag_mode(save_rstd, bool(training))


def batch_instance_norm(x, rho, weight=None, bias=None, running_mean=None, running_var=None, training=False,
                        momentum=0.1, eps=1e-5, *, num_batches_tracked=None, nan_policy="propagate"):
    """Batch-Instance Norm: see :func:`batch_instance_norm_forward`."""
    return batch_instance_norm_forward(x, rho, weight, bias, running_mean, running_var, training, momentum, eps,
                                       num_batches_tracked=num_batches_tracked, nan_policy=nan_policy)[0]


def batch_instance_norm_backward(dy, x, save_mean, save_rstd, rho, weight=None):
    """Gradients of Batch-Instance Norm: ``(dx, drho, dweight, dbias)``.

    ``drho`` passes through the clamp where 0 <= rho <= 1, bounds included (a gate
    initialized at 1 learns, as in Nam & Kim's clip-after-update scheme; torch.clamp's
    gradient is 0 at the bounds), and is 0 outside; dweight/dbias are None without weight. After an inference forward the BN
    statistics are constants (no gradient through them).
    """
    c = _channels(x)
    for n, a in (("dy", dy), ("rho", rho), ("weight", weight)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, (c,))
    drho = empty_like(x, (c,))
    _normgen.batch_instance_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(save_mean, "save_mean"),
                                          spec(save_rstd, "save_rstd"), spec(rho, "rho"), opt_spec(weight, "weight"),
                                          saved_mode(save_rstd), spec(dx, "dx"), spec(drho, "drho"),
                                          opt_spec(dweight, "dweight"), opt_spec(dbias, "dbias"))
    return dx, drho, dweight, dbias


def switchable_norm_forward(x, mean_weight, var_weight, weight=None, bias=None, running_mean=None, running_var=None,
                            training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None,
                            nan_policy="propagate"):
    """Switchable Norm (Luo et al. 2018): mean and variance are softmax-weighted mixtures of
    the IN, LN and BN statistics; ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    ``mean_weight``, ``var_weight``: 3 logits each (x's dtype), in the order (IN, LN, BN).
    All variances are biased; LN is per sample over (C, *spatial). The BN part uses the
    batch statistics when training (updating running statistics as :func:`batch_norm`)
    and the running ones otherwise. All three come from one set of per-(n, c) moments.

    Returns ``(y, save_mean, save_var, save_rstd)``: float32 (N + 1, C + 1) means and
    variances ([n, c] IN, [n, C] LN of sample n, [N, c] BN, [N, C] = 0) and the
    mixture's rstd (N, C), tagged with the mode.
    """
    c = _channels(x)
    for n, a in (("mean_weight", mean_weight), ("var_weight", var_weight), ("weight", weight), ("bias", bias),
                 ("running_mean", running_mean), ("running_var", running_var)):
        check_same_container(x, n, a)
    xs = spec(x, "x")
    y = empty_like(x)
    shape = (x.shape[0] + 1, c + 1)
    save_mean, save_var, save_rstd = empty_stats(x, shape), empty_stats(x, shape), empty_stats(x, (x.shape[0], c))
    _normgen.switchable_norm_forward(xs, spec(mean_weight, "mean_weight"), spec(var_weight, "var_weight"),
                                     opt_spec(weight, "weight"), opt_spec(bias, "bias"),
                                     opt_spec(running_mean, "running_mean"), opt_spec(running_var, "running_var"),
                                     bool(training), _momentum(momentum), _float_eps(eps), spec(y, "y"),
                                     spec(save_mean, "save_mean"), spec(save_var, "save_var"),
                                     spec(save_rstd, "save_rstd"),
                                     counter_pointer(num_batches_tracked, "num_batches_tracked"),
                                     _nan_policy(nan_policy))
    return y, save_mean, save_var, tag_mode(save_rstd, bool(training))


def switchable_norm(x, mean_weight, var_weight, weight=None, bias=None, running_mean=None, running_var=None,
                    training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None, nan_policy="propagate"):
    """Switchable Norm: see :func:`switchable_norm_forward`."""
    return switchable_norm_forward(x, mean_weight, var_weight, weight, bias, running_mean, running_var, training,
                                   momentum, eps, num_batches_tracked=num_batches_tracked, nan_policy=nan_policy)[0]


def switchable_norm_backward(dy, x, save_mean, save_var, save_rstd, mean_weight, var_weight, weight=None):
    """Gradients of Switchable Norm: ``(dx, dmean_weight, dvar_weight, dweight, dbias)``
    (dweight/dbias None without weight). After an inference forward the BN part's running
    statistics are constants (the logits still get their gradients)."""
    c = _channels(x)
    for n, a in (("dy", dy), ("mean_weight", mean_weight), ("var_weight", var_weight), ("weight", weight)):
        check_same_container(x, n, a)
    dx, dweight, dbias = _grad_outputs(x, weight, (c,))
    dmw, dvw = empty_like(x, (3,)), empty_like(x, (3,))
    _normgen.switchable_norm_backward(spec(dy, "dy"), spec(x, "x"), spec(save_mean, "save_mean"),
                                      spec(save_var, "save_var"), spec(save_rstd, "save_rstd"),
                                      spec(mean_weight, "mean_weight"), spec(var_weight, "var_weight"),
                                      opt_spec(weight, "weight"), saved_mode(save_rstd), spec(dx, "dx"),
                                      spec(dmw, "dmean_weight"), spec(dvw, "dvar_weight"),
                                      opt_spec(dweight, "dweight"), opt_spec(dbias, "dbias"))
    return dx, dmw, dvw, dweight, dbias


def _opt_dim(dim):
    return None if dim is None else _int_arg(dim, "dim")


def weight_norm_forward(v, g, dim=0):
    """Weight normalization ``w = g * v / ||v||`` (``torch._weight_norm``).

    The norm is over every dim of ``v`` but ``dim`` (negative counts from the end;
    ``None``: the whole tensor, with a one-element ``g``). ``g`` has v's dtype and shape
    ``(v.shape[dim],)`` or torch's kept-dims shape. Returns ``(w, norm)``, norm float32
    of shape ``(v.shape[dim],)`` (``(1,)`` for ``dim=None``).
    """
    d = _opt_dim(dim)
    check_same_container(v, "g", g)
    vs = spec(v, "v")
    w = empty_like(v)
    k = 1
    if d is not None and -len(v.shape) <= d < len(v.shape):
        k = v.shape[d]
    norm = empty_stats(v, (k,))
    _normgen.weight_norm_forward(vs, spec(g, "g"), d, spec(w, "w"), spec(norm, "norm"))
    return w, norm


def weight_norm(v, g, dim=0):
    """``torch._weight_norm(v, g, dim)``: see :func:`weight_norm_forward`."""
    return weight_norm_forward(v, g, dim)[0]


def weight_norm_backward(dw, v, norm, g, dim=0):
    """Gradients of weight normalization: ``(dv, dg)``, dg in g's shape."""
    d = _opt_dim(dim)
    for n, a in (("dw", dw), ("g", g)):
        check_same_container(v, n, a)
    dv = empty_like(v)
    dg = empty_like(g)
    _normgen.weight_norm_backward(spec(dw, "dw"), spec(v, "v"), spec(norm, "norm"), spec(g, "g"), d, spec(dv, "dv"),
                                  spec(dg, "dg"))
    return dv, dg


# ---- BatchNorm folding ---------------------------------------------------------------

def fold_batch_norm(w, b, running_mean, running_var, gamma, beta, eps=1e-5):
    """Fold an inference BatchNorm into the preceding conv/linear layer.

    ``w``: weights with the output channels on axis 0 (conv ``(O, I, *k)``, linear
    ``(O, I)``); ``b``: its bias (O,) or None (no bias); ``gamma``/``beta``: the BN's
    affine parameters (O,) or None. Returns ``(w2, b2)`` with
    ``w2 = w * gamma / sqrt(var + eps)`` per output channel and
    ``b2 = (b - mean) * gamma / sqrt(var + eps) + beta``, in w's dtype.
    """
    for n, a in (("b", b), ("gamma", gamma), ("beta", beta)):
        check_same_container(w, n, a)
    ws = spec(w, "w")
    w2 = empty_like(w)
    b2 = empty_like(w, (w.shape[0] if len(w.shape) else 0,))
    _normgen.fold_batch_norm(ws, opt_spec(b, "b"), spec(running_mean, "running_mean"),
                             spec(running_var, "running_var"), opt_spec(gamma, "gamma"), opt_spec(beta, "beta"),
                             _float_eps(eps), spec(w2, "w2"), spec(b2, "b2"))
    return w2, b2


__all__ += ["add_layer_norm", "add_layer_norm_forward", "add_layer_norm_backward",
            "add_rms_norm", "add_rms_norm_forward", "add_rms_norm_backward",
            "weight_norm", "weight_norm_forward", "weight_norm_backward", "fold_batch_norm"]

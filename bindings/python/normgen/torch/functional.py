"""Autograd functions for every normgen op, and ``torch.nn.functional``-style wrappers.

Each op is a :class:`torch.autograd.Function` whose forward runs normgen's forward
kernel and keeps exactly what the backward kernel reads (the input, the parameters and
the float32 statistics), and whose backward runs normgen's backward kernel once for all
gradients. Differentiating a backward again (``create_graph=True``) raises
NotImplementedError. When no gradient is wanted (grad mode off, or no input requiring
one) the forward runs alone, without an autograd node. Inputs are CPU or CUDA tensors
of float32, float16 or bfloat16.
"""
from __future__ import annotations

import torch

from .. import functional as F
from .._arrays import tag_mode

__all__ = [
    "layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm", "batch_norm", "group_norm", "instance_norm",
    "batch_instance_norm", "switchable_norm", "weight_norm", "fold_batch_norm",
    "LayerNormFunction", "RMSNormFunction", "AddLayerNormFunction", "AddRMSNormFunction", "BatchNormFunction",
    "GroupNormFunction", "InstanceNormFunction", "BatchInstanceNormFunction", "SwitchableNormFunction",
    "WeightNormFunction",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _no_double_backward(name):
    if torch.is_grad_enabled():
        raise NotImplementedError(f"normgen: the backward of {name} is not differentiable (double backward, "
                                  "create_graph=True); use torch's op for higher-order gradients")


def _grad_like(g, x):
    """The incoming gradient in x's layout (the kernels' fast path reads both alike)."""
    if g is None:
        return torch.zeros_like(x)
    if g.stride() == x.stride() or x.numel() == 0:
        return g
    out = torch.empty_like(x)
    out.copy_(g)
    return out


def _ones_for_bias(weight, bias, shape, like):
    """Kernels take a bias only with a weight: the identity weight stands in."""
    if weight is None and bias is not None:
        return torch.ones(shape, dtype=like.dtype, device=like.device)
    return weight


def _want(ctx, i, g):
    return g if ctx.needs_input_grad[i] else None


class _NoGraph:
    """The context a Function's forward runs with when no gradient is wanted (grad mode
    off, or no input requiring one): what it keeps for the backward is dropped.
    ``Function.apply`` would build an autograd node nothing reads, 10-15 us per call on
    the 2-core test machine, a fifth of a small inference call."""

    def save_for_backward(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _apply(function, *args):
    """``function.apply(*args)``, or its forward alone when no gradient is wanted."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return function.apply(*args)
    return function.forward(_NoGraph(), *args)


def _param_shape(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


# ---- row norms ----------------------------------------------------------------------------

class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        ns = _param_shape(normalized_shape)
        w = _ones_for_bias(weight, bias, ns, x)
        y, mean, rstd = F.layer_norm_forward(x, ns, w, bias, eps)
        ctx.ns, ctx.has_weight = ns, weight is not None
        ctx.save_for_backward(x, w, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        _no_double_backward("layer_norm")
        x, w, mean, rstd = ctx.saved_tensors
        dx, dw, db = F.layer_norm_backward(_grad_like(dy, x), x, mean, rstd, ctx.ns, w)
        return (_want(ctx, 0, dx), None, _want(ctx, 2, dw) if ctx.has_weight else None, _want(ctx, 3, db), None)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, eps):
        ns = _param_shape(normalized_shape)
        y, rstd = F.rms_norm_forward(x, ns, weight, eps)
        ctx.ns = ns
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        _no_double_backward("rms_norm")
        x, w, rstd = ctx.saved_tensors
        dx, dw = F.rms_norm_backward(_grad_like(dy, x), x, rstd, ctx.ns, w)
        return _want(ctx, 0, dx), None, _want(ctx, 2, dw), None


class AddLayerNormFunction(torch.autograd.Function):
    """``s = x + residual; y = layer_norm(s)``: returns ``(y, s)``."""

    @staticmethod
    def forward(ctx, x, residual, normalized_shape, weight, bias, eps):
        ns = _param_shape(normalized_shape)
        w = _ones_for_bias(weight, bias, ns, x)
        y, s, mean, rstd = F.add_layer_norm_forward(x, residual, ns, w, bias, eps)
        ctx.ns, ctx.has_weight = ns, weight is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(s, w, mean, rstd)
        return y, s

    @staticmethod
    def backward(ctx, dy, ds):
        _no_double_backward("add_layer_norm")
        s, w, mean, rstd = ctx.saved_tensors
        dx, _, dw, db = F.add_layer_norm_backward(_grad_like(dy, s), None if ds is None else _grad_like(ds, s), s,
                                                  mean, rstd, ctx.ns, w)
        dres = dx.clone() if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] else dx
        return (_want(ctx, 0, dx), _want(ctx, 1, dres), None, _want(ctx, 3, dw) if ctx.has_weight else None,
                _want(ctx, 4, db), None)


class AddRMSNormFunction(torch.autograd.Function):
    """``s = x + residual; y = rms_norm(s)``: returns ``(y, s)``."""

    @staticmethod
    def forward(ctx, x, residual, normalized_shape, weight, eps):
        ns = _param_shape(normalized_shape)
        y, s, rstd = F.add_rms_norm_forward(x, residual, ns, weight, eps)
        ctx.ns = ns
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(s, weight, rstd)
        return y, s

    @staticmethod
    def backward(ctx, dy, ds):
        _no_double_backward("add_rms_norm")
        s, w, rstd = ctx.saved_tensors
        dx, _, dw = F.add_rms_norm_backward(_grad_like(dy, s), None if ds is None else _grad_like(ds, s), s, rstd,
                                            ctx.ns, w)
        dres = dx.clone() if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] else dx
        return _want(ctx, 0, dx), _want(ctx, 1, dres), None, _want(ctx, 3, dw), None


# ---- channel norms ------------------------------------------------------------------------

def _channel_backward(ctx, grads, weight_index, bias_index, residual_index):
    """Map (dx, dweight, dbias[, dresidual]) onto a forward's argument positions."""
    dx, dw, db = grads[:3]
    out = [None] * len(ctx.needs_input_grad)
    out[0] = _want(ctx, 0, dx)
    if ctx.has_weight:
        out[weight_index] = _want(ctx, weight_index, dw)
    out[bias_index] = _want(ctx, bias_index, db)
    if residual_index is not None and len(grads) > 3:
        out[residual_index] = _want(ctx, residual_index, grads[3])
    return tuple(out)


def _save_fused(ctx, training, weight, activation, negative_slope, tensors):
    """What the fused channel norms' backward needs: (x, w, bias, residual, stat, stat)."""
    ctx.training, ctx.has_weight = training, weight is not None
    ctx.epilogue = (activation, negative_slope)
    ctx.save_for_backward(*tensors)


def _fused_backward(ctx, dy, name, backward, indices):
    """Run `backward(dy, x, stat0, stat1, w, bias=, residual=, activation=, negative_slope=)`
    and map its gradients onto the forward's arguments (weight, bias, residual positions)."""
    _no_double_backward(name)
    x, w, bias, residual, s0, s1 = ctx.saved_tensors
    activation, slope = ctx.epilogue
    if ctx.training is not None:  # the saved statistics record the forward's mode
        s1 = tag_mode(s1, ctx.training)
    grads = backward(_grad_like(dy, x), x, s0, s1, w, bias=bias, residual=residual, activation=activation,
                     negative_slope=slope)
    return _channel_backward(ctx, grads, *indices)


class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked,
                residual, activation, negative_slope, nan_policy):
        w = _ones_for_bias(weight, bias, (x.shape[1],), x)
        y, save_mean, save_rstd = F.batch_norm_forward(
            x, running_mean, running_var, w, bias, training, momentum, eps, num_batches_tracked=num_batches_tracked,
            residual=residual, activation=activation, negative_slope=negative_slope, nan_policy=nan_policy)
        _save_fused(ctx, bool(training), weight, activation, negative_slope, (x, w, bias, residual, save_mean, save_rstd))
        return y

    @staticmethod
    def backward(ctx, dy):
        return _fused_backward(ctx, dy, "batch_norm", F.batch_norm_backward, (3, 4, 9))


class GroupNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps, residual, activation, negative_slope):
        w = _ones_for_bias(weight, bias, (x.shape[1],), x)
        y, mean, rstd = F.group_norm_forward(x, num_groups, w, bias, eps, residual=residual, activation=activation,
                                             negative_slope=negative_slope)
        ctx.groups = num_groups
        _save_fused(ctx, None, weight, activation, negative_slope, (x, w, bias, residual, mean, rstd))
        return y

    @staticmethod
    def backward(ctx, dy):
        def backward(dy, x, mean, rstd, w, **kw):
            return F.group_norm_backward(dy, x, mean, rstd, ctx.groups, w, **kw)

        return _fused_backward(ctx, dy, "group_norm", backward, (2, 3, 5))


class InstanceNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, residual, activation,
                negative_slope, nan_policy):
        w = _ones_for_bias(weight, bias, (x.shape[1],), x)
        y, save_mean, save_rstd = F.instance_norm_forward(
            x, running_mean, running_var, w, bias, use_input_stats, momentum, eps, residual=residual,
            activation=activation, negative_slope=negative_slope, nan_policy=nan_policy)
        _save_fused(ctx, bool(use_input_stats), weight, activation, negative_slope,
                    (x, w, bias, residual, save_mean, save_rstd))
        return y

    @staticmethod
    def backward(ctx, dy):
        return _fused_backward(ctx, dy, "instance_norm", F.instance_norm_backward, (3, 4, 8))


class BatchInstanceNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rho, weight, bias, running_mean, running_var, training, momentum, eps, num_batches_tracked,
                nan_policy):
        w = _ones_for_bias(weight, bias, (x.shape[1],), x)
        y, save_mean, save_rstd = F.batch_instance_norm_forward(x, rho, w, bias, running_mean, running_var, training,
                                                                momentum, eps, num_batches_tracked=num_batches_tracked,
                                                                nan_policy=nan_policy)
        ctx.training, ctx.has_weight = bool(training), weight is not None
        ctx.save_for_backward(x, rho, w, save_mean, save_rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        _no_double_backward("batch_instance_norm")
        x, rho, w, save_mean, save_rstd = ctx.saved_tensors
        dx, drho, dw, db = F.batch_instance_norm_backward(_grad_like(dy, x), x, save_mean,
                                                          tag_mode(save_rstd, ctx.training), rho, w)
        return (_want(ctx, 0, dx), _want(ctx, 1, drho), _want(ctx, 2, dw) if ctx.has_weight else None,
                _want(ctx, 3, db)) + (None,) * 7


class SwitchableNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean_weight, var_weight, weight, bias, running_mean, running_var, training, momentum, eps,
                num_batches_tracked, nan_policy):
        w = _ones_for_bias(weight, bias, (x.shape[1],), x)
        y, save_mean, save_var, save_rstd = F.switchable_norm_forward(
            x, mean_weight, var_weight, w, bias, running_mean, running_var, training, momentum, eps,
            num_batches_tracked=num_batches_tracked, nan_policy=nan_policy)
        ctx.training, ctx.has_weight = bool(training), weight is not None
        ctx.save_for_backward(x, mean_weight, var_weight, w, save_mean, save_var, save_rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        _no_double_backward("switchable_norm")
        x, mw, vw, w, save_mean, save_var, save_rstd = ctx.saved_tensors
        dx, dmw, dvw, dw, db = F.switchable_norm_backward(_grad_like(dy, x), x, save_mean, save_var,
                                                          tag_mode(save_rstd, ctx.training), mw, vw, w)
        return (_want(ctx, 0, dx), _want(ctx, 1, dmw), _want(ctx, 2, dvw), _want(ctx, 3, dw) if ctx.has_weight else None,
                _want(ctx, 4, db)) + (None,) * 7


class WeightNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, g, dim):
        w, norm = F.weight_norm_forward(v, g, dim)
        ctx.dim = dim
        ctx.save_for_backward(v, g, norm)
        return w

    @staticmethod
    def backward(ctx, dw):
        _no_double_backward("weight_norm")
        v, g, norm = ctx.saved_tensors
        dv, dg = F.weight_norm_backward(_grad_like(dw, v), v, norm, g, ctx.dim)
        return _want(ctx, 0, dv), _want(ctx, 1, dg), None


# ---- torch.nn.functional-style entry points -------------------------------------------

def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.layer_norm`` on normgen's kernels, differentiable."""
    return _apply(LayerNormFunction, input, normalized_shape, weight, bias, eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """``torch.nn.functional.rms_norm`` (eps None: the dtype's machine epsilon)."""
    return _apply(RMSNormFunction, input, normalized_shape, weight, eps)


def add_layer_norm(input, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Pre-norm block ``s = input + residual; y = layer_norm(s)`` in one pass: ``(y, s)``."""
    return _apply(AddLayerNormFunction, input, residual, normalized_shape, weight, bias, eps)


def add_rms_norm(input, residual, normalized_shape, weight=None, eps=None):
    """Pre-norm block ``s = input + residual; y = rms_norm(s)`` in one pass: ``(y, s)``."""
    return _apply(AddRMSNormFunction, input, residual, normalized_shape, weight, eps)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               num_batches_tracked=None, residual=None, activation=None, negative_slope=0.01, nan_policy="propagate"):
    """``torch.nn.functional.batch_norm`` (running statistics float32, updated in place when
    training), with the fused epilogue ``act(bn(x) + residual)`` as keyword options;
    ``momentum=None`` with ``num_batches_tracked`` is the cumulative average;
    ``nan_policy="skip"`` keeps the running statistics of channels whose batch statistics
    are NaN/Inf (torch's behaviour is "propagate")."""
    return _apply(BatchNormFunction, input, running_mean, running_var, weight, bias, training, momentum, eps,
                  num_batches_tracked, residual, activation, negative_slope, nan_policy)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, residual=None, activation=None,
               negative_slope=0.01):
    """``torch.nn.functional.group_norm``, with the fused epilogue as keyword options."""
    return _apply(GroupNormFunction, input, num_groups, weight, bias, eps, residual, activation, negative_slope)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5, *, residual=None, activation=None, negative_slope=0.01,
                  nan_policy="propagate"):
    """``torch.nn.functional.instance_norm``, with the fused epilogue and ``nan_policy`` (as
    :func:`batch_norm`'s) as keyword options."""
    return _apply(InstanceNormFunction, input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                  residual, activation, negative_slope, nan_policy)


def batch_instance_norm(input, rho, weight=None, bias=None, running_mean=None, running_var=None, training=False,
                        momentum=0.1, eps=1e-5, *, num_batches_tracked=None, nan_policy="propagate"):
    """Batch-Instance Norm (see :func:`normgen.batch_instance_norm_forward`)."""
    return _apply(BatchInstanceNormFunction, input, rho, weight, bias, running_mean, running_var, training, momentum,
                  eps, num_batches_tracked, nan_policy)


def switchable_norm(input, mean_weight, var_weight, weight=None, bias=None, running_mean=None, running_var=None,
                    training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None, nan_policy="propagate"):
    """Switchable Norm (see :func:`normgen.switchable_norm_forward`)."""
    return _apply(SwitchableNormFunction, input, mean_weight, var_weight, weight, bias, running_mean, running_var,
                  training, momentum, eps, num_batches_tracked, nan_policy)


def weight_norm(v, g, dim=0):
    """``torch._weight_norm(v, g, dim)``: ``g * v / ||v||``, differentiable in v and g."""
    return _apply(WeightNormFunction, v, g, dim)


def fold_batch_norm(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    """Fold an inference BatchNorm into the preceding conv/linear weights: ``(w', b')``
    (see :func:`normgen.fold_batch_norm`); not differentiable."""
    with torch.no_grad():
        return F.fold_batch_norm(weight.detach(), None if bias is None else bias.detach(), running_mean, running_var,
                                 None if gamma is None else gamma.detach(), None if beta is None else beta.detach(),
                                 eps)

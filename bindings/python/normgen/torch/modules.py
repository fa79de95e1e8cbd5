"""``torch.nn`` normalization modules running on normgen's kernels.

Each torch counterpart is subclassed, so constructor arguments, parameters, buffers,
``state_dict`` keys, ``train()``/``eval()`` behaviour and ``repr`` are torch's own; only
``forward`` changes. Inputs normgen has no kernels for (float64, devices other than CPU
and CUDA) run torch's forward, so a converted model still accepts everything the
original did. Modules without a torch counterpart (Batch-Instance Norm, Switchable Norm,
the fused variants) follow torch's conventions.

Modules with running statistics have one addition, the attribute ``nan_policy``
(default "propagate", torch's behaviour): set it to "skip" (or pass ``nan_policy=`` to
:func:`normgen.torch.convert_modules`) and a training batch whose statistics are NaN/Inf
in a channel leaves that channel's running statistics as they were.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as NF

__all__ = [
    "LayerNorm", "RMSNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "GroupNorm", "BatchInstanceNorm2d", "SwitchableNorm2d", "BatchNormAct1d", "BatchNormAct2d",
    "BatchNormAct3d", "GroupNormAct", "AddLayerNorm", "AddRMSNorm", "ACTIVATIONS",
]

ACTIVATIONS = (None, "relu", "leaky_relu", "silu", "gelu", "gelu_tanh")


def runs_on_normgen(x):
    """Whether normgen has kernels for tensor x (else the module runs torch's forward)."""
    return x.dtype in NF.SUPPORTED_DTYPES and x.device.type in ("cpu", "cuda")


class _Float32Stats:
    """Running statistics as the kernels want them (float32), written back after the call
    when the module's buffers have another dtype (e.g. after ``model.half()``)."""

    def __init__(self, *bufs):
        self.bufs = bufs
        self.views = tuple(None if b is None or b.dtype == torch.float32 else b.float() for b in bufs)

    def __enter__(self):
        return tuple(b if v is None else v for b, v in zip(self.bufs, self.views))

    def __exit__(self, *exc):
        if exc[0] is None:
            for b, v in zip(self.bufs, self.views):
                if v is not None:
                    b.copy_(v)
        return False


# ---- row norms ----------------------------------------------------------------------------

class LayerNorm(nn.LayerNorm):
    """``torch.nn.LayerNorm`` on normgen's kernels."""

    def forward(self, input):
        if not runs_on_normgen(input):
            return super().forward(input)
        return NF.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """``torch.nn.RMSNorm`` on normgen's kernels (eps None: the dtype's machine epsilon)."""

    def forward(self, x):
        if not runs_on_normgen(x):
            return super().forward(x)
        return NF.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class AddLayerNorm(nn.LayerNorm):
    """Pre-norm residual block: ``forward(x, residual) -> (layer_norm(x + residual), x + residual)``
    in one pass over the data (torch.nn.LayerNorm's arguments and state)."""

    def forward(self, input, residual):
        return NF.add_layer_norm(input, residual, self.normalized_shape, self.weight, self.bias, self.eps)


class AddRMSNorm(nn.RMSNorm):
    """Pre-norm residual block: ``forward(x, residual) -> (rms_norm(x + residual), x + residual)``."""

    def forward(self, x, residual):
        return NF.add_rms_norm(x, residual, self.normalized_shape, self.weight, self.eps)


# ---- BatchNorm ----------------------------------------------------------------------------

def _bn_call(m, input, residual=None, activation=None, negative_slope=0.01):
    """torch's _BatchNorm.forward, with normgen's kernel (which also counts batches)."""
    use_batch = m.training or (m.running_mean is None and m.running_var is None)
    track = not m.training or m.track_running_stats
    rm = m.running_mean if track else None
    rv = m.running_var if track else None
    nbt = m.num_batches_tracked if (m.training and m.track_running_stats) else None
    with _Float32Stats(rm, rv) as (rm32, rv32):
        return NF.batch_norm(input, rm32, rv32, m.weight, m.bias, use_batch, m.momentum, m.eps,
                             num_batches_tracked=nbt, residual=residual, activation=activation,
                             negative_slope=negative_slope, nan_policy=m.nan_policy)


class _NormgenBatchNorm:
    nan_policy = "propagate"  # see the module docstring

    def forward(self, input):
        self._check_input_dim(input)
        if not runs_on_normgen(input):
            return super().forward(input)
        return _bn_call(self, input)


class BatchNorm1d(_NormgenBatchNorm, nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on normgen's kernels."""


class BatchNorm2d(_NormgenBatchNorm, nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on normgen's kernels (NCHW and channels-last)."""


class BatchNorm3d(_NormgenBatchNorm, nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` on normgen's kernels."""


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS[1:]} or None, got {activation!r}")


class _BatchNormAct:
    """BatchNorm with the fused epilogue ``act(bn(x) + residual)`` in its output pass."""

    nan_policy = "propagate"

    def __init__(self, num_features, *args, activation="relu", negative_slope=0.01, **kwargs):
        super().__init__(num_features, *args, **kwargs)
        _check_activation(activation)
        self.activation, self.negative_slope = activation, negative_slope

    def forward(self, input, residual=None):
        self._check_input_dim(input)
        return _bn_call(self, input, residual, self.activation, self.negative_slope)

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r}"


class BatchNormAct1d(_BatchNormAct, nn.BatchNorm1d):
    """``BatchNorm1d`` + residual + activation in one pass: ``forward(x, residual=None)``."""


class BatchNormAct2d(_BatchNormAct, nn.BatchNorm2d):
    """``BatchNorm2d`` + residual + activation in one pass: ``forward(x, residual=None)``."""


class BatchNormAct3d(_BatchNormAct, nn.BatchNorm3d):
    """``BatchNorm3d`` + residual + activation in one pass: ``forward(x, residual=None)``."""


# ---- InstanceNorm, GroupNorm ----------------------------------------------------------------

class _NormgenInstanceNorm:
    nan_policy = "propagate"

    def _apply_instance_norm(self, input):
        if not runs_on_normgen(input):
            return super()._apply_instance_norm(input)
        use_input_stats = self.training or not self.track_running_stats
        with _Float32Stats(self.running_mean, self.running_var) as (rm, rv):
            return NF.instance_norm(input, rm, rv, self.weight, self.bias, use_input_stats,
                                    self.momentum if self.momentum is not None else 0.0, self.eps,
                                    nan_policy=self.nan_policy)


class InstanceNorm1d(_NormgenInstanceNorm, nn.InstanceNorm1d):
    """``torch.nn.InstanceNorm1d`` on normgen's kernels."""


class InstanceNorm2d(_NormgenInstanceNorm, nn.InstanceNorm2d):
    """``torch.nn.InstanceNorm2d`` on normgen's kernels."""


class InstanceNorm3d(_NormgenInstanceNorm, nn.InstanceNorm3d):
    """``torch.nn.InstanceNorm3d`` on normgen's kernels."""


class GroupNorm(nn.GroupNorm):
    """``torch.nn.GroupNorm`` on normgen's kernels."""

    def forward(self, input):
        if not runs_on_normgen(input):
            return super().forward(input)
        return NF.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class GroupNormAct(nn.GroupNorm):
    """``GroupNorm`` + residual + activation in one pass: ``forward(x, residual=None)``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *,
                 activation="relu", negative_slope=0.01):
        super().__init__(num_groups, num_channels, eps, affine, device, dtype)
        _check_activation(activation)
        self.activation, self.negative_slope = activation, negative_slope

    def forward(self, input, residual=None):
        return NF.group_norm(input, self.num_groups, self.weight, self.bias, self.eps, residual=residual,
                             activation=self.activation, negative_slope=self.negative_slope)

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r}"


# ---- Batch-Instance Norm, Switchable Norm -----------------------------------------------------

class _MixedNorm2d(nn.Module):
    """Shared state of the mixtures of BN with per-instance statistics: torch's BatchNorm
    arguments, parameters and buffers (weight, bias, running_mean, running_var,
    num_batches_tracked)."""

    nan_policy = "propagate"  # see the module docstring

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, device=device))
            self.register_buffer("running_var", torch.ones(num_features, device=device))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _check_input_dim(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")

    def _bn_state(self):
        use_batch = self.training or not self.track_running_stats
        nbt = self.num_batches_tracked if (self.training and self.track_running_stats) else None
        return use_batch, nbt

    def extra_repr(self):
        return ("{num_features}, eps={eps}, momentum={momentum}, affine={affine}, "
                "track_running_stats={track_running_stats}".format(**self.__dict__))


class BatchInstanceNorm2d(_MixedNorm2d):
    """Batch-Instance Normalization (Nam & Kim, 2018): a learned per-channel gate ``rho``
    (initialized to 1, clamped to [0, 1] in the forward) mixes the BatchNorm- and
    InstanceNorm-normalized input before the affine transform."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.rho = nn.Parameter(torch.ones(num_features, device=device, dtype=dtype))

    def forward(self, input):
        self._check_input_dim(input)
        use_batch, nbt = self._bn_state()
        with _Float32Stats(self.running_mean, self.running_var) as (rm, rv):
            return NF.batch_instance_norm(input, self.rho, self.weight, self.bias, rm, rv, use_batch, self.momentum,
                                          self.eps, num_batches_tracked=nbt, nan_policy=self.nan_policy)


class SwitchableNorm2d(_MixedNorm2d):
    """Switchable Normalization (Luo et al., 2018): mean and variance are softmax-weighted
    mixtures of the instance, layer and batch statistics, with learned logits
    ``mean_weight`` and ``var_weight`` (order IN, LN, BN; initialized equal)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.mean_weight = nn.Parameter(torch.ones(3, device=device, dtype=dtype))
        self.var_weight = nn.Parameter(torch.ones(3, device=device, dtype=dtype))

    def forward(self, input):
        self._check_input_dim(input)
        use_batch, nbt = self._bn_state()
        with _Float32Stats(self.running_mean, self.running_var) as (rm, rv):
            return NF.switchable_norm(input, self.mean_weight, self.var_weight, self.weight, self.bias, rm, rv,
                                      use_batch, self.momentum, self.eps, num_batches_tracked=nbt,
                                      nan_policy=self.nan_policy)

"""Synchronized BatchNorm over torch.distributed (any backend; gloo for CPU tensors).

Forward: each process computes its per-channel (count, mean, M2) with normgen's
statistics kernel into its row of one small float64 table, one ``all_reduce`` sums the
table, and every process merges the rows in rank order with Chan's formula (the same
statistics everywhere, exact for uneven batches and processes with no samples), then
normalizes with them. Backward: one ``all_reduce`` of (count, sum dy, sum dy * xhat).
The parameter gradients are each process's own, as with torch.nn.SyncBatchNorm (DDP's
gradient all-reduce combines them).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import _normgen
from .._arrays import counter_pointer, opt_spec, spec
from ..functional import _nan_policy
from .functional import _apply, _grad_like, _no_double_backward, _ones_for_bias, _want, batch_norm
from .modules import _Float32Stats, runs_on_normgen

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "sync_batch_norm"]


def _f64(shape):
    return torch.zeros(shape, dtype=torch.float64)


def _local(step, contribution):
    """Run a process-local step; on failure mark this process's contribution NaN and
    return the exception (raised after the collective)."""
    try:
        step()
        return None
    except Exception as e:  # noqa: BLE001 - re-raised after the all-reduce
        contribution.fill_(float("nan"))
        return e


def _raise_if_failed(error, counts):
    if error is not None:
        raise error
    bad = torch.nonzero(torch.isnan(counts)).flatten().tolist()
    if bad:
        who = f"process {bad[0]}" if counts.numel() > 1 else "another process"
        raise RuntimeError(f"synchronized BatchNorm failed on {who} (its own error says why)")


class SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, num_batches_tracked, process_group,
                nan_policy):
        if x.device.type != "cpu":
            raise TypeError(f"normgen SyncBatchNorm runs on CPU tensors (gloo); x is on {x.device}")
        if x.dim() < 2:
            raise ValueError(f"Expected x of shape (N, C) or (N, C, *spatial), but got {list(x.shape)}")
        C = x.shape[1]
        w = _ones_for_bias(weight, bias, (C,), x)
        code = _nan_policy(nan_policy)  # (checked before the collective: every process passes the same)
        world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        table = _f64((world, 1 + 2 * C))
        row = table[rank]
        # A process that fails here still joins the all-reduce (with a NaN count), so
        # the others raise too instead of waiting forever.
        error = _local(lambda: _normgen.sync_batch_norm_moments(spec(x, "x"), row.data_ptr(), row.numel()), row)
        dist.all_reduce(table, op=dist.ReduceOp.SUM, group=process_group)
        _raise_if_failed(error, table[:, 0])
        y = torch.empty_like(x)
        save_mean = torch.empty(C, dtype=torch.float32)
        save_rstd = torch.empty(C, dtype=torch.float32)
        _normgen.sync_batch_norm_forward(spec(x, "x"), table.data_ptr(), table.numel(), world,
                                         opt_spec(running_mean, "running_mean"), opt_spec(running_var, "running_var"),
                                         opt_spec(w, "weight"), opt_spec(bias, "bias"),
                                         None if momentum is None else float(momentum), float(eps), spec(y, "y"),
                                         spec(save_mean, "save_mean"), spec(save_rstd, "save_rstd"),
                                         counter_pointer(num_batches_tracked, "num_batches_tracked"),
                                         code)
        ctx.process_group, ctx.has_weight = process_group, weight is not None
        ctx.save_for_backward(x, w, save_mean, save_rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        _no_double_backward("sync_batch_norm")
        x, w, save_mean, save_rstd = ctx.saved_tensors
        dy = _grad_like(dy, x)
        C = x.shape[1]
        sums = _f64(1 + 2 * C)
        dy_scaled = torch.empty_like(x)
        dw = None if w is None else torch.empty(C, dtype=x.dtype)
        db = None if w is None else torch.empty(C, dtype=x.dtype)
        error = _local(lambda: _normgen.sync_batch_norm_grad_sums(
            spec(dy, "dy"), spec(x, "x"), spec(save_mean, "save_mean"), spec(save_rstd, "save_rstd"),
            opt_spec(w, "weight"), sums.data_ptr(), sums.numel(), spec(dy_scaled, "dy_scaled"),
            opt_spec(dw, "dweight"), opt_spec(db, "dbias")), sums)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.process_group)
        _raise_if_failed(error, sums[:1])
        dx = torch.empty_like(x)
        _normgen.sync_batch_norm_backward(spec(x, "x"), spec(dy_scaled, "dy_scaled"), spec(save_mean, "save_mean"),
                                          spec(save_rstd, "save_rstd"), opt_spec(w, "weight"), sums.data_ptr(),
                                          sums.numel(), spec(dx, "dx"))
        return (_want(ctx, 0, dx), _want(ctx, 1, dw) if ctx.has_weight else None, _want(ctx, 2, db)) + (None,) * 7


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1, eps=1e-5, *,
                    num_batches_tracked=None, process_group=None, nan_policy="propagate"):
    """BatchNorm training over the batch of every process in ``process_group`` (default:
    the world). Running statistics (float32, optional) are updated in place with the
    whole batch's statistics, identically on every process (``nan_policy`` as
    :func:`normgen.torch.functional.batch_norm`'s)."""
    return _apply(SyncBatchNormFunction, input, weight, bias, running_mean, running_var, eps, momentum,
                  num_batches_tracked, process_group, nan_policy)


class SyncBatchNorm(nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` on normgen's kernels, for CPU tensors over any
    torch.distributed backend (gloo). Outside training, or without an initialized
    process group of more than one process, it is BatchNorm. ``nan_policy`` (attribute,
    default "propagate"): see :class:`normgen.torch.BatchNorm2d`."""

    nan_policy = "propagate"

    def forward(self, input):
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        if not runs_on_normgen(input) or input.device.type != "cpu":
            return super().forward(input)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        rm = self.running_mean if track else None
        rv = self.running_var if track else None
        nbt = self.num_batches_tracked if (self.training and self.track_running_stats) else None
        pg = self.process_group if self.process_group is not None else (
            dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        sync = use_batch and self.training and pg is not None and dist.get_world_size(pg) > 1
        with _Float32Stats(rm, rv) as (rm32, rv32):
            if not sync:
                return batch_norm(input, rm32, rv32, self.weight, self.bias, use_batch, self.momentum, self.eps,
                                  num_batches_tracked=nbt, nan_policy=self.nan_policy)
            return sync_batch_norm(input, rm32, rv32, self.weight, self.bias, self.momentum, self.eps,
                                   num_batches_tracked=nbt, process_group=pg, nan_policy=self.nan_policy)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm*d in ``module`` by a normgen SyncBatchNorm sharing its
        parameters and buffers (torch.nn.SyncBatchNorm.convert_sync_batchnorm's rules)."""
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

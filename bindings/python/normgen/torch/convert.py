"""Put normgen's kernels under an existing torch model: ``convert_modules`` and
``weight_norm``."""
from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm as _TorchWeightNorm

from ..functional import _nan_policy
from . import functional as NF
from . import modules as M
from .sync_batch_norm import SyncBatchNorm

__all__ = ["convert_modules", "weight_norm", "WeightNorm", "MODULE_MAP"]

# torch module type -> normgen's subclass of it (exact types only: a user's own
# subclass of a torch norm keeps its forward).
MODULE_MAP = {
    nn.LayerNorm: M.LayerNorm,
    nn.RMSNorm: M.RMSNorm,
    nn.BatchNorm1d: M.BatchNorm1d,
    nn.BatchNorm2d: M.BatchNorm2d,
    nn.BatchNorm3d: M.BatchNorm3d,
    nn.InstanceNorm1d: M.InstanceNorm1d,
    nn.InstanceNorm2d: M.InstanceNorm2d,
    nn.InstanceNorm3d: M.InstanceNorm3d,
    nn.GroupNorm: M.GroupNorm,
    nn.SyncBatchNorm: SyncBatchNorm,
}


class WeightNorm(_TorchWeightNorm):
    """torch's weight-norm parametrization (same ``original0`` = g, ``original1`` = v)
    computing ``g * v / ||v||`` with normgen's kernels."""

    def forward(self, weight_g, weight_v):
        if not M.runs_on_normgen(weight_v):
            return super().forward(weight_g, weight_v)
        # torch's dim -1 (from dim=None) means the norm over the whole tensor.
        return NF.weight_norm(weight_v, weight_g, None if self.dim == -1 else self.dim)


def weight_norm(module, name="weight", dim=0):
    """``torch.nn.utils.parametrizations.weight_norm`` on normgen's kernels: the same
    parametrization, state_dict keys and ``dim`` rules."""
    parametrize.register_parametrization(module, name, WeightNorm(dim), unsafe=True)
    return module


def convert_modules(model, *, nan_policy=None):
    """Swap torch's normalization modules in ``model`` (the model itself included) for
    normgen's, in place, and return the model. ``nan_policy`` ("propagate" or "skip"),
    when given, is set on every normgen module in the model that keeps running
    statistics (see :mod:`normgen.torch.modules`).

    Each module keeps its identity, parameters, buffers, hooks and training mode — only
    its class changes to normgen's subclass of the same torch class — so optimizers and
    state dicts made before the conversion keep working and the state is exactly the
    same. Weight-norm parametrizations (``torch.nn.utils.parametrizations.weight_norm``)
    switch to normgen's kernel the same way.
    """
    if nan_policy is not None:
        _nan_policy(nan_policy)  # (a clear error before anything changes)
    for m in model.modules():
        target = MODULE_MAP.get(type(m))
        if target is not None:
            m.__class__ = target
        if parametrize.is_parametrized(m):
            for plist in m.parametrizations.values():
                for p in plist:
                    if type(p) is _TorchWeightNorm:
                        p.__class__ = WeightNorm
        if nan_policy is not None and hasattr(type(m), "nan_policy"):
            m.nan_policy = nan_policy
    return model

"""normgen for PyTorch models: autograd functions, ``torch.nn`` modules, synchronized
BatchNorm over torch.distributed, and :func:`convert_modules` to move a model's norm
layers onto normgen's kernels.

>>> import normgen.torch as ngt
>>> model = ngt.convert_modules(model)          # torch's norm modules -> normgen's
>>> y = ngt.functional.layer_norm(x, (1024,), w, b)   # differentiable

(``import normgen`` already runs normgen's CPU kernels on torch's OpenMP thread pool
when torch's parallel backend is the same OpenMP runtime: see ``normgen._threads``.)
"""
from . import functional
from .convert import MODULE_MAP, WeightNorm, convert_modules, weight_norm
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules_all
from .sync_batch_norm import SyncBatchNorm, SyncBatchNormFunction, sync_batch_norm

__all__ = list(_modules_all) + ["functional", "convert_modules", "weight_norm", "WeightNorm", "MODULE_MAP",
                                "SyncBatchNorm", "SyncBatchNormFunction", "sync_batch_norm"]

"""normgen: ahead-of-time generated normalization kernels (Halide), torch-compatible.

>>> import normgen as ng
>>> y = ng.layer_norm(x, (1024,), weight, bias)
"""
from ._normgen import (cuda_available, kernels, last_kernel, num_threads, openmp_runtime, parallel_backend,
                       set_num_threads, set_parallel_backend)
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .scalers import MinMax, ZScore
from ._threads import use_torch_threads as _use_torch_threads

_use_torch_threads()  # torch's OpenMP pool when the process shares it (see _threads)

__all__ = list(_functional_all) + ["MinMax", "ZScore", "cuda_available", "kernels", "last_kernel", "num_threads",
                                   "openmp_runtime", "parallel_backend", "set_num_threads", "set_parallel_backend"]
__version__ = "0.1.0"

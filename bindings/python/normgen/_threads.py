"""normgen runs its CPU kernels on torch's own thread pool when it can.

torch's CPU ops run on its OpenMP runtime (libgomp), whose workers spin for a while after
every parallel region. A normgen kernel called between torch ops on Halide's separate
pool then competes with those spinning workers: with as many threads as cores, half of
its threads wait (measured at 2 threads, back to back with torch calls: a GroupNorm
8x256x28x28 training step took 3.2 ms on Halide's pool, 2.1 ms on torch's; the op bench's
GroupNorm/BatchNorm 8x256x28x28 and 64x512x7x7 cases, 5 ms apart: 0.88x torch on
Halide's pool, 1.61x on torch's). When torch is installed (normgen's array plumbing
imports it), torch's parallel backend is OpenMP and normgen's "openmp" backend uses the
same OpenMP runtime (one libgomp in the process), ``import normgen`` selects it; the
thread count then follows torch.set_num_threads until normgen.set_num_threads is called.
``normgen.set_parallel_backend("halide")`` goes back.
"""
from __future__ import annotations

import os

from . import _normgen
from ._arrays import torch


def _openmp_runtimes_loaded():
    """Shared objects of OpenMP runtimes mapped into this process (libgomp, libomp, libiomp5)."""
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()  # address perms offset dev inode [path]
                if len(fields) >= 6 and os.path.basename(fields[5]).startswith(("libgomp", "libomp", "libiomp")):
                    found.add(os.path.realpath(fields[5]))
    except OSError:
        return None
    return found


def shares_torch_openmp() -> bool:
    """Whether normgen's "openmp" backend would run on the OpenMP runtime torch's ops use."""
    ours = _normgen.openmp_runtime()
    if torch is None or not ours or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    return _openmp_runtimes_loaded() == {os.path.realpath(ours)}


def use_torch_threads() -> bool:
    """Select the "openmp" backend when it shares torch's pool; returns whether it did."""
    if _normgen.parallel_backend() == "halide" and shares_torch_openmp():
        _normgen.set_parallel_backend("openmp")
        return True
    return _normgen.parallel_backend() == "openmp"

"""Array plumbing: numpy arrays and torch tensors (CPU or CUDA) in, the same container out.

A tensor crosses into the C++ runtime as ``(data pointer, dtype, shape, strides,
device)`` with strides in elements and device -1 (CPU) or a CUDA device index (the
pointer is then device memory, used in place); the runtime validates everything else
(shapes, dtypes, devices, aliasing) and raises with the argument's name.
"""
from __future__ import annotations

import numpy as np

try:  # torch is optional at import time: numpy-only users need not install it
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

_NP_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
_TORCH_DTYPES = {}
if torch is not None:
    _TORCH_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


_TENSOR = torch.Tensor if torch is not None else ()  # (isinstance(a, ()) is False)


def is_torch(a) -> bool:
    return isinstance(a, _TENSOR)


def spec(a, name: str):
    """The runtime's view of array ``a``; TypeError naming ``name`` if unsupported.

    (Called once per array argument of every op: the CPU tensor path touches only the
    cheapest attributes, as ``a.device.type`` alone cost a third of a microsecond.)"""
    if is_torch(a):
        dt = _TORCH_DTYPES.get(a.dtype)
        if a.is_cpu:
            device = -1
        elif a.is_cuda:
            device = a.get_device()
        else:
            raise TypeError(f"{name} is on device {a.device}; normgen runs on the CPU and on CUDA devices")
        if dt is None:
            raise TypeError(f"Expected {name} of dtype float32, float16 or bfloat16, but got {a.dtype}")
        return (a.data_ptr(), dt, a.shape, a.stride(), device)
    if isinstance(a, np.ndarray):
        dt = _NP_DTYPES.get(a.dtype)
        if dt is None:
            raise TypeError(f"Expected {name} of dtype float32 or float16 (bfloat16 via torch), but got {a.dtype}")
        item = a.itemsize
        if any(s % item for s in a.strides):
            raise ValueError(f"{name} has strides {a.strides} that are not a multiple of its item size {item}")
        return (a.__array_interface__["data"][0], dt, a.shape, tuple(s // item for s in a.strides), -1)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


def opt_spec(a, name: str):
    return None if a is None else spec(a, name)


def empty_like(x, shape=None):
    """A new output in x's container and dtype; with x's shape, also x's memory format."""
    if is_torch(x):
        if shape is None:
            return torch.empty_like(x)  # preserve_format: channels-last stays channels-last
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    if shape is None:
        return np.empty_like(x)
    return np.empty(shape, dtype=x.dtype)


def empty_stats(x, shape):
    """A float32 statistics output in x's container."""
    if is_torch(x):
        return torch.empty(shape, dtype=torch.float32, device=x.device)
    return np.empty(shape, dtype=np.float32)


def shape_tuple(normalized_shape, name: str = "normalized_shape"):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    try:
        out = tuple(int(d) for d in normalized_shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple/list of ints, got {type(normalized_shape).__name__}")
    return out


def check_same_container(x, name: str, other):
    """Parameters and gradients must be the same kind of array as x."""
    if other is not None and is_torch(other) != is_torch(x):
        kind = "torch tensor" if is_torch(x) else "numpy array"
        raise TypeError(f"{name} must be a {kind} like x, got {type(other).__name__}")


def counter_pointer(a, name: str):
    """Address of a one-element int64 counter (numpy array or torch tensor), or None."""
    if a is None:
        return None
    if is_torch(a):
        if a.dtype != torch.int64 or a.numel() != 1 or a.device.type != "cpu":
            raise TypeError(f"{name} must be a one-element int64 CPU tensor, got {a.dtype} of shape {tuple(a.shape)}")
        return a.data_ptr()
    if isinstance(a, np.ndarray):
        if a.dtype != np.int64 or a.size != 1:
            raise TypeError(f"{name} must be a one-element int64 array, got {a.dtype} of shape {a.shape}")
        if not a.flags.writeable:
            raise ValueError(f"{name} must be writeable (it is incremented in place)")
        return a.__array_interface__["data"][0]
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


class SavedStats(np.ndarray):
    """A float32 statistics array that remembers which forward mode produced it."""

    normgen_training = True


def tag_mode(stats, training: bool):
    """Record on a saved statistics array whether the forward used batch statistics."""
    if is_torch(stats):
        stats.normgen_training = training
        return stats
    tagged = stats.view(SavedStats)
    tagged.normgen_training = training
    return tagged


def saved_mode(stats) -> bool:
    return bool(getattr(stats, "normgen_training", True))

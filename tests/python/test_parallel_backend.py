"""The parallel backends from Python: importing normgen puts the kernels on torch's OpenMP
pool when both use the same OpenMP runtime, the results are bit-identical to Halide's
pool, the thread count follows torch.set_num_threads, and bad values are errors."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import normgen as ng
import normgen.torch as ngt
from normgen import _threads

SHARED = _threads.shares_torch_openmp()


@pytest.fixture
def restore_backend():
    before, threads = ng.parallel_backend(), torch.get_num_threads()
    yield
    ng.set_parallel_backend(before)
    ng.set_num_threads(0)
    torch.set_num_threads(threads)


def test_bad_backend_is_an_error_naming_it(restore_backend):
    with pytest.raises(ValueError, match="backend"):
        ng.set_parallel_backend("tbb")
    with pytest.raises(TypeError):
        ng.set_parallel_backend(1)
    assert ng.parallel_backend() in ("halide", "openmp")


def test_openmp_runtime_is_one_of_the_loaded_ones():
    path = ng.openmp_runtime()
    if not path:
        pytest.skip("this normgen build has no OpenMP")
    assert os.path.realpath(path) in _threads._openmp_runtimes_loaded()


@pytest.mark.skipif(not SHARED, reason="torch's parallel backend is not normgen's OpenMP runtime (or no OpenMP build)")
def test_import_normgen_selects_torchs_pool():
    """A fresh process: `import normgen` alone (torch installed) picks torch's pool."""
    out = subprocess.run([sys.executable, "-c", "import normgen; print(normgen.parallel_backend())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "openmp"


@pytest.mark.skipif(not SHARED, reason="torch's parallel backend is not normgen's OpenMP runtime (or no OpenMP build)")
def test_use_torch_threads_selects_torchs_pool(restore_backend):
    ng.set_parallel_backend("halide")
    assert _threads.use_torch_threads()
    assert ng.parallel_backend() == "openmp"
    # The thread count is torch's until normgen's own is chosen.
    ng.set_num_threads(0)
    torch.set_num_threads(1)
    assert ng.num_threads() == 1
    torch.set_num_threads(2)
    assert ng.num_threads() == 2
    ng.set_num_threads(3)
    torch.set_num_threads(1)
    assert ng.num_threads() == 3


@pytest.mark.skipif(not ng.openmp_runtime(), reason="this normgen build has no OpenMP")
@pytest.mark.parametrize("make, shape, fmt", [
    (lambda: nn.GroupNorm(8, 64), (1, 64, 14, 14), torch.contiguous_format),
    (lambda: nn.GroupNorm(8, 64), (4, 64, 14, 14), torch.contiguous_format),
    (lambda: nn.BatchNorm2d(32), (8, 32, 9, 9), torch.channels_last),
    (lambda: nn.BatchNorm1d(48), (300, 48), torch.contiguous_format),
    (lambda: nn.LayerNorm(256), (64, 256), torch.contiguous_format),
], ids=["gn_n1", "gn_n4", "bn2d_nhwc", "bn1d", "ln"])
def test_training_step_bit_identical_on_both_pools(restore_backend, make, shape, fmt):
    torch.manual_seed(0)
    model = ngt.convert_modules(make())
    x = (torch.randn(shape) * 3 + 5).contiguous(memory_format=fmt)
    dy = torch.randn(shape).contiguous(memory_format=fmt)

    def step(backend):
        ng.set_parallel_backend(backend)
        m = ngt.convert_modules(make())
        m.load_state_dict(model.state_dict())
        xr = x.clone().requires_grad_(True)
        y = m(xr)
        y.backward(dy)
        return [y.detach(), xr.grad] + [p.grad for p in m.parameters()] + [b.clone() for b in m.buffers()]

    ng.set_num_threads(2)
    want = step("halide")
    got = step("openmp")
    for a, b in zip(want, got):
        assert torch.equal(a, b)

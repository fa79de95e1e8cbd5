"""The main job's showcase: the generated kernels at work next to PyTorch.

    python -m normgen.demo [--threads N] [--repeats R]

For a few shapes, runs LayerNorm, RMSNorm, BatchNorm (training) and GroupNorm forward
and backward with normgen and with torch (eager, float32; NCHW and channels-last), and
prints the largest difference from a float64 reference for both and the median time
of each (side by side, same process).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
import torch.nn.functional as F

import normgen as ng

SHAPES = [(8192, 1024), (2048, 4096), (32768, 256), (512, 12288)]


def _median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cases(m, n):
    x = torch.randn(m, n) * 3 + 100
    w, b = 1 + 0.1 * torch.randn(n), 0.1 * torch.randn(n)
    dy = torch.randn(m, n)
    y, mean, rstd = ng.layer_norm_forward(x, (n,), w, b)
    yr, rrstd = ng.rms_norm_forward(x, (n,), w, 1e-6)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    ln_out = F.layer_norm(xg, (n,), wg, bg)
    rms_out = F.rms_norm(xg, (n,), wg, 1e-6)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    ref_ln = F.layer_norm(x64, (n,), w64, b64)
    ref_ln_grads = torch.autograd.grad(ref_ln, (x64, w64, b64), dy.double())
    ref_rms = F.rms_norm(x64, (n,), w64, 1e-6)
    ref_rms_grads = torch.autograd.grad(ref_rms, (x64, w64), dy.double())
    return {
        "layer_norm fwd": (lambda: ng.layer_norm_forward(x, (n,), w, b),
                           lambda: F.layer_norm(x, (n,), w, b),
                           ref_ln, ng.layer_norm(x, (n,), w, b), F.layer_norm(x, (n,), w, b)),
        "layer_norm bwd": (lambda: ng.layer_norm_backward(dy, x, mean, rstd, (n,), w),
                           lambda: torch.autograd.grad(ln_out, (xg, wg, bg), dy, retain_graph=True),
                           ref_ln_grads[0], ng.layer_norm_backward(dy, x, mean, rstd, (n,), w)[0],
                           torch.autograd.grad(ln_out, (xg, wg, bg), dy, retain_graph=True)[0]),
        "rms_norm fwd": (lambda: ng.rms_norm_forward(x, (n,), w, 1e-6),
                         lambda: F.rms_norm(x, (n,), w, 1e-6),
                         ref_rms, yr, F.rms_norm(x, (n,), w, 1e-6)),
        "rms_norm bwd": (lambda: ng.rms_norm_backward(dy, x, rrstd, (n,), w),
                         lambda: torch.autograd.grad(rms_out, (xg, wg), dy, retain_graph=True),
                         ref_rms_grads[0], ng.rms_norm_backward(dy, x, rrstd, (n,), w)[0],
                         torch.autograd.grad(rms_out, (xg, wg), dy, retain_graph=True)[0]),
    }


CHANNEL_SHAPES = [((32, 64, 56, 56), "nchw"), ((32, 64, 56, 56), "channels_last"), ((8, 256, 28, 28), "nchw")]


def _channel_cases(shape, layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(shape) * 3 + 100).contiguous(memory_format=fmt)
    dy = torch.randn(shape).contiguous(memory_format=fmt)
    c = shape[1]
    w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    ref_bn = F.batch_norm(x64, None, None, w64, b64, training=True)
    ref_bn_dx = torch.autograd.grad(ref_bn, x64, dy.double())[0]
    ref_gn = F.group_norm(x64, 32, w64, b64)
    ref_gn_dx = torch.autograd.grad(ref_gn, x64, dy.double())[0]
    _, sm, sr = ng.batch_norm_forward(x, None, None, w, b, training=True)
    _, gm, gr = ng.group_norm_forward(x, 32, w, b)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    bn_out = F.batch_norm(xg, None, None, wg, bg, training=True)
    gn_out = F.group_norm(xg, 32, wg, bg)
    return {
        "batch_norm train fwd": (lambda: ng.batch_norm_forward(x, None, None, w, b, training=True),
                                 lambda: F.batch_norm(x, None, None, w, b, training=True), ref_bn,
                                 ng.batch_norm(x, None, None, w, b, training=True),
                                 F.batch_norm(x, None, None, w, b, training=True)),
        "batch_norm bwd": (lambda: ng.batch_norm_backward(dy, x, sm, sr, w),
                           lambda: torch.autograd.grad(bn_out, (xg, wg, bg), dy, retain_graph=True), ref_bn_dx,
                           ng.batch_norm_backward(dy, x, sm, sr, w)[0],
                           torch.autograd.grad(bn_out, (xg, wg, bg), dy, retain_graph=True)[0]),
        "group_norm(32) fwd": (lambda: ng.group_norm_forward(x, 32, w, b), lambda: F.group_norm(x, 32, w, b),
                               ref_gn, ng.group_norm(x, 32, w, b), F.group_norm(x, 32, w, b)),
        "group_norm(32) bwd": (lambda: ng.group_norm_backward(dy, x, gm, gr, 32, w),
                               lambda: torch.autograd.grad(gn_out, (xg, wg, bg), dy, retain_graph=True), ref_gn_dx,
                               ng.group_norm_backward(dy, x, gm, gr, 32, w)[0],
                               torch.autograd.grad(gn_out, (xg, wg, bg), dy, retain_graph=True)[0]),
    }


def _report(label, ours, theirs, ref, our_out, their_out, repeats):
    err_ours = (our_out.double() - ref).abs().max().item()
    err_theirs = (their_out.double() - ref).abs().max().item()
    t_ours, t_theirs = [], []
    for _ in range(3):  # interleave to share the machine's noise
        t_ours.append(_median_time(ours, repeats))
        t_theirs.append(_median_time(theirs, repeats))
    to, tt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"| {label:<48} | {err_ours:11.2e} | {err_theirs:9.2e} | {to * 1e3:10.3f} | {tt * 1e3:8.3f} | "
          f"{tt / to:6.2f}x |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    ng.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    by_op = collections.Counter(f"{k['op']}:{k['dir']}" for k in ng.kernels())
    print(f"normgen: {len(ng.kernels())} generated kernels ("
          + ", ".join(f"{k} {v}" for k, v in sorted(by_op.items())) + f"); {args.threads} thread(s)")
    print("Max |error| vs a float64 reference (input mean 100, std 3) and median time per call")
    print("(torch eager, float32; outputs allocated per call by both; see README on the allocator):\n")
    print(f"| {'case':<48} | {'normgen err':>11} | {'torch err':>9} | {'normgen ms':>10} | {'torch ms':>8} | {'speedup':>7} |")
    print(f"|{'-' * 50}|{'-' * 13}|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 9}|")
    for m, n in SHAPES:
        for name, case in _cases(m, n).items():
            _report(f"{name} {m}x{n}", *case, args.repeats)
    for shape, layout in CHANNEL_SHAPES:
        for name, case in _channel_cases(shape, layout).items():
            _report(f"{name} {'x'.join(map(str, shape))} {layout}", *case, args.repeats)
    print("\nKernels ran:", ng.last_kernel(), "(NORMGEN_VERBOSE=dispatch prints every choice)")


if __name__ == "__main__":
    main()

"""Module bench: torch's normalization modules vs the same modules after
``normgen.torch.convert_modules``, timed side by side (interleaved, repeated, median):
a training step (forward + backward) and an inference forward, at 1 and 2 threads.

    tools/dev.sh bench --modules [--threads 1,2] [--passes 3] [--back-to-back] [--parallel-backend B]

(Importing normgen.torch runs normgen's kernels on torch's OpenMP pool when they share
it; ``--parallel-backend halide`` measures Halide's own pool instead.)
"""
from __future__ import annotations

import copy
import math
import statistics

import torch
from torch import nn

import normgen as ng
import normgen.torch as ngt
from run_bench import time_interleaved

# (name, module factory, input shape, memory format)
CASES = [
    ("LayerNorm(1024) 8192x1024", lambda: nn.LayerNorm(1024), (8192, 1024), torch.contiguous_format),
    ("RMSNorm(4096) 2048x4096", lambda: nn.RMSNorm(4096), (2048, 4096), torch.contiguous_format),
    ("BatchNorm2d(64) 32x64x56x56", lambda: nn.BatchNorm2d(64), (32, 64, 56, 56), torch.contiguous_format),
    ("BatchNorm2d(64) 32x64x56x56 NHWC", lambda: nn.BatchNorm2d(64), (32, 64, 56, 56), torch.channels_last),
    ("BatchNorm1d(512) 4096x512", lambda: nn.BatchNorm1d(512), (4096, 512), torch.contiguous_format),
    ("GroupNorm(32, 256) 8x256x28x28", lambda: nn.GroupNorm(32, 256), (8, 256, 28, 28), torch.contiguous_format),
    ("InstanceNorm2d(64) 8x64x56x56", lambda: nn.InstanceNorm2d(64, affine=True), (8, 64, 56, 56),
     torch.contiguous_format),
]


def _candidates(factory, shape, fmt):
    torch.manual_seed(0)
    theirs = factory()
    ours = ngt.convert_modules(copy.deepcopy(theirs))
    x = (torch.randn(shape) * 2 + 3).contiguous(memory_format=fmt).requires_grad_(True)
    dy = torch.randn(shape).contiguous(memory_format=fmt)

    def step(m):
        def run():
            x.grad = None
            m.zero_grad(set_to_none=True)
            m(x).backward(dy)
        return run

    def infer(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    theirs_eval, ours_eval = copy.deepcopy(theirs).eval(), copy.deepcopy(ours).eval()
    return ({"normgen": step(ours), "torch": step(theirs)}, {"normgen": infer(ours_eval), "torch": infer(theirs_eval)})


def main(threads=(1, 2), passes=3, repeats=5, rounds=3):
    rows = []
    for thr in threads:
        ng.set_num_threads(thr)
        torch.set_num_threads(thr)
        for name, factory, shape, fmt in CASES:
            train, infer = _candidates(factory, shape, fmt)
            for what, cands in (("train step", train), ("inference", infer)):
                per = [time_interleaved(cands, repeats, rounds) for _ in range(passes)]
                t = {k: statistics.median(p[k] for p in per) for k in cands}
                rows.append((name, what, thr, t["normgen"] * 1e3, t["torch"] * 1e3, t["torch"] / t["normgen"]))
                print(f"{name} {what} t={thr}: normgen {t['normgen'] * 1e3:.2f} ms, torch {t['torch'] * 1e3:.2f} ms",
                      flush=True)
    print(f"\nnormgen's parallel backend: {ng.parallel_backend()}")
    lines = ["| module | pass | threads | normgen ms | torch ms | torch / normgen |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {w} | {t} | {a:.2f} | {b:.2f} | {r:.2f}x |" for n, w, t, a, b, r in rows]
    for thr in threads:
        for what in ("train step", "inference"):
            rs = [r[5] for r in rows if r[2] == thr and r[1] == what]
            lines.append(f"| geometric mean | {what} | {thr} | | | {math.exp(sum(map(math.log, rs)) / len(rs)):.2f}x |")
    print("\n" + "\n".join(lines))
    return rows

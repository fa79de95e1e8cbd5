#!/usr/bin/env python3
"""normgen benchmark: time per call, effective bandwidth, fraction of a same-size copy,
and the ratio against the peers (torch eager, torch.compile, oneDNN), all measured side
by side in one process, interleaved, repeated, median reported.

    tools/dev.sh bench [--suite bench/suites/row_norm.txt] [--threads 1,2] [--passes 3] [--no-compile]

Effective bandwidth counts the minimal bytes: each input read once, each output written
once. The copy reference moves the same number of bytes (torch's parallel copy_ of
half that size, read + write) with the same thread count. Outputs: a JSON file and a
markdown table under bench/results/.
"""
from __future__ import annotations

import argparse
import ctypes.util
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def _maybe_reexec_with_jemalloc():
    """Every op that returns a new tensor (torch's and normgen's Python API alike)
    allocates tens of MB per call. glibc mmaps such blocks afresh and the first touch of
    each page costs ~8 us on this VM (a 32 MB output: ~60 ms of page faults, 15x the
    kernel). jemalloc with decay off keeps and reuses them, so the bench times kernels."""
    if os.environ.get("NORMGEN_BENCH_NO_JEMALLOC") or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    for cand in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"):
        if os.path.exists(cand):
            env = dict(os.environ, LD_PRELOAD=(cand + " " + os.environ.get("LD_PRELOAD", "")).strip(),
                       MALLOC_CONF=JEMALLOC_CONF)
            os.execve(sys.executable, [sys.executable] + sys.argv, env)


_maybe_reexec_with_jemalloc()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import normgen as ng  # noqa: E402

try:
    import normgen_bench_peers as peers  # built by bench/CMakeLists.txt when oneDNN is found
except ImportError:
    peers = None


def parse_descriptor(d):
    """<op>:<dir>:<dtype>:<d0>x<d1>...[:<layout>]"""
    parts = d.split(":")
    op, direction, dtype, shape = parts[:4]
    layout = parts[4] if len(parts) > 4 else None
    return op, direction, dtype, tuple(int(v) for v in shape.split("x")), layout


def min_bytes(op, direction, rows, cols, es=4):
    """Each input read once, each output written once (float32 statistics)."""
    n = rows * cols * es
    params = cols * es
    stats = rows * 4 * (2 if op == "layer_norm" else 1)
    if direction == "fwd":  # x, w[, b] in; y, stats out
        return n + params * (2 if op == "layer_norm" else 1) + n + stats
    # dy, x, stats, w in; dx, dw[, db] out
    return 2 * n + stats + params + n + params * (2 if op == "layer_norm" else 1)


SETTLE_S = 0.005
LEAD_IN_S = 0.005


def time_interleaved(cands, repeats, rounds):
    """cands: name -> callable. Rounds of `repeats` calls per candidate, interleaved;
    returns name -> median seconds over every timed call."""
    samples = {k: [] for k in cands}
    for fn in cands.values():  # warm up (and compile) everything first
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in cands.items():
            # Each block in its own steady state: idle long enough for the previous
            # candidate's spinning worker threads (torch's OpenMP pool spins after every
            # parallel region; on 2 cores that steals the next kernel's threads), then
            # untimed lead-in calls for LEAD_IN_S (wake this candidate's pool; on the
            # 2-core VM a call right after the idle gap ran 2-4x slower than in the
            # steady state, and the next ones took ~5 ms to get there, torch's alike).
            time.sleep(SETTLE_S)
            lead_in_end = time.perf_counter() + LEAD_IN_S
            fn()
            while time.perf_counter() < lead_in_end:
                fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def channel_inputs(shape, layout):
    """x (mean 3, std 2) and dy for an (N, C, *spatial) case, channels-last for "nhwc"."""
    torch.manual_seed(0)
    x = torch.randn(shape) * 2 + 3
    dy = torch.randn(shape)
    if layout == "nhwc":
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
    return x, dy


def build_channel_case(op, direction, shape, layout, use_compile):
    """BatchNorm: training forward (fwd), inference (inf), backward (bwd)."""
    n, c = shape[:2]
    x, dy = channel_inputs(shape, layout)
    w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    trm, trv = rm.clone(), rv.clone()
    training = direction != "inf"
    cands = {}
    if direction in ("fwd", "inf"):
        cands["normgen"] = lambda: ng.batch_norm_forward(x, rm, rv, w, b, training=training)
        cands["torch"] = lambda: F.batch_norm(x, trm, trv, w, b, training=training)
        if use_compile:
            cf = torch.compile(lambda a, m_, v_, ww, bb: F.batch_norm(a, m_, v_, ww, bb, training=training),
                               dynamic=False)
            crm, crv = rm.clone(), rv.clone()
            cands["torch.compile"] = lambda: cf(x, crm, crv, w, b)
    else:
        _, sm, sr = ng.batch_norm_forward(x, None, None, w, b, training=True)
        cands["normgen"] = lambda: ng.batch_norm_backward(dy, x, sm, sr, w)
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
        out = F.batch_norm(xg, None, None, wg, bg, training=True)
        cands["torch"] = lambda: torch.autograd.grad(out, (xg, wg, bg), dy, retain_graph=True)
        if use_compile:
            cf = torch.compile(lambda a, ww, bb: F.batch_norm(a, None, None, ww, bb, training=True), dynamic=False)
            cout = cf(xg, wg, bg)
            cands["torch.compile"] = lambda: torch.autograd.grad(cout, (xg, wg, bg), dy, retain_graph=True)
    if peers is not None and len(shape) == 4:
        fmt = "nhwc" if layout == "nhwc" else "nchw"
        cands["oneDNN"] = peers.BatchNorm(*shape, fmt, direction).run
        if c % 16 == 0:
            cands["oneDNN nChw16c"] = peers.BatchNorm(*shape, "nChw16c", direction).run
    numel = x.numel()
    nbytes = numel * 4 * (3 if direction == "bwd" else 2) + c * 4 * 4
    half = nbytes // 2 // 4
    src, dst = torch.randn(half), torch.empty(half)
    cands["copy"] = lambda: dst.copy_(src)
    return cands, nbytes


def build_group_case(op, direction, shape, layout, use_compile):
    """GroupNorm (G = 32) and InstanceNorm (no running statistics), forward and backward."""
    c = shape[1]
    groups = 32 if op == "group_norm" else c
    x, dy = channel_inputs(shape, layout)
    w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)

    def torch_fwd(a, ww, bb):
        return F.group_norm(a, groups, ww, bb) if op == "group_norm" else F.instance_norm(a, weight=ww, bias=bb)

    cands = {}
    if direction == "fwd":
        if op == "group_norm":
            cands["normgen"] = lambda: ng.group_norm_forward(x, groups, w, b)
        else:
            cands["normgen"] = lambda: ng.instance_norm_forward(x, weight=w, bias=b)
        cands["torch"] = lambda: torch_fwd(x, w, b)
        if use_compile:
            cf = torch.compile(torch_fwd, dynamic=False)
            cands["torch.compile"] = lambda: cf(x, w, b)
    else:
        if op == "group_norm":
            _, m, r = ng.group_norm_forward(x, groups, w, b)
            cands["normgen"] = lambda: ng.group_norm_backward(dy, x, m, r, groups, w)
        else:
            _, m, r = ng.instance_norm_forward(x, weight=w, bias=b)
            cands["normgen"] = lambda: ng.instance_norm_backward(dy, x, m, r, w)
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
        out = torch_fwd(xg, wg, bg)
        cands["torch"] = lambda: torch.autograd.grad(out, (xg, wg, bg), dy, retain_graph=True)
        if use_compile:
            cout = torch.compile(torch_fwd, dynamic=False)(xg, wg, bg)
            cands["torch.compile"] = lambda: torch.autograd.grad(cout, (xg, wg, bg), dy, retain_graph=True)
    nbytes = x.numel() * 4 * (3 if direction == "bwd" else 2) + c * 4 * 4
    half = nbytes // 2 // 4
    src, dst = torch.randn(half), torch.empty(half)
    cands["copy"] = lambda: dst.copy_(src)
    return cands, nbytes


SEED_OPS = ("bn_add_relu", "gn_silu", "add_layer_norm", "add_rms_norm", "weight_norm", "zscore",
            "batch_instance_norm", "switchable_norm")


def build_seed_case(op, direction, shape, layout, use_compile):
    """The fused kernels and the other seeds against the composite of torch ops a user
    would write (eager, and under torch.compile):
      bn_add_relu: relu(batch_norm(x) + r), training; gn_silu: silu(group_norm(x, 32));
      add_layer_norm / add_rms_norm: s = x + r, y = norm(s) (both returned);
      weight_norm: torch._weight_norm(v, g, 0); zscore: a fitted ZScore's transform;
      batch_instance_norm: rho * batch_norm + (1 - rho) * instance_norm, affine after;
      switchable_norm: the paper's formulation (IN moments, LN/BN from them), training."""
    x, dy = channel_inputs(shape, layout)
    r = torch.randn_like(x)
    n = x.numel()
    cands = {}

    def add(fwd_ng, bwd_ng, composite, inputs, grads_of):
        """fwd: the composite's output; bwd: autograd through it with dy (and more)."""
        if direction == "fwd":
            cands["normgen"] = fwd_ng
            cands["torch"] = lambda: composite(*inputs)
            if use_compile:
                cf = torch.compile(composite, dynamic=False)
                cands["torch.compile"] = lambda: cf(*inputs)
            return
        cands["normgen"] = bwd_ng
        leaves = [t.clone().requires_grad_() for t in inputs]
        for fn, name in ((composite, "torch"),) + (((torch.compile(composite, dynamic=False), "torch.compile"),)
                                                   if use_compile else ()):
            outs = fn(*leaves)
            outs = outs if isinstance(outs, tuple) else (outs,)
            cands[name] = (lambda o=outs: torch.autograd.grad(o, leaves, grads_of[: len(o)], retain_graph=True))

    if op == "bn_add_relu":
        c = shape[1]
        w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
        _, sm, sr = ng.batch_norm_forward(x, None, None, w, b, True, residual=r, activation="relu")
        add(lambda: ng.batch_norm_forward(x, None, None, w, b, True, residual=r, activation="relu"),
            lambda: ng.batch_norm_backward(dy, x, sm, sr, w, bias=b, residual=r, activation="relu"),
            lambda a, ww, bb, rr: F.relu(F.batch_norm(a, None, None, ww, bb, training=True) + rr),
            (x, w, b, r), (dy,))
        nbytes = n * 4 * (3 if direction == "fwd" else 5)
    elif op == "gn_silu":
        c = shape[1]
        w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
        _, m, rs = ng.group_norm_forward(x, 32, w, b, activation="silu")
        add(lambda: ng.group_norm_forward(x, 32, w, b, activation="silu"),
            lambda: ng.group_norm_backward(dy, x, m, rs, 32, w, bias=b, activation="silu"),
            lambda a, ww, bb: F.silu(F.group_norm(a, 32, ww, bb)), (x, w, b), (dy,))
        nbytes = n * 4 * (2 if direction == "fwd" else 3)
    elif op in ("add_layer_norm", "add_rms_norm"):
        cols = shape[-1]
        w, b = 1 + 0.1 * torch.randn(cols), 0.1 * torch.randn(cols)
        ds = torch.randn(shape)
        if op == "add_layer_norm":
            _, ssum, mean, rstd = ng.add_layer_norm_forward(x, r, (cols,), w, b)
            fwd = lambda: ng.add_layer_norm_forward(x, r, (cols,), w, b)  # noqa: E731
            bwd = lambda: ng.add_layer_norm_backward(dy, ds, ssum, mean, rstd, (cols,), w)  # noqa: E731

            def composite(a, rr, ww, bb):
                s_ = a + rr
                return F.layer_norm(s_, (cols,), ww, bb), s_
            inputs = (x, r, w, b)
        else:
            _, ssum, rstd = ng.add_rms_norm_forward(x, r, (cols,), w, 1e-6)
            fwd = lambda: ng.add_rms_norm_forward(x, r, (cols,), w, 1e-6)  # noqa: E731
            bwd = lambda: ng.add_rms_norm_backward(dy, ds, ssum, rstd, (cols,), w)  # noqa: E731

            def composite(a, rr, ww):
                s_ = a + rr
                return F.rms_norm(s_, (cols,), ww, 1e-6), s_
            inputs = (x, r, w)
        add(fwd, bwd, composite, inputs, (dy, ds))
        nbytes = n * 4 * 4
    elif op == "weight_norm":
        g = 1 + 0.1 * torch.randn(shape[0], *([1] * (len(shape) - 1)))
        _, norm = ng.weight_norm_forward(x, g, 0)
        add(lambda: ng.weight_norm_forward(x, g, 0), lambda: ng.weight_norm_backward(dy, x, norm, g, 0),
            lambda v, gg: torch._weight_norm(v, gg, 0), (x, g), (dy,))
        nbytes = n * 4 * (2 if direction == "fwd" else 3)
    elif op == "batch_instance_norm":
        c = shape[1]
        rho, w, b = torch.rand(c), 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
        _, sm, sr = ng.batch_instance_norm_forward(x, rho, w, b, training=True)
        view = (1, c) + (1,) * (len(shape) - 2)

        def composite(a, rr, ww, bb):
            r_ = rr.clamp(0, 1).view(view)
            mix = r_ * F.batch_norm(a, None, None, training=True) + (1 - r_) * F.instance_norm(a)
            return mix * ww.view(view) + bb.view(view)
        add(lambda: ng.batch_instance_norm_forward(x, rho, w, b, training=True),
            lambda: ng.batch_instance_norm_backward(dy, x, sm, sr, rho, w), composite, (x, rho, w, b), (dy,))
        nbytes = n * 4 * (2 if direction == "fwd" else 3)
    elif op == "switchable_norm":
        c = shape[1]
        mw, vw = torch.randn(3), torch.randn(3)
        w, b = 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c)
        _, sm, sv, sr = ng.switchable_norm_forward(x, mw, vw, w, b, training=True)
        view = (1, c) + (1,) * (len(shape) - 2)
        spatial = tuple(range(2, len(shape)))

        def composite(a, mw_, vw_, ww, bb):  # the paper's formulation in torch ops
            mi, vi = a.mean(spatial, keepdim=True), a.var(spatial, unbiased=False, keepdim=True)
            ml = mi.mean(1, keepdim=True)
            vl = (vi + mi * mi).mean(1, keepdim=True) - ml * ml
            mb = mi.mean(0, keepdim=True)
            vb = (vi + mi * mi).mean(0, keepdim=True) - mb * mb
            pm, pv = torch.softmax(mw_, 0), torch.softmax(vw_, 0)
            mean = pm[0] * mi + pm[1] * ml + pm[2] * mb
            var = pv[0] * vi + pv[1] * vl + pv[2] * vb
            return (a - mean) / torch.sqrt(var + 1e-5) * ww.view(view) + bb.view(view)
        add(lambda: ng.switchable_norm_forward(x, mw, vw, w, b, training=True),
            lambda: ng.switchable_norm_backward(dy, x, sm, sv, sr, mw, vw, w), composite, (x, mw, vw, w, b), (dy,))
        nbytes = n * 4 * (2 if direction == "fwd" else 3)
    elif op == "zscore":
        z = ng.ZScore().fit(x)
        mean = torch.from_numpy(z.mean_).float()
        scale = torch.from_numpy(z.scale_).float()
        add(lambda: z.transform(x), None, lambda a, m_, s_: (a - m_) / s_, (x, mean, scale), ())
        nbytes = n * 4 * 2
    else:
        raise ValueError(f"unknown seed op {op}")
    half = nbytes // 2 // 4
    src, dst = torch.randn(half), torch.empty(half)
    cands["copy"] = lambda: dst.copy_(src)
    return cands, nbytes


def build_case(op, direction, shape, layout, use_compile):
    if op in SEED_OPS:
        return build_seed_case(op, direction, shape, layout, use_compile)
    if op == "batch_norm":
        return build_channel_case(op, direction, shape, layout, use_compile)
    if op in ("group_norm", "instance_norm"):
        return build_group_case(op, direction, shape, layout, use_compile)
    return build_row_case(op, direction, shape[0], shape[1], use_compile)


def build_row_case(op, direction, rows, cols, use_compile):
    torch.manual_seed(0)
    x = torch.randn(rows, cols) * 2 + 3
    w = 1 + 0.1 * torch.randn(cols)
    b = 0.1 * torch.randn(cols)
    dy = torch.randn(rows, cols)
    cands = {}
    if op == "layer_norm":
        y, mean, rstd = ng.layer_norm_forward(x, (cols,), w, b)
        if direction == "fwd":
            cands["normgen"] = lambda: ng.layer_norm_forward(x, (cols,), w, b)
            eager = lambda: F.layer_norm(x, (cols,), w, b)  # noqa: E731
            cands["torch"] = eager
            if use_compile:
                cf = torch.compile(lambda a, ww, bb: F.layer_norm(a, (cols,), ww, bb), dynamic=False)
                cands["torch.compile"] = lambda: cf(x, w, b)
        else:
            cands["normgen"] = lambda: ng.layer_norm_backward(dy, x, mean, rstd, (cols,), w)
            xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
            out = F.layer_norm(xg, (cols,), wg, bg)
            cands["torch"] = lambda: torch.autograd.grad(out, (xg, wg, bg), dy, retain_graph=True)
            if use_compile:
                cf = torch.compile(lambda a, ww, bb: F.layer_norm(a, (cols,), ww, bb), dynamic=False)
                cout = cf(xg, wg, bg)
                cands["torch.compile"] = lambda: torch.autograd.grad(cout, (xg, wg, bg), dy, retain_graph=True)
        if peers is not None:
            prim = peers.LayerNorm(rows, cols, direction, True)
            cands["oneDNN"] = prim.run
    else:
        y, rstd = ng.rms_norm_forward(x, (cols,), w, 1e-6)
        if direction == "fwd":
            cands["normgen"] = lambda: ng.rms_norm_forward(x, (cols,), w, 1e-6)
            cands["torch"] = lambda: F.rms_norm(x, (cols,), w, 1e-6)
            if use_compile:
                cf = torch.compile(lambda a, ww: F.rms_norm(a, (cols,), ww, 1e-6), dynamic=False)
                cands["torch.compile"] = lambda: cf(x, w)
        else:
            cands["normgen"] = lambda: ng.rms_norm_backward(dy, x, rstd, (cols,), w)
            xg, wg = (t.clone().requires_grad_() for t in (x, w))
            out = F.rms_norm(xg, (cols,), wg, 1e-6)
            cands["torch"] = lambda: torch.autograd.grad(out, (xg, wg), dy, retain_graph=True)
            if use_compile:
                cf = torch.compile(lambda a, ww: F.rms_norm(a, (cols,), ww, 1e-6), dynamic=False)
                cout = cf(xg, wg)
                cands["torch.compile"] = lambda: torch.autograd.grad(cout, (xg, wg), dy, retain_graph=True)
        # oneDNN's RMS flag is not in the OpenMP CPU build available here (see README).
    nbytes = min_bytes(op, direction, rows, cols)
    half = nbytes // 2 // 4
    src, dst = torch.randn(half), torch.empty(half)
    cands["copy"] = lambda: dst.copy_(src)
    return cands, nbytes


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "onednn": peers.onednn_version() if peers else None,
            "numpy": np.__version__,
            "malloc": (os.environ.get("LD_PRELOAD", "") + " " + os.environ.get("MALLOC_CONF", "")).strip() or "glibc"}


def git_commit():
    try:
        return subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PEERS = ["torch", "torch.compile", "oneDNN", "oneDNN nChw16c"]


def markdown(results, meta):
    peers_seen = [p for p in PEERS if any(p in r["times_ms"] for r in results)]
    lines = [f"normgen {meta['commit']} on {meta['machine']['cpu']} ({meta['machine']['cores']} cores), "
             f"torch {meta['machine']['torch']}, oneDNN {meta['machine']['onednn']}; "
             f"median of {meta['rounds']}x{meta['repeats']} interleaved calls, median of "
             f"{meta.get('passes', 1)} passes over the suite; {meta['date']}", "",
             "| case | thr | normgen ms | GB/s | % of copy | " + " | ".join(f"vs {p}" for p in peers_seen)
             + " | fastest peer |",
             "|---|---|---|---|---|" + "---|" * len(peers_seen) + "---|"]
    for r in results:
        t = r["times_ms"]
        cells = [f"{t[p] / t['normgen']:.2f}x" if p in t else "n/a" for p in peers_seen]
        peer_times = [t[p] for p in peers_seen if p in t]
        fastest = f"{min(peer_times) / t['normgen']:.2f}x" if peer_times else "n/a"
        lines.append(f"| {r['case']} | {r['threads']} | {t['normgen']:.3f} | {r['normgen_gbps']:.1f} | "
                     f"{100 * r['fraction_of_copy']:.0f}% | " + " | ".join(cells) + f" | {fastest} |")
    lines.append("")
    for thr in sorted({r["threads"] for r in results}):
        rows = [r for r in results if r["threads"] == thr]
        parts = []
        for p in peers_seen:
            v = [r["times_ms"][p] / r["times_ms"]["normgen"] for r in rows if p in r["times_ms"]]
            parts.append(f"vs {p} {math.exp(sum(map(math.log, v)) / len(v)):.2f}x ({len(v)} cases)")
        lines.append(f"Geometric mean, {thr} thread(s): " + ", ".join(parts) + ".")
        # What a kernel moving the minimal bytes at the copy's speed would show: a
        # bound on any ratio from memory traffic alone (a kernel can pass it only where
        # caches serve part of the traffic better than the copy's).
        ceil = []
        for p in peers_seen:
            v = [r["times_ms"][p] / r["times_ms"]["copy"] for r in rows if p in r["times_ms"]]
            ceil.append(f"vs {p} {math.exp(sum(map(math.log, v)) / len(v)):.2f}x")
        lines.append(f"At copy speed, {thr} thread(s): " + ", ".join(ceil) + ".")
    lines.append("")
    note = ("vs X = X's time / normgen's time (> 1: normgen faster). % of copy = copy time for the same "
            "byte count / normgen time. \"At copy speed\": the geometric mean of X's time / the copy's time, "
            "the ratio a kernel running at 100% of copy would show.")
    if "oneDNN nChw16c" in peers_seen:
        note += " \"oneDNN nChw16c\" runs on oneDNN's own blocked layout (a reference, not a drop-in peer)."
    lines.append(note)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(HERE / "suites" / "row_norm.txt"))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--build", help="build directory (for the record only)")
    p.add_argument("--filter", default="", help="only cases whose descriptor matches this regular expression")
    p.add_argument("--passes", type=int, default=3,
                   help="passes over the whole suite; each time is the median over passes (this VM's noise "
                        "comes in bursts of seconds that hit every candidate of a case)")
    p.add_argument("--cuda", action="store_true",
                   help="the CUDA bench instead (bench/cuda_bench.py: GB/s vs device copy and torch; needs a GPU)")
    p.add_argument("--modules", action="store_true",
                   help="the module bench instead (bench/modules_bench.py: torch's norm modules vs "
                        "normgen.torch.convert_modules, training step and inference)")
    p.add_argument("--back-to-back", action="store_true",
                   help="no idle time between candidates' blocks: each call follows the other "
                        "candidate's, as inside a model where a norm layer follows torch ops whose OpenMP "
                        "workers still spin (default: idle 5 ms first)")
    p.add_argument("--parallel-backend", choices=("auto", "halide", "openmp"), default="auto",
                   help="normgen's parallel loops: auto = what `import normgen` picks (torch's OpenMP pool "
                        "when the process shares it, else Halide's)")
    args = p.parse_args(argv)
    if args.back_to_back:
        global SETTLE_S
        SETTLE_S = 0.0
    if args.parallel_backend != "auto" and not args.modules:
        ng.set_parallel_backend(args.parallel_backend)
    if args.cuda:
        import cuda_bench
        raise SystemExit(cuda_bench.main())
    if args.modules:
        import modules_bench
        if args.parallel_backend != "auto":
            ng.set_parallel_backend(args.parallel_backend)
        modules_bench.main(tuple(int(t) for t in args.threads.split(",")), args.passes)
        return
    descriptors = [ln.split("#")[0].strip() for ln in open(args.suite)]
    descriptors = [d for d in descriptors if d and re.search(args.filter, d)]
    threads = [int(t) for t in args.threads.split(",")]
    per_pass = {}  # (threads, case) -> (bytes, [times of each pass])
    for pass_no in range(args.passes):
        for thr in threads:
            ng.set_num_threads(thr)
            torch.set_num_threads(thr)
            if peers is not None:
                peers.set_threads(thr)
            for d in descriptors:
                op, direction, dtype, shape, layout = parse_descriptor(d)
                cands, nbytes = build_case(op, direction, shape, layout, not args.no_compile)
                times = time_interleaved(cands, args.repeats, args.rounds)
                del cands
                per_pass.setdefault((thr, d), (nbytes, []))[1].append(times)
                print(f"pass {pass_no + 1}/{args.passes} {d} t={thr}: normgen {times['normgen'] * 1e3:.3f} ms | " +
                      "  ".join(f"{k} {v * 1e3:.3f}" for k, v in times.items() if k != "normgen"), flush=True)
    results = []
    for thr in threads:
        for d in descriptors:
            nbytes, passes = per_pass[(thr, d)]
            times = {k: statistics.median(t[k] for t in passes) for k in passes[0]}
            t_ng, t_copy = times["normgen"], times["copy"]
            r = {"case": d, "threads": thr, "bytes": nbytes, "times_ms": {k: v * 1e3 for k, v in times.items()},
                 "normgen_gbps": nbytes / t_ng / 1e9, "copy_gbps": nbytes / t_copy / 1e9,
                 "fraction_of_copy": t_copy / t_ng}
            results.append(r)
    meta = {"commit": git_commit(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "repeats": args.repeats, "rounds": args.rounds, "passes": args.passes,
            "suite": args.suite,
            "command": "tools/dev.sh bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.suite).stem
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    md = markdown(results, meta)
    (out / f"{stem}.md").write_text(md + "\n")
    print("\n" + md)


if __name__ == "__main__":
    main()

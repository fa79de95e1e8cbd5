"""CUDA bench: normgen's CUDA kernels in GB/s, as a fraction of the device's copy
bandwidth (a device-to-device copy of the same bytes, measured in the same run) and
against torch's CUDA kernels. Runs where a CUDA device is present; elsewhere it says
why not and exits 0 (nothing to measure).

    tools/dev.sh bench --cuda        (the LayerNorm / RMSNorm bar: 8192 x 4096 fp16 / bf16)
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

import normgen as ng

CASES = [("layer_norm", dt, 8192, 4096) for dt in (torch.float16, torch.bfloat16)] + \
        [("rms_norm", dt, 8192, 4096) for dt in (torch.float16, torch.bfloat16)]


def time_cuda(fn, repeats=20, rounds=5):
    """Median milliseconds per call over `rounds` blocks of `repeats` calls (CUDA events)."""
    fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / repeats)
    return statistics.median(samples)


def main() -> int:
    usable, why = ng.cuda_available(0)
    if not usable or not torch.cuda.is_available():
        print(f"cuda bench: no CUDA device ({why or 'torch sees none'}); nothing measured")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}")
    print("| case | normgen GB/s | copy GB/s | fraction of copy | vs torch |")
    print("|---|---|---|---|---|")
    for op, dt, rows, cols in CASES:
        x = torch.randn(rows, cols, device="cuda").to(dt)
        w = torch.randn(cols, device="cuda").to(dt)
        b = torch.randn(cols, device="cuda").to(dt)
        dst = torch.empty_like(x)
        nbytes = 2 * x.numel() * x.element_size()  # read x, write y
        if op == "layer_norm":
            ours = lambda: ng.layer_norm(x, (cols,), w, b)  # noqa: E731
            theirs = lambda: F.layer_norm(x, (cols,), w, b)  # noqa: E731
        else:
            ours = lambda: ng.rms_norm(x, (cols,), w)  # noqa: E731
            theirs = lambda: F.rms_norm(x, (cols,), w)  # noqa: E731
        t_copy = time_cuda(lambda: dst.copy_(x))
        t_ng, t_torch = time_cuda(ours), time_cuda(theirs)
        gbps = nbytes / (t_ng * 1e-3) / 1e9
        print(f"| {op}:fwd:{str(dt).split('.')[-1]}:{rows}x{cols} | {gbps:.0f} | "
              f"{nbytes / (t_copy * 1e-3) / 1e9:.0f} | {t_copy / t_ng:.2f} | {t_torch / t_ng:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

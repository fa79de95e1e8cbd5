#!/usr/bin/env python3
"""ctest cuda_schedules_opencl: the CUDA schedules (schedules/cuda/) compute what the CPU
schedules do. `normgen-tune gpucheck` JIT-compiles each workload of the suite with the
GPU schedules for OpenCL, runs it on Mesa's rusticl CPU device (llvmpipe: real
work-groups, local memory and barriers) and compares every output with the CPU
schedules' on the same inputs. Exits 77 (skip) when no such device is installed.

    opencl_check.py <normgen-tune> <suite> [gpucheck options...]

(pocl, the other CPU OpenCL, is not used: it miscompiles some of these kernels — a
multi-pass block reduction's OpenCL source that pocl gets wrong runs correctly on
rusticl and in a threads-and-barriers emulation.)
"""
import ctypes.util
import os
import subprocess
import sys

SKIP = 77


def main() -> int:
    tune, suite, *opts = sys.argv[1:]
    if not ctypes.util.find_library("OpenCL"):
        print("skip: no OpenCL ICD loader (Debian: ocl-icd-libopencl1)")
        return SKIP
    if not os.path.exists("/etc/OpenCL/vendors/rusticl.icd"):
        print("skip: Mesa's rusticl OpenCL driver is not installed (Debian: mesa-opencl-icd)")
        return SKIP
    env = dict(os.environ, RUSTICL_ENABLE="llvmpipe", HL_OCL_PLATFORM_NAME="rusticl", HL_OCL_DEVICE_TYPE="cpu")
    # Vector widths above 1 do not compile for OpenCL (Halide's OpenCL C back end has no
    # extract_mask_element); every other knob keeps its CUDA default.
    proc = subprocess.run([tune, "gpucheck", "--suite", suite, "--schedule", "vector:1", *opts], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("Warning: Ignoring assertion")]
    print("\n".join(lines))
    if proc.returncode == 0:
        print(f"all {sum(' ok ' in ln for ln in lines)} workloads agree")
    elif "CL_DEVICE_NOT_FOUND" in proc.stdout and not any(" ok " in ln for ln in lines):
        print("skip: rusticl found no llvmpipe device")
        return SKIP
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

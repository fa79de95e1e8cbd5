// Kernels generated outside libnormgen — by a consumer project's normgen_add_kernels()
// (the installed cmake/NormgenKernels.cmake) for its own shapes, targets or tuned
// schedules — join the runtime's dispatch table here. The generated registration
// source calls register_kernels() when it is loaded and unregister_kernels() when it
// is unloaded; applications do not call these themselves.
//
// Registered kernels rank with the built-in ones (a kernel for the call's exact shape,
// then a tuned kernel for any shape, then the layout kernel, then the strided generic)
// and win ties, so a consumer's kernel replaces the built-in one it duplicates.
#pragma once

#include "normgen/normgen.h"

#include <cstddef>
#include <cstdint>

struct halide_filter_metadata_t;

namespace normgen {

// The consumer's own Halide runtime (add_halide_runtime): normgen installs its error
// handler there (so a failing kernel becomes a Status, never abort()), forwards
// set_num_threads(), applies NORMGEN_CPU_FEATURES_MAX and (when given) installs its
// scratch allocator, which reuses kernel scratch across calls, and (when given) routes its
// parallel loops as set_parallel_backend() says. Pass Halide's functions:
// {halide_set_error_handler, halide_set_num_threads, halide_set_custom_can_use_target_features,
//  halide_set_custom_malloc, halide_set_custom_free, halide_set_custom_do_par_for}.
struct KernelRuntimeHooks {
    using ErrorHandler = void (*)(void *user_context, const char *msg);
    using CanUseTargetFeatures = int (*)(int count, const uint64_t *features);
    using Malloc = void *(*)(void *user_context, size_t size);
    using Free = void (*)(void *user_context, void *ptr);
    ErrorHandler (*set_error_handler)(ErrorHandler);
    int (*set_num_threads)(int);
    CanUseTargetFeatures (*set_can_use_target_features)(CanUseTargetFeatures);
    Malloc (*set_custom_malloc)(Malloc) = nullptr;
    Free (*set_custom_free)(Free) = nullptr;
    using Task = int (*)(void *user_context, int task_number, uint8_t *closure);
    using DoParFor = int (*)(void *user_context, Task task, int min, int extent, uint8_t *closure);
    DoParFor (*set_custom_do_par_for)(DoParFor) = nullptr;
};

// One AOT kernel: its table row and the two entry points Halide generates for it
// (<name>_argv and <name>_metadata). The strings must outlive the registration.
struct ExternalKernel {
    KernelInfo info;
    int (*argv_fn)(void **);
    const halide_filter_metadata_t *(*metadata_fn)();
};

// Adds `count` kernels. Each must name an op, direction and variant the runtime calls,
// with exactly the arguments of the runtime's own kernel for them (one normgen version
// generated both), and a name no registered kernel has. All or nothing: on error
// nothing is added and the Status names the kernel and the reason.
NORMGEN_API Status register_kernels(const ExternalKernel *kernels, size_t count, const KernelRuntimeHooks &hooks);

// Removes kernels added by register_kernels (matched by address) and their runtime's
// hooks; unknown ones are ignored. Waits for calls running them to finish. KernelInfo
// strings that kernels() returned for them are invalid afterwards.
NORMGEN_API void unregister_kernels(const ExternalKernel *kernels, size_t count);

}  // namespace normgen

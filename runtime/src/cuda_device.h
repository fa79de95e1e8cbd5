// CUDA tensors: whether a device is there (the driver loaded at run time, never linked),
// the contexts Halide's CUDA runtime runs kernels in, and wrapping caller device memory
// in Halide buffers. Nothing here needs a GPU to build or to answer "no device".
#pragma once

#include "normgen/normgen.h"

#include <HalideRuntime.h>

#include <functional>
#include <string>
#include <vector>

namespace normgen::detail {

// Whether CUDA device `index` can run kernels; if not, *why says why (no driver, no
// device, driver error).
bool cuda_device_usable(int index, std::string *why);

// Install the context hooks in Halide's runtime: kernels run in the device's primary
// context (the one torch and the CUDA runtime API use, so their device pointers are
// valid in it), on the legacy default stream (ordered with other work on it).
void install_cuda_context_hooks();

// The device this thread's next kernels run on (a thread runs one call at a time); read
// by the context hook.
void set_call_device(int device_index);

// The buffers of one call on CUDA tensors. `on_device`: the buffer's host pointer is
// the caller's device memory (wrapped for the call, no copy); otherwise it is memory the
// runtime owns (scratch outputs, identity parameters), which Halide mirrors on the
// device (copied in when an input) and which is freed after the call.
struct CallBuffer {
    halide_buffer_t *buf;
    bool on_device;
};
Status attach_device_buffers(const std::vector<CallBuffer> &bufs);
void detach_device_buffers(const std::vector<CallBuffer> &bufs);

// The runtime's own small host work on a CUDA tensor (running statistics, fills of
// empty cases): f gets a host view of t with t's strides, holding t's values when `read`;
// with `write`, what f left in it is copied back to the device (unless f failed). Only
// t's elements move.
Status with_host_copy(const TensorView &t, bool read, bool write, const std::function<Status(const TensorView &)> &f);

// f on t itself (a CPU tensor) or on a host copy of it, written back (a CUDA tensor).
// (A template: a CPU call wraps nothing in a std::function, so allocates nothing.)
template <typename F>
Status with_host_view(const TensorView &t, const F &f) {
    if (t.device != Device::cuda) return f(t);
    return with_host_copy(t, true, true, std::function<Status(const TensorView &)>(f));
}

}  // namespace normgen::detail

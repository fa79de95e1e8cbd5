#include "cuda_device.h"

#if NORMGEN_WITH_CUDA
#include <HalideRuntimeCuda.h>
#endif

#include <dlfcn.h>

#include <mutex>
#include <vector>

namespace normgen::detail {

namespace {

// The few driver entry points used here, resolved from libcuda at first use.
using CUresult = int;
using CUdevice = int;
using CUcontext = void *;
struct Driver {
    void *lib = nullptr;
    std::string error;  // why the driver is unusable ("" when usable)
    int devices = 0;
    CUresult (*cuInit)(unsigned) = nullptr;
    CUresult (*cuDeviceGetCount)(int *) = nullptr;
    CUresult (*cuDeviceGet)(CUdevice *, int) = nullptr;
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice) = nullptr;
    std::mutex mu;
    std::vector<CUcontext> primary;  // retained once per device, kept for the process
};

Driver &driver() {
    static Driver d;
    static std::once_flag once;
    std::call_once(once, [] {
        d.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!d.lib) {
            d.error = "the CUDA driver (libcuda.so.1) is not installed";
            return;
        }
        d.cuInit = reinterpret_cast<CUresult (*)(unsigned)>(dlsym(d.lib, "cuInit"));
        d.cuDeviceGetCount = reinterpret_cast<CUresult (*)(int *)>(dlsym(d.lib, "cuDeviceGetCount"));
        d.cuDeviceGet = reinterpret_cast<CUresult (*)(CUdevice *, int)>(dlsym(d.lib, "cuDeviceGet"));
        d.cuDevicePrimaryCtxRetain =
            reinterpret_cast<CUresult (*)(CUcontext *, CUdevice)>(dlsym(d.lib, "cuDevicePrimaryCtxRetain_v2"));
        if (!d.cuDevicePrimaryCtxRetain)
            d.cuDevicePrimaryCtxRetain =
                reinterpret_cast<CUresult (*)(CUcontext *, CUdevice)>(dlsym(d.lib, "cuDevicePrimaryCtxRetain"));
        if (!d.cuInit || !d.cuDeviceGetCount || !d.cuDeviceGet || !d.cuDevicePrimaryCtxRetain) {
            d.error = "the CUDA driver (libcuda.so.1) lacks cuInit/cuDeviceGet/cuDevicePrimaryCtxRetain";
            return;
        }
        CUresult r = d.cuInit(0);
        if (r != 0) {
            d.error = "cuInit failed with CUresult " + std::to_string(r) + " (no CUDA device, or the driver is broken)";
            return;
        }
        if (d.cuDeviceGetCount(&d.devices) != 0 || d.devices == 0) {
            d.error = "no CUDA device is present";
            d.devices = 0;
            return;
        }
        d.primary.assign(d.devices, nullptr);
    });
    return d;
}

// The call's device, stored next to normgen's CallContext: the context hook sees only
// user_context. A thread runs one call at a time, so a thread-local is enough.
thread_local int t_call_device = 0;

[[maybe_unused]] int acquire_context(void *user_context, void **ctx, bool create) {
    (void)user_context;
    (void)create;
    Driver &d = driver();
    if (!d.error.empty() || t_call_device >= d.devices) return halide_error_code_device_malloc_failed;
    std::lock_guard<std::mutex> lock(d.mu);
    CUcontext &c = d.primary[t_call_device];
    if (!c) {
        CUdevice dev = 0;
        if (d.cuDeviceGet(&dev, t_call_device) != 0 || d.cuDevicePrimaryCtxRetain(&c, dev) != 0) {
            c = nullptr;
            return halide_error_code_device_malloc_failed;
        }
    }
    *ctx = c;
    return 0;
}

[[maybe_unused]] int release_context(void *) { return 0; }  // primary contexts stay retained

[[maybe_unused]] int default_stream(void *, void *, void **stream) {
    *stream = nullptr;  // the legacy default stream
    return 0;
}

}  // namespace

bool cuda_device_usable(int index, std::string *why) {
    Driver &d = driver();
    if (!d.error.empty()) {
        *why = d.error;
        return false;
    }
    if (index < 0 || index >= d.devices) {
        *why = "CUDA device " + std::to_string(index) + " does not exist (" + std::to_string(d.devices) + " present)";
        return false;
    }
    return true;
}

void install_cuda_context_hooks() {
#if NORMGEN_WITH_CUDA
    halide_set_cuda_acquire_context(acquire_context);
    halide_set_cuda_release_context(release_context);
    halide_set_cuda_get_stream(default_stream);
#endif
}

void set_call_device(int device_index) { t_call_device = device_index; }

Status attach_device_buffers(const std::vector<CallBuffer> &bufs) {
    for (size_t i = 0; i < bufs.size(); i++) {
        halide_buffer_t *b = bufs[i].buf;
        if (!bufs[i].on_device) {
            b->flags |= halide_buffer_flag_host_dirty;  // Halide copies it in if the kernel reads it
            continue;
        }
        void *device_ptr = b->host;
        b->host = nullptr;
#if NORMGEN_WITH_CUDA
        int rc = halide_cuda_wrap_device_ptr(nullptr, b, reinterpret_cast<uint64_t>(device_ptr));
#else
        (void)device_ptr;
        int rc = halide_error_code_no_device_interface;
#endif
        if (rc != 0) {
            detach_device_buffers(std::vector<CallBuffer>(bufs.begin(), bufs.begin() + static_cast<long>(i)));
            return Status(Status::Code::runtime_error,
                          "could not wrap a CUDA device pointer for a kernel (Halide code " + std::to_string(rc) + ")");
        }
    }
    return Status::OK();
}

void detach_device_buffers(const std::vector<CallBuffer> &bufs) {
    for (const CallBuffer &c : bufs) {
        if (c.on_device) {
#if NORMGEN_WITH_CUDA
            halide_cuda_detach_device_ptr(nullptr, c.buf);
#endif
        } else if (c.buf->device) {
            halide_copy_to_host(nullptr, c.buf);  // runtime-owned outputs are read back (statistics)
            halide_device_free(nullptr, c.buf);
        }
    }
}

Status with_host_copy(const TensorView &t, bool read, bool write, const std::function<Status(const TensorView &)> &f) {
    if (t.numel() == 0) return Status::OK();
    std::string why;
    if (!cuda_device_usable(t.device_index, &why))
        return Status(Status::Code::runtime_error, "a CUDA tensor, but no CUDA device: " + why);
    const int esize = dtype_size(t.dtype);
    int64_t lo = 0, hi = 0;  // element offsets spanned by t
    for (int d = 0; d < t.rank; d++) {
        const int64_t reach = (t.shape[d] - 1) * t.strides[d];
        (reach < 0 ? lo : hi) += reach;
    }
    std::vector<unsigned char> host(static_cast<size_t>((hi - lo + 1) * esize));
    unsigned char *origin = host.data() - lo * esize;  // element (0, ..., 0)
    halide_buffer_t buf{};
    halide_dimension_t dims[TensorView::kMaxRank];
    buf.dimensions = t.rank;
    buf.dim = dims;
    buf.type = t.dtype == DType::f32 ? halide_type_t(halide_type_float, 32)
                                     : t.dtype == DType::f16 ? halide_type_t(halide_type_float, 16)
                                                             : halide_type_t(halide_type_bfloat, 16);
    for (int d = 0; d < t.rank; d++)  // Halide's dim 0 is the innermost: the view's last
        dims[d] = halide_dimension_t(0, static_cast<int32_t>(t.shape[t.rank - 1 - d]),
                                     static_cast<int32_t>(t.strides[t.rank - 1 - d]));
    buf.host = origin;
    void *device_ptr = t.data;
    set_call_device(t.device_index);
    std::vector<CallBuffer> one{{&buf, true}};
    buf.host = static_cast<uint8_t *>(device_ptr);  // attach takes the device pointer from host
    Status s = attach_device_buffers(one);
    if (!s.ok()) return s;
    buf.host = origin;
    int rc = 0;
    if (read) {
        buf.flags = halide_buffer_flag_device_dirty;
        rc = halide_copy_to_host(nullptr, &buf);
    }
    Status fs;
    if (rc == 0) {
        TensorView h = t;
        h.device = Device::cpu;
        h.device_index = 0;
        h.data = origin;
        fs = f(h);
        if (write && fs.ok()) {
            buf.flags = halide_buffer_flag_host_dirty;
            rc = halide_copy_to_device(nullptr, &buf, buf.device_interface);
        }
    }
    buf.flags = 0;
    detach_device_buffers(one);
    if (rc != 0)
        return Status(Status::Code::runtime_error,
                      "copying a CUDA tensor for the runtime's host work failed (Halide code " + std::to_string(rc) + ")");
    return fs;
}

}  // namespace normgen::detail

// The generated kernel table, kernel selection and the one way to call a kernel:
// arguments bound by name through the kernel's metadata, a per-call user context
// that captures Halide errors, and a Status out.
#pragma once

#include "normgen/normgen.h"

#include <HalideRuntime.h>

#include <array>
#include <memory_resource>
#include <shared_mutex>
#include <string>
#include <vector>

namespace normgen::detail {

struct Kernel {
    KernelInfo info;
    int (*argv_fn)(void **);
    const halide_filter_metadata_t *(*metadata_fn)();
};

const std::vector<Kernel> &kernel_table();
// Whether the built-in table has CUDA kernels (the build had a CUDA target).
bool has_cuda_kernels();

// Arguments for one call, bound by the names the generator gave them (in place: a
// call allocates nothing for them).
class Args {
public:
    struct Item {
        const char *name;
        void *ptr;
    };
    static constexpr size_t kMax = 64;
    void buffer(const char *name, halide_buffer_t *b) { add(name, b); }
    void scalar(const char *name, void *p) { add(name, p); }
    const Item *begin() const { return items_.data(); }
    const Item *end() const { return items_.data() + count_; }

private:
    void add(const char *name, void *p) {
        if (count_ < kMax) items_[count_++] = {name, p};  // (else run_kernel reports it unbound)
    }
    std::array<Item, kMax> items_{};
    size_t count_ = 0;
};

// A kernel variant as the table spells it, "k=v,k=v" with keys sorted, built in place
// (no allocation): Variant().set("has_weight", w).set("has_bias", b), or from text
// that is already in that form.
class Variant {
public:
    Variant() = default;
    Variant(const char *sorted_text) : literal_(sorted_text) {}  // NOLINT: literals convert
    Variant &set(const char *key, bool value);
    const char *c_str() const;

private:
    static constexpr size_t kMaxKeys = 8;
    const char *literal_ = nullptr;
    std::array<std::pair<const char *, bool>, kMaxKeys> keys_{};
    size_t count_ = 0;
    mutable std::array<char, 160> text_{};
};

// A problem's shape, up to 4 sizes, held in place.
struct Dims {
    std::array<int64_t, 4> d{};
    size_t n = 0;
    Dims(std::initializer_list<int64_t> sizes);
    std::vector<int64_t> vec() const { return std::vector<int64_t>(d.begin(), d.begin() + n); }
};

// What a call needs from a kernel.
struct Request {
    const char *op;
    const char *dir;
    DType dtype;
    const char *variant;  // "k=v,k=v" sorted by key, as in the table
    const char *layout;   // the layout every buffer has (contig, nchw, nhwc) or "strided"
    // The problem's shape: (rows, cols) or (N, C, spatial); kernels tuned for a shape
    // match it joined with 'x'.
    Dims shape;
    Device device = Device::cpu;  // cpu: the "cpu" kernels; cuda: the "cuda" kernels on device_index
    int device_index = 0;
};

// A selected kernel, and a read lock on the registry of consumer kernels that keeps the
// kernel registered (its library loaded) until the selection is dropped.
struct Selection {
    const Kernel *kernel = nullptr;
    std::shared_lock<std::shared_mutex> hold;
};

// The best kernel for `req`: one tuned for its shape, then a tuned one for any shape,
// then the kernel list's for the call's layout, then the strided generic. No kernel
// (with a message in *why) if none fits.
Selection select_kernel(const Request &req, std::string *why);

// Run `k` with `args` (on CUDA device `device_index` for a cuda kernel); a non-zero
// return or a Halide error becomes a Status.
Status run_kernel(const Kernel &k, const Args &args, int device_index = 0);

// Halide's scratch allocator in every runtime normgen hooks (scratch.cpp): freed
// blocks are kept for the next call.
void *scratch_malloc(void *user_context, size_t size);
void scratch_free(void *user_context, void *ptr);
// The calling thread's pool for a call's host bookkeeping (argument records, small
// host vectors): freed chunks are kept, so steady calls allocate nothing.
std::pmr::memory_resource *call_memory();

// select_kernel, then run_kernel.
Status dispatch(const Request &req, const Args &args);

// The OpenMP parallel backend (parallel.cpp): whether this build has it, the OpenMP
// runtime's thread count (omp_get_max_threads; 1 without OpenMP), the shared object
// that runtime lives in (empty without OpenMP), and Halide's do_par_for over it.
bool openmp_built();
int openmp_max_threads();
std::string openmp_runtime_path();
int openmp_do_par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure);
// The halide backend in libnormgen's own runtime: Halide's pool, except that a loop of
// one task runs on the calling thread. (The pool queues even a single task, and the
// thread that waits for it runs other queued tasks of the enclosing parallel loop
// meanwhile: GroupNorm's per-sample group loop of one task then held several samples'
// scratch at once, a number that varied from call to call.)
int halide_pool_do_par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure);

}  // namespace normgen::detail

#include "kernel_table.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#define NORMGEN_KERNEL_INCLUDES
#include "normgen/kernel_table.inc"
#undef NORMGEN_KERNEL_INCLUDES

namespace normgen {

namespace detail {

namespace {

std::vector<Kernel> build_table() {
    std::vector<Kernel> t;
#define NORMGEN_KERNEL(fn, op, dir, dtype, layout, variant, shape, target, schedule) \
    t.push_back(Kernel{KernelInfo{#fn, op, dir, dtype, layout, variant, shape, target, schedule}, &fn##_argv, &fn##_metadata});
#include "normgen/kernel_table.inc"
#undef NORMGEN_KERNEL
    return t;
}

bool verbose_dispatch() {
    static const bool on = [] {
        const char *v = std::getenv("NORMGEN_VERBOSE");
        return v && std::strstr(v, "dispatch") != nullptr;
    }();
    return on;
}

thread_local std::string t_last_kernel;

// Per-call context handed to the kernel as Halide's user_context: errors raised
// on any worker thread of this call land here (guarded, as workers may race).
struct CallContext {
    std::mutex mu;
    std::string error;
};

void error_handler(void *user_context, const char *msg) {
    auto *ctx = static_cast<CallContext *>(user_context);
    if (!ctx) {
        // Errors outside any normgen call (should not happen): report, never abort.
        std::fprintf(stderr, "normgen: Halide error outside a call: %s\n", msg);
        return;
    }
    std::lock_guard<std::mutex> lock(ctx->mu);
    if (!ctx->error.empty()) ctx->error += "; ";
    ctx->error += msg;
}

// NORMGEN_CPU_FEATURES_MAX=avx2|sse41 caps the instruction set the multi-target
// kernels may pick (default: the best this CPU has), so every compiled variant can be
// run and tested on one machine.
enum class CpuCap { best, avx2, sse41 };
CpuCap g_cpu_cap = CpuCap::best;

int capped_can_use_target_features(int count, const uint64_t *features) {
    auto has = [&](int f) { return (f >> 6) < count && ((features[f >> 6] >> (f & 63)) & 1); };
    const bool avx512 = has(halide_target_feature_avx512) || has(halide_target_feature_avx512_skylake) ||
                        has(halide_target_feature_avx512_cannonlake) || has(halide_target_feature_avx512_zen4) ||
                        has(halide_target_feature_avx512_sapphirerapids);
    const bool avx = has(halide_target_feature_avx) || has(halide_target_feature_avx2) ||
                     has(halide_target_feature_fma) || has(halide_target_feature_f16c);
    if (g_cpu_cap != CpuCap::best && avx512) return 0;
    if (g_cpu_cap == CpuCap::sse41 && avx) return 0;
    return halide_default_can_use_target_features(count, features);
}

std::once_flag g_init;

void init_runtime() {
    std::call_once(g_init, [] {
        halide_set_error_handler(error_handler);
        if (const char *cap = std::getenv("NORMGEN_CPU_FEATURES_MAX")) {
            if (!std::strcmp(cap, "avx2")) g_cpu_cap = CpuCap::avx2;
            else if (!std::strcmp(cap, "sse41")) g_cpu_cap = CpuCap::sse41;
            if (g_cpu_cap != CpuCap::best) halide_set_custom_can_use_target_features(capped_can_use_target_features);
        }
    });
}

}  // namespace

const std::vector<Kernel> &kernel_table() {
    static const std::vector<Kernel> table = build_table();
    return table;
}

const Kernel *select_kernel(const Request &req, std::string *why) {
    const Kernel *best = nullptr;
    int best_rank = 1 << 30;
    std::string skipped;
    const char *dtype = dtype_name(req.dtype);
    std::string shape;
    for (int64_t d : req.shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    for (const Kernel &k : kernel_table()) {
        const KernelInfo &i = k.info;
        if (std::strcmp(i.op, req.op) || std::strcmp(i.dir, req.dir) || std::strcmp(i.dtype, dtype) ||
            req.variant != i.variant || std::strcmp(i.target, "cpu"))
            continue;
        const bool generic = std::strcmp(i.layout, "strided") == 0;
        std::string reason;
        if (!generic && std::strcmp(i.layout, req.layout) != 0)
            reason = std::string("is for the ") + i.layout + " layout, the call's is " + req.layout;
        const bool shaped = *i.shape != 0, tuned = *i.schedule != 0;
        if (reason.empty() && shaped && shape != i.shape)
            reason = std::string("tuned for shape ") + i.shape + ", the call's is " + shape;
        if (!reason.empty()) {
            if (verbose_dispatch()) skipped += std::string("\n  skipped ") + i.name + ": " + reason;
            continue;
        }
        // A kernel tuned for the call's shape first, then a tuned one for any shape,
        // then the kernel list's for the call's layout, then the strided generic.
        const int rank = shaped ? 0 : 1 + (generic ? 2 : 0) + (tuned ? 0 : 1);
        if (rank < best_rank) {
            if (best && verbose_dispatch())
                skipped += std::string("\n  skipped ") + best->info.name + ": less specialized than " + i.name;
            best = &k;
            best_rank = rank;
        } else if (verbose_dispatch()) {
            skipped += std::string("\n  skipped ") + i.name + ": less specialized than " + best->info.name;
        }
    }
    std::string desc = describe(req.op, req.dir, req.dtype, req.shape, req.layout);
    if (!best) {
        *why = "no kernel in the kernel list for " + desc + " (variant " + req.variant + ")";
        return nullptr;
    }
    t_last_kernel = best->info.name;
    if (verbose_dispatch()) std::fprintf(stderr, "normgen: %s -> %s%s\n", desc.c_str(), best->info.name, skipped.c_str());
    return best;
}

Status run_kernel(const Kernel &k, const Args &args) {
    init_runtime();
    const halide_filter_metadata_t *md = k.metadata_fn();
    CallContext ctx;
    void *user_context = &ctx;
    std::vector<void *> argv(md->num_arguments, nullptr);
    for (int a = 0; a < md->num_arguments; a++) {
        const char *name = md->arguments[a].name;
        if (std::strcmp(name, "__user_context") == 0) {
            argv[a] = &user_context;
            continue;
        }
        for (const auto &it : args.items())
            if (std::strcmp(it.name, name) == 0) argv[a] = it.ptr;
        if (!argv[a])
            return Status(Status::Code::runtime_error,
                          std::string("internal: kernel ") + k.info.name + " argument '" + name + "' was not bound");
    }
    int rc = k.argv_fn(argv.data());
    if (rc != 0 || !ctx.error.empty()) {
        std::string msg = std::string("kernel ") + k.info.name + " failed (code " + std::to_string(rc) + ")";
        if (!ctx.error.empty()) msg += ": " + ctx.error;
        return Status(Status::Code::runtime_error, msg);
    }
    return Status::OK();
}

Status dispatch(const Request &req, const Args &args) {
    std::string why;
    const Kernel *k = select_kernel(req, &why);
    if (!k) return Status(Status::Code::runtime_error, why);
    return run_kernel(*k, args);
}

}  // namespace detail

const std::vector<KernelInfo> &kernels() {
    static const std::vector<KernelInfo> infos = [] {
        std::vector<KernelInfo> v;
        for (const auto &k : detail::kernel_table()) v.push_back(k.info);
        return v;
    }();
    return infos;
}

const char *last_kernel() { return detail::t_last_kernel.c_str(); }

namespace {
int default_threads() {
    if (const char *e = std::getenv("HL_NUM_THREADS")) {
        int n = std::atoi(e);
        if (n > 0) return n;
    }
    unsigned n = std::thread::hardware_concurrency();
    return n ? static_cast<int>(n) : 1;
}
std::atomic<int> g_threads{default_threads()};
}  // namespace

int set_num_threads(int n) {
    if (n < 1) n = default_threads();
    halide_set_num_threads(n);
    return g_threads.exchange(n);
}

int num_threads() { return g_threads.load(); }

}  // namespace normgen

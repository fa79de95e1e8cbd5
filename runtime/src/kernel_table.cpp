#include "kernel_table.h"

#include "normgen/kernel_registry.h"

#include "cuda_device.h"
#include "tensor.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <shared_mutex>
#include <string_view>
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
#define NORMGEN_KERNEL(fn, op, dir, dtype, layout, variant, shape, target, schedule, threads, cpu) \
    t.push_back(Kernel{KernelInfo{#fn, op, dir, dtype, layout, variant, shape, target, schedule, threads, cpu}, \
                       &fn##_argv, &fn##_metadata});
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

thread_local std::array<char, 256> t_last_kernel{};  // (a copy: no allocation per call)

// Whether `text` ("8192x1024") names `shape`, without building the string.
bool same_shape(const char *text, const Dims &shape) {
    for (size_t d = 0; d < shape.n; d++) {
        if (d > 0 && *text++ != 'x') return false;
        if (*text < '0' || *text > '9') return false;
        int64_t v = 0;
        while (*text >= '0' && *text <= '9') v = v * 10 + (*text++ - '0');
        if (v != shape.d[d]) return false;
    }
    return *text == 0;
}

// Per-call context handed to the kernel as Halide's user_context: errors raised
// on any worker thread of this call land here (guarded, as workers may race).
struct CallContext {
    static constexpr uint64_t kMagic = 0x6e6f726d67656e31;  // "normgen1": a context of ours
    uint64_t magic = kMagic;
    std::mutex mu;
    std::string error;
};

void error_handler(void *user_context, const char *msg) {
    auto *ctx = static_cast<CallContext *>(user_context);
    if (!ctx || ctx->magic != CallContext::kMagic) {
        // Not a normgen call (e.g. the application's own pipeline on a consumer's Halide
        // runtime, which carries this handler): report, never abort.
        std::fprintf(stderr, "Halide error: %s\n", msg);
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

// The instruction-set features a tuned kernel's `cpu` may name (Halide's names; CMake's
// NORMGEN_CPU_FEATURE_NAMES lists the same), each with the features it implies, as in
// Halide's target strings: all are checked, since Halide's CPU probe reports only the
// features it knows how to detect and passes the others (Halide 21 does not detect
// avx512_zen4 itself, so on an AVX2-only CPU that bit alone would pass).
struct CpuFeature {
    const char *name;
    std::array<halide_target_feature_t, 8> implies;  // (unused slots: halide_target_feature_end)
};
constexpr halide_target_feature_t kEnd = halide_target_feature_end;
constexpr halide_target_feature_t kSse41 = halide_target_feature_sse41, kAvx = halide_target_feature_avx,
                                  kAvx2 = halide_target_feature_avx2, kFma = halide_target_feature_fma,
                                  kF16c = halide_target_feature_f16c, kAvx512 = halide_target_feature_avx512,
                                  kSkl = halide_target_feature_avx512_skylake,
                                  kCnl = halide_target_feature_avx512_cannonlake;
constexpr CpuFeature kCpuFeatures[] = {
    {"sse41", {kSse41, kEnd, kEnd, kEnd, kEnd, kEnd, kEnd, kEnd}},
    {"avx", {kSse41, kAvx, kEnd, kEnd, kEnd, kEnd, kEnd, kEnd}},
    {"avx2", {kSse41, kAvx, kAvx2, kFma, kF16c, kEnd, kEnd, kEnd}},
    {"fma", {kSse41, kAvx, kFma, kEnd, kEnd, kEnd, kEnd, kEnd}},
    {"f16c", {kSse41, kAvx, kF16c, kEnd, kEnd, kEnd, kEnd, kEnd}},
    {"avx512", {kSse41, kAvx, kAvx2, kFma, kF16c, kAvx512, kEnd, kEnd}},
    {"avx512_skylake", {kSse41, kAvx, kAvx2, kFma, kF16c, kAvx512, kSkl, kEnd}},
    {"avx512_cannonlake", {kSse41, kAvx, kAvx2, kFma, kF16c, kAvx512, kSkl, kCnl}},
    {"avx512_zen4", {kSse41, kAvx2, kFma, kF16c, kAvx512, kSkl, kCnl, halide_target_feature_avx512_zen4}},
    {"avx512_sapphirerapids",
     {kSse41, kAvx2, kFma, kF16c, kAvx512, kSkl, kCnl, halide_target_feature_avx512_sapphirerapids}},
};

const CpuFeature *cpu_feature(const char *name) {
    for (const CpuFeature &f : kCpuFeatures)
        if (!std::strcmp(f.name, name)) return &f;
    return nullptr;
}

// Whether a tuned kernel's `cpu` feature ("" or null: any) is this CPU's (within
// NORMGEN_CPU_FEATURES_MAX); NORMGEN_TUNED_ANY_CPU=1 says yes to all (tests of every
// tuned kernel on any machine).
bool cpu_matches(const char *cpu) {
    static const bool any = [] {
        const char *v = std::getenv("NORMGEN_TUNED_ANY_CPU");
        return v && *v && std::strcmp(v, "0") != 0;
    }();
    if (!cpu || !*cpu || any) return true;
    const CpuFeature *f = cpu_feature(cpu);
    if (!f) return false;
    uint64_t bits[(halide_target_feature_end + 63) / 64] = {};
    for (halide_target_feature_t b : f->implies)
        if (b != kEnd) bits[b / 64] |= uint64_t(1) << (b % 64);
    return capped_can_use_target_features(int(std::size(bits)), bits) != 0;
}

std::once_flag g_init;

std::atomic<ParallelBackend> g_backend{ParallelBackend::halide};

// A Halide runtime normgen hooks, and its do_par_for for the halide backend: normgen's
// halide_pool_do_par_for in libnormgen's own runtime; in a consumer's, the one it had
// before normgen routed its loops to OpenMP (restored when the backend goes back).
struct HookedRuntime {
    const ExternalKernel *source;  // the registration that brought it (null: libnormgen's own)
    KernelRuntimeHooks hooks;
    KernelRuntimeHooks::DoParFor halide_par_for = nullptr;
};

// Routes a runtime's parallel loops to the current backend.
void route_parallel_loops(HookedRuntime &r) {
    if (!r.hooks.set_custom_do_par_for) return;
    if (g_backend == ParallelBackend::openmp) {
        KernelRuntimeHooks::DoParFor prev = r.hooks.set_custom_do_par_for(openmp_do_par_for);
        if (!r.halide_par_for && prev != openmp_do_par_for) r.halide_par_for = prev;
    } else if (r.halide_par_for) {
        r.hooks.set_custom_do_par_for(r.halide_par_for);
    }
}

// Installs normgen's hooks into one Halide runtime: libnormgen's own, or a consumer's
// that came with registered kernels.
void hook_runtime(HookedRuntime &r) {
    const KernelRuntimeHooks &rt = r.hooks;
    rt.set_error_handler(error_handler);
    if (rt.set_custom_malloc && rt.set_custom_free) {
        rt.set_custom_malloc(scratch_malloc);
        rt.set_custom_free(scratch_free);
    }
    if (g_cpu_cap != CpuCap::best) rt.set_can_use_target_features(capped_can_use_target_features);
    route_parallel_loops(r);
}

HookedRuntime g_own_runtime{nullptr,
                            {halide_set_error_handler, halide_set_num_threads,
                             halide_set_custom_can_use_target_features, halide_set_custom_malloc,
                             halide_set_custom_free, halide_set_custom_do_par_for},
                            halide_pool_do_par_for};

void init_runtime() {
    std::call_once(g_init, [] {
        if (const char *cap = std::getenv("NORMGEN_CPU_FEATURES_MAX")) {
            if (!std::strcmp(cap, "avx2")) g_cpu_cap = CpuCap::avx2;
            else if (!std::strcmp(cap, "sse41")) g_cpu_cap = CpuCap::sse41;
        }
        hook_runtime(g_own_runtime);
        install_cuda_context_hooks();
    });
}

// Kernels added by register_kernels(): searched before the built-in table (so they win
// ties), in a list so that a Kernel's address stays valid while others come and go.
struct Registered {
    Kernel kernel;
    const ExternalKernel *source;
};
std::shared_mutex g_registry_mu;
std::list<Registered> g_registered;
// The consumers' Halide runtimes, by the registration that brought each.
std::list<HookedRuntime> g_runtimes;

}  // namespace

const std::vector<Kernel> &kernel_table() {
    static const std::vector<Kernel> table = build_table();
    return table;
}

bool has_cuda_kernels() {
    static const bool any = std::any_of(kernel_table().begin(), kernel_table().end(),
                                        [](const Kernel &k) { return !std::strcmp(k.info.target, "cuda"); });
    return any;
}

// Calls f(kernel) on every kernel, registered ones first; the caller holds the
// registry's lock.
template <typename F>
void for_each_kernel_locked(F &&f) {
    for (const Registered &r : g_registered) f(r.kernel);
    for (const Kernel &k : kernel_table()) f(k);
}

// The built-in table's kernels by (op, dir, dtype, variant, target), in table order:
// a call ranks its own bucket instead of string-comparing every kernel of the table
// (892 in this build: ~4.5k strcmp per call, half of a small call's runtime overhead).
struct TableKey {
    std::string_view op, dir, dtype, variant, target;
    bool operator==(const TableKey &o) const {
        return op == o.op && dir == o.dir && dtype == o.dtype && variant == o.variant && target == o.target;
    }
};
struct TableKeyHash {
    size_t operator()(const TableKey &k) const {
        size_t h = 0;
        for (std::string_view s : {k.op, k.dir, k.dtype, k.variant, k.target})
            h = h * 1000003u ^ std::hash<std::string_view>()(s);
        return h;
    }
};
using TableIndex = std::unordered_map<TableKey, std::vector<const Kernel *>, TableKeyHash>;

TableKey key_of(const Kernel &k) { return {k.info.op, k.info.dir, k.info.dtype, k.info.variant, k.info.target}; }

const TableIndex &table_index() {
    static const TableIndex index = [] {
        TableIndex t;
        for (const Kernel &k : kernel_table()) t[key_of(k)].push_back(&k);
        return t;
    }();
    return index;
}

Variant &Variant::set(const char *key, bool value) {
    for (size_t i = 0; i < count_; i++)
        if (!std::strcmp(keys_[i].first, key)) {
            keys_[i].second = value;
            return *this;
        }
    if (count_ < kMaxKeys) keys_[count_++] = {key, value};  // (more keys than any kernel has)
    return *this;
}

const char *Variant::c_str() const {
    if (literal_ && count_ == 0) return literal_;
    std::array<std::pair<const char *, bool>, kMaxKeys> sorted = keys_;
    std::sort(sorted.begin(), sorted.begin() + count_,
              [](const auto &a, const auto &b) { return std::strcmp(a.first, b.first) < 0; });
    size_t at = 0;
    text_[0] = 0;
    for (size_t i = 0; i < count_ && at < text_.size(); i++) {
        const int n = std::snprintf(text_.data() + at, text_.size() - at, "%s%s=%c", i ? "," : "", sorted[i].first,
                                    sorted[i].second ? '1' : '0');
        if (n < 0) break;
        at += static_cast<size_t>(n);
    }
    return text_.data();
}

Dims::Dims(std::initializer_list<int64_t> sizes) {
    for (int64_t v : sizes)
        if (n < d.size()) d[n++] = v;
}

Selection select_kernel(const Request &req, std::string *why) {
    Selection sel{nullptr, std::shared_lock<std::shared_mutex>(g_registry_mu)};
    const Kernel *best = nullptr;
    int best_rank = 1 << 30;
    std::string skipped;  // (NORMGEN_VERBOSE=dispatch only: calls allocate nothing here otherwise)
    const bool verbose = verbose_dispatch();
    const char *dtype = dtype_name(req.dtype);
    const char *target = req.device == Device::cuda ? "cuda" : "cpu";
    const int threads = num_threads();
    auto consider = [&](const Kernel &k) {
        const KernelInfo &i = k.info;
        const bool generic = std::strcmp(i.layout, "strided") == 0;
        const bool shaped = *i.shape != 0, tuned = *i.schedule != 0;
        const bool layout_ok = generic || std::strcmp(i.layout, req.layout) == 0;
        const bool shape_ok = !shaped || same_shape(i.shape, req.shape);
        const bool threads_ok = !i.threads || i.threads == threads;
        // (the CPU probe only for a kernel that would otherwise serve the call)
        const bool cpu_ok = !(layout_ok && shape_ok && threads_ok) || cpu_matches(i.cpu);
        if (!(layout_ok && shape_ok && threads_ok && cpu_ok)) {
            if (verbose) {
                skipped += std::string("\n  skipped ") + i.name + ": ";
                if (!layout_ok)
                    skipped += std::string("is for the ") + i.layout + " layout, the call's is " + req.layout;
                else if (!shape_ok)
                    skipped += std::string("tuned for shape ") + i.shape + ", the call's is " + shape_text(req.shape.vec());
                else if (!threads_ok)
                    skipped += "tuned for " + std::to_string(i.threads) + " thread(s), the call runs on " +
                               std::to_string(threads);
                else
                    skipped += std::string("tuned on a CPU with ") + i.cpu + ", this one has not";
            }
            return;
        }
        // A kernel tuned for the call's shape first, then a tuned one for any shape,
        // then the kernel list's for the call's layout, then the strided generic.
        const int rank = shaped ? 0 : 1 + (generic ? 2 : 0) + (tuned ? 0 : 1);
        if (rank < best_rank) {
            if (best && verbose)
                skipped += std::string("\n  skipped ") + best->info.name + ": less specialized than " + i.name;
            best = &k;
            best_rank = rank;
        } else if (verbose) {
            skipped += std::string("\n  skipped ") + i.name + ": less specialized than " + best->info.name;
        }
    };
    // Registered kernels first (they win ties), then the built-in table's bucket.
    const TableKey key{req.op, req.dir, dtype, req.variant, target};
    for (const Registered &r : g_registered)
        if (key_of(r.kernel) == key) consider(r.kernel);
    const TableIndex &index = table_index();
    if (auto it = index.find(key); it != index.end())
        for (const Kernel *k : it->second) consider(*k);
    if (!best) {
        *why = "no " + std::string(target) + " kernel in the kernel list for " +
               describe(req.op, req.dir, req.dtype, req.shape.vec(), req.layout) + " (variant " + req.variant + ")";
        return sel;
    }
    const size_t len = std::min(std::strlen(best->info.name), t_last_kernel.size() - 1);
    std::memcpy(t_last_kernel.data(), best->info.name, len);
    t_last_kernel[len] = 0;
    if (verbose)
        std::fprintf(stderr, "normgen: %s -> %s%s\n", describe(req.op, req.dir, req.dtype, req.shape.vec(), req.layout).c_str(),
                     best->info.name, skipped.c_str());
    sel.kernel = best;
    return sel;
}

Status run_kernel(const Kernel &k, const Args &args, int device_index) {
    init_runtime();
    const halide_filter_metadata_t *md = k.metadata_fn();
    CallContext ctx;
    void *user_context = &ctx;
    set_call_device(device_index);
    std::array<void *, 64> stack_argv{};
    std::vector<void *> heap_argv;  // (kernels with more arguments than that)
    if (md->num_arguments > static_cast<int>(stack_argv.size())) heap_argv.resize(md->num_arguments);
    void **argv = heap_argv.empty() ? stack_argv.data() : heap_argv.data();
    for (int a = 0; a < md->num_arguments; a++) {
        const char *name = md->arguments[a].name;
        if (std::strcmp(name, "__user_context") == 0) {
            argv[a] = &user_context;
            continue;
        }
        for (const auto &it : args)
            if (std::strcmp(it.name, name) == 0) argv[a] = it.ptr;
        if (!argv[a])
            return Status(Status::Code::runtime_error,
                          std::string("internal: kernel ") + k.info.name + " argument '" + name + "' was not bound");
    }
    int rc = k.argv_fn(argv);
    if (rc != 0 || !ctx.error.empty()) {
        std::string msg = std::string("kernel ") + k.info.name + " failed (code " + std::to_string(rc) + ")";
        if (!ctx.error.empty()) msg += ": " + ctx.error;
        return Status(Status::Code::runtime_error, msg);
    }
    return Status::OK();
}

Status dispatch(const Request &req, const Args &args) {
    std::string why;
    const Selection sel = select_kernel(req, &why);
    if (!sel.kernel) return Status(Status::Code::runtime_error, why);
    if (req.device == Device::cuda && !cuda_device_usable(req.device_index, &why))
        return Status(Status::Code::runtime_error, std::string(req.op) + " on CUDA tensors: no CUDA device: " + why);
    return run_kernel(*sel.kernel, args, req.device_index);
}

}  // namespace detail

std::vector<KernelInfo> kernels() {
    std::vector<KernelInfo> v;
    std::shared_lock<std::shared_mutex> lock(detail::g_registry_mu);
    detail::for_each_kernel_locked([&](const detail::Kernel &k) { v.push_back(k.info); });
    return v;
}

const char *last_kernel() { return detail::t_last_kernel.data(); }

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
// set_num_threads chose a count: registered runtimes follow it, and the openmp backend
// uses it rather than OpenMP's own.
std::atomic<bool> g_threads_set{false};
}  // namespace

int set_num_threads(int n) {
    const int previous = num_threads();
    const bool chosen = n >= 1;
    if (!chosen) n = default_threads();
    // Exclusive: concurrent calls must leave every runtime and g_threads agreeing.
    std::unique_lock<std::shared_mutex> lock(detail::g_registry_mu);
    halide_set_num_threads(n);
    for (const detail::HookedRuntime &r : detail::g_runtimes) r.hooks.set_num_threads(n);
    g_threads = n;
    g_threads_set = chosen;
    return previous;
}

namespace {

bool valid_shape(const char *s) {
    if (!*s) return true;
    bool digit = false;
    for (; *s; s++) {
        if (*s >= '0' && *s <= '9') digit = true;
        else if (*s == 'x' && digit) digit = false;
        else return false;
    }
    return digit;
}

// Why `e` cannot join the table ("" if it can): it needs a built-in kernel of the same
// op, direction, dtype and variant (so those are known values) whose arguments (name,
// kind, rank, type) are exactly its own.
std::string registration_problem(const ExternalKernel &e) {
    const KernelInfo &i = e.info;
    const std::string name = i.name ? i.name : "";
    if (name.empty() || !i.op || !i.dir || !i.dtype || !i.layout || !i.variant || !i.shape || !i.target || !i.schedule)
        return "kernel '" + name + "' has a null or empty field";
    if (!e.argv_fn || !e.metadata_fn) return "kernel " + name + " has no entry points";
    if (std::strcmp(i.target, "cpu")) return "kernel " + name + " has target '" + i.target + "'; the runtime dispatches cpu kernels";
    if (i.threads < 0) return "kernel " + name + " has threads " + std::to_string(i.threads) + "; expected 0 (any) or more";
    if (i.cpu && *i.cpu && !detail::cpu_feature(i.cpu))
        return "kernel " + name + " has cpu '" + i.cpu + "'; expected a Halide x86 feature name like avx512_zen4";
    if (!valid_shape(i.shape)) return "kernel " + name + " has shape '" + i.shape + "'; expected sizes like 8192x1024";
    const char *layouts[] = {"contig", "strided", "nchw", "nhwc"};
    if (std::none_of(std::begin(layouts), std::end(layouts), [&](const char *l) { return !std::strcmp(l, i.layout); }))
        return "kernel " + name + " has layout '" + i.layout + "' (contig, strided, nchw, nhwc)";
    const halide_filter_metadata_t *md = e.metadata_fn();
    const detail::Kernel *twin = nullptr;
    for (const detail::Kernel &k : detail::kernel_table())
        if (!std::strcmp(k.info.op, i.op) && !std::strcmp(k.info.dir, i.dir) && !std::strcmp(k.info.variant, i.variant) &&
            !std::strcmp(k.info.dtype, i.dtype)) {
            twin = &k;
            break;
        }
    const std::string what = std::string(i.op) + " " + i.dir + " " + i.dtype + " (variant '" + i.variant + "')";
    if (!twin) return "kernel " + name + ": the runtime has no " + what + " kernel to call it like";
    const halide_filter_metadata_t *tmd = twin->metadata_fn();
    auto same_arg = [](const halide_filter_argument_t &a, const halide_filter_argument_t &b) {
        return !std::strcmp(a.name, b.name) && a.kind == b.kind && a.dimensions == b.dimensions && a.type == b.type;
    };
    for (int a = 0; a < md->num_arguments; a++) {
        bool found = false;
        for (int b = 0; b < tmd->num_arguments && !found; b++) found = same_arg(md->arguments[a], tmd->arguments[b]);
        if (!found)
            return "kernel " + name + " argument '" + md->arguments[a].name + "' does not match the runtime's " + what +
                   " kernel " + twin->info.name + " (generated by another normgen version?)";
    }
    if (md->num_arguments != tmd->num_arguments)
        return "kernel " + name + " has " + std::to_string(md->num_arguments) + " arguments, the runtime's " + what +
               " kernel " + twin->info.name + " has " + std::to_string(tmd->num_arguments);
    return "";
}

}  // namespace

Status register_kernels(const ExternalKernel *kernels, size_t count, const KernelRuntimeHooks &hooks) {
    if (count && !kernels) return Status(Status::Code::invalid_argument, "register_kernels: kernels is null");
    if (!hooks.set_error_handler || !hooks.set_num_threads || !hooks.set_can_use_target_features)
        return Status(Status::Code::invalid_argument, "register_kernels: every runtime hook must be set");
    detail::init_runtime();
    for (size_t n = 0; n < count; n++) {
        std::string problem = registration_problem(kernels[n]);
        if (!problem.empty()) return Status(Status::Code::invalid_argument, "register_kernels: " + problem);
    }
    std::unique_lock<std::shared_mutex> lock(detail::g_registry_mu);
    for (size_t n = 0; n < count; n++) {
        auto same_name = [&](const KernelInfo &i) { return !std::strcmp(i.name, kernels[n].info.name); };
        bool taken = std::any_of(detail::g_registered.begin(), detail::g_registered.end(),
                                 [&](const detail::Registered &r) { return same_name(r.kernel.info); }) ||
                     std::any_of(detail::kernel_table().begin(), detail::kernel_table().end(),
                                 [&](const detail::Kernel &k) { return same_name(k.info); });
        for (size_t m = 0; m < n && !taken; m++) taken = same_name(kernels[m].info);
        if (taken)
            return Status(Status::Code::invalid_argument,
                          std::string("register_kernels: a kernel named ") + kernels[n].info.name + " is already in the table");
    }
    if (!count) return Status::OK();
    detail::HookedRuntime &r = detail::g_runtimes.emplace_back(detail::HookedRuntime{kernels, hooks});
    detail::hook_runtime(r);
    if (g_threads_set) hooks.set_num_threads(g_threads.load());
    // Front of the list: the latest registration wins ties.
    for (size_t n = count; n-- > 0;)
        detail::g_registered.push_front({detail::Kernel{kernels[n].info, kernels[n].argv_fn, kernels[n].metadata_fn}, &kernels[n]});
    return Status::OK();
}

void unregister_kernels(const ExternalKernel *kernels, size_t count) {
    // Waits for running calls into these kernels (they hold a read lock) to finish.
    std::unique_lock<std::shared_mutex> lock(detail::g_registry_mu);
    detail::g_registered.remove_if([&](const detail::Registered &r) { return r.source >= kernels && r.source < kernels + count; });
    detail::g_runtimes.remove_if([&](const detail::HookedRuntime &r) { return r.source == kernels; });
}

int num_threads() {
    if (detail::g_backend == ParallelBackend::openmp && !g_threads_set) return detail::openmp_max_threads();
    return g_threads.load();
}

Status set_parallel_backend(ParallelBackend backend) {
    if (backend != ParallelBackend::halide && backend != ParallelBackend::openmp)
        return Status(Status::Code::invalid_argument,
                      "backend: unknown parallel backend " + std::to_string(static_cast<int>(backend)) +
                          " (halide or openmp)");
    if (backend == ParallelBackend::openmp && !detail::openmp_built())
        return Status(Status::Code::runtime_error,
                      "backend: this normgen build has no OpenMP (CMake found none); the halide backend runs");
    detail::init_runtime();
    std::unique_lock<std::shared_mutex> lock(detail::g_registry_mu);
    detail::g_backend = backend;
    detail::route_parallel_loops(detail::g_own_runtime);
    for (detail::HookedRuntime &r : detail::g_runtimes) detail::route_parallel_loops(r);
    return Status::OK();
}

ParallelBackend parallel_backend() { return detail::g_backend.load(); }

std::string openmp_runtime() { return detail::openmp_runtime_path(); }

bool cuda_available(int device, std::string *why) {
    std::string reason;
    bool ok = detail::has_cuda_kernels();
    if (!ok) reason = "this normgen build has no CUDA kernels (configured with an empty NORMGEN_CUDA_TARGET)";
    else ok = detail::cuda_device_usable(device, &reason);
    if (why) *why = reason;
    return ok;
}

}  // namespace normgen

#include "jit_run.h"
#include "kernel_table.h"  // scratch_malloc, scratch_free

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>

using namespace Halide;

namespace normgen::tune {

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool in(const std::string &s, std::initializer_list<const char *> names) {
    for (const char *n : names)
        if (s == n) return true;
    return false;
}

// Apply f(float) -> float to every element of a float32/float16/bfloat16 buffer.
template <typename F>
void each_float(Buffer<> &b, F f) {
    if (b.type() == Float(32)) {
        b.as<float>().for_each_value([&](float &v) { v = f(v); });
    } else if (b.type() == Float(16)) {
        b.as<float16_t>().for_each_value([&](float16_t &v) { v = float16_t(f(float(v))); });
    } else if (b.type() == BFloat(16)) {
        b.as<bfloat16_t>().for_each_value([&](bfloat16_t &v) { v = bfloat16_t(f(float(v))); });
    } else {
        throw std::invalid_argument("unsupported buffer type " + type_to_c_type(b.type(), false));
    }
}

std::vector<double> values_of(const Buffer<> &b) {
    std::vector<double> out;
    Buffer<> c = b;
    c.copy_to_host();  // (GPU outputs: from the device)
    each_float(c, [&](float v) {
        out.push_back(v);
        return v;
    });
    return out;
}

// Load Halide's autoscheduler plugin `name` (Adams2019, Mullapudi2016, Li2018,
// Anderson2021) from the directory libHalide was loaded from (the wheel's lib64).
void load_autoscheduler(const std::string &name) {
    static std::set<std::string> loaded;
    if (loaded.count(name)) return;
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void *>(&Halide::load_plugin), &info) || !info.dli_fname)
        throw std::runtime_error("cannot locate libHalide to find the autoscheduler plugins");
    std::string dir = info.dli_fname;
    dir = dir.substr(0, dir.find_last_of('/'));
    std::string lib = name;
    std::transform(lib.begin(), lib.end(), lib.begin(), [](unsigned char c) { return std::tolower(c); });
    Halide::load_plugin(dir + "/libautoschedule_" + lib + ".so");
    loaded.insert(name);
}

}  // namespace

JitWorkload::Shape JitWorkload::shape_of(const std::string &name, int dims) const {
    const Workload &w = w_;
    Shape s;
    const bool tensor = in(name, {"x", "y", "dy", "dx", "residual", "dresidual", "s", "ds"}) ||
                        (w.generator.rfind("weight_norm", 0) == 0 && in(name, {"v", "w", "dv", "dw"}));
    if (w.row_family) {
        const int cols = static_cast<int>(w.cols()), rows = static_cast<int>(w.rows());
        if (tensor) s = {{cols, rows}, {}, w.layout == "strided"};
        else if (in(name, {"weight", "bias", "dweight", "dbias"})) s.sizes = {cols};
        else s.sizes = {rows};
        return s;
    }
    const int S = static_cast<int>(w.spatial()), C = static_cast<int>(w.channels()), N = static_cast<int>(w.batch());
    const int G = w.groups, J = G ? C / G : 0;
    const bool group_op = G > 0;
    // BatchNorm runs channels-last samples as one run of N x S positions, as the
    // runtime calls it (ChannelCall::fold_batch_into_spatial).
    const bool folded = w.layout == "nhwc" && w.generator.rfind("batch_norm_", 0) == 0;
    if (tensor) {
        if (dims == 4) s.sizes = {S, J, G, N};
        else if (folded) s.sizes = {S * N, C, 1};
        else s.sizes = {S, C, N};
        if (w.layout == "nhwc") s.storage_order = {1, 0, 2};
        s.strided = w.layout == "strided";
    } else if (name == "channel_sums") {
        s.sizes = dims == 3 ? std::vector<int>{J, G, N} : std::vector<int>{C, N};
    } else if (group_op && in(name, {"mean", "rstd", "stats"})) {
        s.sizes = {G, N};
    } else if (group_op && dims == 2) {
        s.sizes = {J, G};  // per-channel parameters of split views
    } else if (dims == 2) {
        s.sizes = {C, N};  // per-(channel, sample) statistics
    } else if (in(name, {"ln_stats", "ln_mean", "ln_var"})) {
        s.sizes = {N};
    } else if (in(name, {"mean_weight", "var_weight", "dmean_weight", "dvar_weight"})) {
        s.sizes = {3};
    } else {
        s.sizes = {C};
    }
    return s;
}

Buffer<> JitWorkload::make_buffer(const std::string &name, const Type &t, int dims, bool fill) {
    Shape s = shape_of(name, dims);
    if (static_cast<int>(s.sizes.size()) != dims)
        throw std::runtime_error("argument '" + name + "': expected " + std::to_string(dims) + " dims, the workload gives " +
                                 std::to_string(s.sizes.size()));
    Buffer<> b;
    if (s.strided) {
        std::vector<int> sizes = s.sizes;
        sizes.insert(sizes.begin(), 2);
        b = Buffer<>(t, sizes).sliced(0, 0);  // dim 0 with stride 2
    } else if (!s.storage_order.empty()) {
        b = Buffer<>(t, s.sizes, s.storage_order);
    } else {
        b = Buffer<>(t, s.sizes);
    }
    if (!fill) return b;
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(name)));
    std::normal_distribution<float> nd(1.f, 1.f);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    const bool positive = name.find("rstd") != std::string::npos || name.find("var") != std::string::npos;
    each_float(b, [&](float) {
        if (positive) return 0.5f + ud(rng);
        if (name == "rho") return ud(rng);
        return nd(rng);
    });
    b.set_host_dirty();  // GPU pipelines copy it to the device on first use
    return b;
}

Instance JitWorkload::instantiate(const std::string &knobs) {
    const double t0 = now();
    // "autoscheduler:<name>": the pipeline left to one of Halide's autoschedulers (the
    // generators skip their own schedule), with estimates from this workload's buffers.
    const std::string prefix = "autoscheduler:";
    const bool autoscheduled = knobs.rfind(prefix, 0) == 0;
    const std::string as_name = autoscheduled ? knobs.substr(prefix.size()) : "";
    if (autoscheduled) load_autoscheduler(as_name);
    auto gen = Internal::GeneratorRegistry::create(
        w_.generator, autoscheduled ? GeneratorContext(target_, AutoschedulerParams(as_name)) : GeneratorContext(target_));
    if (!gen) throw std::runtime_error("no generator named " + w_.generator);
    for (const auto &[k, v] : w_.params) gen->set_generatorparam_value(k, v);
    if (!autoscheduled) gen->set_generatorparam_value("schedule", knobs);
    Instance inst;
    inst.knobs = knobs;
    inst.pipeline = gen->build_pipeline();
    for (const auto &info : gen->arginfos()) {
        if (info.dir == Internal::ArgInfoDirection::Input) {
            for (Parameter &p : gen->input_parameter(info.name)) {
                if (!p.is_buffer()) {
                    if (p.type() == Float(32)) {  // eps; negative_slope 0 (relu)
                        const float v = info.name == "negative_slope" ? 0.f : 1e-5f;
                        p.set_scalar<float>(v);
                        p.set_estimate(Expr(v));
                    } else if (p.type() == Int(32) && info.name == "groups") {
                        p.set_scalar<int32_t>(w_.groups);
                        p.set_estimate(Expr(w_.groups));
                    } else if (p.type() == Int(32) && info.name == "activation") {
                        p.set_scalar<int32_t>(w_.activation);
                        p.set_estimate(Expr(w_.activation));
                    } else {
                        throw std::runtime_error("the tuner cannot bind scalar argument '" + info.name + "'");
                    }
                    continue;
                }
                auto it = inputs_.find(info.name);
                if (it == inputs_.end())
                    it = inputs_.emplace(info.name, info.name == "x_groups"
                                                        ? group_rows_of(inputs_.at("x"))
                                                        : make_buffer(info.name, info.types[0], info.dimensions, true))
                             .first;
                p.set_buffer(it->second);
                for (int d = 0; d < it->second.dimensions(); d++) {
                    p.set_min_constraint_estimate(d, it->second.dim(d).min());
                    p.set_extent_constraint_estimate(d, it->second.dim(d).extent());
                }
            }
        } else {
            const size_t first = inst.outputs.size();
            for (const Type &t : info.types) inst.outputs.push_back(make_buffer(info.name, t, info.dimensions, false));
            if (autoscheduled) {
                Region region;
                for (int d = 0; d < inst.outputs[first].dimensions(); d++)
                    region.push_back({inst.outputs[first].dim(d).min(), inst.outputs[first].dim(d).extent()});
                for (Func f : gen->output_func(info.name)) f.set_estimates(region);
            }
        }
    }
    if (autoscheduled) {
        const char *threads = std::getenv("HL_NUM_THREADS");
        inst.pipeline.apply_autoscheduler(
            target_, AutoschedulerParams(as_name, {{"parallelism", threads ? threads : "1"}}));
    }
    // Intermediates from the runtime's scratch cache, as in the AOT library.
    inst.pipeline.jit_handlers().custom_malloc = [](JITUserContext *, size_t n) {
        return normgen::detail::scratch_malloc(nullptr, n);
    };
    inst.pipeline.jit_handlers().custom_free = [](JITUserContext *, void *p) { normgen::detail::scratch_free(nullptr, p); };
    inst.pipeline.compile_jit(target_);
    inst.gpu = target_.has_gpu_feature();
    inst.compile_seconds = now() - t0;
    return inst;
}

// GroupNorm's x_groups: x (s, j, g, n) seen as (q, g, n), q = the group's C/G x S
// values, as the runtime passes it (the same memory, not a copy).
Buffer<> JitWorkload::group_rows_of(const Buffer<> &x) {
    std::vector<halide_dimension_t> d = {{0, x.dim(0).extent() * x.dim(1).extent(), x.dim(0).stride()},
                                         {0, x.dim(2).extent(), x.dim(2).stride()},
                                         {0, x.dim(3).extent(), x.dim(3).stride()}};
    Buffer<> rows(x.type(), const_cast<void *>(static_cast<const void *>(x.data())), 3, d.data());
    rows.set_host_dirty();  // GPU pipelines copy it to the device on first use
    return rows;
}

size_t JitWorkload::bytes(const Instance &i) const {
    size_t n = 0;
    for (const auto &[name, b] : inputs_)
        if (name != "x_groups") n += b.number_of_elements() * b.type().bytes();  // (a view of x)
    for (const Buffer<> &b : i.outputs) n += b.number_of_elements() * b.type().bytes();
    return n;
}

double JitWorkload::max_rel_diff(const Instance &a, const Instance &b) {
    double worst = 0;
    for (size_t k = 0; k < a.outputs.size() && k < b.outputs.size(); k++) {
        std::vector<double> va = values_of(a.outputs[k]), vb = values_of(b.outputs[k]);
        double scale = 1, diff = 0;
        for (size_t i = 0; i < vb.size(); i++) {
            scale = std::max(scale, std::fabs(vb[i]));
            const double d = std::fabs(va[i] - vb[i]);
            diff = std::max(diff, std::isnan(d) ? INFINITY : d);
        }
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

std::string JitWorkload::first_difference(const Instance &a, const Instance &b, double tolerance) {
    std::string all;
    for (size_t k = 0; k < a.outputs.size() && k < b.outputs.size(); k++) {
        std::vector<double> va = values_of(a.outputs[k]), vb = values_of(b.outputs[k]);
        double scale = 1;
        for (double v : vb) scale = std::max(scale, std::fabs(v));
        for (size_t i = 0; i < vb.size(); i++) {
            const double d = std::fabs(va[i] - vb[i]);
            if (std::isnan(d) || d / scale > tolerance) {
                all += (all.empty() ? "" : "; ") + std::string("output ") + std::to_string(k) + " element " +
                       std::to_string(i) + " of " + std::to_string(vb.size()) + ": " + std::to_string(va[i]) + " vs " +
                       std::to_string(vb[i]);
                break;
            }
        }
    }
    return all;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<double> time_interleaved(std::vector<Instance *> instances, int rounds, int repeats, int warmup,
                                     size_t evict_bytes) {
    std::vector<std::vector<double>> samples(instances.size());
    std::vector<unsigned char> evict(evict_bytes);
    unsigned char fill = 0;
    for (Instance *i : instances)
        for (int k = 0; k < warmup; k++) i->run();
    for (int r = 0; r < rounds; r++)
        for (size_t j = 0; j < instances.size(); j++) {
            if (evict.empty()) instances[j]->run();  // lead-in: this instance's data back in cache
            for (int k = 0; k < repeats; k++) {
                if (!evict.empty()) {
                    std::memset(evict.data(), ++fill, evict.size());
                    (void)*static_cast<volatile unsigned char *>(&evict[evict.size() / 2]);
                }
                const double t0 = now();
                instances[j]->run();
                samples[j].push_back(now() - t0);
            }
        }
    std::vector<double> out;
    for (auto &s : samples) out.push_back(median(s));
    return out;
}

}  // namespace normgen::tune

#include "workload.h"

#include "params/channel_norm_params.h"
#include "params/gpu_params.h"
#include "params/row_norm_params.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace normgen::tune {

namespace {

std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, sep)) out.push_back(item);
    return out;
}

// The searched values of a knob with legal range [lo, hi]: 0 when legal (it means
// "the target's choice" or "off"), then powers of two up to min(hi, 4096).
std::vector<int> knob_values(int lo, int hi) {
    std::vector<int> v;
    if (lo <= 0) v.push_back(0);
    for (int p = 1; p <= hi && p <= 4096; p *= 2)
        if (p >= lo) v.push_back(p);
    return v;
}

// The knobs a kernel of direction `dir` reads.
template <typename P, size_t N>
std::vector<KnobSpec> space_of(const sched::IntKnob<P> (&knobs)[N], const std::string &dir) {
    std::vector<KnobSpec> s;
    const P defaults;
    for (const auto &k : knobs)
        if (!*k.used_by || dir == k.used_by)
            s.push_back({k.name, knob_values(k.min_value, k.max_value), defaults.*(k.field)});
    return s;
}

}  // namespace

Workload Workload::parse(const std::string &descriptor) {
    std::vector<std::string> f = split(descriptor, ':');
    if (f.size() < 4 || f.size() > 5)
        throw std::invalid_argument("workload '" + descriptor + "': expected <op>:<dir>:<dtype>:<shape>[:<layout>]");
    Workload w;
    w.op = f[0];
    w.dir = f[1];
    w.dtype = f[2];
    if (w.dir != "fwd" && w.dir != "bwd" && !(w.dir == "inf" && w.op == "batch_norm"))
        throw std::invalid_argument("workload '" + descriptor + "': dir must be fwd or bwd (or inf for batch_norm)");
    if (w.dtype != "f32" && w.dtype != "f16" && w.dtype != "bf16")
        throw std::invalid_argument("workload '" + descriptor + "': dtype must be f32, f16 or bf16");
    for (const std::string &d : split(f[3], 'x')) {
        size_t used = 0;
        long long v = 0;
        try {
            v = std::stoll(d, &used);
        } catch (const std::exception &) {
            used = 0;
        }
        if (used != d.size() || v <= 0) throw std::invalid_argument("workload '" + descriptor + "': bad shape '" + f[3] + "'");
        w.shape.push_back(v);
    }
    // The fused ops of the seeds suite run their norm family's kernels with an epilogue
    // (activation code as in generators/algorithms/activation.h) or a residual add.
    struct Fused {
        const char *base;
        int activation;
        std::map<std::string, std::string> fwd, bwd;  // variant keys added to the base's
    };
    static const std::map<std::string, Fused> fused = {
        // relu runs as leaky_relu with slope 0 (as the runtime passes it).
        {"bn_add_relu", {"batch_norm", 2, {{"epilogue", "true"}, {"add_residual", "true"}},
                         {{"epilogue", "true"}, {"add_residual", "true"}}}},
        {"gn_silu", {"group_norm", 3, {{"epilogue", "true"}, {"add_residual", "false"}},
                     {{"epilogue", "true"}, {"add_residual", "false"}}}},
        {"add_layer_norm", {"layer_norm", 0, {{"add_residual", "true"}}, {{"has_ds", "true"}}}},
        {"add_rms_norm", {"rms_norm", 0, {{"add_residual", "true"}}, {{"has_ds", "true"}}}},
    };
    const auto fused_it = fused.find(w.op);
    const std::string base = fused_it == fused.end() ? w.op : fused_it->second.base;
    w.row_family = base == "layer_norm" || base == "rms_norm";
    static const char *channel_ops[] = {"batch_norm", "group_norm", "instance_norm", "batch_instance_norm",
                                        "switchable_norm", "weight_norm", "zscore"};
    bool known = w.row_family;
    for (const char *op : channel_ops) known = known || base == op;
    if (!known) throw std::invalid_argument("workload '" + descriptor + "': the tuner does not know op '" + w.op + "'");
    // zscore (a fitted scaler's transform) runs feature_affine on (samples, features),
    // features unit-stride: the channels-last kernel.
    const bool zscore = base == "zscore";
    w.layout = f.size() == 5 ? f[4] : (w.row_family ? "contig" : zscore ? "nhwc" : "nchw");
    if (w.row_family ? (w.layout != "contig" && w.layout != "strided")
                     : (w.layout != "nchw" && w.layout != "nhwc" && w.layout != "strided"))
        throw std::invalid_argument("workload '" + descriptor + "': layout '" + w.layout + "' does not fit op " + w.op);
    const size_t min_rank = base == "weight_norm" ? 1 : 2, max_rank = zscore ? 2 : 5;
    if (w.row_family ? w.shape.size() < 2 : (w.shape.size() < min_rank || w.shape.size() > max_rank))
        throw std::invalid_argument("workload '" + descriptor + "': shape rank does not fit op " + w.op);
    if (zscore && (w.dir != "fwd" || w.layout != "nhwc"))
        throw std::invalid_argument("workload '" + descriptor + "': zscore is fwd (the transform) on (samples, features)");
    if (!w.row_family) {
        int64_t rest = 1;
        for (size_t i = base == "weight_norm" ? 1 : 2; i < w.shape.size(); i++) rest *= w.shape[i];
        w.ncs = base == "weight_norm" ? std::vector<int64_t>{1, w.shape[0], rest}
                : zscore              ? std::vector<int64_t>{1, w.shape[1], w.shape[0]}
                                      : std::vector<int64_t>{w.shape[0], w.shape[1], rest};
    }
    // inf: BatchNorm's inference forward (running statistics), the training=false kernel.
    w.generator = (base == "instance_norm" ? std::string("group_norm") : zscore ? std::string("feature_affine") : base) +
                  "_" + (w.dir == "inf" ? "fwd" : w.dir);
    static const std::map<std::string, std::map<std::string, std::string>> variants = {
        {"layer_norm_fwd", {{"has_weight", "true"}, {"has_bias", "true"}}},
        {"layer_norm_bwd", {{"has_weight", "true"}}},
        {"rms_norm_fwd", {{"has_weight", "true"}}},
        {"rms_norm_bwd", {{"has_weight", "true"}}},
        {"batch_norm_fwd", {{"training", "true"}, {"affine", "true"}}},
        {"batch_norm_bwd", {{"training", "true"}, {"has_weight", "true"}}},
        {"group_norm_fwd", {{"affine", "true"}}},
        {"group_norm_bwd", {{"has_weight", "true"}}},
        {"batch_instance_norm_fwd", {{"training", "true"}}},
        {"batch_instance_norm_bwd", {{"training", "true"}}},
        {"switchable_norm_fwd", {{"training", "true"}}},
        {"switchable_norm_bwd", {{"training", "true"}}},
        {"weight_norm_fwd", {}},
        {"weight_norm_bwd", {}},
        {"feature_affine_fwd", {}},
    };
    w.variant = variants.at(w.generator);
    if (w.dir == "inf") w.variant["training"] = "false";
    if (fused_it != fused.end()) {
        if (w.dir == "inf") throw std::invalid_argument("workload '" + descriptor + "': inf is for batch_norm");
        for (const auto &[k, v] : w.dir == "fwd" ? fused_it->second.fwd : fused_it->second.bwd) w.variant[k] = v;
        w.activation = fused_it->second.activation;
    }
    w.params = w.variant;
    w.params["dtype"] = w.dtype;
    w.params["layout"] = w.layout;
    if (base == "group_norm" || base == "instance_norm") {
        // The benchmarks' convention: GroupNorm with 32 groups, InstanceNorm G = C.
        w.groups = w.op == "instance_norm" ? static_cast<int>(w.channels()) : 32;
        if (w.channels() % w.groups != 0)
            throw std::invalid_argument("workload '" + descriptor + "': C must be a multiple of 32 for group_norm");
    }
    return w;
}

std::string Workload::descriptor() const {
    std::string s = op + ":" + dir + ":" + dtype + ":";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? "x" : "") + std::to_string(shape[i]);
    return s + ":" + layout;
}

int64_t Workload::rows() const {
    int64_t r = 1;
    for (size_t i = 0; i + 1 < shape.size(); i++) r *= shape[i];
    return r;
}

std::string Workload::dispatch_shape() const {
    const std::vector<int64_t> d =
        row_family ? std::vector<int64_t>{rows(), cols()} : std::vector<int64_t>{batch(), channels(), spatial()};
    std::string s;
    for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
    return s;
}

std::string Workload::kernel_list_line(const std::string &knobs) const {
    // instance_norm runs the group_norm kernels (G = C).
    std::string s = generator.substr(0, generator.size() - 4) + " " + generator.substr(generator.size() - 3) + " dtypes=" + dtype + " layouts=" + layout;
    for (const auto &[k, v] : variant) s += " " + k + "=" + v;
    if (!knobs.empty()) s += " schedule=" + knobs;
    return s + " shape=" + dispatch_shape();
}

std::vector<KnobSpec> Workload::knob_space(const Halide::Target &target) const {
    if (target.has_gpu_feature()) return space_of(sched::GpuParams::knobs, dir);
    return row_family ? space_of(sched::RowNormCpuParams::knobs, dir) : space_of(sched::ChannelNormCpuParams::knobs, dir);
}

std::string rejected(const std::vector<KnobSpec> &space, const std::vector<int> &index, const Halide::Target &target) {
    // Every knob the kernel reads, at the point's value or the family's default; a knob
    // outside the space (another direction's, another family's) constrains nothing.
    std::map<std::string, int> v;
    for (size_t i = 0; i < space.size(); i++)
        v[space[i].name] = i < index.size() && index[i] >= 0 ? space[i].values[index[i]] : space[i].default_value;
    auto knob = [&](const char *name, int absent) {
        auto it = v.find(name);
        return it == v.end() ? absent : it->second;
    };
    if (target.has_gpu_feature()) {
        const int threads = knob("threads", 32), tile_x = knob("tile_x", 1);
        if (threads % 32) return "threads not a multiple of the warp (32)";
        if (tile_x > threads || threads % tile_x) return "tile_x does not divide threads";
        return "";
    }
    const int lanes = knob("vector_lanes", 0) > 0 ? knob("vector_lanes", 0) : target.natural_vector_size<float>();
    if (lanes * knob("accumulators", 1) > 64) return "vector_lanes x accumulators > 64";
    if (lanes * knob("out_unroll", 1) > 64) return "vector_lanes x out_unroll > 64";
    if (lanes * knob("partial_tile", 1) > 1024) return "vector_lanes x partial_tile > 1024";
    return "";
}

std::string knob_string(const std::vector<KnobSpec> &space, const std::vector<int> &index) {
    std::string s;
    for (size_t i = 0; i < space.size() && i < index.size(); i++) {
        // The family's default, by index or by value: one knob string per schedule, so
        // the search never measures the defaults twice under two names.
        if (index[i] < 0 || space[i].values[index[i]] == space[i].default_value) continue;
        if (!s.empty()) s += ",";
        s += space[i].name + ":" + std::to_string(space[i].values[index[i]]);
    }
    return s;
}

std::string canonical_knobs(const std::vector<KnobSpec> &space, const std::string &knobs) {
    std::string out;
    for (const std::string &kv : split(knobs, ',')) {
        const size_t colon = kv.find(':');
        if (colon == std::string::npos) continue;
        const std::string name = kv.substr(0, colon);
        const auto spec = std::find_if(space.begin(), space.end(), [&](const KnobSpec &k) { return k.name == name; });
        if (spec == space.end() || kv.substr(colon + 1) == std::to_string(spec->default_value)) continue;
        out += (out.empty() ? "" : ",") + kv;
    }
    return out;
}

std::vector<std::string> read_suite(const std::string &path) {
    std::ifstream in(path);
    if (!in) throw std::invalid_argument("cannot read suite file '" + path + "'");
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) {
        line = line.substr(0, line.find('#'));
        const size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
        if (a != std::string::npos) out.push_back(line.substr(a, b - a + 1));
    }
    return out;
}

}  // namespace normgen::tune

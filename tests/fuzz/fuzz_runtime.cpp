// Fuzz harness of the C++ runtime API (a libFuzzer entry point; tests/fuzz/driver.cpp
// runs it without libFuzzer). The input bytes choose an op, dtypes, ranks, shapes and
// strides (contiguous, reversed, zero, overlapping, gapped) of views carved out of one
// arena, optional parameters, aliasing and scalar arguments. Properties checked:
// no crash (the sanitizers watch), no byte changed outside the outputs' spans, and a
// failing call returns an error that names an argument and writes nothing at all.
#include "normgen/normgen.h"

#include <algorithm>
#include <array>
#include <optional>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using normgen::DType;
using normgen::Status;
using normgen::TensorView;

namespace {

struct Bytes {
    const uint8_t *p;
    size_t n, i = 0;
    uint8_t u8() { return i < n ? p[i++] : 0; }
    int pick(int k) { return k > 0 ? u8() % k : 0; }
};

constexpr size_t kArena = 1 << 16;

struct Arena {
    std::vector<uint8_t> bytes = std::vector<uint8_t>(kArena);
    std::vector<std::pair<size_t, size_t>> outputs;  // [lo, hi) byte spans that may change
};

// A view of `shape` with a stride pattern chosen by the input, placed in the arena so its
// whole span fits (the runtime cannot know allocation bounds: views must be valid).
TensorView make_view(Bytes &in, Arena &a, DType dt, std::vector<int64_t> shape, bool output) {
    const int rank = static_cast<int>(shape.size());
    std::vector<int64_t> strides(rank);
    const int pattern = in.pick(6);
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        switch (pattern) {
        case 1: strides[d] = -s; break;                        // reversed
        case 2: strides[d] = (d == rank - 1) ? 0 : s; break;   // broadcast innermost
        case 3: strides[d] = 1; break;                         // overlapping
        case 4: strides[d] = 2 * s; break;                     // gapped
        default: strides[d] = s; break;                        // contiguous (and channels-last below)
        }
        s *= std::max<int64_t>(shape[d], 1);
    }
    if (pattern == 5 && rank >= 3) {  // channels-last for (N, C, *spatial)
        int64_t st = 1;
        strides[1] = st;
        st *= std::max<int64_t>(shape[1], 1);
        for (int d = rank - 1; d >= 2; d--) strides[d] = st, st *= std::max<int64_t>(shape[d], 1);
        strides[0] = st;
    }
    const int64_t es = normgen::dtype_size(dt);
    int64_t lo = 0, hi = 0;
    bool empty = false;
    for (int d = 0; d < rank; d++) {
        if (shape[d] == 0) empty = true;
        const int64_t ext = (std::max<int64_t>(shape[d], 1) - 1) * strides[d];
        (ext < 0 ? lo : hi) += ext;
    }
    const int64_t span = (hi - lo + 1) * es;
    if (span > static_cast<int64_t>(kArena)) return TensorView{};  // too big for the arena: a null view
    const int64_t slots = (static_cast<int64_t>(kArena) - span) / es;
    const int64_t start = (slots > 0 ? (in.u8() * 251 + in.u8()) % (slots + 1) : 0) * es - lo * es;
    TensorView v = TensorView::strided(a.bytes.data() + start, dt, shape, strides);
    if (output && !empty) a.outputs.emplace_back(static_cast<size_t>(start + lo * es), static_cast<size_t>(start + lo * es + span));
    return v;
}

DType pick_dtype(Bytes &in) { return static_cast<DType>(in.pick(3)); }

std::vector<int64_t> pick_shape(Bytes &in, int min_rank, int max_rank) {
    const int rank = min_rank + in.pick(max_rank - min_rank + 1);
    std::vector<int64_t> s(rank);
    for (auto &d : s) d = in.pick(7) == 6 ? -1 : in.pick(6);  // sometimes negative
    return s;
}

const char *kNames[] = {"x", "y", "dy", "dx", "weight", "bias", "mean", "rstd", "normalized_shape", "eps", "running_mean",
                        "running_var", "save_mean", "save_rstd", "num_groups", "momentum", "residual", "dweight",
                        "dbias", "v", "g", "w", "norm", "dim", "rho", "mean_weight", "var_weight", "gamma", "beta",
                        "b_out", "w_out", "dv", "dg", "ds", "s", "X", "count", "row", "table", "sums", "dy_scaled"};

bool names_an_argument(const std::string &m) {
    for (const char *n : kNames)
        if (m.find(n) != std::string::npos) return true;
    return m.find("Expected") != std::string::npos || m.find("expected") != std::string::npos;
}

}  // namespace

// Per op: calls that succeeded and calls refused (the driver reports them).
extern "C" long long normgen_fuzz_counts[12][2];
long long normgen_fuzz_counts[12][2] = {};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Bytes in{data, size};
    Arena a;
    for (size_t i = 0; i < kArena; i++) a.bytes[i] = static_cast<uint8_t>((i * 131 + 7) & 0x7f);  // finite-ish values
    const int op = in.pick(12);
    const DType dt = pick_dtype(in), pdt = in.pick(4) == 0 ? pick_dtype(in) : dt;
    std::vector<int64_t> xs = pick_shape(in, op <= 3 ? 1 : 2, op <= 3 ? 4 : 5);
    const int64_t C = xs.size() >= 2 ? std::max<int64_t>(xs[1], 0) : 0;
    auto X = [&](bool out) { return make_view(in, a, dt, xs, out); };
    auto P = [&](std::vector<int64_t> s, bool out = false) { return make_view(in, a, pdt, s, out); };
    auto S = [&](std::vector<int64_t> s, bool out = false) { return make_view(in, a, DType::f32, s, out); };
    auto opt = [&](TensorView v) { return in.pick(3) ? std::optional<TensorView>(v) : std::nullopt; };
    const double eps = std::array<double, 4>{1e-5, 0.0, -1.0, NAN}[in.pick(4) == 0 ? in.pick(4) : 0];
    std::vector<int64_t> ns;
    for (size_t d = xs.size() - std::min<size_t>(xs.size(), 1 + in.pick(2)); d < xs.size(); d++) ns.push_back(xs[d]);
    int64_t rows = 1;
    for (size_t d = 0; d + ns.size() < xs.size(); d++) rows *= std::max<int64_t>(xs[d], 0);
    std::vector<uint8_t> before = a.bytes;
    Status s;
    int64_t counter = 0;
    switch (op) {
    case 0: case 1: {  // LayerNorm / RMSNorm forward
        TensorView x = X(false), y = X(true);
        auto w = opt(P(ns)), b = opt(P(ns));
        TensorView m = S({rows}, true), r = S({rows}, true);
        s = op == 0 ? normgen::layer_norm_forward(x, ns, w ? &*w : nullptr, b ? &*b : nullptr, eps, y, &m, &r)
                    : normgen::rms_norm_forward(x, ns, w ? &*w : nullptr, std::nullopt, y, &r);
        break;
    }
    case 2: case 3: {  // backward
        TensorView dy = X(false), x = X(false), m = S({rows}), r = S({rows}), dx = X(true);
        auto w = opt(P(ns));
        TensorView dw = P(ns, true), db = P(ns, true);
        s = op == 2 ? normgen::layer_norm_backward(dy, x, m, r, ns, w ? &*w : nullptr, dx, w ? &dw : nullptr, w ? &db : nullptr)
                    : normgen::rms_norm_backward(dy, x, r, ns, w ? &*w : nullptr, dx, w ? &dw : nullptr);
        break;
    }
    case 4: {  // BatchNorm forward (training or inference; running stats; epilogue)
        TensorView x = X(false), y = X(true);
        const bool training = in.pick(2);
        auto rm = opt(S({C}, training)), rv = opt(S({C}, training)), w = opt(P({C})), b = opt(P({C}));
        TensorView sm = S({C}, true), sr = S({C}, true);
        normgen::Epilogue ep;
        std::optional<TensorView> res;
        if (in.pick(3) == 0) res = X(false), ep.residual = &*res;
        ep.activation = static_cast<normgen::Activation>(in.pick(6));
        std::optional<double> mom = in.pick(5) ? std::optional<double>(0.1) : std::nullopt;
        s = normgen::batch_norm_forward(x, rm ? &*rm : nullptr, rv ? &*rv : nullptr, w ? &*w : nullptr, b ? &*b : nullptr,
                                        training, mom, eps, y, &sm, &sr, in.pick(2) ? &counter : nullptr, &ep);
        break;
    }
    case 5: {  // BatchNorm backward
        TensorView dy = X(false), x = X(false), sm = S({C}), sr = S({C}), dx = X(true);
        auto w = opt(P({C}));
        TensorView dw = P({C}, true), db = P({C}, true);
        s = normgen::batch_norm_backward(dy, x, sm, sr, w ? &*w : nullptr, in.pick(2), dx, w ? &dw : nullptr, w ? &db : nullptr);
        break;
    }
    case 6: {  // GroupNorm forward
        const int64_t g = 1 + in.pick(4) - (in.pick(8) == 0 ? 2 : 0);
        const int64_t N = std::max<int64_t>(xs[0], 0);
        TensorView x = X(false), y = X(true), m = S({N, std::max<int64_t>(g, 0)}, true), r = S({N, std::max<int64_t>(g, 0)}, true);
        auto w = opt(P({C})), b = opt(P({C}));
        s = normgen::group_norm_forward(x, g, w ? &*w : nullptr, b ? &*b : nullptr, eps, y, &m, &r);
        break;
    }
    case 7: {  // InstanceNorm forward
        TensorView x = X(false), y = X(true);
        const bool use_input = in.pick(2);
        auto rm = opt(S({C}, use_input)), rv = opt(S({C}, use_input)), w = opt(P({C}));
        s = normgen::instance_norm_forward(x, rm ? &*rm : nullptr, rv ? &*rv : nullptr, w ? &*w : nullptr, nullptr,
                                           use_input, 0.1, eps, y);
        break;
    }
    case 8: {  // Batch-Instance Norm forward
        const int64_t N = std::max<int64_t>(xs[0], 0);
        TensorView x = X(false), y = X(true), rho = P({C}), sm = S({N + 1, C}, true), sr = S({N + 1, C}, true);
        s = normgen::batch_instance_norm_forward(x, rho, nullptr, nullptr, nullptr, nullptr, true, 0.1, eps, y, &sm, &sr);
        break;
    }
    case 9: {  // Switchable Norm forward
        const int64_t N = std::max<int64_t>(xs[0], 0);
        TensorView x = X(false), y = X(true), mw = P({3}), vw = P({3});
        TensorView sm = S({N + 1, C + 1}, true), sv = S({N + 1, C + 1}, true), sr = S({N, C}, true);
        s = normgen::switchable_norm_forward(x, mw, vw, nullptr, nullptr, nullptr, nullptr, true, 0.1, eps, y, &sm, &sv, &sr);
        break;
    }
    case 10: {  // weight norm forward / backward
        const int dim = static_cast<int>(in.pick(static_cast<int>(xs.size()) + 1)) - 1;
        const int64_t k = dim >= 0 ? std::max<int64_t>(xs[dim], 0) : 1;
        TensorView v = X(false), g = P({k}), w = X(true), norm = S({k}, true);
        std::optional<int64_t> d = dim >= 0 ? std::optional<int64_t>(dim) : std::nullopt;
        if (in.pick(2)) {
            s = normgen::weight_norm_forward(v, g, d, w, &norm);
        } else {
            TensorView dw = X(false), nv = S({k}), dv = X(true), dg = P({k}, true);
            s = normgen::weight_norm_backward(dw, v, nv, g, d, dv, dg);
        }
        break;
    }
    default: {  // fold_batch_norm and the synchronized BatchNorm steps
        if (in.pick(2)) {
            const int64_t O = std::max<int64_t>(xs[0], 0);
            TensorView w = X(false), rm = S({O}), rv = S({O}), w2 = X(true), b2 = P({O}, true);
            auto b = opt(P({O}));
            s = normgen::fold_batch_norm(w, b ? &*b : nullptr, rm, rv, nullptr, nullptr, eps, w2, b2);
        } else {
            TensorView x = X(false), y = X(true), sm = S({C}, true), sr = S({C}, true);
            std::vector<double> table(static_cast<size_t>(2 * (1 + 2 * C)), 0.0);
            s = normgen::sync_batch_norm_moments(x, table.data());
            if (s.ok()) {
                table[1 + 2 * C] = in.pick(2) ? 0.0 : -1.0;  // the other "process": empty, or corrupt
                s = normgen::sync_batch_norm_forward(x, table.data(), 2, nullptr, nullptr, nullptr, nullptr, 0.1, eps,
                                                     y, sm, sr);
            }
        }
        break;
    }
    }
    // Properties.
    normgen_fuzz_counts[op][s.ok() ? 0 : 1]++;
    if (!s.ok()) {
        if (s.message().empty() || !names_an_argument(s.message())) {
            std::fprintf(stderr, "op %d: error names no argument: '%s'\n", op, s.message().c_str());
            std::abort();
        }
        if (a.bytes != before) {
            std::fprintf(stderr, "op %d: a failed call wrote memory: %s\n", op, s.message().c_str());
            std::abort();
        }
        return 0;
    }
    for (size_t i = 0; i < kArena; i++) {
        if (a.bytes[i] == before[i]) continue;
        bool inside = false;
        for (auto [lo, hi] : a.outputs) inside = inside || (i >= lo && i < hi);
        if (!inside) {
            std::fprintf(stderr, "op %d: byte %zu outside every output changed\n", op, i);
            std::abort();
        }
    }
    return 0;
}

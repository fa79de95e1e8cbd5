// Helpers shared by the generator families: buffer layout constraints and schedule
// selection. Generators declare inputs/outputs and glue algorithm to schedule.
#pragma once

#include "Halide.h"
#include "algorithms/activation.h"
#include "algorithms/common.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace normgen::gen {

// The memory layouts a kernel can be specialized for.
//   contig:  dim 0 has unit stride (the fast path: vector loads and stores)
//   strided: any strides (the generic path; still correct, slower)
inline bool unit_stride_layout(const std::string &layout) {
    if (layout == "contig") return true;
    if (layout == "strided") return false;
    throw std::invalid_argument("normgen: unknown layout '" + layout + "' (expected contig or strided)");
    return false;
}

// Constrain (or free) the innermost stride of every buffer argument of a kernel.
template <typename T>
void set_inner_stride(T &param, bool unit) {
    if (unit) {
        param.dim(0).set_stride(1);
    } else {
        param.dim(0).set_stride(Halide::Expr());
    }
}

template <typename T>
void constrain_layout(T &param, bool unit) {
    set_inner_stride(param, unit);
}
template <typename T>
void constrain_layout(T *param, bool unit) {  // optional arguments: null when absent
    if (param) set_inner_stride(*param, unit);
}

// Apply a layout ("contig" / "strided") to every buffer argument of a kernel.
template <typename... Ts>
void apply_layout(const std::string &layout, Ts &&...params) {
    const bool unit = unit_stride_layout(layout);
    (constrain_layout(params, unit), ...);
}

// Channel-wise kernels see (s, c, n) tensors and per-channel parameters. Layouts:
//   nchw:    s has unit stride (contiguous NCHW / NCDHW / NC)
//   nhwc:    c has unit stride (channels-last)
//   strided: any strides
inline int channel_layout_unit_dim(const std::string &layout) {
    if (layout == "nchw") return 0;
    if (layout == "nhwc") return 1;
    if (layout == "strided") return -1;
    throw std::invalid_argument("normgen: unknown channel layout '" + layout + "' (expected nchw, nhwc or strided)");
}

template <typename T>
void constrain_channel_layout(T &param, int unit_dim) {
    if (param.dimensions() <= 2) {  // per-channel parameters ((C,) or (C/G, G)): unit stride unless strided
        param.dim(0).set_stride(unit_dim < 0 ? Halide::Expr() : Halide::Expr(1));
        return;
    }
    for (int d = 0; d < param.dimensions(); d++)
        param.dim(d).set_stride(d == unit_dim ? Halide::Expr(1) : Halide::Expr());
}
template <typename T>
void constrain_channel_layout(T *param, int unit_dim) {
    if (param) constrain_channel_layout(*param, unit_dim);
}

template <typename... Ts>
void apply_channel_layout(const std::string &layout, Ts &&...params) {
    const int unit_dim = channel_layout_unit_dim(layout);
    (constrain_channel_layout(params, unit_dim), ...);
}

// Tie the row-major output's bounds to the input's extents (n columns, `rows` rows)
// and the per-row statistics output to `rows`, so fused loops share their bounds.
// (Only a Tuple output's first buffer may be constrained; the others follow it.)
template <typename O>
void tie_row_bounds(O &out, const std::vector<Halide::OutputImageParam> &stats, const Halide::Expr &n,
                    const Halide::Expr &rows) {
    out.dim(0).set_bounds(0, n);
    out.dim(1).set_bounds(0, rows);
    if (!stats.empty()) stats[0].dim(0).set_bounds(0, rows);
}

// The fused epilogue's inputs (added in configure()): the run-time activation code and
// leaky_relu slope with `epilogue`, the residual tensor with `add_residual`.
struct EpilogueInputs {
    Halide::GeneratorInput<int> *activation = nullptr;
    Halide::GeneratorInput<float> *negative_slope = nullptr;
    Halide::GeneratorInput<Halide::Buffer<>> *residual = nullptr;

    template <typename G>
    void add(G &gen, bool epilogue, bool add_residual, const Halide::Type &t, int dims) {
        if (epilogue) {
            activation = gen.template add_input<int>("activation");
            negative_slope = gen.template add_input<float>("negative_slope");
        }
        if (add_residual) residual = gen.template add_input<Halide::Buffer<>>("residual", t, dims);
    }
    alg::Epilogue get() const {
        alg::Epilogue e;
        if (activation) e.activation = *activation;
        if (negative_slope) e.negative_slope = *negative_slope;
        if (residual) e.residual = *residual;
        return e;
    }
};

}  // namespace normgen::gen

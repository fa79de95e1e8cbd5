// The shape shared by the row-wise normalizations (LayerNorm, RMSNorm): what their
// pipelines expose to a schedule. Each family's own header builds one.
// Output Funcs are named after the kernel arguments they become (y, stats, dx,
// dweight, dbias): the runtime binds arguments by those names.
#pragma once

#include "common.h"

#include <vector>

namespace normgen::alg {

// Forward: y(j, r) and per-row statistics stats(r), from reductions over columns.
struct RowNormForward {
    Func x32;                      // the input widened to float32
    // Per-row reductions, in dependence order, each with its reduction domain (a row's
    // columns, or a leading part of them).
    std::vector<std::pair<Func, RDom>> reductions;
    std::vector<Func> per_row;     // per-row values the output loop reads (mean, rstd)
    Func y;                        // output (j, r), storage type
    Func stats;                    // output (r), float32: a Tuple (mean, rstd) or rstd
    Func sum;                      // output (j, r) s = x + residual (pre-norm add), or undefined
    std::vector<Func> streamed;    // the (j, r) inputs the pipeline reads row by row (x, residual)
};

// Backward: dx(j, r) from per-row sums, and the per-column parameter gradients as
// sums over all rows (dweight, dbias), which the schedule splits into per-block
// partials and a final reduction so the result is deterministic.
struct RowNormBackward {
    Func row_sums;                 // per-row reduction over `k`
    RDom k;
    Func dx;                       // output (j, r), storage type
    std::vector<Func> streamed;    // the (j, r) inputs the pipeline reads row by row (dy, x[, ds])
    Func col_sums;                 // per-column reduction over `rows` (undefined without weight)
    RDom rows;
    std::vector<Func> param_grads; // outputs (j), storage type: dweight[, dbias]
};

// The rows a forward normalizes, in float32: x, or with a residual (the pre-norm
// transformer block's add) s = x + residual, which also becomes the output `s`
// rounded once to the storage type (y normalizes the unrounded sum).
inline void row_input(RowNormForward &p, const Func &x, const Func &residual, const Type &out_type,
                      const std::string &prefix) {
    Var j = col_var(), r = row_var();
    p.streamed = {x};
    if (residual.defined()) p.streamed.push_back(residual);
    p.x32 = Func(prefix + "_x32");
    p.x32(j, r) = residual.defined() ? widen(x(j, r)) + widen(residual(j, r)) : widen(x(j, r));
    if (residual.defined()) {
        p.sum = Func("s");
        p.sum(j, r) = narrow(p.x32(j, r), out_type);
    }
}

// The (j, r) inputs a backward reads row by row.
inline std::vector<Func> backward_streamed(const Func &dy, const Func &x, const Func &ds) {
    std::vector<Func> v = {dy, x};
    if (ds.defined()) v.push_back(ds);
    return v;
}

// dx's value plus the gradient `ds` that reached the pre-norm sum from later layers
// (when given).
inline Expr plus_ds(const Expr &dx, const Func &ds) {
    Var j = col_var(), r = row_var();
    return ds.defined() ? dx + widen(ds(j, r)) : dx;
}

}  // namespace normgen::alg

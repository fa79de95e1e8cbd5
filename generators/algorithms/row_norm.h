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
};

// Backward: dx(j, r) from per-row sums, and the per-column parameter gradients as
// sums over all rows (dweight, dbias), which the schedule splits into per-block
// partials and a final reduction so the result is deterministic.
struct RowNormBackward {
    Func row_sums;                 // per-row reduction over `k`
    RDom k;
    Func dx;                       // output (j, r), storage type
    Func col_sums;                 // per-column reduction over `rows` (undefined without weight)
    RDom rows;
    std::vector<Func> param_grads; // outputs (j), storage type: dweight[, dbias]
};

}  // namespace normgen::alg

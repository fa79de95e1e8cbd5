// CPU schedules of the row-wise family (LayerNorm, RMSNorm). They decide loop order,
// vectorization, parallelism and fusion only; they never change what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/row_norm.h"
#include "../params/row_norm_params.h"

namespace normgen::sched {

// Forward: rows in parallel tasks; within a row the reductions (rfactored into
// vector accumulators) then the output row, with the statistics output fused into
// the same row loop so each row is read from memory once.
void schedule_row_norm_forward_cpu(alg::RowNormForward &p, const RowNormCpuParams &k, const Halide::Target &t,
                                   const Halide::Expr &cols, const Halide::Expr &rows);

// Backward: cache-sized row blocks in parallel; per row the row sums then dx; per
// block the parameter-gradient partials, fused into the block loop so the block is
// re-read from cache, not memory; then a deterministic reduction over blocks.
void schedule_row_norm_backward_cpu(alg::RowNormBackward &p, const RowNormCpuParams &k, const Halide::Target &t,
                                    const Halide::Expr &cols, const Halide::Expr &rows);

}  // namespace normgen::sched

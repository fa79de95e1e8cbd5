// CUDA schedules of the row-wise family (LayerNorm, RMSNorm). They decide which
// threads compute what, never what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/row_norm.h"
#include "../params/gpu_params.h"

namespace normgen::sched {

// Forward: a block per row: its threads stride through the row together, each
// reduction ends in shared memory (per-thread partials, per-warp sums, the total), then
// the same threads write the output row with vector stores; the statistics are written
// by the same kernel.
void schedule_row_norm_forward_cuda(alg::RowNormForward &p, const GpuParams &k);

// Backward: dx as the forward (a block per row, its row sums in shared memory);
// dweight/dbias as per-(column, row block) partials, then an in-order sum over blocks.
void schedule_row_norm_backward_cuda(alg::RowNormBackward &p, const GpuParams &k);

}  // namespace normgen::sched

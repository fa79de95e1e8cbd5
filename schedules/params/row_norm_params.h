// Schedule knobs of the row-wise family (LayerNorm, RMSNorm) on CPUs. Data, not code:
// the kernel list and the tuner set them through the generator's `schedule` string.
#pragma once

#include "knobs.h"

namespace normgen::sched {

struct RowNormCpuParams {
    int vector_lanes = 0;     // float32 lanes per vector; 0 = the target's natural width
    int accumulators = 2;     // independent vector accumulators per row reduction (ILP)
    int rows_per_task = 4;    // forward: at least this many rows per parallel task
    int task_kib = 256;       // forward: at least this many KiB of input per parallel task
    int out_unroll = 1;       // vectors per iteration of the output (y / dx) loop
    int block_kib = 1024;     // backward: KiB of x + dy per row block (re-read from L2)
    int min_blocks = 8;       // backward: at least this many row blocks (parallel tasks)
    int min_block_rows = 16;  // backward: at least this many rows per block (partial traffic)
    int partial_tile = 32;    // backward: vectors per column tile of the dweight/dbias partials
    int prefetch_rows = -1;   // > 0: the output loop prefetches its inputs (0: none, -1: auto); see row_norm.cpp

    static constexpr IntKnob<RowNormCpuParams> knobs[] = {
        {"vector_lanes", &RowNormCpuParams::vector_lanes, 0, 64, "float32 lanes per vector (0: natural)"},
        {"accumulators", &RowNormCpuParams::accumulators, 1, 16, "vector accumulators per row reduction"},
        {"rows_per_task", &RowNormCpuParams::rows_per_task, 1, 1024, "forward minimum rows per parallel task", "fwd"},
        {"task_kib", &RowNormCpuParams::task_kib, 0, 65536, "forward minimum KiB of input per parallel task", "fwd"},
        {"out_unroll", &RowNormCpuParams::out_unroll, 1, 8, "vectors per output-loop iteration"},
        {"block_kib", &RowNormCpuParams::block_kib, 4, 65536, "backward KiB of x + dy per row block", "bwd"},
        {"min_blocks", &RowNormCpuParams::min_blocks, 1, 4096, "backward minimum number of row blocks", "bwd"},
        {"min_block_rows", &RowNormCpuParams::min_block_rows, 1, 4096, "backward minimum rows per block", "bwd"},
        {"partial_tile", &RowNormCpuParams::partial_tile, 1, 64, "backward vectors per partial column tile", "bwd"},
        {"prefetch_rows", &RowNormCpuParams::prefetch_rows, -1, 4, "> 0: output-loop prefetch (rows-ahead offset lost to compute_with: 1-4 alike; -1: auto)"},
    };

    static RowNormCpuParams parse(const std::string &text) {
        RowNormCpuParams p;
        parse_knobs(text, p, knobs);
        return p;
    }
    std::string str() const { return format_knobs(*this, knobs); }
};

}  // namespace normgen::sched

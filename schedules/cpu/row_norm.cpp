#include "row_norm.h"

#include "reduction.h"

#include <algorithm>

namespace normgen::sched {

using namespace Halide;

namespace {

int lanes_of(const RowNormCpuParams &k, const Target &t) {
    return k.vector_lanes > 0 ? k.vector_lanes : t.natural_vector_size<float>();
}

}  // namespace

// Measured: LayerNorm f32 1024x8192, 1 thread, defaults: 4.3 ms = 15.7 GB/s, 0.70 of glibc
// memcpy of the same bytes (normgen-jit-bench, AMD Zen 4 VM, 2 cores, 2026-11-22).
// Why: one task per few rows; three passes per row, only the first from DRAM.
void schedule_row_norm_forward_cpu(alg::RowNormForward &p, const RowNormCpuParams &k, const Target &t,
                                   const Expr &cols, const Expr &rows) {
    Var j = alg::col_var(), r = alg::row_var();
    Var rb("rb"), ri("ri"), jo("jo"), ji("ji");
    const int lanes = lanes_of(k, t);
    // A task covers at least `task_kib` of input, so short rows do not drown the thread
    // pool in tiny tasks (32768 rows of 256: 8192 tasks of 4 rows ran 2x slower on 2
    // threads than on 1); but at most the rows there are, as the task's row loop runs
    // all its (guarded) iterations: 4 rows of 8 columns took 50 us in 2048 empty ones.
    Expr task_rows = min(max(Expr(k.task_kib * 1024) / (cols * p.y.type().bytes()), k.rows_per_task),
                         max(rows, 1));
    p.y.split(r, rb, ri, task_rows, TailStrategy::GuardWithIf)
        .split(j, jo, ji, lanes * k.out_unroll, TailStrategy::GuardWithIf)
        .vectorize(ji)
        .parallel(rb);
    // Prefetch in the output loop: with the statistics fused into the row loop, Halide
    // loses the rows-ahead offset (reduction.h), so any prefetch_rows > 0 prefetches each
    // vector just before the output loop loads it. That still pays where two reductions
    // re-read the row in cache before the output loop (auto: on for LayerNorm, off for
    // RMSNorm). Measured (normgen-tune time, f32, 1 and 2 threads, 2026-12-07): LayerNorm
    // 8192x1024 and 32768x256 0.76-0.83x of no prefetch, 2048x4096 and 512x12288
    // 0.95-1.10x; RMSNorm (one reduction) 0.94-1.18x. A true next-row prefetch, placed in
    // the deviation pass (a loop compute_with does not rename), 1, 2 or 4 rows ahead, took
    // 0.97-1.71x the time of none on the four LayerNorm shapes at 1 thread, slower in 11
    // of the 12 (presumably the hardware prefetchers already stream the next row).
    const int auto_ahead = p.reductions.size() >= 2 ? 2 : 0;
    prefetch_ahead(p.y, p.streamed, jo, ri, k.prefetch_rows >= 0 ? k.prefetch_rows : auto_ahead);
    p.stats.split(r, rb, ri, task_rows, TailStrategy::GuardWithIf).parallel(rb).compute_with(p.y, ri);
    if (p.sum.defined()) {  // s = x + residual, written by the output loop (inputs in cache)
        p.sum.split(r, rb, ri, task_rows, TailStrategy::GuardWithIf)
            .split(j, jo, ji, lanes * k.out_unroll, TailStrategy::GuardWithIf)
            .vectorize(ji)
            .parallel(rb)
            .compute_with(p.y, jo);
    }
    for (auto &[f, dom] : p.reductions) vector_reduction(f, dom, r, lanes * k.accumulators, LoopLevel(p.y, ri));
    // Once per row, not per vector of the output loop (LLVM does not hoist the sqrt and
    // divisions out of it: they read the row's stack-allocated sums).
    for (Func &f : p.per_row) f.compute_at(p.y, ri).store_in(MemoryType::Stack).bound_storage(r, 1);
}

// Measured: LayerNorm f32 1024x8192, 1 thread, block_kib 1024: 7.4 ms = 13.7 GB/s, 0.66 of
// glibc memcpy of the same bytes (256 KiB blocks: 0.53) (normgen-jit-bench, Zen 4 VM, 2026-11-22).
// Why: blocks sized for L2 so the partials' second read of dy and x does not reach DRAM.
void schedule_row_norm_backward_cpu(alg::RowNormBackward &p, const RowNormCpuParams &k, const Target &t,
                                    const Expr &cols, const Expr &rows) {
    Var j = alg::col_var(), r = alg::row_var();
    Var rb("rb"), ri("ri"), jo("jo"), ji("ji");
    const int lanes = lanes_of(k, t);
    // A block is as many rows as fit `block_kib` of x and dy, so the second read of
    // the block (by the parameter-gradient partials) hits cache; but at least
    // `min_block_rows`, since each block writes and re-reads a partial row of
    // dweight/dbias (traffic ~ 16 / (12 * rows) of the data's); and at most what
    // keeps `min_blocks` parallel tasks.
    const int elem_bytes = p.dx.type().bytes();
    Expr fit = max(Expr(k.block_kib * 1024) / (cols * (2 * elem_bytes)), k.min_block_rows);
    Expr spread = max((rows + k.min_blocks - 1) / k.min_blocks, 1);
    Expr block = min(fit, spread);
    p.dx.split(r, rb, ri, block, TailStrategy::GuardWithIf)
        .split(j, jo, ji, lanes * k.out_unroll, TailStrategy::GuardWithIf)
        .vectorize(ji)
        .parallel(rb);
    // Auto: none (a prefetch of each vector before its load, as in the forward).
    // Measured as above: 1.0-1.15x of none, except LayerNorm 2048x4096 at 1 thread
    // (0.83-0.86x), which the tuner finds.
    prefetch_ahead(p.dx, p.streamed, jo, ri, std::max(k.prefetch_rows, 0));
    vector_reduction(p.row_sums, p.k, r, lanes * k.accumulators, LoopLevel(p.dx, ri));
    if (!p.col_sums.defined()) return;
    // dweight/dbias: partial(j, rb) over the rows of block rb, computed in dx's block
    // loop right after dx's rows (the block is still in cache); then the sum over
    // blocks, in block order: deterministic, no atomics. Halide fuses only pure loops,
    // so the fusion is at the block level; loops are matched by name ("rb").
    RVar rbo("rbo"), rbi("ri");
    Func partial = p.col_sums.update().split(p.rows.x, rbo, rbi, block, TailStrategy::GuardWithIf).rfactor(rbo, rb);
    partial.compute_root().vectorize(j, lanes, TailStrategy::GuardWithIf);
    // Column tiles of at most `partial_tile` vectors: the tile's accumulators stay in L1
    // while the block's rows stream through it from L2. Each tile is one more pass over
    // the block's rows, and a tile wider than the row runs its guarded, empty vectors on
    // every row (LayerNorm 32768x256 backward, 16 lanes, 1 and 2 threads: 32-vector tiles
    // 1.16-1.25x the time of 16-vector ones, two 8-vector tiles 1.10-1.17x): so as many
    // tiles as `partial_tile` needs, of equal width, none wider than the row.
    const Expr row_vectors = max((cols + lanes - 1) / lanes, 1);
    const Expr tiles = (row_vectors + k.partial_tile - 1) / k.partial_tile;
    Var jt("jt");
    partial.update()
        .split(j, jt, jo, lanes * ((row_vectors + tiles - 1) / tiles), TailStrategy::GuardWithIf)
        .split(jo, jo, ji, lanes, TailStrategy::GuardWithIf)
        .reorder(ji, jo, rbi, jt, rb)
        .vectorize(ji)
        .parallel(rb)
        .compute_with(p.dx, rb);
    p.col_sums.compute_root().vectorize(j, lanes, TailStrategy::GuardWithIf);
    p.col_sums.update().vectorize(j, lanes, TailStrategy::GuardWithIf);
    for (Func &g : p.param_grads) g.vectorize(j, lanes, TailStrategy::GuardWithIf);
}

}  // namespace normgen::sched

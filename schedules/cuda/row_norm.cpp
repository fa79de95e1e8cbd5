#include "row_norm.h"

#include "gpu_loops.h"

namespace normgen::sched {

using namespace Halide;

namespace {

// A row-shaped output out(j, r) with one block per row: `threads` threads stride through
// the row together in vectors of `vector` elements (coalesced). Returns the block level.
LoopLevel block_rows(Func out, const GpuParams &k) {
    Var j = alg::col_var(), r = alg::row_var();
    Var jo("jo"), jt("jt"), jv("jv");
    out.split(j, jo, jv, k.vector, TailStrategy::GuardWithIf)
        .split(jo, jo, jt, k.threads, TailStrategy::GuardWithIf)
        .reorder(jv, jo, jt, r)
        .vectorize(jv)
        .gpu_threads(jt)
        .gpu_blocks(r);
    return LoopLevel(out, r);
}

std::vector<RVar> rvars_of(const RDom &dom) {
    std::vector<RVar> rv;
    for (int i = 0; i < dom.dimensions(); i++) rv.push_back(dom[i]);
    return rv;
}

}  // namespace

// Not measured: no GPU on the development machine (PTX checked with ptxas only).
void schedule_row_norm_forward_cuda(alg::RowNormForward &p, const GpuParams &k) {
    LoopLevel row = block_rows(p.y, k);
    p.stats.gpu_blocks(alg::row_var()).compute_with(p.y, alg::row_var());
    if (p.sum.defined()) {
        block_rows(p.sum, k);
        p.sum.compute_with(p.y, alg::row_var());
    }
    for (auto &[f, dom] : p.reductions) gpu::block_reduce_at(f, rvars_of(dom), row, k.threads);
    for (Func &f : p.per_row) f.compute_at(row);
}

void schedule_row_norm_backward_cuda(alg::RowNormBackward &p, const GpuParams &k) {
    LoopLevel row = block_rows(p.dx, k);
    gpu::block_reduce_at(p.row_sums, rvars_of(p.k), row, k.threads);
    if (!p.col_sums.defined()) return;
    // partial(j, rb): columns across threads (coalesced), rows of block rb in order.
    gpu::two_phase_reduction(p.col_sums, p.rows, {Expr(k.block_rows)}, false, k);
    for (Func &g : p.param_grads) gpu::thread_per_point(g, k);
}

}  // namespace normgen::sched

#include "group_norm.h"

#include "reduction.h"

namespace normgen::sched {

using namespace Halide;

namespace {

int lanes_of(const ChannelNormCpuParams &k, const Target &t) {
    return k.vector_lanes > 0 ? k.vector_lanes : t.natural_vector_size<float>();
}

// Loops of an (s, j, g, n) output in memory order: samples, then tasks of whole groups
// (at least `block_kib` of data each; one small group per task drowned 7x7 shapes in
// task overhead), then the group's channels and spatial positions (vectorized).
// Returns the per-group loop var. (Fusing (g, n) into one parallel loop would balance
// N = 1 better, but Halide then loses the per-group bounds of the statistics.)
Var group_tasks(Func out, const Expr &groups_per_task, int width) {
    Var s = alg::spatial_var(), g = alg::group_var(), go("go"), gi("gi");
    out.split(g, go, gi, groups_per_task, TailStrategy::GuardWithIf).parallel(go);
    vectorized(out, s, width);
    return gi;
}

Expr groups_per_task(const Func &out, const Expr &spatial, const Expr &group_size, const ChannelNormCpuParams &k) {
    return max(Expr(k.block_kib * 1024) / (spatial * group_size * out.type().bytes()), 1);
}

}  // namespace

// Measured: see bench/results/channel_norm.md.
// Why: a (group, sample) is one contiguous run of (C/G) x S values in NCHW, kept in
// cache between the statistics passes and the output pass; other layouts use the same
// loops (correct, with strided loads).
void schedule_group_norm_forward_cpu(alg::GroupNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                     const std::string &layout, const Expr &spatial, const Expr &group_size) {
    (void)layout;
    Var g = alg::group_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    Expr per_task = groups_per_task(p.y, spatial, group_size, k);
    Var task = group_tasks(p.y, per_task, lanes * k.out_unroll);
    Var go("go");
    p.stats.split(g, go, task, per_task, TailStrategy::GuardWithIf).parallel(go).compute_with(p.y, task);
    for (Func &f : p.reductions) vector_reduction(f, p.k, {g, n}, lanes * k.accumulators, LoopLevel(p.y, task));
    // Once per group, not per vector of the output loop (see schedules/cpu/row_norm.cpp).
    for (Func &f : p.per_group)
        f.compute_at(p.y, task).store_in(MemoryType::Stack).bound_storage(g, 1).bound_storage(n, 1);
}

void schedule_group_norm_backward_cpu(alg::GroupNormBackward &p, const ChannelNormCpuParams &k, const Target &t,
                                      const std::string &layout, const Expr &spatial, const Expr &group_size) {
    (void)layout;
    Var j = alg::in_group_var(), g = alg::group_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    Var task = group_tasks(p.dx, groups_per_task(p.dx, spatial, group_size, k), lanes * k.out_unroll);
    vector_reduction(p.group_sums, p.k, {g, n}, lanes * k.accumulators, LoopLevel(p.dx, task));
    if (!p.param_sums.defined()) return;
    // Per-channel sums over s (vector partials per sample, in parallel), then over
    // the partials' lanes and the samples.
    Var v("gn_ps_lane");
    RVar ko("gn_ps_ko"), ki("gn_ps_ki");
    p.param_sums.compute_root();
    Func partial = p.param_sums.update()
                       .split(p.ks.x, ko, ki, lanes * k.accumulators, TailStrategy::GuardWithIf)
                       .rfactor(ki, v);
    partial.compute_root().reorder_storage(v, j, g, n).vectorize(v).parallel(n);
    partial.update().reorder(v, ko, j, g, n).vectorize(v).parallel(n);
    p.param_total.compute_root();
    for (Func &f : p.param_grads) f.compute_root();
}

}  // namespace normgen::sched

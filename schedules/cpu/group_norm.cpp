#include "group_norm.h"

#include "channel_loops.h"

namespace normgen::sched {

using namespace Halide;

namespace {

// (s, j, g, n) views (nchw, strided): parallel tasks of whole groups of one sample,
// at least `block_kib` of data each (one small group per task drowned 7x7 shapes in
// task overhead); samples in parallel too (nested), so neither N = 1 nor few groups
// per sample leave a thread idle. (Fusing the (group block, sample) loops instead
// lost the statistics' bounds: the outputs' loop extents are not provably equal.)
// Returns the per-group loop, where everything per group is computed.
Var group_tasks(Stage out, const Expr &per_task) {
    Var g = alg::group_var(), n = alg::batch_var(), go("go"), gi("gi");
    out.split(g, go, gi, per_task, TailStrategy::GuardWithIf).parallel(go).parallel(n);
    return gi;
}

// At most the groups there are: the task loop runs `per_task` guarded iterations, so
// 256 KiB tasks over 2x2 images (8192 groups per task, 8 real) spent 0.16 ms on empty
// ones where the whole call needs 0.01 ms.
Expr groups_per_task(const Func &out, const Expr &spatial, const alg::GroupIndexing &gi, const ChannelNormCpuParams &k) {
    return clamp(Expr(k.block_kib * 1024) / (spatial * gi.group_size * out.types()[0].bytes()), 1, gi.groups);
}

// Per-(channel, sample) and per-(group, sample) values computed where the output loop
// needs them: a whole sample's (flat views) or one group's (split views).
void per_group_level(const std::vector<Func> &fs, const LoopLevel &at, bool flat, int lanes,
                     const std::optional<LoopLevel> &store = std::nullopt) {
    Var g = alg::group_var(), c = alg::channel_var(), n = alg::batch_var();
    for (Func f : fs) {
        f.compute_at(at).store_at(store.value_or(at)).bound_storage(n, 1);
        const bool per_group = f.args()[0].name() == g.name();
        if (flat && !per_group) {
            vectorized(f, c, lanes);
        } else if (!flat && per_group) {
            f.store_in(MemoryType::Stack).store_at(at).bound_storage(g, 1);
        }
    }
}

}  // namespace

// Measured: see bench/results/channel_norm.md.
// Why: statistics are per (channel, sample) reductions over s merged per group, so
// each layout vectorizes along its unit-stride dim and reads the data once for them.
// nchw: a (group, sample) is one contiguous run of (C/G) x S values, reduced and then
// normalized by the same task while it is in cache. nhwc: a sample's channels are
// interleaved, so a task is a sample: per-channel vector partials over its positions,
// then the output pass over the same (cache-resident for typical sizes) sample.
void schedule_group_norm_forward_cpu(alg::GroupNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                     const std::string &layout, const alg::GroupIndexing &gi,
                                     const Expr &spatial) {
    Var s = alg::spatial_var(), j = alg::in_group_var(), g = alg::group_var(), c = alg::channel_var(),
        n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    const bool flat = gi.is_flat();
    if (flat) {
        (void)layout;
        const Expr channels = gi.groups * gi.group_size;
        const std::vector<Expr> cases = activation_cases(p.activation);
        p.y.parallel(n);
        channel_chunks(p.y, c, {s}, {n}, lanes, k.channel_vectors, channels, cases);
        p.stats.parallel(n).compute_with(p.y, n);
        LoopLevel at(p.y, n);
        // (Computed inside y's per-activation loop nests, so without chunk sizes when
        // there are cases: each size would be compiled once per case.)
        const int stat_vectors = cases.empty() ? k.channel_vectors : 0;
        channels_last_reduction(p.pilot_sum, p.pilot, lanes, at, stat_vectors, channels);
        channels_last_reduction(p.dev, p.k, lanes, at, stat_vectors, channels);
        per_group_level({p.shift}, at, flat, lanes);
        per_group_level(p.per_group, at, flat, lanes);
        per_group_level(p.per_channel, at, flat, lanes);
        return;
    }
    Expr per_task = groups_per_task(p.y, spatial, gi, k);
    Var task = group_tasks(p.y, per_task);
    vectorized(p.y, s, lanes * k.out_unroll);
    group_tasks(p.stats, per_task);
    p.stats.compute_with(p.y, task);
    LoopLevel at(p.y, task), store(p.y, Var("go"));
    if (p.group_rows) {  // a group's statistics: one row reduction, as LayerNorm's
        vector_reduction(p.pilot_sum, p.pilot, {g, n}, lanes * k.accumulators, at);
        vector_reduction(p.dev, p.k, {g, n}, lanes * k.accumulators, at);
        per_group_level({p.shift}, at, flat, lanes);
    } else {
        vector_reduction(p.pilot_sum, p.pilot, {n}, lanes * k.accumulators, at, {j, g}, store);
        vector_reduction(p.dev, p.k, {n}, lanes * k.accumulators, at, {j, g}, store);
        per_group_level({p.shift}, at, flat, lanes, store);
    }
    per_group_level(p.per_group, at, flat, lanes);
    per_group_level(p.per_channel, at, flat, lanes, store);
    specialize_cases(p.y, activation_cases(p.activation));
}

void schedule_group_norm_backward_cpu(alg::GroupNormBackward &p, const ChannelNormCpuParams &knobs, const Target &t,
                                      const std::string &layout, const alg::GroupIndexing &gi,
                                      const Expr &spatial) {
    const ChannelNormCpuParams k = backward_knobs(knobs, t, p.activation.defined());
    Var s = alg::spatial_var(), j = alg::in_group_var(), g = alg::group_var(), c = alg::channel_var(),
        n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    const bool flat = gi.is_flat();
    const bool with_params = p.channel_sums.defined();
    const std::vector<Expr> cases = activation_cases(p.activation);
    LoopLevel at;
    if (flat) {
        (void)layout;
        p.dx.parallel(n);
        channel_chunks(p.dx, c, {s}, {n}, lanes, k.channel_vectors, gi.groups * gi.group_size, cases);
        at = LoopLevel(p.dx, n);
        if (with_params) {
            p.channel_sums.parallel(n).compute_with(p.dx, n);
            vectorized(p.channel_sums, c, lanes);
        }
        channels_last_reduction(p.sums, p.k, lanes, at, k.channel_vectors, gi.groups * gi.group_size, cases);
        per_group_level(p.per_channel_in, at, flat, lanes);
        per_group_level({p.group_sums}, at, flat, lanes);
        per_group_level(p.per_channel, at, flat, lanes);
    } else {
        Expr per_task = groups_per_task(p.dx, spatial, gi, k);
        Var task = group_tasks(p.dx, per_task);
        vectorized(p.dx, s, lanes * k.out_unroll);
        at = LoopLevel(p.dx, task);
        LoopLevel store(p.dx, Var("go"));
        if (with_params) {
            group_tasks(p.channel_sums, per_task);
            p.channel_sums.compute_with(p.dx, task);
        }
        per_group_level(p.per_channel_in, at, flat, lanes, store);
        vector_reduction(p.sums, p.k, {n}, lanes * k.accumulators, at, {j, g}, store, cases);
        per_group_level({p.group_sums}, at, flat, lanes);
        per_group_level(p.per_channel, at, flat, lanes, store);
        specialize_cases(p.dx, cases);
    }
    if (!with_params) return;
    // Sums over samples of the per-(channel, sample) sums: C x N values.
    for (Func f : p.param_grads) {
        f.compute_root();
        vectorized(f, flat ? c : j, lanes);
    }
}


}  // namespace normgen::sched

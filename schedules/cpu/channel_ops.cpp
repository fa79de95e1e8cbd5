#include "channel_ops.h"

#include "channel_loops.h"

namespace normgen::sched {

using namespace Halide;

namespace {

void per_channel_root(const std::vector<Func> &fs, int lanes) {
    for (Func f : fs) {
        f.compute_root();
        vectorized(f, alg::channel_var(), lanes);
    }
}

}  // namespace

// The per-channel reductions of weights and data sets: (s, c, n) views where n is
// often 1 (weight_norm's default dim = 0: no dims before it; a column-major data set),
// so NCHW-like layouts reduce each channel in its own parallel task (vectors along the
// unit-stride s) rather than in BatchNorm's blocks of samples, which would leave one.
static void per_channel_reduction(Func f, const RDom &k, const ChannelNormCpuParams &kp, const Target &t,
                           const ChannelShape &shape, int elem_bytes) {
    if (shape.layout == "nchw") {
        strided_channel_reduction(f, k, lanes_of(kp, t) * kp.accumulators);
        return;
    }
    channel_reduction(f, k, shape.layout, kp, t, shape.spatial, shape.channels, shape.batch, elem_bytes);
}

// Measured (weight_norm:fwd:f32:4096x4096, 1 thread, AMD EPYC Zen 4 VM, 2026-12-06, `normgen-tune
// time`): fused 0.64x the time of the root-reduction schedule it replaced.
// Why: channels-last reduces in blocks of positions (vectors across channels), then
// writes; otherwise each channel's (s, n) slice (a weight's row: 16 KiB for 4096
// inputs) is reduced and then scaled by the same task while it is in L1/L2, so v is
// read from memory once, not twice.
void schedule_weight_norm_forward_cpu(alg::WeightNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                      const ChannelShape &shape) {
    const int lanes = lanes_of(k, t);
    if (shape.layout == "nhwc") {
        per_channel_reduction(p.sumsq, p.k, k, t, shape, p.w.type().bytes());
        per_channel_root({p.norm, p.scale}, lanes);
        channel_elementwise(p.w, shape.layout, k, t, shape.spatial, shape.channels);
        return;
    }
    Var c = alg::channel_var();
    Var ci = channel_tasks(p.w, k);
    vectorized(p.w, alg::spatial_var(), lanes * k.out_unroll);
    with_channel_tasks(p.norm, p.w, ci, k);
    vector_reduction(p.sumsq, p.k, c, lanes * k.accumulators, LoopLevel(p.w, ci));
    p.scale.compute_at(p.w, ci).store_in(MemoryType::Stack).bound_storage(c, 1);
}

void schedule_weight_norm_backward_cpu(alg::WeightNormBackward &p, const ChannelNormCpuParams &k,
                                       const Target &t, const ChannelShape &shape) {
    const int lanes = lanes_of(k, t);
    if (shape.layout == "nhwc") {
        per_channel_reduction(p.dot, p.k, k, t, shape, p.dv.type().bytes());
        per_channel_root(p.per_channel, lanes);
        per_channel_root({p.dg}, lanes);
        channel_elementwise(p.dv, shape.layout, k, t, shape.spatial, shape.channels);
        return;
    }
    Var c = alg::channel_var();
    Var ci = channel_tasks(p.dv, k);
    vectorized(p.dv, alg::spatial_var(), lanes * k.out_unroll);
    with_channel_tasks(p.dg, p.dv, ci, k);
    vector_reduction(p.dot, p.k, c, lanes * k.accumulators, LoopLevel(p.dv, ci));
    for (Func f : p.per_channel) f.compute_at(p.dv, ci).store_in(MemoryType::Stack).bound_storage(c, 1);
}

void schedule_fold_batch_norm_cpu(alg::FoldBatchNorm &p, const ChannelNormCpuParams &k, const Target &t,
                                  const ChannelShape &shape) {
    per_channel_root({p.scale, p.b}, lanes_of(k, t));
    channel_elementwise(p.w, shape.layout, k, t, shape.spatial, shape.channels);
}

void schedule_feature_stats_cpu(alg::FeatureStats &p, const ChannelNormCpuParams &k, const Target &t,
                                const ChannelShape &shape) {
    const int lanes = lanes_of(k, t);
    Var c = alg::channel_var();
    p.pilot_sum.compute_root();
    vectorized(p.pilot_sum, c, lanes);
    vectorized(p.pilot_sum.update().reorder(c, p.pilot.x, p.pilot.y), c, lanes);
    per_channel_root({p.shift}, lanes);
    per_channel_reduction(p.acc, p.k, k, t, shape, 4);
    vectorized(p.stats, c, lanes);
}

void schedule_feature_affine_cpu(alg::FeatureAffine &p, const ChannelNormCpuParams &k, const Target &t,
                                 const ChannelShape &shape) {
    channel_elementwise(p.y, shape.layout, k, t, shape.spatial, shape.channels);
}

}  // namespace normgen::sched

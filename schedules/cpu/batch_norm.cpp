#include "batch_norm.h"

#include "reduction.h"

namespace normgen::sched {

using namespace Halide;

namespace {

int lanes_of(const ChannelNormCpuParams &k, const Target &t) {
    return k.vector_lanes > 0 ? k.vector_lanes : t.natural_vector_size<float>();
}

// Channels-last reductions: vectorized across channels, the (s, n) domain split into
// parallel blocks whose per-channel partials are then summed in block order.
void blocked_channel_reduction(Func f, const RDom &k, const Var &c, int lanes, const Expr &spatial,
                               const Expr &channels, const ChannelNormCpuParams &kp, int elem_bytes) {
    Var sb("sb");
    RVar so(f.name() + "_so"), si(f.name() + "_si");
    Expr fit = max(Expr(kp.block_kib * 1024) / (channels * elem_bytes), 1);
    Expr spread = max((spatial + kp.min_blocks - 1) / kp.min_blocks, 1);
    Expr block = min(fit, spread);
    f.compute_root();
    Func partial = f.update().split(k.x, so, si, block, TailStrategy::GuardWithIf).rfactor(so, sb);
    partial.compute_root();
    vectorized(partial, c, lanes);
    vectorized(partial.update().reorder(c, si, k.y, sb), c, lanes);
    partial.update().parallel(sb);
    vectorized(f, c, lanes);
    vectorized(f.update(), c, lanes);
}

}  // namespace

// Measured: see bench/results/channel_norm.md (tools/dev.sh bench --suite bench/suites/channel_norm.txt).
// Why: NCHW processes one channel at a time (its N x S values stay in L2 between the
// statistics passes and the output pass: one read of x from memory); channels-last
// vectorizes across channels and reduces in parallel (s, n) blocks.
void schedule_batch_norm_forward_cpu(alg::ChannelNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                     const std::string &layout, const Expr &spatial, const Expr &channels) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    const bool training = p.stats.defined();
    if (layout == "nhwc") {
        Var sb("sb"), so("so"), sn("sn");
        p.y.reorder(c, s, n);
        vectorized(p.y, c, lanes * k.out_unroll);
        Expr rows = max(Expr(k.block_kib * 1024) / (channels * p.y.type().bytes()), 1);
        p.y.split(s, so, s, rows, TailStrategy::GuardWithIf).fuse(so, n, sn).parallel(sn);
        if (training) {
            for (Func &f : p.reductions)
                blocked_channel_reduction(f, p.k, c, lanes, spatial, channels, k, p.y.type().bytes());
            p.stats.compute_root();
            vectorized(p.stats, c, lanes);
        }
        return;
    }
    // nchw and strided: channel-at-a-time.
    p.y.reorder(s, n, c).parallel(c);
    vectorized(p.y, s, lanes * k.out_unroll);
    if (training) {
        p.stats.parallel(c).compute_with(p.y, c);
        for (Func &f : p.reductions) vector_reduction(f, p.k, c, lanes * k.accumulators, LoopLevel(p.y, c));
    }
}

void schedule_batch_norm_backward_cpu(alg::ChannelNormBackward &p, const ChannelNormCpuParams &k, const Target &t,
                                      const std::string &layout, const Expr &spatial, const Expr &channels) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    if (layout == "nhwc") {
        Var so("so"), sn("sn");
        p.dx.reorder(c, s, n);
        vectorized(p.dx, c, lanes * k.out_unroll);
        Expr rows = max(Expr(k.block_kib * 1024) / (channels * p.dx.type().bytes()), 1);
        p.dx.split(s, so, s, rows, TailStrategy::GuardWithIf).fuse(so, n, sn).parallel(sn);
        blocked_channel_reduction(p.sums, p.k, c, lanes, spatial, channels, k, p.dx.type().bytes());
        for (Func &g : p.param_grads) vectorized(g, c, lanes);
        return;
    }
    p.dx.reorder(s, n, c).parallel(c);
    vectorized(p.dx, s, lanes * k.out_unroll);
    vector_reduction(p.sums, p.k, c, lanes * k.accumulators, LoopLevel(p.dx, c));
    for (Func &g : p.param_grads) g.parallel(c).compute_with(p.dx, c);
}

}  // namespace normgen::sched

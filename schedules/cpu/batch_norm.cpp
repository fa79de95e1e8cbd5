#include "batch_norm.h"

#include "channel_loops.h"

namespace normgen::sched {

using namespace Halide;

// Measured: see bench/results/channel_norm.md (tools/dev.sh bench --suite bench/suites/channel_norm.txt).
// Why: the statistics need one full pass (shifted by a pilot mean) before the output
// pass; both passes stream memory in order (NCHW: vectors along spatial, per-channel
// partials per block of samples; channels-last: vectors across channels, partials per
// block of positions), so tensors that fit the last-level cache are read from it twice.
void schedule_batch_norm_forward_cpu(alg::ChannelNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                     const std::string &layout, const Expr &spatial, const Expr &channels,
                                     const Expr &batch) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    const bool training = p.stats.defined();
    if (layout == "nhwc") {
        if (training) {
            p.pilot_sum.compute_root();
            vectorized(p.pilot_sum, c, lanes);
            vectorized(p.pilot_sum.update().reorder(c, p.pilot.x, p.pilot.y), c, lanes);
            blocked_channel_reduction(p.dev, p.k, c, lanes, spatial, channels, k, p.y.type().bytes());
            p.stats.compute_root();
            vectorized(p.stats, c, lanes);
        }
        // Per-channel vectors computed once, not per row of the output loop.
        for (Func &f : p.per_channel) {
            f.compute_root();
            vectorized(f, c, lanes);
        }
        channel_elementwise(p.y, layout, k, t, spatial, channels, activation_cases(p.activation));
        return;
    }
    if (layout == "nchw") {
        // Memory order throughout: the statistics pass streams (n, c, s) accumulating
        // per-channel vector partials for blocks of samples (parallel), the output pass
        // streams again; a tensor that fits the last-level cache is re-read from it.
        channel_elementwise(p.y, layout, k, t, spatial, channels, activation_cases(p.activation));
        for (Func &f : p.per_channel) f.compute_root();
        if (training) {
            p.pilot_sum.compute_root();
            streaming_nchw_reduction(p.dev, p.k, c, lanes * k.accumulators, batch, k.min_blocks);
            p.stats.compute_root();
        }
        return;
    }
    // strided: channel-at-a-time, tasks of `channels_per_task` channels.
    Var ci = channel_tasks(p.y, k);
    vectorized(p.y, s, lanes * k.out_unroll);
    if (training) {
        with_channel_tasks(p.stats, p.y, ci, k);
        vector_reduction(p.pilot_sum, p.pilot, c, lanes * k.accumulators, LoopLevel(p.y, ci));
        vector_reduction(p.dev, p.k, c, lanes * k.accumulators, LoopLevel(p.y, ci));
    }
    for (Func &f : p.per_channel) f.compute_at(p.y, ci).store_in(MemoryType::Stack).bound_storage(c, 1);
    specialize_cases(p.y, activation_cases(p.activation));
}

void schedule_batch_norm_backward_cpu(alg::ChannelNormBackward &p, const ChannelNormCpuParams &knobs, const Target &t,
                                      const std::string &layout, const Expr &spatial, const Expr &channels,
                                      const Expr &batch) {
    const ChannelNormCpuParams k = backward_knobs(knobs, t, p.activation.defined());
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(k, t);
    const std::vector<Expr> cases = activation_cases(p.activation);
    if (layout == "nhwc") {
        channel_elementwise(p.dx, layout, k, t, spatial, channels, cases);
        blocked_channel_reduction(p.sums, p.k, c, lanes, spatial, channels, k, p.dx.types()[0].bytes(), cases);
        for (Func &g : p.param_grads) vectorized(g, c, lanes);
        return;
    }
    if (layout == "nchw") {
        channel_elementwise(p.dx, layout, k, t, spatial, channels, cases);
        streaming_nchw_reduction(p.sums, p.k, c, lanes * k.accumulators, batch, k.min_blocks, cases);
        for (Func &g : p.param_grads) g.compute_root();
        return;
    }
    p.dx.reorder(s, n, c).parallel(c);
    vectorized(p.dx, s, lanes * k.out_unroll);
    specialize_cases(p.dx, cases);
    vector_reduction(p.sums, p.k, std::vector<Var>{c}, lanes * k.accumulators, LoopLevel(p.dx, c), {}, std::nullopt,
                     cases);
    for (Func &g : p.param_grads) g.parallel(c).compute_with(p.dx, c);
}

}  // namespace normgen::sched

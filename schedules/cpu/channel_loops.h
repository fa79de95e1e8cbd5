// Loop structures shared by the channel-wise families on (s, c, n) views: per-channel
// reductions over (s, n) and elementwise outputs, for each layout (nchw: s
// unit-stride; nhwc: c unit-stride; strided: any).
#pragma once

#include "reduction.h"
#include "../params/channel_norm_params.h"
#include "../specialize.h"
#include "../../generators/algorithms/channel_norm.h"

#include <string>

namespace normgen::sched {

inline int lanes_of(const ChannelNormCpuParams &k, const Halide::Target &t) {
    return k.vector_lanes > 0 ? k.vector_lanes : t.natural_vector_size<float>();
}

using namespace Halide;

// Channels-last reductions: vectorized across channels, the (s, n) domain split into
// parallel blocks whose per-channel partials are then summed in block order.
inline void blocked_channel_reduction(Func f, const RDom &k, const Var &c, int lanes, const Expr &spatial,
                               const Expr &channels, const ChannelNormCpuParams &kp, int elem_bytes,
                               const std::vector<Expr> &cases = {}) {
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
    specialize_cases(partial.update(), cases);
    vectorized(f, c, lanes);
    vectorized(f.update(), c, lanes);
}

// NCHW reductions f(c) over (s, n) in memory order: vectors along s, per-channel
// vector partials for blocks of samples (the parallel tasks), summed in block order.
inline void streaming_nchw_reduction(Func f, const RDom &k, const Var &c, int width, const Expr &batch, int min_blocks,
                                     const std::vector<Expr> &cases = {}) {
    Var v(f.name() + "_lane"), nb(f.name() + "_nb");
    RVar ko(f.name() + "_ko"), ki(f.name() + "_ki"), nbo(f.name() + "_nbo"), nbi(f.name() + "_nbi");
    Expr per_block = max(batch / min_blocks, 1);
    Func partial = f.update()
                       .split(k.x, ko, ki, width, TailStrategy::GuardWithIf)
                       .split(k.y, nbo, nbi, per_block, TailStrategy::GuardWithIf)
                       .rfactor({{ki, v}, {nbo, nb}});
    partial.compute_root().reorder_storage(v, c, nb).vectorize(v);
    partial.update().reorder(v, ko, c, nbi, nb).vectorize(v).parallel(nb);
    specialize_cases(partial.update(), cases);
    f.compute_root();
}

// NCHW outputs in memory order; a parallel task covers whole (channel, sample) runs
// worth at least `block_kib` (one run per task drowned 7x7 and 28x28 shapes in task
// overhead: 2 threads ran slower than 1).
inline void nchw_output_tasks(Func out, const Expr &spatial, const ChannelNormCpuParams &k) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var(), cn("cn"), cno("cno"), cni("cni");
    Expr runs = max(Expr(k.block_kib * 1024) / (spatial * out.types()[0].bytes()), 1);
    out.reorder(s, c, n).fuse(c, n, cn).split(cn, cno, cni, runs, TailStrategy::GuardWithIf).parallel(cno);
}

// Channels-last per-(c, n) reduction over s for one sample: positions in order,
// vectors across channels (partials per channel live in L1).
inline void channels_last_reduction(Func f, const RDom &k, int lanes, const LoopLevel &at,
                             const std::vector<Expr> &cases = {}) {
    Var c = alg::channel_var(), n = alg::batch_var();
    f.compute_at(at).bound_storage(n, 1);
    vectorized(f, c, lanes);
    vectorized(f.update().reorder(c, k.x), c, lanes);
    specialize_cases(f.update(), cases);
}

// Any strides: per channel (in parallel), vector partials along s, summed.
inline void strided_channel_reduction(Func f, const RDom &k, int width) {
    Var c = alg::channel_var(), v(f.name() + "_lane");
    RVar ko(f.name() + "_ko"), ki(f.name() + "_ki");
    f.compute_root();
    Func partial = f.update().split(k.x, ko, ki, width, TailStrategy::GuardWithIf).rfactor(ki, v);
    partial.compute_root().reorder_storage(v, c).vectorize(v).parallel(c);
    partial.update().reorder(v, ko, k.y, c).vectorize(v).parallel(c);
    f.update().parallel(c);
}

// A per-channel reduction f(c) over k = (s, n), computed at root for `layout`.
inline void channel_reduction(Func f, const RDom &k, const std::string &layout, const ChannelNormCpuParams &kp,
                              const Target &t, const Expr &spatial, const Expr &channels, const Expr &batch,
                              int elem_bytes) {
    const int lanes = lanes_of(kp, t);
    if (layout == "nhwc") {
        blocked_channel_reduction(f, k, alg::channel_var(), lanes, spatial, channels, kp, elem_bytes);
    } else if (layout == "nchw") {
        streaming_nchw_reduction(f, k, alg::channel_var(), lanes * kp.accumulators, batch, kp.min_blocks);
    } else {
        strided_channel_reduction(f, k, lanes * kp.accumulators);
    }
}

// An elementwise (s, c, n) output in memory order for `layout`, in parallel tasks.
inline void channel_elementwise(Func out, const std::string &layout, const ChannelNormCpuParams &kp,
                                const Target &t, const Expr &spatial, const Expr &channels) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(kp, t);
    if (layout == "nhwc") {
        Var so("so"), sn("sn");
        out.reorder(c, s, n);
        vectorized(out, c, lanes * kp.out_unroll);
        Expr rows = max(Expr(kp.block_kib * 1024) / (channels * out.types()[0].bytes()), 1);
        out.split(s, so, s, rows, TailStrategy::GuardWithIf).fuse(so, n, sn).parallel(sn);
    } else if (layout == "nchw") {
        nchw_output_tasks(out, spatial, kp);
        vectorized(out, s, lanes * kp.out_unroll);
    } else {
        out.reorder(s, n, c).parallel(c);
        vectorized(out, s, lanes * kp.out_unroll);
    }
}

}  // namespace normgen::sched

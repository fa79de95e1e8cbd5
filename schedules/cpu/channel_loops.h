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

// The knobs a backward pass runs with: `vector_lanes` 0 means half the natural width
// where a 512-bit vector operation runs as two 256-bit halves (Zen 4) and the kernel
// has no fused activation epilogue; the natural width otherwise. Measured
// (normgen-tune time, interleaved, 1 and 2 threads, Zen 4 VM, 2026-12-07): 16 lanes took
// 0.95-1.25x the time of 8 on the backwards of the channel suite (BatchNorm,
// InstanceNorm, GroupNorm, both layouts; 1.00-1.25x on all but four), and forwards were
// up to 1.15x slower at 8; but with the fused epilogue the per-element activation
// gradient makes the wider vector pay: GroupNorm+SiLU backward 0.78-0.86x at 16 lanes,
// BatchNorm+add+ReLU 0.94-1.05x.
inline ChannelNormCpuParams backward_knobs(ChannelNormCpuParams k, const Halide::Target &t, bool fused_epilogue) {
    if (k.vector_lanes == 0 && !fused_epilogue && t.has_feature(Halide::Target::AVX512_Zen4))
        k.vector_lanes = t.natural_vector_size<float>() / 2;
    return k;
}

using namespace Halide;

// A channels-last stage st(c, ...) (a reduction's update or an output) over
// `positions` (innermost first), then `outer`, vectorized across channels. Where all C
// channels make one chunk of v vectors (C = lanes * v for v = max_vectors,
// max_vectors / 2, ..., 2; specialized on C), the positions run inside that chunk: its
// accumulators and per-channel coefficients are loop-invariant there (measured 0.55 ->
// 0.28 ms on BatchNorm 1x32x224x224 channels-last, 2 vectors, 1 thread, Zen 4 VM,
// 2026-12-06). Other C (one vector too: the same memory order), and max_vectors = 0:
// channels innermost, every position's channels in one contiguous pass. Several
// chunks per position were slower than that pass, as each chunk walks the positions
// with a stride of C values (channels-last BatchNorm, 1 thread, C = 256 and 512:
// 4-vector chunks took 1.2-1.9x the time of one pass, 2026-12-07). Each loop nest is
// compiled for every target and activation case (`cases`, the fused epilogues' 4), so
// a stage with cases runs channels innermost only: with the sizes 16..2 per case,
// GroupNorm backward's fused kernel took 40-48 s to generate instead of 6.
inline void channel_chunks(Stage st, const Var &c, const std::vector<VarOrRVar> &positions,
                           const std::vector<VarOrRVar> &outer, int lanes, int max_vectors, const Expr &channels,
                           const std::vector<Expr> &cases = {}) {
    auto schedule = [&](Stage s, int vectors) {
        std::vector<VarOrRVar> order;
        if (vectors > 0) {
            Var co(c.name() + "_co"), cx(c.name() + "_cx"), cm(c.name() + "_cm"), cv(c.name() + "_cv");
            s.split(c, co, cx, lanes * vectors, TailStrategy::GuardWithIf)
                .split(cx, cm, cv, lanes)
                .vectorize(cv)
                .unroll(cm);
            order = {cv, cm};
            order.insert(order.end(), positions.begin(), positions.end());
            order.push_back(co);
        } else {
            order = {c};
            order.insert(order.end(), positions.begin(), positions.end());
        }
        order.insert(order.end(), outer.begin(), outer.end());
        s.reorder(order);
        if (vectors == 0) vectorized(s, c, lanes);
        specialize_cases(s, cases);
    };
    if (cases.empty())  // (with cases, every size would be compiled once per case)
        for (int v = max_vectors; v >= 2; v /= 2) schedule(st.specialize(channels == lanes * v), v);
    schedule(st, 0);
}

// Channels-last reductions: vectorized across channels (in chunks, above), the (s, n)
// domain split into parallel blocks whose per-channel partials are then summed in
// block order.
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
    partial.update().parallel(sb);
    channel_chunks(partial.update(), c, {si, k.y}, {sb}, lanes, kp.channel_vectors, channels, cases);
    vectorized(f, c, lanes);
    vectorized(f.update(), c, lanes);
}

// The most values one float32 partial sum of a streaming reduction accumulates in
// sequence (beyond it, more blocks): its rounding error grows with that run, not with
// the square root of the count. Measured: BatchNorm NCHW float16 statistics over 2^30
// values per channel, 8 blocks of runs of 2^23 values per lane (AVX2, 16 lanes), had
// the running variance 1.1% off (the test allows 4 sqrt(count) u = 0.78%).
constexpr int kMaxPartialRun = 1 << 16;

// NCHW reductions f(c) over (s, n) in memory order: vectors along s, per-channel
// vector partials for blocks of samples (the parallel tasks; at least `min_blocks`, and
// enough that no lane's run exceeds kMaxPartialRun), summed in block order.
inline void streaming_nchw_reduction(Func f, const RDom &k, const Var &c, int width, const Expr &batch, int min_blocks,
                                     const std::vector<Expr> &cases = {}) {
    Var v(f.name() + "_lane"), nb(f.name() + "_nb");
    RVar ko(f.name() + "_ko"), ki(f.name() + "_ki"), nbo(f.name() + "_nbo"), nbi(f.name() + "_nbi");
    Expr samples_per_run = Expr(kMaxPartialRun) / max((k.x.extent() + width - 1) / width, 1);
    Expr per_block = max(min(batch / min_blocks, samples_per_run), 1);
    Func partial = f.update()
                       .split(k.x, ko, ki, width, TailStrategy::GuardWithIf)
                       .split(k.y, nbo, nbi, per_block, TailStrategy::GuardWithIf)
                       .rfactor({{ki, v}, {nbo, nb}});
    partial.compute_root().reorder_storage(v, c, nb).vectorize(v);
    partial.update().reorder(v, ko, c, nbi, nb).vectorize(v).parallel(nb);
    specialize_cases(partial.update(), cases);
    // The lanes and blocks of each channel summed with one vector reduction per block.
    // As a scalar loop it dominated the call's serial part (that part: 23% of BatchNorm
    // 64x512x7x7's kernel time at 1 thread, perf, Zen 4 VM, 2026-12-07).
    f.compute_root();
    f.update().specialize(k.x.extent() >= width).atomic().vectorize(ki);
}

// NCHW outputs in memory order; a parallel task covers whole (channel, sample) runs
// worth at least `block_kib` (one run per task drowned 7x7 and 28x28 shapes in task
// overhead: 2 threads ran slower than 1).
inline void nchw_output_tasks(Func out, const Expr &spatial, const ChannelNormCpuParams &k) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var(), cn("cn"), cno("cno"), cni("cni");
    Expr runs = max(Expr(k.block_kib * 1024) / (spatial * out.types()[0].bytes()), 1);
    out.reorder(s, c, n).fuse(c, n, cn).split(cn, cno, cni, runs, TailStrategy::GuardWithIf).parallel(cno);
}

// Tasks of `channels_per_task` channels for per-channel-fused schedules (strided
// layouts; weight norm's nchw): out(s, c, n) loops c outermost (tasks of channels, in
// parallel), then n, s. Returns the per-channel loop, where each channel's reductions
// and coefficients are computed just before its outputs.
inline Var channel_tasks(Stage out, const ChannelNormCpuParams &k) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var(), co("co"), ci("ci");
    out.reorder(s, n, c).split(c, co, ci, k.channels_per_task, TailStrategy::GuardWithIf).parallel(co);
    return ci;
}

// A per-channel output f(c) computed with `out`'s channel loop `ci` (channel_tasks).
inline void with_channel_tasks(Func f, const Func &out, const Var &ci, const ChannelNormCpuParams &k) {
    Var co("co");
    f.split(alg::channel_var(), co, ci, k.channels_per_task, TailStrategy::GuardWithIf).parallel(co);
    f.compute_with(out, ci);
}

// Channels-last per-(c, n) reduction over s for one sample: positions in order,
// vectors across channels in chunks (channel_chunks), partials per channel in L1.
inline void channels_last_reduction(Func f, const RDom &k, int lanes, const LoopLevel &at, int max_vectors,
                                    const Expr &channels, const std::vector<Expr> &cases = {}) {
    Var c = alg::channel_var(), n = alg::batch_var();
    f.compute_at(at).bound_storage(n, 1);
    vectorized(f, c, lanes);
    channel_chunks(f.update(), c, {k.x}, {}, lanes, max_vectors, channels, cases);
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

// An elementwise (s, c, n) output in memory order for `layout`, in parallel tasks;
// `cases`: the fused epilogue's activation specializations.
inline void channel_elementwise(Func out, const std::string &layout, const ChannelNormCpuParams &kp,
                                const Target &t, const Expr &spatial, const Expr &channels,
                                const std::vector<Expr> &cases = {}) {
    Var s = alg::spatial_var(), c = alg::channel_var(), n = alg::batch_var();
    const int lanes = lanes_of(kp, t);
    if (layout == "nhwc") {
        // Tasks of whole rows of positions (block_kib each); within a task, channel
        // chunks of up to channel_vectors vectors outside the positions, so a chunk's
        // per-channel coefficients stay in registers.
        Var so("so"), si("si"), sn("sn");
        Expr rows = max(Expr(kp.block_kib * 1024) / (channels * out.types()[0].bytes()), 1);
        out.split(s, so, si, rows, TailStrategy::GuardWithIf).fuse(so, n, sn).parallel(sn);
        channel_chunks(out, c, {si}, {sn}, lanes, kp.channel_vectors, channels, cases);
    } else if (layout == "nchw") {
        nchw_output_tasks(out, spatial, kp);
        vectorized(out, s, lanes * kp.out_unroll);
        specialize_cases(out, cases);
    } else {
        out.reorder(s, n, c).parallel(c);
        vectorized(out, s, lanes * kp.out_unroll);
        specialize_cases(out, cases);
    }
}

}  // namespace normgen::sched

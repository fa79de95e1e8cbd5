#include "mixed_norm.h"

#include "channel_loops.h"

namespace normgen::sched {

using namespace Halide;

namespace {

// The per-(channel, sample) reductions over s, computed into the root Func `cells`
// (pure, (c, n)): everything after them (merges over samples for BN, over channels for
// LN) needs all cells, so this is a pass of its own.
// nchw / strided: tasks of consecutive cells worth `block_kib` of input, each cell a
// vector reduction along s. nhwc: a task per sample, vectors across channels.
void cell_reductions(Func cells, const std::vector<std::pair<Func, RDom>> &reds, const std::string &layout,
                     const ChannelNormCpuParams &k, const Target &t, const Expr &spatial, const Expr &channels,
                     int elem_bytes) {
    Var c = alg::channel_var(), n = alg::batch_var(), cn("cn"), cno("cno"), cni("cni");
    const int lanes = lanes_of(k, t);
    cells.compute_root();
    if (layout == "nhwc") {
        cells.reorder(c, n).parallel(n);
        vectorized(cells, c, lanes);
        for (const auto &[f, r] : reds)
            channels_last_reduction(f, r, lanes, LoopLevel(cells, n), k.channel_vectors, channels);
        return;
    }
    Expr per_task = max(Expr(k.block_kib * 1024) / (spatial * elem_bytes), 1);
    cells.reorder(c, n).fuse(c, n, cn).split(cn, cno, cni, per_task, TailStrategy::GuardWithIf).parallel(cno);
    for (const auto &[f, r] : reds) vector_reduction(f, r, {c, n}, lanes * k.accumulators, LoopLevel(cells, cni));
}

// Small per-channel / per-sample / per-cell Funcs: at root, vectorized across channels
// where they have a channel dim.
void small_root(const std::vector<Func> &fs, int lanes) {
    Var c = alg::channel_var();
    for (Func f : fs) {
        f.compute_root();
        bool has_c = false;
        for (const Var &a : f.args()) has_c = has_c || a.name() == c.name();
        if (!has_c) continue;
        vectorized(f, c, lanes);
        for (int u = 0; u < f.num_update_definitions(); u++) vectorized(f.update(u), c, lanes);
    }
}

}  // namespace

// Measured: see bench/results/seeds.md. Why: two passes over x (statistics of every
// cell, then the output), each streaming memory in order and vectorized along the
// unit-stride dim; the merges in between touch C x N values.
void schedule_mixed_norm_forward_cpu(alg::MixedNormForward &p, const ChannelNormCpuParams &k, const Target &t,
                                     const std::string &layout, const Expr &spatial, const Expr &channels) {
    const int lanes = lanes_of(k, t), bytes = p.y.type().bytes();
    cell_reductions(p.moments.cell, {{p.moments.pilot_sum, p.moments.pilot}, {p.moments.dev, p.moments.k}}, layout,
                    k, t, spatial, channels, bytes);
    small_root(p.merges, lanes);
    small_root(p.coeffs, lanes);
    channel_elementwise(p.y, layout, k, t, spatial, channels);
}

void schedule_mixed_norm_backward_cpu(alg::MixedNormBackward &p, const ChannelNormCpuParams &k, const Target &t,
                                      const std::string &layout, const Expr &spatial, const Expr &channels) {
    const int lanes = lanes_of(k, t), bytes = p.dx.type().bytes();
    cell_reductions(p.sums.in(), {{p.sums, p.k}}, layout, k, t, spatial, channels, 2 * bytes);
    small_root(p.merges, lanes);
    small_root(p.coeffs, lanes);
    channel_elementwise(p.dx, layout, k, t, spatial, channels);
}

}  // namespace normgen::sched

// Loop structures shared by every CUDA family: rows owned by warps, reductions in two
// deterministic phases (per-unit partials, then an in-order sum per key; no atomics),
// and elementwise outputs in coalesced, vectorized tiles. They decide where and how
// things run, never what is computed.
#pragma once

#include "Halide.h"
#include "../params/gpu_params.h"
#include "../specialize.h"

#include <string>
#include <vector>

namespace normgen::sched::gpu {

using namespace Halide;

constexpr int warp_size = 32;

// All pure vars of `f`, innermost first, fused into one (named `name`).
inline Var fuse_all(Stage s, const std::vector<Var> &vars, const std::string &name) {
    Var fused = vars[0];
    for (size_t i = 1; i < vars.size(); i++) {
        Var next(name + "_" + std::to_string(i));
        s.fuse(fused, vars[i], next);
        fused = next;
    }
    return fused;
}

// f(keys) reduced over `rvars` (the first reads unit-stride memory) by the `threads`
// threads of one block, f computed at `at` (the block's gpu_blocks loop; a single key
// point there). Deterministic and without atomics: the threads stride through the first
// RVar together (coalesced), each keeping a partial in shared memory; warps of 32
// partials are then summed by threads / 32 threads, and those sums by one thread, each
// in a fixed order.
inline void block_reduce_at(Func f, const std::vector<RVar> &rvars, const LoopLevel &at, int threads,
                            const std::vector<Expr> &cases = {}) {
    Var u(f.name() + "_lane"), w(f.name() + "_warp");
    RVar ko(f.name() + "_ko"), ki(f.name() + "_ki"), kw(f.name() + "_kw"), kl(f.name() + "_kl");
    f.compute_at(at);
    Func lanes = f.update().split(rvars[0], ko, ki, threads, TailStrategy::GuardWithIf).rfactor(ki, u);
    lanes.compute_at(at).bound(u, 0, threads).gpu_threads(u);
    lanes.update().gpu_threads(u);
    specialize_cases(lanes.update(), cases);
    Func warps = f.update().split(ki, kw, kl, warp_size, TailStrategy::GuardWithIf).rfactor(kw, w);
    warps.compute_at(at).bound(w, 0, threads / warp_size).gpu_threads(w);
    warps.update().gpu_threads(w);
}

// A root Func f(keys...) whose every point is computed by one block of `threads`
// threads, reducing over `rvars` as in block_reduce_at. Its own kernel.
inline void block_per_key(Func f, const std::vector<RVar> &rvars, const GpuParams &k,
                          const std::vector<Expr> &cases = {}) {
    Func h = f.in();
    Var all = fuse_all(h, h.args(), f.name() + "_key");
    h.compute_root().gpu_blocks(all);
    block_reduce_at(f, rvars, LoopLevel(h, all), k.threads, cases);
}

// An output (or wrapper) out(keys...) with one thread per point, keys fused with the
// first innermost (adjacent threads: adjacent first keys, so a unit-stride first key
// reads and writes coalesced). Returns the thread loop.
inline Var thread_per_point(Func out, const GpuParams &k) {
    if (out.args().empty()) {  // a scalar: one thread
        out.gpu_single_thread();
        return Var::outermost();
    }
    Var b(out.name() + "_tb"), t(out.name() + "_t");
    Var all = fuse_all(out, out.args(), out.name() + "_key");
    out.split(all, b, t, k.threads, TailStrategy::GuardWithIf).gpu_blocks(b).gpu_threads(t);
    return t;
}

// A root Func f(keys...) whose every point is computed by one thread as in
// thread_per_point (serial loops over its reduction, if any). Its own kernel.
inline void thread_per_key(Func f, const GpuParams &k, const std::vector<Expr> &cases = {}) {
    if (f.args().empty()) {  // a scalar (e.g. a softmax's normalizer): one thread
        f.compute_root().gpu_single_thread();
        for (int i = 0; i < f.num_update_definitions(); i++) f.update(i).gpu_single_thread();
        return;
    }
    Func h = f.in();
    h.compute_root();
    Var t = thread_per_point(h, k);
    f.compute_at(h, t);
    for (int i = 0; i < f.num_update_definitions(); i++) specialize_cases(f.update(i), cases);
}

// Small per-key Funcs (statistics merges, per-channel coefficients): one thread each.
inline void small_per_key(const std::vector<Func> &fs, const GpuParams &k) {
    for (const Func &f : fs) thread_per_key(f, k);
}

// A per-key reduction f(keys) over the RDom `dom` in two deterministic phases:
// phase 1 splits each of dom's dims into units of `chunks[i]` (>= 1) and computes one
// partial per (keys, units) point, by a block (`lanes_along_x`: dom.x is unit-stride) or
// by a thread (a key is unit-stride: adjacent threads read adjacent keys); phase 2 sums
// each key's partials in unit order, one thread per key.
inline void two_phase_reduction(Func f, const RDom &dom, const std::vector<Expr> &chunks, bool lanes_along_x,
                                const GpuParams &k, const std::vector<Expr> &cases = {}) {
    std::vector<std::pair<RVar, Var>> outer;
    std::vector<RVar> inner;
    Stage st = f.update();
    for (int i = 0; i < dom.dimensions(); i++) {
        RVar o(f.name() + "_uo" + std::to_string(i)), in(f.name() + "_ui" + std::to_string(i));
        st.split(dom[i], o, in, chunks[i], TailStrategy::GuardWithIf);
        outer.push_back({o, Var(f.name() + "_unit" + std::to_string(i))});
        inner.push_back(in);
    }
    Func partial = st.rfactor(outer);
    if (lanes_along_x) {
        block_per_key(partial, inner, k, cases);
    } else {
        thread_per_key(partial, k, cases);
    }
    thread_per_key(f, k);
}

// Units of a reduction over `extent` values: all of them when that is at most `unit`,
// else `unit`-sized pieces.
inline Expr chunk_of(const Expr &extent, int unit) { return Halide::max(Halide::min(extent, unit), 1); }

// An elementwise output out(inner, others...) in tiles of `tile_x` threads x `vector`
// elements along the unit-stride `inner` by threads / tile_x rows of the other dims
// (fused); blocks over (other rows, inner tiles). Returns nothing: a whole kernel.
inline void elementwise(Func out, const Var &inner, const std::vector<Var> &others, const GpuParams &k,
                        const std::vector<Expr> &cases = {}) {
    Var io("io"), iv("iv"), ib("ib"), it("it"), rb("rb"), rt("rt");
    const int rows = k.threads / k.tile_x;
    std::vector<VarOrRVar> order{inner};
    for (const Var &v : others) order.push_back(v);
    out.reorder(order);
    Var rest = others.size() == 1 ? others[0] : fuse_all(out, others, out.name() + "_rows");
    out.split(inner, io, iv, k.vector, TailStrategy::GuardWithIf)
        .split(io, ib, it, k.tile_x, TailStrategy::GuardWithIf)
        .split(rest, rb, rt, rows, TailStrategy::GuardWithIf)
        .reorder(iv, it, rt, rb, ib)
        .vectorize(iv)
        .gpu_threads(it, rt)
        .gpu_blocks(rb, ib);
    specialize_cases(out, cases);
}

// The channel families' (s, c, n) views by layout: nchw and strided reduce along s with
// a block's threads (s is unit-stride, or the best guess for it); nhwc with a thread per
// channel (adjacent threads, adjacent channels).
inline bool lanes_along_s(const std::string &layout) { return layout != "nhwc"; }

// A per-key reduction f(keys) over k = (s[, n]) in two phases (units of `unit_elems`
// values for a block, `thread_elems` positions of one sample for a thread).
inline void channel_reduction(Func f, const RDom &k, const std::string &layout, const GpuParams &p,
                              const std::vector<Expr> &cases = {}) {
    std::vector<Expr> chunks;
    if (lanes_along_s(layout)) {
        Expr cx = chunk_of(k.x.extent(), p.unit_elems);
        chunks.push_back(cx);
        if (k.dimensions() > 1) chunks.push_back(Halide::max(p.unit_elems / cx, 1));
    } else {
        chunks.push_back(chunk_of(k.x.extent(), p.thread_elems));
        if (k.dimensions() > 1) chunks.push_back(1);
    }
    two_phase_reduction(f, k, chunks, lanes_along_s(layout), p, cases);
}

// A small per-key reduction (a pilot of a few hundred values): one phase.
inline void small_channel_reduction(Func f, const RDom &k, const std::string &layout, const GpuParams &p) {
    if (lanes_along_s(layout)) {
        std::vector<RVar> rv;
        for (int i = 0; i < k.dimensions(); i++) rv.push_back(k[i]);
        block_per_key(f, rv, p);
    } else {
        thread_per_key(f, p);
    }
}

// An elementwise (s, <channel vars>, n) output by layout: s inner for nchw (vectors) and
// strided (scalars), the channel (a single var) inner for nhwc.
inline void channel_elementwise(Func out, const std::string &layout, const GpuParams &p,
                                const std::vector<Expr> &cases = {}) {
    std::vector<Var> args = out.args();
    if (layout == "nhwc") {
        std::vector<Var> others{args[0]};
        others.insert(others.end(), args.begin() + 2, args.end());
        elementwise(out, args[1], others, p, cases);
        return;
    }
    GpuParams q = p;
    if (layout != "nchw") q.vector = 1;
    elementwise(out, args[0], std::vector<Var>(args.begin() + 1, args.end()), q, cases);
}

}  // namespace normgen::sched::gpu

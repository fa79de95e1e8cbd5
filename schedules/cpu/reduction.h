// Scheduling helpers shared by every CPU family.
#pragma once

#include "Halide.h"

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace normgen::sched {

// A reduction f(key) over the RDom `k` whose first dimension is unit-stride in memory:
// split k's first dimension into vectors of `width` (= lanes x accumulators, which
// LLVM splits into independent registers), accumulate them in a partial stored with
// the lanes innermost (rfactor appends its new Var last; without reorder_storage the
// accumulators become gathers), then finish the lanes with one horizontal vector
// reduction (not a serial chain) wherever k's first dimension is at least `width`.
// `keys` are computed one point at a time at `at` (storage on the stack); `ranged`
// keys (innermost first) span a run-time extent there (e.g. the channels of a group),
// in heap storage allocated at `store` (an enclosing level: once per task, not per
// group).
inline void vector_reduction(Halide::Func f, const Halide::RDom &k, const std::vector<Halide::Var> &keys,
                             int width, const Halide::LoopLevel &at, const std::vector<Halide::Var> &ranged = {},
                             const std::optional<Halide::LoopLevel> &store_at = std::nullopt,
                             const std::vector<Halide::Expr> &cases = {}) {
    using namespace Halide;
    Var v(f.name() + "_lane");
    RVar ko(f.name() + "_ko"), ki(f.name() + "_ki");
    const LoopLevel store = store_at.value_or(at);
    f.compute_at(at).store_at(store);
    if (ranged.empty()) f.store_in(MemoryType::Stack);
    for (const Var &key : keys) f.bound_storage(key, 1);
    Func partial = f.update().split(k.x, ko, ki, width, TailStrategy::GuardWithIf).rfactor(ki, v);
    std::vector<Var> storage = {v};  // lanes innermost
    storage.insert(storage.end(), ranged.begin(), ranged.end());
    storage.insert(storage.end(), keys.begin(), keys.end());
    partial.compute_at(at).store_at(store).reorder_storage(storage).vectorize(v);
    if (ranged.empty()) partial.store_in(MemoryType::Stack);
    partial.update().reorder(v, ko).vectorize(v);
    for (const Expr &e : cases) partial.update().specialize(e);
    f.update().specialize(k.x.extent() >= width).atomic().vectorize(ki);
}

inline void vector_reduction(Halide::Func f, const Halide::RDom &k, const Halide::Var &key, int width,
                             const Halide::LoopLevel &at) {
    vector_reduction(f, k, std::vector<Halide::Var>{key}, width, at);
}

// Output loops: `x` vectorized in `width`-wide pieces (tails predicated, so extents
// below the width stay in bounds).
inline Halide::Var vectorized(Halide::Stage s, const Halide::Var &x, int width) {
    using namespace Halide;
    Var xo(x.name() + "o"), xi(x.name() + "i");
    s.split(x, xo, xi, width, TailStrategy::GuardWithIf).vectorize(xi);
    return xo;
}

// Each iteration of `out`'s loop `at` prefetches the inputs `streamed` that the same
// iteration of the enclosing loop `from` reads `ahead` iterations later. Each of
// `streamed` must be a generator input: such a Func only reads its buffer and is
// inlined away, so the prefetch names the buffer (a prefetch of the Func itself finds
// no region and Halide drops it).
// Caveat, found 2026-12-07 in the lowered statements: where `from` is, or lies inside,
// a loop fused by compute_with (the row norms' row loop, which their statistics share;
// the backward's row-block loop, shared with the parameter-gradient partials), Halide 21
// loses the offset: it places the prefetch before the fusion renames the loops
// (r.ri -> r.fused.ri), so the region is computed for the current iteration and the
// prefetch fetches the vector its loop is about to load; `ahead` 1..4 lower to the same
// statement. See row_norm.cpp for what that measures.
inline void prefetch_ahead(Halide::Func out, const std::vector<Halide::Func> &streamed, const Halide::Var &at,
                           const Halide::Var &from, int ahead) {
    using namespace Halide;
    if (ahead <= 0) return;
    for (const Func &in : streamed) {
        const auto *call = in.defined() && in.outputs() == 1 ? in.value().as<Internal::Call>() : nullptr;
        if (!call || !call->param.defined())
            throw std::logic_error("prefetch_ahead: " + in.name() + " is not a generator input buffer");
        out.prefetch(call->param, at, from, ahead, PrefetchBoundStrategy::GuardWithIf);
    }
}

}  // namespace normgen::sched

// Specializations shared by every target's schedules: the fused epilogue's run-time
// activation code gets one loop nest per code. Target-neutral.
#pragma once

#include "Halide.h"
#include "../generators/algorithms/activation.h"

#include <vector>

namespace normgen::sched {

using namespace Halide;

// The run-time epilogue's activation codes as specialization conditions (none when the
// pipeline has no epilogue): each case gets its own loop nest, where the activation's
// select folds to one branch; any other code fails (no generic loop nest is compiled:
// it would compute every activation).
inline std::vector<Expr> activation_cases(const Expr &activation) {
    std::vector<Expr> v;
    if (activation.defined())
        for (alg::ActivationCode a : alg::specialized_activations) v.push_back(activation == static_cast<int>(a));
    return v;
}

inline void specialize_cases(Stage s, const std::vector<Expr> &cases) {
    for (const Expr &e : cases) s.specialize(e);
    if (!cases.empty()) s.specialize_fail("normgen: unknown activation code (the runtime passes none/relu as leaky_relu)");
}

}  // namespace normgen::sched

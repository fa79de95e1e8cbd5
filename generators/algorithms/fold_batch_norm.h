// Folding an inference BatchNorm into the preceding convolution or linear layer
// (weights with output channels first): per output channel c,
//   scale = gamma / sqrt(running_var + eps)
//   W'(s, c) = W(s, c) * scale, b'(c) = (b - running_mean) * scale + beta
// W is a 3-D view (s, c, n): s = the weight's trailing dims (in-channels x kernel), c
// = the output channel, n = 1. Absent b / gamma / beta are supplied as 0 / 1 / 0.
#pragma once

#include "channel_norm.h"

namespace normgen::alg {

struct FoldBatchNorm {
    Func scale;  // per-c gamma / sqrt(var + eps), float32
    Func w;      // output (s, c, n)
    Func b;      // output (c)
};

inline FoldBatchNorm fold_batch_norm(const Func &w, const Func &b, const Func &mean, const Func &var,
                                     const Func &gamma, const Func &beta, const Expr &eps, const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    FoldBatchNorm p;
    p.scale = Func("fold_scale");
    p.scale(c) = widen(gamma(c)) / Halide::sqrt(var(c) + eps);
    p.w = Func("w_folded");
    p.w(s, c, n) = narrow(widen(w(s, c, n)) * p.scale(c), out_type);
    p.b = Func("b_folded");
    p.b(c) = narrow((widen(b(c)) - mean(c)) * p.scale(c) + widen(beta(c)), out_type);
    return p;
}

}  // namespace normgen::alg

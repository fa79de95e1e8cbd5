// Weight normalization (Salimans & Kingma 2016; torch._weight_norm semantics):
// w = g * v / ||v||, the norm over every dim of v but `dim`. Tensors are 3-D views
// v(s, c, n): c = the kept dim, s = the dims after it (flattened), n = the dims before
// it, so one norm per c over (s, n) -- the shape of a per-channel reduction.
//   forward:  norm(c) = sqrt(sum v^2), w = v * (g / norm)
//   backward: dot(c) = sum dw * v, dv = (g / norm) * (dw - v * dot / norm^2),
//             dg = dot / norm
// A slice of zeros has norm 0 and gives NaN/Inf, as torch.
#pragma once

#include "channel_norm.h"

namespace normgen::alg {

struct WeightNormForward {
    Func sumsq;   // per-c sum of v^2 over `k`
    RDom k;       // (s, n)
    Func scale;   // per-c g / norm (read by every output element)
    Func w;       // output (s, c, n)
    Func norm;    // output (c), float32
};

struct WeightNormBackward {
    Func dot;     // per-c sum dw * v over `k`
    RDom k;       // (s, n)
    std::vector<Func> per_channel;  // per-c coefficients of dv
    Func dv;      // output (s, c, n)
    Func dg;      // output (c)
};

inline WeightNormForward weight_norm_forward(const Func &v, const Func &g, const Expr &spatial, const Expr &batch,
                                             const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    WeightNormForward p;
    Func v32("wn_v32");
    v32(s, c, n) = widen(v(s, c, n));
    p.k = RDom(0, spatial, 0, batch, "wn_k");
    p.sumsq = Func("wn_sumsq");
    p.sumsq(c) = 0.0f;
    p.sumsq(c) += v32(p.k.x, c, p.k.y) * v32(p.k.x, c, p.k.y);
    p.norm = Func("norm");
    p.norm(c) = Halide::sqrt(p.sumsq(c));
    p.scale = Func("wn_scale");  // from sumsq, not from the output `norm`, so both can be computed together
    p.scale(c) = widen(g(c)) / Halide::sqrt(p.sumsq(c));
    p.w = Func("w");
    p.w(s, c, n) = narrow(v32(s, c, n) * p.scale(c), out_type);
    return p;
}

inline WeightNormBackward weight_norm_backward(const Func &dw, const Func &v, const Func &norm, const Func &g,
                                               const Expr &spatial, const Expr &batch, const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    WeightNormBackward p;
    Func v32("wn_v32"), dw32("wn_dw32");
    v32(s, c, n) = widen(v(s, c, n));
    dw32(s, c, n) = widen(dw(s, c, n));
    p.k = RDom(0, spatial, 0, batch, "wn_bwd_k");
    p.dot = Func("wn_dot");
    p.dot(c) = 0.0f;
    p.dot(c) += dw32(p.k.x, c, p.k.y) * v32(p.k.x, c, p.k.y);
    Func a("wn_a"), b("wn_b");
    a(c) = widen(g(c)) / norm(c);                  // dv = a * dw - b * v
    b(c) = a(c) * p.dot(c) / (norm(c) * norm(c));
    p.per_channel = {a, b};
    p.dv = Func("dv");
    p.dv(s, c, n) = narrow(a(c) * dw32(s, c, n) - b(c) * v32(s, c, n), out_type);
    p.dg = Func("dg");
    p.dg(c) = narrow(p.dot(c) / norm(c), out_type);
    return p;
}

}  // namespace normgen::alg

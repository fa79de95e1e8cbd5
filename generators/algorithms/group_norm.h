// GroupNorm per (n, group) over (C/G channels x spatial), per-channel affine
// (torch.nn.functional.group_norm semantics; biased variance). InstanceNorm is the
// case G = C. Tensors are 4-D views x(s, j, g, n) of (N, C, *spatial) with channel
// c = g * (C/G) + j, and per-channel parameters 2-D views w(j, g), so no index is
// ever divided (bounds stay exact):
//   forward:  y = (x - mean(g, n)) * rstd(g, n) * w(j, g) + b(j, g)
//   backward: xhat = (x - mean) * rstd, h = dy * w, M = (C/G) * S,
//             dx = rstd * (h - mean_group(h) - xhat * mean_group(h * xhat)),
//             dweight(j, g) = sum_{n,s} dy * xhat, dbias(j, g) = sum_{n,s} dy
#pragma once

#include "channel_norm.h"

namespace normgen::alg {

inline Var group_var() { return Var("g"); }
inline Var in_group_var() { return Var("j"); }

struct GroupNormForward {
    std::vector<Func> reductions;  // per-(g, n) reductions over `k`, in dependence order
    RDom k;                        // (s, j)
    std::vector<Func> per_group;   // per-(g, n) values the output loop reads (mean, rstd)
    Func y;                        // output (s, j, g, n)
    Func stats;                    // output (g, n): Tuple (mean, rstd, biased var)
};

struct GroupNormBackward {
    Func group_sums;               // per-(g, n) (sum h, sum h * xhat) over `k`
    RDom k;                        // (s, j)
    Func dx;                       // output (s, j, g, n)
    Func param_sums;               // per-(j, g, n) (sum dy * xhat, sum dy) over `ks` (with weight)
    RDom ks;                       // (s)
    Func param_total;              // per-(j, g) sums of param_sums over `kn`
    RDom kn;                       // (n)
    std::vector<Func> param_grads; // outputs (j, g): dweight, dbias
};

inline GroupNormForward group_norm_forward(const Func &x, const Func &w, const Func &b, const Expr &spatial,
                                           const Expr &group_size, const Expr &eps, const Type &out_type) {
    Var s = spatial_var(), j = in_group_var(), g = group_var(), n = batch_var();
    GroupNormForward p;
    Func x32("gn_x32");
    x32(s, j, g, n) = widen(x(s, j, g, n));
    p.k = RDom(0, spatial, 0, group_size, "gn_k");
    Moments m = moments(x32, p.k, {g, n}, spatial * group_size, "gn");
    p.reductions = {m.sum, m.dev};
    Func rstd("gn_rstd");
    rstd(g, n) = 1.0f / Halide::sqrt(m.var(g, n) + eps);
    p.per_group = {m.mean, rstd};
    Expr yv = (x32(s, j, g, n) - m.mean(g, n)) * rstd(g, n);
    if (w.defined()) yv = yv * widen(w(j, g));
    if (b.defined()) yv = yv + widen(b(j, g));
    p.y = Func("y");
    p.y(s, j, g, n) = narrow(yv, out_type);
    p.stats = Func("stats");
    p.stats(g, n) = Tuple(m.mean(g, n), rstd(g, n), m.var(g, n));
    return p;
}

inline GroupNormBackward group_norm_backward(const Func &dy, const Func &x, const Func &mean, const Func &rstd,
                                             const Func &w, const Expr &spatial, const Expr &group_size,
                                             const Expr &batch, const Type &out_type) {
    Var s = spatial_var(), j = in_group_var(), g = group_var(), n = batch_var();
    GroupNormBackward p;
    Func dy32("gn_dy32"), xhat("gn_xhat"), h("gn_h");
    dy32(s, j, g, n) = widen(dy(s, j, g, n));
    xhat(s, j, g, n) = (widen(x(s, j, g, n)) - mean(g, n)) * rstd(g, n);
    h(s, j, g, n) = w.defined() ? dy32(s, j, g, n) * widen(w(j, g)) : dy32(s, j, g, n);
    p.k = RDom(0, spatial, 0, group_size, "gn_bwd_k");
    p.group_sums = Func("gn_group_sums");
    p.group_sums(g, n) = Tuple(0.0f, 0.0f);
    p.group_sums(g, n) = Tuple(p.group_sums(g, n)[0] + h(p.k.x, p.k.y, g, n),
                               p.group_sums(g, n)[1] + h(p.k.x, p.k.y, g, n) * xhat(p.k.x, p.k.y, g, n));
    Expr inv_m = 1.0f / Halide::cast<float>(spatial * group_size);
    p.dx = Func("dx");
    p.dx(s, j, g, n) = narrow(
        rstd(g, n) * (h(s, j, g, n) - (p.group_sums(g, n)[0] + xhat(s, j, g, n) * p.group_sums(g, n)[1]) * inv_m),
        out_type);
    if (w.defined()) {
        p.ks = RDom(0, spatial, "gn_bwd_ks");
        p.param_sums = Func("gn_param_sums");
        p.param_sums(j, g, n) = Tuple(0.0f, 0.0f);
        p.param_sums(j, g, n) = Tuple(p.param_sums(j, g, n)[0] + dy32(p.ks, j, g, n) * xhat(p.ks, j, g, n),
                                      p.param_sums(j, g, n)[1] + dy32(p.ks, j, g, n));
        p.kn = RDom(0, batch, "gn_bwd_kn");
        p.param_total = Func("gn_param_total");
        p.param_total(j, g) = Tuple(0.0f, 0.0f);
        p.param_total(j, g) = Tuple(p.param_total(j, g)[0] + p.param_sums(j, g, p.kn)[0],
                                    p.param_total(j, g)[1] + p.param_sums(j, g, p.kn)[1]);
        Func dweight("dweight"), dbias("dbias");
        dweight(j, g) = narrow(p.param_total(j, g)[0], out_type);
        dbias(j, g) = narrow(p.param_total(j, g)[1], out_type);
        p.param_grads = {dweight, dbias};
    }
    return p;
}

}  // namespace normgen::alg

// BatchNorm over (N, *spatial) per channel (torch.nn.functional.batch_norm semantics).
//   training forward: batch mean and biased variance per channel;
//                     y = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps);
//                     stats = (mean, rstd, var) for the backward and the running stats
//   inference forward: the same with the running statistics (no reduction)
//   training backward: xhat = (x - mean) * rstd, g = dy * w, M = N * S,
//                      dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
//                      dweight = sum dy * xhat, dbias = sum dy (per channel)
//   inference backward: dx = dy * w * rstd; dweight, dbias as in training
#pragma once

#include "activation.h"
#include "channel_norm.h"

namespace normgen::alg {

// mean/rstd: per-channel statistics Funcs for inference (running stats), ignored when
// training (they come from the batch).
// ep: the fused epilogue y = act(norm(x) + residual) (inactive by default).
inline ChannelNormForward batch_norm_forward(const Func &x, const Func &w, const Func &b, const Func &running_mean,
                                             const Func &running_var, bool training, const Expr &spatial,
                                             const Expr &batch, const Expr &eps, const Type &out_type,
                                             const Epilogue &ep = {}) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    ChannelNormForward p;
    Func x32("bn_x32");
    x32(s, c, n) = widen(x(s, c, n));
    Func mean("bn_mean"), rstd("bn_rstd");
    if (training) {
        Func v("bn_v");  // the reduction's view: (s, n, c)
        v(s, n, c) = x32(s, c, n);
        RDom k(0, spatial, 0, batch, "bn_k");
        // Pilot: about 256 values from the first samples (short runs of each channel).
        Expr pilot_s = Halide::min(spatial, 256);
        Expr pilot_n = Halide::min(batch, Halide::max(1, 256 / pilot_s));
        RDom pilot(0, pilot_s, 0, pilot_n, "bn_pilot");
        Moments m = moments(v, k, {c}, spatial * batch, "bn", pilot, pilot_s * pilot_n);
        p.pilot_sum = m.sum;
        p.pilot = pilot;
        p.dev = m.dev;
        p.k = k;
        p.per_channel.push_back(m.shift);
        mean(c) = m.mean(c);
        rstd(c) = 1.0f / Halide::sqrt(m.var(c) + eps);
        p.stats = Func("stats");
        p.stats(c) = Tuple(mean(c), rstd(c), m.var(c));
    } else {
        mean(c) = running_mean(c);
        rstd(c) = 1.0f / Halide::sqrt(running_var(c) + eps);
    }
    // y = (x - mean) * (rstd * w) + b: the per-channel factor once per channel; the
    // subtraction stays first (x * scale + shift would cancel on offset data).
    Func scale("bn_scale");
    scale(c) = w.defined() ? rstd(c) * widen(w(c)) : rstd(c);
    if (training) p.per_channel.push_back(mean);
    p.per_channel.push_back(scale);
    Expr yv = (x32(s, c, n) - mean(c)) * scale(c);
    if (b.defined()) yv = yv + widen(b(c));
    p.y = Func("y");
    p.y(s, c, n) = narrow(apply_epilogue(ep, yv, {s, c, n}), out_type);
    p.activation = ep.activation;
    return p;
}

// With an epilogue (the forward was y = act(z), z = xhat * w + b + residual), the
// gradient flowing into the norm is dz = dy * act'(z), z recomputed from x (b: the
// forward's bias); it is also the residual's gradient: then dx is a Tuple (dx, dresidual).
inline ChannelNormBackward batch_norm_backward(const Func &dy, const Func &x, const Func &mean, const Func &rstd,
                                               const Func &w, bool training, const Expr &spatial,
                                               const Expr &batch, const Type &out_type, const Func &b = Func(),
                                               const Epilogue &ep = {}) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    ChannelNormBackward p;
    Func dy32("bn_dy32"), xhat("bn_xhat");
    xhat(s, c, n) = (widen(x(s, c, n)) - mean(c)) * rstd(c);
    if (ep.activation.defined()) {
        Expr z = xhat(s, c, n) * (w.defined() ? widen(w(c)) : Expr(1.0f)) + (b.defined() ? widen(b(c)) : Expr(0.0f));
        if (ep.residual.defined()) z = z + widen(ep.residual(s, c, n));
        dy32(s, c, n) = widen(dy(s, c, n)) * activate_grad(ep.activation, z, ep.negative_slope);
    } else {
        dy32(s, c, n) = widen(dy(s, c, n));
    }
    p.activation = ep.activation;
    Expr wc = w.defined() ? widen(w(c)) : Expr(1.0f);
    p.k = RDom(0, spatial, 0, batch, "bn_bwd_k");
    // Per channel: (sum dy, sum dy * xhat); the gradients of the parameters and, in
    // training, the two means dx needs (g = dy * w only scales them).
    p.sums = Func("bn_sums");
    p.sums(c) = Tuple(0.0f, 0.0f);
    p.sums(c) = Tuple(p.sums(c)[0] + dy32(p.k.x, c, p.k.y), p.sums(c)[1] + dy32(p.k.x, c, p.k.y) * xhat(p.k.x, c, p.k.y));
    Expr inv_m = 1.0f / Halide::cast<float>(spatial * batch);
    Expr dxv;
    if (training) {
        dxv = rstd(c) * wc * (dy32(s, c, n) - (p.sums(c)[0] + xhat(s, c, n) * p.sums(c)[1]) * inv_m);
    } else {
        dxv = rstd(c) * wc * dy32(s, c, n);
    }
    p.dx = Func("dx");
    if (ep.residual.defined() && ep.activation.defined()) {
        // (dx, dresidual = dz) from one loop nest: one Func, so one set of specializations.
        p.dx(s, c, n) = Tuple(narrow(dxv, out_type), narrow(dy32(s, c, n), out_type));
    } else {
        p.dx(s, c, n) = narrow(dxv, out_type);
    }
    if (w.defined()) {
        Func dweight("dweight"), dbias("dbias");
        dweight(c) = narrow(p.sums(c)[1], out_type);
        dbias(c) = narrow(p.sums(c)[0], out_type);
        p.param_grads = {dweight, dbias};
    }
    return p;
}

}  // namespace normgen::alg

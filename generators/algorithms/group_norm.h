// GroupNorm per (n, group) over (C/G channels x spatial), per-channel affine
// (torch.nn.functional.group_norm semantics; biased variance). InstanceNorm is the
// case G = C.
//
// Everything is built from per-(channel, sample) quantities, so the one pass over the
// data is a per-channel reduction over s (vectorizable along s or across channels) and
// the group structure only enters in tiny per-(group, sample) merges:
//   forward:  per channel: moments over s, shifted by the channel's pilot mean;
//             per group:   Chan's merge, mean_g = m_c0 + mean_j(m_c - m_c0),
//                          M2_g = sum_j M2_c + S * sum_j (m_c - mean_g)^2
//                          (channel means as shift + small offset, never rounded);
//             or, where a group is one run of memory (NCHW), the moments of that run
//             as one row (see group_moments_from_rows);
//             y = (x - mean_g) * (rstd_g * w_c) + b_c
//   backward: xhat = (x - mean_g) * rstd_g, per channel A = sum_s dy, B = sum_s dy*xhat;
//             per group Sh = sum_j w_c A_c, Shx = sum_j w_c B_c, M = (C/G) * S;
//             dx = rstd (w dy - (Sh + xhat Shx) / M);
//             dweight_c = sum_n B, dbias_c = sum_n A (from the same per-channel sums)
//
// Channel coordinates (GroupIndexing): NCHW-like kernels see (s, j, g, n) views with
// c = g * (C/G) + j (no index is divided; bounds stay exact); channels-last kernels
// see (s, c, n) views, where the channel is one unit-stride coordinate to vectorize
// over and its group is c / (C/G) (clamped, for bounds).
#pragma once

#include "activation.h"
#include "channel_norm.h"

#include <stdexcept>

namespace normgen::alg {

inline Var group_var() { return Var("g"); }
inline Var in_group_var() { return Var("j"); }

// How a kernel's tensors name a channel, and how channels map to groups.
struct GroupIndexing {
    std::vector<Var> chan;  // a channel's coordinates: (j, g) or (c)
    Expr group_size, groups;

    // (s, j, g, n) views: channel = (j, g).
    static GroupIndexing split(const Expr &group_size, const Expr &groups) {
        return {{in_group_var(), group_var()}, group_size, groups};
    }
    // (s, c, n) views: channel = c.
    static GroupIndexing flat(const Expr &group_size, const Expr &groups) {
        return {{channel_var()}, group_size, groups};
    }
    bool is_flat() const { return chan.size() == 1; }
    std::vector<Expr> chan_args() const { return {chan.begin(), chan.end()}; }
    // The group of the channel `chan`.
    Expr group_of() const {
        return is_flat() ? Halide::clamp(chan[0] / group_size, 0, groups - 1) : Expr(chan[1]);
    }
    // The coordinates of channel `j` of group `g`.
    std::vector<Expr> member(const Expr &j, const Expr &g) const {
        if (is_flat()) return {g * group_size + j};
        return {j, g};
    }
    // f(s, <chan>, n) and f(<chan>, n) argument lists.
    std::vector<Expr> at(const Expr &s, const std::vector<Expr> &c, const Expr &n) const {
        std::vector<Expr> a{s};
        a.insert(a.end(), c.begin(), c.end());
        a.push_back(n);
        return a;
    }
    std::vector<Expr> at(const std::vector<Expr> &c, const Expr &n) const {
        std::vector<Expr> a(c.begin(), c.end());
        a.push_back(n);
        return a;
    }
};

struct GroupNormForward {
    // Statistics from rows of whole groups (`group_rows`): pilot_sum, shift and dev are
    // per (g, n) over the row; else per (channel, n) over s, merged per group.
    bool group_rows = false;
    Func pilot_sum;                // per-(channel, sample) sum over `pilot` (the shift)
    RDom pilot;                    // (s) prefix (group rows: (q) prefix)
    Func shift;                    // per-(channel, sample) pilot mean (read by every `dev` step)
    Func dev;                      // per-(channel, sample) (sum d, sum d^2) over `k`
    RDom k;                        // (s) (group rows: (q), the whole row)
    std::vector<Func> per_group;   // per-(g, n) merges (mean, M2, rstd), in dependence order
    std::vector<Func> per_channel; // per-(channel, n) values the output loop reads (mean, scale)
    Func y;                        // output (s, <chan>, n)
    Func stats;                    // output (g, n): Tuple (mean, rstd, biased var)
    Expr activation;               // the epilogue's run-time code (undefined: none)
};

struct GroupNormBackward {
    std::vector<Func> per_channel_in;  // per-(channel, n) mean and rstd the sums read
    Func sums;                     // per-(channel, n) (sum dy, sum dy * (x - mean)) over `k`
    RDom k;                        // (s)
    Func group_sums;               // per-(g, n) (sum w A, sum w B / rstd)
    std::vector<Func> per_channel; // per-(channel, n) coefficients of dx
    Func dx;                       // output (s, <chan>, n); with a fused residual, Tuple (dx, dresidual)
    Expr activation;               // the epilogue's run-time code (undefined: none)
    Func channel_sums;             // output (<chan>, n): `sums`, for the parameter gradients (with weight)
    RDom kn;                       // (n)
    std::vector<Func> param_grads; // outputs (<chan>): dweight, dbias
};

// Per-(group, sample) mean and biased variance from per-channel moments over s
// (fills p's statistics Funcs): each channel shifted by the mean of its first (up to)
// 256 values, then Chan's merge per group, a channel's mean kept as (shift, sum d / S)
// relative to the group's first channel (rounding a mean near 1e4 to float32 would
// perturb the small between-channel spread). Any layout: vectorizable along s or
// across channels.
inline void group_moments_from_channels(GroupNormForward &p, const Func &x32, const GroupIndexing &gi,
                                        const Expr &spatial, Func &gmean, Func &var) {
    Var g = group_var(), n = batch_var();
    std::vector<Expr> ch = gi.chan_args();
    std::vector<Var> keys = gi.chan;
    keys.push_back(n);
    Expr pilot = Halide::min(spatial, 256);
    p.k = RDom(0, spatial, "gn_k");
    p.pilot = RDom(0, pilot, "gn_pilot");
    Moments m = moments(x32, p.k, keys, spatial, "gn_c", p.pilot, pilot);
    p.pilot_sum = m.sum;
    p.shift = m.shift;
    p.dev = m.dev;
    Expr sf = Halide::cast<float>(spatial);
    Func cm2("gn_c_m2");
    cm2(gi.at(ch, n)) = Halide::max(m.dev(gi.at(ch, n))[1] - m.dev(gi.at(ch, n))[0] * m.dev(gi.at(ch, n))[0] / sf, 0.0f);
    RDom rj(0, gi.group_size, "gn_rj");
    Expr gsf = Halide::cast<float>(gi.group_size);
    auto offset = [&](const Expr &j) {  // mean of channel j - shift of channel 0
        std::vector<Expr> cj = gi.at(gi.member(j, g), n), c0 = gi.at(gi.member(0, g), n);
        return Halide::strict_float(m.shift(cj) - m.shift(c0) + m.dev(cj)[0] / sf);
    };
    Func goff("gn_offset"), gm2("gn_m2");
    goff(g, n) = 0.0f;
    goff(g, n) += offset(rj);
    gmean(g, n) = Halide::strict_float(m.shift(gi.at(gi.member(0, g), n)) + goff(g, n) / gsf);
    gm2(g, n) = 0.0f;
    // strict_float: the offsets are differences of values near the data's mean; the
    // simplifier may otherwise regroup them into sums that round at that magnitude.
    Expr dm = Halide::strict_float(offset(rj) - goff(g, n) / gsf);
    gm2(g, n) += cm2(gi.at(gi.member(rj, g), n)) + sf * dm * dm;
    var(g, n) = gm2(g, n) / (sf * gsf);
    p.per_group = {goff, gmean, gm2, var};
}

// Per-(group, sample) mean and biased variance from rows of whole groups: rows(q, g, n),
// q over the group's C/G x S values (a group of an NCHW-contiguous tensor is one run of
// memory). The row's moments, shifted by the mean of its first (up to) 256 values, as
// LayerNorm's: no per-channel work, which dominated small planes (7x7: 49 values per
// channel). The shift comes from the group's first channel(s); the rounding it leaves
// grows with (shift - mean)^2 / var, at most about C/G, since the group's variance
// includes the spread between its channels' means.
// `len` = C/G x S, best the rows buffer's extent: a plain variable lets the simplifier
// prove `len >= width` inside the reductions' specializations, so their last step is
// a constant-width vector reduce (from spatial * group_size it stayed a scalar loop of
// up to lanes x accumulators steps per group and sum).
inline void group_moments_from_rows(GroupNormForward &p, const Func &rows, const Expr &len, Func &gmean, Func &var) {
    Var q("q"), g = group_var(), n = batch_var();
    Func r32("gn_rows32");
    r32(q, g, n) = widen(rows(q, g, n));
    Expr pilot = Halide::min(len, 256);
    p.group_rows = true;
    p.k = RDom(0, len, "gn_k");
    p.pilot = RDom(0, pilot, "gn_pilot");
    Moments m = moments(r32, p.k, {g, n}, len, "gn_g", p.pilot, pilot);
    p.pilot_sum = m.sum;
    p.shift = m.shift;
    p.dev = m.dev;
    gmean(g, n) = m.mean(g, n);
    var(g, n) = m.var(g, n);
    p.per_group = {gmean, var};
}

// ep: the fused epilogue y = act(norm(x) + residual) (inactive by default).
// group_rows: x viewed as rows of whole groups (see group_moments_from_rows), for the
// statistics, rows of `group_row_len` values (= spatial x C/G: the rows buffer's own
// extent, a plain variable the simplifier can bound); undefined: per-channel moments
// merged per group.
inline GroupNormForward group_norm_forward(const Func &x, const Func &w, const Func &b, const GroupIndexing &gi,
                                           const Expr &spatial, const Expr &eps, const Type &out_type,
                                           const Epilogue &ep = {}, const Func &group_rows = Func(),
                                           const Expr &group_row_len = Expr()) {
    Var s = spatial_var(), g = group_var(), n = batch_var();
    std::vector<Expr> ch = gi.chan_args();
    GroupNormForward p;
    Func x32("gn_x32");
    x32(gi.at(s, ch, n)) = widen(x(gi.at(s, ch, n)));
    Func gmean("gn_mean_g"), var("gn_var"), rstd("gn_rstd");
    if (group_rows.defined()) {
        if (!group_row_len.defined()) throw std::logic_error("group_norm_forward: group rows need their length");
        group_moments_from_rows(p, group_rows, group_row_len, gmean, var);
    } else {
        group_moments_from_channels(p, x32, gi, spatial, gmean, var);
    }
    rstd(g, n) = 1.0f / Halide::sqrt(var(g, n) + eps);
    p.per_group.push_back(rstd);
    // Per channel: the group's mean and rstd * w; the subtraction stays first
    // (x * scale + shift would cancel on offset data).
    Expr grp = gi.group_of();
    Func mean_c("gn_mean_c"), scale_c("gn_scale_c");
    mean_c(gi.at(ch, n)) = gmean(grp, n);
    scale_c(gi.at(ch, n)) = w.defined() ? rstd(grp, n) * widen(w(ch)) : rstd(grp, n);
    p.per_channel = {mean_c, scale_c};
    Expr yv = (x32(gi.at(s, ch, n)) - mean_c(gi.at(ch, n))) * scale_c(gi.at(ch, n));
    if (b.defined()) yv = yv + widen(b(ch));
    p.y = Func("y");
    p.y(gi.at(s, ch, n)) = narrow(apply_epilogue(ep, yv, gi.at(s, ch, n)), out_type);
    p.activation = ep.activation;
    p.stats = Func("stats");
    p.stats(g, n) = Tuple(gmean(g, n), rstd(g, n), var(g, n));
    return p;
}

// With an epilogue, the gradient into the norm is dz = dy * act'(z), z = xhat * w + b
// + residual recomputed from x (b: the forward's bias); dz is also the residual's
// gradient, and dx then a Tuple (dx, dresidual).
inline GroupNormBackward group_norm_backward(const Func &dy, const Func &x, const Func &mean, const Func &rstd,
                                             const Func &w, const GroupIndexing &gi, const Expr &spatial,
                                             const Expr &batch, const Type &out_type, const Func &b = Func(),
                                             const Epilogue &ep = {}) {
    Var s = spatial_var(), g = group_var(), n = batch_var();
    std::vector<Expr> ch = gi.chan_args();
    GroupNormBackward p;
    Expr grp = gi.group_of();
    Func mean_c("gn_bwd_mean_c"), rstd_c("gn_bwd_rstd_c");
    mean_c(gi.at(ch, n)) = mean(grp, n);
    rstd_c(gi.at(ch, n)) = rstd(grp, n);
    p.per_channel_in = {mean_c, rstd_c};
    Func dy32("gn_dy32"), xc("gn_xc");
    xc(gi.at(s, ch, n)) = widen(x(gi.at(s, ch, n))) - mean_c(gi.at(ch, n));  // x - mean
    if (ep.activation.defined()) {
        Expr z = xc(gi.at(s, ch, n)) * rstd_c(gi.at(ch, n)) * (w.defined() ? widen(w(ch)) : Expr(1.0f)) +
                 (b.defined() ? widen(b(ch)) : Expr(0.0f));
        if (ep.residual.defined()) z = z + widen(ep.residual(gi.at(s, ch, n)));
        dy32(gi.at(s, ch, n)) = widen(dy(gi.at(s, ch, n))) * activate_grad(ep.activation, z, ep.negative_slope);
    } else {
        dy32(gi.at(s, ch, n)) = widen(dy(gi.at(s, ch, n)));
    }
    p.activation = ep.activation;
    p.k = RDom(0, spatial, "gn_bwd_k");
    auto at_k = [&](const Func &f) { return f(gi.at(p.k, ch, n)); };
    p.sums = Func("gn_sums");
    p.sums(gi.at(ch, n)) = Tuple(0.0f, 0.0f);
    p.sums(gi.at(ch, n)) = Tuple(p.sums(gi.at(ch, n))[0] + at_k(dy32),
                                 p.sums(gi.at(ch, n))[1] + at_k(dy32) * at_k(xc));
    RDom rj(0, gi.group_size, "gn_bwd_rj");
    auto member_w = [&](const Expr &j) { return w.defined() ? widen(w(gi.member(j, g))) : Expr(1.0f); };
    p.group_sums = Func("gn_group_sums");
    p.group_sums(g, n) = Tuple(0.0f, 0.0f);
    Tuple mem = p.sums(gi.at(gi.member(rj, g), n));
    p.group_sums(g, n) = Tuple(p.group_sums(g, n)[0] + member_w(rj) * mem[0],
                               p.group_sums(g, n)[1] + member_w(rj) * mem[1]);
    // (sum w A, sum w B): B = rstd * sum dy * (x - mean), rstd being the group's.
    // dx = a * dy - b * (x - mean) - c per (channel, sample).
    Expr inv_m = 1.0f / Halide::cast<float>(spatial * gi.group_size);
    Expr r = rstd(grp, n);
    Func ca("gn_dx_a"), cb("gn_dx_b"), cc("gn_dx_c");
    ca(gi.at(ch, n)) = w.defined() ? r * widen(w(ch)) : r;
    cb(gi.at(ch, n)) = r * r * r * p.group_sums(grp, n)[1] * inv_m;
    cc(gi.at(ch, n)) = r * p.group_sums(grp, n)[0] * inv_m;
    p.per_channel = {ca, cb, cc};
    p.dx = Func("dx");
    Expr dxv = narrow(ca(gi.at(ch, n)) * dy32(gi.at(s, ch, n)) - cb(gi.at(ch, n)) * xc(gi.at(s, ch, n)) -
                          cc(gi.at(ch, n)),
                      out_type);
    if (ep.residual.defined() && ep.activation.defined()) {
        p.dx(gi.at(s, ch, n)) = Tuple(dxv, narrow(dy32(gi.at(s, ch, n)), out_type));
    } else {
        p.dx(gi.at(s, ch, n)) = dxv;
    }
    if (w.defined()) {
        p.channel_sums = Func("channel_sums");
        p.channel_sums(gi.at(ch, n)) = Tuple(p.sums(gi.at(ch, n))[0], p.sums(gi.at(ch, n))[1] * rstd_c(gi.at(ch, n)));
        p.kn = RDom(0, batch, "gn_bwd_kn");
        Func total("gn_param_total");
        total(ch) = Tuple(0.0f, 0.0f);
        total(ch) = Tuple(total(ch)[0] + p.channel_sums(gi.at(ch, p.kn))[0],
                          total(ch)[1] + p.channel_sums(gi.at(ch, p.kn))[1]);
        Func dweight("dweight"), dbias("dbias");
        dweight(ch) = narrow(total(ch)[1], out_type);
        dbias(ch) = narrow(total(ch)[0], out_type);
        p.param_grads = {dweight, dbias};
    }
    return p;
}

}  // namespace normgen::alg

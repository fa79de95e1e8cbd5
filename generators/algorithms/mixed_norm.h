// Normalizations that mix statistics of several scopes, all derived from one set of
// per-(channel, sample) moments (one pass over the data):
//   Batch-Instance Norm (Nam & Kim 2018): y = (rho xhat_BN + (1 - rho) xhat_IN) w + b,
//     rho per channel clamped to [0, 1]; BN statistics over (N, S), IN over S.
//   Switchable Norm (Luo et al. 2018): mean = sum_k pm_k mean_k, var = sum_k pv_k var_k
//     over k = (IN, LN, BN), pm / pv softmaxes of 3 logits each; y = (x - mean) rstd w + b.
//     All variances biased; LN statistics per sample over (C, S).
//
// Statistics: per cell (c, n) a pass over s shifted by the cell's pilot mean k(c, n)
// gives (k, m = mean - k, M2). BN (per channel, over samples) and LN (per sample, over
// channels) are Chan's merges of the cells with the cell means taken relative to the
// first cell's shift (differences of values near the data's mean, under strict_float),
// so every mean enters the output as a small offset from k(c, n):
//     y = (x - k) * A(c, n) + B(c, n)
// with A, B built from offsets (x * A' + B' would cancel on data whose mean dwarfs its
// spread). Inference (BN part from running statistics) replaces the BN merge by the
// running mean and variance.
//
// Backward: with xc = x - mean_IN(c, n) (the saved IN mean), per cell T1 = sum_s dy,
// T2 = sum_s dy xc; every gradient is a combination of these, merged over samples (BN
// part) and channels (LN part), and dx = dy * a(c, n) + xc * b(c, n) + e(c, n).
#pragma once

#include "channel_norm.h"

namespace normgen::alg {

// Per-(channel, sample) moments over s, and their BN / LN merges.
struct CellMoments {
    Func pilot_sum;   // per cell: sum over `pilot` (the shift)
    RDom pilot;       // (s) prefix
    Func dev;         // per cell: (sum d, sum d^2) over `k`, d = x - shift
    RDom k;           // (s)
    Func cell;        // per cell Tuple (shift k, m = mean - k, M2): what the merges read
};

inline CellMoments cell_moments(const Func &x32, const Expr &spatial, const std::string &prefix) {
    Var c = channel_var(), n = batch_var();
    CellMoments cm;
    Expr pilot = Halide::min(spatial, 256);
    cm.k = RDom(0, spatial, prefix + "_k");
    cm.pilot = RDom(0, pilot, prefix + "_pilot");
    Moments m = moments(x32, cm.k, {c, n}, spatial, prefix, cm.pilot, pilot);
    cm.pilot_sum = m.sum;
    cm.dev = m.dev;
    Expr sf = Halide::cast<float>(spatial);
    Expr d0 = m.dev(c, n)[0], d1 = m.dev(c, n)[1];
    cm.cell = Func(prefix + "_cell");
    cm.cell(c, n) = Tuple(m.shift(c, n), d0 / sf, Halide::max(d1 - d0 * d0 / sf, 0.0f));
    return cm;
}

// A merge of cells along one axis (samples for BN, channels for LN): per key
//   off = mean relative to the first cell's shift, M2, mean, biased var,
// and per cell the merged mean relative to the cell's own shift.
struct CellMerge {
    Func merged;              // per key Tuple (off, mean, var)
    Func rel;                 // per cell: merged mean - k(c, n)
    std::vector<Func> funcs;  // the per-key Funcs in dependence order (for the schedule)
};

// over_samples: BN (key c, merge over n in [0, batch)); else LN (key n, merge over c).
inline CellMerge merge_cells(const Func &cell, bool over_samples, const Expr &spatial, const Expr &extent,
                             const std::string &prefix) {
    Var c = channel_var(), n = batch_var();
    Var key = over_samples ? c : n;
    RDom r(0, extent, prefix + "_r");
    auto at = [&](const Expr &i, const Expr &kv) {  // cell i along the merged axis
        return over_samples ? std::vector<Expr>{kv, i} : std::vector<Expr>{i, kv};
    };
    // A cell's mean minus the first cell's shift: both shifts are near the data's mean.
    auto offset = [&](const Expr &i, const Expr &kv) {
        return Halide::strict_float(cell(at(i, kv))[0] - cell(at(0, kv))[0] + cell(at(i, kv))[1]);
    };
    Expr sf = Halide::cast<float>(spatial), ef = Halide::cast<float>(extent);
    Func sum(prefix + "_sum"), m2(prefix + "_m2");
    sum(key) = 0.0f;
    sum(key) += offset(r, key);
    Expr off = sum(key) / ef;
    m2(key) = 0.0f;
    Expr dm = Halide::strict_float(offset(r, key) - off);
    m2(key) += cell(at(r, key))[2] + sf * dm * dm;
    CellMerge mg;
    mg.merged = Func(prefix + "_merged");
    mg.merged(key) = Tuple(off, Halide::strict_float(cell(at(0, key))[0] + off), m2(key) / (sf * ef));
    mg.rel = Func(prefix + "_rel");
    Expr kv = over_samples ? Expr(c) : Expr(n), i = over_samples ? Expr(n) : Expr(c);
    mg.rel(c, n) = Halide::strict_float(mg.merged(kv)[0] - (cell(at(i, kv))[0] - cell(at(0, kv))[0]));
    mg.funcs = {sum, m2, mg.merged};
    return mg;
}

struct MixedNormForward {
    CellMoments moments;
    std::vector<Func> merges;  // per-channel / per-sample merges (tiny)
    std::vector<Func> coeffs;  // per-cell (shift, A, B) the output loop reads
    Func y;                    // output (s, c, n)
    Func cell_stats;           // output (c, n): BIN (mean_IN, rstd_IN); SN (mean_IN, var_IN, rstd of the mix)
    Func sample_stats;         // output (n): SN (mean_LN, var_LN)
    Func channel_stats;        // output (c), training: BIN (mean, rstd, var); SN (mean, var) of the BN part
};

struct MixedNormBackward {
    Func sums;                 // per cell (sum dy, sum dy * xc) over `k`
    RDom k;                    // (s)
    std::vector<Func> merges;  // per-channel / per-sample sums (tiny)
    std::vector<Func> coeffs;  // per-cell coefficients of dx
    Func dx;                   // output (s, c, n)
    std::vector<Func> param_grads;  // outputs: BIN (drho, dweight, dbias) per channel;
                                    // SN (dweight, dbias) per channel, (dmean_weight, dvar_weight) (3)
};

inline Expr rsqrt_eps(const Expr &var, const Expr &eps) { return 1.0f / Halide::sqrt(var + eps); }

// The BN part's mean relative to each cell's shift and its rstd: the batch's (training)
// or the running statistics'.
struct BnPart {
    Func rel;   // (c, n): mean_BN - k(c, n)
    Func var;   // (c)
};

inline BnPart bn_part(const CellMoments &cm, const Func &running_mean, const Func &running_var, bool training,
                      const Expr &spatial, const Expr &batch, std::vector<Func> &merges, CellMerge *merge_out) {
    Var c = channel_var(), n = batch_var();
    BnPart bp;
    bp.var = Func("bn_part_var");
    if (training) {
        *merge_out = merge_cells(cm.cell, true, spatial, batch, "bn_merge");
        merges.insert(merges.end(), merge_out->funcs.begin(), merge_out->funcs.end());
        bp.rel = merge_out->rel;
        bp.var(c) = merge_out->merged(c)[2];
    } else {
        bp.rel = Func("bn_running_rel");
        bp.rel(c, n) = Halide::strict_float(running_mean(c) - cm.cell(c, n)[0]);
        bp.var(c) = running_var(c);
    }
    return bp;
}

// The start both forwards share: x in float32, the cells' moments, and the BN part.
struct MixedPrologue {
    Func x32;
    CellMerge bn;  // training only
    BnPart bp;
};

inline MixedPrologue mixed_prologue(const Func &x, const Func &running_mean, const Func &running_var, bool training,
                                    const Expr &spatial, const Expr &batch, const std::string &prefix,
                                    MixedNormForward &p) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    MixedPrologue pr;
    pr.x32 = Func(prefix + "_x32");
    pr.x32(s, c, n) = widen(x(s, c, n));
    p.moments = cell_moments(pr.x32, spatial, prefix);
    pr.bp = bn_part(p.moments, running_mean, running_var, training, spatial, batch, p.merges, &pr.bn);
    return pr;
}

// ---- Batch-Instance Norm ---------------------------------------------------------------

inline MixedNormForward batch_instance_norm_forward(const Func &x, const Func &rho, const Func &w, const Func &b,
                                                    const Func &running_mean, const Func &running_var, bool training,
                                                    const Expr &spatial, const Expr &batch, const Expr &eps,
                                                    const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    MixedNormForward p;
    MixedPrologue pr = mixed_prologue(x, running_mean, running_var, training, spatial, batch, "bin", p);
    const Func &cell = p.moments.cell, &x32 = pr.x32;
    const CellMerge &bn = pr.bn;
    const BnPart &bp = pr.bp;
    Func rb("bin_rstd_bn");
    rb(c) = rsqrt_eps(bp.var(c), eps);
    p.merges.push_back(rb);
    Expr ri = rsqrt_eps(cell(c, n)[2] / Halide::cast<float>(spatial), eps);
    Expr r = Halide::clamp(widen(rho(c)), 0.0f, 1.0f), wc = widen(w(c));
    // y = w (r rb (x - mean_BN) + (1 - r) ri (x - mean_IN)) + b, means relative to k.
    Func coef("bin_coef");
    Expr a_bn = wc * r * rb(c), a_in = wc * (1.0f - r) * ri;
    coef(c, n) = Tuple(cell(c, n)[0], a_bn + a_in, widen(b(c)) - a_bn * bp.rel(c, n) - a_in * cell(c, n)[1]);
    p.coeffs = {coef};
    p.y = Func("y");
    p.y(s, c, n) = narrow((x32(s, c, n) - coef(c, n)[0]) * coef(c, n)[1] + coef(c, n)[2], out_type);
    p.cell_stats = Func("in_stats");
    p.cell_stats(c, n) = Tuple(Halide::strict_float(cell(c, n)[0] + cell(c, n)[1]), ri);
    if (training) {
        p.channel_stats = Func("bn_stats");
        p.channel_stats(c) = Tuple(bn.merged(c)[1], rb(c), bn.merged(c)[2]);
    }
    return p;
}

// Shared by both backwards: the per-cell sums (sum dy, sum dy * (x - mean_IN)).
inline Func cell_grad_sums(const Func &dy, const Func &x, const Func &in_mean, const RDom &k, const std::string &prefix,
                           Func *xc) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    *xc = Func(prefix + "_xc");
    (*xc)(s, c, n) = widen(x(s, c, n)) - in_mean(c, n);
    Func sums(prefix + "_sums");
    sums(c, n) = Tuple(0.0f, 0.0f);
    Expr g = widen(dy(k, c, n));
    sums(c, n) = Tuple(sums(c, n)[0] + g, sums(c, n)[1] + g * (*xc)(k, c, n));
    return sums;
}

// in_mean/in_rstd: (c, n); bn_mean/bn_rstd: (c) (the running ones after an inference forward).
inline MixedNormBackward batch_instance_norm_backward(const Func &dy, const Func &x, const Func &in_mean,
                                                      const Func &in_rstd, const Func &bn_mean, const Func &bn_rstd,
                                                      const Func &rho, const Func &w, bool training,
                                                      const Expr &spatial, const Expr &batch, const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    MixedNormBackward p;
    p.k = RDom(0, spatial, "bin_bwd_k");
    Func xc;
    p.sums = cell_grad_sums(dy, x, in_mean, p.k, "bin_bwd", &xc);
    Expr t1 = p.sums(c, n)[0], t2 = p.sums(c, n)[1];
    // mean_IN - mean_BN: the offset between the two centerings of x.
    Expr d_ib = in_mean(c, n) - bn_mean(c);
    Expr rb = bn_rstd(c), ri = in_rstd(c, n);
    // Per channel over samples: sum dy, sum dy xhat_BN, sum dy xhat_IN.
    RDom rn(0, batch, "bin_bwd_rn");
    Func chan("bin_bwd_chan");
    chan(c) = Tuple(0.0f, 0.0f, 0.0f);
    {
        Expr t1n = p.sums(c, rn)[0], t2n = p.sums(c, rn)[1];
        Expr dn = in_mean(c, rn) - bn_mean(c);
        chan(c) = Tuple(chan(c)[0] + t1n, chan(c)[1] + rb * (t2n + dn * t1n), chan(c)[2] + in_rstd(c, rn) * t2n);
    }
    p.merges = {chan};
    Expr r = Halide::clamp(widen(rho(c)), 0.0f, 1.0f), wc = widen(w(c));
    Expr sf = Halide::cast<float>(spatial), msf = Halide::cast<float>(spatial * batch);
    Expr in_b = -wc * (1.0f - r) * ri * ri * ri * t2 / sf;
    Expr in_e = -wc * (1.0f - r) * ri * t1 / sf;
    Expr bn_b = 0.0f, bn_e = 0.0f;
    if (training) {
        bn_b = -wc * r * rb * rb * chan(c)[1] / msf;
        bn_e = -wc * r * rb * (chan(c)[0] / msf + d_ib * rb * chan(c)[1] / msf);
    }
    Func coef("bin_bwd_coef");
    coef(c, n) = Tuple(wc * (r * rb + (1.0f - r) * ri), in_b + bn_b, in_e + bn_e);
    p.coeffs = {coef};
    p.dx = Func("dx");
    p.dx(s, c, n) = narrow(widen(dy(s, c, n)) * coef(c, n)[0] + xc(s, c, n) * coef(c, n)[1] + coef(c, n)[2], out_type);
    Expr rv = widen(rho(c));
    // The gradient passes at the bounds (torch 2.15's clamp stops it there): rho starts
    // at exactly 1 (the paper's initialization) and must be able to move.
    Expr inside = rv >= 0.0f && rv <= 1.0f;
    Func drho("drho"), dweight("dweight"), dbias("dbias");
    drho(c) = narrow(Halide::select(inside, wc * (chan(c)[1] - chan(c)[2]), 0.0f), out_type);
    dweight(c) = narrow(r * chan(c)[1] + (1.0f - r) * chan(c)[2], out_type);
    dbias(c) = narrow(chan(c)[0], out_type);
    p.param_grads = {drho, dweight, dbias};
    return p;
}

// ---- Switchable Norm -------------------------------------------------------------------

// softmax of the 3 logits f(0..2), in float32; element i.
inline Expr softmax3(const Func &f, const Expr &i) {
    Expr a = widen(f(0)), b = widen(f(1)), c = widen(f(2));
    Expr mx = Halide::max(a, Halide::max(b, c));
    Expr ea = Halide::exp(a - mx), eb = Halide::exp(b - mx), ec = Halide::exp(c - mx);
    Expr e = Halide::select(i == 0, ea, i == 1, eb, ec);
    return e / (ea + eb + ec);
}

inline MixedNormForward switchable_norm_forward(const Func &x, const Func &mean_weight, const Func &var_weight,
                                                const Func &w, const Func &b, const Func &running_mean,
                                                const Func &running_var, bool training, const Expr &spatial,
                                                const Expr &channels, const Expr &batch, const Expr &eps,
                                                const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    MixedNormForward p;
    MixedPrologue pr = mixed_prologue(x, running_mean, running_var, training, spatial, batch, "sn", p);
    const Func &cell = p.moments.cell, &x32 = pr.x32;
    const CellMerge &bn = pr.bn;
    const BnPart &bp = pr.bp;
    CellMerge ln = merge_cells(cell, false, spatial, channels, "ln_merge");
    p.merges.insert(p.merges.end(), ln.funcs.begin(), ln.funcs.end());
    Func pw("sn_weights");  // (pm_IN, pm_LN, pm_BN, pv_IN, pv_LN, pv_BN)
    pw() = Tuple(softmax3(mean_weight, 0), softmax3(mean_weight, 1), softmax3(mean_weight, 2),
                 softmax3(var_weight, 0), softmax3(var_weight, 1), softmax3(var_weight, 2));
    p.merges.push_back(pw);
    Expr var_in = cell(c, n)[2] / Halide::cast<float>(spatial);
    // mean - k and var of the mixture.
    Expr rel = pw()[0] * cell(c, n)[1] + pw()[1] * ln.rel(c, n) + pw()[2] * bp.rel(c, n);
    Expr var = pw()[3] * var_in + pw()[4] * ln.merged(n)[2] + pw()[5] * bp.var(c);
    Func coef("sn_coef");  // (k, A, B, rstd)
    Expr r = rsqrt_eps(var, eps);
    Expr a = r * widen(w(c));
    coef(c, n) = Tuple(cell(c, n)[0], a, widen(b(c)) - a * rel, r);
    p.coeffs = {coef};
    p.y = Func("y");
    p.y(s, c, n) = narrow((x32(s, c, n) - coef(c, n)[0]) * coef(c, n)[1] + coef(c, n)[2], out_type);
    p.cell_stats = Func("in_stats");
    p.cell_stats(c, n) = Tuple(Halide::strict_float(cell(c, n)[0] + cell(c, n)[1]), var_in, coef(c, n)[3]);
    p.sample_stats = Func("ln_stats");
    p.sample_stats(n) = Tuple(ln.merged(n)[1], ln.merged(n)[2]);
    if (training) {
        p.channel_stats = Func("bn_stats");
        p.channel_stats(c) = Tuple(bn.merged(c)[1], bn.merged(c)[2]);
    }
    return p;
}

// in_mean/in_var/rstd: (c, n) (rstd of the mixture); ln_mean/ln_var: (n); bn_mean/bn_var: (c).
inline MixedNormBackward switchable_norm_backward(const Func &dy, const Func &x, const Func &in_mean,
                                                  const Func &in_var, const Func &rstd, const Func &ln_mean,
                                                  const Func &ln_var, const Func &bn_mean, const Func &bn_var,
                                                  const Func &mean_weight, const Func &var_weight, const Func &w,
                                                  bool training, const Expr &spatial, const Expr &channels,
                                                  const Expr &batch, const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    MixedNormBackward p;
    p.k = RDom(0, spatial, "sn_bwd_k");
    Func xc;
    p.sums = cell_grad_sums(dy, x, in_mean, p.k, "sn_bwd", &xc);
    Func pw("sn_bwd_weights");
    pw() = Tuple(softmax3(mean_weight, 0), softmax3(mean_weight, 1), softmax3(mean_weight, 2),
                 softmax3(var_weight, 0), softmax3(var_weight, 1), softmax3(var_weight, 2));
    // Per cell: the LN and BN means relative to the IN mean, the mixture's mean relative
    // to it and its variance; the gradients reaching the mixture's mean and variance.
    Func cellv("sn_bwd_cell");  // (dL = mean_LN - mean_IN, dB = mean_BN - mean_IN, mean - mean_IN, var, Lmu, Lvar)
    {
        Expr dl = ln_mean(n) - in_mean(c, n), db = bn_mean(c) - in_mean(c, n);
        Expr rel = pw()[1] * dl + pw()[2] * db;
        Expr var = pw()[3] * in_var(c, n) + pw()[4] * ln_var(n) + pw()[5] * bn_var(c);
        Expr r = rstd(c, n), wc = widen(w(c));
        Expr g1 = wc * p.sums(c, n)[0], g2 = wc * (p.sums(c, n)[1] - rel * p.sums(c, n)[0]);
        cellv(c, n) = Tuple(dl, db, rel, var, -r * g1, -0.5f * r * r * r * g2);
    }
    RDom rc(0, channels, "sn_bwd_rc"), rn(0, batch, "sn_bwd_rn");
    Func per_n("sn_bwd_per_sample"), per_c("sn_bwd_per_channel");
    per_n(n) = Tuple(0.0f, 0.0f);
    per_n(n) = Tuple(per_n(n)[0] + cellv(rc, n)[4], per_n(n)[1] + cellv(rc, n)[5]);
    // Per channel: the BN part's (sum Lmu, sum Lvar), sum dy, sum dy xhat.
    per_c(c) = Tuple(0.0f, 0.0f, 0.0f, 0.0f);
    per_c(c) = Tuple(per_c(c)[0] + cellv(c, rn)[4], per_c(c)[1] + cellv(c, rn)[5], per_c(c)[2] + p.sums(c, rn)[0],
                     per_c(c)[3] + rstd(c, rn) * (p.sums(c, rn)[1] - cellv(c, rn)[2] * p.sums(c, rn)[0]));
    // The logits' gradients: softmax Jacobian with differences, p_j sum L (stat_j - mix).
    RDom rcn(0, channels, 0, batch, "sn_bwd_rcn");
    Func wsum("sn_bwd_wsum");
    wsum() = Tuple(0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f);
    {
        Tuple v = cellv(rcn.x, rcn.y);
        Expr lm = v[4], lv = v[5], rel = v[2], var = v[3];
        Expr vi = in_var(rcn.x, rcn.y), vl = ln_var(rcn.y), vb = bn_var(rcn.x);
        wsum() = Tuple(wsum()[0] + lm * (0.0f - rel), wsum()[1] + lm * (v[0] - rel), wsum()[2] + lm * (v[1] - rel),
                       wsum()[3] + lv * (vi - var), wsum()[4] + lv * (vl - var), wsum()[5] + lv * (vb - var));
    }
    p.merges = {pw, cellv, per_n, per_c, wsum};
    Expr sf = Halide::cast<float>(spatial);
    Expr lsf = sf * Halide::cast<float>(channels), bsf = sf * Halide::cast<float>(batch);
    Expr bn_live = training ? Expr(1.0f) : Expr(0.0f);  // running statistics are constants
    Expr dmu_i = pw()[0] * cellv(c, n)[4], dvar_i = pw()[3] * cellv(c, n)[5];
    Expr dmu_l = pw()[1] * per_n(n)[0], dvar_l = pw()[4] * per_n(n)[1];
    Expr dmu_b = bn_live * pw()[2] * per_c(c)[0], dvar_b = bn_live * pw()[5] * per_c(c)[1];
    Func coef("sn_bwd_coef");
    coef(c, n) = Tuple(rstd(c, n) * widen(w(c)), 2.0f * (dvar_i / sf + dvar_l / lsf + dvar_b / bsf),
                       dmu_i / sf + dmu_l / lsf + dmu_b / bsf - 2.0f * dvar_l * cellv(c, n)[0] / lsf -
                           2.0f * dvar_b * cellv(c, n)[1] / bsf);
    p.coeffs = {coef};
    p.dx = Func("dx");
    p.dx(s, c, n) = narrow(widen(dy(s, c, n)) * coef(c, n)[0] + xc(s, c, n) * coef(c, n)[1] + coef(c, n)[2], out_type);
    Var i("i");
    Func dmw("dmean_weight"), dvw("dvar_weight"), dweight("dweight"), dbias("dbias");
    dmw(i) = narrow(Halide::select(i == 0, pw()[0] * wsum()[0], i == 1, pw()[1] * wsum()[1], pw()[2] * wsum()[2]),
                    out_type);
    dvw(i) = narrow(Halide::select(i == 0, pw()[3] * wsum()[3], i == 1, pw()[4] * wsum()[4], pw()[5] * wsum()[5]),
                    out_type);
    dweight(c) = narrow(per_c(c)[3], out_type);
    dbias(c) = narrow(per_c(c)[2], out_type);
    p.param_grads = {dweight, dbias, dmw, dvw};
    return p;
}

}  // namespace normgen::alg

// Input scalers for data sets (z-score and min-max): per-feature statistics of a chunk
// of samples and the per-feature affine map that applies (or inverts) a fitted scaler.
// Tensors are 3-D views x(s, c, n): c = the feature, (s, n) = the samples (a
// (samples, features) array is (1, F, R): features unit-stride; a column-major one is
// (R, F, 1)).
//   feature_stats: per feature, over the chunk's samples: the mean as (shift, mean -
//     shift) (summed in float64 by the caller: no rounding at the data's magnitude), M2
//     (sum of squared deviations; shifted by a pilot mean of the first samples and
//     corrected, as every normgen moment), min and max. Chunks merge by Chan's formula
//     (count, mean, M2) and min/max, outside the kernel.
//   feature_affine: y = (x - center(c)) * scale(c) + shift(c), float32 parameters
//     (z-score: (mean, 1/std, 0); min-max: (data_min, scale, lo); inverses swapped).
#pragma once

#include "channel_norm.h"

namespace normgen::alg {

struct FeatureStats {
    Func pilot_sum;  // per-c sum over `pilot`
    RDom pilot;      // (s, n) prefix
    Func shift;      // per-c pilot mean
    Func acc;        // per-c Tuple (sum d, sum d^2, min x, max x) over `k`
    RDom k;          // (s, n)
    Func stats;      // output (c): Tuple (shift, mean - shift, M2, min, max), float32
};

inline FeatureStats feature_stats(const Func &x, const Expr &spatial, const Expr &batch) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    FeatureStats p;
    Func x32("fs_x32");
    x32(s, c, n) = widen(x(s, c, n));
    // Pilot: about 256 samples (the first of each run), as BatchNorm's.
    Expr pilot_s = Halide::min(spatial, 256);
    Expr pilot_n = Halide::min(batch, Halide::max(1, 256 / pilot_s));
    p.pilot = RDom(0, pilot_s, 0, pilot_n, "fs_pilot");
    p.pilot_sum = Func("fs_pilot_sum");
    p.pilot_sum(c) = 0.0f;
    p.pilot_sum(c) += x32(p.pilot.x, c, p.pilot.y);
    p.shift = Func("fs_shift");
    p.shift(c) = p.pilot_sum(c) / Halide::cast<float>(pilot_s * pilot_n);
    p.k = RDom(0, spatial, 0, batch, "fs_k");
    Expr xv = x32(p.k.x, c, p.k.y);
    Expr d = Halide::strict_float(xv - p.shift(c));  // see moments() in common.h
    p.acc = Func("fs_acc");
    p.acc(c) = Tuple(0.0f, 0.0f, Halide::Float(32).max(), Halide::Float(32).min());
    p.acc(c) = Tuple(p.acc(c)[0] + d, p.acc(c)[1] + d * d, Halide::min(p.acc(c)[2], xv), Halide::max(p.acc(c)[3], xv));
    Expr count = Halide::cast<float>(spatial * batch);
    p.stats = Func("stats");
    p.stats(c) = Tuple(p.shift(c), p.acc(c)[0] / count, Halide::max(p.acc(c)[1] - p.acc(c)[0] * p.acc(c)[0] / count, 0.0f),
                       p.acc(c)[2], p.acc(c)[3]);
    return p;
}

struct FeatureAffine {
    Func y;  // output (s, c, n)
};

inline FeatureAffine feature_affine(const Func &x, const Func &center, const Func &scale, const Func &shift,
                                    const Type &out_type) {
    Var s = spatial_var(), c = channel_var(), n = batch_var();
    FeatureAffine p;
    p.y = Func("y");
    p.y(s, c, n) = narrow((widen(x(s, c, n)) - center(c)) * scale(c) + shift(c), out_type);
    return p;
}

}  // namespace normgen::alg

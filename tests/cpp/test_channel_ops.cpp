// Weight normalization, BatchNorm folding and the input scalers from C++, against
// float64 references written here.
#include "reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

using normgen::DType;
using normgen::Status;
using normgen::TensorView;

namespace {

double tol(DType dt, double want, double scale) {
    return 2 * ref::unit_roundoff(dt) * std::fabs(want) + 64 * ref::unit_roundoff(DType::f32) * scale;
}

class ChannelOps : public ::testing::TestWithParam<DType> {};

// w = g v / ||v|| over every dim but 0 of a (O, I, 3) tensor; backward by the formula
// dv = (g/||v||)(dw - v (dw.v)/||v||^2), dg = dw.v / ||v||.
TEST_P(ChannelOps, WeightNormForwardBackward) {
    const DType dt = GetParam();
    const int64_t O = 5, K = 7 * 3;
    ref::Tensor v(dt, {O, 7, 3}), g(dt, {O}), w(dt, {O, 7, 3}), dw(dt, {O, 7, 3}), dv(dt, {O, 7, 3}), dg(dt, {O});
    std::mt19937 rng(3);
    std::normal_distribution<double> nd(0, 1);
    for (int64_t i = 0; i < O * K; i++) {
        v.set(i, 2 * nd(rng));
        dw.set(i, nd(rng));
    }
    for (int64_t o = 0; o < O; o++) g.set(o, 1 + 0.3 * nd(rng));
    std::vector<float> norm(O);
    TensorView nv = TensorView::contiguous(norm.data(), DType::f32, {O});
    Status s = normgen::weight_norm_forward(v.view(), g.view(), 0, w.view(), &nv);
    ASSERT_TRUE(s.ok()) << s.message();
    s = normgen::weight_norm_backward(dw.view(), v.view(), nv, g.view(), 0, dv.view(), dg.view());
    ASSERT_TRUE(s.ok()) << s.message();
    for (int64_t o = 0; o < O; o++) {
        double ss = 0, dot = 0;
        for (int64_t k = 0; k < K; k++) {
            ss += v.values[o * K + k] * v.values[o * K + k];
            dot += dw.values[o * K + k] * v.values[o * K + k];
        }
        const double nrm = std::sqrt(ss), gg = g.values[o];
        EXPECT_NEAR(norm[o], nrm, tol(DType::f32, nrm, nrm));
        EXPECT_NEAR(dg.get(o), dot / nrm, tol(dt, dot / nrm, std::fabs(dot / nrm) + K));
        for (int64_t k = 0; k < K; k++) {
            const double want_w = gg * v.values[o * K + k] / nrm;
            EXPECT_NEAR(w.get(o * K + k), want_w, tol(dt, want_w, std::fabs(gg)));
            const double want_dv = gg / nrm * (dw.values[o * K + k] - v.values[o * K + k] * dot / (nrm * nrm));
            EXPECT_NEAR(dv.get(o * K + k), want_dv, tol(dt, want_dv, std::fabs(gg) / nrm * 4 * K));
        }
    }
}

TEST_P(ChannelOps, FoldBatchNormWithAndWithoutBias) {
    const DType dt = GetParam();
    const int64_t O = 6, K = 4 * 3 * 3;
    ref::Tensor w(dt, {O, 4, 3, 3}), b(dt, {O}), gamma(dt, {O}), beta(dt, {O}), w2(dt, {O, 4, 3, 3}), b2(dt, {O});
    std::vector<float> mean(O), var(O);
    std::mt19937 rng(5);
    std::normal_distribution<double> nd(0, 1);
    for (int64_t i = 0; i < O * K; i++) w.set(i, nd(rng));
    for (int64_t o = 0; o < O; o++) {
        b.set(o, nd(rng));
        gamma.set(o, 1 + 0.2 * nd(rng));
        beta.set(o, nd(rng));
        mean[o] = static_cast<float>(nd(rng));
        var[o] = static_cast<float>(0.5 + std::fabs(nd(rng)));
    }
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {O}), vv = TensorView::contiguous(var.data(), DType::f32, {O});
    for (bool with_bias : {true, false}) {
        TensorView bv = b.view(), gv = gamma.view(), btv = beta.view();
        Status s = normgen::fold_batch_norm(w.view(), with_bias ? &bv : nullptr, mv, vv, &gv, &btv, 1e-3, w2.view(),
                                            b2.view());
        ASSERT_TRUE(s.ok()) << s.message();
        for (int64_t o = 0; o < O; o++) {
            const double sc = gamma.values[o] / std::sqrt(double(var[o]) + 1e-3);
            const double want_b = ((with_bias ? b.values[o] : 0.0) - mean[o]) * sc + beta.values[o];
            EXPECT_NEAR(b2.get(o), want_b, tol(dt, want_b, 4));
            for (int64_t k = 0; k < K; k++)
                EXPECT_NEAR(w2.get(o * K + k), w.values[o * K + k] * sc, tol(dt, w.values[o * K + k] * sc, 4));
        }
    }
    TensorView short_var = TensorView::contiguous(var.data(), DType::f32, {O - 1});
    Status s = normgen::fold_batch_norm(w.view(), nullptr, mv, short_var, nullptr, nullptr, 1e-5, w2.view(), b2.view());
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("running_var"), std::string::npos) << s.message();
}

// Chunked partial_fit equals one fit; transform / inverse_transform round trip; a
// constant feature is finite (z-score 0, min-max the range's low end).
TEST_P(ChannelOps, ScalersMergeChunksExactly) {
    const DType dt = GetParam();
    const int64_t R = 500, F = 5;
    ref::Tensor x(dt, {R, F}), y(dt, {R, F}), back(dt, {R, F});
    std::mt19937 rng(9);
    std::normal_distribution<double> nd(0, 1);
    for (int64_t r = 0; r < R; r++)
        for (int64_t f = 0; f < F; f++) x.set(r * F + f, f == 2 ? 7.0 : (f == 0 ? 1e4 : 3.0 * f) + nd(rng));
    normgen::ZScore whole, chunked;
    normgen::MinMax mm(-1.0, 1.0);
    ASSERT_TRUE(whole.fit(x.view()).ok());
    for (int64_t r0 = 0; r0 < R; r0 += 120) {
        const int64_t rows = std::min<int64_t>(120, R - r0);
        TensorView chunk = TensorView::strided(x.bytes.data() + r0 * F * normgen::dtype_size(dt), dt, {rows, F}, {F, 1});
        ASSERT_TRUE(chunked.partial_fit(chunk).ok());
        ASSERT_TRUE(mm.partial_fit(chunk).ok());
    }
    EXPECT_EQ(chunked.n_samples_seen(), R);
    for (int64_t f = 0; f < F; f++) {
        double m = 0, q = 0, lo = 1e300, hi = -1e300;
        for (int64_t r = 0; r < R; r++) {
            const double v = x.values[r * F + f];
            m += v;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
        m /= R;
        for (int64_t r = 0; r < R; r++) q += (x.values[r * F + f] - m) * (x.values[r * F + f] - m);
        const double var = q / R;
        EXPECT_NEAR(chunked.mean()[f], m, 1e-7 * std::fabs(m) + 1e-6);
        EXPECT_NEAR(chunked.var()[f], var, 1e-4 * var + 1e-12);
        EXPECT_NEAR(whole.var()[f], var, 1e-4 * var + 1e-12);
        EXPECT_EQ(mm.data_min()[f], lo);
        EXPECT_EQ(mm.data_max()[f], hi);
    }
    EXPECT_EQ(chunked.scale()[2], 1.0);  // the constant feature
    ASSERT_TRUE(chunked.transform(x.view(), y.view()).ok());
    ASSERT_TRUE(chunked.inverse_transform(y.view(), back.view()).ok());
    for (int64_t r = 0; r < R; r++) {
        EXPECT_EQ(y.get(r * F + 2), 0.0);
        for (int64_t f = 0; f < F; f++) {
            const double want = (x.values[r * F + f] - chunked.mean()[f]) / chunked.scale()[f];
            EXPECT_NEAR(y.get(r * F + f), want, tol(dt, want, 2 * (std::fabs(x.values[r * F + f]) / chunked.scale()[f])));
            EXPECT_NEAR(back.get(r * F + f), x.values[r * F + f], 8 * ref::unit_roundoff(dt) * std::fabs(x.values[r * F + f]) + 1e-3);
        }
    }
    ASSERT_TRUE(mm.transform(x.view(), y.view()).ok());
    for (int64_t r = 0; r < R; r++) EXPECT_EQ(y.get(r * F + 2), -1.0);
    normgen::ZScore unfitted;
    Status s = unfitted.transform(x.view(), y.view());
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("not fitted"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ChannelOps, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const ::testing::TestParamInfo<DType> &i) { return std::string(normgen::dtype_name(i.param)); });

}  // namespace

// BatchNorm through the public C++ API against float64 references, for every
// batch_norm kernel in the kernel list (parametrized over normgen::kernels()).
#include "reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

using normgen::DType;
using normgen::KernelInfo;
using normgen::Status;
using normgen::TensorView;

namespace {

using ref::dtype_of;
bool flag(const KernelInfo &k, const std::string &key) {
    return std::string(k.variant).find(key + "=1") != std::string::npos;
}

// An (N, C, S) tensor stored in `layout` ("nchw", "nhwc", "strided": spatial stride 2).
struct Channels {
    ref::Tensor t;
    int64_t N, C, S;
    std::string layout;
    Channels(DType d, int64_t n, int64_t c, int64_t s, const std::string &l)
        : t(d, {n * c * s * (l == "strided" ? 2 : 1)}), N(n), C(c), S(s), layout(l) {}
    int64_t offset(int64_t n, int64_t c, int64_t s) const {
        if (layout == "nhwc") return (n * S + s) * C + c;
        if (layout == "strided") return ((n * C + c) * S + s) * 2;
        return (n * C + c) * S + s;
    }
    TensorView view() {
        std::vector<int64_t> st = layout == "nhwc" ? std::vector<int64_t>{S * C, 1, C}
                                  : layout == "strided" ? std::vector<int64_t>{2 * C * S, 2 * S, 2}
                                                        : std::vector<int64_t>{C * S, S, 1};
        return TensorView::strided(t.bytes.data(), t.dtype, {N, C, S}, st);
    }
};

class BatchNormKernel : public ::testing::TestWithParam<KernelInfo> {};

static void check_batch_norm(const KernelInfo &k, const std::vector<int64_t> &ncs) {
    const DType dt = dtype_of(k.dtype);
    const bool training = flag(k, "training"), fwd = std::string(k.dir) == "fwd";
    const bool has_w = flag(k, "affine") || flag(k, "has_weight");
    const int64_t N = ncs[0], C = ncs[1], S = ncs[2];
    const double eps = 1e-5;
    std::mt19937 rng(5);
    std::normal_distribution<double> nd(0.0, 1.0);
    Channels x(dt, N, C, S, k.layout), y(dt, N, C, S, k.layout), dy(dt, N, C, S, k.layout);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                x.t.set(x.offset(n, c, s), 3.0 + 2.0 * nd(rng) + c);
                dy.t.set(dy.offset(n, c, s), nd(rng));
            }
    ref::Tensor w(dt, {C}), b(dt, {C});
    std::vector<float> rm(C), rv(C);
    for (int64_t c = 0; c < C; c++) {
        w.set(c, 1.0 + 0.3 * nd(rng));
        b.set(c, nd(rng));
        rm[c] = static_cast<float>(c + 0.5 * nd(rng));
        rv[c] = static_cast<float>(1.0 + 0.5 * std::fabs(nd(rng)));
    }
    // Reference statistics.
    std::vector<double> mean(C), rstd(C);
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        if (training) {
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) m += x.t.values[x.offset(n, c, s)];
            m /= N * S;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) v += std::pow(x.t.values[x.offset(n, c, s)] - m, 2);
            v /= N * S;
        } else {
            m = rm[c];
            v = rv[c];
        }
        mean[c] = m;
        rstd[c] = 1 / std::sqrt(v + eps);
    }
    TensorView wv = w.view(), bv = b.view();
    TensorView rmv = TensorView::contiguous(rm.data(), DType::f32, {C}), rvv = TensorView::contiguous(rv.data(), DType::f32, {C});
    std::vector<float> sm(C), sr(C);
    TensorView smv = TensorView::contiguous(sm.data(), DType::f32, {C}), srv = TensorView::contiguous(sr.data(), DType::f32, {C});
    Status s = normgen::batch_norm_forward(x.view(), training ? nullptr : &rmv, training ? nullptr : &rvv,
                                           has_w ? &wv : nullptr, has_w ? &bv : nullptr, training, 0.1, eps, y.view(),
                                           &smv, &srv);
    ASSERT_TRUE(s.ok()) << s.message();
    const double u = ref::unit_roundoff(dt), u32 = ref::unit_roundoff(DType::f32);
    if (fwd) {
        EXPECT_STREQ(normgen::last_kernel(), k.name);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t sp = 0; sp < S; sp++) {
                    double want = (x.t.values[x.offset(n, c, sp)] - mean[c]) * rstd[c];
                    if (has_w) want = want * w.values[c] + b.values[c];
                    // float32 statistics over N * S values of magnitude |x| (x carries a
                    // per-channel offset c): rounding scales with |x| * rstd * |w|.
                    const double mag = 1 + std::fabs(want) +
                                       std::fabs(x.t.values[x.offset(n, c, sp)]) * rstd[c] * (has_w ? std::fabs(w.values[c]) : 1);
                    ASSERT_NEAR(y.t.get(y.offset(n, c, sp)), want,
                                2 * u * std::fabs(want) + 8 * u32 * std::log2(double(N * S) + 2) * mag)
                        << n << "," << c << "," << sp;
                }
        return;
    }
    Channels dx(dt, N, C, S, k.layout);
    ref::Tensor dw(dt, {C}), db(dt, {C});
    TensorView dwv = dw.view(), dbv = db.view();
    s = normgen::batch_norm_backward(dy.view(), x.view(), smv, srv, has_w ? &wv : nullptr, training, dx.view(),
                                     has_w ? &dwv : nullptr, has_w ? &dbv : nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_STREQ(normgen::last_kernel(), k.name);
    for (int64_t c = 0; c < C; c++) {
        const double M = double(N * S), g = has_w ? w.values[c] : 1.0;
        const double r = sr[c], mu = sm[c];
        double sdy = 0, sdyx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t sp = 0; sp < S; sp++) {
                double xh = (x.t.values[x.offset(n, c, sp)] - mu) * r;
                sdy += dy.t.values[dy.offset(n, c, sp)];
                sdyx += dy.t.values[dy.offset(n, c, sp)] * xh;
            }
        for (int64_t n = 0; n < N; n++)
            for (int64_t sp = 0; sp < S; sp++) {
                double xh = (x.t.values[x.offset(n, c, sp)] - mu) * r, d = dy.t.values[dy.offset(n, c, sp)];
                double want = training ? r * g * (d - sdy / M - xh * sdyx / M) : r * g * d;
                ASSERT_NEAR(dx.t.get(dx.offset(n, c, sp)), want, 2 * u * std::fabs(want) + 64 * u32 * r * std::fabs(g) * 4)
                    << n << "," << c << "," << sp;
            }
        if (has_w) {
            EXPECT_NEAR(dw.get(c), sdyx, 2 * u * std::fabs(sdyx) + 64 * u32 * M);
            EXPECT_NEAR(db.get(c), sdy, 2 * u * std::fabs(sdy) + 64 * u32 * M);
        }
    }
}

TEST_P(BatchNormKernel, MatchesFloat64Reference) {
    ref::for_each_kernel_shape(GetParam(), {{3, 5, 37}, {2, 64, 9}}, check_batch_norm);
}

std::vector<KernelInfo> batch_norm_kernels() {
    std::vector<KernelInfo> v;
    for (const auto &k : normgen::kernels())
        // (The fused-epilogue kernels are tested from Python: tests/python/test_fused_norms.py.)
        if (ref::cpu_kernel(k) && std::string(k.op) == "batch_norm" &&
            std::string(k.variant).find("epilogue=1") == std::string::npos)
            v.push_back(k);
    return v;
}

INSTANTIATE_TEST_SUITE_P(KernelList, BatchNormKernel, ::testing::ValuesIn(batch_norm_kernels()),
                         [](const ::testing::TestParamInfo<KernelInfo> &i) { return std::string(i.param.name); });

TEST(BatchNormRunningStats, MomentumAndCumulativeAverage) {
    const int64_t N = 4, C = 2, S = 3;
    ref::Tensor x(DType::f32, {N, C, S}), y(DType::f32, {N, C, S});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, std::sin(double(i)) * 3 + 1);
    std::vector<float> rm = {0, 0}, rv = {1, 1};
    TensorView rmv = TensorView::contiguous(rm.data(), DType::f32, {C}), rvv = TensorView::contiguous(rv.data(), DType::f32, {C});
    int64_t tracked = 0;
    for (int step = 1; step <= 3; step++) {
        ASSERT_TRUE(normgen::batch_norm_forward(x.view(), &rmv, &rvv, nullptr, nullptr, true, std::nullopt, 1e-5, y.view(),
                                                nullptr, nullptr, &tracked).ok());
        EXPECT_EQ(tracked, step);
    }
    // The cumulative average of three identical batches is the batch statistics.
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) m += x.values[(n * C + c) * S + s];
        m /= N * S;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) v += std::pow(x.values[(n * C + c) * S + s] - m, 2);
        EXPECT_NEAR(rm[c], m, 1e-5);
        EXPECT_NEAR(rv[c], v / (N * S - 1), 1e-5);
    }
}

TEST(BatchNormBadInput, OneValuePerChannelAndMissingRunningStats) {
    std::vector<float> x(3, 1.f), y(3, -9.f);
    TensorView xv = TensorView::contiguous(x.data(), DType::f32, {1, 3}), yv = TensorView::contiguous(y.data(), DType::f32, {1, 3});
    Status s = normgen::batch_norm_forward(xv, nullptr, nullptr, nullptr, nullptr, true, 0.1, 1e-5, yv);
    EXPECT_EQ(s.code(), Status::Code::invalid_argument);
    EXPECT_NE(s.message().find("Expected more than 1 value per channel when training"), std::string::npos) << s.message();
    s = normgen::batch_norm_forward(xv, nullptr, nullptr, nullptr, nullptr, false, 0.1, 1e-5, yv);
    EXPECT_NE(s.message().find("running_mean and running_var are required"), std::string::npos) << s.message();
    for (float v : y) EXPECT_EQ(v, -9.f);
}

}  // namespace

// Channels-last calls whose samples follow each other in memory run as one sample of
// N x S positions (BatchNorm1d's (N, C) included); samples with gaps between them run
// unfolded. Both match the float64 statistics and each other.
TEST(BatchNormChannelsLast, FoldedAndGappedSamplesMatchFloat64) {
    const int64_t N = 7, C = 24, S = 5, gap = 3;
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 1.f);
    // x[n][s][c] at n * (S * C + gap) + s * C + c in `gapped`, without the gaps in `dense`.
    std::vector<float> gapped(N * (S * C + gap), -1e30f), dense(N * S * C);
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < S * C; i++) dense[n * S * C + i] = gapped[n * (S * C + gap) + i] = 50.f + 2.f * nd(rng);
    auto bn = [&](float *data, std::vector<int64_t> strides, std::vector<float> &mean, std::vector<float> &rstd) {
        std::vector<float> y(N * (S * C + gap));
        mean.assign(C, 0.f);
        rstd.assign(C, 0.f);
        TensorView xv = TensorView::strided(data, DType::f32, {N, C, S}, strides),
                   yv = TensorView::strided(y.data(), DType::f32, {N, C, S}, strides),
                   mv = TensorView::contiguous(mean.data(), DType::f32, {C}),
                   rv = TensorView::contiguous(rstd.data(), DType::f32, {C});
        Status s = normgen::batch_norm_forward(xv, nullptr, nullptr, nullptr, nullptr, true, 0.1, 1e-5, yv, &mv, &rv);
        EXPECT_TRUE(s.ok()) << s.message();
        EXPECT_NE(std::string(normgen::last_kernel()).find("nhwc"), std::string::npos) << normgen::last_kernel();
    };
    std::vector<float> m_dense, r_dense, m_gap, r_gap, m_1d, r_1d;
    bn(dense.data(), {S * C, 1, C}, m_dense, r_dense);
    bn(gapped.data(), {S * C + gap, 1, C}, m_gap, r_gap);
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) m += dense[(n * S + s) * C + c];
        m /= N * S;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) v += std::pow(dense[(n * S + s) * C + c] - m, 2);
        const double r = 1 / std::sqrt(v / (N * S) + 1e-5);
        const double tol = 8 * ref::unit_roundoff(DType::f32) * std::log2(double(N * S) + 2);
        EXPECT_NEAR(m_dense[c], m, tol * 60) << c;
        EXPECT_NEAR(m_gap[c], m, tol * 60) << c;
        EXPECT_NEAR(r_dense[c], r, tol * r * 30) << c;
        EXPECT_NEAR(r_gap[c], r, tol * r * 30) << c;
    }
    // BatchNorm1d: (N x S, C) rows, the same values as 2-D.
    std::vector<float> y1(dense.size()), mean1(C), rstd1(C);
    TensorView x1 = TensorView::contiguous(dense.data(), DType::f32, {N * S, C}),
               y1v = TensorView::contiguous(y1.data(), DType::f32, {N * S, C}),
               m1 = TensorView::contiguous(mean1.data(), DType::f32, {C}),
               r1 = TensorView::contiguous(rstd1.data(), DType::f32, {C});
    Status s = normgen::batch_norm_forward(x1, nullptr, nullptr, nullptr, nullptr, true, 0.1, 1e-5, y1v, &m1, &r1);
    ASSERT_TRUE(s.ok()) << s.message();
    for (int64_t c = 0; c < C; c++) {
        EXPECT_NEAR(mean1[c], m_dense[c], 1e-4f) << c;
        EXPECT_NEAR(rstd1[c], r_dense[c], 1e-4f * r_dense[c]) << c;
    }
    for (int64_t i = 0; i < N * S * C; i++) {
        const int64_t c = i % C;
        ASSERT_NEAR(y1[i], (dense[i] - mean1[c]) * rstd1[c], 1e-4f) << i;
    }
}

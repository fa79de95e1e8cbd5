// GroupNorm and InstanceNorm through the public C++ API against float64 references,
// for every group_norm kernel in the kernel list.
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

class GroupNormKernel : public ::testing::TestWithParam<KernelInfo> {};

static void check_group_norm(const KernelInfo &k, const std::vector<int64_t> &ncs) {
    const DType dt = dtype_of(k.dtype);
    const std::string layout = k.layout;
    const bool has_w = std::string(k.variant).find("=1") != std::string::npos;
    const int64_t N = ncs[0], C = ncs[1], S = ncs[2], G = C % 3 == 0 ? 3 : (C % 32 == 0 ? 32 : C), CG = C / G;
    const int64_t pad = layout == "strided" ? 2 : 1;
    auto offset = [&](int64_t n, int64_t c, int64_t s) {
        if (layout == "nhwc") return (n * S + s) * C + c;
        return ((n * C + c) * S + s) * pad;
    };
    std::vector<int64_t> strides = layout == "nhwc" ? std::vector<int64_t>{S * C, 1, C}
                                                   : std::vector<int64_t>{C * S * pad, S * pad, pad};
    ref::Tensor x(dt, {N * C * S * pad}), y(dt, {N * C * S * pad}), dy(dt, {N * C * S * pad}), dx(dt, {N * C * S * pad});
    std::mt19937 rng(9);
    std::normal_distribution<double> nd(0.0, 1.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                x.set(offset(n, c, s), 2 + 3 * nd(rng));
                dy.set(offset(n, c, s), nd(rng));
            }
    ref::Tensor w(dt, {C}), b(dt, {C});
    for (int64_t c = 0; c < C; c++) {
        w.set(c, 1 + 0.3 * nd(rng));
        b.set(c, nd(rng));
    }
    auto view = [&](ref::Tensor &t) { return TensorView::strided(t.bytes.data(), dt, {N, C, S}, strides); };
    TensorView wv = w.view(), bv = b.view();
    std::vector<float> mean(N * G), rstd(N * G);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {N, G}), rv = TensorView::contiguous(rstd.data(), DType::f32, {N, G});
    Status st = normgen::group_norm_forward(view(x), G, has_w ? &wv : nullptr, has_w ? &bv : nullptr, 1e-5, view(y), &mv, &rv);
    ASSERT_TRUE(st.ok()) << st.message();
    const double u = ref::unit_roundoff(dt), u32 = ref::unit_roundoff(DType::f32);
    ref::Tensor dw(dt, {C}), db(dt, {C});
    std::vector<double> want_dw(C, 0.0), want_db(C, 0.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            double m = 0, v = 0;
            for (int64_t c = g * CG; c < (g + 1) * CG; c++)
                for (int64_t s = 0; s < S; s++) m += x.values[offset(n, c, s)];
            m /= CG * S;
            for (int64_t c = g * CG; c < (g + 1) * CG; c++)
                for (int64_t s = 0; s < S; s++) v += std::pow(x.values[offset(n, c, s)] - m, 2);
            v /= CG * S;
            const double r = 1 / std::sqrt(v + 1e-5);
            EXPECT_NEAR(mean[n * G + g], m, 1e-5);
            EXPECT_NEAR(rstd[n * G + g], r, 1e-5 * r);
            double sh = 0, shx = 0;
            for (int64_t c = g * CG; c < (g + 1) * CG; c++)
                for (int64_t s = 0; s < S; s++) {
                    const double xh = (x.values[offset(n, c, s)] - mean[n * G + g]) * rstd[n * G + g];
                    const double h = dy.values[offset(n, c, s)] * (has_w ? w.values[c] : 1.0);
                    sh += h;
                    shx += h * xh;
                    want_dw[c] += dy.values[offset(n, c, s)] * xh;
                    want_db[c] += dy.values[offset(n, c, s)];
                    if (std::string(k.dir) == "fwd") {
                        double want = (x.values[offset(n, c, s)] - m) * r;
                        if (has_w) want = want * w.values[c] + b.values[c];
                        ASSERT_NEAR(y.get(offset(n, c, s)), want, 2 * u * std::fabs(want) + 64 * u32 * (1 + std::fabs(want)));
                    }
                }
            if (std::string(k.dir) == "fwd") continue;
            if (n == 0 && g == 0) {
                TensorView dwv = dw.view(), dbv = db.view();
                st = normgen::group_norm_backward(view(dy), view(x), mv, rv, G, has_w ? &wv : nullptr, view(dx),
                                                  has_w ? &dwv : nullptr, has_w ? &dbv : nullptr);
                ASSERT_TRUE(st.ok()) << st.message();
                EXPECT_STREQ(normgen::last_kernel(), k.name);
            }
            const double M = double(CG * S);
            for (int64_t c = g * CG; c < (g + 1) * CG; c++)
                for (int64_t s = 0; s < S; s++) {
                    const double r32 = rstd[n * G + g];
                    const double xh = (x.values[offset(n, c, s)] - mean[n * G + g]) * r32;
                    const double h = dy.values[offset(n, c, s)] * (has_w ? w.values[c] : 1.0);
                    const double want = r32 * (h - sh / M - xh * shx / M);
                    ASSERT_NEAR(dx.get(offset(n, c, s)), want, 2 * u * std::fabs(want) + 256 * u32 * r32 * 4);
                }
        }
    if (std::string(k.dir) == "fwd") {
        EXPECT_STREQ(normgen::last_kernel(), k.name);
        return;
    }
    for (int64_t c = 0; c < C && has_w; c++) {  // sums of N * S terms of size ~3
        auto tol = [&](double want) { return 2 * u * std::fabs(want) + 64 * u32 * N * S * 3; };
        EXPECT_NEAR(dw.get(c), want_dw[c], tol(want_dw[c])) << "dweight[" << c << "]";
        EXPECT_NEAR(db.get(c), want_db[c], tol(want_db[c])) << "dbias[" << c << "]";
    }
}

TEST_P(GroupNormKernel, MatchesFloat64Reference) {
    ref::for_each_kernel_shape(GetParam(), {{2, 6, 19}, {2, 64, 5}}, check_group_norm);
}

std::vector<KernelInfo> group_norm_kernels() {
    std::vector<KernelInfo> v;
    for (const auto &k : normgen::kernels())
        // (The fused-epilogue kernels are tested from Python: tests/python/test_fused_norms.py.)
        if (ref::cpu_kernel(k) && std::string(k.op) == "group_norm" &&
            std::string(k.variant).find("epilogue=1") == std::string::npos)
            v.push_back(k);
    return v;
}

INSTANTIATE_TEST_SUITE_P(KernelList, GroupNormKernel, ::testing::ValuesIn(group_norm_kernels()),
                         [](const ::testing::TestParamInfo<KernelInfo> &i) { return std::string(i.param.name); });

TEST(GroupNormBadInput, GroupsMustDivideChannels) {
    std::vector<float> x(2 * 6 * 4, 1.f), y(2 * 6 * 4, -3.f);
    TensorView xv = TensorView::contiguous(x.data(), DType::f32, {2, 6, 4}), yv = TensorView::contiguous(y.data(), DType::f32, {2, 6, 4});
    Status s = normgen::group_norm_forward(xv, 4, nullptr, nullptr, 1e-5, yv);
    EXPECT_EQ(s.code(), Status::Code::invalid_argument);
    EXPECT_NE(s.message().find("num_groups"), std::string::npos) << s.message();
    for (float v : y) EXPECT_EQ(v, -3.f);
}

TEST(InstanceNorm, EqualsGroupNormWithOneGroupPerChannel) {
    const int64_t N = 2, C = 3, S = 10;
    ref::Tensor x(DType::f32, {N, C, S}), y1(DType::f32, {N, C, S}), y2(DType::f32, {N, C, S});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, std::sin(0.7 * double(i)) * 5 + 2);
    ASSERT_TRUE(normgen::group_norm_forward(x.view(), C, nullptr, nullptr, 1e-5, y1.view()).ok());
    ASSERT_TRUE(normgen::instance_norm_forward(x.view(), nullptr, nullptr, nullptr, nullptr, true, 0.1, 1e-5, y2.view()).ok());
    EXPECT_EQ(y1.bytes, y2.bytes);
}

}  // namespace

// Batch-Instance Norm and Switchable Norm through the public C++ API, for every kernel
// of both in the kernel list: outputs against a float64 reference, and every gradient
// against float64 central differences of that reference (independent of the kernels'
// analytic backward).
#include "reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

using normgen::DType;
using normgen::KernelInfo;
using normgen::Status;
using normgen::TensorView;

namespace {

using ref::dtype_of;

constexpr double kEps = 1e-5;

struct Inputs {
    int64_t N, C, S;  // x is (N, C, S)
    std::vector<double> x, rho, w, b, mw, vw, rm, rv;
};

// float64 references: y[(n * C + c) * S + s].
std::vector<double> ref_bin(const Inputs &in, bool training) {
    const int64_t N = in.N, C = in.C, S = in.S;
    std::vector<double> y(N * C * S);
    for (int64_t c = 0; c < C; c++) {
        double mb = in.rm[c], vb = in.rv[c];
        if (training) {
            mb = vb = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) mb += in.x[(n * C + c) * S + s];
            mb /= N * S;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) vb += std::pow(in.x[(n * C + c) * S + s] - mb, 2);
            vb /= N * S;
        }
        const double r = std::clamp(in.rho[c], 0.0, 1.0);
        for (int64_t n = 0; n < N; n++) {
            double mi = 0, vi = 0;
            for (int64_t s = 0; s < S; s++) mi += in.x[(n * C + c) * S + s];
            mi /= S;
            for (int64_t s = 0; s < S; s++) vi += std::pow(in.x[(n * C + c) * S + s] - mi, 2);
            vi /= S;
            for (int64_t s = 0; s < S; s++) {
                const double v = in.x[(n * C + c) * S + s];
                const double xh = r * (v - mb) / std::sqrt(vb + kEps) + (1 - r) * (v - mi) / std::sqrt(vi + kEps);
                y[(n * C + c) * S + s] = xh * in.w[c] + in.b[c];
            }
        }
    }
    return y;
}

std::vector<double> ref_sn(const Inputs &in, bool training) {
    const int64_t N = in.N, C = in.C, S = in.S;
    auto softmax = [](const std::vector<double> &l) {
        const double m = std::max({l[0], l[1], l[2]});
        std::vector<double> e{std::exp(l[0] - m), std::exp(l[1] - m), std::exp(l[2] - m)};
        const double z = e[0] + e[1] + e[2];
        return std::vector<double>{e[0] / z, e[1] / z, e[2] / z};
    };
    const std::vector<double> pm = softmax(in.mw), pv = softmax(in.vw);
    std::vector<double> mi(N * C), vi(N * C), ml(N, 0), vl(N, 0), mb(in.rm.begin(), in.rm.end()),
        vb(in.rv.begin(), in.rv.end());
    auto at = [&](int64_t n, int64_t c, int64_t s) { return in.x[(n * C + c) * S + s]; };
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double m = 0, v = 0;
            for (int64_t s = 0; s < S; s++) m += at(n, c, s);
            m /= S;
            for (int64_t s = 0; s < S; s++) v += std::pow(at(n, c, s) - m, 2);
            mi[n * C + c] = m;
            vi[n * C + c] = v / S;
        }
    for (int64_t n = 0; n < N; n++) {
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) ml[n] += at(n, c, s) / (C * S);
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) vl[n] += std::pow(at(n, c, s) - ml[n], 2) / (C * S);
    }
    if (training)
        for (int64_t c = 0; c < C; c++) {
            mb[c] = vb[c] = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) mb[c] += at(n, c, s) / (N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) vb[c] += std::pow(at(n, c, s) - mb[c], 2) / (N * S);
        }
    std::vector<double> y(N * C * S);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const double m = pm[0] * mi[n * C + c] + pm[1] * ml[n] + pm[2] * mb[c];
            const double v = pv[0] * vi[n * C + c] + pv[1] * vl[n] + pv[2] * vb[c];
            for (int64_t s = 0; s < S; s++)
                y[(n * C + c) * S + s] = (at(n, c, s) - m) / std::sqrt(v + kEps) * in.w[c] + in.b[c];
        }
    return y;
}

// d/dp of sum(y * dy) by central differences in float64: (index, value) for every
// element of p, or for 24 spread ones when p is large (tuned kernels' shapes).
std::vector<std::pair<int64_t, double>> numeric_grad(Inputs in, std::vector<double> Inputs::*p,
                                                     const std::vector<double> &dy,
                                                     const std::function<std::vector<double>(const Inputs &)> &f) {
    const int64_t size = static_cast<int64_t>((in.*p).size()), samples = std::min<int64_t>(size, 24);
    std::vector<std::pair<int64_t, double>> g;
    auto loss = [&] {
        const std::vector<double> y = f(in);
        double l = 0;
        for (size_t i = 0; i < y.size(); i++) l += y[i] * dy[i];
        return l;
    };
    for (int64_t k = 0; k < samples; k++) {
        const int64_t i = size == samples ? k : (k * 7919 + 13) % size;
        const double old = (in.*p)[i], h = 1e-6 * std::max(1.0, std::fabs(old));
        (in.*p)[i] = old + h;
        const double up = loss();
        (in.*p)[i] = old - h;
        const double down = loss();
        (in.*p)[i] = old;
        g.push_back({i, (up - down) / (2 * h)});
    }
    return g;
}

class MixedNormKernel : public ::testing::TestWithParam<KernelInfo> {};

static void check_mixed_norm(const KernelInfo &k, const std::vector<int64_t> &ncs) {
    const DType dt = dtype_of(k.dtype);
    const std::string layout = k.layout, op = k.op;
    const bool training = std::string(k.variant).find("training=1") != std::string::npos;
    const bool sn = op == "switchable_norm";
    const int64_t N = ncs[0], C = ncs[1], S = ncs[2];
    const int64_t pad = layout == "strided" ? 2 : 1;
    auto offset = [&](int64_t n, int64_t c, int64_t s) {
        if (layout == "nhwc") return (n * S + s) * C + c;
        return ((n * C + c) * S + s) * pad;
    };
    const std::vector<int64_t> strides = layout == "nhwc" ? std::vector<int64_t>{S * C, 1, C}
                                                         : std::vector<int64_t>{C * S * pad, S * pad, pad};
    const int64_t total = N * C * S * pad;
    ref::Tensor x(dt, {total}), y(dt, {total}), dy(dt, {total}), dx(dt, {total});
    ref::Tensor rho(dt, {C}), w(dt, {C}), b(dt, {C}), mw(dt, {3}), vw(dt, {3});
    std::mt19937 rng(11);
    std::normal_distribution<double> nd(0.0, 1.0);
    Inputs in{N, C, S};
    in.x.resize(N * C * S);
    std::vector<double> dyv(N * C * S);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                x.set(offset(n, c, s), 2 + c + 3 * nd(rng));
                dy.set(offset(n, c, s), nd(rng));
                in.x[(n * C + c) * S + s] = x.values[offset(n, c, s)];
                dyv[(n * C + c) * S + s] = dy.values[offset(n, c, s)];
            }
    const double rhos[4] = {0.25, 0.6, 0.9, 0.4};
    for (int64_t c = 0; c < C; c++) {
        rho.set(c, rhos[c % 4]);
        w.set(c, 1 + 0.3 * nd(rng));
        b.set(c, nd(rng));
        in.rho.push_back(rho.values[c]);
        in.w.push_back(w.values[c]);
        in.b.push_back(b.values[c]);
    }
    for (int i = 0; i < 3; i++) {
        mw.set(i, 0.5 * nd(rng));
        vw.set(i, 0.5 * nd(rng));
        in.mw.push_back(mw.values[i]);
        in.vw.push_back(vw.values[i]);
    }
    std::vector<float> rm(C), rv(C);
    for (int64_t c = 0; c < C; c++) {
        rm[c] = static_cast<float>(2 + c + 0.5 * nd(rng));
        rv[c] = static_cast<float>(9 * (0.8 + 0.4 * std::fabs(nd(rng))));
        in.rm.push_back(rm[c]);
        in.rv.push_back(rv[c]);
    }
    auto view = [&](ref::Tensor &t) { return TensorView::strided(t.bytes.data(), dt, {N, C, S}, strides); };
    TensorView rmv = TensorView::contiguous(rm.data(), DType::f32, {C}), rvv = TensorView::contiguous(rv.data(), DType::f32, {C});
    TensorView rhov = rho.view(), wv = w.view(), bv = b.view(), mwv = mw.view(), vwv = vw.view();
    // Training kernels get no running statistics (batch statistics only), so the
    // reference's inputs are unchanged by the call.
    const TensorView *rmp = training ? nullptr : &rmv, *rvp = training ? nullptr : &rvv;
    std::vector<float> sm((N + 1) * (C + 1)), sv((N + 1) * (C + 1)), sr(N * C);
    const int64_t cols = sn ? C + 1 : C;
    TensorView smv = TensorView::contiguous(sm.data(), DType::f32, {N + 1, cols});
    TensorView svv = TensorView::contiguous(sv.data(), DType::f32, {N + 1, cols});
    TensorView srv = TensorView::contiguous(sr.data(), DType::f32, {sn ? N : N + 1, C});
    Status st = sn ? normgen::switchable_norm_forward(view(x), mwv, vwv, &wv, &bv, rmp, rvp, training, 0.1, kEps,
                                                      view(y), &smv, &svv, &srv)
                   : normgen::batch_instance_norm_forward(view(x), rhov, &wv, &bv, rmp, rvp, training, 0.1, kEps,
                                                          view(y), &smv, &svv);
    ASSERT_TRUE(st.ok()) << st.message();
    const auto f = [&](const Inputs &i) { return sn ? ref_sn(i, training) : ref_bin(i, training); };
    const std::vector<double> want = f(in);
    const double u = ref::unit_roundoff(dt), u32 = ref::unit_roundoff(DType::f32);
    if (std::string(k.dir) == "fwd") {
        EXPECT_STREQ(normgen::last_kernel(), k.name);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t s = 0; s < S; s++) {
                    const double wv_ = want[(n * C + c) * S + s];
                    ASSERT_NEAR(y.get(offset(n, c, s)), wv_, 2 * u * std::fabs(wv_) + 256 * u32 * (1 + std::fabs(wv_)))
                        << "y at (" << n << ", " << c << ", " << s << ")";
                }
        return;
    }
    ref::Tensor g1(dt, {C}), g2(dt, {C}), g3(dt, {C}), m1(dt, {3}), m2(dt, {3});
    TensorView g1v = g1.view(), g2v = g2.view(), g3v = g3.view(), m1v = m1.view(), m2v = m2.view();
    st = sn ? normgen::switchable_norm_backward(view(dy), view(x), smv, svv, srv, mwv, vwv, &wv, training, view(dx),
                                                &m1v, &m2v, &g2v, &g3v)
            : normgen::batch_instance_norm_backward(view(dy), view(x), smv, svv, rhov, &wv, training, view(dx), &g1v,
                                                    &g2v, &g3v);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_STREQ(normgen::last_kernel(), k.name);
    // Gradients: the analytic ones (float32) against central differences (float64).
    auto expect_grad = [&](const char *what, const std::vector<std::pair<int64_t, double>> &num,
                           const std::function<double(int64_t)> &got, double scale) {
        for (const auto &[i, want] : num)
            EXPECT_NEAR(got(i), want, 2 * u * std::fabs(want) + 1e-6 + 512 * u32 * scale) << what << "[" << i << "]";
    };
    const auto ndx = numeric_grad(in, &Inputs::x, dyv, f);
    expect_grad("dx", ndx, [&](int64_t i) { return dx.get(offset(i / (C * S), (i / S) % C, i % S)); }, 4.0);
    const double sum_scale = 3.0 * N * S;  // sums of N * S terms of dy * xhat
    if (!sn) expect_grad("drho", numeric_grad(in, &Inputs::rho, dyv, f), [&](int64_t i) { return g1.get(i); }, sum_scale);
    expect_grad("dweight", numeric_grad(in, &Inputs::w, dyv, f), [&](int64_t i) { return g2.get(i); }, sum_scale);
    expect_grad("dbias", numeric_grad(in, &Inputs::b, dyv, f), [&](int64_t i) { return g3.get(i); }, sum_scale);
    if (sn) {
        expect_grad("dmean_weight", numeric_grad(in, &Inputs::mw, dyv, f), [&](int64_t i) { return m1.get(i); },
                    sum_scale * C);
        expect_grad("dvar_weight", numeric_grad(in, &Inputs::vw, dyv, f), [&](int64_t i) { return m2.get(i); },
                    sum_scale * C);
    }
}

TEST_P(MixedNormKernel, MatchesFloat64ReferenceAndFiniteDifferences) {
    ref::for_each_kernel_shape(GetParam(), {{3, 4, 19}, {1, 64, 3}}, check_mixed_norm);
}

std::vector<KernelInfo> mixed_norm_kernels() {
    std::vector<KernelInfo> v;
    for (const auto &k : normgen::kernels())
        if (ref::cpu_kernel(k) && (std::string(k.op) == "batch_instance_norm" || std::string(k.op) == "switchable_norm"))
            v.push_back(k);
    return v;
}

INSTANTIATE_TEST_SUITE_P(KernelList, MixedNormKernel, ::testing::ValuesIn(mixed_norm_kernels()),
                         [](const ::testing::TestParamInfo<KernelInfo> &i) { return std::string(i.param.name); });

TEST(MixedNorm, BadInput) {
    std::vector<float> x(2 * 3 * 4), y(x.size()), rho(3, 0.5f), rho4(4, 0.5f), logits(3), logits2(2);
    TensorView xv = TensorView::contiguous(x.data(), DType::f32, {2, 3, 4});
    TensorView yv = TensorView::contiguous(y.data(), DType::f32, {2, 3, 4});
    TensorView r3 = TensorView::contiguous(rho.data(), DType::f32, {3}), r4 = TensorView::contiguous(rho4.data(), DType::f32, {4});
    TensorView l3 = TensorView::contiguous(logits.data(), DType::f32, {3}), l2 = TensorView::contiguous(logits2.data(), DType::f32, {2});
    Status s = normgen::batch_instance_norm_forward(xv, r4, nullptr, nullptr, nullptr, nullptr, true, 0.1, kEps, yv);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("rho"), std::string::npos) << s.message();
    s = normgen::batch_instance_norm_forward(xv, r3, nullptr, nullptr, nullptr, nullptr, false, 0.1, kEps, yv);
    EXPECT_NE(s.message().find("running_mean and running_var are required"), std::string::npos) << s.message();
    s = normgen::switchable_norm_forward(xv, l2, l3, nullptr, nullptr, nullptr, nullptr, true, 0.1, kEps, yv);
    EXPECT_NE(s.message().find("mean_weight"), std::string::npos) << s.message();
    std::vector<float> small(2 * 3);
    TensorView sm = TensorView::contiguous(small.data(), DType::f32, {2, 3});
    s = normgen::switchable_norm_forward(xv, l3, l3, nullptr, nullptr, nullptr, nullptr, true, 0.1, kEps, yv, &sm);
    EXPECT_NE(s.message().find("save_mean"), std::string::npos) << s.message();
    // The output overlapping the input is refused before anything is written.
    x.assign(x.size(), 1.0f);
    s = normgen::batch_instance_norm_forward(xv, r3, nullptr, nullptr, nullptr, nullptr, true, 0.1, kEps, xv);
    EXPECT_FALSE(s.ok());
    for (float v : x) ASSERT_EQ(v, 1.0f);
}

}  // namespace

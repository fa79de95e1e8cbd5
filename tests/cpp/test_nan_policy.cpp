// nan_policy: a training batch with NaN/Inf in some channels. propagate (torch's rule)
// writes the non-finite statistics into those channels' running statistics; skip keeps
// them; every other channel updates identically under both, and the outputs are the
// same. Every op that updates running statistics, and a bad policy value.
#include "normgen/normgen.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

using normgen::DType;
using normgen::NanPolicy;
using normgen::Status;
using normgen::TensorView;

namespace {

constexpr int64_t N = 4, C = 3, H = 2, W = 3;

struct RunningStats {
    std::vector<float> mean{0.5f, -1.f, 2.f}, var{1.5f, 0.25f, 3.f};
    int64_t batches = 0;
};

// One op's training forward: x -> y, updating `rs`.
using Op = std::function<Status(const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p)>;

std::vector<std::pair<std::string, Op>> ops() {
    auto view = [](std::vector<float> &v) { return TensorView::contiguous(v.data(), DType::f32, {C}); };
    return {
        {"batch_norm",
         [=](const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p) {
             TensorView rm = view(rs.mean), rv = view(rs.var);
             return normgen::batch_norm_forward(x, &rm, &rv, nullptr, nullptr, true, 0.1, 1e-5, y, nullptr, nullptr,
                                                &rs.batches, nullptr, p);
         }},
        {"instance_norm",
         [=](const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p) {
             TensorView rm = view(rs.mean), rv = view(rs.var);
             return normgen::instance_norm_forward(x, &rm, &rv, nullptr, nullptr, true, 0.1, 1e-5, y, nullptr,
                                                   nullptr, nullptr, p);
         }},
        {"batch_instance_norm",
         [=](const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p) {
             static std::vector<float> rho{0.3f, 0.6f, 0.9f};
             TensorView rm = view(rs.mean), rv = view(rs.var), r = view(rho);
             return normgen::batch_instance_norm_forward(x, r, nullptr, nullptr, &rm, &rv, true, 0.1, 1e-5, y,
                                                         nullptr, nullptr, &rs.batches, p);
         }},
        {"switchable_norm",
         [=](const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p) {
             static std::vector<float> mw{0.1f, 0.2f, 0.3f}, vw{0.3f, 0.2f, 0.1f};
             TensorView rm = view(rs.mean), rv = view(rs.var);
             TensorView m = TensorView::contiguous(mw.data(), DType::f32, {3}),
                        v = TensorView::contiguous(vw.data(), DType::f32, {3});
             return normgen::switchable_norm_forward(x, m, v, nullptr, nullptr, &rm, &rv, true, 0.1, 1e-5, y,
                                                     nullptr, nullptr, nullptr, &rs.batches, p);
         }},
        {"sync_batch_norm",
         [=](const TensorView &x, const TensorView &y, RunningStats &rs, NanPolicy p) {
             std::vector<double> table(1 + 2 * C);  // one process
             std::vector<float> sm(C), sr(C);
             TensorView rm = view(rs.mean), rv = view(rs.var), smv = view(sm), srv = view(sr);
             Status s = normgen::sync_batch_norm_moments(x, table.data());
             if (!s.ok()) return s;
             return normgen::sync_batch_norm_forward(x, table.data(), 1, &rm, &rv, nullptr, nullptr, 0.1, 1e-5, y,
                                                     smv, srv, &rs.batches, p);
         }},
    };
}

std::vector<float> batch_with_bad_channels() {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(50.f, 2.f);
    std::vector<float> x(N * C * H * W);
    for (auto &v : x) v = nd(rng);
    x[(1 * C + 1) * H * W + 2] = std::numeric_limits<float>::quiet_NaN();  // channel 1, sample 1
    x[(3 * C + 2) * H * W + 0] = std::numeric_limits<float>::infinity();   // channel 2, sample 3
    return x;
}

TEST(NanPolicy, SkipKeepsTheRunningStatisticsOfNonFiniteChannels) {
    for (auto &[name, op] : ops()) {
        SCOPED_TRACE(name);
        std::vector<float> x = batch_with_bad_channels(), y_prop(x.size()), y_skip(x.size());
        const TensorView xv = TensorView::contiguous(x.data(), DType::f32, {N, C, H, W});
        RunningStats prop, skip;
        const RunningStats before;
        ASSERT_TRUE(op(xv, TensorView::contiguous(y_prop.data(), DType::f32, {N, C, H, W}), prop,
                       NanPolicy::propagate).ok());
        ASSERT_TRUE(op(xv, TensorView::contiguous(y_skip.data(), DType::f32, {N, C, H, W}), skip, NanPolicy::skip)
                        .ok());
        // Channel 0 is clean: updated, identically under both policies.
        EXPECT_TRUE(std::isfinite(prop.mean[0]) && std::isfinite(prop.var[0]));
        EXPECT_NE(prop.mean[0], before.mean[0]);
        EXPECT_EQ(skip.mean[0], prop.mean[0]);
        EXPECT_EQ(skip.var[0], prop.var[0]);
        // Channels 1 (NaN) and 2 (Inf): propagate writes non-finite values, skip keeps them.
        for (int c = 1; c < C; c++) {
            EXPECT_FALSE(std::isfinite(prop.mean[c])) << "channel " << c;
            EXPECT_FALSE(std::isfinite(prop.var[c])) << "channel " << c;
            EXPECT_EQ(skip.mean[c], before.mean[c]) << "channel " << c;
            EXPECT_EQ(skip.var[c], before.var[c]) << "channel " << c;
        }
        EXPECT_EQ(skip.batches, prop.batches);  // the batch is counted either way
        // Outputs: bit-identical (NaN where propagate had NaN).
        for (size_t i = 0; i < x.size(); i++)
            ASSERT_TRUE(y_skip[i] == y_prop[i] || (std::isnan(y_skip[i]) && std::isnan(y_prop[i]))) << i;
    }
}

TEST(NanPolicy, AnUnknownValueIsAnErrorNamingItAndWritesNothing) {
    for (auto &[name, op] : ops()) {
        SCOPED_TRACE(name);
        std::vector<float> x = batch_with_bad_channels(), y(x.size(), -7.f);
        RunningStats rs;
        const RunningStats before;
        const Status s = op(TensorView::contiguous(x.data(), DType::f32, {N, C, H, W}),
                            TensorView::contiguous(y.data(), DType::f32, {N, C, H, W}), rs, static_cast<NanPolicy>(7));
        ASSERT_FALSE(s.ok());
        EXPECT_NE(s.message().find("nan_policy"), std::string::npos) << s.message();
        EXPECT_EQ(rs.mean, before.mean);
        EXPECT_EQ(rs.var, before.var);
        EXPECT_EQ(rs.batches, 0);
        for (float v : y) ASSERT_EQ(v, -7.f);
    }
}

}  // namespace

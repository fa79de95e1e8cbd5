// Synchronized BatchNorm's transport-agnostic steps (normgen::sync_batch_norm_*) with the
// all-reduce done in-process: three "processes" with uneven parts of one batch (one
// empty) give the whole batch's BatchNorm, forward and backward, against float64, in
// every storage dtype. (The MPI wrapper is tested under mpirun, tests/mpi/.)
#include "reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

using normgen::DType;
using normgen::Status;
using normgen::TensorView;

namespace {

constexpr int64_t C = 4, S = 30;

class SyncBatchNormSteps : public ::testing::TestWithParam<DType> {};

TEST_P(SyncBatchNormSteps, ThreeProcessesEqualTheWholeBatch) {
    const DType dt = GetParam();
    const std::vector<int64_t> parts = {4, 0, 7};
    const int world = 3;
    int64_t N = 0;
    for (auto p : parts) N += p;
    std::mt19937 rng(3);
    std::normal_distribution<double> nd(0.0, 1.0);
    // Each process's x, dy: (n, C, S), NCHW; values rounded to the dtype as stored.
    std::vector<ref::Tensor> xs, dys, ys, dxs, scaled;
    for (int r = 0; r < world; r++) {
        for (auto *v : {&xs, &dys, &ys, &dxs, &scaled}) v->emplace_back(dt, std::vector<int64_t>{parts[r], C, S});
        for (int64_t i = 0; i < xs[r].numel(); i++) {
            xs[r].set(i, 40.0 + 0.5 * nd(rng));  // mean 80 spreads from 0
            dys[r].set(i, nd(rng));
        }
    }
    ref::Tensor w(dt, {C}), b(dt, {C});
    for (int64_t c = 0; c < C; c++) w.set(c, 0.5 + 0.25 * c), b.set(c, 0.1 * c);
    const TensorView wv = w.view(), bv = b.view();
    // float64 reference over the concatenated batch.
    std::vector<double> mean(C, 0), var(C, 0), sdy(C, 0), sdx(C, 0);
    const double cnt = double(N * S);
    auto each = [&](auto f) {
        for (int r = 0; r < world; r++)
            for (int64_t n = 0; n < parts[r]; n++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t s = 0; s < S; s++) f(r, (n * C + c) * S + s, c);
    };
    each([&](int r, int64_t i, int64_t c) { mean[c] += xs[r].values[i] / cnt; });
    each([&](int r, int64_t i, int64_t c) { var[c] += std::pow(xs[r].values[i] - mean[c], 2) / cnt; });
    std::vector<double> rstd(C);
    for (int64_t c = 0; c < C; c++) rstd[c] = 1 / std::sqrt(var[c] + 1e-5);
    each([&](int r, int64_t i, int64_t c) {
        sdy[c] += dys[r].values[i];
        sdx[c] += dys[r].values[i] * (xs[r].values[i] - mean[c]) * rstd[c];
    });
    // Forward: each process's row, the "all-reduce" (a sum), then each process normalizes.
    std::vector<double> table(world * (1 + 2 * C), 0.0);
    for (int r = 0; r < world; r++) {
        std::vector<double> mine(table.size(), 0.0);
        ASSERT_TRUE(normgen::sync_batch_norm_moments(xs[r].view(), &mine[r * (1 + 2 * C)]).ok());
        for (size_t i = 0; i < table.size(); i++) table[i] += mine[i];
    }
    std::vector<std::vector<float>> sm(world, std::vector<float>(C)), sr(world, std::vector<float>(C)),
        rm(world, std::vector<float>(C, 0.f)), rv(world, std::vector<float>(C, 1.f));
    auto vec = [](float *p) { return TensorView::contiguous(p, DType::f32, {C}); };
    for (int r = 0; r < world; r++) {
        const TensorView rmv = vec(rm[r].data()), rvv = vec(rv[r].data());
        const Status s = normgen::sync_batch_norm_forward(xs[r].view(), table.data(), world, &rmv, &rvv, &wv,
                                                          &bv, 0.1, 1e-5, ys[r].view(), vec(sm[r].data()),
                                                          vec(sr[r].data()));
        ASSERT_TRUE(s.ok()) << s.message();
    }
    // Backward: each process's sums, summed, then each process's dx.
    std::vector<double> sums(1 + 2 * C, 0.0);
    std::vector<ref::Tensor> dws, dbs;
    for (int r = 0; r < world; r++) {
        dws.emplace_back(dt, std::vector<int64_t>{C});
        dbs.emplace_back(dt, std::vector<int64_t>{C});
        std::vector<double> mine(sums.size());
        const TensorView smv = vec(sm[r].data()), srv = vec(sr[r].data());
        const TensorView dwv = dws[r].view(), dbv = dbs[r].view();
        const Status s = normgen::sync_batch_norm_grad_sums(dys[r].view(), xs[r].view(), smv, srv, &wv,
                                                            mine.data(), scaled[r].view(), &dwv, &dbv);
        ASSERT_TRUE(s.ok()) << s.message();
        for (size_t i = 0; i < sums.size(); i++) sums[i] += mine[i];
    }
    for (int r = 0; r < world; r++) {
        const Status s = normgen::sync_batch_norm_backward(xs[r].view(), scaled[r].view(), vec(sm[r].data()),
                                                           vec(sr[r].data()), &wv, sums.data(), dxs[r].view());
        ASSERT_TRUE(s.ok()) << s.message();
    }
    // Tolerances: rounding to the dtype, x's own rounding relative to its spread (|x| is
    // 80 spreads), float32 accumulation over the reduction.
    const double u = ref::unit_roundoff(dt), u32 = std::ldexp(1.0, -24), red = std::log2(cnt + 2);
    const double xerr = 4 * u32 * 81 * 2 + (dt == DType::f32 ? 0 : 0);  // in xhat units (rstd ~ 2)
    for (int r = 0; r < world; r++) {
        for (int64_t c = 0; c < C; c++) {
            EXPECT_NEAR(sm[r][c], mean[c], 8 * u32 * 40 * red) << "save_mean, process " << r;
            EXPECT_NEAR(sr[r][c], rstd[c], 8 * u32 * red * rstd[c] + xerr) << "save_rstd";
            EXPECT_NEAR(rm[r][c], 0.1 * mean[c], 8 * u32 * 40 * red) << "running_mean";
            EXPECT_NEAR(rv[r][c], 0.9 + 0.1 * var[c] * cnt / (cnt - 1), 8 * u32 * red + 0.1 * var[c] * xerr)
                << "running_var";
        }
        for (int64_t n = 0; n < parts[r]; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t s = 0; s < S; s++) {
                    const int64_t i = (n * C + c) * S + s;
                    const double xhat = (xs[r].values[i] - mean[c]) * rstd[c], wc = w.values[c];
                    const double y = xhat * wc + b.values[c];
                    ASSERT_NEAR(ys[r].get(i), y, 2 * u * (std::fabs(y) + 1) + wc * xerr + 8 * u32 * red * std::fabs(y))
                        << "y, process " << r << " element " << i;
                    const double dx = wc * rstd[c] * (dys[r].values[i] - sdy[c] / cnt - xhat * sdx[c] / cnt);
                    const double terms = std::fabs(dys[r].values[i]) + std::fabs(sdy[c] / cnt) + std::fabs(sdx[c] / cnt) * 4;
                    // f16/bf16: the per-process sums pass through the dtype (the BatchNorm
                    // kernel's parameter gradients), a rounding of u on terms of up to 4.
                    ASSERT_NEAR(dxs[r].get(i), dx,
                                2 * u * std::fabs(dx) + wc * rstd[c] * (u * terms * 4 + 16 * u32 * red * terms + xerr))
                        << "dx, process " << r << " element " << i;
                }
    }
    // The processes' parameter gradients sum to the whole batch's.
    for (int64_t c = 0; c < C; c++) {
        double dw = 0, db = 0, adw = 0;
        for (int r = 0; r < world; r++) dw += dws[r].get(c), db += dbs[r].get(c), adw += std::fabs(dws[r].get(c));
        EXPECT_NEAR(dw, sdx[c], 2 * u * (adw + std::fabs(sdx[c])) + (xerr + 16 * u32 * red) * cnt) << "dweight " << c;
        EXPECT_NEAR(db, sdy[c], 2 * u * std::fabs(sdy[c]) * world + 16 * u32 * red * cnt) << "dbias " << c;
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SyncBatchNormSteps, ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const auto &info) { return std::string(normgen::dtype_name(info.param)); });

TEST(SyncBatchNormSteps, BadTablesAndBuffersAreClearErrors) {
    std::vector<float> x(2 * C * S, 1.f), y(x.size()), sm(C), sr(C);
    for (size_t i = 0; i < x.size(); i++) x[i] = float(i % 5);
    const TensorView xv = TensorView::contiguous(x.data(), DType::f32, {2, C, S});
    const TensorView yv = TensorView::contiguous(y.data(), DType::f32, {2, C, S});
    const TensorView smv = TensorView::contiguous(sm.data(), DType::f32, {C});
    const TensorView srv = TensorView::contiguous(sr.data(), DType::f32, {C});
    Status s = normgen::sync_batch_norm_moments(xv, nullptr);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("row"), std::string::npos) << s.message();
    std::vector<double> table(2 * (1 + 2 * C), 0.0);
    ASSERT_TRUE(normgen::sync_batch_norm_moments(xv, table.data()).ok());
    // Not summed across processes: process 1's row is missing, but the counts add up
    // to this process's alone; a fractional count is corrupt.
    table[1 + 2 * C] = 0.5;
    s = normgen::sync_batch_norm_forward(xv, table.data(), 2, nullptr, nullptr, nullptr, nullptr, 0.1, 1e-5, yv, smv, srv);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("row 1"), std::string::npos) << s.message();
    EXPECT_EQ(y, std::vector<float>(y.size(), 0.f)) << "nothing written";
    // A table whose total is a single value per channel: BatchNorm's training error.
    std::vector<double> one(1 + 2 * C, 0.0);
    one[0] = 1;
    const TensorView x1 = TensorView::contiguous(x.data(), DType::f32, {1, C, 1});
    const TensorView y1 = TensorView::contiguous(y.data(), DType::f32, {1, C, 1});
    s = normgen::sync_batch_norm_forward(x1, one.data(), 1, nullptr, nullptr, nullptr, nullptr, 0.1, 1e-5, y1, smv, srv);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("more than 1 value per channel"), std::string::npos) << s.message();
    // Backward sums that were not summed (count below this process's) are refused.
    std::vector<double> sums(1 + 2 * C, 0.0);
    sums[0] = 3;
    std::vector<float> dx(x.size()), scaled(x.size());
    s = normgen::sync_batch_norm_backward(xv, TensorView::contiguous(scaled.data(), DType::f32, {2, C, S}), smv, srv,
                                          nullptr, sums.data(), TensorView::contiguous(dx.data(), DType::f32, {2, C, S}));
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("not summed"), std::string::npos) << s.message();
}

}  // namespace

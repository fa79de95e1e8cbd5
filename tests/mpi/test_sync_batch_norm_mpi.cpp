// normgen::mpi::sync_batch_norm_{forward,backward} under mpirun (2 and 3 processes,
// uneven batches, one process empty with 3): each process checks its part of y and dx,
// the running statistics and the all-reduced parameter gradients against a float64
// BatchNorm of the whole batch, which every process computes from the same seed.
// Exit status 0 when every process passes.
#include "normgen/mpi.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int64_t C = 5, H = 4, W = 6, HW = H * W;
int failures = 0;
int world_rank = 0;
double worst = 0;  // largest error / tolerance seen

void check(double got, double want, double tol, const std::string &what) {
    worst = std::max(worst, std::fabs(got - want) / tol);
    if (!(std::fabs(got - want) <= tol)) {
        if (failures < 10)
            std::fprintf(stderr, "[rank %d] %s: got %.9g, want %.9g (tolerance %.3g)\n", world_rank, what.c_str(), got,
                         want, tol);
        failures++;
    }
}

void ok_or_die(const normgen::Status &s, const char *what) {
    if (!s.ok()) {
        std::fprintf(stderr, "[rank %d] %s: %s\n", world_rank, what, s.message().c_str());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

std::vector<int64_t> splits(int size) {
    if (size == 2) return {5, 3};
    if (size == 3) return {4, 0, 7};
    std::vector<int64_t> v;
    for (int r = 0; r < size; r++) v.push_back(r + 1);
    return v;
}

// Element (n, c, p) of an (N, C, H*W) batch stored NCHW or channels-last.
int64_t index(bool nhwc, int64_t N, int64_t n, int64_t c, int64_t p) {
    (void)N;
    return nhwc ? (n * HW + p) * C + c : (n * C + c) * HW + p;
}

void run(bool nhwc, MPI_Comm comm, int rank, int size) {
    const std::vector<int64_t> part = splits(size);
    int64_t N = 0, lo = 0;
    for (int r = 0; r < size; r++) {
        if (r < rank) lo += part[r];
        N += part[r];
    }
    const int64_t n_local = part[rank];
    // The whole batch, generated identically on every process: mean 30, spread 0.5.
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x_all(N * C * HW), dy_all(N * C * HW), w(C), b(C);
    for (auto &v : x_all) v = 30.f + 0.5f * nd(rng);
    for (auto &v : dy_all) v = nd(rng);
    for (int64_t c = 0; c < C; c++) w[c] = 0.5f + 0.2f * c, b[c] = 0.1f * c - 0.2f;
    // float64 reference over the whole batch (flat index is layout-independent here:
    // the data are drawn per flat position, so the reference reads through `index`).
    std::vector<double> mean(C, 0), var(C, 0), sdy(C, 0), sdx(C, 0), sabs(C, 0);
    const double cnt = double(N * HW);
    for (int64_t c = 0; c < C; c++) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t p = 0; p < HW; p++) mean[c] += x_all[index(nhwc, N, n, c, p)];
        mean[c] /= cnt;
        for (int64_t n = 0; n < N; n++)
            for (int64_t p = 0; p < HW; p++) {
                const double d = x_all[index(nhwc, N, n, c, p)] - mean[c];
                var[c] += d * d;
            }
        var[c] /= cnt;
        const double rstd = 1 / std::sqrt(var[c] + 1e-5);
        for (int64_t n = 0; n < N; n++)
            for (int64_t p = 0; p < HW; p++) {
                const int64_t i = index(nhwc, N, n, c, p);
                sdy[c] += dy_all[i];
                sabs[c] += std::fabs(dy_all[i]);
                sdx[c] += dy_all[i] * (x_all[i] - mean[c]) * rstd;
            }
    }
    // This process's part (rows lo .. lo + n_local of the batch, in its own buffers).
    const int64_t elems = n_local * C * HW;
    std::vector<float> x(x_all.begin() + lo * C * HW, x_all.begin() + lo * C * HW + elems);
    std::vector<float> dy(dy_all.begin() + lo * C * HW, dy_all.begin() + lo * C * HW + elems);
    std::vector<float> y(elems), dx(elems), rm(C, 0.f), rv(C, 1.f), sm(C), sr(C), dw(C), db(C);
    auto view = [&](float *p) {
        return nhwc ? normgen::TensorView::strided(p, normgen::DType::f32, {n_local, C, H, W},
                                                   {HW * C, 1, W * C, C})
                    : normgen::TensorView::contiguous(p, normgen::DType::f32, {n_local, C, H, W});
    };
    auto vec = [](float *p) { return normgen::TensorView::contiguous(p, normgen::DType::f32, {C}); };
    const normgen::TensorView xv = view(x.data()), dyv = view(dy.data()), yv = view(y.data()), dxv = view(dx.data());
    const normgen::TensorView wv = vec(w.data()), bv = vec(b.data()), rmv = vec(rm.data()), rvv = vec(rv.data()),
                              smv = vec(sm.data()), srv = vec(sr.data()), dwv = vec(dw.data()), dbv = vec(db.data());
    int64_t nbt = 0;
    ok_or_die(normgen::mpi::sync_batch_norm_forward(comm, xv, &rmv, &rvv, &wv, &bv, 0.1, 1e-5, yv, smv, srv, &nbt),
              "forward");
    ok_or_die(normgen::mpi::sync_batch_norm_backward(comm, dyv, xv, smv, srv, &wv, dxv, &dwv, &dbv), "backward");
    const std::string tag = nhwc ? "nhwc " : "nchw ";
    // Tolerances: x's own float32 rounding (|x| ~ 30 spreads, so xhat carries ~30 u of
    // it, times rstd) plus float32 accumulation over the reduction, each taken 4-16x.
    const double u = std::ldexp(1.0, -24), red = std::log2(cnt + 2);
    for (int64_t c = 0; c < C; c++) {
        const double rstd = 1 / std::sqrt(var[c] + 1e-5), xerr = 4 * u * 31 * rstd;
        check(rm[c], 0.1 * mean[c], 16 * u * 30 * red, tag + "running_mean");
        check(rv[c], 0.9 + 0.1 * var[c] * cnt / (cnt - 1), 16 * u * red + 0.1 * var[c] * 2 * xerr, tag + "running_var");
        for (int64_t n = 0; n < n_local; n++)
            for (int64_t p = 0; p < HW; p++) {
                const int64_t i = index(nhwc, N, n, c, p), g = index(nhwc, N, lo + n, c, p);
                const double xhat = (x_all[g] - mean[c]) * rstd;
                check(y[i], xhat * w[c] + b[c], w[c] * xerr + 16 * u * red * (std::fabs(xhat * w[c]) + 1), tag + "y");
                const double want = w[c] * rstd * (dy_all[g] - sdy[c] / cnt - xhat * sdx[c] / cnt);
                const double terms = std::fabs(dy_all[g]) + std::fabs(sdy[c] / cnt) + std::fabs(xhat * sdx[c] / cnt);
                check(dx[i], want, w[c] * rstd * (xerr * std::fabs(sdx[c] / cnt) + 16 * u * red * (terms + 1)),
                      tag + "dx");
            }
    }
    if (nbt != 1) check(double(nbt), 1, 0, tag + "num_batches_tracked");
    // The processes' parameter gradients sum to the whole batch's.
    std::vector<float> dw_all(C), db_all(C);
    MPI_Allreduce(dw.data(), dw_all.data(), int(C), MPI_FLOAT, MPI_SUM, comm);
    MPI_Allreduce(db.data(), db_all.data(), int(C), MPI_FLOAT, MPI_SUM, comm);
    for (int64_t c = 0; c < C; c++) {
        const double rstd = 1 / std::sqrt(var[c] + 1e-5), xerr = 4 * u * 31 * rstd;
        check(dw_all[c], sdx[c], (xerr + 16 * u * red * 4) * sabs[c], tag + "dweight");
        check(db_all[c], sdy[c], 16 * u * red * sabs[c], tag + "dbias");
    }
}

// A bad argument on one process: that process gets its own error, the others "failed
// on process r", and nobody hangs.
void bad_argument_on_one_process(MPI_Comm comm, int rank, int size) {
    std::vector<float> x(2 * C * HW, 1.f), y(x.size()), sm(C), sr(C), rm(C), rv(C);
    for (size_t i = 0; i < x.size(); i++) x[i] = float(i % 7);
    const normgen::TensorView xv = normgen::TensorView::contiguous(x.data(), normgen::DType::f32, {2, C, H, W});
    const normgen::TensorView yv = normgen::TensorView::contiguous(y.data(), normgen::DType::f32, {2, C, H, W});
    // Process 0's x is a float32 view with a bad (negative) size.
    normgen::TensorView bad = xv;
    if (rank == 0) bad.shape[0] = -1;
    auto vec = [](float *p) { return normgen::TensorView::contiguous(p, normgen::DType::f32, {C}); };
    const normgen::TensorView smv = vec(sm.data()), srv = vec(sr.data());
    const normgen::Status s = normgen::mpi::sync_batch_norm_forward(comm, bad, nullptr, nullptr, nullptr, nullptr,
                                                                    0.1, 1e-5, yv, smv, srv);
    if (s.ok()) {
        std::fprintf(stderr, "[rank %d] a bad x on process 0 was not reported\n", rank);
        failures++;
    } else if (rank != 0 && s.message().find("process 0") == std::string::npos) {
        std::fprintf(stderr, "[rank %d] unexpected message: %s\n", rank, s.message().c_str());
        failures++;
    }
    (void)size;
}

}  // namespace

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    world_rank = rank;
    run(false, MPI_COMM_WORLD, rank, size);
    run(true, MPI_COMM_WORLD, rank, size);
    bad_argument_on_one_process(MPI_COMM_WORLD, rank, size);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    double worst_all = 0;
    MPI_Allreduce(&worst, &worst_all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0)
        std::printf("sync_batch_norm over MPI, %d processes: %s (largest error %.2f of its tolerance)\n", size,
                    total ? "FAILED" : "passed", worst_all);
    MPI_Finalize();
    return total ? 1 : 0;
}

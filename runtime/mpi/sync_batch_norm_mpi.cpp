// Synchronized BatchNorm over MPI: the runtime's transport-agnostic steps around one
// MPI_Allreduce each way. A process that fails locally marks its contribution NaN and
// still joins the collective, so every process returns (nobody waits forever).
#include "normgen/mpi.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace normgen::mpi {

namespace {

Status mpi_error(int code, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return Status(Status::Code::runtime_error, std::string(what) + " failed: " + std::string(msg, len));
}

Status comm_shape(MPI_Comm comm, int *rank, int *size) {
    int rc;
    if ((rc = MPI_Comm_rank(comm, rank)) != MPI_SUCCESS) return mpi_error(rc, "MPI_Comm_rank");
    if ((rc = MPI_Comm_size(comm, size)) != MPI_SUCCESS) return mpi_error(rc, "MPI_Comm_size");
    return Status::OK();
}

int64_t channels_of(const TensorView &x) { return x.rank >= 2 ? x.shape[1] : -1; }

Status failed_elsewhere(int rank) {
    return Status(Status::Code::runtime_error,
                  "synchronized BatchNorm failed on process " + std::to_string(rank) + " (its own error says why)");
}

// Scratch of x's shape and dtype with x's strides when x is dense (same layout, so the
// kernels keep their fast path), else contiguous.
TensorView scratch_like(const TensorView &x, std::vector<unsigned char> *mem) {
    int64_t span = 1;
    bool dense = true;
    for (int d = 0; d < x.rank; d++) {
        if (x.strides[d] < 0) dense = false;
        if (x.shape[d] > 0) span += (x.shape[d] - 1) * x.strides[d];
    }
    dense = dense && span == x.numel();
    mem->assign(static_cast<size_t>(std::max<int64_t>(x.numel(), 1) * dtype_size(x.dtype)), 0);
    if (dense) {
        return TensorView::strided(mem->data(), x.dtype, x.sizes(),
                                   std::vector<int64_t>(x.strides.begin(), x.strides.begin() + x.rank));
    }
    return TensorView::contiguous(mem->data(), x.dtype, x.sizes());
}

}  // namespace

Status sync_batch_norm_forward(MPI_Comm comm, const TensorView &x, const TensorView *running_mean,
                               const TensorView *running_var, const TensorView *weight, const TensorView *bias,
                               std::optional<double> momentum, double eps, const TensorView &y,
                               const TensorView &save_mean, const TensorView &save_rstd, int64_t *num_batches_tracked,
                               NanPolicy nan_policy) {
    int rank = 0, size = 1;
    Status s = comm_shape(comm, &rank, &size);
    if (!s.ok()) return s;
    // Every process must agree on C to share the table: one tiny all-reduce (max of C
    // and of -C) checks it first, as a length mismatch inside MPI would be undefined.
    const int64_t C = std::max<int64_t>(channels_of(x), 0);
    int64_t range[2] = {C, -C};
    int rc;
    if ((rc = MPI_Allreduce(MPI_IN_PLACE, range, 2, MPI_INT64_T, MPI_MAX, comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Allreduce");
    if (range[0] != -range[1])
        return Status(Status::Code::invalid_argument,
                      "x has " + std::to_string(C) + " channels on process " + std::to_string(rank) +
                          ", but the processes disagree (from " + std::to_string(-range[1]) + " to " +
                          std::to_string(range[0]) + ")");
    const int64_t width = 1 + 2 * C;
    std::vector<double> table(static_cast<size_t>(size * width), 0.0);
    Status local = sync_batch_norm_moments(x, &table[rank * width]);
    if (!local.ok()) table[rank * width] = std::numeric_limits<double>::quiet_NaN();
    if ((rc = MPI_Allreduce(MPI_IN_PLACE, table.data(), static_cast<int>(table.size()), MPI_DOUBLE, MPI_SUM, comm)) !=
        MPI_SUCCESS)
        return mpi_error(rc, "MPI_Allreduce");
    if (!local.ok()) return local;
    for (int r = 0; r < size; r++)
        if (std::isnan(table[r * width])) return failed_elsewhere(r);
    return normgen::sync_batch_norm_forward(x, table.data(), size, running_mean, running_var, weight, bias, momentum,
                                            eps, y, save_mean, save_rstd, num_batches_tracked, nan_policy);
}

Status sync_batch_norm_backward(MPI_Comm comm, const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                const TensorView &save_rstd, const TensorView *weight, const TensorView &dx,
                                const TensorView *dweight, const TensorView *dbias) {
    int rank = 0, size = 1;
    Status s = comm_shape(comm, &rank, &size);
    if (!s.ok()) return s;
    const int64_t C = std::max<int64_t>(channels_of(x), 0);
    std::vector<double> sums(static_cast<size_t>(1 + 2 * C), 0.0);
    std::vector<unsigned char> scratch;
    const TensorView dy_scaled = scratch_like(x, &scratch);
    Status local = sync_batch_norm_grad_sums(dy, x, save_mean, save_rstd, weight, sums.data(), dy_scaled, dweight, dbias);
    // A failed process poisons the count (NaN survives the sum): everybody learns of it.
    if (!local.ok()) sums.assign(sums.size(), std::numeric_limits<double>::quiet_NaN());
    int rc = MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(sums.size()), MPI_DOUBLE, MPI_SUM, comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Allreduce");
    if (!local.ok()) return local;
    if (std::isnan(sums[0]))
        return Status(Status::Code::runtime_error,
                      "synchronized BatchNorm backward failed on another process (its own error says why)");
    return normgen::sync_batch_norm_backward(x, dy_scaled, save_mean, save_rstd, weight, sums.data(), dx);
}

}  // namespace normgen::mpi

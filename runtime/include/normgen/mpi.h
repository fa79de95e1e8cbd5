// normgen over MPI: synchronized BatchNorm across the processes of a communicator.
// Built as libnormgen_mpi (CMake target normgen::mpi) when CMake finds MPI.
//
// Every process of `comm` calls the same function with its own part of the batch (its
// x may have N = 0); the call makes one MPI_Allreduce (forward: a (size, 1 + 2C) table
// of per-process count/mean/M2; backward: count, sum dy, sum dy*xhat) and returns the
// whole batch's BatchNorm on this process's part. A process whose own arguments are bad
// still takes part in the all-reduce (so no process hangs) and returns its error; the
// others return "process r failed". See normgen.h, "Synchronized BatchNorm".
#pragma once

#include <mpi.h>

#include "normgen/normgen.h"

namespace normgen::mpi {

// Training forward: y normalized with the statistics of every process's x; running
// statistics (float32 (C,), optional) updated identically on every process;
// save_mean/save_rstd (float32 (C,)) for sync_batch_norm_backward. nan_policy: see normgen.h.
NORMGEN_API Status sync_batch_norm_forward(MPI_Comm comm, const TensorView &x, const TensorView *running_mean,
                                           const TensorView *running_var, const TensorView *weight,
                                           const TensorView *bias, std::optional<double> momentum, double eps,
                                           const TensorView &y, const TensorView &save_mean,
                                           const TensorView &save_rstd, int64_t *num_batches_tracked = nullptr,
                                           NanPolicy nan_policy = NanPolicy::propagate);

// Backward: dx for this process's x (the whole batch's gradient); dweight/dbias this
// process's share (sum them over processes, e.g. with MPI_Allreduce, for the batch's).
NORMGEN_API Status sync_batch_norm_backward(MPI_Comm comm, const TensorView &dy, const TensorView &x,
                                            const TensorView &save_mean, const TensorView &save_rstd,
                                            const TensorView *weight, const TensorView &dx,
                                            const TensorView *dweight = nullptr, const TensorView *dbias = nullptr);

}  // namespace normgen::mpi

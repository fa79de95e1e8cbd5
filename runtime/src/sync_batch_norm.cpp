// Synchronized BatchNorm: the steps around the caller's all-reduces. Statistics come
// from the feature-statistics kernel (shifted moments), processes' moments merge in
// float64 by Chan's formula in rank order (every process gets the same bits), and the
// normalization and its gradient are the BatchNorm kernels run with the merged values.
#include "channel_call.h"

#include <cmath>
#include <limits>

namespace normgen {

using namespace detail;

namespace {

Status check_cpu(const TensorView &x) {
    if (x.device != Device::cpu)
        return type_error("synchronized BatchNorm runs on CPU tensors; x is a CUDA tensor");
    return Status::OK();
}

Status check_buffer(const double *p, const char *name) {
    if (!p) return invalid(std::string(name) + " must not be null");
    return Status::OK();
}

// The merged statistics of a (world, 1 + 2C) table of (count, mean[C], M2[C]) rows, in
// row order (Chan, Golub & LeVeque): mean, biased variance, total count.
Status merge_rows(const double *table, int64_t world, int64_t C, std::pmr::vector<float> *mean,
                  std::pmr::vector<float> *var, int64_t *total) {
    std::pmr::vector<double> m(static_cast<size_t>(C), 0.0, call_memory()), m2(static_cast<size_t>(C), 0.0, call_memory());
    double n = 0;
    for (int64_t r = 0; r < world; r++) {
        const double *row = table + r * (1 + 2 * C);
        const double nb = row[0];
        if (!(nb >= 0) || nb != std::floor(nb) || nb > 9.0e15)
            return invalid("table row " + std::to_string(r) + " has count " + std::to_string(nb) +
                           ": expected a whole number >= 0 (was every row filled by sync_batch_norm_moments and "
                           "summed across processes?)");
        if (nb == 0) continue;
        const double na = n;
        n += nb;
        for (int64_t c = 0; c < C; c++) {
            const double mb = row[1 + c], m2b = row[1 + C + c];
            const double d = mb - m[c];
            m[c] += d * nb / n;
            m2[c] += m2b + d * d * na * nb / n;
        }
    }
    *total = static_cast<int64_t>(n);
    mean->resize(static_cast<size_t>(C));
    var->resize(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; c++) {
        (*mean)[c] = static_cast<float>(m[c]);
        (*var)[c] = n > 0 ? static_cast<float>(std::max(m2[c], 0.0) / n) : 0.0f;
    }
    return Status::OK();
}

}  // namespace

Status sync_batch_norm_moments(const TensorView &x, double *row) {
    ChannelCall call(x);
    Status s;
    if (!(s = check_buffer(row, "row")).ok() || !(s = call.check_x()).ok() || !(s = check_cpu(x)).ok()) return s;
    const int64_t C = call.channels(), count = call.batch() * call.spatial();
    row[0] = static_cast<double>(count);
    for (int64_t i = 0; i < 2 * C; i++) row[1 + i] = 0.0;
    if (count == 0) return s;
    call.bind_tensor(x, "x", false);
    float *stat[5];
    const char *names[5] = {"stats.0", "stats.1", "stats.2", "stats.3", "stats.4"};
    for (int i = 0; i < 5; i++) stat[i] = call.bind_channel_stat(nullptr, names[i]);
    call.fold_batch_into_spatial();
    if (!(s = call.run("feature_stats", "fwd", "")).ok()) return s;
    for (int64_t c = 0; c < C; c++) {
        row[1 + c] = double(stat[0][c]) + double(stat[1][c]);  // shift + (mean - shift)
        row[1 + C + c] = double(stat[2][c]);                   // M2 about the mean
    }
    return s;
}

Status sync_batch_norm_forward(const TensorView &x, const double *table, int64_t world,
                               const TensorView *running_mean, const TensorView *running_var,
                               const TensorView *weight, const TensorView *bias, std::optional<double> momentum,
                               double eps, const TensorView &y, const TensorView &save_mean,
                               const TensorView &save_rstd, int64_t *num_batches_tracked, NanPolicy nan_policy) {
    ChannelCall call(x);
    Status s;
    if (!(s = check_buffer(table, "table")).ok() || !(s = call.check_x()).ok() || !(s = check_cpu(x)).ok())
        return s;
    if (world < 1) return invalid("world must be >= 1, got " + std::to_string(world));
    if (!(s = call.check_per_channel(running_mean, "running_mean", true)).ok() ||
        !(s = call.check_per_channel(running_var, "running_var", true)).ok() ||
        !(s = call.check_per_channel(&save_mean, "save_mean", true)).ok() ||
        !(s = call.check_per_channel(&save_rstd, "save_rstd", true)).ok() || !(s = check_eps(eps)).ok())
        return s;
    if (!running_mean != !running_var)
        return invalid("running_mean and running_var must be given together (or both None)");
    if (momentum && !std::isfinite(*momentum))
        return invalid("momentum must be a finite number or None, got " + std::to_string(*momentum));
    if (!(s = check_nan_policy(nan_policy)).ok()) return s;
    if (!momentum && running_mean && !num_batches_tracked)
        return invalid("momentum=None (cumulative average) needs num_batches_tracked");
    const int64_t C = call.channels();
    std::pmr::vector<float> mean(call_memory()), var(call_memory());
    int64_t total = 0;
    if (!(s = merge_rows(table, world, C, &mean, &var, &total)).ok()) return s;
    if (total <= 1)
        return invalid("Expected more than 1 value per channel when training, got " + std::to_string(total) +
                       " over all processes");
    if (total < call.batch() * call.spatial())
        return invalid("table counts " + std::to_string(total) + " values per channel, fewer than this process's " +
                       std::to_string(call.batch() * call.spatial()) + ": it was not summed across processes");
    if (running_mean) {
        s = check_no_overlap({{running_mean, "running_mean"}, {running_var, "running_var"}},
                             {{&x, "x"}, {weight, "weight"}, {bias, "bias"}, {&y, "y"}});
        if (!s.ok()) return s;
    }
    // Normalizing with the merged statistics is BatchNorm's inference pass with them
    // standing in for the running statistics (it also writes save_mean/save_rstd).
    const TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {C});
    const TensorView vv = TensorView::contiguous(var.data(), DType::f32, {C});
    if (!(s = batch_norm_forward(x, &mv, &vv, weight, bias, false, momentum, eps, y, &save_mean, &save_rstd)).ok())
        return s;
    if (!running_mean) return s;
    return update_running_stats(nan_policy, *running_mean, *running_var, mean.data(), var.data(), total, momentum,
                                num_batches_tracked);
}

Status sync_batch_norm_grad_sums(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                 const TensorView &save_rstd, const TensorView *weight, double *sums,
                                 const TensorView &dy_scaled, const TensorView *dweight, const TensorView *dbias) {
    ChannelCall call(x);
    Status s;
    if (!(s = check_buffer(sums, "sums")).ok() || !(s = call.check_x()).ok() || !(s = check_cpu(x)).ok() ||
        !(s = call.check_like_x(dy, "dy")).ok() || !(s = call.check_like_x(dy_scaled, "dy_scaled")).ok() ||
        !(s = call.check_per_channel(&save_mean, "save_mean", true)).ok() ||
        !(s = call.check_per_channel(&save_rstd, "save_rstd", true)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() ||
        !(s = call.check_per_channel(dweight, "dweight", false)).ok() ||
        !(s = call.check_per_channel(dbias, "dbias", false)).ok())
        return s;
    s = check_backward_outputs("SyncBatchNorm", dy_scaled, weight, dweight, dbias,
                               {{&dy, "dy"}, {&x, "x"}, {&save_mean, "save_mean"}, {&save_rstd, "save_rstd"}});
    if (!s.ok()) return s;
    const int64_t C = call.channels();
    // BatchNorm's affine backward gives dy * weight * rstd and, per channel, the sums
    // (sum dy * xhat, sum dy) as its parameter gradients; without a weight, with ones.
    Staging own;
    const TensorView w = weight ? *weight : own.constant(x.dtype, {C}, 1.0f);
    std::pmr::vector<unsigned char> dwb(call_memory()), dbb(call_memory());
    TensorView dw, db;
    if (dweight) {
        dw = *dweight;
        db = *dbias;
    } else {
        dwb.resize(static_cast<size_t>(C * dtype_size(x.dtype)));
        dbb.resize(dwb.size());
        dw = TensorView::contiguous(dwb.data(), x.dtype, {C});
        db = TensorView::contiguous(dbb.data(), x.dtype, {C});
    }
    if (!(s = batch_norm_backward(dy, x, save_mean, save_rstd, &w, false, dy_scaled, &dw, &db)).ok()) return s;
    // The sums are per unit weight: the kernel's dweight is sum dy * xhat exactly, its
    // dbias sum dy, whatever the weight (it scales only dx).
    std::pmr::vector<float> sdx(call_memory()), sdy(call_memory());
    if (!(s = read_floats(dw, &sdx)).ok() || !(s = read_floats(db, &sdy)).ok()) return s;
    sums[0] = static_cast<double>(call.batch() * call.spatial());
    for (int64_t c = 0; c < C; c++) {
        sums[1 + c] = sdy[c];
        sums[1 + C + c] = sdx[c];
    }
    return s;
}

Status sync_batch_norm_backward(const TensorView &x, const TensorView &dy_scaled, const TensorView &save_mean,
                                const TensorView &save_rstd, const TensorView *weight, const double *sums,
                                const TensorView &dx) {
    ChannelCall call(x);
    Status s;
    if (!(s = check_buffer(sums, "sums")).ok() || !(s = call.check_x()).ok() || !(s = check_cpu(x)).ok() ||
        !(s = call.check_like_x(dy_scaled, "dy_scaled")).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = call.check_per_channel(&save_mean, "save_mean", true)).ok() ||
        !(s = call.check_per_channel(&save_rstd, "save_rstd", true)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok())
        return s;
    s = check_no_overlap({{&dx, "dx"}}, {{&x, "x"}, {&dy_scaled, "dy_scaled"}, {&save_mean, "save_mean"},
                                         {&save_rstd, "save_rstd"}, {weight, "weight"}});
    if (!s.ok()) return s;
    const int64_t C = call.channels();
    const double n = sums[0];
    if (!(n >= double(call.batch() * call.spatial())) || n < 1)
        return invalid("sums count " + std::to_string(n) + " values per channel, fewer than this process's " +
                       std::to_string(call.batch() * call.spatial()) + ": they were not summed across processes");
    if (call.batch() * call.spatial() == 0) return s;
    // dx = weight * rstd * (dy - sum dy / n - xhat * sum dy xhat / n)
    //    = dy_scaled + xhat * a + b,  a = -weight rstd sum(dy xhat) / n,  b = -weight rstd sum(dy) / n:
    // BatchNorm's inference pass over x with the saved statistics, weight a, bias b,
    // and dy_scaled as the fused residual. Its rstd is 1 / sqrt(var + tiny) with
    // var = 1 / rstd^2, the saved rstd again to float32 rounding.
    std::pmr::vector<float> mean(call_memory()), rstd(call_memory());
    if (!(s = read_floats(save_mean, &mean)).ok() || !(s = read_floats(save_rstd, &rstd)).ok()) return s;
    std::pmr::vector<float> w(static_cast<size_t>(C), 1.0f, call_memory());
    if (weight && !(s = read_floats(*weight, &w)).ok()) return s;
    std::pmr::vector<float> var(static_cast<size_t>(C), call_memory()), a32(static_cast<size_t>(C), call_memory()),
        b32(static_cast<size_t>(C), call_memory());
    for (int64_t c = 0; c < C; c++) {
        const double r = rstd[c], k = double(w[c]) * r / n;
        var[c] = static_cast<float>(1.0 / (r * r));
        a32[c] = static_cast<float>(-k * sums[1 + C + c]);
        b32[c] = static_cast<float>(-k * sums[1 + c]);
    }
    Staging own;
    const TensorView a = own.constant(x.dtype, {C}, 0.0f), b = own.constant(x.dtype, {C}, 0.0f);
    if (!(s = write_floats(a, a32)).ok() || !(s = write_floats(b, b32)).ok()) return s;
    const TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {C});
    const TensorView vv = TensorView::contiguous(var.data(), DType::f32, {C});
    Epilogue residual;
    residual.residual = &dy_scaled;
    return batch_norm_forward(x, &mv, &vv, &a, &b, false, 0.1, std::numeric_limits<float>::min(), dx, nullptr,
                              nullptr, nullptr, &residual);
}

}  // namespace normgen

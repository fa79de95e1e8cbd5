// Batch-Instance Norm and Switchable Norm entry points: checks, one kernel call, the
// saved statistics packed for the backward, and the BN part's running statistics
// (updated here, as BatchNorm's, so kernels never write inputs).
#include "channel_call.h"
#include "cuda_device.h"

#include <array>
#include <cmath>
#include <functional>
#include <vector>

namespace normgen {

using namespace detail;

namespace {

// A float32 (rows, cols) tensor, exactly that shape.
Status check_packed(const TensorView *t, const char *name, int64_t rows, int64_t cols, const char *what) {
    if (!t) return Status::OK();
    Status s = check_tensor(*t, name);
    if (!s.ok() || !(s = check_dtype(*t, name, DType::f32)).ok()) return s;
    return check_same_shape(*t, name, {rows, cols}, what);
}

// A (3,) tensor of x's dtype: the logits of Switchable Norm.
Status check_logits(const TensorView *t, const char *name, DType dtype) {
    if (!t) return Status::OK();
    Status s = check_tensor(*t, name);
    if (!s.ok() || !(s = check_dtype(*t, name, dtype)).ok()) return s;
    return check_same_shape(*t, name, {3}, "3 logits (IN, LN, BN)");
}

// A view into t's memory, on t's device.
TensorView part_of(const TensorView &t, void *data, std::initializer_list<int64_t> shape,
                   std::initializer_list<int64_t> strides) {
    TensorView v = strided_view(data, DType::f32, shape, strides);
    v.device = t.device;
    v.device_index = t.device_index;
    return v;
}
// Row `row` of a packed 2-D float32 tensor, columns [0, cols), as a view.
TensorView packed_row(const TensorView &t, int64_t row, int64_t cols) {
    return part_of(t, static_cast<float *>(t.data) + row * t.strides[0], {cols}, {t.strides[1]});
}
// Column `col`, rows [0, rows).
TensorView packed_col(const TensorView &t, int64_t col, int64_t rows) {
    return part_of(t, static_cast<float *>(t.data) + col * t.strides[1], {rows}, {t.strides[0]});
}
// The leading (rows, cols) block.
TensorView packed_block(const TensorView &t, int64_t rows, int64_t cols) {
    return part_of(t, t.data, {rows, cols}, {t.strides[0], t.strides[1]});
}

// Copy a row-major (rows, cols) float32 array into the block of the host view h at (r0, c0).
void store_block(const TensorView &h, const float *src, int64_t rows, int64_t cols, int64_t r0 = 0, int64_t c0 = 0) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) element(h, r0 + i, c0 + j) = src[i * cols + j];
}

// Fill a packed saved-statistics tensor (CPU, or CUDA through a host copy) with `fill`,
// which gets a host view of it.
template <typename Fill>
Status pack(const TensorView *t, const Fill &fill) {
    if (!t) return Status::OK();
    return with_host_view(*t, [&](const TensorView &h) {
        fill(h);
        return Status::OK();
    });
}

// A per-channel float32 tensor (CPU or CUDA) as a host vector.
Status host_vector(const TensorView &t, std::pmr::vector<float> *out) {
    out->assign(static_cast<size_t>(t.numel()), 0.0f);
    return copy_tensor(contiguous_like(t, out->data()), t);
}

// The BN part's arguments: its batch statistics as `n_stats` per-channel outputs
// bn_stats.0.. (training; returned), or the running statistics as inputs.
std::array<float *, 3> bind_bn_part(ChannelCall &call, bool training, int n_stats, const TensorView *running_mean,
                                    const TensorView *running_var) {
    static const char *names[] = {"bn_stats.0", "bn_stats.1", "bn_stats.2"};
    std::array<float *, 3> out{};
    if (training) {
        for (int i = 0; i < n_stats; i++) out[i] = call.bind_channel_stat(nullptr, names[i]);
    } else {
        call.bind_channel(*running_mean, "running_mean", false);
        call.bind_channel(*running_var, "running_var", false);
    }
    return out;
}

// The arguments both forwards share: weight/bias (x's dtype), running statistics
// (float32), eps and y; then, once the shapes are known good, that no output (y, the
// saved statistics, running statistics being updated) overlaps an input.
Status check_forward_args(const ChannelCall &call, const TensorView *weight, const TensorView *bias,
                          const TensorView *running_mean, const TensorView *running_var, double eps,
                          const TensorView &y) {
    Status s;
    if (!(s = call.check_per_channel(weight, "weight", false)).ok() ||
        !(s = call.check_per_channel(bias, "bias", false)).ok() ||
        !(s = call.check_per_channel(running_mean, "running_mean", true)).ok() ||
        !(s = call.check_per_channel(running_var, "running_var", true)).ok() || !(s = check_eps(eps)).ok())
        return s;
    return call.check_like_x(y, "y");
}

// Running statistics are outputs when updated (training), inputs otherwise.
Status check_forward_overlap(bool updating, const TensorView *running_mean, const TensorView *running_var,
                             Named outputs, Named inputs) {
    std::array<NamedTensor, 8> outs{}, ins{};
    if (outputs.size() + 2 > outs.size() || inputs.size() + 2 > ins.size())
        return invalid("internal: too many tensors for the overlap check");
    std::copy(outputs.begin(), outputs.end(), outs.begin());
    std::copy(inputs.begin(), inputs.end(), ins.begin());
    size_t no = outputs.size(), ni = inputs.size();
    outs[no++] = {updating ? running_mean : nullptr, "running_mean"};
    outs[no++] = {updating ? running_var : nullptr, "running_var"};
    ins[ni++] = {updating ? nullptr : running_mean, "running_mean"};
    ins[ni++] = {updating ? nullptr : running_var, "running_var"};
    return check_no_overlap(outs.data(), no, ins.data(), ni);
}

}  // namespace

Status batch_instance_norm_forward(const TensorView &x, const TensorView &rho, const TensorView *weight,
                                   const TensorView *bias, const TensorView *running_mean,
                                   const TensorView *running_var, bool training, std::optional<double> momentum,
                                   double eps, const TensorView &y, const TensorView *save_mean,
                                   const TensorView *save_rstd, int64_t *num_batches_tracked,
                                   NanPolicy nan_policy) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_per_channel(&rho, "rho", false)).ok() ||
        !(s = check_forward_args(call, weight, bias, running_mean, running_var, eps, y)).ok())
        return s;
    const int64_t N = call.batch(), C = call.channels();
    const char *packed = "(N + 1, C): the IN statistics per sample, then the BN part's";
    if (!(s = check_packed(save_mean, "save_mean", N + 1, C, packed)).ok() ||
        !(s = check_packed(save_rstd, "save_rstd", N + 1, C, packed)).ok() ||
        !(s = check_bn_running_stats(call, running_mean, running_var, training, momentum, num_batches_tracked)).ok() ||
        !(s = check_nan_policy(nan_policy)).ok())
        return s;
    const bool updating = training && running_mean;
    s = check_forward_overlap(updating, running_mean, running_var,
                              {{&y, "y"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}},
                              {{&x, "x"}, {&rho, "rho"}, {weight, "weight"}, {bias, "bias"}});
    if (!s.ok()) return s;
    std::pmr::vector<float> run_mean(call_memory()), run_rstd(call_memory());  // inference: the BN part's saved statistics are the running ones
    if (!training) {
        if (!(s = host_vector(*running_mean, &run_mean)).ok() || !(s = host_vector(*running_var, &run_rstd)).ok())
            return s;
        for (float &v : run_rstd) v = static_cast<float>(1.0 / std::sqrt(double(v) + eps));
        if (N * call.spatial() == 0) {
            s = pack(save_mean, [&](const TensorView &h) { store_block(h, run_mean.data(), 1, C, N); });
            return s.ok() ? pack(save_rstd, [&](const TensorView &h) { store_block(h, run_rstd.data(), 1, C, N); }) : s;
        }
    }
    call.bind_tensor(x, "x", false);
    call.bind_tensor(y, "y", true);
    call.bind_channel(rho, "rho", false);
    call.bind_affine(weight ? weight : &call.constant_channel(1.0f), bias);
    call.bind_scalar("eps", static_cast<float>(eps));
    const float *in_mean = call.bind_stat_2d(nullptr, "in_stats.0", C, N, true);
    const float *in_rstd = call.bind_stat_2d(nullptr, "in_stats.1", C, N, true);
    const std::array<float *, 3> bn = bind_bn_part(call, training, 3, running_mean, running_var);
    float *bn_mean = bn[0], *bn_rstd = bn[1], *bn_var = bn[2];
    s = call.run("batch_instance_norm", "fwd", Variant().set("training", training));
    if (!s.ok()) return s;
    const float *row_mean = training ? bn_mean : run_mean.data(), *row_rstd = training ? bn_rstd : run_rstd.data();
    s = pack(save_mean, [&](const TensorView &h) {
        store_block(h, in_mean, N, C);
        store_block(h, row_mean, 1, C, N);
    });
    if (s.ok())
        s = pack(save_rstd, [&](const TensorView &h) {
            store_block(h, in_rstd, N, C);
            store_block(h, row_rstd, 1, C, N);
        });
    if (s.ok() && training && running_mean)
        s = update_running_stats(nan_policy, *running_mean, *running_var, bn_mean, bn_var, N * call.spatial(),
                                 momentum, num_batches_tracked);
    return s;
}

Status batch_instance_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                    const TensorView &save_rstd, const TensorView &rho, const TensorView *weight,
                                    bool training, const TensorView &dx, const TensorView *drho,
                                    const TensorView *dweight, const TensorView *dbias) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        !(s = call.check_per_channel(&rho, "rho", false)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = call.check_per_channel(drho, "drho", false)).ok() ||
        !(s = call.check_per_channel(dweight, "dweight", false)).ok() ||
        !(s = call.check_per_channel(dbias, "dbias", false)).ok())
        return s;
    const int64_t N = call.batch(), C = call.channels();
    const char *packed = "(N + 1, C), as batch_instance_norm_forward wrote it";
    if (!(s = check_packed(&save_mean, "save_mean", N + 1, C, packed)).ok() ||
        !(s = check_packed(&save_rstd, "save_rstd", N + 1, C, packed)).ok())
        return s;
    s = check_backward_outputs("Batch-Instance Norm", dx, weight, dweight, dbias,
                               {{&dy, "dy"}, {&x, "x"}, {&save_mean, "save_mean"}, {&save_rstd, "save_rstd"},
                                {&rho, "rho"}, {drho, "drho"}});
    if (s.ok() && drho)
        s = check_no_overlap({{drho, "drho"}}, {{&dy, "dy"}, {&x, "x"}, {&rho, "rho"}, {weight, "weight"}});
    if (!s.ok()) return s;
    if (N * call.spatial() == 0) {
        s = zero_param_grads(dweight, dbias);
        return s.ok() && drho ? fill_zero(*drho) : s;
    }
    const TensorView in_mean = packed_block(save_mean, N, C), in_rstd = packed_block(save_rstd, N, C);
    const TensorView bn_mean = packed_row(save_mean, N, C), bn_rstd = packed_row(save_rstd, N, C);
    call.bind_tensor(dy, "dy", false);
    call.bind_tensor(x, "x", false);
    call.bind_tensor(dx, "dx", true);
    call.bind_stat_2d(&in_mean, "in_mean", C, N, false);
    call.bind_stat_2d(&in_rstd, "in_rstd", C, N, false);
    call.bind_vector(&bn_mean, "bn_mean", C, DType::f32, false);
    call.bind_vector(&bn_rstd, "bn_rstd", C, DType::f32, false);
    call.bind_channel(rho, "rho", false);
    call.bind_channel(weight ? *weight : call.constant_channel(1.0f), "weight", false);
    call.bind_channel(drho ? *drho : call.constant_channel(0.0f), "drho", true);
    call.bind_channel(dweight ? *dweight : call.constant_channel(0.0f), "dweight", true);
    call.bind_channel(dbias ? *dbias : call.constant_channel(0.0f), "dbias", true);
    return call.run("batch_instance_norm", "bwd", Variant().set("training", training));
}

Status switchable_norm_forward(const TensorView &x, const TensorView &mean_weight, const TensorView &var_weight,
                               const TensorView *weight, const TensorView *bias, const TensorView *running_mean,
                               const TensorView *running_var, bool training, std::optional<double> momentum,
                               double eps, const TensorView &y, const TensorView *save_mean,
                               const TensorView *save_var, const TensorView *save_rstd,
                               int64_t *num_batches_tracked, NanPolicy nan_policy) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = check_logits(&mean_weight, "mean_weight", x.dtype)).ok() ||
        !(s = check_logits(&var_weight, "var_weight", x.dtype)).ok() ||
        !(s = check_forward_args(call, weight, bias, running_mean, running_var, eps, y)).ok())
        return s;
    const int64_t N = call.batch(), C = call.channels();
    const char *packed = "(N + 1, C + 1): IN statistics, LN per sample in the last column, BN in the last row";
    if (!(s = check_packed(save_mean, "save_mean", N + 1, C + 1, packed)).ok() ||
        !(s = check_packed(save_var, "save_var", N + 1, C + 1, packed)).ok() ||
        !(s = check_packed(save_rstd, "save_rstd", N, C, "(N, C): the mixture's rstd per (sample, channel)")).ok() ||
        !(s = check_bn_running_stats(call, running_mean, running_var, training, momentum, num_batches_tracked)).ok() ||
        !(s = check_nan_policy(nan_policy)).ok())
        return s;
    const bool updating = training && running_mean;
    s = check_forward_overlap(updating, running_mean, running_var,
                              {{&y, "y"}, {save_mean, "save_mean"}, {save_var, "save_var"}, {save_rstd, "save_rstd"}},
                              {{&x, "x"}, {&mean_weight, "mean_weight"}, {&var_weight, "var_weight"},
                               {weight, "weight"}, {bias, "bias"}});
    if (!s.ok()) return s;
    std::pmr::vector<float> run_mean(call_memory()), run_var(call_memory());  // inference: the BN part's saved statistics are the running ones
    if (!training &&
        (!(s = host_vector(*running_mean, &run_mean)).ok() || !(s = host_vector(*running_var, &run_var)).ok()))
        return s;
    // The last row (the BN part; null: left for the kernel's) and its corner (0).
    auto bn_row = [&](const TensorView &h, const float *row) {
        element(h, N, C) = 0.0f;
        if (row) store_block(h, row, 1, C, N);
    };
    if (N * call.spatial() == 0) {
        s = pack(save_mean, [&](const TensorView &h) { bn_row(h, training ? nullptr : run_mean.data()); });
        return s.ok() ? pack(save_var, [&](const TensorView &h) { bn_row(h, training ? nullptr : run_var.data()); })
                      : s;
    }
    call.bind_tensor(x, "x", false);
    call.bind_tensor(y, "y", true);
    call.bind_vector(&mean_weight, "mean_weight", 3, x.dtype, false);
    call.bind_vector(&var_weight, "var_weight", 3, x.dtype, false);
    call.bind_affine(weight ? weight : &call.constant_channel(1.0f), bias);
    call.bind_scalar("eps", static_cast<float>(eps));
    const float *in_mean = call.bind_stat_2d(nullptr, "in_stats.0", C, N, true);
    const float *in_var = call.bind_stat_2d(nullptr, "in_stats.1", C, N, true);
    const float *rstd = call.bind_stat_2d(nullptr, "in_stats.2", C, N, true);
    const auto *ln_mean = static_cast<const float *>(call.bind_vector(nullptr, "ln_stats.0", N, DType::f32, true));
    const auto *ln_var = static_cast<const float *>(call.bind_vector(nullptr, "ln_stats.1", N, DType::f32, true));
    const std::array<float *, 2 + 1> bn = bind_bn_part(call, training, 2, running_mean, running_var);
    float *bn_mean = bn[0], *bn_var = bn[1];
    s = call.run("switchable_norm", "fwd", Variant().set("training", training));
    if (!s.ok()) return s;
    // IN statistics in the (N, C) block, LN per sample in the last column, BN in the last row.
    auto fill_packed = [&](const float *in, const float *ln, const float *bn) {
        return [=, &bn_row](const TensorView &h) {
            store_block(h, in, N, C);
            store_block(h, ln, N, 1, 0, C);
            bn_row(h, bn);
        };
    };
    s = pack(save_mean, fill_packed(in_mean, ln_mean, training ? bn_mean : run_mean.data()));
    if (s.ok()) s = pack(save_var, fill_packed(in_var, ln_var, training ? bn_var : run_var.data()));
    if (s.ok()) s = pack(save_rstd, [&](const TensorView &h) { store_block(h, rstd, N, C); });
    if (s.ok() && training && running_mean)
        s = update_running_stats(nan_policy, *running_mean, *running_var, bn_mean, bn_var, N * call.spatial(),
                                 momentum, num_batches_tracked);
    return s;
}

Status switchable_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                const TensorView &save_var, const TensorView &save_rstd,
                                const TensorView &mean_weight, const TensorView &var_weight,
                                const TensorView *weight, bool training, const TensorView &dx,
                                const TensorView *dmean_weight, const TensorView *dvar_weight,
                                const TensorView *dweight, const TensorView *dbias) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        !(s = check_logits(&mean_weight, "mean_weight", x.dtype)).ok() ||
        !(s = check_logits(&var_weight, "var_weight", x.dtype)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = check_logits(dmean_weight, "dmean_weight", x.dtype)).ok() ||
        !(s = check_logits(dvar_weight, "dvar_weight", x.dtype)).ok() ||
        !(s = call.check_per_channel(dweight, "dweight", false)).ok() ||
        !(s = call.check_per_channel(dbias, "dbias", false)).ok())
        return s;
    const int64_t N = call.batch(), C = call.channels();
    const char *packed = "(N + 1, C + 1), as switchable_norm_forward wrote it";
    if (!(s = check_packed(&save_mean, "save_mean", N + 1, C + 1, packed)).ok() ||
        !(s = check_packed(&save_var, "save_var", N + 1, C + 1, packed)).ok() ||
        !(s = check_packed(&save_rstd, "save_rstd", N, C, "(N, C), as switchable_norm_forward wrote it")).ok())
        return s;
    s = check_backward_outputs("Switchable Norm", dx, weight, dweight, dbias,
                               {{&dy, "dy"}, {&x, "x"}, {&save_mean, "save_mean"}, {&save_var, "save_var"},
                                {&save_rstd, "save_rstd"}, {&mean_weight, "mean_weight"}, {&var_weight, "var_weight"},
                                {dmean_weight, "dmean_weight"}, {dvar_weight, "dvar_weight"}});
    if (s.ok())
        s = check_no_overlap({{dmean_weight, "dmean_weight"}, {dvar_weight, "dvar_weight"}},
                             {{&dy, "dy"}, {&x, "x"}, {&mean_weight, "mean_weight"}, {&var_weight, "var_weight"},
                              {weight, "weight"}});
    if (!s.ok()) return s;
    if (N * call.spatial() == 0) {
        s = zero_param_grads(dweight, dbias);
        for (const TensorView *t : {dmean_weight, dvar_weight})
            if (s.ok() && t) s = fill_zero(*t);
        return s;
    }
    const TensorView in_mean = packed_block(save_mean, N, C), in_var = packed_block(save_var, N, C);
    const TensorView ln_mean = packed_col(save_mean, C, N), ln_var = packed_col(save_var, C, N);
    const TensorView bn_mean = packed_row(save_mean, N, C), bn_var = packed_row(save_var, N, C);
    call.bind_tensor(dy, "dy", false);
    call.bind_tensor(x, "x", false);
    call.bind_tensor(dx, "dx", true);
    call.bind_stat_2d(&in_mean, "in_mean", C, N, false);
    call.bind_stat_2d(&in_var, "in_var", C, N, false);
    call.bind_stat_2d(&save_rstd, "rstd", C, N, false);
    call.bind_vector(&ln_mean, "ln_mean", N, DType::f32, false);
    call.bind_vector(&ln_var, "ln_var", N, DType::f32, false);
    call.bind_vector(&bn_mean, "bn_mean", C, DType::f32, false);
    call.bind_vector(&bn_var, "bn_var", C, DType::f32, false);
    call.bind_vector(&mean_weight, "mean_weight", 3, x.dtype, false);
    call.bind_vector(&var_weight, "var_weight", 3, x.dtype, false);
    call.bind_channel(weight ? *weight : call.constant_channel(1.0f), "weight", false);
    call.bind_channel(dweight ? *dweight : call.constant_channel(0.0f), "dweight", true);
    call.bind_channel(dbias ? *dbias : call.constant_channel(0.0f), "dbias", true);
    call.bind_vector(dmean_weight, "dmean_weight", 3, x.dtype, true);
    call.bind_vector(dvar_weight, "dvar_weight", 3, x.dtype, true);
    return call.run("switchable_norm", "bwd", Variant().set("training", training));
}

}  // namespace normgen

// GroupNorm and InstanceNorm entry points. InstanceNorm is GroupNorm with one group per
// channel (same kernels); with running statistics it is BatchNorm's inference kernel.
#include "channel_call.h"

#include <cmath>

namespace normgen {

using namespace detail;

namespace {

Status check_groups(const ChannelCall &call, int64_t num_groups) {
    if (num_groups <= 0 || call.channels() % num_groups != 0)
        return invalid("Expected num_groups to divide the number of channels " + std::to_string(call.channels()) +
                       ", but got num_groups=" + std::to_string(num_groups));
    return Status::OK();
}

Status check_group_stats(const TensorView *t, const char *name, int64_t count) {
    if (!t) return Status::OK();
    return check_stats(*t, name, count, "one per (sample, group)");
}

// The kernels' call; `stats` (mean, rstd, var) pointers receive per-(n, g) values.
Status group_norm_call(const TensorView &x, int64_t groups, const TensorView *weight, const TensorView *bias,
                       double eps, const TensorView &y, const TensorView *mean, const TensorView *rstd,
                       std::pmr::vector<float> *var_out, const Epilogue *epilogue) {
    ChannelCall call(x);
    Status s = call.check_x();
    if (!s.ok()) return s;
    const bool fused = epilogue && epilogue->active();
    call.set_groups(groups);
    call.bind_tensor(x, "x", false);
    call.bind_group_rows("x", "x_groups");
    call.bind_tensor(y, "y", true);
    // The fused kernels are affine: identities stand in for absent parameters.
    const bool affine = call.bind_affine(fused && !weight ? &call.constant_channel(1.0f) : weight, bias);
    if (fused) call.bind_epilogue(*epilogue);
    call.bind_scalar("eps", static_cast<float>(eps));
    call.bind_stat_2d(mean, "stats.0", groups, call.batch(), true);
    call.bind_stat_2d(rstd, "stats.1", groups, call.batch(), true);
    float *var = call.bind_stat_2d(nullptr, "stats.2", groups, call.batch(), true);
    s = call.run("group_norm", "fwd",
                 ChannelCall::variant(fused ? epilogue : nullptr, Variant().set("affine", affine)));
    if (s.ok() && var_out) var_out->assign(var, var + groups * call.batch());
    return s;
}

// With an activation the kernel recomputes z; a residual alone passes dy through to dresidual.
Status group_norm_grad_call(const TensorView &dy, const TensorView &x, const TensorView &mean, const TensorView &rstd,
                            int64_t groups, const TensorView *weight, const TensorView &dx, const TensorView *dweight,
                            const TensorView *dbias, const Epilogue *epilogue, const TensorView *bias,
                            const TensorView *dresidual) {
    ChannelCall call(x);
    Status s = call.check_x();
    if (!s.ok()) return s;
    const bool fused = epilogue && epilogue->activation != Activation::none;
    const TensorView *residual = epilogue ? epilogue->residual : nullptr;
    call.set_groups(groups);
    call.bind_tensor(dy, "dy", false);
    call.bind_tensor(x, "x", false);
    call.bind_dx(dx, dresidual, fused && residual);
    call.bind_stat_2d(&mean, "mean", groups, call.batch(), false);
    call.bind_stat_2d(&rstd, "rstd", groups, call.batch(), false);
    const bool w = call.bind_backward_params(weight, bias, dweight, dbias, fused ? epilogue : nullptr, true);
    s = call.run("group_norm", "bwd",
                 ChannelCall::variant(fused ? epilogue : nullptr, Variant().set("has_weight", w)));
    if (s.ok() && !fused && dresidual) s = copy_tensor(*dresidual, dy);  // no activation: dz = dy
    return s;
}

}  // namespace

Status group_norm_forward(const TensorView &x, int64_t num_groups, const TensorView *weight, const TensorView *bias,
                          double eps, const TensorView &y, const TensorView *mean, const TensorView *rstd,
                          const Epilogue *epilogue) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = check_groups(call, num_groups)).ok() ||
        !(s = call.check_epilogue(epilogue)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() ||
        !(s = call.check_per_channel(bias, "bias", false)).ok() || !(s = check_eps(eps)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() ||
        !(s = check_group_stats(mean, "mean", call.batch() * num_groups)).ok() ||
        !(s = check_group_stats(rstd, "rstd", call.batch() * num_groups)).ok())
        return s;
    s = check_no_overlap({{&y, "y"}, {mean, "mean"}, {rstd, "rstd"}},
                         {{&x, "x"}, {weight, "weight"}, {bias, "bias"}, {epilogue ? epilogue->residual : nullptr, "residual"}});
    if (!s.ok() || call.batch() == 0) return s;
    if (call.spatial() == 0) {  // no values per group: torch gives mean 0, rstd NaN
        if (mean) s = fill_f32(*mean, 0.0f);
        if (s.ok() && rstd) s = fill_f32(*rstd, std::nanf(""));
        return s;
    }
    return group_norm_call(x, num_groups, weight, bias, eps, y, mean, rstd, nullptr, epilogue);
}

Status group_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &mean, const TensorView &rstd,
                           int64_t num_groups, const TensorView *weight, const TensorView &dx,
                           const TensorView *dweight, const TensorView *dbias, const Epilogue *epilogue,
                           const TensorView *bias, const TensorView *dresidual) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = check_groups(call, num_groups)).ok() ||
        !(s = call.check_fused_backward(epilogue, bias, dresidual)).ok() ||
        !(s = call.check_like_x(dy, "dy")).ok() ||
        !(s = check_group_stats(&mean, "mean", call.batch() * num_groups)).ok() ||
        !(s = check_group_stats(&rstd, "rstd", call.batch() * num_groups)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = call.check_per_channel(dweight, "dweight", false)).ok() ||
        !(s = call.check_per_channel(dbias, "dbias", false)).ok())
        return s;
    const TensorView *residual = epilogue ? epilogue->residual : nullptr;
    s = check_backward_outputs("GroupNorm", dx, weight, dweight, dbias,
                               {{&dy, "dy"}, {&x, "x"}, {&mean, "mean"}, {&rstd, "rstd"}, {bias, "bias"},
                                {residual, "residual"}});
    if (s.ok() && dresidual)
        s = check_no_overlap({{dresidual, "dresidual"}, {&dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}},
                             {{&dy, "dy"}, {&x, "x"}, {residual, "residual"}, {weight, "weight"}, {bias, "bias"}});
    if (!s.ok()) return s;
    if (call.batch() * call.spatial() == 0) {
        return zero_param_grads(dweight, dbias);
    }
    return group_norm_grad_call(dy, x, mean, rstd, num_groups, weight, dx, dweight, dbias, epilogue, bias, dresidual);
}

Status instance_norm_forward(const TensorView &x, const TensorView *running_mean, const TensorView *running_var,
                             const TensorView *weight, const TensorView *bias, bool use_input_stats, double momentum,
                             double eps, const TensorView &y, const TensorView *save_mean,
                             const TensorView *save_rstd, const Epilogue *epilogue, NanPolicy nan_policy) {
    ChannelCall call(x);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_epilogue(epilogue)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() ||
        !(s = call.check_per_channel(bias, "bias", false)).ok() ||
        !(s = call.check_per_channel(running_mean, "running_mean", true)).ok() ||
        !(s = call.check_per_channel(running_var, "running_var", true)).ok() || !(s = check_eps(eps)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() ||
        !(s = check_group_stats(save_mean, "save_mean", call.batch() * call.channels())).ok() ||
        !(s = check_group_stats(save_rstd, "save_rstd", call.batch() * call.channels())).ok())
        return s;
    if (!running_mean != !running_var)
        return invalid("running_mean and running_var must be given together (or both None)");
    if (!use_input_stats && !running_mean)
        return invalid("running_mean and running_var are required when use_input_stats=False");
    if (!(s = check_nan_policy(nan_policy)).ok()) return s;
    if (!std::isfinite(momentum)) return invalid("momentum must be a finite number, got " + std::to_string(momentum));
    const bool updating = use_input_stats && running_mean;
    if (use_input_stats && call.spatial() <= 1)
        return invalid("Expected more than 1 spatial element when training, got input size " + shape_str(x.sizes()));
    const TensorView *rm_out = updating ? running_mean : nullptr, *rv_out = updating ? running_var : nullptr;
    const TensorView *rm_in = updating ? nullptr : running_mean, *rv_in = updating ? nullptr : running_var;
    s = check_no_overlap({{&y, "y"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}, {rm_out, "running_mean"},
                          {rv_out, "running_var"}},
                         {{&x, "x"}, {weight, "weight"}, {bias, "bias"}, {rm_in, "running_mean"}, {rv_in, "running_var"}});
    if (!s.ok() || call.batch() == 0) return s;
    const int64_t N = call.batch(), C = call.channels();
    auto at = [](const TensorView &t, int64_t i) -> float & {
        int64_t extent, stride;
        collapse_1d(t, &extent, &stride);
        return static_cast<float *>(t.data)[i * stride];
    };
    if (!use_input_stats) {
        // The running statistics normalize every instance: BatchNorm's inference kernel.
        std::pmr::vector<float> rstd(static_cast<size_t>(C), call_memory());
        for (int64_t c = 0; c < C; c++) rstd[c] = static_cast<float>(1.0 / std::sqrt(double(at(*running_var, c)) + eps));
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                if (save_mean) at(*save_mean, n * C + c) = at(*running_mean, c);
                if (save_rstd) at(*save_rstd, n * C + c) = rstd[c];
            }
        return batch_norm_forward(x, running_mean, running_var, weight, bias, false, 0.0, eps, y, nullptr, nullptr,
                                  nullptr, epilogue);
    }
    std::pmr::vector<float> mean_scratch(call_memory()), var(call_memory());
    TensorView mean_view;
    const TensorView *mean = save_mean;
    if (updating && !mean) {
        mean_scratch.resize(static_cast<size_t>(N * C));
        mean_view = TensorView::contiguous(mean_scratch.data(), DType::f32, {N, C});
        mean = &mean_view;
    }
    s = group_norm_call(x, C, weight, bias, eps, y, mean, save_rstd, updating ? &var : nullptr, epilogue);
    if (!s.ok() || !updating) return s;
    const double S = double(call.spatial());
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t n = 0; n < N; n++) {
            m += at(*mean, n * C + c);
            v += var[n * C + c] * S / (S - 1);
        }
        v = batch_variance(m, v);
        if (nan_policy == NanPolicy::skip && !(std::isfinite(m) && std::isfinite(v))) continue;
        float &rm = at(*running_mean, c), &rv = at(*running_var, c);
        rm = static_cast<float>((1 - momentum) * rm + momentum * m / N);
        rv = static_cast<float>((1 - momentum) * rv + momentum * v / N);
    }
    return s;
}

Status instance_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                              const TensorView &save_rstd, const TensorView *weight, bool use_input_stats,
                              const TensorView &dx, const TensorView *dweight, const TensorView *dbias,
                              const Epilogue *epilogue, const TensorView *bias, const TensorView *dresidual) {
    ChannelCall call(x);
    Status s = call.check_x();
    if (!s.ok()) return s;
    if (use_input_stats)
        return group_norm_backward(dy, x, save_mean, save_rstd, call.channels(), weight, dx, dweight, dbias, epilogue,
                                   bias, dresidual);
    // Running statistics: the affine gradient of BatchNorm's inference mode, per channel.
    const int64_t C = call.channels();
    if (!(s = check_group_stats(&save_mean, "save_mean", call.batch() * C)).ok() ||
        !(s = check_group_stats(&save_rstd, "save_rstd", call.batch() * C)).ok())
        return s;
    std::pmr::vector<float> m(static_cast<size_t>(C), call_memory()), r(static_cast<size_t>(C), call_memory());
    for (int64_t c = 0; c < C && call.batch() > 0; c++) {
        int64_t e, st;
        collapse_1d(save_mean, &e, &st);
        m[c] = static_cast<float *>(save_mean.data)[c * st];
        collapse_1d(save_rstd, &e, &st);
        r[c] = static_cast<float *>(save_rstd.data)[c * st];
    }
    TensorView mv = TensorView::contiguous(m.data(), DType::f32, {C}), rv = TensorView::contiguous(r.data(), DType::f32, {C});
    return batch_norm_backward(dy, x, mv, rv, weight, false, dx, dweight, dbias, epilogue, bias, dresidual);
}

}  // namespace normgen

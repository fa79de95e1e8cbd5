// BatchNorm entry points: argument checks, one kernel call, and the running-statistics
// update (C values, done here rather than in the kernel so kernels never write inputs).
#include "channel_call.h"

#include <cmath>
#include <limits>

namespace normgen {

using namespace detail;


Status batch_norm_forward(const TensorView &x, const TensorView *running_mean, const TensorView *running_var,
                          const TensorView *weight, const TensorView *bias, bool training,
                          std::optional<double> momentum, double eps, const TensorView &y,
                          const TensorView *save_mean, const TensorView *save_rstd, int64_t *num_batches_tracked,
                          const Epilogue *epilogue, NanPolicy nan_policy) {
    ChannelCall call(x);
    Status s;
    const bool fused = epilogue && epilogue->active();
    if (!(s = call.check_x()).ok() || !(s = call.check_epilogue(epilogue)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() ||
        !(s = call.check_per_channel(bias, "bias", false)).ok() ||
        !(s = call.check_per_channel(running_mean, "running_mean", true)).ok() ||
        !(s = call.check_per_channel(running_var, "running_var", true)).ok() || !(s = check_eps(eps)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() || !(s = call.check_per_channel(save_mean, "save_mean", true)).ok() ||
        !(s = call.check_per_channel(save_rstd, "save_rstd", true)).ok())
        return s;
    if (!(s = check_nan_policy(nan_policy)).ok()) return s;
    if (!(s = check_bn_running_stats(call, running_mean, running_var, training, momentum, num_batches_tracked)).ok())
        return s;
    const bool updating = training && running_mean;
    const int64_t per_channel = call.batch() * call.spatial();
    // Running statistics are written when training (in place), read otherwise.
    const TensorView *rm_out = updating ? running_mean : nullptr, *rv_out = updating ? running_var : nullptr;
    const TensorView *rm_in = updating ? nullptr : running_mean, *rv_in = updating ? nullptr : running_var;
    s = check_no_overlap({{&y, "y"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}, {rm_out, "running_mean"},
                          {rv_out, "running_var"}},
                         {{&x, "x"}, {weight, "weight"}, {bias, "bias"}, {rm_in, "running_mean"}, {rv_in, "running_var"},
                          {fused ? epilogue->residual : nullptr, "residual"}});
    if (!s.ok()) return s;
    const int64_t C = call.channels();
    if (!training) {
        // The saved statistics of an inference forward are the running ones.
        std::pmr::vector<float> rm(static_cast<size_t>(C), call_memory()), rv(static_cast<size_t>(C), call_memory());
        s = copy_tensor(contiguous_like(*running_mean, rm.data()), *running_mean);
        if (s.ok()) s = copy_tensor(contiguous_like(*running_var, rv.data()), *running_var);
        for (int64_t c = 0; c < C; c++) rv[c] = static_cast<float>(1.0 / std::sqrt(double(rv[c]) + eps));
        if (s.ok() && save_mean) s = copy_tensor(*save_mean, contiguous_like(*save_mean, rm.data()));
        if (s.ok() && save_rstd) s = copy_tensor(*save_rstd, contiguous_like(*save_rstd, rv.data()));
        if (!s.ok() || per_channel == 0) return s;
    }
    call.bind_tensor(x, "x", false);
    call.bind_tensor(y, "y", true);
    // The fused kernels are affine: identities stand in for absent parameters.
    const bool affine = fused ? call.bind_affine(weight ? weight : &call.constant_channel(1.0f), bias)
                              : call.bind_affine(weight, bias);
    if (fused) call.bind_epilogue(*epilogue);
    call.bind_scalar("eps", static_cast<float>(eps));
    float *mean = nullptr, *var = nullptr;
    if (training) {
        mean = call.bind_channel_stat(save_mean, "stats.0");
        call.bind_channel_stat(save_rstd, "stats.1");
        var = call.bind_channel_stat(nullptr, "stats.2");
    } else {
        call.bind_channel(*running_mean, "running_mean", false);
        call.bind_channel(*running_var, "running_var", false);
    }
    call.fold_batch_into_spatial();
    s = call.run("batch_norm", "fwd",
                 ChannelCall::variant(fused ? epilogue : nullptr,
                                      Variant().set("affine", affine).set("training", training)));
    if (!s.ok() || !updating) return s;
    return update_running_stats(nan_policy, *running_mean, *running_var, mean, var, per_channel, momentum,
                                num_batches_tracked);
}

Status batch_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                           const TensorView &save_rstd, const TensorView *weight, bool training, const TensorView &dx,
                           const TensorView *dweight, const TensorView *dbias, const Epilogue *epilogue,
                           const TensorView *bias, const TensorView *dresidual) {
    ChannelCall call(x);
    Status s;
    // With an activation the kernel recomputes z; a residual alone passes dy through.
    const bool fused = epilogue && epilogue->activation != Activation::none;
    const TensorView *residual = epilogue ? epilogue->residual : nullptr;
    if (!(s = call.check_x()).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        !(s = call.check_fused_backward(epilogue, bias, dresidual)).ok() ||
        !(s = call.check_per_channel(&save_mean, "save_mean", true)).ok() ||
        !(s = call.check_per_channel(&save_rstd, "save_rstd", true)).ok() ||
        !(s = call.check_per_channel(weight, "weight", false)).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = call.check_per_channel(dweight, "dweight", false)).ok() ||
        !(s = call.check_per_channel(dbias, "dbias", false)).ok())
        return s;
    s = check_backward_outputs("BatchNorm", dx, weight, dweight, dbias,
                               {{&dy, "dy"}, {&x, "x"}, {&save_mean, "save_mean"}, {&save_rstd, "save_rstd"},
                                {bias, "bias"}, {residual, "residual"}});
    if (s.ok() && dresidual)
        s = check_no_overlap({{dresidual, "dresidual"}, {&dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}},
                             {{&dy, "dy"}, {&x, "x"}, {residual, "residual"}, {weight, "weight"}, {bias, "bias"}});
    if (!s.ok()) return s;
    if (call.batch() * call.spatial() == 0) {
        return zero_param_grads(dweight, dbias);
    }
    call.bind_tensor(dy, "dy", false);
    call.bind_tensor(x, "x", false);
    call.bind_dx(dx, dresidual, fused && residual);
    call.bind_channel(save_mean, "mean", false);
    call.bind_channel(save_rstd, "rstd", false);
    const bool w = call.bind_backward_params(weight, bias, dweight, dbias, fused ? epilogue : nullptr);
    call.fold_batch_into_spatial();
    s = call.run("batch_norm", "bwd",
                 ChannelCall::variant(fused ? epilogue : nullptr,
                                      Variant().set("has_weight", w).set("training", training)));
    if (s.ok() && !fused && dresidual) s = copy_tensor(*dresidual, dy);  // no activation: dz = dy
    return s;
}

}  // namespace normgen

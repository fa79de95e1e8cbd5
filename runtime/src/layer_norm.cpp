// LayerNorm entry points: argument checks, then one kernel call.
#include "row_call.h"

#include <limits>

namespace normgen {

using namespace detail;

namespace {

// layer_norm_forward, or with a residual add_layer_norm_forward (sum output `sum`).
Status forward(const TensorView &x, const TensorView *residual, const std::vector<int64_t> &normalized_shape,
               const TensorView *weight, const TensorView *bias, double eps, const TensorView &y,
               const TensorView *sum, const TensorView *mean, const TensorView *rstd) {
    RowCall call(x, normalized_shape);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_param(weight, "weight")).ok() ||
        !(s = call.check_param(bias, "bias")).ok() || !(s = check_eps(eps)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() || !(s = call.check_stat(mean, "mean")).ok() ||
        !(s = call.check_stat(rstd, "rstd")).ok())
        return s;
    if (residual && (!(s = call.check_like_x(*residual, "residual")).ok() || !(s = call.check_like_x(*sum, "s")).ok()))
        return s;
    s = check_no_overlap({{&y, "y"}, {sum, "s"}, {mean, "mean"}, {rstd, "rstd"}},
                         {{&x, "x"}, {residual, "residual"}, {weight, "weight"}, {bias, "bias"}});
    if (!s.ok() || call.rows() == 0) return s;
    if (call.cols() == 0) {  // empty rows: torch gives mean 0 and rstd NaN (0/0 variance)
        if (mean) s = fill_f32(*mean, 0.0f);
        if (s.ok() && rstd) s = fill_f32(*rstd, std::numeric_limits<float>::quiet_NaN());
        return s;
    }
    call.bind_rows(x, "x", false);
    call.bind_rows(y, "y", true);
    call.bind_stat(mean, "stats.0", true);
    call.bind_stat(rstd, "stats.1", true);
    call.bind_scalar("eps", static_cast<float>(eps));
    if (residual) {  // the fused kernels take both parameters: identities for absent ones
        call.bind_rows(*residual, "residual", false);
        call.bind_rows(*sum, "s", true);
        call.bind_param(weight ? *weight : call.constant_param(1.0f), "weight", false);
        call.bind_param(bias ? *bias : call.constant_param(0.0f), "bias", false);
        return call.run("layer_norm", "fwd", "add_residual=1,has_bias=1,has_weight=1");
    }
    if (weight) call.bind_param(*weight, "weight", false);
    if (bias) call.bind_param(*bias, "bias", false);
    return call.run("layer_norm", "fwd", variant_string({{"has_weight", weight != nullptr}, {"has_bias", bias != nullptr}}));
}

}  // namespace

Status layer_norm_forward(const TensorView &x, const std::vector<int64_t> &normalized_shape,
                          const TensorView *weight, const TensorView *bias, double eps, const TensorView &y,
                          const TensorView *mean, const TensorView *rstd) {
    return forward(x, nullptr, normalized_shape, weight, bias, eps, y, nullptr, mean, rstd);
}

Status add_layer_norm_forward(const TensorView &x, const TensorView &residual,
                              const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                              const TensorView *bias, double eps, const TensorView &y, const TensorView &s,
                              const TensorView *mean, const TensorView *rstd) {
    return forward(x, &residual, normalized_shape, weight, bias, eps, y, &s, mean, rstd);
}

namespace {

Status backward(const TensorView &dy, const TensorView *ds, const TensorView &x, const char *x_name,
                const TensorView &mean, const TensorView &rstd, const std::vector<int64_t> &normalized_shape,
                const TensorView *weight, const TensorView &dx, const TensorView *dweight, const TensorView *dbias) {
    RowCall call(x, normalized_shape);
    Status s;
    if (!(s = call.check_x(x_name)).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        (ds && !(s = call.check_like_x(*ds, "ds")).ok()) ||
        !(s = call.check_stat(&mean, "mean")).ok() || !(s = call.check_stat(&rstd, "rstd")).ok() ||
        !(s = call.check_param(weight, "weight")).ok() || !(s = call.check_like_x(dx, "dx")).ok() ||
        !(s = call.check_param(dweight, "dweight")).ok() || !(s = call.check_param(dbias, "dbias")).ok())
        return s;
    s = check_backward_outputs("LayerNorm", dx, weight, dweight, dbias,
                               {{&dy, "dy"}, {ds, "ds"}, {&x, x_name}, {&mean, "mean"}, {&rstd, "rstd"}});
    if (!s.ok()) return s;
    if (call.rows() == 0 || call.cols() == 0) {
        // Empty batch: dx is empty and the parameter gradients are sums over no rows.
        return zero_param_grads(dweight, dbias);
    }
    call.bind_rows(dy, "dy", false);
    call.bind_rows(x, "x", false);
    call.bind_rows(dx, "dx", true);
    call.bind_stat(&mean, "mean", false);
    call.bind_stat(&rstd, "rstd", false);
    if (ds) {  // the ds kernels take a weight: the identity for an absent one
        call.bind_rows(*ds, "ds", false);
        call.bind_param(weight ? *weight : call.constant_param(1.0f), "weight", false);
        call.bind_param_out(dweight, "dweight");
        call.bind_param_out(dbias, "dbias");
        return call.run("layer_norm", "bwd", "has_ds=1,has_weight=1");
    }
    if (weight) {
        call.bind_param(*weight, "weight", false);
        call.bind_param_out(dweight, "dweight");
        call.bind_param_out(dbias, "dbias");
    }
    return call.run("layer_norm", "bwd", variant_string({{"has_weight", weight != nullptr}}));
}

}  // namespace

Status layer_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &mean, const TensorView &rstd,
                           const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                           const TensorView &dx, const TensorView *dweight, const TensorView *dbias) {
    return backward(dy, nullptr, x, "x", mean, rstd, normalized_shape, weight, dx, dweight, dbias);
}

Status add_layer_norm_backward(const TensorView &dy, const TensorView *ds, const TensorView &s, const TensorView &mean,
                               const TensorView &rstd, const std::vector<int64_t> &normalized_shape,
                               const TensorView *weight, const TensorView &dx, const TensorView *dweight,
                               const TensorView *dbias) {
    return backward(dy, ds, s, "s", mean, rstd, normalized_shape, weight, dx, dweight, dbias);
}

}  // namespace normgen

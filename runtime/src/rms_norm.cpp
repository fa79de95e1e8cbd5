// RMSNorm entry points: argument checks, then one kernel call.
#include "row_call.h"

#include <limits>

namespace normgen {

using namespace detail;

namespace {

// rms_norm_forward, or with a residual add_rms_norm_forward (sum output `sum`).
Status forward(const TensorView &x, const TensorView *residual, const std::vector<int64_t> &normalized_shape,
               const TensorView *weight, std::optional<double> eps, const TensorView &y, const TensorView *sum,
               const TensorView *rstd) {
    RowCall call(x, normalized_shape);
    const double e = eps ? *eps : dtype_eps(x.dtype);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_param(weight, "weight")).ok() || !(s = check_eps(e)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() || !(s = call.check_stat(rstd, "rstd")).ok())
        return s;
    if (residual && (!(s = call.check_like_x(*residual, "residual")).ok() || !(s = call.check_like_x(*sum, "s")).ok()))
        return s;
    s = check_no_overlap({{&y, "y"}, {sum, "s"}, {rstd, "rstd"}}, {{&x, "x"}, {residual, "residual"}, {weight, "weight"}});
    if (!s.ok() || call.rows() == 0) return s;
    if (call.cols() == 0) {  // empty rows: mean of no squares is 0/0
        if (rstd) s = fill_f32(*rstd, std::numeric_limits<float>::quiet_NaN());
        return s;
    }
    call.bind_rows(x, "x", false);
    call.bind_rows(y, "y", true);
    call.bind_stat(rstd, "stats", true);
    call.bind_scalar("eps", static_cast<float>(e));
    if (residual) {  // the fused kernels take a weight: the identity for an absent one
        call.bind_rows(*residual, "residual", false);
        call.bind_rows(*sum, "s", true);
        call.bind_param(weight ? *weight : call.constant_param(1.0f), "weight", false);
        return call.run("rms_norm", "fwd", "add_residual=1,has_weight=1");
    }
    if (weight) call.bind_param(*weight, "weight", false);
    return call.run("rms_norm", "fwd", variant_string({{"has_weight", weight != nullptr}}));
}

Status backward(const TensorView &dy, const TensorView *ds, const TensorView &x, const char *x_name,
                const TensorView &rstd, const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                const TensorView &dx, const TensorView *dweight) {
    RowCall call(x, normalized_shape);
    Status s;
    if (!(s = call.check_x(x_name)).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        (ds && !(s = call.check_like_x(*ds, "ds")).ok()) ||
        !(s = call.check_stat(&rstd, "rstd")).ok() || !(s = call.check_param(weight, "weight")).ok() ||
        !(s = call.check_like_x(dx, "dx")).ok() || !(s = call.check_param(dweight, "dweight")).ok())
        return s;
    s = check_backward_outputs("RMSNorm", dx, weight, dweight, nullptr,
                               {{&dy, "dy"}, {ds, "ds"}, {&x, x_name}, {&rstd, "rstd"}});
    if (!s.ok()) return s;
    if (call.rows() == 0 || call.cols() == 0) {
        return zero_param_grads(dweight, nullptr);
    }
    call.bind_rows(dy, "dy", false);
    call.bind_rows(x, "x", false);
    call.bind_rows(dx, "dx", true);
    call.bind_stat(&rstd, "rstd", false);
    if (ds) {
        call.bind_rows(*ds, "ds", false);
        call.bind_param(weight ? *weight : call.constant_param(1.0f), "weight", false);
        call.bind_param_out(dweight, "dweight");
        return call.run("rms_norm", "bwd", "has_ds=1,has_weight=1");
    }
    if (weight) {
        call.bind_param(*weight, "weight", false);
        call.bind_param_out(dweight, "dweight");
    }
    return call.run("rms_norm", "bwd", variant_string({{"has_weight", weight != nullptr}}));
}

}  // namespace

Status rms_norm_forward(const TensorView &x, const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                        std::optional<double> eps, const TensorView &y, const TensorView *rstd) {
    return forward(x, nullptr, normalized_shape, weight, eps, y, nullptr, rstd);
}

Status add_rms_norm_forward(const TensorView &x, const TensorView &residual,
                            const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                            std::optional<double> eps, const TensorView &y, const TensorView &s, const TensorView *rstd) {
    return forward(x, &residual, normalized_shape, weight, eps, y, &s, rstd);
}

Status rms_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &rstd,
                         const std::vector<int64_t> &normalized_shape, const TensorView *weight, const TensorView &dx,
                         const TensorView *dweight) {
    return backward(dy, nullptr, x, "x", rstd, normalized_shape, weight, dx, dweight);
}

Status add_rms_norm_backward(const TensorView &dy, const TensorView *ds, const TensorView &s, const TensorView &rstd,
                             const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                             const TensorView &dx, const TensorView *dweight) {
    return backward(dy, ds, s, "s", rstd, normalized_shape, weight, dx, dweight);
}

}  // namespace normgen

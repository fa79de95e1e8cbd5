// RMSNorm entry points: argument checks, then one kernel call.
#include "row_call.h"

#include <limits>

namespace normgen {

using namespace detail;

Status rms_norm_forward(const TensorView &x, const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                        std::optional<double> eps, const TensorView &y, const TensorView *rstd) {
    RowCall call(x, normalized_shape);
    const double e = eps ? *eps : dtype_eps(x.dtype);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_param(weight, "weight")).ok() || !(s = check_eps(e)).ok() ||
        !(s = call.check_like_x(y, "y")).ok() || !(s = call.check_stat(rstd, "rstd")).ok())
        return s;
    s = check_no_overlap({{&y, "y"}, {rstd, "rstd"}}, {{&x, "x"}, {weight, "weight"}});
    if (!s.ok() || call.rows() == 0) return s;
    if (call.cols() == 0) {  // empty rows: mean of no squares is 0/0
        if (rstd) fill_f32(*rstd, std::numeric_limits<float>::quiet_NaN());
        return s;
    }
    call.bind_rows(x, "x", false);
    call.bind_rows(y, "y", true);
    if (weight) call.bind_param(*weight, "weight", false);
    call.bind_stat(rstd, "stats", true);
    call.bind_scalar("eps", static_cast<float>(e));
    return call.run("rms_norm", "fwd", variant_string({{"has_weight", weight != nullptr}}));
}

Status rms_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &rstd,
                         const std::vector<int64_t> &normalized_shape, const TensorView *weight, const TensorView &dx,
                         const TensorView *dweight) {
    RowCall call(x, normalized_shape);
    Status s;
    if (!(s = call.check_x()).ok() || !(s = call.check_like_x(dy, "dy")).ok() ||
        !(s = call.check_stat(&rstd, "rstd")).ok() || !(s = call.check_param(weight, "weight")).ok() ||
        !(s = call.check_like_x(dx, "dx")).ok() || !(s = call.check_param(dweight, "dweight")).ok())
        return s;
    s = check_backward_outputs("RMSNorm", dx, weight, dweight, nullptr, {{&dy, "dy"}, {&x, "x"}, {&rstd, "rstd"}});
    if (!s.ok()) return s;
    if (call.rows() == 0 || call.cols() == 0) {
        zero_param_grads(dweight, nullptr);
        return Status::OK();
    }
    call.bind_rows(dy, "dy", false);
    call.bind_rows(x, "x", false);
    call.bind_rows(dx, "dx", true);
    call.bind_stat(&rstd, "rstd", false);
    if (weight) {
        call.bind_param(*weight, "weight", false);
        call.bind_param_out(dweight, "dweight");
    }
    return call.run("rms_norm", "bwd", variant_string({{"has_weight", weight != nullptr}}));
}

}  // namespace normgen

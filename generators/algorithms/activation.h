// The fused epilogue of the channel-wise norms: y = act(norm(x) + residual), and its
// derivative for the backward. The activation is a run-time code, so one kernel
// serves all of them; schedules specialize the output loops per code (a select on a
// constant folds away), which does not change what is computed.
#pragma once

#include "common.h"

namespace normgen::alg {

// Activation codes (the kernel's `activation` argument). The runtime passes none and
// relu as leaky_relu with slope 1 and 0 (one piecewise-linear case), so schedules
// specialize on `specialized_activations` only.
enum ActivationCode : int { act_none = 0, act_relu, act_leaky_relu, act_silu, act_gelu, act_gelu_tanh, act_count };
constexpr ActivationCode specialized_activations[] = {act_leaky_relu, act_silu, act_gelu, act_gelu_tanh};

struct Epilogue {
    Func residual;        // added before the activation; undefined: none
    Expr activation;      // int32 code; undefined: no activation
    Expr negative_slope;  // leaky_relu's slope
    bool active() const { return residual.defined() || activation.defined(); }
};

namespace detail {
inline Expr gelu_tanh_inner(const Expr &z) {  // sqrt(2/pi) (z + 0.044715 z^3)
    return 0.7978845608f * (z + 0.044715f * z * z * z);
}
// The logistic function 1 / (1 + e^-z). Halide's fast_exp is accurate to ~2 ulp for
// normal results (exp's exact polynomial cost 2x the whole SiLU-fused GroupNorm) but is
// undefined past float overflow: the clamp keeps it in range (e^88 ~ 1.6e38; beyond,
// the logistic is 0 or 1 to float precision anyway).
inline Expr sigmoid(const Expr &z) {
    return 1.0f / (1.0f + Halide::fast_exp(Halide::clamp(-z, -88.0f, 88.0f)));
}
}  // namespace detail

// act(z) for the run-time code `a` (exact GELU uses erf; gelu_tanh torch's tanh form).
inline Expr activate(const Expr &a, const Expr &z, const Expr &slope) {
    using Halide::select;
    Expr sig = detail::sigmoid(z);
    return select(a == act_relu, Halide::max(z, 0.0f),
                  a == act_leaky_relu, select(z > 0.0f, z, z * slope),
                  a == act_silu, z * sig,
                  a == act_gelu, 0.5f * z * (1.0f + Halide::erf(z * 0.70710678f)),
                  a == act_gelu_tanh, 0.5f * z * (1.0f + Halide::tanh(detail::gelu_tanh_inner(z))),
                  z);
}

// d act / dz at z.
inline Expr activate_grad(const Expr &a, const Expr &z, const Expr &slope) {
    using Halide::select;
    Expr sig = detail::sigmoid(z);
    Expr cdf = 0.5f * (1.0f + Halide::erf(z * 0.70710678f));
    Expr pdf = 0.39894228f * Halide::exp(-0.5f * z * z);
    Expr t = Halide::tanh(detail::gelu_tanh_inner(z));
    Expr dinner = 0.7978845608f * (1.0f + 3.0f * 0.044715f * z * z);
    return select(a == act_relu, select(z > 0.0f, 1.0f, 0.0f),
                  a == act_leaky_relu, select(z > 0.0f, 1.0f, slope),
                  a == act_silu, sig * (1.0f + z * (1.0f - sig)),
                  a == act_gelu, cdf + z * pdf,
                  a == act_gelu_tanh, 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * dinner,
                  1.0f);
}

// y = act(z + residual) for an epilogue (z itself when inactive).
inline Expr apply_epilogue(const Epilogue &e, Expr z, const std::vector<Expr> &at) {
    if (e.residual.defined()) z = z + widen(e.residual(at));
    if (e.activation.defined()) z = activate(e.activation, z, e.negative_slope);
    return z;
}

}  // namespace normgen::alg

// RMSNorm over the trailing normalized dims, flattened to rows of n columns
// (torch.nn.functional.rms_norm semantics).
//   forward:  y = x * rstd * w,  rstd = 1/sqrt(mean_k(x^2) + eps)
//   backward: xhat = x * rstd, g = dy * w,
//             dx = rstd * (g - xhat * mean_k(g * xhat)),  dweight = sum_r dy * xhat
#pragma once

#include "row_norm.h"

namespace normgen::alg {

// residual / ds (optional): as layer_norm_forward / layer_norm_backward (add_rms_norm).
inline RowNormForward rms_norm_forward(const Func &x, const Func &w, bool has_weight, const Expr &n,
                                       const Expr &eps, const Type &out_type, const Func &residual = Func()) {
    Var j = col_var(), r = row_var();
    RowNormForward p;
    row_input(p, x, residual, out_type, "rms");
    RowSquares s = row_squares(p.x32, n, "rms");
    p.reductions = {{s.sumsq, s.k}};
    Func rstd("rms_rstd");
    rstd(r) = 1.0f / Halide::sqrt(s.sumsq(r) / Halide::cast<float>(n) + eps);
    p.per_row = {rstd};
    Expr v = p.x32(j, r) * rstd(r);
    if (has_weight) v = v * widen(w(j));
    p.y = Func("y");
    p.y(j, r) = narrow(v, out_type);
    p.stats = Func("stats");
    p.stats(r) = rstd(r);
    return p;
}

inline RowNormBackward rms_norm_backward(const Func &dy, const Func &x, const Func &rstd, const Func &w,
                                         bool has_weight, const Expr &n, const Expr &rows, const Type &out_type,
                                         const Func &ds = Func()) {
    Var j = col_var(), r = row_var();
    RowNormBackward p;
    p.streamed = backward_streamed(dy, x, ds);
    Func dy32("rms_dy32"), xhat("rms_xhat"), g("rms_g");
    dy32(j, r) = widen(dy(j, r));
    xhat(j, r) = widen(x(j, r)) * rstd(r);
    g(j, r) = has_weight ? dy32(j, r) * widen(w(j)) : dy32(j, r);
    p.k = RDom(0, n, "rms_bwd_k");
    p.row_sums = Func("rms_row_sums");
    p.row_sums(r) = 0.0f;
    p.row_sums(r) += g(p.k, r) * xhat(p.k, r);
    Expr inv_n = 1.0f / Halide::cast<float>(n);
    p.dx = Func("dx");
    p.dx(j, r) = narrow(plus_ds(rstd(r) * (g(j, r) - xhat(j, r) * p.row_sums(r) * inv_n), ds), out_type);
    if (has_weight) {
        p.rows = RDom(0, rows, "rms_bwd_rows");
        p.col_sums = Func("rms_col_sums");
        p.col_sums(j) = 0.0f;
        p.col_sums(j) += dy32(j, p.rows) * xhat(j, p.rows);
        Func dweight("dweight");
        dweight(j) = narrow(p.col_sums(j), out_type);
        p.param_grads = {dweight};
    }
    return p;
}

}  // namespace normgen::alg

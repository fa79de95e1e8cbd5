// LayerNorm over the trailing normalized dims, flattened to rows of n columns
// (torch.nn.functional.layer_norm semantics; biased variance).
//   forward:  y = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)
//   backward: xhat = (x - mean) * rstd, g = dy * w,
//             dx = rstd * (g - mean_k(g) - xhat * mean_k(g * xhat)),
//             dweight = sum_r dy * xhat, dbias = sum_r dy
#pragma once

#include "row_norm.h"

namespace normgen::alg {

// residual (optional): normalize s = x + residual and output s (add_layer_norm).
inline RowNormForward layer_norm_forward(const Func &x, const Func &w, const Func &b, bool has_weight,
                                         bool has_bias, const Expr &n, const Expr &eps, const Type &out_type,
                                         const Func &residual = Func()) {
    Var j = col_var(), r = row_var();
    RowNormForward p;
    row_input(p, x, residual, out_type, "ln");
    Moments m = row_moments(p.x32, n, "ln");
    p.reductions = {{m.sum, m.sum_k}, {m.dev, m.k}};
    Func rstd("ln_rstd");
    rstd(r) = 1.0f / Halide::sqrt(m.var(r) + eps);
    p.per_row = {m.mean, rstd};
    Expr v = (p.x32(j, r) - m.mean(r)) * rstd(r);
    if (has_weight) v = v * widen(w(j));
    if (has_bias) v = v + widen(b(j));
    p.y = Func("y");
    p.y(j, r) = narrow(v, out_type);
    p.stats = Func("stats");
    p.stats(r) = Tuple(m.mean(r), rstd(r));
    return p;
}

// ds (optional): the gradient reaching the normalized input from elsewhere, added to
// dx (add_layer_norm's backward, where x is the saved sum s).
inline RowNormBackward layer_norm_backward(const Func &dy, const Func &x, const Func &mean, const Func &rstd,
                                           const Func &w, bool has_weight, const Expr &n, const Expr &rows,
                                           const Type &out_type, const Func &ds = Func()) {
    Var j = col_var(), r = row_var();
    RowNormBackward p;
    p.streamed = backward_streamed(dy, x, ds);
    Func dy32("ln_dy32"), xhat("ln_xhat"), g("ln_g");
    dy32(j, r) = widen(dy(j, r));
    xhat(j, r) = (widen(x(j, r)) - mean(r)) * rstd(r);
    g(j, r) = has_weight ? dy32(j, r) * widen(w(j)) : dy32(j, r);
    p.k = RDom(0, n, "ln_bwd_k");
    p.row_sums = Func("ln_row_sums");
    p.row_sums(r) = Tuple(0.0f, 0.0f);
    p.row_sums(r) = Tuple(p.row_sums(r)[0] + g(p.k, r), p.row_sums(r)[1] + g(p.k, r) * xhat(p.k, r));
    Expr inv_n = 1.0f / Halide::cast<float>(n);
    p.dx = Func("dx");
    p.dx(j, r) = narrow(plus_ds(rstd(r) * (g(j, r) - (p.row_sums(r)[0] + xhat(j, r) * p.row_sums(r)[1]) * inv_n), ds),
                        out_type);
    if (has_weight) {
        p.rows = RDom(0, rows, "ln_bwd_rows");
        p.col_sums = Func("ln_col_sums");
        p.col_sums(j) = Tuple(0.0f, 0.0f);
        p.col_sums(j) = Tuple(p.col_sums(j)[0] + dy32(j, p.rows) * xhat(j, p.rows), p.col_sums(j)[1] + dy32(j, p.rows));
        Func dweight("dweight"), dbias("dbias");
        dweight(j) = narrow(p.col_sums(j)[0], out_type);
        dbias(j) = narrow(p.col_sums(j)[1], out_type);
        p.param_grads = {dweight, dbias};
    }
    return p;
}

}  // namespace normgen::alg

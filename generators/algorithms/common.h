// Shared building blocks of every normgen algorithm: element-type handling and the
// one moments/reduction helper all families use. Pure algorithm: no schedule, no
// target, no vector width. Every Func and Var carries a name.
#pragma once

#include "Halide.h"

#include <stdexcept>
#include <string>

namespace normgen::alg {

using Halide::Expr;
using Halide::Func;
using Halide::RDom;
using Halide::Tuple;
using Halide::Type;
using Halide::Var;

// Loop variables shared by all row-wise families. dim 0 (innermost in memory for the
// contiguous layout) is the column `j` within a normalized row, dim 1 the row `r`.
inline Var col_var() { return Var("j"); }
inline Var row_var() { return Var("r"); }

// Storage dtype names used by the kernel list and the runtime: f32, f16, bf16.
inline Type storage_type(const std::string &dtype) {
    if (dtype == "f32") return Halide::Float(32);
    if (dtype == "f16") return Halide::Float(16);
    if (dtype == "bf16") return Halide::BFloat(16);
    throw std::invalid_argument("normgen: unknown dtype '" + dtype + "' (expected f32, f16 or bf16)");
    return Type();
}

// Widen any storage value to the float32 compute type.
inline Expr widen(const Expr &e) { return Halide::cast<float>(e); }

// Round a float32 result once to the storage type.
inline Expr narrow(const Expr &e, const Type &t) { return Halide::cast(t, e); }

// Per-row mean and (biased) variance of x(k, r) over k in [0, n), in float32.
// Corrected two-pass algorithm (Chan, Golub & LeVeque 1983): pass 1 gives a
// provisional mean m0; pass 2 sums d = x - m0 and d^2. Then mean = m0 + sum(d)/n and
// M2 = sum(d^2) - sum(d)^2/n; sum(d) is tiny, so neither step cancels, unlike
// E[x^2] - E[x]^2. The row is cache-resident after pass 1, so pass 2 is free in a
// memory-bound kernel.
struct RowMoments {
    Func sum;    // pass 1: sum_k x          (update over `k`; the schedule rfactors it)
    Func dev;    // pass 2: (sum d, sum d^2) (update over `k`)
    Func mean;   // corrected mean
    Func var;    // biased variance, clamped at 0
    RDom k;      // the reduction domain over columns
};

inline RowMoments row_moments(const Func &x32, const Expr &n, const std::string &prefix) {
    Var r = row_var();
    RowMoments m;
    m.k = RDom(0, n, prefix + "_k");
    Expr nf = Halide::cast<float>(n);
    m.sum = Func(prefix + "_sum");
    m.sum(r) = 0.0f;
    m.sum(r) += x32(m.k, r);
    Func m0(prefix + "_mean0");
    m0(r) = m.sum(r) / nf;
    m.dev = Func(prefix + "_dev");
    m.dev(r) = Tuple(0.0f, 0.0f);
    // strict_float: Halide otherwise lets LLVM reassociate float math, which may fold
    // sum(x - m0) back into sum(x) - n*m0 and undo the correction.
    Expr d = Halide::strict_float(x32(m.k, r) - m0(r));
    m.dev(r) = Tuple(m.dev(r)[0] + d, m.dev(r)[1] + d * d);
    m.mean = Func(prefix + "_mean");
    m.mean(r) = Halide::strict_float(m0(r) + m.dev(r)[0] / nf);
    m.var = Func(prefix + "_var");
    m.var(r) = Halide::max(m.dev(r)[1] - m.dev(r)[0] * m.dev(r)[0] / nf, 0.0f) / nf;
    return m;
}

// Per-row sum of squares over k in [0, n) (RMSNorm). No cancellation to guard against.
struct RowSquares {
    Func sumsq;  // sum_k x^2 (update over `k`)
    RDom k;
};

inline RowSquares row_squares(const Func &x32, const Expr &n, const std::string &prefix) {
    Var r = row_var();
    RowSquares s;
    s.k = RDom(0, n, prefix + "_k");
    s.sumsq = Func(prefix + "_sumsq");
    s.sumsq(r) = 0.0f;
    Expr v = x32(s.k, r);
    s.sumsq(r) += v * v;
    return s;
}

}  // namespace normgen::alg

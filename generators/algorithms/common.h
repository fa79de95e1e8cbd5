// Shared building blocks of every normgen algorithm: element-type handling and the
// one moments/reduction helper all families use. Pure algorithm: no schedule, no
// target, no vector width. Every Func and Var carries a name.
#pragma once

#include "Halide.h"

#include <stdexcept>
#include <string>
#include <vector>

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

// Widen any storage value to the float32 compute type. bfloat16 is the top half of a
// float32, so its widening is a shift of the bits (exact); written out because
// Halide 21's PTX back end cannot cast bfloat16 at all (LLVM "Invalid cast!").
inline Expr widen(const Expr &e) {
    if (e.type().is_bfloat())
        return Halide::reinterpret<float>(Halide::cast<uint32_t>(Halide::reinterpret<uint16_t>(e)) << 16);
    return Halide::cast<float>(e);
}

// Round a float32 result once to the storage type. To bfloat16: round to nearest even
// on the bits (what hardware conversions do), NaN kept a (quiet) NaN.
inline Expr narrow(const Expr &e, const Type &t) {
    if (!t.is_bfloat()) return Halide::cast(t, e);
    Expr bits = Halide::reinterpret<uint32_t>(Halide::cast<float>(e));
    Expr rounded = (bits + (Halide::cast<uint32_t>(0x7fff) + ((bits >> 16) & 1))) >> 16;
    Expr is_nan = (bits & 0x7fffffff) > 0x7f800000;
    return Halide::reinterpret(t, Halide::cast<uint16_t>(Halide::select(is_nan, (bits >> 16) | 0x40, rounded)));
}

// Mean and (biased) variance of v(k..., keys...) over the RDom k, per key, in float32.
// Corrected two-pass algorithm (Chan, Golub & LeVeque 1983): pass 1 gives a
// provisional mean m0; pass 2 sums d = v - m0 and d^2. Then mean = m0 + sum(d)/count
// and M2 = sum(d^2) - sum(d)^2/count; sum(d) is tiny, so neither step cancels, unlike
// E[x^2] - E[x]^2. Schedules keep the reduced data cache-resident for pass 2.
struct Moments {
    Func sum;    // pass 1: sum v over k (or over the pilot domain); the schedule rfactors it
    Func shift;  // m0 = the provisional mean that pass 2 subtracts
    Func dev;    // pass 2: (sum d, sum d^2) (update over `k`)
    Func mean;   // corrected mean
    Func var;    // biased variance, clamped at 0
    RDom k;      // the reduction domain
    RDom sum_k;  // pass 1's domain: k, or the pilot domain
};

// With a `pilot` domain (a sub-domain of k), m0 is the mean over the pilot only, so the
// full data is read once (the "shifted data" algorithm, shifted by a sample mean): the
// correction still makes the result exact up to rounding, and rounding grows only with
// (m0 - mean)^2 / var, which a pilot of a few hundred values keeps near 1.
inline Moments moments(const Func &v, const RDom &k, const std::vector<Var> &keys, const Expr &count,
                       const std::string &prefix, const RDom &pilot = RDom(), const Expr &pilot_count = Expr()) {
    std::vector<Expr> at;  // v's arguments: the RDom's dims, then the keys
    for (int i = 0; i < k.dimensions(); i++) at.push_back(k[i]);
    for (const Var &key : keys) at.push_back(key);
    std::vector<Expr> key_args(keys.begin(), keys.end());
    Moments m;
    m.k = k;
    Expr nf = Halide::cast<float>(count);
    m.sum = Func(prefix + "_sum");
    m.sum(key_args) = 0.0f;
    m.sum_k = pilot.defined() ? pilot : k;
    Func m0(prefix + "_mean0");
    m.shift = m0;
    if (pilot.defined()) {
        std::vector<Expr> pat;
        for (int i = 0; i < pilot.dimensions(); i++) pat.push_back(pilot[i]);
        for (const Var &key : keys) pat.push_back(key);
        m.sum(key_args) += v(pat);
        m0(key_args) = m.sum(key_args) / Halide::cast<float>(pilot_count);
    } else {
        m.sum(key_args) += v(at);
        m0(key_args) = m.sum(key_args) / nf;
    }
    m.dev = Func(prefix + "_dev");
    m.dev(key_args) = Tuple(0.0f, 0.0f);
    // strict_float: Halide otherwise lets LLVM reassociate float math, which may fold
    // sum(v - m0) back into sum(v) - n*m0 and undo the correction.
    Expr d = Halide::strict_float(v(at) - m0(key_args));
    m.dev(key_args) = Tuple(m.dev(key_args)[0] + d, m.dev(key_args)[1] + d * d);
    m.mean = Func(prefix + "_mean");
    m.mean(key_args) = Halide::strict_float(m0(key_args) + m.dev(key_args)[0] / nf);
    m.var = Func(prefix + "_var");
    m.var(key_args) = Halide::max(m.dev(key_args)[1] - m.dev(key_args)[0] * m.dev(key_args)[0] / nf, 0.0f) / nf;
    return m;
}

// Per-row moments of x32(k, r) over k in [0, n): the row-wise families' case, shifted
// by the mean of the row's first (up to) 256 values, so the row is read once for its
// statistics.
inline Moments row_moments(const Func &x32, const Expr &n, const std::string &prefix) {
    Expr pilot = Halide::min(n, 256);
    return moments(x32, RDom(0, n, prefix + "_k"), {row_var()}, n, prefix, RDom(0, pilot, prefix + "_pilot"), pilot);
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

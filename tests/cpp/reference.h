// Float64 references for the tests, and storage-type conversions (float16 and
// bfloat16 bit patterns, round to nearest even) independent of Halide.
#pragma once

#include "normgen/normgen.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <ostream>

namespace normgen {
// gtest prints kernel parameters with this instead of their bytes.
inline void PrintTo(const KernelInfo &k, std::ostream *os) { *os << k.name; }
}  // namespace normgen

namespace ref {

// n normal float32 values (mean `mean`, standard deviation 1) from `seed`.
inline std::vector<float> randn(size_t n, unsigned seed, float mean) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(mean, 1.f);
    std::vector<float> v(n);
    for (auto &x : v) x = nd(rng);
    return v;
}

// A contiguous float32 view of `v`.
inline normgen::TensorView view(std::vector<float> &v, std::initializer_list<int64_t> shape) {
    return normgen::TensorView::contiguous(v.data(), normgen::DType::f32, shape);
}

// A kernel table's dtype name as a DType.
// The CPU kernels of the table (the CUDA ones are tested in test_cuda.cpp, on a GPU).
inline bool cpu_kernel(const normgen::KernelInfo &k) { return std::string(k.target) == "cpu"; }

inline normgen::DType dtype_of(const std::string &s) {
    if (s == "f16") return normgen::DType::f16;
    if (s == "bf16") return normgen::DType::bf16;
    return normgen::DType::f32;
}

// The sizes a per-kernel test runs at: a tuned kernel's own shape ("AxBxC", what the
// dispatcher matches), else `fallback`.
inline std::vector<int64_t> kernel_shape(const normgen::KernelInfo &k, std::vector<int64_t> fallback) {
    if (!*k.shape) return fallback;
    std::vector<int64_t> out;
    const char *p = k.shape;
    while (*p) {
        out.push_back(std::strtoll(p, const_cast<char **>(&p), 10));
        if (*p == 'x') p++;
    }
    return out;
}

// Tuned kernels are dispatched only on CPUs with the feature they were tuned on (their
// `cpu`); the per-kernel tests run every kernel through dispatch, on any machine (the
// runtime reads this once, at the first dispatch, after static initialization).
inline const bool kTunedKernelsOnAnyCpu = (::setenv("NORMGEN_TUNED_ANY_CPU", "1", 0), true);

// A tuned kernel is dispatched only on the thread count it was tuned at: a per-kernel
// test sets that count for its scope (and restores the previous one).
class KernelThreads {
public:
    explicit KernelThreads(const normgen::KernelInfo &k) : old_(k.threads ? normgen::set_num_threads(k.threads) : 0) {}
    ~KernelThreads() {
        if (old_) normgen::set_num_threads(old_);
    }
    KernelThreads(const KernelThreads &) = delete;
    KernelThreads &operator=(const KernelThreads &) = delete;

private:
    int old_;
};

// Runs check(k, {N, C, S}) at each size a channel-wise per-kernel test covers: a tuned
// kernel's own shape (at its thread count), else each of `generic` (one with C = 64, a
// multiple of every target's vector width, so the schedules' code specialized on C runs
// too: channels-last chunks).
template <typename Check>
void for_each_kernel_shape(const normgen::KernelInfo &k, const std::vector<std::vector<int64_t>> &generic,
                           Check check) {
    const KernelThreads threads(k);
    const std::vector<std::vector<int64_t>> shapes =
        *k.shape ? std::vector<std::vector<int64_t>>{kernel_shape(k, {})} : generic;
    for (const auto &ncs : shapes) {
        std::string name;
        for (int64_t d : ncs) name += (name.empty() ? "" : "x") + std::to_string(d);
        SCOPED_TRACE("shape " + name);
        check(k, ncs);
    }
}

inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffffu;
    if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return static_cast<uint16_t>(sign);
        mant |= 0x800000u;
        uint32_t shift = static_cast<uint32_t>(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return static_cast<uint16_t>(h);
}

inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {
            int e = -1;
            do {
                mant <<= 1;
                e++;
            } while (!(mant & 0x400u));
            x = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000u | mant << 13;
    } else {
        x = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
    uint32_t lsb = (x >> 16) & 1;
    x += 0x7fffu + lsb;
    return static_cast<uint16_t>(x >> 16);
}

inline float bf16_to_f32(uint16_t h) {
    uint32_t x = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

// Unit roundoff of a storage dtype.
inline double unit_roundoff(normgen::DType t) {
    switch (t) {
    case normgen::DType::f32: return std::ldexp(1.0, -24);
    case normgen::DType::f16: return std::ldexp(1.0, -11);
    case normgen::DType::bf16: return std::ldexp(1.0, -8);
    }
    return 0;
}

// A host tensor in a storage dtype, kept alongside its exact (rounded) double values.
struct Tensor {
    normgen::DType dtype;
    std::vector<int64_t> shape;
    std::vector<unsigned char> bytes;
    std::vector<double> values;  // the stored values, exactly

    Tensor(normgen::DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        bytes.assign(static_cast<size_t>(n) * normgen::dtype_size(t), 0);
        values.assign(static_cast<size_t>(n), 0.0);
    }
    int64_t numel() const { return static_cast<int64_t>(values.size()); }
    void set(int64_t i, double v) {
        float f = static_cast<float>(v);
        switch (dtype) {
        case normgen::DType::f32:
            std::memcpy(&bytes[i * 4], &f, 4);
            values[i] = f;
            break;
        case normgen::DType::f16: {
            uint16_t h = f32_to_f16(f);
            std::memcpy(&bytes[i * 2], &h, 2);
            values[i] = f16_to_f32(h);
            break;
        }
        case normgen::DType::bf16: {
            uint16_t h = f32_to_bf16(f);
            std::memcpy(&bytes[i * 2], &h, 2);
            values[i] = bf16_to_f32(h);
            break;
        }
        }
    }
    double get(int64_t i) const {
        switch (dtype) {
        case normgen::DType::f32: {
            float f;
            std::memcpy(&f, &bytes[i * 4], 4);
            return f;
        }
        case normgen::DType::f16: {
            uint16_t h;
            std::memcpy(&h, &bytes[i * 2], 2);
            return f16_to_f32(h);
        }
        case normgen::DType::bf16: {
            uint16_t h;
            std::memcpy(&h, &bytes[i * 2], 2);
            return bf16_to_f32(h);
        }
        }
        return 0;
    }
    normgen::TensorView view() { return normgen::TensorView::contiguous(bytes.data(), dtype, shape); }
};

// LayerNorm / RMSNorm over rows of `n` in float64.
struct RowStats {
    std::vector<double> mean, rstd;
};

inline RowStats layer_norm_stats(const std::vector<double> &x, int64_t rows, int64_t n, double eps, bool rms) {
    RowStats s;
    for (int64_t r = 0; r < rows; r++) {
        double m = 0, v = 0;
        if (!rms) {
            for (int64_t j = 0; j < n; j++) m += x[r * n + j];
            m /= n;
        }
        for (int64_t j = 0; j < n; j++) {
            double d = x[r * n + j] - m;
            v += d * d;
        }
        v /= n;
        s.mean.push_back(m);
        s.rstd.push_back(1.0 / std::sqrt(v + eps));
    }
    return s;
}

// Forward output: y = (x - mean) * rstd * w + b (mean = 0 for RMSNorm).
inline std::vector<double> row_norm_forward(const std::vector<double> &x, const RowStats &s, const double *w,
                                            const double *b, int64_t rows, int64_t n) {
    std::vector<double> y(x.size());
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) {
            double v = (x[r * n + j] - s.mean[r]) * s.rstd[r];
            if (w) v *= w[j];
            if (b) v += b[j];
            y[r * n + j] = v;
        }
    return y;
}

struct RowGrads {
    std::vector<double> dx, dw, db;
};

inline RowGrads row_norm_backward(const std::vector<double> &dy, const std::vector<double> &x, const RowStats &s,
                                  const double *w, int64_t rows, int64_t n, bool rms) {
    RowGrads g;
    g.dx.resize(x.size());
    g.dw.assign(n, 0.0);
    g.db.assign(n, 0.0);
    for (int64_t r = 0; r < rows; r++) {
        double sg = 0, sgx = 0;
        for (int64_t j = 0; j < n; j++) {
            double xh = (x[r * n + j] - s.mean[r]) * s.rstd[r];
            double gj = dy[r * n + j] * (w ? w[j] : 1.0);
            sg += gj;
            sgx += gj * xh;
            g.dw[j] += dy[r * n + j] * xh;
            g.db[j] += dy[r * n + j];
        }
        for (int64_t j = 0; j < n; j++) {
            double xh = (x[r * n + j] - s.mean[r]) * s.rstd[r];
            double gj = dy[r * n + j] * (w ? w[j] : 1.0);
            g.dx[r * n + j] = s.rstd[r] * (gj - (rms ? 0.0 : sg / n) - xh * sgx / n);
        }
    }
    return g;
}

}  // namespace ref

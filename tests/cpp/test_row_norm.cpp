// LayerNorm and RMSNorm through the public C++ API against float64 references.
// Every row-norm kernel in the kernel list is exercised (parametrized over
// normgen::kernels()), on row lengths below, at, above and off the vector width.
#include "reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <random>
#include <string>

using normgen::DType;
using normgen::KernelInfo;
using normgen::Status;
using normgen::TensorView;

namespace {

using ref::dtype_of;

bool flag(const KernelInfo &k, const std::string &key) {
    return std::string(k.variant).find(key + "=1") != std::string::npos;
}

// Storage of a (rows, cols) tensor whose column stride is `cs` (1: contiguous).
struct Strided {
    ref::Tensor t;  // backing store of rows x cols*cs elements
    int64_t rows, cols, cs;
    Strided(DType d, int64_t r, int64_t c, int64_t cs_) : t(d, {r, c * cs_}), rows(r), cols(c), cs(cs_) {}
    void set(int64_t r, int64_t c, double v) { t.set(r * cols * cs + c * cs, v); }
    double get(int64_t r, int64_t c) const { return t.get(r * cols * cs + c * cs); }
    double value(int64_t r, int64_t c) const { return t.values[r * cols * cs + c * cs]; }
    TensorView view() {
        return TensorView::strided(t.bytes.data(), t.dtype, {rows, cols}, {cols * cs, cs});
    }
    std::vector<double> values() const {
        std::vector<double> v;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) v.push_back(value(r, c));
        return v;
    }
};

// |got - want| <= 2 u_dtype |want| + k u_f32 log2(len + 2) max|want|: rounding to the
// storage type plus float32 accumulation whose error grows with the reduction length.
void expect_close(double got, double want, DType dtype, int64_t len, double scale, const std::string &what) {
    const double tol = 2 * ref::unit_roundoff(dtype) * std::fabs(want) +
                       16 * ref::unit_roundoff(DType::f32) * std::log2(double(len) + 2) * (scale + 1e-30) +
                       ref::unit_roundoff(dtype) * 1e-3;
    ASSERT_LE(std::fabs(got - want), tol) << what << ": got " << got << ", want " << want;
}

double max_abs(const std::vector<double> &v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

struct Shape {
    int64_t rows, cols;
};

// Columns around the vector widths of every target (4, 8, 16 float lanes) and the
// default accumulator block (64), rows around the task split.
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 16}, {2, 17}, {37, 64}, {9, 100}, {33, 1000}, {4, 1031}, {70, 33}};

class RowNormKernel : public ::testing::TestWithParam<KernelInfo> {};

// A strided view of single-column rows has unit stride, so it runs the contiguous kernel.
void expect_dispatched_to(const KernelInfo &k, int64_t cols) {
    if (std::string(k.layout) == "strided" && cols <= 1) {
        EXPECT_NE(std::string(normgen::last_kernel()).find("_contig_"), std::string::npos);
    } else {
        EXPECT_STREQ(normgen::last_kernel(), k.name);
    }
}

TEST_P(RowNormKernel, MatchesFloat64Reference) {
    const KernelInfo k = GetParam();
    const ref::KernelThreads threads(k);  // a tuned kernel runs only at its thread count
    const bool rms = std::string(k.op) == "rms_norm";
    const bool fwd = std::string(k.dir) == "fwd";
    const DType dt = dtype_of(k.dtype);
    const bool has_w = flag(k, "has_weight"), has_b = flag(k, "has_bias");
    const int64_t cs = std::string(k.layout) == "strided" ? 2 : 1;
    std::mt19937 rng(1234);
    std::normal_distribution<double> normal(0.0, 1.0);
    // A kernel tuned for one shape (rows x cols) is tested at that shape.
    std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
    if (*k.shape) {
        long long r = 0, c = 0;
        ASSERT_EQ(std::sscanf(k.shape, "%lldx%lld", &r, &c), 2) << k.shape;
        shapes = {Shape{r, c}};
    }
    for (const Shape &sh : shapes) {
        SCOPED_TRACE(normgen::describe(k.op, k.dir, dt, {sh.rows, sh.cols}, k.layout));
        const int64_t R = sh.rows, N = sh.cols;
        const double eps = 1e-5;
        Strided x(dt, R, N, cs);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < N; c++) x.set(r, c, 2.0 + 3.0 * normal(rng));
        ref::Tensor w(dt, {N}), b(dt, {N});
        for (int64_t c = 0; c < N; c++) {
            w.set(c, 1.0 + 0.5 * normal(rng));
            b.set(c, normal(rng));
        }
        TensorView wv = TensorView::strided(w.bytes.data(), dt, {N}, {1});
        TensorView bv = TensorView::strided(b.bytes.data(), dt, {N}, {1});
        std::vector<double> xs = x.values();
        ref::RowStats st = ref::layer_norm_stats(xs, R, N, eps, rms);
        const double *wp = has_w ? w.values.data() : nullptr;
        if (fwd) {
            Strided y(dt, R, N, cs);
            std::vector<float> mean(R), rstd(R);
            TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
            TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
            TensorView xv = x.view(), yv = y.view();
            Status s = rms ? normgen::rms_norm_forward(xv, {N}, has_w ? &wv : nullptr, eps, yv, &rv)
                           : normgen::layer_norm_forward(xv, {N}, has_w ? &wv : nullptr, has_b ? &bv : nullptr,
                                                         eps, yv, &mv, &rv);
            ASSERT_TRUE(s.ok()) << s.message();
            expect_dispatched_to(k, N);
            std::vector<double> want =
                ref::row_norm_forward(xs, st, wp, has_b && !rms ? b.values.data() : nullptr, R, N);
            const double scale = max_abs(want);
            for (int64_t r = 0; r < R; r++) {
                for (int64_t c = 0; c < N; c++)
                    expect_close(y.get(r, c), want[r * N + c], dt, N, scale, "y");
                if (!rms) expect_close(mean[r], st.mean[r], DType::f32, N, max_abs(st.mean), "mean");
                expect_close(rstd[r], st.rstd[r], DType::f32, N, st.rstd[r], "rstd");
            }
        } else {
            Strided dy(dt, R, N, cs), dx(dt, R, N, cs);
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < N; c++) dy.set(r, c, normal(rng));
            // The saved statistics are float32, as the forward writes them.
            std::vector<float> mean(R), rstd(R);
            for (int64_t r = 0; r < R; r++) {
                mean[r] = static_cast<float>(st.mean[r]);
                rstd[r] = static_cast<float>(st.rstd[r]);
                st.mean[r] = mean[r];
                st.rstd[r] = rstd[r];
            }
            TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
            TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
            ref::Tensor dw(dt, {N}), db(dt, {N});
            TensorView dwv = dw.view(), dbv = db.view();
            TensorView dyv = dy.view(), xv = x.view(), dxv = dx.view();
            Status s = rms ? normgen::rms_norm_backward(dyv, xv, rv, {N}, has_w ? &wv : nullptr, dxv,
                                                        has_w ? &dwv : nullptr)
                           : normgen::layer_norm_backward(dyv, xv, mv, rv, {N}, has_w ? &wv : nullptr, dxv,
                                                          has_w ? &dwv : nullptr, has_w ? &dbv : nullptr);
            ASSERT_TRUE(s.ok()) << s.message();
            expect_dispatched_to(k, N);
            ref::RowGrads g = ref::row_norm_backward(dy.values(), xs, st, wp, R, N, rms);
            // dx's terms are of size rstd * |dy * w| even where they cancel (n = 1).
            double sx = max_abs(g.dx);
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < N; c++)
                    sx = std::max(sx, st.rstd[r] * std::fabs(dy.value(r, c) * (wp ? wp[c] : 1.0)));
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < N; c++) expect_close(dx.get(r, c), g.dx[r * N + c], dt, N, sx, "dx");
            if (has_w) {
                for (int64_t c = 0; c < N; c++) {
                    expect_close(dw.get(c), g.dw[c], dt, R, max_abs(g.dw), "dweight");
                    if (!rms) expect_close(db.get(c), g.db[c], dt, R, max_abs(g.db), "dbias");
                }
            }
        }
    }
}

bool fused(const KernelInfo &k) { return flag(k, "add_residual") || flag(k, "has_ds"); }

std::vector<KernelInfo> row_norm_kernels(bool want_fused) {
    std::vector<KernelInfo> v;
    for (const auto &k : normgen::kernels())
        if (ref::cpu_kernel(k) && (std::string(k.op) == "layer_norm" || std::string(k.op) == "rms_norm") &&
            fused(k) == want_fused)
            v.push_back(k);
    return v;
}

INSTANTIATE_TEST_SUITE_P(KernelList, RowNormKernel, ::testing::ValuesIn(row_norm_kernels(false)),
                         [](const ::testing::TestParamInfo<KernelInfo> &i) { return std::string(i.param.name); });

// The pre-norm residual kernels (add_layer_norm / add_rms_norm): s = x + r, y = norm(s)
// of the float32 sum; backward dx = norm's dx at the saved s + ds.
class AddNormKernel : public ::testing::TestWithParam<KernelInfo> {};

TEST_P(AddNormKernel, MatchesFloat64Reference) {
    const KernelInfo k = GetParam();
    const ref::KernelThreads threads(k);  // a tuned kernel runs only at its thread count
    const bool rms = std::string(k.op) == "rms_norm", fwd = std::string(k.dir) == "fwd";
    const DType dt = dtype_of(k.dtype);
    const std::vector<int64_t> rn = ref::kernel_shape(k, {5, 37});  // tuned kernels: their shape
    const int64_t cs = std::string(k.layout) == "strided" ? 2 : 1, R = rn[0], N = rn[1];
    std::mt19937 rng(77);
    std::normal_distribution<double> normal(0.0, 1.0);
    Strided x(dt, R, N, cs), res(dt, R, N, cs), y(dt, R, N, cs), s(dt, R, N, cs), dy(dt, R, N, cs), ds(dt, R, N, cs),
        dx(dt, R, N, cs);
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < N; c++) {
            x.set(r, c, 2.0 + 3.0 * normal(rng));
            res.set(r, c, normal(rng));
            dy.set(r, c, normal(rng));
            ds.set(r, c, normal(rng));
        }
    std::vector<float> mean(R), rstd(R);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R}), rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
    const double eps = 1e-5;
    Status st = rms ? normgen::add_rms_norm_forward(x.view(), res.view(), {N}, nullptr, eps, y.view(), s.view(), &rv)
                    : normgen::add_layer_norm_forward(x.view(), res.view(), {N}, nullptr, nullptr, eps, y.view(),
                                                      s.view(), &mv, &rv);
    ASSERT_TRUE(st.ok()) << st.message();
    if (fwd) EXPECT_STREQ(normgen::last_kernel(), k.name);
    else {
        const TensorView dsv = ds.view();
        st = rms ? normgen::add_rms_norm_backward(dy.view(), &dsv, s.view(), rv, {N}, nullptr, dx.view())
                 : normgen::add_layer_norm_backward(dy.view(), &dsv, s.view(), mv, rv, {N}, nullptr, dx.view());
        ASSERT_TRUE(st.ok()) << st.message();
        EXPECT_STREQ(normgen::last_kernel(), k.name);
    }
    for (int64_t r = 0; r < R; r++) {
        double m = 0, q = 0;
        std::vector<double> sv(N);
        for (int64_t c = 0; c < N; c++) m += (sv[c] = x.value(r, c) + res.value(r, c));
        m = rms ? 0.0 : m / N;
        for (int64_t c = 0; c < N; c++) q += (sv[c] - m) * (sv[c] - m);
        const double rs = 1 / std::sqrt(q / N + eps);
        for (int64_t c = 0; c < N; c++) {
            expect_close(s.get(r, c), sv[c], dt, 1, std::fabs(sv[c]), "s");
            expect_close(y.get(r, c), (sv[c] - m) * rs, dt, N, 4.0, "y");
        }
        if (fwd) continue;
        // Reference at the saved s and statistics (what the kernel differentiates).
        double g = 0, gx = 0;
        for (int64_t c = 0; c < N; c++) {
            const double xh = (s.get(r, c) - (rms ? 0.0 : mean[r])) * rstd[r];  // s: an output (get)
            g += dy.value(r, c);
            gx += dy.value(r, c) * xh;
        }
        for (int64_t c = 0; c < N; c++) {
            const double xh = (s.get(r, c) - (rms ? 0.0 : mean[r])) * rstd[r];
            const double want = rstd[r] * (dy.value(r, c) - (rms ? 0.0 : g / N) - xh * gx / N) + ds.value(r, c);
            expect_close(dx.get(r, c), want, dt, N, 4.0 * rstd[r] + 4.0, "dx");
        }
    }
}

INSTANTIATE_TEST_SUITE_P(KernelList, AddNormKernel, ::testing::ValuesIn(row_norm_kernels(true)),
                         [](const ::testing::TestParamInfo<KernelInfo> &i) { return std::string(i.param.name); });

TEST(RowNormKernelList, CoversEveryDtypeLayoutAndDirection) {
    // The table is the expansion of kernels.list: both ops, both directions, all dtypes and layouts.
    int count = 0;
    for (const char *op : {"layer_norm", "rms_norm"})
        for (const char *dir : {"fwd", "bwd"})
            for (const char *dt : {"f32", "f16", "bf16"})
                for (const char *layout : {"contig", "strided"}) {
                    bool found = false;
                    for (const auto &k : normgen::kernels())
                        found |= !std::strcmp(k.op, op) && !std::strcmp(k.dir, dir) && !std::strcmp(k.dtype, dt) &&
                                 !std::strcmp(k.layout, layout);
                    EXPECT_TRUE(found) << op << ":" << dir << ":" << dt << ":" << layout;
                    count += found;
                }
    EXPECT_EQ(count, 24);
    size_t fused = 0;  // add_residual / has_ds, tuned (shaped) kernels aside: 2 ops x 2 dirs x 3 dtypes x 2 layouts
    for (const auto &k : row_norm_kernels(true)) fused += *k.shape == 0;
    EXPECT_EQ(fused, 24u);
}

// ---- numerics -------------------------------------------------------------------------

TEST(RowNormNumerics, LargeOffsetDataNormalizesWithin1e3) {
    // mean 1e4, std 1: E[x^2]-E[x]^2 would lose everything; torch 1.13 misses by 1.7e-3.
    const int64_t R = 64, N = 4096;
    std::mt19937 rng(7);
    std::normal_distribution<double> normal(1e4, 1.0);
    ref::Tensor x(DType::f32, {R, N}), y(DType::f32, {R, N});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, normal(rng));
    std::vector<float> mean(R), rstd(R);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R}), rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
    ASSERT_TRUE(normgen::layer_norm_forward(x.view(), {N}, nullptr, nullptr, 1e-5, y.view(), &mv, &rv).ok());
    ref::RowStats st = ref::layer_norm_stats(x.values, R, N, 1e-5, false);
    std::vector<double> want = ref::row_norm_forward(x.values, st, nullptr, nullptr, R, N);
    double worst = 0;
    for (int64_t i = 0; i < x.numel(); i++) worst = std::max(worst, std::fabs(y.get(i) - want[i]));
    EXPECT_LT(worst, 1e-3);
    for (int64_t r = 0; r < R; r++) EXPECT_NEAR(rstd[r], st.rstd[r], 1e-4 * st.rstd[r]);
}

TEST(RowNormNumerics, ConstantRowsGiveFiniteOutput) {
    const int64_t R = 3, N = 257;
    ref::Tensor x(DType::f32, {R, N}), y(DType::f32, {R, N});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, 5.0);
    ASSERT_TRUE(normgen::layer_norm_forward(x.view(), {N}, nullptr, nullptr, 1e-5, y.view()).ok());
    for (int64_t i = 0; i < y.numel(); i++) EXPECT_EQ(y.get(i), 0.0);
}

TEST(RowNormNumerics, NonFiniteRowDoesNotLeak) {
    const int64_t R = 4, N = 100;
    ref::Tensor x(DType::f32, {R, N}), y(DType::f32, {R, N});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, std::sin(double(i)));
    x.set(1 * N + 5, std::numeric_limits<double>::quiet_NaN());
    x.set(2 * N + 7, std::numeric_limits<double>::infinity());
    ASSERT_TRUE(normgen::layer_norm_forward(x.view(), {N}, nullptr, nullptr, 1e-5, y.view()).ok());
    for (int64_t r : {0, 3})
        for (int64_t c = 0; c < N; c++) EXPECT_TRUE(std::isfinite(y.get(r * N + c))) << r << "," << c;
}

// ---- layouts --------------------------------------------------------------------------

TEST(RowNormLayouts, NonCollapsibleInputIsStagedAndCorrect) {
    // A transposed 3-D tensor whose leading dims cannot merge into one stride.
    const int64_t A = 3, B = 5, N = 40;
    ref::Tensor base(DType::f32, {B, A, N});
    for (int64_t i = 0; i < base.numel(); i++) base.set(i, std::cos(0.37 * double(i)) * 4 + 1);
    // View as (A, B, N) with strides (N, A*N, 1): leading dims A, B are not mergeable.
    TensorView xv = TensorView::strided(base.bytes.data(), DType::f32, {A, B, N}, {N, A * N, 1});
    ref::Tensor y(DType::f32, {A, B, N});
    ASSERT_TRUE(normgen::rms_norm_forward(xv, {N}, nullptr, std::nullopt, y.view()).ok());
    for (int64_t a = 0; a < A; a++)
        for (int64_t b = 0; b < B; b++) {
            double ss = 0;
            for (int64_t n = 0; n < N; n++) ss += std::pow(base.values[(b * A + a) * N + n], 2);
            double rs = 1 / std::sqrt(ss / N + ref::unit_roundoff(DType::f32) * 2);
            for (int64_t n = 0; n < N; n++)
                EXPECT_NEAR(y.get((a * B + b) * N + n), base.values[(b * A + a) * N + n] * rs, 1e-5);
        }
}

TEST(RowNormLayouts, MultiDimNormalizedShape) {
    const int64_t R = 6, H = 4, W = 9;
    ref::Tensor x(DType::f32, {R, H, W}), y(DType::f32, {R, H, W}), w(DType::f32, {H, W});
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, std::sin(1.3 * double(i)) * 2);
    for (int64_t i = 0; i < w.numel(); i++) w.set(i, 0.5 + 0.01 * double(i));
    std::vector<float> mean(R), rstd(R);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R, 1, 1});
    TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R, 1, 1});
    TensorView wv = w.view();
    ASSERT_TRUE(normgen::layer_norm_forward(x.view(), {H, W}, &wv, nullptr, 1e-5, y.view(), &mv, &rv).ok());
    ref::RowStats st = ref::layer_norm_stats(x.values, R, H * W, 1e-5, false);
    std::vector<double> want = ref::row_norm_forward(x.values, st, w.values.data(), nullptr, R, H * W);
    for (int64_t i = 0; i < x.numel(); i++) EXPECT_NEAR(y.get(i), want[i], 1e-5);
}

// ---- bad input: a clear error naming the argument, and nothing written ---------------

struct BadInputFixture : ::testing::Test {
    static constexpr int64_t R = 4, N = 8;
    ref::Tensor x{DType::f32, {R, N}}, y{DType::f32, {R, N}}, w{DType::f32, {N}}, b{DType::f32, {N}};
    std::vector<float> mean = std::vector<float>(R, -7.f), rstd = std::vector<float>(R, -7.f);
    void SetUp() override {
        for (int64_t i = 0; i < x.numel(); i++) x.set(i, double(i % 5));
        for (int64_t i = 0; i < y.numel(); i++) y.set(i, -123.0);
        for (int64_t i = 0; i < N; i++) w.set(i, 1.0);
    }
    void expect_untouched() {
        for (int64_t i = 0; i < y.numel(); i++) ASSERT_EQ(y.get(i), -123.0);
        for (float m : mean) ASSERT_EQ(m, -7.f);
        for (float r : rstd) ASSERT_EQ(r, -7.f);
    }
    Status ln(const TensorView &xv, std::vector<int64_t> ns, const TensorView *wv, const TensorView *bv, double eps,
              const TensorView &yv) {
        TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
        TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
        return normgen::layer_norm_forward(xv, ns, wv, bv, eps, yv, &mv, &rv);
    }
};

void expect_error(const Status &s, Status::Code code, const std::string &needle) {
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(static_cast<int>(s.code()), static_cast<int>(code)) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << "message: " << s.message();
}

TEST_F(BadInputFixture, WrongNormalizedShape) {
    expect_error(ln(x.view(), {N + 1}, nullptr, nullptr, 1e-5, y.view()), Status::Code::invalid_argument,
                 "normalized_shape");
    expect_untouched();
}

TEST_F(BadInputFixture, MismatchedWeight) {
    ref::Tensor w2(DType::f32, {N - 1});
    TensorView wv = w2.view();
    expect_error(ln(x.view(), {N}, &wv, nullptr, 1e-5, y.view()), Status::Code::invalid_argument,
                 "Expected weight of shape [8] (normalized_shape), but got [7]");
    expect_untouched();
}

TEST_F(BadInputFixture, WrongWeightDtype) {
    ref::Tensor w2(DType::f16, {N});
    TensorView wv = w2.view();
    expect_error(ln(x.view(), {N}, &wv, nullptr, 1e-5, y.view()), Status::Code::type_error, "weight");
    expect_untouched();
}

TEST_F(BadInputFixture, BadEps) {
    for (double eps : {0.0, -1e-5, std::nan(""), std::numeric_limits<double>::infinity()}) {
        expect_error(ln(x.view(), {N}, nullptr, nullptr, eps, y.view()), Status::Code::invalid_argument, "eps");
        expect_untouched();
    }
    TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
    expect_error(normgen::rms_norm_forward(x.view(), {N}, nullptr, 0.0, y.view(), &rv),
                 Status::Code::invalid_argument, "eps");
    expect_untouched();
}

TEST_F(BadInputFixture, OutputShapeAndDtype) {
    ref::Tensor y2(DType::f32, {R, N + 1}), y3(DType::bf16, {R, N});
    expect_error(ln(x.view(), {N}, nullptr, nullptr, 1e-5, y2.view()), Status::Code::invalid_argument, "y");
    expect_error(ln(x.view(), {N}, nullptr, nullptr, 1e-5, y3.view()), Status::Code::type_error, "y");
    std::vector<float> small(R - 1);
    TensorView mv = TensorView::contiguous(small.data(), DType::f32, {R - 1});
    expect_error(normgen::layer_norm_forward(x.view(), {N}, nullptr, nullptr, 1e-5, y.view(), &mv),
                 Status::Code::invalid_argument, "mean");
    expect_untouched();
}

TEST_F(BadInputFixture, OutputAliasingInput) {
    expect_error(ln(x.view(), {N}, nullptr, nullptr, 1e-5, x.view()), Status::Code::invalid_argument,
                 "y overlaps x");
    // rstd inside mean's memory.
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
    expect_error(normgen::layer_norm_forward(x.view(), {N}, nullptr, nullptr, 1e-5, y.view(), &mv, &mv),
                 Status::Code::invalid_argument, "overlaps");
    expect_untouched();
}

TEST_F(BadInputFixture, NullDataRankAndHugeShapes) {
    TensorView nx = TensorView::contiguous(nullptr, DType::f32, {R, N});
    expect_error(ln(nx, {N}, nullptr, nullptr, 1e-5, y.view()), Status::Code::invalid_argument, "x");
    std::vector<int64_t> big(9, 1);
    TensorView rk = TensorView::contiguous(x.bytes.data(), DType::f32, big);
    expect_error(ln(rk, {1}, nullptr, nullptr, 1e-5, y.view()), Status::Code::invalid_argument, "rank");
    // 2^31 columns would overflow 32-bit indexing: rejected before any access.
    const int64_t huge = int64_t(1) << 31;
    TensorView hx = TensorView::strided(x.bytes.data(), DType::f32, {1, huge}, {huge, 1});
    TensorView hy = TensorView::strided(y.bytes.data(), DType::f32, {1, huge}, {huge, 1});
    expect_error(normgen::layer_norm_forward(hx, {huge}, nullptr, nullptr, 1e-5, hy), Status::Code::invalid_argument,
                 "32-bit");
    expect_untouched();
}

TEST_F(BadInputFixture, BackwardChecksEveryArgument) {
    ref::Tensor dx(DType::f32, {R, N}), dw(DType::f32, {N}), dyb(DType::f32, {R, N + 1});
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
    TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
    TensorView wv = w.view(), dwv = dw.view();
    expect_error(normgen::layer_norm_backward(dyb.view(), x.view(), mv, rv, {N}, &wv, dx.view(), &dwv),
                 Status::Code::invalid_argument, "dy");
    expect_error(normgen::layer_norm_backward(y.view(), x.view(), mv, rv, {N}, nullptr, dx.view(), &dwv),
                 Status::Code::invalid_argument, "weight is None");
    std::vector<float> wrong(R + 2);
    TensorView wr = TensorView::contiguous(wrong.data(), DType::f32, {R + 2});
    expect_error(normgen::rms_norm_backward(y.view(), x.view(), wr, {N}, nullptr, dx.view()),
                 Status::Code::invalid_argument, "rstd");
}

// ---- empty tensors, threads, dispatch --------------------------------------------------

TEST(RowNormEmpty, EmptyBatchAndEmptyRows) {
    ref::Tensor x(DType::f32, {0, 16}), y(DType::f32, {0, 16});
    EXPECT_TRUE(normgen::layer_norm_forward(x.view(), {16}, nullptr, nullptr, 1e-5, y.view()).ok());
    ref::Tensor dy(DType::f32, {0, 16}), dx(DType::f32, {0, 16}), w(DType::f32, {16}), dw(DType::f32, {16});
    for (int64_t i = 0; i < 16; i++) dw.set(i, 9.0);
    TensorView wv = w.view(), dwv = dw.view();
    TensorView m0 = TensorView::contiguous(nullptr, DType::f32, {0});
    ASSERT_TRUE(normgen::layer_norm_backward(dy.view(), x.view(), m0, m0, {16}, &wv, dx.view(), &dwv).ok());
    for (int64_t i = 0; i < 16; i++) EXPECT_EQ(dw.get(i), 0.0);  // a sum over no rows
    ref::Tensor xe(DType::f32, {3, 0}), ye(DType::f32, {3, 0});
    std::vector<float> mean(3, 5.f), rstd(3, 5.f);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {3});
    TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {3});
    ASSERT_TRUE(normgen::layer_norm_forward(xe.view(), {0}, nullptr, nullptr, 1e-5, ye.view(), &mv, &rv).ok());
    EXPECT_EQ(mean[0], 0.f);  // as torch: mean 0, rstd NaN
    EXPECT_TRUE(std::isnan(rstd[0]));
}

TEST(RowNormThreads, ResultsDoNotDependOnThreadCount) {
    const int64_t R = 257, N = 300;
    ref::Tensor x(DType::f32, {R, N}), dy(DType::f32, {R, N}), w(DType::f32, {N});
    for (int64_t i = 0; i < x.numel(); i++) {
        x.set(i, std::sin(0.1 * double(i)));
        dy.set(i, std::cos(0.07 * double(i)));
    }
    for (int64_t i = 0; i < N; i++) w.set(i, 1 + 0.001 * double(i));
    std::vector<float> mean(R), rstd(R);
    TensorView mv = TensorView::contiguous(mean.data(), DType::f32, {R});
    TensorView rv = TensorView::contiguous(rstd.data(), DType::f32, {R});
    TensorView wv = w.view();
    ref::Tensor y0(DType::f32, {R, N});
    ASSERT_TRUE(normgen::layer_norm_forward(x.view(), {N}, &wv, nullptr, 1e-5, y0.view(), &mv, &rv).ok());
    std::vector<std::vector<unsigned char>> dws;
    const int before = normgen::num_threads();
    for (int threads : {1, 2, 3}) {
        normgen::set_num_threads(threads);
        EXPECT_EQ(normgen::num_threads(), threads);
        ref::Tensor dx(DType::f32, {R, N}), dw(DType::f32, {N}), db(DType::f32, {N});
        TensorView dwv = dw.view(), dbv = db.view();
        ASSERT_TRUE(normgen::layer_norm_backward(dy.view(), x.view(), mv, rv, {N}, &wv, dx.view(), &dwv, &dbv).ok());
        dws.push_back(dw.bytes);
    }
    normgen::set_num_threads(before);
    // Deterministic: per-block partials reduced in block order, whatever the threads.
    EXPECT_EQ(dws[0], dws[1]);
    EXPECT_EQ(dws[0], dws[2]);
}

TEST(RowNormDispatch, DescriptorGrammar) {
    EXPECT_EQ(normgen::describe("layer_norm", "fwd", DType::f32, {8192, 1024}), "layer_norm:fwd:f32:8192x1024");
    EXPECT_EQ(normgen::describe("rms_norm", "bwd", DType::bf16, {2, 3}, "strided"), "rms_norm:bwd:bf16:2x3:strided");
}

}  // namespace

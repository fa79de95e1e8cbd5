// A consumer of an installed normgen: its own kernels (normgen_add_kernels in
// CMakeLists.txt) are registered at load time and chosen by dispatch where they are
// more specialized than the library's; results are checked against a float64
// reference. Exits non-zero on any failure.
#include <normgen/kernel_registry.h>
#include <normgen/normgen.h>

#include <HalideRuntime.h>

#include "consumer_layer_norm_fwd_f32_contig_hb1_hw1_s64x256.h"  // generated: entry points for the error checks
#include "consumer_rms_norm_fwd_f32_contig_hw1_s64x256.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int g_failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        g_failures++;
    }
}

// A failed call's message on stderr; the callers then report an infinite error.
bool call_ok(const normgen::Status &s) {
    if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return s.ok();
}

bool starts_with(const char *s, const char *prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }

std::vector<float> data(size_t n, float mean, unsigned seed) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = mean + static_cast<float>((seed >> 8) % 2001) / 1000.0f - 1.0f;
    }
    return v;
}

// LayerNorm (rms = false) or RMSNorm of rows x cols against float64; returns the max error.
double row_norm(bool rms, int64_t rows, int64_t cols) {
    auto x = data(rows * cols, rms ? 0.0f : 100.0f, 1), w = data(cols, 1.0f, 2), b = data(cols, 0.0f, 3);
    std::vector<float> y(x.size());
    using normgen::TensorView;
    auto xv = TensorView::contiguous(x.data(), normgen::DType::f32, {rows, cols});
    auto yv = TensorView::contiguous(y.data(), normgen::DType::f32, {rows, cols});
    auto wv = TensorView::contiguous(w.data(), normgen::DType::f32, {cols});
    auto bv = TensorView::contiguous(b.data(), normgen::DType::f32, {cols});
    if (!call_ok(rms ? normgen::rms_norm_forward(xv, {cols}, &wv, 1e-6, yv)
                     : normgen::layer_norm_forward(xv, {cols}, &wv, &bv, 1e-5, yv)))
        return INFINITY;
    double err = 0;
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t c = 0; c < cols; c++) mean += x[r * cols + c];
        mean = rms ? 0.0 : mean / cols;
        for (int64_t c = 0; c < cols; c++) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
        double rstd = 1.0 / std::sqrt(var / cols + (rms ? 1e-6 : 1e-5));
        for (int64_t c = 0; c < cols; c++) {
            double want = (x[r * cols + c] - mean) * rstd * w[c] + (rms ? 0.0 : b[c]);
            err = std::fmax(err, std::fabs(y[r * cols + c] - want));
        }
    }
    return err;
}

// Training-mode BatchNorm of (n, c, h, w) against float64; returns the max error.
double batch_norm(int64_t n, int64_t c, int64_t hw) {
    auto x = data(n * c * hw, 50.0f, 4), w = data(c, 1.0f, 5), b = data(c, 0.0f, 6);
    std::vector<float> y(x.size());
    using normgen::TensorView;
    auto xv = TensorView::contiguous(x.data(), normgen::DType::f32, {n, c, hw});
    auto yv = TensorView::contiguous(y.data(), normgen::DType::f32, {n, c, hw});
    auto wv = TensorView::contiguous(w.data(), normgen::DType::f32, {c});
    auto bv = TensorView::contiguous(b.data(), normgen::DType::f32, {c});
    if (!call_ok(normgen::batch_norm_forward(xv, nullptr, nullptr, &wv, &bv, true, 0.1, 1e-5, yv))) return INFINITY;
    double err = 0;
    for (int64_t ch = 0; ch < c; ch++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t p = 0; p < hw; p++) mean += x[(i * c + ch) * hw + p];
        mean /= n * hw;
        for (int64_t i = 0; i < n; i++)
            for (int64_t p = 0; p < hw; p++) var += std::pow(x[(i * c + ch) * hw + p] - mean, 2);
        double rstd = 1.0 / std::sqrt(var / (n * hw) + 1e-5);
        for (int64_t i = 0; i < n; i++)
            for (int64_t p = 0; p < hw; p++) {
                size_t at = (i * c + ch) * hw + p;
                err = std::fmax(err, std::fabs(y[at] - ((x[at] - mean) * rstd * w[ch] + b[ch])));
            }
    }
    return err;
}

}  // namespace

int main() {
    // The consumer's kernels are in the table.
    int mine = 0;
    for (const normgen::KernelInfo &k : normgen::kernels()) mine += starts_with(k.name, "consumer_");
    check(mine == 4, "4 consumer kernels registered, found " + std::to_string(mine));

    // Exact shape: the consumer's shape-specialized kernels.
    check(row_norm(false, 64, 256) < 2e-5, "layer_norm 64x256 matches the float64 reference");
    check(!std::strcmp(normgen::last_kernel(), "consumer_layer_norm_fwd_f32_contig_hb1_hw1_s64x256"),
          std::string("layer_norm 64x256 ran the consumer's shaped kernel, ran ") + normgen::last_kernel());
    check(row_norm(true, 64, 256) < 2e-5, "rms_norm 64x256 matches");
    check(!std::strcmp(normgen::last_kernel(), "consumer_rms_norm_fwd_f32_contig_hw1_s64x256"),
          std::string("rms_norm 64x256 ran the consumer's shaped kernel, ran ") + normgen::last_kernel());
    check(batch_norm(4, 8, 25) < 5e-5, "batch_norm 4x8x5x5 matches");
    check(!std::strcmp(normgen::last_kernel(), "consumer_batch_norm_fwd_f32_nchw_a1_t1_s4x8x25"),
          std::string("batch_norm 4x8x5x5 ran the consumer's shaped kernel, ran ") + normgen::last_kernel());

    // Other shapes: the consumer's shape-generic tuned RMSNorm, the library's LayerNorm.
    check(row_norm(true, 33, 100) < 2e-5, "rms_norm 33x100 matches");
    check(starts_with(normgen::last_kernel(), "consumer_rms_norm_fwd_f32_contig_hw1_k"),
          std::string("rms_norm 33x100 ran the consumer's tuned kernel, ran ") + normgen::last_kernel());
    check(row_norm(false, 33, 100) < 2e-5, "layer_norm 33x100 matches");
    check(!starts_with(normgen::last_kernel(), "consumer_"),
          std::string("layer_norm 33x100 ran the library's kernel, ran ") + normgen::last_kernel());

    // set_num_threads reaches the consumer's Halide runtime too; results do not change.
    normgen::set_num_threads(1);
    check(row_norm(false, 64, 256) < 2e-5, "layer_norm 64x256 on 1 thread matches");
    const int consumer_threads = halide_set_num_threads(3);  // this binary's own Halide runtime
    check(consumer_threads == 1, "set_num_threads(1) reached the consumer's runtime: it had " +
                                     std::to_string(consumer_threads));
    normgen::set_num_threads(0);

    // Registration errors name the kernel and the reason, and add nothing.
    std::vector<normgen::KernelInfo> all = normgen::kernels();
    const normgen::KernelInfo *lib_ln = nullptr;
    for (const auto &k : all)
        if (!std::strcmp(k.name, "consumer_layer_norm_fwd_f32_contig_hb1_hw1_s64x256")) lib_ln = &k;
    check(lib_ln != nullptr, "consumer layer_norm kernel listed");
    normgen::KernelRuntimeHooks hooks{halide_set_error_handler, halide_set_num_threads,
                                      halide_set_custom_can_use_target_features};
    if (lib_ln) {
        normgen::ExternalKernel dup{*lib_ln, consumer_layer_norm_fwd_f32_contig_hb1_hw1_s64x256_argv,
                                    consumer_layer_norm_fwd_f32_contig_hb1_hw1_s64x256_metadata};
        normgen::Status s = normgen::register_kernels(&dup, 1, hooks);
        check(!s.ok() && s.message().find("already in the table") != std::string::npos,
              "a duplicate name is refused: " + s.message());
        normgen::ExternalKernel wrong = dup;
        wrong.info.name = "consumer_wrong";
        wrong.metadata_fn = consumer_rms_norm_fwd_f32_contig_hw1_s64x256_metadata;
        s = normgen::register_kernels(&wrong, 1, hooks);
        check(!s.ok() && s.message().find("consumer_wrong") != std::string::npos &&
                  s.message().find("does not match") != std::string::npos,
              "a kernel whose arguments differ from the runtime's is refused: " + s.message());
        check(normgen::kernels().size() == all.size(), "refused registrations add nothing");
    }

    if (g_failures) return 1;
    std::printf("consumer OK: %d own kernels; layer_norm, rms_norm and batch_norm ran them and match float64\n", mine);
    return 0;
}

// LayerNorm of one row through an installed normgen; exits non-zero on a wrong result.
#include <normgen/normgen.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    std::vector<float> x = {1, 2, 3, 4}, y(4);
    auto xv = normgen::TensorView::contiguous(x.data(), normgen::DType::f32, {1, 4});
    auto yv = normgen::TensorView::contiguous(y.data(), normgen::DType::f32, {1, 4});
    normgen::Status s = normgen::layer_norm_forward(xv, {4}, nullptr, nullptr, 1e-5, yv);
    if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.message().c_str());
        return 1;
    }
    // mean 2.5, variance 1.25
    for (int i = 0; i < 4; i++) {
        double want = (x[i] - 2.5) / std::sqrt(1.25 + 1e-5);
        if (std::fabs(y[i] - want) > 1e-5) {
            std::fprintf(stderr, "y[%d] = %f, want %f\n", i, y[i], want);
            return 1;
        }
    }
    std::printf("consumer OK: %s ran, y = [%f, %f, %f, %f]\n", normgen::last_kernel(), y[0], y[1], y[2], y[3]);
    return 0;
}

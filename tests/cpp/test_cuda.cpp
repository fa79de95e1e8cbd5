// The CUDA path of the runtime. Without a GPU (this machine, CI): the CUDA kernels are
// in the table for every CPU kernel-list kernel, calls on CUDA tensors fail with a clear
// error naming the missing device and touch no memory, and device mix-ups and strides
// the CUDA path cannot take are refused by name. With a GPU: every row and channel op
// on device memory matches the same op on the CPU.
#include "normgen/normgen.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace {

using normgen::Device;
using normgen::DType;
using normgen::Status;
using normgen::TensorView;

// A CUDA view of a fake, never-dereferenced device address (no device: nothing runs).
TensorView fake_cuda(std::vector<int64_t> shape, uintptr_t address = 0x7f0000000000) {
    TensorView t = TensorView::contiguous(reinterpret_cast<void *>(address), DType::f32, shape);
    t.device = Device::cuda;
    return t;
}

bool device_present(std::string *why) { return normgen::cuda_available(0, why); }

bool built_with_cuda() {
    for (const auto &k : normgen::kernels())
        if (!std::strcmp(k.target, "cuda")) return true;
    return false;
}

#define SKIP_WITHOUT_CUDA_KERNELS() \
    if (!built_with_cuda()) GTEST_SKIP() << "this build has no CUDA kernels (NORMGEN_CUDA_TARGET empty)"

TEST(CudaKernels, EveryKernelListKernelHasACudaTwin) {
    SKIP_WITHOUT_CUDA_KERNELS();
    std::set<std::tuple<std::string, std::string, std::string, std::string, std::string>> cpu, cuda;
    for (const auto &k : normgen::kernels()) {
        if (*k.schedule || *k.shape) continue;  // tuned kernels are per CPU target
        auto key = std::make_tuple(std::string(k.op), std::string(k.dir), std::string(k.dtype), std::string(k.layout),
                                   std::string(k.variant));
        (std::strcmp(k.target, "cuda") ? cpu : cuda).insert(key);
    }
    ASSERT_FALSE(cuda.empty()) << "no cuda kernels in the table";
    EXPECT_EQ(cpu, cuda);
}

TEST(CudaRuntime, NoDeviceIsAClearErrorAndNothingRuns) {
    SKIP_WITHOUT_CUDA_KERNELS();
    std::string why;
    if (device_present(&why)) GTEST_SKIP() << "a CUDA device is present; this checks the no-device error";
    TensorView x = fake_cuda({8, 64}), y = fake_cuda({8, 64}, 0x7f0000100000), w = fake_cuda({64}, 0x7f0000200000);
    Status s = normgen::layer_norm_forward(x, {64}, &w, nullptr, 1e-5, y);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::runtime_error);
    EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(why), std::string::npos) << s.message();

    TensorView xb = fake_cuda({4, 8, 5, 5}), yb = fake_cuda({4, 8, 5, 5}, 0x7f0000100000);
    TensorView rm = fake_cuda({8}, 0x7f0000200000), rv = fake_cuda({8}, 0x7f0000300000);
    s = normgen::batch_norm_forward(xb, &rm, &rv, nullptr, nullptr, true, 0.1, 1e-5, yb);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s.message();
    s = normgen::group_norm_forward(xb, 2, nullptr, nullptr, 1e-5, yb);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s.message();
    // Inference BatchNorm reads the running statistics on the host first: the same error.
    TensorView sm = fake_cuda({8}, 0x7f0000400000), sr = fake_cuda({8}, 0x7f0000500000);
    s = normgen::batch_norm_forward(xb, &rm, &rv, nullptr, nullptr, false, 0.1, 1e-5, yb, &sm, &sr);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s.message();
}

TEST(CudaRuntime, TensorsOnAnotherDeviceAreRefusedByName) {
    SKIP_WITHOUT_CUDA_KERNELS();
    std::vector<float> xs(8 * 64), ys(8 * 64);
    TensorView x = TensorView::contiguous(xs.data(), DType::f32, {8, 64});
    TensorView y = TensorView::contiguous(ys.data(), DType::f32, {8, 64});
    TensorView w = fake_cuda({64});
    Status s = normgen::layer_norm_forward(x, {64}, &w, nullptr, 1e-5, y);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::type_error);
    EXPECT_NE(s.message().find("weight"), std::string::npos) << s.message();

    TensorView xc = fake_cuda({8, 64});
    s = normgen::layer_norm_forward(xc, {64}, nullptr, nullptr, 1e-5, y);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("y is on the CPU"), std::string::npos) << s.message();

    TensorView y1 = fake_cuda({8, 64}, 0x7f0000100000);
    y1.device_index = 1;
    s = normgen::layer_norm_forward(xc, {64}, nullptr, nullptr, 1e-5, y1);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("CUDA device 1"), std::string::npos) << s.message();
}

TEST(CudaRuntime, StridesWithoutAViewAreRefusedNotCopied) {
    SKIP_WITHOUT_CUDA_KERNELS();
    // (4, 6, 8) with the last two dims transposed: LayerNorm over (6, 8) has no
    // (rows, cols) view; on the CPU it is staged, on CUDA it is refused naming x.
    TensorView x = TensorView::strided(reinterpret_cast<void *>(0x7f0000000000), DType::f32, {4, 6, 8}, {48, 1, 6});
    x.device = Device::cuda;
    TensorView y = fake_cuda({4, 6, 8}, 0x7f0000100000);
    Status s = normgen::layer_norm_forward(x, {6, 8}, nullptr, nullptr, 1e-5, y);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::type_error);
    EXPECT_NE(s.message().find("'x'"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("contiguous"), std::string::npos) << s.message();
}

// ---- with a GPU -------------------------------------------------------------------------

// Device memory through the driver API (loaded at run time, like the runtime does).
struct Driver {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    // The primary context of device 0 current on this thread (the one the runtime's
    // kernels run in), so that allocations and copies here see the same memory.
    bool current = [this] {
        if (!lib) return false;
        auto init = reinterpret_cast<int (*)(unsigned)>(dlsym(lib, "cuInit"));
        auto get = reinterpret_cast<int (*)(int *, int)>(dlsym(lib, "cuDeviceGet"));
        auto retain = reinterpret_cast<int (*)(void **, int)>(dlsym(lib, "cuDevicePrimaryCtxRetain"));
        auto set = reinterpret_cast<int (*)(void *)>(dlsym(lib, "cuCtxSetCurrent"));
        int dev = 0;
        void *ctx = nullptr;
        return init && get && retain && set && init(0) == 0 && get(&dev, 0) == 0 && retain(&ctx, dev) == 0 &&
               set(ctx) == 0;
    }();
    int (*alloc)(uintptr_t *, size_t) = lib ? reinterpret_cast<int (*)(uintptr_t *, size_t)>(dlsym(lib, "cuMemAlloc_v2")) : nullptr;
    int (*release)(uintptr_t) = lib ? reinterpret_cast<int (*)(uintptr_t)>(dlsym(lib, "cuMemFree_v2")) : nullptr;
    int (*to_device)(uintptr_t, const void *, size_t) =
        lib ? reinterpret_cast<int (*)(uintptr_t, const void *, size_t)>(dlsym(lib, "cuMemcpyHtoD_v2")) : nullptr;
    int (*to_host)(void *, uintptr_t, size_t) =
        lib ? reinterpret_cast<int (*)(void *, uintptr_t, size_t)>(dlsym(lib, "cuMemcpyDtoH_v2")) : nullptr;
};

// A float32 tensor mirrored on the device.
struct DeviceTensor {
    Driver &d;
    std::vector<float> host;
    uintptr_t ptr = 0;
    std::vector<int64_t> shape;
    DeviceTensor(Driver &drv, std::vector<int64_t> s, std::vector<float> values) : d(drv), host(std::move(values)), shape(std::move(s)) {
        EXPECT_EQ(d.alloc(&ptr, host.size() * sizeof(float)), 0);
        EXPECT_EQ(d.to_device(ptr, host.data(), host.size() * sizeof(float)), 0);
    }
    ~DeviceTensor() { d.release(ptr); }
    TensorView view() const {
        TensorView t = TensorView::contiguous(reinterpret_cast<void *>(ptr), DType::f32, shape);
        t.device = Device::cuda;
        return t;
    }
    std::vector<float> read() {
        std::vector<float> out(host.size());
        EXPECT_EQ(d.to_host(out.data(), ptr, out.size() * sizeof(float)), 0);
        return out;
    }
};

std::vector<float> random_values(size_t n, float mean, float spread, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(mean, spread);
    std::vector<float> v(n);
    for (float &e : v) e = dist(rng);
    return v;
}

void expect_close(const std::vector<float> &got, const std::vector<float> &want, float tol, const char *what) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++)
        ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " element " << i;
}

TEST(CudaDevice, RowAndChannelOpsMatchTheCpu) {
    std::string why;
    if (!device_present(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    Driver d;
    ASSERT_TRUE(d.current && d.alloc && d.release && d.to_device && d.to_host);
    // LayerNorm forward, data with a large offset.
    const int64_t rows = 96, cols = 1000;
    DeviceTensor x(d, {rows, cols}, random_values(rows * cols, 1000.0f, 1.0f, 1));
    DeviceTensor y(d, {rows, cols}, std::vector<float>(rows * cols)), mean(d, {rows}, std::vector<float>(rows)),
        rstd(d, {rows}, std::vector<float>(rows));
    TensorView xv = x.view(), yv = y.view(), mv = mean.view(), rv = rstd.view();
    Status s = normgen::layer_norm_forward(xv, {cols}, nullptr, nullptr, 1e-5, yv, &mv, &rv);
    ASSERT_TRUE(s.ok()) << s.message();
    std::vector<float> yc(rows * cols), mc(rows), rc(rows);
    TensorView xh = TensorView::contiguous(x.host.data(), DType::f32, {rows, cols});
    TensorView yh = TensorView::contiguous(yc.data(), DType::f32, {rows, cols});
    TensorView mh = TensorView::contiguous(mc.data(), DType::f32, {rows});
    TensorView rh = TensorView::contiguous(rc.data(), DType::f32, {rows});
    ASSERT_TRUE(normgen::layer_norm_forward(xh, {cols}, nullptr, nullptr, 1e-5, yh, &mh, &rh).ok());
    expect_close(y.read(), yc, 1e-3f, "layer_norm y");
    expect_close(mean.read(), mc, 1e-6f, "layer_norm mean");
    expect_close(rstd.read(), rc, 1e-3f, "layer_norm rstd");

    // BatchNorm training forward with running statistics (NCHW).
    const int64_t N = 4, C = 16, H = 7, W = 9;
    DeviceTensor bx(d, {N, C, H, W}, random_values(N * C * H * W, 50.0f, 2.0f, 2));
    DeviceTensor by(d, {N, C, H, W}, std::vector<float>(N * C * H * W));
    DeviceTensor brm(d, {C}, std::vector<float>(C, 0.0f)), brv(d, {C}, std::vector<float>(C, 1.0f));
    TensorView bxv = bx.view(), byv = by.view(), brmv = brm.view(), brvv = brv.view();
    s = normgen::batch_norm_forward(bxv, &brmv, &brvv, nullptr, nullptr, true, 0.1, 1e-5, byv);
    ASSERT_TRUE(s.ok()) << s.message();
    std::vector<float> byc(N * C * H * W), rmc(C, 0.0f), rvc(C, 1.0f);
    TensorView bxh = TensorView::contiguous(bx.host.data(), DType::f32, {N, C, H, W});
    TensorView byh = TensorView::contiguous(byc.data(), DType::f32, {N, C, H, W});
    TensorView rmh = TensorView::contiguous(rmc.data(), DType::f32, {C}), rvh = TensorView::contiguous(rvc.data(), DType::f32, {C});
    ASSERT_TRUE(normgen::batch_norm_forward(bxh, &rmh, &rvh, nullptr, nullptr, true, 0.1, 1e-5, byh).ok());
    expect_close(by.read(), byc, 1e-3f, "batch_norm y");
    expect_close(brm.read(), rmc, 1e-5f, "batch_norm running_mean");
    expect_close(brv.read(), rvc, 1e-4f, "batch_norm running_var");

    // GroupNorm forward.
    DeviceTensor gy(d, {N, C, H, W}, std::vector<float>(N * C * H * W));
    TensorView gyv = gy.view();
    s = normgen::group_norm_forward(bxv, 4, nullptr, nullptr, 1e-5, gyv);
    ASSERT_TRUE(s.ok()) << s.message();
    std::vector<float> gyc(N * C * H * W);
    TensorView gyh = TensorView::contiguous(gyc.data(), DType::f32, {N, C, H, W});
    ASSERT_TRUE(normgen::group_norm_forward(bxh, 4, nullptr, nullptr, 1e-5, gyh).ok());
    expect_close(gy.read(), gyc, 1e-3f, "group_norm y");
}

}  // namespace

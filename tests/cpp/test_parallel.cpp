// The parallel backends (normgen::set_parallel_backend): the OpenMP backend computes
// bit-for-bit what Halide's thread pool does (every kernel's tasks write their own
// blocks; reductions combine partials in block order), from one thread, from several
// at once, and from inside an OpenMP parallel region; the thread count follows OpenMP's
// until set_num_threads() chooses one; a build without OpenMP refuses the backend.
#include "reference.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifdef NORMGEN_TEST_OPENMP
#include <omp.h>
#endif

using normgen::DType;
using normgen::ParallelBackend;
using normgen::Status;
using normgen::TensorView;

namespace {

using ref::randn;
using ref::view;

// Restores the backend and the thread count a test changed.
struct BackendScope {
    ParallelBackend backend = normgen::parallel_backend();
    ~BackendScope() {
        EXPECT_TRUE(normgen::set_parallel_backend(backend).ok());
        normgen::set_num_threads(0);
    }
};

// Ops whose kernels have parallel loops of every kind: row tasks, channel blocks with
// rfactor partials, per-(sample, group) tasks with a nested parallel loop (N = 1 and N = 4).
struct Inputs {
    std::vector<float> x = randn(96 * 640, 1, 4.f), dy = randn(96 * 640, 2, 0.f), w = randn(640, 3, 1.f),
                       b = randn(640, 4, 0.f), x4 = randn(4 * 64 * 12 * 12, 5, 3.f), w4 = randn(64, 6, 1.f),
                       b4 = randn(64, 7, 0.f);
};

using Outputs = std::vector<std::vector<float>>;

Outputs run_all(Inputs &in) {
    Outputs o;
    o.reserve(32);  // (references to earlier outputs stay valid)
    auto out = [&](size_t n) -> std::vector<float> & { return o.emplace_back(n, 0.f); };
    auto check = [](const Status &s) { EXPECT_TRUE(s.ok()) << s.message(); };
    {
        auto &y = out(in.x.size()), &m = out(96), &r = out(96);
        TensorView xv = view(in.x, {96, 640}), wv = view(in.w, {640}), bv = view(in.b, {640});
        TensorView yv = view(y, {96, 640}), mv = view(m, {96}), rv = view(r, {96});
        check(normgen::layer_norm_forward(xv, {640}, &wv, &bv, 1e-5, yv, &mv, &rv));
        auto &dx = out(in.x.size()), &dw = out(640), &db = out(640);
        TensorView dyv = view(in.dy, {96, 640}), dxv = view(dx, {96, 640}), dwv = view(dw, {640}),
                   dbv = view(db, {640});
        check(normgen::layer_norm_backward(dyv, xv, mv, rv, {640}, &wv, dxv, &dwv, &dbv));
    }
    for (bool channels_last : {false, true}) {  // BatchNorm training: blocked reductions, both layouts
        auto &y = out(in.x.size()), &m = out(640), &r = out(640);
        const std::vector<int64_t> st = channels_last ? std::vector<int64_t>{640, 1, 640}
                                                      : std::vector<int64_t>{640, 1, 1};
        TensorView xv = TensorView::strided(in.x.data(), DType::f32, {96, 640, 1}, st),
                   yv = TensorView::strided(y.data(), DType::f32, {96, 640, 1}, st);
        TensorView wv = view(in.w, {640}), bv = view(in.b, {640}), mv = view(m, {640}), rv = view(r, {640});
        check(normgen::batch_norm_forward(xv, nullptr, nullptr, &wv, &bv, true, 0.1, 1e-5, yv, &mv, &rv));
    }
    for (int64_t n : {1, 4}) {  // GroupNorm: per-(sample, group) tasks, nested parallel loops
        auto &y = out(n * 64 * 144), &m = out(n * 8), &r = out(n * 8);
        TensorView xv = TensorView::contiguous(in.x4.data(), DType::f32, {n, 64, 12, 12});
        TensorView yv = TensorView::contiguous(y.data(), DType::f32, {n, 64, 12, 12});
        TensorView wv = view(in.w4, {64}), bv = view(in.b4, {64}), mv = view(m, {n, 8}), rv = view(r, {n, 8});
        check(normgen::group_norm_forward(xv, 8, &wv, &bv, 1e-5, yv, &mv, &rv));
    }
    return o;
}

void expect_same(const Outputs &a, const Outputs &b, const std::string &what) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); i++) EXPECT_EQ(a[i], b[i]) << what << ": output " << i;
}

TEST(ParallelBackend, UnknownValueIsAnErrorNamingIt) {
    BackendScope scope;
    Status s = normgen::set_parallel_backend(static_cast<ParallelBackend>(7));
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("backend"), std::string::npos) << s.message();
    EXPECT_EQ(normgen::parallel_backend(), scope.backend);
}

TEST(ParallelBackend, OpenMPMatchesHalidesPoolBitForBit) {
    BackendScope scope;
    if (normgen::openmp_runtime().empty()) {
        Status s = normgen::set_parallel_backend(ParallelBackend::openmp);
        EXPECT_FALSE(s.ok());
        EXPECT_NE(s.message().find("OpenMP"), std::string::npos) << s.message();
        GTEST_SKIP() << "this build has no OpenMP: the openmp backend is refused (checked)";
    }
    Inputs in;
    normgen::set_num_threads(2);
    ASSERT_TRUE(normgen::set_parallel_backend(ParallelBackend::halide).ok());
    const Outputs want = run_all(in);
    ASSERT_TRUE(normgen::set_parallel_backend(ParallelBackend::openmp).ok());
    EXPECT_EQ(normgen::parallel_backend(), ParallelBackend::openmp);
    expect_same(run_all(in), want, "openmp, 2 threads");
    normgen::set_num_threads(3);  // more threads than cores
    expect_same(run_all(in), want, "openmp, 3 threads");
    // Four callers at once, each its own OpenMP team.
    std::vector<Outputs> got(4);
    std::vector<std::thread> callers;
    for (auto &g : got) callers.emplace_back([&in, &g] { g = run_all(in); });
    for (auto &t : callers) t.join();
    for (const auto &g : got) expect_same(g, want, "openmp, concurrent callers");
#ifdef NORMGEN_TEST_OPENMP
    // Called from inside a parallel region: the kernel's loops run on the calling thread.
    std::vector<Outputs> nested(2);
#pragma omp parallel num_threads(2)
    { nested[omp_get_thread_num()] = run_all(in); }
    for (const auto &g : nested) expect_same(g, want, "openmp, inside a parallel region");
#endif
    ASSERT_TRUE(normgen::set_parallel_backend(ParallelBackend::halide).ok());
    expect_same(run_all(in), want, "back on halide");
}

#ifdef NORMGEN_TEST_OPENMP
TEST(ParallelBackend, ThreadCountFollowsOpenMPUntilChosen) {
    BackendScope scope;
    ASSERT_TRUE(normgen::set_parallel_backend(ParallelBackend::openmp).ok());
    normgen::set_num_threads(0);  // no choice: OpenMP's (torch.set_num_threads sets it)
    const int before = omp_get_max_threads();
    omp_set_num_threads(3);
    EXPECT_EQ(normgen::num_threads(), 3);
    EXPECT_EQ(normgen::set_num_threads(5), 3);  // returns the count in effect
    EXPECT_EQ(normgen::num_threads(), 5);
    omp_set_num_threads(before);
    EXPECT_EQ(normgen::num_threads(), 5);
    normgen::set_num_threads(0);
    EXPECT_EQ(normgen::num_threads(), before);
    ASSERT_TRUE(normgen::set_parallel_backend(ParallelBackend::halide).ok());
    EXPECT_GE(normgen::num_threads(), 1);
}
#endif

}  // namespace

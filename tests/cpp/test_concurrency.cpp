// Many threads calling different ops and shapes on shared inputs at once get results
// bit-identical to serial calls, and the error path (messages naming arguments, Halide
// errors routed through the user context) stays per call. (Run under ThreadSanitizer
// with -DNORMGEN_SANITIZE=thread.)
#include "reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using normgen::DType;
using normgen::Status;
using normgen::TensorView;

namespace {

using ref::randn;
using ref::view;

// One job: an op on the shared inputs writing its own outputs (returned by value).
struct Job {
    std::string name;
    std::function<Status(std::vector<std::vector<float>> &)> run;
    std::vector<size_t> out_sizes;
};

TEST(Concurrency, EightThreadsGetSerialResultsBitForBit) {
    // Shared, read-only inputs.
    std::vector<float> x = randn(64 * 768, 1, 3.f), dy = randn(64 * 768, 2, 0.f), w = randn(768, 3, 1.f),
                       b = randn(768, 4, 0.f), x4 = randn(8 * 32 * 14 * 14, 5, 2.f), w4 = randn(32, 6, 1.f),
                       b4 = randn(32, 7, 0.f), v = randn(256 * 300, 8, 0.f), g = randn(256, 9, 1.f);
    std::vector<float> mean_ln(64), rstd_ln(64);
    {
        std::vector<float> y(x.size());
        TensorView xv = view(x, {64, 768}), wv = view(w, {768}), bv = view(b, {768}), yv = view(y, {64, 768}),
                   mv = view(mean_ln, {64}), rv = view(rstd_ln, {64});
        ASSERT_TRUE(normgen::layer_norm_forward(xv, {768}, &wv, &bv, 1e-5, yv, &mv, &rv).ok());
    }
    std::vector<Job> jobs = {
        {"layer_norm_forward",
         [&](auto &o) {
             TensorView xv = view(x, {64, 768}), wv = view(w, {768}), bv = view(b, {768});
             TensorView yv = view(o[0], {64, 768}), mv = view(o[1], {64}), rv = view(o[2], {64});
             return normgen::layer_norm_forward(xv, {768}, &wv, &bv, 1e-5, yv, &mv, &rv);
         },
         {x.size(), 64, 64}},
        {"layer_norm_backward",
         [&](auto &o) {
             TensorView dyv = view(dy, {64, 768}), xv = view(x, {64, 768}), mv = view(mean_ln, {64}),
                        rv = view(rstd_ln, {64}), wv = view(w, {768});
             TensorView dxv = view(o[0], {64, 768}), dwv = view(o[1], {768}), dbv = view(o[2], {768});
             return normgen::layer_norm_backward(dyv, xv, mv, rv, {768}, &wv, dxv, &dwv, &dbv);
         },
         {x.size(), 768, 768}},
        {"rms_norm_forward",
         [&](auto &o) {
             TensorView xv = view(x, {32, 1536});
             TensorView yv = view(o[0], {32, 1536}), rv = view(o[1], {32});
             return normgen::rms_norm_forward(xv, {1536}, nullptr, std::nullopt, yv, &rv);
         },
         {x.size(), 32}},
        {"batch_norm_forward",
         [&](auto &o) {
             TensorView xv = view(x4, {8, 32, 14, 14}), wv = view(w4, {32}), bv = view(b4, {32});
             TensorView yv = view(o[0], {8, 32, 14, 14}), mv = view(o[1], {32}), rv = view(o[2], {32});
             return normgen::batch_norm_forward(xv, nullptr, nullptr, &wv, &bv, true, 0.1, 1e-5, yv, &mv, &rv);
         },
         {x4.size(), 32, 32}},
        {"group_norm_forward",
         [&](auto &o) {
             TensorView xv = view(x4, {8, 32, 14, 14}), wv = view(w4, {32}), bv = view(b4, {32});
             TensorView yv = view(o[0], {8, 32, 14, 14}), mv = view(o[1], {8, 8}), rv = view(o[2], {8, 8});
             return normgen::group_norm_forward(xv, 8, &wv, &bv, 1e-5, yv, &mv, &rv);
         },
         {x4.size(), 64, 64}},
        {"weight_norm_forward",
         [&](auto &o) {
             TensorView vv = view(v, {256, 300}), gv = view(g, {256});
             TensorView wv = view(o[0], {256, 300}), nv = view(o[1], {256});
             return normgen::weight_norm_forward(vv, gv, 0, wv, &nv);
         },
         {v.size(), 256}},
    };
    // Serial results first.
    std::vector<std::vector<std::vector<float>>> serial;
    for (auto &j : jobs) {
        std::vector<std::vector<float>> o;
        for (size_t n : j.out_sizes) o.emplace_back(n, -1.f);
        const Status s = j.run(o);
        ASSERT_TRUE(s.ok()) << j.name << ": " << s.message();
        serial.push_back(std::move(o));
    }
    // 8 threads, each cycling through the jobs from its own starting point (and a bad
    // call every few iterations), for a bounded time.
    std::atomic<int64_t> calls{0}, mismatches{0}, bad_errors{0};
    std::atomic<bool> stop{false};
    auto worker = [&](int t) {
        for (int64_t it = t; !stop.load(); it++) {
            const size_t k = static_cast<size_t>(it) % jobs.size();
            std::vector<std::vector<float>> o;
            for (size_t n : jobs[k].out_sizes) o.emplace_back(n, -2.f);
            const Status s = jobs[k].run(o);
            calls++;
            if (!s.ok() || o != serial[k]) mismatches++;
            if (it % 5 == 0) {  // a bad call: weight of the wrong shape, named in the error
                std::vector<float> y(x.size()), wrong(100);
                TensorView xv = view(x, {64, 768}), wv = view(wrong, {100}), yv = view(y, {64, 768});
                const Status e = normgen::layer_norm_forward(xv, {768}, &wv, nullptr, 1e-5, yv, nullptr, nullptr);
                if (e.ok() || e.message().find("weight") == std::string::npos) bad_errors++;
                if (!std::all_of(y.begin(), y.end(), [](float f) { return f == 0.f; })) bad_errors++;
            }
        }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; t++) threads.emplace_back(worker, t);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    stop = true;
    for (auto &th : threads) th.join();
    EXPECT_GT(calls.load(), 8 * static_cast<int64_t>(jobs.size()));
    EXPECT_EQ(mismatches.load(), 0) << "of " << calls.load() << " concurrent calls";
    EXPECT_EQ(bad_errors.load(), 0);
}

}  // namespace

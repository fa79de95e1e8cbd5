// JIT instances of a workload's generator with a given schedule-knob string: the same
// algorithm and schedule code the AOT build runs, so a measured winner is exactly what
// the build emits with that string. Every instance of a workload reads the same input
// buffers (bound by argument name).
#pragma once

#include "workload.h"

#include "Halide.h"

#include <map>
#include <string>
#include <vector>

namespace normgen::tune {

struct Instance {
    std::string knobs;
    Halide::Pipeline pipeline;
    std::vector<Halide::Buffer<>> outputs;
    double compile_seconds = 0;
    bool gpu = false;  // a GPU pipeline: outputs stay on the device; a run ends when its kernels do
    void run() {
        pipeline.realize(Halide::Realization(outputs));
        if (gpu)
            for (Halide::Buffer<> &o : outputs) o.device_sync();
    }
};

class JitWorkload {
public:
    JitWorkload(const Workload &w, const Halide::Target &t) : w_(w), target_(t) {}
    // Generate, bind and JIT-compile; throws (Halide::Error, std::exception) on failure.
    Instance instantiate(const std::string &knobs);
    // Bytes of every input and output buffer (for the copy reference).
    size_t bytes(const Instance &i) const;
    // max |a - b| / max(1, max |b|) over every output element (b: the reference).
    static double max_rel_diff(const Instance &a, const Instance &b);
    // Where each output of a first differs from b's by more than `tolerance` (relative,
    // as max_rel_diff): output, flat index, both values; "" if nowhere.
    static std::string first_difference(const Instance &a, const Instance &b, double tolerance);
    const Workload &workload() const { return w_; }

private:
    struct Shape {
        std::vector<int> sizes;
        std::vector<int> storage_order;  // empty: dim 0 innermost
        bool strided = false;            // dim 0 with stride 2 (the strided layouts)
    };
    Shape shape_of(const std::string &name, int dims) const;
    Halide::Buffer<> make_buffer(const std::string &name, const Halide::Type &t, int dims, bool fill);

    Workload w_;
    Halide::Target target_;
    std::map<std::string, Halide::Buffer<>> inputs_;
    static Halide::Buffer<> group_rows_of(const Halide::Buffer<> &x);
};

// Median seconds of `repeats` runs each of `instances`, interleaved over `rounds`
// rounds after `warmup` untimed runs each. Each run starts with the instance's data in
// cache (a lead-in run per round), or, with `evict_bytes`, after writing that many bytes
// of another buffer: the workload's buffers then come from DRAM, as a layer's input
// does in a model whose activations outgrow the last-level cache (this thread's writes
// evict the shared L3 and its own L2; another core's private L2 may keep up to its size).
std::vector<double> time_interleaved(std::vector<Instance *> instances, int rounds, int repeats, int warmup = 2,
                                     size_t evict_bytes = 0);

double median(std::vector<double> v);

}  // namespace normgen::tune

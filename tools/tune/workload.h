// A tuning workload: one kernel family instance at one shape, named by the same
// descriptor the benchmarks use (<op>:<dir>:<dtype>:<shape>[:<layout>]), and the
// schedule-knob space the tuner searches for it.
#pragma once

#include "Halide.h"

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace normgen::tune {

struct KnobSpec {
    std::string name;
    std::vector<int> values;  // the searched values, ascending
    int default_value = 0;    // the family's default (a searched value equal to it is the default)
};

struct Workload {
    std::string op, dir, dtype, layout;
    std::vector<int64_t> shape;                 // as the user wrote it: (rows..., cols) or (N, C, *spatial)
    std::string generator;                      // the registered generator, <op>_<dir>
    std::map<std::string, std::string> params;  // its GeneratorParams (dtype, layout and `variant`)
    // The kernel-list variant this workload tunes (generator params, e.g. has_weight=true):
    // the one the runtime dispatches for the common call (affine, training).
    std::map<std::string, std::string> variant;
    bool row_family = false;                    // (cols, rows) views; else (s, c, n) channel views
    int groups = 0;                             // group_norm / instance_norm
    int activation = 0;                         // fused epilogues: the activation code (0: none)

    // Parses a descriptor; throws std::invalid_argument naming the bad part.
    static Workload parse(const std::string &descriptor);
    std::string descriptor() const;

    int64_t cols() const { return shape.back(); }
    int64_t rows() const;
    // Channel families: the (N, C, spatial) view the runtime passes the kernel (for
    // weight_norm, v's dim 0 as C; for zscore, (1, features, samples)).
    std::vector<int64_t> ncs;
    int64_t batch() const { return ncs[0]; }
    int64_t channels() const { return ncs[1]; }
    int64_t spatial() const { return ncs[2]; }

    // The shape a kernel tuned for this workload is dispatched for: rows x cols, or
    // N x C x spatial (what the runtime's request carries).
    std::string dispatch_shape() const;
    // A kernel-list line (schedules/tuned/ grammar) building this workload with `knobs`.
    std::string kernel_list_line(const std::string &knobs) const;

    // The knobs of this family's parameter struct for `target` (GPU targets: the CUDA
    // schedules' GpuParams), each with its searched values.
    std::vector<KnobSpec> knob_space(const Halide::Target &target) const;
};

// Whether a point of the knob space is worth compiling: combinations whose unrolled
// vector code explodes (lanes x accumulators or lanes x unroll beyond 64 float32 values,
// partial tiles beyond 1024) are rejected up front; vector_lanes=0 stands for the
// target's natural width, and knobs outside `space` constrain nothing. GPU knobs:
// thread counts that do not tile a block (tile_x must divide threads, threads a
// multiple of the warp). Returns the reason when rejected.
std::string rejected(const std::vector<KnobSpec> &space, const std::vector<int> &index, const Halide::Target &target);

// Knob strings: "k:v,k:v" in the knob space's order (empty: the defaults).
std::string knob_string(const std::vector<KnobSpec> &space, const std::vector<int> &index);

// `knobs` without the knobs that leave the schedule as the default: values equal to the
// family's default and knobs `space` does not hold (the kernel's direction ignores
// them). Empty: the default schedule. (Trial logs from before the knob space skipped
// those hold such strings.)
std::string canonical_knobs(const std::vector<KnobSpec> &space, const std::string &knobs);

// Every descriptor of a suite file (one per line, '#' comments).
std::vector<std::string> read_suite(const std::string &path);

}  // namespace normgen::tune

// Schedule knobs of every family on CUDA GPUs. Data, not code: the kernel list and the
// tuner set them through the generator's `schedule` string, as on CPUs.
#pragma once

#include "knobs.h"

namespace normgen::sched {

struct GpuParams {
    int threads = 256;       // threads per block of elementwise and thread-per-key loops
    int tile_x = 32;         // elementwise: threads of a block along the unit-stride dim
    int vector = 4;          // elementwise: elements per thread along the unit-stride dim (vector loads)
    int unit_elems = 4096;   // reductions read by a warp: elements per work unit (phase 1)
    int thread_elems = 64;   // reductions read by a thread: positions per work unit (phase 1)
    int block_rows = 64;     // row backward: rows per dweight/dbias partial

    static constexpr IntKnob<GpuParams> knobs[] = {
        {"threads", &GpuParams::threads, 32, 1024, "threads per block of elementwise / per-key loops"},
        {"tile_x", &GpuParams::tile_x, 1, 1024, "elementwise threads along the unit-stride dim"},
        {"vector", &GpuParams::vector, 1, 8, "elements per thread along the unit-stride dim"},
        {"unit_elems", &GpuParams::unit_elems, 32, 1 << 24, "elements per warp reduction unit"},
        {"thread_elems", &GpuParams::thread_elems, 1, 1 << 20, "positions per thread reduction unit"},
        {"block_rows", &GpuParams::block_rows, 1, 1 << 20, "row backward: rows per parameter-gradient partial"},
    };

    static GpuParams parse(const std::string &text) {
        GpuParams p;
        parse_knobs(text, p, knobs);
        if (p.threads % p.tile_x != 0)
            throw std::invalid_argument("schedule knob 'tile_x'=" + std::to_string(p.tile_x) +
                                        " must divide 'threads'=" + std::to_string(p.threads));
        return p;
    }
    std::string str() const { return format_knobs(*this, knobs); }
};

}  // namespace normgen::sched

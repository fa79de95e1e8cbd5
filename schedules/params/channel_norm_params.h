// Schedule knobs of the channel-wise family (BatchNorm; InstanceNorm and GroupNorm
// follow) on CPUs. Data, not code: the kernel list and the tuner set them.
#pragma once

#include "knobs.h"

namespace normgen::sched {

struct ChannelNormCpuParams {
    int vector_lanes = 0;     // float32 lanes per vector; 0 = the natural width (see backward_knobs)
    int accumulators = 2;     // independent vector accumulators per reduction (ILP)
    int out_unroll = 1;       // vectors per iteration of the output loop
    int block_kib = 256;      // channels-last: KiB of input per parallel reduction block
    int min_blocks = 8;       // channels-last: at least this many reduction blocks
    int channels_per_task = 4; // nchw: channels per parallel task
    int channel_vectors = 16; // channels-last: C = lanes x v (v = this, this / 2, ..., 2) runs as one chunk

    static constexpr IntKnob<ChannelNormCpuParams> knobs[] = {
        {"vector_lanes", &ChannelNormCpuParams::vector_lanes, 0, 64, "float32 lanes per vector (0: natural; unfused channel-norm backward on Zen 4: half)"},
        {"accumulators", &ChannelNormCpuParams::accumulators, 1, 16, "vector accumulators per reduction"},
        {"out_unroll", &ChannelNormCpuParams::out_unroll, 1, 8, "vectors per output-loop iteration"},
        {"block_kib", &ChannelNormCpuParams::block_kib, 4, 65536, "channels-last KiB per reduction block"},
        {"min_blocks", &ChannelNormCpuParams::min_blocks, 1, 4096, "channels-last minimum reduction blocks"},
        {"channels_per_task", &ChannelNormCpuParams::channels_per_task, 1, 1024, "nchw: channels per parallel task"},
        {"channel_vectors", &ChannelNormCpuParams::channel_vectors, 0, 16,
         "channels-last: one chunk of v vectors when C = lanes x v, v = this, this / 2, ..., 2 (0: never)"},
    };

    static ChannelNormCpuParams parse(const std::string &text) {
        ChannelNormCpuParams p;
        parse_knobs(text, p, knobs);
        return p;
    }
    std::string str() const { return format_knobs(*this, knobs); }
};

}  // namespace normgen::sched

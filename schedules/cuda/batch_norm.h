// CUDA schedules of BatchNorm, per layout. They decide which threads compute what,
// never what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/channel_norm.h"
#include "../params/gpu_params.h"

#include <string>

namespace normgen::sched {

// Statistics in two deterministic phases (per-unit partials, then an in-order sum per
// channel), per-channel coefficients by one thread each, then the elementwise output.
void schedule_batch_norm_forward_cuda(alg::ChannelNormForward &p, const GpuParams &k, const std::string &layout);
void schedule_batch_norm_backward_cuda(alg::ChannelNormBackward &p, const GpuParams &k, const std::string &layout);

}  // namespace normgen::sched

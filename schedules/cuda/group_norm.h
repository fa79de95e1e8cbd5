// CUDA schedules of GroupNorm (and InstanceNorm), per layout. They decide which threads
// compute what, never what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/group_norm.h"
#include "../params/gpu_params.h"

#include <string>

namespace normgen::sched {

// Per-(channel, sample) statistics in two deterministic phases, the per-group merges and
// per-channel coefficients by one thread each, then the elementwise output.
void schedule_group_norm_forward_cuda(alg::GroupNormForward &p, const GpuParams &k, const std::string &layout);
void schedule_group_norm_backward_cuda(alg::GroupNormBackward &p, const GpuParams &k, const std::string &layout);

}  // namespace normgen::sched

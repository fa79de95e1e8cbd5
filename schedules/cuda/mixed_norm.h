// CUDA schedules of Batch-Instance Norm and Switchable Norm. They decide which threads
// compute what, never what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/mixed_norm.h"
#include "../params/gpu_params.h"

#include <string>

namespace normgen::sched {

// Per-(channel, sample) moments in two deterministic phases, the merges over samples /
// channels and the per-cell coefficients by one thread each, then the output.
void schedule_mixed_norm_forward_cuda(alg::MixedNormForward &p, const GpuParams &k, const std::string &layout);
void schedule_mixed_norm_backward_cuda(alg::MixedNormBackward &p, const GpuParams &k, const std::string &layout);

}  // namespace normgen::sched

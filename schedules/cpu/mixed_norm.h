// CPU schedules of Batch-Instance Norm and Switchable Norm (algorithms/mixed_norm.h).
#pragma once

#include "../../generators/algorithms/mixed_norm.h"
#include "../params/channel_norm_params.h"

#include <string>

namespace normgen::sched {

void schedule_mixed_norm_forward_cpu(alg::MixedNormForward &p, const ChannelNormCpuParams &k,
                                     const Halide::Target &t, const std::string &layout, const Halide::Expr &spatial,
                                     const Halide::Expr &channels);
void schedule_mixed_norm_backward_cpu(alg::MixedNormBackward &p, const ChannelNormCpuParams &k,
                                      const Halide::Target &t, const std::string &layout, const Halide::Expr &spatial,
                                      const Halide::Expr &channels);

}  // namespace normgen::sched

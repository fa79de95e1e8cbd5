// CPU schedules of GroupNorm (and InstanceNorm, its G = C case).
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/group_norm.h"
#include "../params/channel_norm_params.h"

namespace normgen::sched {

void schedule_group_norm_forward_cpu(alg::GroupNormForward &p, const ChannelNormCpuParams &k, const Halide::Target &t,
                                     const std::string &layout, const alg::GroupIndexing &gi,
                                     const Halide::Expr &spatial);
void schedule_group_norm_backward_cpu(alg::GroupNormBackward &p, const ChannelNormCpuParams &k,
                                      const Halide::Target &t, const std::string &layout,
                                      const alg::GroupIndexing &gi, const Halide::Expr &spatial);

}  // namespace normgen::sched

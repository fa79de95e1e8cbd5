// CPU schedules of BatchNorm, one per layout. They decide loop order, vectorization,
// parallelism and fusion only; they never change what is computed.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/channel_norm.h"
#include "../params/channel_norm_params.h"

namespace normgen::sched {

// layout: "nchw" (spatial unit-stride), "nhwc" (channels unit-stride) or "strided".
void schedule_batch_norm_forward_cpu(alg::ChannelNormForward &p, const ChannelNormCpuParams &k,
                                     const Halide::Target &t, const std::string &layout,
                                     const Halide::Expr &spatial, const Halide::Expr &channels,
                                     const Halide::Expr &batch);
void schedule_batch_norm_backward_cpu(alg::ChannelNormBackward &p, const ChannelNormCpuParams &k,
                                      const Halide::Target &t, const std::string &layout,
                                      const Halide::Expr &spatial, const Halide::Expr &channels,
                                      const Halide::Expr &batch);

}  // namespace normgen::sched

// CPU schedules of the per-channel operations on (s, c, n) views that are not
// normalizations of activations: weight normalization, BatchNorm folding and the
// input scalers' statistics and affine maps.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/feature_scaling.h"
#include "../../generators/algorithms/fold_batch_norm.h"
#include "../../generators/algorithms/weight_norm.h"
#include "../params/channel_norm_params.h"

namespace normgen::sched {

struct ChannelShape {
    std::string layout;
    Halide::Expr spatial, channels, batch;
};

void schedule_weight_norm_forward_cpu(alg::WeightNormForward &p, const ChannelNormCpuParams &k,
                                      const Halide::Target &t, const ChannelShape &shape);
void schedule_weight_norm_backward_cpu(alg::WeightNormBackward &p, const ChannelNormCpuParams &k,
                                       const Halide::Target &t, const ChannelShape &shape);
void schedule_fold_batch_norm_cpu(alg::FoldBatchNorm &p, const ChannelNormCpuParams &k, const Halide::Target &t,
                                  const ChannelShape &shape);
void schedule_feature_stats_cpu(alg::FeatureStats &p, const ChannelNormCpuParams &k, const Halide::Target &t,
                                const ChannelShape &shape);
void schedule_feature_affine_cpu(alg::FeatureAffine &p, const ChannelNormCpuParams &k, const Halide::Target &t,
                                 const ChannelShape &shape);

}  // namespace normgen::sched

// CUDA schedules of the per-channel operations on (s, c, n) views: weight
// normalization, BatchNorm folding and the input scalers' statistics and affine maps.
#pragma once

#include "Halide.h"
#include "../../generators/algorithms/feature_scaling.h"
#include "../../generators/algorithms/fold_batch_norm.h"
#include "../../generators/algorithms/weight_norm.h"
#include "../params/gpu_params.h"

#include <string>

namespace normgen::sched {

void schedule_weight_norm_forward_cuda(alg::WeightNormForward &p, const GpuParams &k, const std::string &layout);
void schedule_weight_norm_backward_cuda(alg::WeightNormBackward &p, const GpuParams &k, const std::string &layout);
void schedule_fold_batch_norm_cuda(alg::FoldBatchNorm &p, const GpuParams &k, const std::string &layout);
void schedule_feature_stats_cuda(alg::FeatureStats &p, const GpuParams &k, const std::string &layout);
void schedule_feature_affine_cuda(alg::FeatureAffine &p, const GpuParams &k, const std::string &layout);

}  // namespace normgen::sched

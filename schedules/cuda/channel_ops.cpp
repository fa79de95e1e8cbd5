#include "channel_ops.h"

#include "gpu_loops.h"

namespace normgen::sched {

using namespace Halide;

// Not measured: no GPU on the development machine (PTX checked with ptxas only).
// Each: per-channel reductions in two deterministic phases, per-channel values by one
// thread each, the elementwise output in coalesced tiles.
void schedule_weight_norm_forward_cuda(alg::WeightNormForward &p, const GpuParams &k, const std::string &layout) {
    gpu::channel_reduction(p.sumsq, p.k, layout, k);
    gpu::thread_per_point(p.norm, k);
    gpu::small_per_key({p.scale}, k);
    gpu::channel_elementwise(p.w, layout, k);
}

void schedule_weight_norm_backward_cuda(alg::WeightNormBackward &p, const GpuParams &k, const std::string &layout) {
    gpu::channel_reduction(p.dot, p.k, layout, k);
    gpu::small_per_key(p.per_channel, k);
    gpu::thread_per_point(p.dg, k);
    gpu::channel_elementwise(p.dv, layout, k);
}

void schedule_fold_batch_norm_cuda(alg::FoldBatchNorm &p, const GpuParams &k, const std::string &layout) {
    gpu::small_per_key({p.scale}, k);
    gpu::thread_per_point(p.b, k);
    gpu::channel_elementwise(p.w, layout, k);
}

void schedule_feature_stats_cuda(alg::FeatureStats &p, const GpuParams &k, const std::string &layout) {
    gpu::small_channel_reduction(p.pilot_sum, p.pilot, layout, k);
    gpu::small_per_key({p.shift}, k);
    gpu::channel_reduction(p.acc, p.k, layout, k);
    gpu::thread_per_point(p.stats, k);
}

void schedule_feature_affine_cuda(alg::FeatureAffine &p, const GpuParams &k, const std::string &layout) {
    gpu::channel_elementwise(p.y, layout, k);
}

}  // namespace normgen::sched

#include "batch_norm.h"

#include "gpu_loops.h"

namespace normgen::sched {

using namespace Halide;

// Not measured: no GPU on the development machine (PTX checked with ptxas only).
void schedule_batch_norm_forward_cuda(alg::ChannelNormForward &p, const GpuParams &k, const std::string &layout) {
    if (p.stats.defined()) {
        gpu::small_channel_reduction(p.pilot_sum, p.pilot, layout, k);
        gpu::channel_reduction(p.dev, p.k, layout, k);
        gpu::thread_per_point(p.stats, k);
    }
    gpu::small_per_key(p.per_channel, k);
    gpu::channel_elementwise(p.y, layout, k, activation_cases(p.activation));
}

void schedule_batch_norm_backward_cuda(alg::ChannelNormBackward &p, const GpuParams &k, const std::string &layout) {
    const std::vector<Expr> cases = activation_cases(p.activation);
    gpu::channel_reduction(p.sums, p.k, layout, k, cases);
    for (Func &g : p.param_grads) gpu::thread_per_point(g, k);
    gpu::channel_elementwise(p.dx, layout, k, cases);
}

}  // namespace normgen::sched

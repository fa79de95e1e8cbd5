#include "group_norm.h"

#include "gpu_loops.h"

namespace normgen::sched {

using namespace Halide;

// Not measured: no GPU on the development machine (PTX checked with ptxas only).
void schedule_group_norm_forward_cuda(alg::GroupNormForward &p, const GpuParams &k, const std::string &layout) {
    gpu::small_channel_reduction(p.pilot_sum, p.pilot, layout, k);
    gpu::small_per_key({p.shift}, k);
    gpu::channel_reduction(p.dev, p.k, layout, k);
    gpu::small_per_key(p.per_group, k);
    gpu::small_per_key(p.per_channel, k);
    gpu::thread_per_point(p.stats, k);
    gpu::channel_elementwise(p.y, layout, k, activation_cases(p.activation));
}

void schedule_group_norm_backward_cuda(alg::GroupNormBackward &p, const GpuParams &k, const std::string &layout) {
    const std::vector<Expr> cases = activation_cases(p.activation);
    gpu::small_per_key(p.per_channel_in, k);
    gpu::channel_reduction(p.sums, p.k, layout, k, cases);
    gpu::small_per_key({p.group_sums}, k);
    gpu::small_per_key(p.per_channel, k);
    gpu::channel_elementwise(p.dx, layout, k, cases);
    if (!p.channel_sums.defined()) return;
    gpu::thread_per_point(p.channel_sums, k);
    for (Func &g : p.param_grads) gpu::thread_per_point(g, k);
}

}  // namespace normgen::sched

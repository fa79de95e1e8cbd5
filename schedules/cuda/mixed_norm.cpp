#include "mixed_norm.h"

#include "gpu_loops.h"

namespace normgen::sched {

using namespace Halide;

// Not measured: no GPU on the development machine (PTX checked with ptxas only).
void schedule_mixed_norm_forward_cuda(alg::MixedNormForward &p, const GpuParams &k, const std::string &layout) {
    gpu::small_channel_reduction(p.moments.pilot_sum, p.moments.pilot, layout, k);
    gpu::channel_reduction(p.moments.dev, p.moments.k, layout, k);
    gpu::small_per_key({p.moments.cell}, k);
    gpu::small_per_key(p.merges, k);
    gpu::small_per_key(p.coeffs, k);
    for (Func f : {p.cell_stats, p.sample_stats, p.channel_stats})
        if (f.defined()) gpu::thread_per_point(f, k);
    gpu::channel_elementwise(p.y, layout, k);
}

void schedule_mixed_norm_backward_cuda(alg::MixedNormBackward &p, const GpuParams &k, const std::string &layout) {
    gpu::channel_reduction(p.sums, p.k, layout, k);
    gpu::small_per_key(p.merges, k);
    gpu::small_per_key(p.coeffs, k);
    for (Func &g : p.param_grads) gpu::thread_per_point(g, k);
    gpu::channel_elementwise(p.dx, layout, k);
}

}  // namespace normgen::sched

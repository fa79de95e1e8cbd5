// The shape shared by the channel-wise normalizations of (N, C, *spatial) tensors
// (BatchNorm, and later InstanceNorm and GroupNorm): what their pipelines expose to a
// schedule. Tensors are 3-D views x(s, c, n): s = the flattened spatial dims, c the
// channel, n the batch; the layout (which of them is unit-stride) is the kernel's.
#pragma once

#include "common.h"

#include <vector>

namespace normgen::alg {

inline Var spatial_var() { return Var("s"); }
inline Var channel_var() { return Var("c"); }
inline Var batch_var() { return Var("n"); }

struct ChannelNormForward {
    Func pilot_sum;                // per-channel sum over `pilot` (a sample: the shift)
    RDom pilot;                    // (s, n) sub-domain
    Func dev;                      // per-channel (sum d, sum d^2) over `k`
    RDom k;                        // the full reduction domain: (s, n)
    std::vector<Func> per_channel; // per-channel values the output loop reads (shift, mean, scale)
    Func y;                        // output (s, c, n), storage type
    Func stats;                    // output (c), float32 Tuple (undefined in inference)
    Expr activation;               // the epilogue's run-time activation code (undefined: none)
};

struct ChannelNormBackward {
    Func sums;                     // per-channel reductions over `k` (undefined in inference)
    RDom k;                        // (s, n)
    Func dx;                       // output (s, c, n); with a fused residual, Tuple (dx, dresidual = dz)
    Func param_sums;               // per-channel (sum dy*xhat, sum dy) over `k` (inference)
    std::vector<Func> param_grads; // outputs (c): dweight, dbias (with weight)
    Expr activation;               // the epilogue's run-time activation code (undefined: none)
};

}  // namespace normgen::alg

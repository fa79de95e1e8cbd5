// Shared plumbing of the channel-wise ops on (N, C, *spatial) tensors (BatchNorm; later
// InstanceNorm and GroupNorm): checks, 3-D (s, c, n) views (staged through a contiguous
// copy when the spatial dims have no single stride), the layout choice, and the call.
#pragma once

#include "kernel_table.h"
#include "tensor.h"

#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace normgen::detail {

class ChannelCall {
public:
    explicit ChannelCall(const TensorView &x) : x_(x) {}
    // Group kernels: tensors are bound as (s, j, g, n) and per-channel values as
    // (j, g[, n]); kernels whose arguments have one dim fewer (channels-last ones,
    // which take `groups` as a scalar) get (j, g) merged back into one channel dim.
    void set_groups(int64_t groups);

    // x is (N, C, *spatial) with 0-3 spatial dims.
    Status check_x(const char *name = "x");
    int64_t batch() const { return batch_; }
    int64_t channels() const { return channels_; }
    int64_t spatial() const { return spatial_; }

    Status check_like_x(const TensorView &t, const char *name) const;
    // A (C,) tensor of x's dtype (parameters) or of float32 (statistics).
    Status check_per_channel(const TensorView *t, const char *name, bool float32) const;

    void bind_tensor(const TensorView &t, const char *arg, bool output);
    // The group kernels' second view of a bound tensor (`tensor_arg`) as rows of whole
    // groups, (q, g, n) with q over a group's C/G x S values: the NCHW kernels read their
    // statistics through it. A tensor whose groups are not dense runs (channel stride !=
    // S) runs the strided kernels instead.
    void bind_group_rows(const char *tensor_arg, const char *arg);
    void bind_channel(const TensorView &t, const char *arg, bool output);
    // A per-channel float32 output that may be absent (scratch then); returns its data.
    float *bind_channel_stat(const TensorView *t, const char *arg);
    // Bind "weight" and "bias" (kernels take both or neither; a lone one gets the
    // identity for the other). Returns whether any was given.
    bool bind_affine(const TensorView *weight, const TensorView *bias);
    // Per-channel storage of x's dtype filled with `value` (a parameter the caller left out).
    const TensorView &constant_channel(float value);
    // A scratch tensor of x's shape and dtype (an output the caller did not ask for).
    const TensorView &scratch_like_x();
    // A float32 (d1, d0) row-major output (d0 fastest), e.g. per-(sample, group)
    // statistics; scratch if t is null or not contiguous. Returns its data.
    float *bind_stat_2d(const TensorView *t, const char *arg, int64_t d0, int64_t d1, bool output);
    // A unit-stride 1-D argument of `extent` elements: t's own memory when it has unit
    // stride, else a contiguous copy (inputs) or scratch copied back (outputs); zeroed
    // scratch of `dtype` when t is null. Returns the data.
    void *bind_vector(const TensorView *t, const char *arg, int64_t extent, DType dtype, bool output);
    void bind_scalar(const char *arg, float v);
    void bind_int(const char *arg, int32_t v);
    // An epilogue's run-time arguments (activation code, slope, residual tensor).
    void bind_epilogue(const Epilogue &e);
    // Checks of an epilogue's tensors (the residual: x's shape and dtype).
    Status check_epilogue(const Epilogue *e) const;
    // A backward's epilogue arguments: the epilogue's tensors, the forward's bias, and
    // dresidual (only with a residual).
    Status check_fused_backward(const Epilogue *e, const TensorView *bias, const TensorView *dresidual) const;
    // Backward outputs: dx, or with a fused residual the Tuple (dx, dresidual) as
    // dx.0 / dx.1 (scratch for an unrequested dresidual).
    void bind_dx(const TensorView &dx, const TensorView *dresidual, bool with_dresidual);
    // Backward parameters: the weight (an identity where a fused kernel needs one), the
    // parameter gradients (scratch if not requested) and, for a fused kernel (`fused`:
    // its epilogue), the forward's bias and the epilogue. Returns whether a weight was
    // bound. `per_sample_sums`: GroupNorm's channel_sums outputs go with the weight.
    bool bind_backward_params(const TensorView *weight, const TensorView *bias, const TensorView *dweight,
                              const TensorView *dbias, const Epilogue *fused, bool per_sample_sums = false);
    // The op's variant `rest` plus the keys a fused kernel adds (add_residual=0|1,
    // epilogue=1) when `fused`.
    static Variant variant(const Epilogue *fused, Variant rest);
    // A float32 per-(channel, sample) scratch output of group kernels.
    void bind_channel_scratch(const char *arg);

    // The op reduces or maps over all of (s, n) alike (BatchNorm, the feature ops): a
    // channels-last call whose samples follow each other in memory then runs as one
    // sample of N x S positions, so the kernels' blocks of positions span samples (an
    // (N, C) BatchNorm1d input was otherwise N blocks of one row each). Dispatch still
    // sees the call's (N, C, S).
    void fold_batch_into_spatial() { fold_batch_ = true; }

    Status run(const char *op, const char *dir, const Variant &variant);

private:
    struct Bound {
        HalideBuf hb;
        const char *arg = nullptr;
        int channel_dim = -1;  // where (j, g) starts, for group kernels
        const TensorView *out_view = nullptr;
        void *stage = nullptr;
        bool on_device = false;  // the caller's CUDA memory
        bool tensor = false;     // an (s, c, n) tensor (bind_tensor)
    };
    Bound &new_bound(const char *arg, int channel_dim);
    // fold_batch_into_spatial() on the bound tensors, when every one's samples are contiguous.
    void fold_batch();
    bool fold_batch_ = false;
    // A tensor of a CUDA call bound at `data` (its own memory unless staged; staging a
    // CUDA tensor is refused unless `may_stage`: small parameters and statistics).
    void note_device(Bound &b, const TensorView &t, const void *data, bool may_stage);
    std::string device_problem_;  // a CUDA tensor that would need a host copy
    std::string mismatch_;        // a tensor on another device than x
    const TensorView &x_;
    int64_t batch_ = 0, channels_ = 0, spatial_ = 0, groups_ = 0;
    // The layout every bound tensor shares: 0 = s unit-stride (nchw), 1 = c (nhwc), -1 = other.
    int unit_dim_ = -2;
    bool params_unit_ = true;
    bool group_rows_ = true;  // bind_group_rows found dense groups (or was not called)
    // (From the thread's call pool: a steady call allocates nothing.)
    std::pmr::deque<Bound> bound_{call_memory()};
    std::pmr::deque<float> scalars_{call_memory()};
    std::pmr::deque<int32_t> ints_{call_memory()};
    int32_t groups_arg_ = 0;
    std::pmr::deque<TensorView> views_{call_memory()};
    std::pmr::deque<std::pmr::vector<float>> stats_{call_memory()};
    Staging staging_;
    Args args_;
};

// Element i of a (C,) view with any stride; element (i, j) of a 2-D view.
float &element(const TensorView &t, int64_t i);
float &element(const TensorView &t, int64_t i, int64_t j);

// The running statistics of BatchNorm (and of the BN parts of Batch-Instance and
// Switchable Norm): given together; required in inference; momentum finite or None
// (with num_batches_tracked); more than one value per channel when training.
Status check_bn_running_stats(const ChannelCall &call, const TensorView *running_mean, const TensorView *running_var,
                              bool training, std::optional<double> momentum, const int64_t *num_batches_tracked);
// A channel's batch variance as the running statistics take it: NaN when its mean is
// not finite (the kernels' variance clamp would say 0).
double batch_variance(double mean, double var);
// nan_policy is one of NanPolicy's values (an error naming it otherwise).
[[nodiscard]] Status check_nan_policy(NanPolicy nan_policy);
// r = (1 - m) r + m * batch (running_var with the unbiased variance of `count` values per
// channel); m = momentum, or 1/num_batches_tracked after incrementing it (momentum None).
// NanPolicy::skip leaves channels whose batch mean or variance is not finite as they are.
// mean/var are host memory; the running statistics may be CUDA tensors.
[[nodiscard]] Status update_running_stats(NanPolicy nan_policy, const TensorView &running_mean,
                                          const TensorView &running_var, const float *mean, const float *var,
                                          int64_t count, std::optional<double> momentum,
                                          int64_t *num_batches_tracked);

}  // namespace normgen::detail

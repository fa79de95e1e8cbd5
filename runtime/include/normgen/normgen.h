// normgen — the public C++ API.
//
// Every op takes tensor views (pointer + dtype + shape + strides) for its inputs and
// its preallocated outputs, validates all of them before touching memory, and returns
// a Status: ok, or an error whose message names the argument and says what was
// expected and what was got. Nothing is written when a call fails validation.
//
//   normgen::TensorView x = normgen::TensorView::contiguous(ptr, normgen::DType::f32, {rows, cols});
//   normgen::Status s = normgen::layer_norm_forward(x, {cols}, &w, &b, 1e-5, y, &mean, &rstd);
//   if (!s.ok()) std::cerr << s.message() << "\n";
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#if defined(NORMGEN_BUILDING)
#define NORMGEN_API __attribute__((visibility("default")))
#else
#define NORMGEN_API
#endif

namespace normgen {

// Storage element types. Statistics are always float32.
enum class DType : uint8_t { f32, f16, bf16 };
NORMGEN_API const char *dtype_name(DType t);
NORMGEN_API int dtype_size(DType t);

enum class Device : uint8_t { cpu, cuda };

// A non-owning view of a strided tensor. Strides are in elements and may be any
// value (including 0 for broadcast inputs); shape[i] >= 0.
struct NORMGEN_API TensorView {
    static constexpr int kMaxRank = 8;
    void *data = nullptr;
    DType dtype = DType::f32;
    // cuda: `data` is device memory of CUDA device `device_index` (e.g. from cudaMalloc
    // or a torch CUDA tensor); the call runs the CUDA kernels there, in the device's
    // primary context on the default stream, and copies nothing. A call's tensors share
    // one device.
    Device device = Device::cpu;
    int device_index = 0;
    int rank = 0;
    std::array<int64_t, kMaxRank> shape{};
    std::array<int64_t, kMaxRank> strides{};

    // A row-major (C-contiguous) view.
    static TensorView contiguous(void *data, DType dtype, std::initializer_list<int64_t> shape);
    static TensorView contiguous(void *data, DType dtype, const std::vector<int64_t> &shape);
    // A view with explicit strides (in elements).
    static TensorView strided(void *data, DType dtype, const std::vector<int64_t> &shape,
                              const std::vector<int64_t> &strides);

    int64_t numel() const;
    std::vector<int64_t> sizes() const { return std::vector<int64_t>(shape.begin(), shape.begin() + rank); }
};

class NORMGEN_API Status {
public:
    enum class Code : uint8_t {
        ok,
        invalid_argument,  // bad shape, value, stride, aliasing (Python: ValueError)
        type_error,        // bad dtype or device (Python: TypeError)
        runtime_error,     // a kernel failed at run time (Python: RuntimeError)
    };
    Status() = default;
    Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
    static Status OK() { return Status(); }
    bool ok() const { return code_ == Code::ok; }
    Code code() const { return code_; }
    const std::string &message() const { return message_; }

private:
    Code code_ = Code::ok;
    std::string message_;
};

// ---- threads -------------------------------------------------------------------------
// Worker threads used by the CPU kernels (default: the number of cores, or
// HL_NUM_THREADS); n < 1 restores that default. Returns the previous value.
NORMGEN_API int set_num_threads(int n);
NORMGEN_API int num_threads();

// Where the CPU kernels' parallel loops run. halide (the default): Halide's own thread
// pool. openmp: the process's OpenMP runtime (GNU libgomp), the pool PyTorch's CPU ops
// run on, so a kernel called between torch ops reuses torch's threads instead of
// competing with them (libgomp's workers spin after each parallel region; on a machine
// with as many threads as cores that spinning stalls another pool's workers). With
// openmp, num_threads() follows omp_get_max_threads() (torch.set_num_threads) until
// set_num_threads() is called. normgen.torch selects openmp when torch's parallel
// backend is this OpenMP runtime. openmp is an error in builds without OpenMP.
enum class ParallelBackend { halide = 0, openmp = 1 };
NORMGEN_API Status set_parallel_backend(ParallelBackend backend);
NORMGEN_API ParallelBackend parallel_backend();
// The shared object of the OpenMP runtime the openmp backend runs on (e.g.
// ".../torch/lib/libgomp.so.1"); empty in builds without OpenMP.
NORMGEN_API std::string openmp_runtime();

// ---- kernel scratch memory -------------------------------------------------------------
// Kernels take their intermediate buffers (per-channel partial sums, staged statistics)
// from a process-wide cache that keeps up to 64 freed blocks / 256 MiB, so repeated calls
// allocate no scratch from the system. Counters over all threads since start:
struct ScratchStats {
    int64_t bytes_in_use;        // scratch held by running kernels now
    int64_t peak_bytes_in_use;   // the most held at once (since reset_scratch_peak)
    int64_t system_allocations;  // blocks the cache had to get from the system
};
NORMGEN_API ScratchStats scratch_stats();
NORMGEN_API void reset_scratch_peak();

// ---- LayerNorm (torch.nn.functional.layer_norm) ----------------------------------------
// x: (*, normalized_shape); weight, bias: normalized_shape (optional, x's dtype);
// y: x's shape and dtype; mean, rstd: float32 with one element per normalized row
// (shape x.shape[:-k] or x.shape[:-k] + (1,)*k), optional.
NORMGEN_API Status layer_norm_forward(const TensorView &x, const std::vector<int64_t> &normalized_shape,
                                      const TensorView *weight, const TensorView *bias, double eps,
                                      const TensorView &y, const TensorView *mean = nullptr,
                                      const TensorView *rstd = nullptr);
// dx: x's shape and dtype. dweight/dbias: normalized_shape, x's dtype; only with weight.
NORMGEN_API Status layer_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &mean,
                                       const TensorView &rstd, const std::vector<int64_t> &normalized_shape,
                                       const TensorView *weight, const TensorView &dx,
                                       const TensorView *dweight = nullptr, const TensorView *dbias = nullptr);

// ---- RMSNorm (torch.nn.functional.rms_norm) --------------------------------------------
// eps = nullopt means the machine epsilon of x's dtype, as torch's eps=None.
NORMGEN_API Status rms_norm_forward(const TensorView &x, const std::vector<int64_t> &normalized_shape,
                                    const TensorView *weight, std::optional<double> eps, const TensorView &y,
                                    const TensorView *rstd = nullptr);
NORMGEN_API Status rms_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &rstd,
                                     const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                                     const TensorView &dx, const TensorView *dweight = nullptr);

// ---- Pre-norm residual add: add_layer_norm / add_rms_norm ---------------------------
// The transformer block's s = x + residual then norm(s), in one pass: s is summed in
// float32 and written rounded once to x's dtype; y normalizes the float32 sum.
// residual and s: x's shape and dtype; other arguments as layer_norm_forward's.
NORMGEN_API Status add_layer_norm_forward(const TensorView &x, const TensorView &residual,
                                          const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                                          const TensorView *bias, double eps, const TensorView &y,
                                          const TensorView &s, const TensorView *mean = nullptr,
                                          const TensorView *rstd = nullptr);
// dx = layer_norm's input gradient at s (the saved sum) plus ds, the gradient reaching s
// from later layers (optional); it is also the residual's gradient.
NORMGEN_API Status add_layer_norm_backward(const TensorView &dy, const TensorView *ds, const TensorView &s,
                                           const TensorView &mean, const TensorView &rstd,
                                           const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                                           const TensorView &dx, const TensorView *dweight = nullptr,
                                           const TensorView *dbias = nullptr);
NORMGEN_API Status add_rms_norm_forward(const TensorView &x, const TensorView &residual,
                                        const std::vector<int64_t> &normalized_shape, const TensorView *weight,
                                        std::optional<double> eps, const TensorView &y, const TensorView &s,
                                        const TensorView *rstd = nullptr);
NORMGEN_API Status add_rms_norm_backward(const TensorView &dy, const TensorView *ds, const TensorView &s,
                                         const TensorView &rstd, const std::vector<int64_t> &normalized_shape,
                                         const TensorView *weight, const TensorView &dx,
                                         const TensorView *dweight = nullptr);

// ---- Fused epilogues ----------------------------------------------------------------
// BatchNorm, InstanceNorm and GroupNorm can finish with y = act(norm(x) + residual) in
// their output pass. The backward recomputes z = norm(x) + residual from x (so it takes
// the forward's bias and residual again) and returns dz = dy * act'(z), the residual's
// gradient, in dresidual; the norm's gradients are taken with dz.
enum class Activation : uint8_t { none, relu, leaky_relu, silu, gelu, gelu_tanh };  // gelu: erf form
struct Epilogue {
    const TensorView *residual = nullptr;  // x's shape and dtype, optional
    Activation activation = Activation::none;
    double negative_slope = 0.01;          // leaky_relu
    bool active() const { return residual || activation != Activation::none; }
};

// ---- Running statistics and NaN/Inf ------------------------------------------------
// The ops that update running statistics in place (BatchNorm, InstanceNorm with running
// statistics, Batch-Instance Norm, Switchable Norm, synchronized BatchNorm) take a
// nan_policy. propagate (torch's behaviour): a channel whose batch statistics are NaN
// or infinite (its data held a NaN or Inf) writes them into its running_mean /
// running_var. skip: such a channel keeps its running statistics, the other channels
// update as usual and num_batches_tracked counts the batch. The call's outputs are the
// same either way (NaN stays in the channel that had it).
enum class NanPolicy : uint8_t { propagate, skip };

// ---- BatchNorm (torch.nn.functional.batch_norm) ---------------------------------------
// x: (N, C) or (N, C, *spatial) with up to 3 spatial dims, any strides (contiguous NCHW
// and channels-last have fast kernels); y: x's shape and dtype; weight, bias: (C,) of
// x's dtype (optional). running_mean/running_var: float32 (C,), optional in training.
// training: normalizes with the batch statistics (biased variance) and, given running
//   statistics, updates them in place: r = (1 - m) r + m * batch, with the unbiased
//   variance for running_var; m = momentum, or 1/num_batches_tracked after incrementing
//   *num_batches_tracked when momentum is nullopt (the cumulative average). A channel
//   with one value is an error, as in torch.
// inference: normalizes with running_mean/running_var (required).
// save_mean/save_rstd: float32 (C,) outputs for batch_norm_backward (the batch's, or
//   the running statistics' in inference), optional.
NORMGEN_API Status batch_norm_forward(const TensorView &x, const TensorView *running_mean,
                                      const TensorView *running_var, const TensorView *weight,
                                      const TensorView *bias, bool training, std::optional<double> momentum,
                                      double eps, const TensorView &y, const TensorView *save_mean = nullptr,
                                      const TensorView *save_rstd = nullptr, int64_t *num_batches_tracked = nullptr,
                                      const Epilogue *epilogue = nullptr, NanPolicy nan_policy = NanPolicy::propagate);
// training: the gradients through the batch statistics; inference (the forward used
// running statistics): the affine gradient dx = dy * weight * rstd. dweight/dbias with weight.
// With an epilogue: bias is the forward's (optional), dresidual (x's shape) receives the
// residual's gradient when the epilogue has a residual.
NORMGEN_API Status batch_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                       const TensorView &save_rstd, const TensorView *weight, bool training,
                                       const TensorView &dx, const TensorView *dweight = nullptr,
                                       const TensorView *dbias = nullptr, const Epilogue *epilogue = nullptr,
                                       const TensorView *bias = nullptr, const TensorView *dresidual = nullptr);

// ---- Synchronized BatchNorm (the steps around the caller's all-reduces) --------------
// BatchNorm training over a batch split across processes. The transport is the
// caller's (torch.distributed in normgen.torch.SyncBatchNorm, MPI in normgen/mpi.h):
// each process runs these steps with its own part of the batch (its x may have N = 0),
// and between them sums a small float64 buffer over all processes (an all-reduce).
//
//   forward:  table = zeros(world, 1 + 2C); sync_batch_norm_moments(x, &table[rank][0]);
//             all-reduce(table, sum); sync_batch_norm_forward(x, table, world, ...)
//   backward: sums = (1 + 2C) doubles; sync_batch_norm_grad_sums(dy, x, ..., sums, dy_scaled, ...);
//             all-reduce(sums, sum); sync_batch_norm_backward(x, dy_scaled, ..., sums, dx)
//
// A row is (count, mean[C], M2[C]) of this process's values per channel (kernel
// statistics: float32, shifted). The forward merges the rows in rank order with Chan's
// formula in float64 (every process computes the same statistics), normalizes with
// them (biased variance), writes save_mean/save_rstd (float32 (C,)) and updates the
// running statistics as batch_norm_forward does, with the unbiased variance of all
// processes' values. The backward's sums are (count, sum dy[C], sum dy*xhat[C]) of this
// process; dweight/dbias (optional, with a weight) are this process's parameter
// gradients (sum them across processes for the whole batch's, as DDP's gradient
// all-reduce does); dx is the whole batch's gradient for this process's x.
// dy_scaled: x's shape and dtype, scratch the backward reads (dy * weight * rstd).
// CPU tensors.
NORMGEN_API Status sync_batch_norm_moments(const TensorView &x, double *row);
NORMGEN_API Status sync_batch_norm_forward(const TensorView &x, const double *table, int64_t world,
                                           const TensorView *running_mean, const TensorView *running_var,
                                           const TensorView *weight, const TensorView *bias,
                                           std::optional<double> momentum, double eps, const TensorView &y,
                                           const TensorView &save_mean, const TensorView &save_rstd,
                                           int64_t *num_batches_tracked = nullptr,
                                           NanPolicy nan_policy = NanPolicy::propagate);
NORMGEN_API Status sync_batch_norm_grad_sums(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                             const TensorView &save_rstd, const TensorView *weight, double *sums,
                                             const TensorView &dy_scaled, const TensorView *dweight = nullptr,
                                             const TensorView *dbias = nullptr);
NORMGEN_API Status sync_batch_norm_backward(const TensorView &x, const TensorView &dy_scaled,
                                            const TensorView &save_mean, const TensorView &save_rstd,
                                            const TensorView *weight, const double *sums, const TensorView &dx);

// ---- GroupNorm (torch.nn.functional.group_norm) ---------------------------------------
// x: (N, C, *spatial); num_groups divides C; weight, bias: (C,) of x's dtype, optional;
// mean, rstd: float32 with N * num_groups elements ((N, G) as torch), optional.
// epilogue: y = act(group_norm(x) + residual); the backward takes it with the forward's
// bias and writes the residual's gradient to dresidual (see Epilogue).
NORMGEN_API Status group_norm_forward(const TensorView &x, int64_t num_groups, const TensorView *weight,
                                      const TensorView *bias, double eps, const TensorView &y,
                                      const TensorView *mean = nullptr, const TensorView *rstd = nullptr,
                                      const Epilogue *epilogue = nullptr);
NORMGEN_API Status group_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &mean,
                                       const TensorView &rstd, int64_t num_groups, const TensorView *weight,
                                       const TensorView &dx, const TensorView *dweight = nullptr,
                                       const TensorView *dbias = nullptr, const Epilogue *epilogue = nullptr,
                                       const TensorView *bias = nullptr, const TensorView *dresidual = nullptr);

// ---- InstanceNorm (torch.nn.functional.instance_norm) ----------------------------------
// Per (n, c) over the spatial dims. use_input_stats: normalize with each instance's
// statistics and, given running_mean/running_var (float32 (C,)), update them in place
// with the batch average of the instance statistics (unbiased variance), as torch.
// Otherwise normalize with the running statistics (required). save_mean/save_rstd:
// float32 (N, C) outputs for instance_norm_backward, optional.
NORMGEN_API Status instance_norm_forward(const TensorView &x, const TensorView *running_mean,
                                         const TensorView *running_var, const TensorView *weight,
                                         const TensorView *bias, bool use_input_stats, double momentum, double eps,
                                         const TensorView &y, const TensorView *save_mean = nullptr,
                                         const TensorView *save_rstd = nullptr, const Epilogue *epilogue = nullptr,
                                         NanPolicy nan_policy = NanPolicy::propagate);
// use_input_stats must be what the forward used (false: the affine gradient).
NORMGEN_API Status instance_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                          const TensorView &save_rstd, const TensorView *weight,
                                          bool use_input_stats, const TensorView &dx,
                                          const TensorView *dweight = nullptr, const TensorView *dbias = nullptr,
                                          const Epilogue *epilogue = nullptr, const TensorView *bias = nullptr,
                                          const TensorView *dresidual = nullptr);

// ---- Batch-Instance Norm (Nam & Kim 2018) ---------------------------------------------
// y = (rho' xhat_BN + (1 - rho') xhat_IN) * weight + bias, rho' = clamp(rho, 0, 1) per
// channel; xhat_BN as batch_norm (batch statistics when training, updating the running
// ones as batch_norm does; running statistics otherwise), xhat_IN per (n, c) over the
// spatial dims, one eps for both. rho, weight, bias: (C,) of x's dtype (weight/bias
// optional). save_mean/save_rstd: float32 (N + 1, C), optional: rows 0..N-1 the IN
// statistics of each sample, row N the BN part's (the running ones in inference).
NORMGEN_API Status batch_instance_norm_forward(const TensorView &x, const TensorView &rho, const TensorView *weight,
                                               const TensorView *bias, const TensorView *running_mean,
                                               const TensorView *running_var, bool training,
                                               std::optional<double> momentum, double eps, const TensorView &y,
                                               const TensorView *save_mean = nullptr,
                                               const TensorView *save_rstd = nullptr,
                                               int64_t *num_batches_tracked = nullptr,
                                               NanPolicy nan_policy = NanPolicy::propagate);
// training must be what the forward used (false: no gradient through the BN statistics).
// drho (rho's gradient through the clamp, which passes it on [0, 1]), dweight, dbias:
// (C,) of x's dtype, optional (dweight/dbias need weight).
NORMGEN_API Status batch_instance_norm_backward(const TensorView &dy, const TensorView &x,
                                                const TensorView &save_mean, const TensorView &save_rstd,
                                                const TensorView &rho, const TensorView *weight, bool training,
                                                const TensorView &dx, const TensorView *drho = nullptr,
                                                const TensorView *dweight = nullptr,
                                                const TensorView *dbias = nullptr);

// ---- Switchable Norm (Luo et al. 2018) ------------------------------------------------
// mean = sum_k softmax(mean_weight)_k mean_k, var = sum_k softmax(var_weight)_k var_k over
// k = (IN, LN, BN), all variances biased; y = (x - mean) / sqrt(var + eps) * weight + bias.
// mean_weight, var_weight: 3 logits of x's dtype. The BN part: batch statistics when
// training (updating running statistics as batch_norm), running ones otherwise.
// save_mean/save_var: float32 (N + 1, C + 1), optional: [n, c] the IN statistics,
// [n, C] the LN ones of sample n, [N, c] the BN part's, [N, C] = 0. save_rstd: float32
// (N, C), the mixture's 1/sqrt(var + eps), optional.
NORMGEN_API Status switchable_norm_forward(const TensorView &x, const TensorView &mean_weight,
                                           const TensorView &var_weight, const TensorView *weight,
                                           const TensorView *bias, const TensorView *running_mean,
                                           const TensorView *running_var, bool training,
                                           std::optional<double> momentum, double eps, const TensorView &y,
                                           const TensorView *save_mean = nullptr, const TensorView *save_var = nullptr,
                                           const TensorView *save_rstd = nullptr,
                                           int64_t *num_batches_tracked = nullptr,
                                           NanPolicy nan_policy = NanPolicy::propagate);
// dmean_weight, dvar_weight: (3,) of x's dtype; dweight, dbias: (C,), with weight.
NORMGEN_API Status switchable_norm_backward(const TensorView &dy, const TensorView &x, const TensorView &save_mean,
                                            const TensorView &save_var, const TensorView &save_rstd,
                                            const TensorView &mean_weight, const TensorView &var_weight,
                                            const TensorView *weight, bool training, const TensorView &dx,
                                            const TensorView *dmean_weight = nullptr,
                                            const TensorView *dvar_weight = nullptr,
                                            const TensorView *dweight = nullptr, const TensorView *dbias = nullptr);

// ---- Weight normalization (torch._weight_norm, torch.nn.utils.weight_norm) ---------
// w = g * v / ||v||, the norm over every dim of v but `dim` (negative counts from the
// end; nullopt: the whole tensor). g: v's dtype, v.shape[dim] elements (shape (K,) or
// torch's kept-dims shape), one element for nullopt. w: v's shape and dtype. norm:
// float32 with g's element count (for weight_norm_backward), optional.
NORMGEN_API Status weight_norm_forward(const TensorView &v, const TensorView &g, std::optional<int64_t> dim,
                                       const TensorView &w, const TensorView *norm = nullptr);
// dv: v's shape and dtype; dg: g's shape and dtype.
NORMGEN_API Status weight_norm_backward(const TensorView &dw, const TensorView &v, const TensorView &norm,
                                        const TensorView &g, std::optional<int64_t> dim, const TensorView &dv,
                                        const TensorView &dg);

// ---- BatchNorm folding ---------------------------------------------------------------
// Fold an inference BatchNorm into the preceding conv/linear layer whose weight w has
// the output channels on axis 0: scale = gamma / sqrt(running_var + eps),
// w_out = w * scale (per output channel), b_out = (b - running_mean) * scale + beta.
// b, gamma, beta: (O,) of w's dtype, optional (0, 1, 0); running stats float32 (O,);
// w_out: w's shape and dtype (may be w itself); b_out: (O,) of w's dtype.
NORMGEN_API Status fold_batch_norm(const TensorView &w, const TensorView *b, const TensorView &running_mean,
                                   const TensorView &running_var, const TensorView *gamma, const TensorView *beta,
                                   double eps, const TensorView &w_out, const TensorView &b_out);

// ---- Input scalers (scikit-learn's StandardScaler / MinMaxScaler) ---------------------
// Fit per feature over (n_samples, n_features) arrays, chunk by chunk: each chunk's
// statistics come from a kernel (float32, shifted moments), chunks merge in float64
// (count, mean, M2 by Chan's formula; min, max), so partial_fit over any chunking of a
// data set gives its statistics. transform / inverse_transform are kernels; outputs
// have the input's shape and dtype. Population variance (ddof = 0). A constant feature
// (variance or range 0) gets scale 1 (scikit-learn's rule): z-score gives 0, min-max
// gives the range's low end.
class NORMGEN_API ZScore {
public:
    Status partial_fit(const TensorView &x);
    Status fit(const TensorView &x);
    Status transform(const TensorView &x, const TensorView &y) const;
    Status inverse_transform(const TensorView &y, const TensorView &x) const;
    int64_t n_samples_seen() const { return count_; }
    int64_t n_features() const { return static_cast<int64_t>(mean_.size()); }
    const std::vector<double> &mean() const { return mean_; }
    std::vector<double> var() const;
    std::vector<double> scale() const;  // std, or 1 for a constant feature

private:
    int64_t count_ = 0;
    std::vector<double> mean_, m2_;
};

class NORMGEN_API MinMax {
public:
    explicit MinMax(double lo = 0.0, double hi = 1.0) : lo_(lo), hi_(hi) {}
    // lo < hi, checked by partial_fit / fit.
    Status partial_fit(const TensorView &x);
    Status fit(const TensorView &x);
    Status transform(const TensorView &x, const TensorView &y) const;  // x * scale + min, not clipped
    Status inverse_transform(const TensorView &y, const TensorView &x) const;
    int64_t n_samples_seen() const { return count_; }
    int64_t n_features() const { return static_cast<int64_t>(data_min_.size()); }
    const std::vector<double> &data_min() const { return data_min_; }
    const std::vector<double> &data_max() const { return data_max_; }
    std::vector<double> data_range() const;
    std::vector<double> scale() const;  // (hi - lo) / range, a zero range taken as 1
    std::vector<double> min() const;    // lo - data_min * scale

private:
    double lo_, hi_;
    int64_t count_ = 0;
    std::vector<double> data_min_, data_max_;
};

// ---- the kernel table (the expansion of generators/kernels.list) ----------------------
struct KernelInfo {
    const char *name;      // e.g. layer_norm_fwd_f32_contig_hb1_hw1
    const char *op;        // layer_norm
    const char *dir;       // fwd | bwd
    const char *dtype;     // f32 | f16 | bf16
    const char *layout;    // contig | strided
    const char *variant;   // generator params, e.g. "has_bias=1,has_weight=1"
    const char *shape;     // shape specialization ("": any): rows x cols, or N x C x spatial
    const char *target;    // cpu | cuda
    const char *schedule;  // schedule knobs ("" = defaults)
    int threads;           // tuned kernels: the thread count they were tuned at, used only then (0: any)
    const char *cpu;       // tuned kernels: the instruction-set feature of the CPU they were tuned on, as
                           // Halide names it (e.g. avx512_zen4); used only on CPUs that have it ("" or null: any)
};
// A snapshot: the built-in kernels and any a consumer registered (normgen/kernel_registry.h).
NORMGEN_API std::vector<KernelInfo> kernels();

// Descriptor of a problem in the grammar shared by logs, tests, bench and tuner:
// "<op>:<dir>:<dtype>:<shape>[:<layout>]", e.g. "layer_norm:fwd:f32:8192x1024".
NORMGEN_API std::string describe(const char *op, const char *dir, DType dtype, const std::vector<int64_t> &shape,
                                 const char *layout = nullptr);

// Which kernel the last call on this thread ran ("" if none). NORMGEN_VERBOSE=dispatch
// prints the same on stderr, with the reasons other candidates were skipped.
NORMGEN_API const char *last_kernel();

// Whether this build has CUDA kernels and CUDA device `device` can run them; if not,
// *why (when given) says why: no CUDA kernels built, no driver, no such device.
NORMGEN_API bool cuda_available(int device = 0, std::string *why = nullptr);

}  // namespace normgen

// Shared plumbing of the row-wise ops (LayerNorm, RMSNorm, and later fused row norms):
// common argument checks, 2-D views of row tensors (staged through a contiguous copy
// when no 2-D view exists), 1-D views of parameters and statistics, and the call.
#pragma once

#include "kernel_table.h"
#include "tensor.h"

#include <deque>
#include <string>
#include <vector>

namespace normgen::detail {

class RowCall {
public:
    // `x` is the tensor whose trailing normalized_shape dims form the rows.
    // (normalized_shape is the caller's: it must outlive the RowCall.)
    RowCall(const TensorView &x, const std::vector<int64_t> &normalized_shape)
        : x_(x), normalized_shape_(normalized_shape) {}

    // Checks x itself and normalized_shape; sets rows() and cols().
    Status check_x(const char *x_name = "x");
    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    Dims row_shape() const { return {rows_, cols_}; }

    // Checks of the other arguments (dtype/shape agreement with x).
    Status check_like_x(const TensorView &t, const char *name) const;              // x's shape and dtype
    Status check_param(const TensorView *t, const char *name) const;               // normalized_shape, x's dtype
    Status check_stat(const TensorView *t, const char *name) const;                // float32, rows() elements

    // Bind arguments for the kernel (after all checks passed).
    void bind_rows(const TensorView &t, const char *arg, bool output);
    void bind_param(const TensorView &t, const char *arg, bool output);
    // A parameter-shaped output; if t is null (not requested), a scratch buffer.
    void bind_param_out(const TensorView *t, const char *arg);
    // Statistics: if t is null (not requested), a scratch buffer is used.
    void bind_stat(const TensorView *t, const char *arg, bool output);
    void bind_scalar(const char *arg, float v);
    // A parameter-shaped input of x's dtype filled with 0 or 1 (one the caller left out).
    TensorView constant_param(float value);

    // Select the kernel for op/dir/variant and run it; staged outputs are copied back.
    Status run(const char *op, const char *dir, const Variant &variant);

private:
    struct Bound {
        HalideBuf hb;
        const TensorView *out_view = nullptr;  // staged output to scatter after the run
        void *stage = nullptr;
        bool on_device = false;                // the caller's CUDA memory
    };
    // A tensor of a CUDA call bound at `data` (its own memory unless staged; staging a
    // CUDA tensor is refused unless `may_stage`: small parameters and statistics).
    void note_device(Bound &b, const TensorView &t, const void *data, const char *arg, bool may_stage);
    std::string device_problem_;  // a CUDA tensor that would need a host copy
    std::string mismatch_;        // a tensor on another device than x
    Bound &next() { return bound_.emplace_back(); }

    const TensorView &x_;
    const std::vector<int64_t> &normalized_shape_;
    int64_t rows_ = 0, cols_ = 0;
    bool unit_stride_ = true;
    // (From the thread's call pool: a steady call allocates nothing.)
    std::pmr::deque<Bound> bound_{call_memory()};  // stable addresses: Args holds pointers into it
    std::pmr::deque<float> scalars_{call_memory()};
    std::pmr::deque<TensorView> views_{call_memory()};
    Staging staging_;
    Args args_;
};

// "has_bias=1,has_weight=0": a variant in the table's format (keys sorted).
Variant variant_string(std::initializer_list<std::pair<const char *, bool>> flags);

}  // namespace normgen::detail

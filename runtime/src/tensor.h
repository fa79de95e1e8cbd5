// Argument checking and flattening shared by every op: messages that name the
// argument and show expected vs got, overlap checks, collapsing N-d views into the
// 2-D (cols, rows) views kernels take, and Halide buffer descriptors.
#pragma once

#include "normgen/normgen.h"

#include <HalideRuntime.h>

#include <cstdint>
#include <memory_resource>
#include <string>
#include <vector>

namespace normgen::detail {

// A shape joined with 'x' ("8192x1024"), as kernels tuned for a shape name it.
std::string shape_text(const std::vector<int64_t> &shape);

std::string shape_str(const std::vector<int64_t> &s);
Status invalid(const std::string &msg);
Status type_error(const std::string &msg);

// Rank, sizes, data pointer, device; `name` is how the message calls the tensor.
Status check_tensor(const TensorView &t, const char *name);
Status check_dtype(const TensorView &t, const char *name, DType expected);
// t is on x's device (CPU, or the same CUDA device).
Status check_same_device(const TensorView &t, const char *name, const TensorView &x);
bool same_device(const TensorView &a, const TensorView &b);
// A shape to compare with, not copied: a vector's, a braced list's or a tensor's.
struct ShapeRef {
    const int64_t *dims;
    size_t rank;
    ShapeRef(const int64_t *d, size_t n) : dims(d), rank(n) {}
    ShapeRef(const std::vector<int64_t> &v) : dims(v.data()), rank(v.size()) {}
    ShapeRef(const TensorView &t) : dims(t.shape.data()), rank(static_cast<size_t>(t.rank < 0 ? 0 : t.rank)) {}
    std::vector<int64_t> vec() const { return std::vector<int64_t>(dims, dims + rank); }
};
Status check_same_shape(const TensorView &t, const char *name, ShapeRef expected, const char *expected_what);
inline Status check_same_shape(const TensorView &t, const char *name, std::initializer_list<int64_t> expected,
                               const char *expected_what) {
    return check_same_shape(t, name, ShapeRef(expected.begin(), expected.size()), expected_what);
}
// A float32 statistics tensor with `count` elements (any shape of that size).
Status check_stats(const TensorView &t, const char *name, int64_t count, const char *count_what);
Status check_eps(double eps);

// Do the memory ranges of a and b intersect? (Conservative: by address span.)
bool overlaps(const TensorView &a, const TensorView &b);
// Tensors with the names messages give them (null entries are skipped).
using NamedTensor = std::pair<const TensorView *, const char *>;
using Named = std::initializer_list<NamedTensor>;
// Outputs must not overlap any input or each other.
Status check_no_overlap(Named outputs, Named inputs);
Status check_no_overlap(const NamedTensor *outputs, size_t n_outputs, const NamedTensor *inputs, size_t n_inputs);

// A 2-D view of a tensor: `cols` elements along dim 0 (the normalized dims), `rows`
// along dim 1 (the leading dims).
struct View2D {
    void *data;
    DType dtype;
    int64_t cols, col_stride, rows, row_stride;
};
// Collapse dims [0, split) into rows and [split, rank) into cols. False if either
// group is not expressible with a single stride.
bool collapse_2d(const TensorView &t, int split, View2D *out);
bool collapse_1d(const TensorView &t, int64_t *extent, int64_t *stride);

// A 3-D view of an (N, C, *spatial) tensor: s = the flattened spatial dims (extent
// `spatial`, 1 for an (N, C) tensor), c the channel, n the batch.
struct View3D {
    void *data;
    DType dtype;
    int64_t spatial, s_stride, channels, c_stride, batch, n_stride;
};
// False if the spatial dims cannot be expressed with a single stride.
bool collapse_3d(const TensorView &t, View3D *out);

// A Halide buffer descriptor over caller memory (1-D to 3-D, dim 0 innermost).
struct HalideBuf {
    halide_buffer_t buf{};
    halide_dimension_t dim[4]{};
    void init_3d(const View3D &v);
    // (s, j, g, n): channels split into `groups` groups of channels/groups.
    void init_4d(const View3D &v, int64_t groups);
    void init_2d(const View2D &v);
    void init_1d(void *data, DType dtype, int64_t extent, int64_t stride);
    // Merge dims d and d + 1 (d + 1's stride must be d's stride x extent), e.g. a
    // group-split channel (j, g) back into one channel dim.
    void merge_dims(int d);
    halide_buffer_t *get() { return &buf; }
};

// Every extent and stride a kernel sees must fit Halide's int32 fields.
Status check_index_range(const char *name, std::initializer_list<int64_t> values);

// A contiguous copy of a tensor that has no 2-D view (arbitrary strides).
class Staging {
public:
    // Gather `t` into contiguous memory (inputs) or just allocate (outputs). CUDA
    // tensors come through a host copy: the calls stage only small ones (statistics,
    // parameters) and refuse to stage data tensors.
    void *gather(const TensorView &t);
    void *alloc(const TensorView &t);
    // Scatter the contiguous copy back into `t` (outputs).
    [[nodiscard]] static Status scatter(const void *src, const TensorView &t);
    // A contiguous tensor filled with `value` (0 or 1: exact in every storage dtype),
    // e.g. an identity parameter the caller left out.
    TensorView constant(DType dtype, std::initializer_list<int64_t> shape, float value);

    Staging();
    Staging(const Staging &) = delete;
    Staging &operator=(const Staging &) = delete;
    ~Staging();

private:
    std::pmr::vector<void *> owned_;  // blocks of the kernels' scratch cache (kernel_table.h)
};

// The outputs of a backward: parameter gradients exist only with a weight (an error
// naming `op` otherwise), and dx/dweight/dbias overlap neither the inputs (`inputs`
// plus weight) nor each other.
Status check_backward_outputs(const char *op, const TensorView &dx, const TensorView *weight,
                              const TensorView *dweight, const TensorView *dbias, Named inputs);
// The parameter gradients of an empty batch: sums over nothing.
[[nodiscard]] Status zero_param_grads(const TensorView *dweight, const TensorView *dbias);

// Set every element of t to +0.0; fill_f32: every element of a float32 t to v. Any
// device (a CUDA tensor through a host copy: these serve the empty and tiny cases).
[[nodiscard]] Status fill_zero(const TensorView &t);
// dst = src elementwise (same shape and dtype, any strides, any devices).
[[nodiscard]] Status copy_tensor(const TensorView &dst, const TensorView &src);
[[nodiscard]] Status fill_f32(const TensorView &t, float v);

// The elements of a 1-D tensor of any storage dtype, device and stride as float32, and
// back (rounded to nearest even): small per-channel values the runtime computes on the host.
[[nodiscard]] Status read_floats(const TensorView &t, std::pmr::vector<float> *out);
[[nodiscard]] Status write_floats(const TensorView &t, const std::pmr::vector<float> &v);

// The contiguous N-d view of `t`'s shape over `data`.
TensorView contiguous_like(const TensorView &t, void *data);
// TensorView::strided from braced lists, without a temporary (shape and strides the same length).
TensorView strided_view(void *data, DType dtype, std::initializer_list<int64_t> shape,
                        std::initializer_list<int64_t> strides);

// Machine epsilon of a storage dtype (torch.finfo(dtype).eps).
double dtype_eps(DType t);

}  // namespace normgen::detail

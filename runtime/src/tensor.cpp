#include "tensor.h"

#include "cuda_device.h"
#include "kernel_table.h"

#include <algorithm>
#include <array>
#include <new>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

namespace normgen {

const char *dtype_name(DType t) {
    switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    }
    return "?";
}

int dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

namespace {
// (Without a temporary: the runtime makes these views on every call.)
TensorView make_contiguous(void *data, DType dtype, const int64_t *shape, size_t rank) {
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    // Ranks beyond kMaxRank are recorded as such and rejected by every op.
    t.rank = static_cast<int>(rank);
    const size_t n = std::min<size_t>(rank, TensorView::kMaxRank);
    int64_t s = 1;
    for (size_t i = rank; i-- > 0;) {
        if (i < n) {
            t.shape[i] = shape[i];
            t.strides[i] = s;
        }
        s *= std::max<int64_t>(shape[i], 1);
    }
    return t;
}
}  // namespace

TensorView TensorView::contiguous(void *data, DType dtype, std::initializer_list<int64_t> shape) {
    return make_contiguous(data, dtype, shape.begin(), shape.size());
}

TensorView TensorView::contiguous(void *data, DType dtype, const std::vector<int64_t> &shape) {
    return make_contiguous(data, dtype, shape.data(), shape.size());
}

TensorView TensorView::strided(void *data, DType dtype, const std::vector<int64_t> &shape,
                               const std::vector<int64_t> &strides) {
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    // Ranks beyond kMaxRank are recorded as such and rejected by every op.
    t.rank = static_cast<int>(shape.size());
    const size_t n = std::min<size_t>(shape.size(), kMaxRank);
    for (size_t i = 0; i < n; i++) {
        t.shape[i] = shape[i];
        t.strides[i] = i < strides.size() ? strides[i] : 0;
    }
    if (strides.size() != shape.size()) t.rank = -1;  // rejected: strides must match shape
    return t;
}

int64_t TensorView::numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank && i < kMaxRank; i++) n *= shape[i];
    return n;
}

std::string describe(const char *op, const char *dir, DType dtype, const std::vector<int64_t> &shape,
                     const char *layout) {
    std::string s = std::string(op) + ":" + dir + ":" + dtype_name(dtype) + ":";
    s += shape.empty() ? "scalar" : detail::shape_text(shape);
    if (layout) s += std::string(":") + layout;
    return s;
}

namespace detail {

std::string shape_text(const std::vector<int64_t> &shape) {
    std::string s;
    for (int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
    return s;
}

std::string shape_str(const std::vector<int64_t> &s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

Status invalid(const std::string &msg) { return Status(Status::Code::invalid_argument, msg); }
Status type_error(const std::string &msg) { return Status(Status::Code::type_error, msg); }

Status check_tensor(const TensorView &t, const char *name) {
    if (t.rank < 0) return invalid(std::string(name) + ": strides must have one entry per dimension");
    if (t.rank > TensorView::kMaxRank)
        return invalid(std::string(name) + ": rank " + std::to_string(t.rank) + " exceeds the maximum of " +
                       std::to_string(TensorView::kMaxRank));
    if (t.device == Device::cuda && !has_cuda_kernels())
        return type_error(std::string(name) + " is a CUDA tensor, but this normgen build has only CPU kernels");
    if (t.device != Device::cpu && t.device != Device::cuda)
        return type_error(std::string(name) + ": unknown device");
    if (t.device == Device::cuda && t.device_index < 0)
        return invalid(std::string(name) + ": negative CUDA device index " + std::to_string(t.device_index));
    for (int i = 0; i < t.rank; i++)
        if (t.shape[i] < 0)
            return invalid(std::string(name) + ": negative size in shape " + shape_str(t.sizes()));
    if (t.numel() > 0 && t.data == nullptr) return invalid(std::string(name) + ": data pointer is null");
    return Status::OK();
}

bool same_device(const TensorView &a, const TensorView &b) {
    return a.device == b.device && (a.device != Device::cuda || a.device_index == b.device_index);
}

Status check_same_device(const TensorView &t, const char *name, const TensorView &x) {
    auto where = [](const TensorView &v) {
        return v.device == Device::cuda ? "CUDA device " + std::to_string(v.device_index) : std::string("the CPU");
    };
    if (!same_device(t, x))
        return type_error(std::string(name) + " is on " + where(t) + ", but x is on " + where(x) +
                          " (a call's tensors share one device)");
    return Status::OK();
}

Status check_dtype(const TensorView &t, const char *name, DType expected) {
    if (t.dtype != expected)
        return type_error("Expected " + std::string(name) + " of dtype " + dtype_name(expected) + ", but got " +
                          dtype_name(t.dtype));
    return Status::OK();
}

Status check_same_shape(const TensorView &t, const char *name, ShapeRef expected, const char *expected_what) {
    if (t.rank != static_cast<int>(expected.rank) || !std::equal(expected.dims, expected.dims + expected.rank, t.shape.begin()))
        return invalid("Expected " + std::string(name) + " of shape " + shape_str(expected.vec()) + " (" +
                       expected_what + "), but got " + shape_str(t.sizes()));
    return Status::OK();
}

Status check_stats(const TensorView &t, const char *name, int64_t count, const char *count_what) {
    Status s = check_tensor(t, name);
    if (!s.ok()) return s;
    s = check_dtype(t, name, DType::f32);
    if (!s.ok()) return s;
    if (t.numel() != count)
        return invalid("Expected " + std::string(name) + " with " + std::to_string(count) + " elements (" +
                       count_what + "), but got shape " + shape_str(t.sizes()));
    return Status::OK();
}

Status check_eps(double eps) {
    if (!std::isfinite(eps) || eps <= 0)
        return invalid("eps must be a finite positive number, got " + std::to_string(eps));
    return Status::OK();
}

namespace {
// [lo, hi) byte span touched by t.
void span_of(const TensorView &t, intptr_t *lo, intptr_t *hi) {
    intptr_t base = reinterpret_cast<intptr_t>(t.data);
    int64_t min_off = 0, max_off = 0;
    for (int i = 0; i < t.rank; i++) {
        if (t.shape[i] == 0) {
            *lo = *hi = base;
            return;
        }
        int64_t e = (t.shape[i] - 1) * t.strides[i];
        if (e < 0) min_off += e; else max_off += e;
    }
    int es = dtype_size(t.dtype);
    *lo = base + min_off * es;
    *hi = base + (max_off + 1) * es;
}
}  // namespace

bool overlaps(const TensorView &a, const TensorView &b) {
    if (a.numel() == 0 || b.numel() == 0) return false;
    intptr_t alo, ahi, blo, bhi;
    span_of(a, &alo, &ahi);
    span_of(b, &blo, &bhi);
    return alo < bhi && blo < ahi;
}

Status check_no_overlap(Named outputs, Named inputs) {
    return check_no_overlap(outputs.begin(), outputs.size(), inputs.begin(), inputs.size());
}

Status check_no_overlap(const NamedTensor *out, size_t n_out, const NamedTensor *in, size_t n_in) {
    for (size_t i = 0; i < n_out; i++) {
        const auto &o = out[i];
        if (!o.first) continue;
        for (size_t j = 0; j < n_in; j++)
            if (in[j].first && overlaps(*o.first, *in[j].first))
                return invalid(std::string(o.second) + " overlaps " + in[j].second +
                               " in memory; outputs must not alias inputs");
        for (size_t j = i + 1; j < n_out; j++)
            if (out[j].first && overlaps(*o.first, *out[j].first))
                return invalid(std::string(o.second) + " overlaps " + out[j].second +
                               " in memory; outputs must be distinct");
    }
    return Status::OK();
}

namespace {
// Collapse dims [b, e) of t into one (extent, stride); size-1 dims are ignored.
bool collapse_range(const TensorView &t, int b, int e, int64_t *extent, int64_t *stride) {
    int64_t ext = 1, st = 0;
    bool have = false;
    for (int i = e - 1; i >= b; i--) {
        if (t.shape[i] == 1) continue;
        if (!have) {
            ext = t.shape[i];
            st = t.strides[i];
            have = true;
        } else {
            if (t.strides[i] != st * ext) return false;
            ext *= t.shape[i];
        }
    }
    for (int i = b; i < e; i++)
        if (t.shape[i] == 0) ext = 0;
    *extent = ext;
    *stride = have ? st : 1;
    return true;
}
}  // namespace

bool collapse_2d(const TensorView &t, int split, View2D *out) {
    out->data = t.data;
    out->dtype = t.dtype;
    if (!collapse_range(t, split, t.rank, &out->cols, &out->col_stride)) return false;
    if (!collapse_range(t, 0, split, &out->rows, &out->row_stride)) return false;
    if (out->rows <= 1) out->row_stride = out->cols * out->col_stride;  // any value works; keep it natural
    if (out->cols <= 1) out->col_stride = 1;
    return true;
}

bool collapse_3d(const TensorView &t, View3D *out) {
    out->data = t.data;
    out->dtype = t.dtype;
    out->batch = t.shape[0];
    out->n_stride = t.strides[0];
    out->channels = t.shape[1];
    out->c_stride = t.strides[1];
    if (!collapse_range(t, 2, t.rank, &out->spatial, &out->s_stride)) return false;
    if (out->spatial <= 1) out->s_stride = 1;
    if (out->channels <= 1) out->c_stride = 1;
    if (out->batch <= 1) out->n_stride = out->channels * out->spatial;
    return true;
}

bool collapse_1d(const TensorView &t, int64_t *extent, int64_t *stride) {
    bool ok = collapse_range(t, 0, t.rank, extent, stride);
    if (ok && *extent <= 1) *stride = 1;
    return ok;
}

namespace {
halide_type_t halide_type_of(DType t) {
    switch (t) {
    case DType::f32: return halide_type_t(halide_type_float, 32);
    case DType::f16: return halide_type_t(halide_type_float, 16);
    case DType::bf16: return halide_type_t(halide_type_bfloat, 16);
    }
    return halide_type_t(halide_type_float, 32);
}
}  // namespace

void HalideBuf::init_3d(const View3D &v) {
    buf = halide_buffer_t{};
    buf.host = static_cast<uint8_t *>(v.data);
    buf.type = halide_type_of(v.dtype);
    buf.dimensions = 3;
    buf.dim = dim;
    dim[0] = halide_dimension_t(0, static_cast<int32_t>(v.spatial), static_cast<int32_t>(v.s_stride));
    dim[1] = halide_dimension_t(0, static_cast<int32_t>(v.channels), static_cast<int32_t>(v.c_stride));
    dim[2] = halide_dimension_t(0, static_cast<int32_t>(v.batch), static_cast<int32_t>(v.n_stride));
}

void HalideBuf::init_4d(const View3D &v, int64_t groups) {
    init_3d(v);
    const int64_t group_size = v.channels / groups;
    buf.dimensions = 4;
    dim[3] = dim[2];
    dim[1] = halide_dimension_t(0, static_cast<int32_t>(group_size), static_cast<int32_t>(v.c_stride));
    dim[2] = halide_dimension_t(0, static_cast<int32_t>(groups), static_cast<int32_t>(v.c_stride * group_size));
}

void HalideBuf::merge_dims(int d) {
    dim[d].extent *= dim[d + 1].extent;
    for (int i = d + 1; i + 1 < buf.dimensions; i++) dim[i] = dim[i + 1];
    buf.dimensions--;
}

void HalideBuf::init_2d(const View2D &v) {
    buf = halide_buffer_t{};
    buf.host = static_cast<uint8_t *>(v.data);
    buf.type = halide_type_of(v.dtype);
    buf.dimensions = 2;
    buf.dim = dim;
    dim[0] = halide_dimension_t(0, static_cast<int32_t>(v.cols), static_cast<int32_t>(v.col_stride));
    dim[1] = halide_dimension_t(0, static_cast<int32_t>(v.rows), static_cast<int32_t>(v.row_stride));
}

void HalideBuf::init_1d(void *data, DType dtype, int64_t extent, int64_t stride) {
    buf = halide_buffer_t{};
    buf.host = static_cast<uint8_t *>(data);
    buf.type = halide_type_of(dtype);
    buf.dimensions = 1;
    buf.dim = dim;
    dim[0] = halide_dimension_t(0, static_cast<int32_t>(extent), static_cast<int32_t>(stride));
}

Status check_index_range(const char *name, std::initializer_list<int64_t> values) {
    for (int64_t v : values)
        if (v > INT32_MAX || v < -static_cast<int64_t>(INT32_MAX))
            return invalid(std::string(name) + " is too large: an extent or stride of " + std::to_string(v) +
                           " exceeds 32-bit indexing (2^31 - 1); split the tensor along its leading dims");
    return Status::OK();
}

TensorView strided_view(void *data, DType dtype, std::initializer_list<int64_t> shape,
                        std::initializer_list<int64_t> strides) {
    TensorView t = make_contiguous(data, dtype, shape.begin(), shape.size());
    std::copy(strides.begin(), strides.begin() + std::min(strides.size(), t.strides.size()), t.strides.begin());
    return t;
}

TensorView contiguous_like(const TensorView &t, void *data) {
    return make_contiguous(data, t.dtype, t.shape.data(), static_cast<size_t>(std::max(t.rank, 0)));
}

namespace {
// Copy between two host views of the same shape, element by element (odometer order).
void host_copy(const TensorView &dst, const TensorView &src) {
    const int es = dtype_size(src.dtype);
    const int64_t n = src.numel();
    if (n == 0) return;
    int64_t idx[TensorView::kMaxRank] = {0};
    auto *d = static_cast<unsigned char *>(dst.data);
    auto *s = static_cast<const unsigned char *>(src.data);
    for (int64_t e = 0; e < n; e++) {
        int64_t so = 0, dof = 0;
        for (int i = 0; i < src.rank; i++) {
            so += idx[i] * src.strides[i];
            dof += idx[i] * dst.strides[i];
        }
        std::memcpy(d + dof * es, s + so * es, es);
        for (int i = src.rank - 1; i >= 0; i--) {
            if (++idx[i] < src.shape[i]) break;
            idx[i] = 0;
        }
    }
}

// The same, where either side may be a CUDA tensor (through a host copy of it).
Status strided_copy(const TensorView &dst, const TensorView &src) {
    if (src.device == Device::cuda)
        return with_host_copy(src, true, false, [&](const TensorView &h) { return strided_copy(dst, h); });
    if (dst.device == Device::cuda)
        return with_host_copy(dst, false, true, [&](const TensorView &h) { return strided_copy(h, src); });
    host_copy(dst, src);
    return Status::OK();
}
}  // namespace

Status check_backward_outputs(const char *op, const TensorView &dx, const TensorView *weight,
                              const TensorView *dweight, const TensorView *dbias, Named inputs) {
    if (!weight && (dweight || dbias))
        return invalid(std::string("dweight/dbias were requested but weight is None: ") + op +
                       " without weight has no parameters");
    // One check over the inputs and the weight (the outputs' own distinctness once).
    std::array<NamedTensor, 12> ins{};
    if (inputs.size() + 1 > ins.size()) return invalid("internal: too many tensors for the overlap check");
    std::copy(inputs.begin(), inputs.end(), ins.begin());
    ins[inputs.size()] = {weight, "weight"};
    const NamedTensor outs[] = {{&dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}};
    return check_no_overlap(outs, 3, ins.data(), inputs.size() + 1);
}

Status zero_param_grads(const TensorView *dweight, const TensorView *dbias) {
    Status s;
    if (dweight) s = fill_zero(*dweight);
    if (s.ok() && dbias) s = fill_zero(*dbias);
    return s;
}

Status fill_zero(const TensorView &t) {
    if (t.numel() == 0) return Status::OK();
    std::pmr::vector<unsigned char> zeros(static_cast<size_t>(t.numel()) * dtype_size(t.dtype), 0, call_memory());
    return strided_copy(t, contiguous_like(t, zeros.data()));
}

Status fill_f32(const TensorView &t, float v) {
    if (t.numel() == 0) return Status::OK();
    std::pmr::vector<float> vals(static_cast<size_t>(t.numel()), v, call_memory());
    return strided_copy(t, contiguous_like(t, vals.data()));
}

void *Staging::alloc(const TensorView &t) {
    void *p = scratch_malloc(nullptr, static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
    if (!p) throw std::bad_alloc();
    owned_.push_back(p);
    return p;
}

Staging::Staging() : owned_(call_memory()) {}

Staging::~Staging() {
    for (void *p : owned_) scratch_free(nullptr, p);
}

TensorView Staging::constant(DType dtype, std::initializer_list<int64_t> shape, float value) {
    TensorView v = TensorView::contiguous(nullptr, dtype, shape);
    v.data = alloc(v);
    const int es = dtype_size(dtype);
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    // f16 1.0 = 0x3c00; bf16 is float32's top half.
    const uint16_t h = dtype == DType::bf16 ? static_cast<uint16_t>(bits >> 16)
                                            : static_cast<uint16_t>(value == 0.0f ? 0 : 0x3c00);
    for (int64_t i = 0; i < v.numel(); i++) {
        auto *dst = static_cast<unsigned char *>(v.data) + i * es;
        if (dtype == DType::f32) std::memcpy(dst, &value, 4);
        else std::memcpy(dst, &h, 2);
    }
    return v;
}

void *Staging::gather(const TensorView &t) {
    void *p = alloc(t);
    // (A CUDA tensor through a host copy; without a device this fails, and so does the
    // call, at dispatch, with the reason.)
    (void)strided_copy(contiguous_like(t, p), t);
    return p;
}

Status Staging::scatter(const void *src, const TensorView &t) {
    return strided_copy(t, contiguous_like(t, const_cast<void *>(src)));
}

double dtype_eps(DType t) {
    switch (t) {
    case DType::f32: return 1.1920928955078125e-07;
    case DType::f16: return 0.0009765625;
    case DType::bf16: return 0.0078125;
    }
    return 1.1920928955078125e-07;
}

Status copy_tensor(const TensorView &dst, const TensorView &src) { return strided_copy(dst, src); }

namespace {
// IEEE binary16 by bits (portable: GCC 12's C++ has no _Float16 on every target).
float f16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24
        f = std::ldexp(static_cast<float>(mant), -24);
        return (h & 0x8000) ? -f : f;
    }
    const uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
    std::memcpy(&f, &bits, 4);
    return f;
}
uint16_t float_to_f16(float f) {  // round to nearest even
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const float a = std::fabs(f);
    if (std::isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
    if (a < 6.103515625e-05f)                  // below the smallest normal: a multiple of 2^-24
        return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
    uint32_t h = ((((x >> 23) & 0xff) - 112) << 10) | ((x & 0x7fffff) >> 13);
    const uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  // a carry moves into the exponent, as it should
    return sign | static_cast<uint16_t>(h);
}
float bf16_to_float(uint16_t h) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
uint16_t float_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stay a (quiet) NaN
    bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
    return static_cast<uint16_t>(bits >> 16);
}
}  // namespace

Status read_floats(const TensorView &t, std::pmr::vector<float> *out) {
    const int64_t n = t.numel();
    std::pmr::vector<unsigned char> raw(static_cast<size_t>(n * dtype_size(t.dtype)), call_memory());
    Status s = copy_tensor(contiguous_like(t, raw.data()), t);
    if (!s.ok()) return s;
    out->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = 0;
        if (t.dtype != DType::f32) std::memcpy(&h, raw.data() + 2 * i, 2);
        switch (t.dtype) {
        case DType::f32: std::memcpy(&(*out)[i], raw.data() + 4 * i, 4); break;
        case DType::f16: (*out)[i] = f16_to_float(h); break;
        case DType::bf16: (*out)[i] = bf16_to_float(h); break;
        }
    }
    return s;
}

Status write_floats(const TensorView &t, const std::pmr::vector<float> &v) {
    const int64_t n = t.numel();
    if (static_cast<int64_t>(v.size()) != n) return invalid("write_floats: size mismatch");
    std::pmr::vector<unsigned char> raw(static_cast<size_t>(n * dtype_size(t.dtype)), call_memory());
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = t.dtype == DType::f16 ? float_to_f16(v[i]) : t.dtype == DType::bf16 ? float_to_bf16(v[i]) : 0;
        if (t.dtype == DType::f32) std::memcpy(raw.data() + 4 * i, &v[i], 4);
        else std::memcpy(raw.data() + 2 * i, &h, 2);
    }
    return copy_tensor(t, contiguous_like(t, raw.data()));
}

}  // namespace detail
}  // namespace normgen

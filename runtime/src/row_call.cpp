#include "row_call.h"

#include "cuda_device.h"

#include <algorithm>

namespace normgen::detail {

Status RowCall::check_x(const char *x_name) {
    Status s = check_tensor(x_, x_name);
    if (!s.ok()) return s;
    const int k = static_cast<int>(normalized_shape_.size());
    if (k == 0) return invalid("normalized_shape must have at least one dimension, got []");
    for (int64_t d : normalized_shape_)
        if (d < 0) return invalid("normalized_shape has a negative size: " + shape_str(normalized_shape_));
    if (x_.rank < k)
        return invalid("Expected " + std::string(x_name) + " of rank >= " + std::to_string(k) +
                       " (len(normalized_shape)), but got shape " + shape_str(x_.sizes()));
    if (!std::equal(normalized_shape_.begin(), normalized_shape_.end(), x_.shape.begin() + (x_.rank - k)))
        return invalid("Expected " + std::string(x_name) + " whose trailing dims equal normalized_shape " +
                       shape_str(normalized_shape_) + ", but got shape " + shape_str(x_.sizes()));
    cols_ = 1;
    for (int64_t d : normalized_shape_) cols_ *= d;
    rows_ = 1;
    for (int i = 0; i < x_.rank - k; i++) rows_ *= x_.shape[i];
    return check_index_range(x_name, {rows_, cols_});
}

Status RowCall::check_like_x(const TensorView &t, const char *name) const {
    Status s = check_tensor(t, name);
    if (!s.ok()) return s;
    if (!(s = check_same_device(t, name, x_)).ok()) return s;
    s = check_dtype(t, name, x_.dtype);
    if (!s.ok()) return s;
    return check_same_shape(t, name, x_, "the shape of x");
}

Status RowCall::check_param(const TensorView *t, const char *name) const {
    if (!t) return Status::OK();
    Status s = check_tensor(*t, name);
    if (!s.ok()) return s;
    if (!(s = check_same_device(*t, name, x_)).ok()) return s;
    s = check_dtype(*t, name, x_.dtype);
    if (!s.ok()) return s;
    return check_same_shape(*t, name, normalized_shape_, "normalized_shape");
}

Status RowCall::check_stat(const TensorView *t, const char *name) const {
    if (!t) return Status::OK();
    Status s = check_stats(*t, name, rows_, "one per normalized row");
    if (!s.ok()) return s;
    return check_same_device(*t, name, x_);
}

void RowCall::bind_rows(const TensorView &t, const char *arg, bool output) {
    Bound &b = next();
    View2D v;
    const int split = t.rank - static_cast<int>(normalized_shape_.size());
    if (!collapse_2d(t, split, &v)) {
        // No 2-D view: run on a contiguous copy (the rare, slow path).
        void *p = output || t.device == Device::cuda ? staging_.alloc(t) : staging_.gather(t);  // (CUDA: refused at run)
        if (output) {
            b.out_view = &t;
            b.stage = p;
        }
        v = View2D{p, t.dtype, cols_, 1, rows_, cols_};
    }
    if (v.col_stride != 1) unit_stride_ = false;
    note_device(b, t, v.data, arg, false);
    b.hb.init_2d(v);
    args_.buffer(arg, b.hb.get());
}

void RowCall::bind_param(const TensorView &t, const char *arg, bool output) {
    Bound &b = next();
    int64_t extent, stride;
    void *data = t.data;
    if (!collapse_1d(t, &extent, &stride)) {
        data = output ? staging_.alloc(t) : staging_.gather(t);
        if (output) {
            b.out_view = &t;
            b.stage = data;
        }
        extent = t.numel();
        stride = 1;
    }
    if (stride != 1) unit_stride_ = false;
    note_device(b, t, data, arg, true);
    b.hb.init_1d(data, t.dtype, extent, stride);
    args_.buffer(arg, b.hb.get());
}

void RowCall::bind_param_out(const TensorView *t, const char *arg) {
    if (t) return bind_param(*t, arg, true);
    TensorView &scratch = views_.emplace_back();
    scratch = TensorView::contiguous(nullptr, x_.dtype, normalized_shape_);
    scratch.data = staging_.alloc(scratch);
    bind_param(scratch, arg, true);
}

void RowCall::bind_stat(const TensorView *t, const char *arg, bool output) {
    Bound &b = next();
    int64_t extent = rows_, stride = 1;
    void *data = nullptr;
    if (!t) {
        TensorView &scratch = views_.emplace_back();
        scratch = TensorView::contiguous(nullptr, DType::f32, {rows_});
        data = staging_.alloc(scratch);
    } else if (collapse_1d(*t, &extent, &stride) && stride == 1) {
        data = t->data;
    } else {  // statistics buffers are unit-stride in every kernel
        data = output ? staging_.alloc(*t) : staging_.gather(*t);
        if (output) {
            b.out_view = t;
            b.stage = data;
        }
        stride = 1;
    }
    if (t) note_device(b, *t, data, arg, true);
    b.hb.init_1d(data, DType::f32, rows_, stride);
    args_.buffer(arg, b.hb.get());
}

TensorView RowCall::constant_param(float value) {
    return views_.emplace_back(staging_.constant(x_.dtype, {cols_}, value));
}

void RowCall::bind_scalar(const char *arg, float v) {
    scalars_.push_back(v);
    args_.scalar(arg, &scalars_.back());
}

void RowCall::note_device(Bound &b, const TensorView &t, const void *data, const char *arg, bool may_stage) {
    // A CPU call must not see device memory. A CUDA call takes host memory (the
    // runtime's identities and scratch) through Halide's copies.
    if (t.device == Device::cuda && !same_device(t, x_)) {
        if (mismatch_.empty()) mismatch_ = arg;
        return;
    }
    if (t.device != Device::cuda) return;
    b.on_device = data == t.data;
    if (!b.on_device && !may_stage && device_problem_.empty()) device_problem_ = arg;
}

Status RowCall::run(const char *op, const char *dir, const Variant &variant) {
    Request req{op, dir, x_.dtype, variant.c_str(), unit_stride_ ? "contig" : "strided", row_shape(), x_.device,
                x_.device_index};
    if (!mismatch_.empty())
        return type_error(std::string(op) + ": '" + mismatch_ + "' is on another device than x (a call's tensors share one)");
    if (x_.device != Device::cuda) {
        Status s = dispatch(req, args_);
        if (!s.ok()) return s;
        for (const Bound &b : bound_)
            if (b.out_view && !(s = Staging::scatter(b.stage, *b.out_view)).ok()) return s;
        return s;
    }
    if (!device_problem_.empty())
        return type_error(std::string(op) + ": CUDA tensor '" + device_problem_ +
                          "' has strides with no (rows, cols) view; make it contiguous (CUDA calls copy nothing)");
    std::vector<CallBuffer> bufs;
    for (Bound &b : bound_) bufs.push_back({b.hb.get(), b.on_device});
    Status s = attach_device_buffers(bufs);
    if (!s.ok()) return s;
    s = dispatch(req, args_);
    detach_device_buffers(bufs);
    if (!s.ok()) return s;
    for (const Bound &b : bound_)
        if (b.out_view && !(s = Staging::scatter(b.stage, *b.out_view)).ok()) return s;
    return s;
}

Variant variant_string(std::initializer_list<std::pair<const char *, bool>> flags) {
    Variant v;
    for (const auto &[key, value] : flags) v.set(key, value);
    return v;
}

}  // namespace normgen::detail

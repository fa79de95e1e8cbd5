#include "channel_call.h"

#include "cuda_device.h"

#include <cmath>
#include <limits>
#include <cstring>

namespace normgen::detail {

void ChannelCall::set_groups(int64_t groups) {
    groups_ = groups;
    groups_arg_ = static_cast<int32_t>(groups);
    args_.scalar("groups", &groups_arg_);
}

ChannelCall::Bound &ChannelCall::new_bound(const char *arg, int channel_dim) {
    Bound &b = bound_.emplace_back();
    b.arg = arg;
    b.channel_dim = groups_ ? channel_dim : -1;
    return b;
}

Status ChannelCall::check_x(const char *name) {
    Status s = check_tensor(x_, name);
    if (!s.ok()) return s;
    if (x_.rank < 2 || x_.rank > 5)
        return invalid("Expected " + std::string(name) + " of shape (N, C) or (N, C, *spatial) with up to 3 spatial dims, but got " +
                       shape_str(x_.sizes()));
    batch_ = x_.shape[0];
    channels_ = x_.shape[1];
    spatial_ = 1;
    for (int i = 2; i < x_.rank; i++) spatial_ *= x_.shape[i];
    if (channels_ == 0) return invalid(std::string(name) + " has no channels: shape " + shape_str(x_.sizes()));
    return check_index_range(name, {batch_, channels_, spatial_, batch_ * channels_ * spatial_ / std::max<int64_t>(channels_, 1)});
}

Status ChannelCall::check_like_x(const TensorView &t, const char *name) const {
    Status s = check_tensor(t, name);
    if (!s.ok()) return s;
    if (!(s = check_same_device(t, name, x_)).ok()) return s;
    s = check_dtype(t, name, x_.dtype);
    if (!s.ok()) return s;
    return check_same_shape(t, name, x_, "the shape of x");
}

Status ChannelCall::check_per_channel(const TensorView *t, const char *name, bool float32) const {
    if (!t) return Status::OK();
    Status s = check_tensor(*t, name);
    if (!s.ok()) return s;
    if (!(s = check_same_device(*t, name, x_)).ok()) return s;
    s = check_dtype(*t, name, float32 ? DType::f32 : x_.dtype);
    if (!s.ok()) return s;
    return check_same_shape(*t, name, {channels_}, "the number of channels, x.shape[1]");
}

void ChannelCall::bind_tensor(const TensorView &t, const char *arg, bool output) {
    Bound &b = new_bound(arg, 1);
    b.tensor = true;
    View3D v;
    if (!collapse_3d(t, &v)) {
        void *p = output || t.device == Device::cuda ? staging_.alloc(t) : staging_.gather(t);  // (CUDA: refused at run)
        if (output) {
            b.out_view = &t;
            b.stage = p;
        }
        v = View3D{p, t.dtype, spatial_, 1, channels_, spatial_, batch_, channels_ * spatial_};
    }
    // Layout: channels-last when channels are unit-stride (and spatial is not, or is
    // trivial), NCHW when spatial is; every bound tensor must agree, else strided.
    const int unit = (v.c_stride == 1 && (v.spatial == 1 || v.s_stride != 1)) ? 1 : (v.s_stride == 1 ? 0 : -1);
    unit_dim_ = unit_dim_ == -2 || unit_dim_ == unit ? unit : -1;
    note_device(b, t, v.data, false);
    if (groups_) b.hb.init_4d(v, groups_);
    else b.hb.init_3d(v);
    args_.buffer(arg, b.hb.get());
}

void ChannelCall::bind_group_rows(const char *tensor_arg, const char *arg) {
    const Bound *t = nullptr;
    for (const Bound &b : bound_)
        if (!std::strcmp(b.arg, tensor_arg)) t = &b;
    Bound &b = new_bound(arg, -1);
    b.hb = t->hb;
    b.hb.buf.dim = b.hb.dim;
    b.on_device = t->on_device;
    // (s, j, g, n) -> (q, g, n) where a group's channels follow each other densely (and
    // a group's values fit a kernel's 32-bit extent).
    const halide_dimension_t *d = t->hb.dim;
    const bool dense = int64_t(d[1].stride) == int64_t(d[0].stride) * d[0].extent;
    const bool fits = int64_t(d[0].extent) * d[1].extent <= std::numeric_limits<int32_t>::max();
    if (groups_ && dense && fits) {
        b.hb.merge_dims(0);
    } else {
        group_rows_ = false;
    }
    args_.buffer(arg, b.hb.get());
}

void ChannelCall::bind_channel(const TensorView &t, const char *arg, bool output) {
    Bound &b = new_bound(arg, 0);
    int64_t extent, stride;
    void *data = t.data;
    if (!collapse_1d(t, &extent, &stride)) {
        data = output ? staging_.alloc(t) : staging_.gather(t);
        if (output) {
            b.out_view = &t;
            b.stage = data;
        }
        stride = 1;
    }
    if (stride != 1) params_unit_ = false;
    note_device(b, t, data, true);
    if (groups_) b.hb.init_2d(View2D{data, t.dtype, channels_ / groups_, stride, groups_, stride * (channels_ / groups_)});
    else b.hb.init_1d(data, t.dtype, channels_, stride);
    args_.buffer(arg, b.hb.get());
}

float *ChannelCall::bind_channel_stat(const TensorView *t, const char *arg) {
    int64_t extent, stride;
    // (On CUDA, statistics the runtime reads land in host scratch: copied back after the
    // kernel, and on to t.)
    if (t && x_.device == Device::cpu && collapse_1d(*t, &extent, &stride) && stride == 1) {
        bind_channel(*t, arg, true);
        return static_cast<float *>(t->data);
    }
    std::pmr::vector<float> &scratch = stats_.emplace_back(static_cast<size_t>(channels_));
    Bound &b = new_bound(arg, -1);
    if (t) {  // a strided (or CUDA) statistics output: computed in scratch, copied back
        b.out_view = t;
        b.stage = scratch.data();
    }
    b.hb.init_1d(scratch.data(), DType::f32, channels_, 1);
    args_.buffer(arg, b.hb.get());
    return scratch.data();
}

const TensorView &ChannelCall::constant_channel(float value) {
    return views_.emplace_back(staging_.constant(x_.dtype, {channels_}, value));
}

const TensorView &ChannelCall::scratch_like_x() {
    TensorView &v = views_.emplace_back(contiguous_like(x_, nullptr));
    v.data = staging_.alloc(v);
    return v;
}

float *ChannelCall::bind_stat_2d(const TensorView *t, const char *arg, int64_t d0, int64_t d1, bool output) {
    Bound &b = new_bound(arg, -1);
    float *data;
    int64_t extent, stride;
    if (t && collapse_1d(*t, &extent, &stride) && stride == 1) {
        data = static_cast<float *>(t->data);
    } else if (t && !output) {  // a strided input: read through a contiguous copy
        data = static_cast<float *>(staging_.gather(*t));
    } else {                    // absent, or a strided output: scratch (copied back)
        data = stats_.emplace_back(static_cast<size_t>(d0 * d1)).data();
        if (t) {
            b.out_view = t;
            b.stage = data;
        }
    }
    if (t) note_device(b, *t, data, true);
    b.hb.init_2d(View2D{data, DType::f32, d0, 1, d1, d0});
    args_.buffer(arg, b.hb.get());
    return data;
}

bool ChannelCall::bind_affine(const TensorView *weight, const TensorView *bias) {
    if (!weight && !bias) return false;
    bind_channel(weight ? *weight : constant_channel(1.0f), "weight", false);
    bind_channel(bias ? *bias : constant_channel(0.0f), "bias", false);
    return true;
}

void ChannelCall::bind_channel_scratch(const char *arg) {
    Bound &b = new_bound(arg, 0);
    float *data = stats_.emplace_back(static_cast<size_t>(channels_ * batch_)).data();
    const int64_t gs = channels_ / groups_;
    b.hb.init_3d(View3D{data, DType::f32, gs, 1, groups_, gs, batch_, channels_});
    args_.buffer(arg, b.hb.get());
}

void ChannelCall::bind_int(const char *arg, int32_t v) {
    ints_.push_back(v);
    args_.scalar(arg, &ints_.back());
}

Status ChannelCall::check_epilogue(const Epilogue *e) const {
    if (!e) return Status::OK();
    if (e->residual) {
        Status s = check_like_x(*e->residual, "residual");
        if (!s.ok()) return s;
    }
    if (static_cast<int>(e->activation) > static_cast<int>(Activation::gelu_tanh))
        return invalid("activation: unknown code " + std::to_string(static_cast<int>(e->activation)));
    if (!std::isfinite(e->negative_slope))
        return invalid("negative_slope must be finite, got " + std::to_string(e->negative_slope));
    return Status::OK();
}

void ChannelCall::bind_epilogue(const Epilogue &e) {
    // none and relu are leaky_relu with slope 1 and 0: the kernels specialize on one
    // piecewise-linear case (see generators/algorithms/activation.h).
    Activation a = e.activation;
    double slope = e.negative_slope;
    if (a == Activation::none || a == Activation::relu) {
        slope = a == Activation::none ? 1.0 : 0.0;
        a = Activation::leaky_relu;
    }
    bind_int("activation", static_cast<int32_t>(a));
    bind_scalar("negative_slope", static_cast<float>(slope));
    if (e.residual) bind_tensor(*e.residual, "residual", false);
}

Status ChannelCall::check_fused_backward(const Epilogue *e, const TensorView *bias, const TensorView *dresidual) const {
    if (dresidual && !(e && e->residual)) return invalid("dresidual was requested but the epilogue has no residual");
    Status s = check_epilogue(e);
    if (!s.ok() || !(s = check_per_channel(bias, "bias", false)).ok()) return s;
    return dresidual ? check_like_x(*dresidual, "dresidual") : s;
}

void ChannelCall::bind_dx(const TensorView &dx, const TensorView *dresidual, bool with_dresidual) {
    bind_tensor(dx, with_dresidual ? "dx.0" : "dx", true);
    if (with_dresidual) bind_tensor(dresidual ? *dresidual : scratch_like_x(), "dx.1", true);
}

bool ChannelCall::bind_backward_params(const TensorView *weight, const TensorView *bias, const TensorView *dweight,
                                       const TensorView *dbias, const Epilogue *fused, bool per_sample_sums) {
    const TensorView *w = weight;
    if (fused) {  // the fused kernels take weight and bias: identities for absent ones
        if (!w) w = &constant_channel(1.0f);
        bind_channel(bias ? *bias : constant_channel(0.0f), "bias", false);
        bind_epilogue(*fused);
    }
    if (!w) return false;
    bind_channel(*w, "weight", false);
    bind_channel(dweight ? *dweight : constant_channel(0.0f), "dweight", true);
    bind_channel(dbias ? *dbias : constant_channel(0.0f), "dbias", true);
    if (per_sample_sums) {
        bind_channel_scratch("channel_sums.0");
        bind_channel_scratch("channel_sums.1");
    }
    return true;
}

Variant ChannelCall::variant(const Epilogue *fused, Variant rest) {
    if (fused) rest.set("add_residual", fused->residual != nullptr).set("epilogue", true);
    return rest;
}

void *ChannelCall::bind_vector(const TensorView *t, const char *arg, int64_t extent, DType dtype, bool output) {
    Bound &b = new_bound(arg, -1);
    void *data;
    int64_t n, stride;
    if (t && collapse_1d(*t, &n, &stride) && (stride == 1 || n <= 1)) {
        data = t->data;
    } else if (t) {
        data = output ? staging_.alloc(*t) : staging_.gather(*t);
        if (output) {
            b.out_view = t;
            b.stage = data;
        }
    } else {
        data = views_.emplace_back(staging_.constant(dtype, {extent}, 0.0f)).data;
    }
    if (t) note_device(b, *t, data, true);
    b.hb.init_1d(data, t ? t->dtype : dtype, extent, 1);
    args_.buffer(arg, b.hb.get());
    return data;
}

void ChannelCall::bind_scalar(const char *arg, float v) {
    scalars_.push_back(v);
    args_.scalar(arg, &scalars_.back());
}

void ChannelCall::fold_batch() {
    for (const Bound &b : bound_) {
        if (!b.tensor) continue;
        const halide_dimension_t *d = b.hb.buf.dim;
        if (d[0].extent > 1 && d[2].extent > 1 && int64_t(d[2].stride) != int64_t(d[0].stride) * d[0].extent) return;
    }
    for (Bound &b : bound_) {
        if (!b.tensor) continue;
        halide_dimension_t *d = b.hb.buf.dim;
        if (d[0].extent <= 1) d[0].stride = d[2].stride;  // (S = 1: positions are samples)
        d[0].extent *= d[2].extent;                        // (N x S fits int32: check_x)
        d[2].extent = 1;
    }
}

Status ChannelCall::run(const char *op, const char *dir, const Variant &variant) {
    const char *layout = unit_dim_ == 0 ? "nchw" : unit_dim_ == 1 ? "nhwc" : "strided";
    if (!params_unit_ || (unit_dim_ == 0 && !group_rows_)) layout = "strided";
    if (fold_batch_ && !groups_ && !std::strcmp(layout, "nhwc")) fold_batch();
    std::string why;
    const bool cuda = x_.device == Device::cuda;
    if (!mismatch_.empty())
        return type_error(std::string(op) + ": '" + mismatch_ + "' is on another device than x (a call's tensors share one)");
    if (cuda && !device_problem_.empty())
        return type_error(std::string(op) + ": CUDA tensor '" + device_problem_ +
                          "' has strides the kernels cannot take; make it contiguous (CUDA calls copy nothing)");
    const Selection sel = select_kernel(
        {op, dir, x_.dtype, variant.c_str(), layout, {batch_, channels_, spatial_}, x_.device, x_.device_index}, &why);
    const Kernel *k = sel.kernel;
    if (!k) return Status(Status::Code::runtime_error, why);
    if (cuda && !cuda_device_usable(x_.device_index, &why))
        return Status(Status::Code::runtime_error, std::string(op) + " on CUDA tensors: no CUDA device: " + why);
    const halide_filter_metadata_t *md = k->metadata_fn();
    for (Bound &b : bound_) {
        if (b.channel_dim < 0) continue;
        for (int a = 0; a < md->num_arguments; a++)
            if (!std::strcmp(md->arguments[a].name, b.arg) && md->arguments[a].dimensions < b.hb.buf.dimensions)
                b.hb.merge_dims(b.channel_dim);
    }
    std::vector<CallBuffer> bufs;
    if (cuda) {
        for (Bound &b : bound_) bufs.push_back({b.hb.get(), b.on_device});
        Status s = attach_device_buffers(bufs);
        if (!s.ok()) return s;
    }
    Status s = run_kernel(*k, args_, x_.device_index);
    if (cuda) detach_device_buffers(bufs);
    if (!s.ok()) return s;
    for (const Bound &b : bound_)  // staged outputs (CUDA ones through a host copy)
        if (b.out_view && !(s = Staging::scatter(b.stage, *b.out_view)).ok()) return s;
    return s;
}

void ChannelCall::note_device(Bound &b, const TensorView &t, const void *data, bool may_stage) {
    // A CPU call must not see device memory. A CUDA call takes host memory (the
    // runtime's identities and scratch) through Halide's copies.
    if (t.device == Device::cuda && !same_device(t, x_)) {
        if (mismatch_.empty()) mismatch_ = b.arg;
        return;
    }
    if (t.device != Device::cuda) return;
    b.on_device = data == t.data;
    if (!b.on_device && !may_stage && device_problem_.empty()) device_problem_ = b.arg;
}

float &element(const TensorView &t, int64_t i) {
    int64_t extent, stride;
    collapse_1d(t, &extent, &stride);
    return static_cast<float *>(t.data)[i * stride];
}

float &element(const TensorView &t, int64_t i, int64_t j) {
    return static_cast<float *>(t.data)[i * t.strides[0] + j * t.strides[1]];
}

Status check_bn_running_stats(const ChannelCall &call, const TensorView *running_mean, const TensorView *running_var,
                              bool training, std::optional<double> momentum, const int64_t *num_batches_tracked) {
    if (!running_mean != !running_var)
        return invalid("running_mean and running_var must be given together (or both None)");
    if (!training && !running_mean)
        return invalid("running_mean and running_var are required when training=False");
    if (momentum && !std::isfinite(*momentum))
        return invalid("momentum must be a finite number or None, got " + std::to_string(*momentum));
    if (!momentum && training && running_mean && !num_batches_tracked)
        return invalid("momentum=None (cumulative average) needs num_batches_tracked");
    if (training && call.batch() * call.spatial() <= 1)
        return invalid("Expected more than 1 value per channel when training, got " +
                       std::to_string(call.batch() * call.spatial()));
    return Status::OK();
}

Status check_nan_policy(NanPolicy nan_policy) {
    if (nan_policy == NanPolicy::propagate || nan_policy == NanPolicy::skip) return Status::OK();
    return invalid("nan_policy: unknown value " + std::to_string(static_cast<int>(nan_policy)) +
                   " (expected propagate or skip)");
}

double batch_variance(double mean, double var) {
    // The kernels clamp the variance at 0 (max(M2, 0)), which turns the NaN of a channel
    // with NaN/Inf data into 0; its mean still says so.
    return std::isfinite(mean) ? var : std::numeric_limits<double>::quiet_NaN();
}

Status update_running_stats(NanPolicy nan_policy, const TensorView &running_mean, const TensorView &running_var,
                            const float *mean, const float *var, int64_t count, std::optional<double> momentum,
                            int64_t *num_batches_tracked) {
    double m;
    if (momentum) {
        m = *momentum;
        if (num_batches_tracked) ++*num_batches_tracked;
    } else {
        ++*num_batches_tracked;
        m = 1.0 / double(*num_batches_tracked);
    }
    const double unbias = double(count) / double(count - 1);
    int64_t C, stride;
    collapse_1d(running_mean, &C, &stride);
    return with_host_view(running_mean, [&](const TensorView &rmean) {
        return with_host_view(running_var, [&](const TensorView &rvar) {
            for (int64_t c = 0; c < C; c++) {
                const double bv = batch_variance(mean[c], var[c]);
                if (nan_policy == NanPolicy::skip && !(std::isfinite(mean[c]) && std::isfinite(bv))) continue;
                float &rm = element(rmean, c), &rv = element(rvar, c);
                rm = static_cast<float>((1 - m) * rm + m * mean[c]);
                rv = static_cast<float>((1 - m) * rv + m * bv * unbias);
            }
            return Status::OK();
        });
    });
}

}  // namespace normgen::detail

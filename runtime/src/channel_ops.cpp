// Weight normalization, BatchNorm folding and the input scalers: per-channel
// operations on (n, c, s) views run through the channel-wise call plumbing.
#include "channel_call.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace normgen {

using namespace detail;

namespace {

// Dims [a, b) of t as one (extent, stride), if they have a single stride.
bool collapse_range(const TensorView &t, int a, int b, int64_t *extent, int64_t *stride) {
    *extent = 1;
    *stride = 1;
    bool any = false;
    for (int i = b - 1; i >= a; i--) {
        if (t.shape[i] == 1) continue;
        if (!any) {
            *stride = t.strides[i];
            any = true;
        } else if (t.strides[i] != *stride * *extent) {
            return false;
        }
        *extent *= t.shape[i];
    }
    if (t.numel() == 0) *extent = 0;
    return true;
}

// A tensor seen as (n = dims before `dim`, c = dim `dim`, s = dims after it); with no
// dim, (1, 1, everything). Tensors whose groups of dims have no single stride go
// through a contiguous copy (gathered for inputs, scattered back for outputs).
class NcsView {
public:
    NcsView(const TensorView &t, std::optional<int> dim, bool output, Staging &staging) : orig_(t) {
        if (!make(t, dim)) {
            staged_cuda_ = t.device == Device::cuda;
            void *p = output ? staging.alloc(t) : staging.gather(t);
            if (output) stage_ = p;
            make(contiguous_like(t, p), dim);
        }
    }
    const TensorView &view() const { return view_; }
    // A CUDA tensor whose dims have no (n, c, s) view: refused (CUDA calls copy nothing).
    Status check_device(const char *name) const {
        if (!staged_cuda_) return Status::OK();
        return type_error(std::string(name) + " is a CUDA tensor whose dims before and after `dim` have no single "
                          "stride each; make it contiguous");
    }
    [[nodiscard]] Status finish() const { return stage_ ? Staging::scatter(stage_, orig_) : Status::OK(); }

private:
    bool make(const TensorView &t, std::optional<int> dim) {
        const int d = dim.value_or(-1);
        int64_t n, ns, s, ss;
        if (!collapse_range(t, 0, d < 0 ? 0 : d, &n, &ns) || !collapse_range(t, d < 0 ? 0 : d + 1, t.rank, &s, &ss))
            return false;
        const int64_t c = d < 0 ? 1 : t.shape[d], cs = d < 0 ? 1 : t.strides[d];
        view_ = strided_view(t.data, t.dtype, {n, c, s}, {ns, cs, ss});
        view_.device = orig_.device;  // (a staged copy of a CUDA tensor is refused: check_device)
        view_.device_index = orig_.device_index;
        return true;
    }
    const TensorView &orig_;
    TensorView view_;
    void *stage_ = nullptr;
    bool staged_cuda_ = false;
};

Status resolve_dim(const TensorView &v, std::optional<int64_t> dim, std::optional<int> *out) {
    if (!dim) {
        *out = std::nullopt;
        return Status::OK();
    }
    const int64_t d = *dim < 0 ? *dim + v.rank : *dim;
    if (v.rank == 0 || d < 0 || d >= v.rank)
        return invalid("dim " + std::to_string(*dim) + " is out of range for v of rank " + std::to_string(v.rank));
    *out = static_cast<int>(d);
    return Status::OK();
}

// g: x's dtype with `count` elements, as (count,) or the kept-dims shape of v.
Status check_g(const TensorView &g, const char *name, const TensorView &v, std::optional<int> dim) {
    Status s = check_tensor(g, name);
    if (!s.ok() || !(s = check_dtype(g, name, v.dtype)).ok()) return s;
    const int64_t count = dim ? v.shape[*dim] : 1;
    bool ok = g.numel() == count;
    if (ok && dim && g.rank > 1) {  // kept dims: size 1 except along dim
        ok = g.rank == v.rank;
        for (int i = 0; ok && i < g.rank; i++) ok = g.shape[i] == (i == *dim ? count : 1);
    }
    if (!ok)
        return invalid("Expected " + std::string(name) + " of shape (" + std::to_string(count) +
                       ",) or v's kept-dims shape, but got " + shape_str(g.sizes()));
    int64_t e, st;
    if (!collapse_1d(g, &e, &st)) return invalid(std::string(name) + " must be a 1-D strided view");
    return Status::OK();
}

}  // namespace

Status weight_norm_forward(const TensorView &v, const TensorView &g, std::optional<int64_t> dim,
                           const TensorView &w, const TensorView *norm) {
    std::optional<int> d;
    Status s;
    if (!(s = check_tensor(v, "v")).ok() || !(s = resolve_dim(v, dim, &d)).ok() || !(s = check_g(g, "g", v, d)).ok() ||
        !(s = check_tensor(w, "w")).ok() || !(s = check_dtype(w, "w", v.dtype)).ok() ||
        !(s = check_same_shape(w, "w", v, "the shape of v")).ok())
        return s;
    const int64_t count = d ? v.shape[*d] : 1;
    if (norm && !(s = check_stats(*norm, "norm", count, "one per index along dim")).ok()) return s;
    if (!(s = check_no_overlap({{&w, "w"}, {norm, "norm"}}, {{&v, "v"}, {&g, "g"}})).ok()) return s;
    if (count == 0) return s;
    if (v.numel() == 0) {  // norms of empty slices: 0 (w is empty)
        return norm ? fill_f32(*norm, 0.0f) : s;
    }
    Staging staging;
    NcsView vv(v, d, false, staging), wv(w, d, true, staging);
    if (!(s = vv.check_device("v")).ok() || !(s = wv.check_device("w")).ok()) return s;
    ChannelCall call(vv.view());
    if (!(s = call.check_x("v")).ok()) return s;
    call.bind_tensor(vv.view(), "v", false);
    call.bind_tensor(wv.view(), "w", true);
    call.bind_channel(g, "g", false);
    call.bind_channel_stat(norm, "norm");
    if (!(s = call.run("weight_norm", "fwd", "")).ok()) return s;
    return wv.finish();
}

Status weight_norm_backward(const TensorView &dw, const TensorView &v, const TensorView &norm, const TensorView &g,
                            std::optional<int64_t> dim, const TensorView &dv, const TensorView &dg) {
    std::optional<int> d;
    Status s;
    if (!(s = check_tensor(v, "v")).ok() || !(s = resolve_dim(v, dim, &d)).ok() || !(s = check_g(g, "g", v, d)).ok() ||
        !(s = check_tensor(dw, "dw")).ok() || !(s = check_dtype(dw, "dw", v.dtype)).ok() ||
        !(s = check_same_shape(dw, "dw", v, "the shape of v")).ok() ||
        !(s = check_tensor(dv, "dv")).ok() || !(s = check_dtype(dv, "dv", v.dtype)).ok() ||
        !(s = check_same_shape(dv, "dv", v, "the shape of v")).ok() ||
        !(s = check_tensor(dg, "dg")).ok() || !(s = check_dtype(dg, "dg", v.dtype)).ok() ||
        !(s = check_same_shape(dg, "dg", g, "the shape of g")).ok())
        return s;
    const int64_t count = d ? v.shape[*d] : 1;
    if (!(s = check_stats(norm, "norm", count, "one per index along dim")).ok()) return s;
    if (!(s = check_no_overlap({{&dv, "dv"}, {&dg, "dg"}}, {{&dw, "dw"}, {&v, "v"}, {&norm, "norm"}, {&g, "g"}})).ok())
        return s;
    if (count == 0) return s;
    if (v.numel() == 0) {
        return fill_zero(dg);
    }
    Staging staging;
    NcsView dwv(dw, d, false, staging), vv(v, d, false, staging), dvv(dv, d, true, staging);
    if (!(s = dwv.check_device("dw")).ok() || !(s = vv.check_device("v")).ok() || !(s = dvv.check_device("dv")).ok())
        return s;
    ChannelCall call(vv.view());
    if (!(s = call.check_x("v")).ok()) return s;
    call.bind_tensor(dwv.view(), "dw", false);
    call.bind_tensor(vv.view(), "v", false);
    call.bind_tensor(dvv.view(), "dv", true);
    call.bind_channel(norm, "norm", false);
    call.bind_channel(g, "g", false);
    call.bind_channel(dg, "dg", true);
    if (!(s = call.run("weight_norm", "bwd", "")).ok()) return s;
    return dvv.finish();
}

Status fold_batch_norm(const TensorView &w, const TensorView *b, const TensorView &running_mean,
                       const TensorView &running_var, const TensorView *gamma, const TensorView *beta, double eps,
                       const TensorView &w_out, const TensorView &b_out) {
    Status s = check_tensor(w, "w");
    if (!s.ok()) return s;
    if (w.rank < 1) return invalid("Expected w with the output channels on axis 0, but got a 0-d tensor");
    Staging staging;
    NcsView wv(w, 0, false, staging), wov(w_out, 0, true, staging);
    if (!(s = wv.check_device("w")).ok() || !(s = wov.check_device("w_out")).ok()) return s;
    ChannelCall call(wv.view());
    if (!(s = call.check_x("w")).ok() || !(s = call.check_per_channel(b, "b", false)).ok() ||
        !(s = call.check_per_channel(&running_mean, "running_mean", true)).ok() ||
        !(s = call.check_per_channel(&running_var, "running_var", true)).ok() ||
        !(s = call.check_per_channel(gamma, "gamma", false)).ok() ||
        !(s = call.check_per_channel(beta, "beta", false)).ok() || !(s = check_eps(eps)).ok() ||
        !(s = check_tensor(w_out, "w_out")).ok() || !(s = check_dtype(w_out, "w_out", w.dtype)).ok() ||
        !(s = check_same_shape(w_out, "w_out", w, "the shape of w")).ok() ||
        !(s = call.check_per_channel(&b_out, "b_out", false)).ok())
        return s;
    // w_out may be w itself (in place: each element is read once, then written).
    s = check_no_overlap({{&b_out, "b_out"}}, {{&w, "w"}, {b, "b"}, {&running_mean, "running_mean"},
                                               {&running_var, "running_var"}, {gamma, "gamma"}, {beta, "beta"}});
    if (!s.ok()) return s;
    if (w.data != w_out.data && overlaps(w, w_out)) return invalid("w_out overlaps w (other than being w itself)");
    if (call.channels() == 0) return s;
    call.bind_tensor(wv.view(), "w", false);
    call.bind_tensor(wov.view(), "w_folded", true);
    call.bind_channel(b ? *b : call.constant_channel(0.0f), "b", false);
    call.bind_channel(running_mean, "running_mean", false);
    call.bind_channel(running_var, "running_var", false);
    call.bind_channel(gamma ? *gamma : call.constant_channel(1.0f), "gamma", false);
    call.bind_channel(beta ? *beta : call.constant_channel(0.0f), "beta", false);
    call.bind_channel(b_out, "b_folded", true);
    call.bind_scalar("eps", static_cast<float>(eps));
    if (!(s = call.run("fold_batch_norm", "fwd", "")).ok()) return s;
    return wov.finish();
}

// ---- scalers -------------------------------------------------------------------------

namespace {

struct ChunkStats {
    int64_t count = 0;
    std::pmr::vector<double> mean{call_memory()};
    std::pmr::vector<float> m2{call_memory()}, min{call_memory()}, max{call_memory()};
};

Status check_samples(const TensorView &x, const char *name, int64_t features) {
    Status s = check_tensor(x, name);
    if (!s.ok()) return s;
    if (x.rank != 2)
        return invalid("Expected " + std::string(name) + " of shape (n_samples, n_features), but got " +
                       shape_str(x.sizes()));
    if (features >= 0 && x.shape[1] != features)
        return invalid(std::string(name) + " has " + std::to_string(x.shape[1]) + " features, but the scaler was fit on " +
                       std::to_string(features) + " features");
    return Status::OK();
}

// (n_samples, n_features) as (n = 1, c = feature, s = sample): row-major arrays get the
// channels-last kernels, column-major ones the NCHW kernels, others the strided ones.
TensorView feature_view(const TensorView &x) {
    TensorView v = strided_view(x.data, x.dtype, {1, x.shape[1], x.shape[0]}, {0, x.strides[1], x.strides[0]});
    v.device = x.device;
    v.device_index = x.device_index;
    return v;
}

Status chunk_stats(const TensorView &x_in, int64_t features, ChunkStats *out) {
    Status s = check_samples(x_in, "x", features);
    if (!s.ok()) return s;
    const TensorView x = feature_view(x_in);
    ChannelCall call(x);
    if (!(s = call.check_x("x")).ok()) return s;
    const int64_t f = x.shape[1];
    out->count = x.shape[2];
    out->mean.assign(static_cast<size_t>(f), 0.0);
    for (auto *v : {&out->m2, &out->min, &out->max}) v->assign(static_cast<size_t>(f), 0.0f);
    if (out->count == 0) return s;
    call.bind_tensor(x, "x", false);
    float *stat[5];
    const char *names[5] = {"stats.0", "stats.1", "stats.2", "stats.3", "stats.4"};
    for (int i = 0; i < 5; i++) stat[i] = call.bind_channel_stat(nullptr, names[i]);
    if (!(s = call.run("feature_stats", "fwd", "")).ok()) return s;
    for (int64_t i = 0; i < f; i++) out->mean[i] = double(stat[0][i]) + double(stat[1][i]);
    out->m2.assign(stat[2], stat[2] + f);
    out->min.assign(stat[3], stat[3] + f);
    out->max.assign(stat[4], stat[4] + f);
    return s;
}

// y = (x - center) * scale + shift per feature; center/scale/shift: `features` values
// each, or fn(i) giving value i.
template <typename Center, typename Scale, typename Shift>
Status affine(const TensorView &x_in, const char *xname, const TensorView &y_in, const char *yname,
              int64_t features, const Center &center, const Scale &scale, const Shift &shift) {
    if (features < 0) return invalid("This scaler is not fitted yet: call fit or partial_fit first");
    Status s = check_samples(x_in, xname, features);
    if (!s.ok() || !(s = check_tensor(y_in, yname)).ok() || !(s = check_dtype(y_in, yname, x_in.dtype)).ok() ||
        !(s = check_same_shape(y_in, yname, x_in, !std::strcmp(xname, "x") ? "the shape of x" : "the shape of y")).ok() ||
        !(s = check_same_device(y_in, yname, x_in)).ok())
        return s;
    if (x_in.data != y_in.data && overlaps(x_in, y_in)) return invalid(std::string(yname) + " overlaps " + xname);
    const TensorView x = feature_view(x_in), y = feature_view(y_in);
    if (x.numel() == 0) return s;
    std::pmr::vector<float> p[3] = {std::pmr::vector<float>(call_memory()), std::pmr::vector<float>(call_memory()),
                                    std::pmr::vector<float>(call_memory())};
    for (int64_t i = 0; i < features; i++) {
        p[0].push_back(static_cast<float>(center(i)));
        p[1].push_back(static_cast<float>(scale(i)));
        p[2].push_back(static_cast<float>(shift(i)));
    }
    TensorView pv[3];
    for (int i = 0; i < 3; i++) pv[i] = TensorView::contiguous(p[i].data(), DType::f32, {features});
    ChannelCall call(x);
    if (!(s = call.check_x(xname)).ok()) return s;
    call.bind_tensor(x, "x", false);
    call.bind_tensor(y, "y", true);
    call.bind_channel(pv[0], "center", false);
    call.bind_channel(pv[1], "scale", false);
    call.bind_channel(pv[2], "shift", false);
    return call.run("feature_affine", "fwd", "");
}

}  // namespace

Status ZScore::fit(const TensorView &x) {
    ZScore fresh;
    Status s = fresh.partial_fit(x);
    if (s.ok()) *this = fresh;
    return s;
}

Status ZScore::partial_fit(const TensorView &x) {
    ChunkStats c;
    Status s = chunk_stats(x, count_ ? n_features() : -1, &c);
    if (!s.ok() || c.count == 0) return s;
    if (!count_) {
        mean_.assign(c.mean.size(), 0.0);
        m2_.assign(c.mean.size(), 0.0);
    }
    // Chan, Golub & LeVeque: merge (count_, mean_, m2_) with the chunk's.
    const double na = double(count_), nb = double(c.count), n = na + nb;
    for (size_t i = 0; i < mean_.size(); i++) {
        const double delta = c.mean[i] - mean_[i];
        mean_[i] += delta * nb / n;
        m2_[i] += double(c.m2[i]) + delta * delta * na * nb / n;
    }
    count_ += c.count;
    return s;
}

namespace {
// (The transforms' per-feature values, computed in place: a call allocates nothing.)
double zscore_scale(const std::vector<double> &m2, int64_t count, size_t i) {
    const double v = count ? m2[i] / double(count) : 0.0;
    return v > 0 ? std::sqrt(v) : 1.0;
}
double minmax_scale(double lo, double hi, double dmin, double dmax) {
    const double r = dmax - dmin;
    return (hi - lo) / (r != 0 ? r : 1.0);
}
}  // namespace

std::vector<double> ZScore::var() const {
    std::vector<double> v(mean_.size(), 0.0);
    for (size_t i = 0; i < v.size() && count_; i++) v[i] = m2_[i] / double(count_);
    return v;
}

std::vector<double> ZScore::scale() const {
    std::vector<double> v(mean_.size());
    for (size_t i = 0; i < v.size(); i++) v[i] = zscore_scale(m2_, count_, i);
    return v;
}

Status ZScore::transform(const TensorView &x, const TensorView &y) const {
    return affine(x, "x", y, "y", count_ ? n_features() : -1, [&](int64_t i) { return mean_[i]; },
                  [&](int64_t i) { return 1.0 / zscore_scale(m2_, count_, i); }, [](int64_t) { return 0.0; });
}

Status ZScore::inverse_transform(const TensorView &y, const TensorView &x) const {
    return affine(y, "y", x, "x", count_ ? n_features() : -1, [](int64_t) { return 0.0; },
                  [&](int64_t i) { return zscore_scale(m2_, count_, i); }, [&](int64_t i) { return mean_[i]; });
}

Status MinMax::fit(const TensorView &x) {
    MinMax fresh(lo_, hi_);
    Status s = fresh.partial_fit(x);
    if (s.ok()) *this = fresh;
    return s;
}

Status MinMax::partial_fit(const TensorView &x) {
    if (!(lo_ < hi_))
        return invalid("Minimum of desired feature range must be smaller than maximum, got feature_range=(" +
                       std::to_string(lo_) + ", " + std::to_string(hi_) + ")");
    ChunkStats c;
    Status s = chunk_stats(x, count_ ? n_features() : -1, &c);
    if (!s.ok() || c.count == 0) return s;
    if (!count_) {
        data_min_.assign(c.min.size(), std::numeric_limits<double>::infinity());
        data_max_.assign(c.max.size(), -std::numeric_limits<double>::infinity());
    }
    for (size_t i = 0; i < data_min_.size(); i++) {
        data_min_[i] = std::fmin(data_min_[i], double(c.min[i]));
        data_max_[i] = std::fmax(data_max_[i], double(c.max[i]));
    }
    count_ += c.count;
    return s;
}

std::vector<double> MinMax::data_range() const {
    std::vector<double> r(data_min_.size());
    for (size_t i = 0; i < r.size(); i++) r[i] = data_max_[i] - data_min_[i];
    return r;
}

std::vector<double> MinMax::scale() const {
    std::vector<double> r(data_min_.size());
    for (size_t i = 0; i < r.size(); i++) r[i] = minmax_scale(lo_, hi_, data_min_[i], data_max_[i]);
    return r;
}

std::vector<double> MinMax::min() const {
    std::vector<double> sc = scale(), m(data_min_.size());
    for (size_t i = 0; i < m.size(); i++) m[i] = lo_ - data_min_[i] * sc[i];
    return m;
}

// y = (x - data_min) * scale + lo: the subtraction first (as every normgen affine map),
// equal to scikit-learn's x * scale + min up to rounding.
Status MinMax::transform(const TensorView &x, const TensorView &y) const {
    return affine(x, "x", y, "y", count_ ? n_features() : -1, [&](int64_t i) { return data_min_[i]; },
                  [&](int64_t i) { return minmax_scale(lo_, hi_, data_min_[i], data_max_[i]); },
                  [&](int64_t) { return lo_; });
}

Status MinMax::inverse_transform(const TensorView &y, const TensorView &x) const {
    return affine(y, "y", x, "x", count_ ? n_features() : -1, [&](int64_t) { return lo_; },
                  [&](int64_t i) { return 1.0 / minmax_scale(lo_, hi_, data_min_[i], data_max_[i]); },
                  [&](int64_t i) { return data_min_[i]; });
}

}  // namespace normgen

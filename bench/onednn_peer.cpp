// oneDNN's layer_normalization primitive as a benchmark peer: a problem is created
// once (primitive + buffers filled with data), then run() executes it once.
#include <pybind11/pybind11.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <random>
#include <unordered_map>
#include <string>
#include <vector>

namespace py = pybind11;
using namespace dnnl;

namespace {

engine &cpu_engine() {
    static engine e(engine::kind::cpu, 0);
    return e;
}

class LayerNorm {
public:
    // dir: "fwd" (training forward: y, mean, variance) or "bwd" (dx, dscale, dshift).
    LayerNorm(int64_t rows, int64_t cols, const std::string &dir, bool affine)
        : s_(cpu_engine()), n_(rows * cols) {
        engine &eng = cpu_engine();
        memory::desc md({rows, cols}, memory::data_type::f32, memory::format_tag::ab);
        memory::desc pmd({cols}, memory::data_type::f32, memory::format_tag::a);
        auto flags = affine ? (normalization_flags::use_scale | normalization_flags::use_shift)
                            : normalization_flags::none;
        auto fwd_pd = layer_normalization_forward::primitive_desc(eng, prop_kind::forward_training, md, md, 1e-5f, flags);
        std::mt19937 rng(1);
        std::normal_distribution<float> nd;
        auto buf = [&](size_t n, float fill_mean) {
            std::vector<float> v(n);
            for (auto &e : v) e = fill_mean + nd(rng);
            return v;
        };
        x_ = buf(n_, 0.f), y_ = buf(n_, 0.f), dy_ = buf(n_, 0.f), dx_ = buf(n_, 0.f);
        scale_ = buf(cols, 1.f), shift_ = buf(cols, 0.f), dscale_ = buf(cols, 0.f), dshift_ = buf(cols, 0.f);
        mean_ = buf(rows, 0.f), var_ = std::vector<float>(rows, 1.f);
        memory X(md, eng, x_.data()), Y(md, eng, y_.data()), DY(md, eng, dy_.data()), DX(md, eng, dx_.data());
        memory SC(pmd, eng, scale_.data()), SH(pmd, eng, shift_.data()), DSC(pmd, eng, dscale_.data()),
            DSH(pmd, eng, dshift_.data());
        memory M(fwd_pd.mean_desc(), eng, mean_.data()), V(fwd_pd.variance_desc(), eng, var_.data());
        if (dir == "fwd") {
            prim_ = layer_normalization_forward(fwd_pd);
            args_ = {{DNNL_ARG_SRC, X}, {DNNL_ARG_DST, Y}, {DNNL_ARG_MEAN, M}, {DNNL_ARG_VARIANCE, V}};
            if (affine) args_.insert({{DNNL_ARG_SCALE, SC}, {DNNL_ARG_SHIFT, SH}});
        } else {
            auto bwd_pd = layer_normalization_backward::primitive_desc(eng, prop_kind::backward, md, md, md, 1e-5f,
                                                                       flags, fwd_pd);
            prim_ = layer_normalization_backward(bwd_pd);
            args_ = {{DNNL_ARG_SRC, X}, {DNNL_ARG_DIFF_DST, DY}, {DNNL_ARG_DIFF_SRC, DX}, {DNNL_ARG_MEAN, M},
                     {DNNL_ARG_VARIANCE, V}};
            if (affine)
                args_.insert({{DNNL_ARG_SCALE, SC}, {DNNL_ARG_SHIFT, SH}, {DNNL_ARG_DIFF_SCALE, DSC},
                              {DNNL_ARG_DIFF_SHIFT, DSH}});
        }
    }
    void run() {
        py::gil_scoped_release release;
        prim_.execute(s_, args_);
        s_.wait();
    }

private:
    stream s_;
    int64_t n_;
    std::vector<float> x_, y_, dy_, dx_, scale_, shift_, dscale_, dshift_, mean_, var_;
    primitive prim_;
    std::unordered_map<int, memory> args_;
};

// batch_normalization on (N, C, H, W) in a given memory format: "nchw", "nhwc" or the
// blocked "nChw16c" (oneDNN's own best CPU layout). mode: "fwd" (training), "inf"
// (inference with global statistics) or "bwd".
class BatchNorm {
public:
    BatchNorm(int64_t n, int64_t c, int64_t h, int64_t w, const std::string &format, const std::string &mode)
        : s_(cpu_engine()) {
        engine &eng = cpu_engine();
        memory::format_tag tag = format == "nhwc" ? memory::format_tag::nhwc
                                 : format == "nChw16c" ? memory::format_tag::nChw16c
                                                       : memory::format_tag::nchw;
        memory::desc md({n, c, h, w}, memory::data_type::f32, tag);
        memory::desc cmd({c}, memory::data_type::f32, memory::format_tag::a);
        auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
        if (mode == "inf") flags = flags | normalization_flags::use_global_stats;
        auto fwd_pd = batch_normalization_forward::primitive_desc(
            eng, mode == "inf" ? prop_kind::forward_inference : prop_kind::forward_training, md, md, 1e-5f, flags);
        std::mt19937 rng(1);
        std::normal_distribution<float> nd;
        auto buf = [&](size_t k, float mean) {
            std::vector<float> v(k);
            for (auto &e : v) e = mean + nd(rng);
            return v;
        };
        const size_t total = static_cast<size_t>(n * c * h * w);
        x_ = buf(total, 0.f), y_ = buf(total, 0.f), dy_ = buf(total, 0.f), dx_ = buf(total, 0.f);
        scale_ = buf(c, 1.f), shift_ = buf(c, 0.f), dscale_ = buf(c, 0.f), dshift_ = buf(c, 0.f);
        mean_ = buf(c, 0.f), var_ = std::vector<float>(c, 1.f);
        memory X(md, eng, x_.data()), Y(md, eng, y_.data()), DY(md, eng, dy_.data()), DX(md, eng, dx_.data());
        memory SC(cmd, eng, scale_.data()), SH(cmd, eng, shift_.data()), DSC(cmd, eng, dscale_.data()),
            DSH(cmd, eng, dshift_.data()), M(cmd, eng, mean_.data()), V(cmd, eng, var_.data());
        if (mode != "bwd") {
            prim_ = batch_normalization_forward(fwd_pd);
            args_ = {{DNNL_ARG_SRC, X}, {DNNL_ARG_DST, Y}, {DNNL_ARG_SCALE, SC}, {DNNL_ARG_SHIFT, SH},
                     {DNNL_ARG_MEAN, M}, {DNNL_ARG_VARIANCE, V}};
        } else {
            auto bwd_pd = batch_normalization_backward::primitive_desc(eng, prop_kind::backward, md, md, md, 1e-5f,
                                                                       flags, fwd_pd);
            prim_ = batch_normalization_backward(bwd_pd);
            args_ = {{DNNL_ARG_SRC, X}, {DNNL_ARG_DIFF_DST, DY}, {DNNL_ARG_DIFF_SRC, DX}, {DNNL_ARG_MEAN, M},
                     {DNNL_ARG_VARIANCE, V}, {DNNL_ARG_SCALE, SC}, {DNNL_ARG_DIFF_SCALE, DSC},
                     {DNNL_ARG_DIFF_SHIFT, DSH}};
        }
    }
    void run() {
        py::gil_scoped_release release;
        prim_.execute(s_, args_);
        s_.wait();
    }

private:
    stream s_;
    std::vector<float> x_, y_, dy_, dx_, scale_, shift_, dscale_, dshift_, mean_, var_;
    primitive prim_;
    std::unordered_map<int, memory> args_;
};

}  // namespace

PYBIND11_MODULE(normgen_bench_peers, m) {
    m.doc() = "oneDNN peers for bench/run_bench.py";
    m.def("onednn_version", [] {
        const dnnl_version_t *v = dnnl_version();
        return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " (" +
               (v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other") + ")";
    });
    m.def("set_threads", [](int n) { omp_set_num_threads(n); });
    py::class_<LayerNorm>(m, "LayerNorm")
        .def(py::init<int64_t, int64_t, const std::string &, bool>(), py::arg("rows"), py::arg("cols"),
             py::arg("dir"), py::arg("affine") = true)
        .def("run", &LayerNorm::run);
    py::class_<BatchNorm>(m, "BatchNorm")
        .def(py::init<int64_t, int64_t, int64_t, int64_t, const std::string &, const std::string &>(), py::arg("n"),
             py::arg("c"), py::arg("h"), py::arg("w"), py::arg("format"), py::arg("mode"))
        .def("run", &BatchNorm::run);
}

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
}

// normgen._normgen: the C++ runtime API for the `normgen` Python package.
// Tensors cross as (data pointer, dtype name, shape, strides in elements) tuples built
// by normgen/_arrays.py, so this module knows neither numpy nor torch. Validation and
// kernels run with the GIL released; a failed Status raises ValueError / TypeError /
// RuntimeError with the runtime's message.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "normgen/normgen.h"

#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;
using normgen::DType;
using normgen::Status;
using normgen::TensorView;

namespace {

// (data pointer, dtype, shape, strides in elements, device: -1 for the CPU, else the
// CUDA device index of a device pointer).
using ViewSpec = std::tuple<uintptr_t, std::string, std::vector<int64_t>, std::vector<int64_t>, int>;
using OptSpec = std::optional<ViewSpec>;

DType dtype_from(const std::string &s) {
    if (s == "f32") return DType::f32;
    if (s == "f16") return DType::f16;
    if (s == "bf16") return DType::bf16;
    throw py::type_error("unsupported dtype '" + s + "'");
}

TensorView view(const ViewSpec &v) {
    const auto &[ptr, dtype, shape, strides, device] = v;
    TensorView t = TensorView::strided(reinterpret_cast<void *>(ptr), dtype_from(dtype), shape, strides);
    if (device >= 0) {
        t.device = normgen::Device::cuda;
        t.device_index = device;
    }
    return t;
}

// Optional tensors keep a stable address for the call.
struct Opt {
    std::optional<TensorView> v;
    explicit Opt(const OptSpec &s) {
        if (s) v = view(*s);
    }
    const TensorView *get() const { return v ? &*v : nullptr; }
};

// A fused epilogue from the Python arguments (activation code as in normgen.Activation).
struct EpilogueArg {
    Opt residual;
    normgen::Epilogue e;
    EpilogueArg(const OptSpec &r, int activation, double slope) : residual(r) {
        e.residual = residual.get();
        e.activation = static_cast<normgen::Activation>(activation);
        e.negative_slope = slope;
    }
};

void raise_if_error(const Status &s) {
    switch (s.code()) {
    case Status::Code::ok: return;
    case Status::Code::invalid_argument: throw py::value_error(s.message());
    case Status::Code::type_error: throw py::type_error(s.message());
    case Status::Code::runtime_error: throw std::runtime_error(s.message());
    }
}

template <typename F>
void call(F &&f) {
    Status s;
    {
        py::gil_scoped_release release;
        s = f();
    }
    raise_if_error(s);
}

// A float64 buffer of `rows` x (1 + 2C) values for x of shape (N, C, ...): checked here,
// where its length is known (the runtime takes the pointer alone).
void check_f64_len(const TensorView &x, uintptr_t ptr, int64_t len, int64_t rows, const char *name) {
    if (x.rank < 2) return;  // the runtime rejects x itself, by name
    if (rows < 1) throw py::value_error("world must be >= 1, got " + std::to_string(rows));
    const int64_t want = rows * (1 + 2 * x.shape[1]);
    if (!ptr || len != want)
        throw py::value_error(std::string(name) + " must hold " + std::to_string(want) + " float64 values (" +
                              std::to_string(rows) + " x (1 + 2C)), got " + std::to_string(len));
}

}  // namespace

PYBIND11_MODULE(_normgen, m) {
    m.doc() = "normgen C++ runtime (use the normgen package, not this module)";

    m.def("layer_norm_forward", [](const ViewSpec &x, const std::vector<int64_t> &ns, const OptSpec &w,
                                   const OptSpec &b, double eps, const ViewSpec &y, const OptSpec &mean,
                                   const OptSpec &rstd) {
        TensorView xv = view(x), yv = view(y);
        Opt wv(w), bv(b), mv(mean), rv(rstd);
        call([&] { return normgen::layer_norm_forward(xv, ns, wv.get(), bv.get(), eps, yv, mv.get(), rv.get()); });
    });
    m.def("layer_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &mean,
                                    const ViewSpec &rstd, const std::vector<int64_t> &ns, const OptSpec &w,
                                    const ViewSpec &dx, const OptSpec &dw, const OptSpec &db) {
        TensorView dyv = view(dy), xv = view(x), mv = view(mean), rv = view(rstd), dxv = view(dx);
        Opt wv(w), dwv(dw), dbv(db);
        call([&] { return normgen::layer_norm_backward(dyv, xv, mv, rv, ns, wv.get(), dxv, dwv.get(), dbv.get()); });
    });
    m.def("add_layer_norm_forward", [](const ViewSpec &x, const ViewSpec &r, const std::vector<int64_t> &ns,
                                       const OptSpec &w, const OptSpec &b, double eps, const ViewSpec &y,
                                       const ViewSpec &s, const OptSpec &mean, const OptSpec &rstd) {
        TensorView xv = view(x), rv = view(r), yv = view(y), sv = view(s);
        Opt wv(w), bv(b), mv(mean), sdv(rstd);
        call([&] {
            return normgen::add_layer_norm_forward(xv, rv, ns, wv.get(), bv.get(), eps, yv, sv, mv.get(), sdv.get());
        });
    });
    m.def("add_layer_norm_backward", [](const ViewSpec &dy, const OptSpec &ds, const ViewSpec &s,
                                        const ViewSpec &mean, const ViewSpec &rstd, const std::vector<int64_t> &ns,
                                        const OptSpec &w, const ViewSpec &dx, const OptSpec &dw, const OptSpec &db) {
        TensorView dyv = view(dy), sv = view(s), mv = view(mean), rv = view(rstd), dxv = view(dx);
        Opt dsv(ds), wv(w), dwv(dw), dbv(db);
        call([&] {
            return normgen::add_layer_norm_backward(dyv, dsv.get(), sv, mv, rv, ns, wv.get(), dxv, dwv.get(), dbv.get());
        });
    });
    m.def("add_rms_norm_forward", [](const ViewSpec &x, const ViewSpec &r, const std::vector<int64_t> &ns,
                                     const OptSpec &w, std::optional<double> eps, const ViewSpec &y, const ViewSpec &s,
                                     const OptSpec &rstd) {
        TensorView xv = view(x), rv = view(r), yv = view(y), sv = view(s);
        Opt wv(w), sdv(rstd);
        call([&] { return normgen::add_rms_norm_forward(xv, rv, ns, wv.get(), eps, yv, sv, sdv.get()); });
    });
    m.def("add_rms_norm_backward", [](const ViewSpec &dy, const OptSpec &ds, const ViewSpec &s, const ViewSpec &rstd,
                                      const std::vector<int64_t> &ns, const OptSpec &w, const ViewSpec &dx,
                                      const OptSpec &dw) {
        TensorView dyv = view(dy), sv = view(s), rv = view(rstd), dxv = view(dx);
        Opt dsv(ds), wv(w), dwv(dw);
        call([&] { return normgen::add_rms_norm_backward(dyv, dsv.get(), sv, rv, ns, wv.get(), dxv, dwv.get()); });
    });
    m.def("rms_norm_forward", [](const ViewSpec &x, const std::vector<int64_t> &ns, const OptSpec &w,
                                 std::optional<double> eps, const ViewSpec &y, const OptSpec &rstd) {
        TensorView xv = view(x), yv = view(y);
        Opt wv(w), rv(rstd);
        call([&] { return normgen::rms_norm_forward(xv, ns, wv.get(), eps, yv, rv.get()); });
    });
    m.def("rms_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &rstd,
                                  const std::vector<int64_t> &ns, const OptSpec &w, const ViewSpec &dx,
                                  const OptSpec &dw) {
        TensorView dyv = view(dy), xv = view(x), rv = view(rstd), dxv = view(dx);
        Opt wv(w), dwv(dw);
        call([&] { return normgen::rms_norm_backward(dyv, xv, rv, ns, wv.get(), dxv, dwv.get()); });
    });

    m.def("batch_norm_forward", [](const ViewSpec &x, const OptSpec &rm, const OptSpec &rv, const OptSpec &w,
                                   const OptSpec &b, bool training, std::optional<double> momentum, double eps,
                                   const ViewSpec &y, const OptSpec &save_mean, const OptSpec &save_rstd,
                                   std::optional<uintptr_t> num_batches_tracked, const OptSpec &residual,
                                   int activation, double slope, int nan_policy) {
        TensorView xv = view(x), yv = view(y);
        Opt rmv(rm), rvv(rv), wv(w), bv(b), smv(save_mean), srv(save_rstd);
        EpilogueArg ep(residual, activation, slope);
        auto *nbt = num_batches_tracked ? reinterpret_cast<int64_t *>(*num_batches_tracked) : nullptr;
        call([&] {
            return normgen::batch_norm_forward(xv, rmv.get(), rvv.get(), wv.get(), bv.get(), training, momentum, eps,
                                               yv, smv.get(), srv.get(), nbt, &ep.e,
                                               static_cast<normgen::NanPolicy>(nan_policy));
        });
    });
    m.def("batch_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &save_mean,
                                    const ViewSpec &save_rstd, const OptSpec &w, bool training, const ViewSpec &dx,
                                    const OptSpec &dw, const OptSpec &db, const OptSpec &bias,
                                    const OptSpec &residual, int activation, double slope, const OptSpec &dres) {
        TensorView dyv = view(dy), xv = view(x), mv = view(save_mean), rv = view(save_rstd), dxv = view(dx);
        Opt wv(w), dwv(dw), dbv(db), biasv(bias), drv(dres);
        EpilogueArg ep(residual, activation, slope);
        call([&] {
            return normgen::batch_norm_backward(dyv, xv, mv, rv, wv.get(), training, dxv, dwv.get(), dbv.get(), &ep.e,
                                                biasv.get(), drv.get());
        });
    });

    // Synchronized BatchNorm's steps; float64 buffers cross as (address, length) of a
    // contiguous CPU float64 tensor (normgen/torch/sync_batch_norm.py).
    m.def("sync_batch_norm_moments", [](const ViewSpec &x, uintptr_t row, int64_t len) {
        TensorView xv = view(x);
        check_f64_len(xv, row, len, 1, "row");
        call([&] { return normgen::sync_batch_norm_moments(xv, reinterpret_cast<double *>(row)); });
    });
    m.def("sync_batch_norm_forward", [](const ViewSpec &x, uintptr_t table, int64_t len, int64_t world,
                                        const OptSpec &rm, const OptSpec &rv, const OptSpec &w, const OptSpec &b,
                                        std::optional<double> momentum, double eps, const ViewSpec &y,
                                        const ViewSpec &save_mean, const ViewSpec &save_rstd,
                                        std::optional<uintptr_t> num_batches_tracked, int nan_policy) {
        TensorView xv = view(x), yv = view(y), smv = view(save_mean), srv = view(save_rstd);
        Opt rmv(rm), rvv(rv), wv(w), bv(b);
        check_f64_len(xv, table, len, world, "table");
        auto *nbt = num_batches_tracked ? reinterpret_cast<int64_t *>(*num_batches_tracked) : nullptr;
        call([&] {
            return normgen::sync_batch_norm_forward(xv, reinterpret_cast<const double *>(table), world, rmv.get(),
                                                    rvv.get(), wv.get(), bv.get(), momentum, eps, yv, smv, srv, nbt,
                                                    static_cast<normgen::NanPolicy>(nan_policy));
        });
    });
    m.def("sync_batch_norm_grad_sums", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &save_mean,
                                          const ViewSpec &save_rstd, const OptSpec &w, uintptr_t sums, int64_t len,
                                          const ViewSpec &dy_scaled, const OptSpec &dw, const OptSpec &db) {
        TensorView dyv = view(dy), xv = view(x), smv = view(save_mean), srv = view(save_rstd), dsv = view(dy_scaled);
        Opt wv(w), dwv(dw), dbv(db);
        check_f64_len(xv, sums, len, 1, "sums");
        call([&] {
            return normgen::sync_batch_norm_grad_sums(dyv, xv, smv, srv, wv.get(), reinterpret_cast<double *>(sums),
                                                      dsv, dwv.get(), dbv.get());
        });
    });
    m.def("sync_batch_norm_backward", [](const ViewSpec &x, const ViewSpec &dy_scaled, const ViewSpec &save_mean,
                                         const ViewSpec &save_rstd, const OptSpec &w, uintptr_t sums, int64_t len,
                                         const ViewSpec &dx) {
        TensorView xv = view(x), dsv = view(dy_scaled), smv = view(save_mean), srv = view(save_rstd), dxv = view(dx);
        Opt wv(w);
        check_f64_len(xv, sums, len, 1, "sums");
        call([&] {
            return normgen::sync_batch_norm_backward(xv, dsv, smv, srv, wv.get(), reinterpret_cast<const double *>(sums),
                                                     dxv);
        });
    });

    m.def("group_norm_forward", [](const ViewSpec &x, int64_t groups, const OptSpec &w, const OptSpec &b, double eps,
                                   const ViewSpec &y, const OptSpec &mean, const OptSpec &rstd,
                                   const OptSpec &residual, int activation, double slope) {
        TensorView xv = view(x), yv = view(y);
        Opt wv(w), bv(b), mv(mean), rv(rstd);
        EpilogueArg ep(residual, activation, slope);
        call([&] {
            return normgen::group_norm_forward(xv, groups, wv.get(), bv.get(), eps, yv, mv.get(), rv.get(), &ep.e);
        });
    });
    m.def("group_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &mean, const ViewSpec &rstd,
                                    int64_t groups, const OptSpec &w, const ViewSpec &dx, const OptSpec &dw,
                                    const OptSpec &db, const OptSpec &bias, const OptSpec &residual, int activation,
                                    double slope, const OptSpec &dres) {
        TensorView dyv = view(dy), xv = view(x), mv = view(mean), rv = view(rstd), dxv = view(dx);
        Opt wv(w), dwv(dw), dbv(db), biasv(bias), drv(dres);
        EpilogueArg ep(residual, activation, slope);
        call([&] {
            return normgen::group_norm_backward(dyv, xv, mv, rv, groups, wv.get(), dxv, dwv.get(), dbv.get(), &ep.e,
                                                biasv.get(), drv.get());
        });
    });
    m.def("instance_norm_forward", [](const ViewSpec &x, const OptSpec &rm, const OptSpec &rv, const OptSpec &w,
                                      const OptSpec &b, bool use_input_stats, double momentum, double eps,
                                      const ViewSpec &y, const OptSpec &save_mean, const OptSpec &save_rstd,
                                      const OptSpec &residual, int activation, double slope, int nan_policy) {
        TensorView xv = view(x), yv = view(y);
        Opt rmv(rm), rvv(rv), wv(w), bv(b), smv(save_mean), srv(save_rstd);
        EpilogueArg ep(residual, activation, slope);
        call([&] {
            return normgen::instance_norm_forward(xv, rmv.get(), rvv.get(), wv.get(), bv.get(), use_input_stats,
                                                  momentum, eps, yv, smv.get(), srv.get(), &ep.e,
                                                  static_cast<normgen::NanPolicy>(nan_policy));
        });
    });
    m.def("instance_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &save_mean,
                                       const ViewSpec &save_rstd, const OptSpec &w, bool use_input_stats,
                                       const ViewSpec &dx, const OptSpec &dw, const OptSpec &db, const OptSpec &bias,
                                       const OptSpec &residual, int activation, double slope, const OptSpec &dres) {
        TensorView dyv = view(dy), xv = view(x), mv = view(save_mean), rv = view(save_rstd), dxv = view(dx);
        Opt wv(w), dwv(dw), dbv(db), biasv(bias), drv(dres);
        EpilogueArg ep(residual, activation, slope);
        call([&] {
            return normgen::instance_norm_backward(dyv, xv, mv, rv, wv.get(), use_input_stats, dxv, dwv.get(),
                                                   dbv.get(), &ep.e, biasv.get(), drv.get());
        });
    });

    m.def("batch_instance_norm_forward", [](const ViewSpec &x, const ViewSpec &rho, const OptSpec &w,
                                            const OptSpec &b, const OptSpec &rm, const OptSpec &rv, bool training,
                                            std::optional<double> momentum, double eps, const ViewSpec &y,
                                            const OptSpec &save_mean, const OptSpec &save_rstd,
                                            std::optional<uintptr_t> num_batches_tracked, int nan_policy) {
        TensorView xv = view(x), rhov = view(rho), yv = view(y);
        Opt wv(w), bv(b), rmv(rm), rvv(rv), smv(save_mean), srv(save_rstd);
        auto *nbt = num_batches_tracked ? reinterpret_cast<int64_t *>(*num_batches_tracked) : nullptr;
        call([&] {
            return normgen::batch_instance_norm_forward(xv, rhov, wv.get(), bv.get(), rmv.get(), rvv.get(), training,
                                                        momentum, eps, yv, smv.get(), srv.get(), nbt,
                                                        static_cast<normgen::NanPolicy>(nan_policy));
        });
    });
    m.def("batch_instance_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &save_mean,
                                             const ViewSpec &save_rstd, const ViewSpec &rho, const OptSpec &w,
                                             bool training, const ViewSpec &dx, const OptSpec &drho,
                                             const OptSpec &dw, const OptSpec &db) {
        TensorView dyv = view(dy), xv = view(x), mv = view(save_mean), rv = view(save_rstd), rhov = view(rho),
                   dxv = view(dx);
        Opt wv(w), drv(drho), dwv(dw), dbv(db);
        call([&] {
            return normgen::batch_instance_norm_backward(dyv, xv, mv, rv, rhov, wv.get(), training, dxv, drv.get(),
                                                         dwv.get(), dbv.get());
        });
    });
    m.def("switchable_norm_forward", [](const ViewSpec &x, const ViewSpec &mw, const ViewSpec &vw, const OptSpec &w,
                                        const OptSpec &b, const OptSpec &rm, const OptSpec &rv, bool training,
                                        std::optional<double> momentum, double eps, const ViewSpec &y,
                                        const OptSpec &save_mean, const OptSpec &save_var, const OptSpec &save_rstd,
                                        std::optional<uintptr_t> num_batches_tracked, int nan_policy) {
        TensorView xv = view(x), mwv = view(mw), vwv = view(vw), yv = view(y);
        Opt wv(w), bv(b), rmv(rm), rvv(rv), smv(save_mean), svv(save_var), srv(save_rstd);
        auto *nbt = num_batches_tracked ? reinterpret_cast<int64_t *>(*num_batches_tracked) : nullptr;
        call([&] {
            return normgen::switchable_norm_forward(xv, mwv, vwv, wv.get(), bv.get(), rmv.get(), rvv.get(), training,
                                                    momentum, eps, yv, smv.get(), svv.get(), srv.get(), nbt,
                                                    static_cast<normgen::NanPolicy>(nan_policy));
        });
    });
    m.def("switchable_norm_backward", [](const ViewSpec &dy, const ViewSpec &x, const ViewSpec &save_mean,
                                         const ViewSpec &save_var, const ViewSpec &save_rstd, const ViewSpec &mw,
                                         const ViewSpec &vw, const OptSpec &w, bool training, const ViewSpec &dx,
                                         const OptSpec &dmw, const OptSpec &dvw, const OptSpec &dw,
                                         const OptSpec &db) {
        TensorView dyv = view(dy), xv = view(x), mv = view(save_mean), vv = view(save_var), rv = view(save_rstd),
                   mwv = view(mw), vwv = view(vw), dxv = view(dx);
        Opt wv(w), dmwv(dmw), dvwv(dvw), dwv(dw), dbv(db);
        call([&] {
            return normgen::switchable_norm_backward(dyv, xv, mv, vv, rv, mwv, vwv, wv.get(), training, dxv,
                                                     dmwv.get(), dvwv.get(), dwv.get(), dbv.get());
        });
    });

    m.def("weight_norm_forward", [](const ViewSpec &v, const ViewSpec &g, std::optional<int64_t> dim,
                                    const ViewSpec &w, const OptSpec &norm) {
        TensorView vv = view(v), gv = view(g), wv = view(w);
        Opt nv(norm);
        call([&] { return normgen::weight_norm_forward(vv, gv, dim, wv, nv.get()); });
    });
    m.def("weight_norm_backward", [](const ViewSpec &dw, const ViewSpec &v, const ViewSpec &norm, const ViewSpec &g,
                                     std::optional<int64_t> dim, const ViewSpec &dv, const ViewSpec &dg) {
        TensorView dwv = view(dw), vv = view(v), nv = view(norm), gv = view(g), dvv = view(dv), dgv = view(dg);
        call([&] { return normgen::weight_norm_backward(dwv, vv, nv, gv, dim, dvv, dgv); });
    });
    m.def("fold_batch_norm", [](const ViewSpec &w, const OptSpec &b, const ViewSpec &rm, const ViewSpec &rv,
                                const OptSpec &gamma, const OptSpec &beta, double eps, const ViewSpec &w_out,
                                const ViewSpec &b_out) {
        TensorView wv = view(w), rmv = view(rm), rvv = view(rv), wov = view(w_out), bov = view(b_out);
        Opt bv(b), gv(gamma), btv(beta);
        call([&] { return normgen::fold_batch_norm(wv, bv.get(), rmv, rvv, gv.get(), btv.get(), eps, wov, bov); });
    });
    // Scalers: the C++ objects, with arrays crossing as view specs.
    py::class_<normgen::ZScore>(m, "ZScore")
        .def(py::init<>())
        .def("partial_fit", [](normgen::ZScore &z, const ViewSpec &x) { call([&] { return z.partial_fit(view(x)); }); })
        .def("fit", [](normgen::ZScore &z, const ViewSpec &x) { call([&] { return z.fit(view(x)); }); })
        .def("transform", [](const normgen::ZScore &z, const ViewSpec &x, const ViewSpec &y) {
            call([&] { return z.transform(view(x), view(y)); });
        })
        .def("inverse_transform", [](const normgen::ZScore &z, const ViewSpec &y, const ViewSpec &x) {
            call([&] { return z.inverse_transform(view(y), view(x)); });
        })
        .def_property_readonly("n_samples_seen", &normgen::ZScore::n_samples_seen)
        .def_property_readonly("n_features", &normgen::ZScore::n_features)
        .def_property_readonly("mean", &normgen::ZScore::mean)
        .def_property_readonly("var", &normgen::ZScore::var)
        .def_property_readonly("scale", &normgen::ZScore::scale);
    py::class_<normgen::MinMax>(m, "MinMax")
        .def(py::init<double, double>(), py::arg("lo"), py::arg("hi"))
        .def("partial_fit", [](normgen::MinMax &z, const ViewSpec &x) { call([&] { return z.partial_fit(view(x)); }); })
        .def("fit", [](normgen::MinMax &z, const ViewSpec &x) { call([&] { return z.fit(view(x)); }); })
        .def("transform", [](const normgen::MinMax &z, const ViewSpec &x, const ViewSpec &y) {
            call([&] { return z.transform(view(x), view(y)); });
        })
        .def("inverse_transform", [](const normgen::MinMax &z, const ViewSpec &y, const ViewSpec &x) {
            call([&] { return z.inverse_transform(view(y), view(x)); });
        })
        .def_property_readonly("n_samples_seen", &normgen::MinMax::n_samples_seen)
        .def_property_readonly("n_features", &normgen::MinMax::n_features)
        .def_property_readonly("data_min", &normgen::MinMax::data_min)
        .def_property_readonly("data_max", &normgen::MinMax::data_max)
        .def_property_readonly("data_range", &normgen::MinMax::data_range)
        .def_property_readonly("scale", &normgen::MinMax::scale)
        .def_property_readonly("min", &normgen::MinMax::min);

    m.def("set_num_threads", &normgen::set_num_threads, py::arg("n"),
          "Set the CPU worker threads (n < 1: the default); returns the previous value.");
    m.def("num_threads", &normgen::num_threads);
    m.def("set_parallel_backend", [](const std::string &backend) {
        if (backend != "halide" && backend != "openmp")
            throw py::value_error("backend must be 'halide' or 'openmp', got '" + backend + "'");
        call([&] {
            return normgen::set_parallel_backend(backend == "openmp" ? normgen::ParallelBackend::openmp
                                                                     : normgen::ParallelBackend::halide);
        });
    }, py::arg("backend"),
          "Run the CPU kernels' parallel loops on Halide's thread pool ('halide', the default) or on the "
          "process's OpenMP runtime ('openmp': torch's pool; see normgen.h).");
    m.def("parallel_backend", [] {
        return std::string(normgen::parallel_backend() == normgen::ParallelBackend::openmp ? "openmp" : "halide");
    });
    m.def("openmp_runtime", &normgen::openmp_runtime,
          "The OpenMP runtime's shared object the 'openmp' backend uses ('' in builds without OpenMP).");
    m.def("last_kernel", [] { return std::string(normgen::last_kernel()); },
          "Name of the kernel the last call on this thread ran.");
    m.def("cuda_available", [](int device) {
        std::string why;
        const bool ok = normgen::cuda_available(device, &why);
        return py::make_tuple(ok, why);
    }, py::arg("device") = 0,
          "(usable, why): whether CUDA device `device` can run normgen's CUDA kernels, and why not.");
    m.def("kernels", [] {
        py::list out;
        for (const auto &k : normgen::kernels()) {
            py::dict d;
            d["name"] = k.name;
            d["op"] = k.op;
            d["dir"] = k.dir;
            d["dtype"] = k.dtype;
            d["layout"] = k.layout;
            d["variant"] = k.variant;
            d["shape"] = k.shape;
            d["target"] = k.target;
            d["schedule"] = k.schedule;
            d["threads"] = k.threads;
            d["cpu"] = k.cpu ? k.cpu : "";
            out.append(d);
        }
        return out;
    }, "The kernel table: one dict per kernel (generators/kernels.list, the tuned table, and kernels "
       "a consumer registered); a tuned kernel runs only at its 'shape' and 'threads' (0: any), on CPUs with its 'cpu' "
       "feature ('': any).");
}

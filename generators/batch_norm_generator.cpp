// BatchNorm generators: forward (training: y, stats = (mean, rstd, var); inference:
// y from running statistics) and backward (dx[, dweight, dbias]). Inputs are 3-D views
// (s, c, n); per-channel parameters are optional arguments (added in configure()).
#include "algorithms/batch_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/batch_norm.h"
#include "../schedules/cuda/batch_norm.h"

namespace normgen::gen {

using namespace Halide;

class BatchNormForward : public Generator<BatchNormForward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> training{"training", true};
    GeneratorParam<bool> affine{"affine", true};
    GeneratorParam<bool> epilogue{"epilogue", false};          // y = act(...), act a run-time code
    GeneratorParam<bool> add_residual{"add_residual", false};  // y = act(norm(x) + residual)
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> x{"x"};
    Input<float> eps{"eps"};
    Output<Buffer<void, 3>> y{"y"};
    EpilogueInputs ep;

    Input<Buffer<>> *weight = nullptr, *bias = nullptr;
    Input<Buffer<>> *running_mean = nullptr, *running_var = nullptr;
    Output<Func> *stats = nullptr;  // training: (mean, rstd, biased var) per channel

    void configure() {
        Type t = alg::storage_type(dtype);
        x.set_type(t);
        y.set_type(t);
        if (affine) {
            weight = add_input<Buffer<>>("weight", t, 1);
            bias = add_input<Buffer<>>("bias", t, 1);
        }
        if (training) {
            stats = add_output<Func>("stats", std::vector<Type>{Float(32), Float(32), Float(32)}, 1);
        } else {
            running_mean = add_input<Buffer<>>("running_mean", Float(32), 1);
            running_var = add_input<Buffer<>>("running_var", Float(32), 1);
        }
        ep.add(*this, epilogue, add_residual, t, 3);
    }

    void generate() {
        Expr spatial = x.dim(0).extent(), channels = x.dim(1).extent(), batch = x.dim(2).extent();
        auto f = [](Input<Buffer<>> *in) { return in ? Func(*in) : Func(); };
        alg::ChannelNormForward p =
            alg::batch_norm_forward(x, f(weight), f(bias), f(running_mean), f(running_var), training, spatial,
                                    batch, eps, alg::storage_type(dtype), ep.get());
        y = p.y;
        y.dim(0).set_bounds(0, spatial);
        y.dim(1).set_bounds(0, channels);
        y.dim(2).set_bounds(0, batch);
        if (stats) {
            *stats = p.stats;
            Func(*stats).output_buffers()[0].dim(0).set_bounds(0, channels);
        }
        apply_channel_layout(layout, x, y, weight, bias, running_mean, running_var, ep.residual);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_batch_norm_forward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_batch_norm_forward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                                   spatial, channels, batch);
    }
};

class BatchNormBackward : public Generator<BatchNormBackward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> training{"training", true};
    GeneratorParam<bool> has_weight{"has_weight", true};
    GeneratorParam<bool> epilogue{"epilogue", false};          // the forward had y = act(z): dz = dy act'(z)
    GeneratorParam<bool> add_residual{"add_residual", false};  // z included a residual: output dresidual = dz
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> dy{"dy"};
    Input<Buffer<void, 3>> x{"x"};
    Input<Buffer<float, 1>> mean{"mean"};
    Input<Buffer<float, 1>> rstd{"rstd"};
    // dx; with a fused residual and activation, a Tuple (dx, dresidual): arguments dx.0, dx.1.
    Output<Func> *dx = nullptr;

    Input<Buffer<>> *weight = nullptr, *bias = nullptr;
    Output<Buffer<>> *dweight = nullptr, *dbias = nullptr;
    EpilogueInputs ep;

    void configure() {
        Type t = alg::storage_type(dtype);
        dy.set_type(t);
        x.set_type(t);
        const bool with_dresidual = epilogue && add_residual;
        dx = add_output<Func>("dx", with_dresidual ? std::vector<Type>{t, t} : std::vector<Type>{t}, 3);
        if (has_weight) {
            weight = add_input<Buffer<>>("weight", t, 1);
            dweight = add_output<Buffer<>>("dweight", t, 1);
            dbias = add_output<Buffer<>>("dbias", t, 1);
            if (epilogue) bias = add_input<Buffer<>>("bias", t, 1);  // z = xhat * w + b (+ residual)
        }
        ep.add(*this, epilogue, add_residual, t, 3);
    }

    void generate() {
        Expr spatial = x.dim(0).extent(), channels = x.dim(1).extent(), batch = x.dim(2).extent();
        alg::ChannelNormBackward p =
            alg::batch_norm_backward(dy, x, mean, rstd, weight ? Func(*weight) : Func(), training, spatial, batch,
                                     alg::storage_type(dtype), bias ? Func(*bias) : Func(), ep.get());
        *dx = p.dx;
        std::vector<OutputImageParam> dx_bufs = Func(*dx).output_buffers();
        dx_bufs[0].dim(0).set_bounds(0, spatial);
        dx_bufs[0].dim(1).set_bounds(0, channels);
        dx_bufs[0].dim(2).set_bounds(0, batch);
        if (has_weight) {
            *dweight = p.param_grads[0];
            *dbias = p.param_grads[1];
            dweight->dim(0).set_bounds(0, channels);
            dbias->dim(0).set_bounds(0, channels);
        }
        apply_channel_layout(layout, dy, x, weight, dweight, dbias, bias, ep.residual);
        for (OutputImageParam &b : dx_bufs) constrain_channel_layout(b, channel_layout_unit_dim(layout));
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_batch_norm_backward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_batch_norm_backward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                                    spatial, channels, batch);
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::BatchNormForward, batch_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::BatchNormBackward, batch_norm_bwd)

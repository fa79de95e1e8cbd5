// LayerNorm generators: forward (y, stats = (mean, rstd)) and backward
// (dx[, dweight, dbias]). Inputs are 2-D views: columns j = the flattened normalized
// dims, rows r = everything before them. Optional parameters are real optional
// arguments (added in configure()), so a kernel without weight has no weight input.
#include "algorithms/layer_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/row_norm.h"
#include "../schedules/cuda/row_norm.h"

namespace normgen::gen {

using namespace Halide;

class LayerNormForward : public Generator<LayerNormForward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "contig"};
    GeneratorParam<bool> has_weight{"has_weight", true};
    GeneratorParam<bool> has_bias{"has_bias", true};
    GeneratorParam<bool> add_residual{"add_residual", false};  // add_layer_norm: normalize x + residual, output it as s
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 2>> x{"x"};
    Input<float> eps{"eps"};
    Output<Buffer<void, 2>> y{"y"};
    Output<Func> stats{"stats", {Float(32), Float(32)}, 1};  // (mean, rstd) per row

    Input<Buffer<>> *weight = nullptr;
    Input<Buffer<>> *bias = nullptr;
    Input<Buffer<>> *residual_in = nullptr;
    Output<Buffer<>> *s_out = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        x.set_type(t);
        y.set_type(t);
        if (has_weight) weight = add_input<Buffer<>>("weight", t, 1);
        if (has_bias) bias = add_input<Buffer<>>("bias", t, 1);
        if (add_residual) {
            residual_in = add_input<Buffer<>>("residual", t, 2);
            s_out = add_output<Buffer<>>("s", t, 2);
        }
    }

    void generate() {
        Expr n = x.dim(0).extent(), rows = x.dim(1).extent();
        Func w = weight ? Func(*weight) : Func(), b = bias ? Func(*bias) : Func();
        alg::RowNormForward p = alg::layer_norm_forward(x, w, b, has_weight, has_bias, n, eps,
                                                        alg::storage_type(dtype),
                                                        residual_in ? Func(*residual_in) : Func());
        y = p.y;
        stats = p.stats;
        if (s_out) *s_out = p.sum;  // before the layout constraints, which attach to its buffer
        apply_layout(layout, x, y, weight, bias, residual_in, s_out);
        tie_row_bounds(y, Func(stats).output_buffers(), n, rows);
        if (s_out) tie_row_bounds(*s_out, {}, n, rows);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_row_norm_forward_cuda(p, sched::GpuParams::parse(schedule));
        else
            sched::schedule_row_norm_forward_cpu(p, sched::RowNormCpuParams::parse(schedule), get_target(), n, rows);
    }
};

class LayerNormBackward : public Generator<LayerNormBackward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "contig"};
    GeneratorParam<bool> has_weight{"has_weight", true};
    GeneratorParam<bool> has_ds{"has_ds", false};  // add a gradient `ds` into dx (add_*_norm's backward)
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 2>> dy{"dy"};
    Input<Buffer<void, 2>> x{"x"};
    Input<Buffer<float, 1>> mean{"mean"};
    Input<Buffer<float, 1>> rstd{"rstd"};
    Output<Buffer<void, 2>> dx{"dx"};

    Input<Buffer<>> *weight = nullptr;
    Input<Buffer<>> *ds = nullptr;
    Output<Buffer<>> *dweight = nullptr;
    Output<Buffer<>> *dbias = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        dy.set_type(t);
        x.set_type(t);
        dx.set_type(t);
        if (has_ds) ds = add_input<Buffer<>>("ds", t, 2);
        if (has_weight) {
            weight = add_input<Buffer<>>("weight", t, 1);
            dweight = add_output<Buffer<>>("dweight", t, 1);
            dbias = add_output<Buffer<>>("dbias", t, 1);
        }
    }

    void generate() {
        Expr n = x.dim(0).extent(), rows = x.dim(1).extent();
        Func w = weight ? Func(*weight) : Func();
        alg::RowNormBackward p = alg::layer_norm_backward(dy, x, mean, rstd, w, has_weight, n, rows,
                                                          alg::storage_type(dtype), ds ? Func(*ds) : Func());
        dx = p.dx;
        if (has_weight) {
            *dweight = p.param_grads[0];
            *dbias = p.param_grads[1];
        }
        apply_layout(layout, dy, x, dx, weight, dweight, dbias, ds);
        tie_row_bounds(dx, {}, n, rows);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_row_norm_backward_cuda(p, sched::GpuParams::parse(schedule));
        else
            sched::schedule_row_norm_backward_cpu(p, sched::RowNormCpuParams::parse(schedule), get_target(), n, rows);
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::LayerNormForward, layer_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::LayerNormBackward, layer_norm_bwd)

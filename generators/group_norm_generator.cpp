// GroupNorm generators (InstanceNorm uses them with G = C): forward (y, stats =
// (mean, rstd, var) per (group, sample)) and backward (dx[, dweight, dbias]). Inputs
// are (s, j, g, n) views (channel c = g * C/G + j) and per-channel parameters (j, g)
// views, so the group structure is in the buffers' shapes, not in index arithmetic.
#include "algorithms/group_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/group_norm.h"

namespace normgen::gen {

using namespace Halide;

class GroupNormForward : public Generator<GroupNormForward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> affine{"affine", true};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 4>> x{"x"};
    Input<float> eps{"eps"};
    Output<Buffer<void, 4>> y{"y"};
    Output<Func> stats{"stats", {Float(32), Float(32), Float(32)}, 2};  // (mean, rstd, var) per (g, n)

    Input<Buffer<>> *weight = nullptr, *bias = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        x.set_type(t);
        y.set_type(t);
        if (affine) {
            weight = add_input<Buffer<>>("weight", t, 2);
            bias = add_input<Buffer<>>("bias", t, 2);
        }
    }

    void generate() {
        Expr spatial = x.dim(0).extent(), group_size = x.dim(1).extent(), groups = x.dim(2).extent(),
             batch = x.dim(3).extent();
        alg::GroupNormForward p = alg::group_norm_forward(x, weight ? Func(*weight) : Func(),
                                                          bias ? Func(*bias) : Func(), spatial, group_size, eps,
                                                          alg::storage_type(dtype));
        y = p.y;
        stats = p.stats;
        for (int d = 0; d < 4; d++) y.dim(d).set_bounds(0, x.dim(d).extent());
        OutputImageParam st = Func(stats).output_buffers()[0];
        st.dim(0).set_bounds(0, groups);
        st.dim(1).set_bounds(0, batch);
        apply_channel_layout(layout, x, y, weight, bias);
        sched::schedule_group_norm_forward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                               spatial, group_size);
    }
};

class GroupNormBackward : public Generator<GroupNormBackward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> has_weight{"has_weight", true};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 4>> dy{"dy"};
    Input<Buffer<void, 4>> x{"x"};
    Input<Buffer<float, 2>> mean{"mean"};
    Input<Buffer<float, 2>> rstd{"rstd"};
    Output<Buffer<void, 4>> dx{"dx"};

    Input<Buffer<>> *weight = nullptr;
    Output<Buffer<>> *dweight = nullptr, *dbias = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        dy.set_type(t);
        x.set_type(t);
        dx.set_type(t);
        if (has_weight) {
            weight = add_input<Buffer<>>("weight", t, 2);
            dweight = add_output<Buffer<>>("dweight", t, 2);
            dbias = add_output<Buffer<>>("dbias", t, 2);
        }
    }

    void generate() {
        Expr spatial = x.dim(0).extent(), group_size = x.dim(1).extent(), batch = x.dim(3).extent();
        alg::GroupNormBackward p = alg::group_norm_backward(dy, x, mean, rstd, weight ? Func(*weight) : Func(),
                                                            spatial, group_size, batch, alg::storage_type(dtype));
        dx = p.dx;
        for (int d = 0; d < 4; d++) dx.dim(d).set_bounds(0, x.dim(d).extent());
        if (has_weight) {
            *dweight = p.param_grads[0];
            *dbias = p.param_grads[1];
        }
        apply_channel_layout(layout, dy, x, dx, weight, dweight, dbias);
        sched::schedule_group_norm_backward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                                spatial, group_size);
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::GroupNormForward, group_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::GroupNormBackward, group_norm_bwd)

// GroupNorm generators (InstanceNorm uses them with G = C): forward (y, stats =
// (mean, rstd, var) per (group, sample)) and backward (dx[, dweight, dbias,
// channel_sums]). See algorithms/group_norm.h for the two channel indexings.
#include "algorithms/group_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/group_norm.h"
#include "../schedules/cuda/group_norm.h"

namespace normgen::gen {

using namespace Halide;

// Buffers are added in configure(): their rank depends on the layout. nchw / strided:
// tensors (s, j, g, n) and parameters (j, g); nhwc: tensors (s, c, n), parameters (c)
// and the number of groups as a scalar (the channel stays one unit-stride dim).
struct GroupViews {
    bool flat;
    int tensor_dims() const { return flat ? 3 : 4; }
    int channel_dims() const { return flat ? 1 : 2; }
};

inline GroupViews group_views(const std::string &layout) {
    channel_layout_unit_dim(layout);  // validates the name
    return {layout == "nhwc"};
}

template <typename T>
alg::GroupIndexing group_indexing(const GroupViews &v, const T &x, const Halide::GeneratorInput<int> *groups) {
    if (v.flat) return alg::GroupIndexing::flat(x.dim(1).extent() / *groups, *groups);
    return alg::GroupIndexing::split(x.dim(1).extent(), x.dim(2).extent());
}

class GroupNormForward : public Generator<GroupNormForward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> affine{"affine", true};
    GeneratorParam<bool> epilogue{"epilogue", false};          // y = act(...), act a run-time code
    GeneratorParam<bool> add_residual{"add_residual", false};  // y = act(norm(x) + residual)
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<>> *x = nullptr;
    // nchw: x again as (q, g, n), each group's C/G x S values one row (the runtime
    // passes this view of x; groups of an NCHW-contiguous tensor are runs of memory).
    Input<Buffer<>> *x_groups = nullptr;
    EpilogueInputs ep;
    Input<int> *groups = nullptr;
    Input<float> *eps = nullptr;
    Output<Buffer<>> *y = nullptr;
    Output<Func> *stats = nullptr;  // (mean, rstd, var) per (g, n)
    Input<Buffer<>> *weight = nullptr, *bias = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        GroupViews v = group_views(layout);
        x = add_input<Buffer<>>("x", t, v.tensor_dims());
        if (layout == "nchw") x_groups = add_input<Buffer<>>("x_groups", t, 3);
        if (v.flat) groups = add_input<int>("groups");
        eps = add_input<float>("eps");
        if (affine) {
            weight = add_input<Buffer<>>("weight", t, v.channel_dims());
            bias = add_input<Buffer<>>("bias", t, v.channel_dims());
        }
        y = add_output<Buffer<>>("y", t, v.tensor_dims());
        stats = add_output<Func>("stats", std::vector<Type>{Float(32), Float(32), Float(32)}, 2);
        ep.add(*this, epilogue, add_residual, t, v.tensor_dims());
    }

    void generate() {
        GroupViews v = group_views(layout);
        Input<Buffer<>> &xi = *x;
        alg::GroupIndexing gi = group_indexing(v, xi, groups);
        Expr spatial = xi.dim(0).extent(), batch = xi.dim(v.tensor_dims() - 1).extent();
        alg::GroupNormForward p = alg::group_norm_forward(xi, weight ? Func(*weight) : Func(),
                                                          bias ? Func(*bias) : Func(), gi, spatial, *eps,
                                                          alg::storage_type(dtype), ep.get(),
                                                          x_groups ? Func(*x_groups) : Func(),
                                                          x_groups ? x_groups->dim(0).extent() : Expr());
        *y = p.y;
        *stats = p.stats;
        for (int d = 0; d < v.tensor_dims(); d++) y->dim(d).set_bounds(0, xi.dim(d).extent());
        OutputImageParam st = Func(*stats).output_buffers()[0];
        st.dim(0).set_bounds(0, gi.groups);
        st.dim(1).set_bounds(0, batch);
        apply_channel_layout(layout, xi, *y, weight, bias, ep.residual, x_groups);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_group_norm_forward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_group_norm_forward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                                   gi, spatial);
    }
};

class GroupNormBackward : public Generator<GroupNormBackward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> has_weight{"has_weight", true};
    GeneratorParam<bool> epilogue{"epilogue", false};          // the forward had y = act(z): dz = dy act'(z)
    GeneratorParam<bool> add_residual{"add_residual", false};  // z included a residual: dx = (dx, dresidual)
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<>> *dy = nullptr, *x = nullptr, *bias = nullptr;
    EpilogueInputs ep;
    Input<int> *groups = nullptr;
    Input<Buffer<float, 2>> *mean = nullptr, *rstd = nullptr;
    Output<Func> *dx = nullptr;  // with a fused residual and activation, Tuple (dx, dresidual): dx.0, dx.1
    Input<Buffer<>> *weight = nullptr;
    Output<Buffer<>> *dweight = nullptr, *dbias = nullptr;
    // Per-(channel, sample) (sum dy, sum dy * xhat), written by the dx pass; the
    // parameter gradients are its sums over samples (no second pass over the data).
    Output<Func> *channel_sums = nullptr;

    void configure() {
        Type t = alg::storage_type(dtype);
        GroupViews v = group_views(layout);
        dy = add_input<Buffer<>>("dy", t, v.tensor_dims());
        x = add_input<Buffer<>>("x", t, v.tensor_dims());
        if (v.flat) groups = add_input<int>("groups");
        mean = add_input<Buffer<float, 2>>("mean");
        rstd = add_input<Buffer<float, 2>>("rstd");
        const bool with_dresidual = epilogue && add_residual;
        dx = add_output<Func>("dx", with_dresidual ? std::vector<Type>{t, t} : std::vector<Type>{t}, v.tensor_dims());
        if (has_weight) {
            weight = add_input<Buffer<>>("weight", t, v.channel_dims());
            dweight = add_output<Buffer<>>("dweight", t, v.channel_dims());
            dbias = add_output<Buffer<>>("dbias", t, v.channel_dims());
            channel_sums = add_output<Func>("channel_sums", std::vector<Type>{Float(32), Float(32)},
                                            v.channel_dims() + 1);
            if (epilogue) bias = add_input<Buffer<>>("bias", t, v.channel_dims());  // z = xhat * w + b (+ r)
        }
        ep.add(*this, epilogue, add_residual, t, v.tensor_dims());
    }

    void generate() {
        GroupViews v = group_views(layout);
        Input<Buffer<>> &xi = *x;
        alg::GroupIndexing gi = group_indexing(v, xi, groups);
        Expr spatial = xi.dim(0).extent(), batch = xi.dim(v.tensor_dims() - 1).extent();
        alg::GroupNormBackward p =
            alg::group_norm_backward(*dy, xi, *mean, *rstd, weight ? Func(*weight) : Func(), gi, spatial, batch,
                                     alg::storage_type(dtype), bias ? Func(*bias) : Func(), ep.get());
        *dx = p.dx;
        std::vector<OutputImageParam> dx_bufs = Func(*dx).output_buffers();
        for (int d = 0; d < v.tensor_dims(); d++) dx_bufs[0].dim(d).set_bounds(0, xi.dim(d).extent());
        if (has_weight) {
            *dweight = p.param_grads[0];
            *dbias = p.param_grads[1];
            *channel_sums = p.channel_sums;
            OutputImageParam cs = Func(*channel_sums).output_buffers()[0];
            for (int d = 0; d <= v.channel_dims(); d++) cs.dim(d).set_bounds(0, xi.dim(d + 1).extent());
            cs.dim(0).set_stride(1);
        }
        apply_channel_layout(layout, *dy, xi, weight, dweight, dbias, bias, ep.residual);
        for (OutputImageParam &b : dx_bufs) constrain_channel_layout(b, channel_layout_unit_dim(layout));
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_group_norm_backward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_group_norm_backward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(), layout,
                                                    gi, spatial);
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::GroupNormForward, group_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::GroupNormBackward, group_norm_bwd)

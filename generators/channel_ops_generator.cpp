// Generators of the per-channel operations on (s, c, n) views other than activation
// normalizations: weight normalization (forward, backward), BatchNorm folding, and the
// input scalers' per-feature statistics and affine map. See the algorithms' headers.
#include "algorithms/feature_scaling.h"
#include "algorithms/fold_batch_norm.h"
#include "algorithms/weight_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/channel_ops.h"
#include "../schedules/cuda/channel_ops.h"

namespace normgen::gen {

using namespace Halide;

namespace {

template <typename T>
sched::ChannelShape shape_of(const std::string &layout, const T &x) {
    return {layout, x.dim(0).extent(), x.dim(1).extent(), x.dim(2).extent()};
}

template <typename O, typename I>
void same_bounds(O &out, const I &in) {
    for (int d = 0; d < 3; d++) out.dim(d).set_bounds(0, in.dim(d).extent());
}

}  // namespace

class WeightNormForward : public Generator<WeightNormForward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> v{"v"};
    Input<Buffer<void, 1>> g{"g"};
    Output<Buffer<void, 3>> w{"w"};
    Output<Buffer<float, 1>> norm{"norm"};

    void configure() {
        Type t = alg::storage_type(dtype);
        v.set_type(t);
        g.set_type(t);
        w.set_type(t);
    }

    void generate() {
        alg::WeightNormForward p =
            alg::weight_norm_forward(v, g, v.dim(0).extent(), v.dim(2).extent(), alg::storage_type(dtype));
        w = p.w;
        norm = p.norm;
        same_bounds(w, v);
        norm.dim(0).set_bounds(0, v.dim(1).extent());
        apply_channel_layout(layout, v, w, g);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_weight_norm_forward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_weight_norm_forward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(),
                                                    shape_of(layout, v));
    }
};

class WeightNormBackward : public Generator<WeightNormBackward> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> dw{"dw"};
    Input<Buffer<void, 3>> v{"v"};
    Input<Buffer<float, 1>> norm{"norm"};
    Input<Buffer<void, 1>> g{"g"};
    Output<Buffer<void, 3>> dv{"dv"};
    Output<Buffer<void, 1>> dg{"dg"};

    void configure() {
        Type t = alg::storage_type(dtype);
        for (auto *b : {&dw, &v}) b->set_type(t);
        g.set_type(t);
        dv.set_type(t);
        dg.set_type(t);
    }

    void generate() {
        alg::WeightNormBackward p = alg::weight_norm_backward(dw, v, norm, g, v.dim(0).extent(), v.dim(2).extent(),
                                                              alg::storage_type(dtype));
        dv = p.dv;
        dg = p.dg;
        same_bounds(dv, v);
        dg.dim(0).set_bounds(0, v.dim(1).extent());
        apply_channel_layout(layout, dw, v, dv, g, dg);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_weight_norm_backward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_weight_norm_backward_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(),
                                                     shape_of(layout, v));
    }
};

class FoldBatchNorm : public Generator<FoldBatchNorm> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> w{"w"};
    Input<Buffer<void, 1>> b{"b"};
    Input<Buffer<float, 1>> running_mean{"running_mean"};
    Input<Buffer<float, 1>> running_var{"running_var"};
    Input<Buffer<void, 1>> gamma{"gamma"};
    Input<Buffer<void, 1>> beta{"beta"};
    Input<float> eps{"eps"};
    Output<Buffer<void, 3>> w_folded{"w_folded"};
    Output<Buffer<void, 1>> b_folded{"b_folded"};

    void configure() {
        Type t = alg::storage_type(dtype);
        w.set_type(t);
        for (auto *p : {&b, &gamma, &beta}) p->set_type(t);
        w_folded.set_type(t);
        b_folded.set_type(t);
    }

    void generate() {
        alg::FoldBatchNorm p =
            alg::fold_batch_norm(w, b, running_mean, running_var, gamma, beta, eps, alg::storage_type(dtype));
        w_folded = p.w;
        b_folded = p.b;
        same_bounds(w_folded, w);
        b_folded.dim(0).set_bounds(0, w.dim(1).extent());
        apply_channel_layout(layout, w, w_folded, b, gamma, beta, b_folded);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_fold_batch_norm_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_fold_batch_norm_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(),
                                                shape_of(layout, w));
    }
};

class FeatureStats : public Generator<FeatureStats> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nhwc"};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> x{"x"};
    Output<Func> stats{"stats", {Float(32), Float(32), Float(32), Float(32), Float(32)}, 1};  // see the algorithm

    void configure() { x.set_type(alg::storage_type(dtype)); }

    void generate() {
        alg::FeatureStats p = alg::feature_stats(x, x.dim(0).extent(), x.dim(2).extent());
        stats = p.stats;
        Func(stats).output_buffers()[0].dim(0).set_bounds(0, x.dim(1).extent());
        apply_channel_layout(layout, x);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_feature_stats_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_feature_stats_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(),
                                              shape_of(layout, x));
    }
};

class FeatureAffine : public Generator<FeatureAffine> {
public:
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nhwc"};
    GeneratorParam<std::string> schedule{"schedule", ""};

    Input<Buffer<void, 3>> x{"x"};
    Input<Buffer<float, 1>> center{"center"};
    Input<Buffer<float, 1>> scale{"scale"};
    Input<Buffer<float, 1>> shift{"shift"};
    Output<Buffer<void, 3>> y{"y"};

    void configure() {
        x.set_type(alg::storage_type(dtype));
        y.set_type(alg::storage_type(dtype));
    }

    void generate() {
        alg::FeatureAffine p = alg::feature_affine(x, center, scale, shift, alg::storage_type(dtype));
        y = p.y;
        same_bounds(y, x);
        apply_channel_layout(layout, x, y);
        if (using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (get_target().has_gpu_feature())
            sched::schedule_feature_affine_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_feature_affine_cpu(p, sched::ChannelNormCpuParams::parse(schedule), get_target(),
                                               shape_of(layout, x));
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::WeightNormForward, weight_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::WeightNormBackward, weight_norm_bwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::FoldBatchNorm, fold_batch_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::FeatureStats, feature_stats_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::FeatureAffine, feature_affine_fwd)

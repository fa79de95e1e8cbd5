// Batch-Instance Norm and Switchable Norm generators (algorithms/mixed_norm.h) on
// (s, c, n) views. Learnable parameters are always arguments (the runtime passes
// identities for absent ones); running statistics are arguments of the inference
// kernels, the BN part's batch statistics outputs of the training ones.
#include "algorithms/mixed_norm.h"
#include "generator_common.h"
#include "../schedules/cpu/mixed_norm.h"
#include "../schedules/cuda/mixed_norm.h"

namespace normgen::gen {

using namespace Halide;

namespace {

std::vector<Type> f32s(int k) { return std::vector<Type>(k, Float(32)); }

// Bounds of the outputs every kernel of the family shares.
void bound_cells(const Func &f, const Expr &channels, const Expr &batch) {
    OutputImageParam b = f.output_buffers()[0];
    b.dim(0).set_bounds(0, channels);
    b.dim(1).set_bounds(0, batch);
}
void bound_1d(const Func &f, const Expr &extent) { f.output_buffers()[0].dim(0).set_bounds(0, extent); }

template <typename O>
void bound_like_x(O &out, const Expr &spatial, const Expr &channels, const Expr &batch) {
    out.dim(0).set_bounds(0, spatial);
    out.dim(1).set_bounds(0, channels);
    out.dim(2).set_bounds(0, batch);
}

}  // namespace

// Shared declarations: x (or dy, x), per-channel parameters, running statistics (inference).
template <typename G>
struct MixedNormGenerator : public Generator<G> {
    GeneratorParam<std::string> dtype{"dtype", "f32"};
    GeneratorParam<std::string> layout{"layout", "nchw"};
    GeneratorParam<bool> training{"training", true};
    GeneratorParam<std::string> schedule{"schedule", ""};

    GeneratorInput<Buffer<>> *in(const char *name, const Type &t, int dims) {
        return this->template add_input<Buffer<>>(name, t, dims);
    }
    template <typename T>
    GeneratorOutput<T> *out(const char *name, const std::vector<Type> &t, int dims) {
        return this->template add_output<T>(name, t, dims);
    }
    Type storage() const { return alg::storage_type(dtype); }

    // Every forward's inputs after its own: weight, bias, the running statistics
    // (inference), eps; and its outputs y and the per-cell statistics.
    GeneratorInput<Buffer<>> *weight = nullptr, *bias = nullptr, *running_mean = nullptr, *running_var = nullptr;
    GeneratorInput<float> *eps = nullptr;
    GeneratorOutput<Buffer<>> *y = nullptr;
    GeneratorOutput<Func> *in_stats = nullptr;
    void add_forward_args(int cell_stats) {
        Type t = storage();
        weight = in("weight", t, 1);
        bias = in("bias", t, 1);
        if (!training) {
            running_mean = in("running_mean", Float(32), 1);
            running_var = in("running_var", Float(32), 1);
        }
        eps = this->template add_input<float>("eps");
        y = out<Buffer<>>("y", {t}, 3);
        in_stats = out<Func>("in_stats", f32s(cell_stats), 2);
    }
    Func running(bool mean) const {
        GeneratorInput<Buffer<>> *b = mean ? running_mean : running_var;
        return b ? Func(*b) : Func();
    }
    // y, in_stats and (training) bn_stats from the algorithm, their bounds, the layout
    // of x, y and the per-channel inputs, and the schedule.
    void finish_forward(alg::MixedNormForward &p, GeneratorInput<Buffer<>> &x, GeneratorOutput<Func> *bn_stats,
                        GeneratorInput<Buffer<>> *extra_param) {
        Expr spatial = x.dim(0).extent(), channels = x.dim(1).extent(), batch = x.dim(2).extent();
        *y = p.y;
        bound_like_x(*y, spatial, channels, batch);
        *in_stats = p.cell_stats;
        bound_cells(*in_stats, channels, batch);
        if (bn_stats) {
            *bn_stats = p.channel_stats;
            bound_1d(*bn_stats, channels);
        }
        apply_channel_layout(layout, x, *y, extra_param, weight, bias, running_mean, running_var);
        if (this->using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (this->get_target().has_gpu_feature())
            sched::schedule_mixed_norm_forward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_mixed_norm_forward_cpu(p, knobs(), this->get_target(), layout, spatial, channels);
    }
    sched::ChannelNormCpuParams knobs() const { return sched::ChannelNormCpuParams::parse(schedule); }
};

class BatchInstanceNormForward : public MixedNormGenerator<BatchInstanceNormForward> {
public:
    // in_stats (c, n): (mean, rstd) of the IN part.
    Input<Buffer<>> *x = nullptr, *rho = nullptr;
    Output<Func> *bn_stats = nullptr;  // (c), training: (mean, rstd, biased var) of the BN part

    void configure() {
        Type t = storage();
        x = in("x", t, 3);
        rho = in("rho", t, 1);
        add_forward_args(2);
        if (training) bn_stats = out<Func>("bn_stats", f32s(3), 1);
    }

    void generate() {
        Input<Buffer<>> &xi = *x;
        Expr spatial = xi.dim(0).extent(), batch = xi.dim(2).extent();
        alg::MixedNormForward p = alg::batch_instance_norm_forward(xi, *rho, *weight, *bias, running(true), running(false),
                                                                   training, spatial, batch, *eps, storage());
        finish_forward(p, xi, bn_stats, rho);
    }
};

class BatchInstanceNormBackward : public MixedNormGenerator<BatchInstanceNormBackward> {
public:
    Input<Buffer<>> *dy = nullptr, *x = nullptr, *in_mean = nullptr, *in_rstd = nullptr, *bn_mean = nullptr,
                    *bn_rstd = nullptr, *rho = nullptr, *weight = nullptr;
    Output<Buffer<>> *dx = nullptr, *drho = nullptr, *dweight = nullptr, *dbias = nullptr;

    void configure() {
        Type t = storage();
        dy = in("dy", t, 3);
        x = in("x", t, 3);
        in_mean = in("in_mean", Float(32), 2);
        in_rstd = in("in_rstd", Float(32), 2);
        bn_mean = in("bn_mean", Float(32), 1);
        bn_rstd = in("bn_rstd", Float(32), 1);
        rho = in("rho", t, 1);
        weight = in("weight", t, 1);
        dx = out<Buffer<>>("dx", {t}, 3);
        drho = out<Buffer<>>("drho", {t}, 1);
        dweight = out<Buffer<>>("dweight", {t}, 1);
        dbias = out<Buffer<>>("dbias", {t}, 1);
    }

    void generate() {
        Input<Buffer<>> &xi = *x;
        Expr spatial = xi.dim(0).extent(), channels = xi.dim(1).extent(), batch = xi.dim(2).extent();
        alg::MixedNormBackward p =
            alg::batch_instance_norm_backward(*dy, xi, *in_mean, *in_rstd, *bn_mean, *bn_rstd, *rho, *weight,
                                              training, spatial, batch, storage());
        *dx = p.dx;
        bound_like_x(*dx, spatial, channels, batch);
        Output<Buffer<>> *grads[] = {drho, dweight, dbias};
        for (int i = 0; i < 3; i++) {
            *grads[i] = p.param_grads[i];
            grads[i]->dim(0).set_bounds(0, channels);
        }
        apply_channel_layout(layout, *dy, xi, *dx, rho, weight, drho, dweight, dbias);
        in_mean->dim(0).set_stride(1);
        in_rstd->dim(0).set_stride(1);
        if (this->using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (this->get_target().has_gpu_feature())
            sched::schedule_mixed_norm_backward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_mixed_norm_backward_cpu(p, knobs(), get_target(), layout, spatial, channels);
    }
};

class SwitchableNormForward : public MixedNormGenerator<SwitchableNormForward> {
public:
    // in_stats (c, n): (mean, biased var) of the IN part, rstd of the mixture.
    Input<Buffer<>> *x = nullptr, *mean_weight = nullptr, *var_weight = nullptr;
    Output<Func> *ln_stats = nullptr;  // (n): (mean, biased var) of the LN part
    Output<Func> *bn_stats = nullptr;  // (c), training: (mean, biased var) of the BN part

    void configure() {
        Type t = storage();
        x = in("x", t, 3);
        mean_weight = in("mean_weight", t, 1);
        var_weight = in("var_weight", t, 1);
        add_forward_args(3);
        ln_stats = out<Func>("ln_stats", f32s(2), 1);
        if (training) bn_stats = out<Func>("bn_stats", f32s(2), 1);
    }

    void generate() {
        Input<Buffer<>> &xi = *x;
        Expr spatial = xi.dim(0).extent(), channels = xi.dim(1).extent(), batch = xi.dim(2).extent();
        alg::MixedNormForward p =
            alg::switchable_norm_forward(xi, *mean_weight, *var_weight, *weight, *bias, running(true), running(false),
                                         training, spatial, channels, batch, *eps, storage());
        *ln_stats = p.sample_stats;
        bound_1d(*ln_stats, batch);
        finish_forward(p, xi, bn_stats, nullptr);
    }
};

class SwitchableNormBackward : public MixedNormGenerator<SwitchableNormBackward> {
public:
    Input<Buffer<>> *dy = nullptr, *x = nullptr, *in_mean = nullptr, *in_var = nullptr, *rstd = nullptr,
                    *ln_mean = nullptr, *ln_var = nullptr, *bn_mean = nullptr, *bn_var = nullptr,
                    *mean_weight = nullptr, *var_weight = nullptr, *weight = nullptr;
    Output<Buffer<>> *dx = nullptr, *dweight = nullptr, *dbias = nullptr, *dmean_weight = nullptr,
                     *dvar_weight = nullptr;

    void configure() {
        Type t = storage();
        dy = in("dy", t, 3);
        x = in("x", t, 3);
        in_mean = in("in_mean", Float(32), 2);
        in_var = in("in_var", Float(32), 2);
        rstd = in("rstd", Float(32), 2);
        ln_mean = in("ln_mean", Float(32), 1);
        ln_var = in("ln_var", Float(32), 1);
        bn_mean = in("bn_mean", Float(32), 1);
        bn_var = in("bn_var", Float(32), 1);
        mean_weight = in("mean_weight", t, 1);
        var_weight = in("var_weight", t, 1);
        weight = in("weight", t, 1);
        dx = out<Buffer<>>("dx", {t}, 3);
        dweight = out<Buffer<>>("dweight", {t}, 1);
        dbias = out<Buffer<>>("dbias", {t}, 1);
        dmean_weight = out<Buffer<>>("dmean_weight", {t}, 1);
        dvar_weight = out<Buffer<>>("dvar_weight", {t}, 1);
    }

    void generate() {
        Input<Buffer<>> &xi = *x;
        Expr spatial = xi.dim(0).extent(), channels = xi.dim(1).extent(), batch = xi.dim(2).extent();
        alg::MixedNormBackward p = alg::switchable_norm_backward(
            *dy, xi, *in_mean, *in_var, *rstd, *ln_mean, *ln_var, *bn_mean, *bn_var, *mean_weight, *var_weight,
            *weight, training, spatial, channels, batch, storage());
        *dx = p.dx;
        bound_like_x(*dx, spatial, channels, batch);
        Output<Buffer<>> *grads[] = {dweight, dbias, dmean_weight, dvar_weight};
        for (int i = 0; i < 4; i++) {
            *grads[i] = p.param_grads[i];
            grads[i]->dim(0).set_bounds(0, i < 2 ? channels : Expr(3));
        }
        apply_channel_layout(layout, *dy, xi, *dx, weight, dweight, dbias);
        for (Input<Buffer<>> *b : {in_mean, in_var, rstd}) b->dim(0).set_stride(1);
        if (this->using_autoscheduler()) return;  // one of Halide's autoschedulers (the tuner's baselines)
        if (this->get_target().has_gpu_feature())
            sched::schedule_mixed_norm_backward_cuda(p, sched::GpuParams::parse(schedule), layout);
        else
            sched::schedule_mixed_norm_backward_cpu(p, knobs(), get_target(), layout, spatial, channels);
    }
};

}  // namespace normgen::gen

HALIDE_REGISTER_GENERATOR(normgen::gen::BatchInstanceNormForward, batch_instance_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::BatchInstanceNormBackward, batch_instance_norm_bwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::SwitchableNormForward, switchable_norm_fwd)
HALIDE_REGISTER_GENERATOR(normgen::gen::SwitchableNormBackward, switchable_norm_bwd)

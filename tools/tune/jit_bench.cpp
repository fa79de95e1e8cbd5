// normgen-jit-bench: JIT-compile one generator with several schedule knob strings and
// time them side by side (interleaved rounds, median) against a copy of the same bytes.
// The same algorithm and schedule code as the AOT build, so a winner here is exactly
// what the build would emit with that knob string.
//
//   normgen-jit-bench <generator> <cols>x<rows> [--threads N] [--param k=v]... [--] <knobs>...
//   e.g. normgen-jit-bench layer_norm_fwd 1024x8192 --param dtype=f32 "" rows_per_task:16
#include "Halide.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace Halide;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Candidate {
    std::string knobs;
    Pipeline pipeline;
    std::vector<Buffer<>> outputs;
    std::vector<double> samples;
};

// Shape of each argument by its name (the row-norm families' conventions).
std::vector<int> shape_of(const std::string &name, int cols, int rows) {
    if (name == "x" || name == "dy" || name == "y" || name == "dx") return {cols, rows};
    if (name == "weight" || name == "bias" || name == "dweight" || name == "dbias") return {cols};
    return {rows};  // mean, rstd, stats
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <generator> <cols>x<rows> [--threads N] [--param k=v]... [--] <knobs>...\n", argv[0]);
        return 2;
    }
    std::string gen_name = argv[1];
    int cols = 0, rows = 0;
    if (std::sscanf(argv[2], "%dx%d", &cols, &rows) != 2) {
        std::fprintf(stderr, "bad shape '%s'\n", argv[2]);
        return 2;
    }
    int threads = 1, rounds = 7, repeats = 5;
    std::map<std::string, std::string> params;
    std::vector<std::string> knob_list;
    for (int i = 3; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
        else if (a == "--param" && i + 1 < argc) {
            std::string kv = argv[++i];
            params[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
        } else if (a != "--") knob_list.push_back(a);
    }
    if (knob_list.empty()) knob_list.push_back("");
    Target target = get_jit_target_from_environment();
    std::printf("target %s, %s %dx%d, %d thread(s)\n", target.to_string().c_str(), gen_name.c_str(), cols, rows, threads);
    setenv("HL_NUM_THREADS", std::to_string(threads).c_str(), 1);  // read by the JIT runtime at first use

    std::mt19937 rng(1);
    std::normal_distribution<float> nd(1.f, 1.f);
    std::map<std::string, Buffer<float>> inputs;
    std::vector<Candidate> cands;
    for (const auto &knobs : knob_list) {
        auto gen = Internal::GeneratorRegistry::create(gen_name, GeneratorContext(target));
        if (!gen) {
            std::fprintf(stderr, "no generator %s\n", gen_name.c_str());
            return 2;
        }
        for (const auto &[k, v] : params) gen->set_generatorparam_value(k, v);
        gen->set_generatorparam_value("schedule", knobs);
        Candidate c;
        c.knobs = knobs;
        c.pipeline = gen->build_pipeline();
        for (const auto &info : gen->arginfos()) {
            if (info.dir == Internal::ArgInfoDirection::Input) {
                for (Parameter &p : gen->input_parameter(info.name)) {
                    if (!p.is_buffer()) {
                        p.set_scalar<float>(1e-5f);
                        continue;
                    }
                    auto it = inputs.find(info.name);
                    if (it == inputs.end()) {
                        Buffer<float> b(shape_of(info.name, cols, rows));
                        b.for_each_value([&](float &v) { v = info.name == "rstd" ? 1.f : nd(rng); });
                        it = inputs.emplace(info.name, b).first;
                    }
                    p.set_buffer(it->second);
                }
            } else {
                for (size_t t = 0; t < info.types.size(); t++) c.outputs.push_back(Buffer<float>(shape_of(info.name, cols, rows)));
            }
        }
        c.pipeline.compile_jit(target);
        cands.push_back(std::move(c));
    }
    // Copy of the same byte count as the first candidate's inputs + outputs.
    size_t bytes = 0;
    for (auto &[n, b] : inputs) bytes += b.size_in_bytes();
    for (auto &b : cands[0].outputs) bytes += b.size_in_bytes();
    std::vector<float> src(bytes / 8), dst(bytes / 8);
    std::vector<double> copy_samples;
    for (auto &c : cands) c.pipeline.realize(Realization(c.outputs));
    for (int r = 0; r < rounds; r++) {
        for (auto &c : cands)
            for (int k = 0; k < repeats; k++) {
                double t0 = now();
                c.pipeline.realize(Realization(c.outputs));
                c.samples.push_back(now() - t0);
            }
        for (int k = 0; k < repeats; k++) {
            double t0 = now();
            std::memcpy(dst.data(), src.data(), src.size() * 4);
            copy_samples.push_back(now() - t0);
        }
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    double tc = median(copy_samples);
    std::printf("memcpy (%zu MB moved): %.3f ms, %.1f GB/s\n", bytes >> 20, tc * 1e3, bytes / tc / 1e9);
    for (auto &c : cands) {
        double t = median(c.samples);
        std::printf("%-50s %.3f ms  %.1f GB/s  %.2f of memcpy\n", c.knobs.empty() ? "(defaults)" : c.knobs.c_str(), t * 1e3,
                    bytes / t / 1e9, tc / t);
    }
    return 0;
}

// Runs the fuzz harness without libFuzzer: the corpus files given (regression inputs,
// e.g. crashers found before), then -runs=N pseudo-random inputs from -seed=S. Built
// with ASan + UBSan against the instrumented runtime (ctest fuzz_runtime).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern "C" long long normgen_fuzz_counts[12][2];

int main(int argc, char **argv) {
    long long runs = 10000;
    unsigned seed = 1;
    long long replayed = 0;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a.rfind("-runs=", 0) == 0) runs = std::atoll(a.c_str() + 6);
        else if (a.rfind("-seed=", 0) == 0) seed = static_cast<unsigned>(std::atoll(a.c_str() + 6));
        else {
            std::ifstream f(a, std::ios::binary);
            const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
            LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
            replayed++;
        }
    }
    std::mt19937 rng(seed);
    std::vector<uint8_t> buf;
    for (long long r = 0; r < runs; r++) {
        buf.resize(rng() % 96);
        for (auto &b : buf) b = static_cast<uint8_t>(rng());
        LLVMFuzzerTestOneInput(buf.data(), buf.size());
    }
    long long ok = 0, refused = 0;
    for (auto &c : normgen_fuzz_counts) ok += c[0], refused += c[1];
    std::printf("per op (ok/refused):");
    for (auto &c : normgen_fuzz_counts) std::printf(" %lld/%lld", c[0], c[1]);
    std::printf("\ntotal: %lld computed, %lld refused with an error\n", ok, refused);
    std::printf("fuzz_runtime: %lld corpus inputs and %lld random inputs (seed %u): no crash, no write outside the "
                "outputs, every error names an argument\n", replayed, runs, seed);
    return 0;
}

// The OpenMP parallel backend (set_parallel_backend): Halide's parallel loops run as
// OpenMP parallel regions of the process's OpenMP runtime, the pool PyTorch's CPU ops
// use. Built when CMake finds OpenMP (NORMGEN_WITH_OPENMP); otherwise the backend is
// reported unavailable and only Halide's own thread pool runs kernels.
#include "kernel_table.h"

#include <algorithm>
#include <atomic>

#ifdef NORMGEN_WITH_OPENMP
#include <dlfcn.h>
#include <omp.h>
#endif

namespace normgen::detail {

bool openmp_built() {
#ifdef NORMGEN_WITH_OPENMP
    return true;
#else
    return false;
#endif
}

int openmp_max_threads() {
#ifdef NORMGEN_WITH_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

std::string openmp_runtime_path() {
#ifdef NORMGEN_WITH_OPENMP
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&omp_get_max_threads), &info) && info.dli_fname) return info.dli_fname;
#endif
    return "";
}

int halide_pool_do_par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
    if (extent == 1) return task(user_context, min, closure);
    return halide_default_do_par_for(user_context, task, min, extent, closure);
}

// Halide's do_par_for contract: run task(i) for every i in [min, min + extent), in any
// order, and return the first non-zero result (an error; the remaining tasks may be
// skipped). Tasks go to the team's threads one at a time from a shared counter (the
// kernels' tasks are already sized for load balance). A loop nested in another
// parallel loop runs on the thread that reached it, as does a loop of one task.
int openmp_do_par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
#ifdef NORMGEN_WITH_OPENMP
    const int threads = std::min(num_threads(), extent);
    if (threads > 1 && !omp_in_parallel()) {
        std::atomic<int> next{0}, result{0};
#pragma omp parallel num_threads(threads)
        {
            for (int i = next.fetch_add(1, std::memory_order_relaxed); i < extent;
                 i = next.fetch_add(1, std::memory_order_relaxed)) {
                if (result.load(std::memory_order_relaxed)) break;
                if (int r = task(user_context, min + i, closure)) {
                    int none = 0;
                    result.compare_exchange_strong(none, r);
                }
            }
        }
        return result.load();
    }
#endif
    for (int i = 0; i < extent; i++)
        if (int r = task(user_context, min + i, closure)) return r;
    return 0;
}

}  // namespace normgen::detail

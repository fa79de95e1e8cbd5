// Scratch memory for the kernels: Halide asks for its intermediate buffers through
// halide_malloc/halide_free on every call. normgen installs these two instead, which
// keep freed blocks in one process-wide cache and hand them back to the next call, so
// a steady stream of calls allocates nothing (tests/cpp/test_allocations.cpp counts).
// One cache, not one per thread: a block a worker thread allocates is often freed by
// the calling thread.
//
// At most kMaxBlocks blocks and kMaxCachedBytes bytes stay cached (the largest ones
// win); a larger block is returned to the system at once.
#include "kernel_table.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace normgen::detail {

namespace {

// Halide's contract: aligned for any vector, a size that is a multiple of that
// alignment, and 8 bytes readable on either side. The header before the block keeps
// its capacity and doubles as the readable bytes in front.
constexpr size_t kAlign = 128;
constexpr size_t kHeader = kAlign;
constexpr size_t kMaxBlocks = 64;
constexpr size_t kMaxCachedBytes = size_t(256) << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct Cache {
    struct Block {
        unsigned char *base;
        size_t cap;
    };
    std::array<Block, kMaxBlocks> blocks{};
    size_t count = 0, bytes = 0;
    bool gone = false;  // destroyed at exit: later frees go to the system

    ~Cache() {
        for (size_t i = 0; i < count; i++) std::free(blocks[i].base);
        count = bytes = 0;
        gone = true;
    }
    // The smallest cached block that holds `size` without wasting more than it uses.
    unsigned char *take(size_t size) {
        if (gone) return nullptr;
        size_t best = count;
        for (size_t i = 0; i < count; i++)
            if (blocks[i].cap >= size && blocks[i].cap <= 2 * size + (size_t(64) << 10) &&
                (best == count || blocks[i].cap < blocks[best].cap))
                best = i;
        if (best == count) return nullptr;
        unsigned char *base = blocks[best].base;
        bytes -= blocks[best].cap;
        blocks[best] = blocks[--count];
        return base;
    }
    // Keeps `base` (capacity `cap`) or frees it, or frees smaller blocks to make room.
    void give(unsigned char *base, size_t cap) {
        if (gone || cap > kMaxCachedBytes) {
            std::free(base);
            return;
        }
        while (count > 0 && (count == kMaxBlocks || bytes + cap > kMaxCachedBytes)) {
            size_t smallest = 0;
            for (size_t i = 1; i < count; i++)
                if (blocks[i].cap < blocks[smallest].cap) smallest = i;
            if (blocks[smallest].cap >= cap) {
                std::free(base);
                return;
            }
            std::free(blocks[smallest].base);
            bytes -= blocks[smallest].cap;
            blocks[smallest] = blocks[--count];
        }
        blocks[count++] = {base, cap};
        bytes += cap;
    }
};

std::mutex g_mu;
Cache g_cache;  // (guarded by g_mu)

std::atomic<int64_t> g_in_use{0}, g_peak{0}, g_system_allocations{0};

void note_in_use(int64_t delta) {
    const int64_t now = g_in_use.fetch_add(delta, std::memory_order_relaxed) + delta;
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
}

}  // namespace

void *scratch_malloc(void *, size_t size) {
    // Capacities in 4 KiB steps so that nearby sizes share blocks.
    const size_t cap = round_up(size == 0 ? 1 : size, size_t(4) << 10);
    unsigned char *base;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        base = g_cache.take(cap);
    }
    if (!base) {
        base = static_cast<unsigned char *>(std::aligned_alloc(kAlign, kHeader + cap + kAlign));
        if (!base) return nullptr;
        g_system_allocations.fetch_add(1, std::memory_order_relaxed);
    }
    std::memcpy(base, &cap, sizeof cap);
    note_in_use(static_cast<int64_t>(cap));
    return base + kHeader;
}

void scratch_free(void *, void *ptr) {
    if (!ptr) return;
    unsigned char *base = static_cast<unsigned char *>(ptr) - kHeader;
    size_t cap;
    std::memcpy(&cap, base, sizeof cap);
    note_in_use(-static_cast<int64_t>(cap));
    std::lock_guard<std::mutex> lock(g_mu);
    g_cache.give(base, cap);
}

std::pmr::memory_resource *call_memory() {
    thread_local std::pmr::unsynchronized_pool_resource pool;
    return &pool;
}

}  // namespace normgen::detail

namespace normgen {

ScratchStats scratch_stats() {
    return {detail::g_in_use.load(), detail::g_peak.load(), detail::g_system_allocations.load()};
}

void reset_scratch_peak() { detail::g_peak.store(detail::g_in_use.load()); }

}  // namespace normgen

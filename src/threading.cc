#include "src/threading.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

namespace simdattn {
namespace {

struct Pool {
  std::mutex mu;
  int threads = 0;
  std::shared_ptr<tbb::task_arena> arena;
};

int ThreadsFromEnv() {
  const char* s = std::getenv("SIMDATTN_NUM_THREADS");
  if (s == nullptr || *s == '\0') return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < 0 || v > 4096) return 0;  // unusable: fall back to all CPUs
  return static_cast<int>(v);
}

Pool& GetPool() {
  static Pool* pool = [] {
    auto* p = new Pool;  // leaked on purpose: usable from other static destructors
    const int n = ThreadsFromEnv();
    p->threads = n == 0 ? HardwareThreads() : n;
    p->arena = std::make_shared<tbb::task_arena>(p->threads);
    return p;
  }();
  return *pool;
}

std::shared_ptr<tbb::task_arena> CurrentArena(int* threads) {
  Pool& pool = GetPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  *threads = pool.threads;
  return pool.arena;
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

int HardwareThreads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

void SetNumThreads(int n) {
  const int threads = n == 0 ? HardwareThreads() : n;
  auto arena = std::make_shared<tbb::task_arena>(threads);
  Pool& pool = GetPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  pool.threads = threads;
  pool.arena = std::move(arena);
}

int NumThreads() {
  int threads = 0;
  CurrentArena(&threads);
  return threads;
}

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = 0;
  std::shared_ptr<tbb::task_arena> arena = CurrentArena(&threads);
  if (n <= grain || threads == 1) {
    for (int64_t i = 0; i < n; i += grain) body(i, std::min(n, i + grain));
    return;
  }
  const int64_t chunks = (n + grain - 1) / grain;
  arena->execute([&] {
    // simple_partitioner with grain 1 over chunk indices: each task is exactly one chunk, so
    // chunk boundaries are fixed by `grain` alone.
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, chunks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t c = r.begin(); c < r.end(); ++c) {
            body(c * grain, std::min(n, (c + 1) * grain));
          }
        },
        tbb::simple_partitioner());
  });
}

float* ThreadScratch(int slot, size_t floats) {
  struct Buffer {
    std::unique_ptr<float, AlignedFree> data;
    size_t capacity = 0;
  };
  thread_local Buffer buffers[kScratchSlots];
  Buffer& b = buffers[slot];
  if (b.capacity < floats) {
    const size_t bytes = ((std::max<size_t>(floats, 16) * sizeof(float)) + 63) / 64 * 64;
    b.data.reset();
    b.capacity = 0;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    b.data.reset(static_cast<float*>(p));
    b.capacity = bytes / sizeof(float);
  }
  return b.data.get();
}

}  // namespace simdattn

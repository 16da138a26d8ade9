// Shared helpers for the benchmark programs: the thread count every implementation runs with,
// aligned random operands, counters, the "group/impl/shape" naming scheme that
// tools/bench_report.py groups by, the common benchmark context, a thread pool for the simple
// baselines, and a main() that supplies this project's default timing flags.
#ifndef SIMDATTN_BENCH_BENCH_UTIL_H_
#define SIMDATTN_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "hwy/aligned_allocator.h"
#include "simdattn.h"

namespace simdattn_bench {

// 0.2 s per benchmark keeps a full tools/run-bench at a few minutes with stable figures.
constexpr const char* kDefaultMinTimeFlag = "--benchmark_min_time=0.2";
// Untimed warm-up pays for page faults, first packing and thread-pool start before timing.
constexpr const char* kDefaultWarmUpFlag = "--benchmark_min_warmup_time=0.05";
// Overrides the thread count of every implementation (a positive integer).
constexpr const char* kThreadsEnv = "SIMDATTN_BENCH_THREADS";

using Buffer = hwy::AlignedFreeUniquePtr<float[]>;

// 64-byte aligned floats, uniform in [-1, 1) from a fixed seed (runs are reproducible).
inline Buffer RandomBuffer(size_t count, uint32_t seed) {
  Buffer buf = hwy::AllocateAligned<float>(std::max<size_t>(count, 1));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < count; ++i) buf[i] = dist(rng);
  return buf;
}

// A value built on first use, so a benchmark removed by --benchmark_filter allocates nothing;
// shared (through a shared_ptr) by the implementations of one shape.
template <typename T>
class Lazy {
 public:
  explicit Lazy(std::function<T()> make) : make_(std::move(make)) {}
  T& Get() {
    if (!value_) value_ = std::make_unique<T>(make_());
    return *value_;
  }

 private:
  std::function<T()> make_;
  std::unique_ptr<T> value_;
};

// SIMDATTN_BENCH_THREADS if set, else the library's own default (simdattn_get_num_threads()).
inline int BenchThreads() {
  const char* env = std::getenv(kThreadsEnv);
  if (env != nullptr && std::atoi(env) > 0) return std::atoi(env);
  return simdattn_get_num_threads();
}

inline std::string BenchName(const std::string& group, const std::string& impl,
                             const std::string& shape) {
  return group + "/" + impl + "/" + shape;
}

// "flops" counter: floating-point operations per second of real time.
inline void SetFlops(benchmark::State& state, double flops_per_iteration) {
  state.counters["flops"] =
      benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

// bytes_per_second and items_per_second (elements) counters.
inline void SetBytesAndItems(benchmark::State& state, int64_t bytes, int64_t items) {
  state.SetBytesProcessed(state.iterations() * bytes);
  state.SetItemsProcessed(state.iterations() * items);
}

// First value of `key` ("model name", "cpu MHz", ...) in /proc/cpuinfo, "" if absent.
inline std::string CpuInfoField(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name == key) return line.substr(std::min(line.size(), colon + 2));
  }
  return "";
}

// Context every program reports (the header of the report).
inline void AddCommonContext(int threads) {
  benchmark::AddCustomContext("cpu_model", CpuInfoField("model name") + " (" +
                                               CpuInfoField("vendor_id") + " family " +
                                               CpuInfoField("cpu family") + " model " +
                                               CpuInfoField("model") + ")");
  benchmark::AddCustomContext("cpu_mhz", CpuInfoField("cpu MHz"));
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("simdattn_version", simdattn_version());
  benchmark::AddCustomContext("simdattn_simd_target", simdattn_simd_target());
}

// A oneTBB arena of `threads` threads for the simple baselines (naive loops, memcpy), so they
// run on as many threads as simdattn and pay a comparable per-call dispatch cost.
class BaselinePool {
 public:
  explicit BaselinePool(int threads) : threads_(threads), arena_(threads) {}
  int threads() const { return threads_; }

  // body(begin, end) once per thread over an equal split of [0, n) into threads() slices.
  void ForEachSlice(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
    arena_.execute([&] {
      tbb::parallel_for(
          0, threads_,
          [&](int t) { body(n * t / threads_, n * (t + 1) / threads_); },
          tbb::static_partitioner());
    });
  }

 private:
  int threads_;
  tbb::task_arena arena_;
};

// Parses the command line over this project's defaults (later flags win, so a user's
// --benchmark_min_time replaces ours), registers through `register_all(threads)` and runs.
// `threads` is BenchThreads(); simdattn is set to it before registration.
inline int BenchMain(int argc, char** argv, const std::function<void(int)>& register_all) {
  std::vector<char*> args = {argv[0], const_cast<char*>(kDefaultMinTimeFlag),
                             const_cast<char*>(kDefaultWarmUpFlag)};
  args.insert(args.end(), argv + 1, argv + argc);
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  const int threads = BenchThreads();
  if (simdattn_set_num_threads(threads) != SIMDATTN_OK) {
    std::fprintf(stderr, "simdattn_set_num_threads(%d): %s\n", threads, simdattn_last_error());
    return 1;
  }
  AddCommonContext(threads);
  register_all(threads);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace simdattn_bench

#endif  // SIMDATTN_BENCH_BENCH_UTIL_H_

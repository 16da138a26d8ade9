// Shared helpers for the benchmark programs: the thread count every implementation runs with,
// aligned random operands, counters, the "group/impl/shape" naming scheme that
// tools/bench_report.py groups by, the common benchmark context, a thread pool for the simple
// baselines, the naive softmax and (with SIMDATTN_BENCH_WITH_OPENBLAS) naive attention baselines,
// the output check against simdattn, and a main() that supplies this project's default timing
// flags.
#ifndef SIMDATTN_BENCH_BENCH_UTIL_H_
#define SIMDATTN_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "hwy/aligned_allocator.h"
#include "simdattn.h"

#ifdef SIMDATTN_BENCH_WITH_OPENBLAS
#include <cblas.h>
#endif

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

// 64-byte aligned zeros: scratch whose pages are touched now, not in the first timed call.
inline Buffer ZeroBuffer(size_t count) {
  Buffer buf = hwy::AllocateAligned<float>(std::max<size_t>(count, 1));
  std::fill(buf.get(), buf.get() + std::max<size_t>(count, 1), 0.0f);
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
    ForEachThread(n, [&](int, int64_t begin, int64_t end) { body(begin, end); });
  }

  // As ForEachSlice, also passing the slice index t in [0, threads()): slices run concurrently,
  // so t selects per-thread scratch.
  void ForEachThread(int64_t n, const std::function<void(int, int64_t, int64_t)>& body) {
    arena_.execute([&] {
      tbb::parallel_for(
          0, threads_,
          [&](int t) { body(t, n * t / threads_, n * (t + 1) / threads_); },
          tbb::static_partitioner());
    });
  }

 private:
  int threads_;
  tbb::task_arena arena_;
};

// The textbook row softmax: max, then exp and sum, then divide; no SIMD intent (with this
// project's flags, no -ffast-math, GCC vectorises only the divide loop: -fopt-info-vec).
// y may equal x (in place).
inline void NaiveSoftmaxRow(const float* x, float* y, int64_t cols) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < cols; ++i) max = std::max(max, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < cols; ++i) {
    y[i] = std::exp(x[i] - max);
    sum += y[i];
  }
  for (int64_t i = 0; i < cols; ++i) y[i] /= sum;
}

// max |got - want| / max(1, max |want|) over n floats: an absolute error for O(1) outputs,
// relative for large ones.
inline double ScaledMaxDiff(const float* got, const float* want, size_t n) {
  double diff = 0.0, scale = 1.0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

// Outside the timed loop: compares a baseline's output with simdattn's (the "vs_simdattn"
// counter, ScaledMaxDiff) and fails the benchmark above `tolerance`, so a wrong baseline (or a
// wrong simdattn) cannot report a speed. Returns false on failure.
inline bool CheckAgainstSimdattn(benchmark::State& state, const float* got, const float* want,
                                 size_t n, double tolerance) {
  const double diff = ScaledMaxDiff(got, want, n);
  state.counters["vs_simdattn"] = diff;
  if (diff <= tolerance) return true;
  char text[160];
  std::snprintf(text, sizeof(text), "output differs from simdattn's: scaled max |diff| %.3g > %.3g",
                diff, tolerance);
  state.SkipWithError(text);
  return false;
}

#ifdef SIMDATTN_BENCH_WITH_OPENBLAS
// ---------------------------------------------------------------- OpenBLAS baselines
// For programs that link OpenBLAS: they define SIMDATTN_BENCH_WITH_OPENBLAS before including
// this header (the others need no cblas.h). These baselines are parallel over independent
// pieces on a BaselinePool with OpenBLAS single-threaded inside (SetUpNaiveOpenBlas), so
// OpenBLAS's own threads never compete with the pool's for the cores.

// Makes every OpenBLAS call single-threaded and records the set-up in the report's context.
inline void SetUpNaiveOpenBlas(int pool_threads) {
  openblas_set_num_threads(1);
  benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext(
      "naive_openblas", std::to_string(pool_threads) +
                            " pool threads over independent (batch, head) / row slices, "
                            "OpenBLAS single-threaded inside");
}

// c[rows, n] = a[rows, k] w^T + bias (torch Linear layout: w is [n, k]; bias may be null), rows
// split over the pool's threads.
inline void NaiveLinear(BaselinePool& pool, int64_t rows, int64_t n, int64_t k, const float* a,
                        const float* w, const float* bias, float* c) {
  pool.ForEachSlice(rows, [&](int64_t r0, int64_t r1) {
    if (r1 == r0) return;
    for (int64_t r = r0; bias != nullptr && r < r1; ++r) std::copy(bias, bias + n, c + r * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0),
                static_cast<int>(n), static_cast<int>(k), 1.0f, a + r0 * k, static_cast<int>(k),
                w, static_cast<int>(k), bias != nullptr ? 1.0f : 0.0f, c + r0 * n,
                static_cast<int>(n));
  });
}

// One (batch, head) of attention: row-major matrices with leading dimensions (feature stride 1).
struct HeadView {
  const float* q;
  int64_t ldq;
  const float* k;
  int64_t ldk;
  const float* v;
  int64_t ldv;
  float* out;
  int64_t ldo;
};

struct NaiveAttentionShape {
  int64_t q_len, kv_len, d_k, d_v;
  float scale;
  bool causal;  // top-left: key j visible to query i iff j <= i
};

// The naive composition for one head: S = scale Q K^T into `scores` (q_len x kv_len), causal
// mask as -inf, row softmax in place, O = P V.
inline void NaiveAttentionHead(const HeadView& h, const NaiveAttentionShape& s, float* scores) {
  const int lq = static_cast<int>(s.q_len), lkv = static_cast<int>(s.kv_len);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, lq, lkv, static_cast<int>(s.d_k), s.scale,
              h.q, static_cast<int>(h.ldq), h.k, static_cast<int>(h.ldk), 0.0f, scores, lkv);
  for (int64_t i = 0; i < s.q_len; ++i) {
    float* row = scores + i * s.kv_len;
    if (s.causal) {
      std::fill(row + std::min(i + 1, s.kv_len), row + s.kv_len,
                -std::numeric_limits<float>::infinity());
    }
    NaiveSoftmaxRow(row, row, s.kv_len);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, lq, static_cast<int>(s.d_v), lkv, 1.0f,
              scores, lkv, h.v, static_cast<int>(h.ldv), 0.0f, h.out, static_cast<int>(h.ldo));
}

// Score buffers for NaiveAttention: one q_len x kv_len matrix per pool thread, allocated once
// (outside the timed loop).
inline Buffer NaiveScores(const BaselinePool& pool, const NaiveAttentionShape& s) {
  return ZeroBuffer(static_cast<size_t>(pool.threads() * s.q_len * s.kv_len));
}

// NaiveAttentionHead for heads 0 .. count-1 (view(i) locates head i), parallel over heads on the
// pool; `scores` from NaiveScores.
inline void NaiveAttention(BaselinePool& pool, int64_t count, const NaiveAttentionShape& s,
                           const std::function<HeadView(int64_t)>& view, float* scores) {
  pool.ForEachThread(count, [&](int t, int64_t i0, int64_t i1) {
    float* mine = scores + t * s.q_len * s.kv_len;
    for (int64_t i = i0; i < i1; ++i) NaiveAttentionHead(view(i), s, mine);
  });
}
#endif  // SIMDATTN_BENCH_WITH_OPENBLAS

// Parses the command line over this project's defaults (later flags win, so a user's
// --benchmark_min_time replaces ours), registers through `register_all(threads)` and runs.
// `threads` is BenchThreads(); simdattn is set to it before registration.
// Registers one benchmark the way every program here times them: real time, microseconds.
template <class F>
inline void Register(const std::string& name, F&& fn) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<F>(fn))
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

// ---------------------------------------------------------------- membw/read
// The time to read a buffer once: the bound memory-bound benchmarks (decode) are measured
// against, in the same run.

// Larger than any cache (so DRAM bandwidth is measured) and as large as decode's K and V.
constexpr int64_t kReadBytes = int64_t{256} << 20;
// Independent partial sums: enough to keep the loads, not the add latency, the limit.
constexpr int kReadAccumulators = 16;

// Sums [begin, end) of x with kReadAccumulators independent chains.
inline float SumFloats(const float* x, int64_t begin, int64_t end) {
  float acc[kReadAccumulators] = {};
  int64_t i = begin;
  for (; i + kReadAccumulators <= end; i += kReadAccumulators) {
    for (int j = 0; j < kReadAccumulators; ++j) acc[j] += x[i + j];
  }
  for (; i < end; ++i) acc[0] += x[i];
  float sum = 0.0f;
  for (float a : acc) sum += a;
  return sum;
}

inline void ReadBandwidth(benchmark::State& state, Lazy<Buffer>& lazy, BaselinePool& pool) {
  const float* x = lazy.Get().get();
  const int64_t n = kReadBytes / static_cast<int64_t>(sizeof(float));
  std::vector<float> sums(pool.threads());
  for (auto _ : state) {
    pool.ForEachThread(n, [&](int t, int64_t i0, int64_t i1) { sums[t] = SumFloats(x, i0, i1); });
    benchmark::DoNotOptimize(sums.data());
    benchmark::ClobberMemory();
  }
  SetBytesAndItems(state, kReadBytes, n);
}

// Registers membw/read/<kReadBytes> on the pool's threads.
inline void RegisterReadBandwidth(std::shared_ptr<BaselinePool> pool) {
  auto buffer = std::make_shared<Lazy<Buffer>>([] {
    return ZeroBuffer(static_cast<size_t>(kReadBytes / sizeof(float)));
  });
  Register(BenchName("membw", "read", std::to_string(kReadBytes)),
           [buffer, pool](benchmark::State& st) { ReadBandwidth(st, *buffer, *pool); });
}


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

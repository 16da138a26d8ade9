// Row softmax throughput: simdattn_softmax against a naive scalar loop and memcpy of the same
// bytes (the bandwidth bound: softmax must read x and write y at least once). Out of place.
// Names: softmax/<impl>/<rows>x<cols>; counters: bytes_per_second (read + write) and
// items_per_second (elements).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

struct SoftmaxShape {
  int64_t rows, cols;
};

// Large (16M elements, past the caches), the seed model's 32 x (8 heads x 10 x 10) scores
// (2560 rows of 10: per-row overhead), and one long row (no parallelism across rows).
const SoftmaxShape kShapes[] = {{4096, 4096}, {32 * 8 * 10, 10}, {1, 100000}};

struct SoftmaxOperands {
  SoftmaxShape shape;
  Buffer x, y;
};

// Baselines run on a pool of as many threads as simdattn uses.
using SoftmaxFn = bool (*)(SoftmaxOperands& o, BaselinePool& pool);

bool RunSimdattn(SoftmaxOperands& o, BaselinePool&) {
  const SoftmaxShape& s = o.shape;
  return simdattn_softmax(s.rows, s.cols, o.x.get(), s.cols, o.y.get(), s.cols) == SIMDATTN_OK;
}

// Parallel over rows like simdattn, so the ratio measures the kernels, not the thread count.
bool RunNaive(SoftmaxOperands& o, BaselinePool& pool) {
  const int64_t cols = o.shape.cols;
  pool.ForEachSlice(o.shape.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) NaiveSoftmaxRow(o.x.get() + r * cols, o.y.get() + r * cols, cols);
  });
  return true;
}

// The bandwidth bound, on as many threads as simdattn uses: one thread cannot saturate memory,
// so a single-threaded memcpy would be an unfair (too low) bound. x and y are contiguous, so
// the bytes are split into equal chunks per thread (row chunks when rows >= threads; a single
// long row is split too).
bool RunMemcpy(SoftmaxOperands& o, BaselinePool& pool) {
  pool.ForEachSlice(o.shape.rows * o.shape.cols, [&](int64_t i0, int64_t i1) {
    std::memcpy(o.y.get() + i0, o.x.get() + i0, static_cast<size_t>(i1 - i0) * sizeof(float));
  });
  return true;
}

struct SoftmaxImpl {
  const char* name;
  SoftmaxFn run;
};
const SoftmaxImpl kImpls[] = {
    {"simdattn", RunSimdattn}, {"naive", RunNaive}, {"memcpy", RunMemcpy}};

// Scores-like inputs: uniform in [-8, 8) so exp spans a realistic range.
constexpr float kInputScale = 8.0f;

SoftmaxOperands MakeOperands(SoftmaxShape s) {
  const int64_t count = s.rows * s.cols;
  SoftmaxOperands o{s, RandomBuffer(count, 1), RandomBuffer(count, 2)};
  for (int64_t i = 0; i < count; ++i) o.x[i] *= kInputScale;
  return o;
}

void RunSoftmax(benchmark::State& state, const SoftmaxImpl& impl, Lazy<SoftmaxOperands>& lazy,
                BaselinePool& pool) {
  SoftmaxOperands& o = lazy.Get();
  for (auto _ : state) {
    if (!impl.run(o, pool)) {
      state.SkipWithError((std::string(impl.name) + " failed").c_str());
      break;
    }
  }
  const int64_t elements = o.shape.rows * o.shape.cols;
  SetBytesAndItems(state, 2 * elements * static_cast<int64_t>(sizeof(float)), elements);
}

std::string ShapeName(const SoftmaxShape& s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols);
}

void RegisterAll(int threads) {
  auto pool = std::make_shared<BaselinePool>(threads);
  for (const SoftmaxShape& shape : kShapes) {
    auto lazy = std::make_shared<Lazy<SoftmaxOperands>>([shape] { return MakeOperands(shape); });
    for (const SoftmaxImpl& impl : kImpls) {
      Register(BenchName("softmax", impl.name, ShapeName(shape)),
               [&impl, lazy, pool](benchmark::State& st) { RunSoftmax(st, impl, *lazy, *pool); });
    }
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

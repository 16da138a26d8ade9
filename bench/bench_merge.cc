// simdattn_attention_merge throughput against memcpy of the merged output's bytes on as many
// threads (the bandwidth a merge cannot beat: it reads n pieces and writes one). Names:
// merge/<impl>/<n>x<rows>x<d_v>; items_per_second counts merged elements (rows x d_v) for both,
// bytes_per_second the bytes each really moves (merge: n pieces + lses read, out + lse written;
// memcpy: one output read and written).
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

struct MergeShape {
  int64_t n, rows, d_v;
};

// Two halves of a 32-head x 4096-query prefill (64 MiB per piece: past the caches), a ring
// of 8 steps over 32 x 1024 rows, and decode (32 heads x 1 query, 16 key ranges).
const MergeShape kShapes[] = {{2, 32 * 4096, 128}, {8, 32 * 1024, 128}, {16, 32, 128}};

struct MergeOperands {
  MergeShape shape;
  std::vector<Buffer> outs, lses;
  Buffer out, lse;
  std::vector<const float*> out_ptrs, lse_ptrs;
};

MergeOperands MakeOperands(MergeShape s) {
  MergeOperands o{s,
                  {},
                  {},
                  ZeroBuffer(static_cast<size_t>(s.rows * s.d_v)),
                  ZeroBuffer(static_cast<size_t>(s.rows)),
                  {},
                  {}};
  for (int64_t i = 0; i < s.n; ++i) {
    o.outs.push_back(RandomBuffer(static_cast<size_t>(s.rows * s.d_v), 10 + i));
    o.lses.push_back(RandomBuffer(static_cast<size_t>(s.rows), 50 + i));  // lse in [-1, 1)
    o.out_ptrs.push_back(o.outs.back().get()), o.lse_ptrs.push_back(o.lses.back().get());
  }
  return o;
}

void RunMerge(benchmark::State& state, Lazy<MergeOperands>& lazy, BaselinePool& pool,
              bool memcpy_only) {
  MergeOperands& o = lazy.Get();
  const MergeShape& s = o.shape;
  const int64_t elements = s.rows * s.d_v;
  for (auto _ : state) {
    if (memcpy_only) {
      pool.ForEachSlice(elements, [&](int64_t i0, int64_t i1) {
        std::memcpy(o.out.get() + i0, o.outs[0].get() + i0, static_cast<size_t>(i1 - i0) * 4);
      });
      continue;
    }
    if (simdattn_attention_merge(s.n, s.rows, s.d_v, o.out_ptrs.data(), s.d_v, o.lse_ptrs.data(),
                                 o.out.get(), s.d_v, o.lse.get()) != SIMDATTN_OK) {
      state.SkipWithError(simdattn_last_error());
      break;
    }
  }
  const int64_t floats = memcpy_only ? 2 * elements : (s.n + 1) * (elements + s.rows);
  SetBytesAndItems(state, floats * static_cast<int64_t>(sizeof(float)), elements);
}

std::string ShapeName(const MergeShape& s) {
  return std::to_string(s.n) + "x" + std::to_string(s.rows) + "x" + std::to_string(s.d_v);
}

void RegisterAll(int threads) {
  auto pool = std::make_shared<BaselinePool>(threads);
  for (const MergeShape& shape : kShapes) {
    auto lazy = std::make_shared<Lazy<MergeOperands>>([shape] { return MakeOperands(shape); });
    for (const bool memcpy_only : {false, true}) {
      Register(BenchName("merge", memcpy_only ? "memcpy" : "simdattn", ShapeName(shape)),
               [lazy, pool, memcpy_only](benchmark::State& st) {
                 RunMerge(st, *lazy, *pool, memcpy_only);
               });
    }
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

// simdattn_cast f32 -> bf16 of 64 MiB of floats (past every cache) against memcpy of the same
// 64 MiB on as many threads: the bandwidth bound of a cast, which reads those bytes and writes
// half as many. Names: cast/<impl>/f32_to_bf16_64MiB; bytes_per_second counts the bytes each
// really moves (cast: 64 MiB read + 32 MiB written; memcpy: 64 + 64), items_per_second the
// floats; the report compares their times (tools/bench_publish.py, MEMCPY_SPEED_GROUPS).
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

constexpr int64_t kFloats = int64_t{16} << 20;  // 64 MiB of f32

struct CastOperands {
  Buffer src = RandomBuffer(static_cast<size_t>(kFloats), 3);
  Buffer dst = ZeroBuffer(static_cast<size_t>(kFloats));  // memcpy's 64 MiB (cast uses half)
};

void RunCast(benchmark::State& state, Lazy<CastOperands>& lazy, BaselinePool& pool,
             bool memcpy_only) {
  CastOperands& o = lazy.Get();
  for (auto _ : state) {
    if (memcpy_only) {
      pool.ForEachSlice(kFloats, [&](int64_t i0, int64_t i1) {
        std::memcpy(o.dst.get() + i0, o.src.get() + i0, static_cast<size_t>(i1 - i0) * 4);
      });
      continue;
    }
    if (simdattn_cast(kFloats, o.src.get(), SIMDATTN_DTYPE_F32, o.dst.get(),
                      SIMDATTN_DTYPE_BF16) != SIMDATTN_OK) {
      state.SkipWithError(simdattn_last_error());
      break;
    }
  }
  SetBytesAndItems(state, kFloats * (memcpy_only ? 8 : 6), kFloats);
}

void RegisterAll(int threads) {
  auto pool = std::make_shared<BaselinePool>(threads);
  auto lazy = std::make_shared<Lazy<CastOperands>>([] { return CastOperands(); });
  for (const bool memcpy_only : {false, true}) {
    Register(BenchName("cast", memcpy_only ? "memcpy" : "simdattn", "f32_to_bf16_64MiB"),
             [lazy, pool, memcpy_only](benchmark::State& st) {
               RunCast(st, *lazy, *pool, memcpy_only);
             });
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

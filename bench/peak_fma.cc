// Peak FMA probe: every thread runs a register-only loop of independent fused multiply-add
// chains at the widest Highway target this CPU supports (AVX-512 -> zmm, AVX2 -> ymm), all
// threads at once. The measured FLOP/s is the ceiling the report's "% of peak" divides by.
// Benchmark: peak/fma/<threads>; counters: flops (mean), best_flops (fastest iteration),
// expected_flops (model, below), lanes. Context: peak_fma_target, peak_fma_formula.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/peak_fma.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cstddef>
#include <cstdint>

#include "hwy/highway.h"

#ifndef SIMDATTN_BENCH_PEAK_FMA_ONCE_
#define SIMDATTN_BENCH_PEAK_FMA_ONCE_
namespace simdattn_bench {
// Independent accumulators: FMA latency (4 cycles) x FMA pipes (2) = 8 chains keep every pipe
// busy; 12 leaves slack and, with the 2 constant operands, fits AVX2's 16 registers unspilled.
constexpr size_t kChains = 12;

struct FmaLoopResult {
  float checksum;  // keeps the chains live
  size_t lanes;    // floats per vector on the dispatched target
  const char* target;
};
}  // namespace simdattn_bench
#endif

HWY_BEFORE_NAMESPACE();
namespace simdattn_bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// acc = acc * mul + add per chain, `iterations` times. mul < 1 makes every chain converge to
// add / (1 - mul): no overflow, no denormals. The seeds arrive through volatile loads at run
// time and each chain is a strict dependence on its previous value, so the compiler can neither
// fold nor merge the FMAs (checked in the disassembly: 12 vfmadd on distinct registers per
// iteration, no memory operands).
FmaLoopResult FmaLoopImpl(uint64_t iterations, float mul_seed, float add_seed) {
  const hn::ScalableTag<float> d;
  const auto mul = hn::Set(d, mul_seed);
  const auto add = hn::Set(d, add_seed);
  auto a0 = hn::Set(d, 0.0f), a1 = hn::Set(d, 0.1f), a2 = hn::Set(d, 0.2f),
       a3 = hn::Set(d, 0.3f), a4 = hn::Set(d, 0.4f), a5 = hn::Set(d, 0.5f),
       a6 = hn::Set(d, 0.6f), a7 = hn::Set(d, 0.7f), a8 = hn::Set(d, 0.8f),
       a9 = hn::Set(d, 0.9f), a10 = hn::Set(d, 1.0f), a11 = hn::Set(d, 1.1f);
  static_assert(kChains == 12, "the chains below are written out one per accumulator");
  for (uint64_t i = 0; i < iterations; ++i) {
    a0 = hn::MulAdd(a0, mul, add), a1 = hn::MulAdd(a1, mul, add);
    a2 = hn::MulAdd(a2, mul, add), a3 = hn::MulAdd(a3, mul, add);
    a4 = hn::MulAdd(a4, mul, add), a5 = hn::MulAdd(a5, mul, add);
    a6 = hn::MulAdd(a6, mul, add), a7 = hn::MulAdd(a7, mul, add);
    a8 = hn::MulAdd(a8, mul, add), a9 = hn::MulAdd(a9, mul, add);
    a10 = hn::MulAdd(a10, mul, add), a11 = hn::MulAdd(a11, mul, add);
  }
  const auto sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
  return {hn::GetLane(hn::SumOfLanes(d, sum)), hn::Lanes(d), hwy::TargetName(HWY_TARGET)};
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn_bench
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"

namespace simdattn_bench {

HWY_EXPORT(FmaLoopImpl);

// Loop trips per thread per benchmark iteration: ~5 ms at 4 GHz, so starting the threads
// (tens of microseconds) costs under 1%.
constexpr uint64_t kIterations = uint64_t{1} << 21;
// The accumulators converge to add / (1 - mul) = 1000.
volatile float g_mul_seed = 0.999f;
volatile float g_add_seed = 1.0f;

FmaLoopResult FmaLoop(uint64_t iterations) {
  return HWY_DYNAMIC_DISPATCH(FmaLoopImpl)(iterations, g_mul_seed, g_add_seed);
}

// Runs the loop on `threads` threads at once; returns the sum of their checksums.
float FmaLoopOnThreads(int threads) {
  std::vector<float> checksums(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&checksums, t] { checksums[t] = FmaLoop(kIterations).checksum; });
  }
  for (std::thread& w : workers) w.join();
  float total = 0.0f;
  for (float c : checksums) total += c;
  return total;
}

// FMA issue model per core: pipes and the width of each pipe's datapath, by CPU family.
struct FmaPipes {
  int pipes;
  int datapath_bits;
  const char* cpu;
};

FmaPipes GuessFmaPipes() {
  const std::string vendor = CpuInfoField("vendor_id");
  const int family = std::atoi(CpuInfoField("cpu family").c_str());
  if (vendor == "AuthenticAMD" && family >= 0x1A) return {2, 512, "AMD Zen 5: 2 x 512-bit FMA"};
  if (vendor == "AuthenticAMD") return {2, 256, "AMD Zen 2-4: 2 x 256-bit FMA"};
  return {2, 512, "Intel server: 2 x 512-bit FMA (some parts have 1)"};
}

// expected = threads x pipes x lanes per pipe x 2 flops (mul + add) x clock, the clock being
// /proc/cpuinfo "cpu MHz" (in a VM often the base clock: a boosting CPU measures above it).
double ExpectedFlops(int threads, size_t vector_lanes, std::string* formula) {
  const FmaPipes p = GuessFmaPipes();
  const size_t lanes = std::min<size_t>(vector_lanes, p.datapath_bits / 32);
  const double mhz = std::atof(CpuInfoField("cpu MHz").c_str());
  const double flops = threads * p.pipes * static_cast<double>(lanes) * 2.0 * mhz * 1e6;
  char text[256];
  std::snprintf(text, sizeof(text),
                "%d threads x %d FMA pipes x %zu lanes x 2 flops x %.0f MHz (cpu MHz) = %.1f "
                "GFLOP/s, assuming %s",
                threads, p.pipes, lanes, mhz, flops * 1e-9, p.cpu);
  *formula = text;
  return flops;
}

// flops: the mean over the timed iterations; best_flops: the fastest iteration. The report
// divides by best_flops: a ceiling, unaffected by other processes that share the cores for part
// of the run.
void PeakFma(benchmark::State& state, int threads, size_t lanes, double expected) {
  const double flops = threads * static_cast<double>(kIterations * kChains * lanes) * 2.0;
  float checksum = 0.0f;
  double best_seconds = std::numeric_limits<double>::infinity();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    checksum += FmaLoopOnThreads(threads);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best_seconds = std::min(best_seconds, elapsed.count());
  }
  benchmark::DoNotOptimize(checksum);
  SetFlops(state, flops);
  state.counters["best_flops"] = flops / best_seconds;
  state.counters["expected_flops"] = expected;
  state.counters["lanes"] = static_cast<double>(lanes);
}

void RegisterAll(int threads) {
  const FmaLoopResult probe = FmaLoop(1);
  std::string formula;
  const double expected = ExpectedFlops(threads, probe.lanes, &formula);
  benchmark::AddCustomContext("peak_fma_target", probe.target);
  benchmark::AddCustomContext("peak_fma_formula", formula);
  const size_t lanes = probe.lanes;
  benchmark::RegisterBenchmark(
      BenchName("peak", "fma", std::to_string(threads)).c_str(),
      [threads, lanes, expected](benchmark::State& st) { PeakFma(st, threads, lanes, expected); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}
#endif  // HWY_ONCE

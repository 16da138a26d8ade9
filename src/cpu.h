// What the CPU reports about itself (cache sizes and geometry, how it executes 512-bit vectors),
// read once per process, and the GEMM block sizes derived from it with the BLIS analytical model.
// Plain C++ (no Highway, no threads): the ops and the tests and benchmarks call it.
#ifndef SIMDATTN_SRC_CPU_H_
#define SIMDATTN_SRC_CPU_H_

#include <cstdint>
#include <string>

namespace simdattn {

struct CacheLevel {
  int64_t size = 0;     // bytes; 0 = not reported
  int64_t ways = 0;     // associativity; 0 = not reported (fully associative counts as 0 too)
  int64_t line = 0;     // bytes
  int64_t sharing = 1;  // logical CPUs sharing one instance
};

struct CpuInfo {
  CacheLevel l1d, l2, l3;
  // Where the cache facts came from: "sysfs", "cpuid" or "default" (nothing readable).
  const char* cache_source = "default";
  // AVX-512 instructions execute as two 256-bit halves (AMD Zen 4: family 0x19 with AVX-512).
  bool splits_512 = false;
};

// The running CPU, read once (sysfs /sys/devices/system/cpu/cpu0/cache, else CPUID leaf 4 /
// 0x8000001D, else conservative defaults: 32 KiB 8-way L1D, 1 MiB 8-way L2, 8 MiB L3).
const CpuInfo& GetCpuInfo();

// Reads <root>/index*/{level,type,size,ways_of_associativity,coherency_line_size,
// shared_cpu_list} (root: a cpu's cache directory). False when no data cache level was found.
bool ReadSysfsCaches(const std::string& root, CpuInfo* info);

// GEMM blocking (BLIS terms): kc = depth of a packed slice, mc = rows of A per L2 block,
// nc = the widest column tile (its packed B slice).
struct GemmBlocking {
  int64_t kc = 0, mc = 0, nc = 0;
};

// The BLIS analytical model (Low, Igual, Smith, Quintana-Orti 2016) for an mr x nr register
// tile of 4-byte elements, with two measured corrections:
//   L1 (W1 ways, S1 sets, line C1): the kc x nr micro-panel of B stays while mr x kc micro-panels
//     of A stream through. A gets CA = floor((W1 - 1) / (1 + nr / mr)) ways, B nr / mr times as
//     many, one way is left for C: kc = CA * S1 * C1 / (mr * 4), but at least 256 (measured:
//     a smaller kc reloads the C tile too often; see kMinDerivedKC in cpu.cc).
//   L2 (W2 ways, way size S2 * C2): the mc x kc block of A stays while B micro-panels stream
//     through: A gets half the ways less ceil(kc * nr * 4 / (S2 * C2)) for a B micro-panel
//     (the other half holds the C tiles and the next packed panels; measured: a block filling
//     L2 was up to 20% slower): mc = those ways * S2 * C2 / (kc * 4).
//   L3 (this thread's share, size / sharing): a quarter holds the kc x nc packed B slice:
//     nc = L3 share / 4 / (kc * 4), at most 4096.
// Then kc is rounded down to a multiple of 16 (the transposed-B pack's unit) within [64, 512],
// mc down to a multiple of mr within [mr, 4096], nc down to a multiple of nr within
// [nr, 8192]. A level whose size or ways is unknown gives its middle-of-range value
// (kc 256, mc 192 rounded to mr, nc 2048).
GemmBlocking DeriveGemmBlocking(const CpuInfo& cpu, int64_t mr, int64_t nr);

// The most keys AttentionBlockKeys returns (bounds per-block arrays on the stack).
constexpr int64_t kMaxAttentionBlockKeys = 256;
// Keys per block of the fused attention sweep for an NR-column register tile: the P^T panel
// (keys x NR floats) that the P V microkernel keeps in L1 gets half of it, like the B
// micro-panel of the GEMM: L1D / 2 / (NR * 4), rounded down to a multiple of 32 within
// [64, kMaxAttentionBlockKeys]; 128 when L1D is unknown. Zen 4 (32 KiB): 128; 48 KiB L1D: 192.
int64_t AttentionBlockKeys(const CpuInfo& cpu, int64_t nr);

// Parses "KC,MC,NC" (SIMDATTN_GEMM_BLOCKING) into b, each clamped to the ranges above and
// rounded to the multiples above. False (b untouched) unless it is exactly three positive
// integers separated by commas.
bool ParseGemmBlocking(const char* text, int64_t mr, int64_t nr, GemmBlocking* b);

// The process's blocking: SIMDATTN_GEMM_BLOCKING if it parses, else DeriveGemmBlocking of
// GetCpuInfo(); computed once per (mr, nr).
GemmBlocking ProcessGemmBlocking(int64_t mr, int64_t nr);

// One line describing what was read and derived, e.g. for benchmark reports:
// "L1d 32 KiB 8-way, L2 1024 KiB 8-way, L3 32768 KiB /2 (sysfs); 8x32 tile: KC 256 MC 384 NC 4096".
std::string DescribeBlocking(int64_t mr, int64_t nr);

}  // namespace simdattn

#endif  // SIMDATTN_SRC_CPU_H_

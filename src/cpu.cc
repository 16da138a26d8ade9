#include "src/cpu.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SIMDATTN_HAVE_CPUID 1
#else
#define SIMDATTN_HAVE_CPUID 0
#endif

namespace simdattn {
namespace {

// Bounds of an override (see cpu.h): below kc 64 the C tile's loads and stores dominate; above
// 512 a packed slice outgrows any L1; the mc/nc caps keep scratch bounded.
constexpr int64_t kMinKC = 64, kMaxKC = 512, kKCUnit = 16;
constexpr int64_t kMaxMC = 4096, kMaxNC = 8192;
// The derived kc is at least this: the L1 model gives 128 on Zen 4 (32 KiB 8-way), where
// SGEMM 2048^3 on one core measured 94 GFLOP/s at kc 128 and 100-104 at 256: reloading the C
// tile every slice costs more than the B micro-panel's L1 misses, which L2 serves at full rate.
constexpr int64_t kMinDerivedKC = 256;
// The derived nc is at most this: wider tiles measured no faster and cost scratch.
constexpr int64_t kMaxDerivedNC = 4096;
// Fallbacks when a level is not reported: the middle of the range of today's x86 cores.
constexpr int64_t kDefaultKC = 256, kDefaultMC = 192, kDefaultNC = 2048;

bool ReadText(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::getline(f, *out);
  return true;
}

int64_t ReadInt(const std::string& path) {
  std::string s;
  if (!ReadText(path, &s)) return 0;
  return std::strtoll(s.c_str(), nullptr, 10);
}

// "32K" / "1024K" / "32M" -> bytes.
int64_t ParseSize(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || v <= 0) return 0;
  if (*end == 'K') return v << 10;
  if (*end == 'M') return v << 20;
  if (*end == 'G') return v << 30;
  return v;
}

// Number of CPUs in a list such as "0-3,8,10-11".
int64_t CountCpuList(const std::string& s) {
  int64_t count = 0;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    long a = 0, b = 0;
    if (std::sscanf(part.c_str(), "%ld-%ld", &a, &b) == 2) {
      count += b >= a ? b - a + 1 : 0;
    } else if (std::sscanf(part.c_str(), "%ld", &a) == 1) {
      count += 1;
    }
  }
  return std::max<int64_t>(count, 1);
}

#if SIMDATTN_HAVE_CPUID
// Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D share the layout).
bool ReadCpuidCaches(CpuInfo* info) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amd = ebx == 0x68747541;  // "Auth"enticAMD
  unsigned leaf = 4;
  if (amd) {
    if (!__get_cpuid(0x80000000, &eax, &ebx, &ecx, &edx) || eax < 0x8000001D) return false;
    leaf = 0x8000001D;
  } else if (eax < 4) {
    return false;
  }
  bool found = false;
  for (unsigned i = 0; i < 16; ++i) {
    __cpuid_count(leaf, i, eax, ebx, ecx, edx);
    const unsigned type = eax & 31;  // 1 data, 2 instruction, 3 unified, 0 no more
    if (type == 0) break;
    if (type == 2) continue;
    CacheLevel c;
    c.line = (ebx & 0xfff) + 1;
    const int64_t partitions = ((ebx >> 12) & 0x3ff) + 1;
    c.ways = ((ebx >> 22) & 0x3ff) + 1;
    const int64_t sets = static_cast<int64_t>(ecx) + 1;
    c.size = c.ways * partitions * c.line * sets;
    c.sharing = ((eax >> 14) & 0xfff) + 1;
    if ((eax >> 9) & 1) c.ways = 0;  // fully associative
    const unsigned level = (eax >> 5) & 7;
    if (level == 1) info->l1d = c, found = true;
    if (level == 2) info->l2 = c;
    if (level == 3) info->l3 = c;
  }
  return found;
}

bool Splits512() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx) || ebx != 0x68747541) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned family = ((eax >> 8) & 0xf) + ((eax >> 20) & 0xff);
  // Zen 4 (family 0x19) runs AVX-512 on 256-bit units; Zen 5 (0x1A) has full-width units.
  return family == 0x19 && __builtin_cpu_supports("avx512f");
}
#endif

CpuInfo ReadCpuInfo() {
  CpuInfo info;
  if (ReadSysfsCaches("/sys/devices/system/cpu/cpu0/cache", &info)) {
    info.cache_source = "sysfs";
  }
#if SIMDATTN_HAVE_CPUID
  else if (ReadCpuidCaches(&info)) {
    info.cache_source = "cpuid";
  }
  info.splits_512 = Splits512();
#endif
  return info;
}

int64_t RoundDown(int64_t x, int64_t unit) { return x / unit * unit; }

GemmBlocking Clamp(GemmBlocking b, int64_t mr, int64_t nr) {
  b.kc = std::clamp(RoundDown(b.kc, kKCUnit), kMinKC, kMaxKC);
  b.mc = std::clamp(RoundDown(b.mc, mr), mr, RoundDown(kMaxMC, mr));
  b.nc = std::clamp(RoundDown(b.nc, nr), nr, RoundDown(kMaxNC, nr));
  return b;
}

}  // namespace

bool ReadSysfsCaches(const std::string& root, CpuInfo* info) {
  bool found = false;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = root + "/index" + std::to_string(i) + "/";
    std::string type, size;
    if (!ReadText(dir + "type", &type) || !ReadText(dir + "size", &size)) continue;
    if (type != "Data" && type != "Unified") continue;
    CacheLevel c;
    c.size = ParseSize(size);
    c.ways = ReadInt(dir + "ways_of_associativity");
    c.line = ReadInt(dir + "coherency_line_size");
    std::string shared;
    if (ReadText(dir + "shared_cpu_list", &shared)) c.sharing = CountCpuList(shared);
    const int64_t level = ReadInt(dir + "level");
    if (c.size <= 0) continue;
    if (level == 1) info->l1d = c, found = true;
    if (level == 2) info->l2 = c;
    if (level == 3) info->l3 = c;
  }
  return found;
}

const CpuInfo& GetCpuInfo() {
  static const CpuInfo info = ReadCpuInfo();
  return info;
}

GemmBlocking DeriveGemmBlocking(const CpuInfo& cpu, int64_t mr, int64_t nr) {
  GemmBlocking b{kDefaultKC, kDefaultMC, kDefaultNC};
  const CacheLevel& l1 = cpu.l1d;
  if (l1.size > 0 && l1.ways > 1 && l1.line > 0) {
    const int64_t sets = l1.size / (l1.ways * l1.line);
    const int64_t ways_a = (l1.ways - 1) * mr / (mr + nr);  // floor((W - 1) / (1 + nr / mr))
    b.kc = std::max(std::max<int64_t>(ways_a, 1) * sets * l1.line / (mr * 4), kMinDerivedKC);
  }
  b.kc = std::clamp(RoundDown(b.kc, kKCUnit), kMinKC, kMaxKC);
  const CacheLevel& l2 = cpu.l2;
  if (l2.size > 0 && l2.ways > 2) {
    const int64_t way = l2.size / l2.ways;
    const int64_t ways_b = (b.kc * nr * 4 + way - 1) / way;
    const int64_t ways_a = std::max<int64_t>(l2.ways / 2 - ways_b, 1);
    b.mc = ways_a * way / (b.kc * 4);
  }
  const CacheLevel& l3 = cpu.l3;
  if (l3.size > 0) {
    b.nc = std::min(l3.size / std::max<int64_t>(l3.sharing, 1) / 4 / (b.kc * 4), kMaxDerivedNC);
  }
  return Clamp(b, mr, nr);
}

int64_t AttentionBlockKeys(const CpuInfo& cpu, int64_t nr) {
  if (cpu.l1d.size <= 0) return 128;
  return std::clamp<int64_t>(RoundDown(cpu.l1d.size / 2 / (nr * 4), 32), 64, kMaxAttentionBlockKeys);
}

bool ParseGemmBlocking(const char* text, int64_t mr, int64_t nr, GemmBlocking* b) {
  if (text == nullptr) return false;
  long long kc = 0, mc = 0, nc = 0;
  int used = 0;
  if (std::sscanf(text, "%lld,%lld,%lld%n", &kc, &mc, &nc, &used) != 3 || text[used] != '\0' ||
      kc <= 0 || mc <= 0 || nc <= 0 || std::strchr(text, ' ') != nullptr) {
    return false;
  }
  *b = Clamp(GemmBlocking{kc, mc, nc}, mr, nr);
  return true;
}

GemmBlocking ProcessGemmBlocking(int64_t mr, int64_t nr) {
  // A handful of tile geometries exist (one per compiled target); each is derived once.
  struct Entry {
    int64_t mr, nr;
    GemmBlocking b;
  };
  thread_local Entry last{0, 0, {}};  // the hot path (every GEMM call) takes no lock
  if (last.mr == mr && last.nr == nr) return last.b;
  static std::mutex mu;
  static Entry entries[8];
  static int used = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < used; ++i) {
    if (entries[i].mr == mr && entries[i].nr == nr) return (last = entries[i]).b;
  }
  GemmBlocking b;
  if (!ParseGemmBlocking(std::getenv("SIMDATTN_GEMM_BLOCKING"), mr, nr, &b)) {
    b = DeriveGemmBlocking(GetCpuInfo(), mr, nr);
  }
  last = Entry{mr, nr, b};
  if (used < 8) entries[used++] = last;
  return b;
}

std::string DescribeBlocking(int64_t mr, int64_t nr) {
  const CpuInfo& c = GetCpuInfo();
  const GemmBlocking b = ProcessGemmBlocking(mr, nr);
  GemmBlocking unused;
  char text[320];
  std::snprintf(text, sizeof(text),
                "L1d %lld KiB %lld-way, L2 %lld KiB %lld-way, L3 %lld KiB /%lld (%s)%s; "
                "%lldx%lld tile: KC %lld MC %lld NC %lld%s",
                static_cast<long long>(c.l1d.size >> 10), static_cast<long long>(c.l1d.ways),
                static_cast<long long>(c.l2.size >> 10), static_cast<long long>(c.l2.ways),
                static_cast<long long>(c.l3.size >> 10), static_cast<long long>(c.l3.sharing),
                c.cache_source, c.splits_512 ? ", 512-bit ops split" : "",
                static_cast<long long>(mr), static_cast<long long>(nr),
                static_cast<long long>(b.kc), static_cast<long long>(b.mc),
                static_cast<long long>(b.nc),
                ParseGemmBlocking(std::getenv("SIMDATTN_GEMM_BLOCKING"), mr, nr, &unused)
                    ? " (from SIMDATTN_GEMM_BLOCKING)" : "");
  return text;
}

}  // namespace simdattn

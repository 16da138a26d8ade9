// src/cpu.cc: what is read from the CPU (sysfs cache directories, CPUID fallback), the GEMM
// blocking derived from it by the BLIS analytical model, and the SIMDATTN_GEMM_BLOCKING override.
// The expected block sizes are worked out by hand from the model in the comments beside them
// (src/cpu.h states the model), not taken from the code's output.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "src/cpu.h"

namespace simdattn {
namespace {

CacheLevel Level(int64_t size, int64_t ways, int64_t sharing = 1) {
  CacheLevel c;
  c.size = size, c.ways = ways, c.line = 64, c.sharing = sharing;
  return c;
}

// AMD Zen 4 (EPYC Genoa): L1D 32 KiB 8-way, L2 1 MiB 8-way, L3 32 MiB per 8 cores.
CpuInfo Zen4() {
  CpuInfo c;
  c.l1d = Level(32 << 10, 8), c.l2 = Level(1 << 20, 8), c.l3 = Level(32 << 20, 8, 8);
  return c;
}

// Intel Sapphire Rapids: L1D 48 KiB 12-way, L2 2 MiB 16-way, L3 105 MiB per 56 cores.
CpuInfo Spr() {
  CpuInfo c;
  c.l1d = Level(48 << 10, 12), c.l2 = Level(2 << 20, 16), c.l3 = Level(105 << 20, 15, 56);
  return c;
}

TEST_CASE("BLIS model on Zen 4 with the AVX-512 8 x 32 tile") {
  const GemmBlocking b = DeriveGemmBlocking(Zen4(), 8, 32);
  // L1: 64 sets of 64 B; A ways = floor(7 / (1 + 32/8)) = 1 -> kc = 1 * 64 * 64 / (8 * 4) = 128,
  // raised to the measured floor 256.
  CHECK(b.kc == 256);
  // L2: ways of 128 KiB; B micro-panel 256 * 32 * 4 = 32 KiB -> 1 way; A gets 8 / 2 - 1 = 3:
  // mc = 3 * 131072 / (256 * 4) = 384.
  CHECK(b.mc == 384);
  // L3: 4 MiB per core, a quarter for B: nc = 1 MiB / 1 KiB = 1024.
  CHECK(b.nc == 1024);
}

TEST_CASE("BLIS model on Sapphire Rapids with the AVX-512 8 x 32 tile") {
  const GemmBlocking b = DeriveGemmBlocking(Spr(), 8, 32);
  // L1: 64 sets; A ways = floor(11 / 5) = 2 -> kc = 2 * 64 * 64 / 32 = 256.
  CHECK(b.kc == 256);
  // L2: ways of 128 KiB; B micro-panel 32 KiB -> 1 way; A 16 / 2 - 1 = 7 ways:
  // mc = 7 * 131072 / (256 * 4) = 896.
  CHECK(b.mc == 896);
  // L3: 105 MiB / 56 = 1966080 B per core, a quarter for B: 491520 / 1024 = 480 = 15 * 32.
  CHECK(b.nc == 480);
}

TEST_CASE("BLIS model with the AVX2 6 x 16 tile, a large L1, rounding and bounds") {
  const GemmBlocking b = DeriveGemmBlocking(Zen4(), 6, 16);
  // A ways = floor(7 / (1 + 16/6)) = floor(1.9) = 1 -> kc = 4096 / 24 = 170 -> floor 256.
  CHECK(b.kc == 256);
  // B micro-panel 256 * 16 * 4 = 16 KiB -> 1 way; mc = 3 * 131072 / 1024 = 384 = 64 * 6.
  CHECK(b.mc == 384);
  CHECK(b.nc == 1024);  // 1 MiB / 1 KiB, a multiple of 16

  CpuInfo big = Zen4();  // a 64 KiB 16-way L1: 64 sets, A ways = floor(15 / 5) = 3
  big.l1d = Level(64 << 10, 16);
  CHECK(DeriveGemmBlocking(big, 8, 32).kc == 384);  // 3 * 64 * 64 / 32
  big.l1d = Level(256 << 10, 16);  // 256 sets: 3 * 256 * 64 / 32 = 1536 -> clamped to 512
  CHECK(DeriveGemmBlocking(big, 8, 32).kc == 512);
  CpuInfo odd = Zen4();  // L2 of 12 ways of 112 KiB (1344 KiB): A 12/2 - 1 = 5 ways
  odd.l2 = Level(1344 << 10, 12);
  CHECK(DeriveGemmBlocking(odd, 6, 16).mc == 558);  // 5 * 114688 / 1024 = 560 -> 558 (x6)
}

TEST_CASE("attention key blocks from the L1D") {
  // Half of L1D for the keys x NR(32) P^T panel: 16 KiB / 128 B = 128 keys on Zen 4,
  // 24 KiB / 128 B = 192 on a 48 KiB L1D; a 16-float NR (AVX2) doubles it, up to 256.
  CHECK(AttentionBlockKeys(Zen4(), 32) == 128);
  CHECK(AttentionBlockKeys(Spr(), 32) == 192);
  CHECK(AttentionBlockKeys(Zen4(), 16) == 256);
  CHECK(AttentionBlockKeys(Spr(), 16) == 256);  // 384 clamped
  CpuInfo small;
  small.l1d = Level(8 << 10, 4);  // 4 KiB / 128 B = 32 -> at least 64
  CHECK(AttentionBlockKeys(small, 32) == 64);
  CHECK(AttentionBlockKeys(CpuInfo(), 32) == 128);  // unknown L1D
}

TEST_CASE("unknown caches give the defaults") {
  const GemmBlocking b = DeriveGemmBlocking(CpuInfo(), 8, 32);
  CHECK(b.kc == 256);
  CHECK(b.mc == 192);
  CHECK(b.nc == 2048);
  CpuInfo direct_mapped = Zen4();  // 1-way L1 or fully associative (ways 0): no set model
  direct_mapped.l1d.ways = 1;
  CHECK(DeriveGemmBlocking(direct_mapped, 8, 32).kc == 256);
}

TEST_CASE("SIMDATTN_GEMM_BLOCKING parsing") {
  GemmBlocking b{1, 2, 3};
  CHECK(ParseGemmBlocking("128,512,2048", 8, 32, &b));
  CHECK(b.kc == 128);
  CHECK(b.mc == 512);
  CHECK(b.nc == 2048);
  CHECK(ParseGemmBlocking("100,20,40", 6, 16, &b));  // rounded down to 96 (x16), 18 (x6), 32
  CHECK(b.kc == 96);
  CHECK(b.mc == 18);
  CHECK(b.nc == 32);
  CHECK(ParseGemmBlocking("1,1,1", 8, 32, &b));  // clamped up to 64, one tile, one panel
  CHECK(b.kc == 64);
  CHECK(b.mc == 8);
  CHECK(b.nc == 32);
  CHECK(ParseGemmBlocking("100000,100000,100000", 8, 32, &b));  // clamped down
  CHECK(b.kc == 512);
  CHECK(b.mc == 4096);
  CHECK(b.nc == 8192);
  const GemmBlocking before = b;
  for (const char* bad : {"", "abc", "128,512", "128,512,2048,1", "-128,512,2048", "0,512,2048",
                          "128, 512,2048", "128,512,2048x", "128;512;2048"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseGemmBlocking(bad, 8, 32, &b));
    CHECK(b.kc == before.kc);
  }
  CHECK_FALSE(ParseGemmBlocking(nullptr, 8, 32, &b));
}

void WriteFile(const std::string& path, const char* text) {
  std::ofstream(path) << text << "\n";
}

TEST_CASE("sysfs cache directories are read") {
  char dir_template[] = "/tmp/simdattn_cpu_XXXXXX";
  const char* root = mkdtemp(dir_template);
  REQUIRE(root != nullptr);
  const std::string r = root;
  struct Entry {
    const char *level, *type, *size, *ways, *shared;
  };
  const Entry entries[] = {{"1", "Data", "48K", "12", "0"},
                           {"1", "Instruction", "32K", "8", "0"},
                           {"2", "Unified", "2048K", "16", "0"},
                           {"3", "Unified", "107520K", "15", "0-55,112-167"}};
  for (int i = 0; i < 4; ++i) {
    const std::string d = r + "/index" + std::to_string(i);
    REQUIRE(mkdir(d.c_str(), 0700) == 0);
    WriteFile(d + "/level", entries[i].level);
    WriteFile(d + "/type", entries[i].type);
    WriteFile(d + "/size", entries[i].size);
    WriteFile(d + "/ways_of_associativity", entries[i].ways);
    WriteFile(d + "/coherency_line_size", "64");
    WriteFile(d + "/shared_cpu_list", entries[i].shared);
  }
  CpuInfo info;
  REQUIRE(ReadSysfsCaches(r, &info));
  CHECK(info.l1d.size == 48 << 10);  // the Data cache, not the Instruction one
  CHECK(info.l1d.ways == 12);
  CHECK(info.l1d.line == 64);
  CHECK(info.l2.size == 2 << 20);
  CHECK(info.l2.ways == 16);
  CHECK(info.l3.size == 107520 << 10);
  CHECK(info.l3.sharing == 112);
  CHECK(info.l1d.sharing == 1);
  CpuInfo none;
  CHECK_FALSE(ReadSysfsCaches(r + "/missing", &none));
  CHECK(none.l1d.size == 0);
  std::system(("rm -rf " + r).c_str());
}

TEST_CASE("this machine: caches read, blocking within bounds and fixed") {
  const CpuInfo& cpu = GetCpuInfo();
  MESSAGE(DescribeBlocking(8, 32));
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_LINESIZE) > 0 ? sysconf(_SC_LEVEL1_DCACHE_SIZE) : 0;
  if (l1 > 0 && std::string(cpu.cache_source) != "default") CHECK(cpu.l1d.size == l1);
  const GemmBlocking b = ProcessGemmBlocking(8, 32);
  CHECK(b.kc >= 64);
  CHECK(b.kc <= 512);
  CHECK(b.kc % 16 == 0);
  CHECK(b.mc % 8 == 0);
  CHECK(b.nc % 32 == 0);
  const GemmBlocking again = ProcessGemmBlocking(8, 32);
  CHECK(again.kc == b.kc);
  CHECK(again.mc == b.mc);
  CHECK(again.nc == b.nc);
}

}  // namespace
}  // namespace simdattn

// simdattn_sdpa_kvcache decode against simdattn_sdpa on the same shape in fp32, and against the
// time to read the cache's bytes once (membw/read, same run). Names:
// kvcache/<impl>/<case>, impl: sdpa_f32 (dense fp32 K/V, simdattn_sdpa), f32 / bf16 / f16
// (paged, block size 16, shuffled physical blocks), bf16_identity (block_table NULL).
// bytes_per_second counts the K/V bytes each implementation reads once (its dtype's size).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

// Llama-style decode: 32 query heads over 8 KV heads of 128, one query per sequence.
constexpr int64_t kHeads = 32, kKvHeads = 8, kD = 128;
constexpr int64_t kBlockSize = 16;  // vLLM's default page

struct KvCase {
  std::string name;
  std::vector<int64_t> seq_lens;
};

std::vector<KvCase> Cases() {
  std::vector<KvCase> cases = {{"b1_kv32768", {32768}}};
  KvCase spread{"b16_kv512-8192", {}};
  for (int64_t i = 0; i < 16; ++i) spread.seq_lens.push_back(512 + i * (8192 - 512) / 15);
  cases.push_back(spread);
  return cases;
}

// A paged cache of one dtype holding the case's sequences, or (dense) fp32 [batch, kv_heads,
// max_len, d] K/V for simdattn_sdpa.
struct KvOperands {
  KvCase c;
  int32_t dtype = SIMDATTN_DTYPE_F32;
  bool identity = false, dense = false;
  int64_t max_len = 0, max_blocks = 0, num_blocks = 0;
  std::vector<uint8_t> k, v;
  std::vector<int32_t> table;
  Buffer q, out;
  int64_t Bytes() const {
    const int64_t keys = std::accumulate(c.seq_lens.begin(), c.seq_lens.end(), int64_t{0});
    return 2 * keys * kKvHeads * kD * (dtype == SIMDATTN_DTYPE_F32 ? 4 : 2);
  }
};

KvOperands MakeOperands(const KvCase& c, int32_t dtype, bool identity, bool dense) {
  KvOperands o;
  o.c = c, o.dtype = dtype, o.identity = identity, o.dense = dense;
  const int64_t batch = static_cast<int64_t>(c.seq_lens.size());
  o.max_len = *std::max_element(c.seq_lens.begin(), c.seq_lens.end());
  o.max_blocks = (o.max_len + kBlockSize - 1) / kBlockSize;
  o.num_blocks = batch * o.max_blocks;
  const int64_t elems = dense ? batch * kKvHeads * o.max_len * kD
                              : o.num_blocks * kBlockSize * kKvHeads * kD;
  const size_t elem = dtype == SIMDATTN_DTYPE_F32 ? 4 : 2;
  std::mt19937 rng(7);
  for (std::vector<uint8_t>* buf : {&o.k, &o.v}) {
    buf->resize(static_cast<size_t>(elems) * elem);

    if (elem == 4) {
      const Buffer r = RandomBuffer(static_cast<size_t>(elems), buf == &o.k ? 1 : 2);
      std::memcpy(buf->data(), r.get(), buf->size());
      continue;
    }
    // Finite patterns of moderate size: bf16 exponent 120..127, f16 exponent 8..15.
    uint16_t* h = reinterpret_cast<uint16_t*>(buf->data());
    for (int64_t i = 0; i < elems; ++i) {
      const uint32_t x = rng();
      h[i] = static_cast<uint16_t>(dtype == SIMDATTN_DTYPE_BF16
                                       ? (x & 0x807F) | ((120 + (x >> 8) % 8) << 7)
                                       : (x & 0x83FF) | ((8 + (x >> 12) % 8) << 10));
    }
  }
  o.table.resize(static_cast<size_t>(o.num_blocks));
  std::iota(o.table.begin(), o.table.end(), 0);
  std::shuffle(o.table.begin(), o.table.end(), rng);
  o.q = RandomBuffer(static_cast<size_t>(batch * kHeads * kD), 3);
  o.out = ZeroBuffer(static_cast<size_t>(batch * kHeads * kD));
  return o;
}

simdattn_status Call(KvOperands& o) {
  const int64_t batch = static_cast<int64_t>(o.c.seq_lens.size());
  simdattn_sdpa_options opt;
  simdattn_sdpa_options_init(&opt);
  opt.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  if (o.dense) {
    opt.kv_heads = kKvHeads;
    opt.kv_lens = o.c.seq_lens.data();
    return simdattn_sdpa(o.q.get(), reinterpret_cast<const float*>(o.k.data()),
                         reinterpret_cast<const float*>(o.v.data()), o.out.get(), batch, kHeads, 1,
                         o.max_len, kD, kD, &opt);
  }
  simdattn_kv_cache cache;
  simdattn_kv_cache_init(&cache);
  cache.dtype = o.dtype, cache.k = o.k.data(), cache.v = o.v.data();
  cache.num_blocks = o.num_blocks, cache.block_size = kBlockSize, cache.kv_heads = kKvHeads;
  cache.block_table = o.identity ? nullptr : o.table.data();
  cache.max_blocks_per_seq = o.max_blocks, cache.seq_lens = o.c.seq_lens.data();
  return simdattn_sdpa_kvcache(o.q.get(), &cache, o.out.get(), batch, kHeads, 1, kD, kD, &opt);
}

void RunKv(benchmark::State& state, Lazy<KvOperands>& lazy) {
  KvOperands& o = lazy.Get();
  for (auto _ : state) {
    if (Call(o) != SIMDATTN_OK) {
      state.SkipWithError(simdattn_last_error());
      break;
    }
  }
  SetBytesAndItems(state, o.Bytes(), o.Bytes() / (o.dtype == SIMDATTN_DTYPE_F32 ? 4 : 2));
}

struct KvImpl {
  const char* name;
  int32_t dtype;
  bool identity, dense, decode_only;  // decode_only: the batch-1 case only
};
const KvImpl kImpls[] = {{"sdpa_f32", SIMDATTN_DTYPE_F32, false, true, true},
                         {"f32", SIMDATTN_DTYPE_F32, false, false, true},
                         {"bf16", SIMDATTN_DTYPE_BF16, false, false, false},
                         {"bf16_identity", SIMDATTN_DTYPE_BF16, true, false, true},
                         {"f16", SIMDATTN_DTYPE_F16, false, false, true}};

void RegisterAll(int threads) {
  auto pool = std::make_shared<BaselinePool>(threads);
  for (const KvCase& c : Cases()) {
    for (const KvImpl& impl : kImpls) {
      if (impl.decode_only && c.seq_lens.size() > 1) continue;
      auto lazy = std::make_shared<Lazy<KvOperands>>(
          [c, impl] { return MakeOperands(c, impl.dtype, impl.identity, impl.dense); });
      Register(BenchName("kvcache", impl.name, c.name),
               [lazy](benchmark::State& st) { RunKv(st, *lazy); });
    }
  }
  RegisterReadBandwidth(pool);
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

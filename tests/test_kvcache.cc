// simdattn_sdpa_kvcache: attention over a paged f32/bf16/f16 KV cache. Each case builds an
// SdpaRun (tests/sdpa_harness.h) whose dense K/V are replaced by values that the cache's dtype
// holds exactly (random 16-bit patterns, decoded here independently of the library with
// ldexp), stores them in pages (shuffled physical blocks, unused blocks and rows and table
// slots full of NaN and garbage that must never be read), calls simdattn_sdpa_kvcache with the
// run's q/out/lse and checks against the float64 reference over the widened values (the cache's
// rounding is the user's choice, not our error) with the harness's derived bounds, the padding
// and guards of out untouched and no NaN. Also: bitwise equality with simdattn_sdpa on the
// dense widened K/V (the same kernel behind a block table), determinism over thread counts,
// every compiled target, empty sizes and shared blocks. Bad inputs are in test_bad_input.cc.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "tests/sdpa_harness.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace simdattn_test {
namespace {

// Value of f16 bits, exactly (double holds every f16).
double F16Value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m != 0 ? std::nan("") : sign * HUGE_VAL;
  return sign * (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
}
float Bf16Value(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// A random finite 16-bit pattern of `dtype` with |value| in [2^-7, 2) (1 in 16 a subnormal f16
// or a zero of either sign), and its value.
struct Half {
  uint16_t bits;
  float value;
};
Half RandomHalf(int32_t dtype, std::mt19937_64& rng) {
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const uint16_t man = static_cast<uint16_t>(rng());
  if (dtype == SIMDATTN_DTYPE_BF16) {  // exponent 120..127 (bias 127), 7 mantissa bits
    const uint16_t b = static_cast<uint16_t>(sign | ((120 + rng() % 8) << 7) | (man & 0x7F));
    return {b, Bf16Value(b)};
  }
  const uint64_t kind = rng() % 16;
  const uint16_t e = kind == 0 ? 0 : static_cast<uint16_t>(8 + rng() % 8);  // bias 15
  const uint16_t b = static_cast<uint16_t>(sign | (e << 10) | (kind == 1 ? 0 : man & 0x3FF));
  return {b, static_cast<float>(F16Value(b))};
}

size_t ElemBytes(int32_t dtype) { return dtype == SIMDATTN_DTYPE_F32 ? 4 : 2; }

// NaN in the dtype (the filler of everything no sequence uses).
void FillNaN(int32_t dtype, std::vector<uint8_t>* buf) {
  const uint32_t f32 = 0x7FC00000u;
  const uint16_t h = dtype == SIMDATTN_DTYPE_BF16 ? 0x7FC0 : 0x7E00;
  for (size_t i = 0; i + ElemBytes(dtype) <= buf->size(); i += ElemBytes(dtype)) {
    if (dtype == SIMDATTN_DTYPE_F32) std::memcpy(buf->data() + i, &f32, 4);
    else std::memcpy(buf->data() + i, &h, 2);
  }
}

struct CacheSpec {
  int32_t dtype = SIMDATTN_DTYPE_BF16;
  int64_t block_size = 16;
  bool shuffled = true;      // false: block_table NULL (identity)
  int64_t spare_blocks = 3;  // blocks no sequence uses (NaN)
};

// The run's K/V (its kv_lens are the sequence lengths) as a paged cache; the run's dense K/V
// are overwritten with the cache's exact values so that run.Check compares with them.
class PagedCache {
 public:
  PagedCache(SdpaRun& run, const CacheSpec& s) : s_(s) {
    const SdpaCase& c = run.spec();
    const SdpaProblem p = run.Problem();
    const int64_t g_n = c.KvHeads(), bs = s.block_size;
    int64_t max_used = 0;
    for (int64_t len : c.kv_lens) max_used = std::max(max_used, (len + bs - 1) / bs);
    max_blocks_ = max_used + 1;  // one slot no sequence uses
    num_blocks_ = c.batch * max_blocks_ + (s.shuffled ? s.spare_blocks : 0);
    std::vector<int32_t> phys(static_cast<size_t>(num_blocks_));
    std::iota(phys.begin(), phys.end(), 0);
    std::mt19937_64 rng(c.seed * 7 + 5);
    if (s.shuffled) std::shuffle(phys.begin(), phys.end(), rng);
    table_.resize(static_cast<size_t>(c.batch * max_blocks_));
    for (int64_t b = 0; b < c.batch; ++b) {
      const int64_t used = (c.kv_lens[b] + bs - 1) / bs;
      for (int64_t n = 0; n < max_blocks_; ++n) {
        static const int32_t kGarbage[] = {-1, INT32_MAX, INT32_MIN, 1 << 30};
        int32_t& slot = table_[static_cast<size_t>(b * max_blocks_ + n)];
        slot = n < used || !s.shuffled ? phys[static_cast<size_t>(b * max_blocks_ + n)]
                                       : kGarbage[(b + n) % 4];
      }
    }
    Store(run.mutable_k(), p.k_s, c.d_k, g_n, c, rng, &k_);
    Store(run.mutable_v(), p.v_s, c.d_v, g_n, c, rng, &v_);
    simdattn_kv_cache_init(&cache_);
    cache_.dtype = s.dtype;
    cache_.k = k_.empty() ? nullptr : k_.data();
    cache_.v = v_.empty() ? nullptr : v_.data();
    cache_.num_blocks = num_blocks_, cache_.block_size = bs, cache_.kv_heads = g_n;
    cache_.block_table = s.shuffled ? table_.data() : nullptr;
    cache_.max_blocks_per_seq = max_blocks_;
    cache_.seq_lens = c.kv_lens.data();
  }
  const simdattn_kv_cache& get() const { return cache_; }
  int32_t* table() { return table_.data(); }

 private:
  // Writes key j of (b, g) at its paged place and the same value into the dense tensor.
  void Store(Strided& dense, const simdattn_strides& st, int64_t d, int64_t g_n, const SdpaCase& c,
             std::mt19937_64& rng, std::vector<uint8_t>* pages) {
    const size_t elem = ElemBytes(s_.dtype);
    pages->assign(static_cast<size_t>(num_blocks_ * s_.block_size * g_n * d) * elem, 0);
    FillNaN(s_.dtype, pages);
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t g = 0; g < g_n; ++g) {
        for (int64_t j = 0; j < c.kv_lens[b]; ++j) {
          const int64_t p = table_[static_cast<size_t>(b * max_blocks_ + j / s_.block_size)];
          const int64_t row = (p * s_.block_size + j % s_.block_size) * g_n + g;
          float* x = dense.data() + b * st.batch + g * st.head + j * st.seq;
          for (int64_t t = 0; t < d; ++t) {
            uint8_t* dst = pages->data() + static_cast<size_t>(row * d + t) * elem;
            if (s_.dtype == SIMDATTN_DTYPE_F32) {
              std::memcpy(dst, &x[t], 4);
              continue;
            }
            const Half h = RandomHalf(s_.dtype, rng);
            std::memcpy(dst, &h.bits, 2);
            x[t] = h.value;
          }
        }
      }
    }
  }

  CacheSpec s_;
  int64_t max_blocks_ = 0, num_blocks_ = 0;
  std::vector<int32_t> table_;
  std::vector<uint8_t> k_, v_;
  simdattn_kv_cache cache_{};
};

// The run's options as simdattn_sdpa_kvcache takes them: no kv_lens (the cache's seq_lens),
// no K/V strides.
simdattn_sdpa_options KvOptions(SdpaRun& run) {
  simdattn_sdpa_options o = run.Options();
  o.kv_lens = nullptr;
  o.k_strides = o.v_strides = simdattn_strides{0, 0, 0};
  return o;
}

simdattn_status CallKv(SdpaRun& run, const simdattn_kv_cache& cache) {
  const SdpaCase& c = run.spec();
  const simdattn_sdpa_options o = KvOptions(run);
  return simdattn_sdpa_kvcache(run.q(), &cache, run.mutable_out(), c.batch, c.heads, c.q_len,
                               c.d_k, c.d_v, &o);
}

std::string Describe(const SdpaCase& c, const CacheSpec& s) {
  std::ostringstream o;
  o << c.Describe() << " dtype=" << s.dtype << " block_size=" << s.block_size
    << (s.shuffled ? " shuffled" : " identity") << " seq_lens=";
  for (int64_t len : c.kv_lens) o << len << ",";
  return o.str();
}

// Worst |error| / bound of the cache's results per dtype, without and with the variants
// (window, softcap, ALiBi, sinks), for the closing notes (printed by the last test case).
WorstRatios& WorstOf(int32_t dtype, bool variants) {
  static WorstRatios worst[3][2];
  return worst[dtype][variants ? 1 : 0];
}
bool HasVariants(const SdpaCase& c) {
  return c.var.window || c.var.softcap != 0.0f || !c.var.alibi_slopes.empty() ||
         !c.var.sinks.empty();
}

// Runs case c through a paged cache; checks against the reference, and bitwise against
// simdattn_sdpa on the dense widened K/V where both run the same blocks (the table only moves
// rows; widening is exact).
void CheckCase(const SdpaCase& c, const CacheSpec& s) {
  INFO(Describe(c, s));
  SdpaRun run(c);
  PagedCache cache(run, s);
  CheckOk(run.Call());  // dense, kv_lens
  const std::vector<float> dense_out = run.out().buffer(), dense_lse = run.lse().buffer();
  run.ResetOutputs();
  CheckOk(CallKv(run, cache.get()));
  WorstRatios& all = WorstRatios::Get();
  const WorstRatios before = all;
  all.Reset();
  run.Check(RowsToCheck(c));  // (updates all)
  WorstOf(s.dtype, HasVariants(c)).Join(all);
  all.Join(before);
  // Where both take the same path: the few-keys path (kv_len <= one vector) reads dense K in
  // place and is not taken by a cache, a cache splits long sequences into 512-key ranges
  // (simdattn_sdpa: 2048, and only for few tasks) merged by LSE, and its decode (at most 8
  // columns per kv head) walks all kv heads of a range in blocks of its own size: a different
  // rounding each. Prefill chunks match bit for bit.
  const bool decode = c.q_len * (c.heads / c.KvHeads()) <= 8;
  if (!decode && c.kv_len > 16 && c.kv_len < 1024) {
    CheckBitwiseEqual(run.out().data(), dense_out.data(), dense_out.size(), "out vs simdattn_sdpa");
    CheckBitwiseEqual(run.lse().data(), dense_lse.data(), dense_lse.size(), "lse vs simdattn_sdpa");
  }
}

// A decode step of 5 sequences (lengths 0, 1, a block multiple, ragged), GQA 8 over 2.
SdpaCase DecodeCase(int64_t q_len, int32_t causal) {
  SdpaCase c;
  c.batch = 5, c.heads = 8, c.kv_heads = 2, c.q_len = q_len, c.d_k = 40, c.d_v = 24;
  c.kv_lens = {37, 0, 1, 34, 68};
  c.kv_len = 68;
  c.causal = causal;
  c.lse = true;
  return c;
}

TEST_CASE("every dtype, block size 1/16/17, identity and shuffled tables, decode") {
  for (int32_t dtype : {SIMDATTN_DTYPE_F32, SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16}) {
    for (int64_t bs : {1, 16, 17}) {
      for (bool shuffled : {false, true}) {
        CheckCase(DecodeCase(1, SIMDATTN_CAUSAL_BOTTOM_RIGHT), {dtype, bs, shuffled});
      }
    }
  }
  MESSAGE(WorstRatios::Get().Text());
}

TEST_CASE("q_len > 1: both causal alignments, no causal, q_len beyond a sequence's length") {
  for (int32_t dtype : {SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16}) {
    for (int32_t causal : {SIMDATTN_CAUSAL_NONE, SIMDATTN_CAUSAL_TOP_LEFT,
                           SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
      CheckCase(DecodeCase(5, causal), {dtype, 16, true});
      // A prefill chunk (many query columns: the register-tile path), BSHD with padding.
      SdpaCase c = DecodeCase(40, causal);
      c.layout = Layout::kBshd, c.in_pad = 3, c.out_pad = 2;
      CheckCase(c, {dtype, 17, true});
    }
  }
}

TEST_CASE("MQA, no grouping, d_v 0") {
  SdpaCase c = DecodeCase(3, SIMDATTN_CAUSAL_BOTTOM_RIGHT);
  c.kv_heads = 1;
  CheckCase(c, {SIMDATTN_DTYPE_BF16, 16, true});
  c.kv_heads = 0;  // = heads
  CheckCase(c, {SIMDATTN_DTYPE_F16, 5, true});
  c.d_v = 0;
  CheckCase(c, {SIMDATTN_DTYPE_F16, 5, true});
}

TEST_CASE("window, softcap, ALiBi and sinks through the cache") {
  SdpaCase c = DecodeCase(6, SIMDATTN_CAUSAL_BOTTOM_RIGHT);
  c.var.window = true, c.var.window_left = 20, c.var.window_right = 0;
  CheckCase(c, {SIMDATTN_DTYPE_BF16, 16, true});
  c.var = VariantSpec{};
  c.var.softcap = 3.0f;
  CheckCase(c, {SIMDATTN_DTYPE_F16, 16, true});
  c.var = VariantSpec{};
  c.var.sinks = {0.5f, -kInf, 2.0f, -1.0f, 0.0f, 1.0f, 3.0f, -3.0f};
  c.var.alibi_slopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.01f, 0.0f, -0.1f};
  CheckCase(c, {SIMDATTN_DTYPE_BF16, 17, true});
  MESSAGE(WorstRatios::Get().Text());
}

// Long sequences with few tasks: the keys are split into ranges merged by LSE.
SdpaCase LongDecode() {
  SdpaCase c = DecodeCase(1, SIMDATTN_CAUSAL_BOTTOM_RIGHT);
  c.batch = 1, c.d_k = c.d_v = 64, c.kv_lens = {9000}, c.kv_len = 9000;
  return c;
}

TEST_CASE("long decode: split key ranges, every dtype; ragged batches split too") {
  for (int32_t dtype : {SIMDATTN_DTYPE_F32, SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16}) {
    CheckCase(LongDecode(), {dtype, 16, true});
  }
  // Many tasks and sequences shorter than the longest (ranges past a sequence's end are empty),
  // q_len 3 with both alignments.
  SdpaCase c = LongDecode();
  c.batch = 3, c.q_len = 3, c.kv_lens = {1500, 0, 2100}, c.kv_len = 2100;
  CheckCase(c, {SIMDATTN_DTYPE_BF16, 16, true});
  c.causal = SIMDATTN_CAUSAL_TOP_LEFT;
  CheckCase(c, {SIMDATTN_DTYPE_F16, 17, true});
  // More kv heads than one range task takes (8): 8 + 4; the variants through split ranges
  // (the sinks join the first range only).
  SdpaCase m = LongDecode();
  m.heads = m.kv_heads = 12, m.kv_lens = {1100}, m.kv_len = 1100, m.q_len = 1;
  CheckCase(m, {SIMDATTN_DTYPE_BF16, 16, true});
  m.var.window = true, m.var.window_left = 700, m.var.window_right = 0;
  m.var.softcap = 2.0f;
  m.var.sinks.assign(12, 1.5f);
  m.var.sinks[3] = -kInf;
  m.var.alibi_slopes.assign(12, 0.01f);
  CheckCase(m, {SIMDATTN_DTYPE_F16, 16, true});
  // Without ALiBi decode stores its scores compactly (a vector holds several keys' columns).
  m.var.alibi_slopes.clear();
  CheckCase(m, {SIMDATTN_DTYPE_BF16, 16, true});
  CheckCase(m, {SIMDATTN_DTYPE_F32, 16, true});
}

// A short sequence with few tasks: split into ranges of at least 128 keys (520 keys: 4).
SdpaCase ShortSplitDecode() {
  SdpaCase c = LongDecode();
  c.kv_lens = {520}, c.kv_len = 520;
  return c;
}

TEST_CASE("short decode with few tasks: split key ranges, every dtype, variants") {
  for (int32_t dtype : {SIMDATTN_DTYPE_F32, SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16}) {
    CheckCase(ShortSplitDecode(), {dtype, 16, true});
  }
  SdpaCase c = ShortSplitDecode();
  // Queries 518 and 519 see keys from 218 and 219 on: the first of the 4 ranges (0-129) has
  // only the sink, the window starts inside the second.
  c.q_len = 2;
  c.var.window = true, c.var.window_left = 300, c.var.window_right = 0;
  c.var.sinks.assign(static_cast<size_t>(c.heads), 0.5f);
  CheckCase(c, {SIMDATTN_DTYPE_BF16, 17, true});
}

TEST_CASE("bitwise identical for 1, 2, 3, 7 and 16 threads") {
  for (SdpaCase c :
       {LongDecode(), ShortSplitDecode(), DecodeCase(40, SIMDATTN_CAUSAL_BOTTOM_RIGHT)}) {
    INFO(c.Describe());
    SdpaRun run(c);
    PagedCache cache(run, {SIMDATTN_DTYPE_BF16, 16, true});
    std::vector<float> first_out, first_lse;
    ForEachThreadCount({1, 2, 3, 7, 16}, [&](int32_t) {
      run.ResetOutputs();
      CheckOk(CallKv(run, cache.get()));
      if (first_out.empty()) {
        first_out = run.out().buffer(), first_lse = run.lse().buffer();
        return;
      }
      CheckBitwiseEqual(run.out().data(), first_out.data(), first_out.size(), "out");
      CheckBitwiseEqual(run.lse().data(), first_lse.data(), first_lse.size(), "lse");
    });
    simdattn_set_num_threads(0);
  }
}

TEST_CASE("every compiled target") {
  ForEachTarget([] {
    CheckCase(DecodeCase(3, SIMDATTN_CAUSAL_BOTTOM_RIGHT), {SIMDATTN_DTYPE_F16, 16, true});
    CheckCase(DecodeCase(1, SIMDATTN_CAUSAL_BOTTOM_RIGHT), {SIMDATTN_DTYPE_BF16, 7, true});
    // Rows that are not whole passes of the decode kernels (4 vectors, or 2 for more than 4
    // columns): d_k 72 and d_v 108 leave a tail of whole and partial vectors on every target
    // (4, 8 or 16 floats per vector); 4 and 8 columns.
    for (int64_t q_len : {1, 2}) {
      SdpaCase c = DecodeCase(q_len, SIMDATTN_CAUSAL_BOTTOM_RIGHT);
      c.d_k = 72, c.d_v = 108;
      CheckCase(c, {SIMDATTN_DTYPE_BF16, 16, true});
    }
  });
}

// Every 16-bit pattern as a value row through the decode kernel: 32 sequences of one key each
// (weight exp(0) / 1 = 1 exactly, so out = the widened V row), d_v 2048 (V of sequence b:
// patterns 2048 b ..), on every compiled target, in the default mode and under FTZ/DAZ (the
// widening must not flush f16 subnormals, which are normal floats; bf16 subnormals are float
// subnormals, which the mode flushes in any float arithmetic). Exact, except that -0 gives +0
// (0 + -0) and a NaN any NaN.
void CheckWideningThroughValues(int32_t dtype) {
  constexpr int64_t kBatch = 32, kDv = 2048;
  std::vector<uint16_t> v(kBatch * kDv);
  std::iota(v.begin(), v.end(), uint16_t{0});
  const float k = 0.0f, q = 0.0f;
  std::vector<float> qs(kBatch, q), ks(kBatch, k);
  std::vector<uint16_t> kh(kBatch, 0);
  const std::vector<int64_t> lens(kBatch, 1);
  simdattn_kv_cache cache;
  simdattn_kv_cache_init(&cache);
  cache.dtype = dtype, cache.k = kh.data(), cache.v = v.data(), cache.num_blocks = kBatch;
  cache.block_size = 1, cache.kv_heads = 1, cache.max_blocks_per_seq = 1;
  cache.seq_lens = lens.data();
  auto run = [&](bool flush) {
    std::vector<float> out(kBatch * kDv, -1.0f);
#if defined(__x86_64__) || defined(__i386__)
    const unsigned saved = _mm_getcsr();
    if (flush) _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#else
    if (flush) return out;
#endif
    const simdattn_status st =
        simdattn_sdpa_kvcache(qs.data(), &cache, out.data(), kBatch, 1, 1, 1, kDv, nullptr);
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(saved);
#endif
    CHECK(st == SIMDATTN_OK);
    return out;
  };
  ForEachThreadCount({1}, [&](int32_t) {  // (MXCSR is per thread)
    ForEachTarget([&] {
      for (bool flush : {false, true}) {
        INFO("FTZ/DAZ ", flush);
        const std::vector<float> out = run(flush);
        for (size_t i = 0; i < v.size(); ++i) {
          double want = dtype == SIMDATTN_DTYPE_BF16 ? Bf16Value(v[i]) : F16Value(v[i]);
          if (flush && std::fabs(want) < FLT_MIN) want = 0.0;  // (bf16: float subnormals)
          const bool ok = std::isnan(want) ? std::isnan(out[i]) : out[i] == want;
          if (!ok || (want == 0.0 && std::signbit(out[i]))) {
            FAIL_CHECK("pattern ", v[i], ": ", double{out[i]}, ", want ", want);
            break;
          }
        }
      }
    });
  });
}

TEST_CASE("every bf16 and f16 pattern widens exactly in the kernel, also under FTZ/DAZ") {
  CheckWideningThroughValues(SIMDATTN_DTYPE_BF16);
  CheckWideningThroughValues(SIMDATTN_DTYPE_F16);
}

TEST_CASE("blocks shared between sequences") {
  SdpaCase c = DecodeCase(2, SIMDATTN_CAUSAL_BOTTOM_RIGHT);
  c.batch = 2, c.kv_lens = {37, 37}, c.kv_len = 37;
  SdpaRun run(c);
  PagedCache cache(run, {SIMDATTN_DTYPE_BF16, 16, true});
  // Sequence 1 reads sequence 0's three blocks: its dense K/V become sequence 0's.
  const int64_t max_blocks = cache.get().max_blocks_per_seq;
  for (int64_t n = 0; n < 3; ++n) cache.table()[max_blocks + n] = cache.table()[n];
  const SdpaProblem p = run.Problem();
  for (Strided* t : {&run.mutable_k(), &run.mutable_v()}) {
    const simdattn_strides st = t == &run.mutable_k() ? p.k_s : p.v_s;
    const int64_t d = t == &run.mutable_k() ? c.d_k : c.d_v;
    for (int64_t g = 0; g < c.KvHeads(); ++g) {
      for (int64_t j = 0; j < 37; ++j) {
        const float* src = t->data() + g * st.head + j * st.seq;
        std::copy_n(src, d, t->data() + st.batch + g * st.head + j * st.seq);
      }
    }
  }
  CheckOk(CallKv(run, cache.get()));
  run.Check(RowsToCheck(c));
}

TEST_CASE("empty sizes: OK, nothing written; NULL buffers without elements") {
  simdattn_kv_cache cache;
  simdattn_kv_cache_init(&cache);
  CHECK(cache.struct_size == sizeof(simdattn_kv_cache));
  CHECK(cache.dtype == SIMDATTN_DTYPE_F32);
  CHECK(cache.k == nullptr);
  cache.block_size = 4, cache.kv_heads = 2;
  float out = Sentinel();
  // batch 0: seq_lens may be NULL.
  CheckOk(simdattn_sdpa_kvcache(nullptr, &cache, nullptr, 0, 4, 1, 8, 8, nullptr));
  int64_t lens[1] = {0};
  cache.seq_lens = lens;
  CheckOk(simdattn_sdpa_kvcache(nullptr, &cache, &out, 1, 0, 1, 8, 8, nullptr));
  CheckOk(simdattn_sdpa_kvcache(nullptr, &cache, &out, 1, 4, 0, 8, 8, nullptr));
  CHECK(std::isnan(out));
  // Every sequence empty: k and v are not read (NULL allowed); out 0, lse -inf.
  cache.num_blocks = 1, cache.max_blocks_per_seq = 1;
  std::vector<float> q(4 * 8, 1.0f), o(4 * 8, Sentinel()), lse(4, Sentinel());
  simdattn_sdpa_options opt;
  simdattn_sdpa_options_init(&opt);
  opt.lse = lse.data();
  CheckOk(simdattn_sdpa_kvcache(q.data(), &cache, o.data(), 1, 4, 1, 8, 8, &opt));
  for (float x : o) CHECK(x == 0.0f);
  for (float x : lse) CHECK(x == -kInf);
}

TEST_CASE("worst errors per dtype (runs last: the cases above fill them)") {
  const char* names[3] = {"f32", "bf16", "f16"};
  for (int32_t t = 0; t < 3; ++t) {
    for (bool variants : {false, true}) {
      const std::string line = std::string(names[t]) + (variants ? " with variants: " : ": ") +
                               WorstOf(t, variants).Text();
      MESSAGE(line);
    }
  }
}

}  // namespace
}  // namespace simdattn_test

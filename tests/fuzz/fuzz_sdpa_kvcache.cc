// libFuzzer target: simdattn_sdpa_kvcache with a fuzzed paged cache (dtype, block size, kv heads,
// number of blocks, block table — valid, out of range in used or unused slots, NULL — and
// seq_lens, valid or out of range), batch, heads, q_len, d_k, d_v, causal, window, softcap,
// sinks, lse and the forbidden options. Pages hold 16-bit patterns (or floats) from the input;
// everything no sequence uses is NaN. Checks: a documented status; the used blocks' validity
// decides OK vs BAD_SHAPE where the rest is valid; on error nothing written; on success inputs
// unchanged, guards intact, no NaN from finite inputs (so no unused row or block was read), and
// bitwise equality with simdattn_sdpa on the same K/V widened here (independently: bf16 by a
// shift, f16 by ldexp) into a dense tensor, when both take the blocked path (more keys than any
// target's vector has lanes); fuzz_sdpa checks simdattn_sdpa against the float64 reference.
#include <algorithm>

#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

namespace {

constexpr int64_t kMaxLanes = 16;  // floats per vector on the widest x86 target (AVX-512)

float Widen(int32_t dtype, const uint16_t* p) {
  const uint16_t h = *p;
  if (dtype == SIMDATTN_DTYPE_BF16) {
    const uint32_t b = uint32_t{h} << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  const int e = (h >> 10) & 31, m = h & 1023;
  const float sign = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 31) return m != 0 ? NAN : sign * INFINITY;
  return sign * static_cast<float>(e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
}

// A 16-bit pattern of a moderate value (|x| < 4), or a special when `specials`.
uint16_t HalfBits(FuzzedDataProvider& in, int32_t dtype, bool specials) {
  const uint16_t x = in.ConsumeIntegral<uint16_t>();
  if (specials && (x & 0xF) == 0xF) return x;  // anything: NaN, inf, huge, subnormal
  const uint16_t sign = x & 0x8000;
  return dtype == SIMDATTN_DTYPE_BF16
             ? static_cast<uint16_t>(sign | ((120 + (x >> 8) % 8) << 7) | (x & 0x7F))
             : static_cast<uint16_t>(sign | ((8 + (x >> 10) % 8) << 10) | (x & 0x3FF));
}

struct Cache {
  simdattn_kv_cache c{};
  std::vector<int32_t> table;
  std::vector<int64_t> lens;
  std::vector<uint16_t> k16, v16;  // 16-bit pages, or
  Guarded k32, v32;                // f32 pages
  bool used_valid = true;          // every block a sequence uses is in range
  bool lens_valid = true;          // every seq_lens[b] in [0, max_blocks_per_seq * block_size]
  int64_t max_len = 0;
};

// Pages of n elements of the cache's dtype, NaN everywhere (no sequence's key written yet).
void MakePages(Cache& x, int64_t n, bool is_v) {
  if (x.c.dtype == SIMDATTN_DTYPE_F32) {
    (is_v ? x.v32 : x.k32) = Guarded();
    Guarded& g = is_v ? x.v32 : x.k32;
    g.buf.assign(static_cast<size_t>(n) + 2 * kGuard, Sentinel());
    g.n = n;
    for (int64_t i = 0; i < n; ++i) g[i] = NAN;
  } else {
    (is_v ? x.v16 : x.k16).assign(static_cast<size_t>(std::max<int64_t>(n, 1)),
                                  x.c.dtype == SIMDATTN_DTYPE_BF16 ? 0x7FC0 : 0x7E00);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const bool specials = flags & 1, use_lse = flags & 2, null_table = flags & 4;
  const int64_t batch = in.ConsumeIntegralInRange<int64_t>(0, 4);
  const int64_t heads = in.ConsumeIntegralInRange<int64_t>(0, 4);
  const int64_t q_len = in.ConsumeIntegralInRange<int64_t>(0, 9);
  const int64_t d_k = in.ConsumeIntegralInRange<int64_t>(0, 20), d_v = in.ConsumeIntegralInRange<int64_t>(0, 20);
  Cache x;
  simdattn_kv_cache_init(&x.c);
  const uint8_t dt = in.ConsumeIntegral<uint8_t>();
  x.c.dtype = dt < 250 ? dt % 3 : (dt % 2 ? 3 : -1);
  x.c.block_size = in.ConsumeIntegralInRange<int64_t>(flags & 8 ? -1 : 1, 6);
  const uint8_t kh = in.ConsumeIntegral<uint8_t>();
  x.c.kv_heads = kh < 240 && heads > 0 ? std::max<int64_t>(1, heads >> (kh % 3)) : kh % 4;
  x.c.max_blocks_per_seq = in.ConsumeIntegralInRange<int64_t>(flags & 16 ? -1 : 0, 10);
  const int64_t per_seq = std::max<int64_t>(x.c.max_blocks_per_seq, 0);
  x.c.num_blocks = batch * per_seq + in.ConsumeIntegralInRange<int64_t>(flags & 32 ? -2 : 0, 3);
  const int64_t bs = std::max<int64_t>(x.c.block_size, 1), cap = per_seq * bs;
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t l = in.ConsumeIntegral<uint8_t>();
    x.lens.push_back(l < 250 ? l % (cap + 1) : l % 2 ? cap + 1 : -1);
  }
  // A permutation of the blocks, then maybe one entry out of range (in a used or unused slot).
  x.table.resize(static_cast<size_t>(batch * per_seq));
  for (size_t i = 0; i < x.table.size(); ++i) x.table[i] = static_cast<int32_t>(i);
  for (size_t i = x.table.size(); i > 1; --i) {
    std::swap(x.table[i - 1], x.table[in.ConsumeIntegralInRange<size_t>(0, i - 1)]);
  }
  if (!x.table.empty() && flags & 64) {
    x.table[in.ConsumeIntegralInRange<size_t>(0, x.table.size() - 1)] =
        in.ConsumeBool() ? -1 : static_cast<int32_t>(x.c.num_blocks + in.ConsumeIntegral<uint8_t>());
  }
  x.c.block_table = null_table ? nullptr : x.table.data();
  x.c.seq_lens = batch > 0 ? x.lens.data() : nullptr;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = x.lens[b];
    if (len < 0 || len > cap) {
      x.lens_valid = false;
      continue;
    }
    x.max_len = std::max(x.max_len, len);
    for (int64_t n = 0; n < (len + bs - 1) / bs; ++n) {
      const int64_t p = null_table ? b * per_seq + n : x.table[b * per_seq + n];
      x.used_valid = x.used_valid && p >= 0 && p < x.c.num_blocks;
    }
  }
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.causal = in.ConsumeIntegralInRange<int32_t>(0, 2);
  const uint8_t vf = in.ConsumeIntegral<uint8_t>();
  if (vf & 1) o.window = 1, o.window_left = vf % 7, o.window_right = vf % 3;
  if (vf & 2) o.softcap = 0.5f + (vf >> 4);
  std::vector<float> sinks(static_cast<size_t>(heads), vf & 8 ? -INFINITY : 0.75f);
  if (vf & 4 && heads > 0) o.sinks = sinks.data();
  if (vf == 255) o.kv_lens = x.lens.data();  // forbidden: must fail
  const bool valid_shape = x.c.dtype >= 0 && x.c.dtype <= 2 && x.c.block_size >= 1 &&
                           x.c.kv_heads >= 1 && heads % x.c.kv_heads == 0 &&
                           x.c.num_blocks >= 0 && x.c.max_blocks_per_seq >= 0 && d_k >= 1 &&
                           vf != 255;
  const int64_t g_n = std::max<int64_t>(x.c.kv_heads, 1);
  const int64_t rows = std::max<int64_t>(x.c.num_blocks, 0) * bs * g_n;
  if (x.c.dtype >= 0 && x.c.dtype <= 2) {
    MakePages(x, rows * d_k, false);
    MakePages(x, rows * d_v, true);
  }
  // Keys of the sequences (each block belongs to one sequence: the table is a permutation).
  std::vector<float> dk(static_cast<size_t>(std::max<int64_t>(batch * g_n * x.max_len * d_k, 1)), NAN);
  std::vector<float> dv(static_cast<size_t>(std::max<int64_t>(batch * g_n * x.max_len * d_v, 1)), NAN);
  const bool fill = valid_shape && x.used_valid && x.lens_valid;
  for (int64_t b = 0; fill && b < batch; ++b) {
    for (int64_t j = 0; x.lens[b] >= 0 && x.lens[b] <= cap && j < x.lens[b]; ++j) {
      const int64_t p = null_table ? b * per_seq + j / bs : x.table[b * per_seq + j / bs];
      for (int64_t g = 0; g < g_n; ++g) {
        const int64_t row = (p * bs + j % bs) * g_n + g;
        for (int64_t t = 0; t < d_k + d_v; ++t) {
          const bool is_v = t >= d_k;
          const int64_t at = row * (is_v ? d_v : d_k) + (is_v ? t - d_k : t);
          if (x.c.dtype == SIMDATTN_DTYPE_F32) (is_v ? x.v32 : x.k32)[at] = Value(in, specials);
          else (is_v ? x.v16 : x.k16)[static_cast<size_t>(at)] = HalfBits(in, x.c.dtype, specials);
        }
      }
    }
  }
  if (x.c.dtype == SIMDATTN_DTYPE_F32) {
    x.c.k = x.k32.n > 0 ? x.k32.data() : nullptr, x.c.v = x.v32.n > 0 ? x.v32.data() : nullptr;
  } else if (x.c.dtype >= 0 && x.c.dtype <= 2) {
    x.c.k = rows * d_k > 0 ? x.k16.data() : nullptr, x.c.v = rows * d_v > 0 ? x.v16.data() : nullptr;
  }
  Guarded q(batch * heads * q_len * d_k, in, specials);
  Guarded out(batch * heads * q_len * d_v, in, false), lse(use_lse ? batch * heads * q_len : 0, in, false);
  if (use_lse) o.lse = lse.data();
  const Guarded q0 = q, out0 = out, lse0 = lse, k0 = x.k32, v0 = x.v32;
  const std::vector<uint16_t> k16 = x.k16, v16 = x.v16;
  const simdattn_status s = simdattn_sdpa_kvcache(q.data(), &x.c, out.data(), batch, heads, q_len,
                                                  d_k, d_v, &o);
  CheckStatus(s);
  FUZZ_CHECK(q.GuardsIntact() && out.GuardsIntact() && lse.GuardsIntact(), "guard zone written");
  FUZZ_CHECK(q.Same(q0) && x.k32.Same(k0) && x.v32.Same(v0) && x.k16 == k16 && x.v16 == v16,
             "an input changed");
  const bool empty = batch == 0 || heads == 0 || q_len == 0;
  // Everything else valid (separate buffers: no overlap, no NULL with elements): the lengths and
  // the used blocks decide.
  if (valid_shape && !empty) {
    const simdattn_status want = x.lens_valid && x.used_valid ? SIMDATTN_OK : SIMDATTN_ERR_BAD_SHAPE;
    FUZZ_CHECK(s == want, "status %s, want %s (lengths %s, used blocks %s)",
               simdattn_status_name(s), simdattn_status_name(want),
               x.lens_valid ? "valid" : "invalid", x.used_valid ? "valid" : "invalid");
  }
  if (s != SIMDATTN_OK || empty) {
    FUZZ_CHECK(out.Same(out0) && lse.Same(lse0), "a failed or empty call (%s) wrote",
               simdattn_status_name(s));
    return 0;
  }
  FUZZ_CHECK(x.used_valid, "OK with a used block out of range");
  for (int64_t i = 0; !specials && i < out.n; ++i) {
    FUZZ_CHECK(!std::isnan(out[i]), "NaN in out[%lld] from finite keys: an unused row was read",
               static_cast<long long>(i));
  }
  if (x.max_len <= kMaxLanes || o.kv_lens != nullptr) return 0;
  // The dense widened K/V [batch, g_n, max_len, d] and simdattn_sdpa on them.
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < x.lens[b]; ++j) {
      const int64_t p = null_table ? b * per_seq + j / bs : x.table[b * per_seq + j / bs];
      for (int64_t g = 0; g < g_n; ++g) {
        const int64_t row = (p * bs + j % bs) * g_n + g, drow = (b * g_n + g) * x.max_len + j;
        for (int64_t t = 0; t < d_k; ++t) {
          dk[drow * d_k + t] = x.c.dtype == SIMDATTN_DTYPE_F32 ? x.k32[row * d_k + t]
                                                               : Widen(x.c.dtype, &x.k16[row * d_k + t]);
        }
        for (int64_t t = 0; t < d_v; ++t) {
          dv[drow * d_v + t] = x.c.dtype == SIMDATTN_DTYPE_F32 ? x.v32[row * d_v + t]
                                                               : Widen(x.c.dtype, &x.v16[row * d_v + t]);
        }
      }
    }
  }
  std::vector<float> want(static_cast<size_t>(std::max<int64_t>(out.n, 1)));
  std::vector<float> want_lse(static_cast<size_t>(batch * heads * q_len));
  simdattn_sdpa_options od = o;
  od.kv_heads = g_n, od.kv_lens = x.lens.data(), od.lse = want_lse.data();
  FUZZ_CHECK(simdattn_sdpa(q.data(), dk.data(), dv.data(), want.data(), batch, heads, q_len,
                           x.max_len, d_k, d_v, &od) == SIMDATTN_OK, "the dense call failed");
  for (int64_t i = 0; i < out.n; ++i) {
    FUZZ_CHECK(Bits(out[i]) == Bits(want[static_cast<size_t>(i)]) ||
                   (std::isnan(out[i]) && std::isnan(want[static_cast<size_t>(i)])),
               "out[%lld] = %.9g, simdattn_sdpa on the dense K/V gives %.9g",
               static_cast<long long>(i), double{out[i]}, double{want[static_cast<size_t>(i)]});
  }
  for (int64_t i = 0; use_lse && i < lse.n; ++i) {
    FUZZ_CHECK(Bits(lse[i]) == Bits(want_lse[static_cast<size_t>(i)]) ||
                   (std::isnan(lse[i]) && std::isnan(want_lse[static_cast<size_t>(i)])),
               "lse[%lld] = %.9g vs %.9g", static_cast<long long>(i), double{lse[i]},
               double{want_lse[static_cast<size_t>(i)]});
  }
  return 0;
}

// libFuzzer target: simdattn_sdpa_varlen with fuzzed batch, heads, kv_heads, d_k, d_v,
// cu_seqlens (valid, decreasing, edge values), token/head strides (packed, padded, edge),
// causal, the 0.2 variants (window and huge sides, softcap, ALiBi slopes, sinks), lse and the
// forbidden options. Checks: a documented status; on error nothing written; on success inputs
// unchanged, guards intact, every float of out's buffer that is not an element unchanged, no
// NaN from finite inputs, and each sequence bitwise equal to simdattn_sdpa on that sequence
// alone (given as a batch of one padded with NaN keys that kv_lens hides, so both calls take the
// same path; fuzz_sdpa checks simdattn_sdpa against the float64 reference).
#include <algorithm>

#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

namespace {

struct Call {
  int64_t batch = 0, heads = 0, d_k = 0, d_v = 0;
  std::vector<int64_t> cu_q, cu_kv;
  simdattn_sdpa_options o{};
  std::vector<float> slopes, sinks;
};

// cu_seqlens of batch + 1 entries: mostly valid, sometimes decreasing (negative, INT64_MIN, one
// less). No huge valid lengths: with a token stride of 0 they are valid calls of unbounded work
// (huge extents are covered by the bad-input table).
std::vector<int64_t> Cu(FuzzedDataProvider& in, int64_t batch, int64_t max_len) {
  std::vector<int64_t> cu(static_cast<size_t>(batch) + 1, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t x = in.ConsumeIntegral<uint8_t>();
    cu[b + 1] = x < 248 ? SatAdd(cu[b], x % (max_len + 1))
                : x < 252 ? SatAdd(cu[b], -1) : x < 254 ? -1 : INT64_MIN;
  }
  if (in.ConsumeIntegral<uint8_t>() >= 250) cu[0] = 1;
  return cu;
}

// Token strides {0, head, seq} of a [tokens, heads, d] tensor: packed, padded, or edge.
simdattn_strides TokenStrides(FuzzedDataProvider& in, int64_t heads, int64_t d) {
  const uint8_t mode = in.ConsumeIntegral<uint8_t>();
  if (mode < 150 || heads > 64 || d > 64) return {0, 0, 0};
  const int64_t h = std::max<int64_t>(heads, 1), dd = std::max<int64_t>(d, 1);
  if (mode < 230) return {0, dd + mode % 3, h * (dd + mode % 3) + mode % 5};
  return {Size(in, 8), Size(in, 100), Size(in, 300)};
}

// Elements spanned by `tokens` rows of `heads` heads of `inner` floats; -1 on overflow.
int64_t TokenExtent(int64_t tokens, int64_t heads, const simdattn_strides& s, int64_t inner) {
  if (tokens < 0 || heads < 0 || inner < 0 || s.head < 0 || s.seq < 0) return -1;
  if (tokens == 0 || heads == 0 || inner == 0) return 0;
  return SatAdd(SatAdd(SatMul(tokens - 1, s.seq), SatMul(heads - 1, s.head)), inner);
}

simdattn_strides Packed(const simdattn_strides& s, int64_t heads, int64_t d) {
  return s.seq == 0 && s.head == 0 ? simdattn_strides{0, d, SatMul(heads, d)} : s;
}

// Sequence b of a successful call against simdattn_sdpa on it alone (see the file comment).
void CheckSequence(const Call& c, int64_t b, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, int64_t kv_heads) {
  const int64_t ql = c.cu_q[b + 1] - c.cu_q[b], kl = c.cu_kv[b + 1] - c.cu_kv[b];
  int64_t kv_max = 0;
  for (int64_t i = 0; i < c.batch; ++i) kv_max = std::max(kv_max, c.cu_kv[i + 1] - c.cu_kv[i]);
  if (ql == 0) return;
  const simdattn_strides qs = Packed(c.o.q_strides, c.heads, c.d_k);
  const simdattn_strides ks = Packed(c.o.k_strides, kv_heads, c.d_k);
  const simdattn_strides vs = Packed(c.o.v_strides, kv_heads, c.d_v);
  const simdattn_strides os = Packed(c.o.out_strides, c.heads, c.d_v);
  std::vector<float> kp(static_cast<size_t>(std::max<int64_t>(TokenExtent(kv_max, kv_heads, ks, c.d_k), 1)),
                        NAN);
  std::vector<float> vp(static_cast<size_t>(std::max<int64_t>(TokenExtent(kv_max, kv_heads, vs, c.d_v), 1)),
                        NAN);
  const int64_t kn = TokenExtent(kl, kv_heads, ks, c.d_k), vn = TokenExtent(kl, kv_heads, vs, c.d_v);
  // Without elements (no keys, or d 0 with a huge stride) no address into k or v is formed.
  if (kn > 0) std::copy_n(k + c.cu_kv[b] * ks.seq, kn, kp.begin());
  if (vn > 0) std::copy_n(v + c.cu_kv[b] * vs.seq, vn, vp.begin());
  const int64_t on = TokenExtent(ql, c.heads, os, c.d_v);
  std::vector<float> want(static_cast<size_t>(std::max<int64_t>(on, 1)));
  std::vector<float> want_lse(static_cast<size_t>(ql * c.heads));
  simdattn_sdpa_options o = c.o;
  o.struct_size = sizeof(o);
  o.q_strides = {0, qs.head, qs.seq}, o.k_strides = {0, ks.head, ks.seq};
  o.v_strides = {0, vs.head, vs.seq}, o.out_strides = {0, os.head, os.seq};
  o.kv_lens = &kl;
  o.lse = want_lse.data();
  const simdattn_status s = simdattn_sdpa(q + c.cu_q[b] * qs.seq, kp.data(), vp.data(), want.data(),
                                          1, c.heads, ql, kv_max, c.d_k, c.d_v, &o);
  FUZZ_CHECK(s == SIMDATTN_OK, "the one-sequence call failed");
  for (int64_t h = 0; h < c.heads; ++h) {
    for (int64_t i = 0; i < ql; ++i) {
      // Without elements (d_v 0) out's strides are never used: no row address is formed.
      const float* got = c.d_v > 0 ? out + (c.cu_q[b] + i) * os.seq + h * os.head : nullptr;
      const float* w = c.d_v > 0 ? want.data() + i * os.seq + h * os.head : nullptr;
      for (int64_t x = 0; x < c.d_v; ++x) {
        FUZZ_CHECK(Bits(got[x]) == Bits(w[x]), "sequence %lld head %lld query %lld: out %g vs %g",
                   (long long)b, (long long)h, (long long)i, double{got[x]}, double{w[x]});
      }
      if (lse != nullptr) {
        const float l = lse[(c.cu_q[b] + i) * c.heads + h], lw = want_lse[h * ql + i];
        FUZZ_CHECK(Bits(l) == Bits(lw), "lse %g vs %g", double{l}, double{lw});
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const bool specials = flags & 1, use_lse = flags & 2;
  Call c;
  c.batch = Size(in, 5), c.heads = Size(in, 4), c.d_k = Size(in, 20), c.d_v = Size(in, 20);
  simdattn_sdpa_options_init(&c.o);
  const uint8_t kh = in.ConsumeIntegral<uint8_t>();
  c.o.kv_heads = kh < 128 ? 0 : kh < 240 ? (c.heads > 0 ? std::max<int64_t>(1, c.heads >> (kh % 3)) : 1)
                                          : Size(in, 8);
  c.o.causal = in.ConsumeIntegralInRange<int32_t>(-1, 3);
  const uint8_t vf = in.ConsumeIntegral<uint8_t>();
  if (vf & 1) {
    c.o.window = vf >= 250 ? 2 : 1;
    c.o.window_left = in.ConsumeBool() ? Size(in, 40) : in.ConsumeIntegralInRange<int64_t>(0, 8);
    c.o.window_right = in.ConsumeBool() ? Size(in, 40) : in.ConsumeIntegralInRange<int64_t>(0, 8);
  }
  if (vf & 2) c.o.softcap = vf >= 240 ? Value(in, true) : 0.5f + (vf >> 4);
  const int64_t per_head = c.heads > 0 && c.heads <= 64 ? c.heads : 0;
  if (vf & 4 && per_head > 0) {
    for (int64_t h = 0; h < per_head; ++h) c.slopes.push_back(Value(in, specials) / 4.0f);
    c.o.alibi_slopes = c.slopes.data();
  }
  if (vf & 8 && per_head > 0) {
    for (int64_t h = 0; h < per_head; ++h) {
      c.sinks.push_back(in.ConsumeIntegral<uint8_t>() >= 200 ? -INFINITY : Value(in, specials));
    }
    c.o.sinks = c.sinks.data();
  }
  if (vf & 16) c.o.kv_lens = reinterpret_cast<const int64_t*>(&c);  // forbidden: must fail
  const int64_t kv_heads = c.o.kv_heads == 0 ? c.heads : c.o.kv_heads;
  const int64_t batch_cu = c.batch >= 0 && c.batch <= 64 ? c.batch : 0;
  c.cu_q = Cu(in, batch_cu, 12);
  c.cu_kv = Cu(in, batch_cu, 24);
  c.o.q_strides = TokenStrides(in, c.heads, c.d_k);
  c.o.k_strides = TokenStrides(in, kv_heads, c.d_k);
  c.o.v_strides = TokenStrides(in, kv_heads, c.d_v);
  c.o.out_strides = TokenStrides(in, c.heads, c.d_v);
  const int64_t tq = c.cu_q.back(), tkv = c.cu_kv.back();
  const int64_t nq = Allocatable(TokenExtent(tq, c.heads, Packed(c.o.q_strides, c.heads, c.d_k), c.d_k));
  const int64_t nk = Allocatable(TokenExtent(tkv, kv_heads, Packed(c.o.k_strides, kv_heads, c.d_k), c.d_k));
  const int64_t nv = Allocatable(TokenExtent(tkv, kv_heads, Packed(c.o.v_strides, kv_heads, c.d_v), c.d_v));
  const int64_t no = Allocatable(TokenExtent(tq, c.heads, Packed(c.o.out_strides, c.heads, c.d_v), c.d_v));
  const int64_t nl = Allocatable(Product({tq, c.heads}));
  Guarded q = nq >= 0 ? Guarded(nq, in, specials) : Guarded();
  Guarded k = nk >= 0 ? Guarded(nk, in, specials) : Guarded();
  Guarded v = nv >= 0 ? Guarded(nv, in, specials) : Guarded();
  Guarded out = no >= 0 ? Guarded(no, in, false) : Guarded();
  Guarded lse = use_lse && nl >= 0 ? Guarded(nl, in, false) : Guarded();
  if (use_lse) c.o.lse = nl >= 0 ? lse.data() : nullptr;
  const Guarded q0 = q, k0 = k, v0 = v, out0 = out, lse0 = lse;
  const std::vector<int64_t> cu_q0 = c.cu_q, cu_kv0 = c.cu_kv;
  const simdattn_status s = simdattn_sdpa_varlen(
      nq >= 0 ? q.data() : nullptr, nk >= 0 ? k.data() : nullptr, nv >= 0 ? v.data() : nullptr,
      no >= 0 ? out.data() : nullptr, c.batch, c.heads, batch_cu == c.batch ? c.cu_q.data() : nullptr,
      batch_cu == c.batch ? c.cu_kv.data() : nullptr, c.d_k, c.d_v, &c.o);
  CheckStatus(s);
  FUZZ_CHECK(q.GuardsIntact() && k.GuardsIntact() && v.GuardsIntact() && out.GuardsIntact() &&
                 lse.GuardsIntact(), "guard zone written");
  FUZZ_CHECK(q.Same(q0) && k.Same(k0) && v.Same(v0) && c.cu_q == cu_q0 && c.cu_kv == cu_kv0,
             "an input changed");
  if (s != SIMDATTN_OK) {
    FUZZ_CHECK(out.Same(out0) && lse.Same(lse0), "a failed call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  if (c.batch == 0 || c.heads == 0 || tq == 0) {
    FUZZ_CHECK(out.Same(out0) && lse.Same(lse0), "an empty call wrote");
    return 0;
  }
  // Elements of out written, nothing else; no NaN from finite inputs.
  const simdattn_strides os = Packed(c.o.out_strides, c.heads, c.d_v);
  std::vector<char> element(static_cast<size_t>(std::max<int64_t>(no, 0)), 0);
  for (int64_t t = 0; t < tq; ++t) {
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int64_t x = 0; x < c.d_v; ++x) {
        const int64_t at = t * os.seq + h * os.head + x;
        element[at] = 1;
        FUZZ_CHECK(specials || !std::isnan(out[at]), "NaN in out from finite inputs");
      }
    }
  }
  for (int64_t i = 0; i < no; ++i) {
    FUZZ_CHECK(element[i] || Bits(out[i]) == Bits(out0.buf[kGuard + i]), "padding of out written");
  }
  if (Product({tq, c.heads, 24, c.d_k + c.d_v + 1}) > 100000) return 0;
  for (int64_t b = 0; b < c.batch; ++b) {
    CheckSequence(c, b, q.data(), k.data(), v.data(), out.data(), use_lse ? lse.data() : nullptr,
                  kv_heads);
  }
  return 0;
}

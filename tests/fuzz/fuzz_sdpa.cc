// libFuzzer target: simdattn_sdpa with every options field (struct_size, including the partial
// 0.2 layouts with garbage after them, scale, causal, kv_heads, mask and its strides, kv_lens,
// q/k/v/out strides, lse, weights, and the 0.2 variants: window and its sides up to INT64_MAX,
// softcap, ALiBi slopes, sinks). Checks: a documented
// status; on error nothing written; on success inputs unchanged, every float of out's buffer that
// is not an element of out unchanged, guards intact, and for small calls out, lse and weights
// within the derived float32 bounds of the float64 reference (tests/sdpa_reference.h), no NaN.
#include <algorithm>
#include <cfloat>
#include <cstddef>

#include "tests/fuzz/fuzz_common.h"
#include "tests/sdpa_reference.h"

using namespace fuzz;

namespace {

// Σ (size_i - 1) stride_i + inner, 0 if any size or inner is 0, -1 on overflow or negatives.
int64_t Extent4(const int64_t sizes[3], const simdattn_strides& s, int64_t inner) {
  const int64_t st[3] = {s.batch, s.head, s.seq};
  for (int i = 0; i < 3; ++i) {
    if (sizes[i] < 0 || st[i] < 0) return -1;
  }
  if (inner < 0) return -1;
  if (inner == 0 || sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0) return 0;
  int64_t total = inner, t;
  for (int i = 0; i < 3; ++i) {
    if (__builtin_mul_overflow(sizes[i] - 1, st[i], &t) || __builtin_add_overflow(total, t, &total)) {
      return -1;
    }
  }
  return total;
}

simdattn_strides Resolve(simdattn_strides s, int64_t heads, int64_t seq, int64_t inner) {
  if (s.batch == 0 && s.head == 0 && s.seq == 0) {
    int64_t h = 0, b = 0;
    if (__builtin_mul_overflow(seq, inner, &h) || __builtin_mul_overflow(heads, h, &b)) {
      return {INT64_MAX, INT64_MAX, inner};
    }
    return {b, h, inner};
  }
  return s;
}

// Strides of a [batch, heads, seq, inner] tensor: contiguous (all zero), BSHD, padded or edge.
simdattn_strides Strides(FuzzedDataProvider& in, int64_t heads, int64_t seq, int64_t inner) {
  const uint8_t mode = in.ConsumeIntegral<uint8_t>();
  const int64_t h = std::max<int64_t>(heads, 1), l = std::max<int64_t>(seq, 1);
  const int64_t d = std::max<int64_t>(inner, 1);
  if (mode < 140 || heads > 64 || seq > 64 || inner > 64) return {0, 0, 0};
  if (mode < 180) return {l * h * d, d, h * d};  // BSHD
  if (mode < 220) {
    const int64_t pad = mode % 5;
    return {h * l * (d + pad) + pad, l * (d + pad), d + pad};
  }
  return {Size(in, 300), Size(in, 100), Size(in, 40)};
}

// A window side: small, sequence-sized, huge (up to INT64_MAX) or negative (invalid).
int64_t Side(FuzzedDataProvider& in) {
  const uint8_t b = in.ConsumeIntegral<uint8_t>();
  if (b < 120) return b % 9;
  if (b < 170) return Size(in, 60);
  if (b < 200) return INT64_MAX - b % 2;
  if (b < 240) return int64_t{1} << (32 + b % 30);
  return b % 2 ? -1 : INT64_MIN;
}

// The 0.2 fields that a reader of only the first struct_size bytes sees (simdattn.h: a field
// is read only if it ends at or before struct_size; missing ones read as 0 / NULL).
simdattn_sdpa_options AsRead(const simdattn_sdpa_options& o) {
  simdattn_sdpa_options r = o;
  auto missing = [&](size_t offset, size_t size) { return offset + size > o.struct_size; };
#define SIMDATTN_FUZZ_FIELD(f) offsetof(simdattn_sdpa_options, f), sizeof(o.f)
  if (missing(SIMDATTN_FUZZ_FIELD(window))) r.window = 0;
  if (missing(SIMDATTN_FUZZ_FIELD(softcap))) r.softcap = 0.0f;
  if (missing(SIMDATTN_FUZZ_FIELD(window_left))) r.window_left = 0;
  if (missing(SIMDATTN_FUZZ_FIELD(window_right))) r.window_right = 0;
  if (missing(SIMDATTN_FUZZ_FIELD(alibi_slopes))) r.alibi_slopes = nullptr;
  if (missing(SIMDATTN_FUZZ_FIELD(sinks))) r.sinks = nullptr;
#undef SIMDATTN_FUZZ_FIELD
  return r;
}

// Fills the bytes of `o` at or past its struct_size with garbage that would be invalid as 0.2
// fields (window -1, softcap NaN, sides -1, wild pointers): the library must not read them.
void GarbageAfterStructSize(simdattn_sdpa_options* o) {
  if (o->struct_size >= sizeof(*o)) return;
  unsigned char* bytes = reinterpret_cast<unsigned char*>(o);
  std::memset(bytes + o->struct_size, 0xFF, sizeof(*o) - o->struct_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  // options NULL: the call uses the defaults, so the buffers are sized for them.
  const bool null_options = (flags & 0xe0) == 0xe0;
  const bool specials = flags & 1, use_mask = flags & 2 && !null_options;
  const bool use_kv_lens = flags & 4 && !null_options, use_lse = flags & 8 && !null_options;
  const bool use_weights = flags & 16 && !null_options;
  const int64_t batch = Size(in, 3), heads = Size(in, 4), q_len = Size(in, 20);
  const int64_t kv_len = Size(in, 40), d_k = Size(in, 24), d_v = Size(in, 24);

  // The options, possibly as a caller built against a larger (later) struct.
  struct Grown {
    simdattn_sdpa_options o;
    int64_t later[4];
  } grown{};
  simdattn_sdpa_options_init(&grown.o);
  simdattn_sdpa_options& o = grown.o;
  const uint8_t ss = in.ConsumeIntegral<uint8_t>();
  // This header's size, a later (larger) one, a partial 0.2 layout (176 = 0.1 .. 212), or
  // below the 0.1 size (invalid).
  o.struct_size = ss < 200   ? sizeof(o)
                  : ss < 210 ? sizeof(Grown)
                  : ss < 240 ? SIMDATTN_SDPA_OPTIONS_SIZE_0_1 + static_cast<size_t>(ss % 10) * 4
                             : static_cast<size_t>(ss % 5) * 8;
  const uint8_t sc = in.ConsumeIntegral<uint8_t>();
  o.scale = sc < 128 ? 0.0f : sc < 240 ? static_cast<float>(sc - 127) / 32.0f : Value(in, true);
  const uint8_t ca = in.ConsumeIntegral<uint8_t>();
  o.causal = ca < 250 ? ca % 3 : static_cast<int32_t>(ca) - 252;
  const uint8_t kh = in.ConsumeIntegral<uint8_t>();
  o.kv_heads = kh < 128 ? 0 : kh < 240 ? (heads > 0 ? std::max<int64_t>(1, heads >> (kh % 3)) : kh % 3)
                                        : Size(in, 8);
  if (null_options) simdattn_sdpa_options_init(&o);
  const int64_t kv_heads = o.kv_heads == 0 ? heads : o.kv_heads;
  if (!null_options) {
    o.q_strides = Strides(in, heads, q_len, d_k);
    o.k_strides = Strides(in, kv_heads, kv_len, d_k);
    o.v_strides = Strides(in, kv_heads, kv_len, d_v);
    o.out_strides = Strides(in, heads, q_len, d_v);
  }
  const int64_t q_sizes[3] = {batch, heads, q_len}, kv_sizes[3] = {batch, kv_heads, kv_len};
  const simdattn_strides qs = Resolve(o.q_strides, heads, q_len, d_k);
  const simdattn_strides ks = Resolve(o.k_strides, kv_heads, kv_len, d_k);
  const simdattn_strides vs = Resolve(o.v_strides, kv_heads, kv_len, d_v);
  const simdattn_strides os = Resolve(o.out_strides, heads, q_len, d_v);
  const int64_t nq = Allocatable(Extent4(q_sizes, qs, d_k));
  const int64_t nk = Allocatable(Extent4(kv_sizes, ks, d_k));
  const int64_t nv = Allocatable(Extent4(kv_sizes, vs, d_v));
  const int64_t nout = Allocatable(Extent4(q_sizes, os, d_v));
  Guarded q = nq >= 0 ? Guarded(nq, in, specials) : Guarded();
  Guarded k = nk >= 0 ? Guarded(nk, in, specials) : Guarded();
  Guarded v = nv >= 0 ? Guarded(nv, in, specials) : Guarded();
  Guarded out = nout >= 0 ? Guarded(nout, in, false) : Guarded();
  // Mask: contiguous, broadcast over batch and/or heads, or edge strides; values may be -inf.
  Guarded mask;
  if (use_mask) {
    const uint8_t mm = in.ConsumeIntegral<uint8_t>();
    const int64_t l = std::max<int64_t>(kv_len, 1), ql = std::max<int64_t>(q_len, 1);
    const int64_t h = std::max<int64_t>(heads, 1);
    o.mask_strides = mm < 64 ? simdattn_strides{SatMul(h, SatMul(ql, l)), SatMul(ql, l), l}
                     : mm < 128 ? simdattn_strides{0, 0, l}
                     : mm < 192 ? simdattn_strides{SatMul(ql, l), 0, l}
                     : mm < 240 ? simdattn_strides{0, 0, 0}
                                : Strides(in, heads, q_len, kv_len);
    const int64_t extent = Extent4(q_sizes, o.mask_strides, kv_len);
    // A representable extent too large to allocate here is a valid call this harness cannot
    // make: the library would read the mask. Only an unrepresentable one gets the fake pointer.
    if (extent > kMaxFloats) return 0;
    const int64_t nm = Allocatable(extent);
    if (nm >= 0) {
      mask = Guarded(nm, in, specials);
      for (int64_t i = 0; i < nm; ++i) {
        if (in.ConsumeIntegral<uint8_t>() >= 224) mask[i] = -INFINITY;
      }
      o.mask = mask.data();
    } else {
      o.mask = reinterpret_cast<const float*>(uintptr_t{64});  // overflowing extent: must fail
    }
  }
  std::vector<int64_t> kv_lens;
  if (use_kv_lens && batch > 0 && batch <= 64) {
    for (int64_t b = 0; b < batch; ++b) {
      const uint8_t x = in.ConsumeIntegral<uint8_t>();
      kv_lens.push_back(x < 250 ? (kv_len > 0 ? x % SatAdd(kv_len, 1) : 0)
                                : SatAdd(kv_len, (x % 3) - 1));
    }
    o.kv_lens = kv_lens.data();
  }
  const int64_t rows = Product({batch, heads, q_len});
  const int64_t w_n = Product({batch, heads, q_len, kv_len});
  Guarded lse = use_lse && Allocatable(rows) >= 0 ? Guarded(rows, in, false) : Guarded();
  Guarded weights = use_weights && Allocatable(w_n) >= 0 ? Guarded(w_n, in, false) : Guarded();
  if (use_lse) o.lse = Allocatable(rows) >= 0 ? lse.data() : nullptr;
  if (use_weights) o.weights = Allocatable(w_n) >= 0 ? weights.data() : nullptr;
  // Aliasing: out inside q's buffer (refused unless disjoint).
  float* out_ptr = nout >= 0 ? out.data() : nullptr;
  const uint8_t alias = in.ConsumeIntegral<uint8_t>();
  const bool aliased = alias >= 250 && nq > 0;
  if (aliased) out_ptr = q.data() + alias % nq;
  // The 0.2 variants: window flag (0, 1 or invalid), sides, softcap, per-head slopes and sinks
  // (only when heads is small enough to give each head its value).
  Guarded slopes, sinks;
  if (!null_options) {
    const uint8_t w = in.ConsumeIntegral<uint8_t>();
    o.window = w < 110 ? 0 : w < 245 ? 1 : w % 2 ? 2 : -1;
    o.window_left = Side(in), o.window_right = Side(in);
    const uint8_t cap = in.ConsumeIntegral<uint8_t>();
    // Invalid (NaN, inf, < 0), -0 (off), and valid extremes: a subnormal cap (1/cap = inf),
    // FLT_MIN, and huge caps (1/cap subnormal).
    static const float kCapEdges[] = {NAN, INFINITY, -1.0f, -0.0f, 1e-40f, FLT_MIN, 1e-30f,
                                      1e30f, FLT_MAX};
    o.softcap = cap < 140 ? 0.0f : cap < 245 ? static_cast<float>(cap - 139) / 16.0f
                                             : kCapEdges[cap % std::size(kCapEdges)];
    const uint8_t per_head = in.ConsumeIntegral<uint8_t>();
    if (per_head & 1 && heads > 0 && heads <= 64) {
      slopes = Guarded(heads, in, specials);
      for (int64_t h = 0; h < heads; ++h) slopes[h] /= 8.0f;  // |slope| <= 1
      o.alibi_slopes = slopes.data();
    }
    if (per_head & 2 && heads > 0 && heads <= 64) {
      sinks = Guarded(heads, in, specials);
      for (int64_t h = 0; h < heads; ++h) {
        if (in.ConsumeIntegral<uint8_t>() >= 200) sinks[h] = -INFINITY;
      }
      o.sinks = sinks.data();
    }
  }
  const simdattn_sdpa_options read = AsRead(o);
  GarbageAfterStructSize(&o);

  if (std::getenv("SIMDATTN_FUZZ_VERBOSE") != nullptr) {  // describe the call (reproducers)
    auto st = [](const simdattn_strides& x) {
      return "{" + std::to_string(x.batch) + ", " + std::to_string(x.head) + ", " +
             std::to_string(x.seq) + "}";
    };
    std::fprintf(stderr,
                 "simdattn_sdpa(batch %lld, heads %lld, q_len %lld, kv_len %lld, d_k %lld, d_v "
                 "%lld) struct_size %zu scale %g causal %d kv_heads %lld q %s k %s v %s out %s "
                 "mask %s %s kv_lens %s lse %s weights %s aliased %d options %s; buffers q %lld "
                 "k %lld v %lld out %lld; as read: window %d [%lld, %lld] softcap %g slopes %s "
                 "sinks %s\n",
                 (long long)batch, (long long)heads, (long long)q_len, (long long)kv_len,
                 (long long)d_k, (long long)d_v, o.struct_size, double{o.scale}, o.causal,
                 (long long)o.kv_heads, st(o.q_strides).c_str(), st(o.k_strides).c_str(),
                 st(o.v_strides).c_str(), st(o.out_strides).c_str(), o.mask ? "yes" : "no",
                 st(o.mask_strides).c_str(), o.kv_lens ? "yes" : "no", o.lse ? "yes" : "no",
                 o.weights ? "yes" : "no", aliased, null_options ? "NULL" : "given",
                 (long long)nq, (long long)nk, (long long)nv, (long long)nout, read.window,
                 (long long)read.window_left, (long long)read.window_right,
                 double{read.softcap}, read.alibi_slopes ? "yes" : "no",
                 read.sinks ? "yes" : "no");
  }
  const Guarded q0 = q, k0 = k, v0 = v, out0 = out, mask0 = mask, lse0 = lse, w0 = weights;
  const Guarded slopes0 = slopes, sinks0 = sinks;
  const std::vector<int64_t> kv_lens0 = kv_lens;
  const simdattn_status s =
      simdattn_sdpa(nq >= 0 ? q.data() : nullptr, nk >= 0 ? k.data() : nullptr,
                    nv >= 0 ? v.data() : nullptr, out_ptr, batch, heads, q_len, kv_len, d_k, d_v,
                    null_options ? nullptr : &o);
  CheckStatus(s);
  FUZZ_CHECK(q.GuardsIntact() && k.GuardsIntact() && v.GuardsIntact() && out.GuardsIntact() &&
                 mask.GuardsIntact() && lse.GuardsIntact() && weights.GuardsIntact() &&
                 slopes.GuardsIntact() && sinks.GuardsIntact(),
             "guard zone written");
  FUZZ_CHECK(kv_lens == kv_lens0, "kv_lens changed");
  const bool inputs_same = k.Same(k0) && v.Same(v0) && mask.Same(mask0) &&
                           slopes.Same(slopes0) && sinks.Same(sinks0);
  if (s != SIMDATTN_OK) {
    FUZZ_CHECK(inputs_same && q.Same(q0) && out.Same(out0) && lse.Same(lse0) && weights.Same(w0),
               "a failed call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  FUZZ_CHECK(inputs_same, "an input changed");
  if (aliased) return 0;
  FUZZ_CHECK(q.Same(q0), "q changed");
  if (batch == 0 || heads == 0 || q_len == 0) {
    FUZZ_CHECK(out.Same(out0) && lse.Same(lse0) && weights.Same(w0), "an empty call wrote");
    return 0;
  }
  // Reference for small calls.
  const int64_t work = Product({batch, heads, q_len, kv_len + 1, d_k + d_v + 1});
  if (work < 0 || work > 200000) return 0;
  simdattn_test::SdpaProblem p;
  const float dummy[1] = {0.0f};
  p.q = q0.buf.data() + kGuard, p.k = k0.buf.data() + kGuard;
  p.v = d_v > 0 ? v0.buf.data() + kGuard : dummy;
  p.batch = batch, p.heads = heads, p.kv_heads = kv_heads, p.q_len = q_len, p.kv_len = kv_len;
  p.d_k = d_k, p.d_v = d_v;
  p.q_s = qs, p.k_s = ks, p.v_s = d_v > 0 ? vs : simdattn_strides{0, 0, 0};
  p.scale = o.scale == 0.0f ? static_cast<double>(static_cast<float>(1.0 / std::sqrt(double(d_k))))
                            : double{o.scale};
  p.causal = o.causal;
  p.mask = o.mask != nullptr ? mask0.buf.data() + kGuard : nullptr;
  p.mask_s = o.mask_strides;
  p.kv_lens = o.kv_lens;
  p.window = read.window == 1;
  p.window_left = read.window_left, p.window_right = read.window_right;
  p.softcap = read.softcap;
  p.alibi_slopes = read.alibi_slopes != nullptr ? slopes0.buf.data() + kGuard : nullptr;
  p.sinks = read.sinks != nullptr ? sinks0.buf.data() + kGuard : nullptr;
  std::vector<char> is_elem(static_cast<size_t>(out.n), 0);
  const double u = 0x1p-24;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < q_len; ++i) {
        const simdattn_test::SdpaRowResult r = simdattn_test::SdpaReferenceRow(p, b, h, i);
        const int64_t row = (b * heads + h) * q_len + i;
        // Bounds as tests/sdpa_harness.h's BoundsFor (with its safety factor 2): the sink is one
        // more normaliser term and joins max|s|; softcap and ALiBi add VariantLogitError's terms
        // (2u S + 11u min(cap, S) for the 5-ulp tanh; u S + 2u max|bias|).
        double out_bound = 0, lse_bound = 0, w_rel = 0;
        if (r.Terms() > 0) {
          const double live = static_cast<double>(r.Terms());
          double logit = Gamma(double(d_k) + 2) * r.max_abs_dot + 5 * u * r.MaxAbsTerm();
          if (p.softcap > 0) {
            logit += 2 * u * r.max_abs_dot + 11 * u * std::min(double{p.softcap}, r.max_abs_dot);
          }
          if (p.alibi_slopes != nullptr) logit += u * r.max_abs_dot + 2 * u * r.max_abs_bias;
          const double rel = 2 * logit + 4 * u + 2 * Gamma(live * 3) + Gamma(live) + 2 * u;
          w_rel = std::expm1(2 * rel);
          // All-zero V rows give exactly 0 whatever the weights (no inf * 0 = NaN bound).
          out_bound = r.max_abs_v == 0 ? 0 : (w_rel + Gamma(live + 1) * (1 + w_rel)) * r.max_abs_v;
          lse_bound = 2 * (logit + rel + 8 * u * std::log(live) + 3 * u * std::fabs(r.lse));
        }
        // Scores are float: with a huge scale (the fuzzer picks up to FLT_MAX) q.k * scale or
        // q.k itself can overflow to +-inf, an infinite score the header lets make the row NaN.
        // The bounds hold for |scores| below FLT_MAX / 4 (room for the kernel's s - max and
        // log2(e) scaling, which the error terms above assume exact in range).
        const double unscaled = r.max_abs_dot / std::fabs(p.scale);
        const bool float_scores = (1 + Gamma(double(d_k) + 2)) * std::max(r.max_abs_dot, unscaled) <
                                  double{FLT_MAX} / 4;
        const bool finite_row = float_scores && std::isfinite(r.max_abs_v) &&
                                std::isfinite(r.max_abs_logit) && !specials &&
                                !std::isnan(r.lse);
        for (int64_t c = 0; c < d_v; ++c) {
          const int64_t off = b * os.batch + h * os.head + i * os.seq + c;
          is_elem[static_cast<size_t>(off)] = 1;
          if (!finite_row) continue;
          const float got = out[off];
          FUZZ_CHECK(std::fabs(got - r.out[c]) <= out_bound,
                     "out[%lld, %lld, %lld, %lld] = %.9g, want %.17g +- %.3g", (long long)b,
                     (long long)h, (long long)i, (long long)c, double{got}, r.out[c], out_bound);
        }
        if (o.lse != nullptr && finite_row) {
          const float got = lse[row];
          if (r.Terms() == 0) {
            FUZZ_CHECK(got == -INFINITY, "lse of a fully masked row is %g", double{got});
          } else {
            FUZZ_CHECK(std::fabs(got - r.lse) <= lse_bound, "lse[%lld] = %.9g, want %.17g +- %.3g",
                       (long long)row, double{got}, r.lse, lse_bound);
          }
        }
        if (o.weights != nullptr && finite_row) {
          for (int64_t j = 0; j < kv_len; ++j) {
            const float got = weights[row * kv_len + j];
            const double want = r.weights[j];
            // want * w_rel: 0 for a zero weight even when the bound is infinite.
            FUZZ_CHECK(std::fabs(got - want) <= (want == 0 ? 0 : want * w_rel) + 2 * FLT_MIN,
                       "weights[%lld, %lld] = %.9g, want %.17g", (long long)row, (long long)j,
                       double{got}, want);
          }
        }
      }
    }
  }
  for (int64_t i = 0; i < out.n; ++i) {
    if (!is_elem[static_cast<size_t>(i)]) {
      FUZZ_CHECK(Bits(out[i]) == Bits(out0.buf[kGuard + i]), "out gap %lld written", (long long)i);
    }
  }
  if (o.lse == nullptr) FUZZ_CHECK(lse.Same(lse0), "lse written without being requested");
  return 0;
}

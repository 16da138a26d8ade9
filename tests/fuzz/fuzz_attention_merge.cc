// libFuzzer target: simdattn_attention_merge. Checks: a documented status; on error nothing
// written; on success the inputs unchanged (unless in place), padding and guards unchanged,
// rows with a NaN or +inf lse NaN, rows whose pieces are all -inf out 0 and lse -inf, and every
// other row within the derived bound of a float64 merge of the same inputs (pieces of lse -inf
// hold NaN outputs that must not be read).
#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

namespace {

constexpr int64_t kMaxPieces = 40;  // beyond one weighting group (32) of the kernel

// Float64 merge of row r and the fp32 bound (tests/test_merge.cc's, without the inputs' own
// rounding since the reference merges the same float inputs): weight i within
// r_i = u (|t_i| + 4) (exp within 2 ulp) + gamma_{n-1} + u + max_j r_j relative, the weighted sum
// gamma_{n+2}; lse within max r + 2u |log S| + 2u |lse|. Doubled for safety.
void CheckRow(int64_t n, const std::vector<const float*>& outs, int64_t ld, int64_t d_v,
              const std::vector<const float*>& lses, int64_t r, const float* out,
              const float* lse_out) {
  const float lse = lse_out ? *lse_out : 0.0f;
  const double u = 0x1p-24;
  double top = -INFINITY;
  bool poisoned = false;
  for (int64_t i = 0; i < n; ++i) {
    const float x = lses[i][r];
    poisoned = poisoned || std::isnan(x) || x == INFINITY;
    top = std::fmax(top, double{x});
  }
  if (poisoned || top == -INFINITY) {
    FUZZ_CHECK(!lse_out || (poisoned ? std::isnan(lse) : lse == -INFINITY), "row %lld: lse %g",
               (long long)r, double{lse});
    for (int64_t v = 0; v < d_v; ++v) {
      FUZZ_CHECK(poisoned ? std::isnan(out[v]) : out[v] == 0.0f, "row %lld: out %g", (long long)r,
                 double{out[v]});
    }
    return;
  }
  double sum = 0, big_r = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += std::exp(double{lses[i][r]} - top);
    // Pieces the kernel skips (weight 0 in float: -inf or underflow) carry no error.
    if (static_cast<float>(std::exp(double{lses[i][r]} - top)) == 0.0f) continue;
    big_r = std::fmax(big_r, u * (std::fabs(lses[i][r] - top) + 4));
  }
  const double want_lse = top + std::log(sum);
  const double common = big_r + Gamma(static_cast<double>(n)) + u;
  const double lse_bound =
      2 * (common + 2 * u * std::fabs(std::log(sum)) + 2 * u * std::fabs(want_lse));
  FUZZ_CHECK(!lse_out || std::fabs(lse - want_lse) <= lse_bound, "row %lld: lse %.9g, want %.17g",
             (long long)r, double{lse}, want_lse);
  for (int64_t v = 0; v < d_v; ++v) {
    double want = 0, bound = 0;
    bool nan = false;
    for (int64_t i = 0; i < n; ++i) {
      // Relative to the max, not to want_lse: near FLT_MAX, log(sum) is below want_lse's ulp.
      const double w = std::exp(double{lses[i][r]} - top) / sum;
      if (static_cast<float>(std::exp(double{lses[i][r]} - top)) == 0.0f) continue;  // skipped
      const double o = outs[i][r * ld + v];
      nan = nan || std::isnan(o) || std::isinf(o);
      want += w * o;
      bound += w * std::fabs(o) * (u * (std::fabs(lses[i][r] - top) + 4) + common + Gamma(n + 2.0));
    }
    if (nan) continue;  // non-finite data follows IEEE; not checked further
    bound = 2 * bound + n * FLT_MIN;
    // Within the bound of FLT_MAX the rounding may carry the result to +-inf.
    const bool overflowed = std::isinf(out[v]) && std::fabs(want) + bound >= FLT_MAX;
    FUZZ_CHECK(overflowed || std::fabs(out[v] - want) <= bound,
               "out[%lld, %lld] = %.9g, want %.17g +- %.3g", (long long)r, (long long)v,
               double{out[v]}, want, bound);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const bool specials = flags & 1, in_place = flags & 2, null_lse = flags & 4;
  const bool overlap = (flags & 0xf8) == 0xf8;
  const int64_t n_raw = Size(in, kMaxPieces);
  const int64_t n = n_raw == 0 && (flags & 8) ? -1 : n_raw;
  const int64_t rows = Size(in, 12), d_v = Size(in, 40);
  const int64_t ld_out = Ld(in, std::max<int64_t>(1, d_v));
  const int64_t ld_merged = in_place ? ld_out : Ld(in, std::max<int64_t>(1, d_v));
  const int64_t n_alloc = n >= 1 && n <= kMaxPieces ? n : 0;
  const int64_t ext_in = Allocatable(Extent(rows, d_v, ld_out));
  const int64_t ext_out = Allocatable(Extent(rows, d_v, ld_merged));
  const int64_t n_rows = Allocatable(rows);
  std::vector<Guarded> outs_buf, lses_buf;
  for (int64_t i = 0; i < n_alloc; ++i) {
    outs_buf.push_back(ext_in >= 0 ? Guarded(ext_in, in, specials) : Guarded());
    lses_buf.push_back(n_rows >= 0 ? Guarded(n_rows, in, specials) : Guarded());
    // Some pieces are -inf for some rows, with NaN outputs there.
    for (int64_t r = 0; n_rows > 0 && r < rows; ++r) {
      if (in.ConsumeIntegral<uint8_t>() >= 64) continue;
      lses_buf[i][r] = -INFINITY;
      for (int64_t v = 0; ext_in > 0 && v < d_v; ++v) outs_buf[i][r * ld_out + v] = NAN;
    }
  }
  std::vector<const float*> outs, lses;
  for (int64_t i = 0; i < n_alloc; ++i) {
    outs.push_back(ext_in >= 0 ? outs_buf[i].data() : nullptr);
    lses.push_back(n_rows >= 0 ? lses_buf[i].data() : nullptr);
  }
  Guarded out = ext_out >= 0 ? Guarded(ext_out, in, false) : Guarded();
  Guarded lse = n_rows >= 0 ? Guarded(n_rows, in, false) : Guarded();
  float* out_ptr = ext_out >= 0 ? out.data() : nullptr;
  float* lse_ptr = null_lse || n_rows < 0 ? nullptr : lse.data();
  if (in_place && n_alloc > 0) {
    out_ptr = ext_in >= 0 ? outs_buf[0].data() : nullptr;
    lse_ptr = n_rows >= 0 ? lses_buf[0].data() : nullptr;
  }
  if (overlap && n_alloc > 1 && ext_in > 1) out_ptr = outs_buf[n_alloc - 1].data() + 1;
  const std::vector<Guarded> outs0 = outs_buf, lses0 = lses_buf;
  const Guarded out0 = out, lse0 = lse;
  const simdattn_status s =
      simdattn_attention_merge(n, rows, d_v, n_alloc ? outs.data() : nullptr, ld_out,
                               n_alloc ? lses.data() : nullptr, out_ptr, ld_merged, lse_ptr);
  CheckStatus(s);
  bool same = out.Same(out0) && lse.Same(lse0), guards = out.GuardsIntact() && lse.GuardsIntact();
  for (int64_t i = 0; i < n_alloc; ++i) {
    const bool written_here = in_place && i == 0;
    if (!written_here) {
      FUZZ_CHECK(outs_buf[i].Same(outs0[i]) && lses_buf[i].Same(lses0[i]), "input %lld changed",
                 (long long)i);
    } else {
      same = same && outs_buf[0].Same(outs0[0]) && lses_buf[0].Same(lses0[0]);
    }
    guards = guards && outs_buf[i].GuardsIntact() && lses_buf[i].GuardsIntact();
  }
  FUZZ_CHECK(guards, "guard zone written");
  if (s != SIMDATTN_OK || rows <= 0) {
    FUZZ_CHECK(same, "a failed or empty call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  FUZZ_CHECK(!(overlap && n_alloc > 1 && ext_in > 1), "an overlapping out was accepted");
  // Check against the inputs as they were (in place overwrote piece 0).
  std::vector<const float*> outs_in, lses_in;
  for (int64_t i = 0; i < n_alloc; ++i) {
    outs_in.push_back(outs0[i].buf.data() + kGuard);
    lses_in.push_back(lses0[i].buf.data() + kGuard);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* o = d_v > 0 ? out_ptr + r * ld_merged : nullptr;
    CheckRow(n, outs_in, ld_out, d_v, lses_in, r, o, lse_ptr ? lse_ptr + r : nullptr);
  }
  if (!in_place && d_v > 0) {  // padding between rows unchanged
    for (int64_t o = 0; o < out.n; ++o) {
      if (o % ld_merged >= d_v) {
        FUZZ_CHECK(Bits(out[o]) == Bits(out0.buf[kGuard + o]), "padding %lld written",
                   (long long)o);
      }
    }
  }
  return 0;
}

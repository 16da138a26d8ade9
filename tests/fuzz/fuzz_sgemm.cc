// libFuzzer target: simdattn_sgemm and simdattn_sgemm_batched. Checks the header's contract:
// a documented status; on error nothing written; on success A and B unchanged, C's padding,
// gaps and guards unchanged, no NaN from finite moderate inputs, and every element within the
// derived float32 bound of a float64 reference.
#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const bool batched = in.ConsumeBool();
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const int32_t ta = flags & 0x40 ? static_cast<int32_t>(flags & 7) - 2 : flags & 1;
  const int32_t tb = flags & 0x80 ? static_cast<int32_t>((flags >> 3) & 7) - 2 : (flags >> 1) & 1;
  const bool specials = flags & 0x20, c_nan = flags & 0x04;
  const int64_t batch = batched ? Size(in, 4) : 1;
  const int64_t m = Size(in, 40), n = Size(in, 40), k = Size(in, 40);
  const int64_t a_rows = ta == 1 ? k : m, a_cols = ta == 1 ? m : k;
  const int64_t b_rows = tb == 1 ? n : k, b_cols = tb == 1 ? k : n;
  const int64_t lda = Ld(in, std::max<int64_t>(1, a_cols));
  const int64_t ldb = Ld(in, std::max<int64_t>(1, b_cols));
  const int64_t ldc = Ld(in, std::max<int64_t>(1, n));
  const int64_t ext_a = Extent(a_rows, a_cols, lda), ext_b = Extent(b_rows, b_cols, ldb);
  const int64_t ext_c = Extent(m, n, ldc);
  const uint8_t stride_mode = in.ConsumeIntegral<uint8_t>();
  auto stride = [&](int64_t ext, bool may_broadcast) -> int64_t {
    if (!batched) return 0;
    if (may_broadcast && stride_mode % 5 == 0) return 0;
    if (stride_mode >= 240) return Size(in, 64);
    return ext < 0 ? 0 : SatAdd(ext, stride_mode % 3);
  };
  const int64_t sa = stride(ext_a, true), sb = stride(ext_b, true), sc = stride(ext_c, false);
  auto total = [&](int64_t ext, int64_t st) -> int64_t {
    if (ext < 0 || st < 0 || batch < 0) return -1;
    if (ext == 0 || batch == 0) return 0;
    int64_t r;
    if (__builtin_mul_overflow(batch - 1, st, &r) || __builtin_add_overflow(r, ext, &r)) return -1;
    return r;
  };
  const float alpha = in.ConsumeBool() ? Value(in, specials) : 1.0f;
  const float beta = in.ConsumeBool() ? Value(in, specials) : 0.0f;
  const int64_t na = Allocatable(total(ext_a, sa)), nb = Allocatable(total(ext_b, sb));
  const int64_t nc = Allocatable(total(ext_c, sc));
  Guarded a = na >= 0 ? Guarded(na, in, specials) : Guarded();
  Guarded b = nb >= 0 ? Guarded(nb, in, specials) : Guarded();
  Guarded c = nc >= 0 ? Guarded(nc, in, specials) : Guarded();
  if (c_nan) {
    for (int64_t i = 0; i < c.n; ++i) c[i] = std::numeric_limits<float>::quiet_NaN();
  }
  // Aliasing: sometimes C is placed inside A's buffer (the library must refuse if they overlap).
  const uint8_t alias = in.ConsumeIntegral<uint8_t>();
  float* c_ptr = nc >= 0 ? c.data() : nullptr;
  if (alias >= 250 && na > 0) c_ptr = a.data() + alias % na;
  const Guarded a0 = a, b0 = b, c0 = c;
  const float* a_ptr = na >= 0 && !(na == 0 && in.ConsumeBool()) ? a.data() : nullptr;
  const float* b_ptr = nb >= 0 && !(nb == 0 && in.ConsumeBool()) ? b.data() : nullptr;

  const simdattn_status s =
      batched ? simdattn_sgemm_batched(ta, tb, batch, m, n, k, alpha, a_ptr, lda, sa, b_ptr, ldb,
                                       sb, beta, c_ptr, ldc, sc)
              : simdattn_sgemm(ta, tb, m, n, k, alpha, a_ptr, lda, b_ptr, ldb, beta, c_ptr, ldc);
  CheckStatus(s);
  FUZZ_CHECK(a.GuardsIntact() && b.GuardsIntact() && c.GuardsIntact(), "guard zone written");
  if (s != SIMDATTN_OK) {
    FUZZ_CHECK(a.Same(a0) && b.Same(b0) && c.Same(c0), "a failed call (%s) wrote",
               simdattn_status_name(s));
    return 0;
  }
  if (c_ptr != c.data()) {
    // C inside A: only valid when they do not overlap; A is then C's buffer.
    return 0;
  }
  FUZZ_CHECK(a.Same(a0) && b.Same(b0), "an input changed");
  if (batch <= 0 || m <= 0 || n <= 0) {
    FUZZ_CHECK(c.Same(c0), "an empty call wrote C");
    return 0;
  }
  // Elements: reference and bound; everything else must be unchanged.
  std::vector<char> is_elem(static_cast<size_t>(c.n), 0);
  const bool finite =
      !specials && std::isfinite(alpha) && std::isfinite(beta) && (!c_nan || beta == 0.0f);
  for (int64_t bi = 0; bi < batch; ++bi) {
    // (k == 0: A and B are never read, and their batch strides need not fit their buffers.)
    const float* ab = k > 0 ? a.data() + bi * sa : nullptr;
    const float* bb = k > 0 ? b.data() + bi * sb : nullptr;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t o = bi * sc + i * ldc + j;
        is_elem[static_cast<size_t>(o)] = 1;
        double sum = 0, mag = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double x = ta == 1 ? ab[p * lda + i] : ab[i * lda + p];
          const double y = tb == 1 ? bb[j * ldb + p] : bb[p * ldb + j];
          sum += x * y;
          mag += std::fabs(x * y);
        }
        const double bc = beta == 0.0f ? 0.0 : double{beta} * c0.buf[kGuard + o];
        const double want = double{alpha} * sum + bc;
        const double bound = 2 * Gamma(static_cast<double>(k) + 2) *
                             (std::fabs(double{alpha}) * mag + std::fabs(bc));
        const float got = c[o];
        if (finite) {
          FUZZ_CHECK(!std::isnan(got), "NaN at batch %lld (%lld, %lld)", (long long)bi,
                     (long long)i, (long long)j);
          FUZZ_CHECK(std::fabs(got - want) <= bound, "C(%lld, %lld, %lld) = %.9g, want %.17g +- %.3g",
                     (long long)bi, (long long)i, (long long)j, double{got}, want, bound);
        }
      }
    }
  }
  for (int64_t o = 0; o < c.n; ++o) {
    if (!is_elem[static_cast<size_t>(o)]) {
      FUZZ_CHECK(Bits(c[o]) == Bits(c0.buf[kGuard + o]), "C gap %lld written", (long long)o);
    }
  }
  return 0;
}

// libFuzzer target: simdattn_softmax (and simdattn_set_num_threads / get_num_threads). Checks:
// a documented status; on error nothing written; on success x unchanged (unless in place),
// padding and guards unchanged, special rows as documented (NaN or +inf -> all NaN, all -inf ->
// zeros), other rows free of NaN, in [0, 1], summing to 1 within the derived bound and within
// the derived bound of a float64 reference per element.
#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

namespace {

void FuzzThreads(FuzzedDataProvider& in) {
  const uint8_t pick = in.ConsumeIntegral<uint8_t>();
  if (pick < 248) return;  // creating arenas is slow: rarely
  static const int32_t kCounts[] = {-1, 0, 1, 2, 3, SIMDATTN_MAX_THREADS + 1, INT32_MIN, 5};
  const int32_t n = kCounts[pick % 8];
  const int32_t before = simdattn_get_num_threads();
  const simdattn_status s = simdattn_set_num_threads(n);
  CheckStatus(s);
  const bool valid = n >= 0 && n <= SIMDATTN_MAX_THREADS;
  FUZZ_CHECK((s == SIMDATTN_OK) == valid, "set_num_threads(%d) -> %s", n, simdattn_status_name(s));
  FUZZ_CHECK(valid || simdattn_get_num_threads() == before, "a refused count changed the count");
  FUZZ_CHECK(simdattn_get_num_threads() >= 1, "thread count < 1");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  FuzzThreads(in);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const bool specials = flags & 1, in_place = flags & 2, overlap = (flags & 0xfc) == 0xfc;
  const int64_t rows = Size(in, 24), cols = Size(in, 300);
  const int64_t ld_x = Ld(in, std::max<int64_t>(1, cols));
  const int64_t ld_y = in_place ? ld_x : Ld(in, std::max<int64_t>(1, cols));
  const int64_t nx = Allocatable(Extent(rows, cols, ld_x));
  const int64_t ny = Allocatable(Extent(rows, cols, ld_y));
  Guarded x = nx >= 0 ? Guarded(nx, in, specials) : Guarded();
  Guarded y = ny >= 0 ? Guarded(ny, in, false) : Guarded();
  float* y_ptr = in_place ? (nx >= 0 ? x.data() : nullptr) : (ny >= 0 ? y.data() : nullptr);
  if (overlap && nx > 1) y_ptr = x.data() + 1;
  const float* x_ptr = nx >= 0 ? x.data() : nullptr;
  const Guarded x0 = x, y0 = y;
  const simdattn_status s = simdattn_softmax(rows, cols, x_ptr, ld_x, y_ptr, ld_y);
  CheckStatus(s);
  FUZZ_CHECK(x.GuardsIntact() && y.GuardsIntact(), "guard zone written");
  if (s != SIMDATTN_OK) {
    FUZZ_CHECK(x.Same(x0) && y.Same(y0), "a failed call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  if (y_ptr != (in_place ? x.data() : y.data())) return 0;  // an accepted non-overlapping alias
  if (!in_place) FUZZ_CHECK(x.Same(x0), "x changed");
  Guarded& out = in_place ? x : y;
  const Guarded& out0 = in_place ? x0 : y0;
  if (rows <= 0 || cols <= 0) {
    FUZZ_CHECK(out.Same(out0), "an empty call wrote");
    return 0;
  }
  const double u = 0x1p-24;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x0.buf.data() + kGuard + r * ld_x;
    const float* yr = out.data() + r * ld_y;
    bool bad = false, all_neg_inf = true;
    double max = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) {
      bad = bad || std::isnan(xr[j]) || xr[j] == INFINITY;
      all_neg_inf = all_neg_inf && xr[j] == -INFINITY;
      max = std::fmax(max, double{xr[j]});
    }
    if (bad) {
      for (int64_t j = 0; j < cols; ++j) FUZZ_CHECK(std::isnan(yr[j]), "row %lld not NaN", (long long)r);
      continue;
    }
    if (all_neg_inf) {
      for (int64_t j = 0; j < cols; ++j) FUZZ_CHECK(yr[j] == 0.0f, "row %lld not 0", (long long)r);
      continue;
    }
    // Reference and bound as tests/test_util.h's ReferenceSoftmaxRow: per element the argument
    // rounding |t| u, exp's 1 ULP (2u), the sum's gamma_{n-1} and n FLT_MIN of underflow, the
    // final scaling 2u, plus 2 FLT_MIN absolute. Doubled for safety.
    std::vector<double> e(static_cast<size_t>(cols)), rel(static_cast<size_t>(cols));
    double sum = 0, sum_got = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double t = double{xr[j]} - max;
      e[j] = std::exp(t);
      sum += e[j];
      rel[j] = xr[j] == -INFINITY ? 0.0 : std::fabs(t) * u + 2 * u;
    }
    double sw = Gamma(static_cast<double>(cols) - 1) + static_cast<double>(cols) * FLT_MIN;
    for (int64_t j = 0; j < cols; ++j) sw += e[j] / sum * rel[j];
    for (int64_t j = 0; j < cols; ++j) {
      const double want = e[j] / sum;
      const double bound =
          2 * ((want == 0 ? 0 : want * std::expm1(rel[j] + 2 * u + sw / (1 - sw))) + 2 * FLT_MIN);
      FUZZ_CHECK(!std::isnan(yr[j]) && yr[j] >= 0.0f && yr[j] <= 1.0f, "y[%lld, %lld] = %g",
                 (long long)r, (long long)j, double{yr[j]});
      FUZZ_CHECK(std::fabs(yr[j] - want) <= bound, "y[%lld, %lld] = %.9g, want %.17g +- %.3g",
                 (long long)r, (long long)j, double{yr[j]}, want, bound);
      sum_got += yr[j];
    }
    // Sum of the bounds, plus the float64 summation here.
    double sum_bound = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double want = e[j] / sum;
      sum_bound += 2 * ((want == 0 ? 0 : want * std::expm1(rel[j] + 2 * u + sw / (1 - sw))) + 2 * FLT_MIN);
    }
    FUZZ_CHECK(std::fabs(sum_got - 1.0) <= sum_bound + cols * 0x1p-52, "row %lld sums to %.17g",
               (long long)r, sum_got);
  }
  // Padding between rows unchanged.
  for (int64_t o = 0; o < out.n; ++o) {
    if (o % ld_y >= cols) {
      FUZZ_CHECK(Bits(out[o]) == Bits(out0.buf[kGuard + o]), "padding %lld written", (long long)o);
    }
  }
  return 0;
}

// ExpNonPositive (src/kernels/exp-inl.h) on every compiled SIMD target: every float in
// [-104, 0] against float64 std::exp, and the special values of its contract. The kernel is
// internal, so this file is its own Highway foreach_target unit around it.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tests/test_exp.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "hwy/highway.h"
#include "src/kernels/exp-inl.h"

#ifndef SIMDATTN_TESTS_TEST_EXP_ONCE_
#define SIMDATTN_TESTS_TEST_EXP_ONCE_
namespace simdattn_test {
// What CompareChunk finds in a chunk of the sweep.
struct ChunkErrors {
  double ulp, ulp_exact;
  int64_t not_normal;
};
}  // namespace simdattn_test
#endif  // SIMDATTN_TESTS_TEST_EXP_ONCE_

HWY_BEFORE_NAMESPACE();
namespace simdattn_test {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// y[0:n) = ExpNonPositive(x[0:n)) on this target.
void ExpNonPositiveArray(const float* x, float* y, size_t n) {
  namespace k = simdattn::HWY_NAMESPACE;
  const k::DF d;
  for (size_t i = 0; i < n; i += hn::Lanes(d)) {
    k::StoreUpTo(k::ExpNonPositive(d, k::LoadUpTo(d, x + i, n - i, 0.0f)), d, y + i, n - i);
  }
}

// The largest |y - ref| * inv_ulp and |y - exact| * inv_ulp over i < n, and how many y are not
// normal floats >= FLT_MIN (NaN included): the checks of the sweep, vectorized (run on the
// best target) so that they take less time than the kernel under test.
ChunkErrors CompareChunk(const float* y, const float* ref, const double* exact,
                         const double* inv_ulp, size_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<int32_t, decltype(dd)> di;
  auto ulp = hn::Zero(dd), ulp_exact = hn::Zero(dd);
  auto not_normal = hn::Zero(di);  // minus the count: a true mask is -1
  const auto min_normal = hn::Set(df, std::numeric_limits<float>::min());
  size_t i = 0;
  for (; i + hn::Lanes(dd) <= n; i += hn::Lanes(dd)) {
    const auto yf = hn::LoadU(df, y + i);
    const auto yd = hn::PromoteTo(dd, yf), iu = hn::LoadU(dd, inv_ulp + i);
    const auto diff = hn::Sub(yd, hn::PromoteTo(dd, hn::LoadU(df, ref + i)));
    ulp = hn::Max(ulp, hn::Mul(hn::Abs(diff), iu));
    ulp_exact = hn::Max(ulp_exact, hn::Mul(hn::Abs(hn::Sub(yd, hn::LoadU(dd, exact + i))), iu));
    const auto normal = hn::RebindMask(di, hn::Ge(yf, min_normal));
    not_normal = hn::Add(not_normal, hn::VecFromMask(di, hn::Not(normal)));
  }
  ChunkErrors e{hn::GetLane(hn::MaxOfLanes(dd, ulp)), hn::GetLane(hn::MaxOfLanes(dd, ulp_exact)),
                0};
  HWY_ALIGN int32_t lanes[hn::MaxLanes(di)];
  hn::Store(not_normal, di, lanes);
  for (size_t j = 0; j < hn::Lanes(di); ++j) e.not_normal -= lanes[j];
  for (; i < n; ++i) {  // the tail
    const double yi = y[i];
    e.ulp = std::max(e.ulp, std::fabs(yi - ref[i]) * inv_ulp[i]);
    e.ulp_exact = std::max(e.ulp_exact, std::fabs(yi - exact[i]) * inv_ulp[i]);
    e.not_normal += y[i] >= std::numeric_limits<float>::min() ? 0 : 1;
  }
  return e;
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn_test
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <algorithm>
#include <sstream>

namespace simdattn_test {

HWY_EXPORT(ExpNonPositiveArray);
HWY_EXPORT(CompareChunk);

namespace {

// The accuracy the kernel promises on [kFlushBelow, 0], in ulps of the correctly rounded result.
constexpr double kMaxUlp = 2.0;
// Its flush threshold (kExpFlushBelow): the smallest float >= -126 ln2; below it, +0.
constexpr float kFlushBelow = -0x1.5d589ep+6f;
// The sweep's end: every float in [kSweepLow, 0] is tested (Highway's own Exp flushes below it).
constexpr float kSweepLow = -104.0f;
// Three quarters of the sweep's floats are tiny: for |x| < 2^-25 the reference is
// 1 + x + x^2 / 2, whose truncation error |x|^3 / 6 < 2^-77 is far below float64 rounding, so it
// is as exact as std::exp (and 4x faster).
constexpr double kTinyX = -0x1p-25;
// Floats per chunk: the chunk's data (28 bytes a float) stays in L3, and the dispatch is switched
// between targets (a few CPUID instructions each time) only 4300 times.
constexpr uint32_t kChunk = uint32_t{1} << 18;
// The best target sees every float; the others, whose kernels run up to 8x longer (SCALAR has no
// vectors), every kStride-th one: the whole test then takes seconds. Their arithmetic is the
// same (up to fused or separate multiply-adds), so their error maps look alike.
constexpr size_t kStride = 7;

// Under a sanitizer (tools/run-tests --sanitize, CI) the best target is swept at kStride too:
// that build looks for memory errors, which the sweep's size does not add to, and the whole sweep
// took a minute there. The plain build still sees every float.
#if defined(SIMDATTN_TEST_SANITIZED)  // tests/meson.build: any sanitizer
constexpr bool kSweepEveryFloat = false;
#else
constexpr bool kSweepEveryFloat = true;
#endif

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

std::vector<float> RunKernel(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  HWY_DYNAMIC_DISPATCH(ExpNonPositiveArray)(x.data(), y.data(), x.size());
  return y;
}

// 1 / ulp(v) for a positive normal float v: the spacing of the floats in v's binade.
double InvUlp(float v) {
  const uint64_t exponent = Bits(v) >> 23;  // biased, 1..254
  const uint64_t inv = (uint64_t{1023} + 127 + 23 - exponent) << 52;
  double r;
  std::memcpy(&r, &inv, sizeof(r));
  return r;
}

// One chunk of the sweep: inputs x (consecutive bit patterns), and for x >= kFlushBelow (the
// first `normal` of them) the float64 exp(x), its rounding to float and 1 / ulp of that.
struct Chunk {
  std::vector<float> x, ref;
  std::vector<double> exact, inv_ulp;
  size_t normal = 0;
};

// Fills c with every stride-th of the count floats from bit pattern `begin` on.
void MakeChunk(uint32_t begin, uint32_t count, uint32_t stride, Chunk& c) {
  c.x.resize((count + stride - 1) / stride);
  for (size_t i = 0; i < c.x.size(); ++i) {
    c.x[i] = FromBits(begin + static_cast<uint32_t>(i) * stride);
  }
  c.normal = static_cast<size_t>(
      std::find_if(c.x.begin(), c.x.end(), [](float v) { return v < kFlushBelow; }) - c.x.begin());
  c.exact.resize(c.normal);
  c.ref.resize(c.normal);
  c.inv_ulp.resize(c.normal);
  for (size_t i = 0; i < c.normal; ++i) {
    const double x = c.x[i];
    c.exact[i] = x > kTinyX ? 1.0 + x * (1.0 + 0.5 * x) : std::exp(x);
    c.ref[i] = static_cast<float>(c.exact[i]);
    c.inv_ulp[i] = InvUlp(c.ref[i]);
  }
}

// s = every stride-th float of c, from its first.
void Subsample(const Chunk& c, size_t stride, Chunk& s) {
  s.x.clear(), s.ref.clear(), s.exact.clear(), s.inv_ulp.clear();
  for (size_t i = 0; i < c.x.size(); i += stride) {
    s.x.push_back(c.x[i]);
    if (i >= c.normal) continue;
    s.ref.push_back(c.ref[i]), s.exact.push_back(c.exact[i]), s.inv_ulp.push_back(c.inv_ulp[i]);
  }
  s.normal = s.ref.size();
}

// The worst errors of one target over the sweep, and where they occurred.
struct Worst {
  double ulp = 0.0;        // |y - ref| / ulp(ref), ref = the correctly rounded exp(x)
  double ulp_exact = 0.0;  // |y - exp(x)| / ulp(ref), exp(x) in float64
  float x_at = 0.0f, y_at = 0.0f;
  int64_t not_normal = 0;  // x >= kFlushBelow with y not a normal float
  int64_t bad_flush = 0;   // x < kFlushBelow with y != +0
};

// Folds the results y of chunk c into w; the worst element is looked up only when the chunk
// beats the worst so far.
void Compare(const Chunk& c, const std::vector<float>& y, Worst& w) {
  const ChunkErrors e = HWY_DYNAMIC_DISPATCH(CompareChunk)(y.data(), c.ref.data(), c.exact.data(),
                                                           c.inv_ulp.data(), c.normal);
  w.ulp_exact = std::max(w.ulp_exact, e.ulp_exact);
  w.not_normal += e.not_normal;
  for (size_t i = c.normal; i < y.size(); ++i) w.bad_flush += Bits(y[i]) != 0 ? 1 : 0;
  if (!(e.ulp > w.ulp)) return;
  w.ulp = e.ulp;
  for (size_t i = 0; i < c.normal; ++i) {
    if (std::fabs(static_cast<double>(y[i]) - c.ref[i]) * c.inv_ulp[i] == e.ulp) {
      w.x_at = c.x[i], w.y_at = y[i];
      return;
    }
  }
}

std::string Describe(const Worst& w) {
  std::ostringstream s;
  s.precision(9);
  s << "max " << w.ulp << " ulp vs the correctly rounded exp (at x = " << w.x_at
    << ", y = " << w.y_at << "), " << w.ulp_exact << " ulp vs exact";
  return s.str();
}

}  // namespace

TEST_CASE("ExpNonPositive: exp(+-0) == 1, -inf -> +0, NaN -> NaN, the flush threshold") {
  const float below = std::nextafter(kFlushBelow, -kInf);
  const std::vector<float> x = {0.0f,  -0.0f, -kInf, kNaN, -kNaN, Sentinel(), FromBits(0x7f800001u),
                                kFlushBelow, below, -87.3f, -std::numeric_limits<float>::max()};
  ForEachTarget([&] {
    const std::vector<float> y = RunKernel(x);
    CHECK(Bits(y[0]) == Bits(1.0f));
    CHECK(Bits(y[1]) == Bits(1.0f));
    CHECK(Bits(y[2]) == 0u);
    for (size_t i = 3; i <= 6; ++i) CHECK_MESSAGE(std::isnan(y[i]), "x bits " << Bits(x[i]));
    CHECK(y[7] >= std::numeric_limits<float>::min());  // normal, never subnormal
    CHECK(Bits(y[8]) == 0u);
    CHECK(y[9] >= std::numeric_limits<float>::min());
    CHECK(Bits(y[10]) == 0u);
  });
}

// Every float x in [-104, 0] (bit patterns 0x80000000 = -0 up to that of -104, about 1.1e9) on
// the best target, every kStride-th one on the others (and on the best under a sanitizer):
// within kMaxUlp of the correctly rounded exp(x) for x >= kFlushBelow, a normal float there,
// else +0.
// The reference is float64 std::exp rounded to float: its error (under 1 ulp of float64) can
// change that rounding only when exp(x) lies within about 2^-29 float ulps of a midpoint between
// two floats, which no float x in this range is known to do; a wrong reference there would cost
// 1 ulp of slack, not a false pass of a bad kernel. References are computed once per chunk and
// shared by the targets.
TEST_CASE("ExpNonPositive: every float in [-104, 0] within 2 ulp, or flushed to +0") {
  hwy::SetSupportedTargetsForTest(0);
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  REQUIRE(!targets.empty());
  std::vector<Worst> worst(targets.size());
  const uint32_t first = Bits(-0.0f), last = Bits(kSweepLow);
  Chunk chunk, sparse;
  for (uint64_t begin = first; begin <= last; begin += kChunk) {
    MakeChunk(static_cast<uint32_t>(begin),
              static_cast<uint32_t>(std::min<uint64_t>(kChunk, last + 1 - begin)),
              kSweepEveryFloat ? 1 : kStride, chunk);
    if (kSweepEveryFloat) Subsample(chunk, kStride, sparse);
    for (size_t t = 0; t < targets.size(); ++t) {  // targets[0] is the best
      const Chunk& c = t == 0 || !kSweepEveryFloat ? chunk : sparse;
      std::vector<float> y;
      {
        const ForceTarget force(targets[t]);
        y = RunKernel(c.x);
      }
      Compare(c, y, worst[t]);  // on the best target
    }
  }
  for (size_t t = 0; t < targets.size(); ++t) {
    const std::string name = hwy::TargetName(targets[t]);
    INFO("SIMD target ", name);
    const std::string swept =
        t == 0 && kSweepEveryFloat ? "every float" : "1 float in " + std::to_string(kStride);
    MESSAGE(name, " (", swept, "): ", Describe(worst[t]));
    CHECK(worst[t].ulp <= kMaxUlp);
    CHECK(worst[t].bad_flush == 0);
    CHECK(worst[t].not_normal == 0);
  }
}

}  // namespace simdattn_test
#endif  // HWY_ONCE

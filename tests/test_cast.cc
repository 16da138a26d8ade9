// simdattn_cast on every compiled SIMD target, bit-exact against the scalar references of
// tests/cast_reference.h: every bf16 and f16 pattern widened; narrowing of every representable
// value, every midpoint (tie) and its two float neighbours, the special values and a few million
// random float patterns; all nine dtype pairs at every tail length with guard bytes; identical
// bytes for any thread count; and unchanged results under the host's FTZ/DAZ modes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/cast_reference.h"

#include <cfloat>

#include "tests/test_util.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SIMDATTN_TEST_HAS_MXCSR 1
#endif

namespace simdattn_test {
namespace {

using cast_reference::BitsOf;
using cast_reference::FloatOf;
using cast_reference::Format;
using cast_reference::FormatOf;

constexpr int32_t kDtypes[] = {SIMDATTN_DTYPE_F32, SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16};
constexpr int32_t kHalves[] = {SIMDATTN_DTYPE_BF16, SIMDATTN_DTYPE_F16};
const char* DtypeName(int32_t t) { return t == 0 ? "f32" : t == 1 ? "bf16" : "f16"; }
size_t ElemSize(int32_t t) { return t == SIMDATTN_DTYPE_F32 ? 4 : 2; }

// Elements of `dtype` as raw patterns (u32 for f32, u16 otherwise) widened to u32 for comparing.
uint32_t Elem(const std::vector<uint8_t>& buf, size_t i, int32_t dtype) {
  if (dtype == SIMDATTN_DTYPE_F32) {
    uint32_t u;
    std::memcpy(&u, buf.data() + 4 * i, 4);
    return u;
  }
  uint16_t h;
  std::memcpy(&h, buf.data() + 2 * i, 2);
  return h;
}

// The value of one source element (exact), or NaN.
double ValueOf(uint32_t pattern, int32_t dtype) {
  if (dtype == SIMDATTN_DTYPE_F32) return FloatOf(pattern);
  return cast_reference::Widen(FormatOf(dtype), static_cast<uint16_t>(pattern));
}

// What the contract demands of each element: the same bits for equal dtypes (a copy); else the
// correctly rounded value, bitwise, and any NaN for a NaN source (the contract fixes no NaN bits).
struct Expected {
  std::vector<uint32_t> bits;
  std::vector<uint8_t> nan;  // 1: any NaN of the dst dtype
};
Expected Expect(const std::vector<uint8_t>& src, size_t n, int32_t src_dtype, int32_t dst_dtype) {
  Expected e{std::vector<uint32_t>(n), std::vector<uint8_t>(n, 0)};
  for (size_t i = 0; i < n; ++i) {
    const uint32_t p = Elem(src, i, src_dtype);
    const double v = ValueOf(p, src_dtype);
    if (src_dtype == dst_dtype) {
      e.bits[i] = p;
    } else if (std::isnan(v)) {
      e.nan[i] = 1;
    } else if (dst_dtype == SIMDATTN_DTYPE_F32) {
      e.bits[i] = BitsOf(static_cast<float>(v));  // exact
    } else {
      e.bits[i] = cast_reference::Narrow(FormatOf(dst_dtype), v);
    }
  }
  return e;
}
bool Matches(const Expected& e, size_t i, uint32_t got, int32_t dst_dtype) {
  if (!e.nan[i]) return got == e.bits[i];
  if (dst_dtype == SIMDATTN_DTYPE_F32) return std::isnan(FloatOf(got));
  return cast_reference::IsNan(FormatOf(dst_dtype), static_cast<uint16_t>(got));
}

// Runs simdattn_cast of `src` (n patterns of src_dtype) into a buffer with kGuardBytes of 0xA5
// on both sides; checks the status, the guards and every element against `want`; reports the
// first mismatch. Returns the dst bytes.
constexpr size_t kGuardBytes = 64;
std::vector<uint8_t> CastAndCheck(const std::vector<uint8_t>& src, size_t n, int32_t src_dtype,
                                  int32_t dst_dtype, const Expected& want) {
  const size_t bytes = n * ElemSize(dst_dtype);
  std::vector<uint8_t> buf(bytes + 2 * kGuardBytes, 0xA5);
  CheckOk(simdattn_cast(static_cast<int64_t>(n), src.data(), src_dtype, buf.data() + kGuardBytes,
                        dst_dtype));
  for (size_t g = 0; g < kGuardBytes; ++g) {
    if (buf[g] != 0xA5 || buf[kGuardBytes + bytes + g] != 0xA5) {
      FAIL_CHECK("a guard byte was written, ", g, " bytes before or after dst");
      break;
    }
  }
  std::vector<uint8_t> dst(buf.begin() + kGuardBytes, buf.end() - kGuardBytes);
  size_t bad = 0, first = 0;
  for (size_t i = n; i-- > 0;) {
    if (!Matches(want, i, Elem(dst, i, dst_dtype), dst_dtype)) ++bad, first = i;
  }
  if (bad > 0) {
    char msg[200];
    std::snprintf(msg, sizeof(msg), "%s -> %s: %zu of %zu wrong; first [%zu]: 0x%08x -> 0x%08x",
                  DtypeName(src_dtype), DtypeName(dst_dtype), bad, n, first,
                  Elem(src, first, src_dtype), Elem(dst, first, dst_dtype));
    FAIL_CHECK(std::string(msg));
  }
  return dst;
}
std::vector<uint8_t> CastAndCheck(const std::vector<uint8_t>& src, size_t n, int32_t src_dtype,
                                  int32_t dst_dtype) {
  return CastAndCheck(src, n, src_dtype, dst_dtype, Expect(src, n, src_dtype, dst_dtype));
}

template <class T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint16_t> AllPatterns() {
  std::vector<uint16_t> p(65536);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint16_t>(i);
  return p;
}

// Floats at the edges: signed zeros and infinities, NaNs (quiet, signalling, payloads, both
// signs), float subnormals, f16's overflow edge (65504, 65519.99.., 65520), its subnormal edges
// (2^-24, 2^-25 = half the least f16, 2^-14) and FLT_MAX, FLT_MIN.
std::vector<float> SpecialFloats() {
  const uint32_t patterns[] = {0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                               0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA00000, 0x7FFFFFFF,
                               0xFFFFFFFF, 0x7F808000, 0x7FBF0000, 0x00000001, 0x80000001,
                               0x007FFFFF, 0x807FFFFF, 0x00400000, 0x00008000, 0x00018000,
                               0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF};
  std::vector<float> v;
  for (uint32_t p : patterns) v.push_back(FloatOf(p));
  for (float x : {65504.0f, std::nextafter(65520.0f, 0.0f), 65519.99f, 65520.0f, 65536.0f,
                  0x1p-24f, 0x1p-25f, std::nextafter(0x1p-25f, 1.0f), 0x1.8p-25f, 0x1p-26f,
                  0x1p-14f, std::nextafter(0x1p-14f, 0.0f), 0x1.ffcp-15f, FLT_MAX, FLT_MIN}) {
    v.push_back(x);
    v.push_back(-x);
  }
  return v;
}

// Every value of the format, every midpoint between neighbours (ties; the one past the largest
// finite value is the overflow threshold) and the floats just below and above each midpoint.
void AddFormatValues(Format f, std::vector<float>* v) {
  const uint16_t inf = static_cast<uint16_t>(((1 << f.exp_bits) - 1) << f.man_bits);
  for (uint32_t p = 0; p < 65536; ++p) {
    const auto h = static_cast<uint16_t>(p), mag = static_cast<uint16_t>(h & 0x7FFF);
    if (cast_reference::IsNan(f, h)) continue;
    const double x = cast_reference::Widen(f, h);
    v->push_back(static_cast<float>(x));
    if (mag >= inf) continue;
    const double next = mag + 1 == inf ? std::copysign(std::ldexp(1.0, (1 << f.exp_bits) - 1 - f.bias), x)
                                       : cast_reference::Widen(f, static_cast<uint16_t>(h + 1));
    const auto mid = static_cast<float>((x + next) / 2);  // exact: one more bit than the format
    REQUIRE(double{mid} == (x + next) / 2);
    v->push_back(mid);
    v->push_back(std::nextafter(mid, 0.0f));
    v->push_back(std::nextafter(mid, mid > 0 ? kInf : -kInf));
  }
}

// The narrowing inputs: both formats' values and ties, the specials, `random` float patterns.
std::vector<float> NarrowingInputs(size_t random) {
  std::vector<float> v = SpecialFloats();
  AddFormatValues(cast_reference::kBf16, &v);
  AddFormatValues(cast_reference::kF16, &v);
  std::mt19937 rng(20240612);
  for (size_t i = 0; i < random; ++i) v.push_back(FloatOf(static_cast<uint32_t>(rng())));
  return v;
}

TEST_CASE("the f16 reference agrees with GCC's _Float16 conversion, which rounds ties to even") {
  // Ties, worked by hand: 1 + 2^-11 is halfway between 1 (0x3C00, even) and 1 + 2^-10;
  // 1 + 3 * 2^-11 halfway between 0x3C01 and 0x3C02 (even); 65520 halfway between 65504 (0x7BFF)
  // and 2^16 (inf, even); 2^-25 between 0 and 2^-24; 3 * 2^-25 between 0x0001 and 0x0002.
  const struct {
    float x;
    uint16_t want;
  } ties[] = {{1.0f + 0x1p-11f, 0x3C00}, {1.0f + 0x1.8p-10f, 0x3C02}, {65520.0f, 0x7C00},
              {-65520.0f, 0xFC00},       {0x1p-25f, 0x0000},          {0x1.8p-24f, 0x0002},
              {-0x1p-25f, 0x8000},       {65519.99f, 0x7BFF}};
  for (const auto& t : ties) {
    INFO("x = ", double{t.x});
    const _Float16 h = static_cast<_Float16>(t.x);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    CHECK(bits == t.want);
    CHECK(cast_reference::Narrow(cast_reference::kF16, t.x) == t.want);
  }
  const std::vector<float> inputs = NarrowingInputs(1 << 20);
  size_t bad = 0;
  for (float x : inputs) {
    const _Float16 h = static_cast<_Float16>(x);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    const uint16_t want = cast_reference::Narrow(cast_reference::kF16, x);
    bad += std::isnan(x) ? !cast_reference::IsNan(cast_reference::kF16, bits) : bits != want;
  }
  CHECK(bad == 0);
}

TEST_CASE("widening: every bf16 and f16 pattern, exact, on every target") {
  const std::vector<uint8_t> all = Bytes(AllPatterns());
  const Expected want[2] = {Expect(all, 65536, kHalves[0], SIMDATTN_DTYPE_F32),
                            Expect(all, 65536, kHalves[1], SIMDATTN_DTYPE_F32)};
  ForEachTarget([&] {
    for (size_t k = 0; k < 2; ++k) CastAndCheck(all, 65536, kHalves[k], SIMDATTN_DTYPE_F32, want[k]);
  });
}

TEST_CASE("narrowing: values, ties, specials and random floats, bit-exact on every target") {
  const std::vector<float> inputs = NarrowingInputs(3 << 20);
  const std::vector<uint8_t> src = Bytes(inputs);
  const size_t n = inputs.size();
  const Expected want[2] = {Expect(src, n, SIMDATTN_DTYPE_F32, kHalves[0]),
                            Expect(src, n, SIMDATTN_DTYPE_F32, kHalves[1])};
  std::string names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) names += std::string(" ") + hwy::TargetName(t);
  MESSAGE(n, " floats per format on each target:", names);
  ForEachTarget([&] {
    for (size_t k = 0; k < 2; ++k) CastAndCheck(src, n, SIMDATTN_DTYPE_F32, kHalves[k], want[k]);
  });
}

// Random patterns of a dtype (every pattern possible: NaNs, infinities, subnormals).
std::vector<uint8_t> RandomPatterns(size_t n, int32_t dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> b(n * ElemSize(dtype));
  for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST_CASE("all nine pairs, every length up to 2 AVX-512 vectors and more, every target") {
  // Lengths 0 .. 2 * 16 + 9 cover a whole vector plus every tail on each target (16 floats per
  // AVX-512 vector), both source alignments of a 16-bit element (offset 0 or 1 element).
  constexpr size_t kMaxLen = 2 * 16 + 9;
  ForEachTarget([&] {
    for (int32_t from : kDtypes) {
      for (int32_t to : kDtypes) {
        INFO(DtypeName(from), " -> ", DtypeName(to));
        for (size_t n = 0; n <= kMaxLen; ++n) {
          for (size_t offset : {0, 1}) {
            const std::vector<uint8_t> buf = RandomPatterns(n + offset, from, 1000 * n + offset);
            const std::vector<uint8_t> src(buf.begin() + offset * ElemSize(from), buf.end());
            CastAndCheck(src, n, from, to);
          }
        }
        CastAndCheck(RandomPatterns(100003, from, 7), 100003, from, to);  // several chunks
      }
    }
  });
}

TEST_CASE("every pair gives identical bytes for 1, 2, 3, 7 and 16 threads") {
  constexpr size_t kN = (size_t{1} << 21) + 13;  // 129 chunks: most threads get several
  for (int32_t from : kDtypes) {
    const std::vector<uint8_t> src = RandomPatterns(kN, from, 42 + from);
    for (int32_t to : kDtypes) {
      INFO(DtypeName(from), " -> ", DtypeName(to));
      std::vector<uint8_t> first;
      ForEachThreadCount({1, 2, 3, 7, 16}, [&](int32_t threads) {
        std::vector<uint8_t> dst(kN * ElemSize(to), 0xA5);
        CheckOk(simdattn_cast(static_cast<int64_t>(kN), src.data(), from, dst.data(), to));
        if (threads == 1) {
          first = dst;
        } else {
          CHECK(dst == first);
        }
      });
      CastAndCheck(src, kN, from, to);
    }
  }
}

TEST_CASE("accepted edge calls: n == 0 with NULL, adjacent buffers") {
  for (int32_t from : kDtypes) {
    for (int32_t to : kDtypes) CheckOk(simdattn_cast(0, nullptr, from, nullptr, to));
  }
  std::vector<uint8_t> buf(12 + 6, 0);  // 3 floats, then 3 halves right after them
  CheckOk(simdattn_cast(3, buf.data(), SIMDATTN_DTYPE_F32, buf.data() + 12, SIMDATTN_DTYPE_F16));
  CheckOk(simdattn_cast(3, buf.data() + 12, SIMDATTN_DTYPE_F16, buf.data(), SIMDATTN_DTYPE_F32));
}

#if SIMDATTN_TEST_HAS_MXCSR
TEST_CASE("results do not change under the host's flush-to-zero and denormals-are-zero modes") {
  // Subnormal-related inputs: float subnormals (bf16 keeps them), values in f16's subnormal
  // range and around its edges, every f16 and bf16 pattern for widening.
  std::vector<float> narrow_in = SpecialFloats();
  for (uint32_t i = 1; i < 65536; i += 7) {
    narrow_in.push_back(FloatOf(i * 127));                    // float subnormals
    narrow_in.push_back(std::ldexp(static_cast<float>(i), -40));  // f16 subnormal range
  }
  const std::vector<uint8_t> narrow_src = Bytes(narrow_in), widen_src = Bytes(AllPatterns());
  const size_t n = narrow_in.size();
  const Expected narrow_want[2] = {Expect(narrow_src, n, SIMDATTN_DTYPE_F32, kHalves[0]),
                                   Expect(narrow_src, n, SIMDATTN_DTYPE_F32, kHalves[1])};
  const Expected widen_want[2] = {Expect(widen_src, 65536, kHalves[0], SIMDATTN_DTYPE_F32),
                                  Expect(widen_src, 65536, kHalves[1], SIMDATTN_DTYPE_F32)};
  // The calls run on this thread only (MXCSR is per thread).
  ForEachThreadCount({1}, [&](int32_t) {
    ForEachTarget([&] {
      const unsigned saved = _mm_getcsr();
      _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
      volatile float tiny = FLT_MIN;
      const bool flushing = tiny * 0.5f == 0.0f;  // the mode is really on
      std::vector<uint8_t> narrowed[2], widened[2];  // per entry of kHalves
      simdattn_status status[4];
      for (size_t k = 0; k < 2; ++k) {
        narrowed[k].resize(n * 2);
        status[2 * k] = simdattn_cast(static_cast<int64_t>(n), narrow_src.data(),
                                      SIMDATTN_DTYPE_F32, narrowed[k].data(), kHalves[k]);
        widened[k].resize(65536 * 4);
        status[2 * k + 1] = simdattn_cast(65536, widen_src.data(), kHalves[k], widened[k].data(),
                                          SIMDATTN_DTYPE_F32);
      }
      _mm_setcsr(saved);
      REQUIRE(flushing);
      for (simdattn_status s : status) CHECK(s == SIMDATTN_OK);
      for (size_t k = 0; k < 2; ++k) {
        const int32_t t = kHalves[k];
        INFO(DtypeName(t));
        for (size_t i = 0; i < n; ++i) {
          if (!Matches(narrow_want[k], i, Elem(narrowed[k], i, t), t)) {
            FAIL_CHECK("narrowing [", i, "] = ", double{narrow_in[i]}, " changed under FTZ/DAZ");
            break;
          }
        }
        for (uint32_t h = 0; h < 65536; ++h) {
          if (!Matches(widen_want[k], h, Elem(widened[k], h, SIMDATTN_DTYPE_F32), SIMDATTN_DTYPE_F32)) {
            FAIL_CHECK("widening pattern ", h, " changed under FTZ/DAZ");
            break;
          }
        }
      }
    });
  });
}
#endif

}  // namespace
}  // namespace simdattn_test

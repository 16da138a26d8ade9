// Scalar references for simdattn_cast, written from the formats' definitions (no bit tricks of
// the kernels): widening evaluates (-1)^s 2^e (1 + m / 2^p) in double; narrowing finds the two
// neighbours of |x| in the format, takes the nearer, a tie the one with the even pattern, and
// inf at or beyond half an ulp past the largest finite value. Shared by tests/test_cast.cc
// (which also checks the f16 one against GCC's _Float16) and tests/fuzz/fuzz_cast.cc.
#ifndef SIMDATTN_TESTS_CAST_REFERENCE_H_
#define SIMDATTN_TESTS_CAST_REFERENCE_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "simdattn.h"

namespace cast_reference {

inline uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float FloatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// A 16-bit format: exponent bits, mantissa bits, bias.
struct Format {
  int exp_bits, man_bits, bias;
};
constexpr Format kBf16{8, 7, 127}, kF16{5, 10, 15};
inline Format FormatOf(int32_t dtype) { return dtype == SIMDATTN_DTYPE_BF16 ? kBf16 : kF16; }

// Value of a 16-bit pattern (NaN patterns give a NaN), exact in double and in float.
inline double Widen(Format f, uint16_t h) {
  const int max_e = (1 << f.exp_bits) - 1;
  const int e = (h >> f.man_bits) & max_e, m = h & ((1 << f.man_bits) - 1);
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == max_e) return m == 0 ? sign * HUGE_VAL : std::numeric_limits<double>::quiet_NaN();
  const double significand = e == 0 ? m : (1 << f.man_bits) + m;  // subnormal: no implicit 1
  return sign * std::ldexp(significand, (e == 0 ? 1 : e) - f.bias - f.man_bits);
}

// Whether a pattern of the format is a NaN (exponent all ones, mantissa not 0).
inline bool IsNan(Format f, uint16_t h) {
  const uint16_t exp_mask = static_cast<uint16_t>(((1 << f.exp_bits) - 1) << f.man_bits);
  return (h & exp_mask) == exp_mask && (h & ((1 << f.man_bits) - 1)) != 0;
}

// The pattern nearest to x (ties to the even pattern), +-inf past the largest finite value by
// half an ulp or more; for a NaN x, the format's positive quiet NaN (compare with IsNan).
inline uint16_t Narrow(Format f, double x) {
  const uint16_t inf = static_cast<uint16_t>(((1 << f.exp_bits) - 1) << f.man_bits);
  if (std::isnan(x)) return static_cast<uint16_t>(inf | (1 << (f.man_bits - 1)));
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  // The largest pattern whose value is <= a: a binary search over the ordered magnitudes.
  uint16_t lo = 0, hi = inf;  // Widen(lo) <= a; hi is the first candidate above
  while (hi - lo > 1) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    (Widen(f, mid) <= a ? lo : hi) = mid;
  }
  if (Widen(f, hi) <= a) return static_cast<uint16_t>(sign | inf);  // a is inf
  // The value one ulp past the largest finite one stands in for inf (2^(emax + 1)).
  const double below = Widen(f, lo);
  const double above = hi == inf ? std::ldexp(1.0, (1 << f.exp_bits) - 1 - f.bias) : Widen(f, hi);
  const double down = a - below, up = above - a;  // exact: few significant bits
  const bool round_up = up < down || (up == down && (lo & 1) != 0);
  return static_cast<uint16_t>(sign | (round_up ? hi : lo));
}

}  // namespace cast_reference

#endif  // SIMDATTN_TESTS_CAST_REFERENCE_H_

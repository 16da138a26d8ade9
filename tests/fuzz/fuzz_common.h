// Shared by the libFuzzer targets (one per C entry point): decoding sizes, strides, flags and
// data from the input, guarded buffers of exactly the claimed size, and contract checks that
// abort (a libFuzzer crash) with a message on violation.
#ifndef SIMDATTN_TESTS_FUZZ_FUZZ_COMMON_H_
#define SIMDATTN_TESTS_FUZZ_FUZZ_COMMON_H_

#include <fuzzer/FuzzedDataProvider.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "simdattn.h"

namespace fuzz {

#define FUZZ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "contract violated: %s: ", #cond);              \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, " (last_error: %s)\n", simdattn_last_error()); \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

// The SIMD target of one input, picked by its first byte (peeked, not consumed, so corpora keep
// their meaning): odd runs the baseline (SCALAR, which CPUs with vectors never reach otherwise),
// even the best target the CPU has. tools/lib/setup.sh's fuzz build compiles AVX2 and SCALAR, so
// every machine fuzzes both. Restores the normal choice when it goes.
class TargetOfInput {
 public:
  TargetOfInput(const uint8_t* data, size_t size) {
    const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
    if (size > 0 && !targets.empty()) {
      hwy::SetSupportedTargetsForTest(data[0] & 1 ? targets.back() : targets.front());
    }
  }
  ~TargetOfInput() { hwy::SetSupportedTargetsForTest(0); }
  TargetOfInput(const TargetOfInput&) = delete;
  TargetOfInput& operator=(const TargetOfInput&) = delete;
};

// Largest buffer (floats) a target allocates; calls that claim more get NULL instead (and must
// then fail or be empty).
constexpr int64_t kMaxFloats = int64_t{1} << 17;
constexpr size_t kGuard = 16;  // floats of sentinel before and after every buffer

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// A quiet NaN with a payload arithmetic never produces: "untouched" is a bitwise check.
inline float Sentinel() {
  const uint32_t b = 0x7fc0beefu;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Sizes: mostly small, sometimes an edge value (negative, huge, overflowing when multiplied).
inline int64_t Size(FuzzedDataProvider& in, int64_t small_max) {
  static const int64_t kEdges[] = {-1, INT64_MIN, INT64_MAX, INT64_MAX / 2, INT64_MAX / 4,
                                   int64_t{1} << 31, int64_t{1} << 32, int64_t{1} << 40,
                                   int64_t{1} << 61, (int64_t{1} << 61) + 1, int64_t{1} << 62,
                                   0, 1};
  const uint8_t pick = in.ConsumeIntegral<uint8_t>();
  if (pick < 240) return in.ConsumeIntegralInRange<int64_t>(0, small_max);
  return kEdges[pick % (sizeof(kEdges) / sizeof(kEdges[0]))];
}

// Saturating arithmetic for the harness's own size computations (sizes may be edge values).
inline int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}
inline int64_t SatMul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? ((a < 0) != (b < 0) ? INT64_MIN : INT64_MAX) : r;
}

// A leading dimension or stride: at least `min` plus small padding, or sometimes an edge value.
inline int64_t Ld(FuzzedDataProvider& in, int64_t min) {
  const uint8_t pick = in.ConsumeIntegral<uint8_t>();
  if (pick < 200) return SatAdd(min, pick % 4 == 0 ? pick % 7 : 0);
  if (pick < 230) return pick % 3;  // 0, 1, 2: often too small
  return Size(in, 64);
}

// Data values: moderate (|x| <= 8, so no finite computation overflows) unless `specials`.
inline float Value(FuzzedDataProvider& in, bool specials) {
  const uint8_t b = in.ConsumeIntegral<uint8_t>();
  if (specials && b >= 240) {
    static const float kSpecial[] = {std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     FLT_MAX, -FLT_MAX, 1e-40f, -1e-45f, 0.0f, -0.0f, FLT_MIN};
    return kSpecial[b % (sizeof(kSpecial) / sizeof(kSpecial[0]))];
  }
  return static_cast<float>(static_cast<int8_t>(b)) / 16.0f;
}

// n floats between two guard zones of sentinels; data() is never NULL.
struct Guarded {
  std::vector<float> buf;
  int64_t n = 0;
  Guarded() : buf(2 * kGuard, Sentinel()) {}
  Guarded(int64_t count, FuzzedDataProvider& in, bool specials)
      : buf(static_cast<size_t>(count) + 2 * kGuard, Sentinel()), n(count) {
    for (int64_t i = 0; i < n; ++i) buf[kGuard + i] = Value(in, specials);
  }
  float* data() { return buf.data() + kGuard; }
  float& operator[](int64_t i) { return buf[kGuard + static_cast<size_t>(i)]; }
  bool Same(const Guarded& o) const {
    return buf.size() == o.buf.size() && std::memcmp(buf.data(), o.buf.data(), buf.size() * 4) == 0;
  }
  bool GuardsIntact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (Bits(buf[i]) != Bits(Sentinel()) || Bits(buf[buf.size() - 1 - i]) != Bits(Sentinel())) {
        return false;
      }
    }
    return true;
  }
};

// Product of sizes in elements, or -1 when it overflows int64 or is negative.
inline int64_t Product(std::initializer_list<int64_t> dims) {
  int64_t r = 1;
  for (int64_t d : dims) {
    if (d < 0) return -1;
    if (d == 0) return 0;
  }
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(r, d, &r)) return -1;
  }
  return r;
}

// (rows - 1) * ld + cols (0 if empty), -1 on overflow or negative inputs.
inline int64_t Extent(int64_t rows, int64_t cols, int64_t ld) {
  if (rows < 0 || cols < 0 || ld < 0) return -1;
  if (rows == 0 || cols == 0) return 0;
  int64_t r;
  if (__builtin_mul_overflow(rows - 1, ld, &r) || __builtin_add_overflow(r, cols, &r)) return -1;
  return r;
}

// Elements a buffer needs, or -1 when it cannot be allocated here (then NULL is passed).
inline int64_t Allocatable(int64_t n) { return n >= 0 && n <= kMaxFloats ? n : -1; }

inline bool Documented(simdattn_status s) {
  return s == SIMDATTN_OK || s == SIMDATTN_ERR_NULL_POINTER || s == SIMDATTN_ERR_BAD_SHAPE ||
         s == SIMDATTN_ERR_BAD_ARGUMENT || s == SIMDATTN_ERR_OUT_OF_MEMORY;
}

// Status documented, last_error set exactly on failure.
inline void CheckStatus(simdattn_status s) {
  FUZZ_CHECK(Documented(s), "status %d (%s)", static_cast<int>(s), simdattn_status_name(s));
  const bool has_message = simdattn_last_error()[0] != '\0';
  FUZZ_CHECK(has_message == (s != SIMDATTN_OK), "status %s with last_error \"%s\"",
             simdattn_status_name(s), simdattn_last_error());
}

// Higham's gamma_k for float32.
inline double Gamma(double k) {
  const double ku = k * 0x1p-24;
  return ku < 0.5 ? ku / (1.0 - ku) : std::numeric_limits<double>::infinity();
}

}  // namespace fuzz

#endif  // SIMDATTN_TESTS_FUZZ_FUZZ_COMMON_H_

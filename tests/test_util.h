// Helpers shared by the doctest suites: seeded random data, sentinel-filled strided buffers,
// float64 references with derived fp32 error bounds, worst-element comparison reports, status
// checks, and loops over Highway targets and thread counts.
//
// Each suite is one executable: define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN, then include this.
#ifndef SIMDATTN_TESTS_TEST_UTIL_H_
#define SIMDATTN_TESTS_TEST_UTIL_H_

#include <doctest/doctest.h>
#include <hwy/targets.h>

#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "simdattn.h"

namespace simdattn_test {

// ------------------------------------------------------------------ rounding error model

// Unit roundoff u (half an ULP of 1) of float32 and float64.
constexpr double kUnitRoundoff32 = 0x1p-24;
constexpr double kUnitRoundoff64 = 0x1p-53;

// Higham's gamma_k = k u / (1 - k u): |prod (1 + d_i)^{+-1} - 1| <= gamma_k for k roundings
// |d_i| <= u, hence the error of any summation order of k terms is <= gamma_k sum |term|.
inline double Gamma(int64_t k, double u = kUnitRoundoff32) {
  const double ku = static_cast<double>(k) * u;
  REQUIRE(ku < 0.5);  // the bound is meaningless beyond this
  return ku / (1.0 - ku);
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ------------------------------------------------------------------ data

// n floats drawn uniformly from [lo, hi) by a generator seeded with `seed` (reproducible).
inline std::vector<float> RandomFloats(size_t n, uint64_t seed, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The sentinel: a quiet NaN with a payload (0xdead) that arithmetic on numbers never creates, so
// "untouched" can be checked bitwise, and any use of it as an input turns results into NaN.
inline float Sentinel() {
  constexpr uint32_t kBits = 0x7fc0deadu;
  float f;
  std::memcpy(&f, &kBits, sizeof(f));
  return f;
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// Checks got[0, n) == want[0, n) bit for bit; on failure reports the first difference.
// (doctest prints a const char* as a pointer: messages pass std::string.)
inline void CheckBitwiseEqual(const float* got, const float* want, size_t n, const char* what) {
  size_t diffs = 0, first = 0;
  for (size_t i = n; i-- > 0;) {
    if (Bits(got[i]) != Bits(want[i])) ++diffs, first = i;
  }
  if (diffs == 0) return;
  char msg[256];
  std::snprintf(msg, sizeof(msg),
                "%s: %zu of %zu floats differ bitwise; first at [%zu]: got %.9g (0x%08" PRIx32
                "), want %.9g (0x%08" PRIx32 ")",
                what, diffs, n, first, double{got[first]}, Bits(got[first]),
                double{want[first]}, Bits(want[first]));
  FAIL_CHECK(std::string(msg));
}

// Floats after the last element of a strided buffer, checked to stay untouched (catches writes
// past the end that ASan cannot see because they land in our own allocation).
constexpr int64_t kGuardFloats = 19;

// `batch` row-major matrices of rows x cols floats in one buffer: element (b, i, j) at
// data()[b * stride + i * ld + j]. Every other float (row padding, gaps between matrices and a
// guard tail) holds the sentinel, which CheckGapsUntouched verifies after a call.
// stride may be 0 (every matrix is the same one).
class Strided {
 public:
  Strided(int64_t batch, int64_t rows, int64_t cols, int64_t ld, int64_t stride)
      : batch_(batch), rows_(rows), cols_(cols), ld_(ld), stride_(stride),
        buf_(static_cast<size_t>(Span() + kGuardFloats), Sentinel()) {}
  static Strided Matrix(int64_t rows, int64_t cols, int64_t ld) {
    return Strided(1, rows, cols, ld, 0);
  }

  int64_t batch() const { return batch_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t ld() const { return ld_; }
  int64_t stride() const { return stride_; }
  float* data() { return buf_.data(); }
  const float* data() const { return buf_.data(); }
  const std::vector<float>& buffer() const { return buf_; }

  float& at(int64_t b, int64_t i, int64_t j) { return buf_[Offset(b, i, j)]; }
  const float& at(int64_t b, int64_t i, int64_t j) const { return buf_[Offset(b, i, j)]; }
  const float* matrix(int64_t b) const { return buf_.data() + b * stride_; }

  // Sets every element (not the gaps) to a seeded uniform value in [lo, hi).
  void Randomize(uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
    const std::vector<float> r = RandomFloats(buf_.size(), seed, lo, hi);
    ForEachElement([&](size_t o) { buf_[o] = r[o]; });
  }
  void Fill(float value) {
    ForEachElement([&](size_t o) { buf_[o] = value; });
  }

  // Checks every float that is not an element still holds the sentinel.
  void CheckGapsUntouched(const char* what) const {
    std::vector<char> is_element(buf_.size(), 0);
    ForEachElement([&](size_t o) { is_element[o] = 1; });
    std::vector<float> want = buf_;
    for (size_t o = 0; o < buf_.size(); ++o) {
      if (!is_element[o]) want[o] = Sentinel();
    }
    CheckBitwiseEqual(buf_.data(), want.data(), buf_.size(), what);
  }

 private:
  // Floats from the first element to one past the last (0 when empty).
  int64_t Span() const {
    if (batch_ == 0 || rows_ == 0 || cols_ == 0) return 0;
    return (batch_ - 1) * stride_ + (rows_ - 1) * ld_ + cols_;
  }
  size_t Offset(int64_t b, int64_t i, int64_t j) const {
    return static_cast<size_t>(b * stride_ + i * ld_ + j);
  }
  template <class F>
  void ForEachElement(const F& f) const {
    for (int64_t b = 0; b < batch_; ++b) {
      for (int64_t i = 0; i < rows_; ++i) {
        for (int64_t j = 0; j < cols_; ++j) f(Offset(b, i, j));
      }
    }
  }

  int64_t batch_, rows_, cols_, ld_, stride_;
  std::vector<float> buf_;
};

// ------------------------------------------------------------------ float64 references

// Dense row-major float64 rows x cols matrix.
struct Dense {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Dense(int64_t r, int64_t c, double fill = 0.0)
      : rows(r), cols(c), v(static_cast<size_t>(r * c), fill) {}
  double& operator()(int64_t i, int64_t j) { return v[static_cast<size_t>(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * cols + j)]; }
};

// op(X) as a dense float64 rows x cols matrix: X(i, j) = x[i * ld + j], or x[j * ld + i] when
// transposed.
inline Dense DenseOp(bool trans, int64_t rows, int64_t cols, const float* x, int64_t ld) {
  Dense d(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) d(i, j) = trans ? x[j * ld + i] : x[i * ld + j];
  }
  return d;
}

// An exact-as-float64 result and, per element, the largest error an fp32 computation may have.
struct Reference {
  Dense want, bound;
  Reference(int64_t rows, int64_t cols) : want(rows, cols), bound(rows, cols) {}
};

// C = alpha op(A) op(B) + beta C0 in float64 (C0 is not read when beta == 0: it may be NaN).
// bound = (gamma_{k+2} + gamma64_{k+2}) * (|alpha| sum_p |a_ip||b_pj| + |beta c0_ij|):
// k roundings for the products' sum in any order, one for alpha, one for the beta term;
// gamma64 covers this reference's own float64 rounding. Also used for the GEMM-vs-OpenBLAS
// check as 2x the fp32 part (both are within it of the exact value).
inline Reference ReferenceGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                               float alpha, const float* a, int64_t lda, const float* b,
                               int64_t ldb, float beta, const float* c0, int64_t ldc) {
  const Dense opa = DenseOp(trans_a, m, k, a, lda), opb = DenseOp(trans_b, k, n, b, ldb);
  Reference r(m, n);
  Dense magnitude(m, n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t p = 0; p < k; ++p) {
      const double aip = opa(i, p);
      for (int64_t j = 0; j < n; ++j) {
        r.want(i, j) += aip * opb(p, j);
        magnitude(i, j) += std::fabs(aip * opb(p, j));
      }
    }
  }
  const double gamma = Gamma(k + 2) + Gamma(k + 2, kUnitRoundoff64);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double beta_c = beta == 0.0f ? 0.0 : double{beta} * c0[i * ldc + j];
      r.want(i, j) = double{alpha} * r.want(i, j) + beta_c;
      r.bound(i, j) = gamma * (std::fabs(double{alpha}) * magnitude(i, j) + std::fabs(beta_c));
    }
  }
  return r;
}

// Smallest positive normal float: below it exp() results lose relative accuracy (subnormals,
// or flushed to 0), so the softmax bound allows this much absolute error per element.
constexpr double kFloatMinNormal = std::numeric_limits<float>::min();
// Highway's Exp: "Max Error: ULP = 1" (hwy/contrib/math/math-inl.h); one ULP <= 2u relative.
constexpr double kExpUlps = 1.0;

// softmax(x[0, n)) in float64 as specified by simdattn_softmax (all -inf -> zeros; any NaN or
// +inf -> NaN), into row `row` of r. The fp32 bound of y_i = e_i / S (e_i = exp(x_i - max)):
//   e_i carries r_i = |t_i| u (rounding of t_i = x_i - max moves exp by a factor exp(|t_i| u))
//                     + 2 kExpUlps u (exp's own error);
//   S carries s = sum_j y_j r_j (the weighted e_j errors) + gamma_{n-1} (the fp32 sum)
//                 + n * kFloatMinNormal (underflowed e_j, S >= 1);
//   y_i = e_i * fl(1 / S) adds 2u.
//   |y_i - want_i| <= want_i * expm1(r_i + 2u + s / (1 - s)) + 2 * kFloatMinNormal.
inline void ReferenceSoftmaxRow(const float* x, int64_t n, Reference* r, int64_t row) {
  double max = -std::numeric_limits<double>::infinity();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    bad |= std::isnan(x[i]) || x[i] == kInf;
    max = std::fmax(max, double{x[i]});
  }
  if (bad || max == -std::numeric_limits<double>::infinity()) {
    for (int64_t i = 0; i < n; ++i) {
      r->want(row, i) = bad ? std::numeric_limits<double>::quiet_NaN() : 0.0;
      r->bound(row, i) = 0.0;
    }
    return;
  }
  const double u = kUnitRoundoff32;
  std::vector<double> rel(static_cast<size_t>(n));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double t = double{x[i]} - max;
    r->want(row, i) = std::exp(t);
    sum += r->want(row, i);
    // exp(-inf) = 0 exactly, with no error to carry.
    rel[static_cast<size_t>(i)] = x[i] == -kInf ? 0.0 : std::fabs(t) * u + 2.0 * kExpUlps * u;
  }
  double s = Gamma(n - 1) + static_cast<double>(n) * kFloatMinNormal;
  for (int64_t i = 0; i < n; ++i) {
    r->want(row, i) /= sum;
    s += r->want(row, i) * rel[static_cast<size_t>(i)];
  }
  for (int64_t i = 0; i < n; ++i) {
    const double rel_i = rel[static_cast<size_t>(i)] + 2.0 * u + s / (1.0 - s);
    const double want = r->want(row, i);  // 0 where exp underflowed float64 too
    r->bound(row, i) = (want == 0.0 ? 0.0 : want * std::expm1(rel_i)) + 2.0 * kFloatMinNormal;
  }
}

// ------------------------------------------------------------------ comparison

// Checks |got(i, j) - want(i, j)| <= bound(i, j) for all i < rows, j < cols, with got(i, j) =
// got[i * ld + j]. A NaN want requires a NaN got. On failure reports the worst element (largest
// error relative to its bound) and how many elements failed.
inline void CheckNear(const float* got, int64_t ld, const Reference& ref, const char* what) {
  int64_t failures = 0, wi = -1, wj = -1;
  double worst = -1.0;
  for (int64_t i = 0; i < ref.want.rows; ++i) {
    for (int64_t j = 0; j < ref.want.cols; ++j) {
      const double g = got[i * ld + j], w = ref.want(i, j), b = ref.bound(i, j);
      const double err = std::fabs(g - w);
      const bool ok = std::isnan(w) ? std::isnan(g) : err <= b;
      if (ok) continue;
      ++failures;
      const double score = b > 0.0 && !std::isnan(err) ? err / b : kInf;
      if (score > worst || wi < 0) worst = score, wi = i, wj = j;
    }
  }
  if (failures == 0) return;
  char msg[320];
  std::snprintf(msg, sizeof(msg),
                "%s: %" PRId64 " of %" PRId64 " elements out of bound; worst (%" PRId64
                ", %" PRId64 "): got %.9g, want %.17g, |diff| %.3g > bound %.3g",
                what, failures, ref.want.rows * ref.want.cols, wi, wj,
                double{got[wi * ld + wj]}, ref.want(wi, wj),
                std::fabs(got[wi * ld + wj] - ref.want(wi, wj)), ref.bound(wi, wj));
  FAIL_CHECK(std::string(msg));
}

// ------------------------------------------------------------------ status checks

// True if `word` occurs in `text` delimited by characters that cannot be part of an identifier.
inline bool NamesWord(const std::string& text, const std::string& word) {
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (size_t p = text.find(word); p != std::string::npos; p = text.find(word, p + 1)) {
    const bool left = p == 0 || !ident(text[p - 1]);
    const bool right = p + word.size() == text.size() || !ident(text[p + word.size()]);
    if (left && right) return true;
  }
  return false;
}

// Checks a call succeeded and cleared simdattn_last_error().
inline void CheckOk(simdattn_status s) {
  const std::string error = simdattn_last_error();
  CHECK_MESSAGE(s == SIMDATTN_OK, std::string(simdattn_status_name(s)), ": ", error);
  CHECK_MESSAGE(error.empty(), "last_error after success: ", error);
}

// Checks a call failed with `want` and a last_error that names `argument` as a word.
inline void CheckError(simdattn_status got, simdattn_status want, const char* argument) {
  const std::string error = simdattn_last_error();
  INFO("last_error: \"", error, "\"");
  CHECK_MESSAGE(got == want, "got ", std::string(simdattn_status_name(got)), ", want ",
                std::string(simdattn_status_name(want)));
  CHECK_MESSAGE(NamesWord(error, argument), "last_error should name ", std::string(argument));
}

// ------------------------------------------------------------------ targets and threads

// Forces Highway's dispatch (shared by this program and libsimdattn through libhwy.so) to one
// target for its lifetime.
class ForceTarget {
 public:
  explicit ForceTarget(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
  ~ForceTarget() { hwy::SetSupportedTargetsForTest(0); }
  ForceTarget(const ForceTarget&) = delete;
  ForceTarget& operator=(const ForceTarget&) = delete;
};

// Runs body() once per Highway target that is compiled in and supported by this CPU, with the
// library forced onto it (checked through simdattn_simd_target()).
inline void ForEachTarget(const std::function<void()>& body) {
  hwy::SetSupportedTargetsForTest(0);
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  REQUIRE(!targets.empty());
  for (const int64_t target : targets) {
    const ForceTarget force(target);
    const std::string name = hwy::TargetName(target);
    INFO("SIMD target ", name);
    REQUIRE(std::string(simdattn_simd_target()) == name);
    body();
  }
}

// Runs body(n) with simdattn_set_num_threads(n) for each n; restores the previous count.
inline void ForEachThreadCount(std::initializer_list<int32_t> counts,
                               const std::function<void(int32_t)>& body) {
  struct Restore {
    int32_t n;
    ~Restore() { simdattn_set_num_threads(n); }
  } restore{simdattn_get_num_threads()};
  for (const int32_t n : counts) {
    REQUIRE(simdattn_set_num_threads(n) == SIMDATTN_OK);
    INFO("threads = ", n);
    body(n);
  }
}

}  // namespace simdattn_test

#endif  // SIMDATTN_TESTS_TEST_UTIL_H_

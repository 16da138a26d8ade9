// simdattn_attention_merge against a float64 reference built from explicit partial softmaxes:
// scores and values of a row's keys are split into disjoint pieces (some empty or fully
// masked, with NaN outputs), each piece's softmax output and LSE computed in float64 and
// rounded to float as the merge's inputs; the merged result must match the float64 softmax
// over all keys. Also: one piece is the identity, in-place aliasing, padded strides, d_v = 0,
// NaN and +inf LSEs, every SIMD target, and bitwise determinism across thread counts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <algorithm>
#include <sstream>

#include "tests/test_util.h"

namespace simdattn_test {
namespace {

constexpr double kU = kUnitRoundoff32;
constexpr float kNegInf = -kInf;
// The merge's exp is src/kernels/exp-inl.h's ExpNonPositive: within 2 ulp (<= 4u relative), and
// 0 below FLT_MIN (covered by the n FLT_MIN term); its log is glibc's logf, within 1 ulp.
constexpr double kMergeExpUlps = 2.0;
constexpr double kLogUlps = 1.0;

// How a piece of a row's keys is made.
enum class PieceKind { kKeys, kEmpty, kMasked };

// A merge problem: `rows` rows of `keys` keys (scores in [-range, range), values in [-1, 1)),
// the keys of every row dealt to n pieces round-robin in runs of `run` keys; pieces listed in
// `empty` get no keys and a NaN output (lse -inf), `masked` pieces keep their keys but every
// score is -inf (lse -inf, output NaN as well: the merge must not read it).
struct MergeCase {
  int64_t n = 3, rows = 5, keys = 40, d_v = 7, run = 3;
  int64_t pad_in = 0, pad_out = 0;
  float range = 4.0f;
  std::vector<int64_t> empty, masked;
  uint64_t seed = 1;

  std::string Describe() const {
    std::ostringstream s;
    s << "n=" << n << " rows=" << rows << " keys=" << keys << " d_v=" << d_v << " run=" << run
      << " ld_out=d_v+" << pad_in << " ld_out_merged=d_v+" << pad_out << " range=" << range
      << " empty=" << empty.size() << " masked=" << masked.size();
    return s.str();
  }
  PieceKind Kind(int64_t i) const {
    if (std::count(empty.begin(), empty.end(), i)) return PieceKind::kEmpty;
    if (std::count(masked.begin(), masked.end(), i)) return PieceKind::kMasked;
    return PieceKind::kKeys;
  }
  int64_t PieceOf(int64_t key) const { return (key / run) % n; }
};

// The pieces as float inputs, the exact answer and its fp32 error bound.
struct MergeData {
  std::vector<Strided> outs;  // n x [rows, d_v], ld d_v + pad_in
  std::vector<std::vector<float>> lses;
  Reference out_ref, lse_ref;
  MergeData(const MergeCase& c) : out_ref(c.rows, c.d_v), lse_ref(c.rows, 1) {}
  std::vector<const float*> OutPtrs() const {
    std::vector<const float*> p;
    for (const Strided& o : outs) p.push_back(o.data());
    return p;
  }
  std::vector<const float*> LsePtrs() const {
    std::vector<const float*> p;
    for (const auto& l : lses) p.push_back(l.data());
    return p;
  }
};

// Builds the inputs and the reference.
// Exact answer: softmax over all live keys in float64, lse = log sum_j exp(s_j).
// Bound of the fp32 merge of the rounded pieces (o_i, lse_i), with t_i = lse_i - max lse:
//   the inputs' own rounding: lse_i by u|lse_i| (moves weight i by that factor), o_i by u;
//   weight e_i = exp(fl(t_i)): u|t_i| for the subtraction, 2 kMergeExpUlps u for exp;
//   the sum S of the n weights: gamma_{n-1}; 1/S: u; so every merged weight w_i is within
//   r_i = u(|lse_i| + |t_i|) + 2 kMergeExpUlps u + gamma_{n-1} + u + R (R = max_i r_i, via S)
//   relative; the weighted sum of the output rows (n products, FMA chains, one scaling and
//   one add per group of 32): gamma_{n+2}.
//   |out - want| <= sum_i w_i |o_i| (r_i + u + gamma_{n+2}) (1 + slack) + n FLT_MIN (underflow).
//   lse = max + log(S): R for S's error, 2 kLogUlps u |log S|, and the addition u |lse|.
MergeData Build(const MergeCase& c) {
  MergeData d(c);
  const std::vector<float> scores =
      RandomFloats(static_cast<size_t>(c.rows * c.keys), c.seed, -c.range, c.range);
  const std::vector<float> values = RandomFloats(static_cast<size_t>(c.keys * c.d_v), c.seed + 7);
  for (int64_t i = 0; i < c.n; ++i) {
    d.outs.emplace_back(1, c.rows, c.d_v, c.d_v + c.pad_in, 0);
    d.lses.emplace_back(static_cast<size_t>(c.rows));
  }
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* s = scores.data() + r * c.keys;
    std::vector<double> piece_lse(static_cast<size_t>(c.n), -kInf);
    Dense piece_out(c.n, c.d_v);
    double all_max = -kInf;
    for (int64_t j = 0; j < c.keys; ++j) {
      if (c.Kind(c.PieceOf(j)) == PieceKind::kKeys) all_max = std::max(all_max, double{s[j]});
    }
    // Explicit partial softmax of every piece over its live keys, and the full one.
    double all_sum = 0.0;
    std::vector<double> all_out(static_cast<size_t>(c.d_v), 0.0);
    for (int64_t i = 0; i < c.n; ++i) {
      if (c.Kind(i) != PieceKind::kKeys) continue;
      double m = -kInf, sum = 0.0;
      for (int64_t j = 0; j < c.keys; ++j) {
        if (c.PieceOf(j) == i) m = std::max(m, double{s[j]});
      }
      for (int64_t j = 0; j < c.keys; ++j) {
        if (c.PieceOf(j) != i) continue;
        const double e = std::exp(s[j] - m), e_all = std::exp(s[j] - all_max);
        sum += e, all_sum += e_all;
        for (int64_t v = 0; v < c.d_v; ++v) {
          piece_out(i, v) += e * values[j * c.d_v + v];
          all_out[v] += e_all * values[j * c.d_v + v];
        }
      }
      if (sum == 0.0) continue;  // a piece without keys (keys < n * run)
      piece_lse[i] = m + std::log(sum);
      for (int64_t v = 0; v < c.d_v; ++v) piece_out(i, v) /= sum;
    }
    // The float inputs: -inf pieces hold NaN outputs the merge must never read.
    double lse_max = -kInf;
    for (int64_t i = 0; i < c.n; ++i) {
      const bool live = piece_lse[i] != -kInf;
      d.lses[i][r] = static_cast<float>(piece_lse[i]);
      for (int64_t v = 0; v < c.d_v; ++v) {
        d.outs[i].at(0, r, v) = live ? static_cast<float>(piece_out(i, v)) : kNaN;
      }
      lse_max = std::max(lse_max, double{d.lses[i][r]});
    }
    if (all_sum == 0.0) {  // no live key at all: out 0, lse -inf, exactly
      for (int64_t v = 0; v < c.d_v; ++v) d.out_ref.want(r, v) = 0.0;
      d.lse_ref.want(r, 0) = -kInf;
      continue;
    }
    const double lse = all_max + std::log(all_sum);
    double big_r = 0.0;
    std::vector<double> rel(static_cast<size_t>(c.n), 0.0);
    for (int64_t i = 0; i < c.n; ++i) {
      if (piece_lse[i] == -kInf) continue;
      rel[i] = kU * (std::fabs(d.lses[i][r]) + std::fabs(d.lses[i][r] - lse_max)) +
               2.0 * kMergeExpUlps * kU;
      big_r = std::max(big_r, rel[i]);
    }
    const double common = big_r + Gamma(std::max<int64_t>(c.n - 1, 0)) + kU;
    for (int64_t v = 0; v < c.d_v; ++v) {
      d.out_ref.want(r, v) = all_out[v] / all_sum;
      double b = 0.0;
      for (int64_t i = 0; i < c.n; ++i) {
        if (piece_lse[i] == -kInf) continue;
        const double w = std::exp(piece_lse[i] - lse);
        b += w * std::fabs(piece_out(i, v)) * (rel[i] + common + kU + Gamma(c.n + 2));
      }
      d.out_ref.bound(r, v) = 1.01 * b + static_cast<double>(c.n) * kFloatMinNormal;
    }
    d.lse_ref.want(r, 0) = lse;
    d.lse_ref.bound(r, 0) = 1.01 * (big_r + common + 2.0 * kLogUlps * kU * std::log(double(c.n)) +
                                    kU * std::fabs(lse)) +
                            kU * std::fabs(lse);
  }
  return d;
}

// CheckNear for lse, where an exact -inf (every piece -inf) must be -inf (the difference of two
// -inf is NaN, which CheckNear would reject).
void CheckLse(const float* lse, const Reference& ref, const char* what) {
  Reference finite = ref;
  std::vector<float> got(lse, lse + ref.want.rows);
  for (int64_t r = 0; r < ref.want.rows; ++r) {
    if (ref.want(r, 0) != -kInf) continue;
    CHECK_MESSAGE(got[r] == kNegInf, what, " row ", r, ": got ", got[r], ", want -inf");
    finite.want(r, 0) = 0.0, got[r] = 0.0f;
  }
  CheckNear(got.data(), 1, finite, what);
}

// Runs the merge on every target and checks out, lse, and that no padding or guard was written.
void CheckMerge(const MergeCase& c) {
  INFO(c.Describe());
  const MergeData d = Build(c);
  ForEachTarget([&] {
    Strided out = Strided::Matrix(c.rows, c.d_v, c.d_v + c.pad_out);
    std::vector<float> lse(static_cast<size_t>(c.rows) + kGuardFloats, Sentinel());
    const auto outs = d.OutPtrs(), lses = d.LsePtrs();
    CheckOk(simdattn_attention_merge(c.n, c.rows, c.d_v, outs.data(), c.d_v + c.pad_in, lses.data(),
                                     out.data(), out.ld(), lse.data()));
    CheckNear(out.data(), out.ld(), d.out_ref, "out");
    CheckLse(lse.data(), d.lse_ref, "lse");
    out.CheckGapsUntouched("out padding");
    for (size_t g = static_cast<size_t>(c.rows); g < lse.size(); ++g) {
      CHECK(Bits(lse[g]) == Bits(Sentinel()));
    }
  });
}

TEST_CASE("merge: random pieces match the float64 softmax over all keys") {
  for (const int64_t d_v : {1, 7, 16, 33, 64, 128}) {
    for (const int64_t n : {2, 3, 7}) {
      MergeCase c;
      c.n = n, c.d_v = d_v, c.keys = 10 * n + 3, c.seed = static_cast<uint64_t>(d_v * 10 + n);
      CheckMerge(c);
    }
  }
}

TEST_CASE("merge: more pieces than one weighting group (32), some of them empty") {
  MergeCase c;
  c.n = 75, c.keys = 300, c.run = 2, c.d_v = 37, c.empty = {0, 31, 32, 33, 74};
  CheckMerge(c);
}

TEST_CASE("merge: empty and fully masked pieces add nothing (NaN outputs are not read)") {
  MergeCase c;
  c.n = 5, c.empty = {1}, c.masked = {0, 3};
  SUBCASE("mixed") { CheckMerge(c); }
  SUBCASE("every piece -inf: out 0, lse -inf") {
    c.empty = {0, 1, 2}, c.masked = {3, 4};
    CheckMerge(c);
  }
  SUBCASE("scores +-80: weights e^-160 apart, some underflow to 0 and are skipped") {
    c.range = 80.0f, c.masked = {};
    CheckMerge(c);
  }
}

TEST_CASE("merge: padded strides, and d_v = 0 merges lse only (outs and out NULL)") {
  MergeCase c;
  c.pad_in = 5, c.pad_out = 3, c.d_v = 20;
  CheckMerge(c);
  c.d_v = 0;
  const MergeData d = Build(c);
  std::vector<float> lse(static_cast<size_t>(c.rows), Sentinel());
  const auto lses = d.LsePtrs();
  CheckOk(
      simdattn_attention_merge(c.n, c.rows, 0, nullptr, 1, lses.data(), nullptr, 1, lse.data()));
  CheckLse(lse.data(), d.lse_ref, "lse (d_v = 0)");
}

TEST_CASE("merge: one piece is returned bitwise unchanged") {
  MergeCase c;
  c.n = 1, c.d_v = 19, c.keys = 12;
  const MergeData d = Build(c);
  ForEachTarget([&] {
    Strided out = Strided::Matrix(c.rows, c.d_v, c.d_v);
    std::vector<float> lse(static_cast<size_t>(c.rows));
    const auto outs = d.OutPtrs(), lses = d.LsePtrs();
    CheckOk(simdattn_attention_merge(1, c.rows, c.d_v, outs.data(), c.d_v, lses.data(), out.data(),
                                     c.d_v, lse.data()));
    CheckBitwiseEqual(out.data(), d.outs[0].data(), static_cast<size_t>(c.rows * c.d_v), "out");
    CheckBitwiseEqual(lse.data(), d.lses[0].data(), lse.size(), "lse");
  });
}

TEST_CASE("merge: in place (out == outs[0], lse == lses[0]) equals the out-of-place result") {
  for (const int64_t n : {2, 40}) {
    MergeCase c;
    c.n = n, c.keys = 4 * n, c.run = 1, c.d_v = 70, c.pad_in = 2, c.empty = {1};
    INFO(c.Describe());
    MergeData d = Build(c);
    Strided want = Strided::Matrix(c.rows, c.d_v, c.d_v + c.pad_in);
    std::vector<float> want_lse(static_cast<size_t>(c.rows));
    auto outs = d.OutPtrs(), lses = d.LsePtrs();
    CheckOk(simdattn_attention_merge(n, c.rows, c.d_v, outs.data(), want.ld(), lses.data(),
                                     want.data(), want.ld(), want_lse.data()));
    CheckOk(simdattn_attention_merge(n, c.rows, c.d_v, outs.data(), want.ld(), lses.data(),
                                     d.outs[0].data(), want.ld(), d.lses[0].data()));
    CheckBitwiseEqual(d.outs[0].data(), want.data(), want.buffer().size(), "out in place");
    CheckBitwiseEqual(d.lses[0].data(), want_lse.data(), want_lse.size(), "lse in place");
  }
}

TEST_CASE("merge: a NaN or +inf lse makes its row NaN; other rows are unaffected") {
  MergeCase c;
  c.n = 3, c.rows = 4;
  MergeData d = Build(c);
  d.lses[1][1] = kNaN;
  d.lses[2][2] = kInf;
  Strided out = Strided::Matrix(c.rows, c.d_v, c.d_v);
  std::vector<float> lse(static_cast<size_t>(c.rows));
  const auto outs = d.OutPtrs(), lses = d.LsePtrs();
  CheckOk(simdattn_attention_merge(c.n, c.rows, c.d_v, outs.data(), c.d_v, lses.data(), out.data(),
                                   c.d_v, lse.data()));
  for (int64_t r : {1, 2}) {  // CheckNear: a NaN want requires a NaN got
    for (int64_t v = 0; v < c.d_v; ++v) d.out_ref.want(r, v) = kNaN;
    d.lse_ref.want(r, 0) = kNaN;
  }
  CheckNear(out.data(), c.d_v, d.out_ref, "out");
  CheckLse(lse.data(), d.lse_ref, "lse");
}

TEST_CASE("merge: rows == 0 is OK with NULL everywhere; lse NULL is allowed") {
  CheckOk(simdattn_attention_merge(3, 0, 8, nullptr, 8, nullptr, nullptr, 8, nullptr));
  MergeCase c;
  const MergeData d = Build(c);
  Strided out = Strided::Matrix(c.rows, c.d_v, c.d_v);
  const auto outs = d.OutPtrs(), lses = d.LsePtrs();
  CheckOk(simdattn_attention_merge(c.n, c.rows, c.d_v, outs.data(), c.d_v, lses.data(), out.data(),
                                   c.d_v, nullptr));
  CheckNear(out.data(), c.d_v, d.out_ref, "out");
}

TEST_CASE("merge: bitwise identical for 1, 2, 3, 7 and 16 threads") {
  MergeCase c;
  c.n = 9, c.rows = 3000, c.keys = 60, c.d_v = 64, c.empty = {4};
  const MergeData d = Build(c);
  const auto outs = d.OutPtrs(), lses = d.LsePtrs();
  std::vector<float> first_out, first_lse;
  ForEachThreadCount({1, 2, 3, 7, 16}, [&](int32_t) {
    std::vector<float> out(static_cast<size_t>(c.rows * c.d_v)), lse(static_cast<size_t>(c.rows));
    CheckOk(simdattn_attention_merge(c.n, c.rows, c.d_v, outs.data(), c.d_v, lses.data(),
                                     out.data(), c.d_v, lse.data()));
    if (first_out.empty()) {
      CheckNear(out.data(), c.d_v, d.out_ref, "out");
      first_out = out, first_lse = lse;
      return;
    }
    CheckBitwiseEqual(out.data(), first_out.data(), out.size(), "out");
    CheckBitwiseEqual(lse.data(), first_lse.data(), lse.size(), "lse");
  });
}

}  // namespace
}  // namespace simdattn_test

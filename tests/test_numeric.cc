// Numeric robustness: NaN, +-inf, subnormals and +-FLT_MAX in every input of every function.
// What each returns is in include/simdattn.h: a non-finite value stays in the rows (columns,
// query rows, batch entries) whose arithmetic touches it, every other output is bitwise the
// result of the same call without it, and subnormal or extreme finite inputs give finite results.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <cfloat>

namespace simdattn_test {
namespace {

const float kSpecials[] = {kNaN, kInf, -kInf, FLT_MAX, -FLT_MAX};
constexpr float kSubnormal = 1e-40f;

bool AllNaN(const float* p, int64_t n, int64_t stride = 1) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(p[i * stride])) return false;
  }
  return true;
}
bool AllFinite(const std::vector<float>& v) {
  for (const float f : v) {
    if (!std::isfinite(f)) return false;
  }
  return true;
}

TEST_CASE("sgemm: a special value in A row i touches only C row i; in B column j only column j") {
  constexpr int64_t m = 37, n = 45, k = 70;
  const std::vector<float> a0 = RandomFloats(m * k, 1), b0 = RandomFloats(k * n, 2);
  auto run = [&](const std::vector<float>& a, const std::vector<float>& b) {
    std::vector<float> c = RandomFloats(m * n, 3);
    CheckOk(simdattn_sgemm(0, 0, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.25f, c.data(), n));
    return c;
  };
  const std::vector<float> clean = run(a0, b0);
  for (const float special : kSpecials) {
    INFO("special ", special);
    std::vector<float> a = a0;
    a[11 * k + 5] = special;  // row 11
    const std::vector<float> c = run(a, b0);
    for (int64_t i = 0; i < m; ++i) {
      if (i == 11) {
        // NaN gives NaN, +-inf gives +-inf or NaN in every element; FLT_MAX may stay finite.
        if (std::isfinite(special)) continue;
        for (int64_t j = 0; j < n; ++j) CHECK(!std::isfinite(c[i * n + j]));
        if (std::isnan(special)) CHECK(AllNaN(&c[i * n], n));
      } else {
        CheckBitwiseEqual(&c[i * n], &clean[i * n], n, "an untouched row");
      }
    }
    std::vector<float> b = b0;
    b[9 * n + 30] = special;  // column 30
    const std::vector<float> cb = run(a0, b);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (j == 30) {
          if (!std::isfinite(special)) CHECK(!std::isfinite(cb[i * n + j]));
        } else {
          CHECK(Bits(cb[i * n + j]) == Bits(clean[i * n + j]));
        }
      }
    }
  }
  // Subnormals: finite and within the reference bound (which holds down to FLT_MIN).
  std::vector<float> a = a0;
  for (float& x : a) x *= kSubnormal;
  std::vector<float> c(m * n);
  CheckOk(simdattn_sgemm(0, 0, m, n, k, 1.0f, a.data(), k, b0.data(), n, 0.0f, c.data(), n));
  CHECK(AllFinite(c));
  Reference ref = ReferenceGemm(false, false, m, n, k, 1.0f, a.data(), k, b0.data(), n, 0.0f,
                                c.data(), n);
  for (double& b : ref.bound.v) b += static_cast<double>(k) * FLT_MIN;  // flushed or rounded tiny terms
  CheckNear(c.data(), n, ref, "subnormal A");
  // NaN or inf in C with beta = 0 is never read.
  std::vector<float> cn(m * n, kNaN);
  CheckOk(simdattn_sgemm(0, 0, m, n, k, 1.0f, a0.data(), k, b0.data(), n, 0.0f, cn.data(), n));
  CHECK(AllFinite(cn));
}

TEST_CASE("softmax: special rows as documented; other rows unchanged; extremes stay finite") {
  constexpr int64_t rows = 9, cols = 133;
  const std::vector<float> x0 = RandomFloats(rows * cols, 4, -20, 20);
  std::vector<float> clean(x0.size());
  CheckOk(simdattn_softmax(rows, cols, x0.data(), cols, clean.data(), cols));
  for (const float special : kSpecials) {
    INFO("special ", special);
    std::vector<float> x = x0, y(x.size());
    x[4 * cols + 77] = special;
    CheckOk(simdattn_softmax(rows, cols, x.data(), cols, y.data(), cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float* yr = &y[r * cols];
      if (r != 4) {
        CheckBitwiseEqual(yr, &clean[r * cols], cols, "an untouched row");
      } else if (std::isnan(special) || special == kInf) {
        CHECK(AllNaN(yr, cols));
      } else if (special == FLT_MAX) {
        CHECK(yr[77] == 1.0f);  // every other term underflows next to it
        for (int64_t j = 0; j < cols; ++j) CHECK((j == 77 || yr[j] == 0.0f));
      } else {  // -inf or -FLT_MAX: that element's weight is 0, the row is finite
        CHECK(yr[77] == 0.0f);
        std::vector<float> row(yr, yr + cols);
        CHECK(AllFinite(row));
      }
    }
  }
  // A row of subnormals is uniform; a row of -FLT_MAX and FLT_MAX is one-hot (FLT_MAX - -FLT_MAX
  // overflows to inf in float, exp(-inf) = 0: not NaN).
  std::vector<float> x(2 * 4, kSubnormal), y(8);
  x[4] = -FLT_MAX, x[5] = FLT_MAX, x[6] = -FLT_MAX, x[7] = 0.0f;
  CheckOk(simdattn_softmax(2, 4, x.data(), 4, y.data(), 4));
  for (int j = 0; j < 4; ++j) CHECK(y[j] == 0.25f);
  CHECK(y[5] == 1.0f);
  CHECK((y[4] == 0.0f && y[6] == 0.0f && y[7] == 0.0f));
}

// [2, 2, L, D] problem, causal top-left: query i sees keys 0..i.
struct SdpaNumeric {
  static constexpr int64_t kB = 2, kH = 2, kL = 70, kD = 24;
  std::vector<float> q = RandomFloats(kB * kH * kL * kD, 5), k = RandomFloats(kB * kH * kL * kD, 6);
  std::vector<float> v = RandomFloats(kB * kH * kL * kD, 7);
  std::vector<float> out, lse;
  void Run() {
    out.assign(q.size(), 0.0f);
    lse.assign(kB * kH * kL, 0.0f);
    simdattn_sdpa_options o;
    simdattn_sdpa_options_init(&o);
    o.causal = SIMDATTN_CAUSAL_TOP_LEFT;
    o.lse = lse.data();
    CheckOk(simdattn_sdpa(q.data(), k.data(), v.data(), out.data(), kB, kH, kL, kL, kD, kD, &o));
  }
  static int64_t Row(int64_t b, int64_t h, int64_t i) { return (b * kH + h) * kL + i; }
};

TEST_CASE("sdpa: a special value touches only the query rows that read it") {
  SdpaNumeric clean;
  clean.Run();
  constexpr int64_t kB = SdpaNumeric::kB, kH = SdpaNumeric::kH, kL = SdpaNumeric::kL;
  constexpr int64_t kD = SdpaNumeric::kD;
  for (const float special : {kNaN, kInf, -kInf}) {
    for (const char which : {'q', 'k', 'v'}) {
      INFO("special ", special, " in ", std::string(1, which));
      SdpaNumeric t;
      const int64_t row = SdpaNumeric::Row(1, 0, 40);  // batch 1, head 0, sequence position 40
      std::vector<float>& input = which == 'q' ? t.q : which == 'k' ? t.k : t.v;
      // In q or k: every element of the row, so each score it enters is NaN or +-inf whatever
      // the other operand's signs (a single element could cancel against a zero).
      for (int64_t c = 0; c < kD; ++c) {
        if (which == 'v' ? c == 3 : true) input[row * kD + c] = special;
      }
      t.Run();
      for (int64_t b = 0; b < kB; ++b) {
        for (int64_t h = 0; h < kH; ++h) {
          for (int64_t i = 0; i < kL; ++i) {
            const int64_t r = SdpaNumeric::Row(b, h, i);
            // q row 40 is read by query 40 only; k and v row 40 by the queries that see key 40
            // (i >= 40). v's value can also reach the other queries of the same (batch, head)
            // through a zero weight (0 * NaN): documented, so only other pairs are compared.
            const bool reads = b == 1 && h == 0 && (which == 'q' ? i == 40 : i >= 40);
            const bool same_pair = b == 1 && h == 0;
            if (!reads) {
              if (which == 'v' && same_pair) continue;
              CheckBitwiseEqual(&t.out[r * kD], &clean.out[r * kD], kD, "an untouched row");
              CHECK(Bits(t.lse[r]) == Bits(clean.lse[r]));
              continue;
            }
            INFO("query ", i);
            if (which == 'v') {  // convex combination with one non-finite row: non-finite
              CHECK(!std::isfinite(t.out[r * kD + 3]));
            } else if (which == 'q' || special != -kInf) {
              // A NaN or +inf score (q: all of the row's scores are +-inf or NaN) -> NaN row.
              CHECK(AllNaN(&t.out[r * kD], kD));
              CHECK(std::isnan(t.lse[r]));
            }
            // -inf in k: scores -inf (the key is dropped) or +inf (NaN row): either is IEEE.
          }
        }
      }
    }
  }
  // Subnormal q gives finite output (scores round to 0 or tiny values: about the mean of the
  // visible v rows). v as large as FLT_MAX / kv_len stays finite: out is a convex combination,
  // accumulated unnormalised (each weight <= 1 before the final division), as the header says.
  SdpaNumeric t;
  for (float& x : t.q) x *= kSubnormal;
  t.Run();
  CHECK(AllFinite(t.out));
  SdpaNumeric big;
  for (float& x : big.v) x = x < 0 ? -FLT_MAX / kL : FLT_MAX / kL;
  big.Run();
  CHECK(AllFinite(big.out));
}

TEST_CASE("mhsa: a special value in one token's x touches only its batch entry") {
  constexpr int64_t seq = 12, batch = 3, e = 16, heads = 2;
  const std::vector<float> w_in = RandomFloats(3 * e * e, 8), w_out = RandomFloats(e * e, 9);
  const std::vector<float> x0 = RandomFloats(seq * batch * e, 10);
  const simdattn_mha_weights w = {w_in.data(), nullptr, w_out.data(), nullptr};
  auto run = [&](const std::vector<float>& x) {
    std::vector<float> y(x.size());
    CheckOk(simdattn_mhsa(x.data(), y.data(), seq, batch, e, heads, &w, nullptr));
    return y;
  };
  const std::vector<float> clean = run(x0);
  for (const float special : kSpecials) {
    INFO("special ", special);
    std::vector<float> x = x0;
    x[(5 * batch + 1) * e + 2] = special;  // token 5 of batch entry 1 (x is [seq, batch, E])
    const std::vector<float> y = run(x);
    for (int64_t s = 0; s < seq; ++s) {
      for (int64_t b = 0; b < batch; ++b) {
        const float* yr = &y[(s * batch + b) * e];
        if (b != 1) CheckBitwiseEqual(yr, &clean[(s * batch + b) * e], e, "another batch entry");
      }
    }
    if (std::isnan(special)) CHECK(AllNaN(&y[(5 * batch + 1) * e], e));
  }
}

}  // namespace
}  // namespace simdattn_test

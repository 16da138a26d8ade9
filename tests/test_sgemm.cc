// simdattn_sgemm / simdattn_sgemm_batched against a float64 reference and OpenBLAS, on every
// compiled SIMD target: transposes, alpha/beta, odd sizes, padded leading dimensions and strides,
// k == 0, sizes that cross the library's blocking, and batches with broadcast operands.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <cblas.h>

#include <algorithm>
#include <iterator>
#include <sstream>

namespace simdattn_test {
namespace {

// The alpha/beta values of the issue: zero, one, a negative fraction, a non-trivial scale.
constexpr float kScalars[] = {0.0f, 1.0f, -0.5f, 2.5f};
// Odd and power-of-two-adjacent sizes: around every vector width (4, 8, 16 floats), every
// register tile (NR = 2 vectors, MR = 6 or 8 rows) and the KC = 256 depth slice.
constexpr int64_t kOddSizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 255, 257};
constexpr int64_t kLargeSize = 1000;

// One GEMM problem, possibly batched: shapes, scalars, the padding added to every leading
// dimension and the gap between consecutive matrices of a batch.
struct GemmCase {
  int32_t trans_a = 0, trans_b = 0;
  int64_t m = 1, n = 1, k = 1;
  float alpha = 1.0f, beta = 0.0f;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;
  int64_t batch = 1;
  bool broadcast_a = false, broadcast_b = false;  // stride 0: one matrix for every entry
  int64_t gap = 0;                                // stride = one matrix's extent + gap
  uint64_t seed = 1;

  std::string Describe() const {
    std::ostringstream s;
    s << "trans_a=" << trans_a << " trans_b=" << trans_b << " m=" << m << " n=" << n
      << " k=" << k << " alpha=" << alpha << " beta=" << beta << " pads=" << pad_a << ","
      << pad_b << "," << pad_c << " batch=" << batch << (broadcast_a ? " A-broadcast" : "")
      << (broadcast_b ? " B-broadcast" : "") << " gap=" << gap;
    return s.str();
  }
};

// Rows x cols of a stored operand with padded leading dimension, laid out for `batch` entries.
Strided Operand(const GemmCase& g, int64_t rows, int64_t cols, int64_t pad, bool broadcast) {
  const int64_t ld = std::max<int64_t>(1, cols) + pad;
  const int64_t extent = rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  return Strided(g.batch, rows, cols, ld, broadcast ? 0 : extent + g.gap);
}

// The buffers of one case: A, B stored (op() applied by the call), C before the call.
struct GemmOperands {
  Strided a, b, c0;
  explicit GemmOperands(const GemmCase& g)
      : a(Operand(g, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.pad_a, g.broadcast_a)),
        b(Operand(g, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.pad_b, g.broadcast_b)),
        c0(Operand(g, g.m, g.n, g.pad_c, false)) {
    a.Randomize(g.seed * 3 + 0);
    b.Randomize(g.seed * 3 + 1);
    if (g.beta == 0.0f) {
      c0.Fill(kNaN);  // beta == 0 must not read C
    } else {
      c0.Randomize(g.seed * 3 + 2);
    }
  }
  // k == 0 reads neither A nor B: the contract accepts NULL for them then.
  const float* APtr(const GemmCase& g) const { return g.k == 0 ? nullptr : a.data(); }
  const float* BPtr(const GemmCase& g) const { return g.k == 0 ? nullptr : b.data(); }
};

simdattn_status RunSimdattn(const GemmCase& g, const GemmOperands& op, Strided* c) {
  if (g.batch == 1 && !g.broadcast_a && !g.broadcast_b && g.gap == 0) {
    return simdattn_sgemm(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, op.APtr(g), op.a.ld(),
                          op.BPtr(g), op.b.ld(), g.beta, c->data(), c->ld());
  }
  return simdattn_sgemm_batched(g.trans_a, g.trans_b, g.batch, g.m, g.n, g.k, g.alpha, op.APtr(g),
                                op.a.ld(), op.a.stride(), op.BPtr(g), op.b.ld(), op.b.stride(),
                                g.beta, c->data(), c->ld(), c->stride());
}

// cblas_sgemm of batch entry `e` into c (C = 0 instead of NaN when beta == 0: same result).
void RunOpenBlas(const GemmCase& g, const GemmOperands& op, int64_t e, Strided* c) {
  auto trans = [](int32_t t) { return t ? CblasTrans : CblasNoTrans; };
  cblas_sgemm(CblasRowMajor, trans(g.trans_a), trans(g.trans_b), static_cast<int>(g.m),
              static_cast<int>(g.n), static_cast<int>(g.k), g.alpha, op.a.matrix(e),
              static_cast<int>(op.a.ld()), op.b.matrix(e), static_cast<int>(op.b.ld()), g.beta,
              &c->at(e, 0, 0), static_cast<int>(c->ld()));
}

// Runs one case on every target. Each batch entry is compared on its own with the float64
// reference (bound: ReferenceGemm) and with OpenBLAS (within twice the fp32 part of the bound:
// both results are within it of the exact value); A, B and C's gaps must stay untouched.
void CheckGemm(const GemmCase& g) {
  INFO(g.Describe());
  const GemmOperands op(g);
  std::vector<Reference> refs, blas_refs;
  Strided blas_c = op.c0;
  if (g.beta == 0.0f) blas_c.Fill(0.0f);
  for (int64_t e = 0; e < g.batch; ++e) {
    refs.push_back(ReferenceGemm(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, op.a.matrix(e),
                                 op.a.ld(), op.b.matrix(e), op.b.ld(), g.beta, op.c0.matrix(e),
                                 op.c0.ld()));
    Reference blas = refs.back();
    if (g.k > 0) {  // k == 0 reads no A/B; the reference alone is exact there
      RunOpenBlas(g, op, e, &blas_c);
      for (int64_t i = 0; i < g.m; ++i) {
        for (int64_t j = 0; j < g.n; ++j) {
          blas.want(i, j) = blas_c.at(e, i, j);
          blas.bound(i, j) *= 2.0;
        }
      }
    }
    blas_refs.push_back(std::move(blas));
  }
  ForEachTarget([&] {
    Strided c = op.c0;
    const Strided a_before = op.a, b_before = op.b;
    CheckOk(RunSimdattn(g, op, &c));
    for (int64_t e = 0; e < g.batch; ++e) {
      INFO("batch entry ", e);
      CheckNear(&c.at(e, 0, 0), c.ld(), refs[static_cast<size_t>(e)], "C vs float64");
      CheckNear(&c.at(e, 0, 0), c.ld(), blas_refs[static_cast<size_t>(e)], "C vs OpenBLAS");
    }
    c.CheckGapsUntouched("C padding, gaps and guard");
    CheckBitwiseEqual(op.a.data(), a_before.data(), op.a.buffer().size(), "A is read-only");
    CheckBitwiseEqual(op.b.data(), b_before.data(), op.b.buffer().size(), "B is read-only");
  });
}

TEST_CASE("sgemm: every transpose with every alpha and beta") {
  uint64_t seed = 100;
  for (int32_t ta = 0; ta < 2; ++ta) {
    for (int32_t tb = 0; tb < 2; ++tb) {
      for (const float alpha : kScalars) {
        for (const float beta : kScalars) {
          GemmCase g;
          g.trans_a = ta, g.trans_b = tb, g.alpha = alpha, g.beta = beta, g.seed = ++seed;
          g.m = 17, g.n = 33, g.k = 15;  // one ragged tile in every direction
          g.pad_a = seed % 3, g.pad_b = (seed + 1) % 3, g.pad_c = (seed + 2) % 3;
          CheckGemm(g);
        }
      }
    }
  }
}

TEST_CASE("sgemm: odd sizes swept along each dimension") {
  uint64_t seed = 200;
  for (const int64_t s : kOddSizes) {
    // The swept dimension is s; the other two stay small and ragged.
    const int64_t shapes[3][3] = {{s, 17, 33}, {7, s, 15}, {15, 31, s}};
    for (const auto& shape : shapes) {
      GemmCase g;
      g.m = shape[0], g.n = shape[1], g.k = shape[2], g.seed = ++seed;
      g.trans_a = seed % 2, g.trans_b = (seed / 2) % 2;
      g.alpha = kScalars[seed % 4], g.beta = kScalars[(seed / 4) % 4];
      g.pad_a = seed % 2, g.pad_b = (seed % 3) * 2, g.pad_c = seed % 5;
      CheckGemm(g);
    }
  }
}

TEST_CASE("sgemm: odd sizes drawn at random in all three dimensions") {
  constexpr int kDraws = 12;
  std::mt19937_64 rng(300);
  std::uniform_int_distribution<size_t> pick(0, std::size(kOddSizes) - 1);
  for (int i = 0; i < kDraws; ++i) {
    GemmCase g;
    g.m = kOddSizes[pick(rng)], g.n = kOddSizes[pick(rng)], g.k = kOddSizes[pick(rng)];
    g.trans_a = i % 2, g.trans_b = (i / 2) % 2, g.seed = 300 + i;
    g.alpha = kScalars[(i + 1) % 4], g.beta = kScalars[(i / 4) % 4];
    g.pad_c = i % 3;
    CheckGemm(g);
  }
}

// Widths that are whole register tiles (NR = 32 on AVX-512, 16 on AVX2, 8 on SSE4) with a
// small k x n: B is read in place, not packed (up to 8192 floats; 64 x 128 is exactly that,
// 65 x 128 one row over).
TEST_CASE("sgemm: small problems with whole-tile widths (B read in place)") {
  const int64_t shapes[][3] = {{64, 64, 64}, {8, 32, 1}, {5, 96, 85}, {33, 128, 64},
                               {17, 128, 65}, {70, 256, 32}, {3, 16, 7}, {9, 8, 300}};
  uint64_t seed = 350;
  for (const auto& shape : shapes) {
    for (const float beta : {0.0f, -0.5f}) {
      GemmCase g;
      g.m = shape[0], g.n = shape[1], g.k = shape[2], g.seed = ++seed;
      g.trans_a = seed % 2, g.alpha = 2.5f, g.beta = beta;
      g.pad_a = seed % 3, g.pad_b = (seed % 2) * 5, g.pad_c = 1;
      CheckGemm(g);
    }
  }
}

TEST_CASE("sgemm: a size of 1000 in each dimension") {
  const int64_t shapes[][3] = {{kLargeSize, 7, 33}, {3, kLargeSize, 65}, {17, 15, kLargeSize},
                               {65, 129, kLargeSize}};
  uint64_t seed = 400;
  for (const auto& shape : shapes) {
    GemmCase g;
    g.m = shape[0], g.n = shape[1], g.k = shape[2], g.seed = ++seed;
    g.trans_a = seed % 2, g.trans_b = (seed / 2) % 2, g.alpha = -0.5f, g.beta = 2.5f;
    g.pad_a = 3, g.pad_b = 1;
    CheckGemm(g);
  }
}

TEST_CASE("sgemm: crosses the KC, MC and NC blocks (k > 256, m > 192, n > 2048)") {
  for (int32_t t = 0; t < 2; ++t) {  // both packing paths of A and of B
    GemmCase g;
    g.m = 200, g.n = 2100, g.k = 300, g.trans_a = t, g.trans_b = t;
    g.alpha = 2.5f, g.beta = -0.5f, g.pad_a = 1, g.pad_c = 2, g.seed = 500 + t;
    CheckGemm(g);
  }
  GemmCase deep;  // three KC slices
  deep.m = 9, deep.n = 40, deep.k = 3 * 256 + 1, deep.trans_a = 1, deep.beta = 1.0f;
  CheckGemm(deep);
}

TEST_CASE("sgemm: k == 0 gives C = beta * C with NULL A and B") {
  for (int32_t t = 0; t < 2; ++t) {
    for (const float beta : kScalars) {  // beta == 0 starts from a NaN C: must give zeros
      GemmCase g;
      g.m = 5, g.n = 19, g.k = 0, g.trans_a = t, g.trans_b = t, g.alpha = 2.5f, g.beta = beta;
      g.pad_c = 2;
      CheckGemm(g);
    }
  }
}

TEST_CASE("sgemm_batched: entries checked independently, broadcast and padded strides") {
  GemmCase g;
  g.m = 33, g.n = 17, g.k = 65, g.trans_a = 1, g.alpha = 1.0f, g.beta = 0.0f;

  SUBCASE("A broadcast (stride 0), gaps between matrices") {
    g.batch = 4, g.broadcast_a = true, g.gap = 3, g.pad_b = 2;
  }
  SUBCASE("B broadcast (stride 0), tight strides, transposed B") {
    g.batch = 3, g.broadcast_b = true, g.trans_b = 1, g.beta = 2.5f;
  }
  SUBCASE("both broadcast: entries differ only through C") {
    g.batch = 3, g.broadcast_a = g.broadcast_b = true, g.beta = -0.5f, g.gap = 1;
  }
  SUBCASE("padded leading dimensions and strides, k crossing KC") {
    g.batch = 5, g.k = 300, g.gap = 5, g.pad_a = 1, g.pad_b = 2, g.pad_c = 3, g.beta = 1.0f;
  }
  SUBCASE("many tiny entries") {
    g.batch = 37, g.m = 1, g.n = 3, g.k = 2, g.gap = 1, g.alpha = -0.5f;
  }
  SUBCASE("a single entry through the batched entry point") {
    g.batch = 1, g.broadcast_a = true, g.beta = 2.5f;
  }
  CheckGemm(g);
}

}  // namespace
}  // namespace simdattn_test

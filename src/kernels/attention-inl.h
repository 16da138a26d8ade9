// Per-target pieces of flash-style attention in the transposed form used by src/ops/sdpa.cc:
// a block of scores is S^T (keys x query columns, row-major), so every query is one lane of a
// vector and the online softmax is vertical (no horizontal reductions). Running max m and sum l
// live per column; O^T (d_v x columns) accumulates P V through the GEMM microkernel.
// No threads, no allocation, no argument checks.

#if defined(SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_
#undef SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_
#endif

#include <stddef.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/kernels/cast-inl.h"
#include "src/kernels/common-inl.h"
#include "src/kernels/exp-inl.h"
#include "src/kernels/gemm-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The max to subtract: -inf (no visible key yet) becomes 0 so that exp(-inf - 0) = 0, never NaN.
// Every exponential below is ExpNonPositive of x - SafeMax(m) with x <= m (m is a running or
// final maximum of the x's), so its argument is <= 0, or -inf for a masked x.
HWY_INLINE VF SafeMax(DF d, VF m) { return hn::IfThenZeroElse(hn::Eq(m, hn::Set(d, kNegInf)), m); }

// One online-softmax step over a block of scores, without the rescale of the output:
// s: bk rows (keys) x ncols columns (queries), ld apart, ncols a multiple of Lanes; turned into
// exp(s - m_new) in place. m, l: running max and sum per column (ncols each), updated; corr
// (ncols): exp(m_old - m_new) per column, the factor the output accumulated so far takes.
// A NaN or +inf score makes its column's l NaN for good (Exp and Max would otherwise drop it,
// giving a finite or "fully masked" result): the query's out, lse and weights become NaN.
HWY_INLINE void OnlineSoftmaxScores(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                                    float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                                    float* HWY_RESTRICT corr) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t c = 0; c < ncols; c += N) {
    VF block_max = hn::Set(d, kNegInf);
    auto nan = hn::FirstN(d, 0);  // all false
    for (size_t r = 0; r < bk; ++r) {
      const VF v = hn::LoadU(d, s + r * ld + c);
      block_max = hn::Max(block_max, v);
      nan = hn::Or(nan, hn::IsNaN(v));
    }
    const auto poisoned = hn::Or(nan, hn::Eq(block_max, hn::Set(d, -kNegInf)));
    const VF m_old = hn::LoadU(d, m + c);
    const VF m_new = hn::Max(m_old, block_max);
    const VF m_safe = SafeMax(d, m_new);
    const VF cv = ExpNonPositive(d, hn::Sub(m_old, m_safe));
    VF sum0 = hn::Zero(d), sum1 = hn::Zero(d);
    size_t r = 0;
    for (; r + 2 <= bk; r += 2) {
      float* s0 = s + r * ld + c;
      const VF p0 = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s0), m_safe));
      const VF p1 = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s0 + ld), m_safe));
      hn::StoreU(p0, d, s0);
      hn::StoreU(p1, d, s0 + ld);
      sum0 = hn::Add(sum0, p0);
      sum1 = hn::Add(sum1, p1);
    }
    if (r < bk) {
      const VF p0 = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s + r * ld + c), m_safe));
      hn::StoreU(p0, d, s + r * ld + c);
      sum0 = hn::Add(sum0, p0);
    }
    const VF l_new = hn::MulAdd(hn::LoadU(d, l + c), cv, hn::Add(sum0, sum1));
    hn::StoreU(hn::IfThenElse(poisoned, hn::Set(d, std::numeric_limits<float>::quiet_NaN()), l_new),
               d, l + c);
    hn::StoreU(m_new, d, m + c);
    hn::StoreU(cv, d, corr + c);
  }
}

// Decode's scores of ncols (<= 8) columns stored compactly: CompactCols(ncols) a row, where a
// vector holds whole rows (CanCompact).
HWY_INLINE size_t CompactCols(size_t ncols) { return ncols <= 4 ? 4 : 8; }
HWY_INLINE bool CanCompact(size_t ncols) { return hn::Lanes(DF()) % CompactCols(ncols) == 0; }

// OnlineSoftmaxScores for a block stored compactly: bk rows of ldc columns (ldc divides Lanes),
// each vector Lanes / ldc keys (lane i: column i % ldc), so that a few columns do not take a
// vector of exponentials per key (4 columns of 16 lanes: a quarter as many). s has room for
// bk * ldc floats rounded up to whole vectors; the rows past bk become -inf (p = 0).
// m, l, corr: ldc floats each, as there (a NaN or +inf score poisons its column's l).
HWY_INLINE void OnlineSoftmaxCompact(float* HWY_RESTRICT s, size_t bk, size_t ldc,
                                     float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                                     float* HWY_RESTRICT corr) {
  const DF d;
  const size_t N = hn::Lanes(d), nv = (bk * ldc + N - 1) / N;
  std::fill(s + bk * ldc, s + nv * N, kNegInf);
  VF vmax = hn::Set(d, kNegInf);
  auto nan = hn::FirstN(d, 0);  // all false
  for (size_t v = 0; v < nv; ++v) {
    const VF x = hn::LoadU(d, s + v * N);
    vmax = hn::Max(vmax, x);
    nan = hn::Or(nan, hn::IsNaN(x));
  }
  // Each column's lanes folded; its old max and its max to subtract as lane patterns.
  HWY_ALIGN float lanes[kMaxLanesF], bad[kMaxLanesF], m_old[kMaxLanesF], m_safe[kMaxLanesF];
  hn::Store(vmax, d, lanes);
  hn::Store(hn::IfThenElseZero(nan, hn::Set(d, 1.0f)), d, bad);
  bool poisoned[kMaxLanesF];
  for (size_t j = 0; j < ldc; ++j) {
    float block_max = kNegInf;
    poisoned[j] = false;
    for (size_t i = j; i < N; i += ldc) {
      block_max = std::max(block_max, lanes[i]);
      poisoned[j] = poisoned[j] || bad[i] != 0.0f;
    }
    poisoned[j] = poisoned[j] || block_max == -kNegInf;
    const float m_new = std::max(m[j], block_max);
    for (size_t i = j; i < N; i += ldc) {
      m_old[i] = m[j];
      m_safe[i] = m_new == kNegInf ? 0.0f : m_new;  // SafeMax
    }
    m[j] = m_new;
  }
  const VF ms = hn::Load(d, m_safe);
  hn::Store(ExpNonPositive(d, hn::Sub(hn::Load(d, m_old), ms)), d, m_old);  // the rescale
  VF sum = hn::Zero(d);
  for (size_t v = 0; v < nv; ++v) {
    const VF p = ExpNonPositive(d, hn::Sub(hn::LoadU(d, s + v * N), ms));
    hn::StoreU(p, d, s + v * N);
    sum = hn::Add(sum, p);
  }
  hn::Store(sum, d, lanes);
  for (size_t j = 0; j < ldc; ++j) {
    float total = 0.0f;
    for (size_t i = j; i < N; i += ldc) total += lanes[i];
    corr[j] = m_old[j];
    l[j] = poisoned[j] ? std::numeric_limits<float>::quiet_NaN() : l[j] * corr[j] + total;
  }
}

// OnlineSoftmaxScores, then o (dv rows x ncols, ldo apart: O^T) rescaled by corr per column
// where m moved. corr: ncols floats of scratch.
HWY_INLINE void OnlineSoftmaxStep(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                                  float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                                  float* HWY_RESTRICT o, size_t ldo, size_t dv,
                                  float* HWY_RESTRICT corr) {
  const DF d;
  const size_t N = hn::Lanes(d);
  OnlineSoftmaxScores(s, ld, bk, ncols, m, l, corr);
  for (size_t c = 0; c < ncols; c += N) {
    const VF cv = hn::LoadU(d, corr + c);
    if (hn::AllTrue(d, hn::Eq(cv, hn::Set(d, 1.0f)))) continue;
    for (size_t i = 0; i < dv; ++i) {
      float* orow = o + i * ldo + c;
      hn::StoreU(hn::Mul(hn::LoadU(d, orow), cv), d, orow);
    }
  }
}

// s (bk x ncols, ld) = exp(s - m) / l per column: the final probabilities; 0 where l == 0,
// NaN where l is NaN (a NaN or +inf score).
HWY_INLINE void NormalizeBlock(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                               const float* HWY_RESTRICT m, const float* HWY_RESTRICT l) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t c = 0; c < ncols; c += N) {
    const VF lv = hn::LoadU(d, l + c);
    const VF inv = hn::IfThenZeroElse(hn::Eq(lv, hn::Zero(d)), hn::Div(hn::Set(d, 1.0f), lv));
    const VF m_safe = SafeMax(d, hn::LoadU(d, m + c));
    for (size_t r = 0; r < bk; ++r) {
      float* p = s + r * ld + c;
      hn::StoreU(hn::Mul(ExpNonPositive(d, hn::Sub(hn::LoadU(d, p), m_safe)), inv), d, p);
    }
  }
}

// ------------------------------------------------------------------ score variants
// tanh(x): the odd rational minimax approximation of degrees 13/6 that Eigen and MLAS use, on x
// clamped to +-7.90531110763549805 (beyond it tanh rounds to +-1 in float), and x itself below
// 0.0004 (where x - tanh(x) < x^3/3 is under half an ulp). At most 4.9 ulp (measured over every
// float in [0.0004, 20] against double tanh), absolute error <= 2.92e-7. About half the cost of
// Highway's expm1-based Tanh. NaN stays NaN: the clamps take x as their second operand, the
// one x86 min/max return when an operand is NaN; +-inf gives +-1.
HWY_INLINE VF TanhRational(DF d, VF x) {
  const VF c = hn::Set(d, 7.90531110763549805f);
  const VF xc = hn::Max(hn::Neg(c), hn::Min(c, x));
  const VF x2 = hn::Mul(xc, xc);
  VF p = hn::MulAdd(x2, hn::Set(d, -2.76076847742355e-16f), hn::Set(d, 2.00018790482477e-13f));
  p = hn::MulAdd(x2, p, hn::Set(d, -8.60467152213735e-11f));
  p = hn::MulAdd(x2, p, hn::Set(d, 5.12229709037114e-08f));
  p = hn::MulAdd(x2, p, hn::Set(d, 1.48572235717979e-05f));
  p = hn::MulAdd(x2, p, hn::Set(d, 6.37261928875436e-04f));
  p = hn::MulAdd(x2, p, hn::Set(d, 4.89352455891786e-03f));
  VF q = hn::MulAdd(x2, hn::Set(d, 1.19825839466702e-06f), hn::Set(d, 1.18534705686654e-04f));
  q = hn::MulAdd(x2, q, hn::Set(d, 2.26843463243900e-03f));
  q = hn::MulAdd(x2, q, hn::Set(d, 4.89352518554385e-03f));
  const VF t = hn::Div(hn::Mul(p, xc), q);
  return hn::IfThenElse(hn::Lt(hn::Abs(x), hn::Set(d, 0.0004f)), x, t);
}

// Logit soft-capping (Gemma 2): cap * tanh(s / cap). inv_cap = 1 / cap, or 0 when that
// overflows (a subnormal cap): then s / cap is divided exactly (0 stays 0, never 0 * inf).
HWY_INLINE VF Softcap(DF d, VF s, VF cap, VF inv_cap, bool tiny_cap) {
  const VF x = tiny_cap ? hn::Div(s, cap) : hn::Mul(s, inv_cap);
  return hn::Mul(cap, TanhRational(d, x));
}

// Whether 1 / cap overflows (cap > 0 finite): Softcap's tiny_cap.
HWY_INLINE bool TinyCap(float cap) { return !(1.0f / cap <= hwy::HighestValue<float>()); }

// s (bk rows x ncols columns, ld apart) = Softcap(s) in place.
HWY_INLINE void SoftcapBlock(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                             float cap) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const bool tiny = TinyCap(cap);
  const VF vcap = hn::Set(d, cap), vinv = hn::Set(d, tiny ? 0.0f : 1.0f / cap);
  for (size_t r = 0; r < bk; ++r) {
    for (size_t c = 0; c < ncols; c += N) {
      hn::StoreU(Softcap(d, hn::LoadU(d, s + r * ld + c), vcap, vinv, tiny), d, s + r * ld + c);
    }
  }
}

// ALiBi on a block: s[r][c] -= slope[c] * |(k0 + r) - pos[c]| with one rounding (a fused
// multiply-add). pos: the query position d_i of each column as a float, exact, as are k0 + r
// and the distance: the caller guarantees every position is below 2^23 in magnitude.
HWY_INLINE void AlibiBlock(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols, int64_t k0,
                           const float* HWY_RESTRICT pos, const float* HWY_RESTRICT slope) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t r = 0; r < bk; ++r) {
    const VF key = hn::Set(d, static_cast<float>(k0 + static_cast<int64_t>(r)));
    for (size_t c = 0; c < ncols; c += N) {
      const VF dist = hn::Abs(hn::Sub(key, hn::LoadU(d, pos + c)));
      float* p = s + r * ld + c;
      hn::StoreU(hn::NegMulAdd(hn::LoadU(d, slope + c), dist, hn::LoadU(d, p)), d, p);
    }
  }
}

// Few query columns (decode): dot products along d instead of the register-tile GEMM, which
// would waste most of its NR lanes. At most kRowCols columns.
constexpr size_t kRowCols = 8;
// Accumulators the decode kernels keep in registers, the rest holding the loaded K/V vectors
// and the broadcast: half of AVX-512's 32; 12 of 16 below (12 + 3 loads + 1 broadcast), since
// 8 chains of 4-cycle FMAs leave 2 FMA pipes idle whenever a load is late (Zen 3, value
// accumulation from L1: 8 accumulators 19-21 ns a bf16 key for 4 heads of 128, 12: 14-15).
constexpr size_t kDecodeAccs = HWY_TARGET <= HWY_AVX3 ? 16 : 12;

// Rows of a block of K or V (or of merged pieces): row j at base + j * seq (a strided tensor),
// or the j-th of a list (rows gathered through a paged cache's block table, or merge pieces).
// Elements: float, or Bf16/F16 (LoadWide).
template <class T = float>
struct StridedRows {
  const T* base;
  size_t seq;
  const T* operator[](size_t j) const { return base + j * seq; }
};
template <class T>
StridedRows(const T*, size_t) -> StridedRows<T>;
template <class T = float>
struct ListedRows {
  const T* const* rows;
  size_t off = 0;  // elements past each listed address (another kv head of the same key)
  const T* operator[](size_t j) const { return rows[j] + off; }
};
template <class T>
ListedRows(const T* const*) -> ListedRows<T>;
template <class T>
ListedRows(const T* const*, size_t) -> ListedRows<T>;

// Lines a decode kernel asks into L2 while it streams its own rows: lines [l0, l1) of the rows
// a[0..n) (a_lines lines each) followed by the rows b[0..n) (b_lines each), in that order; a
// kernel calls Spread with the steps it will take (its rows times its passes), At once a step,
// and Finish after its last. They are the operand the caller reads next (dense: V during the
// scores, the next block's K during the values; paged: a slice of the next block), a block ahead
// of its use. Not into L1 (a block of V can be as large as L1D): PREFETCHT2 (Zen 4, bf16 decode
// of 32768 keys: none 10.9 ms, T0 12.8, NTA 13.4, T1 6.6, T2 6.4).
// A paged block's 2 kernel calls per head take consecutive slices of the next block: a core's
// requests run through memory in order, spread evenly over all its steps. Zen 3, bf16, 32 heads
// over 8 of 128, 32768 keys: one head's rows at a time (256 B every 2 KiB) bought nothing over
// no far prefetch; in address order one thread went from 67 to 57 ns a key and kv head, and
// spread over all value passes (not only the first) to 53; two threads, time over the read time
// of 2x the bytes in the same process, 1.19 -> 0.88 -> 0.73 (median).
// These are the decode kernels' only prefetches: rows of their own block asked 8 ahead into L1
// as well cost more instructions than they hid (Zen 3, one thread, the shape above: 53.5 -> 49.4
// ns from DRAM, 50.6 -> 46.2 from L3; dense f32 81 -> 72; two threads bf16 0.82 -> 0.79 and
// dense f32 1.28 -> 1.08 times the read time of 268 MB, median of 4).
template <class Rows>
class FarLines {
 public:
  FarLines(const Rows& a, const Rows& b, size_t n, size_t a_lines, size_t b_lines, size_t l0,
           size_t l1)
      : a_(a), b_(b), n_(n), a_lines_(a_lines), b_lines_(b_lines), left_(l1 - l0) {
    if (left_ == 0) return;  // (no row address formed: the lists may be empty)
    const size_t a_end = n * a_lines;
    in_a_ = l0 < a_end;
    const size_t per_row = in_a_ ? a_lines : b_lines, i = in_a_ ? l0 : l0 - a_end;
    row_ = i / per_row;
    Enter(i % per_row);
  }
  // The whole rows a[0..n).
  FarLines(const Rows& a, size_t n, size_t bytes)
      : FarLines(a, a, n, (bytes + 63) / 64, 0, 0, n * ((bytes + 63) / 64)) {}

  HWY_INLINE void Spread(size_t steps) {
    per_step_ = steps == 0 ? left_ : (left_ + steps - 1) / steps;
  }
  HWY_INLINE void At() { Lines(per_step_); }
  HWY_INLINE void Finish() { Lines(left_); }

 private:
  // Points at line `line` of row row_ of the current list.
  HWY_INLINE void Enter(size_t line) {
    const char* row = reinterpret_cast<const char*>(in_a_ ? a_[row_] : b_[row_]);
    end_ = row + (in_a_ ? a_lines_ : b_lines_) * 64;
    at_ = row + line * 64;
  }
  HWY_INLINE void Lines(size_t count) {
    for (count = std::min(count, left_); count != 0; --count) {
      __builtin_prefetch(at_, 0, 1);
      at_ += 64;
      if (--left_ != 0 && at_ == end_) {
        if (++row_ == n_) in_a_ = false, row_ = 0;
        Enter(0);
      }
    }
  }
  Rows a_, b_;
  size_t n_, a_lines_, b_lines_;
  size_t left_, per_step_ = 0, row_ = 0;
  const char* at_ = nullptr;
  const char* end_ = nullptr;
  bool in_a_ = true;
};

struct NoFarLines {
  HWY_INLINE void Spread(size_t) {}
  HWY_INLINE void At() {}
  HWY_INLINE void Finish() {}
};

#if HWY_TARGET != HWY_SCALAR
// Four accumulators -> one vector whose lanes 4b..4b+3 (128-bit block b) hold the sums of a0..a3
// over their block b: 6 shuffles and 3 adds, where four SumOfLanes would each shuffle log2(N)
// times.
HWY_INLINE VF SumOfFourPerBlock(DF d, VF a0, VF a1, VF a2, VF a3) {
  const hn::Repartition<double, DF> dw;
  const VF t0 = hn::Add(hn::InterleaveLower(d, a0, a1), hn::InterleaveUpper(d, a0, a1));
  const VF t1 = hn::Add(hn::InterleaveLower(d, a2, a3), hn::InterleaveUpper(d, a2, a3));
  const auto w0 = hn::BitCast(dw, t0), w1 = hn::BitCast(dw, t1);
  return hn::Add(hn::BitCast(d, hn::InterleaveLower(dw, w0, w1)),
                 hn::BitCast(d, hn::InterleaveUpper(dw, w0, w1)));
}

// dst[q][0..3] = scale * (the lane sums of quad[q][0..3]) for q < kQuads: 4 * kQuads dot
// products ended together (the register transposes of SumOfFourPerBlock, then one add across
// blocks). kQuads: 4 on AVX-512, 2 or 4 below.
template <size_t kQuads>
HWY_INLINE void StoreQuadSums(DF d, const VF (&quad)[kQuads][4], float scale,
                              float* const (&dst)[kQuads]) {
  static_assert(kQuads == 4 || (kQuads >= 1 && kQuads <= 4 && HWY_TARGET > HWY_AVX3),
                "quads per store");
  VF u[kQuads];
  for (size_t q = 0; q < kQuads; ++q) {
    u[q] = SumOfFourPerBlock(d, quad[q][0], quad[q][1], quad[q][2], quad[q][3]);
  }
  HWY_ALIGN float sums[4 * 4];
#if HWY_TARGET <= HWY_AVX3  // 4 blocks: u[q] -> block q of one vector
  const VF s01 = hn::Add(hn::ConcatLowerLower(d, u[1], u[0]), hn::ConcatUpperUpper(d, u[1], u[0]));
  const VF s23 = hn::Add(hn::ConcatLowerLower(d, u[3], u[2]), hn::ConcatUpperUpper(d, u[3], u[2]));
  // s01 = [u0 02, u0 13, u1 02, u1 13] (blocks summed), likewise s23: quads 0, 2, 1, 3.
  const VF all = hn::Add(hn::OddEvenBlocks(hn::SwapAdjacentBlocks(s23), s01),
                         hn::OddEvenBlocks(s23, hn::SwapAdjacentBlocks(s01)));
  hn::Store(hn::Mul(all, hn::Set(d, scale)), d, sums);
  constexpr size_t kBlockOf[4] = {0, 2, 1, 3};
#elif HWY_TARGET == HWY_AVX2  // 2 blocks
  for (size_t q = 0; q < kQuads; q += 2) {  // an odd last quad pairs with itself
    const VF next = q + 1 < kQuads ? u[q + 1] : u[q];
    const VF lo = hn::ConcatLowerLower(d, next, u[q]);
    const VF hi = hn::ConcatUpperUpper(d, next, u[q]);
    hn::Store(hn::Mul(hn::Add(lo, hi), hn::Set(d, scale)), d, sums + 4 * q);
  }
  constexpr size_t kBlockOf[4] = {0, 1, 2, 3};
#else  // 1 block
  for (size_t q = 0; q < kQuads; ++q) hn::Store(hn::Mul(u[q], hn::Set(d, scale)), d, sums + 4 * q);
  constexpr size_t kBlockOf[4] = {0, 1, 2, 3};
#endif
  for (size_t q = 0; q < kQuads; ++q) memcpy(dst[q], sums + 4 * kBlockOf[q], 4 * sizeof(float));
}
#endif

// acc[u][j] += k_u[p:p+n] * q_j[p:p+n] lane-wise (kr[u] = k_u, q_j = q + j * dk); n == N when
// kWhole. (The tail step apart, so that the loop over whole vectors has no partial loads and
// keeps all kRows * kCols accumulators in registers: with 12 on AVX2 GCC spilled one.)
template <bool kWhole, size_t kRows, size_t kCols, class T>
HWY_INLINE void ScoreStep(DF d, const T* const (&kr)[kRows], const float* HWY_RESTRICT q, size_t dk,
                          size_t p, size_t n, VF (&acc)[kRows][kCols]) {
  VF kv[kRows];
  for (size_t u = 0; u < kRows; ++u) {
    kv[u] = kWhole ? LoadWide(d, kr[u] + p) : LoadWidePartial(d, kr[u] + p, n);
  }
  for (size_t j = 0; j < kCols; ++j) {
    const VF qv = kWhole ? hn::LoadU(d, q + j * dk + p) : LoadPartial(d, q + j * dk + p, n, 0.0f);
    for (size_t u = 0; u < kRows; ++u) acc[u][j] = hn::MulAdd(kv[u], qv, acc[u][j]);
  }
}

// s[r * ld + j] = scale * dot(k_r, q_j), k_r = rows[r], q_j = q + j * dk, for r < bk, j < kCols.
// kRows keys at a time: kRows * kCols independent FMA chains held in registers. K's elements:
// float, or Bf16/F16 widened in registers.
// (Not inlined: one copy per instantiation, not one per call site and column count; inlined,
// the sanitizer build of src/ops/sdpa.cc took over 20 minutes. A call per block costs nothing.)
template <size_t kCols, class Rows, class Far>
HWY_NOINLINE void ScoresByRowsT(const Rows& rows, size_t bk, const float* HWY_RESTRICT q, size_t dk,
                              float scale, float* HWY_RESTRICT s, size_t ld, Far far) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(rows[0])>>;
  // Keys per step: kDecodeAccs accumulators of whole quads of columns, so on AVX-512 4 keys for
  // up to 4 columns (each Q vector load feeds 4 FMAs, so loads stop limiting a core with one
  // 512-bit load per cycle), else 2; below AVX-512 3 or 1.
  constexpr size_t kGroups = (kCols + 3) / 4;  // quads of columns
  constexpr size_t kRows = kDecodeAccs / (4 * kGroups);
  const DF d;
  const size_t N = hn::Lanes(d);
  far.Spread((bk + kRows - 1) / kRows * kRows);
  for (size_t r = 0; r < bk; r += kRows) {
    const T* kr[kRows];
    for (size_t u = 0; u < kRows; ++u) {  // a short tail repeats row r, discarded
      kr[u] = rows[r + u < bk ? r + u : r];
    }
    for (size_t u = 0; u < kRows; ++u) far.At();
    VF acc[kRows][kCols];
    for (size_t u = 0; u < kRows; ++u) {
      for (size_t j = 0; j < kCols; ++j) acc[u][j] = hn::Zero(d);
    }
    size_t p = 0;
    for (; p + N <= dk; p += N) ScoreStep<true>(d, kr, q, dk, p, N, acc);
    if (p < dk) ScoreStep<false>(d, kr, q, dk, p, dk - p, acc);
#if HWY_TARGET != HWY_SCALAR
    // Quads of 4 columns of one key (zero past kCols: ld leaves room for them), into a
    // spare row for a key past bk. (Every access to acc has a constant index once the loops
    // unroll, so that GCC keeps acc in registers.)
    HWY_DASSERT(ld >= 4 * kGroups);
    constexpr size_t kQuads = kRows * kGroups;
    VF quad[kQuads][4];
    float* dst[kQuads];
    HWY_ALIGN float spare[8];
    HWY_UNROLL(4)
    for (size_t u = 0; u < kRows; ++u) {
      HWY_UNROLL(2)
      for (size_t g = 0; g < kGroups; ++g) {
        HWY_UNROLL(4)
        for (size_t i = 0; i < 4; ++i) {
          quad[u * kGroups + g][i] = 4 * g + i < kCols ? acc[u][4 * g + i] : hn::Zero(d);
        }
        dst[u * kGroups + g] = r + u < bk ? s + (r + u) * ld + 4 * g : spare + 4 * g;
      }
    }
    StoreQuadSums(d, quad, scale, dst);
#else
    for (size_t u = 0; u < kRows; ++u) {
      for (size_t j = 0; j < kCols; ++j) {
        if (r + u < bk) s[(r + u) * ld + j] = scale * hn::GetLane(hn::SumOfLanes(d, acc[u][j]));
      }
    }
#endif
  }
  far.Finish();
}

// bf16 V rows on AVX2 widen 2 vectors from one 256-bit load, each by one interleave with zero
// (VPUNPCK{L,H}WD, the load folded in): elements 0-3 | 8-11 and 4-7 | 12-15, where
// VPMOVZXWD and a shift took two operations per vector on the ports that Zen 3 shares with an
// FMA pipe. A pass keeps such pairs' accumulators in that order (each element's sum, and so
// the result, is unchanged: values accumulate element-wise).
template <class T, size_t kChunks>
constexpr size_t kPairedChunks =
    std::is_same_v<T, Bf16> && HWY_TARGET == HWY_AVX2 ? kChunks / 2 * 2 : 0;

#if HWY_TARGET == HWY_AVX2
// Output elements [0, 2N) of o -> (lo, hi) order and back (T: the V type, Bf16).
template <class T>
HWY_INLINE void LoadPaired(DF d, const float* HWY_RESTRICT o, VF& lo, VF& hi) {
  const VF a = hn::LoadU(d, o), b = hn::LoadU(d, o + hn::Lanes(d));
  lo = hn::ConcatLowerLower(d, b, a);
  hi = hn::ConcatUpperUpper(d, b, a);
}
template <class T>
HWY_INLINE void StorePaired(DF d, VF lo, VF hi, float* HWY_RESTRICT o) {
  hn::StoreU(hn::ConcatLowerLower(d, hi, lo), d, o);
  hn::StoreU(hn::ConcatUpperUpper(d, hi, lo), d, o + hn::Lanes(d));
}
// 2N bf16 at p -> (lo, hi) order, widened.
template <class T>
HWY_INLINE void LoadWidePaired(DF d, const T* HWY_RESTRICT p, VF& lo, VF& hi) {
  const hn::Repartition<uint16_t, DF> du;
  const auto x = hn::LoadU(du, reinterpret_cast<const uint16_t*>(p));
  lo = hn::BitCast(d, hn::InterleaveLower(du, hn::Zero(du), x));
  hi = hn::BitCast(d, hn::InterleaveUpper(du, hn::Zero(du), x));
}
#else  // declared only: kPairedChunks is 0
template <class T>
void LoadPaired(DF d, const float* HWY_RESTRICT o, VF& lo, VF& hi);
template <class T>
void StorePaired(DF d, VF lo, VF hi, float* HWY_RESTRICT o);
template <class T>
void LoadWidePaired(DF d, const T* HWY_RESTRICT p, VF& lo, VF& hi);
#endif

// One pass of AccumulateByRowsT over elements [i0, i0 + kChunks * N) of the output rows (whole
// vectors, or one vector of w < N elements when kChunks == 1): kCols * kChunks accumulators,
// each V row of the block read once per pass (the first kPairedChunks in pairs, above).
// (Not inlined, as ScoresByRowsT.)
template <size_t kCols, size_t kChunks, class Rows, class Far>
HWY_NOINLINE void AccumulatePass(const Rows& rows, size_t bk, const float* HWY_RESTRICT p,
                                 size_t ld, const float* HWY_RESTRICT corr, float* HWY_RESTRICT o,
                                 size_t ldo, size_t i0, size_t w, Far& far) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(rows[0])>>;
  constexpr size_t kPaired = kPairedChunks<T, kChunks>;
  const DF d;
  const size_t N = hn::Lanes(d);
  const bool whole = kChunks > 1 || w == N;
  VF acc[kCols][kChunks];
  for (size_t j = 0; j < kCols; ++j) {
    const VF cj = hn::Set(d, corr[j]);
    float* oj = o + j * ldo + i0;
    if constexpr (kPaired != 0) {
      for (size_t u = 0; u < kPaired; u += 2) {
        LoadPaired<T>(d, oj + u * N, acc[j][u], acc[j][u + 1]);
      }
    }
    for (size_t u = kPaired; u < kChunks; ++u) {
      acc[j][u] = whole ? hn::LoadU(d, oj + u * N) : LoadPartial(d, oj, w, 0.0f);
    }
    for (size_t u = 0; u < kChunks; ++u) acc[j][u] = hn::Mul(acc[j][u], cj);
  }
  for (size_t r = 0; r < bk; ++r) {
    far.At();
    const T* vr = rows[r] + i0;
    VF vv[kChunks];
    if constexpr (kPaired != 0) {
      for (size_t u = 0; u < kPaired; u += 2) LoadWidePaired<T>(d, vr + u * N, vv[u], vv[u + 1]);
    }
    for (size_t u = kPaired; u < kChunks; ++u) {
      vv[u] = whole ? LoadWide(d, vr + u * N) : LoadWidePartial(d, vr, w);
    }
    for (size_t j = 0; j < kCols; ++j) {
      const VF pj = hn::Set(d, p[r * ld + j]);
      for (size_t u = 0; u < kChunks; ++u) acc[j][u] = hn::MulAdd(vv[u], pj, acc[j][u]);
    }
  }
  for (size_t j = 0; j < kCols; ++j) {
    float* oj = o + j * ldo + i0;
    if constexpr (kPaired != 0) {
      for (size_t u = 0; u < kPaired; u += 2) {
        StorePaired<T>(d, acc[j][u], acc[j][u + 1], oj + u * N);
      }
    }
    for (size_t u = kPaired; u < kChunks; ++u) {
      if (whole) {
        hn::StoreU(acc[j][u], d, oj + u * N);
      } else {
        StorePartial(acc[j][u], d, oj, w);
      }
    }
  }
}

// Bytes of a block's V rows that stay in L1 between value passes: half of the smallest L1D of
// the x86 cores we target (32 KiB).
constexpr size_t kDecodeL1Bytes = 16 << 10;

// Vectors of the next value pass of AccumulateByRowsT with `left` whole vectors to go, passes
// of `most`: then 2, then 1; with 3 a pass, 4 vectors left go as 2 + 2 (a 1-vector pass keeps
// only kCols FMA chains: d 64 on AVX2 runs 3, 3, 2, not 3, 3, 1, 1).
HWY_INLINE size_t PassChunks(size_t left, size_t most) {
  const bool full = left >= most && !(most == 3 && left == 4);
  return full ? most : left >= 2 ? 2 : 1;
}

// o_j = corr[j] * o_j + sum_{r < bk} p[r * ld + j] * v_r for j < kCols: the output rows o_j =
// o + j * ldo (dv floats each), v_r = rows[r]; the sum over r runs in order for every element.
// Passes of up to 4 vectors of the rows (at most kDecodeAccs accumulators), so a V block is
// read dv / (kChunks N) times, not dv / N. far's lines are spread over all passes.
template <size_t kCols, class Rows, class Far>
HWY_INLINE void AccumulateByRowsT(const Rows& rows, size_t bk, const float* HWY_RESTRICT p,
                                  size_t ld, const float* HWY_RESTRICT corr, float* HWY_RESTRICT o,
                                  size_t ldo, size_t dv, Far far) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(rows[0])>>;
  constexpr size_t kChunks = std::max<size_t>(1, std::min<size_t>(4, kDecodeAccs / kCols));
  const size_t N = hn::Lanes(DF());
  // Passes of 3 vectors cut rows off cache-line boundaries: only where the block stays in L1
  // from one pass to the next (a dense f32 decode block, 256 keys of 128 floats, rereads each
  // pass from L2: 2 threads at 32768 keys ran 7-9% slower with 3 than with 2).
  const bool in_l1 = bk * dv * sizeof(T) <= kDecodeL1Bytes;
  const size_t most = kChunks == 3 && !in_l1 ? 2 : kChunks;
  size_t passes = dv % N != 0;  // (a partial vector last)
  for (size_t left = dv / N; left != 0; left -= PassChunks(left, most)) ++passes;
  far.Spread(passes * bk);
  size_t i0 = 0;
  for (size_t left = dv / N; left != 0;) {
    const size_t chunks = PassChunks(left, most);
    if (chunks == kChunks) {
      AccumulatePass<kCols, kChunks>(rows, bk, p, ld, corr, o, ldo, i0, N, far);
    } else if (chunks == 1) {
      AccumulatePass<kCols, 1>(rows, bk, p, ld, corr, o, ldo, i0, N, far);
    } else if constexpr (kChunks > 2) {  // chunks == 2 < kChunks
      AccumulatePass<kCols, 2>(rows, bk, p, ld, corr, o, ldo, i0, N, far);
    }
    i0 += chunks * N;
    left -= chunks;
  }
  if (i0 < dv) {  // a partial vector
    AccumulatePass<kCols, 1>(rows, bk, p, ld, corr, o, ldo, i0, dv - i0, far);
  }
  far.Finish();
}

// Calls F<n>::Run(args...) for the runtime column count 1 <= n <= kRowCols.
#define SIMDATTN_DISPATCH_COLS(n, CALL) \
  switch (n) {                          \
    case 1: CALL(1); break;             \
    case 2: CALL(2); break;             \
    case 3: CALL(3); break;             \
    case 4: CALL(4); break;             \
    case 5: CALL(5); break;             \
    case 6: CALL(6); break;             \
    case 7: CALL(7); break;             \
    default: CALL(8); break;            \
  }

template <class Rows, class Far = NoFarLines>
HWY_INLINE void ScoresByRows(const Rows& rows, size_t bk, const float* q, size_t ncols, size_t dk,
                             float scale, float* s, size_t ld, Far far = Far()) {
#define SIMDATTN_SCORES(C) ScoresByRowsT<C>(rows, bk, q, dk, scale, s, ld, far)
  SIMDATTN_DISPATCH_COLS(ncols, SIMDATTN_SCORES)
#undef SIMDATTN_SCORES
}

template <class Rows, class Far = NoFarLines>
HWY_INLINE void AccumulateByRows(const Rows& rows, size_t bk, const float* p, size_t ld,
                                 size_t ncols, const float* corr, float* o, size_t ldo, size_t dv,
                                 Far far = Far()) {
#define SIMDATTN_ACCUMULATE(C) AccumulateByRowsT<C>(rows, bk, p, ld, corr, o, ldo, dv, far)
  SIMDATTN_DISPATCH_COLS(ncols, SIMDATTN_ACCUMULATE)
#undef SIMDATTN_ACCUMULATE
}

// ------------------------------------------------------------------ few keys (key = lane)
// When every key fits in one vector (kv_len <= Lanes: short sequences such as 10-token MHSA
// heads), a query's scores are one vector: s = sum_p q[p] * kt[p], with K^T packed once per
// (batch, kv head) as d_k rows of Lanes floats. No register tile, no padding to 32 columns.

// kt[p * Lanes + j] = k_j[p] for j < nk, 0 for nk <= j < Lanes; k_j = k + j * k_seq, nk >= 1.
// tmp: Lanes * dk floats of scratch (the rows padded to a whole vector for a register
// transpose).
HWY_INLINE void PackKeysAsLanes(const float* HWY_RESTRICT k, size_t k_seq, size_t nk, size_t dk,
                                float* HWY_RESTRICT kt, float* HWY_RESTRICT tmp) {
  const DF d;
  const size_t N = hn::Lanes(d);
  if (kTransposeN == N && dk % N == 0) {  // contiguous row copies, then register transposes
    for (size_t j = 0; j < N; ++j) {
      if (j < nk) {
        memcpy(tmp + j * dk, k + j * k_seq, dk * sizeof(float));
      } else {
        for (size_t p = 0; p < dk; p += N) hn::StoreU(hn::Zero(d), d, tmp + j * dk + p);
      }
    }
    for (size_t p0 = 0; p0 < dk; p0 += N) TransposeSquare(tmp + p0, dk, kt + p0 * N, N);
    return;
  }
  for (size_t p = 0; p < dk; ++p) hn::Store(hn::Zero(d), d, kt + p * N);
  for (size_t j = 0; j < nk; ++j) {
    const float* row = k + j * k_seq;
    for (size_t p = 0; p < dk; ++p) kt[p * N + j] = row[p];
  }
}

// s[c] = scale * sum_{p < dk} q[c][p] * kt[p] for c < kCols: kCols independent FMA chains.
template <size_t kCols>
HWY_INLINE void ScoresByLanesT(const float* HWY_RESTRICT kt, size_t dk,
                               const float* const* HWY_RESTRICT q, float scale, VF* s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  VF acc[kCols];
  for (size_t c = 0; c < kCols; ++c) acc[c] = hn::Zero(d);
  for (size_t p = 0; p < dk; ++p) {
    const VF kv = hn::Load(d, kt + p * N);
    for (size_t c = 0; c < kCols; ++c) acc[c] = hn::MulAdd(hn::Set(d, q[c][p]), kv, acc[c]);
  }
  for (size_t c = 0; c < kCols; ++c) s[c] = hn::Mul(acc[c], hn::Set(d, scale));
}

// Softmax of one score vector whose invisible lanes are -inf, with an attention sink (a logit
// without a value; -inf for none): p = exp(s - max) written to p_out, returns {max, sum}, the
// sink included in both; max == -inf (nothing visible, no sink) gives p = 0 and sum 0.
struct LaneSoftmax {
  float max, sum;
};
HWY_INLINE LaneSoftmax SoftmaxLanes(VF s, float sink, float* HWY_RESTRICT p_out) {
  const DF d;
  const VF vmax = hn::Max(MaxOfLanesF(d, s), hn::Set(d, sink));
  const VF m_safe = SafeMax(d, vmax);
  const VF e = ExpNonPositive(d, hn::Sub(s, m_safe));
  hn::Store(e, d, p_out);
  const VF e_sink = ExpNonPositive(d, hn::Sub(hn::Set(d, sink), m_safe));
  return LaneSoftmax{hn::GetLane(vmax), hn::GetLane(hn::Add(hn::SumOfLanes(d, e), e_sink))};
}

// out[0:dv] = inv * sum_{j < nk} p[j] * rows[j] (+ out[0:dv] first when accumulate), the sum
// over j in order for every element. Each group of 4 vectors of out is read from every row
// before it is stored, so out may be rows[j] itself (the merge's in-place case).
template <class Rows>
HWY_INLINE void WeightedRowsT(const float* HWY_RESTRICT p, size_t nk, Rows rows, size_t dv,
                              float inv, bool accumulate, float* out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vi = hn::Set(d, inv);
  size_t i = 0;
  for (; i + 4 * N <= dv; i += 4 * N) {  // 4 independent chains
    VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (size_t j = 0; j < nk; ++j) {
      const float* vr = rows[j] + i;
      const VF pj = hn::Set(d, p[j]);
      a0 = hn::MulAdd(pj, hn::LoadU(d, vr), a0);
      a1 = hn::MulAdd(pj, hn::LoadU(d, vr + N), a1);
      a2 = hn::MulAdd(pj, hn::LoadU(d, vr + 2 * N), a2);
      a3 = hn::MulAdd(pj, hn::LoadU(d, vr + 3 * N), a3);
    }
    float* o = out + i;
    if (accumulate) {
      a0 = hn::MulAdd(a0, vi, hn::LoadU(d, o));
      a1 = hn::MulAdd(a1, vi, hn::LoadU(d, o + N));
      a2 = hn::MulAdd(a2, vi, hn::LoadU(d, o + 2 * N));
      a3 = hn::MulAdd(a3, vi, hn::LoadU(d, o + 3 * N));
    } else {
      a0 = hn::Mul(a0, vi), a1 = hn::Mul(a1, vi), a2 = hn::Mul(a2, vi), a3 = hn::Mul(a3, vi);
    }
    hn::StoreU(a0, d, o);
    hn::StoreU(a1, d, o + N);
    hn::StoreU(a2, d, o + 2 * N);
    hn::StoreU(a3, d, o + 3 * N);
  }
  for (; i < dv; i += N) {
    VF a = hn::Zero(d);
    for (size_t j = 0; j < nk; ++j) {
      a = hn::MulAdd(hn::Set(d, p[j]), LoadUpTo(d, rows[j] + i, dv - i, 0.0f), a);
    }
    a = accumulate ? hn::MulAdd(a, vi, LoadUpTo(d, out + i, dv - i, 0.0f)) : hn::Mul(a, vi);
    StoreUpTo(a, d, out + i, dv - i);
  }
}

// out[0:dv] = inv * sum_{j < nk} p[j] * v_j (v_j = v + j * v_seq), the sum over j in order.
HWY_INLINE void WeightedRows(const float* HWY_RESTRICT p, size_t nk,
                             const float* HWY_RESTRICT v, size_t v_seq, size_t dv, float inv,
                             float* HWY_RESTRICT out) {
  WeightedRowsT(p, nk, StridedRows{v, v_seq}, dv, inv, false, out);
}

// ------------------------------------------------------------------ merge of partial results
// The exact merge of partial attention over disjoint key sets, one query row at a time:
// lse = log(sum_i exp(lse_i)), out = sum_i exp(lse_i - lse) * row_i. It serves both the
// public simdattn_attention_merge and simdattn_sdpa's decode split.

// Pieces whose rows are weighted in one WeightedRowsT pass (stack arrays, no allocation).
constexpr size_t kMergeGroup = 32;
// Pieces whose weights one vectorized exp pass computes (a multiple of every vector length, on
// the stack); with more pieces the weights are computed again for the weighted sum.
constexpr size_t kMergeChunk = 256;

// e[j] = exp(Lse(i0 + j) - top) for j < count <= kMergeChunk (0 for -inf), by vectors.
template <class Pieces>
HWY_INLINE void MergeWeights(const Pieces& pieces, size_t i0, size_t count, float top,
                             float* HWY_RESTRICT e) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t j = 0; j < count; ++j) e[j] = pieces.Lse(i0 + j) - top;  // <= 0 or -inf
  for (size_t j = 0; j < count; j += N) {
    const VF x = LoadUpTo(d, e + j, count - j, kNegInf);
    StoreUpTo(ExpNonPositive(d, x), d, e + j, count - j);
  }
}

// Merges the n pieces of one row: pieces.Lse(i) and pieces.Row(i) (dv floats) for i < n, in
// index order. Writes out[0:dv] and returns the merged lse. A piece whose weight
// exp(lse_i - max) is 0 (lse_i = -inf, or an underflow) is skipped: its row is never read. No
// piece left: out = 0, lse -inf. A NaN or +inf lse_i: out and lse NaN. out may be a piece's
// row (in place: every row is read before its elements are stored).
template <class Pieces>
HWY_INLINE float MergeRow(const Pieces& pieces, size_t n, size_t dv, float* out) {
  float top = kNegInf;
  bool poisoned = false;
  for (size_t i = 0; i < n; ++i) {
    const float x = pieces.Lse(i);
    poisoned = poisoned || std::isnan(x) || x == -kNegInf;
    top = std::max(top, x);
  }
  if (poisoned || top == kNegInf) {
    const float fill = poisoned ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    std::fill(out, out + dv, fill);
    return poisoned ? fill : kNegInf;
  }
  HWY_ALIGN float e[kMergeChunk];
  float sum = 0.0f;
  for (size_t i0 = 0; i0 < n; i0 += kMergeChunk) {
    const size_t count = std::min(kMergeChunk, n - i0);
    MergeWeights(pieces, i0, count, top, e);
    for (size_t j = 0; j < count; ++j) sum += e[j];
  }
  const float inv = 1.0f / sum;
  float w[kMergeGroup];
  const float* rows[kMergeGroup];
  size_t kept = 0;
  bool accumulate = false;
  for (size_t i0 = 0; i0 < n; i0 += kMergeChunk) {
    const size_t count = std::min(kMergeChunk, n - i0);
    if (n > kMergeChunk) MergeWeights(pieces, i0, count, top, e);  // else still there
    for (size_t j = 0; j < count; ++j) {
      if (e[j] == 0.0f) continue;
      w[kept] = e[j] * inv;  // normalized first: a convex combination cannot overflow midway
      rows[kept++] = pieces.Row(i0 + j);
      if (kept == kMergeGroup) {
        WeightedRowsT(w, kept, ListedRows{rows}, dv, 1.0f, accumulate, out);
        accumulate = true;
        kept = 0;
      }
    }
  }
  // The largest piece has weight 1, so some row was kept (this group, or a flushed one).
  if (kept > 0) WeightedRowsT(w, kept, ListedRows{rows}, dv, 1.0f, accumulate, out);
  return top + std::log(sum);
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_

// Per-target row softmax: a max pass, a fused exp + sum pass and a scale pass per row, software-
// pipelined across rows (SoftmaxRows); rows of at most one vector in registers. Exponentials
// are ExpNonPositive (exp-inl.h) of x - max <= 0. Special rows: all -inf -> zeros; NaN or +inf
// anywhere -> all NaN.
//
// Contract of every function below: a row is n >= 1 floats; only [x, x + n) is read and only
// [y, y + n) written (tails use fault-free masked loads/stores or a stack buffer, never a whole
// vector past the end). y may equal x (in place: each vector is read before it is written) but
// must not otherwise overlap it. No allocation, no threads: src/ops/softmax.cc plans those.

// Target-independent part (defined once).
#ifndef SIMDATTN_SRC_KERNELS_SOFTMAX_PART_
#define SIMDATTN_SRC_KERNELS_SOFTMAX_PART_

#include <stddef.h>

namespace simdattn {

// What the exp pass learns about a row or a segment of one: the sum of its exponentials and
// whether it holds a NaN or +inf (then the whole row is NaN).
struct SoftmaxPart {
  float sum;
  bool bad;
};

// The maximum of a row from the RowMax of its segments, in segment order: NaN if any is NaN
// (then ExpPass marks the row bad). Exact, like every max.
inline float CombineMax(const float* maxes, size_t count) {
  float m = maxes[0];
  for (size_t s = 1; s < count; ++s) {
    if (maxes[s] > m || maxes[s] != maxes[s]) m = maxes[s];  // a NaN m stays NaN
  }
  return m;
}

// The part of a row from the parts of its segments, summed in segment order (deterministic).
inline SoftmaxPart CombineParts(const SoftmaxPart* parts, size_t count) {
  SoftmaxPart row = parts[0];
  for (size_t s = 1; s < count; ++s) {
    row.sum += parts[s].sum;
    row.bad = row.bad || parts[s].bad;
  }
  return row;
}

}  // namespace simdattn

#endif  // SIMDATTN_SRC_KERNELS_SOFTMAX_PART_

#if defined(SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_
#undef SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>

#include <limits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/kernels/common-inl.h"
#include "src/kernels/exp-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

constexpr float kSoftmaxInf = std::numeric_limits<float>::infinity();

// Each pass works in blocks of kUnroll vectors held in named (register) variables: 4 independent
// exp chains keep the FMA pipes busy, and a block's tree of 4 before its one accumulating Add or
// Max keeps the accumulator's latency off the critical path. Named, not an array: GCC kept
// arrays of Highway vectors on the stack (see gemm-inl.h). A pass over a row is its blocks, then
// its Rest function for the last n % (kUnroll * N) floats; SoftmaxRows runs the blocks of three
// passes of three rows in one loop, with the same results.
constexpr size_t kUnroll = 4;

// ------------------------------------------------------------------ max pass

// Running maximum of a row's blocks.
struct MaxAcc {
  VF m;
};

HWY_INLINE MaxAcc MaxInit(DF d) { return MaxAcc{hn::Set(d, -kSoftmaxInf)}; }

// Folds x[0 : kUnroll * N) into acc.
HWY_INLINE void MaxBlock(DF d, const float* HWY_RESTRICT x, MaxAcc& acc) {
  const size_t N = hn::Lanes(d);
  const VF m01 = hn::Max(hn::LoadU(d, x), hn::LoadU(d, x + N));
  const VF m23 = hn::Max(hn::LoadU(d, x + 2 * N), hn::LoadU(d, x + 3 * N));
  acc.m = hn::Max(acc.m, hn::Max(m01, m23));
}

// Folds x[i:n) into acc and returns the maximum of the row. A NaN may or may not survive Max
// (x86 returns the second operand): the result is then NaN, or the maximum of some elements,
// and the exp pass catches the NaN either way.
HWY_INLINE float MaxRest(DF d, const float* HWY_RESTRICT x, size_t i, size_t n, MaxAcc acc) {
  const size_t N = hn::Lanes(d);
  for (; i + N <= n; i += N) acc.m = hn::Max(acc.m, hn::LoadU(d, x + i));
  if (i < n) acc.m = hn::Max(acc.m, LoadPartial(d, x + i, n - i, -kSoftmaxInf));
  return hn::GetLane(MaxOfLanesF(d, acc.m));
}

// Maximum of x[0:n].
HWY_INLINE float RowMax(const float* HWY_RESTRICT x, size_t n) {
  const DF d;
  const size_t block = kUnroll * hn::Lanes(d);
  MaxAcc acc = MaxInit(d);
  size_t i = 0;
  for (; i + block <= n; i += block) MaxBlock(d, x + i, acc);
  return MaxRest(d, x, i, n, acc);
}

// True if x[0:n] holds a NaN (the rare path of rows whose maximum is -inf).
HWY_INLINE bool HasNaN(const float* HWY_RESTRICT x, size_t n) {
  const DF d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const VF v = hn::LoadU(d, x + i);
    if (!hn::AllTrue(d, hn::Eq(v, v))) return true;
  }
  if (i == n) return false;
  const VF v = LoadPartial(d, x + i, n - i, 0.0f);
  return !hn::AllTrue(d, hn::Eq(v, v));
}

// ------------------------------------------------------------------ exp pass

// The exp pass computes t = x - max and y = exp(t), where max is finite and >= every non-NaN x
// (when the row holds no NaN: x86's Max may drop a NaN and with it earlier elements, see
// MaxRest). Without a NaN each t is <= 0 or -inf, so each y is in [0, 1] (exactly 0 for -inf),
// and their sum is finite; a NaN x gives t = NaN and y = NaN (whatever ExpNonPositive makes of
// the other t, which may then be > 0), so the sum is NaN exactly when the row holds a NaN.
struct ExpAcc {
  VF e_sum;  // sum of the exponentials; per block a tree of kUnroll vectors, then one Add
};

HWY_INLINE ExpAcc ExpInit(DF d) { return ExpAcc{hn::Zero(d)}; }

// y[0 : kUnroll * N) = exp(x - vmax), folded into acc. y may equal x.
HWY_INLINE void ExpBlock(DF d, const float* x, float* y, VF vmax, ExpAcc& acc) {
  const size_t N = hn::Lanes(d);
  const VF t0 = hn::Sub(hn::LoadU(d, x), vmax);
  const VF t1 = hn::Sub(hn::LoadU(d, x + N), vmax);
  const VF t2 = hn::Sub(hn::LoadU(d, x + 2 * N), vmax);
  const VF t3 = hn::Sub(hn::LoadU(d, x + 3 * N), vmax);
  const VF e0 = ExpNonPositive(d, t0), e1 = ExpNonPositive(d, t1);
  const VF e2 = ExpNonPositive(d, t2), e3 = ExpNonPositive(d, t3);
  hn::StoreU(e0, d, y);
  hn::StoreU(e1, d, y + N);
  hn::StoreU(e2, d, y + 2 * N);
  hn::StoreU(e3, d, y + 3 * N);
  acc.e_sum = hn::Add(acc.e_sum, hn::Add(hn::Add(e0, e1), hn::Add(e2, e3)));
}

// y[i:n) = exp(x - vmax), folded into acc; returns the row's sum and whether x holds a NaN.
HWY_INLINE SoftmaxPart ExpRest(DF d, const float* x, float* y, size_t i, size_t n, VF vmax,
                               ExpAcc acc) {
  const size_t N = hn::Lanes(d);
  for (; i + N <= n; i += N) {
    const VF e = ExpNonPositive(d, hn::Sub(hn::LoadU(d, x + i), vmax));
    hn::StoreU(e, d, y + i);
    acc.e_sum = hn::Add(acc.e_sum, e);
  }
  if (i < n) {  // padding lanes are -inf: t = -inf, exp 0
    const VF e = ExpNonPositive(d, hn::Sub(LoadPartial(d, x + i, n - i, -kSoftmaxInf), vmax));
    StorePartial(e, d, y + i, n - i);
    acc.e_sum = hn::Add(acc.e_sum, e);
  }
  const float sum = hn::GetLane(hn::SumOfLanes(d, acc.e_sum));
  return SoftmaxPart{sum, sum != sum};  // NaN iff the row holds a NaN (see ExpAcc)
}

// y[0:n) = exp(x - max) for a finite max >= every non-NaN x; y may equal x.
HWY_INLINE SoftmaxPart ExpSubAndSum(const float* x, float* y, size_t n, float max) {
  const DF d;
  const size_t block = kUnroll * hn::Lanes(d);
  const VF vmax = hn::Set(d, max);
  ExpAcc acc = ExpInit(d);
  size_t i = 0;
  for (; i + block <= n; i += block) ExpBlock(d, x + i, y + i, vmax, acc);
  return ExpRest(d, x, y, i, n, vmax, acc);
}

// The exp pass of a row, or of one segment of a row, given the maximum `max` of the whole row
// (RowMax of the row, or the largest RowMax of its segments): writes y = exp(x - max) when max
// is finite. Returns the part's sum and whether it makes the row NaN.
HWY_INLINE SoftmaxPart ExpPass(const float* x, float* y, size_t n, float max) {
  if (!(max < kSoftmaxInf)) return SoftmaxPart{0.0f, true};  // +inf, or a NaN in the maximum
  if (max == -kSoftmaxInf) return SoftmaxPart{0.0f, HasNaN(x, n)};  // -inf only (or NaN)
  return ExpSubAndSum(x, y, n, max);
}

// ------------------------------------------------------------------ scale pass

// Stores v at p: a non-temporal store (p vector-aligned; lines are neither read for ownership
// nor kept in the caches) if kStream, else an ordinary one.
template <bool kStream>
HWY_INLINE void StoreVec(VF v, DF d, float* HWY_RESTRICT p) {
  if (kStream) return hn::Stream(v, d, p);
  hn::StoreU(v, d, p);
}

// dst[0 : kUnroll * N) = src * vs; dst may equal src.
template <bool kStream>
HWY_INLINE void ScaleBlock(DF d, const float* src, float* dst, VF vs) {
  const size_t N = hn::Lanes(d);
  const VF v0 = hn::LoadU(d, src), v1 = hn::LoadU(d, src + N);
  const VF v2 = hn::LoadU(d, src + 2 * N), v3 = hn::LoadU(d, src + 3 * N);
  StoreVec<kStream>(hn::Mul(v0, vs), d, dst);
  StoreVec<kStream>(hn::Mul(v1, vs), d, dst + N);
  StoreVec<kStream>(hn::Mul(v2, vs), d, dst + 2 * N);
  StoreVec<kStream>(hn::Mul(v3, vs), d, dst + 3 * N);
}

// dst[i:n) = src * vs; dst may equal src.
template <bool kStream>
HWY_INLINE void ScaleRest(DF d, const float* src, float* dst, size_t i, size_t n, VF vs) {
  const size_t N = hn::Lanes(d);
  for (; i + N <= n; i += N) StoreVec<kStream>(hn::Mul(hn::LoadU(d, src + i), vs), d, dst + i);
  if (i < n) StorePartial(hn::Mul(LoadPartial(d, src + i, n - i, 0.0f), vs), d, dst + i, n - i);
}

// dst[0:n) = src * s; dst may equal src.
template <bool kStream>
HWY_INLINE void ScaleRow(const float* src, float* dst, size_t n, float s) {
  const DF d;
  const size_t block = kUnroll * hn::Lanes(d);
  const VF vs = hn::Set(d, s);
  size_t i = 0;
  for (; i + block <= n; i += block) ScaleBlock<kStream>(d, src + i, dst + i, vs);
  ScaleRest<kStream>(d, src, dst, i, n, vs);
}

// y[0:n) = value.
HWY_INLINE void FillRow(float* HWY_RESTRICT y, size_t n, float value) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF v = hn::Set(d, value);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(v, d, y + i);
  if (i < n) StorePartial(v, d, y + i, n - i);
}

// The factor the scale pass multiplies a row's exponentials by: 1 / sum (sum >= 1: the maximum
// contributes exp(0)), or NaN for a row with a NaN (NaN * anything is NaN).
HWY_INLINE float ScaleFactor(SoftmaxPart row) {
  return row.bad ? std::numeric_limits<float>::quiet_NaN() : 1.0f / row.sum;
}

// The last pass of a row, or of one segment of a row, from the whole row's results: its maximum
// and its part (ExpPass, or CombineParts of the segments' ExpPass). NaN rows -> NaN; all -inf ->
// zeros; else y (the exponentials) *= ScaleFactor.
HWY_INLINE void FinishPass(float* HWY_RESTRICT y, size_t n, float max, SoftmaxPart row) {
  if (row.bad) return FillRow(y, n, std::numeric_limits<float>::quiet_NaN());
  if (max == -kSoftmaxInf) return FillRow(y, n, 0.0f);
  ScaleRow<false>(y, y, n, ScaleFactor(row));
}

// ------------------------------------------------------------------ rows

// y[0:n) = softmax(x[0:n)), three passes; y may equal x.
HWY_INLINE void SoftmaxRow(const float* x, float* y, size_t n) {
  const float max = RowMax(x, n);
  FinishPass(y, n, max, ExpPass(x, y, n, max));
}

// ------------------------------------------------------------------ short rows

// Rows of at most one vector (n <= Lanes(d)) are held in one register: one load, one store, no
// passes over memory. Bitwise the same as SoftmaxRow: the same exp, sum and 1 / sum.

// t = v - max(v): NaN in some lane iff v holds a NaN or +inf, or is all -inf (-inf - -inf);
// padding lanes give -inf.
HWY_INLINE VF SubRowMax(DF d, VF v) { return hn::Sub(v, MaxOfLanesF(d, v)); }

// softmax of a row from its t (no NaN, so every t is <= 0 or -inf).
HWY_INLINE VF ShortRowSoftmax(DF d, VF t) {
  const VF e = ExpNonPositive(d, t);
  return hn::Mul(e, hn::Div(hn::Set(d, 1.0f), hn::SumOfLanes(d, e)));
}

// y[0:n) = softmax(x[0:n)), n <= Lanes(d); rows that are not ordinary go to SoftmaxRow. y may
// equal x.
HWY_INLINE void SoftmaxShortRow(const float* x, float* y, size_t n) {
  const DF d;
  const VF t = SubRowMax(d, LoadUpTo(d, x, n, -kSoftmaxInf));
  if (!hn::AllTrue(d, hn::Eq(t, t))) return SoftmaxRow(x, y, n);
  StoreUpTo(ShortRowSoftmax(d, t), d, y, n);
}

// SoftmaxShortRow of rows r < rows (x + r * ld_x -> y + r * ld_y), four rows at a time in named
// registers: one row is a single chain of dependent steps (reductions, exp, division) that the
// out-of-order window cannot overlap with the next row's by itself.
HWY_INLINE void SoftmaxShortRows(const float* x, size_t ld_x, float* y, size_t ld_y, size_t rows,
                                 size_t n) {
  const DF d;
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* x0 = x + r * ld_x;
    float* y0 = y + r * ld_y;
    const VF t0 = SubRowMax(d, LoadUpTo(d, x0, n, -kSoftmaxInf));
    const VF t1 = SubRowMax(d, LoadUpTo(d, x0 + ld_x, n, -kSoftmaxInf));
    const VF t2 = SubRowMax(d, LoadUpTo(d, x0 + 2 * ld_x, n, -kSoftmaxInf));
    const VF t3 = SubRowMax(d, LoadUpTo(d, x0 + 3 * ld_x, n, -kSoftmaxInf));
    const auto ordinary = hn::And(hn::And(hn::Eq(t0, t0), hn::Eq(t1, t1)),
                                  hn::And(hn::Eq(t2, t2), hn::Eq(t3, t3)));
    if (!hn::AllTrue(d, ordinary)) {  // nothing stored yet: redo the four one by one
      for (size_t k = 0; k < 4; ++k) SoftmaxShortRow(x0 + k * ld_x, y0 + k * ld_y, n);
      continue;
    }
    const VF p0 = ShortRowSoftmax(d, t0), p1 = ShortRowSoftmax(d, t1);
    const VF p2 = ShortRowSoftmax(d, t2), p3 = ShortRowSoftmax(d, t3);
    StoreUpTo(p0, d, y0, n);
    StoreUpTo(p1, d, y0 + ld_y, n);
    StoreUpTo(p2, d, y0 + 2 * ld_y, n);
    StoreUpTo(p3, d, y0 + 3 * ld_y, n);
  }
  for (; r < rows; ++r) SoftmaxShortRow(x + r * ld_x, y + r * ld_y, n);
}

// ------------------------------------------------------------------ pipelined rows

// Prefetches the cache line at p into L2 (a read prefetch also serves the later stores: the line
// arrives exclusive when no other core holds it). Not into L1: the rows in work fill it.
HWY_INLINE void PrefetchL2(const float* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}

// Rows longer than this are not prefetched a row ahead: the rows in flight (x of rows r, r+1,
// r+2 and y of rows r-1, r, r+1) should stay within a 1 MiB L2.
constexpr size_t kPrefetchMaxCols = size_t{16} << 10;

// Softmax of rows r < rows of n floats: x + r * ld_x -> y + r * ld_y (y may equal x with
// ld_y == ld_x). Bitwise the same as SoftmaxRow on each row, but software-pipelined: one loop
// runs the exp pass of row r, the max pass of row r + 1 and the scale pass of row r - 1, so no
// pass waits for the reduction (max, sum) that precedes it, the max pass hides under the exp
// pass's arithmetic, and x of row r + 2 is prefetched into L2 meanwhile (for r + 2 <
// rows_present: rows past `rows` that exist, probably the caller's next chunk). Rows whose
// maximum is not finite leave the pipeline for SoftmaxRow.
// kStream: the exponentials go to tmp (2n floats, two rows) and y is written once, by
// non-temporal stores (every row of y vector-aligned): the memory traffic of a streaming copy.
// Else they go to y (whose row r + 1 is prefetched too: its stores then hit L2).
template <bool kStream>
HWY_INLINE void SoftmaxRowsPipelined(const float* x, size_t ld_x, float* y, size_t ld_y,
                                     size_t rows, size_t rows_present, size_t n,
                                     float* HWY_RESTRICT tmp) {
  const DF d;
  const size_t block = kUnroll * hn::Lanes(d);
  constexpr size_t kLineFloats = 64 / sizeof(float);
  // The row whose scale pass is pending, if any: its exponentials and its ScaleFactor.
  float* scale_y = nullptr;
  const float* scale_e = nullptr;
  float scale = 0.0f;
  float max = RowMax(x, n);  // of row r
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld_x;
    float* yr = y + r * ld_y;
    float* er = kStream ? tmp + (r % 2) * n : yr;  // the exponentials of row r
    const float* x_next = r + 1 < rows ? xr + ld_x : nullptr;  // its max pass runs along
    const bool prefetch = r + 2 < rows_present && n <= kPrefetchMaxCols;
    if (!(max < kSoftmaxInf) || max == -kSoftmaxInf) {  // +inf, NaN or all -inf: not pipelined
      if (scale_y != nullptr) ScaleRow<kStream>(scale_e, scale_y, n, scale);
      scale_y = nullptr;
      SoftmaxRow(xr, yr, n);
      if (x_next != nullptr) max = RowMax(x_next, n);
      continue;
    }
    const VF vmax = hn::Set(d, max), vscale = hn::Set(d, scale);
    ExpAcc exp_acc = ExpInit(d);
    MaxAcc max_acc = MaxInit(d);
    size_t i = 0;
    for (; i + block <= n; i += block) {
      if (prefetch) {
        for (size_t j = 0; j < block; j += kLineFloats) {
          PrefetchL2(xr + 2 * ld_x + i + j);
          if (!kStream) PrefetchL2(yr + ld_y + i + j);
        }
      }
      ExpBlock(d, xr + i, er + i, vmax, exp_acc);
      if (x_next != nullptr) MaxBlock(d, x_next + i, max_acc);
      if (scale_y != nullptr) ScaleBlock<kStream>(d, scale_e + i, scale_y + i, vscale);
    }
    const SoftmaxPart part = ExpRest(d, xr, er, i, n, vmax, exp_acc);
    if (x_next != nullptr) max = MaxRest(d, x_next, i, n, max_acc);
    if (scale_y != nullptr) ScaleRest<kStream>(d, scale_e, scale_y, i, n, vscale);
    scale_y = yr;
    scale_e = er;
    scale = ScaleFactor(part);
  }
  if (scale_y != nullptr) ScaleRow<kStream>(scale_e, scale_y, n, scale);
  if (kStream) hwy::FlushStream();  // before another thread may read y
}

// Softmax of rows r < rows of n floats (see SoftmaxRowsPipelined): short rows (n <= Lanes(d))
// in registers, longer ones pipelined, with streaming stores if stream_tmp (2n floats of
// scratch) is not null and the rows of y are vector-aligned.
HWY_INLINE void SoftmaxRows(const float* x, size_t ld_x, float* y, size_t ld_y, size_t rows,
                            size_t rows_present, size_t n, float* HWY_RESTRICT stream_tmp) {
  const size_t N = hn::Lanes(DF());
  if (n <= N) return SoftmaxShortRows(x, ld_x, y, ld_y, rows, n);
  const bool aligned = reinterpret_cast<uintptr_t>(y) % (N * sizeof(float)) == 0 && ld_y % N == 0;
  if (stream_tmp != nullptr && aligned) {
    return SoftmaxRowsPipelined<true>(x, ld_x, y, ld_y, rows, rows_present, n, stream_tmp);
  }
  SoftmaxRowsPipelined<false>(x, ld_x, y, ld_y, rows, rows_present, n, nullptr);
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_

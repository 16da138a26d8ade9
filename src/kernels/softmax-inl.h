// Per-target row softmax: max pass, fused exp + sum pass, scale pass. Highway's Exp maps -inf and
// NaN to 0 silently, so special rows are detected here: all -inf -> zeros; NaN or +inf -> NaN.
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

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

constexpr float kSoftmaxInf = std::numeric_limits<float>::infinity();

// Lanes [0, n) of p, the others `fill`; 0 < n < Lanes(d). AVX2 and AVX-512 have true masked
// loads (fault-free, they read only the mask's lanes): one instruction instead of a copy through
// the stack, which dominates short rows. Elsewhere (SSE4's MaskedLoad reads the whole vector)
// the stack-buffer copy of common-inl.h.
HWY_INLINE VF LoadTail(DF d, const float* HWY_RESTRICT p, size_t n, float fill) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  const auto m = hn::FirstN(d, n);
  return hn::IfThenElse(m, hn::MaskedLoad(m, d, p), hn::Set(d, fill));
#else
  return LoadPartial(d, p, n, fill);
#endif
}

// Writes lanes [0, n) of v to p; 0 < n < Lanes(d). Masked store where it writes only the mask's
// lanes (AVX2, AVX-512; SSE4's BlendedStore rewrites the whole vector), else via the stack.
HWY_INLINE void StoreTail(VF v, DF d, float* HWY_RESTRICT p, size_t n) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  hn::BlendedStore(v, hn::FirstN(d, n), d, p);
#else
  StorePartial(v, d, p, n);
#endif
}

// Every loop below handles 4 vectors per iteration in named (register) variables: 4 independent
// Exp chains keep the FMA pipes busy, and 4 accumulators hide the Add/Max latency. Named, not an
// array: GCC kept arrays of Highway vectors on the stack (see gemm-inl.h).
constexpr size_t kUnroll = 4;

// Maximum of x[0:n]. A NaN may or may not survive Max (x86 returns the second operand): the
// result is then NaN, or the maximum of some elements, and ExpPass catches the NaN either way.
HWY_INLINE float RowMax(const float* HWY_RESTRICT x, size_t n) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF neg_inf = hn::Set(d, -kSoftmaxInf);
  VF m0 = neg_inf, m1 = neg_inf, m2 = neg_inf, m3 = neg_inf;
  size_t i = 0;
  for (; i + kUnroll * N <= n; i += kUnroll * N) {
    m0 = hn::Max(m0, hn::LoadU(d, x + i));
    m1 = hn::Max(m1, hn::LoadU(d, x + i + N));
    m2 = hn::Max(m2, hn::LoadU(d, x + i + 2 * N));
    m3 = hn::Max(m3, hn::LoadU(d, x + i + 3 * N));
  }
  for (; i + N <= n; i += N) m0 = hn::Max(m0, hn::LoadU(d, x + i));
  if (i < n) m1 = hn::Max(m1, LoadTail(d, x + i, n - i, -kSoftmaxInf));
  return hn::GetLane(hn::MaxOfLanes(d, hn::Max(hn::Max(m0, m1), hn::Max(m2, m3))));
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
  const VF v = LoadTail(d, x + i, n - i, 0.0f);
  return !hn::AllTrue(d, hn::Eq(v, v));
}

// y[i] = exp(x[i] - max) for i < n; returns their sum (a fixed order: per iteration a tree of
// kUnroll vectors into one accumulator) and whether some x[i] is NaN. Precondition: max is finite and >= every non-NaN x[i], so each
// t = x[i] - max is <= 0 (or -inf: Exp gives exactly 0) or NaN. A running sum of such t can only
// become NaN through a NaN (-inf + -inf = -inf): one Add per vector detects the NaN that Exp
// would silently map to 0. y may equal x.
HWY_INLINE SoftmaxPart ExpSubAndSum(const float* x, float* y, size_t n, float max,
                                     const float* next_x = nullptr, const float* next_y = nullptr) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vmax = hn::Set(d, max);
  VF e_sum = hn::Zero(d);
  VF t_sum = e_sum;  // sum of all t: NaN iff some x[i] is NaN
  size_t i = 0;
  for (; i + kUnroll * N <= n; i += kUnroll * N) {
    const VF t0 = hn::Sub(hn::LoadU(d, x + i), vmax);
    const VF t1 = hn::Sub(hn::LoadU(d, x + i + N), vmax);
    const VF t2 = hn::Sub(hn::LoadU(d, x + i + 2 * N), vmax);
    const VF t3 = hn::Sub(hn::LoadU(d, x + i + 3 * N), vmax);
    if (next_x != nullptr) {
      for (size_t j = 0; j < kUnroll * N; j += 16) __builtin_prefetch(next_x + i + j, 0, 2);
    }
    if (next_y != nullptr) {
      for (size_t j = 0; j < kUnroll * N; j += 16) __builtin_prefetch(next_y + i + j, 1, 2);
    }
    const VF e0 = hn::Exp(d, t0), e1 = hn::Exp(d, t1), e2 = hn::Exp(d, t2), e3 = hn::Exp(d, t3);
    hn::StoreU(e0, d, y + i);
    hn::StoreU(e1, d, y + i + N);
    hn::StoreU(e2, d, y + i + 2 * N);
    hn::StoreU(e3, d, y + i + 3 * N);
    e_sum = hn::Add(e_sum, hn::Add(hn::Add(e0, e1), hn::Add(e2, e3)));
    t_sum = hn::Add(t_sum, hn::Add(hn::Add(t0, t1), hn::Add(t2, t3)));
  }
  for (; i + N <= n; i += N) {
    const VF t0 = hn::Sub(hn::LoadU(d, x + i), vmax);
    const VF e0 = hn::Exp(d, t0);
    hn::StoreU(e0, d, y + i);
    e_sum = hn::Add(e_sum, e0);
    t_sum = hn::Add(t_sum, t0);
  }
  if (i < n) {  // padding lanes are -inf: t = -inf, exp 0
    const VF t0 = hn::Sub(LoadTail(d, x + i, n - i, -kSoftmaxInf), vmax);
    const VF e0 = hn::Exp(d, t0);
    StoreTail(e0, d, y + i, n - i);
    e_sum = hn::Add(e_sum, e0);
    t_sum = hn::Add(t_sum, t0);
  }
  return SoftmaxPart{hn::GetLane(hn::SumOfLanes(d, e_sum)), !hn::AllTrue(d, hn::Eq(t_sum, t_sum))};
}

// The exp pass of a row, or of one segment of a row, given the maximum `max` of the whole row
// (RowMax of the row, or the largest RowMax of its segments): writes y = exp(x - max) when max
// is finite. Returns the part's sum and whether it makes the row NaN.
HWY_INLINE SoftmaxPart ExpPass(const float* x, float* y, size_t n, float max,
                                     const float* next_x = nullptr, const float* next_y = nullptr) {
  if (!(max < kSoftmaxInf)) return SoftmaxPart{0.0f, true};  // +inf, or a NaN in the maximum
  if (max == -kSoftmaxInf) return SoftmaxPart{0.0f, HasNaN(x, n)};  // -inf only (or NaN)
  return ExpSubAndSum(x, y, n, max, next_x, next_y);
}

// y[i] = value for i < n.
HWY_INLINE void FillRow(float* HWY_RESTRICT y, size_t n, float value) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF v = hn::Set(d, value);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(v, d, y + i);
  if (i < n) StoreTail(v, d, y + i, n - i);
}

// y[i] *= s for i < n.
HWY_INLINE void ScaleRow(float* HWY_RESTRICT y, size_t n, float s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vs = hn::Set(d, s);
  size_t i = 0;
  for (; i + kUnroll * N <= n; i += kUnroll * N) {
    const VF y0 = hn::LoadU(d, y + i), y1 = hn::LoadU(d, y + i + N);
    const VF y2 = hn::LoadU(d, y + i + 2 * N), y3 = hn::LoadU(d, y + i + 3 * N);
    hn::StoreU(hn::Mul(y0, vs), d, y + i);
    hn::StoreU(hn::Mul(y1, vs), d, y + i + N);
    hn::StoreU(hn::Mul(y2, vs), d, y + i + 2 * N);
    hn::StoreU(hn::Mul(y3, vs), d, y + i + 3 * N);
  }
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, y + i), vs), d, y + i);
  if (i < n) StoreTail(hn::Mul(LoadTail(d, y + i, n - i, 0.0f), vs), d, y + i, n - i);
}

// The last pass of a row, or of one segment of a row, from the whole row's results: its
// maximum, whether any part is bad and the total sum (>= 1 when max is finite: the maximum
// contributes exp(0)). NaN rows -> NaN; all -inf -> zeros; else y (the exponentials) /= sum.
HWY_INLINE void FinishPass(float* HWY_RESTRICT y, size_t n, float max, SoftmaxPart row) {
  if (row.bad) return FillRow(y, n, std::numeric_limits<float>::quiet_NaN());
  if (max == -kSoftmaxInf) return FillRow(y, n, 0.0f);
  ScaleRow(y, n, 1.0f / row.sum);
}

// y[0:n] = softmax(x[0:n]); y may equal x.
HWY_INLINE void SoftmaxRow(const float* x, float* y, size_t n,
                                     const float* next_x = nullptr, const float* next_y = nullptr) {
  const float max = RowMax(x, n);
  FinishPass(y, n, max, ExpPass(x, y, n, max, next_x, next_y));
}

// y[0:n] = softmax(x[0:n]) for a row of at most one vector (n <= Lanes(d)): one load, one
// store, no passes over memory. Rows that are not ordinary (the maximum is not finite, or a NaN)
// go to SoftmaxRow. Bitwise the same as SoftmaxRow: the same Exp, sum and 1 / sum. y may equal x.
HWY_INLINE void SoftmaxShortRow(const float* x, float* y, size_t n) {
  const DF d;
  const bool full = n == hn::Lanes(d);
  const VF v = full ? hn::LoadU(d, x) : LoadTail(d, x, n, -kSoftmaxInf);
  const VF t = hn::Sub(v, hn::MaxOfLanes(d, v));  // padding lanes: -inf
  // t is NaN somewhere iff x holds a NaN or +inf, or is all -inf (-inf - -inf).
  if (!hn::AllTrue(d, hn::Eq(t, t))) return SoftmaxRow(x, y, n);
  const VF e = hn::Exp(d, t);
  const VF p = hn::Mul(e, hn::Div(hn::Set(d, 1.0f), hn::SumOfLanes(d, e)));
  if (full) {
    hn::StoreU(p, d, y);
  } else {
    StoreTail(p, d, y, n);
  }
}

// y[0:n] = softmax(x[0:n]), n >= 1, by the fastest of the above for n; y may equal x.
HWY_INLINE void SoftmaxAnyRow(const float* x, float* y, size_t n,
                                     const float* next_x = nullptr, const float* next_y = nullptr) {
  if (n <= hn::Lanes(DF())) return SoftmaxShortRow(x, y, n);
  SoftmaxRow(x, y, n, next_x, next_y);
}

// dst[i] = src[i] * s for i < n, dst written with non-temporal (streaming) stores where it is
// vector aligned: the lines are not read for ownership and do not evict the caches.
// Call hwy::FlushStream() before another thread reads dst.
HWY_INLINE void StreamScaled(const float* HWY_RESTRICT src, float* HWY_RESTRICT dst, size_t n,
                             float s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vs = hn::Set(d, s);
  size_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % (N * sizeof(float)) != 0; ++i) {
    dst[i] = src[i] * s;
  }
  for (; i + N <= n; i += N) hn::Stream(hn::Mul(hn::LoadU(d, src + i), vs), d, dst + i);
  for (; i < n; ++i) dst[i] = src[i] * s;
}

// y[0:n] = softmax(x[0:n]) for outputs far larger than the caches: the exponentials go to a
// cache-resident tmp (n floats) and y is written once by streaming stores, so the memory
// traffic is one read of x and one write of y, as in a streaming copy. y may equal x.
HWY_INLINE void SoftmaxRowStreaming(const float* x, float* y, size_t n, float* HWY_RESTRICT tmp,
                                     const float* next_x = nullptr) {
  const float max = RowMax(x, n);
  const SoftmaxPart row = ExpPass(x, tmp, n, max, next_x);
  if (row.bad || max == -kSoftmaxInf) return FinishPass(y, n, max, row);
  StreamScaled(tmp, y, n, 1.0f / row.sum);
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_

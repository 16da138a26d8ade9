// Per-target row softmax: max pass, fused exp + sum pass, scale pass. Highway's Exp maps -inf and
// NaN to 0 silently, so special rows are detected here: all -inf -> zeros; NaN or +inf -> NaN.

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

// Row maximum of x[0:n] (n >= 1); sets *bad if any element is NaN or +inf.
HWY_INLINE float RowMax(const float* HWY_RESTRICT x, size_t n, bool* bad) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vinf = hn::Set(d, std::numeric_limits<float>::infinity());
  VF m0 = hn::Neg(vinf), m1 = m0;
  VF flags = hn::Zero(d);  // lanes become all-ones where x is not < +inf (NaN or +inf)
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const VF x0 = hn::LoadU(d, x + i), x1 = hn::LoadU(d, x + i + N);
    m0 = hn::Max(m0, x0);
    m1 = hn::Max(m1, x1);
    flags = hn::Or(flags, hn::VecFromMask(d, hn::Not(hn::And(hn::Lt(x0, vinf), hn::Lt(x1, vinf)))));
  }
  for (; i < n; i += N) {
    const VF x0 = LoadUpTo(d, x + i, n - i, -std::numeric_limits<float>::infinity());
    m0 = hn::Max(m0, x0);
    flags = hn::Or(flags, hn::VecFromMask(d, hn::Not(hn::Lt(x0, vinf))));
  }
  *bad = !hn::AllFalse(d, hn::MaskFromVec(flags));
  return hn::GetLane(hn::MaxOfLanes(d, hn::Max(m0, m1)));
}

// y[i] = exp(x[i] - max) for i < n; returns the sum (two accumulators, fixed order).
// x - max <= 0 and Exp(-inf) == 0, so -inf entries give exactly 0. y may equal x.
HWY_INLINE float ExpSubAndSum(const float* x, float* y, size_t n, float max) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vmax = hn::Set(d, max);
  VF s0 = hn::Zero(d), s1 = hn::Zero(d);
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const VF e0 = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vmax));
    const VF e1 = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i + N), vmax));
    hn::StoreU(e0, d, y + i);
    hn::StoreU(e1, d, y + i + N);
    s0 = hn::Add(s0, e0);
    s1 = hn::Add(s1, e1);
  }
  for (; i < n; i += N) {
    const VF x0 = LoadUpTo(d, x + i, n - i, -std::numeric_limits<float>::infinity());
    const VF e0 = hn::Exp(d, hn::Sub(x0, vmax));
    StoreUpTo(e0, d, y + i, n - i);
    s0 = hn::Add(s0, e0);
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(s0, s1)));
}

// y[i] = value for i < n.
HWY_INLINE void FillRow(float* y, size_t n, float value) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF v = hn::Set(d, value);
  for (size_t i = 0; i < n; i += N) StoreUpTo(v, d, y + i, n - i);
}

// y[i] *= s for i < n.
HWY_INLINE void ScaleRow(float* y, size_t n, float s) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vs = hn::Set(d, s);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, y + i), vs), d, y + i);
  if (i < n) StorePartial(hn::Mul(LoadPartial(d, y + i, n - i, 0.0f), vs), d, y + i, n - i);
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
HWY_INLINE void SoftmaxRowStreaming(const float* x, float* y, size_t n, float* HWY_RESTRICT tmp) {
  bool bad = false;
  const float max = RowMax(x, n, &bad);
  if (bad) return FillRow(y, n, std::numeric_limits<float>::quiet_NaN());
  if (max == -std::numeric_limits<float>::infinity()) return FillRow(y, n, 0.0f);
  const float sum = ExpSubAndSum(x, tmp, n, max);
  StreamScaled(tmp, y, n, 1.0f / sum);
}

// y[0:n] = softmax(x[0:n]), n >= 1; y may equal x.
HWY_INLINE void SoftmaxRow(const float* x, float* y, size_t n) {
  bool bad = false;
  const float max = RowMax(x, n, &bad);
  if (bad) return FillRow(y, n, std::numeric_limits<float>::quiet_NaN());
  if (max == -std::numeric_limits<float>::infinity()) return FillRow(y, n, 0.0f);
  const float sum = ExpSubAndSum(x, y, n, max);  // >= 1: the max element contributes exp(0)
  ScaleRow(y, n, 1.0f / sum);
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_SOFTMAX_INL_H_

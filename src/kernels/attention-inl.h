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

#include <cmath>
#include <limits>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "src/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The max to subtract: -inf (no visible key yet) becomes 0 so that exp(-inf - 0) = 0, never NaN.
HWY_INLINE VF SafeMax(DF d, VF m) { return hn::IfThenZeroElse(hn::Eq(m, hn::Set(d, kNegInf)), m); }

// One online-softmax step over a block of scores.
// s: bk rows (keys) x ncols columns (queries), ld apart, ncols a multiple of Lanes; turned into
// exp(s - m_new) in place. m, l: running max and sum per column (ncols each), updated.
// o: dv rows x ncols (ldo apart), rescaled by exp(m_old - m_new) per column when m moved.
HWY_INLINE void OnlineSoftmaxStep(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                                  float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                                  float* HWY_RESTRICT o, size_t ldo, size_t dv) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF one = hn::Set(d, 1.0f);
  for (size_t c = 0; c < ncols; c += N) {
    VF block_max = hn::Set(d, kNegInf);
    for (size_t r = 0; r < bk; ++r) block_max = hn::Max(block_max, hn::LoadU(d, s + r * ld + c));
    const VF m_old = hn::LoadU(d, m + c);
    const VF m_new = hn::Max(m_old, block_max);
    const VF m_safe = SafeMax(d, m_new);
    const VF corr = hn::Exp(d, hn::Sub(m_old, m_safe));
    VF sum0 = hn::Zero(d), sum1 = hn::Zero(d);
    size_t r = 0;
    for (; r + 2 <= bk; r += 2) {
      float* s0 = s + r * ld + c;
      const VF p0 = hn::Exp(d, hn::Sub(hn::LoadU(d, s0), m_safe));
      const VF p1 = hn::Exp(d, hn::Sub(hn::LoadU(d, s0 + ld), m_safe));
      hn::StoreU(p0, d, s0);
      hn::StoreU(p1, d, s0 + ld);
      sum0 = hn::Add(sum0, p0);
      sum1 = hn::Add(sum1, p1);
    }
    if (r < bk) {
      const VF p0 = hn::Exp(d, hn::Sub(hn::LoadU(d, s + r * ld + c), m_safe));
      hn::StoreU(p0, d, s + r * ld + c);
      sum0 = hn::Add(sum0, p0);
    }
    hn::StoreU(hn::MulAdd(hn::LoadU(d, l + c), corr, hn::Add(sum0, sum1)), d, l + c);
    hn::StoreU(m_new, d, m + c);
    if (hn::AllTrue(d, hn::Eq(corr, one))) continue;
    for (size_t i = 0; i < dv; ++i) {
      float* orow = o + i * ldo + c;
      hn::StoreU(hn::Mul(hn::LoadU(d, orow), corr), d, orow);
    }
  }
}

// s (bk x ncols, ld) = exp(s - m) / l per column: the final probabilities; 0 where l == 0.
HWY_INLINE void NormalizeBlock(float* HWY_RESTRICT s, size_t ld, size_t bk, size_t ncols,
                               const float* HWY_RESTRICT m, const float* HWY_RESTRICT l) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t c = 0; c < ncols; c += N) {
    const VF lv = hn::LoadU(d, l + c);
    const VF inv = hn::IfThenElseZero(hn::Gt(lv, hn::Zero(d)), hn::Div(hn::Set(d, 1.0f), lv));
    const VF m_safe = SafeMax(d, hn::LoadU(d, m + c));
    for (size_t r = 0; r < bk; ++r) {
      float* p = s + r * ld + c;
      hn::StoreU(hn::Mul(hn::Exp(d, hn::Sub(hn::LoadU(d, p), m_safe)), inv), d, p);
    }
  }
}

// Merges partial results of consecutive key ranges (in index order, so the result does not
// depend on who computed them): parts[i] = {m, l, o} of range i. Writes the merged m, l, o.
// o arrays: dv rows x ncols, ldo apart.
HWY_INLINE void MergePartials(size_t parts, const float* const* pm, const float* const* pl,
                              const float* const* po, size_t ncols, size_t dv, size_t ldo,
                              float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                              float* HWY_RESTRICT o) {
  const DF d;
  const size_t N = hn::Lanes(d);
  for (size_t c = 0; c < ncols; c += N) {
    VF m_all = hn::Set(d, kNegInf);
    for (size_t i = 0; i < parts; ++i) m_all = hn::Max(m_all, hn::LoadU(d, pm[i] + c));
    const VF m_safe = SafeMax(d, m_all);
    VF l_all = hn::Zero(d);
    for (size_t r = 0; r < dv; ++r) hn::StoreU(hn::Zero(d), d, o + r * ldo + c);
    for (size_t i = 0; i < parts; ++i) {
      const VF w = hn::Exp(d, hn::Sub(hn::LoadU(d, pm[i] + c), m_safe));
      l_all = hn::MulAdd(hn::LoadU(d, pl[i] + c), w, l_all);
      for (size_t r = 0; r < dv; ++r) {
        float* orow = o + r * ldo + c;
        hn::StoreU(hn::MulAdd(hn::LoadU(d, po[i] + r * ldo + c), w, hn::LoadU(d, orow)), d, orow);
      }
    }
    hn::StoreU(m_all, d, m + c);
    hn::StoreU(l_all, d, l + c);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_ATTENTION_INL_H_

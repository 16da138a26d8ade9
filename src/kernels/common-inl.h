// Per-target helpers shared by the kernels: partial (tail) loads and stores that never touch
// memory outside [p, p + n), on every target (Highway 1.0.3's SSE4 MaskedLoad/BlendedStore read
// and rewrite whole vectors, which could race with a thread that owns the neighbouring floats),
// and a MaxOfLanes that keeps -inf on every target.

#if defined(SIMDATTN_SRC_KERNELS_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_COMMON_INL_H_
#undef SIMDATTN_SRC_KERNELS_COMMON_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_COMMON_INL_H_
#endif

#include <stddef.h>
#include <string.h>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kMaxLanesF = HWY_MAX_BYTES / sizeof(float);

// AVX2 and AVX-512 have true masked loads and stores (masked lanes neither fault nor get
// written); other targets go through a stack buffer. (Re-defined for each target pass.)
#undef SIMDATTN_TRUE_MASKED_OPS
#if HWY_TARGET <= HWY_AVX2 && HWY_ARCH_X86
#define SIMDATTN_TRUE_MASKED_OPS 1
#else
#define SIMDATTN_TRUE_MASKED_OPS 0
#endif

// Lanes [0, n) from p, the others `fill`; 0 < n <= Lanes(d).
HWY_INLINE VF LoadPartial(DF d, const float* HWY_RESTRICT p, size_t n, float fill) {
#if SIMDATTN_TRUE_MASKED_OPS
  const auto m = hn::FirstN(d, n);
  return hn::IfThenElse(m, hn::MaskedLoad(m, d, p), hn::Set(d, fill));
#else
  HWY_ALIGN float buf[kMaxLanesF];
  for (size_t i = 0; i < hn::Lanes(d); ++i) buf[i] = fill;
  memcpy(buf, p, n * sizeof(float));
  return hn::Load(d, buf);
#endif
}

// hn::MaxOfLanes, but -inf (not -FLT_MAX) for a vector of -inf on every target: Highway 1.0.3's
// EMU128 (clang's baseline target) starts its reduction at LowestValue. A NaN lane may or may
// not survive, as with hn::Max.
HWY_INLINE VF MaxOfLanesF(DF d, VF v) {
#if HWY_TARGET == HWY_EMU128
  HWY_ALIGN float lanes[kMaxLanesF];
  hn::Store(v, d, lanes);
  float m = lanes[0];
  for (size_t i = 1; i < hn::Lanes(d); ++i) m = lanes[i] > m ? lanes[i] : m;
  return hn::Set(d, m);
#else
  return hn::MaxOfLanes(d, v);
#endif
}

// Writes lanes [0, n) of v to p; 0 < n <= Lanes(d).
HWY_INLINE void StorePartial(VF v, DF d, float* HWY_RESTRICT p, size_t n) {
#if SIMDATTN_TRUE_MASKED_OPS
  hn::BlendedStore(v, hn::FirstN(d, n), d, p);
#else
  HWY_ALIGN float buf[kMaxLanesF];
  hn::Store(v, d, buf);
  memcpy(p, buf, n * sizeof(float));
#endif
}

// Loads lanes [0, n) of p (n may exceed Lanes(d): then a full vector).
HWY_INLINE VF LoadUpTo(DF d, const float* HWY_RESTRICT p, size_t n, float fill) {
  return n >= hn::Lanes(d) ? hn::LoadU(d, p) : LoadPartial(d, p, n, fill);
}

HWY_INLINE void StoreUpTo(VF v, DF d, float* HWY_RESTRICT p, size_t n) {
  if (n >= hn::Lanes(d)) {
    hn::StoreU(v, d, p);
  } else {
    StorePartial(v, d, p, n);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_COMMON_INL_H_

// Per-target element type conversions of 16-bit K/V (bf16, f16) and float. Widening is exact on
// every target and done with integer operations (no F16C needed): bf16 is the high half of a
// float; f16's exponent is rebiased in its bits (normal), its mantissa scaled (subnormal). No threads, no allocation, no argument checks.

#if defined(SIMDATTN_SRC_KERNELS_CAST_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_CAST_INL_H_
#undef SIMDATTN_SRC_KERNELS_CAST_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_CAST_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hwy/highway.h"
#include "src/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

using DU32 = hn::RebindToUnsigned<DF>;
using DU16 = hn::Rebind<uint16_t, DF>;  // as many u16 lanes as DF has floats

// 16-bit element types of a KV cache (values of SIMDATTN_DTYPE_BF16 / _F16).
enum class Half { kBf16 = 1, kF16 = 2 };

// Float bits of Lanes(d) bf16 or f16 bit patterns (in u32 lanes): exact.
template <Half kType>
HWY_INLINE VF WidenBits(DF d, hn::Vec<DU32> h) {
  const DU32 du;
  if (kType == Half::kBf16) return hn::BitCast(d, hn::ShiftLeft<16>(h));
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
  const auto mag = hn::And(h, hn::Set(du, 0x7FFFu));
  // Normal: the exponent rebiased by 127 - 15 = 112 in the integer bits. Subnormal (exponent 0):
  // mag * 2^-24, a normal float (>= 2^-24): exact, and no float subnormal is ever formed, so a
  // host's flush-to-zero/denormals-are-zero modes cannot change the result. Inf/NaN: exponent
  // all ones, the mantissa (NaN payload) kept.
  const auto normal = hn::Add(hn::ShiftLeft<13>(mag), hn::Set(du, 112u << 23));
  const VF sub = hn::Mul(hn::ConvertTo(d, hn::BitCast(hn::RebindToSigned<DF>(), mag)),
                         hn::Set(d, 0x1p-24f));
  const auto inf_nan = hn::Or(hn::ShiftLeft<13>(mag), hn::Set(du, 0x7F800000u));
  const hn::RebindToSigned<DF> di;  // mag < 2^15: signed compares (every target has them)
  const auto mag_i = hn::BitCast(di, mag);
  auto bits = hn::IfThenElse(hn::RebindMask(du, hn::Lt(mag_i, hn::Set(di, 0x400))),
                             hn::BitCast(du, sub), normal);
  bits = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x7BFF))), inf_nan, bits);
  return hn::BitCast(d, hn::Or(bits, sign));
}

// dst[i] = float(src[i]) for i < n: bf16 or f16 bit patterns, exact.
template <Half kType>
HWY_INLINE void WidenRowT(const uint16_t* HWY_RESTRICT src, size_t n, float* HWY_RESTRICT dst) {
  const DF d;
  const DU32 du;
  const DU16 d16;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(WidenBits<kType>(d, hn::PromoteTo(du, hn::LoadU(d16, src + i))), d, dst + i);
  }
  if (i < n) {
    HWY_ALIGN uint16_t buf[kMaxLanesF] = {};
    memcpy(buf, src + i, (n - i) * sizeof(uint16_t));
    StorePartial(WidenBits<kType>(d, hn::PromoteTo(du, hn::Load(d16, buf))), d, dst + i, n - i);
  }
}

// dst[i] = float(src[i]) for i < n, src of SIMDATTN_DTYPE_* `dtype` (F32: a copy).
HWY_INLINE void WidenRow(int dtype, const void* HWY_RESTRICT src, size_t n, float* HWY_RESTRICT dst) {
  if (dtype == static_cast<int>(Half::kBf16)) {
    WidenRowT<Half::kBf16>(static_cast<const uint16_t*>(src), n, dst);
  } else if (dtype == static_cast<int>(Half::kF16)) {
    WidenRowT<Half::kF16>(static_cast<const uint16_t*>(src), n, dst);
  } else {
    memcpy(dst, src, n * sizeof(float));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_CAST_INL_H_

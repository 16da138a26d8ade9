// Per-target element type conversions of 16-bit K/V (bf16, f16) and float. Widening is exact on
// every target: bf16 is the high half of a float; f16 takes F16C where the target has it, else
// integer operations: its exponent rebiased in its bits (normal), its mantissa scaled (subnormal).
// Narrowing rounds to nearest even on the float's bits, with integer operations only (Highway
// 1.0.3's DemoteTo to bf16 truncates, and float arithmetic would depend on the host's FTZ/DAZ
// modes). No threads, no allocation, no argument checks.

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

// Lanes(d) bf16 or f16 bit patterns at p, widened exactly. f16 on x86 with F16C (Highway's
// AVX2 and AVX3 targets): VCVTPH2PS, one instruction where WidenBits takes about 12 (f16
// decode from L3 on Zen 4: 32 -> 56 GFLOP/s on one core); exact, subnormals included, and it
// ignores MXCSR.DAZ (checked under FTZ/DAZ by test_cast and test_kvcache).
template <Half kType>
HWY_INLINE VF WidenLoad(DF d, const uint16_t* HWY_RESTRICT p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  if (kType == Half::kF16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
  }
#endif
  return WidenBits<kType>(d, hn::PromoteTo(DU32(), hn::LoadU(DU16(), p)));
}

// dst[i] = float(src[i]) for i < n: bf16 or f16 bit patterns, exact.
template <Half kType>
HWY_INLINE void WidenRowT(const uint16_t* HWY_RESTRICT src, size_t n, float* HWY_RESTRICT dst) {
  const DF d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(WidenLoad<kType>(d, src + i), d, dst + i);
  if (i < n) {
    HWY_ALIGN uint16_t buf[kMaxLanesF] = {};
    memcpy(buf, src + i, (n - i) * sizeof(uint16_t));
    StorePartial(WidenLoad<kType>(d, buf), d, dst + i, n - i);
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

// Element types of K/V rows that the decode kernels read in place and widen in registers
// (LoadWide); float rows load as they are.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
HWY_INLINE VF LoadWide(DF d, const float* HWY_RESTRICT p) { return hn::LoadU(d, p); }
HWY_INLINE VF LoadWide(DF d, const Bf16* HWY_RESTRICT p) {
  return WidenLoad<Half::kBf16>(d, &p->bits);
}
HWY_INLINE VF LoadWide(DF d, const F16* HWY_RESTRICT p) {
  return WidenLoad<Half::kF16>(d, &p->bits);
}
// Lanes [0, n) of p widened, the others 0; 0 < n <= Lanes(d). Never reads past p + n.
HWY_INLINE VF LoadWidePartial(DF d, const float* HWY_RESTRICT p, size_t n) {
  return LoadPartial(d, p, n, 0.0f);
}
template <class T>
HWY_INLINE VF LoadWidePartial(DF d, const T* HWY_RESTRICT p, size_t n) {
  HWY_ALIGN T buf[kMaxLanesF] = {};
  memcpy(buf, p, n * sizeof(T));
  return LoadWide(d, buf);
}

// bf16 bit patterns (in u32 lanes) of a vector of floats: the high half, rounded to nearest even
// on the low 16 bits. A NaN skips the rounding (it could carry into inf): it keeps its sign and
// high payload and gets the quiet bit.
HWY_INLINE hn::Vec<DU32> NarrowBf16Bits(VF v) {
  const DU32 du;
  const hn::RebindToSigned<DF> di;
  const auto u = hn::BitCast(du, v);
  const auto lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  // u + 0x7FFF + lsb cannot wrap: the largest non-NaN pattern is 0xFF800000 (-inf).
  const auto rounded = hn::ShiftRight<16>(hn::Add(hn::Add(u, hn::Set(du, 0x7FFFu)), lsb));
  const auto quiet_nan = hn::Or(hn::ShiftRight<16>(u), hn::Set(du, 0x0040u));
  const auto mag = hn::BitCast(di, hn::And(u, hn::Set(du, 0x7FFFFFFFu)));  // < 2^31: signed ok
  return hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag, hn::Set(di, 0x7F800000))), quiet_nan,
                        rounded);
}

// f16 magnitude bits of floats below 2^-14 (f16 subnormals and 0), `mag` the float's |bits|:
// the significand m (with its implicit bit) shifted right by s = 126 - exponent, rounded to
// nearest even. s >= 25 gives 0 for every m < 2^24 (clamped to 31, so f32 subnormals, whose
// implicit bit is wrongly set here, give 0 too: they are below 2^-25, half the least f16).
HWY_INLINE hn::Vec<DU32> F16SubnormalBits(hn::Vec<DU32> mag) {
  const DU32 du;
  const hn::RebindToSigned<DF> di;
  const auto m = hn::Or(hn::And(mag, hn::Set(du, 0x7FFFFFu)), hn::Set(du, 0x800000u));
  const auto exponent = hn::BitCast(di, hn::ShiftRight<23>(mag));
  const auto s = hn::BitCast(
      du, hn::Min(hn::Max(hn::Sub(hn::Set(di, 126), exponent), hn::Set(di, 14)), hn::Set(di, 31)));
  const auto one = hn::Set(du, 1u);
  const auto half_minus_1 = hn::Sub(one << hn::Sub(s, one), one);
  const auto lsb = hn::And(m >> s, one);
  return hn::Add(hn::Add(m, half_minus_1), lsb) >> s;  // < 2^31: no wrap
}

// f16: normal results rebias the exponent (127 - 15 = 112) and round the 13 dropped bits to
// nearest even (a carry moves into the exponent, up to inf); below 2^-14 F16SubnormalBits;
// |x| >= 65520 (0x477FF000, halfway past 65504) is inf; a NaN keeps its sign and high payload
// and gets the quiet bit.
HWY_INLINE hn::Vec<DU32> NarrowF16Bits(VF v) {
  const DU32 du;
  const hn::RebindToSigned<DF> di;
  const auto u = hn::BitCast(du, v);
  const auto sign = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 0x8000u));
  const auto mag = hn::And(u, hn::Set(du, 0x7FFFFFFFu));
  const auto mag_i = hn::BitCast(di, mag);  // < 2^31: signed compares (every target has them)
  const auto lsb = hn::And(hn::ShiftRight<13>(mag), hn::Set(du, 1u));
  // Modular: lanes below 2^-14 wrap here and are replaced below.
  const auto rebias = hn::Set(du, 0xFFFu - (112u << 23));
  auto bits = hn::ShiftRight<13>(hn::Add(hn::Add(mag, rebias), lsb));
  const auto tiny = hn::RebindMask(du, hn::Lt(mag_i, hn::Set(di, 0x38800000)));
  if (!hn::AllFalse(du, tiny)) bits = hn::IfThenElse(tiny, F16SubnormalBits(mag), bits);
  const auto overflow = hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x477FEFFF)));  // >= 65520
  bits = hn::IfThenElse(overflow, hn::Set(du, 0x7C00u), bits);
  const auto nan = hn::Or(hn::And(hn::ShiftRight<13>(mag), hn::Set(du, 0x3FFu)),
                          hn::Set(du, 0x7E00u));
  bits = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x7F800000))), nan, bits);
  return hn::Or(bits, sign);
}

template <Half kType>
HWY_INLINE hn::Vec<DU16> NarrowVec(VF v) {
  const hn::RebindToSigned<DF> di;
  const auto bits = kType == Half::kBf16 ? NarrowBf16Bits(v) : NarrowF16Bits(v);
  return hn::DemoteTo(DU16(), hn::BitCast(di, bits));  // every lane <= 0xFFFF: no saturation
}

// dst[i] = bf16 or f16 bits of src[i] for i < n, rounded to nearest even.
template <Half kType>
HWY_INLINE void NarrowRowT(const float* HWY_RESTRICT src, size_t n, uint16_t* HWY_RESTRICT dst) {
  const DF d;
  const DU16 d16;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(NarrowVec<kType>(hn::LoadU(d, src + i)), d16, dst + i);
  if (i < n) {
    HWY_ALIGN uint16_t buf[kMaxLanesF];
    hn::Store(NarrowVec<kType>(LoadPartial(d, src + i, n - i, 0.0f)), d16, buf);
    memcpy(dst + i, buf, (n - i) * sizeof(uint16_t));
  }
}

// dst[i] = src[i] as SIMDATTN_DTYPE_* `dtype` for i < n, rounded to nearest even (F32: a copy).
HWY_INLINE void NarrowRow(const float* HWY_RESTRICT src, size_t n, int dtype, void* HWY_RESTRICT dst) {
  if (dtype == static_cast<int>(Half::kBf16)) {
    NarrowRowT<Half::kBf16>(src, n, static_cast<uint16_t*>(dst));
  } else if (dtype == static_cast<int>(Half::kF16)) {
    NarrowRowT<Half::kF16>(src, n, static_cast<uint16_t*>(dst));
  } else {
    memcpy(dst, src, n * sizeof(float));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_CAST_INL_H_

// Per-target exp(x) for x <= 0: the exponentials of softmax and online softmax, whose arguments
// are x - max. Highway's general Exp costs about 31 vector operations; this one costs 13.
//
// Contract of ExpNonPositive(d, x), per lane:
// - x in [kExpFlushBelow, 0] (about [-87.3365, 0]): a normal float within 2 ulp of the correctly
//   rounded exp(x), as tests/test_exp.cc checks for every float (2 measured on every target:
//   2.04 ulp from the exact value with fused multiply-adds, 2.32 without, as on SSE4);
//   exp(-0) = exp(+0) = 1 exactly.
// - x < kExpFlushBelow, including -inf: +0. exp(x) < FLT_MIN = 2^-126 there, so results are
//   flushed to zero: never a subnormal (no slow subnormal operands downstream).
// - NaN: NaN.
// - x > 0 and +inf are outside the contract.
//
// Method: n = round(x log2(e)), r = x - n ln2 in [-ln2/2, ln2/2] (Cody-Waite, two FMAs),
// exp(r) by a degree-5 polynomial, times 2^n built in the exponent field. Operations: 2 for n,
// 2 for r, 5 FMAs for the polynomial, a shift and a multiply for 2^n, a compare and a select for
// the flush.

#if defined(SIMDATTN_SRC_KERNELS_EXP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_EXP_INL_H_
#undef SIMDATTN_SRC_KERNELS_EXP_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_EXP_INL_H_
#endif

#include "hwy/highway.h"
#include "src/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

// The flush threshold: the smallest float >= -126 ln2 (= ln(FLT_MIN), -87.33654475...). From it
// up, n >= -126, so 2^n is a normal float, and exp(x) > FLT_MIN.
constexpr float kExpFlushBelow = -0x1.5d589ep+6f;  // -87.33654
constexpr float kLog2e = 0x1.715476p+0f;           // log2(e), rounded
// Adding 1.5 * 2^23 rounds x log2(e) (< 2^22 in magnitude) to the nearest integer n and leaves
// it in the low mantissa bits; the + 127 makes those bits n + 127, the biased exponent of 2^n.
constexpr float kExpShifter = 0x1.8p23f + 127.0f;
// ln2 = kLn2Hi + kLn2Lo to about 2^-44: kLn2Hi has 16 significant bits, so n * kLn2Hi is exact
// even where MulAdd is not fused (SSE4); x - n * kLn2Hi is then exact (Sterbenz).
constexpr float kLn2Hi = 0x1.62e4p-1f;
constexpr float kLn2Lo = 0x1.7f7d1cp-20f;
// exp(r) ~ 1 + r (c1 + r (c2 + r (c3 + r (c4 + r c5)))) on [-ln2/2, ln2/2]: minimax of the error
// in ulps of the result (Lawson's algorithm, then rounded to float): 1.05 ulp before rounding
// errors. Degree 5 meets the 2 ulp of the contract; degree 6 measured 1 ulp for one more FMA.
constexpr float kExpC1 = 0x1.ffffeep-1f;
constexpr float kExpC2 = 0x1.fffdbep-2f;
constexpr float kExpC3 = 0x1.555ce8p-3f;
constexpr float kExpC4 = 0x1.573cccp-5f;
constexpr float kExpC5 = 0x1.0edb98p-7f;

// exp(x) per lane for x <= 0, -inf or NaN; see the contract at the top of this file.
HWY_INLINE VF ExpNonPositive(DF d, VF x) {
  const hn::RebindToSigned<DF> di;
  const VF z = hn::MulAdd(x, hn::Set(d, kLog2e), hn::Set(d, kExpShifter));
  const VF n = hn::Sub(z, hn::Set(d, kExpShifter));
  VF r = hn::NegMulAdd(n, hn::Set(d, kLn2Hi), x);
  r = hn::NegMulAdd(n, hn::Set(d, kLn2Lo), r);
  VF p = hn::MulAdd(hn::Set(d, kExpC5), r, hn::Set(d, kExpC4));
  p = hn::MulAdd(p, r, hn::Set(d, kExpC3));
  p = hn::MulAdd(p, r, hn::Set(d, kExpC2));
  p = hn::MulAdd(p, r, hn::Set(d, kExpC1));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  // 2^n: the low bits n + 127 of z's mantissa shifted into the exponent field (z's own sign and
  // exponent bits leave the 32-bit lane). A NaN x makes p NaN, so the product stays NaN.
  const VF scale = hn::BitCast(d, hn::ShiftLeft<23>(hn::BitCast(di, z)));
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, kExpFlushBelow)), hn::Mul(p, scale));
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_EXP_INL_H_

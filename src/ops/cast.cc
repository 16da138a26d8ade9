// Element type casts (simdattn_cast): elements are independent, so [0, n) is split into chunks
// of a fixed length that threads convert on their own; a chunk's result depends on its elements
// alone, so the bytes written never depend on the thread count. Widening is exact, narrowing
// rounds once (src/kernels/cast-inl.h); bf16 <-> f16 widens a small stack block to float and
// narrows it, one rounding in all since the widening is exact.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/cast.cc"
#include <algorithm>
#include <cstring>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "src/kernels/cast-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

#ifndef SIMDATTN_SRC_OPS_CAST_ONCE_
#define SIMDATTN_SRC_OPS_CAST_ONCE_
namespace simdattn {
// Bytes of one element of a validated SIMDATTN_DTYPE_* (F32 = 0; BF16 and F16 are 16-bit).
inline size_t DtypeBytes(int dtype) { return dtype == 0 ? sizeof(float) : sizeof(uint16_t); }
}  // namespace simdattn
#endif  // SIMDATTN_SRC_OPS_CAST_ONCE_

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {
namespace {

// Floats of the bf16 <-> f16 staging block: 4 KiB on the stack, still in L1 when it is narrowed.
constexpr size_t kStageFloats = 1024;

// Elements [i0, i1) of a 16-bit type to the other one, through float.
void HalfToHalf(const CastArgs& a, size_t i0, size_t i1) {
  const auto* src = static_cast<const uint16_t*>(a.src);
  auto* dst = static_cast<uint16_t*>(a.dst);
  HWY_ALIGN float stage[kStageFloats];
  for (size_t i = i0; i < i1; i += kStageFloats) {
    const size_t len = std::min(kStageFloats, i1 - i);
    WidenRow(a.src_dtype, src + i, len, stage);
    NarrowRow(stage, len, a.dst_dtype, dst + i);
  }
}

}  // namespace

void CastRangeImpl(const CastArgs& a, int64_t begin, int64_t end) {
  const size_t i0 = static_cast<size_t>(begin), len = static_cast<size_t>(end - begin);
  const auto* src = static_cast<const unsigned char*>(a.src) + i0 * DtypeBytes(a.src_dtype);
  auto* dst = static_cast<unsigned char*>(a.dst) + i0 * DtypeBytes(a.dst_dtype);
  if (a.src_dtype == a.dst_dtype) {
    memcpy(dst, src, len * DtypeBytes(a.src_dtype));
  } else if (a.src_dtype == 0) {
    NarrowRow(reinterpret_cast<const float*>(src), len, a.dst_dtype, dst);
  } else if (a.dst_dtype == 0) {
    WidenRow(a.src_dtype, src, len, reinterpret_cast<float*>(dst));
  } else {
    HalfToHalf(a, i0, i0 + len);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(CastRangeImpl);

// Elements per task: 64 KiB of floats, over ten microseconds at memory speed (far above a task's
// start-up) while a 64 MiB cast still has a thousand tasks to balance over the threads.
constexpr int64_t kCastChunk = 16384;

void Cast(const CastArgs& a) {
  ParallelFor(a.n, kCastChunk, [&](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(CastRangeImpl)(a, begin, end);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

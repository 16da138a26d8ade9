// Softmax op: rows are independent, so rows are split across threads in fixed chunks.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/softmax.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/kernels/softmax-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

void SoftmaxRowsImpl(int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t ld_x, float* y,
                     int64_t ld_y) {
  for (int64_t r = r0; r < r1; ++r) {
    SoftmaxRow(x + r * ld_x, y + r * ld_y, static_cast<size_t>(cols));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(SoftmaxRowsImpl);

void Softmax(int64_t rows, int64_t cols, const float* x, int64_t ld_x, float* y, int64_t ld_y) {
  // ~32K elements per chunk: large enough to hide the task overhead, small enough to balance.
  constexpr int64_t kChunkElements = 32768;
  const int64_t grain = std::max<int64_t>(1, kChunkElements / cols);
  ParallelFor(rows, grain, [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(SoftmaxRowsImpl)(r0, r1, cols, x, ld_x, y, ld_y);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

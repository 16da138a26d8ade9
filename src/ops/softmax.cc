// Softmax op: rows are independent, so rows are split across threads in fixed chunks.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/softmax.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/kernels/softmax-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

// tmp: nullptr for cached stores, else cols floats of scratch for the streaming variant.
void SoftmaxRowsImpl(int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t ld_x, float* y,
                     int64_t ld_y, float* tmp) {
  const size_t n = static_cast<size_t>(cols);
  for (int64_t r = r0; r < r1; ++r) {
    if (tmp == nullptr) {
      SoftmaxRow(x + r * ld_x, y + r * ld_y, n);
    } else {
      SoftmaxRowStreaming(x + r * ld_x, y + r * ld_y, n, tmp);
    }
  }
  if (tmp != nullptr) hwy::FlushStream();
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
  // Outputs beyond this stream past the caches (a consumer would not find them there anyway).
  constexpr int64_t kStreamBytes = int64_t{16} << 20;
  // Rows up to this many floats keep their exponentials in L2 for the streaming variant.
  constexpr int64_t kStreamMaxCols = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kChunkElements / cols);
  const bool stream = rows * cols * int64_t{sizeof(float)} >= kStreamBytes && cols <= kStreamMaxCols;
  ParallelFor(rows, grain, [&](int64_t r0, int64_t r1) {
    float* tmp = stream ? ThreadScratch(0, static_cast<size_t>(cols)) : nullptr;
    HWY_DYNAMIC_DISPATCH(SoftmaxRowsImpl)(r0, r1, cols, x, ld_x, y, ld_y, tmp);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

// Exact merge of partial attention results (simdattn_attention_merge): rows are independent,
// so they are split across threads in fixed chunks; each row is merged by MergeRow (the kernel
// simdattn_sdpa's decode split uses too), its pieces in index order. Chunks depend on the
// shape alone: results are bitwise identical for every thread count.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/merge.cc"
#include <algorithm>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "src/kernels/attention-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {
namespace {

// Row r of the caller's pieces. outs is null when d_v == 0 (no row is read then).
struct CallerPieces {
  const MergeArgs& a;
  int64_t r;
  float Lse(size_t i) const { return a.lses[i][r]; }
  const float* Row(size_t i) const {
    return a.outs == nullptr ? nullptr : a.outs[i] + r * a.ld_out;
  }
};

}  // namespace

void MergeRowsImpl(const MergeArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* out = a.out == nullptr ? nullptr : a.out + r * a.ld_merged;
    const float lse =
        MergeRow(CallerPieces{a, r}, static_cast<size_t>(a.n), static_cast<size_t>(a.d_v), out);
    if (a.lse != nullptr) a.lse[r] = lse;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(MergeRowsImpl);

// Work units (about a cycle each) of one chunk of rows: over a microsecond, more than a task's
// start-up; a row costs n * (d_v + kPieceOverhead) units (one exp and the row's pointers per
// piece).
constexpr int64_t kMinChunkUnits = 8192;
constexpr int64_t kPieceOverhead = 16;

void AttentionMerge(const MergeArgs& a) {
  const int64_t row_units = std::max<int64_t>(1, a.n * (a.d_v + kPieceOverhead));
  const int64_t grain = std::max<int64_t>(1, kMinChunkUnits / row_units);
  ParallelFor(a.rows, grain, [&](int64_t r0, int64_t r1) {
    HWY_DYNAMIC_DISPATCH(MergeRowsImpl)(a, r0, r1);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

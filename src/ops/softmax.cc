// Softmax op: rows are independent, so rows are split across threads in fixed chunks. A few long
// rows are also split along the row into fixed segments, so one long row uses every thread: three
// passes (segment maxima; exponentials and partial sums with the row maximum; scaling), with the
// partial maxima and sums combined in segment order. Chunks and segments depend on the shape
// alone, so results are bitwise identical for every thread count.

// GCC does not schedule instructions before register allocation on x86 by default, so the
// kUnroll Exp chains of ExpSubAndSum stay one after another in program order and the
// out-of-order window overlaps few of them; scheduling interleaves them (exp pass 13.9 -> 11.4
// cycles per vector on Zen 5). First in the file so every function here gets the same options.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("schedule-insns")
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/softmax.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <vector>
#include <cstdlib>  // EXPERIMENT

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/kernels/softmax-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

// Target-independent part (defined once).
#ifndef SIMDATTN_SRC_OPS_SOFTMAX_ONCE_
#define SIMDATTN_SRC_OPS_SOFTMAX_ONCE_
namespace simdattn {

// Rows split into `segments` segments of seg_len floats (the last may be shorter); task t is
// segment t % segments of row t / segments. maxes and parts hold one entry per task.
struct SegmentedRows {
  int64_t cols, segments, seg_len;
  const float* x;
  int64_t ld_x;
  float* y;
  int64_t ld_y;
  float* maxes;
  SoftmaxPart* parts;
};

// The passes of segmented rows, in order; each needs the previous one done for the whole row.
enum class SegmentPass { kMax, kExp, kFinish };

}  // namespace simdattn
#endif  // SIMDATTN_SRC_OPS_SOFTMAX_ONCE_

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

// tmp: nullptr for cached stores, else cols floats of scratch for the streaming variant.
void SoftmaxRowsImpl(int64_t r0, int64_t r1, int64_t cols, const float* x, int64_t ld_x, float* y,
                     int64_t ld_y, float* tmp) {
  const size_t n = static_cast<size_t>(cols);
  static const int kXPf = getenv("XPF") ? atoi(getenv("XPF")) : 0;  // EXPERIMENT
  for (int64_t r = r0; r < r1; ++r) {
    const float* nx = kXPf >= 1 && r + 1 < r1 ? x + (r + 1) * ld_x : nullptr;
    const float* ny = kXPf >= 2 && r + 1 < r1 ? y + (r + 1) * ld_y : nullptr;
    if (tmp == nullptr) {
      SoftmaxAnyRow(x + r * ld_x, y + r * ld_y, n, nx, ny);
    } else {
      SoftmaxRowStreaming(x + r * ld_x, y + r * ld_y, n, tmp, nx);
    }
  }
  if (tmp != nullptr) hwy::FlushStream();
}

// Runs `pass` for tasks [t0, t1) of s.
void SoftmaxSegmentsImpl(SegmentPass pass, int64_t t0, int64_t t1, const SegmentedRows& s) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = t / s.segments, first = row * s.segments;
    const int64_t begin = (t - first) * s.seg_len;
    const size_t n = static_cast<size_t>(std::min(s.seg_len, s.cols - begin));
    const float* x = s.x + row * s.ld_x + begin;
    float* y = s.y + row * s.ld_y + begin;
    const size_t segments = static_cast<size_t>(s.segments);
    switch (pass) {
      case SegmentPass::kMax:
        s.maxes[t] = RowMax(x, n);
        break;
      case SegmentPass::kExp:
        s.parts[t] = ExpPass(x, y, n, CombineMax(s.maxes + first, segments));
        break;
      case SegmentPass::kFinish:
        FinishPass(y, n, CombineMax(s.maxes + first, segments),
                   CombineParts(s.parts + first, segments));
        break;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(SoftmaxRowsImpl);
HWY_EXPORT(SoftmaxSegmentsImpl);

namespace {

// Rows longer than this are split into segments of about this many floats (a multiple of
// kSegmentAlign) when there are few of them: 32 KiB of x, thousands of cycles of exp per task.
constexpr int64_t kSegmentCols = 8192;
// Segments start on 256-byte boundaries relative to the row: whole cache lines and vectors.
constexpr int64_t kSegmentAlign = 64;
// Only rows fewer than this are segmented: with more, splitting by rows alone already feeds
// the threads of common machines, and a row's later passes find it in its thread's cache.
constexpr int64_t kSegmentRowsBelow = 8;

// rows x cols split into segments; the passes run one after the other, each over all tasks.
void SoftmaxSegmented(int64_t rows, int64_t cols, const float* x, int64_t ld_x, float* y,
                      int64_t ld_y) {
  const int64_t target_segments = (cols + kSegmentCols - 1) / kSegmentCols;
  const int64_t seg_len =
      ((cols + target_segments - 1) / target_segments + kSegmentAlign - 1) / kSegmentAlign *
      kSegmentAlign;
  const int64_t segments = (cols + seg_len - 1) / seg_len;
  const int64_t tasks = rows * segments;
  std::vector<float> maxes(static_cast<size_t>(tasks));
  std::vector<SoftmaxPart> parts(static_cast<size_t>(tasks));
  const SegmentedRows s{cols, segments, seg_len, x, ld_x, y, ld_y, maxes.data(), parts.data()};
  for (const SegmentPass pass : {SegmentPass::kMax, SegmentPass::kExp, SegmentPass::kFinish}) {
    ParallelFor(tasks, 1, [&](int64_t t0, int64_t t1) {
      HWY_DYNAMIC_DISPATCH(SoftmaxSegmentsImpl)(pass, t0, t1, s);
    });
  }
}

}  // namespace

void Softmax(int64_t rows, int64_t cols, const float* x, int64_t ld_x, float* y, int64_t ld_y) {
  static const bool kNoSeg = getenv("XSEG0") != nullptr;  // EXPERIMENT
  if (!kNoSeg && rows < kSegmentRowsBelow && cols > kSegmentCols) {
    return SoftmaxSegmented(rows, cols, x, ld_x, y, ld_y);
  }
  // ~32K elements per chunk: large enough to hide the task overhead, small enough to balance.
  constexpr int64_t kChunkElements = 32768;
  // Outputs beyond this stream past the caches (a consumer would not find them there anyway).
  constexpr int64_t kStreamBytes = int64_t{16} << 20;
  // Rows up to this many floats keep their exponentials in L2 for the streaming variant.
  constexpr int64_t kStreamMaxCols = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kChunkElements / cols);
  static const int kXStream = getenv("XSTREAM") ? atoi(getenv("XSTREAM")) : -1;  // EXPERIMENT
  bool stream = rows * cols * int64_t{sizeof(float)} >= kStreamBytes && cols <= kStreamMaxCols;
  if (kXStream >= 0) stream = kXStream == 1;  // EXPERIMENT
  ParallelFor(rows, grain, [&](int64_t r0, int64_t r1) {
    float* tmp = stream ? ThreadScratch(0, static_cast<size_t>(cols)) : nullptr;
    HWY_DYNAMIC_DISPATCH(SoftmaxRowsImpl)(r0, r1, cols, x, ld_x, y, ld_y, tmp);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

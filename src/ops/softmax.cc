// Softmax op: rows are independent, so rows are split across threads in fixed chunks (each chunk
// runs the kernel's row pipeline, with streaming stores for outputs larger than the caches). A
// few very long rows are also split along the row into fixed segments, so one long row uses
// every thread: three passes (segment maxima; exponentials and partial sums with the row
// maximum; scaling), with the partial maxima and sums combined in segment order. Chunks and
// segments depend on the shape alone, so results are bitwise identical for every thread count.

// GCC does not schedule instructions before register allocation on x86 by default, so the
// kUnroll exp chains of ExpSubAndSum stay one after another in program order and the
// out-of-order window overlaps few of them; scheduling interleaves them (exp pass 13.9 -> 11.4
// cycles per vector on Zen 5, measured with Highway's Exp). First in the file so every function
// here gets the same options.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("schedule-insns")
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/softmax.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <new>
#include <vector>

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

// Rows [r0, r1) of rows; stream_tmp: nullptr, or 2 * cols floats of scratch for streaming stores.
void SoftmaxRowsImpl(int64_t r0, int64_t r1, int64_t rows, int64_t cols, const float* x,
                     int64_t ld_x, float* y, int64_t ld_y, float* stream_tmp) {
  SoftmaxRows(x + r0 * ld_x, static_cast<size_t>(ld_x), y + r0 * ld_y, static_cast<size_t>(ld_y),
              static_cast<size_t>(r1 - r0), static_cast<size_t>(rows - r0),
              static_cast<size_t>(cols), stream_tmp);
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

// Rows of at least this many floats (1 MiB) are split into segments when there are few of them.
// Shorter rows stay on one thread: on Zen 5 one row of 100000 floats took 27 us on one core and
// no less split in 2-13 segments over 2 threads (three parallel passes cost a few us of task
// overhead, and a segment's passes may run on different cores); from 300000 floats on, the split
// paid (2 threads: 1.5x at 300000, 1.75x at 1M, 2.4x at 4M floats).
constexpr int64_t kSegmentMinCols = int64_t{1} << 18;
// Segment length, about: 64 KiB of x, over 10 us of exp per task.
constexpr int64_t kSegmentCols = int64_t{1} << 14;
// Segments start on 256-byte boundaries relative to the row: whole cache lines and vectors.
constexpr int64_t kSegmentAlign = 64;
// Only rows fewer than this are segmented: with more, splitting by rows alone already feeds
// the threads of common machines, and a row's later passes find it in its thread's cache.
constexpr int64_t kSegmentRowsBelow = 8;

// Row chunks: the work of a row is counted as cols + kRowOverheadUnits "units" (about a cycle
// each: a short row costs about as much as 32 more floats of a long one, in its reductions and
// its one Exp on a partly empty vector). A chunk has at least kMinChunkUnits (over a
// microsecond: more than the task overhead), and there are at most kMaxChunks (enough to
// balance tens of threads; more rows per chunk keep the row pipeline of SoftmaxRows running:
// 4096 x 4096 took 4.5 ms in chunks of 3 rows, 2.7 ms in chunks of 31).
constexpr int64_t kRowOverheadUnits = 32;
constexpr int64_t kMinChunkUnits = 4096;
constexpr int64_t kMaxChunks = 64;

// Outputs of at least this many bytes are written by streaming stores past the caches (a
// consumer would not find them there anyway): one read of x and one write of y, as in a
// streaming copy, and no read for ownership of y (4096 x 4096 on 2 threads: about 5% faster
// than ordinary stores with y prefetched).
constexpr int64_t kStreamBytes = int64_t{16} << 20;
// Rows up to this many floats keep their two rows of exponentials in L2 for streaming.
constexpr int64_t kStreamMaxCols = int64_t{1} << 16;

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
  if (rows < kSegmentRowsBelow && cols >= kSegmentMinCols) {
    return SoftmaxSegmented(rows, cols, x, ld_x, y, ld_y);
  }
  const int64_t row_units = cols + kRowOverheadUnits;
  const int64_t grain = std::max((kMinChunkUnits + row_units - 1) / row_units,
                                 (rows + kMaxChunks - 1) / kMaxChunks);
  const bool stream =
      rows * cols * int64_t{sizeof(float)} >= kStreamBytes && cols <= kStreamMaxCols;
  ParallelFor(rows, grain, [&](int64_t r0, int64_t r1) {
    float* tmp = nullptr;
    if (stream) {
      try {
        tmp = ThreadScratch(0, static_cast<size_t>(2 * cols));
      } catch (const std::bad_alloc&) {  // ordinary stores then: nothing may fail half-written
      }
    }
    HWY_DYNAMIC_DISPATCH(SoftmaxRowsImpl)(r0, r1, rows, cols, x, ld_x, y, ld_y, tmp);
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

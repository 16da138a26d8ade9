// Fused scaled-dot-product attention (flash style) over the transposed score block S^T:
// a task owns one block of query columns of one (batch, kv head) pair — the columns are
// (query, head-in-GQA-group) pairs, so the heads sharing a K/V stream share its loads — and
// walks the visible keys in blocks: S^T = scale * K Q^T (GEMM microkernel, K read in place),
// masks, online softmax, O^T += V^T P^T (microkernel, V read in place). Memory per thread is
// O(block), never O(q_len * kv_len).
// Decode-like shapes (few tasks, long kv) also split the keys into fixed ranges merged by their
// log-sum-exp in index order; the split depends on the shape only, never on the thread count.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/sdpa.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "hwy/highway.h"
#include "simdattn.h"
#include "src/kernels/attention-inl.h"
#include "src/kernels/gemm-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

#ifndef SIMDATTN_OPS_SDPA_ONCE_
#define SIMDATTN_OPS_SDPA_ONCE_
namespace simdattn {
// Query columns per task: 2 AVX-512 register-tile widths; Q^T (d_k x 64) and O^T (d_v x 64)
// stay in L1/L2 for the whole key sweep.
constexpr int64_t kBlockCols = 64;
// Keys per block: the P^T panel (128 x 32 floats = 16 KiB) stays in L1 while P V runs.
constexpr int64_t kBlockKeys = 128;
// Key range of one split in decode-like shapes: long enough to amortise the merge.
constexpr int64_t kSplitKeys = 2048;
// Fewer tasks than this (a shape property, not the thread count) -> split the keys.
constexpr int64_t kMinTasks = 16;

struct SdpaTask {
  int64_t b, kvh, col0, col1;  // columns [col0, col1) of (b, kvh); column j = query j / G, head g = j % G
  int64_t key0, key1;          // key range of this task
};
// Partial results of one split task: m, l (kBlockCols each), then O^T (d_v x kBlockCols).
inline int64_t PartialFloats(int64_t d_v) { return (2 + d_v) * kBlockCols; }
// Scratch of one task: Q^T or query rows (slot 0), S^T (1), O^T (2), m and l (3).
inline TaskScratch SdpaTaskScratch(int64_t d_k, int64_t d_v) {
  TaskScratch s;
  s.floats[0] = static_cast<size_t>(d_k * kBlockCols);
  s.floats[1] = static_cast<size_t>(kBlockKeys * kBlockCols);
  s.floats[2] = static_cast<size_t>(std::max<int64_t>(d_v, 1) * kBlockCols);
  s.floats[3] = static_cast<size_t>(2 * kBlockCols);
  return s;
}
}  // namespace simdattn
#endif

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {
namespace {

// Geometry of one task's columns.
struct Columns {
  int64_t n = 0;                  // columns in use
  int64_t qi[kBlockCols];         // query index of each column
  int64_t head[kBlockCols];       // query head of each column
  int64_t qi_min = 0, qi_max = 0;
  int64_t kv_len_b = 0;           // keys of this batch entry (kv_lens)
  int64_t offset = 0;             // causal: key j visible to query i iff j <= i + offset
};

Columns MakeColumns(const SdpaArgs& a, const SdpaTask& t) {
  Columns c;
  const int64_t group = a.heads / a.kv_heads;
  c.n = t.col1 - t.col0;
  for (int64_t j = 0; j < c.n; ++j) {
    c.qi[j] = (t.col0 + j) / group;
    c.head[j] = t.kvh * group + (t.col0 + j) % group;
  }
  c.qi_min = c.qi[0];
  c.qi_max = c.qi[c.n - 1];
  c.kv_len_b = a.kv_lens ? a.kv_lens[t.b] : a.kv_len;
  c.offset = a.causal == SIMDATTN_CAUSAL_BOTTOM_RIGHT ? c.kv_len_b - a.q_len : 0;
  return c;
}

// Keys [*lo, *hi) that any column of the task may see.
void VisibleKeys(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t* lo, int64_t* hi) {
  int64_t end = std::min(t.key1, c.kv_len_b);
  if (a.causal != SIMDATTN_CAUSAL_NONE) end = std::min(end, c.qi_max + c.offset + 1);
  *lo = t.key0;
  *hi = std::max(end, t.key0);
}

// Columns rounded up to whole vectors: the width the softmax and merge steps work on.
size_t PaddedCols(const Columns& c) {
  const size_t n = hn::Lanes(DF());
  return (static_cast<size_t>(c.n) + n - 1) / n * n;
}

bool ByRows(const Columns& c) { return c.n <= static_cast<int64_t>(kRowCols); }

const float* QueryRow(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t j) {
  return a.q + t.b * a.q_s.batch + c.head[j] * a.q_s.head + c.qi[j] * a.q_s.seq;
}

// The task's queries: by rows (qt[j * d_k + p], ByRows) or as Q^T for the microkernel
// (qt[p * kBlockCols + j], zero beyond the used columns).
void PackQueries(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* qt) {
  if (ByRows(c)) {
    for (int64_t j = 0; j < c.n; ++j) std::copy_n(QueryRow(a, t, c, j), a.d_k, qt + j * a.d_k);
    return;
  }
  const int64_t padded = (c.n + static_cast<int64_t>(NR()) - 1) / NR() * NR();
  const float* src[kBlockCols];
  for (int64_t j = 0; j < c.n; ++j) src[j] = QueryRow(a, t, c, j);
  for (int64_t p = 0; p < a.d_k; ++p) {  // row by row: contiguous writes
    float* row = qt + p * kBlockCols;
    for (int64_t j = 0; j < c.n; ++j) row[j] = src[j][p];
    std::fill(row + c.n, row + padded, 0.0f);
  }
}

// Additive mask, causal limit and key padding for keys [k0, k0 + bk) of the score block s.
void MaskBlock(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t k0, int64_t bk,
               float* s) {
  const bool causal_cut = a.causal != SIMDATTN_CAUSAL_NONE && k0 + bk - 1 > c.qi_min + c.offset;
  if (a.mask != nullptr || causal_cut) {
    for (int64_t j = 0; j < c.n; ++j) {
      const float* mrow = a.mask == nullptr ? nullptr
                          : a.mask + t.b * a.mask_s.batch + c.head[j] * a.mask_s.head +
                                c.qi[j] * a.mask_s.seq + k0;
      const int64_t last = causal_cut ? c.qi[j] + c.offset - k0 : bk;  // last visible row
      for (int64_t r = 0; r < bk; ++r) {
        float v = s[r * kBlockCols + j];
        if (mrow != nullptr) v += mrow[r];
        s[r * kBlockCols + j] = r > last ? kNegInf : v;
      }
    }
  }
  if (a.key_padding != nullptr) {
    const uint8_t* pad = a.key_padding + t.b * a.key_padding_batch_stride + k0;
    for (int64_t r = 0; r < bk; ++r) {
      if (pad[r] == 0) continue;
      for (int64_t j = 0; j < kBlockCols; ++j) s[r * kBlockCols + j] = kNegInf;
    }
  }
}

// S^T (bk x columns) = scale * K[k0 : k0 + bk] Q^T, then masked.
void ScoreBlock(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* qt,
                int64_t k0, int64_t bk, float* s) {
  const float* k = a.k + t.b * a.k_s.batch + t.kvh * a.k_s.head + k0 * a.k_s.seq;
  const size_t k_seq = static_cast<size_t>(a.k_s.seq);
  if (ByRows(c)) {
    ScoresByRows(k, k_seq, bk, qt, c.n, a.d_k, a.scale, s, kBlockCols);
  } else {
    MacroKernel(bk, c.n, a.d_k, k, k_seq, 1, kMR * k_seq, PanelsB{qt, NR(), kBlockCols}, s,
                kBlockCols, a.scale, 0.0f);
  }
  MaskBlock(a, t, c, k0, bk, s);
}

// The flash sweep: m, l per column and O^T (d_v x kBlockCols) over the task's visible keys.
void Sweep(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* qt, float* s, float* m,
           float* l, float* o) {
  const size_t ncols = PaddedCols(c);
  std::fill(m, m + ncols, kNegInf);
  std::fill(l, l + ncols, 0.0f);
  for (int64_t i = 0; i < a.d_v; ++i) std::fill(o + i * kBlockCols, o + i * kBlockCols + ncols, 0.0f);
  int64_t lo = 0, hi = 0;
  VisibleKeys(a, t, c, &lo, &hi);
  if (lo >= hi) return;
  PackQueries(a, t, c, qt);
  const float* v = a.v + t.b * a.v_s.batch + t.kvh * a.v_s.head;
  const size_t v_seq = static_cast<size_t>(a.v_s.seq);
  for (int64_t k0 = lo; k0 < hi; k0 += kBlockKeys) {
    const int64_t bk = std::min(kBlockKeys, hi - k0);
    ScoreBlock(a, t, c, qt, k0, bk, s);
    OnlineSoftmaxStep(s, kBlockCols, bk, ncols, m, l, o, kBlockCols, a.d_v);
    if (ByRows(c)) {
      AccumulateByRows(v + k0 * a.v_s.seq, v_seq, bk, s, kBlockCols, c.n, o, kBlockCols, a.d_v);
    } else {
      MacroKernel(a.d_v, c.n, bk, v + k0 * a.v_s.seq, 1, v_seq, kMR,
                  PanelsB{s, NR(), kBlockCols}, o, kBlockCols, 1.0f, 1.0f);
    }
  }
}

// out = O^T / l per column (0 where no key was visible), lse = m + log(l) (-inf there); NaN
// where l is NaN (a NaN or +inf score).
void Finalize(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* m,
              const float* l, const float* o) {
  for (int64_t j = 0; j < c.n; ++j) {
    const float inv = l[j] == 0.0f ? 0.0f : 1.0f / l[j];
    float* out = a.out + t.b * a.out_s.batch + c.head[j] * a.out_s.head + c.qi[j] * a.out_s.seq;
    for (int64_t i = 0; i < a.d_v; ++i) out[i] = o[i * kBlockCols + j] * inv;
    if (a.lse != nullptr) {
      a.lse[(t.b * a.heads + c.head[j]) * a.q_len + c.qi[j]] =
          l[j] == 0.0f ? kNegInf : m[j] + std::log(l[j]);
    }
  }
}

// Materialises the probabilities of the task's columns (second pass over the keys).
void WriteWeights(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* qt, float* s,
                  const float* m, const float* l) {
  float* rows[kBlockCols];
  for (int64_t j = 0; j < c.n; ++j) {
    rows[j] = a.weights + ((t.b * a.heads + c.head[j]) * a.q_len + c.qi[j]) * a.kv_len;
    std::fill(rows[j], rows[j] + a.kv_len, 0.0f);
  }
  int64_t lo = 0, hi = 0;
  VisibleKeys(a, t, c, &lo, &hi);
  if (lo >= hi) return;
  PackQueries(a, t, c, qt);
  const size_t ncols = PaddedCols(c);
  for (int64_t k0 = lo; k0 < hi; k0 += kBlockKeys) {
    const int64_t bk = std::min(kBlockKeys, hi - k0);
    ScoreBlock(a, t, c, qt, k0, bk, s);
    NormalizeBlock(s, kBlockCols, bk, ncols, m, l);
    for (int64_t r = 0; r < bk; ++r) {
      for (int64_t j = 0; j < c.n; ++j) rows[j][k0 + r] = s[r * kBlockCols + j];
    }
  }
}

struct Scratch {
  float *qt, *s, *m, *l, *o;
};

Scratch GetScratch(const SdpaArgs& a) {
  const TaskScratch need = SdpaTaskScratch(a.d_k, a.d_v);
  Scratch sc;
  sc.qt = ThreadScratch(0, need.floats[0]);
  sc.s = ThreadScratch(1, need.floats[1]);
  sc.o = ThreadScratch(2, need.floats[2]);
  sc.m = ThreadScratch(3, need.floats[3]);
  sc.l = sc.m + kBlockCols;
  return sc;
}

}  // namespace

// Whole task: sweep, then write out/lse/weights (partial == nullptr), or store the partial
// {m, l, O^T} for a later merge.
void AttendTaskImpl(const SdpaArgs& a, const SdpaTask& t, float* partial) {
  const Columns c = MakeColumns(a, t);
  Scratch sc = GetScratch(a);
  if (partial != nullptr) {
    sc.m = partial;
    sc.l = partial + kBlockCols;
    sc.o = partial + 2 * kBlockCols;
  }
  Sweep(a, t, c, sc.qt, sc.s, sc.m, sc.l, sc.o);
  if (partial != nullptr) return;
  Finalize(a, t, c, sc.m, sc.l, sc.o);
  if (a.weights != nullptr) WriteWeights(a, t, c, sc.qt, sc.s, sc.m, sc.l);
}

// Merges `splits` partials (consecutive key ranges, in order) of one column block and writes it.
// ptrs: 3 * splits pointers of scratch (allocated by the caller: a task never allocates).
void MergeTaskImpl(const SdpaArgs& a, const SdpaTask& t, int64_t splits, const float* partials,
                   const float** ptrs) {
  const Columns c = MakeColumns(a, t);
  Scratch sc = GetScratch(a);
  const float** pm = ptrs;
  const float** pl = ptrs + splits;
  const float** po = ptrs + 2 * splits;
  const int64_t stride = PartialFloats(a.d_v);
  for (int64_t i = 0; i < splits; ++i) {
    pm[i] = partials + i * stride;
    pl[i] = pm[i] + kBlockCols;
    po[i] = pm[i] + 2 * kBlockCols;
  }
  MergePartials(splits, pm, pl, po, PaddedCols(c), a.d_v, kBlockCols, sc.m, sc.l, sc.o);
  Finalize(a, t, c, sc.m, sc.l, sc.o);
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(AttendTaskImpl);
HWY_EXPORT(MergeTaskImpl);

TaskScratch SdpaScratch(const SdpaArgs& a) { return SdpaTaskScratch(a.d_k, a.d_v); }

void Sdpa(const SdpaArgs& a) {
  ReserveTaskScratch(SdpaScratch(a));  // before the first output write
  const int64_t group = a.heads / a.kv_heads;
  const int64_t cols = a.q_len * group;
  const int64_t col_blocks = CeilDiv(cols, kBlockCols);
  const int64_t blocks = a.batch * a.kv_heads * col_blocks;
  int64_t splits = 1;
  if (a.weights == nullptr && blocks < kMinTasks && a.kv_len >= 2 * kSplitKeys) {
    splits = CeilDiv(a.kv_len, kSplitKeys);
  }
  const int64_t split_len = CeilDiv(std::max<int64_t>(a.kv_len, 1), splits);
  auto task_of = [&](int64_t block, int64_t split) {
    const int64_t cb = block % col_blocks, bh = block / col_blocks;
    const int64_t col0 = cb * kBlockCols;
    return SdpaTask{bh / a.kv_heads, bh % a.kv_heads, col0, std::min(cols, col0 + kBlockCols),
                    split * split_len, splits == 1 ? a.kv_len : std::min(a.kv_len, (split + 1) * split_len)};
  };
  if (splits == 1) {
    ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        HWY_DYNAMIC_DISPATCH(AttendTaskImpl)(a, task_of(i, 0), nullptr);
      }
    });
    return;
  }
  const int64_t stride = PartialFloats(a.d_v);
  float* partials = ThreadScratch(kSdpaCallSlot, static_cast<size_t>(blocks * splits * stride));
  std::vector<const float*> merge_ptrs(static_cast<size_t>(3 * blocks * splits));
  ParallelFor(blocks * splits, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      HWY_DYNAMIC_DISPATCH(AttendTaskImpl)(a, task_of(i / splits, i % splits),
                                           partials + i * stride);
    }
  });
  ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      HWY_DYNAMIC_DISPATCH(MergeTaskImpl)(a, task_of(i, 0), splits,
                                          partials + i * splits * stride,
                                          merge_ptrs.data() + 3 * i * splits);
    }
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

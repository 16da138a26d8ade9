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

#include "hwy/highway.h"
#include "simdattn.h"
#include "src/cpu.h"
#include "src/kernels/attention-inl.h"
#include "src/kernels/cast-inl.h"
#include "src/kernels/gemm-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

#ifndef SIMDATTN_OPS_SDPA_ONCE_
#define SIMDATTN_OPS_SDPA_ONCE_
namespace simdattn {
// Query columns per task: 2 AVX-512 register-tile widths; Q^T (d_k x 64) and O^T (d_v x 64)
// stay in L1/L2 for the whole key sweep.
constexpr int64_t kBlockCols = 64;
// Key range of one split in decode-like shapes: long enough to amortise the merge.
constexpr int64_t kSplitKeys = 2048;
// Key range of one split over a paged cache, whose ranges run one after another across the kv
// heads (Sdpa): 512 keys of 8 heads of 128 in bf16 are 2 MiB of K and V, within the L2 TLB's
// reach (Zen 4: 3072 4 KiB entries; rows of one head are 2-4 KiB apart, a page each).
constexpr int64_t kPagedSplitKeys = 512;
// Shortest key range of a paged decode split while the shape has fewer than kMinTasks tasks: a
// batch-1 decode of 512 keys otherwise ran as one task on one thread (8 kv heads per task).
constexpr int64_t kMinPagedSplitKeys = 128;
// Kv heads per task of a paged decode range (PagedDecodeRangeImpl): a key's rows of all of them
// are adjacent in a page (8 heads of 128 in bf16: 2 KiB) and read in one block's time.
constexpr int64_t kDecodeHeads = 8;
// Most columns of a (batch, kv head) that take the decode kernels (kRowCols, attention-inl.h).
constexpr int64_t kDecodeCols = 8;
// Fewer tasks than this (a shape property, not the thread count) -> split the keys.
constexpr int64_t kMinTasks = 16;
// Vector FMAs per task chunk of the few-keys path (see Sdpa).
constexpr int64_t kFewKeysChunkFmas = 16384;

struct SdpaTask {
  int64_t b, kvh, col0, col1;  // columns [col0, col1) of (b, kvh); column j = query j / G, head g = j % G
  int64_t key0, key1;          // key range of this task
};
// Columns of one (batch, kv head): its q_len queries of each of the heads / kv_heads heads.
inline int64_t PairCols(const SdpaArgs& a) { return a.q_len * (a.heads / a.kv_heads); }
// Column block cb (kBlockCols of the pair's cols columns, fewer in the last) of (b, kvh) over
// keys [key0, key1).
inline SdpaTask BlockTask(int64_t b, int64_t kvh, int64_t cb, int64_t cols, int64_t key0,
                          int64_t key1) {
  const int64_t col0 = cb * kBlockCols;
  return SdpaTask{b, kvh, col0, std::min(cols, col0 + kBlockCols), key0, key1};
}
// Geometry of batch entry b: a batch entry of simdattn_sdpa or a sequence of
// simdattn_sdpa_varlen (SdpaArgs::cu_q set; then the .batch strides are unused).
inline int64_t QLen(const SdpaArgs& a, int64_t b) {
  return a.cu_q != nullptr ? a.cu_q[b + 1] - a.cu_q[b] : a.q_len;
}
inline int64_t KvLen(const SdpaArgs& a, int64_t b) {
  if (a.cu_kv != nullptr) return a.cu_kv[b + 1] - a.cu_kv[b];
  return a.kv_lens != nullptr ? a.kv_lens[b] : a.kv_len;
}
// Element offset of entry b in q or out (strides s), and in k or v.
inline int64_t QBase(const SdpaArgs& a, int64_t b, const Strides4& s) {
  return a.cu_q != nullptr ? a.cu_q[b] * s.seq : b * s.batch;
}
inline int64_t KvBase(const SdpaArgs& a, int64_t b, const Strides4& s) {
  return a.cu_kv != nullptr ? a.cu_kv[b] * s.seq : b * s.batch;
}
// Index of (b, h, i) in lse: [batch, heads, q_len], or [total_q, heads] for varlen.
inline int64_t LseIndex(const SdpaArgs& a, int64_t b, int64_t h, int64_t i) {
  return a.cu_q != nullptr ? (a.cu_q[b] + i) * a.heads + h : (b * a.heads + h) * a.q_len + i;
}

// Largest K and V rows of one (batch, kv head) that a task copies to contiguous rows
// (PacksPairs), floats: 4 MiB, the reservation each thread keeps for it.
constexpr int64_t kPairCopyFloats = int64_t{1} << 20;

// Whether Sdpa runs (batch, kv head) pairs over a contiguous copy of their K and V rows
// (PairTaskImpl): K or V strided (BSHD: rows a token apart, which share L2 sets, so the column
// blocks of a pair read them from L3 or memory again each), several column blocks per pair to
// share the copy, enough tasks not to split the keys, and a copy of at most kPairCopyFloats.
inline bool PacksPairs(const SdpaArgs& a) {
  const bool strided = a.k_s.seq != a.d_k || (a.d_v > 0 && a.v_s.seq != a.d_v);
  const int64_t col_blocks = CeilDiv(PairCols(a), kBlockCols);
  return strided && a.pages == nullptr && a.cu_q == nullptr && col_blocks > 1 &&
         a.batch * a.kv_heads * col_blocks >= kMinTasks &&
         a.kv_len * (a.d_k + a.d_v) <= kPairCopyFloats;
}

// Partial result of one split task, finalized: lse (kBlockCols), then kBlockCols output rows
// of d_v; merged by MergeRow, the kernel of simdattn_attention_merge.
inline int64_t PartialFloats(int64_t d_v) { return (1 + d_v) * kBlockCols; }
// Scratch of one task (a.block_keys set) on a target of `lanes` floats per vector: Q^T or query
// rows, or the few-keys path's K^T and its transpose buffer (slot 0), S^T and the copies of
// strided K/V blocks or of a pair's K/V rows (1), O^T (2), m and l (3). A paged decode range
// keeps its kDecodeHeads heads' query rows (kRowCols x d_k each), outputs (kRowCols x d_v) and
// m, l in slots 0, 2, 3.
inline TaskScratch SdpaTaskScratch(const SdpaArgs& a, int64_t lanes) {
  TaskScratch s;
  s.floats[0] = static_cast<size_t>(a.d_k * std::max<int64_t>(kBlockCols, 2 * lanes));
  const int64_t copy_keys = PacksPairs(a) ? std::max(a.kv_len, a.block_keys) : a.block_keys;
  s.floats[1] = static_cast<size_t>(a.block_keys * kBlockCols + copy_keys * (a.d_k + a.d_v));
  s.floats[2] = static_cast<size_t>(std::max<int64_t>(a.d_v, 1) * kBlockCols);
  s.floats[3] = static_cast<size_t>(2 * kBlockCols * kDecodeHeads);  // m, l of each head
  return s;
}
}  // namespace simdattn
#endif

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {
namespace {

// Geometry of one task's columns. A column's query position is d = qi + offset (simdattn.h).
struct Columns {
  int64_t n = 0;                  // columns in use
  int64_t qi[kBlockCols];         // query index of each column
  int64_t head[kBlockCols];       // query head of each column
  int64_t qi_min = 0, qi_max = 0;
  int64_t kv_len_b = 0;           // keys of this batch entry (kv_lens, varlen)
  int64_t offset = 0;             // d_i - i (QueryOffset)
  bool alibi_exact = false;       // every position and key index fits a float exactly (< 2^23)
  HWY_ALIGN float pos[kBlockCols];    // ALiBi: d of each column (0 past n)
  HWY_ALIGN float slope[kBlockCols];  // ALiBi: the slope of each column's head (0 past n)
};

// Positions and key indices below this are exact floats, and so are their differences.
constexpr int64_t kAlibiExactLimit = int64_t{1} << 23;

int64_t SatAdd(int64_t x, int64_t y) {
  int64_t r = 0;
  return __builtin_add_overflow(x, y, &r) ? (y > 0 ? INT64_MAX : INT64_MIN) : r;
}

// d_i - i for the queries of batch entry b: 0 for TOP_LEFT, else kv_len_b - q_len_b.
int64_t QueryOffset(const SdpaArgs& a, int64_t b) {
  return a.causal == SIMDATTN_CAUSAL_TOP_LEFT ? 0 : KvLen(a, b) - QLen(a, b);
}

// Keys [first, last] (absolute, saturated: INT64_MIN / INT64_MAX when unbounded) that the causal
// and window limits leave to a query at position d; kv_len is not applied.
struct KeyLimits {
  int64_t first, last;
};
KeyLimits LimitsAt(const SdpaArgs& a, int64_t d) {
  KeyLimits k{INT64_MIN, INT64_MAX};
  if (a.causal != SIMDATTN_CAUSAL_NONE) k.last = d;
  if (a.window) {
    k.last = std::min(k.last, SatAdd(d, a.window_right));
    k.first = SatAdd(d, -a.window_left);
  }
  return k;
}

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
  c.kv_len_b = KvLen(a, t.b);
  c.offset = QueryOffset(a, t.b);
  if (a.alibi_slopes != nullptr) {
    const int64_t far = std::max({std::abs(c.qi_min + c.offset), std::abs(c.qi_max + c.offset),
                                  c.kv_len_b});
    c.alibi_exact = far < kAlibiExactLimit;
    for (int64_t j = 0; j < kBlockCols; ++j) {
      c.pos[j] = j < c.n ? static_cast<float>(c.qi[j] + c.offset) : 0.0f;
      c.slope[j] = j < c.n ? a.alibi_slopes[c.head[j]] : 0.0f;
    }
  }
  return c;
}

// Keys [*lo, *hi) that any column of the task may see (causal limit and window).
void VisibleKeys(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t* lo, int64_t* hi) {
  const int64_t begin = std::max(t.key0, LimitsAt(a, c.qi_min + c.offset).first);
  const int64_t end =
      std::min({t.key1, c.kv_len_b, SatAdd(LimitsAt(a, c.qi_max + c.offset).last, 1)});
  *lo = begin;
  *hi = std::max(end, begin);
}

// Visible keys of column j within [k0, k0 + bk), relative to k0: [*first, *last] (may be
// empty: first > last).
void VisibleRows(const SdpaArgs& a, const Columns& c, int64_t j, int64_t k0, int64_t bk,
                 int64_t* first, int64_t* last) {
  const KeyLimits lim = LimitsAt(a, c.qi[j] + c.offset);
  *first = lim.first > k0 ? lim.first - k0 : 0;
  *last = std::min(bk - 1, lim.last - k0);
}

// Columns rounded up to whole vectors: the width the online softmax steps work on.
size_t PaddedCols(const Columns& c) {
  const size_t n = hn::Lanes(DF());
  return (static_cast<size_t>(c.n) + n - 1) / n * n;
}

bool ByRows(const Columns& c) { return c.n <= static_cast<int64_t>(kRowCols); }

const float* QueryRow(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t j) {
  return a.q + QBase(a, t.b, a.q_s) + c.head[j] * a.q_s.head + c.qi[j] * a.q_s.seq;
}

// The task's queries: by rows (qt[j * d_k + p], ByRows) or as Q^T for the microkernel
// (qt[p * kBlockCols + j], zero beyond the used columns).
void PackQueries(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* qt) {
  if (ByRows(c)) {
    for (int64_t j = 0; j < c.n; ++j) std::copy_n(QueryRow(a, t, c, j), a.d_k, qt + j * a.d_k);
    return;
  }
  const int64_t padded = (c.n + static_cast<int64_t>(NR()) - 1) / NR() * NR();
  for (int64_t p = 0; p < a.d_k; ++p) {
    std::fill(qt + p * kBlockCols + c.n, qt + p * kBlockCols + padded, 0.0f);
  }
  int64_t j = 0;
  // kT equally spaced rows at a time through a register transpose: their loads issue together,
  // where the scalar scatter below waits on one row (a token apart in BSHD: a miss each) at a
  // time.
  constexpr int64_t kT = static_cast<int64_t>(kTransposeN);
  if constexpr (kT != 0) {
    const int64_t whole = a.d_k / kT * kT;  // elements of each row through the transpose
    for (; j + kT <= c.n; j += kT) {
      const float* first = QueryRow(a, t, c, j);
      const ptrdiff_t step = QueryRow(a, t, c, j + 1) - first;
      bool even = step >= 0;
      for (int64_t i = 2; i < kT && even; ++i) even = QueryRow(a, t, c, j + i) - first == i * step;
      if (!even) break;
      for (int64_t p = 0; p < whole; p += kT) {
        TransposeSquare(first + p, static_cast<size_t>(step), qt + p * kBlockCols + j, kBlockCols);
      }
      for (int64_t i = 0; i < kT; ++i) {
        for (int64_t p = whole; p < a.d_k; ++p) qt[p * kBlockCols + j + i] = first[i * step + p];
      }
    }
  }
  // Each query row is read once, contiguously, and scattered into the L1-resident Q^T: rows a
  // token apart (BSHD) share L1 sets, so reading them one float of every row at a time missed
  // L1 on every load.
  for (; j < c.n; ++j) {
    const float* src = QueryRow(a, t, c, j);
    for (int64_t p = 0; p < a.d_k; ++p) qt[p * kBlockCols + j] = src[p];
  }
}

// ALiBi bias slope * |key - pos| where the distance is not an exact float (positions of 2^23 and
// beyond): the distance in int64, the product in double, rounded once to float.
float AlibiBiasWide(float slope, int64_t key, int64_t pos) {
  const int64_t dist = key > pos ? key - pos : pos - key;
  return static_cast<float>(static_cast<double>(slope) * static_cast<double>(dist));
}

void AlibiBlockWide(const Columns& c, int64_t k0, int64_t bk, float* s) {
  for (int64_t r = 0; r < bk; ++r) {
    for (int64_t j = 0; j < c.n; ++j) {
      s[r * kBlockCols + j] -= AlibiBiasWide(c.slope[j], k0 + r, c.qi[j] + c.offset);
    }
  }
}

// Softcap and ALiBi, then the additive mask, the causal and window limits and key padding, for
// keys [k0, k0 + bk) of the score block s (simdattn.h's order).
void MaskBlock(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t k0, int64_t bk,
               float* s, int64_t ld = kBlockCols) {
  const size_t ncols = PaddedCols(c);
  if (a.softcap > 0.0f && ld == kBlockCols) {
    SoftcapBlock(s, kBlockCols, static_cast<size_t>(bk), ncols, a.softcap);
  } else if (a.softcap > 0.0f) {  // compact rows as one
    SoftcapBlock(s, 0, 1, static_cast<size_t>(bk * ld), a.softcap);
  }
  HWY_DASSERT(ld == kBlockCols || (a.alibi_slopes == nullptr && a.mask == nullptr));
  if (a.alibi_slopes != nullptr) {
    if (c.alibi_exact) {
      AlibiBlock(s, kBlockCols, static_cast<size_t>(bk), ncols, k0, c.pos, c.slope);
    } else {
      AlibiBlockWide(c, k0, bk, s);
    }
  }
  if (a.mask != nullptr) {
    for (int64_t j = 0; j < c.n; ++j) {
      const float* mrow = a.mask + t.b * a.mask_s.batch + c.head[j] * a.mask_s.head +
                          c.qi[j] * a.mask_s.seq + k0;
      for (int64_t r = 0; r < bk; ++r) s[r * ld + j] += mrow[r];
    }
  }
  if (a.causal != SIMDATTN_CAUSAL_NONE || a.window) {
    for (int64_t j = 0; j < c.n; ++j) {
      int64_t first = 0, last = 0;
      VisibleRows(a, c, j, k0, bk, &first, &last);
      if (first > last) first = last = bk;  // nothing visible: cut every row
      for (int64_t r = 0; r < std::min(first, bk); ++r) s[r * ld + j] = kNegInf;
      for (int64_t r = std::max<int64_t>(last + 1, 0); r < bk; ++r) s[r * ld + j] = kNegInf;
    }
  }
  if (a.key_padding != nullptr) {
    const uint8_t* pad = a.key_padding + t.b * a.key_padding_batch_stride + k0;
    for (int64_t r = 0; r < bk; ++r) {
      if (pad[r] == 0) continue;
      for (int64_t j = 0; j < ld; ++j) s[r * ld + j] = kNegInf;
    }
  }
}

// S^T (bk x columns) = scale * K[k0 : k0 + bk] Q^T, then masked. k: those K rows, k_seq apart.
void ScoreBlock(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* qt,
                int64_t k0, int64_t bk, const float* k, size_t k_seq, float* s) {
  if (ByRows(c)) {
    ScoresByRows(StridedRows<float>{k, k_seq}, static_cast<size_t>(bk), qt,
                 static_cast<size_t>(c.n), static_cast<size_t>(a.d_k), a.scale, s, kBlockCols);
  } else {
    MacroKernel(bk, c.n, a.d_k, k, k_seq, 1, kMR * k_seq, PanelsB{qt, NR(), kBlockCols}, s,
                kBlockCols, a.scale, 0.0f);
  }
  MaskBlock(a, t, c, k0, bk, s);
}

// dst = rows rows of n floats from src (src_seq apart), contiguous; returns dst.
const float* CopyRows(const float* src, size_t src_seq, int64_t rows, int64_t n, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * n, src + r * src_seq, static_cast<size_t>(n) * sizeof(float));
  }
  return dst;
}

// Walks the rows of one kv head through the block table: one division per walk, one table
// lookup per page, and only for pages that are read (a row address is formed lazily, so a walk
// that ends at a page boundary never looks past the sequence's last used table entry).
class PageCursor {
 public:
  PageCursor(const SdpaArgs& a, int64_t b, int64_t g, bool is_v, int64_t j)
      : c_(*a.pages), b_(b), n_(j / c_.block_size), r_(j % c_.block_size) {
    const size_t elem = c_.dtype == SIMDATTN_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
    row_bytes_ = static_cast<size_t>(is_v ? a.d_v : a.d_k) * elem;
    step_ = static_cast<size_t>(a.kv_heads) * row_bytes_;
    base_ = static_cast<const char*>(is_v ? c_.v : c_.k) + static_cast<size_t>(g) * row_bytes_;
  }
  size_t row_bytes() const { return row_bytes_; }
  size_t step() const { return step_; }  // bytes from one key's row to the next in a page
  int64_t left() const { return c_.block_size - r_; }  // keys left in the current page
  const char* row() {
    if (row_ == nullptr) {
      const int64_t first = c_.PhysicalBlock(b_, n_) * c_.block_size + r_;
      row_ = base_ + static_cast<size_t>(first) * step_;
    }
    return row_;
  }
  // Moves n <= left() keys on.
  void Advance(int64_t n) {
    r_ += n;
    if (r_ < c_.block_size) {
      if (row_ != nullptr) row_ += static_cast<size_t>(n) * step_;
      return;
    }
    r_ = 0, ++n_, row_ = nullptr;
  }

 private:
  const KvPages& c_;
  int64_t b_, n_, r_;
  size_t row_bytes_ = 0, step_ = 0;
  const char* base_ = nullptr;
  const char* row_ = nullptr;
};

// Calls f(row, r, len) for each run of keys [k0 + r, k0 + r + len) of [k0, k0 + bk) that lies in
// one page (row: the first key's row of the task's kv head; rows PageCursor::step() bytes
// apart).
template <class Fn>
void ForEachPageRun(const SdpaArgs& a, const SdpaTask& t, bool is_v, int64_t k0, int64_t bk,
                    const Fn& f) {
  PageCursor at(a, t.b, t.kvh, is_v, k0);
  for (int64_t j = k0; j < k0 + bk;) {
    const int64_t len = std::min(at.left(), k0 + bk - j);
    const char* row = at.row();
    at.Advance(len);
    f(row, j - k0, len);
    j += len;
  }
}

// f(T{}) with T the cache's element type (float, Bf16 or F16).
template <class Fn>
void WithElementType(int dtype, const Fn& f) {
  if (dtype == SIMDATTN_DTYPE_BF16) {
    f(Bf16{});
  } else if (dtype == SIMDATTN_DTYPE_F16) {
    f(F16{});
  } else {
    f(0.0f);
  }
}

// Asks for the rows of keys [k0, min(k0 + bk, end)) of the task's K (V when is_v) into L2 (the
// widening copy path; decode's kernels ask for the next block through FarLines): rows
// kv_heads * d apart (2-4 KiB, one or two of a head's per 4 KiB page), which the hardware
// prefetchers do not follow. Into L2, not L1: a block's rows are more lines than L1 can have in
// flight.
void PrefetchPaged(const SdpaArgs& a, const SdpaTask& t, bool is_v, int64_t k0, int64_t bk,
                   int64_t end) {
  if (k0 >= end) return;
  const size_t row_bytes = static_cast<size_t>(is_v ? a.d_v : a.d_k) *
                           (a.pages->dtype == SIMDATTN_DTYPE_F32 ? 4 : 2);
  ForEachPageRun(a, t, is_v, k0, std::min(bk, end - k0), [&](const char* row, int64_t, int64_t len) {
    const size_t step = static_cast<size_t>(a.kv_heads) * row_bytes;
    for (int64_t r = 0; r < len; ++r) {
      for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + r * step + off, 0, 2);
    }
  });
}

// Keys [k0, k0 + bk) of the task's K (values of V when is_v) from the paged cache, widened to
// contiguous float rows in buf (the register-tile path's operand); returns buf.
const float* PagedRows(const SdpaArgs& a, const SdpaTask& t, bool is_v, int64_t k0, int64_t bk,
                       float* buf) {
  const int64_t d = is_v ? a.d_v : a.d_k;
  ForEachPageRun(a, t, is_v, k0, bk, [&](const char* row, int64_t r0, int64_t len) {
    const size_t step = static_cast<size_t>(a.kv_heads * d) * (a.pages->dtype == SIMDATTN_DTYPE_F32 ? 4 : 2);
    for (int64_t r = 0; r < len; ++r) {
      WidenRow(a.pages->dtype, row + r * step, static_cast<size_t>(d), buf + (r0 + r) * d);
    }
  });
  return buf;
}

// rows[r] = the row of key k0 + r (r < bk) of the task's K (V when is_v) in the paged cache.
template <class T>
void PagedRowList(const SdpaArgs& a, const SdpaTask& t, bool is_v, int64_t k0, int64_t bk,
                  const T** rows) {
  const size_t step = static_cast<size_t>(a.kv_heads * (is_v ? a.d_v : a.d_k)) * sizeof(T);
  ForEachPageRun(a, t, is_v, k0, bk, [&](const char* row, int64_t r0, int64_t len) {
    for (int64_t r = 0; r < len; ++r) rows[r0 + r] = reinterpret_cast<const T*>(row + r * step);
  });
}

// Where a task's output accumulator keeps element i of column j: o[i * i + j * j]. O^T for the
// register-tile path (the P V microkernel's C), the columns' rows for decode (ByRows).
struct OutLayout {
  int64_t i, j;
};
OutLayout OutLayoutOf(const SdpaArgs& a, const Columns& c) {
  return ByRows(c) ? OutLayout{1, a.d_v} : OutLayout{kBlockCols, 1};
}

// One decode (ByRows) block of keys [k0, k0 + bk): scores of rows k, mask, online softmax,
// values of rows v, while the kernels ask far_scores' and far_values' rows into L2.
template <class Rows, class FarS, class FarV>
void DecodeBlock(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* qt,
                 int64_t k0, int64_t bk, const Rows& k, const FarS& far_scores, const Rows& v,
                 const FarV& far_values, float* s, float* m, float* l, float* o) {
  const size_t n = static_cast<size_t>(c.n), dv = static_cast<size_t>(a.d_v);
  // Scores of a few columns compactly (OnlineSoftmaxCompact), unless ALiBi or a mask, which
  // work on whole vectors of columns, take the wide layout.
  const bool compact = CanCompact(n) && a.alibi_slopes == nullptr && a.mask == nullptr;
  const size_t ld = compact ? CompactCols(n) : kBlockCols;
  ScoresByRows(k, static_cast<size_t>(bk), qt, n, static_cast<size_t>(a.d_k), a.scale, s, ld,
               far_scores);
  MaskBlock(a, t, c, k0, bk, s, static_cast<int64_t>(ld));
  HWY_ALIGN float corr[kBlockCols];
  if (compact) {
    OnlineSoftmaxCompact(s, static_cast<size_t>(bk), ld, m, l, corr);
  } else {
    OnlineSoftmaxScores(s, kBlockCols, static_cast<size_t>(bk), PaddedCols(c), m, l, corr);
  }
  if (dv == 0) return;  // no values: nothing of V is read
  AccumulateByRows(v, static_cast<size_t>(bk), s, ld, n, corr, o, dv, dv, far_values);
}

// The decode sweep of dense K/V over keys [lo, hi) in blocks (DecodeBlock). While a block's
// scores run its V rows are asked into L2, and while its values accumulate the next block's K
// rows (FarLines): each row a block ahead of its use. (A paged cache's decode: PagedDecodeBlocks.)
void DecodeBlocks(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* qt, float* s,
                  float* m, float* l, float* o, int64_t lo, int64_t hi) {
  // Rows of keys [k0, k0 + n) of K or V (an address is formed only for n > 0).
  auto rows = [&](bool is_v, int64_t k0, int64_t n) -> StridedRows<float> {
    const Strides4& st = is_v ? a.v_s : a.k_s;
    if (n == 0) return {nullptr, 0};
    const float* base = is_v ? a.v : a.k;
    return {base + KvBase(a, t.b, st) + t.kvh * st.head + k0 * st.seq, static_cast<size_t>(st.seq)};
  };
  using Far = FarLines<StridedRows<float>>;
  const size_t k_bytes = static_cast<size_t>(a.d_k) * sizeof(float);
  const size_t v_bytes = static_cast<size_t>(a.d_v) * sizeof(float);
  StridedRows<float> k = rows(false, lo, std::min(a.block_keys, hi - lo));
  for (int64_t k0 = lo; k0 < hi; k0 += a.block_keys) {
    const int64_t bk = std::min(a.block_keys, hi - k0);
    // After the last block: the keys that follow (the next split task's, which this thread
    // runs next), so that it does not start cold.
    const int64_t next = std::min(a.block_keys, (k0 + bk < hi ? hi : c.kv_len_b) - k0 - bk);
    const int64_t v_keys = a.d_v == 0 ? 0 : bk;  // (d_v == 0: no V address formed)
    const StridedRows<float> v = rows(true, k0, v_keys);
    const StridedRows<float> k_next = rows(false, k0 + bk, next);
    DecodeBlock(a, t, c, qt, k0, bk, k, Far(v, static_cast<size_t>(v_keys), v_bytes), v,
                Far(k_next, static_cast<size_t>(next), k_bytes), s, m, l, o);
    k = k_next;
  }
}

// Keys [k0, k0 + bk) of the task's K (V when is_v) and their row stride *seq: in place, copied
// to contiguous rows in buf when `pack`, or widened from the paged cache into buf (prefetching
// below `end`).
const float* KvRows(const SdpaArgs& a, const SdpaTask& t, bool is_v, int64_t k0, int64_t bk,
                    int64_t end, bool pack, float* buf, size_t* seq) {
  const int64_t d = is_v ? a.d_v : a.d_k;
  if (a.pages != nullptr) {
    *seq = static_cast<size_t>(d);
    PrefetchPaged(a, t, is_v, k0 + bk, bk, end);  // the next block meanwhile
    return PagedRows(a, t, is_v, k0, bk, buf);
  }
  const Strides4& st = is_v ? a.v_s : a.k_s;
  const float* rows = (is_v ? a.v : a.k) + KvBase(a, t.b, st) + t.kvh * st.head + k0 * st.seq;
  *seq = static_cast<size_t>(st.seq);
  if (!pack) return rows;
  *seq = static_cast<size_t>(d);
  return CopyRows(rows, static_cast<size_t>(st.seq), bk, d, buf);
}

// The flash sweep: m, l per column and O^T (d_v x kBlockCols) over the task's visible keys.
// kbuf, vbuf: block_keys x d_k and block_keys x d_v floats for copies of strided K/V blocks.
// Empty sweep state: m = -inf, l = 0 (the sinks of the first key range joined), O = 0.
void StartSweep(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* m, float* l,
                float* o) {
  const size_t ncols = PaddedCols(c);
  std::fill(m, m + ncols, kNegInf);
  std::fill(l, l + ncols, 0.0f);
  if (a.sinks != nullptr && t.key0 == 0) {  // the sink joins the first key range only
    for (int64_t j = 0; j < c.n; ++j) {
      m[j] = a.sinks[c.head[j]];
      l[j] = m[j] == kNegInf ? 0.0f : 1.0f;  // exp(sink - m)
    }
  }
  // O^T: d_v rows of ncols (the padding columns too); decode: n rows of d_v.
  std::fill(o, o + (ByRows(c) ? c.n * a.d_v : a.d_v * kBlockCols), 0.0f);
}

void Sweep(const SdpaArgs& a, const SdpaTask& t, const Columns& c, float* qt, float* s, float* m,
           float* l, float* o, float* kbuf, float* vbuf) {
  const size_t ncols = PaddedCols(c);
  StartSweep(a, t, c, m, l, o);
  int64_t lo = 0, hi = 0;
  VisibleKeys(a, t, c, &lo, &hi);
  if (lo >= hi) return;
  PackQueries(a, t, c, qt);
  if (ByRows(c)) return DecodeBlocks(a, t, c, qt, s, m, l, o, lo, hi);  // (never paged: Sdpa)
  // The register-tile path streams kMR rows of K (and keys of V) at once: rows a whole
  // (batch, seq, heads * d) token apart (4 KiB for 16 heads of 64) share L1 sets and thrash
  // them, so strided K and V blocks are first copied to contiguous rows (1/kBlockCols of the
  // FMAs).
  const bool pack_k = a.k_s.seq != a.d_k;
  const bool pack_v = a.v_s.seq != a.d_v && a.d_v > 0;
  for (int64_t k0 = lo; k0 < hi; k0 += a.block_keys) {
    const int64_t bk = std::min(a.block_keys, hi - k0);
    size_t k_seq = 0, v_seq = 0;
    const float* k = KvRows(a, t, false, k0, bk, hi, pack_k, kbuf, &k_seq);
    ScoreBlock(a, t, c, qt, k0, bk, k, k_seq, s);
    HWY_ALIGN float corr[kBlockCols];
    OnlineSoftmaxStep(s, kBlockCols, bk, ncols, m, l, o, kBlockCols, a.d_v, corr);
    if (a.d_v == 0) continue;  // no values: nothing of V is read, no address formed
    const float* vb = KvRows(a, t, true, k0, bk, hi, pack_v, vbuf, &v_seq);
    MacroKernel(a.d_v, c.n, bk, vb, 1, v_seq, kMR, PanelsB{s, NR(), kBlockCols}, o, kBlockCols,
                1.0f, 1.0f);
  }
}

float* OutRow(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t j) {
  return a.out + QBase(a, t.b, a.out_s) + c.head[j] * a.out_s.head + c.qi[j] * a.out_s.seq;
}

// The lse element of column j, or null when not requested.
float* LseSlot(const SdpaArgs& a, const SdpaTask& t, const Columns& c, int64_t j) {
  return a.lse == nullptr ? nullptr : a.lse + LseIndex(a, t.b, c.head[j], c.qi[j]);
}

// out = O^T / l per column (0 where no key was visible), lse = m + log(l) (-inf there); NaN
// where l is NaN (a NaN or +inf score). Into the call's out and lse, or into a split's partial
// (PartialFloats layout) when partial is not null.
void Finalize(const SdpaArgs& a, const SdpaTask& t, const Columns& c, const float* m,
              const float* l, const float* o, float* partial) {
  const OutLayout ol = OutLayoutOf(a, c);
  for (int64_t j = 0; j < c.n; ++j) {
    const float inv = l[j] == 0.0f ? 0.0f : 1.0f / l[j];
    float* out = partial ? partial + kBlockCols + j * a.d_v : OutRow(a, t, c, j);
    for (int64_t i = 0; i < a.d_v; ++i) out[i] = o[i * ol.i + j * ol.j] * inv;
    float* lse = partial ? partial + j : LseSlot(a, t, c, j);
    if (lse != nullptr) *lse = l[j] == 0.0f ? kNegInf : m[j] + std::log(l[j]);
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
  for (int64_t k0 = lo; k0 < hi; k0 += a.block_keys) {
    const int64_t bk = std::min(a.block_keys, hi - k0);
    size_t k_seq = 0;  // (never paged: weights are not available with a cache)
    const float* k = KvRows(a, t, false, k0, bk, hi, false, nullptr, &k_seq);
    ScoreBlock(a, t, c, qt, k0, bk, k, k_seq, s);
    NormalizeBlock(s, kBlockCols, bk, ncols, m, l);
    for (int64_t r = 0; r < bk; ++r) {
      for (int64_t j = 0; j < c.n; ++j) rows[j][k0 + r] = s[r * kBlockCols + j];
    }
  }
}

struct Scratch {
  float *qt, *s, *m, *l, *o, *kbuf, *vbuf;
};

Scratch GetScratch(const SdpaArgs& a) {
  const TaskScratch need = SdpaTaskScratch(a, static_cast<int64_t>(hn::Lanes(DF())));
  Scratch sc;
  sc.qt = ThreadScratch(0, need.floats[0]);
  sc.s = ThreadScratch(1, need.floats[1]);
  sc.kbuf = sc.s + a.block_keys * kBlockCols;
  sc.vbuf = sc.kbuf + a.block_keys * a.d_k;
  sc.o = ThreadScratch(2, need.floats[2]);
  sc.m = ThreadScratch(3, need.floats[3]);
  sc.l = sc.m + kBlockCols;
  return sc;
}

// Queries per score pass of the few-keys path: 4 FMA chains cover the FMA latency.
constexpr size_t kFewKeysQueries = 4;

// Lanes visible to some query of batch entry b: keys below `hi` that are not padding.
hn::Mask<DF> FewKeysVisible(const SdpaArgs& a, int64_t b, int64_t hi) {
  const DF d;
  HWY_ALIGN float base[kMaxLanesF];
  const uint8_t* pad = a.key_padding ? a.key_padding + b * a.key_padding_batch_stride : nullptr;
  for (int64_t j = 0; j < static_cast<int64_t>(hn::Lanes(d)); ++j) {
    base[j] = j < hi && (pad == nullptr || pad[j] == 0) ? 1.0f : 0.0f;
  }
  return hn::Eq(hn::Load(d, base), hn::Set(d, 1.0f));
}

// Query i of head h with scaled scores s (keys as lanes, all below Lanes <= 2^23: positions
// and distances are exact floats): softcap and ALiBi, then the mask, the causal and window
// limits and `visible` (kv_len, padding); writes out, lse and weights.
void FewKeysQuery(const SdpaArgs& a, int64_t b, int64_t h, int64_t i, int64_t hi, int64_t offset,
                  VF s, hn::Mask<DF> visible, const float* v, float* p) {
  const DF d;
  const VF key = hn::Iota(d, 0.0f);
  const int64_t pos = i + offset;
  if (a.softcap > 0.0f) {
    const bool tiny = TinyCap(a.softcap);
    s = Softcap(d, s, hn::Set(d, a.softcap), hn::Set(d, tiny ? 0.0f : 1.0f / a.softcap), tiny);
  }
  if (a.alibi_slopes != nullptr && std::abs(pos) < kAlibiExactLimit) {
    const VF dist = hn::Abs(hn::Sub(key, hn::Set(d, static_cast<float>(pos))));
    s = hn::NegMulAdd(hn::Set(d, a.alibi_slopes[h]), dist, s);
  } else if (a.alibi_slopes != nullptr) {
    HWY_ALIGN float bias[kMaxLanesF];
    for (size_t j = 0; j < hn::Lanes(d); ++j) {
      bias[j] = AlibiBiasWide(a.alibi_slopes[h], static_cast<int64_t>(j), pos);
    }
    s = hn::Sub(s, hn::Load(d, bias));
  }
  if (a.mask != nullptr && hi > 0) {
    const float* mrow = a.mask + b * a.mask_s.batch + h * a.mask_s.head + i * a.mask_s.seq;
    s = hn::Add(s, LoadUpTo(d, mrow, static_cast<size_t>(hi), 0.0f));
  }
  // Limits as integers clamped to [-1, Lanes] first: exact in float.
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto clamp = [&](int64_t x) { return static_cast<float>(std::min(std::max<int64_t>(x, -1), lanes)); };
  const KeyLimits lim = LimitsAt(a, pos);
  visible = hn::And(visible, hn::And(hn::Le(key, hn::Set(d, clamp(lim.last))),
                                     hn::Ge(key, hn::Set(d, clamp(lim.first)))));
  s = hn::IfThenElse(visible, s, hn::Set(d, kNegInf));
  // sum 0: no visible key and no sink (out 0, lse -inf). A NaN or +inf score makes the sum NaN,
  // and with it out, lse and weights (as the blocked path does).
  const LaneSoftmax r = SoftmaxLanes(s, a.sinks != nullptr ? a.sinks[h] : kNegInf, p);
  const bool none = r.sum == 0.0f;
  const float inv = none ? 0.0f : 1.0f / r.sum;
  float* out = a.out + QBase(a, b, a.out_s) + h * a.out_s.head + i * a.out_s.seq;
  WeightedRows(p, none ? 0 : static_cast<size_t>(hi), v, static_cast<size_t>(a.v_s.seq),
               static_cast<size_t>(a.d_v), inv, out);
  if (a.lse != nullptr) {
    a.lse[LseIndex(a, b, h, i)] = none ? kNegInf : r.max + std::log(r.sum);
  }
  if (a.weights != nullptr) {
    float* w = a.weights + ((b * a.heads + h) * a.q_len + i) * a.kv_len;
    for (int64_t j = 0; j < a.kv_len; ++j) w[j] = j < hi ? p[j] * inv : 0.0f;
  }
}

}  // namespace

size_t LanesImpl() { return hn::Lanes(DF()); }

// Few keys (a.kv_len <= Lanes): every query head of (b, kvh) against its keys held as lanes.
void FewKeysTaskImpl(const SdpaArgs& a, int64_t b, int64_t kvh) {
  const int64_t group = a.heads / a.kv_heads;
  const int64_t q_len_b = QLen(a, b), offset = QueryOffset(a, b);
  // Keys any query may see: below kv_len and the last query's limit.
  const int64_t hi = std::max<int64_t>(
      0, std::min(KvLen(a, b), SatAdd(LimitsAt(a, q_len_b - 1 + offset).last, 1)));
  const size_t dk = static_cast<size_t>(a.d_k);
  const DF d;
  float* kt = ThreadScratch(0, 2 * dk * hn::Lanes(d));
  HWY_ALIGN float p[kMaxLanesF];
  // K and V are not touched (not even their addresses formed) when no key is visible.
  const float* v = hi > 0 ? a.v + KvBase(a, b, a.v_s) + kvh * a.v_s.head : nullptr;
  if (hi > 0) {
    PackKeysAsLanes(a.k + KvBase(a, b, a.k_s) + kvh * a.k_s.head, static_cast<size_t>(a.k_s.seq),
                    static_cast<size_t>(hi), dk, kt, kt + dk * hn::Lanes(d));
  } else {
    std::fill(kt, kt + dk * hn::Lanes(d), 0.0f);
  }
  const auto visible = FewKeysVisible(a, b, hi);
  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float* qh = a.q + QBase(a, b, a.q_s) + h * a.q_s.head;
    for (int64_t i0 = 0; i0 < q_len_b; i0 += kFewKeysQueries) {
      const int64_t n = std::min<int64_t>(kFewKeysQueries, q_len_b - i0);
      const float* q[kFewKeysQueries];
      for (int64_t c = 0; c < static_cast<int64_t>(kFewKeysQueries); ++c) {
        q[c] = qh + (i0 + std::min(c, n - 1)) * a.q_s.seq;  // a short tail repeats its last row
      }
      VF s[kFewKeysQueries];
      ScoresByLanesT<kFewKeysQueries>(kt, dk, q, a.scale, s);
      for (int64_t c = 0; c < n; ++c) FewKeysQuery(a, b, h, i0 + c, hi, offset, s[c], visible, v, p);
    }
  }
}

// Whole task: sweep, then write out/lse/weights (partial == nullptr), or store the finalized
// partial result of its key range for MergeTaskImpl.
void Attend(const SdpaArgs& a, const SdpaTask& t, const Scratch& sc, float* partial) {
  const Columns c = MakeColumns(a, t);
  Sweep(a, t, c, sc.qt, sc.s, sc.m, sc.l, sc.o, sc.kbuf, sc.vbuf);
  Finalize(a, t, c, sc.m, sc.l, sc.o, partial);
  if (partial == nullptr && a.weights != nullptr) WriteWeights(a, t, c, sc.qt, sc.s, sc.m, sc.l);
}
void AttendTaskImpl(const SdpaArgs& a, const SdpaTask& t, float* partial) {
  Attend(a, t, GetScratch(a), partial);
}

// Column blocks [cb0, cb1) of (b, kvh) (PacksPairs): its strided K and V rows copied once to
// contiguous rows in the task's scratch, which every block's sweep then reads in place.
void PairTaskImpl(const SdpaArgs& a, int64_t b, int64_t kvh, int64_t cb0, int64_t cb1) {
  const Scratch sc = GetScratch(a);
  SdpaArgs p = a;  // K and V of (b, kvh) only: batch and head strides 0
  const int64_t n = KvLen(a, b);
  // The pair's rows of d floats: in place when contiguous, else copied to `copy`.
  auto pair_rows = [&](const float* base, const Strides4& st, int64_t d, float* copy) {
    const float* src = base + KvBase(a, b, st) + kvh * st.head;
    return st.seq == d ? src : CopyRows(src, static_cast<size_t>(st.seq), n, d, copy);
  };
  p.k = pair_rows(a.k, a.k_s, a.d_k, sc.kbuf);
  p.k_s = Strides4{0, 0, a.d_k};
  if (a.d_v > 0) {
    p.v = pair_rows(a.v, a.v_s, a.d_v, sc.kbuf + a.kv_len * a.d_k);
    p.v_s = Strides4{0, 0, a.d_v};
  }
  for (int64_t cb = cb0; cb < cb1; ++cb) {
    Attend(p, BlockTask(b, kvh, cb, PairCols(a), 0, a.kv_len), sc, nullptr);
  }
}

// Keys per block of a paged decode range over `heads` kv heads: the K and V rows of a block,
// kDecodeBlockBytes, or a quarter of L2 if less (the next block's rows are asked for
// meanwhile); a multiple of 4 in [16, block_keys]. 8 heads of 128: 32 keys in bf16, 16 in f32.
// bf16 decode of 32768 keys: Zen 4 (1 MiB L2) 64 keys 7.6 ms, 32 7.1, 16 7.7; Zen 3 (512 KiB)
// 32 keys 11.0 ms, 16 13.9 (batch 16 over 512..8192 keys: 25.0 and 30.0 ms).
constexpr int64_t kDecodeBlockBytes = int64_t{128} << 10;
int64_t PagedDecodeBlockKeys(const SdpaArgs& a, int64_t heads) {
  const int64_t elem = a.pages->dtype == SIMDATTN_DTYPE_F32 ? 4 : 2;
  const int64_t l2 = std::max<int64_t>(GetCpuInfo().l2.size, int64_t{256} << 10);
  const int64_t keys = std::min(kDecodeBlockBytes, l2 / 4) / (heads * (a.d_k + a.d_v) * elem);
  return std::min(a.block_keys, std::max<int64_t>(16, keys / 4 * 4));
}

static_assert(kDecodeCols == static_cast<int64_t>(kRowCols), "decode columns");

// State of one kv head of a paged decode range.
struct DecodeHead {
  SdpaTask t;
  Columns c;
  float *qt, *m, *l, *o;
};

// The keys whose K and V rows a paged decode block ending at key `end` of task t's range
// [.., hi) asks for, at most n: the range's next block; after its last block, so that no range
// starts cold, this batch entry's next keys, else the next entry's first ones (what PagedDecode
// runs next on this thread, with one group of kv heads). Only keys < the entry's seq_lens: their
// block table entries were checked.
struct FollowingKeys {
  SdpaTask t;
  int64_t k0, n;
};
FollowingKeys FollowingKeysOf(const SdpaArgs& a, const SdpaTask& t, int64_t end, int64_t hi,
                              int64_t n) {
  if (end < hi) return {t, end, std::min(n, hi - end)};
  if (end < KvLen(a, t.b)) return {t, end, std::min(n, KvLen(a, t.b) - end)};
  if (t.b + 1 == a.batch) return {t, end, 0};
  SdpaTask next = t;
  next.b = t.b + 1;
  return {next, 0, std::min(n, KvLen(a, next.b))};
}

// The blocks of keys [lo, hi) for every head of hs: per block, the row lists of K and V once
// (their first head's rows; the others are elements further), then each head's scores, online
// softmax and values, while the K and V rows that follow (FollowingKeysOf) are asked into L2 in
// address order (FarLines), a 1 / (2 nh) slice of them during each kernel call.
template <class T>
void PagedDecodeBlocks(const SdpaArgs& a, DecodeHead* hs, int64_t nh, int64_t lo, int64_t hi,
                       float* s) {
  const int64_t bkeys = PagedDecodeBlockKeys(a, nh);
  const size_t dk = static_cast<size_t>(a.d_k), dv = static_cast<size_t>(a.d_v);
  using Far = FarLines<ListedRows<T>>;
  const T* lists[4][kMaxAttentionBlockKeys];
  const T** k = lists[0], **v = lists[1], **k_next = lists[2], **v_next = lists[3];
  const int64_t first = std::min(bkeys, hi - lo);
  PagedRowList(a, hs[0].t, false, lo, first, k);
  PagedRowList(a, hs[0].t, true, lo, dv == 0 ? 0 : first, v);
  for (int64_t k0 = lo; k0 < hi; k0 += bkeys) {
    const int64_t bk = std::min(bkeys, hi - k0);
    const FollowingKeys f = FollowingKeysOf(a, hs[0].t, k0 + bk, hi, bkeys);
    const int64_t next = f.n;
    PagedRowList(a, f.t, false, f.k0, next, k_next);
    PagedRowList(a, f.t, true, f.k0, dv == 0 ? 0 : next, v_next);
    // The next block's lines: K's rows of all nh heads, then V's, in 2 nh slices.
    const size_t line_of = 64 / sizeof(T), heads = static_cast<size_t>(nh);
    const size_t k_lines = (heads * dk + line_of - 1) / line_of;
    const size_t v_lines = (heads * dv + line_of - 1) / line_of;  // 0 when dv == 0
    const size_t lines = static_cast<size_t>(next) * (k_lines + v_lines);
    auto slice = [&](size_t j) {  // slice j of 2 nh
      const size_t l0 = lines * j / (2 * heads), l1 = lines * (j + 1) / (2 * heads);
      return Far(ListedRows<T>{k_next}, ListedRows<T>{v_next}, static_cast<size_t>(next), k_lines,
                 v_lines, l0, l1);
    };
    for (int64_t h = 0; h < nh; ++h) {  // head h: elements h * d past the listed rows
      const DecodeHead& e = hs[h];
      const size_t hk = static_cast<size_t>(h) * dk, hv = static_cast<size_t>(h) * dv;
      const size_t i = 2 * static_cast<size_t>(h);
      DecodeBlock(a, e.t, e.c, e.qt, k0, bk, ListedRows<T>{k, hk}, slice(i), ListedRows<T>{v, hv},
                  slice(i + 1), s, e.m, e.l, e.o);
    }
    std::swap(k, k_next);
    std::swap(v, v_next);
  }
}

// Decode over a paged cache, keys [key0, key1) of batch entry b for kv heads [g0, g1) (at most
// kDecodeHeads; every (batch, kv head) has one column block of at most kRowCols columns): the
// partial of head g0 + h at partials + h * head_stride, or (partials null: the whole sequence)
// its out and lse.
void PagedDecodeRangeImpl(const SdpaArgs& a, int64_t b, int64_t g0, int64_t g1, int64_t key0,
                          int64_t key1, float* partials, int64_t head_stride) {
  const int64_t cols = PairCols(a), nh = g1 - g0;
  const Scratch sc = GetScratch(a);
  DecodeHead hs[kDecodeHeads];
  for (int64_t h = 0; h < nh; ++h) {
    DecodeHead& e = hs[h];
    e.t = SdpaTask{b, g0 + h, 0, cols, key0, key1};
    e.c = MakeColumns(a, e.t);
    e.qt = sc.qt + h * static_cast<int64_t>(kRowCols) * a.d_k;
    e.o = sc.o + h * static_cast<int64_t>(kRowCols) * a.d_v;
    e.m = sc.m + h * 2 * kBlockCols;
    e.l = e.m + kBlockCols;
    StartSweep(a, e.t, e.c, e.m, e.l, e.o);
  }
  int64_t lo = 0, hi = 0;
  VisibleKeys(a, hs[0].t, hs[0].c, &lo, &hi);  // the same queries for every head
  if (lo < hi) {
    for (int64_t h = 0; h < nh; ++h) PackQueries(a, hs[h].t, hs[h].c, hs[h].qt);
    WithElementType(a.pages->dtype, [&](auto tag) {
      PagedDecodeBlocks<decltype(tag)>(a, hs, nh, lo, hi, sc.s);
    });
  }
  for (int64_t h = 0; h < nh; ++h) {
    Finalize(a, hs[h].t, hs[h].c, hs[h].m, hs[h].l, hs[h].o,
             partials == nullptr ? nullptr : partials + h * head_stride);
  }
}

// Column j of `splits` partials of one column block (consecutive key ranges, in order).
struct SplitPieces {
  const float* partials;
  int64_t stride, j, d_v;
  float Lse(size_t i) const { return partials[static_cast<int64_t>(i) * stride + j]; }
  const float* Row(size_t i) const {
    return partials + static_cast<int64_t>(i) * stride + kBlockCols + j * d_v;
  }
};

// Merges the `splits` partials of one column block and writes its out and lse.
void MergeTaskImpl(const SdpaArgs& a, const SdpaTask& t, int64_t splits, const float* partials) {
  const Columns c = MakeColumns(a, t);
  for (int64_t j = 0; j < c.n; ++j) {
    const SplitPieces pieces{partials, PartialFloats(a.d_v), j, a.d_v};
    const float lse = MergeRow(pieces, static_cast<size_t>(splits), static_cast<size_t>(a.d_v),
                               OutRow(a, t, c, j));
    if (float* slot = LseSlot(a, t, c, j)) *slot = lse;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(AttendTaskImpl);
HWY_EXPORT(PairTaskImpl);
HWY_EXPORT(PagedDecodeRangeImpl);
HWY_EXPORT(MergeTaskImpl);
HWY_EXPORT(LanesImpl);
HWY_EXPORT(FewKeysTaskImpl);

namespace {

// args with the fields derived from the CPU set (fixed per process: deterministic results).
SdpaArgs WithCpuTuning(const SdpaArgs& args) {
  // Keys per block from the L1D (src/cpu.h): the P^T panel of the P V microkernel keeps half.
  static const int64_t block_keys =
      AttentionBlockKeys(GetCpuInfo(), 2 * static_cast<int64_t>(HWY_DYNAMIC_DISPATCH(LanesImpl)()));
  SdpaArgs a = args;
  a.block_keys = block_keys;
  return a;
}

}  // namespace

// Varlen: tasks are (sequence, kv head, column block) over each sequence's own columns, the
// sequences in order of decreasing work (q_len_b * kv_len_b) so that the longest start first
// and the short ones fill in; every task writes its own outputs, so any order gives the same
// bits. No key split.
static void SdpaVarlen(const SdpaArgs& a) {
  const int64_t group = a.heads / a.kv_heads;
  std::vector<int64_t> order(static_cast<size_t>(a.batch));
  for (int64_t b = 0; b < a.batch; ++b) order[b] = b;
  auto work = [&](int64_t b) {  // in double: a product of two valid lengths may overflow int64
    return static_cast<double>(QLen(a, b)) * static_cast<double>(std::max<int64_t>(KvLen(a, b), 1));
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return work(x) > work(y); });
  // first[n]: index of the first task of the n-th sequence in that order.
  std::vector<int64_t> first(static_cast<size_t>(a.batch) + 1, 0);
  for (int64_t n = 0; n < a.batch; ++n) {
    first[n + 1] = first[n] + a.kv_heads * CeilDiv(QLen(a, order[n]) * group, kBlockCols);
  }
  ParallelFor(first[a.batch], 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = std::upper_bound(first.begin(), first.end(), i) - first.begin() - 1;
      const int64_t b = order[n], cols = QLen(a, b) * group;
      const int64_t col_blocks = CeilDiv(cols, kBlockCols), local = i - first[n];
      const SdpaTask t = BlockTask(b, local / col_blocks, local % col_blocks, cols, 0, KvLen(a, b));
      HWY_DYNAMIC_DISPATCH(AttendTaskImpl)(a, t, nullptr);
    }
  });
}

// Tasks of one batch entry and key range of a paged decode: groups of up to kDecodeHeads kv heads.
static int64_t PagedDecodeGroups(const SdpaArgs& a) { return CeilDiv(a.kv_heads, kDecodeHeads); }

// Decode over a paged cache split into key ranges: tasks of up to kDecodeHeads kv heads of one
// batch entry over one range, entry by entry and range by range (the heads of a range together,
// while its pages are hot; a thread's next task reads the keys that follow, which its last
// block asked for: FollowingKeysOf); partial (b, g, split) at ((b * kv_heads + g) * splits +
// split) * PartialFloats(d_v), as the other split tasks write them. Unsplit (one range,
// partials null): the tasks write out and lse.
static void PagedDecode(const SdpaArgs& a, int64_t splits, int64_t split_len, float* partials) {
  const int64_t groups = PagedDecodeGroups(a), stride = PartialFloats(a.d_v);
  ParallelFor(splits * a.batch * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (splits * groups), split = i / groups % splits;
      const int64_t g0 = i % groups * kDecodeHeads, g1 = std::min(a.kv_heads, g0 + kDecodeHeads);
      const int64_t key0 = split * split_len, key1 = std::min(a.kv_len, key0 + split_len);
      float* first = partials == nullptr
                         ? nullptr
                         : partials + ((b * a.kv_heads + g0) * splits + split) * stride;
      HWY_DYNAMIC_DISPATCH(PagedDecodeRangeImpl)(a, b, g0, g1, key0, key1, first, splits * stride);
    }
  });
}

TaskScratch SdpaScratch(const SdpaArgs& args) {
  return SdpaTaskScratch(WithCpuTuning(args),
                         static_cast<int64_t>(HWY_DYNAMIC_DISPATCH(LanesImpl)()));
}

void Sdpa(const SdpaArgs& args) {
  const SdpaArgs a = WithCpuTuning(args);
  ReserveTaskScratch(SdpaScratch(a));  // before the first output write
  const int64_t group = a.heads / a.kv_heads;
  // (A paged cache takes the blocked path: the few-keys path reads K in place.)
  if (a.pages == nullptr && a.kv_len <= static_cast<int64_t>(HWY_DYNAMIC_DISPATCH(LanesImpl)())) {
    // About kFewKeysChunkFmas vector FMAs per chunk: a few microseconds, so a oneTBB worker's
    // 3-5 us to join is paid once per many (batch, kv head) pairs.
    const int64_t per_pair = group * a.q_len * (a.d_k + a.d_v) + a.d_k;
    const int64_t grain = std::max<int64_t>(1, kFewKeysChunkFmas / per_pair);
    ParallelFor(a.batch * a.kv_heads, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        HWY_DYNAMIC_DISPATCH(FewKeysTaskImpl)(a, i / a.kv_heads, i % a.kv_heads);
      }
    });
    return;
  }
  if (a.cu_q != nullptr) return SdpaVarlen(a);
  const int64_t cols = PairCols(a);
  const int64_t col_blocks = CeilDiv(cols, kBlockCols);
  const int64_t blocks = a.batch * a.kv_heads * col_blocks;
  const bool paged_decode = a.pages != nullptr && cols <= kDecodeCols;
  int64_t splits = 1;
  if (a.pages != nullptr) {
    // A paged cache always walks in key ranges across its kv heads (see kPagedSplitKeys); with
    // few (batch, kv head group) tasks, in ranges down to kMinPagedSplitKeys keys.
    splits = a.kv_len >= 2 * kPagedSplitKeys ? CeilDiv(a.kv_len, kPagedSplitKeys) : 1;
    const int64_t tasks = (paged_decode ? a.batch * PagedDecodeGroups(a) : blocks) * splits;
    if (tasks < kMinTasks) {
      const int64_t most = std::max(splits, a.kv_len / kMinPagedSplitKeys);
      splits = std::clamp(splits * CeilDiv(kMinTasks, tasks), splits, most);
    }
  } else if (a.weights == nullptr && blocks < kMinTasks && a.kv_len >= 2 * kSplitKeys) {
    splits = CeilDiv(a.kv_len, kSplitKeys);
  }
  const int64_t split_len = CeilDiv(std::max<int64_t>(a.kv_len, 1), splits);
  auto task_of = [&](int64_t block, int64_t split) {
    const int64_t bh = block / col_blocks;
    return BlockTask(bh / a.kv_heads, bh % a.kv_heads, block % col_blocks, cols, split * split_len,
                     splits == 1 ? a.kv_len : std::min(a.kv_len, (split + 1) * split_len));
  };
  if (splits == 1 && paged_decode) return PagedDecode(a, 1, split_len, nullptr);
  if (PacksPairs(a)) {  // (never split: kMinTasks)
    // Column blocks per task: all of a pair's while that leaves 4 tasks a thread.
    const int64_t pairs = a.batch * a.kv_heads;
    const int64_t per = std::clamp<int64_t>(blocks / (4 * NumThreads()), 1, col_blocks);
    const int64_t chunks = CeilDiv(col_blocks, per);
    ParallelFor(pairs * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t pair = i / chunks, cb0 = i % chunks * per;
        HWY_DYNAMIC_DISPATCH(PairTaskImpl)(a, pair / a.kv_heads, pair % a.kv_heads, cb0,
                                           std::min(col_blocks, cb0 + per));
      }
    });
    return;
  }
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
  if (paged_decode) {
    PagedDecode(a, splits, split_len, partials);
  } else {
    // A paged cache interleaves the kv heads of a key (rows kv_heads * d apart): its tasks run
    // key range by key range, all (batch, kv head) blocks of a range together, so the pages a
    // range spans are read while they are hot (TLB, DRAM pages) instead of once per kv head.
    const bool range_major = a.pages != nullptr;
    ParallelFor(blocks * splits, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t block = range_major ? i % blocks : i / splits;
        const int64_t split = range_major ? i / blocks : i % splits;
        HWY_DYNAMIC_DISPATCH(AttendTaskImpl)(a, task_of(block, split),
                                             partials + (block * splits + split) * stride);
      }
    });
  }
  ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      HWY_DYNAMIC_DISPATCH(MergeTaskImpl)(a, task_of(i, 0), splits,
                                          partials + i * splits * stride);
    }
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

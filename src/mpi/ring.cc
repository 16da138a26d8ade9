// Ring attention over MPI on the public API of libsimdattn (include/simdattn_mpi.h).
// Each rank holds C chunks of its sequence (C = 1 contiguous, 2 zigzag) and, at ring step s,
// the K/V block of rank (r - s) mod P. Per step and query chunk it computes simdattn_sdpa of
// the query chunk against the visible key chunks of the block (whole block, or chunk by chunk
// when causal: fully visible, the diagonal with TOP_LEFT, or skipped) into a piece buffer, and
// merges the piece into the chunk's running result with simdattn_attention_merge (in place).
// While it computes, the block already travels on to rank r + 1 (MPI_Isend/Irecv, double
// buffered; MPI_Testall between the calls drives progress). Results go to out only after every
// rank has agreed that all went well.

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "simdattn_mpi.h"

namespace {

thread_local std::string t_ring_error;

// Tag of the K/V messages, on the call's own duplicate of comm.
constexpr int kKvTag = 0x51a7;
// Bytes of an error message sent from the failing rank to the others.
constexpr int kMessageBytes = 512;
// The size of simdattn_sdpa_options in version 0.1: up to and including `weights`.
constexpr size_t kOptionsV01Size = offsetof(simdattn_sdpa_options, weights) + sizeof(float*);

struct Strides {
  int64_t batch = 0, head = 0, seq = 0;
};

// The validated call.
struct Call {
  int rank = 0, ranks = 1;
  int32_t layout = 0;
  const float *q = nullptr, *k = nullptr, *v = nullptr;
  float* out = nullptr;
  float* lse = nullptr;
  int64_t batch = 0, heads = 0, kv_heads = 0, len = 0, d_k = 0, d_v = 0;
  float scale = 0.0f;
  int32_t causal = 0;
  Strides q_s, k_s, v_s, out_s;
};

// First failure wins, as in libsimdattn's own validation.
class Checks {
 public:
  bool ok() const { return status_ == SIMDATTN_OK; }
  simdattn_status status() const { return status_; }
  const std::string& message() const { return message_; }
  __attribute__((format(printf, 4, 5))) Checks& Require(bool condition, simdattn_status s,
                                                        const char* fmt, ...) {
    if (!ok() || condition) return *this;
    char buf[kMessageBytes];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);
    status_ = s;
    message_ = buf;
    return *this;
  }
  void Fail(simdattn_status s, const std::string& message) {
    if (ok()) status_ = s, message_ = message;
  }

 private:
  simdattn_status status_ = SIMDATTN_OK;
  std::string message_;
};

long long L(int64_t x) { return static_cast<long long>(x); }

// Zero strides -> contiguous [batch, heads, len, inner] (saturating: overflow is found later).
Strides Resolve(const simdattn_strides& st, int64_t heads, int64_t len, int64_t inner) {
  if (st.batch != 0 || st.head != 0 || st.seq != 0) return {st.batch, st.head, st.seq};
  int64_t head = 0, batch = 0;
  if (__builtin_mul_overflow(len, inner, &head)) head = INT64_MAX;
  if (__builtin_mul_overflow(heads, head, &batch)) batch = INT64_MAX;
  return {batch, head, inner};
}

// Elements spanned by a strided [b, h, len, inner] tensor (0 if empty), or -1 when it, or the
// offset one row (head, batch entry) past the last, overflows int64 bytes.
int64_t Span(const int64_t sizes[3], const Strides& s, int64_t inner) {
  if (inner == 0 || sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0) return 0;
  const int64_t st[3] = {s.batch, s.head, s.seq};
  int64_t total = inner, past = inner, term = 0, bytes = 0;
  for (int i = 0; i < 3; ++i) {
    if (__builtin_mul_overflow(sizes[i] - 1, st[i], &term) ||
        __builtin_add_overflow(total, term, &total) ||
        (sizes[i] > 1 && (__builtin_mul_overflow(sizes[i], st[i], &term) ||
                          __builtin_add_overflow(past, term, &past)))) {
      return -1;
    }
  }
  const bool overflow = __builtin_mul_overflow(total, int64_t{4}, &bytes) ||
                        __builtin_mul_overflow(past, int64_t{4}, &bytes);
  return overflow ? -1 : total;
}

// Options: the 0.1 prefix, nothing the ring does not implement.
void CheckOptions(Checks& c, const simdattn_sdpa_options* o) {
  if (o == nullptr) return;
  c.Require(o->struct_size >= kOptionsV01Size, SIMDATTN_ERR_BAD_ARGUMENT,
            "options->struct_size (%zu) is smaller than the 0.1 size of simdattn_sdpa_options "
            "(%zu): call simdattn_sdpa_options_init",
            o->struct_size, kOptionsV01Size);
  if (!c.ok()) return;
  c.Require(o->mask == nullptr, SIMDATTN_ERR_BAD_ARGUMENT, "options->mask is not supported");
  c.Require(o->kv_lens == nullptr, SIMDATTN_ERR_BAD_ARGUMENT, "options->kv_lens is not supported");
  c.Require(o->weights == nullptr, SIMDATTN_ERR_BAD_ARGUMENT, "options->weights is not supported");
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(o);
  for (size_t i = kOptionsV01Size; i < o->struct_size && c.ok(); ++i) {
    c.Require(bytes[i] == 0, SIMDATTN_ERR_BAD_ARGUMENT,
              "options: byte %zu (past `weights`: a later version's field) is nonzero; the ring "
              "supports only the 0.1 fields",
              i);
  }
}

// Sizes and flags, as simdattn_sdpa checks them.
void CheckShapes(Checks& c, Call& a, const simdattn_sdpa_options& o) {
  c.Require(a.batch >= 0, SIMDATTN_ERR_BAD_SHAPE, "batch must be >= 0 (got %lld)", L(a.batch));
  c.Require(a.heads >= 0, SIMDATTN_ERR_BAD_SHAPE, "heads must be >= 0 (got %lld)", L(a.heads));
  c.Require(a.len >= 0, SIMDATTN_ERR_BAD_SHAPE, "len must be >= 0 (got %lld)", L(a.len));
  c.Require(a.d_v >= 0, SIMDATTN_ERR_BAD_SHAPE, "d_v must be >= 0 (got %lld)", L(a.d_v));
  c.Require(a.d_k >= 1, SIMDATTN_ERR_BAD_SHAPE,
            "d_k must be >= 1 (got %lld): the scale is undefined", L(a.d_k));
  c.Require(o.kv_heads >= 0, SIMDATTN_ERR_BAD_SHAPE, "options->kv_heads must be >= 0 (got %lld)",
            L(o.kv_heads));
  a.kv_heads = o.kv_heads == 0 ? a.heads : o.kv_heads;
  c.Require(!c.ok() || a.kv_heads == 0 || a.heads % a.kv_heads == 0, SIMDATTN_ERR_BAD_SHAPE,
            "heads (%lld) must be a multiple of options->kv_heads (%lld)", L(a.heads),
            L(a.kv_heads));
  c.Require(o.causal >= 0 && o.causal <= 2, SIMDATTN_ERR_BAD_ARGUMENT,
            "options->causal must be 0, 1 or 2 (got %d)", static_cast<int>(o.causal));
  c.Require(std::isfinite(o.scale) && o.scale >= 0.0f, SIMDATTN_ERR_BAD_ARGUMENT,
            "options->scale must be finite and >= 0 (0 = 1/sqrt(d_k)), got %g",
            static_cast<double>(o.scale));
  c.Require(a.layout != SIMDATTN_RING_ZIGZAG || a.len % 2 == 0, SIMDATTN_ERR_BAD_SHAPE,
            "len must be even for SIMDATTN_RING_ZIGZAG (got %lld)", L(a.len));
}

// Whether [p, p + n) and [q, q + m) floats share an element.
bool Overlap(const void* p, int64_t n, const void* q, int64_t m) {
  if (p == nullptr || q == nullptr || n == 0 || m == 0) return false;
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a < b + static_cast<uintptr_t>(m) * 4 && b < a + static_cast<uintptr_t>(n) * 4;
}

// Out strides nested: each (of a dimension of size > 1) at least the extent below it.
bool Nested(const int64_t sizes[3], const Strides& s, int64_t inner) {
  std::pair<int64_t, int64_t> dims[3];
  int nd = 0;
  const int64_t st[3] = {s.batch, s.head, s.seq};
  for (int i = 0; i < 3; ++i) {
    if (sizes[i] > 1) dims[nd++] = {st[i], sizes[i]};
  }
  for (int i = 1; i < nd; ++i) {  // by stride (insertion sort of at most 3)
    for (int j = i; j > 0 && dims[j] < dims[j - 1]; --j) std::swap(dims[j], dims[j - 1]);
  }
  int64_t extent = inner;
  for (int i = 0; i < nd; ++i) {
    if (dims[i].first < extent) return false;
    extent = dims[i].first * (dims[i].second - 1) + extent;
  }
  return true;
}

// Pointers, extents and aliasing (after the empty-problem shortcut).
void CheckBuffers(Checks& c, const Call& a, const simdattn_sdpa_options& o) {
  const int64_t q_sizes[3] = {a.batch, a.heads, a.len}, kv_sizes[3] = {a.batch, a.kv_heads, a.len};
  const char* names[4] = {"q", "k", "v", "out"};
  const simdattn_strides* given[4] = {&o.q_strides, &o.k_strides, &o.v_strides, &o.out_strides};
  const Strides* st[4] = {&a.q_s, &a.k_s, &a.v_s, &a.out_s};
  for (int i = 0; i < 4; ++i) {
    const simdattn_strides& g = *given[i];
    c.Require(g.batch >= 0 && g.head >= 0 && g.seq >= 0, SIMDATTN_ERR_BAD_SHAPE,
              "%s strides must be >= 0 (got {%lld, %lld, %lld})", names[i], L(g.batch), L(g.head),
              L(g.seq));
  }
  int64_t span[4] = {};
  const int64_t inner[4] = {a.d_k, a.d_k, a.d_v, a.d_v};
  for (int i = 0; i < 4 && c.ok(); ++i) {
    span[i] = Span(i == 0 || i == 3 ? q_sizes : kv_sizes, *st[i], inner[i]);
    c.Require(span[i] >= 0, SIMDATTN_ERR_BAD_SHAPE, "%s: its extent overflows int64", names[i]);
  }
  int64_t rows = 0, bytes = 0;
  const bool rows_overflow = __builtin_mul_overflow(a.batch, a.heads, &rows) ||
                             __builtin_mul_overflow(rows, a.len, &rows) ||
                             __builtin_mul_overflow(rows, int64_t{4}, &bytes);
  c.Require(!rows_overflow, SIMDATTN_ERR_BAD_SHAPE,
            "batch * heads * len (the query rows) has too many elements: overflows int64");
  if (!c.ok() || rows == 0) return;
  const void* ptrs[4] = {a.q, a.k, a.v, a.out};
  for (int i = 0; i < 4; ++i) {
    c.Require(ptrs[i] != nullptr || span[i] == 0, SIMDATTN_ERR_NULL_POINTER,
              "%s is NULL but has %lld elements", names[i], L(span[i]));
  }
  c.Require(a.d_v == 0 || Nested(q_sizes, a.out_s, a.d_v), SIMDATTN_ERR_BAD_ARGUMENT,
            "out strides {%lld, %lld, %lld} are not nested (the ring proves rows of out disjoint "
            "only for nested strides)",
            L(a.out_s.batch), L(a.out_s.head), L(a.out_s.seq));
  const int64_t lse_n = a.lse ? rows : 0;
  for (int i = 0; i < 3; ++i) {
    c.Require(!Overlap(a.out, span[3], ptrs[i], span[i]), SIMDATTN_ERR_BAD_ARGUMENT,
              "out overlaps %s", names[i]);
    c.Require(!Overlap(a.lse, lse_n, ptrs[i], span[i]), SIMDATTN_ERR_BAD_ARGUMENT,
              "options->lse overlaps %s", names[i]);
  }
  c.Require(!Overlap(a.out, span[3], a.lse, lse_n), SIMDATTN_ERR_BAD_ARGUMENT,
            "out overlaps options->lse");
  // One K/V block is one MPI message of MPI_FLOATs (an int count).
  int64_t block = 0;
  const bool block_overflow =
      __builtin_mul_overflow(a.batch * a.kv_heads, a.len * (a.d_k + a.d_v), &block);
  c.Require(!block_overflow && block <= INT_MAX, SIMDATTN_ERR_BAD_SHAPE,
            "the K/V block (batch * kv_heads * len * (d_k + d_v) floats) exceeds one MPI message "
            "(INT_MAX elements)");
}

// Every rank's status: the lowest failing rank's status and message, else OK.
simdattn_status Agree(MPI_Comm comm, int rank, const Checks& local, std::string* message) {
  int mine = local.ok() ? INT_MAX : rank, first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == INT_MAX) return SIMDATTN_OK;
  int status = local.status();
  char text[kMessageBytes] = {};
  std::snprintf(text, sizeof(text), "%s", local.message().c_str());
  MPI_Bcast(&status, 1, MPI_INT, first, comm);
  MPI_Bcast(text, kMessageBytes, MPI_CHAR, first, comm);
  *message = "simdattn_ring_sdpa: rank " + std::to_string(first) + ": " + text;
  return static_cast<simdattn_status>(status);
}

// The arguments every rank must share (all ranks valid): BAD_ARGUMENT on every rank, with the
// same message, when they differ (the ring's messages and steps would not match).
simdattn_status AgreeOnShape(MPI_Comm comm, const Call& a, std::string* message) {
  uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &a.scale, sizeof(scale_bits));
  constexpr int kCount = 9;
  const int64_t mine[kCount] = {a.layout, a.batch, a.heads, a.kv_heads, a.len, a.d_k, a.d_v,
                                a.causal != SIMDATTN_CAUSAL_NONE, scale_bits};
  static const char* const kNames[kCount] = {
      "layout", "batch", "heads", "options->kv_heads (resolved)", "len", "d_k", "d_v",
      "options->causal (none or causal)", "options->scale (resolved, as bits)"};
  int64_t lo[kCount], hi[kCount];
  MPI_Allreduce(mine, lo, kCount, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(mine, hi, kCount, MPI_INT64_T, MPI_MAX, comm);
  for (int i = 0; i < kCount; ++i) {
    if (lo[i] == hi[i]) continue;
    *message = std::string("simdattn_ring_sdpa: the ranks disagree on ") + kNames[i] + " (" +
               std::to_string(lo[i]) + " to " + std::to_string(hi[i]) + ")";
    return SIMDATTN_ERR_BAD_ARGUMENT;
  }
  return SIMDATTN_OK;
}

// Chunks per rank and global chunk index of local chunk c of rank r.
int64_t Chunks(const Call& a) { return a.layout == SIMDATTN_RING_ZIGZAG ? 2 : 1; }
int64_t GlobalChunk(const Call& a, int r, int64_t c) {
  return c == 0 ? r : 2 * static_cast<int64_t>(a.ranks) - 1 - r;
}

// Scratch of one call: two K/V blocks (K then V, contiguous), and per query chunk the running
// result (rows of d_v, lse) plus one piece.
struct Buffers {
  std::vector<float> kv[2];
  std::vector<float> acc, acc_lse, piece, piece_lse;
};

// Packs the rank's own K and V (strided) into a contiguous block.
void PackBlock(const Call& a, float* dst) {
  float* vdst = dst + a.batch * a.kv_heads * a.len * a.d_k;
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < a.kv_heads; ++h) {
      for (int64_t i = 0; i < a.len; ++i) {
        const int64_t row = (b * a.kv_heads + h) * a.len + i;
        if (a.d_k > 0) {
          std::memcpy(dst + row * a.d_k, a.k + b * a.k_s.batch + h * a.k_s.head + i * a.k_s.seq,
                      static_cast<size_t>(a.d_k) * 4);
        }
        if (a.d_v > 0) {
          std::memcpy(vdst + row * a.d_v, a.v + b * a.v_s.batch + h * a.v_s.head + i * a.v_s.seq,
                      static_cast<size_t>(a.d_v) * 4);
        }
      }
    }
  }
}

// What query chunk qg sees of key chunk kg (global chunk indices).
enum class Sight { kAll, kDiagonal, kNone };
Sight See(const Call& a, int64_t qg, int64_t kg) {
  if (a.causal == SIMDATTN_CAUSAL_NONE || kg < qg) return Sight::kAll;
  return kg == qg ? Sight::kDiagonal : Sight::kNone;
}

// FLOPs of one simdattn_sdpa call between two progress calls of MPI: about a millisecond of
// compute, so the K/V transfer advances (shared-memory and TCP transports move a large message
// only inside MPI calls) while a call's thread-pool start stays negligible.
constexpr double kFlopsPerCall = 1e8;

// Attention of local query chunk qc against keys [k0, k0 + n) of the block held (contiguous),
// merged into the chunk's running result. The sdpa calls cover a batch entry and a group of
// K/V heads each (their lse rows are contiguous), with test() (MPI progress) between them.
// Returns the first failing status.
template <class Test>
simdattn_status AttendPiece(const Call& a, Buffers& buf, const float* block, int64_t qc, int64_t k0,
                            int64_t n, bool diagonal, Test test) {
  const int64_t cl = a.len / Chunks(a), rows = a.batch * a.heads * cl;
  const int64_t group = a.heads / a.kv_heads;
  const double kv_head_flops = 2.0 * group * cl * n * (a.d_k + a.d_v);
  const int64_t per_call =
      std::max<int64_t>(1, static_cast<int64_t>(kFlopsPerCall / kv_head_flops));
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.scale = a.scale;
  o.causal = diagonal ? SIMDATTN_CAUSAL_TOP_LEFT : SIMDATTN_CAUSAL_NONE;
  o.q_strides = {a.q_s.batch, a.q_s.head, a.q_s.seq};
  o.k_strides = {a.kv_heads * a.len * a.d_k, a.len * a.d_k, a.d_k};
  o.v_strides = {a.kv_heads * a.len * a.d_v, a.len * a.d_v, a.d_v};
  o.out_strides = {a.heads * cl * a.d_v, cl * a.d_v, a.d_v};
  const float* vblock = block + a.batch * a.kv_heads * a.len * a.d_k;
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t g0 = 0; g0 < a.kv_heads; g0 += per_call) {
      const int64_t g1 = std::min(a.kv_heads, g0 + per_call), h0 = g0 * group;
      const int64_t kv_row = (b * a.kv_heads + g0) * a.len + k0;
      o.kv_heads = g1 - g0;
      o.lse = buf.piece_lse.data() + (b * a.heads + h0) * cl;
      const simdattn_status s = simdattn_sdpa(
          a.q + b * a.q_s.batch + h0 * a.q_s.head + qc * cl * a.q_s.seq, block + kv_row * a.d_k,
          vblock + kv_row * a.d_v, buf.piece.data() + (b * a.heads + h0) * cl * a.d_v, 1,
          (g1 - g0) * group, cl, n, a.d_k, a.d_v, &o);
      if (s != SIMDATTN_OK) return s;
      test();
    }
  }
  float* acc = buf.acc.data() + qc * rows * a.d_v;
  float* acc_lse = buf.acc_lse.data() + qc * rows;
  const float* outs[2] = {acc, buf.piece.data()};
  const float* lses[2] = {acc_lse, buf.piece_lse.data()};
  const int64_t ld = std::max<int64_t>(1, a.d_v);
  return simdattn_attention_merge(2, rows, a.d_v, outs, ld, lses, acc, ld, acc_lse);
}

// One ring step: every query chunk against the block of rank src. test() drives the transfers.
template <class Test>
simdattn_status Step(const Call& a, Buffers& buf, const float* block, int src, Test test) {
  const int64_t chunks = Chunks(a), cl = a.len / chunks;
  for (int64_t qc = 0; qc < chunks; ++qc) {
    const int64_t qg = GlobalChunk(a, a.rank, qc);
    bool all = true;
    for (int64_t kc = 0; kc < chunks; ++kc)
      all = all && See(a, qg, GlobalChunk(a, src, kc)) == Sight::kAll;
    if (all) {  // the whole block at once
      const simdattn_status s = AttendPiece(a, buf, block, qc, 0, a.len, false, test);
      if (s != SIMDATTN_OK) return s;
      continue;
    }
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const Sight sight = See(a, qg, GlobalChunk(a, src, kc));
      if (sight == Sight::kNone) continue;
      const simdattn_status s =
          AttendPiece(a, buf, block, qc, kc * cl, cl, sight == Sight::kDiagonal, test);
      if (s != SIMDATTN_OK) return s;
    }
  }
  return SIMDATTN_OK;
}

// All P steps; the block moves on to rank + 1 while the current one is used.
simdattn_status RunRing(const Call& a, MPI_Comm comm, Buffers& buf) {
  const int right = (a.rank + 1) % a.ranks, left = (a.rank + a.ranks - 1) % a.ranks;
  const int count = static_cast<int>(buf.kv[0].size());
  PackBlock(a, buf.kv[0].data());
  simdattn_status status = SIMDATTN_OK;
  for (int s = 0; s < a.ranks; ++s) {
    const int src = (a.rank - s + a.ranks) % a.ranks;
    const float* block = buf.kv[s % 2].data();
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (s + 1 < a.ranks) {
      MPI_Irecv(buf.kv[(s + 1) % 2].data(), count, MPI_FLOAT, left, kKvTag, comm, &req[0]);
      MPI_Isend(block, count, MPI_FLOAT, right, kKvTag, comm, &req[1]);
    }
    auto test = [&] {
      int done = 0;
      MPI_Testall(2, req, &done, MPI_STATUSES_IGNORE);
    };
    // After a failure the ring keeps moving (the other ranks expect the messages).
    if (status == SIMDATTN_OK) status = Step(a, buf, block, src, test);
    MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
  }
  return status;
}

// The agreed results into out (strided) and options->lse, in local row order.
void WriteResults(const Call& a, const Buffers& buf) {
  const int64_t cl = a.len / Chunks(a), rows = a.batch * a.heads * cl;
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t i = 0; i < a.len; ++i) {
        const int64_t qc = i / cl, row = (b * a.heads + h) * cl + i % cl;
        if (a.d_v > 0) {
          std::memcpy(a.out + b * a.out_s.batch + h * a.out_s.head + i * a.out_s.seq,
                      buf.acc.data() + (qc * rows + row) * a.d_v, static_cast<size_t>(a.d_v) * 4);
        }
        if (a.lse != nullptr) a.lse[(b * a.heads + h) * a.len + i] = buf.acc_lse[qc * rows + row];
      }
    }
  }
}

// Local argument checks of one rank.
Checks Validate(Call& a, const simdattn_sdpa_options* options, simdattn_sdpa_options* o) {
  Checks c;
  c.Require(a.layout == SIMDATTN_RING_CONTIGUOUS || a.layout == SIMDATTN_RING_ZIGZAG,
            SIMDATTN_ERR_BAD_ARGUMENT,
            "layout must be SIMDATTN_RING_CONTIGUOUS (0) or SIMDATTN_RING_ZIGZAG (1) (got %d)",
            static_cast<int>(a.layout));
  CheckOptions(c, options);
  simdattn_sdpa_options_init(o);
  if (c.ok() && options != nullptr) std::memcpy(o, options, kOptionsV01Size);
  o->struct_size = sizeof(*o);
  CheckShapes(c, a, *o);
  if (!c.ok()) return c;
  a.q_s = Resolve(o->q_strides, a.heads, a.len, a.d_k);
  a.k_s = Resolve(o->k_strides, a.kv_heads, a.len, a.d_k);
  a.v_s = Resolve(o->v_strides, a.kv_heads, a.len, a.d_v);
  a.out_s = Resolve(o->out_strides, a.heads, a.len, a.d_v);
  a.lse = o->lse;
  a.scale =
      o->scale == 0.0f ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.d_k))) : o->scale;
  a.causal = o->causal;
  CheckBuffers(c, a, *o);
  return c;
}

// Allocates the scratch (OUT_OF_MEMORY on failure).
void Allocate(const Call& a, Buffers& buf, Checks& c) {
  try {
    const size_t block = static_cast<size_t>(a.batch * a.kv_heads * a.len * (a.d_k + a.d_v));
    const size_t rows = static_cast<size_t>(a.batch * a.heads * a.len);
    const size_t piece_rows = rows / static_cast<size_t>(Chunks(a));
    const size_t dv = static_cast<size_t>(a.d_v);
    buf.kv[0].resize(block), buf.kv[1].resize(block);
    buf.acc.assign(rows * dv, 0.0f);
    buf.acc_lse.assign(rows, -std::numeric_limits<float>::infinity());
    buf.piece.resize(piece_rows * dv), buf.piece_lse.resize(piece_rows);
  } catch (const std::bad_alloc&) {
    c.Fail(SIMDATTN_ERR_OUT_OF_MEMORY, "out of memory for the ring's scratch buffers");
  }
}

}  // namespace

extern "C" {

const char* simdattn_ring_last_error(void) { return t_ring_error.c_str(); }

simdattn_status simdattn_ring_sdpa(MPI_Comm comm, int32_t layout, const float* q, const float* k,
                                   const float* v, float* out, int64_t batch, int64_t heads,
                                   int64_t len, int64_t d_k, int64_t d_v,
                                   const simdattn_sdpa_options* options) {
  MPI_Comm ring;
  MPI_Comm_dup(comm, &ring);
  Call a;
  MPI_Comm_rank(ring, &a.rank);
  MPI_Comm_size(ring, &a.ranks);
  a.layout = layout, a.q = q, a.k = k, a.v = v, a.out = out;
  a.batch = batch, a.heads = heads, a.len = len, a.d_k = d_k, a.d_v = d_v;
  simdattn_sdpa_options o;
  Checks c = Validate(a, options, &o);
  const bool empty = c.ok() && (a.batch == 0 || a.heads == 0 || a.len == 0);
  Buffers buf;
  if (c.ok() && !empty) Allocate(a, buf, c);
  simdattn_status s = Agree(ring, a.rank, c, &t_ring_error);
  if (s == SIMDATTN_OK) s = AgreeOnShape(ring, a, &t_ring_error);
  if (s == SIMDATTN_OK && !empty) {
    Checks run;
    const simdattn_status r = RunRing(a, ring, buf);
    if (r != SIMDATTN_OK) run.Fail(r, simdattn_last_error());
    s = Agree(ring, a.rank, run, &t_ring_error);
    if (s == SIMDATTN_OK) WriteResults(a, buf);
  }
  MPI_Comm_free(&ring);
  if (s == SIMDATTN_OK) t_ring_error.clear();
  return s;
}

}  // extern "C"

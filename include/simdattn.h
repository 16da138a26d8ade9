/* simdattn: SIMD CPU kernels for attention, behind a small C99 API.
 *
 * Conventions that hold for every function below:
 * - Matrices and tensors are row-major float32; sizes, leading dimensions and strides are counted
 *   in elements (int64_t).
 * - Every function that can fail returns a simdattn_status. On failure nothing is written to any
 *   output, and simdattn_last_error() describes the failure (naming the argument and its value).
 *   A call that returns SIMDATTN_OK clears simdattn_last_error().
 * - Thread safety: every function may be called from many threads at once. Work inside one call
 *   runs on the library's own thread pool (see simdattn_set_num_threads).
 * - Determinism: results are bitwise identical for every thread count and on every run on the
 *   same CPU; they may differ between SIMD targets (AVX-512 vs AVX2 ...) in the last bits.
 * - Empty problems (a zero size) return SIMDATTN_OK and touch nothing; NULL is then accepted for
 *   the buffers that have no elements.
 * - Sizes whose element count or byte extent overflows int64_t are SIMDATTN_ERR_BAD_SHAPE (for a
 *   strided operand with more than one row along a dimension, the extent counts up to one row
 *   past its last; a product with a zero factor is 0 and never overflows). Leading dimensions and
 *   strides that cannot matter (a matrix of one row, a dimension of size 1, an operand without
 *   elements) are only checked for sign and minimum, never used.
 * - Memory: a call acquires all its scratch memory before it writes any output, so
 *   SIMDATTN_ERR_OUT_OF_MEMORY (no memory, or no worker thread could be started) leaves every
 *   output as it was.
 * - Nothing is ever printed: the library writes only to the outputs of its calls.
 * - fork(): a child process may call every function, also when another thread of the parent was
 *   inside a call at fork time; in the child, calls run on the calling thread only (same results).
 */
#ifndef SIMDATTN_H_
#define SIMDATTN_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SIMDATTN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SIMDATTN_API __attribute__((visibility("default")))
#else
#define SIMDATTN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ status, version, threads */

typedef enum simdattn_status {
  SIMDATTN_OK = 0,
  SIMDATTN_ERR_NULL_POINTER = 1,  /* a buffer that would be read or written is NULL */
  SIMDATTN_ERR_BAD_SHAPE = 2,     /* negative or inconsistent size, stride or leading dimension,
                                     or a size that overflows int64_t */
  SIMDATTN_ERR_BAD_ARGUMENT = 3,  /* a flag or scalar out of range, or forbidden aliasing */
  SIMDATTN_ERR_OUT_OF_MEMORY = 4, /* scratch memory could not be allocated */
  SIMDATTN_ERR_INTERNAL = 5       /* a bug: please report it with simdattn_last_error() */
} simdattn_status;

/* The enumerator's name, e.g. "SIMDATTN_ERR_BAD_SHAPE"; "SIMDATTN_UNKNOWN_STATUS" for values
 * outside the enum. Never NULL; the string is static. */
SIMDATTN_API const char* simdattn_status_name(simdattn_status s);

/* Text of the calling thread's last failure, naming the argument and its value; "" if the last
 * call on this thread succeeded or no call was made yet. Valid until this thread's next call. */
SIMDATTN_API const char* simdattn_last_error(void);

/* Library version, "MAJOR.MINOR.PATCH" ("0.1.0"). The soname follows MAJOR. */
SIMDATTN_API const char* simdattn_version(void);

/* Name of the Highway SIMD target chosen at run time for this CPU, e.g. "AVX3", "AVX2", "SSE4". */
SIMDATTN_API const char* simdattn_simd_target(void);

/* The largest thread count simdattn_set_num_threads accepts. */
enum { SIMDATTN_MAX_THREADS = 4096 };

/* Sets the number of threads used inside each call. n == 0 means all hardware threads this
 * process may run on (its CPU affinity mask). n < 0 or n > SIMDATTN_MAX_THREADS ->
 * SIMDATTN_ERR_BAD_ARGUMENT (unchanged). The initial value comes from the environment variable
 * SIMDATTN_NUM_THREADS (an integer in [1, SIMDATTN_MAX_THREADS]), else 0. Affects calls that
 * start after it returns; calls in flight keep their pool. n above what oneTBB may run (the CPU
 * count, or a lower tbb::global_control::max_allowed_parallelism of the host) is accepted and
 * reported by simdattn_get_num_threads, but at most that many threads run; results are the same
 * for every n. */
SIMDATTN_API simdattn_status simdattn_set_num_threads(int32_t n);

/* The number of threads calls will use (>= 1; 0 has been resolved to the hardware count). */
SIMDATTN_API int32_t simdattn_get_num_threads(void);

/* ------------------------------------------------------------------ GEMM */

/* C = alpha * op(A) * op(B) + beta * C, row-major, CBLAS semantics.
 * op(A) is m x k: A is m x k (trans_a == 0, lda >= max(1, k)) or k x m (trans_a == 1,
 * lda >= max(1, m)). op(B) is k x n: B is k x n (trans_b == 0, ldb >= max(1, n)) or n x k
 * (trans_b == 1, ldb >= max(1, k)). C is m x n, ldc >= max(1, n).
 * beta == 0 never reads C (it may hold NaN). k == 0 gives C = beta * C (zeros for beta == 0).
 * Non-finite inputs follow IEEE arithmetic and stay local: NaN or +-inf in row i of op(A) (or
 * column j of op(B), or C(i, j) with beta != 0) makes only C row i (column j, element (i, j))
 * non-finite; every other element is bitwise what it would be without it.
 * m == 0 or n == 0: no-op. C must not overlap A or B (SIMDATTN_ERR_BAD_ARGUMENT); A and B may
 * overlap each other. The k-sum is accumulated in a fixed order: results do not depend on the
 * thread count.
 * Errors: trans not 0/1 -> BAD_ARGUMENT; negative size, small leading dimension, overflow ->
 * BAD_SHAPE; NULL A/B (m, n, k > 0) or C (m, n > 0) -> NULL_POINTER. */
SIMDATTN_API simdattn_status simdattn_sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n,
                                            int64_t k, float alpha, const float* a, int64_t lda,
                                            const float* b, int64_t ldb, float beta, float* c,
                                            int64_t ldc);

/* batch independent GEMMs as simdattn_sgemm; matrix i of A starts at a + i * stride_a, likewise
 * B and C. stride_a and stride_b may be 0 (the same matrix for every entry); all strides >= 0
 * (else BAD_SHAPE). The C matrices of different entries must not overlap: stride_c smaller than
 * the extent of one C matrix ((m - 1) * ldc + n) with batch > 1 -> BAD_ARGUMENT.
 * batch == 0 is a no-op. Parallel over batch entries and tiles of each C. */
SIMDATTN_API simdattn_status simdattn_sgemm_batched(
    int32_t trans_a, int32_t trans_b, int64_t batch, int64_t m, int64_t n, int64_t k, float alpha,
    const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b,
    float beta, float* c, int64_t ldc, int64_t stride_c);

/* ------------------------------------------------------------------ softmax */

/* For each of rows rows: y[r, :] = exp(x[r, :] - max) / sum(exp(x[r, :] - max)), max-subtracted
 * so no finite input overflows. ld_x >= max(1, cols), ld_y >= max(1, cols).
 * Special rows: all -inf -> all zeros; any NaN or +inf -> every element NaN. Each row sums to 1
 * within about cols * 2^-24.
 * Aliasing: y may equal x exactly (same pointer, same ld: in place); any other overlap ->
 * BAD_ARGUMENT. Parallel over rows. */
SIMDATTN_API simdattn_status simdattn_softmax(int64_t rows, int64_t cols, const float* x,
                                              int64_t ld_x, float* y, int64_t ld_y);

/* ------------------------------------------------------------------ scaled dot-product attention */

/* Strides of a 4-D [batch, heads, seq, feature] tensor, in elements; the feature dimension is
 * always contiguous (stride 1). */
typedef struct simdattn_strides {
  int64_t batch, head, seq;
} simdattn_strides;

enum {
  SIMDATTN_CAUSAL_NONE = 0,
  SIMDATTN_CAUSAL_TOP_LEFT = 1,    /* key j visible to query i iff j <= i */
  SIMDATTN_CAUSAL_BOTTOM_RIGHT = 2 /* key j visible to query i iff j <= i + (kv_len_b - q_len) */
};

typedef struct simdattn_sdpa_options {
  /* version 0.1 fields (sizeof 176 on x86-64) */
  size_t struct_size;            /* sizeof(simdattn_sdpa_options); lets the struct grow */
  float scale;                   /* 0 -> 1/sqrt(d_k); else finite and > 0 */
  int32_t causal;                /* SIMDATTN_CAUSAL_* */
  int64_t kv_heads;              /* 0 -> heads; else heads % kv_heads == 0 (GQA; 1 = MQA);
                                    query head h reads kv head h / (heads / kv_heads) */
  const float* mask;             /* optional additive mask, logical [batch, heads, q_len, kv_len] */
  simdattn_strides mask_strides; /* used as given; 0 broadcasts that dimension; kv stride is 1 */
  const int64_t* kv_lens;        /* optional [batch]: keys >= kv_lens[b] are masked,
                                    0 <= kv_lens[b] <= kv_len */
  simdattn_strides q_strides, k_strides, v_strides, out_strides; /* all zero -> contiguous */
  float* lse;                    /* optional out [batch, heads, q_len] (contiguous):
                                    log(sum(exp(s))) of the scaled, masked scores s;
                                    -inf for a fully masked row */
  float* weights;                /* optional out [batch, heads, q_len, kv_len] (contiguous): the
                                    probabilities, materialised on request only */
  /* version 0.2 fields (sizeof 216 on x86-64) */
  int32_t window;                /* 0: off. 1: key j visible to query i only if
                                    d_i - window_left <= j <= d_i + window_right */
  float softcap;                 /* 0: off. finite > 0: s = softcap * tanh(s / softcap) */
  int64_t window_left;           /* >= 0 when window == 1 */
  int64_t window_right;          /* >= 0 when window == 1 */
  const float* alibi_slopes;     /* optional [heads], finite: s -= alibi_slopes[h] * |j - d_i| */
  const float* sinks;            /* optional [heads], finite or -inf: a logit that joins the
                                    normaliser of every row of query head h and has no value */
} simdattn_sdpa_options;

/* The size of the first (0.1) layout: the smallest struct_size accepted. */
enum { SIMDATTN_SDPA_OPTIONS_SIZE_0_1 = 176 };

/* Fills defaults: struct_size = sizeof, everything else 0 / NULL.
 * struct_size >= SIMDATTN_SDPA_OPTIONS_SIZE_0_1 is accepted by every function that takes these
 * options (larger than this header's sizeof too). A field is read only if it ends at or before
 * struct_size; bytes at or past struct_size are never read, and a missing field reads as 0 /
 * NULL (a caller that fills a 0.1 struct itself keeps working). struct_size below the 0.1 size
 * -> BAD_ARGUMENT. ABI: a binary built against 0.1 binds the 0.1 initialiser (symbol version
 * SIMDATTN_0.1), which writes 176 bytes with struct_size = 176; code built against this header,
 * and a lookup by name (dlsym, ctypes), get this one (SIMDATTN_0.2: 216 bytes). */
SIMDATTN_API void simdattn_sdpa_options_init(simdattn_sdpa_options* options);

/* Exact semantics, per batch entry b, query head h, query i, key j (simdattn_sdpa and
 * simdattn_sdpa_varlen):
 *   kv_len_b = kv_lens ? kv_lens[b] : kv_len      (varlen: the sequence's key count)
 *   q_len_b  = q_len                               (varlen: the sequence's query count)
 *   d_i      = i                       if causal == SIMDATTN_CAUSAL_TOP_LEFT
 *            = i + kv_len_b - q_len_b  otherwise (the queries are the last q_len_b positions
 *                                      of the keys: the KV-cache convention)
 *   visible  = j < kv_len_b
 *              && (causal == NONE || j <= d_i)
 *              && (window == 0 || d_i - window_left <= j <= d_i + window_right)
 *   s        = scale * dot(q_i, k_j)
 *              then, if softcap > 0: s = softcap * tanh(s / softcap)
 *              then, if alibi_slopes: s -= alibi_slopes[h] * |j - d_i|
 *              then, if mask:         s += mask[b, h, i, j]
 *   Z        = sum over visible j of exp(s) + (sinks ? exp(sinks[h]) : 0)
 *   out_i    = sum over visible j of exp(s) / Z * v_j;  lse_i = log Z;
 *   weights  = exp(s) / Z for visible j, else 0.
 *   Z == 0 (nothing visible and no sink, or sink -inf): out 0, lse -inf, weights 0.
 * window_left/right are ignored when window == 0; with window == 1 any side in [0, INT64_MAX]
 * is valid (a side past the sequence bounds nothing). Windowed queries visit only the key
 * blocks their window reaches: the cost is proportional to the window. ALiBi: any finite slope
 * (0 and negative included); the bias is slope * |j - d_i| from the exact integer distance.
 * Errors added by the 0.2 fields: window not 0/1, window == 1 with a negative side, softcap
 * NaN/inf/< 0, a non-finite alibi slope, a NaN or +inf sink -> BAD_ARGUMENT; last_error()
 * names the array and index, e.g. "options->alibi_slopes[11] = nan". */

/* out = softmax(q k^T * scale + mask) v, per batch b and head h, with the variants of the
 * options (window, softcap, ALiBi, sinks) as the exact semantics above define.
 * q [batch, heads, q_len, d_k], k [batch, kv_heads, kv_len, d_k], v [batch, kv_heads, kv_len, d_v],
 * out [batch, heads, q_len, d_v]; each strided by its options strides (all three zero ->
 * contiguous in that order). options NULL -> defaults.
 * A query row whose keys are all masked (by mask -inf, causal, kv_lens or kv_len == 0) gives
 * output 0, lse -inf and weights 0: never NaN. A NaN or +inf score (from NaN or +-inf in q, in
 * a k row the query sees, or a NaN or +inf mask entry) makes that query's out, lse and weights
 * NaN, as softmax does for such rows. NaN or +-inf in a v row makes the out of the queries that
 * see it non-finite and may also reach other queries of the same batch entry and kv head
 * (through a zero weight: 0 * NaN = NaN). Other (batch, kv head) pairs are bitwise unaffected.
 * out is accumulated before the final division by the softmax sum: |v| up to FLT_MAX / kv_len
 * stays finite, larger values may overflow to +-inf.
 * Empty: batch, heads or q_len == 0 -> OK, nothing written; d_v == 0 -> out has no elements but
 * lse and weights are written. d_k < 1 -> BAD_SHAPE (the scale is undefined).
 * Errors (nothing written): negative sizes or strides, kv_heads < 0 or not dividing heads,
 * kv_lens[b] outside [0, kv_len], overflow -> BAD_SHAPE; struct_size smaller than the first
 * version's, causal not in {0, 1, 2}, scale NaN, inf or < 0, out, lse or weights overlapping
 * q, k, v, the mask or one another, out strides that make two rows of out overlap (checked
 * exactly; strides that interleave rows in more than about 2^22 ways without being nested are
 * refused as unverifiable) -> BAD_ARGUMENT; NULL q/k/v/out with elements -> NULL_POINTER. Shape and flag checks come
 * before the empty-problem shortcut, so an empty call with a bad flag still fails.
 * Memory: O(threads * block) scratch, never O(q_len * kv_len). Parallel over batch, heads and
 * query blocks; decode (small q_len) also splits kv_len and merges the parts in a fixed order. */
SIMDATTN_API simdattn_status simdattn_sdpa(const float* q, const float* k, const float* v,
                                           float* out, int64_t batch, int64_t heads,
                                           int64_t q_len, int64_t kv_len, int64_t d_k,
                                           int64_t d_v, const simdattn_sdpa_options* options);

/* Ragged batches, packed token-major ("THD", flash-attn's varlen layout): sequence b is the
 * independent problem of query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 (q_len_b of them)
 * against keys cu_seqlens_kv[b] .. cu_seqlens_kv[b+1]-1 (kv_len_b), with the semantics above.
 * q [total_q, heads, d_k], k [total_kv, kv_heads, d_k], v [total_kv, kv_heads, d_v],
 * out [total_q, heads, d_v]; total_q = cu_seqlens_q[batch], total_kv = cu_seqlens_kv[batch];
 * kv_heads = options->kv_heads (0 -> heads). cu_seqlens_*: [batch + 1], cu[0] == 0,
 * non-decreasing. options NULL -> defaults.
 * Strides: options' q/k/v/out_strides .seq = token stride, .head = head stride, .batch ignored;
 * a tensor whose .seq and .head are both 0 is packed ([tokens, heads, d] contiguous).
 * options->lse, if set: [total_q, heads] contiguous. d_v == 0 still writes lse.
 * options->mask, ->kv_lens and ->weights must be NULL (else BAD_ARGUMENT).
 * Errors: batch < 0, cu[0] != 0, decreasing cu, negative sizes or strides, d_k < 1, kv_heads < 0
 * or not dividing heads, int64 overflow -> BAD_SHAPE; NULL cu_seqlens with batch > 0, NULL
 * q/k/v/out with elements -> NULL_POINTER; out or lse overlapping q/k/v or each other, out
 * strides that make two rows overlap -> BAD_ARGUMENT; the 0.2 option errors above.
 * batch == 0 -> OK without reading cu_seqlens (NULL allowed).
 * One parallel schedule over all (sequence, kv head, query block) tasks, longest first: no
 * padding, no copies, no key split (a batch of long-context decode steps is better served by
 * simdattn_sdpa per sequence). Results are bitwise identical for any thread count. */
SIMDATTN_API simdattn_status simdattn_sdpa_varlen(
    const float* q, const float* k, const float* v, float* out, int64_t batch, int64_t heads,
    const int64_t* cu_seqlens_q, const int64_t* cu_seqlens_kv, int64_t d_k, int64_t d_v,
    const simdattn_sdpa_options* options);

/* ------------------------------------------------------------------ merge of partial attention */

/* Merges n partial attention results over disjoint key sets for the same query rows:
 * lse = log(sum_i exp(lses[i][r])), out[r] = sum_i exp(lses[i][r] - lse) * outs[i][r].
 * outs[i]: [rows, d_v] with row stride ld_out; lses[i]: [rows]; out: [rows, d_v] with row
 * stride ld_out_merged; lse: [rows] or NULL (not wanted). A piece whose lse is -inf for a row
 * adds nothing to it, whatever its output holds (even NaN); so does a piece whose weight
 * exp(lses[i][r] - max_i lses[i][r]) underflows to 0. A row whose pieces are all -inf gets out 0
 * and lse -inf. A NaN or +inf lse in any piece (no partial softmax yields +inf) makes that row's
 * out and lse NaN. One piece returns it unchanged (bitwise). out is formed as a convex
 * combination of the rows (weights normalized first): it overflows only within rounding of
 * FLT_MAX.
 * out may be exactly outs[0] (same pointer, ld_out_merged == ld_out) and lse exactly lses[0];
 * any other overlap of out/lse with the inputs, or of out with lse -> BAD_ARGUMENT. Inputs may
 * overlap one another.
 * Pieces are combined in index order: bitwise deterministic for a given order and any thread
 * count. d_v == 0 merges lse only (outs, the outs[i] and out are then not read and may be NULL).
 * rows == 0 -> OK. Parallel over rows.
 * Errors: n < 1 -> BAD_ARGUMENT; rows < 0, d_v < 0, ld_out or ld_out_merged < max(1, d_v),
 * overflow -> BAD_SHAPE; outs, lses, any outs[i] or lses[i], or out NULL (with elements)
 * -> NULL_POINTER. */
SIMDATTN_API simdattn_status simdattn_attention_merge(int64_t n, int64_t rows, int64_t d_v,
                                                      const float* const* outs, int64_t ld_out,
                                                      const float* const* lses, float* out,
                                                      int64_t ld_out_merged, float* lse);

/* ------------------------------------------------------------------ KV cache and casts */

/* Element types of a KV cache and of simdattn_cast. */
enum { SIMDATTN_DTYPE_F32 = 0, SIMDATTN_DTYPE_BF16 = 1, SIMDATTN_DTYPE_F16 = 2 };

/* A paged KV cache (vLLM's PagedAttention layout): fixed-size blocks of keys, any block of any
 * sequence anywhere, found through a block table. */
typedef struct simdattn_kv_cache {
  size_t struct_size;         /* sizeof(simdattn_kv_cache) (80 on x86-64) */
  int32_t dtype;              /* SIMDATTN_DTYPE_*: element type of k and v */
  const void* k;              /* [num_blocks, block_size, kv_heads, d_k] */
  const void* v;              /* [num_blocks, block_size, kv_heads, d_v] */
  int64_t num_blocks;
  int64_t block_size;         /* keys per block, >= 1 */
  int64_t kv_heads;           /* >= 1, divides heads */
  const int32_t* block_table; /* [batch, max_blocks_per_seq]; NULL = identity: block n of
                                 sequence b is physical block b * max_blocks_per_seq + n */
  int64_t max_blocks_per_seq;
  const int64_t* seq_lens;    /* [batch], required: 0 <= seq_lens[b] <= max_blocks_per_seq * block_size */
} simdattn_kv_cache;

/* Fills defaults: struct_size = sizeof, everything else 0 / NULL (dtype F32). */
SIMDATTN_API void simdattn_kv_cache_init(simdattn_kv_cache* cache);

/* Attention of fp32 queries over a paged KV cache: simdattn_sdpa's semantics (scores, causal
 * alignment, window, softcap, ALiBi, sinks, LSE) with kv_len_b = seq_lens[b]: the q_len queries
 * are the last q_len positions of each sequence unless causal is TOP_LEFT.
 * Key j (< seq_lens[b]) of sequence b, kv head g: physical block p = block_table[b *
 * max_blocks_per_seq + j / block_size] (block_table NULL: p = b * max_blocks_per_seq +
 * j / block_size), row r = j % block_size; its d_k values start at element
 * ((p * block_size + r) * kv_heads + g) * d_k of k (likewise v with d_v), widened exactly to
 * float. Query head h reads kv head h / (heads / cache->kv_heads). Nothing else of the cache is
 * read: rows past seq_lens[b] in a sequence's last block, blocks no sequence uses, and table
 * entries at index >= ceil(seq_lens[b] / block_size) may hold anything (NaN, -1, out of range).
 * Blocks may be shared between sequences. q [batch, heads, q_len, d_k], out [batch, heads, q_len,
 * d_v] with options' q/out strides; q_len may exceed seq_lens[b] (with causal bottom-right the
 * first q_len - seq_lens[b] queries see no key). Q stays fp32 and every sum is fp32: the error
 * bound is simdattn_sdpa's over the widened K/V values.
 * options->kv_heads must be 0 or equal cache->kv_heads (else BAD_SHAPE); options->mask, ->kv_lens,
 * ->weights must be NULL and its k/v strides zero (else BAD_ARGUMENT); options->lse
 * [batch, heads, q_len] as in simdattn_sdpa. Results are bitwise identical for any thread count.
 * Sequences of 1024 keys or more are split into fixed ranges of 512 keys (a shape property),
 * run range by range across the kv heads (a page holds every kv head's rows) and merged by
 * their LSE in index order; simdattn_sdpa splits differently (2048 keys, few tasks only), so
 * the two round differently on long sequences. Decode (up to 8 query columns per kv head)
 * reads K/V in place and widens them in registers; longer query blocks widen each block of
 * keys once into an L1 buffer.
 * Sizes, strides and empty sizes follow simdattn_sdpa: negative sizes or strides, d_k < 1, and
 * element or byte counts overflowing int64 -> BAD_SHAPE; batch, heads or q_len == 0 -> OK with
 * nothing written (NULL allowed for buffers without elements, seq_lens included when batch == 0);
 * d_v == 0 still writes lse.
 * Errors (nothing written): cache NULL -> NULL_POINTER (always: it carries shapes);
 * cache->struct_size < sizeof -> BAD_ARGUMENT; dtype unknown -> BAD_ARGUMENT; block_size < 1,
 * kv_heads < 1 or not dividing heads, num_blocks < 0, max_blocks_per_seq < 0, seq_lens[b]
 * outside [0, max_blocks_per_seq * block_size], a physical block that a sequence uses (its table
 * entry, or the implied one when block_table is NULL) outside [0, num_blocks) -> BAD_SHAPE;
 * seq_lens NULL with batch > 0, k or v NULL while it has elements to read -> NULL_POINTER; out or
 * lse overlapping q, the cache's k or v (num_blocks * block_size * kv_heads * d_k, resp. d_v,
 * elements of the dtype's size) or each other -> BAD_ARGUMENT. */
SIMDATTN_API simdattn_status simdattn_sdpa_kvcache(
    const float* q, const simdattn_kv_cache* cache, float* out, int64_t batch, int64_t heads,
    int64_t q_len, int64_t d_k, int64_t d_v, const simdattn_sdpa_options* options);

/* n elements from src_dtype to dst_dtype, any of the nine pairs. To f32: exact. To bf16 or
 * f16: the exact value rounded once to nearest even; overflow -> +-inf (f16: |x| >= 65520);
 * subnormal inputs and results are kept and rounded correctly, never flushed. Same dtype: a copy.
 * +-0 and +-inf keep their sign; a NaN gives a NaN. n == 0 -> OK (NULL allowed). Parallel over
 * chunks of elements; every element's result is independent of the thread count.
 * Errors: n < 0 or n * element size overflowing int64 -> BAD_SHAPE; unknown dtype ->
 * BAD_ARGUMENT; NULL with n > 0 -> NULL_POINTER; src and dst byte ranges overlapping (in place
 * included) -> BAD_ARGUMENT. */
SIMDATTN_API simdattn_status simdattn_cast(int64_t n, const void* src, int32_t src_dtype,
                                           void* dst, int32_t dst_dtype);

/* ------------------------------------------------------------------ multi-head self-attention */

/* Weights laid out exactly as torch.nn.MultiheadAttention stores them (E = embed_dim). */
typedef struct simdattn_mha_weights {
  const float* in_proj_weight;  /* [3E, E], rows q, k, v (in_proj_weight) */
  const float* in_proj_bias;    /* [3E] or NULL */
  const float* out_proj_weight; /* [E, E] (out_proj.weight; y = x W^T + b) */
  const float* out_proj_bias;   /* [E] or NULL */
} simdattn_mha_weights;

typedef struct simdattn_mha_options {
  size_t struct_size;              /* sizeof(simdattn_mha_options) */
  int32_t batch_first;             /* 0: x, y are [seq, batch, E] (PyTorch default); 1: [batch, seq, E] */
  int32_t causal;                  /* SIMDATTN_CAUSAL_NONE or _TOP_LEFT (_BOTTOM_RIGHT is the same) */
  const uint8_t* key_padding_mask; /* optional [batch, seq]; nonzero = this key is padding */
  const float* attn_mask;          /* optional additive [seq, seq] */
  float* attn_weights;             /* optional out [batch, seq, seq], averaged over heads */
} simdattn_mha_options;

/* Fills defaults: struct_size = sizeof, everything else 0 / NULL. */
SIMDATTN_API void simdattn_mha_options_init(simdattn_mha_options* options);

/* y = MultiheadAttention(x, x, x) as torch.nn.MultiheadAttention (eval mode, no dropout).
 * x, y: [seq_len, batch, E] or [batch, seq_len, E] (batch_first). y may equal x (in place);
 * any other overlap of y with x, the weights or the masks -> BAD_ARGUMENT.
 * A query whose keys are all masked gives zeros before the output projection (y row =
 * out_proj_bias) and attention weights 0 (PyTorch gives NaN there). NaN or +-inf in a token of
 * x can make the outputs of its batch entry non-finite (its keys and values are shared within
 * the entry); other batch entries are bitwise unaffected.
 * Errors: num_heads < 1 or embed_dim % num_heads != 0 -> BAD_SHAPE; weights NULL or its
 * weight matrices NULL (with elements) -> NULL_POINTER; seq_len == 0 or batch == 0 -> OK no-op
 * (checked after the shapes); otherwise embed_dim == 0 -> BAD_SHAPE (the head dimension is 0:
 * the scale 1/sqrt(embed_dim / num_heads) is undefined, as for simdattn_sdpa's d_k).
 * Scratch: at most 4 * seq_len * batch * E floats per call, kept by the calling thread for its
 * next call (so repeated calls pay no allocation or page faults); freed when the thread exits. */
SIMDATTN_API simdattn_status simdattn_mhsa(const float* x, float* y, int64_t seq_len, int64_t batch,
                                           int64_t embed_dim, int64_t num_heads,
                                           const simdattn_mha_weights* weights,
                                           const simdattn_mha_options* options);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SIMDATTN_H_ */

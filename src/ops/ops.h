// Internal C++ entry points of the ops. c_api.cc validates every argument before calling these;
// ops plan blocks, run them in parallel (threading.h) and dispatch to the best Highway target.
// Preconditions here are the validated C API contracts: sizes > 0 unless stated, no overflow.
#ifndef SIMDATTN_SRC_OPS_OPS_H_
#define SIMDATTN_SRC_OPS_OPS_H_

#include <cstddef>
#include <cstdint>

#include "src/threading.h"

namespace simdattn {

// ceil(x / y) for x >= 0, y > 0: block counts in the ops' planning code.
inline int64_t CeilDiv(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Highway target name chosen by dynamic dispatch, e.g. "AVX3".
const char* SimdTarget();

// One (possibly batched) GEMM, CBLAS row-major semantics:
// C_i = alpha * op(A_i) op(B_i) + beta * C_i (+ bias on every row) with X_i = x + i * stride_x.
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  const float* bias = nullptr;  // [n] added to every row of C (torch Linear), or null
};
// Requires m, n, batch >= 1 (k may be 0). Deterministic for any thread count. Acquires all its
// memory before writing C (std::bad_alloc leaves C as it was).
void Sgemm(const GemmArgs& args);
// The task scratch Sgemm(args) reserves (for a caller that reserves several ops' at once).
TaskScratch SgemmScratch(const GemmArgs& args);

// Row-wise stable softmax; rows, cols >= 1; y == x allowed when ld_y == ld_x.
void Softmax(int64_t rows, int64_t cols, const float* x, int64_t ld_x, float* y, int64_t ld_y);

// Scaled dot-product attention over [batch, heads, seq, d] tensors with explicit strides (all
// resolved: never zero-means-contiguous here). Sizes validated by c_api: batch, heads, q_len >= 1,
// kv_len >= 0, d_k >= 1, d_v >= 0; scale > 0 and finite; heads % kv_heads == 0.
struct Strides4 {
  int64_t batch = 0, head = 0, seq = 0;
};
struct SdpaArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t batch = 0, heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, d_k = 0, d_v = 0;
  float scale = 1.0f;
  int causal = 0;                 // SIMDATTN_CAUSAL_*
  Strides4 q_s, k_s, v_s, out_s;  // element strides; feature stride is 1
  const float* mask = nullptr;    // additive, [batch, heads, q_len, kv_len] via mask_s (kv stride 1)
  Strides4 mask_s;
  const int64_t* kv_lens = nullptr;       // [batch] or null
  const uint8_t* key_padding = nullptr;   // internal (MHSA): [batch, kv_len], nonzero = masked
  int64_t key_padding_batch_stride = 0;
  float* lse = nullptr;      // [batch, heads, q_len] contiguous, or null
  float* weights = nullptr;  // [batch, heads, q_len, kv_len] contiguous, or null
  int64_t block_keys = 0;    // keys per block of the sweep; Sdpa sets it from the CPU's L1
  // Variants (simdattn.h semantics): d_i = i for causal TOP_LEFT, else i + kv_len_b - q_len_b.
  bool window = false;       // key j visible only if d_i - window_left <= j <= d_i + window_right
  int64_t window_left = 0, window_right = 0;  // >= 0
  float softcap = 0.0f;                       // > 0: s = softcap * tanh(s / softcap)
  const float* alibi_slopes = nullptr;        // [heads] or null: s -= slope[h] * |j - d_i|
  const float* sinks = nullptr;               // [heads] or null: joins every row's normaliser
  // Varlen (simdattn_sdpa_varlen): [batch + 1] offsets of each sequence's tokens, or null. Then
  // batch entry b is rows cu_q[b].. of q/out and cu_kv[b].. of k/v (q_s.batch and k_s.batch
  // unused), q_len and kv_len are the largest sequence's, and lse is [total_q, heads].
  const int64_t* cu_q = nullptr;
  const int64_t* cu_kv = nullptr;
  // Paged KV cache (simdattn_sdpa_kvcache), or null. Then k and v are unused: key j of entry b,
  // kv head g is row ((p * block_size + j % block_size) * kv_heads + g) of pages->k/v (d_k,
  // d_v elements of pages->dtype), p = PhysicalBlock(b, j / block_size); kv_lens holds
  // seq_lens, kv_len their maximum; mask, weights and key_padding are null.
  const struct KvPages* pages = nullptr;
};
// The cache of simdattn_sdpa_kvcache, validated: every block a sequence uses is in range.
struct KvPages {
  int dtype = 0;  // SIMDATTN_DTYPE_*
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t block_size = 1;
  const int32_t* block_table = nullptr;  // [batch, max_blocks], or null (identity)
  int64_t max_blocks = 0;
  int64_t PhysicalBlock(int64_t b, int64_t n) const {
    return block_table != nullptr ? block_table[b * max_blocks + n] : b * max_blocks + n;
  }
};
// Acquires all its memory before writing any output (std::bad_alloc leaves them as they were).
void Sdpa(const SdpaArgs& args);
// The task scratch Sdpa(args) reserves.
TaskScratch SdpaScratch(const SdpaArgs& args);

// Exact merge of n partial attention results per row (simdattn_attention_merge). Validated by
// c_api: n >= 1, rows >= 1, d_v >= 0, extents representable; outs and out are null and the
// leading dimensions 0 when d_v == 0; out may be outs[0] (same ld) and lse lses[0], nothing
// else overlaps an output; lse may be null.
struct MergeArgs {
  int64_t n = 0, rows = 0, d_v = 0;
  const float* const* outs = nullptr;
  int64_t ld_out = 0;
  const float* const* lses = nullptr;
  float* out = nullptr;
  int64_t ld_merged = 0;
  float* lse = nullptr;
};
void AttentionMerge(const MergeArgs& args);

// n elements of SIMDATTN_DTYPE_* src_dtype at src to dst_dtype at dst (simdattn_cast). Validated
// by c_api: n >= 1, both dtypes known, byte sizes representable, src and dst disjoint.
struct CastArgs {
  int64_t n = 0;
  const void* src = nullptr;
  int src_dtype = 0;
  void* dst = nullptr;
  int dst_dtype = 0;
};
// Same dtype: a copy; to f32: exact; to bf16/f16: rounded once to nearest even. Deterministic
// for any thread count; allocates nothing.
void Cast(const CastArgs& args);

// Multi-head self-attention as torch.nn.MultiheadAttention(x, x, x) in eval mode:
// y = out_proj(attention(in_proj(x))), E = embed, head dim E / heads, scale 1/sqrt(E / heads).
// x, y are [seq, batch, E] (or [batch, seq, E] when batch_first), contiguous; y may equal x,
// otherwise no output overlaps an input. Validated by c_api: seq, batch, embed, heads >= 1,
// embed % heads == 0, and 4 * seq * batch * embed, batch * seq^2, heads * seq^2 fit in int64.
// A query with every key masked gives attention 0 (y row = out_proj_bias) and weights 0.
struct MhsaArgs {
  const float* x = nullptr;
  float* y = nullptr;
  int64_t seq = 0, batch = 0, embed = 0, heads = 0;
  bool batch_first = false;
  bool causal = false;                       // key j visible to query i iff j <= i
  const float* in_proj_weight = nullptr;     // [3E, E]: rows of W_q, W_k, W_v
  const float* in_proj_bias = nullptr;       // [3E] or null
  const float* out_proj_weight = nullptr;    // [E, E]
  const float* out_proj_bias = nullptr;      // [E] or null
  const uint8_t* key_padding_mask = nullptr;  // [batch, seq] or null; nonzero = key is padding
  const float* attn_mask = nullptr;          // additive [seq, seq] or null
  float* attn_weights = nullptr;             // out [batch, seq, seq], mean over heads, or null
};
// Scratch: 4 * seq * batch * E floats, plus heads * seq * seq when attn_weights is requested.
void Mhsa(const MhsaArgs& args);

}  // namespace simdattn

#endif  // SIMDATTN_SRC_OPS_OPS_H_

// Multi-head self-attention op: a composition of the GEMM and SDPA ops, so this unit is plain C++
// (no Highway target of its own): the only arithmetic here, bias rows and the head mean of the
// weights, is O(rows * E) / O(heads * seq^2) next to the O(rows * E^2) GEMMs.
//
// Data flow for rows = seq * batch tokens (row order of x: [seq, batch] or [batch, seq]):
//   qkv[rows, 3E]  = x W_in^T + b_in              (one GEMM over all tokens, bias in its stores)
//   attn[rows, E]  = Sdpa(q, k, v of qkv)         (read in place through strides: no head split)
//   y[rows, E]     = attn W_out^T + b_out         (y may be x: x is dead after the first GEMM)
// Scratch: qkv + attn = 4 * rows * E floats; per-head weights (heads * seq^2) only on request.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "simdattn.h"
#include "src/ops/ops.h"
#include "src/threading.h"

namespace simdattn {
namespace {

// ~32K floats per task: enough work to hide the task overhead, small enough to balance.
constexpr int64_t kChunkFloats = 32768;

// c[rows, n] = a[rows, k] w^T + bias, w is [n, k] (torch Linear layout); bias may be null (the
// GEMM adds it as it stores the first k slice: no extra pass over c). c must not overlap a or w.
GemmArgs LinearArgs(int64_t rows, int64_t n, int64_t k, const float* a, const float* w,
                    const float* bias, float* c) {
  GemmArgs g;
  g.trans_b = true;
  g.m = rows, g.n = n, g.k = k;
  g.beta = 0.0f;
  g.bias = bias;
  g.a = a, g.lda = k;
  g.b = w, g.ldb = k;
  g.c = c, g.ldc = n;
  return g;
}

// Attention over all batch entries, q/k/v read in place from qkv[rows, 3E] and the result written
// to attn[rows, E] in the same token order.
SdpaArgs AttentionArgs(const MhsaArgs& m, const float* qkv, float* attn) {
  const int64_t e = m.embed, d = e / m.heads;
  // Token (b, s) is row b * row_b + s * row_s of x.
  const int64_t row_b = m.batch_first ? m.seq : 1, row_s = m.batch_first ? 1 : m.batch;
  SdpaArgs s;
  s.q = qkv, s.k = qkv + e, s.v = qkv + 2 * e, s.out = attn;
  s.batch = m.batch, s.heads = m.heads, s.kv_heads = m.heads;
  s.q_len = m.seq, s.kv_len = m.seq, s.d_k = d, s.d_v = d;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  // q_len == kv_len: top-left and bottom-right alignment coincide.
  s.causal = m.causal ? SIMDATTN_CAUSAL_TOP_LEFT : SIMDATTN_CAUSAL_NONE;
  s.q_s = {row_b * 3 * e, d, row_s * 3 * e};
  s.k_s = s.q_s, s.v_s = s.q_s;
  s.out_s = {row_b * e, d, row_s * e};
  s.mask = m.attn_mask;
  s.mask_s = {0, 0, m.seq};
  s.key_padding = m.key_padding_mask;
  s.key_padding_batch_stride = m.seq;
  return s;
}

// mean[i] = (sum over h = 0, 1, ... of w[h * n + i]) / heads, summed in that fixed order.
void MeanOverHeads(int64_t heads, int64_t n, const float* w, float* mean) {
  ParallelFor(n, kChunkFloats, [&](int64_t i0, int64_t i1) {
    float* dst = mean + i0;
    const int64_t len = i1 - i0;
    std::memcpy(dst, w + i0, static_cast<size_t>(len) * sizeof(float));
    for (int64_t h = 1; h < heads; ++h) {
      const float* src = w + h * n + i0;
      for (int64_t i = 0; i < len; ++i) dst[i] += src[i];
    }
    const float count = static_cast<float>(heads);
    for (int64_t i = 0; i < len; ++i) dst[i] /= count;
  });
}

// Attention one batch entry at a time so the per-head weights need only heads * seq^2 scratch;
// each entry's head mean goes to m.attn_weights[b].
// heads_w: heads * seq^2 floats of scratch.
void AttentionWithWeights(const MhsaArgs& m, const SdpaArgs& all, float* heads_w) {
  const int64_t per_entry = m.seq * m.seq;
  for (int64_t b = 0; b < m.batch; ++b) {
    SdpaArgs s = all;
    s.batch = 1;
    s.q += b * s.q_s.batch, s.k += b * s.k_s.batch, s.v += b * s.v_s.batch;
    s.out += b * s.out_s.batch;
    if (s.key_padding != nullptr) s.key_padding += b * s.key_padding_batch_stride;
    s.weights = heads_w;
    Sdpa(s);
    MeanOverHeads(m.heads, per_entry, heads_w, m.attn_weights + b * per_entry);
  }
}

}  // namespace

void Mhsa(const MhsaArgs& m) {
  const int64_t rows = m.seq * m.batch, e = m.embed;
  // All memory first (the call scratch, every step's task scratch, the per-head weights), so a
  // failure leaves y and attn_weights as they were.
  float* qkv = ThreadScratch(kMhsaCallSlot, static_cast<size_t>(4 * rows * e));
  float* attn = qkv + 3 * rows * e;
  const SdpaArgs s = AttentionArgs(m, qkv, attn);
  const GemmArgs in_proj = LinearArgs(rows, 3 * e, e, m.x, m.in_proj_weight, m.in_proj_bias, qkv);
  const GemmArgs out_proj = LinearArgs(rows, e, e, attn, m.out_proj_weight, m.out_proj_bias, m.y);
  ReserveTaskScratch(
      MaxScratch(MaxScratch(SgemmScratch(in_proj), SgemmScratch(out_proj)), SdpaScratch(s)));
  std::unique_ptr<float[]> heads_w;
  if (m.attn_weights != nullptr) heads_w.reset(new float[static_cast<size_t>(m.heads * m.seq * m.seq)]);
  Sgemm(in_proj);
  if (m.attn_weights != nullptr) {
    AttentionWithWeights(m, s, heads_w.get());
  } else {
    Sdpa(s);
  }
  Sgemm(out_proj);
}

}  // namespace simdattn

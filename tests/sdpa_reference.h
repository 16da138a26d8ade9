// Plain float64 reference for scaled dot-product attention, one query row at a time, written
// straight from the contract of simdattn_sdpa in include/simdattn.h (no blocking, no online
// softmax, no SIMD) so that it can be read and trusted. Shared by the SDPA and MHSA tests.
//
// For batch b, head h, query i:
//   kv head   g = h / (heads / kv_heads)
//   visible   j < kv_len_b (kv_lens[b] if given, else kv_len), and
//             TOP_LEFT: j <= i;  BOTTOM_RIGHT: j <= i + (kv_len_b - q_len)
//   logit     s_j = scale * sum_t q[b,h,i,t] k[b,g,j,t] + mask[b,h,i,j]   (visible j only)
//   lse       = log(sum_j exp(s_j)),  computed as m + log(sum_j exp(s_j - m)), m = max_j s_j
//   weight    p_j = exp(s_j - lse)   (0 for invisible j)
//   out       = sum_j p_j v[b,g,j,:]
// A row with no visible key, or whose visible logits are all -inf, gives out 0, lse -inf,
// weights 0.
#ifndef SIMDATTN_TESTS_SDPA_REFERENCE_H_
#define SIMDATTN_TESTS_SDPA_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "simdattn.h"

namespace simdattn_test {

// One attention problem with every stride resolved (no zero-means-contiguous here).
struct SdpaProblem {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t batch = 0, heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, d_k = 0, d_v = 0;
  simdattn_strides q_s{}, k_s{}, v_s{};
  double scale = 0.0;  // already resolved: 1/sqrt(d_k) when the options say 0
  int causal = SIMDATTN_CAUSAL_NONE;
  const float* mask = nullptr;  // additive, kv stride 1, broadcast where a stride is 0
  simdattn_strides mask_s{};
  const int64_t* kv_lens = nullptr;  // [batch] or null
};

// The exact (float64) result for one query row, plus the magnitudes a float32 error bound needs.
struct SdpaRowResult {
  std::vector<double> out;      // [d_v]
  double lse = 0.0;             // -inf for a fully masked row
  std::vector<double> weights;  // [kv_len]
  int64_t live_keys = 0;        // visible keys with a finite logit
  // Maxima over live keys: scale * sum_t |q_t k_jt| (bounds the dot product's rounding),
  // |s_j| (bounds rounding of the scale, the mask addition and exp's argument), max_t |v_jt|.
  double max_abs_dot = 0.0;
  double max_abs_logit = 0.0;
  double max_abs_v = 0.0;
};

// Contiguous [batch, heads, seq, d] strides.
inline simdattn_strides ContiguousStrides(int64_t heads, int64_t seq, int64_t d) {
  return simdattn_strides{heads * seq * d, seq * d, d};
}

inline bool SdpaKeyVisible(const SdpaProblem& p, int64_t b, int64_t i, int64_t j) {
  const int64_t kv_len_b = p.kv_lens != nullptr ? p.kv_lens[b] : p.kv_len;
  if (j >= kv_len_b) return false;
  switch (p.causal) {
    case SIMDATTN_CAUSAL_TOP_LEFT:
      return j <= i;
    case SIMDATTN_CAUSAL_BOTTOM_RIGHT:
      return j <= i + (kv_len_b - p.q_len);
    default:
      return true;
  }
}

inline SdpaRowResult SdpaReferenceRow(const SdpaProblem& p, int64_t b, int64_t h, int64_t i) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  const int64_t kv_heads = p.kv_heads != 0 ? p.kv_heads : p.heads;
  const int64_t g = h / (p.heads / kv_heads);
  const float* q_row = p.q + b * p.q_s.batch + h * p.q_s.head + i * p.q_s.seq;

  SdpaRowResult r;
  r.out.assign(static_cast<size_t>(p.d_v), 0.0);
  r.weights.assign(static_cast<size_t>(p.kv_len), 0.0);

  std::vector<double> logit(static_cast<size_t>(p.kv_len), kNegInf);
  double max_logit = kNegInf;
  for (int64_t j = 0; j < p.kv_len; ++j) {
    if (!SdpaKeyVisible(p, b, i, j)) continue;
    const float* k_row = p.k + b * p.k_s.batch + g * p.k_s.head + j * p.k_s.seq;
    double dot = 0.0, abs_dot = 0.0;
    for (int64_t t = 0; t < p.d_k; ++t) {
      dot += static_cast<double>(q_row[t]) * k_row[t];
      abs_dot += std::fabs(static_cast<double>(q_row[t]) * k_row[t]);
    }
    double s = p.scale * dot;
    if (p.mask != nullptr) {
      s += p.mask[b * p.mask_s.batch + h * p.mask_s.head + i * p.mask_s.seq + j];
    }
    logit[j] = s;
    if (s == kNegInf) continue;
    ++r.live_keys;
    max_logit = std::max(max_logit, s);
    r.max_abs_dot = std::max(r.max_abs_dot, p.scale * abs_dot);
    r.max_abs_logit = std::max(r.max_abs_logit, std::fabs(s));
    const float* v_row = p.v + b * p.v_s.batch + g * p.v_s.head + j * p.v_s.seq;
    for (int64_t c = 0; c < p.d_v; ++c) {
      r.max_abs_v = std::max(r.max_abs_v, std::fabs(static_cast<double>(v_row[c])));
    }
  }
  if (r.live_keys == 0) {
    r.lse = kNegInf;
    return r;
  }

  double sum = 0.0;
  for (int64_t j = 0; j < p.kv_len; ++j) sum += std::exp(logit[j] - max_logit);  // exp(-inf) = 0
  r.lse = max_logit + std::log(sum);
  for (int64_t j = 0; j < p.kv_len; ++j) {
    if (logit[j] == kNegInf) continue;
    const double w = std::exp(logit[j] - r.lse);
    r.weights[j] = w;
    const float* v_row = p.v + b * p.v_s.batch + g * p.v_s.head + j * p.v_s.seq;
    for (int64_t c = 0; c < p.d_v; ++c) r.out[c] += w * v_row[c];
  }
  return r;
}

}  // namespace simdattn_test

#endif  // SIMDATTN_TESTS_SDPA_REFERENCE_H_

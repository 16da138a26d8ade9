// Plain float64 reference for scaled dot-product attention, one query row at a time, written
// straight from the contract of simdattn_sdpa in include/simdattn.h (no blocking, no online
// softmax, no SIMD) so that it can be read and trusted. Shared by the SDPA and MHSA tests.
//
// For batch b, head h, query i (the "exact semantics" comment above simdattn_sdpa):
//   kv head   g = h / (heads / kv_heads)
//   position  d_i = i for TOP_LEFT, else i + kv_len_b - q_len (NONE too: the window uses it)
//   visible   j < kv_len_b (kv_lens[b] if given, else kv_len), and
//             causal (either alignment): j <= d_i;
//             window: d_i - window_left <= j <= d_i + window_right (as differences: no overflow
//             for sides up to INT64_MAX)
//   logit     s_j = scale * sum_t q[b,h,i,t] k[b,g,j,t]
//             then softcap > 0: s_j = softcap * tanh(s_j / softcap)     (in double)
//             then ALiBi:       s_j -= alibi_slopes[h] * |j - d_i|      (exact integer distance)
//             then the mask:    s_j += mask[b,h,i,j]                    (visible j only)
//   sink      t = sinks[h] (or -inf): a term of the normaliser without a value
//   lse       = log(sum_j exp(s_j) + exp(t)),  computed as m + log(sum_j exp(s_j - m) +
//               exp(t - m)), m = max(max_j s_j, t)
//   weight    p_j = exp(s_j - lse)   (0 for invisible j)
//   out       = sum_j p_j v[b,g,j,:]
// A row with no live term (no visible key with a logit above -inf, and no sink or a -inf sink)
// gives out 0, lse -inf, weights 0.
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
  // The 0.2 variants (off by default).
  bool window = false;
  int64_t window_left = 0, window_right = 0;  // >= 0, up to INT64_MAX
  double softcap = 0.0;                       // > 0: on
  const float* alibi_slopes = nullptr;        // [heads] or null
  const float* sinks = nullptr;               // [heads] or null
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
  // The variants' magnitudes: the sink's logit (-inf for none), and over live keys the largest
  // ALiBi bias |slope * |j - d_i||.
  double sink = -std::numeric_limits<double>::infinity();
  double max_abs_bias = 0.0;
  // Terms of the normaliser: live keys plus a finite sink. 0: fully masked.
  int64_t Terms() const { return live_keys + (std::isinf(sink) ? 0 : 1); }
  // max |s| over the live keys and a finite sink (the terms the running max is taken over).
  double MaxAbsTerm() const {
    return std::max(max_abs_logit, std::isinf(sink) ? 0.0 : std::fabs(sink));
  }
};

// Contiguous [batch, heads, seq, d] strides.
inline simdattn_strides ContiguousStrides(int64_t heads, int64_t seq, int64_t d) {
  return simdattn_strides{heads * seq * d, seq * d, d};
}

inline int64_t SdpaKvLen(const SdpaProblem& p, int64_t b) {
  return p.kv_lens != nullptr ? p.kv_lens[b] : p.kv_len;
}

// d_i: the key position query i stands at.
inline int64_t SdpaQueryPos(const SdpaProblem& p, int64_t b, int64_t i) {
  return p.causal == SIMDATTN_CAUSAL_TOP_LEFT ? i : i + SdpaKvLen(p, b) - p.q_len;
}

inline bool SdpaKeyVisible(const SdpaProblem& p, int64_t b, int64_t i, int64_t j) {
  if (j >= SdpaKvLen(p, b)) return false;
  const int64_t d = SdpaQueryPos(p, b, i);  // |d - j| < 2^62: the differences cannot overflow
  if (p.causal != SIMDATTN_CAUSAL_NONE && j > d) return false;
  return !p.window || (d - j <= p.window_left && j - d <= p.window_right);
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
    if (p.softcap > 0.0) s = p.softcap * std::tanh(s / p.softcap);
    if (p.alibi_slopes != nullptr) {
      const int64_t d = SdpaQueryPos(p, b, i), dist = j > d ? j - d : d - j;
      const double bias = double{p.alibi_slopes[h]} * static_cast<double>(dist);
      s -= bias;
      r.max_abs_bias = std::max(r.max_abs_bias, std::fabs(bias));
    }
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
  if (p.sinks != nullptr) r.sink = p.sinks[h];
  max_logit = std::max(max_logit, r.sink);
  if (r.Terms() == 0) {
    r.lse = kNegInf;
    return r;
  }

  double sum = std::exp(r.sink - max_logit);  // exp(-inf) = 0
  for (int64_t j = 0; j < p.kv_len; ++j) sum += std::exp(logit[j] - max_logit);
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

// The SDPA test harness shared by test_sdpa.cc and test_sdpa_variants.cc: the fp32 error bounds
// of one query row against the float64 reference (tests/sdpa_reference.h), [batch, heads, seq, d]
// tensors in BHSD or BSHD layout with sentinel padding, one case's buffers and options (SdpaCase,
// SdpaRun), the reference comparison, and the thread-count determinism check.
#ifndef SIMDATTN_TESTS_SDPA_HARNESS_H_
#define SIMDATTN_TESTS_SDPA_HARNESS_H_

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tests/sdpa_reference.h"
#include "tests/test_util.h"

namespace simdattn_test {

constexpr double kU = kUnitRoundoff32;
constexpr float kNegInf = -kInf;
// Highway's Log: "Max Error: ULP = 4" (hwy/contrib/math/math-inl.h); one ULP <= 2u relative.
constexpr double kLogUlps = 4.0;
// The softcap's tanh (TanhRational, src/kernels/attention-inl.h): at most 4.9 ulp, measured over
// every float in [0.0004, 20] against double tanh (below 0.0004 it returns x: under 1 ulp).
constexpr double kTanhUlps = 5.0;
// Factor on the first-order bounds below. It covers a kernel whose exp and log are a little less
// accurate than Highway's documented ones (exp2 with a folded log2(e), a scalar log); every
// rounding it does is already counted without it.
constexpr double kSafety = 2.0;

// ------------------------------------------------------------------ error bounds

// The largest fp32 errors of one query row whose exact (float64) result is `r`.
struct SdpaRowBounds {
  double out = 0.0;         // absolute, each element of out
  double lse = 0.0;         // absolute
  double weight_rel = 0.0;  // relative, each weight
};

// The variants' additions to the logit error E (simdattn.h's order of operations):
//   softcap c: s' = c tanh(s / c) is 1-Lipschitz in s (its derivative sech^2 <= 1), so the dot
//     product's error passes through unchanged; s * fl(1/c) carries 2u |s| (1/c's rounding and
//     the product's), again through the 1-Lipschitz map; Tanh's kTanhUlps ulps of |tanh| <= 1
//     (one ulp <= 2u) times c, and the final product by c, u c: 2u max|s| + (2 kTanhUlps + 1) u c.
//   ALiBi: the bias slope * |j - d_i| from the exact distance, subtracted with one rounding
//     (a fused multiply-add: u |s - bias|) or as a rounded product then a rounded difference
//     (u |bias| + u |s - bias|): u max|s| + 2u max|bias|.
//   sinks: the sink t is an exact float; it joins the running max, so subtracting the max and
//     exp's folded log2(e) see |t| as well: 5u |t|, like any logit (below, through max|s|).
inline double VariantLogitError(const SdpaRowResult& r, const SdpaProblem& p) {
  double e = 0.0;
  // softcap c: tanh's kTanhUlps ulps are relative to |tanh(x)| (one ulp <= 2u), and
  // c |tanh(s / c)| <= min(c, |s|): (2 kTanhUlps + 1) u min(c, S) with the product by c.
  if (p.softcap > 0.0) {
    e += 2.0 * kU * r.max_abs_dot +
         (2.0 * kTanhUlps + 1.0) * kU * std::min(p.softcap, r.max_abs_dot);
  }
  if (p.alibi_slopes != nullptr) e += kU * r.max_abs_dot + 2.0 * kU * r.max_abs_bias;
  return e;
}

inline SdpaRowBounds BoundsFor(const SdpaRowResult& r, const SdpaProblem& p) {
  // Fully masked (no visible key and no sink): exactly 0, -inf and 0 are required.
  if (r.Terms() == 0) return {};
  // The normaliser's terms: the live keys and the sink, counted like a key below.
  const int64_t live = r.Terms();
  const int64_t exp_ulps = static_cast<int64_t>(kExpUlps);
  // E, the error of each logit s_j = scale * q.k_j + mask_j:
  //   the d_k-term dot product in any order, the product with scale, and scale's own rounding
  //   when it defaults to 1/sqrt(d_k): gamma_{d_k+2} * scale * sum_t |q_t k_jt|;
  //   adding the mask (u |s_j|), subtracting the running max (u |s_j - m| <= 2u max|s|) and a
  //   log2(e) folded into exp's argument (another 2u max|s|): 5u max|s|; and the variants'.
  const double logit = Gamma(p.d_k + 2) * r.max_abs_dot + 5.0 * kU * r.MaxAbsTerm() +
                       VariantLogitError(r, p);
  // Relative error of each weight p_j = e^{s_j} / sum_i e^{s_i}:
  //   logits off by <= E move the numerator and the normaliser by e^{+-E} each: 2E;
  //   exp's own error on the numerator and on every normaliser term: 2 * 2 kExpUlps u;
  //   online softmax: a rescale by alpha = exp(m_old - m_new) carries alpha's error and one
  //   rounding into the terms seen so far only; at worst one rescale per live key, in both the
  //   accumulator and the normaliser: 2 gamma_{live (2 kExpUlps + 1)};
  //   the normaliser's sum of live terms in any order: gamma_live; the final division: 2u.
  const double rel = 2.0 * logit + 4.0 * kExpUlps * kU + 2.0 * Gamma(live * (2 * exp_ulps + 1)) +
                     Gamma(live) + 2.0 * kU;
  SdpaRowBounds b;
  b.weight_rel = std::expm1(kSafety * rel);  // first order -> exact for a factor e^{+-rel}
  // out_c = sum_j p_j v_jc: sum_j |p'_j - p_j| |v_jc| <= weight_rel max|v|, plus the fp32 sum of
  // live products (one rounding each): gamma_{live+1} sum_j p'_j |v_jc|.
  b.out = (b.weight_rel + Gamma(live + 1) * (1.0 + b.weight_rel)) * r.max_abs_v;
  // lse = m + log(l): E (lse is 1-Lipschitz in the max-norm of the logits); the normaliser's
  // relative error (< rel) moves log(l) by < rel; log's error on log(l) in [0, log live]; and
  // the final additions, possibly in base 2 then scaled by ln 2: 3u |lse|.
  b.lse = kSafety * (logit + rel + 2.0 * kLogUlps * kU * std::log(static_cast<double>(live)) +
                     3.0 * kU * std::fabs(r.lse));
  return b;
}

// CheckNear computes |got - want|, which is NaN for two equal infinities: an lse of -inf (a
// fully masked row) is compared exactly here and then zeroed in both so CheckNear accepts it.
inline void MatchInfinities(std::vector<float>* got, Reference* ref) {
  for (size_t r = 0; r < got->size(); ++r) {
    double& want = ref->want(static_cast<int64_t>(r), 0);
    if (std::isinf(want) && double{(*got)[r]} == want) (*got)[r] = 0.0f, want = 0.0;
  }
}

// ------------------------------------------------------------------ tensors

// [batch, heads, seq, d] as the contract's `[batch, heads, seq, feature]`, or stored as
// [batch, seq, heads, d] (the BSHD layout of projections of a [batch, seq, embed] input).
enum class Layout { kBhsd, kBshd };

// A [batch, heads, seq, d] tensor in `layout` with `pad` floats after each row. Both layouts are
// `batch` matrices of heads * seq rows in a Strided buffer (row h * seq + i, or i * heads + h),
// so padding and a guard tail hold the sentinel: NaN if read as an input, checked to be
// untouched for an output.
class Tensor4 {
 public:
  Tensor4(Layout layout, int64_t batch, int64_t heads, int64_t seq, int64_t d, int64_t pad)
      : layout_(layout), heads_(heads), seq_(seq),
        buf_(batch, heads * seq, d, d + pad, heads * seq * (d + pad)) {}

  simdattn_strides strides() const {
    const int64_t p = buf_.ld();
    return layout_ == Layout::kBshd ? simdattn_strides{seq_ * heads_ * p, p, heads_ * p}
                                    : simdattn_strides{heads_ * seq_ * p, seq_ * p, p};
  }
  // What options should say: zeros (the contiguous default) when that is the layout.
  simdattn_strides option_strides() const {
    const bool contiguous = layout_ == Layout::kBhsd && buf_.ld() == buf_.cols();
    return contiguous ? simdattn_strides{0, 0, 0} : strides();
  }
  bool empty() const { return buf_.batch() * buf_.rows() * buf_.cols() == 0; }
  // NULL when the tensor has no elements (the contract allows it; this exercises it).
  float* ptr() { return empty() ? nullptr : buf_.data(); }
  const float* ptr() const { return empty() ? nullptr : buf_.data(); }
  Strided& buffer() { return buf_; }
  const Strided& buffer() const { return buf_; }

 private:
  Layout layout_;
  int64_t heads_, seq_;
  Strided buf_;
};

// Counts NaN among a buffer's elements (the sentinel is a NaN: this also finds unwritten ones).
inline int64_t CountNaN(const Strided& s) {
  int64_t n = 0;
  for (int64_t b = 0; b < s.batch(); ++b) {
    for (int64_t i = 0; i < s.rows(); ++i) {
      for (int64_t j = 0; j < s.cols(); ++j) n += std::isnan(s.at(b, i, j)) ? 1 : 0;
    }
  }
  return n;
}

// ------------------------------------------------------------------ cases

struct MaskSpec {
  bool present = false;
  bool bcast_batch = false, bcast_head = false, bcast_seq = false;  // stride 0
  double neg_inf_fraction = 0.0;   // elements set to -inf at random
  bool first_row_neg_inf = false;  // mask row 0 all -inf: query 0 fully masked
  int64_t seq_pad = 0;             // mask seq stride = kv_len + seq_pad
  // > 0: every key is -inf except j % sparse_period in {0, sparse_period - 1}, the two sides of
  // every block or split boundary at a multiple of sparse_period. Few live keys keep the error
  // bound tight, so dropping or repeating one boundary key shows.
  int64_t sparse_period = 0;
};

// The 0.2 options of a case (all off by default). slopes and sinks: [heads] when not empty.
struct VariantSpec {
  bool window = false;
  int64_t window_left = 0, window_right = 0;
  float softcap = 0.0f;
  std::vector<float> alibi_slopes, sinks;
};

struct SdpaCase {
  int64_t batch = 1, heads = 1, kv_heads = 0, q_len = 1, kv_len = 1, d_k = 16, d_v = 16;
  float scale = 0.0f;  // 0: the default 1/sqrt(d_k)
  int32_t causal = SIMDATTN_CAUSAL_NONE;
  Layout layout = Layout::kBhsd;
  int64_t in_pad = 0, out_pad = 0;  // floats after each q/k/v row, after each out row
  MaskSpec mask;
  std::vector<int64_t> kv_lens;  // empty: none
  bool lse = false, weights = false;
  float qk_range = 2.0f;  // q, k uniform in [-qk_range, qk_range): logits of a few units
  uint64_t seed = 1;
  VariantSpec var;

  int64_t KvHeads() const { return kv_heads != 0 ? kv_heads : heads; }
  std::string Describe() const {
    std::ostringstream s;
    s << "batch=" << batch << " heads=" << heads << " kv_heads=" << kv_heads
      << " q_len=" << q_len << " kv_len=" << kv_len << " d_k=" << d_k << " d_v=" << d_v
      << " scale=" << scale << " causal=" << causal
      << (layout == Layout::kBshd ? " BSHD" : " BHSD") << " in_pad=" << in_pad
      << " out_pad=" << out_pad;
    if (mask.present) {
      s << " mask(broadcast b/h/s=" << mask.bcast_batch << mask.bcast_head << mask.bcast_seq
        << " -inf=" << mask.neg_inf_fraction << (mask.first_row_neg_inf ? " row0=-inf" : "")
        << " seq_pad=" << mask.seq_pad << " sparse_period=" << mask.sparse_period << ")";
    }
    if (!kv_lens.empty()) {
      s << " kv_lens=[";
      for (const int64_t n : kv_lens) s << n << (&n == &kv_lens.back() ? "]" : ",");
    }
    s << (lse ? " lse" : "") << (weights ? " weights" : "") << " qk_range=" << qk_range
      << " seed=" << seed;
    if (var.window) s << " window=[" << var.window_left << "," << var.window_right << "]";
    if (var.softcap != 0.0f) s << " softcap=" << var.softcap;
    auto list = [&](const char* name, const std::vector<float>& x) {
      if (x.empty()) return;
      s << " " << name << "=[";
      for (const float f : x) s << f << (&f == &x.back() ? "]" : ",");
    };
    list("alibi_slopes", var.alibi_slopes);
    list("sinks", var.sinks);
    return s.str();
  }
};

// The additive mask of a case: [mb, mh, mq, kv_len] with 1 in each broadcast dimension.
inline Strided MaskBuffer(const SdpaCase& c) {
  const MaskSpec& m = c.mask;
  const int64_t mb = m.bcast_batch ? 1 : c.batch, mh = m.bcast_head ? 1 : c.heads;
  const int64_t mq = m.bcast_seq ? 1 : c.q_len, ld = c.kv_len + m.seq_pad;
  return Strided(mb, mh * mq, c.kv_len, ld, mh * mq * ld);
}

inline simdattn_strides MaskStrides(const SdpaCase& c, const Strided& mask) {
  const MaskSpec& m = c.mask;
  const int64_t mq = m.bcast_seq ? 1 : c.q_len;
  return simdattn_strides{m.bcast_batch ? 0 : mask.stride(), m.bcast_head ? 0 : mq * mask.ld(),
                          m.bcast_seq ? 0 : mask.ld()};
}

// Every buffer of one case: inputs random, outputs (and all padding) the sentinel.
class SdpaRun {
 public:
  explicit SdpaRun(const SdpaCase& c)
      : c_(c),
        q_(c.layout, c.batch, c.heads, c.q_len, c.d_k, c.in_pad),
        k_(c.layout, c.batch, c.KvHeads(), c.kv_len, c.d_k, c.in_pad),
        v_(c.layout, c.batch, c.KvHeads(), c.kv_len, c.d_v, c.in_pad),
        out_(c.layout, c.batch, c.heads, c.q_len, c.d_v, c.out_pad),
        mask_(c.mask.present ? MaskBuffer(c) : Strided(0, 0, 0, 1, 0)),
        lse_(Strided::Matrix(c.lse ? c.batch * c.heads : 0, c.q_len, c.q_len)),
        weights_(Strided::Matrix(c.weights ? c.batch * c.heads * c.q_len : 0, c.kv_len,
                                 std::max<int64_t>(1, c.kv_len))) {
    q_.buffer().Randomize(c.seed * 4 + 0, -c.qk_range, c.qk_range);
    k_.buffer().Randomize(c.seed * 4 + 1, -c.qk_range, c.qk_range);
    v_.buffer().Randomize(c.seed * 4 + 2);
    if (c.mask.present) FillMask(c.seed * 4 + 3);
  }

  const SdpaCase& spec() const { return c_; }
  const Strided& out() const { return out_.buffer(); }
  const Strided& lse() const { return lse_; }
  const Strided& weights() const { return weights_; }
  // For a test that stores K/V elsewhere (a paged cache) and writes out itself.
  Strided& mutable_k() { return k_.buffer(); }
  Strided& mutable_v() { return v_.buffer(); }
  float* mutable_out() { return out_.ptr(); }
  const float* q() const { return q_.ptr(); }

  simdattn_sdpa_options Options() {
    simdattn_sdpa_options o;
    simdattn_sdpa_options_init(&o);
    o.scale = c_.scale;
    o.causal = c_.causal;
    o.kv_heads = c_.kv_heads;
    if (HasElements(mask_)) o.mask = mask_.data(), o.mask_strides = MaskStrides(c_, mask_);
    if (!c_.kv_lens.empty()) o.kv_lens = c_.kv_lens.data();
    o.q_strides = q_.option_strides(), o.k_strides = k_.option_strides();
    o.v_strides = v_.option_strides(), o.out_strides = out_.option_strides();
    if (HasElements(lse_)) o.lse = lse_.data();
    if (HasElements(weights_)) o.weights = weights_.data();
    o.window = c_.var.window ? 1 : 0;
    o.window_left = c_.var.window_left, o.window_right = c_.var.window_right;
    o.softcap = c_.var.softcap;
    if (!c_.var.alibi_slopes.empty()) o.alibi_slopes = c_.var.alibi_slopes.data();
    if (!c_.var.sinks.empty()) o.sinks = c_.var.sinks.data();
    return o;
  }
  simdattn_status Call(const simdattn_sdpa_options* options) {
    return simdattn_sdpa(q_.ptr(), k_.ptr(), v_.ptr(), out_.ptr(), c_.batch, c_.heads, c_.q_len,
                         c_.kv_len, c_.d_k, c_.d_v, options);
  }
  simdattn_status Call() {
    const simdattn_sdpa_options o = Options();
    return Call(&o);
  }
  void ResetOutputs() {
    out_.buffer().Fill(Sentinel());
    lse_.Fill(Sentinel());
    weights_.Fill(Sentinel());
  }

  SdpaProblem Problem() const {
    SdpaProblem p;
    p.q = q_.ptr(), p.k = k_.ptr(), p.v = v_.ptr();
    p.batch = c_.batch, p.heads = c_.heads, p.kv_heads = c_.KvHeads();
    p.q_len = c_.q_len, p.kv_len = c_.kv_len, p.d_k = c_.d_k, p.d_v = c_.d_v;
    p.q_s = q_.strides(), p.k_s = k_.strides(), p.v_s = v_.strides();
    p.scale = c_.scale != 0.0f ? double{c_.scale} : 1.0 / std::sqrt(static_cast<double>(c_.d_k));
    p.causal = c_.causal;
    if (HasElements(mask_)) p.mask = mask_.data(), p.mask_s = MaskStrides(c_, mask_);
    if (!c_.kv_lens.empty()) p.kv_lens = c_.kv_lens.data();
    p.window = c_.var.window;
    p.window_left = c_.var.window_left, p.window_right = c_.var.window_right;
    p.softcap = c_.var.softcap;
    if (!c_.var.alibi_slopes.empty()) p.alibi_slopes = c_.var.alibi_slopes.data();
    if (!c_.var.sinks.empty()) p.sinks = c_.var.sinks.data();
    return p;
  }

  // Checks query rows `rows` of every (batch, head) against the reference, every output
  // element for NaN (unwritten or a bad special case) and every gap for writes.
  void Check(const std::vector<int64_t>& rows) const;

 private:
  static bool HasElements(const Strided& s) { return s.batch() * s.rows() * s.cols() > 0; }
  void FillMask(uint64_t seed);

  SdpaCase c_;
  Tensor4 q_, k_, v_, out_;
  Strided mask_, lse_, weights_;
};

inline void SdpaRun::FillMask(uint64_t seed) {
  mask_.Randomize(seed, -2.0f, 2.0f);
  std::mt19937_64 rng(seed + 1);
  std::bernoulli_distribution neg_inf(c_.mask.neg_inf_fraction);
  const int64_t rows_per_head = c_.mask.bcast_seq ? 1 : c_.q_len;
  for (int64_t b = 0; b < mask_.batch(); ++b) {
    for (int64_t r = 0; r < mask_.rows(); ++r) {
      const bool whole_row = c_.mask.first_row_neg_inf && r % rows_per_head == 0;
      for (int64_t j = 0; j < mask_.cols(); ++j) {
        const int64_t period = c_.mask.sparse_period;
        const bool off_boundary = period > 0 && j % period != 0 && j % period != period - 1;
        if (whole_row || off_boundary || neg_inf(rng)) mask_.at(b, r, j) = kNegInf;
      }
    }
  }
}

// Outputs of one call as the reference check reads them.
struct SdpaOutputs {
  const float* out = nullptr;
  simdattn_strides out_s{};
  const float* lse = nullptr;      // [batch, heads, q_len] or null
  const float* weights = nullptr;  // [batch, heads, q_len, kv_len] or null
};

inline std::string RowsText(const std::vector<int64_t>& rows, int64_t q_len) {
  if (static_cast<int64_t>(rows.size()) == q_len) return "all";
  std::ostringstream s;
  for (const int64_t i : rows) s << i << " ";
  return s.str();
}

// The largest |got - want| / bound seen by CheckAgainstReference since the last Reset (elements
// with a zero bound, which must be exact, and NaN wants are skipped): what the tests report.
struct WorstRatios {
  double out = 0.0, lse = 0.0, weights = 0.0;
  static WorstRatios& Get() {
    static WorstRatios w;
    return w;
  }
  void Reset() { *this = WorstRatios{}; }
  // Each ratio the larger of this and o's.
  void Join(const WorstRatios& o) {
    out = std::max(out, o.out), lse = std::max(lse, o.lse), weights = std::max(weights, o.weights);
  }
  static void Update(const float* got, int64_t ld, const Reference& ref, double* worst) {
    for (int64_t i = 0; i < ref.want.rows; ++i) {
      for (int64_t j = 0; j < ref.want.cols; ++j) {
        const double w = ref.want(i, j), b = ref.bound(i, j);
        if (b == 0.0 || std::isnan(w)) continue;
        *worst = std::max(*worst, std::fabs(got[i * ld + j] - w) / b);
      }
    }
  }
  std::string Text() const {
    char msg[160];
    std::snprintf(msg, sizeof(msg), "worst |error| / bound: out %.3g, lse %.3g, weights %.3g",
                  out, lse, weights);
    return msg;
  }
};

// Compares query rows `rows` of every (b, h) with SdpaReferenceRow within BoundsFor. Checked
// row r is query rows[r % rows.size()] of (b, h) = divmod(r / rows.size(), heads).
inline void CheckAgainstReference(const SdpaProblem& p, const SdpaOutputs& got,
                           const std::vector<int64_t>& rows) {
  const int64_t n = p.batch * p.heads * static_cast<int64_t>(rows.size());
  Reference out_ref(n, p.d_v), lse_ref(got.lse ? n : 0, 1);
  Reference w_ref(got.weights ? n : 0, p.kv_len);
  std::vector<float> out_got(static_cast<size_t>(n * p.d_v)), lse_got(lse_ref.want.v.size());
  std::vector<float> w_got(w_ref.want.v.size());
  int64_t r = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (const int64_t i : rows) {
        const SdpaRowResult want = SdpaReferenceRow(p, b, h, i);
        const SdpaRowBounds bound = BoundsFor(want, p);
        const float* o = got.out + b * got.out_s.batch + h * got.out_s.head + i * got.out_s.seq;
        for (int64_t c = 0; c < p.d_v; ++c) {
          out_got[static_cast<size_t>(r * p.d_v + c)] = o[c];
          out_ref.want(r, c) = want.out[static_cast<size_t>(c)];
          out_ref.bound(r, c) = bound.out;
        }
        const int64_t row = (b * p.heads + h) * p.q_len + i;  // in lse and weights
        if (got.lse) {
          lse_got[static_cast<size_t>(r)] = got.lse[row];
          lse_ref.want(r, 0) = want.lse;
          lse_ref.bound(r, 0) = bound.lse;
        }
        for (int64_t j = 0; got.weights && j < p.kv_len; ++j) {
          const double w = want.weights[static_cast<size_t>(j)];
          w_got[static_cast<size_t>(r * p.kv_len + j)] = got.weights[row * p.kv_len + j];
          w_ref.want(r, j) = w;
          // Underflow near FLT_MIN loses relative accuracy (subnormal or flushed to 0).
          w_ref.bound(r, j) = w * bound.weight_rel + 2.0 * kFloatMinNormal;
        }
        ++r;
      }
    }
  }
  INFO("checked row r = query rows[r % ", rows.size(), "] of (b, h) = divmod(r / ", rows.size(),
       ", heads); rows: ", RowsText(rows, p.q_len));
  WorstRatios& worst = WorstRatios::Get();
  CheckNear(out_got.data(), p.d_v, out_ref, "out");
  WorstRatios::Update(out_got.data(), p.d_v, out_ref, &worst.out);
  if (got.lse) {
    MatchInfinities(&lse_got, &lse_ref);
    CheckNear(lse_got.data(), 1, lse_ref, "lse");
    WorstRatios::Update(lse_got.data(), 1, lse_ref, &worst.lse);
  }
  if (got.weights) {
    CheckNear(w_got.data(), p.kv_len, w_ref, "weights");
    WorstRatios::Update(w_got.data(), p.kv_len, w_ref, &worst.weights);
  }
}

inline void SdpaRun::Check(const std::vector<int64_t>& rows) const {
  SdpaOutputs got;
  got.out = out_.buffer().data(), got.out_s = out_.strides();
  if (HasElements(lse_)) got.lse = lse_.data();
  if (HasElements(weights_)) got.weights = weights_.data();
  CheckAgainstReference(Problem(), got, rows);
  CHECK_MESSAGE(CountNaN(out_.buffer()) == 0, "NaN (or unwritten) elements in out");
  CHECK_MESSAGE(CountNaN(lse_) == 0, "NaN (or unwritten) elements in lse");
  CHECK_MESSAGE(CountNaN(weights_) == 0, "NaN (or unwritten) elements in weights");
  out_.buffer().CheckGapsUntouched("out padding and guard");
  lse_.CheckGapsUntouched("lse guard");
  weights_.CheckGapsUntouched("weights guard");
  q_.buffer().CheckGapsUntouched("q padding and guard");  // inputs are const: never written
}

// Float64 work of checking one query row (its logits, weights and output).
inline double ReferenceWorkPerRow(const SdpaCase& c) {
  return static_cast<double>(std::max<int64_t>(1, c.kv_len)) * (c.d_k + c.d_v + 2);
}
// Reference work per case: ~10 ms, which bounds the suite's time on the big sampled shapes.
constexpr double kReferenceBudget = 1e7;

// All query rows, or, when that costs more than kReferenceBudget, the first, the last and
// evenly spaced ones between (at least 2).
inline std::vector<int64_t> RowsToCheck(const SdpaCase& c) {
  const double per_row = ReferenceWorkPerRow(c) * static_cast<double>(c.batch * c.heads);
  const int64_t budget_rows =
      std::max<int64_t>(2, static_cast<int64_t>(kReferenceBudget / per_row));
  std::vector<int64_t> rows;
  if (c.q_len <= budget_rows) {
    for (int64_t i = 0; i < c.q_len; ++i) rows.push_back(i);
    return rows;
  }
  for (int64_t k = 0; k < budget_rows; ++k) rows.push_back(k * (c.q_len - 1) / (budget_rows - 1));
  return rows;
}

// Runs a case with its options and checks every output.
inline void RunAndCheck(const SdpaCase& c) {
  INFO(c.Describe());
  SdpaRun run(c);
  CheckOk(run.Call());
  run.Check(RowsToCheck(c));
}

// A mid-sized case with GQA, a mask, bottom-right causal and every output: the shape most
// features meet in, used where a test varies one feature.
inline SdpaCase Typical() {
  SdpaCase c;
  c.batch = 2, c.heads = 4, c.kv_heads = 2, c.q_len = 17, c.kv_len = 65, c.d_k = 40, c.d_v = 24;
  c.lse = c.weights = true;
  return c;
}

// Checks query i of (b, h) is exactly the fully masked result: out 0, lse -inf, weights 0.
inline void CheckFullyMasked(const SdpaRun& run, int64_t b, int64_t h, int64_t i) {
  const SdpaCase& c = run.spec();
  INFO("fully masked query ", i, " of (b, h) = (", b, ", ", h, ")");
  for (int64_t col = 0; col < c.d_v; ++col) {
    const int64_t row = c.layout == Layout::kBshd ? i * c.heads + h : h * c.q_len + i;
    CHECK(run.out().at(b, row, col) == 0.0f);
  }
  if (c.lse) CHECK(run.lse().at(0, b * c.heads + h, i) == kNegInf);
  for (int64_t j = 0; c.weights && j < c.kv_len; ++j) {
    CHECK(run.weights().at(0, (b * c.heads + h) * c.q_len + i, j) == 0.0f);
  }
}

// Runs `c` with 1, 2, 3, 7 and 16 threads and checks out and lse are bitwise identical.
inline void CheckDeterministic(const SdpaCase& c) {
  INFO(c.Describe());
  SdpaRun run(c);
  std::vector<float> first_out, first_lse;
  ForEachThreadCount({1, 2, 3, 7, 16}, [&](int32_t) {
    run.ResetOutputs();
    CheckOk(run.Call());
    if (first_out.empty()) {
      first_out = run.out().buffer(), first_lse = run.lse().buffer();
      run.Check(RowsToCheck(c));
      return;
    }
    CheckBitwiseEqual(run.out().data(), first_out.data(), first_out.size(), "out");
    CheckBitwiseEqual(run.lse().data(), first_lse.data(), first_lse.size(), "lse");
  });
  simdattn_set_num_threads(0);  // the default: every CPU this process may run on
}

}  // namespace simdattn_test

#endif  // SIMDATTN_TESTS_SDPA_HARNESS_H_

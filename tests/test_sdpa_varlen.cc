// simdattn_sdpa_varlen (ragged, token-major batches). Its numerics are simdattn_sdpa's (same
// kernel, tested against the float64 reference in test_sdpa.cc); what is tested here is that
// each sequence is the independent problem the header describes: sequence b of a varlen call is
// compared bitwise with simdattn_sdpa on that sequence alone, given as a batch of one whose K/V
// are padded to the varlen call's longest sequence with NaN rows that kv_lens hides (so the
// one-sequence call takes the same path — few keys or blocked — as the varlen call, and any
// read of a key outside its sequence turns the result into NaN). Key splits (kv >= 4096 with
// few tasks) are avoided: varlen never splits. Also: empty sequences on either side, strides,
// every 0.2 variant, LSE, determinism over thread counts, targets, and every bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <algorithm>
#include <numeric>

namespace simdattn_test {
namespace {

// A varlen problem: token-major q [tq, H, dk], k [tkv, G, dk], v [tkv, G, dv] with row strides
// (tokens) q_seq etc. >= heads * d (padding between tokens is filled with the sentinel).
struct Varlen {
  int64_t heads = 4, kv_heads = 2, d_k = 24, d_v = 20;
  std::vector<int64_t> q_lens, kv_lens, cu_q, cu_kv;
  int64_t pad = 0;  // extra floats per token row (strided layout when > 0)
  std::vector<float> q, k, v, out, lse;
  simdattn_sdpa_options o{};

  int64_t q_seq() const { return heads * d_k + pad; }
  int64_t k_seq() const { return kv_heads * d_k + pad; }
  int64_t v_seq() const { return kv_heads * d_v + pad; }
  int64_t o_seq() const { return heads * d_v + pad; }
  int64_t batch() const { return static_cast<int64_t>(q_lens.size()); }
  int64_t total_q() const { return cu_q.back(); }
  int64_t total_kv() const { return cu_kv.back(); }

  Varlen(std::vector<int64_t> ql, std::vector<int64_t> kl, int64_t padding, uint64_t seed)
      : q_lens(std::move(ql)), kv_lens(std::move(kl)), pad(padding) {
    cu_q.assign(1, 0);
    cu_kv.assign(1, 0);
    for (size_t b = 0; b < q_lens.size(); ++b) {
      cu_q.push_back(cu_q.back() + q_lens[b]);
      cu_kv.push_back(cu_kv.back() + kv_lens[b]);
    }
    q = RandomFloats(static_cast<size_t>(total_q() * q_seq()), seed);
    k = RandomFloats(static_cast<size_t>(total_kv() * k_seq()), seed + 1);
    v = RandomFloats(static_cast<size_t>(total_kv() * v_seq()), seed + 2);
    out.assign(static_cast<size_t>(total_q() * o_seq()), Sentinel());
    lse.assign(static_cast<size_t>(total_q() * heads), Sentinel());
    simdattn_sdpa_options_init(&o);
    o.kv_heads = kv_heads;
    if (pad > 0) {
      o.q_strides = {0, d_k, q_seq()};
      o.k_strides = {0, d_k, k_seq()};
      o.v_strides = {0, d_v, v_seq()};
      o.out_strides = {0, d_v, o_seq()};
    }
  }

  simdattn_status Run() {
    simdattn_sdpa_options opt = o;
    opt.lse = lse.data();
    return simdattn_sdpa_varlen(q.data(), k.data(), v.data(), out.data(), batch(), heads,
                                cu_q.data(), cu_kv.data(), d_k, d_v, &opt);
  }

  // Sequence b alone through simdattn_sdpa (batch 1, BSHD strides), K/V padded with NaN rows to
  // the longest sequence and hidden by kv_lens; checks out and lse bitwise and the padding of
  // out untouched.
  void CheckSequence(int64_t b) const {
    INFO("sequence ", b, " (q_len ", q_lens[b], ", kv_len ", kv_lens[b], ")");
    const int64_t kv_max = *std::max_element(kv_lens.begin(), kv_lens.end());
    const int64_t ql = q_lens[b];
    if (ql == 0) return;
    std::vector<float> kp(static_cast<size_t>(kv_max * k_seq()), kNaN);
    std::vector<float> vp(static_cast<size_t>(kv_max * v_seq()), kNaN);
    std::copy_n(k.begin() + cu_kv[b] * k_seq(), kv_lens[b] * k_seq(), kp.begin());
    std::copy_n(v.begin() + cu_kv[b] * v_seq(), kv_lens[b] * v_seq(), vp.begin());
    std::vector<float> want(static_cast<size_t>(ql * o_seq()), Sentinel());
    std::vector<float> want_lse(static_cast<size_t>(heads * ql));
    simdattn_sdpa_options opt = o;
    opt.q_strides = {0, d_k, q_seq()};
    opt.k_strides = {0, d_k, k_seq()};
    opt.v_strides = {0, d_v, v_seq()};
    opt.out_strides = {0, d_v, o_seq()};
    const int64_t kv_len_b = kv_lens[b];
    opt.kv_lens = &kv_len_b;
    opt.lse = want_lse.data();
    REQUIRE(simdattn_sdpa(q.data() + cu_q[b] * q_seq(), kp.data(), vp.data(), want.data(), 1,
                          heads, ql, kv_max, d_k, d_v, &opt) == SIMDATTN_OK);
    CheckBitwiseEqual(out.data() + cu_q[b] * o_seq(), want.data(), want.size(), "out");
    for (int64_t i = 0; i < ql; ++i) {  // lse: [total_q, heads] vs [1, heads, q_len]
      for (int64_t h = 0; h < heads; ++h) {
        CHECK(Bits(lse[static_cast<size_t>((cu_q[b] + i) * heads + h)]) ==
              Bits(want_lse[static_cast<size_t>(h * ql + i)]));
      }
    }
  }

  void CheckAll() const {
    for (int64_t b = 0; b < batch(); ++b) CheckSequence(b);
  }
};

TEST_CASE("varlen: each sequence equals simdattn_sdpa on it alone (lengths 0 .. 300)") {
  ForEachTarget([] {
    for (const int causal : {SIMDATTN_CAUSAL_NONE, SIMDATTN_CAUSAL_TOP_LEFT,
                             SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
      INFO("causal ", causal);
      Varlen p({1, 0, 37, 300, 5, 64, 3, 0}, {1, 7, 0, 300, 130, 64, 200, 0}, 0, 11);
      p.o.causal = causal;
      REQUIRE(p.Run() == SIMDATTN_OK);
      p.CheckAll();
    }
  });
}

TEST_CASE("varlen: few keys (every sequence <= 8 keys), GQA, strided tokens") {
  ForEachTarget([] {
    Varlen p({3, 1, 0, 9, 4}, {3, 8, 5, 2, 0}, 5, 21);
    p.o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    REQUIRE(p.Run() == SIMDATTN_OK);
    p.CheckAll();
    // Padding between token rows of out is untouched.
    for (int64_t t = 0; t < p.total_q(); ++t) {
      for (int64_t c = p.heads * p.d_v; c < p.o_seq(); ++c) {
        CHECK(Bits(p.out[static_cast<size_t>(t * p.o_seq() + c)]) == Bits(Sentinel()));
      }
    }
  });
}

TEST_CASE("varlen: window, softcap, ALiBi and sinks per sequence") {
  const float slopes[4] = {0.5f, 0.25f, -0.125f, 0.0f};
  const float sinks[4] = {0.3f, -kInf, 2.0f, -1.0f};
  Varlen p({20, 1, 150, 0, 70}, {40, 90, 150, 3, 20}, 3, 31);
  p.o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  p.o.window = 1;
  p.o.window_left = 17;
  p.o.window_right = 2;
  p.o.softcap = 1.5f;
  p.o.alibi_slopes = slopes;
  p.o.sinks = sinks;
  REQUIRE(p.Run() == SIMDATTN_OK);
  p.CheckAll();
}

TEST_CASE("varlen: d_v = 0 writes lse only; every sequence empty is OK") {
  Varlen p({5, 9}, {7, 0}, 0, 41);
  p.d_v = 0;
  p.out.clear();
  REQUIRE(simdattn_sdpa_varlen(p.q.data(), p.k.data(), nullptr, nullptr, p.batch(), p.heads,
                               p.cu_q.data(), p.cu_kv.data(), p.d_k, 0, &p.o) == SIMDATTN_OK);
  simdattn_sdpa_options o = p.o;
  o.lse = p.lse.data();
  REQUIRE(simdattn_sdpa_varlen(p.q.data(), p.k.data(), nullptr, nullptr, p.batch(), p.heads,
                               p.cu_q.data(), p.cu_kv.data(), p.d_k, 0, &o) == SIMDATTN_OK);
  for (int64_t t = 5; t < 14; ++t) {  // sequence 1 has no keys: lse -inf
    for (int64_t h = 0; h < p.heads; ++h) CHECK(p.lse[static_cast<size_t>(t * p.heads + h)] == -kInf);
  }
  for (int64_t t = 0; t < 5; ++t) CHECK(std::isfinite(p.lse[static_cast<size_t>(t * p.heads)]));
  const int64_t zeros[3] = {0, 0, 0};
  CHECK(simdattn_sdpa_varlen(nullptr, nullptr, nullptr, nullptr, 2, 4, zeros, zeros, 8, 8,
                             nullptr) == SIMDATTN_OK);
  CHECK(simdattn_sdpa_varlen(nullptr, nullptr, nullptr, nullptr, 0, 4, nullptr, nullptr, 8, 8,
                             nullptr) == SIMDATTN_OK);
}

TEST_CASE("varlen: bitwise identical for 1, 2, 3, 7 and 16 threads") {
  Varlen p({1, 200, 17, 0, 90, 2}, {1, 260, 17, 5, 400, 2}, 0, 51);
  p.o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  REQUIRE(p.Run() == SIMDATTN_OK);
  const std::vector<float> out1 = p.out, lse1 = p.lse;
  ForEachThreadCount({2, 3, 7, 16}, [&](int32_t) {
    std::fill(p.out.begin(), p.out.end(), 0.0f);
    REQUIRE(p.Run() == SIMDATTN_OK);
    CheckBitwiseEqual(p.out.data(), out1.data(), out1.size(), "out");
    CheckBitwiseEqual(p.lse.data(), lse1.data(), lse1.size(), "lse");
  });
}

}  // namespace
}  // namespace simdattn_test

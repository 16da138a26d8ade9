// simdattn_sdpa against the plain float64 reference in tests/sdpa_reference.h: sampled shapes,
// both causal alignments, broadcast additive masks, kv_lens, GQA/MQA, BSHD and padded strides,
// explicit scale, LSE and weights, huge scores, fully masked rows, empty problems, every error
// path, the two published worked examples, thread-count determinism, every compiled SIMD
// target, and L = 32768 in bounded memory.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/sdpa_harness.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <set>
#include <sstream>

namespace simdattn_test {
namespace {

// Checks a call failed with `want` and a last_error naming one of `words`: where two names are
// fair (a size or the tensor whose extent it overflows) either is accepted.
void CheckErrorNamingOneOf(simdattn_status got, simdattn_status want,
                           const std::vector<const char*>& words) {
  const std::string error = simdattn_last_error();
  const char* named = words.front();
  for (const char* w : words) {
    if (NamesWord(error, w)) {
      named = w;
      break;
    }
  }
  CheckError(got, want, named);
}

// ------------------------------------------------------------------ the sampled sweep

constexpr int64_t kSweepLens[] = {0, 1, 2, 15, 16, 17, 63, 64, 65, 200, 1000};
constexpr int64_t kSweepDims[] = {1, 3, 16, 64, 80, 128, 256};
constexpr int64_t kSweepMaxBatch = 4, kSweepMaxHeads = 8;
constexpr int kSweepCases = 4 * static_cast<int>(std::size(kSweepLens));
constexpr uint64_t kSweepSeed = 20240611;
// Multiply-adds the library may spend on one sweep case: 4 * 8 heads of 1000 x 1000 x 512
// would take seconds on 2 cores, so such cases drop to batch 1 and fewer heads.
constexpr double kSweepMaxMacs = 2e9;
// weights are materialised only up to this many floats (a 4 x 8 x 1000 x 1000 one is 128 MiB).
constexpr int64_t kSweepMaxWeights = 1 << 21;

// Each size list walked in a fresh seeded shuffle per pass, so every value occurs; the other
// features drawn from the same generator.
std::vector<SdpaCase> SweepCases() {
  std::mt19937_64 rng(kSweepSeed);
  std::vector<int64_t> q_order, kv_order, dk_order, dv_order;
  auto next = [&](std::vector<int64_t>* order, auto const& values) {
    if (order->empty()) {
      order->assign(std::begin(values), std::end(values));
      std::shuffle(order->begin(), order->end(), rng);
    }
    const int64_t v = order->back();
    order->pop_back();
    return v;
  };
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  std::vector<SdpaCase> cases;
  for (int n = 0; n < kSweepCases; ++n) {
    SdpaCase c;
    c.q_len = next(&q_order, kSweepLens), c.kv_len = next(&kv_order, kSweepLens);
    c.d_k = next(&dk_order, kSweepDims), c.d_v = next(&dv_order, kSweepDims);
    if (c.d_v == c.d_k) std::swap(c.d_v, dv_order.empty() ? c.d_v : dv_order.back());
    if (c.d_v == c.d_k) c.d_v = c.d_k == 16 ? 3 : 16;  // the swap had nothing to swap with
    c.batch = 1 + static_cast<int64_t>(rng() % kSweepMaxBatch);
    c.heads = 1 + static_cast<int64_t>(rng() % kSweepMaxHeads);
    const double macs = static_cast<double>(c.batch * c.heads * c.q_len) *
                        static_cast<double>(c.kv_len * (c.d_k + c.d_v));
    if (macs > kSweepMaxMacs) c.batch = 1, c.heads = std::min<int64_t>(c.heads, 2);
    std::vector<int64_t> divisors;
    for (int64_t g = 1; g <= c.heads; ++g) {
      if (c.heads % g == 0) divisors.push_back(g);
    }
    c.kv_heads = chance(50) ? divisors[rng() % divisors.size()] : 0;
    c.causal = n % 3;
    c.mask.present = chance(50);
    c.mask.bcast_batch = chance(50), c.mask.bcast_head = chance(50), c.mask.bcast_seq = chance(50);
    c.mask.neg_inf_fraction = chance(50) ? 0.2 : 0.0;
    c.mask.first_row_neg_inf = chance(25);
    c.mask.seq_pad = chance(50) ? 3 : 0;
    if (chance(35)) {
      for (int64_t b = 0; b < c.batch; ++b) {
        const int64_t pick[] = {0, c.kv_len, static_cast<int64_t>(rng() % (c.kv_len + 1))};
        c.kv_lens.push_back(pick[rng() % 3]);
      }
    }
    const int layout = static_cast<int>(rng() % 3);
    if (layout == 1) c.in_pad = 1, c.out_pad = 2;
    if (layout == 2) c.layout = Layout::kBshd, c.out_pad = 3;
    if (chance(30)) c.scale = 0.05f + 0.5f * static_cast<float>(rng() % 1000) / 1000.0f;
    c.lse = chance(50);
    c.weights = chance(50) && c.batch * c.heads * c.q_len * c.kv_len <= kSweepMaxWeights;
    c.seed = static_cast<uint64_t>(n) + 1;
    cases.push_back(c);
  }
  return cases;
}

template <class Values, class Get>
void CheckCovers(const std::vector<SdpaCase>& cases, const Values& values, Get get,
                 const char* what) {
  std::set<int64_t> seen;
  for (const SdpaCase& c : cases) seen.insert(get(c));
  for (const int64_t v : values) {
    CHECK_MESSAGE(seen.count(v) == 1, "sweep never uses ", std::string(what), " = ", v);
  }
}

TEST_CASE("sdpa: sampled shapes match the float64 reference") {
  const std::vector<SdpaCase> cases = SweepCases();
  const int64_t batches[] = {1, 2, 3, 4}, heads[] = {1, 2, 3, 4, 5, 6, 7, 8}, modes[] = {0, 1, 2};
  CheckCovers(cases, kSweepLens, [](const SdpaCase& c) { return c.q_len; }, "q_len");
  CheckCovers(cases, kSweepLens, [](const SdpaCase& c) { return c.kv_len; }, "kv_len");
  CheckCovers(cases, kSweepDims, [](const SdpaCase& c) { return c.d_k; }, "d_k");
  CheckCovers(cases, kSweepDims, [](const SdpaCase& c) { return c.d_v; }, "d_v");
  CheckCovers(cases, batches, [](const SdpaCase& c) { return c.batch; }, "batch");
  CheckCovers(cases, heads, [](const SdpaCase& c) { return c.heads; }, "heads");
  CheckCovers(cases, modes, [](const SdpaCase& c) { return c.causal; }, "causal");
  for (const SdpaCase& c : cases) {
    CHECK(c.d_k != c.d_v);
    RunAndCheck(c);
  }
}

// ------------------------------------------------------------------ one feature at a time

TEST_CASE("sdpa reference: causal visibility follows the header's two alignments") {
  // q_len 2, kv_len 4. TOP_LEFT: query i sees keys j <= i. BOTTOM_RIGHT: j <= i + (4 - 2).
  SdpaProblem p;
  p.q_len = 2, p.kv_len = 4;
  const bool top_left[2][4] = {{1, 0, 0, 0}, {1, 1, 0, 0}};
  const bool bottom_right[2][4] = {{1, 1, 1, 0}, {1, 1, 1, 1}};
  const int64_t kv_lens[1] = {1};  // kv_len_b = 1: BOTTOM_RIGHT then needs j <= i - 1, j < 1
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      p.causal = SIMDATTN_CAUSAL_TOP_LEFT, p.kv_lens = nullptr;
      CHECK(SdpaKeyVisible(p, 0, i, j) == top_left[i][j]);
      p.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
      CHECK(SdpaKeyVisible(p, 0, i, j) == bottom_right[i][j]);
      p.kv_lens = kv_lens;
      CHECK(SdpaKeyVisible(p, 0, i, j) == (i == 1 && j == 0));
    }
  }
}

TEST_CASE("sdpa: causal top-left and bottom-right with q_len <, = and > kv_len") {
  const int64_t shapes[][2] = {{5, 17}, {17, 5}, {16, 16}, {1, 64}, {64, 1}, {33, 100}, {100, 33}};
  for (const int32_t causal : {SIMDATTN_CAUSAL_TOP_LEFT, SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
    for (const auto& shape : shapes) {
      SdpaCase c = Typical();
      c.causal = causal, c.q_len = shape[0], c.kv_len = shape[1];
      RunAndCheck(c);
      c.kv_lens = {shape[1], shape[1] / 2};  // bottom-right aligns to kv_lens[b]
      RunAndCheck(c);
    }
  }
}

// kv_len up to one vector (16 on AVX-512, 8 on AVX2, 4 on SSE4) takes the few-keys path
// (keys as lanes): every kv_len around those widths with each feature it handles.
TEST_CASE("sdpa: few keys (kv_len <= one vector) with causal, masks, kv_lens, GQA, BSHD") {
  for (const int64_t kv_len : {1, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17}) {
    for (const int64_t q_len : {1, 6, 10}) {
      SdpaCase c = Typical();
      c.batch = 3, c.heads = 4, c.kv_heads = 2, c.q_len = q_len, c.kv_len = kv_len;
      c.d_k = 64, c.d_v = q_len == 6 ? 40 : 72;  // 72: four whole AVX-512 vectors and a tail
      c.causal = static_cast<int32_t>((kv_len + q_len) % 3);
      c.layout = kv_len % 2 ? Layout::kBshd : Layout::kBhsd;
      c.mask.present = q_len != 6;
      c.mask.neg_inf_fraction = 0.2, c.mask.first_row_neg_inf = kv_len % 3 == 0;
      c.kv_lens = {kv_len, 0, kv_len / 2};
      c.lse = true, c.weights = q_len != 10;
      CAPTURE(c.Describe());
      RunAndCheck(c);
    }
  }
}

TEST_CASE("sdpa: additive masks broadcast in every dimension, with -inf entries") {
  for (int bits = 0; bits < 8; ++bits) {
    for (const int64_t seq_pad : {0, 3}) {
      SdpaCase c = Typical();
      c.q_len = 9, c.kv_len = 21;
      c.mask.present = true;
      c.mask.bcast_batch = bits & 1, c.mask.bcast_head = bits & 2, c.mask.bcast_seq = bits & 4;
      c.mask.neg_inf_fraction = 0.3, c.mask.seq_pad = seq_pad;
      RunAndCheck(c);
      c.causal = SIMDATTN_CAUSAL_TOP_LEFT, c.mask.first_row_neg_inf = true;
      RunAndCheck(c);
    }
  }
}

TEST_CASE("sdpa: kv_lens including 0 and kv_len") {
  for (const int32_t causal : {SIMDATTN_CAUSAL_NONE, SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
    SdpaCase c = Typical();
    c.batch = 5, c.causal = causal;
    c.kv_lens = {0, c.kv_len, 1, 16, 33};
    RunAndCheck(c);
  }
}

TEST_CASE("sdpa: GQA (kv_heads 2, 4) and MQA (kv_heads 1) with 8 heads") {
  for (const int64_t kv_heads : {1, 2, 4, 8, 0}) {
    SdpaCase c = Typical();
    c.heads = 8, c.kv_heads = kv_heads;
    RunAndCheck(c);
    c.q_len = 1, c.kv_len = 300;  // decode
    RunAndCheck(c);
  }
}

TEST_CASE("sdpa: BSHD strides and padded rows, padding untouched") {
  for (const Layout layout : {Layout::kBhsd, Layout::kBshd}) {
    for (const int64_t in_pad : {0, 5}) {
      for (const int64_t out_pad : {0, 3}) {
        SdpaCase c = Typical();
        c.layout = layout, c.in_pad = in_pad, c.out_pad = out_pad;
        RunAndCheck(c);
      }
    }
  }
}

// Strided K/V (BSHD, or padded rows) that several column blocks of a (batch, kv head) share are
// copied once per pair to contiguous rows (PacksPairs, src/ops/sdpa.cc): 3 column blocks of 64
// per pair, 18 pairs' blocks (enough not to split the keys); every feature through that path,
// and the same bits for any thread count (the column blocks a task takes depend on it).
TEST_CASE("sdpa: strided K/V shared by several column blocks (a copy per batch and kv head)") {
  SdpaCase c;
  c.batch = 3, c.heads = 8, c.kv_heads = 2, c.q_len = 40, c.kv_len = 300, c.d_k = 48, c.d_v = 40;
  c.layout = Layout::kBshd, c.out_pad = 3;
  c.kv_lens = {300, 0, 77};
  c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT, c.lse = true;
  RunAndCheck(c);
  CheckDeterministic(c);
  SdpaCase w = c;  // weights, a mask, padded rows of BHSD
  w.layout = Layout::kBhsd, w.in_pad = 2, w.weights = true;
  w.mask.present = true, w.mask.neg_inf_fraction = 0.1;
  RunAndCheck(w);
  SdpaCase v = c;  // the 0.2 variants
  v.causal = SIMDATTN_CAUSAL_NONE;
  v.var.window = true, v.var.window_left = 50, v.var.window_right = 7;
  v.var.softcap = 2.5f;
  v.var.alibi_slopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.01f, 0.0f, -0.1f};
  v.var.sinks = {0.5f, -kInf, 2.0f, -1.0f, 0.0f, 1.0f, 3.0f, -3.0f};
  RunAndCheck(v);
  SdpaCase e = c;  // no values
  e.d_v = 0;
  RunAndCheck(e);
}

TEST_CASE("sdpa: explicit scale") {
  for (const float scale : {0.01f, 0.37f, 1.0f, 3.0f}) {
    SdpaCase c = Typical();
    c.scale = scale;
    RunAndCheck(c);
  }
}

TEST_CASE("sdpa: lse and weights outputs, alone and together") {
  for (const bool lse : {false, true}) {
    for (const bool weights : {false, true}) {
      SdpaCase c = Typical();
      c.q_len = 33, c.kv_len = 70, c.lse = lse, c.weights = weights;
      c.causal = SIMDATTN_CAUSAL_TOP_LEFT;
      RunAndCheck(c);
    }
  }
}

TEST_CASE("sdpa: scores around +-1e4 stay finite and match (a naive softmax overflows)") {
  // q, k in [-150, 150) with scale 1/sqrt(d_k): logits have a spread of ~150^2 / 3 = 7500, so
  // exp() of an un-shifted score overflows to inf and the result would be NaN.
  for (const int64_t d_k : {16, 64}) {
    SdpaCase c = Typical();
    c.d_k = d_k, c.qk_range = 150.0f;
    RunAndCheck(c);
    c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT, c.mask.present = true, c.mask.neg_inf_fraction = 0.2;
    RunAndCheck(c);
    c.q_len = 1, c.kv_len = 2000;  // decode: the split-kv merge sees the huge maxima too
    RunAndCheck(c);
  }
}

TEST_CASE("sdpa: decode with a long kv_len (split into key ranges and merged)") {
  SdpaCase c;
  c.batch = 3, c.heads = 8, c.kv_heads = 2, c.q_len = 1, c.kv_len = 8192, c.d_k = c.d_v = 64;
  c.lse = true;
  c.kv_lens = {8192, 100, 4097};  // a range past kv_lens[1] has no key; 4096 starts a range
  SUBCASE("dense") { RunAndCheck(c); }
  SUBCASE("only keys at the two sides of every multiple of 64 live") {
    c.mask.present = true, c.mask.sparse_period = 64;
    RunAndCheck(c);
    c.q_len = 3, c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    RunAndCheck(c);
  }
  SUBCASE("huge scores: the merge sees maxima far apart") {
    c.kv_len = 5000, c.kv_lens = {0, 5000, 2049}, c.qk_range = 150.0f;
    RunAndCheck(c);
  }
}

TEST_CASE("sdpa: fully masked rows give out 0, lse -inf, weights 0, never NaN") {
  SUBCASE("by a mask row of -inf") {
    SdpaCase c = Typical();
    c.mask.present = c.mask.first_row_neg_inf = true;
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    CheckFullyMasked(run, 1, 3, 0);
  }
  SUBCASE("by bottom-right causal with kv_len < q_len") {
    SdpaCase c = Typical();
    c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT, c.q_len = 30, c.kv_len = 20;  // rows < 10 see none
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    CheckFullyMasked(run, 0, 0, 9);
    CheckFullyMasked(run, 1, 2, 0);
  }
  SUBCASE("by kv_lens[b] = 0") {
    SdpaCase c = Typical();
    c.kv_lens = {c.kv_len, 0};
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    CheckFullyMasked(run, 1, 0, 0);
    CheckFullyMasked(run, 1, 3, c.q_len - 1);
  }
  SUBCASE("by kv_len = 0 (k, v NULL)") {
    SdpaCase c = Typical();
    c.kv_len = 0;
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    CheckFullyMasked(run, 1, 3, c.q_len - 1);
  }
  SUBCASE("a mask of all -inf with huge scores") {
    SdpaCase c = Typical();
    c.mask.present = true, c.mask.neg_inf_fraction = 1.0, c.qk_range = 150.0f;
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    CheckFullyMasked(run, 0, 1, 5);
  }
}

TEST_CASE("sdpa: d_v = 0 writes lse and weights (out, v NULL)") {
  SdpaCase c = Typical();
  c.d_v = 0, c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  RunAndCheck(c);
}

TEST_CASE("sdpa: options NULL means the defaults; options_init fills struct_size and zeros") {
  simdattn_sdpa_options o;
  std::memset(&o, 0xAB, sizeof(o));
  simdattn_sdpa_options_init(&o);
  CHECK(o.struct_size == sizeof(simdattn_sdpa_options));
  CHECK(o.scale == 0.0f);
  CHECK(o.causal == 0);
  CHECK(o.kv_heads == 0);
  CHECK(o.mask == nullptr);
  CHECK(o.kv_lens == nullptr);
  CHECK(o.lse == nullptr);
  CHECK(o.weights == nullptr);
  for (const simdattn_strides& s : {o.mask_strides, o.q_strides, o.k_strides, o.v_strides,
                                    o.out_strides}) {
    CHECK((s.batch == 0 && s.head == 0 && s.seq == 0));
  }

  SdpaCase c;
  c.batch = 2, c.heads = 3, c.q_len = 13, c.kv_len = 29, c.d_k = 24, c.d_v = 20;
  SdpaRun with_null(c), with_init(c);
  CheckOk(with_null.Call(nullptr));
  CheckOk(with_init.Call());
  with_null.Check(RowsToCheck(c));
  CheckBitwiseEqual(with_null.out().data(), with_init.out().data(), with_init.out().buffer().size(),
                    "out with options NULL vs options_init");

  // A caller built against a later, larger version of the struct (struct_size lets it grow).
  struct Grown {
    simdattn_sdpa_options o;
    int64_t later_field;
  } grown;
  SdpaRun with_grown(c);
  grown.o = with_grown.Options();
  grown.o.struct_size = sizeof(Grown);
  grown.later_field = 0;
  CheckOk(with_grown.Call(&grown.o));
  CheckBitwiseEqual(with_grown.out().data(), with_init.out().data(),
                    with_init.out().buffer().size(), "out with a larger struct_size");
}

// ------------------------------------------------------------------ empty problems and errors

// A valid call (GQA, mask, kv_lens, lse and weights) whose buffers share one storage vector,
// so "nothing was written" is one bitwise comparison. Each error case breaks one argument.
struct ValidCall {
  static constexpr int64_t kBatch = 2, kHeads = 4, kKvHeads = 2, kQLen = 5, kKvLen = 7;
  static constexpr int64_t kDk = 8, kDv = 6;
  // Offsets in storage: q, k, v, mask (broadcast over batch and heads), out, lse, weights.
  static constexpr int64_t kQ = 0, kK = kQ + kBatch * kHeads * kQLen * kDk;
  static constexpr int64_t kV = kK + kBatch * kKvHeads * kKvLen * kDk;
  static constexpr int64_t kMask = kV + kBatch * kKvHeads * kKvLen * kDv;
  static constexpr int64_t kOut = kMask + kQLen * kKvLen;
  static constexpr int64_t kLse = kOut + kBatch * kHeads * kQLen * kDv;
  static constexpr int64_t kWeights = kLse + kBatch * kHeads * kQLen;
  static constexpr int64_t kEnd = kWeights + kBatch * kHeads * kQLen * kKvLen;

  std::vector<float> storage;
  int64_t kv_lens[kBatch] = {kKvLen, 3};
  const float *q, *k, *v;
  float* out;
  int64_t batch = kBatch, heads = kHeads, q_len = kQLen, kv_len = kKvLen, d_k = kDk, d_v = kDv;
  simdattn_sdpa_options options;

  ValidCall() : storage(RandomFloats(kEnd, 7)) {
    std::fill(storage.begin() + kOut, storage.end(), Sentinel());
    q = at(kQ), k = at(kK), v = at(kV), out = at(kOut);
    simdattn_sdpa_options_init(&options);
    options.kv_heads = kKvHeads;
    options.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    options.mask = at(kMask);
    options.mask_strides = {0, 0, kKvLen};
    options.kv_lens = kv_lens;
    options.lse = at(kLse);
    options.weights = at(kWeights);
  }
  float* at(int64_t offset) { return storage.data() + offset; }
  simdattn_status Call() const {
    return simdattn_sdpa(q, k, v, out, batch, heads, q_len, kv_len, d_k, d_v, &options);
  }
};

TEST_CASE("sdpa: the valid call of the error tests succeeds") {
  ValidCall call;
  CheckOk(call.Call());
  CHECK(!std::isnan(call.storage[ValidCall::kOut]));
}

struct BadCall {
  const char* what;
  std::function<void(ValidCall&)> mutate;
  simdattn_status status;
  std::vector<const char*> names;  // last_error must name one of these
};

constexpr int64_t kHuge = int64_t{1} << 60;

const BadCall kBadCalls[] = {
    // Negative sizes and strides, inconsistent kv_heads and kv_lens.
    {"batch < 0", [](ValidCall& c) { c.batch = -1; }, SIMDATTN_ERR_BAD_SHAPE, {"batch"}},
    {"heads < 0", [](ValidCall& c) { c.heads = -4; }, SIMDATTN_ERR_BAD_SHAPE, {"heads"}},
    {"q_len < 0", [](ValidCall& c) { c.q_len = -1; }, SIMDATTN_ERR_BAD_SHAPE, {"q_len"}},
    {"kv_len < 0", [](ValidCall& c) { c.kv_len = -1; }, SIMDATTN_ERR_BAD_SHAPE, {"kv_len"}},
    {"d_k < 0", [](ValidCall& c) { c.d_k = -8; }, SIMDATTN_ERR_BAD_SHAPE, {"d_k"}},
    {"d_k = 0", [](ValidCall& c) { c.d_k = 0; }, SIMDATTN_ERR_BAD_SHAPE, {"d_k"}},
    {"d_v < 0", [](ValidCall& c) { c.d_v = -1; }, SIMDATTN_ERR_BAD_SHAPE, {"d_v"}},
    // Contiguous strides are q {160, 40, 8}, k {112, 56, 8}, v {84, 42, 6}, out {120, 30, 6}.
    {"q_strides.seq < 0", [](ValidCall& c) { c.options.q_strides = {160, 40, -8}; },
     SIMDATTN_ERR_BAD_SHAPE, {"q_strides", "q"}},
    {"k_strides.head < 0", [](ValidCall& c) { c.options.k_strides = {112, -56, 8}; },
     SIMDATTN_ERR_BAD_SHAPE, {"k_strides", "k"}},
    {"v_strides.batch < 0", [](ValidCall& c) { c.options.v_strides = {-84, 42, 6}; },
     SIMDATTN_ERR_BAD_SHAPE, {"v_strides", "v"}},
    {"out_strides.batch < 0", [](ValidCall& c) { c.options.out_strides = {-120, 30, 6}; },
     SIMDATTN_ERR_BAD_SHAPE, {"out_strides", "out"}},
    {"mask_strides.seq < 0", [](ValidCall& c) { c.options.mask_strides = {0, 0, -7}; },
     SIMDATTN_ERR_BAD_SHAPE, {"mask_strides", "mask"}},
    {"kv_heads < 0", [](ValidCall& c) { c.options.kv_heads = -2; }, SIMDATTN_ERR_BAD_SHAPE,
     {"kv_heads"}},
    {"kv_heads = 3 does not divide heads = 4", [](ValidCall& c) { c.options.kv_heads = 3; },
     SIMDATTN_ERR_BAD_SHAPE, {"kv_heads", "heads"}},
    {"kv_heads = 8 > heads = 4", [](ValidCall& c) { c.options.kv_heads = 8; },
     SIMDATTN_ERR_BAD_SHAPE, {"kv_heads", "heads"}},
    {"kv_lens[1] < 0", [](ValidCall& c) { c.kv_lens[1] = -1; }, SIMDATTN_ERR_BAD_SHAPE,
     {"kv_lens"}},
    {"kv_lens[1] > kv_len", [](ValidCall& c) { c.kv_lens[1] = ValidCall::kKvLen + 1; },
     SIMDATTN_ERR_BAD_SHAPE, {"kv_lens"}},
    // Element counts or byte extents beyond int64.
    {"batch * heads * q_len * d_k overflows", [](ValidCall& c) { c.batch = kHuge; },
     SIMDATTN_ERR_BAD_SHAPE, {"batch", "q", "out"}},
    {"heads overflows", [](ValidCall& c) { c.heads = kHuge, c.options.kv_heads = 2; },
     SIMDATTN_ERR_BAD_SHAPE, {"heads", "q", "out"}},
    {"q_len overflows", [](ValidCall& c) { c.q_len = kHuge; }, SIMDATTN_ERR_BAD_SHAPE,
     {"q_len", "q", "out"}},
    {"kv_len overflows", [](ValidCall& c) { c.kv_len = kHuge; }, SIMDATTN_ERR_BAD_SHAPE,
     {"kv_len", "k", "v", "mask"}},
    {"d_k overflows", [](ValidCall& c) { c.d_k = kHuge; }, SIMDATTN_ERR_BAD_SHAPE,
     {"d_k", "q", "k"}},
    {"d_v overflows", [](ValidCall& c) { c.d_v = kHuge; }, SIMDATTN_ERR_BAD_SHAPE,
     {"d_v", "v", "out"}},
    {"q_strides.batch's byte extent overflows",
     [](ValidCall& c) { c.options.q_strides = {INT64_MAX / 2, 40, 8}; }, SIMDATTN_ERR_BAD_SHAPE,
     {"q_strides", "q"}},
    // Flags and scalars out of range.
    {"struct_size 8", [](ValidCall& c) { c.options.struct_size = 8; },
     SIMDATTN_ERR_BAD_ARGUMENT, {"struct_size"}},
    {"struct_size 0", [](ValidCall& c) { c.options.struct_size = 0; },
     SIMDATTN_ERR_BAD_ARGUMENT, {"struct_size"}},
    {"causal 3", [](ValidCall& c) { c.options.causal = 3; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"causal"}},
    {"causal -1", [](ValidCall& c) { c.options.causal = -1; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"causal"}},
    {"scale NaN", [](ValidCall& c) { c.options.scale = kNaN; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"scale"}},
    {"scale +inf", [](ValidCall& c) { c.options.scale = kInf; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"scale"}},
    {"scale -inf", [](ValidCall& c) { c.options.scale = kNegInf; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"scale"}},
    {"scale < 0", [](ValidCall& c) { c.options.scale = -0.5f; }, SIMDATTN_ERR_BAD_ARGUMENT,
     {"scale"}},
    // Forbidden aliasing.
    {"out overlaps q", [](ValidCall& c) { c.out = c.at(ValidCall::kQ + 3); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"out", "q"}},
    {"out overlaps k", [](ValidCall& c) { c.out = c.at(ValidCall::kK + 100); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"out", "k"}},
    {"out overlaps v", [](ValidCall& c) { c.out = c.at(ValidCall::kV - 10); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"out", "v"}},
    {"out overlaps lse", [](ValidCall& c) { c.out = c.at(ValidCall::kLse - 200); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"out", "lse"}},
    {"out overlaps weights", [](ValidCall& c) { c.out = c.at(ValidCall::kWeights + 17); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"out", "weights"}},
    {"lse overlaps weights", [](ValidCall& c) { c.options.lse = c.at(ValidCall::kWeights + 1); },
     SIMDATTN_ERR_BAD_ARGUMENT, {"lse", "weights"}},
    // NULL buffers with elements.
    {"q NULL", [](ValidCall& c) { c.q = nullptr; }, SIMDATTN_ERR_NULL_POINTER, {"q"}},
    {"k NULL", [](ValidCall& c) { c.k = nullptr; }, SIMDATTN_ERR_NULL_POINTER, {"k"}},
    {"v NULL", [](ValidCall& c) { c.v = nullptr; }, SIMDATTN_ERR_NULL_POINTER, {"v"}},
    {"out NULL", [](ValidCall& c) { c.out = nullptr; }, SIMDATTN_ERR_NULL_POINTER, {"out"}},
};

TEST_CASE("sdpa: each invalid argument fails with its status, a message, nothing written") {
  for (const BadCall& bad : kBadCalls) {
    INFO(std::string(bad.what));
    ValidCall call;
    bad.mutate(call);
    const std::vector<float> before = call.storage;
    const int64_t kv_lens_before[ValidCall::kBatch] = {call.kv_lens[0], call.kv_lens[1]};
    CheckErrorNamingOneOf(call.Call(), bad.status, bad.names);
    CheckBitwiseEqual(call.storage.data(), before.data(), before.size(), "storage");
    CHECK(call.kv_lens[0] == kv_lens_before[0]);
    CHECK(call.kv_lens[1] == kv_lens_before[1]);
    // The next successful call clears the message.
    CheckOk(ValidCall().Call());
  }
}

TEST_CASE("sdpa: batch, heads or q_len = 0 is OK and touches nothing (NULL allowed)") {
  const std::function<void(ValidCall&)> empties[] = {
      [](ValidCall& c) { c.batch = 0; },
      [](ValidCall& c) { c.heads = 0; },
      [](ValidCall& c) { c.q_len = 0; },
  };
  for (const auto& empty : empties) {
    ValidCall call;
    empty(call);
    const std::vector<float> before = call.storage;
    CheckOk(call.Call());
    CheckBitwiseEqual(call.storage.data(), before.data(), before.size(), "storage");
    // The same with every buffer NULL and options NULL.
    call.q = call.k = call.v = call.out = nullptr;
    CheckOk(simdattn_sdpa(call.q, call.k, call.v, call.out, call.batch, call.heads, call.q_len,
                          call.kv_len, call.d_k, call.d_v, nullptr));
  }
}

TEST_CASE("sdpa: d_k < 1 is BAD_SHAPE even when the problem is empty") {
  for (const int64_t d_k : {0, -1}) {
    CheckError(simdattn_sdpa(nullptr, nullptr, nullptr, nullptr, 0, 4, 5, 7, d_k, 6, nullptr),
               SIMDATTN_ERR_BAD_SHAPE, "d_k");
    CheckError(simdattn_sdpa(nullptr, nullptr, nullptr, nullptr, 2, 4, 0, 0, d_k, 0, nullptr),
               SIMDATTN_ERR_BAD_SHAPE, "d_k");
  }
}

// ------------------------------------------------------------------ the published examples

// Single batch, single head, scale 1/sqrt(d): the inputs of two worked examples published with
// the issue, their printed outputs (wrong), and the true outputs computed by hand below.
struct WorkedExample {
  int64_t d;
  std::vector<float> q, k, v;     // 2 x d each
  std::vector<double> truth;      // 2 x d, from the hand computation
  std::vector<double> published;  // 2 x d, as printed: wrong
};

// Example 1, d = 3, scale 1/sqrt(3) = 0.577350:
//   q0.k0 = .07 + .16 + .27 = .50, q0.k1 = .02 + .06 + .12 = .20 -> logits .288675, .115470;
//   p(k0) = 1 / (1 + e^-.173205) = 1 / 1.840965 = .543193; out0 = v1 + p(k0) (v0 - v1)
//   = [.1 .2 .3] + .543193 * .4 = [.317277 .417277 .517277].
//   q1.k0 = .28 + .40 + .54 = 1.22, q1.k1 = .08 + .15 + .24 = .47 -> difference .75 / sqrt(3)
//   = .433013; p(k0) = 1 / (1 + .648552) = .606593; out1 = [.342637 .442637 .542637].
// Published: [[.378 .421 .463], [.152 .175 .200]]. Impossible: v0 - v1 = [.4 .4 .4], so every
// convex combination of v's rows is [a, a + .1, a + .2] with a in [.1, .5]; the printed rows step
// by ~.04 and ~.02 between columns.
// Example 2, d = 2, scale 1/sqrt(2): q0.k0 = 17, q0.k1 = 23 -> difference 6 / sqrt(2) = 4.242641,
//   p(k1) = 1 / (1 + e^-4.242641) = 1 / 1.014370 = .985834; out0 = [9 10] + .985834 * [2 2]
//   = [10.971668 11.971668]. q1.k0 = 39, q1.k1 = 53 -> 14 / sqrt(2) = 9.899495,
//   p(k1) = 1 / (1 + 5.0200e-5) = .999950; out1 = [10.999900 11.999900].
// Published: [[9.5 10.5], [11.5 12.5]]. Impossible: outputs lie between v0 = [9 10] and
// v1 = [11 12], so 11.5 is out of range; and 9.5 would put weight .25 on k1 although k1 has the
// larger logit (it must get more than .5).
const WorkedExample kWorkedExamples[] = {
    {3,
     {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f},
     {0.7f, 0.8f, 0.9f, 0.2f, 0.3f, 0.4f},
     {0.5f, 0.6f, 0.7f, 0.1f, 0.2f, 0.3f},
     {0.317277, 0.417277, 0.517277, 0.342637, 0.442637, 0.542637},
     {0.378, 0.421, 0.463, 0.152, 0.175, 0.200}},
    {2,
     {1, 2, 3, 4},
     {5, 6, 7, 8},
     {9, 10, 11, 12},
     {10.971668, 11.971668, 10.999900, 11.999900},
     {9.5, 10.5, 11.5, 12.5}},
};
// The hand computation keeps 6 significant digits: the reference must agree to 1e-4.
constexpr double kHandTolerance = 1e-4;
// Every published row is at least this far (max over the row) from the true one: 0.061 is the
// closest (example 1, row 0, column 0).
constexpr double kPublishedDistance = 0.05;

TEST_CASE("sdpa: the published worked examples (their printed outputs are wrong)") {
  for (const WorkedExample& ex : kWorkedExamples) {
    INFO("d = ", ex.d);
    SdpaProblem p;
    p.q = ex.q.data(), p.k = ex.k.data(), p.v = ex.v.data();
    p.batch = p.heads = p.kv_heads = 1, p.q_len = p.kv_len = 2, p.d_k = p.d_v = ex.d;
    p.q_s = p.k_s = p.v_s = ContiguousStrides(1, 2, ex.d);
    p.scale = 1.0 / std::sqrt(static_cast<double>(ex.d));
    for (int64_t i = 0; i < 2; ++i) {  // the reference against the hand computation
      const SdpaRowResult r = SdpaReferenceRow(p, 0, 0, i);
      for (int64_t c = 0; c < ex.d; ++c) {
        CHECK(std::fabs(r.out[c] - ex.truth[i * ex.d + c]) <= kHandTolerance);
      }
    }
    std::vector<float> out(static_cast<size_t>(2 * ex.d), Sentinel());
    CheckOk(simdattn_sdpa(ex.q.data(), ex.k.data(), ex.v.data(), out.data(), 1, 1, 2, 2, ex.d,
                          ex.d, nullptr));
    SdpaOutputs got;
    got.out = out.data(), got.out_s = ContiguousStrides(1, 2, ex.d);
    CheckAgainstReference(p, got, {0, 1});
    for (int64_t i = 0; i < 2; ++i) {
      double distance = 0.0;
      for (int64_t c = 0; c < ex.d; ++c) {
        distance = std::max(distance, std::fabs(out[i * ex.d + c] - ex.published[i * ex.d + c]));
      }
      CHECK_MESSAGE(distance > kPublishedDistance, "row ", i, " reproduces the wrong output");
    }
  }
}

// ------------------------------------------------------------------ threads and targets

TEST_CASE("sdpa: bitwise identical for 1, 2, 3, 7 and 16 threads") {
  SUBCASE("a normal shape") {
    SdpaCase c = Typical();
    c.q_len = 300, c.kv_len = 500, c.d_k = c.d_v = 64;
    CheckDeterministic(c);
  }
  SUBCASE("tiny heads, many of them: batch 32, heads 8, L 10, d 64") {
    SdpaCase c;
    c.batch = 32, c.heads = 8, c.q_len = c.kv_len = 10, c.d_k = c.d_v = 64, c.lse = true;
    CheckDeterministic(c);
  }
  SUBCASE("decode: q_len 1, kv_len 4096, heads 8, kv_heads 2, d 128 (split-kv merge)") {
    SdpaCase c;
    c.heads = 8, c.kv_heads = 2, c.q_len = 1, c.kv_len = 4096, c.d_k = c.d_v = 128, c.lse = true;
    CheckDeterministic(c);
  }
}

TEST_CASE("sdpa: every compiled SIMD target") {
  ForEachTarget([] {
    RunAndCheck(Typical());
    SdpaCase tiny_dims = Typical();
    tiny_dims.d_k = 3, tiny_dims.d_v = 1, tiny_dims.causal = SIMDATTN_CAUSAL_TOP_LEFT;
    RunAndCheck(tiny_dims);
    SdpaCase decode = Typical();
    decode.q_len = 1, decode.kv_len = 1000, decode.d_k = decode.d_v = 64;
    decode.mask.present = true, decode.mask.neg_inf_fraction = 0.1;
    RunAndCheck(decode);
    SdpaCase masked = Typical();
    masked.q_len = 40, masked.kv_len = 16, masked.layout = Layout::kBshd, masked.out_pad = 2;
    masked.kv_lens = {16, 0}, masked.qk_range = 150.0f;
    RunAndCheck(masked);
  });
}

// ------------------------------------------------------------------ L = 32768

// Restarts the kernel's peak-RSS mark at the current RSS (Linux: /proc/self/clear_refs "5").
// Without it ru_maxrss would still hold the peak of an earlier test case and the check below
// could not fail.
bool ResetPeakRss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

int64_t PeakRssBytes() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;  // KiB on Linux
}

constexpr int64_t kLongLen = 32768, kLongDim = 64;
// The budget for the contract's O(threads * block) scratch. One L x L float score matrix
// would be 4 GiB; even one 64-row block of scores per thread is 2 x 8 MiB.
constexpr int64_t kMaxScratchBytes = int64_t{64} << 20;

TEST_CASE("sdpa: L = 32768 in bounded memory; sampled rows match the reference") {
  const std::vector<int64_t> rows = {0, 1, 127, 4095, 16383, 16384, 32766, 32767};
  for (const int32_t causal : {SIMDATTN_CAUSAL_NONE, SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
    SdpaCase c;
    c.q_len = c.kv_len = kLongLen, c.d_k = c.d_v = kLongDim, c.causal = causal, c.lse = true;
    INFO(c.Describe());
    SdpaRun run(c);  // inputs and outputs exist (and are touched) before the first measurement
    REQUIRE_MESSAGE(ResetPeakRss(), "cannot reset the peak RSS (/proc/self/clear_refs)");
    const int64_t before = PeakRssBytes();
    CheckOk(run.Call());
    const int64_t growth = PeakRssBytes() - before;
    CHECK_MESSAGE(growth < kMaxScratchBytes, "peak RSS grew by ", growth >> 20, " MiB");
    run.Check(rows);
  }
}

// simdattn_attention_merge of simdattn_sdpa over key pieces (with their LSE) against the float64
// reference over all keys. Piece i's out is within b_i.out and its lse within b_i.lse of its
// exact values (BoundsFor its own keys); merged weights w_i = exp(lse_i - lse) then move by at
// most 2 max_i b_i.lse (lse_i and the merged lse) plus the merge's own roundings
// rho = u(max|lse_i - max lse| + max|lse_i|) + 4u (exp, 2 ulp) + gamma_n + u; the weighted sum
// of the n rows adds gamma_{n+2}. |out - want| <= max_i b_i.out + (expm1(2 max b.lse + rho) +
// gamma_{n+2}) max|v| (every piece's out is a convex combination of v rows);
// |lse - want| <= max b.lse + rho + 2 kLogUlps u log n + u |lse|.
TEST_CASE("sdpa + attention_merge: pieces of the keys merged by LSE equal sdpa over all keys") {
  const int64_t heads = 4, q_len = 19, kv_len = 150, d_k = 32, d_v = 24;
  const std::vector<float> q = RandomFloats(static_cast<size_t>(heads * q_len * d_k), 5, -2, 2);
  const std::vector<float> k = RandomFloats(static_cast<size_t>(heads * kv_len * d_k), 6, -2, 2);
  const std::vector<float> v = RandomFloats(static_cast<size_t>(heads * kv_len * d_v), 7);
  const std::vector<int64_t> cuts = {0, 70, 70, 129, 150};  // pieces of 70, 0, 59 and 21 keys
  const int64_t n = static_cast<int64_t>(cuts.size()) - 1, rows = heads * q_len;
  std::vector<std::vector<float>> outs(n), lses(n);
  SdpaProblem p;
  p.q = q.data(), p.k = k.data(), p.v = v.data();
  p.batch = 1, p.heads = p.kv_heads = heads, p.q_len = q_len, p.d_k = d_k, p.d_v = d_v;
  p.q_s = ContiguousStrides(heads, q_len, d_k);
  p.scale = 1.0 / std::sqrt(static_cast<double>(d_k));
  std::vector<SdpaProblem> piece_problems;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = cuts[i + 1] - cuts[i];
    simdattn_sdpa_options o;
    simdattn_sdpa_options_init(&o);
    o.k_strides = {0, kv_len * d_k, d_k}, o.v_strides = {0, kv_len * d_v, d_v};
    outs[i].resize(static_cast<size_t>(rows * d_v)), lses[i].resize(static_cast<size_t>(rows));
    o.lse = lses[i].data();
    CheckOk(simdattn_sdpa(q.data(), k.data() + cuts[i] * d_k, v.data() + cuts[i] * d_v,
                          outs[i].data(), 1, heads, q_len, len, d_k, d_v, &o));
    SdpaProblem piece = p;
    piece.k = k.data() + cuts[i] * d_k, piece.v = v.data() + cuts[i] * d_v, piece.kv_len = len;
    piece.k_s = {0, kv_len * d_k, d_k}, piece.v_s = {0, kv_len * d_v, d_v};
    piece_problems.push_back(piece);
  }
  std::vector<const float*> out_ptrs, lse_ptrs;
  for (int64_t i = 0; i < n; ++i) out_ptrs.push_back(outs[i].data()), lse_ptrs.push_back(lses[i].data());
  std::vector<float> out(static_cast<size_t>(rows * d_v)), lse(static_cast<size_t>(rows));
  CheckOk(simdattn_attention_merge(n, rows, d_v, out_ptrs.data(), d_v, lse_ptrs.data(), out.data(),
                                   d_v, lse.data()));
  p.kv_len = kv_len;
  p.k_s = ContiguousStrides(heads, kv_len, d_k), p.v_s = ContiguousStrides(heads, kv_len, d_v);
  Reference out_ref(rows, d_v), lse_ref(rows, 1);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t r = h * q_len + i;
      double out_b = 0, lse_b = 0, top = -kInf, lse_mag = 0;
      for (int64_t j = 0; j < n; ++j) {
        const SdpaProblem& pj = piece_problems[j];
        const SdpaRowBounds b = BoundsFor(SdpaReferenceRow(pj, 0, h, i), pj);
        out_b = std::max(out_b, b.out), lse_b = std::max(lse_b, b.lse);
        top = std::max(top, double{lses[j][r]});
        if (lses[j][r] != kNegInf) lse_mag = std::max(lse_mag, std::fabs(double{lses[j][r]}));
      }
      double spread = 0;
      for (int64_t j = 0; j < n; ++j) {
        if (lses[j][r] != kNegInf) spread = std::max(spread, top - lses[j][r]);
      }
      const SdpaRowResult want = SdpaReferenceRow(p, 0, h, i);
      const double rho = kU * (spread + lse_mag) + 4 * kU + Gamma(n) + kU;
      for (int64_t c = 0; c < d_v; ++c) {
        out_ref.want(r, c) = want.out[c];
        out_ref.bound(r, c) =
            out_b + (std::expm1(2 * lse_b + rho) + Gamma(n + 2)) * want.max_abs_v;
      }
      lse_ref.want(r, 0) = want.lse;
      lse_ref.bound(r, 0) = lse_b + rho + 2 * kLogUlps * kU * std::log(double(n)) +
                            kU * std::fabs(want.lse);
    }
  }
  CheckNear(out.data(), d_v, out_ref, "merged out");
  CheckNear(lse.data(), 1, lse_ref, "merged lse");
}

}  // namespace
}  // namespace simdattn_test

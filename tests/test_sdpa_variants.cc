// The 0.2 variants of simdattn_sdpa (sliding window, logit softcap, ALiBi, attention sinks)
// against the float64 reference of tests/sdpa_reference.h, which implements the "exact
// semantics" comment of include/simdattn.h literally. Bounds: tests/sdpa_harness.h's BoundsFor
// with VariantLogitError (softcap: 1-Lipschitz, so only 2u |s| + (2 kTanhUlps + 1) u cap is
// added to the logit error; ALiBi: one rounding of the bias and of the sum; sinks: one more
// normaliser term, nothing else). Also the struct_size-aware reading of the options (0.1
// callers) and options_init. Each variant test prints its worst |error| / bound (MESSAGE).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/sdpa_harness.h"

#include <cfloat>
#include <cstddef>
#include <cstring>
#include <functional>

namespace simdattn_test {
namespace {

constexpr int64_t kMaxSide = INT64_MAX;

// One variant setting, applied to a case with `heads` query heads.
struct Variant {
  const char* name;
  std::function<void(SdpaCase*)> apply;
};

// Per-head values cycling through `values` (heads need not match its size).
std::vector<float> PerHead(int64_t heads, std::initializer_list<float> values) {
  std::vector<float> v;
  for (int64_t h = 0; h < heads; ++h) v.push_back(values.begin()[h % values.size()]);
  return v;
}

void SetWindow(SdpaCase* c, int64_t left, int64_t right) {
  c->var.window = true, c->var.window_left = left, c->var.window_right = right;
}
// ALiBi slopes of BLOOM's kind (powers of 2 below 1), with a 0 and a negative slope mixed in.
void SetAlibi(SdpaCase* c) {
  c->var.alibi_slopes = PerHead(c->heads, {0.5f, 0.0f, 0.125f, -0.25f, 0.03125f});
}
// Sinks of moderate size, a dominant one and -inf (no sink for that head).
void SetSinks(SdpaCase* c) { c->var.sinks = PerHead(c->heads, {0.5f, -kInf, 3.0f, -2.0f, 8.0f}); }
// Gemma 2's attention softcap is 50 on logits of tens; here a cap of a few units on logits of
// about +-6 (qk_range 3) so tanh bends most of them.
void SetSoftcap(SdpaCase* c) { c->var.softcap = 2.5f, c->qk_range = 3.0f; }

const Variant kVariants[] = {
    {"window left 5 right 0 (Mistral-like)", [](SdpaCase* c) { SetWindow(c, 5, 0); }},
    {"window left 3 right 2", [](SdpaCase* c) { SetWindow(c, 3, 2); }},
    {"window 0/0 (diagonal only)", [](SdpaCase* c) { SetWindow(c, 0, 0); }},
    {"window left 0 right large", [](SdpaCase* c) { SetWindow(c, 0, 1000000); }},
    {"window both INT64_MAX", [](SdpaCase* c) { SetWindow(c, kMaxSide, kMaxSide); }},
    {"window wider than the sequence", [](SdpaCase* c) { SetWindow(c, 500, 700); }},
    {"softcap", SetSoftcap},
    {"alibi", SetAlibi},
    {"sinks", SetSinks},
    {"softcap + alibi", [](SdpaCase* c) { SetSoftcap(c), SetAlibi(c); }},
    {"window + sinks", [](SdpaCase* c) { SetWindow(c, 4, 1), SetSinks(c); }},
    {"all four", [](SdpaCase* c) { SetWindow(c, 6, 3), SetSoftcap(c), SetAlibi(c), SetSinks(c); }},
};

// Runs every variant on the cases `make` fills (called with n = 0, 1, ... until it returns
// false) and reports each variant's worst error relative to its bound.
void ForEachVariant(const char* what, const std::function<bool(int, SdpaCase*)>& make) {
  for (const Variant& v : kVariants) {
    WorstRatios::Get().Reset();
    SdpaCase c;
    int cases = 0;
    for (int n = 0; make(n, &c); ++n, c = SdpaCase{}) {
      v.apply(&c);
      RunAndCheck(c);
      ++cases;
    }
    MESSAGE(std::string(what), " | ", std::string(v.name), " | ", cases, " cases | ",
            WorstRatios::Get().Text());
  }
}

TEST_CASE("variants reference: window visibility uses d_i of the alignment, without overflow") {
  // q_len 2, kv_len 4: d_i = i + 2 for NONE and BOTTOM_RIGHT, i for TOP_LEFT.
  SdpaProblem p;
  p.q_len = 2, p.kv_len = 4, p.window = true;
  p.causal = SIMDATTN_CAUSAL_NONE;  // window 0/0: only key d_i
  for (int64_t j = 0; j < 4; ++j) CHECK(SdpaKeyVisible(p, 0, 0, j) == (j == 2));
  p.window_right = 1;  // d_i .. d_i + 1, NONE sees the future
  for (int64_t j = 0; j < 4; ++j) CHECK(SdpaKeyVisible(p, 0, 1, j) == (j == 3));
  for (int64_t j = 0; j < 4; ++j) CHECK(SdpaKeyVisible(p, 0, 0, j) == (j == 2 || j == 3));
  p.causal = SIMDATTN_CAUSAL_TOP_LEFT, p.window_left = 1, p.window_right = kMaxSide;
  for (int64_t j = 0; j < 4; ++j) CHECK(SdpaKeyVisible(p, 0, 1, j) == (j <= 1));
  p.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT, p.window_left = kMaxSide;
  for (int64_t j = 0; j < 4; ++j) CHECK(SdpaKeyVisible(p, 0, 0, j) == (j <= 2));
}

// q_len < and > kv_len, the three causal modes, GQA with an additive mask and kv_lens.
TEST_CASE("variants: each alone and combined, every causal mode, q_len < and > kv_len, GQA") {
  const int64_t shapes[][2] = {{17, 65}, {40, 23}};
  ForEachVariant("alignments", [&](int n, SdpaCase* c) {
    if (n >= 12) return false;
    *c = Typical();  // batch 2, heads 4, kv_heads 2, mask, lse and weights
    c->q_len = shapes[n % 2][0], c->kv_len = shapes[n % 2][1];
    c->causal = (n / 2) % 3;
    c->mask.present = n < 6, c->mask.neg_inf_fraction = 0.1;
    if (n >= 6) c->kv_lens = {c->kv_len, c->kv_len / 2 + 1};
    c->seed = static_cast<uint64_t>(n) + 100;
    return true;
  });
}

// kv_len up to one vector (16 on AVX-512, 8 on AVX2) runs FewKeysTaskImpl: every target.
TEST_CASE("variants: few keys (kv_len <= one vector) on every compiled target") {
  ForEachTarget([] {
    ForEachVariant("few keys", [](int n, SdpaCase* c) {
      const int64_t kv_lens[] = {1, 3, 8, 9, 16};
      if (n >= 10) return false;
      *c = Typical();
      c->batch = 3, c->q_len = n % 2 ? 12 : 5, c->kv_len = kv_lens[n / 2];
      c->causal = n % 3, c->layout = n % 2 ? Layout::kBshd : Layout::kBhsd;
      c->mask.present = n % 4 == 0;
      c->kv_lens = {c->kv_len, 0, c->kv_len / 2};
      c->seed = static_cast<uint64_t>(n) + 200;
      return true;
    });
  });
}

// Many queries per (b, kv head): whole 64-column register tiles. <= 8 columns: the by-rows path.
TEST_CASE("variants: register-tile path (many queries) and by-rows path (<= 8 columns)") {
  ForEachVariant("tile and rows", [](int n, SdpaCase* c) {
    if (n >= 4) return false;
    *c = Typical();
    c->batch = 1, c->heads = 4, c->kv_heads = 2;  // group 2
    c->q_len = n < 2 ? 150 : 3, c->kv_len = n < 2 ? 170 : 300;  // 300 or 6 columns
    c->causal = n % 2 ? SIMDATTN_CAUSAL_BOTTOM_RIGHT : SIMDATTN_CAUSAL_NONE;
    c->d_k = 64, c->d_v = 48, c->seed = static_cast<uint64_t>(n) + 300;
    return true;
  });
}

TEST_CASE("variants: BSHD strides and padded rows, padding untouched") {
  ForEachVariant("strides", [](int n, SdpaCase* c) {
    if (n >= 2) return false;
    *c = Typical();
    c->layout = n ? Layout::kBshd : Layout::kBhsd, c->in_pad = 3, c->out_pad = 2;
    c->causal = SIMDATTN_CAUSAL_TOP_LEFT, c->seed = static_cast<uint64_t>(n) + 400;
    return true;
  });
}

// q_len 1 with kv_len >= 2 * kSplitKeys (4096) and fewer than 16 column blocks: the keys are
// split into ranges merged in order (src/ops/sdpa.cc); the sink joins the first range only.
TEST_CASE("variants: decode with a long kv_len (split keys and merge)") {
  ForEachVariant("decode split", [](int n, SdpaCase* c) {
    if (n >= 3) return false;
    c->batch = 2, c->heads = 8, c->kv_heads = 2, c->q_len = n == 2 ? 3 : 1, c->kv_len = 8192;
    c->d_k = c->d_v = 64, c->lse = true, c->causal = n;
    c->kv_lens = {8192, 4500};
    c->mask.present = n == 1, c->mask.sparse_period = 64;
    c->seed = static_cast<uint64_t>(n) + 500;
    return true;
  });
  // A window far narrower than the sequence: only the last key range has visible keys, the
  // sink sits in the first (empty) one.
  SdpaCase c;
  c.heads = 8, c.kv_heads = 2, c.q_len = 1, c.kv_len = 6000, c.d_k = c.d_v = 32, c.lse = true;
  c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  SetWindow(&c, 10, 0), SetSinks(&c), SetAlibi(&c);
  RunAndCheck(c);
}

// Checks query i of (b, h) has out 0, lse `lse` (exactly) and weights 0.
void CheckNoKeyRow(const SdpaRun& run, int64_t b, int64_t h, int64_t i, float lse) {
  const SdpaCase& c = run.spec();
  INFO("query ", i, " of (b, h) = (", b, ", ", h, ") sees no key");
  for (int64_t col = 0; col < c.d_v; ++col) {
    const int64_t row = c.layout == Layout::kBshd ? i * c.heads + h : h * c.q_len + i;
    CHECK(run.out().at(b, row, col) == 0.0f);
  }
  CHECK(run.lse().at(0, b * c.heads + h, i) == lse);
  for (int64_t j = 0; j < c.kv_len; ++j) {
    CHECK(run.weights().at(0, (b * c.heads + h) * c.q_len + i, j) == 0.0f);
  }
}

TEST_CASE("variants: rows that see no key give out 0 and lse = the sink (-inf: lse -inf)") {
  for (const int64_t kv_len : {0, 9, 40}) {  // no keys at all, few keys (AVX2, SSE4), blocked
    SdpaCase c = Typical();
    c.kv_len = kv_len, c.q_len = kv_len + 10, c.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    c.mask.present = c.mask.first_row_neg_inf = true;  // query 0 masked, and rows < 10 causal
    c.kv_lens = {kv_len, 0};                            // batch 1: every row sees nothing
    SetSinks(&c);                                       // head 1: -inf
    CAPTURE(c.Describe());
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check(RowsToCheck(c));
    for (int64_t h = 0; h < c.heads; ++h) {
      CheckNoKeyRow(run, 0, h, 0, c.var.sinks[h]);
      CheckNoKeyRow(run, 0, h, 9, c.var.sinks[h]);
      CheckNoKeyRow(run, 1, h, c.q_len - 1, c.var.sinks[h]);
    }
  }
}

TEST_CASE("variants: bitwise identical for 1, 2, 3, 7 and 16 threads") {
  auto all_four = [](SdpaCase c) {
    SetWindow(&c, 40, 7), SetSoftcap(&c), SetAlibi(&c), SetSinks(&c);
    return c;
  };
  SUBCASE("a normal shape") {
    SdpaCase c = Typical();
    c.q_len = 300, c.kv_len = 500, c.d_k = c.d_v = 64;
    CheckDeterministic(all_four(c));
  }
  SUBCASE("decode: split keys and merge") {
    SdpaCase c;
    c.heads = 8, c.kv_heads = 2, c.q_len = 1, c.kv_len = 4096, c.d_k = c.d_v = 64, c.lse = true;
    c = all_four(c);
    c.var.window_left = 3000;  // several key ranges
    CheckDeterministic(c);
  }
  SUBCASE("few keys") {
    SdpaCase c = Typical();
    c.batch = 32, c.kv_len = 7, c.q_len = 9;
    CheckDeterministic(all_four(c));
  }
}

// Positions of 2^23 and beyond are not exact floats: ALiBi then takes the int64 distance with a
// double product (the "wide" path, src/ops/sdpa.cc). q_len past 2^23 with bottom-right or no
// causal alignment puts d_i = i + kv_len - q_len far below 0 for the early rows.
TEST_CASE("variants: ALiBi with positions beyond 2^23 (exact integer distance)") {
  for (const int64_t kv_len : {5, 40}) {  // few keys, blocked
    SdpaCase c;
    c.q_len = (int64_t{1} << 23) + 77, c.kv_len = kv_len, c.d_k = c.d_v = 1, c.lse = true;
    c.var.alibi_slopes = {3.0e-7f};  // bias ~2.5 at the far end
    INFO(c.Describe());
    SdpaRun run(c);
    CheckOk(run.Call());
    run.Check({0, 1, 76, 77, 78, (int64_t{1} << 22) + 1, c.q_len - kv_len, c.q_len - 1});
  }
}

// Any finite cap > 0 is valid: a subnormal one (1 / cap overflows to inf), FLT_MIN, and caps so
// large that 1 / cap is subnormal (the s / cap of the semantics must not lose more than a few
// ulps). Every path: few keys, by rows, register tiles.
TEST_CASE("variants: softcap extremes (subnormal, FLT_MIN, 1e30, FLT_MAX)") {
  for (const float cap : {1e-40f, FLT_MIN, 1e-30f, 1e30f, FLT_MAX}) {
    for (const int64_t kv_len : {5, 40}) {
      for (const int64_t q_len : {2, 100}) {
        SdpaCase c = Typical();
        c.q_len = q_len, c.kv_len = kv_len, c.var.softcap = cap;
        c.mask.present = false;
        CAPTURE(c.Describe());
        RunAndCheck(c);
        // Scores that underflow to exactly 0 in float32 (|q k| ~ 1e-50): cap * tanh(0 / cap)
        // is 0, whatever the cap.
        c.qk_range = 1e-25f;
        RunAndCheck(c);
      }
    }
  }
}

// ------------------------------------------------------------------ the options struct

TEST_CASE("options_init zeroes every 0.2 field and sets struct_size 216") {
  simdattn_sdpa_options o;
  std::memset(&o, 0xAB, sizeof(o));
  simdattn_sdpa_options_init(&o);
  CHECK(o.struct_size == 216);
  CHECK(sizeof(simdattn_sdpa_options) == 216);
  CHECK(offsetof(simdattn_sdpa_options, window) == SIMDATTN_SDPA_OPTIONS_SIZE_0_1);
  CHECK(o.window == 0);
  CHECK(o.softcap == 0.0f);
  CHECK(o.window_left == 0);
  CHECK(o.window_right == 0);
  CHECK(o.alibi_slopes == nullptr);
  CHECK(o.sinks == nullptr);
}

// A struct_size-sized caller struct followed by garbage: bytes at or past struct_size must
// never be read. The garbage is invalid in every 0.2 field (a read would fail or crash).
struct Truncated {
  alignas(simdattn_sdpa_options) unsigned char bytes[512];
  simdattn_sdpa_options* get() { return reinterpret_cast<simdattn_sdpa_options*>(bytes); }
};

Truncated WithGarbageAfter(const simdattn_sdpa_options& full, size_t struct_size) {
  Truncated t;
  std::memset(t.bytes, 0xFF, sizeof(t.bytes));  // window -1, softcap NaN, sides -1, ptrs ~0
  std::memcpy(t.bytes, &full, struct_size < sizeof(full) ? struct_size : sizeof(full));
  t.get()->struct_size = struct_size;
  return t;
}

// The same case run with `options` and with `expect` (a case whose fields are what a reader of
// only the first struct_size bytes sees): bitwise equal results, and the reference holds.
void CheckReadsAsCase(const SdpaCase& full, const SdpaCase& expect, size_t struct_size) {
  INFO("struct_size ", struct_size, "; expected: ", expect.Describe());
  SdpaRun run(full), want(expect);
  simdattn_sdpa_options o = run.Options();
  Truncated t = WithGarbageAfter(o, struct_size);
  CheckOk(run.Call(t.get()));
  CheckOk(want.Call());
  want.Check(RowsToCheck(expect));
  CheckBitwiseEqual(run.out().data(), want.out().data(), want.out().buffer().size(), "out");
  CheckBitwiseEqual(run.lse().data(), want.lse().data(), want.lse().buffer().size(), "lse");
}

TEST_CASE("struct_size: a 0.1 struct (176) with garbage after it reads as zero-filled 0.1") {
  SdpaCase full = Typical();
  full.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  SetWindow(&full, 3, 1), SetSoftcap(&full), SetAlibi(&full), SetSinks(&full);
  SdpaCase plain = full;
  plain.var = VariantSpec{};
  CheckReadsAsCase(full, plain, 176);
  // Partial layouts read whole fields only: window ends at 180, softcap at 184, window_left at
  // 192, window_right at 200, alibi_slopes at 208, sinks at 216.
  SdpaCase window_only = plain;
  SetWindow(&window_only, 0, 0);  // window 1 read, sides missing: 0
  CheckReadsAsCase(full, window_only, 180);
  CheckReadsAsCase(full, window_only, 183);
  SdpaCase with_softcap = window_only;
  with_softcap.var.softcap = full.var.softcap;
  CheckReadsAsCase(full, with_softcap, 184);
  CheckReadsAsCase(full, with_softcap, 191);
  SdpaCase with_left = with_softcap;
  with_left.var.window_left = full.var.window_left;
  CheckReadsAsCase(full, with_left, 192);
  SdpaCase with_sides = with_left;
  with_sides.var.window_right = full.var.window_right;
  CheckReadsAsCase(full, with_sides, 200);
  SdpaCase with_alibi = with_sides;
  with_alibi.var.alibi_slopes = full.var.alibi_slopes;
  CheckReadsAsCase(full, with_alibi, 208);
  CheckReadsAsCase(full, with_alibi, 215);
  CheckReadsAsCase(full, full, 216);
  CheckReadsAsCase(full, full, 217);  // larger than this header's struct: accepted
  CheckReadsAsCase(full, full, 512);
}

}  // namespace
}  // namespace simdattn_test

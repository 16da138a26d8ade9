// simdattn_ring_sdpa under mpirun (-n 2 and -n 4 in tests/meson.build): every rank builds the
// same global Q, K, V from a seed, takes its rows per layout, runs the ring and checks its rows
// against the float64 reference over the whole sequence (tests/sdpa_reference.h) and against
// single-process simdattn_sdpa over the gathered sequence, for both layouts, causal or not, GQA,
// BSHD strides, len not a multiple of the kernel blocks, d_v != d_k, with LSE; then bitwise
// determinism across thread counts, agreed errors (a bad rank makes every rank fail, nothing
// written) and the empty problem. Exit status 0 on every rank iff every rank passed.
#include <mpi.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "simdattn.h"
#include "simdattn_mpi.h"
#include "tests/sdpa_reference.h"

namespace {

using simdattn_test::SdpaProblem;
using simdattn_test::SdpaReferenceRow;
using simdattn_test::SdpaRowResult;

int g_rank = 0, g_ranks = 1, g_failures = 0;

#define EXPECT(cond, ...)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      ++g_failures;                                                                    \
      std::fprintf(stderr, "rank %d: %s:%d: %s: ", g_rank, __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                               \
      std::fprintf(stderr, "\n");                                                      \
    }                                                                                  \
  } while (0)

constexpr double kU = 0x1p-24;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Factor on the first-order bound below (as tests/test_sdpa.cc's kSafety).
constexpr double kSafety = 2.0;

double Gamma(double k) { return k * kU / (1.0 - k * kU); }

float Sentinel() {
  const uint32_t bits = 0x7fc0deadu;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct RingCase {
  int32_t layout = SIMDATTN_RING_CONTIGUOUS;
  int32_t causal = SIMDATTN_CAUSAL_NONE;
  int64_t batch = 2, heads = 4, kv_heads = 2, len = 10, d_k = 24, d_v = 16;
  bool bshd = false;      // q and out local tensors as [batch, len, heads, d]
  float qk_scale = 3.0f;  // q and k values in [-qk_scale, qk_scale): peaked softmaxes
  // Large cases: check every check_every-th local row (and the last) against the reference
  // only, without the single-process simdattn_sdpa over the whole sequence.
  int64_t check_every = 1;
  std::string Describe() const {
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "layout %d causal %d batch %lld heads %lld/%lld len %lld d %lld/%lld%s", layout,
                  causal, (long long)batch, (long long)heads, (long long)kv_heads, (long long)len,
                  (long long)d_k, (long long)d_v, bshd ? " BSHD" : "");
    return buf;
  }
  int64_t Global() const { return len * g_ranks; }
  // Global position of local row i of rank r.
  int64_t Position(int r, int64_t i) const {
    if (layout == SIMDATTN_RING_CONTIGUOUS) return r * len + i;
    const int64_t half = len / 2;
    return i < half ? r * half + i : (2 * g_ranks - 1 - r) * half + (i - half);
  }
};

// Global tensors [batch, heads, N, d] contiguous.
struct Global {
  std::vector<float> q, k, v;
  explicit Global(const RingCase& c) {
    const int64_t n = c.Global();
    q = Random(static_cast<size_t>(c.batch * c.heads * n * c.d_k), 11);
    k = Random(static_cast<size_t>(c.batch * c.kv_heads * n * c.d_k), 12);
    v = Random(static_cast<size_t>(c.batch * c.kv_heads * n * c.d_v), 13);
    for (float& x : q) x *= c.qk_scale;
    for (float& x : k) x *= c.qk_scale;
  }
};

// Rows of a global [b, h, N, d] tensor for this rank, as [b, h, len, d] or BSHD [b, len, h, d].
std::vector<float> Local(const RingCase& c, const std::vector<float>& g, int64_t h_count, int64_t d,
                         bool bshd) {
  std::vector<float> out(static_cast<size_t>(c.batch * h_count * c.len * d));
  if (d == 0) return out;  // d_v = 0: no elements (and no data pointer to copy from)
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < h_count; ++h) {
      for (int64_t i = 0; i < c.len; ++i) {
        const float* src = g.data() + ((b * h_count + h) * c.Global() + c.Position(g_rank, i)) * d;
        const int64_t row = bshd ? (b * c.len + i) * h_count + h : (b * h_count + h) * c.len + i;
        std::memcpy(out.data() + row * d, src, static_cast<size_t>(d) * 4);
      }
    }
  }
  return out;
}

// Error bounds of the ring's row with exact result r, merged from at most `pieces` pieces:
//   E, a logit's error, and rel, one sdpa call's weight error, as tests/test_sdpa.cc derives
//   them (gamma_{d_k+2} max|scale q.k| + 5u max|s|; 2E + 4u exp + 2 gamma_{3 live} + gamma_live
//   + 2u); a piece's lse adds log's error and the additions: E + rel + 8u log(live) + 3u |lse|;
//   a pairwise merge moves a weight by both pieces' lse errors (2 per piece) plus
//   u(|t| + |lse|) + 8u of its own roundings; `pieces` merges one after the other.
//   out: (expm1(R) + gamma_{live + 2 pieces}) max|v|; lse: E + rel + R + 3u |lse|.
struct Bounds {
  double out = 0, lse = 0;
};
Bounds RingBounds(const SdpaRowResult& r, int64_t d_k, int64_t pieces) {
  if (r.live_keys == 0) return {};
  const double live = static_cast<double>(r.live_keys), mag = r.max_abs_logit + std::log(live);
  const double e = Gamma(d_k + 2) * r.max_abs_dot + 5 * kU * r.max_abs_logit;
  const double rel = 2 * e + 4 * kU + 2 * Gamma(3 * live) + Gamma(live) + 2 * kU;
  const double piece_lse = e + rel + 8 * kU * std::log(live) + 3 * kU * mag;
  const double big_r = rel + pieces * (2 * piece_lse + 2 * kU * mag + 8 * kU);
  Bounds b;
  b.out = kSafety * (std::expm1(big_r) + Gamma(live + 2 * pieces)) * r.max_abs_v;
  b.lse = kSafety * (piece_lse + big_r + 3 * kU * std::fabs(r.lse));
  return b;
}

// This rank's q (BSHD when the case says so), k and v.
struct LocalTensors {
  std::vector<float> q, k, v;
  LocalTensors(const RingCase& c, const Global& g)
      : q(Local(c, g.q, c.heads, c.d_k, c.bshd)),
        k(Local(c, g.k, c.kv_heads, c.d_k, false)),
        v(Local(c, g.v, c.kv_heads, c.d_v, false)) {}
};

// Runs the ring for one case on every rank and checks this rank's rows.
void CheckCase(const RingCase& c) {
  const Global g(c);
  const LocalTensors t(c, g);
  std::vector<float> out(static_cast<size_t>(c.batch * c.heads * c.len * c.d_v), Sentinel());
  std::vector<float> lse(static_cast<size_t>(c.batch * c.heads * c.len), Sentinel());
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.causal = c.causal, o.kv_heads = c.kv_heads, o.lse = lse.data();
  if (c.bshd) {
    o.q_strides = {c.len * c.heads * c.d_k, c.d_k, c.heads * c.d_k};
    o.out_strides = {c.len * c.heads * c.d_v, c.d_v, c.heads * c.d_v};
  }
  const simdattn_status s =
      simdattn_ring_sdpa(MPI_COMM_WORLD, c.layout, t.q.data(), t.k.data(), t.v.data(), out.data(),
                         c.batch, c.heads, c.len, c.d_k, c.d_v, &o);
  EXPECT(s == SIMDATTN_OK, "%s: %s (%s)", c.Describe().c_str(), simdattn_status_name(s),
         simdattn_ring_last_error());
  if (s != SIMDATTN_OK) return;
  // Single-process simdattn_sdpa over the gathered sequence.
  const int64_t n = c.Global();
  const bool single = c.check_every == 1;
  std::vector<float> full(single ? static_cast<size_t>(c.batch * c.heads * n * c.d_v) : 0);
  std::vector<float> full_lse(single ? static_cast<size_t>(c.batch * c.heads * n) : 0);
  simdattn_sdpa_options fo;
  simdattn_sdpa_options_init(&fo);
  fo.causal = c.causal, fo.kv_heads = c.kv_heads, fo.lse = full_lse.data();
  EXPECT(!single || simdattn_sdpa(g.q.data(), g.k.data(), g.v.data(), full.data(), c.batch, c.heads,
                                  n, n, c.d_k, c.d_v, &fo) == SIMDATTN_OK,
         "single-process sdpa failed");
  SdpaProblem p;
  p.q = g.q.data(), p.k = g.k.data(), p.v = g.v.data();
  p.batch = c.batch, p.heads = c.heads, p.kv_heads = c.kv_heads, p.q_len = p.kv_len = n;
  p.d_k = c.d_k, p.d_v = c.d_v, p.causal = c.causal;
  p.q_s = simdattn_test::ContiguousStrides(c.heads, n, c.d_k);
  p.k_s = simdattn_test::ContiguousStrides(c.kv_heads, n, c.d_k);
  p.v_s = simdattn_test::ContiguousStrides(c.kv_heads, n, c.d_v);
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.d_k));
  const int64_t pieces = 2 * g_ranks + 1;
  int bad = 0;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int64_t i = 0; i < c.len; ++i) {
        if (i % c.check_every != 0 && i != c.len - 1) continue;
        const int64_t pos = c.Position(g_rank, i);
        const SdpaRowResult r = SdpaReferenceRow(p, b, h, pos);
        const Bounds bound = RingBounds(r, c.d_k, pieces);
        const int64_t row = c.bshd ? (b * c.len + i) * c.heads + h : (b * c.heads + h) * c.len + i;
        const float* got = out.data() + row * c.d_v;
        const float* one = single ? full.data() + ((b * c.heads + h) * n + pos) * c.d_v : got;
        for (int64_t j = 0; j < c.d_v && bad < 5; ++j) {
          const double err = std::fabs(got[j] - r.out[j]);
          const double diff = std::fabs(double{got[j]} - one[j]);
          if (err <= bound.out && diff <= 2 * bound.out) continue;
          ++bad;
          EXPECT(
              false,
              "%s: out[%lld, %lld, pos %lld, %lld] = %.9g, reference %.17g, sdpa %.9g, bound %.3g",
              c.Describe().c_str(), (long long)b, (long long)h, (long long)pos, (long long)j,
              double{got[j]}, r.out[j], double{one[j]}, bound.out);
        }
        const float l = lse[(b * c.heads + h) * c.len + i];
        const float l1 = single ? full_lse[(b * c.heads + h) * n + pos] : l;
        const bool lse_ok = std::fabs(l - r.lse) <= bound.lse && std::fabs(l - l1) <= 2 * bound.lse;
        if (!lse_ok && bad < 5) {
          ++bad;
          EXPECT(false,
                 "%s: lse[%lld, %lld, pos %lld] = %.9g, reference %.17g, sdpa %.9g, bound %.3g",
                 c.Describe().c_str(), (long long)b, (long long)h, (long long)pos, double{l}, r.lse,
                 double{l1}, bound.lse);
        }
      }
    }
  }
}

void TestMatches() {
  for (const int32_t layout : {SIMDATTN_RING_CONTIGUOUS, SIMDATTN_RING_ZIGZAG}) {
    for (const int32_t causal :
         {SIMDATTN_CAUSAL_NONE, SIMDATTN_CAUSAL_TOP_LEFT, SIMDATTN_CAUSAL_BOTTOM_RIGHT}) {
      RingCase c;
      c.layout = layout, c.causal = causal;
      CheckCase(c);
      c.bshd = true, c.len = 70, c.d_k = 40, c.d_v = 8, c.heads = 3, c.kv_heads = 1, c.batch = 1;
      CheckCase(c);  // len past a 64-key block, MQA, BSHD q and out
    }
  }
  RingCase c;
  c.d_v = 0, c.causal = SIMDATTN_CAUSAL_TOP_LEFT, c.layout = SIMDATTN_RING_ZIGZAG;
  CheckCase(c);  // lse only
  // A step of over 1e8 FLOPs per K/V head: each batch entry's heads take several sdpa calls
  // (MPI progress between them), whose lse rows and outputs must land in place.
  RingCase big;
  big.batch = 2, big.heads = 3, big.kv_heads = 3, big.len = 1000, big.d_k = 64, big.d_v = 32;
  big.check_every = 97;
  for (const int32_t layout : {SIMDATTN_RING_CONTIGUOUS, SIMDATTN_RING_ZIGZAG}) {
    big.layout = layout, big.causal = layout;  // not causal contiguous, causal zigzag
    CheckCase(big);
  }
}

// Bitwise identical results for 1 and 3 threads.
void TestDeterminism() {
  RingCase c;
  c.layout = SIMDATTN_RING_ZIGZAG, c.causal = SIMDATTN_CAUSAL_TOP_LEFT, c.len = 130, c.d_k = 64;
  const Global g(c);
  const LocalTensors t(c, g);
  std::vector<float> first;
  for (const int32_t threads : {1, 3, 16}) {
    simdattn_set_num_threads(threads);
    std::vector<float> out(static_cast<size_t>(c.batch * c.heads * c.len * c.d_v));
    simdattn_sdpa_options o;
    simdattn_sdpa_options_init(&o);
    o.causal = c.causal, o.kv_heads = c.kv_heads;
    EXPECT(simdattn_ring_sdpa(MPI_COMM_WORLD, c.layout, t.q.data(), t.k.data(), t.v.data(),
                              out.data(), c.batch, c.heads, c.len, c.d_k, c.d_v, &o) == SIMDATTN_OK,
           "determinism run failed: %s", simdattn_ring_last_error());
    if (first.empty()) first = out;
    EXPECT(std::memcmp(out.data(), first.data(), out.size() * 4) == 0,
           "%d threads differ bitwise from 1 thread", threads);
  }
  simdattn_set_num_threads(0);
}

// One bad rank (or several): every rank returns the lowest bad rank's status, writes nothing.
void ExpectAgreedError(const char* what, int bad_rank, simdattn_status want, const char* fragment,
                       void (*spoil)(RingCase&, simdattn_sdpa_options&, int32_t&, float*)) {
  RingCase c;
  const Global g(c);
  const LocalTensors t(c, g);
  std::vector<float> out(static_cast<size_t>(c.batch * c.heads * c.len * c.d_v), Sentinel());
  std::vector<float> lse(static_cast<size_t>(c.batch * c.heads * c.len), Sentinel());
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.kv_heads = c.kv_heads, o.lse = lse.data();
  int32_t layout = SIMDATTN_RING_ZIGZAG;
  spoil(c, o, layout, out.data());
  const simdattn_status s =
      simdattn_ring_sdpa(MPI_COMM_WORLD, layout, t.q.data(), t.k.data(), t.v.data(), out.data(),
                         c.batch, c.heads, c.len, c.d_k, c.d_v, &o);
  const std::string error = simdattn_ring_last_error();
  const std::string rank_text = "rank " + std::to_string(bad_rank) + ": ";
  EXPECT(s == want, "%s: got %s, want %s (%s)", what, simdattn_status_name(s),
         simdattn_status_name(want), error.c_str());
  EXPECT(error.find(rank_text) != std::string::npos && error.find(fragment) != std::string::npos,
         "%s: last error \"%s\" should name \"%s\" and \"%s\"", what, error.c_str(),
         rank_text.c_str(), fragment);
  bool untouched = true;
  const float sentinel = Sentinel();
  for (const float x : out) untouched = untouched && std::memcmp(&x, &sentinel, 4) == 0;
  for (const float x : lse) untouched = untouched && std::memcmp(&x, &sentinel, 4) == 0;
  EXPECT(untouched, "%s: a failed call wrote", what);
}

void TestErrors() {
  const int last = g_ranks - 1;
  ExpectAgreedError("d_k 0 on the last rank", last, SIMDATTN_ERR_BAD_SHAPE, "d_k must be >= 1",
                    [](RingCase& c, simdattn_sdpa_options&, int32_t&, float*) {
                      if (g_rank == g_ranks - 1) c.d_k = 0;
                    });
  ExpectAgreedError("layout 2 on rank 0, odd len on rank 1", 0, SIMDATTN_ERR_BAD_ARGUMENT,
                    "layout must be",
                    [](RingCase& c, simdattn_sdpa_options&, int32_t& layout, float*) {
                      if (g_rank == 0) layout = 2;
                      if (g_rank == 1) c.len = 9;
                    });
  ExpectAgreedError("odd len for zigzag on rank 1", 1, SIMDATTN_ERR_BAD_SHAPE, "len must be even",
                    [](RingCase& c, simdattn_sdpa_options&, int32_t&, float*) {
                      if (g_rank == 1) c.len = 9;
                    });
  ExpectAgreedError("a mask on the last rank", last, SIMDATTN_ERR_BAD_ARGUMENT,
                    "options->mask is not supported",
                    [](RingCase&, simdattn_sdpa_options& o, int32_t&, float*) {
                      static const float mask[1] = {0.0f};
                      if (g_rank == g_ranks - 1) o.mask = mask;
                    });
  ExpectAgreedError("lse overlapping out on rank 1", 1, SIMDATTN_ERR_BAD_ARGUMENT,
                    "out overlaps options->lse",
                    [](RingCase&, simdattn_sdpa_options& o, int32_t&, float* out) {
                      if (g_rank == 1) o.lse = out + 3;
                    });
}

// Valid arguments that differ between ranks: every rank fails with the same message.
void TestMismatch() {
  RingCase c;
  const Global g(c);
  const LocalTensors t(c, g);
  std::vector<float> out(static_cast<size_t>(c.batch * c.heads * c.len * c.d_v), Sentinel());
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.kv_heads = c.kv_heads;
  const int64_t len = g_rank == g_ranks - 1 ? c.len - 2 : c.len;  // fits the buffers
  const simdattn_status s = simdattn_ring_sdpa(MPI_COMM_WORLD, SIMDATTN_RING_ZIGZAG, t.q.data(),
                                               t.k.data(), t.v.data(), out.data(), c.batch,
                                               c.heads, len, c.d_k, c.d_v, &o);
  const std::string error = simdattn_ring_last_error();
  EXPECT(s == SIMDATTN_ERR_BAD_ARGUMENT &&
             error.find("the ranks disagree on len (8 to 10)") != std::string::npos,
         "len 8 on one rank: %s, \"%s\"", simdattn_status_name(s), error.c_str());
  const float sentinel = Sentinel();
  bool untouched = true;
  for (const float x : out) untouched = untouched && std::memcmp(&x, &sentinel, 4) == 0;
  EXPECT(untouched, "a failed call wrote");
}

void TestEmpty() {
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  const simdattn_status s = simdattn_ring_sdpa(MPI_COMM_WORLD, SIMDATTN_RING_ZIGZAG, nullptr,
                                               nullptr, nullptr, nullptr, 2, 4, 0, 8, 8, &o);
  EXPECT(s == SIMDATTN_OK && simdattn_ring_last_error()[0] == '\0', "len 0: %s",
         simdattn_status_name(s));
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_ranks);
  TestMatches();
  TestDeterminism();
  TestErrors();
  TestMismatch();
  TestEmpty();
  int failures = 0;
  MPI_Allreduce(&g_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) std::printf("%d ranks: %d failures\n", g_ranks, failures);
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}

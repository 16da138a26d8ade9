// Scaled dot-product attention: simdattn_sdpa (fused, contiguous [batch, heads, seq, d]) against
// the naive composition on OpenBLAS and simdattn's own unfused path, all on the same threads.
// Names: sdpa/<impl>/b<B>_h<H>[_kvh<KVH>]_{l<L> | q<Lq>_kv<Lkv>}_d<D>[_causal]
// (tools/bench_torch.py writes sdpa/torch/... with the same shape names), and
// membw/read/<bytes>: the time to read a buffer once, the bound decode is measured against.
// Counters: flops = 4 B H Lq Lkv D (halved for causal: the work a causal kernel must do);
// decode shapes also bytes_per_second = the bytes of K and V read once.
// Every baseline's output is compared with simdattn's once per run, outside the timed loop
// (counter vs_simdattn; above kTolerance the benchmark fails).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define SIMDATTN_BENCH_WITH_OPENBLAS  // the naive attention baseline of bench_util.h
#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

struct SdpaShape {
  int64_t batch, heads, kv_heads, q_len, kv_len, d;

  int64_t group() const { return heads / kv_heads; }
  int64_t q_floats() const { return batch * heads * q_len * d; }
  int64_t kv_floats() const { return batch * kv_heads * kv_len * d; }
  int64_t score_floats() const { return batch * heads * q_len * kv_len; }
  bool operator<(const SdpaShape& o) const {
    return std::tie(batch, heads, kv_heads, q_len, kv_len, d) <
           std::tie(o.batch, o.heads, o.kv_heads, o.q_len, o.kv_len, o.d);
  }
};

struct SdpaCase {
  SdpaShape shape;
  bool causal;        // top-left
  bool memory_bound;  // decode: report bytes_per_second (K and V read once)
};

// The seed model (B32 H8 L10 D64), prefill-sized self-attention with the usual head dimensions,
// and decode (one query, long KV cache, GQA with 8 KV heads as in Llama-style models).
const SdpaShape kSeedShape = {32, 8, 8, 10, 10, 64};
const SdpaShape kPrefillShapes[] = {
    {1, 16, 16, 512, 512, 64}, {4, 16, 16, 1024, 1024, 64},
    {1, 8, 8, 4096, 4096, 64}, {1, 32, 32, 2048, 2048, 128}};
const SdpaShape kDecodeShapes[] = {{1, 32, 8, 1, 4096, 128}, {1, 32, 8, 1, 32768, 128}};

std::vector<SdpaCase> Cases() {
  std::vector<SdpaCase> cases = {{kSeedShape, false, false}};
  for (const SdpaShape& s : kPrefillShapes) cases.push_back({s, false, false});
  for (const SdpaShape& s : kPrefillShapes) cases.push_back({s, true, false});
  for (const SdpaShape& s : kDecodeShapes) cases.push_back({s, false, true});
  return cases;
}

std::string CaseName(const SdpaCase& c) {
  const SdpaShape& s = c.shape;
  std::string name = "b" + std::to_string(s.batch) + "_h" + std::to_string(s.heads);
  if (s.kv_heads != s.heads) name += "_kvh" + std::to_string(s.kv_heads);
  name += s.q_len == s.kv_len ? "_l" + std::to_string(s.q_len)
                              : "_q" + std::to_string(s.q_len) + "_kv" + std::to_string(s.kv_len);
  return name + "_d" + std::to_string(s.d) + (c.causal ? "_causal" : "");
}

// Outputs are convex combinations of V rows (|v| < 1): simdattn's error bound is ~1e-6; 1e-4
// leaves room for the baselines' different summation orders.
constexpr double kTolerance = 1e-4;
// The unfused path materialises every head's scores at once (allocated once, kept for the run);
// above this the buffer would crowd this shared machine's memory.
constexpr int64_t kMaxUnfusedScoreBytes = int64_t{2} << 30;

// Inputs of one shape, shared by its causal and non-causal cases and every implementation.
struct SdpaOperands {
  SdpaShape shape;
  Buffer q, k, v, out;
  Buffer naive_scores;    // NaiveScores (per pool thread), made before the first naive run
  Buffer unfused_scores;  // every head's scores, made before the first unfused run
};

SdpaOperands MakeOperands(const SdpaShape& s) {
  return SdpaOperands{s, RandomBuffer(s.q_floats(), 1), RandomBuffer(s.kv_floats(), 2),
                      RandomBuffer(s.kv_floats(), 3), RandomBuffer(s.q_floats(), 4), {}, {}};
}

struct SdpaContext;
Buffer SimdattnOutput(SdpaContext& ctx);

struct SdpaContext {
  SdpaContext(const SdpaCase& c_in, std::shared_ptr<Lazy<SdpaOperands>> operands_in,
              BaselinePool* pool_in)
      : c(c_in), operands(std::move(operands_in)), pool(pool_in),
        reference([this] { return SimdattnOutput(*this); }) {}

  SdpaCase c;
  std::shared_ptr<Lazy<SdpaOperands>> operands;
  BaselinePool* pool;
  Lazy<Buffer> reference;  // simdattn's output for this case, computed once on first need
};

float Scale(const SdpaShape& s) { return 1.0f / std::sqrt(static_cast<float>(s.d)); }

// simdattn_sdpa on the case's buffers, read as [batch, heads, seq, d] (bshd false) or through
// BSHD strides, the (batch, seq, heads * d) layout that projection GEMMs produce (what ONNX
// Runtime and flash-attn take): the same buffers, another problem of the same cost.
bool RunSimdattnLayout(SdpaContext& ctx, float* out, bool bshd) {
  SdpaOperands& o = ctx.operands->Get();
  const SdpaShape& s = o.shape;
  simdattn_sdpa_options opt;
  simdattn_sdpa_options_init(&opt);
  opt.causal = ctx.c.causal ? SIMDATTN_CAUSAL_TOP_LEFT : SIMDATTN_CAUSAL_NONE;
  opt.kv_heads = s.kv_heads;
  if (bshd) {
    opt.q_strides = {s.q_len * s.heads * s.d, s.d, s.heads * s.d};
    opt.out_strides = opt.q_strides;
    opt.k_strides = {s.kv_len * s.kv_heads * s.d, s.d, s.kv_heads * s.d};
    opt.v_strides = opt.k_strides;
  }
  return simdattn_sdpa(o.q.get(), o.k.get(), o.v.get(), out, s.batch, s.heads, s.q_len, s.kv_len,
                       s.d, s.d, &opt) == SIMDATTN_OK;
}

bool RunSimdattn(SdpaContext& ctx, float* out) { return RunSimdattnLayout(ctx, out, false); }

// Its ratio to simdattn (contiguous BHSD) is the cost of the layout.
bool RunSimdattnBshd(SdpaContext& ctx, float* out) { return RunSimdattnLayout(ctx, out, true); }

bool PrefillApplies(const SdpaCase& c) { return !c.memory_bound; }

Buffer SimdattnOutput(SdpaContext& ctx) {
  Buffer out = ZeroBuffer(static_cast<size_t>(ctx.c.shape.q_floats()));
  if (!RunSimdattn(ctx, out.get())) {
    std::fprintf(stderr, "simdattn_sdpa failed: %s\n", simdattn_last_error());
    std::abort();
  }
  return out;
}

NaiveAttentionShape NaiveShape(const SdpaCase& c) {
  const SdpaShape& s = c.shape;
  return {s.q_len, s.kv_len, s.d, s.d, Scale(s), c.causal};
}

// Per (batch, head), parallel over batch x heads on the pool; OpenBLAS single-threaded inside.
// GQA: query head h reads kv head h / group.
bool RunNaive(SdpaContext& ctx, float* out) {
  SdpaOperands& o = ctx.operands->Get();
  const SdpaShape& s = o.shape;
  const NaiveAttentionShape ns = NaiveShape(ctx.c);
  auto view = [&](int64_t i) {
    const int64_t b = i / s.heads, h = i % s.heads;
    const int64_t kv = (b * s.kv_heads + h / s.group()) * s.kv_len * s.d;
    return HeadView{o.q.get() + i * s.q_len * s.d, s.d, o.k.get() + kv, s.d,
                    o.v.get() + kv, s.d, out + i * s.q_len * s.d, s.d};
  };
  NaiveAttention(*ctx.pool, s.batch * s.heads, ns, view, o.naive_scores.get());
  return true;
}

// simdattn's unfused path: S = scale Q K^T (batched GEMM), softmax, O = P V (batched GEMM).
// In [batch, heads, seq, d] the query heads of one GQA group are consecutive, so each
// (batch, kv head) is one GEMM with group * q_len rows: K and V are never copied.
bool RunUnfused(SdpaContext& ctx, float* out) {
  SdpaOperands& o = ctx.operands->Get();
  const SdpaShape& s = o.shape;
  const int64_t pairs = s.batch * s.kv_heads, rows = s.group() * s.q_len;
  float* scores = o.unfused_scores.get();
  return simdattn_sgemm_batched(0, 1, pairs, rows, s.kv_len, s.d, Scale(s), o.q.get(), s.d,
                                rows * s.d, o.k.get(), s.d, s.kv_len * s.d, 0.0f, scores,
                                s.kv_len, rows * s.kv_len) == SIMDATTN_OK &&
         simdattn_softmax(pairs * rows, s.kv_len, scores, s.kv_len, scores, s.kv_len) ==
             SIMDATTN_OK &&
         simdattn_sgemm_batched(0, 0, pairs, rows, s.d, s.kv_len, 1.0f, scores, s.kv_len,
                                rows * s.kv_len, o.v.get(), s.d, s.kv_len * s.d, 0.0f, out, s.d,
                                rows * s.d) == SIMDATTN_OK;
}

bool UnfusedApplies(const SdpaCase& c) {
  return !c.causal && c.shape.score_floats() * static_cast<int64_t>(sizeof(float)) <=
                          kMaxUnfusedScoreBytes;
}

struct SdpaImpl {
  const char* name;
  bool (*run)(SdpaContext& ctx, float* out);
  bool (*applies)(const SdpaCase& c);  // null: every case
  void (*prepare)(SdpaOperands& o, BaselinePool& pool, const SdpaCase& c);  // null: nothing
  bool same_output = true;  // false: another layout of the data, not compared with simdattn
};

void PrepareNaive(SdpaOperands& o, BaselinePool& pool, const SdpaCase& c) {
  if (!o.naive_scores) o.naive_scores = NaiveScores(pool, NaiveShape(c));
}

void PrepareUnfused(SdpaOperands& o, BaselinePool&, const SdpaCase&) {
  if (!o.unfused_scores) o.unfused_scores = ZeroBuffer(static_cast<size_t>(o.shape.score_floats()));
}

const SdpaImpl kImpls[] = {{"simdattn", RunSimdattn, nullptr, nullptr},
                           {"naive_openblas", RunNaive, nullptr, PrepareNaive},
                           {"unfused", RunUnfused, UnfusedApplies, PrepareUnfused},
                           {"bshd", RunSimdattnBshd, PrefillApplies, nullptr, false}};
const SdpaImpl& kPrimary = kImpls[0];

void RunSdpa(benchmark::State& state, const SdpaImpl& impl, SdpaContext& ctx) {
  SdpaOperands& o = ctx.operands->Get();
  if (impl.prepare != nullptr) impl.prepare(o, *ctx.pool, ctx.c);
  for (auto _ : state) {
    if (!impl.run(ctx, o.out.get())) {
      state.SkipWithError((std::string(impl.name) + " failed: " + simdattn_last_error()).c_str());
      return;
    }
  }
  if (&impl != &kPrimary && impl.same_output &&
      !CheckAgainstSimdattn(state, o.out.get(), ctx.reference.Get().get(),
                            static_cast<size_t>(o.shape.q_floats()), kTolerance)) {
    return;
  }
  const SdpaShape& s = o.shape;
  const double flops = 4.0 * s.batch * s.heads * s.q_len * static_cast<double>(s.kv_len) * s.d;
  SetFlops(state, ctx.c.causal ? flops / 2 : flops);
  if (ctx.c.memory_bound) {
    const int64_t kv_bytes = 2 * s.kv_floats() * static_cast<int64_t>(sizeof(float));
    SetBytesAndItems(state, kv_bytes, 2 * s.kv_floats());
  }
}

void RegisterAll(int threads) {
  SetUpNaiveOpenBlas(threads);
  auto pool = std::make_shared<BaselinePool>(threads);
  // Causal and non-causal cases of a shape share its operands.
  std::map<SdpaShape, std::shared_ptr<Lazy<SdpaOperands>>> operands;
  // Case-major order: a case's implementations run back to back, under the same conditions.
  for (const SdpaCase& c : Cases()) {
    auto& lazy = operands[c.shape];
    if (!lazy) {
      const SdpaShape s = c.shape;
      lazy = std::make_shared<Lazy<SdpaOperands>>([s] { return MakeOperands(s); });
    }
    auto ctx = std::make_shared<SdpaContext>(c, lazy, pool.get());
    for (const SdpaImpl& impl : kImpls) {
      if (impl.applies != nullptr && !impl.applies(c)) continue;
      Register(BenchName("sdpa", impl.name, CaseName(c)),
               [&impl, ctx, pool](benchmark::State& st) { RunSdpa(st, impl, *ctx); });
    }
  }
  RegisterReadBandwidth(pool);
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

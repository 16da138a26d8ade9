// Multi-head self-attention (torch.nn.MultiheadAttention forward, eval mode, seq-first, with
// biases): simdattn_mhsa against the naive composition on OpenBLAS (QKV projection + bias, the
// naive attention per (batch, head), out projection + bias), on the same threads.
// Names: mhsa/<impl>/s<seq>_b<batch>_e<E>_h<heads> (tools/bench_torch.py writes mhsa/torch/...
// with the same shape names). Counter: flops = 2 rows E 3E + 4 batch heads seq^2 (E / heads) +
// 2 rows E E with rows = seq batch (projections, attention, output projection).
// The baseline's output is compared with simdattn's once per run, outside the timed loop
// (counter vs_simdattn; above kTolerance the benchmark fails).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#define SIMDATTN_BENCH_WITH_OPENBLAS  // the naive attention baseline of bench_util.h
#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

struct MhsaShape {
  int64_t seq, batch, embed, heads;

  int64_t rows() const { return seq * batch; }
  int64_t head_dim() const { return embed / heads; }
};

// The seed model's layer (seq 10, batch 32, E 512, 8 heads: the headline), then longer
// sequences where attention, not the projections, grows to dominate.
const MhsaShape kShapes[] = {{10, 32, 512, 8}, {128, 8, 512, 8}, {512, 4, 1024, 16},
                             {2048, 1, 2048, 16}};

std::string ShapeName(const MhsaShape& s) {
  return "s" + std::to_string(s.seq) + "_b" + std::to_string(s.batch) + "_e" +
         std::to_string(s.embed) + "_h" + std::to_string(s.heads);
}

// Outputs are O(1) (weights scaled below); 1e-4 of max(1, max |y|) leaves room for the
// baseline's different summation orders over E up to 2048.
constexpr double kTolerance = 1e-4;
// Weights uniform in [-1, 1) times 1/sqrt(E), the scale of torch's initialisation, so q k^T stays
// O(1) and the softmax is not one-hot (a one-hot softmax would hide errors in the scores).
// Biases get the same scale (torch initialises them to 0, which would not exercise them).
float WeightScale(const MhsaShape& s) { return 1.0f / std::sqrt(static_cast<float>(s.embed)); }

struct MhsaOperands {
  MhsaShape shape;
  Buffer x, in_w, in_b, out_w, out_b, y;
  Buffer qkv, attn, scores;  // naive baseline scratch, allocated on its first run
};

Buffer ScaledRandom(int64_t count, uint32_t seed, float scale) {
  Buffer buf = RandomBuffer(static_cast<size_t>(count), seed);
  for (int64_t i = 0; i < count; ++i) buf[i] *= scale;
  return buf;
}

MhsaOperands MakeOperands(const MhsaShape& s) {
  const int64_t e = s.embed;
  const float w = WeightScale(s);
  return MhsaOperands{s,
                      RandomBuffer(static_cast<size_t>(s.rows() * e), 1),
                      ScaledRandom(3 * e * e, 2, w),
                      ScaledRandom(3 * e, 3, w),
                      ScaledRandom(e * e, 4, w),
                      ScaledRandom(e, 5, w),
                      ZeroBuffer(static_cast<size_t>(s.rows() * e)),
                      {},
                      {},
                      {}};
}

struct MhsaContext;
Buffer SimdattnOutput(MhsaContext& ctx);

struct MhsaContext {
  MhsaContext(const MhsaShape& shape, BaselinePool* pool_in)
      : operands([shape] { return MakeOperands(shape); }),
        pool(pool_in),
        reference([this] { return SimdattnOutput(*this); }) {}

  Lazy<MhsaOperands> operands;
  BaselinePool* pool;
  Lazy<Buffer> reference;  // simdattn's output, computed once on first need
};

bool RunSimdattn(MhsaContext& ctx, float* y) {
  MhsaOperands& o = ctx.operands.Get();
  const MhsaShape& s = o.shape;
  const simdattn_mha_weights weights = {o.in_w.get(), o.in_b.get(), o.out_w.get(), o.out_b.get()};
  simdattn_mha_options opt;
  simdattn_mha_options_init(&opt);  // seq-first ([seq, batch, E]), PyTorch's default
  return simdattn_mhsa(o.x.get(), y, s.seq, s.batch, s.embed, s.heads, &weights, &opt) ==
         SIMDATTN_OK;
}

Buffer SimdattnOutput(MhsaContext& ctx) {
  Buffer y = ZeroBuffer(static_cast<size_t>(ctx.operands.Get().shape.rows() *
                                            ctx.operands.Get().shape.embed));
  if (!RunSimdattn(ctx, y.get())) {
    std::fprintf(stderr, "simdattn_mhsa failed: %s\n", simdattn_last_error());
    std::abort();
  }
  return y;
}

NaiveAttentionShape NaiveShape(const MhsaShape& s) {
  return {s.seq, s.seq, s.head_dim(), s.head_dim(),
          1.0f / std::sqrt(static_cast<float>(s.head_dim())), false};
}

void PrepareNaive(MhsaContext& ctx) {
  MhsaOperands& o = ctx.operands.Get();
  if (o.qkv) return;
  const MhsaShape& s = o.shape;
  o.qkv = ZeroBuffer(static_cast<size_t>(s.rows() * 3 * s.embed));
  o.attn = ZeroBuffer(static_cast<size_t>(s.rows() * s.embed));
  o.scores = NaiveScores(*ctx.pool, NaiveShape(s));
}

// qkv = x W_in^T + b_in (rows split over the pool); per (batch, head) the naive attention, reading
// q, k, v in place from qkv (token (t, b) is row t * batch + b) and writing attn [rows, E]; then
// y = attn W_out^T + b_out. OpenBLAS is single-threaded inside every piece.
bool RunNaive(MhsaContext& ctx, float* y) {
  MhsaOperands& o = ctx.operands.Get();
  const MhsaShape& s = o.shape;
  const int64_t e = s.embed, d = s.head_dim();
  BaselinePool& pool = *ctx.pool;
  NaiveLinear(pool, s.rows(), 3 * e, e, o.x.get(), o.in_w.get(), o.in_b.get(), o.qkv.get());
  auto view = [&](int64_t i) {
    const int64_t b = i / s.heads, h = i % s.heads;
    const float* q = o.qkv.get() + b * 3 * e + h * d;
    return HeadView{q, s.batch * 3 * e, q + e, s.batch * 3 * e, q + 2 * e, s.batch * 3 * e,
                    o.attn.get() + b * e + h * d, s.batch * e};
  };
  NaiveAttention(pool, s.batch * s.heads, NaiveShape(s), view, o.scores.get());
  NaiveLinear(pool, s.rows(), e, e, o.attn.get(), o.out_w.get(), o.out_b.get(), y);
  return true;
}

struct MhsaImpl {
  const char* name;
  bool (*run)(MhsaContext& ctx, float* y);
  void (*prepare)(MhsaContext& ctx);  // null: nothing
};
const MhsaImpl kImpls[] = {{"simdattn", RunSimdattn, nullptr},
                           {"naive_openblas", RunNaive, PrepareNaive}};
const MhsaImpl& kPrimary = kImpls[0];

void RunMhsa(benchmark::State& state, const MhsaImpl& impl, MhsaContext& ctx) {
  MhsaOperands& o = ctx.operands.Get();
  if (impl.prepare != nullptr) impl.prepare(ctx);
  for (auto _ : state) {
    if (!impl.run(ctx, o.y.get())) {
      state.SkipWithError((std::string(impl.name) + " failed: " + simdattn_last_error()).c_str());
      return;
    }
  }
  const MhsaShape& s = o.shape;
  if (&impl != &kPrimary &&
      !CheckAgainstSimdattn(state, o.y.get(), ctx.reference.Get().get(),
                            static_cast<size_t>(s.rows() * s.embed), kTolerance)) {
    return;
  }
  const double rows = static_cast<double>(s.rows()), e = static_cast<double>(s.embed);
  const double seq = static_cast<double>(s.seq);
  SetFlops(state, 2 * rows * e * 3 * e + 4 * s.batch * s.heads * seq * seq * s.head_dim() +
                      2 * rows * e * e);
}

void RegisterAll(int threads) {
  SetUpNaiveOpenBlas(threads);
  auto pool = std::make_shared<BaselinePool>(threads);
  // Shape-major order: a shape's implementations run back to back, under the same conditions.
  for (const MhsaShape& shape : kShapes) {
    auto ctx = std::make_shared<MhsaContext>(shape, pool.get());
    for (const MhsaImpl& impl : kImpls) {
      Register(BenchName("mhsa", impl.name, ShapeName(shape)),
               [&impl, ctx, pool](benchmark::State& st) { RunMhsa(st, impl, *ctx); });
    }
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

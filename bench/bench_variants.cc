// The 0.2 attention variants against the plain kernel, in one run (ratios are the targets of the
// variants issue). Names: variants/<impl>/<shape>, flops = the work the variant must do
// (4 B H Lq * visible keys * D).
//   window:  variants/{causal,window4096}/b1_h8_l32768_d64_causal — cost proportional to the
//            window (ideal 8x less than full causal at L = 32768).
//   scores:  variants/{plain,softcap,alibi,sinks,all}/b1_h16_l2048_d64 — softcap (a tanh per
//            score), ALiBi (a fused multiply-add per score) and sinks (free) against plain.
//   varlen:  variants/{varlen,padded,one_by_one}/h8_d64_seqs16_16to2048_causal — 16 sequences
//            of lengths 16 .. 2048 (evenly spread) in one simdattn_sdpa_varlen call, padded to
//            2048 with kv_lens in one simdattn_sdpa call, and one simdattn_sdpa call each.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"

namespace simdattn_bench {
namespace {

// Inputs of one [batch, heads, len, d] self-attention problem, made on first use.
struct Operands {
  int64_t batch, heads, len, d;
  Buffer q, k, v, out;
};

std::shared_ptr<Lazy<Operands>> LazyOperands(int64_t batch, int64_t heads, int64_t len, int64_t d) {
  return std::make_shared<Lazy<Operands>>([=] {
    const size_t n = static_cast<size_t>(batch * heads * len * d);
    return Operands{batch, heads, len, d, RandomBuffer(n, 1), RandomBuffer(n, 2),
                    RandomBuffer(n, 3), ZeroBuffer(n)};
  });
}

void Fail(benchmark::State& state, const char* what) {
  state.SkipWithError((std::string(what) + " failed: " + simdattn_last_error()).c_str());
}

// ---------------------------------------------------------------- window and score variants

constexpr int64_t kWindowLen = 32768, kWindow = 4096;
constexpr int64_t kScoreLen = 2048;
const float kSlopeBase = 0.5f;  // ALiBi slopes 2^-(8 h / H) as in BLOOM: base^(h + 1) for H 16

enum Variant { kPlain, kCausal, kWindowed, kSoftcap, kAlibi, kSinks, kAll };

void RunVariant(benchmark::State& state, Lazy<Operands>& lazy, Variant variant) {
  Operands& o = lazy.Get();
  std::vector<float> slopes(static_cast<size_t>(o.heads)), sinks(static_cast<size_t>(o.heads));
  for (int64_t h = 0; h < o.heads; ++h) {
    slopes[h] = std::pow(kSlopeBase, static_cast<float>(h + 1));
    sinks[h] = 0.25f * static_cast<float>(h);
  }
  simdattn_sdpa_options opt;
  simdattn_sdpa_options_init(&opt);
  if (variant == kCausal || variant == kWindowed) opt.causal = SIMDATTN_CAUSAL_TOP_LEFT;
  if (variant == kWindowed) opt.window = 1, opt.window_left = kWindow - 1, opt.window_right = 0;
  if (variant == kSoftcap || variant == kAll) opt.softcap = 50.0f;  // Gemma 2's attention cap
  if (variant == kAlibi || variant == kAll) opt.alibi_slopes = slopes.data();
  if (variant == kSinks || variant == kAll) opt.sinks = sinks.data();
  for (auto _ : state) {
    if (simdattn_sdpa(o.q.get(), o.k.get(), o.v.get(), o.out.get(), o.batch, o.heads, o.len,
                      o.len, o.d, o.d, &opt) != SIMDATTN_OK) {
      return Fail(state, "simdattn_sdpa");
    }
  }
  // Visible keys per query: all, i + 1 (causal), or min(i + 1, window).
  double pairs = static_cast<double>(o.len) * o.len;
  if (variant == kCausal) pairs = 0.5 * o.len * (o.len + 1.0);
  if (variant == kWindowed) {
    pairs = 0.5 * kWindow * (kWindow + 1.0) + static_cast<double>(o.len - kWindow) * kWindow;
  }
  SetFlops(state, 4.0 * o.batch * o.heads * pairs * o.d);
}

// ---------------------------------------------------------------- varlen

constexpr int64_t kSeqs = 16, kMinLen = 16, kMaxLen = 2048, kVarHeads = 8, kVarD = 64;

// Sequence lengths evenly spread over [kMinLen, kMaxLen].
std::vector<int64_t> VarlenLengths() {
  std::vector<int64_t> len(kSeqs);
  for (int64_t i = 0; i < kSeqs; ++i) len[i] = kMinLen + i * (kMaxLen - kMinLen) / (kSeqs - 1);
  return len;
}

// Token-major packed q/k/v (varlen) and the same data padded to kMaxLen in [B, H, L, D].
struct VarlenData {
  std::vector<int64_t> lens, cu;
  Buffer packed_q, packed_k, packed_v, packed_out;
  Buffer q, k, v, out;  // [kSeqs, kVarHeads, kMaxLen, kVarD]
};

VarlenData MakeVarlen() {
  VarlenData d;
  d.lens = VarlenLengths();
  d.cu.assign(1, 0);
  for (int64_t l : d.lens) d.cu.push_back(d.cu.back() + l);
  const size_t tokens = static_cast<size_t>(d.cu.back() * kVarHeads * kVarD);
  const size_t padded = static_cast<size_t>(kSeqs * kVarHeads * kMaxLen * kVarD);
  d.packed_q = RandomBuffer(tokens, 4), d.packed_k = RandomBuffer(tokens, 5);
  d.packed_v = RandomBuffer(tokens, 6), d.packed_out = ZeroBuffer(tokens);
  d.q = RandomBuffer(padded, 7), d.k = RandomBuffer(padded, 8), d.v = RandomBuffer(padded, 9);
  d.out = ZeroBuffer(padded);
  return d;
}

enum VarlenImpl { kVarlen, kPadded, kOneByOne };

bool RunVarlenImpl(VarlenData& d, VarlenImpl impl) {
  simdattn_sdpa_options opt;
  simdattn_sdpa_options_init(&opt);
  opt.causal = SIMDATTN_CAUSAL_TOP_LEFT;
  if (impl == kVarlen) {
    return simdattn_sdpa_varlen(d.packed_q.get(), d.packed_k.get(), d.packed_v.get(),
                                d.packed_out.get(), kSeqs, kVarHeads, d.cu.data(), d.cu.data(),
                                kVarD, kVarD, &opt) == SIMDATTN_OK;
  }
  if (impl == kPadded) {
    opt.kv_lens = d.lens.data();
    return simdattn_sdpa(d.q.get(), d.k.get(), d.v.get(), d.out.get(), kSeqs, kVarHeads, kMaxLen,
                         kMaxLen, kVarD, kVarD, &opt) == SIMDATTN_OK;
  }
  // One call per sequence on its packed tokens (BSHD strides, as the varlen call reads them).
  const int64_t token = kVarHeads * kVarD;
  opt.q_strides = opt.k_strides = opt.v_strides = opt.out_strides = {0, kVarD, token};
  for (int64_t b = 0; b < kSeqs; ++b) {
    const int64_t off = d.cu[b] * token;
    if (simdattn_sdpa(d.packed_q.get() + off, d.packed_k.get() + off, d.packed_v.get() + off,
                      d.packed_out.get() + off, 1, kVarHeads, d.lens[b], d.lens[b], kVarD, kVarD,
                      &opt) != SIMDATTN_OK) {
      return false;
    }
  }
  return true;
}

void RunVarlen(benchmark::State& state, Lazy<VarlenData>& lazy, VarlenImpl impl) {
  VarlenData& d = lazy.Get();
  for (auto _ : state) {
    if (!RunVarlenImpl(d, impl)) return Fail(state, "varlen case");
  }
  double pairs = 0.0;  // the causal work of the real sequences (what varlen must do)
  for (int64_t l : d.lens) pairs += 0.5 * l * (l + 1.0);
  SetFlops(state, 4.0 * kVarHeads * pairs * kVarD);
}

void RegisterAll(int) {
  auto window = LazyOperands(1, 8, kWindowLen, 64);
  const std::string wshape = "b1_h8_l" + std::to_string(kWindowLen) + "_d64_causal";
  Register(BenchName("variants", "causal", wshape),
           [window](benchmark::State& st) { RunVariant(st, *window, kCausal); });
  Register(BenchName("variants", "window" + std::to_string(kWindow), wshape),
           [window](benchmark::State& st) { RunVariant(st, *window, kWindowed); });
  auto scores = LazyOperands(1, 16, kScoreLen, 64);
  const std::string sshape = "b1_h16_l" + std::to_string(kScoreLen) + "_d64";
  const std::pair<const char*, Variant> score_variants[] = {
      {"plain", kPlain}, {"softcap", kSoftcap}, {"alibi", kAlibi}, {"sinks", kSinks}, {"all", kAll}};
  for (const auto& [name, variant] : score_variants) {
    const Variant v = variant;
    Register(BenchName("variants", name, sshape),
             [scores, v](benchmark::State& st) { RunVariant(st, *scores, v); });
  }
  auto varlen = std::make_shared<Lazy<VarlenData>>(MakeVarlen);
  const std::string vshape = "h8_d64_seqs16_16to2048_causal";
  const std::pair<const char*, VarlenImpl> varlen_impls[] = {
      {"varlen", kVarlen}, {"padded", kPadded}, {"one_by_one", kOneByOne}};
  for (const auto& [name, impl] : varlen_impls) {
    const VarlenImpl i = impl;
    Register(BenchName("variants", name, vshape),
             [varlen, i](benchmark::State& st) { RunVarlen(st, *varlen, i); });
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

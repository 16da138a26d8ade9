// libFuzzer target: simdattn_mhsa with every options field (struct_size, batch_first, causal,
// key_padding_mask, attn_mask, attn_weights), optional biases, NULL weights, and y == x. Checks:
// a documented status; on error nothing written (x included, for y == x); on success the inputs
// unchanged, guards intact, no NaN from finite moderate inputs, and each row of the averaged
// attention weights a probability vector (sums to 1 within the derived bound) or all 0.
#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const bool specials = flags & 1, in_place = flags & 2, use_kpm = flags & 4;
  const bool use_mask = flags & 8, use_w = flags & 16, use_bias = flags & 32;
  const bool null_weights = (flags & 0xc0) == 0xc0;
  const int64_t seq = Size(in, 12), batch = Size(in, 3);
  const uint8_t hb = in.ConsumeIntegral<uint8_t>();
  const int64_t heads = hb < 240 ? 1 + hb % 4 : SatAdd(Size(in, 4), -(hb % 2));
  const uint8_t eb = in.ConsumeIntegral<uint8_t>();
  const int64_t e = eb < 240 ? SatMul(std::max<int64_t>(heads, 1), eb % 5) : Size(in, 16);
  simdattn_mha_options o;
  simdattn_mha_options_init(&o);
  const uint8_t ss = in.ConsumeIntegral<uint8_t>();
  if (ss >= 245) o.struct_size = static_cast<size_t>(ss % 4) * 8;
  o.batch_first = in.ConsumeIntegralInRange<int32_t>(0, 10) == 10 ? 2 : in.ConsumeBool();
  const uint8_t ca = in.ConsumeIntegral<uint8_t>();
  o.causal = ca < 250 ? ca % 3 : static_cast<int32_t>(ca) - 252;

  const int64_t nx = Allocatable(Product({seq, batch, e}));
  const int64_t nin = Allocatable(Product({3, e, e})), nout = Allocatable(Product({e, e}));
  const int64_t nkpm = Allocatable(Product({batch, seq})), nmask = Allocatable(Product({seq, seq}));
  const int64_t nw = Allocatable(Product({batch, seq, seq}));
  Guarded x = nx >= 0 ? Guarded(nx, in, specials) : Guarded();
  Guarded y = nx >= 0 ? Guarded(nx, in, false) : Guarded();
  Guarded w_in = nin >= 0 ? Guarded(nin, in, specials) : Guarded();
  Guarded w_out = nout >= 0 ? Guarded(nout, in, specials) : Guarded();
  Guarded b_in = use_bias && e >= 0 && e <= 4096 ? Guarded(3 * e, in, specials) : Guarded();
  Guarded b_out = use_bias && e >= 0 && e <= 4096 ? Guarded(e, in, specials) : Guarded();
  std::vector<uint8_t> kpm;
  if (use_kpm && nkpm >= 0) {
    for (int64_t i = 0; i < nkpm; ++i) kpm.push_back(in.ConsumeIntegral<uint8_t>() >= 200);
    o.key_padding_mask = kpm.data();
  }
  Guarded mask;
  if (use_mask && nmask >= 0) {
    mask = Guarded(nmask, in, specials);
    for (int64_t i = 0; i < nmask; ++i) {
      if (in.ConsumeIntegral<uint8_t>() >= 224) mask[i] = -INFINITY;
    }
    o.attn_mask = mask.data();
  }
  Guarded attn = use_w && nw >= 0 ? Guarded(nw, in, false) : Guarded();
  if (use_w && nw >= 0) o.attn_weights = attn.data();
  simdattn_mha_weights w = {nin >= 0 ? w_in.data() : nullptr, use_bias ? b_in.data() : nullptr,
                            nout >= 0 ? w_out.data() : nullptr, use_bias ? b_out.data() : nullptr};
  float* x_ptr = nx >= 0 ? x.data() : nullptr;
  float* y_ptr = in_place ? x_ptr : (nx >= 0 ? y.data() : nullptr);
  const Guarded x0 = x, y0 = y, win0 = w_in, wout0 = w_out, bin0 = b_in, bout0 = b_out;
  const Guarded mask0 = mask, attn0 = attn;
  const std::vector<uint8_t> kpm0 = kpm;
  const simdattn_status s = simdattn_mhsa(x_ptr, y_ptr, seq, batch, e, heads,
                                          null_weights ? nullptr : &w, &o);
  CheckStatus(s);
  FUZZ_CHECK(x.GuardsIntact() && y.GuardsIntact() && w_in.GuardsIntact() && w_out.GuardsIntact() &&
                 b_in.GuardsIntact() && b_out.GuardsIntact() && mask.GuardsIntact() &&
                 attn.GuardsIntact(),
             "guard zone written");
  const bool weights_same = w_in.Same(win0) && w_out.Same(wout0) && b_in.Same(bin0) &&
                            b_out.Same(bout0) && mask.Same(mask0) && kpm == kpm0;
  if (s != SIMDATTN_OK) {
    FUZZ_CHECK(weights_same && x.Same(x0) && y.Same(y0) && attn.Same(attn0),
               "a failed call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  FUZZ_CHECK(weights_same, "an input changed");
  if (!in_place) FUZZ_CHECK(x.Same(x0), "x changed");
  if (seq == 0 || batch == 0) {
    FUZZ_CHECK(x.Same(x0) && y.Same(y0) && attn.Same(attn0), "an empty call wrote");
    return 0;
  }
  const Guarded& yy = in_place ? x : y;
  if (!specials) {
    for (int64_t i = 0; i < yy.n; ++i) {
      FUZZ_CHECK(!std::isnan(yy.buf[kGuard + i]), "y[%lld] is NaN", (long long)i);
    }
  }
  if (o.attn_weights != nullptr && !specials) {
    for (int64_t r = 0; r < batch * seq; ++r) {
      double sum = 0;
      for (int64_t j = 0; j < seq; ++j) {
        const float wv = attn[r * seq + j];
        FUZZ_CHECK(wv >= 0.0f && wv <= 1.0f, "weight %g", double{wv});
        sum += wv;
      }
      // Each head's row sums to 1 within its softmax bound (a few u per key), the mean adds
      // gamma_heads; 16 u per key covers both with margin.
      FUZZ_CHECK(sum == 0.0 || std::fabs(sum - 1.0) <= 16 * 0x1p-24 * double(seq + heads),
                 "weights row %lld sums to %.17g", (long long)r, sum);
    }
  }
  return 0;
}

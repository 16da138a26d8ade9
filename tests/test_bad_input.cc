// The bad-input matrix: one table listing, for every argument of every C entry point, its
// invalid values (negative, too-small leading dimension, 2^62 x 2^62 overflow, NULL, struct_size
// 0 or below the first version's, unknown flags, overlapping outputs, NaN/inf scale) with the
// exact status and a fragment of the message that must name the argument and its value. All
// buffers of a call live in one storage vector whose outputs hold the sentinel: after each
// failure the whole storage must be bitwise unchanged.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

namespace simdattn_test {
namespace {

constexpr int64_t k62 = int64_t{1} << 62;

// Inputs (random) then outputs (sentinel) of every valid call below, at fixed offsets.
struct Storage {
  // sgemm: A 2 x (3 x 5), B 2 x (5 x 4), C 2 x (3 x 4); softmax x 3 x 5 -> y.
  static constexpr int64_t kA = 0, kB = 30, kX = 70, kIn = 85;
  // sdpa: batch 2, heads 4, kv_heads 2, q_len 5, kv_len 7, d_k 8, d_v 6, mask [5, 7].
  static constexpr int64_t kQ = kIn, kK = kQ + 320, kV = kK + 224, kMask = kV + 168;
  // mhsa: seq 3, batch 2, E 8: x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
  // attn_mask [3, 3]; key_padding_mask is separate (bytes).
  static constexpr int64_t kMx = kMask + 35, kWin = kMx + 48, kBin = kWin + 192, kWout = kBin + 24;
  static constexpr int64_t kBout = kWout + 64, kAmask = kBout + 8;
  // attention_merge: n 2, rows 3, d_v 4: outs[i] ld 5 (14 floats each), lses[i] [3].
  static constexpr int64_t kMouts = kAmask + 9, kMlses = kMouts + 28, kOutputs = kMlses + 6;
  // Outputs: C, y, out [2, 4, 5, 6], lse [2, 4, 5], weights [2, 4, 5, 7], my, attn_weights.
  static constexpr int64_t kC = kOutputs, kY = kC + 24, kOut = kY + 15, kLse = kOut + 240;
  static constexpr int64_t kWeights = kLse + 40, kMy = kWeights + 280, kAttn = kMy + 48;
  // Merged out [3, 4] and lse [3].
  static constexpr int64_t kMout = kAttn + 18, kMlse = kMout + 12;
  // cast: 6 floats in (the sentinel: any pattern converts), 6 floats out (room for 6 f32).
  static constexpr int64_t kCastIn = kMlse + 3, kCastOut = kCastIn + 6, kEnd = kCastOut + 6;

  std::vector<float> f = RandomFloats(kEnd, 99);
  uint8_t kpm[6] = {0, 0, 1, 0, 0, 0};
  int64_t kv_lens[2] = {7, 3};
  // sdpa 0.2: ALiBi slopes and sinks of up to 12 query heads (valid: finite; sinks also -inf).
  float slopes[12] = {0.5f, 0.25f, 0.0f, -0.125f, 1, 2, 3, 4, 5, 6, 7, 8};
  float sinks[12] = {0.5f, -kInf, 3.0f, -2.0f, 1, 2, 3, 4, 5, 6, 7, 8};
  Storage() { std::fill(f.begin() + kOutputs, f.end(), Sentinel()); }
  float* at(int64_t o) { return f.data() + o; }
};

// The valid calls; a case changes one argument.
struct Gemm {
  int32_t ta = 0, tb = 0;
  int64_t batch = 2, m = 3, n = 4, k = 5;
  float alpha = 1, beta = 0.5f;
  const float* a;
  int64_t lda = 5, sa = 15;
  const float* b;
  int64_t ldb = 4, sb = 20;
  float* c;
  int64_t ldc = 4, sc = 12;
  explicit Gemm(Storage& s) : a(s.at(Storage::kA)), b(s.at(Storage::kB)), c(s.at(Storage::kC)) {}
  simdattn_status Batched() const {
    return simdattn_sgemm_batched(ta, tb, batch, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c,
                                  ldc, sc);
  }
  simdattn_status Single() const {
    return simdattn_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
};
struct Softmax {
  int64_t rows = 3, cols = 5;
  const float* x;
  int64_t ld_x = 5;
  float* y;
  int64_t ld_y = 5;
  explicit Softmax(Storage& s) : x(s.at(Storage::kX)), y(s.at(Storage::kY)) {}
  simdattn_status Run() const { return simdattn_softmax(rows, cols, x, ld_x, y, ld_y); }
};
struct Sdpa {
  const float *q, *k, *v;
  float* out;
  int64_t batch = 2, heads = 4, q_len = 5, kv_len = 7, d_k = 8, d_v = 6;
  simdattn_sdpa_options o;
  bool null_options = false;
  explicit Sdpa(Storage& s)
      : q(s.at(Storage::kQ)), k(s.at(Storage::kK)), v(s.at(Storage::kV)), out(s.at(Storage::kOut)) {
    simdattn_sdpa_options_init(&o);
    o.kv_heads = 2;
    o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    o.mask = s.at(Storage::kMask);
    o.mask_strides = {0, 0, 7};
    o.kv_lens = s.kv_lens;
    o.lse = s.at(Storage::kLse);
    o.weights = s.at(Storage::kWeights);
  }
  simdattn_status Run() const {
    return simdattn_sdpa(q, k, v, out, batch, heads, q_len, kv_len, d_k, d_v,
                         null_options ? nullptr : &o);
  }
};
struct Varlen {  // 2 sequences: 3 and 5 queries against 7 and 5 keys, in the sdpa buffers
  const float *q, *k, *v;
  float* out;
  int64_t batch = 2, heads = 4, d_k = 8, d_v = 6;
  int64_t cu_q[3] = {0, 3, 8}, cu_kv[3] = {0, 7, 12};
  const int64_t* cuq = cu_q;
  const int64_t* cukv = cu_kv;
  simdattn_sdpa_options o;
  explicit Varlen(Storage& s)
      : q(s.at(Storage::kQ)), k(s.at(Storage::kK)), v(s.at(Storage::kV)), out(s.at(Storage::kOut)) {
    simdattn_sdpa_options_init(&o);
    o.kv_heads = 2;
    o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    o.lse = s.at(Storage::kLse);
  }
  simdattn_status Run() const {
    return simdattn_sdpa_varlen(q, k, v, out, batch, heads, cuq, cukv, d_k, d_v, &o);
  }
};
struct Mhsa {
  const float* x;
  float* y;
  int64_t seq = 3, batch = 2, e = 8, heads = 2;
  simdattn_mha_weights w;
  simdattn_mha_options o;
  bool null_weights = false;
  explicit Mhsa(Storage& s) : x(s.at(Storage::kMx)), y(s.at(Storage::kMy)) {
    w = {s.at(Storage::kWin), s.at(Storage::kBin), s.at(Storage::kWout), s.at(Storage::kBout)};
    simdattn_mha_options_init(&o);
    o.key_padding_mask = s.kpm;
    o.attn_mask = s.at(Storage::kAmask);
    o.attn_weights = s.at(Storage::kAttn);
  }
  simdattn_status Run() const {
    return simdattn_mhsa(x, y, seq, batch, e, heads, null_weights ? nullptr : &w, &o);
  }
};

struct Merge {
  int64_t n = 2, rows = 3, d_v = 4;
  const float* outs[2];
  int64_t ld_out = 5;
  const float* lses[2];
  float* out;
  int64_t ld_merged = 4;
  float* lse;
  bool null_outs = false, null_lses = false;
  explicit Merge(Storage& s) : out(s.at(Storage::kMout)), lse(s.at(Storage::kMlse)) {
    outs[0] = s.at(Storage::kMouts), outs[1] = s.at(Storage::kMouts + 14);
    lses[0] = s.at(Storage::kMlses), lses[1] = s.at(Storage::kMlses + 3);
  }
  simdattn_status Run() const {
    return simdattn_attention_merge(n, rows, d_v, null_outs ? nullptr : outs, ld_out,
                                    null_lses ? nullptr : lses, out, ld_merged, lse);
  }
};

// A paged f32 cache over the sdpa K/V buffers: 7 blocks of 2 keys, 2 kv heads, d_k 8, d_v 6;
// sequences of 5 and 3 keys in blocks {4, 0, 6} and {2, 5} (the last table entry is unused).
struct KvCache {
  const float* q;
  float* out;
  int64_t batch = 2, heads = 4, q_len = 5, d_k = 8, d_v = 6;
  int32_t table[6] = {4, 0, 6, 2, 5, -1};
  int64_t seq_lens[2] = {5, 3};
  simdattn_kv_cache c;
  const simdattn_kv_cache* cache = &c;
  simdattn_sdpa_options o;
  explicit KvCache(Storage& s) : q(s.at(Storage::kQ)), out(s.at(Storage::kOut)) {
    simdattn_kv_cache_init(&c);
    c.dtype = SIMDATTN_DTYPE_F32;
    c.k = s.at(Storage::kK), c.v = s.at(Storage::kV);
    c.num_blocks = 7, c.block_size = 2, c.kv_heads = 2;
    c.block_table = table, c.max_blocks_per_seq = 3, c.seq_lens = seq_lens;
    simdattn_sdpa_options_init(&o);
    o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
    o.lse = s.at(Storage::kLse);
  }
  simdattn_status Run() const {
    return simdattn_sdpa_kvcache(q, cache, out, batch, heads, q_len, d_k, d_v, &o);
  }
};

struct Cast {  // 5 floats to bf16
  int64_t n = 5;
  const void* src;
  int32_t src_dtype = SIMDATTN_DTYPE_F32;
  void* dst;
  int32_t dst_dtype = SIMDATTN_DTYPE_BF16;
  explicit Cast(Storage& s) : src(s.at(Storage::kCastIn)), dst(s.at(Storage::kCastOut)) {}
  simdattn_status Run() const { return simdattn_cast(n, src, src_dtype, dst, dst_dtype); }
};

struct BadInput {
  const char* function;
  const char* argument;
  const char* value;
  std::function<simdattn_status(Storage&)> call;
  simdattn_status status;
  const char* message;  // must occur in simdattn_last_error()
};

#define GEMM(...) [](Storage& s) { Gemm g(s); __VA_ARGS__; return g.Batched(); }
#define GEMM1(...) [](Storage& s) { Gemm g(s); __VA_ARGS__; return g.Single(); }
#define SOFTMAX(...) [](Storage& s) { Softmax c(s); __VA_ARGS__; return c.Run(); }
#define SDPA(...) [](Storage& s) { Sdpa c(s); __VA_ARGS__; return c.Run(); }
#define MHSA(...) [](Storage& s) { Mhsa c(s); __VA_ARGS__; return c.Run(); }
#define VARLEN(...) [](Storage& s) { Varlen c(s); __VA_ARGS__; return c.Run(); }
#define MERGE(...) [](Storage& s) { Merge c(s); __VA_ARGS__; return c.Run(); }
#define KVCACHE(...) [](Storage& s) { KvCache c(s); __VA_ARGS__; return c.Run(); }
#define CAST(...) [](Storage& s) { Cast c(s); __VA_ARGS__; return c.Run(); }
constexpr simdattn_status kShape = SIMDATTN_ERR_BAD_SHAPE, kArg = SIMDATTN_ERR_BAD_ARGUMENT;
constexpr simdattn_status kNull = SIMDATTN_ERR_NULL_POINTER;

const BadInput kBadInputs[] = {
    // ---- simdattn_sgemm_batched (and simdattn_sgemm where the argument exists there)
    {"sgemm_batched", "trans_a", "2", GEMM(g.ta = 2), kArg, "trans_a must be 0 or 1 (got 2)"},
    {"sgemm_batched", "trans_a", "-1", GEMM(g.ta = -1), kArg, "trans_a must be 0 or 1 (got -1)"},
    {"sgemm", "trans_a", "INT32_MIN", GEMM1(g.ta = INT32_MIN), kArg,
     "trans_a must be 0 or 1 (got -2147483648)"},
    {"sgemm_batched", "trans_b", "7", GEMM(g.tb = 7), kArg, "trans_b must be 0 or 1 (got 7)"},
    {"sgemm", "trans_b", "-1", GEMM1(g.tb = -1), kArg, "trans_b must be 0 or 1 (got -1)"},
    {"sgemm_batched", "batch", "-1", GEMM(g.batch = -1), kShape, "batch must be >= 0 (got -1)"},
    {"sgemm_batched", "batch", "INT64_MIN", GEMM(g.batch = INT64_MIN), kShape,
     "batch must be >= 0 (got -9223372036854775808)"},
    {"sgemm", "m", "-1", GEMM1(g.m = -1), kShape, "m must be >= 0 (got -1)"},
    {"sgemm_batched", "m", "INT64_MIN", GEMM(g.m = INT64_MIN), kShape,
     "m must be >= 0 (got -9223372036854775808)"},
    {"sgemm", "n", "-4", GEMM1(g.n = -4), kShape, "n must be >= 0 (got -4)"},
    {"sgemm", "k", "-5", GEMM1(g.k = -5), kShape, "k must be >= 0 (got -5)"},
    {"sgemm", "lda", "k - 1", GEMM1(g.lda = 4), kShape, "lda must be >= max(1, k) = 5 (got 4)"},
    {"sgemm", "lda", "m - 1 (trans_a)", GEMM1(g.ta = 1; g.lda = 2), kShape,
     "lda must be >= max(1, m) = 3 (got 2)"},
    {"sgemm", "lda", "0 with k = 0", GEMM1(g.k = 0; g.lda = 0), kShape,
     "lda must be >= max(1, k) = 1 (got 0)"},
    {"sgemm", "lda", "-1", GEMM1(g.lda = -1), kShape, "lda must be >= max(1, k) = 5 (got -1)"},
    {"sgemm", "ldb", "n - 1", GEMM1(g.ldb = 3), kShape, "ldb must be >= max(1, n) = 4 (got 3)"},
    {"sgemm", "ldb", "k - 1 (trans_b)", GEMM1(g.tb = 1; g.ldb = 4), kShape,
     "ldb must be >= max(1, k) = 5 (got 4)"},
    {"sgemm", "ldc", "n - 1", GEMM1(g.ldc = 3), kShape, "ldc must be >= max(1, n) = 4 (got 3)"},
    {"sgemm", "ldc", "0 with n = 0", GEMM1(g.n = 0; g.ldb = 1; g.ldc = 0), kShape,
     "ldc must be >= max(1, n) = 1 (got 0)"},
    {"sgemm_batched", "stride_a", "-1", GEMM(g.sa = -1), kShape, "stride_a must be >= 0 (got -1)"},
    {"sgemm_batched", "stride_b", "-1", GEMM(g.sb = -1), kShape, "stride_b must be >= 0 (got -1)"},
    {"sgemm_batched", "stride_c", "-1", GEMM(g.sc = -1), kShape, "stride_c must be >= 0 (got -1)"},
    {"sgemm", "m, n", "2^62 x 2^62",
     GEMM1(g.m = k62; g.n = k62; g.k = 0; g.lda = 1; g.ldb = k62; g.ldc = k62), kShape,
     "C spans 4611686018427387904 rows of 4611686018427387904 elements with leading dimension "
     "4611686018427387904: overflows int64"},
    {"sgemm", "k", "2^62", GEMM1(g.k = k62; g.lda = k62), kShape,
     "A spans 3 rows of 4611686018427387904 elements with leading dimension 4611686018427387904: "
     "overflows int64"},
    {"sgemm", "ldb", "2^62 (2 rows: one row past overflows)", GEMM1(g.k = 2; g.ldb = k62), kShape,
     "B spans 2 rows of 4 elements with leading dimension 4611686018427387904: overflows int64"},
    {"sgemm_batched", "stride_c", "2^62", GEMM(g.sc = k62), kShape,
     "C: 2 matrices 4611686018427387904 elements apart overflow int64"},
    {"sgemm_batched", "stride_a", "2^62", GEMM(g.sa = k62), kShape,
     "A: 2 matrices 4611686018427387904 elements apart overflow int64"},
    {"sgemm", "a", "NULL", GEMM1(g.a = nullptr), kNull, "A is NULL but has 15 elements"},
    {"sgemm", "b", "NULL", GEMM1(g.b = nullptr), kNull, "B is NULL but has 20 elements"},
    {"sgemm_batched", "c", "NULL", GEMM(g.c = nullptr), kNull, "C is NULL but has 24 elements"},
    {"sgemm_batched", "stride_c", "< one C", GEMM(g.sc = 11), kArg,
     "stride_c (11) is smaller than one C matrix ((m - 1) * ldc + n = 12)"},
    {"sgemm_batched", "stride_c", "0 with batch 2", GEMM(g.sc = 0), kArg,
     "stride_c (0) is smaller than one C matrix"},
    {"sgemm", "c", "overlapping A", GEMM1(g.c = s.at(Storage::kA + 3)), kArg, "C overlaps A"},
    {"sgemm_batched", "c", "overlapping B", GEMM(g.c = s.at(Storage::kB + 20)), kArg,
     "C overlaps B"},
    // ---- simdattn_softmax
    {"softmax", "rows", "-1", SOFTMAX(c.rows = -1), kShape, "rows must be >= 0 (got -1)"},
    {"softmax", "cols", "-1", SOFTMAX(c.cols = -1), kShape, "cols must be >= 0 (got -1)"},
    {"softmax", "ld_x", "cols - 1", SOFTMAX(c.ld_x = 4), kShape,
     "ld_x must be >= max(1, cols) = 5 (got 4)"},
    {"softmax", "ld_y", "0", SOFTMAX(c.ld_y = 0), kShape, "ld_y must be >= max(1, cols) = 5 (got 0)"},
    {"softmax", "rows, cols", "2^62 x 2^62", SOFTMAX(c.rows = k62; c.cols = c.ld_x = c.ld_y = k62),
     kShape,
     "x spans 4611686018427387904 rows of 4611686018427387904 elements with leading dimension "
     "4611686018427387904: overflows int64"},
    {"softmax", "x", "NULL", SOFTMAX(c.x = nullptr), kNull, "x is NULL but has 15 elements"},
    {"softmax", "y", "NULL", SOFTMAX(c.y = nullptr), kNull, "y is NULL but has 15 elements"},
    {"softmax", "y", "overlapping x", SOFTMAX(c.y = s.at(Storage::kX + 2)), kArg, "y overlaps x"},
    {"softmax", "ld_y", "y == x with another ld", SOFTMAX(c.y = s.at(Storage::kX); c.ld_y = 6),
     kArg, "y overlaps x (only y == x with ld_y == ld_x may alias)"},
    // ---- simdattn_sdpa
    {"sdpa", "batch", "-1", SDPA(c.batch = -1), kShape, "batch must be >= 0 (got -1)"},
    {"sdpa", "heads", "INT64_MIN", SDPA(c.heads = INT64_MIN), kShape,
     "heads must be >= 0 (got -9223372036854775808)"},
    {"sdpa", "q_len", "-1", SDPA(c.q_len = -1), kShape, "q_len must be >= 0 (got -1)"},
    {"sdpa", "kv_len", "-7", SDPA(c.kv_len = -7), kShape, "kv_len must be >= 0 (got -7)"},
    {"sdpa", "d_k", "0", SDPA(c.d_k = 0), kShape, "d_k must be >= 1 (got 0): the scale is undefined"},
    {"sdpa", "d_k", "-1 (empty call)", SDPA(c.batch = 0; c.d_k = -1), kShape,
     "d_k must be >= 1 (got -1)"},
    {"sdpa", "d_v", "-6", SDPA(c.d_v = -6), kShape, "d_v must be >= 0 (got -6)"},
    {"sdpa", "heads, q_len", "2^62 x 2^62", SDPA(c.heads = k62; c.q_len = k62; c.o.kv_heads = 1),
     kShape, "q: its extent overflows int64"},
    {"sdpa", "d_k", "2^62", SDPA(c.d_k = k62), kShape, "q: its extent overflows int64"},
    {"sdpa", "kv_len", "2^62", SDPA(c.kv_len = k62), kShape, "k: its extent overflows int64"},
    {"sdpa", "q", "NULL", SDPA(c.q = nullptr), kNull, "q is NULL but has 320 elements"},
    {"sdpa", "k", "NULL", SDPA(c.k = nullptr), kNull, "k is NULL but has 224 elements"},
    {"sdpa", "v", "NULL", SDPA(c.v = nullptr), kNull, "v is NULL but has 168 elements"},
    {"sdpa", "out", "NULL", SDPA(c.out = nullptr), kNull, "out is NULL but has 240 elements"},
    {"sdpa", "options->struct_size", "0", SDPA(c.o.struct_size = 0), kArg,
     "options->struct_size must be >= 176 (the 0.1 layout; call simdattn_sdpa_options_init), got 0"},
    {"sdpa", "options->struct_size", "0.1 size - 1", SDPA(c.o.struct_size = 175), kArg,
     "options->struct_size must be >= 176"},
    {"sdpa", "options->scale", "NaN", SDPA(c.o.scale = kNaN), kArg,
     "options->scale must be finite and >= 0 (0 = 1/sqrt(d_k)), got nan"},
    {"sdpa", "options->scale", "+inf", SDPA(c.o.scale = kInf), kArg, "got inf"},
    {"sdpa", "options->scale", "-inf", SDPA(c.o.scale = -kInf), kArg, "got -inf"},
    {"sdpa", "options->scale", "-0.5", SDPA(c.o.scale = -0.5f), kArg, "got -0.5"},
    {"sdpa", "options->causal", "3", SDPA(c.o.causal = 3), kArg,
     "options->causal must be 0, 1 or 2 (got 3)"},
    {"sdpa", "options->causal", "-1 (empty call)", SDPA(c.q_len = 0; c.o.causal = -1), kArg,
     "options->causal must be 0, 1 or 2 (got -1)"},
    {"sdpa", "options->kv_heads", "-2", SDPA(c.o.kv_heads = -2), kShape,
     "options->kv_heads must be >= 0 (got -2)"},
    {"sdpa", "options->kv_heads", "3 (does not divide 4)", SDPA(c.o.kv_heads = 3), kShape,
     "heads (4) must be a multiple of options->kv_heads (3)"},
    {"sdpa", "options->kv_heads", "-1 with heads INT64_MIN",
     SDPA(c.heads = INT64_MIN; c.o.kv_heads = -1), kShape, "heads must be >= 0"},
    {"sdpa", "options->q_strides", "seq -8", SDPA(c.o.q_strides = {160, 40, -8}), kShape,
     "q strides.seq must be >= 0 (got -8)"},
    {"sdpa", "options->k_strides", "head -1", SDPA(c.o.k_strides = {112, -1, 8}), kShape,
     "k strides.head must be >= 0 (got -1)"},
    {"sdpa", "options->v_strides", "batch 2^62", SDPA(c.o.v_strides = {k62, 42, 6}), kShape,
     "v: its extent overflows int64"},
    {"sdpa", "options->out_strides", "batch -1", SDPA(c.o.out_strides = {-1, 30, 6}), kShape,
     "out strides.batch must be >= 0 (got -1)"},
    {"sdpa", "options->out_strides", "rows overlapping", SDPA(c.o.out_strides = {120, 30, 5}),
     kArg, "out strides {120, 30, 5} make distinct rows overlap"},
    {"sdpa", "options->mask_strides", "seq -7", SDPA(c.o.mask_strides = {0, 0, -7}), kShape,
     "mask strides.seq must be >= 0 (got -7)"},
    {"sdpa", "options->kv_lens", "[1] = -1", SDPA(s.kv_lens[1] = -1), kShape,
     "options->kv_lens[1] = -1 is outside [0, kv_len = 7]"},
    {"sdpa", "options->kv_lens", "[0] = kv_len + 1", SDPA(s.kv_lens[0] = 8), kShape,
     "options->kv_lens[0] = 8 is outside [0, kv_len = 7]"},
    {"sdpa", "options->lse", "2^61 rows (2^63 bytes)",
     SDPA(c.batch = 1; c.heads = int64_t{1} << 61; c.q_len = 1; c.o.kv_heads = 1;
          c.o.q_strides = {0, 0, 8}; c.o.out_strides = {0, 0, 6}),
     kShape, "options->lse has too many elements: overflows int64"},
    {"sdpa", "options->weights", "2^62 rows of 7",
     SDPA(c.batch = 1; c.heads = int64_t{1} << 31; c.q_len = int64_t{1} << 31; c.o.kv_heads = 1;
          c.o.q_strides = {0, 0, 1}; c.d_v = 0; c.o.lse = nullptr; c.o.mask = nullptr),
     kShape, "options->weights has too many elements: overflows int64"},
    {"sdpa", "batch, heads, q_len", "2^63 query rows",
     SDPA(c.batch = 2; c.heads = int64_t{1} << 31; c.q_len = int64_t{1} << 31; c.o.kv_heads = 1;
          c.o.q_strides = {0, 0, 1}; c.d_v = 0; c.o.lse = nullptr; c.o.weights = nullptr),
     kShape, "batch * heads * q_len (the query rows) has too many elements: overflows int64"},
    {"sdpa", "out", "overlapping q", SDPA(c.out = s.at(Storage::kQ + 3)), kArg, "out overlaps q"},
    {"sdpa", "out", "overlapping the mask", SDPA(c.out = s.at(Storage::kMask + 1)), kArg,
     "out overlaps options->mask"},
    {"sdpa", "options->lse", "overlapping k", SDPA(c.o.lse = s.at(Storage::kK)), kArg,
     "options->lse overlaps k"},
    {"sdpa", "options->weights", "overlapping v", SDPA(c.o.weights = s.at(Storage::kV + 1)), kArg,
     "options->weights overlaps v"},
    {"sdpa", "options->lse", "overlapping out", SDPA(c.o.lse = s.at(Storage::kOut + 5)), kArg,
     "overlaps options->lse"},
    {"sdpa", "options->weights", "overlapping lse", SDPA(c.o.weights = s.at(Storage::kLse + 39)),
     kArg, "options->lse overlaps options->weights"},
    // The 0.2 fields (window, softcap, alibi_slopes, sinks).
    {"sdpa", "options->window", "2", SDPA(c.o.window = 2), kArg,
     "options->window must be 0 or 1 (got 2)"},
    {"sdpa", "options->window", "-1", SDPA(c.o.window = -1), kArg,
     "options->window must be 0 or 1 (got -1)"},
    {"sdpa", "options->window", "2 (empty call)", SDPA(c.batch = 0; c.o.window = 2), kArg,
     "options->window must be 0 or 1 (got 2)"},
    {"sdpa", "options->window_left", "-1", SDPA(c.o.window = 1; c.o.window_left = -1), kArg,
     "options->window_left must be >= 0 (got -1)"},
    {"sdpa", "options->window_left", "INT64_MIN",
     SDPA(c.o.window = 1; c.o.window_left = INT64_MIN), kArg,
     "options->window_left must be >= 0 (got -9223372036854775808)"},
    {"sdpa", "options->window_right", "-1 with window 1",
     SDPA(c.o.window = 1; c.o.window_left = 3; c.o.window_right = -1), kArg,
     "options->window_right must be >= 0 (got -1)"},
    {"sdpa", "options->softcap", "NaN", SDPA(c.o.softcap = kNaN), kArg,
     "options->softcap must be finite and >= 0 (0 = off), got nan"},
    {"sdpa", "options->softcap", "+inf", SDPA(c.o.softcap = kInf), kArg,
     "options->softcap must be finite and >= 0 (0 = off), got inf"},
    {"sdpa", "options->softcap", "-1", SDPA(c.o.softcap = -1.0f), kArg,
     "options->softcap must be finite and >= 0 (0 = off), got -1"},
    {"sdpa", "options->alibi_slopes", "[11] = NaN",
     SDPA(c.heads = 12; c.q_len = 1; c.o.alibi_slopes = s.slopes; s.slopes[11] = kNaN), kArg,
     "options->alibi_slopes[11] = nan"},
    {"sdpa", "options->alibi_slopes", "[3] = +inf",
     SDPA(c.o.alibi_slopes = s.slopes; s.slopes[3] = kInf), kArg, "options->alibi_slopes[3] = inf"},
    {"sdpa", "options->alibi_slopes", "[0] = -inf",
     SDPA(c.o.alibi_slopes = s.slopes; s.slopes[0] = -kInf), kArg,
     "options->alibi_slopes[0] = -inf"},
    {"sdpa", "options->sinks", "[2] = NaN", SDPA(c.o.sinks = s.sinks; s.sinks[2] = kNaN), kArg,
     "options->sinks[2] = nan"},
    {"sdpa", "options->sinks", "[9] = +inf",
     SDPA(c.heads = 12; c.q_len = 1; c.o.sinks = s.sinks; s.sinks[9] = kInf), kArg,
     "options->sinks[9] = inf"},
    {"sdpa", "options->lse", "overlapping alibi_slopes",
     SDPA(c.o.alibi_slopes = s.slopes; c.o.lse = s.slopes + 2), kArg,
     "options->lse overlaps options->alibi_slopes"},
    {"sdpa", "out", "overlapping sinks", SDPA(c.o.sinks = s.sinks; c.out = s.sinks + 3), kArg,
     "out overlaps options->sinks"},
    // ---- simdattn_mhsa
    {"mhsa", "seq_len", "-1", MHSA(c.seq = -1), kShape, "seq_len must be >= 0 (got -1)"},
    {"mhsa", "batch", "-2", MHSA(c.batch = -2), kShape, "batch must be >= 0 (got -2)"},
    {"mhsa", "embed_dim", "-8", MHSA(c.e = -8), kShape, "embed_dim must be >= 0 (got -8)"},
    {"mhsa", "embed_dim", "0", MHSA(c.e = 0), kShape, "embed_dim must be >= 1 (got 0)"},
    {"mhsa", "num_heads", "0", MHSA(c.heads = 0), kShape,
     "num_heads must be >= 1 (got 0; embed_dim = 8 must be divisible by it)"},
    {"mhsa", "num_heads", "3 (does not divide 8)", MHSA(c.heads = 3), kShape,
     "embed_dim (8) must be divisible by num_heads (3)"},
    {"mhsa", "seq_len, embed_dim", "2^62 x 2^62", MHSA(c.seq = k62; c.e = k62; c.heads = 1),
     kShape, "x has too many elements: overflows int64"},
    {"mhsa", "options->attn_weights", "seq_len 2^31 (weights 2^64 bytes)",
     MHSA(c.seq = int64_t{1} << 31; c.batch = 1; c.e = 2; c.heads = 1; c.o.attn_mask = nullptr;
          c.o.key_padding_mask = nullptr),
     kShape, "options->attn_weights has too many elements: overflows int64"},
    {"mhsa", "weights", "NULL", MHSA(c.null_weights = true), kNull, "weights is NULL"},
    {"mhsa", "weights->in_proj_weight", "NULL", MHSA(c.w.in_proj_weight = nullptr), kNull,
     "weights->in_proj_weight is NULL but has 192 elements"},
    {"mhsa", "weights->out_proj_weight", "NULL", MHSA(c.w.out_proj_weight = nullptr), kNull,
     "weights->out_proj_weight is NULL but has 64 elements"},
    {"mhsa", "x", "NULL", MHSA(c.x = nullptr), kNull, "x is NULL but has 48 elements"},
    {"mhsa", "y", "NULL", MHSA(c.y = nullptr), kNull, "y is NULL but has 48 elements"},
    {"mhsa", "y", "overlapping x", MHSA(c.y = s.at(Storage::kMx + 1)), kArg,
     "y overlaps x (only y == x may alias)"},
    {"mhsa", "y", "overlapping in_proj_weight", MHSA(c.y = s.at(Storage::kWin + 10)), kArg,
     "y overlaps weights->in_proj_weight"},
    {"mhsa", "y", "overlapping in_proj_bias", MHSA(c.y = s.at(Storage::kBin + 1)), kArg,
     "y overlaps weights->in_proj_bias"},
    {"mhsa", "y", "overlapping the attn_mask", MHSA(c.y = s.at(Storage::kAmask + 1)), kArg,
     "y overlaps options->attn_mask"},
    {"mhsa", "options->attn_weights", "overlapping x", MHSA(c.o.attn_weights = s.at(Storage::kMx)),
     kArg, "options->attn_weights overlaps x"},
    {"mhsa", "options->attn_weights", "overlapping y", MHSA(c.o.attn_weights = s.at(Storage::kMy + 40)),
     kArg, "options->attn_weights overlaps y"},
    {"mhsa", "options->struct_size", "0", MHSA(c.o.struct_size = 0), kArg,
     "options->struct_size must be >= 40 (got 0)"},
    {"mhsa", "options->struct_size", "8", MHSA(c.o.struct_size = 8), kArg,
     "options->struct_size must be >= 40 (got 8)"},
    {"mhsa", "options->batch_first", "2", MHSA(c.o.batch_first = 2), kArg,
     "options->batch_first must be 0 or 1 (got 2)"},
    {"mhsa", "options->causal", "3", MHSA(c.o.causal = 3), kArg,
     "options->causal must be 0, 1 or 2 (got 3)"},
    {"mhsa", "options->causal", "-1 (empty call)", MHSA(c.batch = 0; c.o.causal = -1), kArg,
     "options->causal must be 0, 1 or 2 (got -1)"},
    // ---- simdattn_sdpa_varlen
    {"sdpa_varlen", "batch", "-1", VARLEN(c.batch = -1), kShape, "batch must be >= 0 (got -1)"},
    {"sdpa_varlen", "heads", "-4", VARLEN(c.heads = -4), kShape, "heads must be >= 0 (got -4)"},
    {"sdpa_varlen", "d_k", "0", VARLEN(c.d_k = 0), kShape, "d_k must be >= 1 (got 0)"},
    {"sdpa_varlen", "d_v", "-1", VARLEN(c.d_v = -1), kShape, "d_v must be >= 0 (got -1)"},
    {"sdpa_varlen", "options->kv_heads", "3", VARLEN(c.o.kv_heads = 3), kShape,
     "heads (4) must be a multiple of options->kv_heads (3)"},
    {"sdpa_varlen", "cu_seqlens_q", "NULL", VARLEN(c.cuq = nullptr), kNull,
     "cu_seqlens_q is NULL with batch = 2"},
    {"sdpa_varlen", "cu_seqlens_kv", "NULL", VARLEN(c.cukv = nullptr), kNull,
     "cu_seqlens_kv is NULL with batch = 2"},
    {"sdpa_varlen", "cu_seqlens_q[0]", "1", VARLEN(c.cu_q[0] = 1), kShape,
     "cu_seqlens_q[0] must be 0 (got 1)"},
    {"sdpa_varlen", "cu_seqlens_kv", "decreasing", VARLEN(c.cu_kv[2] = 6), kShape,
     "cu_seqlens_kv must be non-decreasing: cu_seqlens_kv[2] = 6 < cu_seqlens_kv[1] = 7"},
    {"sdpa_varlen", "cu_seqlens_q", "INT64_MIN", VARLEN(c.cu_q[1] = INT64_MIN), kShape,
     "cu_seqlens_q[1] = -9223372036854775808 < cu_seqlens_q[0] = 0"},
    {"sdpa_varlen", "cu_seqlens_q[2]", "2^62 (overflow)", VARLEN(c.cu_q[2] = int64_t{1} << 62),
     kShape, "q: its extent overflows int64"},
    {"sdpa_varlen", "heads", "2^62 (packed token stride overflows)",
     VARLEN(c.heads = int64_t{1} << 62), kShape, "q: its extent overflows int64"},
    {"sdpa_varlen", "q", "NULL", VARLEN(c.q = nullptr), kNull, "q is NULL but has"},
    {"sdpa_varlen", "out", "NULL", VARLEN(c.out = nullptr), kNull, "out is NULL but has"},
    {"sdpa_varlen", "options->q_strides.seq", "-1", VARLEN(c.o.q_strides = {0, 8, -1}), kShape,
     "q strides.seq must be >= 0 (got -1)"},
    {"sdpa_varlen", "options->out_strides", "rows overlap", VARLEN(c.o.out_strides = {0, 6, 12}),
     kArg, "out strides {0, 6, 12} make distinct rows overlap"},
    {"sdpa_varlen", "out", "overlapping k", VARLEN(c.out = const_cast<float*>(c.k) + 8), kArg,
     "out overlaps k"},
    {"sdpa_varlen", "options->lse", "overlapping out", VARLEN(c.o.lse = c.out + 100), kArg,
     "out overlaps options->lse"},
    {"sdpa_varlen", "options->mask", "set", VARLEN(c.o.mask = s.at(Storage::kMask)), kArg,
     "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_varlen", "options->kv_lens", "set", VARLEN(c.o.kv_lens = s.kv_lens), kArg,
     "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_varlen", "options->weights", "set", VARLEN(c.o.weights = s.at(Storage::kWeights)),
     kArg, "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_varlen", "options->struct_size", "8", VARLEN(c.o.struct_size = 8), kArg,
     "options->struct_size must be >= 176"},
    {"sdpa_varlen", "options->causal", "3 (batch 0)", VARLEN(c.batch = 0; c.o.causal = 3), kArg,
     "options->causal must be 0, 1 or 2 (got 3)"},
    {"sdpa_varlen", "options->window", "2", VARLEN(c.o.window = 2), kArg,
     "options->window must be 0 or 1 (got 2)"},
    // ---- simdattn_attention_merge
    {"attention_merge", "n", "0", MERGE(c.n = 0), kArg, "n must be >= 1 (got 0)"},
    {"attention_merge", "n", "INT64_MIN (empty call)", MERGE(c.n = INT64_MIN; c.rows = 0), kArg,
     "n must be >= 1 (got -9223372036854775808)"},
    {"attention_merge", "rows", "-1", MERGE(c.rows = -1), kShape, "rows must be >= 0 (got -1)"},
    {"attention_merge", "d_v", "-4", MERGE(c.d_v = -4), kShape, "d_v must be >= 0 (got -4)"},
    {"attention_merge", "ld_out", "d_v - 1", MERGE(c.ld_out = 3), kShape,
     "ld_out must be >= max(1, d_v) = 4 (got 3)"},
    {"attention_merge", "ld_out", "0 with d_v = 0", MERGE(c.d_v = 0; c.ld_out = 0), kShape,
     "ld_out must be >= max(1, d_v) = 1 (got 0)"},
    {"attention_merge", "ld_out_merged", "d_v - 1 (empty call)",
     MERGE(c.rows = 0; c.ld_merged = 3), kShape, "ld_out_merged must be >= max(1, d_v) = 4 (got 3)"},
    {"attention_merge", "rows, d_v", "2^62 x 2^62",
     MERGE(c.rows = k62; c.d_v = k62; c.ld_out = c.ld_merged = k62), kShape,
     "outs[i] spans 4611686018427387904 rows of 4611686018427387904 elements with leading "
     "dimension 4611686018427387904: overflows int64"},
    {"attention_merge", "ld_out_merged", "2^62", MERGE(c.ld_merged = k62), kShape,
     "out spans 3 rows of 4 elements with leading dimension 4611686018427387904: overflows int64"},
    {"attention_merge", "rows", "2^62 (lse bytes)", MERGE(c.rows = k62; c.d_v = 0; c.ld_out = 1;
     c.ld_merged = 1), kShape, "lse has too many elements: overflows int64"},
    {"attention_merge", "outs", "NULL", MERGE(c.null_outs = true), kNull, "outs is NULL"},
    {"attention_merge", "lses", "NULL", MERGE(c.null_lses = true), kNull, "lses is NULL"},
    {"attention_merge", "outs", "[1] NULL", MERGE(c.outs[1] = nullptr), kNull,
     "outs[1] is NULL but has 14 elements"},
    {"attention_merge", "lses", "[0] NULL", MERGE(c.lses[0] = nullptr), kNull,
     "lses[0] is NULL but has 3 elements"},
    {"attention_merge", "lses", "[1] NULL with d_v = 0", MERGE(c.d_v = 0; c.lses[1] = nullptr),
     kNull, "lses[1] is NULL but has 3 elements"},
    {"attention_merge", "out", "NULL", MERGE(c.out = nullptr), kNull,
     "out is NULL but has 12 elements"},
    {"attention_merge", "out", "overlapping outs[1]", MERGE(c.out = s.at(Storage::kMouts + 16)),
     kArg, "out overlaps outs[1]"},
    {"attention_merge", "out", "outs[0] with another ld",
     MERGE(c.out = s.at(Storage::kMouts)), kArg,
     "out overlaps outs[0] (only out == outs[0] with ld_out_merged == ld_out may alias)"},
    {"attention_merge", "out", "outs[1] exactly (only outs[0] may alias)",
     MERGE(c.out = s.at(Storage::kMouts + 14); c.ld_merged = 5), kArg, "out overlaps outs[1]"},
    {"attention_merge", "out", "overlapping lses[0]", MERGE(c.out = s.at(Storage::kMlses + 1)),
     kArg, "out overlaps lses[0]"},
    {"attention_merge", "lse", "lses[1] exactly", MERGE(c.lse = s.at(Storage::kMlses + 3)), kArg,
     "lse overlaps lses[1] (only lse == lses[0] may alias)"},
    {"attention_merge", "lse", "overlapping outs[0]", MERGE(c.lse = s.at(Storage::kMouts + 13)),
     kArg, "lse overlaps outs[0]"},
    {"attention_merge", "lse", "overlapping out", MERGE(c.lse = s.at(Storage::kMout + 10)), kArg,
     "out overlaps lse"},
    // ---- simdattn_sdpa_kvcache
    {"sdpa_kvcache", "cache", "NULL", KVCACHE(c.cache = nullptr), kNull, "cache is NULL"},
    {"sdpa_kvcache", "cache->struct_size", "8", KVCACHE(c.c.struct_size = 8), kArg,
     "cache->struct_size must be >= 80 (got 8)"},
    {"sdpa_kvcache", "cache->dtype", "3", KVCACHE(c.c.dtype = 3), kArg,
     "cache->dtype must be SIMDATTN_DTYPE_F32, _BF16 or _F16 (got 3)"},
    {"sdpa_kvcache", "cache->dtype", "-1", KVCACHE(c.c.dtype = -1), kArg, "(got -1)"},
    {"sdpa_kvcache", "cache->block_size", "0", KVCACHE(c.c.block_size = 0), kShape,
     "cache->block_size must be >= 1 (got 0)"},
    {"sdpa_kvcache", "cache->kv_heads", "0", KVCACHE(c.c.kv_heads = 0), kShape,
     "cache->kv_heads must be >= 1 (got 0)"},
    {"sdpa_kvcache", "cache->kv_heads", "3", KVCACHE(c.c.kv_heads = 3), kShape,
     "heads (4) must be a multiple of cache->kv_heads (3)"},
    {"sdpa_kvcache", "cache->num_blocks", "-1", KVCACHE(c.c.num_blocks = -1), kShape,
     "cache->num_blocks must be >= 0 (got -1)"},
    {"sdpa_kvcache", "cache->max_blocks_per_seq", "-1", KVCACHE(c.c.max_blocks_per_seq = -1),
     kShape, "cache->max_blocks_per_seq must be >= 0 (got -1)"},
    {"sdpa_kvcache", "cache->num_blocks", "2^62 (k's bytes overflow)", KVCACHE(c.c.num_blocks = k62),
     kShape, "cache->k has too many elements"},
    {"sdpa_kvcache", "options->kv_heads", "4", KVCACHE(c.o.kv_heads = 4), kShape,
     "options->kv_heads (4) must be 0 or cache->kv_heads (2)"},
    {"sdpa_kvcache", "options->mask", "set", KVCACHE(c.o.mask = s.at(Storage::kMask)), kArg,
     "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_kvcache", "options->kv_lens", "set", KVCACHE(c.o.kv_lens = s.kv_lens), kArg,
     "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_kvcache", "options->weights", "set", KVCACHE(c.o.weights = s.at(Storage::kWeights)),
     kArg, "options->mask, ->kv_lens and ->weights must be NULL"},
    {"sdpa_kvcache", "options->k_strides", "{0, 0, 8}", KVCACHE(c.o.k_strides = {0, 0, 8}), kArg,
     "options->k_strides and ->v_strides must be zero"},
    {"sdpa_kvcache", "options->v_strides", "{1, 0, 0}", KVCACHE(c.o.v_strides = {1, 0, 0}), kArg,
     "options->k_strides and ->v_strides must be zero"},
    {"sdpa_kvcache", "options->struct_size", "8", KVCACHE(c.o.struct_size = 8), kArg,
     "options->struct_size must be >= 176"},
    {"sdpa_kvcache", "options->causal", "3", KVCACHE(c.o.causal = 3), kArg,
     "options->causal must be 0, 1 or 2 (got 3)"},
    {"sdpa_kvcache", "batch", "-1", KVCACHE(c.batch = -1), kShape, "batch must be >= 0 (got -1)"},
    {"sdpa_kvcache", "q_len", "-2", KVCACHE(c.q_len = -2), kShape, "q_len must be >= 0 (got -2)"},
    {"sdpa_kvcache", "d_k", "0", KVCACHE(c.d_k = 0), kShape, "d_k must be >= 1 (got 0)"},
    {"sdpa_kvcache", "q_len", "2^62 (overflow)", KVCACHE(c.q_len = k62), kShape, "overflows int64"},
    {"sdpa_kvcache", "cache->seq_lens", "NULL", KVCACHE(c.c.seq_lens = nullptr), kNull,
     "cache->seq_lens is NULL with batch = 2"},
    {"sdpa_kvcache", "cache->seq_lens[1]", "7", KVCACHE(c.seq_lens[1] = 7), kShape,
     "cache->seq_lens[1] = 7 is outside [0, max_blocks_per_seq * block_size = 6]"},
    {"sdpa_kvcache", "cache->seq_lens[0]", "-1", KVCACHE(c.seq_lens[0] = -1), kShape,
     "cache->seq_lens[0] = -1 is outside"},
    {"sdpa_kvcache", "cache->seq_lens[0]", "INT64_MAX", KVCACHE(c.seq_lens[0] = INT64_MAX), kShape,
     "is outside [0, max_blocks_per_seq * block_size = 6]"},
    {"sdpa_kvcache", "cache->block_table[2]", "7", KVCACHE(c.table[2] = 7), kShape,
     "sequence 0 uses physical block 7 (block 2 of the sequence, from cache->block_table), "
     "outside [0, cache->num_blocks = 7)"},
    {"sdpa_kvcache", "cache->block_table[4]", "-1", KVCACHE(c.table[4] = -1), kShape,
     "sequence 1 uses physical block -1"},
    {"sdpa_kvcache", "cache->block_table", "NULL with 4 blocks", KVCACHE(c.c.block_table = nullptr;
     c.c.num_blocks = 4), kShape, "sequence 1 uses physical block 4 (block 1 of the sequence, "
     "identity table)"},
    {"sdpa_kvcache", "cache->k", "NULL", KVCACHE(c.c.k = nullptr), kNull, "cache->k is NULL but has"},
    {"sdpa_kvcache", "cache->v", "NULL", KVCACHE(c.c.v = nullptr), kNull, "cache->v is NULL but has"},
    {"sdpa_kvcache", "q", "NULL", KVCACHE(c.q = nullptr), kNull, "q is NULL but has"},
    {"sdpa_kvcache", "out", "NULL", KVCACHE(c.out = nullptr), kNull, "out is NULL but has"},
    {"sdpa_kvcache", "out", "overlapping cache->v", KVCACHE(c.out = const_cast<float*>(
     static_cast<const float*>(c.c.v)) + 100), kArg, "out overlaps cache->v"},
    {"sdpa_kvcache", "out", "overlapping q", KVCACHE(c.out = const_cast<float*>(c.q) + 1), kArg,
     "out overlaps q"},
    {"sdpa_kvcache", "options->lse", "overlapping cache->k",
     KVCACHE(c.o.lse = const_cast<float*>(static_cast<const float*>(c.c.k))), kArg,
     "options->lse overlaps cache->k"},
    {"sdpa_kvcache", "options->lse", "overlapping out", KVCACHE(c.o.lse = c.out + 3), kArg,
     "overlaps"},
    {"sdpa_kvcache", "options->out_strides", "rows overlap", KVCACHE(c.o.out_strides = {0, 6, 3}),
     kArg, "out strides"},
    {"sdpa_kvcache", "options->sinks[1]", "nan", KVCACHE(s.sinks[1] = kNaN; c.o.sinks = s.sinks),
     kArg, "options->sinks[1] = nan"},
    // ---- simdattn_cast
    {"cast", "n", "-1", CAST(c.n = -1), kShape, "n must be >= 0 (got -1)"},
    {"cast", "n", "INT64_MIN", CAST(c.n = INT64_MIN), kShape,
     "n must be >= 0 (got -9223372036854775808)"},
    {"cast", "n", "2^62 (f32 bytes overflow)", CAST(c.n = k62), kShape,
     "n = 4611686018427387904 elements of 4 and 2 bytes: the byte size overflows int64"},
    {"cast", "n", "2^62 (bf16 -> f32: dst bytes overflow)",
     CAST(c.n = k62; c.src_dtype = SIMDATTN_DTYPE_BF16; c.dst_dtype = SIMDATTN_DTYPE_F32), kShape,
     "n = 4611686018427387904 elements of 2 and 4 bytes: the byte size overflows int64"},
    {"cast", "n", "INT64_MAX (bf16 -> f16)",
     CAST(c.n = INT64_MAX; c.src_dtype = SIMDATTN_DTYPE_BF16; c.dst_dtype = SIMDATTN_DTYPE_F16),
     kShape, "the byte size overflows int64"},
    {"cast", "src_dtype", "3", CAST(c.src_dtype = 3), kArg,
     "src_dtype must be SIMDATTN_DTYPE_F32 (0), _BF16 (1) or _F16 (2) (got 3)"},
    {"cast", "src_dtype", "-1", CAST(c.src_dtype = -1), kArg, "src_dtype must be"},
    {"cast", "dst_dtype", "INT32_MIN", CAST(c.dst_dtype = INT32_MIN), kArg,
     "dst_dtype must be SIMDATTN_DTYPE_F32 (0), _BF16 (1) or _F16 (2) (got -2147483648)"},
    {"cast", "dst_dtype", "7 (n = 0, NULL buffers)",
     CAST(c.n = 0; c.src = nullptr; c.dst = nullptr; c.dst_dtype = 7), kArg,
     "dst_dtype must be SIMDATTN_DTYPE_F32 (0), _BF16 (1) or _F16 (2) (got 7)"},
    {"cast", "n, src_dtype", "-1 and 9 (the shape is checked first)",
     CAST(c.n = -1; c.src_dtype = 9), kShape, "n must be >= 0 (got -1)"},
    {"cast", "src", "NULL", CAST(c.src = nullptr), kNull, "src is NULL but has 5 elements"},
    {"cast", "dst", "NULL", CAST(c.dst = nullptr), kNull, "dst is NULL but has 5 elements"},
    {"cast", "dst", "src (in place, same dtype)",
     CAST(c.dst = const_cast<void*>(c.src); c.dst_dtype = SIMDATTN_DTYPE_F32), kArg,
     "dst (20 bytes) overlaps src (20 bytes): the byte ranges must be disjoint"},
    {"cast", "dst", "src (in place, narrowing)", CAST(c.dst = const_cast<void*>(c.src)), kArg,
     "dst (10 bytes) overlaps src (20 bytes)"},
    {"cast", "dst", "the last byte of src",
     CAST(c.dst = reinterpret_cast<uint8_t*>(s.at(Storage::kCastIn + 5)) - 1), kArg,
     "dst (10 bytes) overlaps src (20 bytes)"},
    {"cast", "dst", "ending in the first byte of src (bf16 -> f32)",
     CAST(c.src_dtype = SIMDATTN_DTYPE_BF16; c.dst_dtype = SIMDATTN_DTYPE_F32;
          c.src = s.at(Storage::kCastIn + 2);
          c.dst = reinterpret_cast<uint8_t*>(s.at(Storage::kCastIn + 2)) - 19),
     kArg, "dst (20 bytes) overlaps src (10 bytes)"},
    // ---- simdattn_set_num_threads
    {"set_num_threads", "n", "-1", [](Storage&) { return simdattn_set_num_threads(-1); }, kArg,
     "n must be in [0, SIMDATTN_MAX_THREADS = 4096] (0 = all hardware threads), got -1"},
    {"set_num_threads", "n", "SIMDATTN_MAX_THREADS + 1",
     [](Storage&) { return simdattn_set_num_threads(SIMDATTN_MAX_THREADS + 1); }, kArg,
     "got 4097"},
    {"set_num_threads", "n", "INT32_MIN", [](Storage&) { return simdattn_set_num_threads(INT32_MIN); },
     kArg, "got -2147483648"},
};

TEST_CASE("bad-input matrix: exact status, message fragment, nothing written") {
  static_assert(sizeof(simdattn_mha_options) == 40, "the messages above quote this size");
  {  // every valid call succeeds (so each case fails for its one changed argument)
    Storage s;
    CheckOk(Gemm(s).Batched());
    CheckOk(Gemm(s).Single());
    CheckOk(Softmax(s).Run());
    CheckOk(Sdpa(s).Run());
    CheckOk(Mhsa(s).Run());
    CheckOk(Varlen(s).Run());
    CheckOk(Merge(s).Run());
    CheckOk(KvCache(s).Run());
    CheckOk(Cast(s).Run());
  }
  const int32_t threads = simdattn_get_num_threads();
  for (const BadInput& bad : kBadInputs) {
    INFO("simdattn_", std::string(bad.function), " ", std::string(bad.argument), " = ",
         std::string(bad.value));
    Storage s;
    const Storage before = s;
    const simdattn_status got = bad.call(s);
    const std::string error = simdattn_last_error();
    INFO("last_error: \"", error, "\"");
    CHECK_MESSAGE(got == bad.status, "got ", std::string(simdattn_status_name(got)), ", want ",
                  std::string(simdattn_status_name(bad.status)));
    CHECK_MESSAGE(error.find(bad.message) != std::string::npos, "want the fragment \"",
                  std::string(bad.message), "\"");
    CHECK_MESSAGE(error.rfind("simdattn_", 0) == 0, "the message names the function");
    CheckBitwiseEqual(s.f.data(), before.f.data(), s.f.size(), "storage");
    CHECK(std::memcmp(s.kpm, before.kpm, sizeof(s.kpm)) == 0);
    CHECK(simdattn_get_num_threads() == threads);
  }
  MESSAGE(std::size(kBadInputs), " bad-input cases");
}

// Values at the edge of the 0.2 fields' domains that are valid (so the rows above fail for
// their one bad value): negative sides with the window off, a -inf sink, slopes 0 and negative,
// huge sides, 12 heads of slopes and sinks.
TEST_CASE("sdpa 0.2 fields: edge values that are accepted") {
  const std::function<void(Sdpa&)> accepted[] = {
      [](Sdpa& c) { c.o.window = 0, c.o.window_left = -1, c.o.window_right = INT64_MIN; },
      [](Sdpa& c) { c.o.window = 1, c.o.window_left = INT64_MAX, c.o.window_right = INT64_MAX; },
      [](Sdpa& c) { c.o.window = 1, c.o.window_left = 0, c.o.window_right = 0; },
      [](Sdpa& c) { c.o.softcap = 0.0f; },
      [](Sdpa& c) { c.o.softcap = 1e-30f; },
      [](Sdpa& c) { c.heads = 12, c.q_len = 1; },
  };
  for (size_t n = 0; n < std::size(accepted); ++n) {
    INFO("accepted case ", n);
    Storage s;
    Sdpa c(s);
    c.o.alibi_slopes = s.slopes, c.o.sinks = s.sinks;  // sinks[1] = -inf, slopes 0 and < 0
    accepted[n](c);
    CheckOk(c.Run());
    CHECK(!std::isnan(s.f[Storage::kOut]));
  }
}

}  // namespace
}  // namespace simdattn_test

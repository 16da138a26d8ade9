/* A strict C99 program that uses only simdattn.h: the README example (verbatim between the
 * markers below) and checks of the C ABI. Exits non-zero on any mismatch.
 * Each check is a small function returning its number of failures; add new ones to kChecks. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "simdattn.h"

/* fp32 unit roundoff u = 2^-24. */
#define UNIT_ROUNDOFF (1.0 / 16777216.0)

/* Counts and prints the elements with |got - want| > rel_tol * |want|. */
static int expect_near(const char* what, const float* got, const double* want, int n,
                       double rel_tol) {
  int failures = 0, i;
  for (i = 0; i < n; ++i) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= rel_tol * fabs(want[i]))) {
      fprintf(stderr, "FAIL %s[%d]: got %.9g, want %.17g, |diff| %.3g > bound %.3g\n", what, i,
              (double)got[i], want[i], err, rel_tol * fabs(want[i]));
      ++failures;
    }
  }
  return failures;
}

static int expect_string(const char* what, const char* got, const char* want) {
  if (got != NULL && strcmp(got, want) == 0) return 0;
  fprintf(stderr, "FAIL %s: got \"%s\", want \"%s\"\n", what, got ? got : "(NULL)", want);
  return 1;
}

static int expect_status(const char* what, simdattn_status got, simdattn_status want) {
  if (got == want) return 0;
  fprintf(stderr, "FAIL %s: got %s, want %s (last_error: \"%s\")\n", what,
          simdattn_status_name(got), simdattn_status_name(want), simdattn_last_error());
  return 1;
}

/* The README example; its results are checked after the end marker. */
static int readme_example(void) {
  int failures = 0;
  /* README-EXAMPLE-BEGIN */
  const float a[2 * 3] = {1, 2, 3, 4, 5, 6};    /* A: 2 x 3, row-major */
  const float b[3 * 2] = {7, 8, 9, 10, 11, 12}; /* B: 3 x 2 */
  float c[2 * 2], p[2 * 2];
  /* C = 1 * A B + 0 * C (leading dimensions 3, 2, 2), then p = softmax of each row of C. */
  simdattn_status s = simdattn_sgemm(0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2);
  if (s == SIMDATTN_OK) s = simdattn_softmax(2, 2, c, 2, p, 2);
  if (s != SIMDATTN_OK) {
    fprintf(stderr, "simdattn: %s: %s\n", simdattn_status_name(s), simdattn_last_error());
    return 1;
  }
  printf("C = [%g %g; %g %g]\n", c[0], c[1], c[2], c[3]); /* [58 64; 139 154] */
  printf("softmax(C) = [%g %g; %g %g]\n", p[0], p[1], p[2], p[3]);
  /* README-EXAMPLE-END */
  {
    /* Integer products and sums below 2^24 are exact in float32, in any order. */
    const double want_c[4] = {58, 64, 139, 154};
    /* Rows differ by 6 and 15: softmax = 1 / (1 + e^d), e^d / (1 + e^d). Bound (derived in
     * tests/test_util.h, ReferenceSoftmaxRow): (|x - max| + 2 + 2 + 3) u <= 22u < 32u. */
    const double want_p[4] = {1 / (1 + exp(6.0)), exp(6.0) / (1 + exp(6.0)),
                              1 / (1 + exp(15.0)), exp(15.0) / (1 + exp(15.0))};
    failures += expect_near("readme C", c, want_c, 4, 0.0);
    failures += expect_near("readme softmax", p, want_p, 4, 32 * UNIT_ROUNDOFF);
  }
  return failures;
}

/* op(A) op(B) with both transposed, alpha 2 and beta -1, against a plain double loop. Small
 * integers: every product and partial sum is an integer below 2^24, so the result is exact. */
static int check_transposed_sgemm(void) {
  enum { M = 3, N = 5, K = 4 };
  float at[K * M], bt[N * K], c[M * N];
  double want[M * N];
  int i, j, p;
  for (i = 0; i < K * M; ++i) at[i] = (float)(i % 7 - 3);
  for (i = 0; i < N * K; ++i) bt[i] = (float)(i % 5 - 2);
  for (i = 0; i < M * N; ++i) c[i] = (float)(i % 3);
  for (i = 0; i < M; ++i) {
    for (j = 0; j < N; ++j) {
      double sum = 0;
      for (p = 0; p < K; ++p) sum += (double)at[p * M + i] * bt[j * K + p];
      want[i * N + j] = 2 * sum - c[i * N + j];
    }
  }
  if (expect_status("sgemm(T, T)", simdattn_sgemm(1, 1, M, N, K, 2.0f, at, M, bt, K, -1.0f, c, N),
                    SIMDATTN_OK)) {
    return 1;
  }
  return expect_near("sgemm(T, T)", c, want, M * N, 0.0);
}

static int check_version_and_target(void) {
  const char* target = simdattn_simd_target();
  int failures = expect_string("version", simdattn_version(), "0.2.0");
  if (target == NULL || target[0] == '\0') {
    fprintf(stderr, "FAIL simd_target is empty\n");
    ++failures;
  }
  return failures;
}

static int check_status_names(void) {
  static const struct {
    simdattn_status status;
    const char* name;
  } kNames[] = {
      {SIMDATTN_OK, "SIMDATTN_OK"},
      {SIMDATTN_ERR_NULL_POINTER, "SIMDATTN_ERR_NULL_POINTER"},
      {SIMDATTN_ERR_BAD_SHAPE, "SIMDATTN_ERR_BAD_SHAPE"},
      {SIMDATTN_ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT"},
      {SIMDATTN_ERR_OUT_OF_MEMORY, "SIMDATTN_ERR_OUT_OF_MEMORY"},
      {SIMDATTN_ERR_INTERNAL, "SIMDATTN_ERR_INTERNAL"},
  };
  int failures = 0;
  size_t i;
  for (i = 0; i < sizeof(kNames) / sizeof(kNames[0]); ++i) {
    failures += expect_string("status_name", simdattn_status_name(kNames[i].status),
                              kNames[i].name);
  }
  /* In C an enum object may hold any value of its integer type. */
  failures += expect_string("status_name(42)", simdattn_status_name((simdattn_status)42),
                            "SIMDATTN_UNKNOWN_STATUS");
  failures += expect_string("status_name(-1)", simdattn_status_name((simdattn_status)-1),
                            "SIMDATTN_UNKNOWN_STATUS");
  return failures;
}

/* A failed call reports its status and a message and writes nothing; a successful call clears
 * the message. */
static int check_error_reporting(void) {
  const float b[4] = {1, 2, 3, 4};
  float c[4] = {-7, -7, -7, -7};
  int failures = expect_status("sgemm(A = NULL)",
                               simdattn_sgemm(0, 0, 2, 2, 2, 1.0f, NULL, 2, b, 2, 0.0f, c, 2),
                               SIMDATTN_ERR_NULL_POINTER);
  if (simdattn_last_error()[0] == '\0') {
    fprintf(stderr, "FAIL last_error is empty after a failure\n");
    ++failures;
  }
  if (c[0] != -7 || c[1] != -7 || c[2] != -7 || c[3] != -7) {
    fprintf(stderr, "FAIL a failed sgemm wrote to C\n");
    ++failures;
  }
  failures += expect_status("softmax(1 x 4)", simdattn_softmax(1, 4, b, 4, c, 4), SIMDATTN_OK);
  failures += expect_string("last_error after success", simdattn_last_error(), "");
  failures += expect_status("set_num_threads(-1)", simdattn_set_num_threads(-1),
                            SIMDATTN_ERR_BAD_ARGUMENT);
  return failures;
}

/* Zero sizes are no-ops that accept NULL buffers. */
static int check_empty(void) {
  int failures = 0;
  failures += expect_status("sgemm(m = 0)",
                            simdattn_sgemm(0, 0, 0, 3, 2, 1.0f, NULL, 2, NULL, 3, 0.0f, NULL, 3),
                            SIMDATTN_OK);
  failures += expect_status("softmax(rows = 0)", simdattn_softmax(0, 5, NULL, 5, NULL, 5),
                            SIMDATTN_OK);
  return failures;
}

/* ------------------------------------------------------------------ simdattn_mhsa */

/* A tiny self-attention: seq 3, batch 2, E 4, 2 heads of 2, seq-first. */
enum { MHSA_S = 3, MHSA_B = 2, MHSA_E = 4, MHSA_H = 2, MHSA_D = MHSA_E / MHSA_H };

/* torch.nn.MultiheadAttention's formula in float64: qkv = x W_in^T + b_in; per batch b and
 * head h, p = softmax(q k^T / sqrt(D)) over the keys kpm does not mark; y = (p v) W_out^T + b_out.
 * y is [S, B, E]; weights [B, S, S] is p averaged over the heads. Needs an unmasked key per
 * batch entry. */
static void mhsa_reference(const float* x, const float* w_in, const float* b_in,
                           const float* w_out, const float* b_out, const uint8_t* kpm, double* y,
                           double* weights) {
  double qkv[MHSA_S][MHSA_B][3 * MHSA_E], attn[MHSA_S][MHSA_B][MHSA_E];
  int s, b, h, i, j, f, e;
  for (s = 0; s < MHSA_S; ++s) {
    for (b = 0; b < MHSA_B; ++b) {
      for (f = 0; f < 3 * MHSA_E; ++f) {
        double sum = b_in[f];
        for (e = 0; e < MHSA_E; ++e) {
          sum += (double)x[(s * MHSA_B + b) * MHSA_E + e] * w_in[f * MHSA_E + e];
        }
        qkv[s][b][f] = sum;
      }
    }
  }
  for (i = 0; i < MHSA_B * MHSA_S * MHSA_S; ++i) weights[i] = 0;
  for (b = 0; b < MHSA_B; ++b) {
    for (h = 0; h < MHSA_H; ++h) {
      for (i = 0; i < MHSA_S; ++i) {
        double p[MHSA_S], max = -HUGE_VAL, z = 0;
        for (j = 0; j < MHSA_S; ++j) {
          double dot = 0;
          for (f = 0; f < MHSA_D; ++f) {
            dot += qkv[i][b][h * MHSA_D + f] * qkv[j][b][MHSA_E + h * MHSA_D + f];
          }
          p[j] = dot / sqrt((double)MHSA_D);
          if (!kpm[b * MHSA_S + j] && p[j] > max) max = p[j];
        }
        for (j = 0; j < MHSA_S; ++j) {
          p[j] = kpm[b * MHSA_S + j] ? 0 : exp(p[j] - max);
          z += p[j];
        }
        for (j = 0; j < MHSA_S; ++j) weights[(b * MHSA_S + i) * MHSA_S + j] += p[j] / z / MHSA_H;
        for (f = 0; f < MHSA_D; ++f) {
          double sum = 0;
          for (j = 0; j < MHSA_S; ++j) sum += p[j] / z * qkv[j][b][2 * MHSA_E + h * MHSA_D + f];
          attn[i][b][h * MHSA_D + f] = sum;
        }
      }
    }
  }
  for (s = 0; s < MHSA_S; ++s) {
    for (b = 0; b < MHSA_B; ++b) {
      for (f = 0; f < MHSA_E; ++f) {
        double sum = b_out[f];
        for (e = 0; e < MHSA_E; ++e) sum += attn[s][b][e] * w_out[f * MHSA_E + e];
        y[(s * MHSA_B + b) * MHSA_E + f] = sum;
      }
    }
  }
}

/* Counts and prints the elements with |got - want| > tol. */
static int expect_close(const char* what, const float* got, const double* want, int n,
                        double tol) {
  int failures = 0, i;
  for (i = 0; i < n; ++i) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= tol)) {
      fprintf(stderr, "FAIL %s[%d]: got %.9g, want %.17g, |diff| %.3g > %.3g\n", what, i,
              (double)got[i], want[i], err, tol);
      ++failures;
    }
  }
  return failures;
}

/* simdattn_mhsa with biases, a padded key and averaged weights against mhsa_reference; in
 * place (y == x) gives the same bits; a bad head count is rejected without writing. */
static int check_mhsa(void) {
  enum { N = MHSA_S * MHSA_B * MHSA_E, W = MHSA_B * MHSA_S * MHSA_S };
  float x[N], y[N], xy[N], w_in[3 * MHSA_E * MHSA_E], b_in[3 * MHSA_E];
  float w_out[MHSA_E * MHSA_E], b_out[MHSA_E], weights[W];
  const uint8_t kpm[MHSA_B * MHSA_S] = {0, 0, 0, 0, 1, 0}; /* batch 1 ignores key 1 */
  double want_y[N], want_w[W], max_y = 0;
  simdattn_mha_weights mw;
  simdattn_mha_options opts;
  int failures = 0, i;
  for (i = 0; i < N; ++i) x[i] = (float)((i * 7) % 11 - 5) / 5.0f;
  for (i = 0; i < 3 * MHSA_E * MHSA_E; ++i) w_in[i] = (float)((i * 5) % 13 - 6) / 8.0f;
  for (i = 0; i < 3 * MHSA_E; ++i) b_in[i] = (float)(i % 5 - 2) / 4.0f;
  for (i = 0; i < MHSA_E * MHSA_E; ++i) w_out[i] = (float)((i * 3) % 7 - 3) / 4.0f;
  for (i = 0; i < MHSA_E; ++i) b_out[i] = (float)(i - 1) / 2.0f;
  mw.in_proj_weight = w_in, mw.in_proj_bias = b_in;
  mw.out_proj_weight = w_out, mw.out_proj_bias = b_out;
  simdattn_mha_options_init(&opts);
  opts.key_padding_mask = kpm;
  opts.attn_weights = weights;
  if (expect_status("mhsa", simdattn_mhsa(x, y, MHSA_S, MHSA_B, MHSA_E, MHSA_H, &mw, &opts),
                    SIMDATTN_OK)) {
    return 1;
  }
  mhsa_reference(x, w_in, b_in, w_out, b_out, kpm, want_y, want_w);
  for (i = 0; i < N; ++i) max_y = fabs(want_y[i]) > max_y ? fabs(want_y[i]) : max_y;
  /* Worst-case float32 error chain (each k-term sum within gamma_k of its sum of |terms|), with
   * this data's magnitudes: sums of |terms| <= 2.2 in in_proj, <= 1.5 in the scores, <= 2.1 in
   * out_proj, |v| <= 1.9, rows of |W_out| sum to <= 3. in_proj 11u, scores 65u, probabilities
   * 140u (relative), p.v 290u, y 880u < 512u (1 + max|y|), max|y| = 1.6. Weights: 140u < 256u.
   * (Observed: about 2u.) */
  failures += expect_close("mhsa y", y, want_y, N, 512 * UNIT_ROUNDOFF * (1 + max_y));
  failures += expect_close("mhsa weights", weights, want_w, W, 256 * UNIT_ROUNDOFF);
  memcpy(xy, x, sizeof(x));
  failures += expect_status("mhsa in place",
                            simdattn_mhsa(xy, xy, MHSA_S, MHSA_B, MHSA_E, MHSA_H, &mw, &opts),
                            SIMDATTN_OK);
  if (memcmp(xy, y, sizeof(y)) != 0) {
    fprintf(stderr, "FAIL mhsa in place differs from mhsa into a separate y\n");
    ++failures;
  }
  memcpy(xy, y, sizeof(y));
  failures += expect_status("mhsa(num_heads = 3)",
                            simdattn_mhsa(x, y, MHSA_S, MHSA_B, MHSA_E, 3, &mw, &opts),
                            SIMDATTN_ERR_BAD_SHAPE);
  if (memcmp(xy, y, sizeof(y)) != 0) {
    fprintf(stderr, "FAIL a failed mhsa wrote to y\n");
    ++failures;
  }
  return failures;
}

int main(void) {
  static const struct {
    const char* name;
    int (*run)(void);
  } kChecks[] = {
      {"readme_example", readme_example},
      {"transposed_sgemm", check_transposed_sgemm},
      {"version_and_target", check_version_and_target},
      {"status_names", check_status_names},
      {"error_reporting", check_error_reporting},
      {"empty", check_empty},
      {"mhsa", check_mhsa},
  };
  int failed = 0;
  size_t i;
  for (i = 0; i < sizeof(kChecks) / sizeof(kChecks[0]); ++i) {
    const int failures = kChecks[i].run();
    printf("%s: %s\n", kChecks[i].name, failures == 0 ? "ok" : "FAILED");
    failed += failures != 0;
  }
  printf("%d of %d checks failed\n", failed, (int)(sizeof(kChecks) / sizeof(kChecks[0])));
  return failed == 0 ? 0 : 1;
}

/* A binary of the 0.1 era: compiled against the 0.1 header (tests/abi/simdattn_0_1.h, the
 * header of commit 2e0fd23) and linked against an unversioned 0.1-like library
 * (tests/abi/stub_0_1.c), then run against this build's libsimdattn.so.0. Its reference to
 * simdattn_sdpa_options_init is unversioned, so it must bind SIMDATTN_0.1, the initialiser that
 * writes only the 176 bytes this program's struct has. Checks: the bytes after the struct are
 * untouched, struct_size = 176, every field 0; an sdpa call with that struct (garbage after it
 * that would be invalid 0.2 fields) matches options NULL bitwise and a float64 reference. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "simdattn_0_1.h"

/* The 0.1 layout is 176 bytes on x86-64 (SIMDATTN_SDPA_OPTIONS_SIZE_0_1 of 0.2). */
typedef char options_size_is_176[sizeof(simdattn_sdpa_options) == 176 ? 1 : -1];

enum { kGuard = 64, kBatch = 1, kHeads = 2, kQLen = 3, kKvLen = 5, kDk = 4, kDv = 3 };
/* The options and what follows them in memory: bytes a 0.1 initialiser must not write and a
 * 0.2 library must not read (0xFF there is window -1, softcap NaN, sides -1: all invalid). */
struct guarded_options {
  simdattn_sdpa_options o;
  unsigned char after[kGuard];
};

static int failures = 0;
static void expect(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "FAIL %s\n", what);
    ++failures;
  }
}

static void check_init(void) {
  struct guarded_options g;
  static const unsigned char zero[sizeof(simdattn_sdpa_options)];
  unsigned char want_after[kGuard];
  memset(&g, 0xA5, sizeof(g));
  memset(want_after, 0xA5, sizeof(want_after));
  simdattn_sdpa_options_init(&g.o);
  expect(g.o.struct_size == 176, "options_init sets struct_size 176 for a 0.1 binary");
  expect(memcmp((const unsigned char*)&g.o + sizeof(size_t), zero + sizeof(size_t),
                sizeof(g.o) - sizeof(size_t)) == 0,
         "options_init zeroes every 0.1 field");
  expect(memcmp(g.after, want_after, kGuard) == 0,
         "options_init writes nothing past the 176-byte 0.1 struct");
}

/* Float64 reference of one query row (bottom-right causal, default scale 1/sqrt(d_k)). */
static void reference_row(const float* q, const float* k, const float* v, int h, int i,
                          double* out, double* lse) {
  double s[kKvLen], m = -INFINITY, sum = 0.0;
  const int visible = i + (kKvLen - kQLen) + 1; /* keys j <= i + kv_len - q_len */
  int j, t;
  for (j = 0; j < visible; ++j) {
    double dot = 0.0;
    for (t = 0; t < kDk; ++t) {
      dot += (double)q[(h * kQLen + i) * kDk + t] * k[(h * kKvLen + j) * kDk + t];
    }
    s[j] = dot / sqrt((double)kDk);
    if (s[j] > m) m = s[j];
  }
  for (j = 0; j < visible; ++j) sum += exp(s[j] - m);
  for (t = 0; t < kDv; ++t) {
    out[t] = 0.0;
    for (j = 0; j < visible; ++j) out[t] += exp(s[j] - m) / sum * v[(h * kKvLen + j) * kDv + t];
  }
  *lse = m + log(sum);
}

/* n deterministic values in [-1, 1) (a linear congruential generator's top 24 bits). */
static void fill(float* x, size_t n, unsigned int* state) {
  size_t i;
  for (i = 0; i < n; ++i) {
    *state = *state * 1103515245u + 12345u;
    x[i] = (float)(*state >> 8) / 8388608.0f - 1.0f;
  }
}

static void check_sdpa(void) {
  float q[kBatch * kHeads * kQLen * kDk], k[kBatch * kHeads * kKvLen * kDk];
  float v[kBatch * kHeads * kKvLen * kDv];
  float out[kBatch * kHeads * kQLen * kDv], out_default[kBatch * kHeads * kQLen * kDv];
  float out_null[kBatch * kHeads * kQLen * kDv];
  float lse[kBatch * kHeads * kQLen];
  struct guarded_options g;
  unsigned int state = 12345u;
  int h, i, t;
  fill(q, sizeof(q) / sizeof(q[0]), &state);
  fill(k, sizeof(k) / sizeof(k[0]), &state);
  fill(v, sizeof(v) / sizeof(v[0]), &state);

  memset(&g, 0xFF, sizeof(g));
  simdattn_sdpa_options_init(&g.o);
  g.o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  g.o.lse = lse;
  expect(simdattn_sdpa(q, k, v, out, kBatch, kHeads, kQLen, kKvLen, kDk, kDv, &g.o) == SIMDATTN_OK,
         "sdpa with the 0.1 struct (garbage after it) succeeds");
  if (failures) fprintf(stderr, "last_error: %s\n", simdattn_last_error());

  /* Defaults through the 0.1 struct (garbage after it) and through options NULL: bitwise. */
  g.o.lse = NULL;
  g.o.causal = SIMDATTN_CAUSAL_NONE;
  expect(simdattn_sdpa(q, k, v, out_default, kBatch, kHeads, kQLen, kKvLen, kDk, kDv, &g.o) ==
             SIMDATTN_OK, "non-causal sdpa with the 0.1 struct succeeds");
  expect(simdattn_sdpa(q, k, v, out_null, kBatch, kHeads, kQLen, kKvLen, kDk, kDv, NULL) ==
             SIMDATTN_OK, "sdpa with options NULL succeeds");
  expect(memcmp(out_default, out_null, sizeof(out_null)) == 0,
         "the 0.1 struct gives bitwise the result of options NULL");

  /* Bound: tests/sdpa_harness.h's BoundsFor for d_k 4, at most 5 keys, |s| <= 2, |v| < 1 is
   * about 170 u (logit error ~22u, weights ~85u, times its safety factor 2) = 1.0e-5; 2e-5
   * leaves room for the float64 reference's own rounding (negligible). */
  for (h = 0; h < kHeads; ++h) {
    for (i = 0; i < kQLen; ++i) {
      double want[kDv], want_lse;
      reference_row(q, k, v, h, i, want, &want_lse);
      for (t = 0; t < kDv; ++t) {
        expect(fabs(out[(h * kQLen + i) * kDv + t] - want[t]) <= 2e-5, "out matches the reference");
      }
      expect(fabs(lse[h * kQLen + i] - want_lse) <= 2e-5, "lse matches the reference");
    }
  }
}

int main(void) {
  check_init();
  check_sdpa();
  if (failures == 0) printf("0.1 ABI: options_init and sdpa OK\n");
  return failures == 0 ? 0 : 1;
}

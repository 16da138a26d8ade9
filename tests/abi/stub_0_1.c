/* A stand-in for libsimdattn 0.1 at link time: the functions tests/abi/abi_0_1.c calls, built
 * with the soname libsimdattn.so.0 and no version script, so the program gets the unversioned
 * references a binary linked against 0.1 has. It is never loaded when the test runs (the real
 * library is found first through LD_LIBRARY_PATH); if it were, every call aborts. */
#include <stdlib.h>

#include "simdattn_0_1.h"

void simdattn_sdpa_options_init(simdattn_sdpa_options* options) {
  (void)options;
  abort();
}

simdattn_status simdattn_sdpa(const float* q, const float* k, const float* v, float* out,
                              int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                              int64_t d_k, int64_t d_v, const simdattn_sdpa_options* options) {
  (void)q, (void)k, (void)v, (void)out, (void)batch, (void)heads, (void)q_len, (void)kv_len;
  (void)d_k, (void)d_v, (void)options;
  abort();
}

const char* simdattn_last_error(void) { abort(); }

const char* simdattn_version(void) { abort(); }

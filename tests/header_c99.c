/* simdattn.h on its own, as strict C99 (-std=c99 -pedantic-errors -Wall -Wextra -Werror):
 * it must include what it uses and contain nothing a C compiler rejects. */
#include "simdattn.h"

int main(void) {
  simdattn_status status = SIMDATTN_OK;
  simdattn_strides strides = {0, 0, 0};
  simdattn_sdpa_options sdpa;
  simdattn_mha_options mha;
  sdpa.struct_size = sizeof(sdpa);
  sdpa.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  sdpa.q_strides = strides;
  mha.struct_size = sizeof(mha);
  return status == SIMDATTN_OK && sdpa.q_strides.seq == 0 && mha.struct_size > 0 ? 0 : 1;
}

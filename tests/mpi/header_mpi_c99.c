/* simdattn_mpi.h alone (with MPI's mpi.h), as strict C99, linked against libsimdattn_mpi:
 * building is the test. */
#include "simdattn_mpi.h"

int main(void) {
  simdattn_status (*ring)(MPI_Comm, int32_t, const float*, const float*, const float*, float*,
                          int64_t, int64_t, int64_t, int64_t, int64_t,
                          const simdattn_sdpa_options*) = simdattn_ring_sdpa;
  return ring == 0 || SIMDATTN_RING_ZIGZAG != 1;
}

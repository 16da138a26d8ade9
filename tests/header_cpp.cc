// simdattn.h on its own, as C++17 with -Wall -Wextra -Wpedantic -Werror: the extern "C" block
// and the types must compile cleanly in C++ too.
#include "simdattn.h"

#include <type_traits>

static_assert(std::is_standard_layout<simdattn_sdpa_options>::value, "C struct");
static_assert(std::is_trivially_copyable<simdattn_mha_options>::value, "C struct");

int main() {
  simdattn_status status = SIMDATTN_OK;
  simdattn_strides strides{0, 0, 0};
  simdattn_sdpa_options sdpa{};
  sdpa.struct_size = sizeof(sdpa);
  sdpa.causal = SIMDATTN_CAUSAL_TOP_LEFT;
  sdpa.k_strides = strides;
  // decltype does not odr-use the function, so nothing needs linking.
  static_assert(std::is_same<decltype(&simdattn_sgemm),
                             simdattn_status (*)(int32_t, int32_t, int64_t, int64_t, int64_t,
                                                 float, const float*, int64_t, const float*,
                                                 int64_t, float, float*, int64_t)>::value,
                "simdattn_sgemm signature");
  return status == SIMDATTN_OK && sdpa.k_strides.head == 0 ? 0 : 1;
}

// libFuzzer target: simdattn_cast. Decodes n (small, or an edge value), two dtypes (sometimes
// unknown), NULLs, and src/dst placed in one guarded byte buffer (apart, adjacent, or
// overlapping by a chosen amount, in place included). Checks the status the header demands for
// exactly that input, nothing written on failure or for n == 0, guard bytes untouched, and on
// success every element against tests/cast_reference.h (NaN only as "a NaN" across types).
#include "tests/cast_reference.h"
#include "tests/fuzz/fuzz_common.h"

using namespace fuzz;

namespace {

constexpr int64_t kMaxElems = 4096;
constexpr size_t kGuardBytes = 64;

int64_t DtypeBytes(int32_t t) { return t == 0 ? 4 : (t == 1 || t == 2) ? 2 : 0; }

int32_t Dtype(FuzzedDataProvider& in) {
  const uint8_t b = in.ConsumeIntegral<uint8_t>();
  return b < 240 ? b % 3 : static_cast<int32_t>(in.ConsumeIntegral<int32_t>());
}

// The status of the header's checks, in their order.
simdattn_status Want(int64_t n, const void* src, int32_t st, const void* dst, int32_t dt) {
  if (n < 0) return SIMDATTN_ERR_BAD_SHAPE;
  if (DtypeBytes(st) == 0 || DtypeBytes(dt) == 0) return SIMDATTN_ERR_BAD_ARGUMENT;
  int64_t b;
  if (__builtin_mul_overflow(n, DtypeBytes(st), &b) || __builtin_mul_overflow(n, DtypeBytes(dt), &b)) {
    return SIMDATTN_ERR_BAD_SHAPE;
  }
  if (n == 0) return SIMDATTN_OK;
  if (src == nullptr || dst == nullptr) return SIMDATTN_ERR_NULL_POINTER;
  const auto s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
  const bool overlap = s < d + static_cast<uintptr_t>(n * DtypeBytes(dt)) &&
                       d < s + static_cast<uintptr_t>(n * DtypeBytes(st));
  return overlap ? SIMDATTN_ERR_BAD_ARGUMENT : SIMDATTN_OK;
}

uint32_t Load(const uint8_t* p, int32_t t) {
  if (t == 0) {
    uint32_t u;
    std::memcpy(&u, p, 4);
    return u;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// Element i of dst against the reference conversion of src element i.
void CheckElement(uint32_t s, int32_t st, uint32_t got, int32_t dt, int64_t i) {
  if (st == dt) {
    FUZZ_CHECK(got == s, "[%lld] copy 0x%x -> 0x%x", (long long)i, s, got);
    return;
  }
  const double v = st == 0 ? cast_reference::FloatOf(s)
                           : cast_reference::Widen(cast_reference::FormatOf(st), uint16_t(s));
  bool ok;
  if (dt == 0) {
    ok = std::isnan(v) ? std::isnan(cast_reference::FloatOf(got))
                       : got == cast_reference::BitsOf(static_cast<float>(v));
  } else {
    const cast_reference::Format f = cast_reference::FormatOf(dt);
    ok = std::isnan(v) ? cast_reference::IsNan(f, uint16_t(got))
                       : got == cast_reference::Narrow(f, v);
  }
  FUZZ_CHECK(ok, "[%lld] %d -> %d: 0x%x -> 0x%x", (long long)i, st, dt, s, got);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const TargetOfInput target(data, size);
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const int64_t n = Size(in, kMaxElems);
  const int32_t st = Dtype(in), dt = Dtype(in);
  const int64_t n_alloc = n >= 0 && n <= kMaxElems ? n : 0;
  const int64_t src_bytes = n_alloc * 4, dst_bytes = n_alloc * 4;  // room for either type
  // dst at a chosen byte offset from src: apart (after it), or anywhere from before its start
  // to past its end (overlapping or adjacent).
  const int64_t shift = (flags & 4) ? in.ConsumeIntegralInRange<int64_t>(-dst_bytes, src_bytes)
                                    : src_bytes + dst_bytes;
  const int64_t origin = dst_bytes;  // src's offset in the data area
  std::vector<uint8_t> buf(static_cast<size_t>(origin + src_bytes + dst_bytes + src_bytes) +
                           2 * kGuardBytes, 0xA5);
  uint8_t* area = buf.data() + kGuardBytes;
  for (int64_t b = 0; b < src_bytes; ++b) area[origin + b] = in.ConsumeIntegral<uint8_t>();
  const void* src = (flags & 1) ? nullptr : area + origin;
  void* dst = (flags & 2) ? nullptr : area + origin + shift;
  const std::vector<uint8_t> before = buf;
  const simdattn_status s = simdattn_cast(n, src, st, dst, dt);
  CheckStatus(s);
  const simdattn_status want = Want(n, src, st, dst, dt);
  FUZZ_CHECK(s == want, "status %s, want %s (n %lld, dtypes %d -> %d, shift %lld)",
             simdattn_status_name(s), simdattn_status_name(want), (long long)n, st, dt,
             (long long)shift);
  if (s != SIMDATTN_OK || n == 0) {
    FUZZ_CHECK(buf == before, "a failed or empty call (%s) wrote", simdattn_status_name(s));
    return 0;
  }
  // Only dst's bytes may change; src (disjoint) is intact.
  const int64_t lo = kGuardBytes + origin + shift, hi = lo + n * DtypeBytes(dt);
  for (int64_t b = 0; b < static_cast<int64_t>(buf.size()); ++b) {
    FUZZ_CHECK(b >= lo && b < hi ? true : buf[b] == before[b], "byte %lld outside dst written",
               (long long)(b - lo));
  }
  for (int64_t i = 0; i < n; ++i) {
    CheckElement(Load(before.data() + kGuardBytes + origin + i * DtypeBytes(st), st), st,
                 Load(static_cast<const uint8_t*>(dst) + i * DtypeBytes(dt), dt), dt, i);
  }
  return 0;
}

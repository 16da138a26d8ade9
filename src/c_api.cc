// The C ABI: validates every argument, records the error text, translates to the C++ ops and
// turns exceptions into status codes. No arithmetic on data happens here.

#include "simdattn.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <cstdarg>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <exception>
#include <initializer_list>
#include <new>
#include <string>

#include "src/ops/ops.h"
#include "src/threading.h"

namespace simdattn {
namespace {

thread_local std::string t_last_error;  // a new thread starts with ""

simdattn_status Ok() {
  t_last_error.clear();
  return SIMDATTN_OK;
}

// floor(a / b) for b > 0.
int64_t FloorDiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && a < 0 ? 1 : 0); }

// Row offset differences a search for overlapping rows may try before giving up.
constexpr int64_t kOverlapSearchBudget = int64_t{1} << 22;

// Whether nonzero integers x_i, |x_i| < size_i, make |sum_i x_i stride_i| < inner for the nd <= 3
// (stride, size) pairs of dims (sorted by stride, sizes > 1, every |x_i stride_i| sum below 2^62):
// 1 yes (*gap = that sum), 0 no, -1 not decided within kOverlapSearchBudget (*gap = the count of
// offset pairs it would take). Enumerates all but the dimension with the most entries and solves
// for that one.
int FindRowOverlap(const std::pair<int64_t, int64_t>* dims, int nd, int64_t inner, int64_t* gap) {
  for (int i = 0; i < nd; ++i) {
    if (dims[i].first < inner) {  // x_i = 1 alone
      *gap = dims[i].first;
      return 1;
    }
  }
  if (nd <= 1) return 0;
  int big = 0;
  for (int i = 1; i < nd; ++i) {
    if (dims[i].second > dims[big].second) big = i;
  }
  int64_t ranges[2] = {1, 1}, strides[2] = {0, 0};  // the enumerated dimensions (or unit ones)
  for (int i = 0, j = 0; i < nd; ++i) {
    if (i != big) ranges[j] = dims[i].second, strides[j++] = dims[i].first;
  }
  int64_t work = 0;
  if (__builtin_mul_overflow(ranges[0], 2 * ranges[1], &work) || work > kOverlapSearchBudget) {
    *gap = work;
    return -1;
  }
  const int64_t s_big = dims[big].first, n_big = dims[big].second;  // s_big >= inner > 0
  // By symmetry (negate every x) the first enumerated offset can be taken >= 0.
  for (int64_t x0 = 0; x0 < ranges[0]; ++x0) {
    for (int64_t x1 = x0 == 0 ? 0 : -(ranges[1] - 1); x1 < ranges[1]; ++x1) {
      const int64_t t = x0 * strides[0] + x1 * strides[1];
      // x with -inner < t + x s_big < inner, |x| < n_big, and not all three zero.
      int64_t lo = FloorDiv(-inner - t, s_big) + 1, hi = -FloorDiv(t - inner, s_big) - 1;
      lo = std::max(lo, -(n_big - 1));
      hi = std::min(hi, n_big - 1);
      for (int64_t x = lo; x <= hi; ++x) {
        if (x == 0 && x0 == 0 && x1 == 0) continue;
        *gap = t + x * s_big;
        if (*gap < 0) *gap = -*gap;
        return 1;
      }
    }
  }
  return 0;
}

// First failure wins: later checks are skipped once one failed.
class Validator {
 public:
  explicit Validator(const char* function) : function_(function) {}

  bool ok() const { return status_ == SIMDATTN_OK; }
  simdattn_status status() const { return status_; }

  __attribute__((format(printf, 4, 5))) Validator& Require(bool condition, simdattn_status status,
                                                            const char* fmt, ...) {
    if (!ok() || condition) return *this;
    char buf[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);
    status_ = status;
    t_last_error = std::string(function_) + ": " + buf;
    return *this;
  }

  Validator& Flag(int32_t value, const char* name) {
    return Require(value == 0 || value == 1, SIMDATTN_ERR_BAD_ARGUMENT, "%s must be 0 or 1 (got %d)",
                   name, static_cast<int>(value));
  }
  Validator& NonNegative(int64_t value, const char* name) {
    return Require(value >= 0, SIMDATTN_ERR_BAD_SHAPE, "%s must be >= 0 (got %lld)", name,
                   static_cast<long long>(value));
  }
  // CBLAS rule: ld >= max(1, row_length).
  Validator& LeadingDim(int64_t ld, int64_t row_length, const char* name, const char* what) {
    const int64_t min = row_length > 1 ? row_length : 1;
    return Require(ld >= min, SIMDATTN_ERR_BAD_SHAPE, "%s must be >= max(1, %s) = %lld (got %lld)",
                   name, what, static_cast<long long>(min), static_cast<long long>(ld));
  }
  // *extent = elements spanned by `rows` rows of `cols` elements `ld` apart (0 if empty), with the
  // byte size representable in int64.
  Validator& Extent(int64_t rows, int64_t cols, int64_t ld, const char* name, int64_t* extent) {
    *extent = 0;
    if (!ok() || rows == 0 || cols == 0) return *this;
    // The ops step a row pointer one row past the last row (rows * ld), so that byte offset must
    // be representable too when there is more than one row.
    int64_t span = 0, bytes = 0, past = 0;
    const bool overflow = __builtin_mul_overflow(rows - 1, ld, &span) ||
                          __builtin_add_overflow(span, cols, &span) ||
                          __builtin_mul_overflow(span, static_cast<int64_t>(sizeof(float)), &bytes) ||
                          (rows > 1 && (__builtin_mul_overflow(rows, ld, &past) ||
                                        __builtin_mul_overflow(past, int64_t{sizeof(float)}, &past)));
    Require(!overflow, SIMDATTN_ERR_BAD_SHAPE,
            "%s spans %lld rows of %lld elements with leading dimension %lld: overflows int64",
            name, static_cast<long long>(rows), static_cast<long long>(cols),
            static_cast<long long>(ld));
    if (ok()) *extent = span;
    return *this;
  }
  // *total = (count - 1) * stride + extent (0 if count or extent is 0), overflow-checked.
  Validator& Batched(int64_t count, int64_t stride, int64_t extent, const char* name,
                     int64_t* total) {
    *total = 0;
    if (!ok() || count == 0 || extent == 0) return *this;
    int64_t span = 0, bytes = 0;
    const bool overflow = __builtin_mul_overflow(count - 1, stride, &span) ||
                          __builtin_add_overflow(span, extent, &span) ||
                          __builtin_mul_overflow(span, static_cast<int64_t>(sizeof(float)), &bytes);
    Require(!overflow, SIMDATTN_ERR_BAD_SHAPE, "%s: %lld matrices %lld elements apart overflow int64",
            name, static_cast<long long>(count), static_cast<long long>(stride));
    if (ok()) *total = span;
    return *this;
  }
  // *span = elements spanned by a [batch, heads, seq, inner] tensor with the given strides
  // (0 if empty); strides must be >= 0 and the byte extent representable in int64.
  Validator& Span4(const int64_t sizes[3], const simdattn_strides& st, int64_t inner,
                   const char* name, int64_t* span) {
    *span = 0;
    const int64_t strides[3] = {st.batch, st.head, st.seq};
    static const char* const kDims[3] = {"batch", "head", "seq"};
    for (int i = 0; i < 3; ++i) {
      Require(strides[i] >= 0, SIMDATTN_ERR_BAD_SHAPE, "%s strides.%s must be >= 0 (got %lld)",
              name, kDims[i], static_cast<long long>(strides[i]));
    }
    if (!ok() || inner == 0 || sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0) return *this;
    // As Extent: also the offset one row (head, batch entry) past the last, which the ops may
    // form, must be representable in bytes.
    int64_t total = inner, past = inner, term = 0, bytes = 0;
    bool overflow = false;
    for (int i = 0; i < 3; ++i) {
      overflow = overflow || __builtin_mul_overflow(sizes[i] - 1, strides[i], &term) ||
                 __builtin_add_overflow(total, term, &total) ||
                 (sizes[i] > 1 && (__builtin_mul_overflow(sizes[i], strides[i], &term) ||
                                   __builtin_add_overflow(past, term, &past)));
    }
    overflow = overflow || __builtin_mul_overflow(total, static_cast<int64_t>(sizeof(float)), &bytes) ||
               __builtin_mul_overflow(past, static_cast<int64_t>(sizeof(float)), &bytes);
    Require(!overflow, SIMDATTN_ERR_BAD_SHAPE, "%s: its extent overflows int64", name);
    if (ok()) *span = total;
    return *this;
  }
  // Distinct [batch, head, seq] rows of `inner` elements must not share an element (an output
  // written through strides). Strides and sizes are valid (Span4 passed). Exact: rows
  // (b, h, s) and (b', h', s') overlap iff |sum_i (x_i - x'_i) * stride_i| < inner.
  Validator& RowsDisjoint(const int64_t sizes[3], const simdattn_strides& st, int64_t inner,
                          const char* name) {
    if (!ok() || inner == 0) return *this;
    const int64_t strides[3] = {st.batch, st.head, st.seq};
    std::pair<int64_t, int64_t> dims[3];  // (stride, size) of the dimensions with size > 1
    int nd = 0;
    for (int i = 0; i < 3; ++i) {
      if (sizes[i] > 1) dims[nd++] = {strides[i], sizes[i]};
    }
    for (int i = 1; i < nd; ++i) {  // by stride (insertion sort of at most 3)
      for (int j = i; j > 0 && dims[j] < dims[j - 1]; --j) std::swap(dims[j], dims[j - 1]);
    }
    // Sufficient: each stride at least the extent of everything below it (nested layouts).
    bool nested = true;
    int64_t extent = inner;
    for (int i = 0; i < nd; ++i) {
      nested = nested && dims[i].first >= extent;
      if (!nested) break;
      extent = dims[i].first * (dims[i].second - 1) + extent;  // <= the span: no overflow
    }
    if (nested) return *this;
    int64_t gap = 0;
    const int verdict = FindRowOverlap(dims, nd, inner, &gap);
    return Require(verdict == 0, SIMDATTN_ERR_BAD_ARGUMENT,
                   verdict > 0 ? "%s strides {%lld, %lld, %lld} make distinct rows overlap (two rows "
                                 "start %lld elements apart, less than the row length %lld)"
                               : "%s strides {%lld, %lld, %lld} interleave rows too many ways to "
                                 "check that none overlap (%lld; row length %lld): use nested strides",
                   name, static_cast<long long>(st.batch), static_cast<long long>(st.head),
                   static_cast<long long>(st.seq), static_cast<long long>(gap),
                   static_cast<long long>(inner));
  }
  // *count = d0 * d1 * ... elements, with the byte size representable in int64 (0 if any d is 0).
  // (Elements of `elem` bytes.)
  Validator& Elements(std::initializer_list<int64_t> dims, const char* name, int64_t* count,
                      size_t elem = sizeof(float)) {
    *count = 0;
    if (!ok()) return *this;
    int64_t n = 1, bytes = 0;
    bool overflow = false;
    for (int64_t d : dims) {
      if (d == 0) return *this;  // a product with a zero factor is 0, whatever the others
    }
    for (int64_t d : dims) overflow = overflow || __builtin_mul_overflow(n, d, &n);
    overflow = overflow || __builtin_mul_overflow(n, static_cast<int64_t>(elem), &bytes);
    Require(!overflow, SIMDATTN_ERR_BAD_SHAPE, "%s has too many elements: overflows int64", name);
    if (ok()) *count = n;
    return *this;
  }
  // A memory region: `n` elements of `elem` bytes from p.
  struct Region {
    const void* p;
    int64_t n;
    const char* name;
    size_t elem = sizeof(float);
  };
  Validator& NotNull(const void* p, int64_t elements, const char* name) {
    return Require(p != nullptr || elements == 0, SIMDATTN_ERR_NULL_POINTER,
                   "%s is NULL but has %lld elements", name, static_cast<long long>(elements));
  }
  // Output [out, out + out_n) must not share a byte with input [in, in + in_n).
  Validator& NoOverlap(const void* out, int64_t out_n, const char* out_name, const void* in,
                       int64_t in_n, const char* in_name, size_t elem = sizeof(float)) {
    if (!ok() || out_n == 0 || in_n == 0) return *this;
    const auto o = reinterpret_cast<uintptr_t>(out), i = reinterpret_cast<uintptr_t>(in);
    const bool overlap = o < i + static_cast<uintptr_t>(in_n) * elem &&
                         i < o + static_cast<uintptr_t>(out_n) * sizeof(float);
    return Require(!overlap, SIMDATTN_ERR_BAD_ARGUMENT, "%s overlaps %s", out_name, in_name);
  }

 private:
  const char* function_;
  simdattn_status status_ = SIMDATTN_OK;
};

// Runs an op, mapping exceptions to status codes.
template <class F>
simdattn_status Run(const char* function, F&& op) {
  try {
    const CallScope scope;  // one arena and thread count for the whole call
    op();
    return Ok();
  } catch (const std::bad_alloc&) {
    t_last_error = std::string(function) + ": out of memory for scratch buffers";
    return SIMDATTN_ERR_OUT_OF_MEMORY;
  } catch (const std::runtime_error& e) {
    // oneTBB reports a failed pthread_create (no memory for a stack, thread limit) this way:
    // a resource shortage, not a bug.
    if (std::strncmp(e.what(), "pthread_create", 14) == 0) {
      t_last_error = std::string(function) + ": could not start a worker thread: " + e.what();
      return SIMDATTN_ERR_OUT_OF_MEMORY;
    }
    t_last_error = std::string(function) + ": internal error: " + e.what();
    return SIMDATTN_ERR_INTERNAL;
  } catch (const std::exception& e) {
    t_last_error = std::string(function) + ": internal error: " + e.what();
    return SIMDATTN_ERR_INTERNAL;
  } catch (...) {
    t_last_error = std::string(function) + ": internal error: unknown exception";
    return SIMDATTN_ERR_INTERNAL;
  }
}

}  // namespace
}  // namespace simdattn

using simdattn::Validator;

extern "C" {

const char* simdattn_status_name(simdattn_status s) {
  // C callers may pass any int (the header names the result for values outside the enum);
  // reading such a value as the C++ enum is undefined (clang's -fsanitize=enum reports it), so
  // its bytes are read as an int.
  int value = 0;
  static_assert(sizeof(value) == sizeof(s), "simdattn_status is int-sized");
  std::memcpy(&value, &s, sizeof(value));
  switch (value) {
    case SIMDATTN_OK: return "SIMDATTN_OK";
    case SIMDATTN_ERR_NULL_POINTER: return "SIMDATTN_ERR_NULL_POINTER";
    case SIMDATTN_ERR_BAD_SHAPE: return "SIMDATTN_ERR_BAD_SHAPE";
    case SIMDATTN_ERR_BAD_ARGUMENT: return "SIMDATTN_ERR_BAD_ARGUMENT";
    case SIMDATTN_ERR_OUT_OF_MEMORY: return "SIMDATTN_ERR_OUT_OF_MEMORY";
    case SIMDATTN_ERR_INTERNAL: return "SIMDATTN_ERR_INTERNAL";
  }
  return "SIMDATTN_UNKNOWN_STATUS";
}

const char* simdattn_last_error(void) { return simdattn::t_last_error.c_str(); }

const char* simdattn_version(void) { return SIMDATTN_VERSION_STRING; }

const char* simdattn_simd_target(void) { return simdattn::SimdTarget(); }

simdattn_status simdattn_set_num_threads(int32_t n) {
  Validator v("simdattn_set_num_threads");
  v.Require(n >= 0 && n <= SIMDATTN_MAX_THREADS, SIMDATTN_ERR_BAD_ARGUMENT,
            "n must be in [0, SIMDATTN_MAX_THREADS = %d] (0 = all hardware threads), got %d",
            SIMDATTN_MAX_THREADS, static_cast<int>(n));
  if (!v.ok()) return v.status();
  return simdattn::Run("simdattn_set_num_threads", [&] { simdattn::SetNumThreads(n); });
}

int32_t simdattn_get_num_threads(void) { return simdattn::NumThreads(); }

simdattn_status simdattn_sgemm_batched(int32_t trans_a, int32_t trans_b, int64_t batch, int64_t m,
                                       int64_t n, int64_t k, float alpha, const float* a,
                                       int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                                       int64_t stride_b, float beta, float* c, int64_t ldc,
                                       int64_t stride_c) {
  Validator v("simdattn_sgemm");
  v.Flag(trans_a, "trans_a").Flag(trans_b, "trans_b");
  v.NonNegative(batch, "batch").NonNegative(m, "m").NonNegative(n, "n").NonNegative(k, "k");
  v.LeadingDim(lda, trans_a ? m : k, "lda", trans_a ? "m" : "k");
  v.LeadingDim(ldb, trans_b ? k : n, "ldb", trans_b ? "k" : "n");
  v.LeadingDim(ldc, n, "ldc", "n");
  v.NonNegative(stride_a, "stride_a").NonNegative(stride_b, "stride_b");
  v.NonNegative(stride_c, "stride_c");
  int64_t ext_a = 0, ext_b = 0, ext_c = 0, all_a = 0, all_b = 0, all_c = 0;
  const bool reads_ab = m > 0 && n > 0 && k > 0;
  v.Extent(trans_a ? k : m, trans_a ? m : k, lda, "A", &ext_a);
  v.Extent(trans_b ? n : k, trans_b ? k : n, ldb, "B", &ext_b);
  v.Extent(m, n, ldc, "C", &ext_c);
  v.Batched(batch, stride_a, ext_a, "A", &all_a).Batched(batch, stride_b, ext_b, "B", &all_b);
  v.Batched(batch, stride_c, ext_c, "C", &all_c);
  if (!v.ok()) return v.status();
  if (batch == 0 || m == 0 || n == 0) return simdattn::Ok();
  v.NotNull(a, reads_ab ? all_a : 0, "A").NotNull(b, reads_ab ? all_b : 0, "B");
  v.NotNull(c, all_c, "C");
  v.Require(batch == 1 || stride_c >= ext_c, SIMDATTN_ERR_BAD_ARGUMENT,
            "stride_c (%lld) is smaller than one C matrix ((m - 1) * ldc + n = %lld): batch "
            "entries would overlap",
            static_cast<long long>(stride_c), static_cast<long long>(ext_c));
  if (reads_ab) {
    v.NoOverlap(c, all_c, "C", a, all_a, "A").NoOverlap(c, all_c, "C", b, all_b, "B");
  }
  if (!v.ok()) return v.status();
  // Leading dimensions of one-row matrices and strides of a batch of one (or of A and B when
  // k == 0: they are not read) do not matter to the result: normalised so that no address is
  // formed beyond the validated extents.
  if ((trans_a ? k : m) <= 1) lda = std::max<int64_t>(1, trans_a ? m : k);
  if ((trans_b ? n : k) <= 1) ldb = std::max<int64_t>(1, trans_b ? k : n);
  if (m <= 1) ldc = std::max<int64_t>(1, n);
  if (batch == 1 || !reads_ab) stride_a = stride_b = 0;
  if (batch == 1) stride_c = 0;
  simdattn::GemmArgs g;
  g.trans_a = trans_a == 1;
  g.trans_b = trans_b == 1;
  g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
  g.a = a, g.lda = lda, g.stride_a = stride_a;
  g.b = b, g.ldb = ldb, g.stride_b = stride_b;
  g.c = c, g.ldc = ldc, g.stride_c = stride_c;
  g.batch = batch;
  return simdattn::Run("simdattn_sgemm", [&] { simdattn::Sgemm(g); });
}

simdattn_status simdattn_sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k,
                               float alpha, const float* a, int64_t lda, const float* b,
                               int64_t ldb, float beta, float* c, int64_t ldc) {
  return simdattn_sgemm_batched(trans_a, trans_b, 1, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c,
                                ldc, 0);
}

simdattn_status simdattn_softmax(int64_t rows, int64_t cols, const float* x, int64_t ld_x,
                                 float* y, int64_t ld_y) {
  Validator v("simdattn_softmax");
  v.NonNegative(rows, "rows").NonNegative(cols, "cols");
  v.LeadingDim(ld_x, cols, "ld_x", "cols").LeadingDim(ld_y, cols, "ld_y", "cols");
  int64_t ext_x = 0, ext_y = 0;
  v.Extent(rows, cols, ld_x, "x", &ext_x).Extent(rows, cols, ld_y, "y", &ext_y);
  if (!v.ok()) return v.status();
  if (rows == 0 || cols == 0) return simdattn::Ok();
  v.NotNull(x, ext_x, "x").NotNull(y, ext_y, "y");
  const bool in_place = x == y && ld_x == ld_y;
  if (!in_place) v.NoOverlap(y, ext_y, "y", x, ext_x, "x (only y == x with ld_y == ld_x may alias)");
  if (!v.ok()) return v.status();
  return simdattn::Run("simdattn_softmax",
                       [&] { simdattn::Softmax(rows, cols, x, ld_x, y, ld_y); });
}

}  // extern "C"

namespace {

// x * y, or INT64_MAX when that overflows (then Span4 reports the overflow if the stride matters).
int64_t MulSaturated(int64_t x, int64_t y) {
  int64_t r = 0;
  return __builtin_mul_overflow(x, y, &r) ? INT64_MAX : r;
}

// Zero strides -> contiguous [batch, heads, seq, inner]; sizes are already known >= 0.
simdattn_strides ResolveStrides(simdattn_strides st, int64_t heads, int64_t seq, int64_t inner) {
  if (st.batch == 0 && st.head == 0 && st.seq == 0) {
    st.seq = inner;
    st.head = MulSaturated(seq, inner);
    st.batch = MulSaturated(heads, st.head);
  }
  return st;
}

// Zeroes the strides of size-1 dimensions, or all of them when the tensor has no elements.
void ZeroUnusedStrides(const int64_t sizes[3], int64_t span, simdattn_strides* st) {
  if (span == 0 || sizes[0] <= 1) st->batch = 0;
  if (span == 0 || sizes[1] <= 1) st->head = 0;
  if (span == 0 || sizes[2] <= 1) st->seq = 0;
}

// The caller's options as this library's struct: the fields that end at or before struct_size,
// the rest 0 / NULL (defaults). Bytes at or past struct_size are never read.
simdattn_sdpa_options ReadSdpaOptions(Validator& val, const simdattn_sdpa_options* options) {
  simdattn_sdpa_options o{};
  o.struct_size = sizeof(o);
  if (options == nullptr) return o;
  const size_t size = options->struct_size;
  val.Require(size >= SIMDATTN_SDPA_OPTIONS_SIZE_0_1, SIMDATTN_ERR_BAD_ARGUMENT,
              "options->struct_size must be >= %d (the 0.1 layout; call "
              "simdattn_sdpa_options_init), got %zu",
              SIMDATTN_SDPA_OPTIONS_SIZE_0_1, size);
  if (!val.ok()) return o;
  // Field ends of the 0.2 layout, in order: copy up to the last one that fits.
  static const size_t kEnds[] = {
      SIMDATTN_SDPA_OPTIONS_SIZE_0_1,
      offsetof(simdattn_sdpa_options, window) + sizeof(o.window),
      offsetof(simdattn_sdpa_options, softcap) + sizeof(o.softcap),
      offsetof(simdattn_sdpa_options, window_left) + sizeof(o.window_left),
      offsetof(simdattn_sdpa_options, window_right) + sizeof(o.window_right),
      offsetof(simdattn_sdpa_options, alibi_slopes) + sizeof(o.alibi_slopes),
      sizeof(simdattn_sdpa_options)};
  static_assert(offsetof(simdattn_sdpa_options, window) == SIMDATTN_SDPA_OPTIONS_SIZE_0_1,
                "the 0.2 fields follow the 0.1 layout");
  size_t copy = 0;
  for (size_t end : kEnds) {
    if (end <= size) copy = end;
  }
  std::memcpy(static_cast<void*>(&o), options, copy);
  o.struct_size = size;
  return o;
}

// The 0.2 variant fields: flags, sides and scalars (before the empty-problem shortcut).
void CheckSdpaVariants(Validator& val, const simdattn_sdpa_options& o) {
  val.Require(o.window == 0 || o.window == 1, SIMDATTN_ERR_BAD_ARGUMENT,
              "options->window must be 0 or 1 (got %d)", static_cast<int>(o.window));
  if (o.window == 1) {
    val.Require(o.window_left >= 0, SIMDATTN_ERR_BAD_ARGUMENT,
                "options->window_left must be >= 0 (got %lld)", static_cast<long long>(o.window_left));
    val.Require(o.window_right >= 0, SIMDATTN_ERR_BAD_ARGUMENT,
                "options->window_right must be >= 0 (got %lld)",
                static_cast<long long>(o.window_right));
  }
  val.Require(std::isfinite(o.softcap) && o.softcap >= 0.0f, SIMDATTN_ERR_BAD_ARGUMENT,
              "options->softcap must be finite and >= 0 (0 = off), got %g",
              static_cast<double>(o.softcap));
}

// Every ALiBi slope and sink of the `heads` query heads (read only for a non-empty problem).
void CheckSdpaPerHead(Validator& val, const simdattn_sdpa_options& o, int64_t heads) {
  for (int64_t h = 0; o.alibi_slopes != nullptr && h < heads && val.ok(); ++h) {
    val.Require(std::isfinite(o.alibi_slopes[h]), SIMDATTN_ERR_BAD_ARGUMENT,
                "options->alibi_slopes[%lld] = %g: slopes must be finite",
                static_cast<long long>(h), static_cast<double>(o.alibi_slopes[h]));
  }
  for (int64_t h = 0; o.sinks != nullptr && h < heads && val.ok(); ++h) {
    val.Require(!std::isnan(o.sinks[h]) && o.sinks[h] != HUGE_VALF, SIMDATTN_ERR_BAD_ARGUMENT,
                "options->sinks[%lld] = %g: sinks must be finite or -inf",
                static_cast<long long>(h), static_cast<double>(o.sinks[h]));
  }
}

// d_k, d_v, kv_heads and the options' flags and scalars shared by simdattn_sdpa and
// simdattn_sdpa_varlen; returns kv_heads resolved (0 -> heads).
int64_t CheckSdpaScalars(Validator& val, const simdattn_sdpa_options& o, int64_t heads,
                         int64_t d_k, int64_t d_v) {
  val.NonNegative(d_v, "d_v");
  val.Require(d_k >= 1, SIMDATTN_ERR_BAD_SHAPE, "d_k must be >= 1 (got %lld): the scale is undefined",
              static_cast<long long>(d_k));
  val.NonNegative(o.kv_heads, "options->kv_heads");
  const int64_t kv_heads = o.kv_heads == 0 ? heads : o.kv_heads;
  // Arguments are evaluated even after a failure: guard the division (INT64_MIN % -1 traps).
  val.Require(!val.ok() || kv_heads == 0 || heads % kv_heads == 0, SIMDATTN_ERR_BAD_SHAPE,
              "heads (%lld) must be a multiple of options->kv_heads (%lld)",
              static_cast<long long>(heads), static_cast<long long>(kv_heads));
  val.Require(o.causal >= 0 && o.causal <= 2, SIMDATTN_ERR_BAD_ARGUMENT,
              "options->causal must be 0, 1 or 2 (got %d)", static_cast<int>(o.causal));
  val.Require(std::isfinite(o.scale) && o.scale >= 0.0f, SIMDATTN_ERR_BAD_ARGUMENT,
              "options->scale must be finite and >= 0 (0 = 1/sqrt(d_k)), got %g",
              static_cast<double>(o.scale));
  CheckSdpaVariants(val, o);
  return kv_heads;
}

// A buffer of n floats, by name.
struct Named {
  const void* p;
  int64_t n;
  const char* name;
};

// No output overlaps an input (those given plus the slopes and sinks) or another output.
void CheckSdpaOverlaps(Validator& val, const simdattn_sdpa_options& o, int64_t heads,
                       std::initializer_list<Named> inputs, std::initializer_list<Named> outputs) {
  const Named per_head[] = {{o.alibi_slopes, o.alibi_slopes ? heads : 0, "options->alibi_slopes"},
                            {o.sinks, o.sinks ? heads : 0, "options->sinks"}};
  for (const Named& w : outputs) {
    for (const Named& r : inputs) val.NoOverlap(w.p, w.n, w.name, r.p, r.n, r.name);
    for (const Named& r : per_head) val.NoOverlap(w.p, w.n, w.name, r.p, r.n, r.name);
  }
  for (auto w = outputs.begin(); w != outputs.end(); ++w) {
    for (auto r = w + 1; r != outputs.end(); ++r) val.NoOverlap(w->p, w->n, w->name, r->p, r->n, r->name);
  }
}


// ZeroUnusedStrides of q, k, v and out (spans and strides in that order).
void ZeroUnusedQkvoStrides(const int64_t q_sizes[3], const int64_t kv_sizes[3],
                           std::initializer_list<int64_t> spans,
                           std::initializer_list<simdattn_strides*> strides) {
  const int64_t* const sizes[4] = {q_sizes, kv_sizes, kv_sizes, q_sizes};
  auto span = spans.begin();
  auto st = strides.begin();
  for (int i = 0; i < 4; ++i, ++span, ++st) ZeroUnusedStrides(sizes[i], *span, *st);
}

simdattn::Strides4 ToStrides4(const simdattn_strides& st) {
  simdattn::Strides4 s;
  s.batch = st.batch, s.head = st.head, s.seq = st.seq;
  return s;
}

struct SdpaSizes {
  int64_t batch, heads, kv_heads, q_len, kv_len, d_k, d_v;
};
struct SdpaStrides {
  simdattn_strides q, k, v, out;
};

// The SdpaArgs every attention entry point shares, from validated options, sizes and resolved
// strides: scale (0 -> 1/sqrt(d_k)), causal, lse and the 0.2 variants. Buffers are the caller's.
simdattn::SdpaArgs SdpaArgsOf(const simdattn_sdpa_options& o, const SdpaSizes& n,
                              const SdpaStrides& st) {
  simdattn::SdpaArgs a;
  a.batch = n.batch, a.heads = n.heads, a.kv_heads = n.kv_heads, a.q_len = n.q_len;
  a.kv_len = n.kv_len, a.d_k = n.d_k, a.d_v = n.d_v;
  a.scale = o.scale == 0.0f ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(n.d_k)))
                            : o.scale;
  a.causal = o.causal;
  a.q_s = ToStrides4(st.q), a.k_s = ToStrides4(st.k), a.v_s = ToStrides4(st.v);
  a.out_s = ToStrides4(st.out);
  a.lse = o.lse;
  a.window = o.window == 1;
  a.window_left = o.window_left, a.window_right = o.window_right;
  a.softcap = o.softcap;
  a.alibi_slopes = o.alibi_slopes;
  a.sinks = o.sinks;
  return a;
}

}  // namespace

extern "C" {

// Two initialisers behind one name (GNU symbol versions, src/simdattn.map): binaries built
// against 0.1 bind SIMDATTN_0.1 and get a 176-byte struct; everything newer (and dlsym) gets
// the default SIMDATTN_0.2, this header's size.
SIMDATTN_API void sdpa_options_init_0_2(simdattn_sdpa_options* options) {
  if (options == nullptr) return;
  *options = simdattn_sdpa_options{};
  options->struct_size = sizeof(simdattn_sdpa_options);
}
SIMDATTN_API void sdpa_options_init_0_1(simdattn_sdpa_options* options) {
  if (options == nullptr) return;
  std::memset(static_cast<void*>(options), 0, SIMDATTN_SDPA_OPTIONS_SIZE_0_1);
  options->struct_size = SIMDATTN_SDPA_OPTIONS_SIZE_0_1;
}
__asm__(".symver sdpa_options_init_0_1, simdattn_sdpa_options_init@SIMDATTN_0.1");
__asm__(".symver sdpa_options_init_0_2, simdattn_sdpa_options_init@@SIMDATTN_0.2");

simdattn_status simdattn_sdpa(const float* q, const float* k, const float* v, float* out,
                              int64_t batch, int64_t heads, int64_t q_len, int64_t kv_len,
                              int64_t d_k, int64_t d_v, const simdattn_sdpa_options* options) {
  Validator val("simdattn_sdpa");
  const simdattn_sdpa_options o = ReadSdpaOptions(val, options);
  if (!val.ok()) return val.status();
  val.NonNegative(batch, "batch").NonNegative(heads, "heads").NonNegative(q_len, "q_len");
  val.NonNegative(kv_len, "kv_len");
  const int64_t kv_heads = CheckSdpaScalars(val, o, heads, d_k, d_v);
  if (!val.ok()) return val.status();
  const int64_t q_sizes[3] = {batch, heads, q_len}, kv_sizes[3] = {batch, kv_heads, kv_len};
  simdattn_strides qs = ResolveStrides(o.q_strides, heads, q_len, d_k);
  simdattn_strides ks = ResolveStrides(o.k_strides, kv_heads, kv_len, d_k);
  simdattn_strides vs = ResolveStrides(o.v_strides, kv_heads, kv_len, d_v);
  simdattn_strides os = ResolveStrides(o.out_strides, heads, q_len, d_v);
  simdattn_strides ms = o.mask_strides;
  int64_t q_span = 0, k_span = 0, v_span = 0, out_span = 0, mask_span = 0;
  val.Span4(q_sizes, qs, d_k, "q", &q_span).Span4(kv_sizes, ks, d_k, "k", &k_span);
  val.Span4(kv_sizes, vs, d_v, "v", &v_span).Span4(q_sizes, os, d_v, "out", &out_span);
  val.Span4(q_sizes, ms, kv_len, "mask", &mask_span);
  // Query rows (every row count the op plans with), and the lse and weights outputs when
  // requested; a factor 0 makes the product 0.
  int64_t rows = 0, lse_n = 0, weights_n = 0;
  if (o.lse != nullptr) val.Elements({batch, heads, q_len}, "options->lse", &lse_n);
  if (o.weights != nullptr) {
    val.Elements({batch, heads, q_len, kv_len}, "options->weights", &weights_n);
  }
  val.Elements({batch, heads, q_len}, "batch * heads * q_len (the query rows)", &rows);
  if (!val.ok()) return val.status();
  if (batch == 0 || heads == 0 || q_len == 0) return simdattn::Ok();
  val.NotNull(q, q_span, "q").NotNull(k, k_span, "k").NotNull(v, v_span, "v");
  val.NotNull(out, out_span, "out");
  if (!val.ok()) return val.status();
  if (o.mask == nullptr) mask_span = 0;
  if (o.kv_lens != nullptr) {
    for (int64_t b = 0; b < batch && val.ok(); ++b) {
      val.Require(o.kv_lens[b] >= 0 && o.kv_lens[b] <= kv_len, SIMDATTN_ERR_BAD_SHAPE,
                  "options->kv_lens[%lld] = %lld is outside [0, kv_len = %lld]",
                  static_cast<long long>(b), static_cast<long long>(o.kv_lens[b]),
                  static_cast<long long>(kv_len));
    }
  }
  CheckSdpaPerHead(val, o, heads);
  val.RowsDisjoint(q_sizes, os, d_v, "out");
  CheckSdpaOverlaps(val, o, heads, {{q, q_span, "q"}, {k, k_span, "k"}, {v, v_span, "v"},
                                    {o.mask, mask_span, "options->mask"}},
                    {{out, out_span, "out"}, {o.lse, lse_n, "options->lse"},
                     {o.weights, weights_n, "options->weights"}});
  if (!val.ok()) return val.status();
  // The ops form row addresses of every tensor from its strides: strides of a dimension of size 1
  // and of a tensor without elements (d_v = 0, kv_len = 0, no mask) do not matter to the result
  // and are zeroed, so no address is formed that the validated extents do not cover.
  ZeroUnusedQkvoStrides(q_sizes, kv_sizes, {q_span, k_span, v_span, out_span},
                        {&qs, &ks, &vs, &os});
  ZeroUnusedStrides(q_sizes, mask_span, &ms);

  simdattn::SdpaArgs a = SdpaArgsOf(o, {batch, heads, kv_heads, q_len, kv_len, d_k, d_v},
                                     {qs, ks, vs, os});
  a.q = q, a.k = k, a.v = v, a.out = out;
  a.mask = o.mask, a.mask_s = ToStrides4(ms);
  a.kv_lens = o.kv_lens, a.weights = o.weights;
  return simdattn::Run("simdattn_sdpa", [&] { simdattn::Sdpa(a); });
}

simdattn_status simdattn_sdpa_varlen(const float* q, const float* k, const float* v, float* out,
                                     int64_t batch, int64_t heads, const int64_t* cu_seqlens_q,
                                     const int64_t* cu_seqlens_kv, int64_t d_k, int64_t d_v,
                                     const simdattn_sdpa_options* options) {
  Validator val("simdattn_sdpa_varlen");
  const simdattn_sdpa_options o = ReadSdpaOptions(val, options);
  if (!val.ok()) return val.status();
  val.NonNegative(batch, "batch").NonNegative(heads, "heads");
  const int64_t kv_heads = CheckSdpaScalars(val, o, heads, d_k, d_v);
  val.Require(o.mask == nullptr && o.kv_lens == nullptr && o.weights == nullptr,
              SIMDATTN_ERR_BAD_ARGUMENT,
              "options->mask, ->kv_lens and ->weights must be NULL (sequence lengths come from "
              "cu_seqlens; weights are not available)");
  if (!val.ok() || batch == 0) return val.ok() ? simdattn::Ok() : val.status();
  val.Require(cu_seqlens_q != nullptr && cu_seqlens_kv != nullptr, SIMDATTN_ERR_NULL_POINTER,
              "cu_seqlens_%s is NULL with batch = %lld", cu_seqlens_q == nullptr ? "q" : "kv",
              static_cast<long long>(batch));
  if (!val.ok()) return val.status();
  int64_t max_q = 0, max_kv = 0;
  const struct {
    const int64_t* cu;
    const char* name;
    int64_t* max_len;
  } cus[] = {{cu_seqlens_q, "cu_seqlens_q", &max_q}, {cu_seqlens_kv, "cu_seqlens_kv", &max_kv}};
  for (const auto& c : cus) {
    val.Require(c.cu[0] == 0, SIMDATTN_ERR_BAD_SHAPE, "%s[0] must be 0 (got %lld)", c.name,
                static_cast<long long>(c.cu[0]));
    for (int64_t b = 0; b < batch && val.ok(); ++b) {
      val.Require(c.cu[b + 1] >= c.cu[b], SIMDATTN_ERR_BAD_SHAPE,
                  "%s must be non-decreasing: %s[%lld] = %lld < %s[%lld] = %lld", c.name, c.name,
                  static_cast<long long>(b + 1), static_cast<long long>(c.cu[b + 1]), c.name,
                  static_cast<long long>(b), static_cast<long long>(c.cu[b]));
      if (val.ok()) *c.max_len = std::max(*c.max_len, c.cu[b + 1] - c.cu[b]);
    }
  }
  if (!val.ok()) return val.status();
  const int64_t total_q = cu_seqlens_q[batch], total_kv = cu_seqlens_kv[batch];
  // Token-major tensors as [1, heads, tokens, d] with strides {0, head, seq}.
  auto strides = [](const simdattn_strides& st, int64_t h, int64_t d) {
    return st.seq == 0 && st.head == 0 ? simdattn_strides{0, d, MulSaturated(h, d)}
                                       : simdattn_strides{0, st.head, st.seq};
  };
  simdattn_strides qs = strides(o.q_strides, heads, d_k), ks = strides(o.k_strides, kv_heads, d_k);
  simdattn_strides vs = strides(o.v_strides, kv_heads, d_v), os = strides(o.out_strides, heads, d_v);
  const int64_t q_sizes[3] = {1, heads, total_q}, kv_sizes[3] = {1, kv_heads, total_kv};
  int64_t q_span = 0, k_span = 0, v_span = 0, out_span = 0, lse_n = 0;
  val.Span4(q_sizes, qs, d_k, "q", &q_span).Span4(kv_sizes, ks, d_k, "k", &k_span);
  val.Span4(kv_sizes, vs, d_v, "v", &v_span).Span4(q_sizes, os, d_v, "out", &out_span);
  if (o.lse != nullptr) val.Elements({total_q, heads}, "options->lse", &lse_n);
  if (!val.ok() || heads == 0 || total_q == 0) return val.ok() ? simdattn::Ok() : val.status();
  val.NotNull(q, q_span, "q").NotNull(k, k_span, "k").NotNull(v, v_span, "v");
  val.NotNull(out, out_span, "out");
  CheckSdpaPerHead(val, o, heads);
  val.RowsDisjoint(q_sizes, os, d_v, "out");
  CheckSdpaOverlaps(val, o, heads, {{q, q_span, "q"}, {k, k_span, "k"}, {v, v_span, "v"}},
                    {{out, out_span, "out"}, {o.lse, lse_n, "options->lse"}});
  if (!val.ok()) return val.status();
  ZeroUnusedQkvoStrides(q_sizes, kv_sizes, {q_span, k_span, v_span, out_span},
                        {&qs, &ks, &vs, &os});

  simdattn::SdpaArgs a = SdpaArgsOf(o, {batch, heads, kv_heads, max_q, max_kv, d_k, d_v},
                                     {qs, ks, vs, os});
  a.q = q, a.k = k, a.v = v, a.out = out;
  a.cu_q = cu_seqlens_q, a.cu_kv = cu_seqlens_kv;
  return simdattn::Run("simdattn_sdpa_varlen", [&] { simdattn::Sdpa(a); });
}

}  // extern "C"

namespace {

// Bytes of one element of a SIMDATTN_DTYPE_*, or 0 for an unknown type.
size_t DtypeBytes(int32_t dtype) {
  switch (dtype) {
    case SIMDATTN_DTYPE_F32: return sizeof(float);
    case SIMDATTN_DTYPE_BF16:
    case SIMDATTN_DTYPE_F16: return sizeof(uint16_t);
  }
  return 0;
}

// Element counts of the cache's k and v arrays (num_blocks * block_size * kv_heads * d).
struct CacheExtents {
  int64_t k = 0, v = 0;
  size_t elem = 0;
};

// The cache's own fields and their agreement with heads and options (before the empty-problem
// shortcut: they carry shapes).
CacheExtents CheckCacheShape(Validator& val, const simdattn_kv_cache& c, int64_t heads,
                             int64_t d_k, int64_t d_v, const simdattn_sdpa_options& o) {
  CacheExtents e;
  e.elem = DtypeBytes(c.dtype);
  val.Require(e.elem != 0, SIMDATTN_ERR_BAD_ARGUMENT,
              "cache->dtype must be SIMDATTN_DTYPE_F32, _BF16 or _F16 (got %d)",
              static_cast<int>(c.dtype));
  val.Require(c.block_size >= 1, SIMDATTN_ERR_BAD_SHAPE, "cache->block_size must be >= 1 (got %lld)",
              static_cast<long long>(c.block_size));
  val.Require(c.kv_heads >= 1, SIMDATTN_ERR_BAD_SHAPE, "cache->kv_heads must be >= 1 (got %lld)",
              static_cast<long long>(c.kv_heads));
  val.Require(!val.ok() || heads % c.kv_heads == 0, SIMDATTN_ERR_BAD_SHAPE,
              "heads (%lld) must be a multiple of cache->kv_heads (%lld)",
              static_cast<long long>(heads), static_cast<long long>(c.kv_heads));
  val.NonNegative(c.num_blocks, "cache->num_blocks");
  val.NonNegative(c.max_blocks_per_seq, "cache->max_blocks_per_seq");
  val.Require(o.kv_heads == 0 || o.kv_heads == c.kv_heads, SIMDATTN_ERR_BAD_SHAPE,
              "options->kv_heads (%lld) must be 0 or cache->kv_heads (%lld)",
              static_cast<long long>(o.kv_heads), static_cast<long long>(c.kv_heads));
  val.Require(o.mask == nullptr && o.kv_lens == nullptr && o.weights == nullptr,
              SIMDATTN_ERR_BAD_ARGUMENT,
              "options->mask, ->kv_lens and ->weights must be NULL (lengths come from "
              "cache->seq_lens; weights are not available)");
  const simdattn_strides& ks = o.k_strides;
  const simdattn_strides& vs = o.v_strides;
  val.Require(ks.batch == 0 && ks.head == 0 && ks.seq == 0 && vs.batch == 0 && vs.head == 0 &&
                  vs.seq == 0,
              SIMDATTN_ERR_BAD_ARGUMENT,
              "options->k_strides and ->v_strides must be zero (the cache fixes its layout)");
  const size_t elem = e.elem != 0 ? e.elem : sizeof(float);
  val.Elements({c.num_blocks, c.block_size, c.kv_heads, d_k}, "cache->k", &e.k, elem);
  val.Elements({c.num_blocks, c.block_size, c.kv_heads, d_v}, "cache->v", &e.v, elem);
  return e;
}

// seq_lens in range and every block a sequence uses inside [0, num_blocks); returns the longest
// sequence. A sequence uses table entries [0, ceil(seq_lens[b] / block_size)).
int64_t CheckCacheSequences(Validator& val, const simdattn_kv_cache& c, int64_t batch) {
  val.Require(c.seq_lens != nullptr, SIMDATTN_ERR_NULL_POINTER, "cache->seq_lens is NULL with batch = %lld",
              static_cast<long long>(batch));
  int64_t capacity = 0, longest = 0;
  if (__builtin_mul_overflow(c.max_blocks_per_seq, c.block_size, &capacity)) capacity = INT64_MAX;
  for (int64_t b = 0; b < batch && val.ok(); ++b) {
    const int64_t len = c.seq_lens[b];
    val.Require(len >= 0 && len <= capacity, SIMDATTN_ERR_BAD_SHAPE,
                "cache->seq_lens[%lld] = %lld is outside [0, max_blocks_per_seq * block_size = %lld]",
                static_cast<long long>(b), static_cast<long long>(len),
                static_cast<long long>(capacity));
    if (!val.ok()) break;
    longest = std::max(longest, len);
    const int64_t used = len / c.block_size + (len % c.block_size != 0);
    for (int64_t n = 0; n < used && val.ok(); ++n) {
      // b * max_blocks_per_seq + n is below batch * max_blocks_per_seq: the identity's block
      // index only overflows where no such block can exist (>= num_blocks either way).
      int64_t p = 0;
      if (c.block_table != nullptr) {
        p = c.block_table[b * c.max_blocks_per_seq + n];
      } else if (__builtin_mul_overflow(b, c.max_blocks_per_seq, &p) || p > INT64_MAX - n) {
        p = INT64_MAX;
      } else {
        p += n;
      }
      val.Require(p >= 0 && p < c.num_blocks, SIMDATTN_ERR_BAD_SHAPE,
                  "sequence %lld uses physical block %lld (block %lld of the sequence%s), "
                  "outside [0, cache->num_blocks = %lld)",
                  static_cast<long long>(b), static_cast<long long>(p), static_cast<long long>(n),
                  c.block_table != nullptr ? ", from cache->block_table" : ", identity table",
                  static_cast<long long>(c.num_blocks));
    }
  }
  return longest;
}

}  // namespace

extern "C" {

void simdattn_kv_cache_init(simdattn_kv_cache* cache) {
  if (cache == nullptr) return;
  *cache = simdattn_kv_cache{};
  cache->struct_size = sizeof(simdattn_kv_cache);
}

simdattn_status simdattn_sdpa_kvcache(const float* q, const simdattn_kv_cache* cache, float* out,
                                      int64_t batch, int64_t heads, int64_t q_len, int64_t d_k,
                                      int64_t d_v, const simdattn_sdpa_options* options) {
  Validator val("simdattn_sdpa_kvcache");
  val.Require(cache != nullptr, SIMDATTN_ERR_NULL_POINTER, "cache is NULL");
  if (!val.ok()) return val.status();
  val.Require(cache->struct_size >= sizeof(simdattn_kv_cache), SIMDATTN_ERR_BAD_ARGUMENT,
              "cache->struct_size must be >= %zu (got %zu): call simdattn_kv_cache_init",
              sizeof(simdattn_kv_cache), cache->struct_size);
  if (!val.ok()) return val.status();
  const simdattn_kv_cache& c = *cache;
  const simdattn_sdpa_options o = ReadSdpaOptions(val, options);
  if (!val.ok()) return val.status();
  val.NonNegative(batch, "batch").NonNegative(heads, "heads").NonNegative(q_len, "q_len");
  CheckSdpaScalars(val, o, heads, d_k, d_v);
  const CacheExtents ext = CheckCacheShape(val, c, heads, d_k, d_v, o);
  const int64_t q_sizes[3] = {batch, heads, q_len};
  simdattn_strides qs = ResolveStrides(o.q_strides, heads, q_len, d_k);
  simdattn_strides os = ResolveStrides(o.out_strides, heads, q_len, d_v);
  int64_t q_span = 0, out_span = 0, lse_n = 0, rows = 0;
  val.Span4(q_sizes, qs, d_k, "q", &q_span).Span4(q_sizes, os, d_v, "out", &out_span);
  if (o.lse != nullptr) val.Elements({batch, heads, q_len}, "options->lse", &lse_n);
  val.Elements({batch, heads, q_len}, "batch * heads * q_len (the query rows)", &rows);
  if (!val.ok() || batch == 0 || heads == 0 || q_len == 0) {
    return val.ok() ? simdattn::Ok() : val.status();
  }
  const int64_t max_len = CheckCacheSequences(val, c, batch);
  if (!val.ok()) return val.status();
  const bool reads_keys = max_len > 0;
  val.NotNull(q, q_span, "q").NotNull(out, out_span, "out");
  val.NotNull(c.k, reads_keys ? ext.k : 0, "cache->k").NotNull(c.v, reads_keys ? ext.v : 0, "cache->v");
  CheckSdpaPerHead(val, o, heads);
  val.RowsDisjoint(q_sizes, os, d_v, "out");
  CheckSdpaOverlaps(val, o, heads, {{q, q_span, "q"}}, {{out, out_span, "out"}, {o.lse, lse_n, "options->lse"}});
  const Validator::Region cache_regions[] = {
      {c.k, ext.k, "cache->k", ext.elem},
      {c.v, ext.v, "cache->v", ext.elem},
      {c.seq_lens, batch, "cache->seq_lens", sizeof(int64_t)},
      // (Capped so that its byte end cannot wrap: entries that far are never read anyway.)
      {c.block_table, c.block_table ? std::min(MulSaturated(batch, c.max_blocks_per_seq), INT64_MAX / 8) : 0,
       "cache->block_table", sizeof(int32_t)}};
  for (const auto& r : cache_regions) {
    val.NoOverlap(out, out_span, "out", r.p, r.n, r.name, r.elem);
    val.NoOverlap(o.lse, lse_n, "options->lse", r.p, r.n, r.name, r.elem);
  }
  if (!val.ok()) return val.status();
  simdattn_strides unused{0, 0, 0};
  ZeroUnusedQkvoStrides(q_sizes, q_sizes, {q_span, 0, 0, out_span}, {&qs, &unused, &unused, &os});

  simdattn::KvPages pages;
  pages.dtype = c.dtype, pages.k = c.k, pages.v = c.v;
  pages.block_size = c.block_size, pages.block_table = c.block_table;
  pages.max_blocks = c.max_blocks_per_seq;
  simdattn::SdpaArgs a = SdpaArgsOf(o, {batch, heads, c.kv_heads, q_len, max_len, d_k, d_v},
                                     {qs, unused, unused, os});
  a.q = q, a.out = out;
  a.kv_lens = c.seq_lens, a.pages = &pages;
  return simdattn::Run("simdattn_sdpa_kvcache", [&] { simdattn::Sdpa(a); });
}

}  // extern "C"

namespace {

// Element counts of simdattn_mhsa's buffers (y has x's).
struct MhsaSizes {
  int64_t x = 0, in_w = 0, in_b = 0, out_w = 0, out_b = 0, kpm = 0, mask = 0, attn_w = 0;
};

// The caller's options (or the defaults), flags checked.
simdattn_mha_options MhaOptions(Validator& v, const simdattn_mha_options* options) {
  simdattn_mha_options o;
  simdattn_mha_options_init(&o);
  if (options != nullptr) {
    v.Require(options->struct_size >= sizeof(o), SIMDATTN_ERR_BAD_ARGUMENT,
              "options->struct_size must be >= %zu (got %zu): call simdattn_mha_options_init",
              sizeof(o), options->struct_size);
    if (v.ok()) o = *options;
  }
  v.Flag(o.batch_first, "options->batch_first");
  v.Require(o.causal >= SIMDATTN_CAUSAL_NONE && o.causal <= SIMDATTN_CAUSAL_BOTTOM_RIGHT,
            SIMDATTN_ERR_BAD_ARGUMENT, "options->causal must be 0, 1 or 2 (got %d)",
            static_cast<int>(o.causal));
  return o;
}

// Sizes, the head split, and every element count (the op's scratch included) against overflow.
MhsaSizes MhsaShapes(Validator& v, int64_t seq, int64_t batch, int64_t e, int64_t heads,
                     const simdattn_mha_options& o) {
  const bool weights_requested = o.attn_weights != nullptr;
  v.NonNegative(seq, "seq_len").NonNegative(batch, "batch").NonNegative(e, "embed_dim");
  v.Require(heads >= 1, SIMDATTN_ERR_BAD_SHAPE,
            "num_heads must be >= 1 (got %lld; embed_dim = %lld must be divisible by it)",
            static_cast<long long>(heads), static_cast<long long>(e));
  // Arguments are evaluated even after a failure: guard the division.
  v.Require(!v.ok() || e % heads == 0, SIMDATTN_ERR_BAD_SHAPE,
            "embed_dim (%lld) must be divisible by num_heads (%lld)", static_cast<long long>(e),
            static_cast<long long>(heads));
  MhsaSizes n;
  int64_t scratch = 0, head_weights = 0;
  v.Elements({seq, batch, e}, "x", &n.x).Elements({3, e, e}, "in_proj_weight", &n.in_w);
  v.Elements({3, e}, "in_proj_bias", &n.in_b).Elements({e, e}, "out_proj_weight", &n.out_w);
  v.Elements({e}, "out_proj_bias", &n.out_b);
  // Optional buffers count only when given (a factor 0 makes any product 0).
  if (o.key_padding_mask != nullptr) {
    v.Elements({batch, seq}, "options->key_padding_mask", &n.kpm);
  }
  if (o.attn_mask != nullptr) v.Elements({seq, seq}, "options->attn_mask", &n.mask);
  v.Elements({4, seq, batch, e}, "the scratch (4 * seq_len * batch * embed_dim)", &scratch);
  if (weights_requested) {
    v.Elements({batch, seq, seq}, "options->attn_weights", &n.attn_w);
    v.Elements({heads, seq, seq}, "the per-head weights scratch", &head_weights);
  }
  return n;
}

// y may be x exactly; otherwise y and attn_weights overlap nothing: not x, not each other, not
// the weights or the masks.
void MhsaAliasing(Validator& v, const float* x, const float* y, const MhsaSizes& n,
                  const simdattn_mha_weights& w, const simdattn_mha_options& o) {
  using Region = Validator::Region;
  const Region inputs[] = {
      {w.in_proj_weight, n.in_w, "weights->in_proj_weight"},
      {w.in_proj_bias, w.in_proj_bias ? n.in_b : 0, "weights->in_proj_bias"},
      {w.out_proj_weight, n.out_w, "weights->out_proj_weight"},
      {w.out_proj_bias, w.out_proj_bias ? n.out_b : 0, "weights->out_proj_bias"},
      {o.key_padding_mask, n.kpm, "options->key_padding_mask", 1},
      {o.attn_mask, n.mask, "options->attn_mask"}};
  if (y != x) v.NoOverlap(y, n.x, "y", x, n.x, "x (only y == x may alias)");
  for (const Region& in : inputs) v.NoOverlap(y, n.x, "y", in.p, in.n, in.name, in.elem);
  if (o.attn_weights == nullptr) return;
  v.NoOverlap(o.attn_weights, n.attn_w, "options->attn_weights", x, n.x, "x");
  v.NoOverlap(o.attn_weights, n.attn_w, "options->attn_weights", y, n.x, "y");
  for (const Region& in : inputs) {
    v.NoOverlap(o.attn_weights, n.attn_w, "options->attn_weights", in.p, in.n, in.name, in.elem);
  }
}

}  // namespace

extern "C" {

void simdattn_mha_options_init(simdattn_mha_options* options) {
  if (options == nullptr) return;
  *options = simdattn_mha_options{};
  options->struct_size = sizeof(simdattn_mha_options);
}

simdattn_status simdattn_mhsa(const float* x, float* y, int64_t seq_len, int64_t batch,
                              int64_t embed_dim, int64_t num_heads,
                              const simdattn_mha_weights* weights,
                              const simdattn_mha_options* options) {
  Validator v("simdattn_mhsa");
  const simdattn_mha_options o = MhaOptions(v, options);
  const MhsaSizes n = MhsaShapes(v, seq_len, batch, embed_dim, num_heads, o);
  if (!v.ok()) return v.status();
  if (seq_len == 0 || batch == 0) return simdattn::Ok();
  v.Require(embed_dim >= 1, SIMDATTN_ERR_BAD_SHAPE,
            "embed_dim must be >= 1 (got 0): the scale 1/sqrt(embed_dim / num_heads) is undefined");
  v.Require(weights != nullptr, SIMDATTN_ERR_NULL_POINTER, "weights is NULL");
  if (!v.ok()) return v.status();
  v.NotNull(weights->in_proj_weight, n.in_w, "weights->in_proj_weight");
  v.NotNull(weights->out_proj_weight, n.out_w, "weights->out_proj_weight");
  v.NotNull(x, n.x, "x").NotNull(y, n.x, "y");
  MhsaAliasing(v, x, y, n, *weights, o);
  if (!v.ok()) return v.status();
  simdattn::MhsaArgs m;
  m.x = x, m.y = y;
  m.seq = seq_len, m.batch = batch, m.embed = embed_dim, m.heads = num_heads;
  m.batch_first = o.batch_first == 1;
  m.causal = o.causal != SIMDATTN_CAUSAL_NONE;
  m.in_proj_weight = weights->in_proj_weight, m.in_proj_bias = weights->in_proj_bias;
  m.out_proj_weight = weights->out_proj_weight, m.out_proj_bias = weights->out_proj_bias;
  m.key_padding_mask = o.key_padding_mask, m.attn_mask = o.attn_mask;
  m.attn_weights = o.attn_weights;
  return simdattn::Run("simdattn_mhsa", [&] { simdattn::Mhsa(m); });
}

}  // extern "C"

namespace {

// "name[i]", for messages about one entry of an array of pointers.
std::string Indexed(const char* name, int64_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

// simdattn_attention_merge's pointer checks (rows >= 1): the arrays, every entry, and out.
void MergePointers(Validator& v, int64_t n, int64_t rows, int64_t d_v, const float* const* outs,
                   int64_t ext_in, const float* const* lses, const float* out, int64_t ext_out) {
  v.Require(outs != nullptr || d_v == 0, SIMDATTN_ERR_NULL_POINTER, "outs is NULL");
  v.Require(lses != nullptr, SIMDATTN_ERR_NULL_POINTER, "lses is NULL");
  for (int64_t i = 0; i < n && v.ok(); ++i) {
    if (d_v > 0) v.NotNull(outs[i], ext_in, Indexed("outs", i).c_str());
    v.NotNull(lses[i], rows, Indexed("lses", i).c_str());
  }
  v.NotNull(out, ext_out, "out");
}

// out and lse overlap no input (except out == outs[0] with equal ld, lse == lses[0]) and not
// each other.
void MergeAliasing(Validator& v, int64_t n, int64_t rows, int64_t d_v, const float* const* outs,
                   int64_t ld_out, int64_t ext_in, const float* const* lses, const float* out,
                   int64_t ld_merged, int64_t ext_out, const float* lse) {
  const int64_t lse_n = lse == nullptr ? 0 : rows;
  for (int64_t i = 0; i < n && v.ok(); ++i) {
    const std::string out_i = Indexed("outs", i), lse_i = Indexed("lses", i);
    const float* in = d_v > 0 ? outs[i] : nullptr;
    const bool out_in_place = i == 0 && out == in && ld_merged == ld_out;
    if (!out_in_place) {
      v.NoOverlap(out, ext_out, "out", in, ext_in,
                  (out_i + " (only out == outs[0] with ld_out_merged == ld_out may alias)").c_str());
    }
    v.NoOverlap(out, ext_out, "out", lses[i], rows, lse_i.c_str());
    v.NoOverlap(lse, lse_n, "lse", in, ext_in, out_i.c_str());
    if (!(i == 0 && lse == lses[0])) {
      v.NoOverlap(lse, lse_n, "lse", lses[i], rows,
                  (lse_i + " (only lse == lses[0] may alias)").c_str());
    }
  }
  v.NoOverlap(out, ext_out, "out", lse, lse_n, "lse");
}

}  // namespace

extern "C" {

simdattn_status simdattn_attention_merge(int64_t n, int64_t rows, int64_t d_v,
                                         const float* const* outs, int64_t ld_out,
                                         const float* const* lses, float* out,
                                         int64_t ld_out_merged, float* lse) {
  Validator v("simdattn_attention_merge");
  v.Require(n >= 1, SIMDATTN_ERR_BAD_ARGUMENT, "n must be >= 1 (got %lld)",
            static_cast<long long>(n));
  v.NonNegative(rows, "rows").NonNegative(d_v, "d_v");
  v.LeadingDim(ld_out, d_v, "ld_out", "d_v").LeadingDim(ld_out_merged, d_v, "ld_out_merged", "d_v");
  int64_t ext_in = 0, ext_out = 0, lse_n = 0;
  v.Extent(rows, d_v, ld_out, "outs[i]", &ext_in).Extent(rows, d_v, ld_out_merged, "out", &ext_out);
  v.Elements({rows}, "lse", &lse_n);
  if (!v.ok()) return v.status();
  if (rows == 0) return simdattn::Ok();
  MergePointers(v, n, rows, d_v, outs, ext_in, lses, out, ext_out);
  if (!v.ok()) return v.status();
  MergeAliasing(v, n, rows, d_v, outs, ld_out, ext_in, lses, out, ld_out_merged, ext_out, lse);
  if (!v.ok()) return v.status();
  simdattn::MergeArgs a;
  a.n = n, a.rows = rows, a.d_v = d_v;
  a.lses = lses, a.lse = lse;
  if (d_v > 0) {  // without elements: nothing of outs or out is read, no address formed
    a.outs = outs, a.out = out;
    a.ld_out = rows > 1 ? ld_out : 0, a.ld_merged = rows > 1 ? ld_out_merged : 0;
  }
  return simdattn::Run("simdattn_attention_merge", [&] { simdattn::AttentionMerge(a); });
}

}  // extern "C"

namespace {

// Bytes of one element of SIMDATTN_DTYPE_* `dtype`, 0 for an unknown one.
int64_t DtypeSize(int32_t dtype) {
  switch (dtype) {
    case SIMDATTN_DTYPE_F32: return 4;
    case SIMDATTN_DTYPE_BF16:
    case SIMDATTN_DTYPE_F16: return 2;
  }
  return 0;
}

// simdattn_cast's checks, in the header's order (the first failure is reported).
void CastChecks(Validator& v, int64_t n, const void* src, int32_t src_dtype, const void* dst,
                int32_t dst_dtype) {
  v.NonNegative(n, "n");
  const struct {
    int32_t dtype;
    const char* name;
  } dtypes[] = {{src_dtype, "src_dtype"}, {dst_dtype, "dst_dtype"}};
  for (const auto& d : dtypes) {
    v.Require(DtypeSize(d.dtype) != 0, SIMDATTN_ERR_BAD_ARGUMENT,
              "%s must be SIMDATTN_DTYPE_F32 (0), _BF16 (1) or _F16 (2) (got %d)", d.name,
              static_cast<int>(d.dtype));
  }
  int64_t src_bytes = 0, dst_bytes = 0;
  const bool overflow = __builtin_mul_overflow(n, DtypeSize(src_dtype), &src_bytes) ||
                        __builtin_mul_overflow(n, DtypeSize(dst_dtype), &dst_bytes);
  v.Require(!overflow, SIMDATTN_ERR_BAD_SHAPE,
            "n = %lld elements of %lld and %lld bytes: the byte size overflows int64",
            static_cast<long long>(n), static_cast<long long>(DtypeSize(src_dtype)),
            static_cast<long long>(DtypeSize(dst_dtype)));
  if (!v.ok() || n == 0) return;
  v.NotNull(src, n, "src").NotNull(dst, n, "dst");
  const auto s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
  v.Require(!(s < d + static_cast<uintptr_t>(dst_bytes) && d < s + static_cast<uintptr_t>(src_bytes)),
            SIMDATTN_ERR_BAD_ARGUMENT,
            "dst (%lld bytes) overlaps src (%lld bytes): the byte ranges must be disjoint, "
            "in place included",
            static_cast<long long>(dst_bytes), static_cast<long long>(src_bytes));
}

}  // namespace

extern "C" {

simdattn_status simdattn_cast(int64_t n, const void* src, int32_t src_dtype, void* dst,
                              int32_t dst_dtype) {
  Validator v("simdattn_cast");
  CastChecks(v, n, src, src_dtype, dst, dst_dtype);
  if (!v.ok() || n == 0) return v.ok() ? simdattn::Ok() : v.status();
  simdattn::CastArgs a;
  a.n = n, a.src = src, a.src_dtype = src_dtype, a.dst = dst, a.dst_dtype = dst_dtype;
  return simdattn::Run("simdattn_cast", [&] { simdattn::Cast(a); });
}

}  // extern "C"

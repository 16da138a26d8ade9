// The C API's contract outside the arithmetic: argument errors (status, message, untouched
// outputs), empty problems, status names, version, thread-count control, per-thread last_error,
// bitwise determinism across thread counts, and concurrent calls from many threads.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace simdattn_test {
namespace {

// Thread counts of the determinism checks: serial, both cores, odd, and oversubscribed.
constexpr std::initializer_list<int32_t> kThreadCounts = {1, 2, 3, 7, 16};
// Threads calling the library at once in the concurrency checks.
constexpr int kCallerThreads = 8;

constexpr int64_t kTwoTo30 = int64_t{1} << 30;
constexpr int64_t kTwoTo31 = int64_t{1} << 31;
constexpr int64_t kTwoTo32 = int64_t{1} << 32;
constexpr int64_t kTwoTo40 = int64_t{1} << 40;
constexpr int64_t kTwoTo62 = int64_t{1} << 62;

// CPUs in this process's affinity mask: what simdattn_set_num_threads(0) must resolve to.
int32_t AffinityCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
  return CPU_COUNT(&set);
}

// Blocks until `count` threads have called Wait (reusable).
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const int generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation != generation_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int count_;
  int waiting_ = 0, generation_ = 0;
};

// ------------------------------------------------------------------ argument errors

// Scratch buffers for the error checks, large enough for every call below: A and B random, C
// the sentinel. After a failing call all three must be bitwise unchanged.
struct Buffers {
  static constexpr size_t kFloats = 256;
  std::vector<float> a = RandomFloats(kFloats, 1), b = RandomFloats(kFloats, 2),
                     c = std::vector<float>(kFloats, Sentinel());

  void CheckUntouched(const Buffers& before) const {
    CheckBitwiseEqual(a.data(), before.a.data(), kFloats, "buffer A");
    CheckBitwiseEqual(b.data(), before.b.data(), kFloats, "buffer B");
    CheckBitwiseEqual(c.data(), before.c.data(), kFloats, "buffer C");
  }
};

// All arguments of one simdattn_sgemm_batched call.
struct GemmCall {
  int32_t trans_a = 0, trans_b = 0;
  int64_t batch = 2, m = 3, n = 4, k = 5;
  float alpha = 1.0f, beta = 0.5f;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 15;
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 20;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 12;

  // The smallest valid leading dimensions for the current shape and transposes.
  void TightLeadingDims() {
    auto at_least_1 = [](int64_t v) { return v > 1 ? v : int64_t{1}; };
    lda = at_least_1(trans_a ? m : k);
    ldb = at_least_1(trans_b ? k : n);
    ldc = at_least_1(n);
  }
  simdattn_status RunBatched() const {
    return simdattn_sgemm_batched(trans_a, trans_b, batch, m, n, k, alpha, a, lda, stride_a, b,
                                  ldb, stride_b, beta, c, ldc, stride_c);
  }
  simdattn_status RunSingle() const {
    return simdattn_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
};

// A valid 2 x (3 x 4 x 5) call on `buf`.
GemmCall ValidGemm(int32_t trans_a, int32_t trans_b, Buffers* buf) {
  GemmCall g;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.a = buf->a.data(), g.b = buf->b.data(), g.c = buf->c.data();
  g.TightLeadingDims();
  return g;
}

// One way to break a valid call, and the error it must produce.
struct GemmError {
  const char* what;
  void (*breaks)(GemmCall&, Buffers&);
  simdattn_status status;
  const char* argument;     // must appear as a word in last_error
  bool batched_only;        // the break involves batch or strides
};

const GemmError kGemmErrors[] = {
    {"trans_a = 2", [](GemmCall& g, Buffers&) { g.trans_a = 2; }, SIMDATTN_ERR_BAD_ARGUMENT,
     "trans_a", false},
    {"trans_a = -1", [](GemmCall& g, Buffers&) { g.trans_a = -1; }, SIMDATTN_ERR_BAD_ARGUMENT,
     "trans_a", false},
    {"trans_b = 2", [](GemmCall& g, Buffers&) { g.trans_b = 2; }, SIMDATTN_ERR_BAD_ARGUMENT,
     "trans_b", false},
    {"m < 0", [](GemmCall& g, Buffers&) { g.m = -1; }, SIMDATTN_ERR_BAD_SHAPE, "m", false},
    {"n < 0", [](GemmCall& g, Buffers&) { g.n = -1; }, SIMDATTN_ERR_BAD_SHAPE, "n", false},
    {"k < 0", [](GemmCall& g, Buffers&) { g.k = -1; }, SIMDATTN_ERR_BAD_SHAPE, "k", false},
    {"batch < 0", [](GemmCall& g, Buffers&) { g.batch = -1; }, SIMDATTN_ERR_BAD_SHAPE, "batch",
     true},
    {"lda < row length", [](GemmCall& g, Buffers&) { g.lda = (g.trans_a ? g.m : g.k) - 1; },
     SIMDATTN_ERR_BAD_SHAPE, "lda", false},
    {"lda = 0 for rows of length 0",
     [](GemmCall& g, Buffers&) {
       (g.trans_a ? g.m : g.k) = 0;
       g.lda = 0;
     },
     SIMDATTN_ERR_BAD_SHAPE, "lda", false},
    {"ldb < row length", [](GemmCall& g, Buffers&) { g.ldb = (g.trans_b ? g.k : g.n) - 1; },
     SIMDATTN_ERR_BAD_SHAPE, "ldb", false},
    {"ldb = 0 for rows of length 0",
     [](GemmCall& g, Buffers&) {
       (g.trans_b ? g.k : g.n) = 0;
       g.ldb = 0;
     },
     SIMDATTN_ERR_BAD_SHAPE, "ldb", false},
    {"ldc < n", [](GemmCall& g, Buffers&) { g.ldc = g.n - 1; }, SIMDATTN_ERR_BAD_SHAPE, "ldc",
     false},
    {"ldc = 0 with n = 0",
     [](GemmCall& g, Buffers&) {
       g.n = 0;
       g.TightLeadingDims();
       g.ldc = 0;
     },
     SIMDATTN_ERR_BAD_SHAPE, "ldc", false},
    {"stride_a < 0", [](GemmCall& g, Buffers&) { g.stride_a = -1; }, SIMDATTN_ERR_BAD_SHAPE,
     "stride_a", true},
    {"stride_b < 0", [](GemmCall& g, Buffers&) { g.stride_b = -1; }, SIMDATTN_ERR_BAD_SHAPE,
     "stride_b", true},
    {"stride_c < 0", [](GemmCall& g, Buffers&) { g.stride_c = -1; }, SIMDATTN_ERR_BAD_SHAPE,
     "stride_c", true},
    {"A is NULL", [](GemmCall& g, Buffers&) { g.a = nullptr; }, SIMDATTN_ERR_NULL_POINTER, "A",
     false},
    {"B is NULL", [](GemmCall& g, Buffers&) { g.b = nullptr; }, SIMDATTN_ERR_NULL_POINTER, "B",
     false},
    {"C is NULL", [](GemmCall& g, Buffers&) { g.c = nullptr; }, SIMDATTN_ERR_NULL_POINTER, "C",
     false},
    // (2^32 - 1) * 2^31 + 2^31 = 2^63 elements of C: one past INT64_MAX.
    {"C's element count overflows",
     [](GemmCall& g, Buffers&) {
       g.m = kTwoTo32, g.n = kTwoTo31;
       g.TightLeadingDims();
     },
     SIMDATTN_ERR_BAD_SHAPE, "C", false},
    // 2^62 elements of C fit in int64, their 2^64 bytes do not.
    {"C's byte size overflows",
     [](GemmCall& g, Buffers&) {
       g.m = kTwoTo31, g.n = kTwoTo31;
       g.TightLeadingDims();
     },
     SIMDATTN_ERR_BAD_SHAPE, "C", false},
    // A spans about 3 * 2^62 elements whichever way it is stored.
    {"A's element count overflows",
     [](GemmCall& g, Buffers&) {
       g.k = kTwoTo62;
       g.TightLeadingDims();
     },
     SIMDATTN_ERR_BAD_SHAPE, "A", false},
    // (2^40 - 1) * 2^30 floats between the first and the last C.
    {"batched C span overflows",
     [](GemmCall& g, Buffers&) { g.batch = kTwoTo40, g.stride_c = kTwoTo30; },
     SIMDATTN_ERR_BAD_SHAPE, "C", true},
    {"stride_c smaller than one C matrix",
     [](GemmCall& g, Buffers&) { g.stride_c = (g.m - 1) * g.ldc + g.n - 1; },
     SIMDATTN_ERR_BAD_ARGUMENT, "stride_c", true},
    {"C overlaps A", [](GemmCall& g, Buffers& buf) { g.c = buf.a.data() + 7; },
     SIMDATTN_ERR_BAD_ARGUMENT, "C", false},
    {"C overlaps B", [](GemmCall& g, Buffers& buf) { g.c = buf.b.data() + 1; },
     SIMDATTN_ERR_BAD_ARGUMENT, "C", false},
    // C's first entry overlaps only A's second entry.
    {"C overlaps a later A of the batch",
     [](GemmCall& g, Buffers& buf) { g.c = buf.a.data() + g.stride_a + 10; },
     SIMDATTN_ERR_BAD_ARGUMENT, "C", true},
};

TEST_CASE("sgemm: every bad argument fails with its status, names it and writes nothing") {
  for (int32_t ta = 0; ta < 2; ++ta) {
    for (int32_t tb = 0; tb < 2; ++tb) {
      INFO("trans_a=", ta, " trans_b=", tb);
      {  // the unbroken call is valid
        Buffers buf;
        CheckOk(ValidGemm(ta, tb, &buf).RunBatched());
        CheckOk(ValidGemm(ta, tb, &buf).RunSingle());
      }
      for (const GemmError& e : kGemmErrors) {
        INFO(std::string(e.what));
        Buffers buf;
        const Buffers before = buf;
        GemmCall g = ValidGemm(ta, tb, &buf);
        e.breaks(g, buf);
        CheckError(g.RunBatched(), e.status, e.argument);
        if (!e.batched_only) {
          INFO("through simdattn_sgemm");
          CheckError(g.RunSingle(), e.status, e.argument);
        }
        buf.CheckUntouched(before);
      }
    }
  }
}

TEST_CASE("sgemm: A and B may overlap each other; C may sit right after A") {
  Buffers buf;
  GemmCall g = ValidGemm(0, 1, &buf);
  g.b = buf.a.data() + 3;  // A and B share floats: allowed, both are read-only
  CheckOk(g.RunBatched());
  g.b = buf.b.data();
  g.c = buf.a.data() + (g.m - 1) * g.lda + g.k;  // one past the last float of a single A
  CheckOk(g.RunSingle());
}

// All arguments of one simdattn_softmax call.
struct SoftmaxCall {
  int64_t rows = 3, cols = 5;
  const float* x = nullptr;
  int64_t ld_x = 5;
  float* y = nullptr;
  int64_t ld_y = 5;
  simdattn_status Run() const { return simdattn_softmax(rows, cols, x, ld_x, y, ld_y); }
};

// A valid 3 x 5 call reading buffer A and writing buffer C.
SoftmaxCall ValidSoftmax(Buffers* buf) {
  SoftmaxCall s;
  s.x = buf->a.data(), s.y = buf->c.data();
  return s;
}

struct SoftmaxError {
  const char* what;
  void (*breaks)(SoftmaxCall&, Buffers&);
  simdattn_status status;
  const char* argument;
};

const SoftmaxError kSoftmaxErrors[] = {
    {"rows < 0", [](SoftmaxCall& s, Buffers&) { s.rows = -1; }, SIMDATTN_ERR_BAD_SHAPE, "rows"},
    {"cols < 0", [](SoftmaxCall& s, Buffers&) { s.cols = -1; }, SIMDATTN_ERR_BAD_SHAPE, "cols"},
    {"ld_x < cols", [](SoftmaxCall& s, Buffers&) { s.ld_x = s.cols - 1; },
     SIMDATTN_ERR_BAD_SHAPE, "ld_x"},
    {"ld_y < cols", [](SoftmaxCall& s, Buffers&) { s.ld_y = s.cols - 1; },
     SIMDATTN_ERR_BAD_SHAPE, "ld_y"},
    {"ld_x = 0 with cols = 0", [](SoftmaxCall& s, Buffers&) { s.cols = 0, s.ld_x = 0; },
     SIMDATTN_ERR_BAD_SHAPE, "ld_x"},
    {"ld_y = 0 with cols = 0", [](SoftmaxCall& s, Buffers&) { s.cols = 0, s.ld_y = 0; },
     SIMDATTN_ERR_BAD_SHAPE, "ld_y"},
    {"x is NULL", [](SoftmaxCall& s, Buffers&) { s.x = nullptr; }, SIMDATTN_ERR_NULL_POINTER,
     "x"},
    {"y is NULL", [](SoftmaxCall& s, Buffers&) { s.y = nullptr; }, SIMDATTN_ERR_NULL_POINTER,
     "y"},
    // (2^40 - 1) * 2^30 + 2^30 = 2^70 elements.
    {"element count overflows",
     [](SoftmaxCall& s, Buffers&) { s.rows = kTwoTo40, s.cols = s.ld_x = s.ld_y = kTwoTo30; },
     SIMDATTN_ERR_BAD_SHAPE, "x"},
    // 2^62 elements fit in int64, their 2^64 bytes do not.
    {"byte size overflows",
     [](SoftmaxCall& s, Buffers&) { s.rows = kTwoTo31, s.cols = s.ld_x = s.ld_y = kTwoTo31; },
     SIMDATTN_ERR_BAD_SHAPE, "x"},
    {"y starts inside x", [](SoftmaxCall& s, Buffers& buf) { s.y = buf.a.data() + 1; },
     SIMDATTN_ERR_BAD_ARGUMENT, "y"},
    {"y ends inside x", [](SoftmaxCall& s, Buffers& buf) { s.x = buf.a.data() + 8, s.y = buf.a.data(); },
     SIMDATTN_ERR_BAD_ARGUMENT, "y"},
    {"y == x with another ld", [](SoftmaxCall& s, Buffers& buf) {
       s.y = buf.a.data(), s.ld_y = s.ld_x + 1;
     },
     SIMDATTN_ERR_BAD_ARGUMENT, "y"},
};

TEST_CASE("softmax: every bad argument fails with its status, names it and writes nothing") {
  {  // the unbroken call is valid
    Buffers buf;
    CheckOk(ValidSoftmax(&buf).Run());
  }
  for (const SoftmaxError& e : kSoftmaxErrors) {
    INFO(std::string(e.what));
    Buffers buf;
    const Buffers before = buf;
    SoftmaxCall s = ValidSoftmax(&buf);
    e.breaks(s, buf);
    CheckError(s.Run(), e.status, e.argument);
    buf.CheckUntouched(before);
  }
}

TEST_CASE("softmax: y may equal x (same ld) or sit right after it") {
  Buffers buf;
  SoftmaxCall s = ValidSoftmax(&buf);
  s.y = buf.a.data();
  CheckOk(s.Run());
  s.y = buf.a.data() + (s.rows - 1) * s.ld_x + s.cols;
  CheckOk(s.Run());
}

TEST_CASE("set_num_threads(-1) fails and leaves the count") {
  ForEachThreadCount({5}, [](int32_t n) {
    CheckError(simdattn_set_num_threads(-1), SIMDATTN_ERR_BAD_ARGUMENT, "n");
    CHECK(simdattn_get_num_threads() == n);
  });
}

// Issue 9: 5000 was refused although the header accepted any n >= 0; the limit is now
// documented as SIMDATTN_MAX_THREADS and holds both ways.
TEST_CASE("set_num_threads: SIMDATTN_MAX_THREADS is accepted, one more is not") {
  ForEachThreadCount({SIMDATTN_MAX_THREADS}, [](int32_t n) {
    CHECK(simdattn_get_num_threads() == n);
    const float x[2] = {1.0f, 2.0f};
    float y[2];
    CheckOk(simdattn_softmax(1, 2, x, 2, y, 2));
    for (const int32_t bad : {SIMDATTN_MAX_THREADS + 1, 5000, INT32_MAX}) {
      CheckError(simdattn_set_num_threads(bad), SIMDATTN_ERR_BAD_ARGUMENT, "n");
      CHECK(simdattn_get_num_threads() == n);
    }
  });
}

// ------------------------------------------------------------------ issue 9 regressions

// Each case is an input a fuzzing pass of the C API found to crash, corrupt memory, trip UBSan
// (these run under -Db_sanitize=address,undefined in CI) or return a status the header
// contradicts.

TEST_CASE("regression: sdpa heads INT64_MIN with kv_heads -1 is BAD_SHAPE, not SIGFPE") {
  const float q = 1.0f, k = 1.0f, v = 1.0f;
  float out = Sentinel();
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.kv_heads = -1;
  CheckError(simdattn_sdpa(&q, &k, &v, &out, 1, INT64_MIN, 1, 1, 1, 1, &o),
             SIMDATTN_ERR_BAD_SHAPE, "heads");
  o.kv_heads = 0;
  CheckError(simdattn_sdpa(&q, &k, &v, &out, 1, INT64_MIN, 1, 1, 1, 1, &o),
             SIMDATTN_ERR_BAD_SHAPE, "heads");
  CHECK(Bits(out) == Bits(Sentinel()));
}

TEST_CASE("regression: sdpa with d_v = 0 ignores V's strides, however large") {
  const float q[2] = {1.0f, 2.0f}, k[6] = {1, 0, 0, 1, 1, 1};
  float lse[2] = {Sentinel(), Sentinel()};
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.v_strides = {INT64_MAX / 2, INT64_MAX / 4, INT64_MAX / 8};
  o.lse = lse;
  // One query of d_k 2 against 3 keys: lse = log(e^1 + e^2 + e^3) with scale 1.
  o.scale = 1.0f;
  CheckOk(simdattn_sdpa(q, k, nullptr, nullptr, 1, 1, 1, 3, 2, 0, &o));
  CHECK(lse[0] == doctest::Approx(std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0))));
  CHECK(Bits(lse[1]) == Bits(Sentinel()));
}

TEST_CASE("regression: strides of size-1 dimensions may be huge (no address is formed)") {
  // One query, one key: out = v. Every K/Q/V/out stride is huge, every dimension has size 1.
  const float q[3] = {1, 2, 3}, k[3] = {3, 2, 1}, v[2] = {5, -7};
  float out[3] = {Sentinel(), Sentinel(), Sentinel()};
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  const simdattn_strides huge = {INT64_MAX / 4, INT64_MAX / 4, INT64_MAX / 4};
  o.q_strides = o.k_strides = o.v_strides = o.out_strides = huge;
  CheckOk(simdattn_sdpa(q, k, v, out, 1, 1, 1, 1, 3, 2, &o));
  CHECK(out[0] == 5.0f);
  CHECK(out[1] == -7.0f);
  CHECK(Bits(out[2]) == Bits(Sentinel()));
  // A decode shape (few queries, the row path with its prefetch) with a huge batch stride.
  std::vector<float> kk = RandomFloats(64 * 16, 5), vv = RandomFloats(64 * 16, 6);
  std::vector<float> qq = RandomFloats(16, 7), want(16), got(16);
  CheckOk(simdattn_sdpa(qq.data(), kk.data(), vv.data(), want.data(), 1, 1, 1, 64, 16, 16,
                        nullptr));
  o.q_strides = {INT64_MAX / 4, 16, 16};
  o.k_strides = o.v_strides = {INT64_MAX / 4, 64 * 16, 16};
  o.out_strides = {INT64_MAX / 4, 16, 16};
  CheckOk(simdattn_sdpa(qq.data(), kk.data(), vv.data(), got.data(), 1, 1, 1, 64, 16, 16, &o));
  CheckBitwiseEqual(got.data(), want.data(), 16, "huge batch stride vs contiguous");
}

TEST_CASE("regression: sgemm_batched with k = 0 ignores NULL A and B and their strides") {
  float c[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  CheckOk(simdattn_sgemm_batched(0, 0, 2, 2, 2, 0, 1.0f, nullptr, 1, 5, nullptr, 2, 7, 2.0f, c, 2,
                                 4));
  for (int i = 0; i < 8; ++i) CHECK(c[i] == 2.0f * static_cast<float>(i + 1));
}

TEST_CASE("regression: sgemm leading dimensions of one-row matrices may be huge") {
  // A 1 x 2, B 2 x 3 as op(B): with trans_b = 1, B is stored 3 x 2; with trans_b = 0 and k = 1
  // B is one row. C = A op(B).
  const float a[2] = {1, 2}, b[6] = {1, 2, 3, 4, 5, 6};
  float c[3] = {Sentinel(), Sentinel(), Sentinel()};
  // k = 1: B (1 x 3) has one row, A (1 x 1) one row, C one row.
  CheckOk(simdattn_sgemm(0, 0, 1, 3, 1, 1.0f, a, INT64_MAX, b, INT64_MAX, 0.0f, c, INT64_MAX));
  CHECK(c[0] == 1.0f);
  CHECK(c[2] == 3.0f);
  // A (1 x 2) is one row: lda is irrelevant; B (3 x 2, trans_b) has 3 rows of ldb 2.
  CheckOk(simdattn_sgemm(0, 1, 1, 3, 2, 1.0f, a, INT64_MAX, b, 2, 0.0f, c, INT64_MAX));
  CHECK(c[0] == 5.0f);   // 1*1 + 2*2
  CHECK(c[2] == 17.0f);  // 1*5 + 2*6
  // Two rows with a leading dimension whose rows fit but one row past does not: BAD_SHAPE.
  CheckError(simdattn_sgemm(0, 0, 2, 1, 1, 1.0f, a, 1, b, 1, 0.0f, c, INT64_MAX / 6),
             SIMDATTN_ERR_BAD_SHAPE, "C");
}

TEST_CASE("regression: sdpa lse's extent is overflow-checked; nothing past it is written") {
  const float q = 1.0f;
  float lse[2] = {Sentinel(), Sentinel()};
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.q_strides = {0, 0, 1};
  o.lse = lse;
  // 2^62 query rows share q's one element; their 2^62 lse floats are 2^64 bytes.
  CheckError(simdattn_sdpa(&q, nullptr, nullptr, nullptr, 1, int64_t{1} << 62, 1, 0, 1, 0, &o),
             SIMDATTN_ERR_BAD_SHAPE, "lse");
  // 2^61 + 1 rows: the lse byte count wraps in 64 bits; that is a shape error, not an overlap.
  CheckError(simdattn_sdpa(&q, nullptr, nullptr, nullptr, (int64_t{1} << 61) + 1, 1, 1, 0, 1, 0,
                           &o),
             SIMDATTN_ERR_BAD_SHAPE, "lse");
  CHECK(Bits(lse[0]) == Bits(Sentinel()));
  CHECK(Bits(lse[1]) == Bits(Sentinel()));
}

TEST_CASE("regression: sdpa out strides are checked exactly for overlapping rows") {
  // batch 2, q_len 3, d_v 1, out strides {3, 0, 2}: rows at 0, 2, 4 and 3, 5, 7 (no overlap).
  const float q[6] = {1, 1, 1, 1, 1, 1}, k[2] = {1, 1}, v[2] = {4, 8};
  std::vector<float> out(9, Sentinel());
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.out_strides = {3, 0, 2};
  CheckOk(simdattn_sdpa(q, k, v, out.data(), 2, 1, 3, 1, 1, 1, &o));
  for (int i = 0; i < 9; ++i) {
    INFO("out[", i, "]");
    const bool row = i == 0 || i == 2 || i == 4 || i == 3 || i == 5 || i == 7;
    if (row) CHECK(out[i] == (i % 2 == 0 && i != 3 ? 4.0f : 8.0f));
    if (!row) CHECK(Bits(out[i]) == Bits(Sentinel()));
  }
  // {2, 0, 1}: rows 0, 1, 2 and 2, 3, 4 share element 2.
  o.out_strides = {2, 0, 1};
  std::vector<float> before = out;
  CheckError(simdattn_sdpa(q, k, v, out.data(), 2, 1, 3, 1, 1, 1, &o), SIMDATTN_ERR_BAD_ARGUMENT,
             "out");
  CheckBitwiseEqual(out.data(), before.data(), out.size(), "out after the overlap error");
  // d_v 2 with interleaved strides {5, 0, 2}: rows 0-1, 2-3, 4-5 and 5-6 overlap at 5.
  o.out_strides = {5, 0, 2};
  CheckError(simdattn_sdpa(q, k, v, out.data(), 2, 1, 3, 1, 1, 2, &o), SIMDATTN_ERR_BAD_ARGUMENT,
             "out");
}

TEST_CASE("regression: empty calls are not rejected for overflowing products that are 0") {
  CheckOk(simdattn_sdpa(nullptr, nullptr, nullptr, nullptr, 2, INT64_MAX, 0, 0, 1, 1, nullptr));
  CheckOk(simdattn_sdpa(nullptr, nullptr, nullptr, nullptr, INT64_MAX, INT64_MAX, 0, 0, 4, 4,
                        nullptr));
  const simdattn_mha_weights w = {nullptr, nullptr, nullptr, nullptr};
  CheckOk(simdattn_mhsa(nullptr, nullptr, int64_t{1} << 62, 0, 8, 2, &w, nullptr));
  CheckOk(simdattn_mhsa(nullptr, nullptr, 0, int64_t{1} << 62, 8, 2, &w, nullptr));
}

TEST_CASE("regression: mhsa shape errors name embed_dim and num_heads; embed_dim 0 fails") {
  const float x[4] = {1, 2, 3, 4};
  float y[4] = {Sentinel(), Sentinel(), Sentinel(), Sentinel()};
  const float w_in[12] = {}, w_out[4] = {};
  const simdattn_mha_weights w = {w_in, nullptr, w_out, nullptr};
  for (const int64_t heads : {0, -3}) {
    CheckError(simdattn_mhsa(x, y, 2, 1, 2, heads, &w, nullptr), SIMDATTN_ERR_BAD_SHAPE,
               "num_heads");
    CheckError(simdattn_mhsa(x, y, 2, 1, 2, heads, &w, nullptr), SIMDATTN_ERR_BAD_SHAPE,
               "embed_dim");
  }
  CheckError(simdattn_mhsa(x, y, 2, 1, 0, 1, &w, nullptr), SIMDATTN_ERR_BAD_SHAPE, "embed_dim");
  for (const float f : y) CHECK(Bits(f) == Bits(Sentinel()));
}

// A GEMM big enough to run on several threads, checked against its first result.
struct ForkWork {
  static constexpr int64_t kM = 96, kN = 160, kK = 128;
  std::vector<float> a = RandomFloats(kM * kK, 31), b = RandomFloats(kK * kN, 32);
  std::vector<float> want = Compute();
  std::vector<float> Compute() const {
    std::vector<float> c(kM * kN);
    if (simdattn_sgemm(0, 0, kM, kN, kK, 1.0f, a.data(), kK, b.data(), kN, 0.0f, c.data(), kN) !=
        SIMDATTN_OK) {
      c.clear();
    }
    return c;
  }
  bool Matches() const {
    const std::vector<float> c = Compute();
    return c.size() == want.size() && std::memcmp(c.data(), want.data(), c.size() * 4) == 0;
  }
  // The same into c (kM * kN floats), allocating nothing: what a forked child may do safely
  // even where the allocator is not fork-safe (a sanitizer runtime's, google/sanitizers#774).
  bool MatchesInto(float* c) const {
    return simdattn_sgemm(0, 0, kM, kN, kK, 1.0f, a.data(), kK, b.data(), kN, 0.0f, c, kN) ==
               SIMDATTN_OK &&
           std::memcmp(c, want.data(), want.size() * 4) == 0;
  }
};

#if defined(SIMDATTN_TEST_SANITIZED)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

TEST_CASE("fork: a child calls the library while a parent thread was inside a call") {
  constexpr int kChildren = 12;
  constexpr unsigned kChildSeconds = 20;  // a hung child is killed by SIGALRM and fails
  ForEachThreadCount({2, 4}, [&](int32_t) {
    const ForkWork work;
    REQUIRE(!work.want.empty());
    std::vector<float> child_c(work.want.size());
    REQUIRE(work.MatchesInto(child_c.data()));  // this thread's scratch is now reserved
    std::atomic<bool> stop{false};
    std::atomic<int64_t> calls{0};
    std::thread busy([&] {
      while (!stop.load()) {
        work.Compute();
        ++calls;
      }
    });
    int ok_children = 0;
    for (int i = 0; i < kChildren; ++i) {
      while (calls.load() < i) std::this_thread::yield();  // fork at varied points of a call
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        alarm(kChildSeconds);
        bool ok = work.MatchesInto(child_c.data()) && work.MatchesInto(child_c.data());
        if (!kSanitized) {  // these allocate
          ok = ok && simdattn_set_num_threads(3) == SIMDATTN_OK && work.Matches();
        }
        _exit(ok ? 0 : 1);
      }
      int status = 0;
      REQUIRE(waitpid(pid, &status, 0) == pid);
      INFO("child ", i, ": status ", status);
      CHECK(WIFEXITED(status));
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++ok_children;
    }
    stop = true;
    busy.join();
    CHECK(ok_children == kChildren);
  });
}

// Run only by the api_quiet meson test, in a fresh process: oneTBB prints its "number of workers
// is currently limited" warning once per process, the first time an arena asks for more
// workers than it allows.
TEST_CASE("nothing is printed on stdout or stderr, whatever the thread count" * doctest::skip()) {
  std::fflush(stdout);
  std::fflush(stderr);
  FILE* capture = std::tmpfile();
  REQUIRE(capture != nullptr);
  const int saved_out = dup(1), saved_err = dup(2);
  REQUIRE(dup2(fileno(capture), 1) == 1);
  REQUIRE(dup2(fileno(capture), 2) == 2);
  bool all_ok = true;
  for (const int32_t n : {AffinityCpuCount() + 1, 16, 3, int32_t{SIMDATTN_MAX_THREADS}, 0}) {
    all_ok = all_ok && simdattn_set_num_threads(n) == SIMDATTN_OK;
    const ForkWork work;  // a GEMM split across threads
    all_ok = all_ok && !work.want.empty() && work.Matches();
    const std::vector<float> x = RandomFloats(64 * 4096, 3);
    std::vector<float> y(x.size());
    all_ok = all_ok && simdattn_softmax(64, 4096, x.data(), 4096, y.data(), 4096) == SIMDATTN_OK;
    all_ok = all_ok && simdattn_sdpa(x.data(), x.data() + 8192, x.data() + 16384, y.data(), 2, 4,
                                     64, 64, 16, 16, nullptr) == SIMDATTN_OK;
    all_ok = all_ok && simdattn_sgemm(0, 0, -1, 1, 1, 1, nullptr, 1, nullptr, 1, 0, nullptr, 1) ==
                           SIMDATTN_ERR_BAD_SHAPE;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  CHECK(all_ok);
  std::rewind(capture);
  std::string printed;
  for (int ch = std::fgetc(capture); ch != EOF; ch = std::fgetc(capture)) printed += static_cast<char>(ch);
  std::fclose(capture);
  CHECK_MESSAGE(printed.empty(), "the library printed: ", printed);
}

// ------------------------------------------------------------------ empty problems

TEST_CASE("empty problems succeed with NULL buffers and clear last_error") {
  auto fail_first = [] { REQUIRE(simdattn_sgemm(0, 0, -1, 1, 1, 1, nullptr, 1, nullptr, 1, 0,
                                                nullptr, 1) != SIMDATTN_OK); };
  SUBCASE("sgemm m = 0") {
    fail_first();
    CheckOk(simdattn_sgemm(0, 0, 0, 4, 3, 1.0f, nullptr, 3, nullptr, 4, 0.0f, nullptr, 4));
  }
  SUBCASE("sgemm n = 0") {
    fail_first();
    CheckOk(simdattn_sgemm(1, 1, 4, 0, 3, 1.0f, nullptr, 4, nullptr, 3, 0.0f, nullptr, 1));
  }
  SUBCASE("sgemm_batched batch = 0") {
    fail_first();
    CheckOk(simdattn_sgemm_batched(0, 0, 0, 2, 4, 3, 1.0f, nullptr, 3, 6, nullptr, 4, 12, 0.0f,
                                   nullptr, 4, 8));
  }
  SUBCASE("softmax rows = 0") {
    fail_first();
    CheckOk(simdattn_softmax(0, 7, nullptr, 7, nullptr, 7));
  }
  SUBCASE("softmax cols = 0") {
    fail_first();
    CheckOk(simdattn_softmax(3, 0, nullptr, 1, nullptr, 1));
  }
}

// ------------------------------------------------------------------ names, version, threads

TEST_CASE("status names") {
  CHECK(std::string(simdattn_status_name(SIMDATTN_OK)) == "SIMDATTN_OK");
  CHECK(std::string(simdattn_status_name(SIMDATTN_ERR_NULL_POINTER)) ==
        "SIMDATTN_ERR_NULL_POINTER");
  CHECK(std::string(simdattn_status_name(SIMDATTN_ERR_BAD_SHAPE)) == "SIMDATTN_ERR_BAD_SHAPE");
  CHECK(std::string(simdattn_status_name(SIMDATTN_ERR_BAD_ARGUMENT)) ==
        "SIMDATTN_ERR_BAD_ARGUMENT");
  CHECK(std::string(simdattn_status_name(SIMDATTN_ERR_OUT_OF_MEMORY)) ==
        "SIMDATTN_ERR_OUT_OF_MEMORY");
  CHECK(std::string(simdattn_status_name(SIMDATTN_ERR_INTERNAL)) == "SIMDATTN_ERR_INTERNAL");
  // 6 and 7 are representable in the enum's value range (its values fit in 3 bits) but name
  // no enumerator; larger and negative values are checked from C (tests/c_api_test.c).
  for (const int value : {6, 7}) {
    const char* name = simdattn_status_name(static_cast<simdattn_status>(value));
    REQUIRE(name != nullptr);
    CHECK(std::string(name) == "SIMDATTN_UNKNOWN_STATUS");
  }
}

TEST_CASE("version") { CHECK(std::string(simdattn_version()) == "0.2.0"); }

TEST_CASE("the default SIMD target is the best one compiled and supported") {
  hwy::SetSupportedTargetsForTest(0);
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  REQUIRE(!targets.empty());
  // Highway numbers better x86 targets with smaller bits; the list is in increasing order.
  CHECK(std::string(simdattn_simd_target()) == hwy::TargetName(targets.front()));
}

TEST_CASE("set_num_threads: 0 means the affinity mask's CPU count") {
  ForEachThreadCount({3, 0}, [](int32_t n) {
    CHECK(simdattn_get_num_threads() == (n == 0 ? AffinityCpuCount() : n));
  });
}

// Run only by the api_env_threads_* meson tests, each in a fresh process with the variable set:
// the initial count is the variable's value if it is a positive integer, else all CPUs.
TEST_CASE("initial thread count follows SIMDATTN_NUM_THREADS" * doctest::skip()) {
  const char* env = std::getenv("SIMDATTN_NUM_THREADS");
  REQUIRE(env != nullptr);
  char* end = nullptr;
  const long value = std::strtol(env, &end, 10);
  const bool positive_integer = *env != '\0' && *end == '\0' && value > 0;
  INFO("SIMDATTN_NUM_THREADS=", std::string(env));
  CHECK(simdattn_get_num_threads() == (positive_integer ? value : AffinityCpuCount()));
}

// ------------------------------------------------------------------ last_error per thread

TEST_CASE("last_error: a new thread starts with an empty one") {
  REQUIRE(simdattn_softmax(-1, 1, nullptr, 1, nullptr, 1) == SIMDATTN_ERR_BAD_SHAPE);
  const std::string mine = simdattn_last_error();
  REQUIRE(!mine.empty());
  std::string theirs = "not read";
  std::thread([&] { theirs = simdattn_last_error(); }).join();
  CHECK(theirs == "");
  CHECK(std::string(simdattn_last_error()) == mine);
}

TEST_CASE("last_error: concurrent failures stay separate per thread") {
  // Thread t fails with m = -(100 + t), so its message carries its own value; after everyone
  // failed, even threads succeed once. Each thread must then see "" (even) or its own message.
  Barrier barrier(kCallerThreads);
  std::vector<std::string> after_fail(kCallerThreads), after_success(kCallerThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallerThreads; ++t) {
    threads.emplace_back([&, t] {
      const float x = 1.0f;
      float y = 0.0f;
      simdattn_sgemm(0, 0, -(100 + t), 1, 1, 1, &x, 1, &x, 1, 0, &y, 1);
      barrier.Wait();
      after_fail[t] = simdattn_last_error();
      barrier.Wait();
      if (t % 2 == 0) simdattn_softmax(1, 1, &x, 1, &y, 1);
      barrier.Wait();
      after_success[t] = simdattn_last_error();
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kCallerThreads; ++t) {
    INFO("thread ", t);
    const std::string own = "-" + std::to_string(100 + t);
    CHECK_MESSAGE(NamesWord(after_fail[t], own), after_fail[t]);
    CHECK(after_success[t] == (t % 2 == 0 ? std::string() : after_fail[t]));
  }
}

// ------------------------------------------------------------------ determinism

// Runs `compute` once per thread count and checks every result is bitwise the first one.
void CheckSameForEveryThreadCount(const std::function<std::vector<float>()>& compute) {
  std::vector<float> first;
  ForEachThreadCount(kThreadCounts, [&](int32_t n) {
    const std::vector<float> result = compute();
    if (n == *kThreadCounts.begin()) {
      first = result;
      return;
    }
    REQUIRE(result.size() == first.size());
    CheckBitwiseEqual(result.data(), first.data(), result.size(), "result vs 1 thread");
  });
}

TEST_CASE("determinism: sgemm is bitwise identical for every thread count") {
  struct Shape {
    int32_t ta, tb;
    int64_t batch, m, n, k, stride_a;  // stride_a 0 broadcasts A
  };
  const Shape shapes[] = {{0, 0, 1, 64, 64, 64, -1}, {0, 1, 1, 301, 499, 703, -1},
                          {1, 0, 1, 300, 500, 700, -1}, {0, 0, 6, 70, 90, 130, 0},
                          {1, 1, 3, 129, 33, 257, -1}};
  for (const Shape& s : shapes) {
    INFO("trans_a=", s.ta, " trans_b=", s.tb, " batch=", s.batch, " ", s.m, "x", s.n, "x", s.k);
    const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
    const int64_t stride_a = s.stride_a < 0 ? s.m * s.k : s.stride_a;
    const std::vector<float> a = RandomFloats(static_cast<size_t>(s.batch * s.m * s.k), 11);
    const std::vector<float> b = RandomFloats(static_cast<size_t>(s.batch * s.k * s.n), 12);
    const std::vector<float> c0 = RandomFloats(static_cast<size_t>(s.batch * s.m * s.n), 13);
    CheckSameForEveryThreadCount([&] {
      std::vector<float> c = c0;
      CheckOk(simdattn_sgemm_batched(s.ta, s.tb, s.batch, s.m, s.n, s.k, 0.75f, a.data(), lda,
                                     stride_a, b.data(), ldb, s.k * s.n, -1.25f, c.data(), s.n,
                                     s.m * s.n));
      return c;
    });
  }
}

TEST_CASE("determinism: softmax is bitwise identical for every thread count") {
  const int64_t shapes[][2] = {{300, 1000}, {3, 100000}, {5000, 15}};
  for (const auto& shape : shapes) {
    const int64_t rows = shape[0], cols = shape[1];
    INFO(rows, "x", cols);
    const std::vector<float> x = RandomFloats(static_cast<size_t>(rows * cols), 21, -30, 30);
    CheckSameForEveryThreadCount([&] {
      std::vector<float> y(x.size());
      CheckOk(simdattn_softmax(rows, cols, x.data(), cols, y.data(), cols));
      return y;
    });
  }
}

// ------------------------------------------------------------------ concurrency

// One thread's private problem: a GEMM and a softmax of its own shapes and data.
struct ThreadWork {
  int32_t ta = 0, tb = 0;
  int64_t m = 0, n = 0, k = 0, rows = 0, cols = 0;
  std::vector<float> a, b, c, x, y;
  Reference gemm_ref{0, 0}, softmax_ref{0, 0};
  simdattn_status gemm_status = SIMDATTN_OK, softmax_status = SIMDATTN_OK;
  std::string error;

  explicit ThreadWork(int t)
      : ta(t % 2), tb((t / 2) % 2), m(40 + 7 * t), n(50 + 5 * t), k(60 + 30 * t),
        rows(20 + t), cols(100 * (t + 1) + t) {
    a = RandomFloats(static_cast<size_t>(m * k), 1000 + t);
    b = RandomFloats(static_cast<size_t>(k * n), 2000 + t);
    c.assign(static_cast<size_t>(m * n), kNaN);
    x = RandomFloats(static_cast<size_t>(rows * cols), 3000 + t, -20, 20);
    y.assign(x.size(), kNaN);
    gemm_ref = ReferenceGemm(ta, tb, m, n, k, 1.0f, a.data(), ta ? m : k, b.data(), tb ? k : n,
                             0.0f, c.data(), n);
    softmax_ref = Reference(rows, cols);
    for (int64_t r = 0; r < rows; ++r) ReferenceSoftmaxRow(&x[r * cols], cols, &softmax_ref, r);
  }
  // Library calls only (no doctest assertions off the main thread).
  void Run() {
    gemm_status = simdattn_sgemm(ta, tb, m, n, k, 1.0f, a.data(), ta ? m : k, b.data(),
                                 tb ? k : n, 0.0f, c.data(), n);
    softmax_status = simdattn_softmax(rows, cols, x.data(), cols, y.data(), cols);
    error += simdattn_last_error();
  }
};

TEST_CASE("concurrency: threads calling at once each get their own correct result") {
  constexpr int kRounds = 3;  // the calls of different threads overlap more than once
  std::vector<ThreadWork> work;
  work.reserve(kCallerThreads);
  for (int t = 0; t < kCallerThreads; ++t) work.emplace_back(t);
  Barrier barrier(kCallerThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallerThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        barrier.Wait();
        work[t].Run();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kCallerThreads; ++t) {
    const ThreadWork& w = work[t];
    INFO("thread ", t, ": sgemm ", w.m, "x", w.n, "x", w.k, ", softmax ", w.rows, "x", w.cols);
    CHECK(w.gemm_status == SIMDATTN_OK);
    CHECK(w.softmax_status == SIMDATTN_OK);
    CHECK_MESSAGE(w.error.empty(), w.error);
    CheckNear(w.c.data(), w.n, w.gemm_ref, "sgemm vs float64");
    CheckNear(w.y.data(), w.cols, w.softmax_ref, "softmax vs float64");
  }
}

}  // namespace
}  // namespace simdattn_test

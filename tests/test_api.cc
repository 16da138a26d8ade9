// The C API's contract outside the arithmetic: argument errors (status, message, untouched
// outputs), empty problems, status names, version, thread-count control, per-thread last_error,
// bitwise determinism across thread counts, and concurrent calls from many threads.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <sched.h>

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

TEST_CASE("version") { CHECK(std::string(simdattn_version()) == "0.1.0"); }

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

// Concurrency: 16 threads calling every function at once, each with its own sizes, while another
// thread keeps changing simdattn_set_num_threads, get results bitwise equal to single-threaded
// runs; calls from inside the caller's own oneTBB parallel_for and OpenMP parallel region
// neither deadlock nor change results. (fork() is covered in test_api.cc.) This suite also runs
// under ThreadSanitizer: tools/run-tests --sanitize=thread.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/test_util.h"

#include <tbb/parallel_for.h>

#include <atomic>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

// The caller's own oneTBB and OpenMP regions run on runtimes that are not built with
// ThreadSanitizer: TSan cannot see how they hand a task's captures to another thread, so those
// two cases run in the plain and ASan suites only (they test for deadlock and results there).
#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif

namespace simdattn_test {
namespace {

#if defined(SIMDATTN_TEST_SANITIZED)
constexpr int kRounds = 2;  // sanitizers run many times slower
#else
constexpr int kRounds = 4;
#endif
constexpr int kCallerThreads = 16;

// Every entry point once, with shapes that depend on `t`; returns all outputs in one vector.
std::vector<float> CallEverything(int t, std::vector<simdattn_status>* statuses) {
  std::vector<float> result;
  auto append = [&](const std::vector<float>& v) { result.insert(result.end(), v.begin(), v.end()); };
  // GEMM (two tiles or more), batched GEMM with a broadcast A.
  const int64_t m = 33 + 5 * t, n = 70 + 3 * t, k = 50 + 7 * t;
  const std::vector<float> a = RandomFloats(m * k, 100 + t), b = RandomFloats(k * n, 200 + t);
  std::vector<float> c = RandomFloats(m * n, 300 + t);
  statuses->push_back(simdattn_sgemm(t % 2, 0, m, n, k, 1.5f, a.data(), t % 2 ? m : k, b.data(), n,
                                     0.5f, c.data(), n));
  append(c);
  std::vector<float> cb(3 * m * n);
  statuses->push_back(simdattn_sgemm_batched(0, 1, 3, m, n, k, 1.0f, a.data(), k, 0, b.data(), k,
                                             0, 0.0f, cb.data(), n, m * n));
  append(cb);
  // Softmax.
  const int64_t rows = 20 + t, cols = 90 + 31 * t;
  const std::vector<float> x = RandomFloats(rows * cols, 400 + t, -10, 10);
  std::vector<float> y(x.size());
  statuses->push_back(simdattn_softmax(rows, cols, x.data(), cols, y.data(), cols));
  append(y);
  // SDPA prefill (causal, GQA, lse) and decode (split keys).
  const int64_t heads = 4, kvh = 2, q_len = 17 + t, kv_len = 40 + 9 * t, d = 16 + (t % 3) * 8;
  const std::vector<float> q = RandomFloats(2 * heads * q_len * d, 500 + t);
  const std::vector<float> kv = RandomFloats(2 * kvh * kv_len * d, 600 + t);
  std::vector<float> out(2 * heads * q_len * d), lse(2 * heads * q_len);
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.kv_heads = kvh;
  o.causal = SIMDATTN_CAUSAL_BOTTOM_RIGHT;
  o.lse = lse.data();
  statuses->push_back(simdattn_sdpa(q.data(), kv.data(), kv.data(), out.data(), 2, heads, q_len,
                                    kv_len, d, d, &o));
  append(out);
  append(lse);
  const int64_t long_kv = 4096 + 64 * t;
  const std::vector<float> kv_long = RandomFloats(long_kv * d, 700 + t);
  std::vector<float> dec(d);
  statuses->push_back(simdattn_sdpa(q.data(), kv_long.data(), kv_long.data(), dec.data(), 1, 1, 1,
                                    long_kv, d, d, nullptr));
  append(dec);
  // MHSA with weights.
  const int64_t seq = 6 + t, batch = 2, e = 32;
  const std::vector<float> w_in = RandomFloats(3 * e * e, 800 + t), w_out = RandomFloats(e * e, 900 + t);
  const std::vector<float> mx = RandomFloats(seq * batch * e, 1000 + t);
  std::vector<float> my(mx.size()), attn(batch * seq * seq);
  const simdattn_mha_weights w = {w_in.data(), nullptr, w_out.data(), nullptr};
  simdattn_mha_options mo;
  simdattn_mha_options_init(&mo);
  mo.attn_weights = attn.data();
  statuses->push_back(simdattn_mhsa(mx.data(), my.data(), seq, batch, e, 4, &w, &mo));
  append(my);
  append(attn);
  return result;
}

// The single-threaded results of every caller.
std::vector<std::vector<float>> SerialResults(int callers) {
  std::vector<std::vector<float>> want(static_cast<size_t>(callers));
  ForEachThreadCount({1}, [&](int32_t) {
    for (int t = 0; t < callers; ++t) {
      std::vector<simdattn_status> st;
      want[static_cast<size_t>(t)] = CallEverything(t, &st);
      for (const simdattn_status s : st) REQUIRE(s == SIMDATTN_OK);
    }
  });
  return want;
}

void CheckResults(const std::vector<std::vector<float>>& got,
                  const std::vector<std::vector<simdattn_status>>& statuses,
                  const std::vector<std::vector<float>>& want) {
  for (size_t t = 0; t < want.size(); ++t) {
    INFO("caller ", t);
    for (const simdattn_status s : statuses[t]) CHECK(s == SIMDATTN_OK);
    REQUIRE(got[t].size() == want[t].size());
    CheckBitwiseEqual(got[t].data(), want[t].data(), want[t].size(), "vs single-threaded");
  }
}

TEST_CASE("16 callers at once while the thread count changes: bitwise the serial results") {
  const std::vector<std::vector<float>> want = SerialResults(kCallerThreads);
  const int32_t restore = simdattn_get_num_threads();
  std::atomic<bool> stop{false};
  std::atomic<int> changes{0};
  std::thread changer([&] {
    const int32_t counts[] = {1, 2, 3, 0, 7, 16};
    for (int i = 0; !stop.load(); ++i) {
      simdattn_set_num_threads(counts[i % 6]);
      ++changes;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::vector<float>> got(kCallerThreads);
    std::vector<std::vector<simdattn_status>> statuses(kCallerThreads);
    std::vector<std::thread> callers;
    for (int t = 0; t < kCallerThreads; ++t) {
      callers.emplace_back([&, t] { got[t] = CallEverything(t, &statuses[t]); });
    }
    for (std::thread& th : callers) th.join();
    INFO("round ", round);
    CheckResults(got, statuses, want);
  }
  stop = true;
  changer.join();
  CHECK(changes.load() > 1);  // the count did change during the calls
  simdattn_set_num_threads(restore);
}

// kTasks calls of every function made through run(kTasks, body) -- a parallel region of the
// caller's own runtime -- for 2 and 3 library threads, compared with serial calls.
template <class Run>
void CheckInsideCallerRegion(Run run) {
  constexpr int kTasks = 8;
  const std::vector<std::vector<float>> want = SerialResults(kTasks);
  ForEachThreadCount({2, 3}, [&](int32_t) {
    std::vector<std::vector<float>> got(kTasks);
    std::vector<std::vector<simdattn_status>> statuses(kTasks);
    run(kTasks, [&](int t) { got[t] = CallEverything(t, &statuses[t]); });
    CheckResults(got, statuses, want);
  });
}

TEST_CASE("calls from inside the caller's own oneTBB parallel_for") {
  if (kTsan) {
    MESSAGE("not under TSan: the caller's oneTBB is not instrumented");
    return;
  }
  CheckInsideCallerRegion([](int n, const auto& body) { tbb::parallel_for(0, n, body); });
}

#if defined(_OPENMP)
TEST_CASE("calls from inside an OpenMP parallel region") {
  if (kTsan) {
    MESSAGE("not under TSan: libgomp is not instrumented");
    return;
  }
  CheckInsideCallerRegion([](int n, const auto& body) {
#pragma omp parallel for num_threads(4) schedule(dynamic, 1)
    for (int t = 0; t < n; ++t) body(t);
  });
}
#endif

}  // namespace
}  // namespace simdattn_test

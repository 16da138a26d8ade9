// Per-step compute and transfer times of ring attention (simdattn_ring_sdpa), for the design
// note in README.md ("Beyond one machine"). Run: mpirun -n P build/bench/ring_timing
// [batch heads kv_heads len d]. Every rank times, with all ranks active at once:
//   compute: one step's simdattn_sdpa (its queries against a whole K/V block, not causal) and
//            the merge of its piece (simdattn_attention_merge, n = 2, in place);
//   transfer: one MPI_Sendrecv of a K/V block to rank + 1 from rank - 1 (what a step sends);
//   ring: whole simdattn_ring_sdpa calls, not causal (contiguous) and causal (zigzag).
// Rank 0 prints the medians over ranks of the per-rank medians of kReps repetitions.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "simdattn.h"
#include "simdattn_mpi.h"

namespace {

constexpr int kReps = 7;  // repetitions per measurement (the median is reported)

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Median over kReps runs of f() (seconds), after a barrier each, then the median over ranks.
template <class F>
double Time(F f) {
  std::vector<double> t;
  for (int i = 0; i < kReps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    f();
    t.push_back(MPI_Wtime() - t0);
  }
  std::sort(t.begin(), t.end());
  double mine = t[kReps / 2];
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  std::vector<double> all(static_cast<size_t>(ranks));
  MPI_Allgather(&mine, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD);
  std::sort(all.begin(), all.end());
  return all[all.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0, rank = 0, ranks = 1;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int64_t b = argc > 1 ? std::atoll(argv[1]) : 1, h = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t hkv = argc > 3 ? std::atoll(argv[3]) : 8,
                len = argc > 4 ? std::atoll(argv[4]) : 1024;
  const int64_t d = argc > 5 ? std::atoll(argv[5]) : 64;
  const std::vector<float> q = Random(static_cast<size_t>(b * h * len * d), 1 + rank);
  std::vector<float> kv = Random(static_cast<size_t>(2 * b * hkv * len * d), 100 + rank);
  std::vector<float> kv_in(kv.size()), out(static_cast<size_t>(b * h * len * d));
  std::vector<float> piece(out.size()), lse(static_cast<size_t>(b * h * len));
  std::vector<float> piece_lse(lse.size());
  const float* k = kv.data();
  const float* v = kv.data() + b * hkv * len * d;
  simdattn_sdpa_options o;
  simdattn_sdpa_options_init(&o);
  o.kv_heads = hkv, o.lse = piece_lse.data();
  const double compute =
      Time([&] { simdattn_sdpa(q.data(), k, v, piece.data(), b, h, len, len, d, d, &o); });
  const float* outs[2] = {out.data(), piece.data()};
  const float* lses[2] = {lse.data(), piece_lse.data()};
  const double merge = Time([&] {
    simdattn_attention_merge(2, b * h * len, d, outs, d, lses, out.data(), d, lse.data());
  });
  const int right = (rank + 1) % ranks, left = (rank + ranks - 1) % ranks;
  const int count = static_cast<int>(kv.size());
  const double transfer = Time([&] {
    MPI_Sendrecv(kv.data(), count, MPI_FLOAT, right, 1, kv_in.data(), count, MPI_FLOAT, left, 1,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  });
  simdattn_sdpa_options ro;
  simdattn_sdpa_options_init(&ro);
  ro.kv_heads = hkv;
  const double ring = Time([&] {
    simdattn_ring_sdpa(MPI_COMM_WORLD, SIMDATTN_RING_CONTIGUOUS, q.data(), k, v, out.data(), b, h,
                       len, d, d, &ro);
  });
  ro.causal = SIMDATTN_CAUSAL_TOP_LEFT;
  const double ring_causal = Time([&] {
    simdattn_ring_sdpa(MPI_COMM_WORLD, SIMDATTN_RING_ZIGZAG, q.data(), k, v, out.data(), b, h, len,
                       d, d, &ro);
  });
  if (rank == 0) {
    const double flops = 4.0 * b * h * len * len * d;
    const double bytes = 4.0 * count;
    std::printf(
        "ranks %d, threads per rank %d, batch %lld heads %lld kv_heads %lld len %lld d %lld\n",
        ranks, simdattn_get_num_threads(), (long long)b, (long long)h, (long long)hkv,
        (long long)len, (long long)d);
    std::printf("per step: %.3g FLOP, %.3g bytes of K/V (%.0f FLOP/byte)\n", flops, bytes,
                flops / bytes);
    std::printf("compute  %8.3f ms  (%.1f GFLOP/s)\n", compute * 1e3, flops / compute * 1e-9);
    std::printf("merge    %8.3f ms\n", merge * 1e3);
    std::printf("transfer %8.3f ms  (%.2f GB/s)\n", transfer * 1e3, bytes / transfer * 1e-9);
    std::printf("ring, not causal (contiguous): %8.3f ms; %d x (compute + merge) = %.3f ms\n",
                ring * 1e3, ranks, ranks * (compute + merge) * 1e3);
    std::printf("ring, causal (zigzag):         %8.3f ms\n", ring_causal * 1e3);
  }
  MPI_Finalize();
  return 0;
}

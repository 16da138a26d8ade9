// SGEMM throughput: simdattn_sgemm against OpenBLAS (cblas_sgemm) and oneDNN (dnnl_sgemm), all
// row-major, alpha 1, beta 0, at the same thread count. Names: sgemm/<impl>/<m>x<n>x<k>[_NT].
// Shapes: squares, and the two GEMMs of attention with head dimension 64 for sequence length L:
// scores = Q K^T (m = n = L, k = 64, B = K stored [n, k]: "_NT") and out = P V (m = L, n = 64,
// k = L).
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "simdattn.h"
#include "src/cpu.h"

namespace simdattn_bench {
namespace {

struct GemmShape {
  int64_t m, n, k;
  bool trans_b;  // B stored as [n, k] (op(B) = B^T)
};

struct GemmOperands {
  GemmShape shape;
  Buffer a, b, c;
  int64_t lda, ldb, ldc;
};

GemmOperands MakeOperands(GemmShape s) {
  return GemmOperands{s, RandomBuffer(s.m * s.k, 1), RandomBuffer(s.k * s.n, 2),
                      RandomBuffer(s.m * s.n, 3), s.k, s.trans_b ? s.k : s.n, s.n};
}

// Returns false on failure (the benchmark is then reported as an error).
using GemmFn = bool (*)(GemmOperands& o);

bool RunSimdattn(GemmOperands& o) {
  const GemmShape& s = o.shape;
  return simdattn_sgemm(0, s.trans_b ? 1 : 0, s.m, s.n, s.k, 1.0f, o.a.get(), o.lda, o.b.get(),
                        o.ldb, 0.0f, o.c.get(), o.ldc) == SIMDATTN_OK;
}

bool RunOpenBlas(GemmOperands& o) {
  const GemmShape& s = o.shape;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, s.trans_b ? CblasTrans : CblasNoTrans, s.m, s.n, s.k,
              1.0f, o.a.get(), o.lda, o.b.get(), o.ldb, 0.0f, o.c.get(), o.ldc);
  return true;
}

bool RunOneDnn(GemmOperands& o) {
  const GemmShape& s = o.shape;
  return dnnl_sgemm('N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k, 1.0f, o.a.get(), o.lda, o.b.get(),
                    o.ldb, 0.0f, o.c.get(), o.ldc) == dnnl_success;
}

struct GemmImpl {
  const char* name;
  GemmFn run;
};
const GemmImpl kImpls[] = {
    {"simdattn", RunSimdattn}, {"openblas", RunOpenBlas}, {"onednn", RunOneDnn}};

// Square sizes from L1-resident (64) to memory-bound packing (2048).
const int64_t kSquareSizes[] = {64, 128, 256, 512, 1024, 2048};
// Sequence lengths for the attention GEMMs; 64 is the usual head dimension.
const int64_t kSeqLens[] = {512, 2048};
constexpr int64_t kHeadDim = 64;

std::vector<GemmShape> Shapes() {
  std::vector<GemmShape> shapes;
  for (int64_t n : kSquareSizes) shapes.push_back({n, n, n, false});
  for (int64_t l : kSeqLens) {
    shapes.push_back({l, l, kHeadDim, true});   // Q K^T
    shapes.push_back({l, kHeadDim, l, false});  // P V
  }
  return shapes;
}

std::string ShapeName(const GemmShape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) +
         (s.trans_b ? "_NT" : "");
}

void RunGemm(benchmark::State& state, const GemmImpl& impl, Lazy<GemmOperands>& lazy) {
  GemmOperands& o = lazy.Get();
  for (auto _ : state) {
    if (!impl.run(o)) {
      state.SkipWithError((std::string(impl.name) + " sgemm failed").c_str());
      break;
    }
  }
  const GemmShape& s = o.shape;
  SetFlops(state, 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) *
                      static_cast<double>(s.k));
}

std::string OneDnnVersion() {
  const dnnl_version_t* v = dnnl_version();
  const char* runtime = v->cpu_runtime == DNNL_RUNTIME_OMP   ? "OpenMP"
                        : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                                                             : "other";
  char text[128];
  std::snprintf(text, sizeof(text), "%d.%d.%d (%s threads, effective ISA mask 0x%x)", v->major,
                v->minor, v->patch, runtime, static_cast<unsigned>(dnnl_get_effective_cpu_isa()));
  return text;
}

// Gives both baselines `threads` threads and records what they will run in the context.
void SetUpBaselines(int threads) {
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);  // oneDNN's CPU runtime here is OpenMP (libgomp)
  benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_get_num_threads()));
  benchmark::AddCustomContext("onednn_version", OneDnnVersion());
  // What the library read from the CPU and the blocking it derived (src/cpu.cc is compiled in
  // here; its register tile follows the SIMD target: AVX-512 8 x 32, AVX2 6 x 16, SSE4 6 x 8).
  const std::string target = simdattn_simd_target();
  const int64_t mr = target.rfind("AVX3", 0) == 0 ? 8 : 6;
  const int64_t nr = target.rfind("AVX3", 0) == 0 ? 32 : target == "AVX2" ? 16 : 8;
  benchmark::AddCustomContext("simdattn_gemm_blocking", simdattn::DescribeBlocking(mr, nr));
}

void RegisterAll(int threads) {
  SetUpBaselines(threads);
  // Shape-major order: a shape's implementations run back to back, under the same conditions.
  for (const GemmShape& shape : Shapes()) {
    auto lazy = std::make_shared<Lazy<GemmOperands>>([shape] { return MakeOperands(shape); });
    for (const GemmImpl& impl : kImpls) {
      Register(BenchName("sgemm", impl.name, ShapeName(shape)),
               [&impl, lazy](benchmark::State& st) { RunGemm(st, impl, *lazy); });
    }
  }
}

}  // namespace
}  // namespace simdattn_bench

int main(int argc, char** argv) {
  return simdattn_bench::BenchMain(argc, argv, simdattn_bench::RegisterAll);
}

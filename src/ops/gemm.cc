// SGEMM op: plans tiles of C, runs them on the library's arena, and dispatches the per-target
// Goto/BLIS loops (kernels/gemm-inl.h) inside each tile.
//
// Blocking (per tile): for PC over K in KC slices { pack op(B) for the tile's columns;
//   for IC over the tile's rows in MC blocks { for JR { for IR { microkernel }}}}.
// Parallelism is over batch x row tiles x column tiles only; every C element accumulates its
// k-sum in the same order whatever the tiling, so results never depend on the thread count.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/ops/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu.h"
#include "src/kernels/gemm-inl.h"
#include "src/ops/ops.h"
#include "src/threading.h"

#ifndef SIMDATTN_OPS_GEMM_ONCE_
#define SIMDATTN_OPS_GEMM_ONCE_
namespace simdattn {
// KC, MC, NC come from the CPU's caches (src/cpu.h: the BLIS analytical model), fixed per
// process so every element's k-sum runs in the same order for any thread count.
// Tiles at least this wide copy non-transposed A rows first (the copy costs 1/(cols/NR) of the
// FMAs; below this the in-place read wins).
constexpr size_t kCopyRowsMinCols = 128;
// A tile whose whole op(B) (k x tile columns, rows contiguous, a whole number of NR panels) has
// at most this many floats reads B in place: it sits in L1 (32 KiB, the smallest L1D of the
// x86 cores we target) and packing it would cost more than it saves.
constexpr int64_t kInPlaceBFloats = 8192;
// Multiply-adds below which a tile is not split further: ~10 us on one core.
constexpr double kMinTileFlops = 96.0 * 96.0 * 96.0;

struct GemmTile {
  int64_t batch_index, i0, i1, j0, j1;
};
}  // namespace simdattn
#endif

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

const char* TargetNameImpl() { return hwy::TargetName(HWY_TARGET); }

void GemmGeometryImpl(int64_t* mr, int64_t* nr) {
  *mr = static_cast<int64_t>(kMR);
  *nr = static_cast<int64_t>(NR());
}

// Row stride of non-transposed A rows copied by PackARows for a kc-deep slice: a multiple of 16
// floats plus 16, so the kMR streamed rows fall in different L1 sets.
size_t CopyLd(int64_t kc) { return static_cast<size_t>((kc + 15) / 16 * 16 + 16); }

// op(B) of a tile nt columns wide is read in place (small, whole NR panels, rows contiguous).
bool BInPlace(const GemmArgs& g, size_t nt) {
  return !g.trans_b && nt % NR() == 0 && g.k * static_cast<int64_t>(nt) <= kInPlaceBFloats;
}

// Scratch of a tile nt columns wide: packed op(B) (slot 0) and packed or copied A (slot 1).
TaskScratch GemmTileScratch(const GemmArgs& g, const GemmBlocking& blk, size_t nt) {
  TaskScratch s;
  if (g.k == 0) return s;
  const size_t nr = NR(), kc = static_cast<size_t>(blk.kc), mc = static_cast<size_t>(blk.mc);
  if (!BInPlace(g, nt)) s.floats[0] = kc * ((nt + nr - 1) / nr) * nr;
  // Non-transposed A is read in place unless the tile is wide enough to amortise a row copy
  // that avoids L1 set conflicts between the kMR streamed rows.
  if (g.trans_a) {
    s.floats[1] = kc * ((mc + kMR - 1) / kMR) * kMR;
  } else if (nt >= kCopyRowsMinCols) {
    s.floats[1] = mc * CopyLd(blk.kc);
  }
  return s;
}

// Scratch of the widest tile.
void GemmScratchImpl(const GemmArgs& g, const GemmBlocking& blk, int64_t tile_n,
                     TaskScratch* s) {
  *s = GemmTileScratch(g, blk, static_cast<size_t>(tile_n));
}

void GemmTileImpl(const GemmArgs& g, const GemmBlocking& blk, const GemmTile& t) {
  const float* a = g.a + t.batch_index * g.stride_a;
  const float* b = g.b + t.batch_index * g.stride_b;
  float* c = g.c + t.batch_index * g.stride_c + t.i0 * g.ldc + t.j0;
  const size_t mt = static_cast<size_t>(t.i1 - t.i0);
  const size_t nt = static_cast<size_t>(t.j1 - t.j0);
  const size_t ldc = static_cast<size_t>(g.ldc);
  const float* bias = g.bias != nullptr ? g.bias + t.j0 : nullptr;
  if (g.k == 0) {
    ScaleBlock(mt, nt, g.beta, c, ldc);
    if (bias != nullptr) {
      for (size_t i = 0; i < mt; ++i) {
        for (size_t j = 0; j < nt; ++j) c[i * ldc + j] += bias[j];
      }
    }
    return;
  }
  const size_t nr = NR();
  const size_t lda = static_cast<size_t>(g.lda), ldb = static_cast<size_t>(g.ldb);
  const int64_t kc_blk = blk.kc;
  const size_t mc_blk = static_cast<size_t>(blk.mc);
  const TaskScratch need = GemmTileScratch(g, blk, nt);
  const bool b_in_place = BInPlace(g, nt);
  float* bpack = b_in_place ? nullptr : ThreadScratch(0, need.floats[0]);
  const bool copy_rows = !g.trans_a && nt >= kCopyRowsMinCols;
  const size_t ldp = CopyLd(kc_blk);
  float* apack = need.floats[1] != 0 ? ThreadScratch(1, need.floats[1]) : nullptr;
  // op(B)(p, j) strides, and the first column of this tile.
  const size_t b_rs = g.trans_b ? 1 : ldb, b_cs = g.trans_b ? ldb : 1;
  const float* b_tile = b + t.j0 * static_cast<int64_t>(b_cs);
  for (int64_t pc = 0; pc < g.k; pc += kc_blk) {
    const size_t kc = static_cast<size_t>(std::min(kc_blk, g.k - pc));
    const float beta = pc == 0 ? g.beta : 1.0f;
    const float* slice_bias = pc == 0 ? bias : nullptr;  // added once, with the first slice
    const float* b_slice = b_tile + pc * static_cast<int64_t>(b_rs);
    if (!b_in_place) PackB(kc, nt, b_slice, b_rs, b_cs, bpack);
    const PanelsB packed = b_in_place ? PanelsB{b_slice, nr, ldb} : PanelsB{bpack, kc * nr, nr};
    for (size_t ic = 0; ic < mt; ic += mc_blk) {
      const size_t mc = std::min(mc_blk, mt - ic);
      const size_t row = static_cast<size_t>(t.i0) + ic;
      float* cblock = c + ic * ldc;
      if (g.trans_a) {
        PackATransposed(kc, mc, a + pc * g.lda + row, lda, apack);
        MacroKernel(mc, nt, kc, apack, 1, kMR, kc * kMR, packed, cblock, ldc, g.alpha, beta,
                    slice_bias);
      } else if (copy_rows) {
        PackARows(kc, mc, a + row * lda + pc, lda, apack, ldp);
        MacroKernel(mc, nt, kc, apack, ldp, 1, kMR * ldp, packed, cblock, ldc, g.alpha, beta,
                    slice_bias);
      } else {
        MacroKernel(mc, nt, kc, a + row * lda + pc, lda, 1, kMR * lda, packed, cblock, ldc,
                    g.alpha, beta, slice_bias);
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace simdattn {

HWY_EXPORT(TargetNameImpl);
HWY_EXPORT(GemmGeometryImpl);
HWY_EXPORT(GemmTileImpl);
HWY_EXPORT(GemmScratchImpl);

const char* SimdTarget() { return HWY_DYNAMIC_DISPATCH(TargetNameImpl)(); }

namespace {

// The tiling of one Sgemm call: batch x m_tiles x n_tiles tiles of at most tile_m x tile_n.
struct GemmPlan {
  int64_t m_tiles, n_tiles, tile_m, tile_n;
  GemmBlocking blk;
};

GemmPlan PlanGemm(const GemmArgs& g) {
  int64_t mr = 0, nr = 0;
  HWY_DYNAMIC_DISPATCH(GemmGeometryImpl)(&mr, &nr);
  const GemmBlocking blk = ProcessGemmBlocking(mr, nr);
  // Aim for two tiles per thread (load balance) but no tile under kMinTileFlops: a oneTBB worker
  // takes 3-5 us to join a parallel_for, so splitting a shorter problem only adds overhead.
  // Split columns first: that costs nothing extra, while splitting rows re-packs B.
  const int threads = NumThreads();
  const double flops = static_cast<double>(g.m) * g.n * std::max<int64_t>(g.k, 1);
  const int64_t by_size = std::max<int64_t>(1, static_cast<int64_t>(flops / kMinTileFlops));
  const int64_t want = std::min<int64_t>(threads > 1 ? 2 * threads : 1, by_size * g.batch);
  const int64_t per_matrix = CeilDiv(want, g.batch);
  const int64_t units_m = CeilDiv(g.m, mr), units_n = CeilDiv(g.n, nr);
  int64_t n_tiles = std::max(CeilDiv(g.n, blk.nc), std::min(units_n, per_matrix));
  int64_t m_tiles = std::min(units_m, CeilDiv(per_matrix, n_tiles));
  const int64_t tile_n = CeilDiv(units_n, n_tiles) * nr;
  const int64_t tile_m = CeilDiv(units_m, m_tiles) * mr;
  n_tiles = CeilDiv(g.n, tile_n);
  m_tiles = CeilDiv(g.m, tile_m);
  return GemmPlan{m_tiles, n_tiles, tile_m, tile_n, blk};
}

}  // namespace

TaskScratch SgemmScratch(const GemmArgs& g) {
  TaskScratch s;
  const GemmPlan plan = PlanGemm(g);
  HWY_DYNAMIC_DISPATCH(GemmScratchImpl)(g, plan.blk, plan.tile_n, &s);
  return s;
}

void Sgemm(const GemmArgs& g) {
  const GemmPlan plan = PlanGemm(g);
  const int64_t m_tiles = plan.m_tiles, n_tiles = plan.n_tiles;
  const int64_t tile_m = plan.tile_m, tile_n = plan.tile_n;
  const GemmBlocking& blk = plan.blk;
  ReserveTaskScratch(SgemmScratch(g));  // before the first write to C
  const int64_t per = m_tiles * n_tiles;
  ParallelFor(g.batch * per, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / per, rest = task % per;
      const int64_t ti = rest / n_tiles, tj = rest % n_tiles;
      GemmTile t{bi, ti * tile_m, std::min(g.m, (ti + 1) * tile_m), tj * tile_n,
                 std::min(g.n, (tj + 1) * tile_n)};
      HWY_DYNAMIC_DISPATCH(GemmTileImpl)(g, blk, t);
    }
  });
}

}  // namespace simdattn
#endif  // HWY_ONCE

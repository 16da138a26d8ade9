// Per-target GEMM building blocks in the BLIS layering: packing of op(B) into NR-column
// micro-panels, packing of a transposed A into MR-row micro-panels, the MR x NR register-tile
// microkernel and the macro-kernel that sweeps it over one block of C.
// No threads, no allocation, no argument checks: src/ops owns those. The attention ops reuse
// MicroKernel with A read in place (K rows, V columns) and B packed from Q^T or P^T.

#if defined(SIMDATTN_SRC_KERNELS_GEMM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SIMDATTN_SRC_KERNELS_GEMM_INL_H_
#undef SIMDATTN_SRC_KERNELS_GEMM_INL_H_
#else
#define SIMDATTN_SRC_KERNELS_GEMM_INL_H_
#endif

#include <stddef.h>
#include <string.h>

#include <algorithm>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "src/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace simdattn {
namespace HWY_NAMESPACE {

#if HWY_TARGET <= HWY_AVX3
// 32 vector registers: 8 x 2 accumulators + 2 B vectors + 1 broadcast = 19; 16 independent
// FMA chains cover 2 pipes x 4-cycle latency twice. (12 x 2 measured 5-15% slower on Zen 4.)
constexpr size_t kMR = 8;
#else
// 16 vector registers (AVX2, SSE4): 6 x 2 accumulators + 2 B + 1 broadcast = 15.
constexpr size_t kMR = 6;
#endif
constexpr size_t kNV = 2;  // vectors per row of the register tile; NR = kNV * Lanes

HWY_INLINE size_t NR() { return kNV * hn::Lanes(DF()); }

// crow[0:nr] = alpha * (v0, v1) + beta * crow + bias[0:nr], nr <= NR (crow not read when
// beta == 0; no bias when bias is null).
HWY_INLINE void StoreTileRow(VF v0, VF v1, float* HWY_RESTRICT crow, float alpha, float beta,
                             const float* HWY_RESTRICT bias, size_t nr) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF valpha = hn::Set(d, alpha);
  VF out0 = hn::Mul(v0, valpha);
  VF out1 = hn::Mul(v1, valpha);
  if (nr == kNV * N) {
    if (beta != 0.0f) {
      const VF vbeta = hn::Set(d, beta);
      out0 = hn::MulAdd(vbeta, hn::LoadU(d, crow), out0);
      out1 = hn::MulAdd(vbeta, hn::LoadU(d, crow + N), out1);
    }
    if (bias != nullptr) {
      out0 = hn::Add(out0, hn::LoadU(d, bias));
      out1 = hn::Add(out1, hn::LoadU(d, bias + N));
    }
    hn::StoreU(out0, d, crow);
    hn::StoreU(out1, d, crow + N);
    return;
  }
  if (beta != 0.0f) out0 = hn::MulAdd(hn::Set(d, beta), LoadUpTo(d, crow, nr, 0.0f), out0);
  if (bias != nullptr) out0 = hn::Add(out0, LoadUpTo(d, bias, nr, 0.0f));
  StoreUpTo(out0, d, crow, nr);
  if (nr > N) {
    if (beta != 0.0f) out1 = hn::MulAdd(hn::Set(d, beta), LoadUpTo(d, crow + N, nr - N, 0.0f), out1);
    if (bias != nullptr) out1 = hn::Add(out1, LoadUpTo(d, bias + N, nr - N, 0.0f));
    StoreUpTo(out1, d, crow + N, nr - N);
  }
}

// C[r, c] = alpha * sum_{p < kc} A(r, p) * b[p * ldb + c] + beta * C[r, c]
// for r < mr <= kMR, c < nr <= NR; A(r, p) = a[r * a_rs + p * a_cs].
// b: a micro-panel of kc rows of NR floats, ldb apart (NR when packed); lanes >= nr are
// ignored. Rows of A >= mr are never read. beta == 0: C is not read. bias (nr floats, or
// null) is added to every row. Each C element is one fused multiply-add chain over p in order.
HWY_INLINE void MicroKernel(size_t kc, const float* HWY_RESTRICT a, size_t a_rs, size_t a_cs,
                            const float* HWY_RESTRICT b, size_t ldb, float* HWY_RESTRICT c,
                            size_t ldc, float alpha, float beta, size_t mr, size_t nr,
                            const float* HWY_RESTRICT bias = nullptr) {
  const DF d;
  const size_t N = hn::Lanes(d);
  // Named accumulators (not arrays) so the compiler keeps all 2 * kMR of them in registers;
  // rows >= kMR compile away, rows >= mr read row mr - 1 again and are not stored.
#define SIMDATTN_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define SIMDATTN_DECLARE(R)                                                   \
  const float* HWY_RESTRICT a##R = a + std::min<size_t>(R, mr - 1) * a_rs; \
  VF c##R##0 = hn::Zero(d), c##R##1 = hn::Zero(d);
  SIMDATTN_ROWS(SIMDATTN_DECLARE)
#undef SIMDATTN_DECLARE
  // The C tile is read (beta != 0: every KC slice after the first) and written only after the
  // k loop: request its lines now so an L2/L3 miss overlaps the FMAs instead of following them.
  for (size_t r = 0; r < mr; ++r) {
    hwy::Prefetch(c + r * ldc);
    hwy::Prefetch(c + r * ldc + nr - 1);
  }
  size_t pa = 0;
  for (size_t p = 0; p < kc; ++p, pa += a_cs, b += ldb) {
    const VF b0 = hn::LoadU(d, b);
    const VF b1 = hn::LoadU(d, b + N);
#define SIMDATTN_FMA(R)                          \
  if (R < kMR) {                                 \
    const VF ar = hn::Set(d, a##R[pa]);          \
    c##R##0 = hn::MulAdd(ar, b0, c##R##0);       \
    c##R##1 = hn::MulAdd(ar, b1, c##R##1);       \
  }
    SIMDATTN_ROWS(SIMDATTN_FMA)
#undef SIMDATTN_FMA
  }
#define SIMDATTN_STORE(R) \
  if (R < kMR && R < mr) StoreTileRow(c##R##0, c##R##1, c + R * ldc, alpha, beta, bias, nr);
  SIMDATTN_ROWS(SIMDATTN_STORE)
#undef SIMDATTN_STORE
#undef SIMDATTN_ROWS
}

// Side of the square register transpose (TransposeSquare) on this target; 0: none.
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr size_t kTransposeN = 16;
#elif HWY_TARGET == HWY_AVX2
constexpr size_t kTransposeN = 8;
#else
constexpr size_t kTransposeN = 0;
#endif

// out[i * ldo + j] = src[j * lds + i] for i, j < kTransposeN: a transpose in registers (the
// transposed-B pack, e.g. nn.Linear weights, would otherwise move one float per instruction:
// about 11% of the seed MHSA shape's time on Zen 3). Not called where kTransposeN == 0.
HWY_INLINE void TransposeSquare(const float* HWY_RESTRICT src, size_t lds, float* HWY_RESTRICT out,
                                size_t ldo) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  __m512 r[16], t[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + j * lds);
  for (int j = 0; j < 16; j += 2) {  // interleave 32-bit lanes of row pairs
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {  // interleave 64-bit pairs
    const __m512d a = _mm512_castps_pd(t[j]), b = _mm512_castps_pd(t[j + 1]);
    const __m512d c = _mm512_castps_pd(t[j + 2]), d = _mm512_castps_pd(t[j + 3]);
    r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {  // 128-bit blocks: rows 0-3 with 4-7, 8-11 with 12-15
    t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
    t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
    t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
    t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xdd);
  }
  for (int j = 0; j < 8; ++j) {  // 128-bit blocks: halves 0-7 with 8-15
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + i * ldo, r[i]);
#elif HWY_TARGET == HWY_AVX2
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * lds);
  for (int j = 0; j < 8; j += 2) {  // interleave 32-bit lanes of row pairs
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 8; j += 4) {  // 64-bit pairs: element e of rows j..j+3 in each block
    r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
    r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit blocks: rows 0-3 with rows 4-7
    _mm256_storeu_ps(out + i * ldo, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ldo, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
#else
  (void)src, (void)lds, (void)out, (void)ldo;
#endif
}

// Rows of op(B) ahead that PackB asks for: each panel reads one line from rows ldb apart (4 KiB
// for a 1024-wide B), a stride the hardware prefetchers do not follow across pages.
constexpr size_t kPackBAhead = 16;

// Packs op(B)[0:kc, 0:nc] into ceil(nc / NR) micro-panels of kc x NR floats, zero padded, one
// after another. op(B)(p, j) = b[p * b_rs + j * b_cs] with b_cs == 1 (rows of op(B) contiguous)
// or b_rs == 1 (columns contiguous: the transposed case).
HWY_INLINE void PackB(size_t kc, size_t nc, const float* HWY_RESTRICT b, size_t b_rs,
                      size_t b_cs, float* HWY_RESTRICT out) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t nr_full = NR();
  for (size_t j0 = 0; j0 < nc; j0 += nr_full, out += kc * nr_full) {
    const size_t w = std::min(nr_full, nc - j0);
    if (b_cs == 1) {
      const float* src = b + j0;
      for (size_t p = 0; p < kc; ++p, src += b_rs) {
        if (p + kPackBAhead < kc) hwy::Prefetch(src + kPackBAhead * b_rs);
        float* dst = out + p * nr_full;
        if (w == nr_full) {
          hn::StoreU(hn::LoadU(d, src), d, dst);
          hn::StoreU(hn::LoadU(d, src + N), d, dst + N);
        } else {
          hn::StoreU(LoadUpTo(d, src, w, 0.0f), d, dst);
          hn::StoreU(w > N ? LoadUpTo(d, src + N, w - N, 0.0f) : hn::Zero(d), d, dst + N);
        }
      }
    } else {
      size_t p0 = 0;
      constexpr size_t T = kTransposeN;
      if (T != 0 && w == nr_full && b_rs == 1) {
        for (; p0 + T <= kc; p0 += T) {
          for (size_t h = 0; h < nr_full; h += T) {
            TransposeSquare(b + (j0 + h) * b_cs + p0, b_cs, out + p0 * nr_full + h, nr_full);
          }
        }
      }
      for (size_t j = 0; j < w; ++j) {
        const float* src = b + (j0 + j) * b_cs;
        for (size_t p = p0; p < kc; ++p) out[p * nr_full + j] = src[p * b_rs];
      }
      for (size_t j = w; j < nr_full; ++j) {
        for (size_t p = 0; p < kc; ++p) out[p * nr_full + j] = 0.0f;
      }
    }
  }
}

// Packs a transposed A block, op(A)(i, p) = a[p * lda + i] for i < mc, p < kc, into
// ceil(mc / kMR) micro-panels of kc x kMR floats (zero padded): read back with a_rs = 1,
// a_cs = kMR, panel stride kc * kMR.
HWY_INLINE void PackATransposed(size_t kc, size_t mc, const float* HWY_RESTRICT a, size_t lda,
                                float* HWY_RESTRICT out) {
  for (size_t i0 = 0; i0 < mc; i0 += kMR, out += kc * kMR) {
    const size_t h = std::min(kMR, mc - i0);
    for (size_t p = 0; p < kc; ++p) {
      memcpy(out + p * kMR, a + p * lda + i0, h * sizeof(float));
      for (size_t r = h; r < kMR; ++r) out[p * kMR + r] = 0.0f;
    }
  }
}

// Copies A rows, op(A)(i, p) = a[i * lda + p] for i < mc, p < kc, to out with row stride ldp:
// read back with a_rs = ldp, a_cs = 1. Choosing ldp = a multiple of 16 floats plus 16 keeps the
// kMR rows the microkernel streams in different L1 sets (a large power-of-two lda would put them
// all in one set and thrash it).
HWY_INLINE void PackARows(size_t kc, size_t mc, const float* HWY_RESTRICT a, size_t lda,
                          float* HWY_RESTRICT out, size_t ldp) {
  for (size_t i = 0; i < mc; ++i) memcpy(out + i * ldp, a + i * lda, kc * sizeof(float));
}

// Where the B micro-panels of a macro-kernel live: panel j starts at b + j * panel, its kc rows
// are ldb apart. Packed panels: {packed, kc * NR, NR}; a row-major matrix: {b, NR, ldb}.
struct PanelsB {
  const float* b;
  size_t panel, ldb;
};

// C[0:mc, 0:nc] = alpha * A B + beta * C (+ bias[0:nc] on every row, when not null) over one
// KC slice: A(r, p) = a[r * a_rs + p * a_cs] with MR-row panel i starting at a + i * a_panel.
// Loop order JR outside IR: one B micro-panel (kc * NR floats) stays in L1 while the A block
// streams from L2.
HWY_INLINE void MacroKernel(size_t mc, size_t nc, size_t kc, const float* a, size_t a_rs,
                            size_t a_cs, size_t a_panel, PanelsB bp, float* c, size_t ldc,
                            float alpha, float beta, const float* bias = nullptr) {
  const size_t nr_full = NR();
  const float* b = bp.b;
  for (size_t j0 = 0; j0 < nc; j0 += nr_full, b += bp.panel) {
    const size_t nr = std::min(nr_full, nc - j0);
    const float* ap = a;
    for (size_t i0 = 0; i0 < mc; i0 += kMR, ap += a_panel) {
      MicroKernel(kc, ap, a_rs, a_cs, b, bp.ldb, c + i0 * ldc + j0, ldc, alpha, beta,
                  std::min(kMR, mc - i0), nr, bias != nullptr ? bias + j0 : nullptr);
    }
  }
}

// C[0:mc, 0:nc] = beta * C (zeros when beta == 0, C not read): the k == 0 case.
HWY_INLINE void ScaleBlock(size_t mc, size_t nc, float beta, float* c, size_t ldc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const VF vbeta = hn::Set(d, beta);
  for (size_t i = 0; i < mc; ++i) {
    float* row = c + i * ldc;
    for (size_t j = 0; j < nc; j += N) {
      const VF v = beta == 0.0f ? hn::Zero(d) : hn::Mul(vbeta, LoadUpTo(d, row + j, nc - j, 0.0f));
      StoreUpTo(v, d, row + j, nc - j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace simdattn
HWY_AFTER_NAMESPACE();

#endif  // SIMDATTN_SRC_KERNELS_GEMM_INL_H_

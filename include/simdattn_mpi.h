/* simdattn_mpi: sequence-parallel ("ring") attention over MPI, an optional add-on library
 * (libsimdattn_mpi, built when MPI is found) written on the public API of libsimdattn only:
 * every rank computes simdattn_sdpa of its query rows against the K/V block it holds, passes
 * the block on around the ring, and merges the partial results with simdattn_attention_merge.
 * Link with -lsimdattn_mpi -lsimdattn and your MPI. */
#ifndef SIMDATTN_MPI_H_
#define SIMDATTN_MPI_H_

#include <mpi.h>

#include "simdattn.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SIMDATTN_RING_CONTIGUOUS = 0, SIMDATTN_RING_ZIGZAG = 1 };

/* Sequence-parallel self-attention over the P ranks of comm (collective: every rank calls it
 * with the same arguments except the pointers). The global sequence has P * len positions.
 * CONTIGUOUS: rank r holds positions [r*len, (r+1)*len). ZIGZAG (balances causal work): the
 * sequence is cut into 2P chunks of len/2 positions (len even, else BAD_SHAPE) and rank r holds
 * chunk r followed by chunk 2P-1-r. q, k, v, out are the rank's local [batch, heads or kv_heads,
 * len, d] tensors (options' strides apply to them); out receives the rank's own query rows of
 * simdattn_sdpa over the whole global sequence (causal on global positions; TOP_LEFT and
 * BOTTOM_RIGHT coincide); options->lse: [batch, heads, len] contiguous, the rank's rows of the
 * global LSE in its local row order.
 * options: struct_size >= the 0.1 size; scale, causal, kv_heads, the four strides and lse are
 * honoured; mask, kv_lens or weights non-NULL, or any nonzero byte past `weights` up to
 * struct_size (later versions' fields) -> BAD_ARGUMENT; mask_strides are ignored. Argument
 * checks and statuses are simdattn_sdpa's for the local tensors (q_len = kv_len = len), except
 * that out strides must be nested (each at least the extent of the dimensions below it) to
 * prove rows disjoint: other layouts -> BAD_ARGUMENT. Also: layout not 0/1 -> BAD_ARGUMENT; a
 * K/V block of more than INT_MAX floats (one MPI message) -> BAD_SHAPE.
 * Errors are agreed across ranks: every rank returns the status of the lowest-numbered rank
 * whose arguments are invalid (or that ran out of memory) and writes nothing;
 * simdattn_ring_last_error() then names that rank and its argument. Valid arguments that differ
 * between ranks (layout, sizes, resolved kv_heads and scale, causal or not) -> BAD_ARGUMENT on
 * every rank, nothing written. batch, heads or len == 0 ->
 * OK on every rank, nothing written, NULL accepted for buffers without elements; d_v == 0 writes
 * lse only.
 * MPI use: a duplicate of comm only, never MPI_COMM_WORLD; all MPI calls from the calling thread
 * (MPI_THREAD_FUNNELED suffices); no message of the call is pending on comm at return.
 * K/V blocks travel around the ring with nonblocking sends/receives overlapping the compute, and
 * partial results are merged by LSE in a fixed order (ring step, then key chunk): for a given P
 * and layout, results are bitwise identical for any thread count.
 * Memory: about 2 K/V blocks plus 3 x (batch * heads * len * (d_v + 1)) floats of scratch. */
SIMDATTN_API simdattn_status simdattn_ring_sdpa(MPI_Comm comm, int32_t layout, const float* q,
                                                const float* k, const float* v, float* out,
                                                int64_t batch, int64_t heads, int64_t len,
                                                int64_t d_k, int64_t d_v,
                                                const simdattn_sdpa_options* options);

/* Text of this thread's last simdattn_ring_sdpa failure; "" after a success. */
SIMDATTN_API const char* simdattn_ring_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SIMDATTN_MPI_H_ */

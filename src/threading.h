// The library's thread pool (a oneTBB task_arena it owns) and per-thread scratch memory.
// Only src/ops/*.cc call into this; kernels never see threads.
#ifndef SIMDATTN_SRC_THREADING_H_
#define SIMDATTN_SRC_THREADING_H_

#include <cstddef>
#include <cstdint>
#include <functional>

namespace simdattn {

// CPUs this process may run on (sched_getaffinity), at least 1.
int HardwareThreads();

// n == 0 -> HardwareThreads(). Precondition: n >= 0 (c_api checks). Calls already running keep
// the arena they started with.
void SetNumThreads(int n);
int NumThreads();

// Calls body(begin, end) over disjoint chunks covering [0, n), each at most `grain` long, on the
// library's arena. Chunk boundaries are multiples of `grain` and never depend on the thread
// count, so a body that writes only the outputs of its own indices is deterministic.
// Runs inline when n <= grain or one thread is configured. Exceptions propagate to the caller.
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

// Thread-local 64-byte aligned scratch of at least `floats` floats, reused across calls (so a
// repeated call pays no allocation or page faults; each thread keeps its largest request).
// Distinct `slot`s (< kScratchSlots) are distinct buffers; contents are undefined on return.
// Throws std::bad_alloc on failure. Valid until the same thread asks for the same slot again.
// Slots 0..3 belong to the body of one parallel task; a buffer that lives for a whole call on
// the calling thread (which also runs tasks) takes one of the call slots below.
constexpr int kScratchSlots = 6;
constexpr int kMhsaCallSlot = 4;
constexpr int kSdpaCallSlot = 5;
float* ThreadScratch(int slot, size_t floats);

}  // namespace simdattn

#endif  // SIMDATTN_SRC_THREADING_H_

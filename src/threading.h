// The library's thread pool (a oneTBB task_arena it owns) and per-thread scratch memory.
// Only src/ops/*.cc (and c_api.cc's CallScope) call into this; kernels never see threads.
#ifndef SIMDATTN_SRC_THREADING_H_
#define SIMDATTN_SRC_THREADING_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace simdattn {

// Upper bound of simdattn_set_num_threads (the header's SIMDATTN_MAX_THREADS).
constexpr int kMaxThreads = 4096;

// CPUs this process may run on (sched_getaffinity), at least 1.
int HardwareThreads();

// n == 0 -> HardwareThreads(). Precondition: 0 <= n <= kMaxThreads (c_api checks). Calls already
// running keep the arena they started with. The arena runs at most as many threads as oneTBB
// allows (global_control::max_allowed_parallelism, by default the CPU count) so oneTBB never
// warns on stderr; NumThreads() still reports n, and results do not depend on either.
void SetNumThreads(int n);
// The count of this thread's current call (CallScope), else the configured one.
int NumThreads();

// Pins the arena and the thread count for one API call on the calling thread (c_api's Run), so
// that a concurrent simdattn_set_num_threads cannot change them between the scratch reservation
// and the parallel loops of the call. Nests (an inner scope keeps the outer pin).
class CallScope {
 public:
  CallScope();
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

 private:
  bool owner_;
};

// A non-owning reference to a callable void(int64_t, int64_t): unlike std::function it never
// allocates, so starting a parallel loop cannot fail after outputs were written.
class RangeBody {
 public:
  template <class F, class = std::enable_if_t<!std::is_same<std::decay_t<F>, RangeBody>::value>>
  RangeBody(F&& f)  // NOLINT: implicit, like std::function
      : object_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(o))(b, e); }) {}
  void operator()(int64_t begin, int64_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, int64_t, int64_t);
};

// Calls body(begin, end) over disjoint chunks covering [0, n), each at most `grain` long, on the
// library's arena. Chunk boundaries are multiples of `grain` and never depend on the thread
// count, so a body that writes only the outputs of its own indices is deterministic.
// Runs inline when n <= grain, one thread is configured, or in a child process after fork()
// (oneTBB's threads do not exist there). Exceptions propagate to the caller; a failure to start
// oneTBB's worker threads surfaces before the first chunk of the arena's first loop runs.
void ParallelFor(int64_t n, int64_t grain, RangeBody body);

// Scratch of the task slots 0..kTaskSlots-1 that one task of a parallel loop asks for, in floats.
constexpr int kTaskSlots = 4;
struct TaskScratch {
  size_t floats[kTaskSlots] = {};
};
// Slot-wise maximum.
TaskScratch MaxScratch(const TaskScratch& a, const TaskScratch& b);

// Acquires, on the calling thread, task scratch of `s` for every thread of the arena, so that the
// tasks of this thread's following ParallelFor calls (in the same CallScope) never allocate: a
// call acquires all its memory before its first output write, and a failure leaves the outputs
// as they were. Throws std::bad_alloc. The memory is kept by the calling thread for its next
// calls (grown, never shrunk) and freed when it exits.
void ReserveTaskScratch(const TaskScratch& s);

// 64-byte aligned scratch of at least `floats` floats. Inside a task, slots < kTaskSlots return
// the calling thread's reservation when it is large enough; otherwise (and for the call slots
// below) a thread-local buffer reused across calls (each thread keeps its largest request),
// which may throw std::bad_alloc. Distinct `slot`s (< kScratchSlots) are distinct buffers;
// contents are undefined on return. Valid until the same thread asks for the same slot again.
// A buffer that lives for a whole call on the calling thread (which also runs tasks) takes one
// of the call slots.
constexpr int kScratchSlots = 6;
constexpr int kMhsaCallSlot = 4;
constexpr int kSdpaCallSlot = 5;
float* ThreadScratch(int slot, size_t floats);

}  // namespace simdattn

#endif  // SIMDATTN_SRC_THREADING_H_

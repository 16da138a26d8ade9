#include "src/threading.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

// ThreadSanitizer cannot see the synchronization inside libtbb (not instrumented): it would
// report every hand-off of a loop's data between the calling thread and oneTBB's workers as a
// race. These annotations state the hand-offs oneTBB guarantees (everything before the loop
// happens before each chunk; each chunk happens before the loop returns) and nothing more, so
// TSan still sees every real race in the chunks and between concurrent calls (tests/tsan.supp
// holds the rest, inside oneTBB).
#if defined(__SANITIZE_THREAD__)
#define SIMDATTN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMDATTN_TSAN 1
#endif
#endif
#if defined(SIMDATTN_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
#define SIMDATTN_HAPPENS_BEFORE(addr) __tsan_release(addr)
#define SIMDATTN_HAPPENS_AFTER(addr) __tsan_acquire(addr)
#else
#define SIMDATTN_HAPPENS_BEFORE(addr) static_cast<void>(addr)
#define SIMDATTN_HAPPENS_AFTER(addr) static_cast<void>(addr)
#endif

namespace simdattn {
namespace {

// A task_arena and whether its worker threads were started (see StartWorkers).
struct Arena {
  explicit Arena(int concurrency) : arena(concurrency) {}
  tbb::task_arena arena;
  std::mutex start_mu;              // held while one caller starts the workers
  std::atomic<bool> started{false};  // set once that start has returned
#if defined(SIMDATTN_TSAN)
  // Under TSan one calling thread at a time enters the arena: when its master slot is taken,
  // execute() hands the call's functor to another thread inside libtbb, a hand-off TSan cannot
  // see and that no annotation can precede (the functor's captures are read before any).
  std::mutex tsan_entry;
#endif
};

#if defined(SIMDATTN_TSAN)
// Holds Arena::tsan_entry with its synchronization hidden from TSan: the lock only keeps
// execute() on the calling thread, and the order it imposes between two callers is not one
// the library relies on (seen by TSan, it would hide real races between concurrent calls).
class TsanEntryLock {
 public:
  explicit TsanEntryLock(std::mutex& mu) : mu_(mu) {
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    mu_.lock();
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
  }
  ~TsanEntryLock() {
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    mu_.unlock();
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
  }
  TsanEntryLock(const TsanEntryLock&) = delete;
  TsanEntryLock& operator=(const TsanEntryLock&) = delete;

 private:
  std::mutex& mu_;
};
#endif

struct Pool {
  std::mutex mu;
  int threads = 0;               // what simdattn_set_num_threads asked for (resolved)
  std::shared_ptr<Arena> arena;  // runs min(threads, oneTBB's limit) threads
};

// Set in a child process after fork(): oneTBB's worker threads and locks are not usable there,
// so every loop runs on the calling thread (results are the same for any thread count).
std::atomic<bool> g_forked{false};

int ThreadsFromEnv() {
  const char* s = std::getenv("SIMDATTN_NUM_THREADS");
  if (s == nullptr || *s == '\0') return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < 0 || v > kMaxThreads) return 0;  // unusable: fall back to all CPUs
  return static_cast<int>(v);
}

// oneTBB prints "TBB Warning: The number of workers is currently limited to ..." on stderr when
// an arena asks for more workers than its market allows (max_allowed_parallelism - 1, by default
// the CPU count - 1). More threads than that could never run anyway, so the arena is capped.
std::shared_ptr<Arena> MakeArena(int threads) {
  // (A forked child never runs an arena, and must not call into oneTBB.)
  const size_t limit =
      g_forked.load() ? static_cast<size_t>(threads)
                      : tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
  const int concurrency =
      static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(threads), limit)));
  return std::make_shared<Arena>(concurrency);
}

Pool& GetPool();

// fork() while another thread holds pool.mu would leave it locked forever in the child: hold it
// across fork() instead. The child also stops using oneTBB and keeps the parent's arena alive
// (destroying it would call into oneTBB's inherited, possibly locked, state).
void BeforeFork() { GetPool().mu.lock(); }
void AfterForkParent() { GetPool().mu.unlock(); }
void AfterForkChild() {
  Pool& pool = GetPool();
  g_forked.store(true);
  new std::shared_ptr<Arena>(pool.arena);  // leaked on purpose
  pool.mu.unlock();
}

Pool& GetPool() {
  static Pool* pool = [] {
    auto* p = new Pool;  // leaked on purpose: usable from other static destructors
    const int n = ThreadsFromEnv();
    p->threads = n == 0 ? HardwareThreads() : n;
    p->arena = MakeArena(p->threads);
    pthread_atfork(BeforeFork, AfterForkParent, AfterForkChild);
    return p;
  }();
  return *pool;
}

// The arena and thread count of this thread's current call (CallScope), if any.
struct Pinned {
  std::shared_ptr<Arena> arena;
  int threads = 0;
};
thread_local Pinned t_pinned;

Pinned Current() {
  if (t_pinned.arena) return t_pinned;
  Pool& pool = GetPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  return Pinned{pool.arena, pool.threads};
}

// Threads that may run tasks of a loop on this arena: the indices of ThreadIndex().
int Concurrency(const Pinned& p) {
  if (p.threads == 1 || g_forked.load(std::memory_order_relaxed)) return 1;
  return p.arena->arena.max_concurrency();
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

float* AlignedFloats(size_t floats, size_t* capacity) {
  const size_t bytes = ((std::max<size_t>(floats, 16) * sizeof(float)) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  *capacity = bytes / sizeof(float);
  return static_cast<float*>(p);
}

// The calling thread's task scratch: `threads` consecutive blocks of `per_thread` floats, slot s
// of block i at i * per_thread + offset[s].
struct Reservation {
  std::unique_ptr<float, AlignedFree> data;
  int threads = 0;
  size_t per_thread = 0;
  size_t offset[kTaskSlots] = {};
  size_t capacity[kTaskSlots] = {};
};
thread_local Reservation t_reservation;

// Set while a thread runs one chunk of a loop: whose reservation, and which block of it.
struct TaskContext {
  const Reservation* reservation = nullptr;
  int index = 0;
};
thread_local TaskContext t_task;

class TaskContextScope {
 public:
  TaskContextScope(const Reservation* r, int index) : saved_(t_task) { t_task = {r, index}; }
  ~TaskContextScope() { t_task = saved_; }

 private:
  TaskContext saved_;
};

#if defined(SIMDATTN_TSAN)
// oneTBB's parallel_for keeps its wait_node in a frame on the calling thread. The worker that
// finishes the last chunk touches it last (reads its parent, then decrements it atomically), and
// libtbb's wait, which returns on that decrement, is not instrumented: TSan would take this
// thread's next use of that stack memory (any later frame) for a race with the worker. So the
// loop notes how deep the calling thread's own chunks ran (below parallel_for's frames) and,
// once it returned, acquires every word of the dead frames between there and the caller.
class LoopFrames {
 public:
  LoopFrames() { __tsan_release(this); }  // caller_ is read in the chunks
  LoopFrames(const LoopFrames&) = delete;
  LoopFrames& operator=(const LoopFrames&) = delete;
  void NoteChunk() {  // in every chunk, on any thread
    __tsan_acquire(this);
    char here = 0;
    if (&t_reservation == caller_ && (lowest_ == nullptr || &here < lowest_)) lowest_ = &here;
  }
  __attribute__((noinline)) void AcquireDeadFrames() const {  // on the caller, after the loop
    if (lowest_ == nullptr) return;
    char here = 0;
    const uintptr_t end = reinterpret_cast<uintptr_t>(&here);
    for (uintptr_t p = reinterpret_cast<uintptr_t>(lowest_) & ~uintptr_t{7}; p + 8 <= end; p += 8) {
      static_cast<void>(__atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_ACQUIRE));
    }
  }

 private:
  const Reservation* const caller_ = &t_reservation;
  const char* lowest_ = nullptr;
};
#else
struct LoopFrames {
  void NoteChunk() {}
  void AcquireDeadFrames() const {}
};
#endif

// Runs an empty loop on a new arena once, before its first real loop: oneTBB creates its worker
// threads when work is first offered, and if pthread_create fails it throws from that spawn.
// Doing it here makes such a failure happen before any output is written. Concurrent first
// callers wait for that start to return (one running its real loop meanwhile could be the one
// whose spawn fails, after writing output); after a failed start the next call tries again.
// `started` publishes no data (oneTBB synchronizes its own workers), so it is relaxed.
void StartWorkers(Arena& a) {
  if (a.started.load(std::memory_order_relaxed)) return;
  const std::lock_guard<std::mutex> lock(a.start_mu);
  if (a.started.load(std::memory_order_relaxed)) return;
  const int64_t n = a.arena.max_concurrency();
  LoopFrames frames;
  a.arena.execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1),
                      [&](const tbb::blocked_range<int64_t>&) { frames.NoteChunk(); },
                      tbb::simple_partitioner());
  });
  frames.AcquireDeadFrames();
  a.started.store(true, std::memory_order_relaxed);
}

}  // namespace

int HardwareThreads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

void SetNumThreads(int n) {
  const int threads = n == 0 ? HardwareThreads() : n;
  std::shared_ptr<Arena> arena = MakeArena(threads);
  Pool& pool = GetPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  pool.threads = threads;
  pool.arena.swap(arena);  // calls in flight keep theirs alive through their own reference
}

int NumThreads() { return Current().threads; }

CallScope::CallScope() : owner_(!t_pinned.arena) {
  if (owner_) t_pinned = Current();
}

CallScope::~CallScope() {
  if (owner_) t_pinned = Pinned{};
}

TaskScratch MaxScratch(const TaskScratch& a, const TaskScratch& b) {
  TaskScratch m;
  for (int s = 0; s < kTaskSlots; ++s) m.floats[s] = std::max(a.floats[s], b.floats[s]);
  return m;
}

void ReserveTaskScratch(const TaskScratch& s) {
  Reservation& r = t_reservation;
  const int threads = Concurrency(Current());
  bool fits = threads <= r.threads;
  for (int i = 0; i < kTaskSlots; ++i) fits = fits && s.floats[i] <= r.capacity[i];
  if (fits) return;
  // Grow every slot to the larger of both, each rounded to whole cache lines.
  Reservation grown;
  grown.threads = std::max(threads, r.threads);
  for (int i = 0; i < kTaskSlots; ++i) {
    grown.capacity[i] = (std::max(s.floats[i], r.capacity[i]) + 15) / 16 * 16;
    grown.offset[i] = grown.per_thread;
    grown.per_thread += grown.capacity[i];
  }
  size_t total = 0, allocated = 0;
  if (__builtin_mul_overflow(grown.per_thread, static_cast<size_t>(grown.threads), &total)) {
    throw std::bad_alloc();
  }
  r.data.reset();  // free first: the old and the new block need not fit together
  r = Reservation{};
  grown.data.reset(AlignedFloats(total, &allocated));
  r = std::move(grown);
}

void ParallelFor(int64_t n, int64_t grain, RangeBody body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const Pinned p = Current();
  const Reservation* reservation = &t_reservation;
  if (n <= grain || Concurrency(p) == 1) {
    const TaskContextScope scope(reservation, 0);
    for (int64_t i = 0; i < n; i += grain) body(i, std::min(n, i + grain));
    return;
  }
  Arena& a = *p.arena;
#if defined(SIMDATTN_TSAN)
  const TsanEntryLock one_caller(a.tsan_entry);  // StartWorkers' execute() included
#endif
  StartWorkers(a);
  const int64_t chunks = (n + grain - 1) / grain;
  // The TSan annotations synchronize on an address of this call only (one shared address would
  // order every call after every earlier one and hide races between callers).
  char sync = 0;
  LoopFrames frames;
  const auto run = [&] {
    SIMDATTN_HAPPENS_AFTER(&sync);
    // simple_partitioner with grain 1 over chunk indices: each task is exactly one chunk, so
    // chunk boundaries are fixed by `grain` alone.
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, chunks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          SIMDATTN_HAPPENS_AFTER(&sync);
          frames.NoteChunk();
          const TaskContextScope scope(reservation, tbb::this_task_arena::current_thread_index());
          for (int64_t c = r.begin(); c < r.end(); ++c) {
            body(c * grain, std::min(n, (c + 1) * grain));
          }
          SIMDATTN_HAPPENS_BEFORE(&sync);
        },
        tbb::simple_partitioner());
    SIMDATTN_HAPPENS_BEFORE(&sync);
  };
  SIMDATTN_HAPPENS_BEFORE(&sync);
  a.arena.execute(run);
  SIMDATTN_HAPPENS_AFTER(&sync);
  frames.AcquireDeadFrames();
}

float* ThreadScratch(int slot, size_t floats) {
  const TaskContext& t = t_task;
  if (slot < kTaskSlots && t.reservation != nullptr && t.index >= 0 &&
      t.index < t.reservation->threads && floats <= t.reservation->capacity[slot]) {
    return t.reservation->data.get() + static_cast<size_t>(t.index) * t.reservation->per_thread +
           t.reservation->offset[slot];
  }
  struct Buffer {
    std::unique_ptr<float, AlignedFree> data;
    size_t capacity = 0;
  };
  thread_local Buffer buffers[kScratchSlots];
  Buffer& b = buffers[slot];
  if (b.capacity < floats) {
    b.data.reset();
    b.capacity = 0;
    size_t capacity = 0;
    b.data.reset(AlignedFloats(floats, &capacity));
    b.capacity = capacity;
  }
  return b.data.get();
}

}  // namespace simdattn

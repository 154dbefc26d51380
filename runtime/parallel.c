/* The one parallel entry of generated code. Work is cut into chunks whose
 * boundaries are a function of (n, grain) alone; threads only decide who
 * runs which chunk. A kernel that keeps per-chunk results and combines them
 * in chunk order therefore gives bit-identical results at any thread count.
 *
 * Chunks are handed out dynamically: chunk costs vary (tails, cache
 * misses), and the assignment does not affect results. In a graph's team
 * each thread first takes the chunks of its own contiguous range, then
 * helps with the others' (team_claim_chunks). A call made while a parallel region is active runs inline:
 * nested OpenMP regions would oversubscribe the cores for no gain.
 *
 * A compiled graph runs inside one team (rt_run_graph): one OpenMP
 * parallel region per call, not one per kernel. Its first thread, the
 * leader, runs the graph's kernels in order; each rt_parallel_for it
 * makes becomes a job the other threads, spinning briefly between jobs,
 * take chunks of. Why: with OpenMP's passive waiting (or a short spin,
 * in a region after a long kernel) every region is a futex wake-up and a
 * sleeping barrier, 5-9% of a ResNet call at batch 1 on 2 threads, and
 * libgomp's own spinning burns milliseconds at every barrier. Between
 * jobs the helpers spin at most TEAM_SPIN_NS, then sleep on a condition
 * variable, so a long serial kernel does not hold a core busy. */
#include "runtime/rt.h"
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static atomic_llong regions_opened;   /* OpenMP regions, for rt_parallel_regions */

int64_t rt_parallel_regions(void) { return atomic_load(&regions_opened); }

/* Chunk k is [k*grain, min(n, (k+1)*grain)), computed without overflow. */
static void run_chunk(RtTask fn, void *ctx, int64_t n, int64_t grain, int64_t k) {
  int64_t lo = k * grain;
  fn(ctx, lo, n - lo > grain ? lo + grain : n);
}

/* ---- the team of a running graph ---------------------------------------------- */

/* How long a helper (or the leader, at a job's end) spins on a word
 * before it sleeps: longer than the serial kernels between two parallel
 * ones at batch 1, short against a time slice. */
enum { TEAM_SPIN_NS = 50000 };

/* Rank r's share of a job: chunks [next, end) of a contiguous range,
 * claimed one at a time by r, then by any rank that ran out of its own.
 * Each on its own cache line: claims are the threads' only shared writes. */
typedef struct TeamRange {
  _Alignas(64) atomic_llong next;
  int64_t end;
} TeamRange;

/* The job word: the job's number, a bit the leader sets once every chunk
 * is claimed (closed), and the helpers that joined it. A helper joins
 * with a compare-and-swap, so only while the job is open and is the one
 * it saw; the leader closes the word and waits for those helpers alone.
 * Why: a helper the OS has not scheduled then costs nothing, where
 * waiting for every helper to acknowledge every job cost the leader a
 * good part of a time slice per job on a busy machine (ResNet b1 at 2
 * threads: 4.0 ms against 0.34). */
enum { JOB_JOINED_BITS = 16 };
#define JOB_JOINED ((1LL << JOB_JOINED_BITS) - 1)
#define JOB_CLOSED (1LL << JOB_JOINED_BITS)
#define JOB_NUMBER (~(JOB_JOINED | JOB_CLOSED))
#define JOB_ONE (1LL << (JOB_JOINED_BITS + 1))

typedef struct Team {
  /* the current job: written by the leader while no helper is joined,
   * before it opens the job; read only by helpers that joined it */
  RtTask fn;
  void *ctx;
  int64_t n, grain, nchunks;
  int helpers;               /* helpers that take chunks: the job's threads - 1 */
  int64_t jobs;              /* jobs published (the leader's count) */
  atomic_bool quit;          /* the graph is done: helpers leave */
  atomic_llong job;          /* the job word: number | closed | joined */
  TeamRange *range;          /* per rank: its share of the job's chunks */
  atomic_llong finished;     /* joined helpers done with the current job */
  atomic_int sleepers;       /* threads asleep on cv (or about to be) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} Team;

/* The team this thread leads while it runs a graph's kernels; NULL on
 * helpers, outside graphs, and while the leader runs a chunk. */
static _Thread_local Team *leading;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static bool word_matches(atomic_llong *w, long long mask, long long want, bool equal) {
  return ((atomic_load(w) & mask) == want) == equal;
}

/* Waits until the bits `mask` of *w equal `want` (equal) or differ from
 * it (!equal): spins, then sleeps. */
static void team_await(Team *t, atomic_llong *w, long long mask, long long want, bool equal) {
  int64_t deadline = 0;
  for (int i = 0; !word_matches(w, mask, want, equal); i++) {
    cpu_relax();
    if (i % 256 != 255)
      continue;
    int64_t now = now_ns();
    if (!deadline)
      deadline = now + TEAM_SPIN_NS;
    else if (now > deadline)
      break;
  }
  if (word_matches(w, mask, want, equal))
    return;
  pthread_mutex_lock(&t->mu);
  atomic_fetch_add(&t->sleepers, 1);
  while (!word_matches(w, mask, want, equal))
    pthread_cond_wait(&t->cv, &t->mu);
  atomic_fetch_sub(&t->sleepers, 1);
  pthread_mutex_unlock(&t->mu);
}

/* After a store another thread may wait on: wakes the sleepers. The
 * store and the load of `sleepers` are sequentially consistent, as are
 * the sleeper's increment and its check, so one of the two sees the other. */
static void team_wake(Team *t) {
  if (atomic_load(&t->sleepers) == 0)
    return;
  pthread_mutex_lock(&t->mu);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* Rank r's own range first, then the others' leftovers in turn. Why
 * ranges: consecutive kernels cut alike (a batch by images, an image by
 * rows) then give each thread the same part of every tensor, which stays
 * in its core's cache, where chunks handed out first come first served
 * went to either core by chance, half of them to the one that did not
 * write their inputs. */
static void team_claim_chunks(Team *t, int rank) {
  int ranks = t->helpers + 1;
  for (int i = 0; i < ranks; i++) {
    TeamRange *r = &t->range[(rank + i) % ranks];
    for (int64_t k; (k = atomic_fetch_add(&r->next, 1)) < r->end;)
      run_chunk(t->fn, t->ctx, t->n, t->grain, k);
  }
}

/* Rank r of `ranks` owns chunks [r*nchunks/ranks, (r+1)*nchunks/ranks). */
static void team_split(Team *t, int ranks) {
  for (int r = 0; r < ranks; r++) {
    atomic_store(&t->range[r].next, r * t->nchunks / ranks);
    t->range[r].end = (r + 1) * t->nchunks / ranks;
  }
}

/* Joins the job of word `w` if it is still open and still that job. A
 * failed exchange reloads w: another helper joined (try again) or the
 * leader closed it or moved on (too late: skip it). */
static bool team_join(Team *t, long long w) {
  long long number = w & JOB_NUMBER;
  while (!(w & JOB_CLOSED) && (w & JOB_NUMBER) == number)
    if (atomic_compare_exchange_weak(&t->job, &w, w + 1))
      return true;
  return false;
}

/* Helper `rank` (1 ..): joins each job it sees open, takes chunks if the
 * job wants this many threads, then says it is done. The job's fields
 * are read only once joined: the leader rewrites them only after every
 * helper that joined is done. */
static void team_help(Team *t, int rank) {
  for (long long seen = 0;;) {
    team_await(t, &t->job, JOB_NUMBER, seen, false);
    long long w = atomic_load(&t->job);
    seen = w & JOB_NUMBER;
    if (atomic_load(&t->quit))
      return;
    if (!team_join(t, w))
      continue;
    if (rank <= t->helpers)
      team_claim_chunks(t, rank);
    atomic_fetch_add(&t->finished, 1);
    team_wake(t);
  }
}

/* Opens job `number` (or, with JOB_CLOSED, only tells the helpers to look). */
static void team_publish(Team *t, long long word) {
  atomic_store(&t->job, word);
  team_wake(t);
}

/* The leader's rt_parallel_for: a job for `threads` threads of the team.
 * Once the leader's own claims find no chunk left, every chunk has been
 * claimed, by it or by a helper that joined before the close. */
static void team_run(Team *t, RtTask fn, void *ctx, int64_t n, int64_t grain, int64_t nchunks, int threads) {
  int size = omp_get_num_threads();
  t->fn = fn, t->ctx = ctx, t->n = n, t->grain = grain, t->nchunks = nchunks;
  t->helpers = (threads < size ? threads : size) - 1;
  team_split(t, t->helpers + 1);
  atomic_store(&t->finished, 0);
  t->jobs++;
  team_publish(t, t->jobs * JOB_ONE);
  leading = NULL;                  /* a call from a chunk runs inline */
  team_claim_chunks(t, 0);
  leading = t;
  long long joined = atomic_fetch_or(&t->job, JOB_CLOSED) & JOB_JOINED;
  team_await(t, &t->finished, -1, joined, true);
}

/* What *solo holds for a call that gave its team no job: every kernel ran
 * on one thread, as they will again at this batch and thread count. */
static int64_t solo_key(int64_t batch, int threads) {
  return (int64_t)(((uint64_t)batch << 16) | (uint64_t)(threads & 0xffff)) + 1;
}

void rt_run_graph(RtGraph body, void *regions, int64_t batch, int32_t nthreads, int64_t *solo) {
  int threads = nthreads > 0 ? nthreads : rt_default_threads();
  int64_t key = solo_key(batch, threads);
  if (threads <= 1 || leading || omp_get_active_level() > 0 ||
      __atomic_load_n(solo, __ATOMIC_RELAXED) == key) {
    body(regions, batch, nthreads);
    return;
  }
  Team t = {.range = aligned_alloc(64, sizeof(TeamRange) * (size_t)threads)};
  if (!t.range) {                  /* no team: the same chunks on one thread */
    body(regions, batch, 1);
    return;
  }
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, NULL);
  atomic_fetch_add(&regions_opened, 1);
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_thread_num() == 0) {
      leading = &t;
      body(regions, batch, nthreads);
      leading = NULL;
      atomic_store(&t.quit, true);
      team_publish(&t, (t.jobs + 1) * JOB_ONE | JOB_CLOSED);
    } else {
      team_help(&t, omp_get_thread_num());
    }
  }
  if (t.jobs == 0)   /* a hint, so a race between two calls only costs time */
    __atomic_store_n(solo, key, __ATOMIC_RELAXED);
  pthread_cond_destroy(&t.cv);
  pthread_mutex_destroy(&t.mu);
  free(t.range);
}

/* ---- parallel-for --------------------------------------------------------------- */

void rt_parallel_for(RtTask fn, void *ctx, int64_t n, int64_t grain, int32_t nthreads) {
  if (n <= 0)
    return;
  if (grain < 1)
    grain = 1;
  int64_t nchunks = (n - 1) / grain + 1;
  int threads = nthreads > 0 ? nthreads : rt_default_threads();
  if (threads > nchunks)
    threads = (int)nchunks;
  if (threads > 1 && leading) {
    team_run(leading, fn, ctx, n, grain, nchunks, threads);
    return;
  }
  if (threads <= 1 || omp_get_active_level() > 0) {
    for (int64_t k = 0; k < nchunks; k++)
      run_chunk(fn, ctx, n, grain, k);
    return;
  }
  atomic_fetch_add(&regions_opened, 1);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t k = 0; k < nchunks; k++)
    run_chunk(fn, ctx, n, grain, k);
}

int rt_default_threads(void) { return omp_get_max_threads(); }

/* libgomp's idle spin before a thread sleeps, in GOMP_SPINCOUNT's units
 * (a load and a pause: 30 ns on Zen 3, up to 50 on recent Intel cores):
 * 60-100 us, about TEAM_SPIN_NS. Why not sleep at once (passive): the
 * helpers of a graph call made right after the previous one are then
 * still awake, where a futex wake-up at the region's start cost 10-13 us
 * a call, half of the MLP at batch 1 on one thread. Why not libgomp's
 * default (3 ms): on a busy machine the spinning thread takes the time
 * slice the working one needs. */
#define RT_IDLE_SPINCOUNT "2000"

void rt_prefer_passive_wait(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
    return;
  if (setenv("GOMP_SPINCOUNT", RT_IDLE_SPINCOUNT, 1) == 0)
    execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT");   /* exec failed: carry on as started */
}

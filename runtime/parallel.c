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
 * variable, so a long serial kernel does not hold a core busy.
 *
 * On a shared machine a helper may not be running when a job comes: it
 * joins a job only while the leader has not yet seen every chunk claimed,
 * and the leader waits only for helpers that joined (the job word). What
 * a region itself waits for (every helper, at its start and end) cannot
 * be skipped; after a region that came late the next calls run on one
 * thread for a while (team_note_lag). A parallel-for made outside a graph
 * is a graph of one job, so it goes the same way. */
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

/* Longer than a chunk runs: tasks are of at most a few Mflop (tens of
 * us); the leader waiting longer for a helper means the OS set it aside. */
enum { TEAM_CHUNK_NS = 250000 };

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
  int64_t waited;            /* ns the leader waited for joined helpers */
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
  if (word_matches(&t->finished, -1, joined, true))
    return;
  int64_t start = now_ns();
  team_await(t, &t->finished, -1, joined, true);
  int64_t waited = now_ns() - start;
  if (waited > TEAM_CHUNK_NS)      /* a helper set aside, not a chunk's length */
    t->waited += waited;
}

/* ---- a team that comes late ---------------------------------------------------- */

/* A call's lag is what its team cost the leader in waiting: at the
 * region's start libgomp waits for the helpers to be back from the
 * previous region, at its end for every helper to leave, and at each
 * job's end the leader waits for the helpers that joined it (counted
 * beyond TEAM_CHUNK_NS only). Quiet, that is 1-3 us; with the other core
 * busy, 0.1-1 ms a call, a helper's wait for a time slice (LeNet b1 at 2
 * threads: 0.21 ms a call against 0.016), or more if a helper is set
 * aside in a chunk. No OpenMP region can skip those waits, so after a late call
 * the next calls run on one thread for TEAM_BACKOFF_NS, doubled for each
 * late call in a row up to 2^TEAM_BACKOFF_MAX times, and from the second
 * at least TEAM_BACKOFF_LAGS times the lag, so that the late calls that probe a
 * busy machine cost a few percent (a 512^3 sgemm lagged 14 ms of its
 * 15); a call in time resets it. Late: more than TEAM_LATE_NS and more
 * than an eighth of the call. Results do not change: the chunks are the
 * same. Why 50 us: the first call after a stretch on one thread finds
 * its helper asleep, and a futex wake-up on this VM takes 10-50 us; at
 * 10 us such calls came late again and again, quiet. */
enum { TEAM_LATE_NS = 50000, TEAM_BACKOFF_NS = 1000000, TEAM_BACKOFF_MAX = 8, TEAM_BACKOFF_LAGS = 16 };

static atomic_llong solo_until;       /* monotonic ns: calls before it run on one thread */
static atomic_int late_streak;        /* late calls in a row */
static atomic_bool backoff_disabled;  /* rt_team_backoff_test */
static atomic_llong extra_lag;        /* rt_team_backoff_test */

void rt_team_backoff_test(bool enabled, int64_t extra_lag_ns) {
  atomic_store(&backoff_disabled, !enabled);
  atomic_store(&extra_lag, extra_lag_ns);
  atomic_store(&solo_until, 0);
  atomic_store(&late_streak, 0);
}

/* Relaxed: a hint shared by every graph of the process; a race between
 * two calls only costs time. */
static bool team_backing_off(void) {
  return !atomic_load_explicit(&backoff_disabled, memory_order_relaxed) &&
         now_ns() < atomic_load_explicit(&solo_until, memory_order_relaxed);
}

static void team_note_lag(int64_t lag, int64_t call, int64_t now) {
  lag += atomic_load_explicit(&extra_lag, memory_order_relaxed);
  if (lag <= TEAM_LATE_NS || lag * 8 <= call) {
    atomic_store_explicit(&late_streak, 0, memory_order_relaxed);
    return;
  }
  int streak = atomic_fetch_add_explicit(&late_streak, 1, memory_order_relaxed);
  int64_t cap = (int64_t)TEAM_BACKOFF_NS << TEAM_BACKOFF_MAX;
  int64_t backoff = (int64_t)TEAM_BACKOFF_NS << (streak < TEAM_BACKOFF_MAX ? streak : TEAM_BACKOFF_MAX);
  if (streak > 0 && backoff < lag * TEAM_BACKOFF_LAGS)   /* late twice: not a passing hitch */
    backoff = lag * TEAM_BACKOFF_LAGS < cap ? lag * TEAM_BACKOFF_LAGS : cap;
  atomic_store_explicit(&solo_until, now + backoff, memory_order_relaxed);
}

/* ---- a region's team ------------------------------------------------------------ */

/* Thread 0's part: the body's kernels, then the helpers' leave to go. */
static void team_lead(Team *t, RtGraph body, void *regions, int64_t batch, int32_t nthreads) {
  leading = t;
  body(regions, batch, nthreads);
  leading = NULL;
  atomic_store(&t->quit, true);
  team_publish(t, (t->jobs + 1) * JOB_ONE | JOB_CLOSED);
}

/* Runs body on the calling thread, the leader of a team of `threads`
 * (one OpenMP region); returns the jobs it gave the team, or -1 if it
 * ran with no team (nthreads 1 then: the same chunks on one thread). */
static int64_t team_region(RtGraph body, void *regions, int64_t batch, int32_t nthreads, int threads) {
  Team t = {0};
  if (team_backing_off() || !(t.range = aligned_alloc(64, sizeof(TeamRange) * (size_t)threads))) {
    body(regions, batch, 1);
    return -1;
  }
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, NULL);
  atomic_fetch_add(&regions_opened, 1);
  int64_t start = now_ns(), entered = 0, left = 0;
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_thread_num() == 0) {
      entered = now_ns();
      team_lead(&t, body, regions, batch, nthreads);
      left = now_ns();
    } else {
      team_help(&t, omp_get_thread_num());
    }
  }
  int64_t end = now_ns();
  team_note_lag(entered - start + t.waited + end - left, end - start, end);
  pthread_cond_destroy(&t.cv);
  pthread_mutex_destroy(&t.mu);
  free(t.range);
  return t.jobs;
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
  if (team_region(body, regions, batch, nthreads, threads) == 0)
    __atomic_store_n(solo, key, __ATOMIC_RELAXED);   /* a hint, as solo_until */
}

/* ---- parallel-for --------------------------------------------------------------- */

/* A parallel-for made outside a graph: a graph of that one job, so that
 * it takes its chunks as a graph's jobs do and comes to no late helper. */
typedef struct OneJob {
  RtTask fn;
  void *ctx;
  int64_t n, grain;
} OneJob;

static void one_job_body(void *regions, int64_t batch, int32_t nthreads) {
  OneJob *job = regions;
  rt_parallel_for(job->fn, job->ctx, job->n, job->grain, nthreads);
}

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
  OneJob job = {fn, ctx, n, grain};
  team_region(one_job_body, &job, 0, threads, threads);
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

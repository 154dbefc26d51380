/* rt_parallel_for: every index exactly once, chunk boundaries that depend
 * only on (n, grain), inline execution when asked for one thread, for one
 * chunk or from inside a task, and bit-identical chunked reductions at any
 * thread count. rt_run_graph: one region for a body's many parallel-fors
 * (ranges of chunks shared out and stolen, jobs for fewer threads than
 * the team), the same chunks and sums as without it, nested bodies and
 * tasks inline. Jobs by the hundred with late helpers: each chunk once,
 * the same sums. A late team: calls on one thread for a while. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runtime/rt.h"

enum { MAXN = 5000 };

typedef struct {
  int64_t n, grain;
  int hits[MAXN];             /* times each index was visited */
  int64_t chunk_hi[MAXN];     /* by chunk index lo/grain: the hi it got, or -1 */
  int calls;
  int bad_calls;              /* empty or misaligned chunks */
  int in_parallel;            /* calls made inside an OpenMP region */
} Record;

/* Tasks run on worker threads, where a cmocka assert may not longjmp:
 * they count what they see and the test checks the counts. */
static void record_task(void *ctx, int64_t lo, int64_t hi) {
  Record *r = ctx;
  if (lo >= hi || lo % r->grain != 0 || hi > r->n) {
    __atomic_fetch_add(&r->bad_calls, 1, __ATOMIC_RELAXED);
    return;
  }
  r->chunk_hi[lo / r->grain] = hi;
  for (int64_t i = lo; i < hi; i++)
    __atomic_fetch_add(&r->hits[i], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&r->calls, 1, __ATOMIC_RELAXED);
  if (omp_in_parallel())
    __atomic_fetch_add(&r->in_parallel, 1, __ATOMIC_RELAXED);
}

static Record *run(int64_t n, int64_t grain, int threads) {
  Record *r = calloc(1, sizeof *r);
  r->n = n;
  r->grain = grain < 1 ? 1 : grain;
  for (int i = 0; i < MAXN; i++)
    r->chunk_hi[i] = -1;
  rt_parallel_for(record_task, r, n, grain, threads);
  return r;
}

/* Every index once, every chunk once with its own bounds. A bool, not
 * asserts: graph bodies check from inside their OpenMP region. */
static bool covered_once(const Record *r) {
  int64_t n = r->n > 0 ? r->n : 0, chunks = n ? (n - 1) / r->grain + 1 : 0;
  bool ok = r->bad_calls == 0 && r->calls == chunks;
  for (int64_t i = 0; i < MAXN; i++)
    ok &= r->hits[i] == (i < n);
  for (int64_t k = 0; k < chunks; k++) {
    int64_t want = (k + 1) * r->grain < n ? (k + 1) * r->grain : n;
    ok &= r->chunk_hi[k] == want;
  }
  return ok;
}

static void check_cover(const Record *r) {
  assert_true(covered_once(r));
}

static void test_cover(void **state) {
  static const int64_t ns[] = {0, -5, 1, 2, 3, 7, 64, 100, 1000, 4097, MAXN};
  static const int64_t grains[] = {1, 2, 3, 7, 64, 1000, 6000, 0, -3};
  static const int threads[] = {1, 2, 3, 4, 0};
  for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
    for (size_t b = 0; b < sizeof grains / sizeof *grains; b++)
      for (size_t c = 0; c < sizeof threads / sizeof *threads; c++) {
        Record *r = run(ns[a], grains[b], threads[c]);
        check_cover(r);
        free(r);
      }
}

static void test_same_chunks_any_threads(void **state) {
  static const int64_t cases[][2] = {{1000, 7}, {4097, 64}, {5, 10}, {MAXN, 1}, {999, 333}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    Record *one = run(cases[i][0], cases[i][1], 1);
    Record *two = run(cases[i][0], cases[i][1], 2);
    Record *four = run(cases[i][0], cases[i][1], 4);
    assert_memory_equal(one->chunk_hi, two->chunk_hi, sizeof one->chunk_hi);
    assert_memory_equal(one->chunk_hi, four->chunk_hi, sizeof one->chunk_hi);
    free(one), free(two), free(four);
  }
}

static void test_inline_cases(void **state) {
  Record *r = run(100, 10, 1);               /* one thread: no region */
  assert_int_equal(r->in_parallel, 0);
  free(r);
  r = run(100, 100, 4);                      /* one chunk: no region */
  assert_int_equal(r->in_parallel, 0);
  free(r);
  r = run(100, 500, 0);
  assert_int_equal(r->in_parallel, 0);
  free(r);
  r = run(100, 10, 2);                       /* ten chunks on two threads */
  assert_int_equal(r->in_parallel, 10);
  free(r);
}

/* From inside a task, a nested call runs inline on the same thread. */
typedef struct {
  int outer_thread, outer_level, ok;
  int hits[64];
} Inner;

static void inner_task(void *ctx, int64_t lo, int64_t hi) {
  Inner *in = ctx;
  if (omp_get_thread_num() != in->outer_thread || omp_get_level() != in->outer_level)
    in->ok = 0;
  for (int64_t i = lo; i < hi; i++)
    in->hits[i]++;
}

static void outer_task(void *ctx, int64_t lo, int64_t hi) {
  int *failures = ctx;
  for (int64_t k = lo; k < hi; k++) {
    Inner in = {.outer_thread = omp_get_thread_num(), .outer_level = omp_get_level(), .ok = 1};
    rt_parallel_for(inner_task, &in, 64, 3, 4);
    for (int i = 0; i < 64; i++)
      in.ok &= in.hits[i] == 1;
    if (!in.ok)
      __atomic_fetch_add(failures, 1, __ATOMIC_RELAXED);
  }
}

static void test_nested_inline(void **state) {
  int failures = 0;
  rt_parallel_for(outer_task, &failures, 16, 1, 2);
  assert_int_equal(failures, 0);
}

/* A chunked reduction combined in chunk order is bit-identical. */
typedef struct {
  const float *x;
  float partial[64];
  int64_t grain;
  bool delay;                 /* helpers sleep in some chunks */
} Sum;

static void sleep_us(long us) {
  struct timespec t = {0, us * 1000};
  nanosleep(&t, NULL);
}

/* A helper the OS set aside for a while: some chunks run late. */
static void delay_on_helpers(int64_t chunk) {
  if (omp_get_thread_num() != 0 && chunk % 5 == 1)
    sleep_us(30 + chunk % 3 * 40);
}

static void sum_task(void *ctx, int64_t lo, int64_t hi) {
  Sum *s = ctx;
  if (s->delay)
    delay_on_helpers(lo / s->grain);
  float acc = 0;
  for (int64_t i = lo; i < hi; i++)
    acc += s->x[i];
  s->partial[lo / s->grain] = acc;
}

static float chunked_sum_delayed(const float *x, int64_t n, int64_t grain, int threads, bool delay) {
  Sum s = {.x = x, .grain = grain, .delay = delay};
  rt_parallel_for(sum_task, &s, n, grain, threads);
  float total = 0;
  for (int64_t k = 0; k < (n - 1) / grain + 1; k++)
    total += s.partial[k];
  return total;
}

static float chunked_sum(const float *x, int64_t n, int64_t grain, int threads) {
  return chunked_sum_delayed(x, n, grain, threads, false);
}

static void test_deterministic_reduction(void **state) {
  enum { N = 60000 };
  float *x = malloc(N * sizeof *x);
  rt_fill_normal(x, N, 0.0f, 1e3f, 7, 1);
  float one = chunked_sum(x, N, 1000, 1);
  for (int t = 2; t <= 5; t++) {
    float many = chunked_sum(x, N, 1000, t);
    assert_memory_equal(&one, &many, sizeof one);
  }
  free(x);
}

static void test_default_threads(void **state) {
  assert_int_equal(rt_default_threads(), omp_get_max_threads());
  const char *env = getenv("OMP_NUM_THREADS");
  if (env)
    assert_int_equal(rt_default_threads(), atoi(env));
  assert_true(rt_default_threads() >= 1);
}

/* ---- rt_run_graph ----------------------------------------------------------------- */

/* A graph's stand-in: the parallel-fors of cover_cases, each its own
 * Record, at the thread counts the body is given. */
typedef struct {
  Record *rec[16];
  int nrec, leader_thread_ok, nested_runs, inner_failures;
  float sums[5];
  const float *x;
} GraphRun;

static const int64_t graph_cases[][2] = {{1000, 7}, {4097, 64}, {5, 10}, {MAXN, 1}, {999, 333},
                                         {2, 1}, {3, 1}, {64, 1}};

static void nested_body(void *regions, int64_t batch, int32_t nthreads) {
  GraphRun *r = regions;
  r->nested_runs++;
  if (omp_get_thread_num() != 0)
    r->leader_thread_ok = 0;
}

static void graph_body(void *regions, int64_t batch, int32_t nthreads) {
  GraphRun *r = regions;
  r->leader_thread_ok = omp_get_thread_num() == 0;
  for (size_t i = 0; i < sizeof graph_cases / sizeof *graph_cases; i++) {
    Record *rec = calloc(1, sizeof *rec);
    rec->n = graph_cases[i][0], rec->grain = graph_cases[i][1];
    for (int j = 0; j < MAXN; j++)
      rec->chunk_hi[j] = -1;
    /* every other job asks for fewer threads than the team has */
    rt_parallel_for(record_task, rec, rec->n, rec->grain, i % 2 ? 2 : nthreads);
    r->rec[r->nrec++] = rec;
  }
  if (omp_in_parallel())   /* a team: its tasks' own calls run inline */
    rt_parallel_for(outer_task, &r->inner_failures, 16, 1, nthreads);
  for (int t = 1; t <= 5; t++)
    r->sums[t - 1] = chunked_sum(r->x, 60000, 1000, t);
  int64_t solo = 0;
  rt_run_graph(nested_body, r, batch, nthreads, &solo);   /* runs directly */
}

static void test_graph_team(void **state) {
  float *x = malloc(60000 * sizeof *x);
  rt_fill_normal(x, 60000, 0.0f, 1e3f, 7, 1);
  float one = chunked_sum(x, 60000, 1000, 1);
  static const int threads[] = {1, 2, 3, 4, 0};
  for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
    GraphRun r = {.x = x};
    int64_t solo = 0;
    rt_run_graph(graph_body, &r, 1, threads[t], &solo);
    assert_true(r.leader_thread_ok);
    assert_int_equal(r.nested_runs, 1);
    assert_int_equal(r.inner_failures, 0);
    assert_int_equal(r.nrec, (int)(sizeof graph_cases / sizeof *graph_cases));
    for (int i = 0; i < r.nrec; i++) {
      check_cover(r.rec[i]);
      free(r.rec[i]);
    }
    for (int i = 0; i < 5; i++)
      assert_memory_equal(&r.sums[i], &one, sizeof one);
  }
  free(x);
}

/* Five parallel-fors of ten chunks each: five regions on their own, one
 * in a graph's team, none at one thread. */
static void five_fors(void *regions, int64_t batch, int32_t nthreads) {
  for (int i = 0; i < 5; i++)
    free(run(100, 10, nthreads));
}

static void test_graph_one_region(void **state) {
  int64_t solo = 0, before = rt_parallel_regions();
  five_fors(NULL, 1, 2);
  assert_int_equal(rt_parallel_regions() - before, 5);
  for (int call = 0; call < 3; call++) {
    before = rt_parallel_regions();
    rt_run_graph(five_fors, NULL, 1, 2, &solo);
    assert_int_equal(rt_parallel_regions() - before, 1);
  }
  before = rt_parallel_regions();
  rt_run_graph(five_fors, NULL, 1, 1, &solo);
  assert_int_equal(rt_parallel_regions() - before, 0);
}

/* A body of one-chunk parallel-fors at a small batch, ten at a larger:
 * the first call at batch 1 learns that it needs no team, later ones run
 * directly; batch 8 or another thread count still gets its team. */
static void small_at_batch_1(void *regions, int64_t batch, int32_t nthreads) {
  free(run(batch * 10, 10, nthreads));
}

static void test_graph_solo(void **state) {
  int64_t solo = 0;
  static const struct { int64_t batch; int threads, regions; } calls[] = {
      {1, 2, 1}, {1, 2, 0}, {1, 2, 0}, {8, 2, 1}, {8, 2, 1}, {1, 3, 1}, {1, 3, 0}, {1, 2, 1}};
  for (size_t i = 0; i < sizeof calls / sizeof *calls; i++) {
    int64_t before = rt_parallel_regions();
    rt_run_graph(small_at_batch_1, NULL, calls[i].batch, calls[i].threads, &solo);
    assert_int_equal(rt_parallel_regions() - before, calls[i].regions);
  }
}


/* ---- many jobs, helpers late ----------------------------------------------------- */

/* Jobs of every size, some for fewer threads than the team, chunks that
 * make helpers late, serial stretches long enough for helpers to fall
 * asleep, so that helpers join jobs late, find them closed, skip some:
 * every chunk of every job must still run exactly once, with that job's
 * task and context, and sums come out as on one thread. */
typedef struct {
  int failures;               /* jobs not covered exactly once */
  int sum_failures;           /* sums unlike one thread's */
  const float *x;
  float one;                  /* the one-thread sum */
} Stress;

enum { STRESS_JOBS = 600 };

static void delayed_record_task(void *ctx, int64_t lo, int64_t hi) {
  Record *r = ctx;
  delay_on_helpers(lo / r->grain);
  record_task(ctx, lo, hi);
}

static void stress_job(Stress *st, int j, int32_t nthreads) {
  Record *rec = calloc(1, sizeof *rec);
  rec->n = 1 + j * 37 % 300, rec->grain = 1 + j % 7;
  RtTask task = j % 3 ? record_task : delayed_record_task;   /* tasks alternate */
  rt_parallel_for(task, rec, rec->n, rec->grain, j % 4 ? nthreads : 2);
  st->failures += !covered_once(rec);
  free(rec);
  if (j % 50 == 0)   /* a serial kernel: the helpers go to sleep */
    sleep_us(120);
  if (j % 60 == 0)
    st->sum_failures += chunked_sum_delayed(st->x, 60000, 1000, nthreads, true) != st->one;
}

static void stress_body(void *regions, int64_t batch, int32_t nthreads) {
  for (int j = 0; j < STRESS_JOBS; j++)
    stress_job(regions, j, nthreads);
}

static void test_many_jobs_late_helpers(void **state) {
  float *x = malloc(60000 * sizeof *x);
  rt_fill_normal(x, 60000, 0.0f, 1e3f, 7, 1);
  for (int threads = 2; threads <= 4; threads++) {
    Stress st = {.x = x, .one = chunked_sum(x, 60000, 1000, 1)};
    int64_t solo = 0, before = rt_parallel_regions();
    rt_run_graph(stress_body, &st, 1, threads, &solo);       /* one team */
    assert_int_equal(rt_parallel_regions() - before, 1);
    for (int j = 0; j < STRESS_JOBS / 10; j++)               /* a team each */
      stress_job(&st, j, threads);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.sum_failures, 0);
  }
  free(x);
}

/* ---- backoff from a late team ---------------------------------------------------- */

typedef struct {
  int covered, in_parallel;
} Probe;

static void probe_body(void *regions, int64_t batch, int32_t nthreads) {
  Probe *p = regions;
  Record *r = run(100, 10, nthreads);
  p->covered = covered_once(r);
  p->in_parallel = r->in_parallel;
  free(r);
}

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Calls that return how many regions they opened. */
static int probe_call(Probe *p) {
  int64_t solo = 0, before = rt_parallel_regions();
  rt_run_graph(probe_body, p, 1, 2, &solo);
  assert_true(p->covered);
  return (int)(rt_parallel_regions() - before);
}

/* A call whose team comes late (1 ms of lag made up by the hook) sends
 * the next calls to one thread, with the same chunks, for 1 ms (at most
 * 256 ms, the longest backoff); after it, or once reset, the team is back. */
static void test_backoff(void **state) {
  Probe p;
  rt_team_backoff_test(true, 1000000);
  assert_int_equal(probe_call(&p), 1);                    /* late */
  double late = seconds();
  int regions = probe_call(&p);
  if (seconds() - late < 0.001) {   /* within the backoff: no region, no helper */
    assert_int_equal(regions, 0);
    assert_int_equal(p.in_parallel, 0);
  }
  sleep_us(300000);   /* past the longest backoff, whatever the real lag */
  assert_int_equal(probe_call(&p), 1);                    /* late again */
  rt_team_backoff_test(true, 0);
  assert_int_equal(probe_call(&p), 1);                    /* reset */
  assert_int_equal(p.in_parallel, 10);
  rt_team_backoff_test(false, 0);
  for (int call = 0; call < 20; call++)
    assert_int_equal(probe_call(&p), 1);                  /* off: always a team */
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cover),
    cmocka_unit_test(test_same_chunks_any_threads),
    cmocka_unit_test(test_inline_cases),
    cmocka_unit_test(test_nested_inline),
    cmocka_unit_test(test_deterministic_reduction),
    cmocka_unit_test(test_default_threads),
    cmocka_unit_test(test_graph_team),
    cmocka_unit_test(test_graph_one_region),
    cmocka_unit_test(test_graph_solo),
    cmocka_unit_test(test_many_jobs_late_helpers),
    cmocka_unit_test(test_backoff),
  };
  /* Tests that count regions must not see a team backing off because
   * the machine is busy; test_backoff turns it on for itself. */
  rt_team_backoff_test(false, 0);
  return cmocka_run_group_tests(tests, NULL, NULL);
}

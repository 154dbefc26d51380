/* The reference sgemm of kiln's benchmark: cblas_sgemm of one BLAS
 * library, chosen when compiled (-DBACKEND_OPENBLAS or -DBACKEND_BLIS: both
 * export the same cblas symbols, so each gets its own binary), timed as
 * bench/gemm/bench_gemm.c times kiln's generated GEMM so rows compare.
 *
 *   gemm_ref [--cputime] THREADS M,N,K[,tA][,tB] ...
 *
 * C[M,N] = op(A) op(B), row-major; tA/tB: the operand is stored transposed
 * (A as [K, M], B as [N, K]), the shapes of backward passes and of y = x W^T.
 * Each sample repeats the call until it lasts >= 5 ms; 3 warm-up samples,
 * then 21 (fewer when a shape would take more than 10 s); median, best and
 * worst GFLOP/s (2*M*N*K per call). Two elements of C are checked against
 * a sum in double. Output: a JSON object per shape on stdout, a line on
 * stderr. --cputime times the calling thread's CPU time instead of the wall
 * clock, as bench_gemm --cputime does: with one thread on a busy machine
 * it leaves out the time the thread waits to be scheduled. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include "bench/bench_clock.h"

#if defined(BACKEND_OPENBLAS)
#define BACKEND "openblas"
extern void openblas_set_num_threads(int);
extern char *openblas_get_corename(void);
static void set_threads(int n) { openblas_set_num_threads(n); }
static const char *kernel(void) { return openblas_get_corename(); }
#elif defined(BACKEND_BLIS)
#include <blis.h>
#define BACKEND "blis"
static void set_threads(int n) { bli_thread_set_num_threads(n); }
static const char *kernel(void) { return bli_arch_string(bli_arch_query_id()); }
#else
#error "define BACKEND_OPENBLAS or BACKEND_BLIS"
#endif

enum { SAMPLES = 21, WARMUP = 3 };

typedef struct Gemm {
  long M, N, K;
  int ta, tb;
  float *A, *B, *C;
} Gemm;

static clockid_t timer = CLOCK_MONOTONIC;

static double now(void) {
  return bench_clock(timer);
}

static void call(const Gemm *g) {
  cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, (int)g->M,
              (int)g->N, (int)g->K, 1.0f, g->A, (int)(g->ta ? g->M : g->K), g->B, (int)(g->tb ? g->K : g->N),
              0.0f, g->C, (int)g->N);
}

static float *random_floats(long n) {
  float *p = aligned_alloc(64, ((size_t)n * 4 + 63) / 64 * 64);
  for (long i = 0; i < n; i++)
    p[i] = (float)rand() / RAND_MAX - 0.5f;
  return p;
}

/* C[i,j] in double, from the operands as stored. */
static double reference(const Gemm *g, long i, long j) {
  double s = 0;
  for (long k = 0; k < g->K; k++)
    s += (double)(g->ta ? g->A[k * g->M + i] : g->A[i * g->K + k]) *
         (g->tb ? g->B[j * g->K + k] : g->B[k * g->N + j]);
  return s;
}

static int check(const Gemm *g) {
  double r0 = reference(g, 0, 0), r1 = reference(g, g->M - 1, g->N - 1);
  return fabs(r0 - g->C[0]) < 1e-3 * (1 + fabs(r0)) && fabs(r1 - g->C[g->M * g->N - 1]) < 1e-3 * (1 + fabs(r1));
}

/* Sorted seconds per call into v; returns the sample count. */
static int time_calls(const Gemm *g, double *v) {
  call(g);
  double t0 = now();
  call(g);
  double one = fmax(now() - t0, 1e-9);
  long reps = (long)(0.005 / one) + 1;
  int ns = SAMPLES;
  if (one * reps * (ns + WARMUP) > 10.0)
    ns = (int)fmax(3, 10.0 / (one * reps) - WARMUP);
  for (int s = 0; s < ns + WARMUP; s++) {
    double a = now();
    for (long r = 0; r < reps; r++)
      call(g);
    if (s >= WARMUP)
      v[s - WARMUP] = (now() - a) / reps;
  }
  qsort(v, (size_t)ns, sizeof *v, bench_cmp_double);
  return ns;
}

static void run_shape(const char *spec, Gemm g, int threads) {
  srand(1);
  g.A = random_floats(g.M * g.K);
  g.B = random_floats(g.K * g.N);
  g.C = random_floats(g.M * g.N);
  double v[SAMPLES];
  int ns = time_calls(&g, v);
  double flop = 2.0 * g.M * g.N * g.K, med = ns % 2 ? v[ns / 2] : 0.5 * (v[ns / 2 - 1] + v[ns / 2]);
  int ok = check(&g);
  printf("{\"kind\":\"gemm\",\"framework\":\"%s\",\"shape\":\"%s\",\"M\":%ld,\"N\":%ld,\"K\":%ld,"
         "\"transA\":%d,\"transB\":%d,\"threads\":%d,\"cputime\":%d,\"samples\":%d,\"ms_median\":%.5f,"
         "\"gflops_median\":%.2f,\"gflops_best\":%.2f,\"gflops_worst\":%.2f,\"check\":\"%s\"}\n",
         BACKEND, spec, g.M, g.N, g.K, g.ta, g.tb, threads, timer != CLOCK_MONOTONIC, ns, med * 1e3, flop / med * 1e-9, flop / v[0] * 1e-9,
         flop / v[ns - 1] * 1e-9, ok ? "ok" : "FAIL");
  fprintf(stderr, "%-9s %-22s thr=%d n=%2d  GFLOP/s median %7.2f (best %7.2f)%s\n", BACKEND, spec, threads, ns,
          flop / med * 1e-9, flop / v[0] * 1e-9, ok ? "" : "  CHECK FAILED");
  fflush(stdout);
  free(g.A);
  free(g.B);
  free(g.C);
}

static int parse_shape(const char *s, Gemm *g) {
  int used = 0;
  *g = (Gemm){0};
  if (sscanf(s, "%ld,%ld,%ld%n", &g->M, &g->N, &g->K, &used) != 3 || g->M < 1 || g->N < 1 || g->K < 1)
    return -1;
  g->ta = strstr(s + used, "tA") != NULL;
  g->tb = strstr(s + used, "tB") != NULL;
  return 0;
}

int main(int argc, char **argv) {
  int a = 1;
  if (argc > 1 && !strcmp(argv[1], "--cputime")) {
    timer = CLOCK_THREAD_CPUTIME_ID;
    a++;
  }
  int threads = argc > a ? atoi(argv[a]) : 0;
  if (argc < a + 2 || threads < 1) {
    fprintf(stderr, "usage: %s [--cputime] THREADS M,N,K[,tA][,tB] ...\n", argv[0]);
    return 2;
  }
  set_threads(threads);
  fprintf(stderr, "# %s kernel %s\n", BACKEND, kernel());
  for (int i = a + 1; i < argc; i++) {
    Gemm g;
    if (parse_shape(argv[i], &g)) {
      fprintf(stderr, "%s: bad shape %s\n", argv[0], argv[i]);
      return 2;
    }
    run_shape(argv[i], g, threads);
  }
  return 0;
}

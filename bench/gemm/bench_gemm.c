/* kiln's generated sgemm beside OpenBLAS's cblas_sgemm, in one process.
 *
 *   bench_gemm [--json] [--cputime] [--threads 1,2] [SHAPE ...]
 *
 * SHAPE is a name from the list below or M,N,K[,tA][,tB] (e.g. 784,256,128,tA).
 * For each shape and thread count it times kiln's function, then OpenBLAS:
 * each sample repeats the call until it lasts >= 5 ms, 3 warm-up samples,
 * then up to 21 samples (fewer when a case would exceed 10 s), and reports
 * the median GFLOP/s (2*M*N*K per call), the ratio to OpenBLAS, the
 * fraction of the single-core FMA peak (KILN_PEAK_GFLOPS per core, default
 * 102.6, the measured peak of the reference machine), and the best samples'
 * GFLOP/s (closest to an idle machine's). The two results are
 * compared as a check. With --json, one JSON object per line as well.
 * --cputime times the calling thread's CPU time instead of the wall clock:
 * on a busy machine it hides the time the thread waits to be scheduled,
 * which makes 1-thread numbers usable (it means nothing for more threads). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <cblas.h>
#include "codegen/codegen.h"
#include "bench/bench_clock.h"

extern void openblas_set_num_threads(int);

typedef void (*GemmFn)(int64_t batch, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       int64_t sa, const float *B, int64_t ldb, int64_t sb, float *C, int64_t ldc,
                       int64_t sc, void **epi, void *work, int32_t nthreads);

typedef struct Shape {
  const char *name;
  long M, N, K;
  int ta, tb;
} Shape;

static const Shape default_shapes[] = {
  {"sq256", 256, 256, 256, 0, 0},
  {"sq512", 512, 512, 512, 0, 0},
  {"sq1024", 1024, 1024, 1024, 0, 0},
  {"sq2048", 2048, 2048, 2048, 0, 0},
  {"mlp_fc1_b128", 128, 256, 784, 0, 0},
  {"mlp_fc1_b128_xWT", 128, 256, 784, 0, 1},   /* y = x W^T, W [256, 784] as stored */
  {"fc_b64_4096x1024", 64, 1024, 4096, 0, 0},
  {"mlp_fc1_dW_b128", 784, 256, 128, 1, 0},    /* dW = X^T dY */
  {"lstm_gates_b32", 32, 512, 192, 0, 0},
  {"conv3x3_c32_32x32_b32", 32768, 32, 288, 0, 0},
  {"attn_qkv_b16_s64", 1024, 384, 128, 0, 0},
};

static GemmFn kiln_fn[2][2];   /* [ta][tb] */
static int json;
static clockid_t timer = CLOCK_MONOTONIC;

static double now(void) {
  return bench_clock(timer);
}

static int compile_kiln(void) {
  char err[1024];
  CgJit *jit;
  CgCtx c;
  if (cg_jit_new(&jit, err, sizeof err) || cg_ctx_init_jit(&c, "bench_gemm", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  double t0 = now();
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      CgGemmSpec s = {RT_F32, ta, tb, false, NULL};
      char name[32];
      snprintf(name, sizeof name, "sgemm_%d%d", ta, tb);
      cg_gemm_define(&c, &s, name);
    }
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  cg_ctx_dispose(&c);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      char name[32];
      snprintf(name, sizeof name, "sgemm_%d%d", ta, tb);
      kiln_fn[ta][tb] = (GemmFn)cg_jit_lookup(jit, name);
    }
  fprintf(stderr, "# compiled 4 kiln sgemm variants in %.0f ms\n", (now() - t0) * 1e3);
  return 0;   /* the JIT lives as long as the process */
}

typedef struct Operands {
  const Shape *sh;
  long lda, ldb;
  float *A, *B, *C;
  void *work;
  int threads;
} Operands;

static void call_kiln(Operands *o) {
  const Shape *s = o->sh;
  kiln_fn[s->ta][s->tb](1, s->M, s->N, s->K, o->A, o->lda, 0, o->B, o->ldb, 0, o->C, s->N, 0, NULL, o->work,
                        o->threads);
}

static void call_blas(Operands *o) {
  const Shape *s = o->sh;
  cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)s->M,
              (int)s->N, (int)s->K, 1.0f, o->A, (int)o->lda, o->B, (int)o->ldb, 0.0f, o->C, (int)s->N);
}

/* Median seconds per call; *best gets the fastest sample. */
static double time_calls(void (*f)(Operands *), Operands *o, int *nsamples, double *best) {
  f(o);
  double t0 = now();
  f(o);
  double one = fmax(now() - t0, 1e-9);
  long reps = (long)(0.005 / one) + 1;
  int ns = 21;
  if (one * reps * (ns + 3) > 10.0)
    ns = (int)fmax(3, 10.0 / (one * reps) - 3);
  double v[21];
  for (int s = 0; s < ns + 3; s++) {
    double a = now();
    for (long r = 0; r < reps; r++)
      f(o);
    if (s >= 3)
      v[s - 3] = (now() - a) / reps;
  }
  qsort(v, ns, sizeof *v, bench_cmp_double);
  *nsamples = ns;
  *best = v[0];
  return ns % 2 ? v[ns / 2] : 0.5 * (v[ns / 2 - 1] + v[ns / 2]);
}

/* 2 MiB aligned and backed by transparent huge pages where the kernel
 * allows (madvise mode): with 4 KiB pages the physical placement of the
 * packed blocks changes from run to run and with it the L2 conflicts,
 * which made the same binary vary by 30%. */
static void *alloc_big(size_t bytes) {
  size_t huge = (size_t)2 << 20;
  bytes = (bytes + huge - 1) / huge * huge;
  void *p = aligned_alloc(huge, bytes);
  madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

static float *random_floats(long n, unsigned seed) {
  float *p = alloc_big((size_t)n * 4);
  srand(seed);
  for (long i = 0; i < n; i++)
    p[i] = (float)rand() / RAND_MAX - 0.5f;
  return p;
}

static void run_shape(const Shape *s, int threads, double peak) {
  Operands o = {s, s->ta ? s->M : s->K, s->tb ? s->K : s->N, NULL, NULL, NULL, NULL, threads};
  o.A = random_floats(s->M * s->K, 1);
  o.B = random_floats(s->K * s->N, 2);
  o.C = random_floats(s->M * s->N, 3);
  size_t wb = (size_t)cg_gemm_work_bytes(RT_F32, s->M, s->N, s->K, threads);
  o.work = alloc_big(wb);
  memset(o.work, 0, wb);
  float *mine = malloc(s->M * s->N * 4);
  openblas_set_num_threads(threads);

  int ns_k, ns_b;
  double bk, bb, tk = time_calls(call_kiln, &o, &ns_k, &bk);
  memcpy(mine, o.C, s->M * s->N * 4);
  usleep(100000);   /* let OpenMP's spinning threads go idle before OpenBLAS runs */
  double tb = time_calls(call_blas, &o, &ns_b, &bb);
  usleep(100000);
  double maxerr = 0, maxref = 0;
  for (long i = 0; i < s->M * s->N; i++) {
    maxerr = fmax(maxerr, fabs(mine[i] - o.C[i]));
    maxref = fmax(maxref, fabs(o.C[i]));
  }
  double rel = maxerr / fmax(maxref, 1e-30), flop = 2.0 * s->M * s->N * s->K;
  double gk = flop / tk * 1e-9, gb = flop / tb * 1e-9;
  printf("%-24s %3s %3d %9.1f %9.1f %7.2f %7.1f%%  %9.1f %9.1f  %s\n", s->name,
         s->ta ? (s->tb ? "TT" : "TN") : (s->tb ? "NT" : "NN"), threads, gk, gb, gk / gb, 100 * gk / (peak * threads),
         flop / bk * 1e-9, flop / bb * 1e-9, rel < 1e-4 ? "ok" : "MISMATCH");
  if (json)
    printf("{\"bench\":\"sgemm\",\"shape\":\"%s\",\"M\":%ld,\"N\":%ld,\"K\":%ld,\"transA\":%d,\"transB\":%d,"
           "\"threads\":%d,\"kiln_gflops_median\":%.2f,\"openblas_gflops_median\":%.2f,\"samples\":[%d,%d],"
           "\"max_rel_diff\":%.3g}\n",
           s->name, s->M, s->N, s->K, s->ta, s->tb, threads, gk, gb, ns_k, ns_b, rel);
  fflush(stdout);
  free(o.A);
  free(o.B);
  free(o.C);
  free(o.work);
  free(mine);
}

static int parse_shape(const char *arg, Shape *out) {
  for (size_t i = 0; i < sizeof default_shapes / sizeof *default_shapes; i++)
    if (!strcmp(arg, default_shapes[i].name)) {
      *out = default_shapes[i];
      return 0;
    }
  long M, N, K;
  int used = 0;
  if (sscanf(arg, "%ld,%ld,%ld%n", &M, &N, &K, &used) != 3 || M < 1 || N < 1 || K < 1)
    return -1;
  *out = (Shape){arg, M, N, K, strstr(arg + used, "tA") != NULL, strstr(arg + used, "tB") != NULL};
  return 0;
}

int main(int argc, char **argv) {
  int threads[8] = {1, 2}, nthreads = 2;
  Shape shapes[64];
  int nshapes = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = 1;
    } else if (!strcmp(argv[i], "--cputime")) {
      timer = CLOCK_THREAD_CPUTIME_ID;
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      nthreads = 0;
      for (char *p = strtok(argv[++i], ","); p && nthreads < 8; p = strtok(NULL, ","))
        threads[nthreads++] = atoi(p);
    } else if (nshapes < 64 && parse_shape(argv[i], &shapes[nshapes]) == 0) {
      nshapes++;
    } else {
      fprintf(stderr, "usage: %s [--json] [--cputime] [--threads 1,2] [NAME | M,N,K[,tA][,tB] ...]\n", argv[0]);
      return 2;
    }
  }
  if (!nshapes)
    for (size_t i = 0; i < sizeof default_shapes / sizeof *default_shapes; i++)
      shapes[nshapes++] = default_shapes[i];
  double peak = getenv("KILN_PEAK_GFLOPS") ? atof(getenv("KILN_PEAK_GFLOPS")) : 102.6;
  if (compile_kiln())
    return 1;
  printf("%-24s %3s %3s %9s %9s %7s %8s  %9s %9s\n", "shape", "op", "thr", "kiln", "openblas", "ratio",
         "of peak", "kiln-best", "blas-best");
  for (int t = 0; t < nthreads; t++)
    for (int s = 0; s < nshapes; s++)
      run_shape(&shapes[s], threads[t], peak);
  return 0;
}

/* kiln's generated sgemm beside OpenBLAS's and BLIS's, in one process.
 *
 *   bench_gemm [--json] [--cputime] [--threads 1,2] [--only kiln,openblas,blis] [--perfmap] [SHAPE ...]
 *
 * SHAPE is a name from the list below or M,N,K[,tA][,tB] (e.g. 784,256,128,tA).
 * For each shape and thread count the libraries are timed in turns, one
 * sample of each per round, so that a change of the machine's load hits
 * them alike: a sample repeats the call until it lasts >= 5 ms; 3 warm-up
 * rounds, then up to 21 (fewer when a case would exceed 10 s). It reports
 * the median GFLOP/s (2*M*N*K per call), kiln's ratio to the better
 * library, the fraction of the FMA peak (KILN_PEAK_GFLOPS per core, default
 * 102.6, the measured peak of the reference machine), and the best
 * samples' GFLOP/s (closest to an idle machine's). Results are compared as
 * a check. With --json, one JSON object per line as well.
 * --cputime times the calling thread's CPU time instead of the wall clock:
 * on a busy machine it hides the time the thread waits to be scheduled,
 * which makes 1-thread numbers usable (it means nothing for more threads).
 * --perfmap writes perf's map of the JIT's functions (perf-PID.map in the
 * temporary directory), parts included, so `perf record -e cpu-clock`
 * attributes kiln's samples to micro, pack_a, pack_b, tile, ... */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <cblas.h>
#include "codegen/codegen.h"
#ifdef HAVE_BLIS
#include "bench/gemm/blis_call.h"
#endif

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
  {"mlp_fc1_dX_b128", 128, 784, 256, 0, 0},    /* dX = dY W */
  {"lstm_gates_b32", 32, 512, 192, 0, 0},
  {"conv3x3_c32_32x32_b32", 32768, 32, 288, 0, 0},
  {"conv3x3_c32_w_b1", 32, 1024, 288, 0, 0},   /* W [32, 288] x col [288, 1024]: one image */
  {"lenet_c2_b64", 16, 100, 150, 0, 0},        /* 5x5 conv 6 -> 16 on 10x10, per image */
  {"attn_qkv_b16_s64", 1024, 384, 128, 0, 0},
};

/* [kind][ta][tb]: kind 0 the GEMM, 1 the GEMV that a model's call site
 * takes instead when M <= CG_GEMV_MAX_M (cg_call_matmul), so a batch-1
 * shape here times the code a batch-1 model runs. */
static GemmFn kiln_fn[2][2][2];
static int json;
static clockid_t timer = CLOCK_MONOTONIC;

static double now(void) {
  struct timespec t;
  clock_gettime(timer, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void variant_name(char *name, size_t n, int ta, int tb) { snprintf(name, n, "sgemm_%d%d", ta, tb); }
static void gemv_name(char *name, size_t n, int ta, int tb) { snprintf(name, n, "sgemv_%d%d", ta, tb); }

/* Makes the parts of every variant external, so that their addresses can
 * be looked up for the perf map. */
static const char *const parts[] = {"micro", "pack_a", "pack_b", "tile", "task", "bpack"};
#define NPARTS (sizeof parts / sizeof *parts)

static void expose_parts(CgCtx *c) {
  for (int v = 0; v < 4; v++)
    for (size_t i = 0; i < NPARTS; i++) {
      char name[64];
      variant_name(name, sizeof name, v / 2, v % 2);
      snprintf(name + strlen(name), sizeof name - strlen(name), ".%s", parts[i]);
      LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
      if (fn)
        LLVMSetLinkage(fn, LLVMExternalLinkage);
    }
}

typedef struct Sym {
  uintptr_t addr;
  char name[64];
} Sym;

static int cmp_sym(const void *a, const void *b) {
  uintptr_t x = ((const Sym *)a)->addr, y = ((const Sym *)b)->addr;
  return (x > y) - (x < y);
}

/* perf's map: "START SIZE NAME" per function, sizes up to the next one. */
static void write_perf_map(CgJit *jit) {
  Sym syms[4 * (NPARTS + 1)];
  int n = 0;
  for (int v = 0; v < 4; v++)
    for (size_t i = 0; i <= NPARTS; i++) {
      Sym *s = &syms[n];
      variant_name(s->name, sizeof s->name, v / 2, v % 2);
      if (i < NPARTS)
        snprintf(s->name + strlen(s->name), sizeof s->name - strlen(s->name), ".%s", parts[i]);
      s->addr = (uintptr_t)cg_jit_lookup(jit, s->name);
      n += s->addr != 0;
    }
  qsort(syms, n, sizeof *syms, cmp_sym);
  char path[256];
  snprintf(path, sizeof path, "%s/perf-%d.map", P_tmpdir, (int)getpid());
  FILE *f = fopen(path, "w");
  if (!f)
    return;
  for (int i = 0; i < n; i++)
    fprintf(f, "%lx %lx %s\n", (unsigned long)syms[i].addr,
            (unsigned long)(i + 1 < n ? syms[i + 1].addr - syms[i].addr : 4096), syms[i].name);
  fclose(f);
  fprintf(stderr, "# perf map: %s\n", path);
}

static int compile_kiln(int perfmap) {
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
      variant_name(name, sizeof name, ta, tb);
      cg_gemm_define(&c, &s, name);
      gemv_name(name, sizeof name, ta, tb);
      cg_gemv_define(&c, &s, name);
    }
  if (perfmap)
    expose_parts(&c);
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  cg_ctx_dispose(&c);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      char name[32];
      variant_name(name, sizeof name, ta, tb);
      kiln_fn[0][ta][tb] = (GemmFn)cg_jit_lookup(jit, name);
      gemv_name(name, sizeof name, ta, tb);
      kiln_fn[1][ta][tb] = (GemmFn)cg_jit_lookup(jit, name);
    }
  fprintf(stderr, "# compiled 4 kiln sgemm and 4 sgemv variants in %.0f ms\n", (now() - t0) * 1e3);
  if (perfmap)
    write_perf_map(jit);
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
  kiln_fn[s->M <= CG_GEMV_MAX_M][s->ta][s->tb](1, s->M, s->N, s->K, o->A, o->lda, 0, o->B, o->ldb, 0, o->C, s->N, 0, NULL, o->work,
                        o->threads);
}

static void call_openblas(Operands *o) {
  const Shape *s = o->sh;
  cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)s->M,
              (int)s->N, (int)s->K, 1.0f, o->A, (int)o->lda, o->B, (int)o->ldb, 0.0f, o->C, (int)s->N);
}

#ifdef HAVE_BLIS
static void call_blis(Operands *o) {
  const Shape *s = o->sh;
  bench_blis_sgemm(s->ta, s->tb, s->M, s->N, s->K, o->A, o->lda, o->B, o->ldb, o->C, s->N, o->threads);
}
#endif

typedef struct Lib {
  const char *name;
  void (*call)(Operands *);
  int on;                    /* selected by --only (all by default) */
} Lib;

static Lib libs[] = {
  {"kiln", call_kiln, 1},
  {"openblas", call_openblas, 1},
#ifdef HAVE_BLIS
  {"blis", call_blis, 1},
#endif
};
enum { NLIBS = sizeof libs / sizeof *libs, MAX_SAMPLES = 21, WARMUP = 3 };

/* One library's timing of a shape: the median and best seconds per call. */
typedef struct Timing {
  double median, best;
  long reps;
  float *result;             /* its C, to compare */
} Timing;

static double time_reps(Lib *l, Operands *o, long reps) {
  double a = now();
  for (long r = 0; r < reps; r++)
    l->call(o);
  return (now() - a) / reps;
}

/* Times the selected libraries in rounds of one sample each. */
static int time_all(Operands *o, Timing *t) {
  double v[NLIBS][MAX_SAMPLES + WARMUP], round = 0;
  size_t cbytes = (size_t)o->sh->M * o->sh->N * 4;
  for (int i = 0; i < NLIBS; i++) {
    if (!libs[i].on)
      continue;
    libs[i].call(o);
    double one = fmax(time_reps(&libs[i], o, 1), 1e-9);
    t[i].reps = (long)(0.005 / one) + 1;
    round += one * t[i].reps;
    t[i].result = malloc(cbytes);
    memcpy(t[i].result, o->C, cbytes);
  }
  int ns = MAX_SAMPLES;
  if (round * (ns + WARMUP) > 10.0)
    ns = (int)fmax(3, 10.0 / round - WARMUP);
  for (int s = 0; s < ns + WARMUP; s++)
    for (int i = 0; i < NLIBS; i++)
      if (libs[i].on) {
        v[i][s] = time_reps(&libs[i], o, t[i].reps);
        usleep(2000);   /* OpenMP's and OpenBLAS's spinning threads go idle between libraries */
      }
  for (int i = 0; i < NLIBS; i++) {
    if (!libs[i].on)
      continue;
    double *x = v[i] + WARMUP;
    qsort(x, ns, sizeof *x, cmp_double);
    t[i].best = x[0];
    t[i].median = ns % 2 ? x[ns / 2] : 0.5 * (x[ns / 2 - 1] + x[ns / 2]);
  }
  return ns;
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

/* The largest difference between the first selected library's C and the others'. */
static double max_rel_diff(Timing *t, long n) {
  float *ref = NULL;
  double maxerr = 0, maxref = 0;
  for (int i = 0; i < NLIBS; i++) {
    if (!t[i].result)
      continue;
    if (!ref)
      ref = t[i].result;
    for (long j = 0; j < n; j++) {
      maxerr = fmax(maxerr, fabs(t[i].result[j] - ref[j]));
      maxref = fmax(maxref, fabs(ref[j]));
    }
  }
  return maxerr / fmax(maxref, 1e-30);
}

static void print_row(const Shape *s, int threads, double peak, Timing *t, double rel, int ns) {
  double flop = 2.0 * s->M * s->N * s->K, gf[NLIBS], best_lib = 0;
  printf("%-24s %3s %3d", s->name, s->ta ? (s->tb ? "TT" : "TN") : (s->tb ? "NT" : "NN"), threads);
  for (int i = 0; i < NLIBS; i++) {
    gf[i] = libs[i].on ? flop / t[i].median * 1e-9 : NAN;
    if (i > 0 && libs[i].on)
      best_lib = fmax(best_lib, gf[i]);
    printf(" %9.1f", gf[i]);
  }
  printf(" %7.2f %7.1f%%", gf[0] / best_lib, 100 * gf[0] / (peak * threads));
  for (int i = 0; i < NLIBS; i++)
    printf(" %9.1f", libs[i].on ? flop / t[i].best * 1e-9 : NAN);
  printf("  %s\n", rel < 1e-4 ? "ok" : "MISMATCH");
  if (!json)
    return;
  printf("{\"bench\":\"sgemm\",\"shape\":\"%s\",\"M\":%ld,\"N\":%ld,\"K\":%ld,\"transA\":%d,\"transB\":%d,"
         "\"threads\":%d,\"samples\":%d,\"max_rel_diff\":%.3g",
         s->name, s->M, s->N, s->K, s->ta, s->tb, threads, ns, rel);
  for (int i = 0; i < NLIBS; i++)
    if (libs[i].on)
      printf(",\"%s_gflops_median\":%.2f,\"%s_gflops_best\":%.2f", libs[i].name, gf[i], libs[i].name,
             flop / t[i].best * 1e-9);
  printf("}\n");
}

static void run_shape(const Shape *s, int threads, double peak) {
  Operands o = {s, s->ta ? s->M : s->K, s->tb ? s->K : s->N, NULL, NULL, NULL, NULL, threads};
  o.A = random_floats(s->M * s->K, 1);
  o.B = random_floats(s->K * s->N, 2);
  o.C = random_floats(s->M * s->N, 3);
  size_t wb = (size_t)cg_gemm_work_bytes(RT_F32, s->M, s->N, s->K, threads);
  o.work = alloc_big(wb);
  memset(o.work, 0, wb);
  openblas_set_num_threads(threads);
  Timing t[NLIBS] = {0};
  int ns = time_all(&o, t);
  print_row(s, threads, peak, t, max_rel_diff(t, s->M * s->N), ns);
  fflush(stdout);
  for (int i = 0; i < NLIBS; i++)
    free(t[i].result);
  free(o.A);
  free(o.B);
  free(o.C);
  free(o.work);
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

static int select_libs(char *list) {
  for (int i = 0; i < NLIBS; i++)
    libs[i].on = 0;
  for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
    int found = 0;
    for (int i = 0; i < NLIBS; i++)
      if (!strcmp(p, libs[i].name))
        found = libs[i].on = 1;
    if (!found)
      return -1;
  }
  return 0;
}

static void print_header(void) {
  printf("%-24s %3s %3s", "shape", "op", "thr");
  for (int i = 0; i < NLIBS; i++)
    printf(" %9s", libs[i].name);
  printf(" %7s %8s", "ratio", "of peak");
  for (int i = 0; i < NLIBS; i++)
    printf(" %4.4s-best", libs[i].name);
  printf("\n");
}

int main(int argc, char **argv) {
  int threads[8] = {1, 2}, nthreads = 2, perfmap = 0;
  Shape shapes[64];
  int nshapes = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      json = 1;
    } else if (!strcmp(argv[i], "--cputime")) {
      timer = CLOCK_THREAD_CPUTIME_ID;
    } else if (!strcmp(argv[i], "--perfmap")) {
      perfmap = 1;
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      nthreads = 0;
      for (char *p = strtok(argv[++i], ","); p && nthreads < 8; p = strtok(NULL, ","))
        threads[nthreads++] = atoi(p);
    } else if (!strcmp(argv[i], "--only") && i + 1 < argc && select_libs(argv[i + 1]) == 0) {
      i++;
    } else if (nshapes < 64 && parse_shape(argv[i], &shapes[nshapes]) == 0) {
      nshapes++;
    } else {
      fprintf(stderr, "usage: %s [--json] [--cputime] [--threads 1,2] [--only kiln,openblas,blis] [--perfmap] "
              "[NAME | M,N,K[,tA][,tB] ...]\n", argv[0]);
      return 2;
    }
  }
  if (!nshapes)
    for (size_t i = 0; i < sizeof default_shapes / sizeof *default_shapes; i++)
      shapes[nshapes++] = default_shapes[i];
  double peak = getenv("KILN_PEAK_GFLOPS") ? atof(getenv("KILN_PEAK_GFLOPS")) : 102.6;
  if (compile_kiln(perfmap))
    return 1;
  print_header();
  for (int t = 0; t < nthreads; t++)
    for (int s = 0; s < nshapes; s++)
      run_shape(&shapes[s], threads[t], peak);
  return 0;
}

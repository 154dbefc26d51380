/* Benchmark of codegen/vmath.c's float functions: the error of exp and tanh
 * over all 2^32 float bit patterns against libm in double, and the speed of
 * JIT'd loops of exp, tanh, sigmoid, log and erf against scalar libm loops
 * (expf, tanhf, 1/(1+expf(-x)), logf, erff) on 1M floats, single-threaded,
 * in the thread's CPU time, the median of repeats taken in turns. The
 * issue's target is at least 4x faster for exp and tanh.
 *
 * Built with kiln (ninja -C build bench/bench_vmath); run
 * build/bench/bench_vmath (the sweeps use all cores, through OpenMP,
 * and take minutes), or with --speed for the speed comparison alone. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>
#include "bench/vmath/vmath_check.h"

enum { N = 1 << 20, REPEATS = 41, SWEEP_CHUNK = 1 << 14 };

static double clock_s(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* Speed in the thread's CPU time: what other processes take does not count. */
static double cpu_now(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

/* The functions timed, by index into VM_FNS, with their scalar libm loops'
 * function and whether they take positive inputs only (log). */
static float sigmoidf_ref(float x) { return 1.0f / (1.0f + expf(-x)); }
static const struct {
  int fn;
  float (*libm)(float);
  int positive;
} TIMED[] = {{0, expf, 0}, {4, tanhf, 0}, {5, sigmoidf_ref, 0}, {2, logf, 1}, {6, erff, 0}};
enum { NTIMED = sizeof TIMED / sizeof TIMED[0] };

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* JIT'd loops for exp and tanh at the target's vector width. */
static int build(CgJit **jit, int *lanes) {
  char err[1024];
  CgCtx c;
  if (cg_jit_new(jit, err, sizeof err) || cg_ctx_init_jit(&c, "bench", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  *lanes = cg_lanes(&c, 4);
  for (int i = 0; i < NTIMED; i++)
    vm_define_loop(&c, &VM_FNS[TIMED[i].fn], 0, *lanes);
  int rc = cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(*jit, &c, err, sizeof err);
  cg_ctx_dispose(&c);
  if (rc)
    fprintf(stderr, "%s\n", err);
  return rc ? -1 : 0;
}

static Map1 lookup(CgJit *jit, const VmFn *f, int lanes) {
  char name[64];
  vm_loop_name(name, sizeof name, f, 0, lanes);
  return (Map1)cg_jit_lookup(jit, name);
}

/* Every float bit pattern through f, against ref in double; the relative
 * error counts on [lo, hi]. */
static Err sweep_all(Map1 f, double (*ref)(double), double lo, double hi) {
  Err all = {0};
#pragma omp parallel
  {
    Err mine = {0};
    float x[SWEEP_CHUNK], y[SWEEP_CHUNK];
#pragma omp for schedule(dynamic, 16)
    for (int64_t chunk = 0; chunk < (1ll << 32) / SWEEP_CHUNK; chunk++) {
      for (int i = 0; i < SWEEP_CHUNK; i++)
        x[i] = f32_of((uint32_t)(chunk * SWEEP_CHUNK + i));
      f(x, y, SWEEP_CHUNK);
      for (int i = 0; i < SWEEP_CHUNK; i++)
        err_add(&mine, 0, x[i], y[i], ref(x[i]), x[i] >= lo && x[i] <= hi);
    }
#pragma omp critical
    err_merge(&all, &mine);
  }
  return all;
}

static void sweeps(Map1 exp_f, Map1 tanh_f) {
  double t0 = now();
  Err e = sweep_all(exp_f, exp, -87.3, 88.7);
  printf("exp  all 2^32 floats: max %.3f ulp at %a, max rel %.3g on [-87.3, 88.7] at %a, "
         "%ld wrong (%.0f s)\n", e.ulp, e.ulp_x, e.rel, e.rel_x, e.wrong, now() - t0);
  t0 = now();
  e = sweep_all(tanh_f, tanh, -INFINITY, INFINITY);
  printf("tanh all 2^32 floats: max %.3f ulp at %a, max rel %.3g at %a (absolute below "
         "FLT_MIN), %ld wrong (%.0f s)\n", e.ulp, e.ulp_x, e.rel, e.rel_x, e.wrong, now() - t0);
}

static float (*libm_fn)(float);

static void libm_loop(const void *xv, void *yv, int64_t n) {
  const float *x = xv;
  float *y = yv;
  for (int64_t i = 0; i < n; i++)
    y[i] = libm_fn(x[i]);
}

static double ns_per_elt(Map1 f, const float *x, float *y) {
  double t0 = cpu_now();
  f(x, y, N);
  return (cpu_now() - t0) * 1e9 / N;
}

/* Medians of repeats, kiln and libm taking turns so both see the same load. */
static void speed(const char *name, Map1 jitted, float (*libm)(float), const float *x, float *y) {
  double tk[REPEATS], tl[REPEATS];
  libm_fn = libm;
  for (int r = 0; r < REPEATS; r++) {
    tk[r] = ns_per_elt(jitted, x, y);
    tl[r] = ns_per_elt(libm_loop, x, y);
  }
  qsort(tk, REPEATS, sizeof tk[0], cmp_double);
  qsort(tl, REPEATS, sizeof tl[0], cmp_double);
  double k = tk[REPEATS / 2], l = tl[REPEATS / 2];
  printf("%-7s speed: kiln %.3f ns/elt, libm %.3f ns/elt (CPU time, medians of %d): %.1fx faster\n", name,
         k, l, REPEATS, l / k);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);   /* the sweeps take minutes: show lines as they come */
  CgJit *jit;
  int lanes;
  if (build(&jit, &lanes))
    return 1;
  Map1 exp_f = lookup(jit, &VM_FNS[0], lanes), tanh_f = lookup(jit, &VM_FNS[4], lanes);
  if (!exp_f || !tanh_f)
    return 1;
  printf("%d-lane vectors, %d threads for the sweeps\n", lanes, omp_get_max_threads());

  if (argc < 2 || strcmp(argv[1], "--speed"))
    sweeps(exp_f, tanh_f);
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  if (!x || !y)
    return 1;
  float *xp = malloc(N * sizeof *xp);
  if (!xp)
    return 1;
  uint64_t s = 1;
  for (int i = 0; i < N; i++) {
    s = s * 6364136223846793005u + 1442695040888963407u;
    x[i] = (float)((double)(s >> 11) * 0x1p-53 * 20 - 10);  /* uniform in [-10, 10) */
    xp[i] = fabsf(x[i]) + 0x1p-20f;                          /* (0, 10] for log */
  }
  for (int i = 0; i < NTIMED; i++) {
    Map1 f = lookup(jit, &VM_FNS[TIMED[i].fn], lanes);
    if (!f)
      return 1;
    speed(VM_FNS[TIMED[i].fn].name, f, TIMED[i].libm, TIMED[i].positive ? xp : x, y);
  }
  free(xp);
  free(x);
  free(y);
  cg_jit_free(jit);
  return 0;
}

/* The vector math of codegen/vmath.c, run through JIT'd loops
 * (bench/vmath/vmath_check.h) and checked against libm: in double for the float
 * functions, in long double for the double ones.
 *
 * Float inputs are a strided sweep of all finite floats (every 97th bit
 * pattern), 2^22 points evenly over [-10, 10] and the special values; double
 * inputs 2^22 bit patterns strided over all doubles, 2^21 points over
 * [-10, 10] and the special values. Errors are in ulps of the exact result
 * (denormal spacing below the normal range) and relative (absolute where the
 * exact result is below the normal range). Then the special values one by
 * one, pow's special cases against the C library's, and the scalar and 4-,
 * 8- and 16-lane forms bitwise equal. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "bench/vmath/vmath_check.h"

enum { CHUNK = 1 << 20 };
static const int LANES[] = {0, 4, 8, 16};
static CgJit *jit;

static int setup(void **state) {
  char err[1024];
  CgCtx c;
  if (cg_jit_new(&jit, err, sizeof err) || cg_ctx_init_jit(&c, "vmath", err, sizeof err)) {
    print_error("%s\n", err);
    return -1;
  }
  for (int f = 0; f < VM_NFNS; f++)
    for (int f64 = 0; f64 < 2; f64++)
      for (int l = 0; l < 4; l++)
        vm_define_loop(&c, &VM_FNS[f], f64, LANES[l]);
  int rc = cg_optimize(&c, 2, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err);
  cg_ctx_dispose(&c);
  if (rc)
    print_error("%s\n", err);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  cg_jit_free(jit);
  return 0;
}

static void *loop(const char *fn, int f64, int lanes) {
  char name[64] = "";
  for (int f = 0; f < VM_NFNS; f++)
    if (!strcmp(VM_FNS[f].name, fn))
      vm_loop_name(name, sizeof name, &VM_FNS[f], f64, lanes);
  void *p = cg_jit_lookup(jit, name);
  assert_non_null(p);
  return p;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* {==================== inputs */

/* Zeros, infinities, NaN, the edges of the float and double ranges and of
 * exp's overflow and underflow. */
static const double SPECIALS[] = {
  0.0, -0.0, INFINITY, -INFINITY, NAN, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 10.0, -10.0,
  0x1p-149, -0x1p-149, 0x1p-126, -0x1p-126, 0x1.fffffep127, -0x1.fffffep127,
  88.72283172607421875, 88.7228393554688, -87.336544, -103.97, -104.0, 89.0, -89.0,
  0x1p-1074, 0x1p-1022, DBL_MAX, -DBL_MAX, 709.78, 709.79, -745.1, -745.2, 1e-300, -1e-300,
};
enum { NSPECIALS = sizeof SPECIALS / sizeof SPECIALS[0] };

/* The sweep, in chunks: *pos walks its parts; returns the chunk's size, 0 at the end. */
static int sweep_next(int f64, void *buf, uint64_t *pos) {
  const uint64_t nstride = f64 ? (1u << 22) : (1ull << 32) / 97 + 1;
  const uint64_t ndense = f64 ? (1u << 21) : (1u << 22);
  const uint64_t end = nstride + ndense + NSPECIALS;
  int n = 0;
  for (; n < CHUNK && *pos < end; ++*pos) {
    uint64_t i = *pos;
    double x;
    if (i < nstride)
      x = f64 ? f64_of(i * (UINT64_MAX / nstride) + (i * 0x9e3779b97f4a7c15u >> 44))
              : f32_of((uint32_t)(i * 97));
    else if (i < nstride + ndense)
      x = -10.0 + 20.0 * (double)(i - nstride) / (double)ndense;
    else
      x = SPECIALS[i - nstride - ndense];
    if (i < nstride && !isfinite(x))
      continue;
    if (f64)
      ((double *)buf)[n++] = x;
    else
      ((float *)buf)[n++] = (float)x;
  }
  return n;
}

/* }==================== accuracy sweeps */

static void err_print(const char *what, const Err *e) {
  print_message("%-14s max %.3f ulp at %a, max rel %.3g at %a, %ld wrong (first at %a)\n", what,
                e->ulp, e->ulp_x, e->rel, e->rel_x, e->wrong, e->wrong_x);
}

static double sigmoid_d(double x) { return 1 / (1 + exp(-x)); }
static long double sigmoid_l(long double x) { return 1 / (1 + expl(-x)); }

/* Bounds asserted per function: ulps anywhere (float, double) and relative
 * error on [lo, hi] (float). */
typedef struct Spec {
  const char *fn;
  double (*ref32)(double);
  long double (*ref64)(long double);
  double lo, hi;
  double ulp32, rel32, ulp64;
  double dom32, dom64;     /* beyond |x| > dom, NaN (sin, cos) */
} Spec;

/* Measured (float ulp, rel; double ulp): exp 0.77, 6.0e-8; 0.65. expm1
 * 1.03, 8.2e-8; 1.04. log 0.55, 6.1e-8; 0.53. log1p 0.56, 6.1e-8; 0.53. tanh
 * 1.75, 1.3e-7; 1.40. sigmoid 1.46, 1.2e-7; 1.47. erf 1.36, 1.1e-7; 1.19.
 * sin, cos 0.79, 7.3e-8; 0.77. The bounds leave a margin, more for double,
 * whose sample is sparser. */
static const Spec SPECS[] = {
  /* exp: the 2e-7 relative on [-87.3, 88.7], and 1 ulp through the
   * denormal outputs down to 0 */
  {"exp", exp, expl, -87.3, 88.7, 1.0, 2e-7, 1.0, INFINITY, INFINITY},
  {"expm1", expm1, expm1l, -INFINITY, INFINITY, 1.1, 1e-7, 1.25, INFINITY, INFINITY},
  {"log", log, logl, -INFINITY, INFINITY, 0.75, 7e-8, 0.75, INFINITY, INFINITY},
  {"log1p", log1p, log1pl, -INFINITY, INFINITY, 0.75, 7e-8, 0.75, INFINITY, INFINITY},
  /* tanh: the 1e-6 (relative, absolute below the normal range) */
  {"tanh", tanh, tanhl, -INFINITY, INFINITY, 2.0, 1e-6, 2.0, INFINITY, INFINITY},
  {"sigmoid", sigmoid_d, sigmoid_l, -INFINITY, INFINITY, 1.75, 1.5e-7, 2.0, INFINITY, INFINITY},
  {"erf", erf, erfl, -INFINITY, INFINITY, 1.6, 1.5e-7, 1.5, INFINITY, INFINITY},
  {"sin", sin, sinl, -INFINITY, INFINITY, 1.0, 1e-7, 1.0, 0x1p22, 0x1p30},
  {"cos", cos, cosl, -INFINITY, INFINITY, 1.0, 1e-7, 1.0, 0x1p22, 0x1p30},
};
enum { NSPECS = sizeof SPECS / sizeof SPECS[0] };

static Err sweep(const Spec *s, int f64) {
  Map1 f = loop(s->fn, f64, f64 ? 4 : 8);
  size_t size = f64 ? 8 : 4;
  void *x = malloc(CHUNK * size), *y = malloc(CHUNK * size);
  assert_true(x && y);
  Err e = {0};
  uint64_t pos = 0;
  double dom = f64 ? s->dom64 : s->dom32;
  for (int n; (n = sweep_next(f64, x, &pos));) {
    f(x, y, n);
#pragma omp parallel
    {
      Err mine = {0};
#pragma omp for nowait
      for (int i = 0; i < n; i++) {
        long double xi = f64 ? ((double *)x)[i] : ((float *)x)[i];
        long double yi = f64 ? ((double *)y)[i] : ((float *)y)[i];
        long double ref = fabsl(xi) > dom ? NAN : f64 ? s->ref64(xi) : s->ref32((double)xi);
        err_add(&mine, f64, (double)xi, yi, ref, xi >= s->lo && xi <= s->hi);
      }
#pragma omp critical
      err_merge(&e, &mine);
    }
  }
  free(x);
  free(y);
  return e;
}

/* Every function measured and printed first, then the bounds checked. */
static void accuracy(int f64) {
  int bad = 0;
  for (int i = 0; i < NSPECS; i++) {
    const Spec *s = &SPECS[i];
    Err e = sweep(s, f64);
    char what[32];
    snprintf(what, sizeof what, "%s %s", s->fn, f64 ? "f64" : "f32");
    err_print(what, &e);
    if (e.wrong || e.ulp > (f64 ? s->ulp64 : s->ulp32) || (!f64 && e.rel > s->rel32)) {
      print_error("%s: beyond its bounds\n", what);
      bad++;
    }
  }
  assert_int_equal(bad, 0);
}

static void test_accuracy_f32(void **state) { accuracy(0); }
static void test_accuracy_f64(void **state) { accuracy(1); }

/* }==================== special values */

static float one32(const char *fn, float x) {
  float y;
  ((Map1)loop(fn, 0, 8))(&x, &y, 1);   /* through the scalar tail */
  float v[8] = {x, x, x, x, x, x, x, x}, w[8];
  ((Map1)loop(fn, 0, 8))(v, w, 8);    /* through the vector body */
  assert_memory_equal(&y, &w[3], 4);
  return y;
}

static double one64(const char *fn, double x) {
  double y;
  ((Map1)loop(fn, 1, 4))(&x, &y, 1);
  return y;
}

static int same(double a, double b) {
  return (isnan(a) && isnan(b)) || (a == b && signbit(a) == signbit(b));
}

#define EXPECT(fn, x, want)                                                             \
  do {                                                                                  \
    float y32 = one32(fn, (float)(x));                                                  \
    double y64 = one64(fn, (x));                                                        \
    if (!same(y32, (want)) || !same(y64, (want)))                                       \
      fail_msg("%s(%a): want %a, got %a (float), %a (double)", fn, (double)(x),         \
               (double)(want), (double)y32, y64);                                       \
  } while (0)

static void test_special_values(void **state) {
  EXPECT("exp", INFINITY, INFINITY);
  EXPECT("exp", -INFINITY, 0.0);
  EXPECT("exp", NAN, NAN);
  EXPECT("exp", 0.0, 1.0);
  EXPECT("exp", -0.0, 1.0);
  EXPECT("exp", 1000.0, INFINITY);
  EXPECT("exp", -1000.0, 0.0);
  assert_true(isinf(one32("exp", 88.7228394f)) && isfinite(one32("exp", 88.7228317f)));
  assert_true(one32("exp", -103.0f) > 0 && one32("exp", -103.0f) < FLT_MIN);
  assert_true(one32("exp", -104.0f) == 0);
  EXPECT("expm1", 0.0, 0.0);
  EXPECT("expm1", -0.0, -0.0);
  EXPECT("expm1", INFINITY, INFINITY);
  EXPECT("expm1", -INFINITY, -1.0);
  EXPECT("expm1", NAN, NAN);
  EXPECT("expm1", 0x1p-100, 0x1p-100);
  EXPECT("log", 0.0, -INFINITY);
  EXPECT("log", -0.0, -INFINITY);
  EXPECT("log", -1.0, NAN);
  EXPECT("log", -INFINITY, NAN);
  EXPECT("log", INFINITY, INFINITY);
  EXPECT("log", NAN, NAN);
  EXPECT("log", 1.0, 0.0);
  assert_true(fabsf(one32("log", 0x1p-149f) - (float)log(0x1p-149)) <= 1e-5f);
  assert_true(fabs(one64("log", 0x1p-1074) - log(0x1p-1074)) <= 1e-13);
  EXPECT("log1p", -1.0, -INFINITY);
  EXPECT("log1p", -2.0, NAN);
  EXPECT("log1p", INFINITY, INFINITY);
  EXPECT("log1p", NAN, NAN);
  EXPECT("log1p", -0.0, -0.0);
  EXPECT("log1p", 0x1p-149, 0x1p-149);
  EXPECT("tanh", INFINITY, 1.0);
  EXPECT("tanh", -INFINITY, -1.0);
  EXPECT("tanh", 1000.0, 1.0);
  EXPECT("tanh", -0.0, -0.0);
  EXPECT("tanh", NAN, NAN);
  EXPECT("sigmoid", INFINITY, 1.0);
  EXPECT("sigmoid", -INFINITY, 0.0);
  EXPECT("sigmoid", 0.0, 0.5);
  EXPECT("sigmoid", NAN, NAN);
  assert_true(one32("sigmoid", -100.0f) > 0);          /* a denormal, not 0 */
  assert_true(one32("sigmoid", 1e30f) == 1 && one32("sigmoid", -1e30f) == 0);
  EXPECT("erf", INFINITY, 1.0);
  EXPECT("erf", -INFINITY, -1.0);
  EXPECT("erf", -0.0, -0.0);
  EXPECT("erf", NAN, NAN);
  EXPECT("erf", 7.0, 1.0);
  EXPECT("sin", -0.0, -0.0);
  EXPECT("sin", INFINITY, NAN);
  EXPECT("sin", NAN, NAN);
  EXPECT("cos", 0.0, 1.0);
  EXPECT("cos", -INFINITY, NAN);
  EXPECT("sin", 1e10, NAN);                              /* beyond the reduction's range */
}

/* pow against the C library on a grid of special and ordinary values: the
 * same NaN, infinity, zero (with its sign) and one, else within 1 ulp. */
static void test_pow_special_cases(void **state) {
  static const double V[] = {0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5,
                             INFINITY, -INFINITY, NAN, 1e-30, -1e-30, 1e30, -1e30, 0x1p-149};
  enum { N = sizeof V / sizeof V[0] };
  for (int f64 = 0; f64 < 2; f64++) {
    Map2 f = loop("pow", f64, 0);
    for (int i = 0; i < N; i++)
      for (int j = 0; j < N; j++) {
        double x = V[i], y = V[j], got, want;
        if (f64) {
          want = pow(x, y);
          f(&x, &y, &got, 1);
        } else {
          float xf = (float)x, yf = (float)y, gf;
          want = powf(xf, yf);
          f(&xf, &yf, &gf, 1);
          got = gf;
        }
        int exact = isnan(want) || isinf(want) || want == 0 || fabs(want) == 1;
        if (exact ? !same(got, want) : fabs(got - want) > fabs(want) * (f64 ? 0x1p-52 : 0x1p-23))
          fail_msg("pow %s (%a, %a): want %a, got %a", f64 ? "f64" : "f32", x, y, want, got);
      }
  }
}

/* pow's accuracy: x of either sign over [2^-30, 2^30] with integer y, and
 * positive x with y in [-30, 30]; results overflowing or underflowing too. */
static void test_pow_accuracy(void **state) {
  for (int f64 = 0; f64 < 2; f64++) {
    Map2 f = loop("pow", f64, f64 ? 4 : 8);
    int n = 1 << 20;
    double *x = malloc(n * 8), *y = malloc(n * 8), *out = malloc(n * 8);
    float *xf = malloc(n * 4), *yf = malloc(n * 4), *of = malloc(n * 4);
    assert_true(x && y && out && xf && yf && of);
    uint64_t s = 42;
    for (int i = 0; i < n; i++) {
      double u = (double)(splitmix(&s) >> 11) * 0x1p-53, v = (double)(splitmix(&s) >> 11) * 0x1p-53;
      x[i] = exp2(60 * u - 30);
      y[i] = 60 * v - 30;
      if (i & 1) {
        y[i] = floor(y[i]);
        x[i] = (i & 2) ? -x[i] : x[i];
      }
      xf[i] = (float)x[i];
      yf[i] = (float)y[i];
    }
    if (f64)
      f(x, y, out, n);
    else
      f(xf, yf, of, n);
    Err e = {0};
    for (int i = 0; i < n; i++) {
      if (f64)
        err_add(&e, 1, x[i], out[i], powl(x[i], y[i]), 1);
      else
        err_add(&e, 0, xf[i], of[i], pow(xf[i], yf[i]), 1);
    }
    err_print(f64 ? "pow f64" : "pow f32", &e);
    assert_int_equal(e.wrong, 0);
    assert_true(e.ulp <= (f64 ? 1.5 : 0.51));   /* measured 1.01 and 0.5 */
    free(x), free(y), free(out), free(xf), free(yf), free(of);
  }
}

/* }==================== scalar and vector forms */

/* Random bit patterns (a quarter of them small numbers) and the specials;
 * for pow's second operand, a quarter integers. */
static void mixed_inputs(int f64, void *buf, int n, uint64_t seed) {
  for (int i = 0; i < n; i++) {
    uint64_t r = splitmix(&seed);
    double x = f64 ? f64_of(r) : f32_of((uint32_t)r);
    if (i % 4 == 1)
      x = ldexp((double)(r >> 40) / (1 << 24) - 0.5, 6);
    if (i % 4 == 2)
      x = (double)(int)(r % 64) - 32;
    if (i < NSPECIALS)
      x = SPECIALS[i];
    if (f64)
      ((double *)buf)[i] = x;
    else
      ((float *)buf)[i] = (float)x;
  }
}

/* out = fn(x[, y]) with `lanes`-wide vectors; the scalar form one element
 * per call, so that LLVM's loop vectorizer cannot turn it into vectors. */
static void run(const VmFn *fn, int f64, int lanes, const char *x, const char *y, char *out, int n) {
  void *p = loop(fn->name, f64, lanes);
  int size = f64 ? 8 : 4, step = lanes ? n : 1;
  for (int i = 0; i < n; i += step) {
    if (fn->f2)
      ((Map2)p)(x + i * size, y + i * size, out + i * size, step);
    else
      ((Map1)p)(x + i * size, out + i * size, step);
  }
}

static void test_lanes_agree(void **state) {
  enum { N = 1 << 16 };
  for (int f64 = 0; f64 < 2; f64++) {
    int size = f64 ? 8 : 4;
    char *x = malloc(N * size), *y = malloc(N * size), *ref = malloc(N * size), *got = malloc(N * size);
    assert_true(x && y && ref && got);
    mixed_inputs(f64, x, N, 1);
    mixed_inputs(f64, y, N, 2);
    for (int f = 0; f < VM_NFNS; f++) {
      run(&VM_FNS[f], f64, 8, x, y, ref, N);
      for (int l = 0; l < 4; l++) {
        run(&VM_FNS[f], f64, LANES[l], x, y, got, N);
        for (int i = 0; i < N; i++) {
          double a = f64 ? ((double *)ref)[i] : ((float *)ref)[i];
          double b = f64 ? ((double *)got)[i] : ((float *)got)[i];
          if (!(isnan(a) && isnan(b)) && memcmp(ref + i * size, got + i * size, size))
            fail_msg("%s %s: %d lanes give %a, 8 lanes %a, at input %d", VM_FNS[f].name,
                     f64 ? "f64" : "f32", LANES[l], b, a, i);
        }
      }
    }
    free(x), free(y), free(ref), free(got);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_special_values),
    cmocka_unit_test(test_pow_special_cases),
    cmocka_unit_test(test_lanes_agree),
    cmocka_unit_test(test_pow_accuracy),
    cmocka_unit_test(test_accuracy_f32),
    cmocka_unit_test(test_accuracy_f64),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

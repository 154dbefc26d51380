/* Philox4x32-10 against the Random123 known-answer vectors, FNV-1a against
 * its published values, and the statistics, purity and thread-count
 * independence of the fills and the shuffle. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

/* Random123 tests/kat_vectors, the "philox4x32 10" lines: counter, key, result. */
static void test_kat(void **state) {
  static const uint32_t kat[3][10] = {
    {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
    {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
     0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
    {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
     0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int i = 0; i < 3; i++) {
    uint32_t out[4];
    rt_philox4x32(kat[i], kat[i] + 4, out);
    assert_memory_equal(out, kat[i] + 6, sizeof out);
  }
}

/* FNV-1a 64 published test values (Fowler, Noll, Vo). */
static void test_hash(void **state) {
  assert_true(rt_hash_str("") == 0xcbf29ce484222325ull);
  assert_true(rt_hash_str("a") == 0xaf63dc4c8601ec8cull);
  assert_true(rt_hash_str("foobar") == 0x85944171f73967e8ull);
  assert_true(rt_hash_str("conv1.weight") != rt_hash_str("conv1.bias"));
}

/* Element i of a stream is word i % 4 of Philox((i / 4, stream), seed). */
static void test_counter_layout(void **state) {
  uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
  for (uint64_t i = 0; i < 4096; i += 13) {
    uint32_t ctr[4] = {(uint32_t)(i / 4), (uint32_t)(i / 4 >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, w[4];
    rt_philox4x32(ctr, key, w);
    assert_int_equal(rt_random_u32(seed, stream, i), w[i % 4]);
  }
  float u[64];
  rt_fill_uniform(u, 64, -1.0f, 1.0f, seed, stream);
  for (int i = 0; i < 64; i++) {
    double want = -1.0 + 2.0 * (rt_random_u32(seed, stream, (uint64_t)i) >> 8) * 0x1p-24;
    assert_true(u[i] == (float)want);
  }
}

typedef struct { double mean, var, min, max; } Stats;

static Stats stats_f64(const double *x, int64_t n) {
  Stats s = {0, 0, INFINITY, -INFINITY};
  for (int64_t i = 0; i < n; i++) {
    s.mean += x[i];
    s.min = fmin(s.min, x[i]);
    s.max = fmax(s.max, x[i]);
  }
  s.mean /= n;
  for (int64_t i = 0; i < n; i++)
    s.var += (x[i] - s.mean) * (x[i] - s.mean);
  s.var /= n - 1;
  return s;
}

static Stats stats_f32(const float *x, int64_t n) {
  double *d = malloc((size_t)n * sizeof *d);
  for (int64_t i = 0; i < n; i++)
    d[i] = x[i];
  Stats s = stats_f64(d, n);
  free(d);
  return s;
}

enum { N = 1000000 };

static void test_uniform_stats(void **state) {
  float *x = malloc(N * sizeof *x);
  double *d = malloc(N * sizeof *d);
  rt_fill_uniform(x, N, -2.0f, 3.0f, 42, rt_hash_str("w"));
  Stats s = stats_f32(x, N);
  assert_true(fabs(s.mean - 0.5) < 0.01);          /* sd of the mean: 0.0014 */
  assert_true(fabs(s.var - 25.0 / 12) < 0.02);
  assert_true(s.min >= -2.0 && s.max < 3.0);
  rt_fill_uniform_f64(d, N, 10.0, 11.0, 42, 7);
  s = stats_f64(d, N);
  assert_true(fabs(s.mean - 10.5) < 0.002);
  assert_true(fabs(s.var - 1.0 / 12) < 0.001);
  assert_true(s.min >= 10.0 && s.max < 11.0);
  free(x), free(d);
}

static void test_normal_stats(void **state) {
  float *x = malloc(N * sizeof *x);
  double *d = malloc(N * sizeof *d);
  rt_fill_normal(x, N, 1.5f, 2.0f, 3, 9);
  Stats s = stats_f32(x, N);
  assert_true(fabs(s.mean - 1.5) < 0.01);          /* sd of the mean: 0.002 */
  assert_true(fabs(s.var - 4.0) < 0.04);           /* sd of the variance: 0.006 */
  int64_t within = 0;
  for (int64_t i = 0; i < N; i++)
    within += fabs(x[i] - 1.5) < 2.0;
  assert_true(fabs(within / (double)N - 0.682689) < 0.003);
  rt_fill_normal_f64(d, N, -1.0, 0.5, 3, 9);
  s = stats_f64(d, N);
  assert_true(fabs(s.mean + 1.0) < 0.003);
  assert_true(fabs(s.var - 0.25) < 0.003);
  free(x), free(d);
}

static void test_trunc_normal(void **state) {
  float *x = malloc(N * sizeof *x);
  rt_fill_trunc_normal(x, N, 0.0f, 1.0f, -2.0f, 2.0f, 5, 1);
  Stats s = stats_f32(x, N);
  assert_true(s.min >= -2.0 && s.max <= 2.0);
  assert_true(fabs(s.mean) < 0.005);
  assert_true(fabs(s.var - 0.773741) < 0.005);     /* variance of N(0,1) truncated to [-2, 2] */
  rt_fill_trunc_normal(x, 1000, 0.0f, 1.0f, 30.0f, 31.0f, 5, 1);  /* hopeless bounds still end */
  for (int i = 0; i < 1000; i++)
    assert_true(x[i] >= 30.0f && x[i] <= 31.0f);
  free(x);
}

/* The same numbers at any thread count, and element i does not depend on n. */
static void test_pure(void **state) {
  enum { M = 100003 };
  float *a = malloc(M * sizeof *a), *b = malloc(M * sizeof *b);
  double *c = malloc(M * sizeof *c), *e = malloc(M * sizeof *e);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  rt_fill_normal(a, M, 0, 1, 11, 22);
  rt_fill_uniform_f64(c, M, 0, 1, 11, 22);
  omp_set_num_threads(3);
  rt_fill_normal(b, M, 0, 1, 11, 22);
  rt_fill_uniform_f64(e, M, 0, 1, 11, 22);
  omp_set_num_threads(saved);
  assert_memory_equal(a, b, M * sizeof *a);
  assert_memory_equal(c, e, M * sizeof *c);
  rt_fill_normal(b, 37, 0, 1, 11, 22);               /* a prefix, odd length */
  assert_memory_equal(a, b, 37 * sizeof *a);
  rt_fill_normal(b, 1000, 0, 1, 11, 23);             /* another stream differs */
  int same = 0;
  for (int i = 0; i < 1000; i++)
    same += a[i] == b[i];
  assert_true(same < 5);
  rt_fill_normal(b, 1000, 0, 1, 12, 22);             /* another seed differs */
  same = 0;
  for (int i = 0; i < 1000; i++)
    same += a[i] == b[i];
  assert_true(same < 5);
  free(a), free(b), free(c), free(e);
}

static bool is_permutation(const int64_t *p, int64_t n) {
  char *seen = calloc((size_t)n + 1, 1);
  bool ok = true;
  for (int64_t i = 0; i < n && ok; i++) {
    ok = p[i] >= 0 && p[i] < n && !seen[p[i]];
    if (ok)
      seen[p[i]] = 1;
  }
  free(seen);
  return ok;
}

static void test_shuffle(void **state) {
  int64_t p[1000], q[1000];
  rt_shuffle(p, 1000, 1, 2);
  assert_true(is_permutation(p, 1000));
  rt_shuffle(q, 1000, 1, 2);
  assert_memory_equal(p, q, sizeof p);
  rt_shuffle(q, 1000, 1, 3);
  assert_true(memcmp(p, q, sizeof p) != 0);
  rt_shuffle(p, 0, 1, 2);
  rt_shuffle(p, 1, 1, 2);
  assert_int_equal(p[0], 0);
}

/* All 24 orders of 4 items appear equally often: chi-square with 23
 * degrees of freedom under 49.7 (p = 0.001). */
static void test_shuffle_uniform(void **state) {
  enum { TRIALS = 48000 };
  int count[256] = {0};
  for (int t = 0; t < TRIALS; t++) {
    int64_t p[4];
    rt_shuffle(p, 4, 99, (uint64_t)t);
    count[p[0] * 64 + p[1] * 16 + p[2] * 4 + p[3]]++;
  }
  double chi2 = 0, expect = TRIALS / 24.0;
  int orders = 0;
  for (int i = 0; i < 256; i++) {
    if (count[i]) {
      orders++;
      chi2 += (count[i] - expect) * (count[i] - expect) / expect;
    }
  }
  assert_int_equal(orders, 24);
  assert_true(chi2 < 49.7);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_kat),           cmocka_unit_test(test_hash),
    cmocka_unit_test(test_counter_layout), cmocka_unit_test(test_uniform_stats),
    cmocka_unit_test(test_normal_stats),  cmocka_unit_test(test_trunc_normal),
    cmocka_unit_test(test_pure),          cmocka_unit_test(test_shuffle),
    cmocka_unit_test(test_shuffle_uniform),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

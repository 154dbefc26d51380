/* runtime/series.c: a time series cut into forecasting windows.
 *
 * On a series whose values encode their own index (v[i] = i*i + 1), every
 * window and target says which positions it came from, so the tests check
 * the chronological split (no validation target in a training sample, and
 * every validation target exactly once), the normalisation fitted on the
 * training part only, and the seasonal-naive errors against a loop over
 * the targets written here. Then the committed sunspots file: its size,
 * first and last values, and the baselines' errors over its last 40 years
 * as numpy computes them (the figures examples/sunspots.kiln reports);
 * and the train block's series(...) and baseline settings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"

enum { LEN = 30 };

static RtSeries squares(double *buf) {
  for (int i = 0; i < LEN; i++)
    buf[i] = (double)i * i + 1;
  return (RtSeries){.v = buf, .n = LEN};
}

/* The position of a normalised value, from v = i*i + 1. */
static int64_t position(double z, const RtSeriesNorm *nm) {
  return llround(sqrt(z * nm->std + nm->mean - 1));
}

static void check_part(const RtDataset *ds, const RtSeriesSpec *sp, const RtSeriesNorm *nm,
                       int64_t first_target, int64_t end) {
  const double *x = ds->t[0].t.data, *y = ds->t[1].t.data;
  int64_t W = sp->window, H = sp->horizon;
  assert_int_equal(ds->n, 2);
  assert_int_equal(ds->t[0].t.shape[1], W);
  assert_int_equal(ds->t[1].t.shape[1], H);
  assert_int_equal(ds->len, end - first_target - H + 1);
  for (int64_t k = 0; k < ds->len; k++) {
    int64_t t0 = first_target + k;          /* the sample's first target */
    for (int64_t i = 0; i < W; i++)
      assert_int_equal(position(x[k * W + i], nm), t0 - W + i);
    for (int64_t i = 0; i < H; i++) {
      assert_int_equal(position(y[k * H + i], nm), t0 + i);
      assert_true(t0 + i < end);
    }
  }
}

static void test_windows(void **state) {
  (void)state;
  double buf[LEN];
  RtSeries s = squares(buf);
  RtSeriesSpec sp = {.window = 4, .horizon = 2, .validate = 7};
  RtDataset tr, va;
  RtSeriesNorm nm;
  RtError e;
  assert_int_equal(rt_series_windows(&s, &sp, "x", "t", &tr, &va, &nm, &e), RT_OK);
  double mean = 0, var = 0;
  for (int i = 0; i < LEN - 7; i++)
    mean += buf[i] / (LEN - 7);
  for (int i = 0; i < LEN - 7; i++)
    var += (buf[i] - mean) * (buf[i] - mean) / (LEN - 7);
  assert_float_equal(nm.mean, mean, 1e-12);
  assert_float_equal(nm.std, sqrt(var), 1e-12);
  check_part(&tr, &sp, &nm, 4, LEN - 7);        /* targets 4 .. 22, all before the cut */
  check_part(&va, &sp, &nm, LEN - 7, LEN);      /* targets 23 .. 29 */
  rt_data_free(&tr);
  rt_data_free(&va);
}

static void test_too_short(void **state) {
  (void)state;
  double buf[LEN];
  RtSeries s = squares(buf);
  RtDataset tr, va;
  RtSeriesNorm nm;
  RtError e;
  RtSeriesSpec sp = {.window = 20, .horizon = 1, .validate = 10};
  assert_int_equal(rt_series_windows(&s, &sp, "x", "t", &tr, &va, &nm, &e), RT_ERR_ARG);
  assert_non_null(strstr(e.msg, "training"));
  sp = (RtSeriesSpec){.window = 3, .horizon = 5, .validate = 4};
  assert_int_equal(rt_series_windows(&s, &sp, "x", "t", &tr, &va, &nm, &e), RT_ERR_ARG);
  assert_int_equal(tr.len + va.len, 0);
}

/* Seasonal naive, horizon 3, period 2: target k steps ahead of the window's
 * end is predicted by the value 2 * ceil(k / 2) before it. */
static void test_naive(void **state) {
  (void)state;
  double buf[LEN];
  RtSeries s = squares(buf);
  RtSeriesSpec sp = {.window = 5, .horizon = 3, .validate = 6};
  RtErrs want = {0};
  for (int64_t end = LEN - 6; end + 3 <= LEN; end++)    /* the windows end before `end` */
    for (int64_t k = 1; k <= 3; k++) {
      int64_t j = end + k - 1, back = k <= 2 ? 2 : 4;
      rt_errs_add(&want, buf[j - back], buf[j], 1);
    }
  RtErrs got = rt_series_naive(&s, &sp, 2);
  assert_int_equal(got.n, 4 * 3);
  assert_float_equal(rt_errs_mae(&got), rt_errs_mae(&want), 1e-12);
  assert_float_equal(rt_errs_rmse(&got), rt_errs_rmse(&want), 1e-12);
}

static void test_sunspots(void **state) {
  (void)state;
  char path[1024];
  snprintf(path, sizeof path, "%s/examples/data/sunspots.csv", getenv("KILN_SRC"));
  RtSeries s;
  RtError e;
  if (rt_series_read(path, "SUNACTIVITY", &s, &e) != RT_OK)
    fail_msg("%s", e.msg);
  assert_int_equal(s.n, 309);
  assert_float_equal(s.v[0], 5, 0);
  assert_float_equal(s.v[308], 2.9, 1e-6);
  RtSeriesSpec sp = {.window = 22, .horizon = 1, .validate = 40};
  RtErrs p = rt_series_naive(&s, &sp, 1), sn = rt_series_naive(&s, &sp, 11);
  /* numpy over the same file: v[269:] - v[268:308] and v[269:] - v[258:298] */
  assert_int_equal(p.n, 40);
  assert_float_equal(rt_errs_mae(&p), 22.745, 1e-5);
  assert_float_equal(rt_errs_rmse(&p), 29.889161915316393, 1e-5);
  assert_float_equal(rt_errs_mae(&sn), 25.725, 1e-5);
  assert_float_equal(rt_errs_rmse(&sn), 33.96131622890962, 1e-5);
  assert_int_equal(rt_series_read(path, "SUNSPOTS", &(RtSeries){0}, &e), RT_ERR_FORMAT);
  assert_non_null(strstr(e.msg, "no column named \"SUNSPOTS\""));
  rt_series_free(&s);
}

/* The train block read from src: NULL and the diagnostics in d on error. */
static FeTrain *config(RtArena *a, Diags *d, const char *settings) {
  char src[1024];
  snprintf(src, sizeof src, "model m(x: f32[N, 4]) -> (y: f32[N, 1]) {\n  y = dense(x, 1)\n}\n"
           "train m {\n%s\n  loss = mse(y, target)\n}\n", settings);
  diag_init(d, a);
  AstFile *f = fe_parse(a, "t.kiln", src, strlen(src), d);
  return f ? fe_train_config(a, f, NULL, d) : NULL;
}

static void expect_config_error(const char *settings, const char *want) {
  RtArena *a = rt_arena_new();
  Diags d;
  assert_null(config(a, &d, settings));
  bool found = false;
  for (const Diag *g = d.head; g; g = g->next)
    found |= strstr(g->msg, want) != NULL;
  if (!found) {
    diag_print(&d, stderr);
    fail_msg("expected an error containing '%s'", want);
  }
  rt_arena_free(a);
}

static void test_settings(void **state) {
  (void)state;
  RtArena *a = rt_arena_new();
  Diags d;
  FeTrain *t = config(a, &d, "data = series(\"s.csv\", column = \"V\", window = 4, validate = 9)\n"
                             "baseline = [persistence(), seasonal_naive(period = 11)]");
  if (!t) {
    diag_print(&d, stderr);
    fail();
  }
  assert_string_equal(t->data.kind, "series");
  assert_string_equal(t->data.column, "V");
  assert_int_equal(t->data.window, 4);
  assert_int_equal(t->data.horizon, 1);
  assert_int_equal(t->data.validate, 9);
  assert_int_equal(t->nbaselines, 2);
  assert_string_equal(t->baselines[0].name, "persistence");
  assert_int_equal(t->baselines[0].period, 1);
  assert_string_equal(t->baselines[1].name, "seasonal_naive");
  assert_int_equal(t->baselines[1].period, 11);
  rt_arena_free(a);
  expect_config_error("data = series(\"s.csv\", validate = 9)", "needs its argument 'window'");
  expect_config_error("data = series(\"s.csv\", window = 0)", "window of series must be an int from 1");
  expect_config_error("baseline = seasonal_naive()", "needs its argument 'period'");
  expect_config_error("baseline = naive(period = 2)", "baseline must be one of seasonal_naive");
  expect_config_error("data = series(\"s.csv\", window = 4)\n  split = 0.3",
                      "split does not apply to series data");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_windows),
      cmocka_unit_test(test_too_short),
      cmocka_unit_test(test_naive),
      cmocka_unit_test(test_sunspots),
      cmocka_unit_test(test_settings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

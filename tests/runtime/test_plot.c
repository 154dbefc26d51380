/* Curves: the CSV byte for byte, the SVG's structure (balanced tags, one
 * path per series, nice tick labels worked out by hand, escaped text, a
 * gap where a value is missing, one panel without accuracies), atomic
 * writes that fail cleanly, and the bias/variance reading as a table of
 * final curves -> verdict and the exact sentence. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <unistd.h>
#include "fixtures.h"

static RtEpochStats epoch(int k, double loss, double acc, double val_loss, double val_acc) {
  RtEpochStats e = rt_epoch_blank(k);
  e.loss = loss, e.acc = acc, e.val_loss = val_loss, e.val_acc = val_acc;
  return e;
}

static RtCurves curves(int n, const double (*rows)[4]) {
  RtCurves c = {0};
  for (int i = 0; i < n; i++) {
    RtEpochStats e = epoch(i + 1, rows[i][0], rows[i][1], rows[i][2], rows[i][3]);
    if (rt_curves_add(&c, &e, NULL) != RT_OK)
      abort();
  }
  return c;
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
    n++;
  return n;
}

static char *read_text(const char *path) {
  size_t len = 0;
  unsigned char *buf = slurp(path, &len);
  assert_non_null(buf);
  char *s = realloc(buf, len + 1);
  s[len] = 0;
  return s;
}

static void test_csv(void **state) {
  RtCurves c = {0};
  RtEpochStats e = epoch(1, 1.5, 0.5, 1.25, 0.625);
  e.lr = 0.1, e.seconds = 2;
  assert_int_equal(rt_curves_add(&c, &e, NULL), RT_OK);
  e = rt_epoch_blank(2);
  e.loss = 0.75, e.lr = 0.05, e.seconds = 1.5;
  assert_int_equal(rt_curves_add(&c, &e, NULL), RT_OK);
  RtError err;
  assert_int_equal(rt_curves_write_csv(&c, scratch_path("curves.csv"), &err), RT_OK);
  char *text = read_text(scratch_path("curves.csv"));
  assert_string_equal(text, "epoch,loss,acc,val_loss,val_acc,lr,seconds\n"
                            "1,1.5,0.5,1.25,0.625,0.1,2\n"
                            "2,0.75,,,,0.05,1.5\n");
  free(text);
  assert_int_equal(access(scratch_path("curves.csv.tmp"), F_OK), -1);
  assert_int_equal(rt_curves_write_csv(&c, scratch_path("no/such/dir.csv"), &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "cannot create"));
  rt_curves_free(&c);
  assert_null(c.e);
  for (int i = 0; i < 100; i++)        /* growth past the first block */
    assert_int_equal(rt_curves_add(&c, &e, NULL), RT_OK);
  assert_int_equal(c.n, 100);
  rt_curves_free(&c);
}

/* Ten epochs: losses 0.5..2.3 give ticks 0.5..2.5 by 0.5; accuracies
 * 40..91.3% give 40..100 by 10; epochs 1..10 give 0..10 by 2. */
static void test_svg(void **state) {
  double rows[10][4];
  for (int i = 0; i < 10; i++) {
    rows[i][0] = 0.3 + 2.0 / (i + 1);
    rows[i][1] = 0.97 - 0.57 / (i + 1);
    rows[i][2] = rows[i][0] + 0.05 * i;
    rows[i][3] = rows[i][1] - 0.01 * i;
  }
  RtCurves c = curves(10, (const double(*)[4])rows);
  RtError err;
  assert_int_equal(rt_curves_write_svg(&c, scratch_path("c.svg"), "digits <mlp> & more",
                                       "good fit: all well", &err), RT_OK);
  char *svg = read_text(scratch_path("c.svg"));
  assert_int_equal(strncmp(svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=", 50), 0);
  assert_string_equal(svg + strlen(svg) - 7, "</svg>\n");
  assert_int_equal(count(svg, "<path "), 4);
  assert_int_equal(count(svg, "<g>"), count(svg, "</g>"));
  assert_int_equal(count(svg, "<text"), count(svg, "</text>"));
  assert_int_equal(count(svg, "<"), count(svg, ">"));
  assert_int_equal(count(svg, "<circle"), 40);
  assert_non_null(strstr(svg, ">digits &lt;mlp&gt; &amp; more</text>"));
  assert_non_null(strstr(svg, ">good fit: all well</text>"));
  assert_non_null(strstr(svg, ">Loss</text>"));
  assert_non_null(strstr(svg, ">Accuracy</text>"));
  assert_non_null(strstr(svg, ">accuracy (%)</text>"));
  assert_non_null(strstr(svg, ">training</text>"));
  assert_non_null(strstr(svg, ">validation</text>"));
  static const char *ticks[] = {">0.5</text>", ">1.0</text>", ">2.5</text>", ">40</text>",
                                ">100</text>", ">0</text>",   ">10</text>"};
  for (size_t i = 0; i < sizeof ticks / sizeof *ticks; i++)
    if (!strstr(svg, ticks[i]))
      fail_msg("no tick label %s", ticks[i]);
  assert_null(strstr(svg, ">3.0</text>"));
  assert_null(strstr(svg, ">0.0</text>"));
  assert_null(strstr(svg, ">12</text>"));
  assert_null(strstr(svg, ">110</text>"));
  assert_null(strstr(svg, "nan"));
  assert_null(strstr(svg, "inf"));
  free(svg);
  rt_curves_free(&c);
}

/* No accuracy, a missing epoch, no validation: one panel, a broken path. */
static void test_svg_loss_only(void **state) {
  const double rows[4][4] = {{1, NAN, NAN, NAN}, {NAN, NAN, NAN, NAN}, {0.5, NAN, NAN, NAN},
                             {0.4, NAN, NAN, NAN}};
  RtCurves c = curves(4, rows);
  RtError err;
  assert_int_equal(rt_curves_write_svg(&c, scratch_path("l.svg"), NULL, NULL, &err), RT_OK);
  char *svg = read_text(scratch_path("l.svg"));
  assert_null(strstr(svg, "Accuracy"));
  assert_null(strstr(svg, ">validation</text>"));
  assert_non_null(strstr(svg, ">Training curves</text>"));
  assert_int_equal(count(svg, "<path "), 2);
  const char *d = strstr(svg, " d=\"");
  assert_non_null(d);
  const char *end = strchr(d + 4, '"');
  int moves = 0;
  for (const char *p = d + 4; p < end; p++)
    moves += *p == 'M';
  assert_int_equal(moves, 2);  /* epoch 1 alone, then 3-4 */
  assert_int_equal(count(svg, "<circle"), 3);
  free(svg);
  rt_curves_free(&c);
  /* no epochs at all still gives a valid, empty plot */
  assert_int_equal(rt_curves_write_svg(&c, scratch_path("e.svg"), "t", NULL, &err), RT_OK);
  svg = read_text(scratch_path("e.svg"));
  assert_string_equal(svg + strlen(svg) - 7, "</svg>\n");
  free(svg);
  assert_int_equal(rt_curves_write_svg(&c, scratch_path("no/dir/e.svg"), "t", NULL, &err), RT_ERR_IO);
}

typedef struct {
  int n;
  double rows[4][4];         /* loss, acc, val_loss, val_acc */
  RtFit fit;
  const char *text;
} ReadCase;

#define N NAN
static const ReadCase reading_cases[] = {
  {1, {{0.1, 0.982, 0.12, 0.971}}, RT_FIT_GOOD,
   "good fit: training accuracy 98.2%, validation 97.1% (gap 1.1 points, at most 5)"},
  {1, {{0.5, 0.84, 0.52, 0.835}}, RT_FIT_BIAS,
   "high bias: training accuracy 84.0% is below 90%, validation 83.5% (gap 0.5 points, at most 5): "
   "a bigger model or longer training should help"},
  {1, {{0.01, 0.998, 0.3, 0.931}}, RT_FIT_VARIANCE,
   "high variance: training accuracy 99.8%, validation 93.1% (gap 6.7 points, above 5): "
   "more data, regularisation or early stopping should help"},
  {1, {{0.6, 0.8, 0.9, 0.7}}, RT_FIT_BOTH,
   "high bias and high variance: training accuracy 80.0% is below 90%, validation 70.0% "
   "(gap 10.0 points, above 5): first a bigger model or longer training, then regularisation"},
  {1, {{0.1, 0.98, N, N}}, RT_FIT_UNKNOWN,
   "no high bias: training accuracy 98.0%; no validation numbers, so variance is not judged"},
  {1, {{0.9, 0.5, N, N}}, RT_FIT_BIAS,
   "high bias: training accuracy 50.0% is below 90%: a bigger model or longer training should "
   "help; no validation numbers, so variance is not judged"},
  {3, {{1.0, N, 1.1, N}, {0.5, N, 0.55, N}, {0.3, N, 0.33, N}}, RT_FIT_GOOD,
   "good fit: training loss 0.3 is 30% of the first epoch's 1 (at most 50%), validation loss 0.33 "
   "(10% above, at most 25%)"},
  {3, {{1.0, N, N, N}, {0.9, N, N, N}, {0.8, N, 0.85, N}}, RT_FIT_BIAS,
   "high bias: training loss 0.8 is 80% of the first epoch's 1 (above 50%), validation loss 0.85 "
   "(6% above, at most 25%): a bigger model or longer training should help"},
  {2, {{1.0, N, 1.0, N}, {0.2, N, 0.4, N}}, RT_FIT_VARIANCE,
   "high variance: training loss 0.2 is 20% of the first epoch's 1 (at most 50%), validation loss "
   "0.4 (100% above, more than 25%): more data, regularisation or early stopping should help"},
  {4, {{0.5, 0.95, 0.5, 0.94}, {0.4, 0.96, 0.4, 0.95}, {0.3, 0.97, 0.3, 0.95}, {0.2, 0.98, 0.45, 0.95}},
   RT_FIT_VARIANCE,
   "high variance: training accuracy 98.0%, validation 95.0% (gap 3.0 points, at most 5); "
   "validation loss 0.45 is 50% above its minimum 0.3 at epoch 3: more data, regularisation or "
   "early stopping should help"},
  {0, {{0}}, RT_FIT_UNKNOWN, "no epochs recorded"},
  {3, {{1, 0.5, 1, 0.5}, {2, 0.4, 2, 0.4}, {N, N, N, N}}, RT_FIT_UNKNOWN,
   "the training loss is nan at epoch 3: training diverged (try a lower learning rate)"},
};
#undef N

static void test_reading(void **state) {
  for (size_t i = 0; i < sizeof reading_cases / sizeof *reading_cases; i++) {
    const ReadCase *rc = &reading_cases[i];
    RtCurves c = curves(rc->n, rc->rows);
    char buf[512];
    RtFit fit = rt_bias_variance_reading(&c, NULL, buf, sizeof buf);
    if (fit != rc->fit || strcmp(buf, rc->text) != 0)
      fail_msg("case %zu: got %d '%s'\n want %d '%s'", i, fit, buf, rc->fit, rc->text);
    rt_curves_free(&c);
  }
}

static void test_reading_thresholds(void **state) {
  RtCurves c = curves(1, (const double[][4]){{0.5, 0.84, 0.52, 0.835}});
  RtFitThresholds th = RT_FIT_DEFAULTS;
  th.min_acc = 0.8;
  char buf[512];
  assert_int_equal(rt_bias_variance_reading(&c, &th, buf, sizeof buf), RT_FIT_GOOD);
  assert_string_equal(buf, "good fit: training accuracy 84.0%, validation 83.5% (gap 0.5 points, at most 5)");
  th.max_acc_gap = 0.001;
  assert_int_equal(rt_bias_variance_reading(&c, &th, buf, sizeof buf), RT_FIT_VARIANCE);
  char small[16];
  rt_bias_variance_reading(&c, NULL, small, sizeof small);   /* truncates, terminated */
  assert_int_equal(strlen(small), 15);
  rt_curves_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_csv), cmocka_unit_test(test_svg), cmocka_unit_test(test_svg_loss_only),
    cmocka_unit_test(test_reading), cmocka_unit_test(test_reading_thresholds),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

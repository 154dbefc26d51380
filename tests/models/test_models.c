/* Whole models against PyTorch. Each example of examples/ runs through the
 * public API (kiln_load, kiln_load_weights, kiln_run) on the weights and
 * input PyTorch used in make_fixtures.py, and must give its output within
 * 1e-4 by DESIGN.md's measure (per tensor max|got - ref| / max|ref|).
 * The same model must give the same bits at 1 and 2 threads, and the same
 * rows for a smaller batch than it was compiled for. The error paths kiln.h
 * promises (a missing or mis-shaped parameter, a mis-shaped or unnamed
 * input) are driven with weight files derived from the fixtures, written
 * into a fresh temporary folder. KILN_SRC is the source tree; API_DEMO the
 * built examples/api_demo. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <kiln.h>
#include "runtime/rt.h"

#define TOLERANCE 1e-4

/* One example model and its fixture: examples/NAME.kiln, tests/models/NAME*. */
typedef struct {
  const char *name;
  const char *input;          /* the model's input name */
} Example;

static const Example examples[] = {{"mlp", "x"}, {"cnn", "x"}, {"resnet", "img"}};

static char tmp[256];         /* a fresh folder for derived weight files */

static const char *src_path(char *buf, size_t n, const char *fmt, const char *name) {
  char rel[256];
  snprintf(rel, sizeof rel, fmt, name);
  snprintf(buf, n, "%s/%s", getenv("KILN_SRC"), rel);
  return buf;
}

static RtTensor read_npy(const char *fmt, const char *name) {
  char path[512];
  RtTensor t;
  RtError err;
  RtStatus st = rt_npy_read(src_path(path, sizeof path, fmt, name), &t, &err);
  if (st != RT_OK)
    fail_msg("%s", err.msg);
  return t;
}

/* A model loaded from examples/NAME.kiln at `threads`, weights from `weights`
 * (a full path; NULL: the fixture). Fails the test on any error. */
static KilnModel *load(const Example *ex, int threads, const char *weights) {
  char path[512], wpath[512];
  KilnOptions opt;
  kiln_options_default(&opt);
  opt.threads = threads;
  KilnModel *m;
  if (kiln_load(src_path(path, sizeof path, "examples/%s.kiln", ex->name), &opt, &m) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  if (!weights)
    weights = src_path(wpath, sizeof wpath, "tests/models/%s.safetensors", ex->name);
  if (kiln_load_weights(m, weights) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

/* The first `rows` rows of x as the model's input. */
static KilnTensor input_rows(const Example *ex, const RtTensor *x, int64_t rows) {
  KilnTensor in = {ex->input, KILN_F32, x->rank, {0}, x->data};
  memcpy(in.shape, x->shape, sizeof in.shape);
  in.shape[0] = rows;
  return in;
}

static int64_t numel(const KilnTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++)
    n *= t->shape[i];
  return n;
}

/* Runs m on `in` and returns a malloc'd copy of its one output (kiln's
 * buffer lives only until the next run), checking the output's shape
 * against ref's with `rows` leading rows. */
static float *run_copy(KilnModel *m, const KilnTensor *in, const RtTensor *ref, int64_t rows) {
  KilnTensor out;
  if (kiln_run(m, in, 1, &out, 1) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  assert_int_equal(out.dtype, KILN_F32);
  assert_int_equal(out.rank, ref->rank);
  assert_int_equal(out.shape[0], rows);
  for (int i = 1; i < ref->rank; i++)
    assert_int_equal(out.shape[i], ref->shape[i]);
  size_t bytes = numel(&out) * sizeof(float);
  float *copy = malloc(bytes);
  assert_non_null(copy);
  memcpy(copy, out.data, bytes);
  return copy;
}

/* DESIGN.md's measure: max|got - ref| / max|ref|, over the whole tensor. */
static double rel_err(const float *got, const float *ref, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(got[i]))
      return INFINITY;
    diff = fmax(diff, fabs((double)got[i] - ref[i]));
    scale = fmax(scale, fabs((double)ref[i]));
  }
  return diff / scale;
}

/* ---- agreement ---------------------------------------------------------- */

/* Fixture agreement at 1 thread; then the same model at 2 threads (which
 * recompiles, kiln_set_threads raises the count) must give the same bits,
 * and a model compiled for 2 threads set down to 1 too. */
static void test_agreement(void **state) {
  const Example *ex = *state;
  RtTensor x = read_npy("tests/models/%s_x.npy", ex->name);
  RtTensor y = read_npy("tests/models/%s_y.npy", ex->name);
  int64_t n = rt_numel(&y), rows = x.shape[0];
  KilnTensor in = input_rows(ex, &x, rows);

  KilnModel *m = load(ex, 1, NULL);
  float *one = run_copy(m, &in, &y, rows);
  double err = rel_err(one, y.data, n);
  print_message("%s: max rel err %.3g vs PyTorch (batch %lld)\n", ex->name, err,
                (long long)rows);
  assert_true(err <= TOLERANCE);

  assert_int_equal(kiln_set_threads(m, 2), KILN_OK);
  float *two = run_copy(m, &in, &y, rows);
  assert_memory_equal(one, two, n * sizeof(float));
  kiln_free(m);

  m = load(ex, 2, NULL);
  float *fresh2 = run_copy(m, &in, &y, rows);
  assert_memory_equal(one, fresh2, n * sizeof(float));
  assert_int_equal(kiln_set_threads(m, 1), KILN_OK);
  float *down1 = run_copy(m, &in, &y, rows);
  assert_memory_equal(one, down1, n * sizeof(float));
  kiln_free(m);

  free(one), free(two), free(fresh2), free(down1);
  rt_tensor_free(&x), rt_tensor_free(&y);
}

/* The batch is a run-time argument: compiled for the fixture's batch, the
 * code must give the first 2 rows alone as it gave them in the full batch,
 * and the full batch again as the first time. */
static void test_smaller_batch(void **state) {
  const Example *ex = *state;
  RtTensor x = read_npy("tests/models/%s_x.npy", ex->name);
  RtTensor y = read_npy("tests/models/%s_y.npy", ex->name);
  int64_t rows = x.shape[0], cols = rt_numel(&y) / rows;
  KilnTensor full = input_rows(ex, &x, rows), two = input_rows(ex, &x, 2);

  KilnModel *m = load(ex, 2, NULL);
  float *all = run_copy(m, &full, &y, rows);
  float *part = run_copy(m, &two, &y, 2);
  double err = rel_err(part, all, 2 * cols);
  print_message("%s: batch 2 vs rows of batch %lld: max rel err %.3g%s\n", ex->name,
                (long long)rows, err,
                memcmp(part, all, 2 * cols * sizeof(float)) ? "" : " (bit-identical)");
  assert_true(err <= 1e-6);
  assert_true(rel_err(part, y.data, 2 * cols) <= TOLERANCE);
  float *again = run_copy(m, &full, &y, rows);
  assert_memory_equal(all, again, rows * cols * sizeof(float));
  kiln_free(m);
  free(all), free(part), free(again);
  rt_tensor_free(&x), rt_tensor_free(&y);
}

static void assert_mentions(const char *msg, const char *what);

/* ---- inputs read in place ------------------------------------------------- */

/* kiln_input_buffer: none before the first run; then the model's own
 * buffer, shaped as that run's input; an input written there gives the
 * bits of the same input copied in, run after run, and a second input
 * written there its own bits (the run reads the buffer, not what the last
 * run left). A run
 * that must compile anew (a larger batch) refuses the buffer it would
 * free, naming the input. */
static void test_input_in_place(void **state) {
  const Example *ex = *state;
  RtTensor x = read_npy("tests/models/%s_x.npy", ex->name);
  RtTensor y = read_npy("tests/models/%s_y.npy", ex->name);
  int64_t rows = x.shape[0], cols = rt_numel(&y) / rows, half = rows / 2;
  KilnTensor first = input_rows(ex, &x, half), second = first, buf;
  second.data = (float *)x.data + rt_numel(&x) / rows * half;   /* rows half .. 2 half */
  KilnModel *m = load(ex, 1, NULL);
  assert_int_equal(kiln_input_buffer(m, 0, &buf), KILN_ERR_ARG);
  assert_mentions(kiln_errors(m), ex->input);
  float *want1 = run_copy(m, &first, &y, half), *want2 = run_copy(m, &second, &y, half);

  assert_int_equal(kiln_input_buffer(m, 0, &buf), KILN_OK);
  assert_string_equal(buf.name, ex->input);
  assert_int_equal(buf.rank, first.rank);
  assert_memory_equal(buf.shape, first.shape, sizeof buf.shape);
  size_t bytes = numel(&first) * sizeof(float);
  const float *inputs[] = {first.data, second.data}, *want[] = {want1, want2};
  for (int r = 0; r < 2; r++) {
    memcpy(buf.data, inputs[r], bytes);
    for (int again = 0; again < 2; again++) {   /* the run leaves its input as it found it */
      float *got = run_copy(m, &buf, &y, half);
      assert_memory_equal(got, want[r], half * cols * sizeof(float));
      free(got);
    }
  }
  KilnTensor grown = buf, out;
  grown.shape[0] = rows;
  assert_int_equal(kiln_run(m, &grown, 1, &out, 1), KILN_ERR_INPUT);
  assert_mentions(kiln_errors(m), ex->input);
  kiln_free(m);
  free(want1), free(want2);
  rt_tensor_free(&x), rt_tensor_free(&y);
}

/* ---- error paths ---------------------------------------------------------- */

/* Writes tmp/NAME.safetensors: the cnn fixture without `drop`, and with
 * `reshape` (if not NULL) cut to its first half along dim 1. Returns its path. */
static const char *derived_weights(char *path, size_t n, const char *name, const char *drop,
                                   const char *reshape) {
  char src[512];
  RtSafetensors st;
  RtError err;
  if (rt_st_read(src_path(src, sizeof src, "tests/models/%s.safetensors", "cnn"), &st, &err))
    fail_msg("%s", err.msg);
  RtNamedTensor *ts = calloc(st.n, sizeof *ts);
  assert_non_null(ts);
  int k = 0;
  for (int i = 0; i < st.n; i++) {
    if (drop && !strcmp(st.tensors[i].name, drop))
      continue;
    ts[k] = st.tensors[i];
    if (reshape && !strcmp(ts[k].name, reshape)) {   /* [r, c] -> [r, c/2], row by row */
      RtTensor *t = &ts[k].t;
      int64_t r = t->shape[0], c = t->shape[1];
      float *d = t->data;
      for (int64_t row = 0; row < r; row++)
        memmove(d + row * (c / 2), d + row * c, (c / 2) * sizeof *d);
      t->shape[1] = c / 2;
    }
    k++;
  }
  snprintf(path, n, "%s/%s.safetensors", tmp, name);
  if (rt_st_write(path, ts, k, NULL, 0, &err))
    fail_msg("%s", err.msg);
  free(ts);
  rt_st_free(&st);
  return path;
}

/* Loads cnn, loads `weights` and runs on the digits: the first failing
 * status (kiln checks weights when it compiles, so the run may be the one
 * that fails), with the model left for kiln_errors. */
static KilnStatus try_cnn(const char *weights, const KilnTensor *in, KilnModel **out) {
  char path[512];
  KilnStatus st = kiln_load(src_path(path, sizeof path, "examples/%s.kiln", "cnn"), NULL, out);
  if (st == KILN_OK)
    st = kiln_load_weights(*out, weights);
  KilnTensor y;
  if (st == KILN_OK)
    st = kiln_run(*out, in, 1, &y, 1);
  return st;
}

static void assert_mentions(const char *msg, const char *what) {
  if (!msg)
    fail_msg("no error message where one should name \"%s\"", what);
  else if (!strstr(msg, what))
    fail_msg("error message lacks \"%s\":\n%s", what, msg);
}

static void test_missing_parameter(void **state) {
  char path[512];
  RtTensor x = read_npy("tests/models/%s_x.npy", "cnn");
  KilnTensor in = input_rows(&examples[1], &x, x.shape[0]);
  KilnModel *m;
  const char *w = derived_weights(path, sizeof path, "no_dense0", "dense0.weight", NULL);
  assert_int_equal(try_cnn(w, &in, &m), KILN_ERR_WEIGHTS);
  assert_mentions(kiln_errors(m), "dense0.weight");
  kiln_free(m);
  /* running statistics are state, not parameters, but just as needed */
  w = derived_weights(path, sizeof path, "no_var", "batchnorm1.running_var", NULL);
  assert_int_equal(try_cnn(w, &in, &m), KILN_ERR_WEIGHTS);
  assert_mentions(kiln_errors(m), "batchnorm1.running_var");
  kiln_free(m);
  rt_tensor_free(&x);
}

static void test_misshaped_parameter(void **state) {
  char path[512];
  RtTensor x = read_npy("tests/models/%s_x.npy", "cnn");
  KilnTensor in = input_rows(&examples[1], &x, x.shape[0]);
  KilnModel *m;
  const char *w = derived_weights(path, sizeof path, "half_dense0", NULL, "dense0.weight");
  assert_int_equal(try_cnn(w, &in, &m), KILN_ERR_WEIGHTS);
  const char *msg = kiln_errors(m);
  assert_mentions(msg, "dense0.weight");
  assert_mentions(msg, "64, 256");    /* what the file has */
  assert_mentions(msg, "64, 512");    /* what the model needs */
  kiln_free(m);
  rt_tensor_free(&x);
}

/* A bad input is an error status; the model then still runs a good one. */
static void test_bad_inputs(void **state) {
  const Example *ex = &examples[1];
  RtTensor x = read_npy("tests/models/%s_x.npy", "cnn");
  RtTensor y = read_npy("tests/models/%s_y.npy", "cnn");
  KilnModel *m = load(ex, 0, NULL);
  KilnTensor out;

  KilnTensor wide = input_rows(ex, &x, 4);
  wide.shape[2] = 4, wide.shape[3] = 16;     /* the same bytes, the wrong shape */
  assert_int_equal(kiln_run(m, &wide, 1, &out, 1), KILN_ERR_INPUT);
  assert_mentions(kiln_errors(m), "'x'");
  assert_mentions(kiln_errors(m), "4, 1, 4, 16");
  assert_mentions(kiln_errors(m), "1, 8, 8");

  KilnTensor flat = input_rows(ex, &x, 4);
  flat.rank = 2, flat.shape[1] = 64;
  assert_int_equal(kiln_run(m, &flat, 1, &out, 1), KILN_ERR_INPUT);
  assert_mentions(kiln_errors(m), "'x'");

  KilnTensor misnamed = input_rows(ex, &x, 4);
  misnamed.name = "pixels";
  assert_int_equal(kiln_run(m, &misnamed, 1, &out, 1), KILN_ERR_INPUT);
  assert_mentions(kiln_errors(m), "'x'");

  KilnTensor good = input_rows(ex, &x, x.shape[0]);
  float *got = run_copy(m, &good, &y, x.shape[0]);
  assert_true(rel_err(got, y.data, rt_numel(&y)) <= TOLERANCE);
  free(got);
  kiln_free(m);
  rt_tensor_free(&x), rt_tensor_free(&y);
}

/* ---- the example program -------------------------------------------------- */

/* examples/api_demo on each example model: exit 0, a line per sample (4). */
static void test_api_demo(void **state) {
  const Example *ex = *state;
  char path[512], cmd[2048], line[256];
  snprintf(cmd, sizeof cmd, "'%s' '%s' 2>&1", getenv("API_DEMO"),
           src_path(path, sizeof path, "examples/%s.kiln", ex->name));
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  int samples = 0;
  while (fgets(line, sizeof line, p)) {
    int i, c;
    if (sscanf(line, "sample %d: class %d", &i, &c) == 2 && i == samples && c >= 0 && c < 10)
      samples++;
    else
      print_message("api_demo: %s", line);
  }
  int st = pclose(p);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  assert_int_equal(samples, 4);
}

/* ---- set-up ---------------------------------------------------------------- */

static int make_tmp(void **state) {
  snprintf(tmp, sizeof tmp, "%s/kiln-models-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  return mkdtemp(tmp) ? 0 : -1;
}

static int remove_tmp(void **state) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  return system(cmd) == 0 ? 0 : -1;
}

/* A test per example, named test_fn(model) in the report. */
#define ONE_MODEL(fn, i, model) {#fn "(" model ")", fn, NULL, NULL, (void *)&examples[i]}
#define PER_MODEL(fn) ONE_MODEL(fn, 0, "mlp"), ONE_MODEL(fn, 1, "cnn"), ONE_MODEL(fn, 2, "resnet")

int main(void) {
  if (!getenv("KILN_SRC") || !getenv("API_DEMO")) {
    fputs("test_models: set KILN_SRC (the source tree) and API_DEMO\n", stderr);
    return 1;
  }
  const struct CMUnitTest tests[] = {
      PER_MODEL(test_agreement),
      PER_MODEL(test_smaller_batch),
      PER_MODEL(test_input_in_place),
      cmocka_unit_test(test_missing_parameter),
      cmocka_unit_test(test_misshaped_parameter),
      cmocka_unit_test(test_bad_inputs),
      PER_MODEL(test_api_demo),
  };
  return cmocka_run_group_tests(tests, make_tmp, remove_tmp);
}

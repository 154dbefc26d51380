/* The training C API (include/kiln.h): one step against SGD worked by hand,
 * kiln_train on the digits set, an interrupted run resumed to the same
 * weights bit for bit, and evaluation agreeing with kiln_run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kiln.h"
#include "runtime/rt.h"

static char tmp[256];

static const char *in_tmp(const char *name) {
  static char path[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(path[k], sizeof path[k], "%s/%s", tmp, name);
  return path[k];
}

static int setup(void **state) {
  snprintf(tmp, sizeof tmp, "/tmp/kiln-train-api-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  return 0;
}

static int teardown(void **state) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  return system(cmd);
}

static KilnModel *load_string(const char *text) {
  KilnModel *m;
  KilnStatus st = kiln_load_string("t.kiln", text, strlen(text), NULL, &m);
  if (st != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

static KilnModel *load_example(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/examples/%s", getenv("KILN_SRC"), name);
  KilnModel *m;
  KilnStatus st = kiln_load(path, NULL, &m);
  if (st != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

static void ok(KilnModel *m, KilnStatus st) {
  if (st != KILN_OK)
    fail_msg("%s: %s", kiln_status_name(st), kiln_errors(m));
}

/* The model's weights as saved: a copy of a named tensor's floats. */
static float *saved(KilnModel *m, const char *name, int64_t n) {
  ok(m, kiln_save_weights(m, in_tmp("w.safetensors")));
  RtSafetensors st;
  assert_int_equal(rt_st_read(in_tmp("w.safetensors"), &st, NULL), RT_OK);
  const RtTensor *t = rt_st_find(&st, name);
  assert_non_null(t);
  assert_int_equal(rt_numel(t), n);
  float *copy = malloc(n * sizeof *copy);
  memcpy(copy, t->data, n * sizeof *copy);
  rt_st_free(&st);
  return copy;
}

/* ---- one step, by hand -------------------------------------------------------- */

static const char *linear =
    "model lin(x: f32[N, 3]) -> (logits: f32[N, 2]) {\n"
    "  logits = x |> dense(2)\n"
    "}\n"
    "train lin {\n"
    "  loss = cross_entropy(logits, label)\n"
    "  optimizer = sgd(lr = 0.5)\n"
    "}\n";

/* logits = x W^T + b; loss = mean_i -log softmax(logits_i)[y_i];
 * dlogits = (softmax - onehot) / N; dW = dlogits^T x; db = sum dlogits. */
static void test_step_matches_sgd_by_hand(void **state) {
  KilnModel *m = load_string(linear);
  float x[4][3] = {{1, 2, -1}, {0.5f, -1, 2}, {-2, 0.25f, 1}, {1, 1, 1}};
  int64_t y[4] = {0, 1, 1, 0};
  KilnTensor in[2] = {{"x", KILN_F32, 2, {4, 3}, x}, {"label", KILN_I64, 1, {4}, y}}, logits;
  float loss;
  ok(m, kiln_init_weights(m, 5));
  ok(m, kiln_run(m, in, 1, &logits, 1));         /* draws the weights */
  float *w = saved(m, "logits.weight", 6), *b = saved(m, "logits.bias", 2);
  ok(m, kiln_train_step(m, in, 2, 0.5f, &loss));
  double dw[2][3] = {{0}}, db[2] = {0}, ref = 0;
  for (int i = 0; i < 4; i++) {
    double z[2], mx, s = 0;
    for (int o = 0; o < 2; o++) {
      z[o] = b[o];
      for (int k = 0; k < 3; k++)
        z[o] += (double)w[o * 3 + k] * x[i][k];
    }
    mx = fmax(z[0], z[1]);
    for (int o = 0; o < 2; o++)
      s += exp(z[o] - mx);
    ref += -(z[y[i]] - mx - log(s)) / 4;
    for (int o = 0; o < 2; o++) {
      double g = (exp(z[o] - mx) / s - (o == y[i])) / 4;
      db[o] += g;
      for (int k = 0; k < 3; k++)
        dw[o][k] += g * x[i][k];
    }
  }
  assert_true(fabs(loss - ref) < 1e-5 * fabs(ref));
  float *w1 = saved(m, "logits.weight", 6), *b1 = saved(m, "logits.bias", 2);
  for (int o = 0; o < 2; o++) {
    assert_true(fabs(b1[o] - (b[o] - 0.5 * db[o])) < 1e-5);
    for (int k = 0; k < 3; k++)
      assert_true(fabs(w1[o * 3 + k] - (w[o * 3 + k] - 0.5 * dw[o][k])) < 1e-5);
  }
  /* a smaller batch runs on the same compiled step; a wrong label type is an error */
  in[0].shape[0] = in[1].shape[0] = 3;
  ok(m, kiln_train_step(m, in, 2, 0.5f, &loss));
  in[1].dtype = KILN_F32;
  assert_int_equal(kiln_train_step(m, in, 2, 0.5f, &loss), KILN_ERR_INPUT);
  assert_non_null(strstr(kiln_errors(m), "label"));
  free(w);
  free(b);
  free(w1);
  free(b1);
  kiln_free(m);
}

/* The memory plan gives the step all it needs when it is compiled: later
 * steps leave the heap as they found it (mallinfo2 counts what is in use,
 * mmap'ed blocks included). */
static void test_steps_after_the_first_allocate_nothing(void **state) {
  KilnModel *m = load_string(linear);
  float x[4][3] = {{1, 2, -1}, {0.5f, -1, 2}, {-2, 0.25f, 1}, {1, 1, 1}};
  int64_t y[4] = {0, 1, 1, 0};
  KilnTensor in[2] = {{"x", KILN_F32, 2, {4, 3}, x}, {"label", KILN_I64, 1, {4}, y}};
  float loss;
  ok(m, kiln_init_weights(m, 5));
  ok(m, kiln_train_step(m, in, 2, 0.1f, &loss));
  ok(m, kiln_train_step(m, in, 2, 0.1f, &loss));
  struct mallinfo2 before = mallinfo2();
  for (int i = 0; i < 20; i++)
    ok(m, kiln_train_step(m, in, 2, 0.1f, &loss));
  struct mallinfo2 after = mallinfo2();
  assert_int_equal(after.uordblks, before.uordblks);
  assert_int_equal(after.hblkhd, before.hblkhd);
  kiln_free(m);
}

/* ---- the digits set -------------------------------------------------------------- */

typedef struct Log {
  int n, stop_at;
  KilnEpoch e[64];
} Log;

static int record(const KilnEpoch *e, void *user) {
  Log *log = user;
  log->e[log->n++] = *e;
  return log->n == log->stop_at;
}

static void test_digits_reaches_97(void **state) {
  KilnModel *m = load_example("digits_mlp.kiln");
  Log log = {0};
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.on_epoch = record;
  o.user = &log;
  ok(m, kiln_train(m, &o));
  assert_true(log.n >= 2);
  assert_int_equal(kiln_epoch_count(m), log.n);
  KilnEpoch last = log.e[log.n - 1], got;
  print_message("digits_mlp (API): val_acc %.4f after %d epochs\n", last.val_acc, log.n);
  assert_true(last.val_acc >= 0.97);
  ok(m, kiln_epoch_get(m, log.n - 1, &got));
  assert_true(got.val_acc == last.val_acc && got.loss == last.loss);
  assert_true(isnan(last.test_acc));
  /* evaluation on the same split measures the same numbers */
  int64_t n;
  ok(m, kiln_evaluate(m, NULL, &got, &n));
  assert_int_equal(n, 359);
  assert_true(got.acc == last.val_acc);
  kiln_free(m);
}

/* The convolutional example trains too (conv, batchnorm, pooling and
 * dropout in the step): its loss falls within two epochs, and 1 and 2
 * threads give the same numbers, bit for bit. */
static void test_digits_cnn_learns(void **state) {
  Log log[2] = {{0}};
  for (int threads = 1; threads <= 2; threads++) {
    KilnModel *m = load_example("digits_cnn.kiln");
    KilnTrainOptions o;
    kiln_train_options_default(&o);
    o.epochs = 2;
    o.on_epoch = record;
    o.user = &log[threads - 1];
    ok(m, kiln_set_threads(m, threads));
    ok(m, kiln_train(m, &o));
    kiln_free(m);
  }
  Log *l = &log[1];
  assert_int_equal(l->n, 2);
  print_message("digits_cnn: val_acc %.4f after 2 epochs (%.2f s/epoch)\n", l->e[1].val_acc,
                l->e[1].seconds);
  assert_true(l->e[1].loss < l->e[0].loss);
  assert_true(l->e[1].val_acc > 0.85);
  for (int i = 0; i < 2; i++) {
    assert_true(log[0].e[i].loss == l->e[i].loss);
    assert_true(log[0].e[i].acc == l->e[i].acc);
    assert_true(log[0].e[i].val_loss == l->e[i].val_loss);
  }
}

/* Stopped after epoch 3 by the callback, then resumed by a fresh model
 * from the checkpoint: the same weights and curves as a run that never
 * stopped. */
static void test_resume_is_exact(void **state) {
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.epochs = 6;
  o.on_epoch = record;
  Log full = {0}, cut = {0}, rest = {0};
  KilnModel *a = load_example("digits_mlp.kiln");
  o.user = &full;
  o.checkpoint = in_tmp("a.ckpt");
  o.out = in_tmp("a.safetensors");
  ok(a, kiln_train(a, &o));
  KilnModel *b = load_example("digits_mlp.kiln");
  cut.stop_at = 3;
  o.user = &cut;
  o.checkpoint = in_tmp("b.ckpt");
  o.out = NULL;
  ok(b, kiln_train(b, &o));
  assert_int_equal(cut.n, 3);
  kiln_free(b);
  KilnModel *c = load_example("digits_mlp.kiln");
  o.user = &rest;
  o.resume = in_tmp("b.ckpt");
  o.out = in_tmp("c.safetensors");
  ok(c, kiln_train(c, &o));
  assert_int_equal(rest.n, 3);
  assert_int_equal(kiln_epoch_count(c), 6);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rest.e[i].epoch, 4 + i);
    assert_true(rest.e[i].loss == full.e[3 + i].loss);
    assert_true(rest.e[i].val_loss == full.e[3 + i].val_loss);
    assert_int_equal(rest.e[i].steps, full.e[3 + i].steps);
  }
  RtSafetensors wa, wc;
  assert_int_equal(rt_st_read(in_tmp("a.safetensors"), &wa, NULL), RT_OK);
  assert_int_equal(rt_st_read(in_tmp("c.safetensors"), &wc, NULL), RT_OK);
  assert_int_equal(wa.n, wc.n);
  for (int i = 0; i < wa.n; i++) {
    assert_string_equal(wa.tensors[i].name, wc.tensors[i].name);
    assert_int_equal(rt_tensor_bytes(&wa.tensors[i].t), rt_tensor_bytes(&wc.tensors[i].t));
    assert_memory_equal(wa.tensors[i].t.data, wc.tensors[i].t.data, rt_tensor_bytes(&wa.tensors[i].t));
  }
  rt_st_free(&wa);
  rt_st_free(&wc);
  kiln_free(a);
  kiln_free(c);
}

/* After training, kiln_run predicts with the trained weights: its argmax
 * over a held-out set matches kiln_evaluate's accuracy on the same file. */
static void test_run_after_train_agrees_with_evaluate(void **state) {
  char path[1024];
  RtTensor x, y;
  snprintf(path, sizeof path, "%s/examples/data/digits_x.npy", getenv("KILN_SRC"));
  assert_int_equal(rt_npy_read(path, &x, NULL), RT_OK);
  snprintf(path, sizeof path, "%s/examples/data/digits_y.npy", getenv("KILN_SRC"));
  assert_int_equal(rt_npy_read(path, &y, NULL), RT_OK);
  x.rank = 2;
  x.shape[1] = 64;
  assert_int_equal(rt_npy_write(in_tmp("x.npy"), &x, NULL), RT_OK);
  assert_int_equal(rt_npy_write(in_tmp("y.npy"), &y, NULL), RT_OK);
  KilnModel *m = load_example("digits_mlp.kiln");
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.epochs = 5;
  ok(m, kiln_train(m, &o));
  KilnTensor in = {"x", KILN_F32, 2, {64, 64}, x.data}, out;
  ok(m, kiln_run(m, &in, 1, &out, 1));
  int correct = 0;
  for (int r = 0; r < 64; r++) {
    const float *p = (const float *)out.data + r * 10;
    int best = 0;
    for (int c = 1; c < 10; c++)
      best = p[c] > p[best] ? c : best;
    correct += best == ((int64_t *)y.data)[r];
  }
  o.data = in_tmp("x.npy");
  o.labels = in_tmp("y.npy");
  KilnEpoch e;
  int64_t n;
  ok(m, kiln_evaluate(m, &o, &e, &n));
  assert_int_equal(n, 64);
  assert_true(fabs(e.acc - correct / 64.0) < 1e-12);
  assert_true(correct >= 56);
  rt_tensor_free(&x);
  rt_tensor_free(&y);
  kiln_free(m);
}

/* A size that only a parameter's extent gives (learned positions, T) is
 * bound by the weights: the model then runs without --size, as the one
 * that saved them, and an input of another T is an error naming it. */
static void test_weights_bind_a_size(void **state) {
  static const char *text = "model s(ids: i32[N, T]) -> (y) {\n"
                            "  param pos: f32[T, 4] = normal(0, 1)\n"
                            "  y = (ids |> embedding(5, 4)) + pos\n"
                            "}\n";
  KilnOptions o;
  kiln_options_default(&o);
  o.sizes = "T=3";
  KilnModel *a, *b;
  ok(NULL, kiln_load_string("s.kiln", text, strlen(text), &o, &a));
  int32_t ids[6] = {0, 1, 2, 3, 4, 0};
  KilnTensor in = {"ids", KILN_I32, 2, {2, 3}, ids}, ya, yb;
  ok(a, kiln_init_weights(a, 1));
  ok(a, kiln_run(a, &in, 1, &ya, 1));
  ok(a, kiln_save_weights(a, in_tmp("s.safetensors")));
  b = load_string(text);
  KilnTensor info;
  ok(b, kiln_input_info(b, 0, &info));
  assert_int_equal(info.shape[1], -1);
  ok(b, kiln_load_weights(b, in_tmp("s.safetensors")));
  ok(b, kiln_input_info(b, 0, &info));
  assert_int_equal(info.shape[1], 3);
  ok(b, kiln_run(b, &in, 1, &yb, 1));
  assert_memory_equal(ya.data, yb.data, 2 * 3 * 4 * sizeof(float));
  in.shape[1] = 2;
  assert_int_equal(kiln_run(b, &in, 1, &yb, 1), KILN_ERR_INPUT);
  assert_non_null(strstr(kiln_errors(b), "ids"));
  kiln_free(a);
  kiln_free(b);
}

/* A driver learns a step's inputs from the model: its own, then the labels. */
static void test_step_inputs_described(void **state) {
  KilnModel *m = load_string(linear);
  KilnTensor t;
  assert_int_equal(kiln_train_input_count(m), 2);
  ok(m, kiln_train_input_info(m, 0, &t));
  assert_string_equal(t.name, "x");
  assert_int_equal(t.dtype, KILN_F32);
  assert_int_equal(t.rank, 2);
  assert_int_equal(t.shape[0], -1);
  assert_int_equal(t.shape[1], 3);
  ok(m, kiln_train_input_info(m, 1, &t));
  assert_string_equal(t.name, "label");
  assert_int_equal(t.dtype, KILN_I64);
  assert_int_equal(t.rank, 1);
  assert_int_equal(t.shape[0], -1);
  assert_int_equal(kiln_train_input_info(m, 2, &t), KILN_ERR_ARG);
  kiln_free(m);
}

static void test_api_errors(void **state) {
  KilnModel *m = load_string("model p(x: f32[N, 3]) -> (y: f32[N, 2]) {\n  y = x |> dense(2)\n}\n");
  KilnTensor t;
  assert_int_equal(kiln_train_input_count(m), -1);
  assert_non_null(strstr(kiln_errors(m), "no train block"));
  assert_int_equal(kiln_train_input_info(m, 0, &t), KILN_ERR_MODEL);
  assert_int_equal(kiln_train(m, NULL), KILN_ERR_MODEL);
  assert_non_null(strstr(kiln_errors(m), "no train block"));
  kiln_free(m);
  m = load_string(linear);
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  assert_int_equal(kiln_train(m, &o), KILN_ERR_ARG);      /* no data in the block */
  assert_non_null(strstr(kiln_errors(m), "data"));
  o.split = 2;
  assert_int_equal(kiln_train(m, &o), KILN_ERR_ARG);
  assert_int_equal(kiln_train(NULL, &o), KILN_ERR_ARG);
  assert_int_equal(kiln_train_step(m, NULL, 0, 0.1f, NULL), KILN_ERR_INPUT);
  kiln_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_step_matches_sgd_by_hand, setup, teardown),
      cmocka_unit_test_setup_teardown(test_steps_after_the_first_allocate_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_digits_reaches_97, setup, teardown),
      cmocka_unit_test_setup_teardown(test_digits_cnn_learns, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume_is_exact, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_after_train_agrees_with_evaluate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_weights_bind_a_size, setup, teardown),
      cmocka_unit_test_setup_teardown(test_step_inputs_described, setup, teardown),
      cmocka_unit_test_setup_teardown(test_api_errors, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

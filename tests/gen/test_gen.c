/* Generation through the C API and the kiln command: the step function
 * reproduces the full model's outputs step by step (LSTM and GRU, two
 * layers, and a causal attention model stepped as a window; the same bits
 * at 1 and 2 threads); a model trained on text()
 * keeps its vocabulary in its weights and checkpoints, evaluates in nats
 * per symbol, and refuses data of another vocabulary; kiln sample prints
 * what a reference sampler over the step's logits draws. */
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
#include "kiln.h"
#include "runtime/rt.h"
#include "reference.h"
#include "tests/shell.h"

enum { B = 2, T = 6, V = 7, O = 5 };

static void ok(KilnModel *m, KilnStatus st) {
  if (st != KILN_OK)
    fail_msg("%s: %s", kiln_status_name(st), kiln_errors(m));
}

static KilnModel *load_string(const char *text, int threads) {
  KilnModel *m;
  KilnOptions o;
  kiln_options_default(&o);
  o.threads = threads;
  KilnStatus st = kiln_load_string("t.kiln", text, strlen(text), &o, &m);
  if (st != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

static void assert_error(KilnModel *m, KilnStatus st, const char *a, const char *b) {
  assert_int_not_equal(st, KILN_OK);
  const char *e = kiln_errors(m);
  if (!strstr(e, a) || (b && !strstr(e, b)))
    fail_msg("expected '%s' and '%s' in: %s", a, b ? b : "", e);
}

/* ---- the step function against the full model ---- */

/* The outputs of all T steps, [B, T, O], from the step function. */
static void run_steps(KilnStep *s, const int32_t *ids, float *y) {
  kiln_step_reset(s);
  for (int t = 0; t < T; t++) {
    int32_t col[B];
    for (int b = 0; b < B; b++)
      col[b] = ids[b * T + t];
    KilnTensor in = {"ids", KILN_I32, 2, {B, 1}, col}, o;
    assert_int_equal(kiln_step_run(s, &in, 1, &o, 1), KILN_OK);
    assert_int_equal(o.rank, 3);
    assert_int_equal(o.shape[1], 1);
    for (int b = 0; b < B; b++)
      memcpy(y + (b * T + t) * O, (float *)o.data + b * O, O * sizeof(float));
  }
}

/* m, weights drawn from seed 3, on test ids [B, T]: the full model's
 * outputs into want, the step function's (for B sequences) into got. */
static KilnStep *full_and_steps(KilnModel *m, int32_t *ids, float *want, float *got) {
  ok(m, kiln_init_weights(m, 3));
  for (int i = 0; i < B * T; i++)
    ids[i] = (i * 5 + 2) % V;
  KilnTensor in = {"ids", KILN_I32, 2, {B, T}, ids}, full;
  ok(m, kiln_run(m, &in, 1, &full, 1));
  memcpy(want, full.data, B * T * O * sizeof(float));
  KilnStep *s;
  ok(m, kiln_step_create(m, B, &s));
  run_steps(s, ids, got);
  return s;
}

static void check_step(const char *cell, int nstate) {
  char src[512];
  snprintf(src, sizeof src,
           "model m(ids: i32[N, T]) -> (y: f32[N, T, %d]) {\n"
           "  y = ids |> embedding(%d, 4) |> %s(6, layers=2) |> dense(%d)\n"
           "}\n", O, V, cell, O);
  KilnModel *m = load_string(src, 2);
  int32_t ids[B * T];
  float want[B * T * O], got2[B * T * O], got1[B * T * O];
  KilnStep *s = full_and_steps(m, ids, want, got2);
  assert_int_equal(kiln_step_state_count(s), nstate);
  for (int i = 0; i < B * T * O; i++)
    if (fabsf(got2[i] - want[i]) > 1e-5f)
      fail_msg("%s: step output %d is %g, the full model's %g", cell, i, got2[i], want[i]);
  KilnTensor st;
  ok(m, kiln_step_state(s, 0, &st));
  assert_string_equal(st.name, "state.0");
  assert_int_equal(st.shape[0], B);
  assert_int_equal(st.shape[1], 6);
  assert_true(((float *)st.data)[0] != 0);   /* the state moved on */
  ok(m, kiln_set_threads(m, 1));
  run_steps(s, ids, got1);
  assert_memory_equal(got1, got2, sizeof got1);   /* the same bits at 1 and 2 threads */
  kiln_step_reset(s);
  assert_true(((float *)st.data)[0] == 0);
  int32_t three[3] = {0};
  KilnTensor bad = {"ids", KILN_I32, 2, {3, 1}, three}, o;
  assert_error(m, kiln_step_run(s, &bad, 1, &o, 1), "a step of 3 sequences", "at most 2");
  kiln_step_free(s);
  kiln_free(m);
}

static void test_step_lstm(void **state) {
  (void)state;
  check_step("lstm", 4);                     /* h, c of two layers */
}

static void test_step_gru(void **state) {
  (void)state;
  check_step("gru", 2);
}

/* No step: a model with no scan and no sequence axis; a scan that runs
 * backwards. */
static void test_step_refused(void **state) {
  (void)state;
  KilnModel *m = load_string("model m(x: f32[N]) -> (y) {\n  y = x * 2\n}\n", 1);
  KilnStep *s;
  assert_error(m, kiln_step_create(m, 1, &s), "has no scan", "sequence axis (dim 1)");
  kiln_free(m);
  m = load_string("model m(ids: i32[N, T]) -> (y) {\n"
                  "  y = ids |> embedding(5, 4) |> gru(3, bidirectional=true) |> dense(2)\n}\n", 1);
  assert_error(m, kiln_step_create(m, 1, &s), "runs backwards over T", "no step function");
  kiln_free(m);
}

/* A causal transformer (no scan) steps as a window: its outputs at each
 * position are the full model's there, the same bits at 1 and 2 threads,
 * and a sequence ends at T (bound when the model is loaded). */
static void test_step_window(void **state) {
  (void)state;
  static const char src[] =
      "model m(ids: i32[N, T]) -> (y: f32[N, T, 5]) {\n"
      "  param pos: f32[T, 8] = normal(0, 1)\n"
      "  h = (ids |> embedding(7, 8)) + pos\n"
      "  y = h |> attention(2, causal=true) |> dense(5)\n"
      "}\n";
  KilnModel *m;
  KilnOptions o;
  kiln_options_default(&o);
  o.threads = 2;
  o.sizes = "T=6";
  KilnStatus st = kiln_load_string("t.kiln", src, strlen(src), &o, &m);
  ok(m, st);
  int32_t ids[B * T];
  float want[B * T * O], got2[B * T * O], got1[B * T * O];
  KilnStep *s = full_and_steps(m, ids, want, got2);
  assert_int_equal(kiln_step_state_count(s), 0);
  for (int i = 0; i < B * T * O; i++)
    if (fabsf(got2[i] - want[i]) > 1e-5f * (1 + fabsf(want[i])))
      fail_msg("window step output %d is %g, the full model's %g", i, got2[i], want[i]);
  ok(m, kiln_set_threads(m, 1));
  run_steps(s, ids, got1);
  assert_memory_equal(got1, got2, sizeof got1);
  KilnTensor one = {"ids", KILN_I32, 2, {B, 1}, ids}, out;
  assert_error(m, kiln_step_run(s, &one, 1, &out, 1), "window of 6 positions is full", NULL);
  kiln_step_free(s);
  kiln_free(m);
}

/* ---- a tiny text model: vocabulary, per-symbol loss, sampling ---- */

static const char *words = "abc\nab\nca\nbca\ncab\nbb\naca\nc\nba\nabcab\ncc\nbac\n";

/* The tiny model over `data`, trained or not; returns the source. */
static const char *tiny_model(const char *data, int classes) {
  static char src[1024];
  snprintf(src, sizeof src,
           "model w(ids: i32[N, T]) -> (logits: f32[N, T, %d]) {\n"
           "  logits = ids |> embedding(%d, 8) |> gru(8) |> dense(%d)\n"
           "}\n"
           "train w {\n"
           "  data = text(\"%s\", lines = true)\n"
           "  split = 0.25  batch = 4  epochs = 3  seed = 1\n"
           "  loss = cross_entropy(logits, next, ignore_index = -1)\n"
           "  optimizer = adam(lr = 1e-2)\n"
           "}\n", classes, classes, classes, in_tmp(data));
  return src;
}

static KilnModel *train_tiny(void) {
  write_file("words.txt", words);
  KilnModel *m = load_string(tiny_model("words.txt", 4), 2);
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.out = in_tmp("w.safetensors");
  o.checkpoint = in_tmp("w.ckpt.safetensors");
  ok(m, kiln_train(m, &o));
  return m;
}

static void test_vocab_in_weights(void **state) {
  (void)state;
  kiln_free(train_tiny());
  KilnModel *m = load_string(tiny_model("words.txt", 4), 1);
  assert_null(kiln_vocab(m, NULL));
  ok(m, kiln_load_weights(m, in_tmp("w.safetensors")));
  int lines = 0;
  assert_string_equal(kiln_vocab(m, &lines), "abc");
  assert_int_equal(lines, 1);
  RtSafetensors ck;
  assert_int_equal(rt_st_read(in_tmp("w.ckpt.safetensors"), &ck, NULL), RT_OK);
  assert_string_equal(rt_st_meta(&ck, "kiln.vocab"), "abc");
  assert_string_equal(rt_st_meta(&ck, "kiln.text"), "lines");
  rt_st_free(&ck);
  write_file("other.txt", "abd\nda\n");        /* 4 symbols too, another vocabulary */
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.data = in_tmp("other.txt");
  KilnEpoch e;
  assert_error(m, kiln_evaluate(m, &o, &e, NULL), "w.safetensors holds a vocabulary of 4 symbols",
               "other.txt has 4");
  write_file("five.txt", "abcd\n");
  o.data = in_tmp("five.txt");
  assert_error(m, kiln_evaluate(m, &o, &e, NULL), "five.txt: 5 symbols", "has 4 classes");
  kiln_free(m);
}

/* A running text in windows: its vocabulary holds the newline and a
 * two-byte character, which the metadata (JSON) must carry back intact. */
static void test_window_vocab(void **state) {
  (void)state;
  write_file("corpus.txt", "ab\nba caf\xc3\xa9\nabc ab\nc\xc3\xa9 ba\n");
  char src[1024];
  snprintf(src, sizeof src,
           "model c(ids: i32[N, T]) -> (logits: f32[N, T, 8]) {\n"
           "  logits = ids |> embedding(8, 4) |> rnn(6) |> dense(8)\n"
           "}\n"
           "train c {\n"
           "  data = text(\"%s\", window = 4)  split = 0.25  batch = 2  epochs = 1\n"
           "  loss = cross_entropy(logits, next)\n"
           "}\n", in_tmp("corpus.txt"));
  KilnModel *m = load_string(src, 1);
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.out = in_tmp("c.safetensors");
  ok(m, kiln_train(m, &o));
  kiln_free(m);
  m = load_string(src, 1);
  ok(m, kiln_load_weights(m, in_tmp("c.safetensors")));
  int lines = 1;
  assert_string_equal(kiln_vocab(m, &lines), "\n abcf\xc3\xa9");
  assert_int_equal(lines, 0);
  kiln_free(m);
}

/* kiln_evaluate's loss is the mean over the symbols, padding skipped:
 * the same number from the logits of kiln_run. */
static void test_loss_per_symbol(void **state) {
  (void)state;
  KilnModel *m = train_tiny();
  RtText txt;
  RtTextOptions to = {.lines = true};
  assert_int_equal(rt_text_read(in_tmp("words.txt"), &to, &txt, NULL), RT_OK);
  int64_t n = txt.x.shape[0], steps = txt.x.shape[1];
  KilnTensor in = {"ids", KILN_I32, 2, {n, steps}, txt.x.data}, lo;
  ok(m, kiln_run(m, &in, 1, &lo, 1));
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n * steps; i++) {
    int64_t y = ((int64_t *)txt.y.data)[i];
    const float *l = (const float *)lo.data + i * 4;
    double z = 0;
    for (int c = 0; c < 4; c++)
      z += exp(l[c]);
    if (y >= 0) {
      sum -= l[y] - log(z);
      count++;
    }
  }
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.data = in_tmp("words.txt");
  KilnEpoch e;
  ok(m, kiln_evaluate(m, &o, &e, NULL));
  assert_true(fabs(e.loss - sum / count) < 1e-5);
  rt_text_free(&txt);
  kiln_free(m);
}

/* ---- kiln sample ---- */

static void feed(KilnStep *s, int32_t sym, const float **logits) {
  KilnTensor in = {"ids", KILN_I32, 2, {1, 1}, &sym}, o;
  assert_int_equal(kiln_step_run(s, &in, 1, &o, 1), KILN_OK);
  *logits = o.data;
}

/* What kiln sample --prime PRIME --count 3 --length 12 --temperature 0.9
 * --seed 5 must print, drawn here from the step's logits. */
static void expected_words(const char *prime, char *text) {
  KilnModel *m = load_string(tiny_model("words.txt", 4), 1);
  ok(m, kiln_load_weights(m, in_tmp("w.safetensors")));
  KilnStep *s;
  ok(m, kiln_step_create(m, 1, &s));
  uint64_t draw = 0;
  for (int w = 0; w < 3; w++) {
    const float *l;
    kiln_step_reset(s);
    feed(s, 0, &l);
    for (const char *p = prime; *p; p++)
      feed(s, *p - 'a' + 1, &l);
    text += sprintf(text, "%s", prime);
    for (int k = 0; k < 12; k++) {
      int64_t sym = reference_pick(l, 4, 0.9, 5, draw++);
      if (sym == 0)
        break;
      *text++ = (char)('a' + sym - 1);
      feed(s, (int32_t)sym, &l);
    }
    *text++ = '\n';
  }
  *text = 0;
  kiln_step_free(s);
  kiln_free(m);
}

static void test_sample_cli(void **state) {
  (void)state;
  write_file("words.txt", words);
  write_file("w.kiln", tiny_model("words.txt", 4));
  assert_int_equal(kiln("train w.kiln --epochs 2 -o w.safetensors"), 0);
  const char *args = "--count 3 --length 12 --temperature 0.9 --seed 5";
  char want[512];
  expected_words("b", want);
  assert_int_equal(kiln("sample w.kiln --weights w.safetensors --prime b %s --threads 1", args), 0);
  assert_string_equal(out, want);
  assert_int_equal(kiln("sample w.kiln --weights w.safetensors --prime b %s --threads 2", args), 0);
  assert_string_equal(out, want);
  /* a sequence length bound at load is replaced by the step's 1 */
  assert_int_equal(kiln("sample w.kiln --weights w.safetensors --prime b %s --size T=8", args), 0);
  assert_string_equal(out, want);
  assert_int_equal(kiln("sample w.kiln --weights w.safetensors --prime bx %s", args), 1);
  assert_non_null(strstr(out, "--prime: 'x' is not in the model's vocabulary"));
  KilnModel *m = load_string(tiny_model("words.txt", 4), 1);
  ok(m, kiln_init_weights(m, 1));
  ok(m, kiln_save_weights(m, in_tmp("fresh.safetensors")));
  kiln_free(m);
  assert_int_equal(kiln("sample w.kiln --weights fresh.safetensors"), 1);
  assert_non_null(strstr(out, "fresh.safetensors holds no vocabulary"));
}

static int setup(void **state) {
  (void)state;
  return tmp_make("gen");
}

static int teardown(void **state) {
  (void)state;
  return tmp_remove();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_step_lstm),        cmocka_unit_test(test_step_gru),
      cmocka_unit_test(test_step_refused), cmocka_unit_test(test_step_window),
      cmocka_unit_test(test_vocab_in_weights),
      cmocka_unit_test(test_loss_per_symbol),  cmocka_unit_test(test_sample_cli),
      cmocka_unit_test(test_window_vocab),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* runtime/text.c: the vocabulary and the two layouts of text() data, the
 * errors that name the file and line, the count-model baselines against
 * numbers worked by hand, and the sampler against a reference that draws
 * from the logits' softmax in this file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "runtime/rt.h"
#include "reference.h"

static RtText read_ok(const char *text, RtTextOptions o) {
  RtText t;
  RtError e;
  if (rt_text_read_mem(text, strlen(text), "w.txt", &o, &t, &e) != RT_OK)
    fail_msg("%s", e.msg);
  return t;
}

static void assert_fails(const char *text, RtTextOptions o, const char *want) {
  RtText t;
  RtError e;
  assert_int_not_equal(rt_text_read_mem(text, strlen(text), "w.txt", &o, &t, &e), RT_OK);
  if (!strstr(e.msg, want))
    fail_msg("expected '%s' in: %s", want, e.msg);
  assert_null(t.vocab);
}

static void check_row(const RtText *t, int64_t row, const int32_t *x, const int64_t *y) {
  int64_t T = t->x.shape[1];
  for (int64_t s = 0; s < T; s++) {
    assert_int_equal(((int32_t *)t->x.data)[row * T + s], x[s]);
    assert_int_equal(((int64_t *)t->y.data)[row * T + s], y[s]);
  }
}

/* "cab" / "ba" / "Zz" (dropped by a-z) / "" / "\r\n" line ends: END, a, b, c. */
static void test_lines(void **state) {
  (void)state;
  RtText t = read_ok("cab\r\nba\nZz\n\nb", (RtTextOptions){.lines = true, .chars = "a-z"});
  assert_int_equal(t.nvocab, 4);
  assert_int_equal(t.vocab[0], RT_TEXT_END);
  assert_int_equal(t.vocab[1], 'a');
  assert_int_equal(t.vocab[3], 'c');
  assert_int_equal(t.skipped, 1);
  assert_int_equal(t.x.shape[0], 3);
  assert_int_equal(t.x.shape[1], 4);        /* the longest word and its end */
  check_row(&t, 0, (int32_t[]){0, 3, 1, 2}, (int64_t[]){3, 1, 2, 0});
  check_row(&t, 1, (int32_t[]){0, 2, 1, 0}, (int64_t[]){2, 1, 0, -1});
  check_row(&t, 2, (int32_t[]){0, 2, 0, 0}, (int64_t[]){2, 0, -1, -1});
  rt_text_free(&t);
}

static void test_windows_utf8(void **state) {
  (void)state;
  RtText t = read_ok("h\xc3\xa9h\xc3\xa9!\nh", (RtTextOptions){.window = 3});
  /* END, '\n', '!', 'h', 'é': sorted by code point */
  assert_int_equal(t.nvocab, 5);
  assert_int_equal(t.vocab[4], 0xe9);
  assert_int_equal(t.x.shape[0], 2);        /* 7 characters: (7 - 1) / 3 windows */
  check_row(&t, 0, (int32_t[]){3, 4, 3}, (int64_t[]){4, 3, 4});
  check_row(&t, 1, (int32_t[]){4, 2, 1}, (int64_t[]){2, 1, 3});
  char *v = rt_text_vocab_utf8(t.vocab, t.nvocab);
  assert_string_equal(v, "\n!h\xc3\xa9");
  int32_t *back, *bad = NULL;
  assert_int_equal(rt_text_vocab_parse(v, &back), 5);
  assert_memory_equal(back, t.vocab, 5 * sizeof *back);
  assert_int_equal(rt_text_vocab_parse("ba", &bad), -1);     /* not sorted: not ours */
  assert_null(bad);
  free(v);
  free(back);
  rt_text_free(&t);
}

static void test_errors(void **state) {
  (void)state;
  RtTextOptions lines = {.lines = true}, win = {.window = 4};
  assert_fails("", lines, "w.txt: the file is empty");
  assert_fails("ok\nabcdef\n", (RtTextOptions){.lines = true, .max_len = 5},
               "w.txt:2: a line of 6 characters is longer than maxlen = 5");
  assert_fails("ab\n\xff\n", lines, "w.txt:2: not UTF-8");
  assert_fails("ab\n\xc0\xaf\n", lines, "not UTF-8");       /* overlong '/' */
  RtText t;
  RtError e;
  assert_int_not_equal(rt_text_read_mem("ab\n\0b", 5, "w.txt", &lines, &t, &e), RT_OK);
  assert_non_null(strstr(e.msg, "w.txt:2: a NUL"));
  assert_fails("ABC\nD\n", (RtTextOptions){.lines = true, .chars = "a-z"}, "w.txt: no lines");
  assert_fails("abcd", win, "do not make one window of 4");
  assert_fails("abcd", (RtTextOptions){0}, "window = T");
  assert_int_equal(rt_text_read("/nonexistent/words.txt", &lines, &t, &e), RT_ERR_IO);
  assert_non_null(strstr(e.msg, "/nonexistent/words.txt"));
  /* A file that reads but does not parse fails as its bytes in memory do. */
  char path[] = P_tmpdir "/kiln-text-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "ab\n\xff\n", 4), 4);
  close(fd);
  assert_int_equal(rt_text_read(path, &lines, &t, &e), RT_ERR_FORMAT);
  assert_non_null(strstr(e.msg, ":2: not UTF-8"));
  unlink(path);
}

/* Training pairs (x -> y): 0->1, 1->2, 0->1, 1->0, padding; validation
 * 0->1, 1->1. V = 3, k = 1. Unigram counts 1:2 2:1 0:1 of 4;
 * bigram rows 0: {1: 2} of 2, 1: {2: 1, 0: 1} of 2. */
static void test_baselines(void **state) {
  (void)state;
  int32_t xt[] = {0, 1, 0, 1, 0}, xv[] = {0, 1};
  int64_t yt[] = {1, 2, 1, 0, -1}, yv[] = {1, 1};
  RtTensor XT = {RT_I32, 1, {5}, xt}, YT = {RT_I64, 1, {5}, yt};
  RtTensor XV = {RT_I32, 1, {2}, xv}, YV = {RT_I64, 1, {2}, yv};
  RtTextBaselines b;
  assert_int_equal(rt_text_baselines(&XT, &YT, &XV, &YV, 3, 1, &b, NULL), RT_OK);
  assert_int_equal(b.chars, 2);
  double uni = -(log(3.0 / 7) + log(3.0 / 7)) / 2;
  double bi = -(log(3.0 / 5) + log(1.0 / 5)) / 2;
  assert_true(fabs(b.unigram - uni) < 1e-12);
  assert_true(fabs(b.bigram - bi) < 1e-12);
}

static void test_sampling(void **state) {
  (void)state;
  float l[5] = {0.5f, -1, 2, 0.1f, 1.2f};
  int hist[5] = {0};
  for (uint64_t i = 0; i < 4000; i++) {
    int64_t k = rt_sample_index(l, 5, 0.8, 42, i);
    assert_int_equal(k, reference_pick(l, 5, 0.8, 42, i));
    assert_int_equal(k, rt_sample_index(l, 5, 0.8, 42, i));   /* a pure function */
    hist[k]++;
  }
  double z = 0;
  for (int j = 0; j < 5; j++)
    z += exp(l[j] / 0.8);
  for (int j = 0; j < 5; j++)                /* the frequencies are the softmax's */
    assert_true(fabs(hist[j] / 4000.0 - exp(l[j] / 0.8) / z) < 0.03);
  assert_int_equal(rt_sample_index(l, 5, 0, 42, 7), 2);       /* temperature 0: argmax */
  int same = 0;
  for (uint64_t i = 0; i < 100; i++)
    same += rt_sample_index(l, 5, 1, 1, i) == rt_sample_index(l, 5, 1, 2, i);
  assert_true(same < 90);                    /* another seed, other draws */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lines),     cmocka_unit_test(test_windows_utf8),
      cmocka_unit_test(test_errors),    cmocka_unit_test(test_baselines),
      cmocka_unit_test(test_sampling),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

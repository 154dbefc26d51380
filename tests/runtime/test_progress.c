/* The progress bar, with a fake clock: the plain format (a log or a pipe)
 * byte for byte, its throttling to one line per `every` seconds, the
 * terminal format (\r, the bar, ESC[K) through the tty flag, its redraw
 * limit, ETAs over an hour, resumed runs and missing values. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

static double now;
static double fake_clock(void) { return now; }

typedef struct {
  FILE *f;
  char *buf;
  size_t len;
} Capture;

static RtProgress start(Capture *c, int epochs, int64_t total) {
  c->f = open_memstream(&c->buf, &c->len);
  RtProgress p;
  rt_progress_init(&p, c->f, epochs, total);
  p.clock = fake_clock;
  return p;
}

/* What was written since the last call, then the buffer is reset. */
static char *taken(Capture *c) {
  fflush(c->f);
  static char out[4096];
  snprintf(out, sizeof out, "%.*s", (int)c->len, c->buf);   /* len: the stream's position */
  fseeko(c->f, 0, SEEK_SET);
  return out;
}

static void finish(Capture *c) {
  fclose(c->f);
  free(c->buf);
}

static RtEpochStats stats(double loss, double acc, double val_loss, double val_acc, double lr) {
  RtEpochStats e = rt_epoch_blank(0);
  e.loss = loss, e.acc = acc, e.val_loss = val_loss, e.val_acc = val_acc, e.lr = lr;
  return e;
}

static void test_plain_lines(void **state) {
  Capture c;
  RtProgress p = start(&c, 2, 1000);
  assert_false(p.tty);         /* a memory stream is no terminal */
  now = 100;
  rt_progress_begin_epoch(&p, 1);
  now = 101;
  rt_progress_update(&p, 250, 0.9, 0.5);
  assert_string_equal(taken(&c), "");                /* not 5 s yet */
  now = 106;
  rt_progress_update(&p, 500, 0.8, 0.6);
  assert_string_equal(taken(&c), "epoch 1/2 500/1000 (50%)  83 samples/s  loss 0.8  acc 60.00%  eta 0:18\n");
  now = 110;
  rt_progress_update(&p, 1000, 0.7, 0.65);
  assert_string_equal(taken(&c), "");                /* 4 s after the last line */
  now = 112;
  RtEpochStats e = stats(0.75, 0.65, 0.7, 0.66, 0.01);
  rt_progress_end_epoch(&p, &e);
  assert_string_equal(taken(&c), "epoch 1/2 1000/1000  12.0 s  100 samples/s  loss 0.75  acc 65.00%  "
                                 "val_loss 0.7  val_acc 66.00%  lr 0.01\n");
  rt_progress_begin_epoch(&p, 2);
  now = 120;
  rt_progress_update(&p, 400, 0.5, NAN);
  /* ETA over the whole run: 20 s for 1,400 samples, 600 left */
  assert_string_equal(taken(&c), "epoch 2/2 400/1000 (40%)  50 samples/s  loss 0.5  eta 0:09\n");
  now = 130;
  rt_progress_end_epoch(&p, NULL);
  /* the epoch is complete at its end, whatever the last update said */
  assert_string_equal(taken(&c), "epoch 2/2 1000/1000  18.0 s  56 samples/s\n");
  finish(&c);
}

static void test_terminal(void **state) {
  Capture c;
  RtProgress p = start(&c, 1, 100);
  p.tty = true;
  now = 0;
  rt_progress_begin_epoch(&p, 1);
  now = 0.05;
  rt_progress_update(&p, 10, 2.0, 0.1);
  assert_string_equal(taken(&c), "");                /* within 0.1 s of the start */
  now = 0.5;
  rt_progress_update(&p, 25, 1.5, 0.2);
  assert_string_equal(taken(&c), "\repoch 1/1 [=====>..............] 25/100  50 samples/s  loss 1.5  "
                                 "acc 20.00%  eta 0:02\033[K");
  now = 0.55;
  rt_progress_update(&p, 30, 1.4, 0.2);
  assert_string_equal(taken(&c), "");
  now = 2;
  rt_progress_update(&p, 100, 1.0, 0.3);
  assert_string_equal(taken(&c), "\repoch 1/1 [====================] 100/100  50 samples/s  loss 1  "
                                 "acc 30.00%  eta 0:00\033[K");
  now = 2.5;
  RtEpochStats e = stats(1.0, NAN, NAN, NAN, NAN);
  rt_progress_end_epoch(&p, &e);
  assert_string_equal(taken(&c), "\repoch 1/1 100/100  2.5 s  50 samples/s  loss 1\033[K\n");
  /* a narrow terminal: the line is clipped to 29 columns, so '\r' can redraw it */
  p.width = 30;
  rt_progress_begin_epoch(&p, 1);
  now = 3.5;
  rt_progress_update(&p, 50, 0.5, NAN);
  assert_string_equal(taken(&c), "\repoch 1/1 [==========>.......\033[K");
  now = 4;
  rt_progress_end_epoch(&p, &e);   /* the epoch's line stays whole */
  assert_string_equal(taken(&c), "\repoch 1/1 100/100  1.5 s  67 samples/s  loss 1\033[K\n");
  finish(&c);
}

static void test_long_and_resumed(void **state) {
  Capture c;
  RtProgress p = start(&c, 100, 1000);
  p.unit = "steps";
  now = 0;
  rt_progress_begin_epoch(&p, 1);
  now = 10;
  rt_progress_update(&p, 10, 0.25, NAN);
  /* 10 s for 10 of 100,000 steps: 99,990 s left */
  assert_string_equal(taken(&c), "epoch 1/100 10/1000 (1%)  1 steps/s  loss 0.25  eta 27:46:30\n");
  now = 200;
  rt_progress_end_epoch(&p, NULL);
  assert_string_equal(taken(&c), "epoch 1/100 1000/1000  3:20  5 steps/s\n");
  finish(&c);
  /* a run resumed at epoch 9 of 10 counts from there */
  p = start(&c, 10, 100);
  now = 50;
  rt_progress_begin_epoch(&p, 9);
  now = 60;
  rt_progress_update(&p, 50, 0.125, 0.875);
  assert_string_equal(taken(&c), "epoch 9/10 50/100 (50%)  5 samples/s  loss 0.125  acc 87.50%  eta 0:30\n");
  finish(&c);
}

static void test_no_stream(void **state) {
  RtProgress p;
  rt_progress_init(&p, NULL, 1, 10);
  assert_false(p.tty);
  p.clock = fake_clock;
  now = 0;
  rt_progress_begin_epoch(&p, 1);
  now = 100;
  rt_progress_update(&p, 5, 1, 1);
  rt_progress_end_epoch(&p, NULL);
  assert_true(rt_monotonic_seconds() > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_plain_lines), cmocka_unit_test(test_terminal),
    cmocka_unit_test(test_long_and_resumed), cmocka_unit_test(test_no_stream),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

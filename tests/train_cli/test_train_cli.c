/* `kiln train` and `kiln eval` as a user meets them: real training on the
 * digits set (accuracy, --json, curves, checkpoints, resume after a kill,
 * threads) and every bad input as a message and a non-zero exit. Each case
 * spawns the real binary (KILN) in a fresh temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "runtime/rt.h"
#include "tests/shell.h"

static bool same_files(const char *a, const char *b) {
  size_t na, nb;
  char *x = read_all(a, &na), *y = read_all(b, &nb);
  bool same = x && y && na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return same;
}

/* The digits example, with its data, copied into tmp so that every file
 * it writes lands there. */
static void copy_example(const char *name) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/data' && cp '%s/examples/%s' '%s/' && "
           "cp '%s/examples/data/digits.csv.gz' '%s/data/'", tmp, getenv("KILN_SRC"), name, tmp,
           getenv("KILN_SRC"), tmp);
  assert_int_equal(system(cmd), 0);
}

/* A tiny classifier of 4 features and 3 classes with its own CSV. */
static const char *tiny =
    "model tiny(x: f32[N, 4]) -> (logits: f32[N, 3]) {\n"
    "  logits = x |> dense(8) |> relu() |> dense(3)\n"
    "}\n"
    "train tiny {\n"
    "  data = csv(\"tiny.csv\", label = last)\n"
    "  split = 0.25  batch = 4  epochs = 2  seed = 3\n"
    "  loss = cross_entropy(logits, label)\n"
    "  optimizer = sgd(lr = 0.1)\n"
    "}\n";

/* rows of 4 features and a label; cell (bad_row, bad_col) replaced by bad */
static void write_tiny_csv(const char *name, int cols, int bad_row, int bad_col, const char *bad) {
  char text[8192] = "";
  for (int c = 0; c < cols; c++)
    snprintf(text + strlen(text), 64, c == cols - 1 ? "label\n" : "f%d,", c);
  for (int r = 0; r < 20; r++) {
    for (int c = 0; c < cols; c++) {
      char cell[64];
      if (r == bad_row && c == bad_col)
        snprintf(cell, sizeof cell, "%s", bad);
      else if (c == cols - 1)
        snprintf(cell, sizeof cell, "%d", r % 3);
      else
        snprintf(cell, sizeof cell, "%.3f", ((r * 7 + c * 3) % 11) / 10.0 + (r % 3));
      strcat(text, cell);
      strcat(text, c == cols - 1 ? "\n" : ",");
    }
  }
  write_file(name, text);
}

static int setup(void **state) {
  assert_int_equal(tmp_make("train"), 0);
  write_file("tiny.kiln", tiny);
  write_tiny_csv("tiny.csv", 5, -1, -1, NULL);
  return 0;
}

static int teardown(void **state) { return tmp_remove(); }

/* ---- --json lines ---------------------------------------------------------- */

typedef struct Epochs {
  int n, first;                /* epochs, numbered first, first + 1, ... */
  double loss[64], acc[64], val_loss[64], val_acc[64], lr[64], seconds[64];
  char line[64][512];
} Epochs;

static double num(const RtJson *o, const char *key) {
  const RtJson *v = rt_json_get(o, key);
  assert_non_null(v);
  assert_int_equal(v->kind, RT_JSON_NUM);
  return v->num;
}

/* Parses every line of out that starts with '{' as an epoch object. */
static void parse_epochs(Epochs *e) {
  RtArena *a = rt_arena_new();
  memset(e, 0, sizeof *e);
  for (char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (*p != '{')
      continue;
    size_t len = strcspn(p, "\n");
    RtJson *o;
    RtError err;
    if (rt_json_parse(a, p, len, "line", &o, &err) != RT_OK)
      fail_msg("not JSON: %.*s (%s)", (int)len, p, err.msg);
    assert_int_equal(o->kind, RT_JSON_OBJ);
    int k = e->n++;
    if (k == 0)
      e->first = (int)num(o, "epoch");
    assert_int_equal((int)num(o, "epoch"), e->first + k);
    e->loss[k] = num(o, "loss");
    e->acc[k] = num(o, "acc");
    e->val_loss[k] = num(o, "val_loss");
    e->val_acc[k] = num(o, "val_acc");
    e->lr[k] = num(o, "lr");
    e->seconds[k] = num(o, "seconds");
    assert_true(num(o, "steps") > 0);
    snprintf(e->line[k], sizeof e->line[k], "%.*s", (int)len, p);
  }
  rt_arena_free(a);
}

/* The line without its "seconds" member: what must repeat exactly. */
static void strip_seconds(char *line) {
  char *s = strstr(line, ", \"seconds\"");
  if (s)
    *s = 0;
}

/* ---- digits, end to end ------------------------------------------------------- */

static void test_digits_mlp_trains_to_97(void **state) {
  copy_example("digits_mlp.kiln");
  assert_int_equal(kiln("train digits_mlp.kiln --json -o d.safetensors --curves d 2>/dev/null"), 0);
  Epochs e;
  parse_epochs(&e);
  assert_true(e.n >= 2);
  assert_int_equal(e.first, 1);
  int last = e.n - 1;
  print_message("digits_mlp: %d epochs, val_acc %.4f, %.3f s/epoch\n", e.n, e.val_acc[last],
                e.seconds[last]);
  assert_true(e.val_acc[last] >= 0.97);
  assert_true(e.loss[last] < e.loss[0]);
  assert_true(e.acc[last] > 0.9 && e.acc[last] <= 1);
  /* the curves: a CSV line per epoch with the JSON's numbers, an SVG */
  size_t n;
  char *csv = read_all("d.csv", &n), *svg = read_all("d.svg", &n);
  assert_non_null(csv);
  assert_non_null(svg);
  assert_non_null(strstr(csv, "epoch,loss,acc,val_loss,val_acc,lr,seconds"));
  int lines = 0;
  for (char *p = csv; *p; p++)
    lines += *p == '\n';
  assert_int_equal(lines, e.n + 1);
  assert_non_null(strstr(svg, "<svg"));
  assert_non_null(strstr(svg, "</svg>"));
  free(csv);
  free(svg);
  /* eval reads the weights back and measures the same validation split */
  assert_int_equal(kiln("eval digits_mlp.kiln --weights d.safetensors --json"), 0);
  RtArena *a = rt_arena_new();
  RtJson *o;
  assert_int_equal(rt_json_parse(a, out, strlen(out), "eval", &o, NULL), RT_OK);
  assert_int_equal((int64_t)num(o, "samples"), 359);
  assert_true(fabs(num(o, "acc") - e.val_acc[last]) < 1e-12);
  assert_true(fabs(num(o, "loss") - e.val_loss[last]) < 1e-6 * e.val_loss[last]);
  rt_arena_free(a);
  assert_int_equal(kiln("eval digits_mlp.kiln --weights d.safetensors"), 0);
  assert_non_null(strstr(out, "acc "));
}

/* kiln run on the trained weights: the first 64 images, classified by an
 * argmax here, against their labels. */
static void test_run_uses_trained_weights(void **state) {
  copy_example("digits_mlp.kiln");
  assert_int_equal(kiln("train digits_mlp.kiln -o w.safetensors >/dev/null 2>&1"), 0);
  char path[1024];
  RtTensor x, y, logits;
  snprintf(path, sizeof path, "%s/examples/data/digits_x.npy", getenv("KILN_SRC"));
  assert_int_equal(rt_npy_read(path, &x, NULL), RT_OK);
  snprintf(path, sizeof path, "%s/examples/data/digits_y.npy", getenv("KILN_SRC"));
  assert_int_equal(rt_npy_read(path, &y, NULL), RT_OK);
  x.rank = 2;                                  /* [64, 1, 8, 8] -> [64, 64] */
  x.shape[1] = 64;
  assert_int_equal(rt_npy_write(in_tmp("x64.npy"), &x, NULL), RT_OK);
  assert_int_equal(kiln("run digits_mlp.kiln --weights w.safetensors -i x=x64.npy -o logits=l.npy"), 0);
  assert_int_equal(rt_npy_read(in_tmp("l.npy"), &logits, NULL), RT_OK);
  int correct = 0;
  for (int r = 0; r < 64; r++) {
    const float *p = (const float *)logits.data + r * 10;
    int best = 0;
    for (int c = 1; c < 10; c++)
      best = p[c] > p[best] ? c : best;
    correct += best == ((int64_t *)y.data)[r];
  }
  assert_true(correct >= 60);
  rt_tensor_free(&x);
  rt_tensor_free(&y);
  rt_tensor_free(&logits);
}

static void test_threads_same_losses(void **state) {
  copy_example("digits_mlp.kiln");
  Epochs one, two;
  assert_int_equal(kiln("train digits_mlp.kiln --epochs 3 --threads 1 --json -o t1.safetensors "
                        "--checkpoint t1.ckpt 2>/dev/null"), 0);
  parse_epochs(&one);
  assert_int_equal(kiln("train digits_mlp.kiln --epochs 3 --threads 2 --json -o t2.safetensors "
                        "--checkpoint t2.ckpt 2>/dev/null"), 0);
  parse_epochs(&two);
  assert_int_equal(one.n, 3);
  assert_int_equal(two.n, 3);
  for (int i = 0; i < 3; i++) {
    strip_seconds(one.line[i]);
    strip_seconds(two.line[i]);
    assert_string_equal(one.line[i], two.line[i]);
  }
  assert_true(same_files("t1.safetensors", "t2.safetensors"));
}

/* Starts kiln train in the background, kills it with SIGKILL once it has
 * reported `epochs` epochs, and returns. */
static void train_and_kill(const char *args, int epochs) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s 2>/dev/null", tmp, getenv("KILN"), args);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[1024];
  int seen = 0;
  while (seen < epochs && fgets(line, sizeof line, f))
    seen += line[0] == '{';
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  fclose(f);
  assert_int_equal(seen, epochs);
}

static int checkpoint_epoch(const char *name) {
  RtSafetensors ck;
  assert_int_equal(rt_st_read(in_tmp(name), &ck, NULL), RT_OK);
  int epoch = atoi(rt_st_meta(&ck, "epoch"));
  rt_st_free(&ck);
  return epoch;
}

/* A run killed mid-training, resumed from its last checkpoint, ends with
 * the weights of a run that never stopped, bit for bit. */
static void test_resume_after_kill_is_exact(void **state) {
  copy_example("digits_mlp.kiln");
  const char *args = "train digits_mlp.kiln --epochs 8 --json --checkpoint %s -o %s";
  char a[512];
  snprintf(a, sizeof a, args, "full.ckpt", "full.safetensors");
  assert_int_equal(kiln("%s 2>/dev/null", a), 0);
  snprintf(a, sizeof a, args, "cut.ckpt", "cut.safetensors");
  train_and_kill(a, 2);
  assert_false(exists("cut.safetensors"));
  int epoch = checkpoint_epoch("cut.ckpt");     /* intact, whenever the kill came */
  print_message("killed after epoch %d\n", epoch);
  assert_true(epoch >= 2 && epoch < 8);
  assert_int_equal(kiln("%s --resume cut.ckpt 2>/dev/null", a), 0);
  Epochs e;
  parse_epochs(&e);
  assert_int_equal(e.n, 8 - epoch);           /* only the epochs left are trained */
  assert_int_equal(e.first, epoch + 1);
  assert_true(same_files("full.safetensors", "cut.safetensors"));
  /* the resumed run's curves hold every epoch */
  size_t n;
  int lines = 0;
  char *csv = read_all("digits_mlp.curves.csv", &n);
  assert_non_null(csv);
  for (size_t i = 0; i < n; i++)
    lines += csv[i] == '\n';
  assert_int_equal(lines, 9);
  free(csv);
}

/* A train block with a test set: every JSON line carries test_loss and
 * test_acc, and kiln eval measures the test set. */
static void test_json_reports_the_test_set(void **state) {
  char text[2048];
  const char *split = strstr(tiny, "  split");
  assert_non_null(split);
  snprintf(text, sizeof text, "%.*s  test = csv(\"test.csv\", label = last)\n%s",
           (int)(split - tiny), tiny, split);
  write_file("tested.kiln", text);
  write_tiny_csv("test.csv", 5, -1, -1, NULL);
  assert_int_equal(kiln("train tested.kiln --json -o t.safetensors 2>/dev/null"), 0);
  RtArena *a = rt_arena_new();
  int lines = 0;
  for (char *p = out; *p; p = strchr(p, '\n') + 1, lines++) {
    RtJson *o;
    assert_int_equal(rt_json_parse(a, p, strcspn(p, "\n"), "line", &o, NULL), RT_OK);
    assert_true(num(o, "test_loss") > 0);
    assert_true(num(o, "test_acc") >= 0 && num(o, "test_acc") <= 1);
  }
  assert_int_equal(lines, 2);
  assert_int_equal(kiln("eval tested.kiln --weights t.safetensors --json"), 0);
  RtJson *o;
  assert_int_equal(rt_json_parse(a, out, strlen(out), "eval", &o, NULL), RT_OK);
  assert_int_equal((int64_t)num(o, "samples"), 20);
  rt_arena_free(a);
  /* without a test set there are no test fields */
  assert_int_equal(kiln("train tiny.kiln --json 2>/dev/null"), 0);
  assert_null(strstr(out, "test_"));
}

/* ---- a forecaster on series data ---------------------------------------------------- */

/* examples/sunspots.kiln for 3 epochs: the last JSON line holds the
 * validation errors. The baselines' are numpy's over the same file; the
 * model's RMSE is the last epoch's validation loss (an MSE of targets
 * normalised by the training years' std, 38.3057) in sunspot units. */
static void test_forecast_reports_baselines(void **state) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/data' && cp '%s/examples/sunspots.kiln' '%s/' && "
           "cp '%s/examples/data/sunspots.csv' '%s/data/'", tmp, getenv("KILN_SRC"), tmp,
           getenv("KILN_SRC"), tmp);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(kiln("train sunspots.kiln --epochs 3 --json -o s.safetensors 2>/dev/null"), 0);
  char *fc = strstr(out, "{\"forecast\""), *last = strstr(out, "{\"epoch\": 3,");
  assert_non_null(fc);
  assert_non_null(last);
  RtArena *a = rt_arena_new();
  RtJson *o, *ep;
  assert_int_equal(rt_json_parse(a, last, strcspn(last, "\n"), "epoch 3", &ep, NULL), RT_OK);
  assert_int_equal(rt_json_parse(a, fc, strcspn(fc, "\n"), "forecast", &o, NULL), RT_OK);
  const RtJson *f = rt_json_get(o, "forecast"), *b = rt_json_get(f, "baselines");
  assert_int_equal((int)num(f, "targets"), 40);
  assert_float_equal(num(rt_json_get(f, "model"), "rmse"),
                     38.30567229981651 * sqrt(num(ep, "val_loss")), 1e-3);
  assert_int_equal(b->kind, RT_JSON_ARR);
  assert_int_equal(b->n, 2);
  assert_float_equal(num(&b->items[0], "mae"), 22.745, 1e-4);
  assert_float_equal(num(&b->items[0], "rmse"), 29.889161915316393, 1e-4);
  assert_float_equal(num(&b->items[1], "period"), 11, 0);
  assert_float_equal(num(&b->items[1], "mae"), 25.725, 1e-4);
  assert_float_equal(num(&b->items[1], "rmse"), 33.96131622890962, 1e-4);
  rt_arena_free(a);
  /* --data replaces the file, not the kind: the years up to 1899, windowed alike */
  snprintf(cmd, sizeof cmd, "head -201 '%s/data/sunspots.csv' > '%s/early.csv'", tmp, tmp);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(kiln("train sunspots.kiln --data early.csv --epochs 1 -o s.safetensors"), 0);
  assert_non_null(strstr(out, "validation forecast errors over the last 40 values"));
  assert_int_equal(kiln("train sunspots.kiln --split 0.3 --epochs 1 -o s.safetensors"), 1);
  assert_non_null(strstr(out, "--split does not apply to series data"));
}

/* ---- checkpoints that go wrong ---------------------------------------------------- */

static void test_checkpoint_write_failure_keeps_previous(void **state) {
  assert_int_equal(kiln("train tiny.kiln --checkpoint ck.safetensors"), 0);
  assert_int_equal(checkpoint_epoch("ck.safetensors"), 2);
  /* a crash mid-write left a partial tmp file: the checkpoint is intact,
   * resuming works and the next write replaces the debris */
  write_file("ck.safetensors.tmp", "\x40\x00\x00\x00\x00\x00\x00\x00{\"half");
  assert_int_equal(kiln("train tiny.kiln --epochs 3 --resume ck.safetensors "
                        "--checkpoint ck.safetensors"), 0);
  assert_int_equal(checkpoint_epoch("ck.safetensors"), 3);
  assert_false(exists("ck.safetensors.tmp"));
  /* a write that cannot happen is an error and leaves the old file as it was */
  size_t n0, n1;
  char *before = read_all("ck.safetensors", &n0);
  assert_int_equal(mkdir(in_tmp("ck.safetensors.tmp"), 0755), 0);
  assert_int_equal(kiln("train tiny.kiln --epochs 4 --resume ck.safetensors "
                        "--checkpoint ck.safetensors"), 1);
  assert_non_null(strstr(out, "checkpoint"));
  assert_non_null(strstr(out, "ck.safetensors"));
  char *after = read_all("ck.safetensors", &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  free(before);
  free(after);
}

static void test_resume_refuses_other_checkpoints(void **state) {
  assert_int_equal(kiln("train tiny.kiln --checkpoint ck.safetensors -o w.safetensors"), 0);
  /* another model's checkpoint */
  char other[1024];
  snprintf(other, sizeof other, "%s", tiny);
  memcpy(strstr(other, "tiny(x"), "tinz", 4);
  memcpy(strstr(other, "train tiny"), "train tinz", 10);
  write_file("tinz.kiln", other);
  assert_int_equal(kiln("train tinz.kiln --resume ck.safetensors"), 1);
  assert_non_null(strstr(out, "checkpoint of model 'tiny', not of 'tinz'"));
  /* weights are not a checkpoint */
  assert_int_equal(kiln("train tiny.kiln --resume w.safetensors"), 1);
  assert_non_null(strstr(out, "not a kiln checkpoint"));
  /* another seed would not continue the same run */
  assert_int_equal(kiln("train tiny.kiln --resume ck.safetensors --seed 9"), 1);
  assert_non_null(strstr(out, "--seed 3"));
  /* another optimizer lacks the checkpoint's state */
  assert_int_equal(kiln("train tiny.kiln --resume ck.safetensors --optimizer 'adam(lr=0.01)'"), 1);
  assert_non_null(strstr(out, "optim."));
  assert_int_equal(kiln("train tiny.kiln --resume nothere.safetensors"), 1);
  assert_non_null(strstr(out, "nothere.safetensors"));
  write_file("junk.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":");
  assert_int_equal(kiln("train tiny.kiln --resume junk.safetensors"), 1);
  assert_non_null(strstr(out, "junk.safetensors"));
}

/* ---- bad data ----------------------------------------------------------------------- */

static void test_labels_out_of_range(void **state) {
  write_tiny_csv("bad.csv", 5, 6, 4, "7");
  assert_int_equal(kiln("train tiny.kiln --data bad.csv"), 1);
  assert_non_null(strstr(out, "bad.csv"));
  assert_non_null(strstr(out, "sample 6"));
  assert_non_null(strstr(out, "7"));
  write_tiny_csv("neg.csv", 5, 2, 4, "-1");
  assert_int_equal(kiln("train tiny.kiln --data neg.csv"), 1);
  assert_non_null(strstr(out, "sample 2"));
  write_tiny_csv("frac.csv", 5, 3, 4, "1.5");
  assert_int_equal(kiln("train tiny.kiln --data frac.csv"), 1);
  assert_non_null(strstr(out, "frac.csv"));
}

static void test_nan_and_missing_values(void **state) {
  write_tiny_csv("nan.csv", 5, 4, 1, "nan");
  assert_int_equal(kiln("train tiny.kiln --data nan.csv"), 1);
  assert_non_null(strstr(out, "nan.csv:6:"));           /* header + 5 rows */
  write_tiny_csv("empty.csv", 5, 9, 2, "");
  assert_int_equal(kiln("train tiny.kiln --data empty.csv"), 1);
  assert_non_null(strstr(out, "empty.csv:11:"));
  /* .npy features with a NaN, labels beside them */
  RtTensor x, y;
  assert_int_equal(rt_tensor_alloc(&x, RT_F32, 2, (int64_t[]){12, 4}, NULL), RT_OK);
  assert_int_equal(rt_tensor_alloc(&y, RT_I64, 1, (int64_t[]){12}, NULL), RT_OK);
  ((float *)x.data)[4 * 5 + 2] = NAN;
  assert_int_equal(rt_npy_write(in_tmp("x.npy"), &x, NULL), RT_OK);
  assert_int_equal(rt_npy_write(in_tmp("y.npy"), &y, NULL), RT_OK);
  assert_int_equal(kiln("train tiny.kiln --data x.npy --labels y.npy"), 1);
  assert_non_null(strstr(out, "x.npy"));
  assert_non_null(strstr(out, "sample 5"));
  ((float *)x.data)[4 * 5 + 2] = 0;
  assert_int_equal(rt_npy_write(in_tmp("x.npy"), &x, NULL), RT_OK);
  assert_int_equal(kiln("train tiny.kiln --data x.npy"), 1);        /* no labels */
  assert_non_null(strstr(out, "labels"));
  y.shape[0] = 11;
  assert_int_equal(rt_npy_write(in_tmp("y11.npy"), &y, NULL), RT_OK);
  assert_int_equal(kiln("train tiny.kiln --data x.npy --labels y11.npy"), 1);
  assert_non_null(strstr(out, "11"));
  assert_int_equal(kiln("train tiny.kiln --data x.npy --labels y.npy --epochs 1"), 0);
  rt_tensor_free(&x);
  rt_tensor_free(&y);
}

static void test_columns_must_match_the_model(void **state) {
  write_tiny_csv("wide.csv", 7, -1, -1, NULL);
  assert_int_equal(kiln("train tiny.kiln --data wide.csv"), 1);
  assert_non_null(strstr(out, "wide.csv: 6 feature columns"));
  assert_non_null(strstr(out, "f32[N, 4]"));
  RtTensor x, y;
  assert_int_equal(rt_tensor_alloc(&x, RT_F32, 2, (int64_t[]){12, 5}, NULL), RT_OK);
  assert_int_equal(rt_tensor_alloc(&y, RT_I64, 1, (int64_t[]){12}, NULL), RT_OK);
  assert_int_equal(rt_npy_write(in_tmp("x5.npy"), &x, NULL), RT_OK);
  assert_int_equal(rt_npy_write(in_tmp("y.npy"), &y, NULL), RT_OK);
  rt_tensor_free(&x);
  rt_tensor_free(&y);
  assert_int_equal(kiln("train tiny.kiln --data x5.npy --labels y.npy"), 1);
  assert_non_null(strstr(out, "x5.npy: 5 values per sample"));
  assert_int_equal(kiln("train tiny.kiln --data nothere.csv"), 1);
  assert_non_null(strstr(out, "nothere.csv"));
}

static void test_usage_errors(void **state) {
  assert_int_equal(kiln("train tiny.kiln --epochs 0"), 2);
  assert_int_equal(kiln("train tiny.kiln --split 1"), 2);
  assert_int_equal(kiln("train tiny.kiln --lr -1"), 2);
  assert_int_equal(kiln("train tiny.kiln --batch x"), 2);
  assert_int_equal(kiln("eval tiny.kiln"), 2);
  assert_non_null(strstr(out, "--weights"));
  assert_int_equal(kiln("run tiny.kiln -o w.safetensors"), 2);
  write_file("plain.kiln", "model plain(x: f32[N, 4]) -> (y: f32[N, 3]) {\n  y = x |> dense(3)\n}\n");
  assert_int_equal(kiln("train plain.kiln"), 1);
  assert_non_null(strstr(out, "no train block"));
  assert_int_equal(kiln("train tiny.kiln --optimizer 'adam(lr=)'"), 1);
  assert_non_null(strstr(out, "--optimizer"));
}

static void test_divergence_is_reported(void **state) {
  assert_int_equal(kiln("train tiny.kiln --lr 1e30"), 1);
  assert_non_null(strstr(out, "diverged"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_digits_mlp_trains_to_97, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_uses_trained_weights, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_same_losses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume_after_kill_is_exact, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_reports_the_test_set, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_write_failure_keeps_previous, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume_refuses_other_checkpoints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_labels_out_of_range, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nan_and_missing_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_columns_must_match_the_model, setup, teardown),
      cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_divergence_is_reported, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forecast_reports_baselines, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

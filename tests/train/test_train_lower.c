/* Train blocks and the training graph, without running anything:
 *   - the config: every setting read into FeTrain, every default, and every
 *     error path (unknown settings list the accepted ones, wrong types name
 *     the setting, unknown optimizers and schedules, missing arguments), all
 *     errors of a block in one run;
 *   - the loss: each function's graph and its label inputs, and its errors;
 *   - the step's graph: inputs (model, labels, lr), outputs (loss first),
 *     wrt marks, frozen parameters, batchnorm's running statistics updated
 *     in place, dropout's counter, and the evaluation graph without them;
 *   - pass_run_pipeline (autodiff, optimizer, memory plan) verifies it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "codegen/codegen.h"

/* The model every train block below trains, unless it brings its own. */
static const char digits[] =
    "model digits(x: f32[N, 1, 8, 8]) -> (logits: f32[N, 10]) {\n"
    "  h = x |> conv2d(8, k=3, pad=same, bias=false, name=\"conv\") |> batchnorm(name=\"bn1\")\n"
    "  h = h |> relu() |> maxpool(2) |> conv2d(8, k=3, pad=same, name=\"conv2\")\n"
    "  h = h |> batchnorm(name=\"bn2\") |> relu()\n"
    "  logits = h |> flatten() |> dropout(0.3) |> dense(10, name=\"fc\")\n"
    "}\n";

typedef struct Run {
  RtArena *arena;
  Diags diags;
  AstFile *file;
  FeTrain *t;
  char *errors;                /* every diagnostic, as printed */
} Run;

/* Source text put together (fe_parse copies it); four buffers in turn, so
 * one text may be made of another. */
__attribute__((format(printf, 1, 2)))
static const char *text(const char *fmt, ...) {
  static char buf[4][8192];
  static int next;
  char *b = buf[next++ % 4];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof buf[0], fmt, ap);
  va_end(ap);
  return b;
}

static Run *parse(const char *src) {
  Run *r = calloc(1, sizeof *r);
  r->arena = rt_arena_new();
  diag_init(&r->diags, r->arena);
  r->file = fe_parse(r->arena, "t.kiln", src, strlen(src), &r->diags);
  assert_non_null(r->file);
  if (r->diags.nerrors)
    fail_msg("the test source does not parse:\n%s", diag_to_string(&r->diags, r->arena));
  return r;
}

static void done(Run *r) {
  rt_arena_free(r->arena);
  free(r);
}

/* The config of `train digits { body }` (NULL after errors, in r->errors). */
static Run *config_of(const char *body) {
  Run *r = parse(text("%strain digits {\n%s\n}\n", digits, body));
  r->t = fe_train_config(r->arena, r->file, NULL, &r->diags);
  r->errors = diag_to_string(&r->diags, r->arena);
  return r;
}

static FeTrain *config_ok(Run *r) {
  if (!r->t)
    fail_msg("unexpected errors:\n%s", r->errors);
  return r->t;
}

static void expect_error(const char *body, const char *text) {
  Run *r = config_of(body);
  if (r->t || !strstr(r->errors, text))
    fail_msg("for `%s` expected an error with\n  %s\ngot:\n%s", body, text, r->errors);
  done(r);
}

/* ---- settings ------------------------------------------------------------- */

static void defaults(void **state) {
  Run *r = config_of("loss = cross_entropy(logits, label)");
  FeTrain *t = config_ok(r);
  assert_string_equal(t->name, "digits");
  assert_string_equal(t->model, "digits");
  assert_null(t->data.kind);
  assert_null(t->test.kind);
  assert_true(t->split == 0.2);
  assert_int_equal(t->batch, 32);
  assert_int_equal(t->epochs, 10);
  assert_int_equal(t->steps, 0);
  assert_int_equal(t->seed, 0);
  assert_int_equal(t->opt.kind, OPT_ADAM);
  assert_true(t->lr == 1e-3 && t->opt.beta1 == 0.9 && t->opt.beta2 == 0.999 && t->opt.eps == 1e-8);
  assert_true(t->opt.l2 == 0 && t->opt.clip_norm == 0 && t->opt.weight_decay == 0);
  assert_int_equal(t->sched.kind, SCHED_CONST);
  assert_int_equal(t->sched.warmup_epochs, 0);
  assert_int_equal(t->nfreeze, 0);
  assert_null(t->init_from);
  assert_null(t->checkpoint);
  assert_int_equal(t->checkpoint_every, 1);
  assert_non_null(t->loss);
  assert_int_equal(t->loc.line, 7);
  done(r);
}

static void every_setting(void **state) {
  Run *r = config_of(
      "data = csv(\"d.csv\", label = first, scale = 1/16)\n"
      "test = idx(\"t-images\", labels = \"t-labels\", scale = 0.5)\n"
      "split = 0.1  batch = 64  epochs = 30  steps = 1000  seed = 7\n"
      "loss = cross_entropy(logits, label)\n"
      "optimizer = sgd(0.05, momentum = 0.9, nesterov = true)\n"
      "schedule = step(every = 10, gamma = 0.5, warmup = 2)\n"
      "l2 = 1e-4 on [\"*.weight\", \"fc.*\"]  clip_norm = 5\n"
      "freeze = \"conv*\"  init_from = safetensors(\"w.safetensors\")\n"
      "checkpoint = \"ck.safetensors\"  checkpoint_every = 5");
  FeTrain *t = config_ok(r);
  assert_string_equal(t->data.kind, "csv");
  assert_string_equal(t->data.path, "d.csv");
  assert_int_equal(t->data.label_col, 0);
  assert_true(t->data.scale == 1.0 / 16);
  assert_int_equal(t->data.loc.line, 8);
  assert_string_equal(t->test.kind, "idx");
  assert_string_equal(t->test.path, "t-images");
  assert_string_equal(t->test.labels, "t-labels");
  assert_true(t->test.scale == 0.5);
  assert_true(t->split == 0.1);
  assert_int_equal(t->batch, 64);
  assert_int_equal(t->epochs, 30);
  assert_int_equal(t->steps, 1000);
  assert_int_equal(t->seed, 7);
  assert_int_equal(t->opt.kind, OPT_SGD);
  assert_true(t->lr == 0.05 && t->opt.momentum == 0.9 && t->opt.nesterov);
  assert_int_equal(t->sched.kind, SCHED_STEP);
  assert_true(t->sched.step_epochs == 10 && t->sched.gamma == 0.5);
  assert_int_equal(t->sched.warmup_epochs, 2);
  assert_true(t->opt.l2 == 1e-4);
  assert_int_equal(t->opt.nl2_on, 2);
  assert_string_equal(t->opt.l2_on[0], "*.weight");
  assert_string_equal(t->opt.l2_on[1], "fc.*");
  assert_true(t->opt.clip_norm == 5);
  assert_int_equal(t->nfreeze, 1);
  assert_string_equal(t->freeze[0], "conv*");
  assert_string_equal(t->init_from, "w.safetensors");
  assert_string_equal(t->checkpoint, "ck.safetensors");
  assert_int_equal(t->checkpoint_every, 5);
  done(r);
}

/* One setting line and what it gives. */
static FeTrain *one(const char *setting, Run **r) {
  *r = config_of(text("loss = mse(logits, t)\n%s", setting));
  return config_ok(*r);
}

static void optimizers(void **state) {
  Run *r;
  FeTrain *t = one("optimizer = adam(lr = 0.02, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)", &r);
  assert_true(t->opt.kind == OPT_ADAM && t->lr == 0.02 && t->opt.beta1 == 0.8 &&
              t->opt.beta2 == 0.99 && t->opt.eps == 1e-6);
  done(r);
  t = one("optimizer = adamw(weight_decay = 0.1)", &r);
  assert_true(t->opt.kind == OPT_ADAMW && t->lr == 1e-3 && t->opt.weight_decay == 0.1);
  done(r);
  t = one("optimizer = adamw", &r);   /* a bare name: the defaults */
  assert_true(t->opt.kind == OPT_ADAMW && t->opt.weight_decay == 0.01);
  done(r);
  t = one("optimizer = sgd()", &r);
  assert_true(t->opt.kind == OPT_SGD && t->lr == 0.01 && t->opt.momentum == 0 && !t->opt.nesterov);
  done(r);
  t = one("optimizer = rmsprop(1e-3, rho = 0.9)  l2 = 0.5", &r);
  assert_true(t->opt.kind == OPT_RMSPROP && t->lr == 1e-3 && t->opt.rho == 0.9 &&
              t->opt.eps == 1e-8 && t->opt.l2 == 0.5 && t->opt.nl2_on == 0);
  done(r);
  t = one("optimizer = rmsprop", &r);
  assert_true(t->opt.rho == 0.99 && t->lr == 0.01);
  done(r);
}

static void schedules(void **state) {
  Run *r;
  FeTrain *t = one("schedule = cosine()", &r);
  assert_true(t->sched.kind == SCHED_COSINE && t->sched.min_lr == 0);
  done(r);
  t = one("schedule = cosine(min_lr = 1e-5, warmup = 3)", &r);
  assert_true(t->sched.kind == SCHED_COSINE && t->sched.min_lr == 1e-5 &&
              t->sched.warmup_epochs == 3);
  done(r);
  t = one("schedule = step(5)", &r);
  assert_true(t->sched.kind == SCHED_STEP && t->sched.step_epochs == 5 && t->sched.gamma == 0.1);
  done(r);
  t = one("schedule = exp(0.95)", &r);
  assert_true(t->sched.kind == SCHED_EXP && t->sched.gamma == 0.95);
  done(r);
  t = one("schedule = inverse_time(decay = 0.5)", &r);
  assert_true(t->sched.kind == SCHED_INV_TIME && t->sched.decay == 0.5);
  done(r);
  t = one("schedule = warmup(epochs = 4)", &r);
  assert_true(t->sched.kind == SCHED_CONST && t->sched.warmup_epochs == 4);
  done(r);
  t = one("schedule = constant", &r);
  assert_true(t->sched.kind == SCHED_CONST && t->sched.warmup_epochs == 0);
  done(r);
}

static void data_forms(void **state) {
  Run *r;
  FeTrain *t = one("data = npy(\"x.npy\", labels = \"y.npy\")", &r);
  assert_string_equal(t->data.kind, "npy");
  assert_string_equal(t->data.labels, "y.npy");
  assert_true(t->data.scale == 1);
  done(r);
  t = one("data = csv(\"d.csv\")  freeze = [\"a.*\", \"b\"]  init_from = \"w.st\"", &r);
  assert_int_equal(t->data.label_col, -1);
  assert_int_equal(t->nfreeze, 2);
  assert_string_equal(t->freeze[1], "b");
  assert_string_equal(t->init_from, "w.st");
  done(r);
  t = one("data = csv(\"d.csv\", label = -2, scale = 2)", &r);
  assert_int_equal(t->data.label_col, -2);
  done(r);
  t = one("data = csv(\"d.csv\", label = last)  split = 0", &r);
  assert_int_equal(t->data.label_col, -1);
  assert_true(t->split == 0);
  done(r);
}

static void setting_errors(void **state) {
  expect_error("loss = mse(logits, t)  bach = 3",
               "unknown setting 'bach' (did you mean 'batch'?); the settings are model, data, "
               "test, split, batch, epochs, steps, seed, loss, optimizer, schedule, l2, "
               "clip_norm, freeze, init_from, checkpoint, checkpoint_every");
  expect_error("loss = mse(logits, t)  batch = 0.5", "batch must be an int, got the number 0.5");
  expect_error("loss = mse(logits, t)  batch = 0", "batch must be an int from 1 to 2147483647, got 0");
  expect_error("loss = mse(logits, t)  epochs = \"x\"", "epochs must be an int, got the string \"x\"");
  expect_error("loss = mse(logits, t)  steps = -1", "steps must be an int from 0 to");
  expect_error("loss = mse(logits, t)  seed = last", "seed must be an int, got the name 'last'");
  expect_error("loss = mse(logits, t)  split = 1", "split must be within [0, 1), got 1");
  expect_error("loss = mse(logits, t)  split = \"x\"", "split must be a number, got the string \"x\"");
  expect_error("loss = mse(logits, t)  clip_norm = 0", "clip_norm must be above 0, got 0");
  expect_error("loss = mse(logits, t)  l2 = -1", "l2 must be at least 0, got -1");
  expect_error("loss = mse(logits, t)  l2 = 1 on 3",
               "the filter of l2 (after 'on') must be a non-empty string, got the int 3");
  expect_error("loss = mse(logits, t)  seed = 1 on \"x\"",
               "'on' restricts l2 to some parameters; setting 'seed' takes no filter");
  expect_error("loss = mse(logits, t)  batch = 3  batch = 4",
               "setting 'batch' is given twice (first at 8:24)");
  expect_error("loss = mse(logits, t)  freeze = [1]",
               "each item of freeze must be a non-empty string, got the int 1");
  expect_error("loss = mse(logits, t)  checkpoint = 3",
               "checkpoint must be a non-empty string, got the int 3");
  expect_error("loss = mse(logits, t)  checkpoint_every = 0", "checkpoint_every must be an int from 1");
  expect_error("loss = mse(logits, t)  init_from = st(\"x\")",
               "init_from must be one of safetensors, as in safetensors(...); got a call of st");
  expect_error("loss = mse(logits, t)  variable img: f32[1] = zeros",
               "not supported yet: trained variables");
  expect_error("batch = 3", "train block 'digits' has no loss: add one, as in "
               "loss = cross_entropy(logits, label)");
}

static void optimizer_errors(void **state) {
  expect_error("loss = mse(logits, t)  optimizer = adm()",
               "optimizer must be one of adam, adamw, sgd, rmsprop, as in adam(...); got a call "
               "of adm (did you mean 'adam'?)");
  expect_error("loss = mse(logits, t)  optimizer = \"adam\"",
               "optimizer must be one of adam, adamw, sgd, rmsprop, as in adam(...); got the "
               "string \"adam\"");
  expect_error("loss = mse(logits, t)  optimizer = adam(lrr = 1)",
               "optimizer: adam has no argument 'lrr' (did you mean 'lr'?); it takes lr, beta1, "
               "beta2, eps");
  expect_error("loss = mse(logits, t)  optimizer = adam(lr = -1)",
               "optimizer: lr of adam must be above 0, got -1");
  expect_error("loss = mse(logits, t)  optimizer = adam(beta1 = 1)",
               "optimizer: beta1 of adam must be within [0, 1), got 1");
  expect_error("loss = mse(logits, t)  optimizer = sgd(0.1, nesterov = 1)",
               "optimizer: nesterov of sgd must be true or false, got the int 1");
  expect_error("loss = mse(logits, t)  optimizer = sgd(0.1, nesterov = true)",
               "optimizer: sgd with nesterov=true needs a momentum above 0");
  expect_error("loss = mse(logits, t)  optimizer = adam(1, 0.9, 0.9, 1, 2)",
               "optimizer: adam takes at most 4 positional arguments");
  expect_error("loss = mse(logits, t)  optimizer = adam(0.1, lr = 2)",
               "optimizer: argument 'lr' of adam is given twice");
}

static void schedule_and_data_errors(void **state) {
  expect_error("loss = mse(logits, t)  schedule = cosin()",
               "schedule must be one of constant, step, exp, inverse_time, cosine, warmup, as in "
               "constant(...); got a call of cosin (did you mean 'cosine'?)");
  expect_error("loss = mse(logits, t)  schedule = step(gamma = 0.5)",
               "schedule: step needs its argument 'every'");
  expect_error("loss = mse(logits, t)  schedule = exp(gamma = 0)",
               "schedule: gamma of exp must be above 0, got 0");
  expect_error("loss = mse(logits, t)  schedule = warmup()", "schedule: warmup needs its argument 'epochs'");
  expect_error("loss = mse(logits, t)  schedule = cosine(warmup = 1.5)",
               "schedule: warmup of cosine must be an int, got the number 1.5");
  expect_error("loss = mse(logits, t)  data = csv(label = last)", "data: csv needs its argument 'path'");
  expect_error("loss = mse(logits, t)  data = npy(\"x.npy\")", "data: npy needs its argument 'labels'");
  expect_error("loss = mse(logits, t)  data = csv(\"x\", label = middle)",
               "data: label of csv must be first, last or a column number, got the name 'middle'");
  expect_error("loss = mse(logits, t)  test = \"x.csv\"",
               "test must be one of csv, npy, idx, text, series, as in csv(...); got the string \"x.csv\"");
  expect_error("loss = mse(logits, t)  data = csv(\"x\", scale = 0)",
               "data: scale of csv must be above 0, got 0");
  expect_error("loss = mse(logits, t)  data = text(\"w.txt\")",
               "text: give lines = true (one sample per line) or window = T (a running text cut "
               "into samples of T characters), not neither");
  expect_error("loss = mse(logits, t)  data = text(\"w.txt\", lines = true, window = 8)",
               "not both");
  expect_error("loss = mse(logits, t)  data = text(\"w.txt\", window = 8, chars = \"a-z\")",
               "text: chars= and maxlen= apply to lines = true");
  expect_error("loss = mse(logits, t)  data = text(\"w.txt\", lines = 1)",
               "data: lines of text must be");
  expect_error("loss = mse(logits, t)  data = text(\"w.txt\", window = 0)",
               "data: window of text must be");
}

static void text_data(void **state) {
  Run *r = config_of("loss = mse(logits, t)  data = text(\"w.txt\", lines = true, chars = \"a-z\", "
                     "maxlen = 30)  test = text(\"c.txt\", window = 16)");
  FeTrain *t = config_ok(r);
  assert_string_equal(t->data.kind, "text");
  assert_true(t->data.text.lines);
  assert_string_equal(t->data.text.chars, "a-z");
  assert_int_equal(t->data.text.max_len, 30);
  assert_false(t->test.text.lines);
  assert_int_equal(t->test.text.window, 16);
  done(r);
}

/* All mistakes of a block in one run, each once. */
static void all_errors_at_once(void **state) {
  Run *r = config_of("loss = mse(logits, t)  batch = 0  optimizer = adm  bach = 3  split = 2");
  assert_null(r->t);
  assert_int_equal(r->diags.nerrors, 4);
  done(r);
}

static void finding_the_block(void **state) {
  Run *r = parse("model a(x: f32[N, 2]) -> (y: f32[N, 2]) { y = relu(x) }\n"
                 "train a { loss = mse(y, t)  batch = 4 }\n"
                 "train b { loss = mse(y, t)  batch = 5 }\n");
  FeTrain *t = fe_train_config(r->arena, r->file, "a", &r->diags);
  assert_true(t && t->batch == 4);
  t = fe_train_config(r->arena, r->file, NULL, &r->diags);
  assert_true(t && t->batch == 4);
  assert_int_equal(r->diags.nerrors, 0);
  t = fe_train_config(r->arena, r->file, "b", &r->diags);   /* b is no model */
  assert_null(t);
  assert_non_null(strstr(diag_to_string(&r->diags, r->arena),
                         "train block 'b' trains model 'b', which the file does not define"));
  t = fe_train_config(r->arena, r->file, "zzz", &r->diags);
  assert_null(t);
  assert_non_null(strstr(diag_to_string(&r->diags, r->arena),
                         "t.kiln: no train block is named 'zzz' or trains a model of that name; "
                         "the train blocks are a, b"));
  done(r);
  r = parse("model a(x: f32[N, 2]) -> (y: f32[N, 2]) { y = relu(x) }\n");
  assert_null(fe_train_config(r->arena, r->file, NULL, &r->diags));
  assert_non_null(strstr(diag_to_string(&r->diags, r->arena), "t.kiln: the file has no train block"));
  done(r);
}

/* ---- the graph --------------------------------------------------------------- */

typedef struct Step {
  Run *r;
  Graph *g;
  char *errors;
} Step;

/* The graph of `train NAME { body }` over model source src. */
static Step step_of(const char *src, const char *body, bool training) {
  Step s = {.r = parse(text("%strain %s {\n%s\n}\n", src,
                            strstr(src, "model heads") ? "heads" : "digits", body))};
  s.r->t = fe_train_config(s.r->arena, s.r->file, NULL, &s.r->diags);
  if (!s.r->t)
    fail_msg("config errors:\n%s", diag_to_string(&s.r->diags, s.r->arena));
  s.g = fe_lower_train(s.r->file, NULL, s.r->t, training, &s.r->diags);
  assert_non_null(s.g);
  s.errors = diag_to_string(&s.r->diags, s.r->arena);
  return s;
}

static void step_done(Step *s) {
  ir_graph_free(s->g);
  done(s->r);
}

static Value *param(Graph *g, const char *name) {
  Value *v = ir_find_param(g, name);
  if (!v)
    fail_msg("no parameter or state '%s'", name);
  return v;
}

/* The value written over v at the end of the step, or NULL. */
static Value *update_of(Graph *g, const Value *v) {
  for (int i = 0; i < g->nvals; i++)
    if (g->vals[i]->updates == v)
      return g->vals[i];
  return NULL;
}

static Node *only_node(Graph *g, Op op) {
  Node *found = NULL;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op) {
      assert_null(found);
      found = g->nodes[i];
    }
  return found;
}

static void assert_type(const Graph *g, const Value *v, const char *want) {
  char buf[200];
  assert_string_equal(ir_type_str(g, &v->type, buf, sizeof buf), want);
}

static Node *batchnorm_of(Graph *g, const char *layer) {
  Value *w = param(g, rt_arena_printf(g->arena, "%s.weight", layer));
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_batchnorm && g->nodes[i]->in[1] == w)
      return g->nodes[i];
  fail_msg("no batchnorm of %s", layer);
  return NULL;
}

static void training_signature(void **state) {
  Step s = step_of(digits, "loss = cross_entropy(logits, label)  seed = 9\n"
                           "optimizer = adam(lr = 0.01)  freeze = \"bn2.*\"", true);
  Graph *g = s.g;
  assert_string_equal(s.errors, "");
  assert_int_equal(g->ninputs, 3);
  assert_string_equal(g->inputs[0]->name, "x");
  assert_string_equal(g->inputs[1]->name, "label");
  assert_type(g, g->inputs[1], "i64[N]");
  assert_string_equal(g->inputs[2]->name, "lr");
  assert_type(g, g->inputs[2], "f32[]");
  assert_ptr_equal(g->lr, g->inputs[2]);
  assert_int_equal(g->noutputs, 2);
  assert_string_equal(g->outputs[0]->name, "loss");
  assert_type(g, g->outputs[0], "f32[]");
  assert_ptr_equal(g->loss, g->outputs[0]);
  assert_string_equal(g->outputs[1]->name, "logits");
  assert_true(g->training);
  assert_int_equal(g->seed, 9);
  assert_non_null(g->opt);
  assert_true(g->opt->kind == OPT_ADAM);
  assert_ptr_not_equal(g->opt, &s.r->t->opt);     /* the graph's own copy */
  /* trainable and frozen */
  const char *trained[] = {"conv.weight", "bn1.weight", "bn1.bias", "conv2.weight", "conv2.bias",
                           "fc.weight", "fc.bias"};
  for (int i = 0; i < 7; i++) {
    Value *p = param(g, trained[i]);
    assert_true(p->wrt && !p->frozen);
  }
  assert_true(param(g, "bn2.weight")->frozen && !param(g, "bn2.weight")->wrt);
  assert_true(param(g, "bn2.bias")->frozen && !param(g, "bn2.bias")->wrt);
  /* bn1 normalises with batch statistics and moves its running ones */
  Node *bn1 = batchnorm_of(g, "bn1");
  assert_true(bn1->in[3]->role == V_TEMP && bn1->in[4]->role == V_TEMP);
  assert_non_null(update_of(g, param(g, "bn1.running_mean")));
  assert_non_null(update_of(g, param(g, "bn1.running_var")));
  /* bn2 is frozen: inference mode */
  Node *bn2 = batchnorm_of(g, "bn2");
  assert_ptr_equal(bn2->in[3], param(g, "bn2.running_mean"));
  assert_ptr_equal(bn2->in[4], param(g, "bn2.running_var"));
  assert_null(update_of(g, param(g, "bn2.running_mean")));
  /* dropout reads the advanced counter, written in place of its state */
  Node *drop = only_node(g, OP_dropout);
  assert_non_null(drop);
  assert_true(drop->attr.alpha == 0.3 && drop->attr.stream == 1);
  assert_ptr_equal(drop->in[1]->updates, param(g, "dropout.step"));
  assert_int_equal(ir_verify(g), 0);
  step_done(&s);
}

static void evaluation_signature(void **state) {
  Step s = step_of(digits, "loss = cross_entropy(logits, label)", false);
  Graph *g = s.g;
  assert_string_equal(s.errors, "");
  assert_int_equal(g->ninputs, 2);
  assert_string_equal(g->inputs[1]->name, "label");
  assert_int_equal(g->noutputs, 2);
  assert_string_equal(g->outputs[0]->name, "loss");
  assert_false(g->training);
  assert_null(g->opt);
  assert_null(g->lr);
  assert_null(g->loss);
  for (int i = 0; i < g->nvals; i++) {
    assert_false(g->vals[i]->wrt);
    assert_null(g->vals[i]->updates);
  }
  assert_null(only_node(g, OP_dropout));
  assert_null(ir_find_param(g, "dropout.step"));
  assert_ptr_equal(batchnorm_of(g, "bn1")->in[3], param(g, "bn1.running_mean"));
  assert_int_equal(ir_verify(g), 0);
  step_done(&s);
}

/* attention(dropout=p) drops attention weights, after the softmax, in the
 * training step only. */
static void attention_dropout(void **state) {
  static const char src[] = "model digits(x: f32[N, 4, 8]) -> (logits: f32[N, 4, 8]) {\n"
                            "  logits = x |> attention(2, dropout=0.1)\n"
                            "}\n";
  for (int training = 0; training < 2; training++) {
    Step s = step_of(src, "loss = mse(logits, target)", training);
    Node *drop = only_node(s.g, OP_dropout);
    assert_string_equal(s.errors, "");
    if (training) {
      assert_non_null(drop);
      assert_int_equal(drop->in[0]->def->op, OP_softmax);
      assert_true(drop->attr.alpha == 0.1);
    } else {
      assert_null(drop);
    }
    step_done(&s);
  }
}

/* Autodiff, the optimizer and the memory plan take the step as it is. */
static void pipeline_verifies(void **state) {
  Step s = step_of(digits, "loss = cross_entropy(logits, label)  freeze = \"conv.*\"\n"
                           "optimizer = adam(lr = 0.01)  l2 = 1e-4 on \"*.weight\"  clip_norm = 1",
                   true);
  Graph *g = s.g;
  g->batch_var = ir_size_var(g, "N");
  g->max_batch = 16;
  PassCtx cx = {.opt = 2, .threads = 2, .verify = true, .work_bytes = cg_work_bytes};
  if (pass_run_pipeline(g, &cx) < 0)
    fail_msg("pipeline:\n%s", diag_to_string(&s.r->diags, s.r->arena));
  assert_null(param(g, "conv.weight")->grad);
  const char *trained[] = {"bn1.weight", "conv2.weight", "fc.weight", "fc.bias", "bn2.bias"};
  for (int i = 0; i < 5; i++) {
    Value *p = param(g, trained[i]);
    assert_non_null(p->grad);
    assert_int_equal(p->grad->region, REGION_GRADS);
    assert_non_null(update_of(g, p));
    assert_non_null(ir_find_param(g, rt_arena_printf(g->arena, "optim.%s.exp_avg", trained[i])));
  }
  assert_null(update_of(g, param(g, "conv.weight")));
  assert_true(g->region_bytes[REGION_GRADS] > 0);
  step_done(&s);
}

static const char heads[] =
    "model heads(x: f32[N, 6]) -> (cls: f32[N, 3], box: f32[N, 2], tags: f32[N, 4]) {\n"
    "  h = x |> dense(16, name=\"body\") |> tanh()\n"
    "  cls = dense(h, 3, name=\"cls\")\n"
    "  box = dense(h, 2, name=\"box\")\n"
    "  tags = dense(h, 4, name=\"tag\")\n"
    "}\n";

/* Labels become inputs in order of first use, each of the type its loss wants. */
static void label_inputs(void **state) {
  Step s = step_of(heads, "loss = 2 * mse(box, target) + cross_entropy(cls, label, "
                          "ignore_index = 1) - -bce_with_logits(tags, flags)\n"
                          "  + 0.5 * cross_entropy(cls, probs, soft = true, reduction = sum)\n"
                          "  + mse(box, target) / 4", true);
  Graph *g = s.g;
  assert_string_equal(s.errors, "");
  const char *names[] = {"x", "target", "label", "flags", "probs", "lr"};
  const char *types[] = {"f32[N, 6]", "f32[N, 2]", "i64[N]", "f32[N, 4]", "f32[N, 3]", "f32[]"};
  assert_int_equal(g->ninputs, 6);
  for (int i = 0; i < 6; i++) {
    assert_string_equal(g->inputs[i]->name, names[i]);
    assert_type(g, g->inputs[i], types[i]);
  }
  assert_int_equal(g->noutputs, 4);
  assert_string_equal(g->outputs[0]->name, "loss");
  assert_string_equal(g->outputs[3]->name, "tags");
  /* class 1 ignored: the onehot rows are weighted by [1, 0, 1] */
  Node *oh = only_node(g, OP_onehot);
  assert_int_equal(oh->attr.classes, 3);
  int weighted = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (n->op == OP_mul && n->in[0] == oh->out[0] && n->in[1]->role == V_CONST) {
      const float *w = n->in[1]->data;
      assert_true(w[0] == 1 && w[1] == 0 && w[2] == 1);
      weighted++;
    }
  }
  assert_int_equal(weighted, 1);
  step_done(&s);
}

/* A model input as the target: an autoencoder's loss. */
static void input_as_target(void **state) {
  Step s = step_of("model digits(x: f32[N, 4]) -> (y: f32[N, 4]) { y = x |> dense(4) }\n",
                   "loss = mse(y, x)", true);
  assert_string_equal(s.errors, "");
  assert_int_equal(s.g->ninputs, 2);
  assert_string_equal(s.g->inputs[1]->name, "lr");
  step_done(&s);
}

static void expect_loss_error(const char *src, const char *body, const char *text) {
  Step s = step_of(src, body, true);
  if (!strstr(s.errors, text))
    fail_msg("for `%s` expected an error with\n  %s\ngot:\n%s", body, text, s.errors);
  step_done(&s);
}

static void loss_errors(void **state) {
  expect_loss_error(digits, "loss = cross_entropy(logits)",
                    "loss: cross_entropy needs its argument 'labels'");
  expect_loss_error(digits, "loss = cross_entopy(logits, label)",
                    "a loss term must be one of cross_entropy, bce_with_logits, mse, as in "
                    "cross_entropy(...); got a call of cross_entopy (did you mean 'cross_entropy'?)");
  expect_loss_error(digits, "loss = logits", "the loss must be a scalar: a loss function of the "
                    "model's outputs, got f32[N, 10]");
  expect_loss_error(digits, "loss = 3", "the loss must be a scalar: a loss function of the "
                    "model's outputs, got a number");
  expect_loss_error(digits, "loss = mse(logit, t)",
                    "unknown name 'logit' in the loss (did you mean 'logits'?): the outputs of "
                    "model 'digits' are logits");
  expect_loss_error(digits, "loss = cross_entropy(logits, x)",
                    "cross_entropy: the target must be class ids i64[N], got f32[N, 1, 8, 8]");
  expect_loss_error(digits, "loss = mse(logits, t) + cross_entropy(logits, t)",
                    "cross_entropy: the target must be class ids i64[N], got f32[N, 10]");
  expect_loss_error(digits, "loss = cross_entropy(logits, label, reduction = max)",
                    "cross_entropy: reduction must be \"mean\" or \"sum\", got the name 'max'");
  expect_loss_error(digits, "loss = cross_entropy(logits, p, soft = true, ignore_index = 0)",
                    "cross_entropy: ignore_index needs class ids, not soft=true");
  expect_loss_error(digits, "loss = mse(logits, lr)",
                    "'lr' names an input or output of the training step");
  expect_loss_error(digits, "loss = mse(logits @ logits, t)", "'@' is not allowed in a loss");
  expect_loss_error(digits, "loss = mse(logits, t) % 2", "'%' is not allowed in a loss");
  expect_loss_error(digits, "loss = mse(\"a\", t)", "the string \"a\" is not allowed in a loss");
  expect_loss_error("model digits(x: f32[N, 2]) -> (loss: f32[N, 2]) { loss = relu(x) }\n",
                    "loss = mse(loss, t)", "a model that is trained cannot have an output named "
                    "'loss'");
}

static void model_errors_are_reported_once(void **state) {
  Step s = step_of("model digits(x: f32[N, 2]) -> (y: f32[N, 2]) { y = x |> conv2d(2, k=3) }\n",
                   "loss = mse(y, t)", true);
  assert_int_equal(s.r->diags.nerrors, 1);
  step_done(&s);
}

static void freeze_typo_warns(void **state) {
  Step s = step_of(digits, "loss = cross_entropy(logits, label)  freeze = [\"fc.*\", \"cnv.*\"]", true);
  assert_int_equal(s.r->diags.nerrors, 0);
  assert_non_null(strstr(s.errors, "warning: freeze: \"cnv.*\" matches no parameter of model 'digits'"));
  assert_null(strstr(s.errors, "\"fc.*\" matches"));
  step_done(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(defaults),
    cmocka_unit_test(every_setting),
    cmocka_unit_test(optimizers),
    cmocka_unit_test(schedules),
    cmocka_unit_test(data_forms),
    cmocka_unit_test(setting_errors),
    cmocka_unit_test(optimizer_errors),
    cmocka_unit_test(schedule_and_data_errors),
    cmocka_unit_test(text_data),
    cmocka_unit_test(all_errors_at_once),
    cmocka_unit_test(finding_the_block),
    cmocka_unit_test(training_signature),
    cmocka_unit_test(evaluation_signature),
    cmocka_unit_test(attention_dropout),
    cmocka_unit_test(pipeline_verifies),
    cmocka_unit_test(label_inputs),
    cmocka_unit_test(input_as_target),
    cmocka_unit_test(loss_errors),
    cmocka_unit_test(model_errors_are_reported_once),
    cmocka_unit_test(freeze_typo_warns),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Train blocks: their settings read into an FeTrain, and the graph of one
 * training step built from the model and the loss.
 *
 * A setting's value is a constant (3, 1e-3, 1/16, "path", true, a bare word
 * such as `last`, a list) or a call that picks a kind and takes keyword
 * arguments: adam(lr = 1e-3), csv("d.csv", label = last). Each setting is a
 * row of one table, its name and its reader; the readers share the checks of
 * calls and constants, so every mistake names the setting and what it
 * accepts, and all mistakes of a block are reported in one run.
 *
 * The step's graph is the model lowered in training mode (lower.c; layers.c
 * switches batchnorm and dropout on FeMode), then the loss: an expression
 * over the model's outputs and inputs, numbers, and loss functions. A name
 * that is none of these, written as the target of a loss function, is a
 * label: a new input of the type the function wants (class ids: i64 with
 * the logits' shape minus the classes). Loss functions are compositions of
 * primitive ops (log_softmax, onehot, sums), so autodiff differentiates them
 * with the rules it has, and the optimizer pass takes over from g->opt. */
#include "frontend/frontend.h"
#include <math.h>
#include <string.h>

#define MAX_ARGS 8

/* What both halves share: where messages go and whether any was an error. */
typedef struct Cx {
  RtArena *a;
  Diags *d;
  int errors;
} Cx;

__attribute__((format(printf, 3, 4)))
static bool fail(Cx *c, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vadd(c->d, DIAG_ERROR, loc, fmt, ap);
  va_end(ap);
  c->errors++;
  return false;
}

/* A value that did not parse was reported by the parser: stay quiet. */
static bool parsed(Cx *c, const Ast *e) {
  if (e->kind != AST_ERROR)
    return true;
  c->errors++;
  return false;
}

/* A written value as messages name it. */
static const char *describe(Cx *c, const Ast *e) {
  switch (e->kind) {
  case AST_INT: return rt_arena_printf(c->a, "the int %lld", (long long)e->ival);
  case AST_FLOAT: return rt_arena_printf(c->a, "the number %g", e->fval);
  case AST_STRING: return rt_arena_printf(c->a, "the string \"%s\"", e->str);
  case AST_BOOL: return e->ival ? "true" : "false";
  case AST_NAME: return rt_arena_printf(c->a, "the name '%s'", e->name);
  case AST_LIST: return rt_arena_printf(c->a, "a list of %d", e->nitems);
  case AST_CALL:
    if (e->lhs->kind == AST_NAME)
      return rt_arena_printf(c->a, "a call of %s", e->lhs->name);
    return "a call";
  default: return "an expression";
  }
}

/* "a, b, c" */
static const char *joined(Cx *c, const char *const *names) {
  char buf[400] = "";
  for (int i = 0; names[i]; i++)
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ", " : "", names[i]);
  return rt_arena_strdup(c->a, buf);
}

static int count(const char *const *names) {
  int n = 0;
  while (names[n])
    n++;
  return n;
}

/* " (did you mean 'batch'?)" or "" */
static const char *near(Cx *c, const char *name, const char *const *names) {
  const char *best = fe_near_name(name, names, count(names));
  return best ? rt_arena_printf(c->a, " (did you mean '%s'?)", best) : "";
}

static int find(const char *const *names, const char *name) {
  for (int i = 0; names[i]; i++)
    if (!strcmp(names[i], name))
      return i;
  return -1;
}

/* ---- constants ------------------------------------------------------------- */

/* A number written as a constant expression: 3, 1e-3, -2, 1/16. *integral:
 * ints only, and no division. */
static bool const_num(const Ast *e, double *v, bool *integral) {
  double a, b;
  bool ia, ib;
  switch (e->kind) {
  case AST_INT: *v = (double)e->ival; *integral = true; return true;
  case AST_FLOAT: *v = e->fval; *integral = false; return true;
  case AST_UNARY:
    if (!const_num(e->lhs, v, integral))
      return false;
    *v = e->op == TK_MINUS ? -*v : *v;
    return true;
  case AST_BINARY:
    if (!const_num(e->lhs, &a, &ia) || !const_num(e->rhs, &b, &ib))
      return false;
    *integral = ia && ib && e->op != TK_SLASH;
    switch (e->op) {
    case TK_PLUS: *v = a + b; return true;
    case TK_MINUS: *v = a - b; return true;
    case TK_STAR: *v = a * b; return true;
    case TK_SLASH: *v = a / b; return isfinite(*v);
    default: return false;
    }
  default: return false;
  }
}

/* Where a number must lie. */
typedef struct Range {
  double lo, hi;
  bool open_lo, open_hi;
} Range;

static const Range POSITIVE = {0, INFINITY, true, false};
static const Range NONNEG = {0, INFINITY, false, false};
static const Range FRACTION = {0, 1, false, true};     /* [0, 1) */

static bool in_range(double v, Range r) {
  return (r.open_lo ? v > r.lo : v >= r.lo) && (r.open_hi ? v < r.hi : v <= r.hi);
}

static const char *range_str(Cx *c, Range r) {
  if (isinf(r.hi))
    return rt_arena_printf(c->a, "%s %g", r.open_lo ? "above" : "at least", r.lo);
  return rt_arena_printf(c->a, "within %c%g, %g%c", r.open_lo ? '(' : '[', r.lo, r.hi,
                         r.open_hi ? ')' : ']');
}

/* what: the setting or argument, as messages name it ("batch", "lr of adam"). */
static bool number(Cx *c, const char *what, const Ast *e, Range r, double *out) {
  bool integral;
  if (!parsed(c, e))
    return false;
  if (!const_num(e, out, &integral))
    return fail(c, e->loc, "%s must be a number, got %s", what, describe(c, e));
  if (!in_range(*out, r))
    return fail(c, e->loc, "%s must be %s, got %g", what, range_str(c, r), *out);
  return true;
}

static bool integer(Cx *c, const char *what, const Ast *e, int64_t lo, int64_t hi, int64_t *out) {
  double v;
  bool integral;
  if (!parsed(c, e))
    return false;
  if (!const_num(e, &v, &integral) || !integral)
    return fail(c, e->loc, "%s must be an int, got %s", what, describe(c, e));
  if (v < (double)lo || v > (double)hi)
    return fail(c, e->loc, "%s must be an int from %lld to %lld, got %.0f", what, (long long)lo,
                (long long)hi, v);
  *out = (int64_t)v;
  return true;
}

static bool string(Cx *c, const char *what, const Ast *e, const char **out) {
  if (!parsed(c, e))
    return false;
  if (e->kind != AST_STRING || !*e->str)
    return fail(c, e->loc, "%s must be a non-empty string, got %s", what, describe(c, e));
  *out = e->str;
  return true;
}

/* A string, or a list of strings. */
static bool strings(Cx *c, const char *what, const Ast *e, const char ***out, int *n) {
  bool list = e->kind == AST_LIST;
  int k = list ? e->nitems : 1;
  const char **v = rt_arena_alloc(c->a, (size_t)(k + 1) * sizeof *v);
  if (!parsed(c, e) || !v)
    return false;
  for (int i = 0; i < k; i++)
    if (!string(c, list ? rt_arena_printf(c->a, "each item of %s", what) : what,
                list ? e->items[i] : e, &v[i]))
      return false;
  *out = v;
  *n = k;
  return true;
}

static bool boolean(Cx *c, const char *what, const Ast *e, bool *out) {
  if (!parsed(c, e))
    return false;
  if (e->kind != AST_BOOL)
    return fail(c, e->loc, "%s must be true or false, got %s", what, describe(c, e));
  *out = e->ival != 0;
  return true;
}

/* A bare word or a string: label = last, reduction = "sum". */
static const char *word(const Ast *e) {
  return e->kind == AST_NAME ? e->name : e->kind == AST_STRING ? e->str : NULL;
}

/* ---- calls ------------------------------------------------------------------- */

/* A call of a kind with its arguments paired to the kind's parameters. A
 * bare name (schedule = cosine) is a call without arguments. */
typedef struct Call {
  const char *what;            /* the setting, for messages */
  const char *name;            /* the callee */
  const char *const *params;   /* NULL-ended */
  const Ast *arg[MAX_ARGS];    /* by parameter index: the value given, or NULL */
  SrcLoc loc;
} Call;

static const char *callee(const Ast *e) {
  if (e->kind == AST_CALL && e->lhs->kind == AST_NAME)
    return e->lhs->name;
  return e->kind == AST_NAME ? e->name : NULL;
}

/* Which of kinds (NULL-ended) e calls: its index, or -1 (reported). */
static int kind_of(Cx *c, const char *what, const Ast *e, const char *const *kinds) {
  if (!parsed(c, e))
    return -1;
  const char *name = callee(e);
  int k = name ? find(kinds, name) : -1;
  if (k < 0)
    fail(c, e->loc, "%s must be one of %s, as in %s(...); got %s%s", what, joined(c, kinds),
         kinds[0], describe(c, e), name ? near(c, name, kinds) : "");
  return k;
}

static bool match_call(Cx *c, const char *what, const Ast *e, const char *const *params,
                       Call *call) {
  *call = (Call){.what = what, .name = callee(e), .params = params, .loc = e->loc};
  int n = count(params), pos = 0;
  bool ok = true;
  for (int i = 0; e->kind == AST_CALL && i < e->nitems; i++) {
    const Ast *a = e->items[i];
    int j = a->name ? find(params, a->name) : pos < n ? pos++ : -1;
    if (!a->name && j < 0)
      ok = fail(c, a->loc, "%s: %s takes at most %d positional argument%s", what, call->name, n,
                n == 1 ? "" : "s");
    else if (j < 0)
      ok = fail(c, a->loc, "%s: %s has no argument '%s'%s; it takes %s", what, call->name,
                a->name, near(c, a->name, params), joined(c, params));
    else if (call->arg[j])
      ok = fail(c, a->loc, "%s: argument '%s' of %s is given twice", what, params[j], call->name);
    else
      call->arg[j] = a->lhs;
  }
  return ok;
}

static const Ast *arg(const Call *call, const char *name) {
  int i = find(call->params, name);
  return i >= 0 ? call->arg[i] : NULL;
}

/* "lr of adam" */
static const char *arg_what(Cx *c, const Call *call, const char *name) {
  return rt_arena_printf(c->a, "%s: %s of %s", call->what, name, call->name);
}

static bool required(Cx *c, const Call *call, const char *name) {
  if (arg(call, name))
    return true;
  return fail(c, call->loc, "%s: %s needs its argument '%s'", call->what, call->name, name);
}

/* A number argument into *out if given; true unless it is wrong. */
static bool num_arg(Cx *c, const Call *call, const char *name, Range r, double *out) {
  const Ast *e = arg(call, name);
  return !e || number(c, arg_what(c, call, name), e, r, out);
}

static bool int_arg(Cx *c, const Call *call, const char *name, int64_t lo, int *out) {
  const Ast *e = arg(call, name);
  int64_t v;
  if (!e)
    return true;
  if (!integer(c, arg_what(c, call, name), e, lo, INT32_MAX, &v))
    return false;
  *out = (int)v;
  return true;
}

/* ---- the settings ------------------------------------------------------------ */

typedef struct Cfg {
  Cx cx;
  FeTrain *t;
} Cfg;

static void set_model(Cfg *c, const Ast *s) {
  const char *name = word(s->init);
  if (parsed(&c->cx, s->init) && !name)
    fail(&c->cx, s->init->loc, "model must name a model of the file, got %s",
         describe(&c->cx, s->init));
  if (name)
    c->t->model = name;
}

static const char *const data_kinds[] = {"csv", "npy", "idx", "text", "series", NULL};
static const char *const csv_params[] = {"path", "label", "scale", NULL};
static const char *const file_params[] = {"path", "labels", "scale", NULL};
static const char *const text_params[] = {"path", "lines", "window", "maxlen", "chars", NULL};
static const char *const series_params[] = {"path", "column", "window", "horizon", "validate", NULL};
enum { DATA_CSV, DATA_NPY, DATA_IDX, DATA_TEXT, DATA_SERIES };   /* data_kinds' order */
static const char *const *const data_params[] = {csv_params, file_params, file_params, text_params,
                                                 series_params};

/* text("words.txt", lines = true, chars = "a-z", maxlen = 64) or
 * text("corpus.txt", window = 64): runtime/text.c reads it. */
static bool text_options(Cx *c, const Call *call, RtTextOptions *o) {
  const Ast *lines = arg(call, "lines"), *chars = arg(call, "chars");
  int64_t window = 0, maxlen = 0;
  bool ok = !lines || boolean(c, arg_what(c, call, "lines"), lines, &o->lines);
  ok &= !chars || string(c, arg_what(c, call, "chars"), chars, &o->chars);
  ok &= !arg(call, "window") ||
        integer(c, arg_what(c, call, "window"), arg(call, "window"), 1, RT_MAX_DIM - 1, &window);
  ok &= !arg(call, "maxlen") ||
        integer(c, arg_what(c, call, "maxlen"), arg(call, "maxlen"), 1, RT_MAX_DIM - 1, &maxlen);
  o->window = window;
  o->max_len = maxlen;
  if (ok && o->lines == (window > 0))
    return fail(c, call->loc, "text: give lines = true (one sample per line) or window = T "
                "(a running text cut into samples of T characters), not %s",
                o->lines ? "both" : "neither");
  if (ok && !o->lines && (chars || maxlen))
    return fail(c, call->loc, "text: chars= and maxlen= apply to lines = true");
  return ok;
}

static bool int64_arg(Cx *c, const Call *call, const char *name, int64_t lo, int64_t *out) {
  const Ast *e = arg(call, name);
  return !e || integer(c, arg_what(c, call, name), e, lo, INT32_MAX, out);
}

/* series("f.csv", column = "C", window = W, horizon = 1, validate = K):
 * runtime/series.c makes the windows and the chronological split. */
static bool read_series(Cx *cx, const Call *call, FeData *d) {
  const Ast *col = arg(call, "column");
  bool ok = required(cx, call, "window") && int64_arg(cx, call, "window", 1, &d->window);
  d->horizon = 1;
  ok &= int64_arg(cx, call, "horizon", 1, &d->horizon);
  ok &= int64_arg(cx, call, "validate", 0, &d->validate);
  if (col)
    ok &= string(cx, arg_what(cx, call, "column"), col, &d->column);
  return ok;
}

/* label = last | first | a column (negative: from the end) */
static bool label_column(Cx *c, const Call *call, int64_t *col) {
  const Ast *e = arg(call, "label");
  const char *w = e ? word(e) : NULL;
  if (!e)
    return true;
  if (w && !strcmp(w, "last"))
    *col = -1;
  else if (w && !strcmp(w, "first"))
    *col = 0;
  else if (e->kind != AST_NAME && e->kind != AST_STRING)
    return integer(c, arg_what(c, call, "label"), e, -INT32_MAX, INT32_MAX, col);
  else
    return fail(c, e->loc, "%s must be first, last or a column number, got %s",
                arg_what(c, call, "label"), describe(c, e));
  return true;
}

static void read_data(Cfg *c, const char *what, const Ast *e, FeData *out) {
  Cx *cx = &c->cx;
  Call call;
  int k = kind_of(cx, what, e, data_kinds);
  if (k < 0 || !match_call(cx, what, e, data_params[k], &call))
    return;
  FeData d = {.kind = data_kinds[k], .label_col = -1, .scale = 1, .loc = e->loc};
  bool ok = required(cx, &call, "path") &&
            string(cx, arg_what(cx, &call, "path"), call.arg[0], &d.path);
  ok &= num_arg(cx, &call, "scale", POSITIVE, &d.scale);
  if (k == DATA_CSV)
    ok &= label_column(cx, &call, &d.label_col);
  else if (k == DATA_TEXT)
    ok &= text_options(cx, &call, &d.text);
  else if (k == DATA_SERIES)
    ok &= read_series(cx, &call, &d);
  else
    ok &= required(cx, &call, "labels") &&
          string(cx, arg_what(cx, &call, "labels"), arg(&call, "labels"), &d.labels);
  if (ok)
    *out = d;
}

static void set_data(Cfg *c, const Ast *s) { read_data(c, "data", s->init, &c->t->data); }
static void set_test(Cfg *c, const Ast *s) { read_data(c, "test", s->init, &c->t->test); }

static void set_split(Cfg *c, const Ast *s) {
  number(&c->cx, "split", s->init, FRACTION, &c->t->split);
}

static void set_batch(Cfg *c, const Ast *s) {
  integer(&c->cx, "batch", s->init, 1, INT32_MAX, &c->t->batch);
}

static void set_epochs(Cfg *c, const Ast *s) {
  int64_t v;
  if (integer(&c->cx, "epochs", s->init, 1, INT32_MAX, &v))
    c->t->epochs = (int)v;
}

static void set_steps(Cfg *c, const Ast *s) {
  integer(&c->cx, "steps", s->init, 0, INT64_MAX / 2, &c->t->steps);
}

static void set_seed(Cfg *c, const Ast *s) {
  int64_t v;
  if (integer(&c->cx, "seed", s->init, 0, INT64_MAX / 2, &v))
    c->t->seed = (uint64_t)v;
}

static void set_loss(Cfg *c, const Ast *s) {
  if (parsed(&c->cx, s->init))
    c->t->loss = s->init;
}

/* The optimizers: PyTorch's defaults, lr first so that adam(1e-3) works. */
static const struct OptRow {
  const char *name;
  OptKind kind;
  double lr;
  const char *params[6];
} optimizers[] = {
  {"adam", OPT_ADAM, 1e-3, {"lr", "beta1", "beta2", "eps", NULL}},
  {"adamw", OPT_ADAMW, 1e-3, {"lr", "beta1", "beta2", "eps", "weight_decay", NULL}},
  {"sgd", OPT_SGD, 1e-2, {"lr", "momentum", "nesterov", NULL}},
  {"rmsprop", OPT_RMSPROP, 1e-2, {"lr", "rho", "eps", NULL}},
};
static const char *const opt_names[] = {"adam", "adamw", "sgd", "rmsprop", NULL};

/* The optimizer's own fields at their defaults; l2 and clipping are settings of their own. */
static void opt_defaults(OptSpec *o, OptKind kind) {
  o->kind = kind;
  o->momentum = 0;
  o->nesterov = false;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->rho = 0.99;
  o->eps = 1e-8;
  o->weight_decay = kind == OPT_ADAMW ? 1e-2 : 0;
}

static void set_optimizer(Cfg *c, const Ast *s) {
  Cx *cx = &c->cx;
  Call call;
  int k = kind_of(cx, "optimizer", s->init, opt_names);
  if (k < 0 || !match_call(cx, "optimizer", s->init, optimizers[k].params, &call))
    return;
  OptSpec o = c->t->opt;
  double lr = optimizers[k].lr;
  opt_defaults(&o, optimizers[k].kind);
  bool ok = num_arg(cx, &call, "lr", POSITIVE, &lr);
  ok &= num_arg(cx, &call, "beta1", FRACTION, &o.beta1);
  ok &= num_arg(cx, &call, "beta2", FRACTION, &o.beta2);
  ok &= num_arg(cx, &call, "eps", NONNEG, &o.eps);
  ok &= num_arg(cx, &call, "weight_decay", NONNEG, &o.weight_decay);
  ok &= num_arg(cx, &call, "momentum", FRACTION, &o.momentum);
  ok &= num_arg(cx, &call, "rho", FRACTION, &o.rho);
  if (arg(&call, "nesterov"))
    ok &= boolean(cx, arg_what(cx, &call, "nesterov"), arg(&call, "nesterov"), &o.nesterov);
  if (ok && o.nesterov && o.momentum == 0)
    ok = fail(cx, s->init->loc, "optimizer: sgd with nesterov=true needs a momentum above 0");
  if (ok) {
    c->t->opt = o;
    c->t->lr = lr;
  }
}

/* The schedules; each takes warmup= (epochs of linear warm-up first), and
 * warmup(epochs) alone is a constant rate after its warm-up. */
static const char *const sched_names[] = {"constant", "step", "exp", "inverse_time", "cosine",
                                          "warmup", NULL};
static const char *const sched_params[][4] = {
  {"warmup", NULL},
  {"every", "gamma", "warmup", NULL},
  {"gamma", "warmup", NULL},
  {"decay", "warmup", NULL},
  {"min_lr", "warmup", NULL},
  {"epochs", NULL},
};

static void set_schedule(Cfg *c, const Ast *s) {
  Cx *cx = &c->cx;
  Call call;
  int k = kind_of(cx, "schedule", s->init, sched_names);
  if (k < 0 || !match_call(cx, "schedule", s->init, sched_params[k], &call))
    return;
  static const FeSchedKind kinds[] = {SCHED_CONST, SCHED_STEP, SCHED_EXP, SCHED_INV_TIME,
                                      SCHED_COSINE, SCHED_CONST};
  FeSchedule sc = {.kind = kinds[k], .gamma = k == 1 ? 0.1 : 1};
  bool ok = k != 1 || required(cx, &call, "every");
  ok &= k != 2 || required(cx, &call, "gamma");
  ok &= k != 3 || required(cx, &call, "decay");
  ok &= k != 5 || required(cx, &call, "epochs");
  ok &= num_arg(cx, &call, "every", POSITIVE, &sc.step_epochs);
  ok &= num_arg(cx, &call, "gamma", POSITIVE, &sc.gamma);
  ok &= num_arg(cx, &call, "decay", NONNEG, &sc.decay);
  ok &= num_arg(cx, &call, "min_lr", NONNEG, &sc.min_lr);
  ok &= int_arg(cx, &call, "warmup", 0, &sc.warmup_epochs);
  ok &= int_arg(cx, &call, "epochs", 1, &sc.warmup_epochs);
  if (ok)
    c->t->sched = sc;
}

/* l2 = 1e-4, or l2 = 1e-4 on "*.weight" (a glob or a list of them) */
static void set_l2(Cfg *c, const Ast *s) {
  OptSpec *o = &c->t->opt;
  if (number(&c->cx, "l2", s->init, NONNEG, &o->l2) && s->filter)
    strings(&c->cx, "the filter of l2 (after 'on')", s->filter, &o->l2_on, &o->nl2_on);
}

static void set_clip_norm(Cfg *c, const Ast *s) {
  number(&c->cx, "clip_norm", s->init, POSITIVE, &c->t->opt.clip_norm);
}

static void set_freeze(Cfg *c, const Ast *s) {
  strings(&c->cx, "freeze", s->init, &c->t->freeze, &c->t->nfreeze);
}

/* init_from = "w.safetensors" or safetensors("w.safetensors") */
static void set_init_from(Cfg *c, const Ast *s) {
  static const char *const kinds[] = {"safetensors", NULL}, *const params[] = {"path", NULL};
  Call call;
  if (s->init->kind != AST_CALL) {
    string(&c->cx, "init_from", s->init, &c->t->init_from);
  } else if (kind_of(&c->cx, "init_from", s->init, kinds) == 0 &&
             match_call(&c->cx, "init_from", s->init, params, &call) &&
             required(&c->cx, &call, "path")) {
    string(&c->cx, arg_what(&c->cx, &call, "path"), call.arg[0], &c->t->init_from);
  }
}

static void set_checkpoint(Cfg *c, const Ast *s) {
  string(&c->cx, "checkpoint", s->init, &c->t->checkpoint);
}

static void set_checkpoint_every(Cfg *c, const Ast *s) {
  int64_t v;
  if (integer(&c->cx, "checkpoint_every", s->init, 1, INT32_MAX, &v))
    c->t->checkpoint_every = (int)v;
}

/* baseline = seasonal_naive(period = 11) | persistence() | a list of them */
static const char *const baseline_kinds[] = {"seasonal_naive", "persistence", NULL};
static const char *const naive_params[] = {"period", NULL};
static const char *const no_params[] = {NULL};

static void read_baseline(Cfg *c, const Ast *e) {
  Cx *cx = &c->cx;
  Call call;
  int k = kind_of(cx, "baseline", e, baseline_kinds);
  FeBaseline b = {.period = 1};
  if (k < 0 || !match_call(cx, "baseline", e, k == 0 ? naive_params : no_params, &call))
    return;
  if (k == 0 && !(required(cx, &call, "period") && int64_arg(cx, &call, "period", 1, &b.period)))
    return;
  if (c->t->nbaselines == (int)(sizeof c->t->baselines / sizeof *c->t->baselines)) {
    fail(cx, e->loc, "baseline: at most %d baselines", c->t->nbaselines);
    return;
  }
  b.name = baseline_kinds[k];
  c->t->baselines[c->t->nbaselines++] = b;
}

static void set_baseline(Cfg *c, const Ast *s) {
  if (s->init->kind != AST_LIST) {
    read_baseline(c, s->init);
    return;
  }
  for (int i = 0; i < s->init->nitems; i++)
    read_baseline(c, s->init->items[i]);
}

static const struct Setting {
  const char *name;
  void (*read)(Cfg *c, const Ast *s);
} settings[] = {
  {"model", set_model}, {"data", set_data}, {"test", set_test}, {"split", set_split},
  {"batch", set_batch}, {"epochs", set_epochs}, {"steps", set_steps}, {"seed", set_seed},
  {"loss", set_loss}, {"optimizer", set_optimizer}, {"schedule", set_schedule},
  {"l2", set_l2}, {"clip_norm", set_clip_norm}, {"freeze", set_freeze},
  {"init_from", set_init_from}, {"checkpoint", set_checkpoint},
  {"checkpoint_every", set_checkpoint_every}, {"baseline", set_baseline},
};
enum { NSETTINGS = sizeof settings / sizeof *settings };

static const char *const *setting_names(void) {
  static const char *names[NSETTINGS + 1];
  for (int i = 0; i < NSETTINGS; i++)
    names[i] = settings[i].name;
  return names;
}

static void read_setting(Cfg *c, const Ast *s, const Ast **seen) {
  Cx *cx = &c->cx;
  int k = find(setting_names(), s->name);
  if (k < 0) {
    fail(cx, s->loc, "unknown setting '%s'%s; the settings are %s", s->name,
         near(cx, s->name, setting_names()), joined(cx, setting_names()));
    return;
  }
  if (seen[k]) {
    fail(cx, s->loc, "setting '%s' is given twice (first at %d:%d)", s->name, seen[k]->loc.line,
         seen[k]->loc.col);
    return;
  }
  seen[k] = s;
  if (s->filter && strcmp(s->name, "l2")) {
    fail(cx, s->filter->loc, "'on' restricts l2 to some parameters; setting '%s' takes no filter",
         s->name);
    return;
  }
  settings[k].read(c, s);
}

static void read_stmt(Cfg *c, const Ast *s, const Ast **seen) {
  switch (s->kind) {
  case AST_SETTING: read_setting(c, s, seen); break;
  case AST_VARIABLE:
    fail(&c->cx, s->loc, "not supported yet: trained variables (they arrive with style transfer)");
    break;
  case AST_ERROR: c->cx.errors++; break;
  default: fail(&c->cx, s->loc, "a %s is not a statement of a train block", ast_kind_name(s->kind));
  }
}

/* ---- finding the block ------------------------------------------------------- */

/* The model a train block trains: its model= setting, else its name. */
static const char *trained_model(const Ast *blk) {
  for (int i = 0; i < blk->nbody; i++) {
    const Ast *s = blk->body[i];
    if (s->kind == AST_SETTING && !strcmp(s->name, "model") && word(s->init))
      return word(s->init);
  }
  return blk->name;
}

static const Ast *find_train(Cx *c, const AstFile *f, const char *name) {
  if (!f->ntrains) {
    fail(c, srcloc_none(), "%s: the file has no train block", f->src.name);
    return NULL;
  }
  if (!name)
    return f->trains[0];
  for (int i = 0; i < f->ntrains; i++)
    if (!strcmp(f->trains[i]->name, name))
      return f->trains[i];
  for (int i = 0; i < f->ntrains; i++)
    if (!strcmp(trained_model(f->trains[i]), name))
      return f->trains[i];
  const char **names = rt_arena_alloc(c->a, (size_t)(f->ntrains + 1) * sizeof *names);
  for (int i = 0; names && i < f->ntrains; i++)
    names[i] = f->trains[i]->name;
  fail(c, srcloc_none(), "%s: no train block is named '%s' or trains a model of that name%s; "
       "the train blocks are %s", f->src.name, name, names ? near(c, name, names) : "",
       names ? joined(c, names) : "?");
  return NULL;
}

static void defaults(FeTrain *t, const Ast *blk) {
  *t = (FeTrain){.name = blk->name, .model = blk->name, .split = 0.2, .batch = 32,
                 .epochs = 10, .lr = 1e-3, .checkpoint_every = 1, .loc = blk->loc};
  opt_defaults(&t->opt, OPT_ADAM);
}

FeTrain *fe_train_config(RtArena *a, const AstFile *f, const char *name, Diags *d) {
  Cfg c = {.cx = {.a = a, .d = d}};
  const Ast *blk = find_train(&c.cx, f, name);
  if (!blk)
    return NULL;
  if (!(c.t = rt_arena_alloc(a, sizeof *c.t))) {
    fail(&c.cx, blk->loc, "out of memory");
    return NULL;
  }
  defaults(c.t, blk);
  const Ast *seen[NSETTINGS] = {0};
  for (int i = 0; i < blk->nbody; i++)
    read_stmt(&c, blk->body[i], seen);
  const Ast *model = seen[find(setting_names(), "model")];
  if (!ast_find_def(f, AST_MODEL, c.t->model))
    fail(&c.cx, model ? model->init->loc : blk->loc,
         "train block '%s' trains model '%s', which the file does not define", blk->name,
         c.t->model);
  const Ast *split = seen[find(setting_names(), "split")];
  if (split && c.t->data.kind && !strcmp(c.t->data.kind, "series"))
    fail(&c.cx, split->loc, "split does not apply to series data, which validates on its last "
         "values: say how many with series(..., validate = K)");
  if (!seen[find(setting_names(), "loss")])
    fail(&c.cx, blk->loc, "train block '%s' has no loss: add one, as in "
         "loss = cross_entropy(logits, label)", blk->name);
  return c.cx.errors ? NULL : c.t;
}

/* ---- the loss ------------------------------------------------------------------ */

typedef enum { L_ERROR, L_NUM, L_TENSOR } LKind;

typedef struct LVal {
  LKind kind;
  double f;                    /* L_NUM */
  Value *t;                    /* L_TENSOR */
} LVal;

typedef struct Loss {
  Cx cx;
  Graph *g;
  const Ast *model;            /* the model's signature: its output names */
  SrcLoc loc;                  /* of the node being built */
} Loss;

static LVal l_error(void) { return (LVal){.kind = L_ERROR}; }
static LVal l_tensor(Value *t) { return (LVal){.kind = L_TENSOR, .t = t}; }

static Value *op1(Loss *l, Op op, Value *x) { return ir_op1(l->g, op, x, l->loc); }
static Value *op2(Loss *l, Op op, Value *a, Value *b) { return ir_op2(l->g, op, a, b, l->loc); }
static Value *scalar(Loss *l, const Value *like, double v) {
  return ir_scalar(l->g, like->type.dt, v);
}

static Value *reduce(Loss *l, Op op, Value *x, uint32_t axes) {
  Attr a = ir_attr();
  a.axes = axes;
  return ir_op(l->g, op, &x, 1, &a, l->loc);
}

/* sum or mean over every axis: a scalar. */
static Value *over_all(Loss *l, Op op, Value *x) {
  return x->type.rank ? reduce(l, op, x, (1u << x->type.rank) - 1) : x;
}

/* A model output by its name, a model input, or a label made already. */
static Value *lookup(Loss *l, const char *name) {
  for (int i = 0; i < l->model->nouts && i < l->g->noutputs; i++)
    if (!strcmp(l->model->outs[i]->name, name))
      return l->g->outputs[i];
  for (int i = 0; i < l->g->ninputs; i++)
    if (!strcmp(l->g->inputs[i]->name, name))
      return l->g->inputs[i];
  return NULL;
}

static const char *type_str(Loss *l, const Type *t) {
  char buf[200];
  return rt_arena_strdup(l->cx.a, ir_type_str(l->g, t, buf, sizeof buf));
}

static LVal eval(Loss *l, const Ast *e);

static LVal eval_name(Loss *l, const Ast *e) {
  Value *v = lookup(l, e->name);
  if (v)
    return l_tensor(v);
  const char **outs = rt_arena_alloc(l->cx.a, (size_t)(l->model->nouts + 1) * sizeof *outs);
  for (int i = 0; outs && i < l->model->nouts; i++)
    outs[i] = l->model->outs[i]->name;
  fail(&l->cx, e->loc, "unknown name '%s' in the loss%s: the outputs of model '%s' are %s, and a "
       "label is named as the target of a loss function, as in cross_entropy(logits, %s)",
       e->name, outs ? near(&l->cx, e->name, outs) : "", l->model->name,
       outs ? joined(&l->cx, outs) : "?", e->name);
  return l_error();
}

static LVal num_binary(Loss *l, const Ast *e, double a, double b) {
  switch (e->op) {
  case TK_PLUS: return (LVal){.kind = L_NUM, .f = a + b};
  case TK_MINUS: return (LVal){.kind = L_NUM, .f = a - b};
  case TK_STAR: return (LVal){.kind = L_NUM, .f = a * b};
  default: return (LVal){.kind = L_NUM, .f = a / b};
  }
}

static Value *as_tensor(Loss *l, LVal v, const Value *like) {
  return v.kind == L_TENSOR ? v.t : scalar(l, like, v.f);
}

/* + - * / of numbers and tensors (broadcast as numpy; numbers as scalars). */
static LVal eval_binary(Loss *l, const Ast *e) {
  static const Op ops[] = {[TK_PLUS] = OP_add, [TK_MINUS] = OP_sub, [TK_STAR] = OP_mul,
                           [TK_SLASH] = OP_div};
  if (e->op != TK_PLUS && e->op != TK_MINUS && e->op != TK_STAR && e->op != TK_SLASH) {
    fail(&l->cx, e->loc, "'%s' is not allowed in a loss; it takes + - * / of loss terms and "
         "numbers", fe_token_spelling(e->op));
    return l_error();
  }
  LVal a = eval(l, e->lhs), b = eval(l, e->rhs);
  if (a.kind == L_ERROR || b.kind == L_ERROR)
    return l_error();
  if (a.kind == L_NUM && b.kind == L_NUM)
    return num_binary(l, e, a.f, b.f);
  const Value *like = a.kind == L_TENSOR ? a.t : b.t;
  l->loc = e->loc;
  return l_tensor(op2(l, ops[e->op], as_tensor(l, a, like), as_tensor(l, b, like)));
}

static LVal eval_unary(Loss *l, const Ast *e) {
  LVal a = eval(l, e->lhs);
  if (a.kind == L_ERROR || e->op == TK_PLUS)
    return a;
  l->loc = e->loc;
  return a.kind == L_NUM ? (LVal){.kind = L_NUM, .f = -a.f} : l_tensor(op1(l, OP_neg, a.t));
}

/* ---- loss functions ---------------------------------------------------------- */

/* One call of a loss function, its arguments checked. */
typedef struct LossCall {
  Call call;
  Value *x;                    /* the prediction */
  Value *y;                    /* the target */
  bool sum;                    /* reduction = "sum" (else the mean) */
  bool soft;                   /* cross_entropy: probabilities, not class ids */
  bool has_ignore;             /* cross_entropy: ignore_index given */
  int64_t ignore;
} LossCall;

/* The target's type: as the prediction, or for class ids i64 with the
 * logits' shape without the classes. */
static Type target_type(const LossCall *lc, bool ids) {
  Type t = lc->x->type;
  if (ids) {
    t.dt = RT_I64;
    t.rank--;
  }
  return t;
}

static bool target_fits(const Type *want, const Type *got, bool ids) {
  if (!ids)
    return ir_type_eq(want, got);
  Type w = *want;
  w.dt = got->dt;
  return (got->dt == RT_I32 || got->dt == RT_I64) && ir_type_eq(&w, got);
}

/* The target: a tensor of the wanted type; a name that is not bound yet
 * becomes the label input of that type. */
static bool target(Loss *l, LossCall *lc, const Ast *e, bool ids) {
  Type want = target_type(lc, ids);
  if (e->kind == AST_NAME && !lookup(l, e->name)) {
    if (!strcmp(e->name, "lr") || !strcmp(e->name, "loss"))
      return fail(&l->cx, e->loc, "'%s' names an input or output of the training step; call "
                  "the label something else", e->name);
    lc->y = ir_input(l->g, e->name, want, e->loc);
    return true;
  }
  LVal v = eval(l, e);
  if (v.kind == L_ERROR)
    return false;
  if (v.kind != L_TENSOR || !target_fits(&want, &v.t->type, ids))
    return fail(&l->cx, e->loc, "%s: the target must be %s%s, got %s", lc->call.name,
                ids ? "class ids " : "", type_str(l, &want),
                v.kind == L_TENSOR ? type_str(l, &v.t->type) : "a number");
  lc->y = v.t;
  return true;
}

static bool prediction(Loss *l, LossCall *lc, const Ast *e) {
  LVal v = eval(l, e);
  if (v.kind == L_ERROR)
    return false;
  if (v.kind != L_TENSOR || !ir_is_float(v.t->type.dt) || v.t->type.rank < 1)
    return fail(&l->cx, e->loc, "%s: the prediction must be a floating-point tensor, got %s",
                lc->call.name, v.kind == L_TENSOR ? type_str(l, &v.t->type) : "a number");
  lc->x = v.t;
  return true;
}

static bool reduction(Loss *l, LossCall *lc) {
  const Ast *e = arg(&lc->call, "reduction");
  const char *w = e ? word(e) : "mean";
  if (w && (!strcmp(w, "mean") || !strcmp(w, "sum"))) {
    lc->sum = !strcmp(w, "sum");
    return true;
  }
  return fail(&l->cx, e->loc, "%s: reduction must be \"mean\" or \"sum\", got %s", lc->call.name,
              describe(&l->cx, e));
}

static Value *reduced(Loss *l, const LossCall *lc, Value *per_element) {
  return over_all(l, lc->sum ? OP_sum : OP_mean, per_element);
}

/* onehot(labels) with the ignored class's column zeroed when it is a
 * class; an id outside [0, classes) has a row of zeros anyway. */
static Value *class_weights(Loss *l, const LossCall *lc, int64_t classes) {
  Attr a = ir_attr();
  a.classes = (int)classes;
  a.dtype = lc->x->type.dt;
  Value *oh = ir_op(l->g, OP_onehot, (Value *[]){lc->y}, 1, &a, l->loc);
  if (!lc->has_ignore || lc->ignore < 0 || lc->ignore >= classes)
    return oh;
  double *w = rt_arena_alloc(l->cx.a, (size_t)classes * sizeof *w);
  float *wf = rt_arena_alloc(l->cx.a, (size_t)classes * sizeof *wf);
  if (!w || !wf)
    return oh;
  for (int64_t i = 0; i < classes; i++)
    w[i] = wf[i] = i != lc->ignore;
  Type t = ir_type_const(a.dtype, 1, &classes);
  return op2(l, OP_mul, oh, ir_const(l->g, t, a.dtype == RT_F32 ? (void *)wf : (void *)w));
}

/* -sum(target * log_softmax(logits)) over the classes, per sample; the mean
 * over the samples, or with ignore_index over the samples not ignored. */
static Value *cross_entropy(Loss *l, LossCall *lc) {
  Value *x = lc->x;
  int last = x->type.rank - 1;
  int64_t classes = 0;
  if (!lc->soft && (!sz_is_const(x->type.dim[last], &classes) || classes > INT32_MAX)) {
    fail(&l->cx, lc->call.loc, "cross_entropy: the number of classes (the logits' last dim) "
         "must be known when compiling, got %s", type_str(l, &x->type));
    return NULL;
  }
  Attr a = ir_attr();
  a.axis = last;
  Value *logp = ir_op(l->g, OP_log_softmax, &x, 1, &a, l->loc);
  Value *w = lc->soft ? lc->y : class_weights(l, lc, classes);
  Value *picked = reduce(l, OP_sum, op2(l, OP_mul, w, logp), 1u << last);
  if (lc->sum || !lc->has_ignore || lc->soft)
    return op1(l, OP_neg, reduced(l, lc, picked));
  return op1(l, OP_neg, op2(l, OP_div, over_all(l, OP_sum, picked), over_all(l, OP_sum, w)));
}

/* max(x, 0) - x t + log(1 + exp(-|x|)): no overflow for any x. */
static Value *bce_with_logits(Loss *l, LossCall *lc) {
  Value *x = lc->x;
  Value *pos = op2(l, OP_maximum, x, scalar(l, x, 0));
  Value *soft = op1(l, OP_log, op2(l, OP_add, op1(l, OP_exp, op1(l, OP_neg, op1(l, OP_abs, x))),
                                   scalar(l, x, 1)));
  return reduced(l, lc, op2(l, OP_add, op2(l, OP_sub, pos, op2(l, OP_mul, x, lc->y)), soft));
}

static Value *mse(Loss *l, LossCall *lc) {
  Value *d = op2(l, OP_sub, lc->x, lc->y);
  return reduced(l, lc, op2(l, OP_mul, d, d));
}

static const struct LossFn {
  const char *name;
  Value *(*build)(Loss *l, LossCall *lc);
  const char *params[MAX_ARGS];   /* the prediction and the target first */
} loss_fns[] = {
  {"cross_entropy", cross_entropy, {"logits", "labels", "soft", "ignore_index", "reduction", NULL}},
  {"bce_with_logits", bce_with_logits, {"logits", "targets", "reduction", NULL}},
  {"mse", mse, {"input", "target", "reduction", NULL}},
};
static const char *const loss_names[] = {"cross_entropy", "bce_with_logits", "mse", NULL};

/* soft= and ignore_index= of cross_entropy. */
static bool class_options(Loss *l, LossCall *lc) {
  const Ast *soft = arg(&lc->call, "soft"), *ign = arg(&lc->call, "ignore_index");
  if (soft && !boolean(&l->cx, arg_what(&l->cx, &lc->call, "soft"), soft, &lc->soft))
    return false;
  if (ign && !integer(&l->cx, arg_what(&l->cx, &lc->call, "ignore_index"), ign, INT32_MIN,
                      INT32_MAX, &lc->ignore))
    return false;
  lc->has_ignore = ign != NULL;
  if (lc->soft && ign)
    return fail(&l->cx, ign->loc, "cross_entropy: ignore_index needs class ids, not soft=true");
  return true;
}

static LVal eval_call(Loss *l, const Ast *e) {
  Cx *cx = &l->cx;
  LossCall lc = {0};
  int k = kind_of(cx, "a loss term", e, loss_names);
  if (k < 0)
    return l_error();
  const struct LossFn *fn = &loss_fns[k];
  if (!match_call(cx, "loss", e, fn->params, &lc.call) || !required(cx, &lc.call, fn->params[0]) ||
      !required(cx, &lc.call, fn->params[1]) || !reduction(l, &lc) ||
      (k == 0 && !class_options(l, &lc)) || !prediction(l, &lc, lc.call.arg[0]) ||
      !target(l, &lc, lc.call.arg[1], k == 0 && !lc.soft))
    return l_error();
  l->loc = e->loc;
  Value *v = fn->build(l, &lc);
  return v ? l_tensor(v) : l_error();
}

static LVal eval(Loss *l, const Ast *e) {
  switch (e->kind) {
  case AST_INT: return (LVal){.kind = L_NUM, .f = (double)e->ival};
  case AST_FLOAT: return (LVal){.kind = L_NUM, .f = e->fval};
  case AST_NAME: return find(loss_names, e->name) >= 0 ? eval_call(l, e) : eval_name(l, e);
  case AST_BINARY: return eval_binary(l, e);
  case AST_UNARY: return eval_unary(l, e);
  case AST_CALL: return eval_call(l, e);
  case AST_ERROR: l->cx.errors++; return l_error();
  default:
    fail(&l->cx, e->loc, "%s is not allowed in a loss; it takes loss functions (%s) of the "
         "model's outputs, numbers, and + - * /", describe(&l->cx, e), joined(&l->cx, loss_names));
    return l_error();
  }
}

/* ---- the training graph ------------------------------------------------------ */

/* Names the step adds must not be taken by the model. */
static bool names_free(Loss *l) {
  for (int i = 0; i < l->model->nins; i++)
    if (!strcmp(l->model->ins[i]->name, "lr"))
      return fail(&l->cx, l->model->ins[i]->loc, "a model that is trained cannot have an input "
                  "named 'lr': the training step's learning rate takes that name");
  for (int i = 0; i < l->model->nouts; i++)
    if (!strcmp(l->model->outs[i]->name, "loss"))
      return fail(&l->cx, l->model->outs[i]->loc, "a model that is trained cannot have an "
                  "output named 'loss': the training step's loss takes that name");
  return true;
}

/* The loss as the step's first output: a scalar of its own. */
static Value *build_loss(Loss *l, const FeTrain *t) {
  if (!names_free(l))
    return NULL;
  LVal v = eval(l, t->loss);
  if (v.kind == L_ERROR)
    return NULL;
  if (v.kind != L_TENSOR || v.t->type.rank != 0 || !ir_is_float(v.t->type.dt)) {
    fail(&l->cx, t->loss->loc, "the loss must be a scalar: a loss function of the model's "
         "outputs, got %s", v.kind == L_TENSOR ? type_str(l, &v.t->type) : "a number");
    return NULL;
  }
  Value *loss = v.t;
  if (loss->role != V_TEMP || loss->is_output)
    loss = op2(l, OP_mul, loss, scalar(l, loss, 1));
  ir_output(l->g, loss, "loss");
  Graph *g = l->g;
  memmove(g->outputs + 1, g->outputs, (size_t)(g->noutputs - 1) * sizeof *g->outputs);
  g->outputs[0] = loss;
  return loss;
}

/* A freeze glob that matches no parameter is most likely a typo. */
static void check_freeze(Graph *g, const FeTrain *t, Diags *d) {
  for (int i = 0; i < t->nfreeze; i++) {
    FeMode one = {.freeze = &t->freeze[i], .nfreeze = 1};
    bool any = false;
    for (int j = 0; j < g->nparams && !any; j++)
      any = g->params[j]->role == V_PARAM && fe_frozen(&one, g->params[j]->name);
    if (!any)
      diag_warn(d, t->loc, "freeze: \"%s\" matches no parameter of model '%s'", t->freeze[i],
                t->model);
  }
}

/* The optimizer as the graph's own copy, so it outlives the config. */
static OptSpec *copy_opt(Graph *g, const OptSpec *o) {
  OptSpec *c = rt_arena_alloc(g->arena, sizeof *c);
  const char **on = o->nl2_on ? rt_arena_alloc(g->arena, (size_t)o->nl2_on * sizeof *on) : NULL;
  if (!c || (o->nl2_on && !on))
    return NULL;
  *c = *o;
  for (int i = 0; i < o->nl2_on; i++)
    on[i] = rt_arena_strdup(g->arena, o->l2_on[i]);
  c->l2_on = on;
  return c;
}

static void make_trainable(Loss *l, const FeTrain *t, Value *loss) {
  Graph *g = l->g;
  g->lr = ir_input(g, "lr", ir_type(RT_F32, 0, NULL), t->loc);
  g->opt = copy_opt(g, &t->opt);
  if (!g->opt)
    fail(&l->cx, t->loc, "out of memory");
  g->loss = loss;
  g->seed = t->seed;
  for (int i = 0; i < g->nparams; i++)
    if (g->params[i]->role == V_PARAM)
      g->params[i]->wrt = !g->params[i]->frozen;
}

Graph *fe_lower_train(const AstFile *f, const FeOptions *o, const FeTrain *t, bool training,
                      Diags *d) {
  FeOptions fo = o ? *o : (FeOptions){0};
  fo.model = t->model;
  Graph *g = ir_graph_new(t->model, d);
  if (!g) {
    diag_error(d, t->loc, "out of memory");
    return NULL;
  }
  g->training = training;
  FeMode mode = {.training = training, .freeze = t->freeze, .nfreeze = t->nfreeze};
  int errors = d->nerrors;
  const Ast *m = fe_lower_into(g, f, &fo, &mode, d);
  if (!m) {
    ir_graph_free(g);
    return NULL;
  }
  if (d->nerrors > errors || !t->loss)
    return g;                  /* the model's errors are reported; the loss would only echo them */
  Loss l = {.cx = {.a = g->arena, .d = d}, .g = g, .model = m, .loc = t->loss->loc};
  check_freeze(g, t, d);
  Value *loss = build_loss(&l, t);
  if (loss && training)
    make_trainable(&l, t, loss);
  return g;
}

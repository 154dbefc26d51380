/* Lowering: one model of the AST into the graph IR.
 *
 * The model body is evaluated like a program by an interpreter that
 * records: every expression evaluates to an FeVal, a tensor (a graph
 * value) or a compile-time value (an int, which may be a symbolic size such
 * as 4*D, a number, a string, a list). Layer calls build IR through the
 * layer library (layers.c); user blocks are inlined at each call, with
 * their size names unified with the arguments' dims; `for` loops are
 * unrolled. Shape rules run as each node is built (ir/shape.c) and report
 * at the layer's location, so lowering only checks what the IR cannot know:
 * names, argument kinds, block signatures, declared types.
 *
 * Parameter names are a file format (DESIGN.md): a layer or block call is
 * named by name=, else by `as`, else by its binding when the statement's
 * right side is that one call and the name is bound once in the scope,
 * else <layer><k> counted per kind and scope. A naming scope is the model,
 * a block call or one iteration of a for loop; each adds a path part.
 *
 * A mode (FeMode, from train.c) switches the layers to a training step:
 * batchnorm on batch statistics, dropout active, frozen parameters marked
 * as they are made.
 *
 * Errors are collected in a Diags of our own, repeats removed after each
 * statement (a block called ten times reports a mistake in its body once),
 * and copied into the caller's at the end. After an error the value is FE_ERROR, and
 * whatever uses it stays quiet, so one run reports every independent error.
 * Limits on nesting, block depth and unrolled size make hostile input an
 * error, not a crash. */
#include "frontend/frontend.h"
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCK_DEPTH 64          /* block calls inside block calls */
#define MAX_EVAL_DEPTH 2000         /* expression nesting across all of them: bounds the C stack */
#define MAX_STEPS (1L << 20)        /* statements and calls lowered: bounds unrolling */
#define MAX_TRIPS (1 << 16)         /* iterations of one for loop */
#define MAX_DEFAULTS 256            /* parsed layer argument defaults kept */

typedef struct Binding {
  const char *name;
  FeVal val;
  struct Binding *next;
} Binding;

typedef struct Counter {
  const char *kind;           /* a layer or block name */
  int n;                      /* the next k of <kind><k> */
  struct Counter *next;
} Counter;

/* A naming scope: the model, a block call, one iteration of a for loop. */
typedef struct Scope {
  const char *path;           /* prefix of the names made here: "", "backbone.", "stage1.0." */
  Ast **body;                 /* its statements: a name bound once there names its layer */
  int nbody;
  Counter *counters;
} Scope;

/* A weight whose initialisation follows the activation its layer feeds. */
typedef struct Pending {
  Value *w, *out;
  struct Pending *next;
} Pending;

typedef struct Default {      /* a layer argument's default, parsed */
  const FeArg *arg;
  const Ast *ast;
} Default;

typedef struct Lower {
  const AstFile *file;
  const FeOptions *opt;
  Graph *g;
  RtArena *arena;             /* scratch, freed when lowering ends */
  Diags diags;                /* copied into the caller's at the end */
  Pending *pending;
  const Ast *active[MAX_BLOCK_DEPTH];   /* blocks being inlined, innermost last */
  int nactive;
  int depth;                  /* expression nesting */
  long steps;
  bool too_big;               /* MAX_STEPS was reached (reported once) */
  Default defaults[MAX_DEFAULTS];
  int ndefaults;
  const FeMode *mode;         /* training or inference (NULL) */
  Value *counter;             /* dropout's step counter as this step reads it, once made */
  uint32_t ndropout;          /* dropout layers built: their streams */
  Graph *root;                /* the model's graph; g is a scan body while one is lowered */
  struct ScanCtx *scan;       /* the innermost scan being lowered, or NULL */
} Lower;

/* One model or block invocation. A for loop shares its frame (rebindings
 * in the body are seen after it) but has a scope of its own. */
typedef struct Frame {
  Lower *lw;
  Binding *vars;
  Scope *scope;
} Frame;

/* How one layer call names its parameters; the prefix is fixed when the
 * first parameter is made, so layers without any consume no counter. */
struct FeNaming {
  Frame *fr;
  const char *kind;           /* the layer's name */
  const char *given;          /* name= or the statement's hint, or NULL */
  const char *prefix;         /* "h1." once known */
  bool quiet;                 /* a duplicate name was reported for this call */
};

static FeVal eval(Frame *fr, const Ast *e, const char *hint);
static void lower_body(Frame *fr, Ast **body, int n);
static Value *capture(Lower *lw, Value *v);
static FeVal eval_scan(Frame *fr, const Ast *e);
static FeVal eval_index(Frame *fr, const Ast *e);
static void lower_emit(Frame *fr, const Ast *s);

/* ---- values and messages ---------------------------------------------- */

static FeVal v_error(void) { return (FeVal){.kind = FE_ERROR}; }

static FeVal v_tensor(Value *t, SrcLoc loc) {
  return (FeVal){.kind = FE_TENSOR, .t = t, .loc = loc};
}

static FeVal v_int(Size i, SrcLoc loc) { return (FeVal){.kind = FE_INT, .i = i, .loc = loc}; }

static FeVal v_str(const char *s, SrcLoc loc) { return (FeVal){.kind = FE_STR, .s = s, .loc = loc}; }

__attribute__((format(printf, 3, 4)))
static FeVal fail(Lower *lw, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vadd(&lw->diags, DIAG_ERROR, loc, fmt, ap);
  va_end(ap);
  return v_error();
}

static const char *type_str(Lower *lw, const Type *t) {
  char buf[200];
  return rt_arena_strdup(lw->arena, ir_type_str(lw->g, t, buf, sizeof buf));
}

static const char *size_str(Lower *lw, Size s) {
  char buf[100];
  sz_print(buf, sizeof buf, s, lw->g->svars);
  return rt_arena_strdup(lw->arena, buf);
}

/* A value as messages name it: "a tensor f32[N, 10]", "the string \"3\"". */
static const char *describe(Lower *lw, const FeVal *v) {
  int64_t n;
  switch (v->kind) {
  case FE_TENSOR: return rt_arena_printf(lw->arena, "a tensor %s", type_str(lw, &v->t->type));
  case FE_INT:
    if (sz_is_const(v->i, &n))
      return rt_arena_printf(lw->arena, "the int %lld", (long long)n);
    return rt_arena_printf(lw->arena, "the size %s", size_str(lw, v->i));
  case FE_FLOAT: return rt_arena_printf(lw->arena, "the number %g", v->f);
  case FE_BOOL: return v->b ? "true" : "false";
  case FE_STR: return rt_arena_printf(lw->arena, "the string \"%s\"", v->s);
  case FE_LIST: return rt_arena_printf(lw->arena, "a list of %d", v->nitems);
  case FE_TUPLE: return rt_arena_printf(lw->arena, "%d values", v->nitems);
  case FE_INIT: return "an initialiser";
  default: return "nothing";
  }
}

static bool const_int(const FeVal *v, int64_t *n) {
  return v->kind == FE_INT && sz_is_const(v->i, n);
}

/* ---- near names, for "did you mean" -------------------------------------- */

/* Edits (insert, delete, substitute, swap two neighbours) from a to b:
 * the optimal string alignment distance, over three rows. */
static int edit_distance(const char *a, const char *b) {
  int n = (int)strlen(a), m = (int)strlen(b), r[3][65];
  if (n > 64 || m > 64)
    return 99;
  for (int j = 0; j <= m; j++)
    r[0][j] = j;
  for (int i = 1; i <= n; i++) {
    int *cur = r[i % 3], *up = r[(i - 1) % 3], *up2 = r[(i + 1) % 3];
    cur[0] = i;
    for (int j = 1; j <= m; j++) {
      int d = up[j - 1] + (a[i - 1] != b[j - 1]);
      if (up[j] + 1 < d)
        d = up[j] + 1;
      if (cur[j - 1] + 1 < d)
        d = cur[j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && up2[j - 2] + 1 < d)
        d = up2[j - 2] + 1;
      cur[j] = d;
    }
  }
  return r[n % 3][m];
}

typedef struct Near {
  const char *name;           /* the misspelt name */
  const char *best;
  int dist;
} Near;

static void consider(Near *nr, const char *cand) {
  int d = edit_distance(nr->name, cand);
  int most = (int)strlen(nr->name) / 3;
  if (d <= (most > 1 ? most : 1) && d < nr->dist && strcmp(cand, nr->name)) {
    nr->best = cand;
    nr->dist = d;
  }
}

const char *fe_near_name(const char *name, const char *const *cands, int n) {
  Near nr = {name, NULL, 99};
  for (int i = 0; i < n; i++)
    consider(&nr, cands[i]);
  return nr.best;
}

/* "; did you mean 'conv2d'?" or "" */
static const char *suggestion(Lower *lw, const Near *nr) {
  return nr->best ? rt_arena_printf(lw->arena, " (did you mean '%s'?)", nr->best) : "";
}

/* ---- variables and naming -------------------------------------------------- */

static FeVal *lookup(Frame *fr, const char *name) {
  for (Binding *b = fr->vars; b; b = b->next)
    if (!strcmp(b->name, name))
      return &b->val;
  return NULL;
}

/* A rebinding overwrites: the graph keeps the SSA values, the frame only
 * the latest, so the list stays as long as the number of names. */
static void bind(Frame *fr, const char *name, FeVal v) {
  FeVal *old = lookup(fr, name);
  if (old) {
    *old = v;
    return;
  }
  Binding *b = rt_arena_alloc(fr->lw->arena, sizeof *b);
  if (!b)
    return;
  *b = (Binding){name, v, fr->vars};
  fr->vars = b;
}

/* Is name the target of exactly one binding among the scope's statements? */
static bool bound_once(const Scope *s, const char *name) {
  int n = 0;
  for (int i = 0; i < s->nbody; i++)
    if (s->body[i]->kind == AST_BIND)
      for (int j = 0; j < s->body[i]->nitems; j++)
        n += !strcmp(s->body[i]->items[j]->name, name);
  return n == 1;
}

static int next_count(Lower *lw, Scope *s, const char *kind) {
  Counter *c = s->counters;
  while (c && strcmp(c->kind, kind))
    c = c->next;
  if (!c) {
    c = rt_arena_alloc(lw->arena, sizeof *c);
    if (!c)
      return 0;
    *c = (Counter){kind, 0, s->counters};
    s->counters = c;
  }
  return c->n++;
}

/* The path prefix of a layer or block call: "backbone.", "stage1.0.conv2d1." */
static const char *entity_prefix(Frame *fr, const char *kind, const char *given) {
  Lower *lw = fr->lw;
  if (given)
    return rt_arena_printf(lw->arena, "%s%s.", fr->scope->path, given);
  int k = next_count(lw, fr->scope, kind);
  return rt_arena_printf(lw->arena, "%s%s%d.", fr->scope->path, kind, k);
}

/* ---- initialisers --------------------------------------------------------- */

static const struct InitName {
  const char *name;
  InitKind kind;
  int nargs;                  /* arguments: exactly this many, or none if def is set */
  bool def;                   /* the arguments have defaults (a, b) */
  double a, b;
} init_names[] = {
  {"zeros", INIT_ZEROS, 0, true, 0, 0},
  {"ones", INIT_ONES, 0, true, 0, 0},
  {"constant", INIT_CONST, 1, false, 0, 0},
  {"uniform", INIT_UNIFORM, 2, true, 0, 1},        /* torch.nn.init.uniform_(lo=0, hi=1) */
  {"normal", INIT_NORMAL, 2, true, 0, 1},          /* normal_(mean=0, std=1) */
  {"he_normal", INIT_HE_NORMAL, 0, true, M_SQRT2, 0},   /* kaiming_*_, fan_in, gain sqrt(2) */
  {"he_uniform", INIT_HE_UNIFORM, 0, true, M_SQRT2, 0},
  {"xavier_uniform", INIT_XAVIER_UNIFORM, 0, true, 1, 0},
  {"xavier_normal", INIT_XAVIER_NORMAL, 0, true, 1, 0},
  {"uniform_fan", INIT_UNIFORM, 1, false, 0, 0},   /* U(-1/sqrt(n), 1/sqrt(n)): RNN init */
};
#define NINITS ((int)(sizeof init_names / sizeof *init_names))

static bool needs_fans(InitKind k) {
  return k == INIT_HE_NORMAL || k == INIT_HE_UNIFORM || k == INIT_XAVIER_UNIFORM ||
         k == INIT_XAVIER_NORMAL;
}

bool fe_init_fans(Init *init, const Type *t) {
  init->fan_in = init->fan_out = 0;
  if (t->rank < 2)
    return false;
  int64_t rf = 1, in, out;
  for (int i = 2; i < t->rank; i++) {
    int64_t d;
    if (!sz_is_const(t->dim[i], &d) || __builtin_mul_overflow(rf, d, &rf))
      return true;
  }
  if (!sz_is_const(t->dim[1], &in) || !sz_is_const(t->dim[0], &out) ||
      __builtin_mul_overflow(in, rf, &init->fan_in) ||
      __builtin_mul_overflow(out, rf, &init->fan_out))
    init->fan_in = init->fan_out = 0;
  return true;
}

static const struct InitName *find_init(const char *name) {
  for (int i = 0; i < NINITS; i++)
    if (!strcmp(init_names[i].name, name))
      return &init_names[i];
  return NULL;
}

static FeVal unknown_init(Lower *lw, const char *name, SrcLoc loc) {
  Near nr = {name, NULL, 99};
  char list[300] = "";
  for (int i = 0; i < NINITS; i++) {
    consider(&nr, init_names[i].name);
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
             init_names[i].name);
  }
  return fail(lw, loc, "unknown initialiser '%s'%s; the initialisers are %s", name,
              suggestion(lw, &nr), list);
}

/* The numeric arguments of an initialiser call into a, b. */
static bool init_args(Frame *fr, const struct InitName *in, const Ast *call, double *ab) {
  Lower *lw = fr->lw;
  int n = call ? call->nitems : 0;
  if (n != in->nargs && !(n == 0 && in->def)) {
    fail(lw, call ? call->loc : srcloc_none(), "%s takes %d argument%s, got %d", in->name,
         in->nargs, in->nargs == 1 ? "" : "s", n);
    return false;
  }
  for (int i = 0; i < n; i++) {
    const Ast *a = call->items[i];
    FeVal v = eval(fr, a->lhs, NULL);
    int64_t k;
    if (v.kind == FE_ERROR)
      return false;
    if (a->name || (v.kind != FE_FLOAT && !const_int(&v, &k))) {
      fail(lw, a->loc, "%s takes numbers as positional arguments, got %s", in->name,
           a->name ? "a keyword argument" : describe(lw, &v));
      return false;
    }
    ab[i] = v.kind == FE_FLOAT ? v.f : (double)k;
  }
  return true;
}

/* An initialiser: a name or string ("he_normal"), or a call (normal(0, 0.01)). */
static FeVal init_spec(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  const Ast *call = e->kind == AST_CALL && e->lhs->kind == AST_NAME ? e : NULL;
  const char *name = call ? e->lhs->name
                     : e->kind == AST_NAME ? e->name
                     : e->kind == AST_STRING ? e->str : NULL;
  if (e->kind == AST_ERROR)
    return v_error();
  if (!name)
    return fail(lw, e->loc, "expected an initialiser such as he_normal or normal(0, 0.01)");
  const struct InitName *in = find_init(name);
  if (!in)
    return unknown_init(lw, name, e->loc);
  double ab[2] = {in->a, in->b};
  if (!init_args(fr, in, call, ab))
    return v_error();
  FeVal v = {.kind = FE_INIT, .loc = e->loc};
  v.init = (Init){.kind = in->kind, .a = ab[0], .b = ab[1]};
  if (!strcmp(name, "uniform_fan")) {
    if (!(ab[0] > 0))
      return fail(lw, e->loc, "uniform_fan(n) needs n > 0, got %g", ab[0]);
    v.init.a = -1 / sqrt(ab[0]);
    v.init.b = 1 / sqrt(ab[0]);
  }
  if ((in->kind == INIT_UNIFORM && v.init.a > v.init.b) || (in->kind == INIT_NORMAL && v.init.b < 0))
    return fail(lw, e->loc, "%s(%g, %g): %s", name, ab[0], ab[1],
                in->kind == INIT_UNIFORM ? "the low bound is above the high one"
                                         : "the standard deviation is negative");
  return v;
}

/* ---- parameters ---------------------------------------------------------- */

/* A parameter or state value named name; a name already taken is an error
 * (unless *quiet: one report per layer is enough) at loc. */
static Value *new_param(Lower *lw, const char *name, Type t, Init init, Role role, SrcLoc loc,
                        bool *quiet) {
  Value *old = ir_find_param(lw->root, name);
  if (old && !*quiet) {
    fail(lw, loc, "parameter name '%s' is already taken (by the one made at %d:%d); "
         "name this layer with name= or as", name, old->loc.line, old->loc.col);
    *quiet = true;
  }
  if (!fe_init_fans(&init, &t) && needs_fans(init.kind)) {
    fail(lw, loc, "%s: this initialiser needs a tensor of rank 2 or more for its fans, got %s",
         name, type_str(lw, &t));
    init = (Init){.kind = INIT_ZEROS};
  }
  if (role == V_STATE)
    return capture(lw, ir_state(lw->root, name, t, init, loc));
  Value *v = ir_param(lw->root, name, t, init, loc);   /* a scan body reads it as an invariant */
  v->frozen = fe_frozen(lw->mode, name);
  return capture(lw, v);
}

bool fe_frozen(const FeMode *mode, const char *name) {
  for (int i = 0; mode && i < mode->nfreeze; i++)
    if (fnmatch(mode->freeze[i], name, 0) == 0)
      return true;
  return false;
}

static Value *layer_param(FeCall *c, const char *name, Type t, Init init, Role role) {
  struct FeNaming *nm = c->naming;
  Lower *lw = nm->fr->lw;
  if (!nm->prefix)
    nm->prefix = entity_prefix(nm->fr, nm->kind, nm->given);
  const char *full = rt_arena_printf(lw->arena, "%s%s", nm->prefix, name);
  return new_param(lw, full ? full : name, t, init, role, c->loc, &nm->quiet);
}

Value *fe_param(FeCall *c, const char *name, Type t, Init init) {
  return layer_param(c, name, t, init, V_PARAM);
}

Value *fe_state(FeCall *c, const char *name, Type t, Init init) {
  return layer_param(c, name, t, init, V_STATE);
}

/* The counter is advanced once, at its first use, and the new value is
 * written in place of the old: every dropout of the step, forward and
 * backward, reads that one new value, so both see the same mask. */
Value *fe_dropout_counter(FeCall *c, uint32_t *stream) {
  Lower *lw = c->naming->fr->lw;
  Graph *g = lw->g;
  *stream = ++lw->ndropout;
  if (!lw->counter) {
    Value *state = ir_state(g, "dropout.step", ir_type(RT_I64, 0, NULL),
                            (Init){.kind = INIT_ZEROS}, srcloc_none());
    lw->counter = ir_op2(g, OP_add, state, ir_scalar(g, RT_I64, 1), c->loc);
    lw->counter->updates = state;
  }
  return lw->counter;
}

/* ---- types ---------------------------------------------------------------- */

/* A size expression of the source as written: "4*c", "(H + 1)/2". */
static void size_src(const Ast *e, char *buf, int len, int prec) {
  int n = (int)strlen(buf);
  if (n >= len - 1)
    return;
  if (e->kind == AST_INT) {
    snprintf(buf + n, len - n, "%lld", (long long)e->ival);
  } else if (e->kind == AST_NAME) {
    snprintf(buf + n, len - n, "%s", e->name);
  } else if (e->kind == AST_BINARY) {
    int p = e->op == TK_PLUS || e->op == TK_MINUS ? 1 : 2;
    const char *op = fe_token_spelling(e->op);
    snprintf(buf + n, len - n, "%s", p < prec ? "(" : "");
    size_src(e->lhs, buf, len, p);
    n = (int)strlen(buf);
    snprintf(buf + n, len - n, p == 1 ? " %s " : "%s", op);
    size_src(e->rhs, buf, len, p + 1);
    n = (int)strlen(buf);
    snprintf(buf + n, len - n, "%s", p < prec ? ")" : "");
  } else {
    snprintf(buf + n, len - n, "?");
  }
}

static const char *type_src(Lower *lw, const Ast *ty) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s[", rt_dtype_name(ty->dtype));
  for (int i = 0; i < ty->nitems; i++) {
    if (i)
      strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
    size_src(ty->items[i], buf, sizeof buf, 0);
  }
  strncat(buf, "]", sizeof buf - strlen(buf) - 1);
  return rt_arena_strdup(lw->arena, buf);
}

/* A dim: an int expression whose value is a usable size. */
static bool eval_dim(Frame *fr, const Ast *e, Size *out) {
  FeVal v = eval(fr, e, NULL);
  int64_t n;
  if (v.kind == FE_ERROR)
    return false;
  if (v.kind != FE_INT) {
    fail(fr->lw, e->loc, "a size must be an int, got %s", describe(fr->lw, &v));
    return false;
  }
  if (v.i.bad || (sz_is_const(v.i, &n) && (n < 0 || n > FE_MAX_SIZE))) {
    fail(fr->lw, e->loc, "size %s is not a valid size (0 to 2^31 - 1)", size_str(fr->lw, v.i));
    return false;
  }
  *out = v.i;
  return true;
}

/* A tensor type written in the source, evaluated in fr. */
static bool eval_type(Frame *fr, const Ast *ty, Type *out) {
  if (ty->kind != AST_TYPE || ty->tkind != ATY_TENSOR)
    return false;
  if (ty->nitems > IR_MAX_RANK) {
    fail(fr->lw, ty->loc, "a tensor has at most %d dims, this type has %d", IR_MAX_RANK,
         ty->nitems);
    return false;
  }
  *out = (Type){.dt = ty->dtype, .rank = ty->nitems};
  bool ok = true;
  for (int i = 0; i < ty->nitems; i++)
    ok &= eval_dim(fr, ty->items[i], &out->dim[i]);
  return ok;
}

static bool is_scalar_input(const Ast *def, const char *name) {
  for (int i = 0; def && i < def->nins; i++)
    if (def->ins[i]->type && def->ins[i]->type->tkind != ATY_TENSOR &&
        !strcmp(def->ins[i]->name, name))
      return true;
  return false;
}

/* Binds the bare size names of ty not bound yet (and not scalar inputs of
 * def, whose values come later) to the dims of actual. */
static void unify_names(Frame *fr, const Ast *ty, const Type *actual, const Ast *def) {
  if (ty->kind != AST_TYPE || ty->nitems != actual->rank)
    return;
  for (int i = 0; i < ty->nitems; i++) {
    const Ast *d = ty->items[i];
    if (d->kind == AST_NAME && !lookup(fr, d->name) && !is_scalar_input(def, d->name))
      bind(fr, d->name, v_int(actual->dim[i], d->loc));
  }
}

/* 1 if ty evaluates to actual, 0 if not (*want is what it evaluated to),
 * -1 after an error in ty itself. */
static int type_matches(Frame *fr, const Ast *ty, const Type *actual, Type *want) {
  if (ty->kind != AST_TYPE)
    return -1;
  if (!eval_type(fr, ty, want))
    return -1;
  return ir_type_eq(want, actual);
}

/* "f32[N, C]" or "f32[N, C] (here f32[N, 32])" */
static const char *declared_str(Lower *lw, const Ast *ty, const Type *want) {
  const char *src = type_src(lw, ty), *val = type_str(lw, want);
  return strcmp(src, val) ? rt_arena_printf(lw->arena, "%s (here %s)", src, val) : src;
}

/* ---- expressions ------------------------------------------------------- */

static FeVal unsupported(Lower *lw, SrcLoc loc, const char *what) {
  return fail(lw, loc, "not supported yet: %s", what);
}

static FeVal eval_name(Frame *fr, const Ast *e) {
  FeVal *v = lookup(fr, e->name);
  if (v) {
    FeVal r = *v;
    r.loc = e->loc;
    if (r.kind == FE_TENSOR)
      r.t = capture(fr->lw, r.t);      /* a value from outside a scan body */
    return r;
  }
  Lower *lw = fr->lw;
  if (fe_find_layer(e->name) || ast_find_def(lw->file, AST_BLOCK, e->name))
    return fail(lw, e->loc, "'%s' is a layer: call it, as in %s(x) or x |> %s()", e->name,
                e->name, e->name);
  Near nr = {e->name, NULL, 99};
  for (Binding *b = fr->vars; b; b = b->next)
    consider(&nr, b->name);
  return fail(lw, e->loc, "unknown name '%s'%s", e->name, suggestion(lw, &nr));
}

static FeVal eval_list(Frame *fr, const Ast *e) {
  FeVal v = {.kind = FE_LIST, .loc = e->loc, .nitems = e->nitems};
  v.items = rt_arena_alloc(fr->lw->arena, (size_t)(e->nitems + 1) * sizeof *v.items);
  if (!v.items)
    return fail(fr->lw, e->loc, "out of memory");
  bool ok = true;
  for (int i = 0; i < e->nitems; i++) {
    v.items[i] = eval(fr, e->items[i], NULL);
    ok &= v.items[i].kind != FE_ERROR;
  }
  return ok ? v : v_error();
}

/* A number as a scalar constant of the tensor operand's dtype. */
static Value *as_tensor(Lower *lw, const FeVal *v, RtDType dt) {
  int64_t n;
  if (v->kind == FE_TENSOR)
    return v->t;
  if (v->kind == FE_FLOAT)
    return ir_scalar(lw->g, dt, v->f);
  if (const_int(v, &n))
    return ir_scalar(lw->g, dt, (double)n);
  return NULL;
}

static Op tensor_op(TokenKind k) {
  switch (k) {
  case TK_PLUS: return OP_add;
  case TK_MINUS: return OP_sub;
  case TK_STAR: return OP_mul;
  case TK_SLASH: return OP_div;
  default: return OP_matmul;
  }
}

static FeVal tensor_binary(Frame *fr, const Ast *e, const FeVal *a, const FeVal *b) {
  Lower *lw = fr->lw;
  if (e->op == TK_PERCENT)
    return unsupported(lw, e->loc, "'%' on tensors");
  RtDType dt = a->kind == FE_TENSOR ? a->t->type.dt : b->t->type.dt;
  Value *x = as_tensor(lw, a, dt), *y = as_tensor(lw, b, dt);
  if (!x || !y)
    return fail(lw, e->loc, "'%s' needs tensors or numbers, got %s and %s",
                fe_token_spelling(e->op), describe(lw, a), describe(lw, b));
  Attr at = ir_attr();
  return v_tensor(ir_op(lw->g, tensor_op(e->op), (Value *[]){x, y}, 2, &at, e->loc), e->loc);
}

/* Ints (maybe symbolic) stay ints; '/' of constants that does not divide
 * exactly gives a number, as in Python. */
static FeVal int_binary(Frame *fr, const Ast *e, Size a, Size b) {
  Lower *lw = fr->lw;
  int64_t x, y;
  bool consts = sz_is_const(a, &x) && sz_is_const(b, &y);
  Size r;
  switch (e->op) {
  case TK_PLUS: r = sz_add(a, b); break;
  case TK_MINUS: r = sz_sub(a, b); break;
  case TK_STAR: r = sz_mul(a, b); break;
  case TK_SLASH:
  case TK_PERCENT:
    if (consts && y == 0)
      return fail(lw, e->loc, "division by zero");
    if (consts && e->op == TK_PERCENT)
      return v_int(sz_const(x % y), e->loc);
    if (consts && x % y != 0)
      return (FeVal){.kind = FE_FLOAT, .f = (double)x / (double)y, .loc = e->loc};
    if (e->op == TK_PERCENT)
      return fail(lw, e->loc, "'%%' needs sizes known at compile time");
    r = sz_div(a, b);
    if (r.bad)
      return fail(lw, e->loc, "%s / %s is not a whole size", size_str(lw, a), size_str(lw, b));
    break;
  default: return fail(lw, e->loc, "'%s' needs tensors", fe_token_spelling(e->op));
  }
  if (r.bad)
    return fail(lw, e->loc, "the size expression %s %s %s overflows or is too complex",
                size_str(lw, a), fe_token_spelling(e->op), size_str(lw, b));
  return v_int(r, e->loc);
}

static bool as_number(const FeVal *v, double *out) {
  int64_t n;
  if (v->kind == FE_FLOAT)
    *out = v->f;
  else if (const_int(v, &n))
    *out = (double)n;
  else
    return false;
  return true;
}

static FeVal number_binary(Frame *fr, const Ast *e, const FeVal *a, const FeVal *b) {
  Lower *lw = fr->lw;
  if (a->kind == FE_INT && b->kind == FE_INT)
    return int_binary(fr, e, a->i, b->i);
  double x, y, r;
  if (!as_number(a, &x) || !as_number(b, &y))
    return fail(lw, e->loc, "'%s' needs numbers or tensors, got %s and %s",
                fe_token_spelling(e->op), describe(lw, a), describe(lw, b));
  switch (e->op) {
  case TK_PLUS: r = x + y; break;
  case TK_MINUS: r = x - y; break;
  case TK_STAR: r = x * y; break;
  case TK_SLASH: r = x / y; break;
  case TK_PERCENT: r = fmod(x, y); break;
  default: return fail(lw, e->loc, "'%s' needs tensors", fe_token_spelling(e->op));
  }
  return (FeVal){.kind = FE_FLOAT, .f = r, .loc = e->loc};
}

static bool is_comparison(TokenKind k) {
  return k == TK_EQ || k == TK_NE || k == TK_LT || k == TK_LE || k == TK_GT || k == TK_GE;
}

static Op compare_op(TokenKind k) {
  switch (k) {
  case TK_EQ: return OP_eq;
  case TK_NE: return OP_ne;
  case TK_LT: return OP_lt;
  case TK_LE: return OP_le;
  case TK_GT: return OP_gt;
  default: return OP_ge;
  }
}

/* a < b and the like on tensors (numbers broadcast): a bool tensor. */
static FeVal tensor_compare(Frame *fr, const Ast *e, const FeVal *a, const FeVal *b) {
  Lower *lw = fr->lw;
  if (a->kind != FE_TENSOR && b->kind != FE_TENSOR)
    return fail(lw, e->loc, "'%s' compares tensors (a mask such as x > 0), got %s and %s",
                fe_token_spelling(e->op), describe(lw, a), describe(lw, b));
  RtDType dt = a->kind == FE_TENSOR ? a->t->type.dt : b->t->type.dt;
  Value *x = as_tensor(lw, a, dt), *y = as_tensor(lw, b, dt);
  if (!x || !y)
    return fail(lw, e->loc, "'%s' needs tensors or numbers, got %s and %s",
                fe_token_spelling(e->op), describe(lw, a), describe(lw, b));
  return v_tensor(ir_op2(lw->g, compare_op(e->op), x, y, e->loc), e->loc);
}

static FeVal eval_binary(Frame *fr, const Ast *e) {
  FeVal a = eval(fr, e->lhs, NULL), b = eval(fr, e->rhs, NULL);
  if (a.kind == FE_ERROR || b.kind == FE_ERROR)
    return v_error();
  if (is_comparison(e->op))
    return tensor_compare(fr, e, &a, &b);
  if (a.kind == FE_TENSOR || b.kind == FE_TENSOR)
    return tensor_binary(fr, e, &a, &b);
  return number_binary(fr, e, &a, &b);
}

static FeVal eval_unary(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  FeVal a = eval(fr, e->lhs, NULL);
  if (a.kind == FE_ERROR || (e->op == TK_PLUS && (a.kind == FE_TENSOR || a.kind == FE_INT ||
                                                  a.kind == FE_FLOAT)))
    return a;
  if (a.kind == FE_TENSOR)
    return v_tensor(ir_op1(lw->g, OP_neg, a.t, e->loc), e->loc);
  if (a.kind == FE_INT)
    return v_int(sz_sub(sz_const(0), a.i), e->loc);
  if (a.kind == FE_FLOAT)
    return (FeVal){.kind = FE_FLOAT, .f = -a.f, .loc = e->loc};
  return fail(lw, e->loc, "'%s' needs a number or a tensor, got %s", fe_token_spelling(e->op),
              describe(lw, &a));
}

static FeVal call_layer_with(Frame *fr, const FeLayer *l, SrcLoc loc, const FeVal *args, int n);

/* x.T: the transpose of the last two axes, by the transpose layer. */
static FeVal eval_field(Frame *fr, const Ast *e) {
  if (strcmp(e->name, "T"))
    return fail(fr->lw, e->loc, "unknown field '.%s' (only .T, the transpose, exists)",
                e->name);
  FeVal x = eval(fr, e->lhs, NULL);
  if (x.kind == FE_ERROR)
    return x;
  return call_layer_with(fr, fe_find_layer("transpose"), e->loc, &x, 1);
}

/* Counts a statement or call against MAX_STEPS; false once over it. */
static bool step(Lower *lw, SrcLoc loc) {
  if (lw->too_big)
    return false;
  if (++lw->steps <= MAX_STEPS)
    return true;
  lw->too_big = true;
  fail(lw, loc, "the model unrolls to more than %ld statements and calls", MAX_STEPS);
  return false;
}

/* ---- calls: matching arguments to parameters ------------------------------ */

/* Does the space-separated list of words contain w? */
static bool has_word(const char *list, const char *w) {
  size_t n = strlen(w);
  while (list && *list) {
    size_t len = strcspn(list, " ");
    if (len == n && !strncmp(list, w, n))
      return true;
    list += len;
    list += *list == ' ';
  }
  return false;
}

/* "x, k/kernel/kernel_size, stride, name": the parameters with their other
 * names (aliases[i], space-separated, or NULL; aliases itself may be NULL). */
static const char *joined(Lower *lw, const char *const *names, const char *const *aliases, int n) {
  char buf[600] = "";
  for (int i = 0; i < n; i++) {
    size_t at = strlen(buf);
    snprintf(buf + at, sizeof buf - at, "%s%s%s%s", i ? ", " : "", names[i],
             aliases && aliases[i] ? " " : "", aliases && aliases[i] ? aliases[i] : "");
    for (char *p = buf + at + (i ? 2 : 0); *p; p++)   /* "k kernel" -> "k/kernel" */
      if (*p == ' ')
        *p = '/';
  }
  return rt_arena_printf(lw->arena, "%s, name", buf);
}

static int find_name(const char *const *names, const char *const *aliases, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], name) || (aliases && has_word(aliases[i], name)))
      return i;
  return -1;
}

/* Pairs the arguments of a call with the parameters names[0..n): given[i]
 * is the AST_ARG for names[i] or NULL; `name=` (when no parameter has that
 * name) goes to *name_arg. Reports every mismatch; false if any. */
static bool match_args(Frame *fr, const Ast *call, const char *what, const char *const *names,
                       const char *const *aliases, int n, const Ast **given, const Ast **name_arg) {
  Lower *lw = fr->lw;
  int pos = 0, npos = 0;
  bool ok = true;
  memset(given, 0, (size_t)n * sizeof *given);
  *name_arg = NULL;
  for (int i = 0; i < call->nitems; i++)
    npos += !call->items[i]->name;
  for (int i = 0; i < call->nitems; i++) {
    const Ast *a = call->items[i];
    int j = a->name ? find_name(names, aliases, n, a->name) : pos < n ? pos++ : -1;
    if (!a->name && j < 0) {
      fail(lw, a->loc, "%s takes at most %d positional argument%s, got %d%s", what, n,
           n == 1 ? "" : "s", npos, call->piped ? " (the piped value is the first)" : "");
      return false;
    }
    if (a->name && j < 0 && !strcmp(a->name, "name")) {
      *name_arg = a;
    } else if (j < 0) {
      fail(lw, a->loc, "%s has no argument '%s'; it takes %s", what, a->name,
           joined(lw, names, aliases, n));
      ok = false;
    } else if (given[j]) {
      fail(lw, a->loc, "%s: argument '%s' is given twice", what, names[j]);
      ok = false;
    } else {
      given[j] = a;
    }
  }
  return ok;
}

/* ---- calls: argument kinds ---------------------------------------------- */

static const char *kind_wanted(FeArgKind k) {
  switch (k) {
  case FA_TENSOR: return "a tensor";
  case FA_OPERAND: return "a tensor or a number";
  case FA_INT: return "an int";
  case FA_SIZE: return "an int";
  case FA_INTS: return "an int or a list of ints";
  case FA_PAD: return "an int, a list of ints, or same";
  case FA_SIZES: return "a list of ints";
  case FA_FLOAT: return "a number";
  case FA_BOOL: return "true or false";
  case FA_STR: return "a string";
  case FA_TENSORS: return "a list of tensors";
  default: return "an initialiser";
  }
}

static bool all_const_ints(const FeVal *v) {
  int64_t n;
  for (int i = 0; i < v->nitems; i++)
    if (!const_int(&v->items[i], &n))
      return false;
  return true;
}

/* Does v fit the kind? Converts an int to a number for FA_FLOAT. */
static bool fits(FeArgKind k, FeVal *v) {
  int64_t n;
  switch (k) {
  case FA_TENSOR: return v->kind == FE_TENSOR;
  case FA_OPERAND: return v->kind == FE_TENSOR || v->kind == FE_FLOAT || const_int(v, &n);
  case FA_INT: return const_int(v, &n);
  case FA_SIZE: return v->kind == FE_INT;
  case FA_INTS: return const_int(v, &n) || (v->kind == FE_LIST && all_const_ints(v));
  case FA_PAD: return v->kind == FE_STR || fits(FA_INTS, v);
  case FA_SIZES: {
    for (int i = 0; v->kind == FE_LIST && i < v->nitems; i++)
      if (v->items[i].kind != FE_INT)
        return false;
    return v->kind == FE_LIST;
  }
  case FA_FLOAT:
    if (const_int(v, &n))
      *v = (FeVal){.kind = FE_FLOAT, .f = (double)n, .loc = v->loc};
    return v->kind == FE_FLOAT;
  case FA_BOOL: return v->kind == FE_BOOL;
  case FA_STR: return v->kind == FE_STR;
  case FA_TENSORS:
    for (int i = 0; v->kind == FE_LIST && i < v->nitems; i++)
      if (v->items[i].kind != FE_TENSOR)
        return false;
    return v->kind == FE_LIST;
  default: return v->kind == FE_INIT;
  }
}

/* Checks v against the kind; a tensor of unknown type (after an error)
 * fails quietly. */
static bool check_kind(Lower *lw, const char *what, const char *arg, FeArgKind k, FeVal *v) {
  if (v->kind == FE_ERROR)
    return false;
  if (fits(k, v) && k == FA_TENSORS) {
    bool known = true;
    for (int i = 0; i < v->nitems; i++)
      known &= ir_type_known(&v->items[i].t->type);
    return known;
  }
  if (fits(k, v))
    return v->kind != FE_TENSOR || ir_type_known(&v->t->type);
  if (k == FA_INT && v->kind == FE_INT)
    fail(lw, v->loc, "%s: argument '%s' must be known at compile time, got %s", what, arg,
         describe(lw, v));
  else
    fail(lw, v->loc, "%s: argument '%s' must be %s, got %s", what, arg, kind_wanted(k),
         describe(lw, v));
  return false;
}

/* An argument's value as its kind reads it: initialisers are parsed as
 * such, and where a string is accepted a bare word (pad=same) is one. */
static FeVal eval_as(Frame *fr, FeArgKind k, const Ast *e) {
  if (k == FA_INIT)
    return init_spec(fr, e);
  if ((k == FA_STR || k == FA_PAD) && e->kind == AST_NAME && !lookup(fr, e->name))
    return v_str(e->name, e->loc);
  return eval(fr, e, NULL);
}

/* A default of the layer table, parsed once per lowering. */
static FeVal default_value(Frame *fr, const FeArg *arg) {
  Lower *lw = fr->lw;
  const Ast *e = NULL;
  for (int i = 0; i < lw->ndefaults && !e; i++)
    if (lw->defaults[i].arg == arg)
      e = lw->defaults[i].ast;
  if (!e) {
    e = fe_parse_expr(lw->arena, "<default>", arg->def, strlen(arg->def), &lw->diags);
    if (!e)
      return fail(lw, srcloc_none(), "out of memory");
    if (lw->ndefaults < MAX_DEFAULTS)
      lw->defaults[lw->ndefaults++] = (Default){arg, e};
  }
  Frame empty = {.lw = lw, .scope = fr->scope};
  FeVal v = eval_as(&empty, arg->kind, e);
  v.loc = srcloc_none();
  return v;
}

/* ---- calls: layers ------------------------------------------------------ */

/* Builds the layer from checked arguments; a weight left to follow the
 * activation waits until the whole model is built. */
static FeVal build_layer(Frame *fr, FeCall *c) {
  FeVal out = c->layer->build(c);
  if (c->auto_init && out.kind == FE_TENSOR) {
    Pending *p = rt_arena_alloc(fr->lw->arena, sizeof *p);
    if (p) {
      *p = (Pending){c->auto_init, out.t, fr->lw->pending};
      fr->lw->pending = p;
    }
  }
  return out;
}

static FeCall *new_call(Frame *fr, const FeLayer *l, SrcLoc loc, const char *given) {
  Lower *lw = fr->lw;
  FeCall *c = rt_arena_alloc(lw->arena, sizeof *c);
  struct FeNaming *nm = rt_arena_alloc(lw->arena, sizeof *nm);
  if (!c || !nm)
    return NULL;
  *nm = (struct FeNaming){.fr = fr, .kind = l->name, .given = given};
  c->layer = l;
  c->g = lw->g;
  c->loc = loc;
  c->naming = nm;
  c->mode = lw->mode;
  return c;
}

static int layer_nargs(const FeLayer *l) {
  int n = 0;
  while (n < FE_MAX_ARGS && l->args[n].name)
    n++;
  return n;
}

/* The value of argument i: given, defaulted, or FE_NONE; FE_ERROR if
 * missing or of the wrong kind (reported). */
static FeVal layer_arg(Frame *fr, const FeLayer *l, int i, const Ast *given, SrcLoc loc) {
  const FeArg *spec = &l->args[i];
  FeVal v;
  if (given)
    v = eval_as(fr, spec->kind, given->lhs);
  else if (!spec->def)
    return fail(fr->lw, loc, "%s: missing argument '%s'", l->name, spec->name);
  else if (!*spec->def)
    return (FeVal){.kind = FE_NONE};
  else
    v = default_value(fr, spec);
  if (given)
    v.loc = given->loc;
  return check_kind(fr->lw, l->name, spec->name, spec->kind, &v) ? v : v_error();
}

/* name="..." of a call into *out, if given; false after an error. */
static bool name_kw(Frame *fr, const Ast *a, const char **out) {
  if (!a)
    return true;
  FeVal v = eval_as(fr, FA_STR, a->lhs);
  if (v.kind == FE_ERROR)
    return false;
  if (v.kind != FE_STR || !*v.s) {
    fail(fr->lw, a->loc, "name= must be a non-empty string, got %s", describe(fr->lw, &v));
    return false;
  }
  *out = v.s;
  return true;
}

static FeVal call_layer(Frame *fr, const FeLayer *l, const Ast *e, const char *hint) {
  const char *names[FE_MAX_ARGS], *aliases[FE_MAX_ARGS];
  const Ast *given[FE_MAX_ARGS], *name_arg;
  int n = layer_nargs(l);
  for (int i = 0; i < n; i++) {
    names[i] = l->args[i].name;
    aliases[i] = l->args[i].alias;
  }
  if (!match_args(fr, e, l->name, names, aliases, n, given, &name_arg))
    return v_error();
  const char *given_name = hint;
  bool ok = name_kw(fr, name_arg, &given_name);
  FeCall *c = new_call(fr, l, e->loc, given_name);
  if (!c)
    return fail(fr->lw, e->loc, "out of memory");
  for (int i = 0; i < n; i++) {
    c->args[i] = layer_arg(fr, l, i, given[i], e->loc);
    ok &= c->args[i].kind != FE_ERROR;
  }
  return ok ? build_layer(fr, c) : v_error();
}

/* A layer called from lowering itself (x.T), with its first n arguments
 * given as values and the others defaulted. */
static FeVal call_layer_with(Frame *fr, const FeLayer *l, SrcLoc loc, const FeVal *args, int n) {
  FeCall *c = new_call(fr, l, loc, NULL);
  if (!c)
    return fail(fr->lw, loc, "out of memory");
  bool ok = true;
  for (int i = 0; i < layer_nargs(l); i++) {
    c->args[i] = i < n ? args[i] : layer_arg(fr, l, i, NULL, loc);
    if (i < n)
      ok &= check_kind(fr->lw, l->name, l->args[i].name, l->args[i].kind, &c->args[i]);
    ok &= c->args[i].kind != FE_ERROR;
  }
  return ok ? build_layer(fr, c) : v_error();
}

/* ---- calls: blocks ----------------------------------------------------- */

static FeArgKind input_kind(const Ast *in) {
  switch (in->type->tkind) {
  case ATY_TENSOR: return FA_TENSOR;
  case ATY_INT: return FA_SIZE;
  case ATY_FLOAT: return FA_FLOAT;
  case ATY_BOOL: return FA_BOOL;
  default: return FA_STR;
  }
}

static bool is_tensor_input(const Ast *in) {
  return in->type->kind == AST_TYPE && in->type->tkind == ATY_TENSOR;
}

/* Checks a tensor argument against its declared type, once every size
 * name it uses is bound. */
static bool check_input_type(Frame *callee, const Ast *blk, const Ast *in, const FeVal *v,
                             SrcLoc loc) {
  Lower *lw = callee->lw;
  Type want;
  int m = type_matches(callee, in->type, &v->t->type, &want);
  if (m == 0)
    fail(lw, loc, "block %s: argument '%s' must be %s, got %s", blk->name, in->name,
         declared_str(lw, in->type, &want), type_str(lw, &v->t->type));
  return m == 1;
}

/* The arguments given to a block, evaluated in the caller's frame into
 * vals (before the block counts as active: `b(x) |> b()` is no recursion).
 * Reports each wrong or missing one; false if any. */
static bool eval_given(Frame *fr, const Ast *blk, const Ast **given, FeVal *vals, SrcLoc loc) {
  Lower *lw = fr->lw;
  const char *what = rt_arena_printf(lw->arena, "block %s", blk->name);
  bool ok = true;
  for (int i = 0; i < blk->nins; i++) {
    const Ast *in = blk->ins[i];
    if (in->type->kind != AST_TYPE) {
      ok = false;
    } else if (given[i]) {
      vals[i] = eval_as(fr, input_kind(in), given[i]->lhs);
      vals[i].loc = given[i]->loc;
      ok &= check_kind(lw, what, in->name, input_kind(in), &vals[i]);
    } else if (!in->init) {
      ok = false;
      fail(lw, loc, "%s: missing argument '%s'", what, in->name);
    }
  }
  return ok;
}

/* Binds the block's inputs in the callee's frame, in an order that lets
 * types use int parameters and defaults use sizes: the scalar arguments
 * given, then size names unified from the tensor arguments, then the
 * defaults, then each tensor argument checked against its declared type. */
static bool bind_inputs(Frame *callee, const Ast *blk, const Ast **given, FeVal *vals,
                        SrcLoc loc) {
  Lower *lw = callee->lw;
  const char *what = rt_arena_printf(lw->arena, "block %s", blk->name);
  bool ok = true;
  for (int i = 0; i < blk->nins; i++)
    if (given[i] && !is_tensor_input(blk->ins[i]))
      bind(callee, blk->ins[i]->name, vals[i]);
  for (int i = 0; i < blk->nins; i++)
    if (given[i] && is_tensor_input(blk->ins[i]))
      unify_names(callee, blk->ins[i]->type, &vals[i].t->type, blk);
  for (int i = 0; ok && i < blk->nins; i++) {
    const Ast *in = blk->ins[i];
    if (given[i])
      continue;
    vals[i] = eval_as(callee, input_kind(in), in->init);
    ok = check_kind(lw, what, in->name, input_kind(in), &vals[i]);
    if (ok)
      bind(callee, in->name, vals[i]);
  }
  for (int i = 0; ok && i < blk->nins; i++)
    if (given[i] && is_tensor_input(blk->ins[i])) {
      ok &= check_input_type(callee, blk, blk->ins[i], &vals[i], loc);
      bind(callee, blk->ins[i]->name, vals[i]);
    }
  return ok;
}

/* The block's outputs: one value, or a tuple of several. */
static FeVal block_outputs(Frame *callee, const Ast *blk, SrcLoc loc) {
  Lower *lw = callee->lw;
  FeVal r = {.kind = FE_TUPLE, .loc = loc, .nitems = blk->nouts};
  r.items = rt_arena_alloc(lw->arena, (size_t)(blk->nouts + 1) * sizeof *r.items);
  if (!r.items)
    return fail(lw, loc, "out of memory");
  bool ok = true;
  for (int i = 0; i < blk->nouts; i++) {
    const Ast *out = blk->outs[i];
    FeVal *v = lookup(callee, out->name);
    if (!v) {
      ok = false;
      fail(lw, out->loc, "block '%s' never binds its output '%s'", blk->name, out->name);
      continue;
    }
    r.items[i] = *v;
    r.items[i].loc = loc;
    ok &= v->kind != FE_ERROR;
    if (v->kind != FE_TENSOR || !out->type || !ir_type_known(&v->t->type))
      continue;
    Type want;
    unify_names(callee, out->type, &v->t->type, NULL);
    int m = type_matches(callee, out->type, &v->t->type, &want);
    if (m == 0)
      fail(lw, loc, "block %s: output '%s' is %s, declared %s", blk->name, out->name,
           type_str(lw, &v->t->type), declared_str(lw, out->type, &want));
    ok &= m == 1;
  }
  if (!ok)
    return v_error();
  return blk->nouts == 1 ? r.items[0] : r;
}

static bool enter_block(Frame *fr, const Ast *blk, SrcLoc loc) {
  Lower *lw = fr->lw;
  for (int i = 0; i < lw->nactive; i++)
    if (lw->active[i] == blk) {
      fail(lw, loc, "block '%s' calls itself%s%s: recursion is not allowed", blk->name,
           i + 1 < lw->nactive ? " through " : "",
           i + 1 < lw->nactive ? lw->active[lw->nactive - 1]->name : "");
      return false;
    }
  if (lw->nactive == MAX_BLOCK_DEPTH) {
    fail(lw, loc, "block calls nest more than %d deep", MAX_BLOCK_DEPTH);
    return false;
  }
  lw->active[lw->nactive++] = blk;
  return true;
}

/* Inlines a block: its inputs bound in a frame of its own, its body
 * lowered in a naming scope named like a layer. Errors inside it get a
 * note pointing at this call. */
static FeVal call_block(Frame *fr, const Ast *blk, const Ast *e, const char *hint) {
  Lower *lw = fr->lw;
  const char **names = rt_arena_alloc(lw->arena, (size_t)(blk->nins + 1) * sizeof *names);
  const Ast **given = rt_arena_alloc(lw->arena, (size_t)(blk->nins + 1) * sizeof *given);
  FeVal *vals = rt_arena_alloc(lw->arena, (size_t)(blk->nins + 1) * sizeof *vals);
  const Ast *name_arg;
  if (!names || !given || !vals)
    return fail(lw, e->loc, "out of memory");
  for (int i = 0; i < blk->nins; i++)
    names[i] = blk->ins[i]->name;
  const char *what = rt_arena_printf(lw->arena, "block %s", blk->name);
  const char *given_name = hint;
  if (!match_args(fr, e, what, names, NULL, blk->nins, given, &name_arg) ||
      !name_kw(fr, name_arg, &given_name) || !eval_given(fr, blk, given, vals, e->loc) ||
      !enter_block(fr, blk, e->loc))
    return v_error();
  Scope sc = {.path = entity_prefix(fr, blk->name, given_name), .body = blk->body,
              .nbody = blk->nbody};
  Frame callee = {.lw = lw, .scope = &sc};
  FeVal r = v_error();
  if (bind_inputs(&callee, blk, given, vals, e->loc)) {
    int errors = lw->diags.nerrors;
    lower_body(&callee, blk->body, blk->nbody);
    r = block_outputs(&callee, blk, e->loc);
    if (lw->diags.nerrors > errors && !lw->too_big)
      diag_note(&lw->diags, e->loc, "in this call of block '%s'", blk->name);
  }
  lw->nactive--;
  return r;
}

static FeVal unknown_callee(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  const char *name = e->lhs->name;
  if (ast_find_def(lw->file, AST_MODEL, name))
    return fail(lw, e->loc, "'%s' is a model; only layers and blocks can be called", name);
  if (lookup(fr, name))
    return fail(lw, e->loc, "'%s' is a value, not a layer or block", name);
  Near nr = {name, NULL, 99};
  for (int i = 0; i < fe_nlayers; i++)
    consider(&nr, fe_layers[i].name);
  for (int i = 0; i < lw->file->nblocks; i++)
    consider(&nr, lw->file->blocks[i]->name);
  return fail(lw, e->loc, "unknown layer '%s'%s", name, suggestion(lw, &nr));
}

/* A call: a user block (which may shadow a layer of the library), else a
 * layer. hint names it when it is the whole right side of its statement. */
static FeVal eval_call(Frame *fr, const Ast *e, const char *hint) {
  Lower *lw = fr->lw;
  if (e->lhs->kind != AST_NAME)
    return fail(lw, e->loc, "only layers and blocks can be called");
  if (!step(lw, e->loc))
    return v_error();
  const Ast *blk = ast_find_def(lw->file, AST_BLOCK, e->lhs->name);
  if (blk)
    return call_block(fr, blk, e, hint);
  const FeLayer *l = fe_find_layer(e->lhs->name);
  if (l)
    return call_layer(fr, l, e, hint);
  return unknown_callee(fr, e);
}

/* An int bound of an index; *given false when the AST is NULL. */
static bool index_int(Frame *fr, const Ast *e, int64_t *out, bool *given) {
  *given = e != NULL;
  if (!e)
    return true;
  FeVal v = eval(fr, e, NULL);
  if (v.kind == FE_ERROR)
    return false;
  if (!const_int(&v, out)) {
    fail(fr->lw, e->loc, "an index must be an int known at compile time, got %s",
         describe(fr->lw, &v));
    return false;
  }
  return true;
}

/* One item of x[...] on axis ax of length len (-1: symbolic), as Python
 * and PyTorch read it: an int picks one element (negative from the end,
 * out of range is an error) and drops the axis; lo:hi:step clamps its
 * bounds, step positive. */
static bool index_item(Frame *fr, const Ast *it, int64_t len, int64_t *start, int64_t *n,
                       int64_t *step, bool *drop) {
  Lower *lw = fr->lw;
  bool has_lo, has_hi, has_step;
  int64_t lo = 0, hi = len, st = 1;
  *drop = it->kind != AST_SLICE;
  if (*drop) {
    if (!index_int(fr, it, &lo, &has_lo))
      return false;
    if (len < 0 || lo < -len || lo >= len) {
      fail(lw, it->loc, len < 0 ? "index %lld of an axis whose size is known only at run time"
                                : "index %lld is out of range for an axis of size %lld",
           (long long)lo, (long long)len);
      return false;
    }
    *start = lo < 0 ? lo + len : lo;
    *n = *step = 1;
    return true;
  }
  if (!index_int(fr, it->lo, &lo, &has_lo) || !index_int(fr, it->hi, &hi, &has_hi) ||
      !index_int(fr, it->step, &st, &has_step))
    return false;
  if (st < 1) {
    fail(lw, it->loc, "a slice step must be positive (as in PyTorch), got %lld", (long long)st);
    return false;
  }
  if (len < 0) {
    if (has_lo || has_hi || st != 1)
      fail(lw, it->loc, "an axis whose size is known only at run time can only be taken whole (:)");
    *start = 0, *n = -1, *step = 1;
    return !(has_lo || has_hi || st != 1);
  }
  lo = lo < 0 ? lo + len : lo;
  hi = hi < 0 ? hi + len : hi;
  lo = lo < 0 ? 0 : lo > len ? len : lo;
  hi = hi < lo ? lo : hi > len ? len : hi;
  *n = (hi - lo + st - 1) / st;
  *start = *n ? lo : 0;
  *step = st;
  return true;
}

/* x[i, lo:hi:step, ...]: a slice of x, then the int-indexed axes dropped;
 * axes not indexed are taken whole. (eval_index: x[:, t] in a scan and
 * zeros[...] first.) */
static FeVal index_slices(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  FeVal x = eval(fr, e->lhs, NULL);
  if (x.kind == FE_ERROR)
    return x;
  if (x.kind != FE_TENSOR)
    return fail(lw, e->loc, "only tensors can be indexed, got %s", describe(lw, &x));
  const Type *t = &x.t->type;
  if (e->nitems > t->rank)
    return fail(lw, e->loc, "%d indices for %s, which has %d axes", e->nitems, type_str(lw, t),
                t->rank);
  Attr a = ir_attr();
  a.rank = t->rank;
  Size keep[IR_MAX_RANK];
  int nkeep = 0;
  for (int i = 0; i < t->rank; i++) {
    int64_t len = -1, n = 0;
    bool drop = false;
    sz_is_const(t->dim[i], &len);
    a.shape[i] = t->dim[i];
    if (i < e->nitems &&
        !index_item(fr, e->items[i], len, &a.start[i], &n, &a.step[i], &drop))
      return v_error();
    if (i < e->nitems && n >= 0)
      a.shape[i] = sz_const(n);
    if (!drop)
      keep[nkeep++] = a.shape[i];
  }
  Value *y = ir_op(lw->g, OP_slice, &x.t, 1, &a, e->loc);
  if (nkeep < t->rank) {
    Attr r = ir_attr();
    r.rank = nkeep;
    memcpy(r.shape, keep, sizeof keep);
    y = ir_op(lw->g, OP_reshape, &y, 1, &r, e->loc);
  }
  return v_tensor(y, e->loc);
}

static FeVal eval_node(Frame *fr, const Ast *e, const char *hint) {
  Lower *lw = fr->lw;
  switch (e->kind) {
  case AST_INT: return v_int(sz_const(e->ival), e->loc);
  case AST_FLOAT: return (FeVal){.kind = FE_FLOAT, .f = e->fval, .loc = e->loc};
  case AST_STRING: return v_str(e->str, e->loc);
  case AST_BOOL: return (FeVal){.kind = FE_BOOL, .b = e->ival != 0, .loc = e->loc};
  case AST_NAME: return eval_name(fr, e);
  case AST_LIST: return eval_list(fr, e);
  case AST_UNARY: return eval_unary(fr, e);
  case AST_BINARY: return eval_binary(fr, e);
  case AST_CALL: return eval_call(fr, e, hint);
  case AST_FIELD: return eval_field(fr, e);
  case AST_INDEX: return eval_index(fr, e);
  case AST_SCAN: return eval_scan(fr, e);
  case AST_ERROR: return v_error();
  default: return fail(lw, e->loc, "a %s is not an expression", ast_kind_name(e->kind));
  }
}

static FeVal eval(Frame *fr, const Ast *e, const char *hint) {
  Lower *lw = fr->lw;
  if (lw->depth >= MAX_EVAL_DEPTH)
    return fail(lw, e->loc, "expressions and block calls nest too deeply");
  lw->depth++;
  FeVal v = eval_node(fr, e, hint);
  lw->depth--;
  return v;
}

/* ---- statements --------------------------------------------------------- */

static void bind_targets(Frame *fr, const Ast *s, FeVal v) {
  Lower *lw = fr->lw;
  int n = s->nitems;
  int got = v.kind == FE_TUPLE ? v.nitems : 1;
  if (v.kind != FE_ERROR && got != n) {
    if (n == 1)
      fail(lw, s->loc, "the right side gives %d values: bind each, as in a, b = ...", got);
    else
      fail(lw, s->loc, "%d names are bound but the right side gives %d value%s", n, got,
           got == 1 ? "" : "s");
    v = v_error();
  }
  for (int i = 0; i < n; i++)
    bind(fr, s->items[i]->name, n > 1 && v.kind == FE_TUPLE ? v.items[i] : v);
}

/* name = expr (as "scope")?: `as`, else the name when bound once, names
 * the call that is the whole right side. */
static void lower_bind(Frame *fr, const Ast *s) {
  const char *hint = NULL;
  if (s->scope) {
    hint = s->scope->str;
    if (s->init->kind != AST_CALL)
      fail(fr->lw, s->scope->loc, "'as' names a layer or block call; the right side is not one");
    else if (!*hint)
      fail(fr->lw, s->scope->loc, "'as' needs a non-empty name");
  } else if (s->nitems == 1 && bound_once(fr->scope, s->items[0]->name)) {
    hint = s->items[0]->name;
  }
  bind_targets(fr, s, eval(fr, s->init, hint && *hint ? hint : NULL));
}

/* param name: type = init, named by the scope path. */
static void lower_param(Frame *fr, const Ast *s) {
  Lower *lw = fr->lw;
  Type t;
  FeVal init = {.kind = FE_INIT, .init = {.kind = INIT_ZEROS}};
  bool ok = eval_type(fr, s->type, &t);
  if (s->init)
    init = init_spec(fr, s->init);
  if (!ok || init.kind != FE_INIT) {
    bind(fr, s->name, v_error());
    return;
  }
  const char *name = rt_arena_printf(lw->arena, "%s%s", fr->scope->path, s->name);
  bool quiet = false;
  Value *v = new_param(lw, name, t, init.init, V_PARAM, s->loc, &quiet);
  bind(fr, s->name, v_tensor(v, s->loc));
}

static bool loop_bound(Frame *fr, const Ast *e, int64_t *out) {
  FeVal v = eval(fr, e, NULL);
  if (v.kind == FE_ERROR)
    return false;
  if (!const_int(&v, out)) {
    fail(fr->lw, e->loc, "a loop bound must be an int known at compile time, got %s",
         describe(fr->lw, &v));
    return false;
  }
  return true;
}

/* for i in lo..hi { body }: unrolled, each iteration a naming scope "i.". */
static void lower_for(Frame *fr, const Ast *s) {
  Lower *lw = fr->lw;
  int64_t lo, hi;
  bool ok = loop_bound(fr, s->lo, &lo);
  if (!(loop_bound(fr, s->hi, &hi) && ok))      /* both reported */
    return;
  if (hi - lo > MAX_TRIPS) {
    fail(lw, s->loc, "the loop runs %lld times; at most %d are unrolled", (long long)(hi - lo),
         MAX_TRIPS);
    return;
  }
  Scope *outer = fr->scope;
  for (int64_t i = lo; i < hi && !lw->too_big; i++) {
    Scope sc = {.path = rt_arena_printf(lw->arena, "%s%lld.", outer->path, (long long)i),
                .body = s->body, .nbody = s->nbody};
    fr->scope = &sc;
    bind(fr, s->name, v_int(sz_const(i), s->loc));
    lower_body(fr, s->body, s->nbody);
  }
  fr->scope = outer;
}

static bool same_diag(const Diag *a, const Diag *b) {
  return a->kind == b->kind && a->loc.file == b->loc.file && a->loc.line == b->loc.line &&
         a->loc.col == b->loc.col && !strcmp(a->msg, b->msg);
}

static bool repeats(const Diags *d, const Diag *g) {
  for (const Diag *h = d->head; h != g; h = h->next)
    if (same_diag(h, g))
      return true;
  return false;
}

/* Removes the diagnostics after mark that repeat an earlier one (a block
 * called many times, a loop body), and the notes that followed them, so
 * a mistake is reported once and repeats do not use up the error cap. */
static void drop_repeats(Diags *d, Diag *mark) {
  Diag *prev = mark, *g = mark ? mark->next : d->head;
  bool dropped = false;
  while (g) {
    Diag *next = g->next;
    bool drop = g->kind == DIAG_NOTE ? dropped : repeats(d, g);
    if (g->kind != DIAG_NOTE)
      dropped = drop;
    if (!drop) {
      prev = g;
    } else {
      *(prev ? &prev->next : &d->head) = next;
      d->tail = d->tail == g ? prev : d->tail;
      d->nerrors -= g->kind == DIAG_ERROR;
    }
    g = next;
  }
}

static void lower_stmt(Frame *fr, const Ast *s) {
  Lower *lw = fr->lw;
  Diag *mark = lw->diags.tail;
  if (!step(lw, s->loc))
    return;
  switch (s->kind) {
  case AST_BIND: lower_bind(fr, s); break;
  case AST_PARAM: lower_param(fr, s); break;
  case AST_FOR: lower_for(fr, s); break;
  case AST_EMIT: lower_emit(fr, s); break;
  case AST_ERROR: break;
  default: fail(lw, s->loc, "a %s is not a statement of a model", ast_kind_name(s->kind));
  }
  if (lw->diags.tail != mark)
    drop_repeats(&lw->diags, mark);
}

static void lower_body(Frame *fr, Ast **body, int n) {
  for (int i = 0; i < n; i++)
    lower_stmt(fr, body[i]);
}

/* ---- scan ------------------------------------------------------------------ */

/* A scan body is lowered into a graph of its own (ir/scan.c) by the same
 * interpreter, with lw->g switched to it. Values from outside reach it as
 * body inputs: a name bound outside becomes an invariant input when the
 * body reads it (capture), a parameter a layer makes inside the body is
 * made in the model's graph and captured, and x[:, t] on a sequence from
 * outside becomes a scanned input. Carried names are body inputs too;
 * rebinding one defines the next step's carry, and `emit` the step's
 * outputs. The body's inputs are put in the scan's order at the end. */
#define SCAN_MAX 64
typedef struct ScanCtx {
  struct ScanCtx *up;
  Graph *outer;               /* the graph that holds the scan */
  Graph *body;
  const char *index;          /* the scan variable */
  int axis;                   /* the scanned axis, -1 until x[.., t] is seen */
  SrcLoc axis_at;
  Value *seq_out[SCAN_MAX], *seq_in[SCAN_MAX];
  int nseq;
  Value *cap_out[SCAN_MAX], *cap_in[SCAN_MAX];
  int ncap;
  FeVal emits;                /* the last emit statement's values (FE_LIST), or kind 0 */
  bool overflow;
} ScanCtx;

static bool in_graph(const Graph *g, const Value *v) {
  return v->id < g->nvals && g->vals[v->id] == v;
}

static Value *capture(Lower *lw, Value *v) {
  ScanCtx *sc = lw->scan;
  if (!sc || !v || in_graph(lw->g, v))
    return v;
  if (!in_graph(sc->outer, v))
    return v;                         /* a scan inside a scan body: not lowered */
  for (int i = 0; i < sc->ncap; i++)
    if (sc->cap_out[i] == v)
      return sc->cap_in[i];
  if (sc->ncap == SCAN_MAX) {
    sc->overflow = true;
    return v;
  }
  sc->cap_out[sc->ncap] = v;
  return sc->cap_in[sc->ncap++] = ir_input(sc->body, v->name, v->type, v->loc);
}

static bool full_slice(const Ast *e) {
  return e->kind == AST_SLICE && !e->lo && !e->hi && !e->step;
}

/* zeros[N, hidden] and ones[...]: a constant f32 tensor of that shape. */
static FeVal filled(Frame *fr, const Ast *e, double x) {
  Lower *lw = fr->lw;
  Attr a = ir_attr();
  if (e->nitems > IR_MAX_RANK)
    return fail(lw, e->loc, "%s[...] takes at most %d sizes", e->lhs->name, IR_MAX_RANK);
  a.rank = e->nitems;
  for (int i = 0; i < e->nitems; i++) {
    FeVal d = eval(fr, e->items[i], NULL);
    if (d.kind == FE_ERROR)
      return d;
    if (d.kind != FE_INT)
      return fail(lw, d.loc, "%s[...] takes sizes, got %s", e->lhs->name, describe(lw, &d));
    a.shape[i] = d.i;
  }
  Value *k = ir_scalar(lw->g, RT_F32, x);
  return v_tensor(ir_op(lw->g, OP_expand, &k, 1, &a, e->loc), e->loc);
}

/* Where the scan variable indexes, with full slices elsewhere: x[:, t]. */
static int step_axis(const ScanCtx *sc, const Ast *e) {
  int at = -1;
  for (int i = 0; i < e->nitems; i++) {
    const Ast *it = e->items[i];
    if (it->kind == AST_NAME && !strcmp(it->name, sc->index) && at < 0)
      at = i;
    else if (!full_slice(it))
      return -1;
  }
  return at;
}

/* x[:, t] in a scan body: step t of the sequence x, a scanned input. */
static FeVal scan_step(Frame *fr, const Ast *e, int axis) {
  Lower *lw = fr->lw;
  ScanCtx *sc = lw->scan;
  FeVal *x = e->lhs->kind == AST_NAME ? lookup(fr, e->lhs->name) : NULL;
  if (!x || x->kind != FE_TENSOR || !in_graph(sc->outer, x->t))
    return fail(lw, e->loc, "x[.., %s] steps through a tensor bound outside the scan", sc->index);
  if (sc->axis >= 0 && sc->axis != axis)
    return fail(lw, e->loc, "the scan steps along axis %d here and along axis %d at %d:%d; a scan "
                "has one sequence axis", axis, sc->axis, sc->axis_at.line, sc->axis_at.col);
  if (axis >= x->t->type.rank)
    return fail(lw, e->loc, "%s is %s: it has no axis %d to step along", e->lhs->name,
                type_str(lw, &x->t->type), axis);
  sc->axis = axis;
  sc->axis_at = e->loc;
  for (int i = 0; i < sc->nseq; i++)
    if (sc->seq_out[i] == x->t)
      return v_tensor(sc->seq_in[i], e->loc);
  if (sc->nseq == SCAN_MAX)
    return fail(lw, e->loc, "a scan steps through at most %d sequences", SCAN_MAX);
  Type t = x->t->type;
  t.rank--;
  for (int i = axis; i < t.rank; i++)
    t.dim[i] = x->t->type.dim[i + 1];
  sc->seq_out[sc->nseq] = x->t;
  return v_tensor(sc->seq_in[sc->nseq++] = ir_input(sc->body, e->lhs->name, t, e->loc), e->loc);
}

static FeVal eval_index(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  if (e->lhs->kind == AST_NAME && !lookup(fr, e->lhs->name) &&
      (!strcmp(e->lhs->name, "zeros") || !strcmp(e->lhs->name, "ones")))
    return filled(fr, e, e->lhs->name[0] == 'o');
  int axis = lw->scan ? step_axis(lw->scan, e) : -1;
  if (axis >= 0)
    return scan_step(fr, e, axis);
  return index_slices(fr, e);
}

static void lower_emit(Frame *fr, const Ast *s) {
  Lower *lw = fr->lw;
  if (!lw->scan) {
    fail(lw, s->loc, "'emit' outside of a scan body");
    return;
  }
  FeVal v = {.kind = FE_LIST, .loc = s->loc, .nitems = s->nitems};
  v.items = rt_arena_alloc(lw->arena, (size_t)(s->nitems + 1) * sizeof *v.items);
  for (int i = 0; i < s->nitems; i++) {
    v.items[i] = eval(fr, s->items[i], NULL);
    if (v.items[i].kind != FE_TENSOR && v.items[i].kind != FE_ERROR)
      fail(lw, v.items[i].loc, "emit takes tensors, got %s", describe(lw, &v.items[i]));
  }
  lw->scan->emits = v;
}

/* The outer frame's bindings, copied: rebinding in the body stays there. */
static Binding *copy_vars(Lower *lw, const Binding *b) {
  if (!b)
    return NULL;
  Binding *c = rt_arena_alloc(lw->arena, sizeof *c);
  *c = *b;
  c->next = copy_vars(lw, b->next);
  return c;
}

static bool scan_range(Frame *fr, const Ast *e, Size *steps) {
  Lower *lw = fr->lw;
  FeVal lo = eval(fr, e->lo, NULL), hi = eval(fr, e->hi, NULL);
  int64_t l;
  if (lo.kind == FE_ERROR || hi.kind == FE_ERROR)
    return false;
  if (!const_int(&lo, &l) || l != 0) {
    fail(lw, e->lo->loc, "a scan runs over 0..T; its start must be 0, got %s", describe(lw, &lo));
    return false;
  }
  if (hi.kind != FE_INT) {
    fail(lw, e->hi->loc, "a scan's length must be a size, got %s", describe(lw, &hi));
    return false;
  }
  *steps = hi.i;
  return true;
}

/* The body's inputs in the scan's order: sequences, carries, invariants. */
static void order_inputs(ScanCtx *sc, Value **carries, int nc) {
  Graph *b = sc->body;
  int k = 0;
  for (int i = 0; i < sc->nseq; i++)
    b->inputs[k++] = sc->seq_in[i];
  for (int i = 0; i < nc; i++)
    b->inputs[k++] = carries[i];
  for (int i = 0; i < sc->ncap; i++)
    b->inputs[k++] = sc->cap_in[i];
}

/* The carries' last values, then the emitted ones, as the body's outputs. */
static bool body_outputs(Frame *bf, const Ast *e, ScanCtx *sc) {
  Lower *lw = bf->lw;
  bool ok = true;
  for (int i = 0; i < e->nitems; i++) {
    FeVal *v = lookup(bf, e->items[i]->name);
    ok &= v && v->kind == FE_TENSOR;
    if (ok)
      ir_output(sc->body, capture(lw, v->t), e->items[i]->name);
  }
  if (sc->emits.kind != FE_LIST) {
    fail(lw, e->loc, "the scan body emits nothing: end it with emit h (the values to stack)");
    return false;
  }
  for (int i = 0; i < sc->emits.nitems; i++) {
    ok &= sc->emits.items[i].kind == FE_TENSOR;
    if (ok)
      ir_output(sc->body, capture(lw, sc->emits.items[i].t), NULL);
  }
  return ok;
}

/* A scan's options: reverse=true runs t from T-1 down to 0; mask=m [N, T]
 * (1 within a sequence, 0 past its end) runs sequences of different
 * lengths in one batch, as the recurrent layers' mask= does. */
typedef struct ScanOpts {
  bool reverse;
  Value *mask;
  SrcLoc mask_at;
} ScanOpts;

static bool scan_options(Frame *fr, const Ast *e, ScanOpts *o) {
  Lower *lw = fr->lw;
  bool ok = true;
  for (int i = 0; i < e->nins; i++) {
    const Ast *a = e->ins[i];
    FeVal v = eval(fr, a->lhs, NULL);
    if (v.kind == FE_ERROR)
      ok = false;
    else if (!strcmp(a->name, "reverse") && v.kind == FE_BOOL)
      o->reverse = v.b;
    else if (!strcmp(a->name, "mask") && v.kind == FE_TENSOR)
      o->mask = v.t, o->mask_at = v.loc;
    else {
      fail(lw, a->loc, "a scan takes reverse=true or false and mask=a [N, T] tensor; got %s=%s",
           a->name, describe(lw, &v));
      ok = false;
    }
  }
  return ok;
}

/* mask= becomes one more scanned input, stepped like x[:, t] (its step is
 * [N]) in the carries' dtype; ir_scan_mask then rewrites the body's
 * outputs to keep the carries and zero the emits where it is 0. */
static Value *scan_mask_input(Lower *lw, ScanCtx *sc, const ScanOpts *o, Size steps, RtDType dt) {
  Value *m = o->mask;
  int axis = sc->axis < 0 ? 1 : sc->axis;
  if (m->type.rank != 2 || axis > 1 || !sz_eq(m->type.dim[axis], steps)) {
    fail(lw, o->mask_at, "mask= is %s; this scan steps along axis %d of its sequences, so its mask "
         "is [N, T] (or [T, N] along axis 0) with T the scan's length", type_str(lw, &m->type), axis);
    return NULL;
  }
  if (sc->nseq == SCAN_MAX) {
    fail(lw, o->mask_at, "a scan steps through at most %d sequences", SCAN_MAX);
    return NULL;
  }
  if (m->type.dt != dt) {
    Attr a = ir_attr();
    a.dtype = dt;
    m = ir_op(sc->outer, OP_cast, &m, 1, &a, o->mask_at);
  }
  sc->axis = axis;
  sc->seq_out[sc->nseq] = m;
  return sc->seq_in[sc->nseq++] = ir_input(sc->body, "mask", ir_type(dt, 1, &m->type.dim[1 - axis]),
                                           o->mask_at);
}

static FeVal scan_result(Lower *lw, const Ast *e, ScanCtx *sc, Value **init, Size steps,
                         bool reverse) {
  int nc = e->nitems, n = 0;
  Value *in[3 * SCAN_MAX];
  for (int i = 0; i < sc->nseq; i++)
    in[n++] = sc->seq_out[i];
  for (int i = 0; i < nc; i++)
    in[n++] = init[i];
  for (int i = 0; i < sc->ncap; i++)
    in[n++] = sc->cap_out[i];
  Node *s = ir_scan(lw->g, sc->body, in, sc->nseq, nc, sc->ncap, sc->axis < 0 ? 1 : sc->axis,
                    reverse, steps, e->loc);
  int ne = s->nout - nc;
  if (ne == 1)
    return v_tensor(s->out[nc], e->loc);
  FeVal r = {.kind = FE_TUPLE, .loc = e->loc, .nitems = ne};
  r.items = rt_arena_alloc(lw->arena, (size_t)ne * sizeof *r.items);
  for (int i = 0; i < ne; i++)
    r.items[i] = v_tensor(s->out[nc + i], e->loc);
  return r;
}

/* scan t in 0..T [reverse=b] [mask=m] carry (h = init, ...) { body; emit ... } */
static FeVal eval_scan(Frame *fr, const Ast *e) {
  Lower *lw = fr->lw;
  Size steps;
  Value *init[SCAN_MAX], *carry[SCAN_MAX], *mask = NULL;
  ScanOpts opts = {0};
  if (e->nitems > SCAN_MAX)
    return fail(lw, e->loc, "a scan carries at most %d values", SCAN_MAX);
  bool ok = scan_range(fr, e, &steps);
  ok &= scan_options(fr, e, &opts);
  for (int i = 0; i < e->nitems; i++) {
    FeVal v = eval(fr, e->items[i]->lhs, NULL);
    if (v.kind != FE_TENSOR && v.kind != FE_ERROR)
      fail(lw, v.loc, "a carried value starts as a tensor, got %s", describe(lw, &v));
    ok &= v.kind == FE_TENSOR;
    init[i] = v.t;
  }
  if (!ok)
    return v_error();
  int errors = lw->diags.nerrors;
  ScanCtx sc = {.up = lw->scan, .outer = lw->g, .body = ir_body_new(lw->g, "step"),
                .index = e->name, .axis = -1};
  Frame bf = {.lw = lw, .vars = copy_vars(lw, fr->vars), .scope = fr->scope};
  for (int i = 0; i < e->nitems; i++) {
    carry[i] = ir_input(sc.body, e->items[i]->name, init[i]->type, e->items[i]->loc);
    bind(&bf, e->items[i]->name, v_tensor(carry[i], e->items[i]->loc));
  }
  lw->g = sc.body;
  lw->scan = &sc;
  lower_body(&bf, e->body, e->nbody);
  ok = body_outputs(&bf, e, &sc);
  lw->g = sc.outer;
  lw->scan = sc.up;
  if (sc.overflow)
    return fail(lw, e->loc, "a scan body reads at most %d values from outside", SCAN_MAX);
  if (ok && opts.mask)
    ok = (mask = scan_mask_input(lw, &sc, &opts, steps, init[0]->type.dt)) != NULL;
  if (!ok || lw->diags.nerrors > errors)
    return v_error();
  order_inputs(&sc, carry, e->nitems);
  if (mask)
    ir_scan_mask(sc.body, mask, sc.nseq, e->nitems);
  return scan_result(lw, e, &sc, init, steps, opts.reverse);
}

/* ---- the model ------------------------------------------------------------ */

/* A size name of the signature: a constant if the options bind it, else a
 * size variable of the graph. */
static Size signature_size(Lower *lw, const char *name, SrcLoc loc) {
  for (int i = 0; lw->opt && i < lw->opt->nsizes; i++) {
    int64_t v = lw->opt->sizes[i].value;
    if (strcmp(lw->opt->sizes[i].name, name))
      continue;
    if (v >= 0 && v <= FE_MAX_SIZE)
      return sz_const(v);
    fail(lw, loc, "size %s is bound to %lld, not a valid size (0 to 2^31 - 1)", name,
         (long long)v);
  }
  return sz_var(ir_size_var(lw->g, name));
}

static void declare_sizes(Frame *fr, const Ast *e) {
  if (e->kind == AST_NAME && !lookup(fr, e->name))
    bind(fr, e->name, v_int(signature_size(fr->lw, e->name, e->loc), e->loc));
  if (e->kind == AST_BINARY || e->kind == AST_UNARY) {
    declare_sizes(fr, e->lhs);
    if (e->rhs)
      declare_sizes(fr, e->rhs);
  }
}

static void lower_input(Frame *fr, const Ast *in) {
  Lower *lw = fr->lw;
  Type t;
  if (in->init)
    fail(lw, in->init->loc, "a model input has no default value");
  if (in->type->kind == AST_TYPE && in->type->tkind != ATY_TENSOR) {
    fail(lw, in->loc, "model inputs are tensors, such as f32[N, 10]; '%s' is not", in->name);
  } else if (in->type->kind == AST_TYPE) {
    for (int i = 0; i < in->type->nitems; i++)
      declare_sizes(fr, in->type->items[i]);
    if (eval_type(fr, in->type, &t)) {
      bind(fr, in->name, v_tensor(ir_input(lw->g, in->name, t, in->loc), in->loc));
      return;
    }
  }
  bind(fr, in->name, v_error());
}

static void lower_output(Frame *fr, const Ast *model, const Ast *out) {
  Lower *lw = fr->lw;
  FeVal *v = lookup(fr, out->name);
  Type want;
  if (!v) {
    fail(lw, out->loc, "output '%s' is never bound in the body of model '%s'", out->name,
         model->name);
    return;
  }
  if (v->kind == FE_ERROR)
    return;
  if (v->kind != FE_TENSOR) {
    fail(lw, out->loc, "output '%s' must be a tensor, got %s", out->name, describe(lw, v));
    return;
  }
  if (out->type && ir_type_known(&v->t->type) &&
      type_matches(fr, out->type, &v->t->type, &want) == 0)
    fail(lw, out->loc, "output '%s' is declared %s but is %s", out->name,
         declared_str(lw, out->type, &want), type_str(lw, &v->t->type));
  ir_output(lw->g, v->t, out->name);
}

/* He for a weight whose layer feeds a relu (through a batchnorm at most),
 * once the whole graph shows who consumes what. */
static void resolve_inits(Lower *lw) {
  Graph *g = lw->g;
  int *nuse = rt_arena_alloc(lw->arena, (size_t)(g->nvals + 1) * sizeof *nuse);
  Node **user = rt_arena_alloc(lw->arena, (size_t)(g->nvals + 1) * sizeof *user);
  if (!nuse || !user)
    return;
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++) {
      nuse[g->nodes[i]->in[j]->id]++;
      user[g->nodes[i]->in[j]->id] = g->nodes[i];
    }
  for (Pending *p = lw->pending; p; p = p->next) {
    Value *v = p->out;
    while (nuse[v->id] == 1 && !v->is_output && user[v->id]->op == OP_batchnorm &&
           user[v->id]->in[0] == v)
      v = user[v->id]->out[0];
    if (nuse[v->id] == 1 && !v->is_output && user[v->id]->op == OP_relu) {
      p->w->init.kind = INIT_HE_NORMAL;
      p->w->init.a = M_SQRT2;
    }
  }
}

/* Copies the diagnostics into d; those beyond the cap were counted only. */
static void merge_diags(Diags *d, const Diags *from) {
  int recorded = 0;
  for (const Diag *g = from->head; g; g = g->next) {
    recorded += g->kind == DIAG_ERROR;
    diag_add(d, g->kind, g->loc, "%s", g->msg);
  }
  d->nerrors += from->nerrors - recorded;
}

static const Ast *find_model(const AstFile *f, const FeOptions *o, Diags *d) {
  if (o && o->model) {
    const Ast *m = ast_find_def(f, AST_MODEL, o->model);
    if (!m)
      diag_error(d, srcloc_none(), "%s: no model named '%s'", f->src.name, o->model);
    return m;
  }
  if (!f->nmodels)
    diag_error(d, srcloc_none(), "%s: the file defines no model", f->src.name);
  return f->nmodels ? f->models[0] : NULL;
}

static void lower_model(Lower *lw, const Ast *m) {
  Scope sc = {.path = "", .body = m->body, .nbody = m->nbody};
  Frame fr = {.lw = lw, .scope = &sc};
  for (int i = 0; i < m->nins; i++)
    lower_input(&fr, m->ins[i]);
  lower_body(&fr, m->body, m->nbody);
  for (int i = 0; i < m->nouts; i++)
    lower_output(&fr, m, m->outs[i]);
  resolve_inits(lw);
}

const Ast *fe_lower_into(Graph *g, const AstFile *f, const FeOptions *o, const FeMode *mode,
                         Diags *d) {
  const Ast *m = find_model(f, o, d);
  if (!m)
    return NULL;
  Lower *lw = calloc(1, sizeof *lw);
  RtArena *arena = rt_arena_new();
  if (!lw || !arena) {
    free(lw);
    rt_arena_free(arena);
    diag_error(d, srcloc_none(), "out of memory");
    return NULL;
  }
  *lw = (Lower){.file = f, .opt = o, .g = g, .arena = arena, .mode = mode, .root = g};
  diag_init(&lw->diags, arena);
  g->diags = &lw->diags;
  lower_model(lw, m);
  g->diags = d;
  merge_diags(d, &lw->diags);
  rt_arena_free(arena);
  free(lw);
  return m;
}

Graph *fe_lower(const AstFile *f, const FeOptions *o, Diags *d) {
  const Ast *m = find_model(f, o, d);
  Graph *g = m ? ir_graph_new(m->name, d) : NULL;
  if (m && !g)
    diag_error(d, srcloc_none(), "out of memory");
  if (g && !fe_lower_into(g, f, o, NULL, d)) {
    ir_graph_free(g);
    return NULL;
  }
  return g;
}

/* -O0 against -O3 on random models: the quality bar of every pass
 * (DESIGN.md). A generator builds a model from a seed, the same model
 * twice; one copy compiles at -O0 (memory planning only, or autodiff and
 * the optimizer), the other at -O3 (simplify, fold-bn and whatever joins
 * them), both through the JIT with the same weights and inputs, and every
 * output must agree within 1e-4 (DESIGN.md's per-tensor measure).
 *
 * The models: dense stacks (rank 2 and 3) and conv stacks with odd
 * extents, strides, groups and pooling, mixed with batchnorm, biases,
 * activations, broadcasts against constants and parameters, residual adds,
 * reshapes and transposes that cancel or feed matmul, identities (x*1,
 * x+0, neg(neg(x))), duplicated subexpressions, constant subgraphs that
 * fold, and dead branches. Every fifth model is a training step (loss,
 * gradients, an SGD update) whose loss, gradients and updated parameters
 * must agree too; those avoid kinks (relu, abs, max pooling), where a
 * rounding difference may flip a gradient. The generator's conv stacks are
 * too small for the layout pass's cost model to block them, so every
 * third model and every other training step compile with the blocked
 * layout forced (LAYOUT_BLOCKED: in a training step, the forward
 * convolutions and both gradients), and every sixth inference model, from
 * the second, with NHWC (LAYOUT_NHWC: convolutions read values
 * entering a region as NHWC); the totals count the models that got
 * blocked, the training steps among them, and those with an NHWC input.
 *
 * A failure names its seed; KILN_DIFF_SEED=<seed> runs that model alone
 * and prints its graph at both levels; KILN_DIFF_OPT=<level> compares -O0
 * against that level instead, to narrow a failure down to a pass.
 * KILN_DIFF_COUNT=<n> runs n models. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "opt_harness.h"

#define DEFAULT_COUNT 200
#define EPS 1e-4

/* ---- the generator ----------------------------------------------------------- */

typedef struct Gen {
  Graph *g;
  uint64_t s;              /* splitmix64 state */
  int nparam;              /* names made so far */
  int N;                   /* the batch size variable */
  bool smooth;             /* training: no kinks */
  Value *pool[16];         /* earlier values, for residual adds */
  int npool;
} Gen;

static uint64_t next(Gen *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static int pick(Gen *r, int n) { return (int)(next(r) % (uint64_t)n); }
static double unif(Gen *r, double lo, double hi) { return lo + (hi - lo) * (next(r) >> 11) * 0x1p-53; }
static bool coin(Gen *r, int percent) { return pick(r, 100) < percent; }

static int64_t dim(const Value *v, int i) {
  int64_t d = -1;
  sz_is_const(v->type.dim[i], &d);
  return d;                /* -1: the batch */
}

static Value *param(Gen *r, const char *what, Type t) {
  char name[64];
  snprintf(name, sizeof name, "p%d.%s", r->nparam++, what);
  return ir_param(r->g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
}

static Value *state(Gen *r, const char *what, Type t) {
  char name[64];
  snprintf(name, sizeof name, "p%d.%s", r->nparam++, what);
  return ir_state(r->g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
}

/* A constant of shape dims, uniform in [lo, hi) with either sign when mixed. */
static Value *constant(Gen *r, int rank, const int64_t *dims, double lo, double hi, bool mixed) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= dims[i];
  float *d = malloc(sizeof(float) * (n ? n : 1));
  for (int64_t i = 0; i < n; i++)
    d[i] = (float)(unif(r, lo, hi) * (mixed && coin(r, 50) ? -1 : 1));
  Value *c = ir_const(r->g, ir_type_const(RT_F32, rank, dims), d);
  free(d);
  return c;
}

static Value *op1(Gen *r, Op op, Value *a) { return ir_op1(r->g, op, a, NOLOC); }
static Value *op2(Gen *r, Op op, Value *a, Value *b) {
  return coin(r, 20) && (op == OP_add || op == OP_mul || op == OP_maximum)
             ? ir_op2(r->g, op, b, a, NOLOC)          /* commutative: either side */
             : ir_op2(r->g, op, a, b, NOLOC);
}

static Value *with_attr(Gen *r, Op op, Value *x, Attr a) { return ir_op(r->g, op, &x, 1, &a, NOLOC); }

static Value *transpose(Gen *r, Value *x, const int *perm) {
  Attr a = ir_attr();
  memcpy(a.perm, perm, sizeof(int) * x->type.rank);
  return with_attr(r, OP_transpose, x, a);
}

/* x reshaped to dims, where -1 stands for the batch. */
static Value *reshape(Gen *r, Value *x, int rank, const int64_t *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  for (int i = 0; i < rank; i++)
    a.shape[i] = dims[i] < 0 ? sz_var(r->N) : sz_const(dims[i]);
  return with_attr(r, OP_reshape, x, a);
}

static Value *reduce(Gen *r, Op op, Value *x, uint32_t axes, bool keepdim) {
  Attr a = ir_attr();
  a.axes = axes;
  a.keepdim = keepdim;
  return with_attr(r, op, x, a);
}

static Value *batchnorm(Gen *r, Value *x, int axis) {
  int64_t c = dim(x, axis);
  Type t = ir_type_const(RT_F32, 1, &c);
  Value *in[5] = {x, param(r, "weight", t), param(r, "bias", t), state(r, "running_mean", t),
                  state(r, "running_var", t)};
  Attr a = ir_attr();
  a.axis = coin(r, 30) ? axis - x->type.rank : axis;
  return ir_op(r->g, OP_batchnorm, in, 5, &a, NOLOC);
}

/* A value of a constant per axis `ax` of x's shape (or a scalar) that
 * broadcasts against x, away from zero so that dividing by it is safe. */
static Value *channel_const(Gen *r, Value *x, int ax) {
  int64_t dims[IR_MAX_RANK];
  int rank = x->type.rank - ax;
  if (coin(r, 25))
    return constant(r, 0, NULL, 0.5, 2, true);
  dims[0] = dim(x, ax);
  for (int i = 1; i < rank; i++)
    dims[i] = 1;
  return constant(r, rank, dims, 0.5, 2, true);
}

static Value *activation(Gen *r, Value *h) {
  static const Op smooth[] = {OP_tanh, OP_sigmoid, OP_neg};
  static const Op any[] = {OP_relu, OP_tanh, OP_sigmoid, OP_neg, OP_abs, OP_relu};
  return r->smooth ? op1(r, smooth[pick(r, 3)], h) : op1(r, any[pick(r, 6)], h);
}

/* Noise simplify should remove: x*1, x+0, x-0, x/1, neg(neg(x)), a
 * reshape to the same shape, two transposes that cancel. */
static Value *identity_noise(Gen *r, Value *h) {
  switch (pick(r, 6)) {
  case 0: return op2(r, OP_mul, h, ir_scalar(r->g, RT_F32, 1));
  case 1: return op2(r, OP_add, h, ir_scalar(r->g, RT_F32, 0));
  case 2: return ir_op2(r->g, OP_div, ir_op2(r->g, OP_sub, h, ir_scalar(r->g, RT_F32, 0), NOLOC),
                        ir_scalar(r->g, RT_F32, 1), NOLOC);
  case 3: return op1(r, OP_neg, op1(r, OP_neg, h));
  case 4: {
    int64_t d[IR_MAX_RANK];
    for (int i = 0; i < h->type.rank; i++)
      d[i] = dim(h, i);
    return reshape(r, h, h->type.rank, d);
  }
  default: {
    int p[IR_MAX_RANK], q[IR_MAX_RANK], n = h->type.rank;
    for (int i = 0; i < n; i++)
      p[i] = i;
    for (int i = n - 1; i > 1; i--) {            /* shuffle all but the batch axis */
      int j = 1 + pick(r, i);
      int t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    for (int i = 0; i < n; i++)
      q[p[i]] = i;
    return transpose(r, transpose(r, h, p), q);
  }
  }
}

/* A constant computed by ops on constants: folds to one constant. */
static Value *folding_const(Gen *r, Value *x, int ax) {
  Value *c = channel_const(r, x, ax);
  switch (pick(r, 3)) {
  case 0: return op1(r, OP_tanh, op2(r, OP_mul, c, constant(r, 0, NULL, 0.5, 1.5, false)));
  case 1: return op2(r, OP_sub, op1(r, OP_exp, op1(r, OP_neg, op1(r, OP_abs, c))), ir_scalar(r->g, RT_F32, 0.5));
  default: {
    Value *t = c->type.rank >= 2 ? transpose(r, c, (int[]){1, 0, 2, 3}) : c;
    return c->type.rank >= 2 ? transpose(r, t, (int[]){1, 0, 2, 3}) : op1(r, OP_sqrt, op1(r, OP_abs, t));
  }
  }
}

/* Broadcast arithmetic with a constant, a parameter or an earlier value. */
static Value *broadcast_op(Gen *r, Value *h, int ax) {
  Value *c = coin(r, 25) ? folding_const(r, h, ax) : channel_const(r, h, ax);
  if (coin(r, 20)) {                             /* a parameter instead: the per-channel shape */
    int64_t d = dim(h, ax);
    Value *p = param(r, "scale", ir_type_const(RT_F32, 1, &d));
    int64_t dims[IR_MAX_RANK] = {d};
    for (int i = 1; i < h->type.rank - ax; i++)
      dims[i] = 1;
    c = h->type.rank - ax > 1 ? reshape(r, p, h->type.rank - ax, dims) : p;
  }
  switch (pick(r, 6)) {
  case 0: return op2(r, OP_add, h, c);
  case 1: return ir_op2(r->g, OP_sub, h, c, NOLOC);
  case 2: return ir_op2(r->g, OP_sub, c, h, NOLOC);
  case 3: return op2(r, OP_mul, h, c);
  case 4: return c->role == V_CONST ? ir_op2(r->g, OP_div, h, c, NOLOC) : op2(r, OP_mul, c, h);
  default: return r->smooth ? op2(r, OP_add, c, h) : op2(r, coin(r, 50) ? OP_maximum : OP_minimum, h, c);
  }
}

/* The same op twice: CSE makes it one. */
static Value *duplicate(Gen *r, Value *h) {
  Op op = r->smooth ? OP_tanh : OP_relu;
  Value *a = op1(r, op, h), *b = op1(r, op, h);
  return op2(r, coin(r, 50) ? OP_add : OP_mul, a, b);
}

/* h - mean(h) over the last axis, or h / (1 + |x| summed): reductions. */
static Value *normalise(Gen *r, Value *h) {
  int last = h->type.rank - 1;
  Value *m = reduce(r, OP_mean, h, 1u << last, true);
  if (r->smooth || coin(r, 50))
    return ir_op2(r->g, OP_sub, h, m, NOLOC);
  Value *s = reduce(r, OP_sum, op1(r, OP_abs, h), 1u << last, true);
  return ir_op2(r->g, OP_div, h, op2(r, OP_add, s, ir_scalar(r->g, RT_F32, 1)), NOLOC);
}

static void remember(Gen *r, Value *h) {
  if (r->npool < 16)
    r->pool[r->npool++] = h;
}

/* An earlier value of h's type, for a residual add, or NULL. */
static Value *residual_of(Gen *r, Value *h) {
  for (int k = 0; k < 4 && r->npool; k++) {
    Value *v = r->pool[pick(r, r->npool)];
    if (v != h && ir_type_eq(&v->type, &h->type))
      return v;
  }
  return NULL;
}

/* Something nobody uses: DCE takes it. */
static void dead_branch(Gen *r, Value *h) {
  Value *d = op1(r, OP_sigmoid, op2(r, OP_mul, h, constant(r, 0, NULL, 1, 2, false)));
  reduce(r, OP_sum, d, 1, false);
}

/* dense on the last axis: weight [out, in] (trans_b), [in, out], or a
 * transpose of either that simplify folds into the flags; maybe a bias. */
static Value *dense(Gen *r, Value *h, int64_t out) {
  int64_t in = dim(h, h->type.rank - 1);
  Attr a = ir_attr();
  Value *w;
  switch (pick(r, 4)) {
  case 0: w = param(r, "weight", TY(RT_F32, out, in)); a.trans_b = true; break;
  case 1: w = param(r, "weight", TY(RT_F32, in, out)); break;
  case 2: w = transpose(r, param(r, "weight", TY(RT_F32, in, out)), (int[]){1, 0}); a.trans_b = true; break;
  default: w = transpose(r, param(r, "weight", TY(RT_F32, out, in)), (int[]){1, 0}); break;
  }
  Value *y = ir_op(r->g, OP_matmul, (Value *[]){h, w}, 2, &a, NOLOC);
  return coin(r, 70) ? op2(r, OP_add, y, param(r, "bias", TY(RT_F32, out))) : y;
}

static int64_t small(Gen *r) { return 1 + pick(r, 12); }

/* A dense stack on [N, F] or [N, T, F]. */
static Value *dense_stack(Gen *r, Value *h) {
  int layers = 1 + pick(r, r->smooth ? 3 : 4);     /* a step is twice the graph: fewer */
  for (int l = 0; l < layers; l++) {
    int last = h->type.rank - 1;
    h = dense(r, h, small(r));
    if (coin(r, 50))
      h = batchnorm(r, h, coin(r, 85) || h->type.rank == 2 ? last : 1);
    if (coin(r, 40))
      h = broadcast_op(r, h, last);
    if (coin(r, 70))
      h = activation(r, h);
    if (coin(r, 25))
      h = identity_noise(r, h);
    if (coin(r, 15))
      h = duplicate(r, h);
    if (coin(r, 15))
      h = normalise(r, h);
    if (coin(r, 10))
      dead_branch(r, h);
    Value *res = coin(r, 30) ? residual_of(r, h) : NULL;
    if (res)
      h = op2(r, OP_add, h, res);
    if (coin(r, 20) && h->type.rank == 2 && dim(h, 1) % 2 == 0) {   /* [N, F] -> [N, 2, F/2] and back */
      int64_t f = dim(h, 1);
      Value *t = reshape(r, h, 3, (int64_t[]){-1, 2, f / 2});
      if (coin(r, 50))
        t = transpose(r, t, (int[]){0, 2, 1});
      h = reshape(r, t, 2, (int64_t[]){-1, f});
    }
    remember(r, h);
  }
  return h;
}

static Value *conv(Gen *r, Value *h) {
  int64_t c = dim(h, 1), H = dim(h, 2), W = dim(h, 3);
  int64_t out = 1 + pick(r, 8);
  Attr a = ir_attr();
  int k = H >= 3 && W >= 3 && coin(r, 70) ? 3 : 1;
  a.k[0] = a.k[1] = k;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = k == 3 && coin(r, 70) ? 1 : 0;
  a.stride[0] = a.stride[1] = H >= 4 && W >= 4 && coin(r, 25) ? 2 : 1;
  if (c % 2 == 0 && coin(r, 30)) {
    a.groups = 2;
    out = 2 * (1 + pick(r, 4));
  }
  Value *w = param(r, "weight", TY(RT_F32, out, c / a.groups, k, k));
  Value *y = ir_op(r->g, OP_conv2d, (Value *[]){h, w}, 2, &a, NOLOC);
  if (coin(r, 50))
    y = op2(r, OP_add, y, reshape(r, param(r, "bias", TY(RT_F32, out)), 3, (int64_t[]){out, 1, 1}));
  return y;
}

static Value *pool(Gen *r, Value *h) {
  Attr a = ir_attr();
  a.k[0] = a.k[1] = a.stride[0] = a.stride[1] = 2;
  return with_attr(r, r->smooth || coin(r, 40) ? OP_avgpool2d : OP_maxpool2d, h, a);
}

/* A conv stack on [N, C, H, W], then a dense head. */
static Value *conv_stack(Gen *r, Value *h) {
  int layers = 1 + pick(r, r->smooth ? 2 : 3);
  for (int l = 0; l < layers; l++) {
    h = conv(r, h);
    if (coin(r, 65))
      h = batchnorm(r, h, 1);
    if (coin(r, 35))
      h = broadcast_op(r, h, 1);
    if (coin(r, 70))
      h = activation(r, h);
    if (coin(r, 20))
      h = identity_noise(r, h);
    if (coin(r, 10))
      h = duplicate(r, h);
    if (coin(r, 10))
      dead_branch(r, h);
    Value *res = coin(r, 30) ? residual_of(r, h) : NULL;
    if (res)
      h = op2(r, OP_add, h, res);
    if (coin(r, 25) && dim(h, 2) >= 2 && dim(h, 3) >= 2)
      h = pool(r, h);
    remember(r, h);
  }
  if (coin(r, 50))
    h = reduce(r, OP_mean, h, 12, false);          /* global average: [N, C] */
  else
    h = reshape(r, h, 2, (int64_t[]){-1, dim(h, 1) * dim(h, 2) * dim(h, 3)});
  return dense(r, h, small(r));
}

/* The model of seed `seed` into g; training: a loss, gradients and an update. */
static void generate(Graph *g, uint64_t seed, bool training) {
  Gen r = {.g = g, .s = seed, .smooth = training};
  r.N = ir_size_var(g, "N");
  g->batch_var = r.N;
  g->max_batch = 1 + pick(&r, 4);
  Value *x, *y;
  int kind = pick(&r, 3);
  if (kind == 2) {
    int64_t c = 1 + pick(&r, 4), H = 1 + pick(&r, 9), W = 1 + pick(&r, 9);
    x = ir_input(g, "x", ir_type(RT_F32, 4, (Size[]){sz_var(r.N), sz_const(c), sz_const(H), sz_const(W)}), NOLOC);
    y = conv_stack(&r, x);
  } else {
    int rank = kind == 0 ? 2 : 3;
    Size d[3] = {sz_var(r.N), sz_const(small(&r)), sz_const(small(&r))};
    x = ir_input(g, "x", ir_type(RT_F32, rank, d), NOLOC);
    y = dense_stack(&r, x);
  }
  ir_output(g, y, "y");
  if (r.npool > 1 && coin(&r, 30) && r.pool[0] != y)
    ir_output(g, r.pool[0], "early");
  if (!training)
    return;
  Value *t = ir_input(g, "target", y->type, NOLOC);
  Value *e = ir_op2(g, OP_mul, y, t, NOLOC);
  g->loss = reduce(&r, OP_sum, e, (1u << y->type.rank) - 1, false);
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = g->params[i]->role == V_PARAM;
  if (coin(&r, 70)) {
    g->lr = ir_input(g, "lr", ir_type_const(RT_F32, 0, NULL), NOLOC);
    OptSpec *o = rt_arena_alloc(g->arena, sizeof *o);
    o->kind = OPT_SGD;
    o->momentum = coin(&r, 50) ? 0.9 : 0;
    o->nesterov = o->momentum != 0 && coin(&r, 50);
    g->opt = o;
  }
}

/* ---- the comparison ---------------------------------------------------------- */

typedef struct Totals {
  int models, training;
  int nodes0, nodes3, kernels0, kernels3, bn0, bn3;
  int blocked;            /* models with a conv2d_nchwc (or conv2d_winograd) at -O3 */
  int blocked_steps;      /* training steps among them */
  int nhwc;               /* models one of whose conv inputs is NHWC (lanes not the output's) */
} Totals;

static bool has_nhwc_input(const Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_conv2d_nchwc && !sz_eq(n->in[0]->type.dim[4], n->out[0]->type.dim[4]))
      return true;
  }
  return false;
}

static void build(OModel *o, uint64_t seed, bool training) {
  char name[64];
  memset(o, 0, sizeof *o);
  o->fast = true;                 /* the kiln passes are under test, not LLVM's */
  snprintf(name, sizeof name, "diff_%llu", (unsigned long long)seed);
  generate(model_new(&o->m, name), seed, training);
}

static void run(OModel *o, int64_t batch) {
  om_inputs(o, 17);
  if (o->m.g->lr)
    *(float *)model_ptr(&o->m, o->m.g->lr) = 0.01f;
  model_run(&o->m, batch, 2);
}

static void one(uint64_t seed, bool verbose, Totals *t) {
  bool training = seed % 5 == 4;
  OModel ref, got;
  build(&ref, seed, training);
  build(&got, seed, training);
  if (verbose) {
    printf("; seed %llu as built\n", (unsigned long long)seed);
    ir_print(ref.m.g, stdout);
  }
  om_compile(&ref, 0, seed);
  const char *level = getenv("KILN_DIFF_OPT");
  if (seed % 3 == 0 || (training && seed % 2 == 0))
    got.m.layout = LAYOUT_BLOCKED;
  else if (seed % 6 == 1)
    got.m.layout = LAYOUT_NHWC;
  om_compile(&got, level ? atoi(level) : 3, seed);
  if (verbose) {
    printf("; seed %llu at -O0\n", (unsigned long long)seed);
    ir_print(ref.m.g, stdout);
    printf("; seed %llu at -O%d\n", (unsigned long long)seed, level ? atoi(level) : 3);
    ir_print(got.m.g, stdout);
  }
  int64_t batch = 1 + (int64_t)(seed % (uint64_t)ref.m.g->max_batch);
  run(&ref, batch);
  run(&got, batch);
  char what[160];
  snprintf(what, sizeof what, "seed %llu (KILN_DIFF_SEED=%llu replays it)",
           (unsigned long long)seed, (unsigned long long)seed);
  om_compare_outputs(&ref, &got, EPS, what);
  if (training)
    om_compare_step(&ref, &got, EPS, what);
  t->models++;
  t->training += training;
  t->nodes0 += ref.m.g->nnodes;
  t->nodes3 += got.m.g->nnodes;
  t->kernels0 += pass_count_kernels(ref.m.g);
  t->kernels3 += pass_count_kernels(got.m.g);
  t->bn0 += om_count(ref.m.g, OP_batchnorm);
  t->bn3 += om_count(got.m.g, OP_batchnorm);
  t->blocked += om_count(got.m.g, OP_conv2d_nchwc) + om_count(got.m.g, OP_conv2d_winograd) > 0;
  t->blocked_steps += training && om_count(got.m.g, OP_conv2d_nchwc) > 0;
  t->nhwc += has_nhwc_input(got.m.g);
  model_free(&ref.m);
  model_free(&got.m);
}

static void test_random_models(void **state) {
  const char *replay = getenv("KILN_DIFF_SEED"), *count = getenv("KILN_DIFF_COUNT");
  Totals t = {0};
  if (replay) {
    one(strtoull(replay, NULL, 10), true, &t);
    return;
  }
  int n = count ? atoi(count) : DEFAULT_COUNT;
  for (int i = 0; i < n; i++)
    one(1000 + (uint64_t)i, false, &t);
  printf("%d models (%d training steps): nodes %d -> %d, kernels %d -> %d, batchnorms %d -> %d "
         "from -O0 to -O3, %d blocked (%d training steps), %d with an NHWC input\n", t.models,
         t.training, t.nodes0, t.nodes3, t.kernels0, t.kernels3, t.bn0, t.bn3, t.blocked,
         t.blocked_steps, t.nhwc);
  assert_true(t.nodes3 < t.nodes0 && t.bn3 < t.bn0);   /* the passes did something */
  assert_true(n < 30 || (t.blocked > 0 && t.blocked_steps > 0 && t.nhwc > 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

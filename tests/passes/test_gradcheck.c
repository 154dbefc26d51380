/* Finite-difference checks of every gradient rule of ir/ops.def, through
 * the real pipeline (autodiff, memory planning, codegen, LLVM O3, the JIT).
 *
 * A case builds y = op(params...) for several shapes (odd sizes 1, 3, 7,
 * broadcasting on either side), and the loss sum over cases of sum(y * r),
 * r a fixed random input, so that every element of y matters. Each
 * parameter's analytic gradient (from the compiled step) is compared with
 * central differences of the loss in float64, h = 1e-6, within 1e-6 per
 * tensor as DESIGN.md measures it (max|got - ref| / max|ref|). Inputs keep
 * away from kinks (relu at 0, ties of max) so that differences are exact.
 *
 * Besides: the tie rules (amax and maximum share as PyTorch), the forward
 * values of the ops gradients need (step, sign, expand, onehot), the
 * backward templates at a larger size giving the same bits at 1 and 2
 * threads, dropout (its mask against rt_random_u32, about half kept at
 * p = 0.5, the same at 1 and 2 threads, its gradient the mask / (1 - p)),
 * and the inline Philox against rt_philox4x32, bit for bit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "adharness.h"

#define H 1e-6
#define EPS 1e-6
#define MAXP 96

typedef struct Case {
  Model m;
  Graph *g;
  Value *p[MAXP];
  FillKind fill[MAXP];
  int np;
  Value *r[MAXP];
  int nr;
  Value *loss;
  double h, eps;
} Case;

static Graph *case_new(Case *c, const char *name) {
  memset(c, 0, sizeof *c);
  c->g = model_new(&c->m, name);
  c->h = H;
  c->eps = EPS;
  return c->g;
}

/* A trainable f64 parameter (or of t's dtype), marked for its gradient. */
static Value *param(Case *c, const char *what, Type t, FillKind fill) {
  assert_true(c->np < MAXP);
  char *name = rt_arena_printf(c->m.arena, "%s.%d", what, c->np);
  Value *v = ir_param(c->g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
  v->wrt = true;
  c->fill[c->np] = fill;
  c->p[c->np++] = v;
  return v;
}

static Value *p64(Case *c, const char *what, FillKind fill, int rank, const int64_t *dims) {
  return param(c, what, ir_type_const(RT_F64, rank, dims), fill);
}
#define P64(c, what, fill, ...) \
  p64((c), (what), (fill), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define SCALAR64(c, what, fill) p64((c), (what), (fill), 0, NULL)

/* Adds sum(y * r) to the loss. */
static void observe(Case *c, Value *y) {
  assert_true(ir_type_known(&y->type));
  assert_true(c->nr < MAXP);
  char *name = rt_arena_printf(c->m.arena, "r%d", c->nr);
  Value *r = c->r[c->nr++] = ir_input(c->g, name, y->type, NOLOC);
  Value *term = sum_all(c->g, ir_op2(c->g, OP_mul, y, r, NOLOC));
  c->loss = c->loss ? ir_op2(c->g, OP_add, c->loss, term, NOLOC) : term;
}

/* Central differences of the loss over every element of parameter p. */
static Ten numeric_grad(Case *c, Value *p) { return ad_numeric_grad(&c->m, p, c->loss, c->h); }

static void case_check(Case *c) {
  Graph *g = c->g;
  g->loss = c->loss;
  ir_output(g, c->loss, "loss");
  ad_compile(&c->m);
  for (int i = 0; i < c->np; i++)
    fill_value(&c->m, c->p[i], c->fill[i], 11 + i);
  for (int i = 0; i < c->nr; i++)
    fill_value(&c->m, c->r[i], FILL_UNIFORM, 101 + i);
  memset(c->m.regions[REGION_GRADS], 0xff, g->region_bytes[REGION_GRADS]);
  model_run(&c->m, 0, HARNESS_THREADS);
  Ten ana[MAXP];
  for (int i = 0; i < c->np; i++) {
    if (!c->p[i]->grad)
      fail_msg("%s: %s has no gradient", g->name, c->p[i]->name);
    assert_int_equal(c->p[i]->grad->region, REGION_GRADS);
    ana[i] = model_get(&c->m, c->p[i]->grad);
  }
  for (int i = 0; i < c->np; i++) {
    char what[160];
    snprintf(what, sizeof what, "%s: d loss / d %s", g->name, c->p[i]->name);
    check_ten(what, ana[i], numeric_grad(c, c->p[i]), c->eps);
  }
  model_free(&c->m);
}

/* ---- builders ---------------------------------------------------------------- */

static Value *un(Case *c, Op op, Value *x) { return ir_op1(c->g, op, x, NOLOC); }
static Value *bin(Case *c, Op op, Value *a, Value *b) { return ir_op2(c->g, op, a, b, NOLOC); }
static Value *with(Case *c, Op op, Value **in, int nin, Attr a) {
  return ir_op(c->g, op, in, nin, &a, NOLOC);
}

static Attr shape_of(int rank, const int64_t *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  for (int i = 0; i < rank; i++)
    a.shape[i] = sz_const(dims[i]);
  return a;
}
#define SHAPE(...) \
  shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

/* ---- elementwise --------------------------------------------------------------- */

static FillKind unary_fill(Op op) {
  switch (op) {
  case OP_abs: case OP_relu: case OP_step: case OP_sign: return FILL_AWAY0;
  case OP_log: case OP_sqrt: case OP_rsqrt: return FILL_POS;
  default: return FILL_UNIFORM;
  }
}

static void test_unary(void **state) {
  static const Op ops[] = {OP_neg, OP_abs, OP_relu, OP_sigmoid, OP_tanh, OP_exp,
                           OP_log, OP_sqrt, OP_rsqrt, OP_step, OP_sign};
  Case c;
  case_new(&c, "unary");
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
    observe(&c, un(&c, ops[i], P64(&c, op_name(ops[i]), unary_fill(ops[i]), 3, 7)));
    observe(&c, un(&c, ops[i], P64(&c, op_name(ops[i]), unary_fill(ops[i]), 1)));
    observe(&c, un(&c, ops[i], SCALAR64(&c, op_name(ops[i]), unary_fill(ops[i]))));
  }
  case_check(&c);
}

/* f32 -> f64: the f32 parameter moves by 2^-10 on a grid of 2^-10, exactly. */
static void test_cast(void **state) {
  Case c;
  case_new(&c, "cast");
  c.h = 1.0 / 1024;
  Attr a = ir_attr();
  a.dtype = RT_F64;
  Value *x = param(&c, "cast", TY(RT_F32, 3, 7), FILL_GRID);
  observe(&c, with(&c, OP_cast, &x, 1, a));
  Value *y = param(&c, "cast", TY(RT_F64, 7), FILL_UNIFORM);
  observe(&c, with(&c, OP_cast, &y, 1, a));   /* f64 -> f64 */
  case_check(&c);
}

/* Shape pairs: equal, one side broadcast, both sides, a scalar, size 1. */
static const struct { int ra, rb; int64_t a[3], b[3]; } pairs[] = {
    {2, 2, {3, 7}, {3, 7}},   {3, 2, {2, 3, 7}, {3, 1}}, {3, 3, {1, 4, 1}, {3, 1, 5}},
    {0, 2, {0}, {2, 3}},      {1, 1, {7}, {1}},          {2, 3, {3, 1}, {2, 1, 5}},
};

static void binary_case(Op op) {
  Case c;
  case_new(&c, op_name(op));
  FillKind fb = op == OP_div ? FILL_AWAY0 : FILL_UNIFORM;
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
    Value *a = p64(&c, "a", FILL_UNIFORM, pairs[i].ra, pairs[i].a);
    Value *b = p64(&c, "b", fb, pairs[i].rb, pairs[i].b);
    observe(&c, bin(&c, op, a, b));
  }
  /* one value on both sides: contributions add up */
  Value *x = P64(&c, "x", FILL_AWAY0, 3, 5);
  observe(&c, bin(&c, op, x, op == OP_maximum || op == OP_minimum ? un(&c, OP_neg, x) : x));
  case_check(&c);
}

static void test_add(void **state) { binary_case(OP_add); }
static void test_sub(void **state) { binary_case(OP_sub); }
static void test_mul(void **state) { binary_case(OP_mul); }
static void test_div(void **state) { binary_case(OP_div); }
static void test_maximum(void **state) { binary_case(OP_maximum); }
static void test_minimum(void **state) { binary_case(OP_minimum); }

static void bnorm(Case *c, int rank, const int64_t *dims, int axis) {
  int64_t ch = dims[axis];
  Value *in[5] = {p64(c, "x", FILL_UNIFORM, rank, dims), P64(c, "weight", FILL_UNIFORM, ch),
                  P64(c, "bias", FILL_UNIFORM, ch), P64(c, "mean", FILL_UNIFORM, ch),
                  P64(c, "var", FILL_POS, ch)};
  Attr a = ir_attr();
  a.axis = axis;
  observe(c, with(c, OP_batchnorm, in, 5, a));
}

static void test_batchnorm(void **state) {
  Case c;
  case_new(&c, "batchnorm");
  bnorm(&c, 3, (int64_t[]){3, 4, 5}, 1);
  bnorm(&c, 2, (int64_t[]){5, 3}, 1);
  bnorm(&c, 4, (int64_t[]){2, 3, 1, 3}, 1);
  bnorm(&c, 3, (int64_t[]){7, 2, 1}, 2);
  case_check(&c);
}

/* ---- data movement and reductions ---------------------------------------------- */

static void test_movement(void **state) {
  Case c;
  case_new(&c, "movement");
  Attr t = ir_attr();
  t.perm[0] = 2, t.perm[1] = 0, t.perm[2] = 1;
  observe(&c, with(&c, OP_transpose, (Value *[]){P64(&c, "transpose", FILL_UNIFORM, 2, 3, 5)}, 1, t));
  t = ir_attr();
  t.perm[0] = 1, t.perm[1] = 0;
  observe(&c, with(&c, OP_transpose, (Value *[]){P64(&c, "transpose", FILL_UNIFORM, 3, 7)}, 1, t));
  observe(&c, with(&c, OP_reshape, (Value *[]){P64(&c, "reshape", FILL_UNIFORM, 3, 4)}, 1, SHAPE(2, 6)));
  observe(&c, with(&c, OP_reshape, (Value *[]){P64(&c, "reshape", FILL_UNIFORM, 2, 3, 5)}, 1, SHAPE(30)));
  observe(&c, with(&c, OP_expand, (Value *[]){P64(&c, "expand", FILL_UNIFORM, 3, 1)}, 1, SHAPE(2, 3, 5)));
  observe(&c, with(&c, OP_expand, (Value *[]){SCALAR64(&c, "expand", FILL_UNIFORM)}, 1, SHAPE(4)));
  observe(&c, with(&c, OP_expand, (Value *[]){P64(&c, "expand", FILL_UNIFORM, 1, 7)}, 1, SHAPE(3, 7)));
  case_check(&c);
}

static void reduce_case(Op op) {
  static const struct { int rank; int64_t dims[3]; uint32_t axes; bool keep; } rs[] = {
      {3, {3, 7, 5}, 2, false}, {3, {3, 7, 5}, 5, true}, {3, {3, 7, 5}, 7, false},
      {3, {3, 7, 5}, 1, true},  {2, {1, 7}, 1, false},   {1, {3}, 1, true},
  };
  Case c;
  case_new(&c, op_name(op));
  FillKind fill = op == OP_max || op == OP_min ? FILL_DISTINCT : FILL_UNIFORM;
  for (size_t i = 0; i < sizeof rs / sizeof *rs; i++) {
    Attr a = ir_attr();
    a.axes = rs[i].axes;
    a.keepdim = rs[i].keep;
    Value *x = p64(&c, op_name(op), fill, rs[i].rank, rs[i].dims);
    observe(&c, with(&c, op, &x, 1, a));
  }
  case_check(&c);
}

static void test_sum(void **state) { reduce_case(OP_sum); }
static void test_mean(void **state) { reduce_case(OP_mean); }
static void test_max(void **state) { reduce_case(OP_max); }
static void test_min(void **state) { reduce_case(OP_min); }

static void test_softmax(void **state) {
  Case c;
  case_new(&c, "softmax");
  for (int k = 0; k < 2; k++) {
    Op op = k ? OP_log_softmax : OP_softmax;
    Attr a = ir_attr();
    a.axis = -1;
    observe(&c, with(&c, op, (Value *[]){P64(&c, op_name(op), FILL_UNIFORM, 3, 7)}, 1, a));
    a.axis = 1;
    observe(&c, with(&c, op, (Value *[]){P64(&c, op_name(op), FILL_UNIFORM, 2, 3, 5)}, 1, a));
    observe(&c, with(&c, op, (Value *[]){P64(&c, op_name(op), FILL_UNIFORM, 4, 1)}, 1, a));
  }
  case_check(&c);
}

/* ---- contractions and windows ---------------------------------------------------- */

static void mm(Case *c, int ra, const int64_t *a, int rb, const int64_t *b, bool ta, bool tb) {
  Attr at = ir_attr();
  at.trans_a = ta;
  at.trans_b = tb;
  Value *in[2] = {p64(c, "A", FILL_UNIFORM, ra, a), p64(c, "B", FILL_UNIFORM, rb, b)};
  observe(c, with(c, OP_matmul, in, 2, at));
}
#define D(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}

static void test_matmul(void **state) {
  Case c;
  case_new(&c, "matmul");
  mm(&c, D(3, 5), D(5, 7), false, false);
  mm(&c, D(5, 3), D(5, 7), true, false);
  mm(&c, D(3, 5), D(7, 5), false, true);
  mm(&c, D(5, 3), D(7, 5), true, true);
  mm(&c, D(2, 3, 5), D(2, 5, 7), false, false);    /* batched */
  mm(&c, D(2, 3, 5), D(2, 7, 5), false, true);
  mm(&c, D(2, 3, 5), D(7, 5), false, true);        /* dense: a weight shared by the batch */
  mm(&c, D(2, 3, 5), D(5, 7), false, false);
  mm(&c, D(2, 5, 3), D(5, 7), true, false);        /* shared, A transposed: batched then summed */
  mm(&c, D(2, 5, 3), D(7, 5), true, true);
  mm(&c, D(3, 5), D(2, 5, 7), false, false);       /* A shared by a batch of B */
  mm(&c, D(2, 3, 5), D(1, 5, 7), false, false);    /* batch dims of 1 */
  mm(&c, D(2, 2, 3, 5), D(5, 4), false, false);    /* two batch dims */
  mm(&c, D(1, 5), D(5, 1), false, false);
  case_check(&c);
}

typedef struct Win {
  int k[2], stride[2], pad[4], dil[2], groups;
  bool ceil_mode, incpad;
} Win;

static Attr win_attr(Win w) {
  Attr a = ir_attr();
  for (int i = 0; i < 2; i++) {
    a.k[i] = w.k[i];
    a.stride[i] = w.stride[i] ? w.stride[i] : 1;
    a.dil[i] = w.dil[i] ? w.dil[i] : 1;
  }
  memcpy(a.pad, w.pad, sizeof a.pad);
  a.groups = w.groups ? w.groups : 1;
  a.ceil_mode = w.ceil_mode;
  a.count_include_pad = w.incpad;
  return a;
}

static void conv(Case *c, const int64_t *x, int64_t out, Win w) {
  int g = w.groups ? w.groups : 1;
  Value *in[2] = {P64(c, "x", FILL_UNIFORM, x[0], x[1], x[2], x[3]),
                  P64(c, "w", FILL_UNIFORM, out, x[1] / g, w.k[0], w.k[1])};
  observe(c, with(c, OP_conv2d, in, 2, win_attr(w)));
}

static void test_conv2d(void **state) {
  Case c;
  case_new(&c, "conv2d");
  conv(&c, (int64_t[]){2, 3, 7, 7}, 4, (Win){.k = {3, 3}, .pad = {1, 1, 1, 1}});
  conv(&c, (int64_t[]){1, 2, 7, 5}, 3, (Win){.k = {3, 2}, .stride = {2, 2}, .pad = {0, 1, 1, 0}});
  conv(&c, (int64_t[]){2, 2, 7, 7}, 2, (Win){.k = {3, 3}, .dil = {2, 2}, .pad = {2, 2, 2, 2}});
  conv(&c, (int64_t[]){2, 6, 5, 5}, 6, (Win){.k = {3, 3}, .pad = {1, 1, 1, 1}, .groups = 3});
  conv(&c, (int64_t[]){2, 4, 3, 5}, 5, (Win){.k = {1, 1}});                       /* pointwise */
  conv(&c, (int64_t[]){1, 3, 7, 7}, 2, (Win){.k = {1, 1}, .stride = {2, 2}});
  conv(&c, (int64_t[]){1, 4, 3, 3}, 6, (Win){.k = {1, 1}, .groups = 2});
  conv(&c, (int64_t[]){1, 1, 7, 7}, 1, (Win){.k = {2, 2}, .stride = {3, 3}});       /* gaps */
  case_check(&c);
}

/* conv2d_bwd_data as a forward op (a transposed convolution): y[N, C, H, W]
 * is the "dy" of a conv2d from z (attr.shape) to it; a negative end pad is
 * the transposed convolution's output_padding. */
static void conv_t(Case *c, const int64_t *y, const int64_t *z, Win w) {
  int g = w.groups ? w.groups : 1;
  Value *in[2] = {P64(c, "y", FILL_UNIFORM, y[0], y[1], y[2], y[3]),
                  P64(c, "w", FILL_UNIFORM, y[1], z[1] / g, w.k[0], w.k[1])};
  Attr a = win_attr(w);
  a.rank = 4;
  for (int i = 0; i < 4; i++)
    a.shape[i] = sz_const(z[i]);
  observe(c, with(c, OP_conv2d_bwd_data, in, 2, a));
}

static void test_conv2d_bwd_data(void **state) {
  Case c;
  case_new(&c, "conv2d_bwd_data");
  conv_t(&c, (int64_t[]){2, 3, 3, 4}, (int64_t[]){2, 2, 5, 6}, (Win){.k = {3, 3}});
  conv_t(&c, (int64_t[]){1, 4, 3, 3}, (int64_t[]){1, 6, 6, 9},
         (Win){.k = {3, 2}, .stride = {2, 3}, .pad = {1, 0, 0, -1}, .groups = 2});
  conv_t(&c, (int64_t[]){1, 2, 3, 2}, (int64_t[]){1, 3, 9, 4},
         (Win){.k = {3, 2}, .stride = {2, 2}, .dil = {2, 2}, .pad = {1, 1, -1, 0}});
  conv_t(&c, (int64_t[]){1, 3, 3, 3}, (int64_t[]){1, 3, 3, 3}, (Win){.k = {1, 1}, .groups = 3});
  case_check(&c);
}

static void pool(Case *c, Op op, const int64_t *x, Win w) {
  Value *in = P64(c, op_name(op), op == OP_maxpool2d ? FILL_DISTINCT : FILL_UNIFORM, x[0], x[1],
                  x[2], x[3]);
  observe(c, with(c, op, &in, 1, win_attr(w)));
}

static void test_pool2d(void **state) {
  Case c;
  case_new(&c, "pool2d");
  for (int k = 0; k < 2; k++) {
    Op op = k ? OP_avgpool2d : OP_maxpool2d;
    pool(&c, op, (int64_t[]){2, 3, 7, 7}, (Win){.k = {2, 2}, .stride = {2, 2}});
    pool(&c, op, (int64_t[]){1, 2, 7, 5}, (Win){.k = {3, 3}, .stride = {2, 2}, .pad = {1, 1, 1, 1},
                                                 .ceil_mode = true, .incpad = true});
    pool(&c, op, (int64_t[]){1, 2, 7, 5}, (Win){.k = {3, 3}, .stride = {2, 2}, .pad = {1, 1, 1, 1},
                                                 .ceil_mode = true});
    pool(&c, op, (int64_t[]){1, 1, 5, 5}, (Win){.k = {3, 3}, .stride = {3, 3}, .ceil_mode = true});
    pool(&c, op, (int64_t[]){1, 1, 3, 7}, (Win){.k = {1, 3}, .stride = {1, 2}, .pad = {0, 1, 0, 1}});
  }
  pool(&c, OP_maxpool2d, (int64_t[]){1, 2, 7, 7}, (Win){.k = {3, 3}, .dil = {2, 2}});
  pool(&c, OP_maxpool2d, (int64_t[]){1, 1, 4, 4}, (Win){.k = {3, 3}, .stride = {1, 1}});   /* overlaps */
  case_check(&c);
}

/* ---- exact rules: ties, as PyTorch ------------------------------------------------ */

/* amax over rows with two-way and three-way ties; maximum/minimum of equal
 * operands give each half. */
static void test_ties(void **state) {
  Model m;
  Graph *g = model_new(&m, "ties");
  Value *x = ir_param(g, "x", TY(RT_F64, 3, 4), (Init){0}, NOLOC);
  Value *a = ir_param(g, "a", TY(RT_F64, 4), (Init){0}, NOLOC);
  Value *b = ir_param(g, "b", TY(RT_F64, 4), (Init){0}, NOLOC);
  x->wrt = a->wrt = b->wrt = true;
  Attr ax = ir_attr();
  ax.axes = 2;
  Value *mx = ir_op(g, OP_max, &x, 1, &ax, NOLOC), *mn = ir_op(g, OP_min, &x, 1, &ax, NOLOC);
  Value *loss = ir_op2(g, OP_add, sum_all(g, mx), sum_all(g, ir_op2(g, OP_mul, mn, ir_scalar(g, RT_F64, 10), NOLOC)), NOLOC);
  Value *mm_ = ir_op2(g, OP_add, ir_op2(g, OP_maximum, a, b, NOLOC),
                      ir_op2(g, OP_mul, ir_op2(g, OP_minimum, a, b, NOLOC), ir_scalar(g, RT_F64, 10), NOLOC), NOLOC);
  g->loss = ir_op2(g, OP_add, loss, sum_all(g, mm_), NOLOC);
  ir_output(g, g->loss, "loss");
  ad_compile(&m);
  double xv[12] = {1, 3, 3, 0, /**/ 5, 5, 5, -1, /**/ 2, -4, 1, -4};
  double av[4] = {1, 2, 3, 4}, bv[4] = {1, 0, 3, 9};
  model_set(&m, x, (Ten){.n = 12, .d = xv});
  model_set(&m, a, (Ten){.n = 4, .d = av});
  model_set(&m, b, (Ten){.n = 4, .d = bv});
  model_run(&m, 0, 2);
  /* row 0: max 3 twice (1/2 each), min 0; row 1: max 5 thrice, min -1; row 2: max 2, min -4 twice */
  double gx[12] = {0, 0.5, 0.5, 10, /**/ 1.0 / 3, 1.0 / 3, 1.0 / 3, 10, /**/ 1, 5, 0, 5};
  double ga[4] = {5.5, 1, 5.5, 10}, gb[4] = {5.5, 10, 5.5, 1};
  check_ten("amax/amin ties", model_get(&m, x->grad), (Ten){.rank = 2, .dim = {3, 4}, .n = 12, .d = gx}, 1e-15);
  check_ten("maximum/minimum ties (a)", model_get(&m, a->grad), (Ten){.rank = 1, .dim = {4}, .n = 4, .d = ga}, 1e-15);
  check_ten("maximum/minimum ties (b)", model_get(&m, b->grad), (Ten){.rank = 1, .dim = {4}, .n = 4, .d = gb}, 1e-15);
  model_free(&m);
}

/* ---- forward values of the new ops ------------------------------------------------ */

static void test_new_ops_forward(void **state) {
  Model m;
  Graph *g = model_new(&m, "new_ops");
  Value *x = ir_input(g, "x", TY(RT_F32, 3, 13), NOLOC);
  Value *xi = ir_input(g, "xi", TY(RT_I32, 9), NOLOC);
  Value *lab = ir_input(g, "labels", TY(RT_I64, 2, 7), NOLOC);
  Value *lab32 = ir_input(g, "labels32", TY(RT_I32, 5), NOLOC);
  Attr oh = ir_attr();
  oh.classes = 11;
  oh.dtype = RT_F64;
  Attr oh1 = ir_attr();
  oh1.classes = 1;
  Attr ex = SHAPE(2, 3, 13);
  Value *outs[] = {
      ir_op1(g, OP_step, x, NOLOC), ir_op1(g, OP_sign, x, NOLOC), ir_op1(g, OP_step, xi, NOLOC),
      ir_op1(g, OP_sign, xi, NOLOC), ir_op(g, OP_expand, &x, 1, &ex, NOLOC),
      ir_op(g, OP_onehot, &lab, 1, &oh, NOLOC), ir_op(g, OP_onehot, &lab32, 1, &oh1, NOLOC)};
  for (size_t i = 0; i < sizeof outs / sizeof *outs; i++)
    ir_output(g, outs[i], NULL);
  ad_compile(&m);
  model_fill(&m, x, -2, 2, 5);
  Ten tx = model_get(&m, x);
  tx.d[0] = 0, tx.d[1] = -0.0, tx.d[2] = 1e-30;
  model_set(&m, x, tx);
  tx = model_get(&m, x);
  model_set(&m, xi, (Ten){.n = 9, .d = (double[]){-3, -1, 0, 1, 2, 0, -7, 5, 1}});
  double lv[14] = {0, 10, 3, -1, 11, 5, 5, 7, 2, 9, 1, 0, 12, 4};
  model_set(&m, lab, (Ten){.n = 14, .d = lv});
  model_set(&m, lab32, (Ten){.n = 5, .d = (double[]){0, 1, -1, 0, 3}});
  model_run(&m, 0, 2);
  Ten step = model_get(&m, outs[0]), sign = model_get(&m, outs[1]);
  Ten stepi = model_get(&m, outs[2]), signi = model_get(&m, outs[3]);
  Ten expd = model_get(&m, outs[4]), hot = model_get(&m, outs[5]), hot1 = model_get(&m, outs[6]);
  for (int64_t i = 0; i < tx.n; i++) {
    double v = tx.d[i];
    assert_true(step.d[i] == (v > 0));
    assert_true(sign.d[i] == (v > 0) - (v < 0));
    assert_true(expd.d[i] == v && expd.d[i + tx.n] == v);
  }
  for (int i = 0; i < 9; i++) {
    int v = ((int[]){-3, -1, 0, 1, 2, 0, -7, 5, 1})[i];
    assert_int_equal(stepi.d[i], v > 0);
    assert_int_equal(signi.d[i], (v > 0) - (v < 0));
  }
  for (int i = 0; i < 14; i++)
    for (int k = 0; k < 11; k++)
      assert_true(hot.d[i * 11 + k] == (lv[i] == k));
  assert_int_equal(hot.dim[2], 11);
  for (int i = 0; i < 5; i++)
    assert_true(hot1.d[i] == (i == 0 || i == 3));
  model_free(&m);
}

/* ---- the backward templates at a larger size: same bits at any thread count ------- */

static void test_bwd_threads(void **state) {
  Model m;
  Graph *g = model_new(&m, "bwd_threads");
  Value *x = ir_param(g, "x", TY(RT_F32, 5, 8, 21, 19), (Init){0}, NOLOC);
  Value *w = ir_param(g, "w", TY(RT_F32, 16, 4, 3, 3), (Init){0}, NOLOC);
  x->wrt = w->wrt = true;
  Attr a = win_attr((Win){.k = {3, 3}, .stride = {2, 1}, .pad = {1, 1, 1, 1}, .groups = 2});
  Value *y = ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC);
  Attr p = win_attr((Win){.k = {3, 3}, .stride = {2, 2}, .pad = {1, 1, 1, 1}, .ceil_mode = true});
  Value *mp = ir_op(g, OP_maxpool2d, &y, 1, &p, NOLOC), *ap = ir_op(g, OP_avgpool2d, &y, 1, &p, NOLOC);
  Value *r = ir_input(g, "r", mp->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, ir_op2(g, OP_add, mp, ap, NOLOC), r, NOLOC));
  ir_output(g, g->loss, "loss");
  ad_compile(&m);
  model_fill_all(&m, 3);
  Ten gx[2], gw[2];
  for (int t = 0; t < 2; t++) {
    model_run(&m, 0, t ? HARNESS_THREADS : 1);
    gx[t] = model_get(&m, x->grad);
    gw[t] = model_get(&m, w->grad);
  }
  assert_memory_equal(gx[0].d, gx[1].d, gx[0].n * sizeof(double));
  assert_memory_equal(gw[0].d, gw[1].d, gw[0].n * sizeof(double));
  model_free(&m);
}

/* ---- dropout ------------------------------------------------------------------------ */

#define SEED 0x0123456789abcdefull

static Value *dropout(Graph *g, Value *x, Value *ctr, double p, uint32_t stream) {
  Attr a = ir_attr();
  a.alpha = p;
  a.stream = stream;
  return ir_op(g, OP_dropout, (Value *[]){x, ctr}, 2, &a, NOLOC);
}

static bool kept(uint32_t stream, int64_t counter, int64_t i, double p) {
  uint32_t w = rt_random_u32(SEED, stream | (uint64_t)(uint32_t)counter << 32, (uint64_t)i);
  return (uint64_t)w >= (uint64_t)ceil(p * 4294967296.0);
}

/* y = x * mask / (1 - p): the mask from rt_random_u32, bit for bit. */
static void check_mask(Ten x, Ten y, double p, uint32_t stream, int64_t counter, double tol) {
  for (int64_t i = 0; i < x.n; i++) {
    double want = kept(stream, counter, i, p) ? x.d[i] / (1 - p) : 0;
    if (fabs(y.d[i] - want) > tol * fabs(want))
      fail_msg("dropout element %lld: got %.9g, want %.9g", (long long)i, y.d[i], want);
  }
}

static void test_dropout_mask(void **state) {
  Model m;
  Graph *g = model_new(&m, "dropout");
  g->seed = SEED;
  g->training = true;
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 4;
  Value *x = ir_input(g, "x", ir_type(RT_F32, 2, (Size[]){sz_var(N), sz_const(2049)}), NOLOC);
  Value *xd = ir_input(g, "xd", TY(RT_F64, 3, 7), NOLOC);
  Value *ctr = ir_state(g, "ctr", ir_type_const(RT_I64, 0, NULL), (Init){0}, NOLOC);
  Value *ctr32 = ir_state(g, "ctr32", ir_type_const(RT_I32, 0, NULL), (Init){0}, NOLOC);
  Value *y = dropout(g, x, ctr, 0.5, 5), *y2 = dropout(g, x, ctr, 0.5, 6);
  Value *yd = dropout(g, xd, ctr32, 0.3, 1), *y0 = dropout(g, xd, ctr32, 0, 1);
  Value *outs[] = {y, y2, yd, y0};
  for (int i = 0; i < 4; i++)
    ir_output(g, outs[i], NULL);
  ad_compile(&m);
  model_fill(&m, x, 0.5, 1.5, 1);
  model_fill(&m, xd, 0.5, 1.5, 2);
  *(int64_t *)model_ptr(&m, ctr) = 7;
  *(int32_t *)model_ptr(&m, ctr32) = -3;
  model_run(&m, 3, 1);
  Ten tx = model_get(&m, x), t1 = model_get(&m, y), t5 = model_get(&m, y2);
  Ten txd = model_get(&m, xd), td = model_get(&m, yd), t0 = model_get(&m, y0);
  check_mask(tx, t1, 0.5, 5, 7, 1e-7);
  check_mask(tx, t5, 0.5, 6, 7, 1e-7);
  check_mask(txd, td, 0.3, 1, -3, 1e-15);
  check_mask(txd, t0, 0, 1, -3, 0);
  int64_t nkept = 0, same = 0;
  for (int64_t i = 0; i < t1.n; i++) {
    nkept += t1.d[i] != 0;
    same += (t1.d[i] != 0) == (t5.d[i] != 0);
  }
  double frac = (double)nkept / t1.n;
  if (frac < 0.47 || frac > 0.53)
    fail_msg("dropout p = 0.5 kept %.4f of %lld elements", frac, (long long)t1.n);
  assert_true(same < t1.n * 0.6);              /* another stream, another mask */
  /* 2 threads: the same bits; another counter: another mask */
  float *p1 = model_ptr(&m, y);
  float *copy = malloc(t1.n * sizeof(float));
  memcpy(copy, p1, t1.n * sizeof(float));
  model_run(&m, 3, 2);
  assert_memory_equal(copy, model_ptr(&m, y), t1.n * sizeof(float));
  *(int64_t *)model_ptr(&m, ctr) = 8;
  model_run(&m, 3, 2);
  check_mask(tx, model_get(&m, y), 0.5, 5, 8, 1e-7);
  assert_memory_not_equal(copy, model_ptr(&m, y), t1.n * sizeof(float));
  free(copy);
  model_free(&m);
}

/* d loss / dx = r * mask / (1 - p), with the forward's mask. */
static void test_dropout_grad(void **state) {
  Model m;
  Graph *g = model_new(&m, "dropout_grad");
  g->seed = SEED;
  Value *x = ir_param(g, "x", TY(RT_F64, 7, 13), (Init){0}, NOLOC);
  x->wrt = true;
  Value *ctr = ir_state(g, "ctr", ir_type_const(RT_I64, 0, NULL), (Init){0}, NOLOC);
  Value *r = ir_input(g, "r", x->type, NOLOC);
  Value *y = dropout(g, x, ctr, 0.25, 9);
  ir_output(g, y, "y");
  g->loss = sum_all(g, ir_op2(g, OP_mul, y, r, NOLOC));
  ir_output(g, g->loss, "loss");
  ad_compile(&m);
  fill_value(&m, x, FILL_AWAY0, 1);
  fill_value(&m, r, FILL_UNIFORM, 2);
  *(int64_t *)model_ptr(&m, ctr) = 42;
  model_run(&m, 0, 2);
  Ten tx = model_get(&m, x), ty = model_get(&m, y), tr = model_get(&m, r);
  Ten gx = model_get(&m, x->grad), want = ten_new(&m, 2, (int64_t[]){7, 13});
  check_mask(tx, ty, 0.25, 9, 42, 1e-15);
  for (int64_t i = 0; i < want.n; i++)
    want.d[i] = ty.d[i] != 0 ? tr.d[i] / 0.75 : 0;
  check_ten("dropout gradient", gx, want, 1e-15);
  model_free(&m);
}

/* ---- Philox, inline, against the runtime ------------------------------------------- */

typedef void (*PhiloxFn)(const uint32_t *ctr, const uint32_t *key, uint32_t *out);

/* void philox(ctr[4][w], key[2][w], out[4][w]) at w lanes. */
static PhiloxFn build_philox(CgJit **jit, int w) {
  char err[512];
  CgCtx c;
  if (cg_ctx_init_jit(&c, "philox", err, sizeof err))
    fail_msg("%s", err);
  LLVMTypeRef p[3] = {c.t_ptr, c.t_ptr, c.t_ptr};
  LLVMValueRef fn = LLVMAddFunction(c.mod, "philox", LLVMFunctionType(c.t_void, p, 3, 0));
  LLVMPositionBuilderAtEnd(c.b, LLVMAppendBasicBlockInContext(c.ctx, fn, "entry"));
  LLVMTypeRef t = w > 1 ? LLVMVectorType(c.t_i32, w) : c.t_i32;
  LLVMValueRef ctr[4], key[2], out[4];
  for (int i = 0; i < 6; i++) {
    LLVMValueRef base = LLVMGetParam(fn, i < 4 ? 0 : 1);
    LLVMValueRef at = LLVMConstInt(c.t_i64, (i % 4) * w, 0);
    LLVMValueRef v = LLVMBuildLoad2(c.b, t, LLVMBuildGEP2(c.b, c.t_i32, base, &at, 1, ""), "");
    LLVMSetAlignment(v, 4);
    if (i < 4)
      ctr[i] = v;
    else
      key[i - 4] = v;
  }
  cg_philox4x32(&c, ctr, key, out);
  for (int i = 0; i < 4; i++) {
    LLVMValueRef at = LLVMConstInt(c.t_i64, i * w, 0);
    LLVMValueRef st = LLVMBuildStore(c.b, out[i], LLVMBuildGEP2(c.b, c.t_i32, LLVMGetParam(fn, 2), &at, 1, ""));
    LLVMSetAlignment(st, 4);
  }
  LLVMBuildRetVoid(c.b);
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_new(jit, err, sizeof err) ||
      cg_jit_add(*jit, &c, err, sizeof err))
    fail_msg("philox: %s", err);
  cg_ctx_dispose(&c);
  return (PhiloxFn)cg_jit_lookup(*jit, "philox");
}

static void test_philox_bits(void **state) {
  static const int widths[] = {1, 4, 8, 16};
  for (size_t k = 0; k < sizeof widths / sizeof *widths; k++) {
    int w = widths[k];
    CgJit *jit = NULL;
    PhiloxFn f = build_philox(&jit, w);
    assert_non_null(f);
    for (int trial = 0; trial < 200; trial++) {
      uint32_t ctr[64], key[32], out[64];
      for (int i = 0; i < 4 * w; i++)
        ctr[i] = rt_random_u32(77, trial, i);
      for (int i = 0; i < 2 * w; i++)
        key[i] = rt_random_u32(78, trial, i);
      if (trial == 0)
        memset(ctr, 0, sizeof ctr), memset(key, 0xff, sizeof key);
      f(ctr, key, out);
      for (int l = 0; l < w; l++) {
        uint32_t c4[4] = {ctr[l], ctr[w + l], ctr[2 * w + l], ctr[3 * w + l]};
        uint32_t k2[2] = {key[l], key[w + l]}, want[4];
        rt_philox4x32(c4, k2, want);
        for (int i = 0; i < 4; i++)
          if (out[i * w + l] != want[i])
            fail_msg("philox width %d lane %d word %d: %08x, want %08x", w, l, i, out[i * w + l], want[i]);
      }
    }
    cg_jit_free(jit);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),      cmocka_unit_test(test_cast),
      cmocka_unit_test(test_add),        cmocka_unit_test(test_sub),
      cmocka_unit_test(test_mul),        cmocka_unit_test(test_div),
      cmocka_unit_test(test_maximum),    cmocka_unit_test(test_minimum),
      cmocka_unit_test(test_batchnorm),  cmocka_unit_test(test_movement),
      cmocka_unit_test(test_sum),        cmocka_unit_test(test_mean),
      cmocka_unit_test(test_max),        cmocka_unit_test(test_min),
      cmocka_unit_test(test_softmax),    cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_conv2d), cmocka_unit_test(test_conv2d_bwd_data),     cmocka_unit_test(test_pool2d),
      cmocka_unit_test(test_ties),       cmocka_unit_test(test_new_ops_forward),
      cmocka_unit_test(test_bwd_threads), cmocka_unit_test(test_dropout_mask),
      cmocka_unit_test(test_dropout_grad), cmocka_unit_test(test_philox_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The fusion pass and the fused kernels. Each case builds a graph twice:
 * one copy compiles at -O1 (no fusion), the other at -O3 with its weights
 * hidden from the passes (so fold-bn changes nothing and fusion is the only
 * difference); both run through the JIT on the same inputs and weights and
 * every output (and, for training steps, every gradient and updated
 * parameter) must agree within 1e-6. Structure is checked on the -O3
 * graph: which nodes share a group, the kernel count, and that values
 * living only inside a group got no memory.
 *
 * Cases: an elementwise chain; a computed per-channel value that feeds a
 * broadcast (not fused into its consumer); a value needed both inside and
 * outside its group; groups that would each be convex but together need a
 * cycle in the schedule; batchnorm's statistics (a reduction computing its
 * input in its loop); matmul + bias + relu (with the pre-activation
 * needed outside, and edge tiles); a batched matmul with operands per
 * row, per column and whole; conv2d + bias + relu + residual add
 * (grouped too, and with a bias the graph computes); a residual network's
 * block at -O0 against -O3 (at most half the kernels); and training steps
 * (dense and conv, a loss on log_softmax, SGD with momentum: updates in
 * place), three in a row. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "opt_harness.h"

#define EPS 1e-6

static Value *op1(Graph *g, Op op, Value *a) { return ir_op1(g, op, a, NOLOC); }
static Value *op2(Graph *g, Op op, Value *a, Value *b) { return ir_op2(g, op, a, b, NOLOC); }

static Value *param(Graph *g, const char *name, Type t) {
  return ir_param(g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
}

static Value *batch_input(Graph *g, const char *name, int rank, const int64_t *rest) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 5;
  Size d[IR_MAX_RANK] = {sz_var(N)};
  for (int i = 1; i < rank; i++)
    d[i] = sz_const(rest[i - 1]);
  return ir_input(g, name, ir_type(RT_F32, rank, d), NOLOC);
}

static Value *matmul_t(Graph *g, Value *a, Value *w) {
  Attr at = ir_attr();
  at.trans_b = true;
  return ir_op(g, OP_matmul, (Value *[]){a, w}, 2, &at, NOLOC);
}

static Value *conv(Graph *g, Value *x, Value *w, int pad, int groups) {
  Attr a = ir_attr();
  a.k[0] = (int)w->type.dim[2].t[0].coef;
  a.k[1] = (int)w->type.dim[3].t[0].coef;
  for (int i = 0; i < 4; i++)
    a.pad[i] = pad;
  a.groups = groups;
  return ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC);
}

static Value *reshape_to(Graph *g, Value *v, int rank, const Size *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  memcpy(a.shape, dims, sizeof(Size) * (size_t)rank);
  return ir_op(g, OP_reshape, &v, 1, &a, NOLOC);
}

static Value *per_channel(Graph *g, Value *v) {
  int64_t c = v->type.dim[0].t[0].coef;
  Attr a = ir_attr();
  a.rank = 3;
  a.shape[0] = sz_const(c);
  a.shape[1] = a.shape[2] = sz_const(1);
  return ir_op(g, OP_reshape, &v, 1, &a, NOLOC);
}

static Value *reduce(Graph *g, Op op, Value *x, uint32_t axes, bool keepdim) {
  Attr a = ir_attr();
  a.axes = axes;
  a.keepdim = keepdim;
  return ir_op(g, op, &x, 1, &a, NOLOC);
}

/* ---- building and comparing ------------------------------------------------- */

typedef void (*Build)(Graph *g);

typedef struct Pair {
  OModel ref, got;       /* -O1 and -O3 */
} Pair;

static void compile_pair(Pair *p, const char *name, Build build, int ref_opt) {
  memset(p, 0, sizeof *p);
  build(model_new(&p->ref.m, name));
  build(model_new(&p->got.m, name));
  p->ref.hide_weights = p->got.hide_weights = true;
  om_compile(&p->ref, ref_opt, 5);
  om_compile(&p->got, 3, 5);
  assert_int_equal(ir_verify(p->got.m.g), 0);
}

static void run_pair(Pair *p, int64_t batch) {
  OModel *o[2] = {&p->ref, &p->got};
  for (int i = 0; i < 2; i++) {
    om_inputs(o[i], 8);
    if (o[i]->m.g->lr)
      *(float *)model_ptr(&o[i]->m, o[i]->m.g->lr) = 0.05f;
    model_run(&o[i]->m, batch, 2);
  }
  om_compare_outputs(&p->ref, &p->got, EPS, p->got.m.g->name);
}

/* Fused and unfused, at two batches (the second with partial tiles). */
static Pair *both(const char *name, Build build) {
  Pair *p = malloc(sizeof *p);
  assert_non_null(p);
  compile_pair(p, name, build, 1);
  run_pair(p, 5);
  run_pair(p, 2);
  return p;
}

static void free_pair(Pair *p) {
  model_free(&p->ref.m);
  model_free(&p->got.m);
  free(p);
}

/* The node defining the output named name, or the n-th node with op. */
static const Node *out_node(const Graph *g, const char *name) {
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i]->name && !strcmp(g->outputs[i]->name, name))
      return g->outputs[i]->def;
  fail_msg("no output %s", name);
  return NULL;
}

static const Node *nth(const Graph *g, Op op, int k) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op && k-- == 0)
      return g->nodes[i];
  fail_msg("no %s number %d", op_name(op), k);
  return NULL;
}

/* The node with op that reads v. */
static const Node *reader(const Graph *g, const Value *v, Op op) {
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++)
      if (g->nodes[i]->op == op && g->nodes[i]->in[j] == v)
        return g->nodes[i];
  fail_msg("no %s reads %%%d", op_name(op), v->id);
  return NULL;
}

static void assert_same_group(const Node *a, const Node *b) {
  if (a->group < 0 || a->group != b->group)
    fail_msg("%s (@k%d) and %s (@k%d) should share a kernel", op_name(a->op), a->group,
             op_name(b->op), b->group);
}

static void assert_apart(const Node *a, const Node *b) {
  if (a->group >= 0 && a->group == b->group)
    fail_msg("%s and %s should not share a kernel (@k%d)", op_name(a->op), op_name(b->op), a->group);
}

/* The values only a group uses have no memory; every other has. */
static void assert_placed(const Value *v, bool placed) {
  if ((v->region >= 0) != placed)
    fail_msg("%%%d: %s memory (region %d)", v->id, placed ? "expected" : "did not expect", v->region);
}

/* ---- elementwise groups ------------------------------------------------------- */

/* exp, mul, relu, sub: one loop; nothing but the result in memory. */
static void build_chain(Graph *g) {
  Value *x = batch_input(g, "x", 3, (int64_t[]){5, 7});
  Value *a = op1(g, OP_exp, x);
  Value *b = op2(g, OP_mul, a, x);
  Value *c = op1(g, OP_relu, b);
  Value *d = op2(g, OP_sub, c, ir_scalar(g, RT_F32, 1.5));
  ir_output(g, d, "y");
}

static void test_chain(void **state) {
  (void)state;
  Pair *p = both("chain", build_chain);
  const Graph *g = p->got.m.g;
  const Node *y = out_node(g, "y");
  for (int i = 0; i < 3; i++)
    assert_same_group(nth(g, (Op[]){OP_exp, OP_mul, OP_relu}[i], 0), y);
  assert_int_equal(pass_count_kernels(g), 1);
  assert_int_equal(pass_count_kernels(p->ref.m.g), 4);
  assert_placed(nth(g, OP_exp, 0)->out[0], false);
  assert_placed(nth(g, OP_mul, 0)->out[0], false);
  assert_placed(nth(g, OP_relu, 0)->out[0], false);
  assert_true(g->region_bytes[REGION_SCRATCH] < p->ref.m.g->region_bytes[REGION_SCRATCH]);
  free_pair(p);
}

/* A per-channel value computed by the graph, [4, 1, 1], broadcast over
 * [N, 4, 3, 3]: fusing it would recompute it per element, so it is a
 * kernel of its own; the add and the tanh after it share one. */
static void build_broadcast(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){4, 3, 3});
  Value *r = per_channel(g, param(g, "scale", TY(RT_F32, 4)));
  Value *v = op2(g, OP_mul, r, r);
  Value *y = op1(g, OP_tanh, op2(g, OP_add, x, v));
  ir_output(g, y, "y");
}

static void test_broadcast_not_fused(void **state) {
  (void)state;
  Pair *p = both("broadcast", build_broadcast);
  const Graph *g = p->got.m.g;
  const Node *mul = nth(g, OP_mul, 0), *add = nth(g, OP_add, 0);
  assert_apart(mul, add);
  assert_same_group(add, out_node(g, "y"));
  assert_placed(mul->out[0], true);
  assert_placed(add->out[0], false);
  assert_int_equal(pass_count_kernels(g), 2);
  free_pair(p);
}

/* a = sigmoid(x) is an output and b = a * a feeds a matmul too: both are
 * computed in the loop and stored; c = b + a only where it is read. The
 * row sums of b are computed in the same loop (a reduction group). */
static void build_in_and_out(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){6});
  Value *a = op1(g, OP_sigmoid, x);
  Value *b = op2(g, OP_mul, a, a);
  Value *c = op2(g, OP_add, b, a);
  ir_output(g, a, "a");
  ir_output(g, op1(g, OP_neg, c), "c");
  ir_output(g, reduce(g, OP_sum, b, 2, false), "s");
  ir_output(g, matmul_t(g, b, param(g, "w", TY(RT_F32, 3, 6))), "m");
}

static void test_used_inside_and_outside(void **state) {
  (void)state;
  Pair *p = both("in_and_out", build_in_and_out);
  const Graph *g = p->got.m.g;
  const Node *a = out_node(g, "a"), *b = nth(g, OP_mul, 0), *c = nth(g, OP_add, 0);
  assert_same_group(a, b);
  assert_same_group(a, c);
  assert_same_group(a, out_node(g, "c"));
  assert_same_group(a, out_node(g, "s"));
  assert_apart(a, out_node(g, "m"));
  assert_placed(a->out[0], true);
  assert_placed(b->out[0], true);
  assert_placed(c->out[0], false);
  assert_int_equal(pass_count_kernels(g), 2);
  free_pair(p);
}

/* exp(p) and exp(q) come before their sum in the schedule: one group, the
 * three computed in one loop. */
static void build_siblings(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){9});
  Value *y = batch_input(g, "y", 2, (int64_t[]){9});
  Value *a = op1(g, OP_exp, x);
  Value *b = op1(g, OP_exp, y);
  ir_output(g, op2(g, OP_add, a, b), "z");
}

static void test_siblings(void **state) {
  (void)state;
  Pair *p = both("siblings", build_siblings);
  assert_int_equal(pass_count_kernels(p->got.m.g), 1);
  free_pair(p);
}

/* A = {a1 = neg(x), a2 = a1 + sum(b2)} and B = {b2 = exp(y), b1 = b2 +
 * sum(a1)}: each is convex, but A feeds B (through sum(a1)) and B feeds A
 * (through sum(b2)), so only one of them may become a group. The sums join
 * their producers: {a1, sum(a1), a2}, {b2, sum(b2)} and b1. */
static void build_cycle(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){4});
  Value *y = batch_input(g, "y", 2, (int64_t[]){4});
  Value *a1 = op1(g, OP_neg, x);
  Value *b2 = op1(g, OP_exp, y);
  Value *ra = reduce(g, OP_sum, a1, 2, true);
  Value *rb = reduce(g, OP_sum, b2, 2, true);
  ir_output(g, op2(g, OP_add, a1, rb), "a2");
  ir_output(g, op2(g, OP_add, b2, ra), "b1");
}

static void test_no_cycle(void **state) {
  (void)state;
  Pair *p = both("cycle", build_cycle);
  const Graph *g = p->got.m.g;
  const Node *a1 = nth(g, OP_neg, 0), *b2 = nth(g, OP_exp, 0);
  const Node *a2 = out_node(g, "a2"), *b1 = out_node(g, "b1");
  assert_true((a1->group >= 0 && a1->group == a2->group) != (b2->group >= 0 && b2->group == b1->group));
  assert_int_equal(pass_count_kernels(g), 3);
  free_pair(p);
}

/* ---- reductions with their producers --------------------------------------------- */

/* Batchnorm's statistics as a training graph computes them: m = mean(x)
 * over [0, 2, 3], d = x - m, v = mean(d * d); the output d * (v + eps)^-1/2.
 * The square is computed in the second mean's loop and never stored; d is
 * (the output's group reads it); the first mean reads x as it is. */
static void build_stats(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){3, 4, 5});
  Value *m = reduce(g, OP_mean, x, 13, true);
  Value *d = op2(g, OP_sub, x, m);
  Value *v = reduce(g, OP_mean, op2(g, OP_mul, d, d), 13, true);
  Value *r = op1(g, OP_rsqrt, op2(g, OP_add, v, ir_scalar(g, RT_F32, 1e-5)));
  ir_output(g, op2(g, OP_mul, d, r), "y");
  ir_output(g, v, "var");
}

static void test_reduction_producers(void **state) {
  (void)state;
  Pair *p = both("stats", build_stats);
  const Graph *g = p->got.m.g;
  const Node *sq = nth(g, OP_mul, 0), *var = out_node(g, "var");
  assert_same_group(sq, var);
  assert_same_group(nth(g, OP_sub, 0), var);
  assert_apart(nth(g, OP_mean, 0), var);
  assert_placed(sq->out[0], false);
  assert_placed(nth(g, OP_sub, 0)->out[0], true);
  assert_int_equal(pass_count_kernels(g), 4);
  free_pair(p);
}

/* ---- epilogues ------------------------------------------------------------------- */

/* relu(x W^T + b), 20 columns (a partial panel); the pre-activation is an
 * output too, so the epilogue stores it beside the GEMM's result. */
static void build_dense(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){16});
  Value *w = param(g, "fc.weight", TY(RT_F32, 20, 16));
  Value *b = param(g, "fc.bias", TY(RT_F32, 20));
  Value *h = op2(g, OP_add, matmul_t(g, x, w), b);
  ir_output(g, op1(g, OP_relu, h), "y");
  if (!strcmp(g->name, "dense_pre"))
    ir_output(g, h, "pre");
}

static void test_matmul_bias_relu(void **state) {
  (void)state;
  const char *names[] = {"dense", "dense_pre"};
  for (int i = 0; i < 2; i++) {
    Pair *p = both(names[i], build_dense);
    const Graph *g = p->got.m.g;
    const Node *mm = nth(g, OP_matmul, 0);
    assert_same_group(mm, nth(g, OP_add, 0));
    assert_same_group(mm, out_node(g, "y"));
    assert_int_equal(pass_count_kernels(g), 1);
    assert_placed(mm->out[0], false);
    assert_placed(nth(g, OP_add, 0)->out[0], i == 1);
    free_pair(p);
  }
}

/* dense on a sequence [N, 3, 16], as the frontend writes it: the GEMM runs
 * on [3N, 16] and its result is reshaped back to [N, 3, 20] before the
 * activation and the residual, which still join the GEMM's epilogue (the
 * simplify pass sinks the reshape below them). */
static void build_dense_seq(Graph *g) {
  Value *x = batch_input(g, "x", 3, (int64_t[]){3, 16});
  Value *r = batch_input(g, "r", 3, (int64_t[]){3, 20});
  Value *w = param(g, "fc.weight", TY(RT_F32, 20, 16));
  Value *b = param(g, "fc.bias", TY(RT_F32, 20));
  Size rows = sz_mul(x->type.dim[0], sz_const(3));
  Value *h = op2(g, OP_add, matmul_t(g, reshape_to(g, x, 2, (Size[]){rows, sz_const(16)}), w), b);
  h = reshape_to(g, h, 3, (Size[]){x->type.dim[0], sz_const(3), sz_const(20)});
  ir_output(g, op2(g, OP_add, op1(g, OP_relu, h), r), "y");
}

static void test_dense_sequence(void **state) {
  (void)state;
  Pair *p = both("dense_seq", build_dense_seq);
  const Graph *g = p->got.m.g;
  const Node *mm = nth(g, OP_matmul, 0);
  assert_same_group(mm, nth(g, OP_relu, 0));
  assert_same_group(mm, nth(g, OP_add, 1));
  assert_int_equal(pass_count_kernels(g), 1);
  free_pair(p);
}

/* A batched matmul [N, 3, 5] x [7, 5]^T with a bias per column and one per
 * row ([3, 1]) and a residual [N, 3, 7]: batch, row and column strides. */
static void build_batched(Graph *g) {
  Value *x = batch_input(g, "x", 3, (int64_t[]){3, 5});
  Value *r = batch_input(g, "r", 3, (int64_t[]){3, 7});
  Value *w = param(g, "w", TY(RT_F32, 7, 5));
  Value *bc = param(g, "bc", TY(RT_F32, 7)), *br = param(g, "br", TY(RT_F32, 3, 1));
  Value *h = op2(g, OP_add, op2(g, OP_mul, matmul_t(g, x, w), bc), br);
  ir_output(g, op1(g, OP_sigmoid, op2(g, OP_sub, h, r)), "y");
}

static void test_batched_matmul(void **state) {
  (void)state;
  Pair *p = both("batched", build_batched);
  assert_int_equal(pass_count_kernels(p->got.m.g), 1);
  free_pair(p);
}

/* relu(relu(conv(x) + b) + x), [N, 4, 6, 5]; groups = 2 in one variant. */
static void build_conv(Graph *g) {
  int groups = strstr(g->name, "grouped") ? 2 : 1;
  Value *x = batch_input(g, "x", 4, (int64_t[]){4, 6, 5});
  Value *w = param(g, "conv.weight", TY(RT_F32, 4, 4 / groups, 3, 3));
  Value *b = per_channel(g, param(g, "conv.bias", TY(RT_F32, 4)));
  if (strstr(g->name, "computed"))
    b = op1(g, OP_tanh, b);               /* a computed per-channel bias: loaded per row */
  Value *h = op1(g, OP_relu, op2(g, OP_add, conv(g, x, w, 1, groups), b));
  ir_output(g, op1(g, OP_relu, op2(g, OP_add, h, x)), "y");
}

static void test_conv_bias_relu_residual(void **state) {
  (void)state;
  const char *names[] = {"conv", "conv_grouped", "conv_computed_bias"};
  for (int i = 0; i < 3; i++) {
    Pair *p = both(names[i], build_conv);
    const Graph *g = p->got.m.g;
    const Node *cv = nth(g, OP_conv2d, 0);
    assert_same_group(cv, nth(g, OP_add, 0));
    assert_same_group(cv, nth(g, OP_add, 1));
    assert_same_group(cv, out_node(g, "y"));
    assert_int_equal(pass_count_kernels(g), i == 2 ? 2 : 1);
    if (i == 2)
      assert_apart(cv, nth(g, OP_tanh, 0));
    free_pair(p);
  }
}

/* A residual block as the layer library writes it: conv, batchnorm,
 * relu, conv, batchnorm, add, relu, then global average and dense. */
static Value *bnorm(Graph *g, Value *x, const char *prefix) {
  Type t = TY(RT_F32, 4);
  const char *what[4] = {"weight", "bias", "running_mean", "running_var"};
  Value *in[5] = {x};
  for (int i = 0; i < 4; i++) {
    char n[64];
    snprintf(n, sizeof n, "%s.%s", prefix, what[i]);
    in[i + 1] = i < 2 ? param(g, n, t) : ir_state(g, n, t, (Init){0}, NOLOC);
  }
  Attr a = ir_attr();
  a.axis = 1;
  return ir_op(g, OP_batchnorm, in, 5, &a, NOLOC);
}

static void build_block(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){4, 5, 5});
  Value *a = op1(g, OP_relu, bnorm(g, conv(g, x, param(g, "c1.weight", TY(RT_F32, 4, 4, 3, 3)), 1, 1), "bn1"));
  Value *b = bnorm(g, conv(g, a, param(g, "c2.weight", TY(RT_F32, 4, 4, 3, 3)), 1, 1), "bn2");
  Value *y = op1(g, OP_relu, op2(g, OP_add, x, b));
  Value *f = reduce(g, OP_mean, y, 12, false);
  Value *logits = op2(g, OP_add, matmul_t(g, f, param(g, "fc.weight", TY(RT_F32, 3, 4))),
                      param(g, "fc.bias", TY(RT_F32, 3)));
  ir_output(g, logits, "logits");
}

static void test_block_kernels(void **state) {
  (void)state;
  Pair *p = malloc(sizeof *p);
  assert_non_null(p);
  compile_pair(p, "block", build_block, 0);
  run_pair(p, 5);
  int k0 = pass_count_kernels(p->ref.m.g), k3 = pass_count_kernels(p->got.m.g);
  printf("residual block: %d kernels at -O0, %d at -O3\n", k0, k3);
  assert_true(2 * k3 <= k0);
  free_pair(p);
}

/* ---- training ---------------------------------------------------------------------- */

/* loss = sum(y * target) (of log_softmax(y) for a [N, classes] y) with its gradients and an SGD step with momentum
 * (the updates write over the parameters and buffers in place). */
static void train_setup(Graph *g, Value *y) {
  Value *t = ir_input(g, "target", y->type, NOLOC);
  ir_output(g, y, "y");
  if (y->type.rank == 2) {            /* a cross-entropy: the gradient needs the forward */
    Attr a = ir_attr();
    a.axis = 1;
    y = ir_op(g, OP_log_softmax, &y, 1, &a, NOLOC);
  }
  g->loss = reduce(g, OP_sum, op2(g, OP_mul, y, t), (1u << y->type.rank) - 1, false);
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = g->params[i]->role == V_PARAM;
  g->lr = ir_input(g, "lr", ir_type_const(RT_F32, 0, NULL), NOLOC);
  OptSpec *o = rt_arena_alloc(g->arena, sizeof *o);
  memset(o, 0, sizeof *o);
  o->kind = OPT_SGD;
  o->momentum = 0.9;
  g->opt = o;
}

static void build_train_dense(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){8});
  Value *h = op2(g, OP_add, matmul_t(g, x, param(g, "l1.weight", TY(RT_F32, 6, 8))),
                 param(g, "l1.bias", TY(RT_F32, 6)));
  h = op1(g, OP_tanh, h);
  Value *y = op2(g, OP_add, matmul_t(g, h, param(g, "l2.weight", TY(RT_F32, 3, 6))),
                 param(g, "l2.bias", TY(RT_F32, 3)));
  train_setup(g, y);
}

static void build_train_conv(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){2, 5, 4});
  Value *w = param(g, "conv.weight", TY(RT_F32, 3, 2, 3, 3));
  Value *b = per_channel(g, param(g, "conv.bias", TY(RT_F32, 3)));
  Value *h = op1(g, OP_relu, op2(g, OP_add, conv(g, x, w, 1, 1), b));
  train_setup(g, reduce(g, OP_mean, h, 12, false));
}

/* Gradients and the parameters after the step, by name. */
static void compare_training(Pair *p) {
  const Graph *g = p->got.m.g;
  for (int i = 0; i < g->nparams; i++) {
    Value *v = g->params[i], *u = ir_find_param(p->ref.m.g, v->name);
    char what[160];
    assert_non_null(u);
    snprintf(what, sizeof what, "%s after the step", v->name);
    check_ten(what, model_get(&p->got.m, v), model_get(&p->ref.m, u), EPS);
    if (v->role != V_PARAM)
      continue;
    snprintf(what, sizeof what, "d loss / d %s", v->name);
    check_ten(what, model_get(&p->got.m, v->grad), model_get(&p->ref.m, u->grad), EPS);
  }
}

static void test_training(void **state) {
  (void)state;
  Build builds[] = {build_train_dense, build_train_conv};
  const char *names[] = {"train_dense", "train_conv"};
  for (int i = 0; i < 2; i++) {
    Pair *p = malloc(sizeof *p);
    assert_non_null(p);
    compile_pair(p, names[i], builds[i], 1);
    for (int step = 0; step < 3; step++) {  /* the momentum buffers fill up */
      run_pair(p, 5);
      compare_training(p);
    }
    const Graph *g = p->got.m.g;
    const Node *head = reader(g, g->inputs[0], i == 0 ? OP_matmul : OP_conv2d);
    assert_same_group(head, reader(g, head->out[0], OP_add));
    assert_true(pass_count_kernels(g) < pass_count_kernels(p->ref.m.g));
    printf("%s: %d kernels, %lld scratch bytes without fusion; %d, %lld with\n", names[i],
           pass_count_kernels(p->ref.m.g), (long long)p->ref.m.g->region_bytes[REGION_SCRATCH],
           pass_count_kernels(g), (long long)g->region_bytes[REGION_SCRATCH]);
    free_pair(p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chain),
      cmocka_unit_test(test_broadcast_not_fused),
      cmocka_unit_test(test_used_inside_and_outside),
      cmocka_unit_test(test_siblings),
      cmocka_unit_test(test_no_cycle),
      cmocka_unit_test(test_reduction_producers),
      cmocka_unit_test(test_matmul_bias_relu), cmocka_unit_test(test_dense_sequence),
      cmocka_unit_test(test_batched_matmul),
      cmocka_unit_test(test_conv_bias_relu_residual),
      cmocka_unit_test(test_block_kernels),
      cmocka_unit_test(test_training),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

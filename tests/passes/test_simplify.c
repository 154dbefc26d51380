/* The simplify pass: each rewrite on a small hand-built graph, checked on
 * the graph it leaves (its text, or its nodes and constants) and on the
 * numbers: the same graph compiled at -O0 (no simplify) and at -O1 through
 * the JIT must give the same outputs. Then what it must not touch (outputs
 * by inputs, values that update state, gradients), a training step at -O0
 * against -O3, the verifier after every pass, and which passes each -O
 * level runs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "opt_harness.h"

typedef void (*Build)(Graph *g);

static Value *mul(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_mul, a, b, NOLOC); }
static Value *add(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_add, a, b, NOLOC); }
static Value *sub(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_sub, a, b, NOLOC); }
static Value *dvd(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_div, a, b, NOLOC); }
static Value *un(Graph *g, Op op, Value *a) { return ir_op1(g, op, a, NOLOC); }
static Value *k32(Graph *g, double v) { return ir_scalar(g, RT_F32, v); }

static Value *transpose(Graph *g, Value *x, const int *perm) {
  Attr a = ir_attr();
  memcpy(a.perm, perm, sizeof(int) * x->type.rank);
  return ir_op(g, OP_transpose, &x, 1, &a, NOLOC);
}

static Value *reshape(Graph *g, Value *x, int rank, const int64_t *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  for (int i = 0; i < rank; i++)
    a.shape[i] = sz_const(dims[i]);
  return ir_op(g, OP_reshape, &x, 1, &a, NOLOC);
}

static Value *matmul(Graph *g, Value *a, Value *b, bool ta, bool tb) {
  Attr at = ir_attr();
  at.trans_a = ta;
  at.trans_b = tb;
  return ir_op(g, OP_matmul, (Value *[]){a, b}, 2, &at, NOLOC);
}

static Value *reduce(Graph *g, Op op, Value *x, uint32_t axes, bool keepdim) {
  Attr a = ir_attr();
  a.axes = axes;
  a.keepdim = keepdim;
  return ir_op(g, op, &x, 1, &a, NOLOC);
}

/* Builds the graph twice, compiles it at -O0 and at -O`opt`, runs both on
 * the same inputs and weights, and compares the outputs; got keeps the
 * optimized model for the caller to look at (model_free both). */
static void both(const char *name, Build build, int opt, OModel *ref, OModel *got) {
  memset(ref, 0, sizeof *ref);
  memset(got, 0, sizeof *got);
  build(model_new(&ref->m, name));
  build(model_new(&got->m, name));
  om_compile(ref, 0, 11);
  om_compile(got, opt, 11);
  om_inputs(ref, 5);
  om_inputs(got, 5);
  int64_t batch = ref->m.g->batch_var >= 0 ? ref->m.g->max_batch : 0;
  model_run(&ref->m, batch, 2);
  model_run(&got->m, batch, 2);
  om_compare_outputs(ref, got, 1e-6, name);
  assert_int_equal(ir_verify(got->m.g), 0);
}

static void free_both(OModel *a, OModel *b) {
  model_free(&a->m);
  model_free(&b->m);
}

static void assert_printed(const Graph *g, const char *want) {
  char *got = om_printed(g);
  if (strcmp(got, want)) {
    fprintf(stderr, "got:\n%s\nwant:\n%s\n", got, want);
    free(got);
    fail_msg("the graph after simplify differs");
  }
  free(got);
}

/* ---- constant folding ---------------------------------------------------- */

/* y = x + (c * 2 - exp(0)) + mean(transpose(m), axis 1): two adds of constants. */
static void build_fold(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 2, 3), NOLOC);
  Value *c = ir_const(g, TY(RT_F32, 3), (float[]){1, 2, 3});
  Value *m = ir_const(g, TY(RT_F32, 3, 2), (float[]){1, 2, 3, 4, 5, 6});
  Value *k = sub(g, mul(g, c, k32(g, 2)), un(g, OP_exp, k32(g, 0)));     /* 1 3 5 */
  Value *mt = reduce(g, OP_mean, transpose(g, m, (int[]){1, 0}), 2, true);  /* [2, 1] */
  ir_output(g, add(g, add(g, x, k), mt), "y");
}

/* A reshape that lowers the rank folds on a constant (it once read strides
 * for the input's rank into an array of the output's). */
static void build_fold_flatten(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 6), NOLOC);
  Value *c = ir_const(g, TY(RT_F32, 2, 3), (float[]){1, 2, 3, 4, 5, 6});
  ir_output(g, add(g, x, reshape(g, c, 1, (int64_t[]){6})), "y");
}

static void test_fold_flatten(void **state) {
  OModel ref, got;
  both("fold_flatten", build_fold_flatten, 1, &ref, &got);
  assert_int_equal(got.m.g->nnodes, 1);
  free_both(&ref, &got);
}

static void test_constant_folding(void **state) {
  OModel ref, got;
  both("fold", build_fold, 1, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(g->nnodes, 2);              /* x + k, then + mt: reassociating is not ours */
  for (int i = 0; i < g->nnodes; i++) {
    assert_int_equal(g->nodes[i]->op, OP_add);
    assert_int_equal(g->nodes[i]->in[1]->role, V_CONST);
  }
  const float *k = g->nodes[0]->in[1]->data, *mt = g->nodes[1]->in[1]->data;
  /* transpose(m) is [[1, 3, 5], [2, 4, 6]]; its mean over axis 1: 3 and 4 */
  assert_true(k[0] == 1 && k[1] == 3 && k[2] == 5);
  assert_int_equal(g->nodes[1]->in[1]->type.rank, 2);
  assert_true(mt[0] == 3 && mt[1] == 4);
  free_both(&ref, &got);
}

/* Folding follows codegen: integer division floors, and a division by
 * zero gives 0 (as the generated code does), NaN passes through relu,
 * casts of NaN to integers and broadcasts that would grow are left. */
static void test_fold_semantics(void **state) {
  Model m;
  Graph *g = model_new(&m, "fold_ints");
  Attr to_i32 = ir_attr();
  to_i32.dtype = RT_I32;
  Value *f = ir_const(g, TY(RT_F32, 4), (float[]){1.7f, -2.5f, 0.2f, NAN});
  Value *ints = ir_op(g, OP_cast, &f, 1, &to_i32, NOLOC);
  Value *i4 = ir_const(g, TY(RT_I32, 4), (int32_t[]){7, -7, 9, 1});
  Value *x = ir_input(g, "x", TY(RT_I32, 4), NOLOC);
  Value *d = dvd(g, x, ir_const(g, TY(RT_I32, 4), (int32_t[]){2, 2, 0, 1}));
  Value *q = dvd(g, i4, ir_const(g, TY(RT_I32, 4), (int32_t[]){2, 2, 0, -1}));
  Value *r = un(g, OP_relu, f);
  Attr big = ir_attr();
  big.rank = 2;
  big.shape[0] = big.shape[1] = sz_const(300);
  Value *e = ir_op(g, OP_expand, (Value *[]){k32(g, 3)}, 1, &big, NOLOC);
  Value *outs[] = {ints, d, q, r, e};
  for (int i = 0; i < 5; i++)
    ir_output(g, un(g, OP_abs, outs[i]), NULL);
  PassCtx cx = {.opt = 1, .verify = true};
  PassStats st = {0};
  /* ints: the NaN element cannot convert, so the cast stays */
  assert_true(pass_simplify(g, &cx, &st));
  assert_int_equal(ir_verify(g), 0);
  assert_int_equal(om_count(g, OP_cast), 1);
  assert_int_equal(om_count(g, OP_div), 1);     /* of an input: left alone */
  assert_int_equal(om_count(g, OP_expand), 1);  /* 90000 elements from one: left alone */
  assert_int_equal(om_count(g, OP_relu), 0);
  const Value *qa = g->outputs[2]->def->in[0], *ra = g->outputs[3]->def->in[0];
  assert_int_equal(qa->role, V_CONST);      /* the outputs (abs) stay nodes */
  const int32_t *qd = qa->data;
  assert_true(qd[0] == 3 && qd[1] == -4 && qd[2] == 0 && qd[3] == -1);  /* floor; by 0 is 0 */
  const float *rd = ra->data;
  assert_true(rd[0] == 1.7f && rd[1] == 0 && rd[2] == 0.2f && isnan(rd[3]));
  model_free(&m);
}

/* ---- identities ------------------------------------------------------------ */

static void build_identities(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 2, 3), NOLOC);
  Value *h = sub(g, add(g, mul(g, x, k32(g, 1)), k32(g, 0)), k32(g, 0));
  h = dvd(g, mul(g, k32(g, 1), add(g, k32(g, 0), h)), k32(g, 1));
  h = un(g, OP_neg, un(g, OP_neg, h));
  h = transpose(g, transpose(g, h, (int[]){1, 0}), (int[]){1, 0});
  h = reshape(g, h, 2, (int64_t[]){2, 3});
  ir_output(g, un(g, OP_relu, h), "y");
}

static void test_identities(void **state) {
  OModel ref, got;
  both("ident", build_identities, 1, &ref, &got);
  assert_printed(got.m.g, "graph ident(%x: f32[2, 3]) -> (%y)\n"
                          "  %y: f32[2, 3] = relu(%x)\n");
  free_both(&ref, &got);
}

/* Nothing that changes a value: x*0 is NaN for NaN x, x+1 is not x, and a
 * multiplication by ones that broadcasts x to a larger shape is not x. */
static void build_not_identities(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 3), NOLOC);
  Value *ones = ir_const(g, TY(RT_F32, 2, 3), (float[]){1, 1, 1, 1, 1, 1});
  ir_output(g, mul(g, x, k32(g, 0)), "zero");
  ir_output(g, add(g, x, k32(g, 1)), "plus1");
  ir_output(g, mul(g, x, ones), "wide");
  ir_output(g, sub(g, k32(g, 0), x), "negated");
}

static void test_not_identities(void **state) {
  OModel ref, got;
  both("not_ident", build_not_identities, 1, &ref, &got);
  assert_int_equal(got.m.g->nnodes, 4);
  free_both(&ref, &got);
}

/* Transposes compose, cancel, and fold into matmul. */
static void build_transposes(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 2, 3, 4), NOLOC);
  Value *a = ir_input(g, "a", TY(RT_F32, 5, 3), NOLOC);
  Value *b = ir_input(g, "b", TY(RT_F32, 4, 5), NOLOC);
  Value *t = transpose(g, transpose(g, x, (int[]){1, 0, 2}), (int[]){1, 2, 0});  /* = (0, 2, 1) */
  ir_output(g, t, "t");
  ir_output(g, un(g, OP_relu, transpose(g, transpose(g, x, (int[]){2, 0, 1}), (int[]){1, 2, 0})), "same");
  /* (a^T)[3, 5] @ (b^T)[5, 4] */
  ir_output(g, matmul(g, transpose(g, a, (int[]){1, 0}), transpose(g, b, (int[]){1, 0}), false, false), "mm");
  Value *bx = transpose(g, x, (int[]){0, 2, 1});       /* [2, 4, 3] @ a^T... batched, trans_b */
  ir_output(g, matmul(g, bx, a, false, true), "bmm");
}

static void test_transposes(void **state) {
  OModel ref, got;
  both("transposes", build_transposes, 1, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_transpose), 1);
  Node *t = g->outputs[0]->def;
  assert_int_equal(t->op, OP_transpose);
  assert_ptr_equal(t->in[0], g->inputs[0]);
  assert_true(t->attr.perm[0] == 0 && t->attr.perm[1] == 2 && t->attr.perm[2] == 1);
  assert_ptr_equal(g->outputs[1]->def->in[0], g->inputs[0]);   /* relu(x) */
  Node *mm = g->outputs[2]->def, *bmm = g->outputs[3]->def;
  assert_true(mm->attr.trans_a && mm->attr.trans_b);
  assert_ptr_equal(mm->in[0], g->inputs[1]);
  assert_true(bmm->attr.trans_a && bmm->attr.trans_b);
  assert_ptr_equal(bmm->in[0], g->inputs[0]);
  free_both(&ref, &got);
}

static void build_reshapes(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 4, 6), NOLOC);
  Value *r = reshape(g, reshape(g, reshape(g, x, 1, (int64_t[]){24}), 3, (int64_t[]){2, 3, 4}),
                     2, (int64_t[]){8, 3});
  ir_output(g, un(g, OP_tanh, r), "y");
  ir_output(g, un(g, OP_sigmoid, reshape(g, x, 2, (int64_t[]){4, 6})), "z");
}

static void test_reshapes(void **state) {
  OModel ref, got;
  both("reshapes", build_reshapes, 1, &ref, &got);
  assert_printed(got.m.g, "graph reshapes(%x: f32[4, 6]) -> (%y, %z)\n"
                          "  %2: f32[4, 6] = tanh(%x)\n"
                          "  %y: f32[8, 3] = reshape(%2)\n"
                          "  %z: f32[4, 6] = sigmoid(%x)\n");
  free_both(&ref, &got);
}

/* A dense layer on [2, 3, 4] as the frontend writes it: the GEMM's [6, 5]
 * reshaped to [2, 3, 5], then a bias, relu, a residual and a per-row scale.
 * The reshape sinks below the ops that read each operand at the same
 * element in [6, 5] (the bias along the last axis both shapes share, the
 * residual reshaped too) and stops at the per-row scale [2, 3, 1], which
 * would read elsewhere. Beside it, t + reshape(u) of equal ranks keeps its
 * reshape: sinking it would reshape t, and the next sweep could sink back. */
static void build_sink(Graph *g) {
  Init init = {.kind = INIT_UNIFORM, .a = -0.5, .b = 0.5};
  Value *x = ir_input(g, "x", TY(RT_F32, 2, 3, 4), NOLOC);
  Value *res = ir_input(g, "r", TY(RT_F32, 2, 3, 5), NOLOC);
  Value *scale = ir_input(g, "s", TY(RT_F32, 2, 3, 1), NOLOC);
  Value *w = ir_param(g, "w", TY(RT_F32, 5, 4), init, NOLOC);
  Value *b = ir_param(g, "b", TY(RT_F32, 5), init, NOLOC);
  Value *y = reshape(g, matmul(g, reshape(g, x, 2, (int64_t[]){6, 4}), w, false, true), 3,
                     (int64_t[]){2, 3, 5});
  y = add(g, un(g, OP_relu, add(g, y, b)), res);
  ir_output(g, mul(g, y, scale), "y");
  Value *t = ir_input(g, "t", TY(RT_F32, 4, 6), NOLOC);
  ir_output(g, add(g, t, reshape(g, ir_input(g, "u", TY(RT_F32, 6, 4), NOLOC), 2, (int64_t[]){4, 6})), "z");
}

static void test_sink_reshape(void **state) {
  OModel ref, got;
  both("sink", build_sink, 1, &ref, &got);
  assert_printed(got.m.g,
                 "graph sink(%x: f32[2, 3, 4], %r: f32[2, 3, 5], %s: f32[2, 3, 1], %t: f32[4, 6], "
                 "%u: f32[6, 4]) -> (%y, %z)\n"
                 "  param w: f32[5, 4] = uniform\n"
                 "  param b: f32[5] = uniform\n"
                 "  %5: f32[6, 4] = reshape(%x)\n"
                 "  %6: f32[6, 5] = matmul(%5, %w) trans_b\n"
                 "  %12: f32[6, 5] = add(%6, %b)\n"
                 "  %13: f32[6, 5] = relu(%12)\n"
                 "  %14: f32[6, 5] = reshape(%r)\n"
                 "  %15: f32[6, 5] = add(%13, %14)\n"
                 "  %16: f32[2, 3, 5] = reshape(%15)\n"
                 "  %y: f32[2, 3, 5] = mul(%16, %s)\n"
                 "  %10: f32[4, 6] = reshape(%u)\n"
                 "  %z: f32[4, 6] = add(%t, %10)\n");
  free_both(&ref, &got);
}

/* ---- sums of padded pieces ------------------------------------------------------ */

/* x placed at `start` in zeros of [rows, cols], unit steps. */
static Value *pad_into(Graph *g, Value *x, int64_t rows, int64_t cols, int64_t r0, int64_t c0) {
  Attr a = ir_attr();
  a.rank = 2;
  a.shape[0] = sz_const(rows);
  a.shape[1] = sz_const(cols);
  a.start[0] = r0;
  a.start[1] = c0;
  a.step[0] = a.step[1] = 1;
  return ir_op(g, OP_unslice, &x, 1, &a, NOLOC);
}

/* y: three pieces that tile [4, 12] along the columns, added out of order
 * (the gradient of splitting z into gates); t: two pieces along the rows;
 * gap: two pieces that leave columns 3..5 zero; wide: a piece padded along
 * both axes. Only y and t are concats. */
static void build_pieces(Graph *g) {
  Value *a = ir_input(g, "a", TY(RT_F32, 4, 3), NOLOC);
  Value *b = ir_input(g, "b", TY(RT_F32, 4, 3), NOLOC);
  Value *c = ir_input(g, "c", TY(RT_F32, 4, 6), NOLOC);
  Value *y = add(g, pad_into(g, c, 4, 12, 0, 6), pad_into(g, un(g, OP_tanh, b), 4, 12, 0, 3));
  ir_output(g, add(g, y, pad_into(g, a, 4, 12, 0, 0)), "y");
  ir_output(g, add(g, pad_into(g, a, 8, 3, 4, 0), pad_into(g, b, 8, 3, 0, 0)), "t");
  ir_output(g, add(g, pad_into(g, a, 4, 12, 0, 0), pad_into(g, c, 4, 12, 0, 6)), "gap");
  ir_output(g, add(g, pad_into(g, a, 5, 6, 1, 0), pad_into(g, b, 5, 6, 0, 3)), "wide");
}

static void test_concat_pieces(void **state) {
  OModel ref, got;
  both("pieces", build_pieces, 1, &ref, &got);
  Graph *g = got.m.g;
  Node *y = g->outputs[0]->def, *t = g->outputs[1]->def;
  assert_int_equal(y->op, OP_concat);
  assert_int_equal(y->attr.axis, 1);
  assert_int_equal(y->nin, 3);
  assert_ptr_equal(y->in[0], g->inputs[0]);
  assert_int_equal(y->in[1]->def->op, OP_tanh);
  assert_ptr_equal(y->in[2], g->inputs[2]);
  assert_int_equal(t->op, OP_concat);
  assert_int_equal(t->attr.axis, 0);
  assert_ptr_equal(t->in[0], g->inputs[1]);
  assert_ptr_equal(t->in[1], g->inputs[0]);
  assert_int_equal(g->outputs[2]->def->op, OP_add);
  assert_int_equal(g->outputs[3]->def->op, OP_add);
  assert_int_equal(om_count(g, OP_unslice), 4);
  free_both(&ref, &got);
}

/* ---- common subexpressions and dead code ----------------------------------------- */

static void build_cse(Graph *g) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 3;
  Value *x = ir_input(g, "x", ir_type(RT_F32, 2, (Size[]){sz_var(N), sz_const(5)}), NOLOC);
  Value *w = ir_param(g, "w", TY(RT_F32, 4, 5), (Init){.kind = INIT_ZEROS}, NOLOC);
  Value *a = matmul(g, un(g, OP_relu, x), w, false, true);
  Value *b = matmul(g, un(g, OP_relu, x), w, false, true);
  Value *c = add(g, mul(g, a, k32(g, 2)), mul(g, b, k32(g, 2)));  /* two 2s: one constant */
  Value *t1 = transpose(g, a, (int[]){1, 0}), *t2 = transpose(g, b, (int[]){1, 0});
  Value *s1 = reduce(g, OP_sum, t1, 1, false), *s2 = reduce(g, OP_sum, t2, 1, true);
  ir_output(g, c, "c");
  ir_output(g, s1, "s1");
  ir_output(g, s2, "s2");    /* keepdim differs: not the same */
}

static void test_cse(void **state) {
  OModel ref, got;
  both("cse", build_cse, 1, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_relu), 1);
  assert_int_equal(om_count(g, OP_matmul), 1);
  assert_int_equal(om_count(g, OP_mul), 1);
  assert_int_equal(om_count(g, OP_transpose), 1);
  assert_int_equal(om_count(g, OP_sum), 2);
  Node *c = g->outputs[0]->def;
  assert_ptr_equal(c->in[0], c->in[1]);
  free_both(&ref, &got);
}

/* Dead nodes go; an inference graph drops the parameters it no longer
 * uses, a training graph keeps them; inputs stay whatever. */
static void test_dead_code(void **state) {
  for (int training = 0; training < 2; training++) {
    Model m;
    Graph *g = model_new(&m, "dce");
    Value *x = ir_input(g, "x", TY(RT_F32, 4), NOLOC);
    ir_input(g, "unused", TY(RT_F32, 4), NOLOC);
    Value *p = ir_param(g, "p", TY(RT_F32, 4), (Init){.kind = INIT_ZEROS}, NOLOC);
    Value *q = ir_param(g, "q", TY(RT_F32, 4), (Init){.kind = INIT_ZEROS}, NOLOC);
    un(g, OP_exp, mul(g, x, q));                /* dead */
    Value *y = mul(g, x, p);
    ir_output(g, y, "y");
    if (training) {
      p->wrt = q->wrt = true;
      g->loss = reduce(g, OP_sum, y, 1, false);
    }
    PassCtx cx = {.opt = 3, .verify = true, .threads = 1};
    assert_int_equal(pass_run_pipeline(g, &cx), 0);
    assert_int_equal(g->ninputs, 2);
    assert_int_equal(g->nparams, training ? 2 : 1);
    assert_int_equal(om_count(g, OP_exp), 0);
    if (training) {
      assert_non_null(q->grad);               /* zeros: the loss ignores q */
      assert_ptr_equal(g->vals[q->grad->id], q->grad);
    }
    for (int i = 0; i < g->nvals; i++)
      assert_int_equal(g->vals[i]->id, i);
    model_free(&m);
  }
}

/* ---- what it must not touch ---------------------------------------------------- */

/* An output stays a node output unless another temporary can take it;
 * a value that updates state keeps its node. */
static void build_pinned(Graph *g) {
  Value *x = ir_input(g, "x", TY(RT_F32, 4), NOLOC);
  Value *s = ir_state(g, "s", TY(RT_F32, 4), (Init){.kind = INIT_ZEROS}, NOLOC);
  ir_output(g, mul(g, x, k32(g, 1)), "same_as_x");
  ir_output(g, mul(g, un(g, OP_relu, x), k32(g, 1)), "r");
  Value *u = add(g, mul(g, s, k32(g, 1)), k32(g, 0));
  u->updates = s;
  ir_output(g, add(g, x, s), "xs");
}

static void test_pinned(void **state) {
  OModel ref, got;
  both("pinned", build_pinned, 1, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(g->outputs[0]->def->op, OP_mul);     /* an input cannot be the output */
  assert_int_equal(g->outputs[1]->def->op, OP_relu);    /* the relu's value took the name */
  assert_string_equal(g->outputs[1]->name, "r");
  int updates = 0;
  for (int i = 0; i < g->nvals; i++)
    if (g->vals[i]->updates) {
      updates++;
      assert_non_null(g->vals[i]->def);
      assert_string_equal(g->vals[i]->updates->name, "s");
    }
  assert_int_equal(updates, 1);
  free_both(&ref, &got);
}

/* A training step with SGD and momentum, full of duplicates and identities:
 * the loss, every gradient and every updated parameter agree between -O0
 * and -O3, and every gradient is still a node's own output. */
static void build_step(Graph *g) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 4;
  Value *x = ir_input(g, "x", ir_type(RT_F32, 2, (Size[]){sz_var(N), sz_const(6)}), NOLOC);
  Value *r = ir_input(g, "r", ir_type(RT_F32, 2, (Size[]){sz_var(N), sz_const(3)}), NOLOC);
  g->lr = ir_input(g, "lr", ir_type_const(RT_F32, 0, NULL), NOLOC);
  Value *w1 = ir_param(g, "w1", TY(RT_F32, 5, 6), (Init){0}, NOLOC);
  Value *b1 = ir_param(g, "b1", TY(RT_F32, 5), (Init){0}, NOLOC);
  Value *w2 = ir_param(g, "w2", TY(RT_F32, 5, 3), (Init){0}, NOLOC);
  w1->wrt = b1->wrt = w2->wrt = true;
  Value *h = add(g, matmul(g, x, w1, false, true), mul(g, b1, k32(g, 1)));
  Value *h2 = add(g, matmul(g, x, w1, false, true), b1);      /* the same again */
  h = un(g, OP_tanh, add(g, h, k32(g, 0)));
  h2 = un(g, OP_tanh, h2);
  Value *y = matmul(g, add(g, h, h2), transpose(g, transpose(g, w2, (int[]){1, 0}), (int[]){1, 0}),
                    false, false);
  g->loss = reduce(g, OP_sum, mul(g, y, r), 3, false);
  ir_output(g, g->loss, "loss");
  OptSpec *o = rt_arena_alloc(g->arena, sizeof *o);
  o->kind = OPT_SGD;
  o->momentum = 0.9;
  g->opt = o;
}

static void test_training_step(void **state) {
  OModel ref, got;
  memset(&ref, 0, sizeof ref);
  memset(&got, 0, sizeof got);
  build_step(model_new(&ref.m, "step"));
  build_step(model_new(&got.m, "step"));
  om_compile(&ref, 0, 3);
  om_compile(&got, 3, 3);
  OModel *both_m[] = {&ref, &got};
  for (int k = 0; k < 2; k++) {
    om_inputs(both_m[k], 9);
    *(float *)model_ptr(&both_m[k]->m, both_m[k]->m.g->lr) = 0.05f;
    model_run(&both_m[k]->m, 3, 2);
  }
  om_compare_outputs(&ref, &got, 1e-6, "step");
  Graph *g = got.m.g;
  assert_true(g->nnodes < ref.m.g->nnodes);
  for (int i = 0; i < g->nparams; i++) {
    Value *p = g->params[i], *q = ir_find_param(ref.m.g, p->name);
    assert_non_null(q);
    if (p->role != V_PARAM)
      continue;
    assert_non_null(p->grad->def);
    assert_ptr_equal(g->vals[p->grad->id], p->grad);
    char what[64];
    snprintf(what, sizeof what, "d loss / d %s", p->name);
    check_ten(what, model_get(&got.m, p->grad), model_get(&ref.m, q->grad), 1e-6);
    snprintf(what, sizeof what, "%s after the step", p->name);
    check_ten(what, model_get(&got.m, p), model_get(&ref.m, q), 1e-6);
  }
  free_both(&ref, &got);
}

/* A second run finds nothing to do; the statistics count the scratch. */
static void test_fixed_point(void **state) {
  Model m;
  Graph *g = model_new(&m, "fixed");
  build_cse(g);
  PassCtx cx = {.opt = 1, .verify = true};
  PassStats st = {0};
  assert_true(pass_simplify(g, &cx, &st));
  assert_true(st.bytes_before > st.bytes_after && st.bytes_after > 0);
  assert_int_equal(st.bytes_after, pass_temp_bytes(g));
  char *once = om_printed(g);
  assert_false(pass_simplify(g, &cx, &st));
  char *twice = om_printed(g);
  assert_string_equal(once, twice);
  free(once);
  free(twice);
  model_free(&m);
}

/* How many times pass `name` ran, from --stats --json lines. */
static int runs(const char *stats, const char *name) {
  char key[64];
  int k = 0;
  snprintf(key, sizeof key, "\"pass\": \"%s\"", name);
  for (const char *q = stats; (q = strstr(q, key)); q++)
    k++;
  return k;
}

/* -O0 runs what correctness needs, -O1 adds simplify (twice: the forward
 * graph, then the whole step), -O2 fold-bn (inference only), -O3
 * everything; --stats says which ran. (Other passes join at their levels.) */
static void test_levels(void **state) {
  for (int training = 0; training < 2; training++)
    for (int opt = 0; opt <= 3; opt++) {
      Model m;
      Graph *g = model_new(&m, "levels");
      Value *x = ir_input(g, "x", TY(RT_F32, 4), NOLOC);
      Value *p = ir_param(g, "p", TY(RT_F32, 4), (Init){0}, NOLOC);
      ir_output(g, mul(g, x, p), "y");
      if (training) {
        p->wrt = true;
        g->loss = reduce(g, OP_sum, g->outputs[0], 1, false);
      }
      char *buf = NULL;
      size_t len = 0;
      FILE *f = open_memstream(&buf, &len);
      PassCtx cx = {.opt = opt, .verify = true, .stats_out = f, .stats_json = true};
      assert_int_equal(pass_run_pipeline(g, &cx), 0);
      fclose(f);
      assert_int_equal(runs(buf, "autodiff"), 1);
      assert_int_equal(runs(buf, "optimizer"), 1);
      assert_int_equal(runs(buf, "memplan"), 1);
      assert_int_equal(runs(buf, "simplify"), opt >= 1 ? 2 : 0);
      assert_int_equal(runs(buf, "fold-bn"), opt >= 2 && !training);
      assert_true(strstr(buf, "\"pass\": \"memplan\"") > strstr(buf, "\"pass\": \"autodiff\""));
      free(buf);
      model_free(&m);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant_folding), cmocka_unit_test(test_fold_flatten), cmocka_unit_test(test_fold_semantics),
      cmocka_unit_test(test_identities),       cmocka_unit_test(test_not_identities),
      cmocka_unit_test(test_transposes),       cmocka_unit_test(test_reshapes),       cmocka_unit_test(test_sink_reshape),
      cmocka_unit_test(test_concat_pieces),
      cmocka_unit_test(test_cse),              cmocka_unit_test(test_dead_code),
      cmocka_unit_test(test_pinned),           cmocka_unit_test(test_training_step),
      cmocka_unit_test(test_fixed_point),      cmocka_unit_test(test_levels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

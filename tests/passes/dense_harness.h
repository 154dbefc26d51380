/* What the suites of the passes that rewrite dense weights known at
 * compile time (test_pretranspose, test_prepack) share: dense layers over
 * a batch input, and the three builds of a model each case compares:
 * -O0, -O2 where the pass cannot run, and -O2 where it does. At batches 1,
 * 3 and 8 (the GEMV, and the GEMM above its rows) and 1 and 2 threads the
 * two -O2 builds must give the same bits, and both match -O0. */
#ifndef KILN_TESTS_PASSES_DENSE_HARNESS_H
#define KILN_TESTS_PASSES_DENSE_HARNESS_H

#include <stdio.h>
#include "opt_harness.h"

static int64_t dense_max_batch = 8;   /* the batch the models are compiled for */

static Value *param(Graph *g, const char *name, Type t) {
  return ir_param(g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
}

static Value *matmul(Graph *g, Value *a, Value *b, bool tb) {
  Attr at = ir_attr();
  at.trans_b = tb;
  return ir_op(g, OP_matmul, (Value *[]){a, b}, 2, &at, NOLOC);
}

static Value *batch_input(Graph *g, RtDType dt, int64_t width) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = dense_max_batch;
  return ir_input(g, "x", ir_type(dt, 2, (Size[]){sz_var(N), sz_const(width)}), NOLOC);
}

/* dense(x, out): x W^T + b, W a parameter [out, in] named prefix.weight */
static Value *dense(Graph *g, Value *x, int64_t out, const char *prefix) {
  char wn[64], bn[64];
  RtDType dt = x->type.dt;
  snprintf(wn, sizeof wn, "%s.weight", prefix);
  snprintf(bn, sizeof bn, "%s.bias", prefix);
  int64_t in = x->type.dim[1].t[0].coef;
  Value *w = param(g, wn, ir_type_const(dt, 2, (int64_t[]){out, in}));
  return ir_op2(g, OP_add, matmul(g, x, w, true), param(g, bn, ir_type_const(dt, 1, &out)), NOLOC);
}

typedef void (*Build)(Graph *g);

/* an MLP: 20 -> 37 (relu) -> 11, N and K below one panel and one K block */
static void build_mlp(Graph *g) {
  Value *h = ir_op1(g, OP_relu, dense(g, batch_input(g, RT_F32, 20), 37, "fc1"), NOLOC);
  ir_output(g, dense(g, h, 11, "fc2"), "logits");
}

/* one f64 layer, in -> out */
static void dense_f64(Graph *g, int64_t in, int64_t out) {
  ir_output(g, dense(g, batch_input(g, RT_F64, in), out, "fc"), "y");
}

/* one weight [n, n], read as W^T twice and as W once (a square layer) */
static void shared_square(Graph *g, int64_t n) {
  Value *x = batch_input(g, RT_F32, n);
  Value *w = param(g, "w", ir_type_const(RT_F32, 2, (int64_t[]){n, n}));
  Value *a = matmul(g, x, w, true);
  ir_output(g, ir_op2(g, OP_add, matmul(g, a, w, true), matmul(g, x, w, false), NOLOC), "y");
}

/* How a build sees the weights: hidden from the passes, and whether they
 * get the GEMM's panel geometry (OModel's fields of the same names). */
typedef struct Sight {
  bool hide_weights, prepack;
} Sight;

typedef struct Three {
  OModel ref, off, on;         /* -O0, -O2 without the pass, -O2 with it */
} Three;

static void compile(OModel *o, const char *name, Build build, int opt, Sight s) {
  memset(o, 0, sizeof *o);
  build(model_new(&o->m, name));
  o->hide_weights = s.hide_weights;
  o->prepack = s.prepack;
  om_compile(o, opt, 5);
  om_inputs(o, 9);
  assert_int_equal(ir_verify(o->m.g), 0);
}

static void three(Three *t, const char *name, Build build, Sight off, Sight on) {
  compile(&t->ref, name, build, 0, (Sight){0});
  compile(&t->off, name, build, 2, off);
  compile(&t->on, name, build, 2, on);
  for (int64_t batch = 1; batch <= dense_max_batch; batch += batch == 1 ? 2 : 5)
    for (int threads = 1; threads <= 2; threads++) {
      char what[128];
      snprintf(what, sizeof what, "%s at batch %lld, %d threads", name, (long long)batch, threads);
      model_run(&t->ref.m, batch, threads);
      model_run(&t->off.m, batch, threads);
      model_run(&t->on.m, batch, threads);
      om_compare_outputs(&t->off, &t->on, 0, what);
      om_compare_outputs(&t->ref, &t->on, 1e-5, what);
    }
}

static void free_three(Three *t) {
  model_free(&t->ref.m);
  model_free(&t->off.m);
  model_free(&t->on.m);
}

#endif

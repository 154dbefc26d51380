/* The autodiff pass: its structure and contract (a value used several
 * times adds its gradients in a fixed order, frozen parameters get none, a
 * marked input gets one, a value the loss ignores gets zeros, integers cut
 * the path, an op without a gradient rule or a non-scalar loss is a
 * diagnostic at its location), then a small MLP's parameter gradients
 * against a hand-computed reference, at a run-time batch below the
 * compiled maximum, and the same bits at 1 and 2 threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "adharness.h"

static Value *param(Graph *g, const char *name, Type t) {
  Value *v = ir_param(g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
  v->wrt = true;
  return v;
}

static Value *mul(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_mul, a, b, NOLOC); }
static Value *add(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_add, a, b, NOLOC); }

/* loss = sum((x*x + x*c) * r): x is used three times. */
static Graph *used_thrice(Model *m, Value **x, Value **c, Value **r) {
  Graph *g = model_new(m, "used_thrice");
  *x = param(g, "x", TY(RT_F64, 7));
  *c = ir_input(g, "c", TY(RT_F64, 7), NOLOC);
  *r = ir_input(g, "r", TY(RT_F64, 7), NOLOC);
  g->loss = sum_all(g, mul(g, add(g, mul(g, *x, *x), mul(g, *x, *c)), *r));
  ir_output(g, g->loss, "loss");
  return g;
}

static char *printed(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(g, f);
  fclose(f);
  return buf;
}

static void test_summed_gradients(void **state) {
  Model m, m2;
  Value *x, *c, *r, *x2, *c2, *r2;
  used_thrice(&m, &x, &c, &r);
  used_thrice(&m2, &x2, &c2, &r2);
  ad_compile(&m);
  ad_compile(&m2);
  /* three contributions, two additions; the same graph every time */
  assert_int_equal(x->grad->def->op, OP_add);
  assert_int_equal(x->grad->def->in[0]->def->op, OP_add);
  char *p1 = printed(m.g), *p2 = printed(m2.g);
  assert_string_equal(p1, p2);
  free(p1);
  free(p2);
  model_fill_all(&m, 4);
  model_run(&m, 0, 2);
  Ten tx = model_get(&m, x), tc = model_get(&m, c), tr = model_get(&m, r);
  Ten want = ten_new(&m, 1, (int64_t[]){7});
  for (int i = 0; i < 7; i++)
    want.d[i] = (2 * tx.d[i] + tc.d[i]) * tr.d[i];
  check_ten("d/dx sum((x*x + x*c) * r)", model_get(&m, x->grad), want, 1e-15);
  model_free(&m);
  model_free(&m2);
}

/* Frozen parameters get no gradient and no bytes; a value the loss does
 * not depend on gets zeros; a path through integers contributes nothing. */
static void test_frozen_and_zeros(void **state) {
  Model m;
  Graph *g = model_new(&m, "frozen");
  Value *w = param(g, "w", TY(RT_F32, 3, 5)), *f = param(g, "f", TY(RT_F32, 3, 5));
  Value *idle = param(g, "idle", TY(RT_F32, 4)), *q = param(g, "q", TY(RT_F32, 3, 5));
  f->frozen = true;
  Attr to_int = ir_attr(), to_f32 = ir_attr();
  to_int.dtype = RT_I32;
  to_f32.dtype = RT_F32;
  Value *qi = ir_op(g, OP_cast, &q, 1, &to_int, NOLOC);
  Value *qf = ir_op(g, OP_cast, &qi, 1, &to_f32, NOLOC);
  g->loss = sum_all(g, add(g, mul(g, w, f), qf));
  ir_output(g, g->loss, "loss");
  ad_compile(&m);
  assert_null(f->grad);
  assert_non_null(w->grad);
  assert_non_null(idle->grad);
  assert_non_null(q->grad);
  assert_int_equal(g->region_bytes[REGION_GRADS], 64 + 64 + 64);   /* w, idle, q */
  model_fill_all(&m, 5);
  memset(m.regions[REGION_GRADS], 0xff, g->region_bytes[REGION_GRADS]);
  model_run(&m, 0, 2);
  Ten tf = model_get(&m, f), gw = model_get(&m, w->grad), gi = model_get(&m, idle->grad);
  Ten gq = model_get(&m, q->grad);
  check_ten("d/dw sum(w * f)", gw, tf, 0);
  for (int i = 0; i < 4; i++)
    assert_true(gi.d[i] == 0);
  for (int i = 0; i < 15; i++)
    assert_true(gq.d[i] == 0);
  model_free(&m);
}

/* A marked input (style transfer's image): differentiate first, then make
 * its gradient an output to read it; the pipeline's autodiff leaves the
 * differentiated graph alone. */
static void test_marked_input(void **state) {
  Model m;
  Graph *g = model_new(&m, "marked_input");
  Value *img = ir_input(g, "img", TY(RT_F64, 1, 2, 5, 5), NOLOC);
  Value *k = ir_param(g, "k", TY(RT_F64, 3, 2, 3, 3), (Init){0}, NOLOC);   /* not trainable */
  img->wrt = true;
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  Value *y = ir_op(g, OP_conv2d, (Value *[]){img, k}, 2, &a, NOLOC);
  ir_output(g, y, "y");                         /* read below: keep it out of scratch */
  g->loss = sum_all(g, mul(g, y, y));
  ir_output(g, g->loss, "loss");
  PassCtx cx = {.threads = HARNESS_THREADS, .verify = true};
  PassStats st = {0};
  assert_true(pass_autodiff(g, &cx, &st));
  assert_non_null(img->grad);
  assert_null(k->grad);
  ir_output(g, img->grad, "dimg");
  int nodes = g->nnodes;
  assert_false(pass_autodiff(g, &cx, &st));     /* once */
  assert_int_equal(g->nnodes, nodes);
  ad_compile(&m);
  model_fill_all(&m, 6);
  model_run(&m, 0, 2);
  /* d sum(y^2) / d img = 2 * sum over windows of y * k */
  Ten ti = model_get(&m, img), tk = model_get(&m, k), ty = model_get(&m, y);
  Ten want = ten_new(&m, 4, ti.dim);
  memset(want.d, 0, sizeof(double) * want.n);
  for (int o = 0; o < 3; o++)
    for (int c = 0; c < 2; c++)
      for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++)
          for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
              want.d[(c * 5 + p + i) * 5 + q + j] +=
                  2 * ty.d[(o * 3 + p) * 3 + q] * tk.d[((o * 2 + c) * 3 + i) * 3 + j];
  check_ten("d loss / d img", model_get(&m, img->grad), want, 1e-14);
  model_free(&m);
}

static const char text[] = "x = 1\ny = 2\n  z = grad_of_grad(y)\n";
static const SrcFile src = {"model.kiln", text, sizeof text - 1};

static char *diagnostics(Model *m) { return diag_to_string(&m->diags, m->arena); }

/* An op without a gradient rule on the way to the loss: an error at its
 * location naming it; the pipeline stops. */
static void test_no_rule(void **state) {
  Model m;
  Graph *g = model_new(&m, "no_rule");
  Value *w = param(g, "w", TY(RT_F32, 1, 2, 5, 5));
  Value *dy = ir_input(g, "dy", TY(RT_F32, 1, 4, 3, 3), NOLOC);
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  SrcLoc loc = {&src, 3, 7, 12};
  Value *dx = ir_op(g, OP_conv2d_bwd_filter, (Value *[]){dy, w}, 2, &a, loc);
  assert_int_equal(m.diags.nerrors, 0);
  g->loss = sum_all(g, dx);
  ir_output(g, g->loss, "loss");
  PassCtx cx = {.threads = HARNESS_THREADS, .verify = true, .work_bytes = cg_work_bytes};
  assert_int_equal(pass_run_pipeline(g, &cx), -1);
  assert_int_equal(m.diags.nerrors, 1);
  char *text = diagnostics(&m);
  if (!strstr(text, "model.kiln:3:7") || !strstr(text, "conv2d_bwd_filter") ||
      !strstr(text, "no gradient rule"))
    fail_msg("unexpected diagnostic:\n%s", text);
  assert_null(w->grad);
  model_free(&m);
}

static void test_bad_loss(void **state) {
  Model m;
  Graph *g = model_new(&m, "bad_loss");
  Value *w = param(g, "w", TY(RT_F32, 4));
  g->loss = mul(g, w, w);
  g->loss->loc = (SrcLoc){&src, 1, 1, 1};
  ir_output(g, g->loss, "loss");
  PassCtx cx = {.threads = HARNESS_THREADS, .verify = true, .work_bytes = cg_work_bytes};
  assert_int_equal(pass_run_pipeline(g, &cx), -1);
  char *text = diagnostics(&m);
  if (!strstr(text, "model.kiln:1:1") || !strstr(text, "scalar f32 or f64, got f32[4]"))
    fail_msg("unexpected diagnostic:\n%s", text);
  model_free(&m);
}

/* ---- a small MLP against a hand-computed backward pass ----------------------------- */

enum { IN = 5, HID = 6, OUT = 3, MAXN = 8, RUNN = 5 };

typedef struct Mlp {
  Value *x, *labels, *w1, *b1, *w2, *b2, *loss;
} Mlp;

static Value *dense(Graph *g, Value *x, Value *w, Value *b) {
  Attr a = ir_attr();
  a.trans_b = true;
  return add(g, ir_op(g, OP_matmul, (Value *[]){x, w}, 2, &a, NOLOC), b);
}

/* mean over the batch of -log softmax(logits)[label] */
static Value *cross_entropy(Graph *g, Value *logits, Value *labels) {
  Attr hot = ir_attr(), ax = ir_attr();
  hot.classes = OUT;
  hot.dtype = RT_F32;
  ax.axis = 1;
  Value *lp = ir_op(g, OP_log_softmax, &logits, 1, &ax, NOLOC);
  Value *picked = mul(g, ir_op(g, OP_onehot, &labels, 1, &hot, NOLOC), lp);
  Attr rows = ir_attr(), batch = ir_attr();
  rows.axes = 2;
  batch.axes = 1;
  Value *per = ir_op(g, OP_sum, &picked, 1, &rows, NOLOC);
  return ir_op1(g, OP_neg, ir_op(g, OP_mean, &per, 1, &batch, NOLOC), NOLOC);
}

static void build_mlp(Model *m, Mlp *n) {
  Graph *g = model_new(m, "mlp");
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = MAXN;
  n->x = ir_input(g, "x", ir_type(RT_F32, 2, (Size[]){sz_var(N), sz_const(IN)}), NOLOC);
  n->labels = ir_input(g, "labels", ir_type(RT_I64, 1, (Size[]){sz_var(N)}), NOLOC);
  n->w1 = param(g, "fc1.weight", TY(RT_F32, HID, IN));
  n->b1 = param(g, "fc1.bias", TY(RT_F32, HID));
  n->w2 = param(g, "fc2.weight", TY(RT_F32, OUT, HID));
  n->b2 = param(g, "fc2.bias", TY(RT_F32, OUT));
  Value *h = ir_op1(g, OP_relu, dense(g, n->x, n->w1, n->b1), NOLOC);
  n->loss = g->loss = cross_entropy(g, dense(g, h, n->w2, n->b2), n->labels);
  ir_output(g, g->loss, "loss");
}

typedef struct MlpRef {
  double loss, w1[HID][IN], b1[HID], w2[OUT][HID], b2[OUT];
} MlpRef;

static void mlp_reference(const double *x, const double *lab, const double *w1, const double *b1,
                          const double *w2, const double *b2, int N, MlpRef *r) {
  memset(r, 0, sizeof *r);
  for (int n = 0; n < N; n++) {
    double z1[HID], h[HID], z2[OUT], p[OUT], mx = -INFINITY, s = 0;
    for (int j = 0; j < HID; j++) {
      z1[j] = b1[j];
      for (int i = 0; i < IN; i++)
        z1[j] += x[n * IN + i] * w1[j * IN + i];
      h[j] = z1[j] > 0 ? z1[j] : 0;
    }
    for (int k = 0; k < OUT; k++) {
      z2[k] = b2[k];
      for (int j = 0; j < HID; j++)
        z2[k] += h[j] * w2[k * HID + j];
      mx = fmax(mx, z2[k]);
    }
    for (int k = 0; k < OUT; k++)
      s += exp(z2[k] - mx);
    int y = (int)lab[n];
    r->loss += -(z2[y] - mx - log(s)) / N;
    double dz2[OUT], dh[HID] = {0};
    for (int k = 0; k < OUT; k++) {
      p[k] = exp(z2[k] - mx) / s;
      dz2[k] = (p[k] - (k == y)) / N;
      r->b2[k] += dz2[k];
      for (int j = 0; j < HID; j++) {
        r->w2[k][j] += dz2[k] * h[j];
        dh[j] += dz2[k] * w2[k * HID + j];
      }
    }
    for (int j = 0; j < HID; j++) {
      double dz1 = z1[j] > 0 ? dh[j] : 0;
      r->b1[j] += dz1;
      for (int i = 0; i < IN; i++)
        r->w1[j][i] += dz1 * x[n * IN + i];
    }
  }
}

static Ten flat(double *d, int64_t n) { return (Ten){.rank = 1, .dim = {n}, .n = n, .d = d}; }
static Ten flat_of(Ten t) { return flat(t.d, t.n); }

static void test_mlp(void **state) {
  Model m;
  Mlp n;
  build_mlp(&m, &n);
  ad_compile(&m);
  const Graph *g = m.g;
  int64_t grads = 0;
  for (int i = 0; i < g->nparams; i++) {
    assert_int_equal(g->params[i]->grad->region, REGION_GRADS);
    grads += (ir_bytes_max(g, &g->params[i]->type) + 63) / 64 * 64;
  }
  assert_int_equal(g->region_bytes[REGION_GRADS], grads);     /* one contiguous block */
  model_fill_all(&m, 7);
  double lab[MAXN] = {2, 0, 1, 1, 0, 2, 2, 1};
  model_set(&m, n.labels, flat(lab, MAXN));
  model_run(&m, RUNN, 1);
  Ten x = model_get(&m, n.x), w1 = model_get(&m, n.w1), b1 = model_get(&m, n.b1);
  Ten w2 = model_get(&m, n.w2), b2 = model_get(&m, n.b2);
  MlpRef r;
  mlp_reference(x.d, lab, w1.d, b1.d, w2.d, b2.d, RUNN, &r);
  check_ten("loss", model_get(&m, n.loss), (Ten){.rank = 0, .n = 1, .d = &r.loss}, 1e-6);
  Ten got[4] = {model_get(&m, n.w1->grad), model_get(&m, n.b1->grad), model_get(&m, n.w2->grad),
                model_get(&m, n.b2->grad)};
  check_ten("d loss / d fc1.weight", flat_of(got[0]), flat(&r.w1[0][0], HID * IN), 1e-5);
  check_ten("d loss / d fc1.bias", flat_of(got[1]), flat(r.b1, HID), 1e-5);
  check_ten("d loss / d fc2.weight", flat_of(got[2]), flat(&r.w2[0][0], OUT * HID), 1e-5);
  check_ten("d loss / d fc2.bias", flat_of(got[3]), flat(r.b2, OUT), 1e-5);
  /* two threads: the same bits */
  model_run(&m, RUNN, 2);
  Value *ps[4] = {n.w1, n.b1, n.w2, n.b2};
  for (int i = 0; i < 4; i++)
    assert_memory_equal(model_get(&m, ps[i]->grad).d, got[i].d, got[i].n * sizeof(double));
  model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_summed_gradients), cmocka_unit_test(test_frozen_and_zeros),
      cmocka_unit_test(test_marked_input),     cmocka_unit_test(test_no_rule),
      cmocka_unit_test(test_bad_loss),         cmocka_unit_test(test_mlp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

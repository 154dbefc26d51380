/* The fold-bn pass: conv2d and dense layers followed by batchnorm, by their
 * bias, and by per-channel scales and shifts fold into new constant
 * weights and one bias add. Each case checks the graph it leaves (no
 * batchnorm, the contraction reads a constant) and the numbers: the folded
 * weights and bias against the formula, computed here from the weights
 * the pass was given, and the outputs at -O0 against -O2 through the JIT.
 * Then what must not fold (a shared link, another axis, unknown weights, a
 * training graph, no producer), and the C API on a residual network with
 * real batchnorm statistics: -O0 against -O2 and no batchnorm left. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <unistd.h>
#include "opt_harness.h"
#include "tools/api.h"

static Value *add(Graph *g, Value *a, Value *b) { return ir_op2(g, OP_add, a, b, NOLOC); }

static Value *param(Graph *g, const char *name, Type t) {
  return ir_param(g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
}

/* batchnorm over axis with parameters and state named prefix.* */
static Value *batchnorm(Graph *g, Value *x, int axis, const char *prefix) {
  Size c = x->type.dim[ir_norm_axis(axis, x->type.rank)];
  Type t = ir_type(x->type.dt, 1, &c);
  char n[4][64];
  const char *what[4] = {"weight", "bias", "running_mean", "running_var"};
  Value *in[5] = {x};
  for (int i = 0; i < 4; i++) {
    snprintf(n[i], sizeof n[i], "%s.%s", prefix, what[i]);
    in[i + 1] = i < 2 ? param(g, n[i], t) : ir_state(g, n[i], t, (Init){0}, NOLOC);
  }
  Attr a = ir_attr();
  a.axis = axis;
  return ir_op(g, OP_batchnorm, in, 5, &a, NOLOC);
}

static Value *conv(Graph *g, Value *x, Value *w, int stride, int pad, int groups) {
  Attr a = ir_attr();
  a.k[0] = (int)w->type.dim[2].t[0].coef;
  a.k[1] = (int)w->type.dim[3].t[0].coef;
  a.stride[0] = a.stride[1] = stride;
  for (int i = 0; i < 4; i++)
    a.pad[i] = pad;
  a.groups = groups;
  return ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC);
}

static Value *matmul(Graph *g, Value *a, Value *b, bool tb) {
  Attr at = ir_attr();
  at.trans_b = tb;
  return ir_op(g, OP_matmul, (Value *[]){a, b}, 2, &at, NOLOC);
}

static Value *reshape(Graph *g, Value *x, int rank, const int64_t *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  for (int i = 0; i < rank; i++)
    a.shape[i] = sz_const(dims[i]);
  return ir_op(g, OP_reshape, &x, 1, &a, NOLOC);
}

static Value *batch_input(Graph *g, const char *name, int rank, const int64_t *rest) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 3;
  Size d[IR_MAX_RANK] = {sz_var(N)};
  for (int i = 1; i < rank; i++)
    d[i] = sz_const(rest[i - 1]);
  return ir_input(g, name, ir_type(RT_F32, rank, d), NOLOC);
}

typedef void (*Build)(Graph *g);

/* Builds twice, compiles at -O0 and -O2 (got may hide its weights from the
 * passes; NCHW, so that the folded convolution is there to inspect), runs
 * both, compares. */
static void both(const char *name, Build build, bool hide, OModel *ref, OModel *got) {
  memset(ref, 0, sizeof *ref);
  memset(got, 0, sizeof *got);
  build(model_new(&ref->m, name));
  build(model_new(&got->m, name));
  got->hide_weights = hide;
  om_compile(ref, 0, 21);
  got->m.layout = LAYOUT_NCHW;
  om_compile(got, 2, 21);
  om_inputs(ref, 8);
  om_inputs(got, 8);
  model_run(&ref->m, 2, 2);
  model_run(&got->m, 2, 2);
  om_compare_outputs(ref, got, 1e-5, name);
  assert_int_equal(ir_verify(got->m.g), 0);
}

static void free_both(OModel *a, OModel *b) {
  model_free(&a->m);
  model_free(&b->m);
}

/* The weights ref was given for the parameter named name, as floats. */
static const float *weights(const OModel *o, const char *name) { return om_drawn(o, name); }

/* The one node with op, else a failure. */
static Node *only(const Graph *g, Op op) {
  assert_int_equal(om_count(g, op), 1);
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op)
      return g->nodes[i];
  return NULL;
}

static void assert_close(const char *what, double got, double want) {
  if (fabs(got - want) > 1e-5 * (1 + fabs(want)))
    fail_msg("%s: got %.9g, want %.9g", what, got, want);
}

/* ---- what folds ----------------------------------------------------------- */

static void build_conv_bn(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){3, 7, 5});
  Value *w = param(g, "conv.weight", TY(RT_F32, 4, 3, 3, 3));
  ir_output(g, batchnorm(g, conv(g, x, w, 1, 1, 1), 1, "bn"), "y");
}

/* W'[o] = W[o] * s[o], b'[o] = beta[o] - mean[o] * s[o], s = gamma / sqrt(var + eps). */
static void test_conv_bn(void **state) {
  OModel ref, got;
  both("conv_bn", build_conv_bn, false, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_batchnorm), 0);
  assert_true(g->weights_baked);
  assert_int_equal(g->nparams, 0);               /* every weight is now a constant */
  Node *c = only(g, OP_conv2d), *a = only(g, OP_add);
  assert_ptr_equal(a->out[0], g->outputs[0]);
  assert_string_equal(a->out[0]->name, "y");
  assert_ptr_equal(a->in[0], c->out[0]);
  assert_int_equal(c->in[1]->role, V_CONST);
  assert_int_equal(a->in[1]->role, V_CONST);
  assert_int_equal(a->in[1]->type.rank, 3);      /* [4, 1, 1] */
  const float *w = weights(&ref, "conv.weight"), *gm = weights(&ref, "bn.weight");
  const float *bt = weights(&ref, "bn.bias"), *mu = weights(&ref, "bn.running_mean");
  const float *var = weights(&ref, "bn.running_var");
  const float *w2 = c->in[1]->data, *b2 = a->in[1]->data;
  for (int o = 0; o < 4; o++) {
    double s = gm[o] / sqrt(var[o] + 1e-5);
    for (int i = 0; i < 27; i++)
      assert_close("folded weight", w2[o * 27 + i], w[o * 27 + i] * s);
    assert_close("folded bias", b2[o], bt[o] - mu[o] * s);
  }
  free_both(&ref, &got);
}

/* conv with bias (reshaped to [C, 1, 1]), groups and stride, then
 * batchnorm and relu: the reshape, the bias and the statistics go. */
static void build_conv_bias_bn(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){4, 9, 6});
  Value *w = param(g, "conv.weight", TY(RT_F32, 6, 2, 3, 1));
  Value *b = param(g, "conv.bias", TY(RT_F32, 6));
  Value *h = add(g, conv(g, x, w, 2, 1, 2), reshape(g, b, 3, (int64_t[]){6, 1, 1}));
  ir_output(g, ir_op1(g, OP_relu, batchnorm(g, h, 1, "bn"), NOLOC), "y");
}

static void test_conv_bias_bn(void **state) {
  OModel ref, got;
  both("conv_bias_bn", build_conv_bias_bn, false, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_batchnorm), 0);
  assert_int_equal(om_count(g, OP_reshape), 0);
  assert_int_equal(g->nnodes, 3);                /* conv, add, relu */
  Node *a = only(g, OP_add);
  const float *b = weights(&ref, "conv.bias"), *gm = weights(&ref, "bn.weight");
  const float *bt = weights(&ref, "bn.bias"), *mu = weights(&ref, "bn.running_mean");
  const float *var = weights(&ref, "bn.running_var"), *b2 = a->in[1]->data;
  for (int o = 0; o < 6; o++) {
    double s = gm[o] / sqrt(var[o] + 1e-5);
    assert_close("folded bias", b2[o], (b[o] - mu[o]) * s + bt[o]);
  }
  free_both(&ref, &got);
}

/* Dense layers: weight [out, in] (trans_b) and [in, out], the bias on
 * either side, batchnorm over the features, of a rank-2 and a rank-3 input. */
static void build_dense_bn(Graph *g) {
  Value *x = batch_input(g, "x", 2, (int64_t[]){7});
  Value *w1 = param(g, "d1.weight", TY(RT_F32, 5, 7)), *b1 = param(g, "d1.bias", TY(RT_F32, 5));
  Value *h = ir_op1(g, OP_tanh, batchnorm(g, add(g, matmul(g, x, w1, true), b1), 1, "bn1"), NOLOC);
  Value *w2 = param(g, "d2.weight", TY(RT_F32, 5, 3)), *b2 = param(g, "d2.bias", TY(RT_F32, 3));
  ir_output(g, batchnorm(g, add(g, b2, matmul(g, h, w2, false)), -1, "bn2"), "y");
  Value *s = batch_input(g, "s", 3, (int64_t[]){2, 7});
  Value *w3 = param(g, "d3.weight", TY(RT_F32, 4, 7)), *b3 = param(g, "d3.bias", TY(RT_F32, 4));
  ir_output(g, batchnorm(g, add(g, matmul(g, s, w3, true), b3), 2, "bn3"), "seq");
}

static void test_dense_bn(void **state) {
  OModel ref, got;
  both("dense_bn", build_dense_bn, false, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_batchnorm), 0);
  assert_int_equal(om_count(g, OP_add), 3);
  assert_int_equal(g->nnodes, 7);                /* matmul add tanh matmul add, matmul add */
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_matmul)
      assert_int_equal(g->nodes[i]->in[1]->role, V_CONST);
  free_both(&ref, &got);
}

/* Constant scales and shifts per channel, or scalars, in any order and on
 * either side: conv * c + k - c2, and (dense / c) subtracted from k. */
static void build_scale_shift(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){2, 5, 5});
  Value *w = param(g, "conv.weight", TY(RT_F32, 3, 2, 1, 1));
  Value *c = ir_const(g, TY(RT_F32, 3, 1, 1), (float[]){0.5f, -2, 1.5f});
  Value *c2 = ir_const(g, TY(RT_F32, 3, 1, 1), (float[]){1, 2, 3});
  Value *h = ir_op2(g, OP_mul, c, conv(g, x, w, 1, 0, 1), NOLOC);
  h = ir_op2(g, OP_sub, add(g, h, ir_scalar(g, RT_F32, 0.25)), c2, NOLOC);
  ir_output(g, h, "y");
  Value *x2 = batch_input(g, "x2", 2, (int64_t[]){4});
  Value *wd = param(g, "d.weight", TY(RT_F32, 3, 4));
  Value *d = ir_op2(g, OP_div, matmul(g, x2, wd, true), ir_const(g, TY(RT_F32, 3), (float[]){2, -4, 0.5f}), NOLOC);
  ir_output(g, ir_op2(g, OP_sub, ir_scalar(g, RT_F32, 1), d, NOLOC), "z");
}

static void test_scale_shift(void **state) {
  OModel ref, got;
  both("scale_shift", build_scale_shift, false, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(g->nnodes, 4);                /* conv add matmul add */
  assert_int_equal(om_count(g, OP_add), 2);
  free_both(&ref, &got);
}

/* ---- what does not ----------------------------------------------------------- */

/* The conv's output is used twice; batchnorm on the sequence axis of a
 * [N, T, C] dense output; batchnorm after relu; a lone bias add. */
static void build_unfoldable(Graph *g) {
  Value *x = batch_input(g, "x", 4, (int64_t[]){2, 4, 4});
  Value *w = param(g, "conv.weight", TY(RT_F32, 3, 2, 3, 3));
  Value *h = conv(g, x, w, 1, 1, 1);
  ir_output(g, batchnorm(g, h, 1, "bn1"), "shared");
  ir_output(g, ir_op1(g, OP_relu, h, NOLOC), "relu");
  Value *s = batch_input(g, "s", 3, (int64_t[]){6, 4});
  Value *wd = param(g, "d.weight", TY(RT_F32, 5, 4)), *bd = param(g, "d.bias", TY(RT_F32, 5));
  Value *t = add(g, matmul(g, s, wd, true), bd);             /* [N, 6, 5] */
  ir_output(g, batchnorm(g, t, 1, "bn2"), "seq");              /* over the 6 */
  ir_output(g, batchnorm(g, ir_op1(g, OP_relu, x, NOLOC), 1, "bn3"), "after_relu");
  Value *w2 = param(g, "d2.weight", TY(RT_F32, 5, 4)), *b2 = param(g, "d2.bias", TY(RT_F32, 5));
  ir_output(g, add(g, matmul(g, s, w2, true), b2), "bias_only");
}

/* A weight as drawn: the parameter, or the constant W^T of a dense
 * layer's (the pretranspose pass after fold-bn), not scaled by a fold. */
static bool unscaled(const OModel *o, const Value *w) {
  if (w->role == V_PARAM)
    return true;
  int64_t in, out;
  if (w->role != V_CONST || w->type.rank != 2 || !sz_is_const(w->type.dim[0], &in) ||
      !sz_is_const(w->type.dim[1], &out))
    return false;
  for (int i = 0; i < o->nparams; i++) {
    const Value *p = o->param[i];
    int64_t po, pi;
    if (p->type.rank != 2 || !sz_is_const(p->type.dim[0], &po) || !sz_is_const(p->type.dim[1], &pi) ||
        po != out || pi != in)
      continue;
    const float *d = o->data[i], *t = w->data;
    bool same = true;
    for (int64_t r = 0; r < out && same; r++)
      for (int64_t c = 0; c < in && same; c++)
        same = t[c * out + r] == d[r * in + c];
    if (same)
      return true;
  }
  return false;
}

static void test_unfoldable(void **state) {
  OModel ref, got;
  both("unfoldable", build_unfoldable, false, &ref, &got);
  Graph *g = got.m.g;
  assert_int_equal(om_count(g, OP_batchnorm), 3);
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_conv2d || g->nodes[i]->op == OP_matmul)
      assert_true(unscaled(&ref, g->nodes[i]->in[1]));
  free_both(&ref, &got);
}

/* Without the weights' data (no param_data), nothing folds, and a
 * training graph is left to autodiff. */
static void test_needs_weights_and_inference(void **state) {
  OModel ref, got;
  both("hidden", build_conv_bn, true, &ref, &got);
  assert_int_equal(om_count(got.m.g, OP_batchnorm), 1);
  free_both(&ref, &got);
  Graph *g = om_compile_training(&got, "training", build_conv_bn);
  assert_int_equal(om_count(g, OP_batchnorm), 1);
  assert_false(g->weights_baked);
  model_free(&got.m);
}

/* ---- through the C API ---------------------------------------------------------- */

static const char *resnet =
    "block residual(x: f32[N, C, H, W]) -> (y: f32[N, C, H, W]) {\n"
    "  a = x |> conv2d(C, k=3, pad=same, bias=false, name=\"conv1\") |> batchnorm(name=\"bn1\") |> relu()\n"
    "  b = a |> conv2d(C, k=3, pad=same, bias=false, name=\"conv2\") |> batchnorm(name=\"bn2\")\n"
    "  y = relu(x + b)\n"
    "}\n"
    "model resnet(img: f32[N, 3, 9, 7]) -> (logits: f32[N, 10]) {\n"
    "  h = img |> conv2d(8, k=3, pad=same, name=\"conv1\") |> batchnorm(name=\"bn1\") |> relu()\n"
    "  h = h |> residual() as \"layer1\"\n"
    "  h = h |> global_avgpool() |> dense(12) |> batchnorm() |> relu()\n"
    "  logits = h |> dense(10, name=\"fc\")\n"
    "}\n";

/* Random weights for every parameter and state of m's signature, written
 * as a .safetensors file the API then loads (batchnorm statistics that
 * are not 1 and 0, so the fold has something to do). */
static void write_weights(KilnModel *m, const char *path) {
  const Graph *s = m->sig;
  RtNamedTensor *ts = calloc(s->nparams, sizeof *ts);
  RtError err;
  for (int i = 0; i < s->nparams; i++) {
    const Value *p = s->params[i];
    int64_t shape[RT_MAX_RANK];
    for (int d = 0; d < p->type.rank; d++)
      assert_true(sz_is_const(p->type.dim[d], &shape[d]));
    ts[i].name = (char *)p->name;
    assert_int_equal(rt_tensor_alloc(&ts[i].t, p->type.dt, p->type.rank, shape, &err), RT_OK);
    om_draw(s, p, ts[i].t.data, 77);
  }
  for (int i = 0; i < s->nparams; i++)      /* sorted by name, as the format wants */
    for (int j = i + 1; j < s->nparams; j++)
      if (strcmp(ts[j].name, ts[i].name) < 0) {
        RtNamedTensor t = ts[i];
        ts[i] = ts[j];
        ts[j] = t;
      }
  assert_int_equal(rt_st_write(path, ts, s->nparams, NULL, 0, &err), RT_OK);
  for (int i = 0; i < s->nparams; i++)
    rt_tensor_free(&ts[i].t);
  free(ts);
}

static KilnModel *load(int opt, const char *weights_path) {
  KilnOptions o;
  kiln_options_default(&o);
  o.opt_level = opt;
  o.threads = 2;
  KilnModel *m;
  if (kiln_load_string("resnet.kiln", resnet, strlen(resnet), &o, &m) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  if (weights_path && kiln_load_weights(m, weights_path) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

static void test_api(void **state) {
  char path[] = "/tmp/kiln_fold_bn_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  KilnModel *probe = load(0, NULL);
  write_weights(probe, path);
  kiln_free(probe);
  KilnModel *m0 = load(0, path), *m2 = load(2, path);
  unlink(path);
  m2->layout = LAYOUT_NCHW;   /* fold-bn alone: blocked weights are padded, larger */
  int64_t n = 3 * 3 * 9 * 7;
  float *x = malloc(sizeof(float) * n);
  rt_fill_uniform(x, n, -2, 2, 5, 1);
  KilnTensor in = {.dtype = KILN_F32, .rank = 4, .shape = {3, 3, 9, 7}, .data = x};
  KilnTensor out0, out2;
  if (kiln_run(m0, &in, 1, &out0, 1) != KILN_OK || kiln_run(m2, &in, 1, &out2, 1) != KILN_OK)
    fail_msg("%s%s", kiln_errors(m0), kiln_errors(m2));
  Model t;                                  /* for the Ten helpers and their arena */
  memset(&t, 0, sizeof t);
  t.arena = rt_arena_new();
  Ten a = ten_new(&t, 2, (int64_t[]){3, 10}), b = ten_new(&t, 2, (int64_t[]){3, 10});
  for (int i = 0; i < 30; i++) {
    a.d[i] = ((float *)out0.data)[i];
    b.d[i] = ((float *)out2.data)[i];
  }
  check_ten("resnet -O2 against -O0", b, a, 1e-5);
  const Graph *g0 = m0->cc->g, *g2 = m2->cc->g;
  assert_int_equal(om_count(g0, OP_batchnorm), 4);
  assert_int_equal(om_count(g2, OP_batchnorm), 0);
  assert_true(pass_count_kernels(g2) <= pass_count_kernels(g0));
  assert_true(g2->region_bytes[REGION_WEIGHTS] < g0->region_bytes[REGION_WEIGHTS]);
  rt_arena_free(t.arena);
  free(x);
  kiln_free(m0);
  kiln_free(m2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_bn),     cmocka_unit_test(test_conv_bias_bn),
      cmocka_unit_test(test_dense_bn),    cmocka_unit_test(test_scale_shift),
      cmocka_unit_test(test_unfoldable),  cmocka_unit_test(test_needs_weights_and_inference),
      cmocka_unit_test(test_api),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

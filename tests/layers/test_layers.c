/* Every layer of the library against PyTorch (layers.safetensors, written
 * by make_fixtures.py with torch): each case is a kiln model lowered from
 * its source, run forward, and differentiated through autodiff with the
 * loss sum over float outputs of sum(y * r). Outputs and the gradients with
 * respect to every float input and parameter must be within 1e-4
 * (DESIGN.md's measure: max|got - ref| / max|ref|) of torch's; bool and
 * index outputs exactly. Each case runs at -O0 (one kernel per op) and -O2
 * (fused kernels).
 *
 * Besides: finite differences in f64 of the gradient rules this library
 * added (erf, the activations, pow, where, slice, unslice, concat), and
 * the errors that name the layer and the argument. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"
#include "frontend/frontend.h"

#define EPS 1e-4

static RtSafetensors fix;

static const RtTensor *find(const char *kase, const char *kind, const char *name) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s.%s", kase, kind, name);
  return rt_st_find(&fix, key);
}

static Ten ten_of(Model *m, const RtTensor *t) {
  Ten r = ten_new(m, t->rank, t->shape);
  for (int64_t i = 0; i < r.n; i++)
    r.d[i] = ((const float *)t->data)[i];
  return r;
}

/* The model of the case's source, lowered into m's graph; its outputs'
 * names in signature order (an output that is an input keeps its name). */
static const Ast *lower_case(Model *m, const char *kase) {
  const char *src = rt_st_meta(&fix, kase);
  assert_non_null(src);
  AstFile *f = fe_parse(m->arena, kase, src, strlen(src), &m->diags);
  assert_non_null(f);
  fe_lower_into(m->g, f, NULL, NULL, &m->diags);
  if (m->diags.nerrors) {
    diag_print(&m->diags, stderr);
    fail_msg("%s: the model does not lower:\n%s", kase, src);
  }
  return f->models[0];
}

/* loss = sum over float outputs with loss weights of sum(y * r); every float
 * input and parameter differentiated, the inputs' gradients made outputs. */
static void add_loss(Model *m, const char *kase, const Ast *def, Value **r) {
  Graph *g = m->g;
  Value *loss = NULL;
  int nout = g->noutputs;
  for (int i = 0; i < nout; i++) {
    Value *y = g->outputs[i];
    const char *name = def->outs[i]->name;
    r[i] = NULL;
    if (!find(kase, "r", name))
      continue;
    r[i] = ir_input(g, rt_arena_printf(m->arena, "r.%s", name), y->type, NOLOC);
    Value *term = sum_all(g, ir_op2(g, OP_mul, y, r[i], NOLOC));
    loss = loss ? ir_op2(g, OP_add, loss, term, NOLOC) : term;
  }
  if (!loss)
    return;
  g->loss = loss;
  for (int i = 0; i < g->ninputs; i++)
    g->inputs[i]->wrt = ir_is_float(g->inputs[i]->type.dt) && strncmp(g->inputs[i]->name, "r.", 2);
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = g->params[i]->role == V_PARAM;
  PassCtx cx = {.threads = HARNESS_THREADS, .verify = true};
  PassStats st = {0};
  assert_true(pass_autodiff(g, &cx, &st));
  for (int i = 0; i < g->ninputs; i++)
    if (g->inputs[i]->grad)
      ir_output(g, g->inputs[i]->grad, rt_arena_printf(m->arena, "grad.%s", g->inputs[i]->name));
}

static void check(Model *m, const char *kase, const char *what, const Value *v, const RtTensor *ref,
                  bool exact) {
  char label[200];
  snprintf(label, sizeof label, "%s at -O%d: %s", kase, m->opt, what);
  if (!ref)
    fail_msg("%s: no reference in the fixtures", label);
  Ten want = ten_of(m, ref), got = model_get(m, v);
  got.rank = want.rank;                 /* a scalar may be stored as [] or [1] */
  check_ten(label, got, want, exact ? 0 : EPS);
}

static void run_case(const char *kase, int opt) {
  Model m;
  model_new(&m, kase);
  m.opt = opt;
  const Ast *def = lower_case(&m, kase);
  Graph *g = m.g;
  int nout = g->noutputs;
  Value *outs[16], *r[16];
  assert_true(nout <= 16);
  memcpy(outs, g->outputs, sizeof(Value *) * (size_t)nout);
  add_loss(&m, kase, def, r);
  ad_compile(&m);
  for (int i = 0; i < g->ninputs; i++) {
    Value *x = g->inputs[i];
    const RtTensor *t = strncmp(x->name, "r.", 2) ? find(kase, "in", x->name)
                                                   : find(kase, "r", x->name + 2);
    assert_non_null(t);
    model_set(&m, x, ten_of(&m, t));
  }
  for (int i = 0; i < g->nparams; i++) {
    const RtTensor *t = find(kase, "param", g->params[i]->name);
    if (t)
      model_set(&m, g->params[i], ten_of(&m, t));
  }
  model_run(&m, 0, HARNESS_THREADS);
  for (int i = 0; i < nout; i++)
    check(&m, kase, def->outs[i]->name, outs[i], find(kase, "out", def->outs[i]->name),
          !ir_is_float(outs[i]->type.dt));
  for (int i = 0; g->loss && i < g->ninputs; i++)
    if (g->inputs[i]->grad)
      check(&m, kase, "grad", g->inputs[i]->grad, find(kase, "grad", g->inputs[i]->name), false);
  for (int i = 0; g->loss && i < g->nparams; i++)
    if (g->params[i]->grad)
      check(&m, kase, g->params[i]->name, g->params[i]->grad, find(kase, "grad", g->params[i]->name),
            false);
  model_free(&m);
}

static void test_torch(void **state) {
  const char *list = rt_st_meta(&fix, "cases");
  assert_non_null(list);
  char name[128];
  int n = 0;
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    assert_true(len < sizeof name);
    memcpy(name, p, len);
    name[len] = 0;
    run_case(name, 0);
    run_case(name, 2);
    n++;
    p += len + (p[len] == ',');
  }
  print_message("%d layer cases against PyTorch, each at -O0 and -O2\n", n);
  assert_true(n >= 90);
}

/* ---- finite differences of the new gradient rules, in f64 ---------------- */

/* d sum(op(p) * r)/dp by central differences against autodiff. */
static void gradcheck(const char *what, Graph *(*build)(Model *m, Value **p, int *np)) {
  Model m;
  Value *p[4];
  int np = 0;
  build(&m, p, &np);
  Graph *g = m.g;
  Value *y = g->outputs[0];
  Value *r = ir_input(g, "r", y->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, y, r, NOLOC));
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < np; i++)
    p[i]->wrt = true;
  ad_compile(&m);
  for (int i = 0; i < np; i++)
    fill_value(&m, p[i], FILL_AWAY0, 40 + (uint64_t)i);
  fill_value(&m, r, FILL_UNIFORM, 7);
  for (int i = 0; i < np; i++) {
    model_run(&m, 0, 1);
    Ten an = model_get(&m, p[i]->grad), x = model_get(&m, p[i]), fd = ten_new(&m, x.rank, x.dim);
    for (int64_t j = 0; j < x.n; j++) {
      double keep = x.d[j], h = 1e-6, lp, lm;
      x.d[j] = keep + h;
      model_set(&m, p[i], x);
      model_run(&m, 0, 1);
      lp = model_get(&m, g->loss).d[0];
      x.d[j] = keep - h;
      model_set(&m, p[i], x);
      model_run(&m, 0, 1);
      lm = model_get(&m, g->loss).d[0];
      x.d[j] = keep;
      model_set(&m, p[i], x);
      fd.d[j] = (lp - lm) / (2 * h);
    }
    check_ten(what, an, fd, 1e-6);
  }
  model_free(&m);
}

static Value *param64(Model *m, const char *name, int rank, const int64_t *dims) {
  return ir_param(m->g, name, ir_type_const(RT_F64, rank, dims), (Init){0}, NOLOC);
}

static Op unary_op;
static double unary_alpha;

static Graph *build_unary(Model *m, Value **p, int *np) {
  model_new(m, op_name(unary_op));
  p[(*np)++] = param64(m, "x", 2, (int64_t[]){3, 7});
  Attr a = ir_attr();
  a.alpha = unary_alpha;
  ir_output(m->g, ir_op(m->g, unary_op, p, 1, &a, NOLOC), "y");
  return m->g;
}

static void test_fd_activations(void **state) {
  const struct { Op op; double alpha; } ops[] = {
    {OP_erf, 0}, {OP_leaky_relu, 0.2}, {OP_elu, 0.7}, {OP_softplus, 1.1}, {OP_softplus, 20},
    {OP_gelu, 0}, {OP_gelu_tanh, 0}, {OP_silu, 0},
  };
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
    unary_op = ops[i].op;
    unary_alpha = ops[i].alpha;
    gradcheck(op_name(unary_op), build_unary);
  }
}

/* pow with both operands trainable (base positive), broadcast exponent */
static Graph *build_pow(Model *m, Value **p, int *np) {
  model_new(m, "pow");
  p[(*np)++] = param64(m, "a", 2, (int64_t[]){3, 5});
  p[(*np)++] = param64(m, "b", 1, (int64_t[]){5});
  Value *base = ir_op1(m->g, OP_abs, p[0], NOLOC);
  ir_output(m->g, ir_op2(m->g, OP_pow, base, p[1], NOLOC), "y");
  return m->g;
}

/* where(a > b, a * b, b) with b broadcast */
static Graph *build_where(Model *m, Value **p, int *np) {
  model_new(m, "where");
  Graph *g = m->g;
  p[(*np)++] = param64(m, "a", 3, (int64_t[]){2, 3, 5});
  p[(*np)++] = param64(m, "b", 1, (int64_t[]){5});
  Value *c = ir_op2(g, OP_gt, p[0], p[1], NOLOC);
  Value *ab = ir_op2(g, OP_mul, p[0], p[1], NOLOC);
  ir_output(g, ir_op(g, OP_where, (Value *[]){c, ab, p[1]}, 3, NULL, NOLOC), "y");
  return g;
}

/* concat of a slice (negative step) and an unslice (padding) along axis 1 */
static Graph *build_moves(Model *m, Value **p, int *np) {
  model_new(m, "moves");
  Graph *g = m->g;
  p[(*np)++] = param64(m, "a", 2, (int64_t[]){3, 7});
  p[(*np)++] = param64(m, "b", 2, (int64_t[]){3, 2});
  Attr s = ir_attr();
  s.rank = 2;
  s.shape[0] = sz_const(2);
  s.shape[1] = sz_const(3);
  s.start[0] = 2, s.step[0] = -2;
  s.start[1] = 5, s.step[1] = -2;
  Value *sl = ir_op(g, OP_slice, p, 1, &s, NOLOC);                  /* [2, 3] */
  Attr u = ir_attr();
  u.rank = 2;
  u.shape[0] = sz_const(2);
  u.shape[1] = sz_const(5);
  u.start[1] = 1;
  u.step[1] = 2;
  u.alpha = 0.5;
  Attr t = ir_attr();
  t.rank = 2;
  t.shape[0] = sz_const(2);
  t.shape[1] = sz_const(2);
  Value *bb = ir_op(g, OP_slice, &p[1], 1, &t, NOLOC);               /* [2, 2] */
  Value *pad = ir_op(g, OP_unslice, &bb, 1, &u, NOLOC);              /* [2, 5] */
  Attr c = ir_attr();
  c.axis = -1;
  ir_output(g, ir_op(g, OP_concat, (Value *[]){sl, pad, sl}, 3, &c, NOLOC), "y");
  return g;
}

static void test_fd_binary_and_moves(void **state) {
  gradcheck("pow", build_pow);
  gradcheck("where", build_where);
  gradcheck("slice, unslice, concat", build_moves);
}

/* ---- errors name the layer and the argument -------------------------------- */

static const char *lower_errors(Model *m, const char *src) {
  model_new(m, "errors");
  AstFile *f = fe_parse(m->arena, "e.kiln", src, strlen(src), &m->diags);
  fe_lower_into(m->g, f, NULL, NULL, &m->diags);
  static char buf[4096];
  FILE *out = fmemopen(buf, sizeof buf, "w");
  diag_print(&m->diags, out);
  fclose(out);
  return buf;
}

static void expect_error(const char *body, const char *want) {
  char src[512];
  snprintf(src, sizeof src, "model m(x: f32[3, 5], i: i64[3]) -> (y) {\n  y = %s\n}\n", body);
  Model m;
  const char *got = lower_errors(&m, src);
  if (!strstr(got, want))
    fail_msg("%s: expected an error with \"%s\", got:\n%s", body, want, got);
  model_free(&m);
}

static void test_errors(void **state) {
  expect_error("leaky_relu(x, slope=0.1)",
               "leaky_relu has no argument 'slope'; it takes x, negative_slope, name");
  expect_error("gelu(x, approximate=\"fast\")", "gelu: approximate must be \"none\" or \"tanh\"");
  expect_error("gelu(i)", "gelu: expects a floating-point tensor, got i64[3]");
  expect_error("selu(i)", "selu: expects a floating-point tensor, got i64[3]");
  expect_error("swish(i)", "swish: expects a floating-point tensor, got i64[3]");
  expect_error("softplus(i, beta=2)", "softplus: expects a floating-point tensor, got i64[3]");
  expect_error("argmax(x, axis=-3)", "argmax: axis -3 is out of range for f32[3, 5]");
  expect_error("unsqueeze(x, 3)", "unsqueeze: axis 3 is out of range for a new axis of f32[3, 5]");
  expect_error("transpose(x, perm=[0])", "transpose: perm must list each of the 2 axes of f32[3, 5] once");
  expect_error("x[:, 1:4:0]", "a slice step must be positive");
  expect_error("slice(x, axis=0, step=0)", "slice: step must be positive");
  expect_error("layernorm(x, dims=3)", "layernorm: normalises over the last 3 axes");
  expect_error("softmax(x, axis=2)", "softmax: axis 2 is out of range for f32[3, 5]");
  expect_error("x[1, 2, 3]", "3 indices for f32[3, 5]");
  expect_error("x[7]", "index 7 is out of range for an axis of size 3");
  expect_error("x[::-1]", "a slice step must be positive");
  expect_error("concat([x, i], axis=0)", "concat: input 1 is i64[3], which does not match f32[3, 5]");
  expect_error("split(x, [2, 2], axis=1)", "split: f32[3, 5]: the parts add up to 4, axis 1 has 5");
  expect_error("split(x, 2, axis=-1)", "split: axis 1 of f32[3, 5] (5) does not split into 2 equal parts");
  expect_error("pad(x, [1, 2], mode=wrap)", "pad: mode must be constant, reflect or replicate");
  expect_error("pad(x, [5, 0], mode=reflect)", "reflect padding of axis 1 must be below its size 5");
  expect_error("where(x, x, 0)", "where: the condition must be a bool tensor");
  expect_error("clip(x)", "clip: give min=, max= or both");
  expect_error("softplus(x, beta=0)", "softplus: beta must be positive");
  expect_error("x < \"a\"", "'<' needs tensors or numbers");
  expect_error("pow(i, 2)", "pow: expects floating-point tensors, got i64[3]");
}

static int setup(void **state) {
  char path[1024];
  RtError err;
  snprintf(path, sizeof path, "%s/tests/layers/layers.safetensors",
           getenv("KILN_SRC") ? getenv("KILN_SRC") : ".");
  if (rt_st_read(path, &fix, &err) != RT_OK) {
    fprintf(stderr, "%s: %s\n", path, err.msg);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  rt_st_free(&fix);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_torch),
    cmocka_unit_test(test_fd_activations),
    cmocka_unit_test(test_fd_binary_and_moves),
    cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

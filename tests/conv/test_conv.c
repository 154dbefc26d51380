/* The convolution and pooling layers (conv1d/2d, conv_transpose1d/2d,
 * max and average pooling in 1-d and 2-d, adaptive and global pools) with
 * every option, through the frontend, autodiff and codegen.
 *
 * Each case of cases.kiln is one layer call on x; make_fixtures.py wrote
 * it and PyTorch's results into fixtures.safetensors. A case is lowered in
 * training mode, the loss sum(y * r) added and x and the parameters marked
 * for gradients, then compiled at -O3 (as a training step: fusion makes
 * the bias the GEMM's epilogue) and run on the fixture's values: y and the
 * gradients of x and of every parameter must match PyTorch within 1e-4 by
 * DESIGN.md's measure. The same case in f64 (f32 replaced) at -O0 is
 * checked against central differences of the loss, within 1e-6. The
 * conv2d cases again with the layout pass forced (PassCtx.layout): the step
 * blocked (codegen/conv_blocked.c's direct convolution forward and for dx,
 * its filter gradient for dw), and inference with the input NHWC, its
 * weights known to the passes; the conv2d_row cases give it every split
 * of a row into register tiles. Then the mistakes a user can make with
 * these layers, each with its message.
 *
 * KILN_SRC is the source tree (meson passes it); FILTER=test_errors runs
 * the tests whose names match, SKIP=... all but those. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "frontend/frontend.h"
#include "../passes/adharness.h"

#define TOLERANCE 1e-4
#define FD_STEP 1e-6
#define FD_TOLERANCE 1e-6

static RtBytes cases;                /* cases.kiln */
static RtSafetensors fixtures;

static int setup(void **state) {
  char path[1024];
  const char *src = getenv("KILN_SRC");
  snprintf(path, sizeof path, "%s/tests/conv/cases.kiln", src ? src : ".");
  RtError err;
  if (rt_bytes_file(&cases, path, &err) != RT_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return -1;
  }
  snprintf(path, sizeof path, "%s/tests/conv/fixtures.safetensors", src ? src : ".");
  if (rt_st_read(path, &fixtures, &err) != RT_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  rt_bytes_free(&cases);
  rt_st_free(&fixtures);
  return 0;
}

/* cases.kiln with every f32 made f64 (dt RT_F64), in m's arena. */
static const char *source(Model *m, RtDType dt, size_t *len) {
  char *s = rt_arena_strndup(m->arena, (const char *)cases.data, cases.len);
  assert_non_null(s);
  for (char *p = s; dt == RT_F64 && (p = strstr(p, "f32[")); p += 3)
    memcpy(p, "f64", 3);
  *len = cases.len;
  return s;
}

/* The names of the models of cases.kiln, in file order. */
static int case_names(RtArena *a, const char ***out) {
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "cases.kiln", (const char *)cases.data, cases.len, &d);
  assert_non_null(f);
  assert_int_equal(d.nerrors, 0);
  const char **names = rt_arena_alloc(a, sizeof *names * (size_t)(f->nmodels + 1));
  for (int i = 0; i < f->nmodels; i++)
    names[i] = f->models[i]->name;
  *out = names;
  return f->nmodels;
}

/* fn(name, layout) for each case of cases.kiln whose name starts with prefix. */
static void each_case(const char *prefix, void (*fn)(const char *name, PassLayout layout),
                      PassLayout layout) {
  RtArena *a = rt_arena_new();
  const char **names;
  int n = case_names(a, &names);
  assert_true(n >= 40);
  for (int i = 0; i < n; i++)
    if (!strncmp(names[i], prefix, strlen(prefix)))
      fn(names[i], layout);
  rt_arena_free(a);
}

static Value *output_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i]->name && !strcmp(g->outputs[i]->name, name))
      return g->outputs[i];
  fail_msg("%s has no output %s", g->name, name);
  return NULL;
}

static Value *input_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->ninputs; i++)
    if (!strcmp(g->inputs[i]->name, name))
      return g->inputs[i];
  fail_msg("%s has no input %s", g->name, name);
  return NULL;
}

/* Compiles m as the harness does, or with the target's lanes and
 * passes/layout.c's choice forced to layout (blocked, NHWC). */
static void compile_as(Model *m, PassLayout layout) {
  if (layout != LAYOUT_COST) {
    m->lanes = cg_host_lanes(4);
    m->layout = layout;
  }
  ad_compile(m);
}

/* Lowers case `name` in training mode, adds loss = sum(y * r) with the
 * input r, marks x and the parameters for gradients, and compiles at
 * -O<opt>. x becomes the parameter "input.x" (as a trained image would
 * be): the memory plan keeps the gradients of parameters to the end of
 * the step, not those of inputs. */
static void build(Model *m, const char *name, RtDType dt, int opt, PassLayout layout) {
  Graph *g = model_new(m, name);
  m->opt = opt;
  size_t len;
  const char *text = source(m, dt, &len);
  AstFile *f = fe_parse(m->arena, "cases.kiln", text, len, &m->diags);
  assert_non_null(f);
  FeOptions o = {.model = name};
  FeMode mode = {.training = true};
  if (!fe_lower_into(g, f, &o, &mode, &m->diags) || m->diags.nerrors)
    model_fail_diags(m, "lowering");
  Value *y = output_named(g, "y");
  Value *r = ir_input(g, "r", y->type, NOLOC);
  Value *x = input_named(g, "x");
  ir_replace_uses(g, x, ir_param(g, "input.x", x->type, (Init){.kind = INIT_ZEROS}, NOLOC));
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = g->params[i]->role == V_PARAM;
  g->loss = sum_all(g, ir_op2(g, OP_mul, y, r, NOLOC));
  ir_output(g, g->loss, "loss");
  compile_as(m, layout);
}

static const RtTensor *fixture(const char *name, const char *what) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s", name, what);
  const RtTensor *t = rt_st_find(&fixtures, key);
  if (!t)
    fail_msg("fixtures.safetensors has no %s", key);
  return t;
}

static Ten as_ten(Model *m, const RtTensor *t) {
  Ten r = ten_new(m, t->rank, t->shape);
  for (int64_t i = 0; i < r.n; i++)
    r.d[i] = ((const float *)t->data)[i];
  return r;
}

static void check(Model *m, const char *name, const char *what, const Value *v) {
  char label[300];
  snprintf(label, sizeof label, "%s at -O%d: %s", name, m->opt, what);
  if (!v)
    fail_msg("%s: not computed", label);
  check_ten(label, model_get(m, v), as_ten(m, fixture(name, what)), TOLERANCE);
}

/* A parameter's name in the fixtures: x for "input.x". */
static const char *fixture_name(const Value *p) {
  return strncmp(p->name, "input.", 6) ? p->name : p->name + 6;
}

/* Under a forced layout no convolution of one group is left to the
 * implicit GEMM but a strided conv2d_bwd_data (layout_training leaves it). */
static void assert_no_nchw_conv(const Graph *g, const char *name) {
  int blocked = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if ((n->op == OP_conv2d || n->op == OP_conv2d_bwd_filter) && n->attr.groups == 1)
      fail_msg("%s: %s left NCHW under a forced layout", name, op_name(n->op));
    blocked += n->op == OP_conv2d_nchwc || n->op == OP_conv2d_winograd;
  }
  if (!blocked && !strstr(name, "groups") && !strstr(name, "depthwise"))
    fail_msg("%s: no conv2d_nchwc under a forced layout", name);
}

/* Case `name` at -O3 against its fixture, layout forced (or LAYOUT_COST). */
static void against_torch(const char *name, PassLayout layout) {
  Model m;
  build(&m, name, RT_F32, 3, layout);
  if (layout != LAYOUT_COST)
    assert_no_nchw_conv(m.g, name);
  const Graph *g = m.g;
  model_set(&m, input_named(g, "r"), as_ten(&m, fixture(name, "r")));
  for (int i = 0; i < g->nparams; i++)
    if (g->params[i]->role == V_PARAM)
      model_set(&m, g->params[i], as_ten(&m, fixture(name, fixture_name(g->params[i]))));
  model_run(&m, 0, HARNESS_THREADS);
  check(&m, name, "y", output_named(g, "y"));
  for (int i = 0; i < g->nparams; i++) {
    const Value *p = g->params[i];
    if (p->role == V_PARAM)
      check(&m, name, rt_arena_printf(m.arena, "grad.%s", fixture_name(p)), p->grad);
  }
  model_free(&m);
}

static void test_against_torch(void **state) { each_case("", against_torch, LAYOUT_COST); }

/* ---- the direct convolution (codegen/conv_blocked.c) ----------------------- */

/* The conv2d cases' steps blocked: forward, dx (at stride 1 a conv2d_nchwc
 * on the flipped weight, its padding the kernel's reach less the forward's)
 * and dw, against PyTorch. */
static void test_blocked_against_torch(void **state) { each_case("conv2d", against_torch, LAYOUT_BLOCKED); }

/* A parameter's fixture data, for the layout pass (which bakes the weights
 * of inference graphs): user is the case's name. */
static const void *fixture_param(const Graph *g, const Value *p, void *user) {
  (void)g;
  return fixture(user, p->name)->data;
}

/* Case `name` for inference with the input NHWC (layout LAYOUT_NHWC: bi = C
 * lanes, unpadded) where it enters a convolution of one group: y against
 * PyTorch's. */
static void inference_against_torch(const char *name, PassLayout layout) {
  Model m;
  Graph *g = model_new(&m, name);
  m.opt = 3;
  size_t len;
  const char *text = source(&m, RT_F32, &len);
  AstFile *f = fe_parse(m.arena, "cases.kiln", text, len, &m.diags);
  assert_non_null(f);
  FeOptions o = {.model = name};
  if (!fe_lower_into(g, f, &o, &(FeMode){0}, &m.diags) || m.diags.nerrors)
    model_fail_diags(&m, "lowering");
  m.param_data = fixture_param;
  m.param_user = (void *)name;
  compile_as(&m, layout);
  int64_t lanes = 0;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_conv2d_nchwc)
      sz_is_const(g->nodes[i]->in[0]->type.dim[4], &lanes);
  int64_t c = fixture(name, "x")->shape[1];
  if (!strstr(name, "groups") && !strstr(name, "depthwise") && lanes != c)
    fail_msg("%s: the convolution reads %lld lanes, not %lld channels NHWC", name, (long long)lanes,
             (long long)c);
  model_set(&m, input_named(g, "x"), as_ten(&m, fixture(name, "x")));
  for (int i = 0; i < g->nparams; i++)     /* those not baked (a grouped convolution's) */
    if (g->params[i]->role == V_PARAM)
      model_set(&m, g->params[i], as_ten(&m, fixture(name, g->params[i]->name)));
  model_run(&m, 0, HARNESS_THREADS);
  check(&m, name, "y", output_named(g, "y"));
  model_free(&m);
}

static void test_nhwc_against_torch(void **state) {
  each_case("conv2d", inference_against_torch, LAYOUT_NHWC);
}

/* Case `name` in f64 at -O0 (layout LAYOUT_COST): every gradient against
 * central differences. */
static void finite_differences(const char *name, PassLayout layout) {
  Model m;
  build(&m, name, RT_F64, 0, layout);
  const Graph *g = m.g;
  const Value *loss = output_named(g, "loss");
  fill_value(&m, input_named(g, "r"), FILL_UNIFORM, 2);
  for (int i = 0; i < g->nparams; i++)     /* x distinct: no ties for the max pools */
    if (g->params[i]->role == V_PARAM)
      fill_value(&m, g->params[i], g->params[i]->name[0] == 'i' ? FILL_DISTINCT : FILL_UNIFORM, 3 + i);
  model_run(&m, 0, HARNESS_THREADS);
  const Value *wrt[64];
  Ten ana[64];
  int n = 0;
  for (int i = 0; i < g->nparams && n < 64; i++)
    if (g->params[i]->role == V_PARAM)
      wrt[n++] = g->params[i];
  for (int i = 0; i < n; i++) {
    if (!wrt[i]->grad)
      fail_msg("%s: %s has no gradient", name, wrt[i]->name);
    ana[i] = model_get(&m, wrt[i]->grad);
  }
  for (int i = 0; i < n; i++) {
    char label[300];
    snprintf(label, sizeof label, "%s (f64): d loss / d %s", name, wrt[i]->name);
    check_ten(label, ana[i], ad_numeric_grad(&m, wrt[i], loss, FD_STEP), FD_TOLERANCE);
  }
  model_free(&m);
}

static void test_finite_differences(void **state) { each_case("", finite_differences, LAYOUT_COST); }

/* ---- mistakes --------------------------------------------------------------- */

/* Lowering `body` (one statement on x: f32[2, 4, 7, 5] and s: f32[2, 4, 9])
 * must report a message containing `want`. */
static void expect_error(const char *body, const char *want) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  char *src = rt_arena_printf(a, "model m(x: f32[2, 4, 7, 5], s: f32[2, 4, 9]) -> (y) {\n"
                                 "  y = %s\n}\n", body);
  AstFile *f = fe_parse(a, "m.kiln", src, strlen(src), &d);
  assert_non_null(f);
  Graph *g = fe_lower(f, NULL, &d);
  char *text = diag_to_string(&d, a);
  if (!strstr(text, want))
    fail_msg("%s: expected an error containing\n  %s\ngot:\n%s", body, want, text);
  ir_graph_free(g);
  rt_arena_free(a);
}

static void test_errors(void **state) {
  expect_error("x |> conv2d(3, kernal=3)",
               "conv2d has no argument 'kernal'; it takes x, filters, k/kernel/kernel_size, "
               "stride, pad/padding, dilation, groups, bias, init, name");
  expect_error("x |> maxpool1d(2)", "maxpool1d: expects f32[N, C, L], got f32[2, 4, 7, 5]");
  expect_error("s |> conv1d(3, k=3, kernel_size=3)", "argument 'k' is given twice");
  expect_error("s |> conv1d(3, k=[3, 3])", "k must be an int or a list of 1 int, got a list of 2");
  expect_error("x |> conv2d(3, k=3, pad=[1, 2, 3])",
               "pad must be an int or a list of 2 ints (h, w) or of 4 (top, bottom, left, right), "
               "same or valid; got a list of 3");
  expect_error("s |> conv1d(3, k=3, stride=2, pad=same)", "pad=same needs stride 1");
  expect_error("s |> conv1d(3, k=3, groups=3)", "4 input channels do not split into 3 groups");
  expect_error("x |> conv_transpose2d(5, k=3, groups=2)",
               "filters (5) must be divisible by groups (2)");
  expect_error("x |> conv_transpose2d(4, k=3, stride=2, output_padding=2)",
               "output_padding (2) must be smaller than the stride (2) or the dilation (1), as in "
               "PyTorch");
  expect_error("s |> conv_transpose1d(4, k=1, pad=5)",
               "the output would have -1 elements along axis 2 of f32[2, 4, 9]");
  expect_error("x |> conv_transpose2d(4, k=3, pad=same)", "pad must be an int or a list");
  expect_error("x |> adaptive_avgpool2d(3)",
               "needs each extent of f32[2, 4, 7, 5] to be a multiple of the output size 3");
  expect_error("x |> global_maxpool() |> global_avgpool()",
               "expects f32[N, C, H, W] or [N, C, L], got f32[2, 4]");
  expect_error("x |> avgpool(3, pad=2)", "padding must be at most half the kernel size");
  expect_error("x |> conv2d(4, k=3, dilation=0)", "dilation must be at least 1, got 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_torch),
      cmocka_unit_test(test_finite_differences),
      cmocka_unit_test(test_blocked_against_torch),
      cmocka_unit_test(test_nhwc_against_torch),
      cmocka_unit_test(test_errors),
  };
  if (getenv("FILTER"))
    cmocka_set_test_filter(getenv("FILTER"));
  if (getenv("SKIP"))
    cmocka_set_skip_filter(getenv("SKIP"));
  return cmocka_run_group_tests(tests, setup, teardown);
}

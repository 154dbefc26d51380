/* Lowering: small models in, the printed IR (or its key lines) checked
 * against shapes and names worked out by hand from PyTorch's formulas;
 * parameter names along scopes, counters and loops; recorded
 * initialisers and fans (torch.nn.init._calculate_fan_in_and_fan_out);
 * symbolic and bound sizes. Then every broken model of lower_bad/ reports
 * exactly its `# expect: LINE:COL: text` lines, and every model of
 * examples/ lowers with no diagnostic and verifies.
 *
 * Usage: test_lower LOWER_BAD_DIR EXAMPLES_DIR (meson passes both). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"

static const char *bad_dir, *examples_dir;

typedef struct {
  RtArena *arena;
  Diags diags;
  AstFile *file;
  Graph *g;
  char *ir;           /* ir_print of g */
  char *errors;       /* diag_print of the diagnostics */
} Lowered;

static char *print_graph(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(g, f);
  fclose(f);
  return buf;
}

static Lowered *lower_with(const char *src, const char *model, const FeSize *sizes, int n) {
  Lowered *l = calloc(1, sizeof *l);
  l->arena = rt_arena_new();
  diag_init(&l->diags, l->arena);
  l->file = fe_parse(l->arena, "t.kiln", src, strlen(src), &l->diags);
  assert_non_null(l->file);
  if (l->diags.nerrors)
    fail_msg("the test model does not parse:\n%s", diag_to_string(&l->diags, l->arena));
  FeOptions o = {.model = model, .sizes = sizes, .nsizes = n};
  l->g = fe_lower(l->file, &o, &l->diags);
  assert_non_null(l->g);
  l->ir = print_graph(l->g);
  l->errors = diag_to_string(&l->diags, l->arena);
  return l;
}

static Lowered *lower(const char *src) {
  return lower_with(src, NULL, NULL, 0);
}

/* Lowers with no diagnostic at all, and the graph verifies. */
static Lowered *lower_ok(const char *src) {
  Lowered *l = lower(src);
  if (l->diags.head)
    fail_msg("unexpected diagnostics:\n%s", l->errors);
  if (ir_verify(l->g))
    fail_msg("the graph does not verify:\n%s", diag_to_string(&l->diags, l->arena));
  return l;
}

static void done(Lowered *l) {
  free(l->ir);
  ir_graph_free(l->g);
  rt_arena_free(l->arena);
  free(l);
}

/* Each line must be a whole line of the printed IR, up to the "  # loc". */
static void expect_lines(const Lowered *l, ...) {
  va_list ap;
  va_start(ap, l);
  for (const char *want; (want = va_arg(ap, const char *));) {
    bool found = false;
    for (const char *p = l->ir; *p && !found;) {
      const char *end = strchr(p, '\n');
      size_t n = end ? (size_t)(end - p) : strlen(p);
      const char *hash = strstr(p, "  # ");
      size_t m = hash && hash < p + n ? (size_t)(hash - p) : n;
      found = m == strlen(want) && !strncmp(p, want, m);
      p += n + (end != NULL);
    }
    if (!found)
      fail_msg("missing line\n  %s\nin\n%s", want, l->ir);
  }
  va_end(ap);
}

static void expect_error(const Lowered *l, const char *text) {
  if (!strstr(l->errors, text))
    fail_msg("expected an error containing\n  %s\ngot\n%s", text, l->errors);
}

/* The parameter names in creation order, joined by spaces. */
static void expect_params(const Lowered *l, const char *names) {
  char buf[2000] = "";
  for (int i = 0; i < l->g->nparams; i++)
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? " " : "",
             l->g->params[i]->name);
  if (strcmp(buf, names))
    fail_msg("parameters\n  %s\nexpected\n  %s", buf, names);
}

static const Value *param(const Lowered *l, const char *name) {
  const Value *v = ir_find_param(l->g, name);
  if (!v)
    fail_msg("no parameter %s in\n%s", name, l->ir);
  return v;
}

/* ---- golden IR ----------------------------------------------------------- */

static void test_dense_golden(void **state) {
  Lowered *l = lower_ok("model m(x: f32[N, 16]) -> (y: f32[N, 4]) {\n"
                        "  h1 = dense(x, 8)\n"
                        "  y = h1 |> relu() |> dense(4, bias=false)\n"
                        "}\n");
  const char *want =
      "graph m(%x: f32[N, 16]) -> (%y)\n"
      "  param h1.weight: f32[8, 16] = he_normal\n"
      "  param h1.bias: f32[8] = zeros\n"
      "  param y.weight: f32[4, 8] = xavier_uniform\n"
      "  %2: f32[N, 8] = matmul(%x, %h1.weight) trans_b  # t.kiln:2:8\n"
      "  %4: f32[N, 8] = add(%2, %h1.bias)  # t.kiln:2:8\n"
      "  %5: f32[N, 8] = relu(%4)  # t.kiln:3:13\n"
      "  %y: f32[N, 4] = matmul(%5, %y.weight) trans_b  # t.kiln:3:23\n";
  assert_string_equal(l->ir, want);
  done(l);
}

static void test_conv2d(void **state) {
  Lowered *l = lower_ok(
      "model m(x: f32[N, 4, 9, 9]) -> (a, b, c, d, e) {\n"
      "  a = x |> conv2d(8, k=3, pad=same)\n"
      "  b = x |> conv2d(8, k=4, pad=same, bias=false)\n"
      "  c = x |> conv2d(8, 3, dilation=2, pad=same, bias=false)\n"
      "  d = x |> conv2d(6, k=[3, 1], stride=2, pad=[1, 0], bias=false)\n"
      "  e = x |> conv2d(8, k=3, groups=2, pad=[0, 2, 1, 3], bias=false)\n"
      "}\n");
  expect_lines(l,
      "  param a.weight: f32[8, 4, 3, 3] = xavier_uniform",
      "  param a.bias: f32[8] = zeros",
      "  %2: f32[N, 8, 9, 9] = conv2d(%x, %a.weight) k=[3, 3] stride=[1, 1] pad=[1, 1, 1, 1]",
      "  %4: f32[8, 1, 1] = reshape(%a.bias)",
      "  %a: f32[N, 8, 9, 9] = add(%2, %4)",
      /* k=4: a total of 3, the smaller half before, as PyTorch */
      "  %b: f32[N, 8, 9, 9] = conv2d(%x, %b.weight) k=[4, 4] stride=[1, 1] pad=[1, 1, 2, 2]",
      "  %c: f32[N, 8, 9, 9] = conv2d(%x, %c.weight) k=[3, 3] stride=[1, 1] pad=[2, 2, 2, 2] "
      "dil=[2, 2]",
      /* (9 + 2 - 3) / 2 + 1 = 5 and (9 - 1) / 2 + 1 = 5 */
      "  param d.weight: f32[6, 4, 3, 1] = xavier_uniform",
      "  %d: f32[N, 6, 5, 5] = conv2d(%x, %d.weight) k=[3, 1] stride=[2, 2] pad=[1, 0, 1, 0]",
      /* H: 9 + 0 + 2 - 3 + 1 = 9, W: 9 + 1 + 3 - 3 + 1 = 11 */
      "  param e.weight: f32[8, 2, 3, 3] = xavier_uniform",
      "  %e: f32[N, 8, 9, 11] = conv2d(%x, %e.weight) k=[3, 3] stride=[1, 1] pad=[0, 1, 2, 3] "
      "groups=2",
      NULL);
  done(l);
}

static void test_pooling(void **state) {
  Lowered *l = lower_ok(
      "model m(x: f32[N, 4, 9, 9]) -> (a, b, c, d, e) {\n"
      "  a = maxpool(x, 2)\n"
      "  b = x |> maxpool(3, stride=2, pad=1)\n"
      "  c = x |> avgpool(2, ceil_mode=true)\n"
      "  d = x |> avgpool([3, 1], stride=1, count_include_pad=false)\n"
      "  e = x |> global_avgpool()\n"
      "}\n");
  expect_lines(l,
      "  %a: f32[N, 4, 4, 4] = maxpool2d(%x) k=[2, 2] stride=[2, 2] pad=[0, 0, 0, 0]",
      "  %b: f32[N, 4, 5, 5] = maxpool2d(%x) k=[3, 3] stride=[2, 2] pad=[1, 1, 1, 1]",
      "  %c: f32[N, 4, 5, 5] = avgpool2d(%x) k=[2, 2] stride=[2, 2] pad=[0, 0, 0, 0] ceil_mode "
      "count_include_pad",
      "  %d: f32[N, 4, 7, 9] = avgpool2d(%x) k=[3, 1] stride=[1, 1] pad=[0, 0, 0, 0]",
      "  %e: f32[N, 4] = mean(%x) axes=[2, 3]",
      NULL);
  assert_int_equal(l->g->nparams, 0);
  done(l);
}

static void test_batchnorm(void **state) {
  Lowered *l = lower_ok("model m(x: f32[N, 6, 5, 5], z: f32[N, 3, 7]) -> (y, w) {\n"
                        "  y = x |> batchnorm()\n"
                        "  w = z |> batchnorm(eps=1e-3, momentum=0.2, axis=-1)\n"
                        "}\n");
  expect_lines(l,
      "  param y.weight: f32[6] = ones",
      "  param y.bias: f32[6] = zeros",
      "  state y.running_mean: f32[6] = zeros",
      "  state y.running_var: f32[6] = ones",
      "  %y: f32[N, 6, 5, 5] = batchnorm(%x, %y.weight, %y.bias, %y.running_mean, "
      "%y.running_var) axis=1 eps=1e-05",
      "  state w.running_var: f32[7] = ones",
      "  %w: f32[N, 3, 7] = batchnorm(%z, %w.weight, %w.bias, %w.running_mean, "
      "%w.running_var) axis=2 eps=0.001",
      NULL);
  assert_int_equal(param(l, "y.running_mean")->role, V_STATE);
  assert_int_equal(param(l, "y.weight")->role, V_PARAM);
  done(l);
}

static void test_flatten_reshape(void **state) {
  Lowered *l = lower_ok("model m(x: f32[N, 4, 3, 3]) -> (a, b, c, d, e) {\n"
                        "  a = x |> flatten()\n"
                        "  b = x |> flatten(start=2)\n"
                        "  c = x |> reshape([N, -1, 2])\n"
                        "  d = x |> reshape([-1])\n"
                        "  e = x |> flatten(start=-3)\n"
                        "}\n");
  expect_lines(l,
      "  %a: f32[N, 36] = reshape(%x)",
      "  %b: f32[N, 4, 9] = reshape(%x)",
      "  %c: f32[N, 18, 2] = reshape(%x)",
      "  %d: f32[36*N] = reshape(%x)",
      "  %e: f32[N, 36] = reshape(%x)",
      NULL);
  done(l);
  l = lower("model m(x: f32[N, 36]) -> (y) { y = x |> flatten(0) |> dense(5) }");
  expect_error(l, "dense: expects a tensor of rank 2 or more (the batch first), got f32[36*N]");
  done(l);
}

static void test_math(void **state) {
  Lowered *l = lower_ok(
      "model m(x: f32[N, 8], w: f32[8, 3]) -> (a, b, c, d, e, f) {\n"
      "  a = -x * 2 + 1 / 4\n"
      "  b = x @ w |> softmax()\n"
      "  c = x.T |> sum(axis=1, keepdim=true)\n"
      "  d = maximum(x, 0) |> log_softmax(axis=0) |> mean(axes=[0, 1])\n"
      "  e = x |> transpose(perm=[1, 0]) |> matmul(x) |> max()\n"
      "  f = x |> dropout(0.3) |> tanh |> minimum(6)\n"
      "}\n");
  expect_lines(l,
      "  %2: f32[N, 8] = neg(%x)",
      "  %4: f32[N, 8] = mul(%2, 2)",
      "  %a: f32[N, 8] = add(%4, 0.25)",
      "  %7: f32[N, 3] = matmul(%x, %w)",
      "  %b: f32[N, 3] = softmax(%7) axis=1",
      "  %9: f32[8, N] = transpose(%x) perm=[1, 0]",
      "  %c: f32[8, 1] = sum(%9) axes=[1] keepdim",
      "  %12: f32[N, 8] = maximum(%x, 0)",
      "  %13: f32[N, 8] = log_softmax(%12) axis=0",
      "  %d: f32[] = mean(%13) axes=[0, 1]",
      "  %16: f32[8, 8] = matmul(%15, %x)",
      "  %e: f32[] = max(%16) axes=[0, 1]",
      "  %18: f32[N, 8] = tanh(%x)",
      "  %f: f32[N, 8] = minimum(%18, 6)",
      NULL);
  done(l);
}

/* ---- names ------------------------------------------------------------- */

static const char *stages =
    "block stage(x: f32[N, C, H, W], c: int, n: int = 2) -> (y) {\n"
    "  h = x\n"
    "  for i in 0..n {\n"
    "    conv1 = h |> conv2d(c, k=3, pad=same, bias=false)\n"
    "    h = conv1 |> batchnorm() |> relu()\n"
    "  }\n"
    "  y = h\n"
    "}\n"
    "model m(x: f32[N, 3, 8, 8]) -> (y: f32[N, 16, 8, 8]) {\n"
    "  h = x |> stage(8) as \"stage1\"\n"
    "  y = stage(h, c=16, n=1) as \"stage2\"\n"
    "}\n";

static void test_block_as_for(void **state) {
  Lowered *l = lower_ok(stages);
  expect_params(l,
      "stage1.0.conv1.weight stage1.0.batchnorm0.weight stage1.0.batchnorm0.bias "
      "stage1.0.batchnorm0.running_mean stage1.0.batchnorm0.running_var "
      "stage1.1.conv1.weight stage1.1.batchnorm0.weight stage1.1.batchnorm0.bias "
      "stage1.1.batchnorm0.running_mean stage1.1.batchnorm0.running_var "
      "stage2.0.conv1.weight stage2.0.batchnorm0.weight stage2.0.batchnorm0.bias "
      "stage2.0.batchnorm0.running_mean stage2.0.batchnorm0.running_var");
  expect_lines(l, "  param stage1.1.conv1.weight: f32[8, 8, 3, 3] = he_normal",
               "  param stage2.0.conv1.weight: f32[16, 8, 3, 3] = he_normal", NULL);
  done(l);
}

static void test_binding_names_and_counters(void **state) {
  Lowered *l = lower_ok(
      "block unit(x: f32[N, D]) -> (y) { y = x |> dense(D) |> relu() }\n"
      "model m(x: f32[N, 1, 8, 8]) -> (y) {\n"
      "  h = x |> conv2d(4, k=3, pad=same) |> relu()\n"
      "  h = h |> conv2d(4, k=3, pad=same) |> relu() |> flatten()\n"
      "  h1 = dense(h, 32)\n"
      "  h2 = h1 |> dense(32) |> relu() |> dense(16, name=\"head\")\n"
      "  h2 = h2 |> unit()\n"
      "  y = h2 |> unit() |> unit()\n"
      "}\n");
  expect_params(l,
      "conv2d0.weight conv2d0.bias conv2d1.weight conv2d1.bias h1.weight h1.bias "
      "dense0.weight dense0.bias head.weight head.bias unit0.dense0.weight unit0.dense0.bias "
      "unit1.dense0.weight unit1.dense0.bias y.dense0.weight y.dense0.bias");
  done(l);
}

static void test_duplicate_name(void **state) {
  Lowered *l = lower("model m(x: f32[N, 4]) -> (y) {\n"
                     "  a = x |> dense(4)\n"
                     "  y = a |> dense(4, name=\"a\")\n"
                     "}\n");
  assert_int_equal(l->diags.nerrors, 1);
  assert_int_equal(l->diags.head->loc.line, 3);
  assert_int_equal(l->diags.head->loc.col, 12);
  expect_error(l, "parameter name 'a.weight' is already taken (by the one made at 2:12)");
  done(l);
}

/* ---- sizes ---------------------------------------------------------------- */

static const char *seq = "model seq(x: f32[N, T, 16]) -> (y) { y = x |> dense(8) }";

static void test_symbolic_sizes(void **state) {
  Lowered *l = lower_ok(seq);
  expect_lines(l, "  %y: f32[N, T, 8] = reshape(%5)", NULL);
  assert_int_equal(l->g->noutputs, 1);
  char buf[100];
  assert_string_equal(ir_type_str(l->g, &l->g->outputs[0]->type, buf, sizeof buf),
                      "f32[N, T, 8]");
  done(l);
  l = lower_with(seq, NULL, (FeSize[]){{"T", 5}}, 1);
  assert_int_equal(l->diags.nerrors, 0);
  assert_string_equal(ir_type_str(l->g, &l->g->outputs[0]->type, buf, sizeof buf),
                      "f32[N, 5, 8]");
  assert_string_equal(ir_type_str(l->g, &l->g->inputs[0]->type, buf, sizeof buf),
                      "f32[N, 5, 16]");
  done(l);
  l = lower_with(seq, NULL, (FeSize[]){{"T", -2}}, 1);
  expect_error(l, "t.kiln:1:21: error: size T is bound to -2, not a valid size");
  done(l);
}

static void test_sizes_in_blocks(void **state) {
  Lowered *l = lower_ok(
      "block gate(x: f32[N, D], hidden: int) -> (y: f32[N, 4*hidden]) {\n"
      "  param w: f32[4*hidden, D] = uniform_fan(hidden)\n"
      "  y = x @ w.T\n"
      "}\n"
      "model m(x: f32[N, 12]) -> (y: f32[N, 40]) { y = x |> gate(10) |> dense(4*10) }\n");
  expect_lines(l, "  param gate0.w: f32[40, 12] = uniform", NULL);
  const Value *w = param(l, "gate0.w");
  assert_true(fabs(w->init.a + 1 / sqrt(10)) < 1e-12 && fabs(w->init.b - 1 / sqrt(10)) < 1e-12);
  done(l);
}

/* ---- initialisation -------------------------------------------------------- */

static void expect_init(const Value *v, InitKind k, double a, int64_t fan_in, int64_t fan_out) {
  if (v->init.kind != k || fabs(v->init.a - a) > 1e-12 || v->init.fan_in != fan_in ||
      v->init.fan_out != fan_out)
    fail_msg("%s: init %d a=%g fans %lld, %lld; expected %d a=%g fans %lld, %lld", v->name,
             v->init.kind, v->init.a, (long long)v->init.fan_in, (long long)v->init.fan_out, k, a,
             (long long)fan_in, (long long)fan_out);
}

static void test_init(void **state) {
  Lowered *l = lower_ok(
      "model m(x: f32[N, 4, 6, 6], v: f32[N, 64]) -> (a, b, c, d, e, f) {\n"
      "  a = v |> dense(10) |> relu()\n"
      "  b = v |> dense(10)\n"
      "  c = x |> conv2d(16, k=[3, 5], groups=2, pad=same) |> batchnorm() |> relu()\n"
      "  d = v |> dense(10, init=\"he_uniform\") |> sigmoid()\n"
      "  e = v |> dense(10, init=normal(0, 0.01)) |> relu()\n"
      "  f = x |> conv2d(8, k=3, init=xavier_normal) |> relu()\n"
      "}\n");
  /* fans as torch.nn.init: fan_in = size(1) * receptive field, fan_out = size(0) * it */
  expect_init(param(l, "dense0.weight"), INIT_HE_NORMAL, sqrt(2), 64, 10);
  expect_init(param(l, "b.weight"), INIT_XAVIER_UNIFORM, 1, 64, 10);
  expect_init(param(l, "conv2d0.weight"), INIT_HE_NORMAL, sqrt(2), 2 * 3 * 5, 16 * 3 * 5);
  expect_init(param(l, "dense1.weight"), INIT_HE_UNIFORM, sqrt(2), 64, 10);
  expect_init(param(l, "dense2.weight"), INIT_NORMAL, 0, 64, 10);
  assert_true(param(l, "dense2.weight")->init.b == 0.01);
  expect_init(param(l, "conv2d1.weight"), INIT_XAVIER_NORMAL, 1, 4 * 9, 8 * 9);
  expect_init(param(l, "b.bias"), INIT_ZEROS, 0, 0, 0);
  done(l);
}

static void test_param_inits(void **state) {
  Lowered *l = lower_ok("model m(x: f32[N, 3]) -> (y) {\n"
                        "  param a: f32[3] = constant(0.5)\n"
                        "  param b: f32[3] = uniform(-2, 2)\n"
                        "  param c: f32[3, 3, 2] = he_normal\n"
                        "  param d: f32[3]\n"
                        "  y = x * a + b + d + sum(c, axes=[0, 2])\n"
                        "}\n");
  expect_init(param(l, "a"), INIT_CONST, 0.5, 0, 0);
  expect_init(param(l, "b"), INIT_UNIFORM, -2, 0, 0);
  assert_true(param(l, "b")->init.b == 2);
  expect_init(param(l, "c"), INIT_HE_NORMAL, sqrt(2), 6, 6);
  expect_init(param(l, "d"), INIT_ZEROS, 0, 0, 0);
  done(l);
  l = lower("model m(x: f32[N, 3]) -> (y) {\n  param a: f32[3] = xavier_uniform\n  y = x + a\n}");
  expect_error(l, "t.kiln:2:9: error: a: this initialiser needs a tensor of rank 2 or more");
  done(l);
}

/* ---- unsupported and limits ---------------------------------------------- */

static void test_unsupported_and_limits(void **state) {
  Lowered *l = lower("model m(x: f32[N, T, 4]) -> (y) {\n"
                     "  y = scan t in 1..T carry (h = x) { emit h }\n"
                     "}\n");
  expect_error(l, "a scan runs over 0..T; its start must be 0");
  done(l);
  l = lower("block b(x: f32[N]) -> (y) { y = x |> b() |> b() }\n"
            "model m(x: f32[N]) -> (y) { y = b(x) }\n");
  expect_error(l, "block 'b' calls itself: recursion is not allowed");
  done(l);
  /* 2^20 statements would be unrolled: an error, quickly */
  l = lower("model m(x: f32[N]) -> (y) {\n  y = x\n"
            "  for i in 0..1024 { for j in 0..1024 { for k in 0..4 { y = y } } }\n}\n");
  expect_error(l, "the model unrolls to more than");
  done(l);
}

/* ---- lower_bad/: each file's `# expect: LINE:COL: text` lines ------------ */

typedef struct Expect {
  int line, col;
  char text[300];
  bool seen;
} Expect;

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("cannot read %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, f);
  buf[*len] = 0;
  fclose(f);
  return buf;
}

static int read_expects(const char *text, Expect *ex, int max) {
  int n = 0;
  for (const char *p = strstr(text, "# expect: "); p && n < max; p = strstr(p + 1, "# expect: ")) {
    Expect *e = &ex[n];
    int used = 0;
    if (sscanf(p, "# expect: %d:%d: %n", &e->line, &e->col, &used) != 2 || !used)
      fail_msg("malformed expect line: %.60s", p);
    const char *end = strchr(p + used, '\n');
    size_t len = end ? (size_t)(end - p - used) : strlen(p + used);
    snprintf(e->text, sizeof e->text, "%.*s", (int)len, p + used);
    e->seen = false;
    n++;
  }
  return n;
}

/* Every error matches an expectation at its line and column, and every
 * expectation is met: nothing missing, nothing extra. */
static void check_bad_file(const char *path) {
  size_t len;
  char *text = read_text(path, &len);
  Expect ex[64];
  int nex = read_expects(text, ex, 64);
  if (nex == 0)
    fail_msg("%s has no '# expect:' line", path);
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, path, text, len, &d);
  if (d.nerrors)
    fail_msg("%s does not parse:\n%s", path, diag_to_string(&d, a));
  ir_graph_free(fe_lower(f, NULL, &d));
  for (const Diag *g = d.head; g; g = g->next) {
    if (g->kind != DIAG_ERROR)
      continue;
    bool ok = false;
    for (int i = 0; i < nex && !ok; i++)
      if (!ex[i].seen && ex[i].line == g->loc.line && ex[i].col == g->loc.col &&
          strstr(g->msg, ex[i].text))
        ok = ex[i].seen = true;
    if (!ok)
      fail_msg("%s: unexpected error %d:%d: %s\nall:\n%s", path, g->loc.line, g->loc.col,
               g->msg, diag_to_string(&d, a));
  }
  for (int i = 0; i < nex; i++)
    if (!ex[i].seen)
      fail_msg("%s: missing error %d:%d: %s\ngot:\n%s", path, ex[i].line, ex[i].col,
               ex[i].text, diag_to_string(&d, a));
  rt_arena_free(a);
  free(text);
}

static bool is_kiln(const char *name) {
  size_t n = strlen(name);
  return n > 5 && !strcmp(name + n - 5, ".kiln");
}

/* Calls fn on each .kiln file of dir; returns how many. */
static int each_kiln(const char *dir, void (*fn)(const char *path)) {
  DIR *dp = opendir(dir);
  if (!dp)
    fail_msg("cannot open %s", dir);
  int n = 0;
  for (struct dirent *e; (e = readdir(dp));) {
    if (!is_kiln(e->d_name))
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    fn(path);
    n++;
  }
  closedir(dp);
  return n;
}

static void test_lower_bad(void **state) {
  assert_true(each_kiln(bad_dir, check_bad_file) >= 10);
}

/* ---- examples/: every model lowers cleanly and verifies ------------------- */

static void check_example(const char *path) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse_file(a, path, &d);
  assert_non_null(f);
  for (int i = 0; i < f->nmodels && !d.nerrors; i++) {
    FeOptions o = {.model = f->models[i]->name};
    Graph *g = fe_lower(f, &o, &d);
    assert_non_null(g);
    if (!d.head)
      ir_verify(g);
    assert_true(g->noutputs == f->models[i]->nouts || d.nerrors);
    ir_graph_free(g);
  }
  if (d.head || f->nmodels == 0)
    fail_msg("%s: %d model(s)\n%s", path, f->nmodels, diag_to_string(&d, a));
  rt_arena_free(a);
}

static void test_examples(void **state) {
  assert_true(each_kiln(examples_dir, check_example) >= 3);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LOWER_BAD_DIR EXAMPLES_DIR\n", argv[0]);
    return 2;
  }
  bad_dir = argv[1];
  examples_dir = argv[2];
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_dense_golden),
    cmocka_unit_test(test_conv2d),
    cmocka_unit_test(test_pooling),
    cmocka_unit_test(test_batchnorm),
    cmocka_unit_test(test_flatten_reshape),
    cmocka_unit_test(test_math),
    cmocka_unit_test(test_block_as_for),
    cmocka_unit_test(test_binding_names_and_counters),
    cmocka_unit_test(test_duplicate_name),
    cmocka_unit_test(test_symbolic_sizes),
    cmocka_unit_test(test_sizes_in_blocks),
    cmocka_unit_test(test_init),
    cmocka_unit_test(test_param_inits),
    cmocka_unit_test(test_unsupported_and_limits),
    cmocka_unit_test(test_lower_bad),
    cmocka_unit_test(test_examples),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The attention layer and the iota op.
 *
 * Against PyTorch (fixtures: tests/attn/make_fixtures.py, run with
 * /usr/bin/python3): attention(x, 2) as torch.nn.MultiheadAttention(8, 2,
 * batch_first=True) self-attention, causal (attn_mask = triu(1)),
 * cross-attention with a key padding mask, values apart from the keys
 * (value=) and keys and values of other sizes (kdim, vdim); and a post-LN
 * encoder block written in kiln against torch.nn.TransformerEncoderLayer(128, 4, 512,
 * dropout=0, batch_first=True). The outputs and the gradients of
 * sum(y * r) with respect to the inputs and every parameter agree within
 * 1e-4 (max|got - ref| / max|ref|, f32 against f64 references), at -O0 and
 * at -O2 (simplify and fusion).
 *
 * In f64: the gradients of a masked cross-attention against central
 * differences; iota's values along each axis, with a tensor start, its
 * gradient (the sum of dy), and the same values when simplify folds it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../fixtures.h"

#define TORCH_EPS 1e-4

/* loss = sum(y * r), r a new input; gradients for every parameter and
 * every floating-point input. Returns r. */
static Value *weighted_loss(Graph *g) {
  Value *r = ir_input(g, "r", g->outputs[0]->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, g->outputs[0], r, NOLOC));
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  for (int i = 0; i < g->ninputs; i++)
    g->inputs[i]->wrt = ir_is_float(g->inputs[i]->type.dt) && g->inputs[i] != r;
  return r;
}

static void check_grad(Model *m, const RtSafetensors *st, const char *file, Value *v) {
  char ref[160], what[200];
  snprintf(ref, sizeof ref, "ref.grad.%s", v->name);
  snprintf(what, sizeof what, "%s -O%d: d loss / d %s", file, m->opt, v->name);
  check_ten(what, model_get(m, v->grad), fixture_ten(m, st, ref), TORCH_EPS);
}

/* The model src (inputs named as the fixture's) at -O`opt` against the
 * fixture `file`: the output and every gradient. */
static void check_torch(const char *file, const char *src, int opt) {
  RtSafetensors st = fixture_read("attn", file);
  Model m;
  fixture_lower(&m, src);
  m.opt = opt;
  Graph *g = m.g;
  weighted_loss(g);      /* r is an input: the fixture's */
  ad_compile(&m);
  for (int i = 0; i < g->nparams; i++)
    model_set(&m, g->params[i], fixture_ten(&m, &st, g->params[i]->name));
  for (int i = 0; i < g->ninputs; i++)
    model_set(&m, g->inputs[i], fixture_ten(&m, &st, g->inputs[i]->name));
  model_run(&m, 0, HARNESS_THREADS);
  char what[64];
  snprintf(what, sizeof what, "%s -O%d: y", file, opt);
  check_ten(what, model_get(&m, g->outputs[0]), fixture_ten(&m, &st, "ref.y"), TORCH_EPS);
  for (int i = 0; i < g->nparams; i++)
    check_grad(&m, &st, file, g->params[i]);
  for (int i = 0; i < g->ninputs; i++)
    if (g->inputs[i]->wrt)
      check_grad(&m, &st, file, g->inputs[i]);
  model_free(&m);
  rt_st_free(&st);
}

static void check_torch_levels(const char *file, const char *src) {
  check_torch(file, src, 0);
  check_torch(file, src, 2);
}

static void test_self(void **state) {
  (void)state;
  check_torch_levels("self", "model m(x: f32[3, 5, 8]) -> (y) {\n"
                             "  y = attention(x, 2, name=\"attn\")\n}");
}

static void test_causal(void **state) {
  (void)state;
  check_torch_levels("causal",
                     "model m(x: f32[3, 5, 8]) -> (y) {\n"
                     "  y = x |> multihead_attention(num_heads=2, causal=true) as \"attn\"\n}");
}

static void test_cross(void **state) {
  (void)state;
  check_torch_levels("cross",
                     "model m(x: f32[3, 5, 8], kv: f32[3, 4, 8], pad: bool[3, 4]) -> (y) {\n"
                     "  y = attention(x, 2, kv=kv, key_padding_mask=pad, name=\"attn\")\n}");
}

/* Values apart from the keys (value=, key= as PyTorch's name of kv), with
 * E features (the packed in_proj_weight), and keys and values of other
 * sizes, kdim 6 and vdim 5: PyTorch's q_proj_weight, k_proj_weight and
 * v_proj_weight. */
static void test_value_and_kvdim(void **state) {
  (void)state;
  check_torch_levels("value",
                     "model m(x: f32[3, 5, 8], kv: f32[3, 4, 8], value: f32[3, 4, 8], pad: bool[3, 4])"
                     " -> (y) {\n"
                     "  y = attention(x, 2, key=kv, value=value, key_padding_mask=pad, name=\"attn\")\n}");
  check_torch_levels("kvdim",
                     "model m(x: f32[3, 5, 8], kv: f32[3, 4, 6], value: f32[3, 4, 5], pad: bool[3, 4])"
                     " -> (y) {\n"
                     "  y = attention(x, 2, kv=kv, value=value, key_padding_mask=pad, name=\"attn\")\n}");
}

/* attn_mask: additive f32 [T, S] (the fixture's, with a key padding mask
 * as well; the mask's gradient is checked too),
 * the same per sample and head as [N*heads, T, S], and a bool [T, T] that
 * hides the later keys, which is causal=true. */
static void test_attn_mask(void **state) {
  (void)state;
  check_torch_levels("mask",
                     "model m(x: f32[3, 5, 8], kv: f32[3, 4, 8], pad: bool[3, 4], mask: f32[5, 4])"
                     " -> (y) {\n"
                     "  y = attention(x, 2, kv=kv, key_padding_mask=pad, attn_mask=mask, name=\"attn\")\n}");
  check_torch_levels("mask",
                     "model m(x: f32[3, 5, 8], kv: f32[3, 4, 8], pad: bool[3, 4], mask: f32[5, 4])"
                     " -> (y) {\n"
                     "  heads = mask + iota([6, 5, 4], axis=0, start=0.0) * 0\n"
                     "  y = attention(x, 2, kv=kv, key_padding_mask=pad, attn_mask=heads, name=\"attn\")\n}");
  check_torch_levels("causal",
                     "model m(x: f32[3, 5, 8]) -> (y) {\n"
                     "  later = iota([5, 5], axis=1) > iota([5, 5], axis=0)\n"
                     "  y = attention(x, 2, attn_mask=later, name=\"attn\")\n}");
}

static void test_encoder(void **state) {
  (void)state;
  check_torch_levels("encoder",
                     "model m(x: f32[2, 6, 128]) -> (y) {\n"
                     "  h = layernorm(x + attention(x, 4, name=\"self_attn\"), name=\"norm1\")\n"
                     "  f = h |> dense(512, name=\"linear1\") |> relu()\n"
                     "  f = f |> dense(128, name=\"linear2\")\n"
                     "  y = layernorm(h + f, name=\"norm2\")\n}");
}

/* f64, causal cross-attention (T = S) with a padding mask: every gradient
 * against central differences, within 1e-6. */
static void test_finite_differences(void **state) {
  (void)state;
  Model m;
  fixture_lower(&m, "model m(x: f64[2, 3, 4], kv: f64[2, 3, 4], pad: bool[2, 3]) -> (y) {\n"
            "  y = attention(x, 2, kv=kv, causal=true, key_padding_mask=pad)\n}");
  Graph *g = m.g;
  Value *r = weighted_loss(g);
  ir_output(g, g->loss, "loss");
  ad_compile(&m);
  for (int i = 0; i < g->nparams; i++)
    fill_value(&m, g->params[i], FILL_UNIFORM, 3 + i);
  fill_value(&m, g->inputs[0], FILL_UNIFORM, 1);
  fill_value(&m, g->inputs[1], FILL_UNIFORM, 2);
  fill_value(&m, r, FILL_UNIFORM, 9);
  /* the second sample's last key is padding; the first query still sees one */
  model_set(&m, g->inputs[2], (Ten){.rank = 2, .dim = {2, 3}, .n = 6,
                                    .d = (double[]){0, 0, 0, 0, 1, 0}});
  model_run(&m, 0, HARNESS_THREADS);
  Value *wrt[16];
  int n = 0;
  for (int i = 0; i < g->nparams; i++)
    wrt[n++] = g->params[i];
  wrt[n++] = g->inputs[0], wrt[n++] = g->inputs[1];
  for (int i = 0; i < n; i++) {
    char what[128];
    snprintf(what, sizeof what, "d loss / d %s", wrt[i]->name);
    Ten ana = model_get(&m, wrt[i]->grad);
    check_ten(what, ana, ad_numeric_grad(&m, wrt[i], g->loss, 1e-6), 1e-6);
  }
  model_free(&m);
}

/* iota along each axis of [2, 3, 4] from a tensor start, its gradient
 * sum(dy * r) = sum(r), at -O0 and folded at -O2 (start a constant). */
static void check_iota(int axis, int opt) {
  Model m;
  Graph *g = model_new(&m, "iota");
  m.opt = opt;
  Value *start = ir_input(g, "start", ir_type_const(RT_F64, 0, NULL), NOLOC);
  Attr a = ir_attr();
  a.rank = 3, a.axis = axis;
  for (int i = 0; i < 3; i++)
    a.shape[i] = sz_const(2 + i);
  Value *y = ir_op(g, OP_iota, &start, 1, &a, NOLOC);
  Value *folded = ir_op(g, OP_iota, (Value *[]){ir_scalar(g, RT_I32, -1)}, 1, &a, NOLOC);
  ir_output(g, y, "y");
  ir_output(g, folded, "folded");
  Value *r = ir_input(g, "r", y->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, y, r, NOLOC));
  start->wrt = true;
  ad_compile(&m);
  fill_value(&m, r, FILL_UNIFORM, 5);
  model_set(&m, start, (Ten){.rank = 0, .n = 1, .d = (double[]){0.5}});
  model_run(&m, 0, HARNESS_THREADS);
  Ten got = model_get(&m, y), fgot = model_get(&m, folded), rt = model_get(&m, r);
  double sum = 0;
  for (int64_t i = 0; i < got.n; i++) {
    int64_t at[3] = {i / 12, i / 4 % 3, i % 4};
    assert_true(got.d[i] == 0.5 + (double)at[axis]);
    assert_true(fgot.d[i] == -1 + (double)at[axis]);
    sum += rt.d[i];
  }
  Ten ref = {.rank = 0, .n = 1, .d = &sum};
  check_ten("d loss / d start", model_get(&m, start->grad), ref, 1e-12);
  model_free(&m);
}

static void test_iota(void **state) {
  (void)state;
  for (int axis = 0; axis < 3; axis++)
    for (int opt = 0; opt <= 2; opt += 2)
      check_iota(axis, opt);
}

/* The language: a causal mask from iotas, as docs/language.md writes it. */
static void test_iota_mask(void **state) {
  (void)state;
  Model m;
  fixture_lower(&m, "model m(x: f32[1]) -> (mask) {\n"
            "  mask = iota([3, 4], axis=1) > iota([3, 4], axis=0)\n}");
  ad_compile(&m);
  model_run(&m, 0, HARNESS_THREADS);
  Ten got = model_get(&m, m.g->outputs[0]);
  for (int64_t i = 0; i < got.n; i++)
    assert_true(got.d[i] == (i % 4 > i / 4));
  model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_self),
      cmocka_unit_test(test_causal),
      cmocka_unit_test(test_cross),
      cmocka_unit_test(test_value_and_kvdim),
      cmocka_unit_test(test_attn_mask),
      cmocka_unit_test(test_encoder),
      cmocka_unit_test(test_finite_differences),
      cmocka_unit_test(test_iota),
      cmocka_unit_test(test_iota_mask),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

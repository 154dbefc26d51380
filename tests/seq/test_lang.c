/* scan in the language: a model file lowered by the frontend (a scan body
 * of its own, x[:, t] as a scanned input, weights captured as invariants,
 * zeros[...] as the initial carry) and compiled through the pipeline, its
 * outputs against the recurrence written here; its options reverse= and
 * mask= against flipped and separately run sequences, with gradients by
 * finite differences; and the mistakes a scan allows, each a diagnostic. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"
#include "frontend/frontend.h"

static const char *rnn_src =
    "model rnn(x: f32[2, 4, 3]) -> (hs: f32[2, 4, 5], cs: f32[2, 4, 5]) {\n"
    "  param w_ih: f32[5, 3] = uniform(-0.5, 0.5)\n"
    "  param w_hh: f32[5, 5] = uniform(-0.5, 0.5)\n"
    "  hs, cs = scan t in 0..4 carry (h = zeros[2, 5], c = ones[2, 5]) {\n"
    "    h = tanh(x[:, t] @ w_ih.T + h @ w_hh.T)\n"
    "    c = c * h\n"
    "    emit h, c\n"
    "  }\n"
    "}\n";

/* Lowers src into m (whose graph it replaces); returns the error count. */
static int lower(Model *m, const char *src) {
  model_new(m, "lang");
  ir_graph_free(m->g);
  AstFile *f = fe_parse(m->arena, "test.kiln", src, strlen(src), &m->diags);
  m->g = f ? fe_lower(f, NULL, &m->diags) : NULL;
  return m->diags.nerrors;
}

static void test_rnn_file(void **state) {
  (void)state;
  Model m;
  if (lower(&m, rnn_src))
    model_fail_diags(&m, "lowering");
  ad_compile(&m);
  Graph *g = m.g;
  Value *x = g->inputs[0], *wi = ir_find_param(g, "w_ih"), *wh = ir_find_param(g, "w_hh");
  fill_value(&m, x, FILL_UNIFORM, 1);
  fill_value(&m, wi, FILL_UNIFORM, 2);
  fill_value(&m, wh, FILL_UNIFORM, 3);
  model_run(&m, 0, 2);
  Ten X = model_get(&m, x), Wi = model_get(&m, wi), Wh = model_get(&m, wh);
  Ten hs = model_get(&m, g->outputs[0]), cs = model_get(&m, g->outputs[1]);
  Ten rh = ten_new(&m, 3, (int64_t[]){2, 4, 5}), rc = ten_new(&m, 3, (int64_t[]){2, 4, 5});
  for (int n = 0; n < 2; n++) {
    double h[5] = {0}, c[5] = {1, 1, 1, 1, 1}, h2[5];
    for (int t = 0; t < 4; t++) {
      for (int j = 0; j < 5; j++) {
        double a = 0;
        for (int i = 0; i < 3; i++)
          a += X.d[(n * 4 + t) * 3 + i] * Wi.d[j * 3 + i];
        for (int i = 0; i < 5; i++)
          a += h[i] * Wh.d[j * 5 + i];
        h2[j] = tanh(a);
      }
      for (int j = 0; j < 5; j++) {
        h[j] = h2[j];
        c[j] *= h[j];
        rh.d[(n * 4 + t) * 5 + j] = h[j];
        rc.d[(n * 4 + t) * 5 + j] = c[j];
      }
    }
  }
  check_ten("hs", hs, rh, 1e-5);
  check_ten("cs", cs, rc, 1e-5);
  model_free(&m);
}

/* ---- scan options: reverse= and mask= ----
 * An f64 tanh RNN over x [3, T, 2] from h0, written in the language with
 * the options under test. A reverse scan must equal the forward one over
 * the flipped sequence; a masked batch must equal each sequence run alone
 * (a model of its own length); gradients must match central differences. */
enum { SN = 3, SD = 2, SH = 4 };
static const int64_t slen[SN] = {5, 2, 4};

static void opt_src(char *buf, size_t n, int64_t T, const char *opts, bool masked) {
  snprintf(buf, n,
           "model m(x: f64[3, %lld, 2], %sh0: f64[3, 4]) -> (hs: f64[3, %lld, 4]) {\n"
           "  param wx: f64[4, 2] = uniform(-0.5, 0.5)\n"
           "  param wh: f64[4, 4] = uniform(-0.5, 0.5)\n"
           "  hs = scan t in 0..%lld %s carry (h = h0) {\n"
           "    h = tanh(x[:, t] @ wx.T + h @ wh.T)\n"
           "    emit h\n"
           "  }\n"
           "}\n",
           (long long)T, masked ? "mask: f64[3, 5], " : "", (long long)T, (long long)T, opts);
}

/* Lowers the model, marks x and the weights wrt, adds loss = sum(hs * r)
 * with r an input, compiles, and fills everything from the seed. */
static Graph *opt_model(Model *m, int64_t T, const char *opts, bool masked, uint64_t seed) {
  char src[1024];
  opt_src(src, sizeof src, T, opts, masked);
  if (lower(m, src))
    model_fail_diags(m, "lowering");
  Graph *g = m->g;
  Value *hs = g->outputs[0], *r = ir_input(g, "r", hs->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, hs, r, NOLOC));
  ir_output(g, g->loss, "loss");
  g->inputs[0]->wrt = g->inputs[masked ? 2 : 1]->wrt = true;   /* x and h0 */
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  ad_compile(m);
  for (int i = 0; i < g->ninputs; i++)
    fill_value(m, g->inputs[i], FILL_UNIFORM, seed + (uint64_t)i);
  for (int i = 0; i < g->nparams; i++)
    fill_value(m, g->params[i], FILL_UNIFORM, seed + 10 + (uint64_t)i);
  if (masked) {
    Ten mk = ten_new(m, 2, (int64_t[]){SN, T});
    for (int n = 0; n < SN; n++)
      for (int64_t t = 0; t < T; t++)
        mk.d[n * T + t] = t < slen[n];
    model_set(m, g->inputs[1], mk);
  }
  return g;
}

static void test_reverse_is_flip(void **state) {
  (void)state;
  Model f, r;
  Graph *gf = opt_model(&f, 5, "", false, 1), *gr = opt_model(&r, 5, "reverse=true", false, 1);
  Ten x = model_get(&r, gr->inputs[0]), xf = ten_new(&f, 3, (int64_t[]){SN, 5, SD});
  for (int n = 0; n < SN; n++)
    for (int t = 0; t < 5; t++)
      for (int i = 0; i < SD; i++)
        xf.d[(n * 5 + t) * SD + i] = x.d[(n * 5 + (4 - t)) * SD + i];
  model_set(&f, gf->inputs[0], xf);
  model_run(&f, 0, 2);
  model_run(&r, 0, 2);
  Ten hf = model_get(&f, gf->outputs[0]), hr = model_get(&r, gr->outputs[0]);
  Ten want = ten_new(&r, 3, (int64_t[]){SN, 5, SH});
  for (int n = 0; n < SN; n++)
    for (int t = 0; t < 5; t++)
      for (int j = 0; j < SH; j++)
        want.d[(n * 5 + t) * SH + j] = hf.d[(n * 5 + (4 - t)) * SH + j];
  check_ten("reverse scan vs the flipped sequence", hr, want, 1e-14);
  model_free(&f);
  model_free(&r);
}

/* Sequence n of the masked batch against a model of length slen[n] run on
 * that sequence alone (both directions): past its length the state stays,
 * so a reverse scan starts at its last real step. */
static void check_mask_alone(const char *dir) {
  char opts[64];
  snprintf(opts, sizeof opts, "%s mask=mask", dir);
  Model mm;
  Graph *g = opt_model(&mm, 5, opts, true, 3);
  model_run(&mm, 0, 2);
  Ten hs = model_get(&mm, g->outputs[0]), x = model_get(&mm, g->inputs[0]);
  for (int n = 0; n < SN; n++) {
    int64_t L = slen[n];
    Model a;
    Graph *ga = opt_model(&a, L, dir, false, 3);
    Ten xa = model_get(&a, ga->inputs[0]);
    for (int64_t i = 0; i < SN * L * SD; i++) {
      int64_t n2 = i / (L * SD), t = i / SD % L;
      xa.d[i] = x.d[(n2 * 5 + t) * SD + i % SD];
    }
    model_set(&a, ga->inputs[0], xa);
    model_set(&a, ga->inputs[1], model_get(&mm, g->inputs[2]));
    for (int p = 0; p < g->nparams; p++)
      model_set(&a, ga->params[p], model_get(&mm, g->params[p]));
    model_run(&a, 0, 2);
    Ten ha = model_get(&a, ga->outputs[0]);
    for (int64_t t = 0; t < 5; t++)
      for (int j = 0; j < SH; j++)
        assert_float_equal(hs.d[(n * 5 + t) * SH + j], t < L ? ha.d[(n * L + t) * SH + j] : 0,
                           1e-14);
    model_free(&a);
  }
  model_free(&mm);
}

static void test_mask_alone(void **state) {
  (void)state;
  check_mask_alone("");
  check_mask_alone("reverse=true");
}

/* d loss / d (x, h0, wx, wh) against central differences in f64. */
static void check_opt_grads(const char *opts, bool masked) {
  Model m;
  Graph *g = opt_model(&m, 5, opts, masked, 5);
  Value *wrt[] = {g->inputs[0], g->inputs[masked ? 2 : 1], g->params[0], g->params[1]};
  model_run(&m, 0, 2);
  Ten ana[4];
  for (int i = 0; i < 4; i++) {
    if (!wrt[i]->grad)
      fail_msg("%s: no gradient for %s", opts, wrt[i]->name);
    ana[i] = model_get(&m, wrt[i]->grad);
  }
  for (int i = 0; i < 4; i++) {
    char what[96];
    snprintf(what, sizeof what, "%s: d loss / d %s", opts, wrt[i]->name);
    check_ten(what, ana[i], ad_numeric_grad(&m, wrt[i], g->loss, 1e-6), 1e-6);
  }
  model_free(&m);
}

static void test_option_gradients(void **state) {
  (void)state;
  check_opt_grads("reverse=true", false);
  check_opt_grads("mask=mask", true);
  check_opt_grads("reverse=true mask=mask", true);
}

/* Each source has one mistake; the diagnostic names it. */
static void expect_error(const char *body, const char *want) {
  char src[1024];
  snprintf(src, sizeof src,
           "model m(x: f32[2, 4, 3]) -> (y: f32[2, 4, 3]) {\n"
           "  y = scan t in %s\n"
           "}\n", body);
  Model m;
  int errors = lower(&m, src);
  bool found = false;
  for (const Diag *d = m.diags.head; d; d = d->next)
    found |= strstr(d->msg, want) != NULL;
  if (!errors || !found) {
    diag_print(&m.diags, stderr);
    fail_msg("expected an error containing '%s'", want);
  }
  model_free(&m);
}

static void test_mistakes(void **state) {
  (void)state;
  expect_error("1..4 carry (h = zeros[2, 3]) { h = x[:, t] \n emit h }", "its start must be 0");
  expect_error("0..4 carry (h = zeros[2, 3]) { h = x[:, t] }", "emits nothing");
  expect_error("0..4 carry (h = zeros[2, 5]) { h = x[:, t] \n emit h }", "carry output");
  expect_error("0..4 carry (h = zeros[2, 3]) { h = x[:, t] + x[t] \n emit h }",
               "one sequence axis");
  expect_error("0..4 carry (h = 3) { emit x[:, t] }", "starts as a tensor");
  expect_error("0..4 backwards=true carry (h = zeros[2, 3]) { emit x[:, t] }",
               "a scan takes reverse=");
  expect_error("0..4 reverse=1 carry (h = zeros[2, 3]) { emit x[:, t] }", "a scan takes reverse=");
  expect_error("0..4 mask=x carry (h = zeros[2, 3]) { emit x[:, t] }", "its mask is [N, T]");
  expect_error("0..4 reverse carry (h = zeros[2, 3]) { emit x[:, t] }", "scan option");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn_file),
      cmocka_unit_test(test_reverse_is_flip),
      cmocka_unit_test(test_mask_alone),
      cmocka_unit_test(test_option_gradients),
      cmocka_unit_test(test_mistakes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

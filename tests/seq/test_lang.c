/* scan in the language: a model file lowered by the frontend (a scan body
 * of its own, x[:, t] as a scanned input, weights captured as invariants,
 * zeros[...] as the initial carry) and compiled through the pipeline, its
 * outputs against the recurrence written here; and the mistakes a scan
 * allows, each a diagnostic. */
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
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn_file),
      cmocka_unit_test(test_mistakes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

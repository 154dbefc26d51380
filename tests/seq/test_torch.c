/* rnn, lstm and gru layers (two layers, batch first, one direction and
 * bidirectional) against PyTorch's
 * nn.RNN, nn.LSTM and nn.GRU with the same weights: the outputs at every
 * step, the gradients of sum(hs * r) with respect to every parameter, and
 * the final state of a masked batch against PyTorch's packed sequences.
 * Fixtures: tests/seq/make_fixtures.py (run with /usr/bin/python3), within
 * 1e-4 as DESIGN.md measures it. And their gradients in f64, with a mask,
 * against finite differences. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../fixtures.h"

/* Every parameter from the fixture, by its name. */
static void load_params(Model *m, const RtSafetensors *st) {
  for (int i = 0; i < m->g->nparams; i++)
    model_set(m, m->g->params[i], fixture_ten(m, st, m->g->params[i]->name));
}

/* The fixture of kind, bidirectional or not, and the layer's arguments. */
static RtSafetensors fixture_of(const char *kind, bool bi) {
  char name[32];
  snprintf(name, sizeof name, "%s%s", kind, bi ? "_bi" : "");
  return fixture_read("seq", name);
}

static void check_steps(const char *kind, bool bi) {
  RtSafetensors st = fixture_of(kind, bi);
  char src[256];
  snprintf(src, sizeof src,
           "model m(x: f32[3, 5, 4]) -> (hs: f32[3, 5, %d]) {\n"
           "  hs = %s(x, 6, layers=2, bidirectional=%s)\n}", bi ? 12 : 6, kind,
           bi ? "true" : "false");
  Model m;
  fixture_lower(&m, src);
  Graph *g = m.g;
  Value *r = ir_input(g, "r", g->outputs[0]->type, NOLOC);
  Attr all = ir_attr();
  all.axes = 7;
  g->loss = ir_op(g, OP_sum, (Value *[]){ir_op2(g, OP_mul, g->outputs[0], r, NOLOC)}, 1, &all,
                  NOLOC);
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  assert_int_equal(g->nparams, bi ? 16 : 8);
  ad_compile(&m);
  load_params(&m, &st);
  model_set(&m, g->inputs[0], fixture_ten(&m, &st, "x"));
  model_set(&m, r, fixture_ten(&m, &st, "r"));
  model_run(&m, 0, 2);
  char what[128];
  snprintf(what, sizeof what, "%s hs", kind);
  check_ten(what, model_get(&m, g->outputs[0]), fixture_ten(&m, &st, "ref.hs"), 1e-4);
  for (int i = 0; i < g->nparams; i++) {
    char ref[128];
    snprintf(ref, sizeof ref, "ref.grad.%s", g->params[i]->name);
    snprintf(what, sizeof what, "%s d loss / d %s", kind, g->params[i]->name);
    check_ten(what, model_get(&m, g->params[i]->grad), fixture_ten(&m, &st, ref), 1e-4);
  }
  model_free(&m);
  rt_st_free(&st);
}

static void check_packed(const char *kind, bool bi) {
  RtSafetensors st = fixture_of(kind, bi);
  char src[256];
  snprintf(src, sizeof src,
           "model m(x: f32[3, 5, 4], mask: f32[3, 5]) -> (hs: f32[3, %d]) {\n"
           "  hs = %s(x, 6, layers=2, mask=mask, last=true, bidirectional=%s)\n}", bi ? 12 : 6,
           kind, bi ? "true" : "false");
  Model m;
  fixture_lower(&m, src);
  ad_compile(&m);
  load_params(&m, &st);
  model_set(&m, m.g->inputs[0], fixture_ten(&m, &st, "x"));
  model_set(&m, m.g->inputs[1], fixture_ten(&m, &st, "mask"));
  model_run(&m, 0, 2);
  char what[64];
  snprintf(what, sizeof what, "%s last state, packed", kind);
  check_ten(what, model_get(&m, m.g->outputs[0]), fixture_ten(&m, &st, "ref.last_packed"), 1e-4);
  model_free(&m);
  rt_st_free(&st);
}

static double loss_now(Model *m) {
  model_run(m, 0, 2);
  return model_get(m, m->g->loss).d[0];
}

/* In f64, two layers, a mask: every parameter's gradient against central
 * differences of the loss, within 2e-5 (two saturating layers: the
 * differences see the polynomial tanh of codegen/vmath.c, whose slope is
 * not exactly 1 - tanh^2; the worst element over the random draws seen is
 * 1.2e-5, while a wrong rule is off by far more). */
static void check_fd(const char *kind) {
  char src[256];
  snprintf(src, sizeof src,
           "model m(x: f64[2, 3, 2], mask: f64[2, 3]) -> (hs: f64[2, 3, 3]) {\n"
           "  hs = %s(x, 3, layers=2, mask=mask)\n}", kind);
  Model m;
  fixture_lower(&m, src);
  Graph *g = m.g;
  Value *r = ir_input(g, "r", g->outputs[0]->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, g->outputs[0], r, NOLOC));
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  ad_compile(&m);
  for (int i = 0; i < g->nparams; i++)
    fill_value(&m, g->params[i], FILL_UNIFORM, 3 + i);
  fill_value(&m, g->inputs[0], FILL_UNIFORM, 1);
  fill_value(&m, r, FILL_UNIFORM, 2);
  model_set(&m, g->inputs[1], (Ten){.rank = 2, .dim = {2, 3}, .n = 6,
                                    .d = (double[]){1, 1, 1, 1, 1, 0}});
  model_run(&m, 0, 2);
  for (int i = 0; i < g->nparams; i++) {
    Value *p = g->params[i];
    Ten ana = model_get(&m, p->grad), x = model_get(&m, p), num = ten_new(&m, x.rank, x.dim);
    for (int64_t e = 0; e < x.n; e++) {
      elem_set(model_ptr(&m, p), RT_F64, e, x.d[e] + 1e-6);
      double lp = loss_now(&m);
      elem_set(model_ptr(&m, p), RT_F64, e, x.d[e] - 1e-6);
      double lm = loss_now(&m);
      elem_set(model_ptr(&m, p), RT_F64, e, x.d[e]);
      num.d[e] = (lp - lm) / 2e-6;
    }
    char what[128];
    snprintf(what, sizeof what, "%s: d loss / d %s", kind, p->name);
    check_ten(what, ana, num, 2e-5);
  }
  model_free(&m);
}

static void test_rnn(void **state) {
  (void)state;
  for (int bi = 0; bi < 2; bi++) {
    check_steps("rnn", bi);
    check_packed("rnn", bi);
  }
  check_fd("rnn");
}

static void test_lstm(void **state) {
  (void)state;
  for (int bi = 0; bi < 2; bi++) {
    check_steps("lstm", bi);
    check_packed("lstm", bi);
  }
  check_fd("lstm");
}

static void test_gru(void **state) {
  (void)state;
  for (int bi = 0; bi < 2; bi++) {
    check_steps("gru", bi);
    check_packed("gru", bi);
  }
  check_fd("gru");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn),
      cmocka_unit_test(test_lstm),
      cmocka_unit_test(test_gru),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The step function of generation (ir_step_function): the model lowered
 * with T = 1, its scans' carries made inputs and outputs, run T times with
 * the state handed from call to call, gives the full model's outputs step
 * by step (an embedding, two LSTM layers and a dense head). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"
#include "frontend/frontend.h"

enum { B = 2, T = 6, V = 9, O = 4 };

static const char *src =
    "model m(ids: i32[2, T]) -> (y: f32[2, T, 4]) {\n"
    "  h = ids |> embedding(9, 3) |> lstm(5, layers=2)\n"
    "  y = h |> dense(4)\n"
    "}\n";

static void lower(Model *m, int64_t steps) {
  model_new(m, "step");
  ir_graph_free(m->g);
  AstFile *f = fe_parse(m->arena, "t.kiln", src, strlen(src), &m->diags);
  FeSize size = {"T", steps};
  FeOptions o = {.sizes = &size, .nsizes = 1};
  m->g = fe_lower(f, &o, &m->diags);
  if (m->diags.nerrors)
    model_fail_diags(m, "lowering");
}

static Value *input_named(Graph *g, const char *name) {
  for (int i = 0; i < g->ninputs; i++)
    if (!strcmp(g->inputs[i]->name, name))
      return g->inputs[i];
  fail_msg("no input %s", name);
  return NULL;
}

static void test_step_by_step(void **state) {
  (void)state;
  Model full, step;
  lower(&full, T);
  ad_compile(&full);
  lower(&step, 1);
  int nstate = ir_step_function(step.g);
  assert_int_equal(nstate, 4);             /* h and c of two layers */
  ad_compile(&step);
  Graph *fg = full.g, *sg = step.g;
  for (int i = 0; i < fg->nparams; i++) {
    fill_value(&full, fg->params[i], FILL_UNIFORM, 3 + i);
    model_set(&step, ir_find_param(sg, fg->params[i]->name), model_get(&full, fg->params[i]));
  }
  Ten ids = ten_new(&full, 2, (int64_t[]){B, T});
  for (int i = 0; i < B * T; i++)
    ids.d[i] = (i * 5 + 2) % V;
  model_set(&full, fg->inputs[0], ids);
  model_run(&full, 0, 2);
  Ten y = model_get(&full, fg->outputs[0]);
  Ten st[4];
  for (int k = 0; k < 4; k++) {               /* zeros, as the full model starts */
    st[k] = ten_new(&step, 2, (int64_t[]){B, 5});
    memset(st[k].d, 0, sizeof(double) * st[k].n);
  }
  for (int t = 0; t < T; t++) {
    Ten x = ten_new(&step, 2, (int64_t[]){B, 1});
    for (int b = 0; b < B; b++)
      x.d[b] = ids.d[b * T + t];
    model_set(&step, input_named(sg, "ids"), x);
    for (int k = 0; k < 4; k++)
      model_set(&step, input_named(sg, rt_arena_printf(step.arena, "state.%d", k)), st[k]);
    model_run(&step, 0, 2);
    Ten ys = model_get(&step, sg->outputs[0]), want = ten_new(&step, 3, (int64_t[]){B, 1, O});
    for (int b = 0; b < B; b++)
      for (int o = 0; o < O; o++)
        want.d[b * O + o] = y.d[(b * T + t) * O + o];
    char what[32];
    snprintf(what, sizeof what, "step %d", t);
    check_ten(what, ys, want, 1e-6);
    for (int k = 0; k < 4; k++)
      st[k] = model_get(&step, sg->outputs[1 + k]);
  }
  model_free(&step);
  model_free(&full);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_step_by_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

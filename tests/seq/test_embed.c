/* embedding (the gather op) and its gradient (scatter_add): rows picked by
 * indices that repeat and one outside the table (a row of zeros), the
 * weight's gradient summing the rows of a repeated index, against loops
 * written here; and dense over the last axis of the embedded sequence. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"
#include "frontend/frontend.h"

enum { B = 4, T = 3, V = 7, E = 5, U = 3 };

static const char *src =
    "model m(ids: i32[4, 3]) -> (y: f32[4, 3, 5], z: f32[4, 3, 3]) {\n"
    "  y = embedding(ids, 7, 5)\n"
    "  z = y |> dense(3)\n"
    "}\n";

static void test_embedding(void **state) {
  (void)state;
  Model m;
  model_new(&m, "embed");
  ir_graph_free(m.g);
  AstFile *f = fe_parse(m.arena, "t.kiln", src, strlen(src), &m.diags);
  Graph *g = m.g = fe_lower(f, NULL, &m.diags);
  if (m.diags.nerrors)
    model_fail_diags(&m, "lowering");
  Value *ids = g->inputs[0], *y = g->outputs[0], *z = g->outputs[1];
  Value *w = ir_find_param(g, "y.weight"), *dw = ir_find_param(g, "z.weight");
  Value *db = ir_find_param(g, "z.bias");
  assert_non_null(w);
  Value *r = ir_input(g, "r", y->type, NOLOC);
  g->loss = sum_all(g, ir_op2(g, OP_mul, y, r, NOLOC));
  w->wrt = true;
  ad_compile(&m);
  const int id[B * T] = {1, 3, 1, 6, 1, 0, 3, 9, 2, 1, 6, 5};   /* 9: outside the table */
  Ten idt = ten_new(&m, 2, (int64_t[]){B, T});
  for (int i = 0; i < B * T; i++)
    idt.d[i] = id[i];
  model_set(&m, ids, idt);
  Value *fill[] = {w, dw, db, r};
  for (int i = 0; i < 4; i++)
    fill_value(&m, fill[i], FILL_UNIFORM, 5 + i);
  model_run(&m, 0, 2);
  Ten W = model_get(&m, w), R = model_get(&m, r), DW = model_get(&m, dw), DB = model_get(&m, db);
  Ten ry = ten_new(&m, 3, (int64_t[]){B, T, E}), rz = ten_new(&m, 3, (int64_t[]){B, T, U});
  Ten rg = ten_new(&m, 2, (int64_t[]){V, E});
  memset(rg.d, 0, sizeof(double) * rg.n);
  for (int i = 0; i < B * T; i++) {
    for (int e = 0; e < E; e++) {
      ry.d[i * E + e] = id[i] < V ? W.d[id[i] * E + e] : 0;
      if (id[i] < V)
        rg.d[id[i] * E + e] += R.d[i * E + e];
    }
    for (int u = 0; u < U; u++) {
      double a = DB.d[u];
      for (int e = 0; e < E; e++)
        a += ry.d[i * E + e] * DW.d[u * E + e];
      rz.d[i * U + u] = a;
    }
  }
  check_ten("embedding", model_get(&m, y), ry, 0);
  check_ten("dense over the sequence", model_get(&m, z), rz, 1e-6);
  check_ten("d loss / d weight", model_get(&m, w->grad), rg, 1e-6);
  model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_embedding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

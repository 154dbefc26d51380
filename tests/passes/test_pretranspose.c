/* The pretranspose pass: a dense layer's x W^T with known W reads a
 * constant W^T instead. Each case builds a model three times and compiles
 * it at -O0, at -O2 with the weights hidden from the passes (the pass
 * cannot run) and at -O2 with them; at batches 1, 3 and 8 (the GEMV, and
 * the GEMM above its rows) and 1 and 2 threads, the -O2 builds must give
 * the same bits (the GEMV and the GEMM sum each output in one order, W
 * transposed or not), and both match -O0. Then the graph it leaves: the
 * matmuls read constants that are W^T of the weights drawn, one per
 * weight; a weight read otherwise too stays; unknown weights and a
 * training graph are left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "dense_harness.h"

/* K over the GEMM's K block (600 > 256: two blocks) in f64 */
static void build_wide_f64(Graph *g) { dense_f64(g, 600, 19); }

static void build_shared(Graph *g) { shared_square(g, 24); }

static const Sight hidden = {.hide_weights = true}, known = {0};

/* Every matmul of g reads a constant [in, out], no trans_b; the one whose
 * K is in and N out reads W^T of the weights drawn for wname. */
static void assert_reads_wt(const OModel *o, const char *wname, int64_t out, int64_t in) {
  const Graph *g = o->m.g;
  const void *w = om_drawn(o, wname);
  RtDType dt = RT_F32;
  int found = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_matmul)
      continue;
    const Value *b = n->in[1];
    int64_t k, c;
    assert_false(n->attr.trans_b);
    assert_int_equal(b->role, V_CONST);
    assert_true(sz_is_const(b->type.dim[0], &k) && sz_is_const(b->type.dim[1], &c));
    if (k != in || c != out)
      continue;
    dt = b->type.dt;
    for (int64_t r = 0; r < out; r++)
      for (int64_t j = 0; j < in; j++)
        assert_true(pass_load(b->data, dt, j * out + r) == pass_load(w, dt, r * in + j));
    found++;
  }
  assert_int_equal(found, 1);
}

static void test_mlp(void **state) {
  Three t;
  three(&t, "mlp", build_mlp, hidden, known);
  const Graph *g = t.on.m.g;
  assert_true(g->weights_baked);
  assert_null(ir_find_param(g, "fc1.weight"));
  assert_null(ir_find_param(g, "fc2.weight"));
  assert_non_null(ir_find_param(g, "fc1.bias"));
  assert_reads_wt(&t.on, "fc1.weight", 37, 20);
  assert_reads_wt(&t.on, "fc2.weight", 11, 37);
  free_three(&t);
}

static void test_wide_f64(void **state) {
  Three t;
  three(&t, "wide_f64", build_wide_f64, hidden, known);
  assert_reads_wt(&t.on, "fc.weight", 19, 600);
  free_three(&t);
}

/* Both W^T readers share one constant; W stays for the plain reader. */
static void test_shared(void **state) {
  Three t;
  three(&t, "shared", build_shared, hidden, known);
  const Graph *g = t.on.m.g;
  const Value *wt = NULL, *w = ir_find_param(g, "w");
  int nconst = 0;
  assert_non_null(w);
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_matmul)
      continue;
    assert_false(n->attr.trans_b);
    if (n->in[1] == w)
      continue;
    assert_true(!wt || wt == n->in[1]);
    nconst += !wt;
    wt = n->in[1];
  }
  assert_int_equal(nconst, 1);
  assert_int_equal(wt->role, V_CONST);
  free_three(&t);
}

/* Hidden weights: the matmuls keep reading their parameters as W^T; a
 * training graph too. */
static void test_needs_weights_and_inference(void **state) {
  Three t;
  three(&t, "hidden", build_mlp, hidden, known);
  const Graph *g = t.off.m.g;
  assert_false(g->weights_baked);
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_matmul)
      assert_true(g->nodes[i]->attr.trans_b && g->nodes[i]->in[1]->role == V_PARAM);
  free_three(&t);
  OModel o;
  Graph *tg = om_compile_training(&o, "training", build_mlp);
  assert_false(tg->weights_baked);
  assert_non_null(ir_find_param(tg, "fc1.weight"));
  model_free(&o.m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp),
      cmocka_unit_test(test_wide_f64),
      cmocka_unit_test(test_shared),
      cmocka_unit_test(test_needs_weights_and_inference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The prepack pass: a matmul whose B is known reads a constant holding B
 * packed into the GEMM's panels. Each case builds a model three times:
 * -O0, -O2 without prepack (no panel geometry given: the pass cannot run)
 * and -O2 with it; at batches 1, 3 and 8 (compiled for 8: the GEMM on the
 * panels at every batch, below the GEMV's rows too) and 1 and 2 threads,
 * the -O2 builds must give the same bits and both match -O0. Then the
 * graph it leaves: every matmul reads rank-4 panels with packed_n set,
 * one constant per (weight, transposed or not); a model compiled for
 * batches the GEMV takes is left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "dense_harness.h"

/* K = 520: three K blocks of 174 rows, the last one of 172; N over several panels */
static void build_wide_f64(Graph *g) { dense_f64(g, 520, 70); }

static void build_shared(Graph *g) { shared_square(g, 300); }

static const Sight unpacked = {0}, packed = {.prepack = true};

/* The distinct panels the matmuls of g read; each matmul reads some. */
static int count_panels(const Graph *g) {
  const Value *seen[16];
  int n = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *m = g->nodes[i];
    if (m->op != OP_matmul)
      continue;
    assert_true(m->attr.packed_n > 0);
    assert_false(m->attr.trans_b);
    assert_int_equal(m->in[1]->role, V_CONST);
    assert_int_equal(m->in[1]->type.rank, 4);
    int j = 0;
    while (j < n && seen[j] != m->in[1])
      j++;
    if (j == n && n < 16)
      seen[n++] = m->in[1];
  }
  return n;
}

static void test_mlp(void **state) {
  Three t;
  three(&t, "mlp", build_mlp, unpacked, packed);
  assert_true(t.on.m.g->weights_baked);
  assert_int_equal(count_panels(t.on.m.g), 2);
  free_three(&t);
}

static void test_wide_f64(void **state) {
  Three t;
  three(&t, "wide_f64", build_wide_f64, unpacked, packed);
  assert_int_equal(count_panels(t.on.m.g), 1);
  free_three(&t);
}

/* W^T's readers share one packing, W's reader has its own. */
static void test_shared(void **state) {
  Three t;
  three(&t, "shared", build_shared, unpacked, packed);
  assert_int_equal(count_panels(t.on.m.g), 2);
  free_three(&t);
}

static void assert_unpacked(const Graph *g) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_matmul)
      assert_true(g->nodes[i]->attr.packed_n == 0 && g->nodes[i]->in[1]->type.rank == 2);
}

/* Compiled for batches of at most the GEMV's rows: nothing packed. */
static void test_gemv_batches(void **state) {
  dense_max_batch = 4;
  OModel o;
  compile(&o, "small", build_mlp, 2, packed);
  assert_unpacked(o.m.g);
  model_free(&o.m);
  dense_max_batch = 8;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp),
      cmocka_unit_test(test_wide_f64),
      cmocka_unit_test(test_shared),
      cmocka_unit_test(test_gemv_batches),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

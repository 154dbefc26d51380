/* The Winograd pass (passes/winograd.c) and its kernels
 * (codegen/conv_winograd.c).
 *
 * - winograd_filter against G g G^T computed here in double precision;
 *   U folded at compile time (a weight the passes see) against U computed
 *   by the op at run time (a weight they do not): the same bits.
 * - Edge shapes: a 3x3 convolution with bias, relu and (where the shapes
 *   allow) a residual fused, at -O3 blocked with the pass, against -O0's
 *   NCHW convolution and against -O3 without it (PassCtx.no_winograd),
 *   within EPS: odd H and W, extents of 1 and 2, an odd
 *   number of output blocks, channels not a multiple of the block, "same",
 *   "valid" and asymmetric padding, batch 1 and 3; the same bits at 1, 2
 *   and 3 threads.
 * - A training step (SGD) through two convolutions: U computed with the
 *   step, the forward convolutions and dx through the second Winograd's,
 *   against -O0 and the direct step, the same bits at 1 and 3 threads.
 * - When the pass applies: 3x3 at stride 1, 8 or 32 channels; not at
 *   stride 2, 1x1, dilation 2, with a U too large for L2, nor with
 *   no_winograd. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include "opt_harness.h"

/* F(2x2, 3x3) adds up to 16 transformed terms before and after the
 * products: a few ulps of the largest, against the direct sum's one. */
#define EPS 1e-5

static Value *param(Graph *g, const char *name, Type t) {
  return ir_param(g, name, t, (Init){.kind = INIT_UNIFORM, .a = -0.5, .b = 0.5}, NOLOC);
}

/* ---- winograd_filter ------------------------------------------------------------- */

static int64_t lanes(void) { return cg_host_lanes(4); }

enum { FOB = 3, FCB = 2 };   /* output and input blocks of the filter tests */

static Value *blocked_weight_input(Graph *g) {
  int64_t b = lanes();
  return ir_input(g, "w", TY(RT_F32, FOB, FCB, 3, 3, b, b), NOLOC);
}

static void build_filter(Graph *g) {
  Value *w = blocked_weight_input(g);
  Attr a = ir_attr();
  ir_output(g, ir_op(g, OP_winograd_filter, &w, 1, &a, NOLOC), "u");
}

/* G g G^T of w [ob, cb, 3, 3, b, b] in double: U[xi, ob, cb, l, o]. */
static Ten reference_filter(Model *m, Ten w) {
  static const double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
  int64_t b = lanes(), units = FOB * FCB, dims[5] = {16, FOB, FCB, b, b};
  Ten u = ten_new(m, 5, dims);
  for (int64_t p = 0; p < units; p++)
    for (int64_t l = 0; l < b; l++)
      for (int64_t o = 0; o < b; o++)
        for (int xi = 0; xi < 16; xi++) {
          double s = 0;
          for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
              s += G[xi / 4][i] * G[xi % 4][j] * w.d[((p * 9 + i * 3 + j) * b + l) * b + o];
          u.d[((xi * units + p) * b + l) * b + o] = s;
        }
  return u;
}

static void test_filter_op(void **state) {
  (void)state;
  OModel o = {0};
  build_filter(model_new(&o.m, "filter"));
  om_compile(&o, 0, 1);
  om_inputs(&o, 4);
  model_run(&o.m, 0, 1);
  Ten w = model_get(&o.m, o.m.g->inputs[0]);
  check_ten("winograd_filter", model_get(&o.m, o.m.g->outputs[0]), reference_filter(&o.m, w), 1e-6);
  model_free(&o.m);
}

/* conv2d_nchwc on a blocked input and a blocked weight parameter, as the
 * layout pass makes it: the Winograd pass then folds U or, with the
 * weights hidden, computes it with winograd_filter. */
static void build_blocked_conv(Graph *g) {
  int64_t b = lanes();
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 2;
  Size d[5] = {sz_var(N), sz_const(FCB), sz_const(7), sz_const(9), sz_const(b)};
  Value *x = ir_input(g, "x", ir_type(RT_F32, 5, d), NOLOC);
  Value *w = param(g, "w", TY(RT_F32, FOB, FCB, 3, 3, b, b));
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
  ir_output(g, ir_op(g, OP_conv2d_nchwc, (Value *[]){x, w}, 2, &a, NOLOC), "y");
}

static void test_folded_filter_matches_runtime(void **state) {
  (void)state;
  OModel known = {0}, hidden = {.hide_weights = true}, direct = {0};
  build_blocked_conv(model_new(&known.m, "known"));
  build_blocked_conv(model_new(&hidden.m, "hidden"));
  build_blocked_conv(model_new(&direct.m, "direct"));
  om_compile(&known, 2, 1);
  om_compile(&hidden, 2, 1);
  om_compile(&direct, 1, 1);
  assert_int_equal(om_count(known.m.g, OP_conv2d_winograd), 1);
  assert_int_equal(om_count(known.m.g, OP_winograd_filter), 0);
  assert_int_equal(om_count(hidden.m.g, OP_winograd_filter), 1);
  OModel *all[] = {&known, &hidden, &direct};
  for (int i = 0; i < 3; i++) {
    om_inputs(all[i], 5);
    model_run(&all[i]->m, 2, 2);
  }
  Ten k = model_get(&known.m, known.m.g->outputs[0]);
  check_ten("folded U against winograd_filter", model_get(&hidden.m, hidden.m.g->outputs[0]), k, 0);
  check_ten("Winograd against direct", k, model_get(&direct.m, direct.m.g->outputs[0]), EPS);
  model_free(&known.m), model_free(&hidden.m), model_free(&direct.m);
}

/* ---- edge shapes ----------------------------------------------------------------- */

typedef struct Geo {
  int64_t c, o, h, w;
  int pad[4];   /* top, left, bottom, right */
} Geo;

static const Geo *cur;

static Value *conv(Graph *g, Value *x, int64_t o, const int *pad, const char *name) {
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  memcpy(a.pad, pad, sizeof a.pad);
  int64_t c = x->type.dim[1].t[0].coef;
  Value *w = param(g, name, TY(RT_F32, o, c, 3, 3));
  return ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC);
}

static Value *bias(Graph *g, int64_t c) {
  Attr a = ir_attr();
  a.rank = 3;
  a.shape[0] = sz_const(c);
  a.shape[1] = a.shape[2] = sz_const(1);
  Value *b = param(g, "conv.bias", TY(RT_F32, c));
  return ir_op(g, OP_reshape, &b, 1, &a, NOLOC);
}

/* x [N, C, H, W] of cur's geometry, N up to 3 */
static Value *edge_input(Graph *g) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 3;
  Size d[4] = {sz_var(N), sz_const(cur->c), sz_const(cur->h), sz_const(cur->w)};
  return ir_input(g, "x", ir_type(RT_F32, 4, d), NOLOC);
}

/* x [N, C, H, W] -> relu(conv(x) + bias) (+ x, relu, where the shapes allow) */
static void build_edge(Graph *g) {
  Value *x = edge_input(g);
  Value *y = ir_op2(g, OP_add, conv(g, x, cur->o, cur->pad, "conv.weight"), bias(g, cur->o), NOLOC);
  y = ir_op1(g, OP_relu, y, NOLOC);
  if (ir_type_eq(&y->type, &x->type))
    y = ir_op1(g, OP_relu, ir_op2(g, OP_add, y, x, NOLOC), NOLOC);
  ir_output(g, y, "y");
}

static const Geo edge_geos[] = {
    {.c = 16, .o = 16, .h = 7, .w = 9, .pad = {1, 1, 1, 1}},     /* odd H and W, residual */
    {.c = 10, .o = 12, .h = 6, .w = 13, .pad = {1, 1, 1, 1}},    /* C, O not multiples of b */
    {.c = 16, .o = 24, .h = 8, .w = 8, .pad = {0, 0, 0, 0}},     /* valid: 6x6, odd O blocks */
    {.c = 8, .o = 8, .h = 5, .w = 4, .pad = {0, 0, 0, 0}},       /* valid: odd OH = 3, OW = 2 */
    {.c = 9, .o = 8, .h = 1, .w = 2, .pad = {1, 1, 1, 1}},       /* extents of 1 and 2 */
    {.c = 8, .o = 17, .h = 11, .w = 30, .pad = {0, 1, 1, 0}},    /* asymmetric, 15 tiles wide */
    {.c = 32, .o = 32, .h = 16, .w = 27, .pad = {1, 1, 1, 1}},   /* three tile groups, residual */
};
enum { NEDGE = sizeof edge_geos / sizeof edge_geos[0] };

/* The model at -O3, blocked, with the winograd pass or without it */
static void compile_blocked(OModel *o, bool winograd) {
  memset(o, 0, sizeof *o);
  build_edge(model_new(&o->m, "edge"));
  o->m.layout = LAYOUT_BLOCKED;
  o->m.no_winograd = !winograd;
  om_compile(o, 3, 7);
}

static void test_edge_shapes(void **state) {
  (void)state;
  for (int i = 0; i < NEDGE; i++) {
    OModel ref = {0}, wino, direct;
    cur = &edge_geos[i];
    build_edge(model_new(&ref.m, "edge"));
    om_compile(&ref, 0, 7);
    compile_blocked(&wino, true);
    compile_blocked(&direct, false);
    assert_int_equal(om_count(wino.m.g, OP_conv2d_winograd), 1);
    assert_int_equal(om_count(wino.m.g, OP_conv2d_nchwc), 0);
    assert_int_equal(om_count(direct.m.g, OP_conv2d_winograd), 0);
    for (int64_t batch = 1; batch <= 3; batch += 2) {
      char what[96];
      OModel *all[] = {&ref, &wino, &direct};
      for (int k = 0; k < 3; k++) {
        om_inputs(all[k], 9 + (uint64_t)batch);
        model_run(&all[k]->m, batch, 2);
      }
      Ten got = model_get(&wino.m, wino.m.g->outputs[0]);
      snprintf(what, sizeof what, "geometry %d batch %lld: Winograd against -O0", i, (long long)batch);
      check_ten(what, got, model_get(&ref.m, ref.m.g->outputs[0]), EPS);
      snprintf(what, sizeof what, "geometry %d batch %lld: Winograd against direct", i, (long long)batch);
      check_ten(what, got, model_get(&direct.m, direct.m.g->outputs[0]), EPS);
      for (int t = 1; t <= 3; t += 2) {
        model_run(&wino.m, batch, t);
        snprintf(what, sizeof what, "geometry %d batch %lld: 2 threads against %d", i, (long long)batch, t);
        check_ten(what, model_get(&wino.m, wino.m.g->outputs[0]), got, 0);
      }
    }
    model_free(&ref.m), model_free(&wino.m), model_free(&direct.m);
  }
}

/* ---- a training step ---------------------------------------------------------------- */

/* conv, bias, tanh, conv (cur's geometry, C = O), an SGD step on y */
static void build_step(Graph *g) {
  Value *x = edge_input(g);
  Value *h = ir_op2(g, OP_add, conv(g, x, cur->o, cur->pad, "c1.weight"), bias(g, cur->o), NOLOC);
  Value *y = conv(g, ir_op1(g, OP_tanh, h, NOLOC), cur->o, cur->pad, "c2.weight");
  om_sgd_step(g, y, 0xf);
}

static void compile_step(OModel *o, int opt, bool winograd) {
  memset(o, 0, sizeof *o);
  build_step(model_new(&o->m, "step"));
  o->m.layout = opt ? LAYOUT_BLOCKED : LAYOUT_COST;
  o->m.no_winograd = !winograd;
  om_compile(o, opt, 7);
}

/* In a training step the weights change, so U is computed with the step:
 * both forward convolutions and the one that gives dx through c2 (a
 * conv2d_nchwc on the flipped weight) run as Winograd's; the step's
 * outputs, gradients and updated weights match -O0's and the direct
 * step's, and are the same bits at 1 and 3 threads. */
static void test_training_step(void **state) {
  (void)state;
  cur = &edge_geos[0];
  OModel ref, wino, direct;
  compile_step(&ref, 0, true);
  compile_step(&wino, 3, true);
  compile_step(&direct, 3, false);
  assert_int_equal(om_count(wino.m.g, OP_conv2d_winograd), 3);
  assert_int_equal(om_count(wino.m.g, OP_winograd_filter), 3);
  assert_int_equal(om_count(wino.m.g, OP_conv2d_nchwc), 0);
  assert_int_equal(om_count(direct.m.g, OP_conv2d_winograd), 0);
  om_run_step(&ref, 3, 2);
  om_run_step(&direct, 3, 2);
  om_run_step(&wino, 3, 1);
  om_compare_outputs(&ref, &wino, 1e-4, "Winograd step against -O0");
  om_compare_step(&ref, &wino, 1e-4, "Winograd step against -O0");
  om_compare_step(&direct, &wino, 1e-4, "Winograd step against the direct step");
  Ten one = model_get(&wino.m, wino.m.g->params[0]);   /* a copy */
  om_run_step(&wino, 3, 3);
  check_ten("a step at 3 threads against 1", model_get(&wino.m, wino.m.g->params[0]), one, 0);
  model_free(&ref.m), model_free(&wino.m), model_free(&direct.m);
}

/* ---- when the pass applies ------------------------------------------------------- */

/* Winograd convolutions of the edge model for geometry q, stride and
 * dilation s, kernel k, the pass on or off. */
static int applied(Geo q, int s, int dil, int k, bool winograd) {
  OModel o = {0};
  Graph *gr = model_new(&o.m, "choice");
  int N = ir_size_var(gr, "N");
  gr->batch_var = N;
  gr->max_batch = 1;
  Size d[4] = {sz_var(N), sz_const(q.c), sz_const(q.h), sz_const(q.w)};
  Value *x = ir_input(gr, "x", ir_type(RT_F32, 4, d), NOLOC);
  Attr a = ir_attr();
  a.k[0] = a.k[1] = k;
  a.stride[0] = a.stride[1] = s;
  a.dil[0] = a.dil[1] = dil;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = dil * (k / 2);
  Value *w = param(gr, "w", TY(RT_F32, q.o, q.c, k, k));
  ir_output(gr, ir_op1(gr, OP_relu, ir_op(gr, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC), NOLOC), "y");
  o.m.layout = LAYOUT_BLOCKED;
  o.m.no_winograd = !winograd;
  o.fast = true;
  om_compile(&o, 3, 1);
  int n = om_count(o.m.g, OP_conv2d_winograd);
  model_free(&o.m);
  return n;
}

static void test_when_it_applies(void **state) {
  (void)state;
  Geo wide = {.c = 32, .o = 32, .h = 8, .w = 8}, narrow = {.c = 8, .o = 8, .h = 8, .w = 8};
  Geo huge = {.c = 128, .o = 128, .h = 4, .w = 4};   /* U of 1 MiB */
  assert_int_equal(applied(wide, 1, 1, 3, true), 1);
  assert_int_equal(applied(narrow, 1, 1, 3, true), 1);
  assert_int_equal(applied(wide, 1, 1, 3, false), 0);
  assert_int_equal(applied(wide, 2, 1, 3, true), 0);
  assert_int_equal(applied(wide, 1, 2, 3, true), 0);
  assert_int_equal(applied(wide, 1, 1, 1, true), 0);
  assert_int_equal(applied(huge, 1, 1, 3, true), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_filter_op),
      cmocka_unit_test(test_folded_filter_matches_runtime),
      cmocka_unit_test(test_edge_shapes),
      cmocka_unit_test(test_training_step),
      cmocka_unit_test(test_when_it_applies),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

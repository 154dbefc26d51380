/* The layout pass (passes/layout.c) and the blocked kernels
 * (codegen/conv_blocked.c). Each case builds a graph twice, compiles one
 * copy at -O1 (NCHW, no fusion) and the other at -O3 with the weights
 * visible to the passes, runs both through the JIT on the same inputs and
 * weights, and compares the outputs within 1e-5 (the direct convolution
 * sums in another order). PassCtx.layout (LAYOUT_BLOCKED or LAYOUT_NHWC) forces that choice
 * where a case tests the kernels rather than the cost model;
 * no_winograd keeps the 3x3 convolutions on that kernel.
 *
 * Cases: convolutions of odd shapes (channels not multiples of 8, 1x1,
 * stride 2, asymmetric kernel and padding, dilation) with a bias, relu and
 * a residual fused, blocked and with the input NHWC; a region with pools,
 * a residual add and the global average (conversions only at its
 * boundaries, weights and bias converted at compile time: no relayout
 * reads a constant or a parameter), blocked and NHWC (its first
 * convolution reads the input unpadded, the second the blocked values of
 * the region); grouped convolutions stay NCHW; the cost model's own choice
 * (a ResNet layer blocked; a ResNet stem of 3 channels NHWC; LeNet's first
 * two layers NHWC; LAYOUT_NCHW overriding it); the same results at 1,
 * 2 and 3 threads, in one parallel region per call. Training steps
 * (layout_training): two convolutions of
 * each odd shape with their gradients (dw by conv2d_nchwc_bwd_filter, dx
 * at stride 1 by conv2d_nchwc on a flipped weight) and an SGD update,
 * loss, gradients and updated weights against -O1; the cost model's
 * choice on a ResNet-like pair (3 -> 32 -> 32 channels: the first layer
 * stays NCHW); a residual block with batchnorm in training mode, one
 * blocked region from its input to the global pool, gradients included;
 * the same steps, bit for bit, at 1, 2 and 3 threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include "opt_harness.h"

#define EPS 1e-5

static Value *op1(Graph *g, Op op, Value *a) { return ir_op1(g, op, a, NOLOC); }
static Value *op2(Graph *g, Op op, Value *a, Value *b) { return ir_op2(g, op, a, b, NOLOC); }

static Value *param(Graph *g, const char *name, Type t) {
  return ir_param(g, name, t, (Init){.kind = INIT_UNIFORM, .a = -0.5, .b = 0.5}, NOLOC);
}

static Value *batch_input(Graph *g, int64_t c, int64_t h, int64_t w) {
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 3;
  Size d[4] = {sz_var(N), sz_const(c), sz_const(h), sz_const(w)};
  return ir_input(g, "x", ir_type(RT_F32, 4, d), NOLOC);
}

/* A convolution's geometry: kernel, stride, dilation, pads (t, l, b, r), groups. */
typedef struct Geo {
  int64_t c, o, h, w;
  int kh, kw, stride, dil, pad[4], groups;
} Geo;

static Value *conv(Graph *g, Value *x, const Geo *q, const char *name) {
  Attr a = ir_attr();
  a.k[0] = q->kh, a.k[1] = q->kw;
  a.stride[0] = a.stride[1] = q->stride;
  a.dil[0] = a.dil[1] = q->dil;
  memcpy(a.pad, q->pad, sizeof a.pad);
  a.groups = q->groups ? q->groups : 1;
  int64_t c = x->type.dim[1].t[0].coef;
  Value *w = param(g, name, TY(RT_F32, q->o, c / a.groups, q->kh, q->kw));
  return ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &a, NOLOC);
}

static Value *bias(Graph *g, const char *name, int64_t c) {
  Attr a = ir_attr();
  a.rank = 3;
  a.shape[0] = sz_const(c);
  a.shape[1] = a.shape[2] = sz_const(1);
  Value *b = param(g, name, TY(RT_F32, c));
  return ir_op(g, OP_reshape, &b, 1, &a, NOLOC);
}

static Value *pool(Graph *g, Op op, Value *x) {
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  a.stride[0] = a.stride[1] = 2;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
  return ir_op(g, op, &x, 1, &a, NOLOC);
}

/* ---- building, running, comparing ------------------------------------------------ */

typedef struct Pair {
  OModel ref, got;
} Pair;

static const Geo *cur_geo;

/* force: the layout pass's choice forced, or LAYOUT_COST for its cost model's */
static void compile_pair(Pair *p, const char *name, void (*build)(Graph *), PassLayout force) {
  memset(p, 0, sizeof *p);
  build(model_new(&p->ref.m, name));
  build(model_new(&p->got.m, name));
  om_compile(&p->ref, 1, 5);
  p->got.m.layout = force;
  p->got.m.no_winograd = true;   /* the direct kernel's cases; Winograd's are test_winograd's */
  om_compile(&p->got, 3, 5);
  assert_int_equal(ir_verify(p->got.m.g), 0);
}

static void run_pair(Pair *p, int64_t batch, int threads) {
  OModel *o[2] = {&p->ref, &p->got};
  for (int i = 0; i < 2; i++) {
    om_inputs(o[i], 8);
    model_run(&o[i]->m, batch, threads);
  }
  om_compare_outputs(&p->ref, &p->got, EPS, p->got.m.g->name);
}

static void free_pair(Pair *p) {
  model_free(&p->ref.m);
  model_free(&p->got.m);
}

/* No relayout reads data known at compile time: weights and biases were
 * converted then. Returns the number of relayouts. */
static int relayouts_of_runtime_values(const Graph *g) {
  int k = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_conv2d_nchwc)
      assert_int_equal(n->in[1]->role, V_CONST);
    if (n->op != OP_relayout)
      continue;
    const Value *v = n->in[0];
    while (v->role == V_TEMP && v->def->op == OP_reshape)
      v = v->def->in[0];
    assert_true(v->role == V_TEMP || v->role == V_INPUT);
    k++;
  }
  return k;
}

/* The input lanes of the k-th conv2d_nchwc: b blocked, C when it reads NHWC. */
static int64_t input_lanes(const Graph *g, int k) {
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    int64_t lanes = -1;
    if (n->op == OP_conv2d_nchwc && k-- == 0) {
      assert_true(sz_is_const(n->in[0]->type.dim[4], &lanes));
      return lanes;
    }
  }
  fail_msg("no conv2d_nchwc %d", k);
  return -1;
}

/* The output lanes of conv2d_nchwc: the target's b. */
static int64_t output_lanes(const Graph *g) {
  int64_t lanes = -1;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_conv2d_nchwc)
      sz_is_const(g->nodes[i]->out[0]->type.dim[4], &lanes);
  return lanes;
}

/* ---- odd shapes ------------------------------------------------------------------ */

/* conv + bias + relu, plus the input when the shapes allow a residual */
static void build_odd(Graph *g) {
  const Geo *q = cur_geo;
  Value *x = batch_input(g, q->c, q->h, q->w);
  Value *y = op1(g, OP_relu, op2(g, OP_add, conv(g, x, q, "conv.weight"), bias(g, "conv.bias", q->o)));
  if (sz_eq(y->type.dim[1], x->type.dim[1]) && sz_eq(y->type.dim[2], x->type.dim[2]) &&
      sz_eq(y->type.dim[3], x->type.dim[3]))
    y = op1(g, OP_relu, op2(g, OP_add, y, x));
  ir_output(g, y, "y");
}

/* Odd shapes: channels not multiples of 8, 1x1, stride 2, asymmetric
 * kernel and padding, dilation. */
static const Geo odd_geos[] = {
    {.c = 3, .o = 5, .h = 7, .w = 9, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}},
    {.c = 10, .o = 10, .h = 6, .w = 13, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}},
    {.c = 10, .o = 12, .h = 6, .w = 15, .kh = 3, .kw = 3, .stride = 2, .dil = 1, .pad = {1, 1, 1, 1}},
    {.c = 9, .o = 17, .h = 5, .w = 8, .kh = 1, .kw = 1, .stride = 1, .dil = 1},
    {.c = 16, .o = 24, .h = 7, .w = 7, .kh = 1, .kw = 1, .stride = 2, .dil = 1},
    {.c = 4, .o = 8, .h = 9, .w = 14, .kh = 3, .kw = 3, .stride = 1, .dil = 2, .pad = {2, 2, 2, 2}},
    {.c = 7, .o = 9, .h = 8, .w = 19, .kh = 2, .kw = 5, .stride = 1, .dil = 1, .pad = {1, 0, 0, 2}},
    {.c = 1, .o = 8, .h = 12, .w = 12, .kh = 5, .kw = 5, .stride = 1, .dil = 1},
};
enum { NODD = sizeof odd_geos / sizeof odd_geos[0] };

static void test_odd_shapes(void **state) {
  (void)state;
  for (size_t i = 0; i < 2 * NODD; i++) {
    Pair p;
    bool nhwc = i % 2;
    cur_geo = &odd_geos[i / 2];
    compile_pair(&p, "odd", build_odd, nhwc ? LAYOUT_NHWC : LAYOUT_BLOCKED);
    const Graph *g = p.got.m.g;
    assert_int_equal(om_count(g, OP_conv2d_nchwc), 1);
    assert_int_equal(om_count(g, OP_conv2d), 0);
    assert_int_equal(input_lanes(g, 0), nhwc ? cur_geo->c : output_lanes(g));
    /* x in (one channel enters NHWC by a reshape), y out; a residual reads x blocked */
    int in = nhwc && cur_geo->c == 1 ? 0 : 1, res = nhwc && cur_geo->c == cur_geo->o;
    assert_int_equal(relayouts_of_runtime_values(g), in + res + 1);
    run_pair(&p, 3, 2);
    run_pair(&p, 1, 1);
    free_pair(&p);
  }
}

/* ---- a region -------------------------------------------------------------------- */

/* conv, bias, relu, maxpool, conv, residual, relu, avgpool, global average */
static void build_region(Graph *g) {
  Geo a = {.o = 12, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}};
  Value *x = batch_input(g, 5, 11, 14);
  Value *h = op1(g, OP_relu, op2(g, OP_add, conv(g, x, &a, "c1.weight"), bias(g, "c1.bias", 12)));
  h = pool(g, OP_maxpool2d, h);
  Value *r = conv(g, h, &a, "c2.weight");
  h = op1(g, OP_relu, op2(g, OP_add, r, h));
  ir_output(g, h, "mid");               /* read outside: converted back */
  h = pool(g, OP_avgpool2d, h);
  Attr m = ir_attr();
  m.axes = 0xc;
  ir_output(g, ir_op(g, OP_mean, &h, 1, &m, NOLOC), "y");
}

/* Blocked, then NHWC: x (5 channels) enters the first convolution
 * unpadded; the second reads the blocked values made in the region. */
static void test_region(void **state) {
  (void)state;
  for (int nhwc = 0; nhwc < 2; nhwc++) {
    Pair p;
    compile_pair(&p, "region", build_region, nhwc ? LAYOUT_NHWC : LAYOUT_BLOCKED);
    const Graph *g = p.got.m.g;
    assert_int_equal(om_count(g, OP_conv2d_nchwc), 2);
    assert_int_equal(input_lanes(g, 0), nhwc ? 5 : output_lanes(g));
    assert_int_equal(input_lanes(g, 1), output_lanes(g));
    assert_int_equal(om_count(g, OP_relayout), 3);            /* x in; mid and y out */
    assert_int_equal(relayouts_of_runtime_values(g), 3);
    assert_true(g->weights_baked);
    assert_int_equal(g->nparams, 0);                          /* all converted */
    run_pair(&p, 3, 2);
    run_pair(&p, 2, 1);
    free_pair(&p);
  }
}

/* ---- what stays NCHW --------------------------------------------------------------- */

static void build_grouped(Graph *g) {
  Geo a = {.o = 8, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}, .groups = 2};
  Value *x = batch_input(g, 8, 6, 6);
  ir_output(g, op1(g, OP_relu, conv(g, x, &a, "c.weight")), "y");
}

static void test_grouped_stays(void **state) {
  (void)state;
  Pair p;
  compile_pair(&p, "grouped", build_grouped, LAYOUT_BLOCKED);
  assert_int_equal(om_count(p.got.m.g, OP_conv2d_nchwc), 0);
  assert_int_equal(om_count(p.got.m.g, OP_relayout), 0);
  run_pair(&p, 3, 2);
  free_pair(&p);
}

/* The cost model alone: a ResNet layer (32 -> 32 channels at 32x32) is
 * cheaper blocked (NHWC would be the same: 32 channels need no padding);
 * a ResNet stem (3 -> 32 -> 32) NHWC, its first convolution reading the 3
 * channels unpadded; LeNet's first two layers (1 -> 6 -> 16 channels)
 * NHWC, the one channel entering by a reshape, where blocked they cost
 * more than NCHW (1 channel padded to 8). */
static void build_resnet_layer(Graph *g) {
  Geo a = {.o = 32, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}};
  Value *x = batch_input(g, 32, 32, 32);
  ir_output(g, op1(g, OP_relu, conv(g, x, &a, "c.weight")), "y");
}

static void build_resnet_stem(Graph *g) {
  Geo a = {.o = 32, .kh = 3, .kw = 3, .stride = 1, .dil = 1, .pad = {1, 1, 1, 1}};
  Value *x = batch_input(g, 3, 32, 32);
  Value *h = op1(g, OP_relu, conv(g, x, &a, "c1.weight"));
  ir_output(g, op1(g, OP_relu, conv(g, h, &a, "c2.weight")), "y");
}

static void build_lenet(Graph *g) {
  Geo a = {.o = 6, .kh = 5, .kw = 5, .stride = 1, .dil = 1};
  Value *x = batch_input(g, 1, 28, 28);
  Value *h = pool(g, OP_maxpool2d, op1(g, OP_relu, conv(g, x, &a, "c1.weight")));
  a.o = 16;
  ir_output(g, pool(g, OP_maxpool2d, op1(g, OP_relu, conv(g, h, &a, "c2.weight"))), "y");
}

static void test_cost_model(void **state) {
  (void)state;
  Pair p;
  compile_pair(&p, "resnet_layer", build_resnet_layer, LAYOUT_COST);
  assert_int_equal(om_count(p.got.m.g, OP_conv2d_nchwc), 1);
  assert_int_equal(input_lanes(p.got.m.g, 0), output_lanes(p.got.m.g));
  run_pair(&p, 2, 2);
  free_pair(&p);
  compile_pair(&p, "resnet_stem", build_resnet_stem, LAYOUT_COST);
  assert_int_equal(om_count(p.got.m.g, OP_conv2d_nchwc), 2);
  assert_int_equal(input_lanes(p.got.m.g, 0), 3);
  assert_int_equal(input_lanes(p.got.m.g, 1), output_lanes(p.got.m.g));
  run_pair(&p, 2, 2);
  free_pair(&p);
  compile_pair(&p, "lenet", build_lenet, LAYOUT_COST);
  assert_int_equal(om_count(p.got.m.g, OP_conv2d_nchwc), 2);
  assert_int_equal(om_count(p.got.m.g, OP_conv2d), 0);
  assert_int_equal(input_lanes(p.got.m.g, 0), 1);
  assert_int_equal(om_count(p.got.m.g, OP_relayout), 1);    /* only out: x enters by a reshape */
  run_pair(&p, 3, 2);
  free_pair(&p);
  compile_pair(&p, "lenet", build_lenet, LAYOUT_NCHW);           /* a forced NCHW overrides it */
  assert_int_equal(om_count(p.got.m.g, OP_conv2d_nchwc), 0);
  free_pair(&p);
}

/* ---- threads --------------------------------------------------------------------- */

static void test_threads(void **state) {
  (void)state;
  Pair p;
  rt_team_backoff_test(false, 0);   /* it counts regions: no call on one thread for a busy machine */
  compile_pair(&p, "region", build_region, LAYOUT_NHWC);
  om_inputs(&p.got, 3);
  model_run(&p.got.m, 3, 1);
  Ten one = model_get(&p.got.m, p.got.m.g->outputs[0]);
  for (int t = 2; t <= 3; t++) {   /* 3: an odd share of conv2d_nchwc's row bands */
    int64_t regions = rt_parallel_regions();
    model_run(&p.got.m, 3, t);
    assert_int_equal(rt_parallel_regions() - regions, 1);   /* one team for all the kernels */
    check_ten("1 against 2 and 3 threads", model_get(&p.got.m, p.got.m.g->outputs[0]), one, 0);
  }
  free_pair(&p);
}

/* ---- training steps ---------------------------------------------------------------- */

/* conv, bias, tanh, conv (the same geometry), loss sum(y * target), SGD:
 * smooth, so that no rounding difference flips a gradient. */
static void build_step(Graph *g) {
  const Geo *q = cur_geo;
  Value *x = batch_input(g, q->c, q->h, q->w);
  Value *h = op1(g, OP_tanh, op2(g, OP_add, conv(g, x, q, "c1.weight"), bias(g, "c1.bias", q->o)));
  Value *y = conv(g, h, q, "c2.weight");
  om_sgd_step(g, y, 0xf);
}

static void check_step(Pair *p, int64_t batch) {
  om_run_step(&p->ref, batch, 2);
  om_run_step(&p->got, batch, 2);
  om_compare_outputs(&p->ref, &p->got, 1e-4, p->got.m.g->name);
  om_compare_step(&p->ref, &p->got, 1e-4, p->got.m.g->name);
}

static void test_train_odd_shapes(void **state) {
  (void)state;
  for (size_t i = 0; i < NODD; i++) {
    Pair p;
    cur_geo = &odd_geos[i];
    compile_pair(&p, "step", build_step, LAYOUT_BLOCKED);
    const Graph *g = p.got.m.g;
    bool s1 = odd_geos[i].stride == 1;
    assert_int_equal(om_count(g, OP_conv2d), 0);
    assert_int_equal(om_count(g, OP_conv2d_bwd_filter), 0);
    assert_int_equal(om_count(g, OP_conv2d_nchwc_bwd_filter), 2);
    assert_int_equal(om_count(g, OP_conv2d_bwd_data), s1 ? 0 : 1);   /* stride 2 stays */
    assert_int_equal(om_count(g, OP_conv2d_nchwc), s1 ? 3 : 2);
    assert_int_equal(om_count(g, OP_block_weight), s1 ? 3 : 2);
    check_step(&p, 3);
    check_step(&p, 1);
    free_pair(&p);
  }
}

/* The cost model on a training step: 3 -> 32 -> 32 channels at 32x32. The
 * first layer stays NCHW (3 channels padded to 8, next to an output
 * conversion), the second goes blocked with its gradients. */
static void build_step_resnet(Graph *g) {
  static const Geo a = {.c = 3, .o = 32, .h = 32, .w = 32, .kh = 3, .kw = 3, .stride = 1,
                        .dil = 1, .pad = {1, 1, 1, 1}};
  cur_geo = &a;
  build_step(g);
}

static void test_train_cost_model(void **state) {
  (void)state;
  Pair p;
  compile_pair(&p, "step_resnet", build_step_resnet, LAYOUT_COST);
  const Graph *g = p.got.m.g;
  assert_int_equal(om_count(g, OP_conv2d), 1);
  assert_int_equal(om_count(g, OP_conv2d_bwd_filter), 1);
  assert_int_equal(om_count(g, OP_conv2d_nchwc), 2);            /* c2 and its dx */
  assert_int_equal(om_count(g, OP_conv2d_nchwc_bwd_filter), 1);
  check_step(&p, 2);
  free_pair(&p);
  compile_pair(&p, "step_resnet", build_step_resnet, LAYOUT_NCHW);
  assert_int_equal(om_count(p.got.m.g, OP_relayout), 0);
  free_pair(&p);
}

/* batchnorm in a training step as frontend/layers.c builds it: the
 * batch's mean and biased variance over N, H and W (no running
 * statistics: they are state, outside the gradients). */
static Value *bn_train(Graph *g, Value *x, const char *name) {
  char buf[64];
  Attr a = ir_attr(), r = ir_attr();
  a.axes = 0xd;
  a.keepdim = true;
  r.rank = 1;
  r.shape[0] = x->type.dim[1];
  Value *mean = ir_op(g, OP_mean, &x, 1, &a, NOLOC);
  Value *xc = op2(g, OP_sub, x, mean);
  Value *var = ir_op(g, OP_mean, (Value *[]){op2(g, OP_mul, xc, xc)}, 1, &a, NOLOC);
  int64_t c = x->type.dim[1].t[0].coef;
  snprintf(buf, sizeof buf, "%s.weight", name);
  Value *w = param(g, buf, TY(RT_F32, c));
  snprintf(buf, sizeof buf, "%s.bias", name);
  Value *b = param(g, buf, TY(RT_F32, c));
  Attr n = ir_attr();
  n.axis = 1;
  n.eps = 1e-5;
  Value *in[5] = {x, w, b, ir_op(g, OP_reshape, &mean, 1, &r, NOLOC), ir_op(g, OP_reshape, &var, 1, &r, NOLOC)};
  return ir_op(g, OP_batchnorm, in, 5, &n, NOLOC);
}

/* A residual block of 16 channels at 6x5 in training, as the ResNet of
 * bench/models: conv, batchnorm, relu, conv, batchnorm, the input added,
 * relu, global average pool, loss sum(y * target), SGD. */
static void build_step_block(Graph *g) {
  static const Geo q = {.c = 16, .o = 16, .h = 6, .w = 5, .kh = 3, .kw = 3, .stride = 1,
                        .dil = 1, .pad = {1, 1, 1, 1}};
  Value *x = batch_input(g, q.c, q.h, q.w);
  Value *h = op1(g, OP_relu, bn_train(g, conv(g, x, &q, "c1.weight"), "bn1"));
  h = op1(g, OP_relu, op2(g, OP_add, x, bn_train(g, conv(g, h, &q, "c2.weight"), "bn2")));
  Attr gap = ir_attr();
  gap.axes = 0xc;
  Value *y = ir_op(g, OP_mean, &h, 1, &gap, NOLOC);
  om_sgd_step(g, y, 0x3);
}

/* The whole block is one blocked region, batchnorm, relu, the residual
 * add, the pool and all their gradients included: the input is converted
 * once (for conv c1 and the residual add), per-channel values enter and
 * leave by reshapes, and nothing converts back. Loss, gradients and the
 * updated weights against -O1, by the cost model's choice. */
static void test_train_region(void **state) {
  (void)state;
  Pair p;
  compile_pair(&p, "step_block", build_step_block, LAYOUT_COST);
  const Graph *g = p.got.m.g;
  assert_int_equal(om_count(g, OP_conv2d) + om_count(g, OP_conv2d_bwd_data), 0);
  assert_int_equal(om_count(g, OP_conv2d_bwd_filter) + om_count(g, OP_batchnorm), 0);
  assert_int_equal(om_count(g, OP_conv2d_nchwc_bwd_filter), 2);
  assert_int_equal(om_count(g, OP_relayout), 1);
  check_step(&p, 3);
  check_step(&p, 1);
  free_pair(&p);
}

/* The filter gradient sums in one fixed order per unit, and so do the
 * blocked batchnorm's sums over N, H and W: the same bits at any thread
 * count. */
static void build_step_threads(Graph *g) {
  static const Geo a = {.c = 10, .o = 12, .h = 9, .w = 11, .kh = 3, .kw = 3, .stride = 1,
                        .dil = 1, .pad = {1, 1, 1, 1}};
  cur_geo = &a;
  build_step(g);
}

static void test_train_threads(void **state) {
  (void)state;
  void (*builds[])(Graph *) = {build_step_threads, build_step_block};
  for (int b = 0; b < 2; b++) {
    Pair p;
    compile_pair(&p, "step_threads", builds[b], LAYOUT_BLOCKED);
    Graph *g = p.got.m.g;
    Ten one[8], two[8];
    int k = 0;
    om_run_step(&p.got, 3, 1);
    for (int i = 0; i < g->nparams; i++)
      if (g->params[i]->grad)
        one[k++] = model_get(&p.got.m, g->params[i]->grad);
    assert_true(k >= 3);
    for (int t = 2; t <= 3; t++) {
      om_run_step(&p.got, 3, t);
      for (int i = 0, j = 0; i < g->nparams; i++)
        if (g->params[i]->grad)
          two[j++] = model_get(&p.got.m, g->params[i]->grad);
      for (int i = 0; i < k; i++)
        check_ten("1 against 2 and 3 threads", two[i], one[i], 0);
    }
    free_pair(&p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_odd_shapes),
      cmocka_unit_test(test_region),
      cmocka_unit_test(test_grouped_stays),
      cmocka_unit_test(test_cost_model),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_train_odd_shapes),
      cmocka_unit_test(test_train_cost_model),
      cmocka_unit_test(test_train_region),
      cmocka_unit_test(test_train_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

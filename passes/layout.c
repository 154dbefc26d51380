/* Layout selection, for inference: NCHW, blocked NCHW{b}c or NHWC per
 * region of convolutions (TVM's conv2d_NCHWc with layout_transform).
 *
 * A region is a connected set of nodes that can work on a blocked tensor
 * [N, C/b, H, W, b] (ops.def's relayout): conv2d (groups 1, f32, weight
 * data known at compile time), max and average pooling, elementwise ops
 * and add, sub, mul, maximum, minimum whose output is 4-D, and mean over H
 * and W (global average pool), joined where one's 4-D output is another's
 * input. b is the target's f32 lanes (cx->lanes: 8 on AVX2, 16 on
 * AVX-512). Channels past C are zeros; the elementwise ops allowed map
 * zero inputs to finite values (no log, rsqrt, div or pow), and the
 * weights of a padding input channel are zeros, so the padding never
 * reaches a real channel.
 *
 * NHWC is the blocked layout with one block of all C channels, [N, 1, H,
 * W, C], and needs no padding. It pays where a convolution reads a value
 * from outside its region with C not a multiple of b (a first layer of 3
 * channels does 8/3 of its FLOPs blocked, 8 for 1 channel): an NHWC
 * region is a blocked region whose convolutions read such entering
 * values as NHWC (conv2d_nchwc with bi = C input lanes), unpadded. Inside
 * a region the two would differ only in strides, and the blocked layout
 * keeps the fused epilogue's whole vectors, so values made in the region
 * stay blocked.
 *
 * For each region with a convolution, the cost model (below) estimates
 * the cycles of its convolutions as an implicit GEMM in NCHW against the
 * direct convolution, blocked or with NHWC entries, plus the conversions
 * at its boundaries, and the cheapest wins. A convolution that alone
 * costs more in the cheaper of those than in NCHW plus the conversion of
 * its output stays out of any region. A region is rewritten: conv2d becomes
 * conv2d_nchwc with its weight converted now, a constant [O/b, C/bi, KH,
 * KW, bi, b]; the other ops are rebuilt on the blocked values (the pools and
 * mean take the 5-D tensor as it is); broadcast operands known at compile
 * time (a bias [C, 1, 1]) are converted now, others by a relayout or a
 * reshape; values read outside the region get a relayout back, placed
 * after their producer. Weights read from parameters are baked
 * (g->weights_baked). Training graphs have their own entry (below,
 * layout_training): their weights are parameters the step updates. */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

/* ---- the cost model --------------------------------------------------------------
 *
 * Cycles of one core (the kernels parallelise alike). NCHW: the implicit
 * GEMM runs at nchw_fpc FLOP per cycle and gathers its column panels (C *
 * KH * KW by OH * OW floats per image, packed once, never stored whole) at
 * pack_bpc bytes per cycle. Direct (blocked or NHWC input): blocked_fpc on
 * whole 6-column tiles and edge_fpc on the single columns of a row's tail,
 * on channels padded to b (an NHWC input's are not). A relayout moves its
 * bytes (read and written) at copy_bpc.
 *
 * Calibrated on this project's AVX2 machine (znver3 at 3.2 GHz, 1 thread,
 * load average 9-10, CPU-time medians of bench/bench_kiln -O3 with the
 * choice forced by PassCtx.layout) on one convolution + ReLU per model, its
 * conversions included; the constants minimise the squared log ratio of
 * model to measurement (a grid search; rms log error 0.16):
 *
 *   ms measured (model)     nchw           blocked        nhwc
 *   32->32 3x3 32x32, b32   16.02 (18.20)  12.64 (12.16)  11.74 (12.16)
 *   3->32 3x3 32x32, b32     2.01 (1.71)    3.81 (3.82)    3.17 (2.33)
 *   1->6 5x5 28x28, b64      0.70 (0.71)    2.34 (2.18)    0.34 (0.51)
 *   6->16 5x5 12x12, b64     0.71 (0.75)    0.61 (0.58)    0.42 (0.47)
 *
 * The implicit GEMM halved the NCHW ResNet of bench/models at batch 32
 * (2.47 GFLOP: 111 ms with im2col, 52 ms now; blocked 35 ms): no column
 * matrix is written, what remains besides the FLOPs is the packing, large
 * against them where O is small (2 * O FLOP per float packed: LeNet's
 * first layer, O = 6). Whole models then (ms): LeNet-5 at batch 64 1.44
 * NCHW, 3.01 blocked, 0.87 NHWC, the model's choice (NHWC) 0.86; the
 * ResNet at batch 1 2.05, 1.03, 1.01, chosen (NHWC) 0.98. */
typedef struct LayoutCost {
  double nchw_fpc;         /* FLOP per cycle of the NCHW implicit GEMM */
  double pack_bpc;         /* bytes per cycle of its column panels, gathered */
  double blocked_fpc;      /* FLOP per cycle of the direct convolution, whole tiles */
  double edge_fpc;         /* ... on a row's last OW % 6 columns */
  double copy_bpc;         /* bytes per cycle of a relayout */
} LayoutCost;

static const LayoutCost layout_cost = {
    .nchw_fpc = 14.0, .pack_bpc = 2.5, .blocked_fpc = 20.0, .edge_fpc = 17.0, .copy_bpc = 2.0,
};

/* A region's layout (LAYOUT_NCHW: left as it is). */

typedef struct Layout {
  Graph *g;
  PassCtx *cx;
  int b;                   /* lanes */
  int *region;             /* [nnodes at start]: region of node i (union-find root), -1: none */
  bool *used_outside;      /* [nvals at start] */
  Value **blk;             /* [nvals at start]: a value's blocked form: made by the region,
                              or converted for it (once) */
  Value **back;            /* [nvals at start]: its relayout back, for readers outside */
  Value **nhwc;            /* [nvals at start]: its NHWC form, for convolutions it enters */
  int *owner;              /* per new node: the old node it follows */
  int nowner, capowner;
  int n0, v0;              /* nodes and values before the rewrite */
  bool training;           /* layout_training's regions (below) */
} Layout;

static bool is_4d_f32(const Value *v) { return v->type.rank == 4 && v->type.dt == RT_F32; }

static bool const_dim(Size s, int64_t *n) { return sz_is_const(s, n); }

/* The data of v known now: a constant, a parameter or state through the
 * driver, or a reshape of one (same order). */
static const void *known(Layout *L, const Value *v, bool *param) {
  return pass_known_data(L->g, L->cx, v, param);
}

/* Elementwise and broadcast ops that work unchanged on a blocked tensor
 * and keep its zero padding finite. */
static bool lane_safe(Op op) {
  switch (op) {
  case OP_log: case OP_rsqrt: case OP_cast: case OP_div: case OP_pow:
    return false;
  case OP_add: case OP_sub: case OP_mul: case OP_maximum: case OP_minimum:
    return true;
  default:
    return op_is(op, CAT_ELEMWISE);
  }
}

/* Operand v of an op whose output is [N, C, H, W]: each of its dims
 * (aligned right) the output's or 1. */
static bool broadcasts(const Value *v, const Type *o) {
  if (v->type.dt != o->dt || v->type.rank > 4)
    return false;
  for (int i = 0; i < v->type.rank; i++) {
    Size d = v->type.dim[i], od = o->dim[4 - v->type.rank + i];
    int64_t one;
    if (!sz_eq(d, od) && !(sz_is_const(d, &one) && one == 1))
      return false;
  }
  return true;
}

static int64_t cdim(const Graph *g, Size s) {
  Type t = ir_type(RT_F32, 1, &s);
  return ir_numel_max(g, &t);
}

/* groups 1, channels known, extents bound (the cost model needs them) */
static bool conv_pays(const Layout *L, const Node *n);

/* PassCtx.layout overrides the cost model (calibration, tests) */
static bool forced(const Layout *L) { return L->cx->layout != LAYOUT_COST; }

static bool conv_ok(Layout *L, const Node *n) {
  bool param = false;
  int64_t c, o;
  const Type *y = &n->out[0]->type;
  return n->attr.groups == 1 && is_4d_f32(n->in[0]) && const_dim(n->in[0]->type.dim[1], &c) &&
         const_dim(y->dim[1], &o) && cdim(L->g, y->dim[0]) > 0 && cdim(L->g, y->dim[2]) > 0 &&
         cdim(L->g, y->dim[3]) > 0 && known(L, n->in[1], &param) && conv_pays(L, n);
}

static bool train_blockable(Layout *L, const Node *n);

/* Whether node n can join a region. */
static bool blockable(Layout *L, const Node *n) {
  const Value *y = n->out[0];
  if (L->training)
    return train_blockable(L, n);
  switch (n->op) {
  case OP_conv2d:
    return conv_ok(L, n);
  case OP_maxpool2d: case OP_avgpool2d:
    return is_4d_f32(n->in[0]);
  case OP_mean:
    return is_4d_f32(n->in[0]) && n->attr.axes == 0xc;
  default:
    break;
  }
  if (!op_is(n->op, CAT_ELEMWISE | CAT_BCAST) || !lane_safe(n->op) || !is_4d_f32(y) || n->nout != 1)
    return false;
  int64_t c;
  if (!const_dim(y->type.dim[1], &c))
    return false;
  for (int i = 0; i < n->nin; i++)
    if (!broadcasts(n->in[i], &y->type))
      return false;
  return true;
}

/* ---- regions -------------------------------------------------------------------- */

static int find(int *r, int i) {
  while (r[i] != i)
    i = r[i] = r[r[i]];
  return i;
}

/* A region's last node, whose output is not blocked: mean (inference; its
 * result converted back) or a filter gradient (training; dw is OIHW). */
static bool ends_region(const Layout *L, const Node *n) {
  return n->op == (L->training ? OP_conv2d_bwd_filter : OP_mean);
}

/* Input j of n is an activation, which it reads blocked (not a weight). */
static bool blocked_operand(const Node *n, int j) {
  return (n->op != OP_conv2d && n->op != OP_conv2d_bwd_data) || j == 0;
}

/* A blocked value flows from p to n: both blockable, the value 4-D and p
 * not a region's end. */
static void build_regions(Layout *L) {
  Graph *g = L->g;
  for (int i = 0; i < L->n0; i++)
    L->region[i] = blockable(L, g->nodes[i]) ? i : -1;
  for (int i = 0; i < L->n0; i++) {
    Node *n = g->nodes[i];
    if (L->region[i] < 0)
      continue;
    for (int j = 0; j < n->nin; j++) {
      Value *v = n->in[j];
      if (v->role != V_TEMP || !is_4d_f32(v) || ends_region(L, v->def))
        continue;
      int p = v->def->id;
      if (L->region[p] >= 0 && blocked_operand(n, j))
        L->region[find(L->region, i)] = find(L->region, p);
    }
  }
  for (int i = 0; i < L->n0; i++)
    if (L->region[i] >= 0)
      L->region[i] = find(L->region, i);
}

/* Values of region r read by a node outside it, or graph outputs. */
static void mark_used_outside(Layout *L) {
  Graph *g = L->g;
  for (int i = 0; i < g->noutputs; i++)
    L->used_outside[g->outputs[i]->id] = true;
  for (int i = 0; i < L->n0; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++) {
      Value *v = g->nodes[i]->in[j];
      if (v->role == V_TEMP && L->region[v->def->id] >= 0 &&
          (L->region[i] != L->region[v->def->id] || ends_region(L, v->def)))
        L->used_outside[v->id] = true;
    }
  for (int i = 0; i < L->v0; i++)       /* a gradient the caller reads */
    if (g->vals[i]->grad && g->vals[i]->grad->id < L->v0)
      L->used_outside[g->vals[i]->grad->id] = true;
}

static int64_t round_up(int64_t c, int64_t b) { return (c + b - 1) / b * b; }

/* Whether v is made in region r (a blocked value there). */
static bool made_in(const Layout *L, const Value *v, int r) {
  return v->role == V_TEMP && L->region[v->def->id] == r && !ends_region(L, v->def);
}

/* Whether convolution n of an NHWC region reads its input as NHWC: the
 * input enters the region. */
static bool reads_nhwc(const Layout *L, const Node *n) {
  return n->op == OP_conv2d && !made_in(L, n->in[0], L->region[n->id]);
}

/* A convolution's extents, at the largest batch. */
typedef struct ConvDims {
  double N, C, O, OH, OW, taps, flops;
} ConvDims;

static ConvDims conv_dims_of(const Graph *g, const Type *x, const Type *y, const Attr *a) {
  ConvDims d = {(double)cdim(g, x->dim[0]), (double)cdim(g, x->dim[1]), (double)cdim(g, y->dim[1]),
                (double)cdim(g, y->dim[2]), (double)cdim(g, y->dim[3]), (double)a->k[0] * a->k[1]};
  d.flops = 2 * d.N * d.O * d.C * d.taps * d.OH * d.OW;
  return d;
}

static ConvDims conv_dims(const Graph *g, const Node *n) {
  return conv_dims_of(g, &n->in[0]->type, &n->out[0]->type, &n->attr);
}

/* the implicit GEMM (codegen/kernels.c and gemm.c): its FLOPs, and its
 * column panels gathered from the image */
static double nchw_conv_cycles(const ConvDims *d) {
  double col = 4 * d->N * d->C * d->taps * d->OH * d->OW;
  return d->flops / layout_cost.nchw_fpc + col / layout_cost.pack_bpc;
}

/* the direct convolution of codegen/conv_blocked.c, its input blocked
 * (channels padded to b) or NHWC (not) */
static double blocked_conv_cycles(const ConvDims *d, int b, bool nhwc) {
  double cin = nhwc ? d->C : (double)round_up((int64_t)d->C, b);
  double pad = (double)round_up((int64_t)d->O, b) * cin / (d->O * d->C);
  double whole = (double)((int64_t)d->OW / 6 * 6) / d->OW;
  return d->flops * pad * (whole / layout_cost.blocked_fpc + (1 - whole) / layout_cost.edge_fpc);
}

/* Bytes a relayout of v moves (read and written). */
static double relayout_cycles(const Layout *L, const Value *v) {
  return 2.0 * (double)ir_bytes_max(L->g, &v->type) / layout_cost.copy_bpc;
}

/* A convolution joins a region unless it alone costs more in the direct
 * convolution (with its input NHWC, the cheaper when it enters a region)
 * than in NCHW plus the conversion of its output that keeping it out
 * would add. */
static bool conv_pays(const Layout *L, const Node *n) {
  if (forced(L))
    return true;
  ConvDims d = conv_dims(L->g, n);
  return blocked_conv_cycles(&d, L->b, true) <= nchw_conv_cycles(&d) + relayout_cycles(L, n->out[0]);
}

/* The cheapest layout of region r: NCHW if it has no convolution. The
 * conversions in and out cost the same blocked or NHWC, but a value of
 * one channel enters a convolution as NHWC by a reshape. */
static PassLayout choose_layout(Layout *L, int r) {
  Graph *g = L->g;
  double nchw = 0, blocked = 0, nhwc = 0;
  int convs = 0;
  for (int i = 0; i < L->n0; i++) {
    Node *n = g->nodes[i];
    if (L->region[i] != r)
      continue;
    bool entry = reads_nhwc(L, n);
    if (n->op == OP_conv2d) {
      ConvDims d = conv_dims(g, n);
      nchw += nchw_conv_cycles(&d);
      blocked += blocked_conv_cycles(&d, L->b, false);
      nhwc += blocked_conv_cycles(&d, L->b, entry);
      convs++;
    }
    for (int j = 0; j < n->nin; j++) {      /* activations coming in */
      Value *v = n->in[j];
      bool param = false;
      if (made_in(L, v, r) || (n->op == OP_conv2d && j == 1) || !is_4d_f32(v) || known(L, v, &param))
        continue;
      blocked += relayout_cycles(L, v);
      int64_t c = 0;
      if (!(entry && j == 0 && const_dim(v->type.dim[1], &c) && c == 1))
        nhwc += relayout_cycles(L, v);
    }
    if (L->used_outside[n->out[0]->id]) {   /* and going out */
      blocked += relayout_cycles(L, n->out[0]);
      nhwc += relayout_cycles(L, n->out[0]);
    }
  }
  if (!convs)
    return LAYOUT_NCHW;
  if (forced(L))
    return L->cx->layout;
  if (nhwc < blocked && nhwc < nchw)
    return LAYOUT_NHWC;
  return blocked < nchw ? LAYOUT_BLOCKED : LAYOUT_NCHW;
}

/* ---- the rewrite ---------------------------------------------------------------- */

static Value *reshape(Layout *L, Value *v, int rank, const Size *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  memcpy(a.shape, dims, sizeof(Size) * rank);
  return ir_op(L->g, OP_reshape, &v, 1, &a, v->loc);
}

static Value *relayout(Layout *L, Value *v, int rank, const Size *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  memcpy(a.shape, dims, sizeof(Size) * rank);
  return ir_op(L->g, OP_relayout, &v, 1, &a, v->loc);
}

/* Blocked data of flat [N, C, S] (N*C*S floats) into [N, C/b, S, b]. */
static float *block_data(const float *src, int64_t N, int64_t C, int64_t S, int64_t b) {
  int64_t cb = (C + b - 1) / b;
  float *dst = calloc((size_t)(N * cb * S * b), sizeof *dst);
  if (!dst)
    return NULL;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t s = 0; s < S; s++)
        dst[((n * cb + c / b) * S + s) * b + c % b] = src[(n * C + c) * S + s];
  return dst;
}

/* Whether [d0, C, d2, d3] and its form in blocks of b lanes are the same
 * floats: one channel in one lane, or whole blocks of one position (a
 * per-channel vector [1, C, 1, 1], a global pool's [N, C, 1, 1]). */
static bool same_floats(const Size *d, int64_t b) {
  int64_t C = 0, S = 0;
  const_dim(d[1], &C);
  return (C == 1 && b == 1) || (C > 0 && C % b == 0 && const_dim(sz_mul(d[2], d[3]), &S) && S == 1);
}

/* The form of [d0, C, d2, d3] v in blocks of b lanes (L->b: blocked; C:
 * NHWC): converted now when its data is known, else by a relayout (a
 * reshape where the two are the same floats). */
static Value *to_blocked(Layout *L, Value *v, const Size *d, int64_t b) {
  int64_t C = 0, N, S;
  const_dim(d[1], &C);
  Size bd[5] = {d[0], sz_const((C + b - 1) / b), d[2], d[3], sz_const(b)};
  bool param = false;
  const float *src = known(L, v, &param);
  if (src && const_dim(d[0], &N) && const_dim(sz_mul(d[2], d[3]), &S)) {
    float *data = block_data(src, N, C, S, b);
    if (data) {
      L->g->weights_baked |= param;
      Value *k = ir_const(L->g, ir_type(RT_F32, 5, bd), data);
      free(data);
      return k;
    }
  }
  if (v->type.rank != 4)
    v = reshape(L, v, 4, d);
  return same_floats(d, b) ? reshape(L, v, 5, bd) : relayout(L, v, 5, bd);
}

static bool is_conv(Op op) {
  return op == OP_conv2d || op == OP_conv2d_bwd_data || op == OP_conv2d_bwd_filter;
}

/* Input v of region node n: its blocked form, an operand broadcast along
 * the channels (of an op whose output has more than one) reshaped to
 * broadcast over blocks and lanes, or a conversion. */
static Value *blocked_input(Layout *L, const Node *n, Value *v) {
  if (v->id < L->v0 && L->blk[v->id])
    return L->blk[v->id];
  Size d[4];
  int pre = 4 - v->type.rank;
  for (int i = 0; i < 4; i++)
    d[i] = i < pre ? sz_const(1) : v->type.dim[i - pre];
  int64_t c, oc;
  bool wide = const_dim(n->out[0]->type.dim[1], &oc) && oc > 1;
  if (!is_conv(n->op) && wide && const_dim(d[1], &c) && c == 1) {
    Size bd[5] = {d[0], d[1], d[2], d[3], sz_const(1)};
    return reshape(L, v, 5, bd);
  }
  Value *k = to_blocked(L, v, d, L->b);
  if (v->id < L->v0)
    L->blk[v->id] = k;                /* one conversion for all its readers */
  return k;
}

/* Input v [N, C, H, W] of a convolution of an NHWC region that it enters:
 * [N, 1, H, W, C], converted once for all such readers. */
static Value *nhwc_input(Layout *L, Value *v) {
  if (v->id < L->v0 && L->nhwc[v->id])
    return L->nhwc[v->id];
  int64_t C = 0;
  const_dim(v->type.dim[1], &C);
  Value *k = to_blocked(L, v, v->type.dim, C);
  if (v->id < L->v0)
    L->nhwc[v->id] = k;
  return k;
}

/* conv2d's weight [O, C, KH, KW] as [O/b, C/bi, KH, KW, bi, b] for an
 * input of bi lanes, zeros in the padding, a constant. */
static Value *blocked_weight(Layout *L, const Value *w, int64_t bi) {
  bool param = false;
  const float *src = known(L, w, &param);
  int64_t O, C, kh, kw, b = L->b;
  const_dim(w->type.dim[0], &O);
  const_dim(w->type.dim[1], &C);
  const_dim(w->type.dim[2], &kh);
  const_dim(w->type.dim[3], &kw);
  int64_t ob = (O + b - 1) / b, cb = (C + bi - 1) / bi;
  float *dst = calloc((size_t)(ob * cb * kh * kw * bi * b), sizeof *dst);
  if (!dst)
    return NULL;
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t t = 0; t < kh * kw; t++)
        dst[(((o / b * cb + c / bi) * kh * kw + t) * bi + c % bi) * b + o % b] = src[(o * C + c) * kh * kw + t];
  L->g->weights_baked |= param;
  Size d[6] = {sz_const(ob), sz_const(cb), sz_const(kh), sz_const(kw), sz_const(bi), sz_const(b)};
  Value *k = ir_const(L->g, ir_type(RT_F32, 6, d), dst);
  free(dst);
  return k;
}

/* The blocked node for region node n, its output in L->blk; a mean's
 * result, and any value read outside, converted back. nhwc: n's region is
 * NHWC (a convolution reads an entering input as NHWC). */
static bool rewrite_node(Layout *L, Node *n, bool nhwc) {
  Value *in[8];
  Op op = n->op;
  int64_t bi = L->b;
  if (nhwc && reads_nhwc(L, n))
    const_dim(n->in[0]->type.dim[1], &bi);
  for (int j = 0; j < n->nin; j++)
    in[j] = op == OP_conv2d && j == 1    ? blocked_weight(L, n->in[1], bi)
            : op == OP_conv2d && bi != L->b ? nhwc_input(L, n->in[0])
                                           : blocked_input(L, n, n->in[j]);
  for (int j = 0; j < n->nin; j++)
    if (!in[j])
      return false;
  if (op == OP_conv2d)
    op = OP_conv2d_nchwc;
  Value *y = ir_op(L->g, op, in, n->nin, &n->attr, n->loc), *old = n->out[0];
  if (y->type.rank < 0)
    return false;
  L->blk[old->id] = y;
  if (L->used_outside[old->id] || n->op == OP_mean)
    L->back[old->id] = relayout(L, y, old->type.rank, old->type.dim);
  return true;
}

/* Node order after the rewrite: each old node, then the new nodes made
 * while rewriting it (they read values defined before it, or by earlier
 * new nodes, and its readers come after it). New nodes are in owner order. */
static bool reorder(Layout *L) {
  Graph *g = L->g;
  Node **order = malloc(sizeof(Node *) * (size_t)g->nnodes);
  if (!order)
    return false;
  int k = 0, j = L->n0;
  for (int i = 0; i < L->n0; i++) {
    order[k++] = g->nodes[i];
    for (; j < g->nnodes && L->owner[j - L->n0] == i; j++)
      order[k++] = g->nodes[j];
  }
  for (int i = 0; i < k; i++)
    (g->nodes[i] = order[i])->id = i;
  free(order);
  return true;
}

static bool note_owner(Layout *L, int owner) {
  int need = L->g->nnodes - L->n0;
  if (need > L->capowner) {
    int cap = need * 2;
    int *p = realloc(L->owner, sizeof(int) * (size_t)cap);
    if (!p)
      return false;
    L->owner = p, L->capowner = cap;
  }
  for (; L->nowner < need; L->nowner++)
    L->owner[L->nowner] = owner;
  return true;
}

/* Rewrites the chosen regions in node order; then the values read outside
 * their region read the relayouts back (not before: the old nodes of the
 * region must keep finding their inputs in L->blk). */
static bool rewrite_regions(Layout *L, const PassLayout *chosen) {
  Graph *g = L->g;
  bool changed = false, ok = true;
  for (int i = 0; ok && i < L->n0; i++) {
    int r = L->region[i];
    if (r < 0 || chosen[r] == LAYOUT_NCHW)
      continue;
    ok = rewrite_node(L, g->nodes[i], chosen[r] == LAYOUT_NHWC);
    ok = note_owner(L, i) && ok;
    changed = true;
  }
  for (int i = 0; i < L->v0; i++)
    if (L->back[i])
      ir_replace_uses(g, g->vals[i], L->back[i]);
  return changed && reorder(L);
}

/* ---- training graphs -------------------------------------------------------------
 *
 * The weights are parameters the optimizer updates in OIHW (checkpoints
 * and the user see them so), so the step blocks them itself (block_weight,
 * a small copy) and returns dw in OIHW. The convolutions of the step are
 *
 *   conv2d(x, w)             conv2d_nchwc(x_b, block_weight(w))
 *   conv2d_bwd_data(dy, w)   at stride 1, the convolution of dy with w
 *                            flipped and transposed, padding (k-1)*dil - pad:
 *                            conv2d_nchwc(dy_b, block_weight(w, trans_a));
 *                            other strides stay NCHW
 *   conv2d_bwd_filter(dy, x) conv2d_nchwc_bwd_filter(dy_b, x_b), dw in OIHW
 *
 * and a region (as for inference, above) joins them to the ops between
 * them whose channels fill whole blocks (C % b == 0, so no padding lane
 * needs to stay zero): elementwise and broadcast ops, expand, batchnorm
 * (its rule's ops, (x - mean) * (w / sqrt(var + eps)) + bias, on blocked
 * x) and sums and means over H and W (and N), with their gradients, which
 * autodiff wrote with the same ops. A reduction over (N, H, W) of [N, C/b,
 * H, W, b] keeps the lane axis innermost: codegen/expr.c's column mode
 * sums each lane in one vector, in a fixed order. Per-channel values
 * ([C], [1, C, 1, 1], [N, C] from the global pool) are the same floats
 * blocked, [.., C/b, .., b]: they enter and leave a region by a reshape.
 * So a ResNet's step converts only the value entering from its first
 * convolution (3 channels, NCHW by the cost model) and the gradient
 * leaving to it. A convolution joins when its direct form is cheaper than
 * the implicit GEMM; a region with one is rewritten when its convolutions
 * and the relayouts at its boundary cost less than the convolutions in
 * NCHW. */

/* The sides of n's forward convolution: x the input, y the output. */
static void conv_sides(const Node *n, const Type **x, const Type **y) {
  *x = &(n->op == OP_conv2d_bwd_data ? n->out[0] : n->in[n->op == OP_conv2d_bwd_filter])->type;
  *y = &(n->op == OP_conv2d ? n->out[0] : n->in[0])->type;
}

/* groups 1, f32, channels known, extents bound; bwd_data at stride 1 with
 * a padding its flipped convolution can mirror. */
static bool train_conv_ok(const Layout *L, const Node *n) {
  const Type *x, *y;
  const Attr *a = &n->attr;
  int64_t c, o;
  conv_sides(n, &x, &y);
  bool ok = a->groups == 1 && x->rank == 4 && x->dt == RT_F32 && y->rank == 4 &&
            const_dim(x->dim[1], &c) && const_dim(y->dim[1], &o) && cdim(L->g, y->dim[0]) > 0;
  for (int i = 2; ok && i < 4; i++)
    ok = cdim(L->g, x->dim[i]) > 0 && cdim(L->g, y->dim[i]) > 0;
  for (int i = 0; ok && n->op == OP_conv2d_bwd_data && i < 4; i++)
    ok = a->stride[i % 2] == 1 && a->pad[i] >= 0 && a->pad[i] <= (a->k[i % 2] - 1) * a->dil[i % 2];
  return ok;
}

static ConvDims train_conv_dims(const Layout *L, const Node *n) {
  const Type *x, *y;
  conv_sides(n, &x, &y);
  return conv_dims_of(L->g, x, y, &n->attr);
}

/* A 4-D f32 value of whole blocks of channels. */
static bool whole_blocks(const Layout *L, const Value *v) {
  int64_t c;
  return is_4d_f32(v) && const_dim(v->type.dim[1], &c) && c % L->b == 0;
}

/* sum, mean, max or min of 4-D x over H and W (and N), not C. */
static bool train_reduce_ok(const Layout *L, const Node *n) {
  uint32_t ax = n->attr.axes;
  return op_is(n->op, CAT_REDUCE) && whole_blocks(L, n->in[0]) && (ax & 0xc) == 0xc && !(ax & 2);
}

/* batchnorm along the channels of 4-D x, its vectors [C]. */
static bool train_bnorm_ok(const Layout *L, const Node *n) {
  bool ok = ir_norm_axis(n->attr.axis, 4) == 1 && whole_blocks(L, n->in[0]);
  for (int i = 1; ok && i < 5; i++)
    ok = n->in[i]->type.rank == 1 && n->in[i]->type.dt == RT_F32;
  return ok;
}

static bool train_blockable(Layout *L, const Node *n) {
  if (is_conv(n->op)) {
    if (!train_conv_ok(L, n))
      return false;
    if (forced(L))
      return L->cx->layout == LAYOUT_BLOCKED;
    ConvDims d = train_conv_dims(L, n);
    return blocked_conv_cycles(&d, L->b, false) < nchw_conv_cycles(&d);
  }
  if (n->nout != 1)
    return false;
  if (n->op == OP_batchnorm)
    return train_bnorm_ok(L, n);
  if (op_is(n->op, CAT_REDUCE))
    return train_reduce_ok(L, n);
  /* dropout's mask, onehot's class and iota's index follow the flat index */
  if (!op_is(n->op, CAT_ELEMWISE | CAT_BCAST) || n->op == OP_dropout || n->op == OP_onehot ||
      n->op == OP_iota || !whole_blocks(L, n->out[0]))
    return false;
  for (int i = 0; i < n->nin; i++)
    if (!broadcasts(n->in[i], &n->out[0]->type))
      return false;
  return true;
}

/* What converting v between NCHW and blocked costs: nothing when it is a
 * reshape (same_floats) or not an activation, else a relayout. */
static double conversion_cycles(const Layout *L, const Value *v) {
  if (v->type.rank != 4 || same_floats(v->type.dim, L->b))
    return 0;
  return relayout_cycles(L, v);
}

/* Region r blocked or not: its convolutions, direct or as implicit GEMMs,
 * and the activations converted at its boundary, each once (seen). */
static PassLayout train_choose(Layout *L, int r, bool *seen) {
  Graph *g = L->g;
  double nchw = 0, blocked = 0;
  int convs = 0;
  for (int i = 0; i < L->n0; i++) {
    Node *n = g->nodes[i];
    if (L->region[i] != r)
      continue;
    if (is_conv(n->op)) {
      ConvDims d = train_conv_dims(L, n);
      nchw += nchw_conv_cycles(&d);
      blocked += blocked_conv_cycles(&d, L->b, false);
      convs++;
    }
    for (int j = 0; j < n->nin; j++) {
      Value *v = n->in[j];
      if (made_in(L, v, r) || !blocked_operand(n, j) || seen[v->id])
        continue;
      seen[v->id] = true;
      blocked += conversion_cycles(L, v);
    }
    if (L->used_outside[n->out[0]->id] && !ends_region(L, n))
      blocked += conversion_cycles(L, n->out[0]);
  }
  if (!convs)
    return LAYOUT_NCHW;
  if (forced(L))
    return LAYOUT_BLOCKED;          /* forced blocked: its convolutions joined */
  return blocked < nchw ? LAYOUT_BLOCKED : LAYOUT_NCHW;
}

/* w [O, C, KH, KW] blocked for conv2d_nchwc, or flipped for bwd_data. */
static Value *train_weight(Layout *L, Value *w, bool flip) {
  int64_t O, C, b = L->b;
  const_dim(w->type.dim[0], &O);
  const_dim(w->type.dim[1], &C);
  Attr a = ir_attr();
  a.rank = 6;
  a.trans_a = flip;
  a.shape[flip ? 1 : 0] = sz_const((O + b - 1) / b);
  a.shape[flip ? 0 : 1] = sz_const((C + b - 1) / b);
  a.shape[2] = w->type.dim[2];
  a.shape[3] = w->type.dim[3];
  a.shape[4] = a.shape[5] = sz_const(b);
  return ir_op(L->g, OP_block_weight, &w, 1, &a, w->loc);
}

/* conv2d or conv2d_bwd_data of n as conv2d_nchwc, or its filter gradient
 * as conv2d_nchwc_bwd_filter (dw OIHW). */
static Value *train_conv(Layout *L, Node *n) {
  Value *in[2];
  Attr a = n->attr;
  in[0] = blocked_input(L, n, n->in[0]);
  if (n->op == OP_conv2d_bwd_filter) {
    in[1] = blocked_input(L, n, n->in[1]);
    a.rank = 4;
    memcpy(a.shape, n->out[0]->type.dim, sizeof(Size) * 4);
    return ir_op(L->g, OP_conv2d_nchwc_bwd_filter, in, 2, &a, n->loc);
  }
  bool data = n->op == OP_conv2d_bwd_data;
  for (int i = 0; data && i < 4; i++)
    a.pad[i] = (a.k[i % 2] - 1) * a.dil[i % 2] - n->attr.pad[i];
  in[1] = train_weight(L, n->in[1], data);
  return ir_op(L->g, OP_conv2d_nchwc, in, 2, &a, n->loc);
}

/* A per-channel vector [C] as [1, C/b, 1, 1, b], to broadcast over a
 * blocked tensor. */
static Value *lane_vector(Layout *L, Value *v) {
  int64_t C = 0;
  const_dim(v->type.dim[0], &C);
  Size d[5] = {sz_const(1), sz_const(C / L->b), sz_const(1), sz_const(1), sz_const(L->b)};
  return reshape(L, v, 5, d);
}

/* batchnorm(x, w, bias, mean, var) on blocked x by codegen/expr.c's rule,
 * in its order (the same floats): (x - mean) * (w / sqrt(var + eps)) + bias. */
static Value *blocked_batchnorm(Layout *L, const Node *n) {
  Graph *g = L->g;
  SrcLoc at = n->loc;
  Value *eps = ir_scalar(g, n->in[4]->type.dt, n->attr.eps);
  Value *inv = ir_op2(g, OP_div, n->in[1], ir_op1(g, OP_sqrt, ir_op2(g, OP_add, n->in[4], eps, at), at), at);
  Value *xc = ir_op2(g, OP_sub, blocked_input(L, n, n->in[0]), lane_vector(L, n->in[3]), at);
  return ir_op2(g, OP_add, ir_op2(g, OP_mul, xc, lane_vector(L, inv), at), lane_vector(L, n->in[2]), at);
}

/* Any other region op on its operands' blocked forms; expand to the
 * blocked shape. Reductions keep their axes: N, H and W are axes 0, 2
 * and 3 of the blocked tensor too. */
static Value *train_generic(Layout *L, const Node *n) {
  Value *in[8];
  Attr a = n->attr;
  for (int j = 0; j < n->nin; j++)
    in[j] = blocked_input(L, n, n->in[j]);
  if (n->op == OP_expand) {
    const Size *d = n->out[0]->type.dim;
    int64_t C = 0;
    const_dim(d[1], &C);
    Size bd[5] = {d[0], sz_const(C / L->b), d[2], d[3], sz_const(L->b)};
    a.rank = 5;
    memcpy(a.shape, bd, sizeof bd);
  }
  return ir_op(L->g, n->op, in, n->nin, &a, n->loc);
}

/* Blocked y of old back in old's form: a reshape where they are the same
 * floats (per-channel values, reductions over H and W), else a relayout. */
static Value *to_nchw(Layout *L, Value *y, const Value *old) {
  const Type *t = &old->type;
  if (t->rank != 4 || same_floats(t->dim, L->b))
    return reshape(L, y, t->rank, t->dim);
  return relayout(L, y, 4, t->dim);
}

/* The blocked node for region node n, its output in L->blk (4-D) and its
 * form for readers outside in L->back. */
static bool train_rewrite(Layout *L, Node *n) {
  Value *old = n->out[0], *y;
  if (is_conv(n->op))
    y = train_conv(L, n);
  else if (n->op == OP_batchnorm)
    y = blocked_batchnorm(L, n);
  else
    y = train_generic(L, n);
  if (y->type.rank < 0)
    return false;
  if (n->op == OP_conv2d_bwd_filter) {
    L->back[old->id] = y;
    return true;
  }
  if (old->type.rank == 4)
    L->blk[old->id] = y;
  if (L->used_outside[old->id] || old->type.rank != 4)
    L->back[old->id] = to_nchw(L, y, old);
  return true;
}

static bool layout_training(Graph *g, PassCtx *cx, PassStats *st) {
  PassCtx tcx = *cx;
  tcx.param_data = NULL;               /* parameters change every step: none is known */
  Layout L = {.g = g, .cx = &tcx, .b = cx->lanes, .n0 = g->nnodes, .v0 = g->nvals, .training = true};
  L.region = malloc(sizeof(int) * (size_t)(L.n0 + 1));
  L.used_outside = calloc((size_t)L.v0 + 1, sizeof(bool));
  L.blk = calloc((size_t)L.v0 + 1, sizeof(Value *));
  L.back = calloc((size_t)L.v0 + 1, sizeof(Value *));
  bool *seen = calloc((size_t)L.v0 + 1, sizeof(bool));
  PassLayout *chosen = calloc((size_t)L.n0 + 1, sizeof(PassLayout));
  bool changed = false, ok = L.region && L.used_outside && L.blk && L.back && seen && chosen;
  st->bytes_before = pass_temp_bytes(g);
  if (ok) {
    build_regions(&L);
    mark_used_outside(&L);
    for (int i = 0; i < L.n0; i++)
      if (L.region[i] == i)
        chosen[i] = train_choose(&L, i, seen);
  }
  for (int i = 0; ok && i < L.n0; i++) {
    int r = L.region[i];
    if (r < 0 || chosen[r] == LAYOUT_NCHW)
      continue;
    ok = train_rewrite(&L, g->nodes[i]) && note_owner(&L, i);
    changed = true;
  }
  if (changed) {
    for (int i = 0; i < L.v0; i++)
      if (L.back[i])
        ir_replace_uses(g, g->vals[i], L.back[i]);
    changed = reorder(&L);
    ir_remove_dead(g, false);
    ir_count_uses(g);
  }
  free(L.region);
  free(L.used_outside);
  free(L.blk);
  free(L.back);
  free(seen);
  free(chosen);
  free(L.owner);
  st->bytes_after = pass_temp_bytes(g);
  return changed;
}

bool pass_layout(Graph *g, PassCtx *cx, PassStats *st) {
  if ((g->training || g->loss) && cx->lanes >= 2)
    return layout_training(g, cx, st);
  if (g->training || g->loss || cx->lanes < 2)
    return false;
  Layout L = {.g = g, .cx = cx, .b = cx->lanes, .n0 = g->nnodes, .v0 = g->nvals};
  L.region = malloc(sizeof(int) * (size_t)(L.n0 + 1));
  L.used_outside = calloc((size_t)L.v0 + 1, sizeof(bool));
  L.blk = calloc((size_t)L.v0 + 1, sizeof(Value *));
  L.back = calloc((size_t)L.v0 + 1, sizeof(Value *));
  L.nhwc = calloc((size_t)L.v0 + 1, sizeof(Value *));
  PassLayout *chosen = calloc((size_t)L.n0 + 1, sizeof(PassLayout));
  bool changed = false;
  st->bytes_before = pass_temp_bytes(g);
  if (L.region && L.used_outside && L.blk && L.back && L.nhwc && chosen) {
    build_regions(&L);
    mark_used_outside(&L);
    for (int i = 0; i < L.n0; i++)
      if (L.region[i] == i)
        chosen[i] = choose_layout(&L, i);
    changed = rewrite_regions(&L, chosen);
  }
  if (changed) {
    ir_remove_dead(g, true);
    ir_count_uses(g);
  }
  free(L.region);
  free(L.used_outside);
  free(L.blk);
  free(L.back);
  free(L.nhwc);
  free(L.owner);
  free(chosen);
  st->bytes_after = pass_temp_bytes(g);
  return changed;
}

/* Template kernels: contractions through the generated GEMM (matmul, conv2d
 * as im2col + GEMM), pooling windows, and copies. Each takes its sizes from
 * the node's types, evaluated at run time where the batch enters. A
 * contraction with a fused group (bias, activation, residual add) runs the
 * group as its GEMM's epilogue (expr.c's cg_epi_plan) and stores what the
 * group stores. */
#include "codegen/codegen.h"
#include <math.h>
#include <string.h>

static LLVMValueRef mul(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildMul(c->b, a, b, "");
}
static LLVMValueRef add(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(c->b, a, b, "");
}

static Size prod(const Type *t, int from, int to) {
  Size s = sz_const(1);
  for (int i = from; i < to; i++)
    s = sz_mul(s, t->dim[i]);
  return s;
}

/* Calls the generated GEMM (gemm.c) with its 16 arguments; a module
 * defines one variant per (dtype, transposes, accumulate, epilogue
 * structure), named after them (epi: NULL for none). */
void cg_call_gemm(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc, const CgEpiPlan *epi,
                  LLVMValueRef *args) {
  CgCtx *c = k->c;
  CgGemmSpec spec = {.dt = dt, .trans_a = ta, .trans_b = tb, .accumulate = acc,
                     .epi = epi ? &epi->epi : NULL};
  char name[1100];
  snprintf(name, sizeof name, "kiln_gemm_%s_%c%c%s%s%s", rt_dtype_name(dt), ta ? 't' : 'n',
           tb ? 't' : 'n', acc ? "_acc" : "", epi ? "_" : "", epi ? epi->name : "");
  LLVMValueRef fn = cg_gemm_define(c, &spec, name);
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, 16, "");
}

/* ---- matmul ---------------------------------------------------------------- */

static int batch_stride(const Type *x, const Type *o, Size mk, Size *st) {
  Size xb = prod(x, 0, x->rank - 2), ob = prod(o, 0, o->rank - 2);
  int64_t one;
  if (sz_eq(xb, ob))
    *st = mk;
  else if (sz_is_const(xb, &one) && one == 1)
    *st = sz_const(0);
  else
    return -1;
  return 0;
}

int cg_matmul_kernel(CgKernel *k) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *a = &n->in[0]->type, *b = &n->in[1]->type, *o = &n->out[0]->type;
  bool ta = n->attr.trans_a, tb = n->attr.trans_b;
  Size M = o->dim[o->rank - 2], N = o->dim[o->rank - 1];
  Size K = a->dim[a->rank - (ta ? 2 : 1)];
  Size sa, sb;
  if (batch_stride(a, o, sz_mul(M, K), &sa) < 0 || batch_stride(b, o, sz_mul(K, N), &sb) < 0)
    return -1;                        /* partially broadcast batch dims */
  CgEpiPlan ep;
  bool fused = cg_epi_plan(k, o->rank - 2, o->rank - 1, &ep);
  LLVMValueRef args[16] = {
      cg_size(k, prod(o, 0, o->rank - 2)), cg_size(k, M), cg_size(k, N), cg_size(k, K),
      cg_value_ptr(k, n->in[0]), cg_size(k, ta ? M : K), cg_size(k, sa),
      cg_value_ptr(k, n->in[1]), cg_size(k, tb ? K : N), cg_size(k, sb),
      cg_value_ptr(k, fused ? ep.c : n->out[0]), cg_size(k, N), cg_size(k, sz_mul(M, N)),
      fused ? cg_epi_args(k, &ep, NULL) : LLVMConstNull(c->t_ptr),
      k->work ? k->work : LLVMConstNull(c->t_ptr), k->nthreads};
  cg_call_matmul(k, o->dt, ta, tb, false, fused ? &ep : NULL, args); /* gemv.c: small M */
  if (fused)
    cg_epi_free(&ep);
  return 0;
}

/* ---- conv2d as im2col + GEMM ------------------------------------------------ */

/* The column matrix of image n has a row (ch*kh + i)*kw + j per input
 * channel ch and kernel tap (i, j), and a column oh*OW + ow per output
 * position, zero where the tap falls in the padding. The forward and both
 * gradients share this geometry: conv2d(x, w) -> y, conv2d_bwd_data(dy, w)
 * -> dx, conv2d_bwd_filter(dy, x) -> dw. */
CgConvGeo cg_conv_geo(const Node *n) {
  bool fwd = n->op == OP_conv2d, data = n->op == OP_conv2d_bwd_data;
  CgConvGeo g = {.n = n, .y = fwd ? n->out[0] : n->in[0],
                 .x = fwd ? n->in[0] : data ? n->out[0] : n->in[1],
                 .w = fwd || data ? n->in[1] : n->out[0], .scatter = data,
                 .G = n->attr.groups, .kh = n->attr.k[0], .kw = n->attr.k[1]};
  const Type *x = &g.x->type, *y = &g.y->type;
  g.dt = x->dt;
  g.N = x->dim[0], g.C = x->dim[1], g.H = x->dim[2], g.W = x->dim[3];
  g.O = y->dim[1], g.OH = y->dim[2], g.OW = y->dim[3];
  g.Kc = sz_mul(g.w->type.dim[1], sz_const((int64_t)g.kh * g.kw));
  g.P = sz_mul(g.OH, g.OW);
  return g;
}

/* A 1x1 convolution with stride 1 and no padding: the columns are x itself. */
bool cg_conv_pointwise(const Node *n) {
  const Attr *a = &n->attr;
  return a->k[0] == 1 && a->k[1] == 1 && a->stride[0] == 1 && a->stride[1] == 1 &&
         !a->pad[0] && !a->pad[1] && !a->pad[2] && !a->pad[3];
}

int64_t cg_conv_col_bytes(const Graph *gr, const Node *n) {
  if (cg_conv_pointwise(n))
    return 0;
  CgConvGeo g = cg_conv_geo(n);
  Type t = ir_type(g.dt, 3, (Size[]){g.N, sz_mul(g.Kc, sz_const(g.G)), g.P});
  return ir_bytes_max(gr, &t);
}

/* Unit u = (image, channel) = plane u of x: walks its kh*kw rows of the
 * column matrix in k->work, copying x into them (im2col) or adding them
 * into x (col2im, after zeroing the plane). No two units touch one address. */
static void window_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  CgConvGeo *g = user;
  CgCtx *c = k->c;
  const Attr *a = &g->n->attr;
  LLVMTypeRef et = cg_elem_type(c, g->dt);
  LLVMValueRef x = cg_value_ptr(k, g->x), col = k->work;
  LLVMValueRef H = cg_size(k, g->H), W = cg_size(k, g->W), OH = cg_size(k, g->OH);
  LLVMValueRef OW = cg_size(k, g->OW), P = cg_size(k, g->P), HW = mul(c, H, W);
  CgLoop U, I, J, R, Q;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef xbase = mul(c, u, HW), cbase = mul(c, mul(c, u, cg_i64(c, (int64_t)g->kh * g->kw)), P);
  if (g->scatter)
    cg_zero(k, g->dt, x, xbase, HW);
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, g->kh), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, g->kw), cg_i64(c, 1));
  LLVMValueRef rowbase = add(c, cbase, mul(c, add(c, mul(c, i, cg_i64(c, g->kw)), j), P));
  LLVMValueRef oh = cg_for(k, &R, cg_i64(c, 0), OH, cg_i64(c, 1));
  LLVMValueRef ih = add(c, mul(c, oh, cg_i64(c, a->stride[0])),
                        LLVMBuildSub(c->b, mul(c, i, cg_i64(c, a->dil[0])), cg_i64(c, a->pad[0]), ""));
  LLVMValueRef ow = cg_for(k, &Q, cg_i64(c, 0), OW, cg_i64(c, 1));
  LLVMValueRef iw = add(c, mul(c, ow, cg_i64(c, a->stride[1])),
                        LLVMBuildSub(c->b, mul(c, j, cg_i64(c, a->dil[1])), cg_i64(c, a->pad[1]), ""));
  LLVMValueRef ok = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntULT, ih, H, ""),
                                 LLVMBuildICmp(c->b, LLVMIntULT, iw, W, ""), "");
  /* outside the input: address the plane's first element, move a zero */
  LLVMValueRef at = add(c, xbase, LLVMBuildSelect(c->b, ok, add(c, mul(c, ih, W), iw), cg_i64(c, 0), ""));
  LLVMValueRef cat = add(c, rowbase, add(c, mul(c, oh, OW), ow));
  if (g->scatter) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, g->dt, col, cat), "");
    cg_add_to(k, g->dt, x, at, LLVMBuildSelect(c->b, ok, v, LLVMConstNull(et), ""));
  } else {
    LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, g->dt, x, at), "");
    LLVMBuildStore(c->b, LLVMBuildSelect(c->b, ok, v, LLVMConstNull(et), ""),
                   cg_gep(k, g->dt, col, cat));
  }
  cg_endfor(k, &Q);
  cg_endfor(k, &R);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  cg_endfor(k, &U);
}

void cg_conv_windows(CgKernel *k, CgConvGeo *g, const char *task_name) {
  CgCtx *c = k->c;
  LLVMValueRef units = mul(c, cg_size(k, g->N), cg_size(k, g->C));
  LLVMValueRef cost = cg_size(k, sz_mul(g->P, sz_const((int64_t)g->kh * g->kw)));
  cg_parallel(k, task_name, units, cg_grain(k, cost), window_task, g);
}

int cg_conv_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  CgConvGeo g = cg_conv_geo(n);
  RtDType dt = g.dt;
  bool pw = cg_conv_pointwise(n);
  int64_t col_bytes = cg_conv_col_bytes(k->g, n);
  LLVMValueRef work = k->work;
  if (!pw)
    cg_conv_windows(k, &g, name);
  LLVMValueRef gemm_work = LLVMBuildGEP2(c->b, c->t_i8, work ? work : LLVMConstNull(c->t_ptr),
                                         (LLVMValueRef[]){cg_i64(c, (col_bytes + 63) / 64 * 64)},
                                         1, "");
  LLVMValueRef B = pw ? cg_value_ptr(k, n->in[0]) : work;
  LLVMValueRef Kc = cg_size(k, g.Kc), P = cg_size(k, g.P), O = cg_size(k, g.O);
  LLVMValueRef Og = LLVMBuildSDiv(c->b, O, cg_i64(c, g.G), "");
  CgEpiPlan ep;
  bool fused = cg_epi_plan(k, 1, 2, &ep);
  for (int gi = 0; gi < g.G; gi++) {  /* one batched GEMM per group */
    LLVMValueRef G = cg_i64(c, gi);
    LLVMValueRef args[16] = {
        cg_size(k, g.N), Og, P, Kc,
        cg_gep(k, dt, cg_value_ptr(k, n->in[1]), mul(c, mul(c, G, Og), Kc)), Kc, cg_i64(c, 0),
        cg_gep(k, dt, B, mul(c, mul(c, G, Kc), P)), P, mul(c, mul(c, Kc, cg_i64(c, g.G)), P),
        cg_gep(k, dt, cg_value_ptr(k, fused ? ep.c : n->out[0]), mul(c, mul(c, G, Og), P)), P,
        mul(c, O, P), fused ? cg_epi_args(k, &ep, mul(c, G, Og)) : LLVMConstNull(c->t_ptr),
        gemm_work, k->nthreads};
    cg_call_gemm(k, dt, false, false, false, fused ? &ep : NULL, args);
  }
  if (fused)
    cg_epi_free(&ep);
  return 0;
}

/* ---- pooling ----------------------------------------------------------------- */

typedef struct PoolCtx {
  const Node *n;
} PoolCtx;

/* Unit u = one output row (image, channel, oh); the window is scanned with
 * bounds checks; avg divides by the window's size inside the padded input
 * (count_include_pad) or by the valid elements. */
static void pool_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const Node *n = ((PoolCtx *)user)->n;
  CgCtx *c = k->c;
  const Attr *a = &n->attr;
  const Type *x = &n->in[0]->type, *y = &n->out[0]->type;
  RtDType dt = x->dt;
  LLVMTypeRef et = cg_elem_type(c, dt);
  bool isMax = n->op == OP_maxpool2d;
  LLVMValueRef in = cg_value_ptr(k, n->in[0]), out = cg_value_ptr(k, n->out[0]);
  LLVMValueRef H = cg_size(k, x->dim[2]), W = cg_size(k, x->dim[3]);
  LLVMValueRef OH = cg_size(k, y->dim[2]), OW = cg_size(k, y->dim[3]);
  LLVMValueRef accp = LLVMBuildAlloca(c->b, et, ""), cntp = LLVMBuildAlloca(c->b, c->t_i64, "");
  CgLoop U, Q, I, J;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef plane = LLVMBuildSDiv(c->b, u, OH, ""), oh = LLVMBuildSRem(c->b, u, OH, "");
  LLVMValueRef ih0 = LLVMBuildSub(c->b, mul(c, oh, cg_i64(c, a->stride[0])), cg_i64(c, a->pad[0]), "");
  LLVMValueRef ow = cg_for(k, &Q, cg_i64(c, 0), OW, cg_i64(c, 1));
  LLVMValueRef iw0 = LLVMBuildSub(c->b, mul(c, ow, cg_i64(c, a->stride[1])), cg_i64(c, a->pad[1]), "");
  LLVMBuildStore(c->b, LLVMConstReal(et, isMax ? -INFINITY : 0.0), accp);
  LLVMBuildStore(c->b, cg_i64(c, 0), cntp);
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  LLVMValueRef ih = add(c, ih0, mul(c, i, cg_i64(c, a->dil[0])));
  LLVMValueRef iw = add(c, iw0, mul(c, j, cg_i64(c, a->dil[1])));
  LLVMValueRef ok = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntULT, ih, H, ""),
                                 LLVMBuildICmp(c->b, LLVMIntULT, iw, W, ""), "");
  LLVMValueRef src = LLVMBuildSelect(c->b, ok, add(c, mul(c, add(c, mul(c, plane, H), ih), W), iw),
                                     cg_i64(c, 0), "");
  LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, in, src), "");
  LLVMValueRef acc = LLVMBuildLoad2(c->b, et, accp, "");
  LLVMValueRef nv;
  if (isMax) {
    LLVMTypeRef t = et;
    nv = cg_intrinsic(c, "llvm.maximum", &t, 1, (LLVMValueRef[]){acc, v}, 2);
  } else {
    nv = LLVMBuildFAdd(c->b, acc, v, "");
  }
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, ok, nv, acc, ""), accp);
  LLVMValueRef cnt = LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
  LLVMBuildStore(c->b, add(c, cnt, LLVMBuildZExt(c->b, ok, c->t_i64, "")), cntp);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  LLVMValueRef r = LLVMBuildLoad2(c->b, et, accp, "");
  if (!isMax) {
    LLVMValueRef cntv = LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
    if (a->count_include_pad) {       /* the window clipped to the padded input */
      LLVMValueRef hend = add(c, ih0, cg_i64(c, a->k[0]));
      LLVMValueRef hmax = add(c, H, cg_i64(c, a->pad[2]));
      hend = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, hend, hmax, ""), hend, hmax, "");
      LLVMValueRef wend = add(c, iw0, cg_i64(c, a->k[1]));
      LLVMValueRef wmax = add(c, W, cg_i64(c, a->pad[3]));
      wend = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, wend, wmax, ""), wend, wmax, "");
      cntv = mul(c, LLVMBuildSub(c->b, hend, ih0, ""), LLVMBuildSub(c->b, wend, iw0, ""));
    }
    r = LLVMBuildFDiv(c->b, r, LLVMBuildSIToFP(c->b, cntv, et, ""), "");
  }
  LLVMBuildStore(c->b, r, cg_gep(k, dt, out, add(c, mul(c, u, OW), ow)));
  cg_endfor(k, &Q);
  cg_endfor(k, &U);
}

void cg_pool_kernel(CgKernel *k, const char *name) {
  const Type *y = &k->n->out[0]->type;
  PoolCtx p = {k->n};
  LLVMValueRef rows = cg_size(k, sz_mul(sz_mul(y->dim[0], y->dim[1]), y->dim[2]));
  int64_t win = (int64_t)k->n->attr.k[0] * k->n->attr.k[1];
  cg_parallel(k, name, rows, cg_grain(k, cg_size(k, sz_mul(y->dim[3], sz_const(win)))),
              pool_task, &p);
}

/* ---- copy: a reshape whose result cannot share its input's storage ---------- */

void cg_copy_kernel(CgKernel *k) {
  CgCtx *c = k->c;
  const Value *o = k->n->out[0];
  LLVMValueRef bytes = mul(c, cg_size(k, prod(&o->type, 0, o->type.rank)),
                           cg_i64(c, rt_dtype_size(o->type.dt)));
  LLVMBuildMemMove(c->b, cg_value_ptr(k, o), 1, cg_value_ptr(k, k->n->in[0]), 1, bytes);
}

/* Template kernels: contractions through the generated GEMM (matmul, and
 * conv2d and its gradients as implicit GEMMs), pooling windows, and copies. Each takes its sizes from
 * the node's types, evaluated at run time where the batch enters. A
 * contraction with a fused group (bias, activation, residual add) runs the
 * group as its GEMM's epilogue (expr.c's cg_epi_plan) and stores what the
 * group stores. */
#include "codegen/codegen.h"
#include <math.h>
#include <stdint.h>
#include <string.h>


static Size prod(const Type *t, int from, int to) {
  Size s = sz_const(1);
  for (int i = from; i < to; i++)
    s = sz_mul(s, t->dim[i]);
  return s;
}

void cg_contract_name(char *buf, size_t size, const char *kind, RtDType dt, bool ta, bool tb,
                      bool acc, const char *geo, const CgEpiPlan *epi) {
  snprintf(buf, size, "kiln_%s_%s_%c%c%s%s%s%s", kind, rt_dtype_name(dt), ta ? 't' : 'n',
           tb ? 't' : 'n', acc ? "_acc" : "", geo, epi ? "_" : "", epi ? epi->name : "");
}

/* Calls the generated GEMM (gemm.c) with its 16 arguments (19 with an
 * implicit B); a module defines one variant per (dtype, transposes,
 * accumulate, implicit B's geometry, epilogue structure), named after them
 * (epi: NULL for none). */
static void call_gemm(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc, const CgEpiPlan *epi,
                      const CgIm2col *im, bool packed_b, LLVMValueRef *args) {
  CgCtx *c = k->c;
  CgGemmSpec spec = {.dt = dt, .trans_a = ta, .trans_b = tb, .accumulate = acc,
                     .epi = epi ? &epi->epi : NULL, .im2col = im, .packed_b = packed_b};
  char name[1200], geo[160] = "";
  if (packed_b)
    snprintf(geo, sizeof geo, "_packed");
  if (im)
    snprintf(geo, sizeof geo, "_im2col%s%dx%d_s%d.%d_d%d.%d_o%d.%d_q%d.%d", im->taps_on_n ? "t" : "", im->kh,
             im->kw, im->step[0], im->step[1], im->dil[0], im->dil[1], im->off[0], im->off[1], im->div[0],
             im->div[1]);
  cg_contract_name(name, sizeof name, "gemm", dt, ta, tb, acc, geo, epi);
  LLVMValueRef fn = cg_gemm_define(c, &spec, name);
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, im ? 19 : 16, "");
}

void cg_call_gemm(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc, const CgEpiPlan *epi,
                  LLVMValueRef *args) {
  call_gemm(k, dt, ta, tb, acc, epi, NULL, false, args);
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

/* Whether B's panels [nkb, np, kc, nr] (attr.packed_n) are the ones this
 * target's GEMM reads for K (cg_gemm_panels): the pass that packed them
 * asked the same question, but of the lanes it was given. Whatever the
 * rows, the GEMM reads them (not the GEMV, which reads B unpacked). */
static bool panels_match(CgCtx *c, const Type *b, Size K) {
  int64_t kk, nr, kc, d2, d3;
  return sz_is_const(K, &kk) && cg_gemm_panels(b->dt, c->vbits / 32, INT64_MAX, kk, &nr, &kc) &&
         sz_is_const(b->dim[2], &d2) && sz_is_const(b->dim[3], &d3) && d2 == kc && d3 == nr;
}

int cg_matmul_kernel(CgKernel *k) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *a = &n->in[0]->type, *b = &n->in[1]->type, *o = &n->out[0]->type;
  bool ta = n->attr.trans_a, tb = n->attr.trans_b, packed = n->attr.packed_n > 0;
  Size M = o->dim[o->rank - 2], N = o->dim[o->rank - 1];
  Size K = a->dim[a->rank - (ta ? 2 : 1)];
  Size sa, sb = sz_const(0);
  if (batch_stride(a, o, sz_mul(M, K), &sa) < 0 || (!packed && batch_stride(b, o, sz_mul(K, N), &sb) < 0))
    return -1;                        /* partially broadcast batch dims */
  if (packed && !panels_match(c, b, K))
    return -1;
  CgEpiPlan ep;
  bool fused = cg_epi_plan(k, o->rank - 2, o->rank - 1, &ep);
  LLVMValueRef args[16] = {
      cg_size(k, prod(o, 0, o->rank - 2)), cg_size(k, M), cg_size(k, N), cg_size(k, K),
      cg_value_ptr(k, n->in[0]), cg_size(k, ta ? M : K), cg_size(k, sa),
      cg_value_ptr(k, n->in[1]), cg_size(k, tb ? K : N), cg_size(k, sb),
      cg_value_ptr(k, fused ? ep.c : n->out[0]), cg_size(k, N), cg_size(k, sz_mul(M, N)),
      fused ? cg_epi_args(k, &ep, NULL) : LLVMConstNull(c->t_ptr),
      k->work ? k->work : LLVMConstNull(c->t_ptr), k->nthreads};
  if (packed)
    call_gemm(k, o->dt, ta, false, false, fused ? &ep : NULL, NULL, true, args);
  else
    cg_call_matmul(k, o->dt, ta, tb, false, fused ? &ep : NULL, args); /* gemv.c: small M */
  if (fused)
    cg_epi_free(&ep);
  return 0;
}

int cg_pack_b_kernel(CgKernel *k) {
  const Node *n = k->n;
  const Type *w = &n->in[0]->type;
  bool tb = n->attr.trans_b;
  RtDType dt = w->dt;
  char name[64];
  snprintf(name, sizeof name, "kiln_pack_b_%s_%c", rt_dtype_name(dt), tb ? 't' : 'n');
  LLVMValueRef fn = cg_pack_b_define(k->c, dt, tb, name);
  if (!fn)
    return -1;
  LLVMValueRef args[] = {cg_value_ptr(k, n->in[0]), cg_size(k, w->dim[1]), cg_size(k, w->dim[tb ? 1 : 0]),
                         cg_size(k, w->dim[tb ? 0 : 1]), cg_value_ptr(k, n->out[0])};
  LLVMBuildCall2(k->c->b, LLVMGlobalGetValueType(fn), fn, args, 5, "");
  return 0;
}

/* ---- convolutions as implicit GEMMs --------------------------------------- */

/* conv2d(x, w) -> y, conv2d_bwd_data(dy, w) -> dx and conv2d_bwd_filter(dy,
 * x) -> dw are each one GEMM per group whose image operand is B, gathered
 * by the GEMM's packing (CgIm2col) rather than stored as a column matrix.
 * A 1x1 convolution with stride 1 and no padding reads its image as a
 * plain matrix. Per group (Og = O/G outputs, Cg = C/G inputs, Kc = Cg*kh*kw
 * taps, P = OH*OW positions):
 *
 *   conv2d             y_g[Og, P]   = w_g[Og, Kc] col(x_g)[Kc, P]        batched over images
 *   conv2d_bwd_data    dx_g[Cg, HW] = w'_g[Cg, Og*kh*kw] col'(dy_g)      batched over images
 *   conv2d_bwd_filter  dw_g[Og, Kc] += dy_g,n[Og, P] col(x_g,n)^T        image after image
 *
 * conv2d_bwd_data is the transposed convolution: col' taps dy at
 * oh*stride = ih + pad - i*dil (zero where that is not whole), and w' is w
 * with its two channel axes swapped, written into work first (weights are
 * small). The filter gradient sums images in order, so every result is the
 * same at any thread count. */
CgConvGeo cg_conv_geo(const Node *n) {
  bool fwd = n->op == OP_conv2d, data = n->op == OP_conv2d_bwd_data;
  CgConvGeo g = {.n = n, .y = fwd ? n->out[0] : n->in[0],
                 .x = fwd ? n->in[0] : data ? n->out[0] : n->in[1],
                 .w = fwd || data ? n->in[1] : n->out[0],
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

/* The implicit column matrix of n's image operand (see CgIm2col). */
static CgIm2col conv_im2col(const Node *n) {
  const Attr *a = &n->attr;
  CgIm2col im = {.kh = a->k[0], .kw = a->k[1], .taps_on_n = n->op == OP_conv2d_bwd_filter};
  for (int d = 0; d < 2; d++) {
    bool transposed = n->op == OP_conv2d_bwd_data;
    im.step[d] = transposed ? 1 : a->stride[d];
    im.dil[d] = transposed ? -a->dil[d] : a->dil[d];
    im.off[d] = transposed ? -a->pad[d] : a->pad[d];
    im.div[d] = transposed ? a->stride[d] : 1;
  }
  return im;
}

static int64_t max_of(const Graph *gr, Size s) {
  Type t = ir_type(RT_F32, 1, &s);
  return ir_numel_max(gr, &t);
}

/* How conv2d_bwd_data runs. The transposed convolution also multiplies
 * the taps that fall outside dy: H*W / (OH*OW) times the useful work (2.25
 * for LeNet's unpadded 5x5 on 12x12, 4 at stride 2). Past 5/4 it runs as
 * w^T dy per image into one image's column block in work, added into dx
 * while in cache (col2im). */
typedef enum { BWD_POINTWISE, BWD_TRANSPOSED, BWD_COL2IM } BwdData;

static BwdData bwd_data_way(const Graph *gr, const Node *n) {
  if (cg_conv_pointwise(n))
    return BWD_POINTWISE;
  CgConvGeo g = cg_conv_geo(n);
  return 4 * max_of(gr, sz_mul(g.H, g.W)) <= 5 * max_of(gr, g.P) ? BWD_TRANSPOSED : BWD_COL2IM;
}

/* Work ahead of the GEMM's packing space: conv2d_bwd_data's w' (see
 * above), or the image number and one image's column block (col2im). */
static int64_t bwd_data_bytes(const Graph *gr, const Node *n) {
  if (n->op != OP_conv2d_bwd_data || bwd_data_way(gr, n) == BWD_POINTWISE)
    return 0;
  if (bwd_data_way(gr, n) == BWD_TRANSPOSED)
    return (ir_bytes_max(gr, &n->in[1]->type) + 63) / 64 * 64;
  CgConvGeo g = cg_conv_geo(n);
  int64_t col = max_of(gr, g.Kc) * g.G * max_of(gr, g.P) * (int64_t)rt_dtype_size(g.dt);
  return 64 + (col + 63) / 64 * 64;
}

int64_t cg_conv_work_bytes(const Graph *gr, const Node *n, int threads) {
  CgConvGeo g = cg_conv_geo(n);
  int64_t Og = max_of(gr, g.O) / g.G, Kc = max_of(gr, g.Kc), P = max_of(gr, g.P);
  int64_t HW = max_of(gr, sz_mul(g.H, g.W)), Cg = max_of(gr, g.C) / g.G;
  int64_t gemm;
  if (n->op == OP_conv2d)
    gemm = cg_gemm_work_bytes(g.dt, Og, P, Kc, threads);
  else if (n->op == OP_conv2d_bwd_filter)
    gemm = cg_gemm_work_bytes(g.dt, Og, Kc, P, threads);
  else if (bwd_data_way(gr, n) != BWD_TRANSPOSED)
    gemm = cg_gemm_work_bytes(g.dt, Kc, P, Og, threads);
  else
    gemm = cg_gemm_work_bytes(g.dt, Cg, HW, Og * g.kh * g.kw, threads);
  return bwd_data_bytes(gr, n) + gemm;
}

/* One GEMM per group: the operands' addresses advance by g* per group. */
typedef struct ConvGemm {
  bool ta, tb, acc;
  const CgIm2col *im;        /* NULL: B is a matrix */
  const CgEpiPlan *epi;      /* NULL: none */
  LLVMValueRef batch, M, N, K;
  LLVMValueRef A, lda, sa, gA;
  LLVMValueRef B, ldb, sb, gB;
  LLVMValueRef C, ldc, sc, gC;
  LLVMValueRef ih, iw, pw;   /* im's image height, width and positions per row */
  LLVMValueRef work;
} ConvGemm;

static void conv_gemm(CgKernel *k, const CgConvGeo *g, const ConvGemm *q) {
  CgCtx *c = k->c;
  for (int gi = 0; gi < g->G; gi++) {
    LLVMValueRef G = cg_i64(c, gi);
    LLVMValueRef args[19] = {
        q->batch, q->M, q->N, q->K,
        cg_gep(k, g->dt, q->A, cg_imul(c, G, q->gA)), q->lda, q->sa,
        cg_gep(k, g->dt, q->B, cg_imul(c, G, q->gB)), q->ldb, q->sb,
        cg_gep(k, g->dt, q->C, cg_imul(c, G, q->gC)), q->ldc, q->sc,
        q->epi ? cg_epi_args(k, q->epi, cg_imul(c, G, q->M)) : LLVMConstNull(c->t_ptr),
        q->work ? q->work : LLVMConstNull(c->t_ptr), k->nthreads, q->ih, q->iw, q->pw};
    call_gemm(k, g->dt, q->ta, q->tb, q->acc, q->epi, q->im, false, args);
  }
}

int cg_conv_kernel(CgKernel *k, const char *name) {
  (void)name;
  CgCtx *c = k->c;
  const Node *n = k->n;
  CgConvGeo g = cg_conv_geo(n);
  bool pw = cg_conv_pointwise(n);
  CgIm2col im = conv_im2col(n);
  LLVMValueRef Kc = cg_size(k, g.Kc), P = cg_size(k, g.P), O = cg_size(k, g.O), G = cg_i64(c, g.G);
  LLVMValueRef Og = LLVMBuildSDiv(c->b, O, G, ""), HW = cg_size(k, sz_mul(g.H, g.W));
  LLVMValueRef CHW = cg_imul(c, cg_size(k, g.C), HW), CgHW = LLVMBuildSDiv(c->b, CHW, G, "");
  CgEpiPlan ep;
  bool fused = cg_epi_plan(k, 1, 2, &ep);
  ConvGemm q = {.im = pw ? NULL : &im, .epi = fused ? &ep : NULL,
                .batch = cg_size(k, g.N), .M = Og, .N = P, .K = Kc,
                .A = cg_value_ptr(k, g.w), .lda = Kc, .sa = cg_i64(c, 0), .gA = cg_imul(c, Og, Kc),
                .B = cg_value_ptr(k, g.x), .ldb = P, .sb = CHW, .gB = CgHW,
                .C = cg_value_ptr(k, fused ? ep.c : g.y), .ldc = P, .sc = cg_imul(c, O, P), .gC = cg_imul(c, Og, P),
                .ih = cg_size(k, g.H), .iw = cg_size(k, g.W), .pw = cg_size(k, g.OW), .work = k->work};
  conv_gemm(k, &g, &q);
  if (fused)
    cg_epi_free(&ep);
  return 0;
}

/* w'[g][c][o][t] = w[g*Og + o][c][t] for t < kh*kw: a copy of kh*kw
 * elements per (output, input) channel pair. */
static void swap_w_channels(CgKernel *k, const CgConvGeo *g, LLVMValueRef dst) {
  CgCtx *c = k->c;
  int64_t T = (int64_t)g->kh * g->kw, sz = (int64_t)rt_dtype_size(g->dt);
  LLVMValueRef O = cg_size(k, g->O), Cg = cg_size(k, g->w->type.dim[1]), G = cg_i64(c, g->G);
  LLVMValueRef Og = LLVMBuildSDiv(c->b, O, G, ""), w = cg_value_ptr(k, g->w);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, cg_i64(c, 0), cg_imul(c, O, Cg), cg_i64(c, 1));
  LLVMValueRef of = LLVMBuildSDiv(c->b, u, Cg, ""), ch = LLVMBuildSRem(c->b, u, Cg, "");
  LLVMValueRef gi = LLVMBuildSDiv(c->b, of, Og, ""), o = LLVMBuildSRem(c->b, of, Og, "");
  LLVMValueRef at = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, gi, Cg), ch), Og), o), cg_i64(c, T));
  LLVMBuildMemCpy(c->b, cg_gep(k, g->dt, dst, at), (unsigned)sz, cg_gep(k, g->dt, w, cg_imul(c, u, cg_i64(c, T))),
                  (unsigned)sz, cg_i64(c, T * sz));
  cg_endfor(k, &U);
}

/* Unit = input channel ch of the image whose number is at work[0]: zero
 * its plane of dx, then add the channel's kh*kw rows of the column block
 * (at work + 64) into it, taps in the padding dropped. */
static void col2im_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const CgConvGeo *g = user;
  CgCtx *c = k->c;
  const Attr *a = &g->n->attr;
  LLVMTypeRef et = cg_elem_type(c, g->dt);
  LLVMValueRef img = LLVMBuildLoad2(c->b, c->t_i64, k->work, "");
  LLVMValueRef x = cg_value_ptr(k, g->x), col = LLVMBuildGEP2(c->b, c->t_i8, k->work, (LLVMValueRef[]){cg_i64(c, 64)}, 1, "");
  LLVMValueRef H = cg_size(k, g->H), W = cg_size(k, g->W), OH = cg_size(k, g->OH);
  LLVMValueRef OW = cg_size(k, g->OW), P = cg_size(k, g->P), HW = cg_imul(c, H, W);
  CgLoop U, I, J, R, Q;
  LLVMValueRef ch = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef xbase = cg_imul(c, cg_iadd(c, cg_imul(c, img, cg_size(k, g->C)), ch), HW);
  LLVMValueRef cbase = cg_imul(c, cg_imul(c, ch, cg_i64(c, (int64_t)g->kh * g->kw)), P);
  cg_zero(k, g->dt, x, xbase, HW);
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, g->kh), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, g->kw), cg_i64(c, 1));
  LLVMValueRef rowbase = cg_iadd(c, cbase, cg_imul(c, cg_iadd(c, cg_imul(c, i, cg_i64(c, g->kw)), j), P));
  LLVMValueRef oh = cg_for(k, &R, cg_i64(c, 0), OH, cg_i64(c, 1));
  LLVMValueRef ih = cg_iadd(c, cg_imul(c, oh, cg_i64(c, a->stride[0])),
                        LLVMBuildSub(c->b, cg_imul(c, i, cg_i64(c, a->dil[0])), cg_i64(c, a->pad[0]), ""));
  LLVMValueRef ow = cg_for(k, &Q, cg_i64(c, 0), OW, cg_i64(c, 1));
  LLVMValueRef iw = cg_iadd(c, cg_imul(c, ow, cg_i64(c, a->stride[1])),
                        LLVMBuildSub(c->b, cg_imul(c, j, cg_i64(c, a->dil[1])), cg_i64(c, a->pad[1]), ""));
  LLVMValueRef ok = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntULT, ih, H, ""),
                                 LLVMBuildICmp(c->b, LLVMIntULT, iw, W, ""), "");
  LLVMValueRef at = cg_iadd(c, xbase, LLVMBuildSelect(c->b, ok, cg_iadd(c, cg_imul(c, ih, W), iw), cg_i64(c, 0), ""));
  LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, g->dt, col, cg_iadd(c, rowbase, cg_iadd(c, cg_imul(c, oh, OW), ow))), "");
  cg_add_to(k, g->dt, x, at, LLVMBuildSelect(c->b, ok, v, LLVMConstNull(et), ""));
  cg_endfor(k, &Q);
  cg_endfor(k, &R);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  cg_endfor(k, &U);
}

/* dx = the transposed convolution of dy, or w^T dy (1x1, or per image
 * then col2im: see bwd_data_way). */
static void conv_bwd_data(CgKernel *k, CgConvGeo *g, const CgIm2col *im, const char *name) {
  CgCtx *c = k->c;
  BwdData way = bwd_data_way(k->g, g->n);
  LLVMValueRef G = cg_i64(c, g->G), zero = cg_i64(c, 0), O = cg_size(k, g->O), P = cg_size(k, g->P);
  LLVMValueRef Og = LLVMBuildSDiv(c->b, O, G, ""), Cg = cg_size(k, g->w->type.dim[1]), Kc = cg_size(k, g->Kc);
  LLVMValueRef HW = cg_size(k, sz_mul(g->H, g->W)), T = cg_i64(c, (int64_t)g->kh * g->kw);
  LLVMValueRef work = k->work ? k->work : LLVMConstNull(c->t_ptr);
  LLVMValueRef gemm_work = LLVMBuildGEP2(c->b, c->t_i8, work, (LLVMValueRef[]){cg_i64(c, bwd_data_bytes(k->g, g->n))}, 1, "");
  ConvGemm q = {.ta = true, .batch = cg_size(k, g->N), .M = Kc, .N = P, .K = Og,
                .A = cg_value_ptr(k, g->w), .lda = Kc, .sa = zero, .gA = cg_imul(c, Og, Kc),
                .B = cg_value_ptr(k, g->y), .ldb = P, .sb = cg_imul(c, O, P), .gB = cg_imul(c, Og, P),
                .C = cg_value_ptr(k, g->x), .ldc = P, .sc = cg_imul(c, cg_imul(c, Kc, G), P), .gC = cg_imul(c, Kc, P),
                .ih = cg_size(k, g->OH), .iw = cg_size(k, g->OW), .pw = cg_size(k, g->W), .work = gemm_work};
  if (way == BWD_TRANSPOSED) {
    swap_w_channels(k, g, work);
    q = (ConvGemm){.im = im, .batch = q.batch, .M = Cg, .N = HW, .K = cg_imul(c, Og, T),
                   .A = work, .lda = cg_imul(c, Og, T), .sa = zero, .gA = cg_imul(c, Cg, cg_imul(c, Og, T)),
                   .B = q.B, .ldb = P, .sb = q.sb, .gB = q.gB,
                   .C = q.C, .ldc = HW, .sc = cg_imul(c, cg_imul(c, Cg, G), HW), .gC = cg_imul(c, Cg, HW),
                   .ih = q.ih, .iw = q.iw, .pw = q.pw, .work = gemm_work};
  }
  if (way != BWD_COL2IM) {
    conv_gemm(k, g, &q);
    return;
  }
  CgLoop L;
  LLVMValueRef img = cg_for(k, &L, zero, cg_size(k, g->N), cg_i64(c, 1));
  LLVMBuildStore(c->b, img, work);
  q.batch = cg_i64(c, 1);
  q.B = cg_gep(k, g->dt, q.B, cg_imul(c, img, q.sb));
  q.C = LLVMBuildGEP2(c->b, c->t_i8, work, (LLVMValueRef[]){cg_i64(c, 64)}, 1, "");
  conv_gemm(k, g, &q);
  LLVMValueRef cost = cg_size(k, sz_mul(g->P, sz_const((int64_t)g->kh * g->kw)));
  cg_parallel(k, name, cg_size(k, g->C), cg_grain(k, cost), col2im_task, g);
  cg_endfor(k, &L);
}

/* dw += dy_n col(x_n)^T, image after image (x itself for 1x1). */
static void conv_bwd_filter(CgKernel *k, const CgConvGeo *g, const CgIm2col *im) {
  CgCtx *c = k->c;
  bool pw = cg_conv_pointwise(g->n);
  LLVMValueRef G = cg_i64(c, g->G), zero = cg_i64(c, 0), O = cg_size(k, g->O), P = cg_size(k, g->P);
  LLVMValueRef Og = LLVMBuildSDiv(c->b, O, G, ""), Kc = cg_size(k, g->Kc), dw = cg_value_ptr(k, g->w);
  LLVMValueRef CHW = cg_imul(c, cg_size(k, g->C), cg_size(k, sz_mul(g->H, g->W)));
  cg_zero(k, g->dt, dw, zero, cg_imul(c, O, Kc));
  CgLoop L;
  LLVMValueRef img = cg_for(k, &L, zero, cg_size(k, g->N), cg_i64(c, 1));
  ConvGemm q = {.tb = pw, .acc = true, .im = pw ? NULL : im, .batch = cg_i64(c, 1), .M = Og, .N = Kc, .K = P,
                .A = cg_gep(k, g->dt, cg_value_ptr(k, g->y), cg_imul(c, img, cg_imul(c, O, P))), .lda = P, .sa = zero,
                .gA = cg_imul(c, Og, P),
                .B = cg_gep(k, g->dt, cg_value_ptr(k, g->x), cg_imul(c, img, CHW)), .ldb = P, .sb = zero,
                .gB = LLVMBuildSDiv(c->b, CHW, G, ""),
                .C = dw, .ldc = Kc, .sc = zero, .gC = cg_imul(c, Og, Kc),
                .ih = cg_size(k, g->H), .iw = cg_size(k, g->W), .pw = cg_size(k, g->OW), .work = k->work};
  conv_gemm(k, g, &q);
  cg_endfor(k, &L);
}

void cg_conv_bwd_kernel(CgKernel *k, const char *name) {
  CgConvGeo g = cg_conv_geo(k->n);
  CgIm2col im = conv_im2col(k->n);
  if (k->n->op == OP_conv2d_bwd_data)
    conv_bwd_data(k, &g, &im, name);
  else
    conv_bwd_filter(k, &g, &im);
}

/* ---- pooling ----------------------------------------------------------------- */

typedef struct PoolCtx {
  const Node *n;
  int vl;                /* lanes pooled as one vector: a blocked input's b, else 1 */
} PoolCtx;

/* Unit u = one output row (image, channel, oh); the window is scanned with
 * bounds checks; avg divides by the window's size inside the padded input
 * (count_include_pad) or by the valid elements. A blocked input [N, C/b, H,
 * W, b] (passes/layout.c) pools its b lanes alike, as one vector of b
 * (b known: the loads of a window are whole lines), else one at a time. */
static void pool_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const PoolCtx *p = user;
  const Node *n = p->n;
  CgCtx *c = k->c;
  const Attr *a = &n->attr;
  const Type *x = &n->in[0]->type, *y = &n->out[0]->type;
  RtDType dt = x->dt;
  LLVMTypeRef et = cg_elem_type(c, dt), vt = p->vl > 1 ? LLVMVectorType(et, (unsigned)p->vl) : et;
  bool isMax = n->op == OP_maxpool2d;
  LLVMValueRef in = cg_value_ptr(k, n->in[0]), out = cg_value_ptr(k, n->out[0]);
  LLVMValueRef H = cg_size(k, x->dim[2]), W = cg_size(k, x->dim[3]);
  LLVMValueRef OH = cg_size(k, y->dim[2]), OW = cg_size(k, y->dim[3]);
  LLVMValueRef L = x->rank == 5 ? cg_size(k, x->dim[4]) : cg_i64(c, 1);
  LLVMValueRef accp = LLVMBuildAlloca(c->b, vt, ""), cntp = LLVMBuildAlloca(c->b, c->t_i64, "");
  CgLoop U, Q, Ln, I, J;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef plane = LLVMBuildSDiv(c->b, u, OH, ""), oh = LLVMBuildSRem(c->b, u, OH, "");
  LLVMValueRef ih0 = LLVMBuildSub(c->b, cg_imul(c, oh, cg_i64(c, a->stride[0])), cg_i64(c, a->pad[0]), "");
  LLVMValueRef ow = cg_for(k, &Q, cg_i64(c, 0), OW, cg_i64(c, 1));
  LLVMValueRef iw0 = LLVMBuildSub(c->b, cg_imul(c, ow, cg_i64(c, a->stride[1])), cg_i64(c, a->pad[1]), "");
  LLVMValueRef lane = cg_for(k, &Ln, cg_i64(c, 0), L, cg_i64(c, p->vl));
  LLVMValueRef init = LLVMConstReal(et, isMax ? -INFINITY : 0.0);
  LLVMBuildStore(c->b, p->vl > 1 ? cg_splat(c, init, p->vl) : init, accp);
  LLVMBuildStore(c->b, cg_i64(c, 0), cntp);
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  LLVMValueRef ih = cg_iadd(c, ih0, cg_imul(c, i, cg_i64(c, a->dil[0])));
  LLVMValueRef iw = cg_iadd(c, iw0, cg_imul(c, j, cg_i64(c, a->dil[1])));
  LLVMValueRef ok = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntULT, ih, H, ""),
                                 LLVMBuildICmp(c->b, LLVMIntULT, iw, W, ""), "");
  LLVMValueRef src = LLVMBuildSelect(c->b, ok, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, plane, H), ih), W), iw),
                                     cg_i64(c, 0), "");
  src = cg_iadd(c, cg_imul(c, src, L), lane);
  LLVMValueRef v = LLVMBuildLoad2(c->b, vt, cg_gep(k, dt, in, src), "");
  LLVMSetAlignment(v, (unsigned)rt_dtype_size(dt));
  LLVMValueRef acc = LLVMBuildLoad2(c->b, vt, accp, "");
  LLVMValueRef nv;
  if (isMax) {
    nv = cg_intrinsic(c, "llvm.maximum", &vt, 1, (LLVMValueRef[]){acc, v}, 2);
  } else {
    nv = LLVMBuildFAdd(c->b, acc, v, "");
  }
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, ok, nv, acc, ""), accp);
  LLVMValueRef cnt = LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
  LLVMBuildStore(c->b, cg_iadd(c, cnt, LLVMBuildZExt(c->b, ok, c->t_i64, "")), cntp);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  LLVMValueRef r = LLVMBuildLoad2(c->b, vt, accp, "");
  if (!isMax) {
    LLVMValueRef cntv = LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
    if (a->count_include_pad) {       /* the window clipped to the padded input */
      LLVMValueRef hend = cg_iadd(c, ih0, cg_i64(c, a->k[0]));
      LLVMValueRef hmax = cg_iadd(c, H, cg_i64(c, a->pad[2]));
      hend = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, hend, hmax, ""), hend, hmax, "");
      LLVMValueRef wend = cg_iadd(c, iw0, cg_i64(c, a->k[1]));
      LLVMValueRef wmax = cg_iadd(c, W, cg_i64(c, a->pad[3]));
      wend = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, wend, wmax, ""), wend, wmax, "");
      cntv = cg_imul(c, LLVMBuildSub(c->b, hend, ih0, ""), LLVMBuildSub(c->b, wend, iw0, ""));
    }
    LLVMValueRef div = LLVMBuildSIToFP(c->b, cntv, et, "");
    r = LLVMBuildFDiv(c->b, r, p->vl > 1 ? cg_splat(c, div, p->vl) : div, "");
  }
  LLVMValueRef st = LLVMBuildStore(c->b, r, cg_gep(k, dt, out, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, u, OW), ow), L), lane)));
  LLVMSetAlignment(st, (unsigned)rt_dtype_size(dt));
  cg_endfor(k, &Ln);
  cg_endfor(k, &Q);
  cg_endfor(k, &U);
}

void cg_pool_kernel(CgKernel *k, const char *name) {
  const Type *y = &k->n->out[0]->type;
  int64_t b;
  PoolCtx p = {k->n, y->rank == 5 && sz_is_const(y->dim[4], &b) && b <= 64 ? (int)b : 1};
  LLVMValueRef rows = cg_size(k, sz_mul(sz_mul(y->dim[0], y->dim[1]), y->dim[2]));
  int64_t win = (int64_t)k->n->attr.k[0] * k->n->attr.k[1];
  Size lanes = y->rank == 5 ? y->dim[4] : sz_const(1);
  cg_parallel(k, name, rows, cg_grain(k, cg_size(k, sz_mul(sz_mul(y->dim[3], lanes), sz_const(win)))),
              pool_task, &p);
}

/* ---- copy: a reshape whose result cannot share its input's storage ---------- */

void cg_copy_kernel(CgKernel *k) {
  CgCtx *c = k->c;
  const Value *o = k->n->out[0];
  LLVMValueRef bytes = cg_imul(c, cg_size(k, prod(&o->type, 0, o->type.rank)),
                           cg_i64(c, rt_dtype_size(o->type.dt)));
  LLVMBuildMemMove(c->b, cg_value_ptr(k, o), 1, cg_value_ptr(k, k->n->in[0]), 1, bytes);
}

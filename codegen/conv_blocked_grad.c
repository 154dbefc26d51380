/* The blocked layout's kernels of training graphs (ops.def's block_weight
 * and conv2d_nchwc_bwd_filter, chosen by passes/layout.c's training entry).
 *
 * block_weight copies an OIHW weight into conv2d_nchwc's blocked form, a
 * unit per pair of (output, input) channel blocks, zeros in the padding
 * channels. It runs every step because the optimizer updates the OIHW
 * parameter. Flipped and transposed, the weight turns conv2d_bwd_data at
 * stride 1 into a conv2d_nchwc of dy.
 *
 * conv2d_nchwc_bwd_filter sums dw[o, c, i, j] = dy[n, o, oh, ow] *
 * x[n, c, oh*s + i*d - pad, ow*s + j*d - pad] over n, oh and ow. A unit
 * owns the dw of RO output blocks (one when their number is odd) and one
 * input block, every tap: it keeps that tile on its stack as vectors over
 * the o lanes, [tap][r][c lane], and walks the images, and in each image
 * bands of BAND output rows (the band's dy and x stay in L1 while every
 * tap reads them). Per band, tap and group of LQ input lanes, RO x LQ
 * accumulators come from the tile; at each output position whose tap
 * falls inside x (the range is computed per tap, so the inner loop has no
 * checks) RO dy vectors are loaded and LQ x values broadcast: RO + LQ
 * loads for RO * LQ FMAs. At the end the tile goes to dw in OIHW, real
 * channels only. Each dw element is summed by one unit in one fixed
 * order: the same result at any thread count, no atomics. */
#include "codegen/codegen.h"

enum { TILE_RO = 2, TILE_LQ = 4, BAND = 4 };


static LLVMValueRef entry_alloca(CgKernel *k, LLVMTypeRef t, const char *name) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn), here = LLVMGetInsertBlock(c->b);
  LLVMPositionBuilder(c->b, entry, LLVMGetFirstInstruction(entry));
  LLVMValueRef a = LLVMBuildAlloca(c->b, t, name);
  LLVMPositionBuilderAtEnd(c->b, here);
  return a;
}

/* ---- block_weight ------------------------------------------------------------ */

typedef struct BlockW {
  const Node *n;
  int64_t O, C, D1, b, taps;   /* D1: blocks of the destination's second axis */
} BlockW;

/* Unit u = (d0, d1), the destination's two block axes: o = d0 * b + lane
 * out and c = d1 * b + lane in, or swapped and the taps reversed (a flip of
 * both axes reverses the linear tap index). */
static void block_weight_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const BlockW *bw = user;
  CgCtx *c = k->c;
  bool tr = bw->n->attr.trans_a;
  RtDType dt = bw->n->in[0]->type.dt;
  LLVMTypeRef et = cg_elem_type(c, dt);
  LLVMValueRef src = cg_value_ptr(k, bw->n->in[0]), dst = cg_value_ptr(k, bw->n->out[0]);
  CgLoop U, T, I, L;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef d0 = LLVMBuildSDiv(c->b, u, cg_i64(c, bw->D1), ""), d1 = LLVMBuildSRem(c->b, u, cg_i64(c, bw->D1), "");
  LLVMValueRef t = cg_for(k, &T, cg_i64(c, 0), cg_i64(c, bw->taps), cg_i64(c, 1));
  LLVMValueRef li = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, bw->b), cg_i64(c, 1));
  LLVMValueRef lo_ = cg_for(k, &L, cg_i64(c, 0), cg_i64(c, bw->b), cg_i64(c, 1));
  LLVMValueRef a = cg_iadd(c, cg_imul(c, d0, cg_i64(c, bw->b)), lo_), z = cg_iadd(c, cg_imul(c, d1, cg_i64(c, bw->b)), li);
  LLVMValueRef o = tr ? z : a, ch = tr ? a : z;
  LLVMValueRef st = tr ? LLVMBuildSub(c->b, cg_i64(c, bw->taps - 1), t, "") : t;
  LLVMValueRef real = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, o, cg_i64(c, bw->O), ""),
                                   LLVMBuildICmp(c->b, LLVMIntSLT, ch, cg_i64(c, bw->C), ""), "");
  LLVMValueRef from = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, o, cg_i64(c, bw->C)), ch), cg_i64(c, bw->taps)), st);
  from = LLVMBuildSelect(c->b, real, from, cg_i64(c, 0), "");   /* padding: read w[0], store 0 */
  LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, src, from), "");
  LLVMValueRef to = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, u, cg_i64(c, bw->taps)), t), cg_i64(c, bw->b)), li),
                               cg_i64(c, bw->b)), lo_);
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, real, v, LLVMConstNull(et), ""), cg_gep(k, dt, dst, to));
  cg_endfor(k, &L);
  cg_endfor(k, &I);
  cg_endfor(k, &T);
  cg_endfor(k, &U);
}

static void block_weight_kernel(CgKernel *k, const char *name) {
  const Type *w = &k->n->in[0]->type, *y = &k->n->out[0]->type;
  BlockW bw = {.n = k->n};
  int64_t d0, kh, kw;
  sz_is_const(w->dim[0], &bw.O);
  sz_is_const(w->dim[1], &bw.C);
  sz_is_const(w->dim[2], &kh);
  sz_is_const(w->dim[3], &kw);
  sz_is_const(y->dim[0], &d0);
  sz_is_const(y->dim[1], &bw.D1);
  sz_is_const(y->dim[4], &bw.b);
  bw.taps = kh * kw;
  CgCtx *c = k->c;
  cg_parallel(k, name, cg_i64(c, d0 * bw.D1), cg_grain(k, cg_i64(c, bw.taps * bw.b * bw.b)),
              block_weight_task, &bw);
}

/* ---- conv2d_nchwc_bwd_filter ------------------------------------------------- */

typedef struct BwdF {
  const Node *n;
  RtDType dt;
  int b, lq, ro;             /* lanes; input lanes per accumulator group; output blocks
                                per unit (TILE_RO, or 1 for an odd number of blocks) */
  int64_t Ob, Cb, O, C, taps;
  /* per task, at run time */
  LLVMValueRef dy, x, dw, tile;
  LLVMValueRef N, H, W, OH, OW, ob0, cb;
} BwdF;

/* Outputs o in [0, n) whose input o*s + off lies in [0, len). */
static void tap_range(CgCtx *c, int s, LLVMValueRef off, LLVMValueRef len, LLVMValueRef n,
                      LLVMValueRef *lo, LLVMValueRef *hi) {
  LLVMValueRef neg = cg_imax(c, LLVMBuildNeg(c->b, off, ""), cg_i64(c, 0));
  *lo = LLVMBuildSDiv(c->b, cg_iadd(c, neg, cg_i64(c, s - 1)), cg_i64(c, s), "");
  LLVMValueRef last = LLVMBuildSub(c->b, LLVMBuildSub(c->b, len, cg_i64(c, 1), ""), off, "");
  LLVMValueRef h = cg_iadd(c, LLVMBuildSDiv(c->b, last, cg_i64(c, s), ""), cg_i64(c, 1));
  *hi = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, last, cg_i64(c, 0), ""), cg_i64(c, 0),
                        cg_imin(c, h, n), "");
}

/* Index of vector (tap t, block r, input lane l) in the unit's tile. */
static LLVMValueRef tile_at(BwdF *f, CgCtx *c, LLVMValueRef t, int r, LLVMValueRef l) {
  return cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, t, cg_i64(c, TILE_RO)), cg_i64(c, r)), cg_i64(c, f->b)), l);
}

/* The accumulators of (tap t, lanes lg .. lg + lq) over output rows
 * [oh_lo, oh_hi) of image n: ro blocks of dy against tap (i, j) of x. */
static void bwdf_tap(CgKernel *k, BwdF *f, int ro, LLVMValueRef n, LLVMValueRef oh_lo,
                     LLVMValueRef oh_hi, LLVMValueRef t, LLVMValueRef i, LLVMValueRef j) {
  CgCtx *c = k->c;
  const Attr *a = &f->n->attr;
  int b = f->b, lq = f->lq;
  LLVMTypeRef et = cg_elem_type(c, f->dt), vt = LLVMVectorType(et, (unsigned)b);
  LLVMValueRef acc[TILE_RO * TILE_LQ];
  for (int q = 0; q < ro * lq; q++)
    acc[q] = entry_alloca(k, vt, "acc");
  LLVMValueRef offh = LLVMBuildSub(c->b, cg_imul(c, i, cg_i64(c, a->dil[0])), cg_i64(c, a->pad[0]), "");
  LLVMValueRef offw = LLVMBuildSub(c->b, cg_imul(c, j, cg_i64(c, a->dil[1])), cg_i64(c, a->pad[1]), "");
  LLVMValueRef rlo, rhi, clo, chi;
  tap_range(c, a->stride[0], offh, f->H, f->OH, &rlo, &rhi);
  tap_range(c, a->stride[1], offw, f->W, f->OW, &clo, &chi);
  rlo = cg_imax(c, rlo, oh_lo);
  rhi = cg_imin(c, rhi, oh_hi);
  CgLoop G, R, Q;
  LLVMValueRef lg = cg_for(k, &G, cg_i64(c, 0), cg_i64(c, b), cg_i64(c, lq));
  for (int r = 0; r < ro; r++)
    for (int q = 0; q < lq; q++) {
      LLVMValueRef at = cg_gep(k, f->dt, f->tile, cg_imul(c, tile_at(f, c, t, r, cg_iadd(c, lg, cg_i64(c, q))), cg_i64(c, b)));
      LLVMBuildStore(c->b, LLVMBuildLoad2(c->b, vt, at, ""), acc[r * lq + q]);
    }
  LLVMValueRef oh = cg_for(k, &R, rlo, rhi, cg_i64(c, 1));
  LLVMValueRef ih = cg_iadd(c, cg_imul(c, oh, cg_i64(c, a->stride[0])), offh);
  LLVMValueRef xrow = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, n, cg_i64(c, f->Cb)), f->cb), f->H), ih), f->W);
  LLVMValueRef ow = cg_for(k, &Q, clo, chi, cg_i64(c, 1));
  LLVMValueRef iw = cg_iadd(c, cg_imul(c, ow, cg_i64(c, a->stride[1])), offw);
  LLVMValueRef xat = cg_iadd(c, cg_imul(c, cg_iadd(c, xrow, iw), cg_i64(c, b)), lg);
  LLVMValueRef dv[TILE_RO];
  for (int r = 0; r < ro; r++) {
    LLVMValueRef blk = cg_iadd(c, cg_imul(c, n, cg_i64(c, f->Ob)), cg_iadd(c, f->ob0, cg_i64(c, r)));
    LLVMValueRef at = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, blk, f->OH), oh), f->OW), ow), cg_i64(c, b));
    dv[r] = LLVMBuildLoad2(c->b, vt, cg_gep(k, f->dt, f->dy, at), "");
    LLVMSetAlignment(dv[r], rt_dtype_size(f->dt));
  }
  for (int q = 0; q < lq; q++) {
    LLVMValueRef xs = LLVMBuildLoad2(c->b, et, cg_gep(k, f->dt, f->x, cg_iadd(c, xat, cg_i64(c, q))), "");
    LLVMValueRef xv = cg_splat(c, xs, b);
    for (int r = 0; r < ro; r++) {
      LLVMValueRef args[] = {dv[r], xv, LLVMBuildLoad2(c->b, vt, acc[r * lq + q], "")};
      LLVMBuildStore(c->b, cg_intrinsic(c, "llvm.fma", &vt, 1, args, 3), acc[r * lq + q]);
    }
  }
  cg_endfor(k, &Q);
  cg_endfor(k, &R);
  for (int r = 0; r < ro; r++)
    for (int q = 0; q < lq; q++) {
      LLVMValueRef at = cg_gep(k, f->dt, f->tile, cg_imul(c, tile_at(f, c, t, r, cg_iadd(c, lg, cg_i64(c, q))), cg_i64(c, b)));
      LLVMBuildStore(c->b, LLVMBuildLoad2(c->b, vt, acc[r * lq + q], ""), at);
    }
  cg_endfor(k, &G);
}

/* The unit's tile, real channels only, to dw [O, C, KH, KW]. */
static void bwdf_store(CgKernel *k, BwdF *f, int ro) {
  CgCtx *c = k->c;
  LLVMTypeRef et = cg_elem_type(c, f->dt);
  CgLoop T, L, P;
  LLVMValueRef t = cg_for(k, &T, cg_i64(c, 0), cg_i64(c, f->taps), cg_i64(c, 1));
  LLVMValueRef l = cg_for(k, &L, cg_i64(c, 0), cg_i64(c, f->b), cg_i64(c, 1));
  LLVMValueRef p = cg_for(k, &P, cg_i64(c, 0), cg_i64(c, f->b), cg_i64(c, 1));
  LLVMValueRef ch = cg_iadd(c, cg_imul(c, f->cb, cg_i64(c, f->b)), l);
  for (int r = 0; r < ro; r++) {
    LLVMValueRef o = cg_iadd(c, cg_imul(c, cg_iadd(c, f->ob0, cg_i64(c, r)), cg_i64(c, f->b)), p);
    LLVMValueRef real = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, o, cg_i64(c, f->O), ""),
                                     LLVMBuildICmp(c->b, LLVMIntSLT, ch, cg_i64(c, f->C), ""), "");
    LLVMBasicBlockRef st = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "real");
    LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "pad");
    LLVMBuildCondBr(c->b, real, st, skip);
    LLVMPositionBuilderAtEnd(c->b, st);
    LLVMValueRef from = cg_iadd(c, cg_imul(c, tile_at(f, c, t, r, l), cg_i64(c, f->b)), p);
    LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, f->dt, f->tile, from), "");
    LLVMValueRef to = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, o, cg_i64(c, f->C)), ch), cg_i64(c, f->taps)), t);
    LLVMBuildStore(c->b, v, cg_gep(k, f->dt, f->dw, to));
    LLVMBuildBr(c->b, skip);
    LLVMPositionBuilderAtEnd(c->b, skip);
  }
  cg_endfor(k, &P);
  cg_endfor(k, &L);
  cg_endfor(k, &T);
}

/* One unit's dw with ro output blocks: images, bands of rows, taps. */
static void bwdf_unit(CgKernel *k, BwdF *f, int ro) {
  CgCtx *c = k->c;
  const Attr *a = &f->n->attr;
  cg_zero(k, f->dt, f->tile, cg_i64(c, 0), cg_i64(c, f->taps * TILE_RO * f->b * f->b));
  CgLoop Nl, B, I, J;
  LLVMValueRef n = cg_for(k, &Nl, cg_i64(c, 0), f->N, cg_i64(c, 1));
  LLVMValueRef oh0 = cg_for(k, &B, cg_i64(c, 0), f->OH, cg_i64(c, BAND));
  LLVMValueRef oh1 = cg_imin(c, cg_iadd(c, oh0, cg_i64(c, BAND)), f->OH);
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  bwdf_tap(k, f, ro, n, oh0, oh1, cg_iadd(c, cg_imul(c, i, cg_i64(c, a->k[1])), j), i, j);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  cg_endfor(k, &B);
  cg_endfor(k, &Nl);
  bwdf_store(k, f, ro);
}

/* Unit u = (group of ro output blocks, input block). */
static void bwdf_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  BwdF *f = user;
  CgCtx *c = k->c;
  const Node *n = f->n;
  LLVMTypeRef et = cg_elem_type(c, f->dt);
  f->dy = cg_value_ptr(k, n->in[0]);
  f->x = cg_value_ptr(k, n->in[1]);
  f->dw = cg_value_ptr(k, n->out[0]);
  f->tile = entry_alloca(k, LLVMArrayType2(et, (uint64_t)(f->taps * TILE_RO * f->b * f->b)), "tile");
  LLVMSetAlignment(f->tile, 64);     /* its vectors are loaded whole */
  f->N = cg_size(k, n->in[1]->type.dim[0]);
  f->H = cg_size(k, n->in[1]->type.dim[2]);
  f->W = cg_size(k, n->in[1]->type.dim[3]);
  f->OH = cg_size(k, n->in[0]->type.dim[2]);
  f->OW = cg_size(k, n->in[0]->type.dim[3]);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  f->ob0 = cg_imul(c, LLVMBuildSDiv(c->b, u, cg_i64(c, f->Cb), ""), cg_i64(c, f->ro));
  f->cb = LLVMBuildSRem(c->b, u, cg_i64(c, f->Cb), "");
  bwdf_unit(k, f, f->ro);
  cg_endfor(k, &U);
}

static void bwdf_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *dy = &n->in[0]->type, *x = &n->in[1]->type, *w = &n->out[0]->type;
  int64_t b = 0;
  BwdF f = {.n = n, .dt = w->dt, .taps = (int64_t)n->attr.k[0] * n->attr.k[1]};
  sz_is_const(x->dim[4], &b);
  sz_is_const(dy->dim[1], &f.Ob);
  sz_is_const(x->dim[1], &f.Cb);
  sz_is_const(w->dim[0], &f.O);
  sz_is_const(w->dim[1], &f.C);
  f.b = (int)b;
  f.lq = f.b < TILE_LQ ? f.b : TILE_LQ;
  f.ro = f.Ob % TILE_RO ? 1 : TILE_RO;
  Size cost = sz_mul(sz_mul(dy->dim[0], sz_mul(dy->dim[2], dy->dim[3])), sz_const(f.taps * b * b * f.ro));
  cg_parallel(k, name, cg_i64(c, f.Ob / f.ro * f.Cb), cg_grain(k, cg_size(k, cost)), bwdf_task, &f);
}

void cg_blocked_grad_kernel(CgKernel *k, const char *name) {
  if (k->n->op == OP_block_weight)
    block_weight_kernel(k, name);
  else
    bwdf_kernel(k, name);
}

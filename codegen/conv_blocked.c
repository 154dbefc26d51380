/* The blocked layout's kernels (ops.def's BLOCKED rows, chosen by
 * passes/layout.c): a blocked tensor of b lanes is [N, C/b, S..., b]. With
 * one block of all C channels, [N, 1, H, W, C], it is NHWC.
 *
 * relayout copies between NCHW and blocked, a unit per (image, channel
 * block), writing zeros into the channels past C.
 *
 * conv2d_nchwc is a direct convolution in the manner of TVM's
 * conv2d_NCHWc: no im2col and no packing, since the blocked input is
 * already what a micro-kernel wants. Its input may have bi lanes other
 * than the output's b: an NHWC input (bi = C, one block) reads a first
 * layer of 1 or 3 channels unpadded, the one place NHWC saves FLOPs. A
 * register tile holds RO output
 * channel blocks x up to RW output columns of one output row, RO * RW
 * vectors of b lanes (2 x 6 = 12 accumulators of 8 floats on AVX2, as the
 * GEMM's 6x16). For each input channel block, kernel tap (i, j) and input
 * lane l, it loads RO weight vectors w[ob, cb, i, j, l, 0..b) and
 * broadcasts rw input values x[n, cb, ih, iw, l], l < bi: RO + rw loads
 * for RO * rw FMAs. A row's tiles are planned at compile time (widths
 * balanced, no lone columns); the columns of the tiles at the padding
 * read a zero buffer where iw is out of range, and rows out of range are
 * skipped. The
 * finished vectors go through the fused group's epilogue (bias,
 * activation, residual) in registers, like the GEMM's. Parallel over
 * (image, output row, pair of output blocks), a chunk a band of rows;
 * each output is written by one unit, so results do not depend on the
 * thread count. */
#include "codegen/codegen.h"

enum { TILE_RO = 2, TILE_RW = 6 };


/* lo <= v < hi, unsigned trick: v - lo < hi - lo */
static LLVMValueRef in_range(CgCtx *c, LLVMValueRef v, LLVMValueRef hi) {
  return LLVMBuildICmp(c->b, LLVMIntULT, v, hi, "");
}

/* ---- relayout ------------------------------------------------------------------ */

typedef struct Relayout {
  const Value *flat, *blk;   /* [N, C, S...] and [N, C/b, S..., b] */
  bool to_blocked;
  int64_t C, b;
} Relayout;

/* Unit u = (image, channel block): its b channels, each S contiguous
 * values in the flat tensor, interleaved by lane in the blocked one. */
static void relayout_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const Relayout *r = user;
  CgCtx *c = k->c;
  RtDType dt = r->flat->type.dt;
  LLVMTypeRef et = cg_elem_type(c, dt);
  Size S = sz_const(1);
  for (int i = 2; i < r->flat->type.rank; i++)
    S = sz_mul(S, r->flat->type.dim[i]);
  LLVMValueRef s_n = cg_size(k, S), cb_n = cg_i64(c, (r->C + r->b - 1) / r->b);
  LLVMValueRef flat = cg_value_ptr(k, r->flat), blk = cg_value_ptr(k, r->blk);
  CgLoop U, L, P;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef img = LLVMBuildSDiv(c->b, u, cb_n, ""), cb = LLVMBuildSRem(c->b, u, cb_n, "");
  LLVMValueRef l = cg_for(k, &L, cg_i64(c, 0), cg_i64(c, r->b), cg_i64(c, 1));
  LLVMValueRef ch = cg_iadd(c, cg_imul(c, cb, cg_i64(c, r->b)), l);
  LLVMValueRef real = LLVMBuildICmp(c->b, LLVMIntSLT, ch, cg_i64(c, r->C), "");
  /* a padding channel reads channel 0 and stores a zero */
  LLVMValueRef fbase = cg_imul(c, cg_iadd(c, cg_imul(c, img, cg_i64(c, r->C)),
                                  LLVMBuildSelect(c->b, real, ch, cg_i64(c, 0), "")), s_n);
  LLVMValueRef p = cg_for(k, &P, cg_i64(c, 0), s_n, cg_i64(c, 1));
  LLVMValueRef fat = cg_iadd(c, fbase, p), bat = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, u, s_n), p), cg_i64(c, r->b)), l);
  if (r->to_blocked) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, flat, fat), "");
    LLVMBuildStore(c->b, LLVMBuildSelect(c->b, real, v, LLVMConstNull(et), ""), cg_gep(k, dt, blk, bat));
  } else {
    LLVMBasicBlockRef st = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "real");
    LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "pad");
    LLVMBuildCondBr(c->b, real, st, skip);
    LLVMPositionBuilderAtEnd(c->b, st);
    LLVMValueRef v = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, blk, bat), "");
    LLVMBuildStore(c->b, v, cg_gep(k, dt, flat, fat));
    LLVMBuildBr(c->b, skip);
    LLVMPositionBuilderAtEnd(c->b, skip);
  }
  cg_endfor(k, &P);
  cg_endfor(k, &L);
  cg_endfor(k, &U);
}

static void relayout_kernel(CgKernel *k, const char *name) {
  const Node *n = k->n;
  const Value *x = n->in[0], *y = n->out[0];
  Relayout r = {.to_blocked = y->type.rank > x->type.rank};
  r.flat = r.to_blocked ? x : y;
  r.blk = r.to_blocked ? y : x;
  sz_is_const(r.flat->type.dim[1], &r.C);
  sz_is_const(r.blk->type.dim[r.blk->type.rank - 1], &r.b);
  LLVMValueRef units = cg_size(k, sz_mul(r.blk->type.dim[0], r.blk->type.dim[1]));
  Size per = sz_const(r.b);
  for (int i = 2; i < r.flat->type.rank; i++)
    per = sz_mul(per, r.flat->type.dim[i]);
  cg_parallel(k, name, units, cg_grain(k, cg_size(k, per)), relayout_task, &r);
}

/* ---- conv2d_nchwc ---------------------------------------------------------------- */

typedef struct ConvB {
  const Node *n;
  RtDType dt;
  int b, bi;                 /* lanes of the output, of the input */
  int64_t Ob, Cb;            /* output and input channel blocks */
  int64_t W, OW;             /* input and output widths (bound at compile time) */
  CgEpiPlan *ep;             /* the fused group, or NULL */
  LLVMValueRef zeros;        /* bi zeros: what a column outside the input reads */
  /* per task, at run time */
  LLVMValueRef x, w, out, epi;
  LLVMValueRef H, OH, img, oh;
} ConvB;

/* Whether output column ow reads outside the input at some tap j. */
static bool col_reaches_out(const ConvB *cv, int64_t ow) {
  const Attr *a = &cv->n->attr;
  int64_t first = ow * a->stride[1] - a->pad[1];
  return first < 0 || first + (int64_t)(a->k[1] - 1) * a->dil[1] >= cv->W;
}

/* chk[q]: column ow0 + q of a tile of rw reaches out; returns whether any does. */
static bool tile_checks(const ConvB *cv, int64_t ow0, int rw, bool *chk) {
  bool any = false;
  for (int q = 0; q < rw; q++)
    any |= chk[q] = col_reaches_out(cv, ow0 + q);
  return any;
}

/* One register tile: ro output blocks from ob0, rw columns from ow0 of
 * output row cv->oh. chk (NULL: none) marks the columns whose window may
 * leave the input: per tap, such a column reads the zeros when iw is out
 * of range, so the FMAs are the same as inside and only the address is
 * chosen (a select per column and tap, not per value loaded). */
static void conv_tile(CgKernel *k, ConvB *cv, int ro, int rw, const bool *chk, LLVMValueRef ob0,
                      LLVMValueRef ow0) {
  CgCtx *c = k->c;
  const Attr *a = &cv->n->attr;
  LLVMTypeRef et = cg_elem_type(c, cv->dt), vt = LLVMVectorType(et, (unsigned)cv->b);
  int b = cv->b, bi = cv->bi, kh = a->k[0], kw = a->k[1];
  LLVMValueRef acc[TILE_RO * TILE_RW];
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn), here = LLVMGetInsertBlock(c->b);
  LLVMPositionBuilder(c->b, entry, LLVMGetFirstInstruction(entry));
  for (int t = 0; t < ro * rw; t++)
    acc[t] = LLVMBuildAlloca(c->b, vt, "acc");
  LLVMPositionBuilderAtEnd(c->b, here);
  for (int t = 0; t < ro * rw; t++)
    LLVMBuildStore(c->b, LLVMConstNull(vt), acc[t]);
  CgLoop CB, I, J;
  LLVMValueRef cb = cg_for(k, &CB, cg_i64(c, 0), cg_i64(c, cv->Cb), cg_i64(c, 1));
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, kh), cg_i64(c, 1));
  LLVMValueRef ih = LLVMBuildSub(c->b, cg_iadd(c, cg_imul(c, cv->oh, cg_i64(c, a->stride[0])), cg_imul(c, i, cg_i64(c, a->dil[0]))),
                                 cg_i64(c, a->pad[0]), "");
  LLVMBasicBlockRef row = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "row");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "next_i");
  LLVMBuildCondBr(c->b, in_range(c, ih, cv->H), row, next);
  LLVMPositionBuilderAtEnd(c->b, row);
  LLVMValueRef xrow = cg_imul(c, cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, cv->img, cg_i64(c, cv->Cb)), cb), cv->H), ih),
                                 cg_i64(c, cv->W)), cg_i64(c, bi));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, kw), cg_i64(c, 1));
  /* w[ob0 + r, cb, i, j, l, 0..b): blocks of bi*b, one per tap */
  LLVMValueRef tap = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, cb, cg_i64(c, kh)), i), cg_i64(c, kw)), j), cg_i64(c, (int64_t)bi * b));
  LLVMValueRef wblk = cg_i64(c, cv->Cb * kh * kw * bi * b);
  LLVMValueRef wbase[TILE_RO], xp[TILE_RW];
  for (int r = 0; r < ro; r++)
    wbase[r] = cg_iadd(c, cg_imul(c, cg_iadd(c, ob0, cg_i64(c, r)), wblk), tap);
  for (int q = 0; q < rw; q++) {
    LLVMValueRef iw = LLVMBuildSub(c->b, cg_iadd(c, cg_imul(c, cg_iadd(c, ow0, cg_i64(c, q)), cg_i64(c, a->stride[1])),
                                             cg_imul(c, j, cg_i64(c, a->dil[1]))), cg_i64(c, a->pad[1]), "");
    xp[q] = cg_gep(k, cv->dt, cv->x, cg_iadd(c, xrow, cg_imul(c, iw, cg_i64(c, bi))));
    if (chk && chk[q])
      xp[q] = LLVMBuildSelect(c->b, in_range(c, iw, cg_i64(c, cv->W)), xp[q], cv->zeros, "");
  }
  for (int l = 0; l < bi; l++) {
    LLVMValueRef wv[TILE_RO];
    for (int r = 0; r < ro; r++) {
      wv[r] = LLVMBuildLoad2(c->b, vt, cg_gep(k, cv->dt, cv->w, cg_iadd(c, wbase[r], cg_i64(c, (int64_t)l * b))), "");
      LLVMSetAlignment(wv[r], rt_dtype_size(cv->dt));
    }
    for (int q = 0; q < rw; q++) {
      LLVMValueRef xs = LLVMBuildLoad2(c->b, et, cg_gep(k, cv->dt, xp[q], cg_i64(c, l)), "");
      LLVMValueRef xv = cg_splat(c, xs, b);
      for (int r = 0; r < ro; r++) {
        LLVMValueRef s = LLVMBuildLoad2(c->b, vt, acc[r * rw + q], "");
        LLVMValueRef args[] = {xv, wv[r], s};
        LLVMBuildStore(c->b, cg_intrinsic(c, "llvm.fma", &vt, 1, args, 3), acc[r * rw + q]);
      }
    }
  }
  cg_endfor(k, &J);
  LLVMBuildBr(c->b, next);
  LLVMPositionBuilderAtEnd(c->b, next);
  cg_endfor(k, &I);
  cg_endfor(k, &CB);
  LLVMValueRef OW = cg_i64(c, cv->OW), OHW = cg_imul(c, cv->OH, OW);
  for (int r = 0; r < ro; r++)
    for (int q = 0; q < rw; q++) {
      LLVMValueRef ob = cg_iadd(c, ob0, cg_i64(c, r)), pos = cg_iadd(c, cg_imul(c, cv->oh, OW), cg_iadd(c, ow0, cg_i64(c, q)));
      LLVMValueRef v = LLVMBuildLoad2(c->b, vt, acc[r * rw + q], "");
      if (cv->ep)
        v = cv->ep->epi.fn(c, cv->ep->epi.user, v, NULL, cv->epi, cv->img, ob, pos);
      LLVMValueRef at = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, cv->img, cg_i64(c, cv->Ob)), ob), OHW), pos), cg_i64(c, b));
      LLVMSetAlignment(LLVMBuildStore(c->b, v, cg_gep(k, cv->dt, cv->out, at)), rt_dtype_size(cv->dt));
    }
}

/* Width of tile t of a row: the row's ceil(OW / TILE_RW) tiles share its
 * columns evenly, the wider ones first (OW = 32: 6, 6, 5, 5, 5, 5), so no
 * tile is a lone column whose few accumulators wait on the FMA latency. */
static int tile_width(const ConvB *cv, int64_t t) {
  int64_t tiles = (cv->OW + TILE_RW - 1) / TILE_RW;
  return (int)(cv->OW / tiles + (t < cv->OW % tiles));
}

/* An output row of ro blocks, tile by tile, planned at compile time: a
 * run of tiles of one width, all inside the input or all reaching out of
 * it (at the padding, the row's ends), is a loop; a run reaching out
 * checks the columns that reach out in any of its tiles (a check is
 * always safe, so a row wholly in the padding is still a few loops). */
static void conv_row(CgKernel *k, ConvB *cv, int ro, LLVMValueRef ob0) {
  CgCtx *c = k->c;
  int64_t tiles = (cv->OW + TILE_RW - 1) / TILE_RW;
  bool chk[TILE_RW], more[TILE_RW];
  for (int64_t t = 0, ow0 = 0; t < tiles;) {
    int rw = tile_width(cv, t);
    bool edge = tile_checks(cv, ow0, rw, chk);
    int64_t n = 1;
    for (; t + n < tiles && tile_width(cv, t + n) == rw && tile_checks(cv, ow0 + n * rw, rw, more) == edge; n++)
      for (int q = 0; q < rw; q++)
        chk[q] |= more[q];
    CgLoop Q;
    LLVMValueRef at = cg_for(k, &Q, cg_i64(c, ow0), cg_i64(c, ow0 + n * rw), cg_i64(c, rw));
    conv_tile(k, cv, ro, rw, edge ? chk : NULL, ob0, at);
    cg_endfor(k, &Q);
    t += n, ow0 += n * rw;
  }
}

/* Unit u = (image, output row, pair of output blocks); an odd last block
 * takes a tile of one. Rows outside pairs: the team's threads each take
 * a contiguous range of chunks first (runtime/parallel.c), which is then
 * a band of rows of every block, the band whose inputs the same thread
 * wrote in the convolution before; by pairs, each thread read all the
 * input, half of it from the other core's cache (bench/NOTES.md, h/par). */
static void conv_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  ConvB *cv = user;
  CgCtx *c = k->c;
  const Node *n = cv->n;
  cv->x = cg_value_ptr(k, n->in[0]);
  cv->w = cg_value_ptr(k, n->in[1]);
  cv->out = cg_value_ptr(k, cv->ep ? cv->ep->c : n->out[0]);
  cv->epi = cv->ep ? cg_epi_args(k, cv->ep, NULL) : NULL;
  cv->H = cg_size(k, n->in[0]->type.dim[2]);
  cv->OH = cg_size(k, n->out[0]->type.dim[2]);
  LLVMValueRef pairs = cg_i64(c, (cv->Ob + TILE_RO - 1) / TILE_RO);
  LLVMValueRef per_img = cg_imul(c, pairs, cv->OH);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  cv->img = LLVMBuildSDiv(c->b, u, per_img, "");
  LLVMValueRef rest = LLVMBuildSRem(c->b, u, per_img, "");
  LLVMValueRef ob0 = cg_imul(c, LLVMBuildSRem(c->b, rest, pairs, ""), cg_i64(c, TILE_RO));
  cv->oh = LLVMBuildSDiv(c->b, rest, pairs, "");
  if (cv->Ob % TILE_RO == 0) {
    conv_row(k, cv, TILE_RO, ob0);
  } else {
    LLVMBasicBlockRef pair = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "pair");
    LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "one");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "rowdone");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLE, cg_iadd(c, ob0, cg_i64(c, TILE_RO)), cg_i64(c, cv->Ob), ""),
                    pair, one);
    LLVMPositionBuilderAtEnd(c->b, pair);
    conv_row(k, cv, TILE_RO, ob0);
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, one);
    conv_row(k, cv, 1, ob0);
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, done);
  }
  cg_endfor(k, &U);
}

/* Units per chunk: at least cg_grain's, and a band of up to BAND_ROWS
 * output rows (of all pairs) while that leaves MIN_CHUNKS chunks. Chunks of one row
 * (cg_grain's choice, a row being costly) were handed to the threads in
 * turn, so each thread read nearly every input row, half of them just
 * written by the other core, and took a chunk every few microseconds; a
 * band reads its rows once plus two of halo. At 2 threads (ResNet, see
 * bench/NOTES.md) bands of 8-16 rows ran 10-25% faster than single rows
 * and a static half per thread slower. A function of the shape only, so
 * the chunking, like the results, is the same at any thread count. */
enum { BAND_ROWS = 8, MIN_CHUNKS = 8 };

static LLVMValueRef row_band_grain(CgKernel *k, LLVMValueRef units, LLVMValueRef unit_cost, int64_t pairs) {
  CgCtx *c = k->c;
  LLVMValueRef grain = cg_grain(k, unit_cost);
  LLVMValueRef band = cg_imin(c, cg_i64(c, BAND_ROWS * pairs), LLVMBuildSDiv(c->b, units, cg_i64(c, MIN_CHUNKS), ""));
  return cg_imax(c, grain, band);
}

static void conv_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *w = &n->in[1]->type, *y = &n->out[0]->type;
  int64_t b = 0, bi = 0;
  ConvB cv = {.n = n, .dt = y->dt};
  sz_is_const(w->dim[4], &bi);
  sz_is_const(w->dim[5], &b);
  sz_is_const(w->dim[0], &cv.Ob);
  sz_is_const(w->dim[1], &cv.Cb);
  cv.b = (int)b, cv.bi = (int)bi;
  /* spatial extents never hold the batch: every size variable they use
   * is bound by now (passes/layout.c's regions need them) */
  sz_eval(n->in[0]->type.dim[3], k->g->svals, &cv.W);
  sz_eval(y->dim[3], k->g->svals, &cv.OW);
  LLVMTypeRef zt = LLVMArrayType(cg_elem_type(c, cv.dt), (unsigned)bi);
  cv.zeros = LLVMAddGlobal(c->mod, zt, "conv.zeros");
  LLVMSetInitializer(cv.zeros, LLVMConstNull(zt));
  LLVMSetGlobalConstant(cv.zeros, 1);
  LLVMSetLinkage(cv.zeros, LLVMPrivateLinkage);
  CgEpiPlan ep;
  if (cg_epi_plan_lanes(k, 1, 2, &ep))
    cv.ep = &ep;
  int64_t pairs = (cv.Ob + TILE_RO - 1) / TILE_RO;
  LLVMValueRef units = cg_imul(c, cg_size(k, y->dim[0]), cg_imul(c, cg_i64(c, pairs), cg_size(k, y->dim[2])));
  Size cost = sz_mul(y->dim[3], sz_const(cv.Cb * n->attr.k[0] * n->attr.k[1] * bi * b * TILE_RO));
  cg_parallel(k, name, units, row_band_grain(k, units, cg_size(k, cost), pairs), conv_task, &cv);
  if (cv.ep)
    cg_epi_free(&ep);
}

void cg_blocked_kernel(CgKernel *k, const char *name) {
  if (k->n->op == OP_block_weight || k->n->op == OP_conv2d_nchwc_bwd_filter)
    cg_blocked_grad_kernel(k, name);
  else if (k->n->op == OP_conv2d_nchwc)
    conv_kernel(k, name);
  else if (k->n->op == OP_conv2d_winograd || k->n->op == OP_winograd_filter)
    cg_winograd_kernel(k, name);
  else if (!cg_relayout_squares(k, name))
    relayout_kernel(k, name);
}

/* Winograd F(2x2, 3x3) on the blocked layout (ops.def's winograd_filter
 * and conv2d_winograd, chosen by passes/winograd.c). With B^T, G, A^T of
 * Lavin and Gray (2015), a 2x2 output tile Y of one output channel is
 *   Y = A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A
 * over the input channels c, d_c the 4x4 input tile, g_c the 3x3 taps: 16
 * multiplies per channel pair where the direct convolution does 36.
 *
 * winograd_filter computes U = G g G^T per channel pair, [16, O/b, C/b, b,
 * b], a vector of b output channels at a time; passes/winograd.c folds the
 * same arithmetic, in the same order, in C (so both give the same bits).
 *
 * conv2d_winograd: a unit is (image, row of 2x2 output tiles). Its tiles
 * go by groups of at most TW (widths balanced, planned at compile time as
 * conv_blocked.c plans its tiles):
 *   1. each tile's 4x4 input vectors (b channels) -> V = B^T d B, into
 *      V[16][C/b][TW][b] on the task's stack (zeros read where the tile
 *      leaves the input: the padding);
 *   2. per pair of output blocks and element xi of the 16: M[xi] = V[xi]
 *      U[xi], a [tiles x C] by [C x b*RO] product held in RO x TW vector
 *      accumulators (conv_blocked.c's register tile: RO weight vectors and
 *      TW broadcasts per lane), into M[16][RO][TW][b];
 *   3. per tile, Y = A^T M A, the fused group's epilogue (bias, residual,
 *      activation) in registers, and the stores of the outputs that exist
 *      (an odd OH or OW leaves half a tile).
 * V and M of a group (16 C TW + 16 RO TW floats) stay in L1 for C = 32;
 * U is read once per group (passes/winograd.c bounds it to stay in L2).
 * Each output is written by one unit and summed in a fixed order, so the
 * results do not depend on the thread count. */
#include "codegen/codegen.h"

enum { WINO_RO = 2, WINO_TW = 6 };   /* register tile: output blocks x tiles */

typedef struct Wino {
  const Node *n;
  RtDType dt;
  LLVMTypeRef et, vt;        /* element, <b x element> */
  int b;
  int64_t Cb, Ob;            /* input and output channel blocks */
  int64_t H, W, OH, OW;      /* bound at compile time */
  CgEpiPlan *ep;             /* the fused group, or NULL */
  LLVMValueRef zeros;        /* b zeros: what a tile reads outside the input */
  /* per task, at run time */
  LLVMValueRef x, u, out, epi, img, th;
  LLVMValueRef v, m;         /* scratch: V and M (head comment) */
  LLVMValueRef row_ok[4];    /* input row r of the tile row is inside the input */
} Wino;

static LLVMValueRef fadd(CgCtx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(c->b, a, b, ""); }
static LLVMValueRef fsub(CgCtx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(c->b, a, b, ""); }
static LLVMValueRef k64(CgCtx *c, int64_t v) { return cg_i64(c, v); }

static LLVMValueRef vload(CgKernel *k, const Wino *w, LLVMValueRef base, LLVMValueRef at) {
  LLVMValueRef v = LLVMBuildLoad2(k->c->b, w->vt, cg_gep(k, w->dt, base, at), "");
  LLVMSetAlignment(v, rt_dtype_size(w->dt));
  return v;
}

static void vstore(CgKernel *k, const Wino *w, LLVMValueRef v, LLVMValueRef base, LLVMValueRef at) {
  LLVMSetAlignment(LLVMBuildStore(k->c->b, v, cg_gep(k, w->dt, base, at)), rt_dtype_size(w->dt));
}

/* An array of n elements of type t in the function's entry block. */
static LLVMValueRef entry_alloca(CgKernel *k, LLVMTypeRef t, int64_t n, const char *name) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn), here = LLVMGetInsertBlock(c->b);
  LLVMPositionBuilder(c->b, entry, LLVMGetFirstInstruction(entry));
  LLVMValueRef p = LLVMBuildAlloca(c->b, LLVMArrayType(t, (unsigned)n), name);
  LLVMSetAlignment(p, 64);
  LLVMPositionBuilderAtEnd(c->b, here);
  return p;
}

/* ---- the three 1-D transforms, each applied to rows then columns ------------------ */

/* G g of three taps: g0, (g0 + g2 + g1) / 2, (g0 + g2 - g1) / 2, g2 (the
 * order passes/winograd.c's filter_1d follows) */
static void filter_1d(CgCtx *c, LLVMValueRef half, LLVMValueRef *g, int gs, LLVMValueRef *u, int us) {
  LLVMValueRef s = fadd(c, g[0], g[2 * gs]);
  u[0] = g[0];
  u[us] = LLVMBuildFMul(c->b, fadd(c, s, g[gs]), half, "");
  u[2 * us] = LLVMBuildFMul(c->b, fsub(c, s, g[gs]), half, "");
  u[3 * us] = g[2 * gs];
}

/* B^T d of four inputs: d0 - d2, d1 + d2, d2 - d1, d1 - d3 (in place) */
static void input_1d(CgCtx *c, LLVMValueRef *d, int s) {
  LLVMValueRef d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s];
  d[0] = fsub(c, d0, d2);
  d[s] = fadd(c, d1, d2);
  d[2 * s] = fsub(c, d2, d1);
  d[3 * s] = fsub(c, d1, d3);
}

/* A^T m of four products: m0 + m1 + m2, m1 - m2 - m3 */
static void output_1d(CgCtx *c, LLVMValueRef *m, int ms, LLVMValueRef *y, int ys) {
  y[0] = fadd(c, fadd(c, m[0], m[ms]), m[2 * ms]);
  y[ys] = fsub(c, fsub(c, m[ms], m[2 * ms]), m[3 * ms]);
}

/* ---- winograd_filter --------------------------------------------------------------- */

/* Unit u = (ob, cb); per input lane l, the 3x3 taps of b output channels
 * w[ob, cb, i, j, l, 0..b) become U[xi, ob, cb, l, 0..b). */
static void filter_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  Wino *w = user;
  CgCtx *c = k->c;
  LLVMValueRef src = cg_value_ptr(k, k->n->in[0]), dst = cg_value_ptr(k, k->n->out[0]);
  LLVMValueRef half = cg_splat(c, LLVMConstReal(w->et, 0.5), w->b);
  LLVMValueRef units = cg_size(k, sz_mul(k->n->in[0]->type.dim[0], k->n->in[0]->type.dim[1]));
  int64_t bb = (int64_t)w->b * w->b;
  CgLoop U, L;
  LLVMValueRef u = cg_for(k, &U, lo, hi, k64(c, 1));
  LLVMValueRef l = cg_for(k, &L, k64(c, 0), k64(c, w->b), k64(c, 1));
  LLVMValueRef lane = cg_imul(c, l, k64(c, w->b)), g[9], t[12], uu[16];
  for (int ij = 0; ij < 9; ij++)
    g[ij] = vload(k, w, src, cg_iadd(c, cg_imul(c, u, k64(c, 9 * bb)), cg_iadd(c, k64(c, ij * bb), lane)));
  for (int i = 0; i < 3; i++)   /* rows: t = g G^T, [3][4] */
    filter_1d(c, half, &g[3 * i], 1, &t[4 * i], 1);
  for (int v = 0; v < 4; v++)   /* columns: U = G t, [4][4] */
    filter_1d(c, half, &t[v], 4, &uu[v], 4);
  for (int xi = 0; xi < 16; xi++)
    vstore(k, w, uu[xi], dst, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, k64(c, xi), units), u), k64(c, bb)), lane));
  cg_endfor(k, &L);
  cg_endfor(k, &U);
}

static void filter_kernel(CgKernel *k, const char *name, Wino *w) {
  const Type *x = &k->n->in[0]->type;
  LLVMValueRef units = cg_size(k, sz_mul(x->dim[0], x->dim[1]));
  cg_parallel(k, name, units, cg_grain(k, k64(k->c, 9 * 16 * (int64_t)w->b * w->b)), filter_task, w);
}

/* ---- conv2d_winograd --------------------------------------------------------------- */

/* Asks for the two input rows the next tile row reads first, at this
 * tile's first two columns (a line each; consecutive tiles cover the
 * row): at batch 32 each layer's input comes from L3, and the loads of
 * the input transform stalled (bench/NOTES.md: 5% less time with it). */
static void prefetch_next_rows(CgKernel *k, Wino *w, LLVMValueRef plane, LLVMValueRef ih0, LLVMValueRef iw0) {
  CgCtx *c = k->c;
  for (int r = 4; r < 6; r++)
    for (int s = 0; s < 2; s++) {
      LLVMValueRef at = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, plane, cg_iadd(c, ih0, k64(c, r))), k64(c, w->W)),
                                          cg_iadd(c, iw0, k64(c, s))), k64(c, w->b));
      LLVMValueRef args[] = {cg_gep(k, w->dt, w->x, at), LLVMConstInt(c->t_i32, 0, 0), LLVMConstInt(c->t_i32, 3, 0),
                             LLVMConstInt(c->t_i32, 1, 0)};   /* read, keep in all levels, data */
      cg_intrinsic(c, "llvm.prefetch", &c->t_ptr, 1, args, 4);
    }
}

/* 1. V[xi][cb][q] = B^T d B of tile q (from tile t0) of the row, every cb. */
static void input_transform(CgKernel *k, Wino *w, LLVMValueRef t0, int rw) {
  CgCtx *c = k->c;
  const Attr *a = &w->n->attr;
  CgLoop CB, Q;
  LLVMValueRef cb = cg_for(k, &CB, k64(c, 0), k64(c, w->Cb), k64(c, 1));
  LLVMValueRef q = cg_for(k, &Q, k64(c, 0), k64(c, rw), k64(c, 1));
  LLVMValueRef ih0 = cg_isub(c, cg_imul(c, w->th, k64(c, 2)), k64(c, a->pad[0]));
  LLVMValueRef iw0 = cg_isub(c, cg_imul(c, cg_iadd(c, t0, q), k64(c, 2)), k64(c, a->pad[1]));
  LLVMValueRef plane = cg_imul(c, cg_iadd(c, cg_imul(c, w->img, k64(c, w->Cb)), cb), k64(c, w->H));
  LLVMValueRef d[16];
  for (int s = 0; s < 4; s++) {
    LLVMValueRef iw = cg_iadd(c, iw0, k64(c, s));
    LLVMValueRef col_ok = LLVMBuildICmp(c->b, LLVMIntULT, iw, k64(c, w->W), "");
    for (int r = 0; r < 4; r++) {
      LLVMValueRef ih = cg_iadd(c, ih0, k64(c, r));
      LLVMValueRef at = cg_imul(c, cg_iadd(c, cg_imul(c, cg_iadd(c, plane, ih), k64(c, w->W)), iw), k64(c, w->b));
      LLVMValueRef ok = LLVMBuildAnd(c->b, w->row_ok[r], col_ok, "");
      LLVMValueRef p = LLVMBuildSelect(c->b, ok, cg_gep(k, w->dt, w->x, at), w->zeros, "");
      d[4 * r + s] = vload(k, w, p, k64(c, 0));
    }
  }
  prefetch_next_rows(k, w, plane, ih0, iw0);
  for (int r = 0; r < 4; r++)
    input_1d(c, &d[4 * r], 1);
  for (int s = 0; s < 4; s++)
    input_1d(c, &d[s], 4);
  for (int xi = 0; xi < 16; xi++) {
    LLVMValueRef at = cg_iadd(c, cg_imul(c, cg_iadd(c, k64(c, xi * w->Cb), cb), k64(c, WINO_TW)), q);
    vstore(k, w, d[xi], w->v, cg_imul(c, at, k64(c, w->b)));
  }
  cg_endfor(k, &Q);
  cg_endfor(k, &CB);
}

/* 2. M[xi][r][q] = sum over cb, l of V[xi][cb][q][l] U[xi][ob0 + r][cb][l]
 * for r < ro, q < rw: ro x rw accumulators, a weight vector per r and a
 * broadcast per q for each lane. */
static void products(CgKernel *k, Wino *w, LLVMValueRef xi, LLVMValueRef ob0, int ro, int rw) {
  CgCtx *c = k->c;
  int b = w->b;
  LLVMValueRef acc[WINO_RO * WINO_TW];
  for (int t = 0; t < ro * rw; t++) {
    acc[t] = entry_alloca(k, w->vt, 1, "acc");
    LLVMBuildStore(c->b, LLVMConstNull(w->vt), acc[t]);
  }
  CgLoop CB;
  LLVMValueRef cb = cg_for(k, &CB, k64(c, 0), k64(c, w->Cb), k64(c, 1));
  LLVMValueRef vrow = cg_imul(c, cg_iadd(c, cg_imul(c, xi, k64(c, w->Cb)), cb), k64(c, WINO_TW * b));
  LLVMValueRef ubase[WINO_RO];
  for (int r = 0; r < ro; r++) {
    LLVMValueRef blk = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, xi, k64(c, w->Ob)), cg_iadd(c, ob0, k64(c, r))), k64(c, w->Cb)), cb);
    ubase[r] = cg_imul(c, blk, k64(c, (int64_t)b * b));
  }
  for (int l = 0; l < b; l++) {
    LLVMValueRef uv[WINO_RO];
    for (int r = 0; r < ro; r++)
      uv[r] = vload(k, w, w->u, cg_iadd(c, ubase[r], k64(c, (int64_t)l * b)));
    for (int q = 0; q < rw; q++) {
      LLVMValueRef vs = LLVMBuildLoad2(c->b, w->et, cg_gep(k, w->dt, w->v, cg_iadd(c, vrow, k64(c, (int64_t)q * b + l))), "");
      LLVMValueRef vv = cg_splat(c, vs, b);
      for (int r = 0; r < ro; r++) {
        LLVMValueRef args[] = {vv, uv[r], LLVMBuildLoad2(c->b, w->vt, acc[r * rw + q], "")};
        LLVMBuildStore(c->b, cg_intrinsic(c, "llvm.fma", &w->vt, 1, args, 3), acc[r * rw + q]);
      }
    }
  }
  cg_endfor(k, &CB);
  for (int r = 0; r < ro; r++)
    for (int q = 0; q < rw; q++) {
      LLVMValueRef at = cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, xi, k64(c, WINO_RO)), k64(c, r)), k64(c, WINO_TW)), k64(c, q));
      vstore(k, w, LLVMBuildLoad2(c->b, w->vt, acc[r * rw + q], ""), w->m, cg_imul(c, at, k64(c, b)));
    }
}

/* Output (oh, ow) of block ob through the epilogue into its place; skipped
 * past OH or OW when `check` (half a tile at an odd extent). */
static void store_output(CgKernel *k, Wino *w, LLVMValueRef y, LLVMValueRef ob, LLVMValueRef oh,
                         LLVMValueRef ow, bool check) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef done = NULL;
  if (check) {
    LLVMValueRef in = LLVMBuildAnd(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, oh, k64(c, w->OH), ""),
                                   LLVMBuildICmp(c->b, LLVMIntSLT, ow, k64(c, w->OW), ""), "");
    LLVMBasicBlockRef st = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "store");
    done = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "stored");
    LLVMBuildCondBr(c->b, in, st, done);
    LLVMPositionBuilderAtEnd(c->b, st);
  }
  LLVMValueRef pos = cg_iadd(c, cg_imul(c, oh, k64(c, w->OW)), ow);
  if (w->ep)
    y = w->ep->epi.fn(c, w->ep->epi.user, y, NULL, w->epi, w->img, ob, pos);
  LLVMValueRef plane = cg_iadd(c, cg_imul(c, w->img, k64(c, w->Ob)), ob);
  vstore(k, w, y, w->out, cg_imul(c, cg_iadd(c, cg_imul(c, plane, k64(c, w->OH * w->OW)), pos), k64(c, w->b)));
  if (check) {
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, done);
  }
}

/* 3. Y = A^T M A of each tile q of blocks ob0 .. ob0 + ro, stored. */
static void output_transform(CgKernel *k, Wino *w, LLVMValueRef ob0, int ro, LLVMValueRef t0, int rw) {
  CgCtx *c = k->c;
  bool check_h = w->OH % 2, check_w = w->OW % 2;
  for (int r = 0; r < ro; r++) {
    CgLoop Q;
    LLVMValueRef q = cg_for(k, &Q, k64(c, 0), k64(c, rw), k64(c, 1));
    LLVMValueRef m[16], s[8], y[4];
    for (int xi = 0; xi < 16; xi++) {
      LLVMValueRef at = cg_iadd(c, cg_imul(c, k64(c, xi * WINO_RO + r), k64(c, WINO_TW)), q);
      m[xi] = vload(k, w, w->m, cg_imul(c, at, k64(c, w->b)));
    }
    for (int v = 0; v < 4; v++)   /* rows: s = A^T m, [2][4] */
      output_1d(c, &m[v], 4, &s[v], 4);
    for (int i = 0; i < 2; i++)   /* columns: y = s A, [2][2] */
      output_1d(c, &s[4 * i], 1, &y[2 * i], 1);
    LLVMValueRef ob = cg_iadd(c, ob0, k64(c, r)), ow0 = cg_imul(c, cg_iadd(c, t0, q), k64(c, 2));
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++)
        store_output(k, w, y[2 * i + j], ob, cg_iadd(c, cg_imul(c, w->th, k64(c, 2)), k64(c, i)),
                     cg_iadd(c, ow0, k64(c, j)), (check_h && i) || (check_w && j));
    cg_endfor(k, &Q);
  }
}

/* Steps 2 and 3 for output blocks ob0 .. ob0 + ro of the group at t0. */
static void output_blocks(CgKernel *k, Wino *w, LLVMValueRef ob0, int ro, LLVMValueRef t0, int rw) {
  CgCtx *c = k->c;
  CgLoop X;
  LLVMValueRef xi = cg_for(k, &X, k64(c, 0), k64(c, 16), k64(c, 1));
  products(k, w, xi, ob0, ro, rw);
  cg_endfor(k, &X);
  output_transform(k, w, ob0, ro, t0, rw);
}

/* A group of rw tiles from t0: its input once, then the output blocks by
 * pairs (an odd last one alone). */
static void tile_group(CgKernel *k, Wino *w, LLVMValueRef t0, int rw) {
  CgCtx *c = k->c;
  int64_t pairs = w->Ob / WINO_RO * WINO_RO;
  input_transform(k, w, t0, rw);
  if (pairs > 0) {
    CgLoop P;
    LLVMValueRef ob0 = cg_for(k, &P, k64(c, 0), k64(c, pairs), k64(c, WINO_RO));
    output_blocks(k, w, ob0, WINO_RO, t0, rw);
    cg_endfor(k, &P);
  }
  if (w->Ob > pairs)
    output_blocks(k, w, k64(c, pairs), (int)(w->Ob - pairs), t0, rw);
}

/* Unit u = (image, tile row): the row's ceil(OW / 2) tiles in groups of
 * balanced widths, the wider first: a loop per width. */
static void conv_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  Wino *w = user;
  CgCtx *c = k->c;
  const Node *n = w->n;
  w->x = cg_value_ptr(k, n->in[0]);
  w->u = cg_value_ptr(k, n->in[1]);
  w->out = cg_value_ptr(k, w->ep ? w->ep->c : n->out[0]);
  w->epi = w->ep ? cg_epi_args(k, w->ep, NULL) : NULL;
  w->v = entry_alloca(k, w->et, 16 * w->Cb * WINO_TW * w->b, "wino.v");
  w->m = entry_alloca(k, w->et, 16 * WINO_RO * WINO_TW * w->b, "wino.m");
  int64_t rows = (w->OH + 1) / 2, tiles = (w->OW + 1) / 2, groups = (tiles + WINO_TW - 1) / WINO_TW;
  int64_t narrow = tiles / groups, wide = tiles % groups;
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, k64(c, 1));
  w->img = LLVMBuildSDiv(c->b, u, k64(c, rows), "");
  w->th = LLVMBuildSRem(c->b, u, k64(c, rows), "");
  for (int r = 0; r < 4; r++) {
    LLVMValueRef ih = cg_iadd(c, cg_isub(c, cg_imul(c, w->th, k64(c, 2)), k64(c, n->attr.pad[0])), k64(c, r));
    w->row_ok[r] = LLVMBuildICmp(c->b, LLVMIntULT, ih, k64(c, w->H), "");
  }
  int64_t runs[2][2] = {{wide, narrow + 1}, {groups - wide, narrow}};   /* groups, width */
  for (int i = 0, t0 = 0; i < 2; t0 += (int)(runs[i][0] * runs[i][1]), i++) {
    if (runs[i][0] == 0 || runs[i][1] == 0)
      continue;
    CgLoop G;
    LLVMValueRef at = cg_for(k, &G, k64(c, t0), k64(c, t0 + runs[i][0] * runs[i][1]), k64(c, runs[i][1]));
    tile_group(k, w, at, (int)runs[i][1]);
    cg_endfor(k, &G);
  }
  cg_endfor(k, &U);
}

static void conv_kernel(CgKernel *k, const char *name, Wino *w) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *x = &n->in[0]->type, *y = &n->out[0]->type;
  sz_is_const(n->in[1]->type.dim[1], &w->Ob);
  sz_is_const(x->dim[1], &w->Cb);
  /* spatial extents never hold the batch: bound by now (as conv_blocked.c) */
  sz_eval(x->dim[2], k->g->svals, &w->H);
  sz_eval(x->dim[3], k->g->svals, &w->W);
  sz_eval(y->dim[2], k->g->svals, &w->OH);
  sz_eval(y->dim[3], k->g->svals, &w->OW);
  LLVMTypeRef zt = LLVMArrayType(w->et, (unsigned)w->b);
  w->zeros = LLVMAddGlobal(c->mod, zt, "wino.zeros");
  LLVMSetInitializer(w->zeros, LLVMConstNull(zt));
  LLVMSetGlobalConstant(w->zeros, 1);
  LLVMSetLinkage(w->zeros, LLVMPrivateLinkage);
  CgEpiPlan ep;
  if (cg_epi_plan_lanes(k, 1, 2, &ep))
    w->ep = &ep;
  LLVMValueRef units = cg_imul(c, cg_size(k, y->dim[0]), k64(c, (w->OH + 1) / 2));
  int64_t cost = (w->OW + 1) / 2 * 16 * w->Cb * w->Ob * w->b * w->b;
  if (w->OH > 0 && w->OW > 0)
    cg_parallel(k, name, units, cg_grain(k, k64(c, cost)), conv_task, w);
  if (w->ep)
    cg_epi_free(&ep);
}

void cg_winograd_kernel(CgKernel *k, const char *name) {
  Wino w = {.n = k->n, .dt = k->n->out[0]->type.dt};
  int64_t b = 0;
  sz_is_const(k->n->out[0]->type.dim[4], &b);   /* the lanes: either output's last dim */
  w.b = (int)b;
  w.et = cg_elem_type(k->c, w.dt);
  w.vt = LLVMVectorType(w.et, (unsigned)b);
  if (k->n->op == OP_winograd_filter)
    filter_kernel(k, name, &w);
  else
    conv_kernel(k, name, &w);
}

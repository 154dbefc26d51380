/* Templates of the backward ops, and dropout's random mask.
 *
 * conv2d's gradients are with its forward, in kernels.c. Pooling gradients run a unit per (image, channel)
 * plane: it zeroes its plane of dx, then adds each output's gradient to the
 * window's first maximum (maxpool, as PyTorch: a NaN wins) or spreads it
 * over the window with the forward's divisor (avgpool). No two units write
 * one address and each sums in a fixed order, so the results are the same
 * at any thread count.
 *
 * Dropout keeps element i when word i mod 4 of Philox4x32-10 at counter
 * (i / 4, stream, step), key seed, is at least p * 2^32: the bits of
 * rt_random_u32(seed, stream | step << 32, i) (runtime/philox.c), so a mask
 * depends on nothing but those four numbers. Philox runs inline on vectors
 * of w blocks, whose 4w words are shuffled into element order: one Philox
 * per 4 elements, none wasted. */
#include "codegen/codegen.h"
#include <math.h>

static LLVMValueRef slt(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(c->b, LLVMIntSLT, a, b, "");
}

/* 0 <= i < n, one unsigned compare. */
static LLVMValueRef inside(CgCtx *c, LLVMValueRef i, LLVMValueRef n) {
  return LLVMBuildICmp(c->b, LLVMIntULT, i, n, "");
}

static LLVMValueRef load(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef i) {
  return LLVMBuildLoad2(k->c->b, cg_elem_type(k->c, dt), cg_gep(k, dt, base, i), "");
}

/* ---- pooling ------------------------------------------------------------ */

typedef struct PoolWin {
  LLVMValueRef ih0, iw0;     /* the window's top left corner in x, padding included */
  LLVMValueRef H, W;
} PoolWin;

/* Tap (i, j) of a window: in-bounds flag and plane-relative address (0 when out). */
static LLVMValueRef tap(CgKernel *k, const PoolWin *p, LLVMValueRef i, LLVMValueRef j,
                        LLVMValueRef *ok) {
  CgCtx *c = k->c;
  const Attr *a = &k->n->attr;
  LLVMValueRef ih = cg_iadd(c, p->ih0, cg_imul(c, i, cg_i64(c, a->dil[0])));
  LLVMValueRef iw = cg_iadd(c, p->iw0, cg_imul(c, j, cg_i64(c, a->dil[1])));
  *ok = LLVMBuildAnd(c->b, inside(c, ih, p->H), inside(c, iw, p->W), "");
  return LLVMBuildSelect(c->b, *ok, cg_iadd(c, cg_imul(c, ih, p->W), iw), cg_i64(c, 0), "");
}

/* The first maximum of the window (a NaN wins, as PyTorch), -1 if the window
 * has no element inside x; gy goes there. */
static void maxpool_window(CgKernel *k, const PoolWin *p, LLVMValueRef x, LLVMValueRef dx,
                           LLVMValueRef gy, LLVMValueRef bestp, LLVMValueRef idxp) {
  CgCtx *c = k->c;
  const Attr *a = &k->n->attr;
  RtDType dt = k->n->in[0]->type.dt;
  LLVMTypeRef et = cg_elem_type(c, dt);
  LLVMBuildStore(c->b, LLVMConstReal(et, -INFINITY), bestp);
  LLVMBuildStore(c->b, cg_i64(c, -1), idxp);
  CgLoop I, J;
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  LLVMValueRef ok, at = tap(k, p, i, j, &ok);
  LLVMValueRef v = load(k, dt, x, at), best = LLVMBuildLoad2(c->b, et, bestp, "");
  LLVMValueRef idx = LLVMBuildLoad2(c->b, c->t_i64, idxp, "");
  LLVMValueRef better = LLVMBuildOr(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, best, ""),
                                    LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, ""), "");
  better = LLVMBuildOr(c->b, better, slt(c, idx, cg_i64(c, 0)), "");
  LLVMValueRef take = LLVMBuildAnd(c->b, ok, better, "");
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, take, v, best, ""), bestp);
  LLVMBuildStore(c->b, LLVMBuildSelect(c->b, take, at, idx, ""), idxp);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  LLVMValueRef at_max = LLVMBuildLoad2(c->b, c->t_i64, idxp, "");
  LLVMValueRef found = LLVMBuildICmp(c->b, LLVMIntSGE, at_max, cg_i64(c, 0), "");
  cg_add_to(k, dt, dx, LLVMBuildSelect(c->b, found, at_max, cg_i64(c, 0), ""),
         LLVMBuildSelect(c->b, found, gy, LLVMConstNull(et), ""));
}

/* The forward's divisor: the window clipped to the padded input
 * (count_include_pad) or the count of its elements inside x. */
static LLVMValueRef avg_divisor(CgKernel *k, const PoolWin *p, LLVMValueRef cntp) {
  CgCtx *c = k->c;
  const Attr *a = &k->n->attr;
  if (a->count_include_pad) {
    LLVMValueRef hend = cg_imin(c, cg_iadd(c, p->ih0, cg_i64(c, a->k[0])), cg_iadd(c, p->H, cg_i64(c, a->pad[2])));
    LLVMValueRef wend = cg_imin(c, cg_iadd(c, p->iw0, cg_i64(c, a->k[1])), cg_iadd(c, p->W, cg_i64(c, a->pad[3])));
    return cg_imul(c, cg_isub(c, hend, p->ih0), cg_isub(c, wend, p->iw0));
  }
  LLVMBuildStore(c->b, cg_i64(c, 0), cntp);
  CgLoop I, J;
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  LLVMValueRef ok;
  tap(k, p, i, j, &ok);
  LLVMValueRef n = LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
  LLVMBuildStore(c->b, cg_iadd(c, n, LLVMBuildZExt(c->b, ok, c->t_i64, "")), cntp);
  cg_endfor(k, &J);
  cg_endfor(k, &I);
  return LLVMBuildLoad2(c->b, c->t_i64, cntp, "");
}

/* gy / divisor into every element of the window inside x. */
static void avgpool_window(CgKernel *k, const PoolWin *p, LLVMValueRef dx, LLVMValueRef gy,
                           LLVMValueRef cntp) {
  CgCtx *c = k->c;
  const Attr *a = &k->n->attr;
  RtDType dt = k->n->in[0]->type.dt;
  LLVMTypeRef et = cg_elem_type(c, dt);
  LLVMValueRef div = LLVMBuildSIToFP(c->b, avg_divisor(k, p, cntp), et, "");
  LLVMValueRef q = LLVMBuildFDiv(c->b, gy, div, "");
  CgLoop I, J;
  LLVMValueRef i = cg_for(k, &I, cg_i64(c, 0), cg_i64(c, a->k[0]), cg_i64(c, 1));
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_i64(c, a->k[1]), cg_i64(c, 1));
  LLVMValueRef ok, at = tap(k, p, i, j, &ok);
  cg_add_to(k, dt, dx, at, LLVMBuildSelect(c->b, ok, q, LLVMConstNull(et), ""));
  cg_endfor(k, &J);
  cg_endfor(k, &I);
}

/* Unit u = plane (image, channel) of dx: zero it, then every output of the
 * plane in order adds its gradient to its window. */
static void pool_bwd_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Attr *a = &n->attr;
  const Type *x = &n->out[0]->type, *y = &n->in[0]->type;
  RtDType dt = x->dt;
  bool is_max = n->op == OP_maxpool2d_bwd;
  LLVMValueRef dy = cg_value_ptr(k, n->in[0]), dx = cg_value_ptr(k, n->out[0]);
  LLVMValueRef xin = is_max ? cg_value_ptr(k, n->in[1]) : NULL;
  LLVMValueRef bestp = LLVMBuildAlloca(c->b, cg_elem_type(c, dt), "");
  LLVMValueRef idxp = LLVMBuildAlloca(c->b, c->t_i64, "");
  PoolWin p = {.H = cg_size(k, x->dim[2]), .W = cg_size(k, x->dim[3])};
  LLVMValueRef OH = cg_size(k, y->dim[2]), OW = cg_size(k, y->dim[3]), HW = cg_imul(c, p.H, p.W);
  CgLoop U, R, Q;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef plane = cg_imul(c, u, HW);
  cg_zero(k, dt, dx, plane, HW);
  LLVMValueRef dxp = cg_gep(k, dt, dx, plane), xp = is_max ? cg_gep(k, dt, xin, plane) : NULL;
  LLVMValueRef oh = cg_for(k, &R, cg_i64(c, 0), OH, cg_i64(c, 1));
  p.ih0 = cg_isub(c, cg_imul(c, oh, cg_i64(c, a->stride[0])), cg_i64(c, a->pad[0]));
  LLVMValueRef ow = cg_for(k, &Q, cg_i64(c, 0), OW, cg_i64(c, 1));
  p.iw0 = cg_isub(c, cg_imul(c, ow, cg_i64(c, a->stride[1])), cg_i64(c, a->pad[1]));
  LLVMValueRef gy = load(k, dt, dy, cg_iadd(c, cg_imul(c, cg_iadd(c, cg_imul(c, u, OH), oh), OW), ow));
  if (is_max)
    maxpool_window(k, &p, xp, dxp, gy, bestp, idxp);
  else
    avgpool_window(k, &p, dxp, gy, idxp);
  cg_endfor(k, &Q);
  cg_endfor(k, &R);
  cg_endfor(k, &U);
}

void cg_pool_bwd_kernel(CgKernel *k, const char *name) {
  const Type *x = &k->n->out[0]->type, *y = &k->n->in[0]->type;
  LLVMValueRef planes = cg_size(k, sz_mul(x->dim[0], x->dim[1]));
  int64_t win = (int64_t)k->n->attr.k[0] * k->n->attr.k[1];
  Size cost = sz_add(sz_mul(sz_mul(y->dim[2], y->dim[3]), sz_const(win)),
                     sz_mul(x->dim[2], x->dim[3]));
  cg_parallel(k, name, planes, cg_grain(k, cg_size(k, cost)), pool_bwd_task, NULL);
}

/* ---- dropout: Philox4x32-10 inline ---------------------------------------- */

enum {
  PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u,   /* as runtime/philox.c */
  PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u,
};

/* A constant of x's type (i32 or <w x i32>, or the i64 forms). */
static LLVMValueRef like(CgCtx *c, LLVMValueRef x, uint64_t v) {
  LLVMTypeRef t = LLVMTypeOf(x);
  bool vec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMValueRef s = LLVMConstInt(vec ? LLVMGetElementType(t) : t, v, 0);
  return vec ? cg_splat(c, s, LLVMGetVectorSize(t)) : s;
}

/* hi and lo words of the product of x (below 2^32, in 64-bit lanes) and m. */
static void mulhilo(CgCtx *c, LLVMValueRef x, uint32_t m, LLVMValueRef *hi, LLVMValueRef *lo) {
  LLVMValueRef p = LLVMBuildNUWMul(c->b, x, like(c, x, m), "");
  *lo = LLVMBuildAnd(c->b, p, like(c, x, UINT32_MAX), "");
  *hi = LLVMBuildLShr(c->b, p, like(c, x, 32), "");
}

/* The words live in 64-bit lanes (upper halves zero) so that each multiply
 * is one 32x32->64 instruction (vpmuludq on x86) with no repacking. */
void cg_philox4x32(CgCtx *c, LLVMValueRef ctr[4], LLVMValueRef key[2], LLVMValueRef out[4]) {
  LLVMTypeRef t32 = LLVMTypeOf(ctr[0]);
  bool vec = LLVMGetTypeKind(t32) == LLVMVectorTypeKind;
  LLVMTypeRef t64 = vec ? LLVMVectorType(c->t_i64, LLVMGetVectorSize(t32)) : c->t_i64;
  LLVMValueRef x[4], k0 = LLVMBuildZExt(c->b, key[0], t64, ""), k1 = LLVMBuildZExt(c->b, key[1], t64, "");
  for (int i = 0; i < 4; i++)
    x[i] = LLVMBuildZExt(c->b, ctr[i], t64, "");
  for (int r = 0; r < 10; r++) {
    if (r > 0) {                      /* key bumps mod 2^32 */
      k0 = LLVMBuildAnd(c->b, LLVMBuildAdd(c->b, k0, like(c, k0, PHILOX_W0), ""), like(c, k0, UINT32_MAX), "");
      k1 = LLVMBuildAnd(c->b, LLVMBuildAdd(c->b, k1, like(c, k1, PHILOX_W1), ""), like(c, k1, UINT32_MAX), "");
    }
    LLVMValueRef hi0, lo0, hi1, lo1;
    mulhilo(c, x[0], PHILOX_M0, &hi0, &lo0);
    mulhilo(c, x[2], PHILOX_M1, &hi1, &lo1);
    x[0] = LLVMBuildXor(c->b, LLVMBuildXor(c->b, hi1, x[1], ""), k0, "");
    x[2] = LLVMBuildXor(c->b, LLVMBuildXor(c->b, hi0, x[3], ""), k1, "");
    x[1] = lo1;
    x[3] = lo0;
  }
  for (int i = 0; i < 4; i++)
    out[i] = LLVMBuildTrunc(c->b, x[i], t32, "");
}

/* Philox at blocks blk (i64, scalar or vector) of n's stream: counter
 * (blk, stream, step), key the graph's seed. */
static void dropout_words(CgKernel *k, LLVMValueRef blk, LLVMValueRef step, LLVMValueRef w[4]) {
  CgCtx *c = k->c;
  LLVMTypeRef ti = LLVMTypeOf(blk);
  bool vec = LLVMGetTypeKind(ti) == LLVMVectorTypeKind;
  LLVMTypeRef t32 = vec ? LLVMVectorType(c->t_i32, LLVMGetVectorSize(ti)) : c->t_i32;
  uint64_t seed = k->g->seed;
  LLVMValueRef ctr[4] = {
      LLVMBuildTrunc(c->b, blk, t32, ""),
      LLVMBuildTrunc(c->b, LLVMBuildLShr(c->b, blk, like(c, blk, 32), ""), t32, ""),
      LLVMBuildTrunc(c->b, like(c, blk, k->n->attr.stream), t32, ""),
      vec ? cg_splat(c, step, LLVMGetVectorSize(ti)) : step};
  LLVMValueRef key[2] = {LLVMBuildTrunc(c->b, like(c, blk, (uint32_t)seed), t32, ""),
                         LLVMBuildTrunc(c->b, like(c, blk, seed >> 32), t32, "")};
  cg_philox4x32(c, ctr, key, w);
}

/* x * 1/(1-p) where the word is at least p * 2^32, else x * 0 (as PyTorch
 * multiplies by the mask: NaN stays NaN). */
static LLVMValueRef dropout_apply(CgCtx *c, const Node *n, LLVMValueRef x, LLVMValueRef bits) {
  double p = n->attr.alpha;
  uint64_t threshold = (uint64_t)ceil(p * 4294967296.0);
  LLVMTypeRef t = LLVMTypeOf(x);
  bool vec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMValueRef keep = threshold > UINT32_MAX   /* p within 2^-32 of 1: nothing is kept */
                          ? LLVMConstNull(vec ? LLVMVectorType(c->t_i1, LLVMGetVectorSize(t)) : c->t_i1)
                          : LLVMBuildICmp(c->b, LLVMIntUGE, bits, like(c, bits, threshold), "");
  LLVMTypeRef et = vec ? LLVMGetElementType(t) : t;
  LLVMValueRef scale = LLVMConstReal(et, 1.0 / (1.0 - p)), none = LLVMConstReal(et, 0);
  if (vec) {
    scale = cg_splat(c, scale, LLVMGetVectorSize(t));
    none = cg_splat(c, none, LLVMGetVectorSize(t));
  }
  return LLVMBuildFMul(c->b, x, LLVMBuildSelect(c->b, keep, scale, none, ""), "");
}

/* Elements 4*b .. 4*b + 4w - 1 from blocks b .. b + w - 1 on w lanes: the
 * words w0..w3 of the lanes, shuffled into element order (element o takes
 * word o % 4 of lane o / 4), scale w-element vectors of x. */
static void dropout_vector(CgKernel *k, LLVMValueRef x, LLVMValueRef y, LLVMValueRef b,
                           LLVMValueRef step, int w) {
  CgCtx *c = k->c;
  RtDType dt = k->n->out[0]->type.dt;
  LLVMValueRef lanes[64], words[4];
  for (int l = 0; l < 4 * w; l++)
    lanes[l] = LLVMConstInt(c->t_i32, l, 0);
  LLVMValueRef iota[16];
  for (int l = 0; l < w; l++)
    iota[l] = cg_i64(c, l);
  LLVMValueRef blk = LLVMBuildAdd(c->b, cg_splat(c, b, w), LLVMConstVector(iota, w), "");
  dropout_words(k, blk, step, words);
  LLVMValueRef lo = LLVMBuildShuffleVector(c->b, words[0], words[1], LLVMConstVector(lanes, 2 * w), "");
  LLVMValueRef hi = LLVMBuildShuffleVector(c->b, words[2], words[3], LLVMConstVector(lanes, 2 * w), "");
  LLVMValueRef all = LLVMBuildShuffleVector(c->b, lo, hi, LLVMConstVector(lanes, 4 * w), "");
  LLVMTypeRef vt = LLVMVectorType(cg_elem_type(c, dt), w);
  for (int e = 0; e < 4; e++) {
    LLVMValueRef pick[16];
    for (int m = 0; m < w; m++) {
      int o = e * w + m;
      pick[m] = lanes[(o % 4) * w + o / 4];
    }
    LLVMValueRef bits = LLVMBuildShuffleVector(c->b, all, LLVMGetUndef(LLVMTypeOf(all)),
                                               LLVMConstVector(pick, w), "");
    LLVMValueRef at = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, b, cg_i64(c, 4), ""), cg_i64(c, e * w), "");
    LLVMValueRef v = LLVMBuildLoad2(c->b, vt, cg_gep(k, dt, x, at), "");
    LLVMSetAlignment(v, rt_dtype_size(dt));
    LLVMValueRef st = LLVMBuildStore(c->b, dropout_apply(c, k->n, v, bits), cg_gep(k, dt, y, at));
    LLVMSetAlignment(st, rt_dtype_size(dt));
  }
}

/* Element i alone: its own block i / 4, word i % 4. */
static void dropout_scalar(CgKernel *k, LLVMValueRef x, LLVMValueRef y, LLVMValueRef i,
                           LLVMValueRef step) {
  CgCtx *c = k->c;
  RtDType dt = k->n->out[0]->type.dt;
  LLVMValueRef words[4];
  dropout_words(k, LLVMBuildLShr(c->b, i, cg_i64(c, 2), ""), step, words);
  LLVMValueRef word = LLVMBuildAnd(c->b, i, cg_i64(c, 3), ""), bits = words[3];
  for (int j = 2; j >= 0; j--)
    bits = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, word, cg_i64(c, j), ""), words[j],
                           bits, "");
  LLVMValueRef v = LLVMBuildLoad2(c->b, cg_elem_type(c, dt), cg_gep(k, dt, x, i), "");
  LLVMBuildStore(c->b, dropout_apply(c, k->n, v, bits), cg_gep(k, dt, y, i));
}

static Size elements(const Type *t) {
  Size n = sz_const(1);
  for (int i = 0; i < t->rank; i++)
    n = sz_mul(n, t->dim[i]);
  return n;
}

/* Units are Philox blocks (4 elements): w of them at a time while whole,
 * then the chunk's rest element by element. */
static void dropout_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Type *t = &n->out[0]->type;
  int w = cg_lanes(c, rt_dtype_size(t->dt));
  LLVMValueRef x = cg_value_ptr(k, n->in[0]), y = cg_value_ptr(k, n->out[0]);
  LLVMValueRef ne = cg_size(k, elements(t)), ctr = cg_value_ptr(k, n->in[1]);
  LLVMValueRef step = LLVMBuildLoad2(c->b, cg_elem_type(c, n->in[1]->type.dt), ctr, "");
  step = LLVMBuildIntCast2(c->b, step, c->t_i32, 0, "");
  LLVMValueRef whole = cg_imin(c, hi, LLVMBuildSDiv(c->b, ne, cg_i64(c, 4), ""));
  LLVMValueRef vend = cg_isub(c, whole, cg_i64(c, w - 1));
  CgLoop V, T;
  LLVMValueRef b = cg_for(k, &V, lo, vend, cg_i64(c, w));
  dropout_vector(k, x, y, b, step, w);
  cg_endfor(k, &V);
  /* the blocks the vectors did: lo + w * ceil(max(vend - lo, 0) / w) */
  LLVMValueRef span = cg_isub(c, LLVMBuildSelect(c->b, slt(c, lo, vend), vend, lo, ""), lo);
  LLVMValueRef iters = LLVMBuildSDiv(c->b, cg_iadd(c, span, cg_i64(c, w - 1)), cg_i64(c, w), "");
  LLVMValueRef done = cg_iadd(c, lo, cg_imul(c, iters, cg_i64(c, w)));
  LLVMValueRef i = cg_for(k, &T, cg_imul(c, done, cg_i64(c, 4)), cg_imin(c, cg_imul(c, hi, cg_i64(c, 4)), ne),
                          cg_i64(c, 1));
  dropout_scalar(k, x, y, i, step);
  cg_endfor(k, &T);
}

void cg_dropout_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  LLVMValueRef ne = cg_size(k, elements(&k->n->out[0]->type));
  LLVMValueRef blocks = LLVMBuildSDiv(c->b, cg_iadd(c, ne, cg_i64(c, 3)), cg_i64(c, 4), "");
  cg_parallel(k, name, blocks, cg_grain(k, cg_i64(c, 64)), dropout_task, NULL);
}

/* relayout's fast path (ops.def; the general copy is relayout_task in
 * conv_blocked.c). When the channels fill whole blocks of b lanes and the
 * spatial extent S is a multiple of b, a unit (image, channel block) moves
 * b x b squares: b vector loads (b positions of one channel, or one
 * position of b channels), a transpose in registers, b vector stores. The
 * transpose takes log2(b) rounds of two-vector shuffles (an 8x8 one is
 * the unpack/shuffle/permute sequence of AVX2) where the general copy
 * moves one float at a time; it is its own inverse, so both directions
 * are the same code with the addresses swapped. A training step converts
 * each blocked convolution's input and output, forward and backward: this
 * is where those copies run. */
#include "codegen/codegen.h"

enum { MAX_LANES = 16 };

typedef struct Squares {
  const Value *flat, *blk;   /* [N, C, S...] and [N, C/b, S..., b] */
  bool to_blocked;
  int64_t C, b, S;
} Squares;


/* r[i][j] becomes r[j][i]: in the round of distance d, rows i and i + d
 * (i without bit d) swap their off-diagonal d x d blocks. */
static void transpose(CgCtx *c, LLVMValueRef *r, int b) {
  for (int d = b / 2; d >= 1; d /= 2)
    for (int i = 0; i < b; i++) {
      if (i & d)
        continue;
      LLVMValueRef ml[MAX_LANES], mh[MAX_LANES];
      for (int p = 0; p < b; p++) {
        ml[p] = LLVMConstInt(c->t_i32, (uint64_t)((p & d) ? b + p - d : p), 0);
        mh[p] = LLVMConstInt(c->t_i32, (uint64_t)((p & d) ? b + p : p + d), 0);
      }
      LLVMValueRef lo = r[i], hi = r[i | d];
      r[i] = LLVMBuildShuffleVector(c->b, lo, hi, LLVMConstVector(ml, (unsigned)b), "");
      r[i | d] = LLVMBuildShuffleVector(c->b, lo, hi, LLVMConstVector(mh, (unsigned)b), "");
    }
}

/* Unit u = (image, channel block): square at position p reads channel l at
 * flat[(image * C + block * b + l) * S + p ..] and position p + l at
 * blk[(u * S + p + l) * b ..]. */
static void squares_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const Squares *q = user;
  CgCtx *c = k->c;
  RtDType dt = q->flat->type.dt;
  int b = (int)q->b;
  LLVMTypeRef vt = LLVMVectorType(cg_elem_type(c, dt), (unsigned)b);
  LLVMValueRef flat = cg_value_ptr(k, q->flat), blk = cg_value_ptr(k, q->blk);
  LLVMValueRef cb_n = cg_i64(c, q->C / b), S = cg_i64(c, q->S);
  CgLoop U, P;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef img = LLVMBuildSDiv(c->b, u, cb_n, ""), cb = LLVMBuildSRem(c->b, u, cb_n, "");
  LLVMValueRef fbase = cg_imul(c, cg_iadd(c, cg_imul(c, img, cg_i64(c, q->C)), cg_imul(c, cb, cg_i64(c, b))), S);
  LLVMValueRef bbase = cg_imul(c, u, S);
  LLVMValueRef p = cg_for(k, &P, cg_i64(c, 0), S, cg_i64(c, b));
  LLVMValueRef fat[MAX_LANES], bat[MAX_LANES], r[MAX_LANES];
  for (int l = 0; l < b; l++) {
    fat[l] = cg_iadd(c, cg_iadd(c, fbase, cg_imul(c, cg_i64(c, l), S)), p);
    bat[l] = cg_imul(c, cg_iadd(c, cg_iadd(c, bbase, p), cg_i64(c, l)), cg_i64(c, b));
    r[l] = LLVMBuildLoad2(c->b, vt, cg_gep(k, dt, q->to_blocked ? flat : blk,
                                          q->to_blocked ? fat[l] : bat[l]), "");
    LLVMSetAlignment(r[l], rt_dtype_size(dt));
  }
  transpose(c, r, b);
  for (int l = 0; l < b; l++) {
    LLVMValueRef at = cg_gep(k, dt, q->to_blocked ? blk : flat, q->to_blocked ? bat[l] : fat[l]);
    LLVMSetAlignment(LLVMBuildStore(c->b, r[l], at), rt_dtype_size(dt));
  }
  cg_endfor(k, &P);
  cg_endfor(k, &U);
}

bool cg_relayout_squares(CgKernel *k, const char *name) {
  const Node *n = k->n;
  const Value *x = n->in[0], *y = n->out[0];
  Squares q = {.to_blocked = y->type.rank > x->type.rank, .S = 1};
  q.flat = q.to_blocked ? x : y;
  q.blk = q.to_blocked ? y : x;
  int64_t d;
  for (int i = 2; i < q.flat->type.rank; i++)
    if (sz_is_const(q.flat->type.dim[i], &d))
      q.S *= d;
    else
      return false;
  if (!sz_is_const(q.flat->type.dim[1], &q.C) ||
      !sz_is_const(q.blk->type.dim[q.blk->type.rank - 1], &q.b) || q.b < 2 || q.b > MAX_LANES ||
      (q.b & (q.b - 1)) || q.C % q.b || q.S % q.b)
    return false;
  LLVMValueRef units = cg_size(k, sz_mul(q.blk->type.dim[0], sz_const(q.C / q.b)));
  cg_parallel(k, name, units, cg_grain(k, cg_i64(k->c, q.S * q.b)), squares_task, &q);
  return true;
}

/* Data movement by box copies: slice, unslice (constant padding and
 * slice's gradient) and concat. Each is one or more copies of a box of
 * elements from one tensor to another, where both sides walk the box with
 * strides of their own (any sign) from a base offset:
 *
 *   dst[dbase + sum_a i_a * dst_st[a]] = src[sbase + sum_a i_a * src_st[a]]
 *
 * slice: the box is the output, read from x at start + i * step; unslice:
 * the output is filled with the constant first, then the box (the input)
 * is written at start + i * step; concat: one box per input, written at
 * its offset along the axis. Rows of the box run in parallel chunks, the
 * innermost axis in a scalar loop (strides are run-time sizes: LLVM may
 * still vectorise a unit-stride row). */
#include "codegen/codegen.h"
#include <string.h>

typedef struct Box {
  int rank;
  Size dim[IR_MAX_RANK];
  RtDType dt;
  const Value *src, *dst;    /* src NULL: fill dst with `fill` */
  double fill;
  Size sbase, dbase;
  Size sst[IR_MAX_RANK], dst_st[IR_MAX_RANK];   /* strides of the source, of the destination */
} Box;

static void dense_strides(const Type *t, Size *st) {
  Size s = sz_const(1);
  for (int i = t->rank - 1; i >= 0; i--) {
    st[i] = s;
    s = sz_mul(s, t->dim[i]);
  }
}

/* A box over all of t, densely strided on both sides, bases 0. */
static Box box_of(const Type *t, const Value *src, const Value *dst) {
  Box b = {.rank = t->rank, .dt = t->dt, .src = src, .dst = dst,
           .sbase = sz_const(0), .dbase = sz_const(0)};
  memcpy(b.dim, t->dim, sizeof(Size) * (size_t)t->rank);
  dense_strides(t, b.sst);
  dense_strides(t, b.dst_st);
  if (b.rank == 0) {          /* a scalar: one element */
    b.rank = 1;
    b.dim[0] = sz_const(1);
    b.sst[0] = b.dst_st[0] = sz_const(1);
  }
  return b;
}

/* The side with strides st walks t at start + i * step on each axis. */
static void walk(const Type *t, const Attr *a, Size *base, Size *st) {
  Size dense[IR_MAX_RANK];
  dense_strides(t, dense);
  *base = sz_const(0);
  for (int i = 0; i < t->rank; i++) {
    *base = sz_add(*base, sz_mul(dense[i], sz_const(a->start[i])));
    st[i] = sz_mul(dense[i], sz_const(a->step[i]));
  }
}

static LLVMValueRef offset(CgKernel *k, Size base, const Size *st, const LLVMValueRef *idx, int n) {
  LLVMValueRef off = cg_size(k, base);
  for (int i = 0; i < n; i++)
    off = LLVMBuildAdd(k->c->b, off, LLVMBuildMul(k->c->b, idx[i], cg_size(k, st[i]), ""), "");
  return off;
}

/* Rows lo .. hi of the box (every axis but the last), each a scalar loop. */
static void box_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  const Box *b = user;
  CgCtx *c = k->c;
  LLVMTypeRef et = cg_elem_type(c, b->dt);
  LLVMValueRef dptr = cg_value_ptr(k, b->dst), sptr = b->src ? cg_value_ptr(k, b->src) : NULL;
  CgLoop U, J;
  LLVMValueRef row = cg_for(k, &U, lo, hi, cg_i64(c, 1)), idx[IR_MAX_RANK];
  for (int i = b->rank - 2; i >= 0; i--) {
    LLVMValueRef d = cg_size(k, b->dim[i]);
    idx[i] = i ? LLVMBuildSRem(c->b, row, d, "") : row;
    row = i ? LLVMBuildSDiv(c->b, row, d, "") : row;
  }
  int last = b->rank - 1;
  LLVMValueRef doff = offset(k, b->dbase, b->dst_st, idx, last);
  LLVMValueRef soff = b->src ? offset(k, b->sbase, b->sst, idx, last) : NULL;
  LLVMValueRef j = cg_for(k, &J, cg_i64(c, 0), cg_size(k, b->dim[last]), cg_i64(c, 1));
  LLVMValueRef v;
  if (b->src) {
    LLVMValueRef s = LLVMBuildAdd(c->b, soff, LLVMBuildMul(c->b, j, cg_size(k, b->sst[last]), ""), "");
    v = LLVMBuildLoad2(c->b, et, cg_gep(k, b->dt, sptr, s), "");
  } else {
    v = ir_is_float(b->dt) ? LLVMConstReal(et, b->fill) : LLVMConstInt(et, (long long)b->fill, 1);
  }
  LLVMValueRef d = LLVMBuildAdd(c->b, doff, LLVMBuildMul(c->b, j, cg_size(k, b->dst_st[last]), ""), "");
  LLVMBuildStore(c->b, v, cg_gep(k, b->dt, dptr, d));
  cg_endfor(k, &J);
  cg_endfor(k, &U);
}

/* One parallel loop over the box's rows; part numbers the task names. */
static void copy_box(CgKernel *k, const char *task_name, int part, Box *b) {
  char name[96];
  snprintf(name, sizeof name, "%s%d", task_name, part);
  LLVMValueRef rows = cg_i64(k->c, 1);
  for (int i = 0; i < b->rank - 1; i++)
    rows = LLVMBuildMul(k->c->b, rows, cg_size(k, b->dim[i]), "");
  LLVMValueRef grain = cg_grain(k, cg_size(k, b->dim[b->rank - 1]));
  cg_parallel(k, name, rows, grain, box_task, b);
}

void cg_move_kernel(CgKernel *k, const char *task_name) {
  const Node *n = k->n;
  const Value *y = n->out[0], *x = n->in[0];
  Box b;
  switch (n->op) {
  case OP_slice:
    b = box_of(&y->type, x, y);
    walk(&x->type, &n->attr, &b.sbase, b.sst);
    copy_box(k, task_name, 0, &b);
    break;
  case OP_unslice:
    b = box_of(&y->type, NULL, y);
    b.fill = n->attr.alpha;
    copy_box(k, task_name, 0, &b);
    b = box_of(&x->type, x, y);
    walk(&y->type, &n->attr, &b.dbase, b.dst_st);
    copy_box(k, task_name, 1, &b);
    break;
  default: {                          /* concat */
    Size ost[IR_MAX_RANK], at = sz_const(0);
    int ax = n->attr.axis;
    dense_strides(&y->type, ost);
    for (int i = 0; i < n->nin; i++) {
      b = box_of(&n->in[i]->type, n->in[i], y);
      memcpy(b.dst_st, ost, sizeof ost);
      b.dbase = sz_mul(at, ost[ax]);
      copy_box(k, task_name, i, &b);
      at = sz_add(at, n->in[i]->type.dim[ax]);
    }
  }
  }
}

/* gather and scatter_add, the ops of embeddings: a loop over the index
 * rows, each moving one row of D elements. gather copies row idx[r] of the
 * table to output row r (zeros for an index outside [0, V)); scatter_add
 * zeroes the table-shaped output, then adds dy row r into row idx[r] in
 * order of r, so a row named several times gets its contributions summed,
 * in a fixed order: the same bits at any thread count. */
#include "codegen/codegen.h"

static LLVMValueRef numel(CgKernel *k, const Type *t, int from, int to) {
  LLVMValueRef n = cg_i64(k->c, 1);
  for (int i = from; i < to; i++)
    n = LLVMBuildNSWMul(k->c->b, n, cg_size(k, t->dim[i]), "");
  return n;
}

/* idx[r] as i64, and whether it is a row of a table of V rows. */
static LLVMValueRef load_index(CgKernel *k, const Value *idx, LLVMValueRef r, LLVMValueRef V,
                               LLVMValueRef *ok) {
  CgCtx *c = k->c;
  LLVMTypeRef it = cg_elem_type(c, idx->type.dt);
  LLVMValueRef i = LLVMBuildLoad2(c->b, it, cg_gep(k, idx->type.dt, cg_value_ptr(k, idx), r), "");
  if (idx->type.dt != RT_I64)
    i = LLVMBuildSExt(c->b, i, c->t_i64, "");
  LLVMValueRef lo = LLVMBuildICmp(c->b, LLVMIntSGE, i, cg_i64(c, 0), "");
  *ok = LLVMBuildAnd(c->b, lo, LLVMBuildICmp(c->b, LLVMIntSLT, i, V, ""), "");
  return i;
}

/* Runs the builder's code from here only where `cond`; returns the block to
 * continue from once that code is emitted (cg_join). */
static LLVMBasicBlockRef cg_when(CgKernel *k, LLVMValueRef cond) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "then");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "join");
  LLVMBuildCondBr(c->b, cond, then, join);
  LLVMPositionBuilderAtEnd(c->b, then);
  return join;
}

static void cg_join(CgKernel *k, LLVMBasicBlockRef join) {
  LLVMBuildBr(k->c->b, join);
  LLVMPositionBuilderAtEnd(k->c->b, join);
}

static void gather(CgKernel *k) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Value *w = n->in[0], *idx = n->in[1], *y = n->out[0];
  RtDType dt = y->type.dt;
  LLVMValueRef D = cg_size(k, w->type.dim[1]), V = cg_size(k, w->type.dim[0]);
  LLVMValueRef rows = numel(k, &idx->type, 0, idx->type.rank);
  LLVMValueRef row = LLVMBuildNSWMul(c->b, D, cg_i64(c, rt_dtype_size(dt)), "");
  cg_zero(k, dt, cg_value_ptr(k, y), cg_i64(c, 0), LLVMBuildNSWMul(c->b, rows, D, ""));
  CgLoop L;
  LLVMValueRef r = cg_for(k, &L, cg_i64(c, 0), rows, cg_i64(c, 1)), ok;
  LLVMValueRef i = load_index(k, idx, r, V, &ok);
  LLVMBasicBlockRef join = cg_when(k, ok);
  LLVMValueRef src = cg_gep(k, dt, cg_value_ptr(k, w), LLVMBuildNSWMul(c->b, i, D, ""));
  LLVMValueRef dst = cg_gep(k, dt, cg_value_ptr(k, y), LLVMBuildNSWMul(c->b, r, D, ""));
  LLVMBuildMemCpy(c->b, dst, 1, src, 1, row);
  cg_join(k, join);
  cg_endfor(k, &L);
}

static void scatter_add(CgKernel *k) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Value *dy = n->in[0], *idx = n->in[1], *y = n->out[0];
  RtDType dt = y->type.dt;
  LLVMValueRef D = cg_size(k, y->type.dim[1]), V = cg_size(k, y->type.dim[0]);
  LLVMValueRef rows = numel(k, &idx->type, 0, idx->type.rank);
  LLVMValueRef out = cg_value_ptr(k, y), in = cg_value_ptr(k, dy);
  cg_zero(k, dt, out, cg_i64(c, 0), LLVMBuildNSWMul(c->b, V, D, ""));
  CgLoop L, E;
  LLVMValueRef r = cg_for(k, &L, cg_i64(c, 0), rows, cg_i64(c, 1)), ok;
  LLVMValueRef i = load_index(k, idx, r, V, &ok);
  LLVMBasicBlockRef join = cg_when(k, ok);
  LLVMValueRef e = cg_for(k, &E, cg_i64(c, 0), D, cg_i64(c, 1));
  LLVMValueRef at = LLVMBuildNSWAdd(c->b, LLVMBuildNSWMul(c->b, r, D, ""), e, "");
  LLVMValueRef v = LLVMBuildLoad2(c->b, cg_elem_type(c, dt), cg_gep(k, dt, in, at), "");
  cg_add_to(k, dt, out, LLVMBuildNSWAdd(c->b, LLVMBuildNSWMul(c->b, i, D, ""), e, ""), v);
  cg_endfor(k, &E);
  cg_join(k, join);
  cg_endfor(k, &L);
}

void cg_gather_kernel(CgKernel *k) {
  if (k->n->op == OP_gather)
    gather(k);
  else
    scatter_add(k);
}

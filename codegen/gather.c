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

/* Row r of the output (gather) or of dy (scatter_add) and the table row i
 * it names, D elements each, where i is in the table. */
static void copy_row(CgKernel *k, LLVMValueRef r, LLVMValueRef i, LLVMValueRef D) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  RtDType dt = n->out[0]->type.dt;
  LLVMValueRef at_r = LLVMBuildNSWMul(c->b, r, D, ""), at_i = LLVMBuildNSWMul(c->b, i, D, "");
  if (n->op == OP_gather) {
    LLVMValueRef src = cg_gep(k, dt, cg_value_ptr(k, n->in[0]), at_i);
    LLVMValueRef dst = cg_gep(k, dt, cg_value_ptr(k, n->out[0]), at_r);
    LLVMBuildMemCpy(c->b, dst, 1, src, 1, LLVMBuildNSWMul(c->b, D, cg_i64(c, rt_dtype_size(dt)), ""));
    return;
  }
  CgLoop E;
  LLVMValueRef e = cg_for(k, &E, cg_i64(c, 0), D, cg_i64(c, 1));
  LLVMValueRef in = cg_gep(k, dt, cg_value_ptr(k, n->in[0]), LLVMBuildNSWAdd(c->b, at_r, e, ""));
  LLVMValueRef v = LLVMBuildLoad2(c->b, cg_elem_type(c, dt), in, "");
  cg_add_to(k, dt, cg_value_ptr(k, n->out[0]), LLVMBuildNSWAdd(c->b, at_i, e, ""), v);
  cg_endfor(k, &E);
}

void cg_gather_kernel(CgKernel *k) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Value *idx = n->in[1], *y = n->out[0];
  const Type *table = n->op == OP_gather ? &n->in[0]->type : &y->type;
  LLVMValueRef D = cg_size(k, table->dim[1]), V = cg_size(k, table->dim[0]);
  LLVMValueRef rows = numel(k, &idx->type, 0, idx->type.rank);
  LLVMValueRef out_rows = n->op == OP_gather ? rows : V;
  cg_zero(k, y->type.dt, cg_value_ptr(k, y), cg_i64(c, 0), LLVMBuildNSWMul(c->b, out_rows, D, ""));
  CgLoop L;
  LLVMValueRef r = cg_for(k, &L, cg_i64(c, 0), rows, cg_i64(c, 1)), ok;
  LLVMValueRef i = load_index(k, idx, r, V, &ok);
  LLVMBasicBlockRef join = cg_when(k, ok);
  copy_row(k, r, i, D);
  cg_join(k, join);
  cg_endfor(k, &L);
}

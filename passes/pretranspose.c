/* Pre-transposed dense weights, for inference: a matmul x W^T whose W
 * ([out, in], a dense layer's) is known when the model compiles becomes
 * x W' with a new constant W' = W^T ([in, out]), transposed once here
 * rather than on every call.
 *
 * Why: at a batch below the GEMM's MR the product runs in codegen/gemv.c,
 * whose x W^T shape reads L rows of W and transposes them in registers
 * for every L k's; x W broadcasts x[k] and runs NV contiguous FMAs per k,
 * no shuffles. Both sum each output in the GEMM's order, so the outputs
 * are the same bits; at larger batches the GEMM packs W' (rows of
 * op(B) contiguous) at least as cheaply as W.
 *
 * W is a constant, a parameter or state whose data the driver hands over
 * (cx->param_data: the weights are then baked, g->weights_baked), or a
 * reshape of one; f32 or f64, rank 2. One W' per W, whatever reads it. */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

const void *pass_known_data(Graph *g, PassCtx *cx, const Value *v, bool *param) {
  if (v->role == V_CONST)
    return v->data;
  if ((v->role == V_PARAM || v->role == V_STATE) && cx->param_data) {
    *param = true;
    return cx->param_data(g, v, cx->param_user);
  }
  if (v->role == V_TEMP && v->def->op == OP_reshape)
    return pass_known_data(g, cx, v->def->in[0], param);
  return NULL;
}

Value *pass_derived_const(Graph *g, PassCtx *cx, const Value *w, Type t, PassLay lay, const void *user) {
  bool param = false;
  const char *src = pass_known_data(g, cx, w, &param);
  size_t sz = rt_dtype_size(t.dt);
  char *dst = src ? calloc((size_t)ir_numel_max(g, &t) + 1, sz) : NULL;
  if (!dst)
    return NULL;
  lay(dst, src, sz, user);
  Value *c = ir_const(g, t, dst);
  free(dst);
  g->weights_baked |= param;
  return c;
}

bool pass_derived_done(Graph *g, PassStats *st, int changed) {
  if (changed) {
    ir_remove_dead(g, true);
    ir_count_uses(g);
  }
  st->bytes_after = pass_temp_bytes(g);
  return changed > 0;
}

/* src [rows, cols] transposed into dst */
static void lay_transposed(char *dst, const char *src, size_t sz, const void *user) {
  const int64_t *rc = user, rows = rc[0], cols = rc[1];
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      memcpy(dst + (c * rows + r) * sz, src + (r * cols + c) * sz, sz);
}

/* W^T of rank-2 w as a new constant, or NULL when its data or extents are
 * not known now. */
static Value *transposed(Graph *g, PassCtx *cx, const Value *w) {
  int64_t rc[2];
  if (w->type.rank != 2 || (w->type.dt != RT_F32 && w->type.dt != RT_F64) ||
      !sz_is_const(w->type.dim[0], &rc[0]) || !sz_is_const(w->type.dim[1], &rc[1]))
    return NULL;
  Type t = ir_type(w->type.dt, 2, (Size[]){w->type.dim[1], w->type.dim[0]});
  return pass_derived_const(g, cx, w, t, lay_transposed, rc);
}

bool pass_pretranspose(Graph *g, PassCtx *cx, PassStats *st) {
  if (g->training || g->loss)
    return false;
  int nvals = g->nvals, changed = 0;
  Value **wt = calloc(nvals ? nvals : 1, sizeof *wt);   /* [old value id]: its W' */
  if (!wt)
    return false;
  st->bytes_before = pass_temp_bytes(g);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    Value *w = n->op == OP_matmul && n->attr.trans_b ? n->in[1] : NULL;
    if (!w || w->id >= nvals)
      continue;
    if (!wt[w->id])
      wt[w->id] = transposed(g, cx, w);
    if (!wt[w->id])
      continue;
    n->in[1] = wt[w->id];
    n->attr.trans_b = false;
    changed++;
  }
  free(wt);
  return pass_derived_done(g, st, changed);
}

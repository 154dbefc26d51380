/* Prepacked GEMM operands, for inference: a matmul whose B's data is known
 * when the model compiles (pass_known_data: a constant, or a weight the
 * driver hands over) reads a new constant holding B already laid out as
 * the GEMM micro-kernel's panels (pack_b, ops.def), packed once here
 * rather than on every call.
 *
 * Why: at batch 128 the MLP spent ~10% of its time packing its constant
 * weights into panels on every call. The GEMM reads the panels with the
 * K blocks and tiles it would have packed itself (codegen/gemm.c
 * use_packed_b), so the outputs are the same bits.
 *
 * The panel geometry is codegen's answer (cx->gemm_panels, handed in by
 * the driver like work_bytes), asked for the matmul's most rows M (the
 * batch at its compiled maximum): a product of few rows runs as a GEMV,
 * which reads B unpacked, and keeps it. With more, the GEMM reads the
 * panels at every batch, a small one too (the GEMV's sums are the GEMM's,
 * so the bits do not change). B is rank 2 (one for the whole batch), f32
 * or f64, its extents constant. One packing per (B, transposed or not),
 * whatever reads it: the geometry depends on K alone. */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

/* Op(B)'s extents and the panels the GEMM reads it from for this
 * matmul's rows; false when they are not known now or it runs as a GEMV. */
typedef struct Panels {
  int64_t K, N, nr, kc;
  bool trans;   /* B is read as w^T */
} Panels;

static bool panels_for(const Graph *g, const PassCtx *cx, const Node *n, Panels *P) {
  const Type *a = &n->in[0]->type, *o = &n->out[0]->type, *w = &n->in[1]->type;
  Type rows = ir_type(o->dt, 1, (Size[]){o->dim[o->rank - 2]});
  int64_t M = ir_numel_max(g, &rows);
  return cx->gemm_panels && !n->attr.packed_n && w->rank == 2 && M > 0 &&
         sz_is_const(a->dim[a->rank - (n->attr.trans_a ? 2 : 1)], &P->K) &&
         sz_is_const(o->dim[o->rank - 1], &P->N) && cx->gemm_panels(w->dt, cx->lanes, M, P->K, &P->nr, &P->kc);
}

/* op(w) [K, N] (w [N, K] when trans) into pack_b's layout (ops.def) at
 * dst, zeroed beforehand: block kb's panel p holds rows k0 .. k0+rows of
 * columns p*nr .. p*nr+nr, k-major. */
static void lay_panels(char *dst, const char *w, size_t sz, const void *user) {
  const Panels *P = user;
  int64_t K = P->K, N = P->N, nr = P->nr, kc = P->kc, np = (N + nr - 1) / nr;
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    int64_t rows = K - k0 < kc ? K - k0 : kc;
    char *block = dst + (size_t)(k0 * np * nr) * sz;
    for (int64_t k = 0; k < rows; k++)
      for (int64_t n = 0; n < N; n++) {
        int64_t from = P->trans ? n * K + k0 + k : (k0 + k) * N + n;
        int64_t to = (n / nr) * rows * nr + k * nr + n % nr;
        memcpy(block + (size_t)to * sz, w + (size_t)from * sz, sz);
      }
  }
}

/* B packed as P says, as a new constant; NULL when its data is not known. */
static Value *packed(Graph *g, PassCtx *cx, const Node *n, Panels *P) {
  int64_t nkb = (P->K + P->kc - 1) / P->kc, np = (P->N + P->nr - 1) / P->nr;
  Size dims[] = {sz_const(nkb), sz_const(np), sz_const(P->kc), sz_const(P->nr)};
  P->trans = n->attr.trans_b;
  return pass_derived_const(g, cx, n->in[1], ir_type(n->in[1]->type.dt, 4, dims), lay_panels, P);
}

bool pass_prepack(Graph *g, PassCtx *cx, PassStats *st) {
  if (g->training || g->loss)
    return false;
  int nvals = g->nvals, changed = 0;
  /* [B's id * 2 + trans_b]: its panels (the geometry depends on K alone) */
  Value **cache = calloc(2 * (size_t)(nvals ? nvals : 1), sizeof *cache);
  if (!cache)
    return false;
  st->bytes_before = pass_temp_bytes(g);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    Panels P;
    if (n->op != OP_matmul || n->in[1]->id >= nvals || !panels_for(g, cx, n, &P))
      continue;
    Value **p = &cache[2 * n->in[1]->id + n->attr.trans_b];
    if (!*p)
      *p = packed(g, cx, n, &P);
    if (!*p)
      continue;
    n->in[1] = *p;
    n->attr.trans_b = false;
    n->attr.packed_n = P.N;
    changed++;
  }
  free(cache);
  return pass_derived_done(g, st, changed);
}

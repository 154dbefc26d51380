/* The gradient of a scan is a reverse scan (backpropagation through time).
 *
 * The forward scan is made to save what the backward step needs: its
 * carries before each step, as extra emitted outputs (the body emits its
 * carry inputs). The backward body then recomputes the step from the saved
 * carry, the step of each sequence and the invariants, and differentiates
 * it with pass_autodiff_seeded, seeded by the gradients flowing into the
 * step's outputs:
 *
 *   backward body inputs:  seqs     xs_t (all forward sequences), cs_t (the
 *                                   saved carries), de_t (the gradient of
 *                                   each emitted output that has one)
 *                          carries  dc (the gradient of the carries after
 *                                   the step), dw (each differentiated
 *                                   invariant's gradient summed so far)
 *                          invars   the forward invariants
 *   backward body outputs: carries  d(step)/d(cs_t) (dc before the step),
 *                                   dw + d(step)/dw
 *                          emits    dxs_t for the sequences that need one
 *
 * run in the opposite direction from dc = d(loss)/d(last carries), dw = 0.
 * Its last carries are the gradients of the initial carries and of the
 * invariants, its emitted stacks those of the sequences. Masks need nothing
 * here: ir_scan_mask writes them as ordinary ops of the body. Recomputing
 * the step keeps the saved memory to the carries (one per step); a scan
 * inside a scan body is not differentiated (its body would be shared).
 *
 * Two exceptions make the loop cheaper, as PyTorch's RNNs do:
 * - Contractions are saved, not recomputed: the forward body emits each
 *   matmul's output (with the adds its GEMM's epilogue makes) too, and
 *   the backward body reads it from that stack (its recomputed copy is
 *   then dead code). The recurrent h W_hh^T is most of an RNN step;
 *   recomputing it cost a third of the backward.
 * - An invariant W whose one use is u = a W^T (or a W), a a sequence or a
 *   carry, gets its gradient outside the loop: the backward body emits
 *   du at every step, and after the scan dW = du^T a (a^T du) is one GEMM
 *   over the stacks of du and of a (the saved carries, or the sequence),
 *   in place of a small GEMM and an add to a carried sum at every step.
 *   The sum over steps is then summed in another order (K blocks of the
 *   one GEMM): float reassociation, still the same at any thread count.
 * What only the backward body reads (saved contractions, saved carries no
 * hoisted gradient reads as rows) is saved as one row a step when the
 * scan's axis is not the first, so that neither loop copies it
 * (saved_step). */
#include "passes/passes.h"
#include <string.h>

static Value *zeros(Graph *g, const Type *t, SrcLoc loc) {
  Attr a = ir_attr();
  a.rank = t->rank;
  for (int i = 0; i < t->rank; i++)
    a.shape[i] = t->dim[i];
  Value *z = ir_scalar(g, t->dt, 0);
  return ir_op(g, OP_expand, &z, 1, &a, loc);
}

/* What the forward body emits of v, a value the backward reads at its
 * step: v as one row [1, .., 1, numel] when the scan's axis is not the
 * first, so that each step of the stack is one run of bytes, which the
 * loops read and write in place (codegen/scan.c); v itself if whole rows
 * of its stack are read after the loop (by a hoisted gradient). */
static Value *saved_step(Graph *b, Value *v, int axis, bool as_rows) {
  if (axis == 0 || as_rows)
    return v;
  Attr a = ir_attr();
  a.rank = axis + 1;
  for (int i = 0; i < axis; i++)
    a.shape[i] = sz_const(1);
  a.shape[axis] = sz_const(1);
  for (int i = 0; i < v->type.rank; i++)
    a.shape[axis] = sz_mul(a.shape[axis], v->type.dim[i]);
  return ir_op(b, OP_reshape, &v, 1, &a, v->def ? v->def->loc : srcloc_none());
}

/* The forward body emits its carry inputs, the scan their stacks; rows[i]:
 * carry i's stack is read as rows after the loop. */
static void save_carries(Graph *g, Node *n, const bool *rows) {
  Graph *b = n->body;
  for (int i = 0; i < n->attr.ncarry; i++) {
    ir_output(b, saved_step(b, b->inputs[n->attr.nseq + i], n->attr.axis, rows[i]), NULL);
    ir_node_add_output(g, n);
  }
}

/* The node that is v's one use in b (not an output either), or NULL. */
static Node *sole_user(const Graph *b, const Value *v) {
  Node *user = NULL;
  int uses = 0;
  for (int i = 0; i < b->nnodes; i++)
    for (int j = 0; j < b->nodes[i]->nin; j++)
      if (b->nodes[i]->in[j] == v)
        user = b->nodes[i], uses++;
  for (int i = 0; i < b->noutputs; i++)
    uses += b->outputs[i] == v;
  return uses == 1 ? user : NULL;
}

/* What to save of a contraction's output u: the adds of the same shape it
 * alone feeds (gi + h W_hh^T, + b_hh), which the GEMM's epilogue computes
 * anyway; the backward then reads neither u nor the other addends. */
static Value *epilogue_of(const Graph *b, Value *u) {
  Node *m;
  while ((m = sole_user(b, u)) && m->op == OP_add && ir_type_eq(&m->out[0]->type, &u->type))
    u = m->out[0];
  return u;
}

/* The forward body emits every contraction's output (epilogue_of), the
 * scan their stacks (after the saved carries); returns how many, their
 * body values in saved. */
static int save_contractions(Graph *g, Node *n, const Value **saved, int cap) {
  Graph *b = n->body;
  int ns = 0;
  for (int i = 0; i < b->nnodes && ns < cap; i++) {
    Node *m = b->nodes[i];
    if (!op_is(m->op, CAT_CONTRACT) || m->nout != 1)
      continue;
    Value *v = epilogue_of(b, m->out[0]);
    bool again = false;                   /* x Wx^T + h Wh^T: one sum of two */
    for (int k = 0; k < ns; k++)
      again |= saved[k] == v;
    if (again)
      continue;
    ir_output(b, saved_step(b, v, n->attr.axis, false), NULL);
    ir_node_add_output(g, n);
    saved[ns++] = v;
  }
  return ns;
}

/* The node u = a W^T (or a W) that is the one use of the forward body's
 * value w, a a sequence or carry, as rows along the scan's axis (the axis
 * not the last of a's stack), so that dW is one GEMM over the stacks; or
 * NULL. */
static const Node *hoistable(const Node *n, const Value *w) {
  const Graph *b = n->body;
  const Node *use = sole_user(b, w);
  if (!use || use->op != OP_matmul || use->in[1] != w || use->in[0] == w ||
      use->attr.trans_a || w->type.rank != 2 || use->in[0]->type.rank != 2 || n->attr.axis > 1)
    return NULL;
  for (int i = 0; i < n->attr.nseq + n->attr.ncarry; i++)
    if (use->in[0] == b->inputs[i])
      return use;
  return NULL;
}

/* The forward body's nodes, again, in bb: map[old value id] is the new value. */
static void clone_body(Graph *bb, const Graph *b, Value **map) {
  for (int i = 0; i < b->nvals; i++)
    if (b->vals[i]->role == V_CONST)
      map[i] = ir_const(bb, b->vals[i]->type, b->vals[i]->data);
  for (int i = 0; i < b->nnodes; i++) {
    const Node *n = b->nodes[i];
    Value *in[n->nin > 0 ? n->nin : 1];
    for (int j = 0; j < n->nin; j++)
      in[j] = map[n->in[j]->id];
    Node *m = ir_node_body(bb, n->op, in, n->nin, n->nout, n->body, &n->attr, n->loc);
    for (int j = 0; j < n->nout; j++)
      map[n->out[j]->id] = m->out[j];
  }
}

/* What the rule works with: the forward node, its counts, and the backward
 * scan's inputs and body inputs as they are made. */
typedef struct Rev {
  Grad *d;
  const Node *n;
  Graph *bb;
  int nseq, nc, ninv, nemit;   /* the forward's; nemit without the saved carries */
  Value *in[256];              /* the backward scan's inputs */
  int nin;
  int nseq2, nc2;              /* its sequences and carries */
  const Value *saved[64];      /* the forward body's saved contractions */
  int nsaved;
  const Node *hoist[128];      /* by invariant: its use, when dW leaves the loop, or NULL */
  int du_at[128];              /* by hoisted invariant: the backward body's output of du */
} Rev;

static Value *body_input(Rev *r, Value *outer, const Type *t, const char *name) {
  r->in[r->nin++] = outer;
  return ir_input(r->bb, name, *t, r->n->loc);
}

/* The backward body's step of a saved stack, as the forward's value of
 * type t (saved_step may have made it one row). */
static Value *saved_input(Rev *r, Value *stack, const Type *t, const char *name) {
  Type step = stack->type;
  int a = r->n->attr.axis;
  step.rank--;
  memmove(step.dim + a, step.dim + a + 1, sizeof(Size) * (size_t)(step.rank - a));
  Value *v = body_input(r, stack, &step, name);
  if (ir_dims_eq(&step, t))
    return v;
  Attr at = ir_attr();
  at.rank = t->rank;
  memcpy(at.shape, t->dim, sizeof(Size) * (size_t)t->rank);
  return ir_op(r->bb, OP_reshape, &v, 1, &at, r->n->loc);
}

/* Builds the backward body; returns its gradients, by forward input, in
 * dxs (the sequences' and invariants' for the outputs, the saved carries'
 * for the carries), and the de inputs it made. */
static int build_body(Rev *r, Value **dcs, Value **dws, Value **dxs) {
  const Node *n = r->n;
  const Graph *b = n->body;
  Graph *bb = r->bb;
  Value **map = rt_arena_alloc(bb->arena, sizeof(Value *) * (b->nvals + 1));
  memset(map, 0, sizeof(Value *) * (b->nvals + 1));
  Value *ys[256], *seeds[256], *xs[256];
  int ny = 0, nx = 0;
  for (int j = 0; j < r->nseq; j++)
    map[b->inputs[j]->id] = body_input(r, n->in[j], &b->inputs[j]->type, "x");
  for (int i = 0; i < r->nc; i++)
    map[b->inputs[r->nseq + i]->id] =
        saved_input(r, n->out[r->nc + r->nemit + i], &b->inputs[r->nseq + i]->type, "carry");
  Value *saved_in[64];
  for (int s = 0; s < r->nsaved; s++)
    saved_in[s] = saved_input(r, n->out[2 * r->nc + r->nemit + s], &r->saved[s]->type, "saved");
  for (int k = 0; k < r->nemit; k++)
    if (r->d->dys[r->nc + k]) {
      ys[ny] = b->outputs[r->nc + k];
      seeds[ny] = body_input(r, r->d->dys[r->nc + k], &ys[ny]->type, "demit");
      ny++;
    }
  r->nseq2 = r->nin;
  for (int i = 0; i < r->nc; i++) {
    const Value *c = n->out[i];
    Value *dc = r->d->dys[i] ? r->d->dys[i] : zeros(r->d->g, &c->type, n->loc);
    ys[ny] = b->outputs[i];
    seeds[ny] = body_input(r, dc, &c->type, "dcarry");
    ny++;
  }
  for (int m = 0; m < r->ninv; m++) {
    const Value *w = n->in[r->nseq + r->nc + m];
    if (r->d->need[r->nseq + r->nc + m] && !r->hoist[m])
      dws[m] = body_input(r, zeros(r->d->g, &w->type, n->loc), &w->type, "dsum");
  }
  r->nc2 = r->nin - r->nseq2;
  for (int m = 0; m < r->ninv; m++) {
    int i = r->nseq + r->nc + m;
    map[b->inputs[i]->id] = body_input(r, n->in[i], &b->inputs[i]->type, "w");
  }
  clone_body(bb, b, map);
  for (int i = 0; i < ny; i++)
    ys[i] = map[ys[i]->id];
  for (int i = 0; i < r->nseq + r->nc + r->ninv; i++) {
    const Node *h = i < r->nseq + r->nc ? NULL : r->hoist[i - r->nseq - r->nc];
    xs[nx++] = map[h ? h->out[0]->id : b->inputs[i]->id];     /* a hoisted W: du in its place */
  }
  if (pass_autodiff_seeded(bb, ys, seeds, ny, xs, nx, dxs))
    return -1;
  for (int s = 0; s < r->nsaved; s++)
    ir_replace_uses(bb, map[r->saved[s]->id], saved_in[s]);
  for (int i = 0; i < r->nc; i++)
    dcs[i] = dxs[r->nseq + i];
  return 0;
}

/* Emits v (zeros of t if NULL) from the backward body unless an earlier
 * emit is v already (an LSTM's du is its gi's gradient); returns its place
 * among the body's outputs, hence the scan's. */
static int emit_once(Rev *r, Value *v, const Type *t) {
  Graph *bb = r->bb;
  for (int i = r->nc2; v && i < bb->noutputs; i++)
    if (bb->outputs[i] == v)
      return i;
  ir_output(bb, v ? v : zeros(bb, t, r->n->loc), NULL);
  return bb->noutputs - 1;
}

/* x [d0, .., dk] as rows [d0 * .. * dk-1, dk]. */
static Value *rows(Graph *g, Value *x, SrcLoc loc) {
  const Type *t = &x->type;
  Attr a = ir_attr();
  a.rank = 2;
  a.shape[0] = sz_const(1);
  for (int i = 0; i + 1 < t->rank; i++)
    a.shape[0] = sz_mul(a.shape[0], t->dim[i]);
  a.shape[1] = t->dim[t->rank - 1];
  return ir_op(g, OP_reshape, &x, 1, &a, loc);
}

/* The backward body's outputs: carries (dc, dw), then emits (dxs, du). */
static void body_outputs(Rev *r, Value **dcs, Value **dws, Value **dxs) {
  const Graph *b = r->n->body;
  Graph *bb = r->bb;
  for (int i = 0; i < r->nc; i++) {
    const Type *t = &b->inputs[r->nseq + i]->type;
    ir_output(bb, dcs[i] ? dcs[i] : zeros(bb, t, r->n->loc), NULL);
  }
  for (int m = 0; m < r->ninv; m++) {
    if (!dws[m])
      continue;
    Value *g = dxs[r->nseq + r->nc + m];
    ir_output(bb, g ? ir_op2(bb, OP_add, dws[m], g, r->n->loc) : dws[m], NULL);
  }
  for (int j = 0; j < r->nseq; j++)
    if (r->d->need[j])
      ir_output(bb, dxs[j] ? dxs[j] : zeros(bb, &b->inputs[j]->type, r->n->loc), NULL);
  for (int m = 0; m < r->ninv; m++)
    if (r->hoist[m])
      r->du_at[m] = emit_once(r, dxs[r->nseq + r->nc + m], &r->hoist[m]->out[0]->type);
}

/* dW of a hoisted invariant from the stacks of du and of a (hoistable):
 * du^T a for u = a W^T, a^T du for u = a W, over the rows of all steps. */
static Value *hoisted_grad(Rev *r, const Node *use, Value *du) {
  const Node *n = r->n;
  const Graph *b = n->body;
  Value *a = NULL;
  for (int i = 0; i < r->nseq + r->nc; i++)
    if (use->in[0] == b->inputs[i])
      a = i < r->nseq ? n->in[i] : n->out[r->nc + r->nemit + i - r->nseq];
  Attr at = ir_attr();
  at.trans_a = true;
  bool tb = use->attr.trans_b;
  Value *du2 = rows(r->d->g, du, n->loc), *a2 = rows(r->d->g, a, n->loc);
  return ir_op(r->d->g, OP_matmul, (Value *[]){tb ? du2 : a2, tb ? a2 : du2}, 2, &at, n->loc);
}

void pass_grad_scan(Grad *d, const Node *cn, Value *dy, Value **dx) {
  (void)dy;
  Node *n = (Node *)cn;
  Rev r = {.d = d, .n = n, .nseq = n->attr.nseq, .nc = n->attr.ncarry, .ninv = ir_scan_ninv(n),
           .nemit = ir_scan_nemit(n)};
  if (2 * (n->nin + n->nout) + 8 > 256) {
    diag_error(d->g->diags, n->loc, "autodiff: a scan with %d inputs and %d outputs is too wide",
               n->nin, n->nout);
    return;
  }
  r.bb = ir_body_new(d->g, "step.grad");
  bool rows[128] = {0};
  for (int m = 0; m < r.ninv; m++)
    if (d->need[r.nseq + r.nc + m] && (r.hoist[m] = hoistable(n, n->body->inputs[r.nseq + r.nc + m])))
      for (int i = 0; i < r.nc; i++)
        rows[i] |= r.hoist[m]->in[0] == n->body->inputs[r.nseq + i];
  save_carries(d->g, n, rows);
  int room = 256 - 8 - 2 * (n->nin + n->nout);     /* the rest are recomputed */
  r.nsaved = save_contractions(d->g, n, r.saved, room < 64 ? room : 64);
  Value *dcs[128] = {0}, *dws[128] = {0}, *dxs[256] = {0};
  if (!r.bb || build_body(&r, dcs, dws, dxs) < 0)
    return;
  body_outputs(&r, dcs, dws, dxs);
  Node *s = ir_scan(d->g, r.bb, r.in, r.nseq2, r.nc2, r.nin - r.nseq2 - r.nc2, n->attr.axis,
                    !n->attr.reverse, n->attr.steps, n->loc);
  int o = 0;
  for (int i = 0; i < r.nc; i++, o++)
    dx[r.nseq + i] = s->out[o];
  for (int m = 0; m < r.ninv; m++)
    if (dws[m])
      dx[r.nseq + r.nc + m] = s->out[o++];
  for (int j = 0; j < r.nseq; j++)
    if (d->need[j])
      dx[j] = s->out[o++];
  for (int m = 0; m < r.ninv; m++)
    if (r.hoist[m])
      dx[r.nseq + r.nc + m] = hoisted_grad(&r, r.hoist[m], s->out[r.du_at[m]]);
}

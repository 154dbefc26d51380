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
 * inside a scan body is not differentiated (its body would be shared). */
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

/* The forward body emits its carry inputs, the scan their stacks. */
static void save_carries(Graph *g, Node *n) {
  Graph *b = n->body;
  for (int i = 0; i < n->attr.ncarry; i++) {
    ir_output(b, b->inputs[n->attr.nseq + i], NULL);
    ir_node_add_output(g, n);
  }
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
} Rev;

static Value *body_input(Rev *r, Value *outer, const Type *t, const char *name) {
  r->in[r->nin++] = outer;
  return ir_input(r->bb, name, *t, r->n->loc);
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
        body_input(r, n->out[r->nc + r->nemit + i], &b->inputs[r->nseq + i]->type, "carry");
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
    if (r->d->need[r->nseq + r->nc + m])
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
  for (int i = 0; i < r->nseq + r->nc + r->ninv; i++)
    xs[nx++] = map[b->inputs[i]->id];
  if (pass_autodiff_seeded(bb, ys, seeds, ny, xs, nx, dxs))
    return -1;
  for (int i = 0; i < r->nc; i++)
    dcs[i] = dxs[r->nseq + i];
  return 0;
}

/* The backward body's outputs: carries (dc, dw), then emits (dxs). */
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
  save_carries(d->g, n);
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
}

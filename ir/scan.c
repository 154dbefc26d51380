/* The scan op: the one loop of the IR. A scan node holds its step function
 * as a graph of its own (Node.body) with an explicit signature:
 *
 *   body inputs:  seqs[0 .. nseq)        one step of each scanned input: the
 *                                        input with the sequence axis removed
 *                 carries[0 .. ncarry)   the state before the step
 *                 invariants[0 .. ninv)  values read at every step (weights)
 *   body outputs: carries'[0 .. ncarry)  the state after the step (same types)
 *                 emits[0 .. nemit)      one step of each emitted output
 *
 *   node inputs:  the nseq sequences, the ncarry initial carries, the ninv
 *                 invariants, in that order (attr.nseq, attr.ncarry)
 *   node outputs: the ncarry last carries, then the nemit emitted values
 *                 stacked along attr.axis (attr.steps long)
 *
 * Step t reads sequence slices x[.., t, ..] on attr.axis; attr.reverse runs
 * t from steps-1 down to 0 (the backward direction of a bidirectional RNN,
 * and the reverse scan autodiff makes, passes/scan_grad.c). The body is
 * a pure function of its inputs: it reads nothing of the enclosing graph
 * except through them, so every pass can run on it as on any graph
 * (pipeline.c runs them on bodies first), and the verifier checks the
 * signature through this shape rule.
 *
 * Bodies share the size variables of the graph that holds them: a body
 * copies its parent's table when it is made, and ir_sync_bodies hands it
 * the parent's bindings before passes and codegen. */
#include "ir/ir.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(Graph *g, Node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(Graph *g, Node *n, const char *fmt, ...) {
  if (g->diags) {
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(g->diags, DIAG_ERROR, n->loc, fmt, ap);
    va_end(ap);
  }
  for (int i = 0; i < n->nout; i++)
    n->out[i]->type = ir_type_unknown();
  return -1;
}

static void share_sizes(Graph *body, const Graph *parent) {
  body->svars = parent->svars;
  body->svals = parent->svals;
  body->nsvars = parent->nsvars;
  body->capsvars = parent->nsvars;     /* a new size in the body makes its own copy */
  body->batch_var = parent->batch_var;
  body->max_batch = parent->max_batch;
  body->training = parent->training;
  body->seed = parent->seed;
}

Graph *ir_body_new(Graph *parent, const char *name) {
  Graph *b = ir_graph_new(name, parent->diags);
  if (b) {
    share_sizes(b, parent);
    ir_graph_adopt(parent, b);
  }
  return b;
}

void ir_sync_bodies(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Graph *b = g->nodes[i]->body;
    if (!b)
      continue;
    share_sizes(b, g);
    b->diags = g->diags;
    ir_sync_bodies(b);
  }
}

int ir_scan_ninv(const Node *n) { return n->nin - n->attr.nseq - n->attr.ncarry; }
int ir_scan_nemit(const Node *n) { return n->body->noutputs - n->attr.ncarry; }

/* t without axis a (a step of a sequence), or with `steps` inserted at a. */
static Type drop_axis(const Type *t, int a) {
  Type s = *t;
  s.rank--;
  for (int i = a; i < s.rank; i++)
    s.dim[i] = t->dim[i + 1];
  return s;
}

static Type insert_axis(const Type *t, int a, Size steps) {
  Type s = *t;
  s.rank++;
  for (int i = s.rank - 1; i > a; i--)
    s.dim[i] = t->dim[i - 1];
  s.dim[a] = steps;
  return s;
}

#define TS(t) ir_type_str(g, (t), (char[160]){0}, 160)

static int check_seq(Graph *g, Node *n, int j) {
  const Type *x = &n->in[j]->type, *b = &n->body->inputs[j]->type;
  int a = n->attr.axis;
  if (a < 0 || a >= x->rank || x->rank > IR_MAX_RANK)
    return fail(g, n, "scan: sequence %d is %s, it has no axis %d", j, TS(x), a);
  if (!sz_eq(x->dim[a], n->attr.steps)) {
    char sb[64];
    sz_print(sb, sizeof sb, n->attr.steps, g->svars);
    return fail(g, n, "scan: sequence %d is %s, its axis %d is not the scan's %s steps", j, TS(x),
                a, sb);
  }
  Type step = drop_axis(x, a);
  if (!ir_type_eq(&step, b))
    return fail(g, n, "scan: the body takes a step of sequence %d as %s, the step is %s", j,
                TS(b), TS(&step));
  return 0;
}

static int check_same(Graph *g, Node *n, const Type *outer, const Value *inner, const char *what,
                      int i) {
  if (!ir_type_known(&inner->type))
    return -1;
  if (!ir_type_eq(outer, &inner->type))
    return fail(g, n, "scan: %s %d is %s outside the body and %s inside", what, i, TS(outer),
                TS(&inner->type));
  return 0;
}

int ir_shape_scan(Graph *g, Node *n) {
  const Graph *b = n->body;
  int nseq = n->attr.nseq, nc = n->attr.ncarry;
  if (!b || nseq < 0 || nc < 0 || nseq + nc > n->nin)
    return fail(g, n, "internal: scan without a body or with bad input counts");
  if (b->ninputs != n->nin || b->noutputs < nc || n->nout != b->noutputs)
    return fail(g, n, "scan: the body takes %d inputs and gives %d outputs; the scan has %d "
                "inputs and %d outputs", b->ninputs, b->noutputs, n->nin, n->nout);
  for (int j = 0; j < nseq; j++)
    if (check_seq(g, n, j) < 0)
      return -1;
  for (int i = nseq; i < n->nin; i++)
    if (check_same(g, n, &n->in[i]->type, b->inputs[i], i < nseq + nc ? "carry" : "invariant",
                   i) < 0)
      return -1;
  for (int i = 0; i < nc; i++)
    if (check_same(g, n, &n->in[nseq + i]->type, b->outputs[i], "carry output", i) < 0)
      return -1;
  for (int i = 0; i < nc; i++)
    n->out[i]->type = n->in[nseq + i]->type;
  for (int i = nc; i < n->nout; i++) {
    const Type *e = &b->outputs[i]->type;
    if (!ir_type_known(e) || n->attr.axis > e->rank || e->rank >= IR_MAX_RANK)
      return fail(g, n, "scan: emitted output %d is %s, it cannot be stacked on axis %d", i - nc,
                  TS(e), n->attr.axis);
    n->out[i]->type = insert_axis(e, n->attr.axis, n->attr.steps);
  }
  return 0;
}

Node *ir_scan(Graph *g, Graph *body, Value **in, int nseq, int ncarry, int ninv, int axis,
              bool reverse, Size steps, SrcLoc loc) {
  Attr a = ir_attr();
  a.axis = axis;
  a.nseq = nseq;
  a.ncarry = ncarry;
  a.reverse = reverse;
  a.steps = steps;
  return ir_node_body(g, OP_scan, in, nseq + ncarry + ninv, body->noutputs, body, &a, loc);
}

/* m viewed as [N, 1, ...] of rank r, to broadcast over a batch-major value. */
static Value *batch_column(Graph *body, Value *m, int r) {
  Attr a = ir_attr();
  a.rank = r;
  a.shape[0] = m->type.dim[0];
  for (int i = 1; i < r; i++)
    a.shape[i] = sz_const(1);
  return r == m->type.rank ? m : ir_op(body, OP_reshape, &m, 1, &a, m->loc);
}

/* Sequences of different lengths in one batch: m (a body input, one step
 * of a 0/1 mask of shape [N, T], batch first) keeps each carry where m is 0
 * and zeroes the emitted values there:
 *   c' = c + m (c' - c),   e = m e
 * so past its length a sequence's state stays and its outputs are zero,
 * and autodiff needs nothing special (the rewrite is ordinary ops). The
 * carries are the body inputs nseq .. nseq+ncarry, the body outputs first. */
void ir_scan_mask(Graph *body, Value *m, int nseq, int ncarry) {
  for (int i = 0; i < body->noutputs; i++) {
    Value *y = body->outputs[i];
    Value *mc = batch_column(body, m, y->type.rank);
    if (i < ncarry) {
      Value *c = body->inputs[nseq + i];
      Value *dlt = ir_op2(body, OP_mul, mc, ir_op2(body, OP_sub, y, c, m->loc), m->loc);
      y = ir_op2(body, OP_add, c, dlt, m->loc);
    } else {
      y = ir_op2(body, OP_mul, mc, y, m->loc);
    }
    y->name = body->outputs[i]->name;
    body->outputs[i]->is_output = false;
    body->outputs[i] = y;
    y->is_output = true;
  }
}

/* Generation's step function: g lowered with its sequence length bound to
 * 1, each carry of each scan (in node order) becomes an input "state.<k>"
 * in place of its initial value and its last value an output
 * "state.<k>.next", so a caller runs the model one step at a time and hands
 * the state from one call to the next. Returns the number of states. */
int ir_step_function(Graph *g) {
  int k = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    for (int j = 0; n->op == OP_scan && j < n->attr.ncarry; j++, k++) {
      char name[48];
      snprintf(name, sizeof name, "state.%d", k);
      Value *s = ir_input(g, name, n->in[n->attr.nseq + j]->type, n->loc);
      n->in[n->attr.nseq + j] = s;
      snprintf(name, sizeof name, "state.%d.next", k);
      ir_output(g, n->out[j], n->out[j]->is_output ? NULL : name);  /* an output keeps its name */
    }
  }
  return k;
}

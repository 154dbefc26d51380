/* The verifier: invariants every pass must keep. It runs after every pass in
 * debug builds and tests. A failure here is kiln's bug, not the user's, so
 * it is reported as an internal error naming the node. */
#include "ir/ir.h"
#include <stdlib.h>
#include <string.h>

static int problem(Graph *g, const Node *n, const char *what) {
  if (g->diags)
    diag_error(g->diags, n ? n->loc : srcloc_none(), "internal: verifier: %s%s%s", what,
               n ? " at node " : "", n ? op_name(n->op) : "");
  return 1;
}

/* Shape rules re-run on a copy of the node must give the recorded types. */
static int check_types(Graph *g, Node *n) {
  Value *saved[8];
  Type want[8];
  int k = n->nout < 8 ? n->nout : 8;
  for (int i = 0; i < k; i++) {
    saved[i] = n->out[i];
    want[i] = n->out[i]->type;
  }
  Diags *d = g->diags;
  g->diags = NULL;       /* the frontend already reported user errors */
  ir_infer(g, n);
  g->diags = d;
  int bad = 0;
  for (int i = 0; i < k; i++) {
    if (!ir_type_eq(&saved[i]->type, &want[i]))
      bad = 1;
    saved[i]->type = want[i];
  }
  return bad ? problem(g, n, "recorded type differs from its shape rule") : 0;
}

int ir_verify(Graph *g) {
  int errs = 0;
  char *defined = calloc(g->nvals ? g->nvals : 1, 1);
  if (!defined)
    return 1;
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    if (v->id != i)
      errs += problem(g, NULL, "value ids are not dense");
    if (v->role != V_TEMP)
      defined[i] = 1;
    if (v->role == V_CONST && !v->data)
      errs += problem(g, NULL, "constant without data");
  }
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    int want = ir_ops[n->op].nin;
    if (want >= 0 && n->nin != want)
      errs += problem(g, n, "wrong number of inputs");
    for (int j = 0; j < n->nin; j++)
      if (!n->in[j] || n->in[j]->id >= g->nvals || g->vals[n->in[j]->id] != n->in[j] ||
          !defined[n->in[j]->id])
        errs += problem(g, n, "input used before it is defined (not SSA order)");
    for (int j = 0; j < n->nout; j++) {
      Value *o = n->out[j];
      if (o->def != n || o->def_out != j || o->role != V_TEMP)
        errs += problem(g, n, "output does not point back to its node");
      if (defined[o->id])
        errs += problem(g, n, "value defined twice");
      defined[o->id] = 1;
    }
    if (ir_type_known(&n->out[0]->type))
      errs += check_types(g, n);
    if (n->body)
      errs += ir_verify(n->body);     /* a scan's step graph keeps the same invariants */
  }
  for (int i = 0; i < g->noutputs; i++)
    if (!defined[g->outputs[i]->id] || !g->outputs[i]->is_output)
      errs += problem(g, NULL, "graph output is not defined");
  free(defined);
  return errs;
}

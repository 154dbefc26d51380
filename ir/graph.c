/* Building graphs. Builders only record and infer types: a node's outputs
 * get their types from the op's shape rule as soon as it is built, so a
 * mistake is reported at the layer that made it. All memory comes from the
 * graph's arena. */
#include "ir/ir.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Appends p to a growable array of pointers kept in the arena. */
static void push(RtArena *a, void ***arr, int *n, int *cap, void *p) {
  if (*n == *cap) {
    int nc = *cap ? 2 * *cap : 16;
    void **na = rt_arena_alloc(a, nc * sizeof *na);
    if (*n)
      memcpy(na, *arr, *n * sizeof *na);
    *arr = na;
    *cap = nc;
  }
  (*arr)[(*n)++] = p;
}
#define PUSH(g, field, p) \
  push((g)->arena, (void ***)&(g)->field, &(g)->n##field, &(g)->cap##field, (p))

Graph *ir_graph_new(const char *name, Diags *diags) {
  RtArena *a = rt_arena_new();
  if (!a)
    return NULL;
  Graph *g = rt_arena_alloc(a, sizeof *g);
  g->arena = a;
  g->name = rt_arena_strdup(a, name ? name : "model");
  g->diags = diags;
  g->batch_var = -1;
  return g;
}

void ir_graph_free(Graph *g) {
  if (!g)
    return;
  for (int i = 0; i < g->nbodies; i++)
    ir_graph_free(g->bodies[i]);
  rt_arena_free(g->arena);
}

/* A body belongs to the graph it was made for (ir/scan.c). */
void ir_graph_adopt(Graph *g, Graph *body) { PUSH(g, bodies, body); }

int ir_size_var(Graph *g, const char *name) {
  for (int i = 0; i < g->nsvars; i++)
    if (!strcmp(g->svars[i], name))
      return i;
  if (g->nsvars == g->capsvars) {
    int nc = g->capsvars ? 2 * g->capsvars : 8;
    const char **nn = rt_arena_alloc(g->arena, nc * sizeof *nn);
    int64_t *nv = rt_arena_alloc(g->arena, nc * sizeof *nv);
    for (int i = 0; i < g->nsvars; i++) {
      nn[i] = g->svars[i];
      nv[i] = g->svals[i];
    }
    g->svars = nn;
    g->svals = nv;
    g->capsvars = nc;
  }
  g->svars[g->nsvars] = rt_arena_strdup(g->arena, name);
  g->svals[g->nsvars] = -1;
  return g->nsvars++;
}

static Value *new_value(Graph *g, Type t, Role role, const char *name, SrcLoc loc) {
  Value *v = rt_arena_alloc(g->arena, sizeof *v);
  v->id = g->nvals;
  v->type = t;
  v->role = role;
  v->name = name ? rt_arena_strdup(g->arena, name) : NULL;
  v->loc = loc;
  v->region = -1;
  PUSH(g, vals, v);
  return v;
}

Value *ir_input(Graph *g, const char *name, Type t, SrcLoc loc) {
  Value *v = new_value(g, t, V_INPUT, name, loc);
  PUSH(g, inputs, v);
  return v;
}

Value *ir_param(Graph *g, const char *name, Type t, Init init, SrcLoc loc) {
  Value *v = new_value(g, t, V_PARAM, name, loc);
  v->init = init;
  PUSH(g, params, v);
  return v;
}

Value *ir_state(Graph *g, const char *name, Type t, Init init, SrcLoc loc) {
  Value *v = new_value(g, t, V_STATE, name, loc);
  v->init = init;
  PUSH(g, params, v);
  return v;
}

Value *ir_const(Graph *g, Type t, const void *data) {
  Value *v = new_value(g, t, V_CONST, NULL, srcloc_none());
  int64_t bytes = ir_bytes_max(g, &t);
  if (bytes >= 0) {
    v->data = rt_arena_alloc(g->arena, bytes ? bytes : 1);
    memcpy(v->data, data, bytes);
  }
  return v;
}

Value *ir_scalar(Graph *g, RtDType dt, double x) {
  union { float f; double d; int32_t i; int64_t l; uint8_t b; } u = {0};
  switch (dt) {
  case RT_F32: u.f = (float)x; break;
  case RT_F64: u.d = x; break;
  case RT_I32: u.i = (int32_t)x; break;
  case RT_I64: u.l = (int64_t)x; break;
  default: u.b = (uint8_t)x; break;
  }
  return ir_const(g, ir_type(dt, 0, NULL), &u);
}

void ir_output(Graph *g, Value *v, const char *name) {
  v->is_output = true;
  if (name && (!v->name || v->role == V_TEMP))
    v->name = rt_arena_strdup(g->arena, name);
  PUSH(g, outputs, v);
}

Value *ir_find_param(const Graph *g, const char *name) {
  for (int i = 0; i < g->nparams; i++)
    if (!strcmp(g->params[i]->name, name))
      return g->params[i];
  return NULL;
}

Attr ir_attr(void) {
  Attr a = {0};
  a.k[0] = a.k[1] = 1;
  a.stride[0] = a.stride[1] = 1;
  a.dil[0] = a.dil[1] = 1;
  a.groups = 1;
  a.eps = 1e-5;
  for (int i = 0; i < IR_MAX_RANK; i++) {
    a.perm[i] = i;
    a.step[i] = 1;
  }
  return a;
}

Node *ir_node_body(Graph *g, Op op, Value **in, int nin, int nout, Graph *body,
                   const Attr *attr, SrcLoc loc) {
  Node *n = rt_arena_alloc(g->arena, sizeof *n);
  n->id = g->nnodes;
  n->op = op;
  n->nin = nin;
  n->in = rt_arena_alloc(g->arena, (nin ? nin : 1) * sizeof *n->in);
  memcpy(n->in, in, nin * sizeof *in);
  n->nout = nout;
  n->out = rt_arena_alloc(g->arena, (nout ? nout : 1) * sizeof *n->out);
  n->attr = attr ? *attr : ir_attr();
  n->loc = loc;
  n->group = -1;
  n->body = body;
  for (int i = 0; i < n->nout; i++) {
    n->out[i] = new_value(g, ir_type_unknown(), V_TEMP, NULL, loc);
    n->out[i]->def = n;
    n->out[i]->def_out = i;
  }
  PUSH(g, nodes, n);
  ir_infer(g, n);
  return n;
}

Node *ir_node(Graph *g, Op op, Value **in, int nin, const Attr *attr, SrcLoc loc) {
  return ir_node_body(g, op, in, nin, 1, NULL, attr, loc);
}

Value *ir_node_add_output(Graph *g, Node *n) {
  Value **out = rt_arena_alloc(g->arena, (n->nout + 1) * sizeof *out);
  memcpy(out, n->out, n->nout * sizeof *out);
  Value *v = new_value(g, ir_type_unknown(), V_TEMP, NULL, n->loc);
  v->def = n;
  v->def_out = n->nout;
  out[n->nout++] = v;
  n->out = out;
  ir_infer(g, n);
  return v;
}

Value *ir_op(Graph *g, Op op, Value **in, int nin, const Attr *attr, SrcLoc loc) {
  return ir_node(g, op, in, nin, attr, loc)->out[0];
}

Value *ir_op1(Graph *g, Op op, Value *a, SrcLoc loc) {
  return ir_op(g, op, &a, 1, NULL, loc);
}

Value *ir_op2(Graph *g, Op op, Value *a, Value *b, SrcLoc loc) {
  Value *in[2] = {a, b};
  return ir_op(g, op, in, 2, NULL, loc);
}

/* Element count with every size bound and the batch at its maximum. */
int64_t ir_numel_max(const Graph *g, const Type *t) {
  if (!ir_type_known(t))
    return -1;
  int64_t vals[256], n = 1;
  for (int i = 0; i < g->nsvars && i < 256; i++)
    vals[i] = i == g->batch_var ? g->max_batch : g->svals[i];
  for (int i = 0; i < t->rank; i++) {
    int64_t d;
    if (!sz_eval(t->dim[i], vals, &d) || d < 0 || __builtin_mul_overflow(n, d, &n))
      return -1;
  }
  return n;
}

int64_t ir_bytes_max(const Graph *g, const Type *t) {
  int64_t n = ir_numel_max(g, t), b;
  if (n < 0 || __builtin_mul_overflow(n, (int64_t)rt_dtype_size(t->dt), &b))
    return -1;
  return b;
}

void ir_count_uses(Graph *g) {
  for (int i = 0; i < g->nvals; i++)
    g->vals[i]->nuse = 0;
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++)
      g->nodes[i]->in[j]->nuse++;
  for (int i = 0; i < g->noutputs; i++)
    g->outputs[i]->nuse++;
}

/* ---- graph surgery: what a rewriting pass needs ---------------------------- */

/* Values the graph keeps whoever uses them: its outputs and loss, values
 * that update a parameter or state (and what they update), and the
 * gradients autodiff handed to wanted values. */
static void mark_roots(const Graph *g, bool *live) {
  for (int i = 0; i < g->noutputs; i++)
    live[g->outputs[i]->id] = true;
  if (g->loss)
    live[g->loss->id] = true;
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_INPUT)
      live[i] = true;
    if (v->updates) {
      live[i] = true;
      live[v->updates->id] = true;
    }
    if (v->grad && (v->role != V_TEMP || v->wrt))
      live[v->grad->id] = true;
  }
}

void ir_replace_uses(Graph *g, Value *from, Value *to) {
  assert(!from->updates && from != to);
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++)
      if (g->nodes[i]->in[j] == from)
        g->nodes[i]->in[j] = to;
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i] == from) {
      g->outputs[i] = to;
      if (to->role == V_TEMP && !to->is_output)
        to->name = from->name;
      to->is_output = true;
      from->is_output = false;
    }
  for (int i = 0; i < g->nvals; i++)
    if (g->vals[i]->grad == from)
      g->vals[i]->grad = to;
  if (g->loss == from)
    g->loss = to;
}

/* Keeps the values with keep[id] set, in order, and renumbers them. */
static void compact_values(Graph *g, const bool *keep) {
  int k = 0;
  for (int i = 0; i < g->nvals; i++)
    if (keep[i]) {
      g->vals[k] = g->vals[i];
      g->vals[k]->id = k;
      k++;
    }
  g->nvals = k;
}

int ir_remove_dead(Graph *g, bool drop_params) {
  int nvals = g->nvals;
  bool *live = calloc(nvals ? nvals : 1, sizeof *live);
  bool *keep = calloc(nvals ? nvals : 1, sizeof *keep);
  if (!live || !keep) {        /* nothing removed is always correct */
    free(live);
    free(keep);
    return 0;
  }
  mark_roots(g, live);
  int k = 0, removed = 0;
  for (int i = g->nnodes - 1; i >= 0; i--) {   /* users come after their inputs */
    Node *n = g->nodes[i];
    bool used = false;
    for (int j = 0; j < n->nout; j++)
      used |= live[n->out[j]->id];
    if (!used) {
      g->nodes[i] = NULL;
      removed++;
      continue;
    }
    for (int j = 0; j < n->nin; j++)
      live[n->in[j]->id] = true;
    for (int j = 0; j < n->nout; j++)
      keep[n->out[j]->id] = true;
  }
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]) {
      g->nodes[k] = g->nodes[i];
      g->nodes[k]->id = k;
      k++;
    }
  g->nnodes = k;
  for (int i = 0; i < nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_CONST)
      keep[i] = live[i];
    else if (v->role == V_PARAM || v->role == V_STATE)
      keep[i] = live[i] || !drop_params;
    else if (v->role == V_INPUT)
      keep[i] = true;
  }
  k = 0;
  for (int i = 0; i < g->nparams; i++)
    if (keep[g->params[i]->id])
      g->params[k++] = g->params[i];
  g->nparams = k;
  compact_values(g, keep);
  free(live);
  free(keep);
  return removed;
}

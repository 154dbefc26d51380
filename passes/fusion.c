/* Fusion: which nodes share a kernel.
 *
 * Groups start as single nodes and merge along producer -> consumer edges,
 * visited in node order (the elementwise edges first: see merge_all),
 * whenever the merged set is still one kernel:
 *
 *   - an elementwise group: nodes lowered by expression (ops.def's EXPR)
 *     with one output shape, where every value passed inside the group is
 *     read at the index it was computed at (no broadcast, no permutation:
 *     a per-channel value computed by the group cannot feed a broadcast
 *     without being recomputed, so it stays a kernel of its own);
 *   - an epilogue group: one matmul or conv2d and such EXPR nodes of its
 *     output's type and dtype, applied to each output vector while the GEMM
 *     tile is in registers. Their other operands must be read at b*sb +
 *     row*sr + col*sc in the GEMM's view of the output (matmul: batch axes,
 *     M, N; conv2d: image, channel, OH*OW; conv2d_nchwc: image, channel
 *     block, OH*OW vectors of b lanes), with sc 0 (per row: a conv's
 *     per-channel bias) or 1 (per column: a dense bias; or the whole
 *     tensor: a residual);
 *   - a reduction group: a reduction (sum, mean, max, min) and an
 *     elementwise group of its input's shape that computes its input, each
 *     element in the reduction's loop as it is read (batchnorm's variance,
 *     a loss's products); nothing in the group reads the reduction's result.
 *
 * and the groups stay schedulable: no path leaves a group and comes back,
 * even through other groups, so each runs at one place in the schedule. Dependencies include the writes in
 * place: a value that updates a parameter is written over it, so every
 * reader of the parameter runs first. A member read outside its group (or
 * an output, the loss, an update, a gradient) is still stored; the others
 * live only in registers and get no memory (pass_fused_internal, for
 * memplan). A group has at most PASS_FUSE_MAX_OPERANDS loaded and stored
 * tensors and PASS_FUSE_MAX_NODES members.
 *
 * Last, the nodes are reordered so that each group's members are adjacent:
 * a topological sort of the groups that keeps the original order wherever
 * it can. n->group numbers the groups of two or more nodes; others stay -1. */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

typedef enum { K_EXPR, K_REDUCE, K_ROW, K_GEMM, K_CONV, K_POOL, K_VIEW, K_CONV_BWD, K_POOL_BWD,
               K_DROPOUT, K_MOVE,
               K_SCAN, K_GATHER, K_BLOCKED, K_PACK } Kind;

static const Kind kind_of[OP_COUNT] = {
#define OP(name, nin, cat, attrs, shape, grad, lower) K_##lower,
#include "ir/ops.def"
#undef OP
};

/* Edges in compressed rows: the items of row i are item[start[i] .. start[i+1]). */
typedef struct Rows {
  int *start, *item;
} Rows;

typedef struct Fuse {
  Graph *g;
  int n;                  /* nodes */
  int *at;                /* node id -> index in g->nodes */
  Rows pred, succ;        /* by node index: data and write-after-read dependencies */
  Rows users;             /* by value id: the indices of the nodes reading it */
  bool *kept;             /* by value id: stored wherever its readers are */
  int *grp;               /* by node index: its group, named by a member's index */
  int *first, *last;      /* by group: its first and last member */
  int *next;              /* by node index: the next member of its group, or -1 */
  bool *in;               /* by node index: in the set under test */
  bool *seen;             /* by group: reached from the set under test */
  int *cand, *stack;      /* the set under test (sorted); the search's stack */
} Fuse;

enum { AX_UNIT, AX_FULL, AX_BCAST };

static bool is_one(Size s) {
  int64_t c;
  return sz_is_const(s, &c) && c == 1;
}

/* How node n reads input k along output axis i: all of it, one element
 * (broadcast), or the axis has one element anyway. Numpy broadcasting,
 * aligned right; batchnorm's statistics and affine parameters vary along
 * its channel axis only. Not for transpose and onehot. */
static int axis_kind(const Node *n, int k, int i) {
  const Type *o = &n->out[0]->type, *x = &n->in[k]->type;
  if (is_one(o->dim[i]))
    return AX_UNIT;
  if (n->op == OP_batchnorm && k > 0)
    return i == n->attr.axis ? AX_FULL : AX_BCAST;
  int xi = i - (o->rank - x->rank);
  return xi < 0 || is_one(x->dim[xi]) ? AX_BCAST : AX_FULL;
}

/* Whether node n reads input k at its own output index. */
static bool same_index(const Node *n, int k) {
  if (n->op == OP_transpose || n->op == OP_onehot)
    return false;
  for (int i = 0; i < n->out[0]->type.rank; i++)
    if (axis_kind(n, k, i) == AX_BCAST)
      return false;
  return true;
}

/* Axes lo .. hi of the output collapse into one stride for input k: their
 * non-unit axes are all read whole or all broadcast. */
static bool uniform(const Node *n, int k, int lo, int hi) {
  int seen = AX_UNIT;
  for (int i = lo; i < hi; i++) {
    int a = axis_kind(n, k, i);
    if (a != AX_UNIT && seen != AX_UNIT && a != seen)
      return false;
    if (a != AX_UNIT)
      seen = a;
  }
  return true;
}

/* Input k of member n of head's epilogue group is addressable as b*sb +
 * row*sr + col*sc (see the head comment). */
static bool epilogue_reads(const Node *head, const Node *n, int k) {
  int r = head->out[0]->type.rank;
  if (n->in[k]->type.dt != head->out[0]->type.dt)
    return false;
  if (head->op == OP_conv2d || head->op == OP_conv2d_nchwc || head->op == OP_conv2d_winograd)
    return uniform(n, k, 2, 4);   /* nchwc: and any lane axis 4 (cg_epi_plan_lanes) */
  return uniform(n, k, 0, r - 2) && uniform(n, k, r - 1, r);
}

static bool is_head(const Node *n) {
  return kind_of[n->op] == K_GEMM || (kind_of[n->op] == K_CONV && n->op == OP_conv2d) ||
         n->op == OP_conv2d_nchwc || n->op == OP_conv2d_winograd;
}

/* ---- the graph's dependencies ----------------------------------------------- */

static Value *storage_root(Value *v) {
  while (v->role == V_TEMP && v->def->op == OP_reshape)
    v = v->def->in[0];
  return v;
}

static Node *def_node(const Value *v) { return v->role == V_TEMP ? v->def : NULL; }

/* Rows from (row, item) pairs, counted first then filled. */
static bool rows_build(Rows *r, int nrows, const int *row, const int *item, int npairs) {
  r->start = calloc((size_t)nrows + 1, sizeof(int));
  r->item = malloc(sizeof(int) * (size_t)(npairs ? npairs : 1));
  if (!r->start || !r->item)
    return false;
  for (int e = 0; e < npairs; e++)
    r->start[row[e] + 1]++;
  for (int i = 0; i < nrows; i++)
    r->start[i + 1] += r->start[i];
  int *fill = malloc(sizeof(int) * (size_t)(nrows ? nrows : 1));
  if (!fill)
    return false;
  memcpy(fill, r->start, sizeof(int) * (size_t)nrows);
  for (int e = 0; e < npairs; e++)
    r->item[fill[row[e]]++] = item[e];
  free(fill);
  return true;
}

static void rows_free(Rows *r) {
  free(r->start);
  free(r->item);
}

/* The node (index) that writes in place over each storage root, or -1. */
static int *in_place_writers(Fuse *F) {
  Graph *g = F->g;
  int *w = malloc(sizeof(int) * (size_t)(g->nvals ? g->nvals : 1));
  if (!w)
    return NULL;
  for (int i = 0; i < g->nvals; i++)
    w[i] = -1;
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    if (v->updates && v->role == V_TEMP)
      w[storage_root(v->updates)->id] = F->at[v->def->id];
  }
  return w;
}

/* pred/succ: p -> c when c reads what p defines, and r -> w when w writes
 * in place over storage that r reads (and r comes first). users: by value. */
static bool build_edges(Fuse *F) {
  Graph *g = F->g;
  int cap = 0;
  for (int i = 0; i < F->n; i++)
    cap += 2 * g->nodes[i]->nin;
  int *from = malloc(sizeof(int) * (size_t)(cap + 1)), *to = malloc(sizeof(int) * (size_t)(cap + 1));
  int *uval = malloc(sizeof(int) * (size_t)(cap + 1)), *unode = malloc(sizeof(int) * (size_t)(cap + 1));
  int *writer = in_place_writers(F);
  int ne = 0, nu = 0;
  bool ok = from && to && uval && unode && writer;
  for (int i = 0; ok && i < F->n; i++) {
    Node *n = g->nodes[i];
    for (int j = 0; j < n->nin; j++) {
      Value *v = n->in[j];
      uval[nu] = v->id;
      unode[nu++] = i;
      if (def_node(v)) {
        from[ne] = F->at[v->def->id];
        to[ne++] = i;
      }
      int w = writer[storage_root(v)->id];
      if (w > i) {
        from[ne] = i;
        to[ne++] = w;
      }
    }
  }
  ok = ok && rows_build(&F->succ, F->n, from, to, ne) && rows_build(&F->pred, F->n, to, from, ne) &&
       rows_build(&F->users, g->nvals, uval, unode, nu);
  free(from);
  free(to);
  free(uval);
  free(unode);
  free(writer);
  return ok;
}

/* Values stored whoever reads them: the roots ir_remove_dead keeps. */
static void mark_kept(const Graph *g, bool *kept) {
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    kept[i] = kept[i] || v->is_output || v->updates || v == g->loss;
    if (v->grad)
      kept[v->grad->id] = true;
  }
}

/* ---- the test of a candidate group ------------------------------------------- */

static bool inside(const Fuse *F, const Value *v) {
  const Node *d = def_node(v);
  return d && F->in[F->at[d->id]];
}

/* Puts the group of node x on the search's stack, once; F->cand past the
 * set's members lists the groups seen, for the reset. */
static void reach(Fuse *F, int x, int *top, int *listed) {
  if (F->seen[F->grp[x]])
    return;
  F->seen[F->grp[x]] = true;
  F->stack[(*top)++] = F->cand[(*listed)++] = F->grp[x];
}

/* Whether the groups stay schedulable with the set as one group: no path
 * leaves the set and comes back, where entering a group at one member lets
 * the path leave from any of its members (they run together). A search
 * over the groups reached from the set. */
static bool schedulable(Fuse *F, const int *m, int nm) {
  int top = 0, listed = nm;
  bool ok = true;
  for (int a = 0; a < nm; a++)
    for (int e = F->succ.start[m[a]]; e < F->succ.start[m[a] + 1]; e++)
      if (!F->in[F->succ.item[e]])
        reach(F, F->succ.item[e], &top, &listed);
  while (top > 0 && ok)
    for (int x = F->first[F->stack[--top]]; x >= 0 && ok; x = F->next[x])
      for (int e = F->succ.start[x]; e < F->succ.start[x + 1] && ok; e++) {
        ok = !F->in[F->succ.item[e]];
        if (ok)
          reach(F, F->succ.item[e], &top, &listed);
      }
  for (int i = nm; i < listed; i++)
    F->seen[F->cand[i]] = false;
  return ok;
}

/* Whether input j of n is a load already counted: the same value at the
 * output's index. */
static bool counted(const Graph *g, const int *m, int a, int j) {
  const Node *n = g->nodes[m[a]];
  if (!same_index(n, j))
    return false;
  for (int b = 0; b <= a; b++) {
    const Node *o = g->nodes[m[b]];
    for (int k = 0; k < (b < a ? o->nin : j); k++)
      if (o->in[k] == n->in[j] && same_index(o, k) && !is_head(o))
        return true;
  }
  return false;
}

/* Tensors the group loads: values it reads but does not compute. */
static int count_loads(const Fuse *F, const int *m, int nm) {
  int loads = 0;
  for (int a = 0; a < nm; a++) {
    const Node *n = F->g->nodes[m[a]];
    if (is_head(n))
      continue;                       /* the GEMM reads its own operands */
    for (int j = 0; j < n->nin; j++)
      loads += !inside(F, n->in[j]) && !counted(F->g, m, a, j);
  }
  return loads;
}

/* Members whose value is needed outside the group, so stored. */
static int count_stores(const Fuse *F, const int *m, int nm) {
  int stores = 0;
  for (int a = 0; a < nm; a++) {
    const Value *v = F->g->nodes[m[a]]->out[0];
    bool out = F->kept[v->id];
    for (int e = F->users.start[v->id]; e < F->users.start[v->id + 1] && !out; e++)
      out = !F->in[F->users.item[e]];
    stores += out;
  }
  return stores;
}

/* Every value passed inside the group is read at its own index; and no
 * member reads, at another index, a tensor that a member writes over in
 * place (one loop would race the write). */
static bool reads_ok(const Fuse *F, const int *m, int nm, const Node *n) {
  for (int j = 0; j < n->nin; j++) {
    if (same_index(n, j))
      continue;
    if (inside(F, n->in[j]))
      return false;
    for (int a = 0; a < nm; a++) {
      Value *u = F->g->nodes[m[a]]->out[0]->updates;
      if (u && storage_root(u) == storage_root(n->in[j]))
        return false;
    }
  }
  return true;
}

/* The epilogue rules for member n of head's group. onehot and iota compute
 * from the output's flat index, which an epilogue's tile does not have. */
static bool epilogue_member_ok(const Fuse *F, const Node *head, const Node *n) {
  if (n == head)
    return true;
  if (n->op == OP_transpose || n->op == OP_onehot || n->op == OP_iota || n->out[0]->updates ||
      n->out[0]->type.dt != head->out[0]->type.dt)
    return false;
  for (int j = 0; j < n->nin; j++)
    if (!inside(F, n->in[j]) && !epilogue_reads(head, n, j))
      return false;
  return true;
}

static bool epilogue_ok(const Fuse *F, const int *m, int nm, const Node *head) {
  RtDType dt = head->out[0]->type.dt;
  if (dt != RT_F32 && dt != RT_F64)
    return false;
  for (int j = 0; j < head->nin; j++)
    if (inside(F, head->in[j]))
      return false;
  for (int a = 0; a < nm; a++)
    if (!epilogue_member_ok(F, head, F->g->nodes[m[a]]))
      return false;
  return true;
}

/* A reduction group: the reduction's input computed in its loop, element
 * by element, and nothing in the group reads what the reduction makes. */
static bool reduction_ok(const Fuse *F, const int *m, int nm, const Node *tail) {
  if (!inside(F, tail->in[0]))
    return false;
  for (int a = 0; a < nm; a++) {
    const Node *n = F->g->nodes[m[a]];
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] == tail->out[0])
        return false;
  }
  return true;
}

/* The shape every member but a reduction computes: a reduction's input. */
static const Type *space_of(const Graph *g, const int *m, int nm, const Node *tail) {
  return tail ? &tail->in[0]->type : &g->nodes[m[nm - 1]]->out[0]->type;
}

static bool group_ok(Fuse *F, const int *m, int nm) {
  const Graph *g = F->g;
  const Node *head = NULL, *tail = NULL;
  if (nm > PASS_FUSE_MAX_NODES)
    return false;
  for (int a = 0; a < nm; a++) {
    const Node *n = g->nodes[m[a]];
    if (n->nout != 1 || ((is_head(n) || kind_of[n->op] == K_REDUCE) && (head || tail)))
      return false;
    if (is_head(n))
      head = n;
    else if (kind_of[n->op] == K_REDUCE)
      tail = n;
    else if (kind_of[n->op] != K_EXPR || !reads_ok(F, m, nm, n))
      return false;
  }
  for (int a = 0; a < nm; a++)
    if (g->nodes[m[a]] != tail && !ir_dims_eq(&g->nodes[m[a]]->out[0]->type, space_of(g, m, nm, tail)))
      return false;
  if ((head && !epilogue_ok(F, m, nm, head)) || (tail && !reduction_ok(F, m, nm, tail)))
    return false;
  return count_loads(F, m, nm) + count_stores(F, m, nm) <= PASS_FUSE_MAX_OPERANDS &&
         schedulable(F, m, nm);
}

/* ---- merging ------------------------------------------------------------------ */

/* The members of groups a and b into F->cand, sorted; flags them in F->in. */
static int gather(Fuse *F, int a, int b) {
  int nm = 0, x = F->first[a], y = F->first[b];
  while (x >= 0 || y >= 0) {
    int take = y < 0 || (x >= 0 && x < y) ? x : y;
    if (take == x)
      x = F->next[x];
    else
      y = F->next[y];
    F->cand[nm++] = take;
    F->in[take] = true;
  }
  return nm;
}

static bool try_merge(Fuse *F, int a, int b) {
  if (a == b)
    return false;
  int nm = gather(F, a, b);
  bool ok = group_ok(F, F->cand, nm);
  for (int i = 0; i < nm; i++) {
    F->in[F->cand[i]] = false;
    if (ok) {
      F->grp[F->cand[i]] = a;
      F->next[F->cand[i]] = i + 1 < nm ? F->cand[i + 1] : -1;
    }
  }
  if (ok) {
    F->first[a] = F->cand[0];
    F->last[a] = F->cand[nm - 1];
  }
  return ok;
}

/* The two sweeps of merging: elementwise edges first, so that chains form
 * whole; then a contraction with the elementwise group after it (its
 * epilogue) and a reduction with the one before it, each taken whole or
 * not at all. Taking EXPR nodes one by one into an epilogue would pull in
 * ones whose group lies far ahead (the optimizer's scaled gradients) and
 * store their values until then. */
enum { SWEEP_EXPR, SWEEP_TEMPLATE };

/* Whether consumer c reads input j at the index where its producer p made
 * it, as the sweep merges: an EXPR node at its own index, or a reduction
 * reading its input. */
static bool fusible_edge(const Node *p, const Node *c, int j, int sweep) {
  bool c_expr = kind_of[c->op] == K_EXPR && same_index(c, j), p_expr = kind_of[p->op] == K_EXPR;
  if (sweep == SWEEP_EXPR)
    return c_expr && p_expr;
  return (c_expr && is_head(p)) || (kind_of[c->op] == K_REDUCE && p_expr);
}

/* Every fusible edge of the sweep, in node order. */
static int merge_all(Fuse *F, int sweep) {
  int merged = 0;
  for (int i = 0; i < F->n; i++) {
    Node *c = F->g->nodes[i];
    for (int j = 0; j < c->nin; j++) {
      Node *p = def_node(c->in[j]);
      if (!p || !fusible_edge(p, c, j, sweep))
        continue;
      merged += try_merge(F, F->grp[F->at[p->id]], F->grp[i]);
    }
  }
  return merged;
}

/* ---- the schedule ----------------------------------------------------------------- */

/* Kahn's algorithm over the groups: of the ready groups, the one whose
 * first member comes first goes next, its members in their order. */
static bool reorder(Fuse *F) {
  int n = F->n, placed = 0;
  int *need = calloc((size_t)n + 1, sizeof(int)), *order = malloc(sizeof(int) * ((size_t)n + 1));
  bool *done = calloc((size_t)n + 1, sizeof(bool));
  Node **nodes = malloc(sizeof(Node *) * ((size_t)n + 1));
  bool ok = need && order && done && nodes;
  for (int i = 0; ok && i < n; i++)
    for (int e = F->pred.start[i]; e < F->pred.start[i + 1]; e++)
      need[F->grp[i]] += F->grp[F->pred.item[e]] != F->grp[i];
  while (ok && placed < n) {
    int best = -1;
    for (int i = 0; i < n && best < 0; i++)
      if (!done[i] && F->first[F->grp[i]] == i && need[F->grp[i]] == 0)
        best = F->grp[i];
    ok = best >= 0;                   /* no ready group: a cycle, which merging rules out */
    for (int x = ok ? F->first[best] : -1; x >= 0; x = F->next[x]) {
      done[x] = true;
      order[placed++] = x;
      for (int e = F->succ.start[x]; e < F->succ.start[x + 1]; e++)
        need[F->grp[F->succ.item[e]]] -= F->grp[F->succ.item[e]] != best;
    }
  }
  for (int i = 0; i < n && ok; i++)
    nodes[i] = F->g->nodes[order[i]];
  if (ok)
    memcpy(F->g->nodes, nodes, sizeof(Node *) * (size_t)n);
  free(need), free(order), free(done), free(nodes);
  return ok;
}

/* Numbers the groups of two or more members, in schedule order. */
static void number_groups(Fuse *F) {
  int ngroups = 0, prev = -1;
  for (int i = 0; i < F->n; i++) {
    Node *n = F->g->nodes[i];
    int gi = F->grp[F->at[n->id]];
    if (F->first[gi] == F->last[gi]) {
      n->group = -1;
    } else {
      ngroups += gi != prev;
      n->group = ngroups - 1;
    }
    prev = gi;
  }
}

static void fuse_free(Fuse *F) {
  rows_free(&F->pred);
  rows_free(&F->succ);
  rows_free(&F->users);
  free(F->at), free(F->kept), free(F->grp), free(F->first), free(F->last), free(F->next);
  free(F->in), free(F->seen), free(F->cand), free(F->stack);
}

static bool fuse_init(Fuse *F, Graph *g) {
  int maxid = 0;
  for (int i = 0; i < g->nnodes; i++)
    maxid = g->nodes[i]->id > maxid ? g->nodes[i]->id : maxid;
  size_t n = (size_t)g->nnodes + 1, nv = (size_t)g->nvals + 1;
  *F = (Fuse){.g = g, .n = g->nnodes};
  F->at = malloc(sizeof(int) * ((size_t)maxid + 1));
  F->kept = calloc(nv, sizeof(bool));
  F->grp = malloc(sizeof(int) * n);
  F->first = malloc(sizeof(int) * n);
  F->last = malloc(sizeof(int) * n);
  F->next = malloc(sizeof(int) * n);
  F->in = calloc(n, sizeof(bool));
  F->seen = calloc(n, sizeof(bool));
  F->cand = malloc(sizeof(int) * 2 * n);
  F->stack = malloc(sizeof(int) * n);
  if (!F->at || !F->kept || !F->grp || !F->first || !F->last || !F->next || !F->in || !F->seen ||
      !F->cand || !F->stack)
    return false;
  for (int i = 0; i < g->nnodes; i++) {
    F->at[g->nodes[i]->id] = i;
    F->grp[i] = F->first[i] = F->last[i] = i;
    F->next[i] = -1;
  }
  mark_kept(g, F->kept);
  return build_edges(F);
}

bool pass_fusion(Graph *g, PassCtx *cx, PassStats *st) {
  (void)cx, (void)st;
  Fuse F;
  bool ok = fuse_init(&F, g);
  bool merged = ok && merge_all(&F, SWEEP_EXPR) + merge_all(&F, SWEEP_TEMPLATE) > 0;
  if (!merged || !reorder(&F)) {
    for (int i = 0; i < g->nnodes; i++)
      g->nodes[i]->group = -1;
    fuse_free(&F);
    return false;
  }
  number_groups(&F);
  fuse_free(&F);
  return true;
}

/* ---- for memory planning ------------------------------------------------------------ */

bool *pass_fused_internal(const Graph *g) {
  bool *internal = calloc((size_t)g->nvals + 1, sizeof(bool));
  bool *outside = calloc((size_t)g->nvals + 1, sizeof(bool));
  if (!internal || !outside) {
    free(internal);
    free(outside);
    return NULL;
  }
  mark_kept(g, outside);
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    for (int j = 0; j < n->nin; j++) {
      const Node *d = def_node(n->in[j]);
      if (d && (n->group < 0 || d->group != n->group))
        outside[n->in[j]->id] = true;
    }
  }
  for (int i = 0; i < g->nvals; i++) {
    const Node *d = def_node(g->vals[i]);
    internal[i] = d && d->group >= 0 && !outside[i];
  }
  free(outside);
  return internal;
}

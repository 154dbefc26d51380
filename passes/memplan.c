/* Memory planning: every value gets a region and an offset.
 *
 * Parameters and constants live in the weights region, state in the state
 * region, inputs and outputs in the io region, and all intermediates plus
 * each kernel's workspace share the scratch region: a value occupies its
 * bytes from the node that defines it to its last use, and first-fit over
 * those lifetimes lets dead values' bytes be reused. A reshape is a view of
 * its input (no bytes, no code); one that is an output is a view too when
 * its input can be made in the output's place, else a copy.
 * Offsets are 64-byte aligned and planned for the compiled maximum batch.
 * A fused group (Node.group, adjacent nodes) runs as one kernel: what any
 * member reads, and the workspace, stay live until its last member, and a
 * value that lives only inside its group (pass_fused_internal) gets no
 * place at all (region -1). */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

#define ALIGN(x) (((x) + 63) / 64 * 64)

typedef struct Block {
  int64_t off, size;
  int last;               /* last node index using it */
} Block;

typedef struct Plan {
  Block *live;
  int nlive;
  int64_t peak;
} Plan;

static Value *root(Value *v) {
  while (v->alias)
    v = v->alias;
  return v;
}

/* Lowest offset where `size` bytes fit between the live blocks. */
static int64_t first_fit(Plan *p, int64_t size) {
  int64_t off = 0;
  for (bool moved = true; moved;) {
    moved = false;
    for (int i = 0; i < p->nlive; i++) {
      Block *b = &p->live[i];
      if (off < b->off + b->size && b->off < off + size) {
        off = b->off + b->size;
        moved = true;
      }
    }
  }
  return off;
}

static int64_t place(Plan *p, int64_t size, int last) {
  int64_t off = first_fit(p, ALIGN(size));
  p->live[p->nlive++] = (Block){off, ALIGN(size), last};
  if (off + ALIGN(size) > p->peak)
    p->peak = off + ALIGN(size);
  return off;
}

static void expire(Plan *p, int now) {
  int k = 0;
  for (int i = 0; i < p->nlive; i++)
    if (p->live[i].last >= now)
      p->live[k++] = p->live[i];
  p->nlive = k;
}

/* A reshape's output shares its input's bytes, except when it is a graph
 * output: that has its own place in the io region, where the caller reads
 * it, and a temporary's scratch bytes are reused once it dies (but see
 * outputs_as_views). */
static void choose_views(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    Value *o = n->out[0];
    o->alias = NULL;
    if (n->op != OP_reshape || o->is_output)
      continue;
    o->alias = root(n->in[0]);
  }
}

/* The index of the last node of node i's fused group (i itself if none). */
static int group_end(const Graph *g, int i) {
  int grp = g->nodes[i]->group;
  while (grp >= 0 && i + 1 < g->nnodes && g->nodes[i + 1]->group == grp)
    i++;
  return i;
}

/* Last node index that reads each root value (outputs: forever); a read by
 * a fused group lasts until the group's end. */
static int *last_uses(Graph *g) {
  int *last = malloc(sizeof(int) * (size_t)(g->nvals > 0 ? g->nvals : 1));
  if (!last)
    return NULL;
  for (int i = 0; i < g->nvals; i++)
    last[i] = -1;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    for (int j = 0; j < n->nin; j++)
      last[root(n->in[j])->id] = group_end(g, i);
    for (int j = 0; j < n->nout; j++) {    /* a view keeps its root alive; a value */
      Value *r = root(n->out[j]);          /* lives while its kernel runs, even unread */
      if (last[r->id] < group_end(g, i))
        last[r->id] = group_end(g, i);
    }
  }
  return last;
}

/* An output that reshapes a temporary (a dense layer on a sequence ends so):
 * the temporary is made in the output's place and the output is its view,
 * so no kernel copies one into the other. A temporary with a place of its
 * own already (a gradient), or an output itself, keeps it. */
static void outputs_as_views(Graph *g) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    Value *o = n->out[0], *r = root(n->in[0]);
    if (n->op != OP_reshape || !o->is_output || o->alias || o->region != REGION_IO ||
        r->role != V_TEMP || r->region >= 0 || r->is_output || r->updates || r == g->loss)
      continue;
    r->region = REGION_IO;
    r->offset = o->offset;
    o->alias = r;
  }
}

/* A gradient the caller reads after the step: a place of its own in the
 * gradients region, after those placed before. */
static void place_grad(Graph *g, Value *gr) {
  if (gr && gr->role == V_TEMP && !gr->alias && gr->region < 0 && !gr->is_output) {
    gr->region = REGION_GRADS;
    gr->offset = g->region_bytes[REGION_GRADS];
    g->region_bytes[REGION_GRADS] += ALIGN(ir_bytes_max(g, &gr->type));
  }
}

/* Fixed places: weights, state, io, and the gradients of parameters, which
 * sit together in one contiguous region so that data-parallel training can
 * all-reduce them in one call. A value that updates a parameter or state
 * is written over it, in place. */
static void place_fixed(Graph *g) {
  int64_t *rb = g->region_bytes;
  for (int i = 0; i < g->nvals; i++)
    g->vals[i]->region = -1;
  for (int i = 0; i < g->nparams; i++)
    place_grad(g, g->params[i]->grad);
  for (int i = 0; i < g->nvals; i++)    /* then other values asked for (an input's) */
    if (g->vals[i]->wrt)
      place_grad(g, g->vals[i]->grad);
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    if (v->region >= 0)
      continue;
    int r = v->role == V_PARAM || v->role == V_CONST ? REGION_WEIGHTS
          : v->role == V_STATE                       ? REGION_STATE
          : v->role == V_INPUT || v->is_output       ? REGION_IO
                                                     : -1;
    if (r < 0 || v->alias)
      continue;
    v->region = r;
    v->offset = rb[r];
    rb[r] += ALIGN(ir_bytes_max(g, &v->type));
  }
  outputs_as_views(g);
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    if (v->updates && !v->alias) {
      v->region = root(v->updates)->region;
      v->offset = root(v->updates)->offset;
    }
  }
}

/* Whether each step of a scan's stack s is one run of bytes (the axes
 * before the scan's are all 1), in a body without scans of its own (their
 * bodies would need the slots of this one). */
static bool contiguous_steps(const Node *n, const Value *s) {
  for (int i = 0; i < n->attr.axis; i++)
    if (!sz_eq(s->type.dim[i], sz_const(1)))
      return false;
  for (int i = 0; i < n->body->nnodes; i++)
    if (n->body->nodes[i]->body)
      return false;
  return true;
}

/* A sequence or emitted stack with contiguous steps holds the body's value
 * itself, at the step (codegen/scan.c points slot REGION_COUNT + k at it):
 * the value the body computes, not an input it passes on; once, if it is
 * emitted twice. Its bytes in the workspace stay unused. */
static void step_in_place(Node *n) {
  Graph *b = n->body;
  int nseq = n->attr.nseq, nc = n->attr.ncarry;
  for (int j = 0; j < nseq; j++)
    if (contiguous_steps(n, n->in[j])) {
      b->inputs[j]->region = REGION_COUNT + j;
      b->inputs[j]->offset = 0;
    }
  for (int e = nc; e < b->noutputs; e++) {
    Value *r = root(b->outputs[e]);
    if (r->def && r->role == V_TEMP && r->region < REGION_COUNT && contiguous_steps(n, n->out[e])) {
      r->region = REGION_COUNT + nseq + e - nc;
      r->offset = 0;
    }
  }
}

/* A scan's body, planned on its own first, runs inside the scan's
 * workspace: its weights (constants), io and scratch regions laid end to
 * end from work_off in this graph's scratch, except the invariant inputs,
 * which are read where the enclosing graph keeps them. Views follow their
 * roots. (A scan inside a body is not relocated a second time.) */
static void place_body(Graph *g, Node *n) {
  Graph *b = n->body;
  int64_t base[REGION_COUNT] = {0};
  base[REGION_WEIGHTS] = n->work_off;
  base[REGION_IO] = base[REGION_WEIGHTS] + ALIGN(b->region_bytes[REGION_WEIGHTS]);
  base[REGION_SCRATCH] = base[REGION_IO] + ALIGN(b->region_bytes[REGION_IO]);
  for (int i = 0; i < b->nvals; i++) {
    Value *v = b->vals[i];
    if (v->region >= 0 && !v->alias) {
      v->offset += base[v->region];
      v->region = REGION_SCRATCH;
    }
  }
  for (int i = n->attr.nseq + n->attr.ncarry; i < n->nin; i++) {
    b->inputs[i]->region = root(n->in[i])->region;
    b->inputs[i]->offset = root(n->in[i])->offset;
  }
  step_in_place(n);
  for (int i = 0; i < b->nvals; i++)
    if (b->vals[i]->alias) {
      b->vals[i]->region = root(b->vals[i])->region;
      b->vals[i]->offset = root(b->vals[i])->offset;
    }
  for (int i = 0; i < b->nnodes; i++)
    b->nodes[i]->work_off += base[REGION_SCRATCH];
}

bool pass_memplan(Graph *g, PassCtx *cx, PassStats *st) {
  memset(g->region_bytes, 0, sizeof g->region_bytes);
  choose_views(g);
  place_fixed(g);
  int *last = last_uses(g);
  bool *internal = pass_fused_internal(g);
  Plan p = {.live = malloc(sizeof(Block) * ((size_t)g->nvals + (size_t)g->nnodes + 1))};
  if (!last || !p.live || !internal) {
    free(last);
    free(internal);
    free(p.live);
    return false;
  }
  int64_t total = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    expire(&p, i);
    for (int j = 0; j < n->nout; j++) {
      Value *v = n->out[j];
      if (v->alias || v->region >= 0 || internal[v->id])
        continue;                     /* a view, placed already, or in registers only */
      int64_t bytes = ir_bytes_max(g, &v->type);
      total += ALIGN(bytes);
      v->region = REGION_SCRATCH;
      v->offset = place(&p, bytes, last[v->id] < i ? i : last[v->id]);
    }
    n->work_bytes = cx->work_bytes ? cx->work_bytes(g, n, cx->threads) : 0;
    /* a kernel's workspace, once everything its nodes store has a place
     * (a big workspace first would push those past it) */
    for (int h = i; h >= 0 && group_end(g, i) == i && group_end(g, h) == i; h--)
      if (g->nodes[h]->work_bytes > 0) {
        total += ALIGN(g->nodes[h]->work_bytes);
        g->nodes[h]->work_off = place(&p, g->nodes[h]->work_bytes, i);
      }
  }
  for (int i = 0; i < g->nvals; i++)       /* views take their root's place */
    if (g->vals[i]->alias) {
      g->vals[i]->region = root(g->vals[i])->region;
      g->vals[i]->offset = root(g->vals[i])->offset;
    }
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->body)
      place_body(g, g->nodes[i]);
  g->region_bytes[REGION_SCRATCH] = p.peak;
  st->bytes_before = total;
  st->bytes_after = p.peak;
  free(last);
  free(internal);
  free(p.live);
  return true;
}

static const char *region_name(int r) {
  static const char *names[] = {"weights", "io", "scratch", "state", "grads"};
  return r >= 0 && r < REGION_COUNT ? names[r] : "-";
}

static int node_index(const Graph *g, const Node *n) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i] == n)
      return i;
  return -1;
}

/* The scratch bytes the plan saves, and in a training step what the
 * backward pass keeps alive: scratch values defined up to the node that
 * computes the loss and read after it. */
static void print_savings(Graph *g, FILE *out) {
  int64_t sum = 0, kept = 0;
  int *last = last_uses(g);
  int cut = g->loss && g->loss->def ? node_index(g, g->loss->def) : -1;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    sum += n->work_bytes > 0 ? ALIGN(n->work_bytes) : 0;
    for (int j = 0; j < n->nout; j++) {
      const Value *v = n->out[j];
      if (v->region != REGION_SCRATCH || v->alias)
        continue;
      sum += ALIGN(ir_bytes_max(g, &v->type));
      if (cut >= 0 && i <= cut && last && last[v->id] > cut)
        kept += ALIGN(ir_bytes_max(g, &v->type));
    }
  }
  int64_t peak = g->region_bytes[REGION_SCRATCH];
  fprintf(out, "  intermediates %lld bytes, each in its own buffer; planned peak %lld bytes "
          "(%.1f%% less)\n", (long long)sum, (long long)peak,
          sum > 0 ? 100.0 * (double)(sum - peak) / (double)sum : 0.0);
  if (cut >= 0)
    fprintf(out, "  kept for the backward pass %lld bytes\n", (long long)kept);
  free(last);
}

/* --emit=memplan: each region's size, the savings, then every tensor's place. */
void pass_print_memplan(const Graph *g, FILE *out) {
  char tb[160], vb[128];
  fprintf(out, "memplan %s (batch up to %lld)\n", g->name, (long long)g->max_batch);
  for (int r = 0; r < REGION_COUNT; r++)
    fprintf(out, "  region %-8s %12lld bytes\n", region_name(r), (long long)g->region_bytes[r]);
  print_savings((Graph *)g, out);
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->region < 0)
      continue;
    fprintf(out, "  %-24s %-8s +%-10lld %10lld bytes  %s%s\n", ir_value_str(v, vb, sizeof vb),
            region_name(v->region), (long long)v->offset,
            (long long)ir_bytes_max(g, &v->type), ir_type_str(g, &v->type, tb, sizeof tb),
            v->alias ? "  (view)" : "");
  }
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->work_bytes > 0)
      fprintf(out, "  workspace k%-14d scratch  +%-10lld %10lld bytes  %s\n", g->nodes[i]->id,
              (long long)g->nodes[i]->work_off, (long long)g->nodes[i]->work_bytes,
              op_name(g->nodes[i]->op));
}

/* Reverse-mode automatic differentiation as a pass: the gradient of
 * g->loss with respect to every value marked wrt, built as ordinary nodes
 * appended to the graph, so that memory planning and codegen treat the
 * backward pass like the forward one (saved activations are just values
 * that live longer).
 *
 * 1. Forward sweep: a value needs a gradient if it is marked wrt (and is
 *    not a frozen parameter), or is a floating-point output of a node with
 *    an input that needs one. Integer values never do: their derivative is
 *    zero wherever it exists, and PyTorch's integer tensors have no grad.
 * 2. Backward sweep over the original nodes, last to first, from
 *    d(loss)/d(loss) = 1: a node whose output has a gradient calls its op's
 *    rule (ops.def's grad column, passes/grad.c) for the inputs that need
 *    one. When the sweep reaches a value's producer every consumer has run,
 *    so its gradient is complete. Contributions are added as they arrive,
 *    consumers in reverse node order and then by input position: a fixed
 *    order, hence the same sums on every run.
 * 3. Each wanted value gets its gradient (zeros if the loss does not depend
 *    on it) as a value of its own: a node's output, not a view, not shared
 *    with another value's gradient, so that the memory plan can give the
 *    parameters' gradients their own contiguous region. */
#include "passes/passes.h"
#include <stdlib.h>

typedef struct AD {
  Graph *g;
  int nvals, nnodes;     /* before the pass: the values indexed below, the nodes swept */
  bool *needs;           /* [nvals] depends on a value that wants a gradient */
  Value **grad;          /* [nvals] d(loss)/d(value) so far, or NULL */
  int errors;
} AD;

static void fail(AD *a, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(AD *a, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (a->g->diags)
    diag_vadd(a->g->diags, DIAG_ERROR, loc, fmt, ap);
  va_end(ap);
  a->errors++;
}

static const char *name_of(const Value *v, char *buf, int len) { return ir_value_str(v, buf, len); }

static bool wanted(const Value *v) { return v->wrt && !v->frozen; }

static void mark_needs(AD *a) {
  for (int i = 0; i < a->nvals; i++) {
    Value *v = a->g->vals[i];
    a->needs[i] = wanted(v) && ir_is_float(v->type.dt);
    if (wanted(v) && !ir_is_float(v->type.dt))
      fail(a, v->loc, "autodiff: %s is marked for a gradient but holds integers",
           name_of(v, (char[128]){0}, 128));
  }
  for (int i = 0; i < a->nnodes; i++) {
    Node *n = a->g->nodes[i];
    bool any = false;
    for (int j = 0; j < n->nin; j++)
      any |= a->needs[n->in[j]->id];
    for (int j = 0; j < n->nout; j++)
      a->needs[n->out[j]->id] |= any && ir_is_float(n->out[j]->type.dt);
  }
}

static void accumulate(AD *a, Value *v, Value *dv, SrcLoc loc) {
  Value **acc = &a->grad[v->id];
  *acc = *acc ? ir_op2(a->g, OP_add, *acc, dv, loc) : dv;
}

/* Runs n's gradient rule and adds what it gives to its inputs' gradients. */
static void backprop(AD *a, Node *n) {
  Value *dy = a->grad[n->out[0]->id], *dys[n->nout];
  bool need[n->nin], any = false, anydy = false;
  Value *dx[n->nin];
  for (int i = 0; i < n->nin; i++) {
    need[i] = a->needs[n->in[i]->id];
    any |= need[i];
    dx[i] = NULL;
  }
  for (int i = 0; i < n->nout; i++)
    anydy |= (dys[i] = a->grad[n->out[i]->id]) != NULL;
  if (!anydy || !any)
    return;
  GradRule rule = pass_grad_rules[n->op];
  if (!rule) {
    fail(a, n->loc, "autodiff: cannot differentiate %s: the op has no gradient rule, and the "
         "loss depends through it on a value marked for a gradient", op_name(n->op));
    return;
  }
  Grad d = {.g = a->g, .loc = n->loc, .need = need, .dys = dys};
  rule(&d, n, dy, dx);
  for (int i = 0; i < n->nin; i++) {
    if (!need[i] || !dx[i])
      continue;
    if (!ir_type_eq(&dx[i]->type, &n->in[i]->type)) {
      fail(a, n->loc, "internal: autodiff: the gradient rule of %s gave input %d the wrong type",
           op_name(n->op), i);
      continue;
    }
    accumulate(a, n->in[i], dx[i], n->loc);
  }
}

/* The gradient as a value of v's own (see the head comment). */
static Value *own_grad(AD *a, Value *v, Value *gr, bool *taken) {
  Attr same = ir_attr();
  same.rank = v->type.rank;
  for (int i = 0; i < v->type.rank; i++)
    same.shape[i] = v->type.dim[i];
  if (!gr)
    gr = ir_scalar(a->g, v->type.dt, 0);
  else if (gr->role == V_TEMP && gr->def->op != OP_reshape && !taken[gr->id])
    return gr;
  return ir_op(a->g, OP_expand, &gr, 1, &same, v->loc);   /* broadcast zeros, or a copy */
}

static void set_grads(AD *a) {
  int before = a->g->nvals;           /* a gradient given back as is was made before */
  bool *taken = calloc(before + 1, 1);
  if (!taken) {
    fail(a, srcloc_none(), "autodiff: out of memory");
    return;
  }
  for (int i = 0; i < a->nvals; i++) {
    Value *v = a->g->vals[i];
    if (!a->needs[i] || !wanted(v))
      continue;
    v->grad = own_grad(a, v, a->grad[i], taken);
    if (v->grad->id < before)
      taken[v->grad->id] = true;
  }
  free(taken);
}

static bool check_loss(AD *a) {
  Value *l = a->g->loss;
  if (ir_type_known(&l->type) && l->type.rank == 0 && ir_is_float(l->type.dt))
    return true;
  char tb[160];
  fail(a, l->loc, "autodiff: the loss must be a scalar f32 or f64, got %s",
       ir_type_str(a->g, &l->type, tb, sizeof tb));
  return false;
}

/* Differentiated already: some wanted value has its gradient. */
static bool done_before(const Graph *g) {
  for (int i = 0; i < g->nvals; i++)
    if (wanted(g->vals[i]) && g->vals[i]->grad)
      return true;
  return false;
}

bool pass_autodiff(Graph *g, PassCtx *cx, PassStats *st) {
  if (!g->loss || done_before(g))
    return false;
  AD a = {.g = g, .nvals = g->nvals, .nnodes = g->nnodes};
  if (!check_loss(&a))
    return false;
  a.needs = calloc(a.nvals + 1, sizeof *a.needs);
  a.grad = calloc(a.nvals + 1, sizeof *a.grad);
  if (!a.needs || !a.grad) {
    fail(&a, srcloc_none(), "autodiff: out of memory");
  } else {
    mark_needs(&a);
    if (a.needs[g->loss->id])
      a.grad[g->loss->id] = ir_scalar(g, g->loss->type.dt, 1);
    for (int i = a.nnodes - 1; i >= 0; i--)
      backprop(&a, g->nodes[i]);
    if (!a.errors)
      set_grads(&a);
  }
  free(a.needs);
  free(a.grad);
  return g->nnodes > a.nnodes;
}

/* The body of a reverse scan (passes/scan_grad.c): the gradients of
 * sum_i <ys[i], dys[i]> (dys[i] NULL: no contribution) with respect to xs,
 * appended to g by the same sweep as pass_autodiff; dxs[j] NULL means zero.
 * Returns the number of errors (reported to g->diags). */
int pass_autodiff_seeded(Graph *g, Value **ys, Value **dys, int ny, Value **xs, int nx,
                         Value **dxs) {
  AD a = {.g = g, .nvals = g->nvals, .nnodes = g->nnodes};
  bool old[nx > 0 ? nx : 1];
  a.needs = calloc(a.nvals + 1, sizeof *a.needs);
  a.grad = calloc(a.nvals + 1, sizeof *a.grad);
  if (!a.needs || !a.grad) {
    fail(&a, srcloc_none(), "autodiff: out of memory");
  } else {
    for (int j = 0; j < nx; j++) {
      old[j] = xs[j]->wrt;
      xs[j]->wrt = ir_is_float(xs[j]->type.dt);
    }
    mark_needs(&a);
    for (int j = 0; j < nx; j++)
      xs[j]->wrt = old[j];
    for (int i = 0; i < ny; i++)
      if (dys[i] && a.needs[ys[i]->id])
        accumulate(&a, ys[i], dys[i], ys[i]->loc);
    for (int i = a.nnodes - 1; i >= 0; i--)
      backprop(&a, g->nodes[i]);
    for (int j = 0; j < nx; j++)
      dxs[j] = a.needs[xs[j]->id] ? a.grad[xs[j]->id] : NULL;
  }
  free(a.needs);
  free(a.grad);
  return a.errors;
}

/* Batchnorm folding, for inference: the weights are known when the model
 * compiles (cx->param_data hands over the data the code will run with), so
 * an affine map applied per output channel after a contraction can move
 * into the contraction's weights.
 *
 * From each producer P (conv2d, or a matmul whose second operand is a
 * known [out, in] or [in, out] weight), follow its output down a chain of
 * single-use nodes, each an affine map per output channel c with known
 * operands, composing them into one y = P(x) * s[c] + t[c]:
 *
 *   batchnorm on the channel axis   s *= k, t = (t - mean) * k + beta,
 *                                   k = gamma / sqrt(var + eps)
 *   add, sub, mul, div by a constant, a parameter or a reshape of one
 *   that varies along the channel axis only (the conv's [C, 1, 1] bias, a
 *   dense bias [C], a scalar)
 *
 * Then P reads a new constant weight W' = W * s along W's output axis, and
 * the chain's last node becomes add(P(x), t) in place, so its output value
 * (an output, maybe) stays. The rest of the chain is dead code. The fold
 * happens when it removes something: a batchnorm, a scale, or two nodes
 * or more. */
#include "passes/passes.h"
#include <assert.h>
#include <math.h>
#include <stdlib.h>

typedef struct Fold {
  Graph *g;
  PassCtx *cx;
  Node **user;            /* [nvals]: a node using the value (the only one when nuse is 1) */
  bool read_params;       /* the chain being folded read weights from param_data */
} Fold;

/* y = x * scale[c] + shift[c] over C channels. */
typedef struct Affine {
  int64_t nch;
  double *scale, *shift;
} Affine;

/* The data of v when the compile knows it: a constant, a parameter or
 * state through the driver, or a reshape of one (same order). */
static const void *known(Fold *f, const Value *v) {
  return pass_known_data(f->g, f->cx, v, &f->read_params);
}

static bool extent(const Graph *g, Size s, int64_t *n) {
  return !(g->batch_var >= 0 && sz_has_var(s, g->batch_var)) && sz_eval(s, g->svals, n);
}

/* Channel k of v, an operand broadcast (aligned right) against a value of
 * type out that varies along axis ax only, into vals[nch]. */
static bool per_channel(Fold *f, const Value *v, const Type *out, int ax, int64_t nch,
                        double *vals) {
  const void *d = known(f, v);
  int64_t along = 1, e;
  if (!d || v->type.dt != out->dt || v->type.rank > out->rank)
    return false;
  for (int i = 0; i < v->type.rank; i++) {
    int a = out->rank - v->type.rank + i;
    if (!extent(f->g, v->type.dim[i], &e) || (a == ax ? e != 1 && e != nch : e != 1))
      return false;
    along = a == ax ? e : along;
  }
  for (int64_t k = 0; k < nch; k++)
    vals[k] = pass_load(d, v->type.dt, along == 1 ? 0 : k);
  return true;
}

/* A batchnorm statistic: a known vector of nch elements. */
static bool stat(Fold *f, const Value *v, int64_t nch, double *vals) {
  const void *d = known(f, v);
  int64_t e;
  if (!d || v->type.rank != 1 || !extent(f->g, v->type.dim[0], &e) || e != nch)
    return false;
  for (int64_t k = 0; k < nch; k++)
    vals[k] = pass_load(d, v->type.dt, k);
  return true;
}

static bool absorb_batchnorm(Fold *f, const Node *u, int ax, Affine *a, double *tmp) {
  int64_t C = a->nch;
  double *gamma = tmp, *beta = tmp + C, *mean = tmp + 2 * C, *var = tmp + 3 * C;
  if (u->attr.axis != ax || !stat(f, u->in[1], C, gamma) || !stat(f, u->in[2], C, beta) ||
      !stat(f, u->in[3], C, mean) || !stat(f, u->in[4], C, var))
    return false;
  for (int64_t c = 0; c < C; c++) {
    double k = gamma[c] / sqrt(var[c] + u->attr.eps);
    a->scale[c] *= k;
    a->shift[c] = (a->shift[c] - mean[c]) * k + beta[c];
  }
  return true;
}

/* Composes u, applied to cur, into a; true if it did. *scales: u was
 * more than a shift (worth a fold on its own). */
static bool absorb(Fold *f, const Node *u, const Value *cur, int ax, Affine *a,
                   double *tmp, bool *scales) {
  if (!ir_type_eq(&u->out[0]->type, &cur->type))
    return false;
  if (u->op == OP_batchnorm && u->in[0] == cur && absorb_batchnorm(f, u, ax, a, tmp))
    return *scales = true;
  if (u->op == OP_batchnorm)
    return false;
  if (u->nin != 2 || u->in[0] == u->in[1])
    return false;
  int o = u->in[0] == cur;                    /* the other operand */
  bool left = o == 0;                         /* it comes first: c - x, c / x */
  if (u->op != OP_add && u->op != OP_sub && u->op != OP_mul && u->op != OP_div)
    return false;
  if (!per_channel(f, u->in[o], &cur->type, ax, a->nch, tmp) || (u->op == OP_div && left))
    return false;
  for (int64_t c = 0; u->op == OP_div && c < a->nch; c++)
    if (tmp[c] == 0)
      return false;
  for (int64_t c = 0; c < a->nch; c++) {
    double k = tmp[c];
    switch (u->op) {
    case OP_add: a->shift[c] += k; break;
    case OP_sub:
      a->scale[c] *= left ? -1 : 1;
      a->shift[c] = left ? k - a->shift[c] : a->shift[c] - k;
      break;
    case OP_mul: a->scale[c] *= k; a->shift[c] *= k; break;
    default: a->scale[c] /= k; a->shift[c] /= k; break;
    }
  }
  *scales |= u->op == OP_mul || u->op == OP_div;
  return true;
}

/* The output-channel axes of p's output and of its weight, and the
 * number of channels, if p is a contraction with a known weight. */
static bool producer(Fold *f, const Node *p, int *out_ax, int *w_ax, int64_t *nch) {
  const Type *y = &p->out[0]->type;
  if (p->op != OP_conv2d && p->op != OP_matmul)
    return false;
  if (p->op == OP_conv2d) {
    *out_ax = 1;
    *w_ax = 0;
  } else if (p->in[1]->type.rank == 2) {
    *out_ax = y->rank - 1;
    *w_ax = p->attr.trans_b ? 0 : 1;
  } else {
    return false;
  }
  return ir_is_float(y->dt) && extent(f->g, y->dim[*out_ax], nch) && known(f, p->in[1]);
}

/* W scaled by s along axis ax, as a new constant; NULL without memory. */
static Value *scaled_weight(Fold *f, const Value *w, int ax, const double *s) {
  int64_t n = 1, inner = 1, nch = 1, e;
  for (int i = 0; i < w->type.rank; i++) {
    if (!extent(f->g, w->type.dim[i], &e))
      return NULL;
    n *= e;
    inner *= i > ax ? e : 1;
    nch = i == ax ? e : nch;
  }
  const void *d = known(f, w);
  void *out = malloc(rt_dtype_size(w->type.dt) * (n ? n : 1));
  if (!out)
    return NULL;
  for (int64_t i = 0; i < n; i++)
    pass_store(out, w->type.dt, i, pass_load(d, w->type.dt, i) * s[i / inner % nch]);
  Value *c = ir_const(f->g, w->type, out);
  free(out);
  return c->data ? c : NULL;
}

/* The shift as a constant that broadcasts along the output's channel
 * axis: [C, 1, ..., 1] with as many 1s as axes after it. */
static Value *shift_const(Fold *f, const Type *y, int ax, const Affine *a) {
  int64_t dims[IR_MAX_RANK];
  int rank = y->rank - ax;
  dims[0] = a->nch;
  for (int i = 1; i < rank; i++)
    dims[i] = 1;
  void *data = malloc(rt_dtype_size(y->dt) * (a->nch ? a->nch : 1));
  if (!data)
    return NULL;
  for (int64_t c = 0; c < a->nch; c++)
    pass_store(data, y->dt, c, a->shift[c]);
  Value *v = ir_const(f->g, ir_type_const(y->dt, rank, dims), data);
  free(data);
  return v->data ? v : NULL;
}

/* p reads the scaled weight; `last` becomes add(p's output, t). */
static bool rewrite(Fold *f, Node *p, Node *last, int out_ax, int w_ax, const Affine *a) {
  Value *w = scaled_weight(f, p->in[1], w_ax, a->scale);
  Value *t = shift_const(f, &p->out[0]->type, out_ax, a);
  if (!w || !t)
    return false;
  p->in[1] = w;
  Type want = last->out[0]->type;
  last->op = OP_add;
  last->nin = 2;                            /* every op of a chain has two inputs or more */
  last->in[0] = p->out[0];
  last->in[1] = t;
  last->attr = ir_attr();
  ir_infer(f->g, last);
  assert(ir_type_eq(&last->out[0]->type, &want));
  return true;
}

/* Folds the chain after p, if there is one worth folding. */
static bool fold_after(Fold *f, Node *p) {
  int out_ax, w_ax;
  int64_t C;
  if (!producer(f, p, &out_ax, &w_ax, &C))
    return false;
  double *buf = malloc(sizeof(double) * 6 * (C ? C : 1));
  if (!buf)
    return false;
  Affine a = {C, buf, buf + C};
  for (int64_t c = 0; c < C; c++) {
    a.scale[c] = 1;
    a.shift[c] = 0;
  }
  Value *cur = p->out[0];
  Node *last = NULL;
  int len = 0;
  bool scales = false;
  while (cur->nuse == 1 && !cur->is_output && f->user[cur->id] &&
         absorb(f, f->user[cur->id], cur, out_ax, &a, buf + 2 * C, &scales)) {
    last = f->user[cur->id];
    cur = last->out[0];
    len++;
  }
  bool done = last && (scales || len >= 2) && rewrite(f, p, last, out_ax, w_ax, &a);
  free(buf);
  return done;
}

bool pass_fold_bn(Graph *g, PassCtx *cx, PassStats *st) {
  if (g->training || g->loss)
    return false;
  Fold f = {.g = g, .cx = cx, .user = calloc(g->nvals ? g->nvals : 1, sizeof(Node *))};
  if (!f.user)
    return false;
  st->bytes_before = pass_temp_bytes(g);
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++)
      f.user[g->nodes[i]->in[j]->id] = g->nodes[i];
  int folds = 0, nnodes = g->nnodes;
  for (int i = 0; i < nnodes; i++) {
    f.read_params = false;
    bool folded = fold_after(&f, g->nodes[i]);
    g->weights_baked |= folded && f.read_params;
    folds += folded;
  }
  free(f.user);
  if (folds) {
    ir_remove_dead(g, true);
    ir_count_uses(g);
  }
  st->bytes_after = pass_temp_bytes(g);
  return folds > 0;
}

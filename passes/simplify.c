/* Simplification: sweeps over the nodes in order, each node looked at with
 * everything before it simplified already, until a sweep changes nothing.
 *
 * A node is, in this order: folded (all inputs constant: evaluated here in
 * double precision, rounded to its dtype, and replaced by a new constant),
 * rewritten in place (transposes that compose, reshape chains, a transpose
 * absorbed by matmul's trans_a/trans_b), replaced by an operand it leaves
 * unchanged (x*1, x+0, neg(neg(x)), ...), or replaced by an earlier node
 * that computes the same (CSE: same op, inputs and attributes; equal
 * constants are merged first, so that ir_scalar's many 1s are one), or,
 * failing those, rebuilt: a sum of zero-padded pieces that tile it becomes
 * their concat, a reshape sinks below it. Dead code goes at the end of
 * each sweep (ir_remove_dead).
 *
 * No identity here changes a value: x*0 is not 0 when x is NaN, so it stays.
 *
 * What a replacement may not touch: a value that updates a parameter or
 * state, a gradient, the loss (their identity is the contract with memplan
 * and the driver). An output may be replaced by a temporary that is no
 * output, no gradient and no update already; it takes the output's name. */
#include "passes/passes.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The largest constant folding makes, in elements, unless an input is as
 * large: a broadcast is free at run time, its materialised copy is not. */
#define FOLD_MAX 65536

/* Open addressing over a power of two of slots; eq compares two entries. */
typedef struct Table {
  void **slot;
  int cap;
  const Graph *g;
  bool (*eq)(const Graph *g, const void *a, const void *b);
} Table;

typedef struct Simp {
  Graph *g;
  bool *fixed;                  /* [nfixed] by value id: updates, gradients, the loss */
  int nfixed;
  Table consts, nodes;
  int changes;
} Simp;

/* ---- elements ------------------------------------------------------------ */

double pass_load(const void *p, RtDType dt, int64_t i) {
  switch (dt) {
  case RT_F32: return ((const float *)p)[i];
  case RT_F64: return ((const double *)p)[i];
  case RT_I32: return ((const int32_t *)p)[i];
  case RT_I64: return (double)((const int64_t *)p)[i];
  default: return ((const uint8_t *)p)[i];
  }
}

/* Integers as codegen converts them: truncated toward zero, and only where
 * the conversion is defined (in range) and a double holds them exactly. */
bool pass_store(void *p, RtDType dt, int64_t i, double x) {
  double lo = dt == RT_I32 ? -2147483648.0 : dt == RT_I64 ? -0x1p53 : 0;
  double hi = dt == RT_I32 ? 2147483647.0 : dt == RT_I64 ? 0x1p53 : 255;
  switch (dt) {
  case RT_F32: ((float *)p)[i] = (float)x; return true;
  case RT_F64: ((double *)p)[i] = x; return true;
  case RT_BOOL: ((uint8_t *)p)[i] = x != 0; return true;   /* NaN is true, as codegen's une */
  default: break;
  }
  if (!(x >= lo && x <= hi))
    return false;
  x = trunc(x);
  if (dt == RT_I32)
    ((int32_t *)p)[i] = (int32_t)x;
  else if (dt == RT_I64)
    ((int64_t *)p)[i] = (int64_t)x;
  else
    ((uint8_t *)p)[i] = (uint8_t)x;
  return true;
}

/* ---- shapes known at compile time ----------------------------------------- */

typedef struct Dims {
  int rank;
  int64_t d[IR_MAX_RANK];
  int64_t n;                    /* elements */
} Dims;

/* t's extents, when no dim depends on the batch or an unbound size. */
static bool dims_of(const Graph *g, const Type *t, Dims *s) {
  if (!ir_type_known(t))
    return false;
  s->rank = t->rank;
  s->n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (g->batch_var >= 0 && sz_has_var(t->dim[i], g->batch_var))
      return false;
    if (!sz_eval(t->dim[i], g->svals, &s->d[i]) || __builtin_mul_overflow(s->n, s->d[i], &s->n))
      return false;
  }
  return true;
}

static void dense_strides(const Dims *s, int64_t *st) {
  int64_t k = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = k;
    k *= s->d[i];
  }
}

/* Strides of x read at each axis of out: numpy broadcasting (aligned
 * right; 0 where x has extent 1), or through perm (out axis i = x axis
 * perm[i]) for a transpose. */
static void read_strides(const Dims *out, const Dims *x, const int *perm, int64_t *st) {
  int64_t xs[IR_MAX_RANK];
  dense_strides(x, xs);
  for (int i = 0; i < out->rank; i++)
    st[i] = perm ? xs[perm[i]] : 0;
  for (int i = 0; !perm && i < x->rank; i++)
    st[out->rank - x->rank + i] = x->d[i] == 1 ? 0 : xs[i];
}

/* Offset of element `flat` of s (C order) under strides st. */
static int64_t offset_of(int64_t flat, const Dims *s, const int64_t *st) {
  int64_t off = 0;
  for (int i = s->rank - 1; i >= 0; i--) {
    off += flat % s->d[i] * st[i];
    flat /= s->d[i];
  }
  return off;
}

/* ---- constant folding ------------------------------------------------------- */

static double unary(const Node *n, double x) {
  double a = n->attr.alpha;
  switch (n->op) {
  case OP_neg: return -x;
  case OP_abs: return fabs(x);
  case OP_relu: return x < 0 ? 0 : x;         /* keeps NaN, as codegen */
  case OP_sigmoid: return 1 / (1 + exp(-x));
  case OP_tanh: return tanh(x);
  case OP_exp: return exp(x);
  case OP_log: return log(x);
  case OP_sqrt: return sqrt(x);
  case OP_rsqrt: return 1 / sqrt(x);
  case OP_step: return x > 0;
  case OP_sign: return x > 0 ? 1 : x < 0 ? -1 : x;
  case OP_erf: return erf(x);
  case OP_leaky_relu: return x > 0 ? x : a * x;
  case OP_elu: return x > 0 ? x : a * expm1(x);
  case OP_softplus: return x > a ? x : log1p(exp(x));
  case OP_gelu: return 0.5 * x * (1 + erf(x * M_SQRT1_2));
  case OP_gelu_tanh: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  case OP_silu: return x / (1 + exp(-x));
  default: return x;                          /* cast, expand, transpose, reshape */
  }
}

/* Integer division as the generated code does it (codegen/expr.c int_div):
 * floor division, 0 for a divisor of 0. */
static double int_div(double a, double b) {
  if (b == 0)
    return 0;
  if (b == -1)
    return -a;
  int64_t x = (int64_t)a, y = (int64_t)b, q = x / y;
  return (double)(q - (x % y != 0 && (x % y < 0) != (y < 0)));
}

/* NaN propagates through maximum and minimum, as llvm.maximum does. */
static double binary(Op op, double a, double b, bool ints) {
  switch (op) {
  case OP_add: return a + b;
  case OP_sub: return a - b;
  case OP_mul: return a * b;
  case OP_div: return ints ? int_div(a, b) : a / b;
  case OP_maximum:
  case OP_max: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
  case OP_minimum:
  case OP_min: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
  default: return NAN;
  }
}

/* Elementwise, broadcast and movement ops: out[i] = op(inputs read at i);
 * iota adds the index along its axis (an offset with stride 1 there). */
static void eval_map(const Graph *g, const Node *n, const Dims *od, const Dims *id, double *r) {
  int64_t st[2][IR_MAX_RANK], along[IR_MAX_RANK] = {0};
  along[n->attr.axis >= 0 && n->attr.axis < od->rank ? n->attr.axis : 0] = n->op == OP_iota;
  const int *perm = n->op == OP_transpose ? n->attr.perm : NULL;
  bool flat = n->op == OP_reshape || op_is(n->op, CAT_ELEMWISE);
  bool ints = !ir_is_float(n->out[0]->type.dt);
  for (int k = 0; k < n->nin && !flat; k++)     /* a reshape may lower the rank: no strides */
    read_strides(od, &id[k], perm, st[k]);
  for (int64_t i = 0; i < od->n; i++) {
    double x[2];
    for (int k = 0; k < n->nin; k++)
      x[k] = pass_load(n->in[k]->data, n->in[k]->type.dt, flat ? i : offset_of(i, od, st[k]));
    r[i] = n->nin == 2 ? binary(n->op, x[0], x[1], ints)
                       : unary(n, x[0]) + (double)offset_of(i, od, along);
  }
}

/* sum, mean, max, min over attr.axes. */
static bool eval_reduce(const Node *n, const Dims *od, const Dims *x, double *r) {
  if (x->n == 0 && n->op != OP_sum)
    return false;                             /* no element: leave it to codegen */
  int64_t ost[IR_MAX_RANK], st[IR_MAX_RANK];
  dense_strides(od, ost);
  for (int j = 0, k = 0; j < x->rank; j++) {
    bool red = n->attr.axes & (1u << j);
    st[j] = red ? 0 : ost[k];
    k += !red || n->attr.keepdim;
  }
  double init = n->op == OP_max ? -INFINITY : n->op == OP_min ? INFINITY : 0;
  for (int64_t i = 0; i < od->n; i++)
    r[i] = init;
  const Value *in = n->in[0];
  for (int64_t i = 0; i < x->n; i++) {
    int64_t o = offset_of(i, x, st);
    double v = pass_load(in->data, in->type.dt, i);
    r[o] = n->op == OP_sum || n->op == OP_mean ? r[o] + v : binary(n->op, r[o], v, false);
  }
  for (int64_t i = 0; n->op == OP_mean && i < od->n; i++)
    r[i] /= (double)(x->n / od->n);
  return true;
}

static bool foldable_op(Op op) {
  return op_is(op, CAT_ELEMWISE | CAT_REDUCE) || op == OP_add || op == OP_sub || op == OP_mul ||
         op == OP_div || op == OP_maximum || op == OP_minimum || op == OP_expand || op == OP_iota ||
         op == OP_transpose || op == OP_reshape;
}

/* Integers take part only while a double holds them exactly. */
static bool exact_in_double(const Value *v, int64_t n) {
  if (ir_is_float(v->type.dt))
    return true;
  for (int64_t i = 0; i < n; i++)
    if (fabs(pass_load(v->data, v->type.dt, i)) > 0x1p53)
      return false;
  return true;
}

/* n's value as a new constant, or NULL when it cannot or should not fold. */
static Value *fold(Graph *g, const Node *n) {
  RtDType dt = n->out[0]->type.dt;
  Dims od, id[2];
  int64_t biggest = FOLD_MAX;
  if (n->nout != 1 || n->nin > 2 || !foldable_op(n->op) || !dims_of(g, &n->out[0]->type, &od))
    return NULL;
  if (n->op != OP_cast && dt != RT_F32 && dt != RT_F64 && dt != RT_I32 && dt != RT_I64)
    return NULL;
  for (int k = 0; k < n->nin; k++) {
    if (n->in[k]->role != V_CONST || !n->in[k]->data || !dims_of(g, &n->in[k]->type, &id[k]) ||
        !exact_in_double(n->in[k], id[k].n))
      return NULL;
    biggest = id[k].n > biggest ? id[k].n : biggest;
  }
  if (od.n > biggest)
    return NULL;
  double *r = malloc(sizeof(double) * (od.n ? od.n : 1));
  void *data = calloc(od.n ? od.n : 1, rt_dtype_size(dt));
  bool ok = r && data;
  if (ok && op_is(n->op, CAT_REDUCE))
    ok = eval_reduce(n, &od, &id[0], r);
  else if (ok)
    eval_map(g, n, &od, id, r);
  for (int64_t i = 0; ok && i < od.n; i++)
    ok = pass_store(data, dt, i, r[i]);
  Value *c = ok ? ir_const(g, n->out[0]->type, data) : NULL;
  free(r);
  free(data);
  return c && c->data ? c : NULL;
}

/* ---- identities ------------------------------------------------------------ */

/* v is a constant whose every element is x. */
static bool const_is(const Graph *g, const Value *v, double x) {
  Dims d;
  if (v->role != V_CONST || !v->data || !dims_of(g, &v->type, &d) || d.n > FOLD_MAX)
    return false;
  for (int64_t i = 0; i < d.n; i++)
    if (pass_load(v->data, v->type.dt, i) != x)
      return false;
  return true;
}

static bool is_identity_perm(const int *perm, int rank) {
  for (int i = 0; i < rank; i++)
    if (perm[i] != i)
      return false;
  return true;
}

/* A transpose that swaps the last two axes and nothing else. */
static bool swaps_last_two(const Node *n) {
  int r = n->in[0]->type.rank;
  if (n->op != OP_transpose || r < 2 || n->attr.perm[r - 2] != r - 1 || n->attr.perm[r - 1] != r - 2)
    return false;
  return is_identity_perm(n->attr.perm, r - 2);
}

/* The operand n passes through unchanged, or NULL. */
static Value *identity(const Graph *g, const Node *n) {
  Value *a = n->in[0], *b = n->nin > 1 ? n->in[1] : NULL;
  const Type *t = &n->out[0]->type;
  bool a_same = ir_type_eq(&a->type, t), b_same = b && ir_type_eq(&b->type, t);
  switch (n->op) {
  case OP_add:
    return a_same && const_is(g, b, 0) ? a : b_same && const_is(g, a, 0) ? b : NULL;
  case OP_mul:
    return a_same && const_is(g, b, 1) ? a : b_same && const_is(g, a, 1) ? b : NULL;
  case OP_sub: return a_same && const_is(g, b, 0) ? a : NULL;
  case OP_div: return a_same && const_is(g, b, 1) ? a : NULL;
  case OP_neg: return a->def && a->def->op == OP_neg ? a->def->in[0] : NULL;
  case OP_transpose: return is_identity_perm(n->attr.perm, a->type.rank) ? a : NULL;
  case OP_reshape:
  case OP_expand:
  case OP_cast: return a_same ? a : NULL;
  case OP_dropout: return n->attr.alpha == 0 ? a : NULL;
  default: return NULL;
  }
}

/* ---- rewrites in place ------------------------------------------------------ */

/* n reads x as input i, with attributes a, if its output type stays. */
static bool rewrite(Simp *s, Node *n, int i, Value *x, const Attr *a) {
  Graph *g = s->g;
  Value *old = n->in[i];
  Attr old_attr = n->attr;
  Type want = n->out[0]->type;
  Diags *d = g->diags;
  n->in[i] = x;
  n->attr = *a;
  g->diags = NULL;
  ir_infer(g, n);
  g->diags = d;
  if (ir_type_eq(&n->out[0]->type, &want)) {
    s->changes++;
    return true;
  }
  n->in[i] = old;
  n->attr = old_attr;
  n->out[0]->type = want;
  return false;
}

/* transpose(transpose(x)) reads x through the composed permutation;
 * reshape(reshape(x)) reshapes x; matmul absorbs a transpose of the last
 * two axes of either operand into its trans flags. */
static void rewrite_in_place(Simp *s, Node *n) {
  Node *d = n->in[0]->def;
  Attr a = n->attr;
  if (n->op == OP_transpose && d && d->op == OP_transpose) {
    for (int i = 0; i < n->in[0]->type.rank; i++)
      a.perm[i] = d->attr.perm[n->attr.perm[i]];
    rewrite(s, n, 0, d->in[0], &a);
  } else if (n->op == OP_reshape && d && d->op == OP_reshape) {
    rewrite(s, n, 0, d->in[0], &a);
  } else if (n->op == OP_matmul) {
    for (int i = 0; i < 2; i++) {
      Node *t = n->in[i]->def;
      a = n->attr;
      if (i == 0)
        a.trans_a = !a.trans_a;
      else
        a.trans_b = !a.trans_b;
      if (t && swaps_last_two(t))
        rewrite(s, n, i, t->in[0], &a);
    }
  }
}

/* ---- replacing values ------------------------------------------------------- */



static bool fixed(const Simp *s, const Value *v) {
  return v->updates || (v->id < s->nfixed && s->fixed[v->id]);
}

static bool can_replace(const Simp *s, const Value *from, const Value *to) {
  if (fixed(s, from))
    return false;
  return !from->is_output || (to->role == V_TEMP && !to->is_output && !fixed(s, to));
}

static bool replace(Simp *s, Value *from, Value *to) {
  if (!can_replace(s, from, to))
    return false;
  ir_replace_uses(s->g, from, to);
  s->changes++;
  return true;
}

static bool mark_fixed(Simp *s) {
  Graph *g = s->g;
  s->nfixed = g->nvals;
  s->fixed = calloc(g->nvals ? g->nvals : 1, sizeof *s->fixed);
  if (!s->fixed)
    return false;
  for (int i = 0; i < g->nvals; i++)
    if (g->vals[i]->grad)
      s->fixed[g->vals[i]->grad->id] = true;
  if (g->loss)
    s->fixed[g->loss->id] = true;
  return true;
}

/* ---- sinking reshapes ------------------------------------------------------- */

/* Elementwise ops that read each operand at the output's index (numpy
 * broadcasting aside): nothing depends on where an element sits. */
static bool pointwise(Op op) {
  switch (op) {
  case OP_add: case OP_sub: case OP_mul: case OP_div: case OP_maximum: case OP_minimum:
  case OP_pow: case OP_eq: case OP_ne: case OP_lt: case OP_le: case OP_gt: case OP_ge:
  case OP_where: return true;
  default: return op_is(op, CAT_ELEMWISE);
  }
}

static bool is_reshape_of(const Value *v, const Type *in) {
  return v->def && v->def->op == OP_reshape && ir_dims_eq(&v->def->in[0]->type, in);
}

/* Whether operand v of n reads the same element when n runs in the shape
 * `in`: v is a reshape from `in`, or of n's shape (to be reshaped too), or
 * a vector along the last axis that both shapes share (a dense bias), or a
 * single element. */
static bool reads_same(const Node *n, const Value *v, const Type *in) {
  const Type *out = &n->out[0]->type, *t = &v->type;
  if (ir_dims_eq(t, out))
    return true;
  for (int i = 0; i + 1 < t->rank; i++)
    if (!sz_eq(t->dim[i], sz_const(1)))
      return false;
  return !t->rank || sz_eq(t->dim[t->rank - 1], sz_const(1)) ||
         sz_eq(t->dim[t->rank - 1], in->dim[in->rank - 1]);
}

static Value *reshaped(Graph *g, Value *v, int rank, const Size *dims, SrcLoc loc) {
  Attr a = ir_attr();
  a.rank = rank;
  memcpy(a.shape, dims, sizeof(Size) * (size_t)rank);
  return ir_op(g, OP_reshape, &v, 1, &a, loc);
}

/* Operand v of n, read in the shape `in` (reads_same holds). */
static Value *operand_in(Graph *g, const Node *n, Value *v, const Type *in) {
  const Type *t = &v->type;
  if (ir_dims_eq(t, &n->out[0]->type))
    return is_reshape_of(v, in) ? v->def->in[0] : reshaped(g, v, in->rank, in->dim, n->loc);
  if (t->rank <= 1)
    return v;
  return reshaped(g, v, 1, &t->dim[t->rank - 1], n->loc);
}

/* Moves the nodes made since n0 (the last ones) to just after index at. */
static void place_after(Graph *g, int n0, int at) {
  Node *made[8];
  int k = g->nnodes - n0;
  memcpy(made, g->nodes + n0, sizeof(Node *) * (size_t)k);
  memmove(g->nodes + at + 1 + k, g->nodes + at + 1, sizeof(Node *) * (size_t)(n0 - at - 1));
  memcpy(g->nodes + at + 1, made, sizeof(Node *) * (size_t)k);
  for (int i = at + 1; i < g->nnodes; i++)
    g->nodes[i]->id = i;
}

/* op(reshape(y), ...) becomes reshape(op(y, ...)): the op then follows y's
 * producer directly, and fusion can take it into a GEMM's epilogue (dense
 * on [N, T, E] reshapes its [N*T, units] product before the activation).
 * Every operand must read the same element in y's shape. Another operand
 * of n's shape is reshaped to y's too (a residual), but only when y's rank
 * is lower: then no sink can undo another, and the sweeps end. The nodes
 * made go right after n, so the sweep goes on to sink the reshape through
 * the next op; the reshape costs nothing, it is a view. */
static void sink_reshape(Simp *s, Node *n) {
  Graph *g = s->g;
  const Type *in = NULL;
  if (n->nout != 1 || n->nin > 3 || !pointwise(n->op) || fixed(s, n->out[0]))
    return;
  for (int i = 0; i < n->nin && !in; i++)
    if (n->in[i]->def && n->in[i]->def->op == OP_reshape && ir_dims_eq(&n->in[i]->type, &n->out[0]->type))
      in = &n->in[i]->def->in[0]->type;
  if (!in || !in->rank)
    return;
  bool lowers = in->rank < n->out[0]->type.rank;
  for (int i = 0; i < n->nin; i++) {
    Value *v = n->in[i];
    if (!reads_same(n, v, in) || (!lowers && ir_dims_eq(&v->type, &n->out[0]->type) && !is_reshape_of(v, in)))
      return;
  }
  int n0 = g->nnodes;
  Value *ops[3];
  for (int i = 0; i < n->nin; i++)
    ops[i] = operand_in(g, n, n->in[i], in);
  Value *r = ir_op(g, n->op, ops, n->nin, &n->attr, n->loc);
  Value *y = reshaped(g, r, n->out[0]->type.rank, n->out[0]->type.dim, n->loc);
  place_after(g, n0, n->id);      /* made nodes unused on failure go as dead code */
  if (ir_type_eq(&y->type, &n->out[0]->type))
    replace(s, n->out[0], y);
}

/* ---- sums of padded pieces ---------------------------------------------------- */

enum { MAX_PIECES = 16 };

typedef struct Piece {
  Value *x;                     /* the piece, unpadded */
  int64_t at;                   /* where it starts along the axis */
} Piece;

/* The leaves of the tree of same-shape adds under v, at most MAX_PIECES;
 * -1 past that. */
static int add_leaves(Value *v, const Type *t, Value **leaf, int nleaf) {
  Node *d = v->def;
  if (!d || d->op != OP_add || !ir_type_eq(&v->type, t) || !ir_type_eq(&d->in[0]->type, t) ||
      !ir_type_eq(&d->in[1]->type, t)) {
    if (nleaf >= MAX_PIECES)
      return -1;
    leaf[nleaf] = v;
    return nleaf + 1;
  }
  nleaf = add_leaves(d->in[0], t, leaf, nleaf);
  return nleaf < 0 ? -1 : add_leaves(d->in[1], t, leaf, nleaf);
}

/* The one axis along which v, an unslice with zeros around and unit steps,
 * is narrower than t or moved from 0; -1 if v is none such. */
static int padded_axis(const Value *v, const Type *t) {
  const Node *u = v->def;
  if (!u || u->op != OP_unslice || u->attr.alpha != 0)
    return -1;
  int ax = -1;
  for (int i = 0; i < t->rank; i++) {
    if (u->attr.step[i] != 1)
      return -1;
    if (u->attr.start[i] == 0 && sz_eq(u->in[0]->type.dim[i], t->dim[i]))
      continue;
    if (ax >= 0)
      return -1;
    ax = i;
  }
  return ax;
}

static int by_start(const void *a, const void *b) {
  int64_t x = ((const Piece *)a)->at, y = ((const Piece *)b)->at;
  return (x > y) - (x < y);
}

/* Whether the pieces, sorted, tile [0, extent) along ax, end to end. */
static bool tiles(Piece *p, int np, int ax, Size extent) {
  int64_t end = 0, len, full;
  qsort(p, (size_t)np, sizeof *p, by_start);
  for (int i = 0; i < np; i++) {
    if (p[i].at != end || !sz_is_const(p[i].x->type.dim[ax], &len))
      return false;
    end += len;
  }
  return sz_is_const(extent, &full) && end == full;
}

/* A sum of zero-padded pieces that tile n's output along one axis is their
 * concat: one write instead of a fill and a copy per piece and the adds
 * (the gradient of splitting a tensor, as the LSTM's gates, is that sum).
 * Each element is one piece's, plus zeros: the same, but that -0 stays -0. */
static bool concat_pieces(Simp *s, Node *n) {
  Graph *g = s->g;
  const Type *t = &n->out[0]->type;
  Value *leaf[MAX_PIECES];
  Piece p[MAX_PIECES];
  if (n->op != OP_add || n->nout != 1 || fixed(s, n->out[0]))
    return false;
  int np = add_leaves(n->out[0], t, leaf, 0), ax = np > 1 ? padded_axis(leaf[0], t) : -1;
  for (int i = 0; i < np && ax >= 0; i++) {
    if (padded_axis(leaf[i], t) != ax)
      return false;
    p[i] = (Piece){leaf[i]->def->in[0], leaf[i]->def->attr.start[ax]};
  }
  if (ax < 0 || !tiles(p, np, ax, t->dim[ax]))
    return false;
  Value *xs[MAX_PIECES];
  for (int i = 0; i < np; i++)
    xs[i] = p[i].x;
  Attr a = ir_attr();
  a.axis = ax;
  int n0 = g->nnodes;
  Value *c = ir_op(g, OP_concat, xs, np, &a, n->loc);
  place_after(g, n0, n->id);
  return ir_type_eq(&c->type, t) && replace(s, n->out[0], c);
}

/* ---- hash tables: CSE and equal constants ------------------------------------ */

static uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
  return h;
}

static bool table_init(Table *t, const Graph *g, int n,
                       bool (*eq)(const Graph *, const void *, const void *)) {
  t->g = g;
  t->eq = eq;
  t->cap = 16;
  while (t->cap < 2 * n)
    t->cap *= 2;
  t->slot = calloc(t->cap, sizeof *t->slot);
  return t->slot != NULL;
}

/* The entry equal to p, or p after inserting it (the table has room:
 * at most half of it is ever used). */
static void *table_find(Table *t, void *p, uint64_t h) {
  for (int i = (int)(h & (t->cap - 1));; i = (i + 1) & (t->cap - 1)) {
    if (!t->slot[i])
      return t->slot[i] = p;
    if (t->eq(t->g, t->slot[i], p))
      return t->slot[i];
  }
}

static uint64_t const_hash(const Value *v, int64_t bytes) {
  uint64_t h = mix(v->type.dt, v->type.rank);
  const unsigned char *p = v->data;
  for (int64_t i = 0; i < bytes; i++)
    h = mix(h, p[i]);
  return h;
}

static bool const_eq(const Graph *g, const void *x, const void *y) {
  const Value *a = x, *b = y;
  return ir_type_eq(&a->type, &b->type) && !memcmp(a->data, b->data, ir_bytes_max(g, &a->type));
}

/* Equal constants become one: the first. */
static void merge_consts(Simp *s) {
  Graph *g = s->g;
  Table t;
  if (!table_init(&t, g, g->nvals, const_eq))
    return;
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    int64_t bytes = ir_bytes_max(g, &v->type);
    if (v->role != V_CONST || !v->data || bytes < 0 || bytes > (int64_t)FOLD_MAX * 8)
      continue;
    Value *first = table_find(&t, v, const_hash(v, bytes));
    if (first != v)
      replace(s, v, first);
  }
  free(t.slot);
}

static bool same_attrs(const Node *a, const Node *b) {
  int m = ir_ops[a->op].attrs;
  const Attr *x = &a->attr, *y = &b->attr;
  bool eq = true;
  if (m & A_AXIS) eq &= x->axis == y->axis;
  if (m & A_AXES) eq &= x->axes == y->axes;
  if (m & A_KEEPDIM) eq &= x->keepdim == y->keepdim;
  if (m & A_EPS) eq &= x->eps == y->eps;
  if (m & A_ALPHA) eq &= x->alpha == y->alpha;
  if (m & A_PERM) eq &= !memcmp(x->perm, y->perm, sizeof(int) * a->in[0]->type.rank);
  if (m & A_SHAPE) {
    eq &= x->rank == y->rank;
    for (int i = 0; eq && i < x->rank; i++)
      eq &= sz_eq(x->shape[i], y->shape[i]);
  }
  if (m & A_TRANS)
    eq &= x->trans_a == y->trans_a && x->trans_b == y->trans_b && x->packed_n == y->packed_n;
  if (m & A_WINDOW)
    eq &= !memcmp(x->k, y->k, sizeof x->k) && !memcmp(x->stride, y->stride, sizeof x->stride) &&
          !memcmp(x->dil, y->dil, sizeof x->dil) && !memcmp(x->pad, y->pad, sizeof x->pad);
  if (m & A_GROUPS) eq &= x->groups == y->groups;
  if (m & A_CEIL) eq &= x->ceil_mode == y->ceil_mode;
  if (m & A_INCPAD) eq &= x->count_include_pad == y->count_include_pad;
  if (m & A_DTYPE) eq &= x->dtype == y->dtype;
  if (m & A_CLASSES) eq &= x->classes == y->classes;
  if (m & A_STREAM) eq &= x->stream == y->stream;
  if (m & A_SLICE)
    eq &= !memcmp(x->start, y->start, sizeof x->start) && !memcmp(x->step, y->step, sizeof x->step);
  return eq;
}

static bool node_eq(const Graph *g, const void *x, const void *y) {
  const Node *a = x, *b = y;
  if (a->op != b->op || a->nin != b->nin || a->nout != b->nout || a->body || b->body)
    return false;
  for (int i = 0; i < a->nin; i++)
    if (a->in[i] != b->in[i])
      return false;
  return same_attrs(a, b);
}

static uint64_t node_hash(const Node *n) {
  uint64_t h = mix(n->op, n->nin);
  for (int i = 0; i < n->nin; i++)
    h = mix(h, (uint64_t)n->in[i]->id);
  return h;
}

/* n's outputs become those of the first node that computes the same. */
static bool cse(Simp *s, Node *n) {
  if (n->body)
    return false;
  Node *first = table_find(&s->nodes, n, node_hash(n));
  if (first == n)
    return false;
  for (int j = 0; j < n->nout; j++)
    if (!can_replace(s, n->out[j], first->out[j]))
      return false;
  for (int j = 0; j < n->nout; j++)
    replace(s, n->out[j], first->out[j]);
  return true;
}

/* ---- the pass ------------------------------------------------------------------- */

static void simplify_node(Simp *s, Node *n) {
  Value *c = NULL;
  bool may_fold = n->nout == 1 && !fixed(s, n->out[0]) && !n->out[0]->is_output;
  if (may_fold && (c = fold(s->g, n)) && replace(s, n->out[0], c))
    return;
  rewrite_in_place(s, n);
  Value *r = n->nout == 1 ? identity(s->g, n) : NULL;
  if (r && replace(s, n->out[0], r))
    return;
  if (!cse(s, n) && !concat_pieces(s, n))
    sink_reshape(s, n);
}

/* One sweep; false when it could not get memory (the graph is still valid). */
static bool sweep(Simp *s) {
  Graph *g = s->g;
  if (!mark_fixed(s))
    return false;
  merge_consts(s);
  if (!table_init(&s->nodes, g, g->nnodes, node_eq)) {
    free(s->fixed);
    return false;
  }
  for (int i = 0; i < g->nnodes; i++)
    simplify_node(s, g->nodes[i]);
  free(s->nodes.slot);
  free(s->fixed);
  int nvals = g->nvals;
  s->changes += ir_remove_dead(g, !g->training && !g->loss);
  s->changes += g->nvals != nvals;
  return true;
}

bool pass_simplify(Graph *g, PassCtx *cx, PassStats *st) {
  Simp s = {.g = g};
  int total = 0;
  st->bytes_before = pass_temp_bytes(g);
  for (int round = 0; round < 8; round++) {
    s.changes = 0;
    if (!sweep(&s) || !s.changes)
      break;
    total += s.changes;
  }
  ir_count_uses(g);
  st->bytes_after = pass_temp_bytes(g);
  return total > 0;
}

/* Gradient rules, one per op: given dy = d(loss)/d(output) of node n, a
 * rule builds with the ordinary IR builders the gradient with respect to
 * each input i that d->need[i] asks for, and leaves it in dx[i] with
 * exactly input i's type (NULL: a zero gradient). Rules compose existing
 * ops where that is natural; convolution and pooling have backward ops of
 * their own. The table at the end is the expansion of ops.def's grad
 * column.
 *
 * Broadcasting: an operand broadcast to the output gets the output-shaped
 * gradient summed over the broadcast axes, then reshaped to its shape.
 *
 * Ties, as PyTorch: maximum/minimum split the gradient equally between two
 * equal operands; max/min reductions (amax/amin) share it equally among all
 * the elements equal to the result. */
#include "passes/passes.h"
#include <math.h>

/* ---- builders in the node's place ------------------------------------------ */

static Value *op1(Grad *d, Op op, Value *x) { return ir_op(d->g, op, &x, 1, NULL, d->loc); }
static Value *op2(Grad *d, Op op, Value *a, Value *b) {
  Value *in[2] = {a, b};
  return ir_op(d->g, op, in, 2, NULL, d->loc);
}
static Value *opa(Grad *d, Op op, Value *x, const Attr *a) { return ir_op(d->g, op, &x, 1, a, d->loc); }
static Value *add(Grad *d, Value *a, Value *b) { return op2(d, OP_add, a, b); }
static Value *sub(Grad *d, Value *a, Value *b) { return op2(d, OP_sub, a, b); }
static Value *mul(Grad *d, Value *a, Value *b) { return op2(d, OP_mul, a, b); }
static Value *dvd(Grad *d, Value *a, Value *b) { return op2(d, OP_div, a, b); }
static Value *k(Grad *d, const Value *like, double v) { return ir_scalar(d->g, like->type.dt, v); }

static bool is_one(Size s) {
  int64_t c;
  return sz_is_const(s, &c) && c == 1;
}

static uint32_t all_axes(const Type *t) { return (uint32_t)((1u << t->rank) - 1); }

/* Attributes a with attr.shape set to t's dims. */
static Attr with_shape(Attr a, const Type *t) {
  a.rank = t->rank;
  for (int i = 0; i < t->rank; i++)
    a.shape[i] = t->dim[i];
  return a;
}

/* x viewed with t's shape (element counts agree): reshapes of reshapes
 * collapse, and no node at all when x has that shape already. */
static Value *reshape(Grad *d, Value *x, const Type *t) {
  while (x->role == V_TEMP && x->def->op == OP_reshape)
    x = x->def->in[0];
  Type want = *t;
  want.dt = x->type.dt;
  if (ir_type_eq(&x->type, &want))
    return x;
  Attr a = with_shape(ir_attr(), t);
  return opa(d, OP_reshape, x, &a);
}

static Value *expand(Grad *d, Value *x, const Type *t) {
  Attr a = with_shape(ir_attr(), t);
  return opa(d, OP_expand, x, &a);
}

static Value *reduce(Grad *d, Op op, Value *x, uint32_t axes, bool keepdim) {
  Attr a = ir_attr();
  a.axes = axes;
  a.keepdim = keepdim;
  return opa(d, op, x, &a);
}

/* x's type with the reduced axes kept as 1. */
static Type keep_type(const Type *x, uint32_t axes) {
  Type t = *x;
  for (int i = 0; i < t.rank; i++)
    if (axes & (1u << i))
      t.dim[i] = sz_const(1);
  return t;
}

/* The output-shaped gradient v of an operand of type t broadcast to it. */
static Value *unbroadcast(Grad *d, Value *v, const Type *t) {
  const Type *s = &v->type;
  uint32_t axes = 0;
  for (int i = 0; i < s->rank; i++) {
    int ti = i - (s->rank - t->rank);
    if (ti < 0 || (is_one(t->dim[ti]) && !is_one(s->dim[i])))
      axes |= 1u << i;
  }
  if (axes)
    v = reduce(d, OP_sum, v, axes, false);
  return reshape(d, v, t);
}

/* The number of elements a reduction over `axes` of x combines, as a
 * scalar of x's dtype; counted at run time when it involves the batch. */
static Value *count(Grad *d, const Value *x, uint32_t axes) {
  Size n = sz_const(1);
  Type red = {.dt = x->type.dt, .rank = 0};
  for (int i = 0; i < x->type.rank; i++)
    if (axes & (1u << i)) {
      n = sz_mul(n, x->type.dim[i]);
      red.dim[red.rank++] = x->type.dim[i];
    }
  int64_t c;
  if (sz_is_const(n, &c))
    return k(d, x, (double)c);
  Value *ones = expand(d, k(d, x, 1), &red);
  return reduce(d, OP_sum, ones, all_axes(&red), false);
}

/* ---- elementwise --------------------------------------------------------------- */

static void grad_neg(Grad *d, const Node *n, Value *dy, Value **dx) { dx[0] = op1(d, OP_neg, dy); }

static void grad_abs(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = mul(d, dy, op1(d, OP_sign, n->in[0]));
}

/* relu'(x) = step(x), 0 at x = 0 as in PyTorch. A step op rather than a
 * fused relu_grad(dy, x): it composes (leaky relu, clamps, masks), and the
 * fusion pass makes dy * step(x) one loop anyway. */
static void grad_relu(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = mul(d, dy, op1(d, OP_step, n->in[0]));
}

static void grad_sigmoid(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *y = n->out[0];
  dx[0] = mul(d, dy, mul(d, y, sub(d, k(d, y, 1), y)));
}

static void grad_tanh(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *y = n->out[0];
  dx[0] = mul(d, dy, sub(d, k(d, y, 1), mul(d, y, y)));
}

static void grad_exp(Grad *d, const Node *n, Value *dy, Value **dx) { dx[0] = mul(d, dy, n->out[0]); }

static void grad_log(Grad *d, const Node *n, Value *dy, Value **dx) { dx[0] = dvd(d, dy, n->in[0]); }

static void grad_sqrt(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *y = n->out[0];
  dx[0] = dvd(d, dy, mul(d, y, k(d, y, 2)));
}

/* d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3 */
static void grad_rsqrt(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *y = n->out[0];
  dx[0] = mul(d, dy, mul(d, mul(d, y, mul(d, y, y)), k(d, y, -0.5)));
}

/* ---- activations ---------------------------------------------------------------- */

/* step(x - t): 1 where x > t, else 0. */
static Value *above(Grad *d, Value *x, double t) {
  return op1(d, OP_step, t == 0 ? x : sub(d, x, k(d, x, t)));
}

/* s + (1 - s) v: 1 where the mask s is, v elsewhere. */
static Value *one_or(Grad *d, Value *s, Value *v) {
  return add(d, s, mul(d, sub(d, k(d, s, 1), s), v));
}

/* erf'(x) = 2/sqrt(pi) exp(-x^2) */
static void grad_erf(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0];
  Value *e = op1(d, OP_exp, op1(d, OP_neg, mul(d, x, x)));
  dx[0] = mul(d, dy, mul(d, e, k(d, x, M_2_SQRTPI)));
}

/* 1 where x > 0, else the slope (at 0 too, as PyTorch). */
static void grad_leaky_relu(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0];
  dx[0] = mul(d, dy, one_or(d, above(d, x, 0), k(d, x, n->attr.alpha)));
}

/* 1 where x > 0, else alpha exp(x) = y + alpha. */
static void grad_elu(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0], *y = n->out[0];
  dx[0] = mul(d, dy, one_or(d, above(d, x, 0), add(d, y, k(d, y, n->attr.alpha))));
}

/* sigmoid(x), 1 above the threshold where the value is x itself. */
static void grad_softplus(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0];
  dx[0] = mul(d, dy, one_or(d, above(d, x, n->attr.alpha), op1(d, OP_sigmoid, x)));
}

/* Phi(x) + x phi(x): the normal CDF 0.5 (1 + erf(x / sqrt 2)) and density. */
static void grad_gelu(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0];
  Value *cdf = mul(d, add(d, op1(d, OP_erf, mul(d, x, k(d, x, M_SQRT1_2))), k(d, x, 1)), k(d, x, 0.5));
  Value *pdf = mul(d, op1(d, OP_exp, mul(d, mul(d, x, x), k(d, x, -0.5))), k(d, x, 0.5 * M_2_SQRTPI * M_SQRT1_2));
  dx[0] = mul(d, dy, add(d, cdf, mul(d, x, pdf)));
}

/* y = x (1 + t) / 2, t = tanh(c (x + b x^3)):
 * y' = (1 + t) / 2 + x (1 - t^2) c (1 + 3 b x^2) / 2 */
static void grad_gelu_tanh(Grad *d, const Node *n, Value *dy, Value **dx) {
  const double c = sqrt(2 / M_PI), b = 0.044715;
  Value *x = n->in[0], *x2 = mul(d, x, x);
  Value *t = op1(d, OP_tanh, mul(d, mul(d, x, add(d, k(d, x, 1), mul(d, x2, k(d, x, b)))), k(d, x, c)));
  Value *half = mul(d, add(d, k(d, x, 1), t), k(d, x, 0.5));
  Value *du = mul(d, add(d, k(d, x, 1), mul(d, x2, k(d, x, 3 * b))), k(d, x, 0.5 * c));
  dx[0] = mul(d, dy, add(d, half, mul(d, mul(d, x, sub(d, k(d, x, 1), mul(d, t, t))), du)));
}

/* s (1 + x (1 - s)), s = sigmoid(x) */
static void grad_silu(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0], *s = op1(d, OP_sigmoid, x);
  dx[0] = mul(d, dy, mul(d, s, add(d, k(d, x, 1), mul(d, x, sub(d, k(d, x, 1), s)))));
}

/* Only float to float reaches here: an integer value carries no gradient. */
static void grad_cast(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = ir_attr();
  a.dtype = n->in[0]->type.dt;
  dx[0] = opa(d, OP_cast, dy, &a);
}

/* step, sign: the derivative is zero wherever it exists. */
static void grad_zero(Grad *d, const Node *n, Value *dy, Value **dx) {}

/* ---- broadcasting binary ops ------------------------------------------------------ */

static void grad_add(Grad *d, const Node *n, Value *dy, Value **dx) {
  for (int i = 0; i < 2; i++)
    if (d->need[i])
      dx[i] = unbroadcast(d, dy, &n->in[i]->type);
}

static void grad_sub(Grad *d, const Node *n, Value *dy, Value **dx) {
  if (d->need[0])
    dx[0] = unbroadcast(d, dy, &n->in[0]->type);
  if (d->need[1])
    dx[1] = op1(d, OP_neg, unbroadcast(d, dy, &n->in[1]->type));
}

static void grad_mul(Grad *d, const Node *n, Value *dy, Value **dx) {
  for (int i = 0; i < 2; i++)
    if (d->need[i])
      dx[i] = unbroadcast(d, mul(d, dy, n->in[1 - i]), &n->in[i]->type);
}

/* y = a / b: da = dy / b, db = -dy y / b */
static void grad_div(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *q = dvd(d, dy, n->in[1]);
  if (d->need[0])
    dx[0] = unbroadcast(d, q, &n->in[0]->type);
  if (d->need[1])
    dx[1] = op1(d, OP_neg, unbroadcast(d, mul(d, q, n->out[0]), &n->in[1]->type));
}

/* The chosen operand gets dy, a tie gives each half: with s = sign(a - b)
 * (of b - a for minimum), a's share is (1 + s) / 2 and b's (1 - s) / 2. */
static void extremum(Grad *d, const Node *n, Value *dy, Value **dx, bool is_max) {
  Value *a = n->in[0], *b = n->in[1];
  Value *half_s = mul(d, op1(d, OP_sign, is_max ? sub(d, a, b) : sub(d, b, a)), k(d, a, 0.5));
  Value *half = k(d, a, 0.5);
  if (d->need[0])
    dx[0] = unbroadcast(d, mul(d, dy, add(d, half, half_s)), &a->type);
  if (d->need[1])
    dx[1] = unbroadcast(d, mul(d, dy, sub(d, half, half_s)), &b->type);
}

static void grad_maximum(Grad *d, const Node *n, Value *dy, Value **dx) { extremum(d, n, dy, dx, true); }
static void grad_minimum(Grad *d, const Node *n, Value *dy, Value **dx) { extremum(d, n, dy, dx, false); }

/* y = a^b: da = dy b a^(b-1), db = dy y log(a) */
static void grad_pow(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *a = n->in[0], *b = n->in[1];
  if (d->need[0]) {
    Value *p = op2(d, OP_pow, a, sub(d, b, k(d, b, 1)));
    dx[0] = unbroadcast(d, mul(d, dy, mul(d, b, p)), &a->type);
  }
  if (d->need[1])
    dx[1] = unbroadcast(d, mul(d, dy, mul(d, n->out[0], op1(d, OP_log, a))), &b->type);
}

static Value *where(Grad *d, Value *c, Value *a, Value *b) {
  return ir_op(d->g, OP_where, (Value *[]){c, a, b}, 3, NULL, d->loc);
}

/* dy goes to the operand chosen, zeros to the other; the mask has none. */
static void grad_where(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *c = n->in[0], *zero = k(d, dy, 0);
  if (d->need[1])
    dx[1] = unbroadcast(d, where(d, c, dy, zero), &n->in[1]->type);
  if (d->need[2])
    dx[2] = unbroadcast(d, where(d, c, zero, dy), &n->in[2]->type);
}

/* A per-channel vector [C] shaped [C, 1, ...] to broadcast along `axis` of x. */
static Value *chan(Grad *d, Value *v, const Value *x, int axis) {
  Type t = v->type;
  for (int i = axis + 1; i < x->type.rank; i++)
    t.dim[t.rank++] = sz_const(1);
  return reshape(d, v, &t);
}

/* y = (x - mean) w s + b with s = (var + eps)^-1/2, per channel. The mean
 * and variance get gradients too, so that batch statistics computed in the
 * graph (training) are differentiated through; running statistics are
 * state, which no gradient reaches. */
static void grad_batchnorm(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0], *w = n->in[1], *mean = n->in[3], *var = n->in[4];
  int ax = n->attr.axis;
  uint32_t others = all_axes(&x->type) & ~(1u << ax);
  Value *s = op1(d, OP_rsqrt, add(d, var, k(d, var, n->attr.eps)));
  Value *ws = mul(d, w, s);
  if (d->need[0])
    dx[0] = mul(d, dy, chan(d, ws, x, ax));
  Value *db = d->need[2] || d->need[3] ? reduce(d, OP_sum, dy, others, false) : NULL;
  Value *dyxc = d->need[1] || d->need[4]
                    ? reduce(d, OP_sum, mul(d, dy, sub(d, x, chan(d, mean, x, ax))), others, false)
                    : NULL;
  if (d->need[1])
    dx[1] = mul(d, dyxc, s);
  if (d->need[2])
    dx[2] = db;
  if (d->need[3])
    dx[3] = op1(d, OP_neg, mul(d, db, ws));
  if (d->need[4])
    dx[4] = mul(d, dyxc, mul(d, ws, mul(d, mul(d, s, s), k(d, s, -0.5))));
}

/* ---- data movement and reductions -------------------------------------------- */

static void grad_transpose(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = ir_attr();
  for (int i = 0; i < n->in[0]->type.rank; i++)
    a.perm[n->attr.perm[i]] = i;
  dx[0] = opa(d, OP_transpose, dy, &a);
}

static void grad_reshape(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = reshape(d, dy, &n->in[0]->type);
}

static void grad_expand(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = unbroadcast(d, dy, &n->in[0]->type);
}

/* dy with the reduced axes back as 1s, so that it broadcasts over x. */
static Value *kept(Grad *d, const Node *n, Value *v) {
  Type t = keep_type(&n->in[0]->type, n->attr.axes);
  return reshape(d, v, &t);
}

static void grad_sum(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = expand(d, kept(d, n, dy), &n->in[0]->type);
}

static void grad_mean(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *scaled = dvd(d, kept(d, n, dy), count(d, n->in[0], n->attr.axes));
  dx[0] = expand(d, scaled, &n->in[0]->type);
}

/* amax/amin: the elements equal to the result share dy equally. The mask
 * is 1 - step(y - x) for max (y - x > 0 off the maximum), 1 - step(x - y)
 * for min. */
static void extreme_reduce(Grad *d, const Node *n, Value *dy, Value **dx, bool is_max) {
  Value *x = n->in[0], *y = kept(d, n, n->out[0]);
  Value *mask = sub(d, k(d, x, 1), op1(d, OP_step, is_max ? sub(d, y, x) : sub(d, x, y)));
  Value *ties = reduce(d, OP_sum, mask, n->attr.axes, true);
  dx[0] = mul(d, mask, dvd(d, kept(d, n, dy), ties));
}

static void grad_max(Grad *d, const Node *n, Value *dy, Value **dx) { extreme_reduce(d, n, dy, dx, true); }
static void grad_min(Grad *d, const Node *n, Value *dy, Value **dx) { extreme_reduce(d, n, dy, dx, false); }

static uint32_t axis_bit(const Node *n) {
  return 1u << ir_norm_axis(n->attr.axis, n->in[0]->type.rank);
}

/* dx = y (dy - sum(dy y)) along the axis */
static void grad_softmax(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *y = n->out[0];
  Value *s = reduce(d, OP_sum, mul(d, dy, y), axis_bit(n), true);
  dx[0] = mul(d, y, sub(d, dy, s));
}

/* dx = dy - softmax(x) sum(dy), softmax(x) = exp(y) */
static void grad_log_softmax(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *s = reduce(d, OP_sum, dy, axis_bit(n), true);
  dx[0] = sub(d, dy, mul(d, op1(d, OP_exp, n->out[0]), s));
}

/* slice and unslice undo each other: the gradient of one is the other
 * with the same walk (unslice's fill value is a constant: no gradient). */
static void grad_slice(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = with_shape(n->attr, &n->in[0]->type);
  a.alpha = 0;
  dx[0] = opa(d, OP_unslice, dy, &a);
}

static void grad_unslice(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = with_shape(n->attr, &n->in[0]->type);
  dx[0] = opa(d, OP_slice, dy, &a);
}

/* Input i's part of dy: a slice along the axis from the sizes before it. */
static void grad_concat(Grad *d, const Node *n, Value *dy, Value **dx) {
  int ax = n->attr.axis;
  int64_t at = 0;
  for (int i = 0; i < n->nin; i++) {
    const Type *t = &n->in[i]->type;
    int64_t len = 0;
    sz_is_const(t->dim[ax], &len);    /* constant: the shape rule checks */
    if (d->need[i]) {
      Attr a = with_shape(ir_attr(), t);
      a.start[ax] = at;
      dx[i] = opa(d, OP_slice, dy, &a);
    }
    at += len;
  }
}

/* ---- contractions and windows ------------------------------------------------- */

static Value *mm(Grad *d, Value *a, Value *b, bool ta, bool tb) {
  Attr at = ir_attr();
  at.trans_a = ta;
  at.trans_b = tb;
  Value *in[2] = {a, b};
  return ir_op(d->g, OP_matmul, in, 2, &at, d->loc);
}

static bool batch_is_one(const Type *t) {
  for (int i = 0; i < t->rank - 2; i++)
    if (!is_one(t->dim[i]))
      return false;
  return true;
}

/* [..., M, K] as [(...)*M, K]: a batch of row blocks as one matrix. */
static Value *rows(Grad *d, Value *x) {
  Type t = x->type;
  Size r = t.dim[t.rank - 2];
  for (int i = 0; i < t.rank - 2; i++)
    r = sz_mul(r, t.dim[i]);
  Type flat = ir_type(t.dt, 2, (Size[]){r, t.dim[t.rank - 1]});
  return reshape(d, x, &flat);
}

/* y = op(A) op(B): d op(A) = dy op(B)^T, d op(B) = op(A)^T dy, written back
 * through the transposes. A weight B shared by a batch of A (rank 2, or
 * batch dims of 1) takes its gradient from one GEMM over the batch folded
 * into rows, which sums over the batch as it goes; other broadcasts sum
 * the batched products. */
static void grad_matmul(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *A = n->in[0], *B = n->in[1];
  bool ta = n->attr.trans_a, tb = n->attr.trans_b;
  if (d->need[0])
    dx[0] = unbroadcast(d, ta ? mm(d, B, dy, tb, true) : mm(d, dy, B, false, !tb), &A->type);
  if (d->need[1]) {
    Value *a = A, *g = dy;
    if (!ta && A->type.rank > 2 && batch_is_one(&B->type)) {
      a = rows(d, A);
      g = rows(d, dy);
    }
    dx[1] = unbroadcast(d, tb ? mm(d, g, a, true, ta) : mm(d, a, g, !ta, false), &B->type);
  }
}

static void grad_conv2d(Grad *d, const Node *n, Value *dy, Value **dx) {
  Value *x = n->in[0], *w = n->in[1];
  if (d->need[0]) {
    Attr a = with_shape(n->attr, &x->type);
    dx[0] = ir_op(d->g, OP_conv2d_bwd_data, (Value *[]){dy, w}, 2, &a, d->loc);
  }
  if (d->need[1])
    dx[1] = ir_op(d->g, OP_conv2d_bwd_filter, (Value *[]){dy, x}, 2, &n->attr, d->loc);
}

/* z = conv2d_bwd_data(y, w), the adjoint of x -> conv2d(x, w) (a
 * transposed convolution when used as a forward op). It is linear in y and
 * in w, and <dz, z> = <conv2d(dz, w), y>, so dy = conv2d(dz, w) and
 * dw = conv2d_bwd_filter(y, dz): the forward and the filter gradient of the
 * convolution it transposes, with its attributes. */
static void grad_conv2d_bwd_data(Grad *d, const Node *n, Value *dz, Value **dx) {
  if (d->need[0])
    dx[0] = ir_op(d->g, OP_conv2d, (Value *[]){dz, n->in[1]}, 2, &n->attr, d->loc);
  if (d->need[1])
    dx[1] = ir_op(d->g, OP_conv2d_bwd_filter, (Value *[]){n->in[0], dz}, 2, &n->attr, d->loc);
}

static void grad_maxpool2d(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = ir_op(d->g, OP_maxpool2d_bwd, (Value *[]){dy, n->in[0]}, 2, &n->attr, d->loc);
}

static void grad_avgpool2d(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = with_shape(n->attr, &n->in[0]->type);
  dx[0] = opa(d, OP_avgpool2d_bwd, dy, &a);
}

/* The same mask (seed, stream, counter) scales dy. */
static void grad_dropout(Grad *d, const Node *n, Value *dy, Value **dx) {
  dx[0] = ir_op(d->g, OP_dropout, (Value *[]){dy, n->in[1]}, 2, &n->attr, d->loc);
}

/* The rows dy picked go back to them, summed where an index repeats. */
static void grad_gather(Grad *d, const Node *n, Value *dy, Value **dx) {
  Attr a = with_shape(ir_attr(), &n->in[0]->type);
  dx[0] = ir_op(d->g, OP_scatter_add, (Value *[]){dy, n->in[1]}, 2, &a, d->loc);
}

/* ---- the table ------------------------------------------------------------------ */

const GradRule pass_grad_rules[OP_COUNT] = {
#define OP(name, nin, cat, attrs, shape, grad, lower) grad,
#include "ir/ops.def"
#undef OP
};

/* Shape rules, one per row of ops.def, and the op table itself. A rule
 * checks its inputs, sets the outputs' types, and on a mistake reports it at
 * the node's location naming the op and the shapes involved. Dims are size
 * expressions, so the rules work before any size is bound. */
#include "ir/ir.h"
#include <string.h>

Type ir_type(RtDType dt, int rank, const Size *dims) {
  Type t = {0};
  t.dt = dt;
  t.rank = rank;
  for (int i = 0; i < rank; i++)
    t.dim[i] = dims[i];
  return t;
}

Type ir_type_const(RtDType dt, int rank, const int64_t *dims) {
  Type t = {0};
  t.dt = dt;
  t.rank = rank;
  for (int i = 0; i < rank; i++)
    t.dim[i] = sz_const(dims[i]);
  return t;
}

Type ir_type_unknown(void) {
  Type t = {0};
  t.rank = -1;
  return t;
}

bool ir_type_known(const Type *t) { return t->rank >= 0; }

bool ir_dims_eq(const Type *a, const Type *b) {
  if (a->rank != b->rank)
    return false;
  for (int i = 0; i < a->rank; i++)
    if (!sz_eq(a->dim[i], b->dim[i]))
      return false;
  return true;
}

bool ir_type_eq(const Type *a, const Type *b) { return a->dt == b->dt && ir_dims_eq(a, b); }

bool ir_is_float(RtDType dt) { return dt == RT_F32 || dt == RT_F64; }

const char *ir_type_str(const Graph *g, const Type *t, char *buf, int len) {
  if (!ir_type_known(t)) {
    snprintf(buf, len, "?");
    return buf;
  }
  int n = snprintf(buf, len, "%s[", rt_dtype_name(t->dt));
  for (int i = 0; i < t->rank && n < len; i++) {
    if (i)
      n += snprintf(buf + n, len - n, ", ");
    if (n < len)
      n += sz_print(buf + n, len - n, t->dim[i], g ? g->svars : NULL);
  }
  if (n < len)
    snprintf(buf + n, len - n, "]");
  return buf;
}

int ir_norm_axis(int axis, int rank) {
  if (axis < 0)
    axis += rank;
  return axis >= 0 && axis < rank ? axis : -1;
}

/* ---- reporting ------------------------------------------------------- */

#define TS(t) ir_type_str(g, (t), (char[160]){0}, 160)
#define SZS(s) sz_str(g, (s), (char[64]){0}, 64)

static const char *sz_str(const Graph *g, Size s, char *buf, int len) {
  sz_print(buf, len, s, g->svars);
  return buf;
}

static int fail(Graph *g, Node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(Graph *g, Node *n, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g->diags)
    diag_error(g->diags, n->loc, "%s: %s", op_name(n->op), msg);
  for (int i = 0; i < n->nout; i++)
    n->out[i]->type = ir_type_unknown();
  return -1;
}

static Type *in_t(Node *n, int i) { return &n->in[i]->type; }
static void set_out(Node *n, Type t) { n->out[0]->type = t; }

/* A dim that is not a usable size: negative constant or bad expression. */
static bool dim_ok(Size s) {
  int64_t c;
  return !s.bad && (!sz_is_const(s, &c) || c >= 0);
}

static int check_dims(Graph *g, Node *n, const Type *t) {
  for (int i = 0; i < t->rank; i++) {
    int64_t c;
    if (!dim_ok(t->dim[i]))
      return fail(g, n, "output shape %s has an invalid or non-representable dim %d",
                  TS(t), i);
    if (sz_is_const(t->dim[i], &c) && c >= (1LL << 31))
      return fail(g, n, "dim %d of %s is 2^31 or more", i, TS(t));
  }
  return 0;
}

/* ---- rules ------------------------------------------------------------ */

static int shape_same(Graph *g, Node *n) {
  set_out(n, *in_t(n, 0));
  return 0;
}

static int shape_float(Graph *g, Node *n) {
  if (!ir_is_float(in_t(n, 0)->dt))
    return fail(g, n, "expects a floating-point tensor, got %s", TS(in_t(n, 0)));
  set_out(n, *in_t(n, 0));
  return 0;
}

static int shape_cast(Graph *g, Node *n) {
  Type t = *in_t(n, 0);
  t.dt = n->attr.dtype;
  set_out(n, t);
  return 0;
}

/* numpy broadcasting of two types: dims aligned from the right, equal or 1. */
static int bcast2(Graph *g, Node *n, const Type *a, const Type *b, Type *out) {
  if (a->dt != b->dt)
    return fail(g, n, "operands have different dtypes: %s and %s", TS(a), TS(b));
  int r = a->rank > b->rank ? a->rank : b->rank;
  Type t = {0};
  t.dt = a->dt;
  t.rank = r;
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    Size da = ia >= 0 ? a->dim[ia] : sz_const(1);
    Size db = ib >= 0 ? b->dim[ib] : sz_const(1);
    int64_t ca = -1, cb = -1;
    sz_is_const(da, &ca);
    sz_is_const(db, &cb);
    if (sz_eq(da, db) || cb == 1)
      t.dim[i] = da;
    else if (ca == 1)
      t.dim[i] = db;
    else
      return fail(g, n, "shapes %s and %s do not broadcast (axis %d)", TS(a), TS(b),
                  i - r);
  }
  *out = t;
  return 0;
}

static int shape_bcast(Graph *g, Node *n) {
  Type t = *in_t(n, 0);
  for (int i = 1; i < n->nin; i++)
    if (bcast2(g, n, &t, in_t(n, i), &t) < 0)
      return -1;
  set_out(n, t);
  return 0;
}

static int shape_bcast_float(Graph *g, Node *n) {
  if (!ir_is_float(in_t(n, 0)->dt))
    return fail(g, n, "expects floating-point tensors, got %s", TS(in_t(n, 0)));
  return shape_bcast(g, n);
}

/* eq, ne, lt, le, gt, ge: operands broadcast, the result is bool. */
static int shape_compare(Graph *g, Node *n) {
  if (shape_bcast(g, n) < 0)
    return -1;
  n->out[0]->type.dt = RT_BOOL;
  return 0;
}

/* where(cond, a, b): cond is bool; all three broadcast, a and b agree in dtype. */
static int shape_where(Graph *g, Node *n) {
  Type *c = in_t(n, 0), t;
  if (c->dt != RT_BOOL)
    return fail(g, n, "the condition must be a bool tensor (a comparison such as x > 0), got %s",
                TS(c));
  if (bcast2(g, n, in_t(n, 1), in_t(n, 2), &t) < 0)
    return -1;
  Type cb = *c;
  cb.dt = t.dt;
  if (bcast2(g, n, &t, &cb, &t) < 0)
    return -1;
  set_out(n, t);
  return 0;
}

/* batchnorm(x, weight, bias, mean, var): per-channel vectors along attr.axis. */
static int shape_bnorm(Graph *g, Node *n) {
  Type *x = in_t(n, 0);
  int ax = ir_norm_axis(n->attr.axis, x->rank);
  if (!ir_is_float(x->dt) || x->rank < 2 || ax < 0)
    return fail(g, n, "expects a floating-point tensor of rank 2 or more with a "
                "channel axis %d, got %s", n->attr.axis, TS(x));
  n->attr.axis = ax;
  for (int i = 1; i < 5; i++) {
    Type *p = in_t(n, i);
    if (p->dt != x->dt || p->rank != 1 || !sz_eq(p->dim[0], x->dim[ax]))
      return fail(g, n, "statistic %d is %s, expected %s[%s] for input %s", i, TS(p),
                  rt_dtype_name(x->dt), SZS(x->dim[ax]), TS(x));
  }
  set_out(n, *x);
  return 0;
}

static int shape_perm(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t = *x;
  unsigned seen = 0;
  for (int i = 0; i < x->rank; i++) {
    int p = n->attr.perm[i];
    if (p < 0 || p >= x->rank || (seen & (1u << p)))
      return fail(g, n, "invalid permutation for %s", TS(x));
    seen |= 1u << p;
    t.dim[i] = x->dim[p];
  }
  set_out(n, t);
  return 0;
}

static int attr_type(Graph *g, Node *n, RtDType dt, Type *t);

/* The walk start + i * step, i < n, stays inside [0, len) of an axis:
 * checked where len is a constant; a symbolic axis (the batch) must be
 * walked whole, start 0, step 1. */
static bool walk_ok(Size len, Size n, int64_t start, int64_t step) {
  int64_t l, k;
  if (!sz_is_const(len, &l) || !sz_is_const(n, &k))
    return start == 0 && step == 1 && sz_eq(len, n);
  if (k == 0)
    return true;
  int64_t last = start + (k - 1) * step;
  return step != 0 && start >= 0 && start < l && last >= 0 && last < l;
}

/* slice(x): out (attr.shape) reads x at start + i * step on each axis. */
static int shape_slice(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t;
  if (attr_type(g, n, x->dt, &t) < 0)
    return -1;
  if (t.rank != x->rank)
    return fail(g, n, "slice of %s must keep its rank, got %s", TS(x), TS(&t));
  for (int i = 0; i < x->rank; i++)
    if (!walk_ok(x->dim[i], t.dim[i], n->attr.start[i], n->attr.step[i]))
      return fail(g, n, "axis %d: %s elements from %lld by %lld do not fit in %s", i,
                  SZS(t.dim[i]), (long long)n->attr.start[i], (long long)n->attr.step[i], TS(x));
  set_out(n, t);
  return 0;
}

/* unslice(x): x lands at start + i * step of a tensor of attr.shape. */
static int shape_unslice(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t;
  if (attr_type(g, n, x->dt, &t) < 0)
    return -1;
  if (t.rank != x->rank)
    return fail(g, n, "%s cannot be placed in a tensor of another rank, %s", TS(x), TS(&t));
  for (int i = 0; i < x->rank; i++)
    if (!walk_ok(t.dim[i], x->dim[i], n->attr.start[i], n->attr.step[i]))
      return fail(g, n, "axis %d: %s does not fit in %s from %lld by %lld", i, TS(x), TS(&t),
                  (long long)n->attr.start[i], (long long)n->attr.step[i]);
  set_out(n, t);
  return 0;
}

/* concat(xs...): equal dtypes and ranks, equal dims but along attr.axis. */
static int shape_concat(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t = *x;
  int ax = ir_norm_axis(n->attr.axis, x->rank);
  if (ax < 0)
    return fail(g, n, "axis %d is out of range for %s", n->attr.axis, TS(x));
  n->attr.axis = ax;
  for (int k = 0; k < n->nin; k++)
    if (!sz_is_const(in_t(n, k)->dim[ax], &(int64_t){0}))
      return fail(g, n, "axis %d of input %d, %s, must be a size known at compile time", ax, k,
                  TS(in_t(n, k)));
  for (int k = 1; k < n->nin; k++) {
    Type *y = in_t(n, k);
    bool ok = y->dt == x->dt && y->rank == x->rank;
    for (int i = 0; ok && i < x->rank; i++)
      ok = i == ax || sz_eq(x->dim[i], y->dim[i]);
    if (!ok)
      return fail(g, n, "input %d is %s, which does not match %s but along axis %d", k, TS(y),
                  TS(x), ax);
    t.dim[ax] = sz_add(t.dim[ax], y->dim[ax]);
  }
  if (check_dims(g, n, &t) < 0)
    return -1;
  set_out(n, t);
  return 0;
}

static Size numel(const Type *t) {
  Size s = sz_const(1);
  for (int i = 0; i < t->rank; i++)
    s = sz_mul(s, t->dim[i]);
  return s;
}

static int shape_reshape(Graph *g, Node *n) {
  Type *x = in_t(n, 0);
  Type t = ir_type(x->dt, n->attr.rank, n->attr.shape);
  if (check_dims(g, n, &t) < 0)
    return -1;
  if (!sz_eq(numel(x), numel(&t)))
    return fail(g, n, "cannot reshape %s (%s elements) to %s (%s elements)", TS(x),
                SZS(numel(x)), TS(&t), SZS(numel(&t)));
  set_out(n, t);
  return 0;
}

static int shape_reduce(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t = *x;
  if (n->attr.axes >> x->rank)
    return fail(g, n, "reduction axes out of range for %s", TS(x));
  t.rank = 0;
  for (int i = 0; i < x->rank; i++) {
    if (!(n->attr.axes & (1u << i)))
      t.dim[t.rank++] = x->dim[i];
    else if (n->attr.keepdim)
      t.dim[t.rank++] = sz_const(1);
  }
  if ((n->op == OP_mean) && !ir_is_float(x->dt))
    return fail(g, n, "expects a floating-point tensor, got %s", TS(x));
  set_out(n, t);
  return 0;
}

/* Whether panels [nkb, np, kc, nr] (pack_b, ops.def) hold an op(B) of K
 * rows and N columns: as many blocks and panels as it takes, no more. */
static bool panels_fit(const Type *p, Size K, int64_t N) {
  int64_t d[4], k;
  for (int i = 0; i < 4; i++)
    if (p->rank != 4 || !sz_is_const(p->dim[i], &d[i]) || d[i] < 1)
      return false;
  return sz_is_const(K, &k) && (d[0] - 1) * d[2] < k && k <= d[0] * d[2] &&
         (d[1] - 1) * d[3] < N && N <= d[1] * d[3];
}

/* pack_b(w): op(w) [K, N] as the panels attr.shape (ops.def). */
static int shape_pack_b(Graph *g, Node *n) {
  Type *w = in_t(n, 0), t;
  if (attr_type(g, n, w->dt, &t) < 0)
    return -1;
  int64_t N;
  bool tb = n->attr.trans_b;
  if (w->rank != 2 || !ir_is_float(w->dt) || !sz_is_const(w->dim[tb ? 0 : 1], &N) ||
      !panels_fit(&t, w->dim[tb ? 1 : 0], N))
    return fail(g, n, "cannot pack %s%s as the panels %s", TS(w), tb ? " transposed" : "", TS(&t));
  set_out(n, t);
  return 0;
}

/* op(b)'s K and N: from its last two dims, or from packed panels. */
static bool b_extents(Node *n, const Type *b, Size ka, Size *kb, Size *nn) {
  if (n->attr.packed_n) {
    *kb = ka;
    *nn = sz_const(n->attr.packed_n);
    return !n->attr.trans_b && panels_fit(b, ka, n->attr.packed_n);
  }
  *kb = b->dim[b->rank - (n->attr.trans_b ? 1 : 2)];
  *nn = b->dim[b->rank - (n->attr.trans_b ? 2 : 1)];
  return sz_eq(ka, *kb);
}

/* a[..., M, K] @ b[..., K, N] with broadcast batch dims (transposes by
 * attr), or a[..., M, K] @ panels of a packed B (attr.packed_n). */
static int shape_matmul(Graph *g, Node *n) {
  Type *a = in_t(n, 0), *b = in_t(n, 1);
  if (a->rank < 2 || b->rank < 2 || a->dt != b->dt || !ir_is_float(a->dt))
    return fail(g, n, "expects two floating-point tensors of rank 2 or more with the "
                "same dtype, got %s and %s", TS(a), TS(b));
  Size m = a->dim[a->rank - (n->attr.trans_a ? 1 : 2)];
  Size ka = a->dim[a->rank - (n->attr.trans_a ? 2 : 1)], kb, nn;
  if (!b_extents(n, b, ka, &kb, &nn))
    return fail(g, n, "inner dimensions differ: %s @ %s%s", TS(a), TS(b),
                n->attr.trans_b ? " (second operand transposed)" : "");
  Type ba = *a, bb = *b, t;
  ba.rank -= 2;
  bb.rank = n->attr.packed_n ? 0 : bb.rank - 2;
  if (bcast2(g, n, &ba, &bb, &t) < 0)
    return -1;
  t.dim[t.rank++] = m;
  t.dim[t.rank++] = nn;
  set_out(n, t);
  return 0;
}

/* Output extent of a window, as PyTorch computes it: floor (or ceil) of
 * (in + pads - span) / stride, + 1; in ceil mode a last window that would
 * start in the right padding is dropped. Ceil mode needs a constant extent. */
static Size window_out(Size in, int k, int s, int d, int p0, int p1, bool ceil_mode) {
  Size span = sz_add(in, sz_const(p0 + p1 - (int64_t)d * (k - 1) - 1));
  int64_t c, len;
  if (ceil_mode && sz_is_const(span, &c) && sz_is_const(in, &len)) {
    int64_t o = (c + s - 1) / s + 1;
    if ((o - 1) * s >= len + p0)
      o--;
    return sz_const(o);
  }
  return sz_add(sz_floordiv_const(span, s), sz_const(1));
}

/* Windows over a blocked tensor [N, C/b, H, W, b] (ops.def): the blocked
 * convolution, and the forward pools when their input has the lane axis. */
static bool blocked_window(const Node *n) {
  return n->op == OP_conv2d_nchwc || n->op == OP_conv2d_nchwc_bwd_filter || n->op == OP_conv2d_winograd ||
         ((n->op == OP_maxpool2d || n->op == OP_avgpool2d) && n->in[0]->type.rank == 5);
}

/* A convolution may have a negative padding at the end of an axis (crop):
 * the rows past H + pad_bottom are never read. It is how a transposed
 * convolution's output_padding is written (conv2d_bwd_data as a forward op:
 * the extra rows of its output are the ones its conv2d would crop). */
static int window_check(Graph *g, Node *n, const Type *x, const char *what) {
  const Attr *a = &n->attr;
  bool crop = op_is(n->op, CAT_CONTRACT);
  int rank = blocked_window(n) ? 5 : 4;
  for (int i = 0; i < 2; i++)
    if (a->k[i] < 1 || a->stride[i] < 1 || a->dil[i] < 1 || a->pad[i] < 0 ||
        (a->pad[i + 2] < 0 && !crop))
      return fail(g, n, "kernel, stride and dilation must be positive and padding "
                  "non-negative");
  if (x->rank != rank || !ir_is_float(x->dt))
    return fail(g, n, "expects %s[N, C, H, W%s], got %s", what, rank == 5 ? ", b" : "", TS(x));
  return 0;
}

/* A convolution's output: x's type with O channels (axis 1, plain or
 * blocked) and each spatial axis (2, 3) through the window of n's attrs. */
static int conv_out(Graph *g, Node *n, const Type *x, Size o, Type *out) {
  const Attr *a = &n->attr;
  Type t = *x;
  t.dim[1] = o;
  for (int i = 0; i < 2; i++)
    t.dim[2 + i] = window_out(x->dim[2 + i], a->k[i], a->stride[i], a->dil[i], a->pad[i],
                              a->pad[i + 2], false);
  if (check_dims(g, n, &t) < 0)
    return -1;
  *out = t;
  return 0;
}

/* The output type of conv2d over x with weight w (the node's attributes). */
static int conv_type(Graph *g, Node *n, const Type *x, const Type *w, Type *out) {
  const Attr *a = &n->attr;
  if (window_check(g, n, x, "f32") < 0)
    return -1;
  if (w->rank != 4 || w->dt != x->dt)
    return fail(g, n, "weight must be %s[O, C/groups, KH, KW], got %s",
                rt_dtype_name(x->dt), TS(w));
  int64_t kh, kw;
  if (!sz_is_const(w->dim[2], &kh) || !sz_is_const(w->dim[3], &kw) || kh != a->k[0] ||
      kw != a->k[1])
    return fail(g, n, "weight %s does not match kernel %dx%d", TS(w), a->k[0], a->k[1]);
  Size cg = sz_mul(w->dim[1], sz_const(a->groups));
  if (a->groups < 1 || !sz_eq(cg, x->dim[1]))
    return fail(g, n, "input %s has %s channels but weight %s expects %d group(s) of %s",
                TS(x), SZS(x->dim[1]), TS(w), a->groups, SZS(w->dim[1]));
  return conv_out(g, n, x, w->dim[0], out);
}

static int shape_conv2d(Graph *g, Node *n) {
  Type t;
  if (conv_type(g, n, in_t(n, 0), in_t(n, 1), &t) < 0)
    return -1;
  set_out(n, t);
  return 0;
}

/* conv2d_nchwc(x [N, C/bi, H, W, bi], w [O/b, C/bi, KH, KW, bi, b]) ->
 * [N, O/b, OH, OW, b] (ops.def). */
static int shape_conv2d_nchwc(Graph *g, Node *n) {
  const Attr *a = &n->attr;
  Type *x = in_t(n, 0), *w = in_t(n, 1);
  if (window_check(g, n, x, "f32") < 0)
    return -1;
  int64_t kh, kw, bi, bo, b;
  if (w->rank != 6 || w->dt != x->dt || !sz_is_const(w->dim[2], &kh) ||
      !sz_is_const(w->dim[3], &kw) || kh != a->k[0] || kw != a->k[1] ||
      !sz_is_const(w->dim[4], &bi) || !sz_is_const(w->dim[5], &bo) ||
      !sz_is_const(x->dim[4], &b) || bi != b || bo < 1 || !sz_eq(w->dim[1], x->dim[1]) ||
      a->groups != 1)
    return fail(g, n, "weight %s does not fit a blocked input %s and kernel %dx%d", TS(w),
                TS(x), a->k[0], a->k[1]);
  Type t;
  if (conv_out(g, n, x, w->dim[0], &t) < 0)
    return -1;
  t.dim[4] = w->dim[5];
  set_out(n, t);
  return 0;
}

/* The output type of a pooling window over x (the node's attributes). */
static int pool_type(Graph *g, Node *n, const Type *x, Type *out) {
  const Attr *a = &n->attr;
  if (window_check(g, n, x, "f32") < 0)
    return -1;
  for (int i = 0; i < 2; i++)
    if (a->pad[i] * 2 > a->k[i] || a->pad[i + 2] * 2 > a->k[i])
      return fail(g, n, "padding must be at most half the kernel size");
  Type t = *x;
  for (int i = 0; i < 2; i++)
    t.dim[2 + i] = window_out(x->dim[2 + i], a->k[i], a->stride[i], a->dil[i], a->pad[i],
                              a->pad[i + 2], a->ceil_mode);
  if (check_dims(g, n, &t) < 0)
    return -1;
  *out = t;
  return 0;
}

static int shape_pool2d(Graph *g, Node *n) {
  Type t;
  if (pool_type(g, n, in_t(n, 0), &t) < 0)
    return -1;
  set_out(n, t);
  return 0;
}

/* ---- rules of the ops gradients need ------------------------------------- */

static bool is_one(Size s) {
  int64_t c;
  return sz_is_const(s, &c) && c == 1;
}

/* The type attr.shape names, with x's dtype; -1 if its rank is out of range. */
static int attr_type(Graph *g, Node *n, RtDType dt, Type *t) {
  if (n->attr.rank < 0 || n->attr.rank > IR_MAX_RANK)
    return fail(g, n, "target rank %d is out of range", n->attr.rank);
  *t = ir_type(dt, n->attr.rank, n->attr.shape);
  return check_dims(g, n, t);
}

/* relayout(x) to attr.shape: x [N, C, S...] and its blocked form
 * [N, ceil(C/b), S..., b], either way (ops.def). */
static int shape_relayout(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t;
  if (attr_type(g, n, x->dt, &t) < 0)
    return -1;
  bool to = t.rank == x->rank + 1;
  const Type *flat = to ? x : &t, *blk = to ? &t : x;
  int64_t b, c, cb;
  bool ok = (to || t.rank == x->rank - 1) && flat->rank >= 2 &&
            sz_is_const(blk->dim[blk->rank - 1], &b) && b > 0 && sz_is_const(flat->dim[1], &c) &&
            sz_is_const(blk->dim[1], &cb) && cb == (c + b - 1) / b && sz_eq(flat->dim[0], blk->dim[0]);
  for (int i = 2; ok && i < flat->rank; i++)
    ok = sz_eq(flat->dim[i], blk->dim[i]);
  if (!ok)
    return fail(g, n, "cannot convert %s to the layout of %s", TS(x), TS(&t));
  set_out(n, t);
  return 0;
}

/* expand(x): x broadcast to attr.shape, numpy's rules (aligned right, each
 * dim of x equal to the target's or 1). */
static int shape_expand(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t;
  if (attr_type(g, n, x->dt, &t) < 0)
    return -1;
  bool ok = x->rank <= t.rank;
  for (int i = 0; ok && i < x->rank; i++)
    ok = is_one(x->dim[i]) || sz_eq(x->dim[i], t.dim[t.rank - x->rank + i]);
  if (!ok)
    return fail(g, n, "cannot broadcast %s to %s", TS(x), TS(&t));
  set_out(n, t);
  return 0;
}

/* iota(start): attr.shape of start's dtype, start a numeric scalar. */
static int shape_iota(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t;
  if (x->rank != 0 || x->dt == RT_BOOL)
    return fail(g, n, "expects a numeric scalar start, got %s", TS(x));
  if (attr_type(g, n, x->dt, &t) < 0)
    return -1;
  if (n->attr.axis < 0 || n->attr.axis >= t.rank)
    return fail(g, n, "axis %d is out of range for %s", n->attr.axis, TS(&t));
  set_out(n, t);
  return 0;
}

/* onehot(labels): [..., classes] of attr.dtype, 1 where the class is the
 * label; a label outside [0, classes) gives a row of zeros. */
static int shape_onehot(Graph *g, Node *n) {
  Type *x = in_t(n, 0), t = *x;
  if ((x->dt != RT_I32 && x->dt != RT_I64) || x->rank >= IR_MAX_RANK)
    return fail(g, n, "expects i32 or i64 labels of rank below %d, got %s", IR_MAX_RANK, TS(x));
  if (n->attr.classes < 1 || n->attr.dtype < 0 || n->attr.dtype >= RT_NDTYPES)
    return fail(g, n, "needs at least one class and a valid dtype, got %d classes",
                n->attr.classes);
  t.dt = n->attr.dtype;
  t.dim[t.rank++] = sz_const(n->attr.classes);
  set_out(n, t);
  return 0;
}

/* dropout(x, counter): x * mask / (1 - p), p = attr.alpha; the mask bit of
 * element i is a pure function of (g->seed, attr.stream, counter, i), the
 * counter an integer scalar (a state value the training step advances). */
static int shape_dropout(Graph *g, Node *n) {
  Type *x = in_t(n, 0), *c = in_t(n, 1);
  if (!ir_is_float(x->dt))
    return fail(g, n, "expects a floating-point tensor, got %s", TS(x));
  if (c->rank != 0 || (c->dt != RT_I32 && c->dt != RT_I64))
    return fail(g, n, "the step counter must be an i32 or i64 scalar, got %s", TS(c));
  if (!(n->attr.alpha >= 0 && n->attr.alpha < 1))
    return fail(g, n, "p must be within [0, 1), got %g", n->attr.alpha);
  set_out(n, *x);
  return 0;
}

/* The gradient dy of a window op must have the forward output's type. */
static int check_dy(Graph *g, Node *n, const Type *dy, const Type *y, const Type *x) {
  if (!ir_type_eq(dy, y))
    return fail(g, n, "gradient %s does not match the output %s of the forward op on %s",
                TS(dy), TS(y), TS(x));
  return 0;
}

/* conv2d_bwd_data(dy, w): d(loss)/dx of y = conv2d(x, w); x's shape is
 * attr.shape, which the output extent alone does not determine. */
static int shape_conv2d_bwd_data(Graph *g, Node *n) {
  Type *dy = in_t(n, 0), *w = in_t(n, 1), x, y;
  if (attr_type(g, n, dy->dt, &x) < 0 || conv_type(g, n, &x, w, &y) < 0 ||
      check_dy(g, n, dy, &y, &x) < 0)
    return -1;
  set_out(n, x);
  return 0;
}

/* conv2d_bwd_filter(dy, x): d(loss)/dw of y = conv2d(x, w). */
static int shape_conv2d_bwd_filter(Graph *g, Node *n) {
  Type *dy = in_t(n, 0), *x = in_t(n, 1), y;
  if (dy->rank != 4 || x->rank != 4 || n->attr.groups < 1)
    return fail(g, n, "expects dy and x of rank 4, got %s and %s", TS(dy), TS(x));
  Size cg = sz_floordiv_const(x->dim[1], n->attr.groups);
  Type w = ir_type(x->dt, 4, (Size[]){dy->dim[1], cg, sz_const(n->attr.k[0]),
                                      sz_const(n->attr.k[1])});
  if (conv_type(g, n, x, &w, &y) < 0 || check_dy(g, n, dy, &y, x) < 0)
    return -1;
  set_out(n, w);
  return 0;
}

/* Whether c channels make nb blocks of b lanes. */
static bool blocks_of(Size nb, int64_t c, int64_t b) {
  int64_t k;
  return sz_is_const(nb, &k) && b > 0 && k == (c + b - 1) / b;
}

/* block_weight(w [O, C, KH, KW]) to attr.shape [O/b, C/b, KH, KW, b, b],
 * or with trans_a [C/b, O/b, KH, KW, b, b] (ops.def). */
static int shape_block_weight(Graph *g, Node *n) {
  Type *w = in_t(n, 0), t;
  if (attr_type(g, n, w->dt, &t) < 0)
    return -1;
  int64_t O, C, b, b2;
  bool ok = w->rank == 4 && t.rank == 6 && sz_is_const(w->dim[0], &O) &&
            sz_is_const(w->dim[1], &C) && sz_is_const(t.dim[4], &b) &&
            sz_is_const(t.dim[5], &b2) && b == b2 && sz_eq(t.dim[2], w->dim[2]) &&
            sz_eq(t.dim[3], w->dim[3]);
  bool tr = n->attr.trans_a;
  if (!ok || !blocks_of(t.dim[tr ? 1 : 0], O, b) || !blocks_of(t.dim[tr ? 0 : 1], C, b))
    return fail(g, n, "cannot block the weight %s as %s", TS(w), TS(&t));
  set_out(n, t);
  return 0;
}

/* conv2d_nchwc_bwd_filter(dy [N, O/b, OH, OW, b], x [N, C/b, H, W, b]) ->
 * attr.shape [O, C, KH, KW] (ops.def). */
static int shape_conv2d_nchwc_bwd_filter(Graph *g, Node *n) {
  Type *dy = in_t(n, 0), *x = in_t(n, 1), w, y;
  if (window_check(g, n, x, "f32") < 0 || attr_type(g, n, x->dt, &w) < 0)
    return -1;
  int64_t O, C, b;
  if (w.rank != 4 || !sz_is_const(w.dim[0], &O) || !sz_is_const(w.dim[1], &C) ||
      !sz_is_const(x->dim[4], &b) || !blocks_of(dy->dim[1], O, b) ||
      !blocks_of(x->dim[1], C, b) || !sz_eq(w.dim[2], sz_const(n->attr.k[0])) ||
      !sz_eq(w.dim[3], sz_const(n->attr.k[1])) || n->attr.groups != 1)
    return fail(g, n, "weight %s does not fit blocked dy %s and x %s", TS(&w), TS(dy), TS(x));
  if (conv_out(g, n, x, dy->dim[1], &y) < 0 || check_dy(g, n, dy, &y, x) < 0)
    return -1;
  set_out(n, w);
  return 0;
}

/* maxpool2d_bwd(dy, x) and avgpool2d_bwd(dy): d(loss)/dx of the pooling
 * of x (avgpool needs only x's shape: attr.shape). */
static int shape_pool2d_bwd(Graph *g, Node *n) {
  Type *dy = in_t(n, 0), x, y;
  if (n->op == OP_maxpool2d_bwd)
    x = *in_t(n, 1);
  else if (attr_type(g, n, dy->dt, &x) < 0)
    return -1;
  if (pool_type(g, n, &x, &y) < 0 || check_dy(g, n, dy, &y, &x) < 0)
    return -1;
  set_out(n, x);
  return 0;
}

/* gather(table, idx): rows of table [V, D] picked by integer indices idx
 * [...], giving [..., D] (nn.Embedding); an index outside [0, V) gives a
 * row of zeros. scatter_add(dy, idx): its gradient, table-shaped
 * (attr.shape [V, D]): each row of dy added into the row its index names,
 * so a row picked several times gets the sum. */
static int check_idx(Graph *g, Node *n, const Type *idx) {
  if ((idx->dt != RT_I32 && idx->dt != RT_I64) || idx->rank >= IR_MAX_RANK)
    return fail(g, n, "expects i32 or i64 indices of rank below %d, got %s", IR_MAX_RANK,
                TS(idx));
  return 0;
}

static int shape_gather(Graph *g, Node *n) {
  Type *w = in_t(n, 0), *idx = in_t(n, 1), t = *idx;
  if (w->rank != 2 || !ir_is_float(w->dt))
    return fail(g, n, "expects a floating-point table [V, D], got %s", TS(w));
  if (check_idx(g, n, idx) < 0)
    return -1;
  t.dt = w->dt;
  t.dim[t.rank++] = w->dim[1];
  set_out(n, t);
  return 0;
}

static int shape_scatter_add(Graph *g, Node *n) {
  Type *dy = in_t(n, 0), *idx = in_t(n, 1), w;
  if (check_idx(g, n, idx) < 0 || attr_type(g, n, dy->dt, &w) < 0)
    return -1;
  Type want = *idx;
  want.dt = dy->dt;
  want.dim[want.rank++] = w.rank == 2 ? w.dim[1] : sz_const(-1);
  if (w.rank != 2 || !ir_type_eq(dy, &want))
    return fail(g, n, "expects dy %s for indices %s into a table %s", TS(dy), TS(idx), TS(&w));
  set_out(n, w);
  return 0;
}

/* winograd_filter(w [O/b, C/b, 3, 3, b, b]) -> [16, O/b, C/b, b, b] (ops.def). */
static int shape_winograd_filter(Graph *g, Node *n) {
  Type *w = in_t(n, 0);
  if (w->rank != 6 || !ir_is_float(w->dt) || !sz_eq(w->dim[2], sz_const(3)) ||
      !sz_eq(w->dim[3], sz_const(3)) || !sz_eq(w->dim[4], w->dim[5]))
    return fail(g, n, "expects a blocked 3x3 weight [O/b, C/b, 3, 3, b, b], got %s", TS(w));
  Size d[5] = {sz_const(16), w->dim[0], w->dim[1], w->dim[4], w->dim[5]};
  set_out(n, ir_type(w->dt, 5, d));
  return 0;
}

/* conv2d_winograd(x [N, C/b, H, W, b], u [16, O/b, C/b, b, b]) ->
 * [N, O/b, OH, OW, b] (ops.def): 3x3, stride 1, dilation 1. */
static int shape_conv2d_winograd(Graph *g, Node *n) {
  const Attr *a = &n->attr;
  Type *x = in_t(n, 0), *u = in_t(n, 1), t;
  if (window_check(g, n, x, "f32") < 0)
    return -1;
  bool unit = a->k[0] == 3 && a->k[1] == 3 && a->stride[0] == 1 && a->stride[1] == 1 &&
              a->dil[0] == 1 && a->dil[1] == 1 && a->groups == 1;
  if (!unit || u->rank != 5 || u->dt != x->dt || !sz_eq(u->dim[0], sz_const(16)) ||
      !sz_eq(u->dim[2], x->dim[1]) || !sz_eq(u->dim[3], x->dim[4]) || !sz_eq(u->dim[4], x->dim[4]))
    return fail(g, n, "transformed weight %s does not fit a blocked input %s, 3x3 at stride 1", TS(u),
                TS(x));
  if (conv_out(g, n, x, u->dim[1], &t) < 0)
    return -1;
  t.dim[4] = u->dim[4];
  set_out(n, t);
  return 0;
}

/* ---- the table ---------------------------------------------------------- */

const OpInfo ir_ops[OP_COUNT] = {
#define OP(name, nin, cat, attrs, shape, grad, lower) {#name, nin, cat, attrs, shape},
#include "ir/ops.def"
#undef OP
};

int ir_infer(Graph *g, Node *n) {
  int want = ir_ops[n->op].nin;
  if ((want >= 0 && n->nin != want) || n->nin < 1)
    return fail(g, n, "takes %d input(s), got %d", want, n->nin);
  for (int i = 0; i < n->nin; i++)
    if (!ir_type_known(&n->in[i]->type)) {   /* an earlier error: stay quiet */
      for (int j = 0; j < n->nout; j++)
        n->out[j]->type = ir_type_unknown();
      return -1;
    }
  return ir_ops[n->op].shape(g, n);
}

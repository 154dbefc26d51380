/* Every op of ir/ops.def through the real pipeline (memory planning,
 * codegen, LLVM O3, the ORC JIT), compared with a plain reference written
 * here in double precision. Within eps means, per tensor, max|got - ref| /
 * max|ref| <= eps (DESIGN.md): 1e-5 for f32 (1e-4 for long sums), 1e-12
 * for f64, exact for data movement and integers. Sizes are chosen to hit
 * both the vector bodies and the scalar tails of the generated loops
 * (1, 3, 7, 13, 33, 100, 1000 against 8 or 4 lanes); pooling follows
 * PyTorch's definitions (ceil_mode, count_include_pad). Several graphs put
 * many independent ops side by side, so one compilation covers many cases. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "harness.h"

#define EPS32 1e-5
#define EPS32_LONG 1e-4      /* sums over a hundred terms and more */
#define EPS64 1e-12

static double eps_for(RtDType dt, int64_t terms) {
  if (dt == RT_F64)
    return EPS64;
  if (dt == RT_F32)
    return terms >= 64 ? EPS32_LONG : EPS32;
  return 0;
}

static const int64_t sizes[] = {1, 3, 7, 13, 33, 100, 1000};
enum { NSIZES = sizeof sizes / sizeof *sizes };

/* ---- reference helpers ------------------------------------------------------ */

static Ten ten_like(Model *m, Ten x) { return ten_new(m, x.rank, x.dim); }

/* The index into x of element `flat` of o, x broadcast to o (numpy rules). */
static int64_t bcast_index(const Ten *x, const Ten *o, int64_t flat) {
  int64_t idx = 0, stride = 1;
  for (int i = o->rank - 1, j = x->rank - 1; i >= 0; i--, j--) {
    int64_t c = flat % o->dim[i];
    flat /= o->dim[i];
    if (j < 0)
      continue;
    if (x->dim[j] != 1)
      idx += c * stride;
    stride *= x->dim[j];
  }
  return idx;
}

static Ten bcast_shape(Model *m, Ten a, Ten b) {
  int r = a.rank > b.rank ? a.rank : b.rank;
  int64_t d[RT_MAX_RANK];
  for (int i = 0; i < r; i++) {
    int ia = a.rank - r + i, ib = b.rank - r + i;
    int64_t da = ia >= 0 ? a.dim[ia] : 1, db = ib >= 0 ? b.dim[ib] : 1;
    d[i] = da == 1 ? db : da;
  }
  return ten_new(m, r, d);
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* The value of a unary op; cast rounds to the target dtype as C does (floats
 * to integers truncate, anything non-zero is true). */
static double unary(Op op, double x, RtDType to) {
  switch (op) {
  case OP_neg: return -x;
  case OP_abs: return fabs(x);
  case OP_relu: return x < 0 ? 0 : x;
  case OP_sigmoid: return sigmoid(x);
  case OP_tanh: return tanh(x);
  case OP_exp: return exp(x);
  case OP_log: return log(x);
  case OP_sqrt: return sqrt(x);
  case OP_rsqrt: return 1 / sqrt(x);
  case OP_cast:
    if (to == RT_BOOL)
      return x != 0;
    if (to == RT_F32)
      return (float)x;
    return ir_is_float(to) ? x : trunc(x);
  default: fail_msg("no reference for %s", op_name(op));
  }
  return 0;
}

static double binary(Op op, double a, double b, bool is_int) {
  switch (op) {
  case OP_add: return a + b;
  case OP_sub: return a - b;
  case OP_mul: return a * b;
  case OP_div: return is_int ? trunc(a / b) : a / b;
  case OP_maximum: return isnan(a) || isnan(b) ? NAN : fmax(a, b);
  case OP_minimum: return isnan(a) || isnan(b) ? NAN : fmin(a, b);
  default: fail_msg("no reference for %s", op_name(op));
  }
  return 0;
}

static Ten ref_unary(Model *m, Op op, Ten x, RtDType to) {
  Ten y = ten_like(m, x);
  for (int64_t i = 0; i < x.n; i++)
    y.d[i] = unary(op, x.d[i], to);
  ten_round(y, to);
  return y;
}

static Ten ref_binary(Model *m, Op op, Ten a, Ten b, RtDType dt) {
  Ten y = bcast_shape(m, a, b);
  for (int64_t i = 0; i < y.n; i++)
    y.d[i] = binary(op, a.d[bcast_index(&a, &y, i)], b.d[bcast_index(&b, &y, i)], !ir_is_float(dt));
  ten_round(y, dt);
  return y;
}

/* Element strides of a dense tensor. */
static void strides_of(const Ten *x, int64_t *st) {
  int64_t s = 1;
  for (int i = x->rank - 1; i >= 0; i--) {
    st[i] = s;
    s *= x->dim[i];
  }
}

/* Splits a flat index of x into its multi-index. */
static void unflatten(const Ten *x, int64_t flat, int64_t *idx) {
  for (int i = x->rank - 1; i >= 0; i--) {
    idx[i] = flat % x->dim[i];
    flat /= x->dim[i];
  }
}

/* Channel of element i of x along axis ax. */
static int64_t along(const Ten *x, int ax, int64_t i) {
  int64_t st[RT_MAX_RANK];
  strides_of(x, st);
  return i / st[ax] % x->dim[ax];
}

static Ten ref_batchnorm(Model *m, Ten x, Ten w, Ten b, Ten mean, Ten var, int ax, double eps) {
  Ten y = ten_like(m, x);
  for (int64_t i = 0; i < x.n; i++) {
    int64_t c = along(&x, ax, i);
    y.d[i] = (x.d[i] - mean.d[c]) / sqrt(var.d[c] + eps) * w.d[c] + b.d[c];
  }
  return y;
}

static Ten ref_transpose(Model *m, Ten x, const int *perm) {
  int64_t d[RT_MAX_RANK], st[RT_MAX_RANK], idx[RT_MAX_RANK];
  for (int i = 0; i < x.rank; i++)
    d[i] = x.dim[perm[i]];
  Ten y = ten_new(m, x.rank, d);
  strides_of(&x, st);
  for (int64_t i = 0; i < y.n; i++) {
    unflatten(&y, i, idx);
    int64_t at = 0;
    for (int j = 0; j < y.rank; j++)
      at += idx[j] * st[perm[j]];
    y.d[i] = x.d[at];
  }
  return y;
}

static Ten ref_reduce(Model *m, Op op, Ten x, uint32_t axes, bool keepdim) {
  int64_t d[RT_MAX_RANK], idx[RT_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x.rank; i++)
    if (!(axes & (1u << i)))
      d[r++] = x.dim[i];
    else if (keepdim)
      d[r++] = 1;
  Ten y = ten_new(m, r, d);
  double init = op == OP_max ? -INFINITY : op == OP_min ? INFINITY : 0;
  for (int64_t i = 0; i < y.n; i++)
    y.d[i] = init;
  for (int64_t i = 0; i < x.n; i++) {
    unflatten(&x, i, idx);
    int64_t at = 0;
    for (int j = 0; j < x.rank; j++)
      if (!(axes & (1u << j)))
        at = at * x.dim[j] + idx[j];
    double v = x.d[i], *o = &y.d[at];
    if (op == OP_max)
      *o = isnan(v) || isnan(*o) ? NAN : fmax(*o, v);
    else if (op == OP_min)
      *o = isnan(v) || isnan(*o) ? NAN : fmin(*o, v);
    else
      *o += v;
  }
  if (op == OP_mean && y.n)
    for (int64_t i = 0; i < y.n; i++)
      y.d[i] /= (double)(x.n / y.n);
  return y;
}

static Ten ref_softmax(Model *m, Ten x, int ax, bool log_) {
  Ten y = ten_like(m, x);
  int64_t st[RT_MAX_RANK];
  strides_of(&x, st);
  int64_t len = x.dim[ax], inner = st[ax];
  for (int64_t row = 0; row < x.n / len; row++) {
    const double *p = x.d + row / inner * len * inner + row % inner;
    double *q = y.d + (p - x.d);
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < len; j++)
      mx = fmax(mx, p[j * inner]);
    for (int64_t j = 0; j < len; j++)
      s += exp(p[j * inner] - mx);
    for (int64_t j = 0; j < len; j++)
      q[j * inner] = log_ ? p[j * inner] - mx - log(s) : exp(p[j * inner] - mx) / s;
  }
  return y;
}

/* a[..., M, K] @ b[..., K, N] (op(a), op(b) by the flags), batch dims broadcast. */
static Ten ref_matmul(Model *m, Ten a, Ten b, bool ta, bool tb) {
  int64_t M = a.dim[a.rank - (ta ? 1 : 2)], K = a.dim[a.rank - (ta ? 2 : 1)];
  int64_t N = b.dim[b.rank - (tb ? 2 : 1)];
  Ten ab = a, bb = b;                 /* the batch dims alone */
  ab.rank -= 2;
  bb.rank -= 2;
  Ten yb = bcast_shape(m, ab, bb);
  int64_t d[RT_MAX_RANK];
  memcpy(d, yb.dim, sizeof d);
  d[yb.rank] = M;
  d[yb.rank + 1] = N;
  Ten y = ten_new(m, yb.rank + 2, d);
  for (int64_t bi = 0; bi < yb.n; bi++) {
    const double *pa = a.d + bcast_index(&ab, &yb, bi) * M * K;
    const double *pb = b.d + bcast_index(&bb, &yb, bi) * K * N;
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++)
          s += pa[ta ? k * M + i : i * K + k] * pb[tb ? j * K + k : k * N + j];
        y.d[(bi * M + i) * N + j] = s;
      }
  }
  return y;
}

/* Output extent of a window as PyTorch computes it (pooling_output_shape). */
static int64_t window_out(int64_t in, int k, int s, int d, int p0, int p1, bool ceil_mode) {
  int64_t span = in + p0 + p1 - (int64_t)d * (k - 1) - 1;
  int64_t o = (ceil_mode ? span + s - 1 : span) / s + 1;
  if (ceil_mode && (o - 1) * s >= in + p0)
    o--;
  return o;
}

static Ten ref_conv2d(Model *m, Ten x, Ten w, const Attr *a) {
  int64_t N = x.dim[0], C = x.dim[1], H = x.dim[2], W = x.dim[3], O = w.dim[0];
  int64_t Cg = C / a->groups, Og = O / a->groups;
  int64_t OH = window_out(H, a->k[0], a->stride[0], a->dil[0], a->pad[0], a->pad[2], false);
  int64_t OW = window_out(W, a->k[1], a->stride[1], a->dil[1], a->pad[1], a->pad[3], false);
  Ten y = ten_new(m, 4, (int64_t[]){N, O, OH, OW});
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double s = 0;
          for (int64_t c = 0; c < Cg; c++)
            for (int i = 0; i < a->k[0]; i++)
              for (int j = 0; j < a->k[1]; j++) {
                int64_t ih = oh * a->stride[0] - a->pad[0] + i * a->dil[0];
                int64_t iw = ow * a->stride[1] - a->pad[1] + j * a->dil[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                  continue;
                int64_t ci = o / Og * Cg + c;
                s += x.d[((n * C + ci) * H + ih) * W + iw] *
                     w.d[((o * Cg + c) * a->k[0] + i) * a->k[1] + j];
              }
          y.d[((n * O + o) * OH + oh) * OW + ow] = s;
        }
  return y;
}

/* PyTorch's max_pool2d (dilation too) and avg_pool2d: the average divides
 * by the window clipped to the padded input (count_include_pad) or by the
 * elements inside the input. */
static double pool_window(const Ten *x, const double *plane, Op op, const Attr *a, int64_t oh,
                          int64_t ow) {
  int64_t H = x->dim[2], W = x->dim[3];
  int64_t h0 = oh * a->stride[0] - a->pad[0], w0 = ow * a->stride[1] - a->pad[1];
  double acc = op == OP_maxpool2d ? -INFINITY : 0;
  int64_t cnt = 0;
  for (int i = 0; i < a->k[0]; i++)
    for (int j = 0; j < a->k[1]; j++) {
      int64_t ih = h0 + i * a->dil[0], iw = w0 + j * a->dil[1];
      if (ih < 0 || ih >= H || iw < 0 || iw >= W)
        continue;
      double v = plane[ih * W + iw];
      acc = op == OP_maxpool2d ? (isnan(v) || isnan(acc) ? NAN : fmax(acc, v)) : acc + v;
      cnt++;
    }
  if (op == OP_maxpool2d)
    return acc;
  if (a->count_include_pad) {
    int64_t h1 = h0 + a->k[0], w1 = w0 + a->k[1];
    h1 = h1 < H + a->pad[2] ? h1 : H + a->pad[2];
    w1 = w1 < W + a->pad[3] ? w1 : W + a->pad[3];
    cnt = (h1 - h0) * (w1 - w0);
  }
  return acc / (double)cnt;
}

static Ten ref_pool(Model *m, Op op, Ten x, const Attr *a) {
  int64_t OH = window_out(x.dim[2], a->k[0], a->stride[0], a->dil[0], a->pad[0], a->pad[2], a->ceil_mode);
  int64_t OW = window_out(x.dim[3], a->k[1], a->stride[1], a->dil[1], a->pad[1], a->pad[3], a->ceil_mode);
  Ten y = ten_new(m, 4, (int64_t[]){x.dim[0], x.dim[1], OH, OW});
  int64_t planes = x.dim[0] * x.dim[1];
  for (int64_t p = 0; p < planes; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++)
        y.d[(p * OH + oh) * OW + ow] = pool_window(&x, x.d + p * x.dim[2] * x.dim[3], op, a, oh, ow);
  return y;
}

/* ---- elementwise ------------------------------------------------------------ */

static const Op unary_ops[] = {OP_neg, OP_abs, OP_relu, OP_sigmoid, OP_tanh,
                               OP_exp, OP_log, OP_sqrt, OP_rsqrt};
enum { NUNARY = sizeof unary_ops / sizeof *unary_ops };

static bool float_only(Op op) { return op != OP_neg && op != OP_abs && op != OP_relu; }
static bool positive_domain(Op op) { return op == OP_log || op == OP_sqrt || op == OP_rsqrt; }

/* Every unary op of dtype dt on [n]: x in [-5, 5), p in (0, 50] for the
 * ops defined on positive numbers only. */
static void unary_case(RtDType dt, int64_t n) {
  Model m;
  Graph *g = model_new(&m, "unary");
  Value *x = ir_input(g, "x", TY(dt, n), NOLOC), *p = ir_input(g, "p", TY(dt, n), NOLOC);
  Value *y[NUNARY] = {0};
  for (int i = 0; i < NUNARY; i++) {
    Op op = unary_ops[i];
    if (float_only(op) && !ir_is_float(dt))
      continue;
    y[i] = ir_op1(g, op, positive_domain(op) ? p : x, NOLOC);
    ir_output(g, y[i], op_name(op));
  }
  model_compile(&m);
  bool isf = ir_is_float(dt);
  model_fill(&m, x, isf ? -5 : -100, isf ? 5 : 100, 1);
  model_fill(&m, p, isf ? 1e-3 : 1, 50, 2);
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x), tp = model_get(&m, p);
  for (int i = 0; i < NUNARY; i++) {
    if (!y[i])
      continue;
    char what[96];
    snprintf(what, sizeof what, "%s %s[%lld]", op_name(unary_ops[i]), rt_dtype_name(dt), (long long)n);
    Ten ref = ref_unary(&m, unary_ops[i], positive_domain(unary_ops[i]) ? tp : tx, dt);
    check_ten(what, model_get(&m, y[i]), ref, eps_for(dt, 1));
  }
  model_free(&m);
}

static void test_unary_f32(void **state) {
  for (int i = 0; i < NSIZES; i++)
    unary_case(RT_F32, sizes[i]);
}

static void test_unary_f64(void **state) {
  for (int i = 0; i < NSIZES; i++)
    unary_case(RT_F64, sizes[i]);
}

static void test_unary_i32(void **state) {
  for (int i = 0; i < NSIZES; i++)
    unary_case(RT_I32, sizes[i]);
}

/* Zeros, infinities, NaN and values where exp over- and underflows: each
 * element within eps of the reference (relative, with a floor for results
 * near zero), NaN where the reference is NaN. relu(NaN) is NaN. */
static void specials_case(RtDType dt) {
  static const double xs[] = {0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 20, -20, 88, -88,
                              89, -104, 100, -100, 700, -745, INFINITY, -INFINITY, NAN};
  enum { NX = sizeof xs / sizeof *xs };
  Model m;
  Graph *g = model_new(&m, "specials");
  Value *x = ir_input(g, "x", TY(dt, NX), NOLOC), *y[NUNARY];
  for (int i = 0; i < NUNARY; i++) {
    y[i] = ir_op1(g, unary_ops[i], x, NOLOC);
    ir_output(g, y[i], op_name(unary_ops[i]));
  }
  model_compile(&m);
  Ten tx = ten_new(&m, 1, (int64_t[]){NX});
  memcpy(tx.d, xs, sizeof xs);
  ten_round(tx, dt);
  model_set(&m, x, tx);
  model_run(&m, 0, 1);
  for (int i = 0; i < NUNARY; i++) {
    Ten got = model_get(&m, y[i]), ref = ref_unary(&m, unary_ops[i], tx, dt);
    for (int64_t j = 0; j < NX; j++) {
      char what[96];
      snprintf(what, sizeof what, "%s(%g) %s", op_name(unary_ops[i]), tx.d[j], rt_dtype_name(dt));
      Ten gj = {.rank = 0, .n = 1, .d = &got.d[j]}, rj = {.rank = 0, .n = 1, .d = &ref.d[j]};
      double floor_ = dt == RT_F32 ? 1e-30 : 1e-300;
      if (isfinite(rj.d[0]) && fabs(rj.d[0]) < floor_) {   /* underflow: absolute */
        if (!(fabs(gj.d[0]) <= floor_))
          fail_msg("%s: got %g, expected %g", what, gj.d[0], rj.d[0]);
        continue;
      }
      check_ten(what, gj, rj, eps_for(dt, 1));
    }
  }
  model_free(&m);
}

static void test_unary_specials(void **state) {
  specials_case(RT_F32);
  specials_case(RT_F64);
}

static void cast_case(RtDType from, RtDType to) {
  Model m;
  Graph *g = model_new(&m, "cast");
  Value *x = ir_input(g, "x", TY(from, 3, 37), NOLOC);
  Attr a = ir_attr();
  a.dtype = to;
  Value *y = ir_op(g, OP_cast, &x, 1, &a, NOLOC);
  ir_output(g, y, "y");
  model_compile(&m);
  model_fill(&m, x, from == RT_U8 || to == RT_U8 ? 0 : -100, 100, 3);
  Ten tx = model_get(&m, x);
  tx.d[0] = 0;                        /* a false for bool */
  model_set(&m, x, tx);
  model_run(&m, 0, 1);
  char what[64];
  snprintf(what, sizeof what, "cast %s -> %s", rt_dtype_name(from), rt_dtype_name(to));
  check_ten(what, model_get(&m, y), ref_unary(&m, OP_cast, tx, to), 0);
  model_free(&m);
}

static void test_cast(void **state) {
  static const RtDType pairs[][2] = {
      {RT_F32, RT_F64}, {RT_F64, RT_F32}, {RT_F32, RT_I32}, {RT_I32, RT_F32},
      {RT_F64, RT_I64}, {RT_I64, RT_F64}, {RT_I32, RT_I64}, {RT_I64, RT_I32},
      {RT_F32, RT_BOOL}, {RT_I32, RT_BOOL}, {RT_U8, RT_F32}, {RT_F32, RT_U8},
      {RT_F32, RT_F32}};
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
    cast_case(pairs[i][0], pairs[i][1]);
}

/* ---- broadcast binary ops ---------------------------------------------------- */

static const Op binary_ops[] = {OP_add, OP_sub, OP_mul, OP_div, OP_maximum, OP_minimum};
enum { NBINARY = sizeof binary_ops / sizeof *binary_ops };

typedef struct ShapePair {
  int ra, rb;
  int64_t a[4], b[4];
} ShapePair;

static const ShapePair bcast_shapes[] = {
    {3, 3, {3, 4, 5}, {3, 4, 5}},           /* same */
    {1, 1, {1000}, {1000}},
    {4, 3, {2, 3, 4, 5}, {3, 1, 1}},        /* bias over NCHW */
    {2, 2, {7, 1}, {1, 13}},                /* outer product */
    {0, 2, {0}, {5, 7}},                    /* scalar with a tensor */
    {3, 0, {2, 3, 33}, {0}},
    {3, 2, {3, 1, 5}, {4, 1}},              /* both sides broadcast */
    {3, 1, {2, 3, 33}, {33}},               /* along the vector axis */
    {2, 2, {33, 1}, {33, 9}},
    {4, 4, {2, 1, 3, 1}, {1, 5, 1, 7}},
};

/* All six ops on one pair of shapes; b stays away from 0 for div. */
static void binary_case(RtDType dt, const ShapePair *s) {
  Model m;
  Graph *g = model_new(&m, "binary");
  Value *a = ir_input(g, "a", ir_type_const(dt, s->ra, s->a), NOLOC);
  Value *b = ir_input(g, "b", ir_type_const(dt, s->rb, s->b), NOLOC);
  Value *y[NBINARY] = {0};
  for (int i = 0; i < NBINARY; i++) {
    if (binary_ops[i] == OP_div && !ir_is_float(dt))
      continue;
    y[i] = ir_op2(g, binary_ops[i], a, b, NOLOC);
    ir_output(g, y[i], op_name(binary_ops[i]));
  }
  model_compile(&m);
  double r = ir_is_float(dt) ? 2 : 100;
  model_fill(&m, a, -r, r, 4);
  model_fill(&m, b, r / 4, r, 5);
  Ten tb = model_get(&m, b);
  for (int64_t i = 0; i < tb.n; i += 2)
    tb.d[i] = -tb.d[i];                /* both signs, never near 0 */
  model_set(&m, b, tb);
  model_run(&m, 0, HARNESS_THREADS);
  Ten ta = model_get(&m, a);
  for (int i = 0; i < NBINARY; i++) {
    if (!y[i])
      continue;
    char what[128];
    snprintf(what, sizeof what, "%s %s rank %d [%lld..] with rank %d [%lld..]", op_name(binary_ops[i]),
             rt_dtype_name(dt), s->ra, (long long)s->a[0], s->rb, (long long)s->b[0]);
    check_ten(what, model_get(&m, y[i]), ref_binary(&m, binary_ops[i], ta, tb, dt), eps_for(dt, 1));
  }
  model_free(&m);
}

static void test_binary(void **state) {
  static const RtDType dts[] = {RT_F32, RT_F64, RT_I32};
  for (size_t d = 0; d < 3; d++)
    for (size_t i = 0; i < sizeof bcast_shapes / sizeof *bcast_shapes; i++)
      binary_case(dts[d], &bcast_shapes[i]);
}

/* maximum and minimum propagate NaN from either side, as in PyTorch. */
static void test_binary_nan(void **state) {
  Model m;
  Graph *g = model_new(&m, "nan");
  Value *a = ir_input(g, "a", TY(RT_F32, 20), NOLOC), *b = ir_input(g, "b", TY(RT_F32, 20), NOLOC);
  Value *mx = ir_op2(g, OP_maximum, a, b, NOLOC), *mn = ir_op2(g, OP_minimum, a, b, NOLOC);
  ir_output(g, mx, "max");
  ir_output(g, mn, "min");
  model_compile(&m);
  model_fill_all(&m, 6);
  Ten ta = model_get(&m, a), tb = model_get(&m, b);
  for (int i = 0; i < 20; i += 3)
    (i % 2 ? ta : tb).d[i] = NAN;
  model_set(&m, a, ta);
  model_set(&m, b, tb);
  model_run(&m, 0, 1);
  check_ten("maximum with NaN", model_get(&m, mx), ref_binary(&m, OP_maximum, ta, tb, RT_F32), 0);
  check_ten("minimum with NaN", model_get(&m, mn), ref_binary(&m, OP_minimum, ta, tb, RT_F32), 0);
  model_free(&m);
}

/* Integer a / b is floor division and never traps (0 for a divisor of 0,
 * INT_MIN / -1 wraps); u8 divides, and takes maxima and minima, unsigned. */
static void int_div_case(RtDType dt, Op op, int n, const double *a, const double *b, const double *want) {
  Model m;
  Graph *g = model_new(&m, "int_div");
  Value *va = ir_input(g, "a", TY(dt, n), NOLOC), *vb = ir_input(g, "b", TY(dt, n), NOLOC);
  Value *y = ir_op2(g, op, va, vb, NOLOC);
  ir_output(g, y, "y");
  model_compile(&m);
  Ten ta = model_get(&m, va), tb = model_get(&m, vb);
  memcpy(ta.d, a, n * sizeof *a);
  memcpy(tb.d, b, n * sizeof *b);
  model_set(&m, va, ta);
  model_set(&m, vb, tb);
  model_run(&m, 0, 1);
  Ten got = model_get(&m, y);
  for (int i = 0; i < n; i++)
    if (got.d[i] != want[i])
      fail_msg("%s %s: %g, %g gave %g, want %g", op_name(op), rt_dtype_name(dt), a[i], b[i], got.d[i], want[i]);
  model_free(&m);
}

static void test_int_div(void **state) {
  enum { N = 11 };    /* more than a vector's lanes: the vector and scalar paths */
  static const double a[N] = {7, -7, 7, -7, 6, 0, 5, -2147483648.0, 9, -1, 2147483647};
  static const double b[N] = {2, 2, -2, -2, 3, 0, 0, -1, -4, 5, 1};
  static const double want[N] = {3, -4, -4, 3, 2, 0, 0, -2147483648.0, -3, -1, 2147483647};
  int_div_case(RT_I32, OP_div, N, a, b, want);   /* INT32_MIN / -1 wraps */
  double want64[N];
  memcpy(want64, want, sizeof want);
  want64[7] = 2147483648.0;                        /* fits in i64 */
  int_div_case(RT_I64, OP_div, N, a, b, want64);
  static const double ua[N] = {200, 255, 7, 0, 9, 128, 1, 2, 3, 4, 5};
  static const double ub[N] = {3, 0, 2, 5, 1, 127, 1, 2, 3, 4, 250};
  static const double uq[N] = {66, 0, 3, 0, 9, 1, 1, 1, 1, 1, 0};
  static const double umax[N] = {200, 255, 7, 5, 9, 128, 1, 2, 3, 4, 250};
  int_div_case(RT_U8, OP_div, N, ua, ub, uq);
  int_div_case(RT_U8, OP_maximum, N, ua, ub, umax);
}

/* ---- batchnorm, transpose, reshape ---------------------------------------------- */

static void batchnorm_case(RtDType dt, int rank, const int64_t *dims, int axis, double eps) {
  Model m;
  Graph *g = model_new(&m, "batchnorm");
  int64_t C = dims[axis];
  Value *in[5] = {ir_input(g, "x", ir_type_const(dt, rank, dims), NOLOC)};
  static const char *names[] = {"weight", "bias", "mean", "var"};
  for (int i = 1; i < 5; i++)
    in[i] = ir_param(g, names[i - 1], TY(dt, C), (Init){0}, NOLOC);
  Attr a = ir_attr();
  a.axis = axis;
  a.eps = eps;
  Value *y = ir_op(g, OP_batchnorm, in, 5, &a, NOLOC);
  ir_output(g, y, "y");
  model_compile(&m);
  model_fill_all(&m, 7);
  model_fill(&m, in[4], 0.01, 2, 8);      /* variances are positive */
  model_run(&m, 0, HARNESS_THREADS);
  Ten t[5];
  for (int i = 0; i < 5; i++)
    t[i] = model_get(&m, in[i]);
  char what[64];
  snprintf(what, sizeof what, "batchnorm %s rank %d axis %d", rt_dtype_name(dt), rank, axis);
  check_ten(what, model_get(&m, y), ref_batchnorm(&m, t[0], t[1], t[2], t[3], t[4], axis, eps),
            eps_for(dt, 1));
  model_free(&m);
}

static void test_batchnorm(void **state) {
  for (int d = 0; d < 2; d++) {
    RtDType dt = d ? RT_F64 : RT_F32;
    batchnorm_case(dt, 4, (int64_t[]){2, 3, 5, 5}, 1, 1e-5);
    batchnorm_case(dt, 4, (int64_t[]){2, 3, 5, 5}, 1, 1e-3);
    batchnorm_case(dt, 2, (int64_t[]){7, 13}, 1, 1e-5);
    batchnorm_case(dt, 3, (int64_t[]){2, 33, 9}, 1, 1e-5);
    batchnorm_case(dt, 3, (int64_t[]){2, 5, 33}, 2, 1e-5);   /* channels last */
  }
}

static void transpose_case(RtDType dt, int rank, const int64_t *dims, const int *perm) {
  Model m;
  Graph *g = model_new(&m, "transpose");
  Value *x = ir_input(g, "x", ir_type_const(dt, rank, dims), NOLOC);
  Attr a = ir_attr();
  memcpy(a.perm, perm, sizeof(int) * rank);
  Value *y = ir_op(g, OP_transpose, &x, 1, &a, NOLOC);
  ir_output(g, y, "y");
  model_compile(&m);
  model_fill_all(&m, 9);
  model_run(&m, 0, HARNESS_THREADS);
  char what[64];
  snprintf(what, sizeof what, "transpose %s rank %d perm %d%d%d%d", rt_dtype_name(dt), rank,
           perm[0], perm[1], rank > 2 ? perm[2] : 0, rank > 3 ? perm[3] : 0);
  check_ten(what, model_get(&m, y), ref_transpose(&m, model_get(&m, x), perm), 0);
  model_free(&m);
}

static void test_transpose(void **state) {
  static const int p3[][3] = {{0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}, {0, 1, 2}};
  static const int p4[][4] = {{0, 2, 3, 1}, {0, 3, 1, 2}, {3, 2, 1, 0}, {1, 0, 3, 2}, {0, 1, 3, 2}};
  static const RtDType dts[] = {RT_F32, RT_F64, RT_I32};
  for (int d = 0; d < 3; d++) {
    transpose_case(dts[d], 2, (int64_t[]){7, 13}, (int[]){1, 0});
    transpose_case(dts[d], 2, (int64_t[]){33, 100}, (int[]){1, 0});
    transpose_case(dts[d], 2, (int64_t[]){1, 9}, (int[]){1, 0});
    for (int i = 0; i < 6; i++)
      transpose_case(dts[d], 3, (int64_t[]){3, 5, 17}, p3[i]);
    for (int i = 0; i < 5; i++)
      transpose_case(dts[d], 4, (int64_t[]){2, 3, 5, 9}, p4[i]);
  }
}

static Value *reshape(Graph *g, Value *x, int rank, const int64_t *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  for (int i = 0; i < rank; i++)
    a.shape[i] = sz_const(dims[i]);
  return ir_op(g, OP_reshape, &x, 1, &a, NOLOC);
}

static Ten ten_reshaped(Ten t, int rank, const int64_t *dims) {
  t.rank = rank;
  memcpy(t.dim, dims, sizeof(int64_t) * rank);
  return t;
}

/* A reshape used by another op is a view (no code); the result must be the
 * same as if it were a copy. */
static void test_reshape_view(void **state) {
  Model m;
  Graph *g = model_new(&m, "reshape_view");
  Value *x = ir_input(g, "x", TY(RT_F32, 2, 3, 4), NOLOC), *b = ir_input(g, "b", TY(RT_F32, 4), NOLOC);
  Value *r = ir_op1(g, OP_relu, x, NOLOC);
  Value *v = reshape(g, r, 2, (int64_t[]){6, 4});
  Value *y = ir_op2(g, OP_add, v, b, NOLOC);
  Value *xv = reshape(g, x, 2, (int64_t[]){4, 6});       /* a view of an input */
  Value *z = ir_op1(g, OP_neg, xv, NOLOC);
  ir_output(g, y, "y");
  ir_output(g, z, "z");
  model_compile(&m);
  model_fill_all(&m, 10);
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x), tb = model_get(&m, b);
  Ten tr = ten_reshaped(ref_unary(&m, OP_relu, tx, RT_F32), 2, (int64_t[]){6, 4});
  check_ten("relu |> reshape |> add", model_get(&m, y), ref_binary(&m, OP_add, tr, tb, RT_F32), 0);
  check_ten("reshape(input) |> neg", model_get(&m, z),
            ten_reshaped(ref_unary(&m, OP_neg, tx, RT_F32), 2, (int64_t[]){4, 6}), 0);
  model_free(&m);
}

/* A reshape that is a graph output gets its own bytes in the io region
 * (a copy), whatever runs after it: here later nodes reuse the scratch
 * bytes of the reshaped temporary. */
static void test_reshape_output(void **state) {
  Model m;
  Graph *g = model_new(&m, "reshape_output");
  Value *x = ir_input(g, "x", TY(RT_F32, 6, 8), NOLOC);
  Value *r = ir_op1(g, OP_relu, x, NOLOC);
  Value *y = reshape(g, r, 3, (int64_t[]){2, 3, 8});
  Value *yx = reshape(g, x, 2, (int64_t[]){8, 6});       /* of an input */
  Value *t = ir_op1(g, OP_exp, x, NOLOC);
  t = ir_op1(g, OP_neg, t, NOLOC);
  t = ir_op1(g, OP_abs, t, NOLOC);
  Value *z = ir_op2(g, OP_add, t, x, NOLOC);
  ir_output(g, y, "y");
  ir_output(g, yx, "yx");
  ir_output(g, z, "z");
  model_compile(&m);
  assert_int_equal(y->region, REGION_IO);
  assert_int_equal(yx->region, REGION_IO);
  model_fill_all(&m, 11);
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x);
  check_ten("relu |> reshape as output", model_get(&m, y),
            ten_reshaped(ref_unary(&m, OP_relu, tx, RT_F32), 3, (int64_t[]){2, 3, 8}), 0);
  check_ten("reshape(input) as output", model_get(&m, yx), ten_reshaped(tx, 2, (int64_t[]){8, 6}), 0);
  Ten te = ref_unary(&m, OP_exp, tx, RT_F32);
  check_ten("exp |> neg |> abs |> add", model_get(&m, z), ref_binary(&m, OP_add, te, tx, RT_F32), EPS32);
  model_free(&m);
}

/* ---- reductions ------------------------------------------------------------------- */

static const Op reduce_ops[] = {OP_sum, OP_mean, OP_max, OP_min};

/* Every op over every non-empty set of axes in one graph; keepdim on too
 * when asked (it changes the output's shape, not the loops). */
static void reduce_case(RtDType dt, int rank, const int64_t *dims, bool keepdims) {
  Model m;
  Graph *g = model_new(&m, "reduce");
  Value *x = ir_input(g, "x", ir_type_const(dt, rank, dims), NOLOC);
  enum { MAXOUT = 4 * 15 * 2 };
  Value *y[MAXOUT];
  Attr at[MAXOUT];
  int ny = 0;
  for (uint32_t axes = 1; axes < (1u << rank); axes++)
    for (int keep = 0; keep < 1 + keepdims; keep++)
      for (int o = 0; o < 4; o++) {
        if (reduce_ops[o] == OP_mean && !ir_is_float(dt))
          continue;
        Attr a = ir_attr();
        a.axes = axes;
        a.keepdim = keep;
        at[ny] = a;
        y[ny] = ir_op(g, reduce_ops[o], &x, 1, &a, NOLOC);
        ir_output(g, y[ny++], op_name(reduce_ops[o]));
      }
  model_compile(&m);
  if (ir_is_float(dt))
    model_fill(&m, x, -2, 2, 12);
  else
    model_fill(&m, x, -1000, -10, 12);   /* all negative: max must not start at 0 */
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x);
  for (int i = 0; i < ny; i++) {
    Op op = y[i]->def->op;
    char what[96];
    snprintf(what, sizeof what, "%s %s rank %d [%lld..] axes %#x keepdim %d", op_name(op),
             rt_dtype_name(dt), rank, (long long)dims[0], at[i].axes, at[i].keepdim);
    Ten ref = ref_reduce(&m, op, tx, at[i].axes, at[i].keepdim);
    double eps = op == OP_sum || op == OP_mean ? eps_for(dt, tx.n / (ref.n ? ref.n : 1)) : 0;
    check_ten(what, model_get(&m, y[i]), ref, eps);
  }
  model_free(&m);
}

static void test_reduce(void **state) {
  for (int d = 0; d < 2; d++) {
    RtDType dt = d ? RT_F64 : RT_F32;
    reduce_case(dt, 3, (int64_t[]){5, 7, 9}, true);
    reduce_case(dt, 3, (int64_t[]){2, 3, 35}, false);
    reduce_case(dt, 2, (int64_t[]){4, 100}, false);
    reduce_case(dt, 1, (int64_t[]){1000}, false);
    /* a kept last axis of whole vectors: column mode (one unit, a lane per output) */
    reduce_case(dt, 3, (int64_t[]){5, 6, 16}, true);
    reduce_case(dt, 2, (int64_t[]){37, 24}, false);
  }
  reduce_case(RT_F32, 4, (int64_t[]){3, 1, 13, 2}, false);
  reduce_case(RT_I32, 3, (int64_t[]){5, 7, 9}, false);
  reduce_case(RT_I32, 1, (int64_t[]){1000}, false);
  reduce_case(RT_I32, 2, (int64_t[]){9, 32}, false);
}

/* A column sum fused with its producer, which is also stored (as a bias
 * gradient is: the gate gradients feed a GEMM too), in column mode. */
static void test_reduce_columns_fused(void **state) {
  (void)state;
  Model m;
  Graph *g = model_new(&m, "cols");
  Value *x = ir_input(g, "x", ir_type_const(RT_F32, 2, (int64_t[]){37, 24}), NOLOC);
  Value *y = ir_input(g, "y", ir_type_const(RT_F32, 2, (int64_t[]){37, 24}), NOLOC);
  Value *z = ir_op2(g, OP_add, ir_op2(g, OP_mul, x, y, NOLOC), x, NOLOC);
  Attr a = ir_attr();
  a.axes = 1;
  Value *s = ir_op(g, OP_sum, &z, 1, &a, NOLOC);
  ir_output(g, z, "z");
  ir_output(g, s, "s");
  model_compile(&m);
  model_fill_all(&m, 5);
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x), ty = model_get(&m, y);
  Ten tz = ref_binary(&m, OP_add, ref_binary(&m, OP_mul, tx, ty, RT_F32), tx, RT_F32);
  check_ten("x * y + x", model_get(&m, z), tz, EPS32);
  check_ten("sum over rows of x * y + x", model_get(&m, s), ref_reduce(&m, OP_sum, tz, 1, false),
            eps_for(RT_F32, 37));
  model_free(&m);
}

/* max and min propagate NaN, as torch.amax does. */
static void test_reduce_nan(void **state) {
  Model m;
  Graph *g = model_new(&m, "reduce_nan");
  Value *x = ir_input(g, "x", TY(RT_F32, 4, 37), NOLOC);
  Attr a = ir_attr();
  a.axes = 2;
  Value *mx = ir_op(g, OP_max, &x, 1, &a, NOLOC), *mn = ir_op(g, OP_min, &x, 1, &a, NOLOC);
  ir_output(g, mx, "max");
  ir_output(g, mn, "min");
  model_compile(&m);
  model_fill_all(&m, 13);
  Ten tx = model_get(&m, x);
  tx.d[3] = NAN;                       /* row 0, in a vector */
  tx.d[37 + 36] = NAN;                 /* row 1, in the tail */
  model_set(&m, x, tx);
  model_run(&m, 0, 1);
  check_ten("max with NaN", model_get(&m, mx), ref_reduce(&m, OP_max, tx, 2, false), 0);
  check_ten("min with NaN", model_get(&m, mn), ref_reduce(&m, OP_min, tx, 2, false), 0);
  model_free(&m);
}

/* ---- softmax ------------------------------------------------------------------------ */

static void softmax_case(RtDType dt, int rank, const int64_t *dims, int axis, double center) {
  Model m;
  Graph *g = model_new(&m, "softmax");
  Value *x = ir_input(g, "x", ir_type_const(dt, rank, dims), NOLOC);
  Attr a = ir_attr();
  a.axis = axis;
  Value *s = ir_op(g, OP_softmax, &x, 1, &a, NOLOC), *l = ir_op(g, OP_log_softmax, &x, 1, &a, NOLOC);
  ir_output(g, s, "softmax");
  ir_output(g, l, "log_softmax");
  model_compile(&m);
  model_fill(&m, x, center - 5, center + 5, 14);
  model_run(&m, 0, HARNESS_THREADS);
  Ten tx = model_get(&m, x);
  int ax = ir_norm_axis(axis, rank);
  for (int log_ = 0; log_ < 2; log_++) {
    char what[96];
    snprintf(what, sizeof what, "%s %s rank %d [%lld..] axis %d around %g", log_ ? "log_softmax" : "softmax",
             rt_dtype_name(dt), rank, (long long)dims[0], axis, center);
    check_ten(what, model_get(&m, log_ ? l : s), ref_softmax(&m, tx, ax, log_), eps_for(dt, 1));
  }
  model_free(&m);
}

static void test_softmax(void **state) {
  for (int d = 0; d < 2; d++) {
    RtDType dt = d ? RT_F64 : RT_F32;
    for (int c = 0; c < 2; c++) {
      double center = c ? 1000 : 0;   /* large values must not overflow */
      softmax_case(dt, 2, (int64_t[]){4, 10}, -1, center);
      softmax_case(dt, 2, (int64_t[]){3, 37}, 1, center);
      softmax_case(dt, 2, (int64_t[]){2, 1000}, 1, center);
      softmax_case(dt, 1, (int64_t[]){7}, 0, center);
      softmax_case(dt, 3, (int64_t[]){2, 5, 3}, 1, center);
      softmax_case(dt, 3, (int64_t[]){2, 7, 9}, 1, center);
      softmax_case(dt, 3, (int64_t[]){3, 13, 33}, -1, center);
      softmax_case(dt, 3, (int64_t[]){3, 13, 33}, 0, center);
    }
  }
}

/* ---- matmul ----------------------------------------------------------------------- */

/* Every (M, K, N) of `sizes` below 1000, for one dtype and transpose pair,
 * side by side in one graph. */
static void matmul_sizes_case(RtDType dt, bool ta, bool tb) {
  enum { NS = NSIZES - 1, NMM = NS * NS * NS };
  Model m;
  Graph *g = model_new(&m, "matmul");
  Value *av[NMM], *bv[NMM], *y[NMM];
  int64_t mkn[NMM][3];
  Attr a = ir_attr();
  a.trans_a = ta;
  a.trans_b = tb;
  int n = 0;
  for (int i = 0; i < NS; i++)
    for (int j = 0; j < NS; j++)
      for (int k = 0; k < NS; k++, n++) {
        int64_t M = sizes[i], K = sizes[j], N = sizes[k];
        memcpy(mkn[n], (int64_t[]){M, K, N}, sizeof mkn[n]);
        av[n] = ir_input(g, "a", ta ? TY(dt, K, M) : TY(dt, M, K), NOLOC);
        bv[n] = ir_input(g, "b", tb ? TY(dt, N, K) : TY(dt, K, N), NOLOC);
        y[n] = ir_op(g, OP_matmul, (Value *[]){av[n], bv[n]}, 2, &a, NOLOC);
        ir_output(g, y[n], "y");
      }
  model_compile(&m);
  model_fill_all(&m, 15);
  model_run(&m, 0, HARNESS_THREADS);
  for (int i = 0; i < NMM; i++) {
    char what[96];
    snprintf(what, sizeof what, "matmul %s %c%c M %lld K %lld N %lld", rt_dtype_name(dt), ta ? 't' : 'n',
             tb ? 't' : 'n', (long long)mkn[i][0], (long long)mkn[i][1], (long long)mkn[i][2]);
    Ten ref = ref_matmul(&m, model_get(&m, av[i]), model_get(&m, bv[i]), ta, tb);
    check_ten(what, model_get(&m, y[i]), ref, eps_for(dt, mkn[i][1]));
  }
  model_free(&m);
}

static void test_matmul_sizes(void **state) {
  for (int d = 0; d < 2; d++)
    for (int t = 0; t < 4; t++)
      matmul_sizes_case(d ? RT_F64 : RT_F32, t & 1, t & 2);
}

typedef struct MatmulShapes {
  int ra, rb;
  int64_t a[4], b[4];   /* as stored: transposed operands have their last two dims swapped */
  bool ta, tb;
} MatmulShapes;

static void matmul_batched_cases(RtDType dt, const MatmulShapes *cases, int n) {
  enum { MAXC = 32 };
  assert_true(n <= MAXC);
  Model m;
  Graph *g = model_new(&m, "matmul_batched");
  Value *a[MAXC], *b[MAXC], *y[MAXC];
  for (int i = 0; i < n; i++) {
    const MatmulShapes *s = &cases[i];
    a[i] = ir_input(g, "a", ir_type_const(dt, s->ra, s->a), NOLOC);
    b[i] = ir_input(g, "b", ir_type_const(dt, s->rb, s->b), NOLOC);
    Attr at = ir_attr();
    at.trans_a = s->ta;
    at.trans_b = s->tb;
    y[i] = ir_op(g, OP_matmul, (Value *[]){a[i], b[i]}, 2, &at, NOLOC);
    ir_output(g, y[i], "y");
  }
  model_compile(&m);
  model_fill_all(&m, 16);
  model_run(&m, 0, HARNESS_THREADS);
  for (int i = 0; i < n; i++) {
    const MatmulShapes *s = &cases[i];
    int64_t K = s->a[s->ra - (s->ta ? 2 : 1)];
    char what[96];
    snprintf(what, sizeof what, "matmul %s rank %d @ rank %d %c%c [%lld..] @ [%lld..]", rt_dtype_name(dt),
             s->ra, s->rb, s->ta ? 't' : 'n', s->tb ? 't' : 'n', (long long)s->a[0], (long long)s->b[0]);
    Ten ref = ref_matmul(&m, model_get(&m, a[i]), model_get(&m, b[i]), s->ta, s->tb);
    check_ten(what, model_get(&m, y[i]), ref, eps_for(dt, K));
  }
  model_free(&m);
}

static void test_matmul_batched(void **state) {
  static const MatmulShapes cases[] = {
      {3, 3, {3, 7, 13}, {3, 13, 33}, false, false},     /* [B,M,K] @ [B,K,N] */
      {3, 3, {3, 13, 7}, {3, 33, 13}, true, true},
      {3, 3, {4, 33, 100}, {4, 100, 3}, false, false},
      {3, 3, {5, 1, 3}, {5, 3, 1}, false, false},
      {3, 2, {3, 7, 13}, {13, 33}, false, false},         /* [B,M,K] @ [K,N] */
      {3, 2, {3, 13, 7}, {33, 13}, true, true},
      {3, 2, {2, 100, 33}, {33, 100}, false, false},
      {2, 3, {7, 13}, {3, 13, 5}, false, false},          /* [M,K] @ [B,K,N] */
      {4, 4, {2, 3, 5, 7}, {2, 3, 7, 9}, false, false},   /* two batch dims */
      {4, 2, {2, 3, 5, 7}, {9, 7}, false, true},
      {3, 3, {1, 6, 8}, {1, 8, 6}, false, false},
  };
  for (int d = 0; d < 2; d++)
    matmul_batched_cases(d ? RT_F64 : RT_F32, cases, sizeof cases / sizeof *cases);
}

/* A batch broadcast only in part ([2, 1] against [1, 3]) is refused with a
 * message, not miscompiled. */
static void test_matmul_partial_broadcast(void **state) {
  Model m;
  Graph *g = model_new(&m, "matmul_partial");
  Value *a = ir_input(g, "a", TY(RT_F32, 2, 1, 3, 4), NOLOC);
  Value *b = ir_input(g, "b", TY(RT_F32, 1, 3, 4, 5), NOLOC);
  ir_output(g, ir_op2(g, OP_matmul, a, b, NOLOC), "y");
  CgCtx c;
  char err[256] = "";
  assert_int_equal(model_codegen(&m, &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "matmul"));
  cg_ctx_dispose(&c);
  model_free(&m);
}

/* ---- conv2d ----------------------------------------------------------------------- */

typedef struct ConvCase {
  int64_t n, c, h, w, o;
  int kh, kw, sh, sw, pad[4], dh, dw, groups;
} ConvCase;

static Attr conv_attr(const ConvCase *cc) {
  Attr a = ir_attr();
  a.k[0] = cc->kh, a.k[1] = cc->kw;
  a.stride[0] = cc->sh, a.stride[1] = cc->sw;
  a.dil[0] = cc->dh, a.dil[1] = cc->dw;
  memcpy(a.pad, cc->pad, sizeof a.pad);
  a.groups = cc->groups;
  return a;
}

/* All cases side by side in one graph (one GEMM function to compile). */
static void conv_cases(RtDType dt, const ConvCase *cases, int n) {
  enum { MAXC = 32 };
  assert_true(n <= MAXC);
  Model m;
  Graph *g = model_new(&m, "conv2d");
  Value *x[MAXC], *w[MAXC], *y[MAXC];
  for (int i = 0; i < n; i++) {
    const ConvCase *cc = &cases[i];
    Attr a = conv_attr(cc);
    x[i] = ir_input(g, "x", TY(dt, cc->n, cc->c, cc->h, cc->w), NOLOC);
    w[i] = ir_param(g, "w", TY(dt, cc->o, cc->c / cc->groups, cc->kh, cc->kw), (Init){0}, NOLOC);
    y[i] = ir_op(g, OP_conv2d, (Value *[]){x[i], w[i]}, 2, &a, NOLOC);
    ir_output(g, y[i], "y");
  }
  model_compile(&m);
  model_fill_all(&m, 17);
  model_run(&m, 0, HARNESS_THREADS);
  for (int i = 0; i < n; i++) {
    const ConvCase *cc = &cases[i];
    Attr a = conv_attr(cc);
    char what[160];
    snprintf(what, sizeof what,
             "conv2d %s x[%lld,%lld,%lld,%lld] o %lld k %dx%d s %d,%d pad %d,%d,%d,%d dil %d,%d groups %d",
             rt_dtype_name(dt), (long long)cc->n, (long long)cc->c, (long long)cc->h, (long long)cc->w,
             (long long)cc->o, cc->kh, cc->kw, cc->sh, cc->sw, cc->pad[0], cc->pad[1], cc->pad[2],
             cc->pad[3], cc->dh, cc->dw, cc->groups);
    Ten ref = ref_conv2d(&m, model_get(&m, x[i]), model_get(&m, w[i]), &a);
    check_ten(what, model_get(&m, y[i]), ref, eps_for(dt, cc->c / cc->groups * cc->kh * cc->kw));
  }
  model_free(&m);
}

static void test_conv2d(void **state) {
  static const ConvCase cases[] = {
      /* n  c   h   w   o  kh kw sh sw  pad(t,l,b,r)  dh dw groups */
      {2, 3, 7, 7, 4, 3, 3, 1, 1, {0, 0, 0, 0}, 1, 1, 1},     /* valid */
      {2, 3, 7, 13, 5, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 1},    /* same */
      {2, 3, 13, 7, 4, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 1},    /* stride 2 */
      {1, 2, 13, 13, 3, 3, 3, 2, 1, {0, 1, 0, 1}, 1, 1, 1},
      {2, 3, 7, 7, 4, 2, 2, 1, 1, {0, 0, 1, 1}, 1, 1, 1},     /* same-like: top 0 bottom 1 */
      {2, 3, 7, 8, 4, 4, 4, 1, 1, {1, 2, 2, 1}, 1, 1, 1},
      {2, 3, 13, 13, 4, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2, 1},   /* dilation 2 */
      {1, 2, 13, 7, 3, 3, 3, 2, 1, {0, 0, 0, 0}, 2, 1, 1},
      {2, 4, 7, 7, 6, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 2},     /* groups 2 */
      {2, 6, 13, 13, 6, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 6},   /* depthwise */
      {2, 6, 13, 13, 12, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 6},  /* depthwise, multiplier 2 */
      {2, 8, 7, 7, 5, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 1},     /* 1x1 pointwise */
      {2, 8, 13, 13, 16, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 2},  /* pointwise, grouped */
      {2, 8, 7, 7, 5, 1, 1, 2, 2, {0, 0, 0, 0}, 1, 1, 1},     /* 1x1 stride 2 */
      {1, 3, 7, 13, 4, 3, 5, 2, 1, {1, 2, 1, 2}, 1, 1, 1},    /* rectangular */
      {2, 32, 13, 13, 20, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 1}, /* K = 288 */
      {1, 3, 1, 1, 4, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 1},
      {1, 1, 5, 5, 1, 5, 5, 1, 1, {0, 0, 0, 0}, 1, 1, 1},     /* one output */
  };
  for (int d = 0; d < 2; d++)
    conv_cases(d ? RT_F64 : RT_F32, cases, sizeof cases / sizeof *cases);
}

/* ---- pooling ------------------------------------------------------------------------ */

typedef struct PoolCase {
  Op op;
  int64_t h, w;
  int k, s, pad[4], dil;   /* pad: top, left, bottom, right */
  bool ceil_mode, count_include_pad;
} PoolCase;

static void pool_case(RtDType dt, const PoolCase *pc) {
  Model m;
  Graph *g = model_new(&m, "pool");
  Attr a = ir_attr();
  a.k[0] = a.k[1] = pc->k;
  a.stride[0] = a.stride[1] = pc->s;
  a.dil[0] = a.dil[1] = pc->dil;
  memcpy(a.pad, pc->pad, sizeof a.pad);
  a.ceil_mode = pc->ceil_mode;
  a.count_include_pad = pc->count_include_pad;
  Value *x = ir_input(g, "x", TY(dt, 2, 3, pc->h, pc->w), NOLOC);
  Value *y = ir_op(g, pc->op, &x, 1, &a, NOLOC);
  ir_output(g, y, "y");
  model_compile(&m);
  model_fill_all(&m, 18);
  model_run(&m, 0, HARNESS_THREADS);
  char what[128];
  snprintf(what, sizeof what, "%s %s %lldx%lld k %d s %d pad %d,%d,%d,%d dil %d ceil %d include_pad %d",
           op_name(pc->op), rt_dtype_name(dt), (long long)pc->h, (long long)pc->w, pc->k, pc->s, pc->pad[0],
           pc->pad[1], pc->pad[2], pc->pad[3], pc->dil, pc->ceil_mode, pc->count_include_pad);
  check_ten(what, model_get(&m, y), ref_pool(&m, pc->op, model_get(&m, x), &a), eps_for(dt, 1));
  model_free(&m);
}

static void test_pool(void **state) {
  static const PoolCase cases[] = {
      /* op            h   w  k  s  pad(t,l,b,r) dil ceil  incpad */
      {OP_maxpool2d, 8, 8, 2, 2, {0, 0, 0, 0}, 1, false, false},
      {OP_maxpool2d, 7, 7, 2, 2, {0, 0, 0, 0}, 1, false, false},
      {OP_maxpool2d, 7, 7, 2, 2, {0, 0, 0, 0}, 1, true, false},
      {OP_maxpool2d, 7, 13, 3, 2, {1, 1, 1, 1}, 1, false, false},
      {OP_maxpool2d, 8, 8, 3, 2, {1, 1, 1, 1}, 1, true, false},
      {OP_maxpool2d, 6, 6, 3, 2, {1, 1, 1, 1}, 1, true, false},   /* last window dropped */
      {OP_maxpool2d, 13, 13, 3, 1, {1, 1, 1, 1}, 1, false, false},
      {OP_maxpool2d, 13, 13, 3, 2, {1, 1, 1, 1}, 2, false, false}, /* dilation 2 */
      {OP_maxpool2d, 13, 7, 3, 3, {0, 0, 0, 0}, 1, true, false},
      {OP_avgpool2d, 8, 8, 2, 2, {0, 0, 0, 0}, 1, false, true},
      {OP_avgpool2d, 7, 7, 2, 2, {0, 0, 0, 0}, 1, true, true},
      {OP_avgpool2d, 7, 7, 2, 2, {0, 0, 0, 0}, 1, true, false},
      {OP_avgpool2d, 7, 13, 3, 1, {1, 1, 1, 1}, 1, false, true},
      {OP_avgpool2d, 7, 13, 3, 1, {1, 1, 1, 1}, 1, false, false},
      {OP_avgpool2d, 8, 8, 3, 2, {1, 1, 1, 1}, 1, true, true},
      {OP_avgpool2d, 8, 8, 3, 2, {1, 1, 1, 1}, 1, true, false},
      {OP_avgpool2d, 6, 6, 3, 2, {1, 1, 1, 1}, 1, true, true},
      {OP_avgpool2d, 6, 6, 3, 2, {1, 1, 1, 1}, 1, true, false},
      {OP_avgpool2d, 13, 7, 3, 3, {0, 0, 0, 0}, 1, true, true},
      {OP_avgpool2d, 13, 13, 4, 3, {2, 2, 2, 2}, 1, true, true},
      {OP_avgpool2d, 13, 13, 4, 3, {2, 2, 2, 2}, 1, true, false},
      {OP_maxpool2d, 7, 8, 3, 2, {0, 1, 1, 0}, 1, false, false},   /* asymmetric */
      {OP_maxpool2d, 8, 7, 2, 2, {1, 0, 0, 1}, 1, true, false},
      {OP_avgpool2d, 7, 8, 3, 2, {0, 1, 1, 0}, 1, false, true},
      {OP_avgpool2d, 7, 8, 3, 2, {0, 1, 1, 0}, 1, false, false},
      {OP_avgpool2d, 8, 7, 2, 2, {1, 0, 0, 1}, 1, true, true},
      {OP_avgpool2d, 9, 9, 4, 3, {2, 0, 1, 2}, 1, true, true},
  };
  for (int d = 0; d < 2; d++)
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
      pool_case(d ? RT_F64 : RT_F32, &cases[i]);
}

/* ---- a batch size variable ------------------------------------------------------------ */

/* A small CNN over x[N, 3, 7, 7] compiled for N up to 8: run at 8 and at 3,
 * the first rows agree bit for bit, and the batch-8 run matches the
 * reference chain. Beside it, ops whose loops cross the batch axis: a sum
 * over it and a transpose that moves it inward, checked at each batch. */
typedef struct Cnn {
  Value *x, *w, *bn[4], *fc, *bias, *out, *colsum, *bsum, *tr;
} Cnn;

static Cnn build_cnn(Graph *g) {
  Cnn n;
  int N = ir_size_var(g, "N");
  g->batch_var = N;
  g->max_batch = 8;
  Size xd[] = {sz_var(N), sz_const(3), sz_const(7), sz_const(7)};
  n.x = ir_input(g, "x", ir_type(RT_F32, 4, xd), NOLOC);
  n.w = ir_param(g, "conv.weight", TY(RT_F32, 4, 3, 3, 3), (Init){0}, NOLOC);
  static const char *bn[] = {"bn.weight", "bn.bias", "bn.mean", "bn.var"};
  for (int i = 0; i < 4; i++)
    n.bn[i] = ir_param(g, bn[i], TY(RT_F32, 4), (Init){0}, NOLOC);
  n.fc = ir_param(g, "fc.weight", TY(RT_F32, 5, 36), (Init){0}, NOLOC);
  n.bias = ir_param(g, "fc.bias", TY(RT_F32, 5), (Init){0}, NOLOC);
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
  Value *h = ir_op(g, OP_conv2d, (Value *[]){n.x, n.w}, 2, &a, NOLOC);
  a = ir_attr();
  a.axis = 1;
  h = ir_op(g, OP_batchnorm, (Value *[]){h, n.bn[0], n.bn[1], n.bn[2], n.bn[3]}, 5, &a, NOLOC);
  h = ir_op1(g, OP_relu, h, NOLOC);
  a = ir_attr();
  a.k[0] = a.k[1] = a.stride[0] = a.stride[1] = 2;
  h = ir_op(g, OP_maxpool2d, &h, 1, &a, NOLOC);             /* [N, 4, 3, 3] */
  a = ir_attr();
  a.rank = 2;
  a.shape[0] = sz_var(N);
  a.shape[1] = sz_const(36);
  h = ir_op(g, OP_reshape, &h, 1, &a, NOLOC);
  a = ir_attr();
  a.trans_b = true;
  h = ir_op(g, OP_matmul, (Value *[]){h, n.fc}, 2, &a, NOLOC);
  h = ir_op2(g, OP_add, h, n.bias, NOLOC);
  a = ir_attr();
  a.axis = -1;
  n.out = ir_op(g, OP_log_softmax, &h, 1, &a, NOLOC);
  a = ir_attr();
  a.axes = 4 | 8;
  n.colsum = ir_op(g, OP_mean, &n.x, 1, &a, NOLOC);         /* [N, 3] */
  a = ir_attr();
  a.axes = 1;
  n.bsum = ir_op(g, OP_sum, &n.x, 1, &a, NOLOC);            /* [3, 7, 7] */
  a = ir_attr();
  memcpy(a.perm, (int[]){1, 2, 0, 3}, sizeof(int) * 4);
  n.tr = ir_op(g, OP_transpose, &n.x, 1, &a, NOLOC);        /* [3, 7, N, 7] */
  ir_output(g, n.out, "out");
  ir_output(g, n.colsum, "colsum");
  ir_output(g, n.bsum, "bsum");
  ir_output(g, n.tr, "tr");
  return n;
}

static Ten ref_cnn(Model *m, const Cnn *n) {
  Attr a = ir_attr();
  a.k[0] = a.k[1] = 3;
  a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
  Ten h = ref_conv2d(m, model_get(m, n->x), model_get(m, n->w), &a);
  Ten s[4];
  for (int i = 0; i < 4; i++)
    s[i] = model_get(m, n->bn[i]);
  h = ref_batchnorm(m, h, s[0], s[1], s[2], s[3], 1, 1e-5);
  h = ref_unary(m, OP_relu, h, RT_F64);
  a = ir_attr();
  a.k[0] = a.k[1] = a.stride[0] = a.stride[1] = 2;
  h = ref_pool(m, OP_maxpool2d, h, &a);
  h = ten_reshaped(h, 2, (int64_t[]){h.dim[0], 36});
  h = ref_matmul(m, h, model_get(m, n->fc), false, true);
  h = ref_binary(m, OP_add, h, model_get(m, n->bias), RT_F64);
  return ref_softmax(m, h, 1, true);
}

static Ten ten_rows(Ten t, int64_t rows) {
  t.n = t.n / t.dim[0] * rows;
  t.dim[0] = rows;
  return t;
}

/* The ops over the batch axis, against the reference at the current batch. */
static void check_batch_axis(Model *m, const Cnn *n) {
  Ten x = model_get(m, n->x);
  char what[64];
  snprintf(what, sizeof what, "sum over the batch axis at batch %lld", (long long)m->batch);
  check_ten(what, model_get(m, n->bsum), ref_reduce(m, OP_sum, x, 1, false), EPS32);
  snprintf(what, sizeof what, "transpose of the batch axis at batch %lld", (long long)m->batch);
  check_ten(what, model_get(m, n->tr), ref_transpose(m, x, (int[]){1, 2, 0, 3}), 0);
}

static void test_batch_variable(void **state) {
  Model m;
  Graph *g = model_new(&m, "cnn");
  Cnn n = build_cnn(g);
  model_compile(&m);
  model_fill_all(&m, 19);
  model_fill(&m, n.bn[3], 0.5, 2, 20);
  model_run(&m, 8, HARNESS_THREADS);
  check_batch_axis(&m, &n);
  Ten out8 = model_get(&m, n.out), col8 = model_get(&m, n.colsum);
  check_ten("cnn at batch 8", out8, ref_cnn(&m, &n), EPS32);
  check_ten("mean at batch 8", col8, ref_reduce(&m, OP_mean, model_get(&m, n.x), 12, false), EPS32);
  for (int threads = 1; threads <= 2; threads++) {
    model_run(&m, 3, threads);
    Ten out3 = model_get(&m, n.out), col3 = model_get(&m, n.colsum);
    assert_int_equal(out3.dim[0], 3);
    check_ten("cnn at batch 3", out3, ten_rows(out8, 3), 0);
    check_ten("mean at batch 3", col3, ten_rows(col8, 3), 0);
    const float *o = model_ptr(&m, n.out);
    assert_true(isnan(o[3 * 5]));      /* row 3 untouched (poisoned before the run) */
    check_batch_axis(&m, &n);
  }
  model_free(&m);
}

/* ---- determinism -------------------------------------------------------------------------- */

/* Big enough that every kernel splits into many chunks: the outputs are
 * bit-identical with 1 and 2 threads. */
/* Two GEMMs of different epilogues (whose packing routines are equal
 * code) and two equal elementwise kernels, compiled with the functions of
 * equal code merged (the default) or kept apart (`keep`), and run. */
static void twin_kernels_run(Model *m, bool keep, Value *outs[4]) {
  Graph *g = model_new(m, "twins");
  m->keep_equal_functions = keep;
  Value *a = ir_input(g, "a", TY(RT_F32, 70, 90), NOLOC), *b = ir_input(g, "b", TY(RT_F32, 90, 50), NOLOC);
  Value *x = ir_input(g, "x", TY(RT_F32, 333), NOLOC), *z = ir_input(g, "z", TY(RT_F32, 333), NOLOC);
  outs[0] = ir_op1(g, OP_relu, ir_op2(g, OP_matmul, a, b, NOLOC), NOLOC);
  outs[1] = ir_op2(g, OP_matmul, a, b, NOLOC);
  outs[2] = ir_op1(g, OP_tanh, x, NOLOC);
  outs[3] = ir_op1(g, OP_tanh, z, NOLOC);
  for (int i = 0; i < 4; i++)
    ir_output(g, outs[i], "out");
  model_compile(m);
  model_fill_all(m, 33);
  model_run(m, 0, HARNESS_THREADS);
}

/* Merging functions of equal code changes no bit of any output. */
static void test_equal_functions_same_bits(void **state) {
  Model merged, kept;
  Value *om[4], *ok[4];
  twin_kernels_run(&merged, false, om);
  twin_kernels_run(&kept, true, ok);
  for (int i = 0; i < 4; i++) {
    Ten tm = model_get(&merged, om[i]), tk = model_get(&kept, ok[i]);
    assert_int_equal(tm.n, tk.n);
    assert_memory_equal(tm.d, tk.d, tm.n * sizeof *tm.d);
  }
  model_free(&merged);
  model_free(&kept);
}

static void test_determinism(void **state) {
  Model m;
  Graph *g = model_new(&m, "big");
  Value *x = ir_input(g, "x", TY(RT_F32, 300, 1000), NOLOC);
  Value *a = ir_input(g, "a", TY(RT_F32, 256, 300), NOLOC), *b = ir_input(g, "b", TY(RT_F32, 300, 200), NOLOC);
  Value *bias = ir_input(g, "bias", TY(RT_F32, 1000), NOLOC);
  Value *e = ir_op2(g, OP_mul, ir_op1(g, OP_tanh, x, NOLOC), ir_op2(g, OP_add, x, bias, NOLOC), NOLOC);
  Attr r = ir_attr();
  r.axes = 2;
  Value *s = ir_op(g, OP_sum, &e, 1, &r, NOLOC);
  r.axes = 1;
  Value *cs = ir_op(g, OP_sum, &e, 1, &r, NOLOC);
  Value *mm = ir_op2(g, OP_matmul, a, b, NOLOC);
  Value *outs[] = {e, s, cs, mm};
  for (int i = 0; i < 4; i++)
    ir_output(g, outs[i], "out");
  model_compile(&m);
  model_fill_all(&m, 21);
  Ten first[4];
  for (int t = 1; t <= 2; t++) {
    model_run(&m, 0, t);
    for (int i = 0; i < 4; i++) {
      Ten got = model_get(&m, outs[i]);
      if (t == 1) {
        first[i] = got;
        continue;
      }
      for (int64_t j = 0; j < got.n; j++)
        if (memcmp(&got.d[j], &first[i].d[j], sizeof(double)))
          fail_msg("output %d element %lld: %.9g with 2 threads, %.9g with 1", i, (long long)j,
                   got.d[j], first[i].d[j]);
    }
  }
  Ten tx = model_get(&m, x);
  check_ten("tanh(x) * (x + bias)", first[0],
            ref_binary(&m, OP_mul, ref_unary(&m, OP_tanh, tx, RT_F64),
                       ref_binary(&m, OP_add, tx, model_get(&m, bias), RT_F64), RT_F32), EPS32);
  check_ten("row sums", first[1], ref_reduce(&m, OP_sum, first[0], 2, false), EPS32_LONG);
  check_ten("column sums", first[2], ref_reduce(&m, OP_sum, first[0], 1, false), EPS32_LONG);
  check_ten("matmul 256x300x200", first[3],
            ref_matmul(&m, model_get(&m, a), model_get(&m, b), false, false), EPS32_LONG);
  model_free(&m);
}

/* The thread count is a run-time argument: more threads than the memory
 * plan was made for, or 0 (the default), must stay inside the planned
 * workspaces and give the same bits. Planned for one thread and run with
 * more, many times: the GEMM gives each running task its own slot of the
 * workspace, so a second task at once would write a slot past the plan,
 * into the guard zone the harness checks after each region. */
static void test_threads_beyond_plan(void **state) {
  Model m;
  Graph *g = model_new(&m, "threads");
  m.plan_threads = 1;
  m.guard = 8 << 20;
  Value *a = ir_input(g, "a", TY(RT_F32, 600, 300), NOLOC), *b = ir_input(g, "b", TY(RT_F32, 300, 300), NOLOC);
  Value *x = ir_input(g, "x", TY(RT_F32, 4, 16, 20, 20), NOLOC);
  Value *w = ir_param(g, "w", TY(RT_F32, 32, 16, 3, 3), (Init){0}, NOLOC);
  Attr ca = ir_attr();
  ca.k[0] = ca.k[1] = 3;
  ca.pad[0] = ca.pad[1] = ca.pad[2] = ca.pad[3] = 1;
  Value *outs[] = {ir_op2(g, OP_matmul, a, b, NOLOC), ir_op(g, OP_conv2d, (Value *[]){x, w}, 2, &ca, NOLOC)};
  ir_output(g, outs[0], "mm");
  ir_output(g, outs[1], "conv");
  model_compile(&m);
  model_fill_all(&m, 22);
  model_run(&m, 0, 1);
  Ten want[2] = {model_get(&m, outs[0]), model_get(&m, outs[1])};
  check_ten("matmul 600x300x300", want[0], ref_matmul(&m, model_get(&m, a), model_get(&m, b), false, false),
            EPS32_LONG);
  check_ten("conv2d 16 -> 32", want[1], ref_conv2d(&m, model_get(&m, x), model_get(&m, w), &ca), EPS32_LONG);
  for (int t = 0; t < 30; t++) {
    model_run(&m, 0, t % 3 == 0 ? 0 : t % 3 == 1 ? 2 : 8);
    check_ten("matmul, more threads than planned", model_get(&m, outs[0]), want[0], 0);
    check_ten("conv2d, more threads than planned", model_get(&m, outs[1]), want[1], 0);
  }
  model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary_f32),
      cmocka_unit_test(test_unary_f64),
      cmocka_unit_test(test_unary_i32),
      cmocka_unit_test(test_unary_specials),
      cmocka_unit_test(test_cast),
      cmocka_unit_test(test_binary),
      cmocka_unit_test(test_binary_nan), cmocka_unit_test(test_int_div),
      cmocka_unit_test(test_batchnorm),
      cmocka_unit_test(test_transpose),
      cmocka_unit_test(test_reshape_view),
      cmocka_unit_test(test_reshape_output),
      cmocka_unit_test(test_reduce),
      cmocka_unit_test(test_reduce_columns_fused),
      cmocka_unit_test(test_reduce_nan),
      cmocka_unit_test(test_softmax),
      cmocka_unit_test(test_matmul_sizes),
      cmocka_unit_test(test_matmul_batched),
      cmocka_unit_test(test_matmul_partial_broadcast),
      cmocka_unit_test(test_conv2d),
      cmocka_unit_test(test_pool),
      cmocka_unit_test(test_batch_variable),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_equal_functions_same_bits),
      cmocka_unit_test(test_threads_beyond_plan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

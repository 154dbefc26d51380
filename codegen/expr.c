/* Lowering by expression. An elementwise, broadcast or movement op says what
 * its value is at an index, given its operands' values there (value_at); how
 * each operand is indexed is an affine access (strides per output axis:
 * 0 where it broadcasts, permuted for a transpose, the channel axis for
 * batchnorm's statistics). One emitter builds the loop nest for the whole
 * output from those two rules: rows of the output in parallel chunks, the
 * innermost axis in vectors of the target's width with a scalar tail.
 * Reductions and row-wise ops (softmax) reuse the same access and load
 * helpers with their own loop shapes. A rule may also use the flat index
 * of the output element (onehot's class along the last axis). */
#include "codegen/codegen.h"
#include <math.h>
#include <string.h>

#define MAXR IR_MAX_RANK

/* ---- accesses ------------------------------------------------------------ */

/* Strides of a dense C-order tensor. */
static void dense_strides(const Type *t, Size *st) {
  Size s = sz_const(1);
  for (int i = t->rank - 1; i >= 0; i--) {
    st[i] = s;
    s = sz_mul(s, t->dim[i]);
  }
}

static bool is_one(Size s) {
  int64_t c;
  return sz_is_const(s, &c) && c == 1;
}

/* Strides, per axis of the output, of operand k of node n. */
static void operand_access(const Node *n, int k, Size *acc) {
  const Type *o = &n->out[0]->type, *x = &n->in[k]->type;
  Size st[MAXR];
  dense_strides(x, st);
  for (int i = 0; i < o->rank; i++)
    acc[i] = sz_const(0);
  if (n->op == OP_transpose) {
    for (int i = 0; i < o->rank; i++)
      acc[i] = st[n->attr.perm[i]];
  } else if (n->op == OP_batchnorm && k > 0) {
    acc[n->attr.axis] = sz_const(1);
  } else if (n->op == OP_onehot) {    /* labels: every axis but the classes */
    for (int i = 0; i < x->rank; i++)
      acc[i] = st[i];
  } else {                            /* numpy broadcast, aligned right */
    for (int i = 0; i < x->rank; i++) {
      int oi = o->rank - x->rank + i;
      if (!(is_one(x->dim[i]) && !is_one(o->dim[oi])))
        acc[oi] = st[i];
    }
  }
}

/* An iteration space: dims plus one stride vector per operand (operand 0 is
 * the output), with axes merged wherever every operand is contiguous across
 * them, so a broadcast bias over [N, C, H, W] runs rows of H*W. */
typedef struct Space {
  int rank, nops;
  Size dim[MAXR];
  Size st[8][MAXR];
} Space;

static void space_coalesce(Space *s) {
  int r = 0;
  for (int i = 0; i < s->rank; i++) {
    if (is_one(s->dim[i]) && s->rank > 1)
      continue;                       /* a unit axis moves nothing */
    bool merge = r > 0;
    for (int k = 0; k < s->nops && merge; k++)
      merge = sz_eq(s->st[k][r - 1], sz_mul(s->st[k][i], s->dim[i]));
    if (merge) {
      s->dim[r - 1] = sz_mul(s->dim[r - 1], s->dim[i]);
      for (int k = 0; k < s->nops; k++)
        s->st[k][r - 1] = s->st[k][i];
      continue;
    }
    s->dim[r] = s->dim[i];
    for (int k = 0; k < s->nops; k++)
      s->st[k][r] = s->st[k][i];
    r++;
  }
  if (r == 0) {                       /* a scalar: one element */
    s->dim[0] = sz_const(1);
    for (int k = 0; k < s->nops; k++)
      s->st[k][0] = sz_const(0);
    r = 1;
  }
  s->rank = r;
}

static void space_of(const Node *n, Space *s) {
  const Type *o = &n->out[0]->type;
  s->rank = o->rank;
  s->nops = 1 + n->nin;
  memcpy(s->dim, o->dim, sizeof(Size) * o->rank);
  dense_strides(o, s->st[0]);
  for (int k = 0; k < n->nin; k++)
    operand_access(n, k, s->st[1 + k]);
  space_coalesce(s);
}

/* ---- loads and stores ------------------------------------------------------- */

static LLVMTypeRef vec_type(CgCtx *c, RtDType dt, int w) {
  LLVMTypeRef e = cg_elem_type(c, dt);
  return w > 1 ? LLVMVectorType(e, w) : e;
}

/* w elements of an operand starting at element `at`, `stride` apart (a
 * compile-time stride of 0 splats, 1 is one vector load, else a gather). */
static LLVMValueRef load_w(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef at,
                           Size stride, int w) {
  CgCtx *c = k->c;
  int64_t s = -1;
  sz_is_const(stride, &s);
  LLVMTypeRef et = cg_elem_type(c, dt);
  if (w == 1 || s == 0) {
    LLVMValueRef x = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, base, at), "");
    return cg_splat(c, x, w);
  }
  if (s == 1) {
    LLVMValueRef x = LLVMBuildLoad2(c->b, vec_type(c, dt, w), cg_gep(k, dt, base, at), "");
    LLVMSetAlignment(x, rt_dtype_size(dt));
    return x;
  }
  LLVMValueRef v = LLVMGetUndef(vec_type(c, dt, w)), step = cg_size(k, stride);
  for (int l = 0; l < w; l++) {
    LLVMValueRef off = LLVMBuildAdd(c->b, at, LLVMBuildMul(c->b, cg_i64(c, l), step, ""), "");
    LLVMValueRef x = LLVMBuildLoad2(c->b, et, cg_gep(k, dt, base, off), "");
    v = LLVMBuildInsertElement(c->b, v, x, LLVMConstInt(c->t_i32, l, 0), "");
  }
  return v;
}

static void store_w(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef at,
                    LLVMValueRef v) {
  LLVMValueRef st = LLVMBuildStore(k->c->b, v, cg_gep(k, dt, base, at));
  LLVMSetAlignment(st, rt_dtype_size(dt));
}

/* ---- value rules -------------------------------------------------------- */

static LLVMValueRef fconst(CgCtx *c, LLVMValueRef like, double x) {
  LLVMTypeRef t = LLVMTypeOf(like);
  bool vec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMTypeRef et = vec ? LLVMGetElementType(t) : t;
  LLVMValueRef s = LLVMGetTypeKind(et) == LLVMIntegerTypeKind
                       ? LLVMConstInt(et, (long long)x, 1)
                       : LLVMConstReal(et, x);
  return vec ? cg_splat(c, s, LLVMGetVectorSize(t)) : s;
}

static LLVMValueRef call1(CgCtx *c, const char *intr, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return cg_intrinsic(c, intr, &t, 1, &x, 1);
}

static LLVMValueRef call2(CgCtx *c, const char *intr, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return cg_intrinsic(c, intr, &t, 1, (LLVMValueRef[]){x, y}, 2);
}

static LLVMValueRef cast_to(CgCtx *c, LLVMValueRef x, RtDType from, RtDType to, int w) {
  LLVMTypeRef t = vec_type(c, to, w);
  bool ff = ir_is_float(from), ft = ir_is_float(to);
  bool sfrom = from == RT_I32 || from == RT_I64;
  if (from == to)
    return x;
  if (to == RT_BOOL) {
    LLVMValueRef nz = ff ? LLVMBuildFCmp(c->b, LLVMRealUNE, x, fconst(c, x, 0), "")
                         : LLVMBuildICmp(c->b, LLVMIntNE, x, fconst(c, x, 0), "");
    return LLVMBuildZExt(c->b, nz, t, "");
  }
  if (ff && ft)
    return LLVMBuildFPCast(c->b, x, t, "");
  if (ff)
    return to == RT_U8 ? LLVMBuildFPToUI(c->b, x, t, "") : LLVMBuildFPToSI(c->b, x, t, "");
  if (ft)
    return sfrom ? LLVMBuildSIToFP(c->b, x, t, "") : LLVMBuildUIToFP(c->b, x, t, "");
  return LLVMBuildIntCast2(c->b, x, t, sfrom, "");
}

static bool is_fp(LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind)
    t = LLVMGetElementType(t);
  return LLVMGetTypeKind(t) != LLVMIntegerTypeKind;
}

static LLVMValueRef arith(CgCtx *c, Op op, LLVMValueRef a, LLVMValueRef b) {
  bool f = is_fp(a);
  switch (op) {
  case OP_add: return f ? LLVMBuildFAdd(c->b, a, b, "") : LLVMBuildAdd(c->b, a, b, "");
  case OP_sub: return f ? LLVMBuildFSub(c->b, a, b, "") : LLVMBuildSub(c->b, a, b, "");
  case OP_mul: return f ? LLVMBuildFMul(c->b, a, b, "") : LLVMBuildMul(c->b, a, b, "");
  case OP_div: return f ? LLVMBuildFDiv(c->b, a, b, "") : LLVMBuildSDiv(c->b, a, b, "");
  case OP_maximum:
  case OP_max:
    if (f)
      return call2(c, "llvm.maximum", a, b);    /* NaN propagates, as in PyTorch */
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, a, b, ""), a, b, "");
  case OP_minimum:
  case OP_min:
    if (f)
      return call2(c, "llvm.minimum", a, b);
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b, "");
  default: return NULL;
  }
}

/* 1 (true) or 0 in the type of `like`, from an i1 (vector). */
static LLVMValueRef from_bool(CgCtx *c, LLVMValueRef b, LLVMValueRef like) {
  return LLVMBuildSelect(c->b, b, fconst(c, like, 1), fconst(c, like, 0), "");
}

/* sign(x): -1, 0 or 1; x itself where it is zero or NaN (keeps -0 and NaN). */
static LLVMValueRef sign_of(CgCtx *c, LLVMValueRef x) {
  bool f = is_fp(x);
  LLVMValueRef z = fconst(c, x, 0);
  LLVMValueRef pos = f ? LLVMBuildFCmp(c->b, LLVMRealOGT, x, z, "") : LLVMBuildICmp(c->b, LLVMIntSGT, x, z, "");
  LLVMValueRef neg = f ? LLVMBuildFCmp(c->b, LLVMRealOLT, x, z, "") : LLVMBuildICmp(c->b, LLVMIntSLT, x, z, "");
  LLVMValueRef r = LLVMBuildSelect(c->b, neg, fconst(c, x, -1), x, "");
  return LLVMBuildSelect(c->b, pos, fconst(c, x, 1), r, "");
}

/* onehot: 1 where the index along the last axis (idx mod classes) is the label. */
static LLVMValueRef onehot_at(CgCtx *c, const Node *n, LLVMValueRef label, LLVMValueRef idx, int w) {
  LLVMValueRef cls = LLVMBuildSRem(c->b, idx, cg_splat(c, cg_i64(c, n->attr.classes), w), "");
  LLVMValueRef lab = LLVMBuildIntCast2(c->b, label, LLVMTypeOf(idx), 1, "");
  LLVMValueRef hit = LLVMBuildICmp(c->b, LLVMIntEQ, lab, cls, "");
  LLVMTypeRef t = vec_type(c, n->attr.dtype, w);
  return from_bool(c, hit, LLVMConstNull(t));
}

/* The value of node n given its operands' values (scalars or vectors of w)
 * at flat output indices idx (i64, a vector of w lanes when w > 1). */
static LLVMValueRef value_at(CgCtx *c, const Node *n, LLVMValueRef *a, LLVMValueRef idx, int w) {
  LLVMValueRef x = a[0];
  switch (n->op) {
  case OP_neg:
    return is_fp(x) ? LLVMBuildFNeg(c->b, x, "") : LLVMBuildNeg(c->b, x, "");
  case OP_abs:
    if (is_fp(x))
      return call1(c, "llvm.fabs", x);
    return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, x, fconst(c, x, 0), ""),
                           LLVMBuildNeg(c->b, x, ""), x, "");
  case OP_relu: {                     /* x < 0 ? 0 : x keeps NaN, as torch.relu */
    LLVMValueRef neg = is_fp(x) ? LLVMBuildFCmp(c->b, LLVMRealOLT, x, fconst(c, x, 0), "")
                                : LLVMBuildICmp(c->b, LLVMIntSLT, x, fconst(c, x, 0), "");
    return LLVMBuildSelect(c->b, neg, fconst(c, x, 0), x, "");
  }
  case OP_sigmoid: return cg_vsigmoid(c, x);
  case OP_tanh: return cg_vtanh(c, x);
  case OP_exp: return cg_vexp(c, x);
  case OP_log: return cg_vlog(c, x);
  case OP_sqrt: return call1(c, "llvm.sqrt", x);
  case OP_rsqrt: return LLVMBuildFDiv(c->b, fconst(c, x, 1), call1(c, "llvm.sqrt", x), "");
  case OP_cast: return cast_to(c, x, n->in[0]->type.dt, n->attr.dtype, w);
  case OP_transpose: return x;
  case OP_batchnorm: {                /* (x - mean) * weight / sqrt(var + eps) + bias */
    LLVMValueRef inv = LLVMBuildFDiv(
        c->b, a[1], call1(c, "llvm.sqrt", LLVMBuildFAdd(c->b, a[4], fconst(c, x, n->attr.eps), "")),
        "");
    LLVMValueRef y = LLVMBuildFMul(c->b, LLVMBuildFSub(c->b, x, a[3], ""), inv, "");
    return LLVMBuildFAdd(c->b, y, a[2], "");
  }
  case OP_step: {                     /* x > 0: 1, else 0 (NaN too) */
    LLVMValueRef pos = is_fp(x) ? LLVMBuildFCmp(c->b, LLVMRealOGT, x, fconst(c, x, 0), "")
                                : LLVMBuildICmp(c->b, LLVMIntSGT, x, fconst(c, x, 0), "");
    return from_bool(c, pos, x);
  }
  case OP_sign: return sign_of(c, x);
  case OP_expand: return x;
  case OP_onehot: return onehot_at(c, n, x, idx, w);
  default:
    return arith(c, n->op, a[0], a[1]);
  }
}

/* ---- the elementwise loop nest --------------------------------------------- */

typedef struct ExprCtx {
  const Node *n;
  Space s;
} ExprCtx;

/* Offsets (in elements) of every operand at row `row` of the space: the
 * row index is split over the outer axes, innermost first. */
static void row_offsets(CgKernel *k, const Space *s, LLVMValueRef row, LLVMValueRef *off) {
  CgCtx *c = k->c;
  for (int op = 0; op < s->nops; op++)
    off[op] = cg_i64(c, 0);
  LLVMValueRef rem = row;
  for (int i = s->rank - 2; i >= 0; i--) {
    LLVMValueRef d = cg_size(k, s->dim[i]);
    LLVMValueRef idx = i ? LLVMBuildSRem(c->b, rem, d, "") : rem;
    if (i)
      rem = LLVMBuildSDiv(c->b, rem, d, "");
    for (int op = 0; op < s->nops; op++)
      if (s->st[op][i].nt)
        off[op] = LLVMBuildAdd(c->b, off[op],
                               LLVMBuildMul(c->b, idx, cg_size(k, s->st[op][i]), ""), "");
  }
}

/* Flat indices at, at + 1, ..., at + w - 1 of the output (the output is
 * dense, so its innermost stride is 1): what index-dependent rules see. */
static LLVMValueRef lane_index(CgCtx *c, LLVMValueRef at, int w) {
  if (w == 1)
    return at;
  LLVMValueRef lanes[64];
  for (int l = 0; l < w; l++)
    lanes[l] = cg_i64(c, l);
  return LLVMBuildAdd(c->b, cg_splat(c, at, w), LLVMConstVector(lanes, w), "");
}

/* One step of w elements at inner position j of a row. */
static void expr_step(CgKernel *k, ExprCtx *e, LLVMValueRef *ptr, LLVMValueRef *off,
                      LLVMValueRef j, int w) {
  CgCtx *c = k->c;
  const Node *n = e->n;
  int last = e->s.rank - 1;
  LLVMValueRef args[8];
  for (int i = 0; i < n->nin; i++) {
    Size st = e->s.st[1 + i][last];
    LLVMValueRef at = LLVMBuildAdd(c->b, off[1 + i],
                                   LLVMBuildMul(c->b, j, cg_size(k, st), ""), "");
    args[i] = load_w(k, n->in[i]->type.dt, ptr[1 + i], at, st, w);
  }
  LLVMValueRef at = LLVMBuildAdd(c->b, off[0], j, "");
  LLVMValueRef v = value_at(c, n, args, lane_index(c, at, w), w);
  store_w(k, n->out[0]->type.dt, ptr[0], at, v);
}

/* Units are blocks of up to BLOCK elements of a row, so a single long row
 * (a flattened elementwise op) still spreads over threads. */
#define BLOCK 4096

static void expr_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  ExprCtx *e = user;
  CgCtx *c = k->c;
  const Node *n = e->n;
  int w = cg_lanes(c, rt_dtype_size(n->out[0]->type.dt));
  LLVMValueRef ptr[8], off[8];
  ptr[0] = cg_value_ptr(k, n->out[0]);
  for (int i = 0; i < n->nin; i++)
    ptr[1 + i] = cg_value_ptr(k, n->in[i]);
  LLVMValueRef len = cg_size(k, e->s.dim[e->s.rank - 1]);
  LLVMValueRef nblk = LLVMBuildSDiv(c->b, LLVMBuildAdd(c->b, len, cg_i64(c, BLOCK - 1), ""),
                                    cg_i64(c, BLOCK), "");
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef row = LLVMBuildSDiv(c->b, u, nblk, "");
  LLVMValueRef j0 = LLVMBuildMul(c->b, LLVMBuildSRem(c->b, u, nblk, ""), cg_i64(c, BLOCK), "");
  LLVMValueRef j1 = LLVMBuildAdd(c->b, j0, cg_i64(c, BLOCK), "");
  j1 = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, j1, len, ""), j1, len, "");
  row_offsets(k, &e->s, row, off);
  /* vector body: j + w <= j1 */
  LLVMValueRef vend = LLVMBuildSub(c->b, j1, cg_i64(c, w - 1), "");
  CgLoop V, T;
  LLVMValueRef j = cg_for(k, &V, j0, vend, cg_i64(c, w));
  expr_step(k, e, ptr, off, j, w);
  cg_endfor(k, &V);
  /* scalar tail from where the vectors stopped */
  LLVMValueRef nvec = LLVMBuildSDiv(c->b, LLVMBuildSub(c->b, j1, j0, ""), cg_i64(c, w), "");
  LLVMValueRef jt = LLVMBuildAdd(c->b, j0, LLVMBuildMul(c->b, nvec, cg_i64(c, w), ""), "");
  j = cg_for(k, &T, jt, j1, cg_i64(c, 1));
  expr_step(k, e, ptr, off, j, 1);
  cg_endfor(k, &T);
  cg_endfor(k, &U);
}

static LLVMValueRef product(CgKernel *k, const Size *dims, int from, int to) {
  LLVMValueRef p = cg_i64(k->c, 1);
  for (int i = from; i < to; i++)
    p = LLVMBuildMul(k->c->b, p, cg_size(k, dims[i]), "");
  return p;
}

void cg_expr_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  ExprCtx e = {.n = k->n};
  space_of(k->n, &e.s);
  LLVMValueRef rows = product(k, e.s.dim, 0, e.s.rank - 1);
  LLVMValueRef len = cg_size(k, e.s.dim[e.s.rank - 1]);
  LLVMValueRef nblk = LLVMBuildSDiv(c->b, LLVMBuildAdd(c->b, len, cg_i64(c, BLOCK - 1), ""),
                                    cg_i64(c, BLOCK), "");
  LLVMValueRef units = LLVMBuildMul(c->b, rows, nblk, "");
  LLVMValueRef per = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, len, cg_i64(c, BLOCK), ""),
                                     len, cg_i64(c, BLOCK), "");
  cg_parallel(k, name, units, cg_grain(k, per), expr_task, &e);
}

/* ---- reductions -------------------------------------------------------------- */

/* One unit per output element; inside, loops over the reduced axes with the
 * innermost one in vectors when it is contiguous. Each element is reduced in
 * a fixed order, so results do not depend on the thread count. */
typedef struct RedCtx {
  const Node *n;
  int nkeep, nred;
  Size keep_dim[MAXR], keep_st[MAXR];
  Size red_dim[MAXR], red_st[MAXR];
} RedCtx;

/* Where an accumulator starts: 0, or for max (min) the lowest (highest)
 * value of the type: an infinity, or the signed integer extreme of its width
 * (arith compares integers signed). */
static LLVMValueRef red_init(CgCtx *c, const Node *n, LLVMTypeRef t) {
  LLVMValueRef z = LLVMConstNull(t);
  if (n->op != OP_max && n->op != OP_min)
    return z;
  bool lowest = n->op == OP_max;
  if (is_fp(z))
    return fconst(c, z, lowest ? -INFINITY : INFINITY);
  bool vec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMTypeRef et = vec ? LLVMGetElementType(t) : t;
  unsigned long long top = 1ULL << (LLVMGetIntTypeWidth(et) - 1);
  LLVMValueRef s = LLVMConstInt(et, lowest ? top : top - 1, 0);
  return vec ? cg_splat(c, s, LLVMGetVectorSize(t)) : s;
}

static Op red_combine(Op op) { return op == OP_max || op == OP_min ? op : OP_add; }

/* Horizontal combine of a vector accumulator, lane by lane in order. */
static LLVMValueRef red_lanes(CgCtx *c, Op op, LLVMValueRef v, int w) {
  LLVMValueRef r = LLVMBuildExtractElement(c->b, v, LLVMConstInt(c->t_i32, 0, 0), "");
  for (int l = 1; l < w; l++)
    r = arith(c, op, r, LLVMBuildExtractElement(c->b, v, LLVMConstInt(c->t_i32, l, 0), ""));
  return r;
}

/* Accumulates the reduced axes from `ax` inward into *acc (vector) and *sacc. */
static void red_loops(CgKernel *k, RedCtx *r, int ax, LLVMValueRef base, LLVMValueRef in,
                      LLVMValueRef accp, LLVMValueRef saccp, int w) {
  CgCtx *c = k->c;
  RtDType dt = r->n->in[0]->type.dt;
  Op op = red_combine(r->n->op);
  LLVMValueRef len = cg_size(k, r->red_dim[ax]);
  if (ax < r->nred - 1) {
    CgLoop L;
    LLVMValueRef i = cg_for(k, &L, cg_i64(c, 0), len, cg_i64(c, 1));
    LLVMValueRef b = LLVMBuildAdd(c->b, base, LLVMBuildMul(c->b, i, cg_size(k, r->red_st[ax]), ""), "");
    red_loops(k, r, ax + 1, b, in, accp, saccp, w);
    cg_endfor(k, &L);
    return;
  }
  Size st = r->red_st[ax];
  bool contig = is_one(st);
  LLVMValueRef jt = cg_i64(c, 0);
  if (contig && w > 1) {
    CgLoop V;
    LLVMValueRef vend = LLVMBuildSub(c->b, len, cg_i64(c, w - 1), "");
    LLVMValueRef j = cg_for(k, &V, cg_i64(c, 0), vend, cg_i64(c, w));
    LLVMValueRef x = load_w(k, dt, in, LLVMBuildAdd(c->b, base, j, ""), st, w);
    LLVMTypeRef vt = vec_type(c, dt, w);
    LLVMBuildStore(c->b, arith(c, op, LLVMBuildLoad2(c->b, vt, accp, ""), x), accp);
    cg_endfor(k, &V);
    jt = LLVMBuildMul(c->b, LLVMBuildSDiv(c->b, len, cg_i64(c, w), ""), cg_i64(c, w), "");
  }
  CgLoop T;
  LLVMValueRef j = cg_for(k, &T, jt, len, cg_i64(c, 1));
  LLVMValueRef at = LLVMBuildAdd(c->b, base, LLVMBuildMul(c->b, j, cg_size(k, st), ""), "");
  LLVMValueRef x = load_w(k, dt, in, at, st, 1);
  LLVMTypeRef et = cg_elem_type(c, dt);
  LLVMBuildStore(c->b, arith(c, op, LLVMBuildLoad2(c->b, et, saccp, ""), x), saccp);
  cg_endfor(k, &T);
}

static LLVMValueRef entry_alloca(CgKernel *k, LLVMTypeRef t) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(c->b, first);
  else
    LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(c->b, t, "");
  LLVMPositionBuilderAtEnd(c->b, here);
  return a;
}

static void red_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  RedCtx *r = user;
  CgCtx *c = k->c;
  const Node *n = r->n;
  RtDType dt = n->in[0]->type.dt;
  int w = cg_lanes(c, rt_dtype_size(dt));
  LLVMTypeRef vt = vec_type(c, dt, w), et = cg_elem_type(c, dt);
  LLVMValueRef accp = entry_alloca(k, vt), saccp = entry_alloca(k, et);
  LLVMValueRef in = cg_value_ptr(k, n->in[0]), out = cg_value_ptr(k, n->out[0]);
  Op op = red_combine(n->op);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef base = cg_i64(c, 0), rem = u;
  for (int i = r->nkeep - 1; i >= 0; i--) {
    LLVMValueRef d = cg_size(k, r->keep_dim[i]);
    LLVMValueRef idx = LLVMBuildSRem(c->b, rem, d, "");
    rem = LLVMBuildSDiv(c->b, rem, d, "");
    base = LLVMBuildAdd(c->b, base, LLVMBuildMul(c->b, idx, cg_size(k, r->keep_st[i]), ""), "");
  }
  LLVMBuildStore(c->b, red_init(c, n, vt), accp);
  LLVMBuildStore(c->b, red_init(c, n, et), saccp);
  red_loops(k, r, 0, base, in, accp, saccp, w);
  LLVMValueRef v = red_lanes(c, op, LLVMBuildLoad2(c->b, vt, accp, ""), w);
  v = arith(c, op, v, LLVMBuildLoad2(c->b, et, saccp, ""));
  if (n->op == OP_mean) {
    LLVMValueRef cnt = cg_i64(c, 1);
    for (int i = 0; i < r->nred; i++)
      cnt = LLVMBuildMul(c->b, cnt, cg_size(k, r->red_dim[i]), "");
    v = LLVMBuildFDiv(c->b, v, LLVMBuildSIToFP(c->b, cnt, et, ""), "");
  }
  store_w(k, n->out[0]->type.dt, out, u, v);
  cg_endfor(k, &U);
}

void cg_reduce_kernel(CgKernel *k, const char *name) {
  const Node *n = k->n;
  const Type *x = &n->in[0]->type;
  RedCtx r = {.n = n};
  Size st[MAXR];
  dense_strides(x, st);
  for (int i = 0; i < x->rank; i++) {
    if (n->attr.axes & (1u << i)) {
      r.red_dim[r.nred] = x->dim[i];
      r.red_st[r.nred++] = st[i];
    } else {
      r.keep_dim[r.nkeep] = x->dim[i];
      r.keep_st[r.nkeep++] = st[i];
    }
  }
  if (r.nred == 0) {                  /* nothing reduced: a copy, one element per unit */
    r.red_dim[0] = sz_const(1);
    r.red_st[0] = sz_const(0);
    r.nred = 1;
  }
  LLVMValueRef units = product(k, r.keep_dim, 0, r.nkeep);
  LLVMValueRef per = product(k, r.red_dim, 0, r.nred);
  cg_parallel(k, name, units, cg_grain(k, per), red_task, &r);
}

/* ---- row-wise: softmax and log_softmax along one axis ------------------------ */

typedef struct RowCtx {
  const Node *n;
  Size len, stride, inner;   /* row length, its stride, elements after the axis */
} RowCtx;

enum { PASS_MAX, PASS_SUM, PASS_OUT };

static void row_pass(CgKernel *k, RowCtx *r, int pass, LLVMValueRef in, LLVMValueRef out,
                     LLVMValueRef base, LLVMValueRef *m, LLVMValueRef accp, int w) {
  CgCtx *c = k->c;
  RtDType dt = r->n->in[0]->type.dt;
  LLVMTypeRef vt = vec_type(c, dt, w);
  LLVMValueRef len = cg_size(k, r->len), st = cg_size(k, r->stride);
  LLVMValueRef lo = cg_i64(c, 0);
  for (int width = w; width >= 1; width = width == 1 ? 0 : 1) {
    LLVMValueRef hi = width > 1 ? LLVMBuildSub(c->b, len, cg_i64(c, width - 1), "") : len;
    CgLoop L;
    LLVMValueRef j = cg_for(k, &L, lo, hi, cg_i64(c, width));
    LLVMValueRef at = LLVMBuildAdd(c->b, base, LLVMBuildMul(c->b, j, st, ""), "");
    LLVMValueRef x = load_w(k, dt, in, at, r->stride, width);
    LLVMValueRef mw = cg_splat(c, m[0], width);
    LLVMTypeRef t = width > 1 ? vt : cg_elem_type(c, dt);
    LLVMValueRef acc = width > 1 ? accp : m[2];
    if (pass == PASS_MAX) {
      LLVMBuildStore(c->b, arith(c, OP_max, LLVMBuildLoad2(c->b, t, acc, ""), x), acc);
    } else if (pass == PASS_SUM) {
      LLVMValueRef e = cg_vexp(c, LLVMBuildFSub(c->b, x, mw, ""));
      LLVMBuildStore(c->b, LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, t, acc, ""), e, ""), acc);
    } else {
      LLVMValueRef y = LLVMBuildFSub(c->b, x, mw, "");
      LLVMValueRef sw = cg_splat(c, m[1], width);
      y = r->n->op == OP_softmax ? LLVMBuildFDiv(c->b, cg_vexp(c, y), sw, "")
                                 : LLVMBuildFSub(c->b, y, sw, "");
      store_w(k, dt, out, at, y);     /* vectors only on contiguous rows */
    }
    cg_endfor(k, &L);
    if (width == 1)
      break;
    lo = LLVMBuildMul(c->b, LLVMBuildSDiv(c->b, len, cg_i64(c, width), ""), cg_i64(c, width), "");
  }
}

static void row_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  RowCtx *r = user;
  CgCtx *c = k->c;
  RtDType dt = r->n->in[0]->type.dt;
  int w = is_one(r->stride) ? cg_lanes(c, rt_dtype_size(dt)) : 1;
  LLVMTypeRef vt = vec_type(c, dt, w), et = cg_elem_type(c, dt);
  LLVMValueRef accp = entry_alloca(k, vt), saccp = entry_alloca(k, et);
  LLVMValueRef in = cg_value_ptr(k, r->n->in[0]), out = cg_value_ptr(k, r->n->out[0]);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1));
  LLVMValueRef inner = cg_size(k, r->inner);
  LLVMValueRef outer = LLVMBuildSDiv(c->b, u, inner, "");
  LLVMValueRef base = LLVMBuildAdd(
      c->b, LLVMBuildMul(c->b, outer, LLVMBuildMul(c->b, cg_size(k, r->len), inner, ""), ""),
      LLVMBuildSRem(c->b, u, inner, ""), "");
  LLVMValueRef m[3] = {LLVMConstNull(et), NULL, saccp};
  /* max */
  LLVMBuildStore(c->b, red_init(c, &(Node){.op = OP_max}, vt), accp);
  LLVMBuildStore(c->b, red_init(c, &(Node){.op = OP_max}, et), saccp);
  row_pass(k, r, PASS_MAX, in, out, base, m, accp, w);
  m[0] = arith(c, OP_max, w > 1 ? red_lanes(c, OP_max, LLVMBuildLoad2(c->b, vt, accp, ""), w)
                                : LLVMBuildLoad2(c->b, et, accp, ""),
               LLVMBuildLoad2(c->b, et, saccp, ""));
  /* sum of exp(x - max) */
  LLVMBuildStore(c->b, LLVMConstNull(vt), accp);
  LLVMBuildStore(c->b, LLVMConstNull(et), saccp);
  row_pass(k, r, PASS_SUM, in, out, base, m, accp, w);
  LLVMValueRef s = LLVMBuildFAdd(
      c->b, w > 1 ? red_lanes(c, OP_add, LLVMBuildLoad2(c->b, vt, accp, ""), w)
                  : LLVMBuildLoad2(c->b, et, accp, ""),
      LLVMBuildLoad2(c->b, et, saccp, ""), "");
  m[1] = r->n->op == OP_softmax ? s : cg_vlog(c, s);
  row_pass(k, r, PASS_OUT, in, out, base, m, accp, w);
  cg_endfor(k, &U);
}

void cg_row_kernel(CgKernel *k, const char *name) {
  const Node *n = k->n;
  const Type *x = &n->in[0]->type;
  int ax = ir_norm_axis(n->attr.axis, x->rank);
  RowCtx r = {.n = n, .len = x->dim[ax]};
  Size st[MAXR];
  dense_strides(x, st);
  r.stride = st[ax];
  r.inner = st[ax];
  LLVMValueRef units = product(k, x->dim, 0, x->rank);
  units = LLVMBuildSDiv(k->c->b, units, cg_size(k, r.len), "");
  cg_parallel(k, name, units, cg_grain(k, cg_size(k, sz_mul(r.len, sz_const(4)))), row_task, &r);
}

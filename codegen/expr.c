/* Lowering by expression. An elementwise, broadcast or movement op says what
 * its value is at an index, given its operands' values there (value_at); how
 * each operand is indexed is an affine access (strides per output axis:
 * 0 where it broadcasts, permuted for a transpose, the channel axis for
 * batchnorm's statistics). One emitter builds the loop nest for the whole
 * output from those two rules: rows of the output in parallel chunks, the
 * innermost axis in vectors of the target's width with a scalar tail.
 * Reductions and row-wise ops (softmax) reuse the same access and load
 * helpers with their own loop shapes. A rule may also use the flat index
 * of the output element (onehot's class along the last axis).
 *
 * A fused group (passes/fusion.c) is the same loop over several nodes: each
 * member's value comes from the values of earlier members, still in
 * registers, and from loads of the group's operands; only the members
 * needed outside the group (those memplan gave a place) are stored. The
 * members after a contraction are its GEMM's epilogue instead: the same
 * value rules on each output vector of the GEMM's tile. */
#include "codegen/codegen.h"
#include "passes/passes.h"
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXR IR_MAX_RANK
#define MAXOPS PASS_FUSE_MAX_OPERANDS  /* stored and loaded tensors of one kernel */
#define MAXMEM PASS_FUSE_MAX_NODES     /* nodes of one kernel */
#define MAXIN 8                        /* inputs of one node */

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
  Size st[MAXOPS][MAXR];
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

/* ---- the nodes of one kernel ---------------------------------------------- */

/* A kernel's nodes as the emitters see them: the members in schedule order
 * (one node, unless fused) and their operands, the values stored first,
 * then the values loaded, each with its strides per output axis (all
 * members have the output's shape). A member's input is an operand or,
 * when an earlier member computes it, that member's value in registers. */
typedef struct Fused {
  const Type *space;        /* the shape the members compute: the output's, or a reduction's input's */
  const Node *mem[MAXMEM];
  int nmem, nops, nstore;
  const Value *val[MAXOPS];
  Size st[MAXOPS][MAXR];
  int src[MAXMEM][MAXIN];   /* operand index, or -1 - the member computing it */
  int dst[MAXMEM];          /* the operand member i is stored as, or -1 */
} Fused;

/* Memory planning gives a place to what must be stored, and none to a
 * value that lives only inside its group. */
static bool is_stored(const Value *v) {
  while (v->alias)
    v = v->alias;
  return v->region >= 0;
}

static int member_of(const Fused *f, const Value *v) {
  for (int i = 0; i < f->nmem; i++)
    if (f->mem[i]->out[0] == v)
      return i;
  return -1;
}

static int add_operand(Fused *f, const Value *v, const Size *st, int rank, bool dedupe) {
  for (int i = f->nstore; i < f->nops && dedupe; i++) {
    bool same = f->val[i] == v;
    for (int a = 0; a < rank && same; a++)
      same = sz_eq(f->st[i][a], st[a]);
    if (same)
      return i;
  }
  assert(f->nops < MAXOPS);
  f->val[f->nops] = v;
  memcpy(f->st[f->nops], st, sizeof(Size) * (size_t)rank);
  return f->nops++;
}

/* k's nodes. The inputs of `head` (a contraction, whose GEMM reads them)
 * are not operands; `tail` (a reduction) reads the space, its input's
 * shape, where the other members compute, and stores its result itself. */
static void fused_init(Fused *f, const CgKernel *k, const Node *head, const Node *tail) {
  f->nmem = k->group ? k->ngroup : 1;
  f->nops = 0;
  assert(f->nmem <= MAXMEM);
  for (int i = 0; i < f->nmem; i++)
    f->mem[i] = k->group ? k->group[i] : k->n;
  f->space = tail ? &tail->in[0]->type : &f->mem[0]->out[0]->type;
  int rank = f->space->rank;
  Size dense[MAXR], st[MAXR];
  dense_strides(f->space, dense);
  for (int i = 0; i < f->nmem; i++) {
    bool stored = f->mem[i] != tail && is_stored(f->mem[i]->out[0]);
    f->dst[i] = stored ? add_operand(f, f->mem[i]->out[0], dense, rank, false) : -1;
  }
  f->nstore = f->nops;
  assert(f->nstore > 0 || tail);
  for (int i = 0; i < f->nmem; i++) {
    const Node *n = f->mem[i];
    assert(n->nin <= MAXIN && (n == tail || n->out[0]->type.rank == rank));
    for (int j = 0; j < n->nin && n != head; j++) {
      int m = member_of(f, n->in[j]);
      if (m >= 0) {
        f->src[i][j] = -1 - m;
        continue;
      }
      if (n == tail)
        memcpy(st, dense, sizeof st);
      else
        operand_access(n, j, st);
      f->src[i][j] = add_operand(f, n->in[j], st, rank, true);
    }
  }
}

static void space_of(const Fused *f, Space *s) {
  const Type *o = f->space;
  s->rank = o->rank;
  s->nops = f->nops;
  memcpy(s->dim, o->dim, sizeof(Size) * o->rank);
  for (int k = 0; k < f->nops; k++)
    memcpy(s->st[k], f->st[k], sizeof(Size) * o->rank);
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

/* u8 and bool are the 8-bit integers, and the unsigned ones. */
static bool is_unsigned(LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind)
    t = LLVMGetElementType(t);
  return LLVMGetIntTypeWidth(t) == 8;
}

static LLVMValueRef icmp(CgCtx *c, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(c->b, p, a, b, "");
}

/* Integer a / b as PyTorch's floor division (torch.div(rounding_mode=
 * "floor")), total: a divisor of 0 gives 0 and INT_MIN / -1 wraps, where
 * the machine's division would trap. */
static LLVMValueRef int_div(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef zero = fconst(c, b, 0), one = fconst(c, b, 1);
  LLVMValueRef by0 = icmp(c, LLVMIntEQ, b, zero);
  LLVMValueRef d = LLVMBuildSelect(c->b, by0, one, b, "");
  if (is_unsigned(a))
    return LLVMBuildSelect(c->b, by0, zero, LLVMBuildUDiv(c->b, a, d, ""), "");
  LLVMValueRef by_m1 = icmp(c, LLVMIntEQ, d, fconst(c, b, -1));
  d = LLVMBuildSelect(c->b, by_m1, one, d, "");
  LLVMValueRef q = LLVMBuildSDiv(c->b, a, d, ""), r = LLVMBuildSRem(c->b, a, d, "");
  LLVMValueRef down = LLVMBuildAnd(c->b, icmp(c, LLVMIntNE, r, zero),
                                   icmp(c, LLVMIntSLT, LLVMBuildXor(c->b, r, d, ""), zero), "");
  q = LLVMBuildSub(c->b, q, LLVMBuildZExt(c->b, down, LLVMTypeOf(q), ""), "");
  q = LLVMBuildSelect(c->b, by_m1, LLVMBuildNeg(c->b, a, ""), q, "");
  return LLVMBuildSelect(c->b, by0, zero, q, "");
}

static LLVMValueRef arith(CgCtx *c, Op op, LLVMValueRef a, LLVMValueRef b) {
  bool f = is_fp(a), u = !f && is_unsigned(a);
  switch (op) {
  case OP_add: return f ? LLVMBuildFAdd(c->b, a, b, "") : LLVMBuildAdd(c->b, a, b, "");
  case OP_sub: return f ? LLVMBuildFSub(c->b, a, b, "") : LLVMBuildSub(c->b, a, b, "");
  case OP_mul: return f ? LLVMBuildFMul(c->b, a, b, "") : LLVMBuildMul(c->b, a, b, "");
  case OP_div: return f ? LLVMBuildFDiv(c->b, a, b, "") : int_div(c, a, b);
  case OP_maximum:
  case OP_max:
    if (f)
      return call2(c, "llvm.maximum", a, b);    /* NaN propagates, as in PyTorch */
    return LLVMBuildSelect(c->b, icmp(c, u ? LLVMIntUGT : LLVMIntSGT, a, b), a, b, "");
  case OP_minimum:
  case OP_min:
    if (f)
      return call2(c, "llvm.minimum", a, b);
    return LLVMBuildSelect(c->b, icmp(c, u ? LLVMIntULT : LLVMIntSLT, a, b), a, b, "");
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

/* a op b as a bool (0 or 1 in a byte) of w lanes: ordered float
 * comparisons but for ne (NaN != NaN, as PyTorch); integers signed, bytes
 * (u8, bool) unsigned. */
static LLVMValueRef compare(CgCtx *c, Op op, LLVMValueRef a, LLVMValueRef b, RtDType dt, int w) {
  static const Op ops[] = {OP_eq, OP_ne, OP_lt, OP_le, OP_gt, OP_ge};
  static const LLVMRealPredicate fp[] = {LLVMRealOEQ, LLVMRealUNE, LLVMRealOLT,
                                         LLVMRealOLE, LLVMRealOGT, LLVMRealOGE};
  static const LLVMIntPredicate si[] = {LLVMIntEQ, LLVMIntNE, LLVMIntSLT, LLVMIntSLE, LLVMIntSGT, LLVMIntSGE};
  static const LLVMIntPredicate ui[] = {LLVMIntEQ, LLVMIntNE, LLVMIntULT, LLVMIntULE, LLVMIntUGT, LLVMIntUGE};
  int i = 0;
  while (ops[i] != op)
    i++;
  bool bytes = dt == RT_U8 || dt == RT_BOOL;
  LLVMValueRef r = is_fp(a) ? LLVMBuildFCmp(c->b, fp[i], a, b, "")
                            : LLVMBuildICmp(c->b, bytes ? ui[i] : si[i], a, b, "");
  return LLVMBuildZExt(c->b, r, vec_type(c, RT_BOOL, w), "");
}

/* The activations of ops.def, on x (alpha: the node's). */
static LLVMValueRef activation(CgCtx *c, const Node *n, LLVMValueRef x) {
  LLVMValueRef half = fconst(c, x, 0.5), one = fconst(c, x, 1);
  LLVMValueRef pos = LLVMBuildFCmp(c->b, LLVMRealOGT, x, fconst(c, x, n->op == OP_softplus ? n->attr.alpha : 0), "");
  switch (n->op) {
  case OP_erf: return cg_verf(c, x);
  case OP_leaky_relu:
    return LLVMBuildSelect(c->b, pos, x, LLVMBuildFMul(c->b, x, fconst(c, x, n->attr.alpha), ""), "");
  case OP_elu:
    return LLVMBuildSelect(c->b, pos, x, LLVMBuildFMul(c->b, cg_vexpm1(c, x), fconst(c, x, n->attr.alpha), ""), "");
  case OP_softplus: return LLVMBuildSelect(c->b, pos, x, cg_vlog1p(c, cg_vexp(c, x)), "");
  case OP_gelu: {                     /* x (1 + erf(x / sqrt 2)) / 2 */
    LLVMValueRef e = cg_verf(c, LLVMBuildFMul(c->b, x, fconst(c, x, M_SQRT1_2), ""));
    return LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, x, half, ""), LLVMBuildFAdd(c->b, e, one, ""), "");
  }
  case OP_gelu_tanh: {                /* x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 */
    LLVMValueRef x3 = LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, x, x, ""), x, "");
    LLVMValueRef u = LLVMBuildFAdd(c->b, x, LLVMBuildFMul(c->b, x3, fconst(c, x, 0.044715), ""), "");
    LLVMValueRef t = cg_vtanh(c, LLVMBuildFMul(c->b, u, fconst(c, x, sqrt(2 / M_PI)), ""));
    return LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, x, half, ""), LLVMBuildFAdd(c->b, t, one, ""), "");
  }
  default: return LLVMBuildFMul(c->b, x, cg_vsigmoid(c, x), "");   /* silu */
  }
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
  case OP_iota: return arith(c, OP_add, x, cast_to(c, idx, RT_I64, n->out[0]->type.dt, w));
  case OP_erf: case OP_leaky_relu: case OP_elu: case OP_softplus: case OP_gelu: case OP_gelu_tanh:
  case OP_silu:
    return activation(c, n, x);
  case OP_pow: return cg_vpow(c, a[0], a[1]);
  case OP_eq: case OP_ne: case OP_lt: case OP_le: case OP_gt: case OP_ge:
    return compare(c, n->op, a[0], a[1], n->in[0]->type.dt, w);
  case OP_where: {
    LLVMValueRef cond = LLVMBuildICmp(c->b, LLVMIntNE, x, LLVMConstNull(LLVMTypeOf(x)), "");
    return LLVMBuildSelect(c->b, cond, a[1], a[2], "");
  }
  default:
    return arith(c, n->op, a[0], a[1]);
  }
}

/* ---- the elementwise loop nest --------------------------------------------- */

typedef struct ExprCtx {
  Fused f;
  Space s;
  int w;                    /* lanes: those of the widest element any member computes */
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

/* One step of the members, w lanes: operand o at element at[o], lanes
 * st[o] apart; flat is the first lane's index in the space (dense). */
typedef struct Step {
  const LLVMValueRef *ptr, *at;
  const Size *st;
  LLVMValueRef flat;
  int w;
  LLVMValueRef loaded[MAXOPS];   /* each operand is loaded once per step */
  LLVMValueRef val[MAXMEM];
} Step;

/* Input a of member i: an earlier member's value, or its operand. */
static LLVMValueRef step_input(CgKernel *k, const Fused *f, Step *s, int i, int a) {
  int o = f->src[i][a];
  if (o < 0)
    return s->val[-1 - o];
  if (!s->loaded[o])
    s->loaded[o] = load_w(k, f->val[o]->type.dt, s->ptr[o], s->at[o], s->st[o], s->w);
  return s->loaded[o];
}

/* iota's index along attr.axis from the flat index idx of its output:
 * (idx / stride) % extent, with the sizes of this run. */
static LLVMValueRef iota_index(CgKernel *k, const Node *n, LLVMValueRef idx, int w) {
  CgCtx *c = k->c;
  const Type *t = &n->out[0]->type;
  int ax = n->attr.axis;
  Size stride = sz_const(1);
  for (int i = ax + 1; i < t->rank; i++)
    stride = sz_mul(stride, t->dim[i]);
  LLVMValueRef i = LLVMBuildSDiv(c->b, idx, cg_splat(c, cg_size(k, stride), w), "");
  return ax ? LLVMBuildSRem(c->b, i, cg_splat(c, cg_size(k, t->dim[ax]), w), "") : i;
}

/* Every member but `tail` in order, then the stores: after all the loads,
 * so a value written in place over an operand is read first. Index rules
 * see the flat index, iota its index along its axis. */
static void step_eval(CgKernel *k, const Fused *f, Step *s, const Node *tail) {
  LLVMValueRef idx = lane_index(k->c, s->flat, s->w);
  for (int i = 0; i < f->nmem; i++) {
    LLVMValueRef args[MAXIN];
    const Node *n = f->mem[i];
    if (n == tail)
      continue;
    for (int a = 0; a < n->nin; a++)
      args[a] = step_input(k, f, s, i, a);
    LLVMValueRef at = n->op == OP_iota ? iota_index(k, n, idx, s->w) : idx;
    s->val[i] = value_at(k->c, n, args, at, s->w);
  }
  for (int i = 0; i < f->nmem; i++)
    if (f->dst[i] >= 0)
      store_w(k, f->val[f->dst[i]]->type.dt, s->ptr[f->dst[i]], s->flat, s->val[i]);
}

/* One step of w elements at inner position j of a row. */
static void expr_step(CgKernel *k, ExprCtx *e, LLVMValueRef *ptr, LLVMValueRef *off,
                      LLVMValueRef j, int w) {
  CgCtx *c = k->c;
  LLVMValueRef at[MAXOPS];
  Size st[MAXOPS];
  for (int o = 0; o < e->f.nops; o++) {
    st[o] = e->s.st[o][e->s.rank - 1];
    at[o] = LLVMBuildAdd(c->b, off[o], LLVMBuildMul(c->b, j, cg_size(k, st[o]), ""), "");
  }
  /* operand 0 is stored, so dense: its offset is the flat index */
  Step s = {.ptr = ptr, .at = at, .st = st, .flat = LLVMBuildAdd(c->b, off[0], j, ""), .w = w};
  step_eval(k, &e->f, &s, NULL);
}

/* Units are blocks of up to BLOCK elements of a row, so a single long row
 * (a flattened elementwise op) still spreads over threads. */
#define BLOCK 4096

static void expr_task(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user) {
  ExprCtx *e = user;
  CgCtx *c = k->c;
  int w = e->w;
  LLVMValueRef ptr[MAXOPS], off[MAXOPS];
  for (int o = 0; o < e->f.nops; o++)
    ptr[o] = cg_value_ptr(k, e->f.val[o]);
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
  ExprCtx e;
  fused_init(&e.f, k, NULL, NULL);
  space_of(&e.f, &e.s);
  e.w = cg_lanes(c, 1);
  for (int i = 0; i < e.f.nmem; i++) {
    int w = cg_lanes(c, rt_dtype_size(e.f.mem[i]->out[0]->type.dt));
    e.w = w < e.w ? w : e.w;
  }
  LLVMValueRef rows = product(k, e.s.dim, 0, e.s.rank - 1);
  LLVMValueRef len = cg_size(k, e.s.dim[e.s.rank - 1]);
  LLVMValueRef nblk = LLVMBuildSDiv(c->b, LLVMBuildAdd(c->b, len, cg_i64(c, BLOCK - 1), ""),
                                    cg_i64(c, BLOCK), "");
  LLVMValueRef units = LLVMBuildMul(c->b, rows, nblk, "");
  LLVMValueRef per = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, len, cg_i64(c, BLOCK), ""),
                                     len, cg_i64(c, BLOCK), "");
  per = LLVMBuildMul(c->b, per, cg_i64(c, e.f.nmem), "");   /* cost: elements times nodes */
  cg_parallel(k, name, units, cg_grain(k, per), expr_task, &e);
}

/* ---- reductions -------------------------------------------------------------- */

/* One unit per output element; inside, loops over the reduced axes with the
 * innermost one in vectors when it is contiguous. Each element is reduced in
 * a fixed order, so results do not depend on the thread count. In a fused
 * group the reduction's input is computed where it is read: the other
 * members run per element of the input (each is visited once), and those
 * needed outside are stored there. Strides are kept per operand, and for
 * the input's flat index (IDX: the stored members' offset). */
#define IDX(r) ((r)->f.nops)

typedef struct RedCtx {
  Fused f;
  const Node *n;            /* the reduction */
  int in;                   /* its member index */
  int cols;                 /* > 1: a unit is this many adjacent outputs (red_cols_loops) */
  int nkeep, nred;
  Size keep_dim[MAXR], red_dim[MAXR];
  Size keep_st[MAXOPS + 1][MAXR], red_st[MAXOPS + 1][MAXR];
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

/* The reduction's input at position j of the innermost reduced axis, w
 * lanes: the group's members there (storing what they store), then the
 * reduction's operand. */
static LLVMValueRef red_input(CgKernel *k, RedCtx *r, const LLVMValueRef *ptr, const LLVMValueRef *base,
                              LLVMValueRef j, int w) {
  CgCtx *c = k->c;
  int ax = r->nred - 1;
  LLVMValueRef at[MAXOPS + 1];
  Size st[MAXOPS + 1];
  for (int o = 0; o <= IDX(r); o++) {
    st[o] = r->red_st[o][ax];
    at[o] = LLVMBuildAdd(c->b, base[o], LLVMBuildMul(c->b, j, cg_size(k, st[o]), ""), "");
  }
  Step s = {.ptr = ptr, .at = at, .st = st, .flat = at[IDX(r)], .w = w};
  step_eval(k, &r->f, &s, r->n);
  return step_input(k, &r->f, &s, r->in, 0);
}

/* Accumulates the reduced axes from `ax` inward into *acc (vector) and *sacc. */
static void red_loops(CgKernel *k, RedCtx *r, int ax, const LLVMValueRef *base, const LLVMValueRef *ptr,
                      LLVMValueRef accp, LLVMValueRef saccp, int w) {
  CgCtx *c = k->c;
  RtDType dt = r->n->in[0]->type.dt;
  Op op = red_combine(r->n->op);
  LLVMValueRef len = cg_size(k, r->red_dim[ax]);
  if (ax < r->nred - 1) {
    CgLoop L;
    LLVMValueRef i = cg_for(k, &L, cg_i64(c, 0), len, cg_i64(c, 1)), b[MAXOPS + 1];
    for (int o = 0; o <= IDX(r); o++)
      b[o] = LLVMBuildAdd(c->b, base[o], LLVMBuildMul(c->b, i, cg_size(k, r->red_st[o][ax]), ""), "");
    red_loops(k, r, ax + 1, b, ptr, accp, saccp, w);
    cg_endfor(k, &L);
    return;
  }
  bool contig = is_one(r->red_st[IDX(r)][ax]);
  LLVMValueRef jt = cg_i64(c, 0);
  if (contig && w > 1) {
    CgLoop V;
    LLVMValueRef vend = LLVMBuildSub(c->b, len, cg_i64(c, w - 1), "");
    LLVMValueRef j = cg_for(k, &V, cg_i64(c, 0), vend, cg_i64(c, w));
    LLVMValueRef x = red_input(k, r, ptr, base, j, w);
    LLVMTypeRef vt = vec_type(c, dt, w);
    LLVMBuildStore(c->b, arith(c, op, LLVMBuildLoad2(c->b, vt, accp, ""), x), accp);
    cg_endfor(k, &V);
    jt = LLVMBuildMul(c->b, LLVMBuildSDiv(c->b, len, cg_i64(c, w), ""), cg_i64(c, w), "");
  }
  CgLoop T;
  LLVMValueRef j = cg_for(k, &T, jt, len, cg_i64(c, 1));
  LLVMValueRef x = red_input(k, r, ptr, base, j, 1);
  LLVMTypeRef et = cg_elem_type(c, dt);
  LLVMBuildStore(c->b, arith(c, op, LLVMBuildLoad2(c->b, et, saccp, ""), x), saccp);
  cg_endfor(k, &T);
}

/* Columns: when the reduced axes are strided and the innermost kept axis
 * is contiguous (a bias gradient, the sum over the rows of [rows, cols]),
 * one unit reduces r->cols adjacent outputs, a lane each, so loads are
 * vectors along the kept axis. Each lane accumulates its column in the
 * order the one-output path would: the same results. */
static void red_cols_loops(CgKernel *k, RedCtx *r, int ax, const LLVMValueRef *base,
                           const LLVMValueRef *ptr, LLVMValueRef accp) {
  CgCtx *c = k->c;
  CgLoop L;
  LLVMValueRef i = cg_for(k, &L, cg_i64(c, 0), cg_size(k, r->red_dim[ax]), cg_i64(c, 1));
  LLVMValueRef b[MAXOPS + 1];
  for (int o = 0; o <= IDX(r); o++)
    b[o] = LLVMBuildAdd(c->b, base[o], LLVMBuildMul(c->b, i, cg_size(k, r->red_st[o][ax]), ""), "");
  if (ax < r->nred - 1) {
    red_cols_loops(k, r, ax + 1, b, ptr, accp);
  } else {
    Size st[MAXOPS + 1];
    for (int o = 0; o <= IDX(r); o++)
      st[o] = r->keep_st[o][r->nkeep - 1];
    Step s = {.ptr = ptr, .at = b, .st = st, .flat = b[IDX(r)], .w = r->cols};
    step_eval(k, &r->f, &s, r->n);
    LLVMValueRef x = step_input(k, &r->f, &s, r->in, 0);
    LLVMTypeRef vt = vec_type(c, r->n->in[0]->type.dt, r->cols);
    LLVMBuildStore(c->b, arith(c, red_combine(r->n->op), LLVMBuildLoad2(c->b, vt, accp, ""), x), accp);
  }
  cg_endfor(k, &L);
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
  LLVMValueRef out = cg_value_ptr(k, n->out[0]), ptr[MAXOPS], base[MAXOPS + 1];
  for (int o = 0; o < r->f.nops; o++)
    ptr[o] = cg_value_ptr(k, r->f.val[o]);
  Op op = red_combine(n->op);
  CgLoop U;
  LLVMValueRef u = cg_for(k, &U, lo, hi, cg_i64(c, 1)), rem = u;
  for (int o = 0; o <= IDX(r); o++)
    base[o] = cg_i64(c, 0);
  for (int i = r->nkeep - 1; i >= 0; i--) {
    bool blocks = r->cols > 1 && i == r->nkeep - 1;   /* column mode: blocks of cols */
    LLVMValueRef d = cg_size(k, r->keep_dim[i]);
    if (blocks)
      d = LLVMBuildSDiv(c->b, d, cg_i64(c, r->cols), "");
    LLVMValueRef idx = LLVMBuildSRem(c->b, rem, d, "");
    rem = LLVMBuildSDiv(c->b, rem, d, "");
    if (blocks)
      idx = LLVMBuildMul(c->b, idx, cg_i64(c, r->cols), "");
    for (int o = 0; o <= IDX(r); o++)
      base[o] = LLVMBuildAdd(c->b, base[o], LLVMBuildMul(c->b, idx, cg_size(k, r->keep_st[o][i]), ""), "");
  }
  LLVMBuildStore(c->b, red_init(c, n, vt), accp);
  LLVMValueRef v;
  if (r->cols > 1) {
    red_cols_loops(k, r, 0, base, ptr, accp);
    v = LLVMBuildLoad2(c->b, vt, accp, "");
  } else {
    LLVMBuildStore(c->b, red_init(c, n, et), saccp);
    red_loops(k, r, 0, base, ptr, accp, saccp, w);
    v = red_lanes(c, op, LLVMBuildLoad2(c->b, vt, accp, ""), w);
    v = arith(c, op, v, LLVMBuildLoad2(c->b, et, saccp, ""));
  }
  if (n->op == OP_mean) {
    LLVMValueRef cnt = cg_i64(c, 1);
    for (int i = 0; i < r->nred; i++)
      cnt = LLVMBuildMul(c->b, cnt, cg_size(k, r->red_dim[i]), "");
    LLVMValueRef cf = LLVMBuildSIToFP(c->b, cnt, et, "");
    v = LLVMBuildFDiv(c->b, v, r->cols > 1 ? cg_splat(c, cf, r->cols) : cf, "");
  }
  LLVMValueRef at = r->cols > 1 ? LLVMBuildMul(c->b, u, cg_i64(c, r->cols), "") : u;
  store_w(k, n->out[0]->type.dt, out, at, v);
  cg_endfor(k, &U);
}

/* Column mode pays when the reduced axes are strided, the innermost kept
 * axis is contiguous and a whole number of vectors long. */
static int red_cols(CgKernel *k, const RedCtx *r) {
  int w = cg_lanes(k->c, rt_dtype_size(r->n->in[0]->type.dt));
  int64_t last;
  if (w < 2 || r->nkeep == 0 || r->nred == 0 || is_one(r->red_st[IDX(r)][r->nred - 1]) ||
      !is_one(r->keep_st[IDX(r)][r->nkeep - 1]) ||
      !sz_is_const(r->keep_dim[r->nkeep - 1], &last) || last % w)
    return 1;
  return w;
}

/* Axis i of the space into the kept or the reduced axes, with every
 * operand's stride and the flat index's. */
static void red_axis(RedCtx *r, int i, const Size *dense, bool reduced) {
  Size *dim = reduced ? &r->red_dim[r->nred] : &r->keep_dim[r->nkeep];
  int at = reduced ? r->nred++ : r->nkeep++;
  *dim = r->f.space->dim[i];
  for (int o = 0; o <= IDX(r); o++) {
    Size s = o < IDX(r) ? r->f.st[o][i] : dense[i];
    if (reduced)
      r->red_st[o][at] = s;
    else
      r->keep_st[o][at] = s;
  }
}

void cg_reduce_kernel(CgKernel *k, const char *name) {
  const Node *n = k->n;
  RedCtx *r = calloc(1, sizeof *r);
  assert(r);
  fused_init(&r->f, k, NULL, n);
  r->n = n;
  r->in = member_of(&r->f, n->out[0]);
  Size dense[MAXR];
  dense_strides(r->f.space, dense);
  for (int i = 0; i < r->f.space->rank; i++)
    red_axis(r, i, dense, n->attr.axes & (1u << i));
  if (r->nred == 0) {                 /* nothing reduced: a copy, one element per unit */
    r->red_dim[0] = sz_const(1);
    for (int o = 0; o <= IDX(r); o++)
      r->red_st[o][0] = sz_const(0);
    r->nred = 1;
  }
  r->cols = red_cols(k, r);
  LLVMValueRef units = product(k, r->keep_dim, 0, r->nkeep);
  LLVMValueRef per = product(k, r->red_dim, 0, r->nred);
  per = LLVMBuildMul(k->c->b, per, cg_i64(k->c, r->f.nmem * r->cols), "");   /* cost: elements times nodes */
  units = LLVMBuildSDiv(k->c->b, units, cg_i64(k->c, r->cols), "");
  cg_parallel(k, name, units, cg_grain(k, per), red_task, r);
  free(r);
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

/* ---- GEMM epilogues ------------------------------------------------------------ */

/* A contraction's group in the GEMM's terms: operand o is read (or stored)
 * at b*sb[o] + row*sr[o] + col*sc[o] of the GEMM's batch item b, row and
 * column; sc is 0 (the same for every column) or 1. With a lane axis (a
 * blocked output, cg_epi_plan_lanes) col counts whole vectors: sc is 0 or
 * the lanes, and vec says whether o varies along the lanes or is splat. */
typedef struct EpiPlan {
  Fused f;
  int head;                 /* the contraction's member index: its value is the accumulator */
  int cop;                  /* the operand the GEMM's C stores */
  int64_t sc[MAXOPS];
  bool vec[MAXOPS];
  Size sb[MAXOPS], sr[MAXOPS];
} EpiPlan;

/* Axes lo .. hi of an operand as one axis: the stride of its innermost
 * non-unit axis (0 if none), where the others nest around it (fusion
 * groups only operands whose axes do). */
static Size collapse(const Type *o, const Size *st, int lo, int hi) {
  Size s = sz_const(0), next = sz_const(0);
  bool any = false;
  for (int i = hi - 1; i >= lo; i--) {
    if (is_one(o->dim[i]))
      continue;
    assert(!any || sz_eq(st[i], next));
    if (!any)
      s = st[i];
    any = true;
    next = sz_mul(st[i], o->dim[i]);
  }
  return s;
}

/* Where the GEMM's C goes: the contraction's own output if it is stored,
 * else the last stored member. */
static int c_operand(const EpiPlan *p) {
  const Fused *f = &p->f;
  if (f->dst[p->head] >= 0)
    return f->dst[p->head];
  int cop = -1;
  for (int i = 0; i < f->nmem; i++)
    cop = f->dst[i] >= 0 ? f->dst[i] : cop;
  return cop;
}

static void put(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *buf, size_t len, const char *fmt, ...) {
  size_t at = strlen(buf);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + at, at < len ? len - at : 0, fmt, ap);
  va_end(ap);
}

/* The structure the generated epilogue depends on, as [A-Za-z0-9_]: per
 * member its op, the sources of its inputs (m: member, o: operand) and
 * batchnorm's eps; per operand how it is used (c: the GEMM's C, s: stored,
 * l: loaded) and read (v: a vector along the columns, s: one value). */
static void epi_name(const EpiPlan *p, char *buf, size_t len) {
  const Fused *f = &p->f;
  buf[0] = 0;
  put(buf, len, "e");
  for (int i = 0; i < f->nmem; i++) {
    const Node *n = f->mem[i];
    if (i == p->head) {
      put(buf, len, "_acc");
      continue;
    }
    put(buf, len, "_%s", op_name(n->op));
    for (int j = 0; j < n->nin; j++)
      put(buf, len, f->src[i][j] < 0 ? "m%d" : "o%d", f->src[i][j] < 0 ? -1 - f->src[i][j] : f->src[i][j]);
    if (n->op == OP_batchnorm) {
      uint64_t bits;
      memcpy(&bits, &n->attr.eps, sizeof bits);
      put(buf, len, "x%016llx", (unsigned long long)bits);
    }
  }
  for (int o = 0; o < f->nops; o++) {
    put(buf, len, "_o%c%c", o == p->cop ? 'c' : o < f->nstore ? 's' : 'l', p->vec[o] ? 'v' : 's');
    if (p->sc[o] > 1)
      put(buf, len, "x%lld", (long long)p->sc[o]);
  }
  for (int i = 0; i < f->nmem; i++)
    if (f->dst[i] >= 0)
      put(buf, len, "_d%dm%d", f->dst[i], i);
  assert(strlen(buf) + 1 < len);
}

/* &operand o at (b, row, col), from the epi argument: epi[o] is its address,
 * epi[nops] points at the (sb, sr) pairs. */
static LLVMValueRef epi_addr(CgCtx *c, const EpiPlan *p, int o, LLVMValueRef epi, LLVMValueRef b,
                             LLVMValueRef row, LLVMValueRef col) {
  const Fused *f = &p->f;
  LLVMValueRef slot = LLVMBuildGEP2(c->b, c->t_ptr, epi, (LLVMValueRef[]){cg_i64(c, o)}, 1, "");
  LLVMValueRef base = LLVMBuildLoad2(c->b, c->t_ptr, slot, "");
  slot = LLVMBuildGEP2(c->b, c->t_ptr, epi, (LLVMValueRef[]){cg_i64(c, f->nops)}, 1, "");
  LLVMValueRef strides = LLVMBuildLoad2(c->b, c->t_ptr, slot, "");
  LLVMValueRef sb = LLVMBuildLoad2(
      c->b, c->t_i64, LLVMBuildGEP2(c->b, c->t_i64, strides, (LLVMValueRef[]){cg_i64(c, 2 * o)}, 1, ""), "");
  LLVMValueRef sr = LLVMBuildLoad2(
      c->b, c->t_i64, LLVMBuildGEP2(c->b, c->t_i64, strides, (LLVMValueRef[]){cg_i64(c, 2 * o + 1)}, 1, ""), "");
  LLVMValueRef off = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, b, sb, ""), LLVMBuildMul(c->b, row, sr, ""), "");
  if (p->sc[o])
    off = LLVMBuildAdd(c->b, off, p->sc[o] == 1 ? col : LLVMBuildMul(c->b, col, cg_i64(c, p->sc[o]), ""), "");
  RtDType dt = f->val[o]->type.dt;
  return LLVMBuildGEP2(c->b, cg_elem_type(c, dt), base, &off, 1, "");
}

static LLVMValueRef epi_load(CgCtx *c, const EpiPlan *p, int o, LLVMValueRef addr, LLVMValueRef mask,
                             int w) {
  RtDType dt = p->f.val[o]->type.dt;
  LLVMTypeRef vt = vec_type(c, dt, w);
  if (!p->vec[o])
    return cg_splat(c, LLVMBuildLoad2(c->b, cg_elem_type(c, dt), addr, ""), w);
  return cg_vload(c, vt, addr, (unsigned)rt_dtype_size(dt), mask);
}

static void epi_store(CgCtx *c, const EpiPlan *p, int o, LLVMValueRef addr, LLVMValueRef mask,
                      LLVMValueRef v) {
  cg_vstore(c, v, addr, (unsigned)rt_dtype_size(p->f.val[o]->type.dt), mask);
}

/* CgEpilogue.fn: the members on the accumulator vector v, in order; the
 * stored members but C's go out here, C's value is returned to the GEMM. */
static LLVMValueRef epi_apply(CgCtx *c, void *user, LLVMValueRef v, LLVMValueRef mask,
                              LLVMValueRef epi, LLVMValueRef b, LLVMValueRef row, LLVMValueRef col) {
  const EpiPlan *p = ((CgEpiPlan *)user)->fused;
  const Fused *f = &p->f;
  int w = (int)LLVMGetVectorSize(LLVMTypeOf(v));
  LLVMValueRef loaded[MAXOPS] = {0}, val[MAXMEM], ret = NULL;
  for (int i = 0; i < f->nmem; i++) {
    LLVMValueRef args[MAXIN];
    for (int a = 0; a < f->mem[i]->nin && i != p->head; a++) {
      int o = f->src[i][a];
      if (o >= 0 && !loaded[o])
        loaded[o] = epi_load(c, p, o, epi_addr(c, p, o, epi, b, row, col), mask, w);
      args[a] = o < 0 ? val[-1 - o] : loaded[o];
    }
    val[i] = i == p->head ? v : value_at(c, f->mem[i], args, NULL, w);
  }
  for (int i = 0; i < f->nmem; i++) {
    int o = f->dst[i];
    if (o == p->cop)
      ret = val[i];
    else if (o >= 0)
      epi_store(c, p, o, epi_addr(c, p, o, epi, b, row, col), mask, val[i]);
  }
  return ret;
}

/* Columns are the axes [col_axis, lane_axis); the lanes of a vector run
 * along the last axis when lane_axis < rank, else along the columns. */
static bool epi_plan(CgKernel *k, int row_axis, int col_axis, int lane_axis, CgEpiPlan *plan) {
  if (!k->group)
    return false;
  EpiPlan *p = calloc(1, sizeof *p);
  assert(p);
  fused_init(&p->f, k, k->n, NULL);
  const Type *o = &k->n->out[0]->type;
  for (int i = 0; i < p->f.nmem; i++)
    p->head = p->f.mem[i] == k->n ? i : p->head;
  for (int op = 0; op < p->f.nops; op++) {
    Size sc = collapse(o, p->f.st[op], col_axis, lane_axis);
    Size sl = collapse(o, p->f.st[op], lane_axis, o->rank);
    bool known = sz_is_const(sc, &p->sc[op]);   /* 0, 1 or (lanes) b: fusion checked */
    assert(known && (lane_axis < o->rank || p->sc[op] <= 1));
    (void)known;
    p->vec[op] = lane_axis < o->rank ? sl.nt != 0 : p->sc[op] != 0;
    assert(lane_axis == o->rank || sz_eq(sl, sz_const(p->vec[op])));
    p->sr[op] = collapse(o, p->f.st[op], row_axis, col_axis);
    p->sb[op] = collapse(o, p->f.st[op], 0, row_axis);
  }
  p->cop = c_operand(p);
  assert(p->cop >= 0);
  *plan = (CgEpiPlan){.epi = {.fn = epi_apply, .user = plan}, .c = p->f.val[p->cop], .fused = p};
  epi_name(p, plan->name, sizeof plan->name);
  return true;
}

bool cg_epi_plan(CgKernel *k, int row_axis, int col_axis, CgEpiPlan *plan) {
  return epi_plan(k, row_axis, col_axis, k->n->out[0]->type.rank, plan);
}

bool cg_epi_plan_lanes(CgKernel *k, int row_axis, int col_axis, CgEpiPlan *plan) {
  return epi_plan(k, row_axis, col_axis, k->n->out[0]->type.rank - 1, plan);
}

LLVMValueRef cg_epi_args(CgKernel *k, const CgEpiPlan *plan, LLVMValueRef row0) {
  CgCtx *c = k->c;
  const EpiPlan *p = plan->fused;
  int n = p->f.nops;
  LLVMValueRef ptrs = entry_alloca(k, LLVMArrayType(c->t_ptr, (unsigned)n + 1));
  LLVMValueRef strides = entry_alloca(k, LLVMArrayType(c->t_i64, 2 * (unsigned)n));
  for (int o = 0; o < n; o++) {
    LLVMValueRef sr = cg_size(k, p->sr[o]);
    LLVMValueRef at = cg_value_ptr(k, p->f.val[o]);
    if (row0)
      at = cg_gep(k, p->f.val[o]->type.dt, at, LLVMBuildMul(c->b, row0, sr, ""));
    LLVMBuildStore(c->b, at, LLVMBuildGEP2(c->b, c->t_ptr, ptrs, (LLVMValueRef[]){cg_i64(c, o)}, 1, ""));
    LLVMValueRef sb_at = LLVMBuildGEP2(c->b, c->t_i64, strides, (LLVMValueRef[]){cg_i64(c, 2 * o)}, 1, "");
    LLVMBuildStore(c->b, cg_size(k, p->sb[o]), sb_at);
    LLVMValueRef sr_at = LLVMBuildGEP2(c->b, c->t_i64, strides, (LLVMValueRef[]){cg_i64(c, 2 * o + 1)}, 1, "");
    LLVMBuildStore(c->b, sr, sr_at);
  }
  LLVMBuildStore(c->b, strides, LLVMBuildGEP2(c->b, c->t_ptr, ptrs, (LLVMValueRef[]){cg_i64(c, n)}, 1, ""));
  return ptrs;
}

void cg_epi_free(CgEpiPlan *plan) {
  free(plan->fused);
  plan->fused = NULL;
}

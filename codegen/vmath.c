/* Vector math emitted as LLVM IR: exp, expm1, log, log1p, tanh, sigmoid,
 * erf, pow, sin and cos of a float, a double or a vector of either.
 *
 * Each function emits straight-line code at the builder's insertion point:
 * no calls and no branches, so the loop around it vectorizes and fuses with
 * its neighbours. Special inputs (infinities, NaN, zeros, overflow) are
 * handled by clamping the argument or selecting the result.
 *
 * The recipe is the classic one. Reduce the argument to a small interval by
 * Cody-Waite: subtract n times a constant split in parts, the first product
 * exact thanks to llvm.fma. Evaluate a minimax polynomial by Horner's rule in
 * llvm.fma. Rebuild, a power of two made by integer arithmetic on the
 * exponent bits. The coefficients come from bench/vmath/fit_coefs.py (Remez
 * in mpmath), one set per precision; the double sets have more terms.
 *
 * The largest errors measured, in ulps, float then double, by
 * tests/codegen/test_vmath.c (a sweep of every 97th float, a sample of the
 * doubles, both against libm in higher precision) and for float exp and tanh
 * over all 2^32 floats by bench/vmath/bench_vmath.c:
 *   exp 0.78, 0.65   expm1 1.03, 1.04   log 0.55, 0.53   log1p 0.56, 0.53
 *   tanh 1.76, 1.40  sigmoid 1.46, 1.47  erf 1.36, 1.19  sin, cos 0.79, 0.77
 *   pow 0.50 (float runs in double), 1.01
 * The results are bitwise the same for scalars and any vector width.
 *
 * Denormal inputs and outputs are exact (gradual underflow), assuming the
 * default floating-point environment, not flush-to-zero. llvm.fma must be an
 * instruction on the target (x86 FMA3, AArch64); elsewhere LLVM lowers it to
 * a call of fma(), which is correct but slow. */
#include "codegen/codegen.h"
#include <assert.h>
#include <math.h>

/* The shape of one call: x's type, the integer type of its bits, and the
 * precision, 0 for float and 1 for double, indexing every table below. */
typedef struct Vm {
  CgCtx *c;
  LLVMBuilderRef b;
  LLVMTypeRef ft, it;   /* x's type; the integer type of the same shape */
  int lanes;            /* 0 for a scalar */
  int p;                /* 0 float, 1 double */
  int mbits, bias;      /* mantissa bits and exponent bias: 23, 127 or 52, 1023 */
} Vm;

/* A polynomial, coefficients lowest power first. */
typedef struct Poly {
  int n;
  double c[18];
} Poly;

static Vm vm_new(CgCtx *c, LLVMTypeRef elem, int lanes) {
  Vm m = {.c = c, .b = c->b, .lanes = lanes, .p = elem == c->t_f64};
  assert(elem == c->t_f32 || elem == c->t_f64);
  m.mbits = m.p ? 52 : 23;
  m.bias = m.p ? 1023 : 127;
  LLVMTypeRef ie = m.p ? c->t_i64 : c->t_i32;
  m.ft = lanes ? LLVMVectorType(elem, lanes) : elem;
  m.it = lanes ? LLVMVectorType(ie, lanes) : ie;
  return m;
}

static Vm vm_of(CgCtx *c, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind)
    return vm_new(c, LLVMGetElementType(t), LLVMGetVectorSize(t));
  return vm_new(c, t, 0);
}

/* {==================== constants and operations */

static LLVMValueRef splat_const(Vm *m, LLVMValueRef k) {
  if (!m->lanes)
    return k;
  LLVMValueRef v[64];
  assert(m->lanes <= 64);
  for (int i = 0; i < m->lanes; i++)
    v[i] = k;
  return LLVMConstVector(v, m->lanes);
}

static LLVMValueRef kf(Vm *m, double v) {
  return splat_const(m, LLVMConstReal(m->p ? m->c->t_f64 : m->c->t_f32, v));
}

static LLVMValueRef ki(Vm *m, int64_t v) {
  return splat_const(m, LLVMConstInt(m->p ? m->c->t_i64 : m->c->t_i32, (uint64_t)v, 1));
}

/* A constant given for both precisions. */
static LLVMValueRef kp(Vm *m, const double v[2]) { return kf(m, v[m->p]); }

static LLVMValueRef add(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(m->b, a, b, ""); }
static LLVMValueRef sub(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(m->b, a, b, ""); }
static LLVMValueRef mul(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(m->b, a, b, ""); }
static LLVMValueRef dvd(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(m->b, a, b, ""); }
static LLVMValueRef neg(Vm *m, LLVMValueRef a) { return LLVMBuildFNeg(m->b, a, ""); }

static LLVMValueRef fma3(Vm *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[] = {a, b, c};
  return cg_intrinsic(m->c, "llvm.fma", &m->ft, 1, args, 3);
}

static LLVMValueRef fabs1(Vm *m, LLVMValueRef a) {
  return cg_intrinsic(m->c, "llvm.fabs", &m->ft, 1, &a, 1);
}

static LLVMValueRef with_sign(Vm *m, LLVMValueRef mag, LLVMValueRef sign) {
  LLVMValueRef args[] = {mag, sign};
  return cg_intrinsic(m->c, "llvm.copysign", &m->ft, 1, args, 2);
}

static LLVMValueRef cmp(Vm *m, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(m->b, p, a, b, "");
}

static LLVMValueRef sel(Vm *m, LLVMValueRef cond, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(m->b, cond, a, b, "");
}

static LLVMValueRef bits(Vm *m, LLVMValueRef x) { return LLVMBuildBitCast(m->b, x, m->it, ""); }
static LLVMValueRef flt(Vm *m, LLVMValueRef i) { return LLVMBuildBitCast(m->b, i, m->ft, ""); }
static LLVMValueRef iadd(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(m->b, a, b, ""); }
static LLVMValueRef isub(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(m->b, a, b, ""); }
static LLVMValueRef iand(Vm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAnd(m->b, a, b, ""); }
static LLVMValueRef shl(Vm *m, LLVMValueRef a, int s) { return LLVMBuildShl(m->b, a, ki(m, s), ""); }
static LLVMValueRef ashr(Vm *m, LLVMValueRef a, int s) { return LLVMBuildAShr(m->b, a, ki(m, s), ""); }

/* x limited to [lo, hi]; NaN passes through (ordered compares fail). */
static LLVMValueRef clamp(Vm *m, LLVMValueRef x, LLVMValueRef lo, LLVMValueRef hi) {
  x = sel(m, cmp(m, LLVMRealOGT, x, hi), hi, x);
  return sel(m, cmp(m, LLVMRealOLT, x, lo), lo, x);
}

/* a + b = s + *err exactly, whatever their magnitudes (Knuth's TwoSum). */
static LLVMValueRef two_sum(Vm *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef *err) {
  LLVMValueRef s = add(m, a, b), bb = sub(m, s, a);
  *err = add(m, sub(m, a, sub(m, s, bb)), sub(m, b, bb));
  return s;
}

/* The same when |a| >= |b| or a = 0 (Dekker's Fast2Sum). */
static LLVMValueRef fast_two_sum(Vm *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef *err) {
  LLVMValueRef s = add(m, a, b);
  *err = sub(m, b, sub(m, s, a));
  return s;
}

/* a / (d + dlo), rounding error about half an ulp: the quotient a / d
 * corrected by the exact remainder. */
static LLVMValueRef quotient(Vm *m, LLVMValueRef a, LLVMValueRef d, LLVMValueRef dlo) {
  LLVMValueRef inv = dvd(m, kf(m, 1), d);
  LLVMValueRef q = mul(m, a, inv);
  LLVMValueRef rem = fma3(m, neg(m, q), d, a);
  rem = fma3(m, neg(m, q), dlo, rem);
  return fma3(m, rem, inv, q);
}

/* Where |x| is so small that f(x) rounds to x (expm1, log1p, sin), return x:
 * keeps the sign of -0 and the last bits of denormals, which the
 * polynomials round away. */
static LLVMValueRef keep_tiny(Vm *m, LLVMValueRef x, LLVMValueRef y) {
  static const double TINY[2] = {0x1p-25, 0x1p-54};
  return sel(m, cmp(m, LLVMRealOLT, fabs1(m, x), kp(m, TINY)), x, y);
}

/* c[0] + t (c[1] + t (c[2] + ...)), coefficients as values (per lane). */
static LLVMValueRef horner_v(Vm *m, LLVMValueRef t, const LLVMValueRef *c, int n) {
  LLVMValueRef y = c[n - 1];
  for (int i = n - 2; i >= 0; i--)
    y = fma3(m, y, t, c[i]);
  return y;
}

static LLVMValueRef horner(Vm *m, LLVMValueRef t, const Poly *P) {
  LLVMValueRef c[18] = {0};
  for (int i = 0; i < P->n; i++)
    c[i] = kf(m, P->c[i]);
  return horner_v(m, t, c, P->n);
}

/* 2^n for n in the normal exponent range, built in the exponent field. */
static LLVMValueRef pow2(Vm *m, LLVMValueRef n) {
  return flt(m, shl(m, iadd(m, n, ki(m, m->bias)), m->mbits));
}

/* y 2^n for |n| up to twice the exponent range, as two products by normal
 * powers of two: only the second can overflow or underflow, so a result in
 * the denormal range is rounded once (gradual underflow). */
static LLVMValueRef ldexp2(Vm *m, LLVMValueRef y, LLVMValueRef n) {
  LLVMValueRef n1 = ashr(m, n, 1);
  return mul(m, mul(m, y, pow2(m, n1)), pow2(m, isub(m, n, n1)));
}

/* }==================== exp, expm1 */

static const double SHIFTER[2] = {0x1.8p23, 0x1.8p52}; /* adding it rounds to an integer */
static const double EXP_MIN[2] = {-105, -746};         /* below, exp rounds to 0 */
static const double EXP_MAX[2] = {89, 710};            /* above, exp overflows */

/* exp(r) - 1 = r + r^2 P(r) on |r| <= ln2/2: relative error 2^-28.3, 2^-64. */
static const Poly EXPM1_P[2] = {
  {5, {0x1.fffffcp-2, 0x1.555492p-3, 0x1.5558f2p-5, 0x1.123a2p-7, 0x1.6a23dp-10}},
  {11, {0x1p-1, 0x1.555555555555bp-3, 0x1.5555555555503p-5, 0x1.111111110ec3fp-7,
        0x1.6c16c16c305dbp-10, 0x1.a01a01b38a1d5p-13, 0x1.a01a01364ea22p-16,
        0x1.71ddf00273fcdp-19, 0x1.27e5b491e8ed4p-22, 0x1.af6c1dce97f22p-26,
        0x1.1e3d0912f7623p-29}},
};

/* x = n ln2 + r + rlo with |r| <= ln2/2, rlo below ulp(r); n comes back as an
 * integer. Adding the shifter leaves n in the low bits of the sum. The first
 * fma is exact: x - n LN2_HI is below 1/2 and a multiple of 2^-(mbits+2)
 * (LN2_HI's last bit, or x's when smaller), so it has at most mbits+1 bits. */
static LLVMValueRef exp_reduce(Vm *m, LLVMValueRef x, LLVMValueRef *n, LLVMValueRef *rlo) {
  static const double LOG2E[2] = {0x1.715476p+0, 0x1.71547652b82fep+0};
  static const double LN2_HI[2] = {0x1.62e43p-1, 0x1.62e42fefa39efp-1};
  static const double LN2_LO[2] = {-0x1.05c61p-29, 0x1.abc9e3b39803fp-56};
  LLVMValueRef shift = kp(m, SHIFTER);
  LLVMValueRef k = fma3(m, x, kp(m, LOG2E), shift);
  LLVMValueRef nf = sub(m, k, shift);
  *n = isub(m, bits(m, k), bits(m, shift));
  LLVMValueRef rhi = fma3(m, nf, neg(m, kp(m, LN2_HI)), x);
  LLVMValueRef c = mul(m, nf, neg(m, kp(m, LN2_LO)));
  LLVMValueRef r = add(m, rhi, c);
  *rlo = sub(m, c, sub(m, r, rhi));
  return r;
}

/* (t + expm1(r) + small) 2^n, small below ulp(r) (where e^r may count as 1),
 * t + r summed exactly (|t| >= |r| or t = 0) so that the result is rounded
 * once, however much t and r cancel. */
static LLVMValueRef exp_rebuild(Vm *m, LLVMValueRef t, LLVMValueRef r, LLVMValueRef small,
                                LLVMValueRef n) {
  LLVMValueRef lo, hi = fast_two_sum(m, t, r, &lo);
  LLVMValueRef q = fma3(m, mul(m, r, r), horner(m, r, &EXPM1_P[m->p]), add(m, lo, small));
  return ldexp2(m, add(m, hi, q), n);
}

static LLVMValueRef exp_of(Vm *m, LLVMValueRef x) {
  x = clamp(m, x, kp(m, EXP_MIN), kp(m, EXP_MAX));
  LLVMValueRef n, rlo, r = exp_reduce(m, x, &n, &rlo);
  return exp_rebuild(m, kf(m, 1), r, rlo, n);
}

/* expm1(x) = 2^n (expm1(r) + 1 - 2^-n): no cancellation near 0 (n = 0 adds
 * nothing); 1 - 2^-n is carried as t + tlo, exact. */
static LLVMValueRef expm1_of(Vm *m, LLVMValueRef x) {
  static const double MIN[2] = {-25, -40};  /* below, expm1 rounds to -1 */
  LLVMValueRef xc = clamp(m, x, kp(m, MIN), kp(m, EXP_MAX));
  LLVMValueRef n, rlo, r = exp_reduce(m, xc, &n, &rlo);
  LLVMValueRef cap = ki(m, m->p ? 60 : 30);   /* beyond, 1 - 2^-n rounds to 1 */
  LLVMValueRef nc = sel(m, LLVMBuildICmp(m->b, LLVMIntSGT, n, cap, ""), cap, n);
  LLVMValueRef p = pow2(m, isub(m, ki(m, 0), nc)), one = kf(m, 1);
  LLVMValueRef t = sub(m, one, p);
  LLVMValueRef tlo = sub(m, sub(m, one, t), p);
  return keep_tiny(m, x, exp_rebuild(m, t, r, add(m, rlo, tlo), n));
}

/* }==================== log, log1p */

/* log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: 2 atanh(s), s = f / (2 + f),
 * = 2s + 2s z Q(z), z = s^2 <= 0.0295; relative error of Q 2^-21.7, 2^-58. */
static const Poly LOG_Q[2] = {
  {3, {0x1.55555cp-2, 0x1.997afcp-3, 0x1.2f1b9p-3}},
  {8, {0x1.5555555555555p-2, 0x1.9999999999a4fp-3, 0x1.2492492473582p-3,
       0x1.c71c720764b93p-4, 0x1.745cf6861fc57p-4, 0x1.3b1cbb76b323dp-4,
       0x1.0fb0b5d656eb5p-4, 0x1.0c93268b0e782p-4}},
};

/* ln2 = LN2_HI + LN2_LO, LN2_HI short enough that k LN2_HI is exact. */
static const double LOG_LN2_HI[2] = {0x1.62e4p-1, 0x1.62e42feep-1};
static const double LOG_LN2_LO[2] = {0x1.7f7d1cp-20, 0x1.a39ef35793c76p-33};
static const int64_t SQRT_HALF_BITS[2] = {0x3f3504f3, 0x3fe6a09e667f3bcd};

/* x = 2^k (1 + f), 1 + f in [sqrt(1/2), sqrt(2)); k comes back as a float.
 * Denormals are scaled into the normal range first. */
static LLVMValueRef log_reduce(Vm *m, LLVMValueRef x, LLVMValueRef *k) {
  static const double MIN_NORMAL[2] = {0x1p-126, 0x1p-1022};
  static const double UP[2] = {0x1p24, 0x1p53};
  LLVMValueRef denormal = cmp(m, LLVMRealOLT, x, kp(m, MIN_NORMAL));
  x = sel(m, denormal, mul(m, x, kp(m, UP)), x);
  LLVMValueRef off = ki(m, SQRT_HALF_BITS[m->p]);
  LLVMValueRef u = isub(m, bits(m, x), off);
  LLVMValueRef e = ashr(m, u, m->mbits);
  e = iadd(m, e, sel(m, denormal, ki(m, m->p ? -53 : -24), ki(m, 0)));
  *k = LLVMBuildSIToFP(m->b, e, m->ft, "");
  LLVMValueRef mant = iand(m, u, ki(m, ((int64_t)1 << m->mbits) - 1));
  return sub(m, flt(m, iadd(m, mant, off)), kf(m, 1));
}

/* 1 + x = 2^k (1 + f + flo) without rounding 1 + x: f + flo = x 2^-k +
 * (2^-k - 1) exactly, with x 2^-k made on the exponent bits (exact: |x| >
 * 0.29 unless k = 0) and 2^-k - 1 as 2^(2-k) / 4 - 1 in an fma, so the power of
 * two stays normal for k up to the top of the range. */
static LLVMValueRef log1p_reduce(Vm *m, LLVMValueRef x, LLVMValueRef *k, LLVMValueRef *flo) {
  LLVMValueRef u = add(m, kf(m, 1), x);
  LLVMValueRef ku = ashr(m, isub(m, bits(m, u), ki(m, SQRT_HALF_BITS[m->p])), m->mbits);
  *k = LLVMBuildSIToFP(m->b, ku, m->ft, "");
  LLVMValueRef xs = flt(m, isub(m, bits(m, x), shl(m, ku, m->mbits)));
  LLVMValueRef s4 = pow2(m, isub(m, ki(m, 2), ku));
  return two_sum(m, xs, fma3(m, s4, kf(m, 0.25), kf(m, -1)), flo);
}

/* k ln2 + log(1 + f + flo) as hi + lo, |lo| <= ulp(hi) / 2 (pow needs the
 * lo part), flo below ulp(f). s = (f + flo) / (2 + f + flo) is carried as s +
 * slo, from the exact remainder of the division, so the only rounding of
 * size ulp(log) is the last sum. */
static LLVMValueRef log_core(Vm *m, LLVMValueRef k, LLVMValueRef f, LLVMValueRef flo,
                             LLVMValueRef *lo) {
  LLVMValueRef dlo, d = fast_two_sum(m, kf(m, 2), f, &dlo);
  dlo = add(m, dlo, flo);
  LLVMValueRef inv = dvd(m, kf(m, 1), d);
  LLVMValueRef s = mul(m, f, inv);
  LLVMValueRef rem = add(m, fma3(m, neg(m, s), d, f), flo);   /* f + flo - s d */
  rem = fma3(m, neg(m, s), dlo, rem);
  LLVMValueRef slo = mul(m, rem, inv);
  LLVMValueRef s2 = add(m, s, s), z = mul(m, s, s);
  LLVMValueRef tail = mul(m, mul(m, s2, z), horner(m, z, &LOG_Q[m->p]));
  LLVMValueRef a = mul(m, k, kp(m, LOG_LN2_HI));   /* exact, and |a| >= |s2| unless k = 0 */
  LLVMValueRef err, hi = fast_two_sum(m, a, s2, &err);
  LLVMValueRef l = add(m, err, fma3(m, k, kp(m, LOG_LN2_LO), add(m, add(m, slo, slo), tail)));
  return fast_two_sum(m, hi, l, lo);
}

/* The edges of log(x) (pole 0) and log1p(x) (pole -1): +inf at +inf, -inf at
 * the pole, NaN below it and for NaN. */
static LLVMValueRef log_edges(Vm *m, LLVMValueRef x, LLVMValueRef y, double pole) {
  y = sel(m, cmp(m, LLVMRealOEQ, x, kf(m, INFINITY)), x, y);
  y = sel(m, cmp(m, LLVMRealOEQ, x, kf(m, pole)), kf(m, -INFINITY), y);
  return sel(m, cmp(m, LLVMRealULT, x, kf(m, pole)), kf(m, NAN), y);
}

static LLVMValueRef log_of(Vm *m, LLVMValueRef x) {
  LLVMValueRef k, lo, f = log_reduce(m, x, &k);
  return log_edges(m, x, log_core(m, k, f, kf(m, -0.0), &lo), 0);
}

static LLVMValueRef log1p_of(Vm *m, LLVMValueRef x) {
  LLVMValueRef k, flo, lo, f = log1p_reduce(m, x, &k, &flo);
  return keep_tiny(m, x, log_edges(m, x, log_core(m, k, f, flo, &lo), -1));
}

/* }==================== tanh, sigmoid, erf */

/* tanh |x| = e / (e + 2), e = expm1(2|x|): accurate near 0 like expm1, and
 * saturated to 1 where tanh rounds to 1 (|x| >= 9.1 float, 19.1 double). */
static LLVMValueRef tanh_of(Vm *m, LLVMValueRef x) {
  static const double SAT[2] = {10, 20};
  LLVMValueRef a = fabs1(m, x);
  a = sel(m, cmp(m, LLVMRealOGT, a, kp(m, SAT)), kp(m, SAT), a);
  LLVMValueRef e = expm1_of(m, add(m, a, a)), dlo;
  LLVMValueRef d = two_sum(m, e, kf(m, 2), &dlo);
  return with_sign(m, quotient(m, e, d, dlo), x);
}

/* 1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|): no overflow,
 * so never NaN, and the tail below -87 comes out as denormals, not 0. */
static LLVMValueRef sigmoid_of(Vm *m, LLVMValueRef x) {
  LLVMValueRef e = exp_of(m, neg(m, fabs1(m, x)));
  LLVMValueRef num = sel(m, cmp(m, LLVMRealOGE, x, kf(m, 0)), kf(m, 1), e), dlo;
  LLVMValueRef d = fast_two_sum(m, kf(m, 1), e, &dlo);
  return quotient(m, num, d, dlo);
}

/* erf on pieces [i, i+1) of |x|, the polynomial's coefficients chosen per
 * lane by selects: on [0, 1) erf(x) / x in x^2 (relative error 2^-34.8,
 * 2^-62.7), above it erf(i + 1/2 + t) in t (absolute error 2^-32.6, 2^-58.2
 * or better); 1 from where erf rounds to 1. The constant term, which is most
 * of the value, is c[i][0] + c0lo[i]. */
typedef struct Pieces {
  int npieces, n;
  double c[6][18];
  double c0lo[6];
  double saturate;
} Pieces;

static const Pieces ERF[2] = {
  {4, 10, {
    {0x1.20dd76p+0, -0x1.812746p-2, 0x1.ce2f08p-4, -0x1.b829a8p-6, 0x1.5628eep-8,
     -0x1.bcbe9ap-11, 0x1.d82692p-14, -0x1.438406p-17},
    {0x1.eea556p-1, 0x1.e72372p-4, -0x1.6d5a94p-3, 0x1.1c2a22p-3, -0x1.6d5ba8p-5,
     -0x1.e74e4cp-7, 0x1.3cbfe8p-6, -0x1.33e28ep-8, -0x1.3aaa6p-9, 0x1.923402p-10},
    {0x1.ffcaa8p-1, 0x1.1d8318p-9, -0x1.64e44ep-8, 0x1.119d8ap-7, -0x1.1a8294p-7,
     0x1.90eb8ap-8, -0x1.7012fep-9, 0x1.1b8682p-11, 0x1.41217p-12, -0x1.00c2dep-12},
    {0x1.ffffe8p-1, 0x1.6a5984p-18, -0x1.3d0738p-16, 0x1.62cc4ep-15, -0x1.1c4034p-14,
     0x1.5872p-14, -0x1.4393bp-14, 0x1.e7b728p-15, -0x1.36acd4p-15, 0x1.04fdc4p-16},
  }, {-0x1.f7ff04p-25, -0x1.1e978ap-26, 0x1.ebd04ep-26, -0x1.de7912p-26}, 3.9},
  {6, 18, {
    {0x1.20dd750429b6dp+0, -0x1.812746b0379e6p-2, 0x1.ce2f21a042b2p-4,
     -0x1.b82ce3128499cp-6, 0x1.565bcd0db02e5p-8, -0x1.c02db3d8ed26p-11,
     0x1.f9a321a11dfd9p-14, -0x1.f4d1df394e707p-17, 0x1.b9def19e196f3p-20,
     -0x1.5f1d36c38490cp-23, 0x1.f7a4123bbf5e5p-27, -0x1.386ac0ef03aafp-30,
     0x1.0579ab29ce0b6p-34},
    {0x1.eea5557137aep-1, 0x1.e723726b824abp-4, -0x1.6d5a95d0a1b3bp-3,
     0x1.1c2a02beb6a05p-3, -0x1.6d5a95d0a8d18p-5, -0x1.e723726b55171p-7,
     0x1.3ca3d72e90809p-6, -0x1.36d73a6c51882p-8, -0x1.35ae4fb21b961p-9,
     0x1.c0380eddf4bcep-10, -0x1.85b3d39603a33p-14, -0x1.0acf5d8e85774p-12,
     0x1.45cc844c69b94p-14, 0x1.2d62264f2a9a5p-16, -0x1.d70fcee5d64e3p-17,
     0x1.2f9b8d91be7b5p-21, 0x1.7c6e751f684efp-20, -0x1.2a868e61e60a5p-22},
    {0x1.ffcaa8f4c9beap-1, 0x1.1d83170fbf7p-9, -0x1.64e3dcd3af2d6p-8,
     0x1.119da0c46cbc2p-7, -0x1.1a89b97cf118ep-7, 0x1.90e8128402346p-8,
     -0x1.6ecdbf63b9109p-9, 0x1.1c610bc4a636bp-11, 0x1.11551b550bc3bp-12,
     -0x1.067177e67222ap-12, 0x1.4a84c1bab1628p-14, 0x1.58baf42feeebfp-18,
     -0x1.d88c3e904c947p-17, 0x1.3ada1ad23f4dep-18, 0x1.9f348d195ec2fp-23,
     -0x1.599f2b1e420a8p-21, 0x1.4962582922511p-23, 0x1.8b104875b1feep-26},
    {0x1.ffffe710d565ep-1, 0x1.6a597219a9372p-18, -0x1.3d0e43d673524p-16,
     0x1.62ccea63cbbc6p-15, -0x1.1c07721adc81dp-14, 0x1.586bafc9a352dp-14,
     -0x1.46153fb639183p-14, 0x1.e827faffc2e6p-15, -0x1.1f6305678e3cfp-15,
     0x1.0135255306516p-16, -0x1.3773e1954cdbcp-18, 0x1.dd80c269063f4p-22,
     0x1.dc6a14044ceadp-22, -0x1.43f3242a48c18p-22, 0x1.8ddb0741a8a8p-24,
     -0x1.825fcbc43819cp-28, -0x1.34322a0d49de4p-27, 0x1.079a417568262p-28},
    {0x1.fffffffe4fa3p-1, 0x1.f1e3523b3dccp-30, -0x1.180fde419da18p-27,
     0x1.99b866564fd6bp-26, -0x1.b598cb3e84ccap-25, 0x1.6b1baf41f487fp-24,
     -0x1.e650e3e0751fcp-24, 0x1.0d678fb8dda8cp-23, -0x1.f5f30ee4bfce2p-24,
     0x1.8d2e5d1c86eabp-24, -0x1.0c3ad3b873d92p-24, 0x1.34eee4edf1a63p-25,
     -0x1.2cc67148e80bep-26, 0x1.e474bfe3818fbp-28, -0x1.33809b6bbf109p-29,
     0x1.fff33712df477p-32, 0x1.ff78272a2898fp-36, -0x1.04c6c6a67c314p-34},
    {0x1.fffffffffffbep-1, 0x1.7258610de944cp-44, -0x1.fd39851b9c509p-42,
     0x1.cb12e2d189b9ep-40, -0x1.310120c519fa9p-38, 0x1.3e4a20ae0fff7p-37,
     -0x1.0f6e73709f6b5p-36, 0x1.84a4d02092672p-36, -0x1.dc3a8794f67b2p-36,
     0x1.fa7bad2260b96p-36, -0x1.d8626e959bd7ap-36, 0x1.858c2e668394bp-36,
     -0x1.1e14df30ae83ap-36, 0x1.75c8aa8a14003p-37, -0x1.ab78eee13b4a5p-38,
     0x1.c06beca74a651p-39, -0x1.edd1a42fca02cp-40, 0x1.87fa144263ef3p-41},
  }, {0x1.18307f1e23719p-56, -0x1.53224de7afeb6p-55, 0x1.aad6137f673e5p-55,
      0x1.c9c3eec9279ddp-55, 0x1.d16de79d32c1cp-57, -0x1.182b368fa3c45p-55}, 5.9},
};

/* Each lane's value of v[0], v[stride], v[2 stride]... by its piece
 * (in[i]: the lane is in piece i or above). */
static LLVMValueRef piece_pick(Vm *m, const LLVMValueRef *in, int npieces, const double *v,
                               int stride) {
  LLVMValueRef y = kf(m, v[0]);
  for (int i = 1; i < npieces; i++)
    y = sel(m, in[i], kf(m, v[i * stride]), y);
  return y;
}

static LLVMValueRef erf_of(Vm *m, LLVMValueRef x) {
  const Pieces *P = &ERF[m->p];
  LLVMValueRef a = fabs1(m, x), in[6], c[18];
  for (int i = 1; i < P->npieces; i++)
    in[i] = cmp(m, LLVMRealOGE, a, kf(m, i));
  for (int j = 0; j < P->n; j++)
    c[j] = piece_pick(m, in, P->npieces, &P->c[0][j], 18);
  static const double CENTER[6] = {0.5, 1.5, 2.5, 3.5, 4.5, 5.5};
  LLVMValueRef small = cmp(m, LLVMRealOLT, a, kf(m, 1));
  LLVMValueRef t = sub(m, a, piece_pick(m, in, P->npieces, CENTER, 1));
  LLVMValueRef u = sel(m, small, mul(m, a, a), t);
  LLVMValueRef c0lo = piece_pick(m, in, P->npieces, P->c0lo, 1);
  LLVMValueRef w = fma3(m, u, horner_v(m, u, c + 1, P->n - 1), c0lo);
  LLVMValueRef scale = sel(m, small, a, kf(m, 1));   /* the small piece is x P(x^2) */
  LLVMValueRef y = fma3(m, scale, c[0], mul(m, scale, w));
  y = sel(m, cmp(m, LLVMRealOGE, a, kf(m, P->saturate)), kf(m, 1), y);
  return with_sign(m, y, x);
}

/* }==================== pow */

/* Whether y is an integer and an odd one. Below 2^52, adding 2^52 rounds y
 * to an integer held in the low bits; from 2^52 every double is an integer,
 * and from 2^53 an even one. */
static void int_parity(Vm *m, LLVMValueRef y, LLVMValueRef *is_int, LLVMValueRef *is_odd) {
  LLVMValueRef ay = fabs1(m, y), two52 = kf(m, 0x1p52);
  LLVMValueRef big = cmp(m, LLVMRealOGE, ay, two52);
  LLVMValueRef t = add(m, ay, two52);
  *is_int = LLVMBuildOr(m->b, big, cmp(m, LLVMRealOEQ, sub(m, t, two52), ay), "");
  LLVMValueRef low = iand(m, bits(m, sel(m, big, ay, t)), ki(m, 1));
  LLVMValueRef odd = LLVMBuildICmp(m->b, LLVMIntNE, low, ki(m, 0), "");
  odd = LLVMBuildAnd(m->b, odd, cmp(m, LLVMRealOLT, ay, kf(m, 0x1p53)), "");
  *is_odd = LLVMBuildAnd(m->b, odd, *is_int, "");
}

/* C99 Annex F's cases that exp(y log|x|) gets wrong: the sign for negative x
 * and odd y, NaN for negative finite x and non-integer y, and 1 for
 * pow(1, y), pow(x, 0) and pow(-1, +-inf), even with NaN. */
static LLVMValueRef pow_edges(Vm *m, LLVMValueRef x, LLVMValueRef y, LLVMValueRef r) {
  LLVMValueRef is_int, is_odd, one = kf(m, 1);
  int_parity(m, y, &is_int, &is_odd);
  LLVMValueRef x_neg = LLVMBuildICmp(m->b, LLVMIntSLT, bits(m, x), ki(m, 0), "");
  r = sel(m, LLVMBuildAnd(m->b, x_neg, is_odd, ""), neg(m, r), r);
  LLVMValueRef neg_finite = LLVMBuildAnd(m->b, cmp(m, LLVMRealOLT, x, kf(m, 0)),
                                         cmp(m, LLVMRealOGT, x, kf(m, -INFINITY)), "");
  r = sel(m, LLVMBuildAnd(m->b, neg_finite, LLVMBuildNot(m->b, is_int, ""), ""), kf(m, NAN), r);
  LLVMValueRef minus_one_inf = LLVMBuildAnd(m->b, cmp(m, LLVMRealOEQ, x, kf(m, -1)),
                                            cmp(m, LLVMRealOEQ, fabs1(m, y), kf(m, INFINITY)), "");
  r = sel(m, minus_one_inf, one, r);
  LLVMValueRef unit = LLVMBuildOr(m->b, cmp(m, LLVMRealOEQ, x, one),
                                  cmp(m, LLVMRealOEQ, y, kf(m, 0)), "");
  return sel(m, unit, one, r);
}

/* exp(y log|x|) in double, log|x| as hi + lo and y log|x| as ph + pl: the
 * exponent is reduced from ph and pl joins the reduced argument, so the
 * rounding of log is not magnified by y. The error left is about 1 ulp plus
 * |y log x| 2^-59, from log's polynomial tail. */
static LLVMValueRef pow_core(Vm *m, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef ax = fabs1(m, x), k, lo;
  LLVMValueRef f = log_reduce(m, ax, &k);
  LLVMValueRef hi = log_edges(m, ax, log_core(m, k, f, kf(m, -0.0), &lo), 0);
  LLVMValueRef ph = mul(m, y, hi);
  LLVMValueRef pl = add(m, fma3(m, y, hi, neg(m, ph)), mul(m, y, lo));
  LLVMValueRef e = clamp(m, ph, kp(m, EXP_MIN), kp(m, EXP_MAX));
  pl = sel(m, cmp(m, LLVMRealOEQ, e, ph), pl, kf(m, 0));   /* no pl once saturated */
  LLVMValueRef n, rlo, r = exp_reduce(m, e, &n, &rlo), rlo2;
  r = two_sum(m, r, pl, &rlo2);  /* pl can exceed ulp(r): into r, to pass through e^r */
  LLVMValueRef res = exp_rebuild(m, kf(m, 1), r, add(m, rlo, rlo2), n);
  return pow_edges(m, x, y, res);
}

/* Float pow runs in double, so float's result is nearly always correctly
 * rounded. */
static LLVMValueRef pow_of(Vm *m, LLVMValueRef x, LLVMValueRef y) {
  if (m->p)
    return pow_core(m, x, y);
  Vm d = vm_new(m->c, m->c->t_f64, m->lanes);
  LLVMValueRef xd = LLVMBuildFPExt(m->b, x, d.ft, "");
  LLVMValueRef yd = LLVMBuildFPExt(m->b, y, d.ft, "");
  return LLVMBuildFPTrunc(m->b, pow_core(&d, xd, yd), m->ft, "");
}

/* }==================== sin, cos */

/* sin r = r + r z S(z), cos r = 1 - z/2 + z^2 C(z), z = r^2 <= (pi/4)^2:
 * relative error 2^-32.4, 2^-34 for float, 2^-63.6, 2^-65.8 for double. */
static const Poly SIN_S[2] = {
  {4, {-0x1.555556p-3, 0x1.11110ep-7, -0x1.a013ap-13, 0x1.6dbc0ep-19}},
  {7, {-0x1.5555555555555p-3, 0x1.111111111111p-7, -0x1.a01a01a019928p-13,
       0x1.71de3a545ee28p-19, -0x1.ae6454101445p-26, 0x1.61217d148fb18p-33,
       -0x1.ab16c0bbd09b3p-41}},
};
static const Poly COS_C[2] = {
  {4, {0x1.555556p-5, -0x1.6c16cp-10, 0x1.a015c2p-16, -0x1.25236ap-22}},
  {7, {0x1.5555555555555p-5, -0x1.6c16c16c16c16p-10, 0x1.a01a01a019d06p-16,
       -0x1.27e4fb77124fep-22, 0x1.1eed8deac1651p-29, -0x1.9394b8d22c23bp-37,
       0x1.ab77adc25989fp-45}},
};

/* Inputs beyond SINCOS_MAX give NaN: the reduction n = round(x 2/pi) must fit
 * the shifter's low bits, and pi/2 in three parts keeps x - n pi/2 accurate
 * up to there. */
static const double SINCOS_MAX[2] = {0x1p22, 0x1p30};

/* x = n pi/2 + r + rlo, |r| <= pi/4, rlo below ulp(r); q = n + quadrant comes
 * back as an integer. pi/2 = P1 + P2 + P3: x - n P1 is exact (as in
 * exp_reduce), n P2 is split exactly by an fma and subtracted exactly, so
 * only n P3's rounding and what lies beyond P3 are lost. */
static LLVMValueRef sincos_reduce(Vm *m, LLVMValueRef x, int quadrant, LLVMValueRef *q,
                                  LLVMValueRef *rlo) {
  static const double TWO_OVER_PI[2] = {0x1.45f306p-1, 0x1.45f306dc9c883p-1};
  static const double P1[2] = {0x1.921fb6p+0, 0x1.921fb54442d18p+0};
  static const double P2[2] = {-0x1.777a5cp-25, 0x1.1a62633145c07p-54};
  static const double P3[2] = {-0x1.ee59dap-50, -0x1.f1976b7ed8fbcp-110};
  LLVMValueRef shift = kp(m, SHIFTER);
  LLVMValueRef k = fma3(m, x, kp(m, TWO_OVER_PI), shift);
  LLVMValueRef n = sub(m, k, shift);
  *q = iadd(m, isub(m, bits(m, k), bits(m, shift)), ki(m, quadrant));
  LLVMValueRef r1 = fma3(m, n, neg(m, kp(m, P1)), x);
  LLVMValueRef c = mul(m, n, kp(m, P2));
  LLVMValueRef ce = fma3(m, n, kp(m, P2), neg(m, c));   /* n P2 = c + ce */
  LLVMValueRef err, r = two_sum(m, r1, neg(m, c), &err);
  *rlo = sub(m, err, fma3(m, n, kp(m, P3), ce));
  return r;
}

/* sin(x + quadrant pi/2): sin or cos of the reduced r + rlo by the quadrant,
 * with its sign; to first order in rlo, sin(r + rlo) = sin r + rlo cos r and
 * cos(r + rlo) = cos r - rlo sin r. */
static LLVMValueRef sincos_of(Vm *m, LLVMValueRef x, int quadrant) {
  LLVMValueRef q, rlo, r = sincos_reduce(m, x, quadrant, &q, &rlo);
  LLVMValueRef z = mul(m, r, r), one = kf(m, 1), hz = mul(m, kf(m, 0.5), z);
  LLVMValueRef s_lo = fma3(m, neg(m, hz), rlo, rlo);
  LLVMValueRef s = add(m, r, fma3(m, mul(m, r, z), horner(m, z, &SIN_S[m->p]), s_lo));
  /* 1 - z/2 rounded to w, and what the rounding lost, as in fdlibm's cos */
  LLVMValueRef w = sub(m, one, hz);
  LLVMValueRef c_lo = fma3(m, neg(m, r), rlo, sub(m, sub(m, one, w), hz));
  LLVMValueRef c = add(m, w, fma3(m, mul(m, z, z), horner(m, z, &COS_C[m->p]), c_lo));
  LLVMValueRef odd = LLVMBuildICmp(m->b, LLVMIntNE, iand(m, q, ki(m, 1)), ki(m, 0), "");
  LLVMValueRef y = sel(m, odd, c, s);
  LLVMValueRef flip = shl(m, iand(m, q, ki(m, 2)), m->p ? 62 : 30);  /* bit 1 to the sign */
  y = flt(m, LLVMBuildXor(m->b, bits(m, y), flip, ""));
  return sel(m, cmp(m, LLVMRealOGT, fabs1(m, x), kp(m, SINCOS_MAX)), kf(m, NAN), y);
}

/* }==================== the exported entries */

LLVMValueRef cg_vexp(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return exp_of(&m, x);
}

LLVMValueRef cg_vexpm1(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return expm1_of(&m, x);
}

LLVMValueRef cg_vlog(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return log_of(&m, x);
}

LLVMValueRef cg_vlog1p(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return log1p_of(&m, x);
}

LLVMValueRef cg_vtanh(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return tanh_of(&m, x);
}

LLVMValueRef cg_vsigmoid(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return sigmoid_of(&m, x);
}

LLVMValueRef cg_verf(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return erf_of(&m, x);
}

LLVMValueRef cg_vpow(CgCtx *c, LLVMValueRef x, LLVMValueRef y) {
  Vm m = vm_of(c, x);
  assert(LLVMTypeOf(y) == m.ft);
  return pow_of(&m, x, y);
}

LLVMValueRef cg_vsin(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return keep_tiny(&m, x, sincos_of(&m, x, 0));
}

LLVMValueRef cg_vcos(CgCtx *c, LLVMValueRef x) {
  Vm m = vm_of(c, x);
  return sincos_of(&m, x, 1);
}

/* What the test of codegen/vmath.c (tests/codegen/test_vmath.c) and its
 * benchmark (bench_vmath.c) share: JIT'd loops over each function,
 *   void NAME(const T *x, T *y, i64 n)               y[i] = f(x[i])
 *   void NAME(const T *x, const T *y, T *out, i64 n)  out[i] = pow(x[i], y[i])
 * with explicit vectors of `lanes` elements (0: scalars) and a scalar loop for
 * the tail, NAME being "<fn>_<f32|f64>_<lanes>"; and the accounting of errors
 * against a reference, in ulps and relative. */
#ifndef KILN_VMATH_CHECK_H
#define KILN_VMATH_CHECK_H

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "codegen/codegen.h"

typedef void (*Map1)(const void *x, void *y, int64_t n);
typedef void (*Map2)(const void *x, const void *y, void *out, int64_t n);

typedef struct VmFn {
  const char *name;
  LLVMValueRef (*f1)(CgCtx *c, LLVMValueRef x);
  LLVMValueRef (*f2)(CgCtx *c, LLVMValueRef x, LLVMValueRef y); /* pow */
} VmFn;

static const VmFn VM_FNS[] = {
  {"exp", cg_vexp, NULL},     {"expm1", cg_vexpm1, NULL}, {"log", cg_vlog, NULL},
  {"log1p", cg_vlog1p, NULL}, {"tanh", cg_vtanh, NULL},   {"sigmoid", cg_vsigmoid, NULL},
  {"erf", cg_verf, NULL},     {"sin", cg_vsin, NULL},     {"cos", cg_vcos, NULL},
  {"pow", NULL, cg_vpow},
};
enum { VM_NFNS = sizeof VM_FNS / sizeof VM_FNS[0] };

static void vm_loop_name(char *buf, int len, const VmFn *f, int f64, int lanes) {
  snprintf(buf, len, "%s_%s_%d", f->name, f64 ? "f64" : "f32", lanes);
}

/* for (; i + step <= n; i += step) out[i..] = f(in[i..]), step = max(lanes, 1);
 * returns i after the loop, the builder at the loop's exit. */
static LLVMValueRef vm_emit_loop(CgCtx *c, LLVMValueRef fn, const VmFn *f, LLVMTypeRef elem,
                                 int lanes, LLVMValueRef start) {
  int nin = f->f2 ? 2 : 1, step = lanes ? lanes : 1;
  LLVMValueRef n = LLVMGetParam(fn, nin + 1), out = LLVMGetParam(fn, nin);
  LLVMTypeRef vt = lanes ? LLVMVectorType(elem, lanes) : elem;
  unsigned align = LLVMABISizeOfType(LLVMGetModuleDataLayout(c->mod), elem);
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, fn, "head");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, fn, "body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, fn, "exit");
  LLVMBuildBr(c->b, head);
  LLVMPositionBuilderAtEnd(c->b, head);
  LLVMValueRef i = LLVMBuildPhi(c->b, c->t_i64, "i");
  LLVMValueRef next = LLVMBuildAdd(c->b, i, LLVMConstInt(c->t_i64, step, 0), "");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLE, next, n, ""), body, exit);
  LLVMPositionBuilderAtEnd(c->b, body);
  LLVMValueRef a[2];
  for (int k = 0; k < nin; k++) {
    LLVMValueRef p = LLVMBuildGEP2(c->b, elem, LLVMGetParam(fn, k), &i, 1, "");
    a[k] = LLVMBuildLoad2(c->b, vt, p, "");
    LLVMSetAlignment(a[k], align);
  }
  LLVMValueRef y = f->f2 ? f->f2(c, a[0], a[1]) : f->f1(c, a[0]);
  LLVMValueRef st = LLVMBuildStore(c->b, y, LLVMBuildGEP2(c->b, elem, out, &i, 1, ""));
  LLVMSetAlignment(st, align);
  LLVMBasicBlockRef body_end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, head);
  LLVMValueRef in[] = {start, next};
  LLVMBasicBlockRef from[] = {pre, body_end};
  LLVMAddIncoming(i, in, from, 2);
  LLVMPositionBuilderAtEnd(c->b, exit);
  return i;
}

static void vm_define_loop(CgCtx *c, const VmFn *f, int f64, int lanes) {
  char name[64];
  vm_loop_name(name, sizeof name, f, f64, lanes);
  int nin = f->f2 ? 2 : 1;
  LLVMTypeRef params[] = {c->t_ptr, c->t_ptr, c->t_ptr, c->t_i64};
  params[nin + 1] = c->t_i64;
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->t_void, params, nin + 2, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMTypeRef elem = f64 ? c->t_f64 : c->t_f32;
  LLVMValueRef i = LLVMConstInt(c->t_i64, 0, 0);
  if (lanes)
    i = vm_emit_loop(c, fn, f, elem, lanes, i);
  vm_emit_loop(c, fn, f, elem, 0, i);
  LLVMBuildRetVoid(c->b);
}

/* {==================== error accounting */

static float f32_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static double f64_of(uint64_t u) {
  double d;
  memcpy(&d, &u, 8);
  return d;
}

typedef struct Err {
  double ulp, rel;         /* the largest errors seen */
  double ulp_x, rel_x;     /* at these inputs */
  long wrong;              /* NaN, infinity or finiteness not as in the reference */
  double wrong_x;
} Err;

/* Spacing of the floats at r (from r's exponent bits: fast, for the long
 * float sweeps), and of the doubles. */
static double ulp32(double r) {
  uint64_t u;
  memcpy(&u, &r, 8);
  int e = (int)(u >> 52 & 0x7ff) - 1023 - 23;
  return e > -149 ? f64_of((uint64_t)(e + 1023) << 52) : 0x1p-149;
}

static long double ulp64(long double r) {
  int e = r == 0 ? INT_MIN / 2 : ilogbl(r) - 52;
  return scalbnl(1, e > -1074 ? e : -1074);
}

static void err_note(Err *e, double x, double ulp, double rel, int want_rel) {
  if (ulp > e->ulp) {
    e->ulp = ulp;
    e->ulp_x = x;
  }
  if (want_rel && rel > e->rel) {
    e->rel = rel;
    e->rel_x = x;
  }
}

/* y against the exact ref, of the target format's precision (f64). */
static void err_add(Err *e, int f64, double x, long double y, long double ref, int want_rel) {
  long double rounded = f64 ? (long double)(double)ref : (long double)(float)ref;
  int ok_class = isnan(ref) ? isnan(y) : isinf(rounded) ? y == rounded : isfinite(y);
  if (!ok_class) {
    if (!e->wrong++)
      e->wrong_x = x;
    return;
  }
  if (isnan(ref) || isinf(rounded))
    return;
  if (f64) {
    long double diff = fabsl(y - ref);
    double rel = (double)(fabsl(ref) >= DBL_MIN ? diff / fabsl(ref) : diff);
    err_note(e, x, (double)(diff / ulp64(ref)), rel, want_rel);
  } else {
    double r = (double)ref, diff = fabs((double)y - r);  /* exact: y is a float */
    err_note(e, x, diff / ulp32(r), fabs(r) >= FLT_MIN ? diff / fabs(r) : diff, want_rel);
  }
}

static void err_merge(Err *e, const Err *o) {
  if (o->ulp > e->ulp)
    e->ulp = o->ulp, e->ulp_x = o->ulp_x;
  if (o->rel > e->rel)
    e->rel = o->rel, e->rel_x = o->rel_x;
  if (o->wrong && !e->wrong)
    e->wrong_x = o->wrong_x;
  e->wrong += o->wrong;
}

/* }==================== */

#endif

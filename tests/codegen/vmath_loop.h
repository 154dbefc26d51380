/* JIT'd loops over the math of codegen/vmath.c, shared by its test and its
 * benchmark (bench/vmath/bench_vmath.c):
 *   void NAME(const T *x, T *y, i64 n)               y[i] = f(x[i])
 *   void NAME(const T *x, const T *y, T *out, i64 n)  out[i] = pow(x[i], y[i])
 * with explicit vectors of `lanes` elements (0: scalars) and a scalar loop for
 * the tail. NAME is "<fn>_<f32|f64>_<lanes>". */
#ifndef KILN_VMATH_LOOP_H
#define KILN_VMATH_LOOP_H

#include <stdio.h>
#include "codegen/codegen.h"

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

#endif

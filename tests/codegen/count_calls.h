/* Counts the calls of one part of a generated contraction (a GEMM's
 * `<name>.micro`, `.tile`, ...) in an i64 global, so that a test can check
 * how the work was split, not only what it computed. */
#ifndef KILN_TESTS_CODEGEN_COUNT_CALLS_H
#define KILN_TESTS_CODEGEN_COUNT_CALLS_H

#include <stdio.h>
#include "codegen/codegen.h"

/* Counts the calls of the part `<gemm>.<part>` in the global `counter`:
 * a wrapper that bumps it, then calls the part, takes the part's place at
 * its call sites. Look the counter up by name after cg_jit_add. */
static inline void count_calls(CgCtx *c, const char *gemm, const char *part, const char *counter) {
  char full[128];
  snprintf(full, sizeof full, "%s.%s", gemm, part);
  LLVMValueRef fn = LLVMGetNamedFunction(c->mod, full);
  if (!fn)
    fail_msg("no part %s", full);
  LLVMValueRef n = LLVMAddGlobal(c->mod, c->t_i64, counter);
  LLVMSetInitializer(n, LLVMConstInt(c->t_i64, 0, 0));
  LLVMTypeRef ft = LLVMGlobalGetValueType(fn);
  snprintf(full, sizeof full, "%s.%s.counted", gemm, part);
  LLVMValueRef wrap = LLVMAddFunction(c->mod, full, ft);
  LLVMReplaceAllUsesWith(fn, wrap);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(c->ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(c->ctx, wrap, "entry"));
  LLVMValueRef old = LLVMBuildLoad2(b, c->t_i64, n, "");
  LLVMBuildStore(b, LLVMBuildAdd(b, old, LLVMConstInt(c->t_i64, 1, 0), ""), n);
  LLVMValueRef args[32];
  unsigned np = LLVMCountParams(wrap);
  for (unsigned i = 0; i < np; i++)
    args[i] = LLVMGetParam(wrap, i);
  LLVMBuildCall2(b, ft, fn, args, np, "");
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
}

#endif

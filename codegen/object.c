/* Ahead-of-time output: a module built by cg_build_graph for any target
 * (cg_ctx_init with a triple and CPU), given data and small forwarding
 * functions, then written as an object, assembly or LLVM IR.
 *
 * The code is the JIT's: the same graph, the same emitters and the same
 * IR pipeline (cg_optimize) run before anything here touches the module.
 * Only afterwards does cg_internalize hide every symbol but the artifact's
 * own entry points, so that two exported models linked into one program
 * cannot resolve each other's kernels. */
#include "codegen/codegen.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A private constant global holding n bytes, aligned; NUL-free data is fine. */
LLVMValueRef cg_add_bytes(CgCtx *c, const char *name, const void *data, size_t n, int align) {
  LLVMValueRef init = LLVMConstStringInContext2(c->ctx, n ? data : "", n, 1);
  LLVMValueRef g = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetAlignment(g, align);
  return g;
}

/* A private constant global array of int64 words, in the target's byte order. */
LLVMValueRef cg_add_words(CgCtx *c, const char *name, const int64_t *w, size_t n) {
  LLVMValueRef *vals = malloc((n ? n : 1) * sizeof *vals);
  if (!vals)
    return NULL;
  for (size_t i = 0; i < n; i++)
    vals[i] = LLVMConstInt(c->t_i64, (unsigned long long)w[i], 1);
  LLVMValueRef init = LLVMConstArray2(c->t_i64, vals, n);
  free(vals);
  LLVMValueRef g = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetAlignment(g, 8);
  return g;
}

/* A constant global array of pointers (NULL entries allowed): the layout of
 * a C struct of n pointers. */
LLVMValueRef cg_add_pointers(CgCtx *c, const char *name, LLVMValueRef *ptrs, int n) {
  LLVMValueRef vals[32];
  for (int i = 0; i < n && i < 32; i++)
    vals[i] = ptrs[i] ? ptrs[i] : LLVMConstNull(c->t_ptr);
  LLVMValueRef init = LLVMConstArray2(c->t_ptr, vals, n);
  LLVMValueRef g = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMInternalLinkage);
  return g;
}

/* Defines `name` with the C signature sig (cg_rt_entry's letters): it calls
 * `callee` with the constants pre[0..npre) first, then its own arguments,
 * and returns what the callee returns. */
LLVMValueRef cg_add_forward(CgCtx *c, const char *name, const char *callee, const char *sig,
                            LLVMValueRef *pre, int npre) {
  LLVMTypeRef own[16], all[24];
  int n = (int)strlen(sig) - 1;
  for (int i = 0; i < npre; i++)
    all[i] = LLVMTypeOf(pre[i]);
  for (int i = 0; i < n; i++)
    all[npre + i] = own[i] = cg_sig_type(c, sig[i + 1]);
  LLVMTypeRef ret = cg_sig_type(c, sig[0]);
  LLVMTypeRef cty = LLVMFunctionType(ret, all, npre + n, 0);
  LLVMValueRef cf = LLVMGetNamedFunction(c->mod, callee);
  if (!cf)
    cf = LLVMAddFunction(c->mod, callee, cty);
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(ret, own, n, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef args[24];
  for (int i = 0; i < npre; i++)
    args[i] = pre[i];
  for (int i = 0; i < n; i++)
    args[npre + i] = LLVMGetParam(fn, i);
  LLVMValueRef r = LLVMBuildCall2(c->b, cty, cf, args, npre + n, "");
  if (sig[0] == 'v')
    LLVMBuildRetVoid(c->b);
  else
    LLVMBuildRet(c->b, r);
  return fn;
}

static bool kept(const char *name, const char *const *keep, int nkeep) {
  for (int i = 0; i < nkeep; i++)
    if (!strcmp(name, keep[i]))
      return true;
  return false;
}

/* Every function and global the module defines becomes internal, but those
 * named in keep; declarations (the runtime, libc) stay as they are. */
void cg_internalize(CgCtx *c, const char *const *keep, int nkeep) {
  size_t len;
  for (LLVMValueRef f = LLVMGetFirstFunction(c->mod); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f) && !kept(LLVMGetValueName2(f, &len), keep, nkeep))
      LLVMSetLinkage(f, LLVMInternalLinkage);
  for (LLVMValueRef g = LLVMGetFirstGlobal(c->mod); g; g = LLVMGetNextGlobal(g))
    if (!LLVMIsDeclaration(g) && LLVMGetLinkage(g) != LLVMPrivateLinkage &&
        !kept(LLVMGetValueName2(g, &len), keep, nkeep))
      LLVMSetLinkage(g, LLVMInternalLinkage);
}

int cg_emit_file(CgCtx *c, CgEmitKind kind, const char *path, char *err, int errlen) {
  char *msg = NULL;
  LLVMBool bad = kind == CG_EMIT_LLVM
                     ? LLVMPrintModuleToFile(c->mod, path, &msg)
                     : LLVMTargetMachineEmitToFile(c->tm, c->mod, (char *)path,
                                                   kind == CG_EMIT_ASM ? LLVMAssemblyFile
                                                                       : LLVMObjectFile,
                                                   &msg);
  if (bad)
    snprintf(err, errlen, "cannot write %s: %s", path, msg ? msg : "");
  LLVMDisposeMessage(msg);
  return bad ? -1 : 0;
}

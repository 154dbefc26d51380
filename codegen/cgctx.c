/* The LLVM module under construction: context, target machine, the types
 * every emitter uses, and small helpers over the C API's sharp edges. */
#include "codegen/codegen.h"
#include "runtime/rt.h"
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/ErrorHandling.h>

static int target_vbits(const char *triple, const char *features) {
  if (strncmp(triple, "x86_64", 6) != 0)
    return 128;                       /* NEON and others: 128-bit */
  if (features && strstr(features, "+avx512f"))
    return 512;
  if (features && strstr(features, "+avx2"))
    return 256;
  if (features && strstr(features, "+avx,"))
    return 256;
  return 128;
}

/* LLVM exits after a fatal error whatever we do; at least say why. */
static void llvm_fatal(const char *reason) {
  fprintf(stderr, "kiln: LLVM fatal error: %s\n", reason);
}

static void init_llvm_once(void) {
  LLVMInitializeAllTargetInfos();
  LLVMInitializeAllTargets();
  LLVMInitializeAllTargetMCs();
  LLVMInitializeAllAsmPrinters();
  LLVMInitializeAllAsmParsers();
  LLVMInstallFatalErrorHandler(llvm_fatal);
}

void cg_init_llvm(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_llvm_once);
}

int cg_host_lanes(int bytes) {
  cg_init_llvm();
  char *triple = LLVMGetDefaultTargetTriple(), *features = LLVMGetHostCPUFeatures();
  int lanes = cg_target_lanes(triple, features, bytes);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(features);
  return lanes;
}

int cg_target_lanes(const char *triple, const char *features, int bytes) {
  return target_vbits(triple, features) / (8 * bytes);
}

/* triple, cpu, features: NULL means the host. A JIT module lives in a
 * thread-safe context, which ORC requires; an AOT one in a plain context. */
static int ctx_init(CgCtx *c, const char *name, const char *triple,
                    const char *cpu, const char *features, bool jit,
                    char *err, int errlen) {
  memset(c, 0, sizeof *c);
  cg_init_llvm();
  char *host_triple = NULL, *host_cpu = NULL, *host_feat = NULL;
  if (!triple)
    triple = host_triple = LLVMGetDefaultTargetTriple();
  if (!cpu)
    cpu = host_cpu = LLVMGetHostCPUName();
  if (!features)
    features = host_feat = LLVMGetHostCPUFeatures();
  LLVMTargetRef target;
  char *msg = NULL;
  int rc = -1;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    snprintf(err, errlen, "unknown target '%s': %s", triple, msg ? msg : "");
    goto out;
  }
  c->tm = LLVMCreateTargetMachine(target, triple, cpu, features,
                                  LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                  LLVMCodeModelDefault);
  if (!c->tm) {
    snprintf(err, errlen, "cannot create a target machine for %s/%s", triple, cpu);
    goto out;
  }
  c->vbits = target_vbits(triple, features);
  if (jit) {
    c->tsc = LLVMOrcCreateNewThreadSafeContext();
    c->ctx = LLVMOrcThreadSafeContextGetContext(c->tsc);
  } else {
    c->ctx = LLVMContextCreate();
  }
  c->mod = LLVMModuleCreateWithNameInContext(name, c->ctx);
  LLVMSetTarget(c->mod, triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(c->tm);
  char *layout = LLVMCopyStringRepOfTargetData(td);
  LLVMSetDataLayout(c->mod, layout);
  LLVMDisposeMessage(layout);
  LLVMDisposeTargetData(td);
  c->b = LLVMCreateBuilderInContext(c->ctx);
  c->t_void = LLVMVoidTypeInContext(c->ctx);
  c->t_i1 = LLVMInt1TypeInContext(c->ctx);
  c->t_i8 = LLVMInt8TypeInContext(c->ctx);
  c->t_i32 = LLVMInt32TypeInContext(c->ctx);
  c->t_i64 = LLVMInt64TypeInContext(c->ctx);
  c->t_f32 = LLVMFloatTypeInContext(c->ctx);
  c->t_f64 = LLVMDoubleTypeInContext(c->ctx);
  c->t_ptr = LLVMPointerTypeInContext(c->ctx, 0);
  rc = 0;
out:
  LLVMDisposeMessage(msg);
  LLVMDisposeMessage(host_triple);
  LLVMDisposeMessage(host_cpu);
  LLVMDisposeMessage(host_feat);
  if (rc)
    cg_ctx_dispose(c);
  return rc;
}

int cg_ctx_init(CgCtx *c, const char *name, const char *triple,
                const char *cpu, const char *features, char *err, int errlen) {
  return ctx_init(c, name, triple, cpu, features, false, err, errlen);
}

int cg_ctx_init_jit(CgCtx *c, const char *name, char *err, int errlen) {
  return ctx_init(c, name, NULL, NULL, NULL, true, err, errlen);
}

void cg_ctx_dispose(CgCtx *c) {
  if (c->b)
    LLVMDisposeBuilder(c->b);
  if (c->mod)
    LLVMDisposeModule(c->mod);
  if (c->tm)
    LLVMDisposeTargetMachine(c->tm);
  if (c->tsc)
    LLVMOrcDisposeThreadSafeContext(c->tsc);   /* freed with the last module using it */
  else if (c->ctx)
    LLVMContextDispose(c->ctx);
  memset(c, 0, sizeof *c);
}

/* With opaque pointers the call needs the declaration's function type. */
LLVMValueRef cg_intrinsic(CgCtx *c, const char *name, LLVMTypeRef *overload,
                          int noverload, LLVMValueRef *args, int nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, overload, noverload);
  LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, overload, noverload);
  return LLVMBuildCall2(c->b, fty, fn, args, nargs, "");
}

/* !llvm.loop !{self, !{"llvm.loop.vectorize.enable", false}, !{"llvm.loop.unroll.disable"}} */
void cg_keep_loop_as_written(CgCtx *c, LLVMValueRef latch_br) {
  LLVMContextRef ctx = c->ctx;
  LLVMMetadataRef self = LLVMTemporaryMDNode(ctx, NULL, 0);
  LLVMMetadataRef novec[] = {LLVMMDStringInContext2(ctx, "llvm.loop.vectorize.enable", 26),
                             LLVMValueAsMetadata(LLVMConstInt(c->t_i1, 0, 0))};
  LLVMMetadataRef nounroll = LLVMMDStringInContext2(ctx, "llvm.loop.unroll.disable", 24);
  LLVMMetadataRef ops[] = {self, LLVMMDNodeInContext2(ctx, novec, 2), LLVMMDNodeInContext2(ctx, &nounroll, 1)};
  LLVMMetadataRef loop = LLVMMDNodeInContext2(ctx, ops, 3);
  LLVMMetadataReplaceAllUsesWith(self, loop);
  LLVMSetMetadata(latch_br, LLVMGetMDKindIDInContext(ctx, "llvm.loop", 9), LLVMMetadataAsValue(ctx, loop));
}

LLVMValueRef cg_vload(CgCtx *c, LLVMTypeRef vt, LLVMValueRef p, unsigned align, LLVMValueRef mask) {
  if (!mask) {
    LLVMValueRef x = LLVMBuildLoad2(c->b, vt, p, "");
    LLVMSetAlignment(x, align);
    return x;
  }
  LLVMTypeRef ov[] = {vt, c->t_ptr};
  LLVMValueRef args[] = {p, LLVMConstInt(c->t_i32, align, 0), mask, LLVMConstNull(vt)};
  return cg_intrinsic(c, "llvm.masked.load", ov, 2, args, 4);
}

void cg_vstore(CgCtx *c, LLVMValueRef v, LLVMValueRef p, unsigned align, LLVMValueRef mask) {
  if (!mask) {
    LLVMSetAlignment(LLVMBuildStore(c->b, v, p), align);
    return;
  }
  LLVMTypeRef ov[] = {LLVMTypeOf(v), c->t_ptr};
  LLVMValueRef args[] = {v, p, LLVMConstInt(c->t_i32, align, 0), mask};
  cg_intrinsic(c, "llvm.masked.store", ov, 2, args, 4);
}

LLVMValueRef cg_splat(CgCtx *c, LLVMValueRef scalar, int lanes) {
  if (lanes <= 1)
    return scalar;
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(scalar), lanes);
  LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetUndef(vt), scalar,
                                          LLVMConstInt(c->t_i32, 0, 0), "");
  LLVMValueRef zero_mask = LLVMConstNull(LLVMVectorType(c->t_i32, lanes));
  return LLVMBuildShuffleVector(c->b, v, LLVMGetUndef(vt), zero_mask, "splat");
}

/* The runtime entries generated code calls: C signature (return type then
 * parameters: v void, p pointer, i i32, l i64, f float, d double) and
 * address, which the JIT defines as an absolute symbol so generated code
 * finds the runtime in any program linking libkilnrt, without -rdynamic. */
static const CgRtEntry rt_entries[] = {
  {"rt_parallel_for", "vpplli", (void *)rt_parallel_for},
  {"rt_default_threads", "i", (void *)rt_default_threads},
  {"rt_run_graph", "vpplip", (void *)rt_run_graph},
};

const CgRtEntry *cg_rt_entry(int i) {
  return i >= 0 && i < (int)(sizeof rt_entries / sizeof *rt_entries) ? &rt_entries[i] : NULL;
}

static LLVMTypeRef sig_type(CgCtx *c, char code) {
  switch (code) {
  case 'v': return c->t_void;
  case 'p': return c->t_ptr;
  case 'i': return c->t_i32;
  case 'l': return c->t_i64;
  case 'f': return c->t_f32;
  case 'd': return c->t_f64;
  }
  assert(!"bad signature code");
  return NULL;
}

LLVMTypeRef cg_sig_type(CgCtx *c, char code) { return sig_type(c, code); }

LLVMValueRef cg_declare_rt(CgCtx *c, const char *name) {
  LLVMValueRef f = LLVMGetNamedFunction(c->mod, name);
  if (f)
    return f;
  const CgRtEntry *e = NULL;
  for (int i = 0; (e = cg_rt_entry(i)) && strcmp(e->name, name); i++)
    ;
  if (!e)
    return NULL;
  LLVMTypeRef params[16];
  int n = (int)strlen(e->sig) - 1;
  assert(n <= 16);
  for (int i = 0; i < n; i++)
    params[i] = sig_type(c, e->sig[i + 1]);
  LLVMTypeRef fty = LLVMFunctionType(sig_type(c, e->sig[0]), params, n, 0);
  return LLVMAddFunction(c->mod, name, fty);
}

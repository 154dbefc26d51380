/* The JIT: an ORC LLJIT for the host CPU, and the IR pipeline run before
 * code is handed to it.
 *
 * The JIT is built from our own target machine so that it generates code at
 * O3 (LLJIT's default is O2) for the host's exact CPU and features. Its main
 * dylib resolves two kinds of external symbols: the runtime entries of
 * cg_rt_entry(), defined as absolute symbols with their addresses here (so
 * generated code finds them in any program that links libkilnrt, with or
 * without -rdynamic), and everything else (memset, memcpy that LLVM may
 * introduce, libm) from the process, through a search generator.
 *
 * cg_jit_compile() optimises a module, generates its object with our
 * target machine (or takes it from the code cache, cache.c) and links the
 * object: the JIT and `kiln export` run the same code generation, and a
 * model compiled once loads from disk the next time.
 *
 * Modules come from cg_ctx_init_jit(): ORC needs them built in a
 * thread-safe context. cg_jit_add() takes the module and leaves the CgCtx
 * safe to dispose; the context itself lives on as long as a module of it.
 * Code is generated lazily, at the first lookup; what fails then (an
 * undefined symbol, ...) is kept for cg_jit_last_error, not printed. */
#include "codegen/codegen.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Transforms/PassBuilder.h>

struct CgJit {
  LLVMOrcLLJITRef jit;
  char last_error[512];      /* the latest lookup or materialization failure */
};

/* Turns an LLVM error into our message; consumes it. Returns 0 if none. */
static int take_error(LLVMErrorRef e, const char *what, char *err, int errlen) {
  if (!e)
    return 0;
  char *m = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "%s: %s", what, m);
  LLVMDisposeErrorMessage(m);
  return -1;
}

/* Appends an error to j->last_error ("; " between two); consumes it. */
static void note_error(CgJit *j, LLVMErrorRef e, const char *what) {
  size_t used = strlen(j->last_error);
  if (used && used + 2 < sizeof j->last_error) {
    strcpy(j->last_error + used, "; ");
    used += 2;
  }
  take_error(e, what, j->last_error + used, (int)(sizeof j->last_error - used));
}

/* Materialization errors (a symbol no one defines, ...) are kept for
 * cg_jit_last_error instead of being printed by ORC's default reporter. */
static void keep_session_error(void *ctx, LLVMErrorRef e) { note_error(ctx, e, "JIT session error"); }

/* The host target machine at codegen O3; LLJIT takes ownership of it. */
static LLVMTargetMachineRef host_machine(char *err, int errlen) {
  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
  char *msg = NULL;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg))
    snprintf(err, errlen, "unknown host target '%s': %s", triple, msg ? msg : "");
  else
    tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                 LLVMRelocPIC, LLVMCodeModelDefault);
  if (!tm && !msg)
    snprintf(err, errlen, "cannot create a target machine for %s/%s", triple, cpu);
  LLVMDisposeMessage(msg);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return tm;
}

/* Runtime entries as absolute symbols of the main dylib. */
static int define_runtime(CgJit *j, LLVMOrcJITDylibRef jd, char *err, int errlen) {
  int n = 0;
  while (cg_rt_entry(n))
    n++;
  LLVMOrcCSymbolMapPair *pairs = calloc(n, sizeof *pairs);
  if (!pairs) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    const CgRtEntry *e = cg_rt_entry(i);
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->jit, e->name);
    pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)e->addr;
    pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported |
                                      LLVMJITSymbolGenericFlagsCallable;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, n); /* takes the names */
  free(pairs);
  LLVMErrorRef e = LLVMOrcJITDylibDefine(jd, mu);
  if (e)
    LLVMOrcDisposeMaterializationUnit(mu);
  return take_error(e, "cannot define the runtime symbols", err, errlen);
}

static int add_process_symbols(CgJit *j, LLVMOrcJITDylibRef jd, char *err, int errlen) {
  LLVMOrcDefinitionGeneratorRef gen;
  char prefix = LLVMOrcLLJITGetGlobalPrefix(j->jit);
  LLVMErrorRef e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, prefix, NULL, NULL);
  if (take_error(e, "cannot search the process for symbols", err, errlen))
    return -1;
  LLVMOrcJITDylibAddGenerator(jd, gen);
  return 0;
}

/* For `perf`: an RTDyld object layer (the C API's only one that takes
 * event listeners) telling LLVM's perf listener about every object it
 * links, cached ones included; the listener writes jit-<pid>.dump for
 * `perf inject --jit` (bench/NOTES.md, "Profiling"). Without perf support
 * in LLVM the listener is NULL and the layer is a plain one. */
static LLVMOrcObjectLayerRef perf_object_layer(void *ctx, LLVMOrcExecutionSessionRef es, const char *triple) {
  (void)ctx, (void)triple;
  LLVMOrcObjectLayerRef layer = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
  LLVMJITEventListenerRef perf = LLVMCreatePerfJITEventListener();
  if (perf)
    LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(layer, perf);
  return layer;
}

int cg_jit_new(CgJit **out, char *err, int errlen) { return cg_jit_new_ex(out, false, err, errlen); }

int cg_jit_new_ex(CgJit **out, bool perf, char *err, int errlen) {
  *out = NULL;
  cg_init_llvm();
  LLVMTargetMachineRef tm = host_machine(err, errlen);
  if (!tm)
    return -1;
  CgJit *j = calloc(1, sizeof *j);
  if (!j) {
    LLVMDisposeTargetMachine(tm);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
  if (perf)
    LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, perf_object_layer, NULL);
  if (take_error(LLVMOrcCreateLLJIT(&j->jit, builder), "cannot create the JIT", err, errlen)) {
    free(j);
    return -1;
  }
  LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j->jit), keep_session_error, j);
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  if (define_runtime(j, jd, err, errlen) || add_process_symbols(j, jd, err, errlen)) {
    cg_jit_free(j);
    return -1;
  }
  *out = j;
  return 0;
}

/* A module that fails verification is kiln's bug, but it must be reported,
 * not crash LLVM's passes.
 *
 * Functions of equal code are merged (LLVM's MergeFunctions) before the
 * pipeline and again after it: kiln emits such twins (the packing routines
 * of GEMMs of different epilogues, equal kernels of a training step), and
 * LLVM's time grows with the code it is given: 7-17% less compile time for
 * the LeNet, MLP and ResNet steps (bench/NOTES.md, "Functions of equal
 * code merged"). The code of each function is unchanged, so are results. */
int cg_optimize(CgCtx *c, int level, char *err, int errlen) {
  char *msg = NULL;
  if (LLVMVerifyModule(c->mod, LLVMReturnStatusAction, &msg)) {
    size_t len;
    snprintf(err, errlen, "internal error: invalid LLVM module '%s': %s",
             LLVMGetModuleIdentifier(c->mod, &len), msg ? msg : "");
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
  if (level < 0 || level > 3) {
    snprintf(err, errlen, "optimization level %d is not 0..3", level);
    return -1;
  }
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "%sdefault<O%d>", c->keep_equal_functions ? "" : "mergefunc,", level);
  double t0 = rt_thread_cpu_seconds();
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetMergeFunctions(opts, !c->keep_equal_functions);
  LLVMErrorRef e = LLVMRunPasses(c->mod, pipeline, c->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  c->opt_seconds += rt_thread_cpu_seconds() - t0;
  c->optimized = !e;
  return take_error(e, "LLVM pass pipeline failed", err, errlen);
}

int cg_jit_add(CgJit *j, CgCtx *c, char *err, int errlen) {
  if (!c->tsc || !c->mod) {
    snprintf(err, errlen, "internal error: module not made by cg_ctx_init_jit or already added");
    return -1;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(c->mod, c->tsc);
  c->mod = NULL;   /* owned by tsm now, and by the JIT next, even on failure */
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(j->jit, jd, tsm);
  return take_error(e, "cannot add the module to the JIT", err, errlen);
}

int cg_emit(CgCtx *c, LLVMCodeGenFileType kind, LLVMMemoryBufferRef *out, char *err, int errlen) {
  char *msg = NULL;
  *out = NULL;
  double t0 = rt_thread_cpu_seconds();
  bool failed = LLVMTargetMachineEmitToMemoryBuffer(c->tm, c->mod, kind, &msg, out);
  c->codegen_seconds += rt_thread_cpu_seconds() - t0;
  if (failed) {
    snprintf(err, errlen, "cannot generate %s: %s", kind == LLVMObjectFile ? "an object" : "assembly",
             msg ? msg : "");
    LLVMDisposeMessage(msg);
    return -1;
  }
  return 0;
}

/* The JIT links objects: its own, the ones from the cache, both alike. */
static int add_object(CgJit *j, LLVMMemoryBufferRef obj, char *err, int errlen) {
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  return take_error(LLVMOrcLLJITAddObjectFile(j->jit, jd, obj), "cannot add the object to the JIT",
                    err, errlen);
}

LLVMCodeGenOptLevel cg_codegen_level(int level) {
  return level == 0 ? LLVMCodeGenLevelNone : LLVMCodeGenLevelAggressive;
}

/* c's object at `level`. -O0 skips LLVM's IR pipeline, and its backend at
 * O3 then spends 5x longer on the unoptimised IR than the fast one
 * (FastISel, the fast register allocator) does: bench/NOTES.md, "Where
 * compile time goes". The backend's level changes no result: kiln emits
 * no fast-math flags, so no fusing or reassociation depends on it. */
static int emit_object(CgCtx *c, int level, LLVMMemoryBufferRef *obj, char *err, int errlen) {
  if (cg_codegen_level(level) == LLVMCodeGenLevelAggressive)
    return cg_emit(c, LLVMObjectFile, obj, err, errlen);
  char *triple = LLVMGetTargetMachineTriple(c->tm), *cpu = LLVMGetTargetMachineCPU(c->tm);
  char *features = LLVMGetTargetMachineFeatureString(c->tm);
  LLVMTargetMachineRef fast = LLVMCreateTargetMachine(LLVMGetTargetMachineTarget(c->tm), triple, cpu,
                                                      features, cg_codegen_level(level),
                                                      LLVMRelocPIC, LLVMCodeModelDefault);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  if (!fast) {
    snprintf(err, errlen, "cannot create a target machine for -O%d", level);
    return -1;
  }
  LLVMTargetMachineRef keep = c->tm;
  c->tm = fast;
  int rc = cg_emit(c, LLVMObjectFile, obj, err, errlen);
  c->tm = keep;
  LLVMDisposeTargetMachine(fast);
  return rc;
}

int cg_jit_compile(CgJit *j, CgCtx *c, int level, const char *cache_dir, char *err, int errlen) {
  CgCacheKey key;
  bool cache = cache_dir && *cache_dir && cg_cache_key(c, level, &key);
  size_t len;
  void *hit = cache ? cg_cache_get(cache_dir, &key, &len) : NULL;
  LLVMMemoryBufferRef obj;
  if (hit) {
    size_t idlen;
    obj = LLVMCreateMemoryBufferWithMemoryRangeCopy(hit, len, LLVMGetModuleIdentifier(c->mod, &idlen));
    free(hit);
    return add_object(j, obj, err, errlen);
  }
  if ((!c->optimized && cg_optimize(c, level, err, errlen)) || emit_object(c, level, &obj, err, errlen))
    return -1;
  if (cache)
    cg_cache_put(cache_dir, &key, LLVMGetBufferStart(obj), LLVMGetBufferSize(obj));
  return add_object(j, obj, err, errlen);
}

void *cg_jit_lookup(CgJit *j, const char *name) {
  LLVMOrcExecutorAddress addr = 0;
  j->last_error[0] = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, name);
  if (e) {
    char what[300];
    snprintf(what, sizeof what, "cannot find '%s'", name);
    note_error(j, e, what);
    return NULL;
  }
  return (void *)(uintptr_t)addr;
}

const char *cg_jit_last_error(const CgJit *j) { return j->last_error; }

void cg_jit_free(CgJit *j) {
  if (!j)
    return;
  if (j->jit) {
    LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
    if (e) {
      char *m = LLVMGetErrorMessage(e);
      fprintf(stderr, "kiln: error while freeing the JIT: %s\n", m);
      LLVMDisposeErrorMessage(m);
    }
  }
  free(j);
}

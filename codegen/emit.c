/* Kernel scaffolding every lowering shares: element types, sizes evaluated
 * at run time (only the batch is not a constant), where a value lives in the
 * caller's regions, counted loops, and the split of a kernel into a serial
 * part and a parallel task run through the runtime's rt_parallel_for. */
#include "codegen/codegen.h"
#include <string.h>

LLVMTypeRef cg_elem_type(CgCtx *c, RtDType dt) {
  switch (dt) {
  case RT_F32: return c->t_f32;
  case RT_F64: return c->t_f64;
  case RT_I32: return c->t_i32;
  case RT_I64: return c->t_i64;
  default: return c->t_i8;     /* u8 and bool: a byte in memory */
  }
}

LLVMValueRef cg_i64(CgCtx *c, int64_t v) { return LLVMConstInt(c->t_i64, (unsigned long long)v, 1); }

/* Every size variable but the batch is bound before codegen. */
LLVMValueRef cg_size(CgKernel *k, Size s) {
  CgCtx *c = k->c;
  LLVMValueRef sum = cg_i64(c, 0);
  for (int i = 0; i < s.nt; i++) {
    LLVMValueRef p = cg_i64(c, s.t[i].coef);
    for (int j = 0; j < s.t[i].nv; j++) {
      int v = s.t[i].v[j];
      LLVMValueRef x = v == k->g->batch_var ? k->batch : cg_i64(c, k->g->svals[v]);
      p = LLVMBuildNSWMul(c->b, p, x, "");
    }
    sum = LLVMBuildNSWAdd(c->b, sum, p, "");
  }
  return sum;
}

LLVMValueRef cg_value_ptr(CgKernel *k, const Value *v) {
  CgCtx *c = k->c;
  while (v->alias)
    v = v->alias;
  LLVMValueRef slot = LLVMBuildGEP2(c->b, c->t_ptr, k->regions,
                                    (LLVMValueRef[]){cg_i64(c, v->region)}, 1, "");
  LLVMValueRef base = LLVMBuildLoad2(c->b, c->t_ptr, slot, "");
  LLVMSetMetadata(base, LLVMGetMDKindIDInContext(c->ctx, "invariant.load", 14),
                  LLVMMetadataAsValue(c->ctx, LLVMMDNodeInContext2(c->ctx, NULL, 0)));
  return LLVMBuildGEP2(c->b, c->t_i8, base, (LLVMValueRef[]){cg_i64(c, v->offset)}, 1,
                       v->name ? v->name : "");
}

LLVMValueRef cg_gep(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(k->c->b, cg_elem_type(k->c, dt), base, &idx, 1, "");
}

/* for (iv = lo; iv < hi; iv += step): leaves the builder in the body. */
LLVMValueRef cg_for(CgKernel *k, CgLoop *L, LLVMValueRef lo, LLVMValueRef hi,
                    LLVMValueRef step) {
  CgCtx *c = k->c;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  L->head = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "loop");
  L->body = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "body");
  L->exit = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "done");
  L->step = step;
  LLVMBuildBr(c->b, L->head);
  LLVMPositionBuilderAtEnd(c->b, L->head);
  L->iv = LLVMBuildPhi(c->b, c->t_i64, "i");
  LLVMAddIncoming(L->iv, &lo, &pre, 1);
  LLVMValueRef more = LLVMBuildICmp(c->b, LLVMIntSLT, L->iv, hi, "");
  LLVMBuildCondBr(c->b, more, L->body, L->exit);
  LLVMPositionBuilderAtEnd(c->b, L->body);
  return L->iv;
}

void cg_endfor(CgKernel *k, CgLoop *L) {
  CgCtx *c = k->c;
  LLVMValueRef next = LLVMBuildNSWAdd(c->b, L->iv, L->step, "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, L->head);
  LLVMAddIncoming(L->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(c->b, L->exit);
}

static void mark_noalias_params(CgCtx *c, LLVMValueRef fn, int nptr) {
  unsigned kind = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < nptr; i++)
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* void name(ptr regions, i64 batch, i32 nthreads) */
LLVMValueRef cg_new_kernel(CgKernel *k, const char *name) {
  CgCtx *c = k->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i32};
  LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->t_void, p, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  mark_noalias_params(c, fn, 1);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  k->fn = fn;
  k->regions = LLVMGetParam(fn, 0);
  k->batch = LLVMGetParam(fn, 1);
  k->nthreads = LLVMGetParam(fn, 2);
  return fn;
}

/* The task sees the kernel's arguments through a context {regions, batch,
 * nthreads, work} that the kernel keeps on its stack during the call. */
static LLVMTypeRef ctx_type(CgCtx *c) {
  LLVMTypeRef f[] = {c->t_ptr, c->t_i64, c->t_i32, c->t_ptr};
  return LLVMStructTypeInContext(c->ctx, f, 4, 0);
}

static LLVMValueRef ctx_field(CgCtx *c, LLVMValueRef ctx, int i, LLVMTypeRef t) {
  LLVMValueRef p = LLVMBuildStructGEP2(c->b, ctx_type(c), ctx, i, "");
  return LLVMBuildLoad2(c->b, t, p, "");
}

static void ctx_store(CgCtx *c, LLVMValueRef ctx, int i, LLVMValueRef v) {
  LLVMBuildStore(c->b, v, LLVMBuildStructGEP2(c->b, ctx_type(c), ctx, i, ""));
}

/* Element-operations below which a kernel runs on the calling thread: about
 * 100 us of one core. Measured with rt_parallel_for on a streaming task
 * (y = 1.5x + 0.5y, 32K-element chunks, median of 201 calls, load 10): one
 * thread 13 us at 16K elements, 52 us at 64K, 110 us at 128K, 190 us at
 * 256K; two threads with passive waiting 66, 121, 228 us at 64K, 128K,
 * 256K, with libgomp's default spinning 20 ms. Below this a wake-up and a
 * barrier cost a large part of what a second thread could save. */
#define CG_PAR_MIN_OPS 131072

/* k->nthreads, or 1 when cg_grain's cost says the kernel is small. */
static LLVMValueRef par_threads(CgKernel *k, LLVMValueRef nunits) {
  CgCtx *c = k->c;
  if (!k->grain_cost)
    return k->nthreads;
  LLVMValueRef total = LLVMBuildMul(c->b, nunits, k->grain_cost, "ops");
  LLVMValueRef small = LLVMBuildICmp(c->b, LLVMIntSLT, total, cg_i64(c, CG_PAR_MIN_OPS), "");
  k->grain_cost = NULL;
  return LLVMBuildSelect(c->b, small, LLVMConstInt(c->t_i32, 1, 0), k->nthreads, "threads");
}

void cg_parallel(CgKernel *k, const char *name, LLVMValueRef nunits, LLVMValueRef grain,
                 CgTaskBody body, void *user) {
  CgCtx *c = k->c;
  LLVMValueRef threads = par_threads(k, nunits);
  /* the context, on the kernel's stack */
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMPositionBuilder(c->b, entry, LLVMGetFirstInstruction(entry));
  LLVMValueRef ctx = LLVMBuildAlloca(c->b, ctx_type(c), "ctx");
  LLVMPositionBuilderAtEnd(c->b, here);
  ctx_store(c, ctx, 0, k->regions);
  ctx_store(c, ctx, 1, k->batch);
  ctx_store(c, ctx, 2, k->nthreads);
  ctx_store(c, ctx, 3, k->work ? k->work : LLVMConstNull(c->t_ptr));

  /* the task: void name(ptr ctx, i64 lo, i64 hi) */
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i64};
  LLVMValueRef task = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->t_void, p, 3, 0));
  LLVMSetLinkage(task, LLVMInternalLinkage);
  CgKernel t = *k;
  t.fn = task;
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, task, "entry"));
  LLVMValueRef tctx = LLVMGetParam(task, 0);
  t.regions = ctx_field(c, tctx, 0, c->t_ptr);
  t.batch = ctx_field(c, tctx, 1, c->t_i64);
  t.nthreads = ctx_field(c, tctx, 2, c->t_i32);
  t.work = k->work ? ctx_field(c, tctx, 3, c->t_ptr) : NULL;
  body(&t, LLVMGetParam(task, 1), LLVMGetParam(task, 2), user);
  LLVMBuildRetVoid(c->b);

  /* back in the kernel: run it */
  LLVMPositionBuilderAtEnd(c->b, here);
  LLVMValueRef pf = cg_declare_rt(c, "rt_parallel_for");
  LLVMValueRef args[] = {task, ctx, nunits, grain, threads};
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(pf), pf, args, 5, "");
}

/* Chunks of about 32K element-operations: big enough to amortise a thread
 * hand-off, small enough to balance. A function of the problem only, so
 * the chunking (and every result) is the same at any thread count. The
 * cost is kept for the next cg_parallel, which runs a kernel of less than
 * CG_PAR_MIN_OPS in all on one thread. */
LLVMValueRef cg_grain(CgKernel *k, LLVMValueRef unit_cost) {
  CgCtx *c = k->c;
  LLVMValueRef one = cg_i64(c, 1);
  LLVMValueRef cost = LLVMBuildSelect(
      c->b, LLVMBuildICmp(c->b, LLVMIntSLT, unit_cost, one, ""), one, unit_cost, "");
  k->grain_cost = cost;
  LLVMValueRef g = LLVMBuildSDiv(c->b, cg_i64(c, 32768), cost, "");
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, g, one, ""), one, g, "grain");
}

/* base[at .. at+n) = 0 */
void cg_zero(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef at, LLVMValueRef n) {
  CgCtx *c = k->c;
  LLVMValueRef bytes = LLVMBuildMul(c->b, n, cg_i64(c, rt_dtype_size(dt)), "");
  LLVMBuildMemSet(c->b, cg_gep(k, dt, base, at), LLVMConstInt(c->t_i8, 0, 0), bytes, 1);
}

/* base[i] += v */
void cg_add_to(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v) {
  LLVMValueRef p = cg_gep(k, dt, base, i);
  LLVMValueRef old = LLVMBuildLoad2(k->c->b, cg_elem_type(k->c, dt), p, "");
  LLVMBuildStore(k->c->b, LLVMBuildFAdd(k->c->b, old, v, ""), p);
}

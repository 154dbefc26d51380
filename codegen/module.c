/* A whole graph as one LLVM module: a kernel function per node, or per
 * fused group (adjacent nodes of one Node.group: an elementwise loop, or a
 * contraction with its epilogue), and the entry point that calls them in
 * schedule order, with the calling convention of DESIGN.md:
 *
 *   void <entry>(void **regions, int64_t batch, int32_t nthreads)
 *
 * regions[REGION_*] are caller-owned, 64-byte aligned; every tensor is at
 * the offset the memory plan gave it. The same module serves the JIT and
 * the AOT artifacts. */
#include "codegen/codegen.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef enum { L_EXPR, L_REDUCE, L_ROW, L_GEMM, L_CONV, L_POOL, L_VIEW, L_CONV_BWD, L_POOL_BWD,
               L_DROPOUT, L_MOVE,
               L_SCAN, L_GATHER, L_BLOCKED, L_PACK } LowerKind;

static const LowerKind lower_kind[OP_COUNT] = {
#define OP(name, nin, cat, attrs, shape, grad, lower) L_##lower,
#include "ir/ops.def"
#undef OP
};

/* Scratch a node's kernel needs while it runs (packing buffers),
 * planned for the compiled maximum batch and `threads` threads. */
int64_t cg_work_bytes(const Graph *g, const Node *n, int threads) {
  const Type *o = &n->out[0]->type;
  if (lower_kind[n->op] == L_GEMM) {
    int64_t M, N, K;
    const Type *a = &n->in[0]->type;
    Type t = ir_type(o->dt, 1, (Size[]){o->dim[o->rank - 2]});
    M = ir_numel_max(g, &t);
    t.dim[0] = o->dim[o->rank - 1];
    N = ir_numel_max(g, &t);
    t.dim[0] = a->dim[a->rank - (n->attr.trans_a ? 2 : 1)];
    K = ir_numel_max(g, &t);
    return cg_gemm_work_bytes(o->dt, M, N, K, threads);
  }
  if (lower_kind[n->op] == L_CONV || lower_kind[n->op] == L_CONV_BWD)
    return cg_conv_work_bytes(g, n, threads);
  if (lower_kind[n->op] == L_SCAN)
    return cg_scan_work_bytes(n);
  return 0;
}

/* The most threads node n's workspace was planned for (GEMM work grows
 * with the thread count: each running task owns a slot of it). */
static int planned_threads(const Graph *g, const Node *n) {
  int t = 1;
  while (t < 64 && cg_work_bytes(g, n, t + 1) <= n->work_bytes)
    t++;
  return t;
}

/* The thread count is a run-time argument and may exceed the plan (or be
 * 0, the default): a kernel with a workspace runs on at most `most`. */
static LLVMValueRef clamp_threads(CgCtx *c, LLVMValueRef nthreads, int most) {
  LLVMValueRef f = cg_declare_rt(c, "rt_default_threads");
  LLVMValueRef deflt = LLVMBuildCall2(c->b, LLVMGlobalGetValueType(f), f, NULL, 0, "");
  LLVMValueRef zero = LLVMConstInt(c->t_i32, 0, 0), cap = LLVMConstInt(c->t_i32, most, 0);
  LLVMValueRef t = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, nthreads, zero, ""),
                                   nthreads, deflt, "");
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, t, cap, ""), t, cap, "threads");
}

/* The node a kernel is built around: a fused group's contraction (the
 * GEMM whose epilogue the others are) or reduction (whose input the others
 * compute), else its first node. */
static const Node *kernel_head(const Node *const *mem, int nmem) {
  for (int i = 0; i < nmem; i++)
    if (lower_kind[mem[i]->op] == L_GEMM || lower_kind[mem[i]->op] == L_CONV ||
        lower_kind[mem[i]->op] == L_REDUCE || mem[i]->op == OP_conv2d_nchwc ||
        mem[i]->op == OP_conv2d_winograd)
      return mem[i];
  return mem[0];
}

/* The nodes of the kernel starting at node i: a fused group's are adjacent. */
static int kernel_size(const Graph *g, int i) {
  int grp = g->nodes[i]->group, j = i + 1;
  while (grp >= 0 && j < g->nnodes && g->nodes[j]->group == grp)
    j++;
  return j - i;
}

/* Emits the kernel of nodes mem[0 .. nmem); returns it, or NULL with err set. */
static LLVMValueRef emit_node(CgCtx *c, const Graph *g, const Node *const *mem, int nmem, char *err,
                              int errlen) {
  const Node *n = kernel_head(mem, nmem);
  char name[64], task[72];
  snprintf(name, sizeof name, nmem > 1 ? "k%d.%s+%d" : "k%d.%s", n->id, op_name(n->op), nmem - 1);
  snprintf(task, sizeof task, "%s.task", name);
  CgKernel k = {.c = c, .g = g, .n = n, .group = nmem > 1 ? mem : NULL, .ngroup = nmem};
  for (int i = 0; i < nmem; i++)
    assert(mem[i] == n || lower_kind[mem[i]->op] == L_EXPR);
  LLVMValueRef fn = cg_new_kernel(&k, name);
  if (n->work_bytes > 0) {
    LLVMValueRef slot = LLVMBuildGEP2(c->b, c->t_ptr, k.regions,
                                      (LLVMValueRef[]){cg_i64(c, REGION_SCRATCH)}, 1, "");
    LLVMValueRef base = LLVMBuildLoad2(c->b, c->t_ptr, slot, "");
    k.work = LLVMBuildGEP2(c->b, c->t_i8, base, (LLVMValueRef[]){cg_i64(c, n->work_off)}, 1, "work");
    k.nthreads = clamp_threads(c, k.nthreads, planned_threads(g, n));
  }
  int rc = 0;
  switch (lower_kind[n->op]) {
  case L_EXPR: cg_expr_kernel(&k, task); break;
  case L_REDUCE: cg_reduce_kernel(&k, task); break;
  case L_ROW: cg_row_kernel(&k, task); break;
  case L_GEMM: rc = cg_matmul_kernel(&k); break;
  case L_CONV: rc = cg_conv_kernel(&k, task); break;
  case L_POOL: cg_pool_kernel(&k, task); break;
  case L_CONV_BWD: cg_conv_bwd_kernel(&k, task); break;
  case L_POOL_BWD: cg_pool_bwd_kernel(&k, task); break;
  case L_DROPOUT: cg_dropout_kernel(&k, task); break;
  case L_MOVE: cg_move_kernel(&k, task); break;
  case L_SCAN:
    if (cg_scan_kernel(&k, name, err, errlen))
      return NULL;
    break;
  case L_GATHER: cg_gather_kernel(&k); break;
  case L_BLOCKED: cg_blocked_kernel(&k, task); break;
  case L_PACK: rc = cg_pack_b_kernel(&k); break;
  case L_VIEW:
    if (!n->out[0]->alias)
      cg_copy_kernel(&k);
    break;
  }
  if (rc) {
    snprintf(err, errlen, "%s: this shape combination is not supported by codegen yet",
             op_name(n->op));
    return NULL;
  }
  LLVMBuildRetVoid(c->b);
  return fn;
}

/* entry(regions, batch, nthreads) = rt_run_graph(body, regions, batch,
 * nthreads, &solo): the kernels run in one team of threads, one parallel
 * region per call rather than one per kernel (runtime/parallel.c says
 * why); solo, the graph's own, remembers when a call needs no team. */
static void build_entry(CgCtx *c, const char *entry, LLVMValueRef body) {
  LLVMTypeRef fty = LLVMGlobalGetValueType(body);
  LLVMValueRef fn = LLVMAddFunction(c->mod, entry, fty);
  char name[256];
  snprintf(name, sizeof name, "%s.solo", entry);
  LLVMValueRef solo = LLVMAddGlobal(c->mod, c->t_i64, name);
  LLVMSetInitializer(solo, cg_i64(c, 0));
  LLVMSetLinkage(solo, LLVMInternalLinkage);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef run = cg_declare_rt(c, "rt_run_graph");
  LLVMValueRef args[] = {body, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), solo};
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(run), run, args, 5, "");
  LLVMBuildRetVoid(c->b);
}

int cg_build_graph(CgCtx *c, const Graph *g, const char *entry, char *err, int errlen) {
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i32};
  char body[256];
  snprintf(body, sizeof body, "%s.body", entry);
  LLVMValueRef fn = LLVMAddFunction(c->mod, body, LLVMFunctionType(c->t_void, p, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMValueRef *kernels = calloc(g->nnodes + 1, sizeof *kernels);
  if (!kernels)
    return -1;
  for (int i = 0, size; i < g->nnodes; i += size) {
    const Node *n = g->nodes[i];
    size = kernel_size(g, i);
    if (lower_kind[n->op] == L_VIEW && n->out[0]->alias)
      continue;                       /* a view: no code */
    if (!(kernels[i] = emit_node(c, g, (const Node *const *)&g->nodes[i], size, err, errlen))) {
      free(kernels);
      return -1;
    }
  }
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef args[] = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2)};
  for (int i = 0; i < g->nnodes; i++)
    if (kernels[i])
      LLVMBuildCall2(c->b, LLVMGlobalGetValueType(kernels[i]), kernels[i], args, 3, "");
  LLVMBuildRetVoid(c->b);
  free(kernels);
  build_entry(c, entry, fn);
  return 0;
}

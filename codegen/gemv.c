/* Small-M contractions: C_b = op(A_b) op(B_b) (+ C_b), then the epilogue,
 * for M below the GEMM's MR (a dense layer at batch 1 to 5). The GEMM
 * would pack all of B on every call and run its 6-row micro-kernel mostly
 * empty; here B is streamed once, unpacked, and each output row m reads it
 * from cache while its block is hot. Two shapes of the inner loop, by how
 * B lies in memory:
 *
 *   B^T (x W^T, B's rows are columns of op(B)): a block of L outputs, one
 *     vector accumulator; L rows of B are read L k's at a time and
 *     transposed in registers into L columns, one FMA each with x[m, k].
 *   B (x W, op(B)'s rows contiguous): a block of NV vectors of outputs,
 *     one broadcast of x[m, k] and NV FMAs per k, the rows GEMV_PREFETCH_ROWS
 *     ahead prefetched (a block's rows are a page apart every few rows,
 *     where hardware prefetchers stop). The faster of the two (no
 *     shuffles): an inference graph's dense layers get it, their weights
 *     stored as W^T when the model compiles (passes/pretranspose.c). At
 *     batch 1 it is bound by reading B (the MLP's 1.07 MB, from L3).
 *
 * Either way each output is one FMA chain per K block in the GEMM's
 * blocking and order (k_blocks), so the result is the GEMM's bit for bit
 * and a row's output does not depend on the batch; and it is a vector of
 * consecutive outputs of one row, so the GEMM's epilogue (bias,
 * activation, residual) applies to it unchanged before the store. Same signature as the GEMM (gemm.c), so a call site
 * picks one by M at run time (cg_call_matmul). Blocks of outputs are the
 * parallel tasks, their grain from the problem size: every output is
 * summed in one fixed order at any thread count. */
#include "codegen/codegen.h"
#include <stdio.h>
#include <string.h>

enum {
  GEMV_NV = 8,   /* vectors per block when op(B)'s rows are contiguous: 8 FMA chains, what keeps
                    both of Zen 4's FMA pipes busy (latency 4), and 4 lines per k */
  GEMV_PREFETCH_ROWS = 8, /* how many rows of B ahead a block prefetches (see axpy_chain) */
  GEMV_TAIL_NV = 4, /* the narrowest last block (block_axpy): each variant more costs ~5% of
                       the MLP's compile time, and 2 ran no faster than 4 */
  GEMV_GEMM_KC = 256, /* gemm.c's GEMM_KC: the K blocks whose order of summation is copied */
};
/* Flops per parallel task: about 2 us of a core streaming W. A job of the
 * graph's team costs about 1 us when its helpers are awake, so a dense
 * layer at batch 1 as small as 256x256 splits: each core then keeps its
 * columns of W in its own L2 from call to call (the MLP's 1.07 MB of
 * weights do not fit one core's 1 MiB). At 4 Mflop a task, as before,
 * the MLP at batch 1 ran on one thread; 32K and 128K flops were 10-15%
 * slower than 64K at 2 threads. Results do not depend on the grain: each
 * output is summed alone, in one order. */
#define GEMV_TASK_FLOPS 65536.0

/* The entry's parameters (gemm.c's order) and the tasks' context: the
 * first 14 parameters, then the blocks per matrix. */
enum { P_BATCH, P_M, P_N, P_K, P_A, P_LDA, P_SA, P_B, P_LDB, P_SB, P_C, P_LDC, P_SC, P_EPI, P_WORK,
       P_NTHREADS, P_COUNT, F_NBLOCKS = P_WORK, F_KC, F_NKB, F_COUNT };

typedef struct Gv {
  CgCtx *c;
  LLVMBuilderRef b;
  const CgGemmSpec *s;
  const char *name;
  LLVMTypeRef t, vt, ctx_t;
  int sz, lanes, cols;       /* cols: outputs per block */
} Gv;

static LLVMValueRef k64(Gv *g, int64_t v) { return cg_i64(g->c, v); }
static LLVMValueRef add(Gv *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(g->b, a, b, ""); }
static LLVMValueRef mul(Gv *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(g->b, a, b, ""); }
static LLVMValueRef lt(Gv *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildICmp(g->b, LLVMIntSLT, a, b, ""); }
static LLVMValueRef emin(Gv *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(g->b, lt(g, a, b), a, b, ""); }
static LLVMValueRef elem(Gv *g, LLVMValueRef p, LLVMValueRef i) { return LLVMBuildGEP2(g->b, g->t, p, &i, 1, ""); }

static LLVMValueRef load(Gv *g, LLVMTypeRef t, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, t, p, "");
  LLVMSetAlignment(v, g->sz);
  return v;
}

static LLVMValueRef vfma(Gv *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc) {
  return cg_intrinsic(g->c, "llvm.fma", &g->vt, 1, (LLVMValueRef[]){a, b, acc}, 3);
}

/* Masked vector load and store (mask NULL: plain); masked-off lanes read 0. */
static LLVMValueRef vload(Gv *g, LLVMValueRef p, LLVMValueRef mask) {
  return cg_vload(g->c, g->vt, p, (unsigned)g->sz, mask);
}

static void vstore(Gv *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef mask) {
  cg_vstore(g->c, v, p, (unsigned)g->sz, mask);
}

/* Lanes j of a vector starting at element `at` of a run of n: at + j < n,
 * that is j < clamp(n - at, 0, L), compared in i32 lanes (a vector of
 * i64s is twice the instructions to select, for each mask). */
static LLVMValueRef lanes_below(Gv *g, LLVMValueRef at, LLVMValueRef n) {
  LLVMValueRef idx[64];
  for (int j = 0; j < g->lanes; j++)
    idx[j] = LLVMConstInt(g->c->t_i32, j, 0);
  LLVMValueRef left = LLVMBuildSub(g->b, n, at, "");
  left = emin(g, left, k64(g, g->lanes));
  left = LLVMBuildTrunc(g->b, LLVMBuildSelect(g->b, lt(g, left, k64(g, 0)), k64(g, 0), left, ""), g->c->t_i32, "");
  return LLVMBuildICmp(g->b, LLVMIntSLT, LLVMConstVector(idx, g->lanes), cg_splat(g->c, left, g->lanes), "mask");
}

/* ---- loops and branches ---- */

typedef struct Loop {
  LLVMBasicBlockRef head, exit;
  LLVMValueRef iv;
  LLVMValueRef *acc;         /* loop-carried vectors, or NULL */
  LLVMValueRef phi[64];      /* their phis in head */
  int nacc;
} Loop;

/* for (iv = lo; iv < hi; iv += step) carrying acc[0..nacc): inside the
 * body acc[] are the phis; loop_close takes their next values from acc[]
 * and leaves the final values there. LLVM keeps the loop as written: the
 * GEMV is bound by reading B, and each variant of a block peeled or
 * unrolled cost compile time, not run time. */
static LLVMValueRef loop_open(Gv *g, Loop *l, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef *acc, int nacc) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(g->b));
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
  l->head = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "done");
  l->acc = acc;
  l->nacc = nacc;
  LLVMBuildBr(g->b, l->head);
  LLVMPositionBuilderAtEnd(g->b, l->head);
  l->iv = LLVMBuildPhi(g->b, g->c->t_i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  for (int i = 0; i < nacc; i++) {
    LLVMValueRef phi = LLVMBuildPhi(g->b, LLVMTypeOf(acc[i]), "acc");
    LLVMAddIncoming(phi, &acc[i], &pre, 1);
    acc[i] = l->phi[i] = phi;
  }
  LLVMBuildCondBr(g->b, lt(g, l->iv, hi), body, l->exit);
  LLVMPositionBuilderAtEnd(g->b, body);
  return l->iv;
}

static void loop_close(Gv *g, Loop *l, LLVMValueRef step) {
  LLVMValueRef next = add(g, l->iv, step);
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
  cg_keep_loop_as_written(g->c, LLVMBuildBr(g->b, l->head));
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  for (int i = 0; i < l->nacc; i++) {
    LLVMAddIncoming(l->phi[i], &l->acc[i], &latch, 1);
    l->acc[i] = l->phi[i];                  /* the value on exit */
  }
  LLVMPositionBuilderAtEnd(g->b, l->exit);
}

static LLVMBasicBlockRef new_block(Gv *g, const char *name) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(g->b));
  return LLVMAppendBasicBlockInContext(g->c->ctx, fn, name);
}

/* if (cond): the builder is in `then`; returns the else block, where the
 * caller goes on. */
static LLVMBasicBlockRef branch(Gv *g, LLVMValueRef cond) {
  LLVMBasicBlockRef then = new_block(g, "then"), other = new_block(g, "else");
  LLVMBuildCondBr(g->b, cond, then, other);
  LLVMPositionBuilderAtEnd(g->b, then);
  return other;
}

/* ---- one block of outputs ---- */

/* The block function's view: the context's fields, and this block's place. */
typedef struct Blk {
  LLVMValueRef f[F_COUNT];
  LLVMValueRef a, bm, cm;    /* batch item b's A, B and C */
  LLVMValueRef bi, n0;       /* b, the block's first column */
} Blk;

/* op(A)[m, k]: A[m*lda + k], or A[k*lda + m] when transposed. */
static LLVMValueRef a_at(Gv *g, Blk *B, LLVMValueRef m, LLVMValueRef k) {
  LLVMValueRef i = g->s->trans_a ? add(g, mul(g, k, B->f[P_LDA]), m) : add(g, mul(g, m, B->f[P_LDA]), k);
  return load(g, g->t, elem(g, B->a, i));
}

/* C[b, m, col .. col+L) = the epilogue of v. */
static void store_out(Gv *g, Blk *B, LLVMValueRef v, LLVMValueRef m, LLVMValueRef col, LLVMValueRef mask) {
  LLVMValueRef p = elem(g, B->cm, add(g, mul(g, m, B->f[P_LDC]), col));
  if (g->s->epi)
    v = g->s->epi->fn(g->c, g->s->epi->user, v, mask, B->f[P_EPI], B->bi, m, col);
  vstore(g, v, p, mask);
}

/* x[i][j] <-> x[j][i] for L vectors of L lanes: log2(L) stages that swap
 * the off-diagonal s x s blocks of each 2s x 2s block. */
void cg_transpose(CgCtx *c, LLVMValueRef *x, int L) {
  LLVMValueRef lo[64], hi[64];
  for (int s = 1; s < L; s *= 2)
    for (int i = 0; i < L; i++) {
      if (i & s)
        continue;
      for (int j = 0; j < L; j++) {
        lo[j] = LLVMConstInt(c->t_i32, (j & s) ? L + j - s : j, 0);
        hi[j] = LLVMConstInt(c->t_i32, (j & s) ? L + j : j + s, 0);
      }
      LLVMValueRef a = x[i], b = x[i + s];
      x[i] = LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(lo, L), "");
      x[i + s] = LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(hi, L), "");
    }
}

/* The GEMM's order of summation, so that both give the same bits (and a
 * row of a layer's output does not depend on the batch it came in): K in
 * nkb blocks of kc (F_KC), one FMA chain per output and block in k order,
 * then C = acc, or C = acc + C when accumulating or past the first block.
 * A K block's chain is `chain`; `sum` carries the outputs across blocks. */
typedef void (*Chain)(Gv *g, Blk *B, LLVMValueRef m, LLVMValueRef k0, LLVMValueRef k1, LLVMValueRef *acc, void *u);

static void k_blocks(Gv *g, Blk *B, LLVMValueRef m, Chain chain, void *u, LLVMValueRef *sum, LLVMValueRef *cold, int n) {
  LLVMValueRef kc = B->f[F_KC], nkb = B->f[F_NKB], zero = k64(g, 0);
  Loop lb;
  for (int v = 0; v < n; v++)
    sum[v] = LLVMConstNull(g->vt);
  LLVMValueRef kb = loop_open(g, &lb, zero, nkb, sum, n);
  LLVMValueRef k0 = mul(g, kb, kc), k1 = emin(g, add(g, k0, kc), B->f[P_K]);
  LLVMValueRef acc[64], first = LLVMBuildICmp(g->b, LLVMIntEQ, kb, zero, "");
  for (int v = 0; v < n; v++)
    acc[v] = LLVMConstNull(g->vt);
  chain(g, B, m, k0, k1, acc, u);
  LLVMValueRef loadc = g->s->accumulate ? LLVMConstInt(g->c->t_i1, 1, 0) : LLVMBuildNot(g->b, first, "");
  for (int v = 0; v < n; v++) {
    LLVMValueRef prev = cold ? LLVMBuildSelect(g->b, first, cold[v], sum[v], "") : sum[v];
    sum[v] = LLVMBuildSelect(g->b, loadc, LLVMBuildFAdd(g->b, acc[v], prev, ""), acc[v], "");
  }
  loop_close(g, &lb, k64(g, 1));
}

/* B^T: the block's L rows of B, row r at rows[r] (rows past N read row
 * N-1; their outputs are masked off at the store). */
typedef struct Dots {
  LLVMValueRef rows[64];
} Dots;

/* acc += W[rows][k] * x[m, k] for k0 <= k < k1: L k's at a time as L row
 * loads transposed into L columns, then the rest one gathered column each. */
static void dots_chain(Gv *g, Blk *B, LLVMValueRef m, LLVMValueRef k0, LLVMValueRef k1, LLVMValueRef *acc, void *u) {
  Dots *d = u;
  int L = g->lanes;
  LLVMValueRef kL = k64(g, L);
  LLVMValueRef kfull = add(g, k0, mul(g, LLVMBuildSDiv(g->b, LLVMBuildSub(g->b, k1, k0, ""), kL, ""), kL));
  Loop lk, lt1;
  LLVMValueRef k = loop_open(g, &lk, k0, kfull, acc, 1), w[64];
  for (int r = 0; r < L; r++)
    w[r] = load(g, g->vt, elem(g, d->rows[r], k));
  cg_transpose(g->c, w, L);
  for (int j = 0; j < L; j++)
    acc[0] = vfma(g, w[j], cg_splat(g->c, a_at(g, B, m, add(g, k, k64(g, j))), L), acc[0]);
  loop_close(g, &lk, kL);
  k = loop_open(g, &lt1, kfull, k1, acc, 1);
  LLVMValueRef col = LLVMGetUndef(g->vt);
  for (int r = 0; r < L; r++)
    col = LLVMBuildInsertElement(g->b, col, load(g, g->t, elem(g, d->rows[r], k)), LLVMConstInt(g->c->t_i32, r, 0), "");
  acc[0] = vfma(g, col, cg_splat(g->c, a_at(g, B, m, k), L), acc[0]);
  loop_close(g, &lt1, k64(g, 1));
}

/* B^T: for each row m, the L outputs n0 .. n0+L as one vector. */
static void block_dots(Gv *g, Blk *B) {
  LLVMValueRef N = B->f[P_N];
  Dots d;
  for (int r = 0; r < g->lanes; r++) {
    LLVMValueRef n = emin(g, add(g, B->n0, k64(g, r)), add(g, N, k64(g, -1)));
    d.rows[r] = elem(g, B->bm, mul(g, n, B->f[P_LDB]));
  }
  LLVMValueRef out = lanes_below(g, B->n0, N);
  Loop lm;
  LLVMValueRef m = loop_open(g, &lm, k64(g, 0), B->f[P_M], NULL, 0), sum, cold;
  LLVMValueRef p = elem(g, B->cm, add(g, mul(g, m, B->f[P_LDC]), B->n0));
  if (g->s->accumulate)
    cold = vload(g, p, out);
  k_blocks(g, B, m, dots_chain, &d, &sum, g->s->accumulate ? &cold : NULL, 1);
  store_out(g, B, sum, m, B->n0, out);
  loop_close(g, &lm, k64(g, 1));
}

/* B: nv vectors of columns from n0, their lane masks (NULL: full). */
typedef struct Axpy {
  LLVMValueRef *mask;
  int nv;
} Axpy;

/* The lines of nv vectors of a block's row, GEMV_PREFETCH_ROWS rows below
 * brow. A block reads B a few lines a row, rows a row-length apart: a new
 * 4 KiB page every few rows, where the hardware's stream prefetchers stop.
 * Past B's last row it prefetches lines it will not read (no fault). */
static void prefetch_ahead(Gv *g, Blk *B, LLVMValueRef brow, int nv) {
  LLVMValueRef ahead = elem(g, brow, mul(g, k64(g, GEMV_PREFETCH_ROWS), B->f[P_LDB]));
  LLVMValueRef read = LLVMConstNull(g->c->t_i32), keep = LLVMConstInt(g->c->t_i32, 3, 0);
  LLVMValueRef data = LLVMConstInt(g->c->t_i32, 1, 0);
  for (int e = 0; e < nv * g->lanes; e += 64 / g->sz)
    cg_intrinsic(g->c, "llvm.prefetch", &g->c->t_ptr, 1, (LLVMValueRef[]){elem(g, ahead, k64(g, e)), read, keep, data},
                 4);
}

/* acc[v] += B[k, cols of v] * x[m, k] for k0 <= k < k1. */
static void axpy_chain(Gv *g, Blk *B, LLVMValueRef m, LLVMValueRef k0, LLVMValueRef k1, LLVMValueRef *acc, void *u) {
  Axpy *a = u;
  Loop lk;
  LLVMValueRef k = loop_open(g, &lk, k0, k1, acc, a->nv);
  LLVMValueRef x = cg_splat(g->c, a_at(g, B, m, k), g->lanes);
  LLVMValueRef brow = elem(g, B->bm, add(g, mul(g, k, B->f[P_LDB]), B->n0));
  prefetch_ahead(g, B, brow, a->nv);
  for (int v = 0; v < a->nv; v++)
    acc[v] = vfma(g, vload(g, elem(g, brow, k64(g, v * g->lanes)), a->mask[v]), x, acc[v]);
  loop_close(g, &lk, k64(g, 1));
}

/* The block as nv vectors from n0, for each row m; vectors from
 * first_masked on masked at N (the caller knows those before it lie
 * within N). */
static void block_axpy_rows(Gv *g, Blk *B, int nv, int first_masked) {
  LLVMValueRef mask[GEMV_NV], sum[GEMV_NV], cold[GEMV_NV], col[GEMV_NV];
  for (int v = 0; v < nv; v++) {
    col[v] = add(g, B->n0, k64(g, v * g->lanes));
    mask[v] = v >= first_masked ? lanes_below(g, col[v], B->f[P_N]) : NULL;
  }
  Axpy a = {mask, nv};
  Loop lm;
  LLVMValueRef m = loop_open(g, &lm, k64(g, 0), B->f[P_M], NULL, 0);
  for (int v = 0; v < nv && g->s->accumulate; v++)
    cold[v] = vload(g, elem(g, B->cm, add(g, mul(g, m, B->f[P_LDC]), col[v])), mask[v]);
  k_blocks(g, B, m, axpy_chain, &a, sum, g->s->accumulate ? cold : NULL, nv);
  for (int v = 0; v < nv; v++)
    store_out(g, B, sum[v], m, col[v], mask[v]);
  loop_close(g, &lm, k64(g, 1));
}

/* if (cond) { the block as nv vectors } and on to `done`; the builder
 * goes on in the else. */
static void axpy_if(Gv *g, Blk *B, LLVMValueRef cond, int nv, int first_masked, LLVMBasicBlockRef done) {
  LLVMBasicBlockRef other = branch(g, cond);
  block_axpy_rows(g, B, nv, first_masked);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, other);
}

/* B: full blocks unmasked; the last one (N not a multiple of NV*L) over
 * the fewest vectors, a power of two down to GEMV_TAIL_NV, that cover its
 * columns, masked from the first that may pass N (the first half lies
 * within it, but in the narrowest): masked loads cost even of no lanes
 * (the MLP's last layer, N = 10, took 15% of the call as 8 masked
 * vectors a row). Which vectors a column is in never changes its chain,
 * so neither does this its bits. */
static void block_axpy(Gv *g, Blk *B) {
  LLVMBasicBlockRef done = new_block(g, "block_done");
  LLVMValueRef left = LLVMBuildSub(g->b, B->f[P_N], B->n0, "");
  axpy_if(g, B, LLVMBuildICmp(g->b, LLVMIntSGE, left, k64(g, g->cols), ""), GEMV_NV, GEMV_NV, done);
  for (int nv = GEMV_NV; nv > GEMV_TAIL_NV; nv /= 2)
    axpy_if(g, B, LLVMBuildICmp(g->b, LLVMIntSGT, left, k64(g, nv / 2 * g->lanes), ""), nv, nv / 2, done);
  block_axpy_rows(g, B, GEMV_TAIL_NV, 0);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, done);
}

/* ---- functions: block, task, entry ---- */

static LLVMValueRef new_part(Gv *g, const char *part, LLVMTypeRef *params, int n) {
  char full[1200];
  snprintf(full, sizeof full, "%s.%s", g->name, part);
  LLVMValueRef fn = LLVMAddFunction(g->c->mod, full, LLVMFunctionType(g->c->t_void, params, n, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->c->ctx, fn, "entry"));
  return fn;
}

static LLVMValueRef field(Gv *g, LLVMValueRef ctx, int f) {
  LLVMValueRef p = LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, (unsigned)f, "");
  return LLVMBuildLoad2(g->b, LLVMStructGetTypeAtIndex(g->ctx_t, (unsigned)f), p, "");
}

/* void <name>.task(ptr ctx, i64 lo, i64 hi): blocks lo .. hi, block u
 * being columns (u % nblocks) * cols .. of batch item u / nblocks. */
static LLVMValueRef emit_task(Gv *g) {
  CgCtx *c = g->c;
  LLVMValueRef fn = new_part(g, "task", (LLVMTypeRef[]){c->t_ptr, c->t_i64, c->t_i64}, 3);
  Blk B = {0};
  for (int f = 0; f < F_COUNT; f++)
    B.f[f] = field(g, LLVMGetParam(fn, 0), f);
  Loop lu;
  LLVMValueRef u = loop_open(g, &lu, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), NULL, 0);
  B.bi = LLVMBuildSDiv(g->b, u, B.f[F_NBLOCKS], "b");
  B.n0 = mul(g, LLVMBuildSRem(g->b, u, B.f[F_NBLOCKS], ""), k64(g, g->cols));
  B.a = elem(g, B.f[P_A], mul(g, B.bi, B.f[P_SA]));
  B.bm = elem(g, B.f[P_B], mul(g, B.bi, B.f[P_SB]));
  B.cm = elem(g, B.f[P_C], mul(g, B.bi, B.f[P_SC]));
  if (g->s->trans_b)
    block_dots(g, &B);
  else
    block_axpy(g, &B);
  loop_close(g, &lu, k64(g, 1));
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* gemm.c's K blocks: nkb = max(1, ceil(K / 256)) of kc = ceil(K / nkb). */
static void k_split(Gv *g, LLVMValueRef K, LLVMValueRef *kc, LLVMValueRef *nkb) {
  LLVMValueRef one = k64(g, 1);
  *nkb = LLVMBuildSDiv(g->b, add(g, K, k64(g, GEMV_GEMM_KC - 1)), k64(g, GEMV_GEMM_KC), "");
  *nkb = LLVMBuildSelect(g->b, lt(g, *nkb, one), one, *nkb, "nkb");
  *kc = LLVMBuildSDiv(g->b, add(g, K, add(g, *nkb, k64(g, -1))), *nkb, "kc");
}

/* The entry (gemm.c's signature): the context, then the blocks of all
 * batch items through rt_parallel_for, a chunk per GEMV_TASK_FLOPS. */
static LLVMValueRef emit_entry(Gv *g, LLVMValueRef task) {
  CgCtx *c = g->c;
  LLVMTypeRef i64 = c->t_i64, ptr = c->t_ptr;
  LLVMTypeRef p[P_COUNT] = {i64, i64, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, ptr, c->t_i32};
  LLVMValueRef fn = LLVMAddFunction(c->mod, g->name, LLVMFunctionType(c->t_void, p, P_COUNT, 0));
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef ctx = LLVMBuildAlloca(g->b, g->ctx_t, "ctx");
  LLVMValueRef cols = k64(g, g->cols), one = k64(g, 1);
  LLVMValueRef nblocks = LLVMBuildSDiv(g->b, add(g, LLVMGetParam(fn, P_N), k64(g, g->cols - 1)), cols, "");
  for (int i = 0; i < P_WORK; i++)
    LLVMBuildStore(g->b, LLVMGetParam(fn, (unsigned)i), LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, (unsigned)i, ""));
  LLVMBuildStore(g->b, nblocks, LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, F_NBLOCKS, ""));
  LLVMValueRef ks[2];
  k_split(g, LLVMGetParam(fn, P_K), &ks[0], &ks[1]);
  for (int i = 0; i < 2; i++)
    LLVMBuildStore(g->b, ks[i], LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, (unsigned)(F_KC + i), ""));
  /* a block's flops, and blocks per chunk: at least one */
  LLVMValueRef K1 = LLVMBuildSelect(g->b, lt(g, LLVMGetParam(fn, P_K), one), one, LLVMGetParam(fn, P_K), "");
  LLVMValueRef bflops = mul(g, mul(g, LLVMGetParam(fn, P_M), K1), k64(g, 2 * g->cols));
  LLVMValueRef grain = LLVMBuildSDiv(g->b, k64(g, (int64_t)GEMV_TASK_FLOPS), bflops, "");
  grain = LLVMBuildSelect(g->b, lt(g, grain, one), one, grain, "grain");
  LLVMValueRef units = mul(g, LLVMGetParam(fn, P_BATCH), nblocks);
  LLVMValueRef pf = cg_declare_rt(c, "rt_parallel_for");
  LLVMValueRef args[] = {task, ctx, units, grain, LLVMGetParam(fn, P_NTHREADS)};
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(pf), pf, args, 5, "");
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* Defines (or returns) `name` with cg_gemm_define's signature and meaning,
 * for any M (fast for M <= CG_GEMV_MAX_M). NULL for an unsupported dtype. */
LLVMValueRef cg_gemv_define(CgCtx *c, const CgGemmSpec *s, const char *name) {
  LLVMValueRef existing = LLVMGetNamedFunction(c->mod, name);
  if (existing)
    return existing;
  if (s->dt != RT_F32 && s->dt != RT_F64)
    return NULL;
  LLVMBuilderRef caller = c->b;   /* as cg_gemm_define: the epilogue emits at c->b */
  c->b = LLVMCreateBuilderInContext(c->ctx);
  Gv g = {.c = c, .b = c->b, .s = s, .name = name};
  g.t = s->dt == RT_F32 ? c->t_f32 : c->t_f64;
  g.sz = (int)rt_dtype_size(s->dt);
  g.lanes = cg_lanes(c, g.sz) > 1 ? cg_lanes(c, g.sz) : 2;
  g.vt = LLVMVectorType(g.t, (unsigned)g.lanes);
  g.cols = s->trans_b ? g.lanes : GEMV_NV * g.lanes;
  LLVMTypeRef i64 = c->t_i64, ptr = c->t_ptr;
  LLVMTypeRef f[F_COUNT] = {i64, i64, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, i64, i64, i64};
  g.ctx_t = LLVMStructTypeInContext(c->ctx, f, F_COUNT, 0);
  LLVMValueRef task = emit_task(&g);
  LLVMValueRef fn = emit_entry(&g, task);
  LLVMDisposeBuilder(c->b);
  c->b = caller;
  return fn;
}

/* ---- the call site ---- */

/* kernels.c's cg_call_gemm, but a matrix of fewer than GEMM_MR rows goes
 * to the GEMV: chosen here when M is known, else by a run-time branch on
 * it (the batch). */
void cg_call_matmul(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc, const CgEpiPlan *epi,
                    LLVMValueRef *args) {
  CgCtx *c = k->c;
  LLVMValueRef M = args[1];
  if (LLVMIsAConstantInt(M) && LLVMConstIntGetSExtValue(M) > CG_GEMV_MAX_M) {
    cg_call_gemm(k, dt, ta, tb, acc, epi, args);
    return;
  }
  CgGemmSpec spec = {.dt = dt, .trans_a = ta, .trans_b = tb, .accumulate = acc,
                     .epi = epi ? &epi->epi : NULL};
  char name[1100];
  cg_contract_name(name, sizeof name, "gemv", dt, ta, tb, acc, "", epi);
  LLVMValueRef fn = cg_gemv_define(c, &spec, name);
  if (LLVMIsAConstantInt(M)) {
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, 16, "");
    return;
  }
  LLVMValueRef small = LLVMBuildICmp(c->b, LLVMIntSLE, M, cg_i64(c, CG_GEMV_MAX_M), "");
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "gemv");
  LLVMBasicBlockRef other = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "gemm");
  LLVMBasicBlockRef end = LLVMAppendBasicBlockInContext(c->ctx, k->fn, "matmul_done");
  LLVMBuildCondBr(c->b, small, then, other);
  LLVMPositionBuilderAtEnd(c->b, then);
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, 16, "");
  LLVMBuildBr(c->b, end);
  LLVMPositionBuilderAtEnd(c->b, other);
  cg_call_gemm(k, dt, ta, tb, acc, epi, args);
  LLVMBuildBr(c->b, end);
  LLVMPositionBuilderAtEnd(c->b, end);
}

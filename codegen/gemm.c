/* The contraction template: C_b = op(A_b) op(B_b) (+ C_b), then an
 * epilogue, generated as LLVM IR for run-time sizes. The BLIS recipe:
 *
 *   for each tile of C (batch item, <= MC rows, <= NC columns)  parallel tasks
 *     for each K block of KC                                     in K order
 *       pack op(B)'s block into NR-column panels            (or use a shared packing)
 *       pack op(A)'s block into MR-row panels               (or read A in place: narrow N)
 *       for each NR panel of B, for each MR panel of A:
 *         micro-kernel: MR x NR accumulators in vector registers (MR - 1
 *         for some of a short tile's rows: row_split), one FMA
 *         per accumulator per k (KU k's per iteration of the 6-row
 *         kernel's packed loop), then C (+)= and, on the last K block,
 *         the epilogue, while the tile is still in registers.
 *
 * MR = 6 and NR = two vector registers give 12 accumulators (6x16 floats on
 * AVX2, 6x32 on AVX-512, 6x8 with 128-bit vectors or for doubles on AVX2);
 * with two B vectors and one broadcast that is 15 of 16 registers. Packing
 * zero-pads partial panels, so the micro-kernel always runs full; only its
 * stores are guarded at the edges (row checks and lane masks). Every loop
 * body is unrolled and vectorized here (transposes included), so LLVM only
 * schedules and allocates registers.
 *
 * Parallelism: tiles are the tasks of rt_parallel_for. Their shape and the
 * chunk grain come from the problem size only (never the thread count), and
 * each C element is summed in the same K order whatever tile holds it, so
 * results are bit-identical at any thread count. Tiles split a dimension
 * into near-equal runs of panels, an even number of them when more than
 * one (see plan_grid). When the rows are split
 * over several tiles, B is packed once, in parallel, into a region of
 * `work` they all read ("shared"; per batch item, or once for a broadcast
 * B), one K block at a time: pack block kb, then every tile's pass over
 * it, then block kb+1 (BLIS's loop order, so the block read is the one
 * just packed). Otherwise each tile packs its own B blocks ("private"): a tile that
 * has all the rows, or a batch of small matrices with distinct B, which
 * then runs as one set of per-matrix tasks. Each running task owns a slot
 * of `work` (its A block and private B block), claimed from a bit mask with
 * an atomic, so nothing depends on OpenMP thread numbers.
 *
 * A small shared B (all its K blocks at most WHOLE_B elements where a K
 * block is under WHOLE_FLOPS of work and more than one thread runs,
 * WHOLE_B_ONE otherwise) is packed whole, in one parallel pass, before a single
 * launch of the tiles, each of which then runs all its K blocks: one
 * parallel region for the pack and one for the tiles instead of two per K
 * block, and each tile's C rows stay in cache from one K block to the
 * next. Whole or by K block, the tiles and the order of summation are the
 * same, so the thread count may choose. A narrow B (N <= NARROW_N) also
 * has the micro-kernel read a non-transposed A in place. Neither changes
 * the order of summation.
 *
 * Work layout (cg_gemm_work_bytes mirrors it):
 *   [64 bytes: slot mask][shared B, if M > MIN_ROWS: the larger of min(K, KC) x ceil64(N)
 *    and min(all K blocks x ceil64(N), WHOLE_B)][slots: MC x KC of A + KC x NTMAX of B]
 */
#include "codegen/codegen.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

/* Blocking, in elements: a KC x NR sliver of B stays in L1, an MC x KC
 * block of A in L2, a KC x NC panel of B in L3. */
enum {
  GEMM_MR = 6,
  GEMM_KU = 4,            /* k steps per iteration of the 6-row micro-kernel's packed loop */
  GEMM_KC = 256,
  GEMM_MC = 144,          /* tallest tile: a multiple of MR (BLIS's value for Zen) */
  GEMM_NC = 4096,         /* widest tile: a multiple of every NR */
  GEMM_NR_MAX = 64,       /* NR divides it for every target and dtype */
  GEMM_MIN_ROWS = 48,     /* shortest tile when splitting rows ... */
  GEMM_MIN_ROWS_WIDE = 144, /* ... and when N > WIDE: each B sliver then comes from L3 for MIN_ROWS/MR micro-tiles */
  GEMM_WIDE = 512,
  GEMM_MIN_COLS = 512,    /* narrowest tile when splitting columns: each repacks A, and B rows stream in longer runs */
  GEMM_MAX_TILES = 32,    /* tiles wanted at most, from the problem size */
  GEMM_SECOND_SPLIT = 8,  /* tiles sought by splitting the costlier dimension too */
  GEMM_MAX_SLOTS = 64,    /* bits of the slot mask: threads per call */
  GEMM_HEADER = 64,
  GEMM_PACK_GRAIN = 1 << 16, /* elements of B packed per chunk (~25 us): a smaller B is packed by the caller alone */
  GEMM_NARROW_N = 32,       /* N up to this is narrow: A read in place (plan) */
  GEMM_WHOLE_B = 1 << 18,   /* a shared B of at most this many elements (padded) is packed whole (plan) ... */
  GEMM_WHOLE_B_ONE = 1 << 16, /* ... at one thread, this many (it then stays in L2) */
};
/* A chunk worth a parallel task (about 50 us of a core); smaller problems stay on one thread. */
#define GEMM_TILE_FLOPS 4194304.0
/* Work of one K block below which, at more than one thread, a B of up to WHOLE_B is packed whole. */
#define GEMM_WHOLE_FLOPS (8 * GEMM_TILE_FLOPS)
/* Per matrix, below this a batch with distinct B matrices runs one task per matrix. */
#define GEMM_PRIVATE_FLOPS 8388608.0

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ---- work layout, in C (for the caller) ---- */

static int64_t slots_for(int nthreads) {
  int n = nthreads > 0 ? nthreads : rt_default_threads();
  return n < 1 ? 1 : n > GEMM_MAX_SLOTS ? GEMM_MAX_SLOTS : n;
}

static int64_t tile_width_max(int64_t N) {
  int64_t w = round_up(N, GEMM_NR_MAX);
  return w < GEMM_NC ? w : GEMM_NC;
}

/* K in nkb near-equal blocks of kc rows, at most KC (plan computes the same in IR). */
static int64_t k_blocks(int64_t K, int64_t *kc) {
  int64_t nkb = K > GEMM_KC ? (K + GEMM_KC - 1) / GEMM_KC : 1;
  *kc = (K + nkb - 1) / nkb;
  return nkb;
}

int64_t cg_gemm_work_bytes(RtDType dt, int64_t M, int64_t N, int64_t K, int nthreads) {
  int64_t sz = (int64_t)rt_dtype_size(dt);
  if (N < 1)
    N = 1;
  if (K < 0)
    K = 0;
  int64_t kc, nkb = k_blocks(K, &kc);
  int64_t one_block = round_up(N, GEMM_NR_MAX) * (K < GEMM_KC ? K : GEMM_KC);
  int64_t whole = round_up(N, GEMM_NR_MAX) * nkb * kc;
  whole = whole < GEMM_WHOLE_B ? whole : GEMM_WHOLE_B;
  int64_t shared_b = M > GEMM_MIN_ROWS ? round_up((one_block > whole ? one_block : whole) * sz, 64) : 0;
  int64_t slot = round_up((GEMM_MC + tile_width_max(N)) * GEMM_KC * sz, 64);
  return GEMM_HEADER + shared_b + slots_for(nthreads) * slot;
}

/* NR is two vectors of the element type (cg_gemm_define's g.nr). */
static int64_t panel_width(RtDType dt, int f32_lanes) {
  int64_t lanes = (int64_t)f32_lanes * 4 / (int64_t)rt_dtype_size(dt);
  return 2 * (lanes < 1 ? 1 : lanes);
}

bool cg_gemm_panels(RtDType dt, int lanes, int64_t M, int64_t K, int64_t *nr, int64_t *kc) {
  if ((dt != RT_F32 && dt != RT_F64) || M <= CG_GEMV_MAX_M || K < 1 || lanes < 1)
    return false;
  *nr = panel_width(dt, lanes);
  k_blocks(K, kc);
  return true;
}

/* ---- IR helpers ---- */

/* What every emitter of one gemm function needs. */
typedef struct Gen {
  CgCtx *c;
  LLVMBuilderRef b;
  const CgGemmSpec *s;
  const char *name;
  LLVMTypeRef t, vt;         /* element, <lanes x element> */
  int sz, lanes, mr, nr, nv; /* nv = nr / lanes vectors per micro-tile row */
  LLVMTypeRef ctx_t;         /* the tasks' shared context struct */
  LLVMValueRef micro, pack_a, pack_b, tile, task, bpack;
  LLVMValueRef micro_short;  /* the micro-kernel of MR - 1 rows: see row_split */
  LLVMBuilderRef caller;     /* c->b before gen_start, back after gen_done */
} Gen;

static LLVMValueRef k64(Gen *g, int64_t v) { return LLVMConstInt(g->c->t_i64, (unsigned long long)v, 1); }
static LLVMValueRef add(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(g->b, a, b, ""); }
static LLVMValueRef sub(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(g->b, a, b, ""); }
static LLVMValueRef mul(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(g->b, a, b, ""); }
static LLVMValueRef sdiv(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSDiv(g->b, a, b, ""); }
static LLVMValueRef srem(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSRem(g->b, a, b, ""); }
static LLVMValueRef lt(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildICmp(g->b, LLVMIntSLT, a, b, ""); }
static LLVMValueRef eq(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildICmp(g->b, LLVMIntEQ, a, b, ""); }
static LLVMValueRef emin(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(g->b, lt(g, a, b), a, b, ""); }
static LLVMValueRef emax(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(g->b, lt(g, a, b), b, a, ""); }
/* ceil(a / b) for a >= 0, b > 0 */
static LLVMValueRef cdiv(Gen *g, LLVMValueRef a, LLVMValueRef b) { return sdiv(g, add(g, a, sub(g, b, k64(g, 1))), b); }
static LLVMValueRef rup(Gen *g, LLVMValueRef a, LLVMValueRef m) { return mul(g, cdiv(g, a, m), m); }
static LLVMValueRef to_f64(Gen *g, LLVMValueRef v) { return LLVMBuildSIToFP(g->b, v, g->c->t_f64, ""); }

/* &p[i] for elements of T, and for bytes */
static LLVMValueRef elem(Gen *g, LLVMValueRef p, LLVMValueRef i) { return LLVMBuildGEP2(g->b, g->t, p, &i, 1, ""); }
static LLVMValueRef byte(Gen *g, LLVMValueRef p, LLVMValueRef i) { return LLVMBuildGEP2(g->b, g->c->t_i8, p, &i, 1, ""); }

static LLVMValueRef load(Gen *g, LLVMTypeRef t, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, t, p, "");
  LLVMSetAlignment(v, g->sz);
  return v;
}

static void store(Gen *g, LLVMValueRef v, LLVMValueRef p) {
  LLVMSetAlignment(LLVMBuildStore(g->b, v, p), g->sz);
}

/* A counted loop `for (iv = lo; iv < hi; iv += step)`; the body goes
 * between loop_open and loop_close and may contain other loops. Every loop
 * here is marked to be kept as written: the bodies are unrolled and
 * vectorized already, and LLVM's unrolling, unswitching and vectorizing of
 * them only multiplied the compile time. */
typedef struct Loop {
  LLVMBasicBlockRef head, exit;
  LLVMValueRef iv;
} Loop;

static LLVMValueRef loop_open(Gen *g, Loop *l, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(g->b));
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
  l->head = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "done");
  LLVMBuildBr(g->b, l->head);
  LLVMPositionBuilderAtEnd(g->b, l->head);
  l->iv = LLVMBuildPhi(g->b, LLVMTypeOf(lo), "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  LLVMBuildCondBr(g->b, lt(g, l->iv, hi), body, l->exit);
  LLVMPositionBuilderAtEnd(g->b, body);
  return l->iv;
}

static void loop_close(Gen *g, Loop *l, LLVMValueRef step) {
  LLVMValueRef next = add(g, l->iv, step);
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
  cg_keep_loop_as_written(g->c, LLVMBuildBr(g->b, l->head));
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(g->b, l->exit);
}

/* if (cond) { ... }: the builder is in `then` after if_open. */
typedef struct If {
  LLVMBasicBlockRef end;
} If;

static void if_open(Gen *g, If *f, LLVMValueRef cond) {
  LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(g->b));
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "then");
  f->end = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "endif");
  LLVMBuildCondBr(g->b, cond, then, f->end);
  LLVMPositionBuilderAtEnd(g->b, then);
}

static void if_close(Gen *g, If *f) {
  LLVMBuildBr(g->b, f->end);
  LLVMPositionBuilderAtEnd(g->b, f->end);
}

/* An internal function `<name>.<part>` with its entry block, builder in it. */
static LLVMValueRef new_part(Gen *g, const char *part, LLVMTypeRef ret, LLVMTypeRef *params, int n) {
  char full[256];
  snprintf(full, sizeof full, "%s.%s", g->name, part);
  LLVMValueRef fn = LLVMAddFunction(g->c->mod, full, LLVMFunctionType(ret, params, n, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->c->ctx, fn, "entry"));
  return fn;
}

static void add_attr(Gen *g, LLVMValueRef fn, unsigned index, const char *attr) {
  unsigned kind = LLVMGetEnumAttributeKindForName(attr, strlen(attr));
  LLVMAddAttributeAtIndex(fn, index, LLVMCreateEnumAttribute(g->c->ctx, kind, 0));
}

static void set_noalias(Gen *g, LLVMValueRef fn, unsigned param) { add_attr(g, fn, param + 1, "noalias"); }

/* The parts are called once per panel or micro-tile, where a call costs
 * nothing; inlined into their loops they took 1.6x the compile time. */
static void set_noinline(Gen *g, LLVMValueRef fn) { add_attr(g, fn, LLVMAttributeFunctionIndex, "noinline"); }

/* Code that runs once per call or per chunk: not worth the optimizer's
 * time (about a third of the compile time otherwise). */
static void set_cold(Gen *g, LLVMValueRef fn) {
  set_noinline(g, fn);
  add_attr(g, fn, LLVMAttributeFunctionIndex, "optnone");
}

static LLVMValueRef call(Gen *g, LLVMValueRef fn, LLVMValueRef *args, int n) {
  return LLVMBuildCall2(g->b, LLVMGlobalGetValueType(fn), fn, args, n, "");
}

/* ---- the tasks' context: every argument and derived size ---- */

enum {
  F_A, F_LDA, F_SA, F_B, F_LDB, F_SB, F_C, F_LDC, F_SC, F_EPI,
  F_M, F_N, F_K, F_KC, F_NKB, F_MTILES, F_NTILES, F_MPANELS, F_NPANELS,
  F_B0, F_KB0, F_KB1, F_BSTRIDE, F_PRIVATE, F_DIRECT_LDA, F_PACKED, F_MASK, F_SLOTS, F_SLOT_BYTES,
  F_KBS,
  F_IH, F_IW, F_PW,          /* an implicit B's image height, width, positions per row */
  /* F_BSTRIDE: elements from one K block of
   * the shared packing to the next (0: it holds one); F_DIRECT_LDA: lda
   * where the micro-kernel reads A in place, else 0 (packed); F_KBS: the
   * K blocks each launch of the tiles runs (1, or all: see plan) */
  F_COUNT
};

static bool field_is_ptr(int f) {
  return f == F_A || f == F_B || f == F_C || f == F_EPI || f == F_PACKED || f == F_MASK || f == F_SLOTS;
}

static LLVMTypeRef field_type(Gen *g, int f) { return field_is_ptr(f) ? g->c->t_ptr : g->c->t_i64; }

static void make_ctx_type(Gen *g) {
  LLVMTypeRef fields[F_COUNT];
  for (int f = 0; f < F_COUNT; f++)
    fields[f] = field_type(g, f);
  g->ctx_t = LLVMStructTypeInContext(g->c->ctx, fields, F_COUNT, 0);
}

static LLVMValueRef get(Gen *g, LLVMValueRef ctx, int f) {
  return LLVMBuildLoad2(g->b, field_type(g, f), LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, f, ""), "");
}

static void set(Gen *g, LLVMValueRef ctx, int f, LLVMValueRef v) {
  LLVMBuildStore(g->b, v, LLVMBuildStructGEP2(g->b, g->ctx_t, ctx, f, ""));
}

/* ---- packing ---- */

/* Lanes v*lanes .. of a micro-tile row that are below nr. */
static LLVMValueRef lane_mask(Gen *g, LLVMValueRef nr, int v) {
  LLVMValueRef idx[64];
  for (int j = 0; j < g->lanes; j++)
    idx[j] = LLVMConstInt(g->c->t_i32, v * g->lanes + j, 0);
  LLVMValueRef n = cg_splat(g->c, LLVMBuildTrunc(g->b, nr, g->c->t_i32, ""), g->lanes);
  return LLVMBuildICmp(g->b, LLVMIntSLT, LLVMConstVector(idx, g->lanes), n, "mask");
}

static LLVMValueRef load_c(Gen *g, LLVMValueRef p, LLVMValueRef mask) {
  return cg_vload(g->c, g->vt, p, (unsigned)g->sz, mask);
}

/* Packing reads R rows of a panel and writes them k-major. Where the rows
 * are contiguous in memory (rs == 1) each k copies R contiguous elements;
 * where k is contiguous (cs == 1), blocks of L = lanes k's are loaded as
 * vectors from each row and transposed in registers. Partial panels (the
 * edges) go element by element. Everything is unrolled here, so LLVM's
 * loop vectorizer is kept out (it made packing the bulk of compile time). */

static LLVMValueRef shuffle(Gen *g, LLVMValueRef a, LLVMValueRef b, const int *idx, int n) {
  LLVMValueRef m[64];
  for (int j = 0; j < n; j++)
    m[j] = LLVMConstInt(g->c->t_i32, idx[j], 0);
  return LLVMBuildShuffleVector(g->b, a, b, LLVMConstVector(m, n), "");
}

/* Copies n contiguous elements in vectors of L, then 4, 2, 1 elements. */
static void copy_run(Gen *g, LLVMValueRef dst, LLVMValueRef src, int n) {
  for (int off = 0, w = g->lanes; off < n; w /= 2)
    for (; w >= 1 && off + w <= n; off += w) {
      LLVMTypeRef t = w > 1 ? LLVMVectorType(g->t, w) : g->t;
      store(g, load(g, t, elem(g, src, k64(g, off))), elem(g, dst, k64(g, off)));
    }
}

/* Stores the first n elements of an <L x T> vector, without writing past them. */
static void store_prefix(Gen *g, LLVMValueRef v, LLVMValueRef dst, int n) {
  for (int off = 0, w = g->lanes; off < n; w /= 2)
    for (; w >= 1 && off + w <= n; off += w) {
      int idx[64];
      for (int j = 0; j < w; j++)
        idx[j] = off + j;
      LLVMValueRef part = w == g->lanes ? v
                        : w > 1 ? shuffle(g, v, v, idx, w)
                        : LLVMBuildExtractElement(g->b, v, LLVMConstInt(g->c->t_i32, off, 0), "");
      store(g, part, elem(g, dst, k64(g, off)));
    }
}

/* x[i][j] <-> x[j][i] for L vectors of L lanes: log2(L) stages that swap
 * the off-diagonal b x b blocks of each 2b x 2b block. */
static void transpose(Gen *g, LLVMValueRef *x) {
  int L = g->lanes, lo[64], hi[64];
  for (int b = 1; b < L; b *= 2)
    for (int i = 0; i < L; i++) {
      if (i & b)
        continue;
      for (int j = 0; j < L; j++) {
        lo[j] = (j & b) ? L + j - b : j;
        hi[j] = (j & b) ? L + j : j + b;
      }
      LLVMValueRef a = x[i], c = x[i + b];
      x[i] = shuffle(g, a, c, lo, L);
      x[i + b] = shuffle(g, a, c, hi, L);
    }
}

/* A row of L k's where k is contiguous; on an edge panel (valid rows,
 * else NULL) a row from valid on reads row valid-1, in bounds, and is zero. */
static LLVMValueRef load_k_run(Gen *g, LLVMValueRef src, LLVMValueRef rs, int r, LLVMValueRef valid) {
  if (!valid)
    return load(g, g->vt, elem(g, src, mul(g, k64(g, r), rs)));
  LLVMValueRef row = emin(g, k64(g, r), sub(g, valid, k64(g, 1)));
  LLVMValueRef x = load(g, g->vt, elem(g, src, mul(g, row, rs)));
  return LLVMBuildSelect(g->b, lt(g, k64(g, r), valid), x, LLVMConstNull(g->vt), "");
}

/* L k's of a panel with k contiguous: dst[kk*R + r] = src[r*rs + kk],
 * zero from row `valid` on (edge panels; NULL for a full one). */
static void pack_block_transposed(Gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rs, int R,
                                  LLVMValueRef valid) {
  int L = g->lanes;
  for (int r0 = 0; r0 < R; r0 += L) {
    int rows = R - r0 < L ? R - r0 : L;
    LLVMValueRef x[64];
    for (int j = 0; j < L; j++)
      x[j] = j < rows ? load_k_run(g, src, rs, r0 + j, valid) : LLVMGetUndef(g->vt);
    transpose(g, x);
    for (int kk = 0; kk < L; kk++)
      store_prefix(g, x[kk], elem(g, dst, k64(g, kk * R + r0)), rows);
  }
}

/* One k of a panel, element by element: dst[r] = src[r*rs]. An edge panel
 * reads row min(r, valid-1), which is in bounds, and stores zero past valid. */
static void pack_step(Gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rs, LLVMValueRef valid,
                      int R, bool edge) {
  for (int r = 0; r < R; r++) {
    LLVMValueRef row = edge ? emin(g, k64(g, r), sub(g, valid, k64(g, 1))) : k64(g, r);
    LLVMValueRef v = load(g, g->t, elem(g, src, mul(g, row, rs)));
    if (edge)
      v = LLVMBuildSelect(g->b, lt(g, k64(g, r), valid), v, LLVMConstNull(g->t), "");
    store(g, v, elem(g, dst, k64(g, r)));
  }
}

/* One k of an edge panel with rows contiguous: dst[r] = src[r] below
 * valid, zero up to R, as masked vector loads (no read past valid). */
static void pack_run_masked(Gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef valid, int R) {
  for (int v = 0, L = g->lanes; v * L < R; v++) {
    LLVMValueRef x = load_c(g, elem(g, src, k64(g, v * L)), lane_mask(g, valid, v));
    store_prefix(g, x, elem(g, dst, k64(g, v * L)), R - v * L < L ? R - v * L : L);
  }
}

/* Rows contiguous: k outer, so the source is read row after row (a panel
 * at a time would touch kc pages per panel), and each k's run of rows is
 * scattered over the panels, the partial last one's by masked loads. */
static void pack_rows_contiguous(Gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef cs, LLVMValueRef n,
                                 LLVMValueRef kc, int R) {
  LLVMValueRef kR = k64(g, R), full = sdiv(g, n, kR), rem = sub(g, n, mul(g, full, kR));
  Loop lk, lp;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kc);
  LLVMValueRef from = elem(g, src, mul(g, k, cs)), to = elem(g, dst, mul(g, k, kR)), pstride = mul(g, kc, kR);
  LLVMValueRef p = loop_open(g, &lp, k64(g, 0), full);
  copy_run(g, elem(g, to, mul(g, p, pstride)), elem(g, from, mul(g, p, kR)), R);
  loop_close(g, &lp, k64(g, 1));
  If edge;
  if_open(g, &edge, lt(g, k64(g, 0), rem));
  pack_run_masked(g, elem(g, to, mul(g, full, pstride)), elem(g, from, mul(g, full, kR)), rem, R);
  if_close(g, &edge);
  loop_close(g, &lk, k64(g, 1));
}

/* One panel of R rows with k contiguous: L k's per step transposed in
 * registers, the k's left over element by element; an edge panel (valid
 * rows, else NULL) zero from row valid on. */
static void pack_panel_k(Gen *g, LLVMValueRef to, LLVMValueRef from, LLVMValueRef rs, LLVMValueRef kc, int R,
                         LLVMValueRef valid) {
  LLVMValueRef kR = k64(g, R), kL = k64(g, g->lanes), kmain = sub(g, kc, srem(g, kc, kL));
  Loop lk, lrest;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kmain);
  pack_block_transposed(g, elem(g, to, mul(g, k, kR)), elem(g, from, k), rs, R, valid);
  loop_close(g, &lk, kL);
  k = loop_open(g, &lrest, kmain, kc);
  pack_step(g, elem(g, to, mul(g, k, kR)), elem(g, from, k), rs, valid ? valid : kR, R, valid != NULL);
  loop_close(g, &lrest, k64(g, 1));
}

/* k contiguous: a panel at a time, the partial last one (the short
 * micro-tiles' panels of row_split are all partial) the same way. */
static void pack_k_contiguous(Gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rs, LLVMValueRef n,
                              LLVMValueRef kc, int R) {
  LLVMValueRef kR = k64(g, R), full = sdiv(g, n, kR), rem = sub(g, n, mul(g, full, kR));
  LLVMValueRef pstride = mul(g, kc, kR), rows = mul(g, kR, rs);
  Loop lp;
  LLVMValueRef p = loop_open(g, &lp, k64(g, 0), full);
  pack_panel_k(g, elem(g, dst, mul(g, p, pstride)), elem(g, src, mul(g, p, rows)), rs, kc, R, NULL);
  loop_close(g, &lp, k64(g, 1));
  If edge;
  if_open(g, &edge, lt(g, k64(g, 0), rem));
  pack_panel_k(g, elem(g, dst, mul(g, full, pstride)), elem(g, src, mul(g, full, rows)), rs, kc, R, rem);
  if_close(g, &edge);
}

/* pack(dst, src, rs, cs, n, kc): n rows of a block by kc into panels of R
 * rows (R = MR for A, NR for B), panel p at dst + p*kc*R, k-major inside:
 * dst[p*kc*R + k*R + r] = src[(p*R + r)*rs + k*cs], zero past row n.
 * contig_r: rs is 1 (known at compile time); otherwise cs is. */
static LLVMValueRef emit_pack(Gen *g, const char *part, int R, bool contig_r) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_ptr, c->t_i64, c->t_i64, c->t_i64, c->t_i64};
  LLVMValueRef fn = new_part(g, part, c->t_void, p, 6);
  set_noalias(g, fn, 0);
  set_noalias(g, fn, 1);
  LLVMValueRef dst = LLVMGetParam(fn, 0), src = LLVMGetParam(fn, 1), n = LLVMGetParam(fn, 4), kc = LLVMGetParam(fn, 5);
  if (contig_r)
    pack_rows_contiguous(g, dst, src, LLVMGetParam(fn, 3), n, kc, R);
  else
    pack_k_contiguous(g, dst, src, LLVMGetParam(fn, 2), n, kc, R);
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* ---- the micro-kernel ---- */

enum { MK_AP, MK_BP, MK_KC, MK_CP, MK_LDC, MK_MR, MK_NR, MK_LOADC, MK_LAST, MK_EPI, MK_B, MK_ROW, MK_COL, MK_LDA,
       MK_COUNT };

static void store_c(Gen *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef mask) {
  cg_vstore(g->c, v, p, (unsigned)g->sz, mask);
}

/* Writes the accumulators to C: C = acc, or C += acc when loadc (a select,
 * not a branch: one variant less, for one load per vector); then the
 * epilogue when `last`. An edge tile (!full) skips rows past mr and masks
 * lanes past nr. */
static void store_tile(Gen *g, LLVMValueRef fn, int mr, LLVMValueRef *acc, bool last, bool full) {
  LLVMValueRef P[MK_COUNT];
  for (int i = 0; i < MK_COUNT; i++)
    P[i] = LLVMGetParam(fn, i);
  LLVMValueRef masks[8] = {0};
  for (int v = 0; v < g->nv && !full; v++)
    masks[v] = lane_mask(g, P[MK_NR], v);
  for (int i = 0; i < mr; i++) {
    If row_ok;
    if (!full)
      if_open(g, &row_ok, lt(g, k64(g, i), P[MK_MR]));
    LLVMValueRef rowp = elem(g, P[MK_CP], mul(g, k64(g, i), P[MK_LDC]));
    for (int v = 0; v < g->nv; v++) {
      LLVMValueRef p = elem(g, rowp, k64(g, v * g->lanes)), x = acc[i * g->nv + v];
      LLVMValueRef sum = LLVMBuildFAdd(g->b, x, load_c(g, p, masks[v]), "");
      x = LLVMBuildSelect(g->b, P[MK_LOADC], sum, x, "");
      if (last)
        x = g->s->epi->fn(g->c, g->s->epi->user, x, masks[v], P[MK_EPI], P[MK_B],
                          add(g, P[MK_ROW], k64(g, i)), add(g, P[MK_COL], k64(g, v * g->lanes)));
      store_c(g, x, p, masks[v]);
    }
    if (!full)
      if_close(g, &row_ok);
  }
}

/* Asks for the C tile's lines before the k loop, so that the misses
 * overlap the FMAs instead of stalling the stores after them. */
static void prefetch_c(Gen *g, LLVMValueRef fn, int mr) {
  LLVMValueRef cp = LLVMGetParam(fn, MK_CP), ldc = LLVMGetParam(fn, MK_LDC);
  for (int i = 0; i < mr; i++) {
    LLVMValueRef row = elem(g, cp, mul(g, k64(g, i), ldc));
    LLVMValueRef ends[] = {row, elem(g, row, k64(g, g->nr - 1))};
    for (int e = 0; e < 2; e++) {
      LLVMValueRef args[] = {ends[e], LLVMConstInt(g->c->t_i32, 1, 0), LLVMConstInt(g->c->t_i32, 3, 0),
                             LLVMConstInt(g->c->t_i32, 1, 0)};  /* write, keep in all levels, data */
      cg_intrinsic(g->c, "llvm.prefetch", &g->c->t_ptr, 1, args, 4);
    }
  }
}

/* One k step: acc[i][v] += a[i] * bp[v*lanes ..], as nv vector loads of
 * B, mr broadcasts of A (a[i] at arow[i]) and mr*nv FMAs. */
static void fma_step(Gen *g, int mr, LLVMValueRef *arow, LLVMValueRef brow, LLVMValueRef *acc, LLVMValueRef *next) {
  LLVMValueRef bv[8];
  for (int v = 0; v < g->nv; v++)
    bv[v] = load(g, g->vt, elem(g, brow, k64(g, v * g->lanes)));
  for (int i = 0; i < mr; i++) {
    LLVMValueRef a = cg_splat(g->c, load(g, g->t, arow[i]), g->lanes);
    for (int v = 0; v < g->nv; v++) {
      LLVMValueRef args[] = {a, bv[v], acc[i * g->nv + v]};
      next[i * g->nv + v] = cg_intrinsic(g->c, "llvm.fma", &g->vt, 1, args, 3);
    }
  }
}

/* k from lo to hi (hi - lo a multiple of U), U k steps per iteration, of
 * an mr-row micro-tile with the accumulators as phis (they must stay in
 * registers): A's element (i, k) at rows[i] + k*ks, B's row k at bp +
 * k*NR. acc holds the sums before the loop and after it on return; the
 * builder is left after the loop. */
static void fma_run(Gen *g, LLVMValueRef fn, int mr, LLVMValueRef *rows, LLVMValueRef ks, LLVMValueRef *acc,
                    LLVMValueRef lo, LLVMValueRef hi, int U) {
  CgCtx *c = g->c;
  LLVMValueRef bp = LLVMGetParam(fn, MK_BP), next[GEMM_MR * 8], arow[GEMM_MR];
  int nacc = mr * g->nv;
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(g->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(c->ctx, fn, "k");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, fn, "fma");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, fn, "summed");
  LLVMBuildBr(g->b, head);
  LLVMPositionBuilderAtEnd(g->b, head);
  LLVMValueRef k = LLVMBuildPhi(g->b, c->t_i64, "k");
  LLVMAddIncoming(k, &lo, &entry, 1);
  for (int j = 0; j < nacc; j++) {
    LLVMValueRef in = acc[j];
    acc[j] = LLVMBuildPhi(g->b, g->vt, "acc");
    LLVMAddIncoming(acc[j], &in, &entry, 1);
  }
  LLVMBuildCondBr(g->b, lt(g, k, hi), body, done);
  LLVMPositionBuilderAtEnd(g->b, body);
  LLVMValueRef sums[GEMM_MR * 8];
  memcpy(sums, acc, sizeof *acc * nacc);
  for (int u = 0; u < U; u++) {
    LLVMValueRef ku = add(g, k, k64(g, u));
    for (int i = 0; i < mr; i++)
      arow[i] = elem(g, rows[i], mul(g, ku, ks));
    fma_step(g, mr, arow, elem(g, bp, mul(g, ku, k64(g, g->nr))), sums, next);
    memcpy(sums, next, sizeof *next * nacc);
  }
  LLVMValueRef k1 = add(g, k, k64(g, U));
  LLVMAddIncoming(k, &k1, &body, 1);
  for (int j = 0; j < nacc; j++)
    LLVMAddIncoming(acc[j], &sums[j], &body, 1);
  cg_keep_loop_as_written(g->c, LLVMBuildBr(g->b, head));
  LLVMPositionBuilderAtEnd(g->b, done);
}

/* The k loop of an mr-row micro-tile: `unroll` k's per iteration, then
 * the k's left over one at a time, in k order (so the sums are those of
 * a loop by one k). Leaves the builder after the loops and the final
 * sums in acc. By 4 (GEMM_KU), the 6-row packed loop ran sq256-sq2048
 * 2-20% faster in median under a loaded machine (bench/NOTES.md, branch
 * h/sgemm3); LLVM keeps each k's FMAs in order here (its own unrolling
 * had hoisted the next k's FMAs behind the same accumulators' and
 * stalled). Each unrolled loop costs compile time (an MLP training
 * step's compile +15% with all three), so only that loop has it. */
static void fma_loop(Gen *g, LLVMValueRef fn, int mr, LLVMValueRef *rows, LLVMValueRef ks, LLVMValueRef *acc,
                     int unroll) {
  LLVMValueRef kc = LLVMGetParam(fn, MK_KC), kmain = sub(g, kc, srem(g, kc, k64(g, unroll)));
  for (int j = 0; j < mr * g->nv; j++)
    acc[j] = LLVMConstNull(g->vt);
  if (unroll > 1)
    fma_run(g, fn, mr, rows, ks, acc, k64(g, 0), kmain, unroll);
  fma_run(g, fn, mr, rows, ks, acc, unroll > 1 ? kmain : k64(g, 0), kc, 1);
}

/* The sums of an mr-row micro-tile into acc. A packed panel (lda == 0,
 * always when packed_only) holds element (i, k) at ap[k*MR + i], whatever
 * mr (a short micro-tile's panel has MR rows, the last zero). Otherwise ap is op(A) itself, rows lda
 * apart and k contiguous (A not transposed): read in place, without
 * packing, where N is too narrow for a packed A to pay (see plan); rows
 * past mr read row mr-1, in bounds, and their sums are never stored. One
 * k loop per layout, so that each keeps its constant strides. */
static void micro_sums(Gen *g, LLVMValueRef fn, int mr, bool packed_only, LLVMValueRef *acc) {
  CgCtx *c = g->c;
  LLVMValueRef ap = LLVMGetParam(fn, MK_AP), rows[GEMM_MR];
  for (int i = 0; i < mr; i++)
    rows[i] = elem(g, ap, k64(g, i));
  if (g->s->trans_a || packed_only) {
    fma_loop(g, fn, mr, rows, k64(g, g->mr), acc, packed_only ? 1 : GEMM_KU);
    return;
  }
  LLVMValueRef lda = LLVMGetParam(fn, MK_LDA), packed_acc[GEMM_MR * 8], direct_acc[GEMM_MR * 8];
  LLVMBasicBlockRef pack_bb = LLVMAppendBasicBlockInContext(c->ctx, fn, "packed");
  LLVMBasicBlockRef direct_bb = LLVMAppendBasicBlockInContext(c->ctx, fn, "direct");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->ctx, fn, "sums");
  LLVMBuildCondBr(g->b, eq(g, lda, k64(g, 0)), pack_bb, direct_bb);
  LLVMPositionBuilderAtEnd(g->b, pack_bb);
  fma_loop(g, fn, mr, rows, k64(g, g->mr), packed_acc, GEMM_KU);
  LLVMBasicBlockRef from_packed = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, join);
  LLVMPositionBuilderAtEnd(g->b, direct_bb);
  LLVMValueRef last_row = sub(g, LLVMGetParam(fn, MK_MR), k64(g, 1));
  for (int i = 0; i < mr; i++)
    rows[i] = elem(g, ap, mul(g, emin(g, k64(g, i), last_row), lda));
  fma_loop(g, fn, mr, rows, k64(g, 1), direct_acc, 1);
  LLVMBasicBlockRef from_direct = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, join);
  LLVMPositionBuilderAtEnd(g->b, join);
  for (int j = 0; j < mr * g->nv; j++) {
    acc[j] = LLVMBuildPhi(g->b, g->vt, "sum");
    LLVMValueRef in[] = {packed_acc[j], direct_acc[j]};
    LLVMBasicBlockRef from[] = {from_packed, from_direct};
    LLVMAddIncoming(acc[j], in, from, 2);
  }
}

/* micro(ap, bp, kc, cp, ldc, mr, nr, loadc, last, epi, b, row, col, lda),
 * for micro-tiles of `rows` rows: acc[i][j] = sum_k a(i, k) * bp[k*NR + j]
 * (a packed or in place: see micro_sums), kept in rows x NR/lanes vector
 * registers, then stored by one of up to four variants: full tile or edge,
 * and with the epilogue (last K block) or without. The short micro-tiles
 * of row_split read A only packed (packed_only), one k loop less to
 * compile; edge-only stores would save more code but cost them 20% at
 * K = 64 (masked loads and stores of C). */
static LLVMValueRef emit_micro(Gen *g, const char *part, int rows, bool packed_only) {
  CgCtx *c = g->c;
  LLVMTypeRef p[MK_COUNT] = {c->t_ptr, c->t_ptr, c->t_i64, c->t_ptr, c->t_i64, c->t_i64, c->t_i64,
                             c->t_i1, c->t_i1, c->t_ptr, c->t_i64, c->t_i64, c->t_i64, c->t_i64};
  LLVMValueRef fn = new_part(g, part, c->t_void, p, MK_COUNT);
  LLVMValueRef acc[GEMM_MR * 8];
  prefetch_c(g, fn, rows);
  micro_sums(g, fn, rows, packed_only, acc);
  LLVMValueRef full = LLVMBuildAnd(g->b, eq(g, LLVMGetParam(fn, MK_MR), k64(g, rows)),
                                   eq(g, LLVMGetParam(fn, MK_NR), k64(g, g->nr)), "");
  LLVMValueRef sel = LLVMBuildZExt(g->b, full, c->t_i32, "");
  int nvariants = 2;
  if (g->s->epi) {
    LLVMValueRef last = LLVMBuildZExt(g->b, LLVMGetParam(fn, MK_LAST), c->t_i32, "");
    sel = LLVMBuildOr(g->b, sel, LLVMBuildShl(g->b, last, LLVMConstInt(c->t_i32, 1, 0), ""), "");
    nvariants = 4;
  }
  LLVMBasicBlockRef ret = LLVMAppendBasicBlockInContext(c->ctx, fn, "ret");
  LLVMValueRef sw = LLVMBuildSwitch(g->b, sel, ret, nvariants);
  for (int variant = 0; variant < nvariants; variant++) {
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(c->ctx, fn, "variant");
    LLVMAddCase(sw, LLVMConstInt(c->t_i32, variant, 0), bb);
    LLVMPositionBuilderAtEnd(g->b, bb);
    store_tile(g, fn, rows, acc, variant & 2, variant & 1);
    LLVMBuildBr(g->b, ret);
  }
  LLVMPositionBuilderAtEnd(g->b, ret);
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* ---- packing an implicit B (CgIm2col) ----
 *
 * The column matrix is gathered from the image one K block x NC block at a
 * time, straight into the NR-column panels, so no column matrix exists and
 * the image block read stays in cache. Per panel, the lanes' part of the
 * image index (positions or taps, whichever are op(B)'s columns) is worked
 * out once as vectors; each k adds its scalar part. Where taps step by
 * one image column (stride 1, the bulk), runs of the panel are contiguous
 * in the image: masked vector loads, the mask zeroing the padding (per
 * output row of the panel's positions, or per tap lane over L positions,
 * transposed in registers). Otherwise each lane loads alone from a clamped
 * address, selected to zero outside (LLVM expands masked gathers on AVX2
 * into a branch per lane). */

typedef struct Img {
  LLVMValueRef base, H, W, HW, PW;
} Img;

static LLVMTypeRef lanes_i64(Gen *g) { return LLVMVectorType(g->c->t_i64, g->nr); }

/* v as a constant of x's type (i64 or <NR x i64>). */
static LLVMValueRef like(Gen *g, LLVMValueRef x, int64_t v) {
  return LLVMGetTypeKind(LLVMTypeOf(x)) == LLVMVectorTypeKind ? cg_splat(g->c, k64(g, v), g->nr) : k64(g, v);
}

static LLVMValueRef splat(Gen *g, LLVMValueRef v) { return cg_splat(g->c, v, g->nr); }

/* <first, first+1, ...> over n lanes, as i64 */
static LLVMValueRef iota(Gen *g, int first, int n) {
  LLVMValueRef e[64];
  for (int j = 0; j < n; j++)
    e[j] = k64(g, first + j);
  return LLVMConstVector(e, n);
}

/* A vector's lanes as i32 (image sizes stay far below 2^31): the masks of
 * the contiguous paths are computed on L lanes of i32, half the work of i64. */
static LLVMValueRef splat32(Gen *g, LLVMValueRef v) {
  return cg_splat(g->c, LLVMBuildTrunc(g->b, v, g->c->t_i32, ""), g->lanes);
}

static LLVMValueRef iota32(Gen *g, int first) {
  LLVMValueRef e[64];
  for (int j = 0; j < g->lanes; j++)
    e[j] = LLVMConstInt(g->c->t_i32, first + j, 0);
  return LLVMConstVector(e, g->lanes);
}

static LLVMValueRef ult(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildICmp(g->b, LLVMIntULT, a, b, ""); }

/* One image axis: idx * div = num, 0 <= idx < n. Returns whether it holds
 * (scalar or per lane) and idx in *at. */
static LLVMValueRef img_axis(Gen *g, LLVMValueRef num, int div, LLVMValueRef n, LLVMValueRef *at) {
  if (LLVMGetTypeKind(LLVMTypeOf(num)) == LLVMVectorTypeKind)
    n = splat(g, n);
  if (div == 1) {
    *at = num;
    return LLVMBuildICmp(g->b, LLVMIntULT, num, n, "");
  }
  *at = sdiv(g, num, like(g, num, div));
  LLVMValueRef exact = eq(g, srem(g, num, like(g, num, div)), like(g, num, 0));
  return LLVMBuildAnd(g->b, exact, LLVMBuildICmp(g->b, LLVMIntULT, *at, n, ""), "");
}

/* Tap t (scalar or lanes) as the offset of its channel's plane and its
 * kernel row's and column's share of ih*div and iw*div. */
static void tap_parts(Gen *g, const Img *im, LLVMValueRef t, LLVMValueRef *cho, LLVMValueRef *ti, LLVMValueRef *tj) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef ch = sdiv(g, t, like(g, t, (int64_t)s->kh * s->kw)), r = srem(g, t, like(g, t, (int64_t)s->kh * s->kw));
  LLVMValueRef HW = LLVMGetTypeKind(LLVMTypeOf(t)) == LLVMVectorTypeKind ? splat(g, im->HW) : im->HW;
  *cho = mul(g, ch, HW);
  *ti = mul(g, sdiv(g, r, like(g, r, s->kw)), like(g, r, s->dil[0]));
  *tj = mul(g, srem(g, r, like(g, r, s->kw)), like(g, r, s->dil[1]));
}

/* dst[0 .. NR) = image[cho / HW, ih, iw] of each lane where ih*div = ihn,
 * iw*div = iwn (all <NR x i64>) and `live`, else zero. */
static void gather_lanes(Gen *g, const Img *im, LLVMValueRef cho, LLVMValueRef ihn, LLVMValueRef iwn,
                         LLVMValueRef live, LLVMValueRef dst) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef ih, iw, zero = LLVMConstNull(lanes_i64(g));
  LLVMValueRef ok = LLVMBuildAnd(g->b, live, img_axis(g, ihn, s->div[0], im->H, &ih), "");
  ok = LLVMBuildAnd(g->b, ok, img_axis(g, iwn, s->div[1], im->W, &iw), "");
  LLVMValueRef off = LLVMBuildSelect(g->b, ok, add(g, cho, add(g, mul(g, ih, splat(g, im->W)), iw)), zero, "");
  LLVMTypeRef vt = LLVMVectorType(g->t, g->nr);
  LLVMValueRef v = LLVMGetUndef(vt);
  for (int r = 0; r < g->nr; r++) {
    LLVMValueRef lane = LLVMConstInt(g->c->t_i32, r, 0);
    LLVMValueRef x = load(g, g->t, elem(g, im->base, LLVMBuildExtractElement(g->b, off, lane, "")));
    v = LLVMBuildInsertElement(g->b, v, x, lane, "");
  }
  store(g, LLVMBuildSelect(g->b, ok, v, LLVMConstNull(vt), ""), dst);
}

/* Positions n0 .. n0+NR of a panel as <NR x i64> parts of ih*div and
 * iw*div, and which lanes are below `valid`. */
static void position_lanes(Gen *g, const Img *im, LLVMValueRef n0, LLVMValueRef valid, LLVMValueRef *ph,
                           LLVMValueRef *pw, LLVMValueRef *live) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef n = add(g, splat(g, n0), iota(g, 0, g->nr)), PW = splat(g, im->PW);
  LLVMValueRef row = sdiv(g, n, PW), col = sub(g, n, mul(g, row, PW));
  *ph = sub(g, mul(g, row, like(g, row, s->step[0])), like(g, row, s->off[0]));
  *pw = sub(g, mul(g, col, like(g, col, s->step[1])), like(g, col, s->off[1]));
  *live = LLVMBuildICmp(g->b, LLVMIntSLT, iota(g, 0, g->nr), splat(g, valid), "");
}

/* With taps stepping by one image column (stride 1, no divisor), the
 * panel's positions on one output row (a segment) read contiguous image
 * elements: per k, a masked vector load per segment and vector, the mask
 * keeping the segment's lanes inside the image; segments merge by selects
 * in acc (an <L x T> per vector). */
static void pack_segments(Gen *g, const Img *im, LLVMValueRef dst, LLVMValueRef k0, LLVMValueRef kc,
                          LLVMValueRef n0, LLVMValueRef valid, LLVMValueRef *accp) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef one = k64(g, 1), row0 = sdiv(g, n0, im->PW), col0 = sub(g, n0, mul(g, row0, im->PW));
  LLVMValueRef nseg = add(g, sdiv(g, sub(g, add(g, col0, valid), one), im->PW), one);
  LLVMValueRef PW = splat32(g, im->PW), W = splat32(g, im->W), live = splat32(g, valid);
  Loop lk, ls;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kc), cho, ti, tj, ih;
  tap_parts(g, im, add(g, k0, k), &cho, &ti, &tj);
  for (int v = 0; v < g->nv; v++)
    LLVMBuildStore(g->b, LLVMConstNull(g->vt), accp[v]);
  LLVMValueRef seg = loop_open(g, &ls, k64(g, 0), nseg), row = add(g, row0, seg);
  LLVMValueRef shift = sub(g, n0, mul(g, row, im->PW));  /* lane 0's column, as if on this row */
  LLVMValueRef ihn = add(g, sub(g, mul(g, row, k64(g, s->step[0])), k64(g, s->off[0])), ti);
  LLVMValueRef row_ok = cg_splat(g->c, img_axis(g, ihn, s->div[0], im->H, &ih), g->lanes);
  LLVMValueRef iw0 = add(g, shift, sub(g, tj, k64(g, s->off[1])));
  LLVMValueRef src = elem(g, im->base, add(g, cho, add(g, mul(g, ih, im->W), iw0)));
  for (int v = 0; v < g->nv; v++) {
    LLVMValueRef r = iota32(g, v * g->lanes);
    LLVMValueRef on_row = ult(g, add(g, r, splat32(g, shift)), PW), in_w = ult(g, add(g, r, splat32(g, iw0)), W);
    LLVMValueRef mask = LLVMBuildAnd(g->b, LLVMBuildAnd(g->b, row_ok, on_row, ""), in_w, "");
    mask = LLVMBuildAnd(g->b, mask, LLVMBuildICmp(g->b, LLVMIntSLT, r, live, ""), "");
    LLVMValueRef x = load_c(g, elem(g, src, k64(g, v * g->lanes)), mask);
    LLVMValueRef acc = LLVMBuildLoad2(g->b, g->vt, accp[v], "");
    LLVMBuildStore(g->b, LLVMBuildSelect(g->b, mask, x, acc, ""), accp[v]);
  }
  loop_close(g, &ls, one);
  for (int v = 0; v < g->nv; v++)
    store(g, LLVMBuildLoad2(g->b, g->vt, accp[v], ""), elem(g, dst, add(g, mul(g, k, k64(g, g->nr)), k64(g, v * g->lanes))));
  loop_close(g, &lk, one);
}

/* The common case of pack_segments: every vector of L lanes of a full
 * panel on one output row (rows as wide as a multiple of L, or wider than
 * the panel). Per k, a vector is a plain load where its row and columns
 * lie inside the image, a masked load (the padding) otherwise. */
static void pack_vector_rows(Gen *g, const Img *im, LLVMValueRef dst, LLVMValueRef k0, LLVMValueRef kc,
                             LLVMValueRef n0, LLVMValueRef *rowv, LLVMValueRef *colv) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef one = k64(g, 1), kL = k64(g, g->lanes), W = splat32(g, im->W), src[8], ok[8];
  Loop lk;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kc), cho, ti, tj, ih;
  tap_parts(g, im, add(g, k0, k), &cho, &ti, &tj);
  LLVMValueRef inside = LLVMConstInt(g->c->t_i1, 1, 0), iw0[8];
  for (int v = 0; v < g->nv; v++) {
    LLVMValueRef ihn = add(g, sub(g, mul(g, rowv[v], k64(g, s->step[0])), k64(g, s->off[0])), ti);
    ok[v] = img_axis(g, ihn, s->div[0], im->H, &ih);
    iw0[v] = add(g, colv[v], sub(g, tj, k64(g, s->off[1])));
    src[v] = elem(g, im->base, add(g, cho, add(g, mul(g, ih, im->W), iw0[v])));
    LLVMValueRef cols_in = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, iw0[v], k64(g, 0), ""),
                                        LLVMBuildICmp(g->b, LLVMIntSLE, add(g, iw0[v], kL), im->W, ""), "");
    inside = LLVMBuildAnd(g->b, inside, LLVMBuildAnd(g->b, ok[v], cols_in, ""), "");
  }
  LLVMValueRef to = elem(g, dst, mul(g, k, k64(g, g->nr)));
  If plain, edge;
  if_open(g, &plain, inside);
  for (int v = 0; v < g->nv; v++)
    store(g, load(g, g->vt, src[v]), elem(g, to, k64(g, v * g->lanes)));
  if_close(g, &plain);
  if_open(g, &edge, LLVMBuildNot(g->b, inside, ""));
  for (int v = 0; v < g->nv; v++) {
    LLVMValueRef mask = LLVMBuildAnd(g->b, cg_splat(g->c, ok[v], g->lanes),
                                     ult(g, add(g, iota32(g, 0), splat32(g, iw0[v])), W), "");
    store(g, load_c(g, src[v], mask), elem(g, to, k64(g, v * g->lanes)));
  }
  if_close(g, &edge);
  loop_close(g, &lk, one);
}

/* Taps are op(B)'s rows, positions its columns (conv2d, conv2d_bwd_data). */
static void pack_taps_on_k(Gen *g, const Img *im, LLVMValueRef dst, LLVMValueRef k0, LLVMValueRef kc,
                           LLVMValueRef n0, LLVMValueRef valid, LLVMValueRef *accp) {
  const CgIm2col *s = g->s->im2col;
  if (s->step[1] == 1 && s->div[1] == 1) {
    LLVMValueRef rowv[8], colv[8], simple = eq(g, valid, k64(g, g->nr));
    for (int v = 0; v < g->nv; v++) {
      LLVMValueRef n = add(g, n0, k64(g, v * g->lanes));
      rowv[v] = sdiv(g, n, im->PW);
      colv[v] = sub(g, n, mul(g, rowv[v], im->PW));
      simple = LLVMBuildAnd(g->b, simple, LLVMBuildICmp(g->b, LLVMIntSLE, add(g, colv[v], k64(g, g->lanes)), im->PW, ""), "");
    }
    If fast, slow;
    if_open(g, &fast, simple);
    pack_vector_rows(g, im, dst, k0, kc, n0, rowv, colv);
    if_close(g, &fast);
    if_open(g, &slow, LLVMBuildNot(g->b, simple, ""));
    pack_segments(g, im, dst, k0, kc, n0, valid, accp);
    if_close(g, &slow);
    return;
  }
  LLVMValueRef ph, pw, live, cho, ti, tj;
  position_lanes(g, im, n0, valid, &ph, &pw, &live);
  Loop lk;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kc);
  tap_parts(g, im, add(g, k0, k), &cho, &ti, &tj);
  gather_lanes(g, im, splat(g, cho), add(g, ph, splat(g, ti)), add(g, pw, splat(g, tj)), live,
               elem(g, dst, mul(g, k, k64(g, g->nr))));
  loop_close(g, &lk, k64(g, 1));
}

/* L positions on one output row for every tap lane, taps stepping by one
 * image column: lane r's L elements are contiguous in the image, loaded
 * as a masked vector, and each group of L lanes is transposed in
 * registers into L k-rows of the panel. */
static void pack_position_block(Gen *g, const Img *im, LLVMValueRef dst, LLVMValueRef cho, LLVMValueRef ihn,
                                LLVMValueRef iwn, LLVMValueRef live) {
  LLVMValueRef W = splat32(g, im->W), x[64];
  for (int grp = 0; grp < g->nv; grp++) {
    for (int l = 0; l < g->lanes; l++) {
      LLVMValueRef lane = LLVMConstInt(g->c->t_i32, grp * g->lanes + l, 0);
      LLVMValueRef ih = LLVMBuildExtractElement(g->b, ihn, lane, ""), iw = LLVMBuildExtractElement(g->b, iwn, lane, "");
      LLVMValueRef ok = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntULT, ih, im->H, ""),
                                     LLVMBuildExtractElement(g->b, live, lane, ""), "");
      LLVMValueRef in_w = ult(g, add(g, splat32(g, iw), iota32(g, 0)), W);
      LLVMValueRef mask = LLVMBuildAnd(g->b, cg_splat(g->c, ok, g->lanes), in_w, "");
      LLVMValueRef at = add(g, LLVMBuildExtractElement(g->b, cho, lane, ""), add(g, mul(g, ih, im->W), iw));
      x[l] = load_c(g, elem(g, im->base, at), mask);
    }
    transpose(g, x);
    for (int l = 0; l < g->lanes; l++)
      store(g, x[l], elem(g, dst, k64(g, l * g->nr + grp * g->lanes)));
  }
}

/* Taps are op(B)'s columns, positions its rows (conv2d_bwd_filter): the
 * position (row, col) steps along k, carried rather than divided out; L
 * at a time where they lie on one row and the taps step by one column. */
static void pack_taps_on_n(Gen *g, const Img *im, LLVMValueRef dst, LLVMValueRef k0, LLVMValueRef kc,
                           LLVMValueRef n0, LLVMValueRef valid, LLVMValueRef rowp, LLVMValueRef colp) {
  const CgIm2col *s = g->s->im2col;
  LLVMValueRef t = add(g, splat(g, n0), iota(g, 0, g->nr)), cho, ti, tj, one = k64(g, 1);
  tap_parts(g, im, t, &cho, &ti, &tj);
  LLVMValueRef live = LLVMBuildICmp(g->b, LLVMIntSLT, iota(g, 0, g->nr), splat(g, valid), "");
  LLVMValueRef row0 = sdiv(g, k0, im->PW);
  LLVMBuildStore(g->b, row0, rowp);
  LLVMBuildStore(g->b, sub(g, k0, mul(g, row0, im->PW)), colp);
  Loop lk;
  LLVMValueRef k = loop_open(g, &lk, k64(g, 0), kc), kL = k64(g, g->lanes);
  LLVMValueRef row = LLVMBuildLoad2(g->b, g->c->t_i64, rowp, ""), col = LLVMBuildLoad2(g->b, g->c->t_i64, colp, "");
  LLVMValueRef ph = sub(g, mul(g, row, k64(g, s->step[0])), k64(g, s->off[0]));
  LLVMValueRef pw = sub(g, mul(g, col, k64(g, s->step[1])), k64(g, s->off[1]));
  LLVMValueRef ihn = add(g, ti, splat(g, ph)), iwn = add(g, tj, splat(g, pw)), to = elem(g, dst, mul(g, k, k64(g, g->nr)));
  LLVMValueRef block = LLVMConstInt(g->c->t_i1, 0, 0);
  if (s->step[1] == 1 && s->div[0] == 1 && s->div[1] == 1)
    block = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSLE, add(g, col, kL), im->PW, ""),
                         LLVMBuildICmp(g->b, LLVMIntSLE, add(g, k, kL), kc, ""), "");
  LLVMValueRef step = LLVMBuildSelect(g->b, block, kL, one, "");
  If fast, slow;
  if_open(g, &fast, block);
  pack_position_block(g, im, to, cho, ihn, iwn, live);
  if_close(g, &fast);
  if_open(g, &slow, LLVMBuildNot(g->b, block, ""));
  gather_lanes(g, im, cho, ihn, iwn, live, to);
  if_close(g, &slow);
  LLVMValueRef next = add(g, col, step), wrap = eq(g, next, im->PW);
  LLVMBuildStore(g->b, LLVMBuildSelect(g->b, wrap, add(g, row, one), row, ""), rowp);
  LLVMBuildStore(g->b, LLVMBuildSelect(g->b, wrap, k64(g, 0), next, ""), colp);
  loop_close(g, &lk, step);
}

/* pack_b(dst, image, k0, n0, nc, kc, H, W, PW): op(B)[k0 .. k0+kc, n0 .. n0+nc)
 * into NR-column panels at dst as emit_pack lays them out, zero past nc. */
static LLVMValueRef emit_pack_im2col(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_ptr, c->t_i64, c->t_i64, c->t_i64, c->t_i64, c->t_i64, c->t_i64, c->t_i64};
  LLVMValueRef fn = new_part(g, "pack_b", c->t_void, p, 9);
  set_noalias(g, fn, 0);
  set_noalias(g, fn, 1);
  LLVMValueRef rowp = LLVMBuildAlloca(g->b, c->t_i64, "row"), colp = LLVMBuildAlloca(g->b, c->t_i64, "col");
  LLVMValueRef accp[8];
  for (int v = 0; v < g->nv; v++)
    accp[v] = LLVMBuildAlloca(g->b, g->vt, "acc");
  Img im = {.base = LLVMGetParam(fn, 1), .H = LLVMGetParam(fn, 6), .W = LLVMGetParam(fn, 7), .PW = LLVMGetParam(fn, 8)};
  im.HW = mul(g, im.H, im.W);
  LLVMValueRef dst = LLVMGetParam(fn, 0), k0 = LLVMGetParam(fn, 2), n0 = LLVMGetParam(fn, 3);
  LLVMValueRef nc = LLVMGetParam(fn, 4), kc = LLVMGetParam(fn, 5), kNR = k64(g, g->nr);
  Loop lp;
  LLVMValueRef pp = loop_open(g, &lp, k64(g, 0), cdiv(g, nc, kNR));
  LLVMValueRef to = elem(g, dst, mul(g, pp, mul(g, kc, kNR))), first = add(g, n0, mul(g, pp, kNR));
  LLVMValueRef valid = emin(g, kNR, sub(g, nc, mul(g, pp, kNR)));
  if (g->s->im2col->taps_on_n)
    pack_taps_on_n(g, &im, to, k0, kc, first, valid, rowp, colp);
  else
    pack_taps_on_k(g, &im, to, k0, kc, first, valid, accp);
  loop_close(g, &lp, k64(g, 1));
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* ---- tiles ---- */

/* Strides of op(A)(m, k) and op(B)(k, n) along the packed panel's rows
 * (m for A, n for B) and along k. */
static void a_strides(Gen *g, LLVMValueRef lda, LLVMValueRef *rs, LLVMValueRef *cs) {
  *rs = g->s->trans_a ? k64(g, 1) : lda;
  *cs = g->s->trans_a ? lda : k64(g, 1);
}

static void b_strides(Gen *g, LLVMValueRef ldb, LLVMValueRef *rs, LLVMValueRef *cs) {
  *rs = g->s->trans_b ? ldb : k64(g, 1);
  *cs = g->s->trans_b ? k64(g, 1) : ldb;
}

/* Packs op(B)[k0 .. k0+kc, n0 .. n0+nc) into NR-column panels at dst. */
static void pack_b_block(Gen *g, LLVMValueRef ctx, LLVMValueRef Bb, LLVMValueRef dst, LLVMValueRef k0,
                         LLVMValueRef kc, LLVMValueRef n0, LLVMValueRef nc) {
  if (g->s->im2col) {
    LLVMValueRef args[] = {dst, Bb, k0, n0, nc, kc, get(g, ctx, F_IH), get(g, ctx, F_IW), get(g, ctx, F_PW)};
    call(g, g->pack_b, args, 9);
    return;
  }
  LLVMValueRef rs, cs;
  b_strides(g, get(g, ctx, F_LDB), &rs, &cs);
  LLVMValueRef args[] = {dst, elem(g, Bb, add(g, mul(g, n0, rs), mul(g, k0, cs))), rs, cs, nc, kc};
  call(g, g->pack_b, args, 6);
}

/* Where one tile is: its batch item, first row and column, sizes, the
 * operands of its batch item, and its first `tall` rows, which run in
 * MR-row micro-tiles (the rest in MR - 1: row_split). */
typedef struct Tile {
  LLVMValueRef ctx, b, m0, n0, mc, nc, A, B, C, M, N, K, tall;
} Tile;

/* Tile i of n along a dimension of `panels` panels of R (size `dim`): panels
 * [i*panels/n, (i+1)*panels/n), so tiles differ by one panel at most. */
static void tile_span(Gen *g, LLVMValueRef i, LLVMValueRef n, LLVMValueRef panels, int R, LLVMValueRef dim,
                      LLVMValueRef *start, LLVMValueRef *size) {
  LLVMValueRef kR = k64(g, R);
  LLVMValueRef p0 = sdiv(g, mul(g, i, panels), n), p1 = sdiv(g, mul(g, add(g, i, k64(g, 1)), panels), n);
  *start = mul(g, p0, kR);
  *size = sub(g, emin(g, mul(g, p1, kR), dim), *start);
}

/* Balanced micro-tiles: a tile's mc rows run as ceil(mc / MR) micro-tiles
 * of MR or MR - 1 rows (32: 6, 6, 5, 5, 5, 5), as conv_blocked.c balances
 * its row tiles, rather than as full ones and a remainder (32: five 6s and
 * a 2, which takes a 6's time on zero-padded rows: the LSTM's M = 32 lost
 * 11% to it). Returns the rows of the MR-row micro-tiles, which come
 * first. Where mc is too small for that (mc < (MR - 1) * ceil(mc / MR):
 * 1-4, 7-9, 13-14, 19, with MR = 6) all run as MR - 1, the last partial
 * (8: 5, 3). Only the last tile of the rows has mc below a multiple of
 * MR, and which micro-tile holds a row changes none of its sums. */
static LLVMValueRef row_split(Gen *g, LLVMValueRef mc) {
  LLVMValueRef panels = cdiv(g, mc, k64(g, g->mr));
  LLVMValueRef tall_panels = emax(g, sub(g, mc, mul(g, panels, k64(g, g->mr - 1))), k64(g, 0));
  return mul(g, tall_panels, k64(g, g->mr));
}

static Tile tile_at(Gen *g, LLVMValueRef ctx, LLVMValueRef t) {
  Tile T = {.ctx = ctx, .M = get(g, ctx, F_M), .N = get(g, ctx, F_N), .K = get(g, ctx, F_K)};
  LLVMValueRef mt = get(g, ctx, F_MTILES), nt = get(g, ctx, F_NTILES), per_b = mul(g, mt, nt);
  LLVMValueRef r = srem(g, t, per_b);
  T.b = add(g, get(g, ctx, F_B0), sdiv(g, t, per_b));
  tile_span(g, srem(g, r, mt), mt, get(g, ctx, F_MPANELS), g->mr, T.M, &T.m0, &T.mc);
  tile_span(g, sdiv(g, r, mt), nt, get(g, ctx, F_NPANELS), g->nr, T.N, &T.n0, &T.nc);
  /* A read in place runs in MR-row micro-tiles only (micro_short reads it packed) */
  T.tall = LLVMBuildSelect(g->b, eq(g, get(g, ctx, F_DIRECT_LDA), k64(g, 0)), row_split(g, T.mc), T.mc, "");
  T.A = elem(g, get(g, ctx, F_A), mul(g, T.b, get(g, ctx, F_SA)));
  T.B = elem(g, get(g, ctx, F_B), mul(g, T.b, get(g, ctx, F_SB)));
  T.C = elem(g, get(g, ctx, F_C), mul(g, T.b, get(g, ctx, F_SC)));
  return T;
}

/* Packs the tile's rows r0 .. r1 of op(A)[:, k0 .. k0+kc) into MR-row
 * panels at dst. */
static void pack_a_rows(Gen *g, Tile *T, LLVMValueRef dst, LLVMValueRef r0, LLVMValueRef r1,
                        LLVMValueRef k0, LLVMValueRef kc) {
  LLVMValueRef rs, cs;
  a_strides(g, get(g, T->ctx, F_LDA), &rs, &cs);
  LLVMValueRef src = elem(g, T->A, add(g, mul(g, add(g, T->m0, r0), rs), mul(g, k0, cs)));
  LLVMValueRef args[] = {dst, src, rs, cs, sub(g, r1, r0), kc};
  call(g, g->pack_a, args, 6);
}

/* The short micro-tiles' packed A: after the tall ones' kc x tall. */
static LLVMValueRef short_panels(Gen *g, Tile *T, LLVMValueRef abuf, LLVMValueRef kc) {
  return elem(g, abuf, mul(g, T->tall, kc));
}

/* The tile's A block: its tall rows in MR-row panels, then each short
 * micro-tile's MR - 1 rows in an MR-row panel of its own (a zero row
 * last), so that one packer serves both and the compile time of a second
 * is saved; packing a short panel goes row by row, a small part of the
 * few short micro-tiles' time. */
static void pack_a_block(Gen *g, Tile *T, LLVMValueRef abuf, LLVMValueRef k0, LLVMValueRef kc) {
  LLVMValueRef kS = k64(g, g->mr - 1), shorts = short_panels(g, T, abuf, kc);
  pack_a_rows(g, T, abuf, k64(g, 0), T->tall, k0, kc);
  Loop ls;
  LLVMValueRef j = loop_open(g, &ls, k64(g, 0), cdiv(g, sub(g, T->mc, T->tall), kS));
  LLVMValueRef r0 = add(g, T->tall, mul(g, j, kS));
  pack_a_rows(g, T, elem(g, shorts, mul(g, j, mul(g, kc, k64(g, g->mr)))), r0, emin(g, add(g, r0, kS), T->mc), k0, kc);
  loop_close(g, &ls, k64(g, 1));
}

/* One B panel's share of a K block, as the micro-kernel takes it. */
typedef struct Sliver {
  LLVMValueRef bp, n, nr, k0, kc, loadc, last;
} Sliver;

/* The micro-tiles of R rows over the tile's rows r0 .. r1 against one B
 * sliver, with `micro`; their packed A panels (kc x MR each) from apack. */
static void row_run(Gen *g, Tile *T, const Sliver *s, LLVMValueRef micro, int R, LLVMValueRef r0, LLVMValueRef r1,
                    LLVMValueRef apack) {
  LLVMValueRef kR = k64(g, R), lda = get(g, T->ctx, F_DIRECT_LDA), ldc = get(g, T->ctx, F_LDC);
  LLVMValueRef end = add(g, T->m0, r1);
  Loop li;
  LLVMValueRef ip = loop_open(g, &li, k64(g, 0), cdiv(g, sub(g, r1, r0), kR));
  LLVMValueRef m = add(g, add(g, T->m0, r0), mul(g, ip, kR));
  LLVMValueRef in_place = elem(g, T->A, add(g, mul(g, m, lda), s->k0));
  LLVMValueRef ap = LLVMBuildSelect(g->b, eq(g, lda, k64(g, 0)), elem(g, apack, mul(g, ip, mul(g, s->kc, k64(g, g->mr)))),
                                    in_place, "");
  LLVMValueRef args[MK_COUNT] = {
    [MK_AP] = ap, [MK_LDA] = lda, [MK_BP] = s->bp, [MK_KC] = s->kc,
    [MK_CP] = elem(g, T->C, add(g, mul(g, m, ldc), s->n)), [MK_LDC] = ldc,
    [MK_MR] = emin(g, kR, sub(g, end, m)), [MK_NR] = s->nr, [MK_LOADC] = s->loadc, [MK_LAST] = s->last,
    [MK_EPI] = get(g, T->ctx, F_EPI), [MK_B] = T->b, [MK_ROW] = m, [MK_COL] = s->n};
  call(g, micro, args, MK_COUNT);
  loop_close(g, &li, k64(g, 1));
}

/* The macro-kernel: every micro-tile of the tile for one K block, the tall
 * ones then the short; B panels outside, so each B sliver is reused from
 * L1 by all row panels. */
static void macro_kernel(Gen *g, Tile *T, LLVMValueRef abuf, LLVMValueRef bbase, LLVMValueRef k0,
                         LLVMValueRef kc, LLVMValueRef loadc, LLVMValueRef last) {
  LLVMValueRef kNR = k64(g, g->nr), shorts = short_panels(g, T, abuf, kc);
  Loop lj;
  LLVMValueRef jp = loop_open(g, &lj, k64(g, 0), cdiv(g, T->nc, kNR));
  Sliver s = {.n = add(g, T->n0, mul(g, jp, kNR)), .k0 = k0, .kc = kc, .loadc = loadc, .last = last};
  s.bp = elem(g, bbase, mul(g, jp, mul(g, kc, kNR)));
  s.nr = emin(g, kNR, sub(g, T->N, s.n));
  row_run(g, T, &s, g->micro, g->mr, k64(g, 0), T->tall, abuf);
  row_run(g, T, &s, g->micro_short, g->mr - 1, T->tall, T->mc, shorts);
  loop_close(g, &lj, k64(g, 1));
}

/* K block kb of the shared packing of B. */
static LLVMValueRef shared_block(Gen *g, LLVMValueRef ctx, LLVMValueRef kb) {
  return elem(g, get(g, ctx, F_PACKED), mul(g, kb, get(g, ctx, F_BSTRIDE)));
}

/* tile(ctx, t, slot): tile t of the region, K blocks KB0 .. KB1 in order
 * (all of them when B is private, one per call when shared): B's block
 * (packed here if private, else found in the shared packing), A's block,
 * the macro-kernel. */
static LLVMValueRef emit_tile(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_ptr};
  LLVMValueRef fn = new_part(g, "tile", c->t_void, p, 3);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), slot = LLVMGetParam(fn, 2);
  Tile T = tile_at(g, ctx, LLVMGetParam(fn, 1));
  LLVMValueRef priv = LLVMBuildICmp(g->b, LLVMIntNE, get(g, ctx, F_PRIVATE), k64(g, 0), "");
  LLVMValueRef abuf = slot, bbuf = byte(g, slot, k64(g, (int64_t)GEMM_MC * GEMM_KC * g->sz));
  LLVMValueRef one = k64(g, 1), kcb = get(g, ctx, F_KC), nkb = get(g, ctx, F_NKB);
  Loop lk;
  LLVMValueRef kb = loop_open(g, &lk, get(g, ctx, F_KB0), get(g, ctx, F_KB1));
  LLVMValueRef k0 = mul(g, kb, kcb), kc = emin(g, kcb, sub(g, T.K, k0));
  If fp;
  if_open(g, &fp, priv);
  pack_b_block(g, ctx, T.B, bbuf, k0, kc, T.n0, T.nc);
  if_close(g, &fp);
  LLVMValueRef shared = elem(g, shared_block(g, ctx, kb), mul(g, T.n0, kc));
  If fa;
  if_open(g, &fa, eq(g, get(g, ctx, F_DIRECT_LDA), k64(g, 0)));
  pack_a_block(g, &T, abuf, k0, kc);
  if_close(g, &fa);
  LLVMValueRef loadc = g->s->accumulate ? LLVMConstInt(c->t_i1, 1, 0) : LLVMBuildICmp(g->b, LLVMIntSGT, kb, k64(g, 0), "");
  macro_kernel(g, &T, abuf, LLVMBuildSelect(g->b, priv, bbuf, shared, ""), k0, kc, loadc, eq(g, kb, sub(g, nkb, one)));
  loop_close(g, &lk, one);
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* task(ctx, lo, hi): claims a free slot of work (a clear bit of the mask),
 * runs tiles lo .. hi in it, releases it. At most as many tasks run at once
 * as there are slots, so a clear bit always exists. */
static LLVMValueRef emit_task(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i64};
  LLVMValueRef fn = new_part(g, "task", c->t_void, p, 3);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), mask = get(g, ctx, F_MASK);
  LLVMBasicBlockRef retry = LLVMAppendBasicBlockInContext(c->ctx, fn, "claim");
  LLVMBasicBlockRef got = LLVMAppendBasicBlockInContext(c->ctx, fn, "claimed");
  LLVMBuildBr(g->b, retry);
  LLVMPositionBuilderAtEnd(g->b, retry);
  LLVMValueRef old = LLVMBuildLoad2(g->b, c->t_i64, mask, "");
  LLVMSetOrdering(old, LLVMAtomicOrderingMonotonic);
  LLVMSetAlignment(old, 8);
  LLVMValueRef zero_undef[] = {LLVMBuildNot(g->b, old, ""), LLVMConstInt(c->t_i1, 1, 0)};
  LLVMValueRef bit = cg_intrinsic(c, "llvm.cttz", &c->t_i64, 1, zero_undef, 2);
  LLVMValueRef onebit = LLVMBuildShl(g->b, k64(g, 1), bit, "");
  LLVMValueRef cx = LLVMBuildAtomicCmpXchg(g->b, mask, old, LLVMBuildOr(g->b, old, onebit, ""),
                                           LLVMAtomicOrderingAcquire, LLVMAtomicOrderingMonotonic, 0);
  LLVMBuildCondBr(g->b, LLVMBuildExtractValue(g->b, cx, 1, ""), got, retry);
  LLVMPositionBuilderAtEnd(g->b, got);
  LLVMValueRef slot = byte(g, get(g, ctx, F_SLOTS), mul(g, bit, get(g, ctx, F_SLOT_BYTES)));
  Loop l;
  LLVMValueRef t = loop_open(g, &l, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2));
  LLVMValueRef args[] = {ctx, t, slot};
  call(g, g->tile, args, 3);
  loop_close(g, &l, k64(g, 1));
  LLVMBuildAtomicRMW(g->b, LLVMAtomicRMWBinOpAnd, mask, LLVMBuildNot(g->b, onebit, ""),
                     LLVMAtomicOrderingRelease, 0);
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* bpack(ctx, lo, hi): NR panels lo .. hi of K blocks KB0 .. KB1 of
 * op(B_b0) into the shared packed region, panel p at p*kc*NR of its block.
 * Usually one K block per launch, as BLIS does: the block the tiles are
 * about to read is the one most recently packed (1 MiB at N = 1024, in
 * L3), where packing all of K first made every block come from memory and
 * cost 10-15% beyond N*K = 1M. A small B is the exception (plan). */
static LLVMValueRef emit_bpack(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i64};
  LLVMValueRef fn = new_part(g, "bpack", c->t_void, p, 3);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), K = get(g, ctx, F_K), N = get(g, ctx, F_N), kNR = k64(g, g->nr);
  LLVMValueRef Bb = elem(g, get(g, ctx, F_B), mul(g, get(g, ctx, F_B0), get(g, ctx, F_SB)));
  LLVMValueRef n0 = mul(g, LLVMGetParam(fn, 1), kNR), n1 = emin(g, mul(g, LLVMGetParam(fn, 2), kNR), N);
  Loop lk;
  LLVMValueRef kb = loop_open(g, &lk, get(g, ctx, F_KB0), get(g, ctx, F_KB1));
  LLVMValueRef kcb = get(g, ctx, F_KC), k0 = mul(g, kb, kcb), kc = emin(g, kcb, sub(g, K, k0));
  pack_b_block(g, ctx, Bb, elem(g, shared_block(g, ctx, kb), mul(g, n0, kc)), k0, kc, n0, sub(g, n1, n0));
  loop_close(g, &lk, k64(g, 1));
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* ---- the entry ---- */

enum { P_BATCH, P_M, P_N, P_K, P_A, P_LDA, P_SA, P_B, P_LDB, P_SB, P_C, P_LDC, P_SC, P_EPI, P_WORK,
       P_NTHREADS, P_COUNT, P_IH = P_COUNT, P_IW, P_PW };

static LLVMValueRef flt(Gen *g, LLVMValueRef a, double b) {
  return LLVMBuildFCmp(g->b, LLVMRealOLT, a, LLVMConstReal(g->c->t_f64, b), "");
}

static LLVMValueRef fmul(Gen *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(g->b, a, b, ""); }

/* n rounded up to even when above one, at most `panels`. */
static LLVMValueRef even_split(Gen *g, LLVMValueRef n, LLVMValueRef panels) {
  LLVMValueRef even = emin(g, rup(g, n, k64(g, 2)), panels);
  return LLVMBuildSelect(g->b, lt(g, k64(g, 1), n), even, n, "");
}

/* Splits one matrix into mt x nt tiles, about `want` of them. Splitting
 * rows makes more tiles read the same packed B, splitting columns repacks
 * A once more per tile: split the dimension whose cost is smaller (rows if
 * M >= N) first, down to MIN_ROWS or MIN_COLS, and the other only as far
 * as SECOND_SPLIT tiles in all. A split count above one is made even, so
 * that two (or four) threads get equal shares. Counts are of panels (MR
 * rows, NR columns) per tile, at most MC rows and NC columns. */
static void plan_grid(Gen *g, LLVMValueRef M, LLVMValueRef N, LLVMValueRef pm, LLVMValueRef pn, LLVMValueRef want,
                      LLVMValueRef *mt, LLVMValueRef *nt) {
  LLVMValueRef mt0 = cdiv(g, pm, k64(g, GEMM_MC / g->mr)), nt0 = cdiv(g, pn, k64(g, GEMM_NC / g->nr));
  LLVMValueRef min_rows = LLVMBuildSelect(g->b, lt(g, k64(g, GEMM_WIDE), N), k64(g, GEMM_MIN_ROWS_WIDE),
                                          k64(g, GEMM_MIN_ROWS), "");
  LLVMValueRef mmax = cdiv(g, M, min_rows), nmax = cdiv(g, N, k64(g, GEMM_MIN_COLS));
  LLVMValueRef want2 = emin(g, want, k64(g, GEMM_SECOND_SPLIT));
  LLVMValueRef mt_r = emax(g, mt0, emin(g, cdiv(g, want, nt0), mmax));
  LLVMValueRef nt_r = emax(g, nt0, emin(g, cdiv(g, want2, mt_r), nmax));
  LLVMValueRef nt_c = emax(g, nt0, emin(g, cdiv(g, want, mt0), nmax));
  LLVMValueRef mt_c = emax(g, mt0, emin(g, cdiv(g, want2, nt_c), mmax));
  LLVMValueRef rows_first = LLVMBuildICmp(g->b, LLVMIntSGE, M, N, "");
  *mt = even_split(g, LLVMBuildSelect(g->b, rows_first, mt_r, mt_c, ""), pm);
  *nt = even_split(g, LLVMBuildSelect(g->b, rows_first, nt_r, nt_c, ""), pn);
}

static LLVMValueRef f64c(Gen *g, double v) { return LLVMConstReal(g->c->t_f64, v); }

static LLVMValueRef to_i64(Gen *g, LLVMValueRef v) { return LLVMBuildFPToSI(g->b, v, g->c->t_i64, ""); }

static LLVMValueRef narrow(Gen *g, LLVMValueRef N) {
  return LLVMBuildICmp(g->b, LLVMIntSLE, N, k64(g, GEMM_NARROW_N), "narrow");
}

/* The layout of `work` (cg_gemm_work_bytes computes the same in C). The
 * shared packing holds one K block or, for a small B, all its K rows
 * (whole_rows), at most WHOLE_B elements; sized for the larger of both, so that the size grows with
 * M, N and K and work planned for a shape serves every smaller one. */
static void plan_work(Gen *g, LLVMValueRef fn, LLVMValueRef ctx, LLVMValueRef M, LLVMValueRef N,
                      LLVMValueRef whole_rows) {
  LLVMValueRef work = LLVMGetParam(fn, P_WORK), sz = k64(g, g->sz), c64 = k64(g, 64);
  LLVMValueRef npad = rup(g, N, k64(g, GEMM_NR_MAX)), K = get(g, ctx, F_K);
  LLVMValueRef packed = byte(g, work, k64(g, GEMM_HEADER));
  LLVMValueRef one_block = mul(g, npad, emin(g, K, k64(g, GEMM_KC)));
  LLVMValueRef whole = emin(g, mul(g, npad, whole_rows), k64(g, GEMM_WHOLE_B));
  LLVMValueRef shared_bytes = LLVMBuildSelect(g->b, lt(g, k64(g, GEMM_MIN_ROWS), M),
                                              rup(g, mul(g, emax(g, one_block, whole), sz), c64), k64(g, 0), "");
  LLVMValueRef ntmax = emin(g, npad, k64(g, GEMM_NC));
  LLVMValueRef slot_bytes = rup(g, mul(g, mul(g, add(g, k64(g, GEMM_MC), ntmax), k64(g, GEMM_KC)), sz), c64);
  set(g, ctx, F_PACKED, packed);
  set(g, ctx, F_MASK, work);
  set(g, ctx, F_SLOTS, byte(g, packed, shared_bytes));
  set(g, ctx, F_SLOT_BYTES, slot_bytes);
}

/* k_blocks in IR: K (>= 0) in nkb blocks of kc rows. */
static LLVMValueRef k_blocks_ir(Gen *g, LLVMValueRef K, LLVMValueRef *kc) {
  LLVMValueRef nkb = emax(g, cdiv(g, K, k64(g, GEMM_KC)), k64(g, 1));
  *kc = cdiv(g, K, nkb);
  return nkb;
}

/* A is read in place (not packed) when it is not transposed and N is
 * narrow: each element of a packed A would serve only N multiply-adds, so
 * packing it cost as much as the micro-kernel (lenet's 4096 x 16 x 150);
 * the few B panels keep the A rows in L1/L2 between their passes. */
static LLVMValueRef direct_lda(Gen *g, LLVMValueRef fn) {
  if (g->s->trans_a)
    return k64(g, 0);
  return LLVMBuildSelect(g->b, narrow(g, LLVMGetParam(fn, P_N)), LLVMGetParam(fn, P_LDA), k64(g, 0), "");
}

/* A prepacked B (spec->packed_b) is the shared packing, whole: every K
 * block in place, BSTRIDE its panels times kc apart (pack_b's layout,
 * ops.def), nothing left to pack and no tile packing privately. The
 * blocks and tiles are the ones plan chose for B packed here, so each C
 * element is summed in the same order, to the same bits. The launches
 * stay plan's too (F_KBS): where B would have been packed one K block at
 * a time, the tiles still pass over one block at a time, so that the
 * block they read stays in L2 (the MLP's 784 x 256 weights at batch 128
 * and one thread, 800 KiB, read whole by each row tile came from L3). */
static void use_packed_b(Gen *g, LLVMValueRef fn, LLVMValueRef ctx) {
  LLVMValueRef panels = get(g, ctx, F_NPANELS), kc = get(g, ctx, F_KC);
  set(g, ctx, F_PACKED, LLVMGetParam(fn, P_B));
  set(g, ctx, F_BSTRIDE, mul(g, mul(g, panels, k64(g, g->nr)), kc));
  set(g, ctx, F_PRIVATE, k64(g, 0));
}

/* The tile grid, the packing mode and the work layout, all from the sizes
 * (never the thread count, thr, except whether a small shared B is packed
 * whole, which changes no sum), stored into ctx. Out: the regions (one, or one
 * per batch item when each has its own B to pack and share), the tiles of a
 * region and their chunk grain, the B panels and their grain.
 *
 * B is packed once and shared when several tiles use it; a tile packs its
 * own B blocks ("private") when it is the only user, or when a batch of
 * small matrices with distinct B runs as one region of per-matrix tasks. */
static void plan(Gen *g, LLVMValueRef fn, LLVMValueRef ctx, LLVMValueRef thr, LLVMValueRef *nregions,
                 LLVMValueRef *ntiles, LLVMValueRef *grain, LLVMValueRef *bpanels, LLVMValueRef *bgrain) {
  LLVMValueRef batch = LLVMGetParam(fn, P_BATCH), M = LLVMGetParam(fn, P_M), N = LLVMGetParam(fn, P_N);
  LLVMValueRef K = emax(g, LLVMGetParam(fn, P_K), k64(g, 0)), one = k64(g, 1), K1 = emax(g, K, one);
  LLVMValueRef flops = fmul(g, fmul(g, to_f64(g, M), to_f64(g, N)), fmul(g, to_f64(g, K1), f64c(g, 2)));
  LLVMValueRef sb0 = eq(g, LLVMGetParam(fn, P_SB), k64(g, 0));
  LLVMValueRef distinct = LLVMBuildAnd(g->b, lt(g, one, batch), LLVMBuildNot(g->b, sb0, ""), "");
  LLVMValueRef big = LLVMBuildNot(g->b, flt(g, flops, GEMM_PRIVATE_FLOPS), "");
  LLVMValueRef per_b = LLVMBuildAnd(g->b, distinct, big, "");    /* matrices planned one by one */
  LLVMValueRef plan_b = LLVMBuildSelect(g->b, per_b, one, batch, "");
  LLVMValueRef want = to_i64(g, LLVMBuildFDiv(g->b, fmul(g, flops, to_f64(g, plan_b)), f64c(g, GEMM_TILE_FLOPS), ""));
  want = cdiv(g, emin(g, emax(g, want, one), k64(g, GEMM_MAX_TILES)), plan_b);
  LLVMValueRef mt, nt, pm = cdiv(g, M, k64(g, g->mr)), pn = cdiv(g, N, k64(g, g->nr));
  plan_grid(g, M, N, pm, pn, want, &mt, &nt);
  /* mt > 1 needs M > MIN_ROWS, the condition of the shared region in work */
  LLVMValueRef priv = LLVMBuildOr(g->b, eq(g, mt, one), LLVMBuildAnd(g->b, distinct, LLVMBuildNot(g->b, big, ""), ""), "");
  LLVMValueRef regions_per_b = LLVMBuildAnd(g->b, distinct, LLVMBuildNot(g->b, priv, ""), "");
  *nregions = LLVMBuildSelect(g->b, regions_per_b, batch, one, "");
  *ntiles = mul(g, LLVMBuildSelect(g->b, regions_per_b, one, batch, ""), mul(g, mt, nt));
  LLVMValueRef rows = mul(g, cdiv(g, pm, mt), k64(g, g->mr)), cols = mul(g, cdiv(g, pn, nt), k64(g, g->nr));
  LLVMValueRef tile_flops = fmul(g, fmul(g, to_f64(g, rows), to_f64(g, cols)), fmul(g, to_f64(g, K1), f64c(g, 2)));
  *grain = emax(g, to_i64(g, LLVMBuildFDiv(g->b, f64c(g, GEMM_TILE_FLOPS), tile_flops, "")), one);
  *bpanels = pn;
  *bgrain = emax(g, sdiv(g, k64(g, GEMM_PACK_GRAIN), mul(g, K1, k64(g, g->nr))), one);

  static const int args[][2] = {{F_A, P_A}, {F_LDA, P_LDA}, {F_SA, P_SA}, {F_B, P_B}, {F_LDB, P_LDB},
                                {F_SB, P_SB}, {F_C, P_C}, {F_LDC, P_LDC}, {F_SC, P_SC}, {F_EPI, P_EPI},
                                {F_M, P_M}, {F_N, P_N}};
  for (size_t i = 0; i < sizeof args / sizeof *args; i++)
    set(g, ctx, args[i][0], LLVMGetParam(fn, args[i][1]));
  for (int i = 0; i < 3; i++)
    set(g, ctx, F_IH + i, g->s->im2col ? LLVMGetParam(fn, P_IH + i) : k64(g, 0));
  LLVMValueRef kcb, nkb = k_blocks_ir(g, K, &kcb);
  set(g, ctx, F_K, K);
  set(g, ctx, F_KC, kcb);
  set(g, ctx, F_NKB, nkb);
  set(g, ctx, F_MTILES, mt);
  set(g, ctx, F_NTILES, nt);
  set(g, ctx, F_MPANELS, pm);
  set(g, ctx, F_NPANELS, pn);
  set(g, ctx, F_PRIVATE, LLVMBuildZExt(g->b, priv, g->c->t_i64, ""));
  set(g, ctx, F_DIRECT_LDA, direct_lda(g, fn));
  /* A small B is packed whole before the tiles run, which then take all
   * K blocks in turn: one launch of the tiles rather than one per K block
   * (each a wake-up and a barrier of the threads), and the tiles' C rows
   * stay in cache from one block to the next, where a pass of all the
   * tiles per block brought C from memory nkb times (32768 x 32 x 288).
   * At one thread there is no barrier to save, and a B larger than L2
   * read by every row tile from L3 made 128 x 256 x 784 15% slower than
   * a block packed just before its use; with more threads that cost
   * stays where a K block's work dwarfs a barrier (WHOLE_FLOPS: 512^3). */
  LLVMValueRef npad = rup(g, N, k64(g, GEMM_NR_MAX)), whole_rows = mul(g, nkb, kcb);
  LLVMValueRef block_flops = fmul(g, fmul(g, to_f64(g, M), to_f64(g, N)), fmul(g, to_f64(g, kcb), f64c(g, 2)));
  LLVMValueRef many = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, thr, LLVMConstInt(g->c->t_i32, 1, 0), ""),
                                   flt(g, block_flops, GEMM_WHOLE_FLOPS), "");
  LLVMValueRef whole_max = LLVMBuildSelect(g->b, many, k64(g, GEMM_WHOLE_B), k64(g, GEMM_WHOLE_B_ONE), "");
  LLVMValueRef whole = LLVMBuildICmp(g->b, LLVMIntSLE, mul(g, npad, whole_rows), whole_max, "");
  set(g, ctx, F_BSTRIDE, LLVMBuildSelect(g->b, whole, mul(g, npad, kcb), k64(g, 0), ""));
  set(g, ctx, F_KBS, LLVMBuildSelect(g->b, LLVMBuildOr(g->b, priv, whole, ""), nkb, one, ""));
  plan_work(g, fn, ctx, M, N, whole_rows);
  if (g->s->packed_b)
    use_packed_b(g, fn, ctx);
}

static void parallel_for(Gen *g, LLVMValueRef task, LLVMValueRef ctx, LLVMValueRef n, LLVMValueRef grain,
                         LLVMValueRef nthreads) {
  LLVMValueRef pf = cg_declare_rt(g->c, "rt_parallel_for");
  LLVMValueRef args[] = {task, ctx, n, grain, nthreads};
  call(g, pf, args, 5);
}

/* Returns at once when batch, M or N is empty (K == 0 still writes C). */
static void return_if_empty(Gen *g, LLVMValueRef fn) {
  LLVMValueRef zero = k64(g, 0), empty = LLVMConstInt(g->c->t_i1, 0, 0);
  int dims[] = {P_BATCH, P_M, P_N};
  for (int i = 0; i < 3; i++)
    empty = LLVMBuildOr(g->b, empty, LLVMBuildICmp(g->b, LLVMIntSLE, LLVMGetParam(fn, dims[i]), zero, ""), "");
  LLVMBasicBlockRef quit = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "quit");
  LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(g->c->ctx, fn, "run");
  LLVMBuildCondBr(g->b, empty, quit, run);
  LLVMPositionBuilderAtEnd(g->b, quit);
  LLVMBuildRetVoid(g->b);
  LLVMPositionBuilderAtEnd(g->b, run);
}

/* The threads to ask for: nthreads, or rt_default_threads() if <= 0, at
 * most the slots (as cg_gemm_work_bytes counts them). */
static LLVMValueRef thread_count(Gen *g, LLVMValueRef nthreads) {
  CgCtx *c = g->c;
  LLVMValueRef deflt = call(g, cg_declare_rt(c, "rt_default_threads"), NULL, 0);
  LLVMValueRef given = LLVMBuildICmp(g->b, LLVMIntSGT, nthreads, LLVMConstInt(c->t_i32, 0, 0), "");
  LLVMValueRef thr = LLVMBuildSExt(g->b, LLVMBuildSelect(g->b, given, nthreads, deflt, ""), c->t_i64, "");
  return LLVMBuildTrunc(g->b, emin(g, emax(g, thr, k64(g, 1)), k64(g, GEMM_MAX_SLOTS)), c->t_i32, "threads");
}

/* The entry: plan, then per region pack B (if shared) and run the tiles. */
static LLVMValueRef emit_entry(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef i64 = c->t_i64, ptr = c->t_ptr;
  LLVMTypeRef p[P_COUNT + 3] = {i64, i64, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, ptr,
                                c->t_i32, i64, i64, i64};
  int np = g->s->im2col ? P_COUNT + 3 : P_COUNT;
  LLVMValueRef fn = LLVMAddFunction(c->mod, g->name, LLVMFunctionType(c->t_void, p, np, 0));
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef ctx = LLVMBuildAlloca(g->b, g->ctx_t, "ctx"), zero = k64(g, 0);
  return_if_empty(g, fn);
  LLVMValueRef thr = thread_count(g, LLVMGetParam(fn, P_NTHREADS));
  LLVMValueRef nregions, ntiles, grain, bpanels, bgrain;
  plan(g, fn, ctx, thr, &nregions, &ntiles, &grain, &bpanels, &bgrain);
  LLVMValueRef priv = LLVMBuildICmp(g->b, LLVMIntNE, get(g, ctx, F_PRIVATE), zero, "");

  /* private: one launch of the tiles for all K blocks; shared: per K
   * block, pack it (unless prepacked), then run the tiles on it; shared
   * whole (a small B): pack every K block in one launch, then one launch
   * of the tiles */
  LLVMValueRef one = k64(g, 1), kbs = get(g, ctx, F_KBS), nlaunch = sdiv(g, get(g, ctx, F_NKB), kbs);
  Loop lr, lk;
  LLVMValueRef r = loop_open(g, &lr, zero, nregions);
  set(g, ctx, F_B0, r);
  LLVMValueRef kb = loop_open(g, &lk, zero, nlaunch);
  set(g, ctx, F_KB0, mul(g, kb, kbs));
  set(g, ctx, F_KB1, mul(g, add(g, kb, one), kbs));
  If pack;
  if_open(g, &pack, LLVMBuildNot(g->b, priv, ""));
  if (!g->s->packed_b)
    parallel_for(g, g->bpack, ctx, bpanels, bgrain, thr);
  if_close(g, &pack);
  LLVMBuildStore(g->b, zero, get(g, ctx, F_MASK));
  parallel_for(g, g->task, ctx, ntiles, grain, thr);
  loop_close(g, &lk, one);
  loop_close(g, &lr, one);
  LLVMBuildRetVoid(g->b);
  return fn;
}

/* The element type, vectors and micro-tile of spec s. c->b becomes a
 * builder of our own, so the caller's insertion point is left as it was
 * (gen_done restores it); it is c->b meanwhile because the epilogue and
 * cg_* helpers use it. */
static Gen gen_start(CgCtx *c, const CgGemmSpec *s, const char *name) {
  Gen g = {.c = c, .b = LLVMCreateBuilderInContext(c->ctx), .s = s, .name = name, .caller = c->b};
  c->b = g.b;
  g.t = s->dt == RT_F32 ? c->t_f32 : c->t_f64;
  g.sz = (int)rt_dtype_size(s->dt);
  g.lanes = cg_lanes(c, g.sz);
  if (g.lanes < 1)
    g.lanes = 1;
  g.vt = LLVMVectorType(g.t, g.lanes);
  g.mr = GEMM_MR;
  g.nv = 2;
  g.nr = g.nv * g.lanes;
  assert(g.nr == panel_width(s->dt, c->vbits / 32));
  assert(g.nr <= GEMM_NR_MAX && GEMM_NR_MAX % g.nr == 0 && GEMM_MC % GEMM_MR == 0);
  return g;
}

static void gen_done(Gen *g) {
  LLVMDisposeBuilder(g->b);
  g->c->b = g->caller;
}

/* pack(w, ldw, K, N, panels): op(w)'s K blocks one after the other, each
 * by the GEMM's own pack_b, at pack_b's offsets (ops.def). The rows past
 * a short last block are left as they are: no GEMM reads them. */
static LLVMValueRef emit_pack_entry(Gen *g) {
  CgCtx *c = g->c;
  LLVMTypeRef p[] = {c->t_ptr, c->t_i64, c->t_i64, c->t_i64, c->t_ptr};
  LLVMValueRef fn = LLVMAddFunction(c->mod, g->name, LLVMFunctionType(c->t_void, p, 5, 0));
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMValueRef w = LLVMGetParam(fn, 0), K = LLVMGetParam(fn, 2), N = LLVMGetParam(fn, 3), kc, rs, cs;
  LLVMValueRef nkb = k_blocks_ir(g, K, &kc), block = mul(g, rup(g, N, k64(g, g->nr)), kc);
  b_strides(g, LLVMGetParam(fn, 1), &rs, &cs);
  Loop lk;
  LLVMValueRef kb = loop_open(g, &lk, k64(g, 0), nkb), k0 = mul(g, kb, kc);
  LLVMValueRef args[] = {elem(g, LLVMGetParam(fn, 4), mul(g, kb, block)), elem(g, w, mul(g, k0, cs)), rs, cs, N,
                         emin(g, kc, sub(g, K, k0))};
  call(g, g->pack_b, args, 6);
  loop_close(g, &lk, k64(g, 1));
  LLVMBuildRetVoid(g->b);
  return fn;
}

LLVMValueRef cg_pack_b_define(CgCtx *c, RtDType dt, bool trans, const char *name) {
  LLVMValueRef existing = LLVMGetNamedFunction(c->mod, name);
  if (existing || (dt != RT_F32 && dt != RT_F64))
    return existing;
  CgGemmSpec s = {.dt = dt, .trans_b = trans};
  Gen g = gen_start(c, &s, name);
  g.pack_b = emit_pack(&g, "pack_b", g.nr, !trans);
  set_noinline(&g, g.pack_b);
  LLVMValueRef fn = emit_pack_entry(&g);
  set_cold(&g, fn);
  gen_done(&g);
  return fn;
}

LLVMValueRef cg_gemm_define(CgCtx *c, const CgGemmSpec *s, const char *name) {
  LLVMValueRef existing = LLVMGetNamedFunction(c->mod, name);
  if (existing)
    return existing;
  if (s->dt != RT_F32 && s->dt != RT_F64)
    return NULL;
  Gen g = gen_start(c, s, name);
  make_ctx_type(&g);
  g.micro = emit_micro(&g, "micro", g.mr, false);
  g.micro_short = emit_micro(&g, "micro_short", g.mr - 1, true);
  g.pack_a = emit_pack(&g, "pack_a", g.mr, s->trans_a);
  g.pack_b = s->im2col ? emit_pack_im2col(&g) : emit_pack(&g, "pack_b", g.nr, !s->trans_b);
  g.tile = emit_tile(&g);
  LLVMValueRef parts[] = {g.micro, g.micro_short, g.pack_a, g.pack_b, g.tile};
  for (int i = 0; i < 5; i++)
    set_noinline(&g, parts[i]);
  g.task = emit_task(&g);
  g.bpack = emit_bpack(&g);
  LLVMValueRef fn = emit_entry(&g);
  LLVMValueRef cold[] = {g.task, g.bpack, fn};
  for (int i = 0; i < 3; i++)
    set_cold(&g, cold[i]);
  gen_done(&g);
  return fn;
}

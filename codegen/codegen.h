/* codegen: lowering of a scheduled graph to LLVM IR, micro-kernels, vector
 * math, the JIT and ahead-of-time objects. Every file of codegen/ declares
 * what it exports here, under a banner naming it. */
#ifndef KILN_CODEGEN_H
#define KILN_CODEGEN_H

#include <stdbool.h>
#include <stdint.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include "ir/ir.h"
#include <llvm-c/Orc.h>
#include "runtime/rt.h"

/* One LLVM module being built, with the types every emitter needs. */
typedef struct CgCtx {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTargetMachineRef tm;   /* the target: CPU name and features */
  int vbits;                 /* widest vector register in bits: 256 AVX2, 512 AVX-512, 128 SSE/NEON */
  LLVMOrcThreadSafeContextRef tsc; /* non-NULL: a JIT module, ctx belongs to this thread-safe context */
  LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_f64, t_ptr;
  bool optimized;            /* cg_optimize has run: cg_jit_compile runs it no more */
  bool keep_equal_functions; /* cg_optimize leaves functions of equal code apart (tests compare) */
  double opt_seconds;        /* thread CPU cg_optimize took (LLVM's IR pipeline), for --stats */
  double codegen_seconds;    /* ... and cg_emit (LLVM's backend) */
} CgCtx;

/* Lanes of a vector register for an element of `bytes` bytes (8 floats on AVX2). */
static inline int cg_lanes(const CgCtx *c, int bytes) { return c->vbits / (8 * bytes); }

/* cgctx.c */
int cg_ctx_init(CgCtx *c, const char *module_name, const char *triple,
                const char *cpu, const char *features, char *err, int errlen);
int cg_ctx_init_jit(CgCtx *c, const char *module_name, char *err, int errlen); /* host target, module for cg_jit_add */
void cg_ctx_dispose(CgCtx *c);   /* the module too, unless handed to the JIT */
void cg_init_llvm(void);         /* targets and the fatal error handler, once per process */
int cg_host_lanes(int bytes);    /* lanes of the host's widest vectors for elements of `bytes` */
int cg_target_lanes(const char *triple, const char *features, int bytes);  /* ... of a target's */
/* A vector of type vt loaded from p, or v stored to p, aligned to its
 * element (align bytes); with a mask (else NULL) only its lanes, the
 * others reading 0 and left unwritten. */
LLVMValueRef cg_vload(CgCtx *c, LLVMTypeRef vt, LLVMValueRef p, unsigned align, LLVMValueRef mask);
void cg_vstore(CgCtx *c, LLVMValueRef v, LLVMValueRef p, unsigned align, LLVMValueRef mask);
LLVMValueRef cg_intrinsic(CgCtx *c, const char *name, LLVMTypeRef *overload,
                          int noverload, LLVMValueRef *args, int nargs);
LLVMValueRef cg_splat(CgCtx *c, LLVMValueRef scalar, int lanes);
/* Marks the loop whose latch branch is latch_br to stay as written: no
 * vectorizing, unrolling or peeling by LLVM (for loops whose body is
 * already vectorized and unrolled here, where copies only cost compile
 * time and code size). */
void cg_keep_loop_as_written(CgCtx *c, LLVMValueRef latch_br);
LLVMValueRef cg_declare_rt(CgCtx *c, const char *name); /* runtime entry, see runtime/rt.h */
typedef struct CgRtEntry {
  const char *name;
  const char *sig;           /* return type then parameters: v p i l f d */
  void *addr;
} CgRtEntry;
const CgRtEntry *cg_rt_entry(int i); /* the i-th runtime entry, NULL past the last */
LLVMTypeRef cg_sig_type(CgCtx *c, char code); /* a letter of CgRtEntry.sig as a type */

/* emit.c: kernel scaffolding shared by every lowering. A kernel is one
 * generated function `void kN(ptr regions, i64 batch, i32 nthreads)`; its
 * parallel part is a task `kN.task(ptr ctx, i64 lo, i64 hi)` run through
 * rt_parallel_for. */
struct Graph;
struct Node;
struct Value;
typedef struct CgKernel {
  CgCtx *c;
  const struct Graph *g;
  const struct Node *n;
  LLVMValueRef fn;          /* the function being emitted */
  LLVMValueRef regions;     /* ptr: array of REGION_COUNT base pointers */
  LLVMValueRef batch;       /* i64: the run-time batch */
  LLVMValueRef nthreads;    /* i32 */
  LLVMValueRef work;        /* ptr: this node's scratch workspace, or NULL */
  const struct Node *const *group; /* a fused group's nodes in schedule order, or NULL;
                                      n is among them: its contraction or reduction if any */
  int ngroup;
  LLVMValueRef grain_cost;  /* i64: the unit cost cg_grain was given, for the cg_parallel using its grain */
} CgKernel;

typedef struct CgLoop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv, step;
} CgLoop;

typedef void (*CgTaskBody)(CgKernel *k, LLVMValueRef lo, LLVMValueRef hi, void *user);

LLVMTypeRef cg_elem_type(CgCtx *c, RtDType dt);
LLVMValueRef cg_i64(CgCtx *c, int64_t v);
/* i64 arithmetic at the builder (sizes and indices); min and max signed */
static inline LLVMValueRef cg_iadd(CgCtx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(c->b, a, b, ""); }
static inline LLVMValueRef cg_isub(CgCtx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(c->b, a, b, ""); }
static inline LLVMValueRef cg_imul(CgCtx *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(c->b, a, b, ""); }
static inline LLVMValueRef cg_imin(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b, "");
}
static inline LLVMValueRef cg_imax(CgCtx *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, a, b, ""), a, b, "");
}
LLVMValueRef cg_size(CgKernel *k, Size s);                     /* a dim at run time */
LLVMValueRef cg_value_ptr(CgKernel *k, const struct Value *v);  /* where v lives */
LLVMValueRef cg_gep(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef cg_for(CgKernel *k, CgLoop *L, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef step);
void cg_endfor(CgKernel *k, CgLoop *L);
LLVMValueRef cg_new_kernel(CgKernel *k, const char *name);    /* defines kN, builder in its entry */
void cg_parallel(CgKernel *k, const char *name, LLVMValueRef nunits, LLVMValueRef grain,
                 CgTaskBody body, void *user);
LLVMValueRef cg_grain(CgKernel *k, LLVMValueRef unit_cost);    /* units per chunk from cost */
void cg_zero(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef at, LLVMValueRef n);
void cg_add_to(CgKernel *k, RtDType dt, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v);

/* expr.c */
void cg_expr_kernel(CgKernel *k, const char *task_name);   /* n alone, or its group's loop */
void cg_reduce_kernel(CgKernel *k, const char *task_name); /* n, its input computed by its group */
void cg_row_kernel(CgKernel *k, const char *task_name);

/* kernels.c */
int cg_matmul_kernel(CgKernel *k);
int cg_pack_b_kernel(CgKernel *k);   /* pack_b, through gemm.c's cg_pack_b_define */
int cg_conv_kernel(CgKernel *k, const char *task_name);
/* conv2d's geometry, shared by the forward (conv2d) and its gradients
 * (conv2d_bwd_data, conv2d_bwd_filter): x is the input side, y the output
 * side (y or dy), w the weight side (w or dw). */
typedef struct CgConvGeo {
  const Node *n;
  const Value *x, *w, *y;
  RtDType dt;
  Size N, C, H, W, O, OH, OW;
  int G, kh, kw;
  Size Kc, P;                /* taps of a group (C/G*kh*kw), positions (OH*OW) */
} CgConvGeo;
CgConvGeo cg_conv_geo(const Node *n);
bool cg_conv_pointwise(const Node *n);
/* Work of conv2d, conv2d_bwd_data or conv2d_bwd_filter: the GEMM's packing
 * space (and conv2d_bwd_data's reordered weights). */
int64_t cg_conv_work_bytes(const Graph *g, const Node *n, int threads);
void cg_conv_bwd_kernel(CgKernel *k, const char *task_name);
struct CgEpiPlan;
/* The name of a contraction variant, "kiln_KIND_DT_TT[_acc]GEO[_EPI]": one
 * function per distinct variant in a module (kernels.c). */
void cg_contract_name(char *buf, size_t size, const char *kind, RtDType dt, bool ta, bool tb,
                      bool acc, const char *geo, const struct CgEpiPlan *epi);
void cg_call_gemm(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc,
                  const struct CgEpiPlan *epi, LLVMValueRef *args);
void cg_pool_kernel(CgKernel *k, const char *task_name);
void cg_copy_kernel(CgKernel *k);

/* grad_kernels.c: templates of the pooling gradients (maxpool2d_bwd,
 * avgpool2d_bwd: per (image, channel) plane) and dropout (Philox4x32-10
 * inline, a block of 4 elements per lane). */
void cg_pool_bwd_kernel(CgKernel *k, const char *task_name);
/* Philox4x32-10 (runtime/philox.c's rt_philox4x32) on i32 or <w x i32>
 * words: out = bijection of ctr keyed by key, lane by lane. */
void cg_philox4x32(CgCtx *c, LLVMValueRef ctr[4], LLVMValueRef key[2], LLVMValueRef out[4]);
void cg_dropout_kernel(CgKernel *k, const char *task_name);

/* move.c: slice, unslice and concat as box copies */
void cg_move_kernel(CgKernel *k, const char *task_name);

/* scan.c: a scan node's kernel, a loop calling its compiled body */
int64_t cg_scan_work_bytes(const Node *n);
int cg_scan_kernel(CgKernel *k, const char *name, char *err, int errlen);

/* gather.c: gather (embedding rows) and scatter_add (its gradient) */
void cg_gather_kernel(CgKernel *k);

/* conv_blocked.c: the blocked layout's kernels (ops.def's BLOCKED rows):
 * relayout as a copy, conv2d_nchwc as a direct convolution register-blocked
 * over output width and output-channel blocks, its fused group (bias,
 * activation, residual) applied in registers through cg_epi_plan_lanes. */
void cg_blocked_kernel(CgKernel *k, const char *task_name);
/* conv_blocked_grad.c: the blocked layout in training graphs: block_weight
 * (an OIHW weight blocked each step) and conv2d_nchwc_bwd_filter (dw summed
 * per unit in a fixed order); called by cg_blocked_kernel. */
void cg_blocked_grad_kernel(CgKernel *k, const char *task_name);
/* relayout_squares.c: relayout by b x b squares transposed in registers,
 * when C and the spatial extent are multiples of b; false (nothing
 * emitted) otherwise. */
bool cg_relayout_squares(CgKernel *k, const char *task_name);

/* conv_winograd.c: winograd_filter (G g G^T per channel pair) and
 * conv2d_winograd, F(2x2, 3x3) on the blocked layout: per (image, row of
 * 2x2 output tiles), the input tiles transformed, 16 products over the
 * channels register-blocked as conv2d_nchwc's, the output transformed and
 * its fused group applied in registers; called by cg_blocked_kernel. */
void cg_winograd_kernel(CgKernel *k, const char *task_name);

/* module.c */
int64_t cg_work_bytes(const Graph *g, const Node *n, int threads);
int cg_build_graph(CgCtx *c, const Graph *g, const char *entry, char *err, int errlen);

/* vmath.c: math functions emitted as straight-line IR (no calls, no
 * branches) at c->b's insertion point. x (and y) are float, double or a
 * vector of either; the result has x's type. Vector and scalar forms agree
 * bitwise. Errors are listed in vmath.c. */
LLVMValueRef cg_vexp(CgCtx *c, LLVMValueRef x);
LLVMValueRef cg_vexpm1(CgCtx *c, LLVMValueRef x);   /* accurate near 0 */
LLVMValueRef cg_vlog(CgCtx *c, LLVMValueRef x);
LLVMValueRef cg_vlog1p(CgCtx *c, LLVMValueRef x);   /* accurate near 0 */
LLVMValueRef cg_vtanh(CgCtx *c, LLVMValueRef x);
LLVMValueRef cg_vsigmoid(CgCtx *c, LLVMValueRef x); /* 1 / (1 + exp(-x)), never NaN for finite x */
LLVMValueRef cg_verf(CgCtx *c, LLVMValueRef x);
LLVMValueRef cg_vpow(CgCtx *c, LLVMValueRef x, LLVMValueRef y); /* C99 Annex F special cases */
LLVMValueRef cg_vsin(CgCtx *c, LLVMValueRef x);     /* NaN for |x| > 2^22 (float), 2^30 (double) */
LLVMValueRef cg_vcos(CgCtx *c, LLVMValueRef x);

/* jit.c */
typedef struct CgJit CgJit;
int cg_jit_new(CgJit **out, char *err, int errlen);          /* ORC LLJIT for the host at codegen O3 */
int cg_jit_new_ex(CgJit **out, bool perf, char *err, int errlen); /* perf: name generated code for `perf` */
int cg_optimize(CgCtx *c, int level, char *err, int errlen); /* verify, then "default<O<level>>" */
int cg_jit_add(CgJit *j, CgCtx *c, char *err, int errlen);   /* takes c's module; c stays disposable */
/* Optimises c's module at `level` (unless cg_optimize did), generates its
 * object for c->tm (its backend at cg_codegen_level(level)) and
 * links it into the JIT; with `cache`, the object comes from (or goes to)
 * the code cache (cache.c). c keeps its module. */
int cg_jit_compile(CgJit *j, CgCtx *c, int level, const char *cache_dir, char *err, int errlen);
/* The backend's level for an IR level: the fast one (FastISel, fast
 * register allocation) at 0, else O3. */
LLVMCodeGenOptLevel cg_codegen_level(int level);
/* c's module as an object file or assembly for c->tm. */
int cg_emit(CgCtx *c, LLVMCodeGenFileType kind, LLVMMemoryBufferRef *out, char *err, int errlen);
void *cg_jit_lookup(CgJit *j, const char *name);             /* NULL if missing: see cg_jit_last_error */
const char *cg_jit_last_error(const CgJit *j);               /* the latest lookup or materialization failure, or "" */
void cg_jit_free(CgJit *j);

/* cache.c: compiled objects on disk in the folder dir (made if missing;
 * NULL or "": no cache), keyed by the module's bitcode, the target, the
 * level and LLVM's version. */
typedef struct CgCacheKey {
  uint64_t h[2];
} CgCacheKey;
bool cg_cache_key(CgCtx *c, int level, CgCacheKey *key);  /* of the unoptimised module */
void *cg_cache_get(const char *dir, const CgCacheKey *k, size_t *len);  /* malloc'd, or NULL: a miss */
void cg_cache_put(const char *dir, const CgCacheKey *k, const void *obj, size_t len); /* best effort */

/* object.c: ahead-of-time artifacts from the module cg_build_graph and
 * cg_optimize made (the JIT's code), for any target cg_ctx_init accepts.
 * Globals added here are constant and private (cg_add_pointers': internal). */
typedef enum { CG_EMIT_OBJ, CG_EMIT_ASM, CG_EMIT_LLVM } CgEmitKind;
LLVMValueRef cg_add_bytes(CgCtx *c, const char *name, const void *data, size_t n, int align);
LLVMValueRef cg_add_words(CgCtx *c, const char *name, const int64_t *w, size_t n);
LLVMValueRef cg_add_pointers(CgCtx *c, const char *name, LLVMValueRef *ptrs, int n);
/* `name(own args per sig)` calling callee(pre..., own args...); sig in
 * CgRtEntry's letters. The callee is declared if the module lacks it. */
LLVMValueRef cg_add_forward(CgCtx *c, const char *name, const char *callee, const char *sig,
                            LLVMValueRef *pre, int npre);
void cg_internalize(CgCtx *c, const char *const *keep, int nkeep); /* all but keep internal */
int cg_emit_file(CgCtx *c, CgEmitKind kind, const char *path, char *err, int errlen);

/* gemm.c: the contraction template (BLIS: packed panels, an MR x NR
 * register-blocked micro-kernel, cache blocking, an epilogue in registers).
 *
 * An epilogue runs on each finished output vector while it is still in
 * registers (last K block): v = <lanes x T> values of C[b, row, col ..
 * col+lanes), mask = NULL or an <lanes x i1> of valid lanes. `epi` is the
 * generated function's `void **epi` argument: the epilogue loads its extra
 * operands (bias, residual, ...) through it. Returns the vector to store. */
typedef struct CgEpilogue {
  LLVMValueRef (*fn)(CgCtx *c, void *user, LLVMValueRef v, LLVMValueRef mask, LLVMValueRef epi,
                     LLVMValueRef b, LLVMValueRef row, LLVMValueRef col);
  void *user;
} CgEpilogue;

/* An implicit B: op(B) is the column matrix of an image (C x H x W per
 * batch item, B_b = B + b*stride_b), never stored; packing gathers it. A
 * tap t = (ch*kh + i)*kw + j and a position p = ph*PW + pw (PW given at
 * run time) read image element [ch, ih, iw] where
 *   ih*div[0] = ph*step[0] + i*dil[0] - off[0]   (likewise iw with pw, j),
 * zero where that has no solution inside the image. A convolution's
 * forward has step = stride, dil = dilation, off = pad, div = 1; the
 * transposed convolution (conv2d_bwd_data) reads dy with step 1,
 * dil = -dilation, off = -pad, div = stride. Taps are op(B)'s rows and
 * positions its columns, or the other way round (taps_on_n: the filter
 * gradient, dy col^T). */
typedef struct CgIm2col {
  int kh, kw;
  int step[2], dil[2], off[2], div[2];
  bool taps_on_n;
} CgIm2col;

typedef struct CgGemmSpec {
  RtDType dt;            /* RT_F32 (the fast path) or RT_F64 */
  bool trans_a, trans_b; /* op(A) is M x K, op(B) is K x N: A^T B and A B^T without copies */
  bool accumulate;       /* C += op(A) op(B) instead of C = */
  const CgEpilogue *epi; /* NULL: none */
  const CgIm2col *im2col; /* NULL: B is a matrix (ldb); else implicit, and trans_b unused */
  bool packed_b;         /* B is pack_b's panels (ops.def) for cg_gemm_panels' geometry, one
                            for the whole batch: ldb, stride_b and trans_b unused */
} CgGemmSpec;

/* Defines (or returns the existing) function `name` in c's module:
 *   void name(i64 batch, i64 M, i64 N, i64 K,
 *             const T *A, i64 lda, i64 stride_a, const T *B, i64 ldb, i64 stride_b,
 *             T *C, i64 ldc, i64 stride_c, void **epi, void *work, i32 nthreads)
 * computing, for each b < batch, C_b = op(A_b) op(B_b) (+ C_b), then the
 * epilogue. Row-major, leading dimensions and strides in elements; a stride
 * of 0 broadcasts (shared weights). Sizes are run-time: one function serves
 * every shape. With spec->im2col the function takes three more i64s,
 * (H, W, PW): the image's height and width and the positions per row;
 * ldb is unused. nthreads <= 0 means rt_default_threads(). Results are
 * bit-identical at any thread count. NULL for an unsupported dtype. The
 * parts are internal functions "<name>.micro", "<name>.tile", ...; c->b
 * keeps its insertion point. */
LLVMValueRef cg_gemm_define(CgCtx *c, const CgGemmSpec *s, const char *name);
/* Bytes of `work` (64-byte aligned, caller-owned) the function needs for
 * these sizes and nthreads (the same value passed to it). */
int64_t cg_gemm_work_bytes(RtDType dt, int64_t M, int64_t N, int64_t K, int nthreads);
/* The panels a GEMM of M rows reads a prepacked op(B) [K, N] of dtype dt
 * from, with vectors of `lanes` f32 lanes: nr columns a panel, K in blocks
 * of kc rows (pack_b's attr.shape, ops.def). false when such a product
 * does not run as a GEMM (M within the GEMV's rows, or the dtype). The
 * signature of PassCtx.gemm_panels. */
bool cg_gemm_panels(RtDType dt, int lanes, int64_t M, int64_t K, int64_t *nr, int64_t *kc);
/* Defines (or returns) `name`: void name(const T *w, i64 ldw, i64 K, i64 N,
 * T *panels) packing op(w) [K, N] (w [N, K] when trans) into pack_b's
 * layout for this module's target. */
LLVMValueRef cg_pack_b_define(CgCtx *c, RtDType dt, bool trans, const char *name);

/* gemv.c: contractions of few rows (M <= CG_GEMV_MAX_M, below the GEMM's
 * MR) streaming B unpacked; cg_gemv_define has cg_gemm_define's signature
 * and meaning. cg_call_matmul is cg_call_gemm choosing between them by M. */
enum { CG_GEMV_MAX_M = 5 };
LLVMValueRef cg_gemv_define(CgCtx *c, const CgGemmSpec *s, const char *name);
void cg_call_matmul(CgKernel *k, RtDType dt, bool ta, bool tb, bool acc,
                    const struct CgEpiPlan *epi, LLVMValueRef *args);

/* expr.c: the EXPR nodes of a contraction's fused group as its GEMM's
 * epilogue. The GEMM sees the output as batch x rows x columns: axes
 * [0, row_axis) are the batch, [row_axis, col_axis) the rows, the rest the
 * columns (matmul: rank-2 and rank-1; conv2d: 1 and 2). The generated code
 * depends only on the group's structure (name), never on its shapes or
 * places: cg_epi_args passes every operand's address and strides at run
 * time, so one GEMM variant serves every layer with the same epilogue. */
typedef struct CgEpiPlan {
  CgEpilogue epi;            /* for CgGemmSpec.epi (user: this plan) */
  char name[1024];           /* the epilogue's structure, as a symbol suffix */
  const struct Value *c;     /* the value the GEMM's C is: the group member it stores */
  void *fused;               /* expr.c's view of the group */
} CgEpiPlan;
/* false when k->n has no group (nothing to free). */
bool cg_epi_plan(CgKernel *k, int row_axis, int col_axis, CgEpiPlan *p);
/* The same for an output whose last axis is the vector's lanes (a blocked
 * [N, O/b, OH, OW, b]): axes [col_axis, rank - 1) are the columns, and the
 * epilogue's col counts their positions, each a whole vector of b lanes. */
bool cg_epi_plan_lanes(CgKernel *k, int row_axis, int col_axis, CgEpiPlan *p);
/* The `epi` argument of one GEMM call, whose rows start at row0 of the
 * output's row axis (a conv2d group's first channel; NULL: 0). */
LLVMValueRef cg_epi_args(CgKernel *k, const CgEpiPlan *p, LLVMValueRef row0);
void cg_epi_free(CgEpiPlan *p);

#endif

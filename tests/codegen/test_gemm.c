/* The generated GEMM against a plain triple loop in double: every size
 * combination of {1, 3, 7, 13, 33, 100, 257}, the four transpose combos,
 * accumulate, batches with broadcast (stride 0) operands, f32 and f64, an
 * epilogue (bias per column + ReLU + a per-row term, which checks the
 * b/row/col it is given) with masks at the edges, and bit-identical results
 * at 1, 2, 3 and 7 threads. Leading dimensions are padded, and canaries
 * around C and the work region catch stores outside them. The micro-tile
 * shapes of 128- and 512-bit vectors run too (vbits forced on the host),
 * and objects are emitted for aarch64, AVX-512 and SSE2 targets. The small-M
 * kernel (gemv.c, same signature) runs the same harness for M = 1 .. 5. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "codegen/codegen.h"
#include "tests/codegen/count_calls.h"

typedef void (*GemmFn)(int64_t batch, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                       int64_t sa, const void *B, int64_t ldb, int64_t sb, void *C, int64_t ldc,
                       int64_t sc, void **epi, void *work, int32_t nthreads);

enum { ROWTERM_STRIDE = 1024, CANARY = 0x5a };

/* One generated variant per (dtype, trans_a, trans_b, accumulate, epilogue)
 * and set: the GEMM for the host's vector width and for 128 and 512 bits
 * (index 0, 1, 2), the GEMV for the host's and 128 bits (3, 4). */
enum { NSETS = 5, SET_GEMV = 3 };
static GemmFn variants_by_width[NSETS][2][2][2][2][2];
static CgJit *jit;
static const int widths[NSETS] = {0, 128, 512, 0, 128};

static LLVMValueRef masked_or_plain_load(CgCtx *c, LLVMTypeRef vt, LLVMValueRef p, LLVMValueRef mask) {
  unsigned sz = LLVMGetTypeKind(LLVMGetElementType(vt)) == LLVMFloatTypeKind ? 4 : 8;
  return cg_vload(c, vt, p, sz, mask);
}

/* relu(v + bias[col..]) + rowterm[b*ROWTERM_STRIDE + row]; epi = {bias, rowterm}. */
static LLVMValueRef bias_relu_row(CgCtx *c, void *user, LLVMValueRef v, LLVMValueRef mask, LLVMValueRef epi,
                                  LLVMValueRef b, LLVMValueRef row, LLVMValueRef col) {
  LLVMTypeRef vt = LLVMTypeOf(v), t = LLVMGetElementType(vt);
  int lanes = (int)LLVMGetVectorSize(vt);
  LLVMValueRef one = LLVMConstInt(c->t_i64, 1, 0);
  LLVMValueRef bias = LLVMBuildLoad2(c->b, c->t_ptr, epi, "");
  LLVMValueRef rowterm = LLVMBuildLoad2(c->b, c->t_ptr, LLVMBuildGEP2(c->b, c->t_ptr, epi, &one, 1, ""), "");
  LLVMValueRef bv = masked_or_plain_load(c, vt, LLVMBuildGEP2(c->b, t, bias, &col, 1, ""), mask);
  LLVMValueRef s = LLVMBuildFAdd(c->b, v, bv, "");
  LLVMValueRef pos = LLVMBuildFCmp(c->b, LLVMRealOGT, s, LLVMConstNull(vt), "");
  s = LLVMBuildSelect(c->b, pos, s, LLVMConstNull(vt), "");
  LLVMValueRef ri = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, b, LLVMConstInt(c->t_i64, ROWTERM_STRIDE, 0), ""), row, "");
  LLVMValueRef r = LLVMBuildLoad2(c->b, t, LLVMBuildGEP2(c->b, t, rowterm, &ri, 1, ""), "");
  return LLVMBuildFAdd(c->b, s, cg_splat(c, r, lanes), "");
}

static const CgEpilogue epilogue = {bias_relu_row, NULL};

static void variant_name(char *buf, int w, int d, int ta, int tb, int acc, int epi) {
  sprintf(buf, "%s%d_%s_ta%d_tb%d_acc%d_epi%d", w >= SET_GEMV ? "gemv" : "gemm", widths[w], d ? "f64" : "f32",
          ta, tb, acc, epi);
}

/* Which variants to build for width w: all for the host's; for the other
 * widths (vbits forced: 128-bit code runs on any x86-64 host, 512-bit
 * vectors are split by LLVM) a few, enough to check their MR x NR. */
static int wanted(int w, int d, int ta, int tb, int acc, int epi) {
  return !widths[w] || (ta == tb && acc == epi);
}

static void compile_width(int w) {
  char err[1024], name[64];
  CgCtx c;
  if (cg_ctx_init_jit(&c, "gemm_test", err, sizeof err))
    fail_msg("%s", err);
  if (widths[w])
    c.vbits = widths[w];
  for (int d = 0; d < 2; d++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int acc = 0; acc < 2; acc++)
          for (int epi = 0; epi < 2; epi++) {
            CgGemmSpec s = {d ? RT_F64 : RT_F32, ta, tb, acc, epi ? &epilogue : NULL};
            variant_name(name, w, d, ta, tb, acc, epi);
            LLVMValueRef (*define)(CgCtx *, const CgGemmSpec *, const char *) =
                w >= SET_GEMV ? cg_gemv_define : cg_gemm_define;
            if (wanted(w, d, ta, tb, acc, epi) && !define(&c, &s, name))
              fail_msg("define %s", name);
          }
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err))
    fail_msg("%s", err);
  cg_ctx_dispose(&c);
  for (int d = 0; d < 2; d++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int acc = 0; acc < 2; acc++)
          for (int epi = 0; epi < 2; epi++) {
            variant_name(name, w, d, ta, tb, acc, epi);
            if (!wanted(w, d, ta, tb, acc, epi))
              continue;
            variants_by_width[w][d][ta][tb][acc][epi] = (GemmFn)cg_jit_lookup(jit, name);
            if (!variants_by_width[w][d][ta][tb][acc][epi])
              fail_msg("lookup %s", name);
          }
}

static int setup(void **state) {
  char err[1024];
  rt_team_backoff_test(false, 0);   /* test_gemv_batch1_splits counts regions */
  if (cg_jit_new(&jit, err, sizeof err))
    fail_msg("%s", err);
  for (int w = 0; w < NSETS; w++)
    compile_width(w);
  return 0;
}

static int teardown(void **state) {
  cg_jit_free(jit);
  return 0;
}

/* ---- the reference and the harness ---- */

typedef struct Case {
  int d, ta, tb, acc, epi;    /* the variant */
  int width;                  /* index into widths: 0 the host's GEMM, SET_GEMV the host's GEMV */
  int64_t batch, M, N, K;
  int bcast_a, bcast_b;       /* stride 0 for that operand */
  int threads;
} Case;

/* Everything of one run: operands in double and in the tested dtype. */
typedef struct Run {
  int64_t lda, ldb, ldc, sa, sb, sc, rows_a, rows_b;
  double *A, *B, *C0, *bias, *rowterm, *ref;
  void *tA, *tB, *tC, *tbias, *trowterm;
} Run;

static double rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(*s >> 11) / 9007199254740992.0 * 2 - 1;
}

static double *rand_array(int64_t n, uint64_t *seed) {
  double *a = malloc((n ? n : 1) * sizeof *a);
  for (int64_t i = 0; i < n; i++)
    a[i] = rnd(seed);
  return a;
}

/* A copy in the tested dtype; values are rounded first so the reference
 * sees exactly what the kernel sees. */
static void *in_dtype(int d, double *a, int64_t n) {
  if (d)
    return memcpy(malloc((n ? n : 1) * 8), a, n * 8);
  float *f = malloc((n ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++)
    a[i] = f[i] = (float)a[i];
  return f;
}

static double get_t(int d, const void *p, int64_t i) { return d ? ((const double *)p)[i] : ((const float *)p)[i]; }

static double op_a(const Case *k, const Run *r, int64_t b, int64_t m, int64_t kk) {
  return r->A[b * r->sa + (k->ta ? kk * r->lda + m : m * r->lda + kk)];
}

static double op_b(const Case *k, const Run *r, int64_t b, int64_t kk, int64_t n) {
  return r->B[b * r->sb + (k->tb ? n * r->ldb + kk : kk * r->ldb + n)];
}

static void reference(const Case *k, Run *r) {
  for (int64_t b = 0; b < k->batch; b++)
    for (int64_t m = 0; m < k->M; m++)
      for (int64_t n = 0; n < k->N; n++) {
        double s = 0;
        for (int64_t kk = 0; kk < k->K; kk++)
          s += op_a(k, r, b, m, kk) * op_b(k, r, b, kk, n);
        int64_t ci = b * r->sc + m * r->ldc + n;
        if (k->acc)
          s += r->C0[ci];
        if (k->epi) {
          s += r->bias[n];
          s = (s > 0 ? s : 0) + r->rowterm[b * ROWTERM_STRIDE + m];
        }
        r->ref[ci] = s;
      }
}

/* Padded leading dimensions; C gets one extra row so that stores past M or
 * past N land on canaries. */
static void make_run(const Case *k, Run *r, uint64_t seed) {
  int64_t a_rows = k->ta ? k->K : k->M, a_cols = k->ta ? k->M : k->K;
  int64_t b_rows = k->tb ? k->N : k->K, b_cols = k->tb ? k->K : k->N;
  r->lda = a_cols + 3;
  r->ldb = b_cols + 5;
  r->ldc = k->N + 2;
  r->sa = k->bcast_a ? 0 : a_rows * r->lda + 1;
  r->sb = k->bcast_b ? 0 : b_rows * r->ldb + 7;
  r->sc = (k->M + 1) * r->ldc;
  int64_t na = (k->bcast_a ? 1 : k->batch) * (a_rows * r->lda + 1);
  int64_t nb = (k->bcast_b ? 1 : k->batch) * (b_rows * r->ldb + 7);
  int64_t nc = k->batch * r->sc;
  r->A = rand_array(na, &seed);
  r->B = rand_array(nb, &seed);
  r->C0 = rand_array(nc, &seed);
  r->bias = rand_array(k->N, &seed);
  r->rowterm = rand_array(k->batch * ROWTERM_STRIDE, &seed);
  r->tA = in_dtype(k->d, r->A, na);
  r->tB = in_dtype(k->d, r->B, nb);
  r->tC = in_dtype(k->d, r->C0, nc);
  r->tbias = in_dtype(k->d, r->bias, k->N);
  r->trowterm = in_dtype(k->d, r->rowterm, k->batch * ROWTERM_STRIDE);
  r->ref = memcpy(malloc(nc * sizeof(double)), r->C0, nc * sizeof(double));
  reference(k, r);
}

static void free_run(Run *r) {
  void *p[] = {r->A, r->B, r->C0, r->bias, r->rowterm, r->ref, r->tA, r->tB, r->tC, r->tbias, r->trowterm};
  for (size_t i = 0; i < sizeof p / sizeof *p; i++)
    free(p[i]);
}

/* Runs the kernel on a fresh copy of C0 with an exactly sized work region
 * followed by a canary; returns the result in the dtype (caller frees). */
static void *run_kernel(const Case *k, Run *r) {
  size_t esz = k->d ? 8 : 4, nc = (size_t)(k->batch * r->sc);
  void *C = memcpy(malloc(nc * esz), r->tC, nc * esz);
  int64_t wb = cg_gemm_work_bytes(k->d ? RT_F64 : RT_F32, k->M, k->N, k->K, k->threads);
  assert_true(wb > 0 && wb % 64 == 0);
  unsigned char *work = aligned_alloc(64, wb + 64);
  memset(work + wb, CANARY, 64);
  void *epi[] = {r->tbias, r->trowterm};
  GemmFn f = variants_by_width[k->width][k->d][k->ta][k->tb][k->acc][k->epi];
  f(k->batch, k->M, k->N, k->K, r->tA, r->lda, r->sa, r->tB, r->ldb, r->sb, C, r->ldc, r->sc, epi, work,
    k->threads);
  for (int i = 0; i < 64; i++)
    assert_int_equal(work[wb + i], CANARY);
  free(work);
  return C;
}

/* max|got - ref| / max|ref| over the valid part of C; everything outside
 * (padding columns, the extra row) must be untouched. */
static void check(const Case *k, Run *r, const void *C) {
  double maxerr = 0, maxref = 0;
  for (int64_t b = 0; b < k->batch; b++)
    for (int64_t m = 0; m <= k->M; m++)
      for (int64_t n = 0; n < r->ldc; n++) {
        int64_t i = b * r->sc + m * r->ldc + n;
        double got = get_t(k->d, C, i);
        if (m == k->M || n >= k->N) {
          if (got != get_t(k->d, r->tC, i))
            fail_msg("store outside C at b=%ld m=%ld n=%ld (M=%ld N=%ld K=%ld)", (long)b, (long)m,
                     (long)n, (long)k->M, (long)k->N, (long)k->K);
          continue;
        }
        maxerr = fmax(maxerr, fabs(got - r->ref[i]));
        maxref = fmax(maxref, fabs(r->ref[i]));
      }
  double eps = k->d ? 1e-12 : 1e-5 * fmax(1.0, k->K / 256.0);
  if (maxerr > eps * fmax(maxref, 1e-30))
    fail_msg("%s ta=%d tb=%d acc=%d epi=%d batch=%ld M=%ld N=%ld K=%ld bcast=%d%d threads=%d: "
             "error %g, max|ref| %g", k->d ? "f64" : "f32", k->ta, k->tb, k->acc, k->epi, (long)k->batch,
             (long)k->M, (long)k->N, (long)k->K, k->bcast_a, k->bcast_b, k->threads, maxerr, maxref);
}

static void run_case(const Case *k, uint64_t seed) {
  Run r;
  make_run(k, &r, seed);
  void *C = run_kernel(k, &r);
  check(k, &r, C);
  free(C);
  free_run(&r);
}

static const int64_t sizes[] = {1, 3, 7, 13, 33, 100, 257};
enum { NSIZES = sizeof sizes / sizeof *sizes };

/* ---- tests ---- */

static void test_all_shapes(void **state) {
  for (int i = 0; i < NSIZES; i++)
    for (int j = 0; j < NSIZES; j++)
      for (int l = 0; l < NSIZES; l++) {
        Case k = {.batch = 1, .M = sizes[i], .N = sizes[j], .K = sizes[l], .threads = 2};
        run_case(&k, 1 + i * 49 + j * 7 + l);
      }
}

/* Every variant on shapes covering full tiles, edges in M and N, one and
 * several K blocks (K > 256), a single row or column, and K = 0. */
static void test_variants(void **state) {
  static const int64_t shapes[][3] = {
    {1, 1, 1}, {3, 7, 13}, {13, 33, 7}, {33, 100, 3}, {100, 13, 257}, {257, 33, 100},
    {7, 257, 33}, {6, 16, 256}, {12, 32, 515}, {1, 100, 300}, {100, 1, 300}, {5, 9, 0},
  };
  for (int d = 0; d < 2; d++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int acc = 0; acc < 2; acc++)
          for (int epi = 0; epi < 2; epi++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
              Case k = {d, ta, tb, acc, epi, 0, 1, shapes[s][0], shapes[s][1], shapes[s][2], 0, 0, 2};
              run_case(&k, 1000 + s);
            }
}

/* Batches: distinct operands (small: a task per matrix; large: B packed per
 * matrix and shared by its tiles), B broadcast (shared weights), A broadcast. */
static void test_batch(void **state) {
  static const int64_t shapes[][4] = {{5, 13, 7, 33}, {3, 130, 140, 260}, {4, 33, 100, 7}, {2, 257, 13, 100}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int bc = 0; bc < 3; bc++)
        for (int tb = 0; tb < 2; tb++) {
          Case k = {.d = d, .tb = tb, .acc = bc == 2, .epi = 1, .batch = shapes[s][0], .M = shapes[s][1],
                    .N = shapes[s][2], .K = shapes[s][3], .bcast_a = bc == 2, .bcast_b = bc == 1,
                    .threads = 2};
          run_case(&k, 77 + s * 3 + bc);
        }
}

/* The same bits whatever the thread count, on problems big enough to be
 * split into many tiles and K blocks; the first two have a B packed by K
 * block at one thread and whole at more (the MLP's first layer). */
static void test_thread_invariance(void **state) {
  static const int64_t shapes[][4] = {{1, 300, 257, 600}, {1, 128, 256, 784}, {3, 200, 150, 300}, {1, 1000, 40, 64}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
      Case k = {.d = d, .tb = 1, .epi = 1, .batch = shapes[s][0], .M = shapes[s][1], .N = shapes[s][2],
                .K = shapes[s][3], .threads = 1};
      Run r;
      make_run(&k, &r, 5 + s);
      void *one = run_kernel(&k, &r);
      check(&k, &r, one);
      size_t bytes = (size_t)(k.batch * r.sc) * (d ? 8 : 4);
      static const int threads[] = {2, 3, 7};
      for (int t = 0; t < 3; t++) {
        k.threads = threads[t];
        void *many = run_kernel(&k, &r);
        assert_memory_equal(one, many, bytes);
        free(many);
      }
      free(one);
      free_run(&r);
    }
}

/* A narrow op(B) (N <= 32): A read in place instead of packed, and B
 * packed whole (K <= 1024) or per K block when the rows are split over
 * tiles. Its bits must be those of the packed path, i.e. of the leading
 * columns of a wider product with the same operands, at any thread count;
 * columns past N stay untouched. */
static void test_narrow(void **state) {
  static const int64_t shapes[][4] = {{1, 1000, 16, 600}, {1, 1000, 32, 1100}, {3, 700, 9, 300}, {2, 301, 32, 40}};
  static const int threads[] = {1, 2, 3, 7};
  for (int d = 0; d < 2; d++)
    for (int t = 0; t < 4; t++)
      for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        Case wide = {.d = d, .ta = t & 1, .tb = t >> 1, .acc = (int)s & 1, .epi = 1, .batch = shapes[s][0],
                     .M = shapes[s][1], .N = shapes[s][2] + 40, .K = shapes[s][3], .threads = 2};
        Run r;
        make_run(&wide, &r, 900 + s);
        void *all = run_kernel(&wide, &r);
        check(&wide, &r, all);
        Case narrow = wide;
        narrow.N = shapes[s][2];
        size_t esz = d ? 8 : 4;
        for (int i = 0; i < 4; i++) {
          narrow.threads = threads[i];
          unsigned char *part = run_kernel(&narrow, &r);
          for (int64_t row = 0; row < wide.batch * (wide.M + 1); row++) {
            size_t at = (size_t)(row * r.ldc) * esz, n = (size_t)narrow.N * esz, pad = (size_t)r.ldc * esz - n;
            if (row % (wide.M + 1) < wide.M)
              assert_memory_equal(part + at, (unsigned char *)all + at, n);
            assert_memory_equal(part + at + n, (unsigned char *)r.tC + at + n, pad);
          }
          free(part);
        }
        free(all);
        free_run(&r);
      }
}

/* ---- balanced row micro-tiles ---- */

/* A tile's rows run as ceil(M / 6) micro-tiles of 6 or 5 rows (32: 6, 6,
 * 5, 5, 5, 5), where the old plan ran full 6s and a lone zero-padded
 * remainder; too few rows for that (M < 5 * ceil(M / 6)) run as 5s, the
 * last partial. Counted per call of each micro-kernel on one tile (one
 * thread, small sizes), N = 40 (3 B panels, one partial) and K = 300 (two
 * K blocks): 6 calls per micro-tile. An A read in place (N = 16: narrow)
 * keeps 6-row micro-tiles (the 5-row kernel reads A packed only). Results
 * are checked too. */
static void test_balanced_rows(void **state) {
  static const int64_t plan[][3] = {  /* M, 6-row and 5-row micro-tiles */
    {1, 0, 1}, {2, 0, 1}, {5, 0, 1}, {6, 1, 0}, {7, 0, 2}, {8, 0, 2}, {9, 0, 2}, {10, 0, 2}, {11, 1, 1},
    {12, 2, 0}, {13, 0, 3}, {19, 0, 4}, {25, 0, 5}, {29, 4, 1}, {32, 2, 4}, {37, 2, 5},
  };
  char err[1024];
  CgCtx c;
  if (cg_ctx_init_jit(&c, "gemm_rows", err, sizeof err))
    fail_msg("%s", err);
  CgGemmSpec spec = {RT_F32, 0, 0, 0, &epilogue};
  assert_non_null(cg_gemm_define(&c, &spec, "gemm_rows"));
  count_calls(&c, "gemm_rows", "micro", "gemm_rows_tall");
  count_calls(&c, "gemm_rows", "micro_short", "gemm_rows_short");
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err))
    fail_msg("%s", err);
  cg_ctx_dispose(&c);
  GemmFn f = (GemmFn)cg_jit_lookup(jit, "gemm_rows");
  int64_t *tall = cg_jit_lookup(jit, "gemm_rows_tall"), *shorter = cg_jit_lookup(jit, "gemm_rows_short");
  assert_true(f && tall && shorter);
  GemmFn saved = variants_by_width[0][0][0][0][0][1];
  variants_by_width[0][0][0][0][0][1] = f;
  for (size_t i = 0; i < sizeof plan / sizeof *plan; i++)
    for (int64_t N = 16; N <= 40; N += 24) {
      Case k = {.epi = 1, .batch = 1, .M = plan[i][0], .N = N, .K = 300, .threads = 1};
      *tall = *shorter = 0;
      run_case(&k, 700 + i);
      int64_t calls = (N + 15) / 16 * 2, in_place = N <= 32;
      int64_t want_tall = in_place ? (k.M + 5) / 6 : plan[i][1], want_short = in_place ? 0 : plan[i][2];
      if (*tall != want_tall * calls || *shorter != want_short * calls)
        fail_msg("M=%ld N=%ld: %ld tall and %ld short micro-tile calls, want %ld and %ld", (long)k.M, (long)N,
                 (long)*tall, (long)*shorter, (long)(want_tall * calls), (long)(want_short * calls));
    }
  variants_by_width[0][0][0][0][0][1] = saved;
}

/* Balanced rows in every variant at M = 1 .. 13 and 32, with edges in N
 * (1, 9, 17, 40) and K (1, 7, 300: two K blocks); and the same bits at
 * any thread count where the rows are split over several tiles, the
 * last with a short remainder (M = 301, 1000 + 4). */
static void test_balanced_rows_variants(void **state) {
  static const int64_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 32};
  static const int64_t ns[] = {1, 9, 17, 40}, ks[] = {1, 7, 300};
  for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
    for (size_t j = 0; j < 4; j++)
      for (size_t l = 0; l < 3; l++)
        for (int v = 0; v < 32; v += 3) {
          Case k = {.d = v & 1, .ta = v >> 1 & 1, .tb = v >> 2 & 1, .acc = v >> 3 & 1, .epi = v >> 4 & 1,
                    .batch = 1, .M = ms[i], .N = ns[j], .K = ks[l], .threads = 2};
          run_case(&k, 4000 + i * 12 + j * 3 + l);
        }
  static const int64_t shapes[][3] = {{301, 100, 300}, {1004, 40, 64}, {301, 700, 20}};
  for (int d = 0; d < 2; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
      Case k = {.d = d, .ta = (int)s & 1, .epi = 1, .batch = 1, .M = shapes[s][0], .N = shapes[s][1],
                .K = shapes[s][2], .threads = 1};
      Run r;
      make_run(&k, &r, 60 + s);
      void *one = run_kernel(&k, &r);
      check(&k, &r, one);
      static const int threads[] = {2, 3};
      for (int t = 0; t < 2; t++) {
        k.threads = threads[t];
        void *many = run_kernel(&k, &r);
        assert_memory_equal(one, many, (size_t)r.sc * (d ? 8 : 4));
        free(many);
      }
      free(one);
      free_run(&r);
    }
}

/* The micro-kernel shapes of 128-bit (6x8 f32, 6x4 f64) and 512-bit (6x32,
 * 6x16) targets, on the same edges and K blocks. */
static void test_other_widths(void **state) {
  static const int64_t shapes[][3] = {{1, 1, 1}, {7, 9, 13}, {13, 33, 300}, {100, 70, 33}, {257, 100, 7}};
  for (int w = 1; w < 3; w++)
    for (int d = 0; d < 2; d++)
      for (int t = 0; t < 2; t++)
        for (int ae = 0; ae < 2; ae++)
          for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            Case k = {.d = d, .ta = t, .tb = t, .acc = ae, .epi = ae, .width = w, .batch = 2, .M = shapes[s][0],
                      .N = shapes[s][1], .K = shapes[s][2], .bcast_b = 1, .threads = 2};
            run_case(&k, 500 + s);
          }
}

/* Ahead of time for other targets: the IR verifies and LLVM emits an object. */
static void test_cross_targets(void **state) {
  static const char *targets[][3] = {
    {"aarch64-unknown-linux-gnu", "generic", "+neon"},
    {"x86_64-pc-linux-gnu", "skylake-avx512", "+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx2,+fma"},
    {"x86_64-pc-linux-gnu", "x86-64", "+sse2"},
  };
  for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
    char err[1024], *msg = NULL;
    CgCtx c;
    assert_int_equal(cg_ctx_init(&c, "cross", targets[i][0], targets[i][1], targets[i][2], err, sizeof err), 0);
    for (int d = 0; d < 2; d++) {
      CgGemmSpec s = {d ? RT_F64 : RT_F32, d, !d, d, &epilogue};
      assert_non_null(cg_gemm_define(&c, &s, d ? "g64" : "g32"));
    }
    if (cg_optimize(&c, 2, err, sizeof err))
      fail_msg("%s: %s", targets[i][0], err);
    LLVMMemoryBufferRef obj = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(c.tm, c.mod, LLVMObjectFile, &msg, &obj))
      fail_msg("%s: %s", targets[i][0], msg);
    assert_true(LLVMGetBufferSize(obj) > 1000);
    LLVMDisposeMemoryBuffer(obj);
    cg_ctx_dispose(&c);
  }
}

static void test_work_bytes(void **state) {
  /* grows with the threads and the element size; a shared packing of one
   * K block of B (at most 256 deep) only when the rows can be split over tiles */
  assert_true(cg_gemm_work_bytes(RT_F32, 64, 64, 64, 2) > cg_gemm_work_bytes(RT_F32, 64, 64, 64, 1));
  assert_true(cg_gemm_work_bytes(RT_F64, 64, 64, 64, 1) > cg_gemm_work_bytes(RT_F32, 64, 64, 64, 1));
  assert_true(cg_gemm_work_bytes(RT_F32, 200, 5000, 5000, 1) >= 5000LL * 256 * 4);
  assert_true(cg_gemm_work_bytes(RT_F32, 200, 5000, 5000, 1) < 5000LL * 5000);
  assert_true(cg_gemm_work_bytes(RT_F32, 8, 5000, 5000, 1) < cg_gemm_work_bytes(RT_F32, 200, 5000, 5000, 1));
  /* a small B packed whole: all its K blocks */
  assert_true(cg_gemm_work_bytes(RT_F32, 128, 256, 784, 1) >= 256LL * 784 * 4);
  /* monotone in every size: work planned for the largest shape serves all smaller ones */
  for (int i = 0; i + 1 < NSIZES; i++)
    for (int j = 0; j < NSIZES; j++) {
      int64_t a = sizes[i], b = sizes[i + 1], o = sizes[j];
      assert_true(cg_gemm_work_bytes(RT_F32, a, o, o, 2) <= cg_gemm_work_bytes(RT_F32, b, o, o, 2));
      assert_true(cg_gemm_work_bytes(RT_F32, o, a, o, 2) <= cg_gemm_work_bytes(RT_F32, o, b, o, 2));
      assert_true(cg_gemm_work_bytes(RT_F32, o, o, a, 2) <= cg_gemm_work_bytes(RT_F32, o, o, b, 2));
    }
}

/* ---- the GEMV ---- */

/* A GEMV case against the reference, and bit for bit against the GEMM
 * (the GEMM's order of summation) when it runs at the host's width. */
static void check_gemv(Case *k, uint64_t seed) {
  Run r;
  make_run(k, &r, seed);
  void *C = run_kernel(k, &r);
  check(k, &r, C);
  if (k->width == SET_GEMV) {
    Case gemm = *k;
    gemm.width = 0;
    void *G = run_kernel(&gemm, &r);
    assert_memory_equal(C, G, (size_t)r.sc * (k->d ? 8 : 4));
    free(G);
  }
  free(C);
  free_run(&r);
}

/* Every variant for M = 1 .. 5 (and 6, 7: it stays correct past its
 * range) against the reference, N and K around the block widths (8 and
 * 32 columns, vectors of 8 along K, K blocks of 256), K = 0, at both
 * widths; and bit for bit the GEMM's result on the same case, so that
 * cg_call_matmul's choice never shows in the output. */
static void test_gemv_variants(void **state) {
  static const int64_t nk[] = {0, 1, 3, 7, 8, 13, 33, 100, 257, 300};
  enum { NNK = sizeof nk / sizeof *nk };
  for (int w = SET_GEMV; w < NSETS; w++)
    for (int64_t M = 1; M <= 7; M++)
      for (int i = 1; i < NNK; i++)
        for (int j = 0; j < NNK; j++)
          for (int v = 0; v < 32; v++) {
            Case k = {.d = v & 1, .ta = v >> 1 & 1, .tb = v >> 2 & 1, .acc = v >> 3 & 1, .epi = v >> 4 & 1,
                      .width = w, .batch = 1, .M = M, .N = nk[i], .K = nk[j], .threads = 2};
            if (wanted(w, k.d, k.ta, k.tb, k.acc, k.epi))
              check_gemv(&k, 3000 + M * 97 + i * 11 + j);
          }
}

/* The last block of outputs at every width (N = 64 + 1 .. 128: 1 to 64
 * columns left after 64, 32 or 16 per block), which runs over the fewest
 * vectors that cover it, at both widths, f32 and f64. */
static void test_gemv_tails(void **state) {
  for (int w = SET_GEMV; w < NSETS; w++)
    for (int d = 0; d < 2; d++)
      for (int64_t N = 65; N <= 128; N++)
        for (int64_t M = 1; M <= 3; M += 2) {
          Case k = {.d = d, .acc = 1, .epi = 1, .width = w, .batch = 1, .M = M, .N = N, .K = 300, .threads = 1};
          check_gemv(&k, 700 + N * 5 + M);
        }
}

/* B (op(B)'s rows contiguous) ending right before a page nobody may read:
 * the rows' prefetches past B's end and the masked loads of the last
 * block must not fault, and the result is the same as elsewhere. */
static void test_gemv_guard_page(void **state) {
  static const int64_t ns[] = {10, 64, 100};
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < 3; i++) {
      Case k = {.d = d, .epi = 1, .width = SET_GEMV, .batch = 1, .M = 2, .N = ns[i], .K = 300, .threads = 1};
      Run r;
      make_run(&k, &r, 55 + i);
      size_t bytes = (size_t)(k.K * r.ldb) * (d ? 8 : 4), span = (bytes + page - 1) / page * page;
      char *map = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      assert_true(map != MAP_FAILED);
      assert_int_equal(mprotect(map + span, page, PROT_NONE), 0);
      void *B = memcpy(map + span - bytes, r.tB, bytes), *tB = r.tB;
      void *C = run_kernel(&k, &r);
      r.tB = B;
      void *G = run_kernel(&k, &r);
      r.tB = tB;
      assert_memory_equal(C, G, (size_t)r.sc * (d ? 8 : 4));
      munmap(map, span + page);
      free(C), free(G);
      free_run(&r);
    }
}

/* Batches with distinct and broadcast operands, and the same bits at any
 * thread count on shapes of several parallel chunks. */
static void test_gemv_batch_threads(void **state) {
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++) {
      for (int bc = 0; bc < 3; bc++) {
        Case k = {.d = d, .tb = tb, .acc = bc == 2, .epi = 1, .width = SET_GEMV, .batch = 3, .M = 2, .N = 45,
                  .K = 70, .bcast_a = bc == 2, .bcast_b = bc == 1, .threads = 2};
        run_case(&k, 91 + bc);
      }
      Case k = {.d = d, .tb = tb, .epi = 1, .width = SET_GEMV, .batch = 2, .M = 3, .N = 2000, .K = 1500,
                .threads = 1};
      Run r;
      make_run(&k, &r, 17);
      void *one = run_kernel(&k, &r);
      check(&k, &r, one);
      static const int threads[] = {2, 3, 7};
      for (int t = 0; t < 3; t++) {
        k.threads = threads[t];
        void *many = run_kernel(&k, &r);
        assert_memory_equal(one, many, (size_t)(k.batch * r.sc) * (d ? 8 : 4));
        free(many);
      }
      free(one);
      free_run(&r);
    }
}

/* ---- the order of summation ---- */

/* C's bits are those of one fused multiply-add per k in k order within
 * each K block (kc = ceil(K / ceil(K / 256)) rows), the blocks' sums added
 * to C in order: what makes results independent of the micro-kernel's
 * unrolling (4 k's per iteration, then the rest one by one), of which
 * micro-tile (6 or 5 rows) holds a row, and of A packed or read in place
 * (N <= 32). K covers every remainder of the unrolling and 1-3 K blocks. */
static void test_fma_order(void **state) {
  static const int64_t ks[] = {1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 300, 515};
  static const int64_t mn[][2] = {{13, 40}, {32, 16}, {7, 17}};
  for (int d = 0; d < 2; d++)
    for (size_t l = 0; l < sizeof ks / sizeof *ks; l++)
      for (size_t s = 0; s < sizeof mn / sizeof *mn; s++) {
        Case k = {.d = d, .batch = 1, .M = mn[s][0], .N = mn[s][1], .K = ks[l], .threads = 2};
        Run r;
        make_run(&k, &r, 300 + l * 3 + s);
        void *C = run_kernel(&k, &r);
        int64_t nkb = (k.K + 255) / 256, kc = (k.K + nkb - 1) / nkb;
        for (int64_t m = 0; m < k.M; m++)
          for (int64_t n = 0; n < k.N; n++) {
            double c = 0;
            float cf = 0;
            for (int64_t k0 = 0; k0 < k.K; k0 += kc) {
              double acc = 0;
              float accf = 0;
              for (int64_t kk = k0; kk < k0 + kc && kk < k.K; kk++) {
                double a = get_t(d, r.tA, m * r.lda + kk), b = get_t(d, r.tB, kk * r.ldb + n);
                acc = fma(a, b, acc);
                accf = fmaf((float)a, (float)b, accf);
              }
              c = k0 ? c + acc : acc;
              cf = k0 ? cf + accf : accf;
            }
            double got = get_t(d, C, m * r.ldc + n), want = d ? c : cf;
            if (got != want)
              fail_msg("%s M=%ld N=%ld K=%ld: C[%ld][%ld] = %.17g, want %.17g", d ? "f64" : "f32", (long)k.M,
                       (long)k.N, (long)k.K, (long)m, (long)n, got, want);
          }
        free(C);
        free_run(&r);
      }
}

/* ---- packing ---- */

typedef void (*PackFn)(const void *w, int64_t ldw, int64_t K, int64_t N, void *panels);

/* The packer's panels element by element against ops.def's pack_b layout
 * (K blocks of kc rows, each NR-column panels k-major, zero past N), in
 * both source layouts (rows contiguous, and k contiguous: transposed in
 * registers), at panel widths 1 .. NR + 1 past a multiple of NR (every
 * edge panel height) and K with a remainder of the vector width and a
 * short last block. The GEMM packs A by the same code with MR rows, so
 * its edge panels (row_split's short ones) are these. */
static void test_pack_edges(void **state) {
  static const int64_t ks[] = {1, 7, 13, 300};
  char err[1024], name[32];
  CgCtx c;
  if (cg_ctx_init_jit(&c, "gemm_pack", err, sizeof err))
    fail_msg("%s", err);
  int lanes = c.vbits / 32;
  for (int v = 0; v < 4; v++) {
    sprintf(name, "pack%d", v);
    assert_non_null(cg_pack_b_define(&c, v & 1 ? RT_F64 : RT_F32, v >> 1, name));
  }
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err))
    fail_msg("%s", err);
  cg_ctx_dispose(&c);
  for (int v = 0; v < 4; v++) {
    int d = v & 1, trans = v >> 1;
    sprintf(name, "pack%d", v);
    PackFn pack = (PackFn)cg_jit_lookup(jit, name);
    assert_non_null(pack);
    for (size_t l = 0; l < sizeof ks / sizeof *ks; l++) {
      int64_t nr, kc, K = ks[l];
      assert_true(cg_gemm_panels(d ? RT_F64 : RT_F32, lanes, INT64_MAX, K, &nr, &kc));
      for (int64_t N = nr - 1; N <= 2 * nr + 1; N++) {
        uint64_t seed = 31 + (uint64_t)(v * 100 + l * 10 + N);
        double *w = rand_array(K * N, &seed);   /* op(w) is K x N: w[k*N + n], or w[n*K + k] transposed */
        void *src = in_dtype(d, w, K * N);
        int64_t npad = (N + nr - 1) / nr * nr, nkb = (K + kc - 1) / kc, bytes = nkb * kc * npad * (d ? 8 : 4);
        unsigned char *got = malloc((size_t)bytes);
        memset(got, CANARY, (size_t)bytes);
        pack(src, trans ? K : N, K, N, got);
        for (int64_t k = 0; k < K; k++)
          for (int64_t n = 0; n < npad; n++) {
            int64_t kb = k / kc, kcb = K - kb * kc < kc ? K - kb * kc : kc;
            int64_t at = kb * kc * npad + n / nr * kcb * nr + (k - kb * kc) * nr + n % nr;
            double want = n < N ? get_t(d, src, trans ? n * K + k : k * N + n) : 0;
            if (get_t(d, got, at) != want)
              fail_msg("%s trans=%d K=%ld N=%ld: element (%ld, %ld) is %g, want %g", d ? "f64" : "f32", trans,
                       (long)K, (long)N, (long)k, (long)n, get_t(d, got, at), want);
          }
        free(got);
        free(src);
        free(w);
      }
    }
  }
}

/* A dense layer at batch 1 as small as the MLP's (784 or 256 in, 256
 * out, x W) is several parallel tasks, so two cores share its weights
 * (outside a graph's team each split call opens one region); 256 x 10
 * stays on one thread. The same bits at 1 and 2 threads. */
static void test_gemv_batch1_splits(void **state) {
  static const int64_t shapes[][3] = {{256, 784, 1}, {256, 256, 1}, {10, 256, 0}};   /* N, K, splits */
  for (int s = 0; s < 3; s++) {
    Case k = {.epi = 1, .width = SET_GEMV, .batch = 1, .M = 1, .N = shapes[s][0], .K = shapes[s][1],
              .threads = 1};
    Run r;
    make_run(&k, &r, 23);
    void *one = run_kernel(&k, &r);
    k.threads = 2;
    int64_t before = rt_parallel_regions();
    void *two = run_kernel(&k, &r);
    assert_int_equal(rt_parallel_regions() - before, shapes[s][2]);
    assert_memory_equal(one, two, (size_t)r.sc * 4);
    free(one);
    free(two);
    free_run(&r);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_work_bytes),
    cmocka_unit_test(test_all_shapes),
    cmocka_unit_test(test_variants),
    cmocka_unit_test(test_batch),
    cmocka_unit_test(test_thread_invariance),
    cmocka_unit_test(test_narrow),
    cmocka_unit_test(test_balanced_rows),
    cmocka_unit_test(test_balanced_rows_variants),
    cmocka_unit_test(test_other_widths),
    cmocka_unit_test(test_cross_targets),
    cmocka_unit_test(test_gemv_variants),
    cmocka_unit_test(test_gemv_batch_threads),
    cmocka_unit_test(test_gemv_tails),
    cmocka_unit_test(test_gemv_guard_page),
    cmocka_unit_test(test_pack_edges),
    cmocka_unit_test(test_fma_order),
    cmocka_unit_test(test_gemv_batch1_splits),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

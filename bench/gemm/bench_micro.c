/* The GEMM micro-kernel alone, on packed panels that stay in L1: what the
 * generated code reaches in the core, apart from packing and memory.
 *
 *   bench_micro [--kc 256] [--lda 0] [--asm FILE]
 *
 * Generates the f32 GEMM for the host (codegen/gemm.c), looks up its
 * micro-kernel `sgemm.micro` and calls it on a KC x MR panel of A and a
 * KC x NR panel of B (6 KiB and 16 KiB at KC = 256) into an MR x NR tile
 * of C, as the macro-kernel does for a full tile that is not the last K
 * block. With --lda L > 0 it reads A in place instead, MR rows of L
 * elements (L >= kc), as for a narrow B. Reports the median GFLOP/s of 31
 * samples in the thread's CPU time
 * and its fraction of the FMA peak (KILN_PEAK_GFLOPS, default 102.6).
 * --asm writes the module's assembly (the same code, compiled ahead of
 * time for the host) to FILE, to read what LLVM made of the k loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "codegen/codegen.h"

typedef void (*MicroFn)(const float *ap, const float *bp, int64_t kc, float *cp, int64_t ldc, int64_t mr,
                        int64_t nr, bool loadc, bool last, void *epi, int64_t b, int64_t row, int64_t col,
                        int64_t lda);

enum { MR = 6, SAMPLES = 31 };

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One f32 GEMM in c, its micro-kernel made external for the lookup. */
static void define_gemm(CgCtx *c) {
  CgGemmSpec s = {RT_F32, false, false, false, NULL};
  cg_gemm_define(c, &s, "sgemm");
  LLVMSetLinkage(LLVMGetNamedFunction(c->mod, "sgemm.micro"), LLVMExternalLinkage);
}

static int write_asm(const char *path, char *err, int errlen) {
  CgCtx c;
  if (cg_ctx_init(&c, "bench_micro", NULL, NULL, NULL, err, errlen))
    return -1;
  define_gemm(&c);
  int rc = cg_optimize(&c, 3, err, errlen) || cg_emit_file(&c, CG_EMIT_ASM, path, err, errlen);
  cg_ctx_dispose(&c);
  return rc ? -1 : 0;
}

static MicroFn compile_micro(char *err, int errlen) {
  CgJit *jit;
  CgCtx c;
  if (cg_jit_new(&jit, err, errlen) || cg_ctx_init_jit(&c, "bench_micro", err, errlen))
    return NULL;
  define_gemm(&c);
  if (cg_optimize(&c, 3, err, errlen) || cg_jit_add(jit, &c, err, errlen))
    return NULL;
  cg_ctx_dispose(&c);
  return (MicroFn)cg_jit_lookup(jit, "sgemm.micro");   /* the JIT lives as long as the process */
}

int main(int argc, char **argv) {
  long kc = 256, lda = 0;
  const char *asm_path = NULL;
  char err[1024];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--kc") && i + 1 < argc) {
      kc = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--lda") && i + 1 < argc) {
      lda = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--asm") && i + 1 < argc) {
      asm_path = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--kc 256] [--lda 0] [--asm FILE]\n", argv[0]);
      return 2;
    }
  }
  if (kc < 1 || (lda && lda < kc) || (asm_path && write_asm(asm_path, err, sizeof err))) {
    fprintf(stderr, "%s\n", kc < 1 || (lda && lda < kc) ? "need kc >= 1 and lda 0 or >= kc" : err);
    return 1;
  }
  MicroFn micro = compile_micro(err, sizeof err);
  if (!micro) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int nr = 2 * cg_host_lanes(4);
  long na = lda ? lda * MR : kc * MR;
  float *ap = aligned_alloc(64, (size_t)na * 4), *bp = aligned_alloc(64, (size_t)kc * nr * 4);
  float *cp = aligned_alloc(64, (size_t)MR * nr * 4);
  for (long i = 0; i < na; i++)
    ap[i] = (float)(i % 7) * 0.125f;
  for (long i = 0; i < kc * nr; i++)
    bp[i] = (float)(i % 5) * 0.25f;
  long reps = 1 + 4000000 / (kc * MR * nr);   /* about 1 ms a sample */
  double t[SAMPLES], peak = getenv("KILN_PEAK_GFLOPS") ? atof(getenv("KILN_PEAK_GFLOPS")) : 102.6;
  for (int s = -3; s < SAMPLES; s++) {   /* 3 warm-up samples */
    double a = cpu_now();
    for (long r = 0; r < reps; r++)
      micro(ap, bp, kc, cp, nr, MR, nr, true, false, NULL, 0, 0, 0, lda);
    if (s >= 0)
      t[s] = (cpu_now() - a) / reps;
  }
  qsort(t, SAMPLES, sizeof *t, cmp_double);
  double flop = 2.0 * MR * nr * kc;
  printf("micro %dx%d kc %ld lda %ld: %.1f GFLOP/s median (best %.1f), %.1f%% of peak %.1f; %.0f ns a call\n", MR, nr, kc, lda,
         flop / t[SAMPLES / 2] * 1e-9, flop / t[0] * 1e-9, 100 * flop / t[SAMPLES / 2] * 1e-9 / peak, peak,
         t[SAMPLES / 2] * 1e9);
  free(ap);
  free(bp);
  free(cp);
  return 0;
}

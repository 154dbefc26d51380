/* The GEMM reading a prepacked B (CgGemmSpec.packed_b, B laid out by
 * cg_pack_b_define as pack_b in ops.def) against the same GEMM packing B
 * itself: the same bits in C, over shapes with edge tiles (M, N, K not
 * multiples of MR, NR or the K block; K over several K blocks; M over
 * several row tiles), B transposed or not, f32 and f64, at 1 and 2
 * threads, with and without a batch of A sharing B. And at M <= 5 against
 * the GEMV (which the GEMM on panels replaces when a model compiled for a
 * larger batch runs a small one). And the same passes over B: the tiles
 * run as many times (once per K block where B is packed per K block, so
 * that the block read stays in cache) whether B comes prepacked or not. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/codegen.h"
#include "tests/codegen/count_calls.h"

typedef void (*GemmFn)(int64_t batch, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                       int64_t sa, const void *B, int64_t ldb, int64_t sb, void *C, int64_t ldc,
                       int64_t sc, void **epi, void *work, int32_t nthreads);
typedef void (*PackFn)(const void *w, int64_t ldw, int64_t K, int64_t N, void *panels);

enum { PLAIN, PACKED, GEMV, NKINDS };
static GemmFn gemm[NKINDS][2][2];   /* [kind][f64][trans_b] */
static PackFn pack[2][2];           /* [f64][trans] */
static int64_t *tile_calls[PACKED + 1][2][2]; /* [kind][f64][trans_b]: calls of the GEMM's .tile */
static int f32_lanes;
static CgJit *jit;

static void name_of(char *buf, const char *kind, int d, int tb) { sprintf(buf, "%s_%s_%c", kind, d ? "f64" : "f32", tb ? 't' : 'n'); }

static int setup(void **state) {
  char err[1024], name[64];
  CgCtx c;
  static const char *kinds[NKINDS] = {"plain", "packed", "gemv"};
  if (cg_jit_new(&jit, err, sizeof err) || cg_ctx_init_jit(&c, "prepack_test", err, sizeof err))
    fail_msg("%s", err);
  f32_lanes = c.vbits / 32;
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++) {
      for (int k = 0; k < NKINDS; k++) {
        CgGemmSpec s = {.dt = d ? RT_F64 : RT_F32, .trans_b = tb && k != PACKED, .packed_b = k == PACKED};
        name_of(name, kinds[k], d, tb);
        if (!(k == GEMV ? cg_gemv_define : cg_gemm_define)(&c, &s, name))
          fail_msg("define %s", name);
      }
      for (int k = PLAIN; k <= PACKED; k++) {
        char counter[80];
        name_of(name, kinds[k], d, tb);
        snprintf(counter, sizeof counter, "%s.tiles", name);
        count_calls(&c, name, "tile", counter);
      }
      name_of(name, "pack", d, tb);
      if (!cg_pack_b_define(&c, d ? RT_F64 : RT_F32, tb, name))
        fail_msg("define %s", name);
    }
  if (cg_optimize(&c, 3, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err))
    fail_msg("%s", err);
  cg_ctx_dispose(&c);
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++) {
      for (int k = 0; k < NKINDS; k++) {
        name_of(name, kinds[k], d, tb);
        assert_non_null(gemm[k][d][tb] = (GemmFn)cg_jit_lookup(jit, name));
      }
      for (int k = PLAIN; k <= PACKED; k++) {
        char counter[80];
        name_of(name, kinds[k], d, tb);
        snprintf(counter, sizeof counter, "%s.tiles", name);
        assert_non_null(tile_calls[k][d][tb] = cg_jit_lookup(jit, counter));
      }
      name_of(name, "pack", d, tb);
      assert_non_null(pack[d][tb] = (PackFn)cg_jit_lookup(jit, name));
    }
  return 0;
}

static int teardown(void **state) {
  cg_jit_free(jit);
  return 0;
}

/* n values of dtype d from a xorshift, in [-1, 1). */
static void *random_array(int d, int64_t n, uint64_t *s) {
  size_t sz = d ? 8 : 4;
  char *p = malloc((size_t)(n ? n : 1) * sz);
  for (int64_t i = 0; i < n; i++) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    double x = (double)(*s >> 11) / 4503599627370496.0 - 1;
    float f = (float)x;
    memcpy(p + (size_t)i * sz, d ? (void *)&x : (void *)&f, sz);
  }
  return p;
}

typedef struct Case {
  int d, tb, threads;
  int64_t batch, M, N, K;
} Case;

/* C of kind `kind` (its B packed first if PACKED) for the case's operands. */
static void *product(const Case *k, int kind, const void *A, const void *B) {
  size_t sz = k->d ? 8 : 4;
  int64_t nr, kc, ldb = k->tb ? k->K : k->N, ldc = k->N;
  int64_t C_elems = k->batch * k->M * ldc;
  void *C = calloc((size_t)C_elems, sz), *panels = NULL;
  int64_t bytes = cg_gemm_work_bytes(k->d ? RT_F64 : RT_F32, k->M, k->N, k->K, k->threads);
  void *work = aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64);
  const void *b = B;
  if (kind == PACKED) {
    assert_true(cg_gemm_panels(k->d ? RT_F64 : RT_F32, f32_lanes, INT64_MAX, k->K, &nr, &kc));
    int64_t nkb = (k->K + kc - 1) / kc, np = (k->N + nr - 1) / nr;
    panels = aligned_alloc(64, (size_t)(nkb * np * kc * nr) * sz);
    pack[k->d][k->tb](B, ldb, k->K, k->N, panels);
    b = panels;
  }
  gemm[kind][k->d][k->tb](k->batch, k->M, k->N, k->K, A, k->K, k->M * k->K, b, ldb, 0, C, ldc, k->M * ldc, NULL,
                          work, k->threads);
  free(panels);
  free(work);
  return C;
}

static void compare(const Case *k, int kind, int against) {
  uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(k->M * 131 + k->N * 17 + k->K);
  size_t sz = k->d ? 8 : 4;
  void *A = random_array(k->d, k->batch * k->M * k->K, &seed), *B = random_array(k->d, k->K * k->N, &seed);
  *tile_calls[PLAIN][k->d][k->tb] = *tile_calls[PACKED][k->d][k->tb] = 0;
  void *x = product(k, kind, A, B), *y = product(k, against, A, B);
  if (memcmp(x, y, (size_t)(k->batch * k->M * k->N) * sz))
    fail_msg("%s tb=%d threads=%d batch=%lld M=%lld N=%lld K=%lld: packed B differs", k->d ? "f64" : "f32", k->tb,
             k->threads, (long long)k->batch, (long long)k->M, (long long)k->N, (long long)k->K);
  int64_t packed_tiles = *tile_calls[PACKED][k->d][k->tb], plain_tiles = *tile_calls[PLAIN][k->d][k->tb];
  if (against == PLAIN && packed_tiles != plain_tiles)
    fail_msg("%s tb=%d threads=%d batch=%lld M=%lld N=%lld K=%lld: %lld tile calls with B prepacked, %lld without",
             k->d ? "f64" : "f32", k->tb, k->threads, (long long)k->batch, (long long)k->M, (long long)k->N,
             (long long)k->K, (long long)packed_tiles, (long long)plain_tiles);
  free(A), free(B), free(x), free(y);
}

static const int64_t Ms[] = {6, 7, 49, 150, 301}, Ns[] = {1, 17, 33, 100, 530}, Ks[] = {1, 7, 256, 257, 600};

static void test_packed_matches_plain(void **state) {
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++)
      for (int threads = 1; threads <= 2; threads++)
        for (size_t m = 0; m < 5; m++)
          for (size_t n = 0; n < 5; n++)
            for (size_t kk = 0; kk < 5; kk++) {
              Case k = {d, tb, threads, 1, Ms[m], Ns[n], Ks[kk]};
              compare(&k, PACKED, PLAIN);
            }
}

/* The MLP's first layer at batch 128 (128 x 256 x 784, B^T): at one
 * thread its 800 KiB of B is passed over one K block at a time, four
 * launches of its four row tiles, as when B is packed per call; at two,
 * whole (one launch: no barrier per K block). */
static void test_packed_launches(void **state) {
  for (int threads = 1; threads <= 2; threads++) {
    Case k = {0, 1, threads, 1, 128, 256, 784};
    compare(&k, PACKED, PLAIN);
    assert_int_equal(*tile_calls[PACKED][0][1], threads == 1 ? 16 : 4);
  }
}

/* A batch of A (a [B, M, K] activation) against one B: every item reads the same panels. */
static void test_packed_batch(void **state) {
  for (int threads = 1; threads <= 2; threads++)
    for (size_t kk = 0; kk < 5; kk++) {
      Case k = {0, 1, threads, 3, 50, 70, Ks[kk]};
      compare(&k, PACKED, PLAIN);
    }
}

static void test_packed_matches_gemv(void **state) {
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++)
      for (int64_t M = 1; M <= CG_GEMV_MAX_M; M++)
        for (size_t n = 0; n < 5; n++)
          for (size_t kk = 0; kk < 5; kk++) {
            Case k = {d, tb, 1, 1, M, Ns[n], Ks[kk]};
            compare(&k, PACKED, GEMV);
          }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_packed_matches_plain),
    cmocka_unit_test(test_packed_batch),
    cmocka_unit_test(test_packed_launches),
    cmocka_unit_test(test_packed_matches_gemv),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* BLIS's sgemm for bench_gemm, in a file of its own: blis.h declares a
 * CBLAS of its own that clashes with OpenBLAS's cblas.h. Called through
 * BLIS's typed API (bli_sgemm), whose name OpenBLAS does not have, so the
 * two libraries can be linked into one process. */
#include <blis.h>
#include "bench/gemm/blis_call.h"

void bench_blis_sgemm(int ta, int tb, long M, long N, long K, const float *A, long lda, const float *B, long ldb,
                      float *C, long ldc, int threads) {
  float one = 1.0f, zero = 0.0f;
  bli_thread_set_num_threads(threads);
  /* row-major: the stored A is M x K (K x M when ta), row stride lda */
  bli_sgemm(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, M, N, K, &one,
            (float *)A, lda, 1, (float *)B, ldb, 1, &zero, C, ldc, 1);
}

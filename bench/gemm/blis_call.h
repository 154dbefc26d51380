/* blis_call.c: BLIS's sgemm, row-major, C = op(A) op(B). */
void bench_blis_sgemm(int ta, int tb, long M, long N, long K, const float *A, long lda, const float *B, long ldb,
                      float *C, long ldc, int threads);

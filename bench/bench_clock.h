/* Clocks and medians shared by the C benchmark drivers (bench_kiln,
 * bench_gemm, gemm_ref): seconds on a chosen clock (CLOCK_MONOTONIC for the
 * wall, CLOCK_THREAD_CPUTIME_ID or CLOCK_PROCESS_CPUTIME_ID for CPU time)
 * and the median of a sample, sorted in place. */
#ifndef BENCH_CLOCK_H
#define BENCH_CLOCK_H

#include <stdlib.h>
#include <time.h>

static inline double bench_clock(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts v[0 .. n) and returns its median. */
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif

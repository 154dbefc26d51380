/* The one parallel entry of generated code. Work is cut into chunks whose
 * boundaries are a function of (n, grain) alone; threads only decide who
 * runs which chunk. A kernel that keeps per-chunk results and combines them
 * in chunk order therefore gives bit-identical results at any thread count.
 *
 * Chunks are handed out dynamically (schedule(dynamic, 1)): chunk costs vary
 * (tails, cache misses), and the assignment does not affect results. A call
 * made while a parallel region is active runs inline: nested OpenMP regions
 * would oversubscribe the cores for no gain. */
#include "runtime/rt.h"
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

/* Chunk k is [k*grain, min(n, (k+1)*grain)), computed without overflow. */
static void run_chunk(RtTask fn, void *ctx, int64_t n, int64_t grain, int64_t k) {
  int64_t lo = k * grain;
  fn(ctx, lo, n - lo > grain ? lo + grain : n);
}

void rt_parallel_for(RtTask fn, void *ctx, int64_t n, int64_t grain, int32_t nthreads) {
  if (n <= 0)
    return;
  if (grain < 1)
    grain = 1;
  int64_t nchunks = (n - 1) / grain + 1;
  int threads = nthreads > 0 ? nthreads : rt_default_threads();
  if (threads > nchunks)
    threads = (int)nchunks;
  if (threads <= 1 || omp_get_active_level() > 0) {
    for (int64_t k = 0; k < nchunks; k++)
      run_chunk(fn, ctx, n, grain, k);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t k = 0; k < nchunks; k++)
    run_chunk(fn, ctx, n, grain, k);
}

int rt_default_threads(void) { return omp_get_max_threads(); }

void rt_prefer_passive_wait(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
    return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) == 0)
    execv("/proc/self/exe", argv);
  unsetenv("OMP_WAIT_POLICY");   /* exec failed: carry on as started */
}

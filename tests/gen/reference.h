/* The sampler's reference for the tests: the 53 top bits of Philox words
 * 2i and 2i+1 of the "kiln.sample" stream as u, the probabilities of
 * softmax(logits / temp) in long double, the first index whose cumulative
 * probability exceeds u (written apart from runtime/text.c's). */
#ifndef KILN_TEST_GEN_REFERENCE_H
#define KILN_TEST_GEN_REFERENCE_H
#include <math.h>
#include "runtime/rt.h"

static inline int64_t reference_pick(const float *l, int n, double temp, uint64_t seed, uint64_t i) {
  uint64_t stream = rt_hash_str("kiln.sample");
  uint64_t w = (uint64_t)rt_random_u32(seed, stream, 2 * i) << 32 | rt_random_u32(seed, stream, 2 * i + 1);
  long double u = (long double)(w >> 11) / 9007199254740992.0L, p[64], z = 0, run = 0;
  for (int j = 0; j < n && j < 64; j++)
    z += p[j] = expl((long double)l[j] / temp);
  for (int j = 0; j < n && j < 64; j++)
    if ((run += p[j] / z) > u)
      return j;
  return n - 1;
}
#endif

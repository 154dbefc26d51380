/* libFuzzer target for the IDX reader (and the gunzip in front of it): any
 * bytes must give RT_OK and a tensor whose every byte is readable and whose
 * size matches its shape, or an error with a message and no tensor. Built
 * with -Dfuzz=true (see meson.build); run:
 *   ./fuzz_idx -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include "runtime/rt.h"

static volatile uint8_t sink;   /* reading every byte lets ASan check the tensor is ours */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtTensor t;
  RtError err = {{0}};
  if (rt_idx_read_mem(data, size, "fuzz.idx", &t, &err) != RT_OK) {
    if (!err.msg[0] || t.data)
      abort();
    return 0;
  }
  size_t bytes = rt_tensor_bytes(&t);
  if (t.rank < 0 || t.rank > RT_MAX_RANK || (bytes == 0 && rt_numel(&t) != 0) || !t.data)
    abort();
  if (t.dtype != RT_U8 && t.dtype != RT_I32 && t.dtype != RT_F32 && t.dtype != RT_F64)
    abort();
  for (size_t i = 0; i < bytes; i++)
    sink ^= ((const uint8_t *)t.data)[i];
  rt_tensor_free(&t);
  return 0;
}

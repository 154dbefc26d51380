/* libFuzzer target for the .npy reader: any bytes must give RT_OK and a
 * tensor whose every byte is readable, or an error with a message. Built
 * with -Dfuzz=true (see meson.build); run:
 *   ./fuzz_npy -max_total_time=60 corpus/ ../tests/runtime/data */
#include <stdint.h>
#include <stdlib.h>
#include "runtime/rt.h"

static volatile uint8_t sink;   /* reading every byte lets ASan check the tensors are ours */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtTensor t;
  RtError err = {{0}};
  if (rt_npy_read_mem(data, size, "fuzz.npy", &t, &err) != RT_OK) {
    if (!err.msg[0] || t.data)
      abort();                 /* an error must say what and leave nothing behind */
    return 0;
  }
  size_t bytes = rt_tensor_bytes(&t);
  if (t.rank < 0 || t.rank > RT_MAX_RANK || (bytes == 0 && rt_numel(&t) != 0) || !t.data)
    abort();
  for (size_t i = 0; i < bytes; i++)
    sink ^= ((const uint8_t *)t.data)[i];
  rt_tensor_free(&t);
  return 0;
}

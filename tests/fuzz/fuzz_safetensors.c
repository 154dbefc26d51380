/* libFuzzer target for the .safetensors reader (and so the JSON parser):
 * any bytes must give a consistent result (tensors sorted by name, each
 * found by rt_st_find, every data byte readable) or an error with a
 * message. Built with -Dfuzz=true (see meson.build); run:
 *   ./fuzz_safetensors -dict=safetensors.dict -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

static volatile uint8_t sink;   /* reading every byte lets ASan check the tensors are ours */

static void check(const RtSafetensors *st) {
  for (int i = 0; i < st->n; i++) {
    const RtNamedTensor *nt = &st->tensors[i];
    if (i > 0 && strcmp(st->tensors[i - 1].name, nt->name) >= 0)
      abort();
    if (rt_st_find(st, nt->name) != &nt->t || ((uintptr_t)nt->t.data % RT_ALIGN) != 0)
      abort();
    size_t bytes = rt_tensor_bytes(&nt->t);
    for (size_t k = 0; k < bytes; k++)
      sink ^= ((const uint8_t *)nt->t.data)[k];
  }
  for (int i = 0; i < st->nmeta; i++)
    if (rt_st_meta(st, st->meta[i].key) != st->meta[i].value)
      abort();                 /* keys are unique: the first is this one */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtSafetensors st;
  RtError err = {{0}};
  if (rt_st_read_mem(data, size, "fuzz.safetensors", &st, &err) != RT_OK) {
    if (!err.msg[0] || st.tensors || st.blob || st.arena)
      abort();
    return 0;
  }
  check(&st);
  rt_st_free(&st);
  return 0;
}

/* libFuzzer target for the CSV reader: the first byte picks the options
 * (header mode, label column, scale), the rest is the file, gzipped or not.
 * Any bytes must give RT_OK with a matrix whose every value is finite and
 * whose labels match its rows, or an error with a message and nothing
 * left allocated. Built with -Dfuzz=true (see meson.build); run:
 *   ./fuzz_csv -max_total_time=60 corpus/ */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "runtime/rt.h"

static RtCsvOptions options(uint8_t b) {
  static const char *names[4] = {NULL, "label", "a", ""};
  return (RtCsvOptions){
    .header = (RtCsvHeader)(b % 3),
    .has_label = b & 4,
    .label = (int)((b >> 3) & 3) - 2,            /* -2 .. 1 */
    .label_name = names[(b >> 5) & 3],
    .scale = b & 0x80 ? 1.0f / 16 : 0,
  };
}

static void check(const RtCsv *c) {
  const RtTensor *x = &c->x, *y = &c->y;
  if (x->dtype != RT_F32 || x->rank != 2 || x->shape[0] < 1 || !x->data ||
      x->shape[1] != c->ncols - (c->label_col >= 0))
    abort();
  if (c->label_col >= 0 && (!y->data || y->rank != 1 || y->shape[0] != x->shape[0]))
    abort();
  for (int64_t k = 0, n = rt_numel(x); k < n; k++)
    if (!isfinite(((const float *)x->data)[k]))
      abort();
  for (int i = 0; c->names && i < c->ncols; i++)
    if (!c->names[i])
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  RtCsvOptions opt = options(data[0]);
  RtCsv c;
  RtError err = {{0}};
  if (rt_csv_read_mem(data + 1, size - 1, "fuzz.csv", &opt, &c, &err) != RT_OK) {
    if (!err.msg[0] || c.x.data || c.y.data || c.arena)
      abort();                 /* an error must say what and leave nothing behind */
    return 0;
  }
  check(&c);
  rt_csv_free(&c);
  return 0;
}

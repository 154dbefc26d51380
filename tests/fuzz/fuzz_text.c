/* libFuzzer target for text() data (runtime/text.c): the first byte picks
 * the options (lines or windows, the window, maxlen, a character filter),
 * the rest is the file, gzipped or not. Any bytes must give RT_OK with a
 * vocabulary that starts with the end symbol and is sorted, symbols inside
 * it, labels inside it or -1 (lines only), and a vocabulary string that
 * reads back to the same symbols; or an error with a message and nothing
 * left allocated. Built with -Dfuzz=true (see meson.build); run:
 *   ./fuzz_text -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

static RtTextOptions options(uint8_t b) {
  static const char *filters[4] = {NULL, "a-z", "a-c\xc3\xa9-", "-"};
  bool lines = b & 1;
  return (RtTextOptions){.lines = lines, .window = lines ? 0 : 1 + (b >> 1 & 7),
                         .max_len = lines ? (b >> 1 & 7) * 3 : 0,
                         .chars = lines ? filters[b >> 4 & 3] : NULL};
}

static void check(const RtText *t, const RtTextOptions *o) {
  int64_t n = rt_numel(&t->x), V = t->nvocab;
  if (V < 2 || t->vocab[0] != RT_TEXT_END || t->x.rank != 2 || rt_numel(&t->y) != n || n < 1)
    abort();
  for (int64_t i = 2; i < V; i++)
    if (t->vocab[i] <= t->vocab[i - 1])
      abort();
  for (int64_t i = 0; i < n; i++) {
    int32_t x = ((const int32_t *)t->x.data)[i];
    int64_t y = ((const int64_t *)t->y.data)[i];
    if (x < 0 || x >= V || y >= V || y < (o->lines ? -1 : 0))
      abort();
    if (o->lines && i % t->x.shape[1] == 0 && x != RT_TEXT_END)
      abort();
  }
  char *s = rt_text_vocab_utf8(t->vocab, t->nvocab);
  int32_t *back = NULL;
  if (!s || rt_text_vocab_parse(s, &back) != V || memcmp(back, t->vocab, V * sizeof *back))
    abort();
  free(s);
  free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  RtTextOptions o = options(data[0]);
  RtText t;
  RtError e;
  RtStatus st = rt_text_read_mem(data + 1, size - 1, "fuzz.txt", &o, &t, &e);
  if (st == RT_OK)
    check(&t, &o);
  else if (!e.msg[0] || t.vocab || t.x.data || t.y.data)
    abort();
  rt_text_free(&t);
  return 0;
}

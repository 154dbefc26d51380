/* What the data-side suites (csv, idx, data) share on top of fixtures.h:
 * gzip in memory (zlib, independent of the reader under test), writing a
 * buffer to a scratch file, and the examples/data directory that meson
 * passes in KILN_DATA_DIR. */
#ifndef KILN_TESTS_RUNTIME_DATA_FIXTURES_H
#define KILN_TESTS_RUNTIME_DATA_FIXTURES_H

#include <zlib.h>
#include "fixtures.h"

/* buf gzipped (one member), malloc'd; *out_len its size. */
static inline unsigned char *gzip_mem(const void *buf, size_t len, size_t *out_len) {
  z_stream z = {0};
  if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    abort();
  size_t cap = deflateBound(&z, (uLong)len);
  unsigned char *out = malloc(cap);
  z.next_in = (Bytef *)buf;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_FINISH) != Z_STREAM_END)
    abort();
  *out_len = z.total_out;
  deflateEnd(&z);
  return out;
}

static inline void write_file(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0)
    abort();
}

/* examples/data/<name>, from the directory the build passes in. */
static inline const char *example_path(const char *name) {
  static char buf[1024];
  const char *dir = getenv("KILN_DATA_DIR");
  snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "examples/data", name);
  return buf;
}

#endif

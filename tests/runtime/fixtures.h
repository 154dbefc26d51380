/* What the runtime tests share: the formulas of make_npy_fixtures.py,
 * element access by dtype, and a scratch directory. */
#ifndef KILN_TESTS_RUNTIME_FIXTURES_H
#define KILN_TESTS_RUNTIME_FIXTURES_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/rt.h"

/* Element k (C order) of every fixture array, as make_npy_fixtures.py
 * writes it; every value is exact in a double. */
static inline double fixture_value(RtDType dt, int64_t k) {
  switch (dt) {
  case RT_F32:
  case RT_F64: return (k - 7) * 0.25;
  case RT_I32: return (double)(k * 100003 - 1000000);
  case RT_I64: return (double)(k * INT64_C(1234567890123) - INT64_C(5000000000000));
  case RT_U8: return (double)((k * 37) % 256);
  case RT_BOOL: return k % 3 == 0;
  default: return 0;
  }
}

static inline double tensor_get(const RtTensor *t, int64_t k) {
  switch (t->dtype) {
  case RT_F32: return ((const float *)t->data)[k];
  case RT_F64: return ((const double *)t->data)[k];
  case RT_I32: return ((const int32_t *)t->data)[k];
  case RT_I64: return (double)((const int64_t *)t->data)[k];
  case RT_U8: return ((const uint8_t *)t->data)[k];
  case RT_BOOL: return ((const uint8_t *)t->data)[k];
  default: return 0;
  }
}

static inline void tensor_set(RtTensor *t, int64_t k, double v) {
  switch (t->dtype) {
  case RT_F32: ((float *)t->data)[k] = (float)v; break;
  case RT_F64: ((double *)t->data)[k] = v; break;
  case RT_I32: ((int32_t *)t->data)[k] = (int32_t)v; break;
  case RT_I64: ((int64_t *)t->data)[k] = (int64_t)v; break;
  case RT_U8: ((uint8_t *)t->data)[k] = (uint8_t)v; break;
  case RT_BOOL: ((uint8_t *)t->data)[k] = v != 0; break;
  default: break;
  }
}

/* The fixture shapes by rank, as in make_npy_fixtures.py. */
static const int64_t fixture_shapes[5][4] = {{0}, {5}, {2, 3}, {2, 3, 4}, {2, 1, 3, 2}};

/* A tensor of dtype dt and shape fixture_shapes[rank] holding the formula. */
static inline RtTensor fixture_tensor(RtDType dt, int rank) {
  RtTensor t;
  if (rt_tensor_alloc(&t, dt, rank, fixture_shapes[rank], NULL) != RT_OK)
    abort();
  for (int64_t k = 0; k < rt_numel(&t); k++)
    tensor_set(&t, k, fixture_value(dt, k));
  return t;
}

/* A fresh directory under $TMPDIR (or /tmp), removed by scratch_remove. */
static char scratch[256];

static inline const char *scratch_path(const char *name) {
  static char buf[4][512];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "%s/%s", scratch, name);
  return p;
}

static inline int scratch_make(void **state) {
  const char *tmp = getenv("TMPDIR");
  snprintf(scratch, sizeof scratch, "%s/kiln-rt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  return mkdtemp(scratch) ? 0 : -1;
}

static inline int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

static inline int scratch_remove(void **state) {
  return nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The whole of a file, malloc'd; *len its size. */
static inline unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(*len ? *len : 1);
  if (fread(buf, 1, *len, f) != *len) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

#endif

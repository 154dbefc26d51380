/* Dtypes, error messages, dense tensors and 64-byte aligned memory.
 * Element counts and byte sizes are computed with overflow checks, because
 * shapes come from files: a header claiming 2^40 x 2^40 elements must be an
 * error, not a small allocation that is then overrun. */
#include "runtime/rt.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; size_t size; } dtypes[RT_NDTYPES] = {
  [RT_F32] = {"f32", 4}, [RT_F64] = {"f64", 8}, [RT_I32] = {"i32", 4},
  [RT_I64] = {"i64", 8}, [RT_U8] = {"u8", 1},   [RT_BOOL] = {"bool", 1},
};

static bool dtype_valid(RtDType dt) { return (unsigned)dt < RT_NDTYPES; }

size_t rt_dtype_size(RtDType dt) { return dtype_valid(dt) ? dtypes[dt].size : 0; }

const char *rt_dtype_name(RtDType dt) { return dtype_valid(dt) ? dtypes[dt].name : "?"; }

int rt_dtype_parse(const char *name, RtDType *out) {
  for (int i = 0; i < RT_NDTYPES; i++) {
    if (name && strcmp(name, dtypes[i].name) == 0) {
      *out = (RtDType)i;
      return 0;
    }
  }
  return -1;
}

RtStatus rt_errorf(RtError *err, RtStatus st, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return st;
}

const char *rt_status_name(RtStatus st) {
  static const char *names[] = {"ok", "io", "format", "nomem", "arg", "shape"};
  return (unsigned)st < sizeof names / sizeof *names ? names[st] : "?";
}

int64_t rt_numel(const RtTensor *t) {
  if (t->rank < 0 || t->rank > RT_MAX_RANK)
    return -1;
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->shape[i] < 0 || __builtin_mul_overflow(n, t->shape[i], &n))
      return -1;
  }
  return n;
}

size_t rt_tensor_bytes(const RtTensor *t) {
  int64_t n = rt_numel(t);
  size_t bytes;
  if (n < 0 || !dtype_valid(t->dtype) ||
      __builtin_mul_overflow((uint64_t)n, rt_dtype_size(t->dtype), &bytes) ||
      bytes > PTRDIFF_MAX)
    return 0;
  return bytes;
}

RtStatus rt_tensor_init(RtTensor *t, RtDType dt, int rank, const int64_t *shape, RtError *err) {
  memset(t, 0, sizeof *t);
  if (!dtype_valid(dt))
    return rt_errorf(err, RT_ERR_ARG, "invalid dtype %d", (int)dt);
  if (rank < 0 || rank > RT_MAX_RANK)
    return rt_errorf(err, RT_ERR_SHAPE, "rank %d is outside 0..%d", rank, RT_MAX_RANK);
  t->dtype = dt;
  t->rank = rank;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0 || shape[i] > RT_MAX_DIM)
      return rt_errorf(err, RT_ERR_SHAPE, "dimension %d is %lld, outside 0..%d", i,
                       (long long)shape[i], RT_MAX_DIM);
    t->shape[i] = shape[i];
  }
  if (rt_numel(t) < 0 || (rt_tensor_bytes(t) == 0 && rt_numel(t) > 0)) {
    char buf[256];
    return rt_errorf(err, RT_ERR_SHAPE, "shape %s of %s is too large",
                     rt_shape_str(rank, shape, buf, sizeof buf), rt_dtype_name(dt));
  }
  return RT_OK;
}

RtStatus rt_tensor_alloc(RtTensor *t, RtDType dt, int rank, const int64_t *shape, RtError *err) {
  RtStatus st = rt_tensor_init(t, dt, rank, shape, err);
  if (st != RT_OK)
    return st;
  t->data = rt_aligned_alloc(rt_tensor_bytes(t));
  if (!t->data)
    return rt_errorf(err, RT_ERR_NOMEM, "out of memory for %zu bytes", rt_tensor_bytes(t));
  return RT_OK;
}

void rt_tensor_free(RtTensor *t) {
  if (!t)
    return;
  rt_aligned_free(t->data);
  t->data = NULL;
}

int64_t rt_bad_bool(const RtTensor *t) {
  const uint8_t *b = t->data;
  for (int64_t i = 0, n = t->dtype == RT_BOOL ? rt_numel(t) : 0; i < n; i++)
    if (b[i] > 1)
      return i;
  return -1;
}

const char *rt_shape_str(int rank, const int64_t *shape, char *buf, size_t len) {
  size_t at = 0;
  at += snprintf(buf, len, "(");
  for (int i = 0; i < rank && at < len; i++)
    at += snprintf(buf + at, len - at, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (at < len)
    snprintf(buf + at, len - at, rank == 1 ? ",)" : ")");
  return buf;
}

void *rt_aligned_alloc(size_t bytes) {
  size_t rounded = (bytes + RT_ALIGN - 1) & ~(size_t)(RT_ALIGN - 1);
  if (rounded < bytes)
    return NULL;
  if (rounded == 0)
    rounded = RT_ALIGN;
  void *p = aligned_alloc(RT_ALIGN, rounded);
  if (p)
    memset(p, 0, rounded);
  return p;
}

void rt_aligned_free(void *p) { free(p); }

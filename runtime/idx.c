/* IDX files, the format of MNIST and Fashion-MNIST (LeCun et al., "THE
 * MNIST DATABASE of handwritten digits", file formats section):
 *
 *   0 0 <type> <rank>   rank x u32 dims, big endian   elements, big endian, C order
 *
 * The whole file is in memory (inflated if gzipped, as Debian's
 * dataset-fashion-mnist ships it), so the header is checked against the
 * exact byte count before anything is allocated: a header that lies about
 * its dims is an error, never a read past the end. Elements are converted
 * one by one from big endian into the tensor; the types kiln has no dtype
 * for (i8, i16) widen to i32. */
#include "runtime/rt.h"
#include <string.h>

typedef struct {
  uint8_t code;
  const char *name;
  int size;                  /* bytes in the file */
  RtDType dtype;             /* in the tensor */
} IdxType;

static const IdxType idx_types[] = {
  {0x08, "u8", 1, RT_U8},   {0x09, "i8", 1, RT_I32},  {0x0B, "i16", 2, RT_I32},
  {0x0C, "i32", 4, RT_I32}, {0x0D, "f32", 4, RT_F32}, {0x0E, "f64", 8, RT_F64},
};

static const IdxType *idx_type(uint8_t code) {
  for (size_t i = 0; i < sizeof idx_types / sizeof *idx_types; i++)
    if (idx_types[i].code == code)
      return &idx_types[i];
  return NULL;
}

static uint64_t load_be(const uint8_t *p, int size) {
  uint64_t v = 0;
  for (int i = 0; i < size; i++)
    v = v << 8 | p[i];
  return v;
}

/* Element k of the file's data into element k of t. */
static void decode(const IdxType *ty, const uint8_t *src, RtTensor *t, int64_t k) {
  uint64_t bits = load_be(src + k * ty->size, ty->size);
  switch (ty->code) {
  case 0x08: ((uint8_t *)t->data)[k] = (uint8_t)bits; break;
  case 0x09: ((int32_t *)t->data)[k] = (int8_t)bits; break;
  case 0x0B: ((int32_t *)t->data)[k] = (int16_t)bits; break;
  case 0x0C: ((int32_t *)t->data)[k] = (int32_t)(uint32_t)bits; break;
  case 0x0D: {
    uint32_t w = (uint32_t)bits;
    memcpy((float *)t->data + k, &w, 4);
    break;
  }
  default: memcpy((double *)t->data + k, &bits, 8); break;
  }
}

/* Magic, type and dims into *ty, *rank and shape. */
static RtStatus read_header(const uint8_t *p, size_t len, const char *name, const IdxType **ty,
                            int *rank, int64_t *shape, RtError *err) {
  if (len < 4)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: too short for an IDX file (%zu bytes)", name, len);
  if (p[0] != 0 || p[1] != 0)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: not an IDX file (bad magic %02x %02x)", name, p[0], p[1]);
  if (!(*ty = idx_type(p[2])))
    return rt_errorf(err, RT_ERR_FORMAT, "%s: unknown IDX type code 0x%02x", name, p[2]);
  *rank = p[3];
  if (*rank > RT_MAX_RANK)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: rank %d exceeds %d", name, *rank, RT_MAX_RANK);
  if (len < 4 + 4 * (size_t)*rank)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: truncated: the header of rank %d needs %d bytes, "
                     "the file has %zu", name, *rank, 4 + 4 * *rank, len);
  for (int i = 0; i < *rank; i++) {
    shape[i] = (int64_t)load_be(p + 4 + 4 * i, 4);
    if (shape[i] > RT_MAX_DIM)
      return rt_errorf(err, RT_ERR_FORMAT, "%s: dimension %d is %lld, above %d", name, i,
                       (long long)shape[i], RT_MAX_DIM);
  }
  return RT_OK;
}

static RtStatus idx_parse(const uint8_t *p, size_t len, const char *name, RtTensor *out, RtError *err) {
  const IdxType *ty = NULL;
  int rank = 0;
  int64_t shape[RT_MAX_RANK];
  RtStatus st = read_header(p, len, name, &ty, &rank, shape, err);
  if (st != RT_OK)
    return st;
  RtTensor t;
  RtError e;
  char sbuf[256];
  if (rt_tensor_init(&t, ty->dtype, rank, shape, &e) != RT_OK)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: %s", name, e.msg);
  size_t off = 4 + 4 * (size_t)rank, have = len - off;
  uint64_t need;
  if (__builtin_mul_overflow((uint64_t)rt_numel(&t), (uint64_t)ty->size, &need) || have != need)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: data is %zu bytes, shape %s of %s needs %llu%s", name,
                     have, rt_shape_str(rank, shape, sbuf, sizeof sbuf), ty->name,
                     (unsigned long long)need, have < need ? " (truncated)" : "");
  if (!(t.data = rt_aligned_alloc(rt_tensor_bytes(&t))))
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory for %zu bytes", name, rt_tensor_bytes(&t));
  if (ty->size == 1 && ty->dtype == RT_U8)
    memcpy(t.data, p + off, have);
  else
    for (int64_t k = 0, n = rt_numel(&t); k < n; k++)
      decode(ty, p + off, &t, k);
  *out = t;
  return RT_OK;
}

RtStatus rt_idx_read_mem(const void *buf, size_t len, const char *name, RtTensor *out, RtError *err) {
  RtBytes b;
  memset(out, 0, sizeof *out);
  name = name ? name : "<memory>";
  RtStatus st = rt_bytes_mem(&b, buf, len, name, err);
  if (st != RT_OK)
    return st;
  st = idx_parse(b.data, b.len, name, out, err);
  rt_bytes_free(&b);
  return st;
}

RtStatus rt_idx_read(const char *path, RtTensor *out, RtError *err) {
  RtBytes b;
  memset(out, 0, sizeof *out);
  RtStatus st = rt_bytes_file(&b, path, err);
  if (st != RT_OK)
    return st;
  st = idx_parse(b.data, b.len, path, out, err);
  rt_bytes_free(&b);
  return st;
}

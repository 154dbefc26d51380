/* NumPy .npy files (numpy/lib/format.py, "NEP 1"):
 *
 *   "\x93NUMPY" major minor  header-length (u16 LE for 1.0, u32 LE for 2.0/3.0)
 *   header: a Python dict literal, padded with spaces, ending in '\n'
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 *   data: numel * itemsize bytes, C order
 *
 * The header is read by a small tokenizer for exactly that dict (quoted
 * keys, a quoted descr, True/False, a tuple of integers), not by a Python
 * evaluator; anything else is an error. The data is then read straight into
 * a 64-byte aligned tensor from an RtSource, so files and buffers share
 * one path. */
#include "runtime/rt.h"
#include <stdlib.h>
#include <string.h>

enum { NPY_MAX_HEADER = 1 << 20 };

static const char magic[6] = "\x93NUMPY";
static const char *descrs[RT_NDTYPES] = {"<f4", "<f8", "<i4", "<i8", "|u1", "|b1"};

/* The header dict being read; errors name the file. */
typedef struct {
  const char *s, *name;
  size_t len, pos;
  RtError *err;
} Hdr;

typedef struct {
  RtDType dtype;
  bool fortran;
  int rank;
  int64_t shape[RT_MAX_RANK];
} NpyInfo;

static bool bad(Hdr *h, const char *what) {
  rt_errorf(h->err, RT_ERR_FORMAT, "%s: bad .npy header at byte %zu: %s", h->name, h->pos, what);
  return false;
}

static int next_char(Hdr *h) {
  while (h->pos < h->len && (h->s[h->pos] == ' ' || h->s[h->pos] == '\t'))
    h->pos++;
  return h->pos < h->len ? (unsigned char)h->s[h->pos] : -1;
}

static bool accept(Hdr *h, char c) {
  if (next_char(h) != (unsigned char)c)
    return false;
  h->pos++;
  return true;
}

/* A quoted string ('...' or "...", no escapes) into buf. */
static bool quoted(Hdr *h, char *buf, size_t size) {
  int q = next_char(h);
  if (q != '\'' && q != '"')
    return bad(h, "expected a quoted string");
  size_t start = ++h->pos;
  while (h->pos < h->len && h->s[h->pos] != q && h->s[h->pos] != '\\')
    h->pos++;
  if (h->pos >= h->len || h->s[h->pos] != q)
    return bad(h, "unterminated or escaped string");
  size_t n = h->pos++ - start;
  if (n >= size)
    return bad(h, "string too long");
  memcpy(buf, h->s + start, n);
  buf[n] = 0;
  return true;
}

static bool parse_descr(Hdr *h, NpyInfo *info) {
  char d[32];
  if (!quoted(h, d, sizeof d))
    return false;
  for (int i = 0; i < RT_NDTYPES; i++) {
    if (strcmp(d, descrs[i]) == 0) {
      info->dtype = (RtDType)i;
      return true;
    }
  }
  rt_errorf(h->err, RT_ERR_FORMAT, "%s: unsupported dtype '%s'%s (kiln reads <f4 <f8 <i4 <i8 |u1 |b1)",
            h->name, d, d[0] == '>' ? ", big-endian" : "");
  return false;
}

static bool parse_bool(Hdr *h, bool *out) {
  next_char(h);
  const char *rest = h->s + h->pos;
  size_t left = h->len - h->pos;
  *out = left >= 4 && memcmp(rest, "True", 4) == 0;
  if (!*out && !(left >= 5 && memcmp(rest, "False", 5) == 0))
    return bad(h, "expected True or False");
  h->pos += *out ? 4 : 5;
  return true;
}

static bool parse_dim(Hdr *h, int64_t *out) {
  int c = next_char(h);
  if (c < '0' || c > '9')
    return bad(h, "expected a dimension");
  int64_t v = 0;
  for (; h->pos < h->len && h->s[h->pos] >= '0' && h->s[h->pos] <= '9'; h->pos++) {
    v = v * 10 + (h->s[h->pos] - '0');
    if (v > RT_MAX_DIM)
      return bad(h, "dimension too large");
  }
  *out = v;
  return true;
}

/* shape = '(' ')' | '(' dim ',' ')' | '(' dim { ',' dim } [ ',' ] ')' */
static bool parse_shape(Hdr *h, NpyInfo *info) {
  if (!accept(h, '('))
    return bad(h, "expected '(' for the shape");
  info->rank = 0;
  while (!accept(h, ')')) {
    if (info->rank == RT_MAX_RANK)
      return bad(h, "rank exceeds 8");
    if (!parse_dim(h, &info->shape[info->rank++]))
      return false;
    if (accept(h, ','))
      continue;
    if (next_char(h) != ')')
      return bad(h, "expected ',' or ')' in the shape");
    if (info->rank == 1)
      return bad(h, "a 1-tuple needs a trailing comma");
  }
  return true;
}

/* dict = '{' { key ':' value ',' } [ key ':' value ] '}', each of the three
 * keys exactly once, then spaces and an optional '\n'. */
static bool parse_header(Hdr *h, NpyInfo *info) {
  bool seen[3] = {false, false, false};
  static const char *keys[3] = {"descr", "fortran_order", "shape"};
  if (!accept(h, '{'))
    return bad(h, "expected '{'");
  while (!accept(h, '}')) {
    char key[32];
    if (!quoted(h, key, sizeof key))
      return false;
    if (!accept(h, ':'))
      return bad(h, "expected ':'");
    int k = 0;
    while (k < 3 && strcmp(key, keys[k]) != 0)
      k++;
    if (k == 3 || seen[k])
      return bad(h, k == 3 ? "unknown key" : "repeated key");
    seen[k] = true;
    bool ok = k == 0 ? parse_descr(h, info)
            : k == 1 ? parse_bool(h, &info->fortran)
                     : parse_shape(h, info);
    if (!ok)
      return false;
    if (!accept(h, ',') && next_char(h) != '}')
      return bad(h, "expected ',' or '}'");
  }
  if (!seen[0] || !seen[1] || !seen[2])
    return bad(h, !seen[0] ? "missing 'descr'" : !seen[1] ? "missing 'fortran_order'" : "missing 'shape'");
  if (next_char(h) == '\n')
    h->pos++;
  if (h->pos != h->len)
    return bad(h, "text after the dict");
  return true;
}

/* Magic, version and header length: where the header and the data start. */
static RtStatus read_preamble(RtSource *src, uint64_t *hstart, uint32_t *hlen, RtError *err) {
  uint8_t b[12];
  if (src->len < 10)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: too short for a .npy file (%llu bytes)", src->name,
                     (unsigned long long)src->len);
  RtStatus st = rt_source_read(src, 0, b, 10, err);
  if (st != RT_OK)
    return st;
  if (memcmp(b, magic, 6) != 0)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: not a .npy file (bad magic)", src->name);
  if (b[6] < 1 || b[6] > 3 || b[7] != 0)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: unsupported .npy version %d.%d", src->name, b[6], b[7]);
  if (b[6] == 1) {
    *hstart = 10;
    *hlen = b[8] | (uint32_t)b[9] << 8;
  } else {
    if ((st = rt_source_read(src, 10, b + 10, 2, err)) != RT_OK)
      return st;
    *hstart = 12;
    *hlen = b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
  }
  if (*hlen > NPY_MAX_HEADER)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: header length %u is over the limit of %d",
                     src->name, *hlen, NPY_MAX_HEADER);
  if (*hlen > src->len - *hstart)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: header length %u runs past the end of the file (%llu bytes)",
                     src->name, *hlen, (unsigned long long)src->len);
  return RT_OK;
}

static RtStatus read_info(RtSource *src, NpyInfo *info, uint64_t *data_off, RtError *err) {
  uint64_t hstart = 0;
  uint32_t hlen = 0;
  RtStatus st = read_preamble(src, &hstart, &hlen, err);
  if (st != RT_OK)
    return st;
  char *text = malloc(hlen ? hlen : 1);
  if (!text)
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory for the header", src->name);
  if ((st = rt_source_read(src, hstart, text, hlen, err)) == RT_OK) {
    Hdr h = {.s = text, .name = src->name, .len = hlen, .err = err};
    st = parse_header(&h, info) ? RT_OK : RT_ERR_FORMAT;
  }
  free(text);
  *data_off = hstart + hlen;
  return st;
}

static RtStatus read_data(RtSource *src, const NpyInfo *info, uint64_t off, RtTensor *out, RtError *err) {
  char sbuf[256];
  const char *shape = rt_shape_str(info->rank, info->shape, sbuf, sizeof sbuf);
  RtError e;
  if (rt_tensor_init(out, info->dtype, info->rank, info->shape, &e) != RT_OK)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: %s", src->name, e.msg);
  uint64_t need = rt_tensor_bytes(out), have = src->len - off;
  if (have != need)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: data is %llu bytes, shape %s of %s needs %llu",
                     src->name, (unsigned long long)have, shape, rt_dtype_name(info->dtype),
                     (unsigned long long)need);
  if (!(out->data = rt_aligned_alloc(need)))
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory for %llu bytes", src->name,
                     (unsigned long long)need);
  RtStatus st = rt_source_read(src, off, out->data, need, err);
  int64_t bad = st == RT_OK ? rt_bad_bool(out) : -1;
  if (bad >= 0)
    st = rt_errorf(err, RT_ERR_FORMAT, "%s: bool element %lld is %d, not 0 or 1", src->name,
                   (long long)bad, ((const uint8_t *)out->data)[bad]);
  if (st != RT_OK)
    rt_tensor_free(out);
  return st;
}

static RtStatus npy_load(RtSource *src, RtTensor *out, RtError *err) {
  NpyInfo info = {0};
  uint64_t off = 0;
  memset(out, 0, sizeof *out);
  RtStatus st = read_info(src, &info, &off, err);
  if (st != RT_OK)
    return st;
  if (info.fortran)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: fortran_order is True; kiln reads C order only "
                     "(save np.ascontiguousarray(a))", src->name);
  return read_data(src, &info, off, out, err);
}

RtStatus rt_npy_read(const char *path, RtTensor *out, RtError *err) {
  RtSource src;
  memset(out, 0, sizeof *out);
  RtStatus st = rt_source_open(&src, path, err);
  if (st != RT_OK)
    return st;
  st = npy_load(&src, out, err);
  rt_source_close(&src);
  return st;
}

RtStatus rt_npy_read_mem(const void *buf, size_t len, const char *name, RtTensor *out, RtError *err) {
  RtSource src;
  rt_source_mem(&src, buf, len, name);
  return npy_load(&src, out, err);
}

/* The header numpy writes: the dict, spaces, '\n', so that the 10-byte
 * preamble and the header are a multiple of 64 bytes. With rank <= 8 and
 * dims below 2^31 it is always short enough for version 1.0. */
static size_t make_header(const RtTensor *t, char *buf, size_t size) {
  char shape[256];
  int n = snprintf(buf, size, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                   descrs[t->dtype], rt_shape_str(t->rank, t->shape, shape, sizeof shape));
  size_t padded = (10 + (size_t)n + 1 + 63) / 64 * 64 - 10;
  memset(buf + n, ' ', padded - (size_t)n - 1);
  buf[padded - 1] = '\n';
  return padded;
}

RtStatus rt_npy_write(const char *path, const RtTensor *t, RtError *err) {
  RtTensor check;
  RtError e;
  if (rt_tensor_init(&check, t->dtype, t->rank, t->shape, &e) != RT_OK)
    return rt_errorf(err, RT_ERR_ARG, "%s: cannot write this tensor: %s", path, e.msg);
  if (!t->data && rt_numel(t) > 0)
    return rt_errorf(err, RT_ERR_ARG, "%s: cannot write this tensor: no data", path);
  char header[512];
  size_t hlen = make_header(t, header, sizeof header);
  uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)hlen, (uint8_t)(hlen >> 8)};
  RtAtomicFile af;
  RtStatus st = rt_atomic_open(&af, path, err);
  if (st != RT_OK)
    return st;
  if ((st = rt_atomic_write(&af, pre, sizeof pre, err)) != RT_OK ||
      (st = rt_atomic_write(&af, header, hlen, err)) != RT_OK ||
      (st = rt_atomic_write(&af, t->data, rt_tensor_bytes(t), err)) != RT_OK) {
    rt_atomic_abort(&af);
    return st;
  }
  return rt_atomic_commit(&af, err);
}

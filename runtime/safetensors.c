/* Hugging Face .safetensors files (github.com/huggingface/safetensors):
 *
 *   u64 LE header length N | N bytes of JSON header | data area
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} relative to the data area, plus an optional "__metadata__"
 * object of string values. Reading parses the header with json.c, checks
 * every tensor against its bytes and the tensors against each other (they
 * must tile the data area exactly, as the reference implementation
 * demands), then reads each tensor straight into its own 64-byte aligned
 * slot of one blob: the file's offsets need not be aligned for the dtype.
 * F16 and BF16 tensors (PyTorch's half-precision checkpoints) are widened
 * to F32 as they are read: kiln computes in f32, and the conversion is
 * exact.
 *
 * Writing puts tensors in name order, pads the header with spaces so the
 * data area starts 8-byte aligned, and goes through an atomic file. */
#include "runtime/rt.h"
#include <stdlib.h>
#include <string.h>

static const char *st_dtypes[RT_NDTYPES] = {"F32", "F64", "I32", "I64", "U8", "BOOL"};

/* The half-precision dtypes a file may hold, widened to F32 on reading. */
typedef enum { HALF_NONE, HALF_F16, HALF_BF16 } Half;

static const char *half_names[] = {[HALF_F16] = "F16", [HALF_BF16] = "BF16"};

/* A tensor while it is read: its entry, its byte range in the file, and
 * the half-precision dtype it is stored in, if any. */
typedef struct {
  RtNamedTensor nt;
  uint64_t begin, end;
  Half half;
} Entry;

/* State of one read. */
typedef struct {
  RtSource *src;
  RtSafetensors *out;
  RtArena *a;
  uint64_t data_start, data_len;
  RtError *err;
} Reader;

/* The header length, and the header text in the arena. */
static RtStatus read_header(Reader *r, char **text, uint64_t *hlen) {
  uint8_t b[8];
  if (r->src->len < 8)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: not a .safetensors file (shorter than 8 bytes)",
                     r->src->name);
  RtStatus st = rt_source_read(r->src, 0, b, 8, r->err);
  if (st != RT_OK)
    return st;
  *hlen = 0;
  for (int i = 7; i >= 0; i--)
    *hlen = *hlen << 8 | b[i];
  if (*hlen > RT_ST_MAX_HEADER || *hlen > r->src->len - 8)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: header length %llu runs past the end of the file "
                     "(%llu bytes) or over the limit", r->src->name, (unsigned long long)*hlen,
                     (unsigned long long)r->src->len);
  if (!(*text = rt_arena_alloc(r->a, *hlen + 1)))
    return rt_errorf(r->err, RT_ERR_NOMEM, "%s: out of memory for the header", r->src->name);
  r->data_start = 8 + *hlen;
  r->data_len = r->src->len - r->data_start;
  return rt_source_read(r->src, 8, *text, *hlen, r->err);
}

/* A JSON integer in [0, max]. */
static bool get_uint(const RtJson *v, uint64_t max, uint64_t *out) {
  if (!v || v->kind != RT_JSON_NUM || !v->is_int || v->i < 0 || (uint64_t)v->i > max)
    return false;
  *out = (uint64_t)v->i;
  return true;
}

static RtStatus tensor_dtype(Reader *r, const char *name, const RtJson *v, RtDType *dt, Half *half) {
  if (!v || v->kind != RT_JSON_STR)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': dtype must be a string",
                     r->src->name, name);
  *half = HALF_NONE;
  for (int h = HALF_F16; h <= HALF_BF16; h++) {
    if (strcmp(v->str, half_names[h]) == 0) {
      *dt = RT_F32, *half = (Half)h;
      return RT_OK;
    }
  }
  for (int i = 0; i < RT_NDTYPES; i++) {
    if (strcmp(v->str, st_dtypes[i]) == 0) {
      *dt = (RtDType)i;
      return RT_OK;
    }
  }
  return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s' (kiln reads "
                   "F32 F64 I32 I64 U8 BOOL, and F16 BF16 as F32)", r->src->name, name, v->str);
}

static RtStatus tensor_shape(Reader *r, const char *name, const RtJson *v, int *rank, int64_t *shape) {
  if (!v || v->kind != RT_JSON_ARR || v->n > RT_MAX_RANK)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': shape must be a list of at most %d "
                     "integers", r->src->name, name, RT_MAX_RANK);
  for (int i = 0; i < v->n; i++) {
    uint64_t d;
    if (!get_uint(&v->items[i], RT_MAX_DIM, &d))
      return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': dimension %d is not an integer "
                       "in 0..%d", r->src->name, name, i, RT_MAX_DIM);
    shape[i] = (int64_t)d;
  }
  *rank = v->n;
  return RT_OK;
}

/* The tensor's bytes in the file: 2 per element when it is half precision. */
static size_t file_bytes(const Entry *e) {
  return e->half ? (size_t)rt_numel(&e->nt.t) * 2 : rt_tensor_bytes(&e->nt.t);
}

/* IEEE binary16 bits as the f32 of the same value (subnormals, infinities
 * and NaNs included). */
static uint32_t f16_to_f32_bits(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f)
    return sign | 0x7f800000u | man << 13;
  if (exp)
    return sign | (exp + 112) << 23 | man << 13;
  if (!man)
    return sign;
  int shift = 0;                           /* subnormal: normalise the mantissa */
  while (!(man & 0x400))
    man <<= 1, shift++;
  return sign | (uint32_t)(113 - shift) << 23 | (man & 0x3ff) << 13;
}

/* Widens n half-precision values read into the upper half of data (where
 * load_data put them) to f32 in place, front to back: value i's 4 bytes
 * end at or before the 2 bytes of value i+1, so nothing is overwritten
 * before it is read. */
static void widen(void *data, int64_t n, Half half) {
  const uint16_t *src = (const uint16_t *)((char *)data + n * 2);
  uint32_t *dst = data;
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + i, 2);
    uint32_t bits = half == HALF_BF16 ? (uint32_t)h << 16 : f16_to_f32_bits(h);
    memcpy(dst + i, &bits, 4);
  }
}

/* One member of the header: {"dtype", "shape", "data_offsets"} and no
 * other key; the byte count must match the shape. */
static RtStatus tensor_entry(Reader *r, const char *name, const RtJson *v, Entry *e) {
  if (v->kind != RT_JSON_OBJ || v->n != 3)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': expected an object with dtype, "
                     "shape and data_offsets only", r->src->name, name);
  const RtJson *offs = rt_json_get(v, "data_offsets");
  RtDType dt = RT_F32;
  int rank = 0;
  int64_t shape[RT_MAX_RANK];
  RtStatus st = tensor_dtype(r, name, rt_json_get(v, "dtype"), &dt, &e->half);
  if (st == RT_OK)
    st = tensor_shape(r, name, rt_json_get(v, "shape"), &rank, shape);
  if (st != RT_OK)
    return st;
  if (!offs || offs->kind != RT_JSON_ARR || offs->n != 2 ||
      !get_uint(&offs->items[0], INT64_MAX, &e->begin) ||
      !get_uint(&offs->items[1], INT64_MAX, &e->end) || e->begin > e->end)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end] "
                     "with 0 <= begin <= end", r->src->name, name);
  if (e->end > r->data_len)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu is past the "
                     "data area (%llu bytes)", r->src->name, name, (unsigned long long)e->end,
                     (unsigned long long)r->data_len);
  RtError te;
  if (rt_tensor_init(&e->nt.t, dt, rank, shape, &te) != RT_OK)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': %s", r->src->name, name, te.msg);
  if (e->end - e->begin != file_bytes(e)) {
    char buf[256];
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes, shape "
                     "%s of %s needs %zu", r->src->name, name,
                     (unsigned long long)(e->end - e->begin),
                     rt_shape_str(rank, shape, buf, sizeof buf),
                     e->half ? half_names[e->half] : rt_dtype_name(dt), file_bytes(e));
  }
  e->nt.name = (char *)name;
  return RT_OK;
}

static RtStatus metadata(Reader *r, const RtJson *v) {
  if (v->kind != RT_JSON_OBJ)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: __metadata__ must be an object of strings",
                     r->src->name);
  RtSafetensors *out = r->out;
  out->meta = rt_arena_alloc(r->a, (size_t)v->n * sizeof *out->meta);
  if (!out->meta)
    return rt_errorf(r->err, RT_ERR_NOMEM, "%s: out of memory", r->src->name);
  for (int i = 0; i < v->n; i++) {
    if (v->items[i].kind != RT_JSON_STR)
      return rt_errorf(r->err, RT_ERR_FORMAT, "%s: __metadata__ '%s' is not a string",
                       r->src->name, v->keys[i]);
    for (int j = 0; j < i; j++)
      if (strcmp(v->keys[i], v->keys[j]) == 0)
        return rt_errorf(r->err, RT_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice",
                         r->src->name, v->keys[i]);
    out->meta[i] = (RtMeta){v->keys[i], v->items[i].str};
  }
  out->nmeta = v->n;
  return RT_OK;
}

static int by_name(const void *x, const void *y) {
  return strcmp(((const Entry *)x)->nt.name, ((const Entry *)y)->nt.name);
}

static int by_offset(const void *x, const void *y) {
  const Entry *a = x, *b = y;
  if (a->begin != b->begin)
    return a->begin < b->begin ? -1 : 1;
  return (a->end > b->end) - (a->end < b->end);
}

/* The tensor members of the header, sorted by name and checked. */
static RtStatus entries(Reader *r, const RtJson *root, Entry **out, int *n) {
  Entry *es = rt_arena_alloc(r->a, (size_t)root->n * sizeof *es);
  const RtJson *meta = NULL;
  int k = 0;
  if (!es)
    return rt_errorf(r->err, RT_ERR_NOMEM, "%s: out of memory", r->src->name);
  for (int i = 0; i < root->n; i++) {
    RtStatus st;
    if (strcmp(root->keys[i], "__metadata__") == 0) {
      if (meta)
        return rt_errorf(r->err, RT_ERR_FORMAT, "%s: __metadata__ appears twice", r->src->name);
      meta = &root->items[i];
      st = metadata(r, meta);
    } else {
      st = tensor_entry(r, root->keys[i], &root->items[i], &es[k++]);
    }
    if (st != RT_OK)
      return st;
  }
  qsort(es, (size_t)k, sizeof *es, by_name);
  for (int i = 1; i < k; i++)
    if (strcmp(es[i - 1].nt.name, es[i].nt.name) == 0)
      return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s' appears twice", r->src->name,
                       es[i].nt.name);
  *out = es;
  *n = k;
  return RT_OK;
}

/* Sorted by offset, each tensor must start where the previous one ended,
 * and the last end where the file does. Sorts a copy: es stays by name. */
static RtStatus check_tiling(Reader *r, const Entry *es, int n) {
  Entry *sorted = rt_arena_alloc(r->a, (size_t)n * sizeof *sorted);
  if (!sorted)
    return rt_errorf(r->err, RT_ERR_NOMEM, "%s: out of memory", r->src->name);
  memcpy(sorted, es, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, by_offset);
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    if (sorted[i].begin != at)
      return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s' starts at %llu, expected %llu "
                       "(tensors overlap or leave a gap)", r->src->name, sorted[i].nt.name,
                       (unsigned long long)sorted[i].begin, (unsigned long long)at);
    at = sorted[i].end;
  }
  if (at != r->data_len)
    return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensors cover %llu bytes of a %llu-byte data area",
                     r->src->name, (unsigned long long)at, (unsigned long long)r->data_len);
  return RT_OK;
}

static size_t align_up(size_t n) { return (n + RT_ALIGN - 1) & ~(size_t)(RT_ALIGN - 1); }

/* One blob, each tensor at a 64-byte aligned offset of it, filled from the
 * file; the entries become out->tensors, in name order. */
static RtStatus load_data(Reader *r, const Entry *es, int n) {
  RtSafetensors *out = r->out;
  size_t total = 0;
  for (int i = 0; i < n; i++)
    total += align_up(rt_tensor_bytes(&es[i].nt.t));   /* at most twice the file size */
  out->tensors = rt_arena_alloc(r->a, (size_t)n * sizeof *out->tensors);
  out->blob = rt_aligned_alloc(total);
  if (!out->tensors || !out->blob)
    return rt_errorf(r->err, RT_ERR_NOMEM, "%s: out of memory for %zu bytes of data", r->src->name, total);
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    RtNamedTensor *nt = &out->tensors[out->n++];
    *nt = es[i].nt;
    nt->t.data = (char *)out->blob + at;
    size_t bytes = rt_tensor_bytes(&nt->t), stored = file_bytes(&es[i]);
    at += align_up(bytes);
    RtStatus st = rt_source_read(r->src, r->data_start + es[i].begin,
                                 (char *)nt->t.data + (bytes - stored), stored, r->err);
    if (st != RT_OK)
      return st;
    if (es[i].half)
      widen(nt->t.data, rt_numel(&nt->t), es[i].half);
    int64_t bad = rt_bad_bool(&nt->t);
    if (bad >= 0)
      return rt_errorf(r->err, RT_ERR_FORMAT, "%s: tensor '%s': bool element %lld is %d, not 0 or 1",
                       r->src->name, nt->name, (long long)bad, ((const uint8_t *)nt->t.data)[bad]);
  }
  return RT_OK;
}

static RtStatus st_load(RtSource *src, RtSafetensors *out, RtError *err) {
  memset(out, 0, sizeof *out);
  Reader r = {.src = src, .out = out, .err = err};
  if (!(r.a = out->arena = rt_arena_new()))
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", src->name);
  char *text = NULL;
  uint64_t hlen = 0;
  RtJson *root = NULL;
  Entry *es = NULL;
  int n = 0;
  RtStatus st = read_header(&r, &text, &hlen);
  if (st == RT_OK)
    st = rt_json_parse(r.a, text, hlen, rt_arena_printf(r.a, "%s: header", src->name), &root, err);
  if (st == RT_OK && root->kind != RT_JSON_OBJ)
    st = rt_errorf(err, RT_ERR_FORMAT, "%s: the header is not a JSON object", src->name);
  if (st == RT_OK)
    st = entries(&r, root, &es, &n);
  if (st == RT_OK)
    st = check_tiling(&r, es, n);
  if (st == RT_OK)
    st = load_data(&r, es, n);
  if (st != RT_OK)
    rt_st_free(out);
  return st;
}

RtStatus rt_st_read(const char *path, RtSafetensors *out, RtError *err) {
  RtSource src;
  memset(out, 0, sizeof *out);
  RtStatus st = rt_source_open(&src, path, err);
  if (st != RT_OK)
    return st;
  st = st_load(&src, out, err);
  rt_source_close(&src);
  return st;
}

RtStatus rt_st_read_mem(const void *buf, size_t len, const char *name, RtSafetensors *out, RtError *err) {
  RtSource src;
  rt_source_mem(&src, buf, len, name);
  return st_load(&src, out, err);
}

static int cmp_name(const void *key, const void *elem) {
  return strcmp(key, ((const RtNamedTensor *)elem)->name);
}

const RtTensor *rt_st_find(const RtSafetensors *st, const char *name) {
  if (!st->tensors)
    return NULL;
  const RtNamedTensor *nt = bsearch(name, st->tensors, (size_t)st->n, sizeof *nt, cmp_name);
  return nt ? &nt->t : NULL;
}

const char *rt_st_meta(const RtSafetensors *st, const char *key) {
  for (int i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta[i].key, key) == 0)
      return st->meta[i].value;
  return NULL;
}

void rt_st_free(RtSafetensors *st) {
  if (!st)
    return;
  rt_aligned_free(st->blob);
  rt_arena_free(st->arena);
  memset(st, 0, sizeof *st);
}

/* ---- writing ---- */

static void put_json_string(FILE *m, const char *s) {
  fputc('"', m);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\')
      fprintf(m, "\\%c", *c);
    else if (*c < 0x20)
      fprintf(m, "\\u%04x", *c);
    else
      fputc(*c, m);
  }
  fputc('"', m);
}

static void put_tensor_info(FILE *m, const RtNamedTensor *nt, uint64_t begin, uint64_t end) {
  put_json_string(m, nt->name);
  fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", st_dtypes[nt->t.dtype]);
  for (int d = 0; d < nt->t.rank; d++)
    fprintf(m, d ? ",%lld" : "%lld", (long long)nt->t.shape[d]);
  fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)begin, (unsigned long long)end);
}

/* The header text for tensors in `order`, padded with spaces so that 8 +
 * its length is a multiple of 8. Returns a malloc'd buffer, NULL if out of
 * memory. */
static char *make_header(const RtNamedTensor **order, int n, const RtMeta *meta,
                         int nmeta, size_t *len) {
  char *text = NULL;
  FILE *m = open_memstream(&text, len);
  if (!m)
    return NULL;
  fputc('{', m);
  if (nmeta > 0) {
    fputs("\"__metadata__\":{", m);
    for (int i = 0; i < nmeta; i++) {
      if (i)
        fputc(',', m);
      put_json_string(m, meta[i].key);
      fputc(':', m);
      put_json_string(m, meta[i].value);
    }
    fputs(n ? "}," : "}", m);
  }
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    const RtNamedTensor *nt = order[i];
    uint64_t bytes = rt_tensor_bytes(&nt->t);
    if (i)
      fputc(',', m);
    put_tensor_info(m, nt, at, at + bytes);
    at += bytes;
  }
  fputc('}', m);
  while ((8 + ftell(m)) % 8)
    fputc(' ', m);
  bool failed = ferror(m);
  if (fclose(m) != 0 || failed) {
    free(text);
    return NULL;
  }
  return text;
}

/* Names and values must survive the trip through the JSON header. */
static RtStatus check_string(const char *path, const char *what, const char *s, RtError *err) {
  if (!s || !*s || !rt_utf8_valid(s))
    return rt_errorf(err, RT_ERR_ARG, "%s: %s '%s' is empty or not valid UTF-8", path, what,
                     s ? s : "(null)");
  return RT_OK;
}

static int order_by_name(const void *x, const void *y) {
  return strcmp((*(const RtNamedTensor *const *)x)->name, (*(const RtNamedTensor *const *)y)->name);
}

/* Checks each tensor and fills order with them sorted by name. */
static RtStatus check_tensors(const char *path, const RtNamedTensor *ts, const RtNamedTensor **order,
                              int n, RtError *err) {
  for (int i = 0; i < n; i++) {
    const RtNamedTensor *nt = &ts[i];
    RtTensor check;
    RtError e;
    RtStatus st = check_string(path, "tensor name", nt->name, err);
    if (st != RT_OK)
      return st;
    if (strcmp(nt->name, "__metadata__") == 0)
      return rt_errorf(err, RT_ERR_ARG, "%s: a tensor cannot be named __metadata__", path);
    if (rt_tensor_init(&check, nt->t.dtype, nt->t.rank, nt->t.shape, &e) != RT_OK)
      return rt_errorf(err, RT_ERR_ARG, "%s: tensor '%s': %s", path, nt->name, e.msg);
    if (!nt->t.data && rt_numel(&nt->t) > 0)
      return rt_errorf(err, RT_ERR_ARG, "%s: tensor '%s' has no data", path, nt->name);
    order[i] = nt;
  }
  qsort(order, (size_t)n, sizeof *order, order_by_name);
  for (int i = 1; i < n; i++)
    if (strcmp(order[i - 1]->name, order[i]->name) == 0)
      return rt_errorf(err, RT_ERR_ARG, "%s: tensor '%s' appears twice", path, order[i]->name);
  return RT_OK;
}

static RtStatus check_meta(const char *path, const RtMeta *meta, int nmeta, RtError *err) {
  for (int i = 0; i < nmeta; i++) {
    RtStatus st = check_string(path, "metadata key", meta[i].key, err);
    if (st == RT_OK && (!meta[i].value || !rt_utf8_valid(meta[i].value)))
      st = rt_errorf(err, RT_ERR_ARG, "%s: metadata '%s' has no value or one not valid UTF-8",
                     path, meta[i].key);
    for (int j = 0; st == RT_OK && j < i; j++)
      if (strcmp(meta[i].key, meta[j].key) == 0)
        st = rt_errorf(err, RT_ERR_ARG, "%s: metadata key '%s' appears twice", path, meta[i].key);
    if (st != RT_OK)
      return st;
  }
  return RT_OK;
}

static RtStatus write_file(const char *path, const char *header, size_t hlen,
                           const RtNamedTensor **order, int n, RtError *err) {
  uint8_t len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  RtAtomicFile af;
  RtStatus st = rt_atomic_open(&af, path, err);
  if (st != RT_OK)
    return st;
  if ((st = rt_atomic_write(&af, len8, 8, err)) == RT_OK)
    st = rt_atomic_write(&af, header, hlen, err);
  for (int i = 0; st == RT_OK && i < n; i++)
    st = rt_atomic_write(&af, order[i]->t.data, rt_tensor_bytes(&order[i]->t), err);
  if (st != RT_OK) {
    rt_atomic_abort(&af);
    return st;
  }
  return rt_atomic_commit(&af, err);
}

RtStatus rt_st_write(const char *path, const RtNamedTensor *ts, int n, const RtMeta *meta, int nmeta,
                     RtError *err) {
  if (n < 0 || nmeta < 0 || (n && !ts) || (nmeta && !meta))
    return rt_errorf(err, RT_ERR_ARG, "%s: bad tensor or metadata list", path);
  const RtNamedTensor **order = malloc((size_t)(n ? n : 1) * sizeof *order);
  if (!order)
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", path);
  RtStatus st = check_tensors(path, ts, order, n, err);
  if (st == RT_OK)
    st = check_meta(path, meta, nmeta, err);
  size_t hlen = 0;
  char *header = st == RT_OK ? make_header(order, n, meta, nmeta, &hlen) : NULL;
  if (st == RT_OK && !header)
    st = rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory for the header", path);
  if (st == RT_OK)
    st = write_file(path, header, hlen, order, n, err);
  free(header);
  free(order);
  return st;
}

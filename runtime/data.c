/* Data files and datasets: what a training loop reads between steps.
 *
 * Files are read whole (gunzipped when they start with the gzip magic)
 * and parsed from memory: the data sets kiln trains on fit in memory, one
 * path serves files, buffers and the fuzzers, and the content says whether
 * a file is compressed, whatever its name.
 *
 * A dataset is a handful of named tensors with a common sample axis. Splits
 * and batches are gathers of whole samples by an index list: the split's
 * list is a seeded shuffle, an epoch's order another one on its own stream,
 * so both are pure functions of (seed, epoch). Gathers run on
 * rt_parallel_for over rows; every row is a plain copy, so the result is the
 * same at any thread count. */
#include "runtime/rt.h"
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum {
  GATHER_BYTES = 1 << 18,    /* bytes per parallel chunk of a gather */
  DEFLATE_RATIO = 1032,      /* deflate's largest expansion of one input byte */
};

/* ---- bytes: whole files, gunzipped ---- */

static bool is_gzip(const uint8_t *p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* A first output size: what the last member's trailer claims (ISIZE, the
 * size mod 2^32), never more than deflate can produce from n bytes, so a
 * lying trailer cannot make us allocate gigabytes up front. */
static size_t inflate_hint(const uint8_t *p, size_t n) {
  size_t isize = n >= 18 ? p[n - 4] | (size_t)p[n - 3] << 8 | (size_t)p[n - 2] << 16 |
                           (size_t)p[n - 1] << 24 : 0;
  size_t reach = n > RT_DATA_MAX_BYTES / DEFLATE_RATIO ? RT_DATA_MAX_BYTES : n * DEFLATE_RATIO;
  return isize < 4096 ? 4096 : min_size(isize, reach);
}

static bool grow_output(uint8_t **buf, size_t *cap) {
  if (*cap >= RT_DATA_MAX_BYTES)
    return false;
  size_t bigger = min_size(*cap * 2, RT_DATA_MAX_BYTES);
  uint8_t *p = realloc(*buf, bigger);
  if (!p)
    return false;
  *buf = p;
  *cap = bigger;
  return true;
}

/* One inflate step: feeds input in pieces a uInt can count. */
static int inflate_step(z_stream *z, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
                        size_t *used) {
  size_t consumed = (size_t)(z->next_in - in);
  if (z->avail_in == 0)
    z->avail_in = (uInt)min_size(n - consumed, UINT_MAX);
  z->next_out = buf + *used;
  z->avail_out = (uInt)min_size(cap - *used, UINT_MAX);
  int r = inflate(z, Z_NO_FLUSH);
  *used = (size_t)(z->next_out - buf);
  return r;
}

/* Inflates gzip members back to back into buf; a message in why on failure. */
static const char *inflate_all(z_stream *z, const uint8_t *in, size_t n, uint8_t **buf,
                               size_t *cap, size_t *used) {
  z->next_in = (Bytef *)in;
  for (;;) {
    if (*used == *cap && !grow_output(buf, cap))
      return *cap >= RT_DATA_MAX_BYTES ? "inflates past the limit of 4 GiB" : "out of memory";
    int r = inflate_step(z, in, n, *buf, *cap, used);
    size_t consumed = (size_t)(z->next_in - in);
    if (r == Z_STREAM_END) {
      if (consumed == n)
        return NULL;
      if (!is_gzip(in + consumed, n - consumed))
        return "bytes after the gzip data";
      inflateReset(z);             /* the next member of a concatenated file */
    } else if (r == Z_BUF_ERROR && consumed == n && z->avail_in == 0) {
      return "truncated gzip data";
    } else if (r != Z_OK && r != Z_BUF_ERROR) {
      return z->msg ? z->msg : "corrupt gzip data";
    }
  }
}

static RtStatus gunzip(RtBytes *b, const uint8_t *in, size_t n, const char *name, RtError *err) {
  z_stream z = {0};
  size_t cap = inflate_hint(in, n), used = 0;
  uint8_t *buf = malloc(cap);
  if (!buf || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
    free(buf);
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory to inflate", name);
  }
  const char *why = inflate_all(&z, in, n, &buf, &cap, &used);
  inflateEnd(&z);
  if (why) {
    free(buf);
    return rt_errorf(err, strcmp(why, "out of memory") ? RT_ERR_FORMAT : RT_ERR_NOMEM,
                     "%s: gzip: %s", name, why);
  }
  *b = (RtBytes){.data = buf, .len = used, .owned = buf};
  return RT_OK;
}

RtStatus rt_bytes_mem(RtBytes *b, const void *buf, size_t len, const char *name, RtError *err) {
  memset(b, 0, sizeof *b);
  b->data = buf ? buf : (const uint8_t *)"";
  b->len = buf ? len : 0;
  if (!is_gzip(b->data, b->len))
    return RT_OK;
  RtStatus st = gunzip(b, b->data, b->len, name ? name : "<memory>", err);
  if (st != RT_OK)
    memset(b, 0, sizeof *b);
  return st;
}

RtStatus rt_bytes_file(RtBytes *b, const char *path, RtError *err) {
  RtSource src;
  memset(b, 0, sizeof *b);
  RtStatus st = rt_source_open(&src, path, err);
  if (st != RT_OK)
    return st;
  if (src.len > RT_DATA_MAX_BYTES) {
    rt_source_close(&src);
    return rt_errorf(err, RT_ERR_IO, "%s: %llu bytes is over the 4 GiB limit for data files",
                     path, (unsigned long long)src.len);
  }
  uint8_t *raw = malloc(src.len ? src.len : 1);
  st = raw ? rt_source_read(&src, 0, raw, src.len, err)
           : rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                       (unsigned long long)src.len);
  rt_source_close(&src);
  if (st == RT_OK && is_gzip(raw, src.len)) {
    st = gunzip(b, raw, src.len, path, err);
    free(raw);
  } else if (st == RT_OK) {
    *b = (RtBytes){.data = raw, .len = src.len, .owned = raw};
  } else {
    free(raw);
  }
  return st;
}

void rt_bytes_free(RtBytes *b) {
  if (!b)
    return;
  free(b->owned);
  memset(b, 0, sizeof *b);
}

/* ---- datasets ---- */

int rt_data_find(const RtDataset *ds, const char *name) {
  for (int i = 0; i < ds->n; i++)
    if (strcmp(ds->t[i].name, name) == 0)
      return i;
  return -1;
}

static RtStatus find_tensor(const RtDataset *ds, const char *name, int *at, RtError *err) {
  *at = rt_data_find(ds, name);
  if (*at < 0)
    return rt_errorf(err, RT_ERR_ARG, "the dataset has no tensor named '%s'", name);
  return RT_OK;
}

RtStatus rt_data_add(RtDataset *ds, const char *name, RtTensor *t, RtError *err) {
  if (!name || !*name)
    return rt_errorf(err, RT_ERR_ARG, "a dataset tensor needs a name");
  if (rt_data_find(ds, name) >= 0)
    return rt_errorf(err, RT_ERR_ARG, "the dataset already has a tensor named '%s'", name);
  if (ds->n == RT_DATA_MAX_TENSORS)
    return rt_errorf(err, RT_ERR_ARG, "'%s': a dataset holds at most %d tensors", name,
                     RT_DATA_MAX_TENSORS);
  if (t->rank < 1)
    return rt_errorf(err, RT_ERR_SHAPE, "'%s' is a scalar; a dataset tensor has a sample axis", name);
  if (rt_tensor_bytes(t) == 0 ? rt_numel(t) != 0 : !t->data)
    return rt_errorf(err, RT_ERR_ARG, "'%s' has a bad shape or no data", name);
  if (ds->n > 0 && t->shape[0] != ds->len)
    return rt_errorf(err, RT_ERR_SHAPE, "'%s' has %lld samples, '%s' has %lld", name,
                     (long long)t->shape[0], ds->t[0].name, (long long)ds->len);
  char *copy = strdup(name);
  if (!copy)
    return rt_errorf(err, RT_ERR_NOMEM, "out of memory");
  ds->t[ds->n++] = (RtNamedTensor){.name = copy, .t = *t};
  ds->len = t->shape[0];
  t->data = NULL;
  return RT_OK;
}

/* Adds t, which is freed whether or not the dataset takes it. */
static RtStatus add_or_free(RtDataset *ds, const char *name, RtTensor *t, RtError *err) {
  RtStatus st = rt_data_add(ds, name, t, err);
  rt_tensor_free(t);
  return st;
}

static void drop_last(RtDataset *ds) {
  ds->n--;
  free(ds->t[ds->n].name);
  rt_tensor_free(&ds->t[ds->n].t);
  if (ds->n == 0)
    ds->len = 0;
}

RtStatus rt_data_add_file(RtDataset *ds, const char *name, const char *path, RtError *err) {
  RtBytes b;
  RtStatus st = rt_bytes_file(&b, path, err);
  if (st != RT_OK)
    return st;
  RtTensor t = {0};
  if (b.len >= 6 && memcmp(b.data, "\x93NUMPY", 6) == 0)
    st = rt_npy_read_mem(b.data, b.len, path, &t, err);
  else if (b.len >= 4 && b.data[0] == 0 && b.data[1] == 0)
    st = rt_idx_read_mem(b.data, b.len, path, &t, err);
  else
    st = rt_errorf(err, RT_ERR_FORMAT, "%s: neither a .npy nor an IDX file (CSV files are read "
                   "with their options by rt_data_add_csv)", path);
  rt_bytes_free(&b);
  return st == RT_OK ? add_or_free(ds, name, &t, err) : st;
}

RtStatus rt_data_add_csv(RtDataset *ds, const char *path, const RtCsvOptions *opt,
                         const char *xname, const char *yname, RtError *err) {
  RtCsv c;
  RtStatus st = rt_csv_read(path, opt, &c, err);
  if (st != RT_OK)
    return st;
  if ((st = add_or_free(ds, xname, &c.x, err)) == RT_OK && c.y.data &&
      (st = add_or_free(ds, yname, &c.y, err)) != RT_OK)
    drop_last(ds);             /* all or nothing */
  rt_csv_free(&c);
  return st;
}

void rt_data_free(RtDataset *ds) {
  if (!ds)
    return;
  while (ds->n > 0)
    drop_last(ds);
  memset(ds, 0, sizeof *ds);
}

/* ---- conversions and checks ---- */

static int64_t per_sample(const RtTensor *t) { return t->shape[0] ? rt_numel(t) / t->shape[0] : 0; }

static bool is_int(RtDType dt) { return dt == RT_I32 || dt == RT_I64 || dt == RT_U8 || dt == RT_BOOL; }

static int64_t get_int(const RtTensor *t, int64_t k) {
  switch (t->dtype) {
  case RT_I32: return ((const int32_t *)t->data)[k];
  case RT_I64: return ((const int64_t *)t->data)[k];
  default: return ((const uint8_t *)t->data)[k];   /* u8, bool */
  }
}

static double get_real(const RtTensor *t, int64_t k) {
  switch (t->dtype) {
  case RT_F32: return ((const float *)t->data)[k];
  case RT_F64: return ((const double *)t->data)[k];
  default: return (double)get_int(t, k);
  }
}

/* Element k of src into dst (already allocated), or false if it does not fit. */
static bool convert_one(const RtTensor *src, RtTensor *dst, int64_t k, double scale) {
  switch (dst->dtype) {
  case RT_F32: {
    double v = get_real(src, k) * scale;
    ((float *)dst->data)[k] = (float)v;
    return !isfinite(v) || isfinite((float)v);
  }
  case RT_F64: ((double *)dst->data)[k] = get_real(src, k) * scale; return true;
  case RT_I64: ((int64_t *)dst->data)[k] = get_int(src, k); return true;
  default: {                   /* i32 */
    int64_t v = get_int(src, k);
    ((int32_t *)dst->data)[k] = (int32_t)v;
    return v >= INT32_MIN && v <= INT32_MAX;
  }
  }
}

static RtStatus check_conversion(const RtTensor *t, const char *name, RtDType to, double scale,
                                 RtError *err) {
  bool to_real = to == RT_F32 || to == RT_F64;
  if (!to_real && !(to == RT_I32 || to == RT_I64))
    return rt_errorf(err, RT_ERR_ARG, "'%s': cannot convert to %s (f32, f64, i32 or i64)", name,
                     rt_dtype_name(to));
  if (!to_real && !is_int(t->dtype))
    return rt_errorf(err, RT_ERR_ARG, "'%s': cannot convert %s to %s", name,
                     rt_dtype_name(t->dtype), rt_dtype_name(to));
  if (!isfinite(scale) || (!to_real && scale != 1))
    return rt_errorf(err, RT_ERR_ARG, "'%s': scale %g %s", name, scale,
                     to_real ? "is not finite" : "must be 1 for an integer dtype");
  return RT_OK;
}

RtStatus rt_data_convert(RtDataset *ds, const char *name, RtDType to, double scale, RtError *err) {
  int at;
  RtStatus st = find_tensor(ds, name, &at, err);
  if (st != RT_OK)
    return st;
  RtTensor *t = &ds->t[at].t;
  if ((st = check_conversion(t, name, to, scale, err)) != RT_OK)
    return st;
  if (t->dtype == to && scale == 1)
    return RT_OK;
  RtTensor out;
  RtError e;
  if ((st = rt_tensor_alloc(&out, to, t->rank, t->shape, &e)) != RT_OK)
    return rt_errorf(err, st, "'%s': %s", name, e.msg);
  for (int64_t k = 0, n = rt_numel(t); k < n; k++) {
    if (!convert_one(t, &out, k, scale)) {
      rt_tensor_free(&out);
      return rt_errorf(err, RT_ERR_ARG, "'%s': sample %lld: %g does not fit %s", name,
                       (long long)(k / per_sample(t)), get_real(t, k) * scale, rt_dtype_name(to));
    }
  }
  rt_tensor_free(t);
  *t = out;
  return RT_OK;
}

RtStatus rt_data_reshape(RtDataset *ds, const char *name, int rank, const int64_t *shape,
                         RtError *err) {
  int at;
  RtStatus st = find_tensor(ds, name, &at, err);
  if (st != RT_OK)
    return st;
  RtTensor *t = &ds->t[at].t, shaped;
  char want[256], have[256];
  if (rt_tensor_init(&shaped, t->dtype, rank, shape, NULL) != RT_OK || rank < 1 ||
      shape[0] != t->shape[0] || rt_numel(&shaped) != rt_numel(t))
    return rt_errorf(err, RT_ERR_SHAPE, "'%s': cannot reshape %s to %s (same samples, same size)",
                     name, rt_shape_str(t->rank, t->shape, have, sizeof have),
                     rank >= 0 && rank <= RT_MAX_RANK ? rt_shape_str(rank, shape, want, sizeof want)
                                                      : "a bad rank");
  shaped.data = t->data;
  *t = shaped;
  return RT_OK;
}

RtStatus rt_data_check_finite(const RtDataset *ds, const char *name, RtError *err) {
  int at;
  RtStatus st = find_tensor(ds, name, &at, err);
  if (st != RT_OK)
    return st;
  const RtTensor *t = &ds->t[at].t;
  if (t->dtype != RT_F32 && t->dtype != RT_F64)
    return RT_OK;
  for (int64_t k = 0, n = rt_numel(t); k < n; k++) {
    double v = get_real(t, k);
    if (isfinite(v))
      continue;
    int64_t row = per_sample(t);
    return rt_errorf(err, RT_ERR_FORMAT, "'%s': sample %lld holds %s (element %lld of %lld)",
                     name, (long long)(k / row), isnan(v) ? "NaN" : "an infinity",
                     (long long)(k % row), (long long)row);
  }
  return RT_OK;
}

RtStatus rt_data_check_labels(const RtDataset *ds, const char *name, int64_t classes, RtError *err) {
  int at;
  RtStatus st = find_tensor(ds, name, &at, err);
  if (st != RT_OK)
    return st;
  const RtTensor *t = &ds->t[at].t;
  if (!is_int(t->dtype))
    return rt_errorf(err, RT_ERR_ARG, "'%s' is %s; class labels are integers", name,
                     rt_dtype_name(t->dtype));
  if (classes < 1)
    return rt_errorf(err, RT_ERR_ARG, "'%s': %lld classes", name, (long long)classes);
  for (int64_t k = 0, n = rt_numel(t); k < n; k++) {
    int64_t v = get_int(t, k);
    if (v < 0 || v >= classes)
      return rt_errorf(err, RT_ERR_FORMAT, "'%s': sample %lld has label %lld, outside [0, %lld)",
                       name, (long long)(k / per_sample(t)), (long long)v, (long long)classes);
  }
  return RT_OK;
}

/* ---- gathers: subsets, splits, batches ---- */

/* Row i of every destination is sample idx[i] (or base + i without idx). */
typedef struct {
  const RtDataset *ds;
  const int64_t *idx;
  int64_t base;
  uint8_t *dst[RT_DATA_MAX_TENSORS];
} Gather;

static size_t row_bytes(const RtTensor *t) { return (size_t)per_sample(t) * rt_dtype_size(t->dtype); }

static void gather_task(void *ctx, int64_t lo, int64_t hi) {
  const Gather *g = ctx;
  for (int j = 0; j < g->ds->n; j++) {
    const RtTensor *t = &g->ds->t[j].t;
    size_t rb = row_bytes(t);
    for (int64_t i = lo; i < hi; i++) {
      int64_t s = g->idx ? g->idx[i] : g->base + i;
      memcpy(g->dst[j] + (size_t)i * rb, (const uint8_t *)t->data + (size_t)s * rb, rb);
    }
  }
}

static void gather(Gather *g, int64_t n, int32_t nthreads) {
  size_t sample = 0;
  for (int j = 0; j < g->ds->n; j++)
    sample += row_bytes(&g->ds->t[j].t);
  int64_t grain = sample ? (int64_t)(GATHER_BYTES / sample) : n;
  rt_parallel_for(gather_task, g, n, grain, nthreads);
}

static RtStatus check_indices(const RtDataset *ds, const int64_t *idx, int64_t n, RtError *err) {
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= ds->len)
      return rt_errorf(err, RT_ERR_ARG, "sample index %lld (at position %lld) is outside [0, %lld)",
                       (long long)idx[i], (long long)i, (long long)ds->len);
  return RT_OK;
}

/* An empty dataset shaped like ds with n samples, each tensor allocated. */
static RtStatus alloc_like(const RtDataset *ds, int64_t n, RtDataset *out, RtError *err) {
  memset(out, 0, sizeof *out);
  for (int j = 0; j < ds->n; j++) {
    const RtTensor *t = &ds->t[j].t;
    RtTensor nt;
    int64_t shape[RT_MAX_RANK];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = n;
    RtStatus st = rt_tensor_alloc(&nt, t->dtype, t->rank, shape, err);
    if (st == RT_OK)
      st = add_or_free(out, ds->t[j].name, &nt, err);
    if (st != RT_OK) {
      rt_data_free(out);
      return st;
    }
  }
  out->len = n;
  return RT_OK;
}

RtStatus rt_data_subset(const RtDataset *ds, const int64_t *idx, int64_t n, RtDataset *out,
                        RtError *err) {
  memset(out, 0, sizeof *out);
  if (n < 0)
    return rt_errorf(err, RT_ERR_ARG, "a subset of %lld samples", (long long)n);
  RtStatus st = check_indices(ds, idx, n, err);
  if (st != RT_OK || (st = alloc_like(ds, n, out, err)) != RT_OK)
    return st;
  Gather g = {.ds = ds, .idx = idx};
  for (int j = 0; j < ds->n; j++)
    g.dst[j] = out->t[j].t.data;
  gather(&g, n, 0);
  return RT_OK;
}

RtStatus rt_data_split(const RtDataset *ds, double frac, uint64_t seed, RtDataset *train,
                       RtDataset *val, RtError *err) {
  memset(train, 0, sizeof *train);
  memset(val, 0, sizeof *val);
  if (!(frac >= 0 && frac < 1))
    return rt_errorf(err, RT_ERR_ARG, "validation fraction %g is outside [0, 1)", frac);
  int64_t n = ds->len, nval = llround(frac * (double)n);
  if (ds->n == 0 || n == 0)
    return rt_errorf(err, RT_ERR_ARG, "cannot split an empty dataset");
  if ((frac > 0 && nval == 0) || nval == n)
    return rt_errorf(err, RT_ERR_ARG, "validation fraction %g of %lld samples leaves the %s set empty",
                     frac, (long long)n, nval == 0 ? "validation" : "training");
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  if (!perm)
    return rt_errorf(err, RT_ERR_NOMEM, "out of memory for %lld indices", (long long)n);
  rt_shuffle(perm, n, seed, rt_hash_str("kiln.split"));
  RtStatus st = rt_data_subset(ds, perm, n - nval, train, err);
  if (st == RT_OK && (st = rt_data_subset(ds, perm + (n - nval), nval, val, err)) != RT_OK)
    rt_data_free(train);
  free(perm);
  return st;
}

void rt_data_epoch_order(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
  rt_shuffle(perm, n, seed, rt_hash_str("kiln.epoch") + (uint64_t)epoch);
}

static RtStatus check_batch_buffer(const RtTensor *src, const RtTensor *dst, const char *name,
                                   int64_t m, RtError *err) {
  char want[256], have[256];
  bool same = dst->dtype == src->dtype && dst->rank == src->rank && dst->shape[0] >= m &&
              (dst->data || m == 0);
  for (int i = 1; same && i < src->rank; i++)
    same = dst->shape[i] == src->shape[i];
  if (same)
    return RT_OK;
  int64_t shape[RT_MAX_RANK];
  memcpy(shape, src->shape, sizeof shape);
  shape[0] = m;
  return rt_errorf(err, RT_ERR_ARG, "batch buffer for '%s' is %s %s%s, the batch needs %s %s", name,
                   rt_dtype_name(dst->dtype),
                   dst->rank >= 0 && dst->rank <= RT_MAX_RANK
                       ? rt_shape_str(dst->rank, dst->shape, have, sizeof have) : "(bad rank)",
                   dst->data || m == 0 ? "" : " without data", rt_dtype_name(src->dtype),
                   rt_shape_str(src->rank, shape, want, sizeof want));
}

RtStatus rt_data_batch(const RtDataset *ds, const int64_t *perm, int64_t start, int64_t count,
                       RtTensor *out, int32_t nthreads, int64_t *got, RtError *err) {
  *got = 0;
  if (start < 0 || start > ds->len || count < 0)
    return rt_errorf(err, RT_ERR_ARG, "batch of %lld at %lld is outside the %lld samples",
                     (long long)count, (long long)start, (long long)ds->len);
  int64_t m = count < ds->len - start ? count : ds->len - start;
  RtStatus st = perm ? check_indices(ds, perm + start, m, err) : RT_OK;
  for (int j = 0; j < ds->n && st == RT_OK; j++)
    st = check_batch_buffer(&ds->t[j].t, &out[j], ds->t[j].name, m, err);
  if (st != RT_OK)
    return st;
  Gather g = {.ds = ds, .idx = perm ? perm + start : NULL, .base = start};
  for (int j = 0; j < ds->n; j++)
    g.dst[j] = out[j].data;
  gather(&g, m, nthreads);
  *got = m;
  return RT_OK;
}

/* Character-level text data: a file of UTF-8 text made into sequences of
 * symbol indices for a language model, the count-model baselines it is
 * measured against, and the sampling of the next symbol from logits.
 *
 * The vocabulary is the set of characters (code points) the file holds,
 * sorted by code point, after an end symbol at index 0: a pure function of
 * the text, so the same file gives the same indices on every machine. Two
 * layouts (docs/language.md, "text"):
 *
 *   lines:   one sample per line (a word list), T = the longest line + 1
 *            x = [END, c1 .. cL, END ...]   y = [c1 .. cL, END, -1 ...]
 *            (-1: padding, which cross_entropy(ignore_index = -1) skips)
 *   windows: a running corpus cut into windows of T characters
 *            x = s[iT .. iT+T)              y = s[iT+1 .. iT+T+1)
 *
 * Both are rows of the dataset that training splits and batches (data.c). */
#include "runtime/rt.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { TEXT_MAX_CODE = 0x10FFFF, TEXT_DEFAULT_MAXLEN = 256 };

/* ---- UTF-8 ---- */

int rt_utf8_decode(const uint8_t *s, size_t n, int32_t *cp) {
  static const uint8_t extra[] = {1, 1, 2, 3};      /* 110x, 110x, 1110, 11110 by top bits */
  static const int32_t least[] = {0x80, 0x80, 0x800, 0x10000};
  if (n == 0)
    return 0;
  if (s[0] < 0x80) {
    *cp = s[0];
    return 1;
  }
  int k = s[0] >= 0xF8 ? -1 : s[0] >= 0xF0 ? 3 : s[0] >= 0xE0 ? 2 : s[0] >= 0xC0 ? 0 : -1;
  if (k < 0 || (size_t)extra[k] >= n)
    return 0;
  int32_t c = s[0] & (0x3F >> extra[k]);
  for (int i = 1; i <= extra[k]; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    c = c << 6 | (s[i] & 0x3F);
  }
  if (c < least[k] || c > TEXT_MAX_CODE || (c >= 0xD800 && c <= 0xDFFF))
    return 0;                  /* overlong, out of range, a surrogate */
  *cp = c;
  return extra[k] + 1;
}

int rt_utf8_encode(int32_t cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  int n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  static const uint8_t lead[] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (int i = n - 1; i > 0; i--, cp >>= 6)
    out[i] = (char)(0x80 | (cp & 0x3F));
  out[0] = (char)(lead[n] | cp);
  return n;
}

/* ---- the text as code points, line by line ---- */

/* The file's code points (without NUL and, in lines mode, '\r' before '\n');
 * line[i] is the 1-based line of cps[i], for messages. */
typedef struct Cps {
  int32_t *cp;
  int64_t n, cap;
} Cps;

static bool cps_push(Cps *c, int32_t cp) {
  if (c->n == c->cap) {
    int64_t cap = c->cap ? 2 * c->cap : 4096;
    int32_t *p = realloc(c->cp, (size_t)cap * sizeof *p);
    if (!p)
      return false;
    c->cp = p;
    c->cap = cap;
  }
  c->cp[c->n++] = cp;
  return true;
}

static RtStatus decode_all(const uint8_t *s, size_t n, const char *name, Cps *out, RtError *err) {
  int64_t line = 1;
  for (size_t at = 0; at < n;) {
    int32_t cp;
    int k = rt_utf8_decode(s + at, n - at, &cp);
    if (k == 0)
      return rt_errorf(err, RT_ERR_FORMAT, "%s:%lld: not UTF-8 text (byte 0x%02x)", name,
                       (long long)line, s[at]);
    if (cp == 0)
      return rt_errorf(err, RT_ERR_FORMAT, "%s:%lld: a NUL character: not a text file", name,
                       (long long)line);
    if (!cps_push(out, cp))
      return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", name);
    line += cp == '\n';
    at += (size_t)k;
  }
  return RT_OK;
}

/* ---- the character filter: "a-z", "abc", "a-z'" ---- */

static bool in_chars(const int32_t *set, int nset, int32_t cp) {
  for (int i = 0; i + 1 < nset; i += 2)
    if (cp >= set[i] && cp <= set[i + 1])
      return true;
  return false;
}

/* The filter as [lo, hi] pairs: "x-y" is a range, any other character itself. */
static int parse_chars(const char *spec, int32_t *set, int cap) {
  int32_t cps[512];
  int n = 0, k = 0;
  for (size_t at = 0, len = strlen(spec); at < len && n < 512;) {
    int used = rt_utf8_decode((const uint8_t *)spec + at, len - at, &cps[n]);
    if (!used)
      return -1;
    at += (size_t)used;
    n++;
  }
  for (int i = 0; i < n && k + 2 <= cap; i++) {
    bool range = i + 2 < n && cps[i + 1] == '-';
    set[k++] = cps[i];
    set[k++] = range ? cps[i + 2] : cps[i];
    i += range ? 2 : 0;
  }
  return k;
}

/* ---- vocabulary ---- */

static int cmp_cp(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* END, then the distinct code points of cps sorted. */
static RtStatus build_vocab(const Cps *c, RtText *t, const char *name, RtError *err) {
  int32_t *sorted = malloc((size_t)(c->n + 1) * sizeof *sorted);
  if (!sorted)
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", name);
  memcpy(sorted, c->cp, (size_t)c->n * sizeof *sorted);
  qsort(sorted, (size_t)c->n, sizeof *sorted, cmp_cp);
  int64_t k = 0;
  for (int64_t i = 0; i < c->n; i++)
    if (k == 0 || sorted[k - 1] != sorted[i])
      sorted[k++] = sorted[i];
  t->vocab = malloc((size_t)(k + 1) * sizeof *t->vocab);
  if (!t->vocab) {
    free(sorted);
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", name);
  }
  t->vocab[0] = RT_TEXT_END;
  memcpy(t->vocab + 1, sorted, (size_t)k * sizeof *sorted);
  t->nvocab = (int)k + 1;
  free(sorted);
  return RT_OK;
}

int rt_text_index(const int32_t *vocab, int nvocab, int32_t cp) {
  int lo = 1, hi = nvocab - 1;  /* symbols 1.. are sorted */
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (vocab[mid] == cp)
      return mid;
    if (vocab[mid] < cp)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

char *rt_text_vocab_utf8(const int32_t *vocab, int nvocab) {
  char *s = malloc((size_t)nvocab * 4 + 1), *p = s;
  for (int i = 1; s && i < nvocab; i++)
    p += rt_utf8_encode(vocab[i], p);
  if (s)
    *p = 0;
  return s;
}

int rt_text_vocab_parse(const char *s, int32_t **vocab) {
  size_t len = strlen(s);
  int32_t *v = malloc((len + 1) * sizeof *v);
  int n = 1;
  if (!v)
    return -1;
  v[0] = RT_TEXT_END;
  for (size_t at = 0; at < len; n++) {
    int used = rt_utf8_decode((const uint8_t *)s + at, len - at, &v[n]);
    if (!used || v[n] == 0 || (n > 1 && v[n] <= v[n - 1])) {
      free(v);                 /* not a vocabulary kiln wrote: sorted, distinct */
      return -1;
    }
    at += (size_t)used;
  }
  *vocab = v;
  return n;
}

/* ---- the two layouts ---- */

static RtStatus alloc_xy(RtText *t, int64_t n, int64_t steps, const char *name, RtError *err) {
  int64_t shape[2] = {n, steps};
  RtStatus st = rt_tensor_alloc(&t->x, RT_I32, 2, shape, err);
  if (st == RT_OK)
    st = rt_tensor_alloc(&t->y, RT_I64, 2, shape, err);
  return st == RT_OK ? RT_OK : rt_errorf(err, st, "%s: %lld samples of %lld: %s", name,
                                         (long long)n, (long long)steps, err ? err->msg : "");
}

/* Lines kept by the filter (not blank): their starts and lengths in cps. */
typedef struct Lines {
  int64_t *start, *len, n, longest;
} Lines;

static RtStatus keep_line(Lines *l, int64_t start, int64_t len, const char *name, RtError *err) {
  if (l->n % 1024 == 0) {
    int64_t *s = realloc(l->start, (size_t)(l->n + 1024) * sizeof *s);
    int64_t *n = s ? realloc(l->len, (size_t)(l->n + 1024) * sizeof *n) : NULL;
    if (s)
      l->start = s;
    if (!n)
      return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", name);
    l->len = n;
  }
  l->start[l->n] = start;
  l->len[l->n++] = len;
  l->longest = len > l->longest ? len : l->longest;
  return RT_OK;
}

/* Splits cps into lines (dropping '\r' before '\n'), keeps the non-blank
 * ones whose characters all pass the filter, and checks their length. */
static RtStatus split_lines(Cps *c, const RtTextOptions *o, const char *name, Lines *l,
                            RtText *t, RtError *err) {
  int32_t set[1024];
  int nset = o->chars ? parse_chars(o->chars, set, 1024) : 0;
  int64_t maxlen = o->max_len > 0 ? o->max_len : TEXT_DEFAULT_MAXLEN, keep = 0;
  if (nset < 0)
    return rt_errorf(err, RT_ERR_ARG, "%s: chars=\"%s\" is not UTF-8", name, o->chars);
  for (int64_t at = 0, line = 1; at < c->n; line++) {
    int64_t end = at;
    bool pass = true;
    while (end < c->n && c->cp[end] != '\n')
      end++;
    int64_t len = end - at - (end > at && c->cp[end - 1] == '\r');
    for (int64_t i = at; i < at + len && o->chars; i++)
      pass = pass && in_chars(set, nset, c->cp[i]);
    if (pass && len > maxlen)
      return rt_errorf(err, RT_ERR_FORMAT, "%s:%lld: a line of %lld characters is longer than "
                       "maxlen = %lld", name, (long long)line, (long long)len, (long long)maxlen);
    RtStatus st = RT_OK;
    if (pass && len > 0) {
      memmove(c->cp + keep, c->cp + at, (size_t)len * sizeof *c->cp);
      st = keep_line(l, keep, len, name, err);
      keep += len;
    } else {
      t->skipped += len > 0;
    }
    if (st != RT_OK)
      return st;
    at = end + 1;
  }
  c->n = keep;                 /* the vocabulary is the kept lines' */
  return l->n ? RT_OK : rt_errorf(err, RT_ERR_FORMAT, "%s: no lines%s", name,
                                  o->chars ? " made of the characters chars= allows" : "");
}

static RtStatus layout_lines(Cps *c, const RtTextOptions *o, const char *name, RtText *t,
                             RtError *err) {
  Lines l = {0};
  RtStatus st = split_lines(c, o, name, &l, t, err);
  if (st == RT_OK && (st = build_vocab(c, t, name, err)) == RT_OK)
    st = alloc_xy(t, l.n, l.longest + 1, name, err);
  for (int64_t i = 0, T = l.longest + 1; st == RT_OK && i < l.n; i++) {
    int32_t *x = (int32_t *)t->x.data + i * T;
    int64_t *y = (int64_t *)t->y.data + i * T;
    x[0] = 0;                  /* END starts every word */
    for (int64_t s = 0; s < T; s++) {
      int32_t ch = s < l.len[i] ? rt_text_index(t->vocab, t->nvocab, c->cp[l.start[i] + s]) : 0;
      if (s + 1 < T)
        x[s + 1] = ch;
      y[s] = s <= l.len[i] ? ch : -1;   /* the word, END, then padding */
    }
  }
  free(l.start);
  free(l.len);
  return st;
}

static RtStatus layout_windows(Cps *c, const RtTextOptions *o, const char *name, RtText *t,
                               RtError *err) {
  int64_t T = o->window, n = T > 0 ? (c->n - 1) / T : 0;
  if (T <= 0)
    return rt_errorf(err, RT_ERR_ARG, "%s: a running text needs window = T (characters per "
                     "sample), or lines = true", name);
  if (n <= 0)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: %lld characters do not make one window of %lld "
                     "and the character after it", name, (long long)c->n, (long long)T);
  RtStatus st = build_vocab(c, t, name, err);
  if (st == RT_OK)
    st = alloc_xy(t, n, T, name, err);
  for (int64_t i = 0; st == RT_OK && i < n * T; i++) {
    ((int32_t *)t->x.data)[i] = rt_text_index(t->vocab, t->nvocab, c->cp[i]);
    ((int64_t *)t->y.data)[i] = rt_text_index(t->vocab, t->nvocab, c->cp[i + 1]);
  }
  return st;
}

RtStatus rt_text_read_mem(const void *buf, size_t len, const char *name, const RtTextOptions *o,
                          RtText *out, RtError *err) {
  memset(out, 0, sizeof *out);
  Cps c = {0};
  RtBytes b;
  RtStatus st = rt_bytes_mem(&b, buf, len, name, err);
  if (st != RT_OK)
    return st;
  if (b.len == 0)
    st = rt_errorf(err, RT_ERR_FORMAT, "%s: the file is empty", name);
  if (st == RT_OK)
    st = decode_all(b.data, b.len, name, &c, err);
  rt_bytes_free(&b);
  if (st == RT_OK)
    st = o->lines ? layout_lines(&c, o, name, out, err) : layout_windows(&c, o, name, out, err);
  free(c.cp);
  if (st != RT_OK)
    rt_text_free(out);
  return st;
}

RtStatus rt_text_read(const char *path, const RtTextOptions *o, RtText *out, RtError *err) {
  RtBytes b;
  memset(out, 0, sizeof *out);
  RtStatus st = rt_bytes_file(&b, path, err);
  if (st != RT_OK)
    return st;
  st = rt_text_read_mem(b.data, b.len, path, o, out, err);
  rt_bytes_free(&b);
  return st;
}

void rt_text_free(RtText *t) {
  if (!t)
    return;
  free(t->vocab);
  rt_tensor_free(&t->x);
  rt_tensor_free(&t->y);
  memset(t, 0, sizeof *t);
}

/* ---- count-model baselines ---- */

static int64_t int_at(const RtTensor *t, int64_t i) {
  return t->dtype == RT_I32 ? ((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
}

/* Add-k smoothed counts of (context, next) with context the input symbol
 * (bigram) or nothing (unigram), fitted on the training pairs. */
typedef struct Counts {
  double *pair, *ctx;          /* [V * V] and [V]; the unigram uses row 0 */
  int V;
  bool bigram;
} Counts;

static int context(const Counts *c, int64_t x) { return c->bigram ? (int)x : 0; }

static void count(Counts *c, const RtTensor *x, const RtTensor *y) {
  for (int64_t i = 0, n = rt_numel(y); i < n; i++) {
    int64_t next = int_at(y, i), prev = int_at(x, i);
    if (next < 0 || next >= c->V || prev < 0 || prev >= c->V)
      continue;                /* padding */
    c->pair[context(c, prev) * c->V + next]++;
    c->ctx[context(c, prev)]++;
  }
}

/* Mean -log p(next | context) over the targets of (x, y) that are not padding. */
static double nats(const Counts *c, const RtTensor *x, const RtTensor *y, double k, int64_t *seen) {
  double sum = 0;
  *seen = 0;
  for (int64_t i = 0, n = rt_numel(y); i < n; i++) {
    int64_t next = int_at(y, i), prev = int_at(x, i);
    if (next < 0 || next >= c->V || prev < 0 || prev >= c->V)
      continue;
    int ctx = context(c, prev);
    sum -= log((c->pair[ctx * c->V + next] + k) / (c->ctx[ctx] + k * c->V));
    ++*seen;
  }
  return *seen ? sum / (double)*seen : NAN;
}

RtStatus rt_text_baselines(const RtTensor *xtrain, const RtTensor *ytrain, const RtTensor *xval,
                           const RtTensor *yval, int nvocab, double k, RtTextBaselines *out,
                           RtError *err) {
  Counts c = {.pair = calloc((size_t)nvocab * nvocab, sizeof(double)),
              .ctx = calloc((size_t)nvocab, sizeof(double)), .V = nvocab};
  if (!c.pair || !c.ctx) {
    free(c.pair);
    free(c.ctx);
    return rt_errorf(err, RT_ERR_NOMEM, "out of memory for %d x %d counts", nvocab, nvocab);
  }
  for (int pass = 0; pass < 2; pass++) {
    c.bigram = pass == 1;
    memset(c.pair, 0, (size_t)nvocab * nvocab * sizeof(double));
    memset(c.ctx, 0, (size_t)nvocab * sizeof(double));
    count(&c, xtrain, ytrain);
    double v = nats(&c, xval, yval, k, &out->chars);
    *(c.bigram ? &out->bigram : &out->unigram) = v;
  }
  free(c.pair);
  free(c.ctx);
  return RT_OK;
}

/* ---- sampling ---- */

double rt_sample_uniform(uint64_t seed, uint64_t i) {
  uint64_t stream = rt_hash_str("kiln.sample");
  uint64_t hi = rt_random_u32(seed, stream, 2 * i), lo = rt_random_u32(seed, stream, 2 * i + 1);
  return ((hi << 32 | lo) >> 11) * 0x1p-53;
}

int64_t rt_sample_index(const float *logits, int64_t n, double temperature, uint64_t seed,
                        uint64_t i) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; j++)
    best = logits[j] > logits[best] ? j : best;
  if (!(temperature > 0))
    return best;               /* greedy */
  double total = 0, u = rt_sample_uniform(seed, i);
  for (int64_t j = 0; j < n; j++)
    total += exp((logits[j] - logits[best]) / temperature);
  double target = u * total, run = 0;
  for (int64_t j = 0; j < n; j++) {
    run += exp((logits[j] - logits[best]) / temperature);
    if (target < run)
      return j;
  }
  return best;                 /* u * total rounded up to the total */
}

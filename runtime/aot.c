/* Exported models at run time: instances, weights, inference and the
 * training step, read from the descriptor the export wrote (runtime/aot.h).
 *
 * An instance owns the regions of each compiled graph: inference, and the
 * training step when there is one. Both start from the same weights (the
 * embedded image, or a .safetensors file checked name by name against the
 * descriptor). A training step updates its own copy of the parameters and
 * state in place; the next inference first copies them over, by name (the
 * two graphs were planned separately, so their offsets differ). */
#include "runtime/aot.h"
#include "runtime/rt.h"
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct AotGraph {
  KilnAotEntry entry;
  const int64_t *region_bytes;
  int nin, nout, nstored, ninit, lr;
  const int64_t *t;          /* tensor records */
  const int64_t *init;       /* init records */
} AotGraph;

struct KilnAot {
  const KilnAotModel *d;
  int ngraphs;
  void *regions[2][KILN_AOT_REGIONS];
  bool train_newest;         /* the step's weights are newer than inference's */
  int threads;
  char err[640];
};

/* ---- the descriptor ----------------------------------------------------- */

static AotGraph graph_at(const KilnAotModel *d, int gi) {
  const int64_t *w = d->words + KILN_AOT_HEAD_WORDS;
  AotGraph g = {0};
  for (int i = 0;; i++) {
    g.entry = d->entry[i];
    g.region_bytes = w;
    g.nin = (int)w[5];
    g.nout = (int)w[6];
    g.nstored = (int)w[7];
    g.ninit = (int)w[8];
    g.lr = (int)w[9];
    g.t = w + KILN_AOT_GRAPH_WORDS;
    g.init = g.t + (int64_t)(g.nin + g.nout + g.nstored) * KILN_AOT_TENSOR_WORDS;
    if (i == gi)
      return g;
    w = g.init + (int64_t)g.ninit * KILN_AOT_INIT_WORDS;
  }
}

static const int64_t *trec(const AotGraph *g, int i) { return g->t + (int64_t)i * KILN_AOT_TENSOR_WORDS; }
static int ntensors(const AotGraph *g) { return g->nin + g->nout + g->nstored; }

static const char *tname(const KilnAotModel *d, const int64_t *t) {
  return d->strings + t[KILN_AOT_T_NAME];
}

static int64_t dim_at(const int64_t *t, int k, int64_t batch) {
  return t[KILN_AOT_T_MUL + k] * batch + t[KILN_AOT_T_ADD + k];
}

static int64_t tbytes(const int64_t *t, int64_t batch) {
  int64_t n = rt_dtype_size((RtDType)t[KILN_AOT_T_DTYPE]);
  for (int k = 0; k < t[KILN_AOT_T_RANK]; k++)
    n *= dim_at(t, k, batch);
  return n;
}

static void *tdata(void *const *regions, const int64_t *t) {
  return (char *)regions[t[KILN_AOT_T_REGION]] + t[KILN_AOT_T_OFFSET];
}

static int64_t max_batch(const KilnAotModel *d) { return d->words[1]; }

KilnAotSig kiln_aot_sig(const KilnAotModel *d) {
  AotGraph g = graph_at(d, 0);
  return (KilnAotSig){g.nin, g.nout, max_batch(d)};
}

const char *kiln_aot_io_name(const KilnAotModel *d, int i) {
  AotGraph g = graph_at(d, 0);
  return tname(d, trec(&g, i));
}

void kiln_aot_io_shape(const KilnAotModel *d, int i, int64_t batch, int *dtype, int *rank,
                       int64_t *shape) {
  AotGraph g = graph_at(d, 0);
  const int64_t *t = trec(&g, i);
  *dtype = (int)t[KILN_AOT_T_DTYPE];
  *rank = (int)t[KILN_AOT_T_RANK];
  for (int k = 0; k < *rank; k++)
    shape[k] = dim_at(t, k, batch);
}

int kiln_aot_batch_leading(const KilnAotModel *d) {
  AotGraph g = graph_at(d, 0);
  for (int i = 0; i < g.nin + g.nout; i++) {
    const int64_t *t = trec(&g, i);
    if (t[KILN_AOT_T_RANK] < 1 || t[KILN_AOT_T_MUL] != 1 || t[KILN_AOT_T_ADD] != 0)
      return 0;
    for (int k = 1; k < t[KILN_AOT_T_RANK]; k++)
      if (t[KILN_AOT_T_MUL + k])
        return 0;
  }
  return 1;
}

/* ---- errors ------------------------------------------------------------- */

static int fail(KilnAot *m, int st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(KilnAot *m, int st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (m)
    vsnprintf(m->err, sizeof m->err, fmt, ap);
  va_end(ap);
  return st;
}

const char *kiln_aot_error(const KilnAot *m) { return m ? m->err : "out of memory"; }

static const char *shape_text(const int64_t *t, int64_t batch, char *buf, size_t len) {
  int64_t shape[8];
  for (int k = 0; k < t[KILN_AOT_T_RANK]; k++)
    shape[k] = dim_at(t, k, batch);
  return rt_shape_str((int)t[KILN_AOT_T_RANK], shape, buf, len);
}

/* ---- weights ------------------------------------------------------------ */

static void copy_embedded(const KilnAotModel *d, const AotGraph *g, void *const *regions) {
  for (int i = 0; i < g->ninit; i++) {
    const int64_t *r = g->init + (int64_t)i * KILN_AOT_INIT_WORDS;
    memcpy((char *)regions[r[0]] + r[1], d->blob + r[3], r[2]);
  }
}

static bool same_shape(const int64_t *t, const RtTensor *x) {
  if (x->dtype != (RtDType)t[KILN_AOT_T_DTYPE] || x->rank != t[KILN_AOT_T_RANK])
    return false;
  for (int k = 0; k < x->rank; k++)
    if (x->shape[k] != t[KILN_AOT_T_ADD + k])
      return false;
  return true;
}

static void fill(const int64_t *t, void *p) {
  double v;
  memcpy(&v, &t[KILN_AOT_T_FILL_VALUE], sizeof v);
  int64_t n = tbytes(t, 0) / (int64_t)rt_dtype_size((RtDType)t[KILN_AOT_T_DTYPE]);
  for (int64_t i = 0; i < n; i++)
    if (t[KILN_AOT_T_DTYPE] == RT_F64)
      ((double *)p)[i] = v;
    else if (t[KILN_AOT_T_DTYPE] == RT_F32)
      ((float *)p)[i] = (float)v;
    else if (t[KILN_AOT_T_DTYPE] == RT_I64)
      ((int64_t *)p)[i] = (int64_t)v;
    else if (t[KILN_AOT_T_DTYPE] == RT_I32)
      ((int32_t *)p)[i] = (int32_t)v;
}

/* Every parameter and state value of g from the file; state the file lacks
 * (an optimizer's moments) starts as the descriptor says. */
static int load_stored(KilnAot *m, const KilnAotModel *d, const AotGraph *g, void *const *regions,
                       const RtSafetensors *st, const char *path) {
  char want[128], got[128];
  for (int i = g->nin + g->nout; i < ntensors(g); i++) {
    const int64_t *t = trec(g, i);
    const RtTensor *x = rt_st_find(st, tname(d, t));
    if (!x && t[KILN_AOT_T_FILL]) {
      fill(t, tdata(regions, t));
      continue;
    }
    if (!x)
      return fail(m, KILN_AOT_ERR_WEIGHTS, "%s: the weights lack '%s' (%s %s)", path, tname(d, t),
                  rt_dtype_name((RtDType)t[KILN_AOT_T_DTYPE]), shape_text(t, 0, want, sizeof want));
    if (!same_shape(t, x))
      return fail(m, KILN_AOT_ERR_WEIGHTS, "%s: '%s' is %s %s, the model needs %s %s", path,
                  tname(d, t), rt_dtype_name(x->dtype), rt_shape_str(x->rank, x->shape, got, sizeof got),
                  rt_dtype_name((RtDType)t[KILN_AOT_T_DTYPE]), shape_text(t, 0, want, sizeof want));
    memcpy(tdata(regions, t), x->data, tbytes(t, 0));
  }
  return KILN_AOT_OK;
}

/* The .safetensors named at export lives beside the object that holds d
 * (the .so or the program), unless its path is absolute. */
static const char *default_weights(const KilnAotModel *d, char *buf, size_t len) {
  Dl_info info;
  const char *f = d->weights_file;
  if (!f || f[0] == '/' || !dladdr(d, &info) || !info.dli_fname || !strchr(info.dli_fname, '/'))
    return f;
  const char *slash = strrchr(info.dli_fname, '/');
  snprintf(buf, len, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, f);
  return buf;
}

static int read_weights(KilnAot *m, const char *path, RtSafetensors *st) {
  RtError e;
  RtStatus rs = rt_st_read(path, st, &e);
  if (rs == RT_OK)
    return KILN_AOT_OK;
  return fail(m, rs == RT_ERR_IO ? KILN_AOT_ERR_IO : rs == RT_ERR_NOMEM ? KILN_AOT_ERR_NOMEM
                                                                           : KILN_AOT_ERR_WEIGHTS,
              "%s", e.msg);
}

/* Zeroes the regions of graph gi, copies the embedded image, then the file's
 * weights if there is one (st). */
static int init_graph(KilnAot *m, const KilnAotModel *d, int gi, void *const *regions,
                      const RtSafetensors *st, const char *path) {
  AotGraph g = graph_at(d, gi);
  for (int r = 0; r < KILN_AOT_REGIONS; r++)
    memset(regions[r], 0, g.region_bytes[r]);
  copy_embedded(d, &g, regions);
  return st ? load_stored(m, d, &g, regions, st, path) : KILN_AOT_OK;
}

/* The weights to load: the caller's file, or the export's, or none. */
static int init_all(KilnAot *m, const KilnAotModel *d, int first, int last,
                    void *(*regions)[KILN_AOT_REGIONS], const char *weights) {
  char buf[4096];
  const char *path = weights ? weights : default_weights(d, buf, sizeof buf);
  RtSafetensors st = {0};
  int rc = path ? read_weights(m, path, &st) : KILN_AOT_OK;
  for (int gi = first; gi <= last && rc == KILN_AOT_OK; gi++)
    rc = init_graph(m, d, gi, regions[gi - first], path ? &st : NULL, path);
  rt_st_free(&st);
  return rc;
}

/* ---- instances ---------------------------------------------------------- */

static int graph_count(const KilnAotModel *d) { return (int)d->words[2]; }

static bool valid(const KilnAotModel *d) {
  return d && d->words && d->words[0] == KILN_AOT_VERSION && graph_count(d) >= 1 &&
         graph_count(d) <= 2;
}

static int alloc_regions(KilnAot *m) {
  for (int gi = 0; gi < m->ngraphs; gi++) {
    AotGraph g = graph_at(m->d, gi);
    for (int r = 0; r < KILN_AOT_REGIONS; r++)
      if (!(m->regions[gi][r] = rt_aligned_alloc(g.region_bytes[r] ? g.region_bytes[r] : 64)))
        return fail(m, KILN_AOT_ERR_NOMEM, "cannot allocate %lld bytes for the model's memory",
                    (long long)g.region_bytes[r]);
  }
  return KILN_AOT_OK;
}

int kiln_aot_create(const KilnAotModel *d, KilnAot **out, const char *weights) {
  KilnAot *m = *out = calloc(1, sizeof *m);
  if (!m)
    return KILN_AOT_ERR_NOMEM;
  if (!valid(d))
    return fail(m, KILN_AOT_ERR_ARG, "the model's descriptor is not version %d", KILN_AOT_VERSION);
  m->d = d;
  m->ngraphs = graph_count(d);
  int rc = alloc_regions(m);
  return rc ? rc : init_all(m, d, 0, m->ngraphs - 1, m->regions, weights);
}

void kiln_aot_destroy(KilnAot *m) {
  if (!m)
    return;
  for (int gi = 0; gi < 2; gi++)
    for (int r = 0; r < KILN_AOT_REGIONS; r++)
      rt_aligned_free(m->regions[gi][r]);
  free(m);
}

int kiln_aot_set_threads(KilnAot *m, int nthreads) {
  if (!m || nthreads < 0)
    return fail(m, KILN_AOT_ERR_ARG, "the thread count %d is negative", nthreads);
  m->threads = nthreads;
  return KILN_AOT_OK;
}

/* A stored tensor of graph gi by name, or NULL. */
static const int64_t *find_stored(const KilnAotModel *d, const AotGraph *g, const char *name) {
  for (int i = g->nin + g->nout; i < ntensors(g); i++)
    if (!strcmp(tname(d, trec(g, i)), name))
      return trec(g, i);
  return NULL;
}

/* After training steps: the step's parameters and state into inference's. */
static void sync_inference(KilnAot *m) {
  if (!m->train_newest)
    return;
  AotGraph inf = graph_at(m->d, 0), tr = graph_at(m->d, 1);
  for (int i = inf.nin + inf.nout; i < ntensors(&inf); i++) {
    const int64_t *t = trec(&inf, i), *s = find_stored(m->d, &tr, tname(m->d, t));
    if (s)
      memcpy(tdata(m->regions[0], t), tdata(m->regions[1], s), tbytes(t, 0));
  }
  m->train_newest = false;
}

void *kiln_aot_find(KilnAot *m, const char *name) {
  if (!m || !name)
    return NULL;
  for (int gi = m->train_newest ? 1 : 0, n = 0; n < m->ngraphs; n++, gi = 1 - gi) {
    AotGraph g = graph_at(m->d, gi);
    const int64_t *t = find_stored(m->d, &g, name);
    if (t)
      return tdata(m->regions[gi], t);
  }
  return NULL;
}

/* ---- running ------------------------------------------------------------ */

static int check_batch(KilnAot *m, const KilnAotModel *d, int64_t batch) {
  if (batch < 1 || batch > max_batch(d))
    return fail(m, KILN_AOT_ERR_ARG, "batch %lld is outside 1..%lld (the compiled maximum)",
                (long long)batch, (long long)max_batch(d));
  return KILN_AOT_OK;
}

/* Copies the first n inputs of graph gi in, runs it, and the outputs out
 * (out may be NULL: they stay in the regions). */
static int run_graph(KilnAot *m, int gi, int64_t batch, const void *const *in, int n,
                     void *const *out) {
  AotGraph g = graph_at(m->d, gi);
  int rc = check_batch(m, m->d, batch);
  if (rc)
    return rc;
  for (int i = 0; i < n; i++) {
    if (!in || !in[i])
      return fail(m, KILN_AOT_ERR_ARG, "input '%s' is NULL", tname(m->d, trec(&g, i)));
    memcpy(tdata(m->regions[gi], trec(&g, i)), in[i], tbytes(trec(&g, i), batch));
  }
  for (int i = 0; out && i < g.nout; i++)
    if (!out[i])
      return fail(m, KILN_AOT_ERR_ARG, "output '%s' is NULL", tname(m->d, trec(&g, g.nin + i)));
  g.entry(m->regions[gi], batch, m->threads);
  for (int i = 0; out && i < g.nout; i++) {
    const int64_t *t = trec(&g, g.nin + i);
    memcpy(out[i], tdata(m->regions[gi], t), tbytes(t, batch));
  }
  return KILN_AOT_OK;
}

int kiln_aot_infer(KilnAot *m, int64_t batch, const void *const *in, void *const *out) {
  if (!m || !out)
    return fail(m, KILN_AOT_ERR_ARG, "no output array");
  sync_inference(m);
  AotGraph g = graph_at(m->d, 0);
  return run_graph(m, 0, batch, in, g.nin, out);
}

/* The batch the inputs imply, checking every dim against the model. */
static int input_batch(KilnAot *m, const AotGraph *g, const KilnAotTensor *in, int64_t *batch) {
  char want[128], got[128];
  *batch = 1;
  for (int i = 0; i < g->nin; i++) {        /* the first dim that depends on the batch tells it */
    const int64_t *t = trec(g, i);
    for (int k = 0; k < t[KILN_AOT_T_RANK] && k < in[i].rank; k++)
      if (t[KILN_AOT_T_MUL + k] > 0 && in[i].shape[k] >= t[KILN_AOT_T_ADD + k]) {
        *batch = (in[i].shape[k] - t[KILN_AOT_T_ADD + k]) / t[KILN_AOT_T_MUL + k];
        goto check;
      }
  }
check:
  for (int i = 0; i < g->nin; i++) {
    const int64_t *t = trec(g, i);
    bool ok = in[i].dtype == t[KILN_AOT_T_DTYPE] && in[i].rank == t[KILN_AOT_T_RANK];
    for (int k = 0; ok && k < in[i].rank; k++)
      ok = in[i].shape[k] == dim_at(t, k, *batch);
    if (!ok || !in[i].data)
      return fail(m, KILN_AOT_ERR_INPUT, "input '%s' is %s %s%s, the model expects %s %s",
                  tname(m->d, t), rt_dtype_name((RtDType)in[i].dtype),
                  in[i].rank >= 0 && in[i].rank <= 8 ? rt_shape_str(in[i].rank, in[i].shape, got, sizeof got) : "(bad rank)",
                  in[i].data ? "" : " with no data", rt_dtype_name((RtDType)t[KILN_AOT_T_DTYPE]),
                  shape_text(t, *batch, want, sizeof want));
  }
  return check_batch(m, m->d, *batch);
}

int kiln_aot_infer_tensors(KilnAot *m, const KilnAotTensor *in, int nin, KilnAotTensor *out,
                           int nout) {
  if (!m)
    return KILN_AOT_ERR_ARG;
  AotGraph g = graph_at(m->d, 0);
  if (nin != g.nin || nout < 0 || nout > g.nout || (nin && !in) || (nout && !out))
    return fail(m, KILN_AOT_ERR_ARG, "the model takes %d inputs and gives %d outputs; got %d and %d",
                g.nin, g.nout, nin, nout);
  int64_t batch = 1;
  const void *ptr[64];
  int rc = g.nin <= 64 ? input_batch(m, &g, in, &batch) : fail(m, KILN_AOT_ERR_ARG, "too many inputs");
  if (rc)
    return rc;
  for (int i = 0; i < nin; i++)
    ptr[i] = in[i].data;
  sync_inference(m);
  if ((rc = run_graph(m, 0, batch, ptr, nin, NULL)))
    return rc;
  for (int i = 0; i < nout; i++) {
    const int64_t *t = trec(&g, g.nin + i);
    kiln_aot_io_shape(m->d, g.nin + i, batch, &out[i].dtype, &out[i].rank, out[i].shape);
    if (out[i].data)
      memcpy(out[i].data, tdata(m->regions[0], t), tbytes(t, batch));
    else
      out[i].data = tdata(m->regions[0], t);
  }
  return KILN_AOT_OK;
}

static double scalar(void *const *regions, const int64_t *t) {
  void *p = tdata(regions, t);
  return t[KILN_AOT_T_DTYPE] == RT_F64 ? *(double *)p : *(float *)p;
}

int kiln_aot_train_step(KilnAot *m, int64_t batch, const void *const *in, float lr, float *loss) {
  if (!m)
    return KILN_AOT_ERR_ARG;
  if (m->ngraphs < 2)
    return fail(m, KILN_AOT_ERR_ARG, "this export has no training step (export a model with a "
                "train block, without --infer-only)");
  AotGraph g = graph_at(m->d, 1);
  const int64_t *lt = trec(&g, g.lr);
  void *lp = tdata(m->regions[1], lt);
  if (lt[KILN_AOT_T_DTYPE] == RT_F64)
    *(double *)lp = lr;
  else
    *(float *)lp = lr;
  int rc = run_graph(m, 1, batch, in, g.lr, NULL);
  if (rc)
    return rc;
  m->train_newest = true;
  if (loss)
    *loss = (float)scalar(m->regions[1], trec(&g, g.nin));
  return KILN_AOT_OK;
}

/* Every parameter and state value but the optimizer's, as kiln_save_weights. */
int kiln_aot_save_weights(KilnAot *m, const char *path) {
  if (!m || !path)
    return fail(m, KILN_AOT_ERR_ARG, "no path");
  sync_inference(m);
  AotGraph g = graph_at(m->d, m->ngraphs - 1);
  RtNamedTensor *ts = calloc(g.nstored + 1, sizeof *ts);
  if (!ts)
    return fail(m, KILN_AOT_ERR_NOMEM, "out of memory");
  int n = 0;
  for (int i = g.nin + g.nout; i < ntensors(&g); i++) {
    const int64_t *t = trec(&g, i);
    if (!strncmp(tname(m->d, t), "optim.", 6))
      continue;
    RtTensor x = {(RtDType)t[KILN_AOT_T_DTYPE], (int)t[KILN_AOT_T_RANK], {0},
                  tdata(m->regions[m->ngraphs - 1], t)};
    for (int k = 0; k < x.rank; k++)
      x.shape[k] = t[KILN_AOT_T_ADD + k];
    ts[n++] = (RtNamedTensor){(char *)tname(m->d, t), x};
  }
  RtError e;
  RtStatus rs = rt_st_write(path, ts, n, NULL, 0, &e);
  free(ts);
  return rs == RT_OK ? KILN_AOT_OK : fail(m, KILN_AOT_ERR_IO, "%s", e.msg);
}

/* ---- caller-owned memory ------------------------------------------------ */

int kiln_aot_init_regions(const KilnAotModel *d, int graph, void *const *regions,
                          const char *weights) {
  if (!valid(d) || graph < 0 || graph >= graph_count(d) || !regions)
    return KILN_AOT_ERR_ARG;
  for (int r = 0; r < KILN_AOT_REGIONS; r++)
    if (!regions[r] || (uintptr_t)regions[r] % RT_ALIGN)
      return KILN_AOT_ERR_ARG;
  void *rs[1][KILN_AOT_REGIONS];
  memcpy(rs[0], regions, sizeof rs[0]);
  return init_all(NULL, d, graph, graph, rs, weights);
}

int kiln_aot_run(const KilnAotModel *d, int graph, void *const *regions, int64_t batch,
                 int nthreads) {
  if (!valid(d) || graph < 0 || graph >= graph_count(d) || !regions || nthreads < 0 ||
      check_batch(NULL, d, batch))
    return KILN_AOT_ERR_ARG;
  d->entry[graph]((void **)regions, batch, nthreads);
  return KILN_AOT_OK;
}

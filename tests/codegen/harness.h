/* Runs an IR graph through the whole pipeline, as tools/api.c does: the
 * passes (memory planning), codegen, LLVM O3, the ORC JIT, then the entry
 *
 *   void entry(void **regions, int64_t batch, int32_t nthreads)
 *
 * on one caller-owned buffer per region, each tensor at its planned offset.
 * Tensors come back as doubles (Ten), whatever their dtype, so a test
 * writes each reference once, in double precision. A Model owns its graph,
 * its JIT, its regions and every Ten made from it: model_free releases all.
 * Failures go through cmocka (fail_msg), naming the step and the reason. */
#ifndef KILN_TESTS_CODEGEN_HARNESS_H
#define KILN_TESTS_CODEGEN_HARNESS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codegen/codegen.h"
#include "passes/passes.h"

#define HARNESS_THREADS 2        /* threads the memory plan is made for, by default */
#define HARNESS_GUARD 65536      /* bytes after each region that no run may touch, by default */

/* A dense C-order tensor of doubles. */
typedef struct Ten {
  int rank;
  int64_t dim[RT_MAX_RANK];
  int64_t n;                     /* elements */
  double *d;
} Ten;

typedef struct Model {
  RtArena *arena;                /* diagnostics and the Ten data */
  Diags diags;
  Graph *g;
  CgJit *jit;
  void (*entry)(void **regions, int64_t batch, int32_t nthreads);
  void *regions[REGION_COUNT];
  int64_t batch;                 /* of the last run: the batch size variable's value */
  int plan_threads;              /* threads the memory plan is made for */
  int64_t guard;                 /* bytes after each region that no run may touch */
  int opt;                       /* the pipeline's -O level: 0 unless a test sets it */
  int lanes;                     /* the passes' f32 lanes: 0 (no layout pass) unless set */
  PassLayout layout;             /* the layout pass's choice forced, or LAYOUT_COST */
  bool no_winograd;              /* the winograd pass stays off */
  bool keep_equal_functions;     /* LLVM compiles functions of equal code apart (CgCtx's) */
  const void *(*param_data)(const Graph *g, const Value *p, void *user); /* known weights, or NULL */
  void *param_user;
} Model;

/* "f32[3, 4]" as a Type: TY(RT_F32, 3, 4). Rank 0 is ir_type_const(dt, 0, NULL). */
#define TY(dt, ...)                                                                   \
  ir_type_const((dt), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),      \
                (int64_t[]){__VA_ARGS__})
#define NOLOC srcloc_none()

static inline Graph *model_new(Model *m, const char *name) {
  memset(m, 0, sizeof *m);
  m->arena = rt_arena_new();
  assert_non_null(m->arena);
  diag_init(&m->diags, m->arena);
  m->g = ir_graph_new(name, &m->diags);
  assert_non_null(m->g);
  m->plan_threads = HARNESS_THREADS;
  m->guard = HARNESS_GUARD;
  return m->g;
}

static inline void model_free(Model *m) {
  for (int r = 0; r < REGION_COUNT; r++)
    rt_aligned_free(m->regions[r]);
  if (m->jit)
    cg_jit_free(m->jit);
  ir_graph_free(m->g);
  rt_arena_free(m->arena);
  memset(m, 0, sizeof *m);
}

static inline void model_fail_diags(Model *m, const char *step) {
  diag_print(&m->diags, stderr);
  fail_msg("%s: %d error(s) in graph %s", step, m->diags.nerrors, m->g->name);
}

/* Codegen alone, for tests of its errors: 0, or -1 with err filled. */
static inline int model_codegen(Model *m, CgCtx *c, char *err, int errlen) {
  PassCtx cx = {.opt = m->opt, .threads = m->plan_threads, .verify = true,
                .work_bytes = cg_work_bytes, .lanes = m->lanes, .layout = m->layout, .no_winograd = m->no_winograd,
                .param_data = m->param_data, .param_user = m->param_user};
  if (m->diags.nerrors)
    model_fail_diags(m, "building");
  if (pass_run_pipeline(m->g, &cx) < 0)
    model_fail_diags(m, "passes");
  if (cg_ctx_init_jit(c, m->g->name, err, errlen))
    fail_msg("cg_ctx_init_jit: %s", err);
  c->keep_equal_functions = m->keep_equal_functions;
  return cg_build_graph(c, m->g, "entry", err, errlen);
}

/* LLVM at -O`llvm_opt` and the JIT for a built context (disposed here),
 * the function `entry`, then zeroed regions of the planned sizes with
 * their guards. */
static inline void model_jit(Model *m, CgCtx *c, int llvm_opt, const char *entry) {
  char err[1024] = "";
  if (cg_optimize(c, llvm_opt, err, sizeof err) || cg_jit_new(&m->jit, err, sizeof err) ||
      cg_jit_add(m->jit, c, err, sizeof err)) {
    cg_ctx_dispose(c);
    fail_msg("compiling %s: %s", m->g->name, err);
  }
  cg_ctx_dispose(c);
  m->entry = (void (*)(void **, int64_t, int32_t))cg_jit_lookup(m->jit, entry);
  assert_non_null(m->entry);
  for (int r = 0; r < REGION_COUNT; r++) {
    m->regions[r] = rt_aligned_alloc(m->g->region_bytes[r] + m->guard);
    assert_non_null(m->regions[r]);
    memset((char *)m->regions[r] + m->g->region_bytes[r], 0xa5, m->guard);
  }
  m->batch = m->g->batch_var >= 0 ? m->g->max_batch : 0;
}

/* Passes, codegen, O3, JIT and regions. */
static inline void model_compile(Model *m) {
  char err[1024] = "";
  CgCtx c;
  if (model_codegen(m, &c, err, sizeof err)) {
    cg_ctx_dispose(&c);
    fail_msg("compiling %s: %s", m->g->name, err);
  }
  model_jit(m, &c, 3, "entry");
}

static inline void *model_ptr(const Model *m, const Value *v) {
  assert_true(v->region >= 0 && v->region < REGION_COUNT);
  return (char *)m->regions[v->region] + v->offset;
}

/* v's dims with the batch of the last run (the maximum before any). */
static inline int64_t model_dims(const Model *m, const Value *v, int64_t *dims) {
  const Graph *g = m->g;
  int64_t vals[64], n = 1;
  assert_true(g->nsvars <= 64);
  for (int i = 0; i < g->nsvars; i++)
    vals[i] = i == g->batch_var ? m->batch : g->svals[i];
  for (int i = 0; i < v->type.rank; i++) {
    assert_true(sz_eval(v->type.dim[i], vals, &dims[i]));
    n *= dims[i];
  }
  return n;
}

static inline double elem_get(const void *p, RtDType dt, int64_t i) {
  switch (dt) {
  case RT_F32: return ((const float *)p)[i];
  case RT_F64: return ((const double *)p)[i];
  case RT_I32: return ((const int32_t *)p)[i];
  case RT_I64: return (double)((const int64_t *)p)[i];
  default: return ((const uint8_t *)p)[i];
  }
}

static inline void elem_set(void *p, RtDType dt, int64_t i, double x) {
  switch (dt) {
  case RT_F32: ((float *)p)[i] = (float)x; break;
  case RT_F64: ((double *)p)[i] = x; break;
  case RT_I32: ((int32_t *)p)[i] = (int32_t)x; break;
  case RT_I64: ((int64_t *)p)[i] = (int64_t)x; break;
  default: ((uint8_t *)p)[i] = (uint8_t)x; break;
  }
}

/* Uniform in [lo, hi) (integers: rounded) over v's bytes at the maximum batch. */
static inline void model_fill(Model *m, const Value *v, double lo, double hi, uint64_t seed) {
  int64_t n = ir_numel_max(m->g, &v->type);
  void *p = model_ptr(m, v);
  assert_true(n >= 0);
  if (v->type.dt == RT_F32) {
    rt_fill_uniform(p, n, (float)lo, (float)hi, seed, (uint64_t)v->id);
    return;
  }
  double *tmp = malloc(sizeof(double) * (n ? n : 1));
  assert_non_null(tmp);
  rt_fill_uniform_f64(tmp, n, lo, hi, seed, (uint64_t)v->id);
  for (int64_t i = 0; i < n; i++)
    elem_set(p, v->type.dt, i, v->type.dt == RT_F64 ? tmp[i] : floor(tmp[i]));
  free(tmp);
}

/* Every input and parameter uniform in [-2, 2). */
static inline void model_fill_all(Model *m, uint64_t seed) {
  for (int i = 0; i < m->g->ninputs; i++)
    model_fill(m, m->g->inputs[i], -2, 2, seed);
  for (int i = 0; i < m->g->nparams; i++)
    model_fill(m, m->g->params[i], -2, 2, seed);
}

/* Poisons scratch and the outputs (all bits set: NaN, or -1 for integers)
 * so that an element no kernel wrote, or a read of one, shows. */
static inline void model_run(Model *m, int64_t batch, int nthreads) {
  const Graph *g = m->g;
  memset(m->regions[REGION_SCRATCH], 0xff, g->region_bytes[REGION_SCRATCH]);
  for (int i = 0; i < g->noutputs; i++) {
    const Value *o = g->outputs[i];
    int64_t bytes = ir_bytes_max(g, &o->type);
    if (o->role == V_TEMP && o->region == REGION_IO)
      memset(model_ptr(m, o), 0xff, bytes);
  }
  m->batch = g->batch_var >= 0 ? batch : 0;
  m->entry(m->regions, m->batch, nthreads);
  for (int r = 0; r < REGION_COUNT; r++) {
    const uint64_t *guard = (const uint64_t *)((char *)m->regions[r] + g->region_bytes[r]);
    for (int64_t i = 0; i < m->guard / 8; i++)
      if (guard[i] != 0xa5a5a5a5a5a5a5a5u)
        fail_msg("%s: a kernel wrote past the %lld planned bytes of region %d (at +%lld)", g->name,
                 (long long)g->region_bytes[r], r, (long long)i * 8);
  }
}

static inline Ten ten_new(Model *m, int rank, const int64_t *dims) {
  Ten t = {.rank = rank, .n = 1};
  for (int i = 0; i < rank; i++) {
    t.dim[i] = dims[i];
    t.n *= dims[i];
  }
  t.d = rt_arena_alloc(m->arena, sizeof(double) * (t.n ? t.n : 1));
  assert_non_null(t.d);
  return t;
}

/* v's current contents as doubles. */
static inline Ten model_get(Model *m, const Value *v) {
  int64_t dims[RT_MAX_RANK];
  model_dims(m, v, dims);
  Ten t = ten_new(m, v->type.rank, dims);
  const void *p = model_ptr(m, v);
  for (int64_t i = 0; i < t.n; i++)
    t.d[i] = elem_get(p, v->type.dt, i);
  return t;
}

/* Writes t into v (the first t.n elements of v's buffer). */
static inline void model_set(Model *m, const Value *v, Ten t) {
  void *p = model_ptr(m, v);
  for (int64_t i = 0; i < t.n; i++)
    elem_set(p, v->type.dt, i, t.d[i]);
}

/* Rounds a reference to what dtype dt can hold, so overflow to infinity and
 * the rounding of the stored result are not counted as errors. */
static inline void ten_round(Ten t, RtDType dt) {
  if (dt == RT_F32)
    for (int64_t i = 0; i < t.n; i++)
      t.d[i] = (float)t.d[i];
}

static inline bool ten_same_shape(Ten a, Ten b) {
  if (a.rank != b.rank)
    return false;
  for (int i = 0; i < a.rank; i++)
    if (a.dim[i] != b.dim[i])
      return false;
  return true;
}

/* DESIGN.md's "within eps": max|got - ref| / max|ref| <= eps over the finite
 * elements of ref (eps absolute when ref is all zeros); where ref is NaN or
 * infinite, got must be the same. */
static inline void check_ten(const char *what, Ten got, Ten ref, double eps) {
  if (!ten_same_shape(got, ref))
    fail_msg("%s: shape differs: rank %d [%lld ...] vs rank %d [%lld ...]", what, got.rank,
             (long long)(got.rank ? got.dim[0] : 0), ref.rank, (long long)(ref.rank ? ref.dim[0] : 0));
  double maxref = 0, maxerr = 0;
  int64_t worst = -1;
  for (int64_t i = 0; i < ref.n; i++) {
    double g = got.d[i], r = ref.d[i];
    if (isnan(r) || isinf(r)) {
      if (isnan(r) ? !isnan(g) : g != r)
        fail_msg("%s: element %lld is %g, expected %g", what, (long long)i, g, r);
      continue;
    }
    double e = isnan(g) ? INFINITY : fabs(g - r);
    maxref = fmax(maxref, fabs(r));
    if (e > maxerr || (worst < 0 && e >= maxerr)) {
      maxerr = e;
      worst = i;
    }
  }
  double rel = maxref > 0 ? maxerr / maxref : maxerr;
  if (!(rel <= eps))
    fail_msg("%s: max|got-ref|/max|ref| = %.3g > %.3g (element %lld: got %.9g, expected %.9g)",
             what, rel, eps, (long long)worst, got.d[worst], ref.d[worst]);
}

#endif

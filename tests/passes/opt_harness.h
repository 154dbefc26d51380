/* What the suites of the optimizing passes (simplify, fold-bn, the -O0 vs
 * -O3 differential test) add to tests/codegen/harness.h: compiling a graph
 * at a chosen -O level with its weights known to the passes
 * (PassCtx.param_data, as tools/api.c gives them), weights drawn by
 * parameter name and inputs by position, so that two builds of one model
 * get the same numbers whatever the passes drop and renumber, and the
 * comparison of two compiled models' outputs. */
#ifndef KILN_TESTS_PASSES_OPT_HARNESS_H
#define KILN_TESTS_PASSES_OPT_HARNESS_H

#include "../codegen/harness.h"

#define OM_MAXP 512

/* A Model and the weights it was built with. */
typedef struct OModel {
  Model m;
  const Value *param[OM_MAXP];   /* the graph's parameters and state as built */
  void *data[OM_MAXP];           /* their data */
  int nparams;
  bool hide_weights;             /* the passes do not get to see the weights */
  bool fast;                     /* LLVM O0 after codegen, not O3: compiles in half the time */
  bool prepack;                  /* the passes get the GEMM's panel geometry: prepack runs */
} OModel;

static inline uint64_t om_hash(const char *s) {
  uint64_t h = 1469598103934665603u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

/* Uniform in [lo, hi) by name: variances positive, everything else either sign. */
static inline void om_draw(const Graph *g, const Value *p, void *dst, uint64_t seed) {
  int64_t n = ir_numel_max(g, &p->type);
  bool var = strstr(p->name, "var") != NULL;
  double lo = var ? 0.5 : -1, hi = var ? 2 : 1;
  assert_true(n >= 0 && ir_is_float(p->type.dt));
  if (p->type.dt == RT_F32)
    rt_fill_uniform(dst, n, (float)lo, (float)hi, seed, om_hash(p->name));
  else
    rt_fill_uniform_f64(dst, n, lo, hi, seed, om_hash(p->name));
}

static inline const void *om_lookup(const OModel *o, const Value *p) {
  for (int i = 0; i < o->nparams; i++)
    if (o->param[i] == p)
      return o->data[i];
  return NULL;
}

static inline const void *om_param_data(const Graph *g, const Value *p, void *user) {
  OModel *o = user;
  return o->hide_weights ? NULL : om_lookup(o, p);
}

/* Draws the weights of every parameter and state value (param_data sees them). */
static inline void om_weights(OModel *o, uint64_t seed) {
  Graph *g = o->m.g;
  assert_true(g->nparams <= OM_MAXP);
  o->nparams = g->nparams;
  for (int i = 0; i < g->nparams; i++) {
    int64_t bytes = ir_bytes_max(g, &g->params[i]->type);
    o->param[i] = g->params[i];
    o->data[i] = rt_arena_alloc(o->m.arena, bytes ? bytes : 1);
    om_draw(g, g->params[i], o->data[i], seed);
  }
}

/* Into the regions: the weights of the parameters the passes kept (zeros
 * for state the passes made: optimizer moments), and the constants
 * (tools/api.c's place_weights does the same). */
static inline void om_place(OModel *o) {
  Model *m = &o->m;
  const Graph *g = m->g;
  for (int i = 0; i < g->nparams; i++) {
    const void *d = om_lookup(o, g->params[i]);
    int64_t bytes = ir_bytes_max(g, &g->params[i]->type);
    assert_true(d || g->params[i]->role == V_STATE);
    if (d)
      memcpy(model_ptr(m, g->params[i]), d, bytes);
    else
      memset(model_ptr(m, g->params[i]), 0, bytes);
  }
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_CONST && v->region >= 0)
      memcpy(model_ptr(m, v), v->data, ir_bytes_max(g, &v->type));
  }
}

/* The pipeline at -O`opt` (verifier on), codegen, LLVM O3 (O0 if fast),
 * the JIT, regions. */
static inline void om_compile(OModel *o, int opt, uint64_t seed) {
  Model *m = &o->m;
  char err[1024] = "";
  CgCtx c;
  if (m->diags.nerrors)
    model_fail_diags(m, "building");
  om_weights(o, seed);
  PassCtx cx = {.opt = opt, .threads = m->plan_threads, .verify = true,
                .work_bytes = cg_work_bytes, .param_data = om_param_data, .param_user = o,
                .lanes = cg_host_lanes(4), .layout = m->layout, .no_winograd = m->no_winograd,
                .gemm_panels = o->prepack ? cg_gemm_panels : NULL};
  if (pass_run_pipeline(m->g, &cx) < 0)
    model_fail_diags(m, "passes");
  if (cg_ctx_init_jit(&c, m->g->name, err, sizeof err))
    fail_msg("cg_ctx_init_jit: %s", err);
  if (cg_build_graph(&c, m->g, "entry", err, sizeof err)) {
    cg_ctx_dispose(&c);
    fail_msg("compiling %s: %s", m->g->name, err);
  }
  model_jit(m, &c, o->fast ? 0 : 3, "entry");
  om_place(o);
}

/* Input i uniform in [-2, 2) at the maximum batch, by position. */
static inline void om_inputs(OModel *o, uint64_t seed) {
  const Graph *g = o->m.g;
  for (int i = 0; i < g->ninputs; i++) {
    const Value *v = g->inputs[i];
    int64_t n = ir_numel_max(g, &v->type);
    assert_true(n >= 0 && ir_is_float(v->type.dt));
    if (v->type.dt == RT_F32)
      rt_fill_uniform(model_ptr(&o->m, v), n, -2, 2, seed, 1000 + i);
    else
      rt_fill_uniform_f64(model_ptr(&o->m, v), n, -2, 2, seed, 1000 + i);
  }
}

/* Every output of a and b, position by position, within eps. */
static inline void om_compare_outputs(OModel *a, OModel *b, double eps, const char *what) {
  assert_int_equal(a->m.g->noutputs, b->m.g->noutputs);
  for (int i = 0; i < a->m.g->noutputs; i++) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s: output %d (%s)", what, i,
             a->m.g->outputs[i]->name ? a->m.g->outputs[i]->name : "?");
    check_ten(buf, model_get(&b->m, b->m.g->outputs[i]), model_get(&a->m, a->m.g->outputs[i]), eps);
  }
}

/* The weights drawn for the parameter named name, else a failure. */
static inline const void *om_drawn(const OModel *o, const char *name) {
  for (int i = 0; i < o->nparams; i++)
    if (!strcmp(o->param[i]->name, name))
      return o->data[i];
  fail_msg("no parameter %s", name);
  return NULL;
}

/* The model `build` makes as a training graph (its first output summed
 * into the loss), compiled at -O3: what the inference passes must leave. */
static inline Graph *om_compile_training(OModel *o, const char *name, void (*build)(Graph *g)) {
  memset(o, 0, sizeof *o);
  Graph *g = model_new(&o->m, name);
  build(g);
  Attr all = ir_attr();
  all.axes = (1 << g->outputs[0]->type.rank) - 1;
  g->loss = ir_op(g, OP_sum, &g->outputs[0], 1, &all, NOLOC);
  om_compile(o, 3, 1);
  return g;
}

/* A training step's gradients and updated parameters, by name, within eps. */
static inline void om_compare_step(OModel *ref, OModel *got, double eps, const char *what) {
  const Graph *g = got->m.g;
  for (int i = 0; i < g->nparams; i++) {
    Value *p = g->params[i], *q = ir_find_param(ref->m.g, p->name);
    char buf[256];
    assert_non_null(q);
    if (p->role != V_PARAM)
      continue;
    snprintf(buf, sizeof buf, "%s: d loss / d %s", what, p->name);
    check_ten(buf, model_get(&got->m, p->grad), model_get(&ref->m, q->grad), eps);
    snprintf(buf, sizeof buf, "%s: %s after the step", what, p->name);
    check_ten(buf, model_get(&got->m, p), model_get(&ref->m, q), eps);
  }
}

/* g an SGD step on output y: loss sum(y * target) over the axes, every
 * parameter's gradient, lr an input. */
static inline void om_sgd_step(Graph *g, Value *y, uint32_t axes) {
  Value *t = ir_input(g, "target", y->type, NOLOC);
  Attr a = ir_attr();
  a.axes = axes;
  ir_output(g, y, "y");
  g->loss = ir_op(g, OP_sum, (Value *[]){ir_op2(g, OP_mul, y, t, NOLOC)}, 1, &a, NOLOC);
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  g->lr = ir_input(g, "lr", ir_type_const(RT_F32, 0, NULL), NOLOC);
  OptSpec *o = rt_arena_alloc(g->arena, sizeof *o);
  memset(o, 0, sizeof *o);
  o->kind = OPT_SGD;
  g->opt = o;
}

/* One step of o (om_sgd_step's) from its initial weights on inputs of seed 8. */
static inline void om_run_step(OModel *o, int64_t batch, int threads) {
  om_place(o);
  om_inputs(o, 8);
  *(float *)model_ptr(&o->m, o->m.g->lr) = 0.05f;
  model_run(&o->m, batch, threads);
}

static inline int om_count(const Graph *g, Op op) {
  int k = 0;
  for (int i = 0; i < g->nnodes; i++)
    k += g->nodes[i]->op == op;
  return k;
}

static inline char *om_printed(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(g, f);
  fclose(f);
  return buf;
}

#endif

/* What the autodiff suites add to tests/codegen/harness.h (which compiles
 * and runs a graph through the real pipeline): constants copied into the
 * weights region, as the driver does, value fills suited to gradient
 * checks, and losses of the form sum(y * r) with a fixed random r, so that
 * every element of y matters to the loss. */
#ifndef KILN_TESTS_PASSES_ADHARNESS_H
#define KILN_TESTS_PASSES_ADHARNESS_H

#include "../codegen/harness.h"

/* Constants' data into their planned places (tools/api.c does the same). */
static inline void load_consts(Model *m) {
  const Graph *g = m->g;
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_CONST && v->region >= 0)
      memcpy(model_ptr(m, v), v->data, ir_bytes_max(g, &v->type));
  }
}

static inline void ad_compile(Model *m) {
  model_compile(m);
  load_consts(m);
}

static inline Value *sum_all(Graph *g, Value *y) {
  if (y->type.rank == 0)
    return y;
  Attr a = ir_attr();
  a.axes = (1u << y->type.rank) - 1;
  return ir_op(g, OP_sum, &y, 1, &a, NOLOC);
}

/* How a test fills a tensor: gradient checks keep away from kinks. */
typedef enum {
  FILL_UNIFORM,    /* [-2, 2) */
  FILL_AWAY0,      /* |x| in [0.2, 2), either sign: relu, abs, step, sign, divisors */
  FILL_POS,        /* [0.5, 2): log, sqrt, rsqrt, variances */
  FILL_DISTINCT,   /* a shuffled grid in [-2, 2), values 4/n apart: max, min, maxpool */
  FILL_GRID,       /* multiples of 2^-10 in [-2, 2): exact in f32 */
} FillKind;

static inline void fill_value(Model *m, const Value *v, FillKind kind, uint64_t seed) {
  int64_t n = ir_numel_max(m->g, &v->type);
  Ten t = {.rank = 1, .dim = {n}, .n = n, .d = rt_arena_alloc(m->arena, sizeof(double) * (n + 1))};
  int64_t *perm = rt_arena_alloc(m->arena, sizeof(int64_t) * (n + 1));
  rt_fill_uniform_f64(t.d, n, 0, 1, seed, (uint64_t)v->id);
  rt_shuffle(perm, n, seed, (uint64_t)v->id + 1000);
  for (int64_t i = 0; i < n; i++) {
    double u = t.d[i];
    switch (kind) {
    case FILL_UNIFORM: t.d[i] = -2 + 4 * u; break;
    case FILL_AWAY0: t.d[i] = (perm[i] % 2 ? -1 : 1) * (0.2 + 1.8 * u); break;
    case FILL_POS: t.d[i] = 0.5 + 1.5 * u; break;
    case FILL_DISTINCT: t.d[i] = -2 + 4 * (perm[i] + 0.25 + 0.5 * u) / n; break;
    case FILL_GRID: t.d[i] = floor((-2 + 4 * u) * 1024) / 1024; break;
    }
  }
  model_set(m, v, t);
}

/* The scalar loss after a run. */
static inline double ad_loss_at(Model *m, const Value *loss) {
  model_run(m, 0, HARNESS_THREADS);
  return model_get(m, loss).d[0];
}

/* Central differences of the loss, step h, over every element of p. */
static inline Ten ad_numeric_grad(Model *m, const Value *p, const Value *loss, double h) {
  Ten x = model_get(m, p), num = ten_new(m, x.rank, x.dim);
  void *ptr = model_ptr(m, p);
  for (int64_t e = 0; e < x.n; e++) {
    elem_set(ptr, p->type.dt, e, x.d[e] + h);
    double lp = ad_loss_at(m, loss);
    elem_set(ptr, p->type.dt, e, x.d[e] - h);
    double lm = ad_loss_at(m, loss);
    elem_set(ptr, p->type.dt, e, x.d[e]);
    num.d[e] = (lp - lm) / (2 * h);
  }
  return num;
}

#endif

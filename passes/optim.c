/* The optimizer, written as IR: after autodiff, each trainable parameter's
 * update is built from ordinary ops, so it is planned, fused and vectorised
 * like the rest of the step. Moments and the step counter are state values;
 * each new value `updates` the old one and the memory plan writes it in
 * place. The formulas are PyTorch's (torch.optim), so a step matches it:
 *
 *   SGD       g += l2*p; b = mu*b + g; g = nesterov ? g + mu*b : b; p -= lr*g
 *   RMSprop   s = rho*s + (1-rho)*g^2;  p -= lr * g / (sqrt(s) + eps)
 *   Adam      m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *             p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *   AdamW     p *= 1 - lr*wd, then Adam
 *
 * Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_) scales
 * every gradient by min(1, clip / (norm + 1e-6)) first. The learning rate
 * is the step's scalar input g->lr, so the host runs the schedule. */
#include "passes/passes.h"
#include <fnmatch.h>
#include <math.h>
#include <string.h>

typedef struct Opt {
  Graph *g;
  const OptSpec *o;
  RtDType dt;
  Value *lr;                   /* in the parameters' dtype */
  Value *bc1, *bc2;            /* Adam bias corrections 1-b1^t, 1-b2^t */
} Opt;

static Value *k(Opt *s, double v) { return ir_scalar(s->g, s->dt, v); }
static Value *add(Opt *s, Value *a, Value *b) { return ir_op2(s->g, OP_add, a, b, srcloc_none()); }
static Value *sub(Opt *s, Value *a, Value *b) { return ir_op2(s->g, OP_sub, a, b, srcloc_none()); }
static Value *mul(Opt *s, Value *a, Value *b) { return ir_op2(s->g, OP_mul, a, b, srcloc_none()); }
static Value *dvd(Opt *s, Value *a, Value *b) { return ir_op2(s->g, OP_div, a, b, srcloc_none()); }
static Value *sqrtv(Opt *s, Value *a) { return ir_op1(s->g, OP_sqrt, a, srcloc_none()); }

/* x * a + y * b: the moving averages. */
static Value *lerp(Opt *s, Value *x, double a, Value *y, double b) {
  return add(s, mul(s, x, k(s, a)), mul(s, y, k(s, b)));
}

/* A zero-initialised state slot named after its parameter, and its update. */
static Value *slot(Opt *s, Value *p, const char *what) {
  char *name = rt_arena_printf(s->g->arena, "optim.%s.%s", p->name, what);
  Init z = {.kind = INIT_ZEROS};
  return ir_state(s->g, name, p->type, z, srcloc_none());
}

static void set(Value *next, Value *old) {
  next->updates = old;
}

static bool l2_applies(const OptSpec *o, const char *name) {
  if (o->l2 == 0)
    return false;
  if (!o->l2_on || o->nl2_on == 0)
    return true;
  for (int i = 0; i < o->nl2_on; i++)
    if (fnmatch(o->l2_on[i], name, 0) == 0)
      return true;
  return false;
}

static void update_sgd(Opt *s, Value *p, Value *gr) {
  const OptSpec *o = s->o;
  if (o->momentum != 0) {
    Value *b = slot(s, p, "momentum_buffer");
    Value *nb = add(s, mul(s, b, k(s, o->momentum)), gr);
    set(nb, b);
    gr = o->nesterov ? add(s, gr, mul(s, nb, k(s, o->momentum))) : nb;
  }
  set(sub(s, p, mul(s, gr, s->lr)), p);
}

static void update_rmsprop(Opt *s, Value *p, Value *gr) {
  Value *sq = slot(s, p, "square_avg");
  Value *nsq = lerp(s, sq, s->o->rho, mul(s, gr, gr), 1 - s->o->rho);
  set(nsq, sq);
  Value *den = add(s, sqrtv(s, nsq), k(s, s->o->eps));
  set(sub(s, p, mul(s, dvd(s, gr, den), s->lr)), p);
}

static void update_adam(Opt *s, Value *p, Value *gr) {
  const OptSpec *o = s->o;
  Value *m = slot(s, p, "exp_avg"), *v = slot(s, p, "exp_avg_sq");
  Value *nm = lerp(s, m, o->beta1, gr, 1 - o->beta1);
  Value *nv = lerp(s, v, o->beta2, mul(s, gr, gr), 1 - o->beta2);
  set(nm, m);
  set(nv, v);
  Value *p0 = p;
  if (o->kind == OPT_ADAMW && o->weight_decay != 0)
    p = mul(s, p, sub(s, k(s, 1), mul(s, s->lr, k(s, o->weight_decay))));
  Value *den = add(s, dvd(s, sqrtv(s, nv), sqrtv(s, s->bc2)), k(s, o->eps));
  Value *stepsz = dvd(s, s->lr, s->bc1);
  set(sub(s, p, mul(s, dvd(s, nm, den), stepsz)), p0);
}

/* The step counter t (a state scalar, updated to t + 1) and 1 - beta^t. */
static void bias_corrections(Opt *s) {
  Type scalar = ir_type(s->dt, 0, NULL);
  Value *t = ir_state(s->g, "optim.step", scalar, (Init){.kind = INIT_ZEROS}, srcloc_none());
  Value *t1 = add(s, t, k(s, 1));
  set(t1, t);
  Value *pow1 = ir_op1(s->g, OP_exp, mul(s, t1, k(s, log(s->o->beta1))), srcloc_none());
  Value *pow2 = ir_op1(s->g, OP_exp, mul(s, t1, k(s, log(s->o->beta2))), srcloc_none());
  s->bc1 = sub(s, k(s, 1), pow1);
  s->bc2 = sub(s, k(s, 1), pow2);
}

/* Sum of squares of every gradient, as one scalar. */
static Value *grad_norm(Opt *s, Value **grads, int n) {
  Value *total = k(s, 0);
  for (int i = 0; i < n; i++) {
    Attr a = ir_attr();
    a.axes = (1u << grads[i]->type.rank) - 1;
    Value *sq = mul(s, grads[i], grads[i]);
    total = add(s, total, grads[i]->type.rank ? ir_op(s->g, OP_sum, &sq, 1, &a, srcloc_none()) : sq);
  }
  return sqrtv(s, total);
}

static void clip(Opt *s, Value **grads, int n) {
  Value *norm = grad_norm(s, grads, n);
  Value *coef = dvd(s, k(s, s->o->clip_norm), add(s, norm, k(s, 1e-6)));
  coef = ir_op2(s->g, OP_minimum, coef, k(s, 1), srcloc_none());
  for (int i = 0; i < n; i++)
    grads[i] = mul(s, grads[i], coef);
}

bool pass_optimizer(Graph *g, PassCtx *cx, PassStats *st) {
  if (!g->opt || !g->loss || !g->lr)
    return false;
  Opt s = {.g = g, .o = g->opt, .dt = g->loss->type.dt};
  s.lr = g->lr->type.dt == s.dt ? g->lr : ir_op(g, OP_cast, &g->lr, 1, &(Attr){.dtype = s.dt}, srcloc_none());
  int np = 0, cap = g->nparams;
  Value **ps = rt_arena_alloc(g->arena, (cap ? cap : 1) * sizeof *ps);
  Value **gs = rt_arena_alloc(g->arena, (cap ? cap : 1) * sizeof *gs);
  for (int i = 0; i < cap; i++) {
    Value *p = g->params[i];
    if (p->role == V_PARAM && !p->frozen && p->grad) {
      ps[np] = p;
      gs[np++] = p->grad;
    }
  }
  if (np == 0)
    return false;
  if (g->opt->clip_norm > 0)
    clip(&s, gs, np);
  if (g->opt->kind == OPT_ADAM || g->opt->kind == OPT_ADAMW)
    bias_corrections(&s);
  for (int i = 0; i < np; i++) {
    Value *gr = gs[i];
    if (l2_applies(g->opt, ps[i]->name))
      gr = add(&s, gr, mul(&s, ps[i], k(&s, g->opt->l2)));
    switch (g->opt->kind) {
    case OPT_SGD: update_sgd(&s, ps[i], gr); break;
    case OPT_RMSPROP: update_rmsprop(&s, ps[i], gr); break;
    case OPT_ADAM:
    case OPT_ADAMW: update_adam(&s, ps[i], gr); break;
    }
  }
  return true;
}

/* The LSTM workload of the sequence-model issue, one training step at a
 * time: embedding of 64 symbols (dim 64), LSTM 128, sequence 64, batch 32,
 * dense to the 64 symbols, cross-entropy, Adam; compiled through the whole
 * pipeline (-O2) and run at 1 and 2 threads. Prints the median of 20 steps
 * after 3 warm-up steps; bench/seq/bench_lstm_torch.py runs the same step
 * in PyTorch. A benchmark, not a test: run it by hand, on a quiet machine.
 *   build/bench/seq/bench_lstm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

enum { N = 32, T = 64, V = 64, STEPS = 20, WARM = 3 };

static const char *src =
    "model lm(ids: i32[32, 64]) -> (logits: f32[32, 64, 64]) {\n"
    "  h = ids |> embedding(64, 64) |> lstm(128)\n"
    "  logits = h |> dense(64)\n"
    "}\n";

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* mean over the N*T positions of -log softmax(logits)[label] */
static Value *loss_of(Graph *g, Value *logits, Value *labels) {
  Attr a = ir_attr();
  a.axis = 2;
  Value *logp = ir_op(g, OP_log_softmax, &logits, 1, &a, srcloc_none());
  Attr o = ir_attr();
  o.classes = V;
  o.dtype = RT_F32;
  Value *hot = ir_op(g, OP_onehot, &labels, 1, &o, srcloc_none());
  Attr s = ir_attr();
  s.axes = 7;
  Value *sum = ir_op(g, OP_sum, (Value *[]){ir_op2(g, OP_mul, logp, hot, srcloc_none())}, 1, &s,
                     srcloc_none());
  return ir_op2(g, OP_mul, sum, ir_scalar(g, RT_F32, -1.0 / (N * T)), srcloc_none());
}

int main(void) {
  RtArena *arena = rt_arena_new();
  Diags d;
  diag_init(&d, arena);
  AstFile *f = fe_parse(arena, "lm.kiln", src, strlen(src), &d);
  Graph *g = f ? fe_lower(f, NULL, &d) : NULL;
  if (!g || d.nerrors) {
    diag_print(&d, stderr);
    return 1;
  }
  Value *labels = ir_input(g, "labels", ir_type_const(RT_I32, 2, (int64_t[]){N, T}), srcloc_none());
  g->loss = loss_of(g, g->outputs[0], labels);
  ir_output(g, g->loss, "loss");
  for (int i = 0; i < g->nparams; i++)
    g->params[i]->wrt = true;
  static OptSpec adam = {.kind = OPT_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
  g->opt = &adam;
  g->lr = ir_input(g, "lr", ir_type(RT_F32, 0, NULL), srcloc_none());
  g->training = true;
  PassCtx cx = {.opt = 2, .threads = 2, .work_bytes = cg_work_bytes};
  char err[512];
  CgCtx c;
  CgJit *jit;
  double t0 = now();
  if (pass_run_pipeline(g, &cx) || cg_ctx_init_jit(&c, "lm", err, sizeof err) ||
      cg_build_graph(&c, g, "step", err, sizeof err) || cg_optimize(&c, 3, err, sizeof err) ||
      cg_jit_new(&jit, err, sizeof err) || cg_jit_add(jit, &c, err, sizeof err)) {
    diag_print(&d, stderr);
    fprintf(stderr, "compile: %s\n", err);
    return 1;
  }
  void (*step)(void **, int64_t, int32_t) = (void (*)(void **, int64_t, int32_t))cg_jit_lookup(jit, "step");
  printf("compiled in %.2f s\n", now() - t0);
  void *regions[REGION_COUNT];
  for (int r = 0; r < REGION_COUNT; r++) {
    regions[r] = rt_aligned_alloc(g->region_bytes[r] + 64);
    memset(regions[r], 0, g->region_bytes[r] + 64);
  }
  for (int i = 0; i < g->nvals; i++) {
    Value *v = g->vals[i];
    void *p = (char *)regions[v->region < 0 ? 0 : v->region] + v->offset;
    if (v->role == V_CONST && v->region >= 0)
      memcpy(p, v->data, ir_bytes_max(g, &v->type));
    if (v->role == V_PARAM)
      rt_fill_uniform(p, ir_numel_max(g, &v->type), -0.1f, 0.1f, 1, (uint64_t)i);
    if (v == labels || v == g->inputs[0])
      for (int k = 0; k < N * T; k++)
        ((int32_t *)p)[k] = (k * 7 + 3) % V;
    if (v == g->lr)
      *(float *)p = 1e-3f;
  }
  for (int threads = 1; threads <= 2; threads++) {
    double t[STEPS];
    for (int s = 0; s < WARM + STEPS; s++) {
      double a = now();
      step(regions, 0, threads);
      if (s >= WARM)
        t[s - WARM] = now() - a;
    }
    qsort(t, STEPS, sizeof *t, cmp);
    printf("kiln lstm train step: %d thread%s: median %.2f ms (loss %.4f)\n", threads,
           threads > 1 ? "s" : "", t[STEPS / 2] * 1e3,
           *(float *)((char *)regions[g->loss->region] + g->loss->offset));
  }
  return 0;
}

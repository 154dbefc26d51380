/* The LSTM workload of the sequence-model issue, one training step at a
 * time: embedding of 64 symbols (dim 64), LSTM 128, sequence 64, batch 32,
 * dense to the 64 symbols, cross-entropy, Adam; compiled through the whole
 * pipeline (-O2) and run at each thread count given. bench/seq/
 * bench_lstm_torch.py runs the same step in PyTorch; bench/run's `seq`
 * part runs both, in the JSON rows of bench/ref/timing.py (median wall
 * and process CPU time of a step, after warm-up steps; at least --iters
 * steps, more until --min-time seconds are timed). KILN_PERF=1 names the
 * generated code for `perf` (bench/NOTES.md, "Profiling").
 *   bench_lstm [--threads 1,2] [--iters 20] [--warmup 3] [--min-time 0] [--json] [--ir] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench/bench_clock.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

enum { N = 32, T = 64, V = 64, MAXITERS = 2000 };

static const char *src =
    "model lm(ids: i32[32, 64]) -> (logits: f32[32, 64, 64]) {\n"
    "  h = ids |> embedding(64, 64) |> lstm(128)\n"
    "  logits = h |> dense(64)\n"
    "}\n";

typedef struct Opts {
  int threads[8], nthreads;
  int iters, warmup;
  double min_time;
  bool json, ir;    /* --ir: the step's IR after the passes, on stderr */
} Opts;

static double now(void) { return bench_clock(CLOCK_MONOTONIC); }

static bool parse(int argc, char **argv, Opts *o) {
  *o = (Opts){.threads = {1, 2}, .nthreads = 2, .iters = 20, .warmup = 3};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--json"))
      o->json = true;
    else if (!strcmp(a, "--ir"))
      o->ir = true;
    else if (v && !strcmp(a, "--iters"))
      o->iters = atoi(argv[++i]);
    else if (v && !strcmp(a, "--warmup"))
      o->warmup = atoi(argv[++i]);
    else if (v && !strcmp(a, "--min-time"))
      o->min_time = atof(argv[++i]);
    else if (v && !strcmp(a, "--threads")) {
      o->nthreads = 0;
      for (char *p = argv[++i]; *p && o->nthreads < 8; p += *p == ',')
        o->threads[o->nthreads++] = (int)strtol(p, &p, 10);
    } else {
      fprintf(stderr, "usage: bench_lstm [--threads 1,2] [--iters N] [--warmup N] "
              "[--min-time S] [--json] [--ir]\n");
      return false;
    }
  }
  return o->iters > 0 && o->iters <= MAXITERS && o->nthreads > 0;
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

typedef void (*StepFn)(void **, int64_t, int32_t);

/* Warm-up steps, then at least o->iters timed ones (more until
 * o->min_time seconds): a row of medians, as bench/ref/timing.py writes. */
static void time_steps(const Opts *o, int threads, StepFn step, void **regions, const Value *loss) {
  static double wall[MAXITERS], cpu[MAXITERS];
  for (int s = 0; s < o->warmup; s++)
    step(regions, 0, threads);
  int n = 0;
  for (double t0 = now(); n < MAXITERS && (n < o->iters || now() - t0 < o->min_time); n++) {
    double a = now(), c = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
    step(regions, 0, threads);
    cpu[n] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c;
    wall[n] = now() - a;
  }
  double lossv = *(float *)((char *)regions[loss->region] + loss->offset);
  double cmed = bench_median(cpu, n), wmed = bench_median(wall, n);
  if (o->json)
    printf("{\"kind\": \"result\", \"name\": \"lstm_train_step\", \"framework\": \"kiln\", "
           "\"threads\": %d, \"batch\": %d, \"iters\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, "
           "\"max_ms\": %.4f, \"throughput\": %.2f, \"throughput_unit\": \"samples/s\", "
           "\"gflop_per_iter\": null, \"gflops_at_median\": null, \"cpu_median_ms\": %.4f, "
           "\"loss\": %.6f}\n", threads, N, n, wmed * 1e3, wall[0] * 1e3, wall[n - 1] * 1e3,
           N / wmed, cmed * 1e3, lossv);
  else
    printf("kiln lstm train step: %d thread%s: median %.2f ms, CPU %.2f ms (loss %.4f)\n", threads,
           threads > 1 ? "s" : "", wmed * 1e3, cmed * 1e3, lossv);
  fflush(stdout);
}

int main(int argc, char **argv) {
  Opts o;
  if (!parse(argc, argv, &o))
    return 2;
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
      cg_jit_new_ex(&jit, getenv("KILN_PERF") != NULL, err, sizeof err) ||
      cg_jit_add(jit, &c, err, sizeof err)) {
    diag_print(&d, stderr);
    fprintf(stderr, "compile: %s\n", err);
    return 1;
  }
  if (o.ir)
    ir_print(g, stderr);
  StepFn step = (StepFn)cg_jit_lookup(jit, "step");
  fprintf(stderr, "compiled in %.2f s\n", now() - t0);
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
  for (int k = 0; k < o.nthreads; k++)
    time_steps(&o, o.threads[k], step, regions, g->loss);
  return 0;
}

/* kiln's side of the benchmark: one model file, one workload (inference or
 * a training step at one batch), one thread count, at one or more -O
 * levels, through the public C API (include/kiln.h) as a user's program
 * would call it. Rows are JSON lines in the schema of bench/ref/timing.py,
 * so they line up with the PyTorch, ONNX Runtime and OpenCV rows.
 *
 *   bench_kiln [--name NAME] [--mode infer|train] [--batch B] [--threads N]
 *              [--levels 3] [--iters 30] [--warmup 10] [--min-time 1.0]
 *              [--flop F] [--compile-reps 1] [--seq 16] [--copy-inputs] M.kiln
 *
 * Per level, a fresh model is loaded, given weights (kiln_init_weights) and
 * inputs (a training step's labels and targets too: floats uniform in
 * [0, 1), integers in [0, 10); size names other than the batch, such as a
 * sequence's T, are --seq), and run
 * twice: the first call compiles. Its compile time is the load plus the
 * first call less the second call, on the wall clock (compile_ms) and in
 * the thread's CPU time (compile_cpu_ms, which a busy machine does not
 * inflate); with --compile-reps R the model is loaded and compiled R
 * times and the medians reported. Then the levels run
 * in turns, one call each per round, so they share whatever else the
 * machine is doing: warm-up rounds, then at least --iters rounds, more
 * until --min-time seconds are timed (at most 2000). Each call is timed
 * with CLOCK_MONOTONIC; a row gives the median, min and max, and the median
 * process CPU time of a call (cpu_median_ms, see bench/ref/timing.py).
 * The framework of a row is "kiln" at -O3 and "kiln-O<L>" at other levels.
 * Inference reads its inputs in place, from the model's own buffers
 * (kiln_input_buffer, filled once after the compiling call), as PyTorch and
 * ONNX Runtime read a caller's arrays; --copy-inputs times kiln_run copying
 * them in from the caller's memory instead.
 * bench/fusion/chain.kiln, a long elementwise chain on a large tensor, shows
 * what fusion alone buys: bench_kiln --batch 64 --levels 1,2 bench/fusion/chain.kiln */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kiln.h"
#include "bench/bench_clock.h"

enum { MAXLEVELS = 4, MAXIN = 8, MAXOUT = 8, MAXITERS = 2000 };

typedef struct Opts {
  const char *path, *name;
  bool train, copy_inputs;
  int64_t batch, seq;   /* seq: every size name but the batch (T) */
  int threads, iters, warmup, compile_reps;
  double min_time, flop;
  int levels[MAXLEVELS], nlevels;
} Opts;

/* One model compiled at one level, its inputs and its times. */
typedef struct Case {
  int level;
  KilnModel *m;
  KilnTensor in[MAXIN];
  void *own[MAXIN];   /* the inputs' memory drawn by make_inputs, freed by free_case */
  int nin;
  KilnStatus st;
  double compile_ms, compile_cpu_ms;   /* medians over --compile-reps */
  double *t, *cpu;   /* per timed call: wall and process CPU seconds */
} Case;

static double now(void) {
  return bench_clock(CLOCK_MONOTONIC);
}

/* The calling thread's CPU time: compiling runs on it, and unlike the wall
 * clock it leaves out the time a busy machine keeps it waiting. */
static double cpu_now(void) {
  return bench_clock(CLOCK_THREAD_CPUTIME_ID);
}

static uint64_t lcg(uint64_t *s) {
  *s = *s * 6364136223846793005u + 1442695040888963407u;
  return *s >> 33;
}

/* t, described by an info call, given data: dims that are size names are
 * the batch (the first) or `seq`; floats uniform in [0, 1), integers
 * (indices, labels) in [0, 10), which every example's vocabulary and
 * classes cover. */
static size_t elem_size(KilnDType dt) {
  return dt == KILN_F32 || dt == KILN_I32 ? 4 : dt == KILN_I64 || dt == KILN_F64 ? 8 : 1;
}

static KilnStatus fill(KilnTensor *t, int64_t batch, int64_t seq, uint64_t *seed) {
  int64_t n = 1;
  for (int d = 0; d < t->rank; d++)
    n *= t->shape[d] = t->shape[d] >= 0 ? t->shape[d] : d == 0 ? batch : seq;
  size_t esize = elem_size(t->dtype);
  unsigned char *p = malloc(esize * (size_t)(n ? n : 1));
  if (!p)
    return KILN_ERR_NOMEM;
  for (int64_t k = 0; k < n; k++) {
    uint64_t r = lcg(seed);
    float f = (float)(r % 1000000) / 1e6f;
    int32_t i32 = (int32_t)(r % 10);
    int64_t i64 = i32;
    const void *v = t->dtype == KILN_F32 ? (const void *)&f : t->dtype == KILN_I64 ? (const void *)&i64
                                                                                   : (const void *)&i32;
    memcpy(p + (size_t)k * esize, v, esize);   /* u8 and bool take i32's low byte */
  }
  t->data = p;
  return KILN_OK;
}

/* The inputs of the workload: the model's, or a training step's (the
 * model's and what its loss reads: labels, regression targets). */
static KilnStatus make_inputs(Case *c, const Opts *o) {
  uint64_t seed = 1;
  int n = o->train ? kiln_train_input_count(c->m) : kiln_input_count(c->m);
  if (n < 0 || n > MAXIN)
    return n < 0 ? KILN_ERR_MODEL : KILN_ERR_ARG;
  KilnStatus st = KILN_OK;
  for (; st == KILN_OK && c->nin < n; c->nin++) {
    KilnTensor *t = &c->in[c->nin];
    st = o->train ? kiln_train_input_info(c->m, c->nin, t) : kiln_input_info(c->m, c->nin, t);
    if (st == KILN_OK)
      st = fill(t, o->batch, o->seq, &seed);
    c->own[c->nin] = st == KILN_OK ? t->data : NULL;
  }
  return st;
}

/* After the compiling call: the inputs moved into the model's buffers. */
static KilnStatus inputs_in_place(Case *c) {
  for (int i = 0; i < c->nin; i++) {
    KilnTensor b;
    KilnStatus st = kiln_input_buffer(c->m, i, &b);
    if (st != KILN_OK)
      return st;
    size_t bytes = elem_size(b.dtype);
    for (int d = 0; d < b.rank; d++)
      bytes *= (size_t)b.shape[d];
    memcpy(b.data, c->in[i].data, bytes);
    c->in[i] = b;
  }
  return KILN_OK;
}

/* One call of the workload; its time in seconds. */
static double run_once(Case *c, const Opts *o) {
  KilnTensor out[MAXOUT];
  int nout = kiln_output_count(c->m) < MAXOUT ? kiln_output_count(c->m) : MAXOUT;
  float loss;
  double t0 = now();
  c->st = o->train ? kiln_train_step(c->m, c->in, c->nin, 1e-3f, &loss) : kiln_run(c->m, c->in, c->nin, out, nout);
  return now() - t0;
}

static void free_case(Case *c) {
  for (int i = 0; i < c->nin; i++)
    free(c->own[i]);
  kiln_free(c->m);
  c->m = NULL;
  c->nin = 0;
}

/* Loads the model at the case's level, draws weights and inputs, and runs
 * it twice: the first call compiles. Sets wall[0] and cpu[0] to the
 * seconds of the load and first call less those of the second call. */
static void setup(Case *c, const Opts *o, double *wall, double *cpu) {
  KilnOptions opt;
  kiln_options_default(&opt);
  opt.perf = getenv("KILN_PERF") && !strcmp(getenv("KILN_PERF"), "1");   /* for perf record */
  opt.opt_level = c->level;
  opt.threads = o->threads;
  opt.max_batch = o->batch;
  double t0 = now(), c0 = cpu_now();
  c->st = kiln_load(o->path, &opt, &c->m);
  if (c->st == KILN_OK)
    c->st = kiln_init_weights(c->m, 0);
  if (c->st == KILN_OK)
    c->st = make_inputs(c, o);
  if (c->st == KILN_OK)
    run_once(c, o);
  if (c->st == KILN_OK && !o->train && !o->copy_inputs)
    c->st = inputs_in_place(c);
  double t1 = now(), c1 = cpu_now();
  if (c->st == KILN_OK)
    run_once(c, o);
  *wall = (t1 - t0) - (now() - t1);
  *cpu = (c1 - c0) - (cpu_now() - c1);
}

/* Compiles the case compile_reps times, keeping the last model, and
 * sets its compile times (ms) to the medians. */
static void compile_case(Case *c, const Opts *o) {
  double wall[64], cpu[64];
  int reps = o->compile_reps < 1 ? 1 : o->compile_reps > 64 ? 64 : o->compile_reps;
  for (int r = 0; r < reps && c->st == KILN_OK; r++) {
    if (r)
      free_case(c);
    setup(c, o, &wall[r], &cpu[r]);
  }
  c->compile_ms = bench_median(wall, reps) * 1e3;
  c->compile_cpu_ms = bench_median(cpu, reps) * 1e3;
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++)
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      printf("\\u%04x", *s);
    else
      putchar(*s);
  putchar('"');
}

static void report_error(const Case *c, const Opts *o) {
  printf("{\"kind\":\"error\",\"name\":\"%s\",\"framework\":\"kiln-O%d\",\"threads\":%d,\"batch\":%lld,"
         "\"status\":\"%s\",\"error\":",
         o->name, c->level, o->threads, (long long)o->batch, kiln_status_name(c->st));
  print_json_string(c->m ? kiln_errors(c->m) : "");
  printf("}\n");
  fprintf(stderr, "%s -O%d: %s %s\n", o->name, c->level, kiln_status_name(c->st), c->m ? kiln_errors(c->m) : "");
}

static void report(Case *c, const Opts *o, int n) {
  if (c->st != KILN_OK) {
    report_error(c, o);
    return;
  }
  double med = bench_median(c->t, n), flop = o->flop;
  char fw[16];
  snprintf(fw, sizeof fw, c->level == 3 ? "kiln" : "kiln-O%d", c->level);
  printf("{\"kind\":\"result\",\"name\":\"%s\",\"framework\":\"%s\",\"threads\":%d,\"batch\":%lld,"
         "\"iters\":%d,\"median_ms\":%.4f,\"min_ms\":%.4f,\"max_ms\":%.4f,\"throughput\":%.2f,"
         "\"throughput_unit\":\"samples/s\",",
         o->name, fw, o->threads, (long long)o->batch, n, med * 1e3, c->t[0] * 1e3, c->t[n - 1] * 1e3,
         o->batch / med);
  if (flop > 0)
    printf("\"gflop_per_iter\":%.5f,\"gflops_at_median\":%.2f,", flop * 1e-9, flop / med * 1e-9);
  else
    printf("\"gflop_per_iter\":null,\"gflops_at_median\":null,");
  printf("\"cpu_median_ms\":%.4f,", bench_median(c->cpu, n) * 1e3);
  printf("\"opt_level\":%d,\"compile_ms\":%.1f,\"compile_cpu_ms\":%.1f,\"file\":", c->level, c->compile_ms,
         c->compile_cpu_ms);
  print_json_string(o->path);
  printf("}\n");
  fflush(stdout);
  fprintf(stderr, "%-18s %-18s thr=%d b=%-4lld n=%-4d median %9.3f ms (min %9.3f, max %9.3f)  compile %.0f ms "
          "(cpu %.0f ms)\n", o->name, fw, o->threads, (long long)o->batch, n, med * 1e3, c->t[0] * 1e3,
          c->t[n - 1] * 1e3, c->compile_ms, c->compile_cpu_ms);
}

/* Runs the levels in turns; returns the timed rounds. */
static int time_levels(Case *cs, const Opts *o) {
  double est = 0;
  for (int w = 0; w < o->warmup + 1; w++)
    for (int l = 0; l < o->nlevels; l++)
      if (cs[l].st == KILN_OK) {
        double t = run_once(&cs[l], o);
        est += w == o->warmup ? t : 0;
      }
  int n = (int)fmin(fmax(o->iters, o->min_time / fmax(est, 1e-7)), MAXITERS);
  for (int r = 0; r < n; r++)
    for (int l = 0; l < o->nlevels; l++)
      if (cs[l].st == KILN_OK) {
        double c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
        cs[l].t[r] = run_once(&cs[l], o);
        cs[l].cpu[r] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
      }
  return n;
}

static int bench(const Opts *o) {
  Case cs[MAXLEVELS] = {0};
  int bad = 0;
  for (int l = 0; l < o->nlevels; l++) {
    cs[l].level = o->levels[l];
    cs[l].t = malloc(sizeof(double) * MAXITERS);
    cs[l].cpu = malloc(sizeof(double) * MAXITERS);
    compile_case(&cs[l], o);
  }
  int n = time_levels(cs, o);
  for (int l = 0; l < o->nlevels; l++) {
    report(&cs[l], o, n);
    bad |= cs[l].st != KILN_OK;
    free_case(&cs[l]);
    free(cs[l].t);
    free(cs[l].cpu);
  }
  return bad;
}

static int usage(void) {
  fprintf(stderr, "usage: bench_kiln [--name NAME] [--mode infer|train] [--batch B] [--threads N] "
                  "[--levels 0,3] [--iters N] [--warmup N] [--min-time S] [--flop F] "
                  "[--compile-reps R] [--seq T] [--copy-inputs] M.kiln\n");
  return 2;
}

/* Reads "--opt value" pairs; returns the index of the model file. */
static int parse(int argc, char **argv, Opts *o) {
  int i = 1;
  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--copy-inputs"))
      o->copy_inputs = true, i--;   /* a flag: no value */
    else if (!strcmp(a, "--name"))
      o->name = v;
    else if (!strcmp(a, "--mode") && (!strcmp(v, "infer") || !strcmp(v, "train")))
      o->train = !strcmp(v, "train");
    else if (!strcmp(a, "--batch"))
      o->batch = atoll(v);
    else if (!strcmp(a, "--threads"))
      o->threads = atoi(v);
    else if (!strcmp(a, "--iters"))
      o->iters = atoi(v);
    else if (!strcmp(a, "--warmup"))
      o->warmup = atoi(v);
    else if (!strcmp(a, "--min-time"))
      o->min_time = atof(v);
    else if (!strcmp(a, "--flop"))
      o->flop = atof(v);
    else if (!strcmp(a, "--seq"))
      o->seq = atoll(v);
    else if (!strcmp(a, "--compile-reps"))
      o->compile_reps = atoi(v);
    else if (!strcmp(a, "--levels"))
      for (o->nlevels = 0; *v && o->nlevels < MAXLEVELS; v += *v == ',')
        o->levels[o->nlevels++] = (int)strtol(v, (char **)&v, 10);
    else
      return -1;
  }
  return i == argc - 1 ? i : -1;
}

int main(int argc, char **argv) {
  kiln_prefer_passive_wait(argv);   /* as the kiln tool: see include/kiln.h */
  Opts o = {.name = "model", .batch = 1, .seq = 16, .iters = 30, .warmup = 10, .compile_reps = 1, .min_time = 1.0,
            .levels = {3}, .nlevels = 1};
  int i = parse(argc, argv, &o);
  if (i < 0 || o.batch < 1 || o.seq < 1 || o.iters < 1 || o.warmup < 0 || o.nlevels < 1)
    return usage();
  o.path = argv[i];
  return bench(&o);
}

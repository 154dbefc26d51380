/* The speed of whole models at each -O level (what fusion buys), through
 * the public API as `kiln run` does: for every model file, one compiled
 * model per level, then rounds in which each level runs the same batch once,
 * so the levels share whatever else the machine is doing; per level the time
 * of the first run (it compiles), and the median and the best of the timed
 * runs. With --train, kiln_train_step instead, on models with a train block
 * (labels drawn in [0, 10)). A benchmark, not a test: nothing is asserted.
 * bench/fusion/chain.kiln, a long elementwise chain on a large tensor, shows
 * fusion alone (-O1 against -O2).
 *
 *   bench_models [--batch 64] [--runs 41] [--levels 0,1,2,3] [--threads N] [--cputime]
 *                [--train] M.kiln ...
 *
 * --cputime times the calling thread's CPU time instead of the wall clock:
 * with --threads 1 on a busy machine it leaves out the time the thread
 * waits to be scheduled (it means nothing with more threads).
 *
 * Build from the repository root, after building kiln into build/:
 *   cc -std=c17 -O2 -D_GNU_SOURCE -Iinclude bench/fusion/bench_models.c \
 *      build/libkiln.a build/runtime/libkilnrt.a \
 *      $(llvm-config-19 --ldflags --libs) -fopenmp -lz -lm -lstdc++ -o bench_models */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kiln.h"

enum { MAXLEVELS = 4, MAXIN = 8 };

typedef struct Opts {
  int64_t batch;
  int runs, threads;
  bool train, cputime;
  int levels[MAXLEVELS], nlevels;
} Opts;

/* One model compiled at one level, its inputs and its times. */
typedef struct Case {
  KilnModel *m;
  KilnTensor in[MAXIN + 1];
  int nin;
  KilnStatus st;
  double first, *t;
} Case;

static double now(const Opts *o) {
  struct timespec t;
  clock_gettime(o->cputime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static uint64_t lcg(uint64_t *s) {
  *s = *s * 6364136223846793005u + 1442695040888963407u;
  return *s >> 33;
}

/* Input i of m at the batch, uniform in [0, 1). */
static KilnStatus make_input(KilnModel *m, int i, int64_t batch, KilnTensor *t, uint64_t *seed) {
  KilnStatus st = kiln_input_info(m, i, t);
  if (st != KILN_OK)
    return st;
  int64_t n = 1;
  for (int d = 0; d < t->rank; d++) {
    if (t->shape[d] < 0)
      t->shape[d] = batch;
    n *= t->shape[d];
  }
  float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
  if (!p)
    return KILN_ERR_NOMEM;
  for (int64_t k = 0; k < n; k++)
    p[k] = (float)(lcg(seed) % 1000000) / 1e6f;
  t->data = p;
  return KILN_OK;
}

/* The labels of a training step: i64 [batch], each below classes. */
static KilnStatus make_labels(int64_t batch, int classes, KilnTensor *t, uint64_t *seed) {
  *t = (KilnTensor){.name = "label", .dtype = KILN_I64, .rank = 1, .shape = {batch}};
  int64_t *p = malloc(sizeof(int64_t) * (size_t)batch);
  if (!p)
    return KILN_ERR_NOMEM;
  for (int64_t k = 0; k < batch; k++)
    p[k] = (int64_t)(lcg(seed) % (uint64_t)classes);
  t->data = p;
  return KILN_OK;
}

/* One run of the case; its time in seconds. */
static double run_once(Case *c, const Opts *o) {
  KilnTensor out[8];
  int nout = kiln_output_count(c->m) < 8 ? kiln_output_count(c->m) : 8;
  float loss;
  double t0 = now(o);
  c->st = o->train ? kiln_train_step(c->m, c->in, c->nin, 1e-3f, &loss)
                   : kiln_run(c->m, c->in, c->nin, out, nout);
  return now(o) - t0;
}

/* Loads, draws weights and inputs, and runs once (compiling). */
static void setup(Case *c, const char *path, const Opts *o, int level) {
  KilnOptions opt;
  kiln_options_default(&opt);
  opt.opt_level = level;
  opt.threads = o->threads;
  opt.max_batch = o->batch;
  uint64_t seed = 1;
  c->t = malloc(sizeof(double) * (size_t)o->runs);
  c->st = c->t ? kiln_load(path, &opt, &c->m) : KILN_ERR_NOMEM;
  if (c->st == KILN_OK)
    c->st = kiln_init_weights(c->m, 0);
  for (; c->st == KILN_OK && c->nin < kiln_input_count(c->m) && c->nin < MAXIN; c->nin++)
    c->st = make_input(c->m, c->nin, o->batch, &c->in[c->nin], &seed);
  if (c->st == KILN_OK && o->train && (c->st = make_labels(o->batch, 10, &c->in[c->nin], &seed)) == KILN_OK)
    c->nin++;
  if (c->st == KILN_OK)
    c->first = run_once(c, o);
}

static void report(Case *c, const char *path, const Opts *o, int level) {
  const char *what = o->train ? "train" : "run";
  if (c->st != KILN_OK) {
    printf("%-28s %-6s -O%d  %s: %s\n", path, what, level, kiln_status_name(c->st),
           c->m ? kiln_errors(c->m) : "");
    return;
  }
  qsort(c->t, (size_t)o->runs, sizeof(double), cmp_double);
  printf("%-28s %-6s -O%d  first %8.1f ms   median %8.3f ms   best %8.3f ms\n", path, what, level,
         c->first * 1e3, c->t[o->runs / 2] * 1e3, c->t[0] * 1e3);
}

static void bench(const char *path, const Opts *o) {
  Case cs[MAXLEVELS] = {0};
  for (int l = 0; l < o->nlevels; l++)
    setup(&cs[l], path, o, o->levels[l]);
  for (int r = 0; r < o->runs; r++)
    for (int l = 0; l < o->nlevels; l++)
      if (cs[l].st == KILN_OK)
        cs[l].t[r] = run_once(&cs[l], o);
  for (int l = 0; l < o->nlevels; l++) {
    report(&cs[l], path, o, o->levels[l]);
    for (int i = 0; i < cs[l].nin; i++)
      free(cs[l].in[i].data);
    free(cs[l].t);
    kiln_free(cs[l].m);
  }
}

static int usage(void) {
  fprintf(stderr, "usage: bench_models [--batch B] [--runs R] [--levels 0,3] [--threads N] "
                  "[--cputime] [--train] M.kiln ...\n");
  return 2;
}

int main(int argc, char **argv) {
  Opts o = {.batch = 64, .runs = 41, .levels = {0, 1, 2, 3}, .nlevels = 4};
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--train") || !strcmp(a, "--cputime")) {
      o.train = o.train || !strcmp(a, "--train");
      o.cputime = o.cputime || !strcmp(a, "--cputime");
      continue;
    }
    if (!strcmp(a, "--batch"))
      o.batch = atoll(v);
    else if (!strcmp(a, "--runs"))
      o.runs = atoi(v);
    else if (!strcmp(a, "--threads"))
      o.threads = atoi(v);
    else if (!strcmp(a, "--levels"))
      for (o.nlevels = 0; *v && o.nlevels < MAXLEVELS; v += *v == ',')
        o.levels[o.nlevels++] = (int)strtol(v, (char **)&v, 10);
    else
      return usage();
    i++;
  }
  if (i >= argc || o.batch < 1 || o.runs < 1 || o.nlevels < 1)
    return usage();
  for (; i < argc; i++)
    bench(argv[i], &o);
  return 0;
}

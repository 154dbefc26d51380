/* The speed of whole models at each -O level (what fusion buys): for every
 * model file and level, the time of the first kiln_run (it compiles), then
 * the median and the best of repeated runs of one batch, through the public
 * API as `kiln run` does. With --train, the same for kiln_train_step on
 * models with a train block (labels drawn in [0, 10), the first output's
 * last dim at most). A benchmark, not a test: nothing is asserted.
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

typedef struct Opts {
  int64_t batch;
  int runs, threads;
  bool train;
  int levels[4], nlevels;
} Opts;

static bool cputime;

static double now(void) {
  struct timespec t;
  clock_gettime(cputime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
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

/* Input i of m at the batch, uniform in [0, 1) (labels: integers below classes). */
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

/* One labels tensor for a training step: i64 [batch], each below classes. */
static KilnTensor make_labels(int64_t batch, int classes, uint64_t *seed) {
  KilnTensor t = {.name = "label", .dtype = KILN_I64, .rank = 1, .shape = {batch}};
  int64_t *p = malloc(sizeof(int64_t) * (size_t)batch);
  for (int64_t k = 0; p && k < batch; k++)
    p[k] = (int64_t)(lcg(seed) % (uint64_t)classes);
  t.data = p;
  return t;
}

typedef struct Timing {
  double first, median, best;
} Timing;

/* Runs the step `runs` times after the first (which compiles); seconds. */
static KilnStatus time_runs(KilnModel *m, const Opts *o, KilnTensor *in, int nin, bool train,
                            Timing *t) {
  double *s = malloc(sizeof(double) * (size_t)o->runs);
  KilnTensor out[8];
  int nout = kiln_output_count(m) < 8 ? kiln_output_count(m) : 8;
  KilnStatus st = KILN_OK;
  for (int r = -1; r < o->runs && st == KILN_OK && s; r++) {
    double t0 = now();
    float loss;
    st = train ? kiln_train_step(m, in, nin, 1e-3f, &loss) : kiln_run(m, in, nin, out, nout);
    if (r < 0)
      t->first = now() - t0;
    else
      s[r] = now() - t0;
  }
  if (st == KILN_OK && s) {
    qsort(s, (size_t)o->runs, sizeof(double), cmp_double);
    t->median = s[o->runs / 2];
    t->best = s[0];
  }
  free(s);
  return s ? st : KILN_ERR_NOMEM;
}

static void bench(const char *path, const Opts *o, int level, bool train) {
  KilnOptions opt;
  kiln_options_default(&opt);
  opt.opt_level = level;
  opt.threads = o->threads;
  opt.max_batch = o->batch;
  KilnModel *m = NULL;
  KilnTensor in[9] = {0};
  int nin = 0;
  uint64_t seed = 1;
  Timing t = {0};
  KilnStatus st = kiln_load(path, &opt, &m);
  if (st == KILN_OK)
    st = kiln_init_weights(m, 0);
  for (; st == KILN_OK && nin < kiln_input_count(m) && nin < 8; nin++)
    st = make_input(m, nin, o->batch, &in[nin], &seed);
  if (st == KILN_OK && train)
    in[nin++] = make_labels(o->batch, 10, &seed);
  if (st == KILN_OK)
    st = time_runs(m, o, in, nin, train, &t);
  if (st == KILN_OK)
    printf("%-28s %-6s -O%d  first %8.1f ms   median %8.3f ms   best %8.3f ms\n", path,
           train ? "train" : "run", level, t.first * 1e3, t.median * 1e3, t.best * 1e3);
  else
    printf("%-28s %-6s -O%d  %s: %s\n", path, train ? "train" : "run", level, kiln_status_name(st),
           m ? kiln_errors(m) : "");
  for (int i = 0; i < nin; i++)
    free(in[i].data);
  kiln_free(m);
}

int main(int argc, char **argv) {
  Opts o = {.batch = 64, .runs = 41, .levels = {0, 1, 2, 3}, .nlevels = 4};
  int first = 1;
  for (; first < argc && argv[first][0] == '-'; first++) {
    const char *a = argv[first], *v = first + 1 < argc ? argv[first + 1] : "";
    if (!strcmp(a, "--train") || !strcmp(a, "--cputime")) {
      o.train = o.train || !strcmp(a, "--train");
      cputime = cputime || !strcmp(a, "--cputime");
      continue;
    }
    if (!strcmp(a, "--batch"))
      o.batch = atoll(v);
    else if (!strcmp(a, "--runs"))
      o.runs = atoi(v);
    else if (!strcmp(a, "--threads"))
      o.threads = atoi(v);
    else if (!strcmp(a, "--levels"))
      for (o.nlevels = 0; *v && o.nlevels < 4; v += *v == ',')
        o.levels[o.nlevels++] = (int)strtol(v, (char **)&v, 10);
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
    first++;
  }
  if (first >= argc || o.batch < 1 || o.runs < 1) {
    fprintf(stderr, "usage: bench_models [--batch B] [--runs R] [--levels 0,3] [--threads N] "
                    "[--cputime] [--train] M.kiln ...\n");
    return 2;
  }
  for (int f = first; f < argc; f++)
    for (int l = 0; l < o.nlevels; l++) {
      bench(argv[f], &o, o.levels[l], false);
      if (o.train)
        bench(argv[f], &o, o.levels[l], true);
    }
  return 0;
}

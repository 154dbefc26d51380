/* The kiln command. Parses options, calls the C API, and is the only place
 * that exits: 0 on success, 1 on a user error (with its message), 2 on a
 * usage error.
 *
 *   kiln check M.kiln [--emit=ir|dot|memplan|llvm|asm] [--stats] [--json] [--step]
 *   kiln run   M.kiln -i x=in.npy -o logits=out.npy [--weights W] [--seed S]
 *   kiln train M.kiln [--epochs N --batch N --lr X ...] [-o W.safetensors] [--json]
 *   kiln eval  M.kiln --weights W [--data D] [--json]
 *   kiln sample M.kiln --weights W [--prime TEXT --length K --temperature T --seed S --count N]
 *   kiln export M.kiln [--weights W] -o libNAME.so    (tools/export.c)
 *   kiln build  M.kiln [--weights W] -o PROG
 */
#include "tools/api.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *usage =
    "usage: kiln <command> MODEL.kiln [options]\n"
    "\n"
    "commands:\n"
    "  check    parse and check a model; print its IR or every error\n"
    "  run      compile and run a model on .npy inputs\n"
    "  train    train a model as its train block says (options below override it)\n"
    "  eval     loss and accuracy of trained weights on data\n"
    "  sample   generate text from a character-level model, one symbol at a time\n"
    "  export   write libNAME.so (or .a) and NAME.h: the model for C, no kiln needed\n"
    "  build    write a standalone program that runs the model on .npy or CSV\n"
    "\n"
    "options:\n"
    "  --model NAME          the model of the file to use (default: the first)\n"
    "  -i NAME=FILE.npy      an input (run); repeat for each input\n"
    "  -o NAME=FILE.npy      write an output (run); default: print a summary\n"
    "  --weights FILE        weights (.safetensors) by parameter name; train: start from them\n"
    "  --seed N              run: draw weights from seed N when no --weights (default 0);\n"
    "                        train: the seed of weights, split, shuffles and dropout\n"
    "  --size NAME=V,...     bind size names, e.g. --size T=64\n"
    "  --batch N             compile for batches up to N (check, emit); train: the batch\n"
    "  -O0 .. -O3            optimisation level (default -O2)\n"
    "  --threads N           threads (default: OMP_NUM_THREADS or the cores)\n"
    "  --emit=KIND           ir, dot, memplan, llvm, llvm-unopt (before LLVM's passes) or asm\n"
    "                        (check and run)\n"
    "  --print-after=PASS    print the IR after a pass (or 'all')\n"
    "  --stats [--json]      nodes, kernels and bytes before and after each pass, and the\n"
    "                        compile's CPU time per stage (passes, LLVM IR, LLVM's passes,\n"
    "                        its backend, the JIT's linking)\n"
    "  --step                check: compile the training step (forward, backward and the\n"
    "                        optimizer update of the train block) instead of inference\n"
    "  -h, --help            this text\n"
    "  --version             the version\n"
    "\n"
    "training (train, eval):\n"
    "  -o FILE.safetensors   where the trained weights go (default: MODEL-FILE-STEM.safetensors)\n"
    "  --epochs N  --batch N  --lr X  --split X  --optimizer 'sgd(momentum=0.9)'\n"
    "  --data FILE           data (.csv, .npy, IDX; gzipped or not) in place of the block's\n"
    "  --labels FILE         the labels of a .npy or IDX --data file\n"
    "  --scale X             multiply the --data features by X (default: the block's scale\n"
    "                        for a file of the block's kind, else 1)\n"
    "  --checkpoint FILE     checkpoint path (default: the block's, else STEM.ckpt.safetensors)\n"
    "  --checkpoint-every N  epochs between checkpoints (default 1)\n"
    "  --resume FILE         continue from a checkpoint where it stopped\n"
    "  --curves PREFIX       write PREFIX.csv and PREFIX.svg (default: STEM.curves)\n"
    "  --json                one JSON object per epoch on stdout (progress goes to stderr)\n"
    "  --train NAME          which train block (default: the model's)\n"
    "\n"
    "sampling (sample):\n"
    "  --prime TEXT          start from TEXT (printed first; a word model starts a word)\n"
    "  --length K            at most K characters after the prime (default 100)\n"
    "  --temperature T       divide the logits by T (default 1; 0: always the likeliest)\n"
    "  --count N             a word model: N words, one per line (default 1)\n"
    "  --seed S              the sampler's seed (default 0): the same seed, the same text\n"
    "\n"
    "export and build (docs/export.md):\n"
    "  -o FILE               libNAME.so, libNAME.a (export) or the program (build)\n"
    "  --weights FILE        the weights to build in (default: drawn from --seed)\n"
    "  --weights-file FILE   keep the weights in FILE (.safetensors) beside the artifact\n"
    "  --batch N             the largest batch a call may take (default 64)\n"
    "  --threads N           the most threads the scratch memory is planned for\n"
    "  --target TRIPLE       x86_64-linux-gnu, aarch64-linux-gnu, ... (default: the host)\n"
    "  --cpu NAME            x86-64, haswell, znver3, skylake-avx512, ... (default: the host's)\n"
    "  --emit=obj|asm|llvm   write the model's object, assembly or IR to -o, not linked\n"
    "  --infer-only          no training step (inference folds batchnorm into the weights)\n"
    "\n"
    "environment:\n"
    "  OMP_NUM_THREADS       threads when --threads is not given\n"
    "  KILN_CACHE_DIR        where compiled code is kept (default $XDG_CACHE_HOME/kiln,\n"
    "                        else ~/.cache/kiln); KILN_CACHE=off compiles every time\n"
    "  KILN_PERF=1           name generated functions for perf (see bench/NOTES.md)\n"
    "  GOMP_SPINCOUNT        kiln sets 2000 (a short spin) unless it or OMP_WAIT_POLICY is set\n";

typedef struct Cli {
  const char *cmd, *model_path, *weights, *emit, *print_after, *sizes;
  KilnOptions opt;
  KilnTrainOptions train;
  bool seed_given;
  uint64_t seed;
  bool stats, json, step;
  int64_t batch;
  const char *in_name[64], *in_file[64];
  int nin;
  const char *out_name[64], *out_file[64];
  int nout;
  const char *prime;        /* sample */
  int64_t length, count;
  double temperature;
} Cli;

static int die_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "kiln: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(kiln --help lists the options)\n");
  exit(2);
}

/* "NAME=FILE" into its two parts. */
static void split_pair(const char *arg, const char **name, const char **file) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || !eq[1])
    die_usage("expected NAME=FILE, got '%s'", arg);
  *name = strndup(arg, eq - arg);
  *file = eq + 1;
}

static int64_t parse_int(const char *s, const char *what) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < 0)
    die_usage("%s must be a non-negative integer", what);
  return v;
}

static double parse_real(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || !(v >= 0) || v > 1e300)
    die_usage("%s must be a non-negative number", what);
  return v;
}

static int parse_count(const char *s, const char *what) {
  int64_t v = parse_int(s, what);
  if (v < 1 || v > INT32_MAX)
    die_usage("%s must be a positive integer", what);
  return (int)v;
}

/* --key=value or --key value */
static const char *opt_value(int argc, char **argv, int *i, const char *key) {
  bool missing;
  const char *v = kiln__opt(argc, argv, i, key, &missing);
  if (missing)
    die_usage("%s needs a value", key);
  return v;
}

/* The training options; false if a is none of them. */
static bool parse_train_option(int argc, char **argv, int *i, Cli *c) {
  KilnTrainOptions *t = &c->train;
  const char *v;
  if ((v = opt_value(argc, argv, i, "--epochs")))
    t->epochs = parse_count(v, "--epochs");
  else if ((v = opt_value(argc, argv, i, "--lr")))
    t->lr = parse_real(v, "--lr");
  else if ((v = opt_value(argc, argv, i, "--split")) && (t->split = parse_real(v, "--split")) >= 1)
    die_usage("--split must be below 1, got %s", v);
  else if (v)
    return true;
  else if ((v = opt_value(argc, argv, i, "--optimizer")))
    t->optimizer = v;
  else if ((v = opt_value(argc, argv, i, "--data")))
    t->data = v;
  else if ((v = opt_value(argc, argv, i, "--labels")))
    t->labels = v;
  else if ((v = opt_value(argc, argv, i, "--scale")))
    t->scale = parse_real(v, "--scale");
  else if ((v = opt_value(argc, argv, i, "--checkpoint-every")))
    t->checkpoint_every = parse_count(v, "--checkpoint-every");
  else if ((v = opt_value(argc, argv, i, "--checkpoint")))
    t->checkpoint = v;
  else if ((v = opt_value(argc, argv, i, "--resume")))
    t->resume = v;
  else if ((v = opt_value(argc, argv, i, "--curves")))
    t->curves = v;
  else if ((v = opt_value(argc, argv, i, "--train")))
    t->train = v;
  else if ((v = opt_value(argc, argv, i, "--prime")))
    c->prime = v;
  else if ((v = opt_value(argc, argv, i, "--length")))
    c->length = parse_count(v, "--length");
  else if ((v = opt_value(argc, argv, i, "--count")))
    c->count = parse_count(v, "--count");
  else if ((v = opt_value(argc, argv, i, "--temperature")))
    c->temperature = parse_real(v, "--temperature");
  else
    return false;
  return true;
}

/* The code cache's folder: $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or
 * ~/.cache/kiln; NULL when KILN_CACHE is off (or 0) or there is no home. */
static const char *cache_dir(void) {
  static char dir[4096];
  const char *on = getenv("KILN_CACHE"), *d = getenv("KILN_CACHE_DIR"),
             *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (on && (!strcmp(on, "off") || !strcmp(on, "0")))
    return NULL;
  int n = d && *d       ? snprintf(dir, sizeof dir, "%s", d)
        : x && *x       ? snprintf(dir, sizeof dir, "%s/kiln", x)
        : home && *home ? snprintf(dir, sizeof dir, "%s/.cache/kiln", home)
                        : -1;
  return n > 0 && (size_t)n < sizeof dir ? dir : NULL;
}

/* Environment variable var as an index into names (nnames, NULL entries
 * skipped), or -1 when unset; any other value is the user's mistake. */
static int env_choice(const char *var, const char *const *names, int nnames, const char *expected) {
  const char *f = getenv(var);
  if (!f || !*f)
    return -1;
  for (int i = 0; i < nnames; i++)
    if (names[i] && !strcmp(f, names[i]))
      return i;
  fprintf(stderr, "kiln: %s=%s: expected %s\n", var, f, expected);
  exit(2);
}

/* KILN_LAYOUT=nchw, =blocked or =nhwc forces the layout pass's choice
 * (docs/cli.md): for measuring and testing its cost model. */
static PassLayout forced_layout(void) {
  static const char *const names[] = {[LAYOUT_NCHW] = "nchw", [LAYOUT_BLOCKED] = "blocked",
                                      [LAYOUT_NHWC] = "nhwc"};
  int i = env_choice("KILN_LAYOUT", names, LAYOUT_NHWC + 1, "nchw, blocked or nhwc");
  return i < 0 ? LAYOUT_COST : (PassLayout)i;
}

/* KILN_WINOGRAD=off keeps 3x3 convolutions direct (docs/cli.md): for
 * A/B measurements of the winograd pass. */
static bool winograd_off(void) {
  static const char *const names[] = {"off"};
  return env_choice("KILN_WINOGRAD", names, 1, "off") == 0;
}

static void parse_args(int argc, char **argv, Cli *c) {
  kiln_options_default(&c->opt);
  /* the library reads no environment: the command passes it on */
  c->opt.perf = getenv("KILN_PERF") && !strcmp(getenv("KILN_PERF"), "1");
  c->opt.cache_dir = cache_dir();
  kiln_train_options_default(&c->train);
  c->length = 100;
  c->count = 1;
  c->temperature = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      exit(0);
    } else if (!strcmp(a, "--version")) {
      printf("kiln %s\n", kiln_version());
      exit(0);
    } else if (!strcmp(a, "-o") && i + 1 < argc && !strchr(argv[i + 1], '=')) {
      c->train.out = argv[++i];                /* train: the weights file */
    } else if (!strcmp(a, "-i") || !strcmp(a, "-o")) {
      if (i + 1 >= argc)
        die_usage("%s needs NAME=FILE", a);
      bool in = a[1] == 'i';
      int *n = in ? &c->nin : &c->nout;
      if (*n == 64)
        die_usage("too many %s options", a);
      split_pair(argv[++i], in ? &c->in_name[*n] : &c->out_name[*n],
                 in ? &c->in_file[*n] : &c->out_file[*n]);
      ++*n;
    } else if ((v = opt_value(argc, argv, &i, "--model"))) {
      c->opt.model = v;
    } else if ((v = opt_value(argc, argv, &i, "--weights"))) {
      c->weights = v;
    } else if ((v = opt_value(argc, argv, &i, "--seed"))) {
      c->seed = parse_int(v, "--seed");
      c->seed_given = true;
    } else if ((v = opt_value(argc, argv, &i, "--size"))) {
      c->sizes = v;
    } else if ((v = opt_value(argc, argv, &i, "--batch"))) {
      c->batch = parse_int(v, "--batch");
    } else if ((v = opt_value(argc, argv, &i, "--threads"))) {
      c->opt.threads = (int)parse_int(v, "--threads");
    } else if ((v = opt_value(argc, argv, &i, "--emit"))) {
      c->emit = v;
    } else if ((v = opt_value(argc, argv, &i, "--print-after"))) {
      c->print_after = v;
    } else if (!strcmp(a, "--stats")) {
      c->stats = true;
    } else if (!strcmp(a, "--json")) {
      c->json = true;
    } else if (!strcmp(a, "--step")) {
      c->step = true;
    } else if (parse_train_option(argc, argv, &i, c)) {
      continue;
    } else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3]) {
      c->opt.opt_level = a[2] - '0';
    } else if (a[0] == '-') {
      die_usage("unknown option '%s'", a);
    } else if (!c->cmd) {
      c->cmd = a;
    } else if (!c->model_path) {
      c->model_path = a;
    } else {
      die_usage("unexpected argument '%s'", a);
    }
  }
  if (!c->cmd) {
    fputs(usage, stderr);
    exit(2);
  }
  if (!c->model_path)
    die_usage("%s needs a model file", c->cmd);
  c->opt.sizes = c->sizes;
  c->opt.max_batch = c->batch;
  c->train.batch = c->batch;
  c->train.seed = c->seed_given ? (int64_t)c->seed : -1;
  if (c->train.out && strcmp(c->cmd, "train"))
    die_usage("-o FILE (without NAME=) names the weights kiln train writes; %s takes -o NAME=FILE",
              c->cmd);
}

static int report(KilnModel *m, KilnStatus st) {
  const char *e = kiln_errors(m);
  fputs(e, stderr);
  if (!*e)
    fprintf(stderr, "kiln: %s\n", kiln_status_name(st));
  return 1;
}

static KilnModel *load(Cli *c) {
  KilnModel *m;
  KilnStatus st = kiln_load(c->model_path, &c->opt, &m);
  if (st != KILN_OK) {
    report(m, st);
    kiln_free(m);
    exit(1);
  }
  m->print_after = c->print_after;
  m->stats_out = c->stats ? stdout : NULL;
  m->stats_json = c->json;
  m->emit_llvm = c->emit && !strcmp(c->emit, "llvm") ? stdout : NULL;
  m->emit_asm = c->emit && !strcmp(c->emit, "asm") ? stdout : NULL;
  m->emit_llvm_unopt = c->emit && !strcmp(c->emit, "llvm-unopt") ? stdout : NULL;
  /* check needs code only to show it, or to time it (--stats) */
  m->plan_only = !strcmp(c->cmd, "check") && !m->emit_llvm && !m->emit_asm && !m->emit_llvm_unopt &&
                 !c->stats;
  m->layout = forced_layout();
  m->no_winograd = winograd_off();
  return m;
}

static int set_weights(Cli *c, KilnModel *m) {
  KilnStatus st;
  if (c->weights) {
    st = kiln_load_weights(m, c->weights);
  } else {
    if (strcmp(c->cmd, "check"))   /* check runs nothing: the weights only shape the code */
      fprintf(stderr, "kiln: warning: no --weights given: weights are drawn from seed %llu\n",
              (unsigned long long)c->seed);
    st = kiln_init_weights(m, c->seed);
  }
  return st == KILN_OK ? 0 : report(m, st);
}

/* Compiles the bound graph (inference, or with --step the training step)
 * for --emit and --stats without running it; *g is what was compiled. */
/* A size other than the batch that --size leaves unbound (T), or NULL. */
static const char *unbound_size(const Graph *s) {
  for (int i = 0; i < s->nsvars; i++)
    if (s->svals[i] < 0 && i != kiln__batch_var(s))
      return s->svars[i];
  return NULL;
}

static int compile_only(Cli *c, KilnModel *m, const Graph **g) {
  const Graph *s = m->sig;
  int bv = kiln__batch_var(s);
  if (set_weights(c, m))
    return 1;
  KilnStatus st;
  if (c->step) {
    st = kiln__compile_step(m, c->train.train, c->batch, g);
  } else {
    st = kiln__compile(m, m->sizes, m->nsizes, bv >= 0 ? s->svars[bv] : NULL,
                       c->batch ? c->batch : 1);
    *g = st == KILN_OK ? m->cc->g : NULL;
  }
  return st == KILN_OK ? 0 : report(m, st);
}

/* What the passes made of the model, in the form --emit asks for (ir, the
 * default, and dot print the graph after the last pass; -O0 shows it close
 * to as lowered, --print-after=all pass by pass). */
static int emit(Cli *c, KilnModel *m) {
  const char *e = c->emit ? c->emit : "ir";
  if (strcmp(e, "ir") && strcmp(e, "dot") && strcmp(e, "memplan") && strcmp(e, "llvm") &&
      strcmp(e, "llvm-unopt") && strcmp(e, "asm"))
    die_usage("unknown --emit kind '%s' (ir, dot, memplan, llvm, llvm-unopt, asm)", e);
  const Graph *g = m->sig;
  const char *size = unbound_size(g);
  bool graph = !strcmp(e, "ir") || !strcmp(e, "dot");
  if (graph && size)   /* the passes need every size but the batch */
    fprintf(stderr, "kiln: note: size %s is not bound, so this is the IR as lowered; "
            "--size %s=... shows it after the passes\n", size, size);
  else if (compile_only(c, m, &g))
    return 1;
  if (!strcmp(e, "ir"))
    ir_print(g, stdout);
  else if (!strcmp(e, "dot"))
    ir_print_dot(g, stdout);
  else if (!strcmp(e, "memplan"))
    pass_print_memplan(g, stdout);
  return 0;   /* llvm and asm were printed while compiling */
}

static int cmd_check(Cli *c) {
  KilnModel *m = load(c);
  int rc = c->stats || c->print_after ? compile_only(c, m, &(const Graph *){NULL}) : emit(c, m);
  kiln_free(m);
  return rc;
}

static int read_inputs(Cli *c, KilnTensor *in, RtTensor *store) {
  for (int i = 0; i < c->nin; i++) {
    RtError err;
    if (rt_npy_read(c->in_file[i], &store[i], &err) != RT_OK) {
      fprintf(stderr, "kiln: input %s: %s\n", c->in_name[i], err.msg);
      return 1;
    }
    in[i] = (KilnTensor){.name = c->in_name[i], .dtype = (KilnDType)store[i].dtype,
                         .rank = store[i].rank, .data = store[i].data};
    memcpy(in[i].shape, store[i].shape, sizeof in[i].shape);
  }
  return 0;
}

static void summarize(const KilnTensor *t) {
  char sb[128];
  printf("%s: %s %s", t->name, rt_dtype_name((RtDType)t->dtype),
         rt_shape_str(t->rank, t->shape, sb, sizeof sb));
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++)
    n *= t->shape[i];
  if (t->dtype == KILN_F32)
    for (int64_t i = 0; i < n && i < 8; i++)
      printf("%s%.6g", i ? " " : "  ", ((float *)t->data)[i]);
  printf("%s\n", n > 8 ? " ..." : "");
}

static int write_outputs(Cli *c, const KilnTensor *out, int nout) {
  for (int i = 0; i < nout; i++) {
    const char *file = NULL;
    for (int j = 0; j < c->nout; j++)
      if (!strcmp(c->out_name[j], out[i].name))
        file = c->out_file[j];
    if (!file) {
      summarize(&out[i]);
      continue;
    }
    RtTensor t = {(RtDType)out[i].dtype, out[i].rank, {0}, out[i].data};
    memcpy(t.shape, out[i].shape, sizeof t.shape);
    RtError err;
    if (rt_npy_write(file, &t, &err) != RT_OK) {
      fprintf(stderr, "kiln: output %s: %s\n", out[i].name, err.msg);
      return 1;
    }
  }
  for (int j = 0; j < c->nout; j++) {
    bool known = false;
    for (int i = 0; i < nout; i++)
      known |= !strcmp(c->out_name[j], out[i].name);
    if (!known) {
      fprintf(stderr, "kiln: the model has no output named '%s'\n", c->out_name[j]);
      return 1;
    }
  }
  return 0;
}

static int cmd_run(Cli *c) {
  KilnModel *m = load(c);
  KilnTensor in[64], out[64];
  RtTensor store[64] = {0};
  int nout = kiln_output_count(m), rc = 1;
  if (c->emit && strcmp(c->emit, "llvm") && strcmp(c->emit, "llvm-unopt") && strcmp(c->emit, "asm")) {
    rc = emit(c, m);
    goto done;
  }
  if (set_weights(c, m) || read_inputs(c, in, store))
    goto done;
  KilnStatus st = kiln_run(m, in, c->nin, out, nout > 64 ? 64 : nout);
  if (st != KILN_OK) {
    report(m, st);
    goto done;
  }
  rc = write_outputs(c, out, nout > 64 ? 64 : nout);
done:
  for (int i = 0; i < c->nin; i++) {
    rt_tensor_free(&store[i]);
    free((char *)c->in_name[i]);      /* split_pair's copies */
  }
  for (int j = 0; j < c->nout; j++)
    free((char *)c->out_name[j]);
  kiln_free(m);
  return rc;
}

/* STEM of dir/STEM.kiln followed by suffix: the default names of train's files. */
/* PATH's file name without its extension, then SUFFIX, in buf. */
static const char *stem_with(const char *path, const char *suffix, char *buf, size_t size) {
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  const char *dot = strrchr(base, '.');
  int n = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
  snprintf(buf, size, "%.*s%s", n, base, suffix);
  return buf;
}

static int cmd_train(Cli *c) {
  KilnModel *m = load(c);
  KilnTrainOptions *t = &c->train;
  KilnStatus st = KILN_OK;
  char out[4096], curves[4096], ckpt[4096];
  if (!t->out)
    t->out = stem_with(c->model_path, ".safetensors", out, sizeof out);
  if (!t->curves)
    t->curves = stem_with(c->model_path, ".curves", curves, sizeof curves);
  t->checkpoint_default = stem_with(c->model_path, ".ckpt.safetensors", ckpt, sizeof ckpt);
  t->progress = c->json ? stderr : stdout;
  t->json = c->json ? stdout : NULL;
  if (c->weights)
    st = kiln_load_weights(m, c->weights);
  if (st == KILN_OK)
    st = kiln_train(m, t);
  int rc = st == KILN_OK ? 0 : report(m, st);
  if (!rc)
    fprintf(t->progress, "weights: %s  curves: %s.csv, %s.svg\n", t->out, t->curves, t->curves);
  kiln_free(m);
  return rc;
}

static int cmd_eval(Cli *c) {
  if (!c->weights)
    die_usage("%s needs --weights FILE (the trained weights)", "eval");
  KilnModel *m = load(c);
  KilnEpoch e;
  int64_t n = 0;
  KilnStatus st = kiln_load_weights(m, c->weights);
  if (st == KILN_OK)
    st = kiln_evaluate(m, &c->train, &e, &n);
  int rc = st == KILN_OK ? 0 : report(m, st);
  if (!rc && c->json) {
    printf("{\"samples\": %lld, \"loss\": %.17g, \"acc\": ", (long long)n, e.loss);
    if (isnan(e.acc))
      printf("null}\n");
    else
      printf("%.17g}\n", e.acc);
  } else if (!rc) {
    printf("%lld samples  loss %.4f", (long long)n, e.loss);
    if (!isnan(e.acc))
      printf("  acc %.2f%%", 100 * e.acc);
    printf("\n");
  }
  kiln_free(m);
  return rc;
}

/* ---- sample: the step function of the C API, one symbol at a time ---- */

typedef struct Sampler {
  KilnModel *m;
  KilnStep *step;
  int32_t *vocab;
  int nvocab;
  KilnTensor in;            /* the model's input at one step: [1, 1] */
  int64_t symbol;           /* what `in` holds */
  const float *logits;      /* of the next symbol, after the last feed */
  uint64_t draws;           /* the sampler's counter: draw i of the seed */
} Sampler;

static KilnStatus feed_symbol(Sampler *s, int64_t sym) {
  KilnTensor out;
  if (s->in.dtype == KILN_I32)
    *(int32_t *)s->in.data = (int32_t)sym;
  else
    *(int64_t *)s->in.data = sym;
  KilnStatus st = kiln_step_run(s->step, &s->in, 1, &out, 1);
  s->logits = out.data;
  return st;
}

/* The prime's characters fed one by one; -1 on a character the vocabulary lacks. */
static int feed_prime(Sampler *s, const char *prime) {
  for (size_t at = 0, n = strlen(prime); at < n;) {
    int32_t cp;
    int used = rt_utf8_decode((const uint8_t *)prime + at, n - at, &cp);
    int sym = used ? rt_text_index(s->vocab, s->nvocab, cp) : -1;
    if (sym < 0) {
      fprintf(stderr, "kiln: --prime: '%.*s' is not in the model's vocabulary\n",
              used ? used : 1, prime + at);
      return -1;
    }
    if (feed_symbol(s, sym) != KILN_OK) {
      report(s->m, KILN_ERR_INPUT);
      return -1;
    }
    at += (size_t)used;
  }
  return 0;
}

/* One sequence: the prime, then symbols drawn at the temperature until the
 * end symbol or --length characters. */
static int sample_one(Sampler *s, const Cli *c, bool lines) {
  kiln_step_reset(s->step);
  if ((lines && feed_symbol(s, RT_TEXT_END) != KILN_OK) || feed_prime(s, c->prime))
    return 1;
  fputs(c->prime, stdout);
  for (int64_t k = 0; k < c->length; k++) {
    int64_t sym = rt_sample_index(s->logits, s->nvocab, c->temperature, c->seed, s->draws++);
    if (sym == RT_TEXT_END)
      break;
    char utf8[4];
    fwrite(utf8, 1, (size_t)rt_utf8_encode(s->vocab[sym], utf8), stdout);
    if (feed_symbol(s, sym) != KILN_OK)
      return report(s->m, KILN_ERR_INPUT);
  }
  putchar('\n');
  return 0;
}

/* The vocabulary of the weights and a model that maps symbols to logits over it. */
static int sampler_init(Sampler *s, Cli *c, bool *lines) {
  KilnTensor info;
  int lines_flag;
  const char *v = kiln_vocab(s->m, &lines_flag);
  *lines = lines_flag;
  if (!v) {
    fprintf(stderr, "kiln: %s holds no vocabulary: sample needs weights that kiln train wrote "
            "from text() data\n", c->weights);
    return 1;
  }
  if ((s->nvocab = rt_text_vocab_parse(v, &s->vocab)) < 0) {
    fprintf(stderr, "kiln: %s: its vocabulary is not one kiln wrote\n", c->weights);
    return 1;
  }
  if (kiln_input_count(s->m) != 1 || kiln_input_info(s->m, 0, &info) != KILN_OK ||
      (info.dtype != KILN_I32 && info.dtype != KILN_I64) || info.rank != 2) {
    fprintf(stderr, "kiln: sample needs a model of one input of symbols [N, T] (i32 or i64)\n");
    return 1;
  }
  s->in = (KilnTensor){info.name, info.dtype, 2, {1, 1}, &s->symbol};
  if (!*lines && !*c->prime) {
    fprintf(stderr, "kiln: a model of a running text needs --prime TEXT to start from\n");
    return 1;
  }
  KilnStatus st = kiln_step_create(s->m, 1, &s->step);
  return st == KILN_OK ? 0 : report(s->m, st);
}

static int cmd_sample(Cli *c) {
  if (!c->weights)
    die_usage("%s needs --weights FILE (trained on text() data)", "sample");
  if (!c->prime)
    c->prime = "";
  Sampler s = {.m = load(c)};
  bool lines = false;
  KilnStatus st = kiln_load_weights(s.m, c->weights);
  int rc = st != KILN_OK ? report(s.m, st) : sampler_init(&s, c, &lines);
  KilnTensor out;
  if (!rc && kiln_output_info(s.m, 0, &out) == KILN_OK && out.shape[out.rank - 1] != s.nvocab) {
    fprintf(stderr, "kiln: the model's output '%s' has %lld classes, the vocabulary of %s %d "
            "symbols\n", out.name, (long long)out.shape[out.rank - 1], c->weights, s.nvocab);
    rc = 1;
  }
  for (int64_t i = 0; !rc && i < (lines ? c->count : 1); i++)
    rc = sample_one(&s, c, lines);
  kiln_step_free(s.step);
  free(s.vocab);
  kiln_free(s.m);
  return rc;
}

int main(int argc, char **argv) {
  rt_prefer_passive_wait(argv);
  if (argc > 1 && (!strcmp(argv[1], "export") || !strcmp(argv[1], "build")))
    return kiln__export_main(argc, argv);
  Cli c = {0};
  parse_args(argc, argv, &c);
  if (!strcmp(c.cmd, "check"))
    return cmd_check(&c);
  if (!strcmp(c.cmd, "run"))
    return cmd_run(&c);
  if (!strcmp(c.cmd, "train"))
    return cmd_train(&c);
  if (!strcmp(c.cmd, "eval"))
    return cmd_eval(&c);
  if (!strcmp(c.cmd, "sample"))
    return cmd_sample(&c);
  return die_usage("unknown command '%s'", c.cmd);
}

/* kiln export and kiln build: a model file becomes a native artifact that
 * needs no kiln, no LLVM and no Python.
 *
 *   model ─► the C API's passes (kiln__compile_graph, no JIT code): the
 *            inference graph and, for a model with a train block, the
 *            training step, planned and holding their weights
 *         ─► one LLVM module for the target: both graphs (cg_build_graph,
 *            cg_optimize: the JIT's code), a descriptor (runtime/aot.h),
 *            the weights, and NAME_ functions forwarding to the runtime
 *         ─► an object, linked by the system `cc` with libkilnrt.a (built
 *            -fPIC, found beside kiln) into libNAME.so, libNAME.a or a
 *            program; and NAME.h, the documentation a C programmer needs.
 *
 * The LLVM C API has no linker, hence `cc`. The runtime's own symbols are
 * hidden in the artifact (--exclude-libs, objcopy), the model's are
 * internal, so several exported models live in one program. */
#include "tools/api.h"
#include "runtime/aot.h"
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct ExportCli {
  const char *cmd, *model_path, *model, *weights, *out, *sizes, *target, *cpu, *emit;
  const char *weights_file;  /* --weights-file: keep the weights in this .safetensors */
  bool infer_only, seed_given;
  uint64_t seed;
  int64_t batch;
  int opt_level, threads;
} ExportCli;

typedef struct Buf {          /* a growing array of bytes */
  char *p;
  size_t n, cap;
} Buf;

typedef struct Export {
  ExportCli *cli;
  KilnModel *m;
  char name[128];             /* the NAME_ prefix: a C identifier */
  char upper[128];
  Compiled *cc[2];
  int ngraphs;
  bool live;                  /* parameters stay named in memory: training, --weights-file */
  Buf words, strings, blob;
  Buf inits;                  /* int64 {region, offset, bytes, blob offset} of the graph being described */
  char tmp[256];              /* a folder for the object and the link */
  char triple[128], cpu[64];  /* empty: the host's, exactly the JIT's */
  const char *features;
} Export;

/* ---- small helpers ---------------------------------------------------------- */

static int die_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "kiln: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(kiln --help lists the options)\n");
  return 2;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kiln: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return 1;
}

static bool put(Buf *b, const void *data, size_t n) {
  if (n == 0)
    return true;                  /* nothing to copy, maybe into no buffer yet */
  if (b->n + n > b->cap) {
    size_t cap = (b->n + n) * 2 + 256;
    char *p = realloc(b->p, cap);
    if (!p)
      return false;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
  return true;
}

static void word(Buf *b, int64_t w) { put(b, &w, sizeof w); }
static int64_t *words_at(Buf *b, size_t i) { return (int64_t *)b->p + i; }
static size_t nwords(const Buf *b) { return b->n / sizeof(int64_t); }

static int64_t string(Export *e, const char *s) {
  int64_t at = (int64_t)e->strings.n;
  put(&e->strings, s, strlen(s) + 1);
  return at;
}

/* Runs argv (no shell); 0 if it exited 0. */
static int run(char *const *argv) {
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[0], argv);
    fprintf(stderr, "kiln: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int st;
  if (pid < 0 || waitpid(pid, &st, 0) < 0)
    return fail("cannot run %s: %s", argv[0], strerror(errno));
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
    return 0;
  fprintf(stderr, "kiln: this command failed:");
  for (int i = 0; argv[i]; i++)
    fprintf(stderr, " %s", argv[i]);
  fprintf(stderr, "\n");
  return 1;
}

/* ---- the command line ----------------------------------------------------- */

static const char *opt_value(int argc, char **argv, int *i, const char *key, int *bad) {
  bool missing;
  const char *v = kiln__opt(argc, argv, i, key, &missing);
  if (missing)
    *bad = die_usage("%s needs a value", key);
  return v;
}

static int64_t number(const char *s, const char *what, int *bad) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < 0 || v > INT32_MAX)
    *bad = die_usage("%s must be a non-negative integer", what);
  return v;
}

static int parse_value(ExportCli *c, int argc, char **argv, int *i, int *bad) {
  const char *v;
  if ((v = opt_value(argc, argv, i, "--weights-file", bad)))
    c->weights_file = v;
  else if ((v = opt_value(argc, argv, i, "--weights", bad)))
    c->weights = v;
  else if ((v = opt_value(argc, argv, i, "--model", bad)))
    c->model = v;
  else if ((v = opt_value(argc, argv, i, "--size", bad)))
    c->sizes = v;
  else if ((v = opt_value(argc, argv, i, "--target", bad)))
    c->target = v;
  else if ((v = opt_value(argc, argv, i, "--cpu", bad)))
    c->cpu = v;
  else if ((v = opt_value(argc, argv, i, "--emit", bad)))
    c->emit = v;
  else if ((v = opt_value(argc, argv, i, "--batch", bad)))
    c->batch = number(v, "--batch", bad);
  else if ((v = opt_value(argc, argv, i, "--threads", bad)))
    c->threads = (int)number(v, "--threads", bad);
  else if ((v = opt_value(argc, argv, i, "--seed", bad))) {
    c->seed = (uint64_t)number(v, "--seed", bad);
    c->seed_given = true;
  } else if ((v = opt_value(argc, argv, i, "-o", bad)))
    c->out = v;
  else
    return 0;
  return 1;
}

static int parse_cli(ExportCli *c, int argc, char **argv) {
  int bad = 0;
  c->cmd = argv[1];
  c->opt_level = 2;
  c->batch = 64;
  for (int i = 2; i < argc && !bad; i++) {
    const char *a = argv[i];
    if (parse_value(c, argc, argv, &i, &bad))
      continue;
    if (!strcmp(a, "--infer-only"))
      c->infer_only = true;
    else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3])
      c->opt_level = a[2] - '0';
    else if (a[0] == '-' && !bad)
      bad = die_usage("unknown option '%s'", a);
    else if (!c->model_path)
      c->model_path = a;
    else if (!bad)
      bad = die_usage("unexpected argument '%s'", a);
  }
  if (bad)
    return bad;
  if (!c->model_path)
    return die_usage("%s needs a model file", c->cmd);
  if (!c->out)
    return die_usage("%s needs -o FILE (libNAME.so, libNAME.a, or a program)", c->cmd);
  if (c->batch < 1)
    return die_usage("--batch must be at least 1, got %s", "0");
  const char *slash = strrchr(c->out, '/');
  char dir[4096];
  struct stat st;
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - c->out) + 1 : 1, slash ? c->out : ".");
  if (stat(dir, &st) || !S_ISDIR(st.st_mode))
    return fail("cannot write %s: there is no folder %s", c->out, dir);
  if (c->emit && strcmp(c->emit, "obj") && strcmp(c->emit, "asm") && strcmp(c->emit, "llvm"))
    return die_usage("--emit takes obj, asm or llvm, not '%s'", c->emit);
  return 0;
}

/* ---- compiling the graphs -------------------------------------------------- */

static int report(KilnModel *m, KilnStatus st) {
  const char *e = kiln_errors(m);
  fputs(e, stderr);
  if (!*e)
    fprintf(stderr, "kiln: %s\n", kiln_status_name(st));
  return 1;
}

static int load(Export *e) {
  ExportCli *c = e->cli;
  KilnOptions o;
  kiln_options_default(&o);
  o.model = c->model;
  o.sizes = c->sizes;
  o.opt_level = c->opt_level;
  o.threads = c->threads;
  KilnStatus st = kiln_load(c->model_path, &o, &e->m);
  if (st == KILN_OK && c->weights)
    st = kiln_load_weights(e->m, c->weights);
  else if (st == KILN_OK) {
    fprintf(stderr, "kiln: warning: no --weights given: weights are drawn from seed %llu\n",
            (unsigned long long)c->seed);
    st = kiln_init_weights(e->m, c->seed);
  }
  return st == KILN_OK ? 0 : report(e->m, st);
}

static int compile_graphs(Export *e) {
  KilnModel *m = e->m;
  const char *batch = kiln__batch_name(m);
  int64_t maxb = batch ? e->cli->batch : 1;
  bool train = !e->cli->infer_only && strcmp(e->cli->cmd, "build") && m->ast->ntrains > 0;
  e->live = train || e->cli->weights_file;
  FeOptions fo = {.model = m->opt.model, .sizes = m->sizes, .nsizes = m->nsizes};
  Graph *g = fe_lower(m->ast, &fo, &m->diags);
  KilnStatus st = !g || m->diags.nerrors ? KILN_ERR_MODEL : KILN_OK;
  if (st != KILN_OK)
    ir_graph_free(g);
  unsigned live = e->live ? KILN__LIVE_WEIGHTS : 0;
  m->lanes = e->triple[0] ? cg_target_lanes(e->triple, e->features, 4) : 0;
  if (st == KILN_OK)
    st = kiln__compile_graph(m, g, batch, maxb, KILN__NO_CODE | live, &e->cc[0]);
  e->ngraphs = 1;
  if (st == KILN_OK && train && (st = kiln__step_graph(m, &g)) == KILN_OK) {
    st = kiln__compile_graph(m, g, batch, maxb, KILN__NO_CODE | KILN__LIVE_WEIGHTS | KILN__INIT_STATE,
                             &e->cc[1]);
    e->ngraphs = 2;
  }
  if (st != KILN_OK && train && e->ngraphs == 1 && e->cc[0])
    fprintf(stderr, "kiln: the training step did not compile (--infer-only exports inference alone)\n");
  return st == KILN_OK ? 0 : report(m, st);
}

/* ---- the descriptor (runtime/aot.h) ------------------------------------------ */

/* Dim k of v as mul * batch + add; false if it is not affine in the batch. */
static bool affine_dim(const Graph *g, const Value *v, int k, int64_t *mul, int64_t *add) {
  int64_t vals[256], at[3];
  if (g->nsvars > 256)
    return false;
  memcpy(vals, g->svals, g->nsvars * sizeof *vals);
  for (int b = 0; b < 3; b++) {
    if (g->batch_var >= 0)
      vals[g->batch_var] = b;
    if (!sz_eval(v->type.dim[k], vals, &at[b]))
      return false;
  }
  *add = at[0];
  *mul = at[1] - at[0];
  return at[2] == at[0] + 2 * *mul;
}

static double fill_value(const Value *v, bool *ok) {
  *ok = v->role == V_STATE && (v->init.kind == INIT_ZEROS || v->init.kind == INIT_ONES ||
                              v->init.kind == INIT_CONST);
  return v->init.kind == INIT_ONES ? 1 : v->init.kind == INIT_CONST ? v->init.a : 0;
}

static int tensor(Export *e, const Graph *g, const Value *v, KilnAotRole role) {
  int64_t t[KILN_AOT_TENSOR_WORDS] = {0};
  bool fill;
  double fv = fill_value(v, &fill);
  t[KILN_AOT_T_NAME] = string(e, v->name ? v->name : "");
  t[KILN_AOT_T_ROLE] = role;
  t[KILN_AOT_T_REGION] = v->region;
  t[KILN_AOT_T_OFFSET] = v->offset;
  t[KILN_AOT_T_DTYPE] = v->type.dt;
  t[KILN_AOT_T_RANK] = v->type.rank;
  t[KILN_AOT_T_FILL] = fill;
  memcpy(&t[KILN_AOT_T_FILL_VALUE], &fv, sizeof fv);
  for (int k = 0; k < v->type.rank; k++)
    if (!affine_dim(g, v, k, &t[KILN_AOT_T_MUL + k], &t[KILN_AOT_T_ADD + k]))
      return fail("'%s': dim %d is not affine in the batch; kiln export cannot size it at run time",
                  v->name, k);
  if (v->region < 0)
    return fail("internal: '%s' has no place in memory", v->name);
  put(&e->words, t, sizeof t);
  return 0;
}

static bool all_zero(const unsigned char *p, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

/* The blob offset of these bytes: an earlier copy (a parameter both graphs
 * hold) or a new 64-byte aligned one. */
static int64_t blob_bytes(Export *e, const void *p, int64_t n) {
  for (size_t i = 0; i + 4 <= nwords(&e->inits); i += 4) {
    int64_t *r = words_at(&e->inits, i);
    if (r[2] == n && !memcmp(e->blob.p + r[3], p, n))
      return r[3];
  }
  static const char zeros[64];
  put(&e->blob, zeros, (64 - e->blob.n % 64) % 64);
  int64_t at = (int64_t)e->blob.n;
  put(&e->blob, p, n);
  return at;
}

/* The initial contents of g's regions that are not zero: constants always,
 * parameters and state unless they come from a --weights-file. */
static void inits(Export *e, const Compiled *cc, Buf *out) {
  const Graph *g = cc->g;
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    bool stored = v->role == V_PARAM || v->role == V_STATE;
    if ((!stored && v->role != V_CONST) || v->region < 0 || v->alias ||
        (stored && e->cli->weights_file))
      continue;
    int64_t n = ir_bytes_max(g, &v->type);
    const void *p = kiln__at(cc, v);
    if (all_zero(p, n))
      continue;
    int64_t r[4] = {v->region, v->offset, n, blob_bytes(e, p, n)};
    put(&e->inits, r, sizeof r);
    put(out, r, sizeof r);
  }
}

static int describe_graph(Export *e, const Compiled *cc) {
  const Graph *g = cc->g;
  Buf ini = {0};
  inits(e, cc, &ini);
  int nstored = 0;
  for (int i = 0; i < g->nparams; i++)
    nstored += g->params[i]->region >= 0;
  int lr = -1;
  for (int i = 0; i < g->ninputs; i++)
    if (g->inputs[i] == g->lr)
      lr = i;
  for (int r = 0; r < REGION_COUNT; r++)
    word(&e->words, g->region_bytes[r]);
  int64_t head[KILN_AOT_GRAPH_WORDS - REGION_COUNT] = {g->ninputs, g->noutputs, nstored,
                                                      (int64_t)nwords(&ini) / 4, lr};
  put(&e->words, head, sizeof head);
  int rc = 0;
  for (int i = 0; i < g->ninputs && !rc; i++)
    rc = tensor(e, g, g->inputs[i], KILN_AOT_INPUT);
  for (int i = 0; i < g->noutputs && !rc; i++)
    rc = tensor(e, g, g->outputs[i], KILN_AOT_OUTPUT);
  for (int i = 0; i < g->nparams && !rc; i++)
    if (g->params[i]->region >= 0)
      rc = tensor(e, g, g->params[i], g->params[i]->role == V_PARAM ? KILN_AOT_PARAM : KILN_AOT_STATE);
  put(&e->words, ini.p, ini.n);
  free(ini.p);
  return rc;
}

static int describe(Export *e) {
  int64_t head[KILN_AOT_HEAD_WORDS] = {KILN_AOT_VERSION, e->cc[0]->max_batch, e->ngraphs, 0,
                                       e->cc[0]->threads};
  put(&e->words, head, sizeof head);
  int rc = 0;
  for (int i = 0; i < e->ngraphs && !rc; i++)
    rc = describe_graph(e, e->cc[i]);
  *words_at(&e->words, 3) = (int64_t)e->blob.n;
  return rc;
}

/* ---- the target ------------------------------------------------------------- */

/* Features for named CPUs: LLVM derives the instruction set from the CPU
 * name itself; the features string tells codegen the vector width. */
static const char *cpu_features(const char *cpu) {
  static const struct { const char *cpu, *features; } tab[] = {
      {"x86-64", ""}, {"x86-64-v2", "+sse4.2"},
      {"x86-64-v3", "+avx,+avx2,+fma"}, {"haswell", "+avx,+avx2,+fma"},
      {"broadwell", "+avx,+avx2,+fma"}, {"skylake", "+avx,+avx2,+fma"},
      {"znver1", "+avx,+avx2,+fma"}, {"znver2", "+avx,+avx2,+fma"}, {"znver3", "+avx,+avx2,+fma"},
      {"x86-64-v4", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl"},
      {"skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl"},
      {"icelake-server", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl"},
      {"znver4", "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512dq,+avx512vl"},
  };
  for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
    if (!strcmp(tab[i].cpu, cpu))
      return tab[i].features;
  return "";
}

/* --target aarch64 or x86_64 alone means Linux on it. */
static void target_triple(const char *target, char *out, size_t len) {
  if (!strchr(target, '-') || !strcmp(target, "x86-64"))
    snprintf(out, len, "%s-unknown-linux-gnu", !strcmp(target, "x86-64") ? "x86_64" : target);
  else
    snprintf(out, len, "%s", target);
}

static bool same_arch(const char *a, const char *b) {
  size_t n = strcspn(a, "-");
  return n == strcspn(b, "-") && !strncmp(a, b, n);
}

static bool host_arch(const char *triple) {
  char *host = LLVMGetDefaultTargetTriple();
  bool same = same_arch(host, triple);
  LLVMDisposeMessage(host);
  return same;
}

/* The target: the host exactly (e->triple empty: the JIT's triple, CPU and
 * features) unless --target or --cpu say otherwise. Resolved before the
 * passes run, since layout selection plans for the target's vector width. */
static void resolve_target(Export *e) {
  const ExportCli *cli = e->cli;
  if (!cli->target && !cli->cpu)
    return;
  cg_init_llvm();
  char *host = LLVMGetDefaultTargetTriple();
  if (cli->target)
    target_triple(cli->target, e->triple, sizeof e->triple);
  else
    snprintf(e->triple, sizeof e->triple, "%s", host);
  LLVMDisposeMessage(host);
  bool x86 = !strncmp(e->triple, "x86_64", 6);
  snprintf(e->cpu, sizeof e->cpu, "%s", cli->cpu ? cli->cpu : x86 ? "x86-64" : "generic");
  e->features = x86 ? cpu_features(e->cpu) : "+neon";
}

static int init_module(Export *e, CgCtx *c, char *err, int errlen) {
  if (!e->triple[0])
    return cg_ctx_init(c, e->name, NULL, NULL, NULL, err, errlen);
  return cg_ctx_init(c, e->name, e->triple, e->cpu, e->features, err, errlen);
}

/* ---- the module ---------------------------------------------------------------- */

static LLVMValueRef cstring(CgCtx *c, const char *name, const char *s) {
  return s ? cg_add_bytes(c, name, s, strlen(s) + 1, 1) : NULL;
}

/* NAME_fn(args) -> runtime(pre, args): the artifact's entry points. */
static void forward(Export *e, CgCtx *c, const char *fn, const char *callee, const char *sig,
                    LLVMValueRef desc, int graph, const char **keep, int *nkeep) {
  char name[192];
  snprintf(name, sizeof name, "%s_%s", e->name, fn);
  if (!strcmp(fn, "main"))
    snprintf(name, sizeof name, "main");
  LLVMValueRef pre[2] = {desc, LLVMConstInt(c->t_i32, graph, 0)};
  cg_add_forward(c, name, callee, sig, pre, desc ? (graph >= 0 ? 2 : 1) : 0);
  keep[(*nkeep)++] = strdup(name);
}

static void add_entry_points(Export *e, CgCtx *c, LLVMValueRef desc, bool program) {
  const char *keep[24];
  int n = 0;
  forward(e, c, "create", "kiln_aot_create", "ipp", desc, -1, keep, &n);
  forward(e, c, "destroy", "kiln_aot_destroy", "vp", NULL, -1, keep, &n);
  forward(e, c, "error", "kiln_aot_error", "pp", NULL, -1, keep, &n);
  forward(e, c, "set_threads", "kiln_aot_set_threads", "ipi", NULL, -1, keep, &n);
  forward(e, c, "infer", "kiln_aot_infer", "iplpp", NULL, -1, keep, &n);
  forward(e, c, "infer_tensors", "kiln_aot_infer_tensors", "ippipi", NULL, -1, keep, &n);
  forward(e, c, "find", "kiln_aot_find", "ppp", NULL, -1, keep, &n);
  forward(e, c, "save_weights", "kiln_aot_save_weights", "ipp", NULL, -1, keep, &n);
  forward(e, c, "infer_init", "kiln_aot_init_regions", "ipp", desc, 0, keep, &n);
  forward(e, c, "infer_run", "kiln_aot_run", "ipli", desc, 0, keep, &n);
  if (e->ngraphs > 1) {
    forward(e, c, "train_step", "kiln_aot_train_step", "iplpfp", NULL, -1, keep, &n);
    forward(e, c, "train_init", "kiln_aot_init_regions", "ipp", desc, 1, keep, &n);
    forward(e, c, "train_run", "kiln_aot_run", "ipli", desc, 1, keep, &n);
  }
  if (program)
    forward(e, c, "main", "kiln_aot_main", "iip", desc, -1, keep, &n);
  cg_internalize(c, keep, n);
  for (int i = 0; i < n; i++)
    free((char *)keep[i]);
}

/* The descriptor's data and the struct of pointers the runtime reads. */
static LLVMValueRef add_descriptor(Export *e, CgCtx *c, LLVMValueRef *entries) {
  const char *wf = e->cli->weights_file;
  const char *base = wf && strrchr(wf, '/') ? strrchr(wf, '/') + 1 : wf;
  LLVMValueRef p[7] = {
      cg_add_words(c, "kiln.words", (const int64_t *)e->words.p, nwords(&e->words)),
      cg_add_bytes(c, "kiln.strings", e->strings.p, e->strings.n, 1),
      cg_add_bytes(c, "kiln.blob", e->blob.p, e->blob.n, 64),
      entries[0], entries[1],
      cstring(c, "kiln.name", e->cc[0]->g->name),
      cstring(c, "kiln.weights_file", base),
  };
  return cg_add_pointers(c, "kiln.model", p, 7);
}

static int build_module(Export *e, CgCtx *c, bool program, char *err, int errlen) {
  static const char *suffix[] = {"infer", "train"};
  LLVMValueRef entries[2] = {NULL, NULL};
  char name[192];
  if (init_module(e, c, err, errlen))
    return -1;
  for (int i = 0; i < e->ngraphs; i++) {
    snprintf(name, sizeof name, "%s.%s", e->name, suffix[i]);
    if (cg_build_graph(c, e->cc[i]->g, name, err, errlen))
      return -1;
    entries[i] = LLVMGetNamedFunction(c->mod, name);
  }
  if (cg_optimize(c, e->cli->opt_level >= 1 ? 3 : 0, err, errlen))
    return -1;
  add_entry_points(e, c, add_descriptor(e, c, entries), program);
  return 0;
}

/* ---- linking ------------------------------------------------------------------ */

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* libkilnrt.a beside the kiln binary: in its folder, the build tree's
 * runtime/, or the lib folder it installs to; KILN_RUNTIME overrides. */
static const char *find_runtime(char *buf, size_t len) {
  const char *env = getenv("KILN_RUNTIME");
  if (env)
    return exists(env) ? env : NULL;
  char self[2048];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    return NULL;
  self[n] = 0;
  *strrchr(self, '/') = 0;
  static const char *places[] = {"%s/libkilnrt.a", "%s/runtime/libkilnrt.a", "%s/../lib/libkilnrt.a",
                                 "%s/../lib64/libkilnrt.a"};
  for (size_t i = 0; i < sizeof places / sizeof *places; i++) {
    snprintf(buf, len, places[i], self);
    if (exists(buf))
      return buf;
  }
  glob_t gl;
  snprintf(buf, len, "%s/../lib/*/libkilnrt.a", self);
  bool found = glob(buf, 0, NULL, &gl) == 0 && gl.gl_pathc > 0;
  if (found)
    snprintf(buf, len, "%s", gl.gl_pathv[0]);
  globfree(&gl);
  return found ? buf : NULL;
}

static const char *cc_program(void) {
  const char *cc = getenv("CC");
  return cc && *cc ? cc : "cc";
}

static int link_shared(Export *e, const char *obj, const char *rt) {
  char soname[256];
  const char *base = strrchr(e->cli->out, '/') ? strrchr(e->cli->out, '/') + 1 : e->cli->out;
  snprintf(soname, sizeof soname, "-Wl,-soname,%s", base);
  char *argv[] = {(char *)cc_program(), "-shared", "-o", (char *)e->cli->out, (char *)obj,
                  (char *)rt, "-fopenmp", "-lm", "-Wl,--exclude-libs,ALL", "-Wl,--as-needed",
                  "-Wl,--strip-debug", soname, NULL};
  return run(argv);
}

static int link_program(Export *e, const char *obj, const char *rt) {
  char *argv[] = {(char *)cc_program(), "-o", (char *)e->cli->out, (char *)obj, (char *)rt,
                  "-fopenmp", "-lm", "-Wl,--as-needed", "-Wl,--strip-debug", NULL};
  return run(argv);
}

/* One relocatable object of the model and the runtime members it needs,
 * every symbol but NAME_* made local: libNAME.a links with -fopenmp -lm. */
static int link_archive(Export *e, const char *obj, const char *rt) {
  char all[512], keep[192];
  snprintf(all, sizeof all, "%s/%s.o", e->tmp, e->name);
  snprintf(keep, sizeof keep, "--keep-global-symbol=%s_*", e->name);
  char *ld[] = {(char *)cc_program(), "-r", "-nostdlib", "-o", all, (char *)obj, (char *)rt, NULL};
  char *oc[] = {"objcopy", "-w", keep, all, NULL};
  char *ar[] = {"ar", "rcs", (char *)e->cli->out, all, NULL};
  unlink(e->cli->out);
  return run(ld) || run(oc) || run(ar);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

static int link_artifact(Export *e, const char *obj, bool program) {
  char buf[4096];
  const char *rt = find_runtime(buf, sizeof buf);
  if (!rt)
    return fail("cannot find libkilnrt.a beside the kiln program (set KILN_RUNTIME to its path)");
  if (e->triple[0] && !host_arch(e->triple))
    return fail("an artifact for %s cannot be linked here: write its object with --emit=obj "
                "and link it with a %s toolchain and its libkilnrt.a", e->triple, e->triple);
  if (program)
    return link_program(e, obj, rt);
  return ends_with(e->cli->out, ".a") ? link_archive(e, obj, rt) : link_shared(e, obj, rt);
}

/* ---- the header ------------------------------------------------------------------ */

static const char *dtype_macro(RtDType dt) {
  static const char *n[] = {"F32", "F64", "I32", "I64", "U8", "BOOL"};
  return dt < RT_NDTYPES ? n[dt] : "?";
}

static const char *region_macro(int r) {
  static const char *n[] = {"WEIGHTS", "IO", "SCRATCH", "STATE", "GRADS"};
  return r >= 0 && r < REGION_COUNT ? n[r] : "?";
}

/* name as an upper-case C identifier part */
static const char *macro(const char *name, char *buf, size_t len) {
  size_t i = 0;
  for (; name[i] && i + 1 < len; i++)
    buf[i] = isalnum((unsigned char)name[i]) ? (char)toupper((unsigned char)name[i]) : '_';
  buf[i] = 0;
  return buf;
}

/* "f32[N, 64]": a dim is a number, N (the batch) or an affine form of it. */
static const char *type_text(const Graph *g, const Value *v, char *buf, size_t len) {
  int at = snprintf(buf, len, "%s[", rt_dtype_name(v->type.dt));
  for (int k = 0; k < v->type.rank; k++) {
    int64_t mul = 0, add = 0;
    affine_dim(g, v, k, &mul, &add);
    const char *sep = k ? ", " : "";
    if (!mul)
      at += snprintf(buf + at, len - at, "%s%lld", sep, (long long)add);
    else if (mul == 1 && !add)
      at += snprintf(buf + at, len - at, "%sN", sep);
    else
      at += snprintf(buf + at, len - at, "%s%lld*N+%lld", sep, (long long)mul, (long long)add);
  }
  snprintf(buf + at, len - at, "]");
  return buf;
}

/* "((int64_t)(n) * 64)": the elements of v at batch n, as a C expression. */
static void elems_expr(const Graph *g, const Value *v, FILE *f) {
  fprintf(f, "(");
  for (int k = 0; k < v->type.rank; k++) {
    int64_t mul = 0, add = 0;
    affine_dim(g, v, k, &mul, &add);
    fprintf(f, "%s", k ? " * " : "");
    if (!mul)
      fprintf(f, "(int64_t)%lld", (long long)add);
    else if (mul == 1 && !add)
      fprintf(f, "(int64_t)(n)");
    else
      fprintf(f, "((int64_t)%lld * (n) + %lld)", (long long)mul, (long long)add);
  }
  fprintf(f, "%s)", v->type.rank ? "" : "(int64_t)1");
}

static void list_io(const Graph *g, FILE *f, const char *indent) {
  char tb[256];
  for (int i = 0; i < g->ninputs; i++)
    fprintf(f, "%sinput  %d  %-14s %s\n", indent, i, g->inputs[i]->name, type_text(g, g->inputs[i], tb, sizeof tb));
  for (int i = 0; i < g->noutputs; i++)
    fprintf(f, "%soutput %d  %-14s %s\n", indent, i, g->outputs[i]->name, type_text(g, g->outputs[i], tb, sizeof tb));
}

static void head_comment(Export *e, FILE *f) {
  const char *n = e->name, *U = e->upper;
  const Graph *g = e->cc[0]->g;
  fprintf(f, "/* %s.h: model '%s' of %s, exported by kiln %s for %s (cpu %s).\n"
             " * Link with lib%s.so (or lib%s.a plus -fopenmp -lm). This header is all a\n"
             " * program needs; it depends on nothing but <stdint.h>.\n *\n"
             " * Inference (N, the batch, is a run-time argument, 1 <= N <= %s_MAX_BATCH):\n",
          n, g->name, strrchr(e->cli->model_path, '/') ? strrchr(e->cli->model_path, '/') + 1
                                                       : e->cli->model_path, KILN_VERSION, e->triple[0] ? e->triple : "the host",
          e->cpu[0] ? e->cpu : "native", n, n, U);
  list_io(g, f, " *   ");
  if (e->ngraphs > 1) {
    fprintf(f, " * Training step (%s_train_step: forward, loss, backward and the %s update\n"
               " * in place; the inputs are the model's, then the labels, then lr):\n",
            n, e->cc[1]->g->opt ? "optimizer's" : "");
    list_io(e->cc[1]->g, f, " *   ");
  }
  fprintf(f, " *\n * Tensors are dense, C order (row-major). Usage:\n *\n"
             " *   %s *m;\n"
             " *   if (%s_create(&m, NULL) != %s_OK) {      // NULL: the built-in weights\n"
             " *     fprintf(stderr, \"%%s\\n\", %s_error(m));\n"
             " *     %s_destroy(m);\n *     return 1;\n *   }\n"
             " *   %s_infer(m, batch, (const void *[]){inputs...}, (void *[]){outputs...});\n"
             " *   %s_destroy(m);\n *\n",
          n, n, U, n, n, n, n);
  fprintf(f, " * Every function returns %s_OK (0) or an error status, never exits or\n"
             " * aborts; %s_error(m) says what went wrong (a wrong batch, a wrong shape, a\n"
             " * weights file that is corrupt or lacks a tensor). An instance is not safe\n"
             " * to use from two threads at once; separate instances are independent.\n"
             " * Results are bit-identical at any thread count.\n *\n", U, n);
  fprintf(f, " * Memory: an instance owns its regions (%s_create allocates them, 64-byte\n"
             " * aligned; %s_destroy frees them). Callers who own their memory instead pass\n"
             " * %s_NUM_REGIONS pointers to separate buffers (no two may overlap), each\n"
             " * %s_ALIGN-byte aligned, of the %s_INFER_*_BYTES sizes below to %s_infer_init (which zeroes them and copies the weights in)\n"
             " * and %s_infer_run; inputs and outputs then live in the IO region at the\n"
             " * %s_INFER_<TENSOR>_OFFSET offsets, and no allocation happens at all.\n */\n",
          n, n, U, U, U, n, n, U);
}

static void region_macros(Export *e, FILE *f, int gi, const char *tag) {
  const Graph *g = e->cc[gi]->g;
  char mb[128];
  for (int r = 0; r < REGION_COUNT; r++)
    fprintf(f, "#define %s_%s_%s_BYTES %lld\n", e->upper, tag, region_macro(r),
            (long long)g->region_bytes[r]);
  const Value *const *io[2] = {(const Value *const *)g->inputs, (const Value *const *)g->outputs};
  int nio[2] = {g->ninputs, g->noutputs};
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < nio[s]; i++) {
      const Value *v = io[s][i];
      macro(v->name, mb, sizeof mb);
      fprintf(f, "#define %s_%s_%s_OFFSET %lld   /* in region %s */\n", e->upper, tag, mb,
              (long long)v->offset, region_macro(v->region));
      fprintf(f, "#define %s_%s_%s_DTYPE %s_%s\n", e->upper, tag, mb, e->upper, dtype_macro(v->type.dt));
      fprintf(f, "#define %s_%s_%s_ELEMS(n) ", e->upper, tag, mb);
      elems_expr(g, v, f);
      fprintf(f, "   /* at batch n */\n");
    }
}

static void symbol_table(Export *e, FILE *f, int gi, const char *tag) {
  const Graph *g = e->cc[gi]->g;
  static const char *roles[] = {"INPUT", "OUTPUT", "PARAM", "STATE"};
  fprintf(f, "\n/* The %s graph's tensors: role, region, byte offset, dtype and shape at\n"
             " * %s_MAX_BATCH (a state value is a running statistic or optimizer state). */\n"
             "static const %s_symbol %s_%s_symbols[] = {\n",
          gi ? "training step" : "inference", e->upper, e->name, e->name, gi ? "train" : "infer");
  const int64_t *w = words_at(&e->words, KILN_AOT_HEAD_WORDS);
  for (int k = 0; k < gi; k++) {
    int nt = (int)(w[5] + w[6] + w[7]);
    w += KILN_AOT_GRAPH_WORDS + nt * KILN_AOT_TENSOR_WORDS + w[8] * KILN_AOT_INIT_WORDS;
  }
  int nt = (int)(w[5] + w[6] + w[7]);
  for (int i = 0; i < nt; i++) {
    const int64_t *t = w + KILN_AOT_GRAPH_WORDS + i * KILN_AOT_TENSOR_WORDS;
    fprintf(f, "  {\"%s\", %s_%s, %s_REGION_%s, %lld, %s_%s, %lld, {", e->strings.p + t[KILN_AOT_T_NAME],
            e->upper, roles[t[KILN_AOT_T_ROLE]], e->upper, region_macro((int)t[KILN_AOT_T_REGION]),
            (long long)t[KILN_AOT_T_OFFSET], e->upper, dtype_macro((RtDType)t[KILN_AOT_T_DTYPE]),
            (long long)t[KILN_AOT_T_RANK]);
    for (int k = 0; k < t[KILN_AOT_T_RANK]; k++)
      fprintf(f, "%s%lld", k ? ", " : "",
              (long long)(t[KILN_AOT_T_MUL + k] * g->max_batch + t[KILN_AOT_T_ADD + k]));
    fprintf(f, "}},\n");
  }
  fprintf(f, "};\n#define %s_%s_NUM_SYMBOLS %d\n", e->upper, tag, nt);
}

static void constants(Export *e, FILE *f) {
  const char *U = e->upper;
  fprintf(f, "\n#define %s_MAX_BATCH %lld\n#define %s_ALIGN 64\n#define %s_NUM_INPUTS %d\n"
             "#define %s_NUM_OUTPUTS %d\n#define %s_HAS_TRAIN_STEP %d\n",
          U, (long long)e->cc[0]->max_batch, U, U, e->cc[0]->g->ninputs, U, e->cc[0]->g->noutputs, U,
          e->ngraphs > 1);
  fprintf(f, "\n/* status codes (those of kiln.h) */\n#define %s_OK 0\n#define %s_ERR_IO 1\n"
             "#define %s_ERR_INPUT 3      /* an input of the wrong dtype or shape */\n"
             "#define %s_ERR_WEIGHTS 4    /* a weights file is corrupt or lacks a tensor */\n"
             "#define %s_ERR_ARG 5        /* a bad argument: NULL, a batch out of range */\n"
             "#define %s_ERR_NOMEM 6\n", U, U, U, U, U, U);
  fprintf(f, "\n/* dtypes */\n");
  for (int d = 0; d < RT_NDTYPES; d++)
    fprintf(f, "#define %s_%s %d   /* %s */\n", U, dtype_macro((RtDType)d), d, rt_dtype_name((RtDType)d));
  fprintf(f, "\n/* memory regions of the calling convention, and tensor roles */\n");
  for (int r = 0; r < REGION_COUNT; r++)
    fprintf(f, "#define %s_REGION_%s %d\n", U, region_macro(r), r);
  fprintf(f, "#define %s_NUM_REGIONS %d\n#define %s_INPUT 0\n#define %s_OUTPUT 1\n"
             "#define %s_PARAM 2\n#define %s_STATE 3\n\n/* inference: region sizes in bytes; each input "
             "and output's place, dtype and element count */\n", U, REGION_COUNT, U, U, U, U);
  region_macros(e, f, 0, "INFER");
  if (e->ngraphs > 1) {
    fprintf(f, "\n/* the training step: the same */\n");
    region_macros(e, f, 1, "TRAIN");
  }
}

static void types(Export *e, FILE *f) {
  const char *n = e->name;
  fprintf(f, "\ntypedef struct %s %s;   /* an instance: its memory, threads, last error */\n\n"
             "typedef struct %s_tensor {   /* a dense C-order tensor */\n"
             "  int32_t dtype;\n  int32_t rank;\n  int64_t shape[8];\n  void *data;\n} %s_tensor;\n\n"
             "typedef struct %s_symbol {\n  const char *name;\n  int role;\n  int region;\n"
             "  int64_t offset;     /* bytes from the region's base */\n  int dtype;\n  int rank;\n"
             "  int64_t shape[8];\n} %s_symbol;\n", n, n, n, n, n, n);
  symbol_table(e, f, 0, "INFER");
  if (e->ngraphs > 1)
    symbol_table(e, f, 1, "TRAIN");
}

static void prototypes(Export *e, FILE *f) {
  const char *n = e->name, *U = e->upper;
  fprintf(f, "\n/* Allocates an instance and loads weights: NULL for the built-in ones%s, or a\n"
             " * .safetensors path (tensor names as in the symbol tables; kiln train writes\n"
             " * them). *out is set even on failure (unless out of memory) for %s_error. */\n"
             "int %s_create(%s **out, const char *weights);\nvoid %s_destroy(%s *m);\n"
             "const char *%s_error(const %s *m);   /* the last failure's message */\n"
             "int %s_set_threads(%s *m, int nthreads);   /* 0 (default): OMP_NUM_THREADS or the cores */\n\n",
          e->cli->weights_file ? " (the .safetensors written beside the library at export)" : "", n,
          n, n, n, n, n, n, n, n);
  fprintf(f, "/* Inference on `batch` samples: inputs[i] and outputs[i] point to dense\n"
             " * tensors of the shapes listed above at N = batch (%s_INFER_<NAME>_ELEMS). */\n"
             "int %s_infer(%s *m, int64_t batch, const void *const inputs[], void *const outputs[]);\n"
             "/* The same with shapes, checked against the model (the batch follows from\n"
             " * them). outputs[i] gets dtype, rank and shape; its data is copied to\n"
             " * outputs[i].data if set, else points into m (valid until the next call). */\n"
             "int %s_infer_tensors(%s *m, const %s_tensor inputs[], int ninputs, %s_tensor outputs[],\n"
             "                     int noutputs);\n", U, n, n, n, n, n, n);
  if (e->ngraphs > 1)
    fprintf(f, "/* One training step on `batch` samples: inputs are the step's inputs but lr\n"
               " * (the model's inputs, then the labels); *loss (if not NULL) gets the batch's\n"
               " * loss before the update. The next inference sees the new weights. */\n"
               "int %s_train_step(%s *m, int64_t batch, const void *const inputs[], float lr, float *loss);\n",
            n, n);
  fprintf(f, "/* A parameter's or state value's current data (symbol names), or NULL. */\n"
             "void *%s_find(%s *m, const char *name);\n"
             "/* Writes every parameter and state value (the optimizer's apart) to a .safetensors. */\n"
             "int %s_save_weights(%s *m, const char *path);\n\n"
             "/* Caller-owned memory: regions[%s_NUM_REGIONS], separate buffers that do not\n"
             " * overlap, each %s_ALIGN-aligned, of %s_INFER_<REGION>_BYTES bytes (at least\n"
             " * 1). init zeroes them and copies the weights in (NULL: built-in); run\n"
             " * computes on what the IO region holds. */\n"
             "int %s_infer_init(void *const regions[], const char *weights);\n"
             "int %s_infer_run(void *const regions[], int64_t batch, int nthreads);\n",
          n, n, n, n, U, U, U, n, n);
  if (e->ngraphs > 1)
    fprintf(f, "/* The same for the training step (%s_TRAIN_* sizes); write lr into its input. */\n"
               "int %s_train_init(void *const regions[], const char *weights);\n"
               "int %s_train_run(void *const regions[], int64_t batch, int nthreads);\n", U, n, n);
}

static int write_header(Export *e) {
  char path[4096];
  const char *out = e->cli->out, *slash = strrchr(out, '/');
  snprintf(path, sizeof path, "%.*s%s.h", slash ? (int)(slash - out + 1) : 0, out, e->name);
  FILE *f = fopen(path, "w");
  if (!f)
    return fail("cannot write %s: %s", path, strerror(errno));
  head_comment(e, f);
  fprintf(f, "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\n"
             "extern \"C\" {\n#endif\n", e->upper, e->upper);
  constants(e, f);
  types(e, f);
  prototypes(e, f);
  fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n#endif\n");
  return fclose(f) ? fail("cannot write %s", path) : 0;
}

/* ---- --weights-file ----------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(((const RtNamedTensor *)a)->name, ((const RtNamedTensor *)b)->name);
}

static bool listed(const RtNamedTensor *ts, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(ts[i].name, name))
      return true;
  return false;
}

/* Every parameter and state value of the graphs, by name, as they start. */
static int write_weights_file(Export *e) {
  int cap = 0, n = 0;
  for (int gi = 0; gi < e->ngraphs; gi++)
    cap += e->cc[gi]->g->nparams;
  RtNamedTensor *ts = calloc(cap + 1, sizeof *ts);
  if (!ts)
    return fail("out of memory");
  for (int gi = 0; gi < e->ngraphs; gi++) {
    const Compiled *cc = e->cc[gi];
    for (int i = 0; i < cc->g->nparams; i++) {
      const Value *v = cc->g->params[i];
      if (v->region < 0 || listed(ts, n, v->name))
        continue;
      RtTensor t = {v->type.dt, v->type.rank, {0}, kiln__at(cc, v)};
      for (int k = 0; k < t.rank; k++)
        sz_eval(v->type.dim[k], cc->g->svals, &t.shape[k]);
      ts[n++] = (RtNamedTensor){(char *)v->name, t};
    }
  }
  qsort(ts, n, sizeof *ts, by_name);
  RtError err;
  RtStatus rs = rt_st_write(e->cli->weights_file, ts, n, NULL, 0, &err);
  free(ts);
  return rs == RT_OK ? 0 : fail("%s", err.msg);
}

/* ---- the commands ---------------------------------------------------------------------- */

/* NAME from -o: dir/libNAME.so, libNAME.a, NAME.o, NAME (a program). */
static void artifact_name(Export *e) {
  const char *out = e->cli->out, *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
  if (!strncmp(base, "lib", 3) && base[3] && strcmp(e->cli->cmd, "build"))
    base += 3;
  size_t n = strcspn(base, ".");
  if (n >= sizeof e->name)
    n = sizeof e->name - 1;
  for (size_t i = 0; i < n; i++)
    e->name[i] = isalnum((unsigned char)base[i]) ? base[i] : '_';
  e->name[n] = 0;
  if (!n || isdigit((unsigned char)e->name[0])) {
    char was[sizeof e->name];
    memcpy(was, e->name, sizeof was);
    snprintf(e->name, sizeof e->name, "model%.100s", was);
  }
  macro(e->name, e->upper, sizeof e->upper);
}

static int write_artifact(Export *e, CgCtx *c) {
  bool program = !strcmp(e->cli->cmd, "build");
  const char *emit = e->cli->emit;
  char err[512], obj[512];
  if (build_module(e, c, program, err, sizeof err))
    return fail("code generation: %s", err);
  if (emit) {
    CgEmitKind k = !strcmp(emit, "asm") ? CG_EMIT_ASM : !strcmp(emit, "llvm") ? CG_EMIT_LLVM : CG_EMIT_OBJ;
    if (cg_emit_file(c, k, e->cli->out, err, sizeof err))
      return fail("%s", err);
    return program ? 0 : write_header(e);
  }
  snprintf(e->tmp, sizeof e->tmp, "%s/kiln-export-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(e->tmp))
    return fail("cannot make a temporary folder: %s", strerror(errno));
  snprintf(obj, sizeof obj, "%s/%s.model.o", e->tmp, e->name);
  int rc = cg_emit_file(c, CG_EMIT_OBJ, obj, err, sizeof err) ? fail("%s", err)
                                                              : link_artifact(e, obj, program);
  char *rm[] = {"rm", "-rf", e->tmp, NULL};
  run(rm);
  return rc || program ? rc : write_header(e);
}

static void free_export(Export *e) {
  for (int i = 0; i < 2; i++)
    kiln__free_compiled(e->cc[i]);
  kiln_free(e->m);
  free(e->words.p);
  free(e->strings.p);
  free(e->blob.p);
  free(e->inits.p);
}

int kiln__export_main(int argc, char **argv) {
  ExportCli cli = {0};
  Export e = {.cli = &cli};
  int rc = parse_cli(&cli, argc, argv);
  if (rc)
    return rc;
  artifact_name(&e);
  resolve_target(&e);
  CgCtx c = {0};
  if (!(rc = load(&e)) && !(rc = compile_graphs(&e)) && !(rc = describe(&e)) &&
      !(rc = cli.weights_file ? write_weights_file(&e) : 0))
    rc = write_artifact(&e, &c);
  if (c.mod)
    cg_ctx_dispose(&c);
  free_export(&e);
  return rc;
}

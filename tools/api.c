/* The C API (include/kiln.h): the driver of the whole flow.
 *
 *   load:  file ─► frontend (parse, lower unbound) ─► the signature graph
 *   run:   inputs bind the sizes ─► lower bound ─► passes ─► codegen ─► JIT
 *          (cached while the sizes stay and the batch fits) ─► call
 *
 * Every user mistake becomes a status and a message in kiln_errors(). */
#include "tools/api.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *kiln_version(void) { return KILN_VERSION; }

const char *kiln_status_name(KilnStatus st) {
  static const char *names[] = {"ok", "io error", "model error", "input error",
                                "weights error", "invalid argument", "out of memory",
                                "compile error", "training diverged"};
  return st <= KILN_ERR_TRAIN ? names[st] : "unknown status";
}

void kiln_options_default(KilnOptions *o) {
  memset(o, 0, sizeof *o);
  o->opt_level = 2;
}

/* ---- errors ------------------------------------------------------------- */

void kiln__reset_errors(KilnModel *m) {
  rt_arena_free(m->diag_arena);
  m->diag_arena = rt_arena_new();
  diag_init(&m->diags, m->diag_arena);
  m->errtext = NULL;
}

const char *kiln_errors(const KilnModel *m) {
  if (!m)
    return "kiln: out of memory\n";
  KilnModel *mm = (KilnModel *)m;
  if (!mm->errtext && mm->diag_arena)
    mm->errtext = diag_to_string(&mm->diags, mm->diag_arena);
  return mm->errtext ? mm->errtext : "";
}

KilnStatus kiln__fail(KilnModel *m, KilnStatus st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vadd(&m->diags, DIAG_ERROR, srcloc_none(), fmt, ap);
  va_end(ap);
  m->errtext = NULL;
  return st;
}

/* ---- loading ---------------------------------------------------------------- */

KilnStatus kiln__parse_sizes(KilnModel *m, const char *spec, FeSize **out, int *n) {
  *out = NULL;
  *n = 0;
  if (!spec || !*spec)
    return KILN_OK;
  int cap = 1;
  for (const char *p = spec; *p; p++)
    cap += *p == ',';
  FeSize *s = rt_arena_alloc(m->arena, cap * sizeof *s);
  char *copy = rt_arena_strdup(m->arena, spec), *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '='), *end;
    if (!eq)
      return kiln__fail(m, KILN_ERR_ARG, "size binding '%s' is not NAME=VALUE", tok);
    *eq = 0;
    long long v = strtoll(eq + 1, &end, 10);
    if (*end || v < 1 || v > RT_MAX_DIM || !*tok)
      return kiln__fail(m, KILN_ERR_ARG, "size %s=%s must be a positive integer below 2^31", tok,
                  eq + 1);
    s[(*n)++] = (FeSize){tok, v};
  }
  *out = s;
  return KILN_OK;
}

/* m->sig: the model lowered with the sizes bound so far. */
static KilnStatus lower_sig(KilnModel *m) {
  FeOptions fo = {.model = m->opt.model, .sizes = m->sizes, .nsizes = m->nsizes};
  Graph *g = fe_lower(m->ast, &fo, &m->diags);
  if (!g || m->diags.nerrors) {
    ir_graph_free(g);
    return KILN_ERR_MODEL;
  }
  ir_graph_free(m->sig);
  m->sig = g;
  return KILN_OK;
}

static KilnStatus load_ast(KilnModel *m, const KilnOptions *opt) {
  if (opt)
    m->opt = *opt;
  else
    kiln_options_default(&m->opt);
  if (m->opt.model)
    m->opt.model = rt_arena_strdup(m->arena, m->opt.model);
  if (m->opt.cache_dir)
    m->opt.cache_dir = rt_arena_strdup(m->arena, m->opt.cache_dir);
  m->threads = m->opt.threads;
  if (kiln__parse_sizes(m, m->opt.sizes, &m->sizes, &m->nsizes) != KILN_OK)
    return KILN_ERR_ARG;
  m->opt.sizes = NULL;
  if (!m->ast || m->diags.nerrors)
    return m->ast ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  return lower_sig(m);
}

static KilnModel *new_model(void) {
  KilnModel *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->arena = rt_arena_new();
  if (!m->arena) {
    free(m);
    return NULL;
  }
  kiln__reset_errors(m);
  return m;
}

KilnStatus kiln_load(const char *path, const KilnOptions *opt, KilnModel **out) {
  KilnModel *m = *out = new_model();
  if (!m)
    return KILN_ERR_NOMEM;
  if (!path)
    return kiln__fail(m, KILN_ERR_ARG, "no model file given");
  m->ast = fe_parse_file(m->arena, path, &m->diags);
  KilnStatus st = load_ast(m, opt);
  if (st == KILN_ERR_MODEL && m->ast && !m->ast->src.text)
    return KILN_ERR_IO;
  return st;
}

KilnStatus kiln_load_string(const char *name, const char *text, size_t len,
                            const KilnOptions *opt, KilnModel **out) {
  KilnModel *m = *out = new_model();
  if (!m)
    return KILN_ERR_NOMEM;
  m->ast = fe_parse(m->arena, name ? name : "<string>", text, len, &m->diags);
  return load_ast(m, opt);
}

void kiln__free_compiled(Compiled *cc) {
  if (!cc)
    return;
  for (int i = 0; i < REGION_COUNT; i++)
    rt_aligned_free(cc->regions[i]);
  if (cc->jit)
    cg_jit_free(cc->jit);
  ir_graph_free(cc->g);
  free(cc->binds);
  free(cc);
}

void kiln_free(KilnModel *m) {
  if (!m)
    return;
  kiln__free_compiled(m->cc);
  kiln__train_free(m);
  ir_graph_free(m->sig);
  kiln__free_weights(m);
  kiln__set_vocab(m, NULL, false, NULL);
  rt_arena_free(m->diag_arena);
  rt_arena_free(m->arena);
  free(m);
}

/* ---- signature ----------------------------------------------------------- */

int kiln_input_count(const KilnModel *m) { return m && m->sig ? m->sig->ninputs : 0; }
int kiln_output_count(const KilnModel *m) { return m && m->sig ? m->sig->noutputs : 0; }

KilnStatus kiln__info(const Value *v, KilnTensor *t) {
  memset(t, 0, sizeof *t);
  t->name = v->name;
  t->dtype = (KilnDType)v->type.dt;
  t->rank = v->type.rank;
  for (int i = 0; i < v->type.rank; i++)
    if (!sz_is_const(v->type.dim[i], &t->shape[i]))
      t->shape[i] = -1;
  return KILN_OK;
}

KilnStatus kiln_input_info(const KilnModel *m, int i, KilnTensor *t) {
  if (!m || !m->sig || i < 0 || i >= m->sig->ninputs || !t)
    return KILN_ERR_ARG;
  return kiln__info(m->sig->inputs[i], t);
}

KilnStatus kiln_output_info(const KilnModel *m, int i, KilnTensor *t) {
  if (!m || !m->sig || i < 0 || i >= m->sig->noutputs || !t)
    return KILN_ERR_ARG;
  return kiln__info(m->sig->outputs[i], t);
}

/* ---- weights ---------------------------------------------------------------- */

KilnStatus kiln_init_weights(KilnModel *m, uint64_t seed) {
  if (!m)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  kiln__free_weights(m);
  kiln__set_vocab(m, NULL, false, NULL);
  m->seeded = true;
  m->seed = seed;
  kiln__forget_compiled(m, false);   /* weights are copied in when compiling */
  return KILN_OK;
}

/* The extent in the weights of a parameter dim that is size variable v
 * alone (pos: f32[T, 64]), or -1 when no loaded weight says. */
static int64_t weight_extent(KilnModel *m, int v) {
  const Graph *s = m->sig;
  for (int i = 0; i < s->nparams; i++) {
    const Value *p = s->params[i];
    KilnWeight *w = kiln__weight(m, p->name);
    for (int d = 0; w && w->t.rank == p->type.rank && d < p->type.rank; d++) {
      Size z = p->type.dim[d];
      if (z.nt == 1 && z.t[0].nv == 1 && z.t[0].coef == 1 && z.t[0].v[0] == v)
        return w->t.shape[d];
    }
  }
  return -1;
}

/* Sizes the weights fix: a size other than the batch that nothing binds
 * but that is a parameter's extent (the positions of a transformer, T)
 * takes its extent in the weights, as if given with --size, so that the
 * model runs, samples and exports without it. A later shape check still
 * names a weight that disagrees with the model. */
static KilnStatus bind_weight_sizes(KilnModel *m) {
  const Graph *s = m->sig;
  int n = 0;
  FeSize *all = rt_arena_alloc(m->arena, (size_t)(m->nsizes + s->nsvars) * sizeof *all);
  if (!all)
    return KILN_ERR_NOMEM;
  for (int v = 0; v < s->nsvars; v++) {
    int64_t e = s->svals[v] < 0 && v != kiln__batch_var(s) ? weight_extent(m, v) : -1;
    if (e > 0)
      all[m->nsizes + n++] = (FeSize){rt_arena_strdup(m->arena, s->svars[v]), e};
  }
  if (!n)
    return KILN_OK;
  if (m->nsizes)   /* m->sizes is NULL without --size */
    memcpy(all, m->sizes, (size_t)m->nsizes * sizeof *all);
  m->sizes = all;
  m->nsizes += n;
  return lower_sig(m);
}

KilnStatus kiln_load_weights(KilnModel *m, const char *path) {
  if (!m || !path)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  RtSafetensors st;
  RtError err;
  RtStatus rs = rt_st_read(path, &st, &err);
  if (rs != RT_OK)
    return kiln__fail(m, rs == RT_ERR_IO ? KILN_ERR_IO : KILN_ERR_WEIGHTS, "%s", err.msg);
  KilnStatus ks = KILN_OK;
  kiln__forget_compiled(m, false);
  for (int i = 0; i < st.n && ks == KILN_OK; i++) {
    RtTensor t;
    const RtTensor *src = &st.tensors[i].t;
    if (rt_tensor_alloc(&t, src->dtype, src->rank, src->shape, &err) != RT_OK) {
      ks = kiln__fail(m, KILN_ERR_NOMEM, "%s", err.msg);
      break;
    }
    memcpy(t.data, src->data, rt_tensor_bytes(src));
    ks = kiln__put_weight(m, st.tensors[i].name, t);
  }
  if (ks == KILN_OK && !kiln__read_vocab(m, &st, path))
    ks = KILN_ERR_NOMEM;
  rt_st_free(&st);
  return ks == KILN_OK ? bind_weight_sizes(m) : ks;
}

/* ---- the vocabulary of a text model ------------------------------------------ */

bool kiln__set_vocab(KilnModel *m, const char *text, bool lines, const char *from) {
  char *t = text ? strdup(text) : NULL, *f = text && from ? strdup(from) : NULL;
  free(m->vocab.text);
  free(m->vocab.from);
  m->vocab = (KilnVocab){t, f, lines};
  return !text || (t && (f || !from));
}

bool kiln__read_vocab(KilnModel *m, const RtSafetensors *s, const char *path) {
  const char *layout = rt_st_meta(s, KILN__META_LAYOUT);
  return kiln__set_vocab(m, rt_st_meta(s, KILN__META_VOCAB), layout && !strcmp(layout, "lines"),
                         path);
}

int kiln__vocab_meta(const KilnModel *m, RtMeta *md) {
  if (!m->vocab.text)
    return 0;
  md[0] = (RtMeta){KILN__META_VOCAB, m->vocab.text};
  md[1] = (RtMeta){KILN__META_LAYOUT, m->vocab.lines ? "lines" : "window"};
  return 2;
}

const char *kiln_vocab(const KilnModel *m, int *lines) {
  if (lines)
    *lines = m && m->vocab.lines;
  return m ? m->vocab.text : NULL;
}

/* ---- the weights table and its compiled copies ---------------------------
 *
 * The table (m->w) is the truth until a training step runs: from then the
 * step's regions are (m->newest), and whoever reads weights next pulls them
 * back. Each compiled instance remembers which version of the table its
 * regions hold, so a copy is made only when something changed. */

void kiln__pull(KilnModel *m) {
  Compiled *cc = m->newest;
  if (!cc)
    return;
  for (int i = 0; i < cc->g->nparams; i++) {
    const Value *p = cc->g->params[i];
    KilnWeight *w = kiln__weight(m, p->name);
    if (w)
      memcpy(w->t.data, kiln__at(cc, p), rt_tensor_bytes(&w->t));
  }
  cc->wver = ++m->wver;
  m->newest = NULL;
}

void kiln__sync(KilnModel *m, Compiled *cc) {
  if (m->newest == cc)
    return;
  kiln__pull(m);
  if (cc->wver == m->wver)
    return;
  for (int i = 0; i < cc->g->nparams; i++) {
    const Value *p = cc->g->params[i];
    KilnWeight *w = kiln__weight(m, p->name);
    if (w)
      memcpy(kiln__at(cc, p), w->t.data, rt_tensor_bytes(&w->t));
  }
  cc->wver = m->wver;
}

void kiln__forget_compiled(KilnModel *m, bool keep_weights) {
  if (keep_weights)
    kiln__pull(m);
  m->newest = NULL;
  m->wver++;
  kiln__free_compiled(m->cc);
  m->cc = NULL;
  kiln__train_forget(m);
}

/* Training's optimizer state ("optim.*") belongs in checkpoints, not in a
 * model's weights. */
KilnStatus kiln_save_weights(KilnModel *m, const char *path) {
  if (!m || !path)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  kiln__pull(m);
  RtNamedTensor *ts = calloc(m->nw ? m->nw : 1, sizeof *ts);
  if (!ts)
    return KILN_ERR_NOMEM;
  int n = 0;
  for (int i = 0; i < m->nw; i++)
    if (strncmp(m->w[i].name, "optim.", 6))
      ts[n++] = (RtNamedTensor){m->w[i].name, m->w[i].t};
  RtError err;
  RtMeta md[2];
  int nmd = kiln__vocab_meta(m, md);
  RtStatus rs = rt_st_write(path, ts, n, md, nmd, &err);
  free(ts);
  return rs == RT_OK ? KILN_OK : kiln__fail(m, KILN_ERR_IO, "%s", err.msg);
}

/* ---- compiling -------------------------------------------------------------- */

static bool same_shape(const RtTensor *t, const Graph *g, const Value *p) {
  if (t->dtype != p->type.dt || t->rank != p->type.rank)
    return false;
  for (int i = 0; i < t->rank; i++) {
    int64_t d;
    if (!sz_eval(p->type.dim[i], g->svals, &d) || d != t->shape[i])
      return false;
  }
  return true;
}

/* Copies every parameter and state value into its region, drawing missing
 * ones from the seed; a weights file that lacks one, or has it in another
 * shape, is an error naming it. */
static KilnStatus place_weights(KilnModel *m, Compiled *cc) {
  const Graph *g = cc->g;
  KilnStatus st = KILN_OK;
  char tb[160], sb[128];
  for (int i = 0; i < g->nparams; i++) {
    const Value *p = g->params[i];
    KilnWeight *w = kiln__weight(m, p->name);
    if (!w && (m->seeded || (cc->init_state && p->role == V_STATE))) {
      RtTensor t;
      RtError err;
      if ((st = kiln__init_param(g, p, m->seed, &t, &err)) != KILN_OK)
        return kiln__fail(m, st, "%s", err.msg);
      if ((st = kiln__put_weight(m, p->name, t)) != KILN_OK)
        return st;
      w = kiln__weight(m, p->name);
    }
    if (!w) {
      st = kiln__fail(m, KILN_ERR_WEIGHTS, "the weights lack parameter '%s' (%s)", p->name,
                ir_type_str(g, &p->type, tb, sizeof tb));
      continue;
    }
    if (!same_shape(&w->t, g, p)) {
      st = kiln__fail(m, KILN_ERR_WEIGHTS, "parameter '%s' is %s %s in the weights, the model needs %s",
                p->name, rt_dtype_name(w->t.dtype), rt_shape_str(w->t.rank, w->t.shape, sb, sizeof sb),
                ir_type_str(g, &p->type, tb, sizeof tb));
      continue;
    }
    memcpy(kiln__at(cc, p), w->t.data, rt_tensor_bytes(&w->t));
  }
  cc->wver = m->wver;
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_CONST && v->region >= 0)
      memcpy((char *)cc->regions[v->region] + v->offset, v->data, ir_bytes_max(g, &v->type));
  }
  return st;
}

static Compiled *new_compiled(void) {
  return calloc(1, sizeof(Compiled));
}

/* Sets the batch size variable and checks that every other size is bound. */
static KilnStatus bind_batch(KilnModel *m, Graph *g, const char *batch, int64_t max_batch) {
  for (int i = 0; i < g->nsvars; i++) {
    if (batch && !strcmp(g->svars[i], batch)) {
      g->batch_var = i;
      g->max_batch = max_batch;
      continue;
    }
    if (g->svals[i] < 0)
      return kiln__fail(m, KILN_ERR_INPUT, "size %s is not bound: give it through the inputs or as "
                  "a size binding (--size %s=...)", g->svars[i], g->svars[i]);
  }
  return KILN_OK;
}

/* PassCtx.param_data: the table's data for p (drawn from the seed first if
 * it is missing, as place_weights would), so passes fold what will run.
 * Graphs compiled for training (the step, the evaluation between epochs)
 * see the weights change under them and only copy them (kiln__sync):
 * nothing may bake them in. An inference graph that did (g->weights_baked)
 * is compiled again when the weights change (kiln_run). */
static const void *param_data(const Graph *g, const Value *p, void *user) {
  KilnModel *m = user;
  KilnWeight *w = kiln__weight(m, p->name);
  RtTensor t;
  RtError err;
  if (!w && m->seeded && kiln__init_param(g, p, m->seed, &t, &err) == KILN_OK &&
      kiln__put_weight(m, p->name, t) == KILN_OK)
    w = kiln__weight(m, p->name);
  return w && same_shape(&w->t, g, p) ? w->t.data : NULL;
}

static KilnStatus run_passes(KilnModel *m, Compiled *cc) {
  PassCtx cx = {.opt = m->opt.opt_level, .threads = cc->threads, .verify = true,
                .work_bytes = cg_work_bytes, .gemm_panels = cg_gemm_panels, .print_after = m->print_after,
                .print_out = stdout, .stats_out = m->stats_out, .stats_json = m->stats_json,
                .param_data = cc->live_weights ? NULL : param_data, .param_user = m,
                .lanes = m->lanes ? m->lanes : cg_host_lanes(4), .layout = m->layout,
                .no_winograd = m->no_winograd};
  const Diag *before = m->diags.tail;
  if (pass_run_pipeline(cc->g, &cx) < 0) {
    /* the pass said why, in the model's diagnostics: a mistake in the model
     * (an op with no gradient on the way to a trainable value, ...) or,
     * marked internal, kiln's own */
    const Diag *first = before ? before->next : m->diags.head;
    m->errtext = NULL;
    if (!first)
      return kiln__fail(m, KILN_ERR_COMPILE, "internal: a pass failed without saying why");
    return strncmp(first->msg, "internal:", 9) ? KILN_ERR_MODEL : KILN_ERR_COMPILE;
  }
  return KILN_OK;
}

static void print_module(CgCtx *c, FILE *f) {
  char *s = LLVMPrintModuleToString(c->mod);
  fputs(s, f);
  LLVMDisposeMessage(s);
}

/* --emit=llvm and --emit=asm: the optimised module, before the JIT takes it. */
static void dump_code(KilnModel *m, CgCtx *c) {
  if (m->emit_llvm)
    print_module(c, m->emit_llvm);
  if (m->emit_asm) {
    LLVMMemoryBufferRef buf;
    char *msg = NULL;
    if (!LLVMTargetMachineEmitToMemoryBuffer(c->tm, c->mod, LLVMAssemblyFile, &msg, &buf)) {
      fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), m->emit_asm);
      LLVMDisposeMemoryBuffer(buf);
    }
    LLVMDisposeMessage(msg);
  }
}

/* --stats: where a compile's time went, thread CPU seconds per stage (the
 * frontend's lowering comes before and is left out: it is a few ms). */
typedef struct StageTimes {
  double passes;     /* kiln's graph passes */
  double emit;       /* the graph to LLVM IR: codegen's kernels */
  double opt;        /* LLVM's IR pipeline */
  double codegen;    /* LLVM's backend, to an object */
  double link;       /* the JIT links the object and resolves the entry */
} StageTimes;

static void print_stage_times(const KilnModel *m, const StageTimes *t) {
  const char *fmt = m->stats_json
      ? "{\"stage_ms\": {\"passes\": %.1f, \"llvm-ir\": %.1f, \"llvm-opt\": %.1f, "
        "\"llvm-codegen\": %.1f, \"jit-link\": %.1f}}\n"
      : "compile ms   passes %.1f  llvm-ir %.1f  llvm-opt %.1f  llvm-codegen %.1f  jit-link %.1f "
        "(thread CPU)\n";
  fprintf(m->stats_out, fmt, t->passes * 1e3, t->emit * 1e3, t->opt * 1e3, t->codegen * 1e3,
          t->link * 1e3);
}

/* The module, optimised, compiled (or found in the code cache) and linked
 * into the JIT; 0 or -1 with err set. Code that is to be shown is
 * compiled afresh, so that what is shown is what runs. */
static int build_module(KilnModel *m, Compiled *cc, CgCtx *c, StageTimes *t, char *err, int errlen) {
  int level = m->opt.opt_level >= 1 ? 3 : 0;
  if (cg_ctx_init_jit(c, cc->g->name, err, errlen))
    return -1;
  double t0 = rt_thread_cpu_seconds();
  if (cg_build_graph(c, cc->g, "kiln_entry", err, errlen))
    return -1;
  t->emit = rt_thread_cpu_seconds() - t0;
  if (!cc->jit && cg_jit_new_ex(&cc->jit, m->opt.perf != 0, err, errlen))
    return -1;
  bool show = m->emit_llvm || m->emit_asm || m->emit_llvm_unopt;
  if (m->emit_llvm_unopt)
    print_module(c, m->emit_llvm_unopt);
  if (show && cg_optimize(c, level, err, errlen))
    return -1;
  if (show)
    dump_code(m, c);
  return cg_jit_compile(cc->jit, c, level, show ? NULL : m->opt.cache_dir, err, errlen);
}

static KilnStatus gen_code(KilnModel *m, Compiled *cc, StageTimes *t) {
  char err[512];
  CgCtx c;
  int rc = build_module(m, cc, &c, t, err, sizeof err);
  t->opt = c.opt_seconds;
  t->codegen = c.codegen_seconds;
  cg_ctx_dispose(&c);
  if (rc)
    return kiln__fail(m, KILN_ERR_COMPILE, "code generation: %s", err);
  double t0 = rt_thread_cpu_seconds();
  cc->entry = (void (*)(void **, int64_t, int32_t))cg_jit_lookup(cc->jit, "kiln_entry");
  t->link = rt_thread_cpu_seconds() - t0;
  return cc->entry ? KILN_OK : kiln__fail(m, KILN_ERR_COMPILE, "code generation: no entry point");
}

static KilnStatus alloc_regions(KilnModel *m, Compiled *cc) {
  for (int r = 0; r < REGION_COUNT; r++) {
    cc->regions[r] = rt_aligned_alloc(cc->g->region_bytes[r] ? cc->g->region_bytes[r] : 64);
    if (!cc->regions[r])
      return kiln__fail(m, KILN_ERR_NOMEM, "cannot allocate %lld bytes for the model's memory",
                  (long long)cc->g->region_bytes[r]);
  }
  return KILN_OK;
}

KilnStatus kiln__compile_graph(KilnModel *m, Graph *g, const char *batch, int64_t max_batch,
                               unsigned flags, Compiled **out) {
  *out = NULL;
  Compiled *cc = new_compiled();
  if (!cc) {
    ir_graph_free(g);
    return KILN_ERR_NOMEM;
  }
  cc->g = g;
  cc->max_batch = max_batch;
  cc->init_state = flags & KILN__INIT_STATE;
  cc->live_weights = flags & KILN__LIVE_WEIGHTS;
  cc->threads = m->threads > 0 ? m->threads : rt_default_threads();
  kiln__pull(m);                       /* place_weights reads the table */
  KilnStatus st;
  StageTimes times = {0};
  double t0 = rt_thread_cpu_seconds();
  if ((st = bind_batch(m, g, batch, max_batch)) || (st = run_passes(m, cc))) {
    kiln__free_compiled(cc);
    return st;
  }
  times.passes = rt_thread_cpu_seconds() - t0;
  bool code = !m->plan_only && !(flags & KILN__NO_CODE);
  if ((code && (st = gen_code(m, cc, &times))) ||
      (!m->plan_only && ((st = alloc_regions(m, cc)) || (st = place_weights(m, cc))))) {
    kiln__free_compiled(cc);
    return st;
  }
  if (code && m->stats_out)
    print_stage_times(m, &times);
  *out = cc;
  return KILN_OK;
}

KilnStatus kiln__compile(KilnModel *m, const FeSize *binds, int nbinds, const char *batch,
                         int64_t max_batch) {
  FeOptions fo = {.model = m->opt.model, .sizes = binds, .nsizes = nbinds};
  Graph *g = fe_lower(m->ast, &fo, &m->diags);
  if (!g || m->diags.nerrors) {
    ir_graph_free(g);
    return KILN_ERR_MODEL;
  }
  Compiled *cc;
  KilnStatus st = kiln__compile_graph(m, g, batch, max_batch, 0, &cc);
  if (st != KILN_OK)
    return st;
  cc->binds = calloc(nbinds ? nbinds : 1, sizeof *cc->binds);   /* the cache's key */
  if (!cc->binds) {
    kiln__free_compiled(cc);
    return KILN_ERR_NOMEM;
  }
  if (nbinds)
    memcpy(cc->binds, binds, nbinds * sizeof *binds);
  cc->nbinds = nbinds;
  kiln__free_compiled(m->cc);
  m->cc = cc;
  return KILN_OK;
}

void kiln__call(KilnModel *m, Compiled *cc, int64_t batch) {
  kiln__sync(m, cc);
  int threads = m->threads > 0 ? m->threads : rt_default_threads();
  cc->entry(cc->regions, batch, threads < cc->threads ? threads : cc->threads);
}

/* ---- running ---------------------------------------------------------------- */

/* Binds the signature's sizes from the inputs' shapes: a dim that is a size
 * name takes the input's extent (the same name must agree everywhere);
 * other dims must match. */
static KilnStatus bind_inputs(KilnModel *m, const KilnTensor **in, FeSize *binds, int *nb,
                              int64_t *vals) {
  const Graph *s = m->sig;
  char tb[160], sb[128];
  for (int i = 0; i < s->nsvars; i++)
    vals[i] = s->svals[i];
  for (int pass = 0; pass < 2; pass++)      /* plain names first, then expressions */
    for (int i = 0; i < s->ninputs; i++) {
      const Value *v = s->inputs[i];
      const KilnTensor *t = in[i];
      bool ok = (int)t->dtype == (int)v->type.dt && t->rank == v->type.rank;
      for (int d = 0; ok && d < t->rank; d++) {
        Size z = v->type.dim[d];
        int64_t e;
        bool plain = z.nt == 1 && z.t[0].nv == 1 && z.t[0].coef == 1;
        if (pass == 0 && plain && vals[z.t[0].v[0]] < 0)
          vals[z.t[0].v[0]] = t->shape[d];
        else if (pass == 1 && (!sz_eval(z, vals, &e) || e != t->shape[d]))
          ok = false;
      }
      if (pass == 1 && !ok)
        return kiln__fail(m, KILN_ERR_INPUT, "input '%s' is %s %s, the model expects %s", v->name,
                    rt_dtype_name((RtDType)t->dtype), rt_shape_str(t->rank, t->shape, sb, sizeof sb),
                    ir_type_str(s, &v->type, tb, sizeof tb));
    }
  *nb = 0;
  for (int i = 0; i < s->nsvars; i++)
    if (vals[i] >= 0 && s->svals[i] < 0)
      binds[(*nb)++] = (FeSize){s->svars[i], vals[i]};
  for (int j = 0; j < m->nsizes; j++)   /* and those the model was loaded with (--size) */
    binds[(*nb)++] = m->sizes[j];
  return KILN_OK;
}

int kiln__batch_var(const Graph *s) {
  if (!s->ninputs || s->inputs[0]->type.rank < 1)
    return -1;
  Size z = s->inputs[0]->type.dim[0];
  return z.nt == 1 && z.t[0].nv == 1 && z.t[0].coef == 1 ? z.t[0].v[0] : -1;
}

KilnStatus kiln__bind(KilnModel *m, const KilnTensor **in, FeSize *binds, int *nb,
                      int64_t *batch) {
  const Graph *s = m->sig;
  int64_t vals[256];
  if (s->nsvars + m->nsizes > 64)     /* the callers' arrays of bindings hold 64 */
    return kiln__fail(m, KILN_ERR_ARG, "too many sizes");
  KilnStatus st = bind_inputs(m, in, binds, nb, vals);
  if (st != KILN_OK)
    return st;
  int bv = kiln__batch_var(s);
  *batch = bv >= 0 ? vals[bv] : 1;
  int k = 0;                   /* the batch is not compiled in: drop its binding */
  for (int i = 0; i < *nb; i++)
    if (bv < 0 || strcmp(binds[i].name, s->svars[bv]))
      binds[k++] = binds[i];
  *nb = k;
  return KILN_OK;
}

const char *kiln__batch_name(const KilnModel *m) {
  int bv = m->sig ? kiln__batch_var(m->sig) : -1;
  return bv >= 0 ? m->sig->svars[bv] : NULL;
}

static bool cache_fits(const Compiled *cc, const FeSize *b, int nb, int64_t batch) {
  if (!cc || !cc->entry || cc->nbinds != nb || batch > cc->max_batch)
    return false;
  for (int i = 0; i < nb; i++)
    if (strcmp(cc->binds[i].name, b[i].name) || cc->binds[i].value != b[i].value)
      return false;
  return true;
}

static KilnStatus order_inputs(KilnModel *m, const KilnTensor *inputs, int n,
                               const KilnTensor **in) {
  const Graph *s = m->sig;
  if (n != s->ninputs)
    return kiln__fail(m, KILN_ERR_INPUT, "the model takes %d input(s), got %d", s->ninputs, n);
  for (int i = 0; i < n; i++) {
    in[i] = NULL;
    for (int j = 0; j < n && !in[i]; j++)
      if (inputs[j].name && !strcmp(inputs[j].name, s->inputs[i]->name))
        in[i] = &inputs[j];
    if (!in[i] && !inputs[i].name)
      in[i] = &inputs[i];
    if (!in[i])
      return kiln__fail(m, KILN_ERR_INPUT, "no input named '%s' was given", s->inputs[i]->name);
    if (!in[i]->data)
      return kiln__fail(m, KILN_ERR_INPUT, "input '%s' has no data", s->inputs[i]->name);
  }
  return KILN_OK;
}

int64_t kiln__bytes_at(const Graph *g, const Value *v, const int64_t *vals, int64_t *shape) {
  int64_t n = rt_dtype_size(v->type.dt);
  for (int i = 0; i < v->type.rank; i++) {
    if (!sz_eval(v->type.dim[i], vals, &shape[i]))
      return -1;
    n *= shape[i];
  }
  return n;
}

void kiln__size_values(const Graph *g, int64_t batch, int64_t *vals) {
  for (int i = 0; i < g->nsvars; i++)
    vals[i] = i == g->batch_var ? batch : g->svals[i];
}

int64_t kiln__tensor_at(const Compiled *cc, const Value *v, int64_t batch, KilnTensor *t) {
  int64_t vals[256];
  kiln__size_values(cc->g, batch, vals);
  *t = (KilnTensor){.name = v->name, .dtype = (KilnDType)v->type.dt, .rank = v->type.rank,
                    .data = kiln__at(cc, v)};
  return kiln__bytes_at(cc->g, v, vals, t->shape);
}

/* Before a compile frees m->cc: no input may be its input buffer. */
static KilnStatus check_not_in_io(KilnModel *m, const KilnTensor **in) {
  const Compiled *cc = m->cc;
  if (!cc || !cc->last_batch)
    return KILN_OK;
  const char *lo = cc->regions[REGION_IO], *hi = lo + cc->g->region_bytes[REGION_IO];
  for (int i = 0; i < m->sig->ninputs; i++) {
    const char *p = in[i]->data;
    if (p >= lo && p < hi)
      return kiln__fail(m, KILN_ERR_INPUT,
                        "input '%s' is the model's buffer (kiln_input_buffer), which this run frees "
                        "to compile anew: copy the input elsewhere, or run, then ask for the buffer again",
                        m->sig->inputs[i]->name);
  }
  return KILN_OK;
}

KilnStatus kiln_input_buffer(KilnModel *m, int i, KilnTensor *t) {
  if (!m || !t || !m->sig || i < 0 || i >= m->sig->ninputs)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  const Compiled *cc = m->cc;
  if (!cc || !cc->last_batch)
    return kiln__fail(m, KILN_ERR_ARG, "input '%s' has no buffer before the model's first run",
                      m->sig->inputs[i]->name);
  kiln__tensor_at(cc, cc->g->inputs[i], cc->last_batch, t);
  t->name = m->sig->inputs[i]->name;
  return KILN_OK;
}

KilnStatus kiln_run(KilnModel *m, const KilnTensor *inputs, int ninputs, KilnTensor *outputs,
                    int noutputs) {
  if (!m || (ninputs && !inputs) || (noutputs && !outputs))
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  if (!m->sig)
    return kiln__fail(m, KILN_ERR_MODEL, "the model did not load");
  const Graph *s = m->sig;
  const KilnTensor *in[64];
  FeSize binds[256];
  int nb;
  int64_t batch;
  KilnStatus st;
  if (s->ninputs > 64)
    return kiln__fail(m, KILN_ERR_ARG, "too many inputs");
  if ((st = order_inputs(m, inputs, ninputs, in)) || (st = kiln__bind(m, in, binds, &nb, &batch)))
    return st;
  if (noutputs > s->noutputs)
    return kiln__fail(m, KILN_ERR_ARG, "the model has %d output(s), %d asked", s->noutputs, noutputs);
  bool stale = m->cc && m->cc->g->weights_baked && (m->newest || m->cc->wver != m->wver);
  if ((stale || !cache_fits(m->cc, binds, nb, batch)) && (st = check_not_in_io(m, in)))
    return st;
  if (stale) {
    kiln__free_compiled(m->cc);        /* its code holds weights that have changed since */
    m->cc = NULL;
  }
  if (!cache_fits(m->cc, binds, nb, batch)) {
    int64_t maxb = batch > m->opt.max_batch ? batch : m->opt.max_batch;
    if ((st = kiln__compile(m, binds, nb, kiln__batch_name(m), maxb)))
      return st;
  }
  Compiled *cc = m->cc;
  const Graph *g = cc->g;
  int64_t gv[256], shape[RT_MAX_RANK];
  kiln__size_values(g, batch, gv);
  for (int i = 0; i < g->ninputs; i++) {
    const Value *v = g->inputs[i];
    int64_t b = kiln__bytes_at(g, v, gv, shape);
    if (in[i]->data != kiln__at(cc, v))   /* else written in place (kiln_input_buffer) */
      memcpy(kiln__at(cc, v), in[i]->data, b);
  }
  cc->last_batch = batch;
  kiln__call(m, cc, batch);
  for (int i = 0; i < noutputs; i++) {
    kiln__tensor_at(cc, g->outputs[i], batch, &outputs[i]);
    outputs[i].name = s->outputs[i]->name;
  }
  return KILN_OK;
}

void kiln_prefer_passive_wait(char **argv) { rt_prefer_passive_wait(argv); }

KilnStatus kiln_set_threads(KilnModel *m, int threads) {
  if (!m || threads < 0)
    return KILN_ERR_ARG;
  int before = m->threads > 0 ? m->threads : rt_default_threads();
  m->threads = threads;
  if ((threads > 0 ? threads : rt_default_threads()) > before)
    kiln__forget_compiled(m, true);   /* workspaces were planned for fewer */
  return KILN_OK;
}

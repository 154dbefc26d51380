/* Training: the host's loop around one compiled step.
 *
 *   train block + overrides ─► FeTrain ─► fe_lower_train ─► step (forward,
 *   loss, backward, update: one compiled function) and evaluation graphs
 *
 *   data files ─► dataset (checked: widths, NaN, labels) ─► split
 *   per epoch:  seeded order ─► batches gathered straight into the step's
 *               input region ─► step ─► running loss and accuracy
 *               ─► validation and test ─► curves, progress, JSON, checkpoint
 *
 * Everything random is a pure function of the seed and a counter: the
 * split of (seed), each epoch's order of (seed, epoch), dropout masks of
 * (seed, the step counter, a state value of the step). The learning rate
 * is a function of the epoch. So a checkpoint (weights, every state value:
 * optimizer moments, counters, running statistics; the epoch, step and
 * curves as metadata) is all a run needs to carry on exactly where it
 * stopped, and sums over batches run in a fixed order, so results do not
 * depend on the thread count. */
#include "tools/api.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_FORMAT "kiln-checkpoint-1"

typedef struct KilnTrainer {
  RtArena *arena;         /* cfg and what it points to */
  FeTrain *cfg;           /* the train block with the overrides of the last kiln_train */
  Graph *sig;             /* the evaluation graph, unbound: inputs and outputs by name */
  Compiled *step, *eval;
  FeSize binds[64];       /* the sizes step and eval were compiled for */
  int nbinds;
  RtCurves curves;        /* the epochs of the last run, a resumed checkpoint's included */
  int64_t steps;          /* steps taken, a resumed checkpoint's included */
  bool resuming;          /* compile strictly: every state value comes from the checkpoint */
  KilnVocab vocab;        /* text() data: the vocabulary of its file (text NULL: not text) */
  int nvocab;             /* its symbols, the end symbol included */
} KilnTrainer;

/* A dataset and what its tensors feed: the model's input, then the labels. */
typedef struct Data {
  RtDataset ds;
  const char *file;       /* for messages */
} Data;

/* Loss and correct predictions summed over the batches of a pass. */
typedef struct Tally {
  double loss;            /* sum of batch mean loss * batch size */
  int64_t correct, seen;
  bool classify;          /* accuracy is measured */
  RtErrs errs;            /* a regression's errors (float labels), in the labels' units */
} Tally;

static double tally_loss(const Tally *t) { return t->seen ? t->loss / t->seen : NAN; }
static double tally_acc(const Tally *t) {
  return t->classify && t->seen ? (double)t->correct / t->seen : NAN;
}

/* ---- the trainer's lifetime ---------------------------------------------- */

static KilnTrainer *trainer(KilnModel *m) {
  if (!m->tr)
    m->tr = calloc(1, sizeof *m->tr);
  return m->tr;
}

void kiln__train_forget(KilnModel *m) {
  KilnTrainer *tr = m->tr;
  if (!tr)
    return;
  if (m->newest == tr->step || m->newest == tr->eval)
    m->newest = NULL;
  kiln__free_compiled(tr->step);
  kiln__free_compiled(tr->eval);
  tr->step = tr->eval = NULL;
}

static void drop_config(KilnModel *m) {
  KilnTrainer *tr = m->tr;
  kiln__pull(m);
  kiln__train_forget(m);
  ir_graph_free(tr->sig);
  rt_arena_free(tr->arena);
  tr->sig = NULL;
  tr->arena = NULL;
  tr->cfg = NULL;
  free(tr->vocab.text);        /* the next run reads its own data */
  free(tr->vocab.from);
  tr->vocab = (KilnVocab){0};
  tr->nvocab = 0;
}

void kiln__train_free(KilnModel *m) {
  if (!m->tr)
    return;
  drop_config(m);
  rt_curves_free(&m->tr->curves);
  free(m->tr);
  m->tr = NULL;
}

void kiln_train_options_default(KilnTrainOptions *o) {
  memset(o, 0, sizeof *o);
  o->seed = -1;
  o->split = -1;
}

/* ---- configuration: the train block, then the overrides ------------------- */

/* The file as parsed, but with the train block's `optimizer` setting
 * replaced by an expression from the command line, so that it is read and
 * checked by the same code as one written in the file. */
static const AstFile *with_optimizer(KilnModel *m, RtArena *a, const char *block,
                                     const char *text) {
  const Ast *tb = ast_find_def(m->ast, AST_TRAIN, block);
  Ast *e = fe_parse_expr(a, "--optimizer", text, strlen(text), &m->diags);
  AstFile *f = rt_arena_alloc(a, sizeof *f);
  Ast *t = rt_arena_alloc(a, sizeof *t), *set = e ? ast_new(a, AST_SETTING, e->loc) : NULL;
  if (!tb || !e || !f || !t || !set || m->diags.nerrors)
    return NULL;
  *f = *m->ast;
  *t = *tb;
  set->name = "optimizer";
  set->init = e;
  t->body = rt_arena_alloc(a, (tb->nbody + 1) * sizeof *t->body);
  f->defs = rt_arena_alloc(a, f->ndefs * sizeof *f->defs);
  f->trains = rt_arena_alloc(a, f->ntrains * sizeof *f->trains);
  if (!t->body || !f->defs || !f->trains)
    return NULL;
  t->nbody = 0;
  for (int i = 0; i < tb->nbody; i++)
    if (!(tb->body[i]->kind == AST_SETTING && !strcmp(tb->body[i]->name, "optimizer")))
      t->body[t->nbody++] = tb->body[i];
  t->body[t->nbody++] = set;
  for (int i = 0; i < f->ndefs; i++)
    f->defs[i] = m->ast->defs[i] == tb ? t : m->ast->defs[i];
  for (int i = 0; i < f->ntrains; i++)
    f->trains[i] = m->ast->trains[i] == tb ? t : m->ast->trains[i];
  return f;
}

/* --data FILE: its kind by name (the content tells .npy from IDX). A file
 * of the block's kind keeps its scale (another CSV of the same pixels); a
 * file of another kind starts from 1; --scale says otherwise. */
static void override_data(FeData *d, const KilnTrainOptions *o, RtArena *a) {
  if (o->data) {
    const char *kind = strstr(o->data, ".csv") ? "csv" : strstr(o->data, ".npy") ? "npy" : "idx";
    if (d->kind && (!strcmp(d->kind, "text") || !strcmp(d->kind, "series")))
      kind = d->kind;         /* another file of the block's layout: its column, windows */
    if (!d->kind || strcmp(d->kind, kind))
      d->scale = 1;
    d->path = rt_arena_strdup(a, o->data);
    d->kind = kind;
    d->labels = NULL;
  }
  if (o->labels)
    d->labels = rt_arena_strdup(a, o->labels);
  if (o->scale)
    d->scale = o->scale;
}

static KilnStatus check_overrides(KilnModel *m, const KilnTrainOptions *o) {
  if (o->epochs < 0 || o->batch < 0 || !(o->lr >= 0 && isfinite(o->lr)) ||
      o->checkpoint_every < 0 || !(o->scale >= 0 && isfinite(o->scale)))
    return kiln__fail(m, KILN_ERR_ARG, "epochs, batch, learning rate, scale and checkpoint "
                      "interval must not be negative");
  if (o->split != -1 && !(o->split >= 0 && o->split < 1))
    return kiln__fail(m, KILN_ERR_ARG, "the validation split %g is outside [0, 1)", o->split);
  if (o->seed < -1)
    return kiln__fail(m, KILN_ERR_ARG, "the seed must not be negative");
  return KILN_OK;
}

static void apply_overrides(FeTrain *t, const KilnTrainOptions *o, RtArena *a) {
  if (o->epochs)
    t->epochs = o->epochs;
  if (o->batch)
    t->batch = o->batch;
  if (o->lr)
    t->lr = o->lr;
  if (o->seed >= 0)
    t->seed = (uint64_t)o->seed;
  if (o->split >= 0)
    t->split = o->split;
  if (o->checkpoint || (!t->checkpoint && o->checkpoint_default))
    t->checkpoint = rt_arena_strdup(a, o->checkpoint ? o->checkpoint : o->checkpoint_default);
  if (o->checkpoint_every)
    t->checkpoint_every = o->checkpoint_every;
  if (t->checkpoint_every <= 0)
    t->checkpoint_every = 1;
  override_data(&t->data, o, a);
}

static const char *model_name(const KilnModel *m) {
  return m->opt.model ? m->opt.model : m->sig->name;
}

/* A path written in the model file is relative to the file's folder, as
 * an #include is; the command line's are relative to where it runs. */
static const char *beside_model(const KilnModel *m, RtArena *a, const char *path) {
  const char *file = m->ast->src.name, *slash = file ? strrchr(file, '/') : NULL;
  if (!path || path[0] == '/' || !slash)
    return path;
  return rt_arena_printf(a, "%.*s/%s", (int)(slash - file), file, path);
}

static void resolve_paths(const KilnModel *m, FeTrain *t, RtArena *a) {
  t->data.path = beside_model(m, a, t->data.path);
  t->data.labels = beside_model(m, a, t->data.labels);
  t->test.path = beside_model(m, a, t->test.path);
  t->test.labels = beside_model(m, a, t->test.labels);
  t->init_from = beside_model(m, a, t->init_from);
  t->checkpoint = beside_model(m, a, t->checkpoint);
}

/* Reads the train block into tr->cfg and lowers the evaluation graph once,
 * unbound, for the names and types of its inputs and outputs. */
static KilnStatus configure(KilnModel *m, KilnTrainer *tr, const KilnTrainOptions *o) {
  KilnStatus st = check_overrides(m, o);
  if (st != KILN_OK)
    return st;
  drop_config(m);
  if (!(tr->arena = rt_arena_new()))
    return KILN_ERR_NOMEM;
  const char *block = o->train ? o->train : model_name(m);
  if (!m->ast->ntrains)
    return kiln__fail(m, KILN_ERR_MODEL, "%s has no train block: add one (train %s { data = ..., "
                      "loss = ..., optimizer = ... })", m->ast->src.name, model_name(m));
  tr->cfg = fe_train_config(tr->arena, m->ast, block, &m->diags);
  if (tr->cfg && o->optimizer) {      /* read again, with the block's optimizer replaced */
    const AstFile *f = with_optimizer(m, tr->arena, tr->cfg->name, o->optimizer);
    tr->cfg = f ? fe_train_config(tr->arena, f, block, &m->diags) : NULL;
  }
  if (!tr->cfg || m->diags.nerrors)
    return m->diags.nerrors ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  if (strcmp(tr->cfg->model, m->sig->name))
    return kiln__fail(m, KILN_ERR_ARG, "train block '%s' trains model '%s', but '%s' is loaded "
                      "(choose it with --model %s)", tr->cfg->name, tr->cfg->model, m->sig->name,
                      tr->cfg->model);
  resolve_paths(m, tr->cfg, tr->arena);
  if (o->split >= 0 && tr->cfg->data.kind && !strcmp(tr->cfg->data.kind, "series"))
    return kiln__fail(m, KILN_ERR_ARG, "--split does not apply to series data, which validates "
                      "on its last values (series(..., validate = K))");
  apply_overrides(tr->cfg, o, tr->arena);
  if (tr->cfg->batch <= 0 || tr->cfg->batch > RT_MAX_DIM)
    return kiln__fail(m, KILN_ERR_ARG, "the batch size must be positive (set batch = ... or --batch)");
  FeOptions fo = {.model = tr->cfg->model, .sizes = m->sizes, .nsizes = m->nsizes};
  tr->sig = fe_lower_train(m->ast, &fo, tr->cfg, false, &m->diags);
  if (!tr->sig || m->diags.nerrors)
    return tr->sig || m->diags.nerrors ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  return KILN_OK;
}

/* ---- the learning-rate schedule (per epoch, as torch.optim.lr_scheduler
 * stepped once an epoch; a linear warmup first) ---------------------------- */

static double lr_at(const FeTrain *t, int epoch, int epochs) {
  const FeSchedule *s = &t->sched;
  if (epoch < s->warmup_epochs)
    return t->lr * (epoch + 1) / (s->warmup_epochs + 1);
  int e = epoch - s->warmup_epochs, span = epochs - s->warmup_epochs;
  switch (s->kind) {
  case SCHED_STEP: return t->lr * pow(s->gamma, floor(e / (s->step_epochs > 0 ? s->step_epochs : 1)));
  case SCHED_EXP: return t->lr * pow(s->gamma, e);
  case SCHED_INV_TIME: return t->lr / (1 + s->decay * e);
  case SCHED_COSINE:
    return s->min_lr + (t->lr - s->min_lr) * (1 + cos(M_PI * e / (span > 0 ? span : 1))) / 2;
  case SCHED_CONST: break;
  }
  return t->lr;
}

/* ---- data ------------------------------------------------------------------- */

static const Value *model_input(const KilnTrainer *tr) { return tr->sig->inputs[0]; }

/* The label input: the first input after the model's own, or NULL. */
static const Value *label_input(const KilnModel *m, const KilnTrainer *tr) {
  return tr->sig->ninputs > m->sig->ninputs ? tr->sig->inputs[m->sig->ninputs] : NULL;
}

static int64_t per_sample(const RtTensor *t) {
  int64_t n = 1;
  for (int i = 1; i < t->rank; i++)
    n *= t->shape[i];
  return n;
}

static KilnStatus data_fail(KilnModel *m, const char *file, RtStatus rs, const RtError *e) {
  KilnStatus st = rs == RT_ERR_IO ? KILN_ERR_IO : rs == RT_ERR_NOMEM ? KILN_ERR_NOMEM : KILN_ERR_INPUT;
  if (strstr(e->msg, file))
    return kiln__fail(m, st, "%s", e->msg);
  return kiln__fail(m, st, "%s: %s", file, e->msg);
}

/* The vocabulary of a text file: the first one read is the run's, any
 * other (the test set's) must be the same; the model's classes must be its
 * symbols. */
static KilnStatus take_vocab(KilnModel *m, KilnTrainer *tr, const FeData *d, const RtText *txt) {
  const Value *out = m->sig->noutputs ? m->sig->outputs[0] : NULL;
  char *v = rt_text_vocab_utf8(txt->vocab, txt->nvocab), tb[160];
  int64_t classes;
  if (!v)
    return KILN_ERR_NOMEM;
  KilnStatus st = KILN_OK;
  if (out && sz_is_const(out->type.dim[out->type.rank - 1], &classes) && classes != txt->nvocab)
    st = kiln__fail(m, KILN_ERR_INPUT, "%s: %d symbols (the end symbol and %d characters), but "
                    "the model's output '%s' %s has %lld classes", d->path, txt->nvocab,
                    txt->nvocab - 1, out->name, ir_type_str(m->sig, &out->type, tb, sizeof tb),
                    (long long)classes);
  else if (tr->vocab.text && strcmp(tr->vocab.text, v))
    st = kiln__fail(m, KILN_ERR_INPUT, "%s: its vocabulary (%d symbols, \"%.60s\") differs from "
                    "the one of %s (%d symbols, \"%.60s\")", d->path, txt->nvocab, v,
                    tr->vocab.from, tr->nvocab, tr->vocab.text);
  if (st != KILN_OK || tr->vocab.text) {
    free(v);
    return st;
  }
  tr->vocab = (KilnVocab){v, strdup(d->path), d->text.lines};
  tr->nvocab = txt->nvocab;
  return tr->vocab.from ? KILN_OK : KILN_ERR_NOMEM;
}

/* text(): the symbols feed the model's input, the next symbols the label. */
static KilnStatus read_text(KilnModel *m, KilnTrainer *tr, const FeData *d, const char *xname,
                            const char *yname, RtDataset *ds) {
  RtText txt;
  RtError e;
  RtStatus rs = rt_text_read(d->path, &d->text, &txt, &e);
  if (rs != RT_OK)
    return data_fail(m, d->path, rs, &e);
  KilnStatus st = yname ? take_vocab(m, tr, d, &txt)
      : kiln__fail(m, KILN_ERR_INPUT, "%s: text() data gives each symbol's next symbol as the "
                   "label, but the loss names none (as in cross_entropy(logits, next, "
                   "ignore_index = -1))", d->path);
  if (st == KILN_OK && (rs = rt_data_add(ds, xname, &txt.x, &e)) == RT_OK &&
      (rs = rt_data_add(ds, yname, &txt.y, &e)) != RT_OK)
    rt_data_free(ds);
  if (st == KILN_OK && rs != RT_OK)
    st = data_fail(m, d->path, rs, &e);
  rt_text_free(&txt);
  return st;
}

static KilnStatus read_files(KilnModel *m, KilnTrainer *tr, const FeData *d, const char *xname,
                             const char *yname, RtDataset *ds) {
  RtError e;
  RtStatus rs;
  if (d->kind && !strcmp(d->kind, "text"))
    return read_text(m, tr, d, xname, yname, ds);
  if (d->kind && !strcmp(d->kind, "series"))
    return kiln__fail(m, KILN_ERR_ARG, "%s: series(...) is training data that validates on its "
                      "own last values (validate = K); it cannot be a test set", d->path);
  if (d->kind && !strcmp(d->kind, "csv")) {
    RtCsvOptions co = {.has_label = yname != NULL, .label = (int)d->label_col};
    rs = rt_data_add_csv(ds, d->path, &co, xname, yname, &e);
    return rs == RT_OK ? KILN_OK : data_fail(m, d->path, rs, &e);
  }
  if ((rs = rt_data_add_file(ds, xname, d->path, &e)) != RT_OK)
    return data_fail(m, d->path, rs, &e);
  if (!yname)
    return KILN_OK;
  if (!d->labels)
    return kiln__fail(m, KILN_ERR_INPUT, "%s holds no labels: the loss needs '%s' (give a "
                      "labels file: labels = \"...\" in the train block, or --labels)", d->path, yname);
  if ((rs = rt_data_add_file(ds, yname, d->labels, &e)) != RT_OK)
    return data_fail(m, d->labels, rs, &e);
  return KILN_OK;
}

/* The model input's per-sample dims, when the bound sizes fix them all. */
static bool input_dims(const KilnModel *m, const Value *v, int64_t *dims) {
  dims[0] = -1;
  for (int i = 1; i < v->type.rank; i++)
    if (!sz_eval(v->type.dim[i], m->sig->svals, &dims[i]))
      return false;
  return true;
}

/* The features: the model input's dtype (times the data's scale) and shape. */
static KilnStatus shape_features(KilnModel *m, const FeData *d, const Value *v, RtDataset *ds) {
  RtTensor *x = &ds->t[0].t;
  int64_t dims[RT_MAX_RANK], want = 1;
  char tb[160];
  RtError e;
  RtStatus rs = rt_data_convert(ds, v->name, v->type.dt, d->scale ? d->scale : 1, &e);
  if (rs != RT_OK)
    return data_fail(m, d->path, rs, &e);
  if (!input_dims(m, v, dims))
    return x->rank == v->type.rank ? KILN_OK
        : kiln__fail(m, KILN_ERR_INPUT, "%s: samples of rank %d, the model's input %s is %s",
                     d->path, x->rank - 1, v->name, ir_type_str(m->sig, &v->type, tb, sizeof tb));
  for (int i = 1; i < v->type.rank; i++)
    want *= dims[i];
  if (want != per_sample(x)) {
    bool csv = d->kind && !strcmp(d->kind, "csv");
    return kiln__fail(m, KILN_ERR_INPUT, "%s: %lld %s per sample%s, but the model's input %s is %s "
                      "(%lld per sample)", d->path, (long long)per_sample(x),
                      csv ? "feature columns" : "values", csv ? " (the label column apart)" : "",
                      v->name, ir_type_str(m->sig, &v->type, tb, sizeof tb), (long long)want);
  }
  dims[0] = x->shape[0];
  rs = rt_data_reshape(ds, v->name, v->type.rank, dims, &e);
  if (rs == RT_OK && ir_is_float(v->type.dt))
    rs = rt_data_check_finite(ds, v->name, &e);
  return rs == RT_OK ? KILN_OK : data_fail(m, d->path, rs, &e);
}

/* The number of classes of a classifier: the last dim of its first output
 * when that is [N, C] and the labels are integers; 0 otherwise. */
static int64_t classes(const KilnModel *m, const KilnTrainer *tr) {
  const Value *y = label_input(m, tr), *out = m->sig->noutputs ? m->sig->outputs[0] : NULL;
  int64_t c;
  if (!y || ir_is_float(y->type.dt) || !out || out->type.rank != 2 ||
      !sz_is_const(out->type.dim[1], &c))
    return 0;
  return c;
}

static KilnStatus shape_labels(KilnModel *m, KilnTrainer *tr, const FeData *d, RtDataset *ds) {
  const Value *y = label_input(m, tr);
  const char *file = d->labels && strcmp(d->kind ? d->kind : "", "csv") ? d->labels : d->path;
  RtError e;
  RtStatus rs = rt_data_convert(ds, y->name, y->type.dt, 1, &e);
  if (rs == RT_OK && classes(m, tr) > 0)
    rs = rt_data_check_labels(ds, y->name, classes(m, tr), &e);
  if (rs == RT_OK && ir_is_float(y->type.dt))
    rs = rt_data_check_finite(ds, y->name, &e);
  if (rs != RT_OK)
    return data_fail(m, file, rs, &e);
  int64_t want = 1, dims[RT_MAX_RANK];
  bool fixed = input_dims(m, y, dims);
  for (int i = 1; fixed && i < y->type.rank; i++)
    want *= dims[i];
  if (fixed && want != per_sample(&ds->t[1].t))
    return kiln__fail(m, KILN_ERR_INPUT, "%s: %lld labels per sample, the loss's '%s' takes %lld",
                      file, (long long)per_sample(&ds->t[1].t), y->name, (long long)want);
  return KILN_OK;
}

/* Reads a data source of the train block into a dataset whose tensors are
 * named after the inputs they feed, converted and checked. */
static KilnStatus load_data(KilnModel *m, KilnTrainer *tr, const FeData *d, Data *out) {
  memset(out, 0, sizeof *out);
  out->file = d->path;
  if (m->sig->ninputs != 1 || tr->sig->ninputs > m->sig->ninputs + 1)
    return kiln__fail(m, KILN_ERR_MODEL, "kiln trains models of one input and one label tensor "
                      "from data files; '%s' has %d inputs and its loss %d label inputs",
                      m->sig->name, m->sig->ninputs, tr->sig->ninputs - m->sig->ninputs);
  const Value *x = model_input(tr), *y = label_input(m, tr);
  KilnStatus st;
  if ((st = read_files(m, tr, d, x->name, y ? y->name : NULL, &out->ds)) ||
      (st = shape_features(m, d, x, &out->ds)) || (y && (st = shape_labels(m, tr, d, &out->ds)))) {
    rt_data_free(&out->ds);
    return st;
  }
  return KILN_OK;
}

/* ---- compiling the step and the evaluation -------------------------------- */

static bool same_binds(const KilnTrainer *tr, const FeSize *b, int nb) {
  if (tr->nbinds != nb)
    return false;
  for (int i = 0; i < nb; i++)
    if (strcmp(tr->binds[i].name, b[i].name) || tr->binds[i].value != b[i].value)
      return false;
  return true;
}

/* The sizes a sample of x (any leading dim) binds. */
static KilnStatus binds_of(KilnModel *m, const RtTensor *x, FeSize *binds, int *nb) {
  KilnTensor t = {.dtype = (KilnDType)x->dtype, .rank = x->rank};
  memcpy(t.shape, x->shape, sizeof t.shape);
  t.shape[0] = 1;
  const KilnTensor *in[1] = {&t};
  int64_t batch;
  return kiln__bind(m, in, binds, nb, &batch);
}

/* (Re)compiles the step (training) or the evaluation graph for batches up
 * to max_batch when the bound sizes change or the batch outgrows it. */
static KilnStatus ensure(KilnModel *m, KilnTrainer *tr, bool training, const FeSize *b, int nb,
                         int64_t max_batch) {
  if (nb > 64)
    return kiln__fail(m, KILN_ERR_ARG, "too many sizes");
  if (!same_binds(tr, b, nb)) {
    kiln__pull(m);
    kiln__train_forget(m);
    memcpy(tr->binds, b, nb * sizeof *b);
    tr->nbinds = nb;
  }
  Compiled **cc = training ? &tr->step : &tr->eval;
  if (*cc && (*cc)->entry && max_batch <= (*cc)->max_batch)
    return KILN_OK;
  if (!m->seeded && m->nw == 0) {   /* no weights given: draw them from the run's seed */
    m->seeded = true;
    m->seed = tr->cfg->seed;
  }
  FeOptions fo = {.model = tr->cfg->model, .sizes = b, .nsizes = nb};
  Graph *g = fe_lower_train(m->ast, &fo, tr->cfg, training, &m->diags);
  if (!g || m->diags.nerrors) {
    ir_graph_free(g);
    return m->diags.nerrors ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  }
  if (m->newest == *cc)
    kiln__pull(m);
  kiln__free_compiled(*cc);
  *cc = NULL;
  unsigned flags = KILN__LIVE_WEIGHTS | (training && !tr->resuming ? KILN__INIT_STATE : 0);
  return kiln__compile_graph(m, g, kiln__batch_name(m), max_batch, flags, cc);
}

/* kiln check --step: the training step of block `train` (NULL: the
 * model's) compiled for batches up to max_batch from the sizes the model
 * was loaded with, without data, for --emit and --stats. */
KilnStatus kiln__compile_step(KilnModel *m, const char *train, int64_t max_batch,
                              const Graph **step) {
  KilnTrainOptions o;
  kiln_train_options_default(&o);
  o.train = train;
  KilnTrainer *tr = trainer(m);
  KilnStatus st = tr ? configure(m, tr, &o) : KILN_ERR_NOMEM;
  if (st == KILN_OK)
    st = ensure(m, tr, true, m->sizes, m->nsizes, max_batch > 0 ? max_batch : tr->cfg->batch);
  *step = st == KILN_OK ? tr->step->g : NULL;
  return st;
}

/* ---- running batches ---------------------------------------------------------- */

/* Gathers samples perm[start ..] of ds into cc's inputs of the same names. */
static KilnStatus feed(KilnModel *m, Compiled *cc, const RtDataset *ds, const int64_t *perm,
                       int64_t start, int64_t *got) {
  const Graph *g = cc->g;
  RtTensor bufs[RT_DATA_MAX_TENSORS];
  for (int j = 0; j < ds->n; j++) {
    const Value *v = NULL;
    for (int i = 0; i < g->ninputs && !v; i++)
      if (!strcmp(g->inputs[i]->name, ds->t[j].name))
        v = g->inputs[i];
    if (!v)
      return kiln__fail(m, KILN_ERR_INPUT, "the step has no input '%s'", ds->t[j].name);
    bufs[j] = ds->t[j].t;
    bufs[j].shape[0] = cc->max_batch;
    bufs[j].data = kiln__at(cc, v);
  }
  RtError e;
  int threads = m->threads > 0 ? m->threads : rt_default_threads();
  RtStatus rs = rt_data_batch(ds, perm, start, cc->max_batch, bufs, threads, got, &e);
  return rs == RT_OK ? KILN_OK : kiln__fail(m, KILN_ERR_INPUT, "%s", e.msg);
}

/* Element i of a float tensor at p. */
static double real_at(const void *p, RtDType dt, int64_t i) {
  return dt == RT_F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static double scalar_at(const Compiled *cc, const Value *v) {
  return real_at(kiln__at(cc, v), v->type.dt, 0);
}

static int64_t label_at(const Compiled *cc, const Value *y, int64_t i) {
  void *p = kiln__at(cc, y);
  return y->type.dt == RT_I32 ? ((int32_t *)p)[i] : ((int64_t *)p)[i];
}

/* Correct predictions of a batch of `rows`: argmax of the first model
 * output (the first maximum, as torch.argmax) against the labels. */
static int64_t count_correct(const Compiled *cc, const Value *y, int64_t rows, int64_t classes) {
  const Value *out = cc->g->outputs[1];
  const void *p = kiln__at(cc, out);
  int64_t correct = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t best = 0;
    for (int64_t c = 1; c < classes; c++)
      if (real_at(p, out->type.dt, r * classes + c) > real_at(p, out->type.dt, r * classes + best))
        best = c;
    correct += best == label_at(cc, y, r);
  }
  return correct;
}

/* A regression's batch: the first model output against labels of as many
 * values a row (nothing when the shapes differ: the loss is not a plain
 * prediction of the labels). */
static void add_errors(const Compiled *cc, const Value *y, int64_t rows, RtErrs *e) {
  const Value *out = cc->g->outputs[1];
  int64_t per_y = ir_numel_max(cc->g, &y->type) / cc->max_batch;
  if (ir_numel_max(cc->g, &out->type) / cc->max_batch != per_y)
    return;
  const void *p = kiln__at(cc, out), *q = kiln__at(cc, y);
  for (int64_t i = 0; i < rows * per_y; i++)
    rt_errs_add(e, real_at(p, out->type.dt, i), real_at(q, y->type.dt, i), 1);
}

static const Value *input_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->ninputs; i++)
    if (!strcmp(g->inputs[i]->name, name))
      return g->inputs[i];
  return NULL;
}

/* The labels of the batch's `rows` that are not padding (>= 0): the
 * symbols a text model's loss averages over. */
static int64_t counted_labels(const Compiled *cc, const Value *y, int64_t rows) {
  int64_t per_row = 1, n = 0, d;
  for (int i = 1; i < y->type.rank; i++)
    per_row *= sz_eval(y->type.dim[i], cc->g->svals, &d) ? d : 0;
  for (int64_t i = 0; i < rows * per_row; i++)
    n += label_at(cc, y, i) >= 0;
  return n;
}

/* Adds the batch's numbers (rows of cc's last run) to t: the loss weighted
 * by the samples, or for text by the symbols (the loss is their mean), so
 * that a pass's loss is the mean over all of them. */
static void tally(KilnModel *m, KilnTrainer *tr, const Compiled *cc, int64_t rows, Tally *t) {
  const Value *y = label_input(m, tr);
  int64_t c = classes(m, tr);
  int64_t w = tr->vocab.text ? counted_labels(cc, input_named(cc->g, y->name), rows) : rows;
  t->loss += scalar_at(cc, cc->g->outputs[0]) * w;
  t->seen += w;
  t->classify = c > 0 && cc->g->noutputs > 1;
  if (t->classify)
    t->correct += count_correct(cc, input_named(cc->g, y->name), rows, c);
  else if (y && ir_is_float(y->type.dt) && cc->g->noutputs > 1)
    add_errors(cc, input_named(cc->g, y->name), rows, &t->errs);
}

static void set_lr(Compiled *cc, double lr) {
  const Value *v = cc->g->lr ? cc->g->lr : cc->g->inputs[cc->g->ninputs - 1];
  if (v->type.dt == RT_F64)
    *(double *)kiln__at(cc, v) = lr;
  else
    *(float *)kiln__at(cc, v) = (float)lr;
}

static KilnStatus run_step(KilnModel *m, KilnTrainer *tr, double lr, int64_t rows) {
  Compiled *cc = tr->step;
  set_lr(cc, lr);
  kiln__call(m, cc, rows);
  m->newest = cc;
  tr->steps++;
  double loss = scalar_at(cc, cc->g->outputs[0]);
  if (!isfinite(loss))
    return kiln__fail(m, KILN_ERR_TRAIN, "the loss became %g at step %lld: training diverged "
                      "(a lower learning rate may help)", loss, (long long)tr->steps);
  return KILN_OK;
}

/* Mean loss and accuracy of the current weights over all of ds. */
static KilnStatus evaluate(KilnModel *m, KilnTrainer *tr, const RtDataset *ds, Tally *t) {
  memset(t, 0, sizeof *t);
  KilnStatus st = KILN_OK;
  for (int64_t at = 0, got; at < ds->len && st == KILN_OK; at += got) {
    if ((st = feed(m, tr->eval, ds, NULL, at, &got)))
      break;
    kiln__call(m, tr->eval, got);
    tally(m, tr, tr->eval, got, t);
  }
  return st;
}

/* ---- checkpoints -------------------------------------------------------------- */

/* The epochs so far as metadata: a line per epoch, numbers as C99 hex
 * floats so that a resumed run's curves are the uninterrupted run's. */
static char *curves_text(RtArena *a, const RtCurves *c) {
  enum { LINE = 256 };        /* an int and seven %a doubles fit */
  char *s = rt_arena_alloc(a, (size_t)c->n * LINE + 1);
  size_t at = 0;
  for (int i = 0; i < c->n && s; i++) {
    const RtEpochStats *e = &c->e[i];
    at += snprintf(s + at, LINE, "%d %a %a %a %a %a %a\n", e->epoch, e->loss, e->acc,
                   e->val_loss, e->val_acc, e->lr, e->seconds);
  }
  return s;
}

static bool parse_curves(const char *s, RtCurves *c) {
  rt_curves_free(c);
  for (const char *p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    RtEpochStats e;
    if (sscanf(p, "%d %la %la %la %la %la %la", &e.epoch, &e.loss, &e.acc, &e.val_loss,
               &e.val_acc, &e.lr, &e.seconds) != 7 || rt_curves_add(c, &e, NULL) != RT_OK)
      return false;
  }
  return true;
}

static RtMeta meta(RtArena *a, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static RtMeta meta(RtArena *a, const char *key, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return (RtMeta){(char *)key, rt_arena_strdup(a, buf)};
}

/* Every weight and state value (optimizer moments, counters, running
 * statistics) and where the run stands, written atomically: a crash while
 * writing leaves the previous checkpoint as it was. */
static KilnStatus save_checkpoint(KilnModel *m, KilnTrainer *tr, const char *path, int epochs) {
  kiln__pull(m);
  const FeTrain *t = tr->cfg;
  RtArena *a = rt_arena_new();
  RtNamedTensor *ts = calloc(m->nw ? m->nw : 1, sizeof *ts);
  if (!a || !ts) {
    rt_arena_free(a);
    free(ts);
    return KILN_ERR_NOMEM;
  }
  for (int i = 0; i < m->nw; i++)
    ts[i] = (RtNamedTensor){m->w[i].name, m->w[i].t};
  RtMeta md[] = {
      meta(a, "format", CKPT_FORMAT),
      meta(a, "model", "%s", m->sig->name),
      meta(a, "epoch", "%d", epochs),
      meta(a, "step", "%lld", (long long)tr->steps),
      meta(a, "seed", "%llu", (unsigned long long)t->seed),
      meta(a, "split", "%.17g", t->split),
      meta(a, "batch", "%lld", (long long)t->batch),
      meta(a, "rng", "philox4x32-10: split (seed), epoch order (seed, epoch), dropout (seed, step)"),
      {"curves", curves_text(a, &tr->curves)},
      {0}, {0},                                   /* a text model's vocabulary */
  };
  RtError e;
  int nmd = 9 + kiln__vocab_meta(m, md + 9);
  RtStatus rs = md[8].value ? rt_st_write(path, ts, m->nw, md, nmd, &e) : RT_ERR_NOMEM;
  free(ts);
  rt_arena_free(a);
  if (rs == RT_ERR_NOMEM)
    return KILN_ERR_NOMEM;
  return rs == RT_OK ? KILN_OK : kiln__fail(m, KILN_ERR_IO, "checkpoint: %s", e.msg);
}

/* A metadata number of a checkpoint, or a message saying it is missing. */
static bool meta_num(KilnModel *m, const RtSafetensors *s, const char *path, const char *key,
                     double *v) {
  const char *txt = rt_st_meta(s, key);
  char *end;
  *v = txt ? strtod(txt, &end) : 0;
  if (txt && *txt && !*end)
    return true;
  kiln__fail(m, KILN_ERR_WEIGHTS, "%s: the checkpoint's '%s' is missing or not a number", path, key);
  return false;
}

/* The run's settings that fix which samples go where must be the
 * checkpoint's, or the resumed run would not continue the same one. */
static KilnStatus check_same_run(KilnModel *m, const RtSafetensors *s, const char *path,
                                 const FeTrain *t) {
  static const char *keys[] = {"seed", "split", "batch"}, *flags[] = {"--seed", "--split", "--batch"};
  double now[] = {(double)t->seed, t->split, (double)t->batch};
  for (int i = 0; i < 3; i++) {
    double v;
    if (!meta_num(m, s, path, keys[i], &v))
      return KILN_ERR_WEIGHTS;
    if (v != now[i])
      return kiln__fail(m, KILN_ERR_ARG, "%s was trained with %s %g, this run has %g: resume "
                        "with %s %g to continue it", path, keys[i], v, now[i], flags[i], v);
  }
  return KILN_OK;
}

static KilnStatus read_checkpoint(KilnModel *m, KilnTrainer *tr, const char *path,
                                  const RtSafetensors *s, int *epochs) {
  const char *fmt = rt_st_meta(s, "format"), *model = rt_st_meta(s, "model");
  double ep, steps;
  if (!fmt || strcmp(fmt, CKPT_FORMAT))
    return kiln__fail(m, KILN_ERR_WEIGHTS, "%s is not a kiln checkpoint (no \"format\": \"%s\" "
                      "in its metadata); to start from its weights use --weights", path, CKPT_FORMAT);
  if (!model || strcmp(model, m->sig->name))
    return kiln__fail(m, KILN_ERR_WEIGHTS, "%s is a checkpoint of model '%s', not of '%s'", path,
                      model ? model : "?", m->sig->name);
  KilnStatus st = check_same_run(m, s, path, tr->cfg);
  if (st != KILN_OK)
    return st;
  if (!meta_num(m, s, path, "epoch", &ep) || !meta_num(m, s, path, "step", &steps))
    return KILN_ERR_WEIGHTS;
  if (!rt_st_meta(s, "curves") || !parse_curves(rt_st_meta(s, "curves"), &tr->curves) ||
      tr->curves.n != (int)ep)
    return kiln__fail(m, KILN_ERR_WEIGHTS, "%s: the checkpoint's curves do not match its epoch", path);
  *epochs = (int)ep;
  tr->steps = (int64_t)steps;
  return KILN_OK;
}

/* Loads a checkpoint into the weights table, with nothing drawn or zeroed
 * on top: the step must find every value it had. */
static KilnStatus load_checkpoint(KilnModel *m, KilnTrainer *tr, const char *path, int *epochs) {
  RtSafetensors s;
  RtError e;
  RtStatus rs = rt_st_read(path, &s, &e);
  if (rs != RT_OK)
    return kiln__fail(m, rs == RT_ERR_IO ? KILN_ERR_IO : KILN_ERR_WEIGHTS, "%s", e.msg);
  KilnStatus st = read_checkpoint(m, tr, path, &s, epochs);
  if (st == KILN_OK) {
    kiln__forget_compiled(m, false);
    kiln__free_weights(m);
    m->seeded = false;
  }
  for (int i = 0; i < s.n && st == KILN_OK; i++) {
    RtTensor t;
    const RtTensor *src = &s.tensors[i].t;
    if (rt_tensor_alloc(&t, src->dtype, src->rank, src->shape, &e) != RT_OK) {
      st = kiln__fail(m, KILN_ERR_NOMEM, "%s", e.msg);
      break;
    }
    memcpy(t.data, src->data, rt_tensor_bytes(src));
    st = kiln__put_weight(m, s.tensors[i].name, t);
  }
  if (st == KILN_OK && !kiln__read_vocab(m, &s, path))
    st = KILN_ERR_NOMEM;
  rt_st_free(&s);
  return st;
}

/* The symbols of a vocabulary string: its characters and the end symbol. */
static int symbols(const char *utf8) {
  int n = 1;
  for (const char *p = utf8; *p; p++)
    n += (*p & 0xC0) != 0x80;
  return n;
}

/* Weights that carry a vocabulary must have been trained on the data's;
 * the data's then becomes the model's (kept in the weights it writes). */
static KilnStatus agree_vocab(KilnModel *m, KilnTrainer *tr) {
  const KilnVocab *mv = &m->vocab, *dv = &tr->vocab;
  if (!dv->text)
    return KILN_OK;
  if (mv->text && strcmp(mv->text, dv->text))
    return kiln__fail(m, KILN_ERR_WEIGHTS, "%s holds a vocabulary of %d symbols (\"%.60s\"), "
                      "the data %s has %d (\"%.60s\"): the weights were trained on other text",
                      mv->from ? mv->from : "the weights", symbols(mv->text), mv->text,
                      dv->from, tr->nvocab, dv->text);
  return kiln__set_vocab(m, dv->text, dv->lines, dv->from) ? KILN_OK : KILN_ERR_NOMEM;
}

/* ---- reporting ---------------------------------------------------------------- */

static void json_num(FILE *f, const char *key, double v) {
  if (isfinite(v))
    fprintf(f, ", \"%s\": %.17g", key, v);
  else
    fprintf(f, ", \"%s\": null", key);
}

static void print_json(FILE *f, const KilnEpoch *e, bool test) {
  fprintf(f, "{\"epoch\": %d, \"steps\": %lld", e->epoch, (long long)e->steps);
  json_num(f, "loss", e->loss);
  json_num(f, "acc", e->acc);
  json_num(f, "val_loss", e->val_loss);
  json_num(f, "val_acc", e->val_acc);
  if (test) {
    json_num(f, "test_loss", e->test_loss);
    json_num(f, "test_acc", e->test_acc);
  }
  json_num(f, "lr", e->lr);
  json_num(f, "seconds", e->seconds);
  fputs("}\n", f);
  fflush(f);
}

static KilnEpoch to_epoch(const RtEpochStats *s, int64_t steps) {
  return (KilnEpoch){.epoch = s->epoch, .steps = steps, .loss = s->loss, .acc = s->acc,
                     .val_loss = s->val_loss, .val_acc = s->val_acc, .test_loss = NAN,
                     .test_acc = NAN, .lr = s->lr, .seconds = s->seconds};
}

static KilnStatus write_curves(KilnModel *m, KilnTrainer *tr, const char *prefix,
                               const char *reading) {
  char csv[4096], svg[4096], title[256];
  RtError e;
  snprintf(csv, sizeof csv, "%s.csv", prefix);
  snprintf(svg, sizeof svg, "%s.svg", prefix);
  snprintf(title, sizeof title, "%s: training and validation", m->sig->name);
  if (rt_curves_write_csv(&tr->curves, csv, &e) != RT_OK ||
      rt_curves_write_svg(&tr->curves, svg, title, reading, &e) != RT_OK)
    return kiln__fail(m, KILN_ERR_IO, "curves: %s", e.msg);
  return KILN_OK;
}

/* ---- the loop ----------------------------------------------------------------- */

typedef struct Run {
  KilnModel *m;
  KilnTrainer *tr;
  const KilnTrainOptions *o;
  Data train, val, test;
  RtSeries series;        /* series data: the raw values, for the baselines */
  RtSeriesNorm norm;      /* and how the windows were normalised */
  int64_t *perm;
  int epochs;             /* the last epoch to train, 1-based */
  RtProgress progress;
} Run;

static KilnStatus train_epoch(Run *r, int epoch, double lr, Tally *t) {
  KilnModel *m = r->m;
  KilnTrainer *tr = r->tr;
  const RtDataset *ds = &r->train.ds;
  memset(t, 0, sizeof *t);
  rt_data_epoch_order(r->perm, ds->len, tr->cfg->seed, epoch - 1);
  if (r->o->progress)
    rt_progress_begin_epoch(&r->progress, epoch);
  KilnStatus st = KILN_OK;
  for (int64_t at = 0, got; at < ds->len && st == KILN_OK; at += got) {
    if (tr->cfg->steps > 0 && tr->steps >= tr->cfg->steps)
      break;
    if ((st = feed(m, tr->step, ds, r->perm, at, &got)) || (st = run_step(m, tr, lr, got)))
      break;
    tally(m, tr, tr->step, got, t);
    if (r->o->progress)
      rt_progress_update(&r->progress, at + got, tally_loss(t), tally_acc(t));
  }
  return st;
}

/* Tells the world about a finished epoch; true if the caller's callback
 * asks to stop. */
static bool report_epoch(Run *r, const RtEpochStats *s, const Tally *test) {
  KilnEpoch ke = to_epoch(s, r->tr->steps);
  ke.test_loss = tally_loss(test);
  ke.test_acc = tally_acc(test);
  FILE *p = r->o->progress;
  if (p)
    rt_progress_end_epoch(&r->progress, s);
  if (p && r->test.ds.len)
    fprintf(p, "  test_loss %.4g  test_acc %.2f%%\n", ke.test_loss, 100 * ke.test_acc);
  if (r->o->json)
    print_json(r->o->json, &ke, r->test.ds.len > 0);
  return r->o->on_epoch && r->o->on_epoch(&ke, r->o->user);
}

/* Validation, test, curves, then the checkpoint (before anyone hears of
 * the epoch, so that a process killed after reporting epoch k can resume
 * from k), then the reports. */
static KilnStatus end_epoch(Run *r, int epoch, double lr, const Tally *t, double t0, bool *stop) {
  KilnModel *m = r->m;
  KilnTrainer *tr = r->tr;
  Tally v = {0}, ts = {0};
  KilnStatus st;
  if ((r->val.ds.len && (st = evaluate(m, tr, &r->val.ds, &v))) ||
      (r->test.ds.len && (st = evaluate(m, tr, &r->test.ds, &ts))))
    return st;
  RtEpochStats s = rt_epoch_blank(epoch);
  s.loss = tally_loss(t);
  s.acc = tally_acc(t);
  s.val_loss = tally_loss(&v);
  s.val_acc = tally_acc(&v);
  s.lr = lr;
  s.seconds = rt_monotonic_seconds() - t0;
  if (rt_curves_add(&tr->curves, &s, NULL) != RT_OK)
    return KILN_ERR_NOMEM;
  const char *ck = tr->cfg->checkpoint;
  bool last = epoch == r->epochs || (tr->cfg->steps > 0 && tr->steps >= tr->cfg->steps);
  if (ck && (epoch % tr->cfg->checkpoint_every == 0 || last) &&
      (st = save_checkpoint(m, tr, ck, epoch)))
    return st;
  *stop = report_epoch(r, &s, &ts);
  return KILN_OK;
}

static KilnStatus loop(Run *r, int first) {
  KilnTrainer *tr = r->tr;
  for (int epoch = first; epoch <= r->epochs; epoch++) {
    if (tr->cfg->steps > 0 && tr->steps >= tr->cfg->steps)
      break;
    double t0 = rt_monotonic_seconds(), lr = lr_at(tr->cfg, epoch - 1, r->epochs);
    Tally t;
    bool stop = false;
    KilnStatus st;
    if ((st = train_epoch(r, epoch, lr, &t)) || (st = end_epoch(r, epoch, lr, &t, t0, &stop)))
      return st;
    if (stop)
      break;
  }
  return KILN_OK;
}

static bool is_series(const FeData *d) { return d->kind && !strcmp(d->kind, "series"); }

/* series(...): windows of one column split in time (runtime/series.c)
 * into r->train and r->val, shaped and checked like any data. */
static KilnStatus load_series(Run *r) {
  KilnModel *m = r->m;
  const FeData *d = &r->tr->cfg->data;
  const Value *x = model_input(r->tr), *y = label_input(m, r->tr);
  RtSeriesSpec sp = {.window = d->window, .horizon = d->horizon, .validate = d->validate};
  RtError e;
  RtStatus rs;
  KilnStatus st;
  if (m->sig->ninputs != 1 || !y)
    return kiln__fail(m, KILN_ERR_MODEL, "series data feeds a model of one input and a loss with "
                      "one target (loss = mse(y, target))");
  if ((rs = rt_series_read(d->path, d->column, &r->series, &e)) != RT_OK ||
      (rs = rt_series_windows(&r->series, &sp, x->name, y->name, &r->train.ds, &r->val.ds,
                              &r->norm, &e)) != RT_OK)
    return data_fail(m, d->path, rs, &e);
  r->train.file = r->val.file = d->path;
  Data *parts[] = {&r->train, &r->val};
  for (int i = 0; i < 2; i++)
    if (parts[i]->ds.len && ((st = shape_features(m, d, x, &parts[i]->ds)) ||
                             (st = shape_labels(m, r->tr, d, &parts[i]->ds))))
      return st;
  return KILN_OK;
}

/* Reads every data source of the run: the training data (split), the test set. */
static KilnStatus load_run_data(Run *r) {
  KilnModel *m = r->m;
  const FeTrain *t = r->tr->cfg;
  Data full;
  RtError e;
  if (!t->data.path)
    return kiln__fail(m, KILN_ERR_ARG, "the train block of '%s' names no data (data = csv(...) "
                      "or --data FILE)", m->sig->name);
  if (t->nbaselines && !is_series(&t->data))
    return kiln__fail(m, KILN_ERR_ARG, "baseline forecasts need series data (data = series(...))");
  if (is_series(&t->data))
    return load_series(r);
  KilnStatus st = load_data(m, r->tr, &t->data, &full);
  if (st != KILN_OK)
    return st;
  RtStatus rs = t->split > 0 ? rt_data_split(&full.ds, t->split, t->seed, &r->train.ds, &r->val.ds, &e)
                             : RT_OK;
  if (t->split > 0)
    rt_data_free(&full.ds);
  else
    r->train = full;
  if (rs != RT_OK)
    return kiln__fail(m, KILN_ERR_ARG, "%s: %s", t->data.path, e.msg);
  if (t->test.path && (st = load_data(m, r->tr, &t->test, &r->test)))
    return st;
  return KILN_OK;
}

static KilnStatus prepare(Run *r, int *first) {
  KilnModel *m = r->m;
  KilnTrainer *tr = r->tr;
  const FeTrain *t = tr->cfg;
  int done = 0;
  KilnStatus st;
  rt_curves_free(&tr->curves);
  tr->steps = 0;
  if ((st = load_run_data(r)))
    return st;
  if (!(r->perm = malloc(sizeof *r->perm * (r->train.ds.len ? r->train.ds.len : 1))))
    return KILN_ERR_NOMEM;
  if (r->o->resume && (st = load_checkpoint(m, tr, r->o->resume, &done)))
    return st;
  if (!r->o->resume && t->init_from && m->nw == 0) {
    if ((st = kiln_load_weights(m, t->init_from)))
      return st;
    m->seeded = true;                /* layers the file lacks start fresh */
    m->seed = t->seed;
  }
  if ((st = agree_vocab(m, tr)))
    return st;
  FeSize b[64];
  int nb;
  int64_t per_epoch = (r->train.ds.len + t->batch - 1) / t->batch;
  r->epochs = t->epochs > 0 ? t->epochs : (int)((t->steps + per_epoch - 1) / per_epoch);
  tr->resuming = r->o->resume != NULL;
  if ((st = binds_of(m, &r->train.ds.t[0].t, b, &nb)) || (st = ensure(m, tr, true, b, nb, t->batch)))
    st = st == KILN_ERR_WEIGHTS && tr->resuming
             ? kiln__fail(m, st, "%s does not fit this training run (another optimizer?)", r->o->resume)
             : st;
  tr->resuming = false;
  if (st || (st = ensure(m, tr, false, b, nb, t->batch)))
    return st;
  *first = done + 1;
  return KILN_OK;
}

static void finish_run(Run *r) {
  rt_data_free(&r->train.ds);
  rt_data_free(&r->val.ds);
  rt_data_free(&r->test.ds);
  rt_series_free(&r->series);
  free(r->perm);
}

/* A text model against the count models fitted on the training split,
 * all in nats per symbol of the validation split (the end symbols
 * included): the numbers a character-level model has to beat. */
static KilnStatus report_baselines(Run *r) {
  const KilnTrainer *tr = r->tr;
  const RtDataset *tn = &r->train.ds, *va = &r->val.ds;
  RtTextBaselines b;
  RtError e;
  if (!tr->vocab.text || !va->len || !tr->curves.n)
    return KILN_OK;
  if (rt_text_baselines(&tn->t[0].t, &tn->t[1].t, &va->t[0].t, &va->t[1].t, tr->nvocab, 1, &b,
                        &e) != RT_OK)
    return kiln__fail(r->m, KILN_ERR_NOMEM, "%s", e.msg);
  double model = tr->curves.e[tr->curves.n - 1].val_loss;
  if (r->o->progress)
    fprintf(r->o->progress, "validation nats per symbol (%lld symbols): model %.4f, bigram %.4f, "
            "unigram %.4f (count models fitted on the training split, add-one smoothing)\n",
            (long long)b.chars, model, b.bigram, b.unigram);
  if (r->o->json)
    fprintf(r->o->json, "{\"val_symbols\": %lld, \"val_loss\": %.17g, \"bigram\": %.17g, "
            "\"unigram\": %.17g}\n", (long long)b.chars, model, b.bigram, b.unigram);
  return KILN_OK;
}

/* A forecaster's last word: its validation errors and the baselines', in
 * the series' units, so a reader sees at once whether the model beats
 * predicting last year's value (persistence) or last cycle's. */
static void report_forecast(Run *r, const Tally *v) {
  const FeTrain *t = r->tr->cfg;
  RtSeriesSpec sp = {.window = t->data.window, .horizon = t->data.horizon,
                     .validate = t->data.validate};
  FILE *p = r->o->progress, *j = r->o->json;
  double sd = r->norm.std;
  if (p)
    fprintf(p, "validation forecast errors over the last %lld values (%lld targets), in the "
            "series' units:\n  %-28s MAE %8.3f  RMSE %8.3f\n", (long long)sp.validate,
            (long long)v->errs.n, "model", sd * rt_errs_mae(&v->errs), sd * rt_errs_rmse(&v->errs));
  if (j)
    fprintf(j, "{\"forecast\": {\"targets\": %lld, \"model\": {\"mae\": %.17g, \"rmse\": %.17g}, "
            "\"baselines\": [", (long long)v->errs.n, sd * rt_errs_mae(&v->errs),
            sd * rt_errs_rmse(&v->errs));
  for (int i = 0; i < t->nbaselines; i++) {
    const FeBaseline *b = &t->baselines[i];
    RtErrs e = rt_series_naive(&r->series, &sp, b->period);
    char name[64];
    snprintf(name, sizeof name, strcmp(b->name, "persistence") ? "%s(period = %lld)" : "%s()",
             b->name, (long long)b->period);
    if (p)
      fprintf(p, "  %-28s MAE %8.3f  RMSE %8.3f\n", name, rt_errs_mae(&e), rt_errs_rmse(&e));
    if (j)
      fprintf(j, "%s{\"baseline\": \"%s\", \"period\": %lld, \"mae\": %.17g, \"rmse\": %.17g}",
              i ? ", " : "", b->name, (long long)b->period, rt_errs_mae(&e), rt_errs_rmse(&e));
  }
  if (j) {
    fputs("]}}\n", j);
    fflush(j);
  }
}

static KilnStatus conclude(Run *r) {
  char reading[512];
  KilnModel *m = r->m;
  rt_bias_variance_reading(&r->tr->curves, NULL, reading, sizeof reading);
  if (r->o->progress)
    fprintf(r->o->progress, "%s\n", reading);
  KilnStatus st = report_baselines(r);
  Tally v;
  if (st == KILN_OK && is_series(&r->tr->cfg->data) && r->val.ds.len &&
      (st = evaluate(m, r->tr, &r->val.ds, &v)) == KILN_OK)
    report_forecast(r, &v);
  if (st == KILN_OK && r->o->curves)
    st = write_curves(m, r->tr, r->o->curves, reading);
  if (st == KILN_OK && r->o->out)
    st = kiln_save_weights(m, r->o->out);
  return st;
}

/* What kiln_train and kiln_evaluate start with: default options when none
 * are given, a loaded model, fresh errors, and the model's trainer. */
static KilnStatus begin(KilnModel *m, const KilnTrainOptions **o, KilnTrainOptions *none,
                        KilnTrainer **tr) {
  if (!*o) {
    kiln_train_options_default(none);
    *o = none;
  }
  if (!m)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  if (!m->sig)
    return kiln__fail(m, KILN_ERR_MODEL, "the model did not load");
  *tr = trainer(m);
  return *tr ? KILN_OK : KILN_ERR_NOMEM;
}

KilnStatus kiln_train(KilnModel *m, const KilnTrainOptions *o) {
  KilnTrainOptions none;
  KilnTrainer *tr;
  KilnStatus bs = begin(m, &o, &none, &tr);
  if (bs != KILN_OK)
    return bs;
  Run r = {.m = m, .tr = tr, .o = o};
  int first = 1;
  KilnStatus st = configure(m, tr, o);
  if (st == KILN_OK)
    st = prepare(&r, &first);
  if (st == KILN_OK && o->progress) {
    rt_progress_init(&r.progress, o->progress, r.epochs, r.train.ds.len);
    if (first > r.epochs)
      fprintf(o->progress, "%s: already trained %d epochs (ask for more with --epochs)\n",
              o->resume, first - 1);
  }
  if (st == KILN_OK)
    st = loop(&r, first);
  if (st == KILN_OK)
    st = conclude(&r);
  finish_run(&r);
  return st;
}

/* ---- evaluation on its own ------------------------------------------------------ */

KilnStatus kiln_evaluate(KilnModel *m, const KilnTrainOptions *o, KilnEpoch *out,
                         int64_t *samples) {
  KilnTrainOptions none;
  KilnTrainer *tr;
  if (!out)
    return KILN_ERR_ARG;
  KilnStatus bs = begin(m, &o, &none, &tr);
  if (bs != KILN_OK)
    return bs;
  Run r = {.m = m, .tr = tr, .o = o};
  Data *d = &r.train;
  KilnStatus st = configure(m, tr, o);
  const FeTrain *t = tr->cfg;
  if (st == KILN_OK && o->data)
    st = load_data(m, tr, &t->data, d);
  else if (st == KILN_OK && t->test.path)
    st = load_data(m, tr, &t->test, d = &r.test);
  else if (st == KILN_OK && (st = load_run_data(&r)) == KILN_OK && r.val.ds.len)
    d = &r.val;
  FeSize b[64];
  int nb;
  Tally v = {0};
  if (st == KILN_OK)
    st = agree_vocab(m, tr);
  if (st == KILN_OK && !(st = binds_of(m, &d->ds.t[0].t, b, &nb)) &&
      !(st = ensure(m, tr, false, b, nb, t->batch)))
    st = evaluate(m, tr, &d->ds, &v);
  *out = (KilnEpoch){.loss = tally_loss(&v), .acc = tally_acc(&v), .val_loss = NAN,
                     .val_acc = NAN, .test_loss = NAN, .test_acc = NAN, .lr = NAN, .seconds = NAN};
  if (samples)
    *samples = st == KILN_OK ? d->ds.len : 0;   /* v.seen counts symbols for text */
  finish_run(&r);
  return st;
}

/* ---- one step from the API ---------------------------------------------------- */

/* m's trainer, set up from the train block with no overrides unless a
 * kiln_train call set it up already. */
static KilnStatus step_trainer(KilnModel *m, KilnTrainer **out) {
  if (!m->sig)
    return kiln__fail(m, KILN_ERR_MODEL, "the model did not load");
  KilnTrainer *tr = *out = trainer(m);
  KilnTrainOptions none;
  kiln_train_options_default(&none);
  return !tr ? KILN_ERR_NOMEM : tr->cfg ? KILN_OK : configure(m, tr, &none);
}

int kiln_train_input_count(KilnModel *m) {
  KilnTrainer *tr;
  if (!m)
    return -1;
  kiln__reset_errors(m);
  return step_trainer(m, &tr) ? -1 : tr->sig->ninputs;
}

KilnStatus kiln_train_input_info(KilnModel *m, int i, KilnTensor *t) {
  KilnTrainer *tr;
  if (!m || !t)
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  KilnStatus st = step_trainer(m, &tr);
  if (st)
    return st;
  return i < 0 || i >= tr->sig->ninputs ? KILN_ERR_ARG : kiln__info(tr->sig->inputs[i], t);
}

/* The given tensors in the step's input order (model inputs, then labels). */
static KilnStatus order_step_inputs(KilnModel *m, const Graph *sig, const KilnTensor *inputs,
                                    int n, const KilnTensor **in) {
  if (n != sig->ninputs)
    return kiln__fail(m, KILN_ERR_INPUT, "a training step takes %d inputs (the model's and the "
                      "labels), got %d", sig->ninputs, n);
  for (int i = 0; i < n; i++) {
    in[i] = NULL;
    for (int j = 0; j < n && !in[i]; j++)
      if (inputs[j].name ? !strcmp(inputs[j].name, sig->inputs[i]->name) : j == i)
        in[i] = &inputs[j];
    if (!in[i] || !in[i]->data)
      return kiln__fail(m, KILN_ERR_INPUT, "no data for input '%s'", sig->inputs[i]->name);
  }
  return KILN_OK;
}

/* Copies input i into the step, after checking it against the step's type
 * at this batch. */
static KilnStatus copy_input(KilnModel *m, Compiled *cc, int i, const KilnTensor *t, int64_t batch) {
  const Graph *g = cc->g;
  const Value *v = g->inputs[i];
  int64_t vals[256], d, bytes = rt_dtype_size(v->type.dt);
  char tb[160], sb[128];
  bool ok = (int)t->dtype == (int)v->type.dt && t->rank == v->type.rank && g->nsvars <= 256;
  if (ok)
    kiln__size_values(g, batch, vals);
  for (int k = 0; ok && k < t->rank; k++) {
    ok = sz_eval(v->type.dim[k], vals, &d) && d == t->shape[k];
    bytes *= d;
  }
  if (!ok)
    return kiln__fail(m, KILN_ERR_INPUT, "input '%s' is %s %s, the step expects %s (batch %lld)",
                      v->name, rt_dtype_name((RtDType)t->dtype),
                      rt_shape_str(t->rank, t->shape, sb, sizeof sb),
                      ir_type_str(g, &v->type, tb, sizeof tb), (long long)batch);
  memcpy(kiln__at(cc, v), t->data, bytes);
  return KILN_OK;
}

KilnStatus kiln_train_step(KilnModel *m, const KilnTensor *inputs, int ninputs, float lr,
                           float *loss) {
  if (!m || (ninputs && !inputs) || !(lr >= 0))
    return KILN_ERR_ARG;
  kiln__reset_errors(m);
  KilnTrainer *tr;
  KilnStatus st = step_trainer(m, &tr);
  const KilnTensor *in[64];
  FeSize b[256];
  int nb;
  int64_t batch;
  if (st || (st = order_step_inputs(m, tr->sig, inputs, ninputs, in)) ||
      (st = kiln__bind(m, in, b, &nb, &batch)) ||
      (st = ensure(m, tr, true, b, nb, batch > m->opt.max_batch ? batch : m->opt.max_batch)))
    return st;
  for (int i = 0; i < tr->sig->ninputs; i++)
    if ((st = copy_input(m, tr->step, i, in[i], batch)))
      return st;
  st = run_step(m, tr, lr, batch);
  if (loss)
    *loss = (float)scalar_at(tr->step, tr->step->g->outputs[0]);
  return st;
}

/* ---- curves ----------------------------------------------------------------------- */

int kiln_epoch_count(const KilnModel *m) { return m && m->tr ? m->tr->curves.n : 0; }

KilnStatus kiln_epoch_get(const KilnModel *m, int i, KilnEpoch *out) {
  if (!m || !m->tr || i < 0 || i >= m->tr->curves.n || !out)
    return KILN_ERR_ARG;
  *out = to_epoch(&m->tr->curves.e[i], -1);
  return KILN_OK;
}

/* ---- the step for an export (tools/export.c) ------------------------------------- */

KilnStatus kiln__step_graph(KilnModel *m, Graph **out) {
  *out = NULL;
  KilnTrainer *tr = trainer(m);
  KilnTrainOptions none;
  kiln_train_options_default(&none);
  KilnStatus st = !tr ? KILN_ERR_NOMEM : configure(m, tr, &none);
  if (st != KILN_OK)
    return st;
  FeOptions fo = {.model = tr->cfg->model, .sizes = m->sizes, .nsizes = m->nsizes};
  *out = fe_lower_train(m->ast, &fo, tr->cfg, true, &m->diags);
  if (!*out || m->diags.nerrors) {
    ir_graph_free(*out);
    *out = NULL;
    return m->diags.nerrors ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  }
  return KILN_OK;
}

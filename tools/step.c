/* The step function in the C API (include/kiln.h, "text models and
 * generation"): the model lowered with its sequence length bound to 1 and
 * its scans' carries made inputs and outputs (ir_step_function), compiled
 * like any graph. The state lives in the step's own input region: after a
 * call each "state.k.next" output is copied onto the "state.k" input, so the
 * next call starts where this one stopped and a caller can read or set the
 * state in place between calls.
 *
 * A model with no scan (a causal transformer) steps as a window: compiled
 * whole at its sequence length T, it keeps the symbols fed so far in its
 * input, each call writes the new one at the next position, runs the model
 * and returns its outputs at that position. For a causal model those are
 * what a run over the whole sequence gives there; it costs a run of T
 * positions per step, and a sequence ends at T. */
#include "tools/api.h"
#include <stdlib.h>
#include <string.h>

struct KilnStep {
  KilnModel *m;
  Compiled *cc;
  int nin, nout;          /* the model's own inputs and outputs (first in cc->g's lists) */
  int nstate;             /* then the states: inputs nin + k, outputs nout + k */
  int64_t batch;          /* of the last run (max_batch before any) */
  int64_t window;         /* a window step: the sequence length T; 0: a scan step */
  int64_t pos;            /* a window step: the position the next call writes */
  void **at_pos;          /* a window step: each output at one position, [batch, 1, ...] */
};

/* The size name of the first scan's sequence length, or NULL; *reverse
 * when some scan runs backwards (a bidirectional layer): such a model
 * reads the whole sequence before its first output, so it has no step. */
static const char *sequence_size(const Graph *g, bool *reverse) {
  const char *seq = NULL;
  bool first = true;
  *reverse = false;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_scan)
      continue;
    Size z = n->attr.steps;
    if (first && z.nt == 1 && z.t[0].nv == 1 && z.t[0].coef == 1)
      seq = g->svars[z.t[0].v[0]];
    first = false;
    *reverse |= n->attr.reverse;
  }
  return seq;
}

/* The sequence's size name as the model file writes it. The signature is
 * lowered with the sizes the model was loaded with (--size T=64 makes T a
 * constant there), so the file is lowered again with none bound. */
static const char *model_sequence_size(KilnModel *m, bool *reverse) {
  if (!m->nsizes)
    return sequence_size(m->sig, reverse);
  FeOptions fo = {.model = m->opt.model};
  Diags scratch;      /* it lowered bound; unbound it is looked at, not reported */
  diag_init(&scratch, m->arena);
  Graph *g = fe_lower(m->ast, &fo, &scratch);
  *reverse = false;
  const char *seq = g && !scratch.nerrors ? sequence_size(g, reverse) : NULL;
  const char *kept = seq ? rt_arena_strdup(m->arena, seq) : NULL;
  ir_graph_free(g);
  return kept;
}

/* A model with no scan, lowered with the sizes it was loaded with, which
 * must fix its first input's sequence axis (dim 1): the window T. */
static KilnStatus lower_window(KilnModel *m, Graph **out, int64_t *window) {
  const Graph *sig = m->sig;
  if (!sig->ninputs || sig->inputs[0]->type.rank < 2 ||
      !sz_is_const(sig->inputs[0]->type.dim[1], window) || *window < 1)
    return kiln__fail(m, KILN_ERR_MODEL, "model '%s' has no scan; it steps as a window over "
                      "its first input's sequence axis (dim 1), whose size must be bound when "
                      "the model is loaded (--size T=...)", sig->name);
  FeOptions fo = {.model = m->opt.model, .sizes = m->sizes, .nsizes = m->nsizes};
  Graph *g = fe_lower(m->ast, &fo, &m->diags);
  if (!g || m->diags.nerrors) {
    ir_graph_free(g);
    return g ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  }
  *out = g;
  return KILN_OK;
}

static bool graph_has_scan(const Graph *g) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_scan)
      return true;
  return false;
}

/* The model lowered with the sequence length 1 (and the sizes it was
 * loaded with), its carries made inputs and outputs. */
static KilnStatus lower_step(KilnModel *m, Graph **out, int *nstate, int64_t *window) {
  bool reverse;
  const char *seq = model_sequence_size(m, &reverse);
  *out = NULL;
  if (!seq && !graph_has_scan(m->sig))
    return lower_window(m, out, window);
  if (!seq)
    return kiln__fail(m, KILN_ERR_MODEL, "model '%s' has no scan over a sequence length that is "
                      "a size name (rnn, lstm, gru or scan over T): it has no step function",
                      m->sig->name);
  if (reverse)
    return kiln__fail(m, KILN_ERR_MODEL, "model '%s' has a scan that runs backwards over %s "
                      "(a bidirectional layer or reverse=true): its outputs need the whole "
                      "sequence, so it has no step function", m->sig->name, seq);
  FeSize *b = rt_arena_alloc(m->arena, (size_t)(m->nsizes + 1) * sizeof *b);
  int nb = 0;
  if (!b)
    return KILN_ERR_NOMEM;
  for (int i = 0; i < m->nsizes; i++)
    if (strcmp(m->sizes[i].name, seq))
      b[nb++] = m->sizes[i];
  b[nb++] = (FeSize){seq, 1};
  FeOptions fo = {.model = m->opt.model, .sizes = b, .nsizes = nb};
  Graph *g = fe_lower(m->ast, &fo, &m->diags);
  if (!g || m->diags.nerrors) {
    ir_graph_free(g);
    return g ? KILN_ERR_MODEL : KILN_ERR_NOMEM;
  }
  *nstate = ir_step_function(g);
  *out = g;
  return KILN_OK;
}

/* A window step's buffers for its outputs at one position. */
static KilnStatus window_outputs(KilnStep *s) {
  s->at_pos = calloc((size_t)s->nout + 1, sizeof *s->at_pos);
  for (int i = 0; s->at_pos && i < s->nout; i++) {
    KilnTensor t;
    int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->outputs[i], s->cc->max_batch, &t);
    if (!(s->at_pos[i] = malloc((size_t)(bytes > 0 ? bytes : 1))))
      return KILN_ERR_NOMEM;
  }
  return s->at_pos ? KILN_OK : KILN_ERR_NOMEM;
}

KilnStatus kiln_step_create(KilnModel *m, int64_t max_batch, KilnStep **out) {
  if (!m || !out || max_batch < 0)
    return KILN_ERR_ARG;
  *out = NULL;
  kiln__reset_errors(m);
  if (!m->sig)
    return kiln__fail(m, KILN_ERR_MODEL, "the model did not load");
  KilnStep *s = calloc(1, sizeof *s);
  if (!s)
    return KILN_ERR_NOMEM;
  *s = (KilnStep){.m = m, .nin = m->sig->ninputs, .nout = m->sig->noutputs,
                  .batch = max_batch ? max_batch : 1};
  Graph *g;
  KilnStatus st = lower_step(m, &g, &s->nstate, &s->window);
  if (st == KILN_OK)
    st = kiln__compile_graph(m, g, kiln__batch_name(m), s->batch, 0, &s->cc);
  if (st == KILN_OK && s->window)
    st = window_outputs(s);
  if (st != KILN_OK) {
    kiln_step_free(s);
    return st;
  }
  kiln_step_reset(s);
  *out = s;
  return KILN_OK;
}

int kiln_step_state_count(const KilnStep *s) { return s ? s->nstate : 0; }


KilnStatus kiln_step_state(KilnStep *s, int i, KilnTensor *state) {
  if (!s || !state || i < 0 || i >= s->nstate)
    return KILN_ERR_ARG;
  kiln__tensor_at(s->cc, s->cc->g->inputs[s->nin + i], s->batch, state);
  return KILN_OK;
}

/* Zeroes the states, or a window step's inputs (the symbols fed). */
void kiln_step_reset(KilnStep *s) {
  int from = s && s->window ? 0 : s ? s->nin : 0, to = s ? s->nin + s->nstate : 0;
  for (int k = from; k < to; k++) {
    KilnTensor t;
    int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->inputs[k], s->cc->max_batch, &t);
    memset(t.data, 0, bytes > 0 ? (size_t)bytes : 0);
  }
  if (s)
    s->pos = 0;
}

/* Position pos of each of the batch's rows: between `full`, a dense
 * [batch, T, ...] tensor of `bytes` bytes, and `one`, [batch, 1, ...]. */
static void window_copy(char *full, char *one, int64_t bytes, int64_t batch, int64_t T,
                        int64_t pos, bool into_full) {
  int64_t row = bytes / batch, part = row / T;
  for (int64_t n = 0; n < batch; n++) {
    char *f = full + n * row + pos * part, *o = one + n * part;
    memcpy(into_full ? f : o, into_full ? o : f, (size_t)part);
  }
}

/* A window step's input i, [batch, 1, ...], written at position pos of the
 * compiled input [batch, T, ...]. */
static KilnStatus window_input(KilnStep *s, int i, const KilnTensor *t, int64_t batch) {
  KilnTensor want;
  int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->inputs[i], batch, &want);
  bool same = bytes >= 0 && t->data && t->dtype == want.dtype && t->rank == want.rank &&
              t->rank >= 2 && t->shape[1] == 1;
  for (int d = 0; same && d < t->rank; d++)
    same = d == 1 || t->shape[d] == want.shape[d];
  if (!same)
    return kiln__fail(s->m, KILN_ERR_INPUT, "step input '%s' must be %s with %lld sequence(s) "
                      "of one position each", want.name, rt_dtype_name((RtDType)want.dtype),
                      (long long)batch);
  window_copy(want.data, t->data, bytes, batch, s->window, s->pos, true);
  return KILN_OK;
}

/* The step input i fed by t: same dtype and rank, dims as compiled with
 * the batch taken from the first input's leading dim (the batch's size). */
static KilnStatus take_input(KilnStep *s, int i, const KilnTensor *t, int64_t batch) {
  KilnTensor want;
  char have[128], need[128];
  int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->inputs[i], batch, &want);
  bool same = bytes >= 0 && t->dtype == want.dtype && t->rank == want.rank && t->data;
  for (int d = 0; same && d < t->rank; d++)
    same = t->shape[d] == want.shape[d];
  if (!same)
    return kiln__fail(s->m, KILN_ERR_INPUT, "step input '%s' is %s %s, the step takes %s %s "
                      "(the sequence length is 1, the batch at most %lld)", want.name,
                      rt_dtype_name((RtDType)t->dtype), rt_shape_str(t->rank, t->shape, have, sizeof have),
                      rt_dtype_name((RtDType)want.dtype),
                      rt_shape_str(want.rank, want.shape, need, sizeof need),
                      (long long)s->cc->max_batch);
  memcpy(want.data, t->data, (size_t)bytes);
  return KILN_OK;
}

/* The input given for step input i: by name, else by position. */
static const KilnTensor *given(const KilnStep *s, const KilnTensor *in, int n, int i) {
  const char *name = s->cc->g->inputs[i]->name;
  for (int j = 0; j < n; j++)
    if (in[j].name && !strcmp(in[j].name, name))
      return &in[j];
  return i < n && !in[i].name ? &in[i] : NULL;
}

static KilnStatus feed(KilnStep *s, const KilnTensor *in, int n, int64_t *batch) {
  const Graph *g = s->cc->g;
  if (n != s->nin)
    return kiln__fail(s->m, KILN_ERR_INPUT, "the step takes the model's %d input(s), got %d",
                      s->nin, n);
  const KilnTensor *first = given(s, in, n, 0);
  bool batched = g->batch_var >= 0;
  *batch = batched && first && first->rank > 0 ? first->shape[0] : s->cc->max_batch;
  if (batched && (*batch < 1 || *batch > s->cc->max_batch))
    return kiln__fail(s->m, KILN_ERR_INPUT, "a step of %lld sequences; the step was made for at "
                      "most %lld (kiln_step_create)", (long long)*batch,
                      (long long)s->cc->max_batch);
  for (int i = 0; i < s->nin; i++) {
    const KilnTensor *t = given(s, in, n, i);
    if (!t)
      return kiln__fail(s->m, KILN_ERR_INPUT, "no step input named '%s' was given",
                        g->inputs[i]->name);
    KilnStatus st = s->window ? window_input(s, i, t, *batch) : take_input(s, i, t, *batch);
    if (st != KILN_OK)
      return st;
  }
  return KILN_OK;
}

/* A window step's outputs at the position just written; an output without
 * the sequence axis as it is. */
static void window_results(KilnStep *s, int64_t batch, KilnTensor *outputs, int noutputs) {
  for (int i = 0; i < noutputs; i++) {
    KilnTensor *t = &outputs[i];
    int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->outputs[i], batch, t);
    t->name = s->m->sig->outputs[i]->name;
    if (t->rank < 2 || t->shape[1] != s->window)
      continue;
    window_copy(t->data, s->at_pos[i], bytes, batch, s->window, s->pos, false);
    t->shape[1] = 1;
    t->data = s->at_pos[i];
  }
}

KilnStatus kiln_step_run(KilnStep *s, const KilnTensor *inputs, int ninputs, KilnTensor *outputs,
                         int noutputs) {
  if (!s || (ninputs && !inputs) || (noutputs && !outputs) || noutputs < 0)
    return KILN_ERR_ARG;
  kiln__reset_errors(s->m);
  if (noutputs > s->nout)
    return kiln__fail(s->m, KILN_ERR_ARG, "the model has %d output(s), %d asked", s->nout,
                      noutputs);
  if (s->window && s->pos >= s->window)
    return kiln__fail(s->m, KILN_ERR_INPUT, "the window of %lld positions is full; "
                      "kiln_step_reset starts a new sequence", (long long)s->window);
  int64_t batch = 0;
  KilnStatus st = feed(s, inputs, ninputs, &batch);
  if (st != KILN_OK)
    return st;
  kiln__call(s->m, s->cc, batch);
  s->batch = batch;
  if (s->window) {
    window_results(s, batch, outputs, noutputs);
    s->pos++;
    return KILN_OK;
  }
  for (int k = 0; k < s->nstate; k++) {   /* the carries move on */
    KilnTensor next, cur;
    int64_t bytes = kiln__tensor_at(s->cc, s->cc->g->outputs[s->nout + k], batch, &next);
    kiln__tensor_at(s->cc, s->cc->g->inputs[s->nin + k], batch, &cur);
    memmove(cur.data, next.data, (size_t)bytes);
  }
  for (int i = 0; i < noutputs; i++) {
    kiln__tensor_at(s->cc, s->cc->g->outputs[i], batch, &outputs[i]);
    outputs[i].name = s->m->sig->outputs[i]->name;
  }
  return KILN_OK;
}

void kiln_step_free(KilnStep *s) {
  if (!s)
    return;
  if (s->m->newest == s->cc)
    s->m->newest = NULL;
  kiln__free_compiled(s->cc);
  for (int i = 0; s->at_pos && i < s->nout; i++)
    free(s->at_pos[i]);
  free(s->at_pos);
  free(s);
}

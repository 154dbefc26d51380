/* Winograd convolutions: a blocked 3x3 convolution at
 * stride 1 and dilation 1 (conv2d_nchwc, f32, as many input lanes as
 * output lanes) becomes conv2d_winograd of its weight transformed, U =
 * G g G^T per channel pair (winograd_filter, ops.def): F(2x2, 3x3) does
 * 16 multiplies per 2x2 output tile and channel pair where the direct
 * convolution does 36 (codegen/conv_winograd.c's head comment).
 *
 * An inference graph's blocked weights are constants (passes/layout.c
 * converts them), so U is folded now with pass_derived_const, as prepack
 * folds panels; a weight not known now gets a winograd_filter node, run
 * with the model, placed before its first reader. One U per weight. In a
 * training step every U is computed with the step (the weights change):
 * the forward convolutions and, at stride 1, those that give dx (a
 * conv2d_nchwc on the flipped weight) run as Winograd's; the filter
 * gradient stays direct.
 *
 * When it pays: always, on the shapes measured (bench/NOTES.md,
 * 2026-11-26: 4, 8, 16, 32 and 64 channels at 32x32, 1.4-2x less CPU
 * time per convolution than conv2d_nchwc): the blocked layout pads the
 * channels to whole blocks, so even 4 channels do a block's products.
 * The kernel reads the whole U once per group of tiles, and keeps V (16 C
 * x 6 tiles) on its stack: U is bounded to stay in L2 and C to keep V
 * under 100 KiB; larger layers keep the direct convolution, unmeasured.
 * PassCtx.no_winograd keeps the direct kernel (the kiln command sets it
 * from KILN_WINOGRAD=off, docs/cli.md).
 *
 * Rounding: the transforms add and subtract before the products; the
 * outputs differ from the direct convolution's by a few ulps of the
 * largest terms (bench/NOTES.md has the measured error). */
#include "passes/passes.h"
#include <stdlib.h>
#include <string.h>

enum {
  MAX_CHANNELS = 256,              /* V: 16 C 6 floats on the stack */
  MAX_U_BYTES = 256 * 1024,        /* half the L2 of a Zen 3 core */
};

static bool is_3x3_unit(const Attr *a) {
  return a->k[0] == 3 && a->k[1] == 3 && a->stride[0] == 1 && a->stride[1] == 1 && a->dil[0] == 1 &&
         a->dil[1] == 1 && a->groups == 1;
}

/* n is a blocked convolution conv2d_winograd can run. */
static bool fits(const Graph *g, const Node *n) {
  if (n->op != OP_conv2d_nchwc || !is_3x3_unit(&n->attr) || n->out[0]->type.dt != RT_F32)
    return false;
  const Type *x = &n->in[0]->type, *w = &n->in[1]->type, *y = &n->out[0]->type;
  int64_t bi, b, cb, ob, ext;
  if (!sz_is_const(w->dim[4], &bi) || !sz_is_const(w->dim[5], &b) || bi != b ||
      !sz_is_const(w->dim[1], &cb) || !sz_is_const(w->dim[0], &ob))
    return false;
  for (int i = 2; i < 4; i++)   /* the kernel plans its tiles at compile time */
    if (!sz_eval(x->dim[i], g->svals, &ext) || !sz_eval(y->dim[i], g->svals, &ext))
      return false;
  int64_t C = cb * b, O = ob * b;
  return C <= MAX_CHANNELS && 16 * C * O * 4 <= MAX_U_BYTES;
}

/* G g of three taps (the order codegen/conv_winograd.c's filter_1d
 * follows, so a folded U has the bits of one computed at run time) */
static void filter_1d(const float *g, int gs, float *u, int us) {
  float s = g[0] + g[2 * gs];
  u[0] = g[0];
  u[us] = (s + g[gs]) * 0.5f;
  u[2 * us] = (s - g[gs]) * 0.5f;
  u[3 * us] = g[2 * gs];
}

/* winograd_filter (ops.def) of the blocked weight src [ob, cb, 3, 3, b, b] */
static void lay_filter(char *dst, const char *src, size_t sz, const void *user) {
  const int64_t *d = user, units = d[0] * d[1], b = d[2];
  const float *w = (const float *)src;
  float *u = (float *)dst;
  (void)sz;
  for (int64_t p = 0; p < units; p++)
    for (int64_t l = 0; l < b; l++)
      for (int64_t o = 0; o < b; o++) {
        float g[9], t[12], uu[16];
        for (int ij = 0; ij < 9; ij++)
          g[ij] = w[((p * 9 + ij) * b + l) * b + o];
        for (int i = 0; i < 3; i++)
          filter_1d(&g[3 * i], 1, &t[4 * i], 1);
        for (int v = 0; v < 4; v++)
          filter_1d(&t[v], 4, &uu[v], 4);
        for (int xi = 0; xi < 16; xi++)
          u[((xi * units + p) * b + l) * b + o] = uu[xi];
      }
}

/* Moves the node just appended (the last) to position i. */
static void move_last_to(Graph *g, int i) {
  Node *last = g->nodes[g->nnodes - 1];
  memmove(&g->nodes[i + 1], &g->nodes[i], sizeof(Node *) * (size_t)(g->nnodes - 1 - i));
  g->nodes[i] = last;
  for (int j = i; j < g->nnodes; j++)
    g->nodes[j]->id = j;
}

/* U of node i's weight: a constant if the weight is known now, else a
 * winograd_filter node placed before node i. */
static Value *transformed(Graph *g, PassCtx *cx, int i) {
  const Node *n = g->nodes[i];
  const Type *w = &n->in[1]->type;
  int64_t d[3];
  sz_is_const(w->dim[0], &d[0]);
  sz_is_const(w->dim[1], &d[1]);
  sz_is_const(w->dim[4], &d[2]);
  Size dims[5] = {sz_const(16), w->dim[0], w->dim[1], w->dim[4], w->dim[5]};
  Value *u = pass_derived_const(g, cx, n->in[1], ir_type(RT_F32, 5, dims), lay_filter, d);
  if (u)
    return u;
  Attr none = ir_attr();
  u = ir_op(g, OP_winograd_filter, &n->in[1], 1, &none, n->loc);
  move_last_to(g, i);
  return u;
}

bool pass_winograd(Graph *g, PassCtx *cx, PassStats *st) {
  if (cx->no_winograd)
    return false;
  PassCtx tcx = *cx;
  if (g->training || g->loss)
    tcx.param_data = NULL;   /* parameters change every step: U is computed with the step */
  cx = &tcx;
  int nvals = g->nvals, changed = 0;
  Value **u = calloc(nvals ? nvals : 1, sizeof *u);   /* [weight's id]: its U */
  if (!u)
    return false;
  st->bytes_before = pass_temp_bytes(g);
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (!fits(g, n) || n->in[1]->id >= nvals)
      continue;
    int id = n->in[1]->id;
    if (!u[id]) {
      int before = g->nnodes;
      u[id] = transformed(g, cx, i);
      i += g->nnodes - before;   /* n moved past the filter node */
    }
    n->op = OP_conv2d_winograd;
    n->in[1] = u[id];
    ir_infer(g, n);
    changed++;
  }
  free(u);
  return pass_derived_done(g, st, changed);
}

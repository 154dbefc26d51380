/* The pipeline: passes of one signature, in the order they run. -O0 runs
 * what correctness needs (autodiff and the optimizer when training, memory
 * planning); -O1 adds simplify, -O2 batchnorm folding, the weights of
 * inference stored transposed and prepacked for the GEMM, layout selection,
 * Winograd convolutions and fusion, -O3 everything.
 * simplify runs twice: on the forward graph (so autodiff differentiates a
 * clean one) and on the whole step. Before each pass the pipeline checks
 * what it needs (Pass.needs); after it: the verifier (when asked),
 * --print-after, and a --stats line; a pass that reports an error (to
 * g->diags) stops the pipeline. */
#include "passes/passes.h"
#include <string.h>

static const Pass pipeline[] = {
    {"simplify", pass_simplify, 1},
    {"fold-bn", pass_fold_bn, 2, PASS_USES | PASS_INFERENCE},
    {"pretranspose", pass_pretranspose, 2, PASS_USES | PASS_INFERENCE},
    {"prepack", pass_prepack, 2, PASS_USES | PASS_INFERENCE},
    {"autodiff", pass_autodiff, 0},
    {"optimizer", pass_optimizer, 0},
    {"simplify", pass_simplify, 1},
    {"layout", pass_layout, 2, PASS_USES},
    {"winograd", pass_winograd, 2, PASS_USES},
    {"fusion", pass_fusion, 2},
    {"memplan", pass_memplan, 0},
};
enum { NPASSES = sizeof pipeline / sizeof pipeline[0] };

const Pass *pass_find(const char *name) {
  for (int i = 0; i < NPASSES; i++)
    if (!strcmp(pipeline[i].name, name))
      return &pipeline[i];
  return NULL;
}

/* A kernel is a generated function: one per node, or per fused group. */
int pass_count_kernels(const Graph *g) {
  int k = 0, last_group = -1;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op == OP_reshape && n->out[0]->alias)
      continue;
    if (n->group >= 0 && n->group == last_group)
      continue;
    last_group = n->group;
    k++;
  }
  return k;
}

int64_t pass_temp_bytes(const Graph *g) {
  int64_t total = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    for (int j = 0; j < n->nout && n->op != OP_reshape; j++) {
      int64_t b = ir_bytes_max(g, &n->out[j]->type);
      total += b > 0 ? (b + 63) / 64 * 64 : 0;
    }
  }
  return total;
}

/* Whether the graph and the context give the pass what it needs. */
static bool can_run(const Pass *p, Graph *g, const PassCtx *cx) {
  if ((p->needs & PASS_INFERENCE) && (g->training || g->loss))
    return false;
  if (p->needs & PASS_USES)
    ir_count_uses(g);
  return true;
}

static void print_stats(const PassCtx *cx, const char *name, const PassStats *s, bool changed) {
  FILE *f = cx->stats_out;
  if (cx->stats_json)
    fprintf(f,
            "{\"pass\": \"%s\", \"changed\": %s, \"nodes_before\": %d, \"nodes_after\": %d, "
            "\"kernels_before\": %d, \"kernels_after\": %d, \"bytes_before\": %lld, "
            "\"bytes_after\": %lld}\n",
            name, changed ? "true" : "false", s->nodes_before, s->nodes_after,
            s->kernels_before, s->kernels_after, (long long)s->bytes_before,
            (long long)s->bytes_after);
  else
    fprintf(f, "%-12s nodes %4d -> %-4d kernels %4d -> %-4d scratch bytes %lld -> %lld\n", name,
            s->nodes_before, s->nodes_after, s->kernels_before, s->kernels_after,
            (long long)s->bytes_before, (long long)s->bytes_after);
}

/* A pass runs on the bodies of scans (ir/scan.c) before the graph that
 * holds them: memplan sizes a scan's workspace from its planned body. */
static bool run_with_bodies(const Pass *p, Graph *g, PassCtx *cx, PassStats *st) {
  bool changed = false;
  ir_sync_bodies(g);
  for (int i = 0; i < g->nnodes; i++) {
    Graph *b = g->nodes[i]->body;
    PassStats bs = {0};
    if (b && can_run(p, b, cx))
      changed |= run_with_bodies(p, b, cx, &bs);
  }
  if (p->needs & PASS_USES)
    ir_count_uses(g);
  return p->run(g, cx, st) || changed;
}

int pass_run_pipeline(Graph *g, PassCtx *cx) {
  for (int i = 0; i < NPASSES; i++) {
    const Pass *p = &pipeline[i];
    if (cx->opt < p->min_opt || !can_run(p, g, cx))
      continue;
    PassStats st = {.nodes_before = g->nnodes, .kernels_before = pass_count_kernels(g),
                    .bytes_before = -1, .bytes_after = -1};
    int errors = g->diags ? g->diags->nerrors : 0;
    bool changed = run_with_bodies(p, g, cx, &st);
    if (g->diags && g->diags->nerrors > errors)
      return -1;                      /* the pass said why */
    st.nodes_after = g->nnodes;
    st.kernels_after = pass_count_kernels(g);
    if (cx->verify && ir_verify(g) > 0)
      return -1;
    if (cx->print_after && cx->print_out &&
        (!strcmp(cx->print_after, p->name) || !strcmp(cx->print_after, "all"))) {
      fprintf(cx->print_out, "; after %s\n", p->name);
      ir_print(g, cx->print_out);
    }
    if (cx->stats_out)
      print_stats(cx, p->name, &st, changed);
  }
  return 0;
}

/* passes: functions over the graph, run from one list (pipeline.c). Every
 * pass has the same signature, says whether it changed the graph, and fills
 * statistics; the verifier runs after each in debug builds and tests. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir/ir.h"

typedef struct PassStats {
  int nodes_before, nodes_after;
  int kernels_before, kernels_after;
  int64_t bytes_before, bytes_after;   /* scratch: sum of intermediates, then the plan */
} PassStats;

typedef struct PassCtx {
  int opt;                /* -O level, 0..3 */
  int threads;            /* the most threads the compiled code may use */
  bool verify;            /* run ir_verify after every pass */
  const char *print_after;/* pass name, or "all": print the IR after it */
  FILE *print_out;
  FILE *stats_out;        /* --stats: one line per pass */
  bool stats_json;
  /* scratch a node's kernel needs (codegen's answer, handed in by the driver
   * so that passes do not reach into a later stage) */
  int64_t (*work_bytes)(const Graph *g, const Node *n, int threads);
} PassCtx;

typedef struct Pass {
  const char *name;
  bool (*run)(Graph *g, PassCtx *cx, PassStats *st);
  int min_opt;            /* runs at this -O level and above */
} Pass;

/* pipeline.c */
/* 0, or -1 when a pass reported an error or the verifier failed (both in g->diags) */
int pass_run_pipeline(Graph *g, PassCtx *cx);
const Pass *pass_find(const char *name);
int pass_count_kernels(const Graph *g);

/* autodiff.c: reverse-mode differentiation, first in the pipeline.
 *
 * pass_autodiff(g): if g->loss is set (a scalar f32 or f64 value), appends
 * the nodes computing d(loss)/d(v) for every value v with v->wrt set and
 * v->frozen clear, and sets v->grad. The contract:
 *   - v->grad has v's type and is a temporary of its own: defined by a
 *     node, not a view (reshape), not shared with another value's
 *     gradient. memplan places the gradients of parameters (g->params) in
 *     REGION_GRADS, contiguously; any other value's gradient is an
 *     ordinary temporary: make it an output (ir_output) to read it.
 *   - a wanted value the loss does not depend on gets zeros; a frozen
 *     parameter gets none (grad stays NULL), even if marked wrt.
 *   - only floating-point values carry gradients: a path through integers
 *     (a cast to i32, onehot's labels) contributes nothing.
 *   - uses of one value add their gradients in a fixed order (reverse node
 *     order, then input position), so the step is deterministic.
 *   - reaching an op whose rule is 0 (ops.def) on a path from a wanted value
 *     to the loss, a non-scalar loss, or an integer value marked wrt is an
 *     error in g->diags at its location; the pipeline then stops.
 * It runs once: a graph where a wanted value has a gradient already is left
 * alone. Whoever builds the training graph marks the trainable parameters
 * (and, e.g., the image of a style transfer) wrt and sets g->loss. */
bool pass_autodiff(Graph *g, PassCtx *cx, PassStats *st);

/* grad.c: the rules of ops.def's grad column. A rule adds to the graph the
 * gradient with respect to each input i of n for which need[i], given dy,
 * the gradient with respect to n's output, built with the ir_ builders at
 * loc; it leaves it in dx[i] with input i's type (NULL: zero). */
typedef struct Grad {
  Graph *g;
  SrcLoc loc;             /* the forward node's: diagnostics and the dump point back to it */
  const bool *need;       /* [n->nin] */
} Grad;
typedef void (*GradRule)(Grad *d, const Node *n, Value *dy, Value **dx);
extern const GradRule pass_grad_rules[OP_COUNT];   /* NULL: no gradient */

/* optim.c: the optimizer update after autodiff (g->opt, g->lr); PyTorch's formulas */
bool pass_optimizer(Graph *g, PassCtx *cx, PassStats *st);

/* memplan.c */
bool pass_memplan(Graph *g, PassCtx *cx, PassStats *st);
void pass_print_memplan(const Graph *g, FILE *out);

#endif

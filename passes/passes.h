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

/* The layout pass's choice for the convolutions' regions: its cost
 * model's, or one forced (tests, calibration of the cost constants). */
typedef enum { LAYOUT_COST, LAYOUT_NCHW, LAYOUT_BLOCKED, LAYOUT_NHWC } PassLayout;

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
  /* the data of parameter or state p (C order, p's dtype and bound shape),
   * or NULL if unknown: the weights the compiled code will run with, which
   * passes may fold into constants (fold-bn). The driver's, like
   * work_bytes; param_user is its own pointer. */
  const void *(*param_data)(const Graph *g, const Value *p, void *param_user);
  void *param_user;
  /* the panels a GEMM of M rows reads a prepacked op(B) [K, N] from: nr
   * columns each, K in blocks of kc; false if it would not run as a GEMM
   * (codegen's answer, cg_gemm_panels, handed in like work_bytes) */
  bool (*gemm_panels)(RtDType dt, int lanes, int64_t M, int64_t K, int64_t *nr, int64_t *kc);
  int lanes;              /* f32 lanes of the target's vectors (8 AVX2, 16 AVX-512), the
                             block of the layout pass; 0: it keeps NCHW */
  PassLayout layout;      /* LAYOUT_COST unless a test forces one */
  bool no_winograd;       /* the winograd pass stays off (A/B runs, tests of the direct kernel) */
} PassCtx;

/* What a pass needs; the pipeline checks it before running the pass. */
enum {
  PASS_USES = 1 << 0,       /* Value.nuse counted (the pipeline recounts) */
  PASS_INFERENCE = 1 << 1,  /* an inference graph: skipped when training or with a loss */
};

typedef struct Pass {
  const char *name;
  bool (*run)(Graph *g, PassCtx *cx, PassStats *st);
  int min_opt;            /* runs at this -O level and above */
  int needs;              /* PASS_* */
} Pass;

/* pipeline.c */
/* 0, or -1 when a pass reported an error or the verifier failed (both in g->diags) */
int pass_run_pipeline(Graph *g, PassCtx *cx);
const Pass *pass_find(const char *name);
int pass_count_kernels(const Graph *g);
/* Bytes of every intermediate (temporary that is not a reshape), 64-byte
 * aligned, at the maximum batch: a pass's scratch demand before memplan. */
int64_t pass_temp_bytes(const Graph *g);

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
int pass_autodiff_seeded(Graph *g, Value **ys, Value **dys, int ny, Value **xs, int nx,
                         Value **dxs);

/* grad.c: the rules of ops.def's grad column. A rule adds to the graph the
 * gradient with respect to each input i of n for which need[i], given dy,
 * the gradient with respect to n's output, built with the ir_ builders at
 * loc; it leaves it in dx[i] with input i's type (NULL: zero). */
typedef struct Grad {
  Graph *g;
  SrcLoc loc;             /* the forward node's: diagnostics and the dump point back to it */
  const bool *need;       /* [n->nin] */
  Value **dys;            /* [n->nout] the gradient of each output, or NULL (multi-output ops: scan) */
} Grad;
typedef void (*GradRule)(Grad *d, const Node *n, Value *dy, Value **dx);
extern const GradRule pass_grad_rules[OP_COUNT];   /* NULL: no gradient */

/* scan_grad.c: scan's gradient rule, a reverse scan (its head comment) */
void pass_grad_scan(Grad *d, const Node *n, Value *dy, Value **dx);

/* optim.c: the optimizer update after autodiff (g->opt, g->lr); PyTorch's formulas */
bool pass_optimizer(Graph *g, PassCtx *cx, PassStats *st);

/* simplify.c: constant folding (elementwise, broadcast, movement and
 * reduction ops whose inputs are all constants, evaluated at compile time),
 * algebraic identities (x*1, x+0, x-0, x/1, neg(neg(x)), transposes that
 * cancel or compose, reshape chains, reshapes, casts and expands that change
 * nothing, a transpose of the last two axes into matmul's trans_a/trans_b,
 * dropout with p = 0), common subexpressions (same op, inputs, attributes;
 * equal constants become one) and dead code (ir_remove_dead; an inference
 * graph also drops the parameters nothing uses). Outputs, the loss, update
 * values and gradients keep their identity. Runs to a fixed point. */
bool pass_simplify(Graph *g, PassCtx *cx, PassStats *st);
/* The element i of data of dtype dt as a double, and back: pass_store
 * returns false (and stores nothing) for an integer that dt cannot hold. */
double pass_load(const void *data, RtDType dt, int64_t i);
bool pass_store(void *data, RtDType dt, int64_t i, double x);

/* fold_bn.c: for inference, a conv2d or a dense matmul (weight [out, in] or
 * [in, out]) whose weight data is known (cx->param_data, or a constant),
 * followed by a chain of per-output-channel affine ops with known operands
 * (the bias add, batchnorm on the channel axis, add, sub, mul, div by
 * per-channel or scalar constants), becomes the contraction with new
 * constant weights W * s and one add of a constant bias t:
 *   batchnorm: s = gamma / sqrt(var + eps), t = (b - mean) * s + beta.
 * Only single-use links fold; the last op of the chain keeps its output
 * value (it becomes the add), so outputs and names stay. A fold that read
 * weights sets g->weights_baked: the compiled code holds their values. */
bool pass_fold_bn(Graph *g, PassCtx *cx, PassStats *st);

/* fusion.c: which nodes share a kernel. Chains of EXPR nodes (ops.def's
 * lower column) of one output shape, each reading the values computed
 * inside the group at their own index, become one loop; EXPR nodes of a
 * matmul's or conv2d's output type (bias, activation, residual add, an
 * inference batchnorm) become the epilogue of its GEMM, their other
 * operands read per row, per column or whole in the GEMM's view of the
 * output; EXPR nodes computing a reduction's input run in its loop. The
 * groups stay schedulable and the nodes are reordered so each group's
 * members are adjacent; Node.group numbers the groups of two or more
 * nodes (others -1), and pass_count_kernels counts a group once. A member
 * read outside its group, or an output, the loss, an update or a gradient,
 * is stored; the other members live in registers only.
 * PASS_FUSE_MAX_OPERANDS bounds the tensors a group loads and stores,
 * PASS_FUSE_MAX_NODES its members (codegen sizes its tables by them). */
#define PASS_FUSE_MAX_OPERANDS 16
#define PASS_FUSE_MAX_NODES 32
bool pass_fusion(Graph *g, PassCtx *cx, PassStats *st);
/* By value id (malloc'd, the caller frees; NULL if out of memory): true for
 * a value that lives only inside its fused group, which needs no memory. */
bool *pass_fused_internal(const Graph *g);

/* layout.c: for inference, regions of convolutions in NCHW or blocked
 * NCHW{cx->lanes}c by a cost model (its head comment) */
bool pass_layout(Graph *g, PassCtx *cx, PassStats *st);

/* pretranspose.c: for inference, a matmul x W^T whose W's data is known
 * reads a constant W^T instead (its head comment says why), */
bool pass_pretranspose(Graph *g, PassCtx *cx, PassStats *st);
/* and the data of v known when the model compiles: a constant, a
 * parameter or state through cx->param_data (then *param = true), or a
 * reshape of one (same order); NULL if unknown. */
const void *pass_known_data(Graph *g, PassCtx *cx, const Value *v, bool *param);
/* A new constant of type t that lay writes (into zeroed memory) from the
 * data of w, known now (pass_known_data); NULL when it is not. Baking a
 * parameter's data marks g->weights_baked. */
typedef void (*PassLay)(char *dst, const char *src, size_t sz, const void *user);
Value *pass_derived_const(Graph *g, PassCtx *cx, const Value *w, Type t, PassLay lay, const void *user);
/* The end of a pass that swapped readers over to derived constants:
 * what they replaced is dropped (if any was) and st's bytes updated. */
bool pass_derived_done(Graph *g, PassStats *st, int changed);

/* prepack.c: for inference, a matmul whose B's data is known reads B
 * packed into the GEMM's panels at compile time (its head comment) */
bool pass_prepack(Graph *g, PassCtx *cx, PassStats *st);

/* winograd.c: for inference, a blocked 3x3 convolution at stride 1 runs
 * as Winograd F(2x2, 3x3), its weight transformed at compile time when
 * known (its head comment); not with cx->no_winograd. */
bool pass_winograd(Graph *g, PassCtx *cx, PassStats *st);

/* memplan.c */
bool pass_memplan(Graph *g, PassCtx *cx, PassStats *st);
void pass_print_memplan(const Graph *g, FILE *out);

#endif

/* The graph IR: typed SSA values and the nodes (ops) that define them.
 *
 * A Graph owns everything in one arena and is freed in one call. Values carry
 * a dtype and a shape whose dims are size expressions (ir/size.c): affine
 * polynomials over named sizes like N and T, so a model can be checked before
 * any size is bound. Roles are explicit: input, parameter (trainable),
 * state (running statistics, optimizer moments), constant, or a temporary
 * defined by a node. Nodes are kept in a valid topological order.
 *
 * Every op is a row of ir/ops.def; the enum, names and shape rules here are
 * expansions of it. Shape inference runs when a node is built, so the
 * frontend reports a shape error at the layer that caused it. */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "runtime/rt.h"
#include "ir/diag.h"

typedef struct Graph Graph;
typedef struct Node Node;
typedef struct Value Value;

/* ---- size.c: size expressions ------------------------------------------ */

/* A dim is a polynomial with integer coefficients over size variables: the
 * sum of up to SZ_TERMS terms coef * v[0] * ... * v[nv-1]. Enough for 4*H,
 * N*T and C*H*W; anything else (H/3 with H unknown) is an error at the op
 * that made it. `bad` marks such an unrepresentable or overflowing result. */
#define SZ_TERMS 4
#define SZ_VARS 3
typedef struct SzTerm {
  int64_t coef;
  uint8_t nv;            /* number of variables: 0 for the constant term */
  uint8_t v[SZ_VARS];    /* variable ids (Graph.svars), sorted */
} SzTerm;

typedef struct Size {
  uint8_t nt;            /* terms; 0 means the constant 0 */
  bool bad;
  SzTerm t[SZ_TERMS];
} Size;

Size sz_const(int64_t n);
Size sz_var(int id);
Size sz_add(Size a, Size b);
Size sz_sub(Size a, Size b);
Size sz_mul(Size a, Size b);
Size sz_div(Size a, Size b);         /* exact, or floor of constants; else bad */
Size sz_floordiv_const(Size a, int64_t d); /* floor for constants, exact for symbols */
bool sz_eq(Size a, Size b);
bool sz_is_const(Size a, int64_t *n);
bool sz_has_var(Size a, int var);
/* Value with variables bound (vals[id], -1 = unbound): false if unbound/overflow. */
bool sz_eval(Size a, const int64_t *vals, int64_t *out);
/* Substitute bound variables (vals[id] >= 0) by their value. */
Size sz_bind(Size a, const int64_t *vals);
int sz_print(char *buf, int len, Size a, const char *const *names);

/* ---- types ---------------------------------------------------------- */

#define IR_MAX_RANK RT_MAX_RANK
typedef struct Type {
  RtDType dt;
  int rank;              /* -1: unknown (after an error; suppresses cascades) */
  Size dim[IR_MAX_RANK];
} Type;

Type ir_type(RtDType dt, int rank, const Size *dims);
Type ir_type_const(RtDType dt, int rank, const int64_t *dims);
Type ir_type_unknown(void);
bool ir_type_eq(const Type *a, const Type *b);
bool ir_dims_eq(const Type *a, const Type *b);   /* the same shape, any dtype */
bool ir_type_known(const Type *t);
bool ir_is_float(RtDType dt);
/* "f32[N, 16, 8, 8]" into buf, with the graph's size names. */
const char *ir_type_str(const Graph *g, const Type *t, char *buf, int len);

/* ---- ops: expansions of ops.def ---------------------------------------- */

typedef enum {
#define OP(name, nin, cat, attrs, shape, grad, lower) OP_##name,
#include "ir/ops.def"
#undef OP
  OP_COUNT
} Op;

typedef enum {
  CAT_ELEMWISE = 1 << 0,   /* one input, same index */
  CAT_BCAST = 1 << 1,      /* several inputs broadcast to the output */
  CAT_REDUCE = 1 << 2,     /* sum/mean/max/min over axes */
  CAT_CONTRACT = 1 << 3,   /* matmul, conv: the GEMM template */
  CAT_WINDOW = 1 << 4,     /* pooling */
  CAT_MOVE = 1 << 5,       /* reshape, transpose, slicing */
  CAT_NORM = 1 << 6,       /* row-wise composites: softmax family */
  CAT_CONTROL = 1 << 7,    /* scan: a loop over a body subgraph (Node.body) */
} OpCat;

/* Attribute fields an op uses (ops.def "attrs" column). */
enum {
  A_AXIS = 1 << 0, A_AXES = 1 << 1, A_KEEPDIM = 1 << 2, A_EPS = 1 << 3,
  A_PERM = 1 << 4, A_SHAPE = 1 << 5, A_TRANS = 1 << 6, A_WINDOW = 1 << 7,
  A_GROUPS = 1 << 8, A_CEIL = 1 << 9, A_INCPAD = 1 << 10, A_DTYPE = 1 << 11,
  A_ALPHA = 1 << 12, A_CLASSES = 1 << 13, A_STREAM = 1 << 14,
  A_SLICE = 1 << 15,
  A_SCAN = 1 << 16,
};

typedef struct OpInfo {
  const char *name;
  int nin;               /* -1: variadic */
  int cat;               /* OpCat */
  int attrs;             /* A_* */
  int (*shape)(Graph *g, Node *n);   /* sets n->out[*]->type, 0 or -1 with a diagnostic */
} OpInfo;

extern const OpInfo ir_ops[OP_COUNT];
static inline bool op_is(Op op, int cats) { return (ir_ops[op].cat & cats) != 0; }
static inline const char *op_name(Op op) { return ir_ops[op].name; }

/* ---- attributes: one plain struct, each op reads the fields its row names */

typedef struct Attr {
  int axis;                    /* A_AXIS: softmax axis, batchnorm channel axis */
  uint32_t axes;               /* A_AXES: bit i set = reduce over axis i */
  bool keepdim;                /* A_KEEPDIM */
  double eps;                  /* A_EPS */
  double alpha;                /* A_ALPHA: leaky slope and the like */
  int perm[IR_MAX_RANK];       /* A_PERM: out axis i = in axis perm[i] */
  int rank;                    /* A_SHAPE: target rank */
  Size shape[IR_MAX_RANK];     /* A_SHAPE: target dims */
  bool trans_a, trans_b;       /* A_TRANS */
  int64_t packed_n;            /* A_TRANS: matmul whose B is pack_b's panels: op(B)'s N (0: a plain B) */
  int k[2], stride[2], dil[2]; /* A_WINDOW: kernel, stride, dilation (h, w) */
  int pad[4];                  /* A_WINDOW: top, left, bottom, right */
  int groups;                  /* A_GROUPS */
  bool ceil_mode;              /* A_CEIL */
  bool count_include_pad;      /* A_INCPAD */
  RtDType dtype;               /* A_DTYPE: cast target, onehot's element type */
  int classes;                 /* A_CLASSES: onehot's last dim */
  uint32_t stream;             /* A_STREAM: dropout's Philox stream, one per layer */
  int64_t start[IR_MAX_RANK];  /* A_SLICE: per axis, slice: the input index of output 0;
                                  unslice: the output index input 0 goes to */
  int64_t step[IR_MAX_RANK];   /* A_SLICE: per axis, the stride of the walk (may be negative) */
  int nseq, ncarry;            /* A_SCAN: scanned inputs, carries (ir/scan.c) */
  bool reverse;                /* A_SCAN: steps run from the last to the first */
  Size steps;                  /* A_SCAN: the sequence length */
} Attr;

/* ---- values, nodes, graphs ------------------------------------------- */

typedef enum {
  V_TEMP,     /* defined by a node */
  V_INPUT,    /* fed by the caller */
  V_PARAM,    /* trainable weight */
  V_STATE,    /* non-trainable persistent: running stats, moments, counters */
  V_CONST,    /* data known at compile time */
} Role;

typedef enum {
  INIT_NONE, INIT_ZEROS, INIT_ONES, INIT_CONST, INIT_UNIFORM, INIT_NORMAL,
  INIT_HE_UNIFORM, INIT_HE_NORMAL, INIT_XAVIER_UNIFORM, INIT_XAVIER_NORMAL,
  INIT_ORTHOGONAL,
} InitKind;

/* How a parameter or state starts, as in torch.nn.init. UNIFORM: bounds a
 * and b; NORMAL: mean a and std b; CONST: a. HE_* and XAVIER_* use the fans
 * and the gain a, where 0 means the default: sqrt(2) for He (ReLU), 1 for
 * Xavier. HE_NORMAL: std = gain / sqrt(fan_in); HE_UNIFORM: bound
 * gain * sqrt(3 / fan_in); XAVIER_NORMAL: std gain * sqrt(2 / (fan_in +
 * fan_out)); XAVIER_UNIFORM: bound gain * sqrt(6 / (fan_in + fan_out)).
 * ORTHOGONAL: gain a (0: 1) times an orthogonal matrix over the first axis. */
typedef struct Init {
  InitKind kind;
  double a, b;
  int64_t fan_in, fan_out;
} Init;

struct Value {
  int id;
  Type type;
  Role role;
  bool is_output;        /* also in Graph.outputs */
  bool frozen;           /* V_PARAM excluded from training */
  const char *name;      /* inputs, outputs, params, state: their name; temps: a hint or NULL */
  Node *def;             /* V_TEMP: the producer */
  int def_out;           /* which output of def */
  void *data;            /* V_CONST: host data, rt_dtype_size * elements */
  Init init;             /* V_PARAM, V_STATE */
  SrcLoc loc;
  /* training: autodiff and the optimizer */
  bool wrt;              /* autodiff: wanted d(loss)/d(this) (trainable params, marked values) */
  Value *grad;           /* autodiff: the gradient of the loss with respect to this value */
  Value *updates;        /* this value is the new content of that param or state at the end
                            of the step: the memory plan puts it in place, over the old one */
  /* filled by passes */
  int nuse;              /* uses by nodes and outputs */
  Value *alias;          /* storage is alias's (a view), or NULL */
  int region;            /* memory plan: REGION_* */
  int64_t offset;        /* memory plan: byte offset in the region */
};

struct Node {
  int id;
  Op op;
  int nin, nout;
  Value **in;
  Value **out;
  Attr attr;
  SrcLoc loc;
  Graph *body;           /* step subgraph of a scan (sequence models) */
  int group;             /* kernel group after fusion; -1 before */
  int64_t work_bytes;    /* memory plan: scratch the kernel needs while it runs */
  int64_t work_off;      /* memory plan: its offset in REGION_SCRATCH */
};

/* Regions of the calling convention (DESIGN.md): compiled code gets an
 * array of base pointers, one per region, each 64-byte aligned. */
typedef enum {
  REGION_WEIGHTS,   /* parameters and constants */
  REGION_IO,        /* inputs and outputs */
  REGION_SCRATCH,   /* intermediates and kernel workspaces */
  REGION_STATE,     /* running statistics, optimizer state */
  REGION_GRADS,     /* gradients (training) */
  REGION_COUNT,
} Region;

/* What a training step does after the loss: the optimizer and its knobs
 * (the train block of the model file, with command-line overrides). The
 * learning rate is an input of the step (the host runs the schedule). */
typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_RMSPROP } OptKind;
typedef struct OptSpec {
  OptKind kind;
  double momentum;        /* SGD: 0 = plain */
  bool nesterov;          /* SGD with momentum */
  double beta1, beta2;    /* Adam(W); defaults 0.9, 0.999 */
  double rho;             /* RMSprop; default 0.99 as PyTorch's alpha */
  double eps;             /* Adam 1e-8, RMSprop 1e-8 */
  double weight_decay;    /* AdamW's decoupled decay */
  double l2;              /* L2 added to the gradient of the params matching l2_on */
  const char **l2_on;     /* glob patterns on parameter names; NULL: all */
  int nl2_on;
  double clip_norm;       /* clip gradients by global norm; 0: off */
} OptSpec;

struct Graph {
  RtArena *arena;
  const char *name;
  Diags *diags;          /* where builders report; owned by the caller */
  Value **vals;  int nvals, capvals;
  Node **nodes;  int nnodes, capnodes;     /* topological order */
  Value **inputs;  int ninputs, capinputs;
  Value **outputs; int noutputs, capoutputs;
  Value **params;  int nparams, capparams; /* V_PARAM and V_STATE, in creation order */
  /* size variables */
  const char **svars;    /* names */
  int64_t *svals;        /* bound value, or -1 */
  int nsvars, capsvars;
  int batch_var;         /* the size bound at run time (leading dim of inputs), -1: none */
  int64_t max_batch;     /* its compiled maximum */
  int64_t region_bytes[REGION_COUNT];  /* memory plan: size of each region */
  /* training */
  bool training;         /* batchnorm on batch statistics, dropout active */
  Value *loss;           /* the scalar to minimise, or NULL (inference) */
  OptSpec *opt;          /* the update after the gradients, or NULL: gradients only */
  Value *lr;             /* the learning-rate input of the step */
  uint64_t seed;         /* dropout masks: Philox key */
  Graph **bodies;        /* scan bodies made for this graph (ir_body_new): freed with it */
  int nbodies, capbodies;
  bool weights_baked;    /* a pass folded the values of parameters or state into constants
                            (fold-bn): new weights need a new compile, not just a copy */
};

/* graph.c */
Graph *ir_graph_new(const char *name, Diags *diags);
void ir_graph_free(Graph *g);
void ir_graph_adopt(Graph *g, Graph *body);   /* frees body with g */
int ir_size_var(Graph *g, const char *name);   /* id, created on first use */
Value *ir_input(Graph *g, const char *name, Type t, SrcLoc loc);
Value *ir_param(Graph *g, const char *name, Type t, Init init, SrcLoc loc);
Value *ir_state(Graph *g, const char *name, Type t, Init init, SrcLoc loc);
Value *ir_const(Graph *g, Type t, const void *data);       /* copies data */
Value *ir_scalar(Graph *g, RtDType dt, double v);
void ir_output(Graph *g, Value *v, const char *name);
Value *ir_find_param(const Graph *g, const char *name);
/* Builds a node, infers its outputs' types (errors at loc); its outputs are
 * returned through n->out. Unknown input types give unknown outputs silently. */
Node *ir_node(Graph *g, Op op, Value **in, int nin, const Attr *attr, SrcLoc loc);
Value *ir_op(Graph *g, Op op, Value **in, int nin, const Attr *attr, SrcLoc loc);
/* A node of nout outputs, with a body subgraph (a scan) or NULL. */
Node *ir_node_body(Graph *g, Op op, Value **in, int nin, int nout, Graph *body,
                   const Attr *attr, SrcLoc loc);
/* Appends an output to n (a scan that saves more for its gradient); its
 * type comes from rerunning the shape rule. */
Value *ir_node_add_output(Graph *g, Node *n);
Value *ir_op1(Graph *g, Op op, Value *a, SrcLoc loc);
Value *ir_op2(Graph *g, Op op, Value *a, Value *b, SrcLoc loc);
int64_t ir_numel_max(const Graph *g, const Type *t);   /* with batch at max; -1 if unbound */
int64_t ir_bytes_max(const Graph *g, const Type *t);
void ir_count_uses(Graph *g);
Attr ir_attr(void);       /* defaults: stride 1, dil 1, groups 1, eps 1e-5 */
/* Graph surgery for passes. ir_replace_uses: every use of `from` (node
 * inputs, graph outputs, gradients, the loss) becomes `to`, which must be
 * defined before from's first user; an output hands its flag (and, to a
 * temporary, its name) to `to`; `from` must not update a value.
 * ir_remove_dead: removes the nodes whose outputs reach no output, no loss,
 * no update of a parameter or state and no gradient of a wanted value, then
 * the constants nothing uses and, with drop_params, the parameters and state
 * nothing uses (inference); the nodes keep their order, nodes and values are
 * renumbered densely. Returns the number of nodes removed. */
void ir_replace_uses(Graph *g, Value *from, Value *to);
int ir_remove_dead(Graph *g, bool drop_params);

/* scan.c: the scan op, a loop over a body subgraph (see its head comment) */
Graph *ir_body_new(Graph *parent, const char *name);
Node *ir_scan(Graph *g, Graph *body, Value **in, int nseq, int ncarry, int ninv, int axis,
              bool reverse, Size steps, SrcLoc loc);
int ir_scan_ninv(const Node *n);
int ir_scan_nemit(const Node *n);
void ir_scan_mask(Graph *body, Value *m, int nseq, int ncarry);
void ir_sync_bodies(Graph *g);
int ir_step_function(Graph *g);
int ir_shape_scan(Graph *g, Node *n);

/* shape.c */
int ir_infer(Graph *g, Node *n);   /* runs the op's shape rule */
int ir_norm_axis(int axis, int rank);  /* negative axes from the end; -1 if out of range */

/* verify.c: structural and type invariants; returns the number of problems,
 * each reported to g->diags as an internal error. */
int ir_verify(Graph *g);

/* print.c */
void ir_print(const Graph *g, FILE *out);
void ir_print_dot(const Graph *g, FILE *out);
const char *ir_value_str(const Value *v, char *buf, int len);   /* %name or %id */

#endif

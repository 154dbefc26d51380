/* kiln frontend: the lexer, the parser and the AST of the kiln language.
 *
 *   text ──lex.c──► tokens ──parse.c──► AST (ast.c builds and prints it)
 *
 * The AST is the source as written: `a |> f(b)` is already the call
 * f(a, b), but names, sizes and layer calls mean nothing yet; lowering gives
 * them meaning. Every node carries a SrcLoc so each later error can point
 * at the source. All memory of one parsed file comes from one arena; every
 * mistake becomes a diagnostic in a Diags list and parsing carries on, so
 * one run reports all errors of a file. The grammar is in docs/language.md
 * and above each function of parse.c. Lowering (lower.c, with the layer
 * library of layers.c) turns a model into the graph IR; train.c reads train
 * blocks and builds the graph of a training step around the model.
 *
 * Declarations are grouped under a banner per defining file. */
#ifndef KILN_FRONTEND_H
#define KILN_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "ir/diag.h"
#include "ir/ir.h"
#include "runtime/rt.h"

/* Hard limits: input beyond them is an error, never a crash. */
#define FE_MAX_DEPTH 200                  /* nesting of expressions and blocks */
#define FE_MAX_IDENT 255                  /* bytes in an identifier */
#define FE_MAX_SOURCE ((size_t)64 << 20)  /* bytes in one source file */
#define FE_MAX_SIZE INT32_MAX             /* largest size literal in a type */

/* ===== lex.c: tokens ===== */

typedef enum TokenKind {
  TK_EOF,        /* end of input; always the last token */
  TK_IDENT,      /* [A-Za-z_][A-Za-z0-9_]*, type words included */
  TK_INT,        /* 42: ival */
  TK_FLOAT,      /* 0.5 1e-3 .5: fval */
  TK_STRING,     /* "...": str holds the value, escapes resolved */
  TK_ERROR,      /* bytes the lexer rejected (and reported): stray bytes, an
                    unterminated string; the parser stops there silently */
  /* keywords (TK_MODEL..TK_FALSE, in this order) */
  TK_MODEL, TK_BLOCK, TK_TRAIN, TK_PARAM, TK_FOR, TK_IN, TK_AS, TK_SCAN,
  TK_CARRY, TK_EMIT, TK_VARIABLE, TK_ON, TK_TRUE, TK_FALSE,
  /* punctuation */
  TK_PIPE,       /* |> */
  TK_ARROW,      /* -> */
  TK_DOTDOT,     /* .. */
  TK_AT,         /* @  matrix product */
  TK_PLUS, TK_MINUS, TK_STAR, TK_SLASH, TK_PERCENT,
  TK_EQ, TK_NE, TK_LT, TK_LE, TK_GT, TK_GE,   /* == != < <= > >= */
  TK_ASSIGN,     /* = */
  TK_COMMA, TK_COLON, TK_SEMI,
  TK_LPAREN, TK_RPAREN, TK_LBRACE, TK_RBRACE, TK_LBRACKET, TK_RBRACKET,
  TK_DOT,
  TK_NKINDS
} TokenKind;

typedef struct Token {
  TokenKind kind;
  SrcLoc loc;         /* line, column and length in bytes of the source text */
  bool bol;           /* first token on its line: `(` and `[` there start anew */
  const char *text;   /* the source text (loc.len bytes, not NUL-terminated) */
  int64_t ival;       /* TK_INT */
  double fval;        /* TK_FLOAT */
  const char *str;    /* TK_IDENT and keywords: the name; TK_STRING: the value */
} Token;

/* Splits src into tokens, ending with TK_EOF; *ntokens counts them, EOF
 * included. Lexical errors go to d and the lexer carries on: a run of
 * stray bytes, or an unterminated string (up to its line's end), becomes
 * one TK_ERROR token; a literal too large keeps a clamped value. Returns
 * NULL only when out of memory. */
Token *fe_lex(RtArena *a, const SrcFile *src, Diags *d, int *ntokens);
/* The spelling of a fixed token ("|>", "model"), or a word for the others
 * ("identifier", "integer", "number", "string", "invalid token", "end of file"). */
const char *fe_token_spelling(TokenKind k);
bool fe_token_fixed(TokenKind k);     /* has one spelling: keywords, punctuation */

/* ===== ast.c: nodes, constructors, printer ===== */

typedef enum AstKind {
  /* expressions */
  AST_INT,       /* ival; loc: the literal */
  AST_FLOAT,     /* fval */
  AST_STRING,    /* str */
  AST_BOOL,      /* ival: 0 or 1 */
  AST_NAME,      /* name */
  AST_LIST,      /* [items]; loc: '[' */
  AST_UNARY,     /* op lhs: -x +x; loc: the operator */
  AST_BINARY,    /* lhs op rhs; loc: the operator. Also size expressions */
  AST_CALL,      /* lhs(items: AST_ARG); loc: the callee's. piped: items[0] came from |> */
  AST_ARG,       /* name=lhs, or lhs (name NULL); loc: the name, else the value's */
  AST_INDEX,     /* lhs[items]: each item an expression or an AST_SLICE; loc: '[' */
  AST_SLICE,     /* lo:hi:step, each may be NULL; loc: the first ':' */
  AST_FIELD,     /* lhs.name (x.T is the transpose); loc: the name */
  AST_SCAN,      /* scan name in lo..hi carry (items: AST_ARG) { body }; loc: the name */
  AST_ERROR,     /* stands in for what failed to parse (there is a diagnostic) */
  /* types */
  AST_TYPE,      /* tkind; tensors: dtype[items: size expressions]; loc: the type word */
  /* statements of models and blocks */
  AST_PARAM,     /* param name: type = init (init may be NULL); loc: the name */
  AST_BIND,      /* items (AST_NAME targets) = init as scope (NULL); loc: the first target */
  AST_FOR,       /* for name in lo..hi { body }; loc: the name */
  AST_EMIT,      /* emit items; loc: 'emit' */
  /* statements of train blocks */
  AST_SETTING,   /* name = init on filter (NULL); loc: the name */
  AST_VARIABLE,  /* variable name: type = init; loc: the name */
  /* signatures and definitions */
  AST_INPUT,     /* name: type = init (default, may be NULL); loc: the name */
  AST_OUTPUT,    /* name: type (NULL if not given); loc: the name */
  AST_MODEL,     /* model name(ins) -> (outs) { body }; loc: the name */
  AST_BLOCK,     /* block name(ins) -> (outs) { body } */
  AST_TRAIN,     /* train name { body }; name: the model it trains */
  AST_NKINDS
} AstKind;

typedef enum AstTypeKind {
  ATY_TENSOR,    /* dtype[sizes] */
  ATY_INT,       /* the scalar parameter types of a block */
  ATY_FLOAT,
  ATY_BOOL,
  ATY_STR
} AstTypeKind;

/* One struct for every node, as chibicc's Node: a field is used by the
 * kinds listed in its comment and zero elsewhere. */
typedef struct Ast Ast;
struct Ast {
  AstKind kind;
  SrcLoc loc;          /* the token that names the node (see AstKind) */
  TokenKind op;        /* AST_UNARY, AST_BINARY: the operator */
  int64_t ival;        /* AST_INT, AST_BOOL */
  double fval;         /* AST_FLOAT */
  const char *name;    /* AST_NAME, AST_FIELD, AST_ARG (keyword), AST_SCAN and AST_FOR
                          (index variable), declarations, definitions */
  const char *str;     /* AST_STRING */
  Ast *lhs, *rhs;      /* operands; AST_CALL, AST_INDEX, AST_FIELD: the base; AST_ARG: the value */
  Ast *lo, *hi, *step; /* AST_SLICE; AST_FOR and AST_SCAN: lo..hi (hi excluded) */
  Ast *type;           /* AST_PARAM, AST_VARIABLE, AST_INPUT, AST_OUTPUT */
  Ast *init;           /* the value: AST_BIND, AST_SETTING, AST_PARAM, AST_VARIABLE, AST_INPUT */
  Ast *scope;          /* AST_BIND: the AST_STRING after `as`, or NULL */
  Ast *filter;         /* AST_SETTING: the expression after `on`, or NULL */
  Ast **items;         /* see AstKind: arguments, elements, indices, sizes, targets, carries */
  int nitems;
  Ast **body;          /* AST_FOR, AST_SCAN, AST_MODEL, AST_BLOCK, AST_TRAIN: statements */
  int nbody;
  Ast **ins;           /* AST_MODEL, AST_BLOCK: AST_INPUT; AST_SCAN: its options (AST_ARG) */
  int nins;
  Ast **outs;          /* AST_MODEL, AST_BLOCK: AST_OUTPUT */
  int nouts;
  AstTypeKind tkind;   /* AST_TYPE */
  RtDType dtype;       /* AST_TYPE with tkind ATY_TENSOR */
  bool piped;          /* AST_CALL written as `x |> f(...)` */
};

/* A parsed file. src is the text every SrcLoc of the tree points into. */
typedef struct AstFile {
  SrcFile src;
  Ast **defs;          /* models, blocks and train blocks in file order */
  int ndefs;
  Ast **models;        /* the same, by kind */
  int nmodels;
  Ast **blocks;
  int nblocks;
  Ast **trains;
  int ntrains;
} AstFile;

/* A growing array of nodes in an arena, for building items and bodies. */
typedef struct AstVec {
  Ast **v;
  int n, cap;
} AstVec;

Ast *ast_new(RtArena *a, AstKind k, SrcLoc loc);   /* zeroed; NULL if out of memory */
bool ast_vec_push(RtArena *a, AstVec *vec, Ast *n); /* false if out of memory */
const char *ast_kind_name(AstKind k);              /* "call", "bind", ... */
/* The definition of that kind and name, or NULL. */
const Ast *ast_find_def(const AstFile *f, AstKind k, const char *name);
/* Readable S-expressions, one statement per line; the golden-test format:
 *   (model digits (in (x f32[N 1 8 8])) (out (logits f32[N 10]))
 *     (= h (call relu (call conv2d x 16 k=3))))                          */
void ast_print(const AstFile *f, FILE *out);
void ast_print_node(const Ast *n, FILE *out);      /* any node, statements included */

/* ===== parse.c: the parser ===== */

/* Parses text[0..len) (copied; it need not be NUL-terminated and may hold
 * any bytes). Errors go to d, sorted by position; the tree holds what
 * parsed. Returns NULL only when out of memory. */
AstFile *fe_parse(RtArena *a, const char *name, const char *text, size_t len, Diags *d);
/* Reads and parses a file; a file that cannot be read is a diagnostic. */
AstFile *fe_parse_file(RtArena *a, const char *path, Diags *d);
/* Parses one expression (a command-line override such as `lr=1e-3`'s
 * value, or a test): an AST_ERROR node if it does not parse; NULL only when
 * out of memory. */
Ast *fe_parse_expr(RtArena *a, const char *name, const char *text, size_t len, Diags *d);

/* ===== lower.c: from the AST to the graph IR ===== */

/* A size bound to a constant when lowering (T=64). */
typedef struct FeSize {
  const char *name;
  int64_t value;
} FeSize;

typedef struct FeOptions {
  const char *model;           /* model to lower; NULL: the first model of the file */
  const FeSize *sizes;         /* sizes bound to constants (T=64); unbound ones stay symbolic */
  int nsizes;
} FeOptions;

/* Lowers one model of f into a new graph (free it with ir_graph_free).
 * Every error goes to d, all of them, and the graph is still returned; NULL
 * only when out of memory or when there is no such model (also a
 * diagnostic). o may be NULL: the first model, no size bound. */
Graph *fe_lower(const AstFile *f, const FeOptions *o, Diags *d);

/* How the layers behave: inference (a NULL mode) or a training step. */
typedef struct FeMode {
  bool training;               /* batchnorm on batch statistics, updating the running
                                  ones; dropout active (its counter: "dropout.step") */
  const char *const *freeze;   /* globs over parameter names: those parameters are made
                                  frozen, and a batchnorm whose weight is runs as at
                                  inference */
  int nfreeze;
} FeMode;

/* The model o->model (NULL: the first) lowered into g, a graph the caller
 * made: its inputs and outputs become g's, in signature order. Errors go to
 * d, all of them. Returns the model's definition, or NULL when there is no
 * such model (a diagnostic) or memory ran out. fe_lower is this with a new
 * graph and no mode; train.c adds the loss after it. */
const Ast *fe_lower_into(Graph *g, const AstFile *f, const FeOptions *o, const FeMode *mode,
                         Diags *d);
/* Does a glob of mode->freeze match the parameter name? */
bool fe_frozen(const FeMode *mode, const char *name);
/* Of the n candidates, the one a misspelt name most likely meant (a few
 * edits away), or NULL: for "did you mean" notes. */
const char *fe_near_name(const char *name, const char *const *cands, int n);

/* What an expression lowers to. Tensors are graph values; everything else
 * (ints, which may be symbolic sizes such as 4*D, numbers, strings, lists)
 * exists only while lowering, to feed layer arguments and types. */
typedef enum FeKind {
  FE_NONE,       /* an optional argument that was not given */
  FE_ERROR,      /* after a reported error: every use of it stays quiet */
  FE_TENSOR,     /* t */
  FE_INT,        /* i: a size expression, constant or symbolic */
  FE_FLOAT,      /* f */
  FE_BOOL,       /* b */
  FE_STR,        /* s: a string, or a bare word where one is accepted (pad=same) */
  FE_LIST,       /* items */
  FE_TUPLE,      /* items: the outputs of a block that has several */
  FE_INIT,       /* init: an initialiser (fans are filled in when the tensor is made) */
} FeKind;

typedef struct FeVal FeVal;
struct FeVal {
  FeKind kind;
  SrcLoc loc;          /* where it was written; none for defaults */
  Value *t;
  Size i;
  double f;
  bool b;
  const char *s;
  FeVal *items;
  int nitems;
  Init init;
};

/* Services lowering gives the layer library. The layer's parameters are
 * named <scope path><layer name>.<name> (DESIGN.md, "Parameter names are a
 * file format"); a name already taken is an error at c->loc. fe_param
 * fills the fans of init from t. */
typedef struct FeCall FeCall;
Value *fe_param(FeCall *c, const char *name, Type t, Init init);
Value *fe_state(FeCall *c, const char *name, Type t, Init init);
/* For dropout in training: the step's counter (the state "dropout.step",
 * an i64 scalar, plus one: the value written back in its place, so the
 * first step counts 1) and a Philox stream of the layer's own, 1, 2, ... in
 * call order. */
Value *fe_dropout_counter(FeCall *c, uint32_t *stream);
/* fan_in and fan_out of t as torch.nn.init computes them (dim 1 and dim 0,
 * times the receptive field); false if t has rank below 2. A symbolic dim
 * leaves the fans 0: they are known only once the sizes are bound. */
bool fe_init_fans(Init *init, const Type *t);

/* ===== layers.c: the layer library ===== */

/* The kinds of layer arguments; lowering checks each value against its
 * kind before the layer is built, so builders read fields directly. */
typedef enum FeArgKind {
  FA_TENSOR,     /* a tensor */
  FA_OPERAND,    /* a tensor or a number: maximum(x, 0) */
  FA_INT,        /* an int known at compile time */
  FA_SIZE,       /* an int, maybe a symbolic size: dense(4*D) */
  FA_INTS,       /* an int or a list of ints known at compile time: k=3, k=[3, 5] */
  FA_PAD,        /* an int, a list of ints, or a word: pad=same */
  FA_SIZES,      /* a list of ints, maybe symbolic: reshape(x, [N, -1]) */
  FA_FLOAT,      /* a number (an int is accepted) */
  FA_BOOL,       /* true or false */
  FA_STR,        /* a string or a bare word */
  FA_INIT,       /* an initialiser: "he_normal", he_normal, normal(0, 0.01) */
  FA_TENSORS,    /* a list of tensors: concat([a, b]) */
} FeArgKind;

typedef struct FeArg {
  const char *name;
  FeArgKind kind;
  const char *def;     /* the default as kiln source ("1", "true"); NULL: required;
                          "": optional, FE_NONE when not given */
  const char *alias;   /* other names it accepts, space-separated (PyTorch's:
                          "kernel kernel_size" for k), or NULL */
} FeArg;

typedef FeVal (*FeBuildFn)(FeCall *c);

#define FE_MAX_ARGS 10

typedef struct FeLayer {
  const char *name;
  FeBuildFn build;     /* builds the IR; FE_ERROR after reporting */
  Op op;               /* the IR op of layers that are one op (relu, sum, maxpool) */
  FeArg args[FE_MAX_ARGS];  /* in positional order, ended by a NULL name */
} FeLayer;

/* One call of a layer, as lowering hands it to the builder. */
struct FeCall {
  const FeLayer *layer;
  Graph *g;
  SrcLoc loc;          /* the layer's name at the call: errors point here */
  FeVal args[FE_MAX_ARGS];  /* by index in layer->args; tensors have known types */
  Value *auto_init;    /* a weight whose init follows the activation (set by the builder) */
  const FeMode *mode;  /* training or inference (NULL) */
  struct FeNaming *naming;  /* lower.c: how this call's parameters are named */
};

extern const FeLayer fe_layers[];
extern const int fe_nlayers;
const FeLayer *fe_find_layer(const char *name);   /* NULL if there is none */

/* ===== train.c: train blocks and the graph of a training step ===== */

/* The learning-rate schedule the host runs between epochs (the rate is an
 * input of the step). */
typedef enum { SCHED_CONST, SCHED_STEP, SCHED_EXP, SCHED_INV_TIME, SCHED_COSINE } FeSchedKind;
typedef struct FeSchedule {
  FeSchedKind kind;
  double step_epochs, gamma;   /* step: lr *= gamma every step_epochs; exp: each epoch */
  double decay;                /* inverse_time: lr / (1 + decay * epoch) */
  double min_lr;               /* cosine: to min_lr over all epochs */
  int warmup_epochs;           /* linear warm-up over this many epochs first (any kind) */
} FeSchedule;

/* A data set as the train block names it; the driver loads it. */
typedef struct FeData {
  const char *kind;            /* "csv", "npy", "idx", "text", "series", or NULL (none given) */
  const char *path;            /* features (csv: features and label) */
  const char *labels;          /* npy/idx: the labels file */
  int64_t label_col;           /* csv: label column (default -1: the last) */
  double scale;                /* features *= scale (default 1) */
  RtTextOptions text;          /* text: lines=, window=, maxlen=, chars= */
  const char *column;          /* series: the CSV column by header name (NULL: the last) */
  int64_t window, horizon;     /* series: inputs and targets per sample (default 1 target) */
  int64_t validate;            /* series: the last this many values validate (the split) */
  SrcLoc loc;
} FeData;

/* A forecast baseline whose errors kiln train prints beside the model's:
 * seasonal_naive(period = 11) or persistence() (period 1). */
typedef struct FeBaseline {
  const char *name;            /* as written: "seasonal_naive", "persistence" */
  int64_t period;
} FeBaseline;

/* Every setting of a train block, defaults filled in (docs/language.md,
 * "Training"). Strings point into the AST or the arena given. */
typedef struct FeTrain {
  const char *name, *model;    /* the block's name and the model it trains (model= or the name) */
  FeData data, test;           /* data = csv("...", label = last, scale = 1/16); test = idx(...) */
  double split;                /* validation fraction (default 0.2; 0 = none) */
  int64_t batch;               /* default 32 */
  int epochs;                  /* default 10 */
  int64_t steps;               /* 0 (default): the epochs decide */
  uint64_t seed;               /* default 0 */
  OptSpec opt;                 /* default adam */
  double lr;                   /* the optimizer's lr= */
  FeSchedule sched;            /* default constant */
  const char **freeze;         /* globs over parameter names */
  int nfreeze;
  const char *init_from;       /* safetensors path or NULL */
  const char *checkpoint;      /* path or NULL; written every checkpoint_every epochs (default 1) */
  int checkpoint_every;
  const Ast *loss;             /* the loss expression */
  FeBaseline baselines[4];     /* baseline = [persistence(), seasonal_naive(period = 11)] */
  int nbaselines;
  SrcLoc loc;                  /* the train block */
} FeTrain;

/* Reads the train block for `name` (a train block's name or its model's;
 * NULL: the first train block) into a config allocated in a. Every setting
 * is checked and every mistake reported to d: an unknown setting lists the
 * accepted ones, a wrong type names the setting. NULL after any error.
 * Command-line overrides are the caller's, on the returned struct. */
FeTrain *fe_train_config(RtArena *a, const AstFile *f, const char *name, Diags *d);

/* The graph of one training step (training) or of evaluation (not):
 *   inputs:  the model's, then one per label the loss names (in order of
 *            first use), then (training only) `lr`, a scalar f32;
 *   outputs: `loss` (a scalar, by default the mean over the batch), then
 *            the model's.
 * Training: batchnorm on batch statistics updating the running ones (as
 * PyTorch), dropout active with g->seed = t->seed, the parameters not
 * frozen by t->freeze marked wrt, g->loss, g->opt (a copy of t->opt) and
 * g->lr set, ready for pass_run_pipeline. Otherwise inference semantics and
 * no optimizer. Errors go to d, all of them; NULL only when out of memory
 * or the model does not exist. Free the graph with ir_graph_free. */
Graph *fe_lower_train(const AstFile *f, const FeOptions *o, const FeTrain *t, bool training,
                      Diags *d);

#endif

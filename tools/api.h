/* The C API's insides, shared with the kiln command (tools/kiln.c), which
 * needs more than include/kiln.h shows: the graph to print, the generated
 * code to dump. Not installed; programs use include/kiln.h. */
#ifndef KILN_API_INTERNAL_H
#define KILN_API_INTERNAL_H

#include "kiln.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "codegen/codegen.h"

/* A compiled instance of the model: one graph bound to sizes and a maximum
 * batch, its code, and the regions of the calling convention. */
typedef struct Compiled {
  Graph *g;
  CgJit *jit;
  void (*entry)(void **regions, int64_t batch, int32_t nthreads);
  void *regions[REGION_COUNT];
  FeSize *binds;          /* the sizes it was compiled for (batch excluded) */
  int nbinds;
  int64_t max_batch;
  int64_t last_batch;     /* the batch of its last run (kiln_input_buffer's shapes), 0: none yet */
  int threads;            /* the most threads its workspaces allow */
  bool init_state;        /* training: state missing from the weights starts from its Init */
  bool live_weights;      /* weights change between runs: passes must not fold them into code */
  uint64_t wver;          /* the version of the weights table its regions hold */
} Compiled;

typedef struct KilnWeight {
  char *name;
  RtTensor t;
} KilnWeight;

/* The character vocabulary of a model trained on text() data (see
 * kiln_vocab): symbols 1.. as UTF-8, the layout, and the file it came from
 * (a weights file or the data), for messages. malloc'd; text NULL: none. */
typedef struct KilnVocab {
  char *text, *from;
  bool lines;
} KilnVocab;
#define KILN__META_VOCAB "kiln.vocab"     /* the metadata keys that hold it */
#define KILN__META_LAYOUT "kiln.text"     /* "lines" or "window" */

struct KilnModel {
  RtArena *arena;         /* the model's lifetime: source, AST, names */
  RtArena *diag_arena;    /* the last call's diagnostics */
  Diags diags;
  char *errtext;
  AstFile *ast;
  KilnOptions opt;
  FeSize *sizes;          /* from opt.sizes */
  int nsizes;
  Graph *sig;             /* lowered with no bindings: the signature */
  KilnWeight *w;          /* the weights by name */
  int nw, capw;
  bool seeded;            /* draw missing weights from seed */
  uint64_t seed;
  Compiled *cc;           /* inference */
  uint64_t wver;          /* bumped whenever the weights table changes */
  Compiled *newest;       /* its regions are newer than the table (it trained), or NULL */
  struct KilnTrainer *tr; /* training (tools/train.c), or NULL */
  KilnVocab vocab;        /* a text model's symbols, kept in its weights' metadata */
  int threads;
  int lanes;              /* f32 vector lanes the passes plan for: 0, the host's (kiln export: its target's) */
  /* what the kiln command asks to see while compiling */
  FILE *emit_llvm, *emit_asm;
  FILE *emit_llvm_unopt;  /* the module as kiln hands it to LLVM, before LLVM's passes */
  bool plan_only;         /* kiln check: passes and memory plan, no code (not runnable) */
  PassLayout layout;      /* the layout pass's choice forced (tests), or LAYOUT_COST */
  bool no_winograd;       /* the winograd pass stays off (KILN_WINOGRAD=off) */
  const char *print_after;
  FILE *stats_out;
  bool stats_json;
};

/* tools/api.c */
/* v as the API describes a tensor: dims that are size names read as -1. */
KilnStatus kiln__info(const Value *v, KilnTensor *t);
void kiln__reset_errors(KilnModel *m);
KilnStatus kiln__fail(KilnModel *m, KilnStatus st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The inference graph, lowered with binds, compiled and kept in m->cc. */
KilnStatus kiln__compile_step(KilnModel *m, const char *train, int64_t max_batch,
                              const Graph **step);   /* tools/train.c */
KilnStatus kiln__compile(KilnModel *m, const FeSize *binds, int nbinds, const char *batch,
                         int64_t max_batch);
/* Compiles a lowered graph (taken over, freed on failure) whose size
 * `batch` is bound at run time up to max_batch; its weights come from the
 * table (drawn from the seed when missing, state too with
 * KILN__INIT_STATE). KILN__LIVE_WEIGHTS: the weights will change between
 * runs (training), so no pass may fold their values into the code. */
enum { KILN__INIT_STATE = 1, KILN__LIVE_WEIGHTS = 2, KILN__NO_CODE = 4 };
/* KILN__NO_CODE: passes, memory plan and weights only, no JIT code (the
 * export generates code for its own target from cc->g). */
KilnStatus kiln__compile_graph(KilnModel *m, Graph *g, const char *batch, int64_t max_batch,
                               unsigned flags, Compiled **out);
void kiln__free_compiled(Compiled *cc);
KilnStatus kiln__parse_sizes(KilnModel *m, const char *spec, FeSize **out, int *n);
/* Binds the signature's sizes from the inputs (in->[i] for sig input i):
 * the bindings of every size but the batch, and the batch (1 if none). */
KilnStatus kiln__bind(KilnModel *m, const KilnTensor **in, FeSize *binds, int *nb,
                      int64_t *batch);
const char *kiln__batch_name(const KilnModel *m);   /* the batch's size name, or NULL */
int kiln__batch_var(const Graph *s);   /* the size that is the first input's first dim, or -1 */
/* The weights table and the compiled copies: kiln__pull brings the newest
 * copy (a training step's) back into the table; kiln__sync makes cc's copy
 * current before it runs. */
void kiln__pull(KilnModel *m);
void kiln__sync(KilnModel *m, Compiled *cc);
/* Frees every compiled instance; keep_weights pulls the newest copy first. */
void kiln__forget_compiled(KilnModel *m, bool keep_weights);
/* Where value v lives in cc's regions. */
static inline void *kiln__at(const Compiled *cc, const Value *v) {
  return (char *)cc->regions[v->region] + v->offset;
}
void kiln__call(KilnModel *m, Compiled *cc, int64_t batch);
/* v's shape with the size values vals (the batch's included) and its
 * bytes, or -1 if a size is unbound. */
int64_t kiln__bytes_at(const Graph *g, const Value *v, const int64_t *vals, int64_t *shape);
/* The size values of g with its batch bound to `batch`. */
void kiln__size_values(const Graph *g, int64_t batch, int64_t *vals);
/* v as a KilnTensor at `batch`, named as in cc's graph, its data where cc
 * keeps it; returns its bytes. */
int64_t kiln__tensor_at(const Compiled *cc, const Value *v, int64_t batch, KilnTensor *t);

/* tools/train.c */
void kiln__train_forget(KilnModel *m);     /* frees the compiled step and evaluation */
void kiln__train_free(KilnModel *m);
/* The training step's graph (forward, loss, backward, update) as the
 * model's train block says, lowered with the model's size bindings, for
 * kiln__compile_graph; NULL with a status when there is no train block. */
KilnStatus kiln__step_graph(KilnModel *m, Graph **out);

/* tools/opt.c: --key=value or --key value (see there) */
const char *kiln__opt(int argc, char **argv, int *i, const char *key, bool *missing);

/* tools/export.c: `kiln export` and `kiln build` (argv[1]), their own options */
int kiln__export_main(int argc, char **argv);

/* tools/api.c: the vocabulary. kiln__set_vocab replaces it (text NULL:
 * clears it; false when out of memory); kiln__vocab_meta appends its
 * metadata entries to md (0, 1 or 2 of them) and returns their count. */
bool kiln__set_vocab(KilnModel *m, const char *text, bool lines, const char *from);
int kiln__vocab_meta(const KilnModel *m, RtMeta *md);
/* Reads the vocabulary from a weights file's metadata (none: cleared). */
bool kiln__read_vocab(KilnModel *m, const RtSafetensors *s, const char *path);

/* tools/weights.c */
KilnWeight *kiln__weight(KilnModel *m, const char *name);
KilnStatus kiln__init_param(const Graph *g, const Value *p, uint64_t seed, RtTensor *out,
                            RtError *err);
KilnStatus kiln__put_weight(KilnModel *m, const char *name, RtTensor t);
void kiln__free_weights(KilnModel *m);

#endif

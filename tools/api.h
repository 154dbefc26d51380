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
  Diags diags;
  RtArena *diag_arena;
  CgJit *jit;
  void (*entry)(void **regions, int64_t batch, int32_t nthreads);
  void *regions[REGION_COUNT];
  FeSize *binds;          /* the sizes it was compiled for (batch excluded) */
  int nbinds;
  int64_t max_batch;
  int threads;            /* the most threads its workspaces allow */
} Compiled;

typedef struct KilnWeight {
  char *name;
  RtTensor t;
} KilnWeight;

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
  Compiled *cc;
  int threads;
  /* what the kiln command asks to see while compiling */
  FILE *emit_llvm, *emit_asm;
  const char *print_after;
  FILE *stats_out;
  bool stats_json;
};

/* tools/api.c */
void kiln__reset_errors(KilnModel *m);
KilnStatus kiln__compile(KilnModel *m, const FeSize *binds, int nbinds, const char *batch,
                         int64_t max_batch);
KilnStatus kiln__parse_sizes(KilnModel *m, const char *spec, FeSize **out, int *n);

/* tools/weights.c */
KilnWeight *kiln__weight(KilnModel *m, const char *name);
KilnStatus kiln__init_param(const Graph *g, const Value *p, uint64_t seed, RtTensor *out,
                            RtError *err);
KilnStatus kiln__put_weight(KilnModel *m, const char *name, RtTensor t);
void kiln__free_weights(KilnModel *m);

#endif

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
int pass_run_pipeline(Graph *g, PassCtx *cx);   /* 0, or -1 if the verifier failed */
const Pass *pass_find(const char *name);
int pass_count_kernels(const Graph *g);

/* memplan.c */
bool pass_memplan(Graph *g, PassCtx *cx, PassStats *st);
void pass_print_memplan(const Graph *g, FILE *out);

#endif

/* libFuzzer target for the lexer and parser: any bytes must parse to a tree
 * and diagnostics, never a crash, a hang or a read out of bounds. Every
 * diagnostic must point inside the file, and the tree and the messages are
 * printed so that the printer and the renderer walk all of it. Built with
 * -Dfuzz=true (see meson.build); run:
 *   ./fuzz_parse -max_total_time=120 -dict=../tests/fuzz/parse.dict corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "frontend/frontend.h"

static void check_diags(const Diags *d, const SrcFile *src) {
  for (const Diag *g = d->head; g; g = g->next) {
    if (g->kind != DIAG_ERROR || !g->msg[0])
      abort();
    if (!g->loc.file)
      continue;                 /* only the source-size limit has no location */
    if (g->loc.file != src || g->loc.line < 1 || g->loc.col < 1 || g->loc.len < 1)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "fuzz.kiln", (const char *)data, size, &d);
  if (!f)
    abort();                    /* no out-of-memory under a 4 GiB arena */
  check_diags(&d, &f->src);
  FILE *out = fopen("/dev/null", "w");
  ast_print(f, out);
  diag_print(&d, out);
  Diags de;
  diag_init(&de, a);
  Ast *x = fe_parse_expr(a, "expr", (const char *)data, size, &de);
  if (!x || (de.nerrors == 0) == (x->kind == AST_ERROR))
    abort();                    /* AST_ERROR exactly when there are errors */
  ast_print_node(x, out);
  diag_print(&de, out);
  fclose(out);
  rt_arena_free(a);
  return 0;
}

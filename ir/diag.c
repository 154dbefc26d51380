/* Collects diagnostics in order and renders them with the offending source
 * line and a caret under the token, as a C compiler would. */
#include "ir/diag.h"
#include <stdlib.h>
#include <string.h>

void diag_init(Diags *d, RtArena *a) {
  memset(d, 0, sizeof *d);
  d->arena = a;
}

void diag_vadd(Diags *d, DiagKind k, SrcLoc loc, const char *fmt, va_list ap) {
  if (k == DIAG_ERROR)
    d->nerrors++;
  if (k == DIAG_WARNING)
    d->nwarnings++;
  int cap = d->max_errors > 0 ? d->max_errors : 100;
  if (d->nerrors > cap)
    return;                              /* counted, not recorded */
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  Diag *g = rt_arena_alloc(d->arena, sizeof *g);
  g->kind = k;
  g->loc = loc;
  g->msg = rt_arena_strdup(d->arena, buf);
  if (d->tail)
    d->tail->next = g;
  else
    d->head = g;
  d->tail = g;
}

void diag_add(Diags *d, DiagKind k, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_vadd(d, k, loc, fmt, ap);
  va_end(ap);
}

static const char *kind_name(DiagKind k) {
  return k == DIAG_ERROR ? "error" : k == DIAG_WARNING ? "warning" : "note";
}

/* The text of line `line` (1-based) and its length, or NULL. */
static const char *find_line(const SrcFile *f, int line, int *len) {
  const char *p = f->text, *end = f->text + f->len;
  for (int i = 1; i < line && p < end; i++) {
    const char *nl = memchr(p, '\n', end - p);
    if (!nl)
      return NULL;
    p = nl + 1;
  }
  if (p >= end && line > 1)
    return NULL;
  const char *nl = memchr(p, '\n', end - p);
  *len = (int)((nl ? nl : end) - p);
  return p;
}

static void render(const Diag *g, FILE *out) {
  const SrcLoc *l = &g->loc;
  if (!l->file) {
    fprintf(out, "kiln: %s: %s\n", kind_name(g->kind), g->msg);
    return;
  }
  fprintf(out, "%s:%d:%d: %s: %s\n", l->file->name, l->line, l->col,
          kind_name(g->kind), g->msg);
  int n;
  const char *src = find_line(l->file, l->line, &n);
  if (!src)
    return;
  fprintf(out, "    %.*s\n    ", n, src);
  for (int i = 1; i < l->col && i <= n; i++)
    fputc(src[i - 1] == '\t' ? '\t' : ' ', out);
  fputc('^', out);
  for (int i = 1; i < l->len && l->col + i <= n; i++)
    fputc('~', out);
  fputc('\n', out);
}

void diag_print(const Diags *d, FILE *out) {
  for (const Diag *g = d->head; g; g = g->next)
    render(g, out);
  int cap = d->max_errors > 0 ? d->max_errors : 100;
  if (d->nerrors > cap)
    fprintf(out, "kiln: too many errors (%d), stopped after %d\n", d->nerrors, cap);
}

char *diag_to_string(const Diags *d, RtArena *a) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return NULL;
  diag_print(d, f);
  fclose(f);
  char *s = rt_arena_strdup(a, buf ? buf : "");
  free(buf);
  return s;
}

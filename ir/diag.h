/* Diagnostics: every stage reports a user's mistake here, as a value, with
 * its source location; nothing exits. Rendered like a C compiler does:
 *   digits.kiln:7:22: error: conv2d expects f32[N, C, H, W], got f32[N, 64]
 *       h = x |> conv2d(16, k=3)
 *                ^~~~~~
 * Included by ir/ir.h; separate so the lexer can use it alone. */
#ifndef KILN_DIAG_H
#define KILN_DIAG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include "runtime/rt.h"

typedef struct SrcFile {
  const char *name;   /* as given by the user */
  const char *text;   /* whole file, NUL-terminated */
  size_t len;
} SrcFile;

typedef struct SrcLoc {
  const SrcFile *file;  /* NULL: no location (a command-line value, say) */
  int line, col;        /* 1-based */
  int len;              /* columns under the caret, at least 1 */
} SrcLoc;

typedef enum { DIAG_ERROR, DIAG_WARNING, DIAG_NOTE } DiagKind;

typedef struct Diag {
  DiagKind kind;
  SrcLoc loc;
  char *msg;
  struct Diag *next;
} Diag;

typedef struct Diags {
  RtArena *arena;       /* owns the messages */
  Diag *head, *tail;
  int nerrors, nwarnings;
  int max_errors;       /* stop recording after this many (0: 100) */
} Diags;

void diag_init(Diags *d, RtArena *a);
void diag_add(Diags *d, DiagKind k, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void diag_vadd(Diags *d, DiagKind k, SrcLoc loc, const char *fmt, va_list ap);
#define diag_error(d, loc, ...) diag_add((d), DIAG_ERROR, (loc), __VA_ARGS__)
#define diag_warn(d, loc, ...) diag_add((d), DIAG_WARNING, (loc), __VA_ARGS__)
#define diag_note(d, loc, ...) diag_add((d), DIAG_NOTE, (loc), __VA_ARGS__)
void diag_print(const Diags *d, FILE *out);        /* all, with source line and caret */
char *diag_to_string(const Diags *d, RtArena *a);  /* the same text, for the C API */
static inline SrcLoc srcloc_none(void) { SrcLoc l = {0}; return l; }

#endif

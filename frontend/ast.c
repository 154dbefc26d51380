/* AST nodes: construction in an arena and a printer. The printer writes
 * S-expressions, one statement per line, nested statements indented; it is
 * the form golden tests compare, so it shows every field that matters and
 * nothing else:
 *   (= (i f g o) (call split z 4 axis=(- 1)))      tuple binding, keyword
 *   (index x (: _ _) t)                            x[:, t]
 *   f32[(* 4 hidden) D]                            a tensor type */
#include "frontend/frontend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[AST_NKINDS] = {
  [AST_INT] = "int", [AST_FLOAT] = "float", [AST_STRING] = "string",
  [AST_BOOL] = "bool", [AST_NAME] = "name", [AST_LIST] = "list",
  [AST_UNARY] = "unary", [AST_BINARY] = "binary", [AST_CALL] = "call",
  [AST_ARG] = "arg", [AST_INDEX] = "index", [AST_SLICE] = "slice",
  [AST_FIELD] = "field", [AST_SCAN] = "scan", [AST_ERROR] = "error",
  [AST_TYPE] = "type", [AST_PARAM] = "param", [AST_BIND] = "bind",
  [AST_FOR] = "for", [AST_EMIT] = "emit", [AST_SETTING] = "setting",
  [AST_VARIABLE] = "variable", [AST_INPUT] = "input", [AST_OUTPUT] = "output",
  [AST_MODEL] = "model", [AST_BLOCK] = "block", [AST_TRAIN] = "train",
};

const char *ast_kind_name(AstKind k) {
  return k >= 0 && k < AST_NKINDS && kind_names[k] ? kind_names[k] : "?";
}

Ast *ast_new(RtArena *a, AstKind k, SrcLoc loc) {
  Ast *n = rt_arena_alloc(a, sizeof *n);
  if (n) {
    n->kind = k;
    n->loc = loc;
  }
  return n;
}

bool ast_vec_push(RtArena *a, AstVec *vec, Ast *n) {
  if (vec->n == vec->cap) {
    int cap = vec->cap ? 2 * vec->cap : 4;
    Ast **v = rt_arena_alloc(a, (size_t)cap * sizeof *v);
    if (!v)
      return false;
    if (vec->n)
      memcpy(v, vec->v, (size_t)vec->n * sizeof *v);
    vec->v = v;                     /* the old array stays in the arena, unused */
    vec->cap = cap;
  }
  vec->v[vec->n++] = n;
  return true;
}

const Ast *ast_find_def(const AstFile *f, AstKind k, const char *name) {
  for (int i = 0; i < f->ndefs; i++)
    if (f->defs[i]->kind == k && f->defs[i]->name && strcmp(f->defs[i]->name, name) == 0)
      return f->defs[i];
  return NULL;
}

/* ---- printer ---- */

static void print(const Ast *n, FILE *out, int indent);

static void print_string(const char *s, FILE *out) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", out);
    else if (c == '\t')
      fputs("\\t", out);
    else if (c < ' ' || c == 127)
      fprintf(out, "\\x%02x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

/* The shortest decimal that reads back exactly, always with a '.' or an
 * exponent so that it cannot be mistaken for an integer. */
static void print_float(double v, FILE *out) {
  char buf[64];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  fputs(buf, out);
  if (!strpbrk(buf, ".eEin"))
    fputs(".0", out);
}

static void print_list(Ast **items, int n, FILE *out, int indent) {
  for (int i = 0; i < n; i++) {
    fputc(' ', out);
    print(items[i], out, indent);
  }
}

/* Statements each on a new line, one level deeper. */
static void print_body(Ast **body, int n, FILE *out, int indent) {
  for (int i = 0; i < n; i++) {
    fprintf(out, "\n%*s", 2 * (indent + 1), "");
    print(body[i], out, indent + 1);
  }
}

static void print_opt(const Ast *n, FILE *out, int indent) {
  if (n)
    print(n, out, indent);
  else
    fputc('_', out);
}

static void print_type(const Ast *n, FILE *out) {
  static const char *const scalar[] = {
    [ATY_INT] = "int", [ATY_FLOAT] = "float", [ATY_BOOL] = "bool", [ATY_STR] = "str"};
  if (n->tkind != ATY_TENSOR) {
    fputs(scalar[n->tkind], out);
    return;
  }
  fprintf(out, "%s[", rt_dtype_name(n->dtype));
  for (int i = 0; i < n->nitems; i++) {
    if (i)
      fputc(' ', out);
    print(n->items[i], out, 0);
  }
  fputc(']', out);
}

/* (name type) or (name type = default): inputs, outputs. */
static void print_decl(const Ast *n, FILE *out, int indent) {
  fprintf(out, "(%s", n->name);
  if (n->type) {
    fputc(' ', out);
    print(n->type, out, indent);
  }
  if (n->init) {
    fputs(" = ", out);
    print(n->init, out, indent);
  }
  fputc(')', out);
}

static void print_def(const Ast *n, FILE *out, int indent) {
  fprintf(out, "(%s %s", ast_kind_name(n->kind), n->name);
  if (n->kind != AST_TRAIN) {
    fputs(" (in", out);
    print_list(n->ins, n->nins, out, indent);
    fputs(") (out", out);
    print_list(n->outs, n->nouts, out, indent);
    fputc(')', out);
  }
  print_body(n->body, n->nbody, out, indent);
  fputc(')', out);
}

static void print_bind(const Ast *n, FILE *out, int indent) {
  fputs("(= ", out);
  if (n->nitems == 1) {
    print(n->items[0], out, indent);
  } else {
    fputc('(', out);
    for (int i = 0; i < n->nitems; i++) {
      if (i)
        fputc(' ', out);
      print(n->items[i], out, indent);
    }
    fputc(')', out);
  }
  fputc(' ', out);
  print(n->init, out, indent);
  if (n->scope) {
    fputs(" as ", out);
    print(n->scope, out, indent);
  }
  fputc(')', out);
}

/* (keyword name type init), the form of param and variable */
static void print_declstmt(const Ast *n, FILE *out, int indent) {
  fprintf(out, "(%s %s ", ast_kind_name(n->kind), n->name);
  print(n->type, out, indent);
  if (n->init) {
    fputc(' ', out);
    print(n->init, out, indent);
  }
  fputc(')', out);
}

static void print_loop(const Ast *n, FILE *out, int indent) {
  fprintf(out, "(%s %s ", ast_kind_name(n->kind), n->name);
  print(n->lo, out, indent);
  fputc(' ', out);
  print(n->hi, out, indent);
  if (n->kind == AST_SCAN) {
    print_list(n->ins, n->nins, out, indent);
    fputs(" (carry", out);
    print_list(n->items, n->nitems, out, indent);
    fputc(')', out);
  }
  print_body(n->body, n->nbody, out, indent);
  fputc(')', out);
}

static void print_setting(const Ast *n, FILE *out, int indent) {
  fprintf(out, "(set %s ", n->name);
  print(n->init, out, indent);
  if (n->filter) {
    fputs(" on ", out);
    print(n->filter, out, indent);
  }
  fputc(')', out);
}

/* (head items...) for calls, indexing, lists and emit */
static void print_group(const char *head, const Ast *first, const Ast *n, FILE *out,
                        int indent) {
  fprintf(out, "(%s", head);
  if (first) {
    fputc(' ', out);
    print(first, out, indent);
  }
  print_list(n->items, n->nitems, out, indent);
  fputc(')', out);
}

static void print(const Ast *n, FILE *out, int indent) {
  if (!n) {
    fputs("<null>", out);
    return;
  }
  switch (n->kind) {
  case AST_INT: fprintf(out, "%lld", (long long)n->ival); break;
  case AST_FLOAT: print_float(n->fval, out); break;
  case AST_STRING: print_string(n->str, out); break;
  case AST_BOOL: fputs(n->ival ? "true" : "false", out); break;
  case AST_NAME: fputs(n->name, out); break;
  case AST_ERROR: fputs("<error>", out); break;
  case AST_LIST: print_group("list", NULL, n, out, indent); break;
  case AST_CALL: print_group("call", n->lhs, n, out, indent); break;
  case AST_INDEX: print_group("index", n->lhs, n, out, indent); break;
  case AST_EMIT: print_group("emit", NULL, n, out, indent); break;
  case AST_UNARY:
    fprintf(out, "(%s ", fe_token_spelling(n->op));
    print(n->lhs, out, indent);
    fputc(')', out);
    break;
  case AST_BINARY:
    fprintf(out, "(%s ", fe_token_spelling(n->op));
    print(n->lhs, out, indent);
    fputc(' ', out);
    print(n->rhs, out, indent);
    fputc(')', out);
    break;
  case AST_ARG:
    if (n->name)
      fprintf(out, "%s=", n->name);
    print(n->lhs, out, indent);
    break;
  case AST_SLICE:
    fputs("(: ", out);
    print_opt(n->lo, out, indent);
    fputc(' ', out);
    print_opt(n->hi, out, indent);
    if (n->step) {
      fputc(' ', out);
      print(n->step, out, indent);
    }
    fputc(')', out);
    break;
  case AST_FIELD:
    fputs("(. ", out);
    print(n->lhs, out, indent);
    fprintf(out, " %s)", n->name);
    break;
  case AST_TYPE: print_type(n, out); break;
  case AST_SCAN:
  case AST_FOR: print_loop(n, out, indent); break;
  case AST_PARAM:
  case AST_VARIABLE: print_declstmt(n, out, indent); break;
  case AST_BIND: print_bind(n, out, indent); break;
  case AST_SETTING: print_setting(n, out, indent); break;
  case AST_INPUT:
  case AST_OUTPUT: print_decl(n, out, indent); break;
  case AST_MODEL:
  case AST_BLOCK:
  case AST_TRAIN: print_def(n, out, indent); break;
  case AST_NKINDS: fputs("<?>", out); break;
  }
}

void ast_print_node(const Ast *n, FILE *out) {
  print(n, out, 0);
}

void ast_print(const AstFile *f, FILE *out) {
  for (int i = 0; i < f->ndefs; i++) {
    print(f->defs[i], out, 0);
    fputc('\n', out);
  }
}

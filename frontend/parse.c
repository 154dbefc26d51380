/* The parser: recursive descent over the token array, a function per
 * grammar rule with the rule above it (docs/language.md has the prose).
 *
 * Newlines are not separators: a statement ends where the next token
 * cannot continue its expression. The one exception is a `(` or `[` that
 * starts a line: it begins something new rather than calling or indexing
 * the expression before it.
 *
 * Errors. The first error of a statement is reported and the parser enters
 * panic mode: nothing more is reported or consumed, each rule returns at
 * once (an AST_ERROR node where an expression was due), and the statement
 * loop resynchronises (sync) at the next token that starts a statement on a
 * new line, or at the '}' that closes the block. So a file with five
 * mistakes reports five errors. Nesting deeper than FE_MAX_DEPTH is an
 * error too, which bounds the recursion here and in every later walk of the
 * tree; running out of memory jumps to the end of the tokens and makes
 * fe_parse return NULL. */
#include "frontend/frontend.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct Parser {
  RtArena *arena;
  Diags *diags;
  Token *tok;          /* the current token; the array ends with TK_EOF */
  Token *first;        /* the first token, for looking back */
  int depth;           /* nesting of expressions and blocks */
  int scan_depth;      /* scan bodies around the current statement */
  bool panic;          /* an error was reported and not yet recovered from */
  bool oom;
  Ast scratch;         /* stands in for a node that could not be allocated */
} Parser;

/* ---- tokens ---- */

static bool at(Parser *p, TokenKind k) {
  return p->tok->kind == k;
}

static Token *next(Parser *p) {
  Token *t = p->tok;
  if (t->kind != TK_EOF)
    p->tok++;
  return t;
}

static Token *peek(Parser *p, int k) {
  Token *t = p->tok;
  for (int i = 0; i < k && t->kind != TK_EOF; i++)
    t++;
  return t;
}

static bool accept(Parser *p, TokenKind k) {
  if (p->panic || !at(p, k))
    return false;
  next(p);
  return true;
}

static void out_of_memory(Parser *p) {
  p->oom = p->panic = true;
  while (p->tok->kind != TK_EOF)   /* every loop stops at EOF, so all unwinds */
    p->tok++;
}

/* ---- errors ---- */

/* How a message names a token: 'relu', '|>', string "abc", end of file. */
static const char *describe(Parser *p, const Token *t) {
  if (t->kind == TK_EOF)
    return "end of file";
  int n = t->loc.len > 32 ? 32 : t->loc.len;
  const char *dots = t->loc.len > 32 ? "..." : "";
  const char *s = t->kind == TK_STRING ? rt_arena_printf(p->arena, "string %.*s%s", n, t->text, dots)
                                       : rt_arena_printf(p->arena, "'%.*s%s'", n, t->text, dots);
  return s ? s : "?";
}

static const char *describe_kind(Parser *p, TokenKind k) {
  if (k == TK_IDENT)
    return "a name";
  if (!fe_token_fixed(k))
    return k == TK_STRING ? "a string" : fe_token_spelling(k);
  const char *s = rt_arena_printf(p->arena, "'%s'", fe_token_spelling(k));
  return s ? s : "?";
}

/* Reports and enters panic mode. An error about a TK_ERROR token is not
 * reported: the lexer has said what is wrong there. */
static void verror(Parser *p, SrcLoc loc, const char *fmt, va_list ap) {
  const Token *t = p->tok;
  bool lexical = t->kind == TK_ERROR && t->loc.line == loc.line && t->loc.col == loc.col;
  if (!p->panic && !lexical)
    diag_vadd(p->diags, DIAG_ERROR, loc, fmt, ap);
  p->panic = true;
}

__attribute__((format(printf, 3, 4)))
static void error_at(Parser *p, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(p, loc, fmt, ap);
  va_end(ap);
}

/* Consumes a token of kind k, or reports "expected K CONTEXT, found X". */
static Token *expect(Parser *p, TokenKind k, const char *context) {
  if (p->panic)
    return NULL;
  if (at(p, k))
    return next(p);
  error_at(p, p->tok->loc, "expected %s %s, found %s", describe_kind(p, k), context,
           describe(p, p->tok));
  return NULL;
}

/* An error that does not stop parsing: the construct is understood, only
 * wrong (a duplicate keyword, a size too large). */
__attribute__((format(printf, 3, 4)))
static void complain(Parser *p, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (!p->panic)
    diag_vadd(p->diags, DIAG_ERROR, loc, fmt, ap);
  va_end(ap);
}

/* Enters one level of nesting; false (and an error) past the limit. */
static bool enter(Parser *p, const Token *t) {
  if (p->depth >= FE_MAX_DEPTH) {
    error_at(p, t->loc, "nesting is too deep (the limit is %d levels)", FE_MAX_DEPTH);
    return false;
  }
  p->depth++;
  return true;
}

/* ---- nodes ---- */

static Ast *node(Parser *p, AstKind k, SrcLoc loc) {
  Ast *n = ast_new(p->arena, k, loc);
  if (n)
    return n;
  out_of_memory(p);
  memset(&p->scratch, 0, sizeof p->scratch);
  p->scratch.kind = AST_ERROR;
  return &p->scratch;
}

static Ast *error_node(Parser *p, SrcLoc loc) {
  return node(p, AST_ERROR, loc);
}

static void push(Parser *p, AstVec *v, Ast *n) {
  if (!ast_vec_push(p->arena, v, n))
    out_of_memory(p);
}

static const char *name_of(const Token *t) {
  return t->str ? t->str : "";
}

static Ast *binary(Parser *p, Token *op, Ast *lhs, Ast *rhs) {
  Ast *n = node(p, AST_BINARY, op->loc);
  n->op = op->kind;
  n->lhs = lhs;
  n->rhs = rhs;
  return n;
}

/* ---- expressions ---- */

static Ast *expr(Parser *p);
static Ast *postfix(Parser *p);
static Ast *scan(Parser *p);

static bool is_cmp(TokenKind k) {
  return k == TK_EQ || k == TK_NE || k == TK_LT || k == TK_LE || k == TK_GT || k == TK_GE;
}

static bool is_add_op(TokenKind k) {
  return k == TK_PLUS || k == TK_MINUS;
}

static bool is_mul_op(TokenKind k) {
  return k == TK_STAR || k == TK_SLASH || k == TK_PERCENT || k == TK_AT;
}

static bool is_size_mul_op(TokenKind k) {
  return k == TK_STAR || k == TK_SLASH;
}

/* operand (op operand)*, left-associative, for the operators is_op accepts.
 * Each operator applied counts as a level of nesting: a long chain makes a
 * deep left-leaning tree, and later walks recurse over it. */
static Ast *left_assoc(Parser *p, Ast *(*operand)(Parser *), bool (*is_op)(TokenKind)) {
  Ast *lhs = operand(p);
  int saved = p->depth;
  while (!p->panic && is_op(p->tok->kind)) {
    Token *op = next(p);
    if (!enter(p, op))
      break;
    lhs = binary(p, op, lhs, operand(p));
  }
  p->depth = saved;
  return lhs;
}

/* -x folds into a negative literal: `axis=-1` and `x[-1]` are plain numbers. */
static Ast *negate(Parser *p, Token *op, Ast *x) {
  if ((x->kind == AST_INT || x->kind == AST_FLOAT) && x->loc.line == op->loc.line) {
    if (x->kind == AST_INT)
      x->ival = -x->ival;       /* no overflow: literals stop at INT64_MAX */
    else
      x->fval = -x->fval;
    x->loc.len += x->loc.col - op->loc.col;
    x->loc.col = op->loc.col;
    return x;
  }
  Ast *n = node(p, AST_UNARY, op->loc);
  n->op = op->kind;
  n->lhs = x;
  return n;
}

/* unary = ("-" | "+") unary | postfix */
static Ast *unary(Parser *p) {
  if (p->panic)                 /* consume nothing until sync */
    return error_node(p, p->tok->loc);
  if (!at(p, TK_MINUS) && !at(p, TK_PLUS))
    return postfix(p);
  Token *op = next(p);
  if (!enter(p, op))
    return error_node(p, op->loc);
  Ast *x = unary(p);
  p->depth--;
  if (op->kind == TK_MINUS)
    return negate(p, op, x);
  Ast *n = node(p, AST_UNARY, op->loc);
  n->op = op->kind;
  n->lhs = x;
  return n;
}

/* mul = unary (("*" | "/" | "%" | "@") unary)* */
static Ast *mul(Parser *p) {
  return left_assoc(p, unary, is_mul_op);
}

/* add = mul (("+" | "-") mul)* */
static Ast *add(Parser *p) {
  return left_assoc(p, mul, is_add_op);
}

/* cmp = add (("==" | "!=" | "<" | "<=" | ">" | ">=") add)?   no chains */
static Ast *cmp(Parser *p) {
  Ast *lhs = add(p);
  if (p->panic || !is_cmp(p->tok->kind))
    return lhs;
  Token *op = next(p);
  Ast *n = binary(p, op, lhs, add(p));
  if (!p->panic && is_cmp(p->tok->kind))
    error_at(p, p->tok->loc, "comparisons do not chain: use parentheses");
  return n;
}

/* The right side of `x |> f`: a call gets x as its first argument, a bare
 * name or field becomes a call of it. */
static Ast *pipe_into(Parser *p, Ast *x, Ast *f) {
  if (f->kind == AST_ERROR)
    return f;
  Ast *arg = node(p, AST_ARG, x->loc);
  arg->lhs = x;
  Ast *call = f;
  if (f->kind == AST_NAME || f->kind == AST_FIELD) {
    call = node(p, AST_CALL, f->loc);
    call->lhs = f;
  } else if (f->kind != AST_CALL) {
    error_at(p, f->loc, "expected a function or a call after '|>'");
    return error_node(p, f->loc);
  }
  Ast **items = rt_arena_alloc(p->arena, (size_t)(call->nitems + 1) * sizeof *items);
  if (!items) {
    out_of_memory(p);
    return call;
  }
  items[0] = arg;
  if (call->nitems)
    memcpy(items + 1, call->items, (size_t)call->nitems * sizeof *items);
  call->items = items;
  call->nitems++;
  call->piped = true;
  return call;
}

/* expr = pipe
 * pipe = cmp ("|>" postfix)*     a |> f(b, k=1) is f(a, b, k=1); a |> relu is relu(a) */
static Ast *expr(Parser *p) {
  Ast *lhs = cmp(p);
  int saved = p->depth;
  bool piped = false;
  while (!p->panic && at(p, TK_PIPE)) {
    Token *op = next(p);
    if (!enter(p, op))
      break;
    lhs = pipe_into(p, lhs, postfix(p));
    piped = true;
  }
  p->depth = saved;
  TokenKind k = p->tok->kind;
  if (piped && !p->panic && (is_cmp(k) || is_add_op(k) || is_mul_op(k)))
    error_at(p, p->tok->loc, "'%s' after a '|>' chain: put the chain in parentheses",
             fe_token_spelling(k));
  return lhs;
}

/* A keyword argument's name: IDENT followed by '=' */
static bool at_keyword_arg(Parser *p) {
  return at(p, TK_IDENT) && peek(p, 1)->kind == TK_ASSIGN;
}

/* arg = IDENT "=" expr | expr */
static Ast *call_arg(Parser *p) {
  Token *name = at_keyword_arg(p) ? p->tok : NULL;
  if (name) {
    next(p);
    next(p);
  }
  Ast *value = expr(p);
  Ast *arg = node(p, AST_ARG, name ? name->loc : value->loc);
  arg->name = name ? name_of(name) : NULL;
  arg->lhs = value;
  return arg;
}

/* Keywords are unique and come after the positional arguments. */
static void check_args(Parser *p, Ast **args, int n) {
  for (int i = 1; i < n; i++) {
    if (!args[i]->name && args[i - 1]->name)
      complain(p, args[i]->loc, "positional argument after keyword arguments");
    for (int j = 0; j < i && args[i]->name; j++)
      if (args[j]->name && strcmp(args[j]->name, args[i]->name) == 0) {
        complain(p, args[i]->loc, "keyword argument '%s' given twice", args[i]->name);
        break;
      }
  }
}

/* The comma-separated items up to `close` (a trailing comma is allowed);
 * item parses one. Returns the closing token, or NULL after an error. */
static Token *comma_list(Parser *p, AstVec *out, Ast *(*item)(Parser *), TokenKind close,
                         const char *what) {
  while (!p->panic && !at(p, close)) {
    push(p, out, item(p));
    if (!accept(p, TK_COMMA))
      break;
  }
  return expect(p, close, what);
}

/* call = postfix "(" args ")" */
static Ast *call(Parser *p, Ast *callee) {
  next(p);
  Ast *n = node(p, AST_CALL, callee->loc);
  n->lhs = callee;
  AstVec args = {0};
  comma_list(p, &args, call_arg, TK_RPAREN, "after arguments");
  check_args(p, args.v, args.n);
  n->items = args.v;
  n->nitems = args.n;
  return n;
}

/* index = expr | expr? ":" expr? (":" expr?)? */
static Ast *index_item(Parser *p) {
  Ast *lo = at(p, TK_COLON) ? NULL : expr(p);
  if (p->panic || !at(p, TK_COLON))
    return lo;
  Ast *n = node(p, AST_SLICE, next(p)->loc);
  n->lo = lo;
  if (!at(p, TK_COLON) && !at(p, TK_COMMA) && !at(p, TK_RBRACKET))
    n->hi = expr(p);
  if (accept(p, TK_COLON) && !at(p, TK_COMMA) && !at(p, TK_RBRACKET))
    n->step = expr(p);
  return n;
}

/* "[" index ("," index)* "]" */
static Ast *index_expr(Parser *p, Ast *base) {
  Token *open = next(p);
  Ast *n = node(p, AST_INDEX, open->loc);
  n->lhs = base;
  AstVec items = {0};
  if (at(p, TK_RBRACKET))
    error_at(p, p->tok->loc, "expected an index, found ']'");
  comma_list(p, &items, index_item, TK_RBRACKET, "after indices");
  n->items = items.v;
  n->nitems = items.n;
  return n;
}

/* "." IDENT */
static Ast *field(Parser *p, Ast *base) {
  next(p);
  Token *name = expect(p, TK_IDENT, "after '.'");
  if (!name)
    return error_node(p, p->tok->loc);
  Ast *n = node(p, AST_FIELD, name->loc);
  n->lhs = base;
  n->name = name_of(name);
  return n;
}

/* "[" (expr ("," expr)*)? "]" */
static Ast *list(Parser *p) {
  Ast *n = node(p, AST_LIST, next(p)->loc);
  AstVec items = {0};
  comma_list(p, &items, expr, TK_RBRACKET, "after list elements");
  n->items = items.v;
  n->nitems = items.n;
  return n;
}

/* rule, one level deeper */
static Ast *nested(Parser *p, Ast *(*rule)(Parser *)) {
  Token *t = p->tok;
  if (!enter(p, t))
    return error_node(p, t->loc);
  Ast *x = rule(p);
  p->depth--;
  return x;
}

/* "(" expr ")" */
static Ast *parens(Parser *p) {
  next(p);
  Ast *x = expr(p);
  expect(p, TK_RPAREN, "after expression");
  return x;
}

/* The current token as a leaf node of kind k. */
static Ast *literal(Parser *p, AstKind k) {
  Token *t = next(p);
  Ast *n = node(p, k, t->loc);
  if (k == AST_INT)
    n->ival = t->ival;
  else if (k == AST_BOOL)
    n->ival = t->kind == TK_TRUE;
  else if (k == AST_FLOAT)
    n->fval = t->fval;
  else if (k == AST_STRING)
    n->str = t->str;
  else
    n->name = name_of(t);
  return n;
}

/* primary = NUMBER | STRING | "true" | "false" | IDENT | "(" expr ")"
 *         | "[" (expr ("," expr)*)? "]" | scan */
static Ast *primary(Parser *p) {
  switch (p->tok->kind) {
  case TK_INT: return literal(p, AST_INT);
  case TK_FLOAT: return literal(p, AST_FLOAT);
  case TK_STRING: return literal(p, AST_STRING);
  case TK_TRUE:
  case TK_FALSE: return literal(p, AST_BOOL);
  case TK_IDENT: return literal(p, AST_NAME);
  case TK_LPAREN: return nested(p, parens);
  case TK_LBRACKET: return nested(p, list);
  case TK_SCAN: return nested(p, scan);
  default:
    error_at(p, p->tok->loc, "expected an expression, found %s", describe(p, p->tok));
    return error_node(p, p->tok->loc);
  }
}

/* postfix = primary ("(" args ")" | "[" index ("," index)* "]" | "." IDENT)*
 * A '(' or '[' first on its line starts something new instead. */
static Ast *postfix(Parser *p) {
  if (p->panic)
    return error_node(p, p->tok->loc);
  int saved = p->depth;
  Ast *x = primary(p);
  for (;;) {
    bool same_line = !p->tok->bol;
    if (p->panic || !((at(p, TK_LPAREN) && same_line) || (at(p, TK_LBRACKET) && same_line) ||
                      at(p, TK_DOT)))
      break;
    if (!enter(p, p->tok))
      break;
    x = at(p, TK_LPAREN) ? call(p, x) : at(p, TK_LBRACKET) ? index_expr(p, x) : field(p, x);
  }
  p->depth = saved;
  return x;
}

/* ---- types ---- */

/* Sizes are affine expressions: 4*hidden, N*T, H/2 + 1. */
static Ast *size(Parser *p);

/* "(" size ")" */
static Ast *size_parens(Parser *p) {
  next(p);
  Ast *x = size(p);
  expect(p, TK_RPAREN, "after size");
  return x;
}

/* size_atom = INTEGER | IDENT | "(" size ")" */
static Ast *size_atom(Parser *p) {
  Token *t = p->tok;
  if (at(p, TK_INT)) {
    if (t->ival > FE_MAX_SIZE)
      complain(p, t->loc, "size %.*s is too large (sizes are below 2^31)", t->loc.len, t->text);
    return literal(p, AST_INT);
  }
  if (at(p, TK_IDENT))
    return literal(p, AST_NAME);
  if (at(p, TK_LPAREN))
    return nested(p, size_parens);
  error_at(p, t->loc, "expected a size (an integer or a size name), found %s", describe(p, t));
  return error_node(p, t->loc);
}

/* size_term = size_atom (("*" | "/") size_atom)* */
static Ast *size_term(Parser *p) {
  return left_assoc(p, size_atom, is_size_mul_op);
}

/* size = size_term (("+" | "-") size_term)* */
static Ast *size(Parser *p) {
  return left_assoc(p, size_term, is_add_op);
}

static const struct {
  const char *word;
  AstTypeKind kind;
} scalar_types[] = {{"int", ATY_INT}, {"float", ATY_FLOAT}, {"bool", ATY_BOOL}, {"str", ATY_STR}};

/* tensor_type = DTYPE "[" size ("," size)* "]"
 * type = tensor_type | "int" | "float" | "bool" | "str"   (scalars where allowed) */
static Ast *type(Parser *p, bool scalar_ok) {
  const char *what = scalar_ok ? "a type" : "a tensor type";
  Token *t = p->tok;
  if (p->panic || !at(p, TK_IDENT)) {
    error_at(p, t->loc, "expected %s such as f32[N, 10], found %s", what, describe(p, t));
    return error_node(p, t->loc);
  }
  next(p);
  Ast *n = node(p, AST_TYPE, t->loc);
  if (at(p, TK_LBRACKET)) {
    if (rt_dtype_parse(name_of(t), &n->dtype) != 0)
      complain(p, t->loc, "unknown element type '%s' (f32, f64, i32, i64, u8 or bool)",
               name_of(t));
    next(p);
    AstVec dims = {0};
    comma_list(p, &dims, size, TK_RBRACKET, "after sizes");
    if (dims.n == 0)
      complain(p, t->loc, "a tensor type needs at least one size");
    n->items = dims.v;
    n->nitems = dims.n;
    return n;
  }
  for (size_t i = 0; scalar_ok && i < sizeof scalar_types / sizeof *scalar_types; i++)
    if (strcmp(name_of(t), scalar_types[i].word) == 0) {
      n->tkind = scalar_types[i].kind;
      return n;
    }
  error_at(p, t->loc, "expected %s such as f32[N, 10], found %s", what, describe(p, t));
  return error_node(p, t->loc);
}

/* ---- statements ---- */

typedef Ast *(*StmtFn)(Parser *);
static void block_body(Parser *p, StmtFn parse_stmt, Ast *owner);
static Ast *stmt(Parser *p);

static bool starts_def(TokenKind k) {
  return k == TK_MODEL || k == TK_BLOCK || k == TK_TRAIN;
}

static bool at_model_setting(Parser *p) {
  return p->tok->kind == TK_MODEL && peek(p, 1)->kind == TK_ASSIGN;
}

/* Where sync may stop: a keyword that starts a statement, or a name
 * followed by '=' or ',' (the start of a binding or a setting). */
static bool starts_stmt(Parser *p) {
  switch (p->tok->kind) {
  case TK_PARAM:
  case TK_FOR:
  case TK_EMIT:
  case TK_VARIABLE: return true;
  case TK_IDENT: return peek(p, 1)->kind == TK_ASSIGN || peek(p, 1)->kind == TK_COMMA;
  default: return starts_def(p->tok->kind);
  }
}

/* Skips to where parsing can resume after an error: a statement start on a
 * new line, or the '}' closing the current block. Blocks opened after the
 * error are skipped whole; a definition keyword always stops. */
static void sync(Parser *p) {
  int depth = 0;
  for (; !at(p, TK_EOF); next(p)) {
    if (starts_def(p->tok->kind) || (depth == 0 && p->tok->bol && starts_stmt(p)))
      break;
    if (at(p, TK_LBRACE))
      depth++;
    if (at(p, TK_RBRACE) && depth-- == 0)
      break;
  }
  p->panic = false;
}

static Token *expect_name(Parser *p, const char *context) {
  return expect(p, TK_IDENT, context);
}

/* A new node of kind k named by the name that comes next (reported if
 * missing): declarations, loops, definitions. */
static Ast *declared(Parser *p, AstKind k, const char *context) {
  Token *name = expect_name(p, context);
  Ast *n = node(p, k, name ? name->loc : p->tok->loc);
  n->name = name ? name_of(name) : "";
  return n;
}

/* lo ".." hi, the range of for and scan */
static void range(Parser *p, Ast *n) {
  n->lo = expr(p);
  expect(p, TK_DOTDOT, "in range");
  n->hi = expr(p);
}

/* "param" IDENT ":" tensor_type ("=" expr)? */
static Ast *param_stmt(Parser *p) {
  next(p);
  Ast *n = declared(p, AST_PARAM, "after 'param'");
  expect(p, TK_COLON, "after parameter name");
  n->type = type(p, false);
  if (accept(p, TK_ASSIGN))
    n->init = expr(p);
  return n;
}

/* "for" IDENT "in" expr ".." expr "{" stmt* "}" */
static Ast *for_stmt(Parser *p) {
  next(p);
  Ast *n = declared(p, AST_FOR, "after 'for'");
  expect(p, TK_IN, "after loop variable");
  range(p, n);
  block_body(p, stmt, n);
  return n;
}

/* "emit" expr ("," expr)*   only inside scan */
static Ast *emit_stmt(Parser *p) {
  Token *kw = next(p);
  if (p->scan_depth == 0)
    complain(p, kw->loc, "'emit' outside of a scan body");
  Ast *n = node(p, AST_EMIT, kw->loc);
  AstVec items = {0};
  do
    push(p, &items, expr(p));
  while (accept(p, TK_COMMA));
  n->items = items.v;
  n->nitems = items.n;
  return n;
}

/* A name where a new statement begins, on the line of the previous one,
 * and not followed by '=' or ',': most likely an operator or '|>' is
 * missing, as in `h = x |> conv2d(16) relu()`. Reports it and returns true. */
static bool missing_operator(Parser *p, const char *what) {
  TokenKind before = p->tok > p->first ? p->tok[-1].kind : TK_EOF;
  if (starts_stmt(p) || p->tok->bol || before == TK_LBRACE || before == TK_SEMI ||
      before == TK_RBRACE)
    return false;
  error_at(p, p->tok->loc, "expected an operator or a new %s, found %s", what,
           describe(p, p->tok));
  return true;
}

/* binding = IDENT ("," IDENT)* "=" expr ("as" STRING)? */
static Ast *binding(Parser *p) {
  if (missing_operator(p, "statement"))
    return error_node(p, p->tok->loc);
  Ast *n = node(p, AST_BIND, p->tok->loc);
  AstVec targets = {0};
  do {
    Token *name = expect_name(p, "in binding");
    if (!name)
      break;
    Ast *target = node(p, AST_NAME, name->loc);
    target->name = name_of(name);
    push(p, &targets, target);
  } while (accept(p, TK_COMMA));
  n->items = targets.v;
  n->nitems = targets.n;
  expect(p, TK_ASSIGN, targets.n > 1 ? "after names" : "after name");
  n->init = expr(p);
  if (accept(p, TK_AS)) {
    if (at(p, TK_STRING))
      n->scope = literal(p, AST_STRING);
    else
      expect(p, TK_STRING, "after 'as'");
  }
  return n;
}

static Ast *misplaced(Parser *p, const char *where) {
  error_at(p, p->tok->loc, "'%s' is only allowed in %s", fe_token_spelling(p->tok->kind), where);
  return error_node(p, p->tok->loc);
}

/* stmt = param | binding | for | emit */
static Ast *stmt(Parser *p) {
  switch (p->tok->kind) {
  case TK_PARAM: return param_stmt(p);
  case TK_FOR: return for_stmt(p);
  case TK_EMIT: return emit_stmt(p);
  case TK_IDENT: return binding(p);
  case TK_VARIABLE:
  case TK_ON: return misplaced(p, "a train block");
  default:
    error_at(p, p->tok->loc, "expected a statement, found %s", describe(p, p->tok));
    return error_node(p, p->tok->loc);
  }
}

/* "variable" IDENT ":" tensor_type "=" expr */
static Ast *variable_stmt(Parser *p) {
  next(p);
  Ast *n = declared(p, AST_VARIABLE, "after 'variable'");
  expect(p, TK_COLON, "after variable name");
  n->type = type(p, false);
  expect(p, TK_ASSIGN, "after variable type");
  n->init = expr(p);
  return n;
}

/* setting = IDENT "=" expr ("on" expr)? */
static Ast *setting(Parser *p) {
  if (missing_operator(p, "setting"))
    return error_node(p, p->tok->loc);
  Ast *n = declared(p, AST_SETTING, "");
  expect(p, TK_ASSIGN, "after setting name");
  n->init = expr(p);
  if (accept(p, TK_ON))
    n->filter = expr(p);
  return n;
}

/* `model = NAME` inside a train block: the keyword names a setting there. */
static Ast *model_setting(Parser *p) {
  Ast *n = node(p, AST_SETTING, p->tok->loc);
  n->name = "model";
  next(p);
  expect(p, TK_ASSIGN, "after setting name");
  n->init = expr(p);
  return n;
}

/* tstmt = setting | "model" "=" expr | variable */
static Ast *train_stmt(Parser *p) {
  switch (p->tok->kind) {
  case TK_IDENT: return setting(p);
  case TK_MODEL: return model_setting(p);
  case TK_VARIABLE: return variable_stmt(p);
  case TK_PARAM:
  case TK_FOR:
  case TK_EMIT: return misplaced(p, "a model or block");
  default:
    error_at(p, p->tok->loc, "expected a setting (name = value), found %s", describe(p, p->tok));
    return error_node(p, p->tok->loc);
  }
}

/* "{" stmt* "}"  into owner->body. Each statement that fails is skipped
 * up to where the next one can start (sync). */
static void block_body(Parser *p, StmtFn parse_stmt, Ast *owner) {
  Token *open = p->tok;
  if (p->panic || (at(p, TK_LBRACE) && !enter(p, open)))  /* too deep: '{' stays for sync */
    return;
  if (!expect(p, TK_LBRACE, owner->kind == AST_MODEL || owner->kind == AST_BLOCK ||
                                owner->kind == AST_TRAIN ? "to start the body" : "before loop body"))
    return;
  AstVec body = {0};
  while (!at(p, TK_RBRACE) && !at(p, TK_EOF) &&
         !(starts_def(p->tok->kind) && !(owner->kind == AST_TRAIN && at_model_setting(p)))) {
    if (accept(p, TK_SEMI))
      continue;
    Token *start = p->tok;
    Ast *s = parse_stmt(p);
    if (s->kind != AST_ERROR)
      push(p, &body, s);
    if (p->panic) {
      if (p->tok == start)        /* the statement could not even begin */
        next(p);
      sync(p);
    }
  }
  p->depth--;
  owner->body = body.v;
  owner->nbody = body.n;
  if (!at(p, TK_RBRACE))
    error_at(p, p->tok->loc, "expected '}' to close the block opened at %d:%d, found %s",
             open->loc.line, open->loc.col, describe(p, p->tok));
  else
    next(p);
}

/* scan = "scan" IDENT "in" expr ".." expr (IDENT "=" expr)*
 *        "carry" "(" IDENT "=" expr ("," IDENT "=" expr)* ")" "{" stmt* "}"
 * The options between the range and `carry` (reverse=true, mask=m) are
 * keyword arguments, as a layer call takes them; lowering checks names. */
static Ast *carry(Parser *p) {
  Ast *n = declared(p, AST_ARG, "in carry");
  expect(p, TK_ASSIGN, "after carried name");
  n->lhs = expr(p);
  return n;
}

static void scan_options(Parser *p, Ast *n) {
  AstVec opts = {0};
  while (!p->panic && at(p, TK_IDENT)) {     /* after a bad range, T is not an option */
    Ast *o = declared(p, AST_ARG, "in scan options");
    expect(p, TK_ASSIGN, "after a scan option's name (reverse=true, mask=m)");
    o->lhs = expr(p);
    push(p, &opts, o);
  }
  n->ins = opts.v;
  n->nins = opts.n;
}

static Ast *scan(Parser *p) {
  next(p);
  Ast *n = declared(p, AST_SCAN, "after 'scan'");
  expect(p, TK_IN, "after scan variable");
  range(p, n);
  scan_options(p, n);
  expect(p, TK_CARRY, "after scan range");
  expect(p, TK_LPAREN, "after 'carry'");
  AstVec carries = {0};
  if (at(p, TK_RPAREN))
    error_at(p, p->tok->loc, "expected a carried name, found ')'");
  comma_list(p, &carries, carry, TK_RPAREN, "after carried values");
  n->items = carries.v;
  n->nitems = carries.n;
  p->scan_depth++;
  block_body(p, stmt, n);
  p->scan_depth--;
  return n;
}

/* ---- definitions ---- */

/* arg = IDENT ":" type ("=" expr)?      (sig_in) */
static Ast *input(Parser *p) {
  Ast *n = declared(p, AST_INPUT, "in inputs");
  expect(p, TK_COLON, "after input name");
  n->type = type(p, true);
  if (accept(p, TK_ASSIGN))
    n->init = expr(p);
  return n;
}

/* IDENT (":" tensor_type)?               (sig_out) */
static Ast *output(Parser *p) {
  Ast *n = declared(p, AST_OUTPUT, "in outputs");
  if (accept(p, TK_COLON))
    n->type = type(p, false);
  return n;
}

/* "(" sig_in ")" "->" "(" sig_out ")" */
static void signature(Parser *p, Ast *def) {
  AstVec ins = {0}, outs = {0};
  expect(p, TK_LPAREN, "before inputs");
  comma_list(p, &ins, input, TK_RPAREN, "after inputs");
  expect(p, TK_ARROW, "after inputs");
  expect(p, TK_LPAREN, "before outputs");
  if (!p->panic && at(p, TK_RPAREN))
    error_at(p, p->tok->loc, "expected an output name, found ')'");
  comma_list(p, &outs, output, TK_RPAREN, "after outputs");
  def->ins = ins.v;
  def->nins = ins.n;
  def->outs = outs.v;
  def->nouts = outs.n;
}

/* model = "model" IDENT signature "{" stmt* "}"
 * block = "block" IDENT signature "{" stmt* "}"
 * train = "train" IDENT "{" tstmt* "}"
 * After an error in the header, the body is still parsed if its '{' is
 * found before the next definition. */
static Ast *definition(Parser *p) {
  Token *kw = next(p);
  AstKind k = kw->kind == TK_MODEL ? AST_MODEL : kw->kind == TK_BLOCK ? AST_BLOCK : AST_TRAIN;
  Ast *n = declared(p, k, k == AST_MODEL ? "after 'model'"
                         : k == AST_BLOCK ? "after 'block'" : "after 'train'");
  if (k != AST_TRAIN)
    signature(p, n);
  if (p->panic) {
    while (!at(p, TK_EOF) && !at(p, TK_LBRACE) && !starts_def(p->tok->kind))
      next(p);
    p->panic = false;
    if (!at(p, TK_LBRACE))
      return n;
  }
  block_body(p, k == AST_TRAIN ? train_stmt : stmt, n);
  return n;
}

/* file = (model | block | train)*
 * After an error, parsing resumes at the next definition keyword. */
static void file(Parser *p, AstFile *f) {
  AstVec defs = {0}, models = {0}, blocks = {0}, trains = {0};
  while (!at(p, TK_EOF)) {
    if (accept(p, TK_SEMI))
      continue;
    if (starts_def(p->tok->kind)) {
      Ast *def = definition(p);
      push(p, &defs, def);
      push(p, def->kind == AST_MODEL ? &models : def->kind == AST_BLOCK ? &blocks : &trains, def);
    } else {
      error_at(p, p->tok->loc, "expected 'model', 'block' or 'train', found %s",
               describe(p, p->tok));
      next(p);
    }
    if (p->panic)
      while (!at(p, TK_EOF) && !starts_def(p->tok->kind))
        next(p);
    p->panic = false;
  }
  f->defs = defs.v, f->ndefs = defs.n;
  f->models = models.v, f->nmodels = models.n;
  f->blocks = blocks.v, f->nblocks = blocks.n;
  f->trains = trains.v, f->ntrains = trains.n;
}

/* ---- entry points ---- */

/* Diagnostics of one parse in source order: the lexer reports all of its
 * errors before the parser starts. Stable insertion sort of the list after
 * `before` (few entries: the list is capped). */
static void sort_diags(Diags *d, Diag *before) {
  Diag *rest = before ? before->next : d->head;
  Diag *sorted = NULL, *tail = NULL;
  while (rest) {
    Diag *g = rest;
    rest = rest->next;
    Diag **at = &sorted;
    while (*at && ((*at)->loc.line < g->loc.line ||
                   ((*at)->loc.line == g->loc.line && (*at)->loc.col <= g->loc.col)))
      at = &(*at)->next;
    g->next = *at;
    *at = g;
  }
  for (tail = sorted; tail && tail->next; tail = tail->next)
    ;
  if (!sorted)
    return;
  if (before)
    before->next = sorted;
  else
    d->head = sorted;
  d->tail = tail;
}

/* Copies the text into the arena, NUL-terminated, and lexes it. */
static Token *start(RtArena *a, SrcFile *src, const char *name, const char *text, size_t len,
                    Diags *d) {
  char *copy = rt_arena_alloc(a, len + 1);
  src->name = rt_arena_strdup(a, name ? name : "<input>");
  if (!copy || !src->name)
    return NULL;
  if (len)
    memcpy(copy, text, len);
  src->text = copy;
  src->len = len;
  int n;
  return fe_lex(a, src, d, &n);
}

AstFile *fe_parse(RtArena *a, const char *name, const char *text, size_t len, Diags *d) {
  AstFile *f = rt_arena_alloc(a, sizeof *f);
  if (!f)
    return NULL;
  Diag *before = d->tail;
  if (len > FE_MAX_SOURCE) {
    f->src.name = rt_arena_strdup(a, name ? name : "<input>");
    diag_error(d, srcloc_none(), "%s: source is %zu bytes, more than the limit of %zu",
               f->src.name ? f->src.name : "?", len, FE_MAX_SOURCE);
    f->src.text = "";
    return f;
  }
  Token *toks = start(a, &f->src, name, text, len, d);
  if (!toks)
    return NULL;
  Parser p = {.arena = a, .diags = d, .tok = toks, .first = toks};
  file(&p, f);
  sort_diags(d, before);
  return p.oom ? NULL : f;
}

Ast *fe_parse_expr(RtArena *a, const char *name, const char *text, size_t len, Diags *d) {
  SrcFile *src = rt_arena_alloc(a, sizeof *src);
  if (!src)
    return NULL;
  Diag *before = d->tail;
  int errors = d->nerrors;
  if (len > FE_MAX_SOURCE) {
    diag_error(d, srcloc_none(), "expression is %zu bytes, more than the limit", len);
    return ast_new(a, AST_ERROR, srcloc_none());
  }
  Token *toks = start(a, src, name, text, len, d);
  if (!toks)
    return NULL;
  Parser p = {.arena = a, .diags = d, .tok = toks, .first = toks};
  Ast *x = expr(&p);
  if (!p.panic && !at(&p, TK_EOF))
    error_at(&p, p.tok->loc, "expected end of expression, found %s", describe(&p, p.tok));
  sort_diags(d, before);
  if (p.oom)
    return NULL;
  return d->nerrors > errors ? ast_new(a, AST_ERROR, x->loc) : x;
}

/* The whole file into a malloc'ed buffer; NULL (and errno) on failure. */
static char *read_all(FILE *fp, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, fp);
    if (ferror(fp) || n < cap || n > FE_MAX_SOURCE)
      break;
    char *grown = realloc(buf, cap * 2);
    if (!grown) {
      free(buf);
      return NULL;
    }
    buf = grown;
    cap *= 2;
  }
  if (buf && ferror(fp)) {
    int e = errno;
    free(buf);
    errno = e ? e : EIO;
    return NULL;
  }
  *len = n;
  return buf;
}

AstFile *fe_parse_file(RtArena *a, const char *path, Diags *d) {
  FILE *fp = fopen(path, "rb");
  size_t len = 0;
  char *text = fp ? read_all(fp, &len) : NULL;
  int e = errno;
  if (fp)
    fclose(fp);
  if (!text) {
    AstFile *f = rt_arena_alloc(a, sizeof *f);
    if (!f)
      return NULL;
    f->src.name = rt_arena_strdup(a, path);
    f->src.text = "";
    diag_error(d, srcloc_none(), "cannot read '%s': %s", path, strerror(e));
    return f;
  }
  AstFile *f = fe_parse(a, path, text, len, d);
  free(text);
  return f;
}

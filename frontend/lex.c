/* The lexer: the whole file is split into an array of tokens up front, so
 * the parser can look ahead freely. Newlines are not tokens; instead each
 * token knows whether it is the first on its line, which is all the parser
 * needs (a `(` or `[` there does not continue the previous expression).
 *
 * A lexical mistake is reported once, here. Where it leaves no usable token
 * (a run of stray bytes, an unterminated string) it becomes a TK_ERROR
 * token, at which the parser stops without a second message and resumes
 * at the next statement; a literal too large keeps a clamped value. Tokens
 * grow in a malloc'ed buffer that is copied into the arena at the end. */
#include "frontend/frontend.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Spellings of the fixed tokens, and words for the others. */
static const char *const spelling[TK_NKINDS] = {
  [TK_EOF] = "end of file", [TK_IDENT] = "identifier", [TK_INT] = "integer",
  [TK_FLOAT] = "number", [TK_STRING] = "string", [TK_ERROR] = "invalid token",
  [TK_MODEL] = "model", [TK_BLOCK] = "block", [TK_TRAIN] = "train",
  [TK_PARAM] = "param", [TK_FOR] = "for", [TK_IN] = "in", [TK_AS] = "as",
  [TK_SCAN] = "scan", [TK_CARRY] = "carry", [TK_EMIT] = "emit",
  [TK_VARIABLE] = "variable", [TK_ON] = "on", [TK_TRUE] = "true", [TK_FALSE] = "false",
  [TK_PIPE] = "|>", [TK_ARROW] = "->", [TK_DOTDOT] = "..", [TK_AT] = "@",
  [TK_PLUS] = "+", [TK_MINUS] = "-", [TK_STAR] = "*", [TK_SLASH] = "/",
  [TK_PERCENT] = "%", [TK_EQ] = "==", [TK_NE] = "!=", [TK_LT] = "<",
  [TK_LE] = "<=", [TK_GT] = ">", [TK_GE] = ">=", [TK_ASSIGN] = "=",
  [TK_COMMA] = ",", [TK_COLON] = ":", [TK_SEMI] = ";", [TK_LPAREN] = "(",
  [TK_RPAREN] = ")", [TK_LBRACE] = "{", [TK_RBRACE] = "}", [TK_LBRACKET] = "[",
  [TK_RBRACKET] = "]", [TK_DOT] = ".",
};

const char *fe_token_spelling(TokenKind k) {
  return k >= 0 && k < TK_NKINDS && spelling[k] ? spelling[k] : "?";
}

bool fe_token_fixed(TokenKind k) {
  return k >= TK_MODEL && k < TK_NKINDS;
}

typedef struct Lexer {
  RtArena *arena;
  Diags *diags;
  const SrcFile *src;
  const char *p, *end;
  const char *line_start;   /* first byte of the current line */
  int line;
  bool bol;                 /* no token yet on the current line */
  Token *toks;              /* malloc'ed while lexing */
  int n, cap;
  bool oom;
} Lexer;

static SrcLoc loc_at(Lexer *lx, const char *start, size_t len) {
  SrcLoc l = {lx->src, lx->line, (int)(start - lx->line_start) + 1, len > 0 ? (int)len : 1};
  return l;
}

static Token *push(Lexer *lx, TokenKind k, const char *start) {
  if (lx->n == lx->cap) {
    int cap = lx->cap ? 2 * lx->cap : 256;
    Token *t = realloc(lx->toks, (size_t)cap * sizeof *t);
    if (!t) {
      lx->oom = true;
      return NULL;
    }
    lx->toks = t;
    lx->cap = cap;
  }
  Token *t = &lx->toks[lx->n++];
  memset(t, 0, sizeof *t);
  t->kind = k;
  t->text = start;
  t->loc = loc_at(lx, start, (size_t)(lx->p - start));
  t->bol = lx->bol;
  lx->bol = false;
  return t;
}

static bool is_ident_start(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c) {
  return c >= '0' && c <= '9';
}

static bool is_ident_char(int c) {
  return is_ident_start(c) || is_digit(c);
}

static int peekc(Lexer *lx, int k) {
  return lx->p + k < lx->end ? (unsigned char)lx->p[k] : -1;
}

/* Spaces, newlines and `#` comments. */
static void skip_space(Lexer *lx) {
  while (lx->p < lx->end) {
    char c = *lx->p;
    if (c == '\n') {
      lx->p++;
      lx->line++;
      lx->line_start = lx->p;
      lx->bol = true;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
      lx->p++;
    } else if (c == '#') {
      const char *nl = memchr(lx->p, '\n', (size_t)(lx->end - lx->p));
      lx->p = nl ? nl : lx->end;
    } else {
      return;
    }
  }
}

static void identifier(Lexer *lx) {
  const char *start = lx->p;
  while (lx->p < lx->end && is_ident_char(*lx->p))
    lx->p++;
  size_t len = (size_t)(lx->p - start);
  TokenKind k = TK_IDENT;
  for (int kw = TK_MODEL; kw <= TK_FALSE; kw++)
    if (strlen(spelling[kw]) == len && memcmp(spelling[kw], start, len) == 0)
      k = kw;
  Token *t = push(lx, k, start);
  if (!t)
    return;
  if (len > FE_MAX_IDENT) {
    diag_error(lx->diags, t->loc, "identifier is longer than %d characters", FE_MAX_IDENT);
    len = FE_MAX_IDENT;
  }
  t->str = rt_arena_strndup(lx->arena, start, len);
  if (!t->str)
    lx->oom = true;
}

static void skip_digits(Lexer *lx) {
  while (lx->p < lx->end && is_digit(*lx->p))
    lx->p++;
}

/* Decimal digits into an int64; false on overflow. */
static bool parse_int(const char *s, const char *end, int64_t *out) {
  int64_t v = 0;
  for (; s < end; s++) {
    int d = *s - '0';
    if (v > (INT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

static void number_value(Lexer *lx, Token *t, const char *start) {
  const char *s = start;
  size_t len = (size_t)(lx->p - start);
  if (t->kind == TK_INT) {
    if (!parse_int(s, lx->p, &t->ival)) {
      diag_error(lx->diags, t->loc, "integer literal '%.*s' does not fit in 64 bits",
                 (int)(len > 40 ? 40 : len), s);
      t->ival = INT64_MAX;
    }
    return;
  }
  char buf[128];
  if (len >= sizeof buf) {          /* so many digits: precision is moot, the exponent is not */
    char *copy = rt_arena_strndup(lx->arena, s, len);
    lx->oom |= !copy;
    t->fval = copy ? strtod(copy, NULL) : 0;
  } else {
    memcpy(buf, s, len);
    buf[len] = 0;
    t->fval = strtod(buf, NULL);
  }
  if (isinf(t->fval)) {
    diag_error(lx->diags, t->loc, "number '%.*s' is out of range", (int)(len > 40 ? 40 : len), s);
    t->fval = 0;
  }
}

/* digits ("." digits)? ([eE] [+-]? digits)?  or  "." digits exponent?
 * `1..5` is 1, `..`, 5: a '.' belongs to a number only before a digit. */
static void number(Lexer *lx) {
  const char *start = lx->p;
  TokenKind k = TK_INT;
  skip_digits(lx);
  if (peekc(lx, 0) == '.' && is_digit(peekc(lx, 1))) {
    lx->p++;
    skip_digits(lx);
    k = TK_FLOAT;
  }
  bool bad_exp = false;
  if (peekc(lx, 0) == 'e' || peekc(lx, 0) == 'E') {
    int k1 = (peekc(lx, 1) == '+' || peekc(lx, 1) == '-') ? 2 : 1;
    bad_exp = !is_digit(peekc(lx, k1));
    lx->p += k1;
    skip_digits(lx);
    k = TK_FLOAT;
  }
  const char *suffix = lx->p;
  while (lx->p < lx->end && is_ident_char(*lx->p))
    lx->p++;
  Token *t = push(lx, k, start);
  if (!t)
    return;
  if (bad_exp)
    diag_error(lx->diags, t->loc, "exponent of '%.*s' has no digits", t->loc.len, start);
  else if (suffix < lx->p)
    diag_error(lx->diags, t->loc, "invalid suffix '%.*s' on number", (int)(lx->p - suffix), suffix);
  else
    number_value(lx, t, start);
}

/* The character an escape stands for, or -1. */
static int escape(int c) {
  switch (c) {
  case '"': return '"';
  case '\\': return '\\';
  case 'n': return '\n';
  case 't': return '\t';
  default: return -1;
  }
}

/* "..." on one line with \" \\ \n \t; raw bytes (UTF-8 included) pass
 * through except NUL, which a C string cannot hold. */
static void string(Lexer *lx) {
  const char *start = lx->p++;
  const char *nl = memchr(lx->p, '\n', (size_t)(lx->end - lx->p));
  const char *stop = nl ? nl : lx->end;
  char *val = rt_arena_alloc(lx->arena, (size_t)(stop - lx->p) + 1);
  if (!val) {
    lx->oom = true;
    return;
  }
  size_t n = 0;
  bool closed = false;
  while (lx->p < stop && !closed) {
    const char *c = lx->p++;
    if (*c == '"') {
      closed = true;
    } else if (*c == '\\' && lx->p < stop) {
      int e = escape((unsigned char)*lx->p++);
      if (e < 0)
        diag_error(lx->diags, loc_at(lx, c, 2), "unknown escape sequence '\\%c' in string",
                   (lx->p[-1] > ' ' && lx->p[-1] < 127) ? lx->p[-1] : '?');
      val[n++] = e < 0 ? lx->p[-1] : (char)e;
    } else if (*c == 0) {
      diag_error(lx->diags, loc_at(lx, c, 1), "NUL byte in string");
    } else {
      val[n++] = *c;
    }
  }
  val[n] = 0;
  Token *t = push(lx, closed ? TK_STRING : TK_ERROR, start);
  if (!t)
    return;
  t->str = val;
  if (!closed)
    diag_error(lx->diags, loc_at(lx, start, 1), "unterminated string (strings end on their line)");
}

/* The fixed punctuation token at p, longest first, or TK_EOF. */
static TokenKind punct(Lexer *lx, int *len) {
  for (int k = TK_PIPE; k < TK_NKINDS; k++) {
    size_t n = strlen(spelling[k]);
    if (n == 2 && lx->p + 1 < lx->end && memcmp(lx->p, spelling[k], 2) == 0) {
      *len = 2;
      return k;
    }
  }
  for (int k = TK_PIPE; k < TK_NKINDS; k++)
    if (strlen(spelling[k]) == 1 && *lx->p == spelling[k][0]) {
      *len = 1;
      return k;
    }
  return TK_EOF;
}

static bool starts_token(Lexer *lx) {
  int c = peekc(lx, 0), len;
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v' ||
         c == '#' || c == '"' || is_ident_char(c) || punct(lx, &len) != TK_EOF;
}

/* A run of bytes that start no token: one TK_ERROR, one diagnostic. */
static void stray(Lexer *lx) {
  const char *start = lx->p;
  unsigned char c = (unsigned char)*start;
  do
    lx->p++;
  while (lx->p < lx->end && !starts_token(lx));
  if (!push(lx, TK_ERROR, start))
    return;
  SrcLoc l = loc_at(lx, start, (size_t)(lx->p - start));
  if (c == '|' || c == '!')
    diag_error(lx->diags, l, "unexpected character '%c' (did you mean '%s'?)", c,
               c == '|' ? "|>" : "!=");
  else if (c == 0)
    diag_error(lx->diags, l, "stray NUL byte in the source");
  else if (c >= 0x80)
    diag_error(lx->diags, l, "non-ASCII byte 0x%02x outside a string", c);
  else if (c < ' ' || c == 127)
    diag_error(lx->diags, l, "stray control byte 0x%02x in the source", c);
  else
    diag_error(lx->diags, l, "unexpected character '%c'", c);
}

static void next_token(Lexer *lx) {
  int c = peekc(lx, 0), len;
  if (is_ident_start(c)) {
    identifier(lx);
  } else if (is_digit(c) || (c == '.' && is_digit(peekc(lx, 1)))) {
    number(lx);
  } else if (c == '"') {
    string(lx);
  } else {
    TokenKind k = punct(lx, &len);
    if (k == TK_EOF) {
      stray(lx);
      return;
    }
    const char *start = lx->p;
    lx->p += len;
    push(lx, k, start);
  }
}

Token *fe_lex(RtArena *a, const SrcFile *src, Diags *d, int *ntokens) {
  Lexer lx = {.arena = a, .diags = d, .src = src, .p = src->text,
              .end = src->text + src->len, .line_start = src->text, .line = 1, .bol = true};
  for (;;) {
    skip_space(&lx);
    if (lx.p >= lx.end || lx.oom)
      break;
    next_token(&lx);
  }
  push(&lx, TK_EOF, lx.p);
  Token *out = lx.oom ? NULL : rt_arena_alloc(a, (size_t)lx.n * sizeof *out);
  if (out)
    memcpy(out, lx.toks, (size_t)lx.n * sizeof *out);
  free(lx.toks);
  *ntokens = out ? lx.n : 0;
  return out;
}

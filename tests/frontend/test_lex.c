/* The lexer: every token kind, positions (line, column, length, first on
 * its line), literal values, and every lexical error with its location. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"

typedef struct {
  RtArena *arena;
  Diags diags;
  SrcFile src;
  Token *toks;
  int n;
} Lexed;

static Lexed *lex_n(const char *text, size_t len) {
  Lexed *l = calloc(1, sizeof *l);
  l->arena = rt_arena_new();
  diag_init(&l->diags, l->arena);
  l->src = (SrcFile){"t.kiln", text, len};
  l->toks = fe_lex(l->arena, &l->src, &l->diags, &l->n);
  assert_non_null(l->toks);
  assert_int_equal(l->toks[l->n - 1].kind, TK_EOF);
  return l;
}

static Lexed *lex(const char *text) {
  return lex_n(text, strlen(text));
}

static void done(Lexed *l) {
  rt_arena_free(l->arena);
  free(l);
}

/* The kinds of all tokens before EOF, then -1. */
static void check_kinds(const char *text, ...) {
  Lexed *l = lex(text);
  va_list ap;
  va_start(ap, text);
  int i = 0;
  for (int k; (k = va_arg(ap, int)) >= 0; i++) {
    assert_true(i < l->n - 1);
    if ((int)l->toks[i].kind != k)
      fail_msg("%s: token %d is %s, expected %s", text, i, fe_token_spelling(l->toks[i].kind),
               fe_token_spelling(k));
  }
  va_end(ap);
  assert_int_equal(i, l->n - 1);
  assert_int_equal(l->diags.nerrors, 0);
  done(l);
}

static void test_keywords(void **state) {
  check_kinds("model block train param for in as scan carry emit variable on true false",
              TK_MODEL, TK_BLOCK, TK_TRAIN, TK_PARAM, TK_FOR, TK_IN, TK_AS, TK_SCAN,
              TK_CARRY, TK_EMIT, TK_VARIABLE, TK_ON, TK_TRUE, TK_FALSE, -1);
  /* type words and keyword prefixes are identifiers */
  check_kinds("f32 f64 i32 i64 u8 bool int float str models _in in_ x9 _",
              TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT,
              TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, TK_IDENT, -1);
}

static void test_punctuation(void **state) {
  check_kinds("|> -> .. @ + - * / % == != < <= > >= = , : ; ( ) { } [ ] .",
              TK_PIPE, TK_ARROW, TK_DOTDOT, TK_AT, TK_PLUS, TK_MINUS, TK_STAR, TK_SLASH,
              TK_PERCENT, TK_EQ, TK_NE, TK_LT, TK_LE, TK_GT, TK_GE, TK_ASSIGN, TK_COMMA,
              TK_COLON, TK_SEMI, TK_LPAREN, TK_RPAREN, TK_LBRACE, TK_RBRACE, TK_LBRACKET,
              TK_RBRACKET, TK_DOT, -1);
  /* longest match without spaces */
  check_kinds("a|>b->c<=d>=e==f!=g<h>i", TK_IDENT, TK_PIPE, TK_IDENT, TK_ARROW, TK_IDENT,
              TK_LE, TK_IDENT, TK_GE, TK_IDENT, TK_EQ, TK_IDENT, TK_NE, TK_IDENT, TK_LT,
              TK_IDENT, TK_GT, TK_IDENT, -1);
  check_kinds("x-1 a.T", TK_IDENT, TK_MINUS, TK_INT, TK_IDENT, TK_DOT, TK_IDENT, -1);
  check_kinds("", -1);
  check_kinds("  # only a comment", -1);
}

static void test_numbers(void **state) {
  Lexed *l = lex("0 42 9223372036854775807 0.5 1e-3 .5 2E+2 1.5e3 3.25");
  const struct { TokenKind k; int64_t i; double f; } want[] = {
    {TK_INT, 0, 0}, {TK_INT, 42, 0}, {TK_INT, INT64_MAX, 0}, {TK_FLOAT, 0, 0.5},
    {TK_FLOAT, 0, 1e-3}, {TK_FLOAT, 0, 0.5}, {TK_FLOAT, 0, 200}, {TK_FLOAT, 0, 1500},
    {TK_FLOAT, 0, 3.25}};
  assert_int_equal(l->n - 1, 9);
  for (int i = 0; i < 9; i++) {
    assert_int_equal(l->toks[i].kind, want[i].k);
    if (want[i].k == TK_INT)
      assert_true(l->toks[i].ival == want[i].i);
    else
      assert_true(l->toks[i].fval == want[i].f);
  }
  assert_int_equal(l->diags.nerrors, 0);
  done(l);
  /* a '.' joins a number only before a digit: ranges and fields */
  check_kinds("0..10", TK_INT, TK_DOTDOT, TK_INT, -1);
  check_kinds("1..T", TK_INT, TK_DOTDOT, TK_IDENT, -1);
  check_kinds("1.T", TK_INT, TK_DOT, TK_IDENT, -1);
  check_kinds("x..5", TK_IDENT, TK_DOTDOT, TK_INT, -1);
  check_kinds("1e3", TK_FLOAT, -1);
}

static void test_strings(void **state) {
  Lexed *l = lex("\"plain\" \"a\\\"b\" \"back\\\\slash\" \"nl\\ntab\\t\" \"\" \"caf\xc3\xa9 *.weight\"");
  const char *want[] = {"plain", "a\"b", "back\\slash", "nl\ntab\t", "", "caf\xc3\xa9 *.weight"};
  assert_int_equal(l->n - 1, 6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(l->toks[i].kind, TK_STRING);
    assert_string_equal(l->toks[i].str, want[i]);
  }
  assert_int_equal(l->toks[1].loc.len, 6);   /* the source text, quotes included */
  assert_int_equal(l->diags.nerrors, 0);
  done(l);
}

static void test_identifiers(void **state) {
  Lexed *l = lex("conv2d _x A_b9");
  assert_string_equal(l->toks[0].str, "conv2d");
  assert_string_equal(l->toks[1].str, "_x");
  assert_string_equal(l->toks[2].str, "A_b9");
  assert_int_equal(l->toks[0].loc.len, 6);
  done(l);
  char name[FE_MAX_IDENT + 1];
  memset(name, 'a', FE_MAX_IDENT);
  name[FE_MAX_IDENT] = 0;
  l = lex(name);                              /* exactly at the limit: fine */
  assert_int_equal(l->diags.nerrors, 0);
  assert_int_equal(strlen(l->toks[0].str), FE_MAX_IDENT);
  done(l);
}

static void test_positions(void **state) {
  /* line 1: "model m(" ; line 2: tab, "x" ; line 3 (CRLF before it): "  |> f" */
  Lexed *l = lex("model m(\n\tx\r\n  |> f # c\n\n)");
  const struct { TokenKind k; int line, col, len; bool bol; } want[] = {
    {TK_MODEL, 1, 1, 5, true}, {TK_IDENT, 1, 7, 1, false}, {TK_LPAREN, 1, 8, 1, false},
    {TK_IDENT, 2, 2, 1, true}, {TK_PIPE, 3, 3, 2, true}, {TK_IDENT, 3, 6, 1, false},
    {TK_RPAREN, 5, 1, 1, true}, {TK_EOF, 5, 2, 1, false}};
  assert_int_equal(l->n, 8);
  for (int i = 0; i < 8; i++) {
    const Token *t = &l->toks[i];
    assert_int_equal(t->kind, want[i].k);
    assert_int_equal(t->loc.line, want[i].line);
    assert_int_equal(t->loc.col, want[i].col);
    assert_int_equal(t->loc.len, want[i].len);
    assert_int_equal(t->bol, want[i].bol);
    assert_ptr_equal(t->loc.file, &l->src);
  }
  assert_memory_equal(l->toks[4].text, "|>", 2);
  done(l);
}

/* Lexing `text` gives exactly one error, at line:col with that length,
 * whose message contains `msg`. */
static void check_error(const char *text, size_t len, int line, int col, int clen,
                        const char *msg) {
  Lexed *l = lex_n(text, len);
  if (l->diags.nerrors != 1)
    fail_msg("%s: %d errors, expected 1", text, l->diags.nerrors);
  const Diag *g = l->diags.head;
  if (g->loc.line != line || g->loc.col != col || g->loc.len != clen || !strstr(g->msg, msg))
    fail_msg("'%s': got %d:%d len %d '%s', expected %d:%d len %d '%s'", text, g->loc.line,
             g->loc.col, g->loc.len, g->msg, line, col, clen, msg);
  done(l);
}

#define CHECK_ERROR(text, line, col, len, msg) \
  check_error(text, sizeof(text) - 1, line, col, len, msg)

static void test_errors(void **state) {
  CHECK_ERROR("x = \"abc\ny", 1, 5, 1, "unterminated string");
  CHECK_ERROR("x = \"abc", 1, 5, 1, "unterminated string");
  CHECK_ERROR("\"a\\qb\"", 1, 3, 2, "unknown escape sequence '\\q'");
  CHECK_ERROR("\"a\0b\"", 1, 3, 1, "NUL byte in string");
  CHECK_ERROR("n = 9223372036854775808", 1, 5, 19, "does not fit in 64 bits");
  CHECK_ERROR("1e999", 1, 1, 5, "out of range");
  CHECK_ERROR(" 1e+", 1, 2, 3, "exponent of '1e+' has no digits");
  CHECK_ERROR("2ex", 1, 1, 3, "exponent");
  CHECK_ERROR("3x", 1, 1, 2, "invalid suffix 'x' on number");
  CHECK_ERROR("x $ y", 1, 3, 1, "unexpected character '$'");
  CHECK_ERROR("a ?`~ b", 1, 3, 3, "unexpected character '?'");   /* one error per run */
  CHECK_ERROR("a | b", 1, 3, 1, "did you mean '|>'");
  CHECK_ERROR("a ! b", 1, 3, 1, "did you mean '!='");
  CHECK_ERROR("a \0 b", 1, 3, 1, "stray NUL byte");
  CHECK_ERROR("x\n  caf\xc3\xa9", 2, 6, 2, "non-ASCII byte 0xc3 outside a string");
  CHECK_ERROR("a \x01 b", 1, 3, 1, "stray control byte 0x01");
  CHECK_ERROR("a \x7f b", 1, 3, 1, "stray control byte 0x7f");
  char name[FE_MAX_IDENT + 3];
  memset(name, 'b', sizeof name);
  name[0] = ' ';
  name[sizeof name - 1] = 0;
  check_error(name, strlen(name), 1, 2, FE_MAX_IDENT + 1, "identifier is longer than 255");
}

/* After an error the lexer carries on: all errors of a file, in order,
 * and the tokens around them. */
static void test_recovery(void **state) {
  Lexed *l = lex("a $ b\n\"open\nc 99999999999999999999 d\n");
  assert_int_equal(l->diags.nerrors, 3);
  const Diag *g = l->diags.head;
  assert_int_equal(g->loc.line, 1);
  assert_int_equal(g->next->loc.line, 2);
  assert_int_equal(g->next->next->loc.line, 3);
  /* stray bytes and the unterminated string are TK_ERROR tokens */
  const TokenKind want[] = {TK_IDENT, TK_ERROR, TK_IDENT, TK_ERROR, TK_IDENT, TK_INT,
                            TK_IDENT, TK_EOF};
  assert_int_equal(l->n, 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(l->toks[i].kind, want[i]);
  assert_int_equal(l->toks[1].loc.col, 3);
  assert_string_equal(l->toks[3].str, "open");
  assert_int_equal(l->toks[3].loc.len, 5);
  assert_true(l->toks[5].ival == INT64_MAX);
  assert_true(l->toks[3].bol);
  assert_true(l->toks[4].bol);
  done(l);
}

static void test_spelling(void **state) {
  assert_string_equal(fe_token_spelling(TK_PIPE), "|>");
  assert_string_equal(fe_token_spelling(TK_VARIABLE), "variable");
  assert_string_equal(fe_token_spelling(TK_EOF), "end of file");
  assert_true(fe_token_fixed(TK_MODEL));
  assert_true(fe_token_fixed(TK_DOT));
  assert_false(fe_token_fixed(TK_IDENT));
  for (int k = 0; k < TK_NKINDS; k++)
    assert_string_not_equal(fe_token_spelling(k), "?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_keywords),   cmocka_unit_test(test_punctuation),
    cmocka_unit_test(test_numbers),    cmocka_unit_test(test_strings),
    cmocka_unit_test(test_identifiers), cmocka_unit_test(test_positions),
    cmocka_unit_test(test_errors),     cmocka_unit_test(test_recovery),
    cmocka_unit_test(test_spelling),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

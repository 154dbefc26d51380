/* The strict JSON parser: values, escapes and UTF-8, integers at the edges
 * of int64, and every kind of malformed text rejected with its offset. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include "runtime/rt.h"

static RtArena *arena;

static int setup(void **state) { return (arena = rt_arena_new()) ? 0 : -1; }
static int teardown(void **state) { rt_arena_free(arena); return 0; }

static const RtJson *parse_ok(const char *text) {
  RtJson *v;
  RtError err;
  if (rt_json_parse(arena, text, strlen(text), "t.json", &v, &err) != RT_OK)
    fail_msg("%s", err.msg);
  return v;
}

static void test_values(void **state) {
  const RtJson *v = parse_ok(" {\"a\": [1, -2.5e3, true, false, null, \"x\"], \"b\": {}, \"c\": [] }\n");
  assert_int_equal(v->kind, RT_JSON_OBJ);
  assert_int_equal(v->n, 3);
  assert_string_equal(v->keys[1], "b");
  const RtJson *a = rt_json_get(v, "a");
  assert_int_equal(a->kind, RT_JSON_ARR);
  assert_int_equal(a->n, 6);
  assert_true(a->items[0].is_int && a->items[0].i == 1 && a->items[0].num == 1.0);
  assert_true(!a->items[1].is_int && a->items[1].num == -2500.0);
  assert_true(a->items[2].kind == RT_JSON_BOOL && a->items[2].b);
  assert_true(a->items[3].kind == RT_JSON_BOOL && !a->items[3].b);
  assert_int_equal(a->items[4].kind, RT_JSON_NULL);
  assert_string_equal(a->items[5].str, "x");
  assert_int_equal(rt_json_get(v, "b")->n, 0);
  assert_int_equal(rt_json_get(v, "c")->kind, RT_JSON_ARR);
  assert_null(rt_json_get(v, "d"));
  assert_null(rt_json_get(a, "a"));
  assert_true(parse_ok("0.125")->num == 0.125);
  assert_true(parse_ok("-0")->is_int);
  assert_true(parse_ok("1E2")->num == 100.0);
  assert_true(parse_ok("1e-2")->num == 0.01);
}

static void test_integers(void **state) {
  const RtJson *v = parse_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, 1.0]");
  assert_true(v->items[0].is_int && v->items[0].i == INT64_MAX);
  assert_true(v->items[1].is_int && v->items[1].i == INT64_MIN);
  assert_false(v->items[2].is_int);            /* too big: only the double */
  assert_true(v->items[2].num == 9223372036854775808.0);
  assert_false(v->items[3].is_int);            /* a fraction, even if whole */
}

static void test_strings(void **state) {
  const RtJson *v = parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20ac \\ud83d\\ude00 \xc3\xbc\"");
  assert_string_equal(v->str, "q\" b\\ s/ \b\f\n\r\t \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xbc");
  /* The length is what counts, not a terminator: "[1]" out of "[1]xyz". */
  RtJson *w;
  assert_int_equal(rt_json_parse(arena, "[1]xyz", 3, "t", &w, NULL), RT_OK);
  assert_int_equal(w->n, 1);
}

static void test_errors(void **state) {
  static const struct { const char *text, *needle; } cases[] = {
    {"", "unexpected end"},           {"   ", "unexpected end"},
    {"[1,]", "unexpected"},           {"{\"a\":1,}", "expected a string"},
    {"01", "text after"},             {".5", "unexpected"},
    {"1.", "digits must follow '.'"}, {"1e", "exponent"},
    {"-", "bad number"},              {"+1", "unexpected"},
    {"\"\\x\"", "bad escape"},        {"\"\\u12\"", "bad escape"},
    {"\"\\ud800\"", "lone high"},     {"\"\\ud800\\u0041\"", "lone high"},
    {"\"\\udc00\"", "lone low"},      {"\"\\u0000\"", "NUL"},
    {"\"a\tb\"", "control"},          {"\"\xff\"", "UTF-8"},
    {"\"\xc0\xaf\"", "UTF-8"},        {"\"\xed\xa0\x80\"", "UTF-8"},
    {"\"\xf4\x90\x80\x80\"", "UTF-8"}, {"\"\xe2\x82\"", "UTF-8"},
    {"\"abc", "unterminated"},        {"\"abc\\", "unterminated"},
    {"[1 2]", "expected ',' or ']'"}, {"{\"a\" 1}", "expected ':'"},
    {"{1:2}", "expected a string"},   {"{\"a\":1 \"b\":2}", "expected ',' or '}'"},
    {"tru", "unexpected"},            {"nul", "unexpected"},
    {"{} x", "text after"},           {"[", "unexpected end"},
    {"NaN", "unexpected"},            {"Infinity", "unexpected"},
    {"'a'", "unexpected"},            {"[1]]", "text after"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    RtJson *v = (RtJson *)1;
    RtError err = {{0}};
    RtStatus st = rt_json_parse(arena, cases[i].text, strlen(cases[i].text), "t.json", &v, &err);
    if (st != RT_ERR_FORMAT || !strstr(err.msg, cases[i].needle) || !strstr(err.msg, "t.json"))
      fail_msg("case %zu '%s': status %s, message '%s'", i, cases[i].text, rt_status_name(st), err.msg);
    assert_null(v);
  }
}

static void test_depth(void **state) {
  char text[2 * RT_JSON_MAX_DEPTH + 3];
  int d = RT_JSON_MAX_DEPTH;
  memset(text, '[', (size_t)d);
  memset(text + d, ']', (size_t)d);
  text[2 * d] = 0;
  parse_ok(text);                                  /* exactly the limit */
  char deeper[2 * RT_JSON_MAX_DEPTH + 3];
  memset(deeper, '[', (size_t)d + 1);
  memset(deeper + d + 1, ']', (size_t)d + 1);
  deeper[2 * d + 2] = 0;
  RtJson *v;
  RtError err;
  assert_int_equal(rt_json_parse(arena, deeper, strlen(deeper), "t", &v, &err), RT_ERR_FORMAT);
  assert_non_null(strstr(err.msg, "nesting too deep"));
  static char huge[200001];                       /* far deeper: no stack overflow */
  memset(huge, '{', sizeof huge - 1);
  assert_int_equal(rt_json_parse(arena, huge, sizeof huge - 1, "t", &v, &err), RT_ERR_FORMAT);
}

static void test_utf8_valid(void **state) {
  assert_true(rt_utf8_valid(""));
  assert_true(rt_utf8_valid("conv1.weight"));
  assert_true(rt_utf8_valid("\xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80"));
  assert_false(rt_utf8_valid("\xff"));
  assert_false(rt_utf8_valid("\xc0\x80"));         /* overlong NUL */
  assert_false(rt_utf8_valid("\xed\xb0\x80"));     /* a surrogate */
  assert_false(rt_utf8_valid("abc\xe2\x82"));      /* cut short */
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_values), cmocka_unit_test(test_integers),
    cmocka_unit_test(test_strings), cmocka_unit_test(test_errors),
    cmocka_unit_test(test_depth),  cmocka_unit_test(test_utf8_valid),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

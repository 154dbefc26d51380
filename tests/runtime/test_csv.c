/* CSV: small files against hand-written values (header detection, labels by
 * index, from the end and by name, quoting, CRLF, BOM, blank lines, gzip),
 * a table of malformed inputs each giving its status and the exact place
 * "name:line:col", and the real digits.csv.gz against numbers computed
 * with numpy. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include "data_fixtures.h"

static RtCsv read_ok(const char *text, RtCsvOptions opt) {
  RtCsv c;
  RtError err = {{0}};
  if (rt_csv_read_mem(text, strlen(text), "t.csv", &opt, &c, &err) != RT_OK)
    fail_msg("%s", err.msg);
  return c;
}

static void expect_x(const RtCsv *c, int64_t rows, int64_t cols, const float *want) {
  assert_int_equal(c->x.dtype, RT_F32);
  assert_int_equal(c->x.rank, 2);
  assert_int_equal(c->x.shape[0], rows);
  assert_int_equal(c->x.shape[1], cols);
  for (int64_t k = 0; k < rows * cols; k++)
    if (((const float *)c->x.data)[k] != want[k])
      fail_msg("x[%lld] = %g, want %g", (long long)k, ((const float *)c->x.data)[k], want[k]);
}

static void expect_y(const RtCsv *c, int64_t rows, const int64_t *want) {
  assert_int_equal(c->y.dtype, RT_I64);
  assert_int_equal(c->y.rank, 1);
  assert_int_equal(c->y.shape[0], rows);
  for (int64_t k = 0; k < rows; k++)
    assert_int_equal(((const int64_t *)c->y.data)[k], want[k]);
}

static void test_plain_numbers(void **state) {
  RtCsv c = read_ok("1,2.5,-3\n4e2, 5 ,0.125\n", (RtCsvOptions){0});
  expect_x(&c, 2, 3, (const float[]){1, 2.5f, -3, 400, 5, 0.125f});
  assert_null(c.names);
  assert_null(c.y.data);
  assert_int_equal(c.label_col, -1);
  assert_int_equal(c.ncols, 3);
  rt_csv_free(&c);
  assert_null(c.x.data);
}

static void test_header_and_label(void **state) {
  /* detected header, label by name in the middle, scale 0.5, CRLF, a
   * quoted name with a comma and a quote, blank lines, no final newline */
  const char *text = "\xef\xbb\xbf" "a,\"b, \"\"q\"\"\",label,c\r\n"
                     "1,2,3,4\r\n\r\n  \n5,6,7,8";
  RtCsv c = read_ok(text, (RtCsvOptions){.has_label = true, .label_name = "label", .scale = 0.5f});
  expect_x(&c, 2, 3, (const float[]){0.5f, 1, 2, 2.5f, 3, 4});
  expect_y(&c, 2, (const int64_t[]){3, 7});
  assert_int_equal(c.ncols, 4);
  assert_int_equal(c.label_col, 2);
  assert_string_equal(c.names[0], "a");
  assert_string_equal(c.names[1], "b, \"q\"");
  assert_string_equal(c.names[3], "c");
  rt_csv_free(&c);
}

static void test_label_positions(void **state) {
  const char *text = "1,2,3\n4,5,6\n";
  RtCsv c = read_ok(text, (RtCsvOptions){.has_label = true, .label = -1});
  expect_x(&c, 2, 2, (const float[]){1, 2, 4, 5});
  expect_y(&c, 2, (const int64_t[]){3, 6});
  rt_csv_free(&c);
  c = read_ok(text, (RtCsvOptions){.has_label = true, .label = 0});
  expect_x(&c, 2, 2, (const float[]){2, 3, 5, 6});
  expect_y(&c, 2, (const int64_t[]){1, 4});
  rt_csv_free(&c);
  c = read_ok(text, (RtCsvOptions){.has_label = true, .label = -3});
  expect_y(&c, 2, (const int64_t[]){1, 4});
  rt_csv_free(&c);
  c = read_ok("1,2.0\n3,-4e0\n", (RtCsvOptions){.has_label = true, .label = 1});   /* integral floats */
  expect_y(&c, 2, (const int64_t[]){2, -4});
  rt_csv_free(&c);
}

static void test_header_modes(void **state) {
  RtCsv c = read_ok("1,2\n3,4\n", (RtCsvOptions){.header = RT_CSV_HEADER_YES});
  expect_x(&c, 1, 2, (const float[]){3, 4});
  assert_string_equal(c.names[1], "2");
  rt_csv_free(&c);
  c = read_ok("\"1\", \"2\"\n3,4\n", (RtCsvOptions){0});   /* quoted numbers are numbers */
  expect_x(&c, 2, 2, (const float[]){1, 2, 3, 4});
  rt_csv_free(&c);
  RtError err;
  RtCsvOptions no = {.header = RT_CSV_HEADER_NO};
  assert_int_equal(rt_csv_read_mem("x,y\n1,2\n", 8, "h.csv", &no, &c, &err), RT_ERR_FORMAT);
  assert_string_equal(err.msg, "h.csv:1:1: field 1 is not a number: 'x'");
}

static void test_gzip(void **state) {
  const char *text = "p,q\n1.5,2\n-1,0\n";
  size_t len;
  unsigned char *gz = gzip_mem(text, strlen(text), &len);
  RtCsv c;
  RtError err;
  assert_int_equal(rt_csv_read_mem(gz, len, "t.csv.gz", NULL, &c, &err), RT_OK);
  expect_x(&c, 2, 2, (const float[]){1.5f, 2, -1, 0});
  rt_csv_free(&c);
  write_file(scratch_path("plain_name.csv"), gz, len);   /* gzip is told by content, not name */
  assert_int_equal(rt_csv_read(scratch_path("plain_name.csv"), NULL, &c, &err), RT_OK);
  expect_x(&c, 2, 2, (const float[]){1.5f, 2, -1, 0});
  rt_csv_free(&c);
  assert_int_equal(rt_csv_read_mem(gz, len - 9, "cut.csv.gz", NULL, &c, &err), RT_ERR_FORMAT);
  assert_string_equal(err.msg, "cut.csv.gz: gzip: truncated gzip data");
  assert_null(c.x.data);
  free(gz);
}

typedef struct {
  const char *text;
  RtCsvOptions opt;
  RtStatus st;
  const char *msg;           /* the whole message */
} BadCase;

#define LAST {.has_label = true, .label = -1}

static const BadCase bad_cases[] = {
  {"1,2\n3,x\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is not a number: 'x'"},
  {"1,2\n3, nan\n", {0}, RT_ERR_FORMAT, "b.csv:2:4: field 2 is NaN: 'nan'"},
  {"1,2\n3,NaN\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is NaN: 'NaN'"},
  {"1,2\n3,\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is empty"},
  {"1,2\n,3\n", {0}, RT_ERR_FORMAT, "b.csv:2:1: field 1 is empty"},
  {"1,2\n3,\"\"\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is empty"},
  {"1,2\n3,inf\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is infinite or out of range: 'inf'"},
  {"1,2\n3,1e400\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is infinite or out of range: '1e400'"},
  {"1,2\n3,-1e39\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is out of the f32 range: '-1e39'"},
  {"1,2\n3,4,5\n", {0}, RT_ERR_FORMAT, "b.csv:2:5: row has 3 fields, expected 2"},
  {"1,2\n3,4,\n", {0}, RT_ERR_FORMAT, "b.csv:2:5: row has 3 fields, expected 2"},
  {"1,2\n3\n", {0}, RT_ERR_FORMAT, "b.csv:2:2: row has 1 field, expected 2"},
  {"1,2\r\n3\r\n4,5", {0}, RT_ERR_FORMAT, "b.csv:2:2: row has 1 field, expected 2"},
  {"1,2\n3,4x\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is not a number: '4x'"},
  {"1,2\n3,\x01\xff\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 is not a number: '\\x01\\xff'"},
  {"1,2\n3,1234567890x234567890123456789012345678901234567890\n", {0}, RT_ERR_FORMAT,
   "b.csv:2:3: field 2 is not a number: '1234567890x23456789012345678901234567890...'"},
  {"1,2\n3,12345678901234567890123456789012345678901234567890\n", {0}, RT_ERR_FORMAT,
   "b.csv:2:3: field 2 is out of the f32 range: '1234567890123456789012345678901234567890...'"},
  {"a,b\n1,x\n", {0}, RT_ERR_FORMAT, "b.csv:2:3: field 2 (b) is not a number: 'x'"},
  {"\"a\nb\",c\n1,x\n", {0}, RT_ERR_FORMAT, "b.csv:3:3: field 2 (c) is not a number: 'x'"},
  {"1,\"2\n", {0}, RT_ERR_FORMAT, "b.csv:1:3: unterminated quoted field"},
  {"\"a\"x,b\n1,2\n", {0}, RT_ERR_FORMAT, "b.csv:1:4: text after a closing quote"},
  {"", {0}, RT_ERR_FORMAT, "b.csv: no data rows"},
  {"\n\n", {0}, RT_ERR_FORMAT, "b.csv: no data rows"},
  {"a,b\n", {0}, RT_ERR_FORMAT, "b.csv: no data rows"},
  {"1,2.5\n", LAST, RT_ERR_FORMAT, "b.csv:1:3: field 2 is a label but not an integer: '2.5'"},
  {"1,1e300\n", LAST, RT_ERR_FORMAT, "b.csv:1:3: field 2 is a label but not an integer: '1e300'"},
  {"1,x\n", {.header = RT_CSV_HEADER_NO, .has_label = true, .label = 1}, RT_ERR_FORMAT,
   "b.csv:1:3: field 2 is not a number: 'x'"},
  {"1,2\n", {.has_label = true, .label_name = "y"}, RT_ERR_ARG,
   "b.csv: label column 'y' is named but the file has no header"},
  {"a,b\n1,2\n", {.has_label = true, .label_name = "y"}, RT_ERR_ARG,
   "b.csv: no column named 'y' in the header"},
  {"y,b,y\n1,2,3\n", {.has_label = true, .label_name = "y"}, RT_ERR_ARG,
   "b.csv: label column 'y' appears twice (fields 1 and 3)"},
  {"1,2\n", {.has_label = true, .label = 2}, RT_ERR_ARG,
   "b.csv: label column 2 is outside the file's 2 columns"},
  {"1,2\n", {.has_label = true, .label = -3}, RT_ERR_ARG,
   "b.csv: label column -3 is outside the file's 2 columns"},
  {"1\n2\n", LAST, RT_ERR_ARG, "b.csv: the label is the only column, no features are left"},
  {"1,2\n", {.scale = INFINITY}, RT_ERR_ARG, "b.csv: scale inf is not finite"},
  {"\x1f\x8b\x08\x00garbage", {0}, RT_ERR_FORMAT, "b.csv: gzip: "},
};

static void test_malformed(void **state) {
  for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
    const BadCase *b = &bad_cases[i];
    RtCsv c;
    RtError err = {{0}};
    RtStatus st = rt_csv_read_mem(b->text, strlen(b->text), "b.csv", &b->opt, &c, &err);
    if (st != b->st || strncmp(err.msg, b->msg, strlen(b->msg)) != 0 ||
        (b->msg[strlen(b->msg) - 1] != ' ' && strlen(err.msg) != strlen(b->msg)))
      fail_msg("case %zu: got %s '%s', want %s '%s'", i, rt_status_name(st), err.msg,
               rt_status_name(b->st), b->msg);
    assert_null(c.x.data);
    assert_null(c.y.data);
    assert_null(c.names);
    assert_null(c.arena);
    /* a NULL RtError is allowed and gives the same status */
    assert_int_equal(rt_csv_read_mem(b->text, strlen(b->text), "b.csv", &b->opt, &c, NULL), b->st);
  }
}

static void test_missing_file(void **state) {
  RtCsv c;
  RtError err;
  assert_int_equal(rt_csv_read(scratch_path("absent.csv"), NULL, &c, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "absent.csv: cannot open"));
}

/* A long file whose bad cell is far down: the line count is exact. */
static void test_line_numbers(void **state) {
  size_t cap = 20000, at = 0;
  char *text = malloc(cap);
  for (int i = 0; i < 1000; i++)
    at += (size_t)snprintf(text + at, cap - at, i == 777 ? "%d,oops\n" : "%d,%d\n", i, i);
  RtCsv c;
  RtError err;
  assert_int_equal(rt_csv_read_mem(text, at, "long.csv", NULL, &c, &err), RT_ERR_FORMAT);
  assert_string_equal(err.msg, "long.csv:778:5: field 2 is not a number: 'oops'");
  free(text);
}

/* examples/data/digits.csv.gz: 1,797 rows of 64 pixels (0..16) and a label;
 * the reference numbers come from numpy.loadtxt. */
static void test_digits(void **state) {
  RtCsv c;
  RtError err;
  RtCsvOptions opt = {.has_label = true, .label = -1, .scale = 1.0f / 16};
  if (rt_csv_read(example_path("digits.csv.gz"), &opt, &c, &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal(c.x.shape[0], 1797);
  assert_int_equal(c.x.shape[1], 64);
  assert_int_equal(c.y.shape[0], 1797);
  const float *x = c.x.data;
  const int64_t *y = c.y.data;
  static const int first[8] = {0, 0, 5, 13, 9, 1, 0, 0};
  for (int k = 0; k < 8; k++)
    assert_true(x[k] == first[k] / 16.0f);
  static const int last[8] = {0, 0, 10, 14, 8, 1, 0, 0};
  for (int k = 0; k < 8; k++)
    assert_true(x[1796 * 64 + k] == last[k] / 16.0f);
  int64_t counts[10] = {0};
  double sum = 0;
  for (int64_t i = 0; i < 1797; i++) {
    assert_true(y[i] >= 0 && y[i] < 10);
    counts[y[i]]++;
  }
  for (int64_t k = 0; k < 1797 * 64; k++)
    sum += x[k];
  static const int64_t want[10] = {178, 182, 177, 183, 181, 182, 181, 179, 174, 180};
  for (int k = 0; k < 10; k++)
    assert_int_equal(counts[k], want[k]);
  assert_true(sum == 561718.0 / 16);   /* every value is a multiple of 1/16: exact */
  assert_int_equal(y[0], 0);
  assert_int_equal(y[1796], 8);
  rt_csv_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_plain_numbers), cmocka_unit_test(test_header_and_label),
    cmocka_unit_test(test_label_positions), cmocka_unit_test(test_header_modes),
    cmocka_unit_test(test_gzip), cmocka_unit_test(test_malformed),
    cmocka_unit_test(test_missing_file), cmocka_unit_test(test_line_numbers),
    cmocka_unit_test(test_digits),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

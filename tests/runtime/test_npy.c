/* .npy: files written by numpy read back exactly, what we write is
 * byte-identical to numpy's own output, and every malformed input is an
 * RT_ERR_FORMAT with a message naming the file, never a crash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fixtures.h"

static const char *data_path(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", RT_TEST_DATA, name);
  return buf;
}

static void check_fixture(const RtTensor *t, RtDType dt, int rank) {
  assert_int_equal(t->dtype, dt);
  assert_int_equal(t->rank, rank);
  for (int i = 0; i < rank; i++)
    assert_int_equal(t->shape[i], fixture_shapes[rank][i]);
  assert_int_equal((uintptr_t)t->data % RT_ALIGN, 0);
  for (int64_t k = 0; k < rt_numel(t); k++)
    assert_true(tensor_get(t, k) == fixture_value(dt, k));
}

/* Every dtype at ranks 0..4, as numpy wrote them. */
static void test_read_numpy_files(void **state) {
  for (int dt = 0; dt < RT_NDTYPES; dt++) {
    for (int rank = 0; rank <= 4; rank++) {
      char name[64];
      snprintf(name, sizeof name, "%s_r%d.npy", rt_dtype_name((RtDType)dt), rank);
      RtTensor t;
      RtError err;
      RtStatus st = rt_npy_read(data_path(name), &t, &err);
      if (st != RT_OK)
        fail_msg("%s", err.msg);
      check_fixture(&t, (RtDType)dt, rank);
      rt_tensor_free(&t);
    }
  }
}

static void test_read_versions(void **state) {
  static const char *names[] = {"v2_f32.npy", "v3_f32.npy"};
  for (int i = 0; i < 2; i++) {
    RtTensor t;
    RtError err;
    assert_int_equal(rt_npy_read(data_path(names[i]), &t, &err), RT_OK);
    check_fixture(&t, RT_F32, 2);
    rt_tensor_free(&t);
  }
  RtTensor t;
  assert_int_equal(rt_npy_read(data_path("empty_f32.npy"), &t, NULL), RT_OK);
  assert_int_equal(t.rank, 2);
  assert_int_equal(t.shape[0], 0);
  assert_int_equal(t.shape[1], 3);
  rt_tensor_free(&t);
}

static void expect_file_error(const char *name, const char *needle) {
  RtTensor t;
  RtError err = {{0}};
  assert_int_equal(rt_npy_read(data_path(name), &t, &err), RT_ERR_FORMAT);
  assert_null(t.data);
  assert_non_null(strstr(err.msg, name));
  if (!strstr(err.msg, needle))
    fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void test_reject_numpy_files(void **state) {
  expect_file_error("fortran_f32.npy", "fortran_order");
  expect_file_error("bigendian_f32.npy", "big-endian");
  expect_file_error("f16.npy", "'<f2'");
  RtTensor t;
  RtError err;
  assert_int_equal(rt_npy_read(scratch_path("missing.npy"), &t, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "missing.npy"));
}

/* Our writer produces numpy's exact bytes, and reads back what it wrote. */
static void test_write_matches_numpy(void **state) {
  for (int dt = 0; dt < RT_NDTYPES; dt++) {
    for (int rank = 0; rank <= 4; rank++) {
      char name[64];
      snprintf(name, sizeof name, "%s_r%d.npy", rt_dtype_name((RtDType)dt), rank);
      RtTensor t = fixture_tensor((RtDType)dt, rank), back;
      RtError err;
      assert_int_equal(rt_npy_write(scratch_path(name), &t, &err), RT_OK);
      size_t n1 = 0, n2 = 0;
      unsigned char *ours = slurp(scratch_path(name), &n1), *theirs = slurp(data_path(name), &n2);
      assert_non_null(ours);
      assert_non_null(theirs);
      assert_int_equal(n1, n2);
      assert_memory_equal(ours, theirs, n1);
      assert_int_equal(rt_npy_read(scratch_path(name), &back, &err), RT_OK);
      check_fixture(&back, (RtDType)dt, rank);
      rt_tensor_free(&back);
      assert_int_equal(rt_npy_read_mem(ours, n1, name, &back, &err), RT_OK);
      check_fixture(&back, (RtDType)dt, rank);
      rt_tensor_free(&back);
      free(ours), free(theirs);
      rt_tensor_free(&t);
    }
  }
}

/* Round trip of extreme values and a rank-8 tensor. */
static void test_round_trip_edges(void **state) {
  int64_t shape[8] = {1, 2, 1, 2, 1, 2, 1, 3};
  RtTensor t, back;
  assert_int_equal(rt_tensor_alloc(&t, RT_F64, 8, shape, NULL), RT_OK);
  double *d = t.data;
  d[0] = -0.0, d[1] = 1e308, d[2] = 5e-324, d[3] = -1.0 / 3.0;
  assert_int_equal(rt_npy_write(scratch_path("edge.npy"), &t, NULL), RT_OK);
  assert_int_equal(rt_npy_read(scratch_path("edge.npy"), &back, NULL), RT_OK);
  assert_int_equal(back.rank, 8);
  assert_memory_equal(t.shape, back.shape, sizeof t.shape);
  assert_memory_equal(t.data, back.data, rt_tensor_bytes(&t));
  rt_tensor_free(&t);
  rt_tensor_free(&back);
}

static void test_write_errors(void **state) {
  RtTensor t = fixture_tensor(RT_F32, 2);
  RtError err;
  assert_int_equal(rt_npy_write(scratch_path("no/such/dir/x.npy"), &t, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "x.npy"));
  /* A failed write leaves the previous file as it was. */
  const char *path = scratch_path("keep.npy");
  assert_int_equal(rt_npy_write(path, &t, &err), RT_OK);
  size_t n0 = 0, n1 = 0;
  unsigned char *before = slurp(path, &n0);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(mkdir(tmp, 0700), 0);       /* the tmp cannot be created */
  RtTensor other = fixture_tensor(RT_I64, 3);
  assert_int_equal(rt_npy_write(path, &other, &err), RT_ERR_IO);
  unsigned char *after = slurp(path, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  rmdir(tmp);
  free(before), free(after);
  RtTensor bad = t;
  bad.rank = 9;
  assert_int_equal(rt_npy_write(path, &bad, &err), RT_ERR_ARG);
  bad = t;
  bad.data = NULL;
  assert_int_equal(rt_npy_write(path, &bad, &err), RT_ERR_ARG);
  rt_tensor_free(&t);
  rt_tensor_free(&other);
}

/* ---- malformed inputs, built in memory ---- */

/* A .npy with the given version, header text (padded to 64 as numpy
 * does, unless raw) and data bytes. */
static size_t make_npy(unsigned char *buf, int major, const char *header, size_t ndata, bool raw) {
  size_t pre = major == 1 ? 10 : 12, len = strlen(header);
  size_t hlen = raw ? len : (pre + len + 1 + 63) / 64 * 64 - pre;
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)major, buf[7] = 0;
  for (size_t i = 0; i < pre - 8; i++)
    buf[8 + i] = (unsigned char)(hlen >> (8 * i));
  memcpy(buf + pre, header, len);
  if (!raw) {
    memset(buf + pre + len, ' ', hlen - len - 1);
    buf[pre + hlen - 1] = '\n';
  }
  for (size_t i = 0; i < ndata; i++)
    buf[pre + hlen + i] = (unsigned char)(i * 7);
  return pre + hlen + ndata;
}

static void expect_mem_error(const unsigned char *buf, size_t len, const char *needle) {
  RtTensor t;
  RtError err = {{0}};
  RtStatus st = rt_npy_read_mem(buf, len, "bad.npy", &t, &err);
  if (st != RT_ERR_FORMAT)
    fail_msg("status %s for a case expecting '%s' (%s)", rt_status_name(st), needle, err.msg);
  assert_null(t.data);
  assert_non_null(strstr(err.msg, "bad.npy"));
  if (!strstr(err.msg, needle))
    fail_msg("'%s' lacks '%s'", err.msg, needle);
}

#define GOOD "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"

static void test_malformed_preamble(void **state) {
  unsigned char buf[4096];
  size_t len = make_npy(buf, 1, GOOD, 24, false);
  RtTensor t;
  assert_int_equal(rt_npy_read_mem(buf, len, "good.npy", &t, NULL), RT_OK);  /* the control */
  rt_tensor_free(&t);
  expect_mem_error(buf, 0, "too short");
  expect_mem_error(NULL, 0, "too short");
  expect_mem_error(buf, 5, "too short");
  expect_mem_error(buf, 9, "too short");
  buf[1] = 'X';
  expect_mem_error(buf, len, "bad magic");
  buf[1] = 'N';
  buf[6] = 4;
  expect_mem_error(buf, len, "version 4.0");
  buf[6] = 1, buf[7] = 1;
  expect_mem_error(buf, len, "version 1.1");
  buf[7] = 0;
  expect_mem_error(buf, 40, "past the end");        /* truncated header */
  buf[8] = 0xff, buf[9] = 0x7f;                     /* header length lies: too long */
  expect_mem_error(buf, len, "past the end");
  buf[8] = 30, buf[9] = 0;                          /* too short: the dict is cut */
  expect_mem_error(buf, len, "header");
  len = make_npy(buf, 2, GOOD, 24, false);
  expect_mem_error(buf, 11, "truncated");           /* v2 preamble cut */
  buf[11] = 0x80;                                   /* a 2 GiB header */
  expect_mem_error(buf, len, "limit");
}

static void test_malformed_dict(void **state) {
  static const struct { const char *header, *needle; } cases[] = {
    {"{'descr': '<f4', 'fortran_order': False, }", "missing 'shape'"},
    {"{'fortran_order': False, 'shape': (2, 3), }", "missing 'descr'"},
    {"{'descr': '<f4', 'shape': (2, 3), }", "missing 'fortran_order'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1, }", "unknown key"},
    {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "repeated key"},
    {"{'descr': <f4, 'fortran_order': False, 'shape': (2, 3), }", "quoted string"},
    {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", "True or False"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", "in the shape"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", "trailing comma"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "expected a dimension"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", "'('"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } junk", "after the dict"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }}", "after the dict"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) 'x'", "expected ',' or '}'"},
    {"{'descr': '<f4'", "expected ',' or '}'"},
    {"{'descr': '<f4\\', 'fortran_order': False, 'shape': (2, 3), }", "escaped"},
    {"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", "expected ':'"},
    {"['descr', '<f4']", "expected '{'"},
    {"", "expected '{'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "rank exceeds 8"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }", "dimension too large"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2147483647, 2147483647, 2147483647), }",
     "too large"},
    {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", "unsupported dtype '<c8'"},
    {"{'descr': '|i1', 'fortran_order': False, 'shape': (2, 3), }", "unsupported dtype '|i1'"},
    {"{'descr': '<U3', 'fortran_order': False, 'shape': (2, 3), }", "unsupported dtype"},
    {"{'descr': '>i8', 'fortran_order': False, 'shape': (2, 3), }", "big-endian"},
    {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", "fortran_order is True"},
  };
  unsigned char buf[4096];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t len = make_npy(buf, 1, cases[i].header, 24, false);
    expect_mem_error(buf, len, cases[i].needle);
  }
}

static void test_malformed_data(void **state) {
  unsigned char buf[4096];
  size_t len = make_npy(buf, 1, GOOD, 20, false);
  expect_mem_error(buf, len, "data is 20 bytes, shape (2, 3) of f32 needs 24");
  len = make_npy(buf, 1, GOOD, 28, false);
  expect_mem_error(buf, len, "data is 28 bytes");
  len = make_npy(buf, 3, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", 3, false);
  expect_mem_error(buf, len, "bool element 1 is 7");
  len = make_npy(buf, 1, "{'descr':'<f4','fortran_order':False,'shape':(2,3)}", 24, true);
  RtTensor t;                                        /* unpadded, compact: still valid */
  assert_int_equal(rt_npy_read_mem(buf, len, "compact.npy", &t, NULL), RT_OK);
  assert_int_equal(t.shape[1], 3);
  rt_tensor_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_read_numpy_files),   cmocka_unit_test(test_read_versions),
    cmocka_unit_test(test_reject_numpy_files), cmocka_unit_test(test_write_matches_numpy),
    cmocka_unit_test(test_round_trip_edges),   cmocka_unit_test(test_write_errors),
    cmocka_unit_test(test_malformed_preamble), cmocka_unit_test(test_malformed_dict),
    cmocka_unit_test(test_malformed_data),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

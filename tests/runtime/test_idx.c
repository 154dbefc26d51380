/* IDX: every type code from big-endian bytes written out by hand, gzipped
 * files told by content, a table of malformed headers and data (bad magic,
 * unknown type, truncation, trailing bytes, dims that lie or overflow), and
 * Debian's Fashion-MNIST when it is installed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/stat.h>
#include "data_fixtures.h"

/* An IDX buffer: header for type/dims, then `data` verbatim. */
static size_t make_idx(uint8_t *buf, uint8_t type, int rank, const uint32_t *dims,
                       const void *data, size_t n) {
  buf[0] = buf[1] = 0;
  buf[2] = type;
  buf[3] = (uint8_t)rank;
  for (int i = 0; i < rank; i++)
    for (int b = 0; b < 4; b++)
      buf[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
  memcpy(buf + 4 + 4 * rank, data, n);
  return 4 + 4 * (size_t)rank + n;
}

static RtTensor read_ok(const uint8_t *buf, size_t len) {
  RtTensor t;
  RtError err = {{0}};
  if (rt_idx_read_mem(buf, len, "t.idx", &t, &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal((uintptr_t)t.data % RT_ALIGN, 0);
  return t;
}

static void test_u8_images(void **state) {
  uint8_t buf[64];
  const uint8_t px[6] = {0, 1, 127, 128, 254, 255};
  size_t len = make_idx(buf, 0x08, 3, (const uint32_t[]){1, 2, 3}, px, 6);
  RtTensor t = read_ok(buf, len);
  assert_int_equal(t.dtype, RT_U8);
  assert_int_equal(t.rank, 3);
  assert_int_equal(t.shape[0], 1);
  assert_int_equal(t.shape[1], 2);
  assert_int_equal(t.shape[2], 3);
  assert_memory_equal(t.data, px, 6);
  rt_tensor_free(&t);
}

static void test_every_type(void **state) {
  uint8_t buf[64];
  /* i8: 0xff = -1, 0x80 = -128 */
  RtTensor t = read_ok(buf, make_idx(buf, 0x09, 1, (const uint32_t[]){2}, "\xff\x80", 2));
  assert_int_equal(t.dtype, RT_I32);
  assert_int_equal(((int32_t *)t.data)[0], -1);
  assert_int_equal(((int32_t *)t.data)[1], -128);
  rt_tensor_free(&t);
  /* i16: 0xfffe = -2, 0x0102 = 258 */
  t = read_ok(buf, make_idx(buf, 0x0B, 1, (const uint32_t[]){2}, "\xff\xfe\x01\x02", 4));
  assert_int_equal(t.dtype, RT_I32);
  assert_int_equal(((int32_t *)t.data)[0], -2);
  assert_int_equal(((int32_t *)t.data)[1], 258);
  rt_tensor_free(&t);
  /* i32: 0xfffeee90 = -70000, 0x7fffffff */
  t = read_ok(buf, make_idx(buf, 0x0C, 1, (const uint32_t[]){2}, "\xff\xfe\xee\x90\x7f\xff\xff\xff", 8));
  assert_int_equal(t.dtype, RT_I32);
  assert_int_equal(((int32_t *)t.data)[0], -70000);
  assert_int_equal(((int32_t *)t.data)[1], INT32_MAX);
  rt_tensor_free(&t);
  /* f32: 0x3fc00000 = 1.5, 0xbe800000 = -0.25 */
  t = read_ok(buf, make_idx(buf, 0x0D, 2, (const uint32_t[]){1, 2}, "\x3f\xc0\x00\x00\xbe\x80\x00\x00", 8));
  assert_int_equal(t.dtype, RT_F32);
  assert_true(((float *)t.data)[0] == 1.5f);
  assert_true(((float *)t.data)[1] == -0.25f);
  rt_tensor_free(&t);
  /* f64: 0x400921fb54442d18 = pi */
  t = read_ok(buf, make_idx(buf, 0x0E, 1, (const uint32_t[]){1}, "\x40\x09\x21\xfb\x54\x44\x2d\x18", 8));
  assert_int_equal(t.dtype, RT_F64);
  assert_true(((double *)t.data)[0] == 3.141592653589793);
  rt_tensor_free(&t);
  /* rank 0: one element; an empty dim: no data */
  t = read_ok(buf, make_idx(buf, 0x08, 0, NULL, "\x2a", 1));
  assert_int_equal(t.rank, 0);
  assert_int_equal(((uint8_t *)t.data)[0], 42);
  rt_tensor_free(&t);
  t = read_ok(buf, make_idx(buf, 0x0C, 2, (const uint32_t[]){0, 5}, "", 0));
  assert_int_equal(t.shape[0], 0);
  assert_int_equal(t.shape[1], 5);
  rt_tensor_free(&t);
}

static void test_gzip_files(void **state) {
  uint8_t buf[64];
  size_t len = make_idx(buf, 0x08, 1, (const uint32_t[]){4}, "\x09\x00\x03\x07", 4), glen;
  unsigned char *gz = gzip_mem(buf, len, &glen);
  write_file(scratch_path("labels-idx1-ubyte.gz"), gz, glen);
  write_file(scratch_path("labels-idx1-ubyte"), buf, len);
  static const char *names[] = {"labels-idx1-ubyte.gz", "labels-idx1-ubyte"};
  for (int i = 0; i < 2; i++) {
    RtTensor t;
    RtError err;
    if (rt_idx_read(scratch_path(names[i]), &t, &err) != RT_OK)
      fail_msg("%s", err.msg);
    assert_int_equal(t.shape[0], 4);
    assert_memory_equal(t.data, "\x09\x00\x03\x07", 4);
    rt_tensor_free(&t);
  }
  RtTensor t = read_ok(gz, glen);
  rt_tensor_free(&t);
  free(gz);
}

typedef struct {
  const char *bytes;
  size_t len;
  const char *msg;           /* the whole message */
} BadIdx;

#define B(s) s, sizeof s - 1
static const BadIdx bad_idx[] = {
  {B(""), "b.idx: too short for an IDX file (0 bytes)"},
  {B("\0\0\x08"), "b.idx: too short for an IDX file (3 bytes)"},
  {B("\x01\0\x08\x01\0\0\0\x01\x05"), "b.idx: not an IDX file (bad magic 01 00)"},
  {B("\0\0\x0a\x01\0\0\0\x01\x05"), "b.idx: unknown IDX type code 0x0a"},
  {B("\0\0\x08\x09"), "b.idx: rank 9 exceeds 8"},
  {B("\0\0\x08\x02\0\0\0\x01\0\0"), "b.idx: truncated: the header of rank 2 needs 12 bytes, the file has 10"},
  {B("\0\0\x08\x01\x80\0\0\0"), "b.idx: dimension 0 is 2147483648, above 2147483647"},
  {B("\0\0\x08\x01\0\0\0\x03\x01\x02"), "b.idx: data is 2 bytes, shape (3,) of u8 needs 3 (truncated)"},
  {B("\0\0\x08\x01\0\0\0\x01\x01\x02"), "b.idx: data is 2 bytes, shape (1,) of u8 needs 1"},
  {B("\0\0\x0d\x02\0\0\0\x02\0\0\0\x02\0\0\0\0"), "b.idx: data is 4 bytes, shape (2, 2) of f32 needs 16 (truncated)"},
  /* dims whose product overflows: 2^31-1 six times */
  {B("\0\0\x08\x06\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff"),
   "b.idx: shape (2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2147483647) of u8 is too large"},
  /* lying dims: 60000 x 28 x 28 claimed, 4 bytes given */
  {B("\0\0\x08\x03\0\0\xea\x60\0\0\0\x1c\0\0\0\x1c\1\2\3\4"),
   "b.idx: data is 4 bytes, shape (60000, 28, 28) of u8 needs 47040000 (truncated)"},
  {B("\x1f\x8b\x08\x00\0\0\0\0\0\x03"), "b.idx: gzip: truncated gzip data"},
};

static void test_malformed(void **state) {
  for (size_t i = 0; i < sizeof bad_idx / sizeof *bad_idx; i++) {
    RtTensor t;
    RtError err = {{0}};
    RtStatus st = rt_idx_read_mem(bad_idx[i].bytes, bad_idx[i].len, "b.idx", &t, &err);
    if (st != RT_ERR_FORMAT || strcmp(err.msg, bad_idx[i].msg) != 0)
      fail_msg("case %zu: got %s '%s', want '%s'", i, rt_status_name(st), err.msg, bad_idx[i].msg);
    assert_null(t.data);
    assert_int_equal(rt_idx_read_mem(bad_idx[i].bytes, bad_idx[i].len, "b.idx", &t, NULL), RT_ERR_FORMAT);
  }
  RtTensor t;
  RtError err;
  assert_int_equal(rt_idx_read(scratch_path("none.idx"), &t, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "none.idx: cannot open"));
}

/* Debian's dataset-fashion-mnist, if installed: 60,000 + 10,000 28x28 u8
 * images and their labels, 6,000 / 1,000 per class. */
static void test_fashion_mnist(void **state) {
  const char *dir = getenv("KILN_FASHION_MNIST");
  dir = dir ? dir : "/usr/share/datasets/fashion-mnist";
  char path[4][1024];
  static const char *files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  struct stat sb;
  for (int i = 0; i < 4; i++) {
    snprintf(path[i], sizeof path[i], "%s/%s", dir, files[i]);
    if (stat(path[i], &sb) != 0)
      skip();
  }
  for (int set = 0; set < 2; set++) {
    int64_t n = set ? 10000 : 60000;
    RtTensor img, lab;
    RtError err;
    if (rt_idx_read(path[2 * set], &img, &err) != RT_OK || rt_idx_read(path[2 * set + 1], &lab, &err) != RT_OK)
      fail_msg("%s", err.msg);
    assert_int_equal(img.dtype, RT_U8);
    assert_int_equal(img.rank, 3);
    assert_int_equal(img.shape[0], n);
    assert_int_equal(img.shape[1], 28);
    assert_int_equal(img.shape[2], 28);
    assert_int_equal(lab.rank, 1);
    assert_int_equal(lab.shape[0], n);
    int64_t counts[256] = {0};
    for (int64_t i = 0; i < n; i++)
      counts[((uint8_t *)lab.data)[i]]++;
    for (int k = 0; k < 10; k++)
      assert_int_equal(counts[k], n / 10);
    assert_int_equal(((uint8_t *)lab.data)[0], 9);   /* both sets start with an ankle boot */
    rt_tensor_free(&img);
    rt_tensor_free(&lab);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_u8_images), cmocka_unit_test(test_every_type),
    cmocka_unit_test(test_gzip_files), cmocka_unit_test(test_malformed),
    cmocka_unit_test(test_fashion_mnist),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

/* .safetensors: a file laid out by the reference writer (made with Python
 * by make_npy_fixtures.py) reads back exactly; our files round-trip with
 * metadata, in name order with an 8-aligned data area; every malformed
 * header or data area is an RT_ERR_FORMAT naming the file; and a failed
 * write, before or in the middle of the data, leaves the old file intact. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fixtures.h"

static void check_values(const RtTensor *t, RtDType dt, int rank, const int64_t *shape) {
  assert_int_equal(t->dtype, dt);
  assert_int_equal(t->rank, rank);
  for (int i = 0; i < rank; i++)
    assert_int_equal(t->shape[i], shape[i]);
  assert_int_equal((uintptr_t)t->data % RT_ALIGN, 0);
  for (int64_t k = 0; k < rt_numel(t); k++)
    assert_true(tensor_get(t, k) == fixture_value(dt, k));
}

static void test_read_reference(void **state) {
  static const char *names[] = {"bias", "count", "idx", "img", "layer.0.w", "mask", "weight"};
  RtSafetensors st;
  RtError err;
  if (rt_st_read(RT_TEST_DATA "/ref.safetensors", &st, &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal(st.n, 7);
  for (int i = 0; i < 7; i++)
    assert_string_equal(st.tensors[i].name, names[i]);
  check_values(rt_st_find(&st, "weight"), RT_F32, 2, (int64_t[]){2, 3});
  check_values(rt_st_find(&st, "bias"), RT_F64, 1, (int64_t[]){3});
  check_values(rt_st_find(&st, "idx"), RT_I64, 1, (int64_t[]){4});
  check_values(rt_st_find(&st, "mask"), RT_BOOL, 2, (int64_t[]){2, 2});
  check_values(rt_st_find(&st, "img"), RT_U8, 1, (int64_t[]){5});
  check_values(rt_st_find(&st, "count"), RT_I32, 0, NULL);
  check_values(rt_st_find(&st, "layer.0.w"), RT_F32, 4, (int64_t[]){2, 1, 3, 2});
  assert_null(rt_st_find(&st, "layer.0"));
  assert_null(rt_st_find(&st, "zzz"));
  assert_int_equal(st.nmeta, 2);
  assert_string_equal(rt_st_meta(&st, "format"), "pt");
  assert_string_equal(rt_st_meta(&st, "note"), "\xc3\xbcn\xc3\xaf" "code \"quoted\"");
  assert_null(rt_st_meta(&st, "missing"));
  rt_st_free(&st);
  assert_null(st.tensors);
  rt_st_free(&st);
  rt_st_free(NULL);
}

/* Tensors of every dtype and rank 0..4, given out of name order. */
static int make_set(RtNamedTensor *ts) {
  int n = 0;
  for (int rank = 4; rank >= 0; rank--)
    for (int dt = RT_NDTYPES - 1; dt >= 0; dt--) {
      char name[64];
      snprintf(name, sizeof name, "%s.r%d", rt_dtype_name((RtDType)dt), rank);
      ts[n].name = strdup(name);
      ts[n++].t = fixture_tensor((RtDType)dt, rank);
    }
  int64_t empty[] = {0, 5};
  ts[n].name = strdup("empty");
  rt_tensor_alloc(&ts[n++].t, RT_F32, 2, empty, NULL);
  return n;
}

static void free_set(RtNamedTensor *ts, int n) {
  for (int i = 0; i < n; i++) {
    free(ts[i].name);
    rt_tensor_free(&ts[i].t);
  }
}

/* The header of a file we wrote: data area 8-aligned, tensors in name
 * order one after the other. */
static void check_layout(const char *path, int n) {
  size_t len = 0;
  unsigned char *buf = slurp(path, &len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | buf[i];
  assert_int_equal((8 + hlen) % 8, 0);
  RtArena *a = rt_arena_new();
  RtJson *root;
  assert_int_equal(rt_json_parse(a, (char *)buf + 8, hlen, "h", &root, NULL), RT_OK);
  const char *prev = "";
  int64_t at = 0;
  int seen = 0;
  for (int i = 0; i < root->n; i++) {
    if (strcmp(root->keys[i], "__metadata__") == 0)
      continue;
    assert_true(strcmp(prev, root->keys[i]) < 0);
    prev = root->keys[i];
    const RtJson *offs = rt_json_get(&root->items[i], "data_offsets");
    assert_int_equal(offs->items[0].i, at);
    at = offs->items[1].i;
    seen++;
  }
  assert_int_equal(seen, n);
  assert_int_equal(8 + hlen + (uint64_t)at, len);
  rt_arena_free(a);
  free(buf);
}

static void test_round_trip(void **state) {
  RtNamedTensor ts[40];
  int n = make_set(ts);
  RtMeta meta[] = {{"format", "pt"}, {"epoch", "12"}, {"q\"uote\\\n", "\xe2\x82\xac tab\t"}};
  const char *path = scratch_path("rt.safetensors");
  RtError err;
  if (rt_st_write(path, ts, n, meta, 3, &err) != RT_OK)
    fail_msg("%s", err.msg);
  check_layout(path, n);
  RtSafetensors st;
  if (rt_st_read(path, &st, &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal(st.n, n);
  for (int i = 0; i < n; i++) {
    const RtTensor *t = rt_st_find(&st, ts[i].name);
    assert_non_null(t);
    assert_int_equal(t->dtype, ts[i].t.dtype);
    assert_int_equal(t->rank, ts[i].t.rank);
    assert_memory_equal(t->shape, ts[i].t.shape, sizeof t->shape);
    assert_int_equal((uintptr_t)t->data % RT_ALIGN, 0);
    assert_memory_equal(t->data, ts[i].t.data, rt_tensor_bytes(t));
  }
  for (int i = 1; i < st.n; i++)
    assert_true(strcmp(st.tensors[i - 1].name, st.tensors[i].name) < 0);
  assert_int_equal(st.nmeta, 3);
  for (int i = 0; i < 3; i++)
    assert_string_equal(rt_st_meta(&st, meta[i].key), meta[i].value);
  /* From memory, the same. */
  size_t len = 0;
  unsigned char *buf = slurp(path, &len);
  RtSafetensors mem;
  assert_int_equal(rt_st_read_mem(buf, len, "rt.safetensors", &mem, &err), RT_OK);
  assert_int_equal(mem.n, n);
  assert_memory_equal(rt_st_find(&mem, "f64.r4")->data, rt_st_find(&st, "f64.r4")->data, 48);
  rt_st_free(&mem);
  free(buf);
  rt_st_free(&st);
  free_set(ts, n);
}

static void test_rewrite_reference(void **state) {
  RtSafetensors ref, back;
  RtError err;
  assert_int_equal(rt_st_read(RT_TEST_DATA "/ref.safetensors", &ref, &err), RT_OK);
  const char *path = scratch_path("ref2.safetensors");
  assert_int_equal(rt_st_write(path, ref.tensors, ref.n, ref.meta, ref.nmeta, &err), RT_OK);
  assert_int_equal(rt_st_read(path, &back, &err), RT_OK);
  assert_int_equal(back.n, ref.n);
  for (int i = 0; i < ref.n; i++) {
    assert_string_equal(back.tensors[i].name, ref.tensors[i].name);
    assert_memory_equal(back.tensors[i].t.data, ref.tensors[i].t.data, rt_tensor_bytes(&ref.tensors[i].t));
  }
  assert_string_equal(rt_st_meta(&back, "note"), rt_st_meta(&ref, "note"));
  rt_st_free(&ref);
  rt_st_free(&back);
}

static void test_empty_file(void **state) {
  const char *path = scratch_path("empty.safetensors");
  RtSafetensors st;
  assert_int_equal(rt_st_write(path, NULL, 0, NULL, 0, NULL), RT_OK);
  assert_int_equal(rt_st_read(path, &st, NULL), RT_OK);
  assert_int_equal(st.n, 0);
  assert_int_equal(st.nmeta, 0);
  assert_null(rt_st_find(&st, "x"));
  rt_st_free(&st);
}

/* ---- failed writes keep the previous file ---- */

static unsigned char *previous(const char *path, size_t *len) {
  RtNamedTensor ts[40];
  int n = make_set(ts);
  assert_int_equal(rt_st_write(path, ts, n, NULL, 0, NULL), RT_OK);
  free_set(ts, n);
  return slurp(path, len);
}

static void assert_unchanged(const char *path, const unsigned char *before, size_t len) {
  size_t now;
  unsigned char *after = slurp(path, &now);
  assert_non_null(after);
  assert_int_equal(now, len);
  assert_memory_equal(after, before, len);
  free(after);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct stat sb;
  assert_int_equal(lstat(tmp, &sb) == 0 && S_ISREG(sb.st_mode), 0);   /* no tmp left */
}

static void test_failed_write_keeps_file(void **state) {
  const char *path = scratch_path("keep.safetensors");
  size_t len = 0;
  unsigned char *before = previous(path, &len);
  RtNamedTensor one = {"w", fixture_tensor(RT_F32, 2)};
  RtError err;
  assert_int_equal(rt_st_write(scratch_path("no/dir/x.safetensors"), &one, 1, NULL, 0, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "x.safetensors"));
  /* The tmp cannot be created: a directory holds its name. */
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(mkdir(tmp, 0700), 0);
  assert_int_equal(rt_st_write(path, &one, 1, NULL, 0, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "cannot create"));
  rmdir(tmp);
  assert_unchanged(path, before, len);
  /* Invalid arguments fail before the file is touched. */
  RtNamedTensor dup[2] = {one, one};
  assert_int_equal(rt_st_write(path, dup, 2, NULL, 0, &err), RT_ERR_ARG);
  assert_non_null(strstr(err.msg, "twice"));
  RtNamedTensor bad = one;
  bad.name = "";
  assert_int_equal(rt_st_write(path, &bad, 1, NULL, 0, &err), RT_ERR_ARG);
  bad.name = "\xff\xfe";
  assert_int_equal(rt_st_write(path, &bad, 1, NULL, 0, &err), RT_ERR_ARG);
  bad.name = "__metadata__";
  assert_int_equal(rt_st_write(path, &bad, 1, NULL, 0, &err), RT_ERR_ARG);
  bad = one;
  bad.t.dtype = (RtDType)17;
  assert_int_equal(rt_st_write(path, &bad, 1, NULL, 0, &err), RT_ERR_ARG);
  bad = one;
  bad.t.data = NULL;
  assert_int_equal(rt_st_write(path, &bad, 1, NULL, 0, &err), RT_ERR_ARG);
  RtMeta twice[] = {{"k", "1"}, {"k", "2"}};
  assert_int_equal(rt_st_write(path, &one, 1, twice, 2, &err), RT_ERR_ARG);
  RtMeta novalue[] = {{"k", NULL}};
  assert_int_equal(rt_st_write(path, &one, 1, novalue, 1, &err), RT_ERR_ARG);
  assert_unchanged(path, before, len);
  rt_tensor_free(&one.t);
  free(before);
}

/* A write that fails in the middle of the data (the file size limit is hit,
 * as on a full disk) removes its tmp and keeps the old file. */
static void test_write_fails_midway(void **state) {
  const char *path = scratch_path("midway.safetensors");
  size_t len = 0;
  unsigned char *before = previous(path, &len);
  RtNamedTensor big = {"big"};
  int64_t shape[] = {1 << 16};
  assert_int_equal(rt_tensor_alloc(&big.t, RT_F32, 1, shape, NULL), RT_OK);
  struct rlimit saved, small;
  getrlimit(RLIMIT_FSIZE, &saved);
  small = saved;
  small.rlim_cur = 64 << 10;                       /* below the 256 KiB we write */
  void (*old)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
  RtError err;
  RtStatus st = rt_st_write(path, &big, 1, NULL, 0, &err);
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old);
  assert_int_equal(st, RT_ERR_IO);
  assert_non_null(strstr(err.msg, "midway.safetensors"));
  assert_unchanged(path, before, len);
  rt_tensor_free(&big.t);
  free(before);
}

/* ---- malformed files, built in memory ---- */

/* [u64 header length][header][ndata bytes of data]; data byte i is i * 3,
 * or `fill` when fill >= 0. */
static size_t make_st(unsigned char *buf, const char *header, size_t ndata, int fill) {
  size_t hlen = strlen(header);
  for (int i = 0; i < 8; i++)
    buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(buf + 8, header, hlen);
  for (size_t i = 0; i < ndata; i++)
    buf[8 + hlen + i] = (unsigned char)(fill >= 0 ? fill : (int)(i * 3));
  return 8 + hlen + ndata;
}

static void expect_error(const unsigned char *buf, size_t len, const char *needle) {
  RtSafetensors st;
  RtError err = {{0}};
  RtStatus s = rt_st_read_mem(buf, len, "bad.safetensors", &st, &err);
  if (s != RT_ERR_FORMAT)
    fail_msg("status %s for a case expecting '%s' (%s)", rt_status_name(s), needle, err.msg);
  assert_null(st.tensors);
  assert_null(st.blob);
  assert_non_null(strstr(err.msg, "bad.safetensors"));
  if (!strstr(err.msg, needle))
    fail_msg("'%s' lacks '%s'", err.msg, needle);
}

#define T(name, dtype, shape, b, e) \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed_length(void **state) {
  unsigned char buf[4096];
  size_t len = make_st(buf, "{" T("a", "F32", "[2]", 0, 8) "}", 8, -1);
  RtSafetensors st;
  assert_int_equal(rt_st_read_mem(buf, len, "good", &st, NULL), RT_OK);   /* the control */
  rt_st_free(&st);
  expect_error(buf, 0, "shorter than 8");
  expect_error(NULL, 0, "shorter than 8");
  expect_error(buf, 7, "shorter than 8");
  expect_error(buf, 8, "past the end");
  expect_error(buf, 20, "past the end");            /* header cut */
  buf[2] = 1;                                       /* header length past EOF */
  expect_error(buf, len, "past the end");
  buf[2] = 0, buf[7] = 0x80;                        /* 2^63 */
  expect_error(buf, len, "past the end");
}

static void test_malformed_header(void **state) {
  static const struct { const char *header; size_t ndata; const char *needle; } cases[] = {
    {"{" T("a", "F32", "[2]", 0, 12) "}", 8, "past the data area"},
    {"{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[1]", 4, 8) "}", 12, "starts at 4, expected 8"},
    {"{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12, "starts at 8, expected 4"},
    {"{" T("a", "F32", "[1]", 4, 8) "}", 8, "starts at 4, expected 0"},
    {"{" T("a", "F32", "[1]", 0, 4) "}", 8, "cover 4 bytes of a 8-byte"},
    {"{" T("a", "F32", "[1]", 8, 4) "}", 8, "begin <= end"},
    {"{" T("a", "F32", "[3]", 0, 8) "}", 8, "span 8 bytes, shape (3,) of f32 needs 12"},
    {"{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8, "'a' appears twice"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
    {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "key 'k' appears twice"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "'k' is not a string"},
    {"{\"__metadata__\":[]}", 0, "must be an object"},
    {"{\"a\":", 0, "invalid JSON"},
    {"{\"a\":{}} x", 0, "invalid JSON"},
    {"[]", 0, "not a JSON object"},
    {"", 0, "unexpected end"},
    {"{" T("a", "F8_E4M3", "[2]", 0, 2) "}", 2, "unsupported dtype 'F8_E4M3'"},
    {"{" T("a", "F16", "[3]", 0, 4) "}", 4, "span 4 bytes, shape (3,) of F16 needs 6"},
    {"{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype must be a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "dtype, shape and data_offsets only"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "only"},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape must be"},
    {"{\"a\":[]}", 0, "expected an object"},
    {"{" T("a", "F32", "[-1]", 0, 4) "}", 4, "dimension 0"},
    {"{" T("a", "F32", "[1.0]", 0, 4) "}", 4, "dimension 0"},
    {"{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, "at most 8"},
    {"{" T("a", "F32", "3", 0, 12) "}", 12, "shape must be"},
    {"{" T("a", "F32", "[2147483647,2147483647,2147483647]", 0, 4) "}", 4, "too large"},
    {"{" T("a", "F32", "[2147483648]", 0, 4) "}", 4, "dimension 0"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets must be"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, "data_offsets must be"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551620]}}", 4,
     "data_offsets must be"},
  };
  unsigned char buf[4096];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t len = make_st(buf, cases[i].header, cases[i].ndata, -1);
    expect_error(buf, len, cases[i].needle);
  }
}

static void test_malformed_values(void **state) {
  unsigned char buf[4096];
  size_t len = make_st(buf, "{" T("m", "BOOL", "[4]", 0, 4) "}", 4, 2);
  expect_error(buf, len, "tensor 'm': bool element 0 is 2");
  /* Deep nesting in the metadata: an error, not a stack overflow. */
  char deep[4096] = "{\"__metadata__\":";
  size_t at = strlen(deep);
  for (int i = 0; i < 1000; i++)
    deep[at++] = '[';
  deep[at] = 0;
  len = make_st(buf, deep, 0, -1);
  expect_error(buf, len, "nesting too deep");
  /* Zero-sized tensors may share an offset. */
  len = make_st(buf, "{" T("e", "F32", "[0,3]", 4, 4) "," T("a", "F32", "[1]", 0, 4) ","
                T("z", "I64", "[0]", 4, 4) "}", 4, -1);
  RtSafetensors st;
  RtError err;
  if (rt_st_read_mem(buf, len, "zeros", &st, &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal(st.n, 3);
  assert_int_equal(rt_st_find(&st, "e")->shape[1], 3);
  rt_st_free(&st);
}

/* F16 and BF16 tensors read as F32 of exactly the same values: normal,
 * subnormal, signed zero, infinities and NaN, at an odd file offset. */
static void test_half_precision(void **state) {
  static const uint16_t f16[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x7c00, 0xfc00, 0x7e00};
  static const float f16_want[] = {1.0f, -2.0f, 0x1p-24f, 0x3ffp-24f, 65504.0f, -0.0f, INFINITY, -INFINITY};
  static const uint16_t bf16[] = {0x3f80, 0xc040, 0x0001, 0x7f80};
  static const float bf16_want[] = {1.0f, -3.0f, 0x1p-133f, INFINITY};
  unsigned char buf[4096];
  const char *header = "{" T("b", "BF16", "[2,2]", 1, 9) "," T("h", "F16", "[9]", 9, 27) ","
                       T("u", "U8", "[1]", 0, 1) "}";
  size_t len = make_st(buf, header, 27, 0), data = len - 27;
  for (int i = 0; i < 4; i++)
    buf[data + 1 + 2 * i] = (unsigned char)bf16[i], buf[data + 2 + 2 * i] = (unsigned char)(bf16[i] >> 8);
  for (int i = 0; i < 9; i++)
    buf[data + 9 + 2 * i] = (unsigned char)f16[i], buf[data + 10 + 2 * i] = (unsigned char)(f16[i] >> 8);
  RtSafetensors st;
  RtError err;
  if (rt_st_read_mem(buf, len, "half", &st, &err) != RT_OK)
    fail_msg("%s", err.msg);
  const RtTensor *h = rt_st_find(&st, "h"), *b = rt_st_find(&st, "b");
  assert_int_equal(h->dtype, RT_F32);
  assert_int_equal(b->dtype, RT_F32);
  assert_int_equal(b->shape[1], 2);
  const float *hv = h->data, *bv = b->data;
  for (int i = 0; i < 8; i++) {
    assert_true(hv[i] == f16_want[i]);
    assert_int_equal(signbit(hv[i]) != 0, signbit(f16_want[i]) != 0);
  }
  assert_true(isnan(hv[8]));
  for (int i = 0; i < 4; i++)
    assert_true(bv[i] == bf16_want[i]);
  rt_st_free(&st);
}

static void test_read_io_errors(void **state) {
  RtSafetensors st;
  RtError err;
  assert_int_equal(rt_st_read(scratch_path("none.safetensors"), &st, &err), RT_ERR_IO);
  assert_non_null(strstr(err.msg, "none.safetensors"));
  assert_int_equal(rt_st_read(scratch, &st, &err), RT_ERR_IO);   /* a directory */
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_read_reference),    cmocka_unit_test(test_round_trip),
    cmocka_unit_test(test_rewrite_reference), cmocka_unit_test(test_empty_file),
    cmocka_unit_test(test_failed_write_keeps_file), cmocka_unit_test(test_write_fails_midway),
    cmocka_unit_test(test_malformed_length),  cmocka_unit_test(test_malformed_header),
    cmocka_unit_test(test_malformed_values),  cmocka_unit_test(test_read_io_errors),
    cmocka_unit_test(test_half_precision),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

/* Dtypes, tensors, aligned memory, error messages and the arena. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include "runtime/rt.h"

static void test_dtypes(void **state) {
  static const char *names[] = {"f32", "f64", "i32", "i64", "u8", "bool"};
  static const size_t sizes[] = {4, 8, 4, 8, 1, 1};
  assert_int_equal(RT_NDTYPES, 6);
  for (int i = 0; i < RT_NDTYPES; i++) {
    RtDType dt;
    assert_string_equal(rt_dtype_name((RtDType)i), names[i]);
    assert_int_equal(rt_dtype_size((RtDType)i), sizes[i]);
    assert_int_equal(rt_dtype_parse(names[i], &dt), 0);
    assert_int_equal(dt, i);
  }
  RtDType dt = RT_F64;
  assert_int_equal(rt_dtype_parse("f16", &dt), -1);
  assert_int_equal(rt_dtype_parse("", &dt), -1);
  assert_int_equal(dt, RT_F64);
  assert_int_equal(rt_dtype_size(RT_NDTYPES), 0);
  assert_string_equal(rt_dtype_name((RtDType)99), "?");
}

static void test_numel(void **state) {
  RtTensor t = {.dtype = RT_F32, .rank = 0};
  assert_int_equal(rt_numel(&t), 1);
  t.rank = 3, t.shape[0] = 2, t.shape[1] = 3, t.shape[2] = 4;
  assert_int_equal(rt_numel(&t), 24);
  assert_int_equal(rt_tensor_bytes(&t), 96);
  t.shape[1] = 0;
  assert_int_equal(rt_numel(&t), 0);
  t.shape[1] = -1;
  assert_int_equal(rt_numel(&t), -1);
  t.rank = 4, t.shape[0] = t.shape[1] = t.shape[2] = t.shape[3] = INT64_C(1) << 20;
  assert_int_equal(rt_numel(&t), -1);       /* 2^80 */
  t.rank = 2;
  t.shape[0] = t.shape[1] = INT64_C(1) << 31;
  assert_int_equal(rt_numel(&t), INT64_C(1) << 62);
  t.dtype = RT_F64;
  assert_int_equal(rt_tensor_bytes(&t), 0);  /* 2^65 bytes */
  t.rank = 9;
  assert_int_equal(rt_numel(&t), -1);
}

static void test_alloc(void **state) {
  RtTensor t;
  RtError err;
  int64_t shape[] = {3, 5, 7};
  assert_int_equal(rt_tensor_alloc(&t, RT_F64, 3, shape, &err), RT_OK);
  assert_int_equal((uintptr_t)t.data % RT_ALIGN, 0);
  const double *d = t.data;
  for (int i = 0; i < 105; i++)
    assert_true(d[i] == 0.0);
  rt_tensor_free(&t);
  assert_null(t.data);
  rt_tensor_free(&t);                        /* twice is harmless */

  assert_int_equal(rt_tensor_alloc(&t, RT_U8, 0, NULL, &err), RT_OK);  /* a scalar */
  assert_non_null(t.data);
  rt_tensor_free(&t);
  int64_t empty[] = {0, 4};
  assert_int_equal(rt_tensor_alloc(&t, RT_I32, 2, empty, &err), RT_OK);
  assert_non_null(t.data);
  rt_tensor_free(&t);
}

static void test_alloc_errors(void **state) {
  RtTensor t;
  RtError err = {{0}};
  int64_t neg[] = {2, -1}, big[] = {RT_MAX_DIM, RT_MAX_DIM, RT_MAX_DIM}, huge[] = {INT64_C(1) << 32};
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_int_equal(rt_tensor_alloc(&t, RT_F32, 2, neg, &err), RT_ERR_SHAPE);
  assert_non_null(strstr(err.msg, "-1"));
  assert_null(t.data);
  assert_int_equal(rt_tensor_alloc(&t, RT_F32, 3, big, &err), RT_ERR_SHAPE);
  assert_non_null(strstr(err.msg, "too large"));
  assert_int_equal(rt_tensor_alloc(&t, RT_F32, 1, huge, &err), RT_ERR_SHAPE);
  assert_int_equal(rt_tensor_alloc(&t, RT_F32, 9, nine, &err), RT_ERR_SHAPE);
  assert_int_equal(rt_tensor_alloc(&t, (RtDType)42, 1, nine, &err), RT_ERR_ARG);
  assert_int_equal(rt_tensor_alloc(&t, RT_F32, 9, nine, NULL), RT_ERR_SHAPE);  /* NULL err is fine */
}

static void test_bad_bool(void **state) {
  RtTensor t;
  int64_t shape[] = {6};
  assert_int_equal(rt_tensor_alloc(&t, RT_BOOL, 1, shape, NULL), RT_OK);
  uint8_t *b = t.data;
  b[1] = 1;
  assert_int_equal(rt_bad_bool(&t), -1);
  b[4] = 2;
  assert_int_equal(rt_bad_bool(&t), 4);
  t.dtype = RT_U8;                           /* only bool tensors are checked */
  assert_int_equal(rt_bad_bool(&t), -1);
  rt_tensor_free(&t);
}

static void test_shape_str(void **state) {
  char buf[64];
  int64_t s[] = {2, 3, 4};
  assert_string_equal(rt_shape_str(0, s, buf, sizeof buf), "()");
  assert_string_equal(rt_shape_str(1, s, buf, sizeof buf), "(2,)");
  assert_string_equal(rt_shape_str(3, s, buf, sizeof buf), "(2, 3, 4)");
  char small[5];
  rt_shape_str(3, s, small, sizeof small);  /* truncates, stays terminated */
  assert_int_equal(strlen(small), 4);
}

static void test_aligned(void **state) {
  for (size_t n = 0; n < 300; n += 37) {
    unsigned char *p = rt_aligned_alloc(n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    for (size_t i = 0; i < n; i++)
      assert_int_equal(p[i], 0);
    rt_aligned_free(p);
  }
  assert_null(rt_aligned_alloc(SIZE_MAX - 10));
}

static void test_errorf(void **state) {
  RtError err;
  assert_int_equal(rt_errorf(&err, RT_ERR_IO, "%s: %d", "x.npy", 7), RT_ERR_IO);
  assert_string_equal(err.msg, "x.npy: 7");
  assert_int_equal(rt_errorf(NULL, RT_ERR_FORMAT, "ignored"), RT_ERR_FORMAT);
  char longer[2000];
  memset(longer, 'a', sizeof longer - 1);
  longer[sizeof longer - 1] = 0;
  rt_errorf(&err, RT_ERR_IO, "%s", longer);
  assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
  assert_string_equal(rt_status_name(RT_ERR_SHAPE), "shape");
}

static void test_arena(void **state) {
  RtArena *a = rt_arena_new();
  assert_non_null(a);
  char *prev = NULL;
  /* Many small allocations across chunks: aligned, zeroed, disjoint. */
  for (int i = 0; i < 20000; i++) {
    size_t n = (size_t)(i % 61) + 1;
    unsigned char *p = rt_arena_alloc(a, n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    for (size_t k = 0; k < n; k++)
      assert_int_equal(p[k], 0);
    memset(p, 0xAB, n);
    assert_true((char *)p != prev);
    prev = (char *)p;
  }
  /* A big allocation does not waste the current chunk. */
  size_t before = rt_arena_used(a);
  unsigned char *big = rt_arena_alloc(a, 1 << 20);
  assert_non_null(big);
  assert_int_equal(big[(1 << 20) - 1], 0);
  assert_int_equal(rt_arena_used(a), before + (1 << 20));
  assert_non_null(rt_arena_alloc(a, 0));
  assert_string_equal(rt_arena_strdup(a, "conv1.weight"), "conv1.weight");
  assert_string_equal(rt_arena_strndup(a, "abcdef", 3), "abc");
  assert_string_equal(rt_arena_printf(a, "%s.%d.%s", "stage1", 0, "bias"), "stage1.0.bias");
  char *longstr = rt_arena_printf(a, "%0200d", 5);
  assert_int_equal(strlen(longstr), 200);
  rt_arena_free(a);
  rt_arena_free(NULL);
}

static void test_arena_limit(void **state) {
  RtArena *a = rt_arena_new();
  rt_arena_set_limit(a, 256 << 10);
  assert_non_null(rt_arena_alloc(a, 100 << 10));
  assert_null(rt_arena_alloc(a, 200 << 10));   /* would pass the limit */
  assert_null(rt_arena_alloc(a, SIZE_MAX - 4));  /* rounding overflows */
  assert_non_null(rt_arena_alloc(a, 16));        /* still usable */
  rt_arena_free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_dtypes),     cmocka_unit_test(test_numel),
    cmocka_unit_test(test_alloc),      cmocka_unit_test(test_alloc_errors),
    cmocka_unit_test(test_shape_str),  cmocka_unit_test(test_aligned),
    cmocka_unit_test(test_errorf),     cmocka_unit_test(test_arena),
    cmocka_unit_test(test_arena_limit), cmocka_unit_test(test_bad_bool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Datasets: whole and gzipped files (concatenated members, truncation,
 * trailing bytes), adding tensors and files, conversions and checks that
 * name the bad sample, splits and epoch orders that are pure functions of
 * the seed, and batches gathered at 1 and 2 threads bit-identical to a
 * serial reference, the last partial batch included. Samples carry their
 * own index in an "id" tensor, so every gather is checked against the
 * permutation that should have produced it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include "data_fixtures.h"

static void expect_error(RtStatus got, RtStatus want, const RtError *err, const char *msg) {
  if (got != want || strcmp(err->msg, msg) != 0)
    fail_msg("got %s '%s', want %s '%s'", rt_status_name(got), err->msg, rt_status_name(want), msg);
}

/* Sample i: x[i] = {i + 0.25 * j : j < cols}, id[i] = i, y[i] = i % 10. */
static RtDataset make_ids(int64_t n, int64_t cols) {
  RtDataset ds = {0};
  RtTensor x, id, y;
  if (rt_tensor_alloc(&x, RT_F32, 2, (const int64_t[]){n, cols}, NULL) != RT_OK ||
      rt_tensor_alloc(&id, RT_I64, 1, &n, NULL) != RT_OK ||
      rt_tensor_alloc(&y, RT_U8, 1, &n, NULL) != RT_OK)
    abort();
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < cols; j++)
      ((float *)x.data)[i * cols + j] = (float)i + 0.25f * (float)j;
    ((int64_t *)id.data)[i] = i;
    ((uint8_t *)y.data)[i] = (uint8_t)(i % 10);
  }
  if (rt_data_add(&ds, "x", &x, NULL) || rt_data_add(&ds, "id", &id, NULL) ||
      rt_data_add(&ds, "y", &y, NULL))
    abort();
  return ds;
}

/* Every sample of ds is intact: x and y follow from id. */
static void expect_consistent(const RtDataset *ds) {
  const RtTensor *x = &ds->t[0].t, *id = &ds->t[1].t, *y = &ds->t[2].t;
  for (int64_t i = 0; i < ds->len; i++) {
    int64_t s = ((const int64_t *)id->data)[i];
    for (int64_t j = 0; j < x->shape[1]; j++)
      assert_true(((const float *)x->data)[i * x->shape[1] + j] == (float)s + 0.25f * (float)j);
    assert_int_equal(((const uint8_t *)y->data)[i], s % 10);
  }
}

/* ---- bytes ---- */

static void test_bytes(void **state) {
  const char *a = "first member, ", *b = "second member";
  size_t la, lb;
  unsigned char *ga = gzip_mem(a, strlen(a), &la), *gb = gzip_mem(b, strlen(b), &lb);
  unsigned char *both = malloc(la + lb + 3);
  memcpy(both, ga, la);
  memcpy(both + la, gb, lb);
  RtBytes bytes;
  RtError err;
  assert_int_equal(rt_bytes_mem(&bytes, both, la + lb, "two.gz", &err), RT_OK);
  assert_int_equal(bytes.len, strlen(a) + strlen(b));
  assert_memory_equal(bytes.data, "first member, second member", bytes.len);
  rt_bytes_free(&bytes);
  assert_null(bytes.data);
  memcpy(both + la + lb, "xyz", 3);
  expect_error(rt_bytes_mem(&bytes, both, la + lb + 3, "junk.gz", &err), RT_ERR_FORMAT, &err,
               "junk.gz: gzip: bytes after the gzip data");
  expect_error(rt_bytes_mem(&bytes, both, la - 1, "cut.gz", &err), RT_ERR_FORMAT, &err,
               "cut.gz: gzip: truncated gzip data");
  both[12] ^= 0xff;            /* corrupt the deflate stream */
  assert_int_equal(rt_bytes_mem(&bytes, both, la, "bad.gz", &err), RT_ERR_FORMAT);
  assert_non_null(strstr(err.msg, "bad.gz: gzip: "));
  assert_null(bytes.data);
  /* not gzip: the buffer itself, nothing owned */
  assert_int_equal(rt_bytes_mem(&bytes, a, strlen(a), "plain", &err), RT_OK);
  assert_ptr_equal(bytes.data, a);
  assert_null(bytes.owned);
  rt_bytes_free(&bytes);
  write_file(scratch_path("b.gz"), ga, la);
  assert_int_equal(rt_bytes_file(&bytes, scratch_path("b.gz"), &err), RT_OK);
  assert_memory_equal(bytes.data, a, strlen(a));
  rt_bytes_free(&bytes);
  assert_int_equal(rt_bytes_file(&bytes, scratch_path("none"), &err), RT_ERR_IO);
  assert_int_equal(rt_bytes_file(&bytes, scratch, &err), RT_ERR_IO);   /* a directory */
  free(ga);
  free(gb);
  free(both);
}

/* ---- building datasets ---- */

static void test_add(void **state) {
  RtDataset ds = {0};
  RtError err;
  RtTensor a, b, s;
  rt_tensor_alloc(&a, RT_F32, 2, (const int64_t[]){4, 3}, NULL);
  rt_tensor_alloc(&b, RT_I64, 1, (const int64_t[]){5}, NULL);
  rt_tensor_alloc(&s, RT_F32, 0, NULL, NULL);
  assert_int_equal(rt_data_add(&ds, "a", &a, &err), RT_OK);
  assert_null(a.data);
  assert_int_equal(ds.len, 4);
  expect_error(rt_data_add(&ds, "b", &b, &err), RT_ERR_SHAPE, &err, "'b' has 5 samples, 'a' has 4");
  assert_non_null(b.data);     /* still the caller's */
  expect_error(rt_data_add(&ds, "a", &b, &err), RT_ERR_ARG, &err,
               "the dataset already has a tensor named 'a'");
  expect_error(rt_data_add(&ds, "", &b, &err), RT_ERR_ARG, &err, "a dataset tensor needs a name");
  expect_error(rt_data_add(&ds, "s", &s, &err), RT_ERR_SHAPE, &err,
               "'s' is a scalar; a dataset tensor has a sample axis");
  RtTensor hollow;
  rt_tensor_init(&hollow, RT_F32, 2, (const int64_t[]){4, 3}, NULL);
  expect_error(rt_data_add(&ds, "h", &hollow, &err), RT_ERR_ARG, &err, "'h' has a bad shape or no data");
  assert_int_equal(rt_data_find(&ds, "a"), 0);
  assert_int_equal(rt_data_find(&ds, "b"), -1);
  rt_tensor_free(&b);
  rt_tensor_free(&s);
  rt_data_free(&ds);
  assert_int_equal(ds.n, 0);
  rt_data_free(NULL);
}

static void test_add_files(void **state) {
  RtDataset ds = {0};
  RtError err;
  /* IDX labels, gzipped, and an .npy of the same length */
  uint8_t idx[] = {0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9};
  size_t glen;
  unsigned char *gz = gzip_mem(idx, sizeof idx, &glen);
  write_file(scratch_path("lab.idx.gz"), gz, glen);
  free(gz);
  RtTensor x;
  rt_tensor_alloc(&x, RT_F64, 2, (const int64_t[]){3, 2}, NULL);
  ((double *)x.data)[5] = 2.5;
  assert_int_equal(rt_npy_write(scratch_path("x.npy"), &x, &err), RT_OK);
  rt_tensor_free(&x);
  assert_int_equal(rt_data_add_file(&ds, "x", scratch_path("x.npy"), &err), RT_OK);
  assert_int_equal(rt_data_add_file(&ds, "y", scratch_path("lab.idx.gz"), &err), RT_OK);
  assert_int_equal(ds.n, 2);
  assert_int_equal(ds.len, 3);
  assert_true(((double *)ds.t[0].t.data)[5] == 2.5);
  assert_memory_equal(ds.t[1].t.data, "\x07\x08\x09", 3);
  write_file(scratch_path("t.txt"), "1,2,3\n", 6);
  char want[1200];
  snprintf(want, sizeof want, "%s: neither a .npy nor an IDX file (CSV files are read with their "
           "options by rt_data_add_csv)", scratch_path("t.txt"));
  expect_error(rt_data_add_file(&ds, "t", scratch_path("t.txt"), &err), RT_ERR_FORMAT, &err, want);
  /* a 4-sample tensor does not join a 3-sample dataset */
  uint8_t idx4[] = {0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4};
  write_file(scratch_path("four.idx"), idx4, sizeof idx4);
  expect_error(rt_data_add_file(&ds, "z", scratch_path("four.idx"), &err), RT_ERR_SHAPE, &err,
               "'z' has 4 samples, 'x' has 3");
  assert_int_equal(ds.n, 2);
  rt_data_free(&ds);
}

static void test_add_csv_digits(void **state) {
  RtDataset ds = {0};
  RtError err;
  RtCsvOptions opt = {.has_label = true, .label = -1, .scale = 1.0f / 16};
  if (rt_data_add_csv(&ds, example_path("digits.csv.gz"), &opt, "x", "y", &err) != RT_OK)
    fail_msg("%s", err.msg);
  assert_int_equal(ds.n, 2);
  assert_int_equal(ds.len, 1797);
  assert_int_equal(ds.t[0].t.shape[1], 64);
  assert_int_equal(rt_data_check_finite(&ds, "x", &err), RT_OK);
  assert_int_equal(rt_data_check_labels(&ds, "y", 10, &err), RT_OK);
  /* labels 0..9 with 9 classes: sample 9 is the first 9 of the file */
  expect_error(rt_data_check_labels(&ds, "y", 9, &err), RT_ERR_FORMAT, &err,
               "'y': sample 9 has label 9, outside [0, 9)");
  int64_t shape[4] = {1797, 1, 8, 8};
  assert_int_equal(rt_data_reshape(&ds, "x", 4, shape, &err), RT_OK);
  assert_int_equal(ds.t[0].t.rank, 4);
  /* a second CSV with a clashing label name adds nothing */
  expect_error(rt_data_add_csv(&ds, example_path("digits.csv.gz"), &opt, "x2", "y", &err),
               RT_ERR_ARG, &err, "the dataset already has a tensor named 'y'");
  assert_int_equal(ds.n, 2);
  rt_data_free(&ds);
}

/* ---- conversions and checks ---- */

static void test_convert(void **state) {
  RtDataset ds = {0};
  RtError err;
  RtTensor px, big;
  rt_tensor_alloc(&px, RT_U8, 2, (const int64_t[]){2, 3}, NULL);
  memcpy(px.data, (const uint8_t[]){0, 51, 255, 1, 2, 3}, 6);
  rt_tensor_alloc(&big, RT_I64, 1, (const int64_t[]){2}, NULL);
  ((int64_t *)big.data)[1] = INT64_C(1) << 40;
  rt_data_add(&ds, "px", &px, NULL);
  rt_data_add(&ds, "big", &big, NULL);
  assert_int_equal(rt_data_convert(&ds, "px", RT_F32, 1.0 / 255, &err), RT_OK);
  const float *f = ds.t[0].t.data;
  assert_int_equal(ds.t[0].t.dtype, RT_F32);
  assert_true(f[0] == 0 && f[2] == 1);
  assert_true(fabsf(f[1] - 0.2f) <= 1e-7f);
  assert_true(fabsf(f[5] - 3 / 255.0f) <= 1e-9f);
  expect_error(rt_data_convert(&ds, "px", RT_I64, 1, &err), RT_ERR_ARG, &err,
               "'px': cannot convert f32 to i64");
  expect_error(rt_data_convert(&ds, "big", RT_I32, 1, &err), RT_ERR_ARG, &err,
               "'big': sample 1: 1.09951e+12 does not fit i32");
  expect_error(rt_data_convert(&ds, "big", RT_I32, 2, &err), RT_ERR_ARG, &err,
               "'big': scale 2 must be 1 for an integer dtype");
  expect_error(rt_data_convert(&ds, "big", RT_U8, 1, &err), RT_ERR_ARG, &err,
               "'big': cannot convert to u8 (f32, f64, i32 or i64)");
  expect_error(rt_data_convert(&ds, "nope", RT_F32, 1, &err), RT_ERR_ARG, &err,
               "the dataset has no tensor named 'nope'");
  assert_int_equal(rt_data_convert(&ds, "big", RT_F64, 0.5, &err), RT_OK);
  assert_true(((double *)ds.t[1].t.data)[1] == 549755813888.0);
  expect_error(rt_data_check_labels(&ds, "big", 10, &err), RT_ERR_ARG, &err,
               "'big' is f64; class labels are integers");
  expect_error(rt_data_reshape(&ds, "px", 2, (const int64_t[]){3, 2}, &err), RT_ERR_SHAPE, &err,
               "'px': cannot reshape (2, 3) to (3, 2) (same samples, same size)");
  expect_error(rt_data_reshape(&ds, "px", 3, (const int64_t[]){2, 2, 2}, &err), RT_ERR_SHAPE, &err,
               "'px': cannot reshape (2, 3) to (2, 2, 2) (same samples, same size)");
  rt_data_free(&ds);
}

static void test_check_finite(void **state) {
  RtDataset ds = make_ids(6, 4);
  RtError err;
  assert_int_equal(rt_data_check_finite(&ds, "x", &err), RT_OK);
  assert_int_equal(rt_data_check_finite(&ds, "id", &err), RT_OK);   /* integers: nothing to check */
  ((float *)ds.t[0].t.data)[4 * 4 + 2] = NAN;
  expect_error(rt_data_check_finite(&ds, "x", &err), RT_ERR_FORMAT, &err,
               "'x': sample 4 holds NaN (element 2 of 4)");
  ((float *)ds.t[0].t.data)[1 * 4 + 3] = -INFINITY;
  expect_error(rt_data_check_finite(&ds, "x", &err), RT_ERR_FORMAT, &err,
               "'x': sample 1 holds an infinity (element 3 of 4)");
  assert_int_equal(rt_data_check_labels(&ds, "y", 10, &err), RT_OK);
  ((uint8_t *)ds.t[2].t.data)[3] = 200;
  expect_error(rt_data_check_labels(&ds, "y", 10, &err), RT_ERR_FORMAT, &err,
               "'y': sample 3 has label 200, outside [0, 10)");
  ((int64_t *)ds.t[1].t.data)[5] = -1;
  expect_error(rt_data_check_labels(&ds, "id", 100, &err), RT_ERR_FORMAT, &err,
               "'id': sample 5 has label -1, outside [0, 100)");
  expect_error(rt_data_check_labels(&ds, "y", 0, &err), RT_ERR_ARG, &err, "'y': 0 classes");
  rt_data_free(&ds);
}

/* ---- splits and orders ---- */

static const int64_t *ids(const RtDataset *ds) { return ds->t[1].t.data; }

static void test_split(void **state) {
  RtDataset ds = make_ids(1797, 3), tr, va, tr2, va2;
  RtError err;
  assert_int_equal(rt_data_split(&ds, 0.2, 42, &tr, &va, &err), RT_OK);
  assert_int_equal(va.len, 359);              /* llround(0.2 * 1797) */
  assert_int_equal(tr.len, 1797 - 359);
  expect_consistent(&tr);
  expect_consistent(&va);
  /* the documented order: the shuffle, training first */
  int64_t *perm = malloc(1797 * sizeof *perm);
  rt_shuffle(perm, 1797, 42, rt_hash_str("kiln.split"));
  for (int64_t i = 0; i < tr.len; i++)
    assert_int_equal(ids(&tr)[i], perm[i]);
  for (int64_t i = 0; i < va.len; i++)
    assert_int_equal(ids(&va)[i], perm[tr.len + i]);
  /* a partition: every sample exactly once */
  char *seen = calloc(1797, 1);
  for (int64_t i = 0; i < tr.len; i++)
    seen[ids(&tr)[i]]++;
  for (int64_t i = 0; i < va.len; i++)
    seen[ids(&va)[i]]++;
  for (int64_t i = 0; i < 1797; i++)
    assert_int_equal(seen[i], 1);
  /* same seed, same split; another seed, another one */
  assert_int_equal(rt_data_split(&ds, 0.2, 42, &tr2, &va2, &err), RT_OK);
  assert_memory_equal(ids(&va2), ids(&va), va.len * sizeof(int64_t));
  assert_memory_equal(tr2.t[0].t.data, tr.t[0].t.data, rt_tensor_bytes(&tr.t[0].t));
  rt_data_free(&tr2);
  rt_data_free(&va2);
  assert_int_equal(rt_data_split(&ds, 0.2, 43, &tr2, &va2, &err), RT_OK);
  assert_true(memcmp(ids(&va2), ids(&va), va.len * sizeof(int64_t)) != 0);
  rt_data_free(&tr2);
  rt_data_free(&va2);
  /* no validation */
  assert_int_equal(rt_data_split(&ds, 0, 1, &tr2, &va2, &err), RT_OK);
  assert_int_equal(tr2.len, 1797);
  assert_int_equal(va2.len, 0);
  assert_int_equal(va2.n, 3);
  rt_data_free(&tr2);
  rt_data_free(&va2);
  free(seen);
  free(perm);
  rt_data_free(&tr);
  rt_data_free(&va);
  rt_data_free(&ds);
}

static void test_split_errors(void **state) {
  RtDataset ds = make_ids(10, 2), tr, va, empty = {0};
  RtError err;
  expect_error(rt_data_split(&ds, 1, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "validation fraction 1 is outside [0, 1)");
  expect_error(rt_data_split(&ds, -0.1, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "validation fraction -0.1 is outside [0, 1)");
  expect_error(rt_data_split(&ds, NAN, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "validation fraction nan is outside [0, 1)");
  expect_error(rt_data_split(&ds, 0.01, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "validation fraction 0.01 of 10 samples leaves the validation set empty");
  expect_error(rt_data_split(&ds, 0.96, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "validation fraction 0.96 of 10 samples leaves the training set empty");
  expect_error(rt_data_split(&empty, 0.5, 0, &tr, &va, &err), RT_ERR_ARG, &err,
               "cannot split an empty dataset");
  assert_null(tr.t[0].name);
  expect_error(rt_data_subset(&ds, (const int64_t[]){3, 10}, 2, &tr, &err), RT_ERR_ARG, &err,
               "sample index 10 (at position 1) is outside [0, 10)");
  rt_data_free(&ds);
}

static bool is_permutation(const int64_t *p, int64_t n) {
  char *seen = calloc((size_t)n, 1);
  bool ok = true;
  for (int64_t i = 0; i < n; i++)
    ok = ok && p[i] >= 0 && p[i] < n && !seen[p[i]]++;
  free(seen);
  return ok;
}

static void test_epoch_order(void **state) {
  int64_t a[500], b[500], ref[500];
  rt_data_epoch_order(a, 500, 7, 3);
  rt_data_epoch_order(b, 500, 7, 3);
  assert_memory_equal(a, b, sizeof a);
  assert_true(is_permutation(a, 500));
  rt_shuffle(ref, 500, 7, rt_hash_str("kiln.epoch") + 3);
  assert_memory_equal(a, ref, sizeof a);
  rt_data_epoch_order(b, 500, 7, 4);
  assert_true(memcmp(a, b, sizeof a) != 0);
  rt_data_epoch_order(b, 500, 8, 3);
  assert_true(memcmp(a, b, sizeof a) != 0);
}

/* ---- batches ---- */

typedef struct { RtTensor t[3]; } Buffers;

static Buffers batch_buffers(int64_t batch, int64_t cols, uint8_t fill) {
  Buffers b;
  rt_tensor_alloc(&b.t[0], RT_F32, 2, (const int64_t[]){batch, cols}, NULL);
  rt_tensor_alloc(&b.t[1], RT_I64, 1, &batch, NULL);
  rt_tensor_alloc(&b.t[2], RT_U8, 1, &batch, NULL);
  for (int i = 0; i < 3; i++)
    memset(b.t[i].data, fill, rt_tensor_bytes(&b.t[i]));
  return b;
}

static void free_buffers(Buffers *b) {
  for (int i = 0; i < 3; i++)
    rt_tensor_free(&b->t[i]);
}

static void test_batches(void **state) {
  RtDataset ds = make_ids(10, 3);
  RtError err;
  int64_t perm[10], got, sizes[3];
  rt_data_epoch_order(perm, 10, 1, 0);
  Buffers b = batch_buffers(4, 3, 0xAB);
  for (int k = 0; k < 3; k++) {
    assert_int_equal(rt_data_batch(&ds, perm, 4 * k, 4, b.t, 1, &got, &err), RT_OK);
    sizes[k] = got;
    for (int64_t i = 0; i < got; i++) {
      assert_int_equal(((int64_t *)b.t[1].data)[i], perm[4 * k + i]);
      for (int j = 0; j < 3; j++)
        assert_true(((float *)b.t[0].data)[i * 3 + j] == (float)perm[4 * k + i] + 0.25f * j);
      assert_int_equal(((uint8_t *)b.t[2].data)[i], perm[4 * k + i] % 10);
    }
  }
  assert_int_equal(sizes[0], 4);
  assert_int_equal(sizes[1], 4);
  assert_int_equal(sizes[2], 2);   /* the last, partial batch */
  /* rows past the partial batch are still those of the previous batch */
  assert_int_equal(((int64_t *)b.t[1].data)[2], perm[6]);
  assert_int_equal(rt_data_batch(&ds, perm, 10, 4, b.t, 1, &got, &err), RT_OK);
  assert_int_equal(got, 0);
  /* no permutation: the file's order */
  assert_int_equal(rt_data_batch(&ds, NULL, 3, 4, b.t, 0, &got, &err), RT_OK);
  for (int64_t i = 0; i < 4; i++)
    assert_int_equal(((int64_t *)b.t[1].data)[i], 3 + i);
  /* a buffer just large enough for the last batch is fine */
  Buffers small = batch_buffers(2, 3, 0);
  assert_int_equal(rt_data_batch(&ds, perm, 8, 4, small.t, 1, &got, &err), RT_OK);
  assert_int_equal(got, 2);
  free_buffers(&small);
  free_buffers(&b);
  rt_data_free(&ds);
}

static void test_batch_errors(void **state) {
  RtDataset ds = make_ids(10, 3);
  RtError err;
  int64_t got = 99, perm[10];
  rt_data_epoch_order(perm, 10, 1, 0);
  Buffers b = batch_buffers(4, 3, 0);
  expect_error(rt_data_batch(&ds, perm, 11, 4, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "batch of 4 at 11 is outside the 10 samples");
  assert_int_equal(got, 0);
  expect_error(rt_data_batch(&ds, perm, 0, -1, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "batch of -1 at 0 is outside the 10 samples");
  expect_error(rt_data_batch(&ds, perm, 0, 5, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "batch buffer for 'x' is f32 (4, 3), the batch needs f32 (5, 3)");
  Buffers wrong = batch_buffers(4, 2, 0);
  expect_error(rt_data_batch(&ds, perm, 0, 4, wrong.t, 1, &got, &err), RT_ERR_ARG, &err,
               "batch buffer for 'x' is f32 (4, 2), the batch needs f32 (4, 3)");
  free_buffers(&wrong);
  b.t[2].dtype = RT_I64;
  expect_error(rt_data_batch(&ds, perm, 0, 4, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "batch buffer for 'y' is i64 (4,), the batch needs u8 (4,)");
  b.t[2].dtype = RT_U8;
  perm[5] = 10;
  expect_error(rt_data_batch(&ds, perm, 4, 4, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "sample index 10 (at position 1) is outside [0, 10)");
  perm[5] = -3;
  expect_error(rt_data_batch(&ds, perm, 4, 4, b.t, 1, &got, &err), RT_ERR_ARG, &err,
               "sample index -3 (at position 1) is outside [0, 10)");
  free_buffers(&b);
  rt_data_free(&ds);
}

/* A whole epoch at 1 and 2 threads, against a serial memcpy reference:
 * enough rows for many parallel chunks. */
static void test_batch_threads(void **state) {
  enum { N = 20000, COLS = 37, BATCH = 3000 };
  RtDataset ds = make_ids(N, COLS);
  RtError err;
  int64_t *perm = malloc(N * sizeof *perm), got1, got2;
  rt_data_epoch_order(perm, N, 5, 2);
  Buffers one = batch_buffers(BATCH, COLS, 0), two = batch_buffers(BATCH, COLS, 0);
  float *ref = malloc(BATCH * COLS * sizeof *ref);
  for (int64_t start = 0; start < N; start += BATCH) {
    assert_int_equal(rt_data_batch(&ds, perm, start, BATCH, one.t, 1, &got1, &err), RT_OK);
    assert_int_equal(rt_data_batch(&ds, perm, start, BATCH, two.t, 2, &got2, &err), RT_OK);
    assert_int_equal(got1, got2);
    assert_int_equal(got1, start + BATCH <= N ? BATCH : N - start);
    for (int i = 0; i < 3; i++)
      assert_memory_equal(one.t[i].data, two.t[i].data, rt_tensor_bytes(&one.t[i]));
    for (int64_t r = 0; r < got1; r++)
      memcpy(ref + r * COLS, (float *)ds.t[0].t.data + perm[start + r] * COLS, COLS * sizeof *ref);
    assert_memory_equal(one.t[0].data, ref, (size_t)got1 * COLS * sizeof *ref);
  }
  free(ref);
  free(perm);
  free_buffers(&one);
  free_buffers(&two);
  rt_data_free(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_bytes),         cmocka_unit_test(test_add),
    cmocka_unit_test(test_add_files),     cmocka_unit_test(test_add_csv_digits),
    cmocka_unit_test(test_convert),       cmocka_unit_test(test_check_finite),
    cmocka_unit_test(test_split),         cmocka_unit_test(test_split_errors),
    cmocka_unit_test(test_epoch_order),   cmocka_unit_test(test_batches),
    cmocka_unit_test(test_batch_errors),  cmocka_unit_test(test_batch_threads),
  };
  return cmocka_run_group_tests(tests, scratch_make, scratch_remove);
}

/* A C program that knows an exported model only through its generated
 * header: compiled by test_aot.c with the system cc, -DMODEL=name
 * -DUPPER=NAME -DHEADER="name.h", against libNAME.so. Raw little-endian
 * files in and out, so it needs nothing but libc.
 *
 *   probe infer   IN BATCH OUT [WEIGHTS]     inference, output 0 to OUT
 *   probe regions IN BATCH OUT               the same in caller-owned memory
 *   probe train   IN LABELS BATCH LR OUT.safetensors LOSS-OUT INFER-OUT
 *                 one training step, the weights after it, the loss,
 *                 then inference on IN with the new weights; the same
 *                 step in caller-owned memory must give the same loss
 *   probe errors  CORRUPT.safetensors        every misuse gives its status
 *
 * Exit status 0 when all went as expected; messages on stderr. */
#include HEADER
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define F(x) CAT(MODEL, x)    /* F(create): name_create */
#define U(x) CAT(UPPER, x)    /* U(OK): NAME_OK */

typedef F(symbol) Symbol;

static const size_t dsize[] = {4, 8, 4, 8, 1, 1};

/* Bytes of a tensor of the symbol table at this batch (the batch leads). */
static size_t bytes_at(const Symbol *s, long long batch) {
  size_t n = dsize[s->dtype];
  for (int k = 0; k < s->rank; k++)
    n *= k == 0 && (s->role == U(INPUT) || s->role == U(OUTPUT)) ? (size_t)batch : (size_t)s->shape[k];
  return n;
}

static void *slurp(const char *path, size_t want) {
  FILE *f = fopen(path, "rb");
  void *p = malloc(want ? want : 1);
  if (!f || !p || fread(p, 1, want, f) != want) {
    fprintf(stderr, "probe: cannot read %zu bytes of %s\n", want, path);
    exit(1);
  }
  fclose(f);
  return p;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
    fprintf(stderr, "probe: cannot write %s\n", path);
    exit(1);
  }
}

static MODEL *create(const char *weights) {
  MODEL *m;
  if (F(create)(&m, weights) != U(OK)) {
    fprintf(stderr, "probe: create: %s\n", F(error)(m));
    exit(1);
  }
  return m;
}

static int infer(const char *in, long long batch, const char *out, const char *weights) {
  MODEL *m = create(weights);
  const Symbol *x = &F(infer_symbols)[0], *y = &F(infer_symbols)[U(NUM_INPUTS)];
  void *xd = slurp(in, bytes_at(x, batch)), *yd = malloc(bytes_at(y, batch));
  int rc = F(infer)(m, batch, (const void *[]){xd}, (void *[]){yd});
  if (rc == U(OK))
    spit(out, yd, bytes_at(y, batch));
  else
    fprintf(stderr, "probe: infer: %s\n", F(error)(m));
  F(destroy)(m);
  free(xd);
  free(yd);
  return rc;
}

static int regions(const char *in, long long batch, const char *out) {
  static const long long sizes[] = {U(INFER_WEIGHTS_BYTES), U(INFER_IO_BYTES),
                                    U(INFER_SCRATCH_BYTES), U(INFER_STATE_BYTES),
                                    U(INFER_GRADS_BYTES)};
  void *r[U(NUM_REGIONS)];
  for (int i = 0; i < U(NUM_REGIONS); i++)
    r[i] = aligned_alloc(U(ALIGN), (sizes[i] + U(ALIGN)) / U(ALIGN) * U(ALIGN));
  const Symbol *x = &F(infer_symbols)[0], *y = &F(infer_symbols)[U(NUM_INPUTS)];
  void *xd = slurp(in, bytes_at(x, batch));
  int rc = F(infer_init)(r, NULL);
  memcpy((char *)r[x->region] + x->offset, xd, bytes_at(x, batch));
  if (rc == U(OK))
    rc = F(infer_run)(r, batch, 0);
  if (rc == U(OK))
    spit(out, (char *)r[y->region] + y->offset, bytes_at(y, batch));
  for (int i = 0; i < U(NUM_REGIONS); i++)
    free(r[i]);
  free(xd);
  return rc;
}

#if U(HAS_TRAIN_STEP)
static const Symbol *train_symbol(const char *name) {
  for (int i = 0; i < U(TRAIN_NUM_SYMBOLS); i++)
    if (!strcmp(F(train_symbols)[i].name, name))
      return &F(train_symbols)[i];
  fprintf(stderr, "probe: no '%s' in the training step's symbols\n", name);
  exit(1);
}

/* The step in caller-owned memory: its loss, from the built-in weights. */
static float train_in_regions(const void *xd, const void *ld, long long batch, float lr) {
  static const long long sizes[] = {U(TRAIN_WEIGHTS_BYTES), U(TRAIN_IO_BYTES),
                                    U(TRAIN_SCRATCH_BYTES), U(TRAIN_STATE_BYTES),
                                    U(TRAIN_GRADS_BYTES)};
  void *r[U(NUM_REGIONS)];
  for (int i = 0; i < U(NUM_REGIONS); i++)
    r[i] = aligned_alloc(U(ALIGN), (sizes[i] + U(ALIGN)) / U(ALIGN) * U(ALIGN));
  const Symbol *x = &F(train_symbols)[0], *lab = &F(train_symbols)[1];
  const Symbol *l = train_symbol("lr"), *loss = train_symbol("loss");
  float got = -1;
  if (F(train_init)(r, NULL) == U(OK)) {
    memcpy((char *)r[x->region] + x->offset, xd, bytes_at(x, batch));
    memcpy((char *)r[lab->region] + lab->offset, ld, bytes_at(lab, batch));
    memcpy((char *)r[l->region] + l->offset, &lr, sizeof lr);
    if (F(train_run)(r, batch, 0) == U(OK))
      memcpy(&got, (char *)r[loss->region] + loss->offset, sizeof got);
  }
  for (int i = 0; i < U(NUM_REGIONS); i++)
    free(r[i]);
  return got;
}
#endif

static int train(char **a) {
#if U(HAS_TRAIN_STEP)
  long long batch = atoll(a[2]);
  MODEL *m = create(NULL);
  const Symbol *x = &F(train_symbols)[0], *lab = &F(train_symbols)[1];
  void *xd = slurp(a[0], bytes_at(x, batch)), *ld = slurp(a[1], bytes_at(lab, batch));
  float loss;
  int rc = F(train_step)(m, batch, (const void *[]){xd, ld}, (float)atof(a[3]), &loss);
  if (rc == U(OK))
    rc = F(save_weights)(m, a[4]);
  if (rc == U(OK))
    spit(a[5], &loss, sizeof loss);
  if (rc == U(OK) && train_in_regions(xd, ld, batch, (float)atof(a[3])) != loss) {
    fprintf(stderr, "probe: the step in caller-owned memory gave another loss\n");
    rc = 1;
  }
  if (rc == U(OK) && !F(find)(m, F(train_symbols)[U(TRAIN_NUM_SYMBOLS) - 1].name)) {
    fprintf(stderr, "probe: %s_find does not find the last symbol\n", "model");
    rc = 1;
  }
  F(destroy)(m);
  free(xd);
  free(ld);
  return rc ? rc : infer(a[0], batch, a[6], a[4]);
#else
  (void)a;
  fprintf(stderr, "probe: the export has no training step\n");
  return 1;
#endif
}

static int failures;

static void expect(const char *what, int got, int want, const MODEL *m) {
  printf("%s: status %d (%s)\n", what, got, got ? F(error)(m) : "ok");
  if (got != want) {
    fprintf(stderr, "probe: %s gave status %d, expected %d\n", what, got, want);
    failures++;
  }
}

/* Each misuse and the status it must give. */
static int errors(const char *corrupt) {
  MODEL *m = create(NULL), *bad;
  const Symbol *x = &F(infer_symbols)[0];
  size_t most = bytes_at(x, U(MAX_BATCH) + 1);
  F(tensor) in = {x->dtype, x->rank, {0}, calloc(1, most)}, out = {0};
  memcpy(in.shape, x->shape, sizeof in.shape);
  void *outs[U(NUM_OUTPUTS)] = {malloc(1 << 20)};
  const void *ins[] = {in.data}, *none[] = {NULL};
  expect("batch 0", F(infer)(m, 0, ins, outs), U(ERR_ARG), m);
  expect("a batch past the maximum", F(infer)(m, U(MAX_BATCH) + 1, ins, outs), U(ERR_ARG), m);
  expect("a NULL input", F(infer)(m, 1, none, outs), U(ERR_ARG), m);
  expect("the right shape", F(infer_tensors)(m, &in, 1, &out, 1), U(OK), m);
  in.dtype = U(F64);
  expect("a wrong dtype", F(infer_tensors)(m, &in, 1, &out, 1), U(ERR_INPUT), m);
  in.dtype = x->dtype;
  in.shape[x->rank - 1]++;
  expect("a wrong last dim", F(infer_tensors)(m, &in, 1, &out, 1), U(ERR_INPUT), m);
  in.shape[x->rank - 1]--;
  in.rank++;
  expect("a wrong rank", F(infer_tensors)(m, &in, 1, &out, 1), U(ERR_INPUT), m);
  in.rank--;
  in.shape[0] = U(MAX_BATCH) + 1;
  expect("a batch past the maximum (tensors)", F(infer_tensors)(m, &in, 1, &out, 1), U(ERR_ARG), m);
  expect("negative threads", F(set_threads)(m, -1), U(ERR_ARG), m);
  int st = F(create)(&bad, corrupt);      /* bad is set by the call: read it after */
  expect("a corrupt weights file", st, U(ERR_WEIGHTS), bad);
  F(destroy)(bad);
  st = F(create)(&bad, "/nonexistent/w.safetensors");
  expect("a missing weights file", st, U(ERR_IO), bad);
  F(destroy)(bad);
  F(destroy)(m);
  free(in.data);
  free(outs[0]);
  return failures;
}

int main(int argc, char **argv) {
  if (argc >= 5 && !strcmp(argv[1], "infer"))
    return infer(argv[2], atoll(argv[3]), argv[4], argc > 5 ? argv[5] : NULL) != U(OK);
  if (argc == 5 && !strcmp(argv[1], "regions"))
    return regions(argv[2], atoll(argv[3]), argv[4]) != U(OK);
  if (argc == 9 && !strcmp(argv[1], "train"))
    return train(argv + 2) != U(OK);
  if (argc == 3 && !strcmp(argv[1], "errors"))
    return errors(argv[2]);
  fprintf(stderr, "usage: probe infer|regions|train|errors ...\n");
  return 2;
}

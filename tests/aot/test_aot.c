/* Exported artifacts against the JIT. Each case runs the real `kiln
 * export` / `kiln build` (KILN) into a fresh folder, compiles
 * tests/aot/probe.c with the system C compiler (CC) against the generated
 * header alone, runs it, and compares what it wrote with the same model run
 * through the C API (include/kiln.h) in this process: inference and a
 * training step must give the same bits on this CPU; a build for another
 * CPU within 1e-6 (DESIGN.md's measure); objects for other targets must be
 * ELF objects of their machine; misuse must give an error status, not a
 * crash; the .so must need no LLVM and no kiln. KILN_SRC is the source
 * tree. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <kiln.h>
#include "runtime/rt.h"
#include "tests/shell.h"

/* kiln export MODEL ARGS, then the probe compiled against NAME.h and the
 * artifact (libNAME.so, or libNAME.a with link_args). */
static void export_and_probe(const char *model, const char *name, const char *args,
                             const char *artifact, const char *link_args) {
  char upper[64];
  for (int i = 0; name[i] && i < 63; i++)
    upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]), upper[i + 1] = 0;
  SH_OK("'%s' export '%s' %s -o %s", getenv("KILN"), src(model), args, artifact);
  SH_OK("'%s' -std=c11 -Wall -Wextra -Werror -O2 -I. -DMODEL=%s -DUPPER=%s '-DHEADER=\"%s.h\"' "
        "'%s' %s -Wl,-rpath,'%s' -o probe_%s", getenv("CC"), name, upper, name,
        src("tests/aot/probe.c"), link_args, tmp, name);
}

static void write_raw(const char *name, const RtTensor *t) {
  FILE *f = fopen(in_tmp(name), "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(t->data, 1, rt_tensor_bytes(t), f), rt_tensor_bytes(t));
  fclose(f);
}

static void *read_raw(const char *name, size_t n) {
  FILE *f = fopen(in_tmp(name), "rb");
  if (!f)
    fail_msg("no %s", name);
  void *p = malloc(n + 1);
  assert_int_equal(fread(p, 1, n + 1, f), n);
  fclose(f);
  return p;
}

static RtTensor npy(const char *path) {
  RtTensor t;
  RtError e;
  if (rt_npy_read(path, &t, &e) != RT_OK)
    fail_msg("%s", e.msg);
  return t;
}

/* The first `rows` samples of t (the batch leads). */
static RtTensor first_rows(const RtTensor *t, int64_t rows) {
  RtTensor r = *t;
  r.shape[0] = rows;
  return r;
}

static KilnModel *jit(const char *model, const char *weights, uint64_t seed) {
  KilnModel *m;
  KilnOptions o;
  kiln_options_default(&o);
  o.max_batch = 64;
  if (kiln_load(src(model), &o, &m) != KILN_OK ||
      (weights ? kiln_load_weights(m, weights) : kiln_init_weights(m, seed)) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return m;
}

static KilnTensor as_input(const char *name, const RtTensor *t) {
  KilnTensor k = {name, (KilnDType)t->dtype, t->rank, {0}, t->data};
  memcpy(k.shape, t->shape, sizeof k.shape);
  return k;
}

/* Output 0 of the JIT on input x. */
static KilnTensor jit_run(KilnModel *m, const RtTensor *x) {
  KilnTensor in = as_input("x", x), y;
  if (kiln_run(m, &in, 1, &y, 1) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  return y;
}

static size_t kbytes(const KilnTensor *t) {
  size_t n = t->dtype == KILN_F64 || t->dtype == KILN_I64 ? 8 : 4;
  for (int i = 0; i < t->rank; i++)
    n *= t->shape[i];
  return n;
}

/* max|got - ref| / max|ref| over n floats */
static double rel_err(const float *got, const float *ref, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) {
    d = fmax(d, fabs((double)got[i] - ref[i]));
    r = fmax(r, fabs((double)ref[i]));
  }
  return r > 0 ? d / r : d;
}

/* ---- inference ---------------------------------------------------------- */

static void check_probe_infer(const char *name, const RtTensor *x, KilnModel *m, bool exact) {
  for (int64_t rows = 64; rows >= 5; rows -= 59) {
    RtTensor part = first_rows(x, rows);
    write_raw("x.bin", &part);
    KilnTensor ref = jit_run(m, &part);
    SH_OK("./probe_%s infer x.bin %lld y.bin", name, (long long)rows);
    float *got = read_raw("y.bin", kbytes(&ref));
    if (exact)
      assert_memory_equal(got, ref.data, kbytes(&ref));
    else
      assert_true(rel_err(got, ref.data, kbytes(&ref) / 4) <= 1e-6);
    SH_OK("./probe_%s regions x.bin %lld y2.bin", name, (long long)rows);
    float *got2 = read_raw("y2.bin", kbytes(&ref));
    assert_memory_equal(got2, got, kbytes(&ref));
    free(got);
    free(got2);
  }
}

/* examples/EX.kiln exported with its fixture weights (tests/models/EX*)
 * and args, probed through artifact against the JIT on the fixture input. */
static void against_jit(const char *ex, const char *name, const char *args, const char *artifact,
                        const char *link_args, bool exact) {
  char model[128], w[128], xs[128], all[512];
  snprintf(model, sizeof model, "examples/%s.kiln", ex);
  snprintf(w, sizeof w, "tests/models/%s.safetensors", ex);
  snprintf(xs, sizeof xs, "tests/models/%s_x.npy", ex);
  snprintf(all, sizeof all, "--weights '%s' %s", src(w), args);
  export_and_probe(model, name, all, artifact, link_args);
  RtTensor x = npy(src(xs));
  KilnModel *m = jit(model, src(w), 0);
  check_probe_infer(name, &x, m, exact);
  kiln_free(m);
  rt_tensor_free(&x);
}

/* The cnn (convolutions, batchnorm folded at export, pooling) bit for bit. */
static void test_infer_cnn(void **state) {
  against_jit("cnn", "cnn", "--infer-only", "libcnn.so", "-L. -lcnn", true);
}

/* The mlp as a static archive, linked into the probe. */
static void test_static_archive(void **state) {
  against_jit("mlp", "mlpa", "", "libmlpa.a", "libmlpa.a -fopenmp -lm", true);
}

/* Weights in a .safetensors beside the .so, found there, or given. */
static void test_weights_file(void **state) {
  against_jit("mlp", "mlpw", "--weights-file mlpw.safetensors", "libmlpw.so", "-L. -lmlpw", false);
  SH_OK("mv mlpw.safetensors elsewhere.safetensors");
  assert_int_not_equal(sh("./probe_mlpw infer x.bin 5 y.bin"), 0);
  assert_non_null(strstr(out, "mlpw.safetensors"));
  SH_OK("./probe_mlpw infer x.bin 5 y.bin elsewhere.safetensors");
}

/* ---- misuse --------------------------------------------------------------- */

static void test_errors(void **state) {
  export_and_probe("examples/cnn.kiln", "cnne", "--infer-only --weights $KILN_SRC/tests/models/cnn.safetensors",
                   "libcnne.so", "-L. -lcnne");
  SH_OK("head -c 300 /dev/urandom > corrupt.safetensors && ./probe_cnne errors corrupt.safetensors");
  SH_OK("./probe_cnne errors $KILN_SRC/tests/models/mlp.safetensors");   /* another model's */
  assert_non_null(strstr(out, "lack"));
  SH_OK("printf 'abcdefgh' > short.safetensors && ./probe_cnne errors short.safetensors");
}

/* Only libc, libm and the OpenMP runtime. */
static void test_dependencies(void **state) {
  SH_OK("'%s' export '%s' --weights '%s' -o libdeps.so", getenv("KILN"), src("examples/mlp.kiln"),
        src("tests/models/mlp.safetensors"));
  SH_OK("ldd libdeps.so");
  assert_non_null(strstr(out, "libgomp"));
  assert_null(strstr(out, "LLVM"));
  assert_null(strstr(out, "kiln"));
  assert_null(strstr(out, "libz"));
  SH_OK("nm -D --defined-only libdeps.so");
  assert_null(strstr(out, " rt_"));           /* the runtime is hidden, */
  assert_null(strstr(out, "kiln"));           /* so are the kernels and the descriptor */
  assert_non_null(strstr(out, "deps_infer"));
}

/* Command-line mistakes: a message and status 2 (usage) or 1, no artifact. */
static void test_cli_errors(void **state) {
  const char *k = getenv("KILN"), *mlp = src("examples/mlp.kiln");
  assert_int_equal(sh("'%s' export '%s'", k, mlp), 2);
  assert_non_null(strstr(out, "needs -o"));
  assert_int_equal(sh("'%s' export '%s' --bogus -o libx.so", k, mlp), 2);
  assert_int_equal(sh("'%s' export '%s' --emit=exe -o libx.so", k, mlp), 2);
  assert_int_equal(sh("'%s' export '%s' -o nofolder/libx.so", k, mlp), 1);
  assert_non_null(strstr(out, "nofolder"));
  assert_int_equal(sh("'%s' export '%s' --weights nothere.safetensors -o libx.so", k, mlp), 1);
  assert_non_null(strstr(out, "nothere.safetensors"));
  assert_int_equal(sh("'%s' export '%s' --target nosuch-cpu-arch --emit=obj -o x.o", k, mlp), 1);
  assert_non_null(strstr(out, "nosuch"));
  assert_int_equal(sh("test -e libx.so"), 1);
}

/* ---- training ------------------------------------------------------------- */

static RtSafetensors read_st(const char *path) {
  RtSafetensors s;
  RtError e;
  if (rt_st_read(path, &s, &e) != RT_OK)
    fail_msg("%s", e.msg);
  return s;
}

/* One step of the exported digits_mlp (forward, backward, Adam, dropout)
 * against kiln_train_step from the same weights: the loss, every weight
 * after the update and the inference after it, bit for bit. */
static void test_train_step(void **state) {
  export_and_probe("examples/digits_mlp.kiln", "digits", "--seed 3 --batch 32", "libdigits.so",
                   "-L. -ldigits");
  RtTensor x4 = npy(src("examples/data/digits_x.npy")), y = npy(src("examples/data/digits_y.npy"));
  RtTensor x = x4;
  x.rank = 2;
  x.shape[0] = 32;
  x.shape[1] = 64;
  RtTensor lab = first_rows(&y, 32);
  write_raw("x.bin", &x);
  write_raw("label.bin", &lab);
  SH_OK("./probe_digits train x.bin label.bin 32 0.01 after.safetensors loss.bin y.bin");
  KilnModel *m = jit("examples/digits_mlp.kiln", NULL, 3);
  KilnTensor in[2] = {as_input("x", &x), as_input("label", &lab)};
  float loss;
  if (kiln_train_step(m, in, 2, 0.01f, &loss) != KILN_OK)
    fail_msg("%s", kiln_errors(m));
  float *got = read_raw("loss.bin", sizeof loss);
  assert_memory_equal(got, &loss, sizeof loss);
  assert_int_equal(kiln_save_weights(m, in_tmp("jit.safetensors")), KILN_OK);
  RtSafetensors a = read_st(in_tmp("after.safetensors")), b = read_st(in_tmp("jit.safetensors"));
  assert_int_equal(a.n, b.n);
  for (int i = 0; i < a.n; i++) {
    assert_string_equal(a.tensors[i].name, b.tensors[i].name);
    assert_memory_equal(a.tensors[i].t.data, b.tensors[i].t.data, rt_tensor_bytes(&a.tensors[i].t));
  }
  KilnTensor ref = jit_run(m, &x);
  float *after = read_raw("y.bin", kbytes(&ref));
  assert_memory_equal(after, ref.data, kbytes(&ref));
  free(got);
  free(after);
  rt_st_free(&a);
  rt_st_free(&b);
  kiln_free(m);
  rt_tensor_free(&x4);
  rt_tensor_free(&y);
}

/* ---- kiln build ------------------------------------------------------------- */

static void test_build_program(void **state) {
  SH_OK("'%s' build '%s' --weights '%s' -o cnnprog", getenv("KILN"),
        src("examples/cnn.kiln"), src("tests/models/cnn.safetensors"));
  SH_OK("./cnnprog --help");
  assert_non_null(strstr(out, "x"));
  assert_non_null(strstr(out, "f32[N, 1, 8, 8]"));
  assert_non_null(strstr(out, "logits"));
  SH_OK("./cnnprog x=$KILN_SRC/tests/models/cnn_x.npy -o logits=out.npy");
  RtTensor x = npy(src("tests/models/cnn_x.npy")), got = npy(in_tmp("out.npy"));
  KilnModel *m = jit("examples/cnn.kiln", src("tests/models/cnn.safetensors"), 0);
  KilnTensor ref = jit_run(m, &x);
  assert_int_equal(got.shape[0], 64);
  assert_memory_equal(got.data, ref.data, kbytes(&ref));
  /* CSV in (a row a sample) and out: %.9g gives the floats back exactly */
  FILE *f = fopen(in_tmp("x.csv"), "w");
  for (int r = 0; r < 64; r++)
    for (int k = 0; k < 64; k++)
      fprintf(f, "%.9g%s", ((float *)x.data)[r * 64 + k], k == 63 ? "\n" : ",");
  fclose(f);
  SH_OK("./cnnprog < x.csv > y.csv");
  f = fopen(in_tmp("y.csv"), "r");
  for (int i = 0; i < 64 * 10; i++) {
    float v;
    assert_int_equal(fscanf(f, "%f,", &v), 1);
    assert_true(v == ((float *)ref.data)[i]);
  }
  fclose(f);
  assert_int_equal(sh("./cnnprog $KILN_SRC/tests/models/mlp_x.npy"), 1);   /* a wrong shape */
  assert_non_null(strstr(out, "expects f32"));
  assert_int_equal(sh("./cnnprog nothere.npy"), 1);
  assert_non_null(strstr(out, "nothere.npy"));
  assert_int_equal(sh("echo 1,2,3 | ./cnnprog"), 1);
  assert_non_null(strstr(out, "<stdin>:1"));
  assert_int_equal(sh("./cnnprog --bogus"), 2);
  kiln_free(m);
  rt_tensor_free(&x);
  rt_tensor_free(&got);
}

/* ---- README.md, "Deploying a model" ------------------------------------------ */

/* The README's sequence: train, export, compile examples/aot_digits.c
 * against the header, and its predictions are kiln run's. */
static void test_readme(void **state) {
  SH_OK("'%s' train $KILN_SRC/examples/digits_cnn.kiln --epochs 2 -o digits.safetensors", getenv("KILN"));
  SH_OK("'%s' export $KILN_SRC/examples/digits_cnn.kiln --weights digits.safetensors -o libdigits.so",
        getenv("KILN"));
  SH_OK("'%s' -O2 -Wall -Wextra -Werror $KILN_SRC/examples/aot_digits.c -I. -L. -ldigits "
        "-Wl,-rpath,'$ORIGIN' -o aot_digits", getenv("CC"));
  SH_OK("zcat $KILN_SRC/examples/data/digits.csv.gz | head -64 | ./aot_digits > aot.txt");
  SH_OK("'%s' run $KILN_SRC/examples/digits_cnn.kiln --weights digits.safetensors "
        "-i x=$KILN_SRC/examples/data/digits_x.npy -o logits=logits.npy", getenv("KILN"));
  RtTensor logits = npy(in_tmp("logits.npy"));
  FILE *f = fopen(in_tmp("aot.txt"), "r");
  assert_non_null(f);
  int right = 0;
  RtTensor labels = npy(src("examples/data/digits_y.npy"));
  for (int r = 0; r < 64; r++) {
    const float *row = (const float *)logits.data + r * 10;
    int best = 0, got = -1;
    for (int k = 1; k < 10; k++)
      best = row[k] > row[best] ? k : best;
    assert_int_equal(fscanf(f, "%d", &got), 1);
    assert_int_equal(got, best);
    right += got == ((int64_t *)labels.data)[r];
  }
  assert_true(right > 32);                /* and it has learnt something */
  fclose(f);
  rt_tensor_free(&logits);
  rt_tensor_free(&labels);
}

/* ---- targets ---------------------------------------------------------------- */

/* e_type and e_machine of an ELF file (0 if it is not one). */
static void elf_header(const char *name, int *type, int *machine) {
  unsigned char h[20] = {0};
  FILE *f = fopen(in_tmp(name), "rb");
  assert_non_null(f);
  size_t n = fread(h, 1, sizeof h, f);
  fclose(f);
  bool elf = n == sizeof h && !memcmp(h, "\177ELF", 4) && h[5] == 1;   /* little-endian */
  *type = elf ? h[16] | h[17] << 8 : 0;
  *machine = elf ? h[18] | h[19] << 8 : 0;
}

static void test_other_targets(void **state) {
  const char *mlp = src("examples/mlp.kiln"), *w = src("tests/models/mlp.safetensors");
  int type, machine;
  SH_OK("'%s' export '%s' --weights '%s' --cpu skylake-avx512 --emit=obj -o avx512.o", getenv("KILN"), mlp, w);
  elf_header("avx512.o", &type, &machine);
  assert_int_equal(type, 1);              /* ET_REL */
  assert_int_equal(machine, 62);          /* EM_X86_64 */
  SH_OK("'%s' export '%s' --weights '%s' --cpu skylake-avx512 --emit=asm -o avx512.s", getenv("KILN"), mlp, w);
  SH_OK("grep -c zmm avx512.s");          /* 512-bit vectors */
  SH_OK("'%s' export '%s' --weights '%s' --target x86_64-linux-gnu --cpu x86-64 --emit=llvm -o base.ll",
        getenv("KILN"), mlp, w);
  SH_OK("grep -c 'define.*@base_infer' base.ll");
  if (sh("'%s' export '%s' --weights '%s' --target aarch64-linux-gnu --emit=obj -o arm.o", getenv("KILN"),
         mlp, w) == 0) {
    elf_header("arm.o", &type, &machine);
    assert_int_equal(type, 1);
    assert_int_equal(machine, 183);       /* EM_AARCH64 */
  } else {
    assert_non_null(strstr(out, "aarch64"));   /* LLVM built without it: said so */
  }
  assert_int_not_equal(sh("'%s' export '%s' --weights '%s' --target aarch64-linux-gnu -o libarm.so",
                          getenv("KILN"), mlp, w), 0);
  /* a baseline x86-64 build (SSE only) runs here, within 1e-6 of the JIT */
  against_jit("mlp", "mlpbase", "--cpu x86-64 -O3", "libmlpbase.so", "-L. -lmlpbase", false);
  /* layout selection plans for the target: blocks of 4 channels on SSE, not the host's */
  SH_OK("'%s' export '%s' --weights '%s' --infer-only --cpu x86-64 --emit=llvm -o cnnbase.ll", getenv("KILN"),
        src("examples/cnn.kiln"), src("tests/models/cnn.safetensors"));
  SH_OK("grep -c conv2d_nchwc cnnbase.ll");
  assert_int_not_equal(sh("grep -c '<8 x float>' cnnbase.ll"), 0);
  against_jit("cnn", "cnnbase", "--infer-only --cpu x86-64 -O3", "libcnnbase.so", "-L. -lcnnbase", false);
}

static int setup(void **state) { return tmp_make("aot"); }

static int teardown(void **state) { return tmp_remove(); }

int main(void) {
  if (!getenv("CC") || !*getenv("CC")) {
    puts("no C compiler: skipped");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_infer_cnn),     cmocka_unit_test(test_static_archive),
      cmocka_unit_test(test_weights_file),  cmocka_unit_test(test_errors),
      cmocka_unit_test(test_dependencies),  cmocka_unit_test(test_train_step),
      cmocka_unit_test(test_build_program), cmocka_unit_test(test_other_targets),
      cmocka_unit_test(test_readme),        cmocka_unit_test(test_cli_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

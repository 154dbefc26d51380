/* The kiln command as a user meets it: every bad input is a message and a
 * non-zero exit, never a crash; good input runs. Each case spawns the real
 * binary (KILN) with files written into a fresh temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/IRReader.h>
#include "runtime/rt.h"
#include "tests/shell.h"

static void write_npy(const char *name, RtDType dt, int rank, const int64_t *shape) {
  const char *path = in_tmp(name);
  RtTensor t;
  assert_int_equal(rt_tensor_alloc(&t, dt, rank, shape, NULL), RT_OK);
  if (dt == RT_F32)
    rt_fill_uniform(t.data, rt_numel(&t), -1, 1, 7, 1);
  assert_int_equal(rt_npy_write(path, &t, NULL), RT_OK);
  rt_tensor_free(&t);
}

static const char *mlp =
    "model mlp(x: f32[N, 4]) -> (y: f32[N, 3]) {\n"
    "  h = x |> dense(8) |> relu()\n"
    "  y = h |> dense(3)\n"
    "}\n";

static int setup(void **state) {
  assert_int_equal(tmp_make("cli"), 0);
  write_file("mlp.kiln", mlp);
  return 0;
}

static int teardown(void **state) { return tmp_remove(); }

static void test_help_and_version(void **state) {
  assert_int_equal(kiln("--help"), 0);
  assert_non_null(strstr(out, "usage: kiln"));
  assert_int_equal(kiln("--version"), 0);
  assert_non_null(strstr(out, "kiln 0."));
  assert_int_equal(kiln(""), 2);
  assert_int_equal(kiln("check mlp.kiln --bogus"), 2);
  assert_non_null(strstr(out, "unknown option '--bogus'"));
}

/* libgomp's settings as the last process of a run printed them
 * (OMP_DISPLAY_ENV=verbose): kiln re-executes itself once to make idle
 * threads spin briefly, then sleep, unless the user chose a policy. */
static const char *spincount_after(const char *policy) {
  const char *saved = getenv("OMP_WAIT_POLICY");
  char *keep = saved ? strdup(saved) : NULL;
  unsetenv("GOMP_SPINCOUNT");
  if (policy)
    setenv("OMP_WAIT_POLICY", policy, 1);
  else
    unsetenv("OMP_WAIT_POLICY");
  setenv("OMP_DISPLAY_ENV", "verbose", 1);
  assert_int_equal(kiln("--version"), 0);
  unsetenv("OMP_DISPLAY_ENV");
  if (keep)
    setenv("OMP_WAIT_POLICY", keep, 1);
  else
    unsetenv("OMP_WAIT_POLICY");
  free(keep);
  const char *last = NULL;
  for (const char *p = strstr(out, "GOMP_SPINCOUNT = '"); p; p = strstr(p + 1, "GOMP_SPINCOUNT = '"))
    last = p + strlen("GOMP_SPINCOUNT = '");
  assert_non_null(last);
  return last;
}

static void test_short_spin_unless_chosen(void **state) {
  assert_true(!strncmp(spincount_after(NULL), "2000'", 5));
  assert_non_null(strstr(out, "kiln 0."));
  assert_false(!strncmp(spincount_after("active"), "0'", 2));
  assert_non_null(strstr(out, "OMP_WAIT_POLICY = 'ACTIVE'"));
}

static void test_check_prints_ir(void **state) {
  assert_int_equal(kiln("check mlp.kiln"), 0);
  assert_non_null(strstr(out, "graph mlp"));
  assert_non_null(strstr(out, "matmul"));
  assert_non_null(strstr(out, "@k0"));          /* after the passes: fused into kernels */
  assert_null(strstr(out, "warning"));          /* nothing runs, so no word on weights */
  assert_int_equal(kiln("check mlp.kiln --emit=dot"), 0);
  assert_non_null(strstr(out, "digraph"));
}

/* `kiln check` of the benchmark ResNet shows `op`; with VAR=off it does
 * not; VAR=bad is refused (exit 2) with `msg`. The command reads these
 * variables and hands them to the passes; the library reads none. */
static void env_switch(const char *var, const char *off, const char *op, const char *bad,
                       const char *msg) {
  const char *resnet = src("bench/models/resnet.kiln");
  assert_int_equal(kiln("check '%s' --batch 2", resnet), 0);
  assert_non_null(strstr(out, op));
  assert_int_equal(sh("%s=%s '%s' check '%s' --batch 2", var, off, getenv("KILN"), resnet), 0);
  assert_null(strstr(out, op));
  assert_non_null(strstr(out, "conv2d"));
  assert_int_equal(sh("%s=%s '%s' check '%s'", var, bad, getenv("KILN"), resnet), 2);
  assert_non_null(strstr(out, msg));
}

/* KILN_LAYOUT forces the layout pass's choice, KILN_WINOGRAD=off keeps 3x3
 * convolutions direct. */
static void test_layout_forced_by_env(void **state) {
  env_switch("KILN_LAYOUT", "nchw", "conv2d_nchwc", "rows",
             "KILN_LAYOUT=rows: expected nchw, blocked or nhwc");
}

static void test_winograd_off_by_env(void **state) {
  env_switch("KILN_WINOGRAD", "off", "conv2d_winograd", "on", "KILN_WINOGRAD=on: expected off");
}

/* --emit=llvm-unopt prints the module kiln hands LLVM's passes, which
 * opt-19 -time-passes can read: it must parse and verify, and be what the
 * passes have not yet touched (the entry's body, which runs the kernels
 * in the team of threads, has no pointer attributes they infer, its
 * kernels are still functions of their own). */
static void test_check_prints_unoptimised_llvm(void **state) {
  assert_int_equal(kiln("check mlp.kiln -O3 --emit=llvm-unopt > mlp.ll 2>/dev/null"), 0);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMMemoryBufferRef buf;
  LLVMModuleRef mod = NULL;
  char *msg = NULL;
  assert_int_equal(LLVMCreateMemoryBufferWithContentsOfFile(in_tmp("mlp.ll"), &buf, &msg), 0);
  if (LLVMParseIRInContext(ctx, buf, &mod, &msg))   /* takes buf */
    fail_msg("the printed module does not parse: %s", msg);
  assert_int_equal(LLVMVerifyModule(mod, LLVMReturnStatusAction, NULL), 0);
  assert_non_null(LLVMGetNamedFunction(mod, "k0.matmul+2"));
  LLVMValueRef entry = LLVMGetNamedFunction(mod, "kiln_entry.body");
  assert_non_null(entry);
  assert_null(LLVMGetEnumAttributeAtIndex(entry, 1, LLVMGetEnumAttributeKindForName("nocapture", 9)));
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  assert_int_equal(kiln("check mlp.kiln -O3 --emit=llvm 2>/dev/null"
                        " | grep '^define internal void @kiln_entry.body'"), 0);
  assert_non_null(strstr(out, "nocapture"));        /* what LLVM's passes inferred */
}

/* --stats ends with the compile's time per stage, which needs code: check
 * generates it (without the cache, so LLVM's stages really run). */
static void test_stats_time_the_stages(void **state) {
  setenv("KILN_CACHE", "off", 1);
  assert_int_equal(kiln("check mlp.kiln --stats --json 2>/dev/null"), 0);
  const char *t = strstr(out, "{\"stage_ms\": {\"passes\": ");
  assert_non_null(t);
  double ms[5];
  assert_int_equal(sscanf(t, "{\"stage_ms\": {\"passes\": %lf, \"llvm-ir\": %lf, \"llvm-opt\": %lf, "
                             "\"llvm-codegen\": %lf, \"jit-link\": %lf}}", &ms[0], &ms[1], &ms[2],
                          &ms[3], &ms[4]), 5);
  assert_true(ms[2] > 0 && ms[3] > 0);
  assert_int_equal(kiln("check mlp.kiln --stats 2>/dev/null"), 0);
  assert_non_null(strstr(out, "compile ms   passes "));
  unsetenv("KILN_CACHE");
}

static void test_check_reports_every_error(void **state) {
  write_file("bad.kiln",
             "model bad(x: f32[N, 4]) -> (y: f32[N, 3]) {\n"
             "  h = x |> conv2d(8, k=3)\n"
             "  y = h |> dense(3, colour=2)\n"
             "}\n");
  assert_int_equal(kiln("check bad.kiln"), 1);
  assert_non_null(strstr(out, "bad.kiln:2:"));
  assert_non_null(strstr(out, "conv2d"));
  assert_non_null(strstr(out, "^"));
  write_file("syntax.kiln", "model (x: f32[N]) -> (y) {\n  y = x +\n}\n");
  assert_int_equal(kiln("check syntax.kiln"), 1);
  assert_non_null(strstr(out, "syntax.kiln:1:7: error"));
  assert_int_equal(kiln("check missing.kiln"), 1);
  assert_non_null(strstr(out, "missing.kiln"));
}

/* Issue 4's memory-plan target: the training step of a 10-layer MLP of
 * width 512 at batch 256 plans its intermediates into at least 40% fewer
 * bytes than their sum, at every level, and says what backward keeps. */
static void test_memplan_of_a_training_step(void **state) {
  write_file("mlp10.kiln",
             "model mlp10(x: f32[N, 512]) -> (logits: f32[N, 10]) {\n"
             "  h = x\n"
             "  for i in 0..10 {\n"
             "    h = h |> dense(512) |> relu()\n"
             "  }\n"
             "  logits = h |> dense(10)\n"
             "}\n"
             "train mlp10 {\n"
             "  data = csv(\"none.csv\", label = last)\n"
             "  batch = 256   epochs = 1\n"
             "  loss = cross_entropy(logits, label)\n"
             "  optimizer = adam(lr = 1e-3)\n"
             "}\n");
  for (int level = 0; level <= 3; level++) {
    assert_int_equal(kiln("check mlp10.kiln --step --emit=memplan -O%d", level), 0);
    long long sum = 0, peak = 0, kept = -1;
    const char *s = strstr(out, "intermediates ");
    assert_non_null(s);
    assert_int_equal(sscanf(s, "intermediates %lld bytes, each in its own buffer; planned peak "
                            "%lld", &sum, &peak), 2);
    s = strstr(out, "kept for the backward pass ");
    assert_non_null(s);
    assert_int_equal(sscanf(s, "kept for the backward pass %lld", &kept), 1);
    /* backward keeps at least each layer's input (N x 512 floats) */
    assert_true(kept >= 10LL * 256 * 512 * 4);
    assert_true(peak >= kept && peak <= sum * 6 / 10);
  }
}

static void test_run_writes_outputs(void **state) {
  write_npy("x.npy", RT_F32, 2, (int64_t[]){5, 4});
  assert_int_equal(kiln("run mlp.kiln --seed 3 -i x=x.npy -o y=y.npy"), 0);
  RtTensor y;
  char path[512];
  snprintf(path, sizeof path, "%s/y.npy", tmp);
  assert_int_equal(rt_npy_read(path, &y, NULL), RT_OK);
  assert_int_equal(y.rank, 2);
  assert_int_equal(y.shape[0], 5);
  assert_int_equal(y.shape[1], 3);
  rt_tensor_free(&y);
}

/* A size bound on the command line stays bound when the model compiles. */
static void test_run_with_a_size_binding(void **state) {
  write_file("seq.kiln", "model seq(x: f32[N, T, 3]) -> (y) {\n  y = x |> dense(5)\n}\n");
  write_npy("x243.npy", RT_F32, 3, (int64_t[]){2, 4, 3});
  assert_int_equal(kiln("run seq.kiln --size T=4 -i x=x243.npy"), 0);
  assert_non_null(strstr(out, "y: f32 (2, 4, 5)"));
  assert_int_equal(kiln("run seq.kiln --size T=5 -i x=x243.npy"), 1);
  assert_non_null(strstr(out, "expects f32[N, 5, 3]"));
  /* check shows the IR as lowered while T is open, after the passes once bound */
  assert_int_equal(kiln("check seq.kiln"), 0);
  assert_non_null(strstr(out, "f32[N, T, 3]"));
  assert_non_null(strstr(out, "--size T="));
  assert_int_equal(kiln("check seq.kiln --size T=4"), 0);
  assert_non_null(strstr(out, "f32[N, 4, 3]"));
  assert_non_null(strstr(out, "@k0"));
}

static void test_run_bad_inputs(void **state) {
  write_npy("x33.npy", RT_F32, 2, (int64_t[]){5, 3});
  assert_int_equal(kiln("run mlp.kiln -i x=x33.npy"), 1);
  assert_non_null(strstr(out, "input 'x'"));
  assert_non_null(strstr(out, "f32[N, 4]"));
  write_npy("xi.npy", RT_I32, 2, (int64_t[]){5, 4});
  assert_int_equal(kiln("run mlp.kiln -i x=xi.npy"), 1);
  assert_non_null(strstr(out, "i32"));
  assert_int_equal(kiln("run mlp.kiln -i x=nothere.npy"), 1);
  assert_non_null(strstr(out, "nothere.npy"));
  write_file("junk.npy", "\x93NUMPY\x01\x00garbage");
  assert_int_equal(kiln("run mlp.kiln -i x=junk.npy"), 1);
  assert_non_null(strstr(out, "junk.npy"));
  assert_int_equal(kiln("run mlp.kiln"), 1);   /* no input at all */
  assert_non_null(strstr(out, "input"));
}

static void test_run_bad_weights(void **state) {
  write_npy("x.npy", RT_F32, 2, (int64_t[]){5, 4});
  write_file("junk.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":");
  assert_int_equal(kiln("run mlp.kiln -i x=x.npy --weights junk.safetensors"), 1);
  assert_non_null(strstr(out, "junk.safetensors"));
  /* a weights file lacking a parameter, and one with a wrong shape */
  char path[512];
  RtTensor w;
  assert_int_equal(rt_tensor_alloc(&w, RT_F32, 2, (int64_t[]){8, 5}, NULL), RT_OK);
  RtNamedTensor nt = {"dense0.weight", w};
  snprintf(path, sizeof path, "%s/w.safetensors", tmp);
  assert_int_equal(rt_st_write(path, &nt, 1, NULL, 0, NULL), RT_OK);
  rt_tensor_free(&w);
  assert_int_equal(kiln("run mlp.kiln -i x=x.npy --weights w.safetensors"), 1);
  assert_non_null(strstr(out, "dense0.weight"));
  assert_non_null(strstr(out, "lack"));
  assert_non_null(strstr(out, "f32[8, 4]"));
  assert_int_equal(kiln("run mlp.kiln -i x=x.npy --weights none.safetensors"), 1);
  assert_non_null(strstr(out, "none.safetensors"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_version),
      cmocka_unit_test(test_short_spin_unless_chosen),
      cmocka_unit_test(test_check_prints_ir),
      cmocka_unit_test(test_layout_forced_by_env),
      cmocka_unit_test(test_winograd_off_by_env),
      cmocka_unit_test(test_check_reports_every_error),
      cmocka_unit_test(test_check_prints_unoptimised_llvm),
      cmocka_unit_test(test_stats_time_the_stages),
      cmocka_unit_test(test_memplan_of_a_training_step),
      cmocka_unit_test(test_run_writes_outputs),
      cmocka_unit_test(test_run_with_a_size_binding),
      cmocka_unit_test(test_run_bad_inputs),
      cmocka_unit_test(test_run_bad_weights),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* The JIT wrapper: generated code that calls the runtime's parallel-for and
 * libc, many modules in one JIT, many JITs in one process, and errors
 * (invalid IR, duplicate symbols, a module not built for the JIT) reported
 * as values. Functions are built by hand through the C API. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "codegen/codegen.h"

static char err[1024];

static LLVMValueRef add_fn(CgCtx *c, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n) {
  LLVMValueRef f = LLVMAddFunction(c->mod, name, LLVMFunctionType(ret, params, n, 0));
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, f, "entry"));
  return f;
}

/* i64 name(void) { return value; } */
static void emit_const_fn(CgCtx *c, const char *name, int64_t value) {
  add_fn(c, name, c->t_i64, NULL, 0);
  LLVMBuildRet(c->b, LLVMConstInt(c->t_i64, (unsigned long long)value, 1));
}

static CgCtx new_ctx(const char *name) {
  CgCtx c;
  int rc = cg_ctx_init_jit(&c, name, err, sizeof err);
  if (rc)
    fail_msg("cg_ctx_init_jit: %s", err);
  return c;
}

static void add_module(CgJit *j, CgCtx *c, int level) {
  if (cg_optimize(c, level, err, sizeof err))
    fail_msg("cg_optimize: %s", err);
  if (cg_jit_add(j, c, err, sizeof err))
    fail_msg("cg_jit_add: %s", err);
  cg_ctx_dispose(c);
}

/* task(ctx, lo, hi): out[i] = 2i + 1 for i in [lo, hi), out = ctx.
 * fill(out, n, nthreads): rt_parallel_for(task, out, n, 7, nthreads). */
static void emit_parallel_fill(CgCtx *c) {
  LLVMTypeRef tp[] = {c->t_ptr, c->t_i64, c->t_i64};
  LLVMValueRef task = add_fn(c, "task", c->t_void, tp, 3);
  LLVMBasicBlockRef entry = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(c->ctx, task, "loop");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, task, "done");
  LLVMValueRef lo = LLVMGetParam(task, 1), hi = LLVMGetParam(task, 2);
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, lo, hi, ""), loop, done);
  LLVMPositionBuilderAtEnd(c->b, loop);
  LLVMValueRef i = LLVMBuildPhi(c->b, c->t_i64, "i");
  LLVMValueRef v = LLVMBuildAdd(c->b, LLVMBuildShl(c->b, i, LLVMConstInt(c->t_i64, 1, 0), ""),
                                LLVMConstInt(c->t_i64, 1, 0), "");
  LLVMValueRef p = LLVMBuildGEP2(c->b, c->t_i64, LLVMGetParam(task, 0), &i, 1, "");
  LLVMBuildStore(c->b, v, p);
  LLVMValueRef next = LLVMBuildAdd(c->b, i, LLVMConstInt(c->t_i64, 1, 0), "");
  LLVMValueRef in[] = {lo, next};
  LLVMBasicBlockRef from[] = {entry, loop};
  LLVMAddIncoming(i, in, from, 2);
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, next, hi, ""), loop, done);
  LLVMPositionBuilderAtEnd(c->b, done);
  LLVMBuildRetVoid(c->b);

  LLVMTypeRef fp[] = {c->t_ptr, c->t_i64, c->t_i32};
  LLVMValueRef fill = add_fn(c, "fill", c->t_void, fp, 3);
  LLVMValueRef pf = cg_declare_rt(c, "rt_parallel_for");
  LLVMValueRef args[] = {task, LLVMGetParam(fill, 0), LLVMGetParam(fill, 1),
                         LLVMConstInt(c->t_i64, 7, 0), LLVMGetParam(fill, 2)};
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(pf), pf, args, 5, "");
  LLVMBuildRetVoid(c->b);
}

static void test_parallel_for(void **state) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  CgCtx c = new_ctx("par");
  emit_parallel_fill(&c);
  add_module(j, &c, 3);
  void (*fill)(int64_t *, int64_t, int32_t) = (void (*)(int64_t *, int64_t, int32_t))cg_jit_lookup(j, "fill");
  assert_non_null(fill);
  for (int threads = 1; threads <= 4; threads++) {
    int64_t out[1000];
    memset(out, 0, sizeof out);
    fill(out, 999, threads);
    for (int i = 0; i < 999; i++)
      assert_int_equal(out[i], 2 * i + 1);
    assert_int_equal(out[999], 0);
  }
  cg_jit_free(j);
}

/* zero(p, n): llvm.memset with a run-time size becomes a call to libc's
 * memset, resolved from the process. */
static void test_libc_symbol(void **state) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  CgCtx c = new_ctx("libc");
  LLVMTypeRef fp[] = {c.t_ptr, c.t_i64};
  LLVMValueRef f = add_fn(&c, "zero", c.t_void, fp, 2);
  LLVMBuildMemSet(c.b, LLVMGetParam(f, 0), LLVMConstInt(c.t_i8, 0, 0), LLVMGetParam(f, 1), 1);
  LLVMBuildRetVoid(c.b);
  add_module(j, &c, 0);
  void (*zero)(char *, int64_t) = (void (*)(char *, int64_t))cg_jit_lookup(j, "zero");
  assert_non_null(zero);
  char buf[5000];
  memset(buf, 7, sizeof buf);
  zero(buf, 4999);
  assert_int_equal(buf[0], 0);
  assert_int_equal(buf[4998], 0);
  assert_int_equal(buf[4999], 7);
  cg_jit_free(j);
}

static void test_many_modules(void **state) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  char name[32];
  for (int k = 0; k < 50; k++) {
    snprintf(name, sizeof name, "f%d", k);
    CgCtx c = new_ctx(name);
    emit_const_fn(&c, name, 3 * k + 1);
    add_module(j, &c, k % 4);
  }
  for (int k = 49; k >= 0; k--) {
    snprintf(name, sizeof name, "f%d", k);
    int64_t (*f)(void) = (int64_t (*)(void))cg_jit_lookup(j, name);
    assert_non_null(f);
    assert_int_equal(f(), 3 * k + 1);
  }
  assert_null(cg_jit_lookup(j, "f50"));
  assert_non_null(strstr(cg_jit_last_error(j), "f50"));
  cg_jit_free(j);
}

static void test_many_jits(void **state) {
  for (int k = 0; k < 10; k++) {
    CgJit *j;
    assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
    CgCtx c = new_ctx("g");
    emit_const_fn(&c, "g", k - 5);
    add_module(j, &c, 2);
    int64_t (*g)(void) = (int64_t (*)(void))cg_jit_lookup(j, "g");
    assert_non_null(g);
    assert_int_equal(g(), k - 5);
    cg_jit_free(j);
  }
}

/* A block without a terminator: the verifier's message, no crash. */
static void test_invalid_module(void **state) {
  CgCtx c = new_ctx("broken");
  add_fn(&c, "broken", c.t_void, NULL, 0);
  LLVMBuildAdd(c.b, LLVMConstInt(c.t_i64, 1, 0), LLVMConstInt(c.t_i64, 2, 0), "");
  err[0] = 0;
  assert_int_not_equal(cg_optimize(&c, 3, err, sizeof err), 0);
  assert_non_null(strstr(err, "invalid LLVM module 'broken'"));
  cg_ctx_dispose(&c);
}

static void test_duplicate_and_foreign(void **state) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  CgCtx c = new_ctx("a");
  emit_const_fn(&c, "h", 1);
  add_module(j, &c, 1);
  c = new_ctx("b");
  emit_const_fn(&c, "h", 2);
  assert_int_equal(cg_optimize(&c, 1, err, sizeof err), 0);
  assert_int_not_equal(cg_jit_add(j, &c, err, sizeof err), 0);
  assert_non_null(strstr(err, "h"));
  cg_ctx_dispose(&c);
  assert_int_equal(cg_jit_add(j, &c, err, sizeof err), -1);   /* disposed: refused */

  CgCtx aot;
  assert_int_equal(cg_ctx_init(&aot, "aot", NULL, NULL, NULL, err, sizeof err), 0);
  emit_const_fn(&aot, "h2", 3);
  assert_int_not_equal(cg_jit_add(j, &aot, err, sizeof err), 0);
  assert_non_null(strstr(err, "cg_ctx_init_jit"));
  cg_ctx_dispose(&aot);

  int64_t (*h)(void) = (int64_t (*)(void))cg_jit_lookup(j, "h");
  assert_non_null(h);
  assert_int_equal(h(), 1);
  cg_jit_free(j);
}

/* A call to a symbol nobody defines: the lookup fails, it does not crash,
 * and the JIT still serves its other functions. */
static void test_unresolved_symbol(void **state) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  CgCtx c = new_ctx("ok");
  emit_const_fn(&c, "fine", 42);
  add_module(j, &c, 2);
  c = new_ctx("unresolved");
  LLVMValueRef missing = LLVMAddFunction(c.mod, "kiln_test_no_such_symbol", LLVMFunctionType(c.t_i64, NULL, 0, 0));
  add_fn(&c, "calls_missing", c.t_i64, NULL, 0);
  LLVMBuildRet(c.b, LLVMBuildCall2(c.b, LLVMGlobalGetValueType(missing), missing, NULL, 0, ""));
  add_module(j, &c, 2);
  assert_null(cg_jit_lookup(j, "calls_missing"));
  assert_non_null(strstr(cg_jit_last_error(j), "kiln_test_no_such_symbol"));
  int64_t (*fine)(void) = (int64_t (*)(void))cg_jit_lookup(j, "fine");
  assert_non_null(fine);
  assert_int_equal(fine(), 42);
  cg_jit_free(j);
}

static void test_bad_level(void **state) {
  CgCtx c = new_ctx("lvl");
  emit_const_fn(&c, "k", 1);
  assert_int_not_equal(cg_optimize(&c, 7, err, sizeof err), 0);
  cg_ctx_dispose(&c);
}

/* ---- the code cache ------------------------------------------------------ */

static char cache_dir[256];

/* The one file of the cache folder (fails if there are more or none). */
static void cache_file(char *path, size_t len) {
  DIR *d = opendir(cache_dir);
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.' && ++n == 1)
      snprintf(path, len, "%s/%s", cache_dir, e->d_name);
  closedir(d);
  assert_int_equal(n, 1);
}

/* Compiles `i64 answer() { return value; }` through the cache in dir (NULL:
 * none) into a fresh JIT and returns what the code answers. */
static int64_t compile_in(const char *dir, int64_t value) {
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  CgCtx c = new_ctx("answer");
  emit_const_fn(&c, "answer", value);
  if (cg_jit_compile(j, &c, 2, dir, err, sizeof err))
    fail_msg("cg_jit_compile: %s", err);
  cg_ctx_dispose(&c);
  int64_t (*fn)(void) = (int64_t (*)(void))cg_jit_lookup(j, "answer");
  assert_non_null(fn);
  int64_t r = fn();
  cg_jit_free(j);
  return r;
}

static int64_t compile_answer(int64_t value) { return compile_in(cache_dir, value); }

static void put_bytes(const char *path, long at, const void *bytes, size_t n) {
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  fseek(f, at, SEEK_SET);
  assert_int_equal(fwrite(bytes, 1, n, f), n);
  fclose(f);
}

/* -O0 gets LLVM's fast backend (the IR is unoptimised: the full one takes
 * 5x longer on it), the other levels O3's; a module cg_optimize already ran
 * on (what --emit shows) goes to the backend as it is, not optimised twice,
 * and code from either backend answers alike. */
static void test_backend_level(void **state) {
  assert_int_equal(cg_codegen_level(0), LLVMCodeGenLevelNone);
  for (int level = 1; level <= 3; level++)
    assert_int_equal(cg_codegen_level(level), LLVMCodeGenLevelAggressive);
  for (int level = 0; level <= 3; level += 3) {
    CgJit *j;
    assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
    CgCtx c = new_ctx("answer");
    emit_const_fn(&c, "answer", 42);
    assert_int_equal(cg_optimize(&c, level, err, sizeof err), 0);
    double spent = c.opt_seconds;
    if (cg_jit_compile(j, &c, level, NULL, err, sizeof err))
      fail_msg("cg_jit_compile: %s", err);
    assert_true(c.opt_seconds == spent);
    cg_ctx_dispose(&c);
    int64_t (*fn)(void) = (int64_t (*)(void))cg_jit_lookup(j, "answer");
    assert_non_null(fn);
    assert_int_equal(fn(), 42);
    cg_jit_free(j);
  }
}

/* i64 name(i64 x) noinline { return 3x + 1; }: an internal function,
 * kept apart from its caller, of the same code whatever its name. */
static LLVMValueRef emit_twin(CgCtx *c, const char *name) {
  LLVMValueRef f = add_fn(c, name, c->t_i64, &c->t_i64, 1);
  LLVMSetLinkage(f, LLVMInternalLinkage);
  unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
  LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(c->ctx, noinline, 0));
  LLVMValueRef x3 = LLVMBuildMul(c->b, LLVMGetParam(f, 0), LLVMConstInt(c->t_i64, 3, 0), "");
  LLVMBuildRet(c->b, LLVMBuildAdd(c->b, x3, LLVMConstInt(c->t_i64, 1, 0), ""));
  return f;
}

/* i64 answer(i64 x) { return twin1(x) + twin2(x + 1); } after cg_optimize
 * at `level`: the functions left in the module, and answer(10) from the
 * JIT (31 + 34). */
static int merged_module(int level, bool keep, int64_t *answer) {
  CgCtx c = new_ctx("twins");
  c.keep_equal_functions = keep;
  LLVMValueRef t[2] = {emit_twin(&c, "twin1"), emit_twin(&c, "twin2")};
  LLVMValueRef fn = add_fn(&c, "answer", c.t_i64, &c.t_i64, 1);
  LLVMTypeRef fty = LLVMGlobalGetValueType(t[0]);
  LLVMValueRef x = LLVMGetParam(fn, 0), x1 = LLVMBuildAdd(c.b, x, LLVMConstInt(c.t_i64, 1, 0), "");
  LLVMValueRef sum = LLVMBuildAdd(c.b, LLVMBuildCall2(c.b, fty, t[0], &x, 1, ""),
                                  LLVMBuildCall2(c.b, fty, t[1], &x1, 1, ""), "");
  LLVMBuildRet(c.b, sum);
  if (cg_optimize(&c, level, err, sizeof err))
    fail_msg("cg_optimize: %s", err);
  int nfn = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(c.mod); f; f = LLVMGetNextFunction(f))
    nfn += !LLVMIsDeclaration(f);
  CgJit *j;
  assert_int_equal(cg_jit_new(&j, err, sizeof err), 0);
  assert_int_equal(cg_jit_add(j, &c, err, sizeof err), 0);
  cg_ctx_dispose(&c);
  int64_t (*answer_fn)(int64_t) = (int64_t (*)(int64_t))cg_jit_lookup(j, "answer");
  assert_non_null(answer_fn);
  *answer = answer_fn(10);
  cg_jit_free(j);
  return nfn;
}

/* Functions of equal code are compiled once (LLVM's MergeFunctions before
 * and after the pipeline: kiln emits such twins, GEMM packing routines of
 * different epilogues, and the backend's time is proportional to the
 * code); keep_equal_functions leaves them apart, with the same answer. */
static void test_equal_functions_merged(void **state) {
  for (int level = 0; level <= 3; level += 3) {
    int64_t merged_answer, kept_answer;
    int merged = merged_module(level, false, &merged_answer);
    int kept = merged_module(level, true, &kept_answer);
    assert_int_equal(kept, 3);
    assert_int_equal(merged, 2);
    assert_int_equal(merged_answer, 65);
    assert_int_equal(kept_answer, 65);
  }
}

/* A compile leaves one object; the same module is then served from it (a
 * valid entry's payload swapped for another module's object answers with
 * the other's value: proof that the code came from the file); a damaged or
 * truncated entry is a miss that is compiled and replaced; no folder
 * writes nothing; a missing folder is made. */
static void test_code_cache(void **state) {
  snprintf(cache_dir, sizeof cache_dir, "/tmp/kiln-cache-XXXXXX");
  assert_non_null(mkdtemp(cache_dir));
  char path[512], other[512];
  assert_int_equal(compile_answer(42), 42);
  cache_file(path, sizeof path);
  assert_int_equal(compile_answer(42), 42);
  cache_file(other, sizeof other);
  assert_string_equal(path, other);

  /* move 7's entry under 42's name: 42's module now loads 7's code */
  char tmp7[600];
  snprintf(tmp7, sizeof tmp7, "%s-keep", cache_dir);   /* outside the folder */
  assert_int_equal(rename(path, tmp7), 0);
  assert_int_equal(compile_answer(7), 7);
  cache_file(other, sizeof other);
  assert_int_equal(rename(other, path), 0);
  assert_int_equal(compile_answer(42), 7);

  /* a flipped payload byte fails the checksum: recompiled, entry rewritten */
  put_bytes(path, 40, "\xff\xff", 2);
  assert_int_equal(compile_answer(42), 42);
  assert_int_equal(compile_answer(42), 42);
  /* a truncated entry is a miss as well */
  assert_int_equal(truncate(path, 30), 0);
  assert_int_equal(compile_answer(42), 42);
  CgCtx c = new_ctx("answer");
  emit_const_fn(&c, "answer", 42);
  CgCacheKey k;
  size_t len = 0;
  assert_true(cg_cache_key(&c, 2, &k));
  void *obj = cg_cache_get(cache_dir, &k, &len);
  assert_non_null(obj);
  assert_true(len > 100);
  free(obj);
  /* functions kept apart are another pipeline, so another object */
  c.keep_equal_functions = true;
  CgCacheKey kept;
  assert_true(cg_cache_key(&c, 2, &kept));
  assert_memory_not_equal(&k, &kept, sizeof k);
  cg_ctx_dispose(&c);
  unlink(tmp7);

  /* no folder: nothing written */
  unlink(path);
  assert_int_equal(compile_in(NULL, 42), 42);
  assert_int_equal(rmdir(cache_dir), 0);
  /* a folder that is not there yet is made, parents too */
  char nested[600];
  snprintf(nested, sizeof nested, "%s/a/b", cache_dir);
  assert_int_equal(compile_in(nested, 42), 42);
  strcpy(cache_dir, nested);
  cache_file(path, sizeof path);
  unlink(path);
  for (int up = 0; up < 3; up++) {
    assert_int_equal(rmdir(cache_dir), 0);
    *strrchr(cache_dir, '/') = 0;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parallel_for),
    cmocka_unit_test(test_libc_symbol),
    cmocka_unit_test(test_many_modules),
    cmocka_unit_test(test_many_jits),
    cmocka_unit_test(test_invalid_module),
    cmocka_unit_test(test_duplicate_and_foreign),
    cmocka_unit_test(test_unresolved_symbol),
    cmocka_unit_test(test_bad_level),
    cmocka_unit_test(test_backend_level),
    cmocka_unit_test(test_equal_functions_merged),
    cmocka_unit_test(test_code_cache),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

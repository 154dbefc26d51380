/* Running the real kiln binary from a test, as a user would: a fresh
 * temporary folder per suite (tmp), shell commands run inside it with their
 * stdout and stderr captured in `out`, and small file helpers. Shared by
 * the suites that spawn processes (tests/cli, tests/train_cli, tests/aot);
 * include it after cmocka.h. KILN names the binary. */
#ifndef KILN_TESTS_SHELL_H
#define KILN_TESTS_SHELL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char tmp[256];
static char out[1 << 18];

/* Runs a shell command line in tmp; stdout+stderr in `out` unless the line
 * redirects them; returns the exit status (128+signal if it died). */
static inline int sh_line(const char *line) {
  static char cmd[8192];
  snprintf(cmd, sizeof cmd, "cd '%s' && %s", tmp, line);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline int sh_vrun(const char *prefix, const char *fmt, va_list ap) {
  char args[4096], line[4400];
  vsnprintf(args, sizeof args, fmt, ap);
  snprintf(line, sizeof line, "%s%s", prefix, args);
  return sh_line(line);
}

/* sh("cmd ARGS"): any command, with stderr joined to stdout. */
static inline int sh(const char *fmt, ...) {
  char fmt2[2048];
  snprintf(fmt2, sizeof fmt2, "%s 2>&1", fmt);
  va_list ap;
  va_start(ap, fmt);
  int st = sh_vrun("", fmt2, ap);
  va_end(ap);
  return st;
}

/* kiln("ARGS"): `kiln ARGS`, stderr joined to stdout first, so ARGS may
 * still send either elsewhere. */
static inline int kiln(const char *fmt, ...) {
  char prefix[512];
  snprintf(prefix, sizeof prefix, "'%s' 2>&1 ", getenv("KILN"));
  va_list ap;
  va_start(ap, fmt);
  int st = sh_vrun(prefix, fmt, ap);
  va_end(ap);
  return st;
}

#define SH_OK(...)                                                                             \
  do {                                                                                         \
    if (sh(__VA_ARGS__) != 0)                                                                  \
      fail_msg("command failed:\n%s", out);                                                    \
  } while (0)

/* Paths in rotating buffers: a few may be alive at once. */
static inline const char *in_dir(const char *dir, const char *name) {
  static char buf[32][512];
  static int k;
  k = (k + 1) % 32;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static inline const char *in_tmp(const char *name) { return in_dir(tmp, name); }

/* A file of the source tree (KILN_SRC). */
static inline const char *src(const char *rel) { return in_dir(getenv("KILN_SRC"), rel); }

static inline void write_file(const char *name, const char *text) {
  FILE *f = fopen(in_tmp(name), "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* The whole file NAME in tmp, NUL-terminated; NULL if it cannot be read. */
static inline char *read_all(const char *name, size_t *len) {
  FILE *f = fopen(in_tmp(name), "rb");
  *len = 0;
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = 0;
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static inline bool exists(const char *name) {
  struct stat sb;
  return stat(in_tmp(name), &sb) == 0;
}

/* A fresh tmp named after the suite (under TMPDIR if set), and its removal. */
static inline int tmp_make(const char *suite) {
  const char *base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(tmp, sizeof tmp, "%s/kiln-%s-XXXXXX", base, suite);
  return mkdtemp(tmp) ? 0 : -1;
}

static inline int tmp_remove(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  return system(cmd);
}

#endif

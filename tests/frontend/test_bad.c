/* Broken model files: each .kiln file of tests/frontend/bad starts with
 * comment lines
 *     # expect: LINE:COL: part of the message
 * one per diagnostic the parser must produce, in order. A cmocka test per
 * file parses it and checks that exactly those errors come out: no more,
 * no fewer, at those positions. The folder is the first argument. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"

enum { MAX_EXPECT = 64 };

typedef struct Expect {
  int line, col;
  char msg[256];
} Expect;

/* The `# expect:` lines at the top of the file; -1 if one is malformed. */
static int read_expectations(const char *path, Expect *e) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f) && strncmp(line, "#", 1) == 0) {
    const char *tag = "# expect: ";
    if (strncmp(line, tag, strlen(tag)) != 0)
      continue;
    line[strcspn(line, "\r\n")] = 0;
    int used = 0;
    if (n == MAX_EXPECT ||
        sscanf(line + strlen(tag), "%d:%d: %n", &e[n].line, &e[n].col, &used) != 2 || !used) {
      n = -1;
      break;
    }
    snprintf(e[n].msg, sizeof e[n].msg, "%s", line + strlen(tag) + used);
    n++;
  }
  fclose(f);
  return n;
}

static void report(const char *path, const Diags *d, const char *why) {
  fprintf(stderr, "%s: %s; the parser said:\n", path, why);
  diag_print(d, stderr);
  fail_msg("%s: %s", path, why);
}

static void check_bad_file(void **state) {
  const char *path = *state;
  Expect want[MAX_EXPECT];
  int n = read_expectations(path, want);
  if (n <= 0)
    fail_msg("%s: no well-formed '# expect: LINE:COL: message' lines", path);
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse_file(a, path, &d);
  assert_non_null(f);
  char why[512];
  if (d.nerrors != n) {
    snprintf(why, sizeof why, "%d errors, expected %d", d.nerrors, n);
    report(path, &d, why);
  }
  const Diag *g = d.head;
  for (int i = 0; i < n; i++, g = g->next) {
    if (g->kind != DIAG_ERROR || g->loc.line != want[i].line || g->loc.col != want[i].col ||
        !strstr(g->msg, want[i].msg)) {
      snprintf(why, sizeof why, "diagnostic %d is %d:%d '%s', expected %d:%d '%s'", i + 1,
               g->loc.line, g->loc.col, g->msg, want[i].line, want[i].col, want[i].msg);
      report(path, &d, why);
    }
    assert_ptr_equal(g->loc.file, &f->src);
  }
  rt_arena_free(a);
}

static int is_kiln(const struct dirent *e) {
  size_t n = strlen(e->d_name);
  return n > 5 && strcmp(e->d_name + n - 5, ".kiln") == 0;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : getenv("KILN_BAD_DIR");
  if (!dir) {
    fprintf(stderr, "usage: test_bad DIR (the folder of broken .kiln files)\n");
    return 1;
  }
  struct dirent **names;
  int n = scandir(dir, &names, is_kiln, alphasort);
  if (n < 15) {
    fprintf(stderr, "%s: %d .kiln files, expected at least 15\n", dir, n);
    return 1;
  }
  struct CMUnitTest *tests = calloc((size_t)n, sizeof *tests);
  for (int i = 0; i < n; i++) {
    size_t len = strlen(dir) + strlen(names[i]->d_name) + 2;
    char *path = malloc(len);
    snprintf(path, len, "%s/%s", dir, names[i]->d_name);
    tests[i].name = names[i]->d_name;
    tests[i].test_func = check_bad_file;
    tests[i].initial_state = path;
  }
  int failed = _cmocka_run_group_tests("bad", tests, (size_t)n, NULL, NULL);
  for (int i = 0; i < n; i++) {
    free(tests[i].initial_state);
    free(names[i]);
  }
  free(names);
  free(tests);
  return failed;
}

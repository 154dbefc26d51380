/* The examples of docs/language.md, checked against the compiler so the
 * reference cannot drift from it.
 *
 * Every fenced block tagged `kiln` is an example; untagged blocks (grammar
 * sketches, fragments) are not. An example must parse and lower without an
 * error, unless it says otherwise: lines of the form
 *
 *   # error: TEXT        lowering must fail with TEXT in a message
 *   # NAME = VALUE       an input to feed (NAME is an input of the model), or
 *                        an output the model must produce (NAME an output),
 *                        VALUE a nested list of numbers (or true/false)
 *
 * An example that states outputs is compiled and run on the stated inputs;
 * each output must be within 1e-4 of the stated value (DESIGN.md's
 * measure) with the stated number of elements. Its parameters start as
 * their initialisers say, which must then be ones, zeros or constants. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"
#include "frontend/frontend.h"

typedef struct Example {
  int line;                 /* of the opening fence */
  const char *src;          /* the block's text */
  size_t len;
} Example;

static char *doc;           /* docs/language.md, NUL-terminated */
static Example ex[512];
static int nex;

/* Every ```kiln block of the document. */
static void find_examples(void) {
  int line = 1;
  const char *p = doc, *open = NULL;
  int open_line = 0;
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    if (!open && n >= 7 && !strncmp(p, "```kiln", 7)) {
      open = eol ? eol + 1 : p + n;
      open_line = line;
    } else if (open && n >= 3 && !strncmp(p, "```", 3)) {
      assert_true(nex < (int)(sizeof ex / sizeof *ex));
      ex[nex++] = (Example){open_line, open, (size_t)(p - open)};
      open = NULL;
    }
    if (!eol)
      break;
    p = eol + 1;
    line++;
  }
  assert_null(open);
}

/* The numbers of a nested list literal, flattened in order. */
static int flatten_value(const Ast *a, double *out, int at, int max) {
  if (a->kind == AST_LIST) {
    for (int i = 0; i < a->nitems; i++)
      at = flatten_value(a->items[i], out, at, max);
    return at;
  }
  assert_true(at < max);
  if (a->kind == AST_UNARY && a->op == TK_MINUS) {
    int k = flatten_value(a->lhs, out, at, max);
    out[at] = -out[at];
    return k;
  }
  if (a->kind == AST_INT || a->kind == AST_BOOL)
    out[at] = (double)a->ival;
  else if (a->kind == AST_FLOAT)
    out[at] = a->fval;
  else
    fail_msg("a stated value must be a list of numbers");
  return at + 1;
}

typedef struct Stated {
  const char *name;
  Ten t;
} Stated;

/* The `# name = value` lines of an example. */
static int stated_values(Model *m, const Example *e, Stated *st, int max) {
  int n = 0;
  for (const char *p = e->src; p < e->src + e->len;) {
    const char *eol = memchr(p, '\n', (size_t)(e->src + e->len - p));
    size_t len = eol ? (size_t)(eol - p) : (size_t)(e->src + e->len - p);
    char name[64];
    int used = 0;
    if (len > 2 && p[0] == '#' && sscanf(p, "# %63[A-Za-z0-9_] = %n", name, &used) == 1 && used) {
      assert_true(n < max);
      Ast *v = fe_parse_expr(m->arena, "value", p + used, len - (size_t)used, &m->diags);
      double *d = rt_arena_alloc(m->arena, sizeof(double) * 4096);
      int k = flatten_value(v, d, 0, 4096);
      st[n++] = (Stated){rt_arena_strdup(m->arena, name),
                         {.rank = 1, .dim = {k}, .n = k, .d = d}};
    }
    p = eol ? eol + 1 : e->src + e->len;
  }
  return n;
}

static const char *stated_error(const Example *e) {
  const char *p = strstr(e->src, "# error: ");
  return p && p < e->src + e->len ? p + 9 : NULL;
}

static char *diag_text(Model *m) {
  static char buf[8192];
  FILE *out = fmemopen(buf, sizeof buf, "w");
  diag_print(&m->diags, out);
  fclose(out);
  return buf;
}

static Value *find_io(Value **vs, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (vs[i]->name && !strcmp(vs[i]->name, name))
      return vs[i];
  return NULL;
}

/* Parameters as their initialisers say: ones, zeros or constants only. */
static void init_params(Model *m, int line) {
  for (int i = 0; i < m->g->nparams; i++) {
    Value *p = m->g->params[i];
    Init in = p->init;
    if (in.kind != INIT_ZEROS && in.kind != INIT_ONES && in.kind != INIT_CONST)
      fail_msg("docs/language.md:%d: an example that states outputs must not have random "
               "parameters (%s)", line, p->name);
    Ten t = ten_new(m, 1, (int64_t[]){ir_numel_max(m->g, &p->type)});
    for (int64_t j = 0; j < t.n; j++)
      t.d[j] = in.kind == INIT_ONES ? 1 : in.kind == INIT_CONST ? in.a : 0;
    model_set(m, p, t);
  }
}

/* Compiles and runs the example on its stated inputs; checks its outputs. */
static void run_example(Model *m, const Example *e, const Ast *def, Stated *st, int n) {
  Graph *g = m->g;
  m->opt = 2;
  ad_compile(m);
  init_params(m, e->line);
  for (int i = 0; i < n; i++) {
    Value *x = find_io(g->inputs, g->ninputs, st[i].name);
    if (x)
      model_set(m, x, st[i].t);
  }
  model_run(m, 0, HARNESS_THREADS);
  for (int i = 0; i < n; i++) {
    int o = -1;
    for (int k = 0; k < def->nouts; k++)
      o = !strcmp(def->outs[k]->name, st[i].name) ? k : o;
    if (o < 0)
      continue;
    Ten got = model_get(m, g->outputs[o]);
    char what[128];
    snprintf(what, sizeof what, "docs/language.md:%d: output %s", e->line, st[i].name);
    if (got.n != st[i].t.n)
      fail_msg("%s has %lld elements, the example states %lld", what, (long long)got.n,
               (long long)st[i].t.n);
    got.rank = 1;
    got.dim[0] = got.n;
    check_ten(what, got, st[i].t, 1e-4);
  }
}

/* Returns whether the example stated an output (and so ran). */
static bool check_example(const Example *e) {
  Model m;
  model_new(&m, "example");
  AstFile *f = fe_parse(m.arena, "example", e->src, e->len, &m.diags);
  assert_non_null(f);
  const char *want = stated_error(e);
  const Ast *def = f->nmodels ? f->models[0] : NULL;
  if (def)
    fe_lower_into(m.g, f, NULL, NULL, &m.diags);
  bool ran = false;
  if (want) {
    size_t wl = strcspn(want, "\n");
    char *text = diag_text(&m);
    if (!m.diags.nerrors || !memmem(text, strlen(text), want, wl))
      fail_msg("docs/language.md:%d: expected the error \"%.*s\", got:\n%s", e->line, (int)wl,
               want, text);
  } else if (m.diags.nerrors || !def) {
    fail_msg("docs/language.md:%d: the example does not compile:\n%s", e->line,
             def ? diag_text(&m) : "(no model)");
  } else {
    Stated st[16];
    int n = stated_values(&m, e, st, 16);
    for (int i = 0; i < n && !ran; i++)
      for (int k = 0; k < def->nouts; k++)
        ran |= !strcmp(def->outs[k]->name, st[i].name);
    if (ran)
      run_example(&m, e, def, st, n);
  }
  model_free(&m);
  return ran;
}

static void test_examples(void **state) {
  int ran = 0;
  for (int i = 0; i < nex; i++)
    ran += check_example(&ex[i]);
  print_message("docs/language.md: %d examples compile (or fail as stated), %d of them run "
                "and produce the stated outputs\n", nex, ran);
  assert_true(nex >= 30);
}

/* Every layer of the library has an entry: a heading naming it. */
static void test_every_layer_documented(void **state) {
  int missing = 0;
  for (int i = 0; i < fe_nlayers; i++) {
    char head[80];
    snprintf(head, sizeof head, "`%s(", fe_layers[i].name);
    const char *p = doc;
    bool found = false;
    while (!found && (p = strstr(p, head))) {
      const char *bol = p;
      while (bol > doc && bol[-1] != '\n')
        bol--;
      found = !strncmp(bol, "####", 4);
      p++;
    }
    if (!found) {
      print_error("docs/language.md has no #### heading for the layer %s\n", fe_layers[i].name);
      missing++;
    }
  }
  print_message("%d layers, each with an entry\n", fe_nlayers);
  assert_int_equal(missing, 0);
}

static int setup(void **state) {
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/language.md", getenv("KILN_SRC") ? getenv("KILN_SRC") : ".");
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  doc = calloc(1, (size_t)n + 1);
  if (!doc || fread(doc, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    return -1;
  }
  fclose(f);
  find_examples();
  return 0;
}

static int teardown(void **state) {
  free(doc);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_examples),
    cmocka_unit_test(test_every_layer_documented),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

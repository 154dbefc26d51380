/* The parser, through the printed AST: precedence and associativity, the
 * shape `|>` desugars to, keyword arguments, slices, tuple bindings,
 * for/scan/emit/param/as, train blocks with `on`, where statements end,
 * the DESIGN.md sketch, the hard limits, a missing file, and running out
 * of memory at every point. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "frontend/frontend.h"

/* The printed form of a node or file, in a malloc'ed string. */
static char *printed(const Ast *n, const AstFile *f) {
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  if (n)
    ast_print_node(n, out);
  else
    ast_print(f, out);
  fclose(out);
  return buf;
}

static void fail_with_diags(const Diags *d, const char *what) {
  diag_print(d, stderr);
  fail_msg("%s: %d errors", what, d->nerrors);
}

/* `src` parses as one expression printed as `want`. */
static void check_expr(const char *src, const char *want) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  Ast *x = fe_parse_expr(a, "e", src, strlen(src), &d);
  assert_non_null(x);
  if (d.nerrors)
    fail_with_diags(&d, src);
  char *got = printed(x, NULL);
  if (strcmp(got, want) != 0)
    fail_msg("%s\n  got  %s\n  want %s", src, got, want);
  free(got);
  rt_arena_free(a);
}

/* `src` parses as a file printed as `want`, with no errors. */
static void check_file(const char *src, const char *want) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "t.kiln", src, strlen(src), &d);
  assert_non_null(f);
  if (d.nerrors)
    fail_with_diags(&d, src);
  char *got = printed(NULL, f);
  if (strcmp(got, want) != 0)
    fail_msg("%s\n--- got\n%s--- want\n%s", src, got, want);
  free(got);
  rt_arena_free(a);
}

/* `src` gives exactly one error, at line:col, containing msg. */
static void check_error(const char *src, int line, int col, const char *msg) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "t.kiln", src, strlen(src), &d);
  assert_non_null(f);
  if (d.nerrors != 1)
    fail_with_diags(&d, src);
  const Diag *g = d.head;
  if (g->loc.line != line || g->loc.col != col || !strstr(g->msg, msg))
    fail_msg("%s\n  got %d:%d %s\n  want %d:%d %s", src, g->loc.line, g->loc.col, g->msg,
             line, col, msg);
  rt_arena_free(a);
}

static void test_precedence(void **state) {
  check_expr("a + b * c", "(+ a (* b c))");
  check_expr("a * b + c", "(+ (* a b) c)");
  check_expr("a - b - c", "(- (- a b) c)");          /* left-associative */
  check_expr("a / b * c % d", "(% (* (/ a b) c) d)");
  check_expr("a @ b + c @ d", "(+ (@ a b) (@ c d))");
  check_expr("(a + b) * c", "(* (+ a b) c)");
  check_expr("-a * b", "(* (- a) b)");
  check_expr("-a.T", "(- (. a T))");                 /* postfix binds tighter */
  check_expr("+x", "(+ x)");
  check_expr("- -a", "(- (- a))");
  check_expr("a == b + 1", "(== a (+ b 1))");
  check_expr("a + 1 <= b * 2", "(<= (+ a 1) (* b 2))");
  check_expr("a != b", "(!= a b)");
  check_expr("a > b", "(> a b)");
  check_expr("a < b", "(< a b)");
  check_expr("a >= b", "(>= a b)");
}

static void test_literals(void **state) {
  check_expr("42", "42");
  check_expr("-1", "-1");                            /* a negative literal */
  check_expr("- 2.5", "-2.5");
  check_expr("1e-4", "0.0001");
  check_expr("2.0", "2.0");
  check_expr(".5", "0.5");
  check_expr("\"a\\\"b\\n\"", "\"a\\\"b\\n\"");
  check_expr("true", "true");
  check_expr("false", "false");
  check_expr("[1, 2.5, \"s\"]", "(list 1 2.5 \"s\")");
  check_expr("[]", "(list)");
  check_expr("[a, b,]", "(list a b)");               /* trailing comma */
  check_expr("1/16", "(/ 1 16)");
}

static void test_pipe(void **state) {
  /* a |> f(b, k=1) is f(a, b, k=1), with the same shape */
  check_expr("a |> f(b, k=1)", "(call f a b k=1)");
  check_expr("f(a, b, k=1)", "(call f a b k=1)");
  check_expr("a |> relu", "(call relu a)");
  check_expr("a |> relu()", "(call relu a)");
  check_expr("x |> conv2d(16, k=3, pad=same) |> batchnorm() |> relu()",
             "(call relu (call batchnorm (call conv2d x 16 k=3 pad=same)))");
  check_expr("a + b |> f", "(call f (+ a b))");      /* |> is the loosest */
  check_expr("a |> nn.relu", "(call (. nn relu) a)");
  check_expr("a |> g(b)(c)", "(call (call g b) a c)");

  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  const char *src = "x |> dense(10)";
  Ast *call = fe_parse_expr(a, "e", src, strlen(src), &d);
  assert_int_equal(call->kind, AST_CALL);
  assert_true(call->piped);
  assert_int_equal(call->nitems, 2);
  assert_int_equal(call->items[0]->kind, AST_ARG);
  assert_null(call->items[0]->name);
  assert_int_equal(call->items[0]->lhs->kind, AST_NAME);
  assert_string_equal(call->items[0]->lhs->name, "x");
  assert_int_equal(call->loc.col, 6);                /* the caret goes under 'dense' */
  assert_int_equal(call->loc.len, 5);
  src = "dense(x, 10)";
  call = fe_parse_expr(a, "e", src, strlen(src), &d);
  assert_false(call->piped);
  rt_arena_free(a);
}

static void test_calls_and_indexing(void **state) {
  check_expr("f()", "(call f)");
  check_expr("csv(\"d.csv\", label = last, scale = 1/16)",
             "(call csv \"d.csv\" label=last scale=(/ 1 16))");
  check_expr("split(z, 4, axis=-1)", "(call split z 4 axis=-1)");
  check_expr("f(a == b, k=(c))", "(call f (== a b) k=c)");
  check_expr("x[:, t]", "(index x (: _ _) t)");
  check_expr("x[1:2:3, ::-1, :5, 2:, -1]", "(index x (: 1 2 3) (: _ _ -1) (: _ 5) (: 2 _) -1)");
  check_expr("x[i + 1]", "(index x (+ i 1))");
  check_expr("zeros[N, hidden]", "(index zeros N hidden)");
  check_expr("w.T", "(. w T)");
  check_expr("a.b.c(d)[0]", "(index (call (. (. a b) c) d) 0)");
  check_expr("f(x)(y)", "(call (call f x) y)");
  check_expr("f(\n  a,\n  b)", "(call f a b)");       /* newlines inside brackets */
}

static void test_statements(void **state) {
  check_file("model m(x: f32[N, 4]) -> (y: f32[N, 2]) {\n"
             "  param w: f32[2, 4] = xavier()\n"
             "  param b: f32[2]\n"
             "  i, f = split(x, 2, axis=1)\n"
             "  h = dense(x, 8) as \"stem\"\n"
             "  for k in 0..3 { h = h |> dense(8) as \"layer\" }\n"
             "  y = h @ w.T + b\n"
             "}\n",
             "(model m (in (x f32[N 4])) (out (y f32[N 2]))\n"
             "  (param w f32[2 4] (call xavier))\n"
             "  (param b f32[2])\n"
             "  (= (i f) (call split x 2 axis=1))\n"
             "  (= h (call dense x 8) as \"stem\")\n"
             "  (for k 0 3\n"
             "    (= h (call dense h 8) as \"layer\"))\n"
             "  (= y (+ (@ h (. w T)) b)))\n");
}

static void test_signatures(void **state) {
  check_file("block b(x: f32[N, C, H, W], c: int, p: float = 0.5, on_: bool = true, s: str,"
             " m: bool[N]) -> (y, z: i64[N * T, H / 2 + 1, (C - 1) * 2]) { y = x z = x }\n"
             "model empty() -> (y) {}\n",
             "(block b (in (x f32[N C H W]) (c int) (p float = 0.5) (on_ bool = true) (s str)"
             " (m bool[N])) (out (y) (z i64[(* N T) (+ (/ H 2) 1) (* (- C 1) 2)]))\n"
             "  (= y x)\n"
             "  (= z x))\n"
             "(model empty (in) (out (y)))\n");
  check_file("model m(a: f64[1], b: i32[2], c: u8[3]) -> (y) { y = a }\n",
             "(model m (in (a f64[1]) (b i32[2]) (c u8[3])) (out (y))\n"
             "  (= y a))\n");
}

static void test_scan(void **state) {
  check_file("block rnn(x: f32[N, T, D], hidden: int) -> (hs, last) {\n"
             "  hs, last = scan t in 0..T carry (h = zeros[N, hidden]) {\n"
             "    h = tanh(x[:, t] @ w.T + h)\n"
             "    for j in 0..2 { emit h }\n"
             "    emit h, h\n"
             "  }\n"
             "}\n",
             "(block rnn (in (x f32[N T D]) (hidden int)) (out (hs) (last))\n"
             "  (= (hs last) (scan t 0 T (carry h=(index zeros N hidden))\n"
             "    (= h (call tanh (+ (@ (index x (: _ _) t) (. w T)) h)))\n"
             "    (for j 0 2\n"
             "      (emit h))\n"
             "    (emit h h))))\n");
}

static void test_train(void **state) {
  check_file("train digits {\n"
             "  split = 0.2   batch = 64   epochs = 30; seed = 1\n"
             "  l2 = 1e-4 on \"*.weight\"\n"
             "  freeze = [\"*\"]\n"
             "  variable img: f32[1, 3, 8, 8] = npy(\"c.npy\")\n"
             "}\n",
             "(train digits\n"
             "  (set split 0.2)\n"
             "  (set batch 64)\n"
             "  (set epochs 30)\n"
             "  (set seed 1)\n"
             "  (set l2 0.0001 on \"*.weight\")\n"
             "  (set freeze (list \"*\"))\n"
             "  (variable img f32[1 3 8 8] (call npy \"c.npy\")))\n");
  /* `model` is a keyword, but `model = NAME` is a setting of a train block */
  check_file("train fast {\n  model = digits   epochs = 2\n}\nmodel digits(x: f32[N]) -> (y) {\n  y = x\n}\n",
             "(train fast\n"
             "  (set model digits)\n"
             "  (set epochs 2))\n"
             "(model digits (in (x f32[N])) (out (y))\n"
             "  (= y x))\n");
}

/* Newlines are not separators, except before '(' and '['. */
static void test_statement_ends(void **state) {
  check_file("model m(x: f32[N]) -> (y) {\n"
             "  y = x\n"
             "    + 1\n"
             "    |> relu\n"
             "  y = y * (x\n"
             "   + 2)\n"
             "  a = 1 b = 2; c = 3\n"
             "}\n",
             "(model m (in (x f32[N])) (out (y))\n"
             "  (= y (call relu (+ x 1)))\n"
             "  (= y (* y (+ x 2)))\n"
             "  (= a 1)\n"
             "  (= b 2)\n"
             "  (= c 3))\n");
  /* a '(' or '[' first on its line does not call or index */
  check_error("model m(x: f32[N]) -> (y) {\n  y = f\n  (x)\n}\n", 3, 3,
              "expected a statement, found '('");
  check_error("model m(x: f32[N]) -> (y) {\n  y = x\n  [0]\n}\n", 3, 3,
              "expected a statement, found '['");
  check_error("model m(x: f32[N]) -> (y) {\n  y = f(x) relu()\n}\n", 2, 12,
              "expected an operator or a new statement, found 'relu'");
}

static void test_errors(void **state) {
  check_error("model m() -> (y) { y = f(1, k=3 relu) }", 1, 33,
              "expected ')' after arguments, found 'relu'");
  check_error("model m() -> (y) { y = a |> (b + 1) }", 1, 32,
              "expected a function or a call after '|>'");
  check_error("model m() -> (y) { y = a < b < c }", 1, 30, "comparisons do not chain");
  check_error("model m() -> (y) { y = x |> f + 1 }", 1, 31,
              "'+' after a '|>' chain: put the chain in parentheses");
  check_error("model m() -> (y) { y = f(k=1, 2) }", 1, 31, "positional argument after keyword");
  check_error("model m() -> (y) { y = f(k=1, k=2) }", 1, 31, "keyword argument 'k' given twice");
  check_error("model m() -> (y) { emit y }", 1, 20, "'emit' outside of a scan body");
  check_error("model m() -> (y) { variable v: f32[1] = 0 }", 1, 20,
              "'variable' is only allowed in a train block");
  check_error("train t { param w: f32[1] }", 1, 11, "'param' is only allowed in a model or block");
  check_error("model m(x: f16[N]) -> (y) { y = x }", 1, 12, "unknown element type 'f16'");
  check_error("model m(x: f32[2147483648]) -> (y) { y = x }", 1, 16,
              "size 2147483648 is too large");
  check_error("model m(x: f32[2.5]) -> (y) { y = x }", 1, 16, "expected a size");
  check_error("model m(x: f32[]) -> (y) { y = x }", 1, 12, "needs at least one size");
  check_error("model m(x: f32[N]) -> () { }", 1, 24, "expected an output name");
  check_error("model m() -> (y) {\n  y = 1\n", 3, 1,
              "expected '}' to close the block opened at 1:18, found end of file");
  check_error("y = 1", 1, 1, "expected 'model', 'block' or 'train', found 'y'");
  check_error("model m() -> (y) { y = x[] }", 1, 26, "expected an index, found ']'");
  check_error("model m() -> (y) { y = 1 as name }", 1, 29, "expected a string after 'as'");
  check_error("train t { a, b = 1 }", 1, 12, "expected '=' after setting name, found ','");
  check_error("model m() -> (y) { y = scan t in 0..3 carry () { emit t } }", 1, 46,
              "expected a carried name");
}

/* Several mistakes in one file: each reported once, in order. */
static void test_recovery(void **state) {
  const char *src = "model m(x: f32[N]) -> (y) {\n"
                    "  a = f(x, k=3 relu)\n"
                    "  b = x + * 2\n"
                    "  c = g(x) $\n"
                    "  for i in 0..3 { d = ) }\n"
                    "  y = x\n"
                    "}\n"
                    "model m2(x f32[N]) -> (y) { y = = x }\n"
                    "train t { lr = 1 }\n";
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "t.kiln", src, strlen(src), &d);
  const int want[][2] = {{2, 16}, {3, 11}, {4, 12}, {5, 23}, {8, 12}, {8, 33}};
  assert_int_equal(d.nerrors, 6);
  const Diag *g = d.head;
  for (int i = 0; i < 6; i++, g = g->next) {
    assert_int_equal(g->loc.line, want[i][0]);
    assert_int_equal(g->loc.col, want[i][1]);
  }
  /* what parsed is kept */
  assert_int_equal(f->nmodels, 2);
  assert_int_equal(f->ntrains, 1);
  assert_int_equal(f->ndefs, 3);
  const Ast *m = ast_find_def(f, AST_MODEL, "m");
  assert_non_null(m);
  assert_int_equal(m->nbody, 5);                     /* a b c for y */
  assert_string_equal(m->body[4]->items[0]->name, "y");
  assert_int_equal(m->body[3]->kind, AST_FOR);
  assert_non_null(ast_find_def(f, AST_TRAIN, "t"));
  assert_null(ast_find_def(f, AST_BLOCK, "m"));
  rt_arena_free(a);
}

/* The sketch of DESIGN.md "The language", verbatim. */
static const char sketch[] =
  "model digits(x: f32[N, 1, 8, 8]) -> (logits: f32[N, 10]) {\n"
  "  h = x |> conv2d(16, k=3, pad=same) |> batchnorm() |> relu()\n"
  "  h = h |> conv2d(32, k=3, pad=same) |> batchnorm() |> relu() |> maxpool(2)\n"
  "  logits = h |> flatten() |> dense(64) |> relu() |> dropout(0.3) |> dense(10)\n"
  "}\n"
  "\n"
  "train digits {\n"
  "  data      = csv(\"data/digits.csv\", label = last, scale = 1/16)\n"
  "  split     = 0.2   batch = 64   epochs = 30   seed = 1\n"
  "  loss      = cross_entropy(logits, label)\n"
  "  optimizer = adam(lr = 1e-3)          # sgd(momentum=0.9), rmsprop(rho=0.9), adamw\n"
  "  schedule  = cosine()                 # step, exp, inverse_time, warmup\n"
  "  l2        = 1e-4 on \"*.weight\"\n"
  "}\n"
  "\n"
  "block residual(x: f32[N, C, H, W], c: int) -> (y) {\n"
  "  a = x |> conv2d(c, k=3, pad=same, bias=false) |> batchnorm() |> relu()\n"
  "  y = relu(x + (a |> conv2d(c, k=3, pad=same, bias=false) |> batchnorm()))\n"
  "}\n"
  "\n"
  "block lstm(x: f32[N, T, D], hidden: int) -> (hs) {   # PyTorch's names and layouts\n"
  "  param weight_ih: f32[4*hidden, D]      = uniform_fan(hidden)\n"
  "  param weight_hh: f32[4*hidden, hidden] = uniform_fan(hidden)\n"
  "  param bias_ih:   f32[4*hidden]         = uniform_fan(hidden)\n"
  "  param bias_hh:   f32[4*hidden]         = uniform_fan(hidden)\n"
  "  hs = scan t in 0..T carry (h = zeros[N, hidden], c = zeros[N, hidden]) {\n"
  "    z = x[:, t] @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh\n"
  "    i, f, g, o = split(z, 4, axis=-1)\n"
  "    c = sigmoid(f) * c + sigmoid(i) * tanh(g)\n"
  "    h = sigmoid(o) * tanh(c)\n"
  "    emit h\n"
  "  }\n"
  "}\n"
  "\n"
  "block encoder(x: f32[N, T, D], heads: int) -> (y) {\n"
  "  h = x + (x |> layernorm() |> attention(heads) |> dropout(0.1))\n"
  "  y = h + (h |> layernorm() |> dense(4*D) |> gelu() |> dense(D))\n"
  "}\n"
  "\n"
  "model multitask(img: f32[N, 3, 32, 32]) -> (cls: f32[N, 10], box: f32[N, 4]) {\n"
  "  f = img |> conv2d(32, k=3, pad=same) |> relu() |> residual(32) as \"backbone\"\n"
  "  f = f |> global_avgpool()\n"
  "  cls = dense(f, 10)\n"
  "  box = dense(f, 4)\n"
  "}\n"
  "\n"
  "train style {                          # the trained tensor is the image\n"
  "  variable img: f32[1, 3, 128, 128] = npy(\"content.npy\")\n"
  "  init_from = safetensors(\"features.safetensors\")   freeze = [\"*\"]\n"
  "  loss      = 10 * mse(features(img), content) + 40 * mse(gram(features(img)), style)\n"
  "  optimizer = adam(lr = 0.02)   steps = 300\n"
  "}\n";

static const char sketch_ast[] =
  "(model digits (in (x f32[N 1 8 8])) (out (logits f32[N 10]))\n"
  "  (= h (call relu (call batchnorm (call conv2d x 16 k=3 pad=same))))\n"
  "  (= h (call maxpool (call relu (call batchnorm (call conv2d h 32 k=3 pad=same))) 2))\n"
  "  (= logits (call dense (call dropout (call relu (call dense (call flatten h) 64)) 0.3) 10)))\n"
  "(train digits\n"
  "  (set data (call csv \"data/digits.csv\" label=last scale=(/ 1 16)))\n"
  "  (set split 0.2)\n"
  "  (set batch 64)\n"
  "  (set epochs 30)\n"
  "  (set seed 1)\n"
  "  (set loss (call cross_entropy logits label))\n"
  "  (set optimizer (call adam lr=0.001))\n"
  "  (set schedule (call cosine))\n"
  "  (set l2 0.0001 on \"*.weight\"))\n"
  "(block residual (in (x f32[N C H W]) (c int)) (out (y))\n"
  "  (= a (call relu (call batchnorm (call conv2d x c k=3 pad=same bias=false))))\n"
  "  (= y (call relu (+ x (call batchnorm (call conv2d a c k=3 pad=same bias=false))))))\n"
  "(block lstm (in (x f32[N T D]) (hidden int)) (out (hs))\n"
  "  (param weight_ih f32[(* 4 hidden) D] (call uniform_fan hidden))\n"
  "  (param weight_hh f32[(* 4 hidden) hidden] (call uniform_fan hidden))\n"
  "  (param bias_ih f32[(* 4 hidden)] (call uniform_fan hidden))\n"
  "  (param bias_hh f32[(* 4 hidden)] (call uniform_fan hidden))\n"
  "  (= hs (scan t 0 T (carry h=(index zeros N hidden) c=(index zeros N hidden))\n"
  "    (= z (+ (+ (+ (@ (index x (: _ _) t) (. weight_ih T)) bias_ih) (@ h (. weight_hh T))) bias_hh))\n"
  "    (= (i f g o) (call split z 4 axis=-1))\n"
  "    (= c (+ (* (call sigmoid f) c) (* (call sigmoid i) (call tanh g))))\n"
  "    (= h (* (call sigmoid o) (call tanh c)))\n"
  "    (emit h))))\n"
  "(block encoder (in (x f32[N T D]) (heads int)) (out (y))\n"
  "  (= h (+ x (call dropout (call attention (call layernorm x) heads) 0.1)))\n"
  "  (= y (+ h (call dense (call gelu (call dense (call layernorm h) (* 4 D))) D))))\n"
  "(model multitask (in (img f32[N 3 32 32])) (out (cls f32[N 10]) (box f32[N 4]))\n"
  "  (= f (call residual (call relu (call conv2d img 32 k=3 pad=same)) 32) as \"backbone\")\n"
  "  (= f (call global_avgpool f))\n"
  "  (= cls (call dense f 10))\n"
  "  (= box (call dense f 4)))\n"
  "(train style\n"
  "  (variable img f32[1 3 128 128] (call npy \"content.npy\"))\n"
  "  (set init_from (call safetensors \"features.safetensors\"))\n"
  "  (set freeze (list \"*\"))\n"
  "  (set loss (+ (* 10 (call mse (call features img) content)) (* 40 (call mse (call gram (call features img)) style))))\n"
  "  (set optimizer (call adam lr=0.02))\n"
  "  (set steps 300))\n";

static void test_sketch(void **state) {
  check_file(sketch, sketch_ast);
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse(a, "sketch.kiln", sketch, strlen(sketch), &d);
  assert_int_equal(f->nmodels, 2);
  assert_int_equal(f->nblocks, 3);
  assert_int_equal(f->ntrains, 2);
  assert_string_equal(f->blocks[1]->name, "lstm");
  /* locations: the scan's `h @ weight_hh.T` operator sits at line 27 */
  const Ast *scan = f->blocks[1]->body[4]->init;
  assert_int_equal(scan->kind, AST_SCAN);
  const Ast *z = scan->body[0]->init;                  /* (+ (+ (+ ...) (@ h ..)) bias_hh) */
  const Ast *matmul = z->lhs->rhs;
  assert_int_equal(matmul->op, TK_AT);
  assert_int_equal(matmul->loc.line, 27);
  assert_int_equal(matmul->loc.col, 45);
  assert_ptr_equal(matmul->loc.file, &f->src);
  const Ast *ty = f->blocks[1]->body[0]->type;
  assert_int_equal(ty->tkind, ATY_TENSOR);
  assert_int_equal(ty->dtype, RT_F32);
  assert_int_equal(ty->nitems, 2);
  rt_arena_free(a);
}

/* `n` copies of open, then `mid`, then n copies of close. */
static char *nested(int n, const char *open, const char *mid, const char *close) {
  size_t len = n * (strlen(open) + strlen(close)) + strlen(mid) + 1;
  char *s = malloc(len), *end = s;
  for (int i = 0; i < n; i++)
    end = stpcpy(end, open);
  end = stpcpy(end, mid);
  for (int i = 0; i < n; i++)
    end = stpcpy(end, close);
  return s;
}

/* Wraps an expression into a model; returns the number of errors and
 * whether one says "nesting is too deep". */
static int parse_errors(const char *src, bool *deep) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  assert_non_null(fe_parse(a, "t.kiln", src, strlen(src), &d));
  *deep = d.head && strstr(d.head->msg, "nesting is too deep");
  int n = d.nerrors;
  rt_arena_free(a);
  return n;
}

static void check_depth(int n, const char *open, const char *mid, const char *close,
                        bool too_deep) {
  char *body = nested(n, open, mid, close);
  size_t len = strlen(body) + 64;
  char *src = malloc(len);
  snprintf(src, len, "model m(x: f32[N]) -> (y) {\n y = %s\n}\n", body);
  bool deep;
  int errors = parse_errors(src, &deep);
  if (too_deep ? errors != 1 || !deep : errors != 0)
    fail_msg("%d x '%s': %d errors", n, open, errors);
  free(src);
  free(body);
}

static void test_limits(void **state) {
  check_depth(150, "(", "x", ")", false);
  check_depth(100000, "(", "x", ")", true);
  check_depth(150, "[", "x", "]", false);
  check_depth(5000, "[", "x", "]", true);
  check_depth(150, "-", "x", "", false);
  check_depth(100000, "-", "x", "", true);
  check_depth(150, "f(", "x", ")", false);
  check_depth(5000, "f(", "x", ")", true);
  check_depth(150, "", "x", " + x", false);            /* a left-leaning chain */
  check_depth(100000, "", "x", " + x", true);
  check_depth(100000, "", "x", " |> f", true);
  check_depth(100000, "", "x", ".T", true);
  check_depth(100000, "", "x", "[0]", true);
  check_depth(5000, "scan t in 0..3 carry (h = 0) { emit ", "x", " }", true);
  /* blocks nest too */
  char *fors = nested(100000, "for i in 0..2 { ", "y = x", " }");
  size_t len = strlen(fors) + 64;
  char *src = malloc(len);
  snprintf(src, len, "model m(x: f32[N]) -> (y) {\n %s\n}\n", fors);
  bool deep;
  assert_int_equal(parse_errors(src, &deep), 1);
  assert_true(deep);
  free(src);
  free(fors);
  /* the largest size */
  check_file("model m(x: f32[2147483647, 0]) -> (y) { y = x }",
             "(model m (in (x f32[2147483647 0])) (out (y))\n  (= y x))\n");
}

static void test_missing_file(void **state) {
  RtArena *a = rt_arena_new();
  Diags d;
  diag_init(&d, a);
  AstFile *f = fe_parse_file(a, "no/such/file.kiln", &d);
  assert_non_null(f);
  assert_int_equal(f->ndefs, 0);
  assert_int_equal(d.nerrors, 1);
  assert_null(d.head->loc.file);
  assert_non_null(strstr(d.head->msg, "cannot read 'no/such/file.kiln'"));
  /* a file that exists parses like the same text */
  char path[] = P_tmpdir "/kiln-fe-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *out = fdopen(fd, "w");
  fputs(sketch, out);
  fclose(out);
  f = fe_parse_file(a, path, &d);
  remove(path);
  assert_int_equal(d.nerrors, 1);
  char *got = printed(NULL, f);
  assert_string_equal(got, sketch_ast);
  free(got);
  assert_string_equal(f->src.name, path);
  rt_arena_free(a);
}

/* Out of memory at every point: fe_parse returns NULL or the same tree,
 * never crashes (the arena's limit makes allocations fail). */
static void test_out_of_memory(void **state) {
  enum { COPIES = 8 };
  size_t len = COPIES * strlen(sketch);
  char *src = malloc(len + 1);
  for (int i = 0; i < COPIES; i++)
    memcpy(src + i * strlen(sketch), sketch, strlen(sketch));
  src[len] = 0;
  RtArena *full = rt_arena_new();
  Diags d;
  diag_init(&d, full);
  AstFile *f = fe_parse(full, "t.kiln", src, len, &d);
  char *want = printed(NULL, f);
  size_t used = rt_arena_used(full);
  int nulls = 0, trees = 0;
  for (size_t limit = 0; limit < used + (256 << 10); limit += 16 << 10) {
    RtArena *a = rt_arena_new(), *da = rt_arena_new();
    rt_arena_set_limit(a, limit);
    diag_init(&d, da);
    f = fe_parse(a, "t.kiln", src, len, &d);
    if (!f) {
      nulls++;
    } else {
      char *got = printed(NULL, f);
      assert_string_equal(got, want);
      free(got);
      trees++;
    }
    rt_arena_free(a);
    rt_arena_free(da);
  }
  assert_true(nulls > 10);
  assert_true(trees > 0);
  free(want);
  free(src);
  rt_arena_free(full);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_precedence),   cmocka_unit_test(test_literals),
    cmocka_unit_test(test_pipe),         cmocka_unit_test(test_calls_and_indexing),
    cmocka_unit_test(test_statements),   cmocka_unit_test(test_signatures),
    cmocka_unit_test(test_scan),         cmocka_unit_test(test_train),
    cmocka_unit_test(test_statement_ends), cmocka_unit_test(test_errors),
    cmocka_unit_test(test_recovery),     cmocka_unit_test(test_sketch),
    cmocka_unit_test(test_limits),       cmocka_unit_test(test_missing_file),
    cmocka_unit_test(test_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

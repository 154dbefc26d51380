/* The scan op through the whole pipeline (passes, codegen, JIT): a tanh
 * RNN cell built as a scan body,
 *
 *   h' = tanh(x_t Wx^T + h Wh^T + b),  carry h, emit h'
 *
 * checked against a loop written here in double precision (forward and
 * reverse direction); its gradients (the reverse scan autodiff makes) with
 * respect to the sequence, the initial carry and the weights against
 * central differences in f64; a masked batch of sequences of different
 * lengths against each sequence run alone (and its gradients against
 * differences); what the reverse scan saves and hoists out of its loop;
 * time-major sequences, stepped in place; and code that does not grow
 * with the number of steps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "../passes/adharness.h"

enum { N = 3, D = 2, HID = 4 };

typedef struct Rnn {
  Model m;
  Graph *g;
  int64_t T;
  bool time_major;                       /* x [T, N, D], hs [T, N, H], axis 0 */
  Value *x, *h0, *wx, *wh, *b, *mask;   /* mask: NULL unless masked */
  Value *hs, *hT;                        /* emitted [N, T, H], last carry [N, H] */
  Value *r1, *r2, *loss;
} Rnn;

static Value *mm_t(Graph *g, Value *a, Value *w) {
  Attr at = ir_attr();
  at.trans_b = true;
  return ir_op(g, OP_matmul, (Value *[]){a, w}, 2, &at, NOLOC);
}

/* The cell as a body: inputs x_t [, m_t], h, wx, wh, b. */
static Graph *cell(Graph *g, bool masked) {
  Graph *b = ir_body_new(g, "cell");
  Value *xt = ir_input(b, "x", TY(RT_F64, N, D), NOLOC);
  Value *mt = masked ? ir_input(b, "m", TY(RT_F64, N), NOLOC) : NULL;
  Value *h = ir_input(b, "h", TY(RT_F64, N, HID), NOLOC);
  Value *wx = ir_input(b, "wx", TY(RT_F64, HID, D), NOLOC);
  Value *wh = ir_input(b, "wh", TY(RT_F64, HID, HID), NOLOC);
  Value *bias = ir_input(b, "b", TY(RT_F64, HID), NOLOC);
  Value *a = ir_op2(b, OP_add, ir_op2(b, OP_add, mm_t(b, xt, wx), mm_t(b, h, wh), NOLOC), bias, NOLOC);
  Value *h2 = ir_op1(b, OP_tanh, a, NOLOC);
  ir_output(b, h2, "h");
  ir_output(b, h2, "y");
  if (masked)
    ir_scan_mask(b, mt, 2, 1);
  return b;
}

/* Sequences x [N, T, D] as trainable f64 values, so autodiff reaches them. */
static Value *param(Rnn *r, const char *name, Type t) {
  Value *v = ir_param(r->g, name, t, (Init){.kind = INIT_ZEROS}, NOLOC);
  v->wrt = true;
  return v;
}

/* Where step t of sequence n is, in rows of x and hs. */
static int64_t at(const Rnn *r, int n, int64_t t) { return r->time_major ? t * N + n : n * r->T + t; }

/* The RNN through the pipeline at -O opt (simplify removes what the
 * reverse scan leaves dead, fusion joins its kernels); batch-first unless
 * time_major (not masked then). */
static void rnn_build_at(Rnn *r, int64_t T, bool masked, bool reverse, bool train, int opt,
                         bool time_major) {
  memset(r, 0, sizeof *r);
  r->T = T;
  r->time_major = time_major;
  Graph *g = r->g = model_new(&r->m, "rnn");
  r->m.opt = opt;
  r->x = param(r, "x", time_major ? TY(RT_F64, T, N, D) : TY(RT_F64, N, T, D));
  r->h0 = param(r, "h0", TY(RT_F64, N, HID));
  r->wx = param(r, "wx", TY(RT_F64, HID, D));
  r->wh = param(r, "wh", TY(RT_F64, HID, HID));
  r->b = param(r, "b", TY(RT_F64, HID));
  Value *in[6];
  int k = 0, nseq = 1;
  in[k++] = r->x;
  if (masked) {
    r->mask = ir_input(g, "mask", TY(RT_F64, N, T), NOLOC);
    in[k++] = r->mask;
    nseq = 2;
  }
  in[k++] = r->h0;
  in[k++] = r->wx;
  in[k++] = r->wh;
  in[k++] = r->b;
  Node *s = ir_scan(g, cell(g, masked), in, nseq, 1, 3, !time_major, reverse, sz_const(T), NOLOC);
  r->hT = s->out[0];
  r->hs = s->out[1];
  r->r1 = ir_input(g, "r1", r->hs->type, NOLOC);
  r->r2 = ir_input(g, "r2", r->hT->type, NOLOC);
  Value *l1 = sum_all(g, ir_op2(g, OP_mul, r->hs, r->r1, NOLOC));
  Value *l2 = sum_all(g, ir_op2(g, OP_mul, r->hT, r->r2, NOLOC));
  r->loss = ir_op2(g, OP_add, l1, l2, NOLOC);
  ir_output(g, r->hs, "hs");
  ir_output(g, r->hT, "hT");
  ir_output(g, r->loss, "loss");
  if (train)
    g->loss = r->loss;
  ad_compile(&r->m);
  Value *fill[] = {r->x, r->h0, r->wx, r->wh, r->b, r->r1, r->r2};
  for (int i = 0; i < 7; i++)
    fill_value(&r->m, fill[i], FILL_UNIFORM, 7 + i);
}

static void rnn_build(Rnn *r, int64_t T, bool masked, bool reverse, bool train) {
  rnn_build_at(r, T, masked, reverse, train, 0, false);
}

/* The same recurrence in plain C: hs [N, T, H] and hT [N, H]. */
static void reference(Rnn *r, const int64_t *len, bool reverse, Ten *hs, Ten *hT) {
  Ten x = model_get(&r->m, r->x), h0 = model_get(&r->m, r->h0), wx = model_get(&r->m, r->wx);
  Ten wh = model_get(&r->m, r->wh), b = model_get(&r->m, r->b);
  int64_t T = r->T;
  *hs = ten_new(&r->m, 3, r->time_major ? (int64_t[]){T, N, HID} : (int64_t[]){N, T, HID});
  *hT = ten_new(&r->m, 2, (int64_t[]){N, HID});
  for (int n = 0; n < N; n++) {
    double h[HID], h2[HID];
    int64_t L = len ? len[n] : T;
    for (int j = 0; j < HID; j++)
      h[j] = h0.d[n * HID + j];
    for (int64_t s = 0; s < T; s++) {
      int64_t t = reverse ? T - 1 - s : s;
      bool on = t < L;
      for (int j = 0; j < HID; j++) {
        double a = b.d[j];
        for (int i = 0; i < D; i++)
          a += x.d[at(r, n, t) * D + i] * wx.d[j * D + i];
        for (int i = 0; i < HID; i++)
          a += h[i] * wh.d[j * HID + i];
        h2[j] = tanh(a);
      }
      for (int j = 0; j < HID; j++) {
        if (on)
          h[j] = h2[j];
        hs->d[at(r, n, t) * HID + j] = on ? h2[j] : 0;
      }
    }
    for (int j = 0; j < HID; j++)
      hT->d[n * HID + j] = h[j];
  }
}

static void check_forward(int64_t T, bool reverse) {
  Rnn r;
  rnn_build(&r, T, false, reverse, false);
  model_run(&r.m, 0, 2);
  Ten hs, hT;
  reference(&r, NULL, reverse, &hs, &hT);
  check_ten("hs", model_get(&r.m, r.hs), hs, 1e-12);
  check_ten("hT", model_get(&r.m, r.hT), hT, 1e-12);
  model_free(&r.m);
}

static void test_forward(void **state) {
  (void)state;
  check_forward(5, false);
  check_forward(1, false);
  check_forward(6, true);
}

static double loss_at(Rnn *r) {
  model_run(&r->m, 0, 2);
  return model_get(&r->m, r->loss).d[0];
}

/* Every parameter's gradient against central differences. */
static void check_grads(Rnn *r) {
  model_run(&r->m, 0, 2);
  Value *ps[] = {r->x, r->h0, r->wx, r->wh, r->b};
  Ten ana[5];
  for (int i = 0; i < 5; i++) {
    assert_non_null(ps[i]->grad);
    ana[i] = model_get(&r->m, ps[i]->grad);
  }
  for (int i = 0; i < 5; i++) {
    Ten x = model_get(&r->m, ps[i]), num = ten_new(&r->m, x.rank, x.dim);
    void *p = model_ptr(&r->m, ps[i]);
    for (int64_t e = 0; e < x.n; e++) {
      elem_set(p, RT_F64, e, x.d[e] + 1e-6);
      double lp = loss_at(r);
      elem_set(p, RT_F64, e, x.d[e] - 1e-6);
      double lm = loss_at(r);
      elem_set(p, RT_F64, e, x.d[e]);
      num.d[e] = (lp - lm) / 2e-6;
    }
    char what[64];
    snprintf(what, sizeof what, "d loss / d %s", ps[i]->name);
    check_ten(what, ana[i], num, 1e-6);
  }
}

static void test_gradients(void **state) {
  (void)state;
  for (int opt = 0; opt <= 2; opt += 2)
    for (int rev = 0; rev < 2; rev++) {
      Rnn r;
      rnn_build_at(&r, 4, false, rev, true, opt, false);
      check_grads(&r);
      model_free(&r.m);
    }
}

static int live_matmuls(const Graph *b) {
  int k = 0;
  for (int i = 0; i < b->nnodes; i++)
    k += b->nodes[i]->op == OP_matmul && b->nodes[i]->out[0]->nuse > 0;
  return k;
}

/* What the reverse scan leaves in the loop (passes/scan_grad.c): the
 * forward emits, besides its carry, the sum x Wx^T + h Wh^T + b its two
 * contractions feed, so the backward recomputes neither; Wx and Wh get
 * their gradients from
 * one GEMM each after the loop, so the backward carries only dh and db,
 * and its body multiplies only for dx_t and dh. */
static void test_saved_and_hoisted(void **state) {
  (void)state;
  Rnn r;
  rnn_build_at(&r, 4, false, false, true, 2, false);     /* after simplify: no dead code */
  const Node *fwd = NULL, *bwd = NULL;
  for (int i = 0; i < r.g->nnodes; i++)
    if (r.g->nodes[i]->op == OP_scan)
      *(fwd ? &bwd : &fwd) = r.g->nodes[i];
  assert_non_null(bwd);
  assert_int_equal(fwd->nout, 1 + 1 + 1 + 1);     /* carry, hs, saved carry, saved sum */
  assert_int_equal(bwd->attr.ncarry, 2);
  ir_count_uses(bwd->body);
  assert_int_equal(live_matmuls(bwd->body), 2);
  assert_true(r.wx->grad->def->op != OP_scan && r.wh->grad->def->op != OP_scan);
  /* the saved sum, one row [1, N * H] a step, is written and read in
   * place (codegen/scan.c); the saved carry, which dWh reads as rows after
   * the loop, and the sequence, batch-first, are copied */
  assert_true(fwd->body->outputs[3]->region >= REGION_COUNT);
  assert_true(bwd->body->inputs[2]->region >= REGION_COUNT);
  assert_true(fwd->body->outputs[2]->region < REGION_COUNT);
  assert_true(fwd->body->inputs[0]->region < REGION_COUNT);
  model_free(&r.m);
}

/* Time-major sequences (axis 0): every step of x, hs and their gradients
 * is one run of bytes, read and written in place by both loops; the same
 * results as the loop in C and as central differences. */
static void test_time_major(void **state) {
  (void)state;
  for (int rev = 0; rev < 2; rev++) {
    Rnn r;
    rnn_build_at(&r, 5, false, rev, false, 2, true);
    model_run(&r.m, 0, 2);
    Ten hs, hT;
    reference(&r, NULL, rev, &hs, &hT);
    check_ten("time-major hs", model_get(&r.m, r.hs), hs, 1e-12);
    check_ten("time-major hT", model_get(&r.m, r.hT), hT, 1e-12);
    const Graph *b = r.hs->def->body;
    assert_true(b->inputs[0]->region >= REGION_COUNT);     /* x_t */
    assert_true(b->outputs[1]->region >= REGION_COUNT);    /* y, the carry too */
    model_free(&r.m);
    for (int opt = 0; opt <= 2; opt += 2) {
      rnn_build_at(&r, 4, false, rev, true, opt, true);
      check_grads(&r);
      model_free(&r.m);
    }
  }
}

static const int64_t lens[N] = {5, 2, 4};

static void set_mask(Rnn *r) {
  Ten m = ten_new(&r->m, 2, (int64_t[]){N, r->T});
  for (int n = 0; n < N; n++)
    for (int64_t t = 0; t < r->T; t++)
      m.d[n * r->T + t] = t < lens[n];
  model_set(&r->m, r->mask, m);
}

/* Sequence n of a masked batch equals the same sequence run alone with
 * its own length: the unmasked scan of T = lens[n] steps. */
static void test_mask_alone(void **state) {
  (void)state;
  Rnn r;
  rnn_build(&r, 5, true, false, false);
  set_mask(&r);
  model_run(&r.m, 0, 2);
  Ten hs = model_get(&r.m, r.hs), hT = model_get(&r.m, r.hT);
  for (int n = 0; n < N; n++) {
    Rnn a;
    rnn_build(&a, lens[n], false, false, false);
    Value *same[] = {a.h0, a.wx, a.wh, a.b};
    Value *from[] = {r.h0, r.wx, r.wh, r.b};
    for (int i = 0; i < 4; i++)
      model_set(&a.m, same[i], model_get(&r.m, from[i]));
    Ten x = model_get(&r.m, r.x), xa = model_get(&a.m, a.x);
    for (int n2 = 0; n2 < N; n2++)
      for (int64_t t = 0; t < lens[n]; t++)
        for (int i = 0; i < D; i++)
          xa.d[(n2 * lens[n] + t) * D + i] = x.d[(n * 5 + t) * D + i];
    model_set(&a.m, a.x, xa);
    model_run(&a.m, 0, 2);
    Ten ahs = model_get(&a.m, a.hs), ahT = model_get(&a.m, a.hT);
    for (int j = 0; j < HID; j++) {
      assert_float_equal(hT.d[n * HID + j], ahT.d[n * HID + j], 1e-14);
      for (int64_t t = 0; t < 5; t++)
        assert_float_equal(hs.d[(n * 5 + t) * HID + j],
                           t < lens[n] ? ahs.d[(n * lens[n] + t) * HID + j] : 0, 1e-14);
    }
    model_free(&a.m);
  }
  Ten rhs, rhT;
  reference(&r, lens, false, &rhs, &rhT);
  check_ten("masked hs", hs, rhs, 1e-12);
  model_free(&r.m);
}

static void test_mask_gradients(void **state) {
  (void)state;
  for (int rev = 0; rev < 2; rev++) {
    Rnn r;
    rnn_build(&r, 5, true, rev, true);
    set_mask(&r);
    check_grads(&r);
    model_free(&r.m);
  }
}

/* The module for T steps, built like rnn_build, counted in instructions. */
static int64_t module_insts(int64_t T) {
  Rnn r;
  memset(&r, 0, sizeof r);
  Graph *g = r.g = model_new(&r.m, "rnn");
  r.x = param(&r, "x", TY(RT_F64, N, T, D));
  r.h0 = param(&r, "h0", TY(RT_F64, N, HID));
  r.wx = param(&r, "wx", TY(RT_F64, HID, D));
  r.wh = param(&r, "wh", TY(RT_F64, HID, HID));
  r.b = param(&r, "b", TY(RT_F64, HID));
  Node *s = ir_scan(g, cell(g, false), (Value *[]){r.x, r.h0, r.wx, r.wh, r.b}, 1, 1, 3, 1, false,
                    sz_const(T), NOLOC);
  g->loss = sum_all(g, s->out[1]);
  ir_output(g, g->loss, "loss");
  CgCtx c;
  char err[512];
  assert_int_equal(model_codegen(&r.m, &c, err, sizeof err), 0);
  int64_t n = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(c.mod); f; f = LLVMGetNextFunction(f))
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
      for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i))
        n++;
  cg_ctx_dispose(&c);
  model_free(&r.m);
  return n;
}

static void test_code_size(void **state) {
  (void)state;
  int64_t small = module_insts(3), big = module_insts(3000);
  print_message("instructions: %lld at T = 3, %lld at T = 3000\n", (long long)small, (long long)big);
  assert_true(small > 0);
  assert_int_equal(small, big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward),
      cmocka_unit_test(test_gradients),
      cmocka_unit_test(test_saved_and_hoisted),
      cmocka_unit_test(test_time_major),
      cmocka_unit_test(test_mask_alone),
      cmocka_unit_test(test_mask_gradients),
      cmocka_unit_test(test_code_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

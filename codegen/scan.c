/* A scan as a real loop: its body graph is compiled once, into kernels of
 * its own and an entry `<kernel>.body` with the usual calling convention,
 * and the scan's kernel calls it once per step. Code size and compile time
 * do not depend on the number of steps.
 *
 * The body's values live in the scan's workspace (passes/memplan.c,
 * place_body), its invariant inputs where the enclosing graph keeps them.
 * Around each call the kernel moves data:
 *
 *   before the loop   body constants <- their data; carries <- initial carries
 *   step t            body sequence inputs <- x[.., t, ..] (those it reads)
 *                     call the body
 *                     y[.., t, ..] <- body emitted outputs
 *                     body carry inputs <- body carry outputs
 *   after the loop    last carries <- body carry inputs
 *
 * so carries never leave the workspace between steps. A sequence or an
 * emitted stack whose steps are contiguous is not copied at all: place_body
 * gave the body's value slot REGION_COUNT + k of the body's regions array
 * (k numbers the sequences, then the emitted outputs), and the kernel
 * points that slot at step t of the stack before each call. The body's own
 * kernels are parallel as usual; the loop over steps is serial. */
#include "codegen/codegen.h"

int64_t cg_scan_work_bytes(const Node *n) {
  const int64_t *rb = n->body->region_bytes;
  int64_t a = 64;
  return (rb[REGION_WEIGHTS] + a - 1) / a * a + (rb[REGION_IO] + a - 1) / a * a +
         rb[REGION_SCRATCH];
}

static LLVMValueRef numel(CgKernel *k, const Type *t, int from, int to) {
  LLVMValueRef n = cg_i64(k->c, 1);
  for (int i = from; i < to; i++)
    n = LLVMBuildNSWMul(k->c->b, n, cg_size(k, t->dim[i]), "");
  return n;
}

static LLVMValueRef bytes_of(CgKernel *k, const Value *v) {
  LLVMValueRef n = numel(k, &v->type, 0, v->type.rank);
  return LLVMBuildNSWMul(k->c->b, n, cg_i64(k->c, rt_dtype_size(v->type.dt)), "");
}

/* Where the scan's kernel finds body value v: at its step of a stack when
 * it is stepped in place (slot: this step's pointers by slot), else in the
 * workspace. */
static LLVMValueRef body_ptr(CgKernel *k, const Value *v, LLVMValueRef const *slot) {
  while (v->alias)
    v = v->alias;
  return v->region >= REGION_COUNT ? slot[v->region - REGION_COUNT] : cg_value_ptr(k, v);
}

static void move(CgKernel *k, LLVMValueRef dst, LLVMValueRef src, const Value *v) {
  LLVMBuildMemMove(k->c->b, dst, 1, src, 1, bytes_of(k, v));
}

/* Bytes of one step of stack s (axis a): a row of copy_step. */
static LLVMValueRef step_bytes(CgKernel *k, const Value *s, int a) {
  return LLVMBuildNSWMul(k->c->b, numel(k, &s->type, a + 1, s->type.rank),
                         cg_i64(k->c, rt_dtype_size(s->type.dt)), "row");
}

/* Between step t of sequence `seq` (axis a) and the body's step value at
 * vp: seq[o, t, :] for every o of the axes before a. */
static void copy_step(CgKernel *k, const Value *seq, LLVMValueRef vp, int a, LLVMValueRef t,
                      bool into_seq) {
  CgCtx *c = k->c;
  const Type *st = &seq->type;
  LLVMValueRef outer = numel(k, st, 0, a), steps = cg_size(k, st->dim[a]);
  LLVMValueRef row = step_bytes(k, seq, a);
  LLVMValueRef sp = cg_value_ptr(k, seq);
  CgLoop L;
  LLVMValueRef o = cg_for(k, &L, cg_i64(c, 0), outer, cg_i64(c, 1));
  LLVMValueRef at = LLVMBuildNSWAdd(c->b, LLVMBuildNSWMul(c->b, o, steps, ""), t, "");
  LLVMValueRef s = LLVMBuildGEP2(c->b, c->t_i8, sp, (LLVMValueRef[]){LLVMBuildNSWMul(c->b, at, row, "")}, 1, "");
  LLVMValueRef v = LLVMBuildGEP2(c->b, c->t_i8, vp, (LLVMValueRef[]){LLVMBuildNSWMul(c->b, o, row, "")}, 1, "");
  if (into_seq)
    LLVMBuildMemCpy(c->b, s, 1, v, 1, row);
  else
    LLVMBuildMemCpy(c->b, v, 1, s, 1, row);
  cg_endfor(k, &L);
}

/* The body's constants, from data in the module, into the workspace. */
static void load_consts(CgKernel *k, const Graph *b) {
  CgCtx *c = k->c;
  for (int i = 0; i < b->nvals; i++) {
    const Value *v = b->vals[i];
    int64_t bytes = ir_bytes_max(b, &v->type);
    if (v->role != V_CONST || v->region < 0 || bytes <= 0)
      continue;
    LLVMValueRef init = LLVMConstStringInContext(c->ctx, v->data, (unsigned)bytes, 1);
    LLVMValueRef gv = LLVMAddGlobal(c->mod, LLVMTypeOf(init), "scan.const");
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMBuildMemCpy(c->b, cg_value_ptr(k, v), 1, gv, 1, cg_i64(c, bytes));
  }
}

/* Whether the body reads v (a reverse scan's body may not read a step it
 * was given: its forward saved what it needed instead, passes/scan_grad.c). */
static bool body_reads(const Graph *b, const Value *v) {
  for (int i = 0; i < b->nnodes; i++)
    for (int j = 0; j < b->nodes[i]->nin; j++)
      if (b->nodes[i]->in[j] == v)
        return true;
  for (int i = 0; i < b->noutputs; i++)
    if (b->outputs[i] == v)
      return true;
  return false;
}

/* The stack of slot k: sequence k, or emitted output k - nseq. */
static const Value *slot_stack(const Node *n, int slot) {
  int nseq = n->attr.nseq;
  return slot < nseq ? n->in[slot] : n->out[n->attr.ncarry + slot - nseq];
}

static bool stepped_in_place(const Node *n, int slot) {
  const Graph *b = n->body;
  const Value *v = slot < n->attr.nseq ? b->inputs[slot] : b->outputs[n->attr.ncarry + slot - n->attr.nseq];
  while (v->alias)
    v = v->alias;
  return v->region == REGION_COUNT + slot;
}

/* The body's regions: the kernel's, then one slot per sequence and
 * emitted output (those stepped in place are set at each step). */
static LLVMValueRef body_regions(CgKernel *k, int nslots) {
  CgCtx *c = k->c;
  LLVMValueRef regs = LLVMBuildArrayAlloca(c->b, c->t_ptr, cg_i64(c, REGION_COUNT + nslots), "regions");
  for (int r = 0; r < REGION_COUNT; r++) {
    LLVMValueRef from = LLVMBuildGEP2(c->b, c->t_ptr, k->regions, (LLVMValueRef[]){cg_i64(c, r)}, 1, "");
    LLVMValueRef to = LLVMBuildGEP2(c->b, c->t_ptr, regs, (LLVMValueRef[]){cg_i64(c, r)}, 1, "");
    LLVMBuildStore(c->b, LLVMBuildLoad2(c->b, c->t_ptr, from, ""), to);
  }
  return regs;
}

/* Points the slots stepped in place at step t of their stacks. */
static void set_slots(CgKernel *k, LLVMValueRef regs, LLVMValueRef t, LLVMValueRef *slot) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  int nslots = n->attr.nseq + ir_scan_nemit(n);
  for (int j = 0; j < nslots; j++) {
    if (!stepped_in_place(n, j))
      continue;
    const Value *s = slot_stack(n, j);
    LLVMValueRef off = LLVMBuildNSWMul(c->b, t, step_bytes(k, s, n->attr.axis), "");
    slot[j] = LLVMBuildGEP2(c->b, c->t_i8, cg_value_ptr(k, s), &off, 1, "");
    LLVMBuildStore(c->b, slot[j],
                   LLVMBuildGEP2(c->b, c->t_ptr, regs, (LLVMValueRef[]){cg_i64(c, REGION_COUNT + j)}, 1, ""));
  }
}

static void step(CgKernel *k, LLVMValueRef body, LLVMValueRef regs, LLVMValueRef t) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  const Graph *b = n->body;
  int nseq = n->attr.nseq, nc = n->attr.ncarry, a = n->attr.axis;
  LLVMValueRef slot[nseq + ir_scan_nemit(n) + 1];
  set_slots(k, regs, t, slot);
  for (int j = 0; j < nseq; j++)
    if (!stepped_in_place(n, j) && body_reads(b, b->inputs[j]))
      copy_step(k, n->in[j], body_ptr(k, b->inputs[j], slot), a, t, false);
  LLVMValueRef args[] = {regs, k->batch, k->nthreads};
  LLVMBuildCall2(c->b, LLVMGlobalGetValueType(body), body, args, 3, "");
  for (int e = nc; e < n->nout; e++)
    if (!stepped_in_place(n, nseq + e - nc))
      copy_step(k, n->out[e], body_ptr(k, b->outputs[e], slot), a, t, true);
  for (int i = 0; i < nc; i++)
    move(k, body_ptr(k, b->inputs[nseq + i], slot), body_ptr(k, b->outputs[i], slot), b->outputs[i]);
}

int cg_scan_kernel(CgKernel *k, const char *name, char *err, int errlen) {
  CgCtx *c = k->c;
  const Node *n = k->n;
  char bname[160];
  size_t len;
  (void)name;     /* the function's own name is unique in the module, even for nested scans */
  snprintf(bname, sizeof bname, "%s.body", LLVMGetValueName2(k->fn, &len));
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  if (cg_build_graph(c, n->body, bname, err, errlen))
    return -1;
  LLVMValueRef body = LLVMGetNamedFunction(c->mod, bname);
  LLVMSetLinkage(body, LLVMInternalLinkage);
  /* the body loads its regions as invariant: inlined into the loop, which
   * changes the slots at every step, those loads could be hoisted */
  LLVMAddAttributeAtIndex(body, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0));
  LLVMPositionBuilderAtEnd(c->b, here);
  int nseq = n->attr.nseq, nc = n->attr.ncarry;
  load_consts(k, n->body);
  LLVMValueRef regs = body_regions(k, nseq + ir_scan_nemit(n));
  for (int i = 0; i < nc; i++)
    move(k, cg_value_ptr(k, n->body->inputs[nseq + i]), cg_value_ptr(k, n->in[nseq + i]), n->in[nseq + i]);
  LLVMValueRef steps = cg_size(k, n->attr.steps);
  CgLoop L;
  LLVMValueRef s = cg_for(k, &L, cg_i64(c, 0), steps, cg_i64(c, 1));
  LLVMValueRef t = n->attr.reverse
                       ? LLVMBuildNSWSub(c->b, LLVMBuildNSWSub(c->b, steps, cg_i64(c, 1), ""), s, "t")
                       : s;
  step(k, body, regs, t);
  cg_endfor(k, &L);
  for (int i = 0; i < nc; i++)
    move(k, cg_value_ptr(k, n->out[i]), cg_value_ptr(k, n->body->inputs[nseq + i]), n->out[i]);
  return 0;
}

/* The readable text form of a graph (--emit=ir) and Graphviz (--emit=dot).
 *
 *   graph digits(%x: f32[N, 1, 8, 8]) -> (%logits)
 *     param conv0.weight: f32[16, 1, 3, 3] = he_normal
 *     %5: f32[N, 16, 8, 8] = conv2d(%x, %conv0.weight) k=[3, 3] pad=[1, 1, 1, 1]
 */
#include "ir/ir.h"

const char *ir_value_str(const Value *v, char *buf, int len) {
  if (v->role == V_CONST && v->type.rank == 0 && v->data && v->type.dt == RT_F32)
    snprintf(buf, len, "%g", *(float *)v->data);
  else if (v->role == V_CONST && v->type.rank == 0 && v->data && v->type.dt == RT_F64)
    snprintf(buf, len, "%g", *(double *)v->data);
  else if (v->name && (v->role != V_TEMP || v->is_output))
    snprintf(buf, len, "%%%s", v->name);
  else
    snprintf(buf, len, "%%%d", v->id);
  return buf;
}

#define VS(v) ir_value_str((v), (char[128]){0}, 128)
#define TS(t) ir_type_str(g, (t), (char[160]){0}, 160)

static const char *init_name(InitKind k) {
  static const char *names[] = {"none", "zeros", "ones", "const", "uniform", "normal",
                                "he_uniform", "he_normal", "xavier_uniform",
                                "xavier_normal", "orthogonal"};
  return names[k];
}

static void print_ints(FILE *out, const char *key, const int *v, int n) {
  fprintf(out, " %s=[", key);
  for (int i = 0; i < n; i++)
    fprintf(out, "%s%d", i ? ", " : "", v[i]);
  fputc(']', out);
}

static void print_attrs(const Graph *g, const Node *n, FILE *out) {
  int a = ir_ops[n->op].attrs;
  const Attr *t = &n->attr;
  if (a & A_AXIS)
    fprintf(out, " axis=%d", t->axis);
  if (a & A_AXES) {
    fprintf(out, " axes=[");
    for (int i = 0, first = 1; i < IR_MAX_RANK; i++)
      if (t->axes & (1u << i)) {
        fprintf(out, "%s%d", first ? "" : ", ", i);
        first = 0;
      }
    fputc(']', out);
  }
  if ((a & A_KEEPDIM) && t->keepdim)
    fprintf(out, " keepdim");
  if (a & A_EPS)
    fprintf(out, " eps=%g", t->eps);
  if (a & A_ALPHA)
    fprintf(out, " alpha=%g", t->alpha);
  if (a & A_PERM)
    print_ints(out, "perm", t->perm, n->in[0]->type.rank > 0 ? n->in[0]->type.rank : 0);
  if (a & A_TRANS)
    fprintf(out, "%s%s", t->trans_a ? " trans_a" : "", t->trans_b ? " trans_b" : "");
  if ((a & A_TRANS) && t->packed_n)
    fprintf(out, " packed_n=%lld", (long long)t->packed_n);
  if (a & A_WINDOW) {
    print_ints(out, "k", t->k, 2);
    print_ints(out, "stride", t->stride, 2);
    print_ints(out, "pad", t->pad, 4);
    if (t->dil[0] != 1 || t->dil[1] != 1)
      print_ints(out, "dil", t->dil, 2);
  }
  if ((a & A_GROUPS) && t->groups != 1)
    fprintf(out, " groups=%d", t->groups);
  if ((a & A_CEIL) && t->ceil_mode)
    fprintf(out, " ceil_mode");
  if ((a & A_INCPAD) && t->count_include_pad)
    fprintf(out, " count_include_pad");
  if (a & A_DTYPE)
    fprintf(out, " to=%s", rt_dtype_name(t->dtype));
  if (a & A_SLICE) {
    int r = n->op == OP_slice ? n->in[0]->type.rank : t->rank;
    fprintf(out, " start=[");
    for (int i = 0; i < r; i++)
      fprintf(out, "%s%lld", i ? ", " : "", (long long)t->start[i]);
    fprintf(out, "] step=[");
    for (int i = 0; i < r; i++)
      fprintf(out, "%s%lld", i ? ", " : "", (long long)t->step[i]);
    fputc(']', out);
  }
  if (a & A_SCAN) {
    char sb[64];
    sz_print(sb, sizeof sb, t->steps, g->svars);
    fprintf(out, " seqs=%d carries=%d steps=%s%s", t->nseq, t->ncarry, sb,
            t->reverse ? " reverse" : "");
  }
}

static void print_node(const Graph *g, const Node *n, FILE *out) {
  fprintf(out, "  ");
  for (int i = 0; i < n->nout; i++)
    fprintf(out, "%s%s: %s", i ? ", " : "", VS(n->out[i]), TS(&n->out[i]->type));
  fprintf(out, " = %s(", op_name(n->op));
  for (int i = 0; i < n->nin; i++)
    fprintf(out, "%s%s", i ? ", " : "", VS(n->in[i]));
  fputc(')', out);
  print_attrs(g, n, out);
  if (n->group >= 0)
    fprintf(out, "  @k%d", n->group);
  if (n->loc.file)
    fprintf(out, "  # %s:%d:%d", n->loc.file->name, n->loc.line, n->loc.col);
  fputc('\n', out);
}

void ir_print(const Graph *g, FILE *out) {
  fprintf(out, "graph %s(", g->name);
  for (int i = 0; i < g->ninputs; i++)
    fprintf(out, "%s%s: %s", i ? ", " : "", VS(g->inputs[i]), TS(&g->inputs[i]->type));
  fprintf(out, ") -> (");
  for (int i = 0; i < g->noutputs; i++)
    fprintf(out, "%s%s", i ? ", " : "", VS(g->outputs[i]));
  fprintf(out, ")\n");
  for (int i = 0; i < g->nparams; i++) {
    const Value *p = g->params[i];
    fprintf(out, "  %s %s: %s = %s%s\n", p->role == V_PARAM ? "param" : "state", p->name,
            TS(&p->type), init_name(p->init.kind), p->frozen ? " frozen" : "");
  }
  for (int i = 0; i < g->nvals; i++) {   /* tensors the passes computed at compile time */
    const Value *v = g->vals[i];
    if (v->role == V_CONST && v->type.rank > 0)
      fprintf(out, "  const %s: %s\n", VS(v), TS(&v->type));
  }
  for (int i = 0; i < g->nnodes; i++) {
    print_node(g, g->nodes[i], out);
    if (g->nodes[i]->body) {        /* a scan's step, indented under it */
      fprintf(out, "  body ");
      ir_print(g->nodes[i]->body, out);
      fprintf(out, "  end\n");
    }
  }
}

/* Graphviz: values are edges, nodes are boxes; inputs and params are ovals. */
void ir_print_dot(const Graph *g, FILE *out) {
  fprintf(out, "digraph \"%s\" {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n",
          g->name);
  for (int i = 0; i < g->nvals; i++) {
    const Value *v = g->vals[i];
    if (v->role == V_TEMP)
      continue;
    fprintf(out, "  v%d [shape=%s, label=\"%s\\n%s\"];\n", v->id,
            v->role == V_INPUT ? "ellipse" : "note", VS(v), TS(&v->type));
  }
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    fprintf(out, "  n%d [shape=box, label=\"%s\\n%s\"];\n", n->id, op_name(n->op),
            TS(&n->out[0]->type));
    for (int j = 0; j < n->nin; j++) {
      const Value *v = n->in[j];
      if (v->role == V_TEMP)
        fprintf(out, "  n%d -> n%d;\n", v->def->id, n->id);
      else
        fprintf(out, "  v%d -> n%d;\n", v->id, n->id);
    }
  }
  for (int i = 0; i < g->noutputs; i++) {
    const Value *v = g->outputs[i];
    fprintf(out, "  out%d [shape=ellipse, label=\"%s\"];\n", i, v->name ? v->name : "out");
    if (v->def)
      fprintf(out, "  n%d -> out%d;\n", v->def->id, i);
  }
  fprintf(out, "}\n");
}

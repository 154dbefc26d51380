/* The layer library: one row per layer (its name, its builder, its op, its
 * arguments with their kinds and defaults) and the builders that turn a
 * checked call into IR. Lowering matches and checks the arguments against
 * the row before a builder runs, so a builder reads them directly.
 *
 * PyTorch's conventions throughout (DESIGN.md): a dense weight is
 * [out, in] with y = x W^T + b; a conv weight [out, in/groups, kh, kw] on
 * NCHW; pads, pooling and batchnorm as torch.nn, with its parameter and
 * statistic names. Shape mistakes are left to the IR's shape rules, which
 * report at the call naming the op and the shapes; a builder checks only
 * what they cannot see (pad=same with a stride, groups that do not divide
 * the filters). The user's documentation is docs/language.md, "Layers". */
#include "frontend/frontend.h"
#include <assert.h>
#include <math.h>
#include <string.h>

#define TS(c, t) ir_type_str((c)->g, (t), (char[200]){0}, 200)

__attribute__((format(printf, 3, 4)))
static FeVal lfail(FeCall *c, SrcLoc loc, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_error(c->g->diags, loc.file ? loc : c->loc, "%s: %s", c->layer->name, msg);
  return (FeVal){.kind = FE_ERROR};
}

static FeVal result(FeCall *c, Value *v) {
  return (FeVal){.kind = FE_TENSOR, .t = v, .loc = c->loc};
}

/* The index of the layer's argument called name, or -1. */
static int arg_index(const FeLayer *l, const char *name) {
  for (int i = 0; i < FE_MAX_ARGS && l->args[i].name; i++)
    if (!strcmp(l->args[i].name, name))
      return i;
  return -1;
}

static FeVal *arg(FeCall *c, const char *name) {
  int i = arg_index(c->layer, name);
  assert(i >= 0);
  return &c->args[i];
}

static bool given(FeCall *c, const char *name) {
  return arg(c, name)->kind != FE_NONE;
}

static Value *input(FeCall *c) {
  return c->args[0].t;
}

static FeVal *input_list(FeCall *c) {
  return &c->args[0];
}

static int64_t int_value(const FeVal *v) {
  int64_t n = 0;
  sz_is_const(v->i, &n);
  return n;
}

static Init init_of(InitKind k) {
  return (Init){.kind = k};
}

/* ---- argument readers --------------------------------------------------- */

/* An int in [lo, 2^31). */
static bool int_at_least(FeCall *c, const char *name, const FeVal *v, int64_t lo, int *out) {
  int64_t n = int_value(v);
  if (n < lo || n > INT32_MAX) {
    lfail(c, v->loc, "%s must be %s%lld, got %lld", name, lo ? "at least " : "",
          (long long)lo, (long long)n);
    return false;
  }
  *out = (int)n;
  return true;
}

/* The spatial axes a layer works on: 1 for the 1-d layers (conv1d,
 * maxpool1d, ...: x is [N, C, L]), 2 otherwise ([N, C, H, W]). The IR's
 * windows are 2-d: a 1-d layer is the 2-d op on x viewed as [N, C, 1, L]
 * with a window of height 1, so one mechanism serves both. */
static int spatial(const FeCall *c) {
  return strstr(c->layer->name, "1d") ? 1 : 2;
}

/* An int, or a list of one int per spatial axis, into the window's axes:
 * a 1-d layer's value goes to W, leaving H's as the caller set it. */
static bool per_axis(FeCall *c, const char *name, int64_t lo, int out[2]) {
  int sp = spatial(c);
  FeVal *v = arg(c, name);
  if (v->kind == FE_LIST && v->nitems != sp) {
    lfail(c, v->loc, "%s must be an int or a list of %s, got a list of %d", name,
          sp == 2 ? "2 ints (h, w)" : "1 int", v->nitems);
    return false;
  }
  for (int i = 0; i < sp; i++)
    if (!int_at_least(c, name, v->kind == FE_LIST ? &v->items[i] : v, lo, &out[2 - sp + i]))
      return false;
  return true;
}

/* A size argument that, when constant, is positive. */
static bool positive(FeCall *c, const char *name) {
  FeVal *v = arg(c, name);
  int64_t n;
  if (sz_is_const(v->i, &n) && (n < 1 || n > INT32_MAX)) {
    lfail(c, v->loc, "%s must be a positive int, got %lld", name, (long long)n);
    return false;
  }
  return true;
}

/* pad=same: as PyTorch, a total of dilation*(k-1) per axis, the smaller
 * half before. Needs stride 1. */
static bool pad_same(FeCall *c, const FeVal *v, Attr *a) {
  if (a->stride[0] != 1 || a->stride[1] != 1) {
    lfail(c, v->loc, "pad=same needs stride 1, as in PyTorch; give the pads as numbers");
    return false;
  }
  for (int i = 0; i < 2; i++) {
    int64_t total = (int64_t)a->dil[i] * (a->k[i] - 1);
    if (total > INT32_MAX) {
      lfail(c, v->loc, "pad=same needs a padding of %lld, too large", (long long)total);
      return false;
    }
    a->pad[i] = (int)(total / 2);
    a->pad[i + 2] = (int)(total - total / 2);
  }
  return true;
}

/* The item of a pad list for side `side` (0 before, 1 after) of spatial
 * axis ax: an int pads every side; 2 per side items per axis in axis order
 * ([top, bottom, left, right], 1-d [left, right]); a 2-d layer's list of 2
 * is PyTorch's symmetric (h, w). */
static const FeVal *pad_item(const FeVal *v, int sp, int ax, int side) {
  if (v->kind != FE_LIST)
    return v;
  return &v->items[v->nitems == 2 * sp ? 2 * ax + side : ax];
}

/* pad=: an int or a list (pad_item), or where words are allowed
 * (convolutions) same or valid. Into a->pad, the IR's (top, left, bottom,
 * right). */
static bool pads(FeCall *c, Attr *a, bool words) {
  int sp = spatial(c);
  FeVal *v = arg(c, "pad");
  const char *alts = words ? ", same or valid" : "";
  const char *lists = sp == 2 ? "a list of 2 ints (h, w) or of 4 (top, bottom, left, right)"
                              : "a list of 2 ints (left, right)";
  if (v->kind == FE_STR) {
    if (words && !strcmp(v->s, "same"))
      return pad_same(c, v, a);
    if (words && !strcmp(v->s, "valid"))
      return true;
    lfail(c, v->loc, "pad must be an int or %s%s; got \"%s\"", lists, alts, v->s);
    return false;
  }
  int n = v->kind == FE_LIST ? v->nitems : 2 * sp;
  if (n != 2 * sp && n != sp) {
    lfail(c, v->loc, "pad must be an int or %s%s; got a list of %d", lists, alts, n);
    return false;
  }
  for (int ax = 0; ax < sp; ax++)
    for (int side = 0; side < 2; side++)
      if (!int_at_least(c, "pad", pad_item(v, sp, ax, side), 0, &a->pad[2 - sp + ax + 2 * side]))
        return false;
  return true;
}

/* The window of a convolution or pooling layer into a: k, stride (its
 * default, when the layer has none, is k: pooling, as PyTorch), dilation
 * and groups where the layer has them. */
static bool window(FeCall *c, Attr *a) {
  *a = ir_attr();
  bool ok = per_axis(c, "k", 1, a->k) &&
            per_axis(c, given(c, "stride") ? "stride" : "k", 1, a->stride);
  if (ok && arg_index(c->layer, "dilation") >= 0)
    ok = per_axis(c, "dilation", 1, a->dil);
  if (ok && arg_index(c->layer, "groups") >= 0)
    ok = int_at_least(c, "groups", arg(c, "groups"), 1, &a->groups);
  return ok;
}

/* ---- building blocks ---------------------------------------------------- */

static Value *reshape(FeCall *c, Value *x, int rank, const Size *dims) {
  Attr a = ir_attr();
  a.rank = rank;
  memcpy(a.shape, dims, (size_t)rank * sizeof *dims);
  return ir_op(c->g, OP_reshape, &x, 1, &a, c->loc);
}

/* The layer's weight, initialised by init= if given, else by the
 * activation its output feeds: lowering decides once the model is built
 * (He for relu, Xavier otherwise), so until then it is Xavier. */
static Value *weight(FeCall *c, Type t) {
  FeVal *v = arg(c, "init");
  Init init = v->kind == FE_INIT ? v->init : (Init){.kind = INIT_XAVIER_UNIFORM, .a = 1};
  Value *w = fe_param(c, "weight", t, init);
  if (v->kind != FE_INIT)
    c->auto_init = w;
  return w;
}

/* A per-channel vector of the layer: a bias, a scale, a statistic. */
static Value *vector(FeCall *c, const char *name, Size n, RtDType dt, InitKind k, Role role) {
  Type t = ir_type(dt, 1, &n);
  return role == V_PARAM ? fe_param(c, name, t, init_of(k)) : fe_state(c, name, t, init_of(k));
}

static Size numel(const Type *t, int from, int to) {
  Size s = sz_const(1);
  for (int i = from; i < to; i++)
    s = sz_mul(s, t->dim[i]);
  return s;
}

/* ---- layers -------------------------------------------------------------- */

/* dense(x, units): x[..., in] @ weight[units, in]^T + bias[units]. An x of
 * rank above 2 is folded to [rows, in] so the product is one GEMM. */
static FeVal build_dense(FeCall *c) {
  Value *x = input(c);
  Type xt = x->type;
  Size units = arg(c, "units")->i;
  if (!positive(c, "units"))
    return (FeVal){.kind = FE_ERROR};
  if (xt.rank < 2)
    return lfail(c, c->loc, "expects a tensor of rank 2 or more (the batch first), got %s",
                 TS(c, &xt));
  int r = xt.rank;
  Size in = xt.dim[r - 1];
  Value *w = weight(c, ir_type(xt.dt, 2, (Size[]){units, in}));
  Value *y = r > 2 ? reshape(c, x, 2, (Size[]){numel(&xt, 0, r - 1), in}) : x;
  Attr a = ir_attr();
  a.trans_b = true;
  y = ir_op(c->g, OP_matmul, (Value *[]){y, w}, 2, &a, c->loc);
  if (arg(c, "bias")->b)
    y = ir_op2(c->g, OP_add, y, vector(c, "bias", units, xt.dt, INIT_ZEROS, V_PARAM), c->loc);
  if (r > 2) {
    xt.dim[r - 1] = units;
    y = reshape(c, y, r, xt.dim);
  }
  return result(c, y);
}

/* Channels per group of a grouped convolution (the weight's dim 1). */
static bool group_channels(FeCall *c, Size channels, int groups, Size *out) {
  int64_t f;
  *out = channels;
  if (groups == 1)
    return true;
  if (sz_is_const(arg(c, "filters")->i, &f) && f % groups) {
    lfail(c, c->loc, "filters (%lld) must be divisible by groups (%d)", (long long)f, groups);
    return false;
  }
  *out = sz_div(channels, sz_const(groups));
  if (out->bad || !sz_eq(sz_mul(*out, sz_const(groups)), channels)) {
    char buf[64];
    sz_print(buf, sizeof buf, channels, c->g->svars);
    lfail(c, c->loc, "%s input channels do not split into %d groups", buf, groups);
    return false;
  }
  return true;
}

/* x with a unit axis inserted at 2 (1-d layers: [N, C, L] as [N, C, 1, L],
 * a weight [O, C, k] as [O, C, 1, k]); as is for 2-d layers. */
static Value *as_2d(FeCall *c, Value *x) {
  const Type *t = &x->type;
  if (spatial(c) == 2)
    return x;
  return reshape(c, x, 4, (Size[]){t->dim[0], t->dim[1], sz_const(1), t->dim[2]});
}

/* The inverse of as_2d on a 2-d op's result. */
static Value *from_2d(FeCall *c, Value *y) {
  const Type *t = &y->type;
  if (spatial(c) == 2 || !ir_type_known(t))
    return y;
  return reshape(c, y, 3, (Size[]){t->dim[0], t->dim[1], t->dim[3]});
}

/* x must be [N, C, L] for a 1-d layer (a 2-d layer's op says what it
 * expects itself). */
static bool spatial_input(FeCall *c, const Type *xt) {
  if (spatial(c) == 2 || (xt->rank == 3 && ir_is_float(xt->dt)))
    return true;
  lfail(c, c->loc, "expects f32[N, C, L], got %s", TS(c, xt));
  return false;
}

/* A convolution weight [d0, d1, k...] of the layer's spatial rank. */
static Type conv_weight_type(FeCall *c, RtDType dt, Size d0, Size d1, const Attr *a) {
  int sp = spatial(c);
  Size dims[4] = {d0, d1, sz_const(a->k[2 - sp]), sz_const(a->k[1])};
  return ir_type(dt, 2 + sp, dims);
}

/* y + bias[filters] seen as [filters, 1, 1], on the 2-d op's result (so that
 * fusion can make it the GEMM's epilogue). */
static Value *conv_bias(FeCall *c, Value *y, Size filters) {
  if (!arg(c, "bias")->b)
    return y;
  Value *b = vector(c, "bias", filters, y->type.dt, INIT_ZEROS, V_PARAM);
  return ir_op2(c->g, OP_add, y, reshape(c, b, 3, (Size[]){filters, sz_const(1), sz_const(1)}),
                c->loc);
}

/* conv1d(x[N, C, L]) and conv2d(x[N, C, H, W]), filters, k: weight
 * [filters, C/groups, k...] (PyTorch's), the op conv2d, then the bias. */
static FeVal build_conv(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  Size filters = arg(c, "filters")->i, cg;
  Attr a;
  if (!positive(c, "filters") || !window(c, &a) || !pads(c, &a, true) || !spatial_input(c, xt))
    return (FeVal){.kind = FE_ERROR};
  /* on another rank the op reports "conv2d expects f32[N, C, H, W], got ..." */
  if (!group_channels(c, xt->rank >= 2 ? xt->dim[1] : sz_const(a.groups), a.groups, &cg))
    return (FeVal){.kind = FE_ERROR};
  Value *w = weight(c, conv_weight_type(c, xt->dt, filters, cg, &a));
  Value *y = ir_op(c->g, OP_conv2d, (Value *[]){as_2d(c, x), as_2d(c, w)}, 2, &a, c->loc);
  return result(c, from_2d(c, conv_bias(c, y, filters)));
}

/* The output extent of a transposed convolution along window axis i of a,
 * as PyTorch: (in - 1) stride - pads + dilation (k - 1) + output_padding + 1. */
static Size transposed_extent(Size in, const Attr *a, int i, int out_pad) {
  int64_t rest = -(int64_t)a->pad[i] - a->pad[i + 2] + (int64_t)a->dil[i] * (a->k[i] - 1) + out_pad + 1;
  return sz_add(sz_mul(sz_sub(in, sz_const(1)), sz_const(a->stride[i])), sz_const(rest));
}

/* output_padding, each below the stride or the dilation of its axis, as
 * PyTorch requires. */
static bool output_padding(FeCall *c, const Attr *a, int op[2]) {
  op[0] = op[1] = 0;
  if (!per_axis(c, "output_padding", 0, op))
    return false;
  for (int i = 0; i < 2; i++)
    if (op[i] >= a->stride[i] && op[i] >= a->dil[i]) {
      lfail(c, arg(c, "output_padding")->loc, "output_padding (%d) must be smaller than the "
            "stride (%d) or the dilation (%d), as in PyTorch", op[i], a->stride[i], a->dil[i]);
      return false;
    }
  return true;
}

/* The [N, filters, H', W'] output of a transposed convolution over x (2-d
 * form) into a->shape; output_padding becomes a negative end pad of the
 * convolution it transposes. */
static bool transposed_shape(FeCall *c, const Type *xt, Size filters, const int op[2], Attr *a) {
  int sp = spatial(c);
  a->rank = 4;
  a->shape[0] = xt->dim[0];
  a->shape[1] = filters;
  for (int i = 0; i < 2; i++) {
    Size in = i < 2 - sp ? sz_const(1) : xt->dim[i + sp];
    a->shape[2 + i] = transposed_extent(in, a, i, op[i]);
    int64_t n;
    if (sz_is_const(a->shape[2 + i], &n) && n < 1) {
      lfail(c, c->loc, "the output would have %lld elements along axis %d of %s", (long long)n,
            i + sp, TS(c, xt));
      return false;
    }
    a->pad[i + 2] -= op[i];
  }
  return true;
}

/* conv_transpose1d and conv_transpose2d: the adjoint of a convolution,
 * conv2d_bwd_data as a forward op. Weight [C, filters/groups, k...]
 * (PyTorch's, and conv2d's layout for the convolution from the output back
 * to x), then the bias. */
static FeVal build_conv_transpose(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  int sp = spatial(c), op[2];
  Size filters = arg(c, "filters")->i, fg, cg;
  Attr a;
  if (!positive(c, "filters") || !window(c, &a) || !pads(c, &a, false) ||
      !output_padding(c, &a, op))
    return (FeVal){.kind = FE_ERROR};
  if (xt->rank != 2 + sp || !ir_is_float(xt->dt))
    return lfail(c, c->loc, "expects f32[N, C, %s], got %s", sp == 2 ? "H, W" : "L", TS(c, xt));
  if (!group_channels(c, filters, a.groups, &fg) || !group_channels(c, xt->dim[1], a.groups, &cg) ||
      !transposed_shape(c, xt, filters, op, &a))
    return (FeVal){.kind = FE_ERROR};
  Value *w = weight(c, conv_weight_type(c, xt->dt, xt->dim[1], fg, &a));
  Value *y = ir_op(c->g, OP_conv2d_bwd_data, (Value *[]){as_2d(c, x), as_2d(c, w)}, 2, &a, c->loc);
  return result(c, from_2d(c, conv_bias(c, y, filters)));
}

/* maxpool and avgpool, 1-d and 2-d: the stride defaults to the kernel, as
 * in PyTorch. */
static FeVal build_pool(FeCall *c) {
  Attr a;
  if (!window(c, &a) || !pads(c, &a, false) || !spatial_input(c, &input(c)->type))
    return (FeVal){.kind = FE_ERROR};
  a.ceil_mode = arg(c, "ceil_mode")->b;
  if (arg_index(c->layer, "count_include_pad") >= 0)
    a.count_include_pad = arg(c, "count_include_pad")->b;
  return result(c, from_2d(c, ir_op(c->g, c->layer->op, (Value *[]){as_2d(c, input(c))}, 1, &a, c->loc)));
}

/* adaptive_avgpool1d/2d(x, size): PyTorch's adaptive average pooling to
 * size outputs per axis, for extents that size divides (size 1 included:
 * the global mean, kept as [N, C, 1, 1]); then the windows are equal,
 * k = stride = extent / size, and the layer is an avgpool. */
static FeVal build_adaptive_avgpool(FeCall *c) {
  const Type *xt = &input(c)->type;
  int sp = spatial(c), size[2] = {1, 1};
  if (!per_axis(c, "size", 1, size) || !spatial_input(c, xt))
    return (FeVal){.kind = FE_ERROR};
  if (xt->rank != 4 && sp == 2)
    return lfail(c, c->loc, "expects %s[N, C, H, W], got %s", rt_dtype_name(xt->dt), TS(c, xt));
  Attr a = ir_attr();
  for (int i = 2 - sp; i < 2; i++) {
    int64_t n;
    if (!sz_is_const(xt->dim[i + sp], &n) || n % size[i])
      return lfail(c, c->loc, "needs each extent of %s to be a multiple of the output size %d "
                   "(windows of equal size)", TS(c, xt), size[i]);
    a.k[i] = a.stride[i] = (int)(n / size[i]);
  }
  return result(c, from_2d(c, ir_op(c->g, OP_avgpool2d, (Value *[]){as_2d(c, input(c))}, 1, &a, c->loc)));
}

/* global_avgpool and global_maxpool(x[N, C, ...]) -> [N, C]: the mean or
 * max over every axis after the channels (L, or H and W). */
static FeVal build_global_pool(FeCall *c) {
  const Type *xt = &input(c)->type;
  if (xt->rank < 3)
    return lfail(c, c->loc, "expects %s[N, C, H, W] or [N, C, L], got %s", rt_dtype_name(xt->dt),
                 TS(c, xt));
  Attr a = ir_attr();
  a.axes = (uint32_t)((1u << xt->rank) - 1) & ~3u;
  return result(c, ir_op(c->g, c->layer->op, (Value *[]){input(c)}, 1, &a, c->loc));
}

/* flatten(x, start=1): the dims from start on become one. */
static FeVal build_flatten(FeCall *c) {
  const Type *xt = &input(c)->type;
  int64_t start = int_value(arg(c, "start"));
  int s = (int)(start < 0 ? start + xt->rank : start);
  if (start < -xt->rank || start >= xt->rank)
    return lfail(c, arg(c, "start")->loc, "start %lld is out of range for %s",
                 (long long)start, TS(c, xt));
  Size dims[IR_MAX_RANK];
  memcpy(dims, xt->dim, (size_t)s * sizeof *dims);
  dims[s] = numel(xt, s, xt->rank);
  return result(c, reshape(c, input(c), s + 1, dims));
}

/* reshape(x, [dims]): one dim may be -1, solved from the element count. */
static FeVal build_reshape(FeCall *c) {
  const Type *xt = &input(c)->type;
  FeVal *sh = arg(c, "shape");
  Size dims[IR_MAX_RANK], known = sz_const(1);
  int infer = -1;
  if (sh->nitems > IR_MAX_RANK)
    return lfail(c, sh->loc, "a tensor has at most %d dims, got %d", IR_MAX_RANK, sh->nitems);
  for (int i = 0; i < sh->nitems; i++) {
    int64_t n;
    dims[i] = sh->items[i].i;
    bool cst = sz_is_const(dims[i], &n);
    if (cst && n == -1 && infer < 0)
      infer = i;
    else if (cst && n < 0)
      return lfail(c, sh->items[i].loc, "dims are sizes or one -1, got %lld", (long long)n);
    else
      known = sz_mul(known, dims[i]);
  }
  if (infer >= 0) {
    Size total = numel(xt, 0, xt->rank), q = sz_div(total, known);
    if (q.bad || !sz_eq(sz_mul(q, known), total))
      return lfail(c, sh->loc, "cannot solve the -1: %s does not split into dims of %s", TS(c, xt),
                   ir_type_str(c->g, &(Type){xt->dt, 1, .dim = {known}}, (char[120]){0}, 120));
    dims[infer] = q;
  }
  return result(c, reshape(c, input(c), sh->nitems, dims));
}

static bool training(const FeCall *c) {
  return c->mode && c->mode->training;
}

/* n / (n - 1) for the n values per channel of x (every axis but ax): a
 * constant when the dims are, else computed at run time from a tensor of
 * ones, since the batch is a run-time argument. */
static Value *unbias_factor(FeCall *c, const Type *xt, int ax, bool *ok) {
  Type per = *xt;
  per.dim[ax] = sz_const(1);
  Size n = numel(&per, 0, per.rank);
  int64_t k;
  *ok = true;
  if (sz_is_const(n, &k)) {
    if (k < 2)
      lfail(c, c->loc, "training needs more than one value per channel, got %s", TS(c, xt));
    *ok = k >= 2;
    return ir_scalar(c->g, xt->dt, k >= 2 ? (double)k / (double)(k - 1) : 1);
  }
  Attr a = ir_attr();
  a.rank = per.rank;
  memcpy(a.shape, per.dim, sizeof a.shape);
  Value *ones = ir_op(c->g, OP_expand, (Value *[]){ir_scalar(c->g, xt->dt, 1)}, 1, &a, c->loc);
  Attr all = ir_attr();
  all.axes = (1u << per.rank) - 1;
  Value *cnt = ir_op(c->g, OP_sum, &ones, 1, &all, c->loc);
  Value *less = ir_op2(c->g, OP_sub, cnt, ir_scalar(c->g, xt->dt, 1), c->loc);
  return ir_op2(c->g, OP_div, cnt, less, c->loc);
}

/* running = (1 - momentum) * running + momentum * batch, in place. */
static void track(FeCall *c, Value *running, Value *batch, double momentum) {
  RtDType dt = running->type.dt;
  Value *keep = ir_op2(c->g, OP_mul, running, ir_scalar(c->g, dt, 1 - momentum), c->loc);
  Value *move = ir_op2(c->g, OP_mul, batch, ir_scalar(c->g, dt, momentum), c->loc);
  ir_op2(c->g, OP_add, keep, move, c->loc)->updates = running;
}

/* Training, as torch.nn.BatchNorm: the statistics of the batch over every
 * axis but the channel's normalise (the biased variance), and the running
 * ones move toward them by momentum (the variance unbiased). Both are
 * computed in the graph, so autodiff differentiates through them. */
static void batch_stats(FeCall *c, Value **in, int ax, double momentum) {
  Value *running_mean = in[3], *running_var = in[4];
  Value *x = in[0];
  const Type *xt = &x->type;
  Attr a = ir_attr();
  a.axes = (uint32_t)((1u << xt->rank) - 1) & ~(1u << ax);
  a.keepdim = true;
  bool ok;
  Value *factor = unbias_factor(c, xt, ax, &ok);
  Value *mean = ir_op(c->g, OP_mean, &x, 1, &a, c->loc);
  Value *xc = ir_op2(c->g, OP_sub, x, mean, c->loc);
  Value *sq = ir_op2(c->g, OP_mul, xc, xc, c->loc);
  Value *var = ir_op(c->g, OP_mean, &sq, 1, &a, c->loc);
  Size ch = xt->dim[ax];
  in[3] = reshape(c, mean, 1, &ch);
  in[4] = reshape(c, var, 1, &ch);
  if (!ok)
    return;
  Value *unbiased = ir_op2(c->g, OP_mul, in[4], factor, c->loc);
  track(c, running_mean, in[3], momentum);
  track(c, running_var, unbiased, momentum);
}

/* batchnorm(x): weight (ones) and bias (zeros) parameters, running_mean
 * (zeros) and running_var (ones) state, one of each per channel. In a
 * training step the batch's statistics replace the running ones, unless the
 * weight is frozen: a frozen layer normalises as at inference. */
static FeVal build_batchnorm(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  Attr a = ir_attr();
  a.eps = arg(c, "eps")->f;
  double momentum = arg(c, "momentum")->f;
  if (!(a.eps >= 0) || !(momentum >= 0 && momentum <= 1))
    return lfail(c, c->loc, "eps must be at least 0 and momentum within [0, 1], got %g and %g",
                 a.eps, momentum);
  a.axis = (int)int_value(arg(c, "axis"));
  int ax = ir_norm_axis(a.axis, xt->rank);   /* out of range: the op reports */
  Size ch = ax >= 0 ? xt->dim[ax] : sz_const(1);
  Value *in[5] = {x, vector(c, "weight", ch, xt->dt, INIT_ONES, V_PARAM),
                  vector(c, "bias", ch, xt->dt, INIT_ZEROS, V_PARAM),
                  vector(c, "running_mean", ch, xt->dt, INIT_ZEROS, V_STATE),
                  vector(c, "running_var", ch, xt->dt, INIT_ONES, V_STATE)};
  if (training(c) && !in[1]->frozen && ax >= 0 && xt->rank >= 2 && ir_is_float(xt->dt))
    batch_stats(c, in, ax, momentum);
  return result(c, ir_op(c->g, OP_batchnorm, in, 5, &a, c->loc));
}

/* A layer built from ops of other names (selu from elu, swish from silu)
 * checks the dtype itself, so that the error names the layer. */
static bool float_input(FeCall *c) {
  if (ir_is_float(input(c)->type.dt))
    return true;
  lfail(c, c->loc, "expects a floating-point tensor, got %s", TS(c, &input(c)->type));
  return false;
}

static FeVal build_unary(FeCall *c) {
  if (strcmp(c->layer->name, op_name(c->layer->op)) && !float_input(c))
    return (FeVal){.kind = FE_ERROR};
  return result(c, ir_op1(c->g, c->layer->op, input(c), c->loc));
}

/* An axis argument in range for x's rank, made non-negative. */
static bool axis_of(FeCall *c, const FeVal *v, int *out) {
  int64_t n = int_value(v);
  const Type *xt = &input(c)->type;
  *out = n < -xt->rank || n >= xt->rank ? -1 : ir_norm_axis((int)n, xt->rank);
  if (*out < 0)
    lfail(c, v->loc, "axis %lld is out of range for %s", (long long)n, TS(c, xt));
  return *out >= 0;
}

/* softmax and log_softmax along one axis. */
static FeVal build_softmax(FeCall *c) {
  Attr a = ir_attr();
  if (!axis_of(c, arg(c, "axis"), &a.axis))
    return (FeVal){.kind = FE_ERROR};
  return result(c, ir_op(c->g, c->layer->op, (Value *[]){input(c)}, 1, &a, c->loc));
}

/* A number operand as a scalar of the other operand's dtype. */
static Value *operand(FeCall *c, const FeVal *v, RtDType dt) {
  if (v->kind == FE_TENSOR)
    return v->t;
  return ir_scalar(c->g, dt, v->kind == FE_FLOAT ? v->f : (double)int_value(v));
}

/* maximum, minimum, matmul: two operands, numbers broadcast as scalars. */
static FeVal build_binary(FeCall *c) {
  const FeVal *a = &c->args[0], *b = &c->args[1];
  if (a->kind != FE_TENSOR && b->kind != FE_TENSOR)
    return lfail(c, c->loc, "needs at least one tensor operand");
  RtDType dt = (a->kind == FE_TENSOR ? a : b)->t->type.dt;
  Value *in[2] = {operand(c, a, dt), operand(c, b, dt)};
  Attr at = ir_attr();
  return result(c, ir_op(c->g, c->layer->op, in, 2, &at, c->loc));
}

/* transpose(x, perm=[...]); without perm, the last two axes swap (x.T). */
static FeVal build_transpose(FeCall *c) {
  const Type *xt = &input(c)->type;
  FeVal *p = arg(c, "perm");
  Attr a = ir_attr();
  if (p->kind == FE_NONE) {
    if (xt->rank < 2)
      return lfail(c, c->loc, "needs a tensor of rank 2 or more, got %s", TS(c, xt));
    a.perm[xt->rank - 2] = xt->rank - 1;
    a.perm[xt->rank - 1] = xt->rank - 2;
  } else if (p->kind != FE_LIST || p->nitems != xt->rank) {
    return lfail(c, p->loc, "perm must list each of the %d axes of %s once", xt->rank,
                 TS(c, xt));
  } else {
    for (int i = 0; i < xt->rank; i++) {
      int64_t n = int_value(&p->items[i]);
      a.perm[i] = n < -xt->rank || n >= xt->rank ? -1 : (int)(n < 0 ? n + xt->rank : n);
    }
  }
  return result(c, ir_op(c->g, OP_transpose, (Value *[]){input(c)}, 1, &a, c->loc));
}

/* sum, mean, max, min over axis=, axes=[...], or every axis. */
static FeVal build_reduce(FeCall *c) {
  const Type *xt = &input(c)->type;
  FeVal *axis = arg(c, "axis"), *axes = arg(c, "axes");
  Attr a = ir_attr();
  a.keepdim = arg(c, "keepdim")->b;
  if (axis->kind != FE_NONE && axes->kind != FE_NONE)
    return lfail(c, axes->loc, "give axis= or axes=, not both");
  FeVal *v = axis->kind != FE_NONE ? axis : axes;
  if (v->kind == FE_NONE)
    a.axes = (uint32_t)((1u << xt->rank) - 1);
  int n = v->kind == FE_LIST ? v->nitems : v->kind == FE_NONE ? 0 : 1;
  for (int i = 0; i < n; i++) {
    int ax;
    if (!axis_of(c, v->kind == FE_LIST ? &v->items[i] : v, &ax))
      return (FeVal){.kind = FE_ERROR};
    a.axes |= 1u << ax;
  }
  return result(c, ir_op(c->g, c->layer->op, (Value *[]){input(c)}, 1, &a, c->loc));
}

static FeVal fail_quiet(void) { return (FeVal){.kind = FE_ERROR}; }

/* x with dropout p in training: inverted dropout (kept values scaled by
 * 1/(1-p)) with a Philox mask of its own stream; x itself at inference. */
static Value *drop(FeCall *c, Value *x, double p) {
  if (!training(c) || p == 0)
    return x;
  Attr a = ir_attr();
  a.alpha = p;
  Value *counter = fe_dropout_counter(c, &a.stream);
  return ir_op(c->g, OP_dropout, (Value *[]){x, counter}, 2, &a, c->loc);
}

/* The probability argument `name` of c, checked to lie in [0, 1). */
static bool probability(FeCall *c, const char *name, double *p) {
  *p = arg(c, name)->f;
  if (p[0] >= 0 && p[0] < 1)
    return true;
  lfail(c, arg(c, name)->loc, "%s must be within [0, 1), got %g", name, *p);
  return false;
}

/* dropout(x, p) */
static FeVal build_dropout(FeCall *c) {
  double p;
  return probability(c, "p", &p) ? result(c, drop(c, input(c), p)) : fail_quiet();
}

/* ---- activations, comparisons and selection ------------------------------ */

static Value *op_alpha(FeCall *c, Op op, Value *x, double alpha) {
  Attr a = ir_attr();
  a.alpha = alpha;
  return ir_op(c->g, op, &x, 1, &a, c->loc);
}

static Value *scale(FeCall *c, Value *x, double k) {
  return k == 1 ? x : ir_op2(c->g, OP_mul, x, ir_scalar(c->g, x->type.dt, k), c->loc);
}

/* leaky_relu(x, negative_slope), elu(x, alpha): the op's alpha. */
static FeVal build_alpha(FeCall *c) {
  return result(c, op_alpha(c, c->layer->op, input(c), c->args[1].f));
}

/* selu = scale * elu(x, alpha) with PyTorch's constants. */
static FeVal build_selu(FeCall *c) {
  const double alpha = 1.6732632423543772848170429916717, lambda = 1.0507009873554804934193349852946;
  if (!float_input(c))
    return fail_quiet();
  return result(c, scale(c, op_alpha(c, OP_elu, input(c), alpha), lambda));
}

/* softplus(x, beta, threshold) = softplus(beta x) / beta, x itself where
 * beta x > threshold. */
static FeVal build_softplus(FeCall *c) {
  double beta = arg(c, "beta")->f;
  if (!(beta > 0))
    return lfail(c, arg(c, "beta")->loc, "beta must be positive, got %g", beta);
  if (!float_input(c))
    return fail_quiet();
  Value *y = op_alpha(c, OP_softplus, scale(c, input(c), beta), arg(c, "threshold")->f);
  return result(c, scale(c, y, 1 / beta));
}

/* gelu(x, approximate="none" | "tanh") */
static FeVal build_gelu(FeCall *c) {
  FeVal *v = arg(c, "approximate");
  bool tanh_form = !strcmp(v->s, "tanh");
  if (!tanh_form && strcmp(v->s, "none"))
    return lfail(c, v->loc, "approximate must be \"none\" or \"tanh\", got \"%s\"", v->s);
  return result(c, ir_op1(c->g, tanh_form ? OP_gelu_tanh : OP_gelu, input(c), c->loc));
}

/* where(cond, a, b): a where cond is true, else b; numbers broadcast. */
static FeVal build_where(FeCall *c) {
  const FeVal *a = &c->args[1], *b = &c->args[2];
  RtDType dt = a->kind == FE_TENSOR ? a->t->type.dt
             : b->kind == FE_TENSOR ? b->t->type.dt : RT_F32;
  Value *in[3] = {input(c), operand(c, a, dt), operand(c, b, dt)};
  return result(c, ir_op(c->g, OP_where, in, 3, NULL, c->loc));
}

/* clip(x, min, max): where(x < min, min, where(x > max, max, x)), so the
 * gradient is 1 inside [min, max] bounds included, as torch.clamp. */
static FeVal build_clip(FeCall *c) {
  Value *y = input(c);
  RtDType dt = y->type.dt;
  static const char *const names[2] = {"min", "max"};
  for (int i = 0; i < 2; i++) {
    FeVal *v = arg(c, names[i]);
    if (v->kind == FE_NONE)
      continue;
    Value *bound = operand(c, v, dt);
    Value *out = ir_op2(c->g, i ? OP_gt : OP_lt, y, bound, c->loc);
    y = ir_op(c->g, OP_where, (Value *[]){out, bound, y}, 3, NULL, c->loc);
  }
  if (!given(c, "min") && !given(c, "max"))
    return lfail(c, c->loc, "give min=, max= or both");
  return result(c, y);
}

/* pow(x, exponent): either may be a number. */
static FeVal build_pow(FeCall *c) {
  return build_binary(c);
}

/* ---- reductions to an index -------------------------------------------- */

/* argmax and argmin along an axis (or of the flattened tensor): the first
 * index of the extreme, as PyTorch, i64. Built from the extreme m, then
 * min over where(x == m, index, L) with the indices a constant along the
 * axis. */
static FeVal build_argext(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  FeVal *axis = arg(c, "axis");
  int ax = 0;
  bool keep = arg(c, "keepdim")->b;
  if (axis->kind == FE_NONE) {
    x = reshape(c, x, 1, (Size[]){numel(xt, 0, xt->rank)});
    keep = false;
  } else if (!axis_of(c, axis, &ax)) {
    return fail_quiet();
  }
  int64_t len;
  if (!sz_is_const(x->type.dim[ax], &len))
    return lfail(c, c->loc, "axis %d of %s must be a size known at compile time", ax, TS(c, &x->type));
  int64_t *iota = rt_arena_alloc(c->g->arena, sizeof(int64_t) * (size_t)(len + 1));
  if (!iota)
    return lfail(c, c->loc, "out of memory");
  for (int64_t i = 0; i < len; i++)
    iota[i] = i;
  Size dims[IR_MAX_RANK];
  for (int i = 0; i < x->type.rank - ax; i++)
    dims[i] = sz_const(i ? 1 : len);
  Type it = ir_type(RT_I64, x->type.rank - ax, dims);
  Attr a = ir_attr();
  a.axes = 1u << ax;
  a.keepdim = true;
  Op ext = c->layer->op == OP_max ? OP_max : OP_min;
  Value *m = ir_op(c->g, ext, &x, 1, &a, c->loc);
  Value *hit = ir_op2(c->g, OP_eq, x, m, c->loc);
  Value *idx = ir_op(c->g, OP_where, (Value *[]){hit, ir_const(c->g, it, iota),
                                                 ir_scalar(c->g, RT_I64, (double)len)}, 3, NULL, c->loc);
  a.keepdim = keep;
  return result(c, ir_op(c->g, OP_min, &idx, 1, &a, c->loc));
}

/* ---- normalisation ------------------------------------------------------ */

/* layernorm(x, dims=k): normalised over the last k axes, with the biased
 * variance, then weight (ones) and bias (zeros) of those axes' shape, as
 * torch.nn.LayerNorm(x.shape[-k:]). */
static FeVal build_layernorm(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  int k;
  double eps = arg(c, "eps")->f;
  if (!int_at_least(c, "dims", arg(c, "dims"), 1, &k))
    return fail_quiet();
  if (k > xt->rank || !ir_is_float(xt->dt))
    return lfail(c, arg(c, "dims")->loc.file ? arg(c, "dims")->loc : c->loc,
                 "normalises over the last %d axes of a floating-point tensor, got %s", k,
                 TS(c, xt));
  if (!(eps >= 0))
    return lfail(c, arg(c, "eps")->loc, "eps must be at least 0, got %g", eps);
  Attr a = ir_attr();
  a.axes = (uint32_t)((1u << xt->rank) - (1u << (xt->rank - k)));
  a.keepdim = true;
  Value *mean = ir_op(c->g, OP_mean, &x, 1, &a, c->loc);
  Value *xc = ir_op2(c->g, OP_sub, x, mean, c->loc);
  Value *sq = ir_op2(c->g, OP_mul, xc, xc, c->loc);
  Value *var = ir_op(c->g, OP_mean, &sq, 1, &a, c->loc);
  Value *inv = ir_op1(c->g, OP_rsqrt, ir_op2(c->g, OP_add, var, ir_scalar(c->g, xt->dt, eps), c->loc),
                      c->loc);
  Value *y = ir_op2(c->g, OP_mul, xc, inv, c->loc);
  if (arg(c, "affine")->b) {
    Type pt = ir_type(xt->dt, k, &xt->dim[xt->rank - k]);
    y = ir_op2(c->g, OP_mul, y, fe_param(c, "weight", pt, init_of(INIT_ONES)), c->loc);
    y = ir_op2(c->g, OP_add, y, fe_param(c, "bias", pt, init_of(INIT_ZEROS)), c->loc);
  }
  return result(c, y);
}

/* ---- shapes and data movement -------------------------------------------- */

/* squeeze(x, axis): that axis removed if it has size 1 (else x, as
 * PyTorch); without axis, every axis of size 1. */
static FeVal build_squeeze(FeCall *c) {
  const Type *xt = &input(c)->type;
  FeVal *axis = arg(c, "axis");
  int ax = -1;
  if (axis->kind != FE_NONE && !axis_of(c, axis, &ax))
    return fail_quiet();
  Size dims[IR_MAX_RANK];
  int r = 0;
  for (int i = 0; i < xt->rank; i++) {
    int64_t n;
    bool one = sz_is_const(xt->dim[i], &n) && n == 1;
    if (!(one && (ax < 0 || ax == i)))
      dims[r++] = xt->dim[i];
  }
  return result(c, r == xt->rank ? input(c) : reshape(c, input(c), r, dims));
}

/* unsqueeze(x, axis): a new axis of size 1 at axis (of the result: -1 appends). */
static FeVal build_unsqueeze(FeCall *c) {
  const Type *xt = &input(c)->type;
  FeVal *axis = arg(c, "axis");
  int64_t n = int_value(axis);
  if (n < -(xt->rank + 1) || n > xt->rank || xt->rank >= IR_MAX_RANK)
    return lfail(c, axis->loc, "axis %lld is out of range for a new axis of %s", (long long)n,
                 TS(c, xt));
  int at = (int)(n < 0 ? n + xt->rank + 1 : n);
  Size dims[IR_MAX_RANK];
  for (int i = 0, j = 0; i <= xt->rank; i++)
    dims[i] = i == at ? sz_const(1) : xt->dim[j++];
  return result(c, reshape(c, input(c), xt->rank + 1, dims));
}

/* permute(x, perm): transpose with the permutation required. */
static FeVal build_permute(FeCall *c) {
  return build_transpose(c);
}

/* The part [start, start + len) of x along axis ax, every step-th. */
static Value *take(FeCall *c, Value *x, int ax, int64_t start, int64_t len, int64_t step) {
  Attr a = ir_attr();
  a.rank = x->type.rank;
  memcpy(a.shape, x->type.dim, sizeof a.shape);
  a.shape[ax] = sz_const(len);
  a.start[ax] = start;
  a.step[ax] = step;
  return ir_op(c->g, OP_slice, &x, 1, &a, c->loc);
}

/* The length of axis ax of x, which must be known at compile time. */
static bool const_axis(FeCall *c, Value *x, int ax, int64_t *len) {
  if (sz_is_const(x->type.dim[ax], len))
    return true;
  lfail(c, c->loc, "axis %d of %s must be a size known at compile time", ax, TS(c, &x->type));
  return false;
}

/* slice(x, axis, start, stop, step): Python's rules, as x[start:stop:step]
 * on that axis: negative bounds count from the end, bounds are clamped. */
static FeVal build_slice(FeCall *c) {
  Value *x = input(c);
  int ax;
  int64_t len, step = int_value(arg(c, "step"));
  if (!axis_of(c, arg(c, "axis"), &ax) || !const_axis(c, x, ax, &len))
    return fail_quiet();
  if (step < 1)
    return lfail(c, arg(c, "step")->loc, "step must be positive (as in PyTorch), got %lld",
                 (long long)step);
  int64_t lo = int_value(arg(c, "start")), hi = given(c, "stop") ? int_value(arg(c, "stop")) : len;
  lo = lo < 0 ? lo + len : lo;
  hi = hi < 0 ? hi + len : hi;
  lo = lo < 0 ? 0 : lo > len ? len : lo;
  hi = hi < lo ? lo : hi > len ? len : hi;
  int64_t n = (hi - lo + step - 1) / step;
  return result(c, take(c, x, ax, n ? lo : 0, n, step));
}

/* split(x, parts, axis): parts an int (that many equal parts, as the LSTM
 * gates in DESIGN.md) or a list of sizes (torch.split with sections). */
static FeVal build_split(FeCall *c) {
  Value *x = input(c);
  FeVal *p = arg(c, "parts");
  int ax, n = p->kind == FE_LIST ? p->nitems : (int)int_value(p);
  int64_t len, at = 0, sizes[64];
  if (!axis_of(c, arg(c, "axis"), &ax) || !const_axis(c, x, ax, &len))
    return fail_quiet();
  if (n < 1 || n > 64)
    return lfail(c, p->loc, "parts must be 1 to 64, got %d", n);
  if (p->kind != FE_LIST && len % n)
    return lfail(c, p->loc, "axis %d of %s (%lld) does not split into %d equal parts", ax,
                 TS(c, &x->type), (long long)len, n);
  for (int i = 0; i < n; i++) {
    sizes[i] = p->kind == FE_LIST ? int_value(&p->items[i]) : len / n;
    at += sizes[i];
    if (sizes[i] < 0)
      return lfail(c, p->loc, "part sizes must not be negative");
  }
  if (at != len)
    return lfail(c, p->loc, "%s: the parts add up to %lld, axis %d has %lld", TS(c, &x->type),
                 (long long)at, ax, (long long)len);
  FeVal r = {.kind = FE_TUPLE, .loc = c->loc, .nitems = n};
  r.items = rt_arena_alloc(c->g->arena, sizeof(FeVal) * (size_t)n);
  if (!r.items)
    return lfail(c, c->loc, "out of memory");
  at = 0;
  for (int i = 0; i < n; i++) {
    r.items[i] = result(c, take(c, x, ax, sizes[i] ? at : 0, sizes[i], 1));
    at += sizes[i];
  }
  return r;
}

/* concat([xs], axis) */
static FeVal build_concat(FeCall *c) {
  FeVal *l = input_list(c);
  Value **in = rt_arena_alloc(c->g->arena, sizeof(Value *) * (size_t)(l->nitems + 1));
  if (!in)
    return lfail(c, c->loc, "out of memory");
  if (l->nitems < 1)
    return lfail(c, l->loc, "needs a list of at least one tensor");
  for (int i = 0; i < l->nitems; i++)
    in[i] = l->items[i].t;
  Attr a = ir_attr();
  a.axis = (int)int_value(arg(c, "axis"));
  return result(c, ir_op(c->g, OP_concat, in, l->nitems, &a, c->loc));
}

/* Element at of axis ax repeated k times: a slice of one, expanded. */
static Value *repeat_edge(FeCall *c, Value *x, int ax, int64_t at, int64_t k) {
  Value *edge = take(c, x, ax, at, 1, 1);
  Attr a = ir_attr();
  a.rank = x->type.rank;
  memcpy(a.shape, x->type.dim, sizeof a.shape);
  a.shape[ax] = sz_const(k);
  return ir_op(c->g, OP_expand, &edge, 1, &a, c->loc);
}

/* Reflect or replicate padding of axis ax by lo before and hi after:
 * concat of the mirrored (step -1) or repeated edge slices and x. */
static Value *pad_edges(FeCall *c, Value *x, int ax, int64_t lo, int64_t hi, bool reflect) {
  int64_t len = 0;
  sz_is_const(x->type.dim[ax], &len);
  Value *parts[3];
  int n = 0;
  if (lo)
    parts[n++] = reflect ? take(c, x, ax, lo, lo, -1) : repeat_edge(c, x, ax, 0, lo);
  parts[n++] = x;
  if (hi)
    parts[n++] = reflect ? take(c, x, ax, len - 2, hi, -1) : repeat_edge(c, x, ax, len - 1, hi);
  Attr a = ir_attr();
  a.axis = ax;
  return n == 1 ? x : ir_op(c->g, OP_concat, parts, n, &a, c->loc);
}

/* pad(x, pads, mode, value): pads as torch.nn.functional.pad, (before,
 * after) pairs from the last axis backwards; constant, reflect or
 * replicate. */
static FeVal build_pad(FeCall *c) {
  Value *x = input(c);
  const Type *xt = &x->type;
  FeVal *p = arg(c, "pads"), *m = arg(c, "mode");
  int n = p->kind == FE_LIST ? p->nitems : 1;
  bool reflect = !strcmp(m->s, "reflect"), replicate = !strcmp(m->s, "replicate");
  if (!reflect && !replicate && strcmp(m->s, "constant"))
    return lfail(c, m->loc, "mode must be constant, reflect or replicate, got \"%s\"", m->s);
  if (n % 2 || n / 2 > xt->rank)
    return lfail(c, p->loc, "pads must be (before, after) pairs for at most the %d axes of %s, "
                 "got %d numbers", xt->rank, TS(c, xt), n);
  Attr a = ir_attr();
  a.rank = xt->rank;
  memcpy(a.shape, xt->dim, sizeof a.shape);
  a.alpha = arg(c, "value")->f;
  for (int i = 0; i < n / 2; i++) {
    int ax = xt->rank - 1 - i;
    int64_t lo = int_value(p->kind == FE_LIST ? &p->items[2 * i] : p);
    int64_t hi = int_value(p->kind == FE_LIST ? &p->items[2 * i + 1] : p), len;
    if (lo < 0 || hi < 0)
      return lfail(c, p->loc, "pads must not be negative");
    if (!const_axis(c, x, ax, &len))
      return fail_quiet();
    if (reflect && (lo >= len || hi >= len))
      return lfail(c, p->loc, "reflect padding of axis %d must be below its size %lld", ax,
                   (long long)len);
    if (replicate && len == 0 && (lo || hi))
      return lfail(c, p->loc, "replicate padding of an empty axis %d", ax);
    if (reflect || replicate)
      x = pad_edges(c, x, ax, lo, hi, reflect);
    a.start[ax] = lo;
    a.shape[ax] = sz_const(len + lo + hi);
  }
  if (reflect || replicate)
    return result(c, x);
  return result(c, ir_op(c->g, OP_unslice, &x, 1, &a, c->loc));
}

/* ---- recurrent layers: rnn, lstm, gru ----------------------------------------- */

/* PyTorch's nn.RNN (tanh), nn.LSTM and nn.GRU on x [N, T, D] (batch_first),
 * each layer a scan (ir/scan.c) whose body is the cell. Parameters as
 * PyTorch names and lays them out, per layer k: weight_ih_lk [G*H, in],
 * weight_hh_lk [G*H, H], bias_ih_lk and bias_hh_lk [G*H], G the gates
 * (1; 4 in the order i, f, g, o; 3 in the order r, z, n), all drawn from
 * uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch does. The input projection
 * x W_ih^T + b_ih of all steps is one GEMM before the scan; the body adds
 * h W_hh^T + b_hh and applies the cell:
 *   rnn   h' = tanh(gi + gh)
 *   lstm  c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c')
 *   gru   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
 *         n = tanh(gi_n + r gh_n),  h' = (1 - z) n + z h
 * Result: the last layer's h at every step [N, T, H], or with last=true its
 * final h [N, H]. h0= (and c0= for lstm), [N, H], start the first layer;
 * mask= [N, T] (1 within a sequence, 0 past its end) keeps each sequence's
 * state past its length and zeroes its outputs there, as packed sequences
 * do in PyTorch, so last=true gives each sequence's own final state.
 * A gate is a slice of [N, G*H]; the two directions of a bidirectional
 * layer are joined by a concat. */
typedef struct Cell {
  const char *kind;
  int gates, carries;
  Value *(*step)(Graph *b, Value *gi, Value *gh, Value **carry, Value **next, SrcLoc loc);
  bool bias_hh_outside;   /* b_hh only adds to gi + gh: added to gi, outside the loop */
} Cell;

/* Gate k of n from z [N, n*H], as [N, H]: a slice of the columns (the
 * hidden size is a compile-time constant, build_recurrent checks). */
static Value *gate_of(Graph *b, Value *z, int k, int n, SrcLoc loc) {
  Size H = sz_floordiv_const(z->type.dim[1], n);
  int64_t h = 0;
  sz_is_const(H, &h);
  Attr a = ir_attr();
  a.rank = 2;
  a.shape[0] = z->type.dim[0], a.shape[1] = H;
  a.start[1] = k * h;
  return ir_op(b, OP_slice, &z, 1, &a, loc);
}

static Value *sig(Graph *b, Value *x, SrcLoc loc) { return ir_op1(b, OP_sigmoid, x, loc); }
static Value *th(Graph *b, Value *x, SrcLoc loc) { return ir_op1(b, OP_tanh, x, loc); }

static Value *rnn_step(Graph *b, Value *gi, Value *gh, Value **carry, Value **next, SrcLoc loc) {
  (void)carry;
  return next[0] = th(b, ir_op2(b, OP_add, gi, gh, loc), loc);
}

static Value *lstm_step(Graph *b, Value *gi, Value *gh, Value **carry, Value **next, SrcLoc loc) {
  Value *z = ir_op2(b, OP_add, gi, gh, loc);
  Value *i = sig(b, gate_of(b, z, 0, 4, loc), loc), *f = sig(b, gate_of(b, z, 1, 4, loc), loc);
  Value *g = th(b, gate_of(b, z, 2, 4, loc), loc), *o = sig(b, gate_of(b, z, 3, 4, loc), loc);
  next[1] = ir_op2(b, OP_add, ir_op2(b, OP_mul, f, carry[1], loc), ir_op2(b, OP_mul, i, g, loc), loc);
  return next[0] = ir_op2(b, OP_mul, o, th(b, next[1], loc), loc);
}

static Value *gru_step(Graph *b, Value *gi, Value *gh, Value **carry, Value **next, SrcLoc loc) {
  Value *r = sig(b, ir_op2(b, OP_add, gate_of(b, gi, 0, 3, loc), gate_of(b, gh, 0, 3, loc), loc), loc);
  Value *z = sig(b, ir_op2(b, OP_add, gate_of(b, gi, 1, 3, loc), gate_of(b, gh, 1, 3, loc), loc), loc);
  Value *rn = ir_op2(b, OP_mul, r, gate_of(b, gh, 2, 3, loc), loc);
  Value *n = th(b, ir_op2(b, OP_add, gate_of(b, gi, 2, 3, loc), rn, loc), loc);
  Value *zh = ir_op2(b, OP_mul, z, ir_op2(b, OP_sub, carry[0], n, loc), loc);
  return next[0] = ir_op2(b, OP_add, n, zh, loc);     /* (1 - z) n + z h */
}

static const Cell cells[] = {
    {"rnn", 1, 1, rnn_step, true},
    {"lstm", 4, 2, lstm_step, true},
    {"gru", 3, 1, gru_step, false},     /* r multiplies h W_hn^T + b_hn */
};

static const Cell *cell_of(FeCall *c) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(cells[i].kind, c->layer->name))
      return &cells[i];
  return NULL;
}

static Value *mm_t(FeCall *c, Graph *g, Value *a, Value *w) {
  Attr at = ir_attr();
  at.trans_b = true;
  return ir_op(g, OP_matmul, (Value *[]){a, w}, 2, &at, c->loc);
}

/* One layer's four parameters, named as PyTorch's. */
static void layer_params(FeCall *c, const Cell *cl, int k, const char *suffix, Size in, Size H,
                         RtDType dt, Value **p) {
  static const char *names[] = {"weight_ih_l%d%s", "weight_hh_l%d%s", "bias_ih_l%d%s",
                                "bias_hh_l%d%s"};
  int64_t h = 1;
  sz_is_const(H, &h);
  double bound = 1 / sqrt((double)(h > 0 ? h : 1));
  Size GH = sz_mul(sz_const(cl->gates), H);
  Type t[4] = {ir_type(dt, 2, (Size[]){GH, in}), ir_type(dt, 2, (Size[]){GH, H}),
               ir_type(dt, 1, &GH), ir_type(dt, 1, &GH)};
  for (int i = 0; i < 4; i++) {
    char name[48];
    snprintf(name, sizeof name, names[i], k, suffix);
    p[i] = fe_param(c, name, t[i], (Init){.kind = INIT_UNIFORM, .a = -bound, .b = bound});
  }
}

/* x [N, T, in] W_ih^T + b_ih (+ b_hh when the cell allows): [N, T, G*H],
 * one GEMM over all steps. Moving b_hh here takes its gradient out of
 * the loop too: one sum over N*T after the reverse scan, in place of a
 * small sum over N at every step (it was a fifth of an LSTM step's time). */
static Value *input_gates(FeCall *c, Value *x, Value *w, Value *bias, Value *bias2) {
  Type xt = x->type;
  Size GH = w->type.dim[0];
  if (bias2)
    bias = ir_op2(c->g, OP_add, bias, bias2, c->loc);
  Value *x2 = reshape(c, x, 2, (Size[]){sz_mul(xt.dim[0], xt.dim[1]), xt.dim[2]});
  Value *y = ir_op2(c->g, OP_add, mm_t(c, c->g, x2, w), bias, c->loc);
  return reshape(c, y, 3, (Size[]){xt.dim[0], xt.dim[1], GH});
}

/* The scan of one layer: returns the node (outputs: last carries, then hs). */
static Node *layer_scan(FeCall *c, const Cell *cl, Value *x, Value **p, Value **init, Value *mask,
                        bool reverse) {
  Graph *b = ir_body_new(c->g, cl->kind);
  Size N = x->type.dim[0], T = x->type.dim[1], H = p[1]->type.dim[1];
  RtDType dt = x->type.dt;
  bool outside = cl->bias_hh_outside;
  Value *gi = input_gates(c, x, p[0], p[2], outside ? p[3] : NULL);
  Value *in[8], *carry[2], *next[2];
  int nseq = 0, k = 0;
  in[k++] = gi;
  Value *gi_t = ir_input(b, "gi", ir_type(dt, 2, (Size[]){N, gi->type.dim[2]}), c->loc);
  Value *m_t = NULL;
  if (mask) {
    in[k++] = mask;
    m_t = ir_input(b, "m", ir_type(mask->type.dt, 1, &N), c->loc);
  }
  nseq = k;
  for (int i = 0; i < cl->carries; i++) {
    in[k++] = init[i];
    carry[i] = ir_input(b, i ? "c" : "h", ir_type(dt, 2, (Size[]){N, H}), c->loc);
  }
  Value *whh = ir_input(b, "weight_hh", p[1]->type, c->loc);
  Value *gh = mm_t(c, b, carry[0], whh);
  in[k++] = p[1];
  if (!outside) {
    gh = ir_op2(b, OP_add, gh, ir_input(b, "bias_hh", p[3]->type, c->loc), c->loc);
    in[k++] = p[3];
  }
  Value *h = cl->step(b, gi_t, gh, carry, next, c->loc);
  for (int i = 0; i < cl->carries; i++)
    ir_output(b, next[i], i ? "c" : "h");
  ir_output(b, h, "y");
  if (m_t)
    ir_scan_mask(b, m_t, nseq, cl->carries);
  return ir_scan(c->g, b, in, nseq, cl->carries, outside ? 1 : 2, 1, reverse, T, c->loc);
}

/* The initial state given by name (h0, c0), checked as [N, H], or zeros. */
static bool initial(FeCall *c, const char *name, int layers, Size N, Size H, RtDType dt,
                    Value **out) {
  Type want = ir_type(dt, 2, (Size[]){N, H});
  FeVal *v = arg(c, name);
  if (v->kind == FE_NONE) {
    Attr a = ir_attr();
    a.rank = 2, a.shape[0] = N, a.shape[1] = H;
    *out = ir_op(c->g, OP_expand, (Value *[]){ir_scalar(c->g, dt, 0)}, 1, &a, c->loc);
    return true;
  }
  if (layers != 1 || !ir_type_eq(&v->t->type, &want)) {
    lfail(c, v->loc, "%s must be %s (one layer), got %s", name, TS(c, &want), TS(c, &v->t->type));
    return false;
  }
  *out = v->t;
  return true;
}

/* [a, b] along the last axis. */
static Value *concat_last(FeCall *c, Value *a, Value *b) {
  Attr at = ir_attr();
  at.axis = a->type.rank - 1;
  return ir_op(c->g, OP_concat, (Value *[]){a, b}, 2, &at, c->loc);
}

static FeVal build_recurrent(FeCall *c) {
  const Cell *cl = cell_of(c);
  Value *x = input(c), *mask = given(c, "mask") ? arg(c, "mask")->t : NULL;
  Type xt = x->type;
  Size H = arg(c, "hidden")->i;
  bool bi = arg(c, "bidirectional")->b;
  int layers;
  if (!positive(c, "hidden") || !int_at_least(c, "layers", arg(c, "layers"), 1, &layers))
    return (FeVal){.kind = FE_ERROR};
  if (xt.rank != 3 || !ir_is_float(xt.dt))
    return lfail(c, c->loc, "expects x as f32[N, T, D] (batch first), got %s", TS(c, &xt));
  if (!sz_is_const(H, &(int64_t){0}))
    return lfail(c, arg(c, "hidden")->loc, "hidden must be a size known at compile time");
  if (bi && (given(c, "h0") || given(c, "c0")))
    return lfail(c, c->loc, "h0= and c0= are for one direction; not with bidirectional=true");
  Value *init[2];
  if (!initial(c, "h0", layers, xt.dim[0], H, xt.dt, &init[0]) ||
      (cl->carries > 1 && !initial(c, "c0", layers, xt.dim[0], H, xt.dt, &init[1])))
    return (FeVal){.kind = FE_ERROR};
  Value *last = NULL;
  for (int k = 0; k < layers && x; k++) {
    Value *p[4], *in = x;
    if (k > 0)
      initial(c, "h0", 1, xt.dim[0], H, xt.dt, &init[0]), init[1] = init[0];
    layer_params(c, cl, k, "", in->type.dim[2], H, xt.dt, p);
    Node *s = layer_scan(c, cl, in, p, init, mask, false);
    x = s->out[cl->carries];
    last = s->out[0];
    if (!bi)
      continue;
    layer_params(c, cl, k, "_reverse", in->type.dim[2], H, xt.dt, p);
    Node *r = layer_scan(c, cl, in, p, init, mask, true);
    x = concat_last(c, x, r->out[cl->carries]);
    last = x ? concat_last(c, last, r->out[0]) : NULL;
  }
  if (!x || !last)
    return (FeVal){.kind = FE_ERROR};
  return result(c, arg(c, "last")->b ? last : x);
}

/* embedding(idx, num, dim): nn.Embedding, rows of weight [num, dim]
 * (normal(0, 1) as PyTorch) picked by the integer indices idx [...]:
 * [..., dim]. Its gradient adds up the rows of an index that repeats. */
static FeVal build_embedding(FeCall *c) {
  Value *idx = input(c);
  if (!positive(c, "num") || !positive(c, "dim"))
    return (FeVal){.kind = FE_ERROR};
  FeVal *v = arg(c, "init");
  Init init = v->kind == FE_INIT ? v->init : (Init){.kind = INIT_NORMAL, .a = 0, .b = 1};
  Type t = ir_type(RT_F32, 2, (Size[]){arg(c, "num")->i, arg(c, "dim")->i});
  Value *w = fe_param(c, "weight", t, init);
  return result(c, ir_op(c->g, OP_gather, (Value *[]){w, idx}, 2, NULL, c->loc));
}

/* ---- positions and attention --------------------------------------------- */

/* iota(shape, axis=0, start=0): start + the index along axis, of that
 * shape (torch.arange laid along one axis). start is a number (an int
 * gives i64, a float f32) or a scalar tensor (its dtype). A causal mask is
 * iota([T, S], axis=1) > iota([T, S], axis=0). */
static FeVal build_iota(FeCall *c) {
  FeVal *sh = arg(c, "shape"), *st = arg(c, "start");
  Attr a = ir_attr();
  if (sh->nitems < 1 || sh->nitems > IR_MAX_RANK)
    return lfail(c, sh->loc, "shape must list 1 to %d sizes, got %d", IR_MAX_RANK, sh->nitems);
  a.rank = sh->nitems;
  for (int i = 0; i < a.rank; i++)
    a.shape[i] = sh->items[i].i;
  int64_t ax = int_value(arg(c, "axis"));
  if (ax < -a.rank || ax >= a.rank)
    return lfail(c, arg(c, "axis")->loc, "axis %lld is out of range for %d axes", (long long)ax,
                 a.rank);
  a.axis = ir_norm_axis((int)ax, a.rank);
  Value *start = operand(c, st, st->kind == FE_FLOAT ? RT_F32 : RT_I64);
  return result(c, ir_op(c->g, OP_iota, &start, 1, &a, c->loc));
}

/* x [N, L, E] as heads [N, H, L, E/H]. */
static Value *split_heads(FeCall *c, Value *x, int64_t heads) {
  const Type *t = &x->type;
  Size d = sz_floordiv_const(t->dim[2], heads);
  x = reshape(c, x, 4, (Size[]){t->dim[0], t->dim[1], sz_const(heads), d});
  Attr a = ir_attr();
  memcpy(a.perm, (int[]){0, 2, 1, 3}, 4 * sizeof(int));
  return ir_op(c->g, OP_transpose, &x, 1, &a, c->loc);
}

/* heads [N, H, L, D] back to rows [N*L, H*D]. */
static Value *merge_heads(FeCall *c, Value *h) {
  Attr a = ir_attr();
  memcpy(a.perm, (int[]){0, 2, 1, 3}, 4 * sizeof(int));
  h = ir_op(c->g, OP_transpose, &h, 1, &a, c->loc);
  const Type *t = &h->type;
  return reshape(c, h, 2, (Size[]){sz_mul(t->dim[0], t->dim[1]), sz_mul(t->dim[2], t->dim[3])});
}

/* x [N, L, D] @ w^T + b with w [E, D] and b [E], in heads [N, H, L, E/H]. */
static Value *project_heads(FeCall *c, Value *x, Value *w, Value *b, int64_t heads) {
  const Type *t = &x->type;
  Value *rows = reshape(c, x, 2, (Size[]){sz_mul(t->dim[0], t->dim[1]), t->dim[2]});
  Value *y = mm_t(c, c->g, rows, w);
  if (b)
    y = ir_op2(c->g, OP_add, y, b, c->loc);
  return split_heads(c, reshape(c, y, 3, (Size[]){t->dim[0], t->dim[1], w->type.dim[0]}), heads);
}

/* The q, k and v projections' weights w[i] [E, D] and biases b[i] [E] (NULL
 * without bias), as PyTorch lays them out: the packed in_proj_weight [3E, E]
 * (Xavier) when keys and values have E features, else q_proj_weight [E, E],
 * k_proj_weight [E, kdim] and v_proj_weight [E, vdim] (Xavier each: its
 * layout when kdim or vdim differ from E); in_proj_bias [3E] either way. */
static void in_projections(FeCall *c, const Type *xt, Size kdim, Size vdim, bool bias, Value **w,
                           Value **b) {
  static const char *names[3] = {"q_proj_weight", "k_proj_weight", "v_proj_weight"};
  Size E = xt->dim[2], E3 = sz_mul(sz_const(3), E), din[3] = {E, kdim, vdim};
  int64_t e = 0;
  sz_is_const(E, &e);
  bool packed = sz_eq(kdim, E) && sz_eq(vdim, E);
  Value *all = packed ? fe_param(c, "in_proj_weight", ir_type(xt->dt, 2, (Size[]){E3, E}),
                                 init_of(INIT_XAVIER_UNIFORM))
                      : NULL;
  for (int i = 0; i < 3; i++)
    w[i] = packed ? take(c, all, 0, i * e, e, 1)
                  : fe_param(c, names[i], ir_type(xt->dt, 2, (Size[]){E, din[i]}),
                             init_of(INIT_XAVIER_UNIFORM));
  Value *bs = bias ? vector(c, "in_proj_bias", E3, xt->dt, INIT_ZEROS, V_PARAM) : NULL;
  for (int i = 0; i < 3; i++)
    b[i] = bs ? take(c, bs, 0, i * e, e, 1) : NULL;
}

/* scores [N, H, T, S] with -inf where mask (bool, broadcast) is true. */
static Value *mask_out(FeCall *c, Value *scores, Value *mask) {
  Value *inf = ir_scalar(c->g, scores->type.dt, -INFINITY);
  return ir_op(c->g, OP_where, (Value *[]){mask, inf, scores}, 3, NULL, c->loc);
}

/* The causal mask [T, S]: key j is hidden from query i when j > i. */
static Value *causal_mask(FeCall *c, Size T, Size S) {
  Attr a = ir_attr();
  a.rank = 2, a.shape[0] = T, a.shape[1] = S;
  Value *zero = ir_scalar(c->g, RT_I64, 0);
  Value *i = ir_op(c->g, OP_iota, &zero, 1, &a, c->loc);
  a.axis = 1;
  Value *j = ir_op(c->g, OP_iota, &zero, 1, &a, c->loc);
  return ir_op2(c->g, OP_gt, j, i, c->loc);
}

/* key_padding_mask [N, S] (bool, true: a padding key, ignored) as
 * [N, 1, 1, S], to broadcast over heads and queries. */
static Value *padding_mask(FeCall *c, Value *m, const Type *kvt) {
  Type want = ir_type(RT_BOOL, 2, (Size[]){kvt->dim[0], kvt->dim[1]});
  if (!ir_type_eq(&m->type, &want)) {
    lfail(c, arg(c, "key_padding_mask")->loc, "key_padding_mask must be %s, got %s",
          TS(c, &want), TS(c, &m->type));
    return NULL;
  }
  return reshape(c, m, 4, (Size[]){want.dim[0], sz_const(1), sz_const(1), want.dim[1]});
}

/* attn_mask as PyTorch's, over scores [N, H, T, S]: bool [T, S] (true: not
 * attended) or a float of the scores' dtype added to them, [T, S] or
 * [N*H, T, S] (per sample and head). NULL after an error. */
static Value *apply_attn_mask(FeCall *c, Value *s, Value *m) {
  const Type *st = &s->type;
  Size T = st->dim[2], S = st->dim[3], NH = sz_mul(st->dim[0], st->dim[1]);
  Type two = ir_type(m->type.dt, 2, (Size[]){T, S}), three = ir_type(m->type.dt, 3, (Size[]){NH, T, S});
  bool shaped = ir_type_eq(&m->type, &two) || ir_type_eq(&m->type, &three);
  if (!shaped || (m->type.dt != RT_BOOL && m->type.dt != st->dt)) {
    Type want = ir_type(st->dt, 2, (Size[]){T, S});
    lfail(c, arg(c, "attn_mask")->loc, "attn_mask must be bool or %s, %s or [N*heads, T, S], got %s",
          rt_dtype_name(st->dt), TS(c, &want), TS(c, &m->type));
    return NULL;
  }
  if (m->type.rank == 3)
    m = reshape(c, m, 4, st->dim);
  return m->type.dt == RT_BOOL ? mask_out(c, s, m) : ir_op2(c->g, OP_add, s, m, c->loc);
}

/* Checks x [N, T, E] (E known, a multiple of heads), kv [N, S, kdim] and
 * value [N, S, vdim] (kdim and vdim known). */
static bool attention_inputs(FeCall *c, const Type *xt, const Type *kt, const Type *vt, int heads) {
  int64_t e, d;
  if (xt->rank != 3 || !ir_is_float(xt->dt) || !sz_is_const(xt->dim[2], &e)) {
    lfail(c, c->loc, "expects x as f32[N, T, E] (batch first, E known), got %s", TS(c, xt));
    return false;
  }
  if (kt->rank != 3 || kt->dt != xt->dt || !sz_eq(kt->dim[0], xt->dim[0]) || !sz_is_const(kt->dim[2], &d)) {
    lfail(c, arg(c, "kv")->loc, "kv must be %s[N, S, kdim] with x's N (kdim known), got %s for x %s",
          rt_dtype_name(xt->dt), TS(c, kt), TS(c, xt));
    return false;
  }
  if (vt->rank != 3 || vt->dt != xt->dt || !sz_eq(vt->dim[0], kt->dim[0]) || !sz_eq(vt->dim[1], kt->dim[1]) ||
      !sz_is_const(vt->dim[2], &d)) {
    lfail(c, arg(c, "value")->loc,
          "value must be %s[N, S, vdim] with kv's N and S (vdim known), got %s for kv %s",
          rt_dtype_name(xt->dt), TS(c, vt), TS(c, kt));
    return false;
  }
  if (e % heads) {
    lfail(c, arg(c, "heads")->loc, "the embedding size %lld must be a multiple of heads (%d)",
          (long long)e, heads);
    return false;
  }
  return true;
}

/* attention(x, heads, kv=, value=, causal=, key_padding_mask=, bias=, attn_mask=, dropout=):
 * torch.nn.MultiheadAttention(E, heads, kdim=, vdim=, batch_first=True)
 * with its parameters (in_projections above), out_proj.weight [E, E]
 * (uniform +-1/sqrt(E)) and out_proj.bias [E]. Queries from x [N, T, E],
 * keys from kv [N, S, kdim] (x itself when not given: self-attention),
 * values from value [N, S, vdim] (kv when not given). Per head,
 * softmax(q k^T / sqrt(E/H)) v, built of matmul, transpose, softmax and
 * where so that fusion and autodiff see ordinary ops; masked scores are
 * -inf before the softmax, as PyTorch's, and in training dropout (p) drops
 * attention weights after it. */
static FeVal build_attention(FeCall *c) {
  Value *x = input(c), *kv = given(c, "kv") ? arg(c, "kv")->t : x;
  Value *val = given(c, "value") ? arg(c, "value")->t : kv;
  const Type *xt = &x->type, *kvt = &kv->type;
  int heads;
  double p;
  if (!int_at_least(c, "heads", arg(c, "heads"), 1, &heads) ||
      !attention_inputs(c, xt, kvt, &val->type, heads) || !probability(c, "dropout", &p))
    return fail_quiet();
  Size E = xt->dim[2];
  bool bias = arg(c, "bias")->b;
  int64_t e = 0;
  sz_is_const(E, &e);
  Value *w[3], *b[3];
  in_projections(c, xt, kvt->dim[2], val->type.dim[2], bias, w, b);
  Value *q = project_heads(c, x, w[0], b[0], heads);
  Value *k = project_heads(c, kv, w[1], b[1], heads), *v = project_heads(c, val, w[2], b[2], heads);
  q = scale(c, q, 1 / sqrt((double)(e / heads)));
  Attr at = ir_attr();
  at.trans_b = true;
  Value *s = ir_op(c->g, OP_matmul, (Value *[]){q, k}, 2, &at, c->loc);   /* [N, H, T, S] */
  if (arg(c, "causal")->b)
    s = mask_out(c, s, causal_mask(c, xt->dim[1], kvt->dim[1]));
  if (given(c, "key_padding_mask")) {
    Value *m = padding_mask(c, arg(c, "key_padding_mask")->t, kvt);
    if (!m)
      return fail_quiet();
    s = mask_out(c, s, m);
  }
  if (given(c, "attn_mask") && !(s = apply_attn_mask(c, s, arg(c, "attn_mask")->t)))
    return fail_quiet();
  Attr sm = ir_attr();
  sm.axis = 3;
  s = drop(c, ir_op(c->g, OP_softmax, &s, 1, &sm, c->loc), p);
  Value *ctx = merge_heads(c, ir_op2(c->g, OP_matmul, s, v, c->loc));
  double bound = 1 / sqrt((double)e);
  Value *wo = fe_param(c, "out_proj.weight", ir_type(xt->dt, 2, (Size[]){E, E}),
                       (Init){.kind = INIT_UNIFORM, .a = -bound, .b = bound});
  Value *y = mm_t(c, c->g, ctx, wo);
  if (bias)
    y = ir_op2(c->g, OP_add, y, vector(c, "out_proj.bias", E, xt->dt, INIT_ZEROS, V_PARAM), c->loc);
  return result(c, reshape(c, y, 3, xt->dim));
}

/* ---- the table ---------------------------------------------------------- */

#define X {"x", FA_TENSOR, NULL}
#define INIT {"init", FA_INIT, ""}
#define UNARY(name) {#name, build_unary, OP_##name, {X}}
#define REDUCE(name) \
  {#name, build_reduce, OP_##name, \
   {X, {"axis", FA_INT, ""}, {"axes", FA_INTS, ""}, {"keepdim", FA_BOOL, "false"}}}
/* Convolution and pooling: PyTorch's argument order and names (k is also
 * kernel and kernel_size, pad also padding). */
#define K {"k", FA_INTS, NULL, "kernel kernel_size"}
#define PAD {"pad", FA_PAD, "0", "padding"}
#define CONV(name) \
  {#name, build_conv, OP_conv2d, \
   {X, {"filters", FA_SIZE, NULL}, K, {"stride", FA_INTS, "1"}, PAD, {"dilation", FA_INTS, "1"}, \
    {"groups", FA_INT, "1"}, {"bias", FA_BOOL, "true"}, INIT}}
#define CONV_TRANSPOSE(name) \
  {#name, build_conv_transpose, OP_conv2d_bwd_data, \
   {X, {"filters", FA_SIZE, NULL}, K, {"stride", FA_INTS, "1"}, PAD, \
    {"output_padding", FA_INTS, "0"}, {"groups", FA_INT, "1"}, {"bias", FA_BOOL, "true"}, \
    {"dilation", FA_INTS, "1"}, INIT}}
#define MAXPOOL(name) \
  {#name, build_pool, OP_maxpool2d, \
   {X, K, {"stride", FA_INTS, ""}, PAD, {"dilation", FA_INTS, "1"}, \
    {"ceil_mode", FA_BOOL, "false"}}}
#define AVGPOOL(name) \
  {#name, build_pool, OP_avgpool2d, \
   {X, K, {"stride", FA_INTS, ""}, PAD, {"ceil_mode", FA_BOOL, "false"}, \
    {"count_include_pad", FA_BOOL, "true"}}}

#define RECURRENT(name) \
  {#name, build_recurrent, OP_scan, \
   {X, {"hidden", FA_SIZE, NULL}, {"layers", FA_INT, "1"}, {"last", FA_BOOL, "false"}, \
    {"h0", FA_TENSOR, ""}, {"c0", FA_TENSOR, ""}, {"mask", FA_TENSOR, ""}, \
    {"bidirectional", FA_BOOL, "false"}}}

/* attention and multihead_attention: one layer, PyTorch's name the alias. */
#define ATTENTION(name) \
  {#name, build_attention, OP_softmax, \
   {X, {"heads", FA_INT, NULL, "num_heads"}, {"kv", FA_TENSOR, "", "key"}, {"value", FA_TENSOR, ""}, \
    {"causal", FA_BOOL, "false"}, {"key_padding_mask", FA_TENSOR, ""}, {"bias", FA_BOOL, "true"}, \
    {"attn_mask", FA_TENSOR, ""}, {"dropout", FA_FLOAT, "0"}}}

const FeLayer fe_layers[] = {
  {"dense", build_dense, OP_matmul,
   {X, {"units", FA_SIZE, NULL}, {"bias", FA_BOOL, "true"}, INIT}},
  CONV(conv1d), CONV(conv2d), CONV_TRANSPOSE(conv_transpose1d), CONV_TRANSPOSE(conv_transpose2d),
  MAXPOOL(maxpool), MAXPOOL(maxpool1d), MAXPOOL(maxpool2d),
  AVGPOOL(avgpool), AVGPOOL(avgpool1d), AVGPOOL(avgpool2d),
  {"adaptive_avgpool1d", build_adaptive_avgpool, OP_avgpool2d, {X, {"size", FA_INTS, NULL}}},
  {"adaptive_avgpool2d", build_adaptive_avgpool, OP_avgpool2d, {X, {"size", FA_INTS, NULL}}},
  {"global_avgpool", build_global_pool, OP_mean, {X}},
  {"global_maxpool", build_global_pool, OP_max, {X}},
  {"flatten", build_flatten, OP_reshape, {X, {"start", FA_INT, "1"}}},
  {"reshape", build_reshape, OP_reshape, {X, {"shape", FA_SIZES, NULL}}},
  {"batchnorm", build_batchnorm, OP_batchnorm,
   {X, {"eps", FA_FLOAT, "1e-5"}, {"momentum", FA_FLOAT, "0.1"}, {"axis", FA_INT, "1"}}},
  UNARY(relu), UNARY(sigmoid), UNARY(tanh), UNARY(exp), UNARY(log), UNARY(sqrt),
  UNARY(rsqrt), UNARY(abs),
  {"softmax", build_softmax, OP_softmax, {X, {"axis", FA_INT, "-1"}}},
  {"log_softmax", build_softmax, OP_log_softmax, {X, {"axis", FA_INT, "-1"}}},
  {"maximum", build_binary, OP_maximum, {{"a", FA_OPERAND, NULL}, {"b", FA_OPERAND, NULL}}},
  {"minimum", build_binary, OP_minimum, {{"a", FA_OPERAND, NULL}, {"b", FA_OPERAND, NULL}}},
  {"matmul", build_binary, OP_matmul, {{"a", FA_TENSOR, NULL}, {"b", FA_TENSOR, NULL}}},
  {"transpose", build_transpose, OP_transpose, {X, {"perm", FA_INTS, ""}}},
  REDUCE(sum), REDUCE(mean), REDUCE(max), REDUCE(min),
  {"dropout", build_dropout, OP_COUNT, {X, {"p", FA_FLOAT, "0.5"}}},
  UNARY(erf), UNARY(silu),
  {"swish", build_unary, OP_silu, {X}},
  {"leaky_relu", build_alpha, OP_leaky_relu, {X, {"negative_slope", FA_FLOAT, "0.01"}}},
  {"elu", build_alpha, OP_elu, {X, {"alpha", FA_FLOAT, "1.0"}}},
  {"selu", build_selu, OP_elu, {X}},
  {"softplus", build_softplus, OP_softplus,
   {X, {"beta", FA_FLOAT, "1"}, {"threshold", FA_FLOAT, "20"}}},
  {"gelu", build_gelu, OP_gelu, {X, {"approximate", FA_STR, "none"}}},
  {"clip", build_clip, OP_where, {X, {"min", FA_OPERAND, ""}, {"max", FA_OPERAND, ""}}},
  {"pow", build_pow, OP_pow, {{"x", FA_OPERAND, NULL}, {"exponent", FA_OPERAND, NULL}}},
  {"where", build_where, OP_where,
   {{"cond", FA_TENSOR, NULL}, {"a", FA_OPERAND, NULL}, {"b", FA_OPERAND, NULL}}},
  {"argmax", build_argext, OP_max, {X, {"axis", FA_INT, ""}, {"keepdim", FA_BOOL, "false"}}},
  {"argmin", build_argext, OP_min, {X, {"axis", FA_INT, ""}, {"keepdim", FA_BOOL, "false"}}},
  {"layernorm", build_layernorm, OP_mean,
   {X, {"dims", FA_INT, "1"}, {"eps", FA_FLOAT, "1e-5"}, {"affine", FA_BOOL, "true"}}},
  {"squeeze", build_squeeze, OP_reshape, {X, {"axis", FA_INT, ""}}},
  {"unsqueeze", build_unsqueeze, OP_reshape, {X, {"axis", FA_INT, NULL}}},
  {"permute", build_permute, OP_transpose, {X, {"perm", FA_INTS, NULL}}},
  {"slice", build_slice, OP_slice,
   {X, {"axis", FA_INT, "0"}, {"start", FA_INT, "0"}, {"stop", FA_INT, ""}, {"step", FA_INT, "1"}}},
  {"split", build_split, OP_slice, {X, {"parts", FA_INTS, NULL}, {"axis", FA_INT, "0"}}},
  {"concat", build_concat, OP_concat, {{"xs", FA_TENSORS, NULL}, {"axis", FA_INT, "0"}}},
  {"pad", build_pad, OP_unslice,
   {X, {"pads", FA_INTS, NULL}, {"mode", FA_STR, "constant"}, {"value", FA_FLOAT, "0"}}},
  RECURRENT(rnn), RECURRENT(lstm), RECURRENT(gru),
  {"embedding", build_embedding, OP_gather,
   {X, {"num", FA_SIZE, NULL}, {"dim", FA_SIZE, NULL}, INIT}},
  {"iota", build_iota, OP_iota,
   {{"shape", FA_SIZES, NULL}, {"axis", FA_INT, "0"}, {"start", FA_OPERAND, "0"}}},
  ATTENTION(attention), ATTENTION(multihead_attention),
};

const int fe_nlayers = (int)(sizeof fe_layers / sizeof *fe_layers);

const FeLayer *fe_find_layer(const char *name) {
  for (int i = 0; i < fe_nlayers; i++)
    if (!strcmp(fe_layers[i].name, name))
      return &fe_layers[i];
  return NULL;
}


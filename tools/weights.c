/* The model's weights: a table by parameter name, filled from a
 * .safetensors file or drawn from a seed. Each parameter draws from its own
 * Philox stream (the hash of its name), so a parameter's initial values do
 * not depend on which other parameters exist or on the order they are made. */
#include "tools/api.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

KilnWeight *kiln__weight(KilnModel *m, const char *name) {
  for (int i = 0; i < m->nw; i++)
    if (!strcmp(m->w[i].name, name))
      return &m->w[i];
  return NULL;
}

/* Takes ownership of t. */
KilnStatus kiln__put_weight(KilnModel *m, const char *name, RtTensor t) {
  KilnWeight *w = kiln__weight(m, name);
  if (w) {
    rt_tensor_free(&w->t);
    w->t = t;
    return KILN_OK;
  }
  if (m->nw == m->capw) {
    int nc = m->capw ? 2 * m->capw : 32;
    KilnWeight *nw = realloc(m->w, nc * sizeof *nw);
    if (!nw)
      return KILN_ERR_NOMEM;
    m->w = nw;
    m->capw = nc;
  }
  m->w[m->nw].name = strdup(name);
  m->w[m->nw].t = t;
  if (!m->w[m->nw].name)
    return KILN_ERR_NOMEM;
  m->nw++;
  return KILN_OK;
}

void kiln__free_weights(KilnModel *m) {
  for (int i = 0; i < m->nw; i++) {
    free(m->w[i].name);
    rt_tensor_free(&m->w[i].t);
  }
  free(m->w);
  m->w = NULL;
  m->nw = m->capw = 0;
}

/* Rows of an orthogonal matrix (or columns, when there are more rows than
 * columns), by modified Gram-Schmidt over normal draws, as
 * torch.nn.init.orthogonal_ does with a QR factorisation. */
static void orthogonalize(double *a, int64_t rows, int64_t cols) {
  bool tr = rows > cols;
  int64_t r = tr ? cols : rows, c = tr ? rows : cols;
  double *q = malloc(sizeof(double) * r * c);
  if (!q)
    return;
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++)
      q[i * c + j] = tr ? a[j * cols + i] : a[i * cols + j];
  for (int64_t i = 0; i < r; i++) {
    for (int64_t k = 0; k < i; k++) {
      double dot = 0;
      for (int64_t j = 0; j < c; j++)
        dot += q[i * c + j] * q[k * c + j];
      for (int64_t j = 0; j < c; j++)
        q[i * c + j] -= dot * q[k * c + j];
    }
    double nrm = 0;
    for (int64_t j = 0; j < c; j++)
      nrm += q[i * c + j] * q[i * c + j];
    nrm = nrm > 0 ? 1 / sqrt(nrm) : 0;
    for (int64_t j = 0; j < c; j++)
      q[i * c + j] *= nrm;
  }
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++)
      *(tr ? &a[j * cols + i] : &a[i * cols + j]) = q[i * c + j];
  free(q);
}

static void fill(RtTensor *t, const Init *in, uint64_t seed, uint64_t stream) {
  int64_t n = rt_numel(t);
  double *d = malloc(sizeof(double) * (n ? n : 1));
  if (!d)
    return;
  double fi = in->fan_in > 0 ? in->fan_in : 1, fo = in->fan_out > 0 ? in->fan_out : 1;
  double gain_he = in->a > 0 ? in->a : sqrt(2.0), gain_x = in->a > 0 ? in->a : 1.0;
  double bound;
  switch (in->kind) {
  case INIT_ONES: for (int64_t i = 0; i < n; i++) d[i] = 1; break;
  case INIT_CONST: for (int64_t i = 0; i < n; i++) d[i] = in->a; break;
  case INIT_UNIFORM: rt_fill_uniform_f64(d, n, in->a, in->b, seed, stream); break;
  case INIT_NORMAL: rt_fill_normal_f64(d, n, in->a, in->b, seed, stream); break;
  case INIT_HE_NORMAL: rt_fill_normal_f64(d, n, 0, gain_he / sqrt(fi), seed, stream); break;
  case INIT_HE_UNIFORM:
    bound = gain_he * sqrt(3 / fi);
    rt_fill_uniform_f64(d, n, -bound, bound, seed, stream);
    break;
  case INIT_XAVIER_NORMAL:
    rt_fill_normal_f64(d, n, 0, gain_x * sqrt(2 / (fi + fo)), seed, stream);
    break;
  case INIT_XAVIER_UNIFORM:
    bound = gain_x * sqrt(6 / (fi + fo));
    rt_fill_uniform_f64(d, n, -bound, bound, seed, stream);
    break;
  case INIT_ORTHOGONAL: {
    int64_t rows = t->rank ? t->shape[0] : 1, cols = rows ? n / rows : 0;
    rt_fill_normal_f64(d, n, 0, 1, seed, stream);
    orthogonalize(d, rows, cols);
    for (int64_t i = 0; i < n; i++)
      d[i] *= gain_x;
    break;
  }
  default: for (int64_t i = 0; i < n; i++) d[i] = 0; break;
  }
  for (int64_t i = 0; i < n; i++) {
    if (t->dtype == RT_F32)
      ((float *)t->data)[i] = (float)d[i];
    else if (t->dtype == RT_F64)
      ((double *)t->data)[i] = d[i];
    else if (t->dtype == RT_I32)
      ((int32_t *)t->data)[i] = (int32_t)d[i];
    else if (t->dtype == RT_I64)
      ((int64_t *)t->data)[i] = (int64_t)d[i];
    else
      ((uint8_t *)t->data)[i] = (uint8_t)d[i];
  }
  free(d);
}

/* A fresh tensor for parameter p drawn as its Init says. */
KilnStatus kiln__init_param(const Graph *g, const Value *p, uint64_t seed, RtTensor *out,
                            RtError *err) {
  int64_t shape[RT_MAX_RANK];
  for (int i = 0; i < p->type.rank; i++)
    if (!sz_eval(p->type.dim[i], g->svals, &shape[i])) {
      rt_errorf(err, RT_ERR_SHAPE, "parameter %s has a shape that depends on an unbound size",
                p->name);
      return KILN_ERR_MODEL;
    }
  if (rt_tensor_alloc(out, p->type.dt, p->type.rank, shape, err) != RT_OK)
    return KILN_ERR_NOMEM;
  fill(out, &p->init, seed, rt_hash_str(p->name));
  return KILN_OK;
}

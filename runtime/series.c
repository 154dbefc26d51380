/* Time series: one column of a CSV as windows for a forecaster, and the
 * baselines a forecast must beat.
 *
 * A series v[0 .. n) becomes samples s = 0, 1, ...: inputs v[s .. s+W)
 * (the window) and targets v[s+W .. s+W+H) (the horizon). The split is
 * chronological: the last `validate` values are the validation targets,
 * so a validation window's targets all lie in v[n-validate .. n) and a
 * training window's all before it (its inputs may reach into the past of
 * the validation part, never into it). Shuffling the windows would leak
 * the future into training; normalising with statistics of the whole
 * series would too, so the mean and standard deviation are fitted on
 * v[0 .. n-validate) only and applied to both parts.
 *
 * Errors are kept in the series' own units: a model's errors on normalised
 * targets scale back by the standard deviation (rt_errs_add's scale), and
 * the baselines (rt_series_naive) read the raw values. */
#include "runtime/rt.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void rt_series_free(RtSeries *s) {
  if (s) {
    free(s->v);
    memset(s, 0, sizeof *s);
  }
}

static int column_index(const RtCsv *c, const char *column) {
  if (!column)
    return c->ncols - 1;
  for (int i = 0; c->names && i < c->ncols; i++)
    if (!strcmp(c->names[i], column))
      return i;
  return -1;
}

RtStatus rt_series_read(const char *path, const char *column, RtSeries *s, RtError *err) {
  memset(s, 0, sizeof *s);
  RtCsvOptions o = {.header = column ? RT_CSV_HEADER_YES : RT_CSV_HEADER_AUTO};
  RtCsv c;
  RtStatus st = rt_csv_read(path, &o, &c, err);
  if (st != RT_OK)
    return st;
  int col = column_index(&c, column);
  int64_t n = c.x.shape[0];
  if (col < 0) {
    rt_csv_free(&c);
    return rt_errorf(err, RT_ERR_FORMAT, "%s: no column named \"%s\" in its header", path, column);
  }
  s->v = malloc(sizeof *s->v * (size_t)(n ? n : 1));
  if (!s->v) {
    rt_csv_free(&c);
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", path);
  }
  const float *x = c.x.data;
  for (int64_t i = 0; i < n; i++)
    s->v[i] = x[i * c.ncols + col];
  s->n = n;
  rt_csv_free(&c);
  return RT_OK;
}

/* Samples whose targets all lie in v[lo .. hi): s with lo <= s+W and s+W+H <= hi. */
static void sample_range(const RtSeriesSpec *sp, int64_t lo, int64_t hi, int64_t *first,
                         int64_t *count) {
  *first = lo > sp->window ? lo - sp->window : 0;
  int64_t last = hi - sp->window - sp->horizon;    /* the last s, inclusive */
  *count = last >= *first ? last - *first + 1 : 0;
}

/* Samples first .. first+count as x [count, W] and y [count, H], normalised. */
static RtStatus add_windows(const RtSeries *s, const RtSeriesSpec *sp, const RtSeriesNorm *nm,
                            int64_t first, int64_t count, const char *xname, const char *yname,
                            RtDataset *ds, RtError *err) {
  RtTensor x, y;
  int64_t W = sp->window, H = sp->horizon;
  RtStatus st = rt_tensor_alloc(&x, RT_F64, 2, (int64_t[]){count, W}, err);
  if (st != RT_OK)
    return st;
  if ((st = rt_tensor_alloc(&y, RT_F64, 2, (int64_t[]){count, H}, err)) != RT_OK) {
    rt_tensor_free(&x);
    return st;
  }
  double *xd = x.data, *yd = y.data;
  for (int64_t k = 0; k < count; k++) {
    for (int64_t i = 0; i < W; i++)
      xd[k * W + i] = (s->v[first + k + i] - nm->mean) / nm->std;
    for (int64_t i = 0; i < H; i++)
      yd[k * H + i] = (s->v[first + k + W + i] - nm->mean) / nm->std;
  }
  if ((st = rt_data_add(ds, xname, &x, err)) == RT_OK && (st = rt_data_add(ds, yname, &y, err)) == RT_OK)
    return RT_OK;
  rt_tensor_free(&x);
  rt_tensor_free(&y);
  return st;
}

static RtSeriesNorm fit_norm(const double *v, int64_t n) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; i++)
    mean += v[i];
  mean /= n;
  for (int64_t i = 0; i < n; i++)
    var += (v[i] - mean) * (v[i] - mean);
  double sd = sqrt(var / n);
  return (RtSeriesNorm){.mean = mean, .std = sd > 0 ? sd : 1};
}

RtStatus rt_series_windows(const RtSeries *s, const RtSeriesSpec *sp, const char *xname,
                           const char *yname, RtDataset *train, RtDataset *val,
                           RtSeriesNorm *norm, RtError *err) {
  int64_t n = s->n, cut = n - sp->validate, tf, tn, vf, vn;
  memset(train, 0, sizeof *train);
  memset(val, 0, sizeof *val);
  if (sp->window < 1 || sp->horizon < 1 || sp->validate < 0 || cut < 2)
    return rt_errorf(err, RT_ERR_ARG, "%lld values, window %lld, horizon %lld and %lld to "
                     "validate leave nothing to train on", (long long)n, (long long)sp->window,
                     (long long)sp->horizon, (long long)sp->validate);
  sample_range(sp, 0, cut, &tf, &tn);
  sample_range(sp, cut, n, &vf, &vn);
  if (tn < 1 || (sp->validate > 0 && vn < 1))
    return rt_errorf(err, RT_ERR_ARG, "%lld values make %lld training and %lld validation "
                     "windows of %lld inputs and %lld targets; each side needs one",
                     (long long)n, (long long)tn, (long long)vn, (long long)sp->window,
                     (long long)sp->horizon);
  *norm = fit_norm(s->v, cut);
  RtStatus st = add_windows(s, sp, norm, tf, tn, xname, yname, train, err);
  if (st == RT_OK && vn > 0)
    st = add_windows(s, sp, norm, vf, vn, xname, yname, val, err);
  if (st != RT_OK) {
    rt_data_free(train);
    rt_data_free(val);
  }
  return st;
}

void rt_errs_add(RtErrs *e, double pred, double target, double scale) {
  double d = (pred - target) * scale;
  e->abs += fabs(d);
  e->sq += d * d;
  e->n++;
}

double rt_errs_mae(const RtErrs *e) { return e->n ? e->abs / e->n : NAN; }
double rt_errs_rmse(const RtErrs *e) { return e->n ? sqrt(e->sq / e->n) : NAN; }

/* The seasonal-naive forecast of v[j], made at the end of the window that
 * ends before v[j - k + 1] (k = 1 .. H steps ahead): the value one period
 * before, or whole periods before when the horizon passes a period:
 * v[j - period * ceil(k / period)]. period 1 is persistence, the last
 * value seen. Over the same validation targets as the model. */
RtErrs rt_series_naive(const RtSeries *s, const RtSeriesSpec *sp, int64_t period) {
  RtErrs e = {0};
  int64_t first, count;
  sample_range(sp, s->n - sp->validate, s->n, &first, &count);
  for (int64_t k = 0; k < count && period > 0; k++)
    for (int64_t h = 1; h <= sp->horizon; h++) {
      int64_t j = first + k + sp->window + h - 1, back = period * ((h + period - 1) / period);
      if (j - back >= 0)
        rt_errs_add(&e, s->v[j - back], s->v[j], 1);
    }
  return e;
}

/* Training curves: a record per epoch, written as CSV, drawn as SVG, and
 * read for bias and variance.
 *
 * The SVG is written by hand, no library: a white canvas, a title, a
 * legend, then one panel per metric (loss; accuracy in percent when it was
 * measured). A panel is a frame with a grid at "nice" ticks (1, 2 or 5
 * times a power of ten, as plotting libraries choose them), tick labels,
 * axis labels, and one path per series, broken where a value is missing
 * (NaN) so that a diverged epoch shows as a gap, not a line to zero.
 * Training is solid blue, validation dashed orange, so the plot still
 * reads in grey. */
#include "runtime/rt.h"
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

RtEpochStats rt_epoch_blank(int epoch) {
  return (RtEpochStats){.epoch = epoch, .loss = NAN, .acc = NAN, .val_loss = NAN,
                        .val_acc = NAN, .lr = NAN, .seconds = NAN};
}

RtStatus rt_curves_add(RtCurves *c, const RtEpochStats *e, RtError *err) {
  if (c->n == c->cap) {
    int cap = c->cap ? c->cap * 2 : 16;
    RtEpochStats *grown = cap > c->cap ? realloc(c->e, (size_t)cap * sizeof *grown) : NULL;
    if (!grown)
      return rt_errorf(err, RT_ERR_NOMEM, "out of memory for %d epochs", cap);
    c->e = grown;
    c->cap = cap;
  }
  c->e[c->n++] = *e;
  return RT_OK;
}

void rt_curves_free(RtCurves *c) {
  if (!c)
    return;
  free(c->e);
  memset(c, 0, sizeof *c);
}

/* ---- CSV ---- */

static void csv_value(FILE *f, double v) {
  if (isfinite(v))
    fprintf(f, ",%.9g", v);
  else
    fputc(',', f);
}

/* Closes af: commits if every write went through, else removes the tmp. */
static RtStatus finish(RtAtomicFile *af, RtError *err) {
  if (ferror(af->f)) {
    RtStatus st = rt_errorf(err, RT_ERR_IO, "%s: write failed", af->path);
    rt_atomic_abort(af);
    return st;
  }
  return rt_atomic_commit(af, err);
}

RtStatus rt_curves_write_csv(const RtCurves *c, const char *path, RtError *err) {
  RtAtomicFile af;
  RtStatus st = rt_atomic_open(&af, path, err);
  if (st != RT_OK)
    return st;
  fputs("epoch,loss,acc,val_loss,val_acc,lr,seconds\n", af.f);
  for (int i = 0; i < c->n; i++) {
    const RtEpochStats *e = &c->e[i];
    fprintf(af.f, "%d", e->epoch);
    double v[6] = {e->loss, e->acc, e->val_loss, e->val_acc, e->lr, e->seconds};
    for (int k = 0; k < 6; k++)
      csv_value(af.f, v[k]);
    fputc('\n', af.f);
  }
  return finish(&af, err);
}

/* ---- SVG ---- */

enum {
  PANEL_W = 460, PANEL_H = 300,          /* one panel, margins included */
  MARGIN_L = 62, MARGIN_R = 14,          /* room for tick labels, the y label */
  MARGIN_T = 26, MARGIN_B = 46,          /* the panel title; tick labels and the x label */
  HEAD_H = 70,                           /* title and legend above the panels */
  MAX_MARKERS = 60,                      /* dots on the points up to this many epochs */
};

static const char *TRAIN_COLOR = "#1f77b4", *VAL_COLOR = "#ff7f0e", *VAL_DASH = "7 4";
static const char *FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";

/* An axis from lo to hi with a tick every step. */
typedef struct { double lo, hi, step; } Axis;

/* 1, 2 or 5 times a power of ten, near raw. */
static double nice_step(double raw) {
  double mag = pow(10, floor(log10(raw))), f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* About `ticks` intervals covering [lo, hi], widened to whole steps. */
static Axis nice_axis(double lo, double hi, int ticks, double min_step) {
  if (!(hi > lo)) {
    double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
    lo -= pad, hi += pad;
  }
  double step = fmax(nice_step((hi - lo) / ticks), min_step);
  return (Axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

/* The finite values of a field over the epochs: false if there are none. */
static bool field_range(const RtCurves *c, size_t off, double scale, double *lo, double *hi) {
  bool any = false;
  for (int i = 0; i < c->n; i++) {
    double v = *(const double *)((const char *)&c->e[i] + off) * scale;
    if (!isfinite(v))
      continue;
    *lo = any ? fmin(*lo, v) : v;
    *hi = any ? fmax(*hi, v) : v;
    any = true;
  }
  return any;
}

/* One metric: the fields of its training and validation series. */
typedef struct {
  const char *title, *ylabel;
  size_t train, val;         /* offsetof into RtEpochStats */
  double scale;              /* 100 for a percentage */
  double floor, ceil;        /* the axis stays within (NAN: unbounded) */
} Metric;

static const Metric LOSS = {"Loss", "loss", offsetof(RtEpochStats, loss),
                            offsetof(RtEpochStats, val_loss), 1, NAN, NAN};
static const Metric ACC = {"Accuracy", "accuracy (%)", offsetof(RtEpochStats, acc),
                           offsetof(RtEpochStats, val_acc), 100, 0, 100};

typedef struct {
  FILE *f;
  double x, y, w, h;         /* the plot area */
  Axis xa, ya;
} Panel;

static double px(const Panel *p, double v) { return p->x + (v - p->xa.lo) / (p->xa.hi - p->xa.lo) * p->w; }
static double py(const Panel *p, double v) { return p->y + p->h - (v - p->ya.lo) / (p->ya.hi - p->ya.lo) * p->h; }

static void xml_text(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    default: fputc(*s, f);
    }
  }
}

static int tick_decimals(double step) {
  int d = (int)ceil(-log10(step) - 1e-6);
  return d > 0 ? d : 0;
}

static void grid_and_ticks(const Panel *p) {
  const Axis *ax[2] = {&p->xa, &p->ya};
  for (int a = 0; a < 2; a++) {
    int n = (int)lround((ax[a]->hi - ax[a]->lo) / ax[a]->step), dec = tick_decimals(ax[a]->step);
    for (int k = 0; k <= n; k++) {
      double v = ax[a]->lo + k * ax[a]->step;
      if (a == 0) {
        double x = px(p, v);
        fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"tick\">%.*f</text>\n",
                x, p->y, x, p->y + p->h + 4, x, p->y + p->h + 18, dec, v);
      } else {
        double y = py(p, v);
        fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tick\">%.*f</text>\n",
                p->x - 4, y, p->x + p->w, y, p->x - 7, y + 4, dec, v);
      }
    }
  }
}

/* A series as a path broken at missing values, and dots when few. */
static void series(const Panel *p, const RtCurves *c, size_t off, double scale, const char *color,
                   const char *dash) {
  bool pen_down = false;
  fprintf(p->f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\"%s%s%s d=\"",
          color, dash ? " stroke-dasharray=\"" : "", dash ? dash : "", dash ? "\"" : "");
  for (int i = 0; i < c->n; i++) {
    double v = *(const double *)((const char *)&c->e[i] + off) * scale;
    if (!isfinite(v)) {
      pen_down = false;
      continue;
    }
    fprintf(p->f, "%s%.1f %.1f ", pen_down ? "L" : "M", px(p, c->e[i].epoch), py(p, v));
    pen_down = true;
  }
  fputs("\"/>\n", p->f);
  for (int i = 0; c->n <= MAX_MARKERS && i < c->n; i++) {
    double v = *(const double *)((const char *)&c->e[i] + off) * scale;
    if (isfinite(v))
      fprintf(p->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.8\" fill=\"%s\"/>\n", px(p, c->e[i].epoch),
              py(p, v), color);
  }
}

static Axis y_axis(const RtCurves *c, const Metric *m) {
  double lo = 0, hi = 1, vlo = 0, vhi = 1;
  bool t = field_range(c, m->train, m->scale, &lo, &hi);
  if (field_range(c, m->val, m->scale, &vlo, &vhi)) {
    lo = t ? fmin(lo, vlo) : vlo;
    hi = t ? fmax(hi, vhi) : vhi;
  }
  bool nonneg = lo >= 0;
  Axis a = nice_axis(lo, hi, 5, 0);
  if (nonneg && a.lo < 0)      /* a loss never goes below zero: neither does its axis */
    a.lo = 0;
  if (isfinite(m->floor) && a.lo < m->floor)
    a.lo = m->floor;
  if (isfinite(m->ceil) && a.hi > m->ceil)
    a.hi = m->ceil;
  return a;
}

static void panel(FILE *f, const RtCurves *c, const Metric *m, double x0, double y0, Axis xa) {
  Panel p = {.f = f, .x = x0 + MARGIN_L, .y = y0 + MARGIN_T, .w = PANEL_W - MARGIN_L - MARGIN_R,
             .h = PANEL_H - MARGIN_T - MARGIN_B, .xa = xa, .ya = y_axis(c, m)};
  fprintf(f, "<g>\n<text x=\"%.1f\" y=\"%.1f\" class=\"ptitle\">%s</text>\n", p.x, y0 + 16, m->title);
  fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ffffff\"/>\n", p.x,
          p.y, p.w, p.h);
  grid_and_ticks(&p);
  series(&p, c, m->train, m->scale, TRAIN_COLOR, NULL);
  series(&p, c, m->val, m->scale, VAL_COLOR, VAL_DASH);
  fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n", p.x,
          p.y, p.w, p.h);
  fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"label\">epoch</text>\n",
          p.x + p.w / 2, p.y + p.h + 36);
  fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" "
          "class=\"label\">%s</text>\n</g>\n", x0 + 16, p.y + p.h / 2, m->ylabel);
}

static void legend_entry(FILE *f, double x, double y, const char *color, const char *dash,
                         const char *label) {
  fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"%s%s%s/>\n"
          "<text x=\"%.1f\" y=\"%.1f\" class=\"label\">%s</text>\n",
          x, y, x + 28, y, color, dash ? " stroke-dasharray=\"" : "", dash ? dash : "",
          dash ? "\"" : "", x + 34, y + 4.5, label);
}

/* The caption, wrapped at spaces into lines of at most `width` characters. */
static int caption_lines(FILE *f, const char *s, int width, double x, double y) {
  int lines = 0;
  while (*s) {
    size_t n = strlen(s);
    if (n > (size_t)width) {
      n = (size_t)width;
      while (n > 0 && s[n] != ' ')
        n--;
      if (n == 0)
        n = (size_t)width;
    }
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), s);
    if (f) {
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"caption\">", x, y + 16 * lines);
      xml_text(f, line);
      fputs("</text>\n", f);
    }
    lines++;
    s += n;
    while (*s == ' ')
      s++;
  }
  return lines;
}

static Axis epoch_axis(const RtCurves *c) {
  double lo = c->n ? c->e[0].epoch : 1, hi = lo;
  for (int i = 0; i < c->n; i++) {
    lo = fmin(lo, c->e[i].epoch);
    hi = fmax(hi, c->e[i].epoch);
  }
  return nice_axis(lo, hi, 6, 1);
}

static void svg_body(FILE *f, const RtCurves *c, const char *title, const char *caption) {
  double lo, hi;
  bool has_acc = field_range(c, ACC.train, 1, &lo, &hi) || field_range(c, ACC.val, 1, &lo, &hi);
  bool has_val = field_range(c, LOSS.val, 1, &lo, &hi) || field_range(c, ACC.val, 1, &lo, &hi);
  int panels = has_acc ? 2 : 1, width = 20 + panels * PANEL_W + 10;
  int wrap = (width - 40) / 7;
  int cap_lines = caption ? caption_lines(NULL, caption, wrap, 0, 0) : 0;
  int height = HEAD_H + PANEL_H + 10 + 16 * cap_lines;
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
          "font-family=\"%s\">\n<style>\n"
          ".grid{stroke:#e4e4e4;stroke-width:1}.frame{fill:none;stroke:#666;stroke-width:1}\n"
          ".tick{font-size:11px;fill:#444}.label{font-size:13px;fill:#222}\n"
          ".ptitle{font-size:14px;font-weight:bold;fill:#222}.title{font-size:17px;fill:#111}\n"
          ".caption{font-size:12px;fill:#333}\n</style>\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n",
          width, height, width, height, FONT);
  fprintf(f, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" class=\"title\">", width / 2);
  xml_text(f, title ? title : "Training curves");
  fputs("</text>\n", f);
  double lx = width / 2.0 - (has_val ? 110 : 45);
  legend_entry(f, lx, 52, TRAIN_COLOR, NULL, "training");
  if (has_val)
    legend_entry(f, lx + 120, 52, VAL_COLOR, VAL_DASH, "validation");
  Axis xa = epoch_axis(c);
  panel(f, c, &LOSS, 20, HEAD_H, xa);
  if (has_acc)
    panel(f, c, &ACC, 20 + PANEL_W, HEAD_H, xa);
  if (caption)
    caption_lines(f, caption, wrap, 20 + MARGIN_L - 40, HEAD_H + PANEL_H + 14);
  fputs("</svg>\n", f);
}

RtStatus rt_curves_write_svg(const RtCurves *c, const char *path, const char *title,
                             const char *caption, RtError *err) {
  RtAtomicFile af;
  RtStatus st = rt_atomic_open(&af, path, err);
  if (st != RT_OK)
    return st;
  svg_body(af.f, c, title, caption);
  return finish(&af, err);
}

/* ---- the bias/variance reading ---- */

typedef struct {
  bool bias, variance, judged_variance;
  char what[512];            /* the numbers, clause after clause */
  size_t at;
} Reading;

static void say(Reading *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(Reading *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (r->at < sizeof r->what) {
    int n = vsnprintf(r->what + r->at, sizeof r->what - r->at, fmt, ap);
    r->at += n > 0 ? (size_t)n : 0;
  }
  va_end(ap);
}

static void read_accuracy(Reading *r, const RtEpochStats *e, const RtFitThresholds *th) {
  r->bias = e->acc < th->min_acc;
  say(r, "training accuracy %.1f%%", 100 * e->acc);
  if (r->bias)
    say(r, " is below %.4g%%", 100 * th->min_acc);
  if (!isfinite(e->val_acc))
    return;
  double gap = e->acc - e->val_acc;
  r->judged_variance = true;
  r->variance = gap > th->max_acc_gap;
  say(r, ", validation %.1f%% (gap %.1f points, %s %.4g)", 100 * e->val_acc, 100 * gap,
      r->variance ? "above" : "at most", 100 * th->max_acc_gap);
}

static void read_loss(Reading *r, const RtCurves *c, const RtEpochStats *e, const RtFitThresholds *th) {
  double first = c->e[0].loss;
  if (c->n > 1 && isfinite(first) && first > 0) {
    r->bias = e->loss > (1 - th->min_loss_drop) * first;
    say(r, "training loss %.4g is %.0f%% of the first epoch's %.4g (%s %.0f%%)", e->loss,
        100 * e->loss / first, first, r->bias ? "above" : "at most", 100 * (1 - th->min_loss_drop));
  } else {
    say(r, "training loss %.4g", e->loss);
  }
  if (!isfinite(e->val_loss))
    return;
  double rel = e->loss > 0 ? (e->val_loss - e->loss) / e->loss : 0;
  r->judged_variance = true;
  r->variance = rel > th->max_loss_gap;
  say(r, ", validation loss %.4g (%.0f%% above, %s %.0f%%)", e->val_loss, 100 * rel,
      r->variance ? "more than" : "at most", 100 * th->max_loss_gap);
}

/* Overfitting shows as a validation loss that turned up again. */
static void read_rise(Reading *r, const RtCurves *c, const RtFitThresholds *th) {
  int best = -1;
  for (int i = 0; i < c->n; i++)
    if (isfinite(c->e[i].val_loss) && (best < 0 || c->e[i].val_loss < c->e[best].val_loss))
      best = i;
  double last = c->e[c->n - 1].val_loss, min = best >= 0 ? c->e[best].val_loss : NAN;
  if (best < 0 || !isfinite(last) || !(min > 0) || last <= (1 + th->max_val_rise) * min)
    return;
  r->variance = r->judged_variance = true;
  say(r, "; validation loss %.4g is %.0f%% above its minimum %.4g at epoch %d", last,
      100 * (last / min - 1), min, c->e[best].epoch);
}

static RtFit verdict(const Reading *r, char *buf, size_t len) {
  static const char *names[] = {"good fit", "high bias", "high variance", "high bias and high variance"};
  static const char *advice[] = {"", ": a bigger model or longer training should help",
                                 ": more data, regularisation or early stopping should help",
                                 ": first a bigger model or longer training, then regularisation"};
  int k = r->bias + 2 * r->variance;
  if (!r->judged_variance) {
    snprintf(buf, len, "%s: %s%s; no validation numbers, so variance is not judged",
             r->bias ? "high bias" : "no high bias", r->what, advice[k]);
    return r->bias ? RT_FIT_BIAS : RT_FIT_UNKNOWN;
  }
  snprintf(buf, len, "%s: %s%s", names[k], r->what, advice[k]);
  return k == 0 ? RT_FIT_GOOD : k == 1 ? RT_FIT_BIAS : k == 2 ? RT_FIT_VARIANCE : RT_FIT_BOTH;
}

RtFit rt_bias_variance_reading(const RtCurves *c, const RtFitThresholds *th, char *buf, size_t len) {
  RtFitThresholds t = th ? *th : RT_FIT_DEFAULTS;
  if (c->n == 0) {
    snprintf(buf, len, "no epochs recorded");
    return RT_FIT_UNKNOWN;
  }
  const RtEpochStats *e = &c->e[c->n - 1];
  if (!isfinite(e->loss)) {
    snprintf(buf, len, "the training loss is %g at epoch %d: training diverged (try a lower "
             "learning rate)", e->loss, e->epoch);
    return RT_FIT_UNKNOWN;
  }
  Reading r = {0};
  if (isfinite(e->acc))
    read_accuracy(&r, e, &t);
  else
    read_loss(&r, c, e, &t);
  read_rise(&r, c, &t);
  return verdict(&r, buf, len);
}

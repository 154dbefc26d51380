/* A progress bar for training.
 *
 * One formatter builds the status line (epoch, samples, throughput, loss,
 * accuracy, ETA); the two modes differ only in how it reaches the stream.
 * On a terminal the line is redrawn in place: '\r', the line with a bar,
 * then ESC[K to erase what a longer previous line left, at most ten times
 * a second. Anywhere else (a log, a pipe, CI) carriage returns would pile
 * up as garbage, so a plain line is written at most every `every` seconds.
 * Both end each epoch with a summary line that stays.
 *
 * Throughput counts training samples over the time up to the last update,
 * so validation after the epoch does not dilute it; the ETA extrapolates
 * the whole run so far (validation included) to the samples left. */
#include "runtime/rt.h"
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { BAR_CELLS = 20 };
static const double REDRAW_SECONDS = 0.1;

static double clock_seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double rt_monotonic_seconds(void) { return clock_seconds(CLOCK_MONOTONIC); }

double rt_thread_cpu_seconds(void) { return clock_seconds(CLOCK_THREAD_CPUTIME_ID); }

void rt_progress_init(RtProgress *p, FILE *out, int epochs, int64_t samples_per_epoch) {
  *p = (RtProgress){.out = out, .tty = out && isatty(fileno(out)), .epochs = epochs,
                    .total = samples_per_epoch, .unit = "samples", .every = 5,
                    .clock = rt_monotonic_seconds};
  struct winsize ws;
  if (p->tty && ioctl(fileno(out), TIOCGWINSZ, &ws) == 0)
    p->width = ws.ws_col;
}

void rt_progress_begin_epoch(RtProgress *p, int epoch) {
  double now = p->clock();
  if (p->first_epoch == 0) {
    p->first_epoch = epoch;
    p->t_run = now;
  }
  p->epoch = epoch;
  p->done = 0;
  p->t_epoch = p->t_done = p->t_drawn = now;
}

/* A text buffer that ignores what does not fit. */
typedef struct {
  char s[512];
  size_t at;
} Line;

static void put(Line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Line *l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (l->at < sizeof l->s) {
    int n = vsnprintf(l->s + l->at, sizeof l->s - l->at, fmt, ap);
    l->at += n > 0 ? (size_t)n : 0;
  }
  va_end(ap);
}

/* "2:05" or "1:02:05". */
static void put_duration(Line *l, double seconds) {
  long s = lround(seconds);
  if (s >= 3600)
    put(l, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    put(l, "%ld:%02ld", s / 60, s % 60);
}

static void put_bar(Line *l, int64_t done, int64_t total) {
  int full = total > 0 ? (int)(done * BAR_CELLS / total) : BAR_CELLS;
  put(l, " [");
  for (int i = 0; i < BAR_CELLS; i++)
    put(l, "%c", i < full ? '=' : i == full ? '>' : '.');
  put(l, "]");
}

static void put_rate(Line *l, const RtProgress *p) {
  double dt = p->t_done - p->t_epoch;
  if (dt > 0)
    put(l, "  %.0f %s/s", p->done / dt, p->unit);
}

static void put_metric(Line *l, const char *name, double v, bool percent) {
  if (isfinite(v) && percent)
    put(l, "  %s %.2f%%", name, 100 * v);
  else if (isfinite(v))
    put(l, "  %s %.4g", name, v);
}

/* Seconds left, from the pace of the run so far; negative if unknown. */
static double eta(const RtProgress *p, double now) {
  int64_t run = (int64_t)(p->epoch - p->first_epoch) * p->total + p->done;
  int64_t left = (int64_t)(p->epochs - p->epoch) * p->total + (p->total - p->done);
  if (run <= 0 || now <= p->t_run)
    return -1;
  return (now - p->t_run) / (double)run * (double)(left > 0 ? left : 0);
}

/* A line that wrapped could not be redrawn by '\r': clip it to the
 * terminal, unless it is kept (ends the epoch), where wrapping is harmless. */
static void emit(RtProgress *p, Line *l, bool keep, double now) {
  if (p->tty && !keep && p->width > 1 && strlen(l->s) >= (size_t)p->width)
    l->s[p->width - 1] = 0;
  if (p->tty)
    fprintf(p->out, "\r%s\033[K%s", l->s, keep ? "\n" : "");
  else
    fprintf(p->out, "%s\n", l->s);
  fflush(p->out);
  p->t_drawn = now;
}

void rt_progress_update(RtProgress *p, int64_t done, double loss, double acc) {
  double now = p->clock();
  p->done = done;
  p->t_done = now;
  bool due = p->tty ? now - p->t_drawn >= REDRAW_SECONDS || done >= p->total
                    : now - p->t_drawn >= p->every;
  if (!p->out || !due)
    return;
  Line l = {.at = 0};
  put(&l, "epoch %d/%d", p->epoch, p->epochs);
  if (p->tty)
    put_bar(&l, done, p->total);
  put(&l, " %lld/%lld", (long long)done, (long long)p->total);
  if (!p->tty && p->total > 0)
    put(&l, " (%d%%)", (int)(done * 100 / p->total));
  put_rate(&l, p);
  put_metric(&l, "loss", loss, false);
  put_metric(&l, "acc", acc, true);
  double left = eta(p, now);
  if (left >= 0) {
    put(&l, "  eta ");
    put_duration(&l, left);
  }
  emit(p, &l, false, now);
}

void rt_progress_end_epoch(RtProgress *p, const RtEpochStats *e) {
  double now = p->clock();
  if (!p->out)
    return;
  if (p->done != p->total) {    /* the epoch is over: updates may have skipped its end */
    p->done = p->total;
    p->t_done = now;
  }
  Line l = {.at = 0};
  put(&l, "epoch %d/%d %lld/%lld  ", p->epoch, p->epochs, (long long)p->done, (long long)p->total);
  if (now - p->t_epoch < 60)
    put(&l, "%.1f s", now - p->t_epoch);
  else
    put_duration(&l, now - p->t_epoch);
  put_rate(&l, p);
  put_metric(&l, "loss", e ? e->loss : NAN, false);
  put_metric(&l, "acc", e ? e->acc : NAN, true);
  put_metric(&l, "val_loss", e ? e->val_loss : NAN, false);
  put_metric(&l, "val_acc", e ? e->val_acc : NAN, true);
  put_metric(&l, "lr", e ? e->lr : NAN, false);
  emit(p, &l, true, now);
}

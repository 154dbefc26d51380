/* Numeric CSV files into an f32 matrix and, optionally, i64 labels.
 *
 * One pass over the bytes (the file's, or the inflated ones of a .gz): a
 * row is read as a list of cells (pointers into the buffer, nothing
 * copied), checked against the first row's field count, and its numbers are
 * stored straight into the output tensors. Those are allocated once the
 * first row gives the column count, for an upper bound of the rows: no more
 * than the '\n's plus one, and no more than the bytes allow, since a valid
 * row of c numbers takes at least 2c - 1 bytes. So a hostile file cannot
 * make the bound exceed its own size in cells.
 *
 * Errors stop at the first bad cell and say where it is as a compiler
 * would: "digits.csv:3:17: field 9 (pix8) is not a number: 'abc'". */
#include "runtime/rt.h"
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *p;             /* the text: after the opening quote when quoted */
  size_t n;
  bool quoted;               /* "" inside stands for one quote */
  int64_t line;              /* where the cell starts, 1-based */
  size_t col;                /* byte column, 1-based */
} Cell;

typedef struct {
  const char *s, *name;
  size_t len, pos;
  int64_t line;              /* line of pos, 1-based */
  size_t line_start;         /* offset of that line */
  Cell *cells;               /* the row just read: cells[0..min(ncells, limit)) */
  int ncells, cap, limit;
  int64_t end_line;          /* the row's last line */
  size_t end_col;            /* and the column after its last byte */
  char **names;              /* header names for messages, or NULL */
  RtStatus st;               /* of the first error */
  RtError *err;
} Csv;

enum { NUM_OK, NUM_EMPTY, NUM_BAD, NUM_NAN, NUM_INF };

/* Records the first error; always false, so a failing path is `return fail(...)`. */
static bool fail(Csv *c, RtStatus st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(Csv *c, RtStatus st, const char *fmt, ...) {
  c->st = st;
  if (c->err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->msg, sizeof c->err->msg, fmt, ap);
    va_end(ap);
  }
  return false;
}

/* A cell's text for a message: at most 40 bytes, non-printables escaped. */
static const char *cell_text(const Cell *cell, char *buf, size_t size) {
  size_t at = 0, i = 0;
  for (; i < cell->n && i < 40 && at + 5 < size; i++) {
    unsigned char ch = (unsigned char)cell->p[i];
    if (ch >= 0x20 && ch < 0x7f)
      buf[at++] = (char)ch;
    else
      at += (size_t)snprintf(buf + at, size - at, "\\x%02x", ch);
  }
  snprintf(buf + at, size - at, i < cell->n ? "..." : "");
  return buf;
}

/* "file:line:col: field 9 (name) <what>: 'text'"; show_text false omits the text. */
static bool cell_error(Csv *c, const Cell *cell, int field, const char *what, bool show_text) {
  char text[256], name[256], label[260] = "";
  if (c->names) {              /* the header's name for the field, escaped like a cell */
    Cell named = {.p = c->names[field], .n = strlen(c->names[field])};
    snprintf(label, sizeof label, " (%s)", cell_text(&named, name, sizeof name));
  }
  return fail(c, RT_ERR_FORMAT, "%s:%lld:%zu: field %d%s %s%s%s%s", c->name,
              (long long)cell->line, cell->col, field + 1, label, what, show_text ? ": '" : "",
              show_text ? cell_text(cell, text, sizeof text) : "", show_text ? "'" : "");
}

static bool error_at(Csv *c, int64_t line, size_t col, const char *what) {
  return fail(c, RT_ERR_FORMAT, "%s:%lld:%zu: %s", c->name, (long long)line, col, what);
}

static bool is_pad(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

static void new_line(Csv *c, size_t at) {
  c->line++;
  c->line_start = at;
}

/* quoted = '"' { char | '""' } '"' pad*, ending at ',' '\n' or the end. */
static bool read_quoted(Csv *c, Cell *cell) {
  const char *s = c->s;
  cell->quoted = true;
  cell->p = s + ++c->pos;
  for (;; c->pos++) {
    if (c->pos >= c->len)
      return error_at(c, cell->line, cell->col, "unterminated quoted field");
    if (s[c->pos] == '"' && c->pos + 1 < c->len && s[c->pos + 1] == '"')
      c->pos++;
    else if (s[c->pos] == '"')
      break;
    else if (s[c->pos] == '\n')
      new_line(c, c->pos + 1);
  }
  cell->n = (size_t)(s + c->pos++ - cell->p);
  while (c->pos < c->len && is_pad(s[c->pos]))
    c->pos++;
  if (c->pos < c->len && s[c->pos] != ',' && s[c->pos] != '\n')
    return error_at(c, c->line, c->pos - c->line_start + 1, "text after a closing quote");
  return true;
}

/* One cell at pos, without its padding; pos is left on the ',' or '\n'
 * after it, or at the end. */
static bool read_cell(Csv *c, Cell *cell) {
  const char *s = c->s;
  while (c->pos < c->len && (s[c->pos] == ' ' || s[c->pos] == '\t'))
    c->pos++;
  *cell = (Cell){.line = c->line, .col = c->pos - c->line_start + 1};
  if (c->pos < c->len && s[c->pos] == '"')
    return read_quoted(c, cell);
  size_t start = c->pos;
  while (c->pos < c->len && s[c->pos] != ',' && s[c->pos] != '\n')
    c->pos++;
  size_t end = c->pos;
  while (end > start && is_pad(s[end - 1]))
    end--;
  cell->p = s + start;
  cell->n = end - start;
  return true;
}

static bool keep_cell(Csv *c, const Cell *cell) {
  if (c->ncells == INT_MAX)
    return error_at(c, cell->line, cell->col, "too many fields");
  if (c->ncells < c->limit && c->ncells == c->cap) {
    int cap = c->cap ? (c->cap < INT_MAX / 2 ? c->cap * 2 : INT_MAX) : 64;
    Cell *grown = realloc(c->cells, (size_t)cap * sizeof *grown);
    if (!grown)
      return fail(c, RT_ERR_NOMEM, "%s:%lld: out of memory for %d fields", c->name,
                  (long long)cell->line, cap);
    c->cells = grown;
    c->cap = cap;
  }
  if (c->ncells < c->limit)
    c->cells[c->ncells] = *cell;
  c->ncells++;
  return true;
}

/* row = cell { ',' cell } ( '\n' | end ). Cells past `limit` are counted,
 * not kept. */
static bool read_row(Csv *c) {
  c->ncells = 0;
  for (;;) {
    Cell cell;
    if (!read_cell(c, &cell) || !keep_cell(c, &cell))
      return false;
    if (c->pos < c->len && c->s[c->pos] == ',') {
      c->pos++;
      continue;
    }
    break;
  }
  c->end_line = c->line;
  c->end_col = c->pos - c->line_start + 1 - (c->pos > c->line_start && c->s[c->pos - 1] == '\r');
  if (c->pos < c->len)
    new_line(c, ++c->pos);
  return true;
}

static bool row_blank(const Csv *c) {
  return c->ncells == 1 && !c->cells[0].quoted && c->cells[0].n == 0;
}

/* The next row that is not blank: 1, 0 at the end, -1 on an error. */
static int next_row(Csv *c) {
  while (c->pos < c->len) {
    if (!read_row(c))
      return -1;
    if (!row_blank(c))
      return 1;
  }
  return 0;
}

static int parse_number(const Cell *cell, double *out) {
  char buf[128];              /* %.17g needs 24; longer is not a number */
  if (cell->n == 0)
    return NUM_EMPTY;
  if (cell->n >= sizeof buf)
    return NUM_BAD;
  memcpy(buf, cell->p, cell->n);
  buf[cell->n] = 0;
  char *end;
  double v = strtod(buf, &end);
  if (end == buf || end != buf + cell->n)
    return NUM_BAD;
  if (isnan(v))
    return NUM_NAN;
  if (isinf(v))
    return NUM_INF;
  *out = v;
  return NUM_OK;
}

static bool number_error(Csv *c, const Cell *cell, int field, int kind) {
  switch (kind) {
  case NUM_EMPTY: return cell_error(c, cell, field, "is empty", false);
  case NUM_NAN: return cell_error(c, cell, field, "is NaN", true);
  case NUM_INF: return cell_error(c, cell, field, "is infinite or out of range", true);
  default: return cell_error(c, cell, field, "is not a number", true);
  }
}

static bool row_numeric(const Csv *c) {
  for (int i = 0; i < c->ncells; i++) {
    double v;
    if (parse_number(&c->cells[i], &v) == NUM_BAD)
      return false;
  }
  return true;
}

/* A header cell as a C string: quotes resolved, NULs refused. */
static char *cell_name(Csv *c, RtArena *a, const Cell *cell, int field) {
  char *s = rt_arena_alloc(a, cell->n + 1);
  if (!s) {
    fail(c, RT_ERR_NOMEM, "%s: out of memory for the header", c->name);
    return NULL;
  }
  size_t n = 0;
  for (size_t i = 0; i < cell->n; i++) {
    if (cell->p[i] == 0) {
      cell_error(c, cell, field, "is a header name holding a NUL byte", false);
      return NULL;
    }
    s[n++] = cell->p[i];
    if (cell->quoted && cell->p[i] == '"')
      i++;
  }
  s[n] = 0;
  return s;
}

static bool read_header(Csv *c, RtCsv *out) {
  if (!(out->arena = rt_arena_new()) ||
      !(out->names = rt_arena_alloc(out->arena, (size_t)c->ncells * sizeof *out->names)))
    return fail(c, RT_ERR_NOMEM, "%s: out of memory for the header", c->name);
  for (int i = 0; i < c->ncells; i++)
    if (!(out->names[i] = cell_name(c, out->arena, &c->cells[i], i)))
      return false;
  c->names = out->names;
  return true;
}

static bool label_by_name(Csv *c, const RtCsv *out, const char *name, int *col) {
  if (!out->names)
    return fail(c, RT_ERR_ARG, "%s: label column '%s' is named but the file has no header",
                c->name, name);
  *col = -1;
  for (int i = 0; i < out->ncols; i++) {
    if (strcmp(out->names[i], name) != 0)
      continue;
    if (*col >= 0)
      return fail(c, RT_ERR_ARG, "%s: label column '%s' appears twice (fields %d and %d)",
                  c->name, name, *col + 1, i + 1);
    *col = i;
  }
  if (*col < 0)
    return fail(c, RT_ERR_ARG, "%s: no column named '%s' in the header", c->name, name);
  return true;
}

static bool resolve_label(Csv *c, const RtCsvOptions *opt, RtCsv *out) {
  out->label_col = -1;
  if (!opt->has_label)
    return true;
  int col = opt->label < 0 ? out->ncols + opt->label : opt->label;
  if (opt->label_name && !label_by_name(c, out, opt->label_name, &col))
    return false;
  if (col < 0 || col >= out->ncols)
    return fail(c, RT_ERR_ARG, "%s: label column %d is outside the file's %d columns",
                c->name, opt->label, out->ncols);
  if (out->ncols == 1)
    return fail(c, RT_ERR_ARG, "%s: the label is the only column, no features are left", c->name);
  out->label_col = col;
  return true;
}

/* The most valid rows that can still follow at pos: one per '\n' and one
 * more, and as many as the bytes left allow, since a valid row of c
 * numbers takes at least 2c - 1 bytes and a '\n' separates rows. */
static int64_t rows_bound(const Csv *c, int ncols) {
  int64_t lines = 1;
  for (const char *p = c->s + c->pos, *end = c->s + c->len;
       (p = memchr(p, '\n', (size_t)(end - p))); p++)
    lines++;
  int64_t by_size = (int64_t)((c->len - c->pos + 1) / (2 * (uint64_t)ncols));
  return lines < by_size ? lines : by_size;
}

static bool alloc_outputs(Csv *c, RtCsv *out, int64_t cap) {
  int64_t xshape[2] = {cap, out->ncols - (out->label_col >= 0)};
  RtError e;
  RtStatus st = rt_tensor_alloc(&out->x, RT_F32, 2, xshape, &e);
  if (st == RT_OK && out->label_col >= 0)
    st = rt_tensor_alloc(&out->y, RT_I64, 1, &cap, &e);
  return st == RT_OK || fail(c, st, "%s: %s", c->name, e.msg);
}

static bool store_label(Csv *c, const Cell *cell, int field, int64_t *dst) {
  double v = 0;
  int kind = parse_number(cell, &v);
  if (kind != NUM_OK)
    return number_error(c, cell, field, kind);
  if (v != floor(v) || fabs(v) > 9007199254740992.0)   /* 2^53: exact in a double */
    return cell_error(c, cell, field, "is a label but not an integer", true);
  *dst = (int64_t)v;
  return true;
}

static bool store_row(Csv *c, RtCsv *out, int64_t row, double scale) {
  if (c->ncells != out->ncols) {
    char msg[96];
    snprintf(msg, sizeof msg, "row has %d field%s, expected %d", c->ncells,
             c->ncells == 1 ? "" : "s", out->ncols);
    if (c->ncells > out->ncols)   /* point at the first extra field */
      return error_at(c, c->cells[out->ncols].line, c->cells[out->ncols].col, msg);
    return error_at(c, c->end_line, c->end_col, msg);
  }
  float *x = (float *)out->x.data + row * out->x.shape[1];
  for (int i = 0; i < c->ncells; i++) {
    const Cell *cell = &c->cells[i];
    if (i == out->label_col) {
      if (!store_label(c, cell, i, (int64_t *)out->y.data + row))
        return false;
      continue;
    }
    double v = 0;
    int kind = parse_number(cell, &v);
    if (kind != NUM_OK)
      return number_error(c, cell, i, kind);
    if (fabs(v * scale) > FLT_MAX)
      return cell_error(c, cell, i, "is out of the f32 range", true);
    *x++ = (float)(v * scale);
  }
  return true;
}

/* The data rows, the first of them possibly already read. One row more
 * than the bound is allocated: a row stored there cannot be valid, and so
 * gets to report its own error. */
static bool read_rows(Csv *c, RtCsv *out, bool pending, double scale) {
  int64_t cap = rows_bound(c, out->ncols) + pending, rows = 0;
  if (!alloc_outputs(c, out, cap + 1))
    return false;
  c->limit = out->ncols + 1;
  for (;; pending = false) {
    int r = pending ? 1 : next_row(c);
    if (r < 0)
      return false;
    if (r == 0)
      break;
    if (rows > cap)    /* unreachable: row `cap` failed in store_row */
      return error_at(c, c->line, 1, "more rows than the file can hold");
    if (!store_row(c, out, rows++, scale))
      return false;
  }
  if (rows == 0)
    return fail(c, RT_ERR_FORMAT, "%s: no data rows", c->name);
  out->x.shape[0] = rows;
  if (out->label_col >= 0)
    out->y.shape[0] = rows;
  return true;
}

static bool csv_parse(Csv *c, const RtCsvOptions *opt, RtCsv *out) {
  double scale = opt->scale == 0 ? 1 : opt->scale;
  if (!isfinite(scale))
    return fail(c, RT_ERR_ARG, "%s: scale %g is not finite", c->name, scale);
  if (c->len >= 3 && memcmp(c->s, "\xef\xbb\xbf", 3) == 0)   /* UTF-8 byte order mark */
    c->pos = c->line_start = 3;
  c->limit = INT_MAX;
  int r = next_row(c);
  if (r <= 0)
    return r == 0 ? fail(c, RT_ERR_FORMAT, "%s: no data rows", c->name) : false;
  out->ncols = c->ncells;
  bool header = opt->header == RT_CSV_HEADER_YES ||
                (opt->header == RT_CSV_HEADER_AUTO && !row_numeric(c));
  if (header && !read_header(c, out))
    return false;
  return resolve_label(c, opt, out) && read_rows(c, out, !header, scale);
}

static RtStatus csv_load(const RtBytes *b, const char *name, const RtCsvOptions *opt, RtCsv *out,
                         RtError *err) {
  static const RtCsvOptions defaults = {0};
  Csv c = {.s = (const char *)b->data, .name = name, .len = b->len, .line = 1, .err = err};
  bool ok = csv_parse(&c, opt ? opt : &defaults, out);
  free(c.cells);
  if (!ok)
    rt_csv_free(out);
  return ok ? RT_OK : c.st;
}

RtStatus rt_csv_read(const char *path, const RtCsvOptions *opt, RtCsv *out, RtError *err) {
  RtBytes b;
  memset(out, 0, sizeof *out);
  RtStatus st = rt_bytes_file(&b, path, err);
  if (st != RT_OK)
    return st;
  st = csv_load(&b, path, opt, out, err);
  rt_bytes_free(&b);
  return st;
}

RtStatus rt_csv_read_mem(const void *buf, size_t len, const char *name, const RtCsvOptions *opt,
                         RtCsv *out, RtError *err) {
  RtBytes b;
  memset(out, 0, sizeof *out);
  name = name ? name : "<memory>";
  RtStatus st = rt_bytes_mem(&b, buf, len, name, err);
  if (st != RT_OK)
    return st;
  st = csv_load(&b, name, opt, out, err);
  rt_bytes_free(&b);
  return st;
}

void rt_csv_free(RtCsv *c) {
  if (!c)
    return;
  rt_tensor_free(&c->x);
  rt_tensor_free(&c->y);
  rt_arena_free(c->arena);
  memset(c, 0, sizeof *c);
}

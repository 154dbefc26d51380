/* The program `kiln build` writes: the model's object, this main, and the
 * runtime. It reads inputs from .npy files (or CSV rows on standard input),
 * runs the model in chunks of at most its compiled batch, and writes the
 * outputs to .npy files (or CSV rows on standard output). Every mistake is a
 * message naming the file, the input and the shapes, and exit status 1;
 * a usage error is status 2. */
#include "runtime/aot.h"
#include "runtime/rt.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Prog {
  const KilnAotModel *d;
  KilnAotSig sig;
  const char *prog, *weights;
  int threads;
  const char *in_file[64], *out_file[64];   /* by input / output index */
  RtTensor in[64], out[64];
  int64_t rows;
} Prog;

static void tensor_text(const KilnAotModel *d, int i, char *buf, size_t len) {
  int dt, rank;
  int64_t shape[8];
  kiln_aot_io_shape(d, i, 1, &dt, &rank, shape);
  int at = snprintf(buf, len, "%s[", rt_dtype_name((RtDType)dt));
  for (int k = 0; k < rank; k++)
    if (k == 0 && kiln_aot_batch_leading(d))
      at += snprintf(buf + at, len - at, "N");
    else
      at += snprintf(buf + at, len - at, "%s%lld", k ? ", " : "", (long long)shape[k]);
  snprintf(buf + at, len - at, "]");
}

static void usage(const Prog *p, FILE *f) {
  char t[256];
  fprintf(f, "usage: %s [options] [INPUT=]FILE.npy ...\n\n"
             "Runs the model %s (exported by kiln) on .npy inputs, given in order or by name,\n"
             "or, with no input files, on CSV rows read from standard input (one sample a\n"
             "row: the inputs' values in order, flattened). Outputs go to .npy files (-o) or\n"
             "as CSV rows to standard output.\n\ninputs:\n", p->prog, p->d->name);
  for (int i = 0; i < p->sig.ninputs + p->sig.noutputs; i++) {
    if (i == p->sig.ninputs)
      fprintf(f, "outputs:\n");
    tensor_text(p->d, i, t, sizeof t);
    fprintf(f, "  %-16s %s\n", kiln_aot_io_name(p->d, i), t);
  }
  if (kiln_aot_batch_leading(p->d))
    fprintf(f, "N is the number of samples; runs take up to %lld at a time.\n",
            (long long)p->sig.max_batch);
  fprintf(f, "\noptions:\n"
             "  -o OUTPUT=FILE.npy  write an output to a .npy file\n"
             "  --weights FILE      weights (.safetensors) in place of the built-in ones\n"
             "  --threads N         threads (default: OMP_NUM_THREADS or the cores)\n"
             "  -h, --help          this text\n");
}

static int usage_error(const Prog *p, const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", p->prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(%s --help lists the inputs, outputs and options)\n", p->prog);
  return 2;
}

/* The index of the input (or output, from `first`) called name, or -1. */
static int io_index(const Prog *p, const char *name, size_t len, int first, int n) {
  for (int i = first; i < first + n; i++)
    if (strlen(kiln_aot_io_name(p->d, i)) == len && !strncmp(kiln_aot_io_name(p->d, i), name, len))
      return i - first;
  return -1;
}

/* [NAME=]FILE into its slot: by name, else the first free one. */
static int take_file(Prog *p, const char *arg, bool output) {
  const char *eq = strchr(arg, '=');
  int n = output ? p->sig.noutputs : p->sig.ninputs, first = output ? p->sig.ninputs : 0;
  const char **slot = output ? p->out_file : p->in_file;
  int i = eq ? io_index(p, arg, eq - arg, first, n) : -1;
  for (int k = 0; !eq && k < n && i < 0; k++)
    if (!slot[k])
      i = k;
  if (i < 0 || (eq && !eq[1]))
    return usage_error(p, output ? "-o wants OUTPUT=FILE.npy with a known output, got '%s'"
                                 : "no input left for '%s'", arg);
  slot[i] = eq ? eq + 1 : arg;
  return 0;
}

static int parse_args(Prog *p, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(p, stdout);
      exit(0);
    } else if (!strcmp(a, "-o") || !strcmp(a, "--weights") || !strcmp(a, "--threads")) {
      if (i + 1 >= argc)
        return usage_error(p, "%s needs a value", a);
      const char *v = argv[++i];
      char *end;
      if (a[1] == 'o' && take_file(p, v, true))
        return 2;
      if (a[2] == 'w')
        p->weights = v;
      if (a[2] == 't' && ((p->threads = (int)strtol(v, &end, 10)) < 0 || *end || !*v))
        return usage_error(p, "--threads wants a non-negative integer, got '%s'", v);
    } else if (a[0] == '-' && a[1]) {
      return usage_error(p, "unknown option '%s'", a);
    } else if (take_file(p, a, false)) {
      return 2;
    }
  }
  return 0;
}

/* ---- inputs ------------------------------------------------------------- */

static int64_t per_sample(const RtTensor *t) {
  int64_t n = 1;
  for (int k = 1; k < t->rank; k++)
    n *= t->shape[k];
  return n;
}

static int read_npy(Prog *p) {
  for (int i = 0; i < p->sig.ninputs; i++) {
    RtError e;
    if (!p->in_file[i]) {
      fprintf(stderr, "%s: no file for input '%s'\n", p->prog, kiln_aot_io_name(p->d, i));
      return 1;
    }
    if (rt_npy_read(p->in_file[i], &p->in[i], &e) != RT_OK) {
      fprintf(stderr, "%s: input '%s': %s\n", p->prog, kiln_aot_io_name(p->d, i), e.msg);
      return 1;
    }
  }
  return 0;
}

static void put_value(RtTensor *t, int64_t i, double v) {
  switch (t->dtype) {
  case RT_F32: ((float *)t->data)[i] = (float)v; break;
  case RT_F64: ((double *)t->data)[i] = v; break;
  case RT_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
  case RT_I64: ((int64_t *)t->data)[i] = (int64_t)v; break;
  default: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
  }
}

/* One CSV line of numbers into vals; the count, or -1 with a message. */
static int64_t parse_row(const Prog *p, char *line, int64_t lineno, double *vals, int64_t want) {
  int64_t n = 0;
  for (char *s = line;; s++) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || n == want) {
      fprintf(stderr, "%s: <stdin>:%lld: %s (each row holds the %lld input values of one sample)\n",
              p->prog, (long long)lineno, n == want ? "too many values" : "not a number",
              (long long)want);
      return -1;
    }
    vals[n++] = v;
    s = end + strspn(end, " \t\r\n");
    if (!*s)
      return n;
    if (*s != ',') {
      fprintf(stderr, "%s: <stdin>:%lld: expected ',' after value %lld\n", p->prog,
              (long long)lineno, (long long)n);
      return -1;
    }
  }
}

/* Room for one more row in every input. */
static int grow(Prog *p, int64_t rows) {
  for (int i = 0; i < p->sig.ninputs; i++) {
    RtTensor *t = &p->in[i];
    int64_t cap = t->shape[0];
    if (rows <= cap)
      continue;
    size_t row = rt_dtype_size(t->dtype) * per_sample(t);
    void *d = realloc(t->data, row * (cap * 2 + 16));
    if (!d)
      return 1;
    t->data = d;
    t->shape[0] = cap * 2 + 16;
  }
  return 0;
}

static int read_csv(Prog *p) {
  int64_t want = 0;
  for (int i = 0; i < p->sig.ninputs; i++) {
    RtTensor *t = &p->in[i];
    int dt;
    kiln_aot_io_shape(p->d, i, 1, &dt, &t->rank, t->shape);
    t->dtype = (RtDType)dt;
    t->shape[0] = 0;
    want += per_sample(t);
  }
  double *vals = malloc(sizeof *vals * (want + 1));
  char *line = NULL;
  size_t cap = 0;
  int rc = vals ? 0 : 1;
  for (int64_t lineno = 1; !rc && getline(&line, &cap, stdin) > 0; lineno++) {
    if (!line[strspn(line, " \t\r\n")])
      continue;
    int64_t n = parse_row(p, line, lineno, vals, want);
    if (n >= 0 && n < want)
      fprintf(stderr, "%s: <stdin>:%lld: %lld values, a sample has %lld\n", p->prog,
              (long long)lineno, (long long)n, (long long)want);
    if (n != want || grow(p, p->rows + 1)) {
      rc = 1;
      break;
    }
    for (int i = 0, at = 0; i < p->sig.ninputs; at += per_sample(&p->in[i]), i++)
      for (int64_t k = 0; k < per_sample(&p->in[i]); k++)
        put_value(&p->in[i], p->rows * per_sample(&p->in[i]) + k, vals[at + k]);
    p->rows++;
  }
  for (int i = 0; i < p->sig.ninputs; i++)
    p->in[i].shape[0] = p->rows;
  free(line);
  free(vals);
  return rc;
}

/* ---- running ------------------------------------------------------------ */

static KilnAotTensor view(const RtTensor *t, int64_t start, int64_t rows) {
  KilnAotTensor v = {t->dtype, t->rank, {0}, NULL};
  memcpy(v.shape, t->shape, sizeof v.shape);
  size_t row = rt_dtype_size(t->dtype) * per_sample(t);
  if (rows >= 0) {
    v.shape[0] = rows;
    v.data = (char *)t->data + row * start;
  } else {
    v.data = t->data;
  }
  return v;
}

/* Runs samples [start, start + rows) (rows -1: the inputs as they are, once). */
static int run_chunk(Prog *p, KilnAot *m, int64_t start, int64_t rows) {
  KilnAotTensor in[64], out[64];
  for (int i = 0; i < p->sig.ninputs; i++)
    in[i] = view(&p->in[i], start, rows);
  for (int i = 0; i < p->sig.noutputs; i++)
    out[i] = rows >= 0 ? view(&p->out[i], start, rows) : (KilnAotTensor){0};
  if (kiln_aot_infer_tensors(m, in, p->sig.ninputs, out, p->sig.noutputs)) {
    fprintf(stderr, "%s: %s\n", p->prog, kiln_aot_error(m));
    return 1;
  }
  for (int i = 0; rows < 0 && i < p->sig.noutputs; i++) {
    RtTensor *t = &p->out[i];
    if (rt_tensor_alloc(t, (RtDType)out[i].dtype, out[i].rank, out[i].shape, NULL) != RT_OK)
      return 1;
    memcpy(t->data, out[i].data, rt_tensor_bytes(t));
  }
  return 0;
}

static int run_rows(Prog *p, KilnAot *m) {
  p->rows = p->in[0].rank > 0 ? p->in[0].shape[0] : 0;
  for (int i = 0; i < p->sig.ninputs; i++)
    if (p->in[i].rank < 1 || p->in[i].shape[0] != p->rows) {
      fprintf(stderr, "%s: every input needs the same number of samples (its first dim): '%s' "
                      "has %lld, '%s' %lld\n", p->prog, kiln_aot_io_name(p->d, 0), (long long)p->rows,
              kiln_aot_io_name(p->d, i), (long long)(p->in[i].rank ? p->in[i].shape[0] : 0));
      return 1;
    }
  if (p->rows < 1) {
    fprintf(stderr, "%s: no samples to run\n", p->prog);
    return 1;
  }
  for (int i = 0; i < p->sig.noutputs; i++) {
    int dt, rank;
    int64_t shape[8];
    kiln_aot_io_shape(p->d, p->sig.ninputs + i, p->rows, &dt, &rank, shape);
    if (rt_tensor_alloc(&p->out[i], (RtDType)dt, rank, shape, NULL) != RT_OK) {
      fprintf(stderr, "%s: out of memory for %lld samples\n", p->prog, (long long)p->rows);
      return 1;
    }
  }
  for (int64_t at = 0; at < p->rows; at += p->sig.max_batch) {
    int64_t n = p->rows - at < p->sig.max_batch ? p->rows - at : p->sig.max_batch;
    if (run_chunk(p, m, at, n))
      return 1;
  }
  return 0;
}

/* ---- outputs ------------------------------------------------------------ */

static void print_value(const RtTensor *t, int64_t i) {
  switch (t->dtype) {
  case RT_F32: printf("%.9g", ((float *)t->data)[i]); break;
  case RT_F64: printf("%.17g", ((double *)t->data)[i]); break;
  case RT_I32: printf("%d", ((int32_t *)t->data)[i]); break;
  case RT_I64: printf("%lld", (long long)((int64_t *)t->data)[i]); break;
  default: printf("%u", ((uint8_t *)t->data)[i]); break;
  }
}

static int write_outputs(Prog *p) {
  bool csv = false;
  for (int i = 0; i < p->sig.noutputs; i++) {
    RtError e;
    csv |= !p->out_file[i];
    if (p->out_file[i] && rt_npy_write(p->out_file[i], &p->out[i], &e) != RT_OK) {
      fprintf(stderr, "%s: output '%s': %s\n", p->prog, kiln_aot_io_name(p->d, p->sig.ninputs + i),
              e.msg);
      return 1;
    }
  }
  int64_t rows = p->out[0].rank ? p->out[0].shape[0] : 1;
  for (int64_t r = 0; csv && r < rows; r++) {
    const char *sep = "";
    for (int i = 0; i < p->sig.noutputs; i++) {
      int64_t n = p->out[i].rank ? per_sample(&p->out[i]) : 1;
      for (int64_t k = 0; !p->out_file[i] && k < n; k++, sep = ",") {
        fputs(sep, stdout);
        print_value(&p->out[i], r * n + k);
      }
    }
    putchar('\n');
  }
  return ferror(stdout) ? 1 : 0;
}

static int start(Prog *p, KilnAot **m) {
  int rc = kiln_aot_create(p->d, m, p->weights);
  if (rc == KILN_AOT_OK)
    rc = kiln_aot_set_threads(*m, p->threads);
  if (rc)
    fprintf(stderr, "%s: %s\n", p->prog, kiln_aot_error(*m));
  return rc ? 1 : 0;
}

int kiln_aot_main(const KilnAotModel *d, int argc, char **argv) {
  static Prog p;
  rt_prefer_passive_wait(argv);
  p.d = d;
  p.sig = kiln_aot_sig(d);
  p.prog = argc > 0 && strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argc > 0 ? argv[0] : d->name;
  KilnAot *m = NULL;
  int nfiles = 0, rc = parse_args(&p, argc, argv);
  for (int i = 0; i < p.sig.ninputs; i++)
    nfiles += p.in_file[i] != NULL;
  bool leading = kiln_aot_batch_leading(d);
  if (!rc && !nfiles && (!leading || p.sig.ninputs == 0))
    rc = usage_error(&p, "%s takes its inputs from .npy files (see --help)", p.prog);
  if (!rc)
    rc = start(&p, &m);
  if (!rc)
    rc = nfiles ? read_npy(&p) : read_csv(&p);
  if (!rc)
    rc = leading ? run_rows(&p, m) : run_chunk(&p, m, 0, -1);
  if (!rc)
    rc = write_outputs(&p);
  for (int i = 0; i < 64; i++) {
    rt_tensor_free(&p.in[i]);
    rt_tensor_free(&p.out[i]);
  }
  kiln_aot_destroy(m);
  return rc;
}

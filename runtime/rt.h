/* kiln runtime (libkilnrt.a): what compiled models, exported artifacts and
 * the compiler itself share. Tensors and their dtypes, an arena, the one
 * parallel-for generated code calls, a counter-based RNG, .npy and
 * .safetensors I/O, and for training: CSV and IDX loaders, datasets and
 * batches, a progress bar, curves and their plots. It depends on libc, libm
 * and OpenMP, and zlib for gzipped data files (only data.c calls it, so an
 * artifact that links no loader needs no -lz).
 *
 * Conventions:
 * - Every exported name starts with rt_ (types Rt..., constants RT_...).
 * - Functions that can fail on input return an RtStatus and, when given an
 *   RtError, fill it with a one-line message naming the file and the fault
 *   ("w.npy: data is 12 bytes, shape (2, 3) of f32 needs 24"). They never
 *   exit or abort on bad input. The RtError pointer may be NULL.
 * - Tensors are dense, C order (row-major), 64-byte aligned when the runtime
 *   allocates them. Shapes are int64_t; an element count is computed with
 *   overflow checks (rt_numel).
 *
 * Declarations are grouped under a banner per defining file. */
#ifndef KILN_RT_H
#define KILN_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ===== tensor.c: dtypes, errors, tensors, aligned memory ===== */

/* Element types. The order is fixed: generated code and files use it. */
typedef enum {
  RT_F32,      /* float, IEEE binary32 */
  RT_F64,      /* double, IEEE binary64 */
  RT_I32,      /* int32_t */
  RT_I64,      /* int64_t */
  RT_U8,       /* uint8_t */
  RT_BOOL,     /* one byte, 0 or 1 */
  RT_NDTYPES
} RtDType;

size_t rt_dtype_size(RtDType dt);            /* bytes per element; 0 if invalid */
const char *rt_dtype_name(RtDType dt);       /* "f32", "f64", "i32", "i64", "u8", "bool"; "?" if invalid */
int rt_dtype_parse(const char *name, RtDType *out); /* inverse of rt_dtype_name: 0 ok, -1 unknown */

typedef enum {
  RT_OK = 0,
  RT_ERR_IO,       /* the operating system refused: open, read, write, rename */
  RT_ERR_FORMAT,   /* the bytes are not a valid file of the expected format */
  RT_ERR_NOMEM,    /* an allocation failed */
  RT_ERR_ARG,      /* the caller passed something invalid */
  RT_ERR_SHAPE     /* a shape is out of range: rank, negative dim, overflow */
} RtStatus;

typedef struct { char msg[512]; } RtError;   /* filled on failure */

/* Formats a message into err (if not NULL) and returns st, so a failing path
 * reads `return rt_errorf(err, RT_ERR_FORMAT, "%s: bad magic", name);`. */
RtStatus rt_errorf(RtError *err, RtStatus st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *rt_status_name(RtStatus st);     /* "ok", "io", "format", ... */

#define RT_MAX_RANK 8
#define RT_ALIGN 64                          /* bytes; a cache line and an AVX-512 register */
#define RT_MAX_DIM INT32_MAX                 /* every dimension is below 2^31 */

/* A dense C-order tensor. `data` is owned by whoever allocated it: tensors
 * from rt_tensor_alloc and rt_npy_read are freed with rt_tensor_free; those
 * inside an RtSafetensors belong to it. A rank-0 tensor is a scalar. */
typedef struct {
  RtDType dtype;
  int rank;                                  /* 0..RT_MAX_RANK */
  int64_t shape[RT_MAX_RANK];                /* shape[0..rank): the outermost first */
  void *data;
} RtTensor;

int64_t rt_numel(const RtTensor *t);         /* product of the shape; -1 on overflow or a bad shape */
size_t rt_tensor_bytes(const RtTensor *t);   /* numel * element size; 0 on overflow */
/* Fills dtype, rank and shape with data NULL, after checking the rank, each
 * dim (0 <= d <= RT_MAX_DIM) and that numel * size fits: RT_ERR_SHAPE, or
 * RT_ERR_ARG for an invalid dtype. */
RtStatus rt_tensor_init(RtTensor *t, RtDType dt, int rank, const int64_t *shape, RtError *err);
/* rt_tensor_init, then zeroed 64-byte aligned data. On failure t->data is NULL. */
RtStatus rt_tensor_alloc(RtTensor *t, RtDType dt, int rank, const int64_t *shape, RtError *err);
void rt_tensor_free(RtTensor *t);            /* frees data and sets it NULL; NULL-safe */
/* The index of the first byte of a bool tensor that is neither 0 nor 1,
 * or -1: loaders reject such files, so compiled code may rely on 0/1. */
int64_t rt_bad_bool(const RtTensor *t);
/* Writes "(2, 3)" into buf (the numpy spelling: "()" for a scalar, "(3,)"). */
const char *rt_shape_str(int rank, const int64_t *shape, char *buf, size_t len);

/* 64-byte aligned, zeroed memory (never NULL for bytes == 0 unless out of
 * memory). Free with rt_aligned_free. */
void *rt_aligned_alloc(size_t bytes);
void rt_aligned_free(void *p);

/* ===== arena.c: bump allocator, freed in one call ===== */

/* Memory for data with one lifetime (the IR of a graph, one compilation):
 * allocations are carved from chunks and all freed by rt_arena_free. An
 * arena refuses to grow past its limit (RT_ARENA_LIMIT unless set): an
 * allocation that fails returns NULL. */
typedef struct RtArena RtArena;

#define RT_ARENA_LIMIT ((size_t)4 << 30)     /* 4 GiB */

RtArena *rt_arena_new(void);                 /* NULL if out of memory */
void *rt_arena_alloc(RtArena *a, size_t bytes);  /* zeroed, 16-byte aligned; NULL on failure */
char *rt_arena_strdup(RtArena *a, const char *s);
char *rt_arena_strndup(RtArena *a, const char *s, size_t n);
char *rt_arena_printf(RtArena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t rt_arena_used(const RtArena *a);      /* bytes handed out so far */
void rt_arena_set_limit(RtArena *a, size_t bytes);
void rt_arena_free(RtArena *a);              /* NULL-safe */

/* ===== parallel.c: the parallel-for generated code calls ===== */

/* fn(ctx, lo, hi) processes items [lo, hi). */
typedef void (*RtTask)(void *ctx, int64_t lo, int64_t hi);

/* Splits [0, n) into chunks of `grain` items (the last may be shorter;
 * grain < 1 counts as 1): chunk k is [k*grain, min(n, (k+1)*grain)). The
 * boundaries depend only on n and grain, never on the thread count, so a
 * kernel that writes per chunk and combines chunk results in chunk order is
 * bit-identical at any thread count. Chunks run on up to `nthreads` OpenMP
 * threads (nthreads <= 0: rt_default_threads()). A single chunk, nthreads
 * == 1, or a call from inside a parallel region (a nested call from a task)
 * runs the chunks inline, in order, on the calling thread. n <= 0 does
 * nothing. */
void rt_parallel_for(RtTask fn, void *ctx, int64_t n, int64_t grain, int32_t nthreads);
int rt_default_threads(void);                /* omp_get_max_threads(): honours OMP_NUM_THREADS */
/* A compiled graph's kernels in order: the entry's own signature. */
typedef void (*RtGraph)(void *regions, int64_t batch, int32_t nthreads);
/* Runs body(regions, batch, nthreads) on the calling thread inside one
 * team of nthreads threads (<= 0: rt_default_threads()): the
 * rt_parallel_for calls the body makes hand their chunks to the team
 * instead of opening a parallel region each, with the same chunks, so the
 * same results. One thread, or a call from inside a graph or a parallel
 * region, runs the body directly. *solo (one per graph, 0 at first) keeps
 * the batch and thread count at which the body gave its team nothing to
 * do (all its kernels small): calls like that run it directly, since a
 * region costs a wake-up and a join even when it has no work. */
void rt_run_graph(RtGraph body, void *regions, int64_t batch, int32_t nthreads, int64_t *solo);
/* OpenMP parallel regions rt_parallel_for and rt_run_graph have opened
 * in this process: for tests that count a graph's regions per call. */
int64_t rt_parallel_regions(void);
/* Test hook for the backoff of a team that comes late (parallel.c):
 * enabled false keeps every call on its team whatever its lag (for tests
 * that count regions); extra_lag_ns is added to each call's measured
 * lag. Either way the backoff starts afresh. */
void rt_team_backoff_test(bool enabled, int64_t extra_lag_ns);
/* For a program's main, before any OpenMP use: when neither
 * OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, sets GOMP_SPINCOUNT to a
 * short spin (about 60 us, then idle threads sleep) and re-executes the
 * program (/proc/self/exe, same argv), since libgomp reads them once,
 * before main. Returns (doing nothing) when either is set or the exec
 * fails. Why: libgomp's threads otherwise spin up to ~3 ms at every
 * barrier, which on a shared machine takes the time slice the other
 * thread needs, and sleeping at once makes every call wake its helpers
 * (see docs/cli.md, "Threads"). */
void rt_prefer_passive_wait(char **argv);

/* ===== philox.c: counter-based random numbers ===== */

/* Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
 * easy as 1, 2, 3", SC 2011): out = bijection of ctr keyed by key. Matches
 * the Random123 known-answer vectors.
 *
 * Every fill below is a pure function of (seed, stream, index): element i
 * depends on nothing else, so any split of the work over threads gives the
 * same numbers. The key is the 64-bit seed; the counter is (block, stream)
 * with block = i / (elements per Philox call). Parameters take their stream
 * from rt_hash_str(name), so adding a parameter does not change the others. */
void rt_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
uint64_t rt_hash_str(const char *s);         /* FNV-1a, 64 bits */

/* Uniform in [lo, hi): 24 random bits per float, 53 per double. */
void rt_fill_uniform(float *dst, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream);
void rt_fill_uniform_f64(double *dst, int64_t n, double lo, double hi, uint64_t seed, uint64_t stream);
/* Normal(mean, std^2) by Box-Muller: elements 2p and 2p+1 are the pair made
 * from the uniforms of pair p. */
void rt_fill_normal(float *dst, int64_t n, float mean, float std, uint64_t seed, uint64_t stream);
void rt_fill_normal_f64(double *dst, int64_t n, double mean, double std, uint64_t seed, uint64_t stream);
/* Normal(mean, std^2) conditioned on [lo, hi] (torch.nn.init.trunc_normal_,
 * whose bounds are absolute values too): element i takes the first of its
 * draws i, i + n, i + 2n, ... that falls inside; requires lo < hi. */
void rt_fill_trunc_normal(float *dst, int64_t n, float mean, float std, float lo, float hi,
                          uint64_t seed, uint64_t stream);
/* Writes a uniformly random permutation of 0..n-1 into perm (Fisher-Yates
 * over an identity, unbiased bounded draws from Philox). */
void rt_shuffle(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream);
/* Element i of the stream as raw bits: the building block of the fills. */
uint32_t rt_random_u32(uint64_t seed, uint64_t stream, uint64_t i);

/* ===== io.c: reading ranges of files or buffers, atomic writes ===== */

/* A byte source: a file or a memory buffer, read by ranges. Loaders parse
 * headers from it and read tensor data straight into place. */
typedef struct {
  const char *name;          /* for messages: the path, or the caller's name for a buffer */
  const uint8_t *mem;        /* the buffer, or NULL for a file */
  FILE *f;
  uint64_t len;              /* total bytes */
} RtSource;

RtStatus rt_source_open(RtSource *s, const char *path, RtError *err);
void rt_source_mem(RtSource *s, const void *buf, size_t len, const char *name);
/* Reads exactly n bytes at off; a range past the end is RT_ERR_FORMAT
 * ("truncated"), a failed read RT_ERR_IO. */
RtStatus rt_source_read(RtSource *s, uint64_t off, void *dst, size_t n, RtError *err);
void rt_source_close(RtSource *s);

/* A file written as "<path>.tmp", flushed, fsync'ed and renamed over path,
 * so a crash or a failed write never loses the previous file. */
typedef struct {
  FILE *f;
  char *path, *tmp;
} RtAtomicFile;

RtStatus rt_atomic_open(RtAtomicFile *af, const char *path, RtError *err);
RtStatus rt_atomic_write(RtAtomicFile *af, const void *buf, size_t n, RtError *err);
RtStatus rt_atomic_commit(RtAtomicFile *af, RtError *err);   /* closes: success or not */
void rt_atomic_abort(RtAtomicFile *af);      /* closes and removes the tmp file */

/* ===== json.c: a small strict JSON parser (RFC 8259) ===== */

typedef enum { RT_JSON_NULL, RT_JSON_BOOL, RT_JSON_NUM, RT_JSON_STR, RT_JSON_ARR, RT_JSON_OBJ } RtJsonKind;

/* A parsed value. Strings are UTF-8 with escapes resolved; a string with an
 * escaped NUL is rejected so that C strings are exact. Object members keep
 * the file's order and may repeat a key: the caller decides. */
typedef struct RtJson {
  RtJsonKind kind;
  bool b;                    /* RT_JSON_BOOL */
  double num;                /* RT_JSON_NUM */
  bool is_int;               /* RT_JSON_NUM: an integer literal that fits int64 */
  int64_t i;                 /* RT_JSON_NUM when is_int */
  char *str;                 /* RT_JSON_STR */
  int n;                     /* RT_JSON_ARR, RT_JSON_OBJ: element count */
  struct RtJson *items;      /* RT_JSON_ARR, RT_JSON_OBJ: the values */
  char **keys;               /* RT_JSON_OBJ: the member names */
} RtJson;

#define RT_JSON_MAX_DEPTH 64

/* Parses text[0..len) (one value, surrounded by whitespace only) into nodes
 * allocated from `a`. Errors name `name` and the byte offset. */
RtStatus rt_json_parse(RtArena *a, const char *text, size_t len, const char *name,
                       RtJson **out, RtError *err);
const RtJson *rt_json_get(const RtJson *obj, const char *key);  /* first member named key, or NULL */
bool rt_utf8_valid(const char *s);           /* no overlongs, surrogates or codes past U+10FFFF */

/* ===== npy.c: NumPy .npy files ===== */

/* Versions 1.0, 2.0 and 3.0; descr '<f4' '<f8' '<i4' '<i8' '|u1' '|b1'
 * (the RtDType order); C order only; rank <= RT_MAX_RANK. Everything else
 * (fortran_order True, big-endian, other dtypes, a header that lies about
 * the data, bool bytes other than 0/1, trailing bytes) is RT_ERR_FORMAT. */
RtStatus rt_npy_read(const char *path, RtTensor *out, RtError *err);
RtStatus rt_npy_read_mem(const void *buf, size_t len, const char *name, RtTensor *out, RtError *err);
/* Writes version 1.0 (2.0 if the header needs it), atomically. */
RtStatus rt_npy_write(const char *path, const RtTensor *t, RtError *err);

/* ===== safetensors.c: Hugging Face .safetensors files ===== */

/* Layout: an 8-byte little-endian header length, a JSON header
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the data area; offsets are relative to it. Dtypes F32 F64 I32 I64 U8
 * BOOL. The reader checks that the header fits the file, that the tensors
 * tile the data area exactly (no gaps, overlaps or trailing bytes), that
 * e - b == numel * size, that names are unique. */
typedef struct { char *name; RtTensor t; } RtNamedTensor;
typedef struct { char *key, *value; } RtMeta;

typedef struct RtSafetensors {
  int n;                     /* tensors, sorted by name (strcmp) */
  RtNamedTensor *tensors;
  int nmeta;                 /* __metadata__ entries, in file order */
  RtMeta *meta;
  void *blob;                /* tensor data: each tensor 64-byte aligned within it */
  RtArena *arena;            /* names, metadata and the arrays above */
} RtSafetensors;

#define RT_ST_MAX_HEADER ((uint64_t)100 << 20)   /* as the reference implementation */

RtStatus rt_st_read(const char *path, RtSafetensors *out, RtError *err);
RtStatus rt_st_read_mem(const void *buf, size_t len, const char *name, RtSafetensors *out, RtError *err);
const RtTensor *rt_st_find(const RtSafetensors *st, const char *name);   /* NULL if absent */
const char *rt_st_meta(const RtSafetensors *st, const char *key);        /* NULL if absent */
void rt_st_free(RtSafetensors *st);          /* NULL-safe; zeroes *st */
/* Writes n tensors (sorted by name; names unique and non-empty) and nmeta
 * metadata entries atomically: "<path>.tmp", fsync, rename. The header is
 * padded with spaces so the data area starts 8-byte aligned. */
RtStatus rt_st_write(const char *path, const RtNamedTensor *ts, int n,
                     const RtMeta *meta, int nmeta, RtError *err);

/* ===== csv.c: numeric CSV files ===== */

/* A CSV of numbers, ',' separated, '\n' or "\r\n" line ends, optionally
 * gzipped (detected by the magic bytes, whatever the file's name). Cells may
 * be quoted ("..." with "" for a quote, as RFC 4180) and padded with spaces;
 * blank lines are skipped; a UTF-8 byte order mark is ignored. Every cell
 * must be a finite number that fits f32: an empty cell, text, NaN, an
 * infinity or a row with another field count is an RT_ERR_FORMAT naming
 * "file:line:column", the field and the cell text. */
typedef enum {
  RT_CSV_HEADER_AUTO,        /* the first line is a header if a cell of it is not a number */
  RT_CSV_HEADER_YES,         /* the first line is a header */
  RT_CSV_HEADER_NO,          /* every line is data */
} RtCsvHeader;

/* Zero-initialised options read everything as features, header detected. */
typedef struct {
  RtCsvHeader header;
  bool has_label;            /* split one column out as i64 labels */
  int label;                 /* its index; negative counts from the end (-1: the last) */
  const char *label_name;    /* or its name in the header (overrides label) */
  float scale;               /* features are multiplied by it; 0 means 1 */
} RtCsvOptions;

typedef struct {
  RtTensor x;                /* f32 [rows, features]: every column but the label, scaled */
  RtTensor y;                /* i64 [rows]: the label column (integral values); data NULL without one */
  int ncols;                 /* columns in the file, the label's included */
  int label_col;             /* the label's column, or -1 */
  char **names;              /* the header's ncols names (quotes resolved), or NULL */
  RtArena *arena;            /* the names */
} RtCsv;

RtStatus rt_csv_read(const char *path, const RtCsvOptions *opt, RtCsv *out, RtError *err);
RtStatus rt_csv_read_mem(const void *buf, size_t len, const char *name, const RtCsvOptions *opt,
                         RtCsv *out, RtError *err);
void rt_csv_free(RtCsv *c);                  /* NULL-safe; zeroes *c */

/* ===== idx.c: IDX files (MNIST, Fashion-MNIST) ===== */

/* Bytes 0 0 <type> <rank>, rank big-endian u32 dims, then the elements big
 * endian, C order; optionally gzipped (by magic), as the MNIST files ship.
 * Types: 0x08 u8 -> RT_U8, 0x09 i8, 0x0B i16 and 0x0C i32 -> RT_I32,
 * 0x0D f32 -> RT_F32, 0x0E f64 -> RT_F64. A bad magic, an unknown type, a
 * rank above RT_MAX_RANK, a dim above RT_MAX_DIM, or data that is not
 * exactly numel elements (truncated, trailing bytes, lying dims) is
 * RT_ERR_FORMAT. */
RtStatus rt_idx_read(const char *path, RtTensor *out, RtError *err);
RtStatus rt_idx_read_mem(const void *buf, size_t len, const char *name, RtTensor *out, RtError *err);

/* ===== text.c: character-level text data ===== */

/* A text file as symbol sequences for a character-level language model
 * (the layouts are in text.c's head comment). Symbol 0 is the end of a
 * word (and what pads inputs), symbols 1.. the file's characters sorted by
 * code point. Errors name the file (and the line): not UTF-8, a NUL, an
 * empty file, a line longer than max_len, no line left by the filter, a
 * corpus shorter than one window. */
#define RT_TEXT_END 0
typedef struct RtTextOptions {
  bool lines;                /* one sample per line; else a running text cut into windows */
  int64_t window;            /* windows: characters per sample (T) */
  int64_t max_len;           /* lines: the longest line allowed (0: 256) */
  const char *chars;         /* lines: keep only lines made of these ("a-z": a range); NULL: all */
} RtTextOptions;

typedef struct RtText {
  int32_t *vocab;            /* [nvocab] code points; vocab[0] = RT_TEXT_END */
  int nvocab;
  RtTensor x;                /* i32 [N, T]: the input symbols */
  RtTensor y;                /* i64 [N, T]: the next symbols, -1 where padding */
  int64_t skipped;           /* lines: non-blank lines the filter dropped */
} RtText;

RtStatus rt_text_read(const char *path, const RtTextOptions *o, RtText *out, RtError *err);
RtStatus rt_text_read_mem(const void *buf, size_t len, const char *name, const RtTextOptions *o,
                          RtText *out, RtError *err);
void rt_text_free(RtText *t);              /* NULL-safe; zeroes *t */
/* The index of code point cp, or -1 if the vocabulary lacks it. */
int rt_text_index(const int32_t *vocab, int nvocab, int32_t cp);
/* Symbols 1.. as one UTF-8 string (malloc'd; NULL when out of memory): the
 * form checkpoints keep; rt_text_vocab_parse reads it back into a malloc'd
 * array with the end symbol first and returns its size, or -1 if the string
 * is not such a vocabulary (UTF-8, sorted, distinct, no NUL). */
char *rt_text_vocab_utf8(const int32_t *vocab, int nvocab);
int rt_text_vocab_parse(const char *s, int32_t **vocab);
/* One code point from s[0..n): its byte count, 0 if not valid UTF-8
 * (overlong, surrogate, beyond U+10FFFF, truncated). */
int rt_utf8_decode(const uint8_t *s, size_t n, int32_t *cp);
int rt_utf8_encode(int32_t cp, char out[4]);   /* bytes written (1..4) */

/* Validation nats per symbol of count models fitted on the training pairs
 * (x[i] -> y[i], padding skipped) with add-k smoothing: the unigram
 * p(y) = (n(y) + k) / (n + kV) and the bigram p(y | x) = (n(x, y) + k) /
 * (n(x) + kV). x and y are i32 or i64 of one shape. */
typedef struct RtTextBaselines {
  double unigram, bigram;
  int64_t chars;             /* validation targets counted */
} RtTextBaselines;
RtStatus rt_text_baselines(const RtTensor *xtrain, const RtTensor *ytrain, const RtTensor *xval,
                           const RtTensor *yval, int nvocab, double k, RtTextBaselines *out,
                           RtError *err);

/* Draw i of a sampler seeded with seed: the uniform in [0, 1) made of the
 * 53 top bits of Philox words 2i, 2i+1 of stream rt_hash_str("kiln.sample"),
 * and the index it picks from softmax(logits / temperature) by the inverse
 * CDF (the first j whose running sum of exp((l_j - max) / temperature)
 * exceeds u times the total); temperature <= 0 picks the argmax. The same
 * (logits, seed, i) gives the same index on any machine and thread count. */
double rt_sample_uniform(uint64_t seed, uint64_t i);
int64_t rt_sample_index(const float *logits, int64_t n, double temperature, uint64_t seed,
                        uint64_t i);

/* ===== data.c: data files, datasets, splits, batches ===== */

/* The bytes of a data file: the file's own, or the inflated content when
 * they start with the gzip magic 1f 8b (concatenated members allowed,
 * anything after the last member is an error). Inflated sizes are capped at
 * RT_DATA_MAX_BYTES. `data` is `buf` itself for an uncompressed buffer. */
typedef struct {
  const uint8_t *data;
  size_t len;
  void *owned;               /* what rt_bytes_free releases, or NULL */
} RtBytes;

#define RT_DATA_MAX_BYTES ((size_t)4 << 30)    /* 4 GiB */

RtStatus rt_bytes_file(RtBytes *b, const char *path, RtError *err);
RtStatus rt_bytes_mem(RtBytes *b, const void *buf, size_t len, const char *name, RtError *err);
void rt_bytes_free(RtBytes *b);              /* NULL-safe; zeroes *b */

/* N samples as named tensors sharing their leading dimension (features
 * "x" [N, ...], labels "y" [N], ...). A dataset owns its tensors and names;
 * zero-initialise one before adding. Errors name the tensor and the
 * sample (0-based, in the dataset's order), so validate right after
 * loading, while sample k is still row k of the file. */
#define RT_DATA_MAX_TENSORS 16

typedef struct {
  int n;                                   /* tensors */
  RtNamedTensor t[RT_DATA_MAX_TENSORS];    /* in the order added */
  int64_t len;                             /* samples: every tensor's shape[0] */
} RtDataset;

/* Moves *t into the dataset (t->data becomes NULL) after checking the name
 * (non-empty, new), rank >= 1 and shape[0] == ds->len (the first tensor
 * sets len). On failure *t is left to the caller. */
RtStatus rt_data_add(RtDataset *ds, const char *name, RtTensor *t, RtError *err);
/* A .npy or IDX file (gzipped or not, told apart by content) as tensor name. */
RtStatus rt_data_add_file(RtDataset *ds, const char *name, const char *path, RtError *err);
/* A CSV as tensors xname (features) and yname (labels, if opt->has_label). */
RtStatus rt_data_add_csv(RtDataset *ds, const char *path, const RtCsvOptions *opt,
                         const char *xname, const char *yname, RtError *err);
int rt_data_find(const RtDataset *ds, const char *name);   /* its index, or -1 */
void rt_data_free(RtDataset *ds);            /* NULL-safe; zeroes *ds */

/* Replaces tensor `name` by its values converted to `to`: to f32 or f64 from
 * any dtype, times scale (u8 pixels with scale 1/255); to i32 or i64 from an
 * integer or bool dtype, with scale 1 and a range check. */
RtStatus rt_data_convert(RtDataset *ds, const char *name, RtDType to, double scale, RtError *err);
/* Gives tensor `name` a new shape with the same element count and shape[0]
 * (IDX images [N, 28, 28] -> [N, 1, 28, 28]). */
RtStatus rt_data_reshape(RtDataset *ds, const char *name, int rank, const int64_t *shape,
                         RtError *err);
/* f32/f64 tensor `name` holds no NaN or infinity; else the first bad sample. */
RtStatus rt_data_check_finite(const RtDataset *ds, const char *name, RtError *err);
/* Integer tensor `name` holds class indices in [0, classes); else the first
 * sample out of range. */
RtStatus rt_data_check_labels(const RtDataset *ds, const char *name, int64_t classes, RtError *err);

/* A new dataset of samples idx[0..n) of ds, in that order (every idx in
 * [0, ds->len)). */
RtStatus rt_data_subset(const RtDataset *ds, const int64_t *idx, int64_t n, RtDataset *out,
                        RtError *err);
/* Shuffles the samples with rt_shuffle(seed, stream rt_hash_str("kiln.split")),
 * then the last llround(frac * N) of that order are the validation set and
 * the others, in that order, the training set: the same (data, frac, seed)
 * always gives the same split. frac in [0, 1); frac == 0 gives an empty val.
 * A frac that leaves either side empty is RT_ERR_ARG. */
RtStatus rt_data_split(const RtDataset *ds, double frac, uint64_t seed, RtDataset *train,
                       RtDataset *val, RtError *err);
/* The sample order of epoch `epoch`: rt_shuffle(perm, n, seed,
 * rt_hash_str("kiln.epoch") + epoch), so a training run that restarts at
 * epoch k sees the same order as one that never stopped, and no epoch's
 * stream meets the split's. */
void rt_data_epoch_order(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch);
/* Gathers samples perm[start .. start + m) with m = min(count, ds->len -
 * start) into out[0..ds->n) (the dataset's tensors, in order): out[i] is a
 * caller-owned contiguous buffer of ds->t[i]'s dtype and per-sample shape
 * with shape[0] >= m (a buffer for the largest batch); its rows m.. are left
 * alone. perm NULL is the identity; its entries are checked. Rows are copied in parallel (rt_parallel_for, nthreads as
 * there); the result does not depend on the thread count. *got = m, the size
 * of this batch (smaller for the last one of an epoch). */
RtStatus rt_data_batch(const RtDataset *ds, const int64_t *perm, int64_t start, int64_t count,
                       RtTensor *out, int32_t nthreads, int64_t *got, RtError *err);

/* ===== plot.c: training curves, their CSV and SVG, a reading of them ===== */

/* One epoch's numbers. A value that was not measured is NaN (no
 * validation set, no accuracy for a regression): rt_epoch_blank fills
 * every field with NaN. */
typedef struct {
  int epoch;                 /* 1-based */
  double loss, acc;          /* training: mean loss over the epoch, accuracy in [0, 1] */
  double val_loss, val_acc;  /* validation, after the epoch */
  double lr;                 /* the learning rate at the epoch's end */
  double seconds;            /* wall time of the epoch */
} RtEpochStats;

RtEpochStats rt_epoch_blank(int epoch);

typedef struct {
  int n, cap;
  RtEpochStats *e;           /* e[0..n), in the order added */
} RtCurves;                  /* zero-initialise */

RtStatus rt_curves_add(RtCurves *c, const RtEpochStats *e, RtError *err);
void rt_curves_free(RtCurves *c);            /* NULL-safe; zeroes *c */
/* "epoch,loss,acc,val_loss,val_acc,lr,seconds" and a line per epoch, NaN
 * as an empty cell (pandas reads it back as NaN); written atomically. */
RtStatus rt_curves_write_csv(const RtCurves *c, const char *path, RtError *err);
/* An SVG (no scripts, no external resources) of two panels, loss and
 * accuracy (%) against the epoch, training solid, validation dashed, with
 * ticks, grid, axis labels and a legend; the accuracy panel is left out
 * when no accuracy was measured. title and caption (a line under the
 * panels, e.g. the bias/variance reading) may be NULL. Written atomically. */
RtStatus rt_curves_write_svg(const RtCurves *c, const char *path, const char *title,
                             const char *caption, RtError *err);

/* A reading of the last epoch's numbers. With accuracies (classification):
 *   high bias      training accuracy < min_acc
 *   high variance  training - validation accuracy > max_acc_gap, or the
 *                  validation loss is more than max_val_rise above its
 *                  minimum (it turned up: overfitting)
 * With losses only (regression): high bias if the training loss has not
 * fallen below (1 - min_loss_drop) of the first epoch's; high variance if
 * (val_loss - loss) / loss > max_loss_gap, or the rise above.
 * Both, either, or a good fit; RT_FIT_UNKNOWN when there is nothing to read
 * (no epochs, a non-finite last loss). Without validation numbers only bias
 * is judged: RT_FIT_BIAS or RT_FIT_UNKNOWN. The thresholds are rules of
 * thumb (Ng's "bias/variance" reading of learning curves), not statistics:
 * a task whose best accuracy is 80% wants its own min_acc. */
typedef enum { RT_FIT_UNKNOWN, RT_FIT_GOOD, RT_FIT_BIAS, RT_FIT_VARIANCE, RT_FIT_BOTH } RtFit;

typedef struct {
  double min_acc;            /* 0.90 */
  double max_acc_gap;        /* 0.05: five points of accuracy */
  double min_loss_drop;      /* 0.5: the loss should at least halve */
  double max_loss_gap;       /* 0.25 */
  double max_val_rise;       /* 0.10 */
} RtFitThresholds;

#define RT_FIT_DEFAULTS ((RtFitThresholds){0.90, 0.05, 0.5, 0.25, 0.10})

/* Writes one line with the verdict and its numbers into buf, e.g.
 * "high variance: training accuracy 99.8% vs validation 93.1%, a gap of
 * 6.7 points (above 5)"; th NULL means RT_FIT_DEFAULTS. */
RtFit rt_bias_variance_reading(const RtCurves *c, const RtFitThresholds *th, char *buf, size_t len);

/* ===== progress.c: a progress bar for training ===== */

/* On a terminal one line redrawn in place ('\r', at most every 0.1 s):
 *   epoch 3/10 [=========>..........] 864/1797  2950 samples/s  loss 0.4123  acc 87.50%  eta 0:12
 * elsewhere (a log file, a pipe) the same line without the bar, with
 * " (48%)" after the count, at most every `every` seconds; and in both, a
 * final line per epoch that stays:
 *   epoch 3/10 1797/1797  0.6 s  2950 samples/s  loss 0.4123  acc 87.50%  val_loss 0.45  val_acc 86.00%  lr 0.001
 * Values are printed with %.4g, accuracies as percentages; NaN ones are
 * left out. Times come from `clock` (CLOCK_MONOTONIC
 * seconds unless a test sets its own). */
typedef struct {
  FILE *out;
  bool tty;                  /* redraw in place; rt_progress_init sets it from isatty */
  int width;                 /* terminal columns: redrawn lines are clipped to width - 1 (0: no limit) */
  int epochs;                /* for "epoch k/n" and the ETA */
  int64_t total;             /* samples per epoch */
  const char *unit;          /* "samples" */
  double every;              /* seconds between plain lines: 5 */
  double (*clock)(void);     /* seconds */
  int first_epoch;           /* of this run (a resumed run starts later) */
  int epoch;                 /* the current one, 1-based */
  int64_t done;              /* samples of it so far */
  double t_run, t_epoch;     /* when the run and the epoch started */
  double t_done;             /* when `done` was reported */
  double t_drawn;            /* when a line was last written */
} RtProgress;

double rt_monotonic_seconds(void);
double rt_thread_cpu_seconds(void);  /* the calling thread's CPU time: what a busy machine does not inflate */
void rt_progress_init(RtProgress *p, FILE *out, int epochs, int64_t samples_per_epoch);
void rt_progress_begin_epoch(RtProgress *p, int epoch);
/* done samples of this epoch so far, with the running mean loss and
 * accuracy (NaN: not shown). */
void rt_progress_update(RtProgress *p, int64_t done, double loss, double acc);
/* The epoch's final line from e (training and validation numbers, lr). */
void rt_progress_end_epoch(RtProgress *p, const RtEpochStats *e);

/* ===== series.c: a time series as forecasting windows, and baselines ===== */

typedef struct {
  double *v;                 /* the values in file order */
  int64_t n;
} RtSeries;

typedef struct {
  int64_t window;            /* W inputs per sample */
  int64_t horizon;           /* H targets per sample, right after the window */
  int64_t validate;          /* the last this many values are validation targets */
} RtSeriesSpec;

typedef struct {
  double mean, std;          /* of the training part v[0 .. n - validate) */
} RtSeriesNorm;

/* Forecast errors summed in the series' units: MAE and RMSE. */
typedef struct {
  double abs, sq;
  int64_t n;
} RtErrs;

/* Column `column` (by its header name; NULL: the last column) of a CSV. */
RtStatus rt_series_read(const char *path, const char *column, RtSeries *s, RtError *err);
void rt_series_free(RtSeries *s);            /* NULL-safe; zeroes *s */
/* Windows x [S, W] and targets y [S, H] (f64, normalised by *norm, which
 * it fits on the training part) split in time: val holds the windows whose
 * targets are all among the last `validate` values, train those whose
 * targets all come before them, both in time order. RT_ERR_ARG when
 * either side would be empty. */
RtStatus rt_series_windows(const RtSeries *s, const RtSeriesSpec *sp, const char *xname,
                           const char *yname, RtDataset *train, RtDataset *val,
                           RtSeriesNorm *norm, RtError *err);
void rt_errs_add(RtErrs *e, double pred, double target, double scale);  /* error * scale */
double rt_errs_mae(const RtErrs *e);         /* NaN when empty */
double rt_errs_rmse(const RtErrs *e);
/* The seasonal-naive forecast's errors over the validation targets of sp:
 * each target predicted by the value `period` steps before it (whole
 * periods before, for targets more than a period ahead of the window's
 * end); period 1 is persistence. */
RtErrs rt_series_naive(const RtSeries *s, const RtSeriesSpec *sp, int64_t period);

#endif

/* kiln runtime (libkilnrt.a): what compiled models, exported artifacts and
 * the compiler itself share. Tensors and their dtypes, an arena, the one
 * parallel-for generated code calls, a counter-based RNG, and .npy and
 * .safetensors I/O. It depends on libc, libm and OpenMP only.
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

#endif

/* kiln: a deep-learning compiler. The one header a program includes.
 *
 * A model file (the kiln language, docs/language.md) is parsed, checked,
 * optimised and compiled to native code by LLVM, in this process, the first
 * time it runs; later runs call the compiled code directly.
 *
 *   KilnModel *m;
 *   if (kiln_load("examples/mlp.kiln", NULL, &m) != KILN_OK) {
 *     fputs(kiln_errors(m), stderr);            // file:line:col: error: ...
 *     kiln_free(m);
 *     return 1;
 *   }
 *   kiln_load_weights(m, "mlp.safetensors");    // or kiln_init_weights(m, seed)
 *   KilnTensor in = {"x", KILN_F32, 2, {64, 784}, pixels};
 *   KilnTensor out;
 *   if (kiln_run(m, &in, 1, &out, 1) == KILN_OK)
 *     use(out.data);                            // f32[64, 10], owned by m
 *   kiln_free(m);
 *
 * Every function returns a status; on failure kiln_errors(m) says what went
 * wrong, with file, line and column for model files and the offending names
 * and shapes for tensors. Nothing in the library exits or aborts on bad
 * input. A KilnModel is not safe to use from two threads at once; separate
 * models are independent. */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_API __attribute__((visibility("default")))
#define KILN_VERSION "0.1.0"
#define KILN_MAX_RANK 8

typedef enum KilnStatus {
  KILN_OK = 0,
  KILN_ERR_IO,        /* a file could not be read or written */
  KILN_ERR_MODEL,     /* the model file has errors (syntax, names, shapes) */
  KILN_ERR_INPUT,     /* inputs of the wrong name, count, dtype or shape */
  KILN_ERR_WEIGHTS,   /* a weights file is corrupt, or lacks or mis-shapes a parameter */
  KILN_ERR_ARG,       /* an invalid argument (NULL, out of range) */
  KILN_ERR_NOMEM,     /* out of memory */
  KILN_ERR_COMPILE,   /* code generation failed: a bug in kiln, please report it */
} KilnStatus;

typedef enum KilnDType {   /* the same order as the runtime's RtDType */
  KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8, KILN_BOOL
} KilnDType;

/* A dense, C-order tensor. For inputs the caller owns `data`; outputs point
 * into memory the model owns, valid until the next run or kiln_free. */
typedef struct KilnTensor {
  const char *name;           /* input/output name; NULL on input: by position */
  KilnDType dtype;
  int rank;
  int64_t shape[KILN_MAX_RANK];
  void *data;
} KilnTensor;

typedef struct KilnOptions {
  const char *model;          /* which model of the file; NULL: the first */
  int opt_level;              /* 0..3 (default 2) */
  int threads;                /* 0: OMP_NUM_THREADS or the cores */
  int64_t max_batch;          /* compile for batches up to this (0: the first run's) */
  const char *sizes;          /* bindings of size names, "T=64,H=32" (NULL: none) */
} KilnOptions;

typedef struct KilnModel KilnModel;

KILN_API const char *kiln_version(void);
KILN_API void kiln_options_default(KilnOptions *opt);
KILN_API const char *kiln_status_name(KilnStatus st);

/* Parses and checks a model file. *out is set even on failure (unless out
 * of memory) so that kiln_errors can say why; free it with kiln_free. */
KILN_API KilnStatus kiln_load(const char *path, const KilnOptions *opt, KilnModel **out);
KILN_API KilnStatus kiln_load_string(const char *name, const char *text, size_t len,
                                     const KilnOptions *opt, KilnModel **out);
KILN_API void kiln_free(KilnModel *m);
/* Every diagnostic of the last failing call, rendered; "" if none. */
KILN_API const char *kiln_errors(const KilnModel *m);

/* The model's signature. Dims that are size names (N, T) read as -1. */
KILN_API int kiln_input_count(const KilnModel *m);
KILN_API int kiln_output_count(const KilnModel *m);
KILN_API KilnStatus kiln_input_info(const KilnModel *m, int i, KilnTensor *info);
KILN_API KilnStatus kiln_output_info(const KilnModel *m, int i, KilnTensor *info);

/* Weights. Parameters are named by their path (conv1.weight), as in
 * PyTorch's state_dict. kiln_load_weights reads .safetensors; every
 * parameter the model needs must be there with its shape (checked when the
 * model is compiled). kiln_init_weights draws fresh ones from `seed`
 * (He/Xavier per layer); the same seed gives the same weights. */
KILN_API KilnStatus kiln_load_weights(KilnModel *m, const char *path);
KILN_API KilnStatus kiln_init_weights(KilnModel *m, uint64_t seed);
KILN_API KilnStatus kiln_save_weights(KilnModel *m, const char *path);

/* Runs the model: inputs by name (or position), outputs filled in order.
 * Compiles on first use and whenever the bound sizes change or the batch
 * grows past the compiled maximum; smaller batches reuse the code. */
KILN_API KilnStatus kiln_run(KilnModel *m, const KilnTensor *inputs, int ninputs,
                             KilnTensor *outputs, int noutputs);
KILN_API KilnStatus kiln_set_threads(KilnModel *m, int threads);

#ifdef __cplusplus
}
#endif
#endif

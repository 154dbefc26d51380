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
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_API __attribute__((visibility("default")))   /* marks the exported functions */
#define KILN_VERSION "0.1.0"       /* this header's version; kiln_version() is the library's */
#define KILN_MAX_RANK 8            /* the most dims a tensor has */

typedef enum KilnStatus {
  KILN_OK = 0,
  KILN_ERR_IO,        /* a file could not be read or written */
  KILN_ERR_MODEL,     /* the model file has errors (syntax, names, shapes) */
  KILN_ERR_INPUT,     /* inputs of the wrong name, count, dtype or shape */
  KILN_ERR_WEIGHTS,   /* a weights file is corrupt, or lacks or mis-shapes a parameter */
  KILN_ERR_ARG,       /* an invalid argument (NULL, out of range) */
  KILN_ERR_NOMEM,     /* out of memory */
  KILN_ERR_COMPILE,   /* code generation failed: a bug in kiln, please report it */
  KILN_ERR_TRAIN,     /* training diverged: the loss became NaN or infinite */
} KilnStatus;

typedef enum KilnDType {   /* the same order as the runtime's RtDType */
  KILN_F32,          /* float: the compute type */
  KILN_F64,          /* double */
  KILN_I32,          /* int32_t: indices, labels */
  KILN_I64,          /* int64_t: indices, labels (argmax gives these) */
  KILN_U8,           /* uint8_t: raw data (IDX images) */
  KILN_BOOL          /* one byte, 0 or 1: masks (comparisons give these) */
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
  int perf;                   /* 1: tell `perf` the names of the generated functions (LLVM's perf
                                 JIT listener; `kiln` sets it from KILN_PERF=1) */
  const char *cache_dir;      /* keep compiled code in this folder, made if missing, and load it
                                 from there when the same model compiles again (NULL: compile
                                 afresh; `kiln` uses $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or
                                 ~/.cache/kiln, and KILN_CACHE=off turns it off) */
} KilnOptions;

/* A loaded model file: its parsed model, compiled code once run, weights,
 * and the diagnostics of the last call. Opaque; made by kiln_load. */
typedef struct KilnModel KilnModel;

/* The library's version, "0.1.0". */
KILN_API const char *kiln_version(void);
/* Fills *opt with the defaults: the first model, -O2, threads 0 (the
 * default), max_batch 0 (the first run's), no sizes bound. */
KILN_API void kiln_options_default(KilnOptions *opt);
/* The status in words: "ok", "io error", "model error", ...; "unknown status" if invalid. */
KILN_API const char *kiln_status_name(KilnStatus st);

/* Parses and checks a model file. *out is set even on failure (unless out
 * of memory) so that kiln_errors can say why; free it with kiln_free. */
KILN_API KilnStatus kiln_load(const char *path, const KilnOptions *opt, KilnModel **out);
KILN_API KilnStatus kiln_load_string(const char *name, const char *text, size_t len,
                                     const KilnOptions *opt, KilnModel **out);
/* Frees the model, its compiled code and its weights; NULL is allowed. */
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
/* Saves every weight and state value (running statistics) but the
 * optimizer's ("optim.*", which checkpoints keep). */
KILN_API KilnStatus kiln_save_weights(KilnModel *m, const char *path);

/* Runs the model: inputs by name (or position), outputs filled in order.
 * Compiles on first use and whenever the bound sizes change or the batch
 * grows past the compiled maximum; smaller batches reuse the code. */
KILN_API KilnStatus kiln_run(KilnModel *m, const KilnTensor *inputs, int ninputs,
                             KilnTensor *outputs, int noutputs);
/* Input i's buffer in the model's own memory, shaped as in the last
 * kiln_run: an input written there and passed to kiln_run is read in place
 * instead of copied in (as ONNX Runtime's I/O binding or TensorFlow Lite's
 * input tensors do). Valid until a run compiles anew (a larger batch,
 * other sizes, changed weights), kiln_set_threads raises the count, or
 * kiln_free; kiln_run refuses a buffer it is about to free. Before the
 * first run: KILN_ERR_ARG. */
KILN_API KilnStatus kiln_input_buffer(KilnModel *m, int i, KilnTensor *t);
/* The threads later runs and training steps use (0: OMP_NUM_THREADS or
 * the cores); results are the same at any count. */
KILN_API KilnStatus kiln_set_threads(KilnModel *m, int threads);
/* Call first thing in main(argc, argv) to make OpenMP's idle threads spin
 * briefly (about 60 us, so that the next call finds them awake) and then
 * sleep, instead of spinning 3 ms at every barrier (libgomp's default,
 * which on a busy machine steals the time slices the working threads
 * need): when neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, it sets
 * GOMP_SPINCOUNT and re-executes the program with the same argv (libgomp
 * reads the variable once, before main). Otherwise, or if the exec fails,
 * it returns and changes nothing. The kiln tool does this. */
KILN_API void kiln_prefer_passive_wait(char **argv);

/* ---- training ---------------------------------------------------------------
 *
 * A model file's `train` block says what to train on and how: data, split,
 * loss, optimizer, schedule, batch, epochs, seed, checkpoints. One training
 * step is one compiled function (forward, loss, backward and the optimizer's
 * update, in place); the host runs the loop around it:
 *
 *   KilnTrainOptions o;
 *   kiln_train_options_default(&o);
 *   o.epochs = 20;                              // overrides the train block
 *   o.out = "digits.safetensors";
 *   if (kiln_init_weights(m, 1) != KILN_OK || kiln_train(m, &o) != KILN_OK)
 *     fputs(kiln_errors(m), stderr);
 *
 * Results are the same at any thread count, bit for bit, and a run resumed
 * from a checkpoint ends with the same weights as one that never stopped.
 * Paths in a train block are relative to the model file's folder; paths in
 * KilnTrainOptions to the current directory. */

/* One epoch's numbers; NaN where nothing was measured (no validation or test
 * set, no accuracy for a model that is not a classifier). Losses are means
 * over the samples; accuracies are fractions in [0, 1] (argmax of the first
 * output against integer labels). Training numbers are measured during the
 * epoch, on the weights as they were at each step (as Keras reports them). */
typedef struct KilnEpoch {
  int epoch;                  /* 1-based */
  int64_t steps;              /* steps taken so far in the whole run (-1: not kept, kiln_epoch_get) */
  double loss, acc;           /* training */
  double val_loss, val_acc;   /* validation split, after the epoch */
  double test_loss, test_acc; /* the train block's test set, after the epoch */
  double lr;                  /* the learning rate of the epoch */
  double seconds;             /* the epoch's wall time, evaluation included */
} KilnEpoch;

/* Overrides of the train block (kiln_train_options_default leaves each one
 * unset: the block's value is used) and what to write. */
typedef struct KilnTrainOptions {
  const char *train;          /* which train block: the model it trains (NULL: the loaded model's) */
  int epochs;                 /* 0: unset */
  int64_t batch;              /* 0: unset */
  double lr;                  /* 0: unset */
  int64_t seed;               /* -1: unset; shuffles, split and dropout draw from it */
  double split;               /* validation fraction in [0, 1); -1: unset */
  const char *optimizer;      /* an optimizer expression, "sgd(momentum=0.9)"; NULL: unset */
  const char *data;           /* a data file (.csv, .npy, IDX; gzipped or not) in place of the block's */
  const char *labels;         /* with a .npy or IDX data file: its labels file */
  double scale;               /* features *= scale; 0: unset (the block's for data of its kind, else 1) */
  const char *checkpoint;     /* checkpoint path (.safetensors); NULL: the block's */
  const char *checkpoint_default;  /* when neither names one (NULL: no checkpoints) */
  int checkpoint_every;       /* epochs between checkpoints; 0: the block's, else 1 */
  const char *resume;         /* a checkpoint to continue from, where it stopped */
  const char *out;            /* write the trained weights here at the end (NULL: don't) */
  const char *curves;         /* write PREFIX.csv and PREFIX.svg (NULL: don't) */
  FILE *progress;             /* progress bar and a line per epoch (NULL: silent) */
  FILE *json;                 /* one JSON object per epoch (NULL: none) */
  /* after each epoch (and its checkpoint), or NULL; non-zero stops training there */
  int (*on_epoch)(const KilnEpoch *e, void *user);
  void *user;
} KilnTrainOptions;

KILN_API void kiln_train_options_default(KilnTrainOptions *o);

/* Trains m as its train block says, with o's overrides (o NULL: none),
 * starting from m's weights (kiln_load_weights, or kiln_init_weights;
 * drawn from the seed when neither was called) or from o->resume. Every
 * data problem (a missing file, labels out of range, NaN, a data width that
 * does not match the model's input, a checkpoint of another model) is an
 * error status with a message; so is a failed checkpoint write, which
 * leaves the previous checkpoint intact. On success m holds the trained
 * weights: kiln_run and kiln_save_weights use them. */
KILN_API KilnStatus kiln_train(KilnModel *m, const KilnTrainOptions *o);

/* Evaluates m's current weights: loss and accuracy over o->data (all of
 * it), else over the train block's test set, else over its validation
 * split. Fills loss and acc of *out (the other fields NaN, epoch 0);
 * *samples (if not NULL) gets the number of samples. */
KILN_API KilnStatus kiln_evaluate(KilnModel *m, const KilnTrainOptions *o, KilnEpoch *out,
                                  int64_t *samples);

/* One training step on one batch: inputs are the model's inputs and the
 * labels the loss uses (by name, e.g. "x" and "label"), all with the same
 * leading batch dim. Compiles the step on first use (and again when the
 * batch grows past the compiled maximum); *loss (if not NULL) gets the
 * batch's mean loss before the update. The optimizer is the train block's. */
KILN_API KilnStatus kiln_train_step(KilnModel *m, const KilnTensor *inputs, int ninputs,
                                    float lr, float *loss);

/* The inputs of kiln_train_step, in its order: the model's inputs, then
 * what the loss reads besides the outputs (labels, regression targets), as
 * kiln_input_info describes them. Sets the step up from the train block on
 * first use; -1 (and a message) when the model has no train block. */
KILN_API int kiln_train_input_count(KilnModel *m);
KILN_API KilnStatus kiln_train_input_info(KilnModel *m, int i, KilnTensor *info);

/* The epochs of the last kiln_train (those of a resumed checkpoint too). */
KILN_API int kiln_epoch_count(const KilnModel *m);
KILN_API KilnStatus kiln_epoch_get(const KilnModel *m, int i, KilnEpoch *out);

/* ---- text models and generation ---------------------------------------------
 *
 * A model trained on text() data (docs/language.md) maps characters to
 * symbol indices: index 0 is the end of a word (and the padding), indices
 * 1.. the characters of the data sorted by code point. kiln_train keeps this
 * vocabulary in the weights' and checkpoints' metadata, kiln_load_weights
 * reads it back, and training or evaluating on data whose vocabulary
 * differs is an error naming both files. */

/* The vocabulary's symbols 1.. as UTF-8 (symbol i is the i-th character),
 * or NULL when the weights hold none. *lines (if not NULL) is 1 when the
 * samples were lines of the file (a word list: each starts after symbol 0
 * and ends with it), 0 when they were windows of a running text. The
 * string is the model's, valid until its weights change. */
KILN_API const char *kiln_vocab(const KilnModel *m, int *lines);

/* The step function of a model whose recurrence is a `scan` (rnn, lstm,
 * gru, or one written by hand): the model at sequence length 1 with each
 * carried state as an explicit input and output, so a decoder feeds one
 * time step at a time:
 *
 *   KilnStep *s;
 *   kiln_step_create(m, 1, &s);                 // batch 1; weights as m holds them now
 *   KilnTensor in = {"ids", KILN_I32, 2, {1, 1}, &symbol}, out;
 *   for (...) {
 *     kiln_step_run(s, &in, 1, &out, 1);        // out: f32[1, 1, V], the next symbol's logits
 *     symbol = pick(out.data);
 *   }
 *   kiln_step_reset(s);                         // back to the initial (zero) state
 *   kiln_step_free(s);
 *
 * The states are numbered in the order of the model's scans and their
 * carries (an LSTM layer: h, then c); kiln_step_state gives each one's
 * shape and memory, which the caller may read or overwrite between steps
 * (to start from a given state). Running the step T times from the zero
 * state gives the full model's outputs at t = 0 .. T-1, and the same inputs
 * give the same outputs at any thread count. Make a step program after
 * m's weights are loaded or trained (its code may hold their values);
 * errors go to kiln_errors(m). */
typedef struct KilnStep KilnStep;

/* Compiles the step function of m (weights: loaded, trained, or drawn from
 * the seed) for batches of up to max_batch sequences (0: 1). KILN_ERR_MODEL
 * when the model's scan does not run over a sequence length that is a size
 * name. A model with no scan (a causal transformer) steps as a window over
 * its first input's sequence axis (dim 1), whose size T must be bound when
 * m is loaded (KilnOptions.sizes, "T=23"): it has no states, each step
 * writes its inputs at the next position, runs the whole model and gives
 * its outputs at that position (what the full model gives there when the
 * model is causal), and a sequence ends after T steps. */
KILN_API KilnStatus kiln_step_create(KilnModel *m, int64_t max_batch, KilnStep **out);
KILN_API int kiln_step_state_count(const KilnStep *s);
/* State i: name ("state.0", ...), dtype, shape at the batch of the last
 * run (max_batch before any), and data, the live state (read and write). */
KILN_API KilnStatus kiln_step_state(KilnStep *s, int i, KilnTensor *state);
/* Sets every state to zero, as a sequence starts. */
KILN_API void kiln_step_reset(KilnStep *s);
/* One time step: inputs are the model's with the sequence length 1 (by
 * name or position; a batch of at most max_batch sequences, whose states
 * are the first rows of each state), outputs the model's at this step
 * (owned by s, valid until the next call); the state moves on. */
KILN_API KilnStatus kiln_step_run(KilnStep *s, const KilnTensor *inputs, int ninputs,
                                  KilnTensor *outputs, int noutputs);
KILN_API void kiln_step_free(KilnStep *s);   /* NULL is allowed; free it before its model */

#ifdef __cplusplus
}
#endif
#endif

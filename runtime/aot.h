/* The runtime of exported models (kiln export, kiln build): the generic
 * create / infer / train-step / weights logic, driven by a descriptor that
 * the export writes into the model's object (tools/export.c). The model's
 * object holds its code, the descriptor, the embedded weights and small
 * NAME_-prefixed functions forwarding to the kiln_aot_ entries below; the
 * generated NAME.h documents those for C programmers and is all they see.
 *
 * The descriptor is an array of int64 words (no struct layout to agree on
 * between the generated object and this file, whatever the target):
 *
 *   words[0] KILN_AOT_VERSION    words[1] max batch    words[2] graphs (1 or 2)
 *   words[3] blob bytes          words[4] default nthreads plan (informative)
 *   then per graph (0 inference, 1 the training step) AOT_GRAPH_WORDS words:
 *     region bytes[5], ninputs, noutputs, nstored, ninit, lr input (-1: none)
 *   followed by (ninputs + noutputs + nstored) tensor records of
 *   AOT_TENSOR_WORDS words (inputs, outputs, then params and state) and
 *   ninit records {region, offset, bytes, blob offset}: the embedded
 *   initial contents copied over the zeroed regions.
 *
 * A tensor's dim d at run time is mul[d] * batch + add[d]: every dim of a
 * compiled graph is affine in the batch (tools/export.c checks it). */
#ifndef KILN_RT_AOT_H
#define KILN_RT_AOT_H

#include <stdint.h>

#define KILN_AOT_VERSION 1
#define KILN_AOT_REGIONS 5         /* weights, io, scratch, state, grads: ir/ir.h's Region */
#define KILN_AOT_HEAD_WORDS 5
#define KILN_AOT_GRAPH_WORDS 16
#define KILN_AOT_TENSOR_WORDS 24
#define KILN_AOT_INIT_WORDS 4

/* Tensor record fields (word index). */
enum {
  KILN_AOT_T_NAME,           /* offset of its name in the string table */
  KILN_AOT_T_ROLE,           /* KilnAotRole */
  KILN_AOT_T_REGION,
  KILN_AOT_T_OFFSET,         /* bytes from the region's base */
  KILN_AOT_T_DTYPE,          /* RtDType */
  KILN_AOT_T_RANK,
  KILN_AOT_T_FILL,           /* state that a weights file may lack: 1 = fill with the value below */
  KILN_AOT_T_FILL_VALUE,     /* a double's bits */
  KILN_AOT_T_MUL,            /* mul[8] then add[8] */
  KILN_AOT_T_ADD = KILN_AOT_T_MUL + 8,
};

typedef enum { KILN_AOT_INPUT, KILN_AOT_OUTPUT, KILN_AOT_PARAM, KILN_AOT_STATE } KilnAotRole;

/* The compiled calling convention of DESIGN.md. */
typedef void (*KilnAotEntry)(void **regions, int64_t batch, int32_t nthreads);

/* What the model's object hands the runtime: a layout of pointers only. */
typedef struct KilnAotModel {
  const int64_t *words;
  const char *strings;
  const unsigned char *blob;
  KilnAotEntry entry[2];     /* inference, training step (NULL: none) */
  const char *name;
  const char *weights_file;  /* the .safetensors named at export (--weights-file), or NULL */
} KilnAotModel;

/* A dense C-order tensor, as NAME_tensor in the generated header. */
typedef struct KilnAotTensor {
  int32_t dtype;
  int32_t rank;
  int64_t shape[8];
  void *data;
} KilnAotTensor;

typedef struct KilnAot KilnAot;   /* an instance: its regions, threads, last error */

/* Status codes, those of include/kiln.h. */
enum { KILN_AOT_OK = 0, KILN_AOT_ERR_IO = 1, KILN_AOT_ERR_INPUT = 3, KILN_AOT_ERR_WEIGHTS = 4,
       KILN_AOT_ERR_ARG = 5, KILN_AOT_ERR_NOMEM = 6 };

/* Instances. *out is set even on failure (unless out of memory) so that
 * kiln_aot_error can say why; kiln_aot_destroy frees it. weights: a
 * .safetensors path, or NULL for the embedded weights (or the file named at
 * export). */
int kiln_aot_create(const KilnAotModel *d, KilnAot **out, const char *weights);
void kiln_aot_destroy(KilnAot *m);
const char *kiln_aot_error(const KilnAot *m);
int kiln_aot_set_threads(KilnAot *m, int nthreads);     /* 0: OMP_NUM_THREADS or the cores */
int kiln_aot_infer(KilnAot *m, int64_t batch, const void *const *in, void *const *out);
int kiln_aot_infer_tensors(KilnAot *m, const KilnAotTensor *in, int nin, KilnAotTensor *out,
                           int nout);
int kiln_aot_train_step(KilnAot *m, int64_t batch, const void *const *in, float lr, float *loss);
void *kiln_aot_find(KilnAot *m, const char *name);     /* a parameter's or state's current data */
int kiln_aot_save_weights(KilnAot *m, const char *path);

/* Caller-owned memory: regions[KILN_AOT_REGIONS] of the sizes the header
 * gives, 64-byte aligned; init zeroes them and fills weights and state. */
int kiln_aot_init_regions(const KilnAotModel *d, int graph, void *const *regions,
                          const char *weights);
int kiln_aot_run(const KilnAotModel *d, int graph, void *const *regions, int64_t batch,
                 int nthreads);

/* The program `kiln build` writes (runtime/aot_main.c). */
int kiln_aot_main(const KilnAotModel *d, int argc, char **argv);

/* For runtime/aot_main.c: the model's signature. */
typedef struct KilnAotSig {
  int ninputs, noutputs;
  int64_t max_batch;
} KilnAotSig;
KilnAotSig kiln_aot_sig(const KilnAotModel *d);
const char *kiln_aot_io_name(const KilnAotModel *d, int i);   /* inputs, then outputs */
/* Tensor i of the inference graph (inputs then outputs) at this batch. */
void kiln_aot_io_shape(const KilnAotModel *d, int i, int64_t batch, int *dtype, int *rank,
                       int64_t *shape);
/* Whether every input and output has the batch as its leading dim (mul 1, add 0)
 * and no other dim depends on it: then rows can be run in chunks. */
int kiln_aot_batch_leading(const KilnAotModel *d);

#endif

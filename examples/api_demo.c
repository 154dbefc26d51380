/* A C program using kiln's API: load a model, draw its weights from a seed
 * (or load them), run it on a batch, print the predicted classes.
 *
 *   build/examples/api_demo examples/mlp.kiln [weights.safetensors]
 */
#include <kiln.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.kiln [WEIGHTS.safetensors]\n", argv[0]);
    return 2;
  }
  KilnModel *m;
  KilnStatus st = kiln_load(argv[1], NULL, &m);
  if (st == KILN_OK)
    st = argc > 2 ? kiln_load_weights(m, argv[2]) : kiln_init_weights(m, 42);
  if (st != KILN_OK) {
    fputs(kiln_errors(m), stderr);
    kiln_free(m);
    return 1;
  }
  /* one input; its size names (the batch) read as -1: use a batch of 4 */
  KilnTensor in;
  kiln_input_info(m, 0, &in);
  int64_t n = 1;
  for (int i = 0; i < in.rank; i++) {
    if (in.shape[i] < 0)
      in.shape[i] = 4;
    n *= in.shape[i];
  }
  float *x = malloc(n * sizeof *x);
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)((i * 7919) % 17) / 16.0f;    /* a fixed pattern */
  in.data = x;
  KilnTensor out;
  st = kiln_run(m, &in, 1, &out, 1);
  if (st != KILN_OK) {
    fputs(kiln_errors(m), stderr);
  } else {
    int64_t rows = out.shape[0], cols = out.rank > 1 ? out.shape[1] : 1;
    for (int64_t r = 0; r < rows; r++) {
      const float *y = (const float *)out.data + r * cols;
      int64_t best = 0;
      for (int64_t c = 1; c < cols; c++)
        if (y[c] > y[best])
          best = c;
      printf("sample %lld: class %lld (score %.4f)\n", (long long)r, (long long)best, y[best]);
    }
  }
  free(x);
  kiln_free(m);
  return st == KILN_OK ? 0 : 1;
}

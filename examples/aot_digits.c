/* Reads digits as CSV rows (64 pixels 0..16, then the label) and prints the
 * digit the exported model sees in each; README.md, "Deploying a model". */
#include <stdio.h>
#include "digits.h"

int main(void) {
  digits *m;
  float x[65], logits[10];
  if (digits_create(&m, NULL) != DIGITS_OK)
    return fprintf(stderr, "%s\n", digits_error(m)), 1;
  for (int n = 0; scanf(n ? ",%f" : " %f", &x[n]) == 1;)
    if (++n == 65) {
      for (int i = 0; i < 64; i++)
        x[i] /= 16;
      digits_infer(m, 1, (const void *[]){x}, (void *[]){logits});
      int best = 0;
      for (int k = 1; k < 10; k++)
        best = logits[k] > logits[best] ? k : best;
      printf("%d\n", best);
      n = 0;
    }
  digits_destroy(m);
  return 0;
}

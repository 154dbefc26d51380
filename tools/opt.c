/* Command-line options shared by the kiln command (tools/kiln.c) and its
 * export commands (tools/export.c). */
#include <string.h>
#include "tools/api.h"

/* --key=value or --key value: the value when argv[*i] is KEY (advancing *i
 * past a separate value), else NULL; *missing is set when KEY is the last
 * word and has no value. */
const char *kiln__opt(int argc, char **argv, int *i, const char *key, bool *missing) {
  size_t n = strlen(key);
  *missing = false;
  if (strncmp(argv[*i], key, n))
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != 0)
    return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

/* The code cache: compiled objects on disk, so that a model compiles once
 * per machine and later runs of `kiln` load its code in milliseconds (what
 * ccache does for C, and PyTorch's inductor and XLA do for their kernels).
 *
 * The key is a 128-bit hash of everything that determines the object: the
 * module's bitcode before optimisation (kiln's whole output for the graph:
 * shapes, fusion, epilogues), the target (triple, CPU, features), the IR
 * pipeline (level, functions of equal code merged or kept), LLVM's version
 * and this file's format. A file holds a
 * header (magic, payload length, payload hash) and the object; one that is
 * short, changed or of another format is a miss, never loaded. Writes go to
 * a temporary file renamed into place, so a reader never sees half a file
 * and two processes compiling the same model both end with a good one.
 *
 * Where: the folder the caller names (KilnOptions.cache_dir; the kiln
 * command picks $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or ~/.cache/kiln);
 * the library reads no environment. A cache that cannot be read or
 * written is no error: kiln compiles, as it would without one. */
#include "codegen/codegen.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <llvm-c/BitWriter.h>

#define CACHE_MAGIC "KILNOBJ1"
enum { HEADER_BYTES = 24 };   /* magic, payload length, payload hash */

/* Two 64-bit lanes of a multiply-xorshift hash, each from its own seed:
 * not cryptographic (nobody forges keys to a local cache), but well mixed. */
static uint64_t mix(uint64_t h, uint64_t w) {
  h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 31);
}

static void hash_bytes(uint64_t h[2], const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i += 8) {
    uint64_t w = 0;
    memcpy(&w, p + i, len - i < 8 ? len - i : 8);
    h[0] = mix(h[0], w);
    h[1] = mix(h[1] ^ 0x94d049bb133111ebull, w);
  }
  h[0] = mix(h[0], len);
  h[1] = mix(h[1], ~(uint64_t)len);
}

static void hash_str(uint64_t h[2], const char *s) { hash_bytes(h, s, strlen(s) + 1); }

static uint64_t checksum(const void *data, size_t len) {
  uint64_t h[2] = {1, 2};
  hash_bytes(h, data, len);
  return h[0] ^ h[1];
}

/* d copied into dir and made, with its parents, if missing; false when
 * that fails. */
static bool make_dir(const char *d, char *dir, size_t len) {
  int n = snprintf(dir, len, "%s", d);
  if (n < 0 || (size_t)n >= len)
    return false;
  for (char *p = dir + 1; *p; p++) {     /* mkdir -p */
    if (*p != '/')
      continue;
    *p = 0;
    mkdir(dir, 0755);
    *p = '/';
  }
  return mkdir(dir, 0755) == 0 || errno == EEXIST;
}

bool cg_cache_key(CgCtx *c, int level, CgCacheKey *key) {
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(c->mod);
  if (!bc)
    return false;
  uint64_t h[2] = {0x6b696c6e, 0x63616368};
  hash_bytes(h, LLVMGetBufferStart(bc), LLVMGetBufferSize(bc));
  LLVMDisposeMemoryBuffer(bc);
  char *triple = LLVMGetTargetMachineTriple(c->tm), *cpu = LLVMGetTargetMachineCPU(c->tm),
       *feat = LLVMGetTargetMachineFeatureString(c->tm);
  unsigned major, minor, patch;
  LLVMGetVersion(&major, &minor, &patch);
  char extra[96];
  snprintf(extra, sizeof extra, "%s llvm %u.%u.%u O%d%s", CACHE_MAGIC, major, minor, patch, level,
           c->keep_equal_functions ? " kept" : "");
  hash_str(h, triple);
  hash_str(h, cpu);
  hash_str(h, feat);
  hash_str(h, extra);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  key->h[0] = h[0];
  key->h[1] = h[1];
  return true;
}

static bool entry_path(const char *d, const CgCacheKey *k, char *path, size_t len) {
  char dir[4096];
  if (!d || !*d || !make_dir(d, dir, sizeof dir))
    return false;
  int n = snprintf(path, len, "%s/%016llx%016llx.o", dir, (unsigned long long)k->h[0],
                   (unsigned long long)k->h[1]);
  return n > 0 && (size_t)n < len;
}

void *cg_cache_get(const char *dir, const CgCacheKey *k, size_t *len) {
  char path[4200];
  *len = 0;
  if (!entry_path(dir, k, path, sizeof path))
    return NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  unsigned char head[HEADER_BYTES];
  uint64_t n = 0, sum = 0;
  void *data = NULL;
  if (fread(head, 1, HEADER_BYTES, f) == HEADER_BYTES && !memcmp(head, CACHE_MAGIC, 8)) {
    memcpy(&n, head + 8, 8);
    memcpy(&sum, head + 16, 8);
    data = n > 0 && n < ((uint64_t)1 << 31) ? malloc(n) : NULL;
  }
  if (data && (fread(data, 1, n, f) != n || fgetc(f) != EOF || checksum(data, n) != sum)) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *len = data ? (size_t)n : 0;
  return data;
}

void cg_cache_put(const char *dir, const CgCacheKey *k, const void *obj, size_t len) {
  char path[4200], tmp[4300];
  if (!entry_path(dir, k, path, sizeof path))
    return;
  snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0)
    return;
  FILE *f = fdopen(fd, "wb");
  uint64_t n = len, sum = checksum(obj, len);
  bool ok = f && fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&n, 8, 1, f) == 1 &&
            fwrite(&sum, 8, 1, f) == 1 && fwrite(obj, 1, len, f) == len;
  if (f ? fclose(f) != 0 : close(fd) != 0)
    ok = false;
  if (!ok || rename(tmp, path) != 0)
    unlink(tmp);
}

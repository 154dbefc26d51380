/* Philox4x32-10 and the fills built on it.
 *
 * Philox is a keyed bijection of a 128-bit counter: ten rounds of two
 * 32x32->64 multiplies, with the key bumped by Weyl constants between
 * rounds. Random numbers are Philox(counter = (block, stream), key = seed):
 * element i of a stream reads words of block i / k (k elements per call), so
 * its value is a pure function of (seed, stream, i). That is what makes
 * dropout masks, initialisation and shuffles independent of thread count
 * and of the order in which chunks run. The fills run on rt_parallel_for
 * with chunks of whole blocks. */
#include "runtime/rt.h"
#include <math.h>

enum {
  PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u,   /* round multipliers */
  PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u,   /* key bumps: golden ratio, sqrt(3)-1 */
  FILL_GRAIN = 1 << 14,                               /* elements per parallel chunk */
};

static void philox_round(uint32_t x[4], const uint32_t k[2]) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * x[0], p1 = (uint64_t)PHILOX_M1 * x[2];
  uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
  uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
  uint32_t y0 = hi1 ^ x[1] ^ k[0], y2 = hi0 ^ x[3] ^ k[1];
  x[0] = y0, x[1] = lo1, x[2] = y2, x[3] = lo0;
}

void rt_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t x[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k[2] = {key[0], key[1]};
  for (int r = 0; r < 10; r++) {
    if (r > 0)
      k[0] += PHILOX_W0, k[1] += PHILOX_W1;
    philox_round(x, k);
  }
  for (int i = 0; i < 4; i++)
    out[i] = x[i];
}

uint64_t rt_hash_str(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* The four words of block `block` of (seed, stream). */
static void block_words(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
  uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                     (uint32_t)(stream >> 32)};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  rt_philox4x32(ctr, key, out);
}

uint32_t rt_random_u32(uint64_t seed, uint64_t stream, uint64_t i) {
  uint32_t w[4];
  block_words(seed, stream, i / 4, w);
  return w[i % 4];
}

/* Uniforms in [0, 1) from 24 and 53 bits; open01 variants in (0, 1] for log. */
static double unit24(uint32_t w) { return (w >> 8) * 0x1p-24; }
static double unit53(uint32_t hi, uint32_t lo) { return (((uint64_t)hi << 32 | lo) >> 11) * 0x1p-53; }

/* One fill: its parameters, and how to make the elements of one block. */
typedef struct Fill Fill;
struct Fill {
  void *dst;
  bool f64;                  /* dst is double, else float */
  int64_t n;
  double a, b;               /* lo and hi, or mean and std */
  double lo, hi;             /* truncation bounds */
  bool open_hi;              /* results must stay below b */
  uint64_t seed, stream;
  int per_block;             /* elements made from one Philox block */
  void (*block)(const Fill *f, const uint32_t w[4], double out[4]);
};

static void block_uniform24(const Fill *f, const uint32_t w[4], double out[4]) {
  for (int j = 0; j < 4; j++)
    out[j] = f->a + (f->b - f->a) * unit24(w[j]);
}

static void block_uniform53(const Fill *f, const uint32_t w[4], double out[4]) {
  out[0] = f->a + (f->b - f->a) * unit53(w[0], w[1]);
  out[1] = f->a + (f->b - f->a) * unit53(w[2], w[3]);
}

/* Box-Muller on u1 in (0, 1], u2 in [0, 1): two independent normals. */
static void box_muller(double u1, double u2, double mean, double std, double out[2]) {
  double r = sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * u2;
  out[0] = mean + std * r * cos(t);
  out[1] = mean + std * r * sin(t);
}

static void block_normal24(const Fill *f, const uint32_t w[4], double out[4]) {
  box_muller(1.0 - unit24(w[0]), unit24(w[1]), f->a, f->b, out);
  box_muller(1.0 - unit24(w[2]), unit24(w[3]), f->a, f->b, out + 2);
}

static void block_normal53(const Fill *f, const uint32_t w[4], double out[4]) {
  box_muller(1.0 - unit53(w[0], w[1]), unit53(w[2], w[3]), f->a, f->b, out);
}

static void store(const Fill *f, int64_t i, double v) {
  if (f->f64) {
    if (f->open_hi && v >= f->b && f->b > f->a)
      v = nextafter(f->b, f->a);
    ((double *)f->dst)[i] = v;
    return;
  }
  float x = (float)v;        /* may round up to hi: keep [lo, hi) */
  if (f->open_hi && x >= (float)f->b && f->b > f->a)
    x = nextafterf((float)f->b, (float)f->a);
  ((float *)f->dst)[i] = x;
}

static void fill_task(void *ctx, int64_t lo, int64_t hi) {
  const Fill *f = ctx;
  for (int64_t i = lo; i < hi;) {
    uint32_t w[4];
    double v[4];
    block_words(f->seed, f->stream, (uint64_t)i / f->per_block, w);
    f->block(f, w, v);
    for (int j = (int)(i % f->per_block); j < f->per_block && i < hi; j++, i++)
      store(f, i, v[j]);
  }
}

/* Element i takes draw i, i + n, i + 2n, ... of the normal stream, the first
 * inside [lo, hi]; the bound on tries keeps absurd bounds (far in a tail)
 * from hanging, and the clamp keeps the result in range anyway. */
static double trunc_normal_at(const Fill *f, uint64_t i) {
  double z[4] = {0};
  for (int try = 0; try < 1000; try++) {
    uint64_t d = i + (uint64_t)try * (uint64_t)f->n;
    uint32_t w[4];
    block_words(f->seed, f->stream, d / 4, w);
    block_normal24(f, w, z);
    if (z[d % 4] >= f->lo && z[d % 4] <= f->hi)
      return z[d % 4];
  }
  return fmin(fmax(z[0], f->lo), f->hi);
}

static void trunc_normal_task(void *ctx, int64_t lo, int64_t hi) {
  const Fill *f = ctx;
  for (int64_t i = lo; i < hi; i++)
    store(f, i, trunc_normal_at(f, (uint64_t)i));
}

static void run_fill(Fill f, RtTask task) {
  if (f.n > 0)
    rt_parallel_for(task, &f, f.n, FILL_GRAIN, 0);
}

void rt_fill_uniform(float *dst, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream) {
  run_fill((Fill){.dst = dst, .n = n, .a = lo, .b = hi, .open_hi = true, .seed = seed,
                  .stream = stream, .per_block = 4, .block = block_uniform24}, fill_task);
}

void rt_fill_uniform_f64(double *dst, int64_t n, double lo, double hi, uint64_t seed, uint64_t stream) {
  run_fill((Fill){.dst = dst, .f64 = true, .n = n, .a = lo, .b = hi, .open_hi = true,
                  .seed = seed, .stream = stream, .per_block = 2, .block = block_uniform53},
           fill_task);
}

void rt_fill_normal(float *dst, int64_t n, float mean, float std, uint64_t seed, uint64_t stream) {
  run_fill((Fill){.dst = dst, .n = n, .a = mean, .b = std, .seed = seed, .stream = stream,
                  .per_block = 4, .block = block_normal24}, fill_task);
}

void rt_fill_normal_f64(double *dst, int64_t n, double mean, double std, uint64_t seed, uint64_t stream) {
  run_fill((Fill){.dst = dst, .f64 = true, .n = n, .a = mean, .b = std, .seed = seed,
                  .stream = stream, .per_block = 2, .block = block_normal53}, fill_task);
}

void rt_fill_trunc_normal(float *dst, int64_t n, float mean, float std, float lo, float hi,
                          uint64_t seed, uint64_t stream) {
  run_fill((Fill){.dst = dst, .n = n, .a = mean, .b = std, .lo = lo, .hi = hi, .seed = seed,
                  .stream = stream}, trunc_normal_task);
}

/* Sequential 64-bit draws for the shuffle: draw k is words 2k, 2k+1. */
typedef struct { uint64_t seed, stream, k; } Draws;

static uint64_t next64(Draws *d) {
  uint32_t w[4];
  block_words(d->seed, d->stream, d->k / 2, w);
  int j = (int)(d->k++ % 2) * 2;
  return (uint64_t)w[j] << 32 | w[j + 1];
}

/* Uniform in [0, bound) without modulo bias (Lemire's multiply-and-reject). */
static uint64_t bounded(Draws *d, uint64_t bound) {
  unsigned __int128 m = (unsigned __int128)next64(d) * bound;
  if ((uint64_t)m < bound) {
    uint64_t threshold = -bound % bound;
    while ((uint64_t)m < threshold)
      m = (unsigned __int128)next64(d) * bound;
  }
  return (uint64_t)(m >> 64);
}

void rt_shuffle(int64_t *perm, int64_t n, uint64_t seed, uint64_t stream) {
  Draws d = {seed, stream, 0};
  for (int64_t i = 0; i < n; i++)
    perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)bounded(&d, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

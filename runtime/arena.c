/* A bump allocator: allocations are carved from the head chunk; when it is
 * full a new CHUNK-byte head is pushed on the list (a big request gets a
 * chunk of its own), and rt_arena_free releases the list. Chunks come from
 * calloc, so memory is zeroed; offsets are rounded to 16 bytes, the
 * alignment of max_align_t. */
#include "runtime/rt.h"
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 64 << 10, ARENA_ALIGN = 16 };

typedef struct Chunk {
  struct Chunk *next;        /* the previous (fuller) chunk */
  size_t size, used;         /* bytes of mem[] and bytes handed out */
  _Alignas(ARENA_ALIGN) unsigned char mem[];
} Chunk;

struct RtArena {
  Chunk *head;               /* the chunk allocations come from */
  size_t reserved;           /* bytes of all chunks, counted against limit */
  size_t used;               /* bytes handed out */
  size_t limit;
};

RtArena *rt_arena_new(void) {
  RtArena *a = calloc(1, sizeof *a);
  if (a)
    a->limit = RT_ARENA_LIMIT;
  return a;
}

/* A chunk of `size` bytes, counted against the limit; not linked yet. */
static Chunk *new_chunk(RtArena *a, size_t size) {
  if (a->reserved > a->limit || size > a->limit - a->reserved || size > SIZE_MAX - sizeof(Chunk))
    return NULL;
  Chunk *c = calloc(1, sizeof(Chunk) + size);
  if (!c)
    return NULL;
  c->size = size;
  a->reserved += size;
  return c;
}

static void *take(RtArena *a, Chunk *c, size_t bytes) {
  void *p = c->mem + c->used;
  c->used += bytes;
  a->used += bytes;
  return p;
}

void *rt_arena_alloc(RtArena *a, size_t bytes) {
  size_t rounded = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (rounded < bytes)
    return NULL;
  if (rounded == 0)
    rounded = ARENA_ALIGN;   /* distinct pointers for zero-sized objects */
  Chunk *head = a->head;
  if (head && head->size - head->used >= rounded)
    return take(a, head, rounded);
  /* A big request gets a chunk of its own behind the head, so the head's
   * free space stays in use; a small one starts a new head. */
  bool big = rounded > CHUNK / 4;
  Chunk *c = new_chunk(a, big ? rounded : CHUNK);
  if (!c)
    return NULL;
  if (big && head) {
    c->next = head->next;
    head->next = c;
  } else {
    c->next = head;
    a->head = c;
  }
  return take(a, c, rounded);
}

char *rt_arena_strndup(RtArena *a, const char *s, size_t n) {
  char *p = rt_arena_alloc(a, n + 1);
  if (p)
    memcpy(p, s, n);         /* the terminator is already zero */
  return p;
}

char *rt_arena_strdup(RtArena *a, const char *s) { return rt_arena_strndup(a, s, strlen(s)); }

char *rt_arena_printf(RtArena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *p = rt_arena_alloc(a, (size_t)n + 1);
  if (!p)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

size_t rt_arena_used(const RtArena *a) { return a->used; }

void rt_arena_set_limit(RtArena *a, size_t bytes) { a->limit = bytes; }

void rt_arena_free(RtArena *a) {
  if (!a)
    return;
  for (Chunk *c = a->head, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(a);
}

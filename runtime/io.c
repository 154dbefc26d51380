/* Byte sources and atomic files, the two halves every loader and writer
 * share.
 *
 * A source reads exact ranges of a file or of a buffer, so a loader parses
 * the header and then reads each tensor straight into its final, aligned
 * place: no second copy of a multi-gigabyte checkpoint, and one code path
 * for files and for fuzzing from memory.
 *
 * An atomic file is written beside its target as "<path>.tmp", flushed to
 * the disk (fflush, fsync) and renamed over the target: rename is atomic on
 * POSIX file systems, so readers see the old file or the complete new one,
 * never a torn checkpoint. Any failure removes the tmp and leaves the old
 * file alone. */
#include "runtime/rt.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

RtStatus rt_source_open(RtSource *s, const char *path, RtError *err) {
  memset(s, 0, sizeof *s);
  s->name = path;
  s->f = fopen(path, "rb");
  if (!s->f)
    return rt_errorf(err, RT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(s->f), &sb) != 0) {
    RtStatus st = rt_errorf(err, RT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    rt_source_close(s);
    return st;
  }
  if (!S_ISREG(sb.st_mode)) {
    rt_source_close(s);
    return rt_errorf(err, RT_ERR_IO, "%s: not a regular file", path);
  }
  s->len = (uint64_t)sb.st_size;
  return RT_OK;
}

void rt_source_mem(RtSource *s, const void *buf, size_t len, const char *name) {
  memset(s, 0, sizeof *s);
  s->name = name ? name : "<memory>";
  s->mem = buf ? buf : (const uint8_t *)"";
  s->len = buf ? len : 0;
}

RtStatus rt_source_read(RtSource *s, uint64_t off, void *dst, size_t n, RtError *err) {
  if (off > s->len || n > s->len - off)
    return rt_errorf(err, RT_ERR_FORMAT, "%s: truncated: needs %llu bytes at offset %llu, file has %llu",
                     s->name, (unsigned long long)n, (unsigned long long)off,
                     (unsigned long long)s->len);
  if (n == 0)
    return RT_OK;
  if (s->mem) {
    memcpy(dst, s->mem + off, n);
    return RT_OK;
  }
  if (off > INT64_MAX || fseeko(s->f, (off_t)off, SEEK_SET) != 0)
    return rt_errorf(err, RT_ERR_IO, "%s: cannot seek to %llu: %s", s->name,
                     (unsigned long long)off, strerror(errno));
  if (fread(dst, 1, n, s->f) != n)
    return rt_errorf(err, RT_ERR_IO, "%s: read failed at offset %llu: %s", s->name,
                     (unsigned long long)off, ferror(s->f) ? strerror(errno) : "file shrank");
  return RT_OK;
}

void rt_source_close(RtSource *s) {
  if (s->f)
    fclose(s->f);
  s->f = NULL;
}

static void atomic_release(RtAtomicFile *af) {
  free(af->path);
  free(af->tmp);
  af->path = af->tmp = NULL;
  af->f = NULL;
}

RtStatus rt_atomic_open(RtAtomicFile *af, const char *path, RtError *err) {
  memset(af, 0, sizeof *af);
  size_t len = strlen(path);
  af->path = strdup(path);
  af->tmp = malloc(len + 5);
  if (!af->path || !af->tmp) {
    atomic_release(af);
    return rt_errorf(err, RT_ERR_NOMEM, "%s: out of memory", path);
  }
  memcpy(af->tmp, path, len);
  memcpy(af->tmp + len, ".tmp", 5);
  af->f = fopen(af->tmp, "wb");
  if (!af->f) {
    RtStatus st = rt_errorf(err, RT_ERR_IO, "%s: cannot create %s: %s", path, af->tmp,
                            strerror(errno));
    atomic_release(af);
    return st;
  }
  return RT_OK;
}

RtStatus rt_atomic_write(RtAtomicFile *af, const void *buf, size_t n, RtError *err) {
  if (n && fwrite(buf, 1, n, af->f) != n)
    return rt_errorf(err, RT_ERR_IO, "%s: write failed: %s", af->path, strerror(errno));
  return RT_OK;
}

void rt_atomic_abort(RtAtomicFile *af) {
  if (af->f) {
    fclose(af->f);
    unlink(af->tmp);
  }
  atomic_release(af);
}

/* fsync the directory holding path, so the rename itself is durable. A
 * failure here is not reported: the data is safe, only its name may lag. */
static void sync_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(copy);
}

/* Closes, removes the tmp and reports `what` with the errno it failed with. */
static RtStatus commit_failed(RtAtomicFile *af, const char *what, RtError *err) {
  int e = errno;
  RtStatus st = rt_errorf(err, RT_ERR_IO, "%s: %s failed: %s", af->path, what, strerror(e));
  if (af->f)
    fclose(af->f);
  unlink(af->tmp);
  atomic_release(af);
  return st;
}

RtStatus rt_atomic_commit(RtAtomicFile *af, RtError *err) {
  if (fflush(af->f) != 0)
    return commit_failed(af, "write", err);
  if (fsync(fileno(af->f)) != 0)
    return commit_failed(af, "fsync", err);
  FILE *f = af->f;
  af->f = NULL;
  if (fclose(f) != 0)
    return commit_failed(af, "close", err);
  if (rename(af->tmp, af->path) != 0)
    return commit_failed(af, "rename", err);
  sync_dir(af->path);
  atomic_release(af);
  return RT_OK;
}

/* A strict JSON parser (RFC 8259) for headers read from files: recursive
 * descent over a buffer that need not be NUL-terminated, nodes in an arena.
 *
 * Strict means: no trailing commas, no comments, no leading zeros or bare
 * '.', no control characters or invalid UTF-8 in strings, no lone
 * surrogates, nothing but whitespace after the value. Nesting is limited
 * (RT_JSON_MAX_DEPTH) so hostile input cannot overflow the stack. Each
 * parse function returns false after recording the first error. */
#include "runtime/rt.h"
#include <locale.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t len, pos;
  int depth;
  RtArena *a;
  const char *name;
  RtError *err;
  RtStatus st;               /* the first failure */
} Parser;

/* A member or element while its container is being read. */
typedef struct Item {
  RtJson v;
  char *key;
  struct Item *next;
} Item;

static bool fail(Parser *p, RtStatus st, const char *what) {
  if (p->st == RT_OK)
    p->st = rt_errorf(p->err, st, "%s: invalid JSON at byte %zu: %s", p->name, p->pos, what);
  return false;
}

static void *alloc(Parser *p, size_t bytes) {
  void *q = rt_arena_alloc(p->a, bytes);
  if (!q)
    fail(p, RT_ERR_NOMEM, "out of memory");
  return q;
}

static int peek(Parser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static void skip_ws(Parser *p) {
  for (int c = peek(p); c == ' ' || c == '\t' || c == '\n' || c == '\r'; c = peek(p))
    p->pos++;
}

static bool expect(Parser *p, char c, const char *what) {
  skip_ws(p);
  if (peek(p) != (unsigned char)c)
    return fail(p, RT_ERR_FORMAT, what);
  p->pos++;
  return true;
}

static bool value(Parser *p, RtJson *v);

static bool literal(Parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return fail(p, RT_ERR_FORMAT, "unexpected character");
  p->pos += n;
  return true;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

/* The digits of an integer literal, checked against int64 overflow. */
static bool parse_int64(const char *s, size_t n, int64_t *out) {
  bool neg = s[0] == '-';
  uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (size_t i = neg; i < n; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (limit - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return true;
}

static bool digits(Parser *p, const char *what) {
  if (!is_digit(peek(p)))
    return fail(p, RT_ERR_FORMAT, what);
  while (is_digit(peek(p)))
    p->pos++;
  return true;
}

/* number = [ "-" ] ( "0" | digit1-9 digit* ) [ "." digit+ ] [ ("e" | "E") [ "+" | "-" ] digit+ ]
 * Sets *integral when there is neither fraction nor exponent. */
static bool scan_number(Parser *p, bool *integral) {
  *integral = true;
  if (peek(p) == '-')
    p->pos++;
  if (peek(p) == '0')
    p->pos++;
  else if (!digits(p, "bad number"))
    return false;
  if (peek(p) == '.') {
    *integral = false;
    p->pos++;
    if (!digits(p, "bad number: digits must follow '.'"))
      return false;
  }
  if (peek(p) == 'e' || peek(p) == 'E') {
    *integral = false;
    p->pos++;
    if (peek(p) == '+' || peek(p) == '-')
      p->pos++;
    if (!digits(p, "bad number: digits must follow the exponent"))
      return false;
  }
  return true;
}

static bool number(Parser *p, RtJson *v) {
  size_t start = p->pos;
  bool integral;
  if (!scan_number(p, &integral))
    return false;
  char buf[512];
  size_t n = p->pos - start;
  if (n >= sizeof buf)
    return fail(p, RT_ERR_FORMAT, "number too long");
  memcpy(buf, p->s + start, n);
  buf[n] = 0;
  char *dot = strchr(buf, '.');
  if (dot)                   /* strtod reads the locale's decimal point */
    *dot = *localeconv()->decimal_point;
  v->kind = RT_JSON_NUM;
  v->num = strtod(buf, NULL);
  v->is_int = integral && parse_int64(buf, n, &v->i);
  return true;
}

static int hex4(const char *s) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = (unsigned char)s[i], d = is_digit(c)              ? c - '0'
                                   : c >= 'a' && c <= 'f'   ? c - 'a' + 10
                                   : c >= 'A' && c <= 'F'   ? c - 'A' + 10
                                                            : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

static size_t put_utf8(char *out, uint32_t cp) {
  if (cp < 0x80)
    return out[0] = (char)cp, 1;
  if (cp < 0x800)
    return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000)
    return out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
           out[2] = (char)(0x80 | (cp & 0x3F)), 3;
  out[0] = (char)(0xF0 | cp >> 18), out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0: no overlongs, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  int len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
  if (len == 0 || (size_t)len > n || s[0] > 0xF4)
    return 0;
  uint32_t cp = s[0] & (0x7F >> len);
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return (size_t)len;
}

/* An escape after '\\' at p->pos; appends its UTF-8 to out. */
static bool escape(Parser *p, char *out, size_t *n) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  int c = peek(p);
  const char *e = c > 0 ? strchr(from, c) : NULL;
  if (e) {
    out[(*n)++] = to[e - from];
    p->pos++;
    return true;
  }
  if (c != 'u' || p->len - p->pos < 5 || hex4(p->s + p->pos + 1) < 0)
    return fail(p, RT_ERR_FORMAT, "bad escape in string");
  uint32_t cp = (uint32_t)hex4(p->s + p->pos + 1);
  p->pos += 5;
  if (cp >= 0xDC00 && cp <= 0xDFFF)
    return fail(p, RT_ERR_FORMAT, "lone low surrogate in string");
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    int lo = p->len - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u'
                 ? hex4(p->s + p->pos + 2) : -1;
    if (lo < 0xDC00 || lo > 0xDFFF)
      return fail(p, RT_ERR_FORMAT, "lone high surrogate in string");
    cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    p->pos += 6;
  }
  if (cp == 0)
    return fail(p, RT_ERR_FORMAT, "NUL character in string");
  *n += put_utf8(out + *n, cp);
  return true;
}

/* string = '"' chars '"'; the decoded text is never longer than the raw. */
static bool string(Parser *p, char **out) {
  if (!expect(p, '"', "expected a string"))
    return false;
  size_t end = p->pos;
  while (end < p->len && p->s[end] != '"')
    end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len)
    return fail(p, RT_ERR_FORMAT, "unterminated string");
  char *buf = alloc(p, end - p->pos + 1);
  size_t n = 0;
  if (!buf)
    return false;
  while (p->pos < end) {
    const unsigned char *c = (const unsigned char *)p->s + p->pos;
    if (*c == '\\') {
      p->pos++;
      if (!escape(p, buf, &n))
        return false;
    } else if (*c < 0x20) {
      return fail(p, RT_ERR_FORMAT, "control character in string");
    } else if (*c < 0x80) {
      buf[n++] = (char)*c;
      p->pos++;
    } else {
      size_t k = utf8_len(c, end - p->pos);
      if (!k)
        return fail(p, RT_ERR_FORMAT, "invalid UTF-8 in string");
      memcpy(buf + n, c, k);
      n += k;
      p->pos += k;
    }
  }
  buf[n] = 0;
  p->pos++;                  /* the closing quote */
  *out = buf;
  return true;
}

/* Moves the items of a finished container into arrays in the arena. */
static bool gather(Parser *p, RtJson *v, Item *first, int n) {
  v->n = n;
  v->items = alloc(p, (size_t)n * sizeof *v->items);
  if (v->kind == RT_JSON_OBJ)
    v->keys = alloc(p, (size_t)n * sizeof *v->keys);
  if (!v->items || (v->kind == RT_JSON_OBJ && !v->keys))
    return false;
  int i = 0;
  for (Item *it = first; it; it = it->next, i++) {
    v->items[i] = it->v;
    if (v->keys)
      v->keys[i] = it->key;
  }
  return true;
}

/* array = '[' [ value { ',' value } ] ']'
 * object = '{' [ string ':' value { ',' string ':' value } ] '}' */
static bool container(Parser *p, RtJson *v, bool obj) {
  char close = obj ? '}' : ']';
  if (++p->depth > RT_JSON_MAX_DEPTH)
    return fail(p, RT_ERR_FORMAT, "nesting too deep");
  p->pos++;                  /* the opening bracket */
  v->kind = obj ? RT_JSON_OBJ : RT_JSON_ARR;
  Item *first = NULL, **tail = &first;
  int n = 0;
  skip_ws(p);
  if (peek(p) == close) {
    p->pos++;
  } else {
    for (;;) {
      Item *it = alloc(p, sizeof *it);
      if (!it || n == INT32_MAX)
        return fail(p, RT_ERR_FORMAT, "too many items");
      if (obj && !(string(p, &it->key) && expect(p, ':', "expected ':'")))
        return false;
      if (!value(p, &it->v))
        return false;
      *tail = it, tail = &it->next, n++;
      skip_ws(p);
      if (peek(p) == ',') {
        p->pos++;
        continue;
      }
      if (!expect(p, close, obj ? "expected ',' or '}'" : "expected ',' or ']'"))
        return false;
      break;
    }
  }
  p->depth--;
  return gather(p, v, first, n);
}

static bool value(Parser *p, RtJson *v) {
  memset(v, 0, sizeof *v);
  skip_ws(p);
  switch (peek(p)) {
  case '{': return container(p, v, true);
  case '[': return container(p, v, false);
  case '"': v->kind = RT_JSON_STR; return string(p, &v->str);
  case 't': v->kind = RT_JSON_BOOL, v->b = true; return literal(p, "true");
  case 'f': v->kind = RT_JSON_BOOL; return literal(p, "false");
  case 'n': v->kind = RT_JSON_NULL; return literal(p, "null");
  case -1: return fail(p, RT_ERR_FORMAT, "unexpected end");
  case '-': return number(p, v);
  default:
    if (is_digit(peek(p)))
      return number(p, v);
    return fail(p, RT_ERR_FORMAT, "unexpected character");
  }
}

RtStatus rt_json_parse(RtArena *a, const char *text, size_t len, const char *name,
                       RtJson **out, RtError *err) {
  Parser p = {.s = text, .len = len, .a = a, .name = name ? name : "<json>", .err = err};
  *out = NULL;
  RtJson *v = alloc(&p, sizeof *v);
  if (!v || !value(&p, v))
    return p.st;
  skip_ws(&p);
  if (p.pos != len) {
    fail(&p, RT_ERR_FORMAT, "text after the value");
    return p.st;
  }
  *out = v;
  return RT_OK;
}

bool rt_utf8_valid(const char *s) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t k = u[i] < 0x80 ? 1 : utf8_len(u + i, n - i);
    if (!k)
      return false;
    i += k;
  }
  return true;
}

const RtJson *rt_json_get(const RtJson *obj, const char *key) {
  if (!obj || obj->kind != RT_JSON_OBJ)
    return NULL;
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0)
      return &obj->items[i];
  return NULL;
}

/* Size expressions: small polynomials over named sizes, kept canonical
 * (terms sorted by their variables, like terms merged, no zero
 * coefficients) so that equality is a field-by-field compare. Arithmetic is
 * overflow-checked; a result that does not fit is marked bad, and the op
 * that produced it reports the error. */
#include "ir/ir.h"
#include <string.h>

static Size bad_size(void) {
  Size s = {0};
  s.bad = true;
  return s;
}

Size sz_const(int64_t n) {
  Size s = {0};
  if (n != 0) {
    s.nt = 1;
    s.t[0].coef = n;
  }
  return s;
}

Size sz_var(int id) {
  Size s = {0};
  s.nt = 1;
  s.t[0].coef = 1;
  s.t[0].nv = 1;
  s.t[0].v[0] = (uint8_t)id;
  return s;
}

/* Order of terms: by number of variables, then variable ids. */
static int term_cmp(const SzTerm *a, const SzTerm *b) {
  if (a->nv != b->nv)
    return a->nv - b->nv;
  for (int i = 0; i < a->nv; i++)
    if (a->v[i] != b->v[i])
      return a->v[i] - b->v[i];
  return 0;
}

/* Adds one term into s, keeping it canonical. */
static void add_term(Size *s, SzTerm t) {
  if (s->bad || t.coef == 0)
    return;
  int i = 0;
  while (i < s->nt && term_cmp(&s->t[i], &t) < 0)
    i++;
  if (i < s->nt && term_cmp(&s->t[i], &t) == 0) {
    if (__builtin_add_overflow(s->t[i].coef, t.coef, &s->t[i].coef)) {
      *s = bad_size();
      return;
    }
    if (s->t[i].coef == 0) {
      memmove(&s->t[i], &s->t[i + 1], (s->nt - i - 1) * sizeof(SzTerm));
      s->nt--;
    }
    return;
  }
  if (s->nt == SZ_TERMS) {
    *s = bad_size();
    return;
  }
  memmove(&s->t[i + 1], &s->t[i], (s->nt - i) * sizeof(SzTerm));
  s->t[i] = t;
  s->nt++;
}

Size sz_add(Size a, Size b) {
  if (a.bad || b.bad)
    return bad_size();
  for (int i = 0; i < b.nt; i++)
    add_term(&a, b.t[i]);
  return a;
}

Size sz_sub(Size a, Size b) {
  if (a.bad || b.bad)
    return bad_size();
  for (int i = 0; i < b.nt; i++) {
    SzTerm t = b.t[i];
    if (t.coef == INT64_MIN)
      return bad_size();
    t.coef = -t.coef;
    add_term(&a, t);
  }
  return a;
}

/* Product of two terms; false on overflow or too many variables. */
static bool term_mul(SzTerm a, SzTerm b, SzTerm *out) {
  SzTerm t = {0};
  if (a.nv + b.nv > SZ_VARS || __builtin_mul_overflow(a.coef, b.coef, &t.coef))
    return false;
  int i = 0, j = 0;
  while (i < a.nv || j < b.nv)    /* merge the sorted variable lists */
    t.v[t.nv++] = (j >= b.nv || (i < a.nv && a.v[i] <= b.v[j])) ? a.v[i++] : b.v[j++];
  *out = t;
  return true;
}

Size sz_mul(Size a, Size b) {
  if (a.bad || b.bad)
    return bad_size();
  Size r = {0};
  for (int i = 0; i < a.nt; i++)
    for (int j = 0; j < b.nt; j++) {
      SzTerm t;
      if (!term_mul(a.t[i], b.t[j], &t))
        return bad_size();
      add_term(&r, t);
    }
  return r;
}

static int64_t floor_div(int64_t a, int64_t d) {
  int64_t q = a / d;
  return (a % d != 0 && ((a < 0) != (d < 0))) ? q - 1 : q;
}

Size sz_floordiv_const(Size a, int64_t d) {
  int64_t n;
  if (a.bad || d == 0)
    return bad_size();
  if (sz_is_const(a, &n))
    return sz_const(floor_div(n, d));
  for (int i = 0; i < a.nt; i++)
    if (a.t[i].coef % d != 0)
      return bad_size();
  for (int i = 0; i < a.nt; i++)
    a.t[i].coef /= d;
  return a;
}

Size sz_div(Size a, Size b) {
  int64_t d;
  if (a.bad || b.bad)
    return bad_size();
  if (sz_is_const(b, &d))
    return sz_floordiv_const(a, d);
  if (sz_eq(a, b) && a.nt > 0)
    return sz_const(1);
  /* a single-term divisor dividing every term: (N*T)/T = N */
  if (b.nt != 1)
    return bad_size();
  Size r = {0};
  for (int i = 0; i < a.nt; i++) {
    SzTerm t = a.t[i], q = {0};
    if (b.t[0].coef == 0 || t.coef % b.t[0].coef != 0)
      return bad_size();
    q.coef = t.coef / b.t[0].coef;
    int k = 0;
    for (int j = 0; j < t.nv; j++) {   /* remove b's variables from t */
      if (k < b.t[0].nv && t.v[j] == b.t[0].v[k]) {
        k++;
        continue;
      }
      q.v[q.nv++] = t.v[j];
    }
    if (k != b.t[0].nv)
      return bad_size();
    add_term(&r, q);
  }
  return r;
}

bool sz_eq(Size a, Size b) {
  if (a.bad || b.bad || a.nt != b.nt)
    return false;
  for (int i = 0; i < a.nt; i++)
    if (a.t[i].coef != b.t[i].coef || term_cmp(&a.t[i], &b.t[i]) != 0)
      return false;
  return true;
}

bool sz_is_const(Size a, int64_t *n) {
  if (a.bad || a.nt > 1 || (a.nt == 1 && a.t[0].nv != 0))
    return false;
  if (n)
    *n = a.nt ? a.t[0].coef : 0;
  return true;
}

bool sz_has_var(Size a, int var) {
  for (int i = 0; i < a.nt; i++)
    for (int j = 0; j < a.t[i].nv; j++)
      if (a.t[i].v[j] == var)
        return true;
  return false;
}

bool sz_eval(Size a, const int64_t *vals, int64_t *out) {
  if (a.bad)
    return false;
  int64_t sum = 0;
  for (int i = 0; i < a.nt; i++) {
    int64_t p = a.t[i].coef;
    for (int j = 0; j < a.t[i].nv; j++) {
      int64_t v = vals ? vals[a.t[i].v[j]] : -1;
      if (v < 0 || __builtin_mul_overflow(p, v, &p))
        return false;
    }
    if (__builtin_add_overflow(sum, p, &sum))
      return false;
  }
  *out = sum;
  return true;
}

Size sz_bind(Size a, const int64_t *vals) {
  if (a.bad)
    return a;
  Size r = {0};
  for (int i = 0; i < a.nt; i++) {
    Size t = sz_const(a.t[i].coef);
    for (int j = 0; j < a.t[i].nv; j++) {
      int id = a.t[i].v[j];
      t = sz_mul(t, vals[id] >= 0 ? sz_const(vals[id]) : sz_var(id));
    }
    r = sz_add(r, t);
  }
  return r;
}

/* "4*H", "N*T + 1", "C*H*W" */
int sz_print(char *buf, int len, Size a, const char *const *names) {
  if (a.bad)
    return snprintf(buf, len, "?");
  if (a.nt == 0)
    return snprintf(buf, len, "0");
  int n = 0;
  for (int i = a.nt - 1; i >= 0; i--) {    /* highest degree first */
    const SzTerm *t = &a.t[i];
    int64_t c = t->coef;
    const char *sep = i == a.nt - 1 ? "" : " + ";
    if (i != a.nt - 1 && c < 0) {
      sep = " - ";
      c = -c;
    }
    n += snprintf(buf + n, n < len ? len - n : 0, "%s", sep);
    bool lead = c != 1 || t->nv == 0;
    if (c == -1 && t->nv > 0) {
      n += snprintf(buf + n, n < len ? len - n : 0, "-");
      lead = false;
    } else if (lead) {
      n += snprintf(buf + n, n < len ? len - n : 0, "%lld", (long long)c);
    }
    for (int j = 0; j < t->nv; j++)
      n += snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                    (lead || j > 0) ? "*" : "", names ? names[t->v[j]] : "?");
  }
  return n;
}

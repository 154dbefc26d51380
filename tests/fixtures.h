/* What the suites that check kiln against PyTorch fixtures share (the
 * fixtures: tests/<area>/make_fixtures.py, written with tests/fixtures.py):
 * reading a fixture file, its tensors as Ten, and a model lowered from
 * source into a Model of tests/codegen/harness.h. */
#ifndef KILN_TESTS_FIXTURES_H
#define KILN_TESTS_FIXTURES_H

#include <stdio.h>
#include <stdlib.h>
#include "passes/adharness.h"
#include "frontend/frontend.h"

/* tests/<area>/<name>.safetensors of the source tree ($KILN_SRC). */
static inline RtSafetensors fixture_read(const char *area, const char *name) {
  char path[512];
  RtSafetensors st;
  RtError err;
  snprintf(path, sizeof path, "%s/tests/%s/%s.safetensors", getenv("KILN_SRC"), area, name);
  if (rt_st_read(path, &st, &err) != RT_OK)
    fail_msg("%s", err.msg);
  return st;
}

/* The f32 tensor `name` of a fixture. */
static inline Ten fixture_ten(Model *m, const RtSafetensors *st, const char *name) {
  const RtTensor *t = rt_st_find(st, name);
  if (!t)
    fail_msg("the fixture lacks %s", name);
  Ten r = ten_new(m, t->rank, t->shape);
  for (int64_t i = 0; i < r.n; i++)
    r.d[i] = ((const float *)t->data)[i];
  return r;
}

/* m with the graph of the first model of src; a lowering error fails. */
static inline void fixture_lower(Model *m, const char *src) {
  model_new(m, "fixture");
  ir_graph_free(m->g);
  AstFile *f = fe_parse(m->arena, "t.kiln", src, strlen(src), &m->diags);
  m->g = f ? fe_lower(f, NULL, &m->diags) : NULL;
  if (m->diags.nerrors)
    model_fail_diags(m, "lowering");
}

#endif

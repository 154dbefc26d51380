"""PyTorch fixtures for tests/layers: every layer of the library against
torch, forward and gradients.

Each case is a small kiln model (its source is stored in the file's
metadata) and the same computation in torch. Inputs are seeded f32 draws
(odd sizes, so no vector width divides them); torch runs in float64 on
those f32 values. For every floating-point output y the loss is sum(y * r)
with a seeded r, and the fixture holds the gradients of the sum of these
losses with respect to every floating-point input and parameter.

Writes tests/layers/layers.safetensors, beside this script:
  __metadata__   "cases": the case names, comma-separated;
                 "<case>": the kiln source of the case
  <case>.in.<name>     inputs          <case>.param.<name>  parameters
  <case>.out.<name>    outputs (bool and int outputs as f32 0/1 and indices)
  <case>.r.<name>      the loss weights of each float output
  <case>.grad.<name>   d(loss)/d(input or parameter)
all f32.

Run with Debian's /usr/bin/python3 (torch and numpy); the test only reads
the file:  /usr/bin/python3 tests/layers/make_fixtures.py
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = []


def case(name, src, inputs, fn, params=None):
    CASES.append((name, src, inputs, fn, params or {}))


def U(*shape, lo=-2.0, hi=2.0):
    return ("u", shape, lo, hi)


def model(sig, outs, body):
    return "model m(%s) -> (%s) {\n%s\n}\n" % (sig, outs, body)


# ---- activations ----------------------------------------------------------

X = U(3, 5, 7)
SIG = "x: f32[3, 5, 7]"
for name, call, fn in [
    ("relu", "relu()", torch.relu),
    ("sigmoid", "sigmoid()", torch.sigmoid),
    ("tanh", "tanh()", torch.tanh),
    ("exp", "exp()", torch.exp),
    ("abs", "abs()", torch.abs),
    ("erf", "erf()", torch.erf),
    ("leaky_relu", "leaky_relu()", F.leaky_relu),
    ("leaky_relu_slope", "leaky_relu(negative_slope=0.2)", lambda x: F.leaky_relu(x, 0.2)),
    ("elu", "elu()", F.elu),
    ("elu_alpha", "elu(alpha=0.5)", lambda x: F.elu(x, 0.5)),
    ("selu", "selu()", F.selu),
    ("softplus", "softplus()", F.softplus),
    ("softplus_beta", "softplus(beta=2, threshold=1.5)", lambda x: F.softplus(x, 2, 1.5)),
    ("gelu", "gelu()", F.gelu),
    ("gelu_tanh", "gelu(approximate=\"tanh\")", lambda x: F.gelu(x, approximate="tanh")),
    ("silu", "silu()", F.silu),
    ("swish", "swish()", F.silu),
    ("dropout", "dropout(0.3)", lambda x: x),
]:
    case(name, model(SIG, "y", "  y = x |> %s" % call), {"x": X}, lambda t, p, fn=fn: [fn(t["x"])])

POS = U(4, 9, lo=0.3, hi=2.5)
case("sqrt", model("x: f32[4, 9]", "y", "  y = sqrt(x)"), {"x": POS}, lambda t, p: [torch.sqrt(t["x"])])
case("log", model("x: f32[4, 9]", "y", "  y = log(x)"), {"x": POS}, lambda t, p: [torch.log(t["x"])])
case("rsqrt", model("x: f32[4, 9]", "y", "  y = rsqrt(x)"), {"x": POS}, lambda t, p: [torch.rsqrt(t["x"])])
case("pow_int", model("x: f32[3, 5, 7]", "y", "  y = pow(x, 3)"), {"x": X}, lambda t, p: [t["x"] ** 3])
case("pow_half", model("x: f32[4, 9]", "y", "  y = pow(x, 0.5)"), {"x": POS}, lambda t, p: [t["x"] ** 0.5])
case("pow_tensor", model("x: f32[4, 9], e: f32[9]", "y", "  y = pow(x, e)"),
     {"x": POS, "e": U(9)}, lambda t, p: [t["x"] ** t["e"]])
case("pow_base", model("e: f32[4, 9]", "y", "  y = pow(2, e)"), {"e": U(4, 9)}, lambda t, p: [2 ** t["e"]])

# ---- softmax family, normalisation ----------------------------------------------

for ax in [1, -1, 0]:
    case("softmax_%d" % (ax % 3), model(SIG, "y", "  y = softmax(x, axis=%d)" % ax), {"x": X},
         lambda t, p, ax=ax: [torch.softmax(t["x"], ax)])
    case("log_softmax_%d" % (ax % 3), model(SIG, "y", "  y = log_softmax(x, axis=%d)" % ax), {"x": X},
         lambda t, p, ax=ax: [torch.log_softmax(t["x"], ax)])

case("layernorm", model(SIG, "y", "  y = x |> layernorm()"), {"x": X},
     lambda t, p: [F.layer_norm(t["x"], (7,), p["y.weight"], p["y.bias"])],
     {"y.weight": U(7, lo=0.5, hi=1.5), "y.bias": U(7, lo=-0.5, hi=0.5)})
case("layernorm_dims2", model(SIG, "y", "  y = x |> layernorm(dims=2, eps=1e-3)"), {"x": X},
     lambda t, p: [F.layer_norm(t["x"], (5, 7), p["y.weight"], p["y.bias"], eps=1e-3)],
     {"y.weight": U(5, 7, lo=0.5, hi=1.5), "y.bias": U(5, 7, lo=-0.5, hi=0.5)})
case("layernorm_plain", model(SIG, "y", "  y = x |> layernorm(dims=3, affine=false)"), {"x": X},
     lambda t, p: [F.layer_norm(t["x"], (3, 5, 7))])

# ---- comparisons, selection, clipping ----------------------------------------

XY = {"x": U(3, 5, 7), "y": U(5, 7)}
SXY = "x: f32[3, 5, 7], y: f32[5, 7]"
for op, fn in [("<", torch.lt), ("<=", torch.le), (">", torch.gt), (">=", torch.ge),
               ("==", torch.eq), ("!=", torch.ne)]:
    name = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}[op]
    case("cmp_" + name, model(SXY, "m", "  m = x %s y" % op), XY, lambda t, p, fn=fn: [fn(t["x"], t["y"])])
case("cmp_eq_self", model(SIG, "m", "  m = x == relu(x)"), {"x": X},
     lambda t, p: [torch.eq(t["x"], torch.relu(t["x"]))])
case("where", model(SXY, "z", "  z = where(x > y, x, y)"), XY,
     lambda t, p: [torch.where(t["x"] > t["y"], t["x"], t["y"])])
case("where_number", model(SIG, "z", "  z = where(x < 0.5, x * 2, 0.25)"), {"x": X},
     lambda t, p: [torch.where(t["x"] < 0.5, t["x"] * 2, torch.tensor(0.25, dtype=torch.float64))])
case("clip", model(SIG, "y", "  y = clip(x, min=-0.5, max=1)"), {"x": X},
     lambda t, p: [torch.clamp(t["x"], -0.5, 1)])
case("clip_min", model(SIG, "y", "  y = clip(x, min=0.25)"), {"x": X}, lambda t, p: [torch.clamp(t["x"], min=0.25)])
case("clip_max", model(SIG, "y", "  y = clip(x, max=-0.25)"), {"x": X}, lambda t, p: [torch.clamp(t["x"], max=-0.25)])
case("maximum", model(SXY, "z", "  z = maximum(x, y)"), XY, lambda t, p: [torch.maximum(t["x"], t["y"])])
case("minimum", model(SXY, "z", "  z = minimum(x, 0.3)"), XY,
     lambda t, p: [torch.clamp(t["x"], max=0.3)])

# ---- reductions ------------------------------------------------------------

for name, call, fn in [
    ("sum_all", "sum(x)", lambda x: x.sum()),
    ("sum_axes_keep", "sum(x, axes=[0, 2], keepdim=true)", lambda x: x.sum((0, 2), keepdim=True)),
    ("mean_neg", "mean(x, axis=-1)", lambda x: x.mean(-1)),
    ("mean_keep", "mean(x, axes=[-2, 0], keepdim=true)", lambda x: x.mean((0, 1), keepdim=True)),
    ("max_axis", "max(x, axis=1, keepdim=true)", lambda x: x.amax(1, keepdim=True)),
    ("min_all", "min(x)", lambda x: x.amin()),
    ("argmax_axis", "argmax(x, axis=1)", lambda x: x.argmax(1)),
    ("argmax_neg_keep", "argmax(x, axis=-1, keepdim=true)", lambda x: x.argmax(-1, keepdim=True)),
    ("argmax_flat", "argmax(x)", lambda x: x.argmax()),
    ("argmin_axis", "argmin(x, axis=0)", lambda x: x.argmin(0)),
]:
    case(name, model(SIG, "y", "  y = " + call), {"x": X}, lambda t, p, fn=fn: [fn(t["x"])])

# ---- shapes and data movement ----------------------------------------------------

for name, expr, fn in [
    ("index_slices", "x[1:, ::2, -3:]", lambda x: x[1:, ::2, -3:]),
    ("index_int", "x[-1]", lambda x: x[-1]),
    ("index_mixed", "x[:, 2:-1:2, 4]", lambda x: x[:, 2:-1:2, 4]),
    ("index_clamped", "x[0:10, -9:3, 5:100:3]", lambda x: x[0:10, -9:3, 5:100:3]),
    ("slice_layer", "slice(x, axis=-1, start=1, stop=-1, step=2)", lambda x: x[:, :, 1:-1:2]),
    ("slice_default", "slice(x, start=-2)", lambda x: x[-2:]),
    ("transpose_T", "x.T", lambda x: x.transpose(-1, -2)),
    ("transpose_perm", "transpose(x, perm=[2, 0, 1])", lambda x: x.permute(2, 0, 1)),
    ("permute", "permute(x, [1, -1, 0])", lambda x: x.permute(1, 2, 0)),
    ("unsqueeze", "unsqueeze(x, 1)", lambda x: x.unsqueeze(1)),
    ("unsqueeze_neg", "unsqueeze(x, -1)", lambda x: x.unsqueeze(-1)),
    ("squeeze_all", "unsqueeze(x, 0) |> unsqueeze(-2) |> squeeze()", lambda x: x),
    ("squeeze_axis", "unsqueeze(x, 2) |> squeeze(axis=2)", lambda x: x),
    ("squeeze_noop", "squeeze(x, axis=0)", lambda x: x.squeeze(0)),
    ("flatten", "flatten(x)", lambda x: x.flatten(1)),
    ("reshape", "reshape(x, [5, -1, 3])", lambda x: x.reshape(5, -1, 3)),
    ("pad_constant", "pad(x, [1, 2, 0, 3], value=1.5)", lambda x: F.pad(x, (1, 2, 0, 3), value=1.5)),
    ("pad_reflect", "pad(x, [2, 1, 3, 2], mode=reflect)", lambda x: F.pad(x.unsqueeze(0), (2, 1, 3, 2), mode="reflect")[0]),
    ("pad_replicate", "pad(x, [1, 3, 2, 0], mode=\"replicate\")",
     lambda x: F.pad(x.unsqueeze(0), (1, 3, 2, 0), mode="replicate")[0]),
]:
    case(name, model(SIG, "y", "  y = " + expr), {"x": X}, lambda t, p, fn=fn: [fn(t["x"])])

case("concat", model("a: f32[3, 2, 7], b: f32[3, 5, 7], c: f32[3, 1, 7]", "y",
                     "  y = concat([a, b, c], axis=1)"),
     {"a": U(3, 2, 7), "b": U(3, 5, 7), "c": U(3, 1, 7)},
     lambda t, p: [torch.cat([t["a"], t["b"], t["c"]], 1)])
case("concat_neg", model("a: f32[3, 5], b: f32[3, 4]", "y", "  y = concat([a, b * 2, a], axis=-1)"),
     {"a": U(3, 5), "b": U(3, 4)}, lambda t, p: [torch.cat([t["a"], t["b"] * 2, t["a"]], -1)])
case("split_equal", model(SIG, "a, b", "  a, q = split(x[:, :4], 2, axis=1)\n  b = q * 3"),
     {"x": X}, lambda t, p: [t["x"][:, :2], t["x"][:, 2:4] * 3])
case("split_sizes", model(SIG, "a, b, c", "  a, b, c = split(x, [2, 4, 1], axis=-1)"),
     {"x": X}, lambda t, p: list(torch.split(t["x"], [2, 4, 1], -1)))


# ---- layers with parameters (their weights from the fixture) ----------------------

case("dense", model(SIG, "y", "  y = x |> dense(4)"), {"x": X},
     lambda t, p: [F.linear(t["x"], p["y.weight"], p["y.bias"])],
     {"y.weight": U(4, 7), "y.bias": U(4)})
case("dense_nobias", model("x: f32[3, 7]", "y", "  y = x |> dense(5, bias=false)"), {"x": U(3, 7)},
     lambda t, p: [F.linear(t["x"], p["y.weight"])], {"y.weight": U(5, 7)})
IMG = U(2, 3, 7, 6)
SIMG = "x: f32[2, 3, 7, 6]"
case("conv2d", model(SIMG, "y", "  y = x |> conv2d(4, k=3, stride=2, pad=1)"), {"x": IMG},
     lambda t, p: [F.conv2d(t["x"], p["y.weight"], p["y.bias"], stride=2, padding=1)],
     {"y.weight": U(4, 3, 3, 3), "y.bias": U(4)})
case("conv2d_groups", model(SIMG, "y", "  y = x |> conv2d(6, k=3, pad=same, dilation=2, groups=3, bias=false)"),
     {"x": IMG}, lambda t, p: [F.conv2d(t["x"], p["y.weight"], padding=2, dilation=2, groups=3)],
     {"y.weight": U(6, 1, 3, 3)})
case("maxpool", model(SIMG, "y", "  y = x |> maxpool(3, stride=2, pad=1, ceil_mode=true)"), {"x": IMG},
     lambda t, p: [F.max_pool2d(t["x"], 3, 2, 1, ceil_mode=True)])
case("avgpool", model(SIMG, "y", "  y = x |> avgpool(2, pad=1, count_include_pad=false)"), {"x": IMG},
     lambda t, p: [F.avg_pool2d(t["x"], 2, 2, 1, count_include_pad=False)])
case("global_avgpool", model(SIMG, "y", "  y = x |> global_avgpool()"), {"x": IMG},
     lambda t, p: [t["x"].mean((2, 3))])
case("batchnorm", model(SIMG, "y", "  y = x |> batchnorm()"), {"x": IMG},
     lambda t, p: [F.batch_norm(t["x"], p["y.running_mean"], p["y.running_var"], p["y.weight"], p["y.bias"])],
     {"y.weight": U(3, lo=0.5, hi=1.5), "y.bias": U(3), "y.running_mean": U(3, lo=-0.5, hi=0.5),
      "y.running_var": U(3, lo=0.5, hi=2)})
case("matmul", model("a: f32[2, 3, 4], b: f32[4, 5]", "y", "  y = matmul(a, b)"),
     {"a": U(2, 3, 4), "b": U(4, 5)}, lambda t, p: [t["a"] @ t["b"]])
case("matmul_op", model("a: f32[3, 4], b: f32[2, 5, 4]", "y", "  y = a @ b.T"),
     {"a": U(3, 4), "b": U(2, 5, 4)}, lambda t, p: [t["a"] @ t["b"].transpose(-1, -2)])


# ---- running the cases ------------------------------------------------------------

def draw(gen, spec):
    _, shape, lo, hi = spec
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).float()


def main():
    gen = torch.Generator().manual_seed(8)
    tensors, names = {}, []
    meta = {}
    for name, src, inputs, fn, params in CASES:
        names.append(name)
        meta[name] = src
        t = {k: draw(gen, v).double().requires_grad_(True) for k, v in inputs.items()}
        p = {k: draw(gen, v).double().requires_grad_("running_" not in k)   # state: no gradient
             for k, v in params.items()}
        outs = fn(t, p)
        onames = [s.strip() for s in src.split("->")[1].split("{")[0].strip(" ()").split(",")]
        assert len(onames) == len(outs), name
        loss = 0
        for on, y in zip(onames, outs):
            tensors["%s.out.%s" % (name, on)] = y.detach().double().numpy().astype(np.float32)
            if y.dtype == torch.float64:
                r = draw(gen, ("u", tuple(y.shape), -1.0, 1.0)).double()
                tensors["%s.r.%s" % (name, on)] = r.numpy().astype(np.float32)
                loss = loss + (y * r).sum()
        for k, v in t.items():
            tensors["%s.in.%s" % (name, k)] = v.detach().numpy().astype(np.float32)
        for k, v in p.items():
            tensors["%s.param.%s" % (name, k)] = v.detach().numpy().astype(np.float32)
        if torch.is_tensor(loss):
            trained = [(k, v) for k, v in p.items() if "running_" not in k]   # state: no gradient
            wrt = list(t.items()) + trained
            grads = torch.autograd.grad(loss, [v for _, v in wrt], allow_unused=True)
            for (k, v), g in zip(wrt, grads):
                g = torch.zeros_like(v) if g is None else g
                tensors["%s.grad.%s" % (name, k)] = g.numpy().astype(np.float32)
    meta["cases"] = ",".join(names)
    write_safetensors(os.path.join(HERE, "layers.safetensors"), tensors, meta)
    print("%d cases, %d tensors" % (len(names), len(tensors)))


if __name__ == "__main__":
    main()

"""PyTorch fixtures for tests/conv: every convolution and pooling layer of
kiln with every option, forward and gradients.

Each case is one kiln layer call on an input of odd sizes, and the same
computation written with torch.nn.functional. The script writes, beside
itself:

  cases.kiln           one model per case, `model NAME(x: f32[...]) -> (y)
                       { y = x |> CALL }`, so the layer's parameters are
                       y.weight and y.bias, under kiln's (and PyTorch's)
                       layouts
  fixtures.safetensors per case NAME, f32:
                         NAME.x, NAME.y.weight, NAME.y.bias   the inputs
                         NAME.r                               the loss is sum(y * r)
                         NAME.y                               the output
                         NAME.grad.x, NAME.grad.y.weight, ... its gradients

The reference runs in float64 on the f32 values, then is rounded to f32,
so it carries no float32 rounding of its own. Pads kiln takes per side
([top, bottom, left, right]) and PyTorch's layers do not are written as
F.pad before the layer (zeros, or -inf for max pooling), and a transposed
convolution's as a crop of its output.

Run with Debian's /usr/bin/python3 (torch and numpy); the test only reads
the files this writes:  /usr/bin/python3 tests/conv/make_fixtures.py
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- references: kiln's options in torch's terms ----------------------------

def sides(pad):
    """kiln's per-side pads (top, bottom, left, right) or (left, right) as
    F.pad's (last axis first)."""
    if len(pad) == 4:
        return (pad[2], pad[3], pad[0], pad[1])
    return tuple(pad)


def conv(x, p, stride=1, padding=0, dilation=1, groups=1, pad_sides=None):
    f = F.conv1d if x.dim() == 3 else F.conv2d
    if pad_sides:
        x = F.pad(x, sides(pad_sides))
    return f(x, p["weight"], p.get("bias"), stride, padding, dilation, groups)


def conv_t(x, p, stride=1, padding=0, output_padding=0, groups=1, dilation=1, crop=None):
    f = F.conv_transpose1d if x.dim() == 3 else F.conv_transpose2d
    y = f(x, p["weight"], p.get("bias"), stride, padding, output_padding, groups, dilation)
    if crop:                       # (top, bottom, left, right): a per-side padding
        t, b, l, r = crop
        y = y[:, :, t:y.shape[2] - b, l:y.shape[3] - r]
    return y


def maxpool(x, k, stride=None, padding=0, dilation=1, ceil_mode=False, pad_sides=None):
    f = F.max_pool1d if x.dim() == 3 else F.max_pool2d
    if pad_sides:
        x = F.pad(x, sides(pad_sides), value=-float("inf"))
    return f(x, k, stride, padding, dilation, ceil_mode)


def avgpool(x, k, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
            pad_sides=None):
    f = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
    if pad_sides:
        x = F.pad(x, sides(pad_sides))
    return f(x, k, stride, padding, ceil_mode, count_include_pad)


def conv_params(cin, cout, k, groups=1, bias=True, transposed=False):
    k = k if isinstance(k, tuple) else (k,)
    w = (cin, cout // groups) + k if transposed else (cout, cin // groups) + k
    return {"weight": w, "bias": (cout,)} if bias else {"weight": w}


# name, x's shape, the kiln call, its parameters' shapes, the reference
CASES = [
    # conv1d
    ("conv1d_basic", (2, 3, 11), "conv1d(5, k=3)", conv_params(3, 5, 3),
     lambda x, p: conv(x, p)),
    ("conv1d_stride_pad", (3, 4, 13), "conv1d(6, kernel_size=4, stride=2, padding=2)",
     conv_params(4, 6, 4), lambda x, p: conv(x, p, 2, 2)),
    ("conv1d_same_dil_groups", (2, 4, 10), "conv1d(6, k=3, pad=same, dilation=2, groups=2)",
     conv_params(4, 6, 3, 2), lambda x, p: conv(x, p, 1, "same", 2, 2)),
    ("conv1d_same_even", (1, 3, 9), "conv1d(3, kernel=4, padding=same)", conv_params(3, 3, 4),
     lambda x, p: conv(x, p, 1, "same")),
    ("conv1d_pad_sides", (2, 3, 9), "conv1d(4, k=3, pad=[2, 0], bias=false)",
     conv_params(3, 4, 3, bias=False), lambda x, p: conv(x, p, pad_sides=(2, 0))),
    ("conv1d_depthwise", (2, 4, 9), "conv1d(8, k=5, groups=4, pad=2, stride=3)",
     conv_params(4, 8, 5, 4), lambda x, p: conv(x, p, 3, 2, 1, 4)),
    ("conv1d_valid", (2, 3, 8), "conv1d(2, 3, 2, valid)", conv_params(3, 2, 3),
     lambda x, p: conv(x, p, 2, "valid")),
    # conv2d
    ("conv2d_basic", (2, 3, 9, 7), "conv2d(5, k=3)", conv_params(3, 5, (3, 3)),
     lambda x, p: conv(x, p)),
    ("conv2d_stride_pad", (2, 3, 9, 8), "conv2d(4, k=[3, 2], stride=[2, 3], pad=[1, 2])",
     conv_params(3, 4, (3, 2)), lambda x, p: conv(x, p, (2, 3), (1, 2))),
    ("conv2d_same_even", (1, 3, 7, 6), "conv2d(4, kernel_size=4, padding=same)",
     conv_params(3, 4, (4, 4)), lambda x, p: conv(x, p, 1, "same")),
    ("conv2d_same_dil", (2, 2, 9, 9), "conv2d(3, k=3, pad=same, dilation=[2, 3])",
     conv_params(2, 3, (3, 3)), lambda x, p: conv(x, p, 1, "same", (2, 3))),
    ("conv2d_dil_stride", (2, 3, 11, 10), "conv2d(4, k=3, stride=2, dilation=2, pad=1)",
     conv_params(3, 4, (3, 3)), lambda x, p: conv(x, p, 2, 1, 2)),
    ("conv2d_groups", (2, 6, 7, 7), "conv2d(9, k=3, groups=3, pad=1)",
     conv_params(6, 9, (3, 3), 3), lambda x, p: conv(x, p, 1, 1, 1, 3)),
    ("conv2d_depthwise", (2, 5, 9, 8), "conv2d(10, k=3, groups=5, pad=1, stride=2)",
     conv_params(5, 10, (3, 3), 5), lambda x, p: conv(x, p, 2, 1, 1, 5)),
    ("conv2d_depthwise_same", (1, 4, 7, 7), "conv2d(4, k=5, groups=4, pad=same, bias=false)",
     conv_params(4, 4, (5, 5), 4, False), lambda x, p: conv(x, p, 1, "same", 1, 4)),
    ("conv2d_pad_sides", (2, 3, 8, 7), "conv2d(4, k=3, pad=[0, 2, 1, 3], stride=2)",
     conv_params(3, 4, (3, 3)), lambda x, p: conv(x, p, 2, pad_sides=(0, 2, 1, 3))),
    ("conv2d_pointwise", (3, 5, 4, 5), "conv2d(7, k=1)", conv_params(5, 7, (1, 1)),
     lambda x, p: conv(x, p)),
    ("conv2d_pointwise_stride", (1, 4, 7, 7), "conv2d(3, k=1, stride=2)",
     conv_params(4, 3, (1, 1)), lambda x, p: conv(x, p, 2)),
    ("conv2d_valid", (2, 3, 6, 9), "conv2d(2, k=[1, 3], pad=valid, stride=[1, 2])",
     conv_params(3, 2, (1, 3)), lambda x, p: conv(x, p, (1, 2))),
    # transposed convolutions
    ("convt1d_basic", (2, 4, 7), "conv_transpose1d(3, k=3)", conv_params(4, 3, 3, transposed=True),
     lambda x, p: conv_t(x, p)),
    ("convt1d_options", (2, 4, 6),
     "conv_transpose1d(6, k=4, stride=3, pad=2, output_padding=2, groups=2, dilation=2)",
     conv_params(4, 6, 4, 2, transposed=True), lambda x, p: conv_t(x, p, 3, 2, 2, 2, 2)),
    ("convt2d_basic", (2, 3, 5, 4), "conv_transpose2d(4, k=3, stride=2, pad=1, output_padding=1)",
     conv_params(3, 4, (3, 3), transposed=True), lambda x, p: conv_t(x, p, 2, 1, 1)),
    ("convt2d_asym", (1, 4, 4, 5),
     "conv_transpose2d(6, kernel_size=[3, 2], stride=[2, 3], padding=[1, 0], "
     "output_padding=[1, 2], groups=2)",
     conv_params(4, 6, (3, 2), 2, transposed=True),
     lambda x, p: conv_t(x, p, (2, 3), (1, 0), (1, 2), 2)),
    ("convt2d_dilation", (2, 2, 5, 5),
     "conv_transpose2d(3, k=3, dilation=2, pad=2, output_padding=1)",
     conv_params(2, 3, (3, 3), transposed=True), lambda x, p: conv_t(x, p, 1, 2, 1, 1, 2)),
    ("convt2d_pad_sides", (1, 3, 4, 4), "conv_transpose2d(2, k=3, stride=2, pad=[0, 2, 1, 0], bias=false)",
     conv_params(3, 2, (3, 3), bias=False, transposed=True),
     lambda x, p: conv_t(x, p, 2, crop=(0, 2, 1, 0))),
    ("convt2d_depthwise", (2, 4, 5, 5), "conv_transpose2d(8, k=3, groups=4, stride=2)",
     conv_params(4, 8, (3, 3), 4, transposed=True), lambda x, p: conv_t(x, p, 2, 0, 0, 4)),
    # max pooling
    ("maxpool2d_basic", (2, 3, 9, 7), "maxpool(2)", {}, lambda x, p: maxpool(x, 2)),
    ("maxpool2d_options", (2, 3, 9, 8), "maxpool2d(kernel_size=3, stride=2, padding=1, ceil_mode=true)",
     {}, lambda x, p: maxpool(x, 3, 2, 1, ceil_mode=True)),
    ("maxpool2d_dilation", (1, 2, 11, 10), "maxpool2d(k=[3, 2], stride=[2, 1], dilation=[2, 3], pad=1)",
     {}, lambda x, p: maxpool(x, (3, 2), (2, 1), 1, (2, 3))),
    ("maxpool2d_ceil_drop", (1, 2, 6, 6), "maxpool(3, stride=2, pad=1, ceil_mode=true)", {},
     lambda x, p: maxpool(x, 3, 2, 1, ceil_mode=True)),
    ("maxpool2d_pad_sides", (1, 2, 7, 7), "maxpool(3, stride=2, pad=[1, 0, 0, 1])", {},
     lambda x, p: maxpool(x, 3, 2, pad_sides=(1, 0, 0, 1))),
    ("maxpool1d", (2, 3, 11), "maxpool1d(3, stride=2, pad=1, dilation=2, ceil_mode=true)", {},
     lambda x, p: maxpool(x, 3, 2, 1, 2, True)),
    # average pooling
    ("avgpool2d_basic", (2, 3, 9, 7), "avgpool(3, stride=2)", {}, lambda x, p: avgpool(x, 3, 2)),
    ("avgpool2d_pad", (2, 3, 9, 7), "avgpool2d(3, stride=2, pad=1)", {},
     lambda x, p: avgpool(x, 3, 2, 1)),
    ("avgpool2d_exclude_ceil", (1, 3, 8, 7),
     "avgpool2d(3, stride=2, pad=1, ceil_mode=true, count_include_pad=false)", {},
     lambda x, p: avgpool(x, 3, 2, 1, True, False)),
    ("avgpool2d_include_ceil", (1, 2, 7, 7), "avgpool2d(2, pad=1, ceil_mode=true)", {},
     lambda x, p: avgpool(x, 2, 2, 1, True, True)),
    ("avgpool2d_pad_sides", (1, 2, 8, 7), "avgpool(k=[3, 2], stride=2, pad=[1, 1, 0, 1])", {},
     lambda x, p: avgpool(x, (3, 2), 2, pad_sides=(1, 1, 0, 1))),
    ("avgpool1d", (2, 3, 10), "avgpool1d(4, stride=3, pad=2, ceil_mode=true, count_include_pad=false)",
     {}, lambda x, p: avgpool(x, 4, 3, 2, True, False)),
    ("avgpool1d_include", (2, 3, 9), "avgpool1d(3, pad=1)", {}, lambda x, p: avgpool(x, 3, 3, 1)),
    # adaptive and global
    ("adaptive_avgpool2d_1", (2, 3, 7, 5), "adaptive_avgpool2d(1)", {},
     lambda x, p: F.adaptive_avg_pool2d(x, 1)),
    ("adaptive_avgpool2d", (2, 3, 8, 6), "adaptive_avgpool2d([4, 3])", {},
     lambda x, p: F.adaptive_avg_pool2d(x, (4, 3))),
    ("adaptive_avgpool1d", (2, 3, 9), "adaptive_avgpool1d(3)", {},
     lambda x, p: F.adaptive_avg_pool1d(x, 3)),
    ("global_avgpool", (2, 3, 5, 7), "global_avgpool()", {}, lambda x, p: x.mean(dim=(2, 3))),
    ("global_maxpool", (2, 3, 5, 7), "global_maxpool()", {}, lambda x, p: x.amax(dim=(2, 3))),
    ("global_avgpool1d", (2, 3, 7), "global_avgpool()", {}, lambda x, p: x.mean(dim=2)),
    # the implicit GEMM's packing edges (codegen/gemm.c): output rows wider
    # than a 16-column panel and not a multiple of it (panels inside a row
    # and panels across rows), taps over two K blocks (> 256), a GEMM tall
    # enough (> 48 rows) to share its packed B, padding beyond the kernel's
    # reach, stride 2 with its transposed gather, and dilated taps.
    ("conv2d_wide_kblocks", (2, 20, 4, 37), "conv2d(6, k=[3, 5], pad=[1, 2])",
     conv_params(20, 6, (3, 5)), lambda x, p: conv(x, p, 1, (1, 2))),
    ("conv2d_shared_b", (1, 30, 2, 19), "conv2d(50, k=3, pad=1, bias=false)",
     conv_params(30, 50, (3, 3), bias=False), lambda x, p: conv(x, p, 1, 1)),
    ("conv2d_pad_beyond_reach", (2, 3, 4, 18), "conv2d(4, k=3, pad=4)", conv_params(3, 4, (3, 3)),
     lambda x, p: conv(x, p, 1, 4)),
    ("conv2d_wide_stride2", (2, 5, 7, 41), "conv2d(6, k=3, stride=2, pad=1)", conv_params(5, 6, (3, 3)),
     lambda x, p: conv(x, p, 2, 1)),
    ("conv2d_wide_dil", (1, 4, 6, 40), "conv2d(3, k=3, pad=same, dilation=2)", conv_params(4, 3, (3, 3)),
     lambda x, p: conv(x, p, 1, "same", 2)),
    ("convt2d_wide", (2, 6, 3, 33), "conv_transpose2d(4, k=3, pad=1)",
     conv_params(6, 4, (3, 3), transposed=True), lambda x, p: conv_t(x, p, 1, 1)),
    # the direct convolution's rows (codegen/conv_blocked.c; test_conv runs
    # the conv2d cases blocked and NHWC too): output widths 1 to 13 and 32
    # split into tiles of at most 6 columns every way (one tile, two edge
    # tiles, runs of inside tiles of one or two widths between them); 17
    # filters are a pair of 8-channel blocks and a lone one; 3 and 1 input
    # channels are what NHWC reads unpadded
    *[(f"conv2d_row{w}", (2, 3, 3, w), "conv2d(17, k=3, pad=1)", conv_params(3, 17, (3, 3)),
       lambda x, p: conv(x, p, 1, 1)) for w in list(range(1, 14)) + [32]],
    ("conv2d_row_c1", (2, 1, 4, 11), "conv2d(8, k=[3, 5], pad=[1, 2], bias=false)",
     conv_params(1, 8, (3, 5), bias=False), lambda x, p: conv(x, p, 1, (1, 2))),
]


def shape_str(s):
    return ", ".join(str(d) for d in s)


def make(name, xshape, call, params, ref, seed, tensors):
    gen = torch.Generator().manual_seed(seed)
    x32 = torch.randn(xshape, generator=gen).float()
    p32 = {k: (torch.rand(s, generator=gen) * 2 - 1).float() for k, s in params.items()}
    x = x32.double().requires_grad_()
    p = {k: v.double().requires_grad_() for k, v in p32.items()}
    y = ref(x, p)
    r = torch.randn(y.shape, generator=gen).float().double()
    (y * r).sum().backward()
    out = {"x": x32, "r": r, "y": y.detach(), "grad.x": x.grad}
    for k in params:
        out["y." + k] = p32[k]
        out["grad.y." + k] = p[k].grad
    for k, v in out.items():
        tensors[name + "." + k] = v.detach().float().numpy()
    return (f"model {name}(x: f32[{shape_str(xshape)}]) -> (y: f32[{shape_str(y.shape)}]) {{\n"
            f"  y = x |> {call}\n}}\n")


def main():
    tensors, models = {}, []
    for i, case in enumerate(CASES):
        models.append(make(*case, seed=100 + i, tensors=tensors))
    with open(os.path.join(HERE, "cases.kiln"), "w") as f:
        f.write("# Written by make_fixtures.py: one model per case, the layer under test\n"
                "# on x; fixtures.safetensors holds the PyTorch results.\n\n")
        f.write("\n".join(models))
    write_safetensors(os.path.join(HERE, "fixtures.safetensors"), tensors)
    print(f"{len(CASES)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()

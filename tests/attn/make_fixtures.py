"""PyTorch fixtures for tests/attn: torch.nn.MultiheadAttention (E 8, 2
heads, batch_first) self-attention, causal self-attention,
cross-attention with a key padding mask, with values apart from the keys,
and with keys and values of other sizes (kdim 6, vdim 5), and a whole post-LN
torch.nn.TransformerEncoderLayer(128, 4, 512, dropout=0, batch_first=True),
with seeded random weights under kiln's parameter names (the layer named
`attn`, or the encoder's own submodule names: `self_attn.in_proj_weight`,
`linear1.weight`, `norm1.weight`, ...), the outputs and the gradients of
loss = sum(y * r) for a fixed random r.

Each CASE.safetensors beside this script holds, f32:
  x, r                       the input and the loss weights
  kv, pad                    cross only: keys/values [3, 4, 8] and the key
                             padding mask [3, 4] (1: a padding key)
  value                      value and kvdim only: values apart from the
                             keys, [3, 4, 8]; kvdim: keys [3, 4, 6] and
                             values [3, 4, 5], with q/k/v_proj_weight
  mask                       mask only: an additive attn_mask [5, 4]
  attn.in_proj_weight ...    the parameters (PyTorch's names and layouts)
  ref.y                      the output
  ref.grad.x, ref.grad.kv, ref.grad.<param>   d loss / d each of them
References are computed in float64 on the f32 weights and inputs, then
rounded to f32. Biases are drawn at random too (PyTorch starts them at 0),
so that their gradients and uses are checked.

Run with Debian's /usr/bin/python3 (torch and numpy):
  /usr/bin/python3 tests/attn/make_fixtures.py
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, T, S, E, HEADS = 3, 5, 4, 8, 2


def f32(t):
    return t.detach().to(torch.float32).numpy()


def randomise(net, gen):
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def run(net, prefix, inputs, call, gen):
    """Writes inputs, parameters, the output and the gradients of net."""
    out = {k: f32(v) for k, v in inputs.items()}
    for name, p in net.named_parameters():
        out[prefix + name] = f32(p)
    net = net.double()
    leaves = {k: v.double().requires_grad_(v.is_floating_point() and k != "pad")
              for k, v in inputs.items()}
    y = call(net, leaves)
    r = torch.randn(y.shape, generator=gen)
    (y * r.double()).sum().backward()
    out["r"] = f32(r)
    out["ref.y"] = f32(y)
    for k, v in leaves.items():
        if v.requires_grad:
            out["ref.grad." + k] = f32(v.grad)
    for name, p in net.named_parameters():
        out["ref.grad." + prefix + name] = f32(p.grad)
    return out


def mha_case(name, seed, causal=False, cross=False, float_mask=False, kdim=E, vdim=None):
    gen = torch.Generator().manual_seed(seed)
    net = nn.MultiheadAttention(E, HEADS, kdim=kdim, vdim=vdim or kdim, batch_first=True)
    randomise(net, gen)
    inputs = {"x": torch.randn(N, T, E, generator=gen)}
    if cross:
        inputs["kv"] = torch.randn(N, S, kdim, generator=gen)
        inputs["pad"] = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]]).double()
    if vdim:         # values apart from the keys
        inputs["value"] = torch.randn(N, S, vdim, generator=gen)
    if float_mask:   # an additive attn_mask [T, S], a leaf: its gradient is checked too
        inputs["mask"] = torch.randn(T, S if cross else T, generator=gen)
    causal_mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None

    def call(net, v):
        kv = v.get("kv", v["x"])
        pad = v["pad"].bool() if "pad" in v else None
        mask = v["mask"] if "mask" in v else causal_mask
        y, _ = net(v["x"], kv, v.get("value", kv), attn_mask=mask, key_padding_mask=pad,
                   need_weights=False)
        return y

    write_safetensors(os.path.join(HERE, name + ".safetensors"),
                      run(net, "attn.", inputs, call, gen))


def encoder_case(seed):
    gen = torch.Generator().manual_seed(seed)
    net = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True)
    randomise(net, gen)
    with torch.no_grad():          # LayerNorm scales near 1, as trained ones are
        for norm in (net.norm1, net.norm2):
            norm.weight.add_(1)
    inputs = {"x": torch.randn(2, 6, 128, generator=gen)}
    write_safetensors(os.path.join(HERE, "encoder.safetensors"),
                      run(net, "", inputs, lambda net, v: net(v["x"]), gen))


if __name__ == "__main__":
    mha_case("self", 1)
    mha_case("causal", 2, causal=True)
    mha_case("cross", 3, cross=True)
    mha_case("mask", 5, cross=True, float_mask=True)
    mha_case("value", 6, cross=True, vdim=E)
    mha_case("kvdim", 7, cross=True, kdim=6, vdim=5)
    encoder_case(4)

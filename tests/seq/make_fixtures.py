"""PyTorch fixtures for tests/seq: nn.RNN, nn.LSTM and nn.GRU (batch_first,
two layers) with seeded random weights, under kiln's parameter names
(`hs.weight_ih_l0`, ...: the layer call `hs = lstm(x, 6, layers=2)`), their
outputs and the gradients of loss = sum(hs * r) for a fixed random r; and
the same bidirectional (KIND_bi.safetensors, `hs.weight_ih_l0_reverse`...,
outputs [3, 5, 12], the last state h_n of both directions concatenated).

For each kind it writes KIND.safetensors beside this script, f32:
  x, r, mask             input [3, 5, 4], loss weights [3, 5, 6], a 0/1 mask
                         [3, 5] of lengths 5, 2, 4
  hs.weight_ih_l0 ...    the parameters (PyTorch's names and layouts)
  ref.hs                 the output at every step
  ref.grad.x, ref.grad.hs.weight_ih_l0 ...   d loss / d x and each parameter
  ref.last_packed        h_n of the last layer over the packed sequences
                         (pack_padded_sequence with the mask's lengths)
References are computed in float64 on the f32 weights and inputs, then
rounded to f32. Gate orders are PyTorch's: LSTM i, f, g, o; GRU r, z, n.

Run with Debian's /usr/bin/python3 (torch and numpy):
  /usr/bin/python3 tests/seq/make_fixtures.py
"""
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, T, D, H, LAYERS = 3, 5, 4, 6, 2
LENGTHS = [5, 2, 4]


def f32(t):
    return t.detach().to(torch.float32).numpy()


def fixture(kind, seed, bidirectional=False):
    gen = torch.Generator().manual_seed(seed)
    make = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    torch.manual_seed(seed)
    net = make(D, H, num_layers=LAYERS, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(N, T, D, generator=gen).float()
    r = torch.randn(N, T, 2 * H if bidirectional else H, generator=gen).float()
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in LENGTHS])
    out = {"x": f32(x), "r": f32(r), "mask": f32(mask)}
    for name, p in net.named_parameters():
        out["hs." + name] = f32(p)
    net = net.double()
    xd = x.double().requires_grad_(True)
    hs, _ = net(xd)
    (hs * r.double()).sum().backward()
    out["ref.hs"] = f32(hs)
    out["ref.grad.x"] = f32(xd.grad)
    for name, p in net.named_parameters():
        out["ref.grad.hs." + name] = f32(p.grad)
    packed = nn.utils.rnn.pack_padded_sequence(x.double(), LENGTHS, batch_first=True,
                                               enforce_sorted=False)
    with torch.no_grad():
        _, state = net(packed)
    h_n = state[0] if kind == "lstm" else state
    last = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
    out["ref.last_packed"] = f32(last)
    name = kind + ("_bi" if bidirectional else "")
    write_safetensors(os.path.join(HERE, name + ".safetensors"), out)


if __name__ == "__main__":
    for i, kind in enumerate(["rnn", "lstm", "gru"]):
        fixture(kind, 7 + i)
        fixture(kind, 17 + i, bidirectional=True)

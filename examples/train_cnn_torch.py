"""Trains examples/cnn.kiln's network in PyTorch on the digits and writes
examples/cnn.safetensors under kiln's parameter names.

A STOPGAP: this is what the README's first command runs until kiln trains
models itself (`kiln train`); then the weights come from cnn.kiln's own
train block and this script goes.

The network and the safetensors writer are tests/models/make_fixtures.py's,
the same PyTorch module kiln's output is checked against there (dropout
included, active only while training), so the names and layouts that file
proves are the ones written here.

Data: examples/data/digits.csv.gz (1,797 rows, 64 pixels 0..16 and a label),
pixels / 16, a seeded 80/20 split; Adam, batch 64, a few epochs (seconds on
a CPU). Prints the validation accuracy. Run with Debian's /usr/bin/python3:

    /usr/bin/python3 examples/train_cnn_torch.py
"""
import gzip
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True            # leave no __pycache__ in tests/models
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))
from make_fixtures import Cnn, write_safetensors  # noqa: E402

SEED, EPOCHS, BATCH, LR = 1, 12, 64, 3e-3


def load_digits():
    rows = np.loadtxt(gzip.open(os.path.join(HERE, "data", "digits.csv.gz")), delimiter=",")
    x = torch.tensor(rows[:, :64] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(rows[:, 64], dtype=torch.int64)
    return x, y


def split(x, y, gen):
    order = torch.randperm(len(x), generator=gen)
    nval = len(x) // 5
    val, train = order[:nval], order[nval:]
    return (x[train], y[train]), (x[val], y[val])


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def train(net, x, y, gen):
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for epoch in range(EPOCHS):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    x, y = load_digits()
    (xt, yt), (xv, yv) = split(x, y, gen)
    net = Cnn()
    train(net, xt, yt, gen)
    print(f"trained on {len(xt)} digits, {EPOCHS} epochs: "
          f"validation accuracy {accuracy(net, xv, yv):.4f} on {len(xv)}")
    state = {k: v.detach().float().numpy() for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    out = os.path.join(HERE, "cnn.safetensors")
    write_safetensors(out, state)
    print(f"wrote {out}: {len(state)} tensors")


if __name__ == "__main__":
    main()

"""PyTorch's time per epoch for examples/fashion_mlp.kiln's network, trained
the same way: 784-256-128-10 with ReLU and dropout 0.2, cross-entropy, Adam
(lr 1e-3) with a cosine schedule stepped per epoch, batch 64, the same 90/10
split of the 60,000 training images (a seeded shuffle of its own), test on
the 10,000. The number to compare with `kiln train examples/fashion_mlp.kiln
--threads T` is the seconds per epoch at the same thread count.

    /usr/bin/python3 examples/fashion_mlp_torch.py [--threads 2] [--epochs 15]

Needs python3-torch and dataset-fashion-mnist (./setup.sh fashion).
"""
import argparse
import gzip
import time

import numpy as np
import torch
from torch import nn

DATA = "/usr/share/datasets/fashion-mnist/"


def idx(name):
    """An IDX file (gzipped) as a numpy array: magic, big-endian dims, u8 data."""
    raw = gzip.open(DATA + name).read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(dims)


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    model.train()
    return loss, acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    x = torch.tensor(idx("train-images-idx3-ubyte.gz").reshape(-1, 784) / 255, dtype=torch.float32)
    y = torch.tensor(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xt = torch.tensor(idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255, dtype=torch.float32)
    yt = torch.tensor(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    perm = torch.randperm(len(x))
    nval = round(0.1 * len(x))
    xv, yv, x, y = x[perm[-nval:]], y[perm[-nval:]], x[perm[:-nval]], y[perm[:-nval]]
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    for epoch in range(1, args.epochs + 1):
        t0 = time.monotonic()
        order = torch.randperm(len(x))
        total, correct = 0.0, 0
        for at in range(0, len(x), args.batch):
            idx_b = order[at:at + args.batch]
            logits = model(x[idx_b])
            loss = nn.functional.cross_entropy(logits, y[idx_b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx_b)
            correct += (logits.argmax(1) == y[idx_b]).sum().item()
        val_loss, val_acc = evaluate(model, xv, yv)
        test_loss, test_acc = evaluate(model, xt, yt)
        sched.step()
        print(f"epoch {epoch}/{args.epochs}  {time.monotonic() - t0:.2f} s  loss {total / len(x):.4f}"
              f"  acc {100 * correct / len(x):.2f}%  val_acc {100 * val_acc:.2f}%"
              f"  test_acc {100 * test_acc:.2f}%", flush=True)


if __name__ == "__main__":
    main()

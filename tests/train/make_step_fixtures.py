"""PyTorch fixtures for tests/train/test_torch_steps.c: five training steps
of small models under torch.optim, to compare with kiln's compiled steps.

Each case is one model of test_torch_steps.c's source, rebuilt in PyTorch
under kiln's parameter names, with one optimizer. For each CASE it writes,
beside this script, CASE.safetensors holding:
  init/NAME    every parameter and batchnorm running statistic before the
               first step (random, batchnorm's included, so a swapped or
               dropped term shows)
  final/NAME   the same after five steps
  losses       f32[5]: the loss of each step, before its update
  x, label, …  the five batches, stacked: [5, batch, ...]; class ids i64

The steps run in float32 in train mode (batchnorm on batch statistics,
running statistics updated; no dropout), one torch.optim step per batch.

Run with Debian's /usr/bin/python3 (torch and numpy); the tests only read
the files this writes:  /usr/bin/python3 tests/train/make_step_fixtures.py
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, BATCH = 5, 8
DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}


class Mlp(nn.Module):
    """model mlp: dense(16) as fc1, relu, dense(3) as fc2."""
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return (self.fc2(torch.relu(self.fc1(x))),)


class Cnn(nn.Module):
    """model cnn: conv (no bias, as before a batchnorm), bn, relu, maxpool, fc."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return (self.fc(h.flatten(1)),)


class Heads(nn.Module):
    """model heads: a tanh body and three heads, for the loss functions."""
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 16)
        self.cls = nn.Linear(16, 3)
        self.box = nn.Linear(16, 2)
        self.tag = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.cls(h), self.box(h), self.tag(h)


def ce_loss(out, b):
    return F.cross_entropy(out[0], b["label"])


def heads_loss(out, b):
    cls, box, tags = out
    return (F.cross_entropy(cls, b["label"], ignore_index=-1)
            + 0.5 * F.mse_loss(box, b["target"])
            + F.binary_cross_entropy_with_logits(tags, b["flags"], reduction="sum") / 8
            + 0.25 * F.cross_entropy(cls, b["probs"]))


def randomize_batchnorm(net, gen):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)


def state(net, prefix):
    return {prefix + k: v.detach().numpy().copy() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def class_batches(gen, shape, classes):
    return {"x": torch.randn(STEPS, BATCH, *shape, generator=gen),
            "label": torch.randint(0, classes, (STEPS, BATCH), generator=gen)}


def heads_batches(gen):
    b = class_batches(gen, (6,), 3)
    b["label"][:, ::3] = -1                                   # missing labels
    b["target"] = torch.randn(STEPS, BATCH, 2, generator=gen)
    b["flags"] = (torch.rand(STEPS, BATCH, 4, generator=gen) > 0.5).float()
    b["probs"] = torch.softmax(torch.randn(STEPS, BATCH, 3, generator=gen), dim=-1)
    return b


def make(name, net, batches, loss_fn, opt, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                  # the layers' own initialisation
    net = net()
    randomize_batchnorm(net, gen)
    data = batches(gen)
    out = state(net, "init/")
    net.train()
    opt = opt(net.parameters())
    losses = []
    for s in range(STEPS):
        b = {k: v[s] for k, v in data.items()}
        opt.zero_grad()
        loss = loss_fn(net(b["x"]), b)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out.update(state(net, "final/"))
    out.update({k: v.numpy() for k, v in data.items()})
    out["losses"] = np.array(losses, dtype=np.float32)
    write_safetensors(os.path.join(HERE, name + ".safetensors"), out, keep_ints=True)
    print(f"{name}: losses {' '.join(f'{v:.5f}' for v in losses)}")


def main():
    torch.set_num_threads(1)
    mlp = lambda gen: class_batches(gen, (6,), 3)
    make("mlp_sgd", Mlp, mlp, ce_loss,
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), seed=1)
    make("mlp_rmsprop", Mlp, mlp, ce_loss, lambda p: torch.optim.RMSprop(p, lr=0.01), seed=2)
    make("mlp_adam", Mlp, mlp, ce_loss, lambda p: torch.optim.Adam(p, lr=0.01), seed=3)
    make("cnn_adam", Cnn, lambda gen: class_batches(gen, (2, 6, 6), 3), ce_loss,
         lambda p: torch.optim.Adam(p, lr=0.01), seed=4)
    make("heads_sgd", Heads, heads_batches, heads_loss,
         lambda p: torch.optim.SGD(p, lr=0.05), seed=5)


if __name__ == "__main__":
    main()

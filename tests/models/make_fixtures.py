"""PyTorch fixtures for tests/models: each example model of examples/, built
again in PyTorch under kiln's parameter names, with seeded random weights.

For each model NAME it writes, beside this script:
  NAME.safetensors  every parameter and batchnorm running statistic, f32,
                    under kiln's names (torch's num_batches_tracked is not a
                    kiln parameter and is left out)
  NAME_x.npy        the input batch, f32
  NAME_y.npy        the expected output, f32: the network run in float64 on
                    the f32 weights and input, then rounded to f32, so the
                    reference carries no float32 rounding of its own

Batchnorm layers run in eval mode with random running statistics and affine
parameters, so a wrong eps, a swapped mean/var or a dropped scale shows.
The digit models take the real digits of examples/data/digits_x.npy; the
resnet a seeded random batch of 5 (odd, so no vector width divides it).

Run with Debian's /usr/bin/python3 (torch and numpy); the tests only read
the files this writes:  /usr/bin/python3 tests/models/make_fixtures.py
"""
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fixtures import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples")


def randomize_batchnorm(bn, gen):
    """Eval-mode batchnorm with statistics and affine terms far from 0 and 1."""
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)            # [0.5, 1.5)
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        bn.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)  # [0.5, 2)


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class Mlp(nn.Module):
    """examples/mlp.kiln: dense 128, relu, dense 64, relu, dense 10."""
    def __init__(self):
        super().__init__()
        self.h1 = nn.Linear(64, 128)
        self.h2 = nn.Linear(128, 64)
        self.logits = nn.Linear(64, 10)
        self.dropout = nn.Dropout(0.2)           # no parameters; off in eval

    def forward(self, x):
        return self.logits(self.dropout(torch.relu(self.h2(torch.relu(self.h1(x))))))


class Cnn(nn.Module):
    """examples/cnn.kiln: kiln names unnamed layers <layer><k> per scope."""
    def __init__(self):
        super().__init__()
        self.conv2d0 = conv3x3(1, 16)
        self.batchnorm0 = nn.BatchNorm2d(16)
        self.conv2d1 = conv3x3(16, 32)
        self.batchnorm1 = nn.BatchNorm2d(32)
        self.dense0 = nn.Linear(512, 64)
        self.logits = nn.Linear(64, 10)
        self.dropout = nn.Dropout(0.3)           # no parameters; off in eval

    def forward(self, x):
        h = torch.relu(self.batchnorm0(self.conv2d0(x)))
        h = torch.max_pool2d(torch.relu(self.batchnorm1(self.conv2d1(h))), 2)
        return self.logits(self.dropout(torch.relu(self.dense0(h.flatten(1)))))


class Residual(nn.Module):
    """examples/resnet.kiln's block: y = relu(x + bn2(conv2(relu(bn1(conv1(x))))))."""
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c, c), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = conv3x3(c, c), nn.BatchNorm2d(c)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(a)))


class Resnet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(3, 16), nn.BatchNorm2d(16)
        self.layer1, self.layer2 = Residual(16), Residual(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.layer2(self.layer1(h))
        return self.fc(h.mean(dim=(2, 3)))


def digits():
    return np.load(os.path.join(EXAMPLES, "data", "digits_x.npy"))


def make(name, net, x, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                  # the layers' own initialisation
    net = net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_batchnorm(m, gen)
    net.eval()
    state = {k: v.detach().float().numpy() for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    x = x.astype(np.float32)
    with torch.no_grad():
        y64 = net.double()(torch.from_numpy(x).double()).numpy()
        y32 = net.float()(torch.from_numpy(x)).numpy()
    write_safetensors(os.path.join(HERE, name + ".safetensors"), state, sort=False)
    np.save(os.path.join(HERE, name + "_x.npy"), x)
    np.save(os.path.join(HERE, name + "_y.npy"), y64.astype(np.float32))
    # What float32 alone costs, for scale against the tests' 1e-4.
    rel = np.abs(y32 - y64).max() / np.abs(y64).max()
    print(f"{name}: x {x.shape}, y {y64.shape}, {len(state)} tensors, "
          f"torch f32 vs f64 rel err {rel:.2e}")


def main():
    make("mlp", Mlp, digits().reshape(-1, 64), seed=1)
    make("cnn", Cnn, digits(), seed=2)
    make("resnet", Resnet, np.random.default_rng(3).standard_normal((5, 3, 16, 16)), seed=3)


if __name__ == "__main__":
    main()

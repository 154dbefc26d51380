"""The reference workloads of kiln's benchmark, in PyTorch.

bench/models/*.kiln are the same models written in kiln (same layers,
shapes and parameter names); bench/ref/check_same.py loads these models'
weights into kiln and checks that both compute the same outputs. FLOP
counts are analytic (a multiply-add is 2 FLOP) and count only the matmul and
convolution work: elementwise ops, pooling, batchnorm, softmax and optimizer
updates are left out. A training step counts 3x the forward (forward,
gradient of the input, gradient of the weights) except the MLP's, which is
exact. The same definitions and counts as the shared reference kit, so rows
compare with its results.
"""
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """784-256-256-10, ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


MLP_LAYERS = [(784, 256), (256, 256), (256, 10)]


def mlp_fwd_flop(batch):
    return sum(2 * batch * i * o for i, o in MLP_LAYERS)


def mlp_train_flop(batch):
    """Forward + dW of every layer + dX of every layer but the first (the
    input needs no gradient)."""
    first = 2 * batch * MLP_LAYERS[0][0] * MLP_LAYERS[0][1]
    return 3 * mlp_fwd_flop(batch) - first


class LeNet(nn.Module):
    """1x28x28: conv5x5x6-relu-maxpool2-conv5x5x16-relu-maxpool2-fc120-fc84-fc10
    (no padding: 28->24->12->8->4, flatten 16*4*4 = 256; ReLU after fc120/fc84)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def lenet_fwd_flop(batch):
    macs = 6 * 1 * 25 * 24 * 24 + 16 * 6 * 25 * 8 * 8 + 256 * 120 + 120 * 84 + 84 * 10
    return 2 * batch * macs


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(x + y)


class ResNetish(nn.Module):
    """3x32x32: conv3x3(32)+BN+ReLU, 2 residual blocks (32 ch, 32x32), GAP, fc10."""

    def __init__(self, c=32):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.block1 = BasicBlock(c)
        self.block2 = BasicBlock(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.block2(self.block1(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet_fwd_flop(batch, c=32, hw=32 * 32):
    macs = c * 3 * 9 * hw + 4 * (c * c * 9 * hw) + c * 10
    return 2 * batch * macs


# Every workload: the model, its input shape (without the batch), the
# batches of its inference and training rows, and its FLOP per iteration.
# bench/run, torch_ref.py and export_onnx.py all read this table.
WORKLOADS = {
    "mlp": dict(make=MLP, input=(784,), infer_batches=(1, 128), train_batch=128,
                fwd_flop=mlp_fwd_flop, train_flop=mlp_train_flop),
    "lenet": dict(make=LeNet, input=(1, 28, 28), infer_batches=(1, 64), train_batch=64,
                  fwd_flop=lenet_fwd_flop, train_flop=lambda b: 3 * lenet_fwd_flop(b)),
    "resnet": dict(make=ResNetish, input=(3, 32, 32), infer_batches=(1, 32), train_batch=32,
                   fwd_flop=resnet_fwd_flop, train_flop=lambda b: 3 * resnet_fwd_flop(b)),
}


# The transformer encoder block of the shared reference kit, timed on its
# own (bench/attn): inference, and forward + backward.
def transformer_block(d_model=128, nhead=4, ffn=512):
    """One post-norm encoder layer, ReLU FFN, dropout disabled (0.0) so the
    work is deterministic and matches what a compiler would be given."""
    return nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=ffn, dropout=0.0,
                                      batch_first=True)


def transformer_fwd_flop(batch, seq, d=128, ffn=512):
    per_token = 4 * d * d + 2 * d * ffn + 2 * seq * d  # QKV+out proj, FFN, QK^T and AV
    return 2 * batch * seq * per_token

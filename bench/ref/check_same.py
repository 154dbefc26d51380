#!/usr/bin/python3
"""Checks that kiln's benchmark models (bench/models/*.kiln) compute what
the reference models (bench/ref/models.py) compute: the same layers,
shapes and parameter names, so the timings compare like with like.

  bench/ref/check_same.py KILN-BINARY [WORKDIR]

For each model: PyTorch weights drawn at random (batchnorm running
statistics too) are written as .safetensors, kiln runs its model file on
them (`kiln run --weights`) at inference, and its logits must match
PyTorch's eval-mode output to 1e-4 (relative to the largest). Prints a line
per model and exits 1 on a mismatch.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models as M  # noqa: E402


def write_safetensors(path, tensors):
    """The .safetensors format: a little-endian u64 header length, a JSON
    header of dtype, shape and byte offsets per tensor, then the bytes."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t.detach().numpy().astype(np.float32)).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def randomize_batchnorm(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def check(kiln, name, w, work):
    torch.manual_seed(0)
    model = w["make"]().eval()
    randomize_batchnorm(model)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    weights, xin, out = (os.path.join(work, name + s) for s in (".safetensors", "_x.npy", "_y.npy"))
    write_safetensors(weights, state)
    x = torch.rand(3, *w["input"])
    np.save(xin, x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    model_file = os.path.join(HERE, "..", "models", name + ".kiln")
    r = subprocess.run([kiln, "run", model_file, "--weights", weights, "-i", "x=" + xin, "-o", "logits=" + out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("%-7s FAIL: kiln run: %s" % (name, r.stderr.strip()))
        return False
    got = np.load(out)
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) if got.shape == want.shape else None
    ok = err is not None and err < 1e-4
    params = sum(v.numel() for v in state.values())
    print("%-7s %s: %d weights and statistics, logits %s, max rel diff %s, fwd %.3f MFLOP/sample" % (
        name, "ok" if ok else "FAIL", params, list(got.shape), "-" if err is None else "%.2g" % err,
        w["fwd_flop"](1) / 1e6))
    return ok


def main():
    kiln = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="kiln-check-")
    os.makedirs(work, exist_ok=True)
    results = [check(kiln, name, w, work) for name, w in M.WORKLOADS.items()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

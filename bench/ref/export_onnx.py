#!/usr/bin/python3
"""Exports the benchmark models (bench/ref/models.py) to ONNX for the
inference runtimes (OpenCV DNN, ONNX Runtime).

  bench/ref/export_onnx.py OUTDIR

Writes OUTDIR/<model>.onnx (opset 13, eval mode so batchnorm uses its
running statistics, a dynamic batch axis) and OUTDIR/manifest.json
({model: {"input_shape", "batches", "fwd_flop_per_sample"}}).
Identity nodes that only forward an initializer (the exporter writes them
when folded batchnorm biases are equal) become copies of it: OpenCV 4.6's
importer cannot read them.
"""
import json
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as M  # noqa: E402


def strip_initializer_identities(path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return
    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            src = next(i for i in m.graph.initializer if i.name == n.input[0])
            m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(src), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "onnx"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    manifest = {}
    for name, w in M.WORKLOADS.items():
        model = w["make"]().eval()
        x = torch.randn(max(w["infer_batches"]), *w["input"])
        path = os.path.join(out, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(model, (x,), path, opset_version=13, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        strip_initializer_identities(path)
        manifest[name] = {"input_shape": list(w["input"]), "batches": list(w["infer_batches"]),
                          "fwd_flop_per_sample": w["fwd_flop"](1)}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()

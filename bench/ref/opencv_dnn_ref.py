#!/usr/bin/python3
"""OpenCV DNN (Debian's python3-opencv) inference timings on the ONNX
exports of the benchmark models (bench/ref/export_onnx.py).

  bench/ref/opencv_dnn_ref.py ONNXDIR --threads N [--only REGEX]
                              [--iters 30] [--warmup 10] [--min-time 1.0]

Output: JSON lines (bench/ref/timing.py), framework "opencv-dnn".
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import emit, measure, result_row  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("onnxdir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-time", type=float, default=1.0)
    a = p.parse_args()
    import cv2

    cv2.setNumThreads(a.threads)
    emit({"kind": "header", "framework": "opencv-dnn", "opencv": cv2.__version__, "threads": a.threads})
    only = re.compile(a.only) if a.only else None
    manifest = json.load(open(os.path.join(a.onnxdir, "manifest.json")))
    for name, spec in manifest.items():
        if only and not only.search(name + "_infer"):
            continue
        net = cv2.dnn.readNetFromONNX(os.path.join(a.onnxdir, name + ".onnx"))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        for b in spec["batches"]:
            x = np.random.randn(b, *spec["input_shape"]).astype(np.float32)

            def f():
                net.setInput(x)
                net.forward()
            times = measure(f, a.warmup, a.iters, a.min_time)
            emit(result_row(name + "_infer", "opencv-dnn", a.threads, b, times, spec["fwd_flop_per_sample"] * b))


if __name__ == "__main__":
    main()

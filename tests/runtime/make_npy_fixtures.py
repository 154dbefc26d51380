#!/usr/bin/python3
"""Writes the reference files the runtime tests read, with numpy itself.

    /usr/bin/python3 tests/runtime/make_npy_fixtures.py [outdir]

The outputs are committed under tests/runtime/data/ so the tests need no
Python; rerun this script only to change them. Element k (C order) of every
array is a formula of k that tests/runtime/test_npy.c recomputes
independently (fixture_value), so a reader that scrambles order, dtype or
shape fails the comparison.
"""
import json
import os
import struct
import sys

import numpy as np

SHAPES = {0: (), 1: (5,), 2: (2, 3), 3: (2, 3, 4), 4: (2, 1, 3, 2)}
DTYPES = ["f32", "f64", "i32", "i64", "u8", "bool"]
NP = {"f32": "<f4", "f64": "<f8", "i32": "<i4", "i64": "<i8", "u8": "|u1", "bool": "|b1"}
ST = {"f32": "F32", "f64": "F64", "i32": "I32", "i64": "I64", "u8": "U8", "bool": "BOOL"}


def values(dtype, shape):
    """The formulas, in exact integer or dyadic arithmetic."""
    k = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    if dtype in ("f32", "f64"):
        v = (k - 7) * 0.25
    elif dtype == "i32":
        v = k * 100003 - 1000000
    elif dtype == "i64":
        v = k * 1234567890123 - 5000000000000
    elif dtype == "u8":
        v = (k * 37) % 256
    else:
        v = k % 3 == 0
    return v.astype(NP[dtype]).reshape(shape)


def save(outdir, name, arr, version=None):
    path = os.path.join(outdir, name)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, arr, version=version)


def write_npy(outdir):
    for dt in DTYPES:
        for rank, shape in SHAPES.items():
            save(outdir, f"{dt}_r{rank}.npy", values(dt, shape))
    a = values("f32", (2, 3))
    save(outdir, "v2_f32.npy", a, version=(2, 0))
    save(outdir, "v3_f32.npy", a, version=(3, 0))
    save(outdir, "empty_f32.npy", np.zeros((0, 3), dtype="<f4"))
    save(outdir, "fortran_f32.npy", np.asfortranarray(a))
    save(outdir, "bigendian_f32.npy", a.astype(">f4"))
    save(outdir, "f16.npy", a.astype("<f2"))


def write_safetensors(outdir):
    """The layout of the reference writer: tensors ordered by descending
    alignment, then name; __metadata__ first; the header padded with spaces
    to a multiple of 8."""
    tensors = {
        "weight": values("f32", (2, 3)),
        "bias": values("f64", (3,)),
        "idx": values("i64", (4,)),
        "mask": values("bool", (2, 2)),
        "img": values("u8", (5,)),
        "count": values("i32", ()),
        "layer.0.w": values("f32", (2, 1, 3, 2)),
    }
    dtype_of = {n: DTYPES[list(NP.values()).index(a.dtype.str)] for n, a in tensors.items()}
    order = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header = {"__metadata__": {"format": "pt", "note": "\u00fcn\u00efcode \"quoted\""}}
    data, at = b"", 0
    for n in order:
        raw = tensors[n].tobytes()
        header[n] = {"dtype": ST[dtype_of[n]], "shape": list(tensors[n].shape),
                     "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(outdir, "ref.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "data")
    os.makedirs(outdir, exist_ok=True)
    write_npy(outdir)
    write_safetensors(outdir)


if __name__ == "__main__":
    main()

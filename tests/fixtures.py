"""What the fixture scripts (tests/*/make_*fixtures.py) share: writing a
.safetensors file by hand, so they need numpy and torch but no safetensors
package.

The layout: an 8-byte little-endian header length, a JSON header (dtype,
shape, data_offsets relative to the data area, optional __metadata__), the
header padded with spaces so the data area starts 8-aligned, then the raw
little-endian bytes, tensors back to back."""
import json
import struct

import numpy as np


def write_safetensors(path, tensors, meta=None, sort=True, keep_ints=False):
    """Writes tensors (name -> array) as F32, or int64 arrays as I64 when
    keep_ints; names sorted unless sort is False (then in dict order)."""
    header, blobs, offset = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name in (sorted(tensors) if sort else tensors):
        t = np.asarray(tensors[name])
        ints = keep_ints and t.dtype == np.int64
        data = np.ascontiguousarray(t, dtype="<i8" if ints else "<f4").tobytes()
        header[name] = {"dtype": "I64" if ints else "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)

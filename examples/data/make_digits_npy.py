"""Writes digits_x.npy (f32[64, 1, 8, 8], pixels / 16) and digits_y.npy
(i64[64]) from digits.csv.gz beside it. Run with Debian's /usr/bin/python3."""
import gzip, os
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
rows = np.loadtxt(gzip.open(os.path.join(here, "digits.csv.gz")), delimiter=",")
x = (rows[:64, :64] / 16.0).astype(np.float32).reshape(64, 1, 8, 8)
y = rows[:64, 64].astype(np.int64)
np.save(os.path.join(here, "digits_x.npy"), x)
np.save(os.path.join(here, "digits_y.npy"), y)

"""Independent IDX reader (gzip + numpy) for tests/unit/test_data.c.

Usage: /usr/bin/python3 tests/ref/idx_ref.py FILE INDEX...
Prints the image count, then one line of hex bytes per requested image index.
"""
import gzip
import struct
import sys

import numpy as np

path = sys.argv[1]
opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
with opener(path, "rb") as f:
    raw = f.read()
magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
assert magic == 0x803, "bad magic"
images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
print(n)
for i in sys.argv[2:]:
    print(images[int(i)].tobytes().hex())

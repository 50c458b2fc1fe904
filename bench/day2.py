#!/usr/bin/env python3
"""Applies a deterministic "day 2" of changes to a generated tree, in place:
about 10 % of the files deleted, the middle of every 7th large file
rewritten (64 KiB), every 13th small file rewritten whole, and 50 MiB of new
files. Usage: day2.py DIR SEED"""
import os
import random
import sys

root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
files = []
for d, _, names in os.walk(root):
    for n in names:
        if n != "BENCH_TREE_MARKER":
            files.append(os.path.join(d, n))
files.sort()
large = [f for f in files if os.path.getsize(f) >= 1 << 20]
small = [f for f in files if os.path.getsize(f) < 1 << 20]
for i, f in enumerate(files):
    if i % 10 == 3:
        os.remove(f)
for i, f in enumerate(large):
    if i % 7 == 0 and os.path.exists(f):
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.seek(size // 2)
            fh.write(rng.randbytes(64 * 1024))
for i, f in enumerate(small):
    if i % 13 == 0 and os.path.exists(f):
        with open(f, "wb") as fh:
            fh.write(rng.randbytes(os.path.getsize(f) if os.path.exists(f) else 4096))
new = os.path.join(root, "day2")
os.makedirs(new, exist_ok=True)
for i in range(50):
    with open(os.path.join(new, f"new{i:03}.bin"), "wb") as fh:
        fh.write(rng.randbytes(1 << 20))

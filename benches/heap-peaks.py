#!/usr/bin/env python3
"""Where a heaptrack recording's peak heap is, by the innermost frames of this project (or
SQLite, zstd, tungstenite) in each allocation's stack.

Usage: benches/heap-peaks.py FILE.zst [DEPTH]   (needs heaptrack_print; DEPTH frames, default 2)
"""
import collections, re, subprocess, sys, tempfile

OURS = re.compile(r"tamizdat|rusqlite|sqlite3|zstd|tungstenite")
rec, depth = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
with tempfile.NamedTemporaryFile(suffix=".fg") as fg:
    subprocess.run(["heaptrack_print", "-f", rec, "--print-flamegraph", fg.name,
                    "--flamegraph-cost-type", "peak"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    agg = collections.Counter()
    for line in open(fg.name):
        stack, n = line.rsplit(" ", 1)
        key = []
        for frame in reversed(stack.split(";")):
            if OURS.search(frame):
                key.append(re.sub(r"::h[0-9a-f]{16}", "", frame)[:100])
                if len(key) >= depth:
                    break
        agg[" <- ".join(key) or "other"] += int(n)
print(f"peak heap {sum(agg.values()) / 1e6:.2f} MB")
for k, v in agg.most_common(15):
    print(f"{v / 1e6:7.2f} MB  {k}")

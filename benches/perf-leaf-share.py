#!/usr/bin/env python3
"""Share of a code path's CPU samples spent in leaf functions matching a pattern.

Usage: benches/perf-leaf-share.py SCRIPT.txt --under FRAME [--not FRAME ...] [--leaf REGEX]
SCRIPT.txt is `perf script -F comm,tid,ip,sym` of a `perf record -g --call-graph dwarf` run.
Counts the samples with a frame containing --under and none containing a --not, and of those
the ones whose innermost frame matches --leaf (default: glibc's malloc and free internals).

How run 13 found malloc and free at 28% of a publish's rendering (BENCHMARKS.md):
  perf record -F 2000 -g --call-graph dwarf,16384 -o /tmp/p.data \\
      target/release/examples/publish_loop STATE OUT 30
  perf script -i /tmp/p.data -F comm,tid,ip,sym > /tmp/p.txt
  benches/perf-leaf-share.py /tmp/p.txt --under render_keys \\
      --not Batch::commit --not DirSync::finish --not Output::stage"""
import argparse, re

ap = argparse.ArgumentParser()
ap.add_argument("script")
ap.add_argument("--under", required=True)
ap.add_argument("--not", dest="exclude", action="append", default=[])
ap.add_argument("--leaf", default=r"malloc|free|unlink_chunk|tcache|consolidate|realloc|_int_")
a = ap.parse_args()
leaf = re.compile(a.leaf)

samples, cur = [], []
for line in open(a.script, errors="replace"):
    line = line.rstrip("\n")
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = []
    elif line[0] in " \t":
        parts = line.split(None, 1)
        cur.append(parts[1] if len(parts) > 1 else "?")
    else:
        cur = []
if cur:
    samples.append(cur)

chosen = [s for s in samples
          if any(a.under in f for f in s) and not any(x in f for f in s for x in a.exclude)]
hits = sum(1 for s in chosen if leaf.search(s[0]))
share = 100.0 * hits / len(chosen) if chosen else 0.0
print(f"{len(samples)} samples; {len(chosen)} under {a.under!r}; "
      f"{hits} ({share:.0f}%) with a leaf matching {a.leaf!r}")

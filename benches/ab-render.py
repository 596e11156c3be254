#!/usr/bin/env python3
"""A/B of the producer's full rebuild: `render --all` (with the precompressed variants) of the
same store by each binary directory's `tamizdat-producer` in turn, each into a fresh output
directory, and Hugo on the same articles in the same rounds. Prints each wall time and peak
RSS, then the medians.

Usage: benches/ab-render.py ROUNDS WORK BINDIR [BINDIR...]
  WORK/state is a seeded store and WORK/hugo the same articles as a Hugo site, as the
  producer's bench leaves them: `cargo bench -p tamizdat-producer --bench publish -- --dir
  WORK --publishes 20 --hugo`. Outputs go to WORK/ab-*, left in place (removing 491k files
  right before a timed run slows ext4's file creation for minutes: benches/README.md)."""
import os, subprocess, sys, time
rounds, W, dirs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
res = {x: [] for x in dirs + ["hugo"]}
k = int(time.time())
def timed(cmd, cwd=None):
    subprocess.run(["sync"]); time.sleep(3)
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.time() - t0
    if status != 0:
        sys.exit(f"{cmd[0]} failed: {err[-2000:].decode(errors='replace')}")
    return dt, f"{ru.ru_maxrss / 1024:.0f} MiB"
for r in range(rounds):
    for x in dirs + ["hugo"]:
        k += 1
        if x == "hugo":
            dt, rss = timed(["hugo", "--quiet", "-d", f"{W}/ab-hugo-{k}"], cwd=f"{W}/hugo")
        else:
            dt, rss = timed([f"{x}/tamizdat-producer", "render", "--all", "--out", f"{W}/ab-{k}",
                             "--state", f"{W}/state"])
        res[x].append(dt)
        print(f"{x} round {r + 1}: {dt:.1f} s, peak RSS {rss}", flush=True)
for x, v in res.items():
    print(x, " ".join(f"{t:.1f}" for t in v), "median", f"{sorted(v)[len(v) // 2]:.1f}")

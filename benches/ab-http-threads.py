#!/usr/bin/env python3
"""A/B of the mirror's HTTP thread count, with nginx (2 workers, sendfile) as the anchor in the
same run: one distributor over WORK/site and one mirror synced from it; then, ROUNDS times,
the mirror restarted with each `--http-threads N` in turn and nginx, each loaded with
`wrk -t2 -c64 -d5s --latency` (after a 1 s warm-up) on the harness's three requests: the
article page nearest 10 KB, a mix of 1,000 article pages, a 5 MB file. Prints every run, then
the median req/s and p99 of each server and request.

Usage: benches/ab-http-threads.py ROUNDS WORK N[,FLAG...] [N[,FLAG...]...]
  each variant is a thread count and extra `tamizdat-mirror run` flags, e.g. `1 1,--no-sendfile`
  (`env:NAME=VALUE` sets a variable in the mirror's environment instead, and `bin:DIR` runs
  the mirror binary in DIR, for an A/B of two builds);
  WORK/site is the tree (e.g. `tamizdat-bench gen WORK/site --articles 10000`); the
  mirror's root and state stay under WORK. BIN (default target/release) holds the binaries.
  Needs nginx and wrk (benches/install-anchors.sh) and ports 7410-7413 free."""
import os, random, subprocess, sys, time
from loopback import (MIRROR_PORT, NGINX_PORT, Procs, enroll, median as med, mix_script, small_page,
                      start_distributor, start_nginx, synced, wait_for, wrk_figures)

rounds, W, counts = int(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3:]
B = os.environ.get("BIN", "target/release")
site = f"{W}/site"


def wrk(port, path, script=None):
    base = ["wrk", "-t2", "-c64"] + (["-s", script] if script else [])
    url = f"http://127.0.0.1:{port}{path}"
    subprocess.run(base + ["-d1s", url], capture_output=True, check=True)
    out = subprocess.run(base + ["-d5s", "--latency", url], capture_output=True, text=True, check=True).stdout
    return wrk_figures(out)


big = f"{site}/media/bench-5mb.bin"
if not os.path.exists(big):
    os.makedirs(os.path.dirname(big), exist_ok=True)
    with open(big + ".tmp", "wb") as f:
        f.write(random.Random(5).randbytes(5 << 20))
    os.rename(big + ".tmp", big)
lua, _ = mix_script(W)
cases = [("one page", small_page(W), None), ("1,000-page mix", "/", lua), ("5 MB file", "/media/bench-5mb.bin", None)]

res = {}
with Procs(W) as procs:
    st = start_distributor(procs, B, W)
    name_of_mirror = f"m{int(time.time())}"
    tok = enroll(B, st, name_of_mirror)
    start_nginx(procs, W)
    for r in range(rounds):
        for n in counts + ["nginx"]:
            if n == "nginx":
                port, m = NGINX_PORT, None
            else:
                port = MIRROR_PORT
                args = n.split(",")
                env = dict(os.environ, **dict(a[4:].split("=", 1) for a in args if a.startswith("env:")))
                mbin = ([a[4:] for a in args if a.startswith("bin:")] + [B])[0]
                args = [a for a in args if not a.startswith(("env:", "bin:"))]
                m = procs.spawn("mirror", [f"{mbin}/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/root",
                                           "--state", f"{W}/state", "--listen", f"127.0.0.1:{port}",
                                           "--http-threads"] + args, env=env)
                wait_for(f"http://127.0.0.1:{port}/.well-known/tamizdat/health")
                synced(name_of_mirror)
            name = "nginx (2 workers)" if m is None else f"tamizdat --http-threads {n.replace(',', ' ')}"
            for case, path, script in cases:
                rps, p99 = wrk(port, path, script)
                res.setdefault((case, name), []).append((rps, p99))
                print(f"round {r + 1} {case:15} {name:26} {rps:10.0f} req/s  p99 {p99:7.2f} ms", flush=True)
            if m is not None:
                procs.stop(m)

print(f"\n| request | server | req/s (median of {rounds}) | p99 ms (median of {rounds}) |\n|---|---|---|---|")
for (case, name), v in res.items():
    print(f"| {case} | {name} | {med([x[0] for x in v]):.0f} | {med([x[1] for x in v]):.2f} |")

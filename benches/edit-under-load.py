#!/usr/bin/env python3
"""How long an edit takes to be served by a mirror that is busy serving: the trade of
`--http-threads` on a small machine. One distributor over WORK/site and one mirror per
variant (its extra `tamizdat-mirror run` flags), turn about, ROUNDS times. For each, while
`wrk -t2 -c64` loads the mirror with the harness's 1,000-page mix, EDITS article pages are
rewritten on the origin (temp file, then rename), 50 ms apart, and each is timed from its
rename until the mirror serves the new bytes (polled over one keep-alive connection, as fast
as Python can on the loaded cores). Prints each round, then per variant the medians over
rounds of wrk's req/s and of the edits' p50 and p90.

Usage: benches/edit-under-load.py ROUNDS WORK VARIANT [VARIANT...]
  a VARIANT is comma-separated mirror flags, e.g. `--http-threads,1` `--http-threads,2`;
  WORK/site from `tamizdat-bench gen WORK/site --articles 10000`. BIN (default
  target/release) holds the binaries. Needs wrk and ports 7410-7413 free."""
import http.client, os, random, subprocess, sys, time
from loopback import (MIRROR_PORT, Procs, articles, enroll, median as med, mix_script, start_distributor, synced,
                      wait_for, wrk_figures)

rounds, W, variants = int(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3:]
B = os.environ.get("BIN", "target/release")
EDITS = int(os.environ.get("EDITS", "40"))
lua, _ = mix_script(W)
pages = articles(W)
rng = random.Random(7)


def served(conn, path, body):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.read() == body


def edits(n):
    """`n` edits on the origin; each one's ms from rename to served by the mirror."""
    conn = http.client.HTTPConnection("127.0.0.1", MIRROR_PORT, timeout=5)
    out = []
    for k in range(n):
        path = rng.choice(pages)
        dst = f"{W}/site{path}"
        # A new version of the same size, so the tree (and the mix's bytes) stay as they were.
        old = open(dst, "rb").read()
        mark = f"<!-- edit {k} at {time.time_ns()} -->".encode()
        body = mark + old[len(mark):]
        tmp = os.path.join(os.path.dirname(dst), f".tmp-edit-{k}")
        with open(tmp, "wb") as f:
            f.write(body)
        t0 = time.perf_counter()
        os.rename(tmp, dst)
        while not served(conn, path, body):
            if time.perf_counter() - t0 > 5:
                raise SystemExit(f"edit of {path} not served in 5 s")
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return out


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


res = {}
with Procs(W) as procs:
    st = start_distributor(procs, B, W)
    name = f"e{int(time.time())}"
    tok = enroll(B, st, name)
    for r in range(rounds):
        for v in variants:
            args = [a for a in v.split(",") if a]
            m = procs.spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/eroot",
                                       "--state", f"{W}/estate", "--listen", f"127.0.0.1:{MIRROR_PORT}"] + args)
            wait_for(f"http://127.0.0.1:{MIRROR_PORT}/.well-known/tamizdat/health")
            synced(name)
            edits(3)  # warm-up, not counted
            dur = 2 + EDITS * 0.06
            w = subprocess.Popen(["wrk", "-t2", "-c64", f"-d{dur:.0f}s", "--latency", "-s", lua, f"http://127.0.0.1:{MIRROR_PORT}/"],
                                 stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            lat = edits(EDITS)
            rps = wrk_figures(w.communicate()[0])[0]
            res.setdefault(v, []).append((rps, pct(lat, 0.5), pct(lat, 0.9), max(lat)))
            print(f"round {r + 1} {v:20} wrk {rps:9.0f} req/s  edit served p50 {pct(lat, 0.5):6.2f}  "
                  f"p90 {pct(lat, 0.9):6.2f}  max {max(lat):6.2f} ms", flush=True)
            procs.stop(m)

print(f"\n| mirror flags | wrk req/s | edit served p50 ms | p90 ms | max ms (medians of {rounds} rounds) |\n|---|---|---|---|---|")
for v, x in res.items():
    print(f"| `{v.replace(',', ' ')}` | {med([a[0] for a in x]):.0f} | {med([a[1] for a in x]):.2f} | "
          f"{med([a[2] for a in x]):.2f} | {med([a[3] for a in x]):.2f} |")

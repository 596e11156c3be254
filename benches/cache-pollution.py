#!/usr/bin/env python3
"""Does a hot cache that other pages went through slow the 1,000-page mix? One distributor over
WORK/site and one new mirror (binaries from BINDIR); then `wrk -t2 -c64 -d5s` on the harness's
1,000-page mix (after a 1 s warm-up) three times: on the fresh mirror, after N_OTHER other
article pages were fetched three times each (as the harness's edit and burst checks, a crawler
or a publish's freshness checks do), and once more. Prints req/s, p99 and the mirror's hot-cache
hits and misses during each measured run.

Usage: benches/cache-pollution.py WORK BINDIR N_OTHER   (e.g. `/work/h10k target/release 2500`;
WORK/site from `tamizdat-bench gen WORK/site --articles 10000`). Needs wrk and ports 7410-7412
and 7419 free."""

import http.client, random, re, subprocess, sys, time
from loopback import MIRROR_PORT, Procs, enroll, get, mix_script, start_distributor, synced, articles, wrk_figures

W, B, nother = sys.argv[1], sys.argv[2], int(sys.argv[3])
URL = f"http://127.0.0.1:{MIRROR_PORT}/"


def metrics():
    t = get("http://127.0.0.1:7419/metrics").read().decode()
    return {k: float(v) for k, v in re.findall(r"^(\w*http_hot_cache_\w+)\s+([\d.e+]+)$", t, re.M)}


def wrk(script):
    base = ["wrk", "-t2", "-c64", "-s", script]
    subprocess.run(base + ["-d1s", URL], capture_output=True, check=True)
    m0 = metrics()
    out = subprocess.run(base + ["-d5s", "--latency", URL], capture_output=True, text=True, check=True).stdout
    m1 = metrics()
    rps, p99 = wrk_figures(out)
    return round(rps), f"p99 {p99:.2f} ms", {k: m1[k] - m0[k] for k in m1}


lua, mix = mix_script(W)
chosen = set(mix)
others = [a for a in articles(W) if a not in chosen]
random.shuffle(others)
others = others[:nother]
with Procs(W) as procs:
    st = start_distributor(procs, B, W)
    name = f"p{int(time.time())}"
    procs.spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", enroll(B, st, name), "--root", f"{W}/proot-{name}",
                           "--state", f"{W}/pstate-{name}", "--listen", f"127.0.0.1:{MIRROR_PORT}",
                           "--metrics", "127.0.0.1:7419"])
    synced(name)
    time.sleep(1)
    print("fresh   ", wrk(lua), flush=True)
    c = http.client.HTTPConnection("127.0.0.1", MIRROR_PORT)
    for _ in range(3):
        for p in others:
            c.request("GET", p)
            c.getresponse().read()
    print("polluted", wrk(lua), flush=True)
    print("again   ", wrk(lua), flush=True)

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
import glob, json, os, random, re, signal, subprocess, sys, time, urllib.request, http.client
W, B, nother = sys.argv[1], sys.argv[2], int(sys.argv[3])
site = f"{W}/site"; procs = []
def spawn(name, args):
    p = subprocess.Popen(args, stdout=open(f"{W}/{name}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p); return p
def get(url): return urllib.request.urlopen(url, timeout=5)
def metrics():
    t = get("http://127.0.0.1:7419/metrics").read().decode()
    return {k: float(v) for k, v in re.findall(r"^(\w*http_hot_cache_\w+)\s+([\d.e+]+)$", t, re.M)}
def wrk(script):
    base = ["wrk", "-t2", "-c64", "-s", script]
    subprocess.run(base + ["-d1s", "http://127.0.0.1:7412/"], capture_output=True, check=True)
    m0 = metrics()
    out = subprocess.run(base + ["-d5s", "--latency", "http://127.0.0.1:7412/"], capture_output=True, text=True, check=True).stdout
    m1 = metrics()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return rps, p99, {k: m1[k] - m0[k] for k in m1}
articles = sorted(glob.glob(f"{site}/20*/*/*/index.html"))
random.seed(42)
mix = [a[len(site):] for a in random.sample(articles, 1000)]
others = [a[len(site):] for a in articles if a[len(site):] not in set(mix)]
random.shuffle(others); others = others[:nother]
lua = f"{W}/mix.lua"
open(lua, "w").write("paths = {\n" + "".join(f'"{p}",\n' for p in mix) + "}\nmath.randomseed(42)\n"
        "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n")
try:
    st = f"{W}/dist-state"
    spawn("dist", [f"{B}/tamizdat-distributor", "serve", "--root", site, "--state", st, "--listen", "127.0.0.1:7410",
                   "--admin", "127.0.0.1:7411", "--public-url", "ws://127.0.0.1:7410"])
    for _ in range(600):
        try: get("http://127.0.0.1:7411/v1/status"); break
        except Exception: time.sleep(0.1)
    name = f"p{int(time.time())}"
    tok = subprocess.check_output([f"{B}/tamizdat-distributor", "mirror", "add", name, "--state", st], text=True).split()[-1]
    spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/proot-{name}", "--state", f"{W}/pstate-{name}",
                     "--listen", "127.0.0.1:7412", "--metrics", "127.0.0.1:7419"])
    for _ in range(1200):
        try:
            s = json.load(get("http://127.0.0.1:7411/v1/status"))
            m = [q for q in s["mirrors"] if q["name"] == name]
            if s["head_seq"] > 0 and m and m[0].get("acked_seq") == s["head_seq"]: break
        except Exception: pass
        time.sleep(0.1)
    time.sleep(1)
    print("fresh   ", wrk(lua), flush=True)
    c = http.client.HTTPConnection("127.0.0.1", 7412)
    for rep in range(3):
        for p in others:
            c.request("GET", p); c.getresponse().read()
    print("polluted", wrk(lua), flush=True)
    print("again   ", wrk(lua), flush=True)
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()

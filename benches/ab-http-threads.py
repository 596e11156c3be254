#!/usr/bin/env python3
"""A/B of the mirror's HTTP thread count, with nginx (2 workers, sendfile) as the anchor in the
same run: one distributor over WORK/site and one mirror synced from it; then, ROUNDS times,
the mirror restarted with each `--http-threads N` in turn and nginx, each loaded with
`wrk -t2 -c64 -d5s --latency` (after a 1 s warm-up) on the harness's three requests: the
article page nearest 10 KB, a mix of 1,000 article pages, a 5 MB file. Prints every run, then
the median req/s and p99 of each server and request.

Usage: benches/ab-http-threads.py ROUNDS WORK N[,FLAG...] [N[,FLAG...]...]
  each variant is a thread count and extra `tamizdat-mirror run` flags, e.g. `1 1,--no-sendfile`
  (`env:NAME=VALUE` sets a variable in the mirror's environment instead);
  WORK/site is the tree (e.g. `tamizdat-bench gen WORK/site --articles 10000`); the
  mirror's root and state stay under WORK. BIN (default target/release) holds the binaries.
  Needs nginx and wrk (benches/install-anchors.sh) and ports 7410-7413 free."""
import glob, json, os, random, re, signal, subprocess, sys, time, urllib.request

rounds, W, counts = int(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3:]
B = os.environ.get("BIN", "target/release")
site = f"{W}/site"
procs = []


def spawn(name, args):
    log = open(f"{W}/{name}.log", "w")
    env = dict(os.environ, **dict(a[4:].split("=", 1) for a in args if a.startswith("env:")))
    args = [a for a in args if not a.startswith("env:")]
    p = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, env=env)
    procs.append(p)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    procs.remove(p)


def get(url):
    return urllib.request.urlopen(url, timeout=5)


def wait_for(url, secs=120):
    for _ in range(int(secs / 0.1)):
        try:
            if get(url).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not answer 200 in {secs} s")


def synced(mirror, secs=600):
    """Waits until the distributor has indexed the tree and `mirror` has acked its head."""
    for _ in range(int(secs / 0.1)):
        try:
            s = json.load(get("http://127.0.0.1:7411/v1/status"))
            m = [q for q in s["mirrors"] if q["name"] == mirror]
            if s["head_seq"] > 0 and m and m[0].get("acked_seq") == s["head_seq"]:
                return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{mirror} did not catch up in {secs} s")


def wrk(port, path, script=None):
    base = ["wrk", "-t2", "-c64"] + (["-s", script] if script else [])
    url = f"http://127.0.0.1:{port}{path}"
    subprocess.run(base + ["-d1s", url], capture_output=True, check=True)
    out = subprocess.run(base + ["-d5s", "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    v, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    return rps, float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


big = f"{site}/media/bench-5mb.bin"
if not os.path.exists(big):
    os.makedirs(os.path.dirname(big), exist_ok=True)
    with open(big + ".tmp", "wb") as f:
        f.write(random.Random(5).randbytes(5 << 20))
    os.rename(big + ".tmp", big)
articles = sorted(glob.glob(f"{site}/20*/*/*/index.html"))
small = min(articles, key=lambda a: abs(os.path.getsize(a) - 10240))[len(site):]
random.seed(42)
mix = [a[len(site):] for a in random.sample(articles, min(1000, len(articles)))]
lua = f"{W}/mix.lua"
with open(lua, "w") as f:
    f.write("paths = {\n" + "".join(f'"{p}",\n' for p in mix) + "}\nmath.randomseed(42)\n"
            "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n")
cases = [("one page", small, None), ("1,000-page mix", "/", lua), ("5 MB file", "/media/bench-5mb.bin", None)]

os.makedirs(f"{W}/nginx", exist_ok=True)
with open(f"{W}/nginx/nginx.conf", "w") as f:
    f.write(f"""worker_processes 2; daemon off; user root; pid {W}/nginx/nginx.pid;
error_log {W}/nginx/error.log; events {{ worker_connections 1024; }}
http {{ include /etc/nginx/mime.types; default_type application/octet-stream; sendfile on;
tcp_nopush on; access_log off; keepalive_requests 1000000; client_body_temp_path {W}/nginx;
proxy_temp_path {W}/nginx; fastcgi_temp_path {W}/nginx; uwsgi_temp_path {W}/nginx;
scgi_temp_path {W}/nginx; server {{ listen 127.0.0.1:7413; root {site}; }} }}
""")

res = {}
try:
    st = f"{W}/dist-state"
    spawn("dist", [f"{B}/tamizdat-distributor", "serve", "--root", site, "--state", st,
                   "--listen", "127.0.0.1:7410", "--admin", "127.0.0.1:7411",
                   "--public-url", "ws://127.0.0.1:7410"])
    wait_for("http://127.0.0.1:7411/v1/status")
    name_of_mirror = f"m{int(time.time())}"
    tok = subprocess.check_output([f"{B}/tamizdat-distributor", "mirror", "add", name_of_mirror,
                                   "--state", st], text=True).split()[-1]
    spawn("nginx", ["nginx", "-c", f"{W}/nginx/nginx.conf", "-e", f"{W}/nginx/error.log"])
    for r in range(rounds):
        for n in counts + ["nginx"]:
            if n == "nginx":
                port, m = 7413, None
            else:
                port = 7412
                m = spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/root",
                                     "--state", f"{W}/state", "--listen", f"127.0.0.1:{port}",
                                     "--http-threads"] + n.split(","))
                wait_for(f"http://127.0.0.1:{port}/.well-known/tamizdat/health")
                synced(name_of_mirror)
            name = "nginx (2 workers)" if m is None else f"tamizdat --http-threads {n.replace(',', ' ')}"
            for case, path, script in cases:
                rps, p99 = wrk(port, path, script)
                res.setdefault((case, name), []).append((rps, p99))
                print(f"round {r + 1} {case:15} {name:26} {rps:10.0f} req/s  p99 {p99:7.2f} ms", flush=True)
            if m is not None:
                stop(m)
finally:
    for p in list(procs):
        stop(p)

med = lambda v: sorted(v)[len(v) // 2]
print(f"\n| request | server | req/s (median of {rounds}) | p99 ms (median of {rounds}) |\n|---|---|---|---|")
for (case, name), v in res.items():
    print(f"| {case} | {name} | {med([x[0] for x in v]):.0f} | {med([x[1] for x in v]):.2f} |")

#!/usr/bin/env python3
"""Where does wrk's latency tail come from? One distributor over WORK/site, one new mirror
(binaries from BINDIR, extra `tamizdat-mirror run` flags after it) and nginx (2 workers,
sendfile) on the same tree; then, two rounds turn about, `wrk -t2 -c64 -d5s --latency` on the
article page nearest 10 KB, reading each thread's /proc/.../schedstat over 4 s of it: time on
a CPU, time waiting on the run queue, and how many times it ran. Prints wrk's percentiles and
those three figures for the server's busy threads and wrk's two.

Usage: benches/sched-wait.py WORK BINDIR [MIRROR FLAG...]   (WORK/site from `tamizdat-bench
gen WORK/site --articles 10000`). Needs wrk and nginx and ports 7410-7413 free."""
import glob, json, os, random, re, signal, subprocess, sys, time, urllib.request
W, B = sys.argv[1], sys.argv[2]
extra = sys.argv[3:]
site = f"{W}/site"; procs = []
def spawn(name, args):
    p = subprocess.Popen(args, stdout=open(f"{W}/{name}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p); return p
def get(url): return urllib.request.urlopen(url, timeout=5)
def sched(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            a, b, c = map(int, open(f"/proc/{pid}/task/{tid}/schedstat").read().split())
            out[tid] = (comm, a, b, c)
        except OSError: pass
    return out
def delta(s0, s1):
    r = []
    for tid, (comm, a, b, c) in s1.items():
        if tid in s0:
            _, a0, b0, c0 = s0[tid]
            if a - a0 > 1e7: r.append((comm, round((a-a0)/1e6), round((b-b0)/1e6), c-c0))
    return r
articles = sorted(glob.glob(f"{site}/20*/*/*/index.html"))
small = min(articles, key=lambda a: abs(os.path.getsize(a) - 10240))[len(site):]
os.makedirs(f"{W}/nginx", exist_ok=True)
open(f"{W}/nginx/nginx.conf","w").write(f"""worker_processes 2; daemon off; user root; pid {W}/nginx/nginx.pid;
error_log {W}/nginx/error.log; events {{ worker_connections 1024; }}
http {{ include /etc/nginx/mime.types; default_type application/octet-stream; sendfile on;
tcp_nopush on; access_log off; keepalive_requests 1000000; client_body_temp_path {W}/nginx;
proxy_temp_path {W}/nginx; fastcgi_temp_path {W}/nginx; uwsgi_temp_path {W}/nginx;
scgi_temp_path {W}/nginx; server {{ listen 127.0.0.1:7413; root {site}; }} }}
""")
try:
    st = f"{W}/dist-state"
    spawn("dist", [f"{B}/tamizdat-distributor", "serve", "--root", site, "--state", st, "--listen", "127.0.0.1:7410",
                   "--admin", "127.0.0.1:7411", "--public-url", "ws://127.0.0.1:7410"])
    for _ in range(600):
        try: get("http://127.0.0.1:7411/v1/status"); break
        except Exception: time.sleep(0.1)
    name = f"q{int(time.time())}"
    tok = subprocess.check_output([f"{B}/tamizdat-distributor", "mirror", "add", name, "--state", st], text=True).split()[-1]
    m = spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/qroot", "--state", f"{W}/qstate-{name}",
                     "--listen", "127.0.0.1:7412"] + extra)
    ng = spawn("nginx", ["nginx", "-c", f"{W}/nginx/nginx.conf", "-e", f"{W}/nginx/error.log"])
    for _ in range(1200):
        try:
            s = json.load(get("http://127.0.0.1:7411/v1/status"))
            mm = [q for q in s["mirrors"] if q["name"] == name]
            if s["head_seq"] > 0 and mm and mm[0].get("acked_seq") == s["head_seq"]: break
        except Exception: pass
        time.sleep(0.1)
    time.sleep(1)
    ngpids = [int(x) for x in subprocess.check_output(["pgrep", "-P", str(ng.pid)], text=True).split()]
    for rnd in range(2):
        for label, port, pids in [("tamizdat", 7412, [m.pid]), ("nginx", 7413, ngpids)]:
            url = f"http://127.0.0.1:{port}{small}"
            subprocess.run(["wrk", "-t2", "-c64", "-d1s", url], capture_output=True)
            w = subprocess.Popen(["wrk", "-t2", "-c64", "-d5s", "--latency", url], stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            s0 = {p: sched(p) for p in pids + [w.pid]}
            time.sleep(4)
            s1 = {p: sched(p) for p in pids + [w.pid]}
            out = w.communicate()[0]
            lat = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
            print(label, rps, "lat", lat)
            for p in pids + [w.pid]:
                print("   ", "wrk" if p == w.pid else p, "(comm, on-cpu ms, runqueue-wait ms, slices):", delta(s0[p], s1[p]))
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()

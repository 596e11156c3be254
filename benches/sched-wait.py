#!/usr/bin/env python3
"""Where does wrk's latency tail come from? One distributor over WORK/site, one new mirror
(binaries from BINDIR, extra `tamizdat-mirror run` flags after it) and nginx (2 workers,
sendfile) on the same tree; then, two rounds turn about, `wrk -t2 -c64 -d5s --latency` on the
article page nearest 10 KB, reading each thread's /proc/.../schedstat over 4 s of it: time on
a CPU, time waiting on the run queue, and how many times it ran. Prints wrk's percentiles and
those three figures for the server's busy threads and wrk's two.

With SLICE_US=N in the environment, the mirror's HTTP threads ask the kernel for an N µs
time slice first (`sched-slice.py`).

Usage: benches/sched-wait.py WORK BINDIR [MIRROR FLAG...]   (WORK/site from `tamizdat-bench
gen WORK/site --articles 10000`). Needs wrk and nginx and ports 7410-7413 free."""

import os, re, subprocess, sys, time
from loopback import MIRROR_PORT, NGINX_PORT, Procs, enroll, small_page, start_distributor, start_nginx, synced

W, B, extra = sys.argv[1], sys.argv[2], sys.argv[3:]


def sched(pid):
    """Each thread of `pid`: (name, ns on a CPU, ns waiting on the run queue, times it ran)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            a, b, c = map(int, open(f"/proc/{pid}/task/{tid}/schedstat").read().split())
            out[tid] = (comm, a, b, c)
        except OSError:
            pass
    return out


def delta(s0, s1):
    """The threads that ran over 10 ms between the two readings: (name, ms on a CPU, ms
    waiting, times it ran)."""
    r = []
    for tid, (comm, a, b, c) in s1.items():
        if tid in s0:
            _, a0, b0, c0 = s0[tid]
            if a - a0 > 1e7:
                r.append((comm, round((a - a0) / 1e6), round((b - b0) / 1e6), c - c0))
    return r


small = small_page(W)
with Procs(W) as procs:
    st = start_distributor(procs, B, W)
    name = f"q{int(time.time())}"
    m = procs.spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", enroll(B, st, name), "--root", f"{W}/qroot",
                               "--state", f"{W}/qstate-{name}", "--listen", f"127.0.0.1:{MIRROR_PORT}"] + extra)
    ng = start_nginx(procs, W)
    synced(name)
    time.sleep(1)
    if os.environ.get("SLICE_US"):
        here = os.path.dirname(os.path.abspath(__file__))
        print(subprocess.run(["python3", f"{here}/sched-slice.py", str(m.pid), os.environ["SLICE_US"]],
                             capture_output=True, text=True).stdout.strip())
    workers = [int(x) for x in subprocess.check_output(["pgrep", "-P", str(ng.pid)], text=True).split()]
    for _ in range(2):
        for label, port, pids in [("tamizdat", MIRROR_PORT, [m.pid]), ("nginx", NGINX_PORT, workers)]:
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

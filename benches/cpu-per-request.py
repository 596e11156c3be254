#!/usr/bin/env python3
"""Where a request's CPU goes: one distributor over WORK/site and one mirror (extra
`tamizdat-mirror run` flags after BINDIR), then, ROUNDS times, `wrk -t2 -c64 -d5s` on the
article page nearest 10 KB, the article page nearest 17 KB (the 1,000-page mix's average) and
the mix itself. For each it prints req/s, p99, and the CPU the mirror and wrk used per request
(user + system from /proc/PID/stat over the run). A single page stays in the CPU's caches; the
mix copies 1,000 different bodies, so the 17 KB page against the mix tells size from spread.

Usage: benches/cpu-per-request.py ROUNDS WORK BINDIR [MIRROR FLAG...]   (WORK/site from
`tamizdat-bench gen WORK/site --articles 10000`). Needs wrk and ports 7410-7412 free."""
import os, subprocess, sys, time
from loopback import MIRROR_PORT, Procs, articles, enroll, mix_script, small_page, start_distributor, synced, wrk_figures

rounds, W, B, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def run(mirror_pid, path, script=None):
    base = ["wrk", "-t2", "-c64", "--latency"] + (["-s", script] if script else [])
    url = f"http://127.0.0.1:{MIRROR_PORT}{path}"
    subprocess.run(base + ["-d1s", url], capture_output=True, check=True)
    c0 = cpu(mirror_pid)
    w = subprocess.Popen(base + ["-d5s", url], stdout=subprocess.PIPE, text=True)
    time.sleep(4.9)
    wrk_cpu = cpu(w.pid)  # read while wrk still runs: a reaped process has no /proc entry
    out = w.communicate()[0]
    rps, p99 = wrk_figures(out)
    n = rps * 5
    return rps, p99, (cpu(mirror_pid) - c0) / n * 1e6, wrk_cpu / n * 1e6


site = f"{W}/site"
lua, _ = mix_script(W)
near17 = min(articles(W), key=lambda a: abs(os.path.getsize(f"{site}{a}") - 17300))
cases = [("10 KB page", small_page(W), None), ("17 KB page", near17, None), ("1,000-page mix", "/", lua)]
with Procs(W) as procs:
    st = start_distributor(procs, B, W)
    name = f"c{int(time.time())}"
    m = procs.spawn("mirror", [f"{B}/tamizdat-mirror", "run", "--join", enroll(B, st, name), "--root", f"{W}/croot",
                               "--state", f"{W}/cstate-{name}", "--listen", f"127.0.0.1:{MIRROR_PORT}"] + extra)
    synced(name)
    time.sleep(1)
    for r in range(rounds):
        for label, path, script in cases:
            rps, p99, mirror_us, wrk_us = run(m.pid, path, script)
            print(f"round {r + 1} {label:15} {rps:9.0f} req/s  p99 {p99:5.2f} ms  mirror {mirror_us:5.1f} µs/req  "
                  f"wrk {wrk_us:5.1f} µs/req", flush=True)

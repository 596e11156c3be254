#!/usr/bin/env python3
"""A/B of a fresh mirror's full resync: one distributor per binary directory over WORK/site
(the first on ports 7400/7401 with state WORK/dist-state, the next on 7402/7403 with
WORK/dist-state-1, and so on), then, ROUNDS times, one new mirror per binary directory in turn,
each into an empty root and fed by its own build's distributor, timed from its start until
that distributor shows it acked at the head. Prints each time, the CPU the mirror used and the
CPU its distributor used for it, then the medians. A change to either side is compared turn
about; a distributor that has not indexed the tree before does so once, at the start.

Usage: benches/ab-resync.py ROUNDS WORK BINDIR [BINDIR...]
  With EDIT_EVERY_MS=N in the environment, a thread rewrites a random article page of the
  tree (temp file, then rename) every N ms while each resync runs, as a busy newsroom would;
  the resync is done when the mirror has caught up with those edits too.
  WORK/site is the tree (e.g. `tamizdat-bench gen WORK/site --articles 100000 --media 12
  --media-max 52428800`); each mirror's root and state stay under WORK (removing 100k-file
  trees right before a run slows ext4's inode allocation for minutes: see benches/README.md).
  With DIST_ARGS in the environment, the distributor gets those flags too, e.g.
  DIST_ARGS="--resync-compression always" (then never) for the compression A/B behind
  distributor/src/session.rs's `Pace`.
  With COLD=1 in the environment, the site's files are dropped from the page cache
  (POSIX_FADV_DONTNEED on each) right before each side's timed start, as on an origin whose
  site does not fit in memory: each side then reads the tree from the disk.
  A BINDIR of `rsync` times `rsync -a` into a fresh module under WORK/roots instead, plus the
  `sync` after it (its writeback), so the anchor runs in the same conditions, turn about.
Needs ports 7400 and up (two per binary directory) and 7873 free, and inotify watches for
every directory of the tree once per build (`sysctl fs.inotify.max_user_watches`)."""
import json, os, signal, subprocess, sys, time, urllib.request
rounds, W, dirs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
builds = [x for x in dirs if x != "rsync"]
log = open(f"{W}/dist.log", "w")
dists = {}  # build -> (process, status URL, state dir)
for k, x in enumerate(builds):
    st = f"{W}/dist-state" + (f"-{k}" if k else "")
    ws, admin = 7400 + 2 * k, 7401 + 2 * k
    p = subprocess.Popen([x + "/tamizdat-distributor", "serve", "--root", f"{W}/site", "--state", st,
                          "--listen", f"127.0.0.1:{ws}", "--admin", f"127.0.0.1:{admin}",
                          "--public-url", f"ws://127.0.0.1:{ws}"] + os.environ.get("DIST_ARGS", "").split(),
                         stdout=log, stderr=log)
    dists[x] = (p, f"http://127.0.0.1:{admin}/v1/status", st)
def status(x):
    return json.load(urllib.request.urlopen(dists[x][1], timeout=5))
for x in builds:
    for _ in range(3000):
        if dists[x][0].poll() is not None:
            # Each distributor watches every directory of the tree: two over 100k pages
            # needed more inotify watches than vm7's default of 192,540.
            sys.exit(f"the distributor of {x} stopped (see {W}/dist.log; with several builds, "
                     "`sysctl fs.inotify.max_user_watches` may need raising)")
        try:
            status(x); break
        except Exception:
            time.sleep(0.2)
time.sleep(5)
res = {x: [] for x in dirs}
# A `timeout` or Ctrl-C ends the script through `finally`, which stops the mirror of the round
# too: before, SIGTERM left it running (and holding its port and CPU) after the script.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
mirrors = []
def evict_site():
    """Drops the site's pages from the page cache when COLD is set (see the usage)."""
    if not os.environ.get("COLD"):
        return
    for dirpath, _, files in os.walk(f"{W}/site"):
        for fname in files:
            fd = os.open(os.path.join(dirpath, fname), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
edit_every = float(os.environ.get("EDIT_EVERY_MS", "0")) / 1000
if edit_every:
    import glob, random, threading
    edit_pages = glob.glob(f"{W}/site/20*/*/*/index.html")[:5000]
try:
    k = int(time.time())
    for r in range(rounds):
        for x in dirs:
            k += 1
            name = f"m{k}"
            if x == "rsync":
                root = f"{W}/roots/{name}"
                os.makedirs(root)
                conf = f"{W}/rsyncd-{name}.conf"
                open(conf, "w").write(f"use chroot = no\nreverse lookup = no\nuid = root\ngid = root\n"
                                      f"pid file = {W}/rsyncd-{name}.pid\n[t]\npath = {root}\nread only = no\n")
                subprocess.run(["rsync", "--daemon", f"--config={conf}", "--port=7873", "--sockopts=TCP_NODELAY"], check=True)
                subprocess.run(["sync"]); time.sleep(3)
                evict_site()
                t0 = time.time()
                subprocess.run(["rsync", "-a", "--delete", "--sockopts=TCP_NODELAY", f"{W}/site/",
                                "rsync://127.0.0.1:7873/t/"], check=True)
                t1 = time.time()
                subprocess.run(["sync"])
                dt, wb = t1 - t0, time.time() - t1
                os.kill(int(open(f"{W}/rsyncd-{name}.pid").read()), 15)
                time.sleep(0.5)
                res[x].append(dt + wb)
                print(f"rsync {name} {dt:.2f} s + its writeback {wb:.2f} s", flush=True)
                continue
            d, _, st = dists[x]
            tok = subprocess.check_output([x + "/tamizdat-distributor", "mirror", "add", name, "--state", st], text=True).split()[-1]
            subprocess.run(["sync"]); time.sleep(3)
            mlog = open(f"{W}/{name}.log", "w")
            if edit_every:
                stop, edits = threading.Event(), []
                def edit():
                    n = 0
                    while not stop.is_set():
                        p = random.choice(edit_pages)
                        tmp = os.path.join(os.path.dirname(p), f".tmp-edit{n}")
                        with open(tmp, "w") as f:
                            f.write(f"<html>edit {n} at {time.time()}</html>")
                        os.rename(tmp, p)
                        n += 1
                        time.sleep(edit_every)
                    edits.append(n)
                editor = threading.Thread(target=edit)
                editor.start()
            evict_site()
            d_cpu0 = cpu(d.pid)
            t0 = time.time()
            m = subprocess.Popen([x + "/tamizdat-mirror", "run", "--join", tok, "--root", f"{W}/roots/{name}",
                                  "--state", f"{W}/states/{name}", "--listen", "127.0.0.1:0"], stdout=mlog, stderr=mlog)
            mirrors.append(m)
            while True:
                s = status(x)
                mm = [q for q in s["mirrors"] if q["name"] == name]
                if mm and mm[0].get("acked_seq") == s["head_seq"] and mm[0].get("connected"):
                    break
                time.sleep(0.05)
            dt = time.time() - t0
            if edit_every:
                stop.set()
                editor.join()
                print(f"   {edits[0]} edits made during it", flush=True)
            hwm = [l.split()[1] for l in open(f"/proc/{m.pid}/status") if l.startswith("VmHWM")][0]
            print(f"   mirror cpu {cpu(m.pid):.2f} s, peak RSS {int(hwm) / 1024:.1f} MB, "
                  f"distributor cpu for it {cpu(d.pid) - d_cpu0:.2f} s, "
                  f"content sent {mm[0].get('blob_bytes_sent', 0) / 1e6:.0f} MB", flush=True)
            threads = {}
            for tid in os.listdir(f"/proc/{m.pid}/task"):
                try:
                    tstat = open(f"/proc/{m.pid}/task/{tid}/stat").read()
                except OSError:
                    continue
                tname = tstat[tstat.index("(") + 1:tstat.rindex(")")]
                tf = tstat.rsplit(")", 1)[1].split()
                threads[tname] = threads.get(tname, 0) + (int(tf[11]) + int(tf[12])) / os.sysconf("SC_CLK_TCK")
            # (threads that have ended, such as the early publisher, are in the total only)
            print("   live mirror threads: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.01), flush=True)
            m.kill(); m.wait()
            res[x].append(dt)
            print(f"{x} {name} {dt:.2f} s", flush=True)
finally:
    for p in mirrors + [d for d, _, _ in dists.values()]:
        if p.poll() is None:
            p.kill()
            p.wait()
for x, v in res.items():
    print(x, " ".join(f"{t:.2f}" for t in v), "median", sorted(v)[len(v)//2])

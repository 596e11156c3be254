#!/usr/bin/env python3
"""Where a fresh mirror's full resync waits: one round of `ab-resync.py WORK BINDIR` under
`perf record -e sched:sched_switch -g -a`, then, over the mirror's span, the time each thread
of the mirror and of the distributor spent off its core, by thread, state (S sleeping, D
waiting on the disk, R preempted) and the kernel frames it left from.

Usage: benches/offcpu-resync.py WORK BINDIR [TOP]   (TOP lines, default 25; needs perf)
  WORK is as for ab-resync.py (COLD=1 and the rest pass through); the recording goes to
  WORK/sched.data. Used on 2026-12-08 (BENCHMARKS.md, run 36): with the 10k site nominally
  in memory, the distributor's threads waited in `D` under `filemap_read` 176, 135 and 99 ms
  (110-236 waits) in resyncs before the read-ahead of `d121a45`, and 185, 59 and 27 ms (103,
  18 and 9 waits) after it: how much of the site the VM had reclaimed varied between rounds."""
import collections, os, re, subprocess, sys

W, B = sys.argv[1], sys.argv[2]
top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
data = f"{W}/sched.data"
subprocess.run(["perf", "record", "-q", "-e", "sched:sched_switch", "-g", "-a", "-o", data, "--",
                sys.executable, os.path.join(os.path.dirname(__file__), "ab-resync.py"), "1", W, B],
               check=True)
script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,time,trace,ip,sym"],
                        capture_output=True, text=True).stdout

events = []  # (comm, pid, tid, time, trace, kernel frames)
for block in script.split("\n\n"):
    lines = block.strip("\n").split("\n")
    m = re.match(r"\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(.*)", lines[0])
    if m:
        frames = [l.split(None, 1)[1] for l in lines[1:] if len(l.split(None, 1)) == 2]
        events.append((m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)),
                       m.group(5), frames))

mirror = {pid for comm, pid, _, _, _, _ in events if comm == "apply"}
distributor = {pid for comm, pid, _, _, _, _ in events if comm.startswith("tamizdat-distri")}
times = [t for _, pid, _, t, _, _ in events if pid in mirror]
if not times:
    sys.exit("no mirror in the recording")
start, end = min(times), max(times)
print(f"mirror's span {end - start:.3f} s")

SCHED = re.compile(r"(__schedule|schedule|schedule_timeout|schedule_hrtimeout_range|io_schedule"
                   r"|__traceiter|__probestub|0x)")
left, off, count = {}, collections.Counter(), collections.Counter()
# A switch is recorded on the thread that leaves the core (`prev`); it is back when it is `next`.
for comm, pid, tid, t, trace, frames in events:
    m = re.search(r"prev_comm=(.+?) prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)", trace)
    if not m or not start <= t <= end:
        continue
    prev, state, nxt = m.group(1), m.group(3), int(m.group(4))
    side = "mirror" if pid in mirror else "distributor" if pid in distributor else None
    if side and tid == int(m.group(2)):
        why = " < ".join([f for f in frames if not SCHED.match(f)][:4])
        left[tid] = (t, f"{side} {prev}", state, why)
    if nxt in left:
        t0, who, state, why = left.pop(nxt)
        off[(who, state, why)] += t - t0
        count[(who, state, why)] += 1
for (who, state, why), s in off.most_common(top):
    print(f"{s * 1e3:8.1f} ms {count[(who, state, why)]:6d}  {who} {state} {why[:110]}")

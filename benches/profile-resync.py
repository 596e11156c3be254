#!/usr/bin/env python3
"""Where a fresh mirror's full resync spends its CPU, beside rsync's: one round of
`ab-resync.py WORK BINDIR rsync` under `perf record -a`, then, for the span each side ran,
the CPU-seconds of every thread name (`idle` is the cores doing nothing; `kworker` the
kernel's writeback and other work) and the leading functions of the busiest threads.

Usage: benches/profile-resync.py WORK BINDIR [--dwarf]
  --dwarf records call stacks through DWARF (the round runs slower) and adds, per thread,
  the share of its samples spent under each of our functions (inclusive), which names the
  code a kernel function was called from.
  WORK is as for ab-resync.py; the recording goes to WORK/profile.data. Needs perf.
Used on 2026-12-07 for BENCHMARKS.md, run 33 ("What this session's profiles found")."""
import collections, os, re, subprocess, sys

W, B = sys.argv[1], sys.argv[2]
dwarf = "--dwarf" in sys.argv[3:]
HZ = 299
data = f"{W}/profile.data"
stacks = ["--call-graph", "dwarf,16384"] if dwarf else ["-g"]
subprocess.run(["perf", "record", "-q", "-F", str(HZ), "-a", *stacks, "-o", data, "--",
                sys.executable, os.path.join(os.path.dirname(__file__), "ab-resync.py"),
                "1", W, B, "rsync"], check=True)
script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,time,ip,sym"],
                        capture_output=True, text=True).stdout

# Samples: (comm, pid, time, frames leaf first).
samples = []
for block in script.split("\n\n"):
    lines = block.strip("\n").split("\n")
    m = re.match(r"\s*(.+?)\s+(\d+)/\d+\s+([\d.]+):", lines[0]) if lines[0].strip() else None
    if not m:
        continue
    frames = [re.sub(r"\+0x[0-9a-f]+$", "", l.split(None, 1)[1].rsplit(" (", 1)[0])
              for l in lines[1:] if len(l.split(None, 1)) == 2]
    samples.append((m.group(1), int(m.group(2)), float(m.group(3)), frames))

# The mirror is the process with an `apply` thread, the distributor the one whose main thread
# is `tamizdat-distri(butor)`; their threads are named after them, since both have
# `tokio-rt-worker`s and a `checkpoint`.
mirror = {pid for comm, pid, _, _ in samples if comm == "apply"}
distributor = {pid for comm, pid, _, _ in samples if comm.startswith("tamizdat-distri")}
def name(comm, pid):
    if comm.startswith("swapper"):
        return "idle"
    if comm.startswith("kworker"):
        return "kworker"
    return "mirror " + comm if pid in mirror else "distributor " + comm if pid in distributor else comm

# The mirror's span is from its first sample to its last; rsync's is that of its busiest
# process (the client, which lives only for the transfer; the daemon starts seconds before).
def span(pids):
    t = [t for _, pid, t, _ in samples if pid in pids]
    return (min(t), max(t)) if t else None
rsyncs = collections.Counter(pid for comm, pid, _, _ in samples if comm == "rsync")
spans = {"tamizdat": span(mirror), "rsync": span({p for p, _ in rsyncs.most_common(1)})}

for side, s in spans.items():
    if not s:
        continue
    inside = [x for x in samples if s[0] <= x[2] <= s[1]]
    print(f"\n## {side}: {s[1] - s[0]:.2f} s, CPU-seconds by thread (two cores give "
          f"{2 * (s[1] - s[0]):.1f})")
    by_thread = collections.Counter(name(c, p) for c, p, _, _ in inside)
    for t, n in by_thread.most_common(12):
        print(f"  {t:30} {n / HZ:6.2f}")
    for t, n in by_thread.most_common(6):
        if t == "idle" or n < HZ / 4:
            continue
        mine = [f for c, p, _, f in inside if name(c, p) == t]
        leaves = collections.Counter(f[0] if f else "?" for f in mine)
        print(f"  {t}: " + ", ".join(f"{100 * k / n:.1f} % {sym[:48]}" for sym, k in leaves.most_common(6)))
        if dwarf:
            under = collections.Counter()
            for f in mine:
                under.update({x for x in f if "tamizdat" in x})
            print("    under: " + ", ".join(f"{100 * k / n:.1f} % {sym[:60]}"
                                          for sym, k in under.most_common(8)))

#!/usr/bin/env python3
"""Is a fresh resync's staging directory what costs the mirror, against rsync's way of writing
each file as a temp file in its own directory? Makes N page directories `2020/MM/page-i`, then
either (`stage`) writes N files of 20 KB into one staging directory and renames each into its
page directory, or (`indir`) writes each as `.tmp-index.html` in its page directory and renames
it there. Prints the time of the mkdirs, the creates, the renames and the CPU.

Usage: benches/stage-vs-indir.py BASE stage|indir N   (BASE/root-VARIANT must not exist)
Run turn about after a `sync`; on 2026-12-08 (vm7, 10k, four rounds each) the renames took
0.072-0.076 s out of the staging directory against 0.057-0.066 s within a page's directory,
and the creates 0.19-0.35 s against 0.23-0.76 s: no reason to leave the staging directory."""
import os, sys, time
base = sys.argv[1]; variant = sys.argv[2]; n = int(sys.argv[3])
data = os.urandom(20000)
root = f"{base}/root-{variant}"; stage = f"{root}/.stage"
os.makedirs(stage)
dirs = [f"{root}/2020/{i % 12:02d}/page-{i}" for i in range(n)]
t0 = time.perf_counter(); c0 = os.times()
for d in dirs:
    os.makedirs(d, exist_ok=True)
t1 = time.perf_counter()
if variant == "stage":
    sfd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    for i, d in enumerate(dirs):
        fd = os.open(f"h{i:08x}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=sfd)
        os.write(fd, data); os.close(fd)
    tr = time.perf_counter()
    for i, d in enumerate(dirs):
        os.rename(f"h{i:08x}", f"{d}/index.html", src_dir_fd=sfd)
else:
    for i, d in enumerate(dirs):
        fd = os.open(f"{d}/.tmp-index.html", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data); os.close(fd)
    tr = time.perf_counter()
    for i, d in enumerate(dirs):
        os.rename(f"{d}/.tmp-index.html", f"{d}/index.html")
t2 = time.perf_counter(); c1 = os.times()
print(f"{variant}: mkdir {t1-t0:.3f} s, creates {tr-t1:.3f} s, renames {t2-tr:.3f} s, cpu {c1.user+c1.system-c0.user-c0.system:.3f} s")

#!/usr/bin/env python3
"""What freeing a file costs on the file system of DIR (default: the current directory).

Usage: benches/free-cost.py [DIR] [N]
Creates N (default 200) files of 20 KB and flushes them, then times, per file: an unlink; a
rename of a new file over an old one; and the same rename with the old file opened first
(open + rename), its close afterwards timed apart. On ext4 mounted `discard` without a journal
the free waits for a discard, and holding the old file open moves that wait to the close
(mirror/src/fsops.rs `Held`, producer/src/output.rs `DirSync::hold`)."""
import os, sys, tempfile, time

where = sys.argv[1] if len(sys.argv) > 1 else "."
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
with tempfile.TemporaryDirectory(dir=where, prefix="free-cost-") as d:
    def make(prefix, byte):
        for i in range(n):
            with open(f"{d}/{prefix}{i}", "wb") as f:
                f.write(byte * 20000)
    def per_file(t0, t1):
        return (t1 - t0) / n * 1e6
    make("a", b"a"); os.sync()
    t = time.perf_counter()
    for i in range(n):
        os.unlink(f"{d}/a{i}")
    unlink = per_file(t, time.perf_counter())
    make("b", b"b"); make("nb", b"n"); os.sync()
    t = time.perf_counter()
    for i in range(n):
        os.rename(f"{d}/nb{i}", f"{d}/b{i}")
    over = per_file(t, time.perf_counter())
    make("c", b"c"); make("nc", b"n"); os.sync()
    t = time.perf_counter()
    fds = []
    for i in range(n):
        fds.append(os.open(f"{d}/c{i}", os.O_RDONLY))
        os.rename(f"{d}/nc{i}", f"{d}/c{i}")
    held = per_file(t, time.perf_counter())
    t = time.perf_counter()
    for fd in fds:
        os.close(fd)
    close = per_file(t, time.perf_counter())
    print(f"{n} files of 20 KB in {os.path.abspath(where)}: unlink {unlink:.1f} us; "
          f"rename over {over:.1f} us; open + rename over, held {held:.1f} us "
          f"(the close later {close:.1f} us)")

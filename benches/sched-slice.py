#!/usr/bin/env python3
"""Asks the kernel (EEVDF, Linux 6.12 and later) for a shorter time slice for some threads of a
running process: sched_setattr with SCHED_OTHER and sched_runtime = US microseconds, for each
thread whose name starts with one of the prefixes (default `http-`, the mirror's HTTP
threads). Tried for the mirror's small-page p99 (serve/README.md, "How many threads"): it did
not help, so nothing in tamizdat does this.

Usage: benches/sched-slice.py PID US [PREFIX...]   (x86-64: syscall 314)"""
import ctypes, os, struct, sys

libc = ctypes.CDLL(None, use_errno=True)
pid, us = int(sys.argv[1]), int(sys.argv[2])
prefixes = sys.argv[3:] or ["http-"]
for tid in os.listdir(f"/proc/{pid}/task"):
    comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    if not any(comm.startswith(p) for p in prefixes):
        continue
    # struct sched_attr (VER0, 48 bytes): size, policy, flags, nice, priority, runtime,
    # deadline, period.
    attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQ", 48, 0, 0, 0, 0, us * 1000, 0, 0))
    r = libc.syscall(314, int(tid), attr, 0)
    print(comm, tid, "ok" if r == 0 else f"error {ctypes.get_errno()}")

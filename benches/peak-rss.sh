#!/usr/bin/env bash
# Peak RSS of the distributor and of one fresh mirror through its full resync of a tree.
#
# Usage: benches/peak-rss.sh BINDIR SITE WORK
#   BINDIR holds tamizdat-distributor and tamizdat-mirror (e.g. target/release);
#   SITE is the tree (e.g. `tamizdat-bench gen SITE --articles 100000`); WORK is made empty
#   and keeps the logs and each process's VmRSS/VmHWM sampled every 0.5 s (d.rss, m.rss).
#   With DPFX or MPFX set (e.g. MPFX="heaptrack -o /tmp/mir"), the distributor or the mirror
#   runs under that command.
# Prints the distributor's VmHWM once it has indexed the tree, the resync's wall time, and
# both VmHWM at its end. Needs ports 7500-7502 free. Removing the mirror's root afterwards
# slows file creation on this VM's ext4 for minutes (benches/README.md): move it aside.
set -euo pipefail
B=$1 SITE=$2 W=$3
if curl -sf http://127.0.0.1:7501/v1/status >/dev/null; then
    echo "port 7501 answers already: another distributor is running" >&2; exit 1
fi
rm -rf "$W" && mkdir -p "$W"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
find_pid() { # the real process (its command line starts with the binary), not a wrapper such as heaptrack
    local p
    for _ in $(seq 50); do p=$(pgrep -n -f "$1" || true); [ -n "$p" ] && { echo "$p"; return; }; sleep 0.1; done
}
sample() { while kill -0 "$1" 2>/dev/null; do
    echo "$(date +%s.%N | cut -c1-14) $(grep -E 'VmRSS|VmHWM' /proc/"$1"/status 2>/dev/null | awk '{printf "%s %s ", $1, $2}')"
    sleep 0.5; done; }
hwm() { grep VmHWM /proc/"$1"/status | awk '{print $2 " kB"}'; }
${DPFX:-} "$B"/tamizdat-distributor serve --root "$SITE" --state "$W"/ds --listen 127.0.0.1:7500 \
    --admin 127.0.0.1:7501 --public-url ws://127.0.0.1:7500 >"$W"/d.log 2>&1 &
pids+=($!)
D=$(find_pid "^$B/tamizdat-distributor serve --root $SITE --state $W/ds")
pids+=("$D")
sample "$D" >"$W"/d.rss &
until curl -sf http://127.0.0.1:7501/v1/status >/dev/null; do
    kill -0 "$D" 2>/dev/null || { tail -3 "$W"/d.log; exit 1; }
    sleep 0.2
done
echo "distributor indexed the tree: VmHWM $(hwm "$D")"
sleep 2
T=$("$B"/tamizdat-distributor mirror add m1 --state "$W"/ds 2>/dev/null | tail -1 | awk '{print $NF}')
t0=$(date +%s.%N)
${MPFX:-} "$B"/tamizdat-mirror run --join "$T" --root "$W"/root --state "$W"/ms --listen 127.0.0.1:7502 \
    >"$W"/m.log 2>&1 &
pids+=($!)
M=$(find_pid "^$B/tamizdat-mirror run --join $T")
pids+=("$M")
sample "$M" >"$W"/m.rss &
synced() {
    curl -sf http://127.0.0.1:7501/v1/status | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = (s["mirrors"] or [{}])[0]
sys.exit(0 if s["head_seq"] > 0 and m.get("acked_seq") == s["head_seq"] else 1)'
}
until synced; do sleep 0.2; done
t1=$(date +%s.%N)
echo "resync $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
echo "distributor VmHWM $(hwm "$D"), mirror VmHWM $(hwm "$M")"

#!/usr/bin/env bash
# Where a server's threads spent a wrk run: for each thread of PID (and of wrk) that ran more
# than 10 ms, the time it ran on a core, the time it waited on the run queue, and how many
# times it was scheduled, from /proc/PID/task/TID/schedstat over 4 s of a 5 s
# `wrk -t2 -c64 --latency` run; then wrk's req/s and p99. Used for the mirror's HTTP thread
# count (serve/README.md, "How many threads").
#
#   benches/schedstat.sh PID URL [LUA_SCRIPT]
set -euo pipefail
pid=$1 url=$2 lua=${3:-}
snap() { for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(cat "$t/schedstat")"; done; }
out=$(mktemp)
wrk -t2 -c64 -d5s --latency ${lua:+-s "$lua"} "$url" >"$out" &
sleep 0.3
w=$(pgrep -n -x wrk)
a=$(snap "$pid"); aw=$(snap "$w")
sleep 4
b=$(snap "$pid"); bw=$(snap "$w")
wait
show() {
  paste <(echo "$1") <(echo "$2") | awk -v who="$3" '{
    run = ($6 - $2) / 1e6; waited = ($7 - $3) / 1e6; n = $8 - $4
    if (run > 10) printf "%s%-16s run %7.1f ms  waited %7.1f ms  slices %d\n", who, $1, run, waited, n }'
}
show "$a" "$b" ""
show "$aw" "$bw" "wrk "
grep -E "99%|Requests/sec" "$out"
rm -f "$out"

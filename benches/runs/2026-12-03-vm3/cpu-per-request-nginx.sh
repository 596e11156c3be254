#!/bin/bash
url=$1; pids=$(pgrep -f "nginx: worker")
s() { t=0; for p in $pids; do t=$((t+$(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
t0=$(s); out=$(wrk -t2 -c64 -d5s --latency $url); t1=$(s)
n=$(echo "$out" | awk '/requests in/{print $1}')
echo "req/s $(echo "$out" | awk '/Requests\/sec/{print $2}') p99 $(echo "$out" | awk '$1=="99%"{print $2}') cpu_ms/req $(python3 -c "print(round(($t1-$t0)*10/$n,3))")"

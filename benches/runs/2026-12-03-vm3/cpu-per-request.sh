#!/bin/bash
# cpu.sh PID URL: wrk 5 s, prints req/s, p99 and the PID's CPU ms per request
pid=$1; url=$2
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
out=$(wrk -t2 -c64 -d5s --latency $url)
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
n=$(echo "$out" | awk '/requests in/{print $1}')
p99=$(echo "$out" | awk '$1=="99%"{print $2}')
echo "req/s $rps p99 $p99 cpu_ms/req $(python3 -c "print(round(($t1-$t0)*10/$n,3))")"
